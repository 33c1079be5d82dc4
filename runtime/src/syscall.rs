//! The few raw system calls the runtime needs that `nix` does not wrap, each in a small
//! function whose `unsafe` block says why it is sound.
//!
//! Guarantee: nothing here allocates, so every function may be called in the freshly cloned
//! child before `execve`.

use std::ffi::{c_char, CStr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::unistd::Pid;

/// Result of [`clone_process`], seen from each side.
pub(crate) enum Cloned {
    Parent(Pid),
    Child,
}

/// Creates the container process with `clone(2)` the way `fork(2)` would, but directly inside
/// the new namespaces named by `flags` (no unshare-and-re-exec dance, which is what makes starts
/// fast).
pub(crate) fn clone_process(flags: libc::c_int) -> Result<Cloned, Errno> {
    let flags = (flags | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: without CLONE_VM the child gets its own copy-on-write copy of the address space
    // and, with a null stack pointer, keeps running on its copy of the current stack, exactly as
    // after fork(2). The remaining pointer arguments are only read with CLONE_PARENT_SETTID,
    // CLONE_CHILD_SETTID or CLONE_SETTLS, which are never passed. The caller has checked that the
    // process is single-threaded, so no lock can be held by a thread that the child lacks.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(Cloned::Child),
        pid => Ok(Cloned::Parent(Pid::from_raw(pid as libc::pid_t))),
    }
}

/// `struct clone_args` of `clone3(2)` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, Linux 5.7):
/// every field is a u64 on every architecture, so one definition serves all of slate's.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// As [`clone_process`], with `clone3(CLONE_INTO_CGROUP)`: the child is born in the cgroup
/// `cgroup` is a directory of (cgroup v2), so it never runs, forks or allocates outside it,
/// and the parent has no `cgroup.procs` to write. Errors the caller falls back on:
/// `ENOSYS` (before 5.3, or a seccomp filter that hides clone3, as container-in-container
/// setups do), `E2BIG`/`EINVAL` (before 5.7: no CLONE_INTO_CGROUP).
pub(crate) fn clone_into_cgroup(
    flags: libc::c_int,
    cgroup: BorrowedFd<'_>,
) -> Result<Cloned, Errno> {
    let args = CloneArgs {
        flags: flags as u32 as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: as for clone_process: no CLONE_VM and a null stack, so the child runs on its
    // copy-on-write copy of the current stack as after fork(2); the only pointer passed is to
    // `args`, valid and of the size given, and none of the tid/pidfd/set_tid pointer fields is
    // set (all zero). The caller has checked that the process is single-threaded.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(Cloned::Child),
        pid => Ok(Cloned::Parent(Pid::from_raw(pid as libc::pid_t))),
    }
}

/// The file type bits (`st_mode & S_IFMT`) of `fd`, which may be an `O_PATH` descriptor.
///
/// Through `fstat64`, not nix's `fstat`: on 32-bit glibc (armv7) plain `fstat` has a 32-bit
/// `st_size` and `st_ino` and fails with `EOVERFLOW` on a large file (`/proc/kcore` on a 64-bit
/// kernel, the first masked path) or on a filesystem with 64-bit inode numbers. On 64-bit
/// targets both are the same call.
pub(crate) fn file_type(fd: BorrowedFd<'_>) -> Result<libc::mode_t, Errno> {
    let mut st = std::mem::MaybeUninit::<libc::stat64>::uninit();
    // SAFETY: `st` is a valid, writable stat64 buffer; the kernel fills it on success, which
    // is the only case in which it is read.
    let ret = unsafe { libc::fstat64(fd.as_raw_fd(), st.as_mut_ptr()) };
    Errno::result(ret)?;
    // SAFETY: fstat64 succeeded, so `st` is initialised.
    Ok(unsafe { st.assume_init() }.st_mode & libc::S_IFMT)
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// `openat2(2)` of `path` with `root` as the root of every lookup: `..` and absolute symlinks
/// stay inside it, so a hostile rootfs cannot redirect a mount onto the host. `ENOSYS` (kernel
/// before 5.6) tells the caller to use its component-by-component fallback.
pub(crate) fn openat2_in_root(
    root: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
) -> Result<OwnedFd, Errno> {
    let mut how: libc::open_how = unsafe_zeroed_open_how();
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    // With RESOLVE_IN_ROOT the kernel answers EAGAIN when a rename or mount anywhere on the
    // system raced with a `..` step of the lookup; the lookup is then simply to be retried
    // (seen here when tests mount in parallel). A bounded number of tries keeps an attacker
    // who churns mounts from stalling us forever.
    let mut tries = 0;
    let ret = loop {
        // SAFETY: `path` is a valid NUL-terminated string and `how` a valid open_how whose
        // size is passed alongside; the kernel only reads both during the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if ret >= 0 {
            break ret;
        }
        let err = Errno::last();
        tries += 1;
        if err != Errno::EAGAIN || tries >= 32 {
            return Err(err);
        }
    };
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

fn unsafe_zeroed_open_how() -> libc::open_how {
    // SAFETY: open_how is a plain struct of integers, for which all-zero is valid (and means
    // "no flags").
    unsafe { std::mem::zeroed() }
}

/// CVE-2024-21626: closes every descriptor from `first` up, except those in `keep` (the sync
/// socket and the start gate, both close-on-exec, so that their other ends see EOF at exec).
/// Used right before exec by the container's process and by `exec`'s, so nothing of the
/// host stays reachable through /proc/self/fd. No allocation on the common path: it runs
/// in the cloned child.
pub(crate) fn close_fds_from(first: u32, keep: &[RawFd]) -> Result<(), Errno> {
    let mut lo = first;
    loop {
        // The next kept descriptor at or above `lo`; everything below it goes.
        let next = keep
            .iter()
            .filter_map(|&k| u32::try_from(k).ok())
            .filter(|&k| k >= lo)
            .min();
        let hi = match next {
            Some(k) => k.checked_sub(1),
            None => Some(u32::MAX),
        };
        if let Some(hi) = hi.filter(|hi| lo <= *hi) {
            close_span(lo, hi, keep)?;
        }
        match next {
            Some(k) if k < u32::MAX => lo = k + 1,
            _ => return Ok(()),
        }
    }
}

fn close_span(lo: u32, hi: u32, keep: &[RawFd]) -> Result<(), Errno> {
    match close_range(lo, hi) {
        Ok(()) => Ok(()),
        // Kernels before 5.9 (ENOSYS), or a seccomp profile older than close_range that
        // denies it (EPERM: the spec's filter is installed before this when the spec has
        // no no_new_privs, as in runc). Close what /proc lists, else one by one.
        Err(Errno::ENOSYS | Errno::EPERM) => {
            let kept = |fd: u32| keep.iter().any(|&k| u32::try_from(k).ok() == Some(fd));
            if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
                let open: Vec<u32> = rd
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter(|fd| (lo..=hi).contains(fd) && !kept(*fd))
                    .collect();
                for fd in open {
                    let _ = nix::unistd::close(fd as i32);
                }
                return Ok(());
            }
            let max = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(soft, _)| soft.min(1 << 20) as u32)
                .unwrap_or(1024);
            for fd in lo..=hi.min(max) {
                if !kept(fd) {
                    let _ = nix::unistd::close(fd as i32);
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Closes every descriptor in `first..=last`; `ENOSYS` on kernels before 5.9.
pub(crate) fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    // SAFETY: closing descriptors has no memory-safety effect on this process: the child owns
    // no Rust objects that use these descriptors after this point (it is about to exec).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    Errno::result(ret).map(drop)
}

/// `execve(2)` with argument and environment arrays prepared (and NULL-terminated) by the
/// parent, so the child does not allocate. Returns only on failure.
pub(crate) fn execve(path: &CStr, argv: &[*const c_char], envp: &[*const c_char]) -> Errno {
    debug_assert!(argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(envp.last().is_some_and(|p| p.is_null()));
    // SAFETY: `path` is NUL-terminated; `argv` and `envp` are NULL-terminated arrays of pointers
    // into CStrings that the caller keeps alive for the duration of the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Errno::last()
}

/// Whether resolving `path` goes through a `/proc` magic link (`/proc/self/exe`,
/// `/proc/<pid>/root`, `/proc/self/fd/N`): openat2 with RESOLVE_NO_MAGICLINKS refuses it
/// with ELOOP where a plain open succeeds. Any other outcome (no such file, a kernel before
/// 5.6 without openat2, a seccomp profile that denies it) is "no": execve then decides, and
/// the sealed binary (`crate::seal`) is what protects the host in those cases.
pub(crate) fn through_magic_link(path: &CStr) -> bool {
    use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    match rustix::fs::openat2(CWD, path, flags, Mode::empty(), ResolveFlags::NO_MAGICLINKS) {
        Err(rustix::io::Errno::LOOP) => {
            // An ordinary symlink loop fails the plain open too.
            rustix::fs::openat(CWD, path, flags, Mode::empty()).is_ok()
        }
        _ => false,
    }
}

/// Makes the terminal on `fd` the controlling terminal of this (new session leader) process.
pub(crate) fn set_controlling_tty(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal) and touches no memory.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY as _, 0) };
    Errno::result(ret).map(drop)
}

/// Unlocks the slave of the pty master `fd` (`unlockpt(3)`).
pub(crate) fn unlock_pty(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the valid pointer passed.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSPTLCK as _, &unlock) };
    Errno::result(ret).map(drop)
}

/// Opens the slave of the pty master `fd` through the master itself (`TIOCGPTPEER`, Linux
/// 4.13), so no path lookup can hand us another pty.
pub(crate) fn open_pty_peer(fd: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes the open flags as an integer and returns a new descriptor.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTPEER as _, flags) };
    let ret = Errno::result(ret)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

/// Reads the window size of the terminal on `fd`.
pub(crate) fn get_winsize(fd: BorrowedFd<'_>) -> Result<libc::winsize, Errno> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the valid, writable struct passed.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ as _, &mut ws) };
    Errno::result(ret).map(|_| ws)
}

/// Sets the window size of the terminal on `fd`.
pub(crate) fn set_winsize(fd: BorrowedFd<'_>, ws: &libc::winsize) -> Result<(), Errno> {
    // SAFETY: TIOCSWINSZ only reads the winsize passed.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ as _, ws as *const _) };
    Errno::result(ret).map(drop)
}

/// `setrlimit(2)` with raw values (the resource numbers come from the spec's names).
pub(crate) fn setrlimit(resource: libc::c_int, soft: u64, hard: u64) -> Result<(), Errno> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the rlimit passed. The resource type differs between libc
    // flavours, hence the inferred cast.
    let ret = unsafe { libc::setrlimit(resource as _, &lim) };
    Errno::result(ret).map(drop)
}

/// Brings the loopback interface of the calling process's network namespace up, as
/// `ip link set lo up` would: a new network namespace starts with `lo` down, and apps
/// (docker's `--network none` included) expect 127.0.0.1 to work.
pub(crate) fn loopback_up() -> Result<(), Errno> {
    // SAFETY: socket(2) takes only integers; a negative return is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let fd = Errno::result(fd)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is a plain C struct of integers, arrays and a union of such, for which
    // all-zero is valid (an empty name and zeroed flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name from, and writes the flags into, the
    // valid, writable ifreq passed; nothing else is touched.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) };
    Errno::result(ret)?;
    // SAFETY: SIOCGIFFLAGS has just filled in the flags member of the union; reading it back
    // reads initialised integer memory (and any bit pattern is a valid c_short).
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS only reads the name and flags of the ifreq passed.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) };
    Errno::result(ret).map(drop)
}

/// Sets the NIS domain name of the (private) UTS namespace.
pub(crate) fn setdomainname(name: &CStr) -> Result<(), Errno> {
    // SAFETY: the kernel reads at most `len` bytes of the valid string passed.
    let ret = unsafe { libc::setdomainname(name.as_ptr(), name.to_bytes().len()) };
    Errno::result(ret).map(drop)
}

/// Puts every signal back to its default disposition. Exec resets handled signals but keeps
/// ignored ones, and the caller may ignore some (Rust's runtime ignores SIGPIPE): the app must
/// start as if from a clean shell, e.g. die of SIGPIPE in a broken pipeline. Handled ones are
/// reset too, so that no handler of ours runs in the child before it execs.
///
/// Only the signals `/proc/self/status` lists as ignored or caught are touched (usually
/// three): the others are at their default already, and a call for each of the 62 was a
/// twelfth of a container start's syscalls (issue 14). Without a readable status, all.
pub(crate) fn reset_signal_dispositions() {
    let mask = non_default_signals().unwrap_or(u64::MAX);
    // The raw system call, because glibc's sigaction refuses the signals it reserves for itself
    // (32 and 33), which an ignoring caller passes on all the same. All-zero is SIG_DFL with
    // no flags and an empty mask in every architecture's kernel sigaction layout.
    let dfl = [0u64; 4];
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || mask & (1 << (sig - 1)) == 0 {
            continue;
        }
        // SAFETY: the kernel reads one struct sigaction (at most 32 bytes, all zero) from `dfl`
        // and writes nothing (null old-action pointer); installing SIG_DFL runs no code of ours
        // in signal context.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<u8>(),
                8usize,
            );
        }
    }
}

/// The signals this process ignores or catches (bit n-1 for signal n), from
/// `/proc/self/status`, read into a buffer on the stack.
fn non_default_signals() -> Option<u64> {
    // SAFETY: open(2) reads the NUL-terminated literal; a negative return is checked.
    let fd = unsafe {
        libc::open(
            c"/proc/self/status".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: the descriptor was just opened and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
    signal_masks(&buf[..len])
}

/// `SigIgn | SigCgt` of a `/proc/<pid>/status` text; `None` unless both are there.
fn signal_masks(status: &[u8]) -> Option<u64> {
    let field = |name: &[u8]| {
        status.split(|&b| b == b'\n').find_map(|line| {
            let hex = line.strip_prefix(name)?;
            let hex = std::str::from_utf8(hex).ok()?.trim();
            u64::from_str_radix(hex, 16).ok()
        })
    };
    Some(field(b"SigIgn:")? | field(b"SigCgt:")?)
}

/// Leaves the process without running atexit handlers or destructors; the only exit the child
/// may take, since it shares nothing it should flush or free.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no user memory.
    unsafe { libc::_exit(code) }
}

/// Writes all of `buf` to `fd` without allocating.
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return Err(Errno::EPIPE),
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signal_masks_are_the_ignored_and_caught_ones() {
        let status = b"Name:\tslate\nSigPnd:\t0000000000000000\nSigBlk:\t0000000000000000\n\
SigIgn:\t0000000000001000\nSigCgt:\t0000000000000440\nCapInh:\t0000000000000000\n";
        // SIGPIPE (13) ignored, SIGBUS (7) and SIGSEGV (11) caught.
        let mask = signal_masks(status).unwrap();
        assert_eq!(mask, (1 << 12) | (1 << 6) | (1 << 10));
        assert_eq!(signal_masks(b"Name:\tx\nSigIgn:\t0\n"), None);
    }

    #[test]
    fn this_process_reads_its_own_signal_masks() {
        // Rust's runtime ignores SIGPIPE in every program it starts.
        let mask = non_default_signals().unwrap();
        assert_ne!(mask & (1 << (libc::SIGPIPE - 1)), 0);
    }
}
