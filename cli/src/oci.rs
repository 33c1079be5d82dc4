//! The OCI runtime command line, runc's: `create`, `start`, `state`, `kill`, `delete`,
//! `run`, `exec`, `list`, `ps`, `pause`, `resume`, `update` and `features`, for engines that
//! drive a runtime (containerd's runc shim, podman's conmon, runtime-tools). Reached as
//! `slate oci ...`, or as runc itself when slate is called through a `slate-runc` (or
//! `runc`) name.
//!
//! The life cycle, its state directory and its hooks are the runtime's
//! ([`slate_runtime::lifecycle`]); the container is slate-runtime's, made by the same
//! [`slate_runtime::Container::create`] and start as `slate run`'s. This module parses
//! runc's flags, builds what they ask for and prints the answers.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser, Subcommand};

use serde_json::json;
use slate_runtime::bundle::Bundle;
use slate_runtime::hooks::HookError;
use slate_runtime::lifecycle::{CreateOptions, Entry, StateRoot, Status};

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
    let root = StateRoot::new(&cli.root);
    match cli.command {
        OciCommand::Create(a) => {
            let (_, created) = create(&root, &a, cli.systemd_cgroup, false)?;
            // Left waiting at its gate for `start`, to whoever reaps it.
            created.detach();
            Ok(0)
        }
        OciCommand::Start(a) => {
            warn_hooks(root.load(&a.id)?.start()?);
            Ok(0)
        }
        OciCommand::State(a) => {
            let e = root.load(&a.id)?;
            println!("{}", serde_json::to_string_pretty(&e.state())?);
            Ok(0)
        }
        OciCommand::Kill(a) => {
            let sig = crate::commands::kill::parse_signal(&a.signal)?;
            root.load(&a.id)?
                .kill(sig, a.all)
                .with_context(|| format!("cannot send {sig} to container {}", a.id))?;
            Ok(0)
        }
        OciCommand::Delete(a) => delete(&root, &a.id, a.force).map(|_| 0),
        OciCommand::Run(a) => run(&root, &a, cli.systemd_cgroup),
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

/// poststart and poststop failures: the spec's "MUST log a warning", and the life cycle
/// goes on.
fn warn_hooks(failures: Vec<HookError>) {
    for e in failures {
        eprintln!("slate-runc: warning: {:#}", anyhow::Error::from(e));
    }
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

/// `create`: the bundle as the command line names it, set up by the runtime's life cycle.
/// `keep`: the container stays bound to this process (`run` in the foreground).
fn create(
    root: &StateRoot,
    a: &CreateArgs,
    systemd_cgroup: bool,
    keep: bool,
) -> anyhow::Result<(Entry, slate_runtime::Created)> {
    let dir = match &a.bundle {
        Some(b) => std::path::absolute(b).with_context(|| format!("bad bundle {}", b.display()))?,
        None => std::env::current_dir().context("no current directory")?,
    };
    let mut bundle =
        Bundle::open(&dir).with_context(|| format!("cannot load the bundle {}", dir.display()))?;
    if systemd_cgroup {
        if let Some(linux) = bundle.spec.linux_mut().as_mut() {
            if let Some(p) = linux.cgroups_path().clone() {
                linux.set_cgroups_path(Some(systemd_cgroups_path(&p)));
            }
        }
    }
    let opts = CreateOptions {
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
        clone_into_cgroup: crate::commands::run::clone_into_cgroup(),
        die_with_parent: keep,
    };
    let (entry, created) = root.create(&a.id, bundle, opts)?;
    if let Some(p) = &a.pid_file {
        // Atomically, as runc: the engine may read it the moment it appears.
        crate::state::write_atomic(p, created.pid().as_raw().to_string().as_bytes())?;
    }
    Ok((entry, created))
}

fn exec(root: &StateRoot, a: &ExecArgs) -> anyhow::Result<u8> {
    use oci_spec::runtime::Process;
    let s = root.load(&a.id)?;
    if s.status() != Status::Running {
        bail!("container {} is not running", a.id);
    }
    let spec = s.spec()?;
    let mut process: Process = match &a.process {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            slate_runtime::bundle::process_from_json(&bytes)
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
        pid: s.pid(),
        process,
        seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
        seccomp_cache: Some(root.seccomp_cache()),
        cgroup: s.cgroup(),
        stdio: [None, None, None],
    };
    if !s.alive() {
        bail!("container {} is not running", a.id);
    }
    if a.detach || a.console_socket.is_some() {
        let (pid, master) = slate_runtime::exec::exec_detached(opts)?;
        if let (Some(sock), Some(m)) = (&a.console_socket, &master) {
            slate_runtime::lifecycle::send_console(sock, m)?;
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

fn delete(root: &StateRoot, id: &str, force: bool) -> anyhow::Result<()> {
    let e = match root.load(id) {
        Ok(e) => e,
        // runc: deleting what is not there fails, except with --force.
        Err(slate_runtime::lifecycle::LifecycleError::NotFound(_)) if force => {
            slate_runtime::lifecycle::remove_leftover(root, id)?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    warn_hooks(e.delete(force)?);
    Ok(())
}

/// `run`: create, start, and (without --detach) wait for the container like `slate run`
/// does, relaying signals, then delete it. Exits with the container's status.
fn run(root: &StateRoot, a: &RunArgs, systemd_cgroup: bool) -> anyhow::Result<u8> {
    if a.detach {
        let (entry, created) = create(root, &a.create, systemd_cgroup, false)?;
        created.detach();
        warn_hooks(entry.start()?);
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
    let (entry, created) = create(root, &a.create, systemd_cgroup, true)?;
    let id = entry.id().to_string();
    let container = match entry.start_created(created) {
        Ok((c, failures)) => {
            warn_hooks(failures);
            c
        }
        Err(e) => {
            let _ = delete(root, &id, true);
            return Err(e.into());
        }
    };
    let status = slate_runtime::supervise(container);
    let _ = delete(root, &id, true);
    let status = status?;
    Ok(u8::try_from(status.code() & 0xff).unwrap_or(1))
}

fn list(root: &StateRoot, a: &ListArgs) -> anyhow::Result<()> {
    let all = root.list();
    if a.quiet {
        for e in &all {
            println!("{}", e.id());
        }
        return Ok(());
    }
    if a.format == "json" {
        let v: Vec<_> = all.iter().map(Entry::state).collect();
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|e| {
            let st = e.status();
            vec![
                e.id().to_string(),
                if matches!(st, Status::Stopped | Status::Creating) {
                    "0".into()
                } else {
                    e.pid().to_string()
                },
                st.as_str().to_string(),
                e.bundle().display().to_string(),
                e.created().to_string(),
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

fn ps(root: &StateRoot, a: &PsArgs) -> anyhow::Result<()> {
    let s = root.load(&a.id)?;
    let pids: Vec<i32> = s
        .cgroup()
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

fn freeze(root: &StateRoot, id: &str, frozen: bool) -> anyhow::Result<()> {
    let s = root.load(id)?;
    let status = s.status();
    if frozen && status != Status::Running {
        bail!("container {id} is {}, not running", status.as_str());
    }
    if !frozen && status != Status::Paused {
        bail!("container {id} is {}, not paused", status.as_str());
    }
    let cg = s
        .cgroup()
        .ok_or_else(|| anyhow!("container {id} has no cgroup"))?;
    cg.set_frozen(frozen)?;
    Ok(())
}

fn update(root: &StateRoot, a: &UpdateArgs) -> anyhow::Result<()> {
    let s = root.load(&a.id)?;
    let status = s.status();
    if !matches!(status, Status::Created | Status::Running | Status::Paused) {
        bail!(
            "container {} is {}: only a live one can be updated",
            a.id,
            status.as_str()
        );
    }
    let resources = update_resources(a, &mut std::io::stdin().lock())?;
    let cg = s
        .cgroup()
        .ok_or_else(|| anyhow!("container {} has no cgroup", a.id))?;
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
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
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
    fn runc_names_and_systemd_paths() {
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
}
