//! The container verbs docker users reach for (issue 15): `start`, `restart`, `pause` /
//! `unpause`, `rename`, `stats` (read back against the cgroup files) and `top`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::detached::Detached;
use crate::harness::run_image;

fn detached(label: &str) -> Detached {
    let env = run_image::RunEnv::new(&format!("verbs-{label}"), run_image::default_config());
    let d = Detached::with_image(label, &env.image);
    d.slate.pull(&d.image, None);
    d
}

fn status(d: &Detached, name: &str) -> String {
    d.inspect(name)["status"].as_str().unwrap_or("").to_string()
}

fn wait_status(d: &Detached, name: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(d, name) != want {
        assert!(
            Instant::now() < deadline,
            "{name} never became {want}: {}",
            d.inspect(name)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn start_runs_a_stopped_container_again_on_a_fresh_rootfs() {
    let d = detached("start");
    // Each run appends to a file of its rootfs and to one of a volume: only the volume keeps.
    d.run_d(
        &["--name", "app", "-e", "GREETING=hi", "-v", "keep:/keep", "-l", "tier=web"],
        &[
            "sh", "-c",
            "echo run >> /rootfs-note; echo run >> /keep/note; echo $GREETING; wc -l < /rootfs-note; sleep 1000",
        ],
    );
    wait_status(&d, "app", "running");
    let first_pid = d.inspect("app")["pid"].as_i64();
    d.slate(&["stop", "-t", "1", "app"]).success();
    assert_eq!(status(&d, "app"), "exited");
    // `start` of a running container is fine (docker), of a stopped one runs it again.
    d.slate(&["start", "app"]).success();
    wait_status(&d, "app", "running");
    d.slate(&["start", "app"]).success();
    let v = d.inspect("app");
    assert_ne!(v["pid"].as_i64(), first_pid);
    assert_eq!(v["labels"]["tier"], "web");
    let out = d.slate(&["exec", "app", "cat", "/keep/note"]).success();
    assert_eq!(out.stdout, "run\nrun\n", "the volume keeps both runs");
    let out = d.slate(&["exec", "app", "cat", "/rootfs-note"]).success();
    assert_eq!(
        out.stdout, "run\n",
        "a fresh rootfs: the first run's write is gone"
    );
    let logs = d.slate(&["logs", "app"]).success();
    assert_eq!(logs.stdout.matches("hi\n").count(), 2, "{logs:?}");

    // restart: a new process again.
    let before = d.inspect("app")["pid"].as_i64();
    d.slate(&["restart", "-t", "1", "app"]).success();
    wait_status(&d, "app", "running");
    assert_ne!(d.inspect("app")["pid"].as_i64(), before);

    // Its image removed while stopped: a clear error, not a broken container.
    d.slate(&["stop", "-t", "1", "app"]).success();
    d.slate(&["rmi", &d.image]).success();
    d.slate(&["start", "app"])
        .failure(1)
        .error_mentions(&["no longer in the store", "pull it again"]);
    d.slate(&["start", "nosuch"]).failure(1);
}

#[test]
fn pause_freezes_and_unpause_thaws() {
    let d = detached("pause");
    d.run_d(
        &["--name", "ticker"],
        &[
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done",
        ],
    );
    wait_status(&d, "ticker", "running");
    std::thread::sleep(Duration::from_millis(200));
    d.slate(&["pause", "ticker"]).success();
    let ps = d.slate(&["ps"]).success();
    assert!(ps.stdout.contains("(Paused)"), "{}", ps.stdout);
    assert_eq!(d.inspect("ticker")["paused"], true);
    // Frozen: the processes' state says so on the host.
    let cg = cgroup_dir(&d, "ticker", "freezer");
    let frozen = std::fs::read_to_string(cg.join("freezer.state"))
        .or_else(|_| std::fs::read_to_string(cg.join("cgroup.events")))
        .unwrap_or_default();
    assert!(
        frozen.contains("FROZEN") || frozen.contains("frozen 1"),
        "{frozen}"
    );
    d.slate(&["exec", "ticker", "true"])
        .failure(125)
        .error_mentions(&["paused", "unpause"]);
    d.slate(&["pause", "ticker"])
        .failure(1)
        .error_mentions(&["already paused"]);
    d.slate(&["unpause", "ticker"]).success();
    let a = d
        .slate(&["exec", "ticker", "cat", "/tmp/n"])
        .success()
        .stdout;
    std::thread::sleep(Duration::from_millis(300));
    let b = d
        .slate(&["exec", "ticker", "cat", "/tmp/n"])
        .success()
        .stdout;
    assert_ne!(a, b, "it runs again after unpause");
    d.slate(&["unpause", "ticker"])
        .failure(1)
        .error_mentions(&["not paused"]);
    // A paused container still stops (it is thawed for its stop signal).
    d.slate(&["pause", "ticker"]).success();
    d.slate(&["stop", "-t", "2", "ticker"]).success();
    assert_eq!(status(&d, "ticker"), "exited");
}

#[test]
fn rename_keeps_the_container_and_frees_the_old_name() {
    let d = detached("rename");
    d.run_d(&["--name", "old"], &["sleep", "1000"]);
    d.run_d(&["--name", "other"], &["sleep", "1000"]);
    d.slate(&["rename", "old", "other"])
        .failure(1)
        .error_mentions(&["already in use"]);
    d.slate(&["rename", "old", "bad/name"]).failure(1);
    d.slate(&["rename", "old", "new"]).success();
    assert_eq!(d.inspect("new")["name"], "new");
    d.slate(&["inspect", "old"]).failure(1);
    // The old name is free again.
    d.run_d(&["--name", "old"], &["true"]);
}

#[test]
fn stats_match_the_cgroup_files_and_top_lists_the_processes() {
    let d = detached("stats");
    d.run_d(
        &["--name", "busy", "--memory", "48m", "--pids-limit", "50"],
        &["sh", "-c", "sleep 1000 & sleep 1000 & while :; do :; done"],
    );
    wait_status(&d, "busy", "running");
    std::thread::sleep(Duration::from_millis(300));
    let out = d
        .slate(&["stats", "--no-stream", "--format", "json", "busy"])
        .success();
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("stats json");
    let line = &v[0];
    assert_eq!(line["name"], "busy");
    assert_eq!(line["memory_limit"], 48 << 20);
    assert_eq!(line["memory_limited"], true);
    // sh, two sleeps (the loop is sh itself).
    assert_eq!(line["pids"], 3);
    assert_eq!(line["cgroup"]["pids_limit"], 50);
    // A busy loop shows CPU use (how much depends on what else the machine runs).
    let cpu = line["cpu_percent"].as_f64().expect("cpu");
    assert!(cpu > 0.0, "a spinning shell shows CPU use: {cpu}");

    // The same figures as the cgroup files, read right after.
    let mem = cgroup_dir(&d, "busy", "memory");
    let limit_file = ["memory.limit_in_bytes", "memory.max"]
        .iter()
        .find_map(|f| std::fs::read_to_string(mem.join(f)).ok())
        .expect("a memory limit file");
    assert_eq!(limit_file.trim(), (48u64 << 20).to_string());
    let pids = cgroup_dir(&d, "busy", "pids");
    let current: u64 = std::fs::read_to_string(pids.join("pids.current"))
        .expect("pids.current")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(line["pids"].as_u64(), Some(current));
    let charged_now: u64 = ["memory.usage_in_bytes", "memory.current"]
        .iter()
        .find_map(|f| std::fs::read_to_string(mem.join(f)).ok())
        .and_then(|s| s.trim().parse().ok())
        .expect("memory usage file");
    let charged = line["cgroup"]["memory_charged"].as_u64().expect("charged");
    // Same order of magnitude: a shell and two sleeps, a few hundred KB either way.
    assert!(
        charged.abs_diff(charged_now) < 4 << 20,
        "{charged} vs {charged_now}"
    );
    assert!(line["memory_usage"].as_u64().expect("usage") <= charged);

    let table = d.slate(&["stats", "--no-stream"]).success();
    assert!(
        table.stdout.contains("MEM USAGE / LIMIT") && table.stdout.contains("/ 48.0MiB"),
        "{}",
        table.stdout
    );

    let top = d.slate(&["top", "busy"]).success();
    let sleeps = top
        .stdout
        .lines()
        .filter(|l| l.ends_with(" sleep 1000") && !l.contains("sh -c"))
        .count();
    assert_eq!(sleeps, 2, "{}", top.stdout);
    assert_eq!(
        top.stdout.lines().count(),
        4,
        "a header and three processes: {}",
        top.stdout
    );
    assert!(top
        .stdout
        .lines()
        .next()
        .is_some_and(|h| h.contains("PID") && h.contains("CMD")));
    d.slate(&["stop", "-t", "1", "busy"]).success();
    d.slate(&["top", "busy"])
        .failure(1)
        .error_mentions(&["not running"]);
}

/// The container's directory in the v1 hierarchy of `controller`, or its v2 directory.
fn cgroup_dir(d: &Detached, name: &str, controller: &str) -> PathBuf {
    let v = d.inspect(name);
    let paths: Vec<PathBuf> = v["cgroup_paths"]
        .as_array()
        .expect("cgroup_paths")
        .iter()
        .filter_map(|p| p.as_str().map(PathBuf::from))
        .collect();
    paths
        .iter()
        .find(|p| {
            p.strip_prefix("/sys/fs/cgroup")
                .ok()
                .and_then(|r| r.components().next())
                .is_some_and(|c| {
                    c.as_os_str()
                        .to_string_lossy()
                        .split(',')
                        .any(|n| n == controller)
                })
        })
        .or_else(|| paths.first())
        .cloned()
        .expect("a cgroup dir")
}
