//! `linux.resources` (memory, swap, cpu, pids, the device allowlist) and `process.rlimits`,
//! with docker's units, defaults and limits.

use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxPids, LinuxResources,
    PosixRlimit, PosixRlimitBuilder, PosixRlimitType,
};

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
    let swap = match &args.memory_swap {
        None => None,
        Some(s) if s.trim() == "-1" => {
            // Unlimited swap: leaving the limit unset is exactly that, and it does not ask
            // the host for swap accounting it may not have.
            if memory.is_none() {
                return Err(SpecError::SwapWithoutMemory);
            }
            None
        }
        Some(s) => {
            let bytes = parse_size(s).ok_or_else(|| SpecError::Size {
                flag: "--memory-swap",
                value: s.clone(),
            })?;
            match memory {
                None if bytes == 0 => None,
                None => return Err(SpecError::SwapWithoutMemory),
                Some(mem) if bytes != 0 && bytes < mem => {
                    return Err(SpecError::SwapBelowMemory {
                        swap: s.clone(),
                        memory: args.memory.clone().unwrap_or_default(),
                    })
                }
                // 0 is docker's "unset": the default below applies.
                Some(_) if bytes == 0 => None,
                Some(_) => Some(bytes),
            }
        }
    };
    if let Some(mem) = memory {
        let mut m = LinuxMemory::default();
        m.set_limit(Some(mem));
        // docker: with --memory alone, memory+swap is twice the memory, where the kernel can
        // account swap per cgroup; where it cannot (Raspberry Pi OS by default) docker warns
        // and limits memory only, and so does slate (the runtime would refuse the spec).
        let swap = match swap {
            Some(s) => Some(s),
            None if args.memory_swap.is_none() && host.swap_accounting() => {
                Some(mem.saturating_mul(2))
            }
            None => None,
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

    res.set_devices(Some(device_rules(args.privileged)));
    Ok(res)
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
