//! The supervisor of a detached container: `slate run -d` starts it as a fresh process
//! (`/proc/self/exe supervise <id>`, in a session of its own, stdio on /dev/null) and returns
//! once it reports the container started. It then holds the container for its whole life:
//! relays its stdout and stderr to the log sink, passes on the signals it gets, keeps the
//! record in the state dir current, restarts per `--restart` with backoff (a fresh rootfs
//! each time), and cleans up when the container is gone for good.
//!
//! Why a fresh exec and not just a fork of `slate run`: the supervisor lives as long as the
//! container, so it should hold nothing but what supervising needs. A fork would keep the pull
//! machinery's heap and every page the CLI touched; a fresh process has a few hundred KB of
//! heap and no threads (the runtime refuses to clone from a multithreaded process).
//! CVE-2019-5736 does not apply: this binary runs on the host only; the container process is a
//! clone that execs the app directly.
//!
//! Ready protocol (fd 3, a pipe to `slate run -d`): one line, `ok` once the app runs, or
//! `err <exit code> <message>` when the first start fails; EOF without a line means the
//! supervisor died.

use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use oci_spec::runtime::Spec;
use slate_runtime::{Container, ContainerOptions, ExitStatus, Rootfs, FORWARDED};

use crate::config::Settings;
use crate::logs::{Lines, Sink, Stream};
use crate::state::{self, Record, RestartPolicy, StateDir, Status};

/// First backoff between restarts; doubled after each quick failure, capped.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A run that lasted this long resets the backoff.
const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// The descriptor `slate run -d` reads the ready line from.
pub const READY_FD: i32 = 3;

/// Entry point of `slate supervise <id>` (hidden).
pub fn run(settings: &Settings, id: &str) -> anyhow::Result<u8> {
    run_in(&settings.state_dir, id)
}

/// The exact command line `slate run -d` starts the supervisor with
/// (`--root R --state-dir S supervise ID`), recognised before clap and the log subscriber are
/// set up: the supervisor lives as long as its container, and every page of code it runs once
/// (building clap's whole command tree, the env filter) would stay resident. `None` for any
/// other command line.
pub fn fast_path() -> Option<u8> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let [root, _, state, state_dir, sup, id] = args.as_slice() else {
        return None;
    };
    if root != "--root" || state != "--state-dir" || sup != "supervise" {
        return None;
    }
    let id = id.to_str()?;
    // Its stderr is /dev/null: errors are reported through the ready pipe or the record.
    Some(match run_in(Path::new(state_dir), id) {
        Ok(code) => code,
        Err(_) => crate::EXIT_SLATE_FAILED,
    })
}

fn run_in(state_dir: &Path, id: &str) -> anyhow::Result<u8> {
    // SAFETY: fd 3 is the ready pipe `slate run -d` dup'ed there for us and nothing else in
    // this fresh process owns it; fcntl first checks it is open at all.
    let ready = if nix::fcntl::fcntl(READY_FD, nix::fcntl::FcntlArg::F_GETFD).is_ok() {
        Some(unsafe { OwnedFd::from_raw_fd(READY_FD) })
    } else {
        None
    };
    // `run -d` starts us from its own sealed binary, so this only checks; were it not sealed,
    // the re-exec keeps the ready pipe (not yet close-on-exec).
    if let Err(e) = slate_runtime::seal::ensure(state_dir) {
        report(ready, &format!("err 125 {e:#}"));
        return Err(e.into());
    }
    // Nothing may leak into the container: the runtime closes fds above 2 before exec, but
    // keep the ready pipe close-on-exec anyway.
    if let Some(r) = &ready {
        let _ = nix::fcntl::fcntl(
            r.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    let sd = StateDir::open(state_dir)?;
    let mut sup = match Supervisor::new(sd, id) {
        Ok(s) => s,
        Err(e) => {
            report(ready, &format!("err 125 {e:#}"));
            return Err(e);
        }
    };
    sup.main(ready)
}

fn report(ready: Option<OwnedFd>, line: &str) {
    if let Some(fd) = ready {
        let mut f = std::fs::File::from(fd);
        let _ = writeln!(f, "{}", line.replace('\n', " "));
    }
}

struct Supervisor {
    /// The container's hold on its layers, taken over from `slate run -d` (which waits for
    /// this process to be ready before it lets go of its own).
    _pin: slate_image::store::LayerPin,
    sd: StateDir,
    rec: Record,
    spec: Spec,
    sink: Sink,
    signals: SignalFd,
    /// A stop was asked for through a signal to the supervisor itself.
    stopping: bool,
    /// The container's network, kept across restarts; released when it is gone for good.
    network: Option<crate::network::Attached>,
}

impl Supervisor {
    fn new(sd: StateDir, id: &str) -> anyhow::Result<Supervisor> {
        let mut rec = sd.load(id)?;
        let me = std::process::id() as i32;
        rec.supervisor_pid = Some(me);
        rec.supervisor_start = state::proc_start_time(me);
        let spec_path = sd.config_path(id)?;
        let spec = slate_runtime::bundle::load(&spec_path)
            .with_context(|| format!("cannot read {}", spec_path.display()))?;
        let pin = slate_image::store::Store::open(&rec.store_root)
            .and_then(|s| s.hold_pin(&rec.run_dir))
            .context("cannot hold the container's layers")?;
        let sink = Sink::open(&rec)?;
        // The run dir's owner is the supervisor now (the foreground sweep checks it).
        let owner = rec.run_dir.join("owner");
        std::fs::write(&owner, crate::commands::run::owner_line(me as u32))
            .with_context(|| format!("cannot write {}", owner.display()))?;

        let mut mask = SigSet::empty();
        for s in FORWARDED {
            mask.add(s);
        }
        mask.add(Signal::SIGCHLD);
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .context("cannot block signals")?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .context("cannot create a signalfd")?;
        Ok(Supervisor {
            _pin: pin,
            sd,
            rec,
            spec,
            sink,
            signals,
            stopping: false,
            network: None,
        })
    }

    fn save(&self) {
        if let Err(e) = self.sd.save(&self.rec) {
            // The record is gone when `slate rm -f` raced with us; nothing to keep current.
            tracing::debug!("cannot save the record: {e:#}");
        }
    }

    fn stop_wanted(&self) -> bool {
        self.stopping || self.sd.stop_requested(&self.rec.id)
    }

    fn main(&mut self, mut ready: Option<OwnedFd>) -> anyhow::Result<u8> {
        match crate::network::attach(&self.sd, &self.rec) {
            Ok(n) => self.network = n,
            Err(e) => {
                let msg = format!("{e:#}");
                self.rec.error = Some(msg.clone());
                report(ready.take(), &format!("err 125 {msg}"));
                self.finish(125);
                return Ok(0);
            }
        }
        let mut backoff = BACKOFF_START;
        loop {
            let started = Instant::now();
            let code = match self.start() {
                Ok((c, out, err)) => {
                    if let Some(r) = ready.take() {
                        report(Some(r), "ok");
                    }
                    self.relay(c, out, err)
                }
                Err(e) => {
                    let code = e
                        .downcast_ref::<slate_runtime::Error>()
                        .map(|e| e.exit_code())
                        .unwrap_or(125);
                    let msg = format!("{e:#}");
                    self.sink
                        .note(&format!("cannot start the container: {msg}"));
                    self.rec.error = Some(msg.clone());
                    if let Some(r) = ready.take() {
                        // The first start failed: `slate run -d` reports it and removes us.
                        report(Some(r), &format!("err {code} {msg}"));
                        self.finish(code);
                        return Ok(0);
                    }
                    code
                }
            };
            self.rec.exit_code = Some(code);
            self.rec.finished = Some(state::now_rfc3339());
            self.rec.pid = None;
            self.rec.pid_start = None;
            if !self.should_restart(code) {
                break;
            }
            if started.elapsed() >= BACKOFF_RESET {
                backoff = BACKOFF_START;
            }
            self.rec.restart_count += 1;
            self.rec.status = Status::Restarting;
            self.save();
            self.sink.note(&format!(
                "container exited with {code}; restart {} in {} ms",
                self.rec.restart_count,
                backoff.as_millis()
            ));
            if !self.sleep(backoff) {
                break;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        let code = self.rec.exit_code.unwrap_or(0);
        self.finish(code);
        Ok(0)
    }

    fn should_restart(&self, code: i32) -> bool {
        if self.stop_wanted() {
            return false;
        }
        match self.rec.restart {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure { max } => {
                code != 0 && max.is_none_or(|m| self.rec.restart_count < m)
            }
        }
    }

    /// Sleeps for `d` unless a stop comes first; false when it did.
    fn sleep(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.stop_wanted() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            // Wake up every 100 ms to see a stop marker written by `slate stop`.
            let ms = left.min(Duration::from_millis(100)).as_millis() as u16;
            let mut fds = [PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(ms));
            self.drain_signals(None);
        }
    }

    /// Lays out a fresh rootfs and starts the container with its stdout and stderr on pipes.
    fn start(&mut self) -> anyhow::Result<(Container, OwnedFd, OwnedFd)> {
        let run_dir = self.rec.run_dir.clone();
        let upper = run_dir.join("upper");
        let work = run_dir.join("work");
        let target = run_dir.join("rootfs");
        // Fresh every time: what the last run wrote is gone.
        for d in [&upper, &work] {
            match std::fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot remove {}", d.display())),
            }
        }
        for d in [&upper, &work, &target] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let rootfs = Rootfs::Overlay {
            lower: self.rec.lower.clone(),
            upper,
            work,
            target,
        };
        let mut opts = ContainerOptions::new(self.rec.id.clone(), self.spec.clone(), rootfs);
        opts.init = self.rec.init;
        opts.seccomp_cache = Some(crate::commands::run::seccomp_cache(&self.rec.store_root));
        opts.clone_into_cgroup = crate::commands::run::clone_into_cgroup();

        let (out_r, out_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        let (err_r, err_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        // The runtime hands the write ends to the container and closes its own copies: the
        // pipes close when the container's last writer does. Its stdin is ours, /dev/null.
        opts.stdio = [None, Some(out_w), Some(err_w)];
        let c = Container::spawn(opts).map_err(|e| anyhow!(e))?;

        let pid = c.pid().as_raw();
        self.rec.pid = Some(pid);
        self.rec.pid_start = state::proc_start_time(pid);
        self.rec.status = Status::Running;
        self.rec.error = None;
        self.rec.started = Some(state::now_rfc3339());
        self.rec.cgroup_paths = c.cgroup_paths();
        self.save();
        if self.stop_wanted() {
            // `slate stop` came while we were starting: it may have missed this process.
            let _ = c.kill(Signal::SIGKILL);
        }
        Ok((c, out_r, err_r))
    }

    /// Relays output and signals until the container exits; returns docker's exit code.
    fn relay(&mut self, mut c: Container, out: OwnedFd, err: OwnedFd) -> i32 {
        let mut pipes = [
            (Some(out), Lines::new(Stream::Stdout)),
            (Some(err), Lines::new(Stream::Stderr)),
        ];
        let mut buf = vec![0u8; 16 * 1024];
        let mut status: Option<ExitStatus> = c.try_wait().ok().flatten();
        // After the exit, the pipes get a short grace to deliver what is in them (the cgroup
        // removal kills any writer left).
        let mut deadline: Option<Instant> = None;
        loop {
            if status.is_some() && deadline.is_none() {
                if let Err(e) = c.wait() {
                    tracing::warn!(error = %e, "cleaning up after the container");
                }
                deadline = Some(Instant::now() + Duration::from_secs(2));
            }
            let open = pipes.iter().any(|(p, _)| p.is_some());
            if !open && status.is_some() {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            let mut which = Vec::new();
            for (i, (p, _)) in pipes.iter().enumerate() {
                if let Some(p) = p {
                    fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                    which.push(i);
                }
            }
            let timeout = if deadline.is_some() {
                PollTimeout::from(100u16)
            } else {
                PollTimeout::NONE
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "poll");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let ready: Vec<usize> = fds[1..]
                .iter()
                .zip(&which)
                .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, i)| *i)
                .collect();
            drop(fds);
            for i in ready {
                let (pipe, lines) = &mut pipes[i];
                let Some(fd) = pipe.as_ref() else { continue };
                match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                    Ok(0) => {
                        lines.finish(&mut self.sink);
                        *pipe = None;
                    }
                    Ok(n) => lines.feed(&buf[..n], &mut self.sink),
                    Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                    Err(_) => {
                        lines.finish(&mut self.sink);
                        *pipe = None;
                    }
                }
            }
            self.drain_signals(Some(&c));
            if status.is_none() {
                status = c.try_wait().ok().flatten();
            }
        }
        for (_, lines) in pipes.iter_mut() {
            lines.finish(&mut self.sink);
        }
        let status = match status {
            Some(s) => s,
            None => c.wait().unwrap_or(ExitStatus::Exited(255)),
        };
        if let Err(e) = c.wait() {
            tracing::warn!(error = %e, "cleaning up after the container");
        }
        status.code()
    }

    /// Reads pending signals: forwards them to the container, and takes a TERM, INT or QUIT
    /// sent to the supervisor as a stop (no restart).
    fn drain_signals(&mut self, c: Option<&Container>) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if sig == Signal::SIGCHLD {
                continue;
            }
            if matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) {
                self.stopping = true;
            }
            if let Some(c) = c {
                let _ = c.kill(sig);
            }
        }
    }

    /// The container is gone for good: drop its scratch, keep (or, with `--rm`, drop) the
    /// record and logs.
    fn finish(&mut self, code: i32) {
        if let Some(mut n) = self.network.take() {
            n.release();
        }
        if !self.rec.auto_remove {
            crate::commands::lifecycle::keep_etc_files(&self.sd, &self.rec);
        }
        remove_run_dir(&self.rec.run_dir);
        self.rec.status = Status::Exited;
        self.rec.exit_code = Some(code);
        self.rec.pid = None;
        self.rec.pid_start = None;
        if self.rec.finished.is_none() {
            self.rec.finished = Some(state::now_rfc3339());
        }
        if self.rec.auto_remove {
            let _ = std::fs::remove_dir_all(&self.rec.log_dir);
            let _ = self.sd.remove(&self.rec.id);
        } else {
            self.save();
        }
    }
}

/// Removes a run's scratch directory (the overlay was mounted in the container's own mount
/// namespace, so nothing is mounted there on the host).
pub fn remove_run_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the run directory")
        }
    }
}
