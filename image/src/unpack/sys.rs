//! The few raw calls the unpacker needs that `nix` 0.29 only offers with raw descriptors or not at
//! all: descriptor-owning `openat`/`openat2`, and `fsetxattr`/`lsetxattr`. Everything else goes
//! through `nix` directly. Every descriptor this module returns is `O_CLOEXEC`, so a container
//! started by another thread of slate while a layer unpacks never inherits one.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Whether `openat2(2)` may still work here. Cleared the first time the kernel (older than 5.6)
/// or a seccomp filter refuses it, so the fallback costs one failed syscall per process, not one
/// per entry.
static OPENAT2: AtomicBool = AtomicBool::new(true);

/// Takes ownership of a descriptor that a successful open just returned.
fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was returned by a successful open call a moment ago; nothing else owns it, so
    // this `OwnedFd` is its only owner and closes it exactly once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Opens the layer root itself. `dest` comes from the caller (the store), not from the layer, so
/// following symlinks in it is fine.
pub(super) fn open_dest(dest: &Path) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(own)
}

/// `openat(2)` relative to `dir`; `name` is a single component or a relative path.
pub(super) fn openat(
    dir: BorrowedFd<'_>,
    name: &[u8],
    flags: OFlag,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(Some(dir.as_raw_fd()), name, flags | OFlag::O_CLOEXEC, mode).map(own)
}

/// Opens `path` (relative, no `..`) below `dir` with `openat2(2)` refusing every symlink and any
/// escape from `dir`. `None` when `openat2` is unavailable (kernel before 5.6, or a seccomp
/// profile that refuses it): the caller then walks component by component, which is just as
/// safe, only slower.
pub(super) fn openat2_beneath(
    dir: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlag,
) -> Option<Result<OwnedFd, Errno>> {
    if !OPENAT2.load(Ordering::Relaxed) || tests_without_openat2() {
        return None;
    }
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    match nix::fcntl::openat2(dir.as_raw_fd(), path, how) {
        Ok(fd) => Some(Ok(own(fd))),
        // ENOSYS: no openat2. EPERM: seccomp profiles of some container engines. E2BIG/EINVAL:
        // a kernel that does not know these flags. Our arguments are valid, so none of these
        // say anything about the path.
        Err(Errno::ENOSYS | Errno::EPERM | Errno::E2BIG | Errno::EINVAL) => {
            OPENAT2.store(false, Ordering::Relaxed);
            None
        }
        Err(e) => Some(Err(e)),
    }
}

#[cfg(test)]
thread_local! {
    /// Lets a test run the component-by-component walk that kernels before 5.6 get, without
    /// touching other tests (each test runs on its own thread).
    pub(super) static WITHOUT_OPENAT2: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
fn tests_without_openat2() -> bool {
    WITHOUT_OPENAT2.with(|w| w.get())
}

#[cfg(not(test))]
fn tests_without_openat2() -> bool {
    false
}

/// `fsetxattr(2)`: sets the extended attribute `name` on the open file or directory `fd`.
pub(super) fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> Result<(), Errno> {
    // SAFETY: `fd` is an open descriptor borrowed for the duration of the call, `name` is
    // NUL-terminated, and `value`'s pointer and length describe one live slice; the kernel only
    // reads through both pointers.
    let res = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(res).map(drop)
}

/// `lsetxattr(2)`: sets the extended attribute `name` on `path` without following a symlink in
/// its last component.
pub(super) fn lsetxattr(path: &CStr, name: &CStr, value: &[u8]) -> Result<(), Errno> {
    // SAFETY: `path` and `name` are NUL-terminated, and `value`'s pointer and length describe one
    // live slice; the kernel only reads through the pointers.
    let res = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(res).map(drop)
}
