//! A minimal init for `init: true` (`slate run --init`): PID 1 of the container that starts the
//! app, forwards signals to it, reaps every orphan, and exits with the app's status (128+N when
//! the app was killed by signal N).
//!
//! It runs in the cloned container process itself after all setup, so it is already confined
//! like the app (namespaces, mounts, capabilities, seccomp), and it holds no descriptor but
//! 0-2 and the preserved ones (the container process closes the rest before the fork).
//! CVE-2019-5736: init never execs, so its `/proc/1/exe` is slate's binary: the sealed,
//! unwritable copy slate runs from (`crate::seal`), never the host's file. Init is also
//! non-dumpable: the container's processes cannot open `/proc/1/exe` (nor ptrace it or read
//! `/proc/1/mem`) unless they hold CAP_SYS_PTRACE, which docker's default set does not grant.
//! The app gets the normal dumpable state back when it execs.

use std::os::fd::AsRawFd as _;

use nix::errno::Errno;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::syscall::exit_now;

/// Forks the app. In the app, returns so the caller can exec it; in init, never returns.
///
/// All signals stay blocked in init and are taken synchronously with `sigwaitinfo`, so none is
/// lost between a fork and a wait; the app gets an empty mask back before it execs.
pub(crate) fn fork_app(close_in_init: impl FnOnce()) -> Result<(), Errno> {
    // Before the fork, so no process of the container ever sees a dumpable init.
    nix::sys::prctl::set_dumpable(false)?;
    let all = SigSet::all();
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), Some(&mut old))?;
    // The app waits until init has run `close_in_init`: a fork's child may exec and run the
    // image's code before its parent is scheduled again, and would then still see init
    // holding what it is about to close (the sync socket to slate). EOF on this pipe is the
    // signal: init's end closes right after `close_in_init`.
    let (barrier_r, barrier_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the container process is single-threaded (checked before clone), so the child of
    // this fork is a complete copy; it only execs or exits.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(barrier_w);
            let mut byte = [0u8; 1];
            // Until EOF (or init gone): init holds nothing of the host any more.
            while let Err(Errno::EINTR) = nix::unistd::read(barrier_r.as_raw_fd(), &mut byte) {}
            drop(barrier_r);
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            Ok(())
        }
        ForkResult::Parent { child } => {
            drop(barrier_r);
            close_in_init();
            drop(barrier_w);
            exit_now(supervise_app(child, &all))
        }
    }
}

fn supervise_app(app: Pid, all: &SigSet) -> i32 {
    loop {
        let sig = match all.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            // The app may already be gone; its status comes with the next SIGCHLD.
            let _ = kill(app, sig);
            continue;
        }
        // One SIGCHLD may stand for many exits: reap until nothing is left to reap.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == app => return code,
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == app => return 128 + s as i32,
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
