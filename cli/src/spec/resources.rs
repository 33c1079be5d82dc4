//! `linux.resources` (memory, swap, cpu, cpuset, pids, block I/O, the device allowlist) and
//! `process.rlimits`, with docker's units, defaults and limits. Disks named by block I/O flags
//! are resolved to major:minor here, at run time, and cpusets checked against the host's
//! online cpus and memory nodes, so that a typo is one line naming the flag, not a kernel
//! error from the cgroup write.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxPids,
    LinuxResources, LinuxThrottleDevice, LinuxThrottleDeviceBuilder, LinuxWeightDevice,
    LinuxWeightDeviceBuilder, PosixRlimit, PosixRlimitBuilder, PosixRlimitType,
};

use slate_runtime::cgroups::parse_cpu_list as parse_list;

use super::{Host, SpecError};
use crate::cli::RunArgs;

/// docker's floor for `--memory`: below it the container's own runtime overhead would OOM.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;
/// The CFS period docker uses for `--cpus`.
const CPU_PERIOD: u64 = 100_000;

/// docker's `RAMInBytes`: `128m`, `1.5g`, `512MiB`, `64 kb`, `100` (bytes); binary units.
pub(crate) fn parse_size(s: &str) -> Option<i64> {
    let s = s.trim();
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, rest) = s.split_at(num_end);
    if num.is_empty() || !num.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest).to_ascii_lowercase();
    let mut chars = rest.chars();
    let mult: u64 = match chars.next() {
        None => 1,
        Some('b') if chars.as_str().is_empty() => 1,
        Some(u) => {
            let shift = match u {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                't' => 40,
                'p' => 50,
                _ => return None,
            };
            // After the unit: optional `i`, then optional `b` (`m`, `mb`, `mib`).
            let tail = chars.as_str();
            let tail = tail.strip_prefix('i').unwrap_or(tail);
            let tail = tail.strip_prefix('b').unwrap_or(tail);
            if !tail.is_empty() {
                return None;
            }
            1u64 << shift
        }
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return None;
    }
    Some(bytes as i64)
}

pub(crate) fn build(args: &RunArgs, host: &dyn Host) -> Result<LinuxResources, SpecError> {
    let mut res = LinuxResources::default();

    let memory = match &args.memory {
        Some(m) => {
            let bytes = parse_size(m).ok_or_else(|| SpecError::Size {
                flag: "--memory",
                value: m.clone(),
            })?;
            // docker: 0 means no limit.
            if bytes != 0 && bytes < MIN_MEMORY {
                return Err(SpecError::MemoryTooSmall(m.clone()));
            }
            Some(bytes).filter(|&b| b > 0)
        }
        None => None,
    };
    let reservation = match &args.memory_reservation {
        Some(r) => {
            let bytes = parse_size(r).ok_or_else(|| SpecError::Size {
                flag: "--memory-reservation",
                value: r.clone(),
            })?;
            // docker: 0 means none, and the floor is --memory's.
            if bytes != 0 && bytes < MIN_MEMORY {
                return Err(SpecError::ReservationTooSmall(r.clone()));
            }
            if memory.is_some_and(|m| bytes > m) {
                return Err(SpecError::ReservationAboveMemory {
                    reservation: r.clone(),
                    memory: args.memory.clone().unwrap_or_default(),
                });
            }
            Some(bytes).filter(|&b| b > 0)
        }
        None => None,
    };
    /// What `--memory-swap` says: nothing (docker's default applies), unlimited, or a total.
    enum Swap {
        Default,
        Unlimited,
        Total(i64),
    }
    let swap = match &args.memory_swap {
        None => Swap::Default,
        // docker takes it without --memory too.
        Some(s) if s.trim() == "-1" => Swap::Unlimited,
        Some(s) => {
            let bytes = parse_size(s).ok_or_else(|| SpecError::Size {
                flag: "--memory-swap",
                value: s.clone(),
            })?;
            match memory {
                // 0 is docker's "unset": the default applies.
                _ if bytes == 0 => Swap::Default,
                None => return Err(SpecError::SwapWithoutMemory),
                Some(mem) if bytes < mem => {
                    return Err(SpecError::SwapBelowMemory {
                        swap: s.clone(),
                        memory: args.memory.clone().unwrap_or_default(),
                    })
                }
                Some(_) => Swap::Total(bytes),
            }
        }
    };
    if memory.is_some() || reservation.is_some() {
        let mut m = LinuxMemory::default();
        m.set_limit(memory);
        m.set_reservation(reservation);
        // docker: with --memory alone, memory+swap is twice the memory, where the kernel can
        // account swap per cgroup; where it cannot (Raspberry Pi OS by default) docker warns
        // and limits memory only, and so does slate (the runtime would refuse the spec).
        let swap = match (swap, memory) {
            (Swap::Total(t), _) => Some(t),
            (Swap::Default, Some(mem)) if host.swap_accounting() => Some(mem.saturating_mul(2)),
            // Unlimited: leaving the limit unset is exactly that, and it does not ask the
            // host for swap accounting it may not have.
            _ => None,
        };
        m.set_swap(swap);
        res.set_memory(Some(m));
    }

    let mut cpu = LinuxCpu::default();
    let mut cpu_set = false;
    if let Some(c) = args.cpus {
        let max = host.cpus();
        if !c.is_finite() || c < 0.01 || c > max as f64 {
            return Err(SpecError::Cpus { value: c, max });
        }
        cpu.set_period(Some(CPU_PERIOD));
        cpu.set_quota(Some((c * CPU_PERIOD as f64).round() as i64));
        cpu_set = true;
    }
    if let Some(s) = args.cpu_shares {
        // docker: 0 means the default; others are clamped to the kernel's range 2..=262144.
        if s != 0 {
            cpu.set_shares(Some(s.clamp(2, 262_144)));
            cpu_set = true;
        }
    }
    if let Some(cpus) = cpuset(
        "--cpuset-cpus",
        args.cpuset_cpus.as_deref(),
        host.read_file("/sys/devices/system/cpu/online"),
        "cpus",
    )? {
        cpu.set_cpus(Some(cpus));
        cpu_set = true;
    }
    // No node directory: a kernel without NUMA, whose memory is all node 0.
    let mems_online = host
        .read_file("/sys/devices/system/node/online")
        .or_else(|| Some("0".to_owned()));
    if let Some(mems) = cpuset(
        "--cpuset-mems",
        args.cpuset_mems.as_deref(),
        mems_online,
        "memory nodes",
    )? {
        cpu.set_mems(Some(mems));
        cpu_set = true;
    }
    if cpu_set {
        res.set_cpu(Some(cpu));
    }

    if let Some(p) = args.pids_limit {
        match p {
            // docker: 0 and -1 both mean unlimited; no limit set is exactly that.
            0 | -1 => {}
            p if p > 0 => {
                let mut pids = LinuxPids::default();
                pids.set_limit(p);
                res.set_pids(Some(pids));
            }
            p => return Err(SpecError::PidsLimit(p)),
        }
    }

    res.set_block_io(block_io(args, host)?);
    res.set_devices(Some(device_rules(args.privileged)));
    Ok(res)
}

/// `--cpuset-cpus` / `--cpuset-mems`: the list as given, once it parses and every member is
/// online (docker's check); `None` for no flag or an empty one (docker: unset). Where the
/// host's online list cannot be read, the kernel is left to judge at the cgroup write.
fn cpuset(
    flag: &'static str,
    value: Option<&str>,
    online: Option<String>,
    what: &str,
) -> Result<Option<String>, SpecError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = |reason: String| SpecError::Cpuset {
        flag,
        value: value.to_owned(),
        reason,
    };
    let wanted = parse_list(value)
        .ok_or_else(|| bad("expected a list of numbers and ranges like 0-2,4".to_owned()))?;
    if let Some(online) = online {
        let online = online.trim();
        let have = parse_list(online).unwrap_or_default();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|&&(lo, hi)| !covered(&have, lo, hi))
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        if !missing.is_empty() {
            return Err(bad(format!(
                "{what} {} not available on this host, which has {what} {online}",
                missing.join(",")
            )));
        }
    }
    Ok(Some(value.to_owned()))
}

/// Whether every number of `lo..=hi` is in one of `ranges` (in any order, overlapping).
fn covered(ranges: &[(u32, u32)], lo: u32, hi: u32) -> bool {
    let mut next = lo;
    loop {
        match ranges.iter().find(|&&(a, b)| a <= next && next <= b) {
            Some(&(_, b)) if b >= hi => return true,
            Some(&(_, b)) => next = b + 1,
            None => return false,
        }
    }
}

/// The block I/O flags as `linux.resources.blockIO`; `None` when none is given.
fn block_io(args: &RunArgs, host: &dyn Host) -> Result<Option<LinuxBlockIo>, SpecError> {
    let mut io = LinuxBlockIo::default();
    let mut any = false;
    match args.blkio_weight {
        // docker: 0 is the default weight, i.e. none set.
        None | Some(0) => {}
        Some(w @ 10..=1000) => {
            io.set_weight(Some(w as u16));
            any = true;
        }
        Some(w) => return Err(SpecError::BlkioWeight(w)),
    }

    let mut weights: Vec<LinuxWeightDevice> = Vec::new();
    for value in &args.blkio_weight_device {
        let flag = "--blkio-weight-device";
        let (dev, n) = disk_and_value(flag, value, host)?;
        let w = match n.parse::<u16>() {
            Ok(w @ (0 | 10..=1000)) => w,
            _ => {
                return Err(SpecError::Blkio {
                    flag,
                    value: value.clone(),
                    reason: "expected DEVICE:N with a weight N from 10 to 1000".to_owned(),
                })
            }
        };
        weights.retain(|d| (d.major(), d.minor()) != dev);
        // A device weight of 0 is docker's "unset": nothing is written for it.
        if w != 0 {
            // The type has only a builder; with every field given it cannot fail.
            let d = LinuxWeightDeviceBuilder::default()
                .major(dev.0)
                .minor(dev.1)
                .weight(w)
                .build()
                .map_err(|_| unrepresentable(flag, value))?;
            weights.push(d);
        }
    }
    if !weights.is_empty() {
        io.set_weight_device(Some(weights));
        any = true;
    }

    let rate = |s: &str| parse_size(s).and_then(|b| u64::try_from(b).ok());
    let count = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    const BPS: &str = "expected DEVICE:RATE with a rate above 0, like /dev/sda:1mb (b, kb, mb, gb)";
    const IOPS: &str = "expected DEVICE:N with N operations per second, above 0";
    type Parse<'a> = &'a dyn Fn(&str) -> Option<u64>;
    let throttles: [(&str, &[String], Parse, &str); 4] = [
        ("--device-read-bps", &args.device_read_bps, &rate, BPS),
        ("--device-write-bps", &args.device_write_bps, &rate, BPS),
        ("--device-read-iops", &args.device_read_iops, &count, IOPS),
        ("--device-write-iops", &args.device_write_iops, &count, IOPS),
    ];
    for (i, (flag, values, parse, expected)) in throttles.into_iter().enumerate() {
        let mut list: Vec<LinuxThrottleDevice> = Vec::new();
        for value in values {
            let (dev, n) = disk_and_value(flag, value, host)?;
            // 0 would be "no limit" on v1 and is refused by v2's io.max: not a rate.
            let n = parse(n)
                .filter(|&n| n > 0)
                .ok_or_else(|| SpecError::Blkio {
                    flag,
                    value: value.clone(),
                    reason: expected.to_owned(),
                })?;
            list.retain(|d| (d.major(), d.minor()) != dev);
            let d = LinuxThrottleDeviceBuilder::default()
                .major(dev.0)
                .minor(dev.1)
                .rate(n)
                .build()
                .map_err(|_| unrepresentable(flag, value))?;
            list.push(d);
        }
        if list.is_empty() {
            continue;
        }
        any = true;
        match i {
            0 => io.set_throttle_read_bps_device(Some(list)),
            1 => io.set_throttle_write_bps_device(Some(list)),
            2 => io.set_throttle_read_iops_device(Some(list)),
            _ => io.set_throttle_write_iops_device(Some(list)),
        };
    }
    Ok(any.then_some(io))
}

fn unrepresentable(flag: &'static str, value: &str) -> SpecError {
    SpecError::Blkio {
        flag,
        value: value.to_owned(),
        reason: "cannot be represented in the spec".to_owned(),
    }
}

/// Splits `DEVICE:VALUE` at its last colon (a `/dev/disk/by-path/...` name has colons of its
/// own) and resolves DEVICE to the (major, minor) of a whole disk.
fn disk_and_value<'a>(
    flag: &'static str,
    value: &'a str,
    host: &dyn Host,
) -> Result<((i64, i64), &'a str), SpecError> {
    let bad = |reason: String| SpecError::Blkio {
        flag,
        value: value.to_owned(),
        reason,
    };
    let (path, n) = value
        .rsplit_once(':')
        .filter(|(p, _)| p.starts_with('/'))
        .ok_or_else(|| {
            bad("expected DEVICE:VALUE with an absolute device path, e.g. /dev/sda:1mb".to_owned())
        })?;
    let dev = host
        .device(Path::new(path))
        .map_err(|source| SpecError::BlkioDeviceHost {
            flag,
            value: value.to_owned(),
            path: PathBuf::from(path),
            source,
        })?
        .filter(|d| d.block)
        .ok_or_else(|| bad(format!("{path} is not a block device")))?;
    // The kernel's block cgroup files take whole disks only (ENODEV for a partition).
    if host
        .read_file(&format!(
            "/sys/dev/block/{}:{}/partition",
            dev.major, dev.minor
        ))
        .is_some()
    {
        return Err(bad(format!(
            "{path} is a partition ({}:{}); block I/O limits apply to whole disks, give the disk it is on",
            dev.major, dev.minor
        )));
    }
    Ok(((dev.major as i64, dev.minor as i64), n))
}

fn rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(typ);
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_owned()));
    r
}

/// docker's device cgroup: deny everything, then allow mknod of any node (creating one is
/// harmless, opening it is what counts) and the standard devices. runc adds the allow list
/// itself; slate's runtime takes the spec literally, so it is spelled out here.
fn device_rules(privileged: bool) -> Vec<LinuxDeviceCgroup> {
    if privileged {
        return vec![rule(true, None, None, None, "rwm")];
    }
    let c = Some(LinuxDeviceType::C);
    let mut rules = vec![
        rule(false, None, None, None, "rwm"),
        rule(true, c, None, None, "m"),
        rule(true, Some(LinuxDeviceType::B), None, None, "m"),
    ];
    for (major, minor) in [
        (1, Some(3)),    // null
        (1, Some(5)),    // zero
        (1, Some(7)),    // full
        (1, Some(8)),    // random
        (1, Some(9)),    // urandom
        (5, Some(0)),    // tty
        (5, Some(1)),    // console
        (5, Some(2)),    // ptmx
        (136, None),     // pts/*
        (10, Some(200)), // net/tun
    ] {
        rules.push(rule(true, c, Some(major), minor, "rwm"));
    }
    rules
}

/// docker's `--ulimit` names.
fn rlimit_type(name: &str) -> Option<PosixRlimitType> {
    use PosixRlimitType::*;
    Some(match name {
        "as" => RlimitAs,
        "core" => RlimitCore,
        "cpu" => RlimitCpu,
        "data" => RlimitData,
        "fsize" => RlimitFsize,
        "locks" => RlimitLocks,
        "memlock" => RlimitMemlock,
        "msgqueue" => RlimitMsgqueue,
        "nice" => RlimitNice,
        "nofile" => RlimitNofile,
        "nproc" => RlimitNproc,
        "rss" => RlimitRss,
        "rtprio" => RlimitRtprio,
        "rttime" => RlimitRttime,
        "sigpending" => RlimitSigpending,
        "stack" => RlimitStack,
        _ => return None,
    })
}

pub(crate) fn nix_resource(t: PosixRlimitType) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    use PosixRlimitType::*;
    Some(match t {
        RlimitAs => R::RLIMIT_AS,
        RlimitCore => R::RLIMIT_CORE,
        RlimitCpu => R::RLIMIT_CPU,
        RlimitData => R::RLIMIT_DATA,
        RlimitFsize => R::RLIMIT_FSIZE,
        RlimitLocks => R::RLIMIT_LOCKS,
        RlimitMemlock => R::RLIMIT_MEMLOCK,
        RlimitMsgqueue => R::RLIMIT_MSGQUEUE,
        RlimitNice => R::RLIMIT_NICE,
        RlimitNofile => R::RLIMIT_NOFILE,
        RlimitNproc => R::RLIMIT_NPROC,
        RlimitRss => R::RLIMIT_RSS,
        RlimitRtprio => R::RLIMIT_RTPRIO,
        RlimitRttime => R::RLIMIT_RTTIME,
        RlimitSigpending => R::RLIMIT_SIGPENDING,
        RlimitStack => R::RLIMIT_STACK,
    })
}

fn limit_value(s: &str) -> Option<u64> {
    match s {
        // docker accepts -1 for "unlimited".
        "-1" | "unlimited" => Some(u64::MAX),
        _ if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => s.parse().ok(),
        _ => None,
    }
}

fn show(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".to_owned()
    } else {
        v.to_string()
    }
}

/// `--ulimit NAME=SOFT[:HARD]` (HARD defaults to SOFT); a later one for a name replaces it.
pub(crate) fn rlimits(flags: &[String], host: &dyn Host) -> Result<Vec<PosixRlimit>, SpecError> {
    let mut out: Vec<PosixRlimit> = Vec::new();
    for f in flags {
        let bad = |reason| SpecError::Ulimit {
            value: f.clone(),
            reason,
        };
        let (name, limits) = f
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=SOFT[:HARD], e.g. nofile=1024:2048"))?;
        let typ = rlimit_type(name).ok_or_else(|| {
            bad("unknown name; expected one of as, core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack")
        })?;
        let (soft, hard) = match limits.split_once(':') {
            Some((s, h)) => (s, h),
            None => (limits, limits),
        };
        let soft =
            limit_value(soft).ok_or_else(|| bad("limits must be numbers, or -1 for unlimited"))?;
        let hard =
            limit_value(hard).ok_or_else(|| bad("limits must be numbers, or -1 for unlimited"))?;
        if soft > hard {
            return Err(bad("the soft limit is above the hard limit"));
        }
        // Without CAP_SYS_RESOURCE the kernel refuses to raise a hard limit, inside the
        // container as anywhere; say so now, naming the flag, rather than fail at exec.
        if !host.can_raise_rlimits() {
            if let Some(current) = host.rlimit_hard(typ) {
                if hard > current {
                    return Err(SpecError::UlimitAboveHard {
                        value: f.clone(),
                        requested: show(hard),
                        current: show(current),
                    });
                }
            }
        }
        // PosixRlimit has only a builder; with every field given it cannot fail.
        let r = PosixRlimitBuilder::default()
            .typ(typ)
            .soft(soft)
            .hard(hard)
            .build()
            .map_err(|_| bad("cannot be represented in the spec"))?;
        out.retain(|o| o.typ() != typ);
        out.push(r);
    }
    Ok(out)
}

/// Whether this kernel accounts swap per cgroup, as docker's `sysinfo` checks: the memsw files
/// on v1, `memory.swap.max` in a v2 cgroup with the memory controller (the root cgroup has no
/// such file, so slate's own cgroup is looked at, then the root's children).
pub(crate) fn probe_swap_accounting() -> bool {
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes");
    if v1.exists() {
        return true;
    }
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_owned()))
        });
    if let Some(p) = own {
        let dir = std::path::Path::new("/sys/fs/cgroup").join(p.trim_start_matches('/'));
        if dir.join("memory.swap.max").exists() {
            return true;
        }
    }
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .take(64)
                .any(|e| e.path().join("memory.swap.max").exists())
        })
        .unwrap_or(false)
}
