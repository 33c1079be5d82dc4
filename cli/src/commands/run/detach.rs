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
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use super::{prepare, Prepared};
use crate::cli::RunArgs;
use crate::commands::ExitWith;
use crate::config::Settings;
use crate::containers;
use crate::state::{self, Record, RestartPolicy, StateDir, Status};
use crate::supervisor::READY_FD;
use crate::EXIT_SLATE_FAILED;

/// `slate supervise ID` (internal).
#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {
    pub id: String,
}

/// How long `--replace` gives the old container to stop before SIGKILL.
const REPLACE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(settings: &Settings, args: RunArgs) -> anyhow::Result<u8> {
    detach(settings, &args).map_err(|e| {
        if e.downcast_ref::<ExitWith>().is_some() {
            e
        } else {
            ExitWith::wrap(EXIT_SLATE_FAILED, e)
        }
    })
}

fn detach(settings: &Settings, args: &RunArgs) -> anyhow::Result<u8> {
    if args.tty || args.interactive {
        bail!("-t and -i cannot be used with -d: a detached container has no terminal (use `slate exec -it` to get one)");
    }
    let restart: RestartPolicy = args.restart.parse()?;
    let log_max_size = crate::config::parse_size(&args.log_max_size)
        .with_context(|| format!("invalid --log-max-size {:?}", args.log_max_size))?;
    if let Some(n) = &args.name {
        state::validate_name(n)?;
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
    if let Some(name) = &args.name {
        for old in existing.iter().filter(|r| &r.name == name) {
            if !args.replace {
                bail!(
                    "the name {name:?} is in use by container {} ({}): remove it with `slate rm -f {name}`, or use --replace",
                    old.short_id(),
                    old.status.as_str()
                );
            }
            containers::stop(&sd, old, REPLACE_TIMEOUT)
                .with_context(|| format!("cannot stop the container {name} to replace it"))?;
            containers::remove(&sd, old, true)?;
        }
    }

    let Prepared {
        run_dir,
        options,
        _guard,
        _pin,
        digest,
        stop_signal,
    } = prepare(settings, args)?;
    let id = options.id.clone();
    let name = match &args.name {
        Some(n) => n.clone(),
        None => state::generate_name(&id, &|n| existing.iter().any(|r| r.name == n)),
    };
    let lower = match &options.rootfs {
        slate_runtime::Rootfs::Overlay { lower, .. } => lower.clone(),
        slate_runtime::Rootfs::Dir(d) => vec![d.clone()],
    };
    let dir = sd.dir(&id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let spec_json =
        serde_json::to_vec_pretty(&options.spec).context("cannot serialise the spec")?;
    state::write_atomic(&dir.join("spec.json"), &spec_json)?;
    if let Some(p) = &options.seccomp {
        state::write_atomic(&dir.join("seccomp.bpf"), &p.to_bytes())?;
    }
    let rec = Record {
        id: id.clone(),
        name,
        image: args.image().to_string(),
        image_digest: digest,
        command: options
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default(),
        status: Status::Created,
        pid: None,
        pid_start: None,
        supervisor_pid: None,
        supervisor_start: None,
        exit_code: None,
        error: None,
        created: state::now_rfc3339(),
        started: None,
        finished: None,
        run_dir: run_dir.clone(),
        log_dir: settings.root.join("containers").join(&id),
        store_root: settings.root.clone(),
        cgroups_path: options
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone()),
        cgroup_paths: Vec::new(),
        stop_signal: stop_signal.as_str().to_string(),
        restart,
        restart_count: 0,
        log_driver: args.log_driver,
        log_max_size,
        log_max_files: args.log_max_files,
        auto_remove: args.rm,
        init: options.init,
        lower,
        read_only: args.read_only,
        seccomp_file: options.seccomp.is_some(),
        labels: args
            .label
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (l.clone(), String::new()),
            })
            .collect(),
    };
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
        Ok(()) => {
            _guard.disarm();
            drop(lock);
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

/// Starts `slate supervise <id>` and waits for its ready line.
fn start_supervisor(settings: &Settings, sd: &StateDir, id: &str) -> anyhow::Result<()> {
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
        // Not waited for: it outlives us, and init reaps it once we are gone.
        drop(child);
        return Ok(());
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
