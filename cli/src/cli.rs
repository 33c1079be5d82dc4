//! The command-line grammar (clap derive). Kept apart from the commands so `--help` reads
//! as one document, like docker's.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "slate",
    version,
    about = "Run OCI and Docker images on a fresh root filesystem every time, with no daemon",
    long_about = "slate pulls OCI/Docker images and runs each container on a fresh root filesystem \
under Linux namespaces and cgroups, with no daemon. Built for Raspberry Pi boards and small cloud VMs.",
    propagate_version = true
)]
pub struct Cli {
    /// Where images and layers are stored
    #[arg(long, global = true, env = "SLATE_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Configuration file
    #[arg(long, global = true, env = "SLATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log level: error, warn, info, debug or trace
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Where container records live (a tmpfs, so a reboot forgets them) [default: /run/slate]
    #[arg(long, global = true, env = "SLATE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new container, on a fresh root filesystem
    #[command(
        disable_help_flag = true,
        override_usage = "slate run [OPTIONS] IMAGE [COMMAND] [ARG...]"
    )]
    Run(Box<RunArgs>),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Load images from an OCI or `docker save` archive (file or stdin), verified as a pull is
    Load(crate::commands::load::LoadArgs),
    /// Save images to an archive (OCI layout, or docker-loadable), for `slate load` elsewhere
    Save(crate::commands::save::SaveArgs),
    /// List images
    Images(ImagesArgs),
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Log in to a registry
    Login(LoginArgs),
    /// Log out from a registry
    Logout(LogoutArgs),
    /// Manage slate's store
    #[command(subcommand)]
    System(SystemCommand),
    /// Manage containers (prune, ls, rm, inspect)
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Show this host and this slate (also `system info`)
    Info(crate::commands::system::InfoArgs),
    /// Show slate's version
    Version(crate::commands::system::VersionArgs),
    /// List containers
    Ps(crate::commands::ps::PsArgs),
    /// Print the logs of a container
    Logs(crate::commands::logs::LogsArgs),
    /// Start stopped containers again (a fresh rootfs, the same flags)
    Start(crate::commands::lifecycle::StartArgs),
    /// Stop containers: their stop signal, then SIGKILL after a timeout
    Stop(crate::commands::stop::StopArgs),
    /// Stop, then start containers
    Restart(crate::commands::lifecycle::RestartArgs),
    /// Freeze every process of containers (cgroup freezer)
    Pause(crate::commands::lifecycle::PauseArgs),
    /// Thaw paused containers
    Unpause(crate::commands::lifecycle::PauseArgs),
    /// Rename a container
    Rename(crate::commands::lifecycle::RenameArgs),
    /// Show containers' CPU, memory and pids, from their cgroups
    Stats(crate::commands::stats::StatsArgs),
    /// Show the processes of a container
    Top(crate::commands::stats::TopArgs),
    /// Send a signal to a container
    Kill(crate::commands::kill::KillArgs),
    /// Remove containers
    Rm(crate::commands::rm::RmArgs),
    /// Run a command in a running container
    Exec(crate::commands::exec::ExecArgs),
    /// Copy files/folders between a running container and the host (or a tar stream)
    #[command(
        override_usage = "slate cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n       slate cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH"
    )]
    Cp(crate::commands::cp::CpArgs),
    /// Show a container's record and spec as JSON
    Inspect(crate::commands::inspect::InspectArgs),
    /// List a container's published ports, or the host address of one
    Port(crate::commands::network::PortArgs),
    /// Manage networks (bridge networks with NAT, macvlan, any CNI conflist)
    #[command(subcommand)]
    Network(crate::commands::network::NetworkCommand),
    /// Manage named volumes (`-v NAME:/path`): data that outlives containers
    #[command(subcommand)]
    Volume(crate::commands::volume::VolumeCommand),
    /// Wait for containers to exit and print their exit codes
    Wait(crate::commands::wait::WaitArgs),
    /// Check this host: kernel, cgroups, seccomp, store, registries; each problem with its fix
    Doctor(crate::commands::doctor::DoctorArgs),
    /// Generate systemd units that run containers
    #[command(subcommand)]
    Systemd(SystemdCommand),
    /// Deploy the new image of every container labelled io.slate.autoupdate, restart it, and
    /// roll back a release that does not come up
    AutoUpdate(crate::commands::autoupdate::AutoUpdateArgs),
    /// Supervise a detached container (started by `slate run -d`; not for direct use)
    #[command(hide = true)]
    Supervise(crate::commands::run::SuperviseArgs),
    /// Run a container's health checks (started by `slate run`; not for direct use)
    #[command(hide = true)]
    Healthcheck(crate::commands::run::SuperviseArgs),
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show disk usage of images, layers, blobs and work in progress
    Df(DfArgs),
    /// Remove stopped containers, unused networks and layers (-a: unused images,
    /// --volumes: unused volumes)
    Prune(crate::commands::system::SystemPruneArgs),
    /// Show this host and this slate
    Info(crate::commands::system::InfoArgs),
}

/// `slate container ...`: docker's management command for the container verbs.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Remove every stopped container
    Prune(crate::commands::volume::PruneArgs),
    /// List containers
    #[command(visible_alias = "list")]
    Ls(crate::commands::ps::PsArgs),
    /// Remove containers
    Rm(crate::commands::rm::RmArgs),
    /// Show containers as JSON
    Inspect(crate::commands::inspect::InspectArgs),
}

#[derive(Debug, Subcommand)]
pub enum SystemdCommand {
    /// Print a systemd service that runs a container (with --install, write and load it).
    /// Takes `slate run`'s flags; every start of the unit runs the newest image on a fresh
    /// root filesystem, as `slate run --rm --replace --name NAME --pull always`
    #[command(
        disable_help_flag = true,
        override_usage = "slate systemd unit --name NAME [--install [--enable] [--now]] [OPTIONS] IMAGE [COMMAND] [ARG...]"
    )]
    Unit(Box<crate::commands::systemd::UnitArgs>),
}

#[derive(Debug, Args)]
pub struct DfArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all images not used by a running container, not only unused layers
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt (slate never does; accepted for docker compatibility)
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Download an image from a registry
    Pull(PullArgs),
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove one or more images
    Rm(RmiArgs),
    /// Show an image's manifest digest, platform, config and layers as JSON
    Inspect(InspectArgs),
    /// Mount an image's layers read-only at a directory, to look inside
    Mount(MountArgs),
    /// Unmount a directory mounted by `slate image mount`
    Unmount(UnmountArgs),
    /// Remove layers no image uses (with -a, all images too) and print the space freed
    Prune(PruneArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Print only the image digest
    #[arg(short, long)]
    pub quiet: bool,
    /// Platform to pull instead of this host's, e.g. linux/arm64 or linux/arm/v7
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Image reference, e.g. nginx:alpine or registry.example.com/app@sha256:...
    pub image: String,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// table, json, or a template: '{{.Repository}}:{{.Tag}}', 'table {{.ID}}\t{{.Size}}'
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Filter: reference=PATTERN (nginx*, */web:*), dangling=true|false, label=KEY[=VALUE]
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Print only image digests
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images to remove (name[:tag], name@digest, or a digest prefix)
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    pub image: String,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    pub image: String,
    /// Existing directory to mount at
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct UnmountArgs {
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name
    #[arg(short, long)]
    pub username: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
    /// Registry host[:port]; Docker Hub when omitted
    pub registry: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host[:port]; Docker Hub when omitted
    pub registry: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Pull only when the image is not in the store
    Missing,
    /// Check the registry for a newer digest every time (falls back to the local copy when
    /// the registry cannot be reached)
    Always,
    /// Never pull; fail when the image is not in the store
    Never,
}

/// `slate run`'s options: docker's names and meanings.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Print help (`-h` is --hostname, as in docker)
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Remove the container's state when it exits (the root filesystem is always fresh)
    #[arg(long)]
    pub rm: bool,
    /// Run in the background: print the container id and return
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Stop and remove a container of the same --name first (deploy a new version)
    #[arg(long, requires = "name")]
    pub replace: bool,
    /// Restart policy of a detached container: no, on-failure[:N] or always
    #[arg(long, default_value = "no", value_name = "POLICY")]
    pub restart: String,
    /// Where a detached container's output goes
    #[arg(long, value_enum, default_value = "file")]
    pub log_driver: crate::state::LogDriver,
    /// Size of one log file before it is rotated (e.g. 10m)
    #[arg(long, default_value = "10m", value_name = "SIZE")]
    pub log_max_size: String,
    /// Number of log files kept, the current one included
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub log_max_files: u32,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Pull the image: missing, always or never
    #[arg(long, value_enum, default_value = "missing")]
    pub pull: PullPolicy,
    /// Platform of the image, e.g. linux/arm/v7
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Set environment variables (NAME=VALUE, or NAME to take it from slate's environment)
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// Read environment variables from a file of NAME=VALUE lines
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Bind mount a host path: HOST:CONTAINER[:ro|rw]
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:OPTS]")]
    pub volume: Vec<String>,
    /// Add a host device: HOST[:CONTAINER[:PERMS]], PERMS of r, w and m (default rwm)
    #[arg(long = "device", value_name = "HOST[:CONTAINER[:PERMS]]")]
    pub device: Vec<String>,
    /// Mount a tmpfs: CONTAINER[:OPTIONS]
    #[arg(long, value_name = "PATH[:OPTS]")]
    pub tmpfs: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User: name|uid[:group|gid]
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Overwrite the image's entrypoint ("" clears it)
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name
    #[arg(long, short = 'h')]
    pub hostname: Option<String>,
    /// Memory limit (e.g. 128m, 1g)
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Memory plus swap limit; -1 for unlimited swap
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Memory soft limit (e.g. 64m): what the container is trimmed to first under memory pressure
    #[arg(long, value_name = "SIZE")]
    pub memory_reservation: Option<String>,
    /// Number of CPUs (e.g. 0.5)
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight, default 1024)
    #[arg(long, short = 'c')]
    pub cpu_shares: Option<u64>,
    /// CPUs the container may run on, e.g. 0-1,3
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes (NUMA) the container may allocate from, e.g. 0
    #[arg(long, value_name = "LIST")]
    pub cpuset_mems: Option<String>,
    /// Block I/O weight (relative), 10 to 1000; 0 for the default
    #[arg(long, value_name = "N")]
    pub blkio_weight: Option<u32>,
    /// Block I/O weight of one disk: DEVICE:N, e.g. /dev/sda:200
    #[arg(long, value_name = "DEVICE:N")]
    pub blkio_weight_device: Vec<String>,
    /// Limit the read rate from a disk: DEVICE:RATE, e.g. /dev/sda:1mb (units b, kb, mb, gb)
    #[arg(long, value_name = "DEVICE:RATE")]
    pub device_read_bps: Vec<String>,
    /// Limit the write rate to a disk: DEVICE:RATE, e.g. /dev/sda:1mb
    #[arg(long, value_name = "DEVICE:RATE")]
    pub device_write_bps: Vec<String>,
    /// Limit read operations per second from a disk: DEVICE:N
    #[arg(long, value_name = "DEVICE:N")]
    pub device_read_iops: Vec<String>,
    /// Limit write operations per second to a disk: DEVICE:N
    #[arg(long, value_name = "DEVICE:N")]
    pub device_write_iops: Vec<String>,
    /// Maximum number of processes (-1 for unlimited)
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Mount the root filesystem read-only (no writable layer at all)
    #[arg(long)]
    pub read_only: bool,
    /// Network: host (the default), none, bridge (slate0, with NAT), or a user network
    /// (`slate network ls`). `-p` without --network means bridge
    #[arg(long, visible_alias = "net", value_name = "host|none|bridge|NAME")]
    pub network: Option<String>,
    /// Publish a container port on the host: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]
    #[arg(short = 'p', long, value_name = "[IP:]HOST:CONTAINER")]
    pub publish: Vec<String>,
    /// Publish every exposed port (the image's and --expose) on a free host port
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// Expose a port or range (for -P): PORT[/tcp|udp]
    #[arg(long, value_name = "PORT")]
    pub expose: Vec<String>,
    /// The container's IPv4 address on a user network
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// DNS server for the container's resolv.conf (replaces the host's)
    #[arg(long, value_name = "IP")]
    pub dns: Vec<String>,
    /// DNS search domain
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// resolv.conf option (e.g. ndots:2)
    #[arg(long, value_name = "OPT")]
    pub dns_option: Vec<String>,
    /// Add a line to /etc/hosts: HOST:IP
    #[arg(long, value_name = "HOST:IP")]
    pub add_host: Vec<String>,
    /// Add a Linux capability (or ALL)
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability (or ALL)
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Give extended privileges: all capabilities, no seccomp, no masked paths
    #[arg(long)]
    pub privileged: bool,
    /// Security options: seccomp=unconfined|PATH, no-new-privileges[=true|false]
    #[arg(long, value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    pub init: bool,
    /// Add a supplementary group (name from the image's /etc/group, or a gid)
    #[arg(long, value_name = "GROUP")]
    pub group_add: Vec<String>,
    /// Set a namespaced kernel parameter: KEY=VALUE (net.*, kernel.shm*, fs.mqueue.*...)
    #[arg(long, value_name = "KEY=VALUE")]
    pub sysctl: Vec<String>,
    /// Size of /dev/shm (e.g. 256m) [default: 64m]
    #[arg(long, value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// The container's OOM score adjustment, -1000 to 1000
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub oom_score_adj: Option<i32>,
    /// PID namespace: host to share the host's (the container sees every process)
    #[arg(long, value_name = "host")]
    pub pid: Option<String>,
    /// IPC namespace: host to share the host's (and its /dev/shm)
    #[arg(long, value_name = "host")]
    pub ipc: Option<String>,
    /// UTS namespace: host to share the host's name (no --hostname then)
    #[arg(long, value_name = "host")]
    pub uts: Option<String>,
    /// Mount: type=bind|volume|tmpfs,source=...,target=...[,readonly][,tmpfs-size=...]
    #[arg(long, value_name = "SPEC")]
    pub mount: Vec<String>,
    /// Seconds `slate stop` waits after the stop signal before SIGKILL [default: 10]
    #[arg(long, value_name = "SECS")]
    pub stop_timeout: Option<u32>,
    /// Pass descriptors 3 to 3+N-1 into the container (socket activation); foreground only
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Keep standard input open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Set metadata on the container (KEY=VALUE)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Ulimit options: NAME=SOFT[:HARD], e.g. nofile=1024:2048
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// Under a systemd Type=notify unit, who sends READY=1: conmon (slate, once the app
    /// runs), container (the app, through the socket passed in) or ignore
    #[arg(long, value_enum, default_value = "conmon", value_name = "MODE")]
    pub sdnotify: crate::sdnotify::Mode,
    /// Signal that stops the container (SIGTERM, TERM, 15) [default: the image's StopSignal,
    /// else SIGTERM]
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Command to run inside the container to check its health (`/bin/sh -c CMD`)
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Time between health checks (30s, 1m30s, 500ms) [default: the image's, else 30s]
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Time a health check may take [default: the image's, else 30s]
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Failures in a row that make the container unhealthy [default: the image's, else 3]
    #[arg(long, value_name = "N")]
    pub health_retries: Option<u32>,
    /// Time to start during which failed checks do not count [default: the image's, else 0s]
    #[arg(long, value_name = "DURATION")]
    pub health_start_period: Option<String>,
    /// Disable the image's health check
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Suppress the pull's progress output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// The image, then the command and its arguments (they replace the image's Cmd).
    /// Everything after IMAGE belongs to the command, as with docker: `run img sh -c "..."`
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    pub image_and_command: Vec<String>,
}

impl RunArgs {
    /// The image reference as typed.
    pub fn image(&self) -> &str {
        self.image_and_command
            .first()
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The command given after the image, if any.
    pub fn command(&self) -> &[String] {
        self.image_and_command.get(1..).unwrap_or(&[])
    }

    /// `--network` as resolved: see [`crate::network::mode_of`].
    pub fn network_mode(&self) -> &str {
        crate::network::mode_of(
            self.network.as_deref(),
            !self.publish.is_empty() || self.publish_all,
        )
    }
}

/// docker `run` flags slate does not have, with what to do instead: a command line copied
/// from a docker tutorial gets one clear line rather than "invalid reference".
const DOCKER_ONLY: &[(&str, &str)] = &[
    ("link", "use a user network (`slate network create NAME`, then --network NAME): containers on it reach each other by name"),
    ("volumes-from", "mount the same volumes by name (-v NAME:/path) in both containers"),
    ("userns", "user namespaces are not supported yet"),
    ("cgroupns", "slate always gives a container its own cgroup namespace"),
    ("cgroup-parent", "slate places containers under its own cgroup, or its systemd unit's"),
    ("runtime", "slate is its own runtime"),
    ("isolation", "Linux containers only"),
    ("gpus", "pass the device nodes with --device"),
    ("storage-opt", "the rootfs is an overlay on the store's filesystem; limit the store with [pull] max_store_size"),
    ("kernel-memory", "removed from the kernel (cgroup v2 has no kernel memory limit); use --memory"),
    ("cpu-rt-runtime", "real-time CPU scheduling is not supported"),
    ("cpu-rt-period", "real-time CPU scheduling is not supported"),
    ("cpu-period", "use --cpus"),
    ("cpu-quota", "use --cpus"),
    ("memory-swappiness", "not supported (and ignored by docker on cgroup v2)"),
    ("oom-kill-disable", "not supported (and ignored by docker on cgroup v2)"),
    ("mac-address", "not supported yet"),
    ("ip6", "IPv6 addresses are not supported yet"),
    ("network-alias", "containers are found by name and short id on their network"),
    ("link-local-ip", "not supported"),
    ("log-opt", "use --log-max-size and --log-max-files"),
    ("detach-keys", "a detached container has no terminal to detach from; use slate exec -it"),
    ("sig-proxy", "slate always forwards signals to a foreground container"),
    ("cidfile", "use --name, or the id `run -d` prints"),
    ("attach", "a foreground run is attached to stdout and stderr; -i adds stdin"),
    ("device-cgroup-rule", "give the devices with --device"),
    ("domainname", "not supported yet"),
    ("volume-driver", "named volumes are directories in the store"),
    ("disable-content-trust", "slate verifies every digest it pulls"),
    ("annotation", "use --label"),
    ("health-start-interval", "not supported yet: --health-start-period and --health-interval are"),
];

/// For a `run` (or `systemd unit`) whose first word after the flags starts with `-`: clap
/// took an unknown flag for the image. Returns the one line to print instead, with docker's
/// flags that slate lacks named as such and a near miss suggested.
pub fn misplaced_flag(word: &str, known: &[String]) -> String {
    let name = word.trim_start_matches('-');
    let name = name.split_once('=').map_or(name, |(n, _)| n);
    if let Some((_, instead)) = DOCKER_ONLY.iter().find(|(f, _)| *f == name) {
        return format!("docker's --{name} is not supported by slate: {instead}");
    }
    let short = !word.starts_with("--");
    let best = known
        .iter()
        .filter(|_| !short)
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, k)) => {
            format!("unknown flag {word}: did you mean --{k}? (`slate run --help` lists them)")
        }
        None => format!(
            "unknown flag {word} (`slate run --help` lists the flags; the image comes after them)"
        ),
    }
}

/// Levenshtein distance, for flag suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The long flags of `slate run`.
pub fn run_flags() -> Vec<String> {
    use clap::CommandFactory as _;
    Cli::command()
        .find_subcommand("run")
        .map(|c| {
            c.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn misplaced_flags_are_named() {
        let known = run_flags();
        assert!(known.contains(&"publish".to_string()));
        assert_eq!(
            misplaced_flag("--publsh", &known),
            "unknown flag --publsh: did you mean --publish? (`slate run --help` lists them)"
        );
        assert!(misplaced_flag("--link=db", &known).starts_with("docker's --link is not supported"));
        assert!(misplaced_flag("--zzzzzzzz", &known).contains("the image comes after them"));
        assert!(!misplaced_flag("-Z", &known).contains("did you mean"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
