//! `slate run`'s isolation flags, read back from inside the container: capabilities,
//! seccomp, no_new_privs, `--privileged`, `--read-only`, `--network none`, `--ulimit`.

use std::path::Path;

use crate::harness::run_image::{self, RunEnv};
use crate::harness::slate::Output;
use crate::harness::tar_writer::Entry;

/// A field of `/proc/self/status` as printed by `grep -E '^(Cap|Seccomp|NoNewPrivs)'`.
fn status_field(out: &Output, key: &str) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in the container's status: {out:?}"))
}

fn cap_eff(out: &Output) -> u64 {
    u64::from_str_radix(&status_field(out, "CapEff"), 16).expect("CapEff is hex")
}

const STATUS: &[&str] = &[
    "grep",
    "-E",
    "^(Cap|Seccomp|NoNewPrivs)",
    "/proc/self/status",
];

/// docker's default capability set (CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID
/// SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP).
const DOCKER_DEFAULT_CAPS: u64 = 0xa80425fb;
const CAP_CHOWN: u64 = 1 << 0;
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_SYS_ADMIN: u64 = 1 << 21;

/// This test process's own capability bounding set: all that `--privileged` can give.
fn own_bounding_set() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let v = s
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd");
    u64::from_str_radix(v.trim(), 16).expect("hex")
}

#[test]
fn capabilities_default_add_drop_and_non_root() {
    let env = RunEnv::new("caps", run_image::default_config());
    let out = env.run(&[], STATUS).success();
    assert_eq!(
        cap_eff(&out),
        DOCKER_DEFAULT_CAPS,
        "docker's default set: {out:?}"
    );
    assert_eq!(status_field(&out, "CapBnd"), status_field(&out, "CapEff"));

    let out = env.run(&["--cap-add", "NET_ADMIN"], STATUS).success();
    assert_eq!(
        cap_eff(&out),
        DOCKER_DEFAULT_CAPS | CAP_NET_ADMIN,
        "{out:?}"
    );
    let out = env.run(&["--cap-add", "cap_sys_admin"], STATUS).success();
    assert_eq!(
        cap_eff(&out),
        DOCKER_DEFAULT_CAPS | CAP_SYS_ADMIN,
        "{out:?}"
    );
    let out = env.run(&["--cap-drop", "CHOWN"], STATUS).success();
    assert_eq!(cap_eff(&out), DOCKER_DEFAULT_CAPS & !CAP_CHOWN, "{out:?}");
    let out = env
        .run(&["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"], STATUS)
        .success();
    assert_eq!(cap_eff(&out), CAP_NET_ADMIN, "{out:?}");
    let out = env.run(&["--cap-drop", "ALL"], STATUS).success();
    assert_eq!(cap_eff(&out), 0, "{out:?}");
    // The capabilities really are gone: root cannot write into a directory it does not own
    // without DAC_OVERRIDE (and FOWNER), but can with the default set.
    let write = [
        "sh",
        "-c",
        "if echo x > /home/app/f; then echo wrote; else echo denied; fi",
    ];
    let out = env
        .run(
            &["--cap-drop", "DAC_OVERRIDE", "--cap-drop", "FOWNER"],
            &write,
        )
        .success();
    assert!(out.stdout.contains("denied"), "{out:?}");
    let out = env.run(&[], &write).success();
    assert!(out.stdout.contains("wrote"), "{out:?}");
    // A non-root user has no effective capabilities (docker's behaviour).
    let out = env.run(&["-u", "1000"], STATUS).success();
    assert_eq!(cap_eff(&out), 0, "{out:?}");

    let out = env.run(&["--cap-add", "NOT_A_CAP"], STATUS).failure(125);
    out.error_mentions(&["NOT_A_CAP"]);
}

#[test]
fn privileged_gives_every_capability_slate_holds_and_no_seccomp() {
    let env = RunEnv::new("privileged", run_image::default_config());
    let out = env.run(&["--privileged"], STATUS).success();
    assert_eq!(cap_eff(&out), own_bounding_set(), "{out:?}");
    assert_eq!(status_field(&out, "Seccomp"), "0", "{out:?}");
}

#[test]
fn seccomp_default_and_unconfined() {
    let env = RunEnv::new("seccomp", run_image::default_config());
    let out = env.run(&[], STATUS).success();
    assert_eq!(
        status_field(&out, "Seccomp"),
        "2",
        "filter mode by default: {out:?}"
    );
    let out = env
        .run(&["--security-opt", "seccomp=unconfined"], STATUS)
        .success();
    assert_eq!(status_field(&out, "Seccomp"), "0", "{out:?}");
    let out = env
        .run(
            &["--security-opt", "seccomp=bogus-file-that-is-not-there"],
            STATUS,
        )
        .failure(125);
    out.error_mentions(&["bogus-file-that-is-not-there"]);
}

#[test]
fn no_new_privileges() {
    let env = RunEnv::new("nnp", run_image::default_config());
    let out = env
        .run(&["--security-opt", "no-new-privileges"], STATUS)
        .success();
    assert_eq!(status_field(&out, "NoNewPrivs"), "1", "{out:?}");
    let out = env
        .run(&["--security-opt", "no-new-privileges=true"], STATUS)
        .success();
    assert_eq!(status_field(&out, "NoNewPrivs"), "1", "{out:?}");
    // Off by default, as in docker ([security] no_new_privileges turns it on: run_docker).
    let out = env.run(&[], STATUS).success();
    assert_eq!(status_field(&out, "NoNewPrivs"), "0", "{out:?}");
    let out = env
        .run(&["--security-opt", "no-new-privileges=false"], STATUS)
        .success();
    assert_eq!(status_field(&out, "NoNewPrivs"), "0", "{out:?}");
}

#[test]
fn read_only_blocks_writes_outside_tmpfs() {
    let env = RunEnv::new("read-only", run_image::default_config());
    let script = "for f in /x /etc/x /tmp/x /srv/data.txt /dev/shm/x /run/x; do \
                  if echo w > $f 2>/dev/null; then echo $f=writable; else echo $f=blocked; fi; done";
    let out = env
        .run(&["--read-only", "--tmpfs", "/run"], &["sh", "-c", script])
        .success();
    for blocked in ["/x", "/etc/x", "/tmp/x", "/srv/data.txt"] {
        assert!(
            out.stdout.contains(&format!("{blocked}=blocked")),
            "{blocked} must not be writable with --read-only: {out:?}"
        );
    }
    for writable in ["/dev/shm/x", "/run/x"] {
        assert!(
            out.stdout.contains(&format!("{writable}=writable")),
            "{writable} stays writable: {out:?}"
        );
    }
    // Without --read-only the same writes succeed (and vanish with the run); /run is not
    // in the image, so it is left out.
    let script = script.replace(" /run/x", "");
    let out = env.run(&[], &["sh", "-c", &script]).success();
    assert!(!out.stdout.contains("=blocked"), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 5, "{out:?}");
}

#[test]
fn network_none_shows_only_lo() {
    let env = RunEnv::new("net-none", run_image::default_config());
    let out = env
        .run(&["--network", "none"], &["ls", "/sys/class/net"])
        .success();
    assert_eq!(out.stdout, "lo\n", "{out:?}");
    // The host's network by default: more than lo (the test host has an interface).
    let out = env.run(&[], &["ls", "/sys/class/net"]).success();
    let host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for i in &host {
        assert!(
            out.stdout.lines().any(|l| l == i),
            "host interface {i} missing: {out:?}"
        );
    }
    // (A CNI network is never started here: that would change the host's network;
    // tests/e2e/network.rs runs them in namespaces of its own.)
    env.run(&["--network", "a/b"], &["true"]).failure(125);
}

#[test]
fn network_none_brings_lo_up() {
    let env = RunEnv::new("lo-up", run_image::default_config());
    let out = env
        .run(&["--network", "none"], &["cat", "/sys/class/net/lo/flags"])
        .success();
    let flags = u32::from_str_radix(out.stdout.trim().trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("lo flags: {out:?}"));
    assert_eq!(flags & 1, 1, "IFF_UP on lo: {out:?}");
}

#[test]
fn ulimit_sets_the_limits() {
    let env = RunEnv::new("ulimit", run_image::default_config());
    let out = env
        .run(
            &["--ulimit", "nofile=512:1024", "--ulimit", "nproc=100"],
            &["cat", "/proc/self/limits"],
        )
        .success();
    let row = |name: &str| -> Vec<String> {
        out.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/self/limits: {out:?}"))[name.len()..]
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(&row("Max open files")[..2], ["512", "1024"]);
    assert_eq!(&row("Max processes")[..2], ["100", "100"]);
    env.run(&["--ulimit", "nofile=lots"], &["true"])
        .failure(125);
}

/// CVE-2019-5736: with `--init`, PID 1 is a fork of slate that never execs, so its
/// `/proc/1/exe` is slate's host binary. The container must not be able to open it (a
/// root process that could would overwrite the host's slate).
#[test]
fn init_does_not_expose_the_slate_binary_to_the_container() {
    let env = RunEnv::new("init-exe", run_image::default_config());
    let out = env
        .run(
            &["--init"],
            &[
                "sh",
                "-c",
                "if cat /proc/1/exe >/dev/null 2>&1; then echo exe=open; else echo exe=denied; fi",
            ],
        )
        .success();
    assert!(out.stdout.contains("exe=denied"), "{out:?}");
}

/// An i386 program for [`issue11_seccomp_i386_binary_runs`]: glibc's static start-up (brk,
/// set_thread_area, uname...), then the syscalls an ordinary program makes, each through its
/// i386 number, and one the default profile denies (keyctl), so the output shows the process
/// was filtered, not left alone.
const I386_SRC: &str = r#"
/* Only headers that need no kernel headers: gcc-multilib brings none for i386. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int socket(int domain, int type, int protocol);
int *__errno_location(void);
#define I386_NR_KEYCTL 288
#define AF_INET_ 2
#define SOCK_DGRAM_ 2
#define EPERM_ 1

int main(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 2;
    char seccomp[64] = "?";
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 3;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Seccomp:", 8) == 0) {
            line[strcspn(line, "\n")] = 0;
            snprintf(seccomp, sizeof seccomp, "%s", line + 8 + strspn(line + 8, " \t"));
        }
    fclose(f);
    int s = socket(AF_INET_, SOCK_DGRAM_, 0);
    if (s < 0) return 4;
    close(s);
    long k = syscall(I386_NR_KEYCTL, 0, -3L, 0, 0, 0);
    printf("i386-ok pid=%d seccomp=%s keyctl=%s\n", (int)getpid(), seccomp,
           k == -1 && *__errno_location() == EPERM_ ? "EPERM" : "allowed");
    return 0;
}
"#;

/// [`I386_SRC`] built as a static i386 binary (`gcc -m32`, from gcc-multilib).
fn i386_binary() -> Vec<u8> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let src = dir.join(format!("e2e-i386-{}.c", std::process::id()));
    let out = dir.join(format!("e2e-i386-{}", std::process::id()));
    std::fs::write(&src, I386_SRC).expect("writing the i386 source");
    let st = std::process::Command::new("cc")
        .args(["-m32", "-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("running cc");
    let _ = std::fs::remove_file(&src);
    assert!(
        st.success(),
        "building the i386 binary failed (install gcc-multilib, see tests/deps)"
    );
    let bytes = std::fs::read(&out).expect("reading the i386 binary");
    let _ = std::fs::remove_file(&out);
    // ELFCLASS32, EM_386: what the test is about
    assert_eq!((bytes[4], bytes[18]), (1, 3), "not an i386 ELF");
    bytes
}

/// Issue 11: the default seccomp filter covered only the build's own architecture, so a
/// process of the kernel's compat ABI (here i386 on x86_64; on a Pi, arm64 images under a
/// 32-bit slate) got EPERM from every syscall and crashed (exit 139). It must run, and
/// still be filtered.
#[test]
fn issue11_seccomp_i386_binary_runs() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipped: i386 binaries run on x86_64 kernels only");
        return;
    }
    let img = run_image::image(
        run_image::default_config(),
        vec![vec![Entry::file("bin/i386", i386_binary()).mode(0o755)]],
    );
    let env = RunEnv::with_image("i386", &img);
    let out = env.run(&[], &["/bin/i386"]).success();
    assert!(out.stdout.contains("i386-ok"), "{out:?}");
    assert!(out.stdout.contains("seccomp=2"), "filtered: {out:?}");
    assert!(
        out.stdout.contains("keyctl=EPERM"),
        "i386 syscalls are checked, not let through: {out:?}"
    );
    let out = env
        .run(&["--security-opt", "seccomp=unconfined"], &["/bin/i386"])
        .success();
    assert!(out.stdout.contains("seccomp=0"), "{out:?}");
}
