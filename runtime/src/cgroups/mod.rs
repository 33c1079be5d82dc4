//! Cgroups of a container: creation with resource limits, joining, killing and removal, on
//! pure cgroup v2 hosts (Raspberry Pi OS, Amazon Linux 2023), pure v1 hosts and hybrid hosts
//! (v1 controllers plus a cgroup2 mount without controllers, which crun refuses).
//!
//! Resource values are written through `libcgroups` on v2 (its controllers know the file
//! formats and the shares-to-weight conversion), except the few it gets wrong or drops (block
//! I/O weights, v2's `io.max`, "no swap" on v2), which `limits` writes; on v1 `v1_limits`
//! writes them all, because building libcgroups' v1 manager re-reads mountinfo once per
//! controller on every start. Everything around them is done here, because libcgroups either does not do it or
//! does it in a way a runtime cannot rely on:
//! - where the cgroup goes: `/slate/<id>` (v2), `<controller>/slate/<id>` (v1), or inside the
//!   delegated cgroup of the systemd unit slate runs in (its systemd manager talks D-Bus and
//!   does not compile for armv7, so that case is handled here on the plain filesystem);
//! - checking that every controller the resources need is there, with an error that says how
//!   to enable it, instead of libcgroups' best-effort enabling that silently drops limits;
//! - killing, waiting for the cgroup to empty and deleting it on every hierarchy;
//! - on v2, every controller the parent offers enabled for the container, and the limits of
//!   its ancestors shown in its own cgroup where it has none of its own (`inherit`), so that
//!   what it reads at /sys/fs/cgroup binds it; `Cgroup::view` tells the mounts which
//!   directories to show it there.
//!
//! Guarantees: a requested limit is either in effect or `create` fails (and leaves nothing
//! behind); `remove` deletes exactly the directories of this container and never touches a
//! cgroup slate did not create (the shared `slate` parent is kept, it is harmless and
//! removing it would race with concurrent runs).
//!
//! Device control: the spec's device rules (and libcgroups' default allowlist after them)
//! decide which device nodes a container may open or create, on both hierarchies, because a
//! container with CAP_MKNOD can create a node for any device, the host's disks included
//! (issue 11). On v1 libcgroups writes them to the devices controller. v2 has no such
//! controller, only eBPF programs attached to the cgroup, so `devices` compiles the rules into
//! one itself (libcgroups' `cgroupsv2_devices` would pull libbpf, a C build per ARM target)
//! and attaches it before the container's process exists. A kernel that cannot run it makes
//! `create` fail rather than start a container with every device open.

mod boot;
mod devices;
mod host;
mod inherit;
mod limits;
mod report;
mod stats;
mod v1;
mod v1_limits;
mod v2;

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

pub use devices::DeviceRuleError;
pub use host::{systemctl_delegate, systemd_unit};
pub(crate) use host::{FsOps, Host, Layout};
pub use report::{probe_device_filter, report, Availability, Controller, Mode, Report, Unit};
pub use stats::Stats;

/// Name of the parent cgroup under which slate creates container cgroups.
pub const SLATE_PARENT: &str = "slate";

/// Errors of cgroup management.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot detect the cgroup setup of this host: {0}")]
    Detect(#[from] libcgroups::common::GetCgroupSetupError),
    #[error("cannot list the cgroup v1 hierarchies: {0}")]
    Hierarchies(#[from] libcgroups::v1::util::V1MountPointError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid container id {0:?}: use letters, digits, '_', '-' and '.' only")]
    InvalidId(String),
    #[error("invalid cgroups path {path}: {reason}")]
    InvalidPath { path: PathBuf, reason: &'static str },
    #[error("cgroup controller {controller} is not available: {hint}")]
    MissingController { controller: String, hint: String },
    #[error(
        "the systemd unit {} is not delegated (no Delegate=yes), and systemd takes back the \
         cgroup controllers the limits need there ({controllers}): add `Delegate=yes` to the \
         [Service] section of the unit and restart it",
        unit.display()
    )]
    NotDelegated { unit: PathBuf, controllers: String },
    #[error("cgroup {path} already exists and has processes in it")]
    InUse { path: PathBuf },
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enable controller {controller} in {path}: {source}{hint}")]
    EnableController {
        controller: String,
        path: PathBuf,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot move process {pid} into {path}: {source}")]
    Move {
        pid: i32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidLimit {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "cannot set the memory limit of cgroup {path} to {limit} bytes: it already uses more \
         (the kernel could not reclaim enough)"
    )]
    MemoryBusy { path: PathBuf, limit: i64 },
    #[error("cannot apply resource limits to cgroup {path}: {source}")]
    ApplyV2 {
        path: PathBuf,
        #[source]
        source: libcgroups::v2::manager::V2ManagerError,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot kill process {pid} of cgroup {path}: {source}")]
    Kill {
        pid: i32,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cgroup {path} still has processes after {waited_ms} ms")]
    NotEmpty { path: PathBuf, waited_ms: u128 },
    #[error(
        "this host has no cgroup freezer (v1: mount the freezer controller; v2 needs Linux 5.2)"
    )]
    NoFreezer,
    #[error("{path}: the container did not settle after {waited_ms} ms (a process in uninterruptible sleep?)")]
    FreezeTimeout { path: PathBuf, waited_ms: u128 },
    #[error("cannot remove cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup found for container {id}")]
    NotFound { id: String },
    #[error(transparent)]
    DeviceRule(#[from] DeviceRuleError),
    /// Issue 11: on cgroup v2 a container without the filter could open every device node it
    /// can create (the host's disks, with docker's CAP_MKNOD), so that is refused.
    #[error(
        "this kernel cannot restrict device access on cgroup v2: {reason} ({step}: {source}); \
         without the filter the container could open the host's disks, so it is not started \
         (to allow every device, run with --privileged or give the device rule `a *:* rwm`)"
    )]
    DeviceFilterUnsupported {
        step: &'static str,
        reason: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("the kernel refused slate's device filter program ({source}): {log}")]
    DeviceFilterRejected {
        #[source]
        source: nix::Error,
        log: String,
    },
    #[error("cannot attach the device filter to cgroup {path}: {source}")]
    DeviceFilterAttach {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("invalid block I/O weight {weight}: expected 10 to 1000")]
    BlkioWeightRange { weight: u16 },
    #[error(
        "this host cannot weight block I/O: cgroup {path} has neither {files}; {hint}, or run \
         without a block I/O weight"
    )]
    BlkioWeightUnsupported {
        path: PathBuf,
        files: &'static str,
        hint: &'static str,
    },
    #[error("block I/O leaf weights do not exist on cgroup v2 (they were CFQ's); set none")]
    BlkioLeafWeightV2,
    #[error("cannot write `{value}` to {path}{hint}")]
    BlkioWrite {
        path: PathBuf,
        value: String,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{file} of cgroup {path} is {effective:?}, not the {requested:?} asked for: the cgroups \
         above it do not allow {requested:?} (a unit's AllowedCPUs= or AllowedMemoryNodes=?)"
    )]
    CpusetNotInEffect {
        file: &'static str,
        path: PathBuf,
        requested: String,
        effective: String,
    },
}

/// The cgroup of one container, on whichever hierarchies the host has.
pub struct Cgroup {
    id: String,
    inner: Inner,
}

enum Inner {
    V1(v1::V1Cgroup),
    V2(v2::V2Cgroup),
}

impl std::fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cgroup")
            .field("id", &self.id)
            .field("paths", &self.paths())
            .finish()
    }
}

impl Cgroup {
    /// Creates the cgroup for container `id` (under the delegated cgroup when slate runs in a
    /// systemd unit, else under a "slate" parent), applies `resources`. Errors name a missing
    /// controller and how to enable it.
    ///
    /// `cgroups_path` is the spec's `linux.cgroupsPath`: an absolute path is taken from the
    /// root of each hierarchy, a relative one from slate's parent cgroup.
    pub fn create(
        id: &str,
        cgroups_path: Option<&Path>,
        resources: Option<&LinuxResources>,
    ) -> Result<Cgroup, CgroupError> {
        let host = Host::detect()?;
        Self::create_on(&host, id, cgroups_path, resources)
    }

    /// Reattaches to the existing cgroup of container `id` (for cleanup after a crash, or from
    /// another slate process), with the same `cgroups_path` it was created with.
    pub fn open(id: &str, cgroups_path: Option<&Path>) -> Result<Cgroup, CgroupError> {
        let host = Host::detect()?;
        Self::open_on(&host, id, cgroups_path)
    }

    /// As [`Cgroup::open`], trying first the directories recorded when the container started
    /// ([`Cgroup::paths`]): under systemd the container's cgroup is inside the unit that ran
    /// it, which a slate started elsewhere (a shell, another unit) would not look in.
    pub fn open_recorded(
        id: &str,
        cgroups_path: Option<&Path>,
        recorded: &[PathBuf],
    ) -> Result<Cgroup, CgroupError> {
        Self::open_recorded_on(&Host::detect()?, id, cgroups_path, recorded)
    }

    pub(crate) fn open_recorded_on(
        host: &Host,
        id: &str,
        cgroups_path: Option<&Path>,
        recorded: &[PathBuf],
    ) -> Result<Cgroup, CgroupError> {
        validate_id(id)?;
        let inner = match &host.layout {
            Layout::Unified { .. } => v2::V2Cgroup::open_recorded(host, recorded).map(Inner::V2),
            Layout::V1 { .. } => v1::V1Cgroup::open_recorded(host, recorded).map(Inner::V1),
        };
        match inner {
            Some(inner) => Ok(Cgroup {
                id: id.to_string(),
                inner,
            }),
            None => Self::open_on(host, id, cgroups_path),
        }
    }

    pub(crate) fn create_on(
        host: &Host,
        id: &str,
        cgroups_path: Option<&Path>,
        resources: Option<&LinuxResources>,
    ) -> Result<Cgroup, CgroupError> {
        validate_id(id)?;
        let empty = LinuxResources::default();
        let resources = resources.unwrap_or(&empty);
        let inner = match &host.layout {
            Layout::Unified { .. } => {
                Inner::V2(v2::V2Cgroup::create(host, id, cgroups_path, resources)?)
            }
            Layout::V1 { .. } => {
                Inner::V1(v1::V1Cgroup::create(host, id, cgroups_path, resources)?)
            }
        };
        tracing::debug!(id, "created cgroup");
        Ok(Cgroup {
            id: id.to_owned(),
            inner,
        })
    }

    pub(crate) fn open_on(
        host: &Host,
        id: &str,
        cgroups_path: Option<&Path>,
    ) -> Result<Cgroup, CgroupError> {
        validate_id(id)?;
        let inner = match &host.layout {
            Layout::Unified { .. } => v2::V2Cgroup::open(host, id, cgroups_path)?.map(Inner::V2),
            Layout::V1 { .. } => v1::V1Cgroup::open(host, id, cgroups_path)?.map(Inner::V1),
        };
        match inner {
            Some(inner) => Ok(Cgroup {
                id: id.to_owned(),
                inner,
            }),
            None => Err(CgroupError::NotFound { id: id.to_owned() }),
        }
    }

    /// The container id this cgroup belongs to.
    /// Changes the limits of a running container (runc's `update`): those `resources` sets
    /// replace the ones in force, those it leaves out stay. Device rules are left alone, as
    /// runc leaves them: a device filter is set up once, with the container.
    pub fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        let host = Host::detect()?;
        let mut resources = resources.clone();
        resources.set_devices(None);
        match &self.inner {
            Inner::V1(cg) => cg.update(&host, &resources),
            Inner::V2(cg) => cg.update(&host, &resources),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Moves process `pid` into the cgroup (into every hierarchy on v1).
    pub fn add_task(&self, pid: Pid) -> Result<(), CgroupError> {
        match &self.inner {
            Inner::V1(c) => c.add_task(pid),
            Inner::V2(c) => c.add_task(pid),
        }
    }

    /// Sends SIGKILL to every process still in the cgroup (and in cgroups below it).
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        match &self.inner {
            Inner::V1(c) => c.kill_all(),
            Inner::V2(c) => c.kill_all(),
        }
    }

    /// The processes in the cgroup and in cgroups below it.
    pub fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        match &self.inner {
            Inner::V1(c) => c.pids(),
            Inner::V2(c) => c.pids(),
        }
    }

    /// Usage figures for `slate stats`, read from the cgroup's files.
    pub fn stats(&self) -> Stats {
        stats::read_stats(&self.view())
    }

    /// Freezes (`slate pause`) or thaws (`unpause`) every process of the container, and
    /// waits until the kernel says they are.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        stats::set_frozen(&self.view(), frozen)
    }

    /// Whether the container is frozen now.
    pub fn is_frozen(&self) -> bool {
        stats::is_frozen(&self.view())
    }

    /// Kills leftovers, waits until the cgroup is empty and deletes it on all hierarchies.
    pub fn remove(self) -> Result<(), CgroupError> {
        let id = self.id;
        match self.inner {
            Inner::V1(c) => c.remove()?,
            Inner::V2(c) => c.remove()?,
        }
        tracing::debug!(id, "removed cgroup");
        Ok(())
    }

    /// The cgroup v2 directory when the host is pure v2: the directory to pass to
    /// `clone3(CLONE_INTO_CGROUP)` so the child starts inside its cgroup.
    pub fn unified_path(&self) -> Option<&Path> {
        match &self.inner {
            Inner::V1(_) => None,
            Inner::V2(c) => Some(c.path()),
        }
    }

    /// Every directory of this cgroup (one per hierarchy on v1).
    /// The cgroup v2 directory of the container (none on v1/hybrid hosts), for
    /// `clone3(CLONE_INTO_CGROUP)`.
    pub(crate) fn unified_dir(&self) -> Option<&Path> {
        match &self.inner {
            Inner::V1(_) => None,
            Inner::V2(c) => Some(c.path()),
        }
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        match &self.inner {
            Inner::V1(c) => c.paths().to_vec(),
            Inner::V2(c) => vec![c.path().to_path_buf()],
        }
    }

    /// What the container is shown of its cgroups at /sys/fs/cgroup.
    pub(crate) fn view(&self) -> View {
        match &self.inner {
            Inner::V2(c) => View::Unified(c.path().to_path_buf()),
            Inner::V1(c) => {
                let mut out: Vec<(OsString, PathBuf)> = Vec::new();
                for (name, dir) in c.named_paths() {
                    // Two hierarchies mounted under the same name (never seen on a real
                    // host) cannot both be shown; the first one wins.
                    if name.is_empty() || out.iter().any(|(n, _)| n == name) {
                        continue;
                    }
                    out.push((name.to_os_string(), dir.to_path_buf()));
                }
                View::Hierarchies(out)
            }
        }
    }
}

/// Where the container's own cgroup directories are on the host: what the runtime shows the
/// container at /sys/fs/cgroup (its own cgroups, nothing above or beside them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum View {
    /// Pure cgroup v2: the container's directory.
    Unified(PathBuf),
    /// v1 or hybrid: per hierarchy, the name the container sees it by under /sys/fs/cgroup
    /// (the host's mount point name: `memory`, `cpu,cpuacct`, `unified`), and the
    /// container's directory in it. One path component each.
    Hierarchies(Vec<(OsString, PathBuf)>),
}

/// Ids of the container cgroups found under slate's parent cgroup(s), on any hierarchy: the
/// candidates for cleanup after a crash. Deciding which are dead is the caller's job (a
/// running container also has one); pass each dead one to [`Cgroup::open`] and
/// [`Cgroup::remove`].
pub fn list_leftovers() -> Result<Vec<String>, CgroupError> {
    let host = Host::detect()?;
    list_leftovers_on(&host)
}

pub(crate) fn list_leftovers_on(host: &Host) -> Result<Vec<String>, CgroupError> {
    let mut parents = Vec::new();
    let base = host.base_path();
    for mount in host.mounts() {
        parents.push(join_rel(&mount, &base).join(SLATE_PARENT));
        if !base.as_os_str().is_empty() {
            // A run outside the unit (e.g. `slate rm` from a shell) also cleans up after runs
            // that happened outside of systemd.
            parents.push(mount.join(SLATE_PARENT));
        }
    }
    let mut ids = Vec::new();
    for parent in parents {
        let entries = match std::fs::read_dir(&parent) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(CgroupError::Read {
                    path: parent,
                    source,
                })
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| CgroupError::Read {
                path: parent.clone(),
                source,
            })?;
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if !is_dir {
                continue;
            }
            if let Some(name) = entry.file_name().to_str() {
                if validate_id(name).is_ok() && !ids.iter().any(|i| i == name) {
                    ids.push(name.to_owned());
                }
            }
        }
    }
    ids.sort();
    Ok(ids)
}

fn validate_id(id: &str) -> Result<(), CgroupError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidId(id.to_owned()))
    }
}

/// The cgroup path of a container relative to the root of a hierarchy. `base` is slate's
/// parent (the systemd unit's cgroup, or empty).
fn container_rel_path(
    base: &Path,
    id: &str,
    cgroups_path: Option<&Path>,
) -> Result<PathBuf, CgroupError> {
    let Some(p) = cgroups_path else {
        return Ok(base.join(SLATE_PARENT).join(id));
    };
    let invalid = |reason| CgroupError::InvalidPath {
        path: p.to_path_buf(),
        reason,
    };
    let s = p.to_string_lossy();
    if !p.is_absolute() && s.contains(':') {
        // containerd's systemd driver form "slice:prefix:name"
        return Err(invalid(
            "systemd cgroup driver paths are not supported, use a plain path",
        ));
    }
    let mut rel = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => rel.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(invalid("'..' is not allowed"));
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(invalid("it names the root cgroup"));
    }
    if p.is_absolute() {
        Ok(rel)
    } else {
        Ok(base.join(rel))
    }
}

/// Joins a path relative to a hierarchy root onto that root.
fn join_rel(root: &Path, rel: &Path) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in rel.components() {
        if let Component::Normal(n) = c {
            p.push(n);
        }
    }
    p
}

/// A cpu or memory node list as the kernel writes and reads them (`0-2,4`, `cpuset.cpus`,
/// `/sys/devices/system/cpu/online`): inclusive ranges, in any order, duplicates allowed
/// (docker's `ParseUintList`). `None` if malformed.
pub fn parse_cpu_list(s: &str) -> Option<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let num = |n: &str| {
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.parse::<u32>().ok())
                .flatten()
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if lo > hi {
            return None;
        }
        out.push((lo, hi));
    }
    Some(out)
}

/// A cpu list's ranges sorted and merged (`3,0-1,2` is `0-3`), to compare two lists.
fn normalized_cpu_list(s: &str) -> Option<Vec<(u32, u32)>> {
    if s.trim().is_empty() {
        return Some(Vec::new());
    }
    let mut r = parse_cpu_list(s.trim())?;
    r.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in r {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    Some(out)
}

/// Controllers (by their v1 names; `io` is spelled `blkio` there) that `resources` needs.
fn required_controllers(resources: &LinuxResources, v2: bool) -> Vec<&'static str> {
    let mut out = Vec::new();
    if let Some(m) = resources.memory() {
        if m.limit().is_some()
            || m.reservation().is_some()
            || m.swap().is_some()
            || m.kernel().is_some()
            || m.kernel_tcp().is_some()
            || m.swappiness().is_some()
            || m.disable_oom_killer().is_some()
        {
            out.push("memory");
        }
    }
    if let Some(c) = resources.cpu() {
        if c.shares().is_some()
            || c.quota().is_some()
            || c.period().is_some()
            || c.burst().is_some()
            || c.idle().is_some()
            || c.realtime_period().is_some()
            || c.realtime_runtime().is_some()
        {
            out.push("cpu");
        }
        if c.cpus().is_some() || c.mems().is_some() {
            out.push("cpuset");
        }
    }
    if resources.pids().is_some() {
        out.push("pids");
    }
    if resources
        .block_io()
        .as_ref()
        .is_some_and(limits::block_io_is_set)
    {
        out.push(if v2 { "io" } else { "blkio" });
    }
    if resources
        .hugepage_limits()
        .as_ref()
        .is_some_and(|h| !h.is_empty())
    {
        out.push("hugetlb");
    }
    if v2 {
        if let Some(u) = resources.unified() {
            for key in u.keys() {
                let ctrl = key.split('.').next().unwrap_or_default();
                for known in ["memory", "cpu", "cpuset", "pids", "io", "hugetlb"] {
                    if ctrl == known && !out.contains(&known) {
                        out.push(known);
                    }
                }
            }
        }
    } else {
        if let Some(n) = resources.network() {
            if n.class_id().is_some() {
                out.push("net_cls");
            }
            if n.priorities().is_some() {
                out.push("net_prio");
            }
        }
        // libcgroups always writes its default device allowlist on v1, so the controller is
        // needed for every container, as docker's default device policy is.
        out.push("devices");
    }
    out
}

/// How the kernel sees a controller, from `/proc/cgroups`.
#[derive(Debug, PartialEq, Eq)]
enum KernelState {
    Enabled { v1_hierarchy: bool },
    DisabledAtBoot,
    NotBuilt,
    Unknown,
}

fn kernel_state(proc_cgroups: Option<&str>, controller: &str) -> KernelState {
    let Some(text) = proc_cgroups else {
        return KernelState::Unknown;
    };
    let name = if controller == "io" {
        "blkio"
    } else {
        controller
    };
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 4 && cols[0] == name {
            return if cols[3] == "0" {
                KernelState::DisabledAtBoot
            } else {
                KernelState::Enabled {
                    v1_hierarchy: cols[1] != "0",
                }
            };
        }
    }
    KernelState::NotBuilt
}

/// The second half of a missing-controller error: why it is missing and how to enable it.
///
/// `/proc/cgroups` tells a controller disabled at boot (enabled column 0) from one the kernel
/// lacks, but on recent kernels only for controllers with cgroup v1 support: a 6.12 Pi kernel
/// built without `CONFIG_MEMCG_V1` lists no `memory` line, enabled or not
/// (raspberrypi/linux#6980). So on v2 the root's `cgroup.controllers` is the kernel's word
/// that a controller exists, and the command line's `cgroup_disable=` that it was switched off.
fn missing_hint(host: &Host, controller: &str, where_: &Path) -> String {
    let boot = host.boot.clone().unwrap_or_else(boot::BootInfo::read);
    let switched_off = boot.cmdline.as_deref().is_some_and(|c| {
        matches!(
            boot::switches(c, controller),
            boot::Switches::Disabled { .. }
        )
    });
    let v2_root = match &host.layout {
        Layout::Unified { root } => Some(root),
        Layout::V1 { .. } => None,
    };
    let v2 = v2_root.is_some();
    let mut state = kernel_state(host.proc_cgroups.as_deref(), controller);
    if let Some(root) = v2_root {
        let in_root = std::fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|l| l.split_whitespace().any(|c| c == controller));
        if in_root {
            state = KernelState::Enabled {
                v1_hierarchy: false,
            };
        }
    }
    if switched_off && matches!(state, KernelState::NotBuilt | KernelState::Unknown) {
        state = KernelState::DisabledAtBoot;
    }
    match state {
        KernelState::DisabledAtBoot => format!(
            "the kernel has the {controller} controller disabled at boot; {}",
            boot::enable_at_boot(controller, &boot)
        ),
        KernelState::Unknown if controller == "memory" => format!(
            "the kernel may have the memory controller disabled at boot; {}",
            boot::enable_at_boot(controller, &boot)
        ),
        KernelState::NotBuilt if v2 => format!(
            "this kernel was built without the {controller} controller (neither /proc/cgroups \
             nor the root's cgroup.controllers lists it, and the command line does not disable \
             it); use a kernel that has it"
        ),
        KernelState::NotBuilt => format!(
            "this kernel has no cgroup v1 {controller} controller (/proc/cgroups does not list \
             it; kernels from 6.12 on list memory only when built with CONFIG_MEMCG_V1); boot \
             with cgroup v2 (`systemd.unified_cgroup_hierarchy=1`) or use a kernel that has it"
        ),
        KernelState::Enabled { v1_hierarchy: true } if v2 => {
            "it is bound to a cgroup v1 hierarchy; unmount that hierarchy or boot with \
             `systemd.unified_cgroup_hierarchy=1` so cgroup v2 can use it"
                .to_owned()
        }
        KernelState::Enabled { .. } | KernelState::Unknown if v2 => {
            if host.unit.is_some() {
                format!(
                    "it is not delegated to this systemd unit ({}); add `Delegate=yes` to the \
                     [Service] section of the unit and restart it",
                    where_.display()
                )
            } else {
                format!(
                    "it is not enabled in {}; enable it with `echo +{controller} > \
                     <parent>/cgroup.subtree_control` up to that cgroup",
                    where_.display()
                )
            }
        }
        KernelState::Enabled { .. } | KernelState::Unknown => format!(
            "no cgroup v1 hierarchy has it mounted; mount one with `mkdir -p \
             /sys/fs/cgroup/{controller} && mount -t cgroup -o {controller} cgroup \
             /sys/fs/cgroup/{controller}`"
        ),
    }
}

/// Waits up to `timeout` for a set of cgroup directories to have no processes; returns the
/// first one still busy after that.
fn wait_empty(
    dirs: &[PathBuf],
    timeout: std::time::Duration,
) -> Result<Option<PathBuf>, CgroupError> {
    let start = std::time::Instant::now();
    let mut delay = std::time::Duration::from_millis(1);
    loop {
        let mut busy = None;
        for d in dirs {
            if d.exists() && !read_pids_recursive(d)?.is_empty() {
                busy = Some(d.clone());
                break;
            }
        }
        if busy.is_none() || start.elapsed() >= timeout {
            return Ok(busy);
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(std::time::Duration::from_millis(50));
    }
}

/// Reads the pids of one cgroup directory and all directories below it.
fn read_pids_recursive(dir: &Path) -> Result<Vec<Pid>, CgroupError> {
    let mut out = Vec::new();
    collect_pids(dir, &mut out)?;
    Ok(out)
}

fn collect_pids(dir: &Path, out: &mut Vec<Pid>) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    match std::fs::read_to_string(&procs) {
        Ok(text) => {
            for line in text.lines() {
                if let Ok(n) = line.trim().parse::<i32>() {
                    out.push(Pid::from_raw(n));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: procs,
                source,
            })
        }
    }
    for sub in child_dirs(dir)? {
        collect_pids(&sub, out)?;
    }
    Ok(())
}

fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Removes a cgroup directory and any cgroups a container created below it, deepest first.
fn remove_tree(ops: &FsOps, dir: &Path) -> Result<(), CgroupError> {
    for sub in child_dirs(dir)? {
        remove_tree(ops, &sub)?;
    }
    // rmdir can fail with EBUSY for a moment after the last process left (the kernel
    // finishes offlining the css asynchronously), so retry briefly.
    let mut delay = std::time::Duration::from_millis(2);
    for attempt in 0..8 {
        match (ops.rmdir)(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt < 7 && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// SIGKILLs every pid, ignoring processes that are already gone.
fn kill_pids(pids: &[Pid], path: &Path) -> Result<(), CgroupError> {
    for pid in pids {
        match nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::Kill {
                    pid: pid.as_raw(),
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Writes a whole value to a cgroup file in one write(2), as the kernel wants.
fn write_file(path: &Path, data: &str) -> Result<(), std::io::Error> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(data.as_bytes())
}

#[cfg(test)]
mod tests;
