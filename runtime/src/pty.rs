//! Terminals for `process.terminal: true`: the pty pair, the host terminal in raw mode for the
//! duration of the run, window size changes, and the byte relay between the host's stdin/stdout
//! and the pty master.
//!
//! Guarantees: the host terminal's settings are restored when [`RawMode`] is dropped, whichever
//! way the run ends; the relay never blocks the supervisor (both ends are non-blocking).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

use crate::error::Error;
use crate::syscall;

/// A pty pair; the slave goes to the container, the master stays with the supervisor.
#[derive(Debug)]
pub(crate) struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

impl Pty {
    /// Opens a pty sized like the host terminal on stdin, if there is one.
    pub fn open() -> Result<Pty, Error> {
        let host = std::io::stdin();
        let size = syscall::get_winsize(host.as_fd()).ok();
        let pair = nix::pty::openpty(size.as_ref(), None).map_err(Error::sys("openpty"))?;
        for fd in [&pair.master, &pair.slave] {
            fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
                .map_err(Error::sys("fcntl"))?;
        }
        Ok(Pty {
            master: pair.master,
            slave: pair.slave,
        })
    }
}

/// Copies the host terminal's window size to the container's.
pub(crate) fn copy_winsize(master: BorrowedFd<'_>) {
    let host = std::io::stdin();
    if let Ok(ws) = syscall::get_winsize(host.as_fd()) {
        // The container may already have closed its end; nothing to resize then.
        let _ = syscall::set_winsize(master, &ws);
    }
}

/// The host terminal in raw mode, so keystrokes (including ^C) go to the container untouched;
/// restored on drop.
pub(crate) struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = match tcgetattr(stdin.as_fd()) {
            Ok(t) => t,
            // Not a terminal (a pipe, a file): nothing to switch.
            Err(_) => return RawMode { saved: None },
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).is_err() {
            return RawMode { saved: None };
        }
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), Error> {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(Error::sys("fcntl"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(Error::sys("fcntl"))?;
    Ok(())
}

/// What one relay step saw on its input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Data moved, or nothing to read right now.
    Open,
    /// End of input (EOF, or EIO on a master whose slave is gone).
    Closed,
}

/// Moves what is readable from `from` to `to` (best effort on the writing side: a reader that
/// went away must not stop the supervisor).
pub(crate) fn pump(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> Flow {
    let mut buf = [0u8; 8192];
    loop {
        match nix::unistd::read(from.as_raw_fd(), &mut buf) {
            Ok(0) => return Flow::Closed,
            Ok(n) => {
                if write_blocking(to, &buf[..n]).is_err() {
                    return Flow::Open;
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Flow::Open,
            Err(_) => return Flow::Closed,
        }
    }
}

fn write_blocking(fd: BorrowedFd<'_>, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u8));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
