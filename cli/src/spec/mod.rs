//! Image config + `slate run` flags -> OCI runtime [`Spec`]: the one place where the image's
//! world and docker's command line are converted into what `slate-runtime` speaks (as runc's
//! `specconv` and umoci's `convert` do for theirs).
//!
//! What [`build`] guarantees:
//! - docker's meaning for every flag and image field it reads (Entrypoint/Cmd rules, env
//!   precedence, user and group resolution through the image's own `/etc/passwd` and
//!   `/etc/group`, default mounts, capabilities, device rules, masked paths), with slate's few
//!   deliberate differences commented where they are made (`no_new_privileges` on by default);
//! - every bad flag or image field is an error naming the flag (or field), the value, and what
//!   was expected; nothing here panics on input, however hostile the image's files are;
//! - the only side effects are in the host's file system, and docker has them too: the
//!   generated `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname` written into
//!   [`SpecInput::run_dir`], and missing `-v` host directories created;
//! - the rootfs is not among the mounts: `root.path` is `rootfs` and the caller hands the
//!   runtime the overlay itself.

mod devices;
mod env;
mod mounts;
mod resources;
mod security;
pub(crate) mod user;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::{
    LinuxNamespace, LinuxNamespaceType, PosixRlimitType, Process, Root, Spec, User,
};
use serde_json::Value;

use crate::cli::RunArgs;

pub(crate) use mounts::{clean_abs, is_cwd_relative};
pub use security::SeccompChoice;

/// Everything [`build`] needs besides the host itself.
pub struct SpecInput<'a> {
    pub args: &'a RunArgs,
    /// The image config JSON as pulled (`{"config": {"Entrypoint", "Cmd", "Env", ...}, ...}`).
    pub image_config: &'a Value,
    /// Reads a file of the image (`/etc/passwd`, `/etc/group`); `None` if absent.
    pub read_image_file: &'a dyn Fn(&str) -> Option<Vec<u8>>,
    /// Container id (hex). Without `--hostname` the container is named after its first 12
    /// characters, except with the host's network, where docker (and slate) use the host's name.
    pub id: &'a str,
    /// Per-run directory on the host for the generated `resolv.conf`, `hosts` and `hostname`.
    pub run_dir: &'a Path,
    /// slate's own environment, for `-e NAME` and `--env-file` lines without a value.
    pub host_env: &'a dyn Fn(&str) -> Option<String>,
    /// `[security] no_new_privileges`: the default when no `--security-opt` says otherwise
    /// (off, as in docker and podman, so setuid and file-capability programs work).
    pub no_new_privileges: bool,
    /// Where named volumes live (`<root>/volumes`); None where they cannot be used.
    pub volumes_dir: Option<&'a Path>,
}

/// The spec and the few decisions the runtime's `Spec` has no field for.
#[derive(Debug)]
pub struct SpecOutput {
    pub spec: Spec,
    /// Named volumes this run created (data dir, container path): to fill from the image.
    pub new_volumes: Vec<(PathBuf, PathBuf)>,
    /// The image's StopSignal, or SIGTERM: what `slate stop` sends first.
    #[allow(dead_code)] // until `slate stop` (detached containers) reads it
    pub stop_signal: Signal,
    pub seccomp: SeccompChoice,
}

/// Why a spec cannot be built: each names the flag or image field, the value and what was
/// expected.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "no command specified: the image has no Entrypoint or Cmd, give one after the image name"
    )]
    NoCommand,
    #[error("invalid image config: {field} must be {expected}")]
    ImageConfig {
        field: &'static str,
        expected: &'static str,
    },
    #[error("cannot read --env-file {}: {source}", path.display())]
    EnvFileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid --env-file {} line {line}: {reason}", path.display())]
    EnvFileLine {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("invalid --env {value:?}: {reason}")]
    Env { value: String, reason: &'static str },
    #[error("invalid working directory {value:?} ({origin}): it must be an absolute path")]
    Workdir { value: String, origin: &'static str },
    #[error("invalid --user {value:?}: {reason}")]
    User { value: String, reason: &'static str },
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UserNotFound(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    GroupNotFound(String),
    #[error("invalid --hostname {value:?}: {reason}")]
    Hostname { value: String, reason: &'static str },
    #[error(
        "invalid --network {0:?}: expected host (the default), none, bridge or a network name"
    )]
    Network(String),
    #[error("invalid --add-host {0:?}: expected HOST:IP")]
    AddHost(String),
    #[error("invalid --sysctl {0:?}: expected KEY=VALUE")]
    Sysctl(String),
    #[error("invalid --oom-score-adj {0}: expected -1000 to 1000")]
    OomScoreAdj(i32),
    #[error("invalid --{flag} {value:?}: expected host or private{extra}")]
    NamespaceMode {
        flag: &'static str,
        value: String,
        extra: &'static str,
    },
    #[error("--hostname and --uts host contradict each other: with the host's UTS namespace the container has the host's name")]
    HostnameWithUtsHost,
    #[error("invalid --mount {value:?}: {reason}")]
    MountFlag { value: String, reason: String },
    #[error("invalid --dns {0:?}: expected an IP address")]
    Dns(String),
    #[error("invalid --volume {value:?}: {reason}")]
    Volume { value: String, reason: &'static str },
    #[error("invalid --volume {0:?}: the host part must be an absolute path, ./relative, or a volume name (letters, digits, '_', '.', '-')")]
    NamedVolume(String),
    #[error(
        "invalid --volume {0:?}: anonymous volumes are not supported yet, give HOST:CONTAINER"
    )]
    AnonymousVolume(String),
    #[error("--volume {value:?}: cannot use host path {}: {source}", path.display())]
    VolumeHost {
        value: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid --device {value:?}: {reason}")]
    Device { value: String, reason: &'static str },
    #[error("--device {value:?}: cannot use host path {}: {source}", path.display())]
    DeviceHost {
        value: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid --tmpfs {value:?}: {reason}")]
    Tmpfs { value: String, reason: &'static str },
    #[error("duplicate mount point {}: given by more than one --volume or --tmpfs", .0.display())]
    DuplicateMount(PathBuf),
    #[error("invalid {flag} {value:?}: expected a size like 128m or 1g")]
    Size { flag: &'static str, value: String },
    #[error("invalid --memory {0:?}: the minimum is 6m")]
    MemoryTooSmall(String),
    #[error("--memory-swap needs --memory: it is the total of memory and swap")]
    SwapWithoutMemory,
    #[error("invalid --memory-swap {swap:?}: it is the total of memory and swap, so it must be at least --memory {memory:?} (or -1 for unlimited swap)")]
    SwapBelowMemory { swap: String, memory: String },
    #[error("invalid --memory-reservation {0:?}: the minimum is 6m")]
    ReservationTooSmall(String),
    #[error("invalid --memory-reservation {reservation:?}: a soft limit cannot be above --memory {memory:?}")]
    ReservationAboveMemory { reservation: String, memory: String },
    #[error("invalid {flag} {value:?}: {reason}")]
    Cpuset {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid --blkio-weight {0}: expected 10 to 1000 (or 0 for the default)")]
    BlkioWeight(u32),
    #[error("invalid {flag} {value:?}: {reason}")]
    Blkio {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("{flag} {value:?}: cannot use {}", path.display())]
    BlkioDeviceHost {
        flag: &'static str,
        value: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "invalid --cpus {value}: expected a number from 0.01 to {max} (this host has {max} cpus)"
    )]
    Cpus { value: f64, max: usize },
    #[error("invalid --pids-limit {0}: expected a positive number, or 0 or -1 for unlimited")]
    PidsLimit(i64),
    #[error("invalid {flag} {value:?}: unknown capability")]
    Capability { flag: &'static str, value: String },
    #[error("{flag} {value:?}: this kernel does not know that capability")]
    CapabilityUnsupported { flag: &'static str, value: String },
    #[error("{flag} {value:?}: slate itself does not hold that capability (it is not in its bounding set), so it cannot give it")]
    CapabilityNotHeld { flag: &'static str, value: String },
    #[error("invalid --security-opt {0:?}: expected seccomp=unconfined, seccomp=PATH, no-new-privileges[=true|false], systempaths=unconfined, apparmor=unconfined or label=disable (slate has no AppArmor or SELinux support)")]
    SecurityOpt(String),
    #[error("cannot resolve the default seccomp profile: {0}")]
    DefaultSeccomp(#[source] slate_runtime::seccomp::SeccompError),
    #[error("--security-opt seccomp={}: cannot read the profile: {source}", path.display())]
    SeccompRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--security-opt seccomp={}: invalid seccomp profile: {source}", path.display())]
    SeccompProfile {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid --ulimit {value:?}: {reason}")]
    Ulimit { value: String, reason: &'static str },
    #[error("invalid --ulimit {value:?}: hard limit {requested} is above slate's own hard limit {current}, and raising it needs CAP_SYS_RESOURCE")]
    UlimitAboveHard {
        value: String,
        requested: String,
        current: String,
    },
    #[error("invalid --label {0:?}: expected KEY=VALUE")]
    Label(String),
    #[error("invalid StopSignal {0:?} in the image config: expected a signal name like SIGTERM or a number")]
    StopSignal(String),
    #[error("invalid --stop-signal {0:?}: expected a signal name like SIGTERM or a number")]
    StopSignalFlag(String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the spec builder asks of the host. A trait so the tests can stand in for the host
/// (its resolv.conf, cpu count, rlimits) and check every rule without root or luck.
pub(crate) trait Host {
    /// A host file as text; `None` if absent or unreadable.
    fn read_file(&self, path: &str) -> Option<String>;
    fn hostname(&self) -> Option<String>;
    /// CPUs this process may use (the ceiling of `--cpus`).
    fn cpus(&self) -> usize;
    /// Whether the kernel accounts swap per cgroup (`memory.swap.max` / `memsw`).
    fn swap_accounting(&self) -> bool;
    /// The highest capability number this kernel knows.
    fn cap_last_cap(&self) -> u32;
    /// slate's own bounding set as a bit mask: a container can be given no capability
    /// outside it.
    fn cap_bounding(&self) -> u64;
    /// slate's own hard limit for `typ` (`u64::MAX` for unlimited); `None` if unknown.
    fn rlimit_hard(&self, typ: PosixRlimitType) -> Option<u64>;
    /// Whether slate may raise hard limits (holds CAP_SYS_RESOURCE).
    fn can_raise_rlimits(&self) -> bool;
    /// The current directory, for `-v ./dir:/ctr`.
    fn cwd(&self) -> Option<PathBuf>;
    /// The device node at a host path, for `--device`; `Ok(None)` if it is no device.
    fn device(&self, path: &Path) -> std::io::Result<Option<devices::HostDevice>>;
}

/// The machine slate runs on.
struct RealHost;

impl Host for RealHost {
    fn read_file(&self, path: &str) -> Option<String> {
        std::fs::read(path)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn hostname(&self) -> Option<String> {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
    }

    fn cpus(&self) -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }

    fn swap_accounting(&self) -> bool {
        resources::probe_swap_accounting()
    }

    fn cap_last_cap(&self) -> u32 {
        self.read_file("/proc/sys/kernel/cap_last_cap")
            .and_then(|s| s.trim().parse().ok())
            // Linux 5.9's CAP_CHECKPOINT_RESTORE, the last one oci-spec knows.
            .unwrap_or(40)
    }

    fn cap_bounding(&self) -> u64 {
        self.status_caps("CapBnd:").unwrap_or(u64::MAX)
    }

    fn rlimit_hard(&self, typ: PosixRlimitType) -> Option<u64> {
        let res = resources::nix_resource(typ)?;
        let (_, hard) = nix::sys::resource::getrlimit(res).ok()?;
        if hard == libc::RLIM_INFINITY {
            return Some(u64::MAX);
        }
        // rlim_t is 32 bits on armv7 glibc, 64 elsewhere.
        #[allow(clippy::unnecessary_cast)]
        Some(hard as u64)
    }

    fn can_raise_rlimits(&self) -> bool {
        // Bit 24 = CAP_SYS_RESOURCE.
        self.status_caps("CapEff:")
            .is_some_and(|eff| eff & (1 << 24) != 0)
    }

    fn cwd(&self) -> Option<PathBuf> {
        std::env::current_dir().ok()
    }

    fn device(&self, path: &Path) -> std::io::Result<Option<devices::HostDevice>> {
        devices::stat_host_device(path)
    }
}

impl RealHost {
    /// A capability mask line of /proc/self/status (`CapEff:`, `CapBnd:`).
    fn status_caps(&self, key: &str) -> Option<u64> {
        self.read_file("/proc/self/status").and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
    }
}

/// Builds the spec for `slate run` on this host.
pub fn build(input: &SpecInput) -> Result<SpecOutput, SpecError> {
    build_on(input, &RealHost)
}

/// `--network`, as far as the spec is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Network {
    /// The host's network namespace (the default: on a Pi nothing else is needed).
    Host,
    /// A new network namespace with only `lo`.
    None,
    /// A CNI network (bridge, a user network): a namespace slate pins and configures
    /// before the container starts; `run` sets its path in the spec.
    Cni,
}

impl Network {
    fn parse(s: &str) -> Result<Network, SpecError> {
        match s {
            "host" | "" => Ok(Network::Host),
            "none" => Ok(Network::None),
            other if crate::network::defs::validate_name(other).is_ok() => Ok(Network::Cni),
            other => Err(SpecError::Network(other.to_owned())),
        }
    }
}

pub(crate) fn build_on(input: &SpecInput, host: &dyn Host) -> Result<SpecOutput, SpecError> {
    let args = input.args;
    let config = image_section(input.image_config);
    let network = Network::parse(args.network_mode())?;
    let pid_host = namespace_mode("pid", args.pid.as_deref())?;
    let ipc_host = namespace_mode("ipc", args.ipc.as_deref())?;
    let uts_host = namespace_mode("uts", args.uts.as_deref())?;
    if uts_host && args.hostname.is_some() {
        return Err(SpecError::HostnameWithUtsHost);
    }
    let hostname = if uts_host {
        host.hostname()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    } else {
        hostname(args, network, input.id, host)?
    };

    let process_args = process_args(args, config)?;
    let user_arg = match &args.user {
        Some(u) => Some(u.clone()),
        None => config_str(config, "User")?.filter(|u| !u.is_empty()),
    };
    let mut user = user::resolve(user_arg.as_deref(), input.read_image_file)?;
    for g in user::group_add(&args.group_add, input.read_image_file)? {
        if !user.additional_gids.contains(&g) {
            user.additional_gids.push(g);
        }
    }
    let env = env::build(&env::EnvInput {
        image_env: config_str_array(config, "Env")?.unwrap_or_default(),
        env_files: &args.env_file,
        env: &args.env,
        hostname: &hostname,
        tty: args.tty,
        home: &user.home,
        host_env: input.host_env,
    })?;
    let cwd = workdir(args, config)?;

    let sec = security::build(args, host, input.no_new_privileges)?;
    let mut resources = resources::build(args, host)?;
    let (device_nodes, device_rules) = devices::build(&args.device, host)?;
    if let Some(rules) = resources.devices_mut() {
        rules.extend(device_rules);
    }
    let rlimits = resources::rlimits(&args.ulimit, host)?;
    let annotations = annotations(config, &args.label)?;
    let stop_signal = match &args.stop_signal {
        Some(s) => parse_signal(s).ok_or_else(|| SpecError::StopSignalFlag(s.clone()))?,
        None => stop_signal(config)?,
    };
    // Last, because it is the one step that touches the host (the generated /etc files,
    // missing -v directories): nothing is written for a command line that is refused.
    let sysctl = sysctls(&args.sysctl)?;
    if let Some(adj) = args.oom_score_adj {
        if !(-1000..=1000).contains(&adj) {
            return Err(SpecError::OomScoreAdj(adj));
        }
    }
    let (mounts, new_volumes) = mounts::build(&mounts::MountInput {
        args,
        network,
        hostname: &hostname,
        run_dir: input.run_dir,
        host,
        ipc_host,
        volumes_dir: input.volumes_dir,
    })?;

    let mut process = Process::default();
    process.set_terminal(Some(args.tty));
    process.set_console_size(None);
    let mut u = User::default();
    u.set_uid(user.uid);
    u.set_gid(user.gid);
    u.set_additional_gids(if user.additional_gids.is_empty() {
        None
    } else {
        Some(user.additional_gids.clone())
    });
    process.set_user(u);
    process.set_args(Some(process_args));
    process.set_env(Some(env));
    process.set_cwd(cwd);
    process.set_capabilities(Some(sec.capabilities));
    process.set_rlimits(if rlimits.is_empty() {
        None
    } else {
        Some(rlimits)
    });
    process.set_no_new_privileges(Some(sec.no_new_privileges));
    process.set_oom_score_adj(args.oom_score_adj);

    let mut namespaces = vec![LinuxNamespaceType::Mount];
    // An absent namespace is the host's: `--pid/--ipc/--uts host`.
    if !pid_host {
        namespaces.push(LinuxNamespaceType::Pid);
    }
    if !ipc_host {
        namespaces.push(LinuxNamespaceType::Ipc);
    }
    if !uts_host {
        namespaces.push(LinuxNamespaceType::Uts);
    }
    // /proc/self/cgroup names the container's own cgroups as the root, as docker's do; the
    // runtime creates it once the child sits in its cgroup.
    namespaces.push(LinuxNamespaceType::Cgroup);
    if network != Network::Host {
        namespaces.push(LinuxNamespaceType::Network);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|t| {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(t);
            ns
        })
        .collect();

    let mut linux = oci_spec::runtime::Linux::default();
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(Some(resources));
    linux.set_devices(if device_nodes.is_empty() {
        None
    } else {
        Some(device_nodes)
    });
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux.set_sysctl(if sysctl.is_empty() {
        None
    } else {
        Some(sysctl)
    });
    linux.set_rootfs_propagation(None);
    linux.set_cgroups_path(None);
    linux.set_seccomp(sec.seccomp_profile);
    linux.set_masked_paths(Some(sec.masked_paths));
    linux.set_readonly_paths(Some(sec.readonly_paths));

    let mut root = Root::default();
    root.set_path(PathBuf::from("rootfs"));
    root.set_readonly(Some(args.read_only));

    let mut spec = Spec::default();
    spec.set_version("1.0.2".to_owned());
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts));
    spec.set_process(Some(process));
    // The host's UTS namespace keeps the host's name: setting it would rename the host.
    spec.set_hostname(if uts_host { None } else { Some(hostname) });
    spec.set_domainname(None);
    spec.set_annotations(Some(annotations));
    spec.set_linux(Some(linux));

    Ok(SpecOutput {
        spec,
        new_volumes,
        stop_signal,
        seccomp: sec.choice,
    })
}

/// The `config` object of an image config (docker and OCI both nest it there).
fn image_section(image_config: &Value) -> &Value {
    match image_config.get("config") {
        Some(c) if c.is_object() => c,
        _ => &Value::Null,
    }
}

fn config_str(config: &Value, field: &'static str) -> Result<Option<String>, SpecError> {
    match config.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SpecError::ImageConfig {
            field,
            expected: "a string",
        }),
    }
}

fn config_str_array(config: &Value, field: &'static str) -> Result<Option<Vec<String>>, SpecError> {
    let bad = || SpecError::ImageConfig {
        field,
        expected: "an array of strings",
    };
    match config.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// docker's rules: a COMMAND replaces Cmd; `--entrypoint X` replaces Entrypoint and also
/// drops the image's Cmd (an image's Cmd is written for its own entrypoint, so docker does
/// not hand it to another one), `--entrypoint ""` clears it.
fn process_args(args: &RunArgs, config: &Value) -> Result<Vec<String>, SpecError> {
    let image_entrypoint = config_str_array(config, "Entrypoint")?.unwrap_or_default();
    let image_cmd = config_str_array(config, "Cmd")?.unwrap_or_default();
    let (entrypoint, default_cmd) = match &args.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (image_entrypoint, image_cmd),
    };
    let cmd = if args.command().is_empty() {
        default_cmd
    } else {
        args.command().to_vec()
    };
    let mut all = entrypoint;
    all.extend(cmd);
    if all.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(all)
}

fn workdir(args: &RunArgs, config: &Value) -> Result<PathBuf, SpecError> {
    let (value, origin) = match &args.workdir {
        Some(w) => (w.clone(), "--workdir"),
        None => match config_str(config, "WorkingDir")? {
            Some(w) if !w.is_empty() => (w, "the image's WorkingDir"),
            _ => return Ok(PathBuf::from("/")),
        },
    };
    if !value.starts_with('/') || value.contains('\0') {
        return Err(SpecError::Workdir { value, origin });
    }
    Ok(PathBuf::from(value))
}

/// `--pid/--ipc/--uts`: true for `host`.
fn namespace_mode(flag: &'static str, value: Option<&str>) -> Result<bool, SpecError> {
    match value {
        None | Some("") | Some("private") => Ok(false),
        Some("host") => Ok(true),
        Some("shareable") if flag == "ipc" => Ok(false),
        Some(v) => Err(SpecError::NamespaceMode {
            flag,
            value: v.to_owned(),
            extra: if v.starts_with("container:") {
                " (joining another container's namespace is not supported yet)"
            } else {
                ""
            },
        }),
    }
}

/// `--sysctl KEY=VALUE`; the runtime refuses keys that are not namespaced or whose
/// namespace the container shares with the host.
fn sysctls(flags: &[String]) -> Result<HashMap<String, String>, SpecError> {
    let mut out = HashMap::new();
    for f in flags {
        match f.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                out.insert(k.to_owned(), v.to_owned());
            }
            _ => return Err(SpecError::Sysctl(f.clone())),
        }
    }
    Ok(out)
}

/// `--hostname`, else as docker: the host's name with the host's network (the container shares
/// its network identity: what it resolves and what peers see), the short id otherwise.
fn hostname(
    args: &RunArgs,
    network: Network,
    id: &str,
    host: &dyn Host,
) -> Result<String, SpecError> {
    if let Some(h) = &args.hostname {
        let bad = |reason| SpecError::Hostname {
            value: h.clone(),
            reason,
        };
        if h.is_empty() {
            return Err(bad("it is empty"));
        }
        // HOST_NAME_MAX; sethostname(2) refuses longer ones.
        if h.len() > 64 {
            return Err(bad("it is longer than 64 characters"));
        }
        if h.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(bad("it contains a space, a control character or a slash"));
        }
        return Ok(h.clone());
    }
    if network == Network::Host {
        if let Some(h) = host.hostname().filter(|h| !h.is_empty()) {
            return Ok(h);
        }
    }
    Ok(id.chars().take(12).collect())
}

/// Image labels, then `--label` (flags win), as plain annotations.
fn annotations(config: &Value, labels: &[String]) -> Result<HashMap<String, String>, SpecError> {
    let mut out = HashMap::new();
    match config.get("Labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                // A label that is not a string is the image's mistake; it is metadata only,
                // so it is skipped rather than refusing to run the image.
                if let Some(v) = v.as_str() {
                    out.insert(k.clone(), v.to_owned());
                }
            }
        }
        Some(_) => {
            return Err(SpecError::ImageConfig {
                field: "Labels",
                expected: "an object of strings",
            })
        }
    }
    for l in labels {
        // docker: `--label KEY` is KEY with an empty value.
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            return Err(SpecError::Label(l.clone()));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// The image's StopSignal (`SIGTERM`, `TERM`, `15`), else SIGTERM.
fn stop_signal(config: &Value) -> Result<Signal, SpecError> {
    let raw = match config_str(config, "StopSignal")? {
        Some(s) if !s.trim().is_empty() => s,
        _ => return Ok(Signal::SIGTERM),
    };
    parse_signal(&raw).ok_or(SpecError::StopSignal(raw))
}

fn parse_signal(raw: &str) -> Option<Signal> {
    let s = raw.trim().to_ascii_uppercase();
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let name = if s.starts_with("SIG") {
        s
    } else {
        format!("SIG{s}")
    };
    if name.starts_with("SIGRTMIN") || name.starts_with("SIGRTMAX") {
        // systemd images stop with SIGRTMIN+3. `Signal` has no real-time signals, and refusing
        // to run such an image over how it is stopped would be worse than stopping it with
        // SIGTERM (systemd handles that too, as a reexec request followed by our SIGKILL).
        tracing::warn!(
            signal = raw,
            "real-time StopSignal is not supported, using SIGTERM"
        );
        return Some(Signal::SIGTERM);
    }
    name.parse::<Signal>().ok()
}
