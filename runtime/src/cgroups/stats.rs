//! What `slate stats` and `slate pause` need of a container's cgroup: usage figures read
//! from the cgroup's own files (the same ones the kernel enforces limits with), and the
//! freezer.
//!
//! Memory usage is docker's figure: the charge minus the inactive page cache (v2
//! `memory.current` − `inactive_file`, v1 `usage_in_bytes` − `total_inactive_file`), so a
//! container that read a large file does not look as if it were about to hit its limit.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{write_file, CgroupError, View};

/// One reading of a container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// CPU time used by all its processes, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory charged, minus inactive file cache (docker's "MEM USAGE").
    pub memory_usage: u64,
    /// Memory charged, as the cgroup file says.
    pub memory_charged: u64,
    /// The memory limit; None when there is none.
    pub memory_limit: Option<u64>,
    pub pids: u64,
    pub pids_limit: Option<u64>,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// `max` or a number; v1's "unlimited" is a page-rounded i64::MAX.
fn limit(path: &Path) -> Option<u64> {
    let s = read(path)?;
    let s = s.trim();
    if s == "max" {
        return None;
    }
    let n: u64 = s.parse().ok()?;
    (n < (1 << 62)).then_some(n)
}

fn stat_field(path: &Path, key: &str) -> Option<u64> {
    read(path)?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The directory of the v1 hierarchy that has `controller` (`cpu,cpuacct` has cpuacct).
fn v1_dir<'a>(dirs: &'a [(std::ffi::OsString, PathBuf)], controller: &str) -> Option<&'a Path> {
    dirs.iter()
        .find(|(name, _)| name.to_string_lossy().split(',').any(|c| c == controller))
        .map(|(_, p)| p.as_path())
}

pub(super) fn read_stats(view: &View) -> Stats {
    match view {
        View::Unified(dir) => {
            let charged = read_u64(&dir.join("memory.current")).unwrap_or(0);
            let inactive = stat_field(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
            Stats {
                cpu_usage_ns: stat_field(&dir.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000,
                memory_usage: charged.saturating_sub(inactive),
                memory_charged: charged,
                memory_limit: limit(&dir.join("memory.max")),
                pids: read_u64(&dir.join("pids.current")).unwrap_or(0),
                pids_limit: limit(&dir.join("pids.max")),
            }
        }
        View::Hierarchies(dirs) => {
            let mem = v1_dir(dirs, "memory");
            let charged = mem
                .and_then(|d| read_u64(&d.join("memory.usage_in_bytes")))
                .unwrap_or(0);
            let inactive = mem
                .and_then(|d| stat_field(&d.join("memory.stat"), "total_inactive_file"))
                .unwrap_or(0);
            let pids = v1_dir(dirs, "pids");
            Stats {
                cpu_usage_ns: v1_dir(dirs, "cpuacct")
                    .and_then(|d| read_u64(&d.join("cpuacct.usage")))
                    .unwrap_or(0),
                memory_usage: charged.saturating_sub(inactive),
                memory_charged: charged,
                memory_limit: mem.and_then(|d| limit(&d.join("memory.limit_in_bytes"))),
                pids: pids
                    .and_then(|d| read_u64(&d.join("pids.current")))
                    .unwrap_or(0),
                pids_limit: pids.and_then(|d| limit(&d.join("pids.max"))),
            }
        }
    }
}

/// How long a freeze may take to settle (a task in uninterruptible sleep delays it).
const FREEZE_WAIT: Duration = Duration::from_secs(5);

/// Freezes (`true`) or thaws the cgroup and waits until the kernel says it is done.
pub(super) fn set_frozen(view: &View, frozen: bool) -> Result<(), CgroupError> {
    let (file, value, done): (PathBuf, &str, Box<dyn Fn() -> bool>) = match view {
        View::Unified(dir) => {
            let events = dir.join("cgroup.events");
            let want = if frozen { "frozen 1" } else { "frozen 0" };
            (
                dir.join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
                Box::new(move || read(&events).is_some_and(|e| e.lines().any(|l| l == want))),
            )
        }
        View::Hierarchies(dirs) => {
            let dir = v1_dir(dirs, "freezer").ok_or(CgroupError::NoFreezer)?;
            let state = dir.join("freezer.state");
            let want = if frozen { "FROZEN" } else { "THAWED" };
            let check = state.clone();
            (
                state,
                want,
                Box::new(move || read(&check).is_some_and(|s| s.trim() == want)),
            )
        }
    };
    if !file.exists() {
        return Err(CgroupError::NoFreezer);
    }
    write_file(&file, value).map_err(|source| CgroupError::Write {
        path: file.clone(),
        source,
    })?;
    let start = Instant::now();
    while !done() {
        if start.elapsed() > FREEZE_WAIT {
            return Err(CgroupError::FreezeTimeout {
                path: file,
                waited_ms: start.elapsed().as_millis(),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Whether the cgroup is frozen now.
pub(super) fn is_frozen(view: &View) -> bool {
    match view {
        View::Unified(dir) => {
            read(&dir.join("cgroup.events")).is_some_and(|e| e.lines().any(|l| l == "frozen 1"))
        }
        View::Hierarchies(dirs) => v1_dir(dirs, "freezer")
            .and_then(|d| read(&d.join("freezer.state")))
            .is_some_and(|s| s.trim() == "FROZEN"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v2_files() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::write(d.join("memory.current"), "10485760\n").unwrap();
        std::fs::write(
            d.join("memory.stat"),
            "anon 1\ninactive_file 2097152\nactive_file 3\n",
        )
        .unwrap();
        std::fs::write(d.join("memory.max"), "67108864\n").unwrap();
        std::fs::write(d.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        std::fs::write(d.join("pids.current"), "3\n").unwrap();
        std::fs::write(d.join("pids.max"), "max\n").unwrap();
        let s = read_stats(&View::Unified(d.to_path_buf()));
        assert_eq!(
            s,
            Stats {
                cpu_usage_ns: 1_500_000,
                memory_usage: 8_388_608,
                memory_charged: 10_485_760,
                memory_limit: Some(67_108_864),
                pids: 3,
                pids_limit: None,
            }
        );
    }

    #[test]
    fn reads_v1_files_across_hierarchies() {
        let t = tempfile::tempdir().unwrap();
        let mk = |n: &str| {
            let p = t.path().join(n);
            std::fs::create_dir(&p).unwrap();
            p
        };
        let (mem, cpu, pids) = (mk("memory"), mk("cpu,cpuacct"), mk("pids"));
        std::fs::write(mem.join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(mem.join("memory.stat"), "total_inactive_file 1024\n").unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(cpu.join("cpuacct.usage"), "777\n").unwrap();
        std::fs::write(pids.join("pids.current"), "2\n").unwrap();
        std::fs::write(pids.join("pids.max"), "100\n").unwrap();
        let view = View::Hierarchies(vec![
            ("memory".into(), mem),
            ("cpu,cpuacct".into(), cpu),
            ("pids".into(), pids),
        ]);
        let s = read_stats(&view);
        assert_eq!(
            (s.cpu_usage_ns, s.memory_usage, s.memory_limit),
            (777, 3072, None)
        );
        assert_eq!((s.pids, s.pids_limit), (2, Some(100)));
    }
}
