//! Issue 11: the host's slate binary out of reach of the container (CVE-2019-5736), and no
//! host descriptor in the container's init.
//!
//! The attack image carries what a real one would: the host's glibc (so the dynamic slate
//! binary the tests run can execute inside), an `/etc/ld.so.preload` library
//! (`tests/probe/exe_attack.c`) that tries to reopen `/proc/self/exe` for writing, now and
//! again after the slate process that ran it has gone, and two ways to make the kernel run
//! slate's binary in the container: `/bin/evil -> /proc/self/exe` and a script starting
//! `#!/proc/self/exe`. The library only ever rewrites a byte with itself, and the binaries
//! attacked are copies, so even a regression cannot damage the binary under test.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::fixture::BuiltImage;
use crate::harness::run_image::{self, command_of, RunEnv};
use crate::harness::slate::{Output, SLATE_BIN};
use crate::harness::tar_writer::Entry;

/// The preload library, built from `tests/probe/exe_attack.c`.
fn attack_library() -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/probe/exe_attack.c");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("exe-attack-{}.so", std::process::id()));
    let st = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("running cc (install gcc and libc6-dev)");
    assert!(st.success(), "building the attack library failed");
    let bytes = std::fs::read(&out).expect("reading the attack library");
    let _ = std::fs::remove_file(&out);
    bytes
}

/// The shared libraries the binary under test loads (`ldd`), as image entries at the same
/// paths, with their parent directories.
fn loader_entries(bin: &str) -> Vec<Entry> {
    let out = std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .expect("running ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut paths: Vec<PathBuf> = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            paths.push(PathBuf::from(p));
        }
    }
    assert!(
        !paths.is_empty(),
        "the attack needs a dynamic slate binary (ldd {bin}: {text})"
    );
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut entries = Vec::new();
    for p in &paths {
        let rel = p.strip_prefix("/").expect("absolute");
        for a in rel.ancestors().skip(1) {
            if !a.as_os_str().is_empty() && !dirs.iter().any(|d| d == a) {
                dirs.push(a.to_path_buf());
            }
        }
        let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        entries.push(Entry::file(rel.as_os_str().as_encoded_bytes(), bytes).mode(0o755));
    }
    dirs.sort_by_key(|d| d.components().count());
    let mut all: Vec<Entry> = dirs
        .iter()
        .map(|d| Entry::dir(d.as_os_str().as_encoded_bytes()))
        .collect();
    all.extend(entries);
    all
}

fn attack_image() -> BuiltImage {
    let mut layer = loader_entries(SLATE_BIN);
    layer.push(Entry::dir("usr/lib"));
    layer.push(Entry::file("usr/lib/exe_attack.so", attack_library()).mode(0o755));
    layer.push(Entry::file("etc/ld.so.preload", "/usr/lib/exe_attack.so\n"));
    layer.push(Entry::symlink("bin/evil", "/proc/self/exe"));
    layer.push(Entry::file("bin/evil.sh", "#!/proc/self/exe\n").mode(0o755));
    run_image::image(run_image::default_config(), vec![layer])
}

/// Two installs of slate, as after an upgrade: `a` starts containers, `b` execs into them.
struct Installs {
    // Declared first: dropped (processes killed) before the store is removed.
    guard: KillRecorded,
    env: RunEnv,
    a: PathBuf,
    b: PathBuf,
    state: PathBuf,
    out: PathBuf,
}

impl Installs {
    fn new(label: &str) -> Installs {
        let env = RunEnv::with_image(label, &attack_image());
        let dir = env.slate.dir();
        let copy = |name: &str| {
            let d = dir.subdir(name);
            let p = d.join("slate");
            std::fs::copy(SLATE_BIN, &p).expect("copying the slate binary");
            p
        };
        let (a, b) = (copy("install-a"), copy("install-b"));
        let state = dir.subdir("state");
        let out = dir.subdir("out");
        Installs {
            guard: KillRecorded(state.clone()),
            env,
            a,
            b,
            state,
            out,
        }
    }

    fn slate(&self, bin: &Path, args: &[&str]) -> Output {
        let sd = self.state.display().to_string();
        let mut all = vec!["--state-dir", sd.as_str()];
        all.extend_from_slice(args);
        let (mut cmd, args) = command_of(bin, &self.env.slate, &all);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .expect("running a copy of slate");
        Output {
            args,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn volume(&self) -> String {
        format!("{}:/out", self.out.display())
    }

    fn report(&self) -> String {
        std::fs::read_to_string(self.out.join("report")).unwrap_or_default()
    }

    /// The outcome the library recorded for `what` ("now", "late").
    fn outcome(&self, what: &str) -> Option<String> {
        self.report()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{what} ")).map(str::to_string))
    }

    /// Neither copy changed, byte for byte.
    fn assert_binaries_intact(&self) {
        let want = std::fs::read(SLATE_BIN).expect("reading the binary under test");
        for p in [&self.a, &self.b] {
            let got = std::fs::read(p).expect("reading a copy");
            assert!(got == want, "{} was changed by the container", p.display());
        }
    }
}

/// Kills, on Drop, the supervisors and containers a state dir recorded (by PID), so a failed
/// test leaves no process behind.
struct KillRecorded(PathBuf);

impl KillRecorded {
    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_dir(&self.0)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("state.json")).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }
}

impl Drop for KillRecorded {
    fn drop(&mut self) {
        for r in self.records() {
            for key in ["supervisor_pid", "pid"] {
                if let Some(pid) = r[key].as_i64().filter(|p| *p > 1) {
                    // SAFETY: kill(2) on a PID this test's own state dir recorded.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
            if let Some(id) = r["id"].as_str() {
                run_image::remove_cgroups(id);
            }
        }
    }
}

/// A write outcome that shows the file itself refused it: EROFS (the read-only overlay) or
/// EPERM (a sealed memfd). ETXTBSY would mean only a running slate process protected it.
fn sealed_refusal(outcome: &str) -> bool {
    outcome == "EROFS" || outcome == "EPERM"
}

#[test]
fn issue11_run_never_exposes_a_writable_host_binary() {
    let t = Installs::new("exe-run");
    let vol = t.volume();
    let a = t.a.clone();

    // The magic link itself is refused, as docker's 126.
    let out = t
        .slate(
            &a,
            &[
                "run",
                "--rm",
                "-v",
                &vol,
                &t.env.image,
                "/bin/evil",
                "--version",
            ],
        )
        .failure(126);
    out.error_mentions(&["/bin/evil", "magic link"]);
    assert!(
        !out.stdout.contains("slate "),
        "the host's slate ran in the container: {out:?}"
    );

    // A script can still name /proc/self/exe as its interpreter: the kernel then runs the
    // binary of the process that execs, which must be a sealed copy.
    let out = t.slate(
        &a,
        &["run", "--rm", "-v", &vol, &t.env.image, "/bin/evil.sh"],
    );
    let now = t
        .outcome("now")
        .unwrap_or_else(|| panic!("the attack library did not run: {out:?} {}", t.report()));
    assert!(
        sealed_refusal(&now),
        "reopening /proc/self/exe for writing gave {now}, not the seal's EROFS/EPERM: {}",
        t.report()
    );
    t.assert_binaries_intact();
}

#[test]
fn issue11_exec_by_a_second_install_cannot_reach_either_binary() {
    let t = Installs::new("exe-exec");
    let vol = t.volume();
    let (a, b) = (t.a.clone(), t.b.clone());
    let out = t
        .slate(
            &a,
            &[
                "run",
                "-d",
                "--name",
                "victim",
                "-v",
                &vol,
                &t.env.image,
                "sleep",
                "1000",
            ],
        )
        .success();
    t.env.learn_id(out.last_stdout_line().trim());

    let out = t
        .slate(&b, &["exec", "victim", "/bin/evil", "--version"])
        .failure(126);
    out.error_mentions(&["/bin/evil", "magic link"]);

    // Through the script: b's binary runs in the container and exits; the process the
    // library leaves behind keeps its handle and retries once b no longer runs.
    let _ = t.slate(&b, &["exec", "victim", "/bin/evil.sh"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while t.outcome("late").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let now = t
        .outcome("now")
        .unwrap_or_else(|| panic!("no attack: {}", t.report()));
    let late = t
        .outcome("late")
        .unwrap_or_else(|| panic!("the attack's late try never reported: {}", t.report()));
    assert!(sealed_refusal(&now), "now: {now}: {}", t.report());
    assert!(
        sealed_refusal(&late),
        "after `exec` ended, reopening its binary for writing gave {late}: {}",
        t.report()
    );
    t.assert_binaries_intact();
    t.slate(&a, &["rm", "-f", "victim"]).success();
}

#[test]
fn issue11_run_and_supervisor_run_from_a_sealed_binary() {
    let t = Installs::new("exe-sealed");
    let a = t.a.clone();
    let out = t
        .slate(
            &a,
            &["run", "-d", "--name", "s", &t.env.image, "sleep", "1000"],
        )
        .success();
    t.env.learn_id(out.last_stdout_line().trim());
    let sup = t
        .guard
        .records()
        .iter()
        .find_map(|r| r["supervisor_pid"].as_i64())
        .expect("the record names its supervisor");
    // Its /proc/<pid>/exe must not be the install's file: opening it for writing fails with
    // the seal's error, not ETXTBSY.
    let e = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{sup}/exe"))
        .expect_err("the supervisor's binary is writable");
    assert!(
        matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EPERM)),
        "the supervisor runs from the installed file itself: {e}"
    );
    t.slate(&a, &["rm", "-f", "s"]).success();
}

#[test]
fn issue11_init_holds_no_host_descriptor() {
    let env = RunEnv::new("init-fds", run_image::default_config());
    // PID 1 is init; with SYS_PTRACE the app may look at its descriptors.
    let look = ["sh", "-c", "ls /proc/1/fd | sort -n | tr '\\n' ' '"];
    let out = env
        .run(&["--init", "--cap-add", "SYS_PTRACE"], &look)
        .success();
    assert_eq!(out.stdout.trim(), "0 1 2", "init's descriptors: {out:?}");

    // --preserve-fds N: init and the app get 3..3+N as well, and nothing else.
    let (mut cmd, _) = run_image::command(
        &env.slate,
        &env.args(
            &["--init", "--cap-add", "SYS_PTRACE", "--preserve-fds", "2"],
            &look,
        ),
    );
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let (r, w) = (
        std::os::fd::IntoRawFd::into_raw_fd(r),
        std::os::fd::IntoRawFd::into_raw_fd(w),
    );
    // SAFETY: between fork and exec only dup2, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.stdin(Stdio::null()).output().expect("running slate");
    // SAFETY: closing the pipe ends this test owns.
    unsafe {
        libc::close(r);
        libc::close(w);
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout.trim(), "0 1 2 3 4", "with --preserve-fds 2: {o:?}");
}

#[test]
fn issue11_run_d_init_returns_while_the_container_runs() {
    let env = RunEnv::new("init-detach", run_image::default_config());
    let state = env.slate.dir().subdir("state");
    let _guard = KillRecorded(state.clone());
    let sd = state.display().to_string();
    // stdout is a pipe read to its end: before the fix init held the readiness pipe's copy
    // and `run -d` did not return until the container exited (here: 1000 s).
    let mut args = vec!["--state-dir", sd.as_str(), "run", "-d", "--init"];
    args.push(&env.image);
    args.extend(["sleep", "1000"]);
    let (mut cmd, _) = run_image::command(&env.slate, &args);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting slate");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        let _ = tx.send(s);
    });
    // A hang detector, not a timing check: the container sleeps for 1000 s.
    let got = rx.recv_timeout(Duration::from_secs(120));
    let _ = child.kill();
    let _ = child.wait();
    let id = got.expect("`run -d --init` did not return while its container ran");
    eprintln!("run -d --init returned in {:?}", start.elapsed());
    let id = id.trim().to_string();
    assert!(run_image::is_container_id(&id), "run -d printed {id:?}");
    env.learn_id(&id);
    env.slate
        .run(&["--state-dir", &sd, "rm", "-f", &id])
        .success();
}
