//! `slate run`: make sure the image is here (per `--pull`), lay out a fresh root filesystem
//! (the image's layers under a new, empty upper dir), build the `Spec`, run the container
//! under the supervisor and exit with its status.
//!
//! Every run gets a new directory `runs/<id>/` under the store root (upper, work, the
//! generated `/etc` files, the mount point). It is deleted when the run ends, and the next
//! `slate run` removes the directories of runs whose supervisor died, so nothing a run
//! writes outlives it.
//!
//! Every container has a record in the state dir, foreground ones too (see `foreground`):
//! `ps`, `exec`, `stop`, `kill` and `inspect` work on a unit's `slate run --name app` as on a
//! detached container, and names are unique across both.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use slate_image::platform::Platform;
use slate_image::pull::{self, PullError, PullOptions};
use slate_image::reference::Reference;
use slate_image::registry::RegistryError;
use slate_image::rootfs;
use slate_image::store::{ImageRecord, Store};
use slate_runtime::{supervise, Container, ContainerOptions, Rootfs};

mod detach;
mod foreground;

pub(crate) use detach::start_supervisor;
pub use detach::SuperviseArgs;

use super::ExitWith;
use crate::cli::{PullPolicy, RunArgs};
use crate::config::Settings;
use crate::sdnotify::Notifier;
use crate::spec::{self, SeccompChoice, SpecInput};
use crate::EXIT_SLATE_FAILED;

pub fn run(settings: &Settings, args: RunArgs) -> anyhow::Result<u8> {
    check_preserved_fds(&args).map_err(|e| ExitWith::wrap(EXIT_SLATE_FAILED, e))?;
    // Taken out of the environment first, so nothing slate starts inherits it by accident.
    let notifier = crate::sdnotify::Notifier::from_env(args.sdnotify);
    if args.detach {
        return detach::run(settings, args, notifier.as_ref());
    }
    if args.restart != "no" {
        tracing::warn!("--restart applies to detached containers (-d) only; under systemd, use Restart= in the unit");
    }
    // Failures before the container exists are slate's own: docker's 125.
    let fail = |e: anyhow::Error| ExitWith::wrap(EXIT_SLATE_FAILED, e);
    let id = new_id().map_err(fail)?;
    // The record before the pull: the name is taken, and `ps` and `stop` see the container
    // while its image comes down a slow link.
    let mut record = foreground::Record::reserve(settings, &args, &id).map_err(fail)?;
    let prepared = prepare(settings, &args, &id, notifier.as_ref()).map_err(fail)?;
    record.prepared(&prepared).map_err(fail)?;
    // Declared after the record, so dropped (torn down) before it goes.
    let network = record.attach_network().map_err(fail)?;
    // `_guard` and `_pin` live until the container is gone, at the end of this function.
    let Prepared {
        run_dir,
        mut options,
        _guard,
        _pin,
        ..
    } = prepared;
    // docker attaches no input without -i, terminal or not: the supervisor then neither reads
    // our stdin nor puts the host terminal in raw mode (^C there still signals us).
    options.attach_stdin = args.interactive;
    options.preserve_fds = args.preserve_fds;
    if !args.interactive && !args.tty {
        // docker gives the app no stdin without -i. (With -t the app's stdin is its terminal,
        // and attach_stdin above keeps ours out of it.)
        let null = std::fs::File::open("/dev/null")
            .context("cannot open /dev/null")
            .map_err(fail)?;
        options.stdio[0] = Some(null.into());
    }
    // From here on a TERM (systemd's stop) or ^C is the container's: held until the
    // supervisor forwards it, not lost while the record is written. (The container's process
    // starts with an empty mask.) Before, during the pull, it simply ends slate.
    let mut forwarded = nix::sys::signal::SigSet::empty();
    for sig in slate_runtime::FORWARDED {
        forwarded.add(sig);
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&forwarded),
        None,
    )
    .context("cannot block signals")
    .map_err(fail)?;
    let container = match Container::spawn(options) {
        Ok(c) => c,
        Err(e) => {
            let code = u8::try_from(e.exit_code()).unwrap_or(EXIT_SLATE_FAILED);
            return Err(ExitWith::wrap(
                code,
                anyhow!(e).context(format!("cannot start container from {}", args.image())),
            ));
        }
    };
    record.running(&container);
    record.start_health_monitor(settings);
    if let Some(n) = &notifier {
        n.started(std::process::id(), args.image());
    }
    if record.stop_requested() {
        // `slate stop` came while the container was starting: it found no process to signal.
        let _ = container.kill(nix::sys::signal::Signal::SIGKILL);
    }
    let status = supervise(container).map_err(|e| ExitWith::wrap(EXIT_SLATE_FAILED, anyhow!(e)))?;
    drop(network);
    drop(_guard);
    drop(record);
    tracing::debug!(run_dir = %run_dir.display(), ?status, "container exited");
    Ok(u8::try_from(status.code() & 0xff).unwrap_or(EXIT_SLATE_FAILED))
}

/// Checks `--name` against every container of the state dir, foreground and detached: taken
/// is an error, unless `--replace` (then the old one is stopped and removed). The caller
/// holds the state dir's lock and has swept it.
pub(crate) fn claim_name(
    sd: &crate::state::StateDir,
    existing: &[crate::state::Record],
    args: &RunArgs,
) -> anyhow::Result<()> {
    let Some(name) = &args.name else {
        return Ok(());
    };
    crate::state::validate_name(name)?;
    for old in existing.iter().filter(|r| &r.name == name) {
        if !args.replace {
            let how = match (&old.unit, old.foreground, old.supervisor_pid) {
                (Some(u), _, _) => format!(", run by {u}"),
                (None, true, Some(pid)) => format!(", in the foreground of PID {pid}"),
                _ => String::new(),
            };
            bail!(
                "the name {name:?} is in use by container {} ({}{how}): remove it with `slate rm -f {name}`, or use --replace",
                old.short_id(),
                old.status.as_str()
            );
        }
        let how = crate::containers::stop(sd, old, REPLACE_TIMEOUT)
            .with_context(|| format!("cannot stop the container {name} to replace it"))?;
        if how == crate::containers::Stopped::Killed {
            tracing::warn!(
                "the container {name} being replaced ignored its stop signal for {} s: killed it",
                REPLACE_TIMEOUT.as_secs()
            );
        }
        crate::containers::remove(sd, old, true)?;
    }
    Ok(())
}

/// How long `--replace` gives the old container to stop before SIGKILL.
const REPLACE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A new container's record, before its image and spec are known.
pub(crate) fn base_record(
    settings: &Settings,
    args: &RunArgs,
    id: &str,
    name: String,
) -> anyhow::Result<crate::state::Record> {
    use crate::state::{self, LogDriver, Record, RestartPolicy, Status};
    let log_max_size = crate::config::parse_size(&args.log_max_size)
        .with_context(|| format!("invalid --log-max-size {:?}", args.log_max_size))?;
    Ok(Record {
        id: id.to_string(),
        name,
        image: args.image().to_string(),
        image_digest: String::new(),
        command: Vec::new(),
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
        run_dir: settings.root.join("runs").join(id),
        log_dir: settings.root.join("containers").join(id),
        store_root: settings.root.clone(),
        cgroups_path: None,
        cgroup_paths: Vec::new(),
        stop_signal: "SIGTERM".to_string(),
        restart: RestartPolicy::No,
        restart_count: 0,
        log_driver: if args.detach {
            args.log_driver
        } else {
            LogDriver::None
        },
        log_max_size,
        log_max_files: args.log_max_files,
        auto_remove: args.rm,
        init: args.init,
        lower: Vec::new(),
        read_only: args.read_only,
        seccomp_source: None,
        labels: args
            .label
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (l.clone(), String::new()),
            })
            .collect(),
        foreground: !args.detach,
        unit: slate_runtime::cgroups::systemd_unit(),
        replay: None,
        config: settings.config_path.clone(),
        healthcheck: None,
        network: None,
        stop_timeout: args.stop_timeout,
    })
}

/// This process's `slate run` flags, image and command as typed, for [`state::Record::replay`],
/// and the values of its `--env NAME` flags (written apart, see [`REPLAY_ENV_FILE`]). None when
/// the command line cannot be read back: the container then cannot be replaced by
/// `slate auto-update`, which says so.
///
/// [`state::Record::replay`]: crate::state::Record::replay
pub(crate) fn replay_words() -> Option<(Vec<String>, Vec<u8>)> {
    use clap::CommandFactory as _;
    let words = (|| -> anyhow::Result<(Vec<String>, Vec<u8>)> {
        let matches = crate::cli::Cli::command().try_get_matches_from(std::env::args_os())?;
        let m = matches
            .subcommand_matches("run")
            .ok_or_else(|| anyhow!("no `run` on the command line"))?;
        let cwd = std::env::current_dir()?;
        let words =
            super::systemd::flags::typed_run_words(m, &cwd, super::systemd::flags::For::Replay)?;
        let mut env = Vec::new();
        for (k, v) in &words.env {
            env.extend_from_slice(k.as_encoded_bytes());
            env.push(b'=');
            env.extend_from_slice(v.as_encoded_bytes());
            env.push(0);
        }
        let args = words
            .args()
            .into_iter()
            .map(|w| {
                w.into_string()
                    .map_err(|w| anyhow!("{:?} is not UTF-8", w.to_string_lossy()))
            })
            .collect::<anyhow::Result<Vec<String>>>()?;
        Ok((args, env))
    })();
    match words {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::debug!(error = %e, "cannot record the command line for auto-update");
            None
        }
    }
}

/// Beside a detached container's record: the values of its `--env NAME` flags
/// (`NAME=VALUE\0`...), mode 0600, for `slate auto-update`'s replay. Kept out of the record
/// and of any command line, where `ps` and the journal would show them.
pub(crate) const REPLAY_ENV_FILE: &str = "replay.env";

/// Writes the container's spec (`config.json`, everything the runtime applies, the seccomp
/// profile too) next to the record, where `exec`, restarts, `slate start` and `inspect` read
/// it, and fills the record from the prepared run. The caller saves the record.
pub(crate) fn write_bundle(
    sd: &crate::state::StateDir,
    rec: &mut crate::state::Record,
    prepared: &Prepared,
) -> anyhow::Result<()> {
    let options = &prepared.options;
    let dir = sd.dir(&rec.id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let spec_json = serde_json::to_vec_pretty(&canonical_spec(&options.spec)?)
        .context("cannot serialise the spec")?;
    crate::state::write_atomic(&dir.join(crate::state::CONFIG_FILE), &spec_json)?;
    // Only `slate auto-update` reads it (to hold the image for a rollback): one write less
    // on every other start.
    if super::autoupdate::policy_of(&rec.labels).is_some() {
        let image_json = serde_json::to_vec_pretty(&prepared.image)
            .context("cannot serialise the image record")?;
        crate::state::write_atomic(&dir.join(IMAGE_FILE), &image_json)?;
    }
    rec.image_digest = prepared.digest.clone();
    rec.healthcheck = prepared.healthcheck.clone();
    rec.network = prepared.network.clone();
    rec.command = options
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    rec.run_dir = prepared.run_dir.clone();
    rec.cgroups_path = options
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone());
    rec.stop_signal = prepared.stop_signal.as_str().to_string();
    rec.init = options.init;
    rec.lower = match &options.rootfs {
        slate_runtime::Rootfs::Overlay { lower, .. } => lower.clone(),
        slate_runtime::Rootfs::Dir(d) => vec![d.clone()],
    };
    rec.seccomp_source = Some(prepared.seccomp_source.clone());
    Ok(())
}

/// The spec as JSON with one spelling for one meaning: oci-spec keeps capability sets and
/// annotations in hash containers, whose order changes from process to process; through a
/// `Value` the maps come out sorted, and the capability lists are sorted here. So the same
/// flags give the same config.json, foreground or detached, today or tomorrow, and two of
/// them can be compared with `diff`.
fn canonical_spec(spec: &oci_spec::runtime::Spec) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(spec).context("cannot serialise the spec")?;
    if let Some(caps) = v
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    Ok(v)
}

/// The store's record of the container's image, beside the record of a container that opted
/// in to `slate auto-update`.
pub(crate) const IMAGE_FILE: &str = "image.json";

/// `--preserve-fds N` hands the caller's descriptors 3..3+N to the app (podman's flag, for
/// socket activation). A detached container's supervisor does not inherit the caller's
/// descriptors, and a descriptor that is not open would be a silent surprise in the app.
fn check_preserved_fds(args: &RunArgs) -> anyhow::Result<()> {
    if args.preserve_fds == 0 {
        return Ok(());
    }
    if args.detach {
        bail!("--preserve-fds works in the foreground only: a detached container's supervisor does not inherit this shell's descriptors");
    }
    for fd in 3..3 + args.preserve_fds {
        if nix::fcntl::fcntl(fd as i32, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            bail!(
                "--preserve-fds {}: descriptor {fd} is not open",
                args.preserve_fds
            );
        }
    }
    Ok(())
}

pub(crate) struct Prepared {
    pub run_dir: PathBuf,
    pub options: ContainerOptions,
    pub _guard: RunDirGuard,
    /// Keeps `rmi`, `prune` and eviction off the layers while the container may use them.
    pub _pin: slate_image::store::LayerPin,
    /// The manifest digest of the image run.
    pub digest: String,
    /// The store's record of that image.
    pub image: ImageRecord,
    /// The health check the container gets, if any.
    pub healthcheck: Option<crate::health::HealthCheck>,
    /// The image's StopSignal (or SIGTERM).
    pub stop_signal: nix::sys::signal::Signal,
    /// The CNI network to attach before the start, if any.
    pub network: Option<crate::network::Request>,
    /// Where the spec's seccomp profile came from ([`crate::state::Record::seccomp_source`]).
    pub seccomp_source: String,
}

/// Removes the run's directory (upper dir included) when dropped.
pub(crate) struct RunDirGuard(PathBuf);

impl RunDirGuard {
    pub fn new(dir: PathBuf) -> RunDirGuard {
        RunDirGuard(dir)
    }

    /// Someone else (a detached container's supervisor) owns the directory now.
    pub fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for RunDirGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove the run directory");
            }
        }
    }
}

pub(crate) fn prepare(
    settings: &Settings,
    args: &RunArgs,
    id: &str,
    notifier: Option<&Notifier>,
) -> anyhow::Result<Prepared> {
    // Before the pull: a typo in -p or a network that does not exist costs no download.
    for p in &args.publish {
        crate::network::ports::parse_publish(p)?;
    }
    if crate::network::is_cni(args.network_mode()) {
        crate::network::defs::load(settings, args.network_mode())?;
    }
    let store = super::open_store(settings)?;
    let record = match local_image(settings, &store, args) {
        Some(imported) => imported?,
        None => {
            let reference: Reference = args.image().parse()?;
            ensure_image(settings, &store, &reference, args, notifier)?
        }
    };
    // A run is a use: max_store_size evicts the least recently used images first. Failing
    // to note it must not stop the run.
    if let Err(e) = store.touch(&record) {
        tracing::warn!(image = %record.display_name(), error = %e, "cannot record the image's use");
    }
    let config_bytes = store
        .get_blob(&record.config_digest)
        .with_context(|| format!("cannot read the config of {}", record.display_name()))?;
    let image_config: serde_json::Value = serde_json::from_slice(&config_bytes)
        .with_context(|| format!("corrupt config of {}", record.display_name()))?;
    let lower = rootfs::lower_dirs(&store, &record)?;
    let healthcheck = crate::health::resolve(args, &image_config)?;
    let exposed: Vec<String> = image_config
        .pointer("/config/ExposedPorts")
        .and_then(serde_json::Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let network = crate::network::request(settings, args, &exposed)?;

    let runs = store.root().join("runs");
    sweep_dead_runs(&runs);
    let run_dir = runs.join(id);
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let guard = RunDirGuard(run_dir.clone());
    // The owner first, so a concurrent sweep never takes this run for a dead one.
    std::fs::write(run_dir.join("owner"), owner_line(std::process::id()))
        .with_context(|| format!("cannot write {}", run_dir.join("owner").display()))?;
    for d in ["upper", "work", "rootfs"] {
        std::fs::create_dir(run_dir.join(d))
            .with_context(|| format!("cannot create {}", run_dir.join(d).display()))?;
    }
    let pin = store
        .pin_layers(&run_dir, &record)
        .with_context(|| format!("cannot pin the layers of {}", record.display_name()))?;

    let read_image_file = |p: &str| rootfs::read_file(&lower, p);
    let host_env = |k: &str| std::env::var(k).ok();
    let volumes_dir = crate::volumes::volumes_dir(&settings.root);
    let out = spec::build(&SpecInput {
        args,
        image_config: &image_config,
        read_image_file: &read_image_file,
        id,
        run_dir: &run_dir,
        host_env: &host_env,
        no_new_privileges: settings.file.security.no_new_privileges,
        volumes_dir: Some(&volumes_dir),
    })?;
    crate::volumes::copy_up(
        &store,
        &record,
        &run_dir.join("volume-copy"),
        &out.new_volumes,
    )?;
    let mut spec = out.spec;
    if network.is_some() {
        join_pinned_netns(&mut spec, &settings.state_dir.join(id));
    }
    if let Some(n) = notifier.filter(|n| n.mode == crate::sdnotify::Mode::Container) {
        crate::sdnotify::pass_into(&mut spec, n)?;
    }
    let mut options = ContainerOptions::new(
        id,
        spec,
        Rootfs::Overlay {
            lower,
            upper: run_dir.join("upper"),
            work: run_dir.join("work"),
            target: run_dir.join("rootfs"),
        },
    );
    options.init = args.init;
    options.seccomp_cache = Some(seccomp_cache(store.root()));
    options.clone_into_cgroup = clone_into_cgroup();
    Ok(Prepared {
        run_dir,
        options,
        _guard: guard,
        _pin: pin,
        digest: record.digest.to_string(),
        image: record,
        healthcheck,
        stop_signal: out.stop_signal,
        network,
        seccomp_source: match &out.seccomp {
            SeccompChoice::Default => "default".to_string(),
            SeccompChoice::Unconfined => "unconfined".to_string(),
            SeccompChoice::Profile(p) => p.display().to_string(),
        },
    })
}

/// Points the spec's network namespace at the one `network::attach` pins beside the
/// record (the state dir's `<id>/`).
fn join_pinned_netns(spec: &mut oci_spec::runtime::Spec, record_dir: &Path) {
    use oci_spec::runtime::LinuxNamespaceType;
    let Some(linux) = spec.linux_mut().as_mut() else {
        return;
    };
    if let Some(nss) = linux.namespaces_mut().as_mut() {
        for ns in nss.iter_mut() {
            if ns.typ() == LinuxNamespaceType::Network {
                ns.set_path(Some(record_dir.join(crate::network::NETNS_FILE)));
            }
        }
    }
}

/// Where the runtime caches compiled seccomp profiles: under the store root, shared by every
/// container started from that store (the default profile is the same for the same
/// capabilities, so a warm start reads it instead of compiling it).
pub(crate) fn seccomp_cache(store_root: &Path) -> PathBuf {
    store_root.join("cache")
}

/// Finds the image locally or pulls it, per `--pull`.
/// An `oci:` / `oci-archive:` image, imported whatever `--pull` says: the files are
/// local, and layers already in the store are not unpacked again.
fn local_image(
    settings: &Settings,
    store: &Store,
    args: &RunArgs,
) -> Option<anyhow::Result<ImageRecord>> {
    let platform = match args
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()
    {
        Ok(p) => p,
        Err(e) => return Some(Err(e.into())),
    };
    let opts = PullOptions {
        platform,
        parallel: settings.parallel(),
    };
    super::pull::import_local(store, args.image(), &opts, args.quiet).map(|r| r.map(|p| p.record))
}

fn ensure_image(
    settings: &Settings,
    store: &Store,
    reference: &Reference,
    args: &RunArgs,
    notifier: Option<&Notifier>,
) -> anyhow::Result<ImageRecord> {
    // What the terminal (or the journal) shows, and systemd's STATUS= under a unit.
    let display = crate::progress::for_stderr(args.quiet);
    let status;
    let progress: &dyn slate_image::pull::Progress = match notifier {
        Some(n) => {
            status = crate::sdnotify::StatusProgress::new(display.as_ref(), n);
            &status
        }
        None => display.as_ref(),
    };
    let images = store.images()?;
    let local = store.find_reference(&images, reference).cloned();
    let platform = args
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()?;
    // A local image of another platform than the one asked for does not count.
    let local = local.filter(|r| platform.as_ref().is_none_or(|p| p.accepts(&r.platform)));
    let opts = PullOptions {
        platform,
        parallel: settings.parallel(),
    };
    match (args.pull, local) {
        (PullPolicy::Never, Some(r)) | (PullPolicy::Missing, Some(r)) => Ok(r),
        (PullPolicy::Never, None) => Err(anyhow!(
            "image {reference} is not in the store and --pull never forbids pulling it: run `slate pull {reference}` first"
        )),
        (PullPolicy::Missing, None) => {
            let client = settings.registry_client(args.quiet)?;
            let pulled = pull::pull(store, &client, reference, &opts, progress)
                .with_context(|| format!("cannot pull {reference}"))?;
            Ok(pulled.record)
        }
        (PullPolicy::Always, local) => {
            let client = settings.registry_client(args.quiet)?;
            let resolved = match pull::resolve(&client, reference, &opts) {
                Ok(r) => r,
                Err(e) if is_unreachable(&e) && local.is_some() => {
                    let r = local.ok_or_else(|| anyhow!("no local image"))?;
                    tracing::warn!(
                        "cannot reach the registry of {reference} ({e}); running the local copy {}",
                        r.digest
                    );
                    return Ok(r);
                }
                // `slate auto-update` rolled the name back to this image: that works offline
                // and whatever the registry says now (a deleted tag, expired credentials).
                Err(e) if local.as_ref().is_some_and(|r| store.is_restored(r)) => {
                    let r = local.ok_or_else(|| anyhow!("no local image"))?;
                    tracing::warn!(
                        "cannot check {reference} in its registry ({e}); running {}, the release auto-update rolled back to",
                        r.digest
                    );
                    return Ok(r);
                }
                Err(e) => return Err(anyhow!(e).context(format!("cannot pull {reference}"))),
            };
            if let Some(r) = local.as_ref().filter(|r| r.digest == resolved.record.digest) {
                return Ok(r.clone());
            }
            // A release `slate auto-update` rolled back is not taken again by a restart while
            // the registry still serves it (`slate pull` takes it on purpose).
            if let (Some(why), Some(r)) = (store.rejected(&resolved.record.digest)?, &local) {
                tracing::warn!(
                    "{reference} is {} in the registry, a release that was rolled back ({}); running the local {}",
                    resolved.record.digest,
                    why.trim(),
                    r.digest
                );
                return Ok(r.clone());
            }
            let pulled = pull::fetch(store, &client, reference, resolved, &opts, progress)
                .with_context(|| format!("cannot pull {reference}"))?;
            Ok(pulled.record)
        }
    }
}

fn is_unreachable(e: &PullError) -> bool {
    match e {
        PullError::Registry(RegistryError::Connect { .. }) => true,
        PullError::Registry(RegistryError::Status { status, .. }) => status.is_server_error(),
        _ => false,
    }
}

/// A random 64-hex id, like docker's.
pub(crate) fn new_id() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .context("cannot read /dev/urandom")?;
    let mut s = String::with_capacity(64);
    for x in b {
        let _ = write!(&mut s, "{x:02x}");
    }
    Ok(s)
}

/// The content of a run dir's `owner` file: the supervising process's PID and start time,
/// so a PID reused after a crash does not keep a dead run alive.
pub(crate) fn owner_line(pid: u32) -> String {
    match crate::state::proc_start_time(pid as i32) {
        Some(start) => format!("{pid} {start}"),
        None => pid.to_string(),
    }
}

/// Whether the owner named by an `owner` file is still that process.
fn owner_alive(line: &str) -> Option<bool> {
    let mut f = line.split_whitespace();
    let pid = f.next()?.parse::<i32>().ok()?;
    Some(match f.next().and_then(|s| s.parse::<u64>().ok()) {
        Some(start) => crate::state::proc_start_time(pid) == Some(start),
        // Written by an older slate: the PID alone.
        None => Path::new(&format!("/proc/{pid}")).exists(),
    })
}

/// Removes what runs whose supervisor is gone (killed, power cut) left: their cgroup (and any
/// process still in it) and their directory.
fn sweep_dead_runs(runs: &Path) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let owner = std::fs::read_to_string(dir.join("owner"))
            .ok()
            .and_then(|s| owner_alive(&s));
        let alive = match owner {
            Some(alive) => alive,
            // Just created, owner not written yet: leave it to a later sweep.
            None => e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().map(|d| d.as_secs() < 60).unwrap_or(true))
                .unwrap_or(false),
        };
        if !alive {
            tracing::info!(dir = %dir.display(), "removing what a dead run left behind");
            // The run's id names its cgroup (under slate's parent; a custom cgroupsPath is
            // only known to detached runs' records, which the state sweep handles).
            if let Some(id) = dir.file_name().and_then(|n| n.to_str()) {
                match slate_runtime::cgroups::Cgroup::open(id, None) {
                    Ok(cg) => {
                        if let Err(err) = cg.remove() {
                            tracing::warn!(id, error = %err, "cannot remove a dead run's cgroup");
                        }
                    }
                    Err(slate_runtime::cgroups::CgroupError::NotFound { .. }) => {}
                    Err(err) => tracing::debug!(id, error = %err, "no cgroup for a dead run"),
                }
            }
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %err, "cannot remove a dead run's directory");
            }
        }
    }
}

/// `SLATE_CLONE_INTO_CGROUP=0` makes the runtime clone the container in slate's own cgroup and
/// move it, as on kernels without `clone3(CLONE_INTO_CGROUP)`: a switch for tests and for
/// measuring what being born in the cgroup saves, not a setting.
pub(crate) fn clone_into_cgroup() -> bool {
    std::env::var_os("SLATE_CLONE_INTO_CGROUP").is_none_or(|v| v != "0")
}
