//! The cgroup v2 side: one directory per container in the unified hierarchy, controllers
//! enabled explicitly along the way, limits written by libcgroups' v2 controllers.
//!
//! libcgroups' v2 manager only creates the directory when a task is added (after limits
//! would have to be written) and enables controllers best-effort, ignoring failures; a limit
//! whose controller is not enabled then fails late with a bare ENOENT, or is not applied at
//! all. So directories and `cgroup.subtree_control` are handled here, with checks first.
//!
//! Every controller the parent offers is enabled on the way down, as runc, crun and podman do,
//! so that the container finds `memory.max`, `cpu.max`, `pids.max`, `io.*`, `cpuset.*` in its
//! own cgroup even without limits (JVMs, .NET, Go's automaxprocs and node size themselves from
//! them): the ones the limits need must succeed, the others are best effort. Where the user
//! set no limit of a kind, the tightest one of the ancestors is written into the container's
//! cgroup, so that what it reads is what binds it (see `inherit`).

use std::path::{Path, PathBuf};

use libcgroups::common::{CgroupManager, ControllerOpt};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use super::devices::{self, DeviceFilter};
use super::inherit;
use super::limits;
use super::{
    container_rel_path, join_rel, kill_pids, missing_hint, read_pids_recursive, remove_tree,
    required_controllers, wait_empty, write_file, CgroupError, FsOps, Host, Layout,
};

/// The leaf slate moves itself (and anything else in the unit's own cgroup) into, so that the
/// unit's cgroup has no processes of its own and may enable controllers for its children
/// (cgroup v2's no-internal-process rule).
pub(crate) const SUPERVISOR_LEAF: &str = "supervisor";

pub(super) struct V2Cgroup {
    path: PathBuf,
    fs: FsOps,
}

fn root_of(host: &Host) -> PathBuf {
    match &host.layout {
        Layout::Unified { root } => root.clone(),
        Layout::V1 { .. } => PathBuf::from(super::host::DEFAULT_ROOT),
    }
}

fn read_list(path: &Path) -> Result<Vec<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl V2Cgroup {
    pub fn create(
        host: &Host,
        id: &str,
        cgroups_path: Option<&Path>,
        resources: &LinuxResources,
    ) -> Result<V2Cgroup, CgroupError> {
        let root = root_of(host);
        let base = host.base_path();
        let rel = container_rel_path(&base, id, cgroups_path)?;
        let required = required_controllers(resources, true);

        // Controllers are enabled from slate's own parent down; above it (the slices of
        // systemd) is not ours to change, and a unit without delegation is reported as such.
        let start = if !base.as_os_str().is_empty() && rel.starts_with(&base) {
            base.clone()
        } else {
            PathBuf::new()
        };
        let start_dir = join_rel(&root, &start);
        let in_unit = host.unit.is_some() && start == base;
        if in_unit && host.unit_not_delegated {
            // Limits need controllers enabled in the unit's cgroup, which systemd disables
            // again on its next realization of the unit: the limit would silently go.
            if !required.is_empty() {
                return Err(CgroupError::NotDelegated {
                    unit: start_dir,
                    controllers: required.join(" "),
                });
            }
            tracing::warn!(
                "slate runs in the systemd unit {} without Delegate=yes, so the container's cgroup \
                 is created in a tree systemd owns; add Delegate=yes to the unit's [Service] section",
                start_dir.display()
            );
        }
        let available = read_list(&start_dir.join("cgroup.controllers"))?;
        for c in &required {
            if !available.iter().any(|a| a == c) {
                return Err(CgroupError::MissingController {
                    controller: (*c).to_owned(),
                    hint: missing_hint(host, c, &start_dir),
                });
            }
        }

        // Also without limits to apply, so the unit's layout does not depend on the first
        // container: a later one in the same unit that needs controllers finds it ready.
        // Not in a unit that is not delegated: no controller is enabled there, so slate may
        // stay where systemd put it, and moves nothing systemd did not give it.
        if in_unit && !host.unit_not_delegated {
            evacuate_unit(host, &start_dir)?;
        }
        // Compiled before anything is created, so that a bad rule leaves nothing behind.
        let filter = devices::compile(resources.devices().as_deref().unwrap_or_default())?;

        let leaf = join_rel(&root, &rel);
        let mut dir = start_dir.clone();
        let below: Vec<_> = rel
            .strip_prefix(&start)
            .unwrap_or(&rel)
            .components()
            .collect();
        // The subtree_control of a unit that is not delegated is systemd's (and slate, not
        // moved out of it, would make the kernel refuse anyway): no controller is enabled
        // there, so none can be below it either. (`required` is empty then, see above.)
        let enable = !(in_unit && host.unit_not_delegated);
        if enable {
            enable_controllers(host.fs, &dir, &required)?;
        }
        for (i, comp) in below.iter().enumerate() {
            dir.push(comp);
            let is_leaf = i + 1 == below.len();
            if is_leaf {
                break;
            }
            make_dir(host.fs, &dir)?;
            if enable {
                enable_controllers(host.fs, &dir, &required)?;
            }
        }

        let created = make_leaf(host.fs, &leaf)?;
        let cg = V2Cgroup {
            path: leaf.clone(),
            fs: host.fs,
        };
        let applied = apply(&root, &rel, &leaf, resources).and_then(|()| match &filter {
            DeviceFilter::AllowAll => Ok(()),
            // Before the container's process exists: it is cloned into this cgroup afterwards.
            DeviceFilter::Program(insns) => (host.fs.attach_devices)(&leaf, insns),
        });
        if let Err(e) = applied {
            if created {
                if let Err(cleanup) = remove_tree(&host.fs, &leaf) {
                    tracing::warn!(path = %leaf.display(), error = %cleanup, "cannot remove cgroup after a failed create");
                }
            }
            return Err(e);
        }
        inherit::show_ancestor_limits(&root, &leaf, resources);
        Ok(cg)
    }

    pub fn open(
        host: &Host,
        id: &str,
        cgroups_path: Option<&Path>,
    ) -> Result<Option<V2Cgroup>, CgroupError> {
        let root = root_of(host);
        let mut bases = vec![host.base_path()];
        if host.unit.is_some() {
            bases.push(PathBuf::new());
        }
        for base in bases {
            let path = join_rel(&root, &container_rel_path(&base, id, cgroups_path)?);
            if path.is_dir() {
                return Ok(Some(V2Cgroup { path, fs: host.fs }));
            }
        }
        Ok(None)
    }

    /// The cgroup at a directory recorded when it was created: right wherever the opener
    /// runs (a unit's container, opened from a shell or another unit).
    pub fn open_recorded(host: &Host, recorded: &[PathBuf]) -> Option<V2Cgroup> {
        let root = root_of(host);
        recorded
            .iter()
            .find(|p| p.starts_with(&root) && p.is_dir())
            .map(|p| V2Cgroup {
                path: p.clone(),
                fs: host.fs,
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn add_task(&self, pid: Pid) -> Result<(), CgroupError> {
        let procs = self.path.join("cgroup.procs");
        write_file(&procs, &pid.as_raw().to_string()).map_err(|source| CgroupError::Move {
            pid: pid.as_raw(),
            path: self.path.clone(),
            source,
        })
    }

    pub fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        read_pids_recursive(&self.path)
    }

    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if !self.path.exists() {
            return Ok(());
        }
        // cgroup.kill (Linux 5.14+) kills the whole subtree atomically, racing no fork and
        // never hitting a recycled pid.
        let kill = self.path.join("cgroup.kill");
        if kill.exists() {
            return write_file(&kill, "1")
                .map_err(|source| CgroupError::Write { path: kill, source });
        }
        // Older kernels: freeze so that the pid list cannot change under us, then kill.
        let freeze = self.path.join("cgroup.freeze");
        let can_freeze = freeze.exists() && write_file(&freeze, "1").is_ok();
        let result = self.pids().and_then(|p| kill_pids(&p, &self.path));
        if can_freeze {
            if let Err(source) = write_file(&freeze, "0") {
                tracing::warn!(path = %freeze.display(), error = %source, "cannot thaw cgroup");
            }
        }
        result
    }

    pub fn remove(self) -> Result<(), CgroupError> {
        if !self.path.exists() {
            return Ok(());
        }
        let dirs = [self.path.clone()];
        let start = std::time::Instant::now();
        loop {
            self.kill_all()?;
            match wait_empty(&dirs, std::time::Duration::from_millis(500))? {
                None => break,
                Some(path) if start.elapsed() > std::time::Duration::from_secs(10) => {
                    return Err(CgroupError::NotEmpty {
                        path,
                        waited_ms: start.elapsed().as_millis(),
                    })
                }
                Some(_) => {}
            }
        }
        remove_tree(&self.fs, &self.path)
    }
}

impl V2Cgroup {
    pub fn update(&self, host: &Host, resources: &LinuxResources) -> Result<(), CgroupError> {
        let root = root_of(host);
        let rel = self.path.strip_prefix(&root).unwrap_or(&self.path);
        apply(&root, rel, &self.path, resources)
    }
}

fn apply(
    root: &Path,
    rel: &Path,
    leaf: &Path,
    resources: &LinuxResources,
) -> Result<(), CgroupError> {
    if let Some(m) = resources.memory() {
        let swap_limited = m.swap().is_some_and(|s| s != 0);
        if swap_limited && !leaf.join("memory.swap.max").exists() {
            return Err(CgroupError::MissingController {
                controller: "memory (swap accounting)".to_owned(),
                hint: "this kernel has no memory.swap.max; build it with CONFIG_MEMCG_SWAP or \
                       boot with `swapaccount=1`, or set no swap limit"
                    .to_owned(),
            });
        }
    }
    let to_err = |source| CgroupError::ApplyV2 {
        path: leaf.to_path_buf(),
        source,
    };
    let manager = libcgroups::v2::manager::Manager::new(root.to_path_buf(), rel.to_path_buf())
        .map_err(to_err)?;
    let theirs = limits::for_libcgroups_v2(resources);
    let opts = ControllerOpt {
        resources: &theirs,
        // cgroup v2 has no switch for the OOM killer; memory.oom.group is what it offers.
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    };
    manager.apply(&opts).map_err(to_err)?;
    limits::apply_v2(leaf, resources)?;
    check_cpuset(leaf, resources)
}

/// On v2 the kernel takes any cpuset and quietly narrows it to what the parent allows (or
/// widens an empty result to all of that), so a container limited to cpus its parent lacks
/// (a unit with `AllowedCPUs=`) would run on others: compare what is in effect with what was
/// asked, and refuse a difference.
fn check_cpuset(leaf: &Path, resources: &LinuxResources) -> Result<(), CgroupError> {
    let Some(cpu) = resources.cpu() else {
        return Ok(());
    };
    for (asked, file) in [
        (cpu.cpus(), "cpuset.cpus.effective"),
        (cpu.mems(), "cpuset.mems.effective"),
    ] {
        let Some(asked) = asked.as_deref().filter(|a| !a.trim().is_empty()) else {
            continue;
        };
        let path = leaf.join(file);
        let effective = match std::fs::read_to_string(&path) {
            Ok(e) => e.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(CgroupError::Read { path, source }),
        };
        let want = super::normalized_cpu_list(asked);
        if want.is_some() && want != super::normalized_cpu_list(&effective) {
            return Err(CgroupError::CpusetNotInEffect {
                file,
                path: leaf.to_path_buf(),
                requested: asked.trim().to_owned(),
                effective,
            });
        }
    }
    Ok(())
}

fn make_dir(fs: FsOps, dir: &Path) -> Result<(), CgroupError> {
    match (fs.mkdir)(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Create {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Creates the container's own cgroup; reuses an existing one only if it is empty (a leftover
/// of a crashed run of the same id). Returns whether it was created here.
fn make_leaf(fs: FsOps, leaf: &Path) -> Result<bool, CgroupError> {
    match (fs.mkdir)(leaf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if read_pids_recursive(leaf)?.is_empty() {
                tracing::debug!(path = %leaf.display(), "reusing empty cgroup");
                Ok(false)
            } else {
                Err(CgroupError::InUse {
                    path: leaf.to_path_buf(),
                })
            }
        }
        Err(source) => Err(CgroupError::Create {
            path: leaf.to_path_buf(),
            source,
        }),
    }
}

/// Enables for the children of `dir` every controller `dir` has, in one write when possible:
/// each of `required` (the limits need it) must succeed, the others are best effort (one the
/// kernel refuses, say cpu next to a realtime task, or one delegated but unusable, only costs
/// the container the sight of its files).
fn enable_controllers(fs: FsOps, dir: &Path, required: &[&str]) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let available = read_list(&dir.join("cgroup.controllers"))?;
    let enabled = read_list(&file)?;
    let mut missing: Vec<&str> = required.to_vec();
    for c in &available {
        if !missing.contains(&c.as_str()) {
            missing.push(c);
        }
    }
    missing.retain(|c| !enabled.iter().any(|e| e == c));
    if missing.is_empty() {
        return Ok(());
    }
    let line = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    // Right after the unit's processes moved into their leaf, the kernel may still count them
    // for a moment and answer EBUSY (crun retries the same way); a few ms at most.
    for attempt in 0..5 {
        match (fs.subtree_control)(&file, &line) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 4 => {
                std::thread::sleep(std::time::Duration::from_millis(1 << attempt));
            }
            Err(_) => break,
        }
    }
    // The kernel rejects the whole write if one controller fails: one by one, to name a
    // required one that fails and to keep the optional ones that work.
    for c in missing {
        let Err(source) = (fs.subtree_control)(&file, &format!("+{c}")) else {
            continue;
        };
        if !required.contains(&c) {
            tracing::debug!(controller = c, path = %dir.display(), error = %source, "optional controller not enabled");
            continue;
        }
        let hint = if source.raw_os_error() == Some(libc::EBUSY) {
            "; that cgroup has processes of its own, which cgroup v2 forbids once \
             controllers are enabled for its children"
        } else {
            ""
        };
        return Err(CgroupError::EnableController {
            controller: c.to_owned(),
            path: dir.to_path_buf(),
            hint,
            source,
        });
    }
    Ok(())
}

/// Moves every process of the unit's own cgroup into `<unit>/supervisor` (slate itself, and a
/// wrapper shell if one started it), so the unit may enable controllers for its children.
fn evacuate_unit(host: &Host, unit_dir: &Path) -> Result<(), CgroupError> {
    let procs_file = unit_dir.join("cgroup.procs");
    let text = std::fs::read_to_string(&procs_file).map_err(|source| CgroupError::Read {
        path: procs_file.clone(),
        source,
    })?;
    let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    if pids.is_empty() {
        return Ok(());
    }
    let leaf = unit_dir.join(SUPERVISOR_LEAF);
    make_dir(host.fs, &leaf)?;
    let target = leaf.join("cgroup.procs");
    for pid in pids {
        match write_file(&target, &pid.to_string()) {
            Ok(()) => {}
            // it exited meanwhile
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::Move {
                    pid,
                    path: leaf,
                    source,
                })
            }
        }
    }
    tracing::debug!(unit = %unit_dir.display(), "moved the unit's processes into its supervisor leaf");
    Ok(())
}
