//! Device access from inside the container: docker's allowlist (issue 11: a node made for the
//! host's disk with CAP_MKNOD must not open) and `--device`, which adds a node and grants
//! exactly the access it names. Here on this host's cgroup setup; the pure v2 path (the eBPF
//! filter) runs the same checks in the arm64 VM (`cross/vm/test.sh`).

use std::os::unix::fs::MetadataExt;

use crate::harness::run_image::{self, RunEnv};

/// Opens `path` for reading (`r`) or writing (`w`) in the container's shell and prints
/// `<path> <mode>=open` or `<path> <mode>=denied: <error>`.
fn try_open(path: &str, mode: &str) -> String {
    let redir = if mode == "r" { "<" } else { ">" };
    format!(
        "if err=$( (exec 3{redir}{path}) 2>&1); then echo '{path} {mode}=open'; \
         else echo \"{path} {mode}=denied: $err\"; fi; "
    )
}

#[test]
fn issue_11_mknod_of_the_host_disk_does_not_open() {
    let dev = std::fs::metadata("/").expect("stat /").dev();
    let (maj, min) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let env = RunEnv::new("dev-issue11", run_image::default_config());
    let script = format!(
        "busybox mknod /tmp/d b {maj} {min} && echo mknod=ok; {}{}",
        try_open("/tmp/d", "r"),
        try_open("/dev/null", "w"),
    );
    let out = env.run(&["-u", "0"], &["sh", "-c", &script]).success();
    assert!(out.stdout.contains("mknod=ok"), "mknod is allowed: {out:?}");
    assert!(
        out.stdout.contains("/tmp/d r=denied") && out.stdout.contains("not permitted"),
        "the disk's node must not open: {out:?}"
    );
    assert!(out.stdout.contains("/dev/null w=open"), "{out:?}");
}

#[test]
fn device_flag_adds_the_node_and_grants_what_it_names() {
    let env = RunEnv::new("dev-flag", run_image::default_config());
    // /dev/null under another name: the node exists, with the host's numbers, and works
    let script = "stat -c '%F %t:%T' /dev/mynull; echo hi > /dev/mynull && echo write=ok";
    let out = env
        .run(
            &["--device", "/dev/null:/dev/mynull:rw"],
            &["sh", "-c", script],
        )
        .success();
    assert!(out.stdout.contains("character special file 1:3"), "{out:?}");
    assert!(out.stdout.contains("write=ok"), "{out:?}");

    // /dev/loop-control (c 10:237; opening it does nothing) is not in docker's list:
    // denied without --device, readable with `:r`, and still not writable
    let mknod = "busybox mknod /tmp/lc c 10 237; ";
    let out = env
        .run(
            &["-u", "0"],
            &["sh", "-c", &format!("{mknod}{}", try_open("/tmp/lc", "r"))],
        )
        .success();
    assert!(out.stdout.contains("/tmp/lc r=denied"), "{out:?}");
    let script = format!(
        "{}{}",
        try_open("/dev/loop-control", "r"),
        try_open("/dev/loop-control", "w")
    );
    let out = env
        .run(
            &[
                "-u",
                "0",
                "--device",
                "/dev/loop-control:/dev/loop-control:r",
            ],
            &["sh", "-c", &script],
        )
        .success();
    assert!(out.stdout.contains("/dev/loop-control r=open"), "{out:?}");
    assert!(out.stdout.contains("/dev/loop-control w=denied"), "{out:?}");
    env.assert_clean(&"after the --device runs");
}

#[test]
fn device_flag_errors_name_the_flag() {
    let env = RunEnv::new("dev-err", run_image::default_config());
    let out = env
        .run(&["--device", "/dev/slate-no-such-device"], &["true"])
        .failure(125);
    let line = out.error_line();
    assert!(
        line.contains("--device \"/dev/slate-no-such-device\": cannot use host path")
            && line.contains("No such file or directory"),
        "{line}"
    );
    let out = env
        .run(&["--device", "/etc/hostname"], &["true"])
        .failure(125);
    assert!(
        out.error_line()
            .contains("is not a character or block device"),
        "{out:?}"
    );
}
