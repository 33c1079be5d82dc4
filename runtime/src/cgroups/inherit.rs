//! The limits of the cgroups above a container's, made visible in its own (cgroup v2).
//!
//! Inside its cgroup namespace a container sees only its own cgroup: under a systemd unit with
//! `MemoryMax=200M` and no `--memory`, its `memory.max` reads `max`, and a JVM, .NET, Go's
//! automemlimit/automaxprocs or node size themselves for the whole machine and get OOM-killed
//! or throttled. So for each kind of limit the user did not set, the tightest value among the
//! ancestors (the unit, its slices, slate's parent) is written into the container's cgroup:
//! the value it reads is the one that binds it.
//!
//! Enforcement does not change: a cgroup can never use more than any ancestor allows, so a
//! copy of the tightest ancestor's limit takes nothing away. Only its place changes: hitting
//! it now reclaims and OOM-kills inside the container's cgroup rather than in the unit's,
//! which spares the supervisor next to it. The copy is taken once, at start: a later
//! `systemctl set-property app.service MemoryMax=...` that *lowers* the unit's limit binds at
//! once (the unit's own limit still applies), one that *raises* it does not reach a running
//! container, which keeps the old value until it is restarted.
//!
//! runc, crun and podman do not do this: they write exactly the spec's resources, so there a
//! container without a limit of its own reads `max` whatever its parents allow (Kubernetes
//! sidesteps it by always setting the container's own limits). slate's common case is one
//! container per unit, whose `MemoryMax=` is the limit the user meant.
//!
//! Copied: `memory.max`, `memory.high` (a throttling threshold above which the container is
//! held back anyway; automemlimit reads it), `memory.swap.max`, `pids.max` (systemd's
//! `TasksMax=`, set on every unit by default), `cpu.max` (the ancestor's quota with its own
//! period: the ratio is what automaxprocs computes). Not copied: `memory.low`/`memory.min`
//! (protections, not limits: setting them would change how the parent's protection is shared),
//! `cpuset.cpus` (the container's `cpuset.cpus.effective` already shows the ancestors' set,
//! and so does `sched_getaffinity`; writing it would pin the container to today's set), `io.max`
//! (per device, and no runtime library sizes itself from it).
//!
//! Best effort: a value that cannot be copied leaves the container correctly limited, only
//! less well informed, so it is logged and never fails the start.

use std::path::Path;

use oci_spec::runtime::LinuxResources;

/// A limit as a cgroup v2 interface file holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    /// `memory.*` and `pids.max`: a number (`max` is no limit).
    Value(u64),
    /// `cpu.max`: quota and period, in microseconds.
    Cpu { quota: u64, period: u64 },
}

impl Limit {
    /// Parses a file's content; `None` for `max`, an empty file (a fake's, or a file the
    /// controller does not fill) or anything else that is no limit.
    fn parse(file: &str, text: &str) -> Option<Limit> {
        let mut words = text.split_whitespace();
        let first = words.next()?;
        if first == "max" {
            return None;
        }
        let n: u64 = first.parse().ok()?;
        if file == "cpu.max" {
            let period: u64 = words.next()?.parse().ok()?;
            if period == 0 {
                return None;
            }
            Some(Limit::Cpu { quota: n, period })
        } else {
            Some(Limit::Value(n))
        }
    }

    /// Whether `self` allows less than `other`.
    fn tighter_than(&self, other: &Limit) -> bool {
        match (self, other) {
            (Limit::Value(a), Limit::Value(b)) => a < b,
            (
                Limit::Cpu { quota, period },
                Limit::Cpu {
                    quota: q2,
                    period: p2,
                },
            ) => u128::from(*quota) * u128::from(*p2) < u128::from(*q2) * u128::from(*period),
            _ => false,
        }
    }

    fn render(&self) -> String {
        match self {
            Limit::Value(n) => n.to_string(),
            Limit::Cpu { quota, period } => format!("{quota} {period}"),
        }
    }
}

/// Whether the spec's resources set a limit of some kind.
type SetBySpec = fn(&LinuxResources) -> bool;

/// The files copied, each with whether the spec's resources already set it.
const KINDS: &[(&str, SetBySpec)] = &[
    ("memory.max", |r| {
        r.memory().as_ref().is_some_and(|m| m.limit().is_some())
    }),
    // OCI has no field for it; only `unified` sets it.
    ("memory.high", |_| false),
    ("memory.swap.max", |r| {
        r.memory().as_ref().is_some_and(|m| m.swap().is_some())
    }),
    ("pids.max", |r| r.pids().is_some()),
    ("cpu.max", |r| {
        r.cpu()
            .as_ref()
            .is_some_and(|c| c.quota().is_some() || c.period().is_some())
    }),
];

/// The tightest limit in `file` of the directories from `leaf`'s parent up to `root`, the
/// hierarchy's root (whose interface has no limit files).
pub(super) fn tightest_above(root: &Path, leaf: &Path, file: &str) -> Option<Limit> {
    let mut best: Option<Limit> = None;
    let mut dir = leaf.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(root)) {
        if let Some(l) = std::fs::read_to_string(d.join(file))
            .ok()
            .and_then(|t| Limit::parse(file, &t))
        {
            if best.is_none_or(|b| l.tighter_than(&b)) {
                best = Some(l);
            }
        }
        if d == root {
            break;
        }
        dir = d.parent();
    }
    best
}

/// Writes into `leaf` the tightest ancestor limit of each kind `resources` leaves unset and
/// whose file `leaf` has (its controller is enabled).
pub(super) fn show_ancestor_limits(root: &Path, leaf: &Path, resources: &LinuxResources) {
    let unified = resources.unified().as_ref();
    for (file, set_by_spec) in KINDS {
        if set_by_spec(resources) || unified.is_some_and(|u| u.contains_key(*file)) {
            continue;
        }
        let path = leaf.join(file);
        if !path.exists() {
            continue;
        }
        let Some(limit) = tightest_above(root, leaf, file) else {
            continue;
        };
        let value = limit.render();
        match super::write_file(&path, &value) {
            Ok(()) => tracing::debug!(file, value, "container shows its ancestors' limit"),
            Err(error) => tracing::warn!(
                path = %path.display(),
                value,
                %error,
                "cannot show the limit of the cgroups above the container in its own; it still applies"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_compare() {
        assert_eq!(Limit::parse("memory.max", "max\n"), None);
        assert_eq!(Limit::parse("memory.max", ""), None);
        assert_eq!(
            Limit::parse("memory.max", "209715200\n"),
            Some(Limit::Value(209_715_200))
        );
        assert_eq!(Limit::parse("cpu.max", "max 100000\n"), None);
        let half = Limit::parse("cpu.max", "50000 100000\n").expect("cpu");
        assert_eq!(
            half,
            Limit::Cpu {
                quota: 50_000,
                period: 100_000
            }
        );
        // 0.25 CPU with a 1 s period is tighter than 0.5 with 100 ms, whatever the numbers.
        let quarter = Limit::parse("cpu.max", "250000 1000000").expect("cpu");
        assert!(quarter.tighter_than(&half));
        assert!(!half.tighter_than(&quarter));
        assert_eq!(quarter.render(), "250000 1000000");
        assert_eq!(Limit::parse("cpu.max", "5 0"), None);
        assert_eq!(Limit::parse("pids.max", "garbage"), None);
    }
}
