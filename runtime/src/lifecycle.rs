//! The OCI life cycle of containers kept in a state directory: `create`, `start`, `state`,
//! `kill`, `delete`, with the states the runtime spec names (creating, created, running,
//! stopped; paused where the cgroup is frozen) and its hooks ([`crate::hooks`]; the
//! `createContainer` and `startContainer` ones run inside the container, by its process).
//!
//! A container is `<root>/<id>/`: `config.json`, the spec as `create` read it, written
//! once ("any updates to config.json after this step MUST NOT affect the container": start,
//! exec and delete read this copy, never the bundle's again); `state.json`, what `/proc`
//! cannot tell (the bundle, the pid and its start time, so that a recycled pid is not taken
//! for the container, the cgroup, the creation time); and, while created, `exec.fifo`
//! (runc's name), the gate its process waits at right before it execs the app.
//!
//! The process is nobody's child once `create` has returned (an engine's shim or conmon
//! reaps it), so the state is read from `/proc` and the gate: creating until `state.json`
//! names a pid, created while the gate exists and the process lives, running after, stopped
//! once it is gone or a zombie. The same [`Container::create`] and [`Created::start`] start
//! `slate run`'s containers; this module adds what a runtime driven one command at a time
//! needs on disk.

use std::collections::HashMap;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::bundle::{Bundle, BundleError};
use crate::cgroups::{Cgroup, CgroupError};
use crate::hooks::{self, HookError};
use crate::{Container, ContainerOptions, Created, Error, Rootfs};

/// The runtime-spec version of the states this module reports.
pub const OCI_VERSION: &str = "1.0.2";
const STATE_FILE: &str = "state.json";
const GATE: &str = "exec.fifo";
const CONFIG_COPY: &str = "config.json";

/// What went wrong in a life-cycle operation.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("invalid container id {0:?}: letters, digits, '_', '-', '.' and '+'")]
    InvalidId(String),
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("container {0} already exists")]
    Exists(String),
    /// The operation does not apply in the container's state.
    #[error("container {id} is {status}: {what}")]
    State {
        id: String,
        status: &'static str,
        what: &'static str,
    },
    #[error("process.terminal needs a console socket: the terminal's master goes there")]
    NoConsoleSocket,
    #[error("cannot send the terminal to the console socket {path}")]
    ConsoleSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "container {0} ended before its app could start (killed, or a startContainer hook failed)"
    )]
    DiedBeforeStart(String),
    #[error("corrupt {path}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Runtime(#[from] Error),
}

type Result<T, E = LifecycleError> = std::result::Result<T, E>;

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LifecycleError {
    let path = path.to_path_buf();
    move |source| LifecycleError::Io { op, path, source }
}

/// The OCI states, and runc's `paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// runc's rule for ids: they name a directory.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'));
    if !ok {
        return Err(LifecycleError::InvalidId(id.to_string()));
    }
    Ok(())
}

/// The start time of a process (clock ticks since boot): with the pid, it names one
/// process for the life of the machine. `None` for a zombie (it runs nothing any more) or
/// a process that is gone.
pub fn process_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    if matches!(stat.state, 'Z' | 'X' | 'x') {
        return None;
    }
    Some(stat.starttime)
}

/// What `create` asks for, beyond the bundle.
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// Where the terminal's master goes (`process.terminal`), by SCM_RIGHTS, as runc sends it.
    pub console_socket: Option<PathBuf>,
    /// Descriptors 3..3+n go to the container (see [`ContainerOptions::preserve_fds`]).
    pub preserve_fds: u32,
    /// See [`ContainerOptions::clone_into_cgroup`].
    pub clone_into_cgroup: bool,
    /// Keep the process bound to this one (killed if it dies): a caller that starts and
    /// waits for it itself (`run` in the foreground). `false` leaves it to its reaper.
    pub die_with_parent: bool,
}

/// A state directory (runc's `--root`): one subdirectory per container.
#[derive(Debug, Clone)]
pub struct StateRoot {
    path: PathBuf,
}

impl StateRoot {
    /// The state directory at `path`, which commands that only read need not create.
    pub fn new(path: impl Into<PathBuf>) -> StateRoot {
        StateRoot { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Compiled seccomp profiles, kept beside the containers ([`crate::seccomp`]): engines
    /// start many containers with the same profile. '~' is not an id character
    /// ([`validate_id`]), so no container can take the name.
    pub fn seccomp_cache(&self) -> PathBuf {
        self.path.join("~seccomp-cache")
    }

    fn dir(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        Ok(self.path.join(id))
    }

    /// The container `id`.
    pub fn load(&self, id: &str) -> Result<Entry> {
        let dir = self.dir(id)?;
        let p = dir.join(STATE_FILE);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LifecycleError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io("read", &p)(e)),
        };
        let saved: Saved = serde_json::from_slice(&bytes)
            .map_err(|source| LifecycleError::Corrupt { path: p, source })?;
        Ok(Entry { dir, saved })
    }

    /// Every container, oldest first.
    pub fn list(&self) -> Vec<Entry> {
        let mut all: Vec<Entry> = std::fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|id| self.load(id).ok()))
            .collect();
        all.sort_by(|x, y| x.saved.created.cmp(&y.saved.created));
        all
    }

    /// The OCI `create`: sets the container up from `bundle` and leaves its process waiting
    /// at the gate. On the way, while the process waits before `pivot_root`, the `prestart`
    /// and `createRuntime` hooks run here ([`runtime_hooks`]), then the process runs the
    /// `createContainer` ones. A failure leaves nothing behind.
    pub fn create(
        &self,
        id: &str,
        bundle: Bundle,
        opts: CreateOptions,
    ) -> Result<(Entry, Created)> {
        let dir = self.dir(id)?;
        let terminal = bundle
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        if terminal && opts.console_socket.is_none() {
            return Err(LifecycleError::NoConsoleSocket);
        }
        create_private_dir(&self.path)?;
        std::fs::create_dir(&dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                LifecycleError::Exists(id.to_string())
            } else {
                io("create", &dir)(e)
            }
        })?;
        let res = self.create_in(id, &dir, bundle, opts);
        if res.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        res
    }

    fn create_in(
        &self,
        id: &str,
        dir: &Path,
        bundle: Bundle,
        opts: CreateOptions,
    ) -> Result<(Entry, Created)> {
        let Bundle {
            dir: bundle_dir,
            spec,
            rootfs,
        } = bundle;
        let mut entry = Entry {
            dir: dir.to_path_buf(),
            saved: Saved {
                id: id.to_string(),
                pid: 0,
                pid_start: None,
                bundle: bundle_dir,
                rootfs: rootfs.clone(),
                created: crate::time::now_rfc3339(),
                cgroups_path: spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()),
                cgroup_paths: Vec::new(),
                annotations: spec.annotations().clone().unwrap_or_default(),
                host_root_mount: None,
            },
        };
        // Creating, for whoever asks meanwhile.
        entry.save()?;
        let gate = dir.join(GATE);
        nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| io("create", &gate)(e.into()))?;
        // The waiting process opens it for writing as the spec's user, after the uid switch
        // (the runtime hands it over): writable by all, as runc's, since the state dir above
        // it is root's alone (0700), and opening it for writing only ever lets it go on.
        std::fs::set_permissions(&gate, std::os::unix::fs::PermissionsExt::from_mode(0o622))
            .map_err(io("set the mode of", &gate))?;
        let copy = serde_json::to_vec(&spec).map_err(|e| io("serialise", dir)(e.into()))?;
        crate::fsutil::write_atomic(&dir.join(CONFIG_COPY), &copy, 0o600)
            .map_err(io("write", &dir.join(CONFIG_COPY)))?;
        let spec_hooks = spec.hooks().clone();
        let mut copts = ContainerOptions::new(id, spec, Rootfs::Dir(rootfs));
        copts.start_gate = Some(gate);
        copts.die_with_parent = opts.die_with_parent;
        copts.preserve_fds = opts.preserve_fds;
        copts.attach_stdin = false;
        copts.clone_into_cgroup = opts.clone_into_cgroup;
        copts.seccomp_cache = Some(self.seccomp_cache());
        copts.hook_state = entry.state_as(Status::Creating);
        copts.before_pivot = runtime_hooks(&entry, spec_hooks.as_ref());
        let mut created = Container::create(copts)?;
        if let Some(sock) = &opts.console_socket {
            let master = created.take_pty_master().ok_or(Error::ChildDied)?;
            send_console(sock, &master)?;
        }
        let pid = created.pid().as_raw();
        entry.saved.pid = pid;
        entry.saved.pid_start = process_start_time(pid);
        entry.saved.cgroup_paths = created.cgroup_paths();
        entry.saved.host_root_mount = created
            .host_root_mount()
            .map(|(p, id)| (p.to_path_buf(), id));
        entry.save()?;
        Ok((entry, created))
    }
}

/// The spec's `prestart` and `createRuntime` hooks, for the stop the container's process
/// makes before pivot_root ([`ContainerOptions::before_pivot`]): the state, with the pid,
/// is saved first (a hook may ask `state`), then each list runs in the runtime's
/// namespaces; the first failure ends the create. `None` without such hooks: no stop.
fn runtime_hooks(
    entry: &Entry,
    hooks: Option<&oci_spec::runtime::Hooks>,
) -> Option<crate::BeforePivot> {
    let h = hooks?;
    let lists = [
        ("prestart", h.prestart().clone().unwrap_or_default()),
        (
            "createRuntime",
            h.create_runtime().clone().unwrap_or_default(),
        ),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        return None;
    }
    let mut entry = entry.clone();
    Some(crate::BeforePivot(Box::new(move |pid: Pid| {
        entry.saved.pid = pid.as_raw();
        entry.saved.pid_start = process_start_time(pid.as_raw());
        entry.save().map_err(|e| Error::Io {
            op: "writing the container's state",
            source: std::io::Error::other(e.to_string()),
        })?;
        // runc's and the suite's (hooks_stdin): these hooks see `created`.
        let state = entry.state_as(Status::Created);
        for (kind, list) in &lists {
            hooks::run(list, &state).map_err(|e| Error::Hook {
                kind,
                path: e.path().map(Path::to_path_buf).unwrap_or_default(),
                why: e.reason(),
            })?;
        }
        Ok(())
    })))
}

/// The state root, created 0700: it names pids and bundles of root's containers.
fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io("create", path))
}

/// What `state.json` keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    id: String,
    /// 0 while creating.
    pid: i32,
    /// Clock ticks since boot: tells the container from a later process with its pid.
    pid_start: Option<u64>,
    bundle: PathBuf,
    rootfs: PathBuf,
    created: String,
    cgroups_path: Option<PathBuf>,
    #[serde(default)]
    cgroup_paths: Vec<PathBuf>,
    #[serde(default)]
    annotations: HashMap<String, String>,
    /// A container without a mount namespace of its own: its rootfs mount in the host's
    /// (where, and the mount's id), which delete removes.
    #[serde(default)]
    host_root_mount: Option<(PathBuf, u64)>,
}

/// One container of a [`StateRoot`].
#[derive(Debug, Clone)]
pub struct Entry {
    dir: PathBuf,
    saved: Saved,
}

impl Entry {
    pub fn id(&self) -> &str {
        &self.saved.id
    }

    /// Its init process (0 while creating).
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.saved.pid)
    }

    pub fn bundle(&self) -> &Path {
        &self.saved.bundle
    }

    /// When it was created (RFC 3339).
    pub fn created(&self) -> &str {
        &self.saved.created
    }

    fn save(&self) -> Result<()> {
        let p = self.dir.join(STATE_FILE);
        let bytes =
            serde_json::to_vec_pretty(&self.saved).map_err(|e| io("serialise", &p)(e.into()))?;
        crate::fsutil::write_atomic(&p, &bytes, 0o600).map_err(io("write", &p))
    }

    /// Alive and still the process `state.json` names (not a zombie, not a recycled pid).
    pub fn alive(&self) -> bool {
        let now = process_start_time(self.saved.pid);
        now.is_some() && (self.saved.pid_start.is_none() || now == self.saved.pid_start)
    }

    pub fn status(&self) -> Status {
        if self.saved.pid == 0 {
            return Status::Creating;
        }
        if !self.alive() {
            return Status::Stopped;
        }
        if self.dir.join(GATE).exists() {
            return Status::Created;
        }
        match self.cgroup() {
            Some(cg) if cg.is_frozen() => Status::Paused,
            _ => Status::Running,
        }
    }

    /// Its cgroup, from the paths `create` recorded.
    pub fn cgroup(&self) -> Option<Cgroup> {
        Cgroup::open_recorded(
            &self.saved.id,
            self.saved.cgroups_path.as_deref(),
            &self.saved.cgroup_paths,
        )
        .ok()
    }

    /// The spec it was created with (its copy of the bundle's `config.json`). A container of
    /// a slate that kept no copy (state in /run outlives an upgrade until the next boot)
    /// falls back on the bundle's.
    pub fn spec(&self) -> Result<Spec> {
        let copy = self.dir.join(CONFIG_COPY);
        let path = if copy.exists() {
            copy
        } else {
            self.saved.bundle.join("config.json")
        };
        Ok(crate::bundle::load(&path)?)
    }

    /// The OCI state, as `state` prints it and hooks read it (with runc's `rootfs`,
    /// `created` and `owner` beside the spec's fields).
    pub fn state(&self) -> serde_json::Value {
        self.state_as(self.status())
    }

    fn state_as(&self, status: Status) -> serde_json::Value {
        let s = &self.saved;
        let mut v = json!({
            "ociVersion": OCI_VERSION,
            "id": s.id,
            "status": status.as_str(),
            "pid": if status == Status::Stopped { 0 } else { s.pid },
            "bundle": s.bundle,
            "rootfs": s.rootfs,
            "created": s.created,
            "owner": "",
        });
        if !s.annotations.is_empty() {
            v["annotations"] = json!(s.annotations);
        }
        v
    }

    /// The OCI `start` from another process: opens the gate, so the process execs the app,
    /// then runs the `poststart` hooks (their failures are warnings: the container is
    /// started already).
    pub fn start(&self) -> Result<Vec<HookError>> {
        self.startable()?;
        let gate = self.dir.join(GATE);
        let mut f = std::fs::File::open(&gate).map_err(io("open", &gate))?;
        let passed = pass_gate(&mut f).map_err(io("read", &gate));
        let _ = std::fs::remove_file(&gate);
        if !passed? {
            return Err(LifecycleError::DiedBeforeStart(self.saved.id.clone()));
        }
        Ok(self.poststart())
    }

    /// `start` of a container this process created and keeps ([`StateRoot::create`]): the
    /// same gate, and an exec that fails is this call's error.
    pub fn start_created(&self, created: Created) -> Result<(Container, Vec<HookError>)> {
        self.startable()?;
        let started = created.start();
        let _ = std::fs::remove_file(self.dir.join(GATE));
        Ok((started?, self.poststart()))
    }

    fn startable(&self) -> Result<()> {
        let status = self.status();
        if status != Status::Created {
            return Err(LifecycleError::State {
                id: self.saved.id.clone(),
                status: status.as_str(),
                what: "only a created container can be started",
            });
        }
        Ok(())
    }

    /// What poststart hooks get: the state of the start that just happened, running with
    /// its pid, even when the app is gone already (`true` exits at once) and `state` would
    /// say stopped by now. A hook that works on the process (its namespaces) needs the pid;
    /// runc and crun pass the same.
    fn poststart(&self) -> Vec<HookError> {
        match self.spec().ok().and_then(|s| s.hooks().clone()) {
            Some(h) => hooks::run_all(
                h.poststart().as_deref().unwrap_or_default(),
                &self.state_as(Status::Running),
            ),
            None => Vec::new(),
        }
    }

    /// Sends `signal` to its init, or with `all` to every process of its cgroup.
    pub fn kill(&self, signal: Signal, all: bool) -> Result<()> {
        let status = self.status();
        if matches!(status, Status::Stopped | Status::Creating) {
            return Err(LifecycleError::State {
                id: self.saved.id.clone(),
                status: status.as_str(),
                what: "there is no process to signal",
            });
        }
        if all {
            if let Some(cg) = self.cgroup() {
                for p in cg.pids().unwrap_or_default() {
                    let _ = nix::sys::signal::kill(p, signal);
                }
                return Ok(());
            }
        }
        nix::sys::signal::kill(self.pid(), signal)
            .map_err(|e| Error::Sys {
                op: "kill",
                source: e,
            })
            .map_err(LifecycleError::from)
    }

    /// The OCI `delete`: removes a stopped container (with `force`, one in any state, killed
    /// first), its cgroup and its state, then runs the `poststop` hooks.
    pub fn delete(self, force: bool) -> Result<Vec<HookError>> {
        let status = self.status();
        // The spec: deleting a container that is not stopped is an error (created included).
        if status != Status::Stopped && !force {
            return Err(LifecycleError::State {
                id: self.saved.id.clone(),
                status: status.as_str(),
                what: "stop it first, or delete --force",
            });
        }
        if !matches!(status, Status::Stopped | Status::Creating) {
            if let Some(cg) = self.cgroup() {
                let _ = cg.set_frozen(false);
            }
            let _ = nix::sys::signal::kill(self.pid(), Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(cg) = self.cgroup() {
            cg.remove()?;
        }
        if let Some((path, mount_id)) = &self.saved.host_root_mount {
            crate::mounts::unmount_host_rootfs(path, *mount_id)?;
        }
        let hooks = self.spec().ok().and_then(|sp| sp.hooks().clone());
        let state = self.state_as(Status::Stopped);
        std::fs::remove_dir_all(&self.dir).map_err(io("remove", &self.dir))?;
        Ok(match hooks {
            Some(h) => hooks::run_all(h.poststop().as_deref().unwrap_or_default(), &state),
            None => Vec::new(),
        })
    }
}

/// Reads the start gate (the FIFO, opened for reading) through: the byte the waiting
/// process writes once it is let go (`false` if it died first), then the end of file its
/// exec brings, since it holds the write end close-on-exec. So `start` returns once the
/// app runs: a signal sent right after it reaches the app, not slate's code before the exec
/// (which widened the window of runtime-tools' killsig, whose app must install its TERM
/// trap before the signal comes, as with every runtime).
pub fn pass_gate(f: &mut std::fs::File) -> std::io::Result<bool> {
    let mut b = [0u8; 1];
    let mut got = false;
    loop {
        match std::io::Read::read(f, &mut b) {
            Ok(0) => return Ok(got),
            Ok(_) => got = true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `delete --force` of an id with a directory but no readable state (a create that died
/// before writing it): runc removes what is there.
pub fn remove_leftover(root: &StateRoot, id: &str) -> Result<()> {
    let dir = root.dir(id)?;
    if dir.join(STATE_FILE).exists() {
        return Ok(());
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", &dir)(e)),
    }
}

/// Passes the terminal's master to the engine, as runc does (SCM_RIGHTS on a unix socket).
pub fn send_console(path: &Path, master: &OwnedFd) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let err = |source| LifecycleError::ConsoleSocket {
        path: path.to_path_buf(),
        source,
    };
    let sock = std::os::unix::net::UnixStream::connect(path).map_err(err)?;
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(b"/dev/ptmx")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| err(e.into()))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_one_directory_and_nothing_else() {
        for ok in ["a", "web-1", "x.y_z+2", &"a".repeat(1024)] {
            validate_id(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a b",
            "~seccomp-cache",
            &"a".repeat(1025),
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    /// A container of no state directory, with `pid` and its recorded start time.
    fn entry(id: &str, pid: i32, pid_start: Option<u64>) -> Entry {
        Entry {
            dir: PathBuf::from("/nonexistent"),
            saved: Saved {
                id: id.into(),
                pid,
                pid_start,
                bundle: PathBuf::from("/b"),
                rootfs: PathBuf::from("/b/rootfs"),
                created: String::new(),
                cgroups_path: None,
                cgroup_paths: Vec::new(),
                annotations: HashMap::new(),
                host_root_mount: None,
            },
        }
    }

    #[test]
    fn a_recycled_pid_is_not_the_container() {
        let me = std::process::id() as i32;
        let start = process_start_time(me).unwrap();
        let entry = |pid_start| entry("t", me, pid_start);
        assert!(entry(Some(start)).alive());
        assert!(!entry(Some(start + 1)).alive());
        let mut creating = entry(None);
        creating.saved.pid = 0;
        assert_eq!(creating.status(), Status::Creating);
        assert_eq!(creating.state()["status"], "creating");
    }

    /// runtime-tools' hooks_stdin: an app that exits at once had its poststart hook told
    /// `"status": "stopped", "pid": 0`, now and then (whenever it won the race).
    #[test]
    fn poststart_hooks_get_the_started_process_even_when_it_is_gone() {
        // No such process (above pid_max), as after the app exited and was reaped.
        let e = entry("gone", i32::MAX, None);
        assert_eq!(e.state()["status"], "stopped");
        let st = e.state_as(Status::Running);
        assert_eq!(
            (&st["status"], &st["pid"]),
            (&json!("running"), &json!(i32::MAX))
        );
        assert_eq!(st["id"], "gone");
    }

    #[test]
    fn state_of_what_is_not_there() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::new(dir.path());
        assert!(matches!(
            root.load("nope"),
            Err(LifecycleError::NotFound(_))
        ));
        assert!(matches!(
            root.load("../etc"),
            Err(LifecycleError::InvalidId(_))
        ));
        std::fs::create_dir(dir.path().join("half")).unwrap();
        std::fs::write(dir.path().join("half").join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(
            root.load("half"),
            Err(LifecycleError::Corrupt { .. })
        ));
        assert!(root.list().is_empty());
    }
}
