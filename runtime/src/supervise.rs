//! The supervisor: the calling process stays the container's parent, forwards the signals a
//! user or service manager sends it, relays the terminal, reaps the container and reports how
//! it ended.
//!
//! Guarantees: SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH received by the
//! supervisor reach the container's PID 1 (which, being PID 1, acts only on those it handles;
//! `init: true` passes them on to the app). The status is the container's own: its exit code,
//! or 128+N when signal N killed it. The signal mask and the host terminal's mode are restored
//! before returning.

use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::container::{Container, ExitStatus};
use crate::error::Error;
use crate::pty::{copy_winsize, drain, pump, set_nonblocking, Flow, OutputOnly, RawMode};

/// The signals the supervisor passes on to the container.
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Restores the thread's signal mask on drop.
struct MaskGuard(SigSet);

impl Drop for MaskGuard {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// Supervises `c` until it exits: forwards signals, relays its terminal (the caller's stdin
/// into it only when [`crate::ContainerOptions::attach_stdin`] says so), reaps it.
pub fn supervise(mut c: Container) -> Result<ExitStatus, Error> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
        .map_err(Error::sys("blocking signals"))?;
    let _restore = MaskGuard(old);
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(Error::sys("signalfd"))?;

    let master = c.pty_master.take();
    let attach = c.attach_stdin;
    relay(&sfd, master.as_ref(), attach, &mut c)?;
    let status = c.wait()?;
    Ok(status)
}

/// What [`relay`] relays for: a container's process or an exec'd one.
pub(crate) trait Relayed {
    /// Passes on a signal the caller got.
    fn forward(&mut self, sig: Signal);
    /// The process's status once it is gone, without blocking.
    fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error>;
}

impl Relayed for Container {
    fn forward(&mut self, sig: Signal) {
        tracing::debug!(signal = %sig, "forwarding signal to the container");
        // The container may be exiting right now; its status comes with SIGCHLD.
        let _ = self.kill(sig);
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        Container::try_wait(self)
    }
}

/// The one relay loop, for a container's process ([`supervise`]) and an exec'd one
/// (`exec::exec`): until `target` reports the process gone, it passes it the signals read
/// from `sfd` (SIGCHLD only wakes it; SIGWINCH also resizes the terminal) and,
/// with a terminal, copies its output to our stdout and, when `attach_stdin`, our stdin into
/// it. The host terminal is in raw mode while input is relayed, output-only otherwise, and
/// restored on return; what the app wrote just before exiting is drained from the pty.
pub(crate) fn relay(
    sfd: &SignalFd,
    master: Option<&OwnedFd>,
    attach_stdin: bool,
    target: &mut dyn Relayed,
) -> Result<ExitStatus, Error> {
    // Only input that is attached is relayed: `-t` without `-i` gives the app a terminal that
    // none of the caller's keystrokes (nor the NUL or EOF a pipe's end produces) reach.
    let attach = master.is_some() && attach_stdin;
    let _raw = attach.then(RawMode::enter);
    let _output_only = (master.is_some() && !attach).then(OutputOnly::enter);
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut stdin_open = attach;
    let mut master_open = master.is_some();
    if let Some(m) = master {
        set_nonblocking(m.as_fd())?;
        copy_winsize(m.as_fd());
    }

    // A SIGCHLD that came before the mask was set is gone; look once before waiting.
    let mut status = target.try_wait()?;
    while status.is_none() {
        let mut fds: Vec<PollFd> = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let stdin_idx = stdin_open.then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let master_idx = match (master, master_open) {
            (Some(m), true) => {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("poll")(e)),
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (stdin_ready, master_ready) = (ready(stdin_idx), ready(master_idx));
        drop(fds);
        if let (Some(m), true) = (master, stdin_ready) {
            if pump(stdin.as_fd(), m.as_fd()) == Flow::Closed {
                stdin_open = false;
            }
        }
        if let (Some(m), true) = (master, master_ready) {
            if pump(m.as_fd(), stdout.as_fd()) == Flow::Closed {
                master_open = false;
            }
        }
        while let Some(info) = sfd.read_signal().map_err(Error::sys("reading signals"))? {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if sig == Signal::SIGCHLD {
                continue;
            }
            if sig == Signal::SIGWINCH {
                if let Some(m) = master {
                    copy_winsize(m.as_fd());
                }
            }
            target.forward(sig);
        }
        status = target.try_wait()?;
    }
    if let (Some(m), true) = (master, master_open) {
        // What the app wrote just before exiting is still in the pty.
        drain(m.as_fd(), stdout.as_fd());
    }
    status.ok_or(Error::ChildDied)
}
