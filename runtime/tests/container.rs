//! Integration tests of the runtime on the real kernel, as root: each runs a container from
//! a busybox bundle through the `run_bundle` example, asserts what the probe or the exit
//! status shows, then that nothing of the run is left.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Bundle;
use serde_json::json;

#[test]
fn probe_sees_a_confined_world() {
    let mut b = Bundle::new("probe");
    b.spec["linux"]["seccomp"] =
        serde_json::to_value(slate_runtime::seccomp::docker_default().unwrap()).unwrap();
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.one("pid"), "1");
    assert_eq!(out.one("hostname"), "probe-host");
    assert_eq!(out.one("cwd"), "/");
    // Docker's 14 capabilities, in the effective and the bounding set alike.
    assert_eq!(out.one("CapEff"), "00000000a80425fb");
    assert_eq!(out.one("CapBnd"), "00000000a80425fb");
    assert_eq!(out.one("CapInh"), "0000000000000000");
    assert_eq!(out.one("NoNewPrivs"), "1");
    assert_eq!(out.one("Seccomp"), "2");
    // The supervisor's ignored signals (Rust ignores SIGPIPE) and mask do not reach the app.
    assert_eq!(out.one("SigIgn"), "0000000000000000");
    assert_eq!(out.one("SigBlk"), "0000000000000000");

    let report = out.report();
    let mounts = &report["mount"];
    let has = |point: &str, fstype: &str, opt: &str| {
        mounts.iter().any(|m| {
            let f: Vec<&str> = m.split(' ').collect();
            f[0] == point && f[1] == fstype && f[2].split(',').any(|o| o == opt)
        })
    };
    assert!(has("/proc", "proc", "nosuid"), "{mounts:#?}");
    assert!(has("/sys", "sysfs", "ro"), "{mounts:#?}");
    assert!(has("/dev", "tmpfs", "nosuid"), "{mounts:#?}");
    assert!(has("/dev/pts", "devpts", "rw"), "{mounts:#?}");
    assert!(has("/dev/shm", "tmpfs", "nodev"), "{mounts:#?}");
    assert!(has("/dev/mqueue", "mqueue", "rw"), "{mounts:#?}");
    assert!(has("/proc/sys", "proc", "ro"), "{mounts:#?}");
    // Nothing of the host's tree beyond what was mounted on purpose.
    assert!(!mounts
        .iter()
        .any(|m| m.starts_with("/work") || m.starts_with("/tmp")));
    assert_eq!(out.one("dev_null"), "chr");
    assert_eq!(out.one("dev_ptmx"), "pts/ptmx");

    // Masked: files read as empty, directories are empty, wherever this kernel has them.
    for (k, v) in &report {
        if let Some(path) = k.strip_prefix("masked ") {
            let v = &v[0];
            assert!(
                v == "absent" || v == "read 0" || v == "dir 0",
                "{path} is readable: {v}"
            );
        }
    }
    assert!(out.one("proc_sys_writable").starts_with("no"));
    // CVE-2024-21626: only stdio reaches the container.
    assert_eq!(out.one("fds"), "0,1,2");
    b.assert_clean();
}

#[test]
fn seccomp_without_no_new_privs() {
    let mut b = Bundle::new("seccomp-nnp0");
    b.spec["process"]["noNewPrivileges"] = json!(false);
    b.spec["linux"]["seccomp"] =
        serde_json::to_value(slate_runtime::seccomp::docker_default().unwrap()).unwrap();
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    // Installed while CAP_SYS_ADMIN was still there, before the capabilities were dropped.
    assert_eq!(out.one("Seccomp"), "2");
    assert_eq!(out.one("NoNewPrivs"), "0");
    assert_eq!(out.one("CapEff"), "00000000a80425fb");
    b.assert_clean();
}

#[test]
fn user_groups_umask_and_cwd() {
    let mut b = Bundle::new("user");
    b.spec["process"]["user"] =
        json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 63});
    b.spec["process"]["cwd"] = json!("/work/here");
    b.spec["domainname"] = json!("example.org");
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.one("domainname"), "example.org");
    assert_eq!(out.one("uid"), "1000");
    assert_eq!(out.one("gid"), "1000");
    assert_eq!(out.one("groups"), "10,20");
    assert_eq!(out.one("umask"), "0077");
    assert_eq!(out.one("cwd"), "/work/here");
    // A non-root user keeps no capability across exec without ambient ones, as under docker.
    assert_eq!(out.one("CapEff"), "0000000000000000");
    assert_eq!(out.one("CapBnd"), "00000000a80425fb");
    b.assert_clean();
}

/// Descriptors handed to the runtime (`ContainerOptions::stdio`) become the app's, and only
/// the app's: the caller's own stdout is not redirected around the spawn.
#[test]
fn stdio_handed_to_the_runtime_is_the_apps_alone() {
    let mut b = Bundle::new("stdio");
    b.args(&["sh", "-c", "echo to-the-file; echo to-stderr >&2"]);
    let file = b.path().join("app-stdout");
    let out = b.run(&["--stdout", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "to-the-file\n");
    assert!(!out.stdout.contains("to-the-file"), "{}", out.stdout);
    assert!(out.stderr.contains("to-stderr"), "{}", out.stderr);
    b.assert_clean();
}

#[test]
fn exit_codes_are_reported_exactly() {
    let mut b = Bundle::new("exit7");
    b.args(&["sh", "-c", "exit 7"]);
    assert_eq!(b.run(&[]).code, 7);
    b.args(&["false"]);
    assert_eq!(b.run(&[]).code, 1);
    b.args(&["true"]);
    assert_eq!(b.run(&[]).code, 0);
    b.assert_clean();
}

#[test]
fn sigkill_is_reported_as_137() {
    let mut b = Bundle::new("kill9");
    b.args(&["sleep", "30"]);
    let run = b.start(&[]);
    let pid = run.container_pid();
    // Give the exec a moment so the kill hits the app, not the setup.
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = run.finish(Duration::from_secs(20));
    assert_eq!(out.code, 137, "{out:#?}");
    b.assert_clean();
}

#[test]
fn sigterm_to_the_supervisor_reaches_the_app() {
    let mut b = Bundle::new("term");
    // PID 1 only gets signals it handles: this one traps TERM and says so by its exit code.
    b.args(&[
        "sh",
        "-c",
        "trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done",
    ]);
    let run = b.start(&[]);
    run.container_pid();
    std::thread::sleep(Duration::from_millis(300));
    run.signal(libc::SIGTERM);
    let out = run.finish(Duration::from_secs(20));
    assert_eq!(out.code, 42, "{out:#?}");
    b.assert_clean();
}

#[test]
fn init_forwards_signals_and_reaps() {
    let mut b = Bundle::new("init");
    b.args(&["sleep", "30"]);
    let run = b.start(&["--init"]);
    run.container_pid();
    std::thread::sleep(Duration::from_millis(300));
    run.signal(libc::SIGTERM);
    let out = run.finish(Duration::from_secs(20));
    // sleep has no handler: killed by SIGTERM, reported as 128+15.
    assert_eq!(out.code, 143, "{out:#?}");

    // Under init the app is not PID 1, and its status comes through unchanged.
    b.args(&["/probe"]);
    let out = b.run(&["--init"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.one("pid"), "2");
    assert_eq!(out.one("ppid"), "1");
    b.args(&["sh", "-c", "sleep 0 & exit 3"]);
    assert_eq!(b.run(&["--init"]).code, 3);
    b.assert_clean();
}

#[test]
fn exec_failures_map_to_docker_codes() {
    let mut b = Bundle::new("exec");
    b.args(&["/nonexistent"]);
    let out = b.run(&[]);
    assert_eq!(out.code, 127, "{out:#?}");
    assert!(
        out.stderr.contains("/nonexistent") && out.stderr.contains("not found"),
        "{}",
        out.stderr
    );
    b.args(&["no-such-command"]);
    let out = b.run(&[]);
    assert_eq!(out.code, 127, "{out:#?}");
    assert!(out.stderr.contains("no-such-command"), "{}", out.stderr);
    b.args(&["/etc/notexec"]);
    let out = b.run(&[]);
    assert_eq!(out.code, 126, "{out:#?}");
    assert!(
        out.stderr.contains("/etc/notexec") && out.stderr.contains("cannot execute"),
        "{}",
        out.stderr
    );
    // Under init, the app's exec failure is reported the same way.
    b.args(&["/nonexistent"]);
    let out = b.run(&["--init"]);
    assert_eq!(out.code, 127, "{out:#?}");
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    b.assert_clean();
}

#[test]
fn setup_errors_are_clear_and_leave_nothing() {
    let mut b = Bundle::new("errors");
    // Missing rootfs.
    b.spec["root"]["path"] = json!("no-such-rootfs");
    let out = b.run(&[]);
    assert_eq!(out.code, 125);
    assert!(
        out.stderr.contains("rootfs") && out.stderr.contains("no-such-rootfs"),
        "{}",
        out.stderr
    );
    b.spec["root"]["path"] = json!("rootfs");

    // A bind mount whose source is missing: refused before anything starts.
    b.spec["mounts"] = json!([{"destination": "/data", "type": "bind", "source": "/no/such/dir", "options": ["rbind"]}]);
    let out = b.run(&[]);
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains("/no/such/dir"), "{}", out.stderr);

    // A mount the kernel refuses, inside the child: named, with the errno.
    b.spec["mounts"] = json!([{"destination": "/data", "type": "nosuchfs", "source": "x"}]);
    let out = b.run(&[]);
    assert_eq!(out.code, 125);
    assert!(
        out.stderr.contains("mount nosuchfs at /data"),
        "{}",
        out.stderr
    );
    b.spec["mounts"] = json!([]);

    // A limit the kernel refuses: raising a hard limit needs CAP_SYS_RESOURCE (which root
    // lacks on some hosts, this one included), and no one may go above the kernel's
    // nr_open ceiling: ask for that, refused everywhere.
    b.spec["process"]["rlimits"] =
        json!([{"type": "RLIMIT_NOFILE", "hard": 1u64 << 40, "soft": 1024}]);
    let out = b.run(&[]);
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains("RLIMIT_NOFILE"), "{}", out.stderr);
    b.assert_clean();
}

#[test]
fn rlimits_apply() {
    let mut b = Bundle::new("rlimit");
    b.spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
    b.args(&["sh", "-c", "ulimit -n; ulimit -Hn"]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["256", "512"]
    );
    b.assert_clean();
}

#[test]
fn mount_targets_stay_inside_the_rootfs() {
    let mut b = Bundle::new("escape");
    let root = b.path().join("rootfs");
    let outside = b.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let data = b.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("marker"), b"x").unwrap();

    // A relative link that climbs out of the rootfs resolves with the rootfs as "/".
    std::os::unix::fs::symlink("../../../../../../etc", root.join("evil")).unwrap();
    b.spec["mounts"] = json!([{"destination": "/evil/mnt", "type": "bind", "source": data, "options": ["rbind", "ro"]}]);
    b.args(&["sh", "-c", "cat /etc/mnt/marker && ! touch /etc/mnt/new"]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout.trim(), "x");
    assert!(root.join("etc/mnt").is_dir());

    // An absolute link to a host directory: inside the rootfs that path does not exist, so
    // the mount fails with a clear error instead of landing on the host.
    std::fs::remove_file(root.join("evil")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
    let out = b.run(&[]);
    assert_eq!(out.code, 125, "{out:#?}");
    assert!(
        out.stderr.contains("mount bind at /evil/mnt"),
        "{}",
        out.stderr
    );
    assert!(
        !outside.join("mnt").exists(),
        "a mount target was created outside the rootfs"
    );
    b.assert_clean();
}

/// The spec's `cgroup` mount is the container's own cgroups also without a cgroup namespace
/// (where a fresh cgroup2 mount would show the host's whole tree): on this host's form, its
/// own limit at the top and nothing of slate's parent.
#[test]
fn cgroup_view_is_the_containers_own_without_a_cgroup_namespace() {
    let mut b = Bundle::new("cgview-nons");
    b.spec["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}
    ]);
    b.spec["mounts"] = json!([
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
    ]);
    b.spec["linux"]["resources"] = json!({"memory": {"limit": 48 << 20}});
    b.args(&[
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
         ls /sys/fs/cgroup/memory/slate /sys/fs/cgroup/slate 2>/dev/null | grep -c .; \
         grep -c slate /proc/self/cgroup",
    ]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "50331648", "{out:#?}");
    assert_eq!(lines[1], "0", "slate's parent is visible: {out:#?}");
    // Without a namespace of its own, /proc/self/cgroup names the host's paths: the view is
    // the mount's doing, not the namespace's.
    assert_ne!(lines[2], "0", "{out:#?}");
    b.assert_clean();
}

/// Issue 12: the container's cgroup view goes where its destination resolves inside the
/// rootfs, never onto the host, whatever links a hostile image has on the way (/sys here is a
/// bind of an image directory, so its `fs/cgroup` is the image's own link).
#[test]
fn cgroup_view_through_a_symlink_stays_inside_the_rootfs() {
    let mut b = Bundle::new("cgview-escape");
    let root = b.path().join("rootfs");
    let outside = b.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let sys = root.join("hostile-sys");
    std::fs::create_dir_all(sys.join("fs")).unwrap();
    // From the host, hostile-sys/fs/../../../outside is the bundle's `outside`; inside, ".."
    // stops at the root, so it is the rootfs's own /outside.
    std::os::unix::fs::symlink("../../../outside", sys.join("fs/cgroup")).unwrap();
    std::fs::create_dir_all(root.join("outside")).unwrap();
    b.spec["mounts"] = json!([
        {"destination": "/sys", "type": "bind", "source": sys, "options": ["rbind", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
    ]);
    b.spec["linux"]["resources"] = json!({"memory": {"limit": 64 << 20}});
    b.args(&[
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
         ls /outside | grep -c .",
    ]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "67108864", "{out:#?}");
    assert_ne!(
        lines[1], "0",
        "the view is at the rootfs's /outside: {out:#?}"
    );
    let host_entries = std::fs::read_dir(&outside).unwrap().count();
    assert_eq!(
        host_entries, 0,
        "something was made in the host's directory"
    );

    // An absolute link to the host directory: that path is not in the rootfs, so the mount
    // fails with a clear error instead of landing on the host.
    std::fs::remove_file(sys.join("fs/cgroup")).unwrap();
    std::os::unix::fs::symlink(&outside, sys.join("fs/cgroup")).unwrap();
    let out = b.run(&[]);
    assert_eq!(out.code, 125, "{out:#?}");
    assert!(
        out.stderr
            .contains("mount the container's cgroups at /sys/fs/cgroup"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    b.assert_clean();
}

#[test]
fn overlay_rootfs_is_mounted_inside_the_container_only() {
    let mut b = Bundle::new("overlay");
    b.args(&[
        "sh",
        "-c",
        "echo hi > /written && cat /proc/self/mountinfo | grep ' / / '",
    ]);
    let out = b.run(&["--overlay"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("overlay"), "{}", out.stdout);
    // The write went to the (now deleted) upper directory, not the lower one.
    assert!(!b.path().join("rootfs/written").exists());
    assert!(!b.path().join(".upper").exists());
    b.assert_clean();
}

#[test]
fn readonly_rootfs() {
    let mut b = Bundle::new("ro");
    b.spec["root"]["readonly"] = json!(true);
    b.args(&[
        "sh",
        "-c",
        "touch /x; echo $?; touch /dev/shm/y && echo shm-ok",
    ]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains("1\n") && out.stdout.contains("shm-ok"),
        "{out:#?}"
    );
    b.assert_clean();
}

#[test]
fn terminal_gets_a_pty() {
    let mut b = Bundle::new("tty");
    b.spec["process"]["terminal"] = json!(true);
    b.spec["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    b.args(&["sh", "-c", "tty; echo hi > /dev/tty; /probe"]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.one("stdin_tty"), "yes");
    // The terminal lives in the container's own devpts instance, and its user can reopen it.
    assert!(
        out.stdout.starts_with("/dev/pts/0\r\nhi\r\n"),
        "{:?}",
        out.stdout
    );
    // The terminal's exit status still comes through.
    b.args(&["sh", "-c", "exit 5"]);
    assert_eq!(b.run(&[]).code, 5);
    b.assert_clean();
}

/// docker's `-t` without `-i`: the app gets a terminal, but none of the caller's input.
#[test]
fn terminal_without_stdin_gets_no_input() {
    let mut b = Bundle::new("tty-noin");
    b.spec["process"]["terminal"] = json!(true);
    b.args(&["sh", "-c", "read -t 2 x && echo got=$x || echo no-input"]);
    let out = b
        .start_with_input(&["--no-stdin"], b"typed\n")
        .finish(Duration::from_secs(30));
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "no-input\r\n", "{out:#?}");
    // By default a terminal's input is relayed (`-it`).
    let out = b
        .start_with_input(&[], b"typed\n")
        .finish(Duration::from_secs(30));
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("got=typed\r\n"), "{out:#?}");
    b.assert_clean();
}

#[test]
fn host_fds_do_not_leak() {
    use std::os::unix::process::CommandExt;
    let b = Bundle::new("fds");
    b.write();
    let mut cmd = std::process::Command::new(common::run_bundle());
    cmd.arg("--id").arg(&b.id).arg(b.path());
    cmd.stdout(std::process::Stdio::piped());
    // SAFETY: between fork and exec the closure only calls async-signal-safe open/dup2.
    unsafe {
        cmd.pre_exec(|| {
            let fd = libc::open(
                c"/sys/fs/cgroup".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY,
            );
            if fd >= 0 {
                libc::dup2(fd, 7);
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.lines().any(|l| l == "fds=0,1,2"), "{stdout}");
    b.assert_clean();
}

#[test]
fn joins_namespaces_by_path() {
    let mut a = Bundle::new("join-a");
    a.args(&["sleep", "30"]);
    let run_a = a.start(&[]);
    let a_pid = run_a.container_pid();
    std::thread::sleep(Duration::from_millis(200));
    let ns = |kind: &str| {
        std::fs::read_link(format!("/proc/{a_pid}/ns/{kind}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };

    let mut b = Bundle::new("join-b");
    b.spec["hostname"] = json!(null);
    b.spec["linux"]["namespaces"] = json!([
        {"type": "pid", "path": format!("/proc/{a_pid}/ns/pid")},
        {"type": "network", "path": format!("/proc/{a_pid}/ns/net")},
        {"type": "ipc", "path": format!("/proc/{a_pid}/ns/ipc")},
        {"type": "uts", "path": format!("/proc/{a_pid}/ns/uts")},
        {"type": "mount"},
        {"type": "cgroup"}
    ]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.one("ns_pid"), ns("pid"));
    assert_eq!(out.one("ns_net"), ns("net"));
    assert_eq!(out.one("ns_ipc"), ns("ipc"));
    assert_eq!(out.one("ns_uts"), ns("uts"));
    assert_ne!(out.one("ns_mnt"), ns("mnt"));
    // A's sleep is PID 1 of the namespace B joined.
    assert_ne!(out.one("pid"), "1");
    assert_eq!(out.one("hostname"), "probe-host");
    b.assert_clean();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(run_a.finish(Duration::from_secs(20)).code, 137);
    a.assert_clean();
}

/// A new network namespace starts with `lo` down; the runtime brings it up, as docker and
/// runc do (`--network none` must still give a working 127.0.0.1).
#[test]
fn new_network_namespace_has_lo_up() {
    let mut b = Bundle::new("lo-up");
    b.args(&["cat", "/sys/class/net/lo/flags"]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    let flags = u32::from_str_radix(out.stdout.trim().trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("lo flags: {out:#?}"));
    assert_eq!(flags & libc::IFF_UP as u32, 1, "IFF_UP on lo: {out:#?}");
    b.assert_clean();
}

#[test]
fn network_absent_means_the_host_network() {
    let mut b = Bundle::new("hostnet");
    b.spec["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}
    ]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(out.one("ns_net"), host_net.to_string_lossy());
    b.assert_clean();
}

#[test]
fn user_namespace_maps_ids() {
    let mut b = Bundle::new("userns");
    let ns = b.spec["linux"]["namespaces"].as_array_mut().unwrap();
    ns.push(json!({"type": "user"}));
    b.spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.args(&[
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; /probe",
    ]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    let maps: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(maps, [["0", "100000", "65536"], ["0", "100000", "65536"]]);
    assert_eq!(out.one("uid"), "0");
    // sh execs its last command: the probe is PID 1.
    assert_eq!(out.one("pid"), "1");
    assert_eq!(out.one("CapEff"), "00000000a80425fb");
    assert_eq!(out.one("dev_null"), "chr");
    b.assert_clean();
}

#[test]
fn spec_mounts_bind_files_tmpfs_and_propagation() {
    let mut b = Bundle::new("mounts");
    let host_file = b.path().join("resolv.conf");
    std::fs::write(&host_file, b"nameserver 192.0.2.1\n").unwrap();
    let host_dir = b.path().join("data");
    std::fs::create_dir_all(&host_dir).unwrap();
    b.spec["mounts"] = json!([
        {"destination": "/etc/resolv.conf", "type": "bind", "source": host_file, "options": ["rbind", "ro"]},
        {"destination": "/data", "type": "bind", "source": host_dir, "options": ["rbind", "rw", "nosuid", "rprivate"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=1m"]}
    ]);
    b.args(&[
        "sh",
        "-c",
        "cat /etc/resolv.conf; echo x >> /etc/resolv.conf || echo ro-ok; \
         echo written > /data/out; stat -c %a /scratch; /probe",
    ]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout
            .starts_with("nameserver 192.0.2.1\nro-ok\n1777\n"),
        "{}",
        out.stdout
    );
    assert_eq!(
        std::fs::read_to_string(host_dir.join("out")).unwrap(),
        "written\n"
    );
    assert_eq!(
        std::fs::read_to_string(&host_file).unwrap(),
        "nameserver 192.0.2.1\n"
    );
    let report = out.report();
    let mount = |point: &str| {
        report["mount"]
            .iter()
            .find(|m| m.split(' ').next() == Some(point))
            .cloned()
            .unwrap_or_default()
    };
    assert!(mount("/etc/resolv.conf").contains(" ro"), "{report:#?}");
    assert!(mount("/data").contains("nosuid"), "{report:#?}");
    assert!(
        mount("/scratch").starts_with("/scratch tmpfs"),
        "{report:#?}"
    );
    // The file target was created inside the rootfs, as an empty file.
    assert!(b.path().join("rootfs/etc/resolv.conf").is_file());
    b.assert_clean();
}

#[test]
fn sysctls_only_in_private_namespaces() {
    let mut b = Bundle::new("sysctl");
    b.spec["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shmmni": "1000"});
    b.args(&[
        "cat",
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/kernel/shmmni",
    ]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "1\n1000\n");
    // Not namespaced: refused, host untouched.
    b.spec["linux"]["sysctl"] = json!({"vm.swappiness": "1"});
    let out = b.run(&[]);
    assert_eq!(out.code, 125, "{out:#?}");
    assert!(out.stderr.contains("vm.swappiness"), "{}", out.stderr);
    // Namespaced, but the container shares the host's network namespace: refused too.
    b.spec["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    b.spec["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "mount"}, {"type": "uts"}]);
    let out = b.run(&[]);
    assert_eq!(out.code, 125, "{out:#?}");
    assert!(out.stderr.contains("network namespace"), "{}", out.stderr);
    b.assert_clean();
}

#[test]
fn preserved_fds_reach_the_container() {
    use std::os::unix::process::CommandExt;
    let b = Bundle::new("preserve");
    b.write();
    let mut cmd = std::process::Command::new(common::run_bundle());
    cmd.args(["--preserve-fds", "1", "--id"])
        .arg(&b.id)
        .arg(b.path());
    cmd.stdout(std::process::Stdio::piped());
    // SAFETY: between fork and exec the closure only calls async-signal-safe open/dup2.
    unsafe {
        cmd.pre_exec(|| {
            // fd 3 is meant for the container (as with socket activation), fd 4 is not.
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if fd >= 0 {
                libc::dup2(fd, 3);
                libc::dup2(fd, 4);
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.lines().any(|l| l == "fds=0,1,2,3"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "fd 3=/dev/null"), "{stdout}");
    b.assert_clean();
}
