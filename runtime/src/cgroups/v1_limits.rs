//! The limit files of cgroup v1, written straight into the container's directory of each
//! hierarchy, which `V1Cgroup` already knows.
//!
//! libcgroups' v1 manager (0.7) writes the same files, but it can only be built by looking the
//! hierarchies up again: its constructor opens a fresh procfs handle and reads and parses
//! `/proc/self/mountinfo` and `/proc/self/cgroup` once per controller, about 60 syscalls and
//! 0.3 ms of CPU on every start on a 2-core VM (issue 14), to find directories slate has just
//! created. Its per-controller writers are private, so the files are written here, with the
//! same names, values, order and conditions, except where noted:
//! - memory: the limit and the memory+swap limit in the order the kernel accepts (memsw
//!   must never be below the memory limit: raising writes memsw first, lowering writes it
//!   last), as runc and libcgroups do;
//! - `net_prio.ifpriomap`: one write per interface (the kernel reads one `name prio` pair
//!   per write; libcgroups wrote them all in one write, so only the first took effect);
//! - devices: the spec's rules, then the default allowlist (`devices::DEFAULT_ALLOW`, the
//!   one the v2 filter appends too), one rule per write, each file opened once.
//!
//! Guarantee: every field of the resources is written or `apply` fails naming the file; a
//! controller the resources need but the host lacks is refused by `required` before anything
//! is created.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxMemory, LinuxResources};

use super::devices::DEFAULT_ALLOW;
use super::{write_file, CgroupError};

/// The v1 controllers `apply` writes to beyond those of `super::required_controllers`:
/// devices always (the allowlist is what keeps the host's disks out of reach), net_cls and
/// net_prio when the spec asks for them.
pub(super) fn required(resources: &LinuxResources) -> Vec<&'static str> {
    let mut out = vec!["devices"];
    if let Some(n) = resources.network() {
        if n.class_id().is_some() {
            out.push("net_cls");
        }
        if n.priorities().is_some() {
            out.push("net_prio");
        }
    }
    out
}

fn write(path: PathBuf, value: &str) -> Result<(), CgroupError> {
    write_file(&path, value).map_err(|source| CgroupError::Write { path, source })
}

/// Writes `resources` into the container's directories; `dir(controller)` is the container's
/// directory in that controller's hierarchy (`None`: not mounted). Block I/O weights are
/// `limits::apply_v1`'s, not written here.
pub(super) fn apply(
    dir: &dyn Fn(&str) -> Option<PathBuf>,
    resources: &LinuxResources,
    disable_oom_killer: bool,
) -> Result<(), CgroupError> {
    // Each controller's files only where the resources ask for something; a missing
    // hierarchy was refused by `required` for everything but an empty section.
    if let Some(cpu) = resources.cpu() {
        if let Some(d) = dir("cpu") {
            // 0 is "unset" for these, as in libcgroups and runc (a 0 quota or period would
            // be refused by the kernel anyway); burst and idle are taken as they are.
            let set = |v: Option<String>| v.filter(|v| v != "0");
            let files = [
                ("cpu.shares", set(cpu.shares().map(|v| v.to_string()))),
                (
                    "cpu.cfs_period_us",
                    set(cpu.period().map(|v| v.to_string())),
                ),
                ("cpu.cfs_quota_us", set(cpu.quota().map(|v| v.to_string()))),
                ("cpu.cfs_burst_us", cpu.burst().map(|v| v.to_string())),
                (
                    "cpu.rt_runtime_us",
                    set(cpu.realtime_runtime().map(|v| v.to_string())),
                ),
                (
                    "cpu.rt_period_us",
                    set(cpu.realtime_period().map(|v| v.to_string())),
                ),
                ("cpu.idle", cpu.idle().map(|v| v.to_string())),
            ];
            for (file, value) in files {
                if let Some(v) = value {
                    write(d.join(file), &v)?;
                }
            }
        }
        if let Some(d) = dir("cpuset") {
            if let Some(cpus) = cpu.cpus() {
                write(d.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = cpu.mems() {
                write(d.join("cpuset.mems"), mems)?;
            }
        }
    }
    // Always: without a devices hierarchy `required` refused the start.
    if let Some(d) = dir("devices") {
        devices(&d, resources.devices().as_deref().unwrap_or_default())?;
    }
    if let (Some(hugepages), Some(d)) = (resources.hugepage_limits(), dir("hugetlb")) {
        for h in hugepages {
            let size = h.page_size();
            let digits: String = size.chars().take_while(char::is_ascii_digit).collect();
            if !digits.parse::<u64>().is_ok_and(u64::is_power_of_two) {
                return Err(CgroupError::InvalidLimit {
                    what: "huge page size",
                    value: size.clone(),
                    reason: "expected a power of two with a unit, like 2MB",
                });
            }
            let limit = h.limit().to_string();
            write(d.join(format!("hugetlb.{size}.limit_in_bytes")), &limit)?;
            // Kernels since 5.7 also account reservations; limit those alike.
            let rsvd = d.join(format!("hugetlb.{size}.rsvd.limit_in_bytes"));
            if rsvd.exists() {
                write(rsvd, &limit)?;
            }
        }
    }
    if let Some(m) = resources.memory() {
        if let Some(d) = dir("memory") {
            memory(&d, m, disable_oom_killer)?;
        }
    }
    if let Some(p) = resources.pids() {
        if let Some(d) = dir("pids") {
            let limit = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".to_owned()
            };
            write(d.join("pids.max"), &limit)?;
        }
    }
    if let (Some(io), Some(d)) = (resources.block_io(), dir("blkio")) {
        for (file, list) in [
            (
                "blkio.throttle.read_bps_device",
                io.throttle_read_bps_device(),
            ),
            (
                "blkio.throttle.write_bps_device",
                io.throttle_write_bps_device(),
            ),
            (
                "blkio.throttle.read_iops_device",
                io.throttle_read_iops_device(),
            ),
            (
                "blkio.throttle.write_iops_device",
                io.throttle_write_iops_device(),
            ),
        ] {
            for t in list.iter().flatten() {
                let line = format!("{}:{} {}", t.major(), t.minor(), t.rate());
                write(d.join(file), &line)?;
            }
        }
    }
    if let Some(n) = resources.network() {
        if let (Some(id), Some(d)) = (n.class_id(), dir("net_cls")) {
            write(d.join("net_cls.classid"), &id.to_string())?;
        }
        if let (Some(prios), Some(d)) = (n.priorities(), dir("net_prio")) {
            for p in prios {
                let line = format!("{} {}", p.name(), p.priority());
                write(d.join("net_prio.ifpriomap"), &line)?;
            }
        }
    }
    Ok(())
}

/// The spec's rules in order, then the default allowlist: later rules refine earlier ones,
/// as the kernel applies each write to the cgroup's list in turn. The kernel takes one rule
/// per write(2), at any offset, so each file is opened once for all its rules (24 rules for
/// docker's list: 48 syscalls fewer per start than a file opened per rule).
fn devices(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    let mut allow = RuleFile::new(dir.join("devices.allow"));
    let mut deny = RuleFile::new(dir.join("devices.deny"));
    for r in rules {
        // oci-spec's Display is the kernel's format: `c 1:3 rwm`, `*` for any number.
        let line = r.to_string();
        if r.allow() {
            allow.write(&line)?;
        } else {
            deny.write(&line)?;
        }
    }
    for (typ, major, minor, access) in DEFAULT_ALLOW {
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_owned(), |n| n.to_string());
        let line = format!(
            "{} {}:{} {}",
            if typ == super::devices::DEV_BLOCK {
                'b'
            } else {
                'c'
            },
            num(major),
            num(minor),
            super::devices::access_letters(access)
        );
        allow.write(&line)?;
    }
    Ok(())
}

/// A cgroup file written one value per write(2), opened at the first.
struct RuleFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl RuleFile {
    fn new(path: PathBuf) -> RuleFile {
        RuleFile { path, file: None }
    }

    fn write(&mut self, value: &str) -> Result<(), CgroupError> {
        use std::io::Write as _;
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CgroupError::Write { path, source }
        };
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .map_err(err(&self.path))?,
            ),
        };
        // One write(2): the kernel parses each write as one whole rule.
        let n = file.write(value.as_bytes()).map_err(err(&self.path))?;
        if n != value.len() {
            return Err(err(&self.path)(std::io::Error::from(
                std::io::ErrorKind::WriteZero,
            )));
        }
        Ok(())
    }
}

fn memory(dir: &Path, m: &LinuxMemory, disable_oom_killer: bool) -> Result<(), CgroupError> {
    let limit_file = dir.join("memory.limit_in_bytes");
    let memsw_file = dir.join("memory.memsw.limit_in_bytes");
    // 0 means "not set" for both, as in libcgroups and runc.
    let set_limit = |v: i64| -> Result<(), CgroupError> {
        if v == 0 {
            return Ok(());
        }
        write_file(&limit_file, &v.to_string()).map_err(|source| {
            if source.raw_os_error() == Some(libc::EBUSY) {
                CgroupError::MemoryBusy {
                    path: dir.to_path_buf(),
                    limit: v,
                }
            } else {
                CgroupError::Write {
                    path: limit_file.clone(),
                    source,
                }
            }
        })
    };
    let set_swap = |v: i64| {
        if v == 0 {
            Ok(())
        } else {
            write(memsw_file.clone(), &v.to_string())
        }
    };
    match (m.limit(), m.swap()) {
        (Some(limit), swap) => {
            let current = std::fs::read_to_string(&limit_file)
                .map_err(|source| CgroupError::Read {
                    path: limit_file.clone(),
                    source,
                })?
                .trim()
                .parse::<i64>()
                .unwrap_or(i64::MAX);
            // memsw >= limit at every moment: raise memsw first, lower it last.
            let (swap, swap_first) = match swap {
                Some(s) => (s, s == -1 || current < s),
                None if limit == -1 => (-1, true),
                None => (0, current < 0),
            };
            if swap_first {
                set_swap(swap)?;
                set_limit(limit)?;
            } else {
                set_limit(limit)?;
                set_swap(swap)?;
            }
        }
        (None, Some(swap)) => set_swap(swap)?,
        (None, None) => {}
    }
    if let Some(r) = m.reservation().filter(|&r| r != 0) {
        write(dir.join("memory.soft_limit_in_bytes"), &r.to_string())?;
    }
    // Always, so that a container does not inherit a parent's disabled OOM killer unasked.
    write(
        dir.join("memory.oom_control"),
        if disable_oom_killer { "1" } else { "0" },
    )?;
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(CgroupError::InvalidLimit {
                what: "memory swappiness",
                value: s.to_string(),
                reason: "expected 0 to 100",
            });
        }
        write(dir.join("memory.swappiness"), &s.to_string())?;
    }
    // Deprecated by the kernel and ignored by runc, but in the spec: written when asked.
    if let Some(k) = m.kernel() {
        write(dir.join("memory.kmem.limit_in_bytes"), &k.to_string())?;
    }
    if let Some(k) = m.kernel_tcp() {
        write(dir.join("memory.kmem.tcp.limit_in_bytes"), &k.to_string())?;
    }
    Ok(())
}
