//! What the `slate run` tests share: a small busybox image with users, groups, a report
//! script and the static probe; a [`RunEnv`] (its own store, the image pulled into it) whose
//! runs are checked for leftovers; and [`Spawned`], a `slate run` in the background that a
//! test can read line by line and signal.
//!
//! Clean-up, even when a test fails: [`RunEnv`]'s Drop kills (by PID, from `cgroup.procs`)
//! and removes the cgroups named with this test's container ids (those it learned from
//! inside a container, and those of the run directories left in its own store), before the
//! store's [`TestDir`](super::slate::TestDir) unmounts and removes everything below it.
//! [`Spawned`] kills and reaps its slate by PID on Drop.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::fixture::{busybox, BuiltImage, Compression, ImageSpec, LayerSpec};
use super::registry::Registry;
use super::slate::{mounts_below, Output, Slate, SLATE_BIN};
use super::tar_writer::Entry;

/// The busybox applets the image links in `/bin`.
pub const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "true", "false", "id", "pwd", "env", "ls", "touch", "sleep", "hostname",
    "grep", "tty", "tr", "seq", "mkdir", "rm", "head", "wc", "printf", "test", "[", "sed", "stat",
    "kill", "sort", "dd", "readlink", "cut",
];

/// `/etc/passwd` of the image: root, `app` (1000:1000, member of audio and staff), nobody.
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:app user:/home/app:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

/// `/etc/group` of the image.
pub const GROUP: &str = "root:x:0:\n\
audio:x:29:app\n\
staff:x:50:other,app\n\
app:x:1000:\n\
nogroup:x:65534:\n";

/// `/usr/local/bin/report`: what the process sees, as `key=value` lines (env as `env:K=V`).
pub const REPORT: &str = "#!/bin/sh\n\
echo \"args=$*\"\n\
echo \"uid=$(id -u)\"\n\
echo \"gid=$(id -g)\"\n\
echo \"groups=$(id -G)\"\n\
echo \"cwd=$(pwd)\"\n\
echo \"hostname=$(hostname)\"\n\
env | sort | sed 's/^/env:/'\n";

/// A shell line printing the container's id, read from the overlay's upper dir
/// (`.../runs/<id>/upper`) in the container's own mountinfo.
pub const PRINT_ID: &str =
    "sed -n 's#.*upperdir=[^,]*/runs/\\([0-9a-f]*\\)/upper.*#\\1#p' /proc/self/mountinfo | head -n 1";

/// The image's platform: this host's, so the default `--platform` matches.
pub fn host_platform() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "linux/amd64",
        "aarch64" => "linux/arm64",
        "arm" => "linux/arm/v7",
        other => panic!("no image platform for {other}"),
    }
}

/// The static probe (`tests/probe/probe.c`), built once per test process.
pub fn probe() -> &'static [u8] {
    static PROBE: OnceLock<Vec<u8>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/probe/probe.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("e2e-probe-{}", std::process::id()));
        let st = std::process::Command::new("cc")
            .args(["-static", "-O2", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("running cc (install gcc and libc6-dev)");
        assert!(st.success(), "building the probe failed");
        let bytes = std::fs::read(&out).expect("reading the probe");
        let _ = std::fs::remove_file(&out);
        bytes
    })
}

/// The base layer's entries: the usual directories, busybox and its applets, the users and
/// groups, the report script and the probe.
pub fn base_entries() -> Vec<Entry> {
    let mut e = Vec::new();
    for d in [
        "bin",
        "dev",
        "etc",
        "home",
        "proc",
        "root",
        "srv",
        "sys",
        "usr",
        "usr/local",
        "usr/local/bin",
        "var",
    ] {
        e.push(Entry::dir(d));
    }
    e.push(Entry::dir("tmp").mode(0o1777));
    e.push(Entry::dir("home/app").owner(1000, 1000));
    e.push(Entry::file("bin/busybox", busybox()).mode(0o755));
    for a in APPLETS {
        e.push(Entry::symlink(format!("bin/{a}"), "busybox"));
    }
    e.push(Entry::file("bin/probe", probe()).mode(0o755));
    e.push(Entry::file("etc/passwd", PASSWD));
    e.push(Entry::file("etc/group", GROUP));
    e.push(Entry::file("usr/local/bin/report", REPORT).mode(0o755));
    e.push(Entry::file("srv/data.txt", "image data\n"));
    e
}

/// The default image config: a PATH and `/bin/sh`, as busybox's own image has.
pub fn default_config() -> Value {
    serde_json::json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh"],
    })
}

/// An image: the base layer, then `extra` layers, with `config` as its runtime config.
pub fn image(config: Value, extra: Vec<Vec<Entry>>) -> BuiltImage {
    let mut layers = vec![LayerSpec::new(Compression::Gzip, base_entries())];
    for l in extra {
        layers.push(LayerSpec::new(Compression::Gzip, l));
    }
    let mut spec = ImageSpec::new(layers).platform(host_platform());
    spec.runtime_config = config;
    spec.build()
}

/// The cgroup directories of container `id` on this host (v1 hierarchies, v2, hybrid).
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    let mut bases = vec![root.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                bases.push(e.path());
            }
        }
    }
    for b in bases {
        let d = b.join("slate").join(id);
        if d.is_dir() {
            out.push(d);
        }
    }
    out
}

/// Kills the processes of container `id`'s cgroups (by PID) and removes the cgroups.
pub fn remove_cgroups(id: &str) {
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
                // SAFETY: kill(2) with a PID read from this container's own cgroup.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = std::fs::remove_dir(&dir) {
            eprintln!("warning: removing cgroup {}: {e}", dir.display());
        }
    }
}

/// A container id printed by [`PRINT_ID`]: 64 hex digits.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A `slate` command on the test's store and config (the host's `RUST_LOG` and docker
/// credentials kept out), not yet started.
pub fn command(slate: &Slate, args: &[&str]) -> (std::process::Command, Vec<String>) {
    command_of(Path::new(SLATE_BIN), slate, args)
}

/// As [`command`], running another copy of the binary (tests that need two installs).
pub fn command_of(
    bin: &Path,
    slate: &Slate,
    args: &[&str],
) -> (std::process::Command, Vec<String>) {
    let mut all: Vec<String> = vec![
        "--root".into(),
        slate.root().display().to_string(),
        "--config".into(),
        slate.dir().path().join("config.toml").display().to_string(),
        "--log-level".into(),
        "info".into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let mut cmd = std::process::Command::new(bin);
    cmd.args(&all)
        .env_remove("RUST_LOG")
        .env("DOCKER_CONFIG", slate.dir().subdir("docker-config"));
    (cmd, all)
}

/// Runs slate to completion with extra environment and, optionally, bytes on its stdin
/// (else /dev/null).
pub fn run_with(slate: &Slate, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let (mut cmd, all) = command(slate, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting slate");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // The app may exit without reading it all: a broken pipe is not the test's failure.
        let _ = std::io::Write::write_all(&mut pipe, input.as_bytes());
    }
    let out = child.wait_with_output().expect("waiting for slate");
    Output {
        args: all,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A store of the test's own with one image pulled into it.
pub struct RunEnv {
    pub slate: Slate,
    pub image: String,
    ids: Mutex<Vec<String>>,
}

impl RunEnv {
    /// Pushes an image with `config` (and the base layer) as `run/<label>:v1` to the shared
    /// registry and pulls it into a new store.
    pub fn new(label: &str, config: Value) -> RunEnv {
        RunEnv::with_image(label, &image(config, Vec::new()))
    }

    pub fn with_image(label: &str, img: &BuiltImage) -> RunEnv {
        let reg = Registry::shared();
        let image = reg.push_image(&format!("run/{label}"), "v1", img);
        let slate = Slate::new(&format!("run-{label}"));
        slate.pull(&image, None);
        RunEnv {
            slate,
            image,
            ids: Mutex::new(Vec::new()),
        }
    }

    /// A store with no image in it (for `--pull` tests); `image` is the given reference.
    pub fn empty(label: &str, image: &str) -> RunEnv {
        RunEnv {
            slate: Slate::new(&format!("run-{label}")),
            image: image.to_string(),
            ids: Mutex::new(Vec::new()),
        }
    }

    /// The argument list `run --rm FLAGS... IMAGE CMD...`.
    pub fn args<'a>(&'a self, flags: &[&'a str], cmd: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(flags);
        a.push(&self.image);
        a.extend_from_slice(cmd);
        a
    }

    /// `slate run --rm FLAGS IMAGE CMD` with stdin from /dev/null; then checks that the run
    /// left nothing behind.
    pub fn run(&self, flags: &[&str], cmd: &[&str]) -> Output {
        let out = self.slate.run(&self.args(flags, cmd));
        self.assert_clean(&out);
        out
    }

    /// As [`RunEnv::run`], with `stdin` fed to slate.
    pub fn run_stdin(&self, flags: &[&str], cmd: &[&str], stdin: &str) -> Output {
        let out = run_with(&self.slate, &self.args(flags, cmd), &[], Some(stdin));
        self.assert_clean(&out);
        out
    }

    /// Records a container id (from [`PRINT_ID`]) so its cgroups are checked and cleaned up.
    pub fn learn_id(&self, id: &str) {
        assert!(is_container_id(id), "not a container id: {id:?}");
        match self.ids.lock() {
            Ok(mut v) => v.push(id.to_string()),
            Err(poisoned) => poisoned.into_inner().push(id.to_string()),
        }
    }

    /// After a run: no run directory, no mount below the test dir, no cgroup of a known id.
    pub fn assert_clean(&self, context: &dyn std::fmt::Debug) {
        let runs = self.slate.root().join("runs");
        let left: Vec<String> = std::fs::read_dir(&runs)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{} still holds {left:?} after the run ended\n{context:?}",
            runs.display()
        );
        let mounts = mounts_below(self.slate.dir().path());
        assert!(
            mounts.is_empty(),
            "mounts left below the test dir after the run: {mounts:?}\n{context:?}"
        );
        // A copy, so a failed assertion does not poison the lock the Drop guard needs.
        let ids: Vec<String> = self.known_ids();
        for id in &ids {
            let dirs = cgroup_dirs(id);
            assert!(
                dirs.is_empty(),
                "cgroups of container {id} left after the run: {dirs:?}"
            );
        }
    }

    fn known_ids(&self) -> Vec<String> {
        match self.ids.lock() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Starts `slate run --rm FLAGS IMAGE CMD` in the background.
    pub fn spawn(&self, flags: &[&str], cmd: &[&str], stdin: Stdio) -> Spawned {
        Spawned::start(&self.slate, &self.args(flags, cmd), stdin)
    }
}

impl Drop for RunEnv {
    fn drop(&mut self) {
        let mut ids = self.known_ids();
        if let Ok(rd) = std::fs::read_dir(self.slate.root().join("runs")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if is_container_id(&name) {
                    ids.push(name);
                }
            }
        }
        for id in ids {
            remove_cgroups(&id);
        }
        // Then `slate` (its TestDir) unmounts and removes the store.
    }
}

/// A `slate run` in the background, its stdout read line by line.
pub struct Spawned {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Spawned {
    pub fn start(slate: &Slate, args: &[&str], stdin: Stdio) -> Spawned {
        let (mut cmd, _) = command(slate, args);
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting slate");
        let stdout = child.stdout.take().expect("stdout pipe");
        let mut stderr = child.stderr.take().expect("stderr pipe");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Spawned {
            child: Some(child),
            lines: rx,
            seen: Vec::new(),
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    /// Waits (at most `timeout`) for a stdout line satisfying `pred` and returns it.
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no expected line from slate within {timeout:?}; stdout so far: {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Sends `sig` to slate (by its PID).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own, not yet reaped child.
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({}, {sig})", self.pid());
    }

    /// Waits at most `timeout` for slate to exit; returns its status code (None: a signal)
    /// and the rest of stdout and stderr.
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let mut child = self.child.take().expect("a running slate");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait().expect("waiting for slate") {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "slate did not exit within {timeout:?}; stdout: {:?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = self.seen.clone();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push(l);
        }
        let (_, dummy) = mpsc::channel::<String>();
        let lines = std::mem::replace(&mut self.lines, dummy);
        drop(lines);
        let handle = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        let stderr = handle.join().unwrap_or_default();
        (status.code(), rest.join("\n"), stderr)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
