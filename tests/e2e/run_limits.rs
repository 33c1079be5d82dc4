//! `slate run`'s exit codes (docker's), signals to slate reaching the app, and resource
//! limits: read back from the container's cgroups on the host while it runs, and seen to bite
//! (memory: 137, pids: fork fails). What the container itself reads at /sys/fs/cgroup is
//! `run_cgroupfs`'s.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::harness::run_image::{self, cgroup_dirs, RunEnv, Spawned, PRINT_ID};

#[test]
fn exit_codes_0_7_and_the_app_killed_by_a_signal() {
    let env = RunEnv::new("exit", run_image::default_config());
    env.run(&[], &["true"]).success();
    env.run(&[], &["sh", "-c", "exit 7"]).failure(7);
    env.run(&[], &["false"]).failure(1);
    // Killed by a signal: 128 + N (with --init the shell is not PID 1, so TERM kills it).
    env.run(&["--init"], &["sh", "-c", "kill -TERM $$; sleep 5"])
        .failure(143);
}

#[test]
fn exit_127_for_a_command_that_is_not_there() {
    let env = RunEnv::new("exit127", run_image::default_config());
    let out = env.run(&[], &["/no/such/program"]).failure(127);
    out.error_mentions(&["/no/such/program"]);
    let out = env.run(&[], &["no-such-command"]).failure(127);
    out.error_mentions(&["no-such-command"]);
}

#[test]
fn exit_126_for_a_directory() {
    let env = RunEnv::new("exit126", run_image::default_config());
    let out = env.run(&[], &["/srv"]).failure(126);
    out.error_mentions(&["/srv"]);
}

#[test]
fn exit_126_for_a_file_that_is_not_executable() {
    let env = RunEnv::new("exit126-file", run_image::default_config());
    let out = env.run(&[], &["/srv/data.txt"]).failure(126);
    out.error_mentions(&["/srv/data.txt"]);
}

#[test]
fn exit_125_when_slate_itself_fails() {
    let env = RunEnv::new("exit125", run_image::default_config());
    let out = env.run(&["--memory", "lots"], &["true"]).failure(125);
    out.error_mentions(&["--memory", "lots"]);
    let out = env.run(&["--cpus=-1"], &["true"]).failure(125);
    out.error_mentions(&["--cpus"]);
    let out = env.run(&["--pids-limit", "-5"], &["true"]).failure(125);
    out.error_mentions(&["--pids-limit"]);
    let out = env.run(&["-v", "bad name:/x"], &["true"]).failure(125);
    out.error_mentions(&["--volume"]);
    // Nothing was run: no run dir, no mounts (checked by `run`).
}

#[test]
fn exit_125_for_flags_that_do_not_parse() {
    let env = RunEnv::new("exit125-clap", run_image::default_config());
    for flags in [
        &["--cpus", "abc"][..],
        &["--pids-limit", "x"][..],
        &["--cpu-shares", "-3"][..],
        &["--no-such-flag"][..],
    ] {
        let out = env.run(flags, &["true"]).failure(125);
        assert!(out.stderr.contains(flags[0]), "{out:?}");
    }
}

#[test]
fn exit_137_when_the_memory_limit_is_hit() {
    let env = RunEnv::new("oom", run_image::default_config());
    let out = env
        .run(
            &["--memory", "16m"],
            &[
                "sh",
                "-c",
                "a=xxxxxxxxxxxxxxxx; while true; do a=$a$a; done",
            ],
        )
        .failure(137);
    drop(out);
    // The same loop bounded to ~4 MB fits in 64m.
    env.run(
        &["--memory", "64m"],
        &[
            "sh",
            "-c",
            "a=xxxxxxxxxxxxxxxx; for i in $(seq 18); do a=$a$a; done",
        ],
    )
    .success();
}

#[test]
fn sigterm_to_slate_reaches_the_app_and_slate_exits_with_its_status() {
    let env = RunEnv::new("sigterm", run_image::default_config());
    let mut s = env.spawn(
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; echo ready; for i in $(seq 600); do sleep 0.1; done; exit 9",
        ],
        Stdio::null(),
    );
    s.wait_line(Duration::from_secs(60), |l| l == "ready");
    s.signal(libc::SIGTERM);
    let (code, stdout, stderr) = s.finish(Duration::from_secs(30));
    assert_eq!(code, Some(3), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("got-term"), "{stdout}");
    env.assert_clean(&stderr);
}

#[test]
fn sigterm_to_slate_kills_a_plain_app_under_init_with_143() {
    let env = RunEnv::new("sigterm-init", run_image::default_config());
    let mut s = env.spawn(
        &["--init"],
        &["sh", "-c", "echo ready; exec sleep 60"],
        Stdio::null(),
    );
    s.wait_line(Duration::from_secs(60), |l| l == "ready");
    // `exec sleep` replaces the shell: give it a moment to be sleep (bounded).
    std::thread::sleep(Duration::from_millis(200));
    s.signal(libc::SIGTERM);
    let (code, stdout, stderr) = s.finish(Duration::from_secs(30));
    assert_eq!(code, Some(143), "stdout: {stdout}\nstderr: {stderr}");
    env.assert_clean(&stderr);
}

/// A file of a container cgroup, whichever hierarchy has it (v1: per controller; v2: one).
/// A hybrid host's cgroup2 directory of the container holds no controller, only core files
/// (its `cpu.stat` lacks the cpu controller's lines): not the place for limits.
fn cgroup_file(id: &str, names: &[&str]) -> Option<(PathBuf, String)> {
    let hybrid_unified = Path::new("/sys/fs/cgroup/unified");
    for dir in cgroup_dirs(id)
        .into_iter()
        .filter(|d| !d.starts_with(hybrid_unified))
    {
        for n in names {
            let p = dir.join(n);
            if let Ok(v) = std::fs::read_to_string(&p) {
                return Some((p, v.trim().to_string()));
            }
        }
    }
    None
}

/// Starts a container that prints its id and then `after` (a shell line), and then waits
/// until the test creates `go` in a shared directory; returns it, its id and the go file.
fn start_waiting(env: &RunEnv, flags: &[&str], before: &str) -> (Spawned, String, PathBuf) {
    let sync = env.slate.dir().subdir("sync");
    let go = sync.join("go");
    let _ = std::fs::remove_file(&go);
    let vol = format!("{}:/sync", sync.display());
    let script = format!(
        "{PRINT_ID}\n{before}\necho waiting; \
         for i in $(seq 600); do test -e /sync/go && exit 0; sleep 0.1; done; exit 9"
    );
    let mut all: Vec<&str> = vec!["-v", &vol];
    all.extend_from_slice(flags);
    let mut s = env.spawn(&all, &["sh", "-c", &script], Stdio::null());
    let id = s.wait_line(Duration::from_secs(60), |_| true);
    env.learn_id(&id);
    s.wait_line(Duration::from_secs(60), |l| l == "waiting");
    (s, id, go)
}

/// Lets a waiting container (see `start_waiting`) exit and checks it left nothing behind.
pub(crate) fn release(s: Spawned, go: &Path, env: &RunEnv) {
    std::fs::write(go, "").expect("writing the go file");
    let (code, stdout, stderr) = s.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    env.assert_clean(&stderr);
}

#[test]
fn memory_pids_and_cpus_limits_are_in_the_containers_cgroup() {
    let env = RunEnv::new("limits", run_image::default_config());
    let (s, id, go) = start_waiting(
        &env,
        &[
            "--memory",
            "64m",
            "--pids-limit",
            "20",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
        ],
        "true",
    );
    let (p, mem) = cgroup_file(&id, &["memory.limit_in_bytes", "memory.max"])
        .unwrap_or_else(|| panic!("no memory limit file for {id}: {:?}", cgroup_dirs(&id)));
    assert_eq!(mem, (64u64 << 20).to_string(), "{}", p.display());
    let (p, pids) = cgroup_file(&id, &["pids.max"]).expect("pids.max");
    assert_eq!(pids, "20", "{}", p.display());
    match cgroup_file(&id, &["cpu.cfs_quota_us"]) {
        Some((p, quota)) => {
            let (_, period) = cgroup_file(&id, &["cpu.cfs_period_us"]).expect("cfs period");
            let q: f64 = quota.parse().unwrap();
            let per: f64 = period.parse().unwrap();
            assert!(
                (q / per - 0.5).abs() < 1e-9,
                "{}: {quota}/{period}",
                p.display()
            );
            let (_, shares) = cgroup_file(&id, &["cpu.shares"]).expect("cpu.shares");
            assert_eq!(shares, "512");
        }
        None => {
            let (p, max) = cgroup_file(&id, &["cpu.max"]).expect("cpu.max");
            let parts: Vec<f64> = max.split_whitespace().map(|x| x.parse().unwrap()).collect();
            assert!(
                (parts[0] / parts[1] - 0.5).abs() < 1e-9,
                "{}: {max}",
                p.display()
            );
        }
    }
    release(s, &go, &env);
    assert!(
        cgroup_dirs(&id).is_empty(),
        "the container's cgroups are removed"
    );
}

#[test]
fn cpus_limit_throttles_a_busy_container() {
    let env = RunEnv::new("cpus", run_image::default_config());
    // Four spinning processes at half a CPU: the cgroup is throttled as soon as they get
    // more than half a CPU in a period, which they do unless the host is saturated; the
    // host watches cpu.stat (bounded: 60 s of spinning at most).
    let (s, id, go) = start_waiting(&env, &["--cpus", "0.5"], "probe spin 60 4 >/dev/null &");
    let mut last = String::new();
    let mut throttled = 0u64;
    for _ in 0..300 {
        let (_, stat) = cgroup_file(&id, &["cpu.stat"]).expect("cpu.stat");
        throttled = stat
            .lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no nr_throttled in cpu.stat: {stat}"));
        last = stat;
        if throttled > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(throttled > 0, "never throttled at --cpus 0.5: {last}");
    release(s, &go, &env);
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    let env = RunEnv::new("forkbomb", run_image::default_config());
    let out = env
        .run(&["--pids-limit", "20"], &["probe", "forks", "500"])
        .success();
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("forks_ok="))
        .unwrap_or_else(|| panic!("{out:?}"));
    let ok: u32 = line["forks_ok=".len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(ok < 20, "at most 19 children next to the probe: {line}");
    assert!(line.ends_with("errno=11"), "fork fails with EAGAIN: {line}");
    // Without the limit, the same probe gets all its children.
    let out = env.run(&[], &["probe", "forks", "50"]).success();
    assert!(out.stdout.contains("forks_ok=50 errno=0"), "{out:?}");
}

#[test]
fn the_next_run_cleans_up_after_a_supervisor_killed_with_sigkill() {
    let env = RunEnv::new("crash", run_image::default_config());
    let mut s = env.spawn(
        &[],
        &[
            "sh",
            "-c",
            &format!("{PRINT_ID}; echo ready; exec sleep 120"),
        ],
        Stdio::null(),
    );
    let id = s.wait_line(Duration::from_secs(60), |_| true);
    env.learn_id(&id);
    s.wait_line(Duration::from_secs(60), |l| l == "ready");
    s.signal(libc::SIGKILL);
    let (code, _, _) = s.finish(Duration::from_secs(30));
    assert_eq!(code, None, "slate was killed");
    let run_dir = env.slate.root().join("runs").join(&id);
    assert!(
        run_dir.exists(),
        "a killed slate cannot clean up: {}",
        run_dir.display()
    );

    // The next run finds what the dead one left and removes it: its directory, its
    // processes and its cgroups.
    env.run(&[], &["true"]).success();
    assert!(!run_dir.exists(), "{} is left", run_dir.display());
    let mut dirs = cgroup_dirs(&id);
    for _ in 0..100 {
        if dirs.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        dirs = cgroup_dirs(&id);
    }
    assert!(dirs.is_empty(), "the dead run's cgroups are left: {dirs:?}");
}

#[test]
fn hostname_defaults_to_the_hosts_with_its_network_and_to_the_short_id_without() {
    let env = RunEnv::new("hostname", run_image::default_config());
    let out = env.run(&[], &["hostname"]).success();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host name");
    assert_eq!(out.stdout.trim(), host.trim(), "{out:?}");
    let out = env
        .run(
            &["--network", "none"],
            &[
                "sh",
                "-c",
                &format!("{PRINT_ID}; hostname; cat /etc/hostname; grep -c . /etc/hosts"),
            ],
        )
        .success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{out:?}");
    env.learn_id(lines[0]);
    assert_eq!(lines[1], &lines[0][..12], "the short id: {out:?}");
    assert_eq!(lines[2], lines[1], "/etc/hostname agrees: {out:?}");
}
