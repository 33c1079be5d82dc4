//! The confinement both a container's process and an `exec`'d one go through on their way to
//! execve, in one place so the two cannot drift apart: rlimits, the terminal, no_new_privs
//! and the seccomp filter (early without no_new_privs, last before execve with it), the
//! bounding set, groups and ids, the capability sets, non-dumpable, the cwd checked to be
//! inside the root (CVE-2024-21626, before the filter) and entered as the user, the umask. What differs between
//! the two stays with the callers: a container's process sets up its namespaces and mounts
//! before this and may wait at the start gate or fork an init after it; both close their
//! descriptors between [`Confinement::apply`] and [`Confinement::exec`].
//!
//! Runs in a cloned or forked child: no allocation, no logging, errors as [`ChildFailure`].

use std::ffi::OsStr;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;
use nix::unistd::{setresgid, setresuid};

use crate::caps::CapsPlan;
use crate::error::{ChildFailure, Stage};
use crate::process::ExecPlan;
use crate::seccomp::{Program, SeccompError};

/// What confines one process, prepared by the parent before the fork.
pub(crate) struct Confinement<'a> {
    pub exec: &'a ExecPlan,
    pub caps: &'a CapsPlan,
    pub seccomp: Option<&'a Program>,
    /// The size of a container terminal.
    pub winsize: Option<&'a libc::winsize>,
    /// The working directory, inside the container's root.
    pub cwd: &'a [u8],
    /// Call setgroups(2). Not in a user namespace whose process has no supplementary
    /// groups: there it may be denied (`/proc/PID/setgroups` says deny) and has nothing to do.
    pub setgroups: bool,
    /// SIGKILL when the parent dies; set again after the uid switch, which clears it.
    pub die_with_parent: bool,
}

/// A failure at `stage` (the `index`-th item of it) with the errno it got.
pub(crate) fn at(stage: Stage, index: u32) -> impl Fn(Errno) -> ChildFailure + Copy {
    move |e| ChildFailure {
        stage,
        index,
        errno: e as i32,
    }
}

/// Puts `stdio`'s descriptors on 0, 1 and 2 (dup2 clears close-on-exec on the copies);
/// `None` leaves that one as inherited. The sources are 3 or above ([`stdio_above_2`]), so no
/// dup2 here overwrites a source still to come.
pub(crate) fn install_stdio(stdio: &[Option<OwnedFd>; 3]) -> Result<(), ChildFailure> {
    for (target, fd) in stdio.iter().enumerate() {
        if let Some(fd) = fd {
            nix::unistd::dup2(fd.as_raw_fd(), target as i32)
                .map_err(at(Stage::Stdio, target as u32))?;
        }
    }
    Ok(())
}

/// In the parent: moves any of the descriptors that is 0, 1 or 2 (a caller whose own stdio
/// was closed got its pipe there) to a close-on-exec one above 2, for [`install_stdio`].
pub(crate) fn stdio_above_2(
    stdio: [Option<OwnedFd>; 3],
) -> Result<[Option<OwnedFd>; 3], nix::errno::Errno> {
    let mut out: [Option<OwnedFd>; 3] = [None, None, None];
    for (slot, fd) in out.iter_mut().zip(stdio) {
        *slot = match fd {
            Some(fd) if fd.as_raw_fd() < 3 => {
                let raw =
                    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
                // SAFETY: fcntl just returned this new descriptor, which nothing else owns.
                Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
            }
            other => other,
        };
    }
    Ok(out)
}

impl Confinement<'_> {
    /// Everything up to closing the descriptors. `sock` is the sync socket: a terminal's
    /// master goes to the parent through it.
    pub fn apply(&self, sock: &OwnedFd) -> Result<(), ChildFailure> {
        self.exec
            .apply_rlimits()
            .map_err(|(i, e)| at(Stage::Rlimit, i)(e))?;
        if self.exec.terminal {
            let t = at(Stage::Terminal, 0);
            let master = crate::pty::open_in_container(self.winsize, self.exec.uid).map_err(t)?;
            let fds = [master.as_raw_fd()];
            sendmsg::<()>(
                sock.as_raw_fd(),
                &[std::io::IoSlice::new(&ChildFailure::PTY_MASTER)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .map_err(t)?;
            // The parent holds the master now; the process keeps only the slave.
            drop(master);
        }
        // CVE-2024-21626: a descriptor leaked from the host (a cgroup directory, the old
        // root) could serve as a cwd outside the container: check that the cwd is reachable
        // from the root (getcwd fails with ENOENT, or returns a path not starting with "/",
        // for a directory outside it). Before the seccomp filter, which may deny getcwd to
        // the app (runtime-tools' linux_seccomp does).
        nix::unistd::chdir("/").map_err(at(Stage::Cwd, 0))?;
        nix::unistd::chdir(OsStr::from_bytes(self.cwd())).map_err(at(Stage::Cwd, 0))?;
        let mut buf = [0u8; 4096];
        // SAFETY: getcwd writes at most buf.len() bytes, NUL included, into the buffer passed.
        let p = unsafe { libc::getcwd(buf.as_mut_ptr().cast(), buf.len()) };
        if p.is_null() || buf[0] != b'/' {
            let errno = if p.is_null() {
                Errno::last()
            } else {
                Errno::ENOENT
            };
            return Err(at(Stage::CwdOutsideRoot, 0)(errno));
        }

        if self.exec.no_new_privs {
            nix::sys::prctl::set_no_new_privs().map_err(at(Stage::NoNewPrivs, 0))?;
        } else {
            // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN, which is about
            // to be dropped: install it now (as runc does), at the price of filtering the
            // setup that follows.
            self.install_seccomp()?;
        }
        self.caps.apply_bounding().map_err(at(Stage::Bounding, 0))?;
        // Keep the permitted set across the uid switch; the spec's sets are applied after it.
        nix::sys::prctl::set_keepcaps(true).map_err(at(Stage::Capabilities, 0))?;
        if self.setgroups {
            nix::unistd::setgroups(&self.exec.groups).map_err(at(Stage::Groups, 0))?;
        }
        let (uid, gid) = (self.exec.uid, self.exec.gid);
        setresgid(gid, gid, gid).map_err(at(Stage::Gid, 0))?;
        setresuid(uid, uid, uid).map_err(at(Stage::Uid, 0))?;
        nix::sys::prctl::set_keepcaps(false).map_err(at(Stage::Capabilities, 0))?;
        if self.die_with_parent {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(at(Stage::Sync, 0))?;
        }
        self.caps.apply_sets().map_err(at(Stage::Capabilities, 0))?;
        // Not dumpable until execve (which decides again for the app): the uid switch may
        // have made it dumpable, and another process of the container (a shared PID
        // namespace, an earlier exec) could otherwise ptrace it or open its /proc entries
        // (its descriptors, the runtime binary) while it still holds the host's.
        nix::sys::prctl::set_dumpable(false).map_err(at(Stage::Sync, 0))?;

        // Again as the user, so that a directory it cannot enter is an error here, not a
        // surprise later: the same path, root and descriptors as checked above.
        nix::unistd::chdir("/").map_err(at(Stage::Cwd, 0))?;
        nix::unistd::chdir(OsStr::from_bytes(self.cwd())).map_err(at(Stage::Cwd, 0))?;
        nix::sys::stat::umask(Mode::from_bits_truncate(
            self.exec.umask.unwrap_or(0o022) as libc::mode_t
        ));
        Ok(())
    }

    /// The last steps, once the descriptors are closed: the seccomp filter when no_new_privs
    /// allows it this late (then it only has to allow execve, not the setup), and execve.
    /// Returns only on failure.
    pub fn exec(&self) -> ChildFailure {
        if self.exec.no_new_privs {
            if let Err(e) = self.install_seccomp() {
                return e;
            }
        }
        let (stage, index, errno) = self.exec.exec();
        at(stage, index)(errno)
    }

    /// The working directory; "." (a spec's empty cwd) is the root.
    fn cwd(&self) -> &[u8] {
        if self.cwd == b"." {
            b"/"
        } else {
            self.cwd
        }
    }

    fn install_seccomp(&self) -> Result<(), ChildFailure> {
        let Some(program) = self.seccomp else {
            return Ok(());
        };
        program.install().map_err(|e| {
            let errno = match e {
                SeccompError::NeedsNoNewPrivs(e) | SeccompError::Install(e) => e,
                _ => Errno::EINVAL,
            };
            at(Stage::Seccomp, 0)(errno)
        })
    }
}
