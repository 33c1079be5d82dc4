//! The OCI runtime command line, runc's: `create`, `start`, `state`, `kill`, `delete`,
//! `run`, `list`, `ps`, `pause`, `resume` and `features`, for engines that drive a runtime
//! (containerd's runc shim, podman's conmon, runtime-tools). Reached as `slate oci ...`, or
//! as runc itself when slate is called through a `slate-runc` (or `runc`) name.
//!
//! The container is slate-runtime's, exactly as `slate run` makes it, with one difference:
//! `create` leaves the process waiting at a start gate (`<root>/<id>/exec.fifo`, runc's
//! name) right before it execs the app, and exits; `start` opens the FIFO's other end. The
//! process is then nobody's child but its reaper's (the shim's, conmon's, init's), so the
//! state is worked out from `/proc`: created while the gate exists and the process lives,
//! running after, stopped once it is gone or a zombie. `state.json` keeps what `/proc`
//! cannot tell: the bundle, the pid's start time (a recycled pid is not the container),
//! the cgroup path, the annotations.
//!
//! Hooks: `prestart` and `createRuntime` run once the container is created (its namespaces
//! exist and `state.pid` can be entered; the spec places `createRuntime` before
//! `pivot_root`, which slate's runtime does inside the child), `poststart` after `start`,
//! `poststop` at `delete`. `createContainer` and `startContainer` (run inside the
//! container) are not supported: a spec with them is refused rather than half run.

use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser, Subcommand};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{Hook, Spec};
use serde::{Deserialize, Serialize};
use serde_json::json;
use slate_runtime::cgroups::Cgroup;
use slate_runtime::{Container, ContainerOptions, Rootfs};

const OCI_VERSION: &str = "1.0.2";
const STATE_FILE: &str = "state.json";
const GATE: &str = "exec.fifo";
/// The spec as `create` read it, in the container's state directory.
const CONFIG_COPY: &str = "config.json";

#[derive(Debug, Parser)]
#[command(
    name = "slate-runc",
    version,
    about = "slate as an OCI runtime, with runc's command line (for containerd, podman, runtime-tools)"
)]
pub struct OciCli {
    /// Where container state lives
    #[arg(long, global = true, default_value = "/run/slate-runc")]
    pub root: PathBuf,
    /// Also write errors to this file (containerd's shim reads it)
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// text or json
    #[arg(long, global = true, default_value = "text")]
    pub log_format: String,
    /// cgroupsPath is systemd's slice:prefix:name form
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc's command lines
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for runc's command lines (slate runs rootful only)
    #[arg(long, global = true)]
    pub rootless: Option<String>,
    #[command(subcommand)]
    pub command: OciCommand,
}

#[derive(Debug, Subcommand)]
pub enum OciCommand {
    /// Create a container from a bundle: set up, waiting for start
    Create(CreateArgs),
    /// Start a created container
    Start(IdArg),
    /// The container's state, as JSON
    State(IdArg),
    /// Send a signal (default SIGTERM)
    Kill(KillArgs),
    /// Remove a stopped container (--force: any)
    Delete(DeleteArgs),
    /// Create and start, and wait unless --detach
    Run(RunArgs),
    /// List containers
    List(ListArgs),
    /// The processes of a container
    Ps(PsArgs),
    /// Run a process in a running container
    Exec(ExecArgs),
    /// Freeze a container's processes
    Pause(IdArg),
    /// Thaw a paused container
    Resume(IdArg),
    /// Change a running container's cgroup limits
    Update(UpdateArgs),
    /// What this runtime supports, as JSON (runtime-spec features)
    Features,
}

#[derive(Debug, Args)]
pub struct IdArg {
    pub id: String,
}

#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// The bundle directory (config.json and the rootfs) [default: the current directory]
    #[arg(short, long)]
    pub bundle: Option<PathBuf>,
    /// Write the container's pid to this file
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// A unix socket to send the terminal's master to (process.terminal)
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Accepted: slate always pivots into the rootfs
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc's command lines
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass descriptors 3..3+N to the container
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Start it and exit, without waiting
    #[arg(short, long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The process as a runtime-spec `process` JSON (its args win over COMMAND)
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Return once it runs, leaving it to the caller's reaper
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    #[arg(short, long)]
    pub tty: bool,
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// NAME=VALUE
    #[arg(short, long)]
    pub env: Vec<String>,
    /// uid[:gid]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Add a capability
    #[arg(short, long)]
    pub cap: Vec<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Every process of the container's cgroup, not only its init
    #[arg(short, long)]
    pub all: bool,
    pub id: String,
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kill it first if it still runs
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(short, long)]
    pub quiet: bool,
    /// table or json
    #[arg(short, long, default_value = "table")]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// table or json (pids)
    #[arg(short, long, default_value = "table")]
    pub format: String,
    pub id: String,
}

/// runc's `update`: limits from `--resources` (a runtime-spec `linux.resources` object, `-`
/// for stdin, as containerd's shim sends it), then the flags, which win.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// A JSON file of runtime-spec resources (`-`: stdin)
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// Memory limit (bytes, or with k/m/g; -1: none)
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit
    #[arg(long, allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit (-1: no swap limit)
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// CPU shares (relative weight)
    #[arg(long)]
    pub cpu_share: Option<u64>,
    /// CPU CFS period (microseconds)
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota (microseconds per period; -1: none)
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPUs to run on (0-3, 0,1)
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes (-1 or 0: none)
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Block I/O weight (10-1000)
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    pub id: String,
}

/// What `state.json` keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    id: String,
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
    annotations: std::collections::HashMap<String, String>,
    /// A container without a mount namespace of its own: its rootfs mount in the host's
    /// (where, and the mount's id), which delete removes.
    #[serde(default)]
    host_root_mount: Option<(PathBuf, u64)>,
}

/// What an OCI command line asks for, as far as `main` must know before running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `create` or `run`: a container's process is cloned from this one, so this one must be
    /// the sealed copy (CVE-2019-5736).
    Creates,
    /// `exec` (and `run`, which also creates): relays a process's output.
    Exec,
    /// Anything else, or a command line that does not parse (`main` then says why).
    Other,
}

/// The verb of an OCI command line, parsed as `main` will parse it: global flags take
/// values (`--root DIR`, `--log FILE`), so the first word that is not a flag is not the verb.
pub fn verb_of(args: &[std::ffi::OsString]) -> Verb {
    match OciCli::try_parse_from(args).map(|c| c.command) {
        Ok(OciCommand::Create(_) | OciCommand::Run(_)) => Verb::Creates,
        Ok(OciCommand::Exec(_)) => Verb::Exec,
        _ => Verb::Other,
    }
}

/// True when `argv0` names the runc drop-in.
pub fn is_runc_name(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "slate-runc" || n == "runc")
}

/// Entry point: parses runc's command line from `args` (the program name first).
pub fn main(args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    let cli = match OciCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let log = (cli.log.clone(), cli.log_format.clone());
    match dispatch(cli) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("slate-runc: {msg}");
            if let (Some(path), format) = log {
                write_log(&path, &format, &msg);
            }
            std::process::ExitCode::from(1)
        }
    }
}

/// containerd's shim reads the runtime's last error from `--log`: runc's format.
fn write_log(path: &Path, format: &str, msg: &str) {
    let line = if format == "json" {
        json!({"level": "error", "msg": msg, "time": crate::state::now_rfc3339()}).to_string()
    } else {
        format!("{} error: {msg}", crate::state::now_rfc3339())
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn dispatch(cli: OciCli) -> anyhow::Result<u8> {
    let root = cli.root.clone();
    match cli.command {
        OciCommand::Create(a) => create(&cli_root(&root)?, &a, cli.systemd_cgroup).map(|_| 0),
        OciCommand::Start(a) => start(&root, &a.id).map(|_| 0),
        OciCommand::State(a) => {
            let s = load(&root, &a.id)?;
            println!("{}", serde_json::to_string_pretty(&state_json(&root, &s))?);
            Ok(0)
        }
        OciCommand::Kill(a) => kill(&root, &a).map(|_| 0),
        OciCommand::Delete(a) => delete(&root, &a.id, a.force).map(|_| 0),
        OciCommand::Run(a) => run(&cli_root(&root)?, &a, cli.systemd_cgroup),
        OciCommand::List(a) => list(&root, &a).map(|_| 0),
        OciCommand::Ps(a) => ps(&root, &a).map(|_| 0),
        OciCommand::Exec(a) => exec(&root, &a),
        OciCommand::Pause(a) => freeze(&root, &a.id, true).map(|_| 0),
        OciCommand::Resume(a) => freeze(&root, &a.id, false).map(|_| 0),
        OciCommand::Update(a) => update(&root, &a).map(|_| 0),
        OciCommand::Features => {
            println!("{}", serde_json::to_string_pretty(&features())?);
            Ok(0)
        }
    }
}

/// The state root, created 0700 (it names pids and bundles of root's containers).
fn cli_root(root: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("cannot create {}", root.display()))?;
    Ok(root.to_path_buf())
}

/// runc's rule for ids: they name a directory.
fn validate_id(id: &str) -> anyhow::Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'));
    if !ok {
        bail!("invalid container id {id:?}: letters, digits, '_', '-', '.' and '+'");
    }
    Ok(())
}

fn dir_of(root: &Path, id: &str) -> anyhow::Result<PathBuf> {
    validate_id(id)?;
    Ok(root.join(id))
}

fn load(root: &Path, id: &str) -> anyhow::Result<Saved> {
    let p = dir_of(root, id)?.join(STATE_FILE);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("container {id} does not exist")
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
    };
    serde_json::from_slice(&bytes).with_context(|| format!("corrupt {}", p.display()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// Alive and still the process `state.json` names (not a zombie, not a recycled pid).
fn alive(s: &Saved) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", s.pid)) else {
        return false;
    };
    // The state letter follows the command's closing parenthesis.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r.trim_start())
        .unwrap_or("");
    if after.starts_with('Z') || after.starts_with('X') {
        return false;
    }
    s.pid_start.is_none() || crate::state::proc_start_time(s.pid) == s.pid_start
}

fn status_of(root: &Path, s: &Saved) -> Status {
    if !alive(s) {
        return Status::Stopped;
    }
    if root.join(&s.id).join(GATE).exists() {
        return Status::Created;
    }
    match cgroup_of(s) {
        Some(cg) if cg.is_frozen() => Status::Paused,
        _ => Status::Running,
    }
}

fn cgroup_of(s: &Saved) -> Option<Cgroup> {
    Cgroup::open_recorded(&s.id, s.cgroups_path.as_deref(), &s.cgroup_paths).ok()
}

fn state_json(root: &Path, s: &Saved) -> serde_json::Value {
    let status = status_of(root, s);
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

/// What poststart hooks get: the state of the start that just happened, running with its
/// pid, even when the app is gone already (`true` exits at once) and `state` would say
/// stopped by now. A hook that works on the process (its namespaces) needs the pid; runc
/// and crun pass the same.
fn poststart_state(root: &Path, s: &Saved) -> serde_json::Value {
    let mut state = state_json(root, s);
    state["status"] = json!(Status::Running.as_str());
    state["pid"] = json!(s.pid);
    state
}

/// systemd's `slice:prefix:name` as the cgroupfs path systemd would give it
/// (`/system.slice/prefix-name.scope`): slate writes the cgroup itself.
fn systemd_cgroups_path(p: &Path) -> PathBuf {
    let s = p.to_string_lossy();
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        [slice, prefix, name] => {
            let slice = if slice.is_empty() {
                "system.slice"
            } else {
                slice
            };
            PathBuf::from(format!("/{slice}/{prefix}-{name}.scope"))
        }
        _ => p.to_path_buf(),
    }
}

fn create(root: &Path, a: &CreateArgs, systemd_cgroup: bool) -> anyhow::Result<Saved> {
    create_keeping(root, a, systemd_cgroup, false).map(|(s, _)| s)
}

/// `create`; with `keep`, the container stays this process's child (for `run`, which waits
/// for its exit status) instead of being left to its reaper.
fn create_keeping(
    root: &Path,
    a: &CreateArgs,
    systemd_cgroup: bool,
    keep: bool,
) -> anyhow::Result<(Saved, Option<Container>)> {
    let dir = dir_of(root, &a.id)?;
    let bundle = match &a.bundle {
        Some(b) => std::path::absolute(b).with_context(|| format!("bad bundle {}", b.display()))?,
        None => std::env::current_dir().context("no current directory")?,
    };
    let config = bundle.join("config.json");
    let mut spec = crate::spec::stored::load(&config)
        .with_context(|| format!("cannot load the bundle's {}", config.display()))?;
    if let Some(h) = spec.hooks() {
        if h.create_container().as_ref().is_some_and(|v| !v.is_empty())
            || h.start_container().as_ref().is_some_and(|v| !v.is_empty())
        {
            bail!("createContainer and startContainer hooks are not supported by slate");
        }
    }
    if systemd_cgroup {
        if let Some(linux) = spec.linux_mut().as_mut() {
            if let Some(p) = linux.cgroups_path().clone() {
                linux.set_cgroups_path(Some(systemd_cgroups_path(&p)));
            }
        }
    }
    // "MUST generate an error when invalid or unsupported values are encountered": a
    // version this runtime does not implement is one.
    let version = spec.version();
    let major_ok = version
        .split('.')
        .map(|p| p.split(['-', '+']).next().unwrap_or(p).parse::<u32>())
        .collect::<Result<Vec<_>, _>>()
        .is_ok_and(|v| v.len() == 3 && v[0] == 1);
    if !major_ok {
        bail!(
            "unsupported ociVersion {version:?} in the bundle's config.json: slate implements 1.x"
        );
    }
    let rootfs = slate_runtime::bundle_rootfs(&bundle, &spec)?;
    std::fs::create_dir(&dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow!("container {} already exists", a.id)
        } else {
            anyhow!(e).context(format!("cannot create {}", dir.display()))
        }
    })?;
    let res = create_in(&dir, &bundle, &rootfs, spec, a, keep);
    if res.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    res
}

fn create_in(
    dir: &Path,
    bundle: &Path,
    rootfs: &Path,
    spec: Spec,
    a: &CreateArgs,
    keep: bool,
) -> anyhow::Result<(Saved, Option<Container>)> {
    let gate = dir.join(GATE);
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .with_context(|| format!("cannot create {}", gate.display()))?;
    // The waiting process opens it for writing as the spec's user, after the uid switch: a
    // gate only root may write kept every non-root container from starting. Writable by
    // all, as runc's: the state dir above it is root's alone (0700), and opening it for
    // writing only ever lets the process go on.
    std::fs::set_permissions(&gate, std::os::unix::fs::PermissionsExt::from_mode(0o622))
        .with_context(|| format!("cannot set the mode of {}", gate.display()))?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal && a.console_socket.is_none() {
        bail!("process.terminal needs --console-socket: the terminal's master goes there");
    }
    // The runtime spec: "any updates to config.json after this step MUST NOT affect the
    // container". start, exec and delete read this copy, not the bundle's.
    let copy = serde_json::to_vec(&spec).context("cannot serialise the spec")?;
    crate::state::write_atomic(&dir.join(CONFIG_COPY), &copy)?;
    let hooks = spec.hooks().clone();
    let annotations = spec.annotations().clone().unwrap_or_default();
    let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    let mut opts = ContainerOptions::new(a.id.clone(), spec, Rootfs::Dir(rootfs.to_path_buf()));
    opts.start_gate = Some(gate);
    opts.die_with_parent = keep;
    opts.preserve_fds = a.preserve_fds;
    opts.attach_stdin = false;
    opts.clone_into_cgroup = crate::commands::run::clone_into_cgroup();
    opts.seccomp_cache = dir.parent().map(seccomp_cache);
    let mut container = Container::spawn(opts)?;
    if let (true, Some(sock)) = (terminal, &a.console_socket) {
        let master = container
            .take_pty_master()
            .ok_or_else(|| anyhow!("the container's terminal did not come"))?;
        send_console(sock, &master)?;
    }
    let pid = container.pid().as_raw();
    let saved = Saved {
        id: a.id.clone(),
        pid,
        pid_start: crate::state::proc_start_time(pid),
        bundle: bundle.to_path_buf(),
        rootfs: rootfs.to_path_buf(),
        created: crate::state::now_rfc3339(),
        cgroups_path,
        cgroup_paths: container.cgroup_paths(),
        annotations,
        host_root_mount: container
            .host_root_mount()
            .map(|(p, id)| (p.to_path_buf(), id)),
    };
    let bytes = serde_json::to_vec_pretty(&saved).context("cannot serialise the state")?;
    crate::state::write_atomic(&dir.join(STATE_FILE), &bytes)?;
    if let Some(p) = &a.pid_file {
        // Atomically, as runc: the engine may read it the moment it appears.
        crate::state::write_atomic(p, pid.to_string().as_bytes())?;
    }
    let root = dir.parent().unwrap_or(dir);
    if let Some(h) = &hooks {
        for list in [h.prestart(), h.create_runtime()] {
            if let Err(e) = run_hooks(
                list.as_deref().unwrap_or_default(),
                &state_json(root, &saved),
            ) {
                let _ = container.kill(Signal::SIGKILL);
                let _ = cgroup_of(&saved).map(|c| c.remove());
                return Err(e);
            }
        }
    }
    if keep {
        return Ok((saved, Some(container)));
    }
    container.detach();
    Ok((saved, None))
}

/// Passes the terminal's master to the engine, as runc does (SCM_RIGHTS on a unix socket).
fn send_console(path: &Path, master: &OwnedFd) -> anyhow::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let sock = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("cannot connect to the console socket {}", path.display()))?;
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(b"/dev/ptmx")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .context("cannot send the terminal to the console socket")?;
    Ok(())
}

/// poststart and poststop: every hook runs; a failing one is a warning, and the rest and
/// the life cycle go on (the spec's rule for both).
fn run_hooks_warning(hooks: &[Hook], state: &serde_json::Value) {
    for h in hooks {
        if let Err(e) = run_hooks(std::slice::from_ref(h), state) {
            eprintln!("slate-runc: warning: {e:#}");
        }
    }
}

/// Runs hooks in order, each with the state on stdin and its timeout; the first failure
/// is the error.
fn run_hooks(hooks: &[Hook], state: &serde_json::Value) -> anyhow::Result<()> {
    let input = serde_json::to_vec(state).context("cannot serialise the state")?;
    for h in hooks {
        let path = h.path();
        let args = h.args().clone().unwrap_or_default();
        let mut cmd = std::process::Command::new(path);
        if let Some((first, rest)) = args.split_first() {
            std::os::unix::process::CommandExt::arg0(&mut cmd, first);
            cmd.args(rest);
        }
        cmd.env_clear();
        for e in h.env().iter().flatten() {
            if let Some((k, v)) = e.split_once('=') {
                cmd.env(k, v);
            }
        }
        cmd.stdin(state_pipe(&input)?);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run the hook {}", path.display()))?;
        let deadline = h
            .timeout()
            .filter(|t| *t > 0)
            .map(|t| Instant::now() + Duration::from_secs(t as u64));
        let status = loop {
            if let Some(s) = child.try_wait().context("cannot wait for a hook")? {
                break s;
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the hook {} timed out", path.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if !status.success() {
            bail!("the hook {} failed ({status})", path.display());
        }
    }
    Ok(())
}

/// A hook's stdin: a pipe that already holds the whole state, its write end closed.
///
/// Written before the hook starts, while this process still holds the read end, so a hook
/// that never reads its stdin (`/bin/true`) can neither block the runtime past the hook's
/// timeout nor end it by SIGPIPE, which the commands that only print leave at its default
/// (runc's Go runtime gets EPIPE for such pipes; Rust's SIGPIPE default would kill).
fn state_pipe(input: &[u8]) -> anyhow::Result<std::process::Stdio> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .context("cannot make a pipe for a hook's stdin")?;
    // 64 KiB by default; a state with large annotations asks for more (up to
    // /proc/sys/fs/pipe-max-size, 1 MiB by default).
    let cap = fcntl(w.as_raw_fd(), FcntlArg::F_GETPIPE_SZ).unwrap_or(0);
    if usize::try_from(cap).unwrap_or(0) < input.len() {
        let want = libc::c_int::try_from(input.len()).unwrap_or(libc::c_int::MAX);
        fcntl(w.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(want)).with_context(|| {
            format!(
                "the container's state ({} bytes) does not fit a hook's stdin pipe; \
                 raise /proc/sys/fs/pipe-max-size or trim the annotations",
                input.len()
            )
        })?;
    }
    let mut w = std::fs::File::from(w);
    w.write_all(input)
        .context("cannot write the state to a hook's stdin")?;
    drop(w);
    // The hook reads at its own pace: blocking, as any program expects its stdin.
    fcntl(r.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty()))
        .context("cannot set up a hook's stdin")?;
    Ok(std::process::Stdio::from(r))
}

/// The spec the container was created with (see [`CONFIG_COPY`]). A record of a slate-runc
/// that kept no copy (state in /run outlives an upgrade until the next boot) falls back on
/// the bundle's.
fn spec_of(root: &Path, s: &Saved) -> anyhow::Result<Spec> {
    let copy = root.join(&s.id).join(CONFIG_COPY);
    let path = if copy.exists() {
        copy
    } else {
        s.bundle.join("config.json")
    };
    crate::spec::stored::load(&path)
        .with_context(|| format!("cannot load the spec of {} ({})", s.id, path.display()))
}

fn start(root: &Path, id: &str) -> anyhow::Result<()> {
    let s = load(root, id)?;
    let status = status_of(root, &s);
    if status != Status::Created {
        bail!(
            "container {id} is {}, not created: cannot start it",
            status.as_str()
        );
    }
    let gate = root.join(id).join(GATE);
    let mut f =
        std::fs::File::open(&gate).with_context(|| format!("cannot open {}", gate.display()))?;
    let mut b = [0u8; 1];
    let n = f.read(&mut b).context("cannot read the start gate")?;
    let _ = std::fs::remove_file(&gate);
    if n == 0 {
        bail!("container {id} died before it could start");
    }
    let spec = spec_of(root, &s).ok();
    if let Some(h) = spec.as_ref().and_then(|sp| sp.hooks().clone()) {
        // poststart failures are warnings (the spec: the container is started already).
        run_hooks_warning(
            h.poststart().as_deref().unwrap_or_default(),
            &poststart_state(root, &s),
        );
    }
    Ok(())
}

/// Compiled seccomp profiles, under the runtime's `--root` (a tmpfs, /run/slate-runc, by
/// default): containerd and podman start many containers with the same profile. '~' is not
/// an id character ([`validate_id`]), so no container can take this directory's name.
fn seccomp_cache(root: &Path) -> PathBuf {
    root.join("~seccomp-cache")
}

fn exec(root: &Path, a: &ExecArgs) -> anyhow::Result<u8> {
    use oci_spec::runtime::Process;
    let s = load(root, &a.id)?;
    if status_of(root, &s) != Status::Running {
        bail!("container {} is not running", a.id);
    }
    let spec = spec_of(root, &s)?;
    let mut process: Process = match &a.process {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            crate::spec::stored::process_from_json(&bytes)
                .with_context(|| format!("{} is not a runtime-spec process", p.display()))?
        }
        None => {
            if a.command.is_empty() {
                bail!("exec needs a command, or --process FILE");
            }
            let mut p = spec.process().clone().unwrap_or_default();
            p.set_args(Some(a.command.clone()));
            p.set_terminal(Some(a.tty));
            p
        }
    };
    if a.tty {
        process.set_terminal(Some(true));
    }
    if let Some(c) = &a.cwd {
        process.set_cwd(c.clone());
    }
    if !a.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        for kv in &a.env {
            let name = kv.split('=').next().unwrap_or(kv);
            env.retain(|e| e.split('=').next() != Some(name));
            env.push(kv.clone());
        }
        process.set_env(Some(env));
    }
    if let Some(u) = &a.user {
        let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
        let mut user = process.user().clone();
        user.set_uid(
            uid.parse()
                .with_context(|| format!("invalid --user {u:?}"))?,
        );
        user.set_gid(
            gid.parse()
                .with_context(|| format!("invalid --user {u:?}"))?,
        );
        process.set_user(user);
    }
    if a.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if !a.cap.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        for c in &a.cap {
            let cap: oci_spec::runtime::Capability =
                c.parse().map_err(|_| anyhow!("unknown capability {c:?}"))?;
            let add = |s: Option<&oci_spec::runtime::Capabilities>| {
                let mut s = s.cloned().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            let (b, e, p) = (
                add(caps.bounding().as_ref()),
                add(caps.effective().as_ref()),
                add(caps.permitted().as_ref()),
            );
            caps.set_bounding(b);
            caps.set_effective(e);
            caps.set_permitted(p);
        }
        process.set_capabilities(Some(caps));
    }
    let terminal = process.terminal().unwrap_or(false);
    if terminal && a.detach && a.console_socket.is_none() {
        bail!("a detached process with a terminal needs --console-socket");
    }
    let opts = slate_runtime::exec::ExecOptions {
        pid: Pid::from_raw(s.pid),
        process,
        seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
        seccomp_cache: Some(seccomp_cache(root)),
        cgroup: cgroup_of(&s),
        stdio: [None, None, None],
    };
    if !alive(&s) {
        bail!("container {} is not running", a.id);
    }
    if a.detach || a.console_socket.is_some() {
        let (pid, master) = slate_runtime::exec::exec_detached(opts)?;
        if let (Some(sock), Some(m)) = (&a.console_socket, &master) {
            send_console(sock, m)?;
        }
        if let Some(p) = &a.pid_file {
            crate::state::write_atomic(p, pid.as_raw().to_string().as_bytes())?;
        }
        if a.detach {
            return Ok(0);
        }
        // With a console socket but in the foreground: wait for it as its subreaper.
        let status = loop {
            match nix::sys::wait::waitpid(pid, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => break c,
                Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context("cannot wait for the exec'd process"),
            }
        };
        return Ok(u8::try_from(status & 0xff).unwrap_or(1));
    }
    if let Some(p) = &a.pid_file {
        // runc writes it before waiting; slate's exec reports the pid only to its relay, so
        // the file names the exec caller (whose exit is the process's).
        crate::state::write_atomic(p, std::process::id().to_string().as_bytes())?;
    }
    let status = slate_runtime::exec::exec(opts)?;
    Ok(u8::try_from(status.code() & 0xff).unwrap_or(1))
}

fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    crate::commands::kill::parse_signal(s)
}

fn kill(root: &Path, a: &KillArgs) -> anyhow::Result<()> {
    let s = load(root, &a.id)?;
    let sig = parse_signal(&a.signal)?;
    if status_of(root, &s) == Status::Stopped {
        bail!("container {} is not running", a.id);
    }
    if a.all {
        if let Some(cg) = cgroup_of(&s) {
            for p in cg.pids().unwrap_or_default() {
                let _ = nix::sys::signal::kill(p, sig);
            }
            return Ok(());
        }
    }
    nix::sys::signal::kill(Pid::from_raw(s.pid), sig)
        .with_context(|| format!("cannot send {sig} to container {}", a.id))
}

fn delete(root: &Path, id: &str, force: bool) -> anyhow::Result<()> {
    let dir = dir_of(root, id)?;
    let s = match load(root, id) {
        Ok(s) => s,
        // runc: deleting what is not there fails, except with --force.
        Err(_) if force && !dir.join(STATE_FILE).exists() => {
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let status = status_of(root, &s);
    // The spec: deleting a container that is not stopped is an error (created included).
    if status != Status::Stopped && !force {
        bail!(
            "container {id} is {}: stop it first, or delete --force",
            status.as_str()
        );
    }
    if status != Status::Stopped {
        if let Some(cg) = cgroup_of(&s) {
            let _ = cg.set_frozen(false);
        }
        let _ = nix::sys::signal::kill(Pid::from_raw(s.pid), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(&s) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if let Some(cg) = cgroup_of(&s) {
        cg.remove()
            .with_context(|| format!("cannot remove the cgroup of {id}"))?;
    }
    if let Some((path, mount_id)) = &s.host_root_mount {
        slate_runtime::mounts::unmount_host_rootfs(path, *mount_id)
            .with_context(|| format!("cannot remove the rootfs mount of {id}"))?;
    }
    let hooks = spec_of(root, &s).ok().and_then(|sp| sp.hooks().clone());
    let state = state_json(root, &s);
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    if let Some(h) = hooks {
        run_hooks_warning(h.poststop().as_deref().unwrap_or_default(), &state);
    }
    Ok(())
}

/// `run`: create, start, and (without --detach) wait for the container like `slate run`
/// does, relaying signals, then delete it. Exits with the container's status.
fn run(root: &Path, a: &RunArgs, systemd_cgroup: bool) -> anyhow::Result<u8> {
    if a.detach {
        let saved = create(root, &a.create, systemd_cgroup)?;
        start(root, &saved.id)?;
        return Ok(0);
    }
    // In the foreground the container stays our child: its exit status is ours, and the
    // signals a shell or systemd sends us are forwarded to it, as `slate run` does.
    let mut forwarded = nix::sys::signal::SigSet::empty();
    for sig in slate_runtime::FORWARDED {
        forwarded.add(sig);
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&forwarded),
        None,
    )
    .context("cannot block signals")?;
    let (saved, container) = create_keeping(root, &a.create, systemd_cgroup, true)?;
    let container = container.ok_or_else(|| anyhow!("the container was not kept"))?;
    if let Err(e) = start(root, &saved.id) {
        drop(container);
        let _ = delete(root, &saved.id, true);
        return Err(e);
    }
    let status = slate_runtime::supervise(container);
    let _ = delete(root, &saved.id, true);
    let status = status?;
    Ok(u8::try_from(status.code() & 0xff).unwrap_or(1))
}

fn list(root: &Path, a: &ListArgs) -> anyhow::Result<()> {
    let mut all = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            if let Some(id) = e.file_name().to_str() {
                if let Ok(s) = load(root, id) {
                    all.push(s);
                }
            }
        }
    }
    all.sort_by(|x, y| x.created.cmp(&y.created));
    if a.quiet {
        for s in &all {
            println!("{}", s.id);
        }
        return Ok(());
    }
    if a.format == "json" {
        let v: Vec<_> = all.iter().map(|s| state_json(root, s)).collect();
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let st = status_of(root, s);
            vec![
                s.id.clone(),
                if st == Status::Stopped {
                    "0".into()
                } else {
                    s.pid.to_string()
                },
                st.as_str().to_string(),
                s.bundle.display().to_string(),
                s.created.clone(),
                "root".into(),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::output::table(
            &["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
            &rows
        )
    );
    Ok(())
}

fn ps(root: &Path, a: &PsArgs) -> anyhow::Result<()> {
    let s = load(root, &a.id)?;
    let pids: Vec<i32> = cgroup_of(&s)
        .map(|c| c.pids().unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    if a.format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    println!("PID   CMD");
    for p in pids {
        let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        println!("{p:<5} {cmd}");
    }
    Ok(())
}

fn freeze(root: &Path, id: &str, frozen: bool) -> anyhow::Result<()> {
    let s = load(root, id)?;
    let status = status_of(root, &s);
    if frozen && status != Status::Running {
        bail!("container {id} is {}, not running", status.as_str());
    }
    if !frozen && status != Status::Paused {
        bail!("container {id} is {}, not paused", status.as_str());
    }
    let cg = cgroup_of(&s).ok_or_else(|| anyhow!("container {id} has no cgroup"))?;
    cg.set_frozen(frozen)?;
    Ok(())
}

fn update(root: &Path, a: &UpdateArgs) -> anyhow::Result<()> {
    let s = load(root, &a.id)?;
    let status = status_of(root, &s);
    if !matches!(status, Status::Created | Status::Running | Status::Paused) {
        bail!(
            "container {} is {}: only a live one can be updated",
            a.id,
            status.as_str()
        );
    }
    let resources = update_resources(a, &mut std::io::stdin().lock())?;
    let cg = cgroup_of(&s).ok_or_else(|| anyhow!("container {} has no cgroup", a.id))?;
    cg.update(&resources)
        .with_context(|| format!("cannot update container {}", a.id))?;
    Ok(())
}

/// The resources of an `update`: the `--resources` document, then each flag over it.
fn update_resources(
    a: &UpdateArgs,
    stdin: &mut dyn std::io::Read,
) -> anyhow::Result<oci_spec::runtime::LinuxResources> {
    use oci_spec::runtime::{LinuxPids, LinuxResources};
    let mut r: LinuxResources = match &a.resources {
        None => LinuxResources::default(),
        Some(p) => {
            let mut text = String::new();
            if p.as_os_str() == "-" {
                stdin
                    .read_to_string(&mut text)
                    .context("cannot read the resources from stdin")?;
            } else {
                text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
            }
            serde_json::from_str(&text).with_context(|| {
                format!(
                    "invalid resources in {}: expected a runtime-spec linux.resources object",
                    p.display()
                )
            })?
        }
    };
    // runc's sizes: bytes or a number with a unit; -1 for no limit.
    let size = |flag: &str, v: &str| -> anyhow::Result<i64> {
        if v.trim() == "-1" {
            return Ok(-1);
        }
        let n = crate::config::parse_size(v).with_context(|| format!("invalid --{flag} {v:?}"))?;
        i64::try_from(n).with_context(|| format!("--{flag} {v:?} is too large"))
    };
    if a.memory.is_some() || a.memory_reservation.is_some() || a.memory_swap.is_some() {
        let mut m = r.memory().unwrap_or_default();
        if let Some(v) = &a.memory {
            m.set_limit(Some(size("memory", v)?));
        }
        if let Some(v) = &a.memory_reservation {
            m.set_reservation(Some(size("memory-reservation", v)?));
        }
        if let Some(v) = &a.memory_swap {
            m.set_swap(Some(size("memory-swap", v)?));
        }
        r.set_memory(Some(m));
    }
    let cpu_flags = a.cpu_share.is_some()
        || a.cpu_period.is_some()
        || a.cpu_quota.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some();
    if cpu_flags {
        let mut c = r.cpu().clone().unwrap_or_default();
        if a.cpu_share.is_some() {
            c.set_shares(a.cpu_share);
        }
        if a.cpu_period.is_some() {
            c.set_period(a.cpu_period);
        }
        if a.cpu_quota.is_some() {
            c.set_quota(a.cpu_quota);
        }
        if a.cpuset_cpus.is_some() {
            c.set_cpus(a.cpuset_cpus.clone());
        }
        if a.cpuset_mems.is_some() {
            c.set_mems(a.cpuset_mems.clone());
        }
        r.set_cpu(Some(c));
    }
    if let Some(n) = a.pids_limit {
        // runc: 0 and -1 both mean no limit.
        let mut p = LinuxPids::default();
        p.set_limit(if n <= 0 { -1 } else { n });
        r.set_pids(Some(p));
    }
    if let Some(w) = a.blkio_weight {
        let mut b = r.block_io().clone().unwrap_or_default();
        b.set_weight(Some(w));
        r.set_block_io(Some(b));
    }
    Ok(r)
}

/// runtime-spec 1.2's features document.
fn features() -> serde_json::Value {
    // The kernel's, as `caps` knows them (CAP_LAST_CAP decides which exist here).
    let mut caps: Vec<String> = caps::runtime::thread_all_supported()
        .iter()
        .map(|c| c.to_string())
        .collect();
    caps.sort();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": [
            "ro", "rw", "bind", "rbind", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
            "private", "rprivate", "shared", "rshared", "slave", "rslave", "relatime",
            "norelatime", "strictatime", "nostrictatime", "noatime", "atime", "sync", "async",
            "dirsync", "remount", "mand", "nomand", "tmpcopyup"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false },
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_TRACE", "SCMP_ACT_LOG"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GT", "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ"],
                "archs": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false }
        },
        "annotations": { "io.slate.runtime": "slate" }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        for ok in ["abc", "a-b_c.d+e", "0123456789abcdef"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
        assert!(is_runc_name(std::ffi::OsStr::new(
            "/usr/local/bin/slate-runc"
        )));
        assert!(is_runc_name(std::ffi::OsStr::new("runc")));
        assert!(!is_runc_name(std::ffi::OsStr::new("slate")));
        assert_eq!(
            systemd_cgroups_path(Path::new("system.slice:cri-containerd:abc")),
            PathBuf::from("/system.slice/cri-containerd-abc.scope")
        );
    }

    /// runtime-tools' hooks_stdin: an app that exits at once had its poststart hook told
    /// `"status": "stopped", "pid": 0`, now and then (whenever it won the race).
    #[test]
    fn poststart_hooks_get_the_started_process_even_when_it_is_gone() {
        let root = tempfile::tempdir().unwrap();
        let s = Saved {
            id: "gone".to_string(),
            // No such process (above pid_max), as after the app exited and was reaped.
            pid: i32::MAX,
            pid_start: None,
            bundle: PathBuf::from("/b"),
            rootfs: PathBuf::from("/b/rootfs"),
            created: String::new(),
            cgroups_path: None,
            cgroup_paths: Vec::new(),
            annotations: Default::default(),
            host_root_mount: None,
        };
        assert_eq!(state_json(root.path(), &s)["status"], "stopped");
        let st = poststart_state(root.path(), &s);
        assert_eq!(
            (&st["status"], &st["pid"]),
            (&json!("running"), &json!(i32::MAX))
        );
        assert_eq!(st["id"], "gone");
    }
}
