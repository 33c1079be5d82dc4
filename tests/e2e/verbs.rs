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
    let out = d.slate(&["pause", "ticker"]).success();
    assert_eq!(out.stdout, "ticker\n", "the name, once");
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

#[test]
fn ps_filters_and_templates() {
    let d = detached("ps-filter");
    d.run_d(
        &["--name", "web", "-l", "app=shop", "-l", "tier=front"],
        &["sleep", "1000"],
    );
    d.run_d(&["--name", "db", "-l", "app=shop"], &["sleep", "1000"]);
    d.run_d(&["--name", "done"], &["true"]);
    wait_status(&d, "done", "exited");
    let names = |args: &[&str]| {
        let mut a = vec!["ps", "--format", "{{.Names}}"];
        a.extend_from_slice(args);
        let mut v: Vec<String> = d
            .slate(&a)
            .success()
            .stdout
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&[]), ["db", "web"]);
    assert_eq!(names(&["-a"]), ["db", "done", "web"]);
    assert_eq!(names(&["-f", "label=tier=front"]), ["web"]);
    assert_eq!(names(&["-f", "label=app"]), ["db", "web"]);
    // The same key twice: either; two keys: both.
    assert_eq!(names(&["-f", "name=web", "-f", "name=db"]), ["db", "web"]);
    assert_eq!(
        names(&["-f", "name=web", "-f", "label=tier=back"]),
        Vec::<String>::new()
    );
    assert_eq!(names(&["-f", "status=exited"]), ["done"]);
    assert_eq!(names(&["-f", "exited=0"]), ["done"]);
    assert_eq!(
        names(&["-f", &format!("ancestor={}", d.image)]),
        ["db", "web"]
    );
    assert_eq!(names(&["-f", "network=host"]), ["db", "web"]);
    let out = d
        .slate(&[
            "ps",
            "--format",
            "table {{.Names}}\\t{{.State}}\\t{{.Label \"tier\"}}",
            "-f",
            "name=web",
        ])
        .success();
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["NAMES", "STATE", "TIER"],
            vec!["web", "running", "front"]
        ]
    );
    d.slate(&["ps", "--format", "{{.Nope}}"])
        .failure(1)
        .error_mentions(&["no field .Nope", ".Names"]);
    d.slate(&["ps", "-f", "colour=red"])
        .failure(1)
        .error_mentions(&["unknown key colour"]);
    let q = d.slate(&["ps", "-q", "-f", "name=db"]).success();
    assert_eq!(q.stdout.trim().len(), 12);

    let imgs = d
        .slate(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .success();
    assert_eq!(imgs.stdout.lines().count(), 1, "{}", imgs.stdout);
    let repo = d
        .image
        .rsplit_once(':')
        .map(|(r, _)| r)
        .unwrap_or(&d.image)
        .to_string();
    let last = repo.rsplit('/').next().unwrap_or("");
    let hit = d
        .slate(&["images", "-q", "-f", &format!("reference=*/*/{last}*")])
        .success();
    assert_eq!(hit.stdout.lines().count(), 1, "{repo}: {}", hit.stdout);
    let miss = d
        .slate(&["images", "-q", "-f", "reference=nothing*"])
        .success();
    assert_eq!(miss.stdout, "");
    assert_eq!(
        d.slate(&["images", "-q", "-f", "dangling=true"])
            .success()
            .stdout,
        ""
    );
}

#[test]
fn container_and_system_prune_info_and_version() {
    let d = detached("prune");
    d.run_d(&["--name", "keep"], &["sleep", "1000"]);
    d.run_d(&["--name", "gone1"], &["true"]);
    d.run_d(&["--name", "gone2"], &["true"]);
    wait_status(&d, "gone1", "exited");
    wait_status(&d, "gone2", "exited");
    let out = d.slate(&["container", "prune", "-f"]).success();
    assert_eq!(
        out.stdout.matches("Deleted container").count(),
        2,
        "{out:?}"
    );
    let left = d.slate(&["ps", "-a", "--format", "{{.Names}}"]).success();
    assert_eq!(left.stdout, "keep\n");

    d.slate(&["network", "create", "unused"]).success();
    d.slate(&["volume", "create", "scratch"]).success();
    d.slate(&["stop", "-t", "1", "keep"]).success();
    let out = d.slate(&["system", "prune", "-f"]).success();
    assert!(out.stdout.contains("Deleted container"), "{out:?}");
    assert!(out.stdout.contains("Deleted network unused"), "{out:?}");
    assert!(
        !out.stdout.contains("scratch"),
        "volumes only with --volumes: {out:?}"
    );
    assert!(out.stdout.contains("Total reclaimed space"), "{out:?}");
    // The image is kept without -a; -a --volumes takes it and the volume.
    assert_eq!(
        d.slate(&["images", "-q"]).success().stdout.lines().count(),
        1
    );
    let out = d
        .slate(&["system", "prune", "-a", "--volumes", "-f"])
        .success();
    assert!(out.stdout.contains("Deleted volume scratch"), "{out:?}");
    assert_eq!(d.slate(&["images", "-q"]).success().stdout, "");

    let info = d.slate(&["info", "--format", "json"]).success().json();
    assert_eq!(info["store"]["root"], d.slate.root().display().to_string());
    assert_eq!(info["containers"]["total"], 0);
    let mode = info["cgroups"]["version"].as_str().expect("cgroup version");
    let expected = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else {
        "hybrid (v1 controllers, v2 mounted)"
    };
    assert_eq!(mode, expected);
    assert!(d.slate(&["info"]).success().stdout.contains("Cgroups:"));
    let v = d.slate(&["version", "--format", "json"]).success().json();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn unknown_flags_are_flags_not_image_references() {
    let d = detached("flags");
    let out = d.slate(&["run", "--publsh", "80", &d.image]).failure(125);
    assert_eq!(
        out.stderr.trim(),
        "slate: unknown flag --publsh: did you mean --publish? (`slate run --help` lists them)"
    );
    assert!(!out.stderr.contains("reference"), "{out:?}");
    let out = d.slate(&["run", "--link", "db", &d.image]).failure(125);
    out.error_mentions(&["docker's --link is not supported", "network"]);
    let out = d
        .slate(&["run", "-d", "--cpu-quota=5000", &d.image])
        .failure(125);
    out.error_mentions(&["--cpu-quota", "--cpus"]);
    let out = d
        .slate(&["systemd", "unit", "--memry", "5m", &d.image])
        .failure(125);
    out.error_mentions(&["did you mean --memory?"]);
    // Nothing was started, and a flag after the image is the command's.
    let out = d
        .slate(&["run", "--rm", &d.image, "echo", "--publsh"])
        .success();
    assert_eq!(out.stdout, "--publsh\n");
}

#[test]
fn kill_of_many_reports_each() {
    let d = detached("kill-many");
    d.run_d(&["--name", "a"], &["sleep", "1000"]);
    d.run_d(&["--name", "b"], &["sleep", "1000"]);
    let out = d.slate(&["kill", "a", "nosuch", "b"]).failure(1);
    assert_eq!(out.stdout, "a\nb\n", "{out:?}");
    out.error_mentions(&["nosuch"]);
    wait_status(&d, "a", "exited");
    wait_status(&d, "b", "exited");
}

#[test]
fn inspect_shows_the_seccomp_profile_in_force() {
    let d = detached("seccomp-inspect");
    d.run_d(&["--name", "dflt"], &["sleep", "1000"]);
    d.run_d(
        &["--name", "admin", "--cap-add", "SYS_ADMIN"],
        &["sleep", "1000"],
    );
    d.run_d(
        &["--name", "open", "--security-opt", "seccomp=unconfined"],
        &["sleep", "1000"],
    );
    let syscalls = |name: &str| -> Vec<String> {
        let v = d.inspect(name);
        assert!(
            v["seccomp"]["source"]
                .as_str()
                .is_some_and(|s| s.contains("default")),
            "{}",
            v["seccomp"]
        );
        assert_eq!(v["seccomp"]["profile"]["defaultAction"], "SCMP_ACT_ERRNO");
        let mut names: Vec<String> = v["seccomp"]["profile"]["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|r| r["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    };
    let dflt = syscalls("dflt");
    let admin = syscalls("admin");
    assert!(!dflt.contains(&"mount".to_string()));
    // docker's profile opens mount and friends to CAP_SYS_ADMIN: inspect shows what runs.
    assert!(admin.contains(&"mount".to_string()), "{admin:?}");
    assert_eq!(d.inspect("open")["seccomp"]["source"], "none (unconfined)");
}
