//! Container records of detached (and supervised) containers: `<state_dir>/<id>/` holds
//! `state.json` (this module's [`Record`]), `config.json` (the OCI spec the container was
//! started with, everything in it, the seccomp profile too: written once, reused by `slate
//! exec`, restarts, `slate start` and `inspect`), `image.json` (for a container labelled for
//! `slate auto-update`: the store's record of the image it runs, held for a rollback) and
//! `stop` (present once a stop was asked for: no more restarts).
//!
//! The state dir is `/run/slate` by default: a tmpfs, so a reboot forgets every container, as it
//! should (their rootfs are gone too). Logs live in the store (`<root>/containers/<id>/`) and are
//! removed by `slate rm`, or by the sweep once their record is gone.
//!
//! Guarantees:
//! - `state.json` is replaced atomically (temp file, fsync, rename; on a tmpfs without the
//!   fsyncs, see [`write_atomic`]): a reader sees the old or the new record, never half of one,
//!   even after a power cut.
//! - Creating a container, checking its name and sweeping dead runs happen under one flock
//!   (`<state_dir>/lock`), so two `slate run --name x` cannot both win.
//! - A run is dead only when its supervisor's PID is gone *or* belongs to another process (the
//!   start time in `/proc/<pid>/stat` differs): a reused PID never keeps a dead run alive, and a
//!   live supervisor is never mistaken for a dead one.

use std::fs;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};

/// The container's OCI spec, beside its record.
pub const CONFIG_FILE: &str = "config.json";
/// Its name before slate 0.1's bundle change.
const LEGACY_SPEC_FILE: &str = "spec.json";
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Default state directory (tmpfs on every systemd host).
pub const DEFAULT_STATE_DIR: &str = "/run/slate";

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The record exists; the supervisor has not started the container yet.
    Created,
    Running,
    /// Between two runs of a restart policy.
    Restarting,
    Exited,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
        }
    }
}

/// `--restart`: what the supervisor does when the container exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum RestartPolicy {
    No,
    /// Restart after a non-zero exit, at most `max` times (unbounded when `None`).
    OnFailure {
        max: Option<u32>,
    },
    Always,
}

impl std::str::FromStr for RestartPolicy {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<RestartPolicy> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        match (name, count) {
            ("no", None) => Ok(RestartPolicy::No),
            ("always", None) | ("unless-stopped", None) => Ok(RestartPolicy::Always),
            ("on-failure", None) => Ok(RestartPolicy::OnFailure { max: None }),
            ("on-failure", Some(c)) => {
                let max = c
                    .parse::<u32>()
                    .map_err(|_| anyhow!("invalid --restart {s:?}: the count must be a number"))?;
                Ok(RestartPolicy::OnFailure { max: Some(max) })
            }
            _ => bail!("invalid --restart {s:?}: expected no, on-failure[:N] or always"),
        }
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::OnFailure { max: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max: Some(n) } => write!(f, "on-failure:{n}"),
        }
    }
}

/// Where the container's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogDriver {
    /// Discard the output.
    None,
    /// Size-capped, rotated files in the store (the default).
    File,
    /// The systemd journal, through its native socket.
    Journald,
}

/// One container, as `state.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The manifest digest that was run.
    pub image_digest: String,
    /// The process's args, for `ps`.
    pub command: Vec<String>,
    pub status: Status,
    /// The container's PID 1 on the host, and its start time (clock ticks since boot).
    pub pid: Option<i32>,
    pub pid_start: Option<u64>,
    pub supervisor_pid: Option<i32>,
    pub supervisor_start: Option<u64>,
    /// Docker's number: the code, or 128+N for a signal.
    pub exit_code: Option<i32>,
    /// Why the container is not running when that is not its own doing (a failed start, a
    /// supervisor that died).
    pub error: Option<String>,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    /// Per-run scratch: upper, work, rootfs mount point, generated /etc files.
    pub run_dir: PathBuf,
    /// Logs: kept until `slate rm`.
    pub log_dir: PathBuf,
    pub store_root: PathBuf,
    /// The spec's `linux.cgroupsPath`, to find the cgroup again.
    pub cgroups_path: Option<PathBuf>,
    /// The cgroup directories of the current run (one per hierarchy on v1).
    pub cgroup_paths: Vec<PathBuf>,
    /// The image's StopSignal (or SIGTERM).
    pub stop_signal: String,
    pub restart: RestartPolicy,
    pub restart_count: u32,
    pub log_driver: LogDriver,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// `--rm`: remove record and logs when the container exits for good.
    pub auto_remove: bool,
    /// `--init`.
    pub init: bool,
    /// Layer directories of the rootfs, top-most first (restarts lay out a fresh rootfs).
    pub lower: Vec<PathBuf>,
    /// `--read-only`: no upper dir.
    pub read_only: bool,
    /// Where the spec's seccomp profile came from, for `inspect`: `default` (docker's, for
    /// the container's capabilities), `unconfined`, or the file of `--security-opt
    /// seccomp=FILE`. Records of an older slate have none.
    #[serde(default)]
    pub seccomp_source: Option<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Run in the foreground: the `slate run` that started it supervises it, its output goes
    /// to that command's stdout and stderr (not captured), and the record goes with the run.
    #[serde(default)]
    pub foreground: bool,
    /// The systemd service the container runs under, when it does (`app.service`).
    #[serde(default)]
    pub unit: Option<String>,
    /// A detached container's `slate run` flags, image and command as typed, without `-d`,
    /// `--name` and `--replace`: how `slate auto-update` starts it again on a new image
    /// (recorded for containers labelled for it; `--env NAME` values are in `replay.env`).
    #[serde(default)]
    pub replay: Option<Vec<String>>,
    /// The configuration file it was started with, when one was named.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Its health check (`--health-cmd`, or the image's), run by `slate healthcheck`.
    #[serde(default)]
    pub healthcheck: Option<crate::health::HealthCheck>,
    /// Its network, when not the host's or none (`--network bridge`, `-p`...).
    #[serde(default)]
    pub network: Option<crate::network::Request>,
    /// `--stop-timeout`: what `slate stop` waits by default.
    #[serde(default)]
    pub stop_timeout: Option<u32>,
}

impl Record {
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// Whether the record claims a live container (running or between restarts).
    pub fn is_active(&self) -> bool {
        matches!(
            self.status,
            Status::Created | Status::Running | Status::Restarting
        )
    }

    /// Whether the container's PID 1 is still the process the record names.
    pub fn container_alive(&self) -> bool {
        match (self.pid, self.pid_start) {
            (Some(pid), Some(start)) => proc_start_time(pid) == Some(start),
            _ => false,
        }
    }

    /// Whether the supervisor is still the process the record names.
    pub fn supervisor_alive(&self) -> bool {
        match (self.supervisor_pid, self.supervisor_start) {
            (Some(pid), Some(start)) => proc_start_time(pid) == Some(start),
            _ => false,
        }
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// The global lock of a state dir; released on drop.
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<fs::File>,
}

impl StateDir {
    /// Opens (creating) the state dir. Mode 0700: records name PIDs and paths of root's
    /// containers, which are nobody else's business.
    pub fn open(root: &Path) -> anyhow::Result<StateDir> {
        use std::os::unix::fs::DirBuilderExt as _;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .with_context(|| format!("cannot create the state directory {}", root.display()))?;
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The container's OCI spec: `config.json` beside its record, or the `spec.json` of a
    /// container an older slate started. That one kept docker's default seccomp filter apart
    /// (`seccomp.bpf`), not in its spec: starting or exec'ing from such a spec would run
    /// without the filter, so it is refused.
    pub fn config_path(&self, id: &str) -> anyhow::Result<PathBuf> {
        let dir = self.dir(id);
        let config = dir.join(CONFIG_FILE);
        if config.exists() || !dir.join(LEGACY_SPEC_FILE).exists() {
            return Ok(config);
        }
        if dir.join("seccomp.bpf").exists() {
            bail!("container {id} was started by an older slate, which kept its seccomp filter outside its spec: remove it (`slate rm -f`) and run it again");
        }
        Ok(dir.join(LEGACY_SPEC_FILE))
    }

    /// Takes the state dir's lock (blocking).
    pub fn lock(&self) -> anyhow::Result<StateLock> {
        Ok(StateLock {
            _lock: self.lock_named("lock")?,
        })
    }

    /// Takes the exclusive lock of the file `name` in the state dir (blocking): the state
    /// dir's own lock, or a narrower one (the networks').
    pub fn lock_named(&self, name: &str) -> anyhow::Result<Flock<fs::File>> {
        let path = self.root.join(name);
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("cannot lock {}", path.display()))
    }

    /// Every record, oldest first. Unreadable records are skipped with a warning: one
    /// corrupt file must not make `ps` useless.
    pub fn list(&self) -> anyhow::Result<Vec<Record>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot list {}", self.root.display()))
            }
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path().join("state.json");
            if !path.exists() {
                continue;
            }
            match self.load_path(&path) {
                Ok(r) => out.push(r),
                Err(err) => tracing::warn!("skipping {}: {err:#}", path.display()),
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    fn load_path(&self, path: &Path) -> anyhow::Result<Record> {
        let text = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("corrupt {}", path.display()))
    }

    pub fn load(&self, id: &str) -> anyhow::Result<Record> {
        self.load_path(&self.dir(id).join("state.json"))
    }

    /// Writes the record atomically.
    pub fn save(&self, r: &Record) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(r).context("cannot serialise a container record")?;
        write_atomic(&self.dir(&r.id).join("state.json"), &bytes)
    }

    /// Finds a container by full id, name, or unique id prefix (docker's order).
    pub fn find(&self, key: &str) -> anyhow::Result<Record> {
        let all = self.list()?;
        find_in(&all, key).cloned()
    }

    /// Removes a record's directory.
    pub fn remove(&self, id: &str) -> anyhow::Result<()> {
        let d = self.dir(id);
        match fs::remove_dir_all(&d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", d.display())),
        }
    }

    /// Whether a stop was asked for (no restart then).
    pub fn stop_requested(&self, id: &str) -> bool {
        self.dir(id).join("stop").exists()
    }

    /// Forgets an earlier stop request (`slate start` of a stopped container).
    pub fn clear_stop(&self, id: &str) {
        let _ = fs::remove_file(self.dir(id).join("stop"));
    }

    pub fn request_stop(&self, id: &str) -> anyhow::Result<()> {
        let p = self.dir(id).join("stop");
        fs::write(&p, b"").with_context(|| format!("cannot write {}", p.display()))
    }
}

/// Finds by full id, then exact name, then unique id prefix.
pub fn find_in<'a>(all: &'a [Record], key: &str) -> anyhow::Result<&'a Record> {
    if let Some(r) = all.iter().find(|r| r.id == key) {
        return Ok(r);
    }
    if let Some(r) = all.iter().find(|r| r.name == key) {
        return Ok(r);
    }
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        let matches: Vec<&Record> = all.iter().filter(|r| r.id.starts_with(key)).collect();
        match matches.len() {
            1 => return Ok(matches[0]),
            0 => {}
            n => bail!("{key:?} matches {n} containers: give more of the id"),
        }
    }
    bail!("no such container: {key}")
}

/// [`slate_runtime::fsutil::write_atomic`], 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

/// [`write_atomic`] with the file's mode (a systemd unit is 0644, as systemd's own are).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    slate_runtime::fsutil::write_atomic(path, bytes, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// See [`slate_runtime::lifecycle::process_start_time`].
pub fn proc_start_time(pid: i32) -> Option<u64> {
    slate_runtime::lifecycle::process_start_time(pid)
}

pub use slate_runtime::time::{now, now_rfc3339, rfc3339};

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "clever", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid",
    "merry", "nifty", "proud", "quiet", "rapid", "sharp", "sleepy", "sunny", "tender", "vivid",
    "witty", "zen", "bold", "cool",
];
const NOUNS: &[&str] = &[
    "otter", "falcon", "badger", "heron", "lynx", "panda", "raven", "salmon", "tapir", "walrus",
    "yak", "zebra", "beaver", "cobra", "dingo", "ferret", "gecko", "ibis", "koala", "lemur",
    "marten", "newt", "okapi", "puffin",
];

/// docker's adjective_noun, from the id's bytes; `taken` names are avoided by appending a
/// counter.
pub fn generate_name(id: &str, taken: &dyn Fn(&str) -> bool) -> String {
    let byte = |i: usize| {
        id.get(i * 2..i * 2 + 2)
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    };
    let base = format!(
        "{}_{}",
        ADJECTIVES[byte(0) % ADJECTIVES.len()],
        NOUNS[byte(1) % NOUNS.len()]
    );
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}{n}"))
        .find(|n| !taken(n))
        .unwrap_or(base)
}

/// Docker's name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let mut b = name.bytes();
    let ok = b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
        && name.len() <= 128;
    if ok {
        Ok(())
    } else {
        bail!("invalid container name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        let s = rfc3339(1709209815, 5);
        assert_eq!(s, "2024-02-29T12:30:15.000000005Z");
        assert_eq!(crate::output::parse_rfc3339(&s), Some(1709209815));
    }

    #[test]
    fn restart_policies_parse() {
        assert_eq!(
            "on-failure:3".parse::<RestartPolicy>().unwrap(),
            RestartPolicy::OnFailure { max: Some(3) }
        );
        assert_eq!(
            "always".parse::<RestartPolicy>().unwrap(),
            RestartPolicy::Always
        );
        assert_eq!("no".parse::<RestartPolicy>().unwrap(), RestartPolicy::No);
        assert!("sometimes".parse::<RestartPolicy>().is_err());
        assert!("on-failure:x".parse::<RestartPolicy>().is_err());
        assert_eq!(
            RestartPolicy::OnFailure { max: Some(3) }.to_string(),
            "on-failure:3"
        );
    }

    #[test]
    fn our_own_start_time_is_stable() {
        let me = std::process::id() as i32;
        let a = proc_start_time(me).unwrap();
        assert_eq!(proc_start_time(me), Some(a));
        assert_eq!(proc_start_time(0), None);
    }

    #[test]
    fn names() {
        let n = generate_name("00ff", &|_| false);
        assert_eq!(n, "brave_ferret");
        let n2 = generate_name("00ff", &|n| n == "brave_ferret");
        assert_eq!(n2, "brave_ferret2");
        assert!(validate_name("web-1.a_b").is_ok());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
    }
}
