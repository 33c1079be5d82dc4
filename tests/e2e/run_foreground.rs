//! Issue 12: foreground containers have records (`ps`, `exec`, `stop`, `inspect`, unique
//! names, `--replace`, the sweep after a SIGKILL), and `slate run` speaks systemd's
//! readiness protocol (`--sdnotify=conmon|container|ignore`, STATUS= while pulling).
//!
//! systemd is not needed to test the protocol: the test binds the datagram socket a
//! `Type=notify` unit would get and reads what slate (or the app) sends to it. The same
//! paths under a real systemd are checked in the VM (tests/vm/guest/test.sh).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::run_image::{self, run_with, RunEnv, Spawned};
use crate::harness::slate::Output;

/// `slate ARGS` on the env's store and state dir.
fn slate(env: &RunEnv, args: &[&str]) -> Output {
    env.slate.run(args)
}

fn state_dir(env: &RunEnv) -> PathBuf {
    env.slate.dir().path().join("state")
}

/// The container records in the state dir (a directory per container).
fn records(env: &RunEnv) -> Vec<String> {
    std::fs::read_dir(state_dir(env))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                // Not the seal's empty dir, only containers.
                .filter(|n| run_image::is_container_id(n))
                .collect()
        })
        .unwrap_or_default()
}

fn ps_names(env: &RunEnv) -> Vec<String> {
    let out = slate(env, &["ps", "--format", "json"]).success();
    out.json()
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().or(c["Names"].as_str()))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `cond` holds, at most `secs` seconds.
fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// A foreground `slate run --rm --name NAME` whose app prints `started`, then waits and
/// exits 0 on TERM (as PID 1 it would ignore a TERM it has no handler for).
fn start_named(env: &RunEnv, name: &str) -> Spawned {
    let mut s = env.spawn(
        &["--name", name],
        &[
            "sh",
            "-c",
            "trap 'echo got TERM; exit 0' TERM; echo started; sleep 60 & wait",
        ],
        Stdio::null(),
    );
    s.wait_line(Duration::from_secs(30), |l| l == "started");
    s
}

#[test]
fn issue12_foreground_container_is_listed_execd_and_stopped() {
    let env = RunEnv::new("fg-record", run_image::default_config());
    let fg = start_named(&env, "fg");

    assert_eq!(ps_names(&env), vec!["fg".to_string()], "ps lists it");
    // The app can print before `slate run` has recorded it as running.
    wait_until(10, || {
        slate(&env, &["inspect", "fg"]).success().json()[0]["status"] == "running"
    });
    let rec = slate(&env, &["inspect", "fg"]).success().json();
    assert_eq!(rec[0]["foreground"], true, "inspect: {rec}");
    assert_eq!(rec[0]["status"], "running", "inspect: {rec}");
    assert_eq!(
        rec[0]["supervisor_pid"],
        fg.pid(),
        "slate run itself supervises it"
    );

    // exec joins it: the app's sleep is there.
    let out = slate(
        &env,
        &[
            "exec",
            "fg",
            "sh",
            "-c",
            "cat /proc/[0-9]*/cmdline | tr '\\0' ' '",
        ],
    )
    .success();
    assert!(out.stdout.contains("sleep 60"), "{out:?}");

    // The name is taken, foreground or detached alike.
    let dup = slate(&env, &["run", "--rm", "--name", "fg", &env.image, "true"]).failure(125);
    dup.error_mentions(&["fg", "in use", "--replace"]);
    let det = slate(&env, &["run", "-d", "--name", "fg", &env.image, "true"]).failure(125);
    det.error_mentions(&["fg", "in use"]);

    // Its output went to our pipe: logs says where, in one line.
    let logs = slate(&env, &["logs", "fg"]).failure(1);
    logs.error_mentions(&["foreground"]);

    // stop: the stop signal to PID 1, which exits 0 on it; slate run exits with the
    // container's status, and the record goes with it.
    slate(&env, &["stop", "-t", "20", "fg"]).success();
    let (code, out, stderr) = fg.finish(Duration::from_secs(30));
    assert!(
        out.contains("got TERM"),
        "the app got the stop signal: {out}"
    );
    assert_eq!(
        code,
        Some(0),
        "slate run's status after stop; stderr: {stderr}"
    );
    assert!(
        records(&env).is_empty(),
        "records left: {:?}",
        records(&env)
    );
    assert!(ps_names(&env).is_empty());
    env.assert_clean(&"after stop");
}

#[test]
fn issue12_replace_takes_over_a_foreground_name() {
    let env = RunEnv::new("fg-replace", run_image::default_config());
    let old = start_named(&env, "svc");
    let out = slate(
        &env,
        &[
            "run",
            "--rm",
            "--replace",
            "--name",
            "svc",
            &env.image,
            "echo",
            "new",
        ],
    )
    .success();
    assert_eq!(out.stdout.trim(), "new");
    let (code, out, _) = old.finish(Duration::from_secs(30));
    assert!(
        out.contains("got TERM"),
        "the old run got the stop signal: {out}"
    );
    assert_eq!(code, Some(0));
    assert!(
        records(&env).is_empty(),
        "records left: {:?}",
        records(&env)
    );
    env.assert_clean(&"after replace");
}

#[test]
fn issue12_a_killed_foreground_run_is_swept_by_the_next_command() {
    let env = RunEnv::new("fg-kill9", run_image::default_config());
    let fg = start_named(&env, "doomed");
    let id = slate(&env, &["inspect", "doomed"]).success().json()[0]["id"]
        .as_str()
        .expect("an id")
        .to_string();
    env.learn_id(&id);
    // As `systemctl kill -s KILL` does to the unit's main process: no chance to clean up.
    fg.signal(libc::SIGKILL);
    let _ = fg.finish(Duration::from_secs(10));
    assert_eq!(
        records(&env),
        vec![id.clone()],
        "the record outlives its slate"
    );
    // Any container command sweeps: the record, the run dir and the cgroup go.
    assert!(ps_names(&env).is_empty());
    assert!(
        wait_until(10, || records(&env).is_empty()),
        "record left: {:?}",
        records(&env)
    );
    env.assert_clean(&"after the sweep");
    // The name is free again.
    slate(
        &env,
        &["run", "--rm", "--name", "doomed", &env.image, "true"],
    )
    .success();
}

#[test]
fn issue12_stop_during_the_pull_ends_the_run() {
    // A store without the image, whose registry is the shared one: the pull is quick, so
    // the stop is sent as soon as the record exists, usually before the container does.
    let full = RunEnv::new("fg-stop-early-src", run_image::default_config());
    let env = RunEnv::empty("fg-stop-early", &full.image);
    let s = env.spawn(&["--name", "early"], &["sleep", "60"], Stdio::null());
    assert!(
        wait_until(30, || !records(&env).is_empty()),
        "no record appeared"
    );
    slate(&env, &["stop", "-t", "5", "early"]).success();
    let (code, _, stderr) = s.finish(Duration::from_secs(30));
    assert_ne!(code, Some(0), "the run was stopped; stderr: {stderr}");
    assert!(
        wait_until(10, || {
            let _ = slate(&env, &["ps"]);
            records(&env).is_empty()
        }),
        "records left: {:?}",
        records(&env)
    );
    env.assert_clean(&"after an early stop");
}

/// A datagram socket standing in for systemd's notification socket.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn new(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("binding the notify socket");
        sock.set_nonblocking(true).expect("non-blocking");
        NotifySocket { sock, path }
    }

    /// Every datagram received so far.
    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    fn env(&self) -> (&'static str, String) {
        ("NOTIFY_SOCKET", self.path.display().to_string())
    }
}

fn lines(msgs: &[String]) -> Vec<String> {
    msgs.iter()
        .flat_map(|m| m.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

#[test]
fn issue12_sdnotify_conmon_sends_ready_and_mainpid_after_status_lines_of_the_pull() {
    let full = RunEnv::new("sdn-conmon-src", run_image::default_config());
    // An empty store: the run pulls, which STATUS= lines report.
    let env = RunEnv::empty("sdn-conmon", &full.image);
    let n = NotifySocket::new(env.slate.dir().path());
    let (k, v) = n.env();
    let out = run_with(
        &env.slate,
        &env.args(&["-q"], &["sh", "-c", "echo ${NOTIFY_SOCKET:-unset}"]),
        &[(k, &v)],
        None,
    )
    .success();
    assert_eq!(
        out.stdout.trim(),
        "unset",
        "the app never sees systemd's socket"
    );
    assert!(
        !out.stderr.contains("layers"),
        "-q hides the pull: {}",
        out.stderr
    );
    let msgs = n.messages();
    let all = lines(&msgs);
    let pulling = all.iter().position(|l| l.starts_with("STATUS=pulling"));
    let ready = all.iter().position(|l| l == "READY=1");
    assert!(pulling.is_some(), "no STATUS=pulling line: {msgs:?}");
    assert!(ready.is_some(), "no READY=1: {msgs:?}");
    assert!(pulling < ready, "status before readiness: {msgs:?}");
    assert!(
        all.iter()
            .any(|l| l.starts_with("STATUS=pulling 1/1 layers")),
        "the layer count: {msgs:?}"
    );
    // MAINPID names the process that supervises the container, slate run itself, in the
    // same datagram as READY=1 so systemd never sees one without the other.
    let ready_msg = msgs.iter().find(|m| m.contains("READY=1")).expect("READY");
    let mainpid: Vec<&str> = ready_msg
        .lines()
        .filter_map(|l| l.strip_prefix("MAINPID="))
        .collect();
    assert_eq!(mainpid.len(), 1, "one MAINPID with READY: {msgs:?}");
    assert!(mainpid[0].parse::<u32>().is_ok(), "MAINPID: {msgs:?}");
    env.assert_clean(&out);
}

#[test]
fn issue12_sdnotify_mainpid_is_slate_run() {
    let env = RunEnv::new("sdn-pid", run_image::default_config());
    let n = NotifySocket::new(env.slate.dir().path());
    let (k, v) = n.env();
    let (mut cmd, _) = run_image::command(&env.slate, &env.args(&[], &["true"]));
    cmd.env(k, v).stdout(Stdio::null()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("starting slate");
    let pid = child.id();
    let out = child.wait_with_output().expect("waiting");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = n.messages();
    assert!(
        msgs.iter()
            .any(|m| m.lines().any(|l| l == format!("MAINPID={pid}"))
                && m.lines().any(|l| l == "READY=1")),
        "READY=1 with MAINPID={pid}: {msgs:?}"
    );
}

#[test]
fn issue12_sdnotify_container_lets_the_app_say_ready() {
    let env = RunEnv::new("sdn-container", run_image::default_config());
    let n = NotifySocket::new(env.slate.dir().path());
    let (k, v) = n.env();
    let out = run_with(
        &env.slate,
        &env.args(
            &["--sdnotify", "container"],
            &[
                "sh",
                "-c",
                "echo socket=$NOTIFY_SOCKET; probe notify 'READY=1\nSTATUS=app says hi'",
            ],
        ),
        &[(k, &v), ("WATCHDOG_USEC", "5000000")],
        None,
    )
    .success();
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "socket=/run/notify/notify.sock"),
        "{out:?}"
    );
    assert!(out.stdout.lines().any(|l| l == "notify=ok"), "{out:?}");
    let msgs = n.messages();
    // slate: MAINPID only; the app: READY.
    let from_slate: Vec<&String> = msgs.iter().filter(|m| m.contains("MAINPID=")).collect();
    assert_eq!(from_slate.len(), 1, "{msgs:?}");
    assert!(
        !from_slate[0].contains("READY=1"),
        "slate must not say ready: {msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m == "READY=1\nSTATUS=app says hi"),
        "the app's own message reached the socket: {msgs:?}"
    );
    env.assert_clean(&out);

    // The watchdog interval is the app's to honour.
    let out = run_with(
        &env.slate,
        &env.args(
            &["--sdnotify", "container"],
            &["sh", "-c", "echo $WATCHDOG_USEC"],
        ),
        &[(k, &v), ("WATCHDOG_USEC", "5000000")],
        None,
    )
    .success();
    assert_eq!(out.stdout.trim(), "5000000");
}

#[test]
fn issue12_sdnotify_ignore_sends_nothing() {
    let env = RunEnv::new("sdn-ignore", run_image::default_config());
    let n = NotifySocket::new(env.slate.dir().path());
    let (k, v) = n.env();
    let out = run_with(
        &env.slate,
        &env.args(
            &["--sdnotify", "ignore"],
            &[
                "sh",
                "-c",
                "echo ${NOTIFY_SOCKET:-unset}; ls /run/notify 2>&1 || true",
            ],
        ),
        &[(k, &v)],
        None,
    )
    .success();
    assert!(out.stdout.starts_with("unset"), "{out:?}");
    assert!(n.messages().is_empty(), "{:?}", n.messages());
    // A detached run under a unit: READY once the supervisor runs the container, with the
    // supervisor as MAINPID (`run -d` itself exits).
    let out = run_with(
        &env.slate,
        &["run", "-d", "--rm", &env.image, "sleep", "1"],
        &[(k, &v)],
        None,
    )
    .success();
    let msgs = n.messages();
    let mainpid: Option<i32> = lines(&msgs)
        .iter()
        .find_map(|l| l.strip_prefix("MAINPID=").and_then(|p| p.parse().ok()));
    assert!(
        lines(&msgs).iter().any(|l| l == "READY=1"),
        "run -d: {msgs:?} {out:?}"
    );
    let sup = slate(&env, &["inspect", out.last_stdout_line().trim()]);
    if sup.status.success() {
        assert_eq!(
            sup.json()[0]["supervisor_pid"].as_i64().map(|p| p as i32),
            mainpid,
            "MAINPID is the supervisor: {msgs:?}"
        );
    }
    assert!(wait_until(20, || records(&env).is_empty()));
}

/// Issue 14: the spec is written once, as the container's `config.json`, with everything
/// the runtime applies (docker's default seccomp profile too), and a foreground and a
/// detached run of the same flags produce the same one: there is one path from flags to
/// bundle. `inspect` shows the profile in force, which is the one in the file.
#[test]
fn issue14_foreground_and_detached_runs_write_the_same_config_json() {
    let env = RunEnv::new("same-config", run_image::default_config());
    let flags = [
        "-e",
        "GREETING=hi",
        "--memory",
        "64m",
        "--cap-add",
        "SYS_ADMIN",
        "--hostname",
        "same",
        "-w",
        "/tmp",
    ];
    let cmd = ["sh", "-c", "echo started; sleep 60 & wait"];
    let mut fg_flags = vec!["--name", "same-fg"];
    fg_flags.extend(flags);
    let mut fg = env.spawn(&fg_flags, &cmd, Stdio::null());
    fg.wait_line(Duration::from_secs(30), |l| l == "started");
    let mut det_args = vec!["run", "-d", "--name", "same-det"];
    det_args.extend(flags);
    det_args.push(&env.image);
    det_args.extend(cmd);
    slate(&env, &det_args).success();

    let config_of = |name: &str| -> (String, serde_json::Value, serde_json::Value) {
        let rec = slate(&env, &["inspect", name]).success().json();
        let id = rec[0]["id"].as_str().expect("id").to_string();
        env.learn_id(&id);
        let path = state_dir(&env).join(&id).join("config.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // The same flags, told apart only by the container's id and name.
        let text = text.replace(&id, "ID").replace(name, "NAME");
        let spec: serde_json::Value = serde_json::from_str(&text).expect("config.json is JSON");
        (id, spec, rec[0]["seccomp"].clone())
    };
    let (_, fg_spec, fg_seccomp) = config_of("same-fg");
    let (det_id, det_spec, _) = config_of("same-det");
    if fg_spec != det_spec {
        let keys = |v: &serde_json::Value| -> Vec<(String, String)> {
            let mut out = Vec::new();
            flatten("", v, &mut out);
            out
        };
        let (a, b) = (keys(&fg_spec), keys(&det_spec));
        let only_fg: Vec<_> = a.iter().filter(|x| !b.contains(x)).collect();
        let only_det: Vec<_> = b.iter().filter(|x| !a.contains(x)).collect();
        panic!("config.json differs: foreground only {only_fg:?}, detached only {only_det:?}");
    }
    assert!(
        !state_dir(&env).join(&det_id).join("seccomp.bpf").exists(),
        "no filter kept outside the spec"
    );

    // The profile in force is in the file: docker's default (errno by default), relaxed for
    // CAP_SYS_ADMIN (mount allowed, which the plain default leaves to errno), and inspect
    // shows that same profile.
    let profile = &fg_spec["linux"]["seccomp"];
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO", "{profile}");
    let allows = |name: &str| {
        profile["syscalls"].as_array().is_some_and(|rules| {
            rules.iter().any(|r| {
                r["action"] == "SCMP_ACT_ALLOW"
                    && r["names"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|x| x == name))
            })
        })
    };
    assert!(allows("mount"), "SYS_ADMIN's rules: {profile}");
    assert!(!allows("kexec_load"), "{profile}");
    assert_eq!(&fg_seccomp["profile"], profile, "inspect: {fg_seccomp}");
    assert!(
        fg_seccomp["source"]
            .as_str()
            .is_some_and(|s| s.contains("default")),
        "{fg_seccomp}"
    );

    // And it is what the container runs under: the filter is on (Seccomp: 2), in the app
    // and in an exec'd process alike.
    for name in ["same-fg", "same-det"] {
        let out = slate(
            &env,
            &["exec", name, "grep", "^Seccomp:", "/proc/self/status"],
        )
        .success();
        assert!(out.stdout.contains('2'), "{name}: {out:?}");
    }

    slate(&env, &["rm", "-f", "same-det"]).success();
    slate(&env, &["stop", "-t", "1", "same-fg"]).success();
    let _ = fg.finish(Duration::from_secs(30));
    env.assert_clean(&"after the two runs");
}

/// `(json pointer, scalar)` pairs of a JSON value, for a readable difference of two specs.
fn flatten(at: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                flatten(&format!("{at}/{k}"), x, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{at}/{i}"), x, out);
            }
        }
        x => out.push((at.to_string(), x.to_string())),
    }
}
