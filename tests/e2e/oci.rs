//! slate as an OCI runtime (issue 14): runc's command line on a bundle (`create`, `state`,
//! `start`, `exec`, `kill`, `delete`, `run`, hooks, `features`), and real engines driving
//! `slate-runc`: podman (`--runtime`) and containerd (`ctr run --runc-binary`, the runc v2
//! shim).
//!
//! Each test has its own state root; podman and containerd get their own storage and state
//! under the test's temp dir, `--network none` (no engine network is ever set up on the
//! host), cgroups under a parent named after the test process (removed at the end), and
//! containerd runs in a private mount namespace with a tmpfs over /run (its shim sockets and
//! FIFOs go to /run/containerd whatever its config says).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::fixture::busybox;
use crate::harness::slate::TestDir;

const SLATE_RUNC: &str = env!("CARGO_BIN_EXE_slate-runc");

/// A bundle: busybox in `rootfs/`, and a config.json running `args`.
fn bundle(dir: &Path, args: &[&str], extra: impl FnOnce(&mut Value)) -> PathBuf {
    let b = dir.join("bundle");
    let root = b.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).expect("rootfs dir");
    }
    let bb = root.join("bin/busybox");
    if !bb.exists() {
        std::fs::write(&bb, busybox()).expect("busybox");
        std::fs::set_permissions(&bb, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        for a in ["sh", "echo", "cat", "sleep", "true", "hostname"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).expect("applet");
        }
    }
    std::fs::write(root.join("hello"), "hello from the bundle\n").expect("hello");
    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"],
                "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"],
                "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"],
                "ambient": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]
            },
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "oci-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys"],
            "readonlyPaths": ["/proc/sys"]
        }
    });
    extra(&mut config);
    std::fs::write(
        b.join("config.json"),
        serde_json::to_vec_pretty(&config).expect("json"),
    )
    .expect("config.json");
    b
}

struct Runc {
    root: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Runc {
    /// Output goes to files, not pipes: a created container inherits them (as it inherits
    /// the FIFOs a shim passes), and would hold a pipe open until it exits.
    fn run(&self, args: &[&str]) -> Out {
        std::fs::create_dir_all(&self.root).expect("state root");
        let (o, e) = (self.root.join(".stdout"), self.root.join(".stderr"));
        let status = Command::new(SLATE_RUNC)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&o).expect("stdout file"))
            .stderr(std::fs::File::create(&e).expect("stderr file"))
            .status()
            .expect("slate-runc");
        Out {
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(&o).unwrap_or_default(),
            stderr: std::fs::read_to_string(&e).unwrap_or_default(),
        }
    }

    /// As [`Runc::run`], with `input` on stdin (containerd's shim sends `update`'s
    /// resources that way).
    fn run_stdin(&self, args: &[&str], input: &str) -> Out {
        use std::io::Write as _;
        std::fs::create_dir_all(&self.root).expect("state root");
        let mut child = Command::new(SLATE_RUNC)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("slate-runc");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("slate-runc");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args);
        assert_eq!(o.code, 0, "slate-runc {args:?}: {}{}", o.stdout, o.stderr);
        o
    }

    fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id]).stdout).expect("state json")
    }

    fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state(id)["status"] != want {
            assert!(
                Instant::now() < deadline,
                "{id} never became {want}: {}",
                self.state(id)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        // Whatever a failed test left: kill and delete by the runtime's own records.
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for e in rd.flatten() {
                if let Some(id) = e.file_name().to_str().filter(|n| !n.starts_with('.')) {
                    let _ = Command::new(SLATE_RUNC)
                        .arg("--root")
                        .arg(&self.root)
                        .args(["delete", "--force", id])
                        .output();
                }
            }
        }
    }
}

#[test]
fn create_start_state_exec_kill_delete_on_a_bundle() {
    let dir = TestDir::new("oci-bundle");
    let hook_log = dir.path().join("hooks.log");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $(cat) >> {}", hook_log.display())]});
    let b = bundle(
        dir.path(),
        &[
            "sh",
            "-c",
            "echo started; trap 'exit 0' TERM; while :; do sleep 0.1; done",
        ],
        |c| {
            c["hooks"] = json!({
                "prestart": [hook("prestart")],
                "createRuntime": [hook("createRuntime")],
                "poststart": [hook("poststart")],
                "poststop": [hook("poststop")],
            });
        },
    );
    let rt = Runc {
        root: dir.path().join("state"),
    };
    // Container ids name cgroups, shared by every test process: unique ones.
    let id = |n: &str| format!("oci-{}-{n}", std::process::id());
    let (c1, c2, c3) = (id("c1"), id("c2"), id("c3"));
    let (c1, c2, c3) = (c1.as_str(), c2.as_str(), c3.as_str());
    let pid_file = dir.path().join("init.pid");
    let b_s = b.display().to_string();
    let pf = pid_file.display().to_string();
    rt.ok(&["create", "--bundle", &b_s, "--pid-file", &pf, c1]);
    let st = rt.state(c1);
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["ociVersion"], "1.0.2");
    assert_eq!(st["bundle"], b_s.as_str());
    let pid = st["pid"].as_i64().expect("pid");
    assert!(pid > 0);
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file").trim(),
        pid.to_string()
    );
    // Created: the process exists and has not exec'd the app (it is still slate).
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_ne!(comm.trim(), "sh", "created, not started");
    assert_ne!(
        rt.run(&["create", "--bundle", &b_s, c1]).code,
        0,
        "the id is taken"
    );
    rt.ok(&["start", c1]);
    rt.wait_status(c1, "running");
    assert_ne!(rt.run(&["start", c1]).code, 0, "started twice");

    let out = rt.ok(&["exec", c1, "cat", "/hello"]);
    assert_eq!(out.stdout, "hello from the bundle\n");
    let out = rt.run(&["exec", c1, "sh", "-c", "hostname; exit 4"]);
    assert_eq!((out.code, out.stdout.as_str()), (4, "oci-test\n"));
    let proc_json = dir.path().join("process.json");
    std::fs::write(
        &proc_json,
        json!({"args": ["cat", "/hello"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}).to_string(),
    )
    .expect("process.json");
    let out = rt.ok(&["exec", "--process", &proc_json.display().to_string(), c1]);
    assert_eq!(out.stdout, "hello from the bundle\n");

    let ps: Vec<i64> =
        serde_json::from_str(&rt.ok(&["ps", "--format", "json", c1]).stdout).expect("ps json");
    assert!(ps.contains(&pid), "{ps:?}");
    let list = rt.ok(&["list", "--format", "json"]);
    assert!(
        list.stdout.contains(&format!("\"{c1}\"")),
        "{}",
        list.stdout
    );

    // update: flags, a resources document on stdin (containerd's shim), a file (podman);
    // read back from the container's own cgroup files.
    rt.ok(&["update", "--memory", "48m", "--pids-limit", "64", c1]);
    assert_eq!(
        cgroup_value(pid, "memory", "memory.limit_in_bytes", "memory.max"),
        (48 << 20).to_string()
    );
    assert_eq!(cgroup_value(pid, "pids", "pids.max", "pids.max"), "64");
    let out = rt.run_stdin(
        &["update", "--resources", "-", c1],
        r#"{"memory": {"limit": 41943040}, "pids": {"limit": 50}}"#,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        cgroup_value(pid, "memory", "memory.limit_in_bytes", "memory.max"),
        "41943040"
    );
    assert_eq!(cgroup_value(pid, "pids", "pids.max", "pids.max"), "50");
    let res = dir.path().join("resources.json");
    std::fs::write(&res, r#"{"pids": {"limit": 70}}"#).expect("resources.json");
    // The flag wins over the document; what neither names stays.
    rt.ok(&[
        "update",
        "--resources",
        &res.display().to_string(),
        "--pids-limit",
        "80",
        c1,
    ]);
    assert_eq!(cgroup_value(pid, "pids", "pids.max", "pids.max"), "80");
    assert_eq!(
        cgroup_value(pid, "memory", "memory.limit_in_bytes", "memory.max"),
        "41943040"
    );
    rt.ok(&["update", "--pids-limit", "-1", c1]);
    assert_eq!(cgroup_value(pid, "pids", "pids.max", "pids.max"), "max");
    let bad = rt.run_stdin(&["update", "--resources", "-", c1], "{not json");
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("invalid resources"), "{}", bad.stderr);

    rt.ok(&["pause", c1]);
    assert_eq!(rt.state(c1)["status"], "paused");
    rt.ok(&["resume", c1]);
    assert_eq!(rt.state(c1)["status"], "running");

    let del = rt.run(&["delete", c1]);
    assert_ne!(del.code, 0, "delete of a running container needs --force");
    assert!(del.stderr.contains("running"), "{}", del.stderr);
    rt.ok(&["kill", c1, "TERM"]);
    rt.wait_status(c1, "stopped");
    let gone = rt.run(&["update", "--memory", "64m", c1]);
    assert_ne!(gone.code, 0, "a stopped container cannot be updated");
    assert!(gone.stderr.contains("stopped"), "{}", gone.stderr);
    rt.ok(&["delete", c1]);
    assert_ne!(rt.run(&["state", c1]).code, 0);
    assert!(!rt.root.join(c1).exists());

    let hooks = std::fs::read_to_string(&hook_log).expect("hooks ran");
    let order: Vec<&str> = hooks.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(
        order,
        ["prestart", "createRuntime", "poststart", "poststop"],
        "{hooks}"
    );
    // Each hook got the state on stdin.
    assert!(
        hooks
            .lines()
            .all(|l| l.contains(&format!("\"id\":\"{c1}\""))),
        "{hooks}"
    );

    // A created (never started) container is not stopped: delete needs --force.
    rt.ok(&["create", "--bundle", &b_s, c2]);
    assert_ne!(rt.run(&["delete", c2]).code, 0);
    assert_eq!(
        rt.state(c2)["status"],
        "created",
        "a refused delete changes nothing"
    );
    rt.ok(&["delete", "--force", c2]);
    let b2 = bundle(
        &dir.path().join("two"),
        &["sh", "-c", "echo ran; exit 7"],
        |_| {},
    );
    let out = rt.run(&["run", "--bundle", &b2.display().to_string(), c3]);
    assert_eq!((out.code, out.stdout.as_str()), (7, "ran\n"));
    assert!(!rt.root.join(c3).exists(), "run deletes what it created");

    let f: Value = serde_json::from_str(&rt.ok(&["features"]).stdout).expect("features json");
    assert_eq!(f["ociVersionMax"], "1.2.0");
    assert_eq!(f["linux"]["seccomp"]["enabled"], true);
    assert!(f["linux"]["capabilities"]
        .as_array()
        .is_some_and(|c| c.iter().any(|x| x == "CAP_SYS_ADMIN")));
    // Also reachable as `slate oci`.
    let o = Command::new(crate::harness::slate::SLATE_BIN)
        .args(["oci", "--root"])
        .arg(&rt.root)
        .args(["list", "-q"])
        .output()
        .expect("slate oci");
    assert!(o.status.success());
}

/// A user namespace with id maps: the container's root is host uid 100000, which owns
/// nothing of the bundle. It must still get through `create`'s start gate (a FIFO of the
/// host's root it once could not open: the container died right after `create` said it was
/// created) and have the default /dev/pts mounted in the spec's /dev tmpfs (it was mounted
/// first, into the rootfs's own /dev where the mapped root cannot create a directory).
#[test]
fn user_namespace_with_id_maps_starts() {
    let dir = TestDir::new("oci-userns");
    let b = bundle(
        dir.path(),
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map; [ -c /dev/pts/ptmx ] && echo devpts",
        ],
        |c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .expect("namespaces")
                .push(json!({"type": "user"}));
            c["linux"]["uidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            c["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
        },
    );
    let rt = Runc {
        root: dir.path().join("state"),
    };
    let id = format!("oci-{}-userns", std::process::id());
    let out = rt.run(&["run", "--bundle", &b.display().to_string(), &id]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["0", "100000", "65536"],
            vec!["0", "200000", "65536"],
            vec!["devpts"]
        ],
        "{}",
        out.stdout
    );
}

/// `linux.rootfsPropagation` is the container's `/` propagation, and never reaches the host:
/// `shared` once failed pivot_root (EINVAL: a shared mount under the new root) and
/// `unbindable` the rootfs's own bind mount (EINVAL: an unbindable source).
#[test]
fn rootfs_propagation_is_the_roots() {
    let dir = TestDir::new("oci-propagation");
    let rt = Runc {
        root: dir.path().join("state"),
    };
    // The optional fields of the root's line in mountinfo ("shared:N", "unbindable").
    let show = "busybox awk '$5 == \"/\" { for (i = 7; $i != \"-\"; i++) printf \"%s \", $i; print \".\" }' /proc/self/mountinfo";
    for (mode, want) in [
        ("shared", "shared:"),
        ("rshared", "shared:"),
        ("unbindable", "unbindable"),
        ("private", "."),
    ] {
        let b = bundle(&dir.path().join(mode), &["sh", "-c", show], |c| {
            c["linux"]["rootfsPropagation"] = json!(mode);
        });
        let id = format!("oci-{}-prop-{mode}", std::process::id());
        let b_s = b.display().to_string();
        rt.ok(&["create", "--bundle", &b_s, &id]);
        // Created: every mount is made, none of them in the host's namespace.
        let host = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(
            !host.contains(&b_s),
            "{mode}: the container's mounts leaked to the host:\n{host}"
        );
        rt.ok(&["delete", "--force", &id]);
        let out = rt.run(&["run", "--bundle", &b_s, &id]);
        assert_eq!(out.code, 0, "{mode}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stdout.trim_start().starts_with(want),
            "{mode}: / is {:?}",
            out.stdout
        );
    }
}

/// A seccomp profile that denies getcwd (runtime-tools' linux_seccomp): the runtime's own
/// cwd check (CVE-2024-21626) ran under the filter it had just installed, and failed the
/// start and every exec with EPERM. Without no_new_privs the filter goes in early (it needs
/// CAP_SYS_ADMIN), so that is the case here.
#[test]
fn a_profile_that_denies_getcwd_still_starts_and_execs() {
    let dir = TestDir::new("oci-seccomp-getcwd");
    let b = bundle(
        dir.path(),
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.1; done",
        ],
        |c| {
            c["process"]["noNewPrivileges"] = json!(false);
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]
            });
        },
    );
    let rt = Runc {
        root: dir.path().join("state"),
    };
    let id = format!("oci-{}-getcwd", std::process::id());
    rt.ok(&["create", "--bundle", &b.display().to_string(), &id]);
    rt.ok(&["start", &id]);
    rt.wait_status(&id, "running");
    let out = rt.ok(&["exec", &id, "cat", "/hello"]);
    assert_eq!(out.stdout, "hello from the bundle\n", "{}", out.stderr);
    rt.ok(&["delete", "--force", &id]);
}

/// "Any updates to config.json after this step [create] MUST NOT affect the container":
/// start, exec and delete once read the bundle's config.json again (its hooks, exec's
/// process defaults), so an edit between create and start changed what ran.
#[test]
fn config_json_edited_after_create_changes_nothing() {
    let dir = TestDir::new("oci-config-edit");
    let log = dir.path().join("hooks.log");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat >/dev/null; echo {name} >> {}", log.display())]});
    let hooks = |tag: &str| {
        json!({
            "poststart": [hook(&format!("{tag}poststart"))],
            "poststop": [hook(&format!("{tag}poststop"))],
        })
    };
    let args = [
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.1; done",
    ];
    let b = bundle(dir.path(), &args, |c| {
        c["hooks"] = hooks("");
        c["process"]["env"] = json!(["PATH=/bin", "WHICH=created"]);
    });
    let rt = Runc {
        root: dir.path().join("state"),
    };
    let id = format!("oci-{}-edit", std::process::id());
    rt.ok(&["create", "--bundle", &b.display().to_string(), &id]);
    // The bundle is rewritten between create and start.
    bundle(dir.path(), &args, |c| {
        c["hooks"] = hooks("edited-");
        c["process"]["env"] = json!(["PATH=/bin", "WHICH=edited"]);
    });
    rt.ok(&["start", &id]);
    rt.wait_status(&id, "running");
    let out = rt.ok(&["exec", &id, "sh", "-c", "echo $WHICH"]);
    assert_eq!(out.stdout, "created\n");
    rt.ok(&["kill", &id, "TERM"]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    assert_eq!(
        std::fs::read_to_string(&log).expect("hooks ran"),
        "poststart\npoststop\n"
    );
}

/// `start` returns once the app has exec'd, not when slate's code in the container was let
/// go: a signal sent right after it reaches the app (runtime-tools' killsig raced on this).
/// The start gate (a FIFO the process holds until exec) is not among the descriptors the
/// app gets, even with `--preserve-fds` naming a descriptor that is not open.
#[test]
fn start_returns_once_the_app_runs_and_the_gate_is_not_inherited() {
    let dir = TestDir::new("oci-start-exec");
    let b = bundle(
        dir.path(),
        &[
            "sh",
            "-c",
            "ls -l /proc/self/fd > /fds.l; ls /proc/self/fd > /fds; trap 'exit 0' TERM; while :; do sleep 0.1; done",
        ],
        |c| {
            c["root"]["readonly"] = json!(false);
        },
    );
    let rt = Runc {
        root: dir.path().join("state"),
    };
    let id = format!("oci-{}-startexec", std::process::id());
    rt.ok(&[
        "create",
        "--bundle",
        &b.display().to_string(),
        "--preserve-fds",
        "2",
        &id,
    ]);
    let pid = rt.state(&id)["pid"].as_i64().expect("pid");
    rt.ok(&["start", &id]);
    // At once, without waiting: the process is the app now.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
    assert_eq!(comm.trim(), "sh");
    let fds = b.join("rootfs/fds");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&fds).map_or(true, |s| s.is_empty()) {
        assert!(Instant::now() < deadline, "the app never listed its fds");
        std::thread::sleep(Duration::from_millis(10));
    }
    // 0-2, and the one `ls` opens to read the directory; 3 and 4 were not open in create.
    let listed: Vec<u32> = std::fs::read_to_string(&fds)
        .expect("fds")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(
        listed.len(),
        4,
        "{listed:?} {}",
        std::fs::read_to_string(b.join("rootfs/fds.l")).unwrap_or_default()
    );
    assert_eq!(&listed[..3], &[0, 1, 2], "{listed:?}");
    rt.ok(&["kill", &id, "TERM"]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
}

/// createContainer hooks run in the container's namespaces before pivot_root, found by
/// their host path; startContainer hooks run at start inside the container (its rootfs, its
/// user), right before the app. Each reads the state: the host pid, creating or created. A
/// failing one fails create (nothing left behind) or start (the container is stopped).
#[test]
fn in_container_hooks_run_where_and_when_the_spec_says() {
    let dir = TestDir::new("oci-in-hooks");
    let host_log = dir.path().join("create.log");
    let l = host_log.display();
    let order = dir.path().join("order.log");
    let o = order.display();
    let create_hook = json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {l}; echo >> {l}; readlink /proc/self/ns/mnt >> {l}; echo createContainer >> {o}")]});
    // prestart and createRuntime run in the runtime's namespaces before pivot_root: the
    // container's mount table still has its rootfs at the host path (what a hook that
    // mounts into the rootfs, nvidia's, relies on). They count that mount.
    let rootfs = dir.path().join("bundle/rootfs");
    let r = rootfs.display();
    let rootfs_mount = |kind: &str| {
        json!({"path": "/bin/sh", "args": ["sh", "-c", format!(
            "s=$(cat); p=${{s#*pid?:}}; p=${{p%%,*}}; echo {kind} $(awk -v r={r} '$5 == r' /proc/$p/mountinfo | wc -l) >> {o}"
        )]})
    };
    let start_hook =
        json!({"path": "/bin/sh", "args": ["sh", "-c", "cat > /start.json; echo start >> /order"]});
    let args = [
        "sh",
        "-c",
        "echo app >> /order; trap 'exit 0' TERM; while :; do sleep 0.1; done",
    ];
    let b = bundle(dir.path(), &args, |c| {
        c["root"]["readonly"] = json!(false);
        c["hooks"] = json!({
            "prestart": [rootfs_mount("prestart")],
            "createRuntime": [rootfs_mount("createRuntime")],
            "createContainer": [create_hook],
            "startContainer": [start_hook],
        });
    });
    let rt = Runc {
        root: dir.path().join("state"),
    };
    let id = format!("oci-{}-inhooks", std::process::id());
    let b_s = b.display().to_string();
    rt.ok(&["create", "--bundle", &b_s, &id]);
    let pid = rt.state(&id)["pid"].as_i64().expect("pid");
    let log = std::fs::read_to_string(&host_log).expect("createContainer ran");
    let (state, mnt) = log.split_once('\n').expect("state, then the namespace");
    let state: Value = serde_json::from_str(state).expect("state json");
    assert_eq!(
        (&state["id"], &state["status"], &state["pid"]),
        (&json!(id), &json!("creating"), &json!(pid))
    );
    // In the container's mount namespace, not the host's.
    let container_mnt = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("ns");
    assert_eq!(mnt.trim(), container_mnt.display().to_string());
    assert!(
        !b.join("rootfs/order").exists(),
        "created: nothing ran inside yet"
    );
    assert_eq!(
        std::fs::read_to_string(&order).expect("hooks ran"),
        "prestart 1\ncreateRuntime 1\ncreateContainer\n"
    );
    rt.ok(&["start", &id]);
    let order = std::fs::read_to_string(b.join("rootfs/order")).unwrap_or_default();
    assert!(order.starts_with("start\n"), "{order:?}");
    let started: Value = serde_json::from_str(
        &std::fs::read_to_string(b.join("rootfs/start.json")).expect("startContainer ran"),
    )
    .expect("state json");
    assert_eq!(
        (&started["status"], &started["pid"]),
        (&json!("created"), &json!(pid))
    );
    rt.ok(&["kill", &id, "TERM"]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);

    // Failures: create fails and leaves nothing; start fails and the container is gone.
    let failing = |which: &str| {
        bundle(dir.path(), &args, |c| {
            c["hooks"] = json!({which: [{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]});
        })
    };
    failing("createContainer");
    let out = rt.run(&["create", "--bundle", &b_s, &id]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("createContainer hook /bin/sh failed (exit code 3)"),
        "{}",
        out.stderr
    );
    assert!(
        !rt.root.join(&id).exists(),
        "a failed create leaves nothing"
    );
    failing("startContainer");
    rt.ok(&["create", "--bundle", &b_s, &id]);
    let out = rt.run(&["start", &id]);
    assert_ne!(out.code, 0, "a failing startContainer hook fails start");
    assert!(out.stderr.contains("startContainer hook"), "{}", out.stderr);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
}

/// A hook that never reads its stdin (`/bin/true`), given a state larger than a pipe holds
/// (a big annotation): `start` and `delete` once died of SIGPIPE writing it (runtime-tools'
/// hooks, poststart_fail and poststop_fail), and a state beyond the pipe's 64 KiB would
/// have blocked them on a hook that sleeps. Every hook still runs, in order.
#[test]
fn hooks_that_never_read_stdin_do_not_end_the_runtime() {
    let dir = TestDir::new("oci-hook-stdin");
    let log = dir.path().join("hooks.log");
    let note = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} >> {}", log.display())]});
    let deaf = json!({"path": "/bin/true", "args": ["true"]});
    let b = bundle(dir.path(), &["true"], |c| {
        c["annotations"] = json!({"org.example.big": "x".repeat(200 * 1024)});
        c["hooks"] = json!({
            "prestart": [deaf, note("prestart")],
            "poststart": [deaf, note("poststart")],
            "poststop": [deaf, note("poststop")],
        });
    });
    let rt = Runc {
        root: dir.path().join("state"),
    };
    let id = format!("oci-{}-deaf", std::process::id());
    rt.ok(&["create", "--bundle", &b.display().to_string(), &id]);
    rt.ok(&["start", &id]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    assert_eq!(
        std::fs::read_to_string(&log).expect("hooks ran"),
        "prestart\npoststart\npoststop\n"
    );
}

/// A spec without any namespace entry (runtime-tools' linux_ns_itype): the container shares
/// every namespace of the runtime's, the mount namespace included, which slate once refused.
/// It is chroot'ed into its rootfs (exec too); its mounts are the host's, under one rootfs
/// mount that delete (or a failed create) removes.
#[test]
fn no_namespaces_means_the_hosts_and_its_mounts_go_with_it() {
    let dir = TestDir::new("oci-hostns");
    let args = [
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.1; done",
    ];
    let b = bundle(dir.path(), &args, |c| {
        c["linux"]["namespaces"] = json!([]);
        c.as_object_mut().expect("config").remove("hostname");
    });
    let b_s = b.display().to_string();
    let rootfs = b.join("rootfs").display().to_string();
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter(|l| l.contains(&rootfs))
            .count()
    };
    let rt = Runc {
        root: dir.path().join("state"),
    };
    let id = format!("oci-{}-hostns", std::process::id());
    rt.ok(&["create", "--bundle", &b_s, &id]);
    let pid = rt.state(&id)["pid"].as_i64().expect("pid");
    for ns in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
        let link = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/{ns}")).expect("ns link");
        assert_eq!(link(&pid.to_string()), link("self"), "{ns} namespace");
    }
    assert!(mounted() > 0, "the container's mounts are the host's");
    rt.ok(&["start", &id]);
    rt.wait_status(&id, "running");
    // In the rootfs, not the host's /.
    let out = rt.ok(&["exec", &id, "cat", "/hello"]);
    assert_eq!(out.stdout, "hello from the bundle\n");
    rt.ok(&["kill", &id, "TERM"]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    assert_eq!(mounted(), 0, "delete leaves no mount behind");

    // A create that fails half-way through its mounts leaves none either.
    let bad = bundle(&dir.path().join("bad"), &args, |c| {
        c["linux"]["namespaces"] = json!([]);
        c.as_object_mut().expect("config").remove("hostname");
        c["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(json!({"destination": "/x", "type": "nosuchfs", "source": "x"}));
    });
    let out = rt.run(&["create", "--bundle", &bad.display().to_string(), &id]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("nosuchfs"), "{}", out.stderr);
    let bad_root = bad.join("rootfs").display().to_string();
    let left = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!left.contains(&bad_root), "{left}");
}

/// A container.conf and storage of podman's own, under `dir`.
fn podman(dir: &Path) -> Command {
    let conf = dir.join("containers.conf");
    if !conf.exists() {
        std::fs::write(
            &conf,
            format!(
                "[containers]\n\
                 # podman 4.3 asks for hard rlimits this host's root cannot raise (no CAP_SYS_RESOURCE)\n\
                 default_ulimits = []\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 tmp_dir = \"{}\"\n",
                dir.join("libpod-tmp").display()
            ),
        )
        .expect("containers.conf");
    }
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", &conf)
        .arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--runtime")
        .arg(SLATE_RUNC)
        .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
        .stdin(Stdio::null());
    c
}

/// The engines' cgroups go under this parent, on every hierarchy; removed (deepest first,
/// empty directories only) when dropped.
struct CgroupParent(String);

impl CgroupParent {
    fn new(label: &str) -> CgroupParent {
        CgroupParent(format!("slate-e2e-{label}-{}", std::process::id()))
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let mut hier: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        hier.push(PathBuf::from("/sys/fs/cgroup"));
        for h in hier {
            let top = h.join(&self.0);
            if !top.is_dir() {
                continue;
            }
            let mut dirs = vec![top.clone()];
            let mut i = 0;
            while i < dirs.len() {
                if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
                    dirs.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
                }
                i += 1;
            }
            for d in dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

fn out_of(mut c: Command) -> Out {
    let o = c.output().expect("command");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn busybox_reference() -> String {
    let img = crate::harness::run_image::image(crate::harness::run_image::default_config(), vec![]);
    crate::harness::registry::Registry::shared().push_image("oci/busybox", "v1", &img)
}

/// The container's process waits at the start gate, sealed (CVE-2019-5736) and confined as
/// its app will be (one
/// sequence for it and for `exec`): the spec's non-root user, and not dumpable, so a process of the
/// same uid (another in a shared PID namespace, an earlier exec) can neither ptrace it nor
/// open its /proc entries (its descriptors, the runtime's binary) before execve.
#[test]
fn a_created_container_waits_non_dumpable_as_its_user() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = TestDir::new("oci-dumpable");
    let b = bundle(dir.path(), &["sh", "-c", "echo ran"], |c| {
        c["process"]["user"] = json!({"uid": 4242, "gid": 4242});
    });
    let rt = Runc {
        root: dir.path().join("state"),
    };
    let id = format!("oci-{}-dump", std::process::id());
    rt.ok(&["create", "--bundle", &b.display().to_string(), &id]);
    let pid = rt.state(&id)["pid"].as_i64().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "4242"),
        "the waiting process runs as the spec's user: {uid_line}"
    );
    // A dumpable process's /proc entries belong to its uid; a non-dumpable one's to root.
    for entry in ["fd", "environ", "mem"] {
        let meta = std::fs::symlink_metadata(format!("/proc/{pid}/{entry}")).expect(entry);
        assert_eq!(
            meta.uid(),
            0,
            "/proc/{pid}/{entry} of the waiting process is root's"
        );
    }
    // CVE-2019-5736: the waiting process is a sealed copy of slate, not the host's binary,
    // with the global flags in runc's form (`--root DIR` before the verb, as containerd and
    // podman pass them): that form once made slate take DIR for the verb and skip the seal.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
    let host_bin = std::fs::canonicalize(crate::harness::slate::SLATE_BIN).expect("slate");
    assert_ne!(exe, host_bin, "the created process runs the host's binary");
    let write = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/exe"));
    assert!(
        write.is_err(),
        "the created process's binary is writable: {exe:?}"
    );
    // And it gets through its gate as that user (the FIFO is not root's alone) and runs.
    rt.ok(&["start", &id]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
}

#[test]
fn podman_runs_containers_with_slate_runc() {
    let dir = TestDir::new("oci-podman");
    let cg = CgroupParent::new("podman");
    let image = busybox_reference();
    let parent = format!("/{}", cg.0);
    let pm = |args: &[&str]| {
        let mut c = podman(dir.path());
        c.args(args);
        out_of(c)
    };
    // podman's own conmon cgroup and the containers' go under the test's parent.
    let run = |args: &[&str]| {
        let mut a = vec![args[0], "--cgroup-parent", &parent];
        a.extend_from_slice(&args[1..]);
        pm(&a)
    };
    let pulled = pm(&["pull", "-q", "--tls-verify=false", &image]);
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    let out = run(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "echo",
        "hello from podman",
    ]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hello from podman\n"),
        "{}",
        out.stderr
    );
    let out = run(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let out = run(&[
        "run",
        "-d",
        "--name",
        "svc",
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        "echo up; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = pm(&["exec", "svc", "cat", "/srv/data.txt"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "image data\n"),
        "{}",
        out.stderr
    );
    let out = pm(&["stop", "-t", "5", "svc"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let logs = pm(&["logs", "svc"]);
    assert!(
        logs.stdout.contains("up") && logs.stdout.contains("bye"),
        "{}{}",
        logs.stdout,
        logs.stderr
    );
    assert_eq!(pm(&["rm", "svc"]).code, 0);
    // podman's storage and its runtime state are the test's: removing them is the clean-up.
    let _ = pm(&["system", "reset", "-f"]);
}

#[test]
fn containerd_runs_a_container_with_slate_runc() {
    if Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("containerd is not installed (tests/deps installs it)");
    }
    let dir = TestDir::new("oci-containerd");
    let cg = CgroupParent::new("containerd");
    let image = busybox_reference();
    let d = dir.path().display().to_string();
    let config = format!(
        "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\
         [debug]\n  address = \"{d}/debug.sock\"\n"
    );
    std::fs::write(dir.path().join("config.toml"), config).expect("config");
    // Everything of containerd's (daemon, shim, ctr's FIFOs under /run/containerd) lives
    // in this script's mount namespace, on a tmpfs, and ends with it.
    let script = format!(
        r#"set -e
mount -t tmpfs tmpfs /run
containerd --config {d}/config.toml > {d}/containerd.log 2>&1 &
daemon=$!
trap 'kill $daemon; wait $daemon' EXIT
for i in $(seq 100); do [ -S {d}/c.sock ] && break; sleep 0.1; done
C="ctr --address {d}/c.sock"
$C images pull -q --plain-http {image} >/dev/null
$C run --rm --runc-binary {runc} --runc-root {d}/runc --cgroup /{cg}/t1 {image} t1 echo hello from containerd
$C run --rm --runc-binary {runc} --runc-root {d}/runc --cgroup /{cg}/t2 {image} t2 sh -c 'exit 5' || echo "exit=$?"
"#,
        runc = SLATE_RUNC,
        cg = cg.0,
    );
    let out = out_of({
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
        c
    });
    let log = std::fs::read_to_string(dir.path().join("containerd.log")).unwrap_or_default();
    assert_eq!(
        out.code,
        0,
        "{}{}\ncontainerd: {}",
        out.stdout,
        out.stderr,
        log.lines().rev().take(10).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(
        out.stdout, "hello from containerd\nexit=5\n",
        "{}",
        out.stderr
    );
    // The runtime's own state is gone with the containers.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("runc"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|ns| std::fs::read_dir(ns.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "containers left: {left:?}");
}

/// A cgroup file of process `pid`'s container: `v1_file` in the v1 hierarchy of
/// `controller` where the host has one, else `v2_file` in its cgroup2 directory.
fn cgroup_value(pid: i64, controller: &str, v1_file: &str, v2_file: &str) -> String {
    let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("/proc/PID/cgroup");
    let mut v2 = None;
    for line in table.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if ctrls.split(',').any(|c| c == controller) {
            let f = format!("/sys/fs/cgroup/{controller}{path}/{v1_file}");
            return std::fs::read_to_string(&f)
                .unwrap_or_else(|e| panic!("{f}: {e}"))
                .trim()
                .to_string();
        }
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        }
    }
    let path = v2.expect("a cgroup of the process");
    let f = format!("/sys/fs/cgroup{path}/{v2_file}");
    std::fs::read_to_string(&f)
        .unwrap_or_else(|e| panic!("{f}: {e}"))
        .trim()
        .to_string()
}

/// `slate-runc state ID | grep -q running`, `slate images | head -1`: a reader that goes
/// away ends the command as it ends Unix tools (SIGPIPE), never with a panic's backtrace.
#[test]
fn a_closed_stdout_ends_quietly() {
    let dir = TestDir::new("oci-sigpipe");
    let root = dir.path().join("state");
    let store = dir.path().join("store");
    let runs: [(&str, Vec<std::ffi::OsString>); 2] = [
        (
            SLATE_RUNC,
            vec!["--root".into(), root.into_os_string(), "list".into()],
        ),
        (
            crate::harness::slate::SLATE_BIN,
            vec!["--root".into(), store.into_os_string(), "version".into()],
        ),
    ];
    for (bin, args) in runs {
        let mut child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{bin} {args:?}: {stderr}");
        use std::os::unix::process::ExitStatusExt as _;
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{bin} {args:?}: {:?} {stderr}",
            out.status
        );
    }
}
