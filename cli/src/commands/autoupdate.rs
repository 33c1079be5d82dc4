//! `slate auto-update`: deploys the new image of every container that opted in, and puts the
//! old one back when the new one does not come up (podman's `auto-update`, with the rollback
//! kept offline).
//!
//! A container opts in with the label `io.slate.autoupdate` (or podman's
//! `io.containers.autoupdate`, whose `image` means registry and `disabled` opts out): `registry` compares the digest the registry serves now for the
//! container's reference, for the platform the container runs, with the one it runs; `local`
//! compares with the store's current image of that name (after a `slate load` from a USB
//! stick). A reference pinned by digest is never updated.
//!
//! An update, per container:
//! 1. The image the container runs (`image.json` beside its record) is held in the store
//!    ([`Store::hold_image`]): whatever happens to its name, its layers stay.
//! 2. The new image is fetched (registry). A pull cut half way changes nothing: the name still
//!    points at the old image, and the next pull resumes the partial layer.
//! 3. The container is restarted: a unit's foreground `slate run` with `systemctl restart`
//!    (the unit runs `slate run --pull always`, which finds the new image), a detached
//!    container replaced as `slate run -d --replace` would, with the flags it was started with
//!    (recorded at `run -d`; the values of `--env NAME` in a 0600 file beside the record, given
//!    to the replay through its environment, never on a command line).
//! 4. The new container must come up: running the new digest (for a unit: active, which for
//!    `Type=notify` means it sent READY=1), and healthy when it has a health check
//!    (`--health-cmd` or the image's; see `crate::health`), else still the same process after
//!    `--grace` seconds.
//! 5. If not, and `--rollback` (the default): a unit is stopped (none of systemd's own
//!    restarts may race what follows), the held image goes back under the name, marked as
//!    restored (a `--pull always` start then runs it even when the registry refuses or does
//!    not answer), the release is marked rejected (the unit's next `--pull always` start does
//!    not take it again while the registry serves it), and the container is started on the old
//!    image without the registry (a replay gets `--pull never`). When the old image does not
//!    come up either, the fault is the host's: the rejection is taken back, the old image stays
//!    held, and the report says so.
//!
//! Two runs at once: the second waits for the first (`<state_dir>/auto-update.lock`).

use std::io::{Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use slate_image::digest::Digest;
use slate_image::pull::{self, NoProgress, PullOptions};
use slate_image::reference::Reference;
use slate_image::registry::Client;
use slate_image::store::{ImageRecord, Store};

use crate::cli::Format;
use crate::config::Settings;
use crate::state::{Record, StateDir};

/// The labels a container opts in with (slate's, podman's).
pub const LABELS: [&str; 2] = ["io.slate.autoupdate", "io.containers.autoupdate"];

#[derive(Debug, clap::Args)]
pub struct AutoUpdateArgs {
    /// Say what would be updated, and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Put the old image back and restart the container when the new one does not come up
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub rollback: bool,
    /// Seconds a restarted container must keep running to count as up
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub grace: u64,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// What happened to one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The registry (or the store) has the image the container runs.
    Unchanged,
    /// Referenced by digest: never updated.
    Pinned,
    /// `--dry-run`: there is a new image.
    WouldUpdate,
    Updated,
    /// The new image did not come up; the old one runs again.
    RolledBack,
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::Pinned => "pinned",
            Outcome::WouldUpdate => "would update",
            Outcome::Updated => "updated",
            Outcome::RolledBack => "rolled back",
            Outcome::Failed => "failed",
        }
    }
}

/// One line of the report (`--format json`: a list of these).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub container: String,
    pub image: String,
    /// `registry` or `local`.
    pub policy: String,
    /// The systemd unit restarted, when the container runs under one.
    pub unit: Option<String>,
    pub status: Outcome,
    /// The digest the container ran when `auto-update` started.
    pub old_digest: String,
    /// The digest found (registry or store), when one was.
    pub new_digest: Option<String>,
    /// Why, for anything but a plain update or no change.
    pub reason: Option<String>,
}

pub fn run(settings: &Settings, args: AutoUpdateArgs) -> anyhow::Result<u8> {
    let sd = crate::containers::open_swept(settings)?;
    let _lock = lock(&sd)?;
    let store_policy = settings.store_policy()?;
    let records: Vec<Record> = sd
        .list()?
        .into_iter()
        .filter(|r| r.is_active() && policy(r).is_some())
        .collect();
    let mut reports = Vec::new();
    for rec in &records {
        // The store the container's image came from (the replay uses it too), whatever
        // --root this command was given.
        let store = Store::open(&rec.store_root)
            .map(|s| s.with_policy(store_policy.clone()))
            .with_context(|| format!("cannot open the store at {}", rec.store_root.display()));
        let report = match store {
            Ok(store) => update_one(settings, &sd, &store, rec, &args),
            Err(e) => failed_report(rec, Some(&e)),
        };
        match report.status {
            Outcome::RolledBack | Outcome::Failed => tracing::error!(
                container = %report.container,
                "auto-update: {}: {}",
                report.status.as_str(),
                report.reason.as_deref().unwrap_or("")
            ),
            Outcome::Updated => tracing::info!(
                container = %report.container,
                "auto-update: updated to {}",
                report.new_digest.as_deref().unwrap_or("")
            ),
            _ => {}
        }
        reports.push(report);
    }
    print_reports(&reports, args.format)?;
    let bad = reports
        .iter()
        .any(|r| matches!(r.status, Outcome::Failed | Outcome::RolledBack));
    Ok(u8::from(bad))
}

/// The container's auto-update policy, from its labels: `registry` (podman's older `image`
/// too) or `local`; `disabled`/`false` opt out as podman's do. Another value is kept as
/// typed, for the report to refuse.
fn policy(rec: &Record) -> Option<String> {
    policy_of(&rec.labels)
}

/// [`policy`] from a container's labels: whether `run` must keep what an update needs (the
/// command line to replay, the image record), which no other container pays for.
pub(crate) fn policy_of(labels: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let value = LABELS.iter().find_map(|l| labels.get(*l))?;
    match value.to_ascii_lowercase().as_str() {
        "registry" | "image" => Some("registry".to_owned()),
        "local" => Some("local".to_owned()),
        "disabled" | "false" | "" => None,
        _ => Some(value.clone()),
    }
}

/// A container's report line, failed (with `e`) until the update says otherwise.
fn failed_report(rec: &Record, e: Option<&anyhow::Error>) -> Report {
    Report {
        container: rec.name.clone(),
        image: rec.image.clone(),
        policy: policy(rec).unwrap_or_default(),
        unit: rec.unit.clone(),
        status: Outcome::Failed,
        old_digest: rec.image_digest.clone(),
        new_digest: None,
        reason: e.map(|e| format!("{e:#}")),
    }
}

/// `<state_dir>/auto-update.lock`: a second run says who holds it, then waits.
fn lock(sd: &StateDir) -> anyhow::Result<Flock<std::fs::File>> {
    let path = sd.root().join("auto-update.lock");
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))
    };
    let lock = match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = (&f).read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            eprintln!("slate: another slate auto-update{who} is running: waiting for it to finish");
            Flock::lock(f, FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .with_context(|| format!("cannot lock {}", path.display()))?
        }
        Err((_, e)) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
    };
    // Who holds it, for the next one's message; not needed for the lock itself.
    let _ = lock.set_len(0);
    let _ = (&*lock).write_all(std::process::id().to_string().as_bytes());
    Ok(lock)
}

fn short(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", hex.get(..12).unwrap_or(hex)),
        None => d.to_owned(),
    }
}

fn print_reports(reports: &[Report], format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(reports).context("cannot encode the report")?
        );
        return Ok(());
    }
    if reports.is_empty() {
        eprintln!("slate: no running container is labelled io.slate.autoupdate=registry|local");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let digests = match (&r.new_digest, r.status) {
                (Some(n), Outcome::Updated | Outcome::WouldUpdate | Outcome::RolledBack) => {
                    format!("{} -> {}", short(&r.old_digest), short(n))
                }
                _ => short(&r.old_digest),
            };
            let detail = match &r.reason {
                Some(why) => format!("{digests}: {why}"),
                None => digests,
            };
            vec![
                r.container.clone(),
                r.image.clone(),
                r.unit.clone().unwrap_or_else(|| "-".to_owned()),
                r.status.as_str().to_owned(),
                detail,
            ]
        })
        .collect();
    print!(
        "{}",
        crate::output::table(&["CONTAINER", "IMAGE", "UNIT", "STATUS", "DETAIL"], &rows)
    );
    Ok(())
}

fn update_one(
    settings: &Settings,
    sd: &StateDir,
    store: &Store,
    rec: &Record,
    args: &AutoUpdateArgs,
) -> Report {
    let mut report = failed_report(rec, None);
    if let Err(e) = try_update(settings, sd, store, rec, args, &mut report) {
        report = Report {
            new_digest: report.new_digest,
            ..failed_report(rec, Some(&e))
        };
    }
    report
}

/// Where the new image comes from.
enum Source {
    /// Resolved in the registry, not fetched yet.
    Registry(Box<(Client, pull::Resolved)>),
    /// Already the store's image of the name.
    Local,
}

fn try_update(
    settings: &Settings,
    sd: &StateDir,
    store: &Store,
    rec: &Record,
    args: &AutoUpdateArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let policy = report.policy.clone();
    if policy != "registry" && policy != "local" {
        bail!("unknown auto-update policy {policy:?}: the label takes registry or local");
    }
    let reference: Reference = rec.image.parse().with_context(|| {
        format!(
            "{} is not an image reference: only images from a registry or the store can be updated",
            rec.image
        )
    })?;
    if reference.digest().is_some() {
        report.status = Outcome::Pinned;
        report.reason = Some("the reference is pinned by digest: never updated".to_owned());
        return Ok(());
    }
    let old = running_image(sd, store, rec)?;
    let opts = PullOptions {
        platform: Some(old.platform.clone()),
        parallel: settings.parallel(),
    };
    let (new_digest, source) = match policy.as_str() {
        "registry" => {
            let client = settings.registry_client(false)?;
            let resolved = pull::resolve(&client, &reference, &opts).map_err(|e| {
                anyhow!(e).context(format!(
                    "cannot check {reference} in its registry (nothing changed, {} keeps running)",
                    short(&rec.image_digest)
                ))
            })?;
            (
                resolved.record.digest.clone(),
                Source::Registry(Box::new((client, resolved))),
            )
        }
        _ => {
            let images = store.images()?;
            let current = images
                .iter()
                .filter(|r| old.platform.accepts(&r.platform))
                .find(|r| {
                    store
                        .find_reference(std::slice::from_ref(r), &reference)
                        .is_some()
                })
                .ok_or_else(|| anyhow!("no image {reference} in the store (nothing changed)"))?;
            (current.digest.clone(), Source::Local)
        }
    };
    report.new_digest = Some(new_digest.to_string());
    if new_digest.to_string() == rec.image_digest {
        report.status = Outcome::Unchanged;
        return Ok(());
    }
    if let Some(why) = store.rejected(&new_digest)? {
        report.status = Outcome::Unchanged;
        report.reason = Some(format!(
            "{} was rolled back ({}): waiting for a newer release (`slate pull` takes it anyway)",
            short(&new_digest.to_string()),
            why.trim()
        ));
        return Ok(());
    }
    let restart = Restart::of(rec)?;
    if args.dry_run {
        report.status = Outcome::WouldUpdate;
        return Ok(());
    }

    let holder = holder(sd, &rec.name);
    store
        .hold_image(&holder, &old)
        .with_context(|| format!("cannot keep {} for a rollback", old.display_name()))?;
    let result = deploy(
        store,
        sd,
        rec,
        &restart,
        &reference,
        source,
        &opts,
        &new_digest,
        args,
    );
    // Whether the old image must stay held: only when a rollback failed, so that a later run
    // (or the user) can still go back without the network.
    let mut keep_hold = false;
    let outcome = match result {
        Ok(()) => {
            report.status = Outcome::Updated;
            Ok(())
        }
        Err(Deploy::Before(e)) => Err(e),
        Err(Deploy::NotUp(why)) if !args.rollback => Err(anyhow!(
            "{} did not come up ({why}); --rollback=false left it so",
            short(&new_digest.to_string())
        )),
        Err(Deploy::NotUp(why)) => {
            let back = rollback(store, sd, rec, &restart, &old, &new_digest, &why, args);
            match back {
                Ok(()) => {
                    report.status = Outcome::RolledBack;
                    report.reason = Some(format!(
                        "{} did not come up ({why}); {} runs again",
                        short(&new_digest.to_string()),
                        short(&old.digest.to_string())
                    ));
                    Ok(())
                }
                Err(e) => {
                    keep_hold = true;
                    Err(e.context(format!(
                        "{} did not come up ({why}), and the rollback to {} failed ({} stays held in the store)",
                        short(&new_digest.to_string()),
                        short(&old.digest.to_string()),
                        old.display_name()
                    )))
                }
            }
        }
    };
    // Kept only while an update is in flight: the old image is back under its name after a
    // rollback, and the new one has proved itself after an update.
    if !keep_hold {
        if let Err(e) = store.release_image(&holder) {
            tracing::warn!(container = %rec.name, error = %e, "cannot release the held image");
        }
    }
    outcome
}

/// Who holds a container's old image during its update: one holder per container name of a
/// state dir (two state dirs may share a store).
fn holder(sd: &StateDir, name: &str) -> String {
    format!("{}:{}", sd.root().display(), name)
}

/// `slate rm` of a container: what an interrupted or failed update of it still held in its
/// store is let go (the layers go with the next removal if nothing else uses them).
pub(crate) fn release_hold(sd: &StateDir, rec: &Record) {
    let released =
        Store::open(&rec.store_root).and_then(|store| store.release_image(&holder(sd, &rec.name)));
    if let Err(e) = released {
        tracing::debug!(container = %rec.name, error = %e, "cannot release a held image");
    }
}

/// The store's record of the image the container runs (`image.json`), checked against the
/// digest in its record.
fn running_image(sd: &StateDir, store: &Store, rec: &Record) -> anyhow::Result<ImageRecord> {
    let path = sd.dir(&rec.id).join(super::run::IMAGE_FILE);
    let from_file = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<ImageRecord>(&b).ok())
        .filter(|r| r.digest.to_string() == rec.image_digest);
    if let Some(r) = from_file {
        return Ok(r);
    }
    // Started by a slate from before image.json: the store may still name it.
    store
        .images()?
        .into_iter()
        .find(|r| r.digest.to_string() == rec.image_digest)
        .ok_or_else(|| {
            anyhow!(
                "cannot tell which image {} runs ({} is missing): restart it once with this slate",
                rec.name,
                path.display()
            )
        })
}

/// Why a deploy did not end with the new container up.
enum Deploy {
    /// Nothing changed: the new image could not be fetched.
    Before(anyhow::Error),
    /// The new container was started and did not come up (or could not be started).
    NotUp(String),
}

#[allow(clippy::too_many_arguments)]
fn deploy(
    store: &Store,
    sd: &StateDir,
    rec: &Record,
    restart: &Restart,
    reference: &Reference,
    source: Source,
    opts: &PullOptions,
    new_digest: &Digest,
    args: &AutoUpdateArgs,
) -> Result<(), Deploy> {
    if let Source::Registry(r) = source {
        let (client, resolved) = *r;
        pull::fetch(store, &client, reference, resolved, opts, &NoProgress).map_err(|e| {
            Deploy::Before(anyhow!(e).context(format!(
                "cannot pull {reference} (nothing changed; the next run resumes the download)"
            )))
        })?;
    }
    let baseline = restart
        .start(sd, rec, false)
        .map_err(|e| Deploy::NotUp(format!("{e:#}")))?;
    restart
        .wait_up(
            sd,
            rec,
            &baseline,
            new_digest,
            Duration::from_secs(args.grace),
        )
        .map_err(|e| Deploy::NotUp(format!("{e:#}")))
}

/// Puts `old` back and starts the container on it, offline. A unit is stopped first, so that
/// none of systemd's own restarts (`Restart=`) runs between the restore and the mark. The mark
/// is taken back when the old image does not come up either: then the fault is the host's,
/// not the release's.
#[allow(clippy::too_many_arguments)]
fn rollback(
    store: &Store,
    sd: &StateDir,
    rec: &Record,
    restart: &Restart,
    old: &ImageRecord,
    new_digest: &Digest,
    why: &str,
    args: &AutoUpdateArgs,
) -> anyhow::Result<()> {
    if let Restart::Unit(unit) = restart {
        super::systemd::run_systemctl(&["stop", unit])?;
        // A unit that failed its start keeps its failed state (and start-limit count).
        let _ = super::systemd::run_systemctl(&["reset-failed", unit]);
    }
    store
        .restore_image(old)
        .with_context(|| format!("cannot put {} back", old.display_name()))?;
    store
        .reject(new_digest, why)
        .with_context(|| format!("cannot mark {new_digest} as rolled back"))?;
    let back = restart.start(sd, rec, true).and_then(|baseline| {
        restart.wait_up(
            sd,
            rec,
            &baseline,
            &old.digest,
            Duration::from_secs(args.grace),
        )
    });
    if back.is_err() {
        if let Err(e) = store.unreject(new_digest) {
            tracing::warn!(error = %e, "cannot take back the rollback mark of {new_digest}");
        }
    }
    back
}

/// How the container is started again.
enum Restart {
    /// `systemctl restart UNIT`.
    Unit(String),
    /// `slate run -d --replace --name NAME` plus the recorded flags.
    Replay(Vec<String>),
}

/// What a restart is measured against.
struct Baseline {
    /// systemd's NRestarts of the unit after the restart (a crash loop raises it).
    n_restarts: Option<u64>,
}

impl Restart {
    fn of(rec: &Record) -> anyhow::Result<Restart> {
        if !rec.foreground {
            // `slate run -d` in a unit (Type=notify/forking) made the supervisor the unit's main
            // process: replacing it behind systemd's back would end the unit. Restart the unit.
            if let (Some(unit), Some(sup)) = (&rec.unit, rec.supervisor_pid) {
                let main = unit_show(unit, "MainPID").and_then(|p| p.parse::<i32>().ok());
                if main == Some(sup) {
                    return Ok(Restart::Unit(unit.clone()));
                }
            }
            // Else it is replaced the same way wherever it was started from.
            return match &rec.replay {
                Some(words) => Ok(Restart::Replay(words.clone())),
                None => bail!(
                    "its command line was not recorded (started by an older slate): start it again with `slate run -d` once"
                ),
            };
        }
        match &rec.unit {
            // The unit's main process is this container's `slate run`.
            Some(unit) => Ok(Restart::Unit(unit.clone())),
            None => bail!(
                "it runs in the foreground of a `slate run` (pid {}) that no systemd unit restarts: run it with -d, or under `slate systemd unit`",
                rec.supervisor_pid.unwrap_or_default()
            ),
        }
    }

    /// Starts the container again. `offline` (a rollback) must not need the registry: a
    /// unit's `--pull always` finds the restored image by itself (see `run::ensure_image`) and
    /// is started rather than restarted (the rollback stopped it), a replay is told
    /// `--pull never`.
    fn start(&self, sd: &StateDir, rec: &Record, offline: bool) -> anyhow::Result<Baseline> {
        match self {
            Restart::Unit(unit) => {
                super::systemd::run_systemctl(&[if offline { "start" } else { "restart" }, unit])?;
                Ok(Baseline {
                    n_restarts: n_restarts(unit),
                })
            }
            Restart::Replay(words) => {
                let mut words = words.clone();
                if offline {
                    words.retain(|w| !w.starts_with("--pull="));
                    words.insert(0, "--pull=never".to_owned());
                }
                replay(sd, rec, &words)?;
                Ok(Baseline { n_restarts: None })
            }
        }
    }

    /// Waits until the container named like `rec` runs `digest` and has kept running, the same
    /// process, for `grace`.
    fn wait_up(
        &self,
        sd: &StateDir,
        rec: &Record,
        baseline: &Baseline,
        digest: &Digest,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let digest = digest.to_string();
        // The restart returned with the container started (systemd: READY=1, sent once the
        // record says running; run -d: the supervisor's ready line), so a record that is not
        // running now will not be: a little slack only, and none when systemd already counts
        // the start as failed.
        let deadline = Instant::now() + Duration::from_secs(2);
        let first = loop {
            match current(sd, rec) {
                Some(r) if r.status == crate::state::Status::Running && r.container_alive() => {
                    break r
                }
                _ if Instant::now() >= deadline || self.unit_failed() => {
                    bail!("{}", self.gone_why(sd, rec))
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        if first.image_digest != digest {
            bail!(
                "it runs {} instead of {}",
                short(&first.image_digest),
                short(&digest)
            );
        }
        // With a health check, up means healthy (however long the check may take to say
        // so); without one, still the same process after the grace time.
        let wait = first
            .healthcheck
            .as_ref()
            .map_or(grace, |c| c.patience() + Duration::from_secs(10));
        let until = Instant::now() + wait;
        loop {
            if first.healthcheck.is_some() {
                let health =
                    crate::health::Health::load(sd, &first.id).filter(|h| h.pid == first.pid);
                match health.as_ref().map(|h| h.status) {
                    Some(crate::health::Status::Healthy) => return Ok(()),
                    Some(crate::health::Status::Unhealthy) => bail!(
                        "it is unhealthy ({})",
                        health.map(|h| h.last_words()).unwrap_or_default()
                    ),
                    _ if Instant::now() >= until => bail!(
                        "its health check did not pass within {} s ({})",
                        wait.as_secs(),
                        health
                            .map(|h| h.last_words())
                            .unwrap_or_else(|| "no check ran".to_owned())
                    ),
                    _ => {}
                }
            }
            let now = current(sd, rec);
            let same = now.as_ref().is_some_and(|r| {
                r.id == first.id
                    && r.pid == first.pid
                    && r.restart_count == first.restart_count
                    && r.container_alive()
            });
            if !same {
                bail!("{}", self.gone_why(sd, rec));
            }
            if let (Restart::Unit(unit), Some(before)) = (self, baseline.n_restarts) {
                if n_restarts(unit).is_some_and(|n| n != before) || !unit_active(unit) {
                    bail!("{unit} did not stay active");
                }
            }
            if first.healthcheck.is_none() && Instant::now() >= until {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Whether systemd gave up on this start (failed, or waiting to restart it).
    fn unit_failed(&self) -> bool {
        let Restart::Unit(unit) = self else {
            return false;
        };
        unit_show(unit, "ActiveState").as_deref() == Some("failed")
            || unit_show(unit, "SubState").as_deref() == Some("auto-restart")
    }

    /// Why the container is not (or no longer) up, as well as can be told.
    fn gone_why(&self, sd: &StateDir, rec: &Record) -> String {
        let named = sd
            .list()
            .ok()
            .and_then(|all| all.into_iter().rev().find(|r| r.name == rec.name));
        match named {
            Some(r) if r.is_active() && r.restart_count > 0 => {
                format!("it restarted {} times", r.restart_count)
            }
            Some(r) if !r.is_active() => match (r.exit_code, &r.error) {
                (_, Some(e)) => format!("it failed: {e}"),
                (Some(c), None) => format!("it exited with status {c}"),
                (None, None) => "it exited".to_owned(),
            },
            Some(r) => format!("it is {}", r.status.as_str()),
            None => match self {
                Restart::Unit(u) => format!("{u} is {}", unit_state(u)),
                Restart::Replay(_) => "it exited at start".to_owned(),
            },
        }
    }
}

/// The record now holding the container's name.
fn current(sd: &StateDir, rec: &Record) -> Option<Record> {
    sd.list()
        .ok()?
        .into_iter()
        .find(|r| r.name == rec.name && r.is_active())
}

/// Starts the container again as `slate run -d --replace` with its recorded flags.
fn replay(sd: &StateDir, rec: &Record, words: &[String]) -> anyhow::Result<()> {
    let exe = std::fs::read_link("/proc/self/exe").context("cannot find slate's binary")?;
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    // Inside a service (the auto-update timer), the new supervisor must not live in the
    // oneshot's cgroup: systemd kills what is left there when the service ends.
    let in_service =
        std::env::var_os("INVOCATION_ID").is_some() && Path::new("/run/systemd/system").is_dir();
    let program = if in_service {
        argv.extend(["--scope", "--collect", "--quiet"].map(Into::into));
        // Else systemd describes the scope with the whole command line, in the journal.
        argv.push(
            format!(
                "--description=slate container {} (replaced by slate auto-update)",
                rec.name
            )
            .into(),
        );
        argv.push("--".into());
        argv.push(exe.into());
        std::ffi::OsString::from("systemd-run")
    } else {
        exe.into()
    };
    argv.push("--root".into());
    argv.push(rec.store_root.clone().into());
    argv.push("--state-dir".into());
    argv.push(sd.root().into());
    if let Some(c) = &rec.config {
        argv.push("--config".into());
        argv.push(c.into());
    }
    argv.extend(["run", "-d", "--replace", "--name"].map(Into::into));
    argv.push(rec.name.clone().into());
    argv.extend(words.iter().map(Into::into));
    tracing::debug!(container = %rec.name, "replacing the container with slate run -d --replace");
    let mut cmd = Command::new(&program);
    // The values of its `--env NAME` flags, as they were at `run -d`.
    let env_file = sd.dir(&rec.id).join(super::run::REPLAY_ENV_FILE);
    match std::fs::read(&env_file) {
        Ok(bytes) => {
            for kv in bytes.split(|b| *b == 0).filter(|kv| !kv.is_empty()) {
                let kv = std::ffi::OsStr::from_bytes(kv);
                let (k, v) = kv
                    .to_str()
                    .and_then(|s| s.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| anyhow!("corrupt {}", env_file.display()))?;
                cmd.env(k, v);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", env_file.display())),
    }
    let out = cmd
        .args(&argv)
        .current_dir("/")
        .stdin(Stdio::null())
        .env_remove("INVOCATION_ID")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .output()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .trim_start_matches("slate: ");
        bail!("slate run -d --replace failed ({}): {said}", out.status);
    }
    Ok(())
}

fn unit_show(unit: &str, property: &str) -> Option<String> {
    let out = Command::new("systemctl")
        .args(["show", "--value", "-p", property, unit])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn n_restarts(unit: &str) -> Option<u64> {
    unit_show(unit, "NRestarts")?.parse().ok()
}

fn unit_state(unit: &str) -> String {
    let active = unit_show(unit, "ActiveState").unwrap_or_else(|| "unknown".to_owned());
    match unit_show(unit, "SubState") {
        Some(sub) if !sub.is_empty() => format!("{active} ({sub})"),
        _ => active,
    }
}

fn unit_active(unit: &str) -> bool {
    unit_show(unit, "ActiveState").as_deref() == Some("active")
}
