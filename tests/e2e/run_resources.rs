//! docker's block I/O, cpuset, swap and soft-limit flags (issue 12, part 4): every refusal is
//! one line and exit 125, on any host; on this machine's real cgroup v1 hierarchies
//! (`#[ignore]`d elsewhere; tests/run runs them where /sys/fs/cgroup is not cgroup2) the
//! values are read back from the files of the container's own cgroup, found from the
//! container's process (`/proc/<pid>/cgroup`, the host's view of what the container's
//! `/proc/self/cgroup` says inside its cgroup namespace). The pure v2 side runs in the
//! systemd VM (tests/vm/guest/resources.sh).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::harness::run_image::{self, RunEnv, Spawned, PRINT_ID};

/// The whole disk that holds `/`, as (a /dev path, "major:minor"): block I/O limits apply to
/// whole disks, and this one exists wherever the tests run from a disk.
fn root_disk() -> (PathBuf, String) {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").expect("stat /").dev();
    let (maj, min) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let mut sys = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    assert!(
        sys.exists(),
        "/ is not on a block device ({maj}:{min}): these tests need a disk"
    );
    if sys.join("partition").exists() {
        // A partition's directory sits inside its disk's.
        sys = sys.join("..");
    }
    let uevent = std::fs::read_to_string(sys.join("uevent")).expect("uevent of the disk");
    let name = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .unwrap_or_else(|| panic!("no DEVNAME in {}: {uevent}", sys.display()));
    let numbers = std::fs::read_to_string(sys.join("dev")).expect("dev of the disk");
    let path = PathBuf::from("/dev").join(name);
    assert!(path.exists(), "{} is missing", path.display());
    (path, numbers.trim().to_string())
}

/// Each refusal: exit 125, one `slate: ...` line naming the flag and the value.
#[test]
fn block_io_cpuset_and_swap_refusals_are_one_line_and_125() {
    let env = RunEnv::new("res-errors", run_image::default_config());
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").expect("online cpus");
    let last: u32 = online
        .trim()
        .rsplit(['-', ','])
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("online cpus: {online}"));
    let absent_cpu = (last + 1).to_string();
    let (disk, _) = root_disk();
    let disk_rate = format!("{}:0", disk.display());
    for (flags, mentions) in [
        (
            vec!["--device-write-bps", "/dev/null:1mb"],
            vec!["--device-write-bps", "/dev/null is not a block device"],
        ),
        (
            vec!["--device-read-iops", "/dev/no-such-disk:10"],
            vec!["--device-read-iops", "/dev/no-such-disk", "No such file"],
        ),
        (
            vec!["--device-read-bps", disk_rate.as_str()],
            vec!["--device-read-bps", "a rate above 0"],
        ),
        (
            vec!["--blkio-weight", "5"],
            vec!["--blkio-weight 5", "10 to 1000"],
        ),
        (
            vec!["--blkio-weight-device", "/dev/null:100"],
            vec!["--blkio-weight-device", "not a block device"],
        ),
        (
            vec!["--cpuset-cpus", absent_cpu.as_str()],
            vec!["--cpuset-cpus", "not available on this host", online.trim()],
        ),
        (
            vec!["--cpuset-cpus", "1-"],
            vec!["--cpuset-cpus", "expected a list"],
        ),
        (
            vec!["--cpuset-mems", "7"],
            vec!["--cpuset-mems", "memory nodes 7 not available"],
        ),
        (
            vec!["--memory-swap", "128m"],
            vec!["--memory-swap needs --memory"],
        ),
        (
            vec!["-m", "128m", "--memory-swap", "64m"],
            vec!["--memory-swap \"64m\"", "at least --memory"],
        ),
        (
            vec!["-m", "64m", "--memory-reservation", "128m"],
            vec!["--memory-reservation \"128m\"", "above --memory"],
        ),
    ] {
        let out = env.run(&flags, &["true"]).failure(125);
        out.error_mentions(&mentions);
        out.assert_each_cause_once();
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "one line for {flags:?}: {:?}", out.stderr);
    }
}

/// The container's cgroup directory in the v1 hierarchy `controller`, from the host's view
/// of the cgroup of `pid`'s first descendant that is not in slate's own cgroup there.
fn container_cgroup(slate_pid: i32, controller: &str) -> PathBuf {
    let path_of = |pid: i32| -> Option<String> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        text.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
    };
    let own = path_of(slate_pid).unwrap_or_else(|| panic!("slate is in no {controller} cgroup"));
    let mut todo = vec![slate_pid];
    while let Some(pid) = todo.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                match path_of(child) {
                    Some(p) if p != own => {
                        return mount_of(controller).join(p.trim_start_matches('/'));
                    }
                    _ => todo.push(child),
                }
            }
        }
    }
    panic!(
        "no process of the container below slate {slate_pid} in a {controller} cgroup of its own"
    )
}

/// The mount point of a v1 controller's hierarchy (`/sys/fs/cgroup/cpu,cpuacct` for cpu).
fn mount_of(controller: &str) -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut post = post.split(' ');
            if post.next()? != "cgroup" {
                return None;
            }
            let opts = post.nth(1)?;
            let point = PathBuf::from(pre.split(' ').nth(4)?);
            opts.split(',').any(|o| o == controller).then_some(point)
        })
        .unwrap_or_else(|| panic!("no v1 hierarchy has {controller}"))
}

fn read(dir: &Path, file: &str) -> String {
    let p = dir.join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// Starts a container that prints its id and its `/proc/self/cgroup`, then waits for the
/// test's go file; returns it with the go file. Inside its cgroup namespace the container
/// sees its own cgroup as `/` in every hierarchy (checked here), so where that is on the host
/// is read from the host's side, [`container_cgroup`].
fn start(env: &RunEnv, flags: &[&str]) -> (Spawned, PathBuf) {
    let sync = env.slate.dir().subdir("sync");
    let go = sync.join("go");
    let _ = std::fs::remove_file(&go);
    let vol = format!("{}:/sync", sync.display());
    let script = format!(
        "{PRINT_ID}\ncat /proc/self/cgroup\necho waiting; \
         for i in $(seq 600); do test -e /sync/go && exit 0; sleep 0.1; done; exit 9"
    );
    let mut all: Vec<&str> = vec!["-v", &vol];
    all.extend_from_slice(flags);
    let mut s = env.spawn(&all, &["sh", "-c", &script], Stdio::null());
    let id = s.wait_line(Duration::from_secs(60), |_| true);
    env.learn_id(&id);
    let inside = std::cell::RefCell::new(Vec::new());
    s.wait_line(Duration::from_secs(60), |l| {
        inside.borrow_mut().push(l.to_string());
        l == "waiting"
    });
    let inside = inside.into_inner();
    for ctrl in ["blkio", "cpuset", "memory"] {
        assert!(
            inside.iter().any(|l| l.ends_with(&format!(":{ctrl}:/"))),
            "the container's {ctrl} cgroup is the root of its namespace: {inside:?}"
        );
    }
    (s, go)
}

use crate::run_limits::release;

#[test]
#[ignore = "needs cgroup v1 blkio, cpuset and memory hierarchies; tests/run runs it there"]
fn v1_throttles_cpuset_memsw_and_soft_limit_are_in_the_containers_cgroup() {
    let env = RunEnv::new("res-v1", run_image::default_config());
    let (disk, numbers) = root_disk();
    let wbps = format!("{}:1mb", disk.display());
    let riops = format!("{}:100", disk.display());
    let (s, go) = start(
        &env,
        &[
            "--device-write-bps",
            &wbps,
            "--device-read-iops",
            &riops,
            "--cpuset-cpus",
            "0",
            "--cpuset-mems",
            "0",
            "--memory",
            "64m",
            "--memory-swap",
            "128m",
            "--memory-reservation",
            "32m",
        ],
    );
    let blkio = container_cgroup(s.pid(), "blkio");
    assert_eq!(
        read(&blkio, "blkio.throttle.write_bps_device"),
        format!("{numbers} 1048576"),
        "{}",
        blkio.display()
    );
    assert_eq!(
        read(&blkio, "blkio.throttle.read_iops_device"),
        format!("{numbers} 100")
    );
    assert_eq!(read(&blkio, "blkio.throttle.read_bps_device"), "");
    let cpuset = container_cgroup(s.pid(), "cpuset");
    assert_eq!(read(&cpuset, "cpuset.cpus"), "0", "{}", cpuset.display());
    assert_eq!(read(&cpuset, "cpuset.mems"), "0");
    let memory = container_cgroup(s.pid(), "memory");
    assert_eq!(read(&memory, "memory.limit_in_bytes"), "67108864");
    // v1's memsw is the total of memory and swap, as the flag is
    assert_eq!(read(&memory, "memory.memsw.limit_in_bytes"), "134217728");
    assert_eq!(read(&memory, "memory.soft_limit_in_bytes"), "33554432");
    release(s, &go, &env);
}

#[test]
#[ignore = "needs cgroup v1 memory with swap accounting; tests/run runs it there"]
fn v1_memory_swap_equal_to_memory_is_no_swap() {
    let env = RunEnv::new("res-v1-noswap", run_image::default_config());
    let (s, go) = start(&env, &["--memory", "64m", "--memory-swap", "64m"]);
    let memory = container_cgroup(s.pid(), "memory");
    assert_eq!(read(&memory, "memory.limit_in_bytes"), "67108864");
    assert_eq!(read(&memory, "memory.memsw.limit_in_bytes"), "67108864");
    release(s, &go, &env);
}

#[test]
#[ignore = "needs cgroup v1 blkio with BFQ's weight files; tests/run runs it there"]
fn v1_blkio_weight_is_written_or_refused_in_one_line() {
    let env = RunEnv::new("res-v1-weight", run_image::default_config());
    let (disk, numbers) = root_disk();
    let (s, go) = start(&env, &["--blkio-weight", "300"]);
    let blkio = container_cgroup(s.pid(), "blkio");
    let files = ["blkio.weight", "blkio.bfq.weight"];
    let file = files
        .iter()
        .find(|f| blkio.join(f).exists())
        .unwrap_or_else(|| panic!("neither of {files:?} in {}", blkio.display()));
    // v1's scale is docker's: no conversion
    assert_eq!(read(&blkio, file), "300", "{}", blkio.join(file).display());
    release(s, &go, &env);

    // A per-disk weight needs the disk's scheduler to weight cgroups (BFQ; CFQ before 5.0).
    let name = disk
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let scheduler =
        std::fs::read_to_string(format!("/sys/block/{name}/queue/scheduler")).unwrap_or_default();
    let value = format!("{}:200", disk.display());
    if scheduler.contains("[bfq]") || scheduler.contains("[cfq]") {
        let (s, go) = start(&env, &["--blkio-weight-device", &value]);
        let blkio = container_cgroup(s.pid(), "blkio");
        let dev_file = if file == &"blkio.weight" {
            "blkio.weight_device"
        } else {
            "blkio.bfq.weight_device"
        };
        assert!(
            read(&blkio, dev_file).contains(&format!("{numbers} 200")),
            "{}",
            read(&blkio, dev_file)
        );
        release(s, &go, &env);
    } else {
        let out = env
            .run(&["--blkio-weight-device", &value], &["true"])
            .failure(125);
        out.error_mentions(&[&format!("{numbers} 200"), "does not weight cgroups", "bfq"]);
        out.assert_each_cause_once();
    }
}
