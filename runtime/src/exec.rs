//! Running another process in a running container (`slate exec`): the new process joins the
//! container's namespaces (`setns` on `/proc/<pid>/ns/*`) and its cgroup, and gets the same
//! confinement the container's own process got from the same spec: capabilities (bounding,
//! effective, permitted, inheritable, ambient), no_new_privs, seccomp, rlimits, user and groups.
//!
//! Processes, in order:
//!
//! | who        | does                                                                          |
//! |------------|-------------------------------------------------------------------------------|
//! | caller     | opens the namespace files, becomes a child subreaper, forks the *joiner*      |
//! | caller     | puts the joiner into the container's cgroup, then sends "go" (one byte)       |
//! | joiner     | non-dumpable; setns into each namespace (user first, mount last; without a mount namespace of the container's own, a chroot into its root); forks the *app* (a PID namespace takes effect for children only) and exits |
//! | app        | terminal, rlimits, caps, uid/gid, cwd (checked inside the root), closes fds, seccomp, execve; or reports the failing step ([`ChildFailure`]) and exits |
//! | caller     | EOF on the sync socket = exec'd; relays the terminal and signals, reaps the app |
//!
//! The app is the joiner's child, so after the joiner exits it is reparented to the caller,
//! which made itself a child subreaper for that: it can wait for the app and get its status.
//!
//! CVE-2019-5736: until the app execs, the processes in the container are forks of the
//! caller, so their `/proc/<pid>/exe` is the caller's binary: the caller must run from a
//! sealed copy ([`crate::seal::ensure`]; `slate exec` does), so that link never leads to a
//! writable host file. The joiner also makes itself non-dumpable before joining anything (the
//! app inherits that until execve resets it), so a process of the container cannot even open
//! that link without CAP_SYS_PTRACE, and a program reached through a magic link
//! (`/bin/evil -> /proc/self/exe`) is refused rather than executed.
//!
//! CVE-2024-21626: every descriptor above 2 is closed before execve (the namespace files,
//! the sync socket and anything inherited from the caller), and the working directory is
//! entered after the mount namespace switch and checked to be reachable from the container's
//! root, so no host directory can leak in as the cwd.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::{LinuxSeccomp, Process};

use crate::caps::CapsPlan;
use crate::cgroups::Cgroup;
use crate::confine::{at, Confinement};
use crate::container::ExitStatus;
use crate::error::{ChildFailure, Error, Stage};
use crate::mounts::{resolve, Create};
use crate::process::ExecPlan;
use crate::seccomp::{self, Program};
use crate::supervise::FORWARDED;
use crate::syscall;

/// Namespaces joined, in order: the user namespace first (it owns the others), the mount
/// namespace last (after it, `/proc` paths would be the container's).
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// What to run in which container.
#[derive(Debug)]
pub struct ExecOptions {
    /// The container's PID 1, as seen from the host. The caller checks that it is still the
    /// container's (its start time) before and after calling.
    pub pid: Pid,
    /// The process: args, env, cwd, user, capabilities, rlimits, no_new_privs, terminal.
    pub process: Process,
    /// The container's seccomp profile (its spec's `linux.seccomp`): an exec'd process is
    /// confined as the container's own.
    pub seccomp: Option<LinuxSeccomp>,
    /// Where compiled profiles are cached ([`seccomp::compile_cached`]).
    pub seccomp_cache: Option<std::path::PathBuf>,
    /// The container's cgroup, joined by the new process.
    pub cgroup: Option<Cgroup>,
    /// The process's stdin, stdout and stderr; `None` leaves the caller's (see
    /// [`crate::ContainerOptions::stdio`]).
    pub stdio: [Option<OwnedFd>; 3],
}

/// One namespace to join.
struct Join {
    fd: OwnedFd,
    kind: CloneFlags,
}

/// Everything the children need, prepared before the fork.
struct Plan {
    joins: Vec<Join>,
    /// The container's root, for one without a mount namespace of its own.
    chroot: Option<OwnedFd>,
    exec: ExecPlan,
    caps: CapsPlan,
    cwd: CString,
    winsize: Option<libc::winsize>,
    seccomp: Option<Arc<Program>>,
    stdio: [Option<OwnedFd>; 3],
}

fn same_namespace(pid: Pid, name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/{name}"));
    let ours = std::fs::metadata(format!("/proc/self/ns/{name}"));
    match (theirs, ours) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Runs `opts.process` in the container and returns its status once it exits. Relays the
/// terminal (`process.terminal`) or lets the process use the caller's stdio, and forwards
/// [`FORWARDED`] signals to it. The caller must be single-threaded.
pub fn exec(opts: ExecOptions) -> Result<ExitStatus, Error> {
    let started = spawn(opts)?;
    let status = relay(started.app, started.master, &started.mask);
    drop(started.restore);
    status
}

/// Starts `opts.process` in the container and returns once it has exec'd, without waiting
/// for it (the OCI `exec --detach`): its pid, and its terminal's master if it has one. The
/// process is reparented to the caller's own subreaper (conmon, a shim) when the caller
/// exits. The caller must be single-threaded.
pub fn exec_detached(opts: ExecOptions) -> Result<(Pid, Option<OwnedFd>), Error> {
    let started = spawn(opts)?;
    Ok((started.app, started.master))
}

/// An exec'd process, and what [`relay`] needs for it.
struct Started {
    app: Pid,
    master: Option<OwnedFd>,
    mask: SigSet,
    restore: MaskGuard,
}

fn spawn(mut opts: ExecOptions) -> Result<Started, Error> {
    crate::container::single_threaded()?;
    let mut joins = Vec::new();
    for (name, kind) in NAMESPACES {
        let path = PathBuf::from(format!("/proc/{}/ns/{name}", opts.pid));
        if same_namespace(opts.pid, name) {
            continue;
        }
        let fd = nix::fcntl::open(
            &path,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| Error::NamespacePath {
            path: path.clone(),
            source,
        })?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        let fd: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        joins.push(Join { fd, kind });
    }
    // A container that shares our mount namespace is chroot'ed into its rootfs (see
    // MountPlan::pivot): the process goes into the same root, or it would see the host's
    // filesystem. Opened here, as /proc/<pid>/root only names it from this namespace.
    let chroot = if joins.iter().any(|j| j.kind == CloneFlags::CLONE_NEWNS) {
        None
    } else {
        let path = format!("/proc/{}/root", opts.pid);
        let fd = nix::fcntl::open(
            path.as_str(),
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(Error::sys("opening the container's root"))?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    };
    let p = &opts.process;
    let plan = Plan {
        joins,
        chroot,
        exec: ExecPlan::new(p)?,
        caps: CapsPlan::new(p.capabilities().as_ref())?,
        cwd: CString::new(p.cwd().as_os_str().as_bytes())
            .map_err(|_| Error::Nul { what: "cwd" })?,
        winsize: crate::pty::host_winsize(),
        seccomp: match &opts.seccomp {
            Some(profile) => Some(Arc::new(seccomp::compile_cached(
                profile,
                opts.seccomp_cache.as_deref(),
            )?)),
            None => None,
        },
        stdio: crate::confine::stdio_above_2(std::mem::take(&mut opts.stdio))
            .map_err(Error::sys("moving the exec'd process's stdio above 2"))?,
    };
    if !p.cwd().is_absolute() {
        return Err(Error::RelativeCwd(p.cwd().clone()));
    }

    // The app will be reparented to us when the joiner exits: only a subreaper can wait for it.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and changes only this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(Error::sys("becoming a child subreaper")(Errno::last()));
    }
    // One socket per child, so the joiner's report and the app's cannot interleave.
    let pair = || {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(Error::sys("socketpair"))
    };
    let (parent_sock, child_sock) = pair()?;
    let (parent_app_sock, app_sock) = pair()?;

    // Signals to forward are blocked from here, so none is lost before the app exists; the
    // app unblocks them before it execs.
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
        .map_err(Error::sys("blocking signals"))?;
    let restore = MaskGuard(old);

    // SAFETY: the process is single-threaded (checked above), so the child is a complete copy
    // that may allocate; it only runs `joiner` and exits.
    let joiner = match unsafe { fork() }.map_err(Error::sys("fork"))? {
        ForkResult::Child => {
            drop(parent_sock);
            drop(parent_app_sock);
            joiner(&plan, child_sock, app_sock)
        }
        ForkResult::Parent { child } => child,
    };
    drop(child_sock);
    drop(app_sock);
    let app = match place_and_release(&opts, joiner, &parent_sock) {
        Ok(app) => app,
        Err(e) => {
            let _ = kill(joiner, Signal::SIGKILL);
            let _ = waitpid(joiner, None);
            return Err(e);
        }
    };
    let master = match wait_for_exec(&plan, app, &parent_app_sock) {
        Ok(m) => m,
        Err(e) => {
            let _ = kill(app, Signal::SIGKILL);
            let _ = waitpid(app, None);
            return Err(e);
        }
    };
    Ok(Started {
        app,
        master,
        mask,
        restore,
    })
}

/// Restores the signal mask on drop.
struct MaskGuard(SigSet);

impl Drop for MaskGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// Caller: puts the joiner into the cgroup, releases it, learns the app's PID and reaps the
/// joiner.
fn place_and_release(opts: &ExecOptions, joiner: Pid, sock: &OwnedFd) -> Result<Pid, Error> {
    if let Some(cg) = &opts.cgroup {
        cg.add_task(joiner)?;
    }
    syscall::write_all(sock.as_fd(), &[1]).map_err(Error::sys("releasing the exec process"))?;
    let mut buf = [0u8; ChildFailure::SIZE];
    let (n, _) = recv(sock, &mut buf)?;
    let status = loop {
        match waitpid(joiner, None) {
            Ok(s) => break s,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("waitpid")(e)),
        }
    };
    if n == ChildFailure::SIZE {
        let f = ChildFailure::decode(&buf).ok_or(Error::Protocol)?;
        return Err(Error::Setup {
            step: match f.stage {
                Stage::JoinNamespace => format!(
                    "join the container's {} namespace",
                    NAMESPACES
                        .iter()
                        .filter(|(name, _)| !same_namespace(opts.pid, name))
                        .nth(f.index as usize)
                        .map(|(name, _)| *name)
                        .unwrap_or("?")
                ),
                _ => "fork into the container's PID namespace".to_string(),
            },
            source: Errno::from_raw(f.errno),
        });
    }
    if n != 4 || !matches!(status, WaitStatus::Exited(_, 0)) {
        return Err(Error::ChildDied);
    }
    Ok(Pid::from_raw(i32::from_ne_bytes([
        buf[0], buf[1], buf[2], buf[3],
    ])))
}

/// Caller: waits for the app's exec (EOF) or its failure report; takes the pty master.
fn wait_for_exec(plan: &Plan, app: Pid, sock: &OwnedFd) -> Result<Option<OwnedFd>, Error> {
    let mut master = None;
    loop {
        let mut buf = [0u8; ChildFailure::SIZE];
        let (n, fd) = recv(sock, &mut buf)?;
        if n == ChildFailure::SIZE && buf == ChildFailure::PTY_MASTER {
            master = Some(fd.ok_or(Error::Protocol)?);
            continue;
        }
        if n == 0 {
            return Ok(master);
        }
        let f = ChildFailure::decode(&buf).ok_or(Error::Protocol)?;
        let _ = waitpid(app, None);
        let source = Errno::from_raw(f.errno);
        return Err(match f.stage {
            Stage::Exec if source == Errno::ENOENT => {
                Error::ExecNotFound(plan.exec.candidate(f.index))
            }
            Stage::ExecMagicLink => Error::ExecMagicLink(plan.exec.candidate(f.index)),
            Stage::Exec => Error::ExecDenied {
                path: plan.exec.candidate(f.index),
                source,
            },
            stage => Error::Setup {
                step: step_name(stage).to_string(),
                source,
            },
        });
    }
}

fn step_name(s: Stage) -> &'static str {
    match s {
        Stage::Rlimit => "set the rlimits",
        Stage::NoNewPrivs => "set no_new_privs",
        Stage::Seccomp => "install the seccomp filter",
        Stage::Bounding => "drop capabilities from the bounding set",
        Stage::Groups => "set the additional groups",
        Stage::Gid => "set the gid",
        Stage::Uid => "set the uid",
        Stage::Capabilities => "set the capabilities",
        Stage::Cwd => "change to the working directory",
        Stage::CwdOutsideRoot => "the working directory is outside the container's root",
        Stage::Terminal => "open a terminal in the container",
        Stage::CloseFds => "close inherited descriptors",
        Stage::Stdio => "set up stdin, stdout and stderr",
        Stage::PivotRoot => "chroot into the container's root",
        _ => "set up the exec process",
    }
}

fn recv(sock: &OwnedFd, buf: &mut [u8]) -> Result<(usize, Option<OwnedFd>), Error> {
    loop {
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("reading from the exec process")(e)),
        };
        let mut fd = None;
        for c in msg
            .cmsgs()
            .map_err(Error::sys("reading from the exec process"))?
        {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: SCM_RIGHTS installed a new descriptor in this process for us.
                    fd = Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) });
                }
            }
        }
        return Ok((msg.bytes, fd));
    }
}

/// Joiner: joins the namespaces and forks the app; reports the app's PID (4 bytes) or a
/// failure, then exits.
fn joiner(plan: &Plan, sock: OwnedFd, app_sock: OwnedFd) -> ! {
    let res = (|| -> Result<Pid, ChildFailure> {
        // CVE-2019-5736: not dumpable, so the container cannot open our /proc/<pid>/exe.
        nix::sys::prctl::set_dumpable(false).map_err(at(Stage::Sync, 0))?;
        let mut go = [0u8; 1];
        loop {
            match nix::unistd::read(sock.as_raw_fd(), &mut go) {
                Ok(1) => break,
                Ok(_) => syscall::exit_now(125),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(at(Stage::Sync, 0)(e)),
            }
        }
        for (i, j) in plan.joins.iter().enumerate() {
            nix::sched::setns(&j.fd, j.kind).map_err(at(Stage::JoinNamespace, i as u32))?;
        }
        if let Some(root) = &plan.chroot {
            nix::unistd::fchdir(root.as_raw_fd()).map_err(at(Stage::PivotRoot, 0))?;
            nix::unistd::chroot(".").map_err(at(Stage::PivotRoot, 0))?;
        }
        // SAFETY: single-threaded (a fork of a single-threaded process); the child only runs
        // `app_main` and execs or exits.
        match unsafe { fork() }.map_err(at(Stage::Fork, 0))? {
            // The app closes the joiner's socket with every other descriptor before exec.
            ForkResult::Child => app_main(plan, &app_sock),
            ForkResult::Parent { child } => Ok(child),
        }
    })();
    match res {
        Ok(app) => {
            let _ = syscall::write_all(sock.as_fd(), &app.as_raw().to_ne_bytes());
            syscall::exit_now(0)
        }
        Err(f) => {
            let _ = syscall::write_all(sock.as_fd(), &f.encode());
            syscall::exit_now(125)
        }
    }
}

/// App: confines itself like the container's process and execs; never returns.
fn app_main(plan: &Plan, sock: &OwnedFd) -> ! {
    let failure = match app_setup(plan, sock) {
        Ok(never) => match never {},
        Err(f) => f,
    };
    let _ = syscall::write_all(sock.as_fd(), &failure.encode());
    let code = match (failure.stage, Errno::from_raw(failure.errno)) {
        (Stage::Exec, Errno::ENOENT) => 127,
        (Stage::Exec | Stage::ExecMagicLink, _) => 126,
        _ => 125,
    };
    syscall::exit_now(code)
}

enum Never {}

fn app_setup(plan: &Plan, sock: &OwnedFd) -> Result<Never, ChildFailure> {
    crate::confine::install_stdio(&plan.stdio)?;
    syscall::reset_signal_dispositions();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(at(Stage::Sync, 0))?;
    // A session of its own (as the container's process has): a terminal can become the
    // controlling one, and a ^C at the host terminal reaches it once, through the relay.
    nix::unistd::setsid().map_err(at(Stage::Sync, 0))?;
    let confinement = Confinement {
        exec: &plan.exec,
        caps: &plan.caps,
        seccomp: plan.seccomp.as_deref(),
        winsize: plan.winsize.as_ref(),
        cwd: plan.cwd.as_bytes(),
        // As for the container's own process (a user namespace may deny setgroups).
        setgroups: !plan
            .joins
            .iter()
            .any(|j| j.kind.contains(CloneFlags::CLONE_NEWUSER))
            || !plan.exec.groups.is_empty(),
        die_with_parent: false,
    };
    confinement.apply(sock)?;
    // CVE-2024-21626: nothing of the host past stdio (the sync socket is close-on-exec).
    syscall::close_fds_from(3, &[sock.as_raw_fd()]).map_err(at(Stage::CloseFds, 0))?;
    Err(confinement.exec())
}

/// Caller: relays the terminal (if any) and signals until the app exits; reaps it. The
/// caller's stdin always goes into an exec'd process's terminal (`exec -t` is `-it`).
fn relay(app: Pid, master: Option<OwnedFd>, mask: &SigSet) -> Result<ExitStatus, Error> {
    let sfd = SignalFd::with_flags(mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(Error::sys("signalfd"))?;
    crate::supervise::relay(&sfd, master.as_ref(), true, &mut App(app))
}

/// An exec'd process, for the relay: signals go to it, `waitpid` reaps it.
struct App(Pid);

impl crate::supervise::Relayed for App {
    fn forward(&mut self, sig: Signal) {
        let _ = kill(self.0, sig);
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        try_reap(self.0)
    }
}

fn try_reap(app: Pid) -> Result<Option<ExitStatus>, Error> {
    match waitpid(app, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, c)) => Ok(Some(ExitStatus::Exited(c))),
        Ok(WaitStatus::Signaled(_, s, _)) => Ok(Some(ExitStatus::Signaled(s))),
        Ok(_) | Err(Errno::EINTR) => Ok(None),
        Err(e) => Err(Error::sys("waitpid")(e)),
    }
}

/// Reads a small regular file of a running container's filesystem (e.g. `/etc/passwd` to
/// resolve `exec -u NAME`), resolved inside the container's root: `..` and absolute symlinks
/// cannot lead out of it (going through `/proc/<pid>/root/...` alone would follow an absolute
/// symlink to the host's file). `Ok(None)` when it does not exist or is not a regular file.
pub fn read_container_file(pid: Pid, path: &Path, max: u64) -> Result<Option<Vec<u8>>, Error> {
    use std::io::Read;
    let root_path = format!("/proc/{pid}/root");
    let root = nix::fcntl::open(
        root_path.as_str(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(Error::sys("opening the container's root"))?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let root: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(root) };
    let rel = path.strip_prefix("/").unwrap_or(path);
    let c = CString::new(rel.as_os_str().as_bytes()).map_err(|_| Error::Nul { what: "path" })?;
    let fd = match resolve(root.as_fd(), &c, Create::No) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(Error::sys("resolving a path in the container")(e)),
    };
    if crate::syscall::file_type(fd.as_fd()).map_err(Error::sys("fstat"))? != libc::S_IFREG {
        return Ok(None);
    }
    // Reopen the O_PATH descriptor for reading through its /proc/self/fd link: same file.
    let f = std::fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|source| {
        Error::Io {
            op: "reading a file of the container",
            source,
        }
    })?;
    let mut out = Vec::new();
    f.take(max)
        .read_to_end(&mut out)
        .map_err(|source| Error::Io {
            op: "reading a file of the container",
            source,
        })?;
    Ok(Some(out))
}
