//! Probes of what this kernel lets slate do, for `slate doctor`. Each does the real thing on
//! a small scale where it can disturb nothing: an overlay with an upper directory on the
//! store's file system that is never attached to a mount tree, a user namespace and a seccomp
//! filter each in a short-lived child process that exits at once. None of them guesses from
//! version numbers or config files.
//!
//! The child-process probes fork; the children only make system calls (no allocation, no
//! lock), so they are sound even when the caller has other threads.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

use crate::seccomp::{Program, SeccompError};

/// Why a probe could not be run, or what the kernel refused.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot prepare {path}: {source}")]
    Scratch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a step of the overlay; `detail` is what overlayfs said about it
    /// (its messages on the filesystem context), when it said something.
    #[error("overlayfs refused {step}: {source}{}", detail_suffix(.detail))]
    Overlay {
        step: &'static str,
        source: std::io::Error,
        detail: String,
    },
    #[error("cannot start a probe process: {0}")]
    Fork(Errno),
    #[error("the kernel refused {what}: {errno}")]
    Refused { what: &'static str, errno: Errno },
    #[error("the probe process for {what} was killed by signal {signal}")]
    Killed { what: &'static str, signal: i32 },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

/// How the overlay probe reached overlayfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayApi {
    /// `fsopen`/`fsmount` (Linux 5.2+): a detached mount no one else sees.
    Fsopen,
    /// `mount(2)` on a directory of the probe's own, unmounted at once (older kernels).
    Mount,
}

/// Mounts a tiny overlay whose upper and work directories are in a fresh directory below
/// `parent` (the store's `tmp/`, where each run's upper directory would be on the same file
/// system), writes through it (a copy-up and a new file), checks both landed in the upper
/// directory, and removes everything. This is what every run does with its fresh rootfs; an
/// upper directory on FAT, NFS or another overlay fails here as it would there.
pub fn overlay(parent: &Path) -> Result<OverlayApi, ProbeError> {
    // `<what>-<pid>-...`: the store's debris sweep keeps what a live process named this way
    // is working on.
    let dir = parent.join(format!("doctor-{}-overlay", std::process::id()));
    let scratch = |source| ProbeError::Scratch {
        path: dir.clone(),
        source,
    };
    // A leftover of a probe killed midway (same pid after a reboot) is ours to replace.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(scratch)?;
    }
    let result = (|| {
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir_all(dir.join(d)).map_err(scratch)?;
        }
        std::fs::write(dir.join("lower/probe"), b"lower\n").map_err(scratch)?;
        let api = match overlay_fsopen(&dir) {
            Err(ProbeError::Overlay { source, .. })
                if source.raw_os_error() == Some(libc::ENOSYS) =>
            {
                overlay_mount(&dir)?;
                OverlayApi::Mount
            }
            other => {
                other?;
                OverlayApi::Fsopen
            }
        };
        for (file, what) in [
            ("upper/probe", "a copied-up file"),
            ("upper/new", "a new file"),
        ] {
            if !dir.join(file).is_file() {
                return Err(ProbeError::Overlay {
                    step: "writing",
                    source: std::io::Error::other(format!("{what} is not in the upper directory")),
                    detail: String::new(),
                });
            }
        }
        Ok(api)
    })();
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(path = %dir.display(), error = %e, "cannot remove the overlay probe's directory");
    }
    result
}

fn overlay_fsopen(dir: &Path) -> Result<(), ProbeError> {
    let fail = |step, source: rustix::io::Errno, ctx: Option<&rustix::fd::OwnedFd>| {
        let mut detail = ctx.map(context_messages).unwrap_or_default();
        if detail.is_empty() && source == rustix::io::Errno::INVAL {
            // An overlayfs older than the new mount API logs its reasons instead of queueing
            // them on the context.
            detail = "the kernel log says why: `dmesg | grep overlayfs`".to_owned();
        }
        ProbeError::Overlay {
            step,
            source: source.into(),
            detail,
        }
    };
    let ctx = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| fail("fsopen(\"overlay\")", e, None))?;
    for (key, sub) in [
        ("lowerdir", "lower"),
        ("upperdir", "upper"),
        ("workdir", "work"),
    ] {
        rustix::mount::fsconfig_set_string(&ctx, key, dir.join(sub).as_path())
            .map_err(|e| fail(key, e, Some(&ctx)))?;
    }
    // Where overlayfs checks the upper file system (xattrs, d_type, tmpfile, rename flags).
    rustix::mount::fsconfig_create(&ctx)
        .map_err(|e| fail("creating the overlay", e, Some(&ctx)))?;
    let mnt = rustix::mount::fsmount(
        &ctx,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )
    .map_err(|e| fail("fsmount", e, Some(&ctx)))?;
    write_through(mnt.as_fd()).map_err(|source| ProbeError::Overlay {
        step: "writing",
        source,
        detail: context_messages(&ctx),
    })
    // The mount is detached: closing its descriptor frees it.
}

/// The messages a filesystem context collected ("e overlayfs: ..."), joined.
fn context_messages(ctx: &rustix::fd::OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    // Each read returns one message; ENODATA once none is left.
    while let Ok(n) = rustix::io::read(ctx, &mut buf[..]) {
        if n == 0 || out.len() > 8 {
            break;
        }
        let m = String::from_utf8_lossy(&buf[..n]);
        out.push(m.get(2..).unwrap_or(&m).trim().to_owned());
    }
    out.join("; ")
}

/// Appends to the lower file (a copy-up) and creates a new one through the overlay.
fn write_through(mnt: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let up = rustix::fs::openat(
        mnt,
        "probe",
        OFlags::WRONLY | OFlags::APPEND | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    std::fs::File::from(up).write_all(b"upper\n")?;
    let new = rustix::fs::openat(
        mnt,
        "new",
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    std::fs::File::from(new).write_all(b"new\n")?;
    Ok(())
}

/// Kernels before 5.2: a plain mount on the probe's own directory, lazily unmounted at once.
fn overlay_mount(dir: &Path) -> Result<(), ProbeError> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let merged = dir.join("merged");
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.join("lower").display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some(data.as_str()),
    )
    .map_err(|e| ProbeError::Overlay {
        step: "mount",
        source: e.into(),
        detail: String::new(),
    })?;
    let written = std::fs::File::open(&merged).and_then(|d| write_through(d.as_fd()));
    if let Err(e) = umount2(&merged, MntFlags::MNT_DETACH) {
        tracing::warn!(path = %merged.display(), error = %e, "cannot unmount the overlay probe");
    }
    written.map_err(|source| ProbeError::Overlay {
        step: "writing",
        source,
        detail: String::new(),
    })
}

/// Creates a user namespace in a child process (`unshare(CLONE_NEWUSER)`), which exits.
pub fn user_namespace() -> Result<(), ProbeError> {
    in_child("a user namespace", || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
    })
}

/// Installs `program` in a child process (with no_new_privs, as a container gets it when
/// asked, so that this works without CAP_SYS_ADMIN too), which then exits: the kernel's own
/// verdict on filter mode and on this very program (its size, its architectures).
pub fn seccomp_filter(program: &Program) -> Result<(), ProbeError> {
    in_child("slate's seccomp filter", || {
        nix::sys::prctl::set_no_new_privs()?;
        program.install().map_err(|e| match e {
            SeccompError::Install(errno) | SeccompError::NeedsNoNewPrivs(errno) => errno,
            _ => Errno::EINVAL,
        })
    })
}

/// Runs `f` in a forked child and returns its result: the child exits with 0 or with the
/// errno `f` failed with.
fn in_child(what: &'static str, f: impl FnOnce() -> Result<(), Errno>) -> Result<(), ProbeError> {
    // SAFETY: the child runs `f`, which callers in this module keep to system calls (no
    // allocation, no lock another thread could hold), and leaves with _exit: nothing of the
    // parent's state is used or torn down in the child.
    match unsafe { nix::unistd::fork() }.map_err(ProbeError::Fork)? {
        ForkResult::Child => {
            let code = match f() {
                Ok(()) => 0,
                Err(e) => (e as i32).clamp(1, 255),
            };
            crate::syscall::exit_now(code)
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
                Ok(WaitStatus::Exited(_, code)) => {
                    return Err(ProbeError::Refused {
                        what,
                        errno: Errno::from_raw(code),
                    })
                }
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    return Err(ProbeError::Killed {
                        what,
                        signal: signal as i32,
                    })
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(ProbeError::Fork(e)),
            }
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // As root, like every test of the runtime.
    #[test]
    fn an_overlay_on_a_temp_dir_works_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        overlay(tmp.path()).expect("overlay on the test's temp dir");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    /// An upper directory on another overlay is refused by overlayfs, as every run's would be.
    #[test]
    fn an_overlay_on_an_overlay_is_refused_with_the_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        for d in ["l", "u", "w", "m"] {
            std::fs::create_dir(t.join(d)).unwrap();
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            t.join("l").display(),
            t.join("u").display(),
            t.join("w").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &t.join("m"),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .unwrap();
        let result = overlay(&t.join("m"));
        let leftovers = std::fs::read_dir(t.join("m")).unwrap().count();
        nix::mount::umount2(&t.join("m"), nix::mount::MntFlags::MNT_DETACH).unwrap();
        let err = result.expect_err("an upper dir on overlayfs must be refused");
        let msg = err.to_string();
        // Newer kernels refuse the upperdir option itself, older ones the creation.
        assert!(
            msg.contains("refused upperdir") || msg.contains("refused creating the overlay"),
            "{msg}"
        );
        assert_eq!(leftovers, 0, "the probe left files behind");
    }

    #[test]
    fn a_user_namespace_can_be_created() {
        user_namespace().expect("user namespaces on this host");
    }

    #[test]
    fn the_default_seccomp_profile_installs() {
        let profile = crate::seccomp::docker_default().unwrap();
        let program = crate::seccomp::compile(&profile).unwrap();
        seccomp_filter(&program).expect("the default filter installs");
    }
}
