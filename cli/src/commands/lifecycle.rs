//! `slate start`, `restart`, `pause`, `unpause` and `rename`: docker's verbs for a
//! container that already has a record.
//!
//! `start` runs a stopped detached container again, as `run -d` would have: a new supervisor,
//! the recorded spec and flags, and, slate's promise, a fresh root filesystem (nothing the
//! last run wrote outside its volumes survives). What the run needs besides the record is
//! kept when it exits: its generated /etc files, in `<state>/<id>/etc/` (the run directory
//! itself goes, since the next `slate run` sweeps any without a live owner).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::config::Settings;
use crate::containers;
use crate::state::{self, Record, StateDir, Status};

/// The generated files a run bind-mounts into /etc, kept beside a stopped container's record.
pub const ETC_FILES: [&str; 3] = ["resolv.conf", "hosts", "hostname"];
const ETC_DIR: &str = "etc";
/// Present while the container is frozen by `slate pause`.
pub const PAUSED_FILE: &str = "paused";

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Container names or ids (prefixes)
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// Seconds to wait for the stop before killing [default: the container's --stop-timeout, else 10]
    #[arg(short = 't', long = "time", visible_alias = "timeout")]
    pub time: Option<u64>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

/// Keeps a finished run's /etc files beside its record, for `slate start`.
pub fn keep_etc_files(sd: &StateDir, rec: &Record) {
    let dir = sd.dir(&rec.id).join(ETC_DIR);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    for f in ETC_FILES {
        let from = rec.run_dir.join(f);
        if let Err(e) = std::fs::copy(&from, dir.join(f)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %from.display(), error = %e, "cannot keep a container's /etc file");
            }
        }
    }
}

pub fn start(settings: &Settings, args: StartArgs) -> anyhow::Result<u8> {
    let sd = StateDir::open(&settings.state_dir)?;
    let results = containers::for_each_parallel(&args.containers, |key| {
        start_one(settings, &sd, key)?;
        Ok(())
    });
    Ok(containers::report(&args.containers, results))
}

fn start_one(settings: &Settings, sd: &StateDir, key: &str) -> anyhow::Result<()> {
    let lock = sd.lock()?;
    containers::sweep(sd)?;
    let mut rec = sd.find(key)?;
    if rec.is_active() {
        // docker: starting a running container is not an error.
        return Ok(());
    }
    if rec.foreground {
        bail!(
            "container {} ran in the foreground: start it again with `slate run`",
            rec.name
        );
    }
    let store = slate_image::store::Store::open(&rec.store_root)?;
    let image = store
        .images()?
        .into_iter()
        .find(|i| i.digest.to_string() == rec.image_digest)
        .with_context(|| {
            format!(
                "container {}: its image {} is no longer in the store (removed with rmi or prune); pull it again, or `slate rm` the container and run a new one",
                rec.name, rec.image
            )
        })?;
    let etc = sd.dir(&rec.id).join(ETC_DIR);
    if !etc.join("hosts").is_file() {
        bail!(
            "container {} was stopped by an older slate and cannot be started again: `slate rm` it and run a new one",
            rec.name
        );
    }
    let run_dir = rec.run_dir.clone();
    crate::supervisor::remove_run_dir(&run_dir);
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let guard = super::run::RunDirGuard::new(run_dir.clone());
    std::fs::write(
        run_dir.join("owner"),
        super::run::owner_line(std::process::id()),
    )
    .with_context(|| format!("cannot write {}", run_dir.join("owner").display()))?;
    for f in ETC_FILES {
        copy_into(&etc.join(f), &run_dir.join(f))?;
    }
    let pin = store
        .pin_layers(&run_dir, &image)
        .with_context(|| format!("cannot pin the layers of {}", image.display_name()))?;
    rec.lower = slate_image::rootfs::lower_dirs(&store, &image)?;
    rec.status = Status::Created;
    rec.exit_code = None;
    rec.error = None;
    rec.finished = None;
    rec.pid = None;
    rec.pid_start = None;
    rec.supervisor_pid = None;
    rec.supervisor_start = None;
    sd.clear_stop(&rec.id);
    sd.save(&rec)?;
    match super::run::start_supervisor(settings, sd, &rec.id) {
        Ok(_) => {
            guard.disarm();
            drop(pin);
            drop(lock);
            if let Ok(r) = sd.load(&rec.id) {
                crate::health::spawn_monitor(&settings.root, sd, &r);
            }
            Ok(())
        }
        Err(e) => {
            // The supervisor recorded why (exited, with the error) when it got that far.
            if let Ok(mut r) = sd.load(&rec.id) {
                if r.status == Status::Created {
                    r.status = Status::Exited;
                    r.error = Some(format!("{e:#}"));
                    let _ = sd.save(&r);
                }
            }
            Err(e)
        }
    }
}

fn copy_into(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
}

pub fn restart(settings: &Settings, args: RestartArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let results = containers::for_each_parallel(&args.containers, |key| {
        let rec = sd.find(key)?;
        let secs = super::stop::timeout_of(args.time, &rec);
        containers::stop(&sd, &rec, Duration::from_secs(secs))?;
        start_one(settings, &sd, key)?;
        Ok(())
    });
    Ok(containers::report(&args.containers, results))
}

fn cgroup_of(rec: &Record) -> anyhow::Result<slate_runtime::cgroups::Cgroup> {
    slate_runtime::cgroups::Cgroup::open_recorded(
        &rec.id,
        rec.cgroups_path.as_deref(),
        &rec.cgroup_paths,
    )
    .with_context(|| format!("cannot find the cgroup of container {}", rec.name))
}

pub fn pause(settings: &Settings, args: PauseArgs, frozen: bool) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let results = containers::for_each_parallel(&args.containers, |key| {
        let rec = sd.find(key)?;
        if !rec.is_active() || !rec.container_alive() {
            bail!("container {} is not running", rec.name);
        }
        let marker = sd.dir(&rec.id).join(PAUSED_FILE);
        let paused = marker.exists();
        if paused == frozen {
            bail!(
                "container {} is {}",
                rec.name,
                if frozen {
                    "already paused"
                } else {
                    "not paused"
                }
            );
        }
        set_frozen(&sd, &rec, frozen)?;
        Ok(())
    });
    Ok(containers::report(&args.containers, results))
}

/// Freezes or thaws the container's cgroup and keeps the marker `ps` shows.
pub fn set_frozen(sd: &StateDir, rec: &Record, frozen: bool) -> anyhow::Result<()> {
    let marker = sd.dir(&rec.id).join(PAUSED_FILE);
    let cg = cgroup_of(rec)?;
    if frozen {
        // Marker first: a `stop` racing the freeze then knows to thaw.
        std::fs::write(&marker, b"")
            .with_context(|| format!("cannot write {}", marker.display()))?;
        if let Err(e) = cg.set_frozen(true) {
            let _ = cg.set_frozen(false);
            let _ = std::fs::remove_file(&marker);
            return Err(e).with_context(|| format!("cannot pause container {}", rec.name));
        }
    } else {
        cg.set_frozen(false)
            .with_context(|| format!("cannot unpause container {}", rec.name))?;
        let _ = std::fs::remove_file(&marker);
    }
    Ok(())
}

/// Thaws a paused container before it is stopped or killed: a frozen process cannot act on
/// its stop signal.
pub fn thaw_if_paused(sd: &StateDir, rec: &Record) {
    if sd.dir(&rec.id).join(PAUSED_FILE).exists() {
        if let Err(e) = set_frozen(sd, rec, false) {
            tracing::warn!("{e:#}");
        }
    }
}

pub fn is_paused(sd: &StateDir, id: &str) -> bool {
    sd.dir(id).join(PAUSED_FILE).exists()
}

pub fn rename(settings: &Settings, args: RenameArgs) -> anyhow::Result<u8> {
    state::validate_name(&args.new_name)?;
    let sd = StateDir::open(&settings.state_dir)?;
    let _lock = sd.lock()?;
    containers::sweep(&sd)?;
    let all = sd.list()?;
    let rec = state::find_in(&all, &args.container)?.clone();
    if rec.name == args.new_name {
        return Ok(0);
    }
    if let Some(other) = all.iter().find(|r| r.name == args.new_name) {
        bail!(
            "the name {} is already in use by container {}: remove or rename it first",
            args.new_name,
            other.short_id()
        );
    }
    let mut rec = rec;
    rec.name = args.new_name.clone();
    sd.save(&rec)?;
    // Its network peers know it by name.
    crate::network::renamed(&sd, &rec.id, &rec.name);
    Ok(0)
}
