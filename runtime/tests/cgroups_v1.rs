//! Cgroups on the real kernel of a v1 or hybrid host (as root): limits land in the v1 files,
//! a process the test started joins every hierarchy, and removal leaves nothing behind.
//! Ignored by a plain `cargo test`, since they cannot run on a pure v2 host (whose path the
//! unit tests cover over a fake cgroupfs, and the VM tests for real); `tests/run` runs them
//! with `--ignored` where the host has v1 hierarchies, and there they must pass.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use nix::unistd::Pid;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};
use slate_runtime::cgroups::{list_leftovers, Cgroup};

const NEEDS_V1: &str = "needs root on a cgroup v1 or hybrid host; tests/run runs it there";

/// Fails (rather than passing without testing) when run where the test cannot work.
fn require_v1_host() {
    assert!(nix::unistd::geteuid().is_root(), "{NEEDS_V1}");
    let unified = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(true);
    assert!(!unified, "{NEEDS_V1}: /sys/fs/cgroup is cgroup2");
}

fn is_cgroup2(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Owns what a test created, and cleans it up even when an assertion fails.
struct Guard {
    id: String,
    cgroup: Option<Cgroup>,
    children: Vec<Child>,
}

impl Guard {
    fn new(tag: &str) -> Guard {
        Guard {
            id: format!("slate-test-{tag}-{}", std::process::id()),
            cgroup: None,
            children: Vec::new(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let cg = self
            .cgroup
            .take()
            .or_else(|| Cgroup::open(&self.id, None).ok());
        if let Some(cg) = cg {
            if let Err(e) = cg.remove() {
                eprintln!("cleanup of {} failed: {e}", self.id);
            }
        }
    }
}

fn file_in(paths: &[PathBuf], name: &str) -> PathBuf {
    paths
        .iter()
        .map(|p| p.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no hierarchy has {name}"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_owned()
}

fn limits() -> LinuxResources {
    LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 * 1024 * 1024)
                .build()
                .expect("memory"),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .quota(50_000)
                .period(100_000u64)
                .shares(512u64)
                .build()
                .expect("cpu"),
        )
        .pids(LinuxPidsBuilder::default().limit(32).build().expect("pids"))
        .build()
        .expect("resources")
}

#[test]
#[ignore = "needs root on a cgroup v1 or hybrid host; tests/run runs it there"]
fn v1_limits_tasks_and_removal() {
    require_v1_host();
    let mut g = Guard::new("limits");
    let cg = Cgroup::create(&g.id, None, Some(&limits())).expect("create");
    let paths = cg.paths();
    g.cgroup = Some(cg);
    assert!(
        paths.len() >= 3,
        "expected several v1 hierarchies: {paths:?}"
    );
    assert!(paths
        .iter()
        .all(|p| p.ends_with(format!("slate/{}", g.id)) && p.is_dir()));
    assert!(
        paths
            .iter()
            .all(|p| !p.starts_with("/sys/fs/cgroup/systemd")),
        "name=systemd must not be touched"
    );

    assert_eq!(read(&file_in(&paths, "memory.limit_in_bytes")), "67108864");
    assert_eq!(read(&file_in(&paths, "cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&file_in(&paths, "cpu.cfs_period_us")), "100000");
    assert_eq!(read(&file_in(&paths, "cpu.shares")), "512");
    assert_eq!(read(&file_in(&paths, "pids.max")), "32");

    // a shell that forks a second process once it is in the cgroup (it waits for a line on
    // stdin): both must be killed by remove
    let child = Command::new("sh")
        .args(["-c", "read go; sleep 300 & exec sleep 300"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = Pid::from_raw(child.id() as i32);
    g.children.push(child);
    let cg = g.cgroup.as_ref().expect("cgroup");
    cg.add_task(pid).expect("add task");
    {
        use std::io::Write;
        let stdin = g.children[0].stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("release the shell");
    }

    let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
    for ctrl in ["memory", "cpu", "pids", "freezer"] {
        let want = format!(":{ctrl}:/slate/{}", g.id);
        assert!(
            own.lines().any(|l| l.ends_with(&want)),
            "{ctrl} not joined: {own}"
        );
    }
    // A hybrid host's cgroup2 hierarchy: the container has its own directory there too (what
    // its /sys/fs/cgroup/unified shows), not slate's.
    if is_cgroup2(Path::new("/sys/fs/cgroup/unified")) {
        let unified = Path::new("/sys/fs/cgroup/unified/slate").join(&g.id);
        assert!(paths.contains(&unified), "{paths:?}");
        let want = format!("0::/slate/{}", g.id);
        assert!(own.lines().any(|l| l == want), "unified not joined: {own}");
    }
    // the forked sleep starts right after; give it a moment to show up
    let mut found = Vec::new();
    for _ in 0..100 {
        found = cg.pids().expect("pids");
        if found.len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(found.contains(&pid), "{found:?}");
    assert!(found.len() >= 2, "{found:?}");
    assert!(list_leftovers().expect("list").contains(&g.id));

    let cg = g.cgroup.take().expect("cgroup");
    cg.remove().expect("remove");
    let status = g.children[0].wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    assert!(!list_leftovers().expect("list").contains(&g.id));
    for p in found {
        // the forked sleep was reparented to init (or a subreaper) and reaped there
        let gone = !Path::new(&format!("/proc/{p}")).exists()
            || read(Path::new(&format!("/proc/{p}/stat"))).contains(") Z ");
        assert!(gone, "process {p} survived");
    }
}

#[test]
#[ignore = "needs root on a cgroup v1 or hybrid host; tests/run runs it there"]
fn v1_cpuset_limit_and_reopen() {
    require_v1_host();
    let mut g = Guard::new("cpuset");
    let r = LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().cpus("0").build().expect("cpu"))
        .build()
        .expect("resources");
    let cg = Cgroup::create(&g.id, None, Some(&r)).expect("create");
    let paths = cg.paths();
    g.cgroup = Some(cg);
    assert_eq!(read(&file_in(&paths, "cpuset.cpus")), "0");
    assert!(!read(&file_in(&paths, "cpuset.mems")).is_empty());

    // reattach as a later slate process would after a crash
    let reopened = Cgroup::open(&g.id, None).expect("open");
    assert_eq!(reopened.paths(), paths);
    reopened.remove().expect("remove");
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    // a second remove of the original handle is a no-op
    g.cgroup
        .take()
        .expect("cgroup")
        .remove()
        .expect("second remove");
}

#[test]
fn v1_invalid_id_is_refused() {
    let err = Cgroup::create("../escape", None, None).expect_err("must fail");
    assert!(err.to_string().contains("invalid container id"), "{err}");
}
