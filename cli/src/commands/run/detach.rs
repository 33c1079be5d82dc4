//! `slate run -d`: prepares the run as the foreground path does (pull, fresh run dir, spec,
//! seccomp), writes the container's record, spec and compiled filter to the state dir, starts
//! the supervisor (`slate supervise <id>`, see `crate::supervisor`) in a session of its own and
//! returns once the supervisor says the app runs (printing the id), or with the start's error
//! and docker's exit code (125/126/127).
//!
//! Names are unique: the check, a `--replace` of the old container and the new record happen
//! under the state dir's lock, which is held until the new container runs, so two concurrent
//! `slate run -d --name web` cannot both start.

use std::io::Read as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context};

use super::{prepare, Prepared};
use crate::cli::RunArgs;
use crate::commands::ExitWith;
use crate::config::Settings;
use crate::containers;
use crate::state::{self, RestartPolicy, StateDir};
use crate::supervisor::READY_FD;
use crate::EXIT_SLATE_FAILED;

/// `slate supervise ID` (internal).
#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {
    pub id: String,
}

pub fn run(
    settings: &Settings,
    args: RunArgs,
    notifier: Option<&crate::sdnotify::Notifier>,
) -> anyhow::Result<u8> {
    detach(settings, &args, notifier).map_err(|e| {
        if e.downcast_ref::<ExitWith>().is_some() {
            e
        } else {
            ExitWith::wrap(EXIT_SLATE_FAILED, e)
        }
    })
}

fn detach(
    settings: &Settings,
    args: &RunArgs,
    notifier: Option<&crate::sdnotify::Notifier>,
) -> anyhow::Result<u8> {
    if args.tty || args.interactive {
        bail!("-t and -i cannot be used with -d: a detached container has no terminal (use `slate exec -it` to get one)");
    }
    let restart: RestartPolicy = args.restart.parse()?;
    if args.rm && restart != RestartPolicy::No {
        bail!("--rm and --restart {} contradict each other (docker refuses them too): a container that restarts is never removed on exit; drop one", args.restart);
    }
    if args.log_driver == state::LogDriver::Journald
        && !std::path::Path::new(crate::logs::JOURNAL_SOCKET).exists()
    {
        bail!(
            "--log-driver journald: {} does not exist (is systemd-journald running?)",
            crate::logs::JOURNAL_SOCKET
        );
    }
    let sd = StateDir::open(&settings.state_dir)?;
    let lock = sd.lock()?;
    containers::sweep(&sd)?;
    let existing = sd.list()?;
    remove_orphaned_logs(&settings.root.join("containers"), &sd);
    super::claim_name(&sd, &existing, args)?;

    let id = super::new_id()?;
    let prepared = prepare(settings, args, &id, notifier)?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => state::generate_name(&id, &|n| existing.iter().any(|r| r.name == n)),
    };
    let mut rec = super::base_record(settings, args, &id, name)?;
    rec.restart = restart;
    super::write_bundle(&sd, &mut rec, &prepared)?;
    // Re-reading the command line builds clap's whole command tree: only for a container
    // `slate auto-update` may replace.
    let replay =
        crate::commands::autoupdate::policy_of(&rec.labels).and_then(|_| super::replay_words());
    if let Some((_, env)) = replay.as_ref().filter(|(_, env)| !env.is_empty()) {
        state::write_atomic_mode(&sd.dir(&id).join(super::REPLAY_ENV_FILE), env, 0o600)?;
    }
    rec.replay = replay.map(|(words, _)| words);
    let Prepared { _guard, _pin, .. } = prepared;
    sd.save(&rec)?;
    // Which state dir the logs belong to: once its record is gone (a reboot empties
    // /run/slate), a later `run -d` removes them.
    std::fs::create_dir_all(&rec.log_dir)
        .with_context(|| format!("cannot create {}", rec.log_dir.display()))?;
    std::fs::write(
        rec.log_dir.join(STATE_DIR_MARK),
        sd.root().as_os_str().as_encoded_bytes(),
    )
    .with_context(|| format!("cannot write {}", rec.log_dir.display()))?;

    match start_supervisor(settings, &sd, &id) {
        Ok(supervisor) => {
            _guard.disarm();
            drop(lock);
            crate::health::spawn_monitor(&settings.root, &sd, &rec);
            // systemd follows the supervisor from now on: `run -d` is about to exit.
            if let Some(n) = notifier {
                n.started(supervisor, args.image());
            }
            println!("{id}");
            Ok(0)
        }
        Err(e) => {
            // The run dir goes with the guard; the record and logs with this.
            containers::remove_files(&sd, &rec);
            Err(e)
        }
    }
}

/// The file in a container's log dir that names its state dir.
const STATE_DIR_MARK: &str = "state-dir";

/// Removes the log dirs of containers of this state dir whose records are gone (after a
/// reboot, since /run/slate is a tmpfs); logs of other state dirs are left alone.
fn remove_orphaned_logs(containers: &std::path::Path, sd: &StateDir) {
    let Ok(entries) = std::fs::read_dir(containers) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let ours = std::fs::read(dir.join(STATE_DIR_MARK))
            .is_ok_and(|m| m == sd.root().as_os_str().as_encoded_bytes());
        if ours && !sd.dir(&id).exists() {
            tracing::info!(dir = %dir.display(), "removing the logs of a forgotten container");
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %err, "cannot remove old logs");
            }
        }
    }
}

/// Starts `slate supervise <id>` and waits for its ready line; returns the supervisor's PID.
pub(crate) fn start_supervisor(
    settings: &Settings,
    sd: &StateDir,
    id: &str,
) -> anyhow::Result<u32> {
    let (ready_r, ready_w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let raw_w = ready_w.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("slate")
        .arg("--root")
        .arg(&settings.root)
        .arg("--state-dir")
        .arg(sd.root())
        .arg("supervise")
        .arg(id)
        // Like any daemon: no hold on the caller's directory (it may be a mount to unmount).
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Nothing of ours for the supervisor's own logging: it would end in /dev/null.
        .env_remove("SLATE_LOG");
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (setsid, dup2) on descriptors that exist in the child.
    unsafe {
        cmd.pre_exec(move || {
            // A session of its own: the user's terminal closing (SIGHUP) or a ^C at it must not
            // reach the supervisor.
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            // dup2 clears close-on-exec on the copy: the supervisor gets fd 3 and nothing else.
            if raw_w == READY_FD {
                nix::fcntl::fcntl(
                    raw_w,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )
                .map_err(std::io::Error::from)?;
            } else {
                nix::unistd::dup2(raw_w, READY_FD).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("cannot start the supervisor")?;
    drop(ready_w);
    let mut line = String::new();
    std::fs::File::from(ready_r)
        .read_to_string(&mut line)
        .context("cannot read from the supervisor")?;
    let line = line.trim();
    if line == "ok" {
        let pid = child.id();
        // Not waited for: it outlives us, and init reaps it once we are gone.
        drop(child);
        return Ok(pid);
    }
    let mut child = child;
    if let Some(rest) = line.strip_prefix("err ") {
        let _ = child.wait();
        let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        let code = code.parse::<u8>().unwrap_or(EXIT_SLATE_FAILED);
        return Err(ExitWith::wrap(
            code,
            anyhow!("{msg}").context("cannot start the container"),
        ));
    }
    let status = child.wait();
    Err(anyhow!(
        "the supervisor exited before starting the container ({status:?})"
    ))
}
