//! CVE-2019-5736: the process that creates or enters a container must never be a mapping of
//! the host's runtime binary.
//!
//! Every process slate puts into a container starts as a clone or fork of slate itself, and
//! until it execs the app its `/proc/<pid>/exe` is slate's binary. Worse, the container can
//! make the kernel run that binary for it: an image holding `/bin/evil -> /proc/self/exe` (or
//! a script starting `#!/proc/self/exe`) makes the app's own execve load the binary of the
//! process that execs, i.e. slate's. Code of the image then runs inside slate's image
//! (`ld.so.preload`) and can keep a handle to the file and reopen it for writing through
//! `/proc/self/fd/N` once no process executes it any more (after an upgrade replaced it): the
//! next `slate` run as root would then run the attacker's code on the host.
//!
//! The defence, as runc (`libcontainer/exeseal`) and crun (`cloned_binary.c`) do it: before
//! it does any container work, slate re-executes itself from a copy that cannot be written,
//! so whatever the container reaches through `/proc/*/exe` is that copy. [`ensure`] does it:
//! 1. a **read-only overlayfs** view of the binary's directory, made with `fsopen`/`fsmount`
//!    and never attached to any mount tree: no copy, the page cache is shared with the real
//!    file (no memory cost per supervisor, which matters with many detached containers on a
//!    1 GB board); an overlay without an upper layer refuses every write with EROFS and there
//!    is no mount to remount read-write;
//! 2. where that is not possible (no overlayfs, a kernel before 5.2, a binary on a filesystem
//!    overlayfs cannot use), a **sealed memfd** copy (`F_SEAL_WRITE|SHRINK|GROW|SEAL`): writes
//!    fail with EPERM, at the cost of the binary's size in RAM per slate process.
//!
//! Guarantees: after [`ensure`] returned `Ok`, `/proc/self/exe` of this process (and of every
//! clone, fork and `/proc/self/exe` re-exec of it) is a read-only overlay file or a fully
//! sealed memfd. [`ensure`] never loops: the re-executed process finds itself sealed, or fails.
//! The caller must call it before it starts threads it cares about (exec replaces them).

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

/// Set in the environment of the re-executed process, so that a copy that still does not
/// look sealed fails instead of re-executing forever. Removed again at once.
const REEXEC_MARKER: &str = "_SLATE_SEALED_REEXEC";

/// overlayfs' statfs magic (linux/magic.h).
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// Every seal: no write, no size change, and no removal of the seals themselves.
fn all_seals() -> SealFlags {
    SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE
}

/// Errors of sealing the runtime binary.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot open slate's own binary (/proc/self/exe): {0}")]
    OpenSelf(#[source] std::io::Error),
    #[error("cannot make a sealed copy of slate's binary: {0}")]
    Copy(#[source] std::io::Error),
    #[error("cannot re-execute slate from its sealed copy: {0}")]
    Exec(#[source] Errno),
    #[error(
        "slate re-executed itself from a sealed copy but /proc/self/exe is still writable; \
         refusing to start a container (CVE-2019-5736)"
    )]
    StillUnsealed,
}

/// How the running binary is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// A read-only overlayfs view of the binary.
    Overlay,
    /// A sealed memfd copy.
    Memfd,
}

/// Whether `/proc/self/exe` is a copy the container cannot write: `None` when it is the
/// plain host file.
pub fn current() -> Result<Option<Sealed>, SealError> {
    let exe = std::fs::File::open("/proc/self/exe").map_err(SealError::OpenSelf)?;
    Ok(classify(exe.as_fd()))
}

fn classify(fd: std::os::fd::BorrowedFd<'_>) -> Option<Sealed> {
    if let Ok(seals) = rustix::fs::fcntl_get_seals(fd) {
        if seals.contains(all_seals()) {
            return Some(Sealed::Memfd);
        }
        // A memfd with seals missing can still be written: not sealed.
        return None;
    }
    let statfs = rustix::fs::fstatfs(fd).ok()?;
    let vfs = rustix::fs::fstatvfs(fd).ok()?;
    let overlay = statfs.f_type as i64 == OVERLAYFS_SUPER_MAGIC;
    if overlay && vfs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        Some(Sealed::Overlay)
    } else {
        None
    }
}

/// Makes sure this process runs from a sealed copy of its binary: returns at once when it
/// already does, else re-executes itself (same arguments, same environment) from one and
/// does not return. `scratch` is a directory slate owns on the host (its state dir): an empty
/// directory is kept there as the overlay's second, empty layer.
pub fn ensure(scratch: &Path) -> Result<Sealed, SealError> {
    let reexeced = std::env::var_os(REEXEC_MARKER).is_some();
    if reexeced {
        // Not for the app's environment or a child slate's: it was for this check only.
        // (Called first thing in main, before any thread could read the environment.)
        std::env::remove_var(REEXEC_MARKER);
    }
    if let Some(s) = current()? {
        return Ok(s);
    }
    if reexeced {
        return Err(SealError::StillUnsealed);
    }
    let sealed = match sealed_overlay(scratch) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(error = %e, "no read-only overlay of slate's binary; using a sealed memfd copy");
            sealed_memfd()?
        }
    };
    Err(reexec(&sealed))
}

fn reexec(exe: &OwnedFd) -> SealError {
    let args: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.into_vec()).ok())
        .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv: OsString = k;
            kv.push("=");
            kv.push(v);
            CString::new(kv.into_vec()).ok()
        })
        .collect();
    env.push(CString::new(format!("{REEXEC_MARKER}=1")).unwrap_or_default());
    let e = nix::unistd::execveat(
        Some(exe.as_raw_fd()),
        c"",
        &args,
        &env,
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    );
    match e {
        Ok(never) => match never {},
        Err(errno) => SealError::Exec(errno),
    }
}

/// Escapes a path for overlayfs' `lowerdir` list, where `:` separates layers.
fn escape_lowerdir(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        if b == b'\\' || b == b':' || b == b',' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// The binary, opened through a detached read-only overlay of its own directory.
fn sealed_overlay(scratch: &Path) -> std::io::Result<OwnedFd> {
    let exe: PathBuf = std::fs::read_link("/proc/self/exe")?;
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        return Err(std::io::Error::other("the binary's path has no directory"));
    };
    // A file replaced after we started reads "(deleted)": its directory no longer holds it.
    if !exe.is_absolute() || name.as_bytes().ends_with(b" (deleted)") {
        return Err(std::io::Error::other(
            "the binary is no longer in its directory",
        ));
    }
    // overlayfs needs two layers to run without an upper one; the second is an empty
    // directory of ours, below the binary's, so it can mask nothing of it.
    let empty = scratch.join(".seal-empty");
    match std::fs::create_dir_all(&empty) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let mut lower = escape_lowerdir(dir);
    lower.push(b':');
    lower.extend(escape_lowerdir(&empty));
    let lower = CString::new(lower).map_err(std::io::Error::other)?;

    let ctx = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    rustix::mount::fsconfig_set_string(&ctx, "lowerdir", lower.as_c_str())?;
    // Not needed, and the kernel may log about it when the layers are on two filesystems.
    let _ = rustix::mount::fsconfig_set_string(&ctx, "xino", "off");
    rustix::mount::fsconfig_create(&ctx)?;
    let mnt = rustix::mount::fsmount(
        &ctx,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )?;
    let fd = rustix::fs::openat(
        &mnt,
        name,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    // The detached mount lives as long as a file of it is open; check it is what we think.
    let check = rustix::fs::openat(
        &mnt,
        name,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    if classify(check.as_fd()) != Some(Sealed::Overlay) {
        return Err(std::io::Error::other("the overlay is not read-only"));
    }
    Ok(fd)
}

/// A copy of the binary in a memfd, with every seal applied.
fn sealed_memfd() -> Result<OwnedFd, SealError> {
    let mut src = std::fs::File::open("/proc/self/exe").map_err(SealError::OpenSelf)?;
    let memfd = rustix::fs::memfd_create(
        "slate-sealed",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| SealError::Copy(e.into()))?;
    let mut dst = std::fs::File::from(memfd);
    std::io::copy(&mut src, &mut dst).map_err(SealError::Copy)?;
    let memfd = OwnedFd::from(dst);
    rustix::fs::fcntl_add_seals(&memfd, all_seals()).map_err(|e| SealError::Copy(e.into()))?;
    Ok(memfd)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_escapes_separators() {
        assert_eq!(escape_lowerdir(Path::new("/a:b\\c,d")), b"/a\\:b\\\\c\\,d");
    }

    #[test]
    fn a_plain_file_is_not_sealed() {
        let f = tempfile::tempfile().unwrap();
        assert_eq!(classify(f.as_fd()), None);
    }

    #[test]
    fn a_memfd_needs_every_seal() {
        let fd = rustix::fs::memfd_create("t", MemfdFlags::ALLOW_SEALING).unwrap();
        assert_eq!(classify(fd.as_fd()), None);
        rustix::fs::fcntl_add_seals(&fd, SealFlags::WRITE | SealFlags::SHRINK).unwrap();
        assert_eq!(classify(fd.as_fd()), None);
        rustix::fs::fcntl_add_seals(&fd, all_seals()).unwrap();
        assert_eq!(classify(fd.as_fd()), Some(Sealed::Memfd));
    }

    #[test]
    fn the_memfd_copy_refuses_writes() {
        let fd = sealed_memfd().unwrap();
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let e = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"));
        assert!(e.is_err(), "a sealed memfd accepted a write");
    }

    #[test]
    fn the_overlay_view_refuses_writes() {
        let scratch = tempfile::tempdir().unwrap();
        // As root (fsopen needs CAP_SYS_ADMIN), like every test of the runtime.
        let fd = sealed_overlay(scratch.path()).unwrap();
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let e = std::fs::OpenOptions::new().write(true).open(&path);
        assert_eq!(
            e.err().and_then(|e| e.raw_os_error()),
            Some(libc::EROFS),
            "the overlay view is writable"
        );
    }
}
