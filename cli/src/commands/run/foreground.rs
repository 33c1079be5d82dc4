//! The record of a foreground `slate run` (a shell's, or a systemd unit's `ExecStart`): the
//! same `state.json` a detached container has, with this process as its supervisor, so
//! `ps`, `exec`, `stop`, `kill` and `inspect` find it by name.
//!
//! Life of the record: written (status created) under the state dir's lock before the image
//! is pulled, so the name is taken at once and a second `slate run --name app` fails instead
//! of pulling for nothing; running, with everything `exec` needs, once the container
//! process exists; removed when the run ends (the output was the caller's, nothing is kept).
//! When this process dies without removing it (`systemctl kill -s KILL`, a power cut), the
//! next slate command's sweep finds its supervisor gone and removes the container's
//! processes, cgroup, run directory and the record.

use anyhow::Context as _;
use slate_runtime::Container;

use super::Prepared;
use crate::cli::RunArgs;
use crate::config::Settings;
use crate::state::{self, StateDir, Status};

pub(super) struct Record {
    sd: StateDir,
    rec: state::Record,
}

impl Record {
    /// Claims the name (or replaces its holder with `--replace`) and writes the record.
    pub fn reserve(settings: &Settings, args: &RunArgs, id: &str) -> anyhow::Result<Record> {
        let sd = StateDir::open(&settings.state_dir)?;
        let lock = sd.lock()?;
        crate::containers::sweep(&sd)?;
        let existing = sd.list()?;
        super::claim_name(&sd, &existing, args)?;
        let name = match &args.name {
            Some(n) => n.clone(),
            None => state::generate_name(id, &|n| existing.iter().any(|r| r.name == n)),
        };
        let mut rec = super::base_record(settings, args, id, name)?;
        let me = std::process::id() as i32;
        rec.supervisor_pid = Some(me);
        rec.supervisor_start = state::proc_start_time(me);
        let dir = sd.dir(id);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let record = Record { sd, rec };
        record.save_or_fail()?;
        drop(lock);
        Ok(record)
    }

    fn save_or_fail(&self) -> anyhow::Result<()> {
        self.sd.save(&self.rec)
    }

    /// The image, spec and rootfs are known: the spec `exec` will need is written now; the
    /// record itself only once the container runs (one write less on every start: until
    /// then "created" with the image's name says all there is to say).
    pub fn prepared(&mut self, prepared: &Prepared) -> anyhow::Result<()> {
        super::write_bundle(&self.sd, &mut self.rec, prepared)
    }

    /// The container's process exists.
    pub fn running(&mut self, c: &Container) {
        let pid = c.pid().as_raw();
        self.rec.pid = Some(pid);
        self.rec.pid_start = state::proc_start_time(pid);
        self.rec.status = Status::Running;
        self.rec.started = Some(state::now_rfc3339());
        self.rec.cgroup_paths = c.cgroup_paths();
        // Without it `ps` shows the container as created and `exec` refuses it, but the
        // container itself is fine: not a reason to stop it.
        if let Err(e) = self.save_or_fail() {
            tracing::warn!("cannot record the running container: {e:#}");
        }
    }

    /// Attaches its network (`--network bridge`, `-p`...), if it has one: this process holds
    /// it until the run ends.
    pub fn attach_network(&self) -> anyhow::Result<Option<crate::network::Attached>> {
        crate::network::attach(&self.sd, &self.rec)
    }

    /// Starts its health checks, if it has any (see `crate::health`).
    pub fn start_health_monitor(&self, settings: &Settings) {
        crate::health::spawn_monitor(&settings.root, &self.sd, &self.rec);
    }

    /// Whether `slate stop` asked for this container while it was being started.
    pub fn stop_requested(&self) -> bool {
        self.sd.stop_requested(&self.rec.id)
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Err(e) = self.sd.remove(&self.rec.id) {
            tracing::warn!(
                "cannot remove the record of container {}: {e:#}",
                self.rec.name
            );
        }
    }
}
