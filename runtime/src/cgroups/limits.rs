//! The few limits slate writes itself rather than through libcgroups, and the resources it
//! hands libcgroups without them. libcgroups (0.7) gets these wrong or drops them silently:
//! - block I/O weights: its v1-to-v2 conversion (`1 + (w - 10) * 9999 / 990`) runs in 16-bit
//!   arithmetic and overflows for every weight above 16 (a panic in a debug build, a wrong
//!   weight in a release one); on v1 it never writes per-device weights at all; and a host
//!   without a weight file (no BFQ, no io cost model) gets a bare ENOENT. Here the conversion
//!   happens once, in [`v2_io_weight`], and a host that cannot weight I/O is said to be so;
//! - cgroup v2's `io.max`: libcgroups writes one key per write; here each device gets one
//!   line with all its limits (`8:0 rbps=1048576 wiops=100`), so the kernel takes or refuses
//!   a device's limits as a whole, and a limit of 0 (v1's "no limit", which io.max refuses
//!   with ERANGE) is written as `max`;
//! - `memory.swap.max` for "no swap" (OCI swap equal to the memory limit): libcgroups skips
//!   writing the difference when it is 0, which leaves swap unlimited.
//!
//! Guarantee: every field of `linux.resources.blockIO` is written, or `create` fails naming
//! the file and why; none is dropped.

use std::borrow::Cow;
use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxResources, LinuxThrottleDevice};

use super::{write_file, CgroupError};

/// The block I/O weight range of the OCI spec (cgroup v1's `blkio.weight`, and BFQ's).
const WEIGHTS: std::ops::RangeInclusive<u16> = 10..=1000;

/// A v1 block I/O weight (10-1000) as cgroup v2's `io.weight` (1-10000), linearly, as runc
/// and crun convert it. 0 stays 0 (unset).
pub(super) fn v2_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + u64::from(weight.saturating_sub(10)) * 9999 / 990
}

/// `resources` without what this module writes itself, for libcgroups' v2 manager: all of
/// `blockIO`. (On v1 `v1_limits` writes everything but the weights.)
pub(super) fn for_libcgroups_v2(resources: &LinuxResources) -> Cow<'_, LinuxResources> {
    if resources.block_io().is_none() {
        return Cow::Borrowed(resources);
    }
    let mut r = resources.clone();
    r.set_block_io(None);
    Cow::Owned(r)
}

/// Whether a block I/O section asks for anything (an empty `blockIO: {}` needs no controller).
pub(super) fn block_io_is_set(io: &LinuxBlockIo) -> bool {
    let some = |l: &Option<Vec<LinuxThrottleDevice>>| l.as_ref().is_some_and(|l| !l.is_empty());
    io.weight().is_some()
        || io.leaf_weight().is_some()
        || io.weight_device().as_ref().is_some_and(|l| !l.is_empty())
        || some(io.throttle_read_bps_device())
        || some(io.throttle_write_bps_device())
        || some(io.throttle_read_iops_device())
        || some(io.throttle_write_iops_device())
}

/// Checks every weight against the spec's range before anything is written.
fn check_weights(io: &LinuxBlockIo) -> Result<(), CgroupError> {
    let devices = io.weight_device().iter().flatten();
    let all = [io.weight(), io.leaf_weight()]
        .into_iter()
        .chain(devices.flat_map(|d| [d.weight(), d.leaf_weight()]));
    for w in all.flatten() {
        if w != 0 && !WEIGHTS.contains(&w) {
            return Err(CgroupError::BlkioWeightRange { weight: w });
        }
    }
    Ok(())
}

/// The weights of `io` that are set: the default, then (major, minor, weight) per device;
/// 0 means unset, as in docker.
fn weights(
    io: &LinuxBlockIo,
    pick: fn(&oci_spec::runtime::LinuxWeightDevice) -> Option<u16>,
    default: Option<u16>,
) -> (Option<u16>, Vec<(i64, i64, u16)>) {
    let devices = io
        .weight_device()
        .iter()
        .flatten()
        .filter_map(|d| {
            pick(d)
                .filter(|&w| w != 0)
                .map(|w| (d.major(), d.minor(), w))
        })
        .collect();
    (default.filter(|&w| w != 0), devices)
}

/// What slate writes on cgroup v2, into the container's own cgroup `leaf`, after libcgroups.
pub(super) fn apply_v2(leaf: &Path, resources: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(io) = resources.block_io() {
        check_weights(io)?;
        let (_, leaf_devices) = weights(io, |d| d.leaf_weight(), None);
        if io.leaf_weight().is_some_and(|w| w != 0) || !leaf_devices.is_empty() {
            return Err(CgroupError::BlkioLeafWeightV2);
        }
        weights_v2(leaf, io)?;
        io_max(leaf, io)?;
    }
    if let Some(m) = resources.memory() {
        if let (Some(limit), Some(swap)) = (m.limit(), m.swap()) {
            if limit > 0 && swap == limit {
                let file = leaf.join("memory.swap.max");
                write_file(&file, "0")
                    .map_err(|source| CgroupError::Write { path: file, source })?;
            }
        }
    }
    Ok(())
}

fn weights_v2(leaf: &Path, io: &LinuxBlockIo) -> Result<(), CgroupError> {
    let (default, devices) = weights(io, |d| d.weight(), io.weight());
    if default.is_none() && devices.is_empty() {
        return Ok(());
    }
    // BFQ's own file first, as runc does: it takes v1's scale unchanged.
    let bfq = leaf.join("io.bfq.weight");
    let cost = leaf.join("io.weight");
    let (file, scale): (_, fn(u16) -> u64) = if bfq.exists() {
        (bfq, u64::from)
    } else if cost.exists() {
        (cost, v2_io_weight)
    } else {
        return Err(CgroupError::BlkioWeightUnsupported {
            path: leaf.to_path_buf(),
            files: "io.bfq.weight nor io.weight",
            hint: "the kernel weights block I/O per cgroup only with the BFQ I/O scheduler \
                   (`modprobe bfq`) or the io cost model (CONFIG_BLK_CGROUP_IOCOST)",
        });
    };
    if let Some(w) = default {
        write_blkio(&file, &scale(w).to_string())?;
    }
    for (major, minor, w) in devices {
        write_blkio(&file, &format!("{major}:{minor} {}", scale(w)))?;
    }
    Ok(())
}

/// One `io.max` line per device with every limit given for it; a later entry for the same
/// device and key replaces an earlier one, as the kernel would.
pub(super) fn io_max_lines(io: &LinuxBlockIo) -> Vec<String> {
    /// (major, minor), then each io.max key given for it with its rate.
    type Device = ((i64, i64), Vec<(&'static str, u64)>);
    let mut devices: Vec<Device> = Vec::new();
    for (key, list) in [
        ("rbps", io.throttle_read_bps_device()),
        ("wbps", io.throttle_write_bps_device()),
        ("riops", io.throttle_read_iops_device()),
        ("wiops", io.throttle_write_iops_device()),
    ] {
        for d in list.iter().flatten() {
            let dev = (d.major(), d.minor());
            let i = match devices.iter().position(|(k, _)| *k == dev) {
                Some(i) => i,
                None => {
                    devices.push((dev, Vec::new()));
                    devices.len() - 1
                }
            };
            let keys = &mut devices[i].1;
            keys.retain(|(k, _)| *k != key);
            keys.push((key, d.rate()));
        }
    }
    devices
        .into_iter()
        .map(|((major, minor), keys)| {
            let keys: Vec<String> = keys
                .into_iter()
                .map(|(k, rate)| match rate {
                    0 => format!("{k}=max"),
                    r => format!("{k}={r}"),
                })
                .collect();
            format!("{major}:{minor} {}", keys.join(" "))
        })
        .collect()
}

fn io_max(leaf: &Path, io: &LinuxBlockIo) -> Result<(), CgroupError> {
    let file = leaf.join("io.max");
    for line in io_max_lines(io) {
        write_blkio(&file, &line)?;
    }
    Ok(())
}

/// What slate writes on cgroup v1, into the container's directory of the blkio hierarchy:
/// the weights, with runc's choice of files (CFQ's `blkio.weight`, else BFQ's).
pub(super) fn apply_v1(blkio_dir: &Path, resources: &LinuxResources) -> Result<(), CgroupError> {
    let Some(io) = resources.block_io() else {
        return Ok(());
    };
    check_weights(io)?;
    for (prefix, (default, devices)) in [
        ("", weights(io, |d| d.weight(), io.weight())),
        ("leaf_", weights(io, |d| d.leaf_weight(), io.leaf_weight())),
    ] {
        if default.is_none() && devices.is_empty() {
            continue;
        }
        let cfq = blkio_dir.join(format!("blkio.{prefix}weight"));
        let bfq = blkio_dir.join("blkio.bfq.weight");
        let (file, device_file) = if cfq.exists() {
            (cfq, blkio_dir.join(format!("blkio.{prefix}weight_device")))
        } else if prefix.is_empty() && bfq.exists() {
            (bfq, blkio_dir.join("blkio.bfq.weight_device"))
        } else {
            return Err(CgroupError::BlkioWeightUnsupported {
                path: blkio_dir.to_path_buf(),
                files: if prefix.is_empty() {
                    "blkio.weight nor blkio.bfq.weight"
                } else {
                    "blkio.leaf_weight nor blkio.leaf_weight_device (leaf weights were CFQ's, gone since \
                     Linux 5.0)"
                },
                hint: "the kernel weights block I/O per cgroup only with the BFQ I/O scheduler \
                       (`modprobe bfq`), or CFQ before Linux 5.0",
            });
        };
        if let Some(w) = default {
            write_blkio(&file, &w.to_string())?;
        }
        for (major, minor, w) in devices {
            write_blkio(&device_file, &format!("{major}:{minor} {w}"))?;
        }
    }
    Ok(())
}

/// Writes one value; a refusal says why in the kernel's terms where errno tells (the errno
/// itself follows as the error's source).
fn write_blkio(file: &Path, value: &str) -> Result<(), CgroupError> {
    write_file(file, value).map_err(|source| {
        let hint = match source.raw_os_error() {
            Some(libc::ENODEV) => {
                " (the kernel knows no such disk; limits and weights apply to whole disks, \
                 not partitions)"
            }
            Some(libc::EOPNOTSUPP) => {
                " (that disk's I/O scheduler does not weight cgroups; BFQ does: \
                 `echo bfq > /sys/block/<disk>/queue/scheduler`)"
            }
            _ => "",
        };
        CgroupError::BlkioWrite {
            path: file.to_path_buf(),
            value: value.to_owned(),
            hint,
            source,
        }
    })
}
