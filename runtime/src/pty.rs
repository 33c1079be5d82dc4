//! Terminals for `process.terminal: true`: the pty pair, the host terminal in raw mode for the
//! duration of the run, window size changes, and the byte relay between the host's stdin/stdout
//! and the pty master.
//!
//! Guarantees: the host terminal's settings are restored when [`RawMode`] is dropped, whichever
//! way the run ends; the relay never blocks the supervisor (both ends are non-blocking).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, OutputFlags, SetArg, Termios};

use crate::error::Error;
use crate::syscall;

/// Child, after `pivot_root`: opens a pty in the container's own devpts instance (so the
/// container sees its terminal under its /dev/pts, and nothing of the host's), sizes it like the
/// host terminal, makes it the controlling terminal and stdio of the child's session (created
/// right after clone), and returns
/// the master for the supervisor.
pub(crate) fn open_in_container(
    size: Option<&libc::winsize>,
    owner: nix::unistd::Uid,
) -> Result<OwnedFd, Errno> {
    let master = nix::fcntl::open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let master: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(master) };
    syscall::unlock_pty(master.as_fd())?;
    let slave = syscall::open_pty_peer(master.as_fd())?;
    // The user the app runs as must be able to reopen its own terminal (/dev/tty).
    nix::unistd::fchown(slave.as_raw_fd(), Some(owner), None)?;
    if let Some(ws) = size {
        syscall::set_winsize(master.as_fd(), ws)?;
    }
    syscall::set_controlling_tty(slave.as_fd())?;
    for target in 0..=2 {
        nix::unistd::dup2(slave.as_raw_fd(), target)?;
    }
    Ok(master)
}

/// The host terminal's size: stdin's, or stdout's when no input is attached (a caller may
/// have made stdin /dev/null while the output still goes to the terminal).
pub(crate) fn host_winsize() -> Option<libc::winsize> {
    syscall::get_winsize(std::io::stdin().as_fd())
        .or_else(|_| syscall::get_winsize(std::io::stdout().as_fd()))
        .ok()
}

/// Copies the host terminal's window size to the container's.
pub(crate) fn copy_winsize(master: BorrowedFd<'_>) {
    if let Some(ws) = host_winsize() {
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

/// A container terminal with no input attached: the host terminal keeps its input side (so
/// a ^C typed there signals the supervisor, which forwards it), but its output processing is
/// turned off, because the container's own terminal has already turned each `\n` into
/// `\r\n`; restored on drop.
pub(crate) struct OutputOnly {
    saved: Option<Termios>,
}

impl OutputOnly {
    pub fn enter() -> OutputOnly {
        let stdout = std::io::stdout();
        let saved = match tcgetattr(stdout.as_fd()) {
            Ok(t) => t,
            // Not a terminal: the bytes pass unchanged anyway.
            Err(_) => return OutputOnly { saved: None },
        };
        let mut raw_out = saved.clone();
        raw_out.output_flags.remove(OutputFlags::OPOST);
        if tcsetattr(stdout.as_fd(), SetArg::TCSANOW, &raw_out).is_err() {
            return OutputOnly { saved: None };
        }
        OutputOnly { saved: Some(saved) }
    }
}

impl Drop for OutputOnly {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = tcsetattr(std::io::stdout().as_fd(), SetArg::TCSANOW, t);
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

/// Moves one read's worth from `from` to `to` (best effort on the writing side: a reader that
/// went away must not stop the supervisor). One read per call, because the host's stdin stays
/// blocking (it is shared with the user's shell): poll said it is readable, so one read will
/// not block, a second might.
pub(crate) fn pump(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> Flow {
    let mut buf = [0u8; 8192];
    loop {
        match nix::unistd::read(from.as_raw_fd(), &mut buf) {
            Ok(0) => return Flow::Closed,
            Ok(n) => {
                let _ = write_blocking(to, &buf[..n]);
                return Flow::Open;
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Flow::Open,
            Err(_) => return Flow::Closed,
        }
    }
}

/// Moves everything readable from the non-blocking `from` to `to`: what the app wrote just
/// before it exited.
pub(crate) fn drain(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    for _ in 0..1024 {
        let mut fds = [nix::poll::PollFd::new(from, nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        if pump(from, to) == Flow::Closed {
            return;
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
