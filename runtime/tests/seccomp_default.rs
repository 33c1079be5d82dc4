//! The default seccomp profile installed for real: a fresh process (this test binary run
//! again, so no thread of the multithreaded test harness is forked) sets no_new_privs,
//! installs the compiled default program and checks what it may and may not do.

use std::process::Command;

use slate_runtime::seccomp::{compile, docker_default, Program};

const CHILD_ENV: &str = "SLATE_SECCOMP_TEST_CHILD";

#[test]
fn default_profile_blocks_keyctl_and_user_namespaces() {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args([
            "--exact",
            "child_under_default_profile",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("seccomp-child-ok"),
        "child did not run its checks:\n{stdout}"
    );
}

/// Runs only in the re-executed child; a no-op in the normal test run.
#[test]
fn child_under_default_profile() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // compiled once, cached as bytes, read back: the path the CLI takes
    let program = compile(&docker_default().expect("profile")).expect("compile");
    let program = Program::from_bytes(&program.to_bytes()).expect("from cache");

    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "no_new_privs: {}", std::io::Error::last_os_error());
    program.install().expect("install");

    // the filter is per thread: look at this one
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");

    // KEYCTL_GET_KEYRING_ID of the session keyring
    // SAFETY: keyctl with integer arguments only; it is refused before the kernel reads any.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, 0, -3i64, 0, 0, 0) };
    let err = std::io::Error::last_os_error();
    assert_eq!((rc, err.raw_os_error()), (-1, Some(libc::EPERM)), "keyctl");

    // SAFETY: unshare takes a flag word only.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    let err = std::io::Error::last_os_error();
    assert_eq!(
        (rc, err.raw_os_error()),
        (-1, Some(libc::EPERM)),
        "unshare(CLONE_NEWUSER)"
    );

    // SAFETY: socket takes integers only; AF_VSOCK is refused by the filter.
    let rc = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
    let err = std::io::Error::last_os_error();
    assert_eq!(
        (rc, err.raw_os_error()),
        (-1, Some(libc::EPERM)),
        "socket(AF_VSOCK)"
    );

    // ordinary work: files, a socket, a thread, and a child process (libc's clone3 gets
    // ENOSYS and falls back to the checked clone); the child inherits the filter
    let text = std::fs::read_to_string("/proc/self/cmdline").expect("read a file");
    assert!(!text.is_empty());
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("f"), b"x").expect("write a file");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    drop(sock);
    let t = std::thread::spawn(|| 21 * 2).join().expect("thread");
    assert_eq!(t, 42);
    let out = Command::new("sh")
        .args(["-c", "grep '^Seccomp:' /proc/self/status"])
        .output()
        .expect("spawn a child process");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Seccomp:\t2");

    println!("seccomp-child-ok");
}
