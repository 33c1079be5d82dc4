//! docker's defaults and the run flags of issue 15: no_new_privs off (setuid and
//! file-capability programs work; `[security] no_new_privileges` for hardened hosts), the
//! primary gid among the supplementary groups, `--group-add`, `--sysctl`, `--shm-size`,
//! `--oom-score-adj`, `--pid/--ipc/--uts host`, `--mount`, named volumes and
//! `--stop-timeout`.

use std::time::Instant;

use crate::detached::Detached;
use crate::harness::fixture::file_capability;
use crate::harness::run_image::{self, probe, RunEnv};
use crate::harness::slate::Output;
use crate::harness::slate_cmd::write_config;
use crate::harness::tar_writer::Entry;

const CAP_NET_RAW: u32 = 13;
const DOCKER_DEFAULT_CAPS: u64 = 0xa80425fb;

fn field(out: &Output, key: &str) -> String {
    out.stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}="))
                .or_else(|| l.strip_prefix(&format!("{key}:")))
        })
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in {out:?}"))
}

fn cap_eff(out: &Output) -> u64 {
    u64::from_str_radix(&field(out, "CapEff"), 16).expect("CapEff is hex")
}

/// The base image plus a setuid-root probe and a probe with the NET_RAW file capability
/// (`ping`'s), both run by the unprivileged `app`.
fn env(label: &str) -> RunEnv {
    let extra = vec![
        Entry::file("bin/suid-probe", probe()).mode(0o4755),
        Entry::file("bin/cap-probe", probe())
            .mode(0o755)
            .xattr("security.capability", file_capability(CAP_NET_RAW)),
    ];
    RunEnv::with_image(
        label,
        &run_image::image(run_image::default_config(), vec![extra]),
    )
}

#[test]
fn setuid_and_file_capabilities_work_unless_the_host_is_hardened() {
    let env = env("nnp-default");
    let out = env.run(&["-u", "app"], &["/bin/suid-probe"]).success();
    assert_eq!(field(&out, "NoNewPrivs"), "0", "{out:?}");
    // A setuid-root program gains root's capabilities, within docker's bounding set.
    assert_eq!(cap_eff(&out), DOCKER_DEFAULT_CAPS, "{out:?}");
    let out = env.run(&["-u", "app"], &["/bin/cap-probe"]).success();
    assert_eq!(cap_eff(&out), 1 << CAP_NET_RAW, "{out:?}");
    // Nothing a bounding set lacks can be gained: drop NET_RAW and the file cap is inert.
    // The kernel refuses to exec a program whose file capabilities (effective bit set)
    // cannot all be granted: EPERM, docker's 126.
    env.run(&["-u", "app", "--cap-drop", "NET_RAW"], &["/bin/cap-probe"])
        .failure(126);

    // A hardened host: no_new_privs for every container, unless one asks otherwise.
    write_config(&env.slate, "[security]\nno_new_privileges = true\n");
    let out = env.run(&["-u", "app"], &["/bin/suid-probe"]).success();
    assert_eq!(field(&out, "NoNewPrivs"), "1", "{out:?}");
    assert_eq!(cap_eff(&out), 0, "the setuid bit gave root: {out:?}");
    // (A file capability still works under no_new_privs when the process held it before
    // its exec, as the runtime's process does: the kernel only refuses a gain.)
    let out = env
        .run(
            &["-u", "app", "--security-opt", "no-new-privileges=false"],
            &["/bin/suid-probe"],
        )
        .success();
    assert_eq!(cap_eff(&out), DOCKER_DEFAULT_CAPS, "{out:?}");
}

#[test]
fn supplementary_groups_hold_the_primary_gid_and_group_add() {
    let env = env("groups");
    let out = env.run(&["-u", "app"], &["/bin/probe"]).success();
    let groups = sorted_groups(&out);
    assert_eq!(groups, [29, 50, 1000], "{out:?}");
    let out = env
        .run(
            &["-u", "app", "--group-add", "nogroup", "--group-add", "4242"],
            &["/bin/probe"],
        )
        .success();
    assert_eq!(sorted_groups(&out), [29, 50, 1000, 4242, 65534], "{out:?}");
    env.run(&["--group-add", "nosuch"], &["true"])
        .failure(125)
        .error_mentions(&["nosuch"]);
}

/// getgroups(2) as the probe printed it, sorted (the kernel keeps its own order).
fn sorted_groups(out: &Output) -> Vec<u32> {
    let mut g: Vec<u32> = field(out, "groups")
        .split(',')
        .filter_map(|g| g.parse().ok())
        .collect();
    g.sort_unstable();
    g
}

#[test]
fn sysctl_shm_size_oom_score_and_host_namespaces() {
    let env = env("kernel-flags");
    let out = env
        .run(
            &[
                "--sysctl", "kernel.shm_rmid_forced=1", "--shm-size", "8m", "--oom-score-adj",
                "500",
            ],
            &[
                "sh", "-c",
                "cat /proc/sys/kernel/shm_rmid_forced /proc/self/oom_score_adj; grep ' /dev/shm ' /proc/mounts",
            ],
        )
        .success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "1", "{out:?}");
    assert_eq!(lines[1], "500", "{out:?}");
    assert!(lines[2].contains("size=8192k"), "{out:?}");
    // A sysctl of a namespace the container shares with the host is refused, never applied.
    env.run(&["--sysctl", "net.ipv4.ip_forward=1"], &["true"])
        .failure(125)
        .error_mentions(&["net.ipv4.ip_forward", "host's network namespace"]);
    env.run(&["--sysctl", "kernel.panic=1"], &["true"])
        .failure(125)
        .error_mentions(&["not namespaced"]);
    env.run(&["--oom-score-adj", "1001"], &["true"])
        .failure(125)
        .error_mentions(&["--oom-score-adj"]);

    let host_ns = |kind: &str| {
        std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .expect("own ns")
            .display()
            .to_string()
    };
    let ns_of = |flags: &[&str], kind: &str| {
        let path = format!("/proc/self/ns/{kind}");
        env.run(flags, &["readlink", &path])
            .success()
            .stdout
            .trim()
            .to_string()
    };
    for (flag, kind) in [("--pid", "pid"), ("--ipc", "ipc"), ("--uts", "uts")] {
        assert_ne!(
            ns_of(&[], kind),
            host_ns(kind),
            "{kind} is private by default"
        );
        assert_eq!(ns_of(&[flag, "host"], kind), host_ns(kind), "{flag} host");
    }
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let out = env.run(&["--uts", "host"], &["hostname"]).success();
    assert_eq!(out.stdout.trim(), host_name.trim());
    env.run(&["--uts", "host", "--hostname", "x"], &["true"])
        .failure(125)
        .error_mentions(&["--uts host"]);
    env.run(&["--pid", "container:other"], &["true"])
        .failure(125)
        .error_mentions(&["not supported"]);
}

#[test]
fn mount_flag_bind_tmpfs_and_volume() {
    let env = env("mount-flag");
    let host = env.slate.dir().subdir("shared");
    std::fs::write(host.join("f"), "from the host\n").expect("write");
    let bind = format!("type=bind,source={},target=/mnt/h,readonly", host.display());
    let out = env
        .run(
            &[
                "--mount", &bind, "--mount", "type=tmpfs,target=/scratch,tmpfs-size=1m",
                "--mount", "type=volume,source=vol1,target=/v",
            ],
            &[
                "sh", "-c",
                "cat /mnt/h/f; touch /mnt/h/x 2>/dev/null && echo bind-writable; grep ' /scratch ' /proc/mounts; echo kept > /v/file",
            ],
        )
        .success();
    assert!(out.stdout.starts_with("from the host\n"), "{out:?}");
    assert!(!out.stdout.contains("bind-writable"), "{out:?}");
    assert!(out.stdout.contains("size=1024k"), "{out:?}");
    // docker's --mount does not create a missing bind source (-v does).
    let missing = format!("type=bind,source={}/nope,target=/x", host.display());
    env.run(&["--mount", &missing], &["true"])
        .failure(125)
        .error_mentions(&["does not exist"]);
    env.run(&["--mount", "type=bind,target=/x"], &["true"])
        .failure(125)
        .error_mentions(&["source= is missing"]);
    env.run(&["--mount", "type=nfs,target=/x"], &["true"])
        .failure(125)
        .error_mentions(&["unknown type"]);
    // The volume outlived the run.
    let out = env
        .run(&["-v", "vol1:/data"], &["cat", "/data/file"])
        .success();
    assert_eq!(out.stdout, "kept\n");
}

#[test]
fn named_volumes_outlive_containers_until_removed() {
    let d = Detached::with_image("volumes", &env("volumes").image);
    d.slate.pull(&d.image, None);
    d.slate(&["volume", "create", "-l", "app=db", "pgdata"])
        .success();
    d.slate(&["volume", "create", "pgdata"])
        .failure(1)
        .error_mentions(&["already exists"]);
    d.run_d(
        &["--name", "db", "-v", "pgdata:/var/lib/data"],
        &["sh", "-c", "echo 42 > /var/lib/data/v; sleep 1000"],
    );
    // An implicit one, created by its first use.
    d.slate(&["run", "--rm", "-v", "cache:/c", &d.image, "touch", "/c/x"])
        .success();
    let ls = d.slate(&["volume", "ls", "-q"]).success();
    assert_eq!(ls.stdout, "cache\npgdata\n");
    let inspect = d.slate(&["volume", "inspect", "pgdata"]).success().json();
    assert_eq!(inspect[0]["labels"]["app"], "db");
    assert_eq!(inspect[0]["containers"][0], "db");
    d.slate(&["volume", "rm", "pgdata"])
        .failure(1)
        .error_mentions(&["in use by container db"]);
    // `rm` of the container keeps the volume (docker's rm without -v never removes a named
    // one); the data is there for the next container.
    d.slate(&["rm", "-f", "-v", "db"]).success();
    let out = d
        .slate(&["run", "--rm", "-v", "pgdata:/d", &d.image, "cat", "/d/v"])
        .success();
    assert_eq!(out.stdout, "42\n");
    let out = d.slate(&["volume", "prune", "-f"]).success();
    assert!(out.stdout.contains("Deleted volume cache"), "{out:?}");
    assert!(out.stdout.contains("Deleted volume pgdata"), "{out:?}");
    assert_eq!(d.slate(&["volume", "ls", "-q"]).success().stdout, "");
    d.slate(&["volume", "rm", "pgdata"])
        .failure(1)
        .error_mentions(&["no such volume"]);
}

#[test]
fn stop_timeout_is_what_stop_waits_by_default() {
    let d = Detached::with_image("stop-timeout", &env("stop-timeout").image);
    d.slate.pull(&d.image, None);
    d.run_d(
        &["--name", "stubborn", "--stop-timeout", "1"],
        &["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"],
    );
    let t = Instant::now();
    let out = d.slate(&["stop", "stubborn"]).success();
    eprintln!("stop with --stop-timeout 1 took {:?}", t.elapsed());
    // It waited the container's 1 s, not docker's default 10 s; -t still wins.
    assert!(out.stderr.contains("within 1 s"), "{out:?}");
}

#[test]
fn a_new_named_volume_gets_the_images_files_and_nothing_of_the_host() {
    // A marker on the host that a copy escaping the image would bring along.
    let marker_dir =
        std::env::temp_dir().join(format!("slate-e2e-host-marker-{}", std::process::id()));
    std::fs::create_dir_all(&marker_dir).expect("marker dir");
    std::fs::write(marker_dir.join("host-secret"), "host\n").expect("marker");
    let escape = format!("../../../../../..{}", marker_dir.display());
    let extra = vec![
        Entry::dir("etc/app").owner(1000, 1000).mode(0o750),
        Entry::file("etc/app/conf", "from the image\n")
            .owner(1000, 1000)
            .mode(0o640),
        Entry::symlink("etc/app/link", "conf"),
        Entry::dir("etc/app/sub"),
        Entry::file("etc/app/sub/deep", "deep\n"),
        Entry::symlink("escape", escape.as_str()),
        Entry::symlink("magic", "/proc/self/root/tmp"),
    ];
    let env = RunEnv::with_image(
        "volume-copy",
        &run_image::image(run_image::default_config(), vec![extra]),
    );
    let out = env
        .run(
            &["-v", "appconf:/etc/app"],
            &["sh", "-c", "cat /etc/app/conf /etc/app/sub/deep; readlink /etc/app/link; stat -c '%u:%g %a' /etc/app /etc/app/conf"],
        )
        .success();
    assert_eq!(
        out.stdout, "from the image\ndeep\nconf\n1000:1000 750\n1000:1000 640\n",
        "{out:?}"
    );
    // The copy happens once: a later run sees what the container changed.
    env.run(
        &["-v", "appconf:/etc/app"],
        &["sh", "-c", "echo changed > /etc/app/conf"],
    )
    .success();
    let out = env
        .run(&["-v", "appconf:/etc/app"], &["cat", "/etc/app/conf"])
        .success();
    assert_eq!(out.stdout, "changed\n");
    // nocopy: docker's opt-out.
    let out = env
        .run(&["-v", "empty:/etc/app:nocopy"], &["ls", "-A", "/etc/app"])
        .success();
    assert_eq!(out.stdout, "");
    // Symlinks in the image resolve inside it: nothing of the host comes into a volume.
    // (The run itself may then fail: the runtime resolves the mount point inside the
    // container too, where these point at nothing.)
    for (vol, path) in [("esc", "/escape"), ("mag", "/magic")] {
        let out = env
            .slate
            .run(&env.args(&["-v", &format!("{vol}:{path}")], &["ls", "-A", path]));
        assert!(!out.stdout.contains("host-secret"), "{path}: {out:?}");
        let data = env.slate.root().join(format!("volumes/{vol}/_data"));
        assert!(
            !data.join("host-secret").exists(),
            "{path}: the host's file was copied"
        );
    }
    let _ = std::fs::remove_dir_all(&marker_dir);
}
