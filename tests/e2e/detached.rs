//! Detached containers (issue 6): `run -d` and its supervisor, `ps`, `logs -f`, `exec`,
//! `stop`, `kill`, `rm`, `--replace`, `--restart`, and the clean-up after a supervisor killed
//! with SIGKILL.
//!
//! Each test has its own store and its own state dir (`--state-dir` in its temp dir: never the
//! host's /run/slate). Clean-up, even on failure: [`Detached`]'s Drop kills the supervisors
//! and containers its state dir records (by PID), then kills the processes of those
//! containers' cgroups (by PID, from `cgroup.procs`) and removes the cgroups, before the temp
//! dir is unmounted and removed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::fixture::{busybox, Compression, ImageSpec, LayerSpec};
use crate::harness::registry::Registry;
use crate::harness::slate::{mounts_below, Output, Slate};
use crate::harness::slate_cmd;
use crate::harness::tar_writer::Entry;

/// The busybox applets the image links in `/bin`.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "true", "ls", "sleep", "seq", "rm", "touch", "id", "pwd", "tty", "grep",
];

/// The image every test here runs, pushed once per test process: busybox, a user `app`
/// (1000:1000), and the mount points a container needs.
fn image() -> &'static str {
    static REF: OnceLock<String> = OnceLock::new();
    REF.get_or_init(|| build_image("v1", None))
}

/// The same image with `StopSignal: SIGINT` in its config.
fn image_stopping_with_sigint() -> &'static str {
    static REF: OnceLock<String> = OnceLock::new();
    REF.get_or_init(|| build_image("sigint", Some("SIGINT")))
}

fn build_image(tag: &str, stop_signal: Option<&str>) -> String {
    let mut e = Vec::new();
    for d in [
        "bin", "dev", "etc", "proc", "sys", "home", "home/app", "srv", "shared",
    ] {
        e.push(Entry::dir(d));
    }
    e.push(Entry::dir("tmp").mode(0o1777));
    e.push(Entry::file("bin/busybox", busybox()).mode(0o755));
    for a in APPLETS {
        e.push(Entry::symlink(format!("bin/{a}"), "busybox"));
    }
    e.push(Entry::file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    ));
    e.push(Entry::file("etc/group", "root:x:0:\napp:x:1000:\n"));
    let platform = match std::env::consts::ARCH {
        "x86_64" => "linux/amd64",
        "aarch64" => "linux/arm64",
        "arm" => "linux/arm/v7",
        other => panic!("no image platform for {other}"),
    };
    let mut spec = ImageSpec::new(vec![LayerSpec::new(Compression::Gzip, e)]).platform(platform);
    spec.runtime_config = json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh"],
    });
    if let Some(sig) = stop_signal {
        spec.runtime_config["StopSignal"] = json!(sig);
    }
    Registry::shared().push_image("detached/busybox", tag, &spec.build())
}

/// The cgroup directories of container `id` (v2, and each v1 hierarchy).
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut bases = vec![root.to_path_buf()];
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            bases.push(e.path());
        }
    }
    bases
        .into_iter()
        .map(|b| b.join("slate").join(id))
        .filter(|d| d.is_dir())
        .collect()
}

/// Kills the processes of container `id`'s cgroups (by PID) and removes the cgroups.
fn remove_cgroups(id: &str) {
    for dir in cgroup_dirs(id) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                // SAFETY: kill(2) with a PID read from this test's container's own cgroup.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = std::fs::remove_dir(&dir) {
            eprintln!("warning: removing cgroup {}: {e}", dir.display());
        }
    }
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A store with the image pulled, and a state dir of its own (also used by `auto_update`).
pub(crate) struct Detached {
    pub(crate) slate: Slate,
    pub(crate) image: String,
    pub(crate) state: PathBuf,
    ids: Mutex<Vec<String>>,
    /// Commands run in this network namespace (`nsenter --net=`), when set.
    pub(crate) netns: Option<PathBuf>,
}

impl Detached {
    fn new(label: &str) -> Detached {
        let d = Detached::with_image(label, image());
        d.slate.pull(&d.image, None);
        d
    }

    /// A fresh store (nothing pulled) whose `run_d` runs `image`.
    pub(crate) fn with_image(label: &str, image: &str) -> Detached {
        let slate = Slate::new(&format!("d-{label}"));
        let state = slate.dir().subdir("state");
        Detached {
            slate,
            image: image.to_string(),
            state,
            ids: Mutex::new(Vec::new()),
            netns: None,
        }
    }

    fn state_arg(&self) -> String {
        self.state.display().to_string()
    }

    pub(crate) fn learn_id(&self, id: &str) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.push(id.to_string());
        }
    }

    /// `slate --state-dir <ours> ARGS...`.
    pub(crate) fn slate(&self, args: &[&str]) -> Output {
        let sd = self.state_arg();
        let mut all = vec!["--state-dir", sd.as_str()];
        all.extend_from_slice(args);
        match &self.netns {
            Some(ns) => self.slate.run_wrapped(
                &[
                    "nsenter".to_string(),
                    format!("--net={}", ns.display()),
                    "--".into(),
                ],
                &all,
            ),
            None => self.slate.run(&all),
        }
    }

    /// `slate run -d FLAGS IMAGE CMD...`: must succeed; returns the id.
    pub(crate) fn run_d(&self, flags: &[&str], cmd: &[&str]) -> String {
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(flags);
        args.push(&self.image);
        args.extend_from_slice(cmd);
        let out = self.slate(&args).success();
        let id = out.last_stdout_line().trim().to_string();
        assert!(is_container_id(&id), "run -d printed {id:?}: {out:?}");
        self.learn_id(&id);
        id
    }

    pub(crate) fn inspect(&self, name: &str) -> Value {
        let v = self.slate(&["inspect", name]).success().json();
        v[0].clone()
    }

    fn ps_json(&self, all: bool) -> Vec<Value> {
        let mut args = vec!["ps", "--format", "json"];
        if all {
            args.push("-a");
        }
        match self.slate(&args).success().json() {
            Value::Array(a) => a,
            other => panic!("ps --format json is not an array: {other}"),
        }
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_dir(&self.state)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("state.json")).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        // Supervisors first (so nothing restarts), then containers, by the PIDs they recorded.
        for r in self.records() {
            for key in ["supervisor_pid", "pid"] {
                if let Some(pid) = r[key].as_i64() {
                    if pid > 1 && alive(pid as i32) {
                        // SAFETY: kill(2) on a PID this test's own state dir recorded.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                }
            }
            if let Some(id) = r["id"].as_str() {
                self.learn_id(id);
            }
        }
        let ids = self.ids.lock().map(|v| v.clone()).unwrap_or_default();
        for id in ids {
            // A health monitor ends on its own once the record is gone; a failed test does
            // not wait for that.
            for pid in health_monitors(&id) {
                // SAFETY: kill(2) on a `slate healthcheck <id>` of this test's own container.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            remove_cgroups(&id);
        }
        // Then `slate` (its TestDir) unmounts and removes the store and state dir.
    }
}

/// PIDs of the `slate healthcheck ID` processes of container `id` (found by their command
/// line: the record does not name them).
pub(crate) fn health_monitors(id: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let words: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let ours = words
                .windows(2)
                .any(|w| w[0] == b"healthcheck" && w[1] == id.as_bytes());
            ours.then_some(pid)
        })
        .collect()
}

/// A slate command in the background whose stdout is read line by line; killed and reaped
/// (by PID) on Drop.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Follower {
    fn start(d: &Detached, args: &[&str]) -> Follower {
        let sd = d.state_arg();
        let mut all = vec!["--state-dir", sd.as_str()];
        all.extend_from_slice(args);
        let (mut cmd, _) = slate_cmd::command(&d.slate, &all, "info");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("starting slate");
        let stdout = child.stdout.take().expect("stdout pipe");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn wait_line(&mut self, timeout: Duration, want: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == want => return,
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line {want:?} within {timeout:?}; got {:?}", self.seen),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").split_whitespace().next();
            !matches!(state, Some("Z") | Some("X") | None)
        })
        .unwrap_or(false)
}

fn proc_status_field(pid: i64, field: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// A shell app that prints `hello`, ignores SIGTERM, and prints `later` once the host creates
/// `trigger` in the bind-mounted dir.
const TERM_IGNORING_APP: &str = "trap '' TERM; echo hello; echo to-stderr >&2; \
    while true; do if [ -e /shared/trigger ]; then rm /shared/trigger; echo later; fi; sleep 0.1; done";

#[test]
fn run_d_ps_logs_follow_stop_rm_and_unique_names() {
    let d = Detached::new("basic");
    let shared = d.slate.dir().subdir("shared");
    let vol = format!("{}:/shared", shared.display());
    let id = d.run_d(
        &["--name", "web", "-v", &vol],
        &["sh", "-c", TERM_IGNORING_APP],
    );

    // ps: text and JSON.
    let ps = d.slate(&["ps"]).success();
    let line = ps
        .stdout
        .lines()
        .find(|l| l.contains("web"))
        .unwrap_or_else(|| panic!("ps does not list web: {ps:?}"));
    assert!(line.starts_with(&id[..12]), "{line}");
    assert!(line.contains("Up"), "{line}");
    let all = d.ps_json(false);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["id"], id.as_str());
    assert_eq!(all[0]["name"], "web");
    assert_eq!(all[0]["status"], "running");
    let pid = all[0]["pid"].as_i64().expect("a pid");
    assert!(alive(pid as i32));
    let q = d.slate(&["ps", "-q"]).success();
    assert_eq!(q.stdout.trim(), &id[..12]);

    // A second container of that name is refused, by name, while the first runs.
    let again = d.slate(&["run", "-d", "--name", "web", &d.image, "true"]);
    let again = again.failure(125);
    again.error_mentions(&["web", "in use"]);
    assert_eq!(d.ps_json(true).len(), 1);

    // logs: both streams, by name and by id prefix.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = d.slate(&["logs", &id[..8]]).success();
        if out.stdout.contains("hello") && out.stderr.contains("to-stderr") {
            assert!(!out.stdout.contains("to-stderr"), "{out:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logs never showed hello: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ts = d
        .slate(&["logs", "--timestamps", "--tail", "2", "web"])
        .success();
    assert!(
        ts.stdout.starts_with("20") && ts.stdout.contains("Z hello"),
        "{ts:?}"
    );

    // logs -f follows: the line written after it started arrives.
    let mut follower = Follower::start(&d, &["logs", "-f", "web"]);
    follower.wait_line(Duration::from_secs(10), "hello");
    std::fs::write(shared.join("trigger"), "").expect("writing the trigger");
    follower.wait_line(Duration::from_secs(10), "later");
    drop(follower); // killed and reaped by PID

    // stop -t 3 of an app that ignores SIGTERM: SIGKILL after ~3 s.
    let t = Instant::now();
    d.slate(&["stop", "-t", "3", "web"]).success();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "stop returned after {took:?}"
    );
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    assert!(!alive(pid as i32), "the app is still alive after stop");
    let v = d.inspect("web");
    assert_eq!(v["status"], "exited");
    assert_eq!(v["exit_code"], 137);
    assert!(d.ps_json(false).is_empty());
    let ps_a = d.slate(&["ps", "-a"]).success();
    assert!(ps_a.stdout.contains("Exited (137)"), "{ps_a:?}");
    // Scratch gone, logs kept until rm.
    let run_dir = PathBuf::from(v["run_dir"].as_str().expect("run_dir"));
    let log_dir = PathBuf::from(v["log_dir"].as_str().expect("log_dir"));
    assert!(!run_dir.exists(), "{} left after stop", run_dir.display());
    assert!(log_dir.join("container.log").exists());
    assert!(cgroup_dirs(&id).is_empty(), "cgroup left after stop");
    assert!(d.slate(&["logs", "web"]).success().stdout.contains("later"));

    // rm: record and logs gone.
    d.slate(&["rm", "web"]).success();
    assert!(d.ps_json(true).is_empty());
    assert!(!log_dir.exists(), "logs left after rm");
    d.slate(&["logs", "web"])
        .failure(1)
        .error_mentions(&["no such container"]);
    assert!(mounts_below(d.slate.dir().path()).is_empty());
}

#[test]
fn replace_stops_the_old_container_and_starts_the_new_one() {
    let d = Detached::new("replace");
    let old = d.run_d(&["--name", "app"], &["sleep", "1000"]);
    let old_v = d.inspect("app");
    let old_pid = old_v["pid"].as_i64().expect("pid");
    let new = d.run_d(&["--name", "app", "--replace"], &["sleep", "1000"]);
    assert_ne!(old, new);
    let all = d.ps_json(true);
    assert_eq!(all.len(), 1, "only the new container remains: {all:?}");
    assert_eq!(all[0]["id"], new.as_str());
    assert_eq!(all[0]["status"], "running");
    assert!(!alive(old_pid as i32), "the old container still runs");
    assert!(cgroup_dirs(&old).is_empty());
    // rm -f of a running container.
    d.slate(&["rm", "app"]).failure(1);
    d.slate(&["rm", "-f", "app"]).success();
    assert!(d.ps_json(true).is_empty());
    assert!(cgroup_dirs(&new).is_empty());

    // The systemd idiom: a foreground `run --replace` takes over from a detached container.
    let detached = d.run_d(&["--name", "svc"], &["sleep", "1000"]);
    let out = d
        .slate(&[
            "run",
            "--rm",
            "--name",
            "svc",
            "--replace",
            &d.image,
            "echo",
            "took over",
        ])
        .success();
    assert_eq!(out.stdout.trim(), "took over");
    assert!(d.ps_json(true).is_empty(), "the detached svc is gone");
    assert!(cgroup_dirs(&detached).is_empty());
}

#[test]
fn a_killed_supervisor_is_cleaned_up_by_the_next_command_and_others_keep_running() {
    let d = Detached::new("crash");
    let victim = d.run_d(&["--name", "victim"], &["sleep", "1000"]);
    let other = d.run_d(&["--name", "other"], &["sleep", "1000"]);
    let v = d.inspect("victim");
    let sup = v["supervisor_pid"].as_i64().expect("supervisor pid") as i32;
    let app = v["pid"].as_i64().expect("pid") as i32;
    let run_dir = PathBuf::from(v["run_dir"].as_str().expect("run_dir"));
    assert!(run_dir.join("upper").is_dir());
    assert!(!cgroup_dirs(&victim).is_empty());
    let other_pid = d.inspect("other")["pid"].as_i64().expect("pid") as i32;

    // SAFETY: kill(2) on the supervisor PID our own state dir recorded.
    assert_eq!(unsafe { libc::kill(sup, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(sup) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }

    let ps = d.slate(&["ps"]).success();
    assert!(!ps.stdout.contains("victim"), "{ps:?}");
    assert!(ps.stdout.contains("other"), "{ps:?}");
    let v = d.inspect("victim");
    assert_eq!(v["status"], "exited", "{v:#}");
    assert!(v["error"].as_str().unwrap_or("").contains("supervisor"));
    assert!(!alive(app), "the victim's app survived");
    assert!(
        cgroup_dirs(&victim).is_empty(),
        "the victim's cgroup is left"
    );
    assert!(!run_dir.exists(), "{} is left", run_dir.display());
    assert!(mounts_below(d.slate.dir().path()).is_empty());
    // The other container was not touched.
    assert!(alive(other_pid), "the other container was killed");
    assert!(!cgroup_dirs(&other).is_empty());
    assert_eq!(d.inspect("other")["status"], "running");
    // The image store neither: another run still works.
    d.slate(&["rm", "-f", "other", "victim"]).success();
    d.slate(&["run", "--rm", &d.image, "true"]).success();
}

#[test]
fn restart_on_failure_gives_up_after_three_restarts() {
    let d = Detached::new("restart");
    d.run_d(
        &["--name", "flaky", "--restart", "on-failure:3"],
        &["sh", "-c", "echo attempt; exit 3"],
    );
    let out = d.slate(&["wait", "flaky"]).success();
    assert_eq!(out.stdout.trim(), "3");
    let v = d.inspect("flaky");
    assert_eq!(v["status"], "exited");
    assert_eq!(v["restart_count"], 3, "{v:#}");
    let logs = d.slate(&["logs", "flaky"]).success();
    assert_eq!(logs.stdout.matches("attempt").count(), 4, "{logs:?}");
    assert_eq!(logs.stderr.matches("restart").count(), 3, "{logs:?}");
    let run_dir = PathBuf::from(v["run_dir"].as_str().expect("run_dir"));
    assert!(!run_dir.exists());
}

#[test]
fn restarts_get_a_fresh_rootfs() {
    let d = Detached::new("fresh");
    // Fails the first time (no marker yet), leaves a marker; a fresh rootfs fails again.
    d.run_d(
        &["--name", "f", "--restart", "on-failure:2"],
        &[
            "sh",
            "-c",
            "if [ -e /marker ]; then echo stale; exit 0; fi; touch /marker; echo fresh; exit 1",
        ],
    );
    assert_eq!(d.slate(&["wait", "f"]).success().stdout.trim(), "1");
    let logs = d.slate(&["logs", "f"]).success();
    assert_eq!(logs.stdout.matches("fresh").count(), 3, "{logs:?}");
    assert!(!logs.stdout.contains("stale"), "{logs:?}");
}

#[test]
fn supervisor_memory_stays_small() {
    let d = Detached::new("rss");
    let mut bins = vec![(crate::harness::slate::SLATE_BIN.to_string(), binary_kind())];
    // A release build, when given, is measured too (`cargo build --release -p slate`).
    if let Ok(b) = std::env::var("SLATE_E2E_RELEASE_BIN") {
        bins.push((b, "release build"));
    }
    for (i, (bin, kind)) in bins.iter().enumerate() {
        let name = format!("idle{i}");
        let out = std::process::Command::new(bin)
            .args(["--root", &d.slate.root().display().to_string()])
            .args([
                "--config",
                &d.slate
                    .dir()
                    .path()
                    .join("config.toml")
                    .display()
                    .to_string(),
            ])
            .args(["--state-dir", &d.state_arg(), "run", "-d", "--name", &name])
            .arg(&d.image)
            .args(["sh", "-c", "while true; do echo tick; sleep 0.1; done"])
            .output()
            .expect("running slate");
        assert!(out.status.success(), "{out:?}");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        d.learn_id(&id);
        // Let it relay a few dozen lines first.
        std::thread::sleep(Duration::from_secs(2));
        let v = d.inspect(&name);
        let sup = v["supervisor_pid"].as_i64().expect("supervisor pid");
        let f = |k| proc_status_field(sup, k).unwrap_or_default();
        eprintln!(
            "supervisor RSS ({kind}): VmHWM {}, VmRSS {} (RssAnon {}, RssFile {})",
            f("VmHWM"),
            f("VmRSS"),
            f("RssAnon"),
            f("RssFile")
        );
        // Pss: shared pages (the binary's and libc's, in the page cache) divided among
        // the processes that map them: what one more supervisor really costs.
        let rollup =
            std::fs::read_to_string(format!("/proc/{sup}/smaps_rollup")).unwrap_or_default();
        let pss: Vec<&str> = rollup.lines().filter(|l| l.starts_with("Pss")).collect();
        eprintln!("  {}", pss.join(", "));
        if std::env::var_os("SLATE_E2E_SMAPS").is_some() {
            let smaps = std::fs::read_to_string(format!("/proc/{sup}/smaps")).unwrap_or_default();
            let mut name = String::new();
            for l in smaps.lines() {
                if l.contains('-') && l.split_whitespace().count() >= 5 {
                    name = l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
                } else if let Some(v) = l.strip_prefix("Rss:") {
                    if v.trim() != "0 kB" {
                        eprintln!("  {:>10} {name}", v.trim());
                    }
                }
            }
        }
        let kb: u64 = f("VmHWM")
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("VmHWM in kB");
        // A generous bound (debug builds are big); the figures are printed for the record.
        assert!(kb < 32 * 1024, "supervisor peak RSS {kb} kB");
        d.slate(&["rm", "-f", &name]).success();
    }
}

#[test]
fn kill_is_not_restarted_and_rm_d_removes_itself() {
    let d = Detached::new("kill");
    d.run_d(&["--name", "k", "--restart", "always"], &["sleep", "1000"]);
    d.slate(&["kill", "k"]).success();
    assert_eq!(d.slate(&["wait", "k"]).success().stdout.trim(), "137");
    let v = d.inspect("k");
    assert_eq!(v["restart_count"], 0, "{v:#}");
    assert_eq!(v["status"], "exited");

    let id = d.run_d(&["--rm"], &["sh", "-c", "exit 0"]);
    d.slate(&["wait", &id[..12]]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.records().iter().any(|r| r["id"] == id.as_str()) {
        assert!(
            Instant::now() < deadline,
            "the --rm container's record stays"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!d.slate.root().join("containers").join(&id).exists());
}

fn binary_kind() -> &'static str {
    if Path::new(crate::harness::slate::SLATE_BIN)
        .to_string_lossy()
        .contains("/release/")
    {
        "release build"
    } else {
        "debug build"
    }
}

/// The `Name:\tvalue` fields of a /proc status text.
fn status_fields(text: &str, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{n}:")))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {n} in {text}"))
        })
        .collect()
}

#[test]
fn exec_joins_the_pid_namespace_cgroup_and_confinement_of_the_container() {
    let d = Detached::new("exec");
    d.run_d(&["--name", "box"], &["sleep", "1000"]);
    let pid = d.inspect("box")["pid"].as_i64().expect("pid");

    // PID namespace: the app is PID 1, and exec's own process is in there too.
    let out = d
        .slate(&["exec", "box", "cat", "/proc/1/cmdline"])
        .success();
    assert_eq!(out.stdout, "sleep\u{0}1000\u{0}", "{out:?}");
    let out = d.slate(&["exec", "box", "ls", "/proc"]).success();
    let pids: Vec<u32> = out
        .stdout
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(pids.contains(&1), "{out:?}");
    assert!(pids.iter().all(|p| *p < 100), "host PIDs visible: {pids:?}");

    // Same capabilities, seccomp mode and no_new_privs as the container's PID 1.
    let fields = [
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
    ];
    let host_view = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let theirs = status_fields(&host_view, &fields);
    let out = d
        .slate(&["exec", "box", "cat", "/proc/self/status"])
        .success();
    let ours = status_fields(&out.stdout, &fields);
    assert_eq!(ours, theirs, "exec: {fields:?}");
    assert_eq!(theirs[6], "2", "the container runs under a seccomp filter");

    // Same cgroup.
    let own = d
        .slate(&["exec", "box", "cat", "/proc/self/cgroup"])
        .success();
    let first = d.slate(&["exec", "box", "cat", "/proc/1/cgroup"]).success();
    assert_eq!(own.stdout, first.stdout);

    // Exit codes, user, working directory, environment, stdin.
    d.slate(&["exec", "box", "sh", "-c", "exit 7"]).failure(7);
    d.slate(&["exec", "box", "no-such-command"]).failure(127);
    let out = d.slate(&["exec", "-u", "app", "box", "id", "-u"]).success();
    assert_eq!(out.stdout.trim(), "1000");
    let out = d.slate(&["exec", "-w", "/tmp", "box", "pwd"]).success();
    assert_eq!(out.stdout.trim(), "/tmp");
    let out = d
        .slate(&[
            "exec",
            "-e",
            "GREETING=hi",
            "box",
            "sh",
            "-c",
            "echo $GREETING",
        ])
        .success();
    assert_eq!(out.stdout.trim(), "hi");
    let out = slate_cmd::run_with(
        &d.slate,
        &["--state-dir", &d.state_arg(), "exec", "-i", "box", "cat"],
        "info",
        &[],
        Some("piped in\n"),
    )
    .success();
    assert_eq!(out.stdout, "piped in\n");
    // Only stdio reached the process (CVE-2024-21626: no host descriptor leaks in).
    let out = d.slate(&["exec", "box", "ls", "/proc/self/fd"]).success();
    let fds: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(
        fds,
        ["0", "1", "2", "3"],
        "3 is ls's own directory: {out:?}"
    );

    d.slate(&["stop", "-t", "1", "box"]).success();
    d.slate(&["exec", "box", "true"])
        .failure(125)
        .error_mentions(&["not running"]);
}

#[test]
fn logs_rotate_within_the_cap_and_tail_and_since_filter() {
    let d = Detached::new("rotate");
    d.run_d(
        &[
            "--name",
            "chatty",
            "--log-max-size",
            "4k",
            "--log-max-files",
            "2",
        ],
        &["sh", "-c", "for i in $(seq 1 500); do echo line-$i; done"],
    );
    assert_eq!(d.slate(&["wait", "chatty"]).success().stdout.trim(), "0");
    let log_dir = PathBuf::from(d.inspect("chatty")["log_dir"].as_str().expect("log_dir"));
    let files: Vec<PathBuf> = std::fs::read_dir(&log_dir)
        .expect("log dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("container.log"))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        let len = std::fs::metadata(f).expect("log file").len();
        assert!(len <= 4096, "{} is {len} bytes", f.display());
    }
    let all = d.slate(&["logs", "chatty"]).success();
    assert!(all.stdout.ends_with("line-500\n"), "{all:?}");
    assert!(
        !all.stdout.contains("line-1\n"),
        "the oldest lines were rotated away"
    );
    let tail = d.slate(&["logs", "--tail", "3", "chatty"]).success();
    assert_eq!(tail.stdout, "line-498\nline-499\nline-500\n");
    let future = d
        .slate(&["logs", "--since", "2999-01-01T00:00:00Z", "chatty"])
        .success();
    assert_eq!(future.stdout, "");
    let recent = d
        .slate(&["logs", "--since", "1h", "--tail", "1", "chatty"])
        .success();
    assert_eq!(recent.stdout, "line-500\n");
}

#[test]
fn exec_t_gives_a_terminal_of_the_container() {
    let d = Detached::new("exec-tty");
    d.run_d(&["--name", "t"], &["sleep", "1000"]);
    // `script` gives slate a terminal of its own, as a user's shell would.
    let cmd = format!(
        "{} --root {} --config {} --state-dir {} exec -it t sh -c 'tty; echo $TERM'",
        crate::harness::slate::SLATE_BIN,
        d.slate.root().display(),
        d.slate.dir().path().join("config.toml").display(),
        d.state_arg()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("running script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("xterm"), "{text}");
}

#[test]
fn bad_detached_options_fail_clearly_and_leave_nothing() {
    let d = Detached::new("bad");
    let img = d.image.clone();
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["--restart", "sometimes"], &["--restart", "sometimes"]),
        (vec!["--log-max-size", "lots"], &["--log-max-size"]),
        (vec!["--name", "no/slash"], &["no/slash"]),
        (vec!["-t"], &["-t"]),
    ];
    for (flags, needles) in cases {
        let mut args = vec!["run", "-d"];
        args.extend(flags.iter().copied());
        args.extend([img.as_str(), "true"]);
        let out = d.slate(&args).failure(125);
        out.error_mentions(needles);
        out.assert_each_cause_once();
    }
    if !Path::new("/run/systemd/journal/socket").exists() {
        let out = d
            .slate(&["run", "-d", "--log-driver", "journald", &img, "true"])
            .failure(125);
        out.error_mentions(&["journald", "/run/systemd/journal/socket"]);
    }
    // An app that cannot start: the start's own error and exit code, and no record left.
    let out = d.slate(&["run", "-d", &img, "no-such-app"]).failure(127);
    out.error_mentions(&["no-such-app"]);
    assert!(d.ps_json(true).is_empty(), "a failed start left a record");
    let runs = d.slate.root().join("runs");
    let left: Vec<_> = std::fs::read_dir(&runs)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "run dirs left: {left:?}");
}

#[test]
fn stop_sends_the_images_stop_signal() {
    let d = Detached::new("stopsignal");
    let img = image_stopping_with_sigint();
    d.slate.pull(img, None);
    let out = d
        .slate(&[
            "run",
            "-d",
            "--name",
            "polite",
            img,
            "sh",
            "-c",
            "trap 'echo got-int; exit 0' INT; trap '' TERM; echo ready; while true; do sleep 0.1; done",
        ])
        .success();
    d.learn_id(out.last_stdout_line().trim());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d
        .slate(&["logs", "polite"])
        .success()
        .stdout
        .contains("ready")
    {
        assert!(Instant::now() < deadline, "the app never got ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.inspect("polite")["stop_signal"], "SIGINT");
    let t = Instant::now();
    d.slate(&["stop", "-t", "20", "polite"]).success();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        t.elapsed()
    );
    let v = d.inspect("polite");
    assert_eq!(
        v["exit_code"], 0,
        "the app exited on SIGINT by itself: {v:#}"
    );
    assert!(d
        .slate(&["logs", "polite"])
        .success()
        .stdout
        .contains("got-int"));
}

/// Layer directories of the store (chain id hex).
fn layer_dirs(d: &Detached) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.slate.root().join("layers"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn layers_in_use_survive_rmi_and_prune() {
    let d = Detached::new("pinned");
    let layers = layer_dirs(&d);
    assert!(!layers.is_empty());
    d.run_d(&["--name", "busy"], &["sleep", "1000"]);

    // prune -a keeps the image of a running container, as docker does.
    let out = d.slate(&["image", "prune", "-a"]).success();
    assert!(
        !d.slate.images().is_empty(),
        "prune -a removed an image in use: {out:?}"
    );
    assert_eq!(layer_dirs(&d), layers);

    // rmi is explicit: the name goes, the layers stay while the container runs on them.
    d.slate(&["rmi", &d.image]).success();
    assert!(d.slate.images().is_empty());
    assert_eq!(
        layer_dirs(&d),
        layers,
        "rmi removed layers under a running container"
    );
    d.slate(&["image", "prune"]).success();
    assert_eq!(
        layer_dirs(&d),
        layers,
        "prune removed layers under a running container"
    );
    let out = d.slate(&["exec", "busy", "cat", "/etc/group"]).success();
    assert!(out.stdout.contains("app:x:1000:"), "{out:?}");

    // Gone with the container; a dead holder (SIGKILLed supervisor) pins nothing either.
    d.slate(&["rm", "-f", "busy"]).success();
    d.slate(&["image", "prune"]).success();
    assert!(layer_dirs(&d).is_empty(), "{:?}", layer_dirs(&d));

    // A foreground run pins too, for as long as it runs.
    d.slate.pull(&d.image, None);
    // --init: the app is not PID 1, so the SIGTERM slate forwards ends it.
    let mut fg = Follower::start(
        &d,
        &[
            "run",
            "--rm",
            "--init",
            &d.image,
            "sh",
            "-c",
            "echo up; exec sleep 1000",
        ],
    );
    fg.wait_line(Duration::from_secs(20), "up");
    d.slate(&["rmi", &d.image]).success();
    d.slate(&["image", "prune"]).success();
    assert_eq!(
        layer_dirs(&d),
        layers,
        "layers of a foreground run were removed"
    );
    // SAFETY: kill(2) on the PID of the slate process this test started.
    assert_eq!(
        unsafe { libc::kill(fg.child.id() as i32, libc::SIGTERM) },
        0
    );
    let status = fg.child.wait().expect("waiting for slate run");
    assert!(
        status.code().is_some(),
        "slate run did not exit by itself: {status:?}"
    );
    d.slate(&["image", "prune"]).success();
    assert!(layer_dirs(&d).is_empty(), "{:?}", layer_dirs(&d));
}

#[test]
fn stop_of_many_works_on_them_at_once_and_says_when_it_killed() {
    let d = Detached::new("stop-many");
    // PID 1 of a namespace ignores TERM without a handler: these two must be killed.
    d.run_d(&["--name", "deaf1"], &["sleep", "1000"]);
    d.run_d(&["--name", "deaf2"], &["sleep", "1000"]);
    d.run_d(
        &["--name", "polite2"],
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done",
        ],
    );
    // Deaf to TERM, but --stop-signal names the one it hears.
    d.run_d(
        &["--name", "usr1", "--stop-signal", "USR1"],
        &[
            "sh",
            "-c",
            "trap 'echo got USR1; exit 0' USR1; while :; do sleep 1 & wait $!; done",
        ],
    );
    assert_eq!(d.inspect("usr1")["stop_signal"], "SIGUSR1");
    let out = d
        .slate(&["stop", "-t", "1", "deaf1", "polite2", "deaf2", "usr1"])
        .success();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["deaf1", "polite2", "deaf2", "usr1"],
        "{out:?}"
    );
    assert!(!out.stderr.contains("usr1"), "{out:?}");
    let logs = d.slate(&["logs", "usr1"]).success();
    assert_eq!(logs.stdout.trim(), "got USR1", "{logs:?}");
    for name in ["deaf1", "deaf2"] {
        assert!(
            out.stderr.contains(&format!(
                "{name} did not stop on SIGTERM within 1 s: killed it (SIGKILL)"
            )),
            "{out:?}"
        );
    }
    assert!(!out.stderr.contains("polite2"), "{out:?}");
    for name in ["deaf1", "deaf2", "polite2"] {
        assert_eq!(d.inspect(name)["status"], "exited");
    }
    // --rm with a restart policy is refused, as docker does.
    let out = d.slate(&["run", "-d", "--rm", "--restart", "always", &d.image]);
    out.failure(125).error_mentions(&["--rm", "--restart"]);
    // rm -f of several at once, an unknown one reported in its place.
    let out = d.slate(&["rm", "-f", "deaf1", "nope", "deaf2"]).failure(1);
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["deaf1", "deaf2"],
        "{out:?}"
    );
    assert!(out.stderr.contains("nope"), "{out:?}");
}

/// `rm -f` of a running container says nothing on stderr (at info level, even). Its cgroup
/// is its supervisor's to remove: `rm -f` freezing, killing and thawing it as well raced that
/// removal and could warn that it could not thaw a v1 freezer cgroup that was gone. Several
/// rounds, as that race was not lost every time.
#[test]
fn rm_f_of_a_running_container_warns_of_nothing() {
    let d = Detached::new("rm-f-quiet");
    for round in 0..5 {
        let name = format!("busy{round}");
        let id = d.run_d(
            &["--name", &name],
            &["sh", "-c", "sleep 1000 & sleep 1000 & wait"],
        );
        let pid = d.inspect(&name)["pid"].as_i64().expect("a pid");
        let out = d.slate(&["rm", "-f", &name]).success();
        assert_eq!(out.stdout.trim(), name, "{out:?}");
        assert!(
            out.stderr.trim().is_empty(),
            "rm -f of a running container printed: {out:?}"
        );
        assert!(!alive(pid as i32), "{name} still runs after rm -f");
        assert!(
            cgroup_dirs(&id).is_empty(),
            "cgroup of {name} left after rm -f"
        );
    }
    assert!(d.ps_json(true).is_empty());
}
