//! Shared harness of the runtime's integration tests: a busybox rootfs with the static probe,
//! a bundle around it, the `run_bundle` example as the subject (each container runs in its own
//! process: the runtime refuses to clone from the multi-threaded test harness), and checks that
//! a run left no mount, cgroup or process behind.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const DOCKER_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The probe, built once per test binary.
pub fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/probe/probe.c");
        let out =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("probe-{}", std::process::id()));
        let st = Command::new("cc")
            .args(["-static", "-O2", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("cc runs");
        assert!(st.success(), "building the probe failed");
        out
    })
}

/// The example binary that runs a bundle. `cargo test -p slate-runtime` builds it next to
/// the tests; a filtered run (`--test container`) does not, so it is (re)built here when it is
/// missing or older than this test binary.
pub fn run_bundle() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let p = exe
                .parent()
                .and_then(|d| d.parent())
                .unwrap()
                .join("examples/run_bundle");
            let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            if mtime(&p) < mtime(&exe) {
                let st = Command::new(env!("CARGO"))
                    .args([
                        "build",
                        "-q",
                        "-p",
                        "slate-runtime",
                        "--example",
                        "run_bundle",
                    ])
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .status()
                    .unwrap();
                assert!(st.success(), "building examples/run_bundle failed");
            }
            assert!(p.exists(), "{} missing", p.display());
            p
        })
        .clone()
}

/// A bundle: BUNDLE/config.json + BUNDLE/rootfs (busybox and the probe).
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub spec: Value,
    pub id: String,
}

impl Bundle {
    pub fn new(name: &str) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix(&format!("bundle-{name}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let root = dir.path().join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for app in [
            "sh", "true", "false", "sleep", "cat", "ls", "echo", "kill", "id", "mount", "touch",
            "tty", "stat",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
        }
        std::fs::copy(probe(), root.join("probe")).unwrap();
        std::fs::write(root.join("etc/notexec"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            root.join("etc/notexec"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let id = format!("rt-{name}-{}", std::process::id());
        let spec = json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "hostname": "probe-host",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["/probe"],
                "env": ["PATH=/bin", "TERM=xterm"],
                "cwd": "/",
                "capabilities": {
                    "bounding": DOCKER_CAPS, "effective": DOCKER_CAPS, "permitted": DOCKER_CAPS
                },
                "noNewPrivileges": true
            },
            "mounts": [],
            "linux": {
                "namespaces": [
                    {"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"},
                    {"type": "network"}, {"type": "cgroup"}
                ],
                "maskedPaths": slate_runtime::DOCKER_MASKED_PATHS,
                "readonlyPaths": slate_runtime::DOCKER_READONLY_PATHS
            }
        });
        Bundle { dir, spec, id }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Bundle {
        self.spec["process"]["args"] = json!(args);
        self
    }

    pub fn write(&self) {
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(&self.spec).unwrap(),
        )
        .unwrap();
    }

    /// Starts run_bundle on this bundle; the returned guard kills it (and only it) if the test
    /// ends before it does.
    pub fn start(&self, extra: &[&str]) -> Running {
        self.write();
        let child = Command::new(run_bundle())
            .args(extra)
            .arg("--id")
            .arg(&self.id)
            .arg(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Running { child: Some(child) }
    }

    /// Like [`Bundle::start`], with `input` on run_bundle's stdin (a pipe, closed after it).
    pub fn start_with_input(&self, extra: &[&str], input: &[u8]) -> Running {
        self.write();
        let mut child = Command::new(run_bundle())
            .args(extra)
            .arg("--id")
            .arg(&self.id)
            .arg(self.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let running = Running { child: Some(child) };
        // A supervisor that does not read its stdin leaves this in the pipe, which holds it.
        std::io::Write::write_all(&mut stdin, input).unwrap();
        drop(stdin);
        running
    }

    /// Runs to completion (at most 60 s).
    pub fn run(&self, extra: &[&str]) -> Outcome {
        self.start(extra).finish(Duration::from_secs(60))
    }

    /// Checks that nothing of this bundle's runs remains: no mount under it, no cgroup named
    /// after it, no process running from it.
    pub fn assert_clean(&self) {
        let dir = self.path().to_string_lossy().into_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let leftover: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&dir)).collect();
        assert!(leftover.is_empty(), "mounts left behind: {leftover:?}");
        let cgroups = find_named(Path::new("/sys/fs/cgroup"), &self.id, 6);
        assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
        for p in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            assert!(
                !cmdline.contains(&dir),
                "process {} left behind: {cmdline}",
                p.file_name().to_string_lossy()
            );
        }
    }
}

/// The cgroup directories named after container `id`, on every hierarchy.
pub fn find_cgroups(id: &str) -> Vec<PathBuf> {
    find_named(Path::new("/sys/fs/cgroup"), id, 6)
}

impl Drop for Bundle {
    /// Whatever happened in the test: a supervisor killed mid-run cannot remove its cgroup,
    /// so remove it here, killing only the processes in it (this test's container, since the
    /// cgroup is named after this bundle's unique id).
    fn drop(&mut self) {
        let mut dirs = find_cgroups(&self.id);
        if dirs.is_empty() {
            return;
        }
        for d in &dirs {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Deepest first.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for _ in 0..50 {
            dirs.retain(|d| std::fs::remove_dir(d).is_err() && d.exists());
            if dirs.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn find_named(dir: &Path, name: &str, depth: u32) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if depth == 0 {
        return found;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let ft = match e.file_type() {
            Ok(ft) => ft,
            Err(_) => continue,
        };
        if !ft.is_dir() {
            continue;
        }
        if e.file_name().to_string_lossy() == name {
            found.push(e.path());
        }
        found.extend(find_named(&e.path(), name, depth - 1));
    }
    found
}

/// A run_bundle process the test started.
pub struct Running {
    child: Option<Child>,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// The container's PID 1 (run_bundle's only child), once it exists.
    pub fn container_pid(&self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid()))
                    .unwrap_or_default();
            if let Some(p) = children.split_whitespace().next() {
                return p.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "the container did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: kill(2) through the libc wrapper, on a pid this test started.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::try_from(sig).unwrap(),
        )
        .unwrap();
    }

    pub fn finish(mut self, timeout: Duration) -> Outcome {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("run_bundle did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        Outcome {
            code: status.code().unwrap_or_else(|| {
                use std::os::unix::process::ExitStatusExt;
                128 + status.signal().unwrap_or(0)
            }),
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The probe's report: key -> values (keys like `mount` repeat).
    pub fn report(&self) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in self.stdout.lines() {
            if let Some((k, v)) = line.trim_end_matches('\r').split_once('=') {
                m.entry(k.to_string()).or_default().push(v.to_string());
            }
        }
        m
    }

    pub fn one(&self, key: &str) -> String {
        self.report()
            .get(key)
            .and_then(|v| v.first().cloned())
            .unwrap_or_else(|| panic!("probe did not report {key}: {self:#?}"))
    }
}
