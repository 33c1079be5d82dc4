//! The cgroup v1 side (legacy and hybrid hosts): one directory per container in every v1
//! hierarchy, limits written by `v1_limits`.
//!
//! Done here rather than by libcgroups' v1 manager (which slate does not use on v1: see
//! `v1_limits`): creating the directories before limits
//! are written (it creates them only when a task is added), filling `cpuset.cpus`/`mems` of
//! the shared parent before a cpuset limit is written (it does so only on add_task, so a
//! `--cpuset-cpus` limit would hit an empty parent), naming a missing controller with how to
//! enable it, and a removal that freezes, kills, waits and deletes every hierarchy (its
//! remove gives up after ~300 ms without waiting for killed processes to go).
//! The `name=systemd` hierarchy is never touched: it is systemd's bookkeeping, and a
//! container process inherits slate's place in it, which is what makes `systemctl stop`
//! reach it. A hybrid host's cgroup2 hierarchy gets a directory like the v1 ones (nested in
//! the unit's cgroup under systemd, so its tracking still sees the container): no limit goes
//! there, it is what the container is shown as its `/sys/fs/cgroup/unified`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use super::{
    container_rel_path, join_rel, kill_pids, missing_hint, read_pids_recursive, remove_tree,
    required_controllers, wait_empty, write_file, CgroupError, FsOps, Host, Layout,
};
use super::{limits, v1_limits};

pub(super) struct V1Cgroup {
    rel: PathBuf,
    /// One per hierarchy, in the order of `Host::mounts` (a hybrid host's cgroup2 last).
    paths: Vec<PathBuf>,
    /// The name of each hierarchy's mount point (`memory`, `cpu,cpuacct`, `unified`), by
    /// which the container sees it under /sys/fs/cgroup; same order as `paths`.
    names: Vec<OsString>,
    freezer: Option<PathBuf>,
    fs: FsOps,
}

fn hierarchies(host: &Host) -> &[(String, PathBuf)] {
    match &host.layout {
        Layout::V1 { hierarchies, .. } => hierarchies,
        Layout::Unified { .. } => &[],
    }
}

impl V1Cgroup {
    fn at(host: &Host, rel: PathBuf) -> V1Cgroup {
        let mounts = host.mounts();
        let paths = mounts.iter().map(|m| join_rel(m, &rel)).collect();
        let names = mounts
            .iter()
            .map(|m| m.file_name().unwrap_or_default().to_os_string())
            .collect();
        let freezer = hierarchies(host)
            .iter()
            .find(|(c, _)| c == "freezer")
            .map(|(_, m)| join_rel(m, &rel));
        V1Cgroup {
            rel,
            paths,
            names,
            freezer,
            fs: host.fs,
        }
    }

    pub fn create(
        host: &Host,
        id: &str,
        cgroups_path: Option<&Path>,
        resources: &LinuxResources,
    ) -> Result<V1Cgroup, CgroupError> {
        let hier = hierarchies(host);
        let needed = required_controllers(resources, false);
        for c in needed.into_iter().chain(v1_limits::required(resources)) {
            if !hier.iter().any(|(name, _)| name == c) {
                return Err(CgroupError::MissingController {
                    controller: c.to_owned(),
                    hint: missing_hint(host, c, Path::new(super::host::DEFAULT_ROOT)),
                });
            }
        }
        let rel = container_rel_path(&host.base_path(), id, cgroups_path)?;
        let cg = V1Cgroup::at(host, rel);

        let mut created = Vec::new();
        let result = cg.make_dirs(&mut created).and_then(|()| {
            if let Some((_, mount)) = hier.iter().find(|(c, _)| c == "cpuset") {
                fill_cpuset(mount, &cg.rel)?;
            }
            cg.apply(hier, resources)
        });
        if let Err(e) = result {
            for dir in created.iter().rev() {
                if let Err(cleanup) = remove_tree(&cg.fs, dir) {
                    tracing::warn!(path = %dir.display(), error = %cleanup, "cannot remove cgroup after a failed create");
                }
            }
            return Err(e);
        }
        Ok(cg)
    }

    pub fn open(
        host: &Host,
        id: &str,
        cgroups_path: Option<&Path>,
    ) -> Result<Option<V1Cgroup>, CgroupError> {
        let mut bases = vec![host.base_path()];
        if host.unit.is_some() {
            bases.push(PathBuf::new());
        }
        for base in bases {
            let cg = V1Cgroup::at(host, container_rel_path(&base, id, cgroups_path)?);
            if cg.paths.iter().any(|p| p.is_dir()) {
                return Ok(Some(cg));
            }
        }
        Ok(None)
    }

    /// The cgroup at directories recorded when it was created (`paths()` then): right
    /// wherever the opener runs, another unit's cgroup included.
    pub fn open_recorded(host: &Host, recorded: &[PathBuf]) -> Option<V1Cgroup> {
        let rel = recorded.iter().find_map(|p| {
            host.mounts()
                .iter()
                .find_map(|m| p.strip_prefix(m).ok().map(Path::to_path_buf))
        })?;
        let cg = V1Cgroup::at(host, rel);
        cg.paths.iter().any(|p| p.is_dir()).then_some(cg)
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Each hierarchy's mount point name with the container's directory in it.
    pub fn named_paths(&self) -> impl Iterator<Item = (&OsStr, &Path)> {
        self.names
            .iter()
            .map(OsString::as_os_str)
            .zip(self.paths.iter().map(PathBuf::as_path))
    }

    /// Creates the container's directory in each hierarchy; records the ones it created. A
    /// directory that exists already is taken over only while no process is in it. (mkdir
    /// first: on the path of every start, the usual case costs one syscall per hierarchy.)
    fn make_dirs(&self, created: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
        let create_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CgroupError::Create { path, source }
        };
        for p in &self.paths {
            let mut made = (self.fs.mkdir)(p);
            if made
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            {
                // The shared parent (`slate`, or a cgroupsPath's) is missing: the first run.
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(create_err(parent))?;
                }
                made = (self.fs.mkdir)(p);
            }
            match made {
                Ok(()) => created.push(p.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !read_pids_recursive(p)?.is_empty() {
                        return Err(CgroupError::InUse { path: p.clone() });
                    }
                }
                Err(source) => return Err(create_err(p)(source)),
            }
        }
        Ok(())
    }

    pub fn update(&self, host: &Host, resources: &LinuxResources) -> Result<(), CgroupError> {
        self.apply(hierarchies(host), resources)
    }

    fn apply(
        &self,
        hier: &[(String, PathBuf)],
        resources: &LinuxResources,
    ) -> Result<(), CgroupError> {
        if let Some(m) = resources.memory() {
            if m.swap().is_some_and(|s| s != 0) {
                let memsw = hier.iter().find(|(c, _)| c == "memory").map(|(_, mount)| {
                    join_rel(mount, &self.rel).join("memory.memsw.limit_in_bytes")
                });
                if !memsw.is_some_and(|f| f.exists()) {
                    return Err(CgroupError::MissingController {
                        controller: "memory (swap accounting)".to_owned(),
                        hint: "this kernel has no memory.memsw.limit_in_bytes; boot with \
                               `swapaccount=1` (Raspberry Pi OS: in /boot/firmware/cmdline.txt) \
                               and reboot, or set no swap limit"
                            .to_owned(),
                    });
                }
            }
        }
        let dir = |controller: &str| {
            hier.iter()
                .find(|(c, _)| c == controller)
                .map(|(_, mount)| join_rel(mount, &self.rel))
        };
        let disable_oom_killer = resources
            .memory()
            .as_ref()
            .and_then(|m| m.disable_oom_killer())
            .unwrap_or(false);
        v1_limits::apply(&dir, resources, disable_oom_killer)?;
        match hier.iter().find(|(c, _)| c == "blkio") {
            Some((_, mount)) => limits::apply_v1(&join_rel(mount, &self.rel), resources),
            // Only reached without block I/O limits: they make blkio a required controller.
            None => Ok(()),
        }
    }

    /// Writes `pid` into `cgroup.procs` of the container's directory in every hierarchy,
    /// which is all libcgroups' v1 manager does for it (its cpuset step also fills an empty
    /// `cpuset.cpus`/`mems`, which `create` has done already), without its mountinfo reads.
    pub fn add_task(&self, pid: Pid) -> Result<(), CgroupError> {
        let value = pid.as_raw().to_string();
        for p in &self.paths {
            write_file(&p.join("cgroup.procs"), &value).map_err(|source| CgroupError::Move {
                pid: pid.as_raw(),
                path: p.clone(),
                source,
            })?;
        }
        Ok(())
    }

    pub fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        let mut all: Vec<Pid> = Vec::new();
        for p in &self.paths {
            for pid in read_pids_recursive(p)? {
                if !all.contains(&pid) {
                    all.push(pid);
                }
            }
        }
        Ok(all)
    }

    pub fn kill_all(&self) -> Result<(), CgroupError> {
        // Frozen, the set of processes cannot change (no fork, no exit, so no recycled pid)
        // between reading it and killing it; SIGKILL takes effect on thaw.
        let state = self
            .freezer
            .as_ref()
            .filter(|f| f.is_dir())
            .map(|f| f.join("freezer.state"));
        let frozen = match &state {
            Some(s) => freeze(s),
            None => false,
        };
        let result = self
            .pids()
            .and_then(|pids| kill_pids(&pids, self.paths.first().map_or(Path::new(""), |p| p)));
        if frozen {
            if let Some(s) = &state {
                match write_file(s, "THAWED") {
                    Ok(()) => {}
                    // Its processes died and its owner removed it meanwhile: nothing to thaw.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        tracing::warn!(path = %s.display(), error = %source, "cannot thaw cgroup")
                    }
                }
            }
        }
        result
    }

    pub fn remove(self) -> Result<(), CgroupError> {
        if self.rmdir_if_empty() {
            return Ok(());
        }
        let start = std::time::Instant::now();
        loop {
            self.kill_all()?;
            match wait_empty(&self.paths, std::time::Duration::from_millis(500))? {
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
        let mut first_err = None;
        for p in &self.paths {
            if let Err(e) = remove_tree(&self.fs, p) {
                // keep going: leave as little behind as possible, report the first failure
                tracing::warn!(path = %p.display(), error = %e, "cannot remove cgroup");
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl V1Cgroup {
    /// Removes every directory if the cgroup is empty already, which it is after a normal
    /// exit (the container's init was reaped, and the rest of its pid namespace died before
    /// it): the kernel refuses rmdir of a cgroup that has a process or a child cgroup, so
    /// nothing can be left running in a removed one. That spares a start's exit the freeze,
    /// the reads of every hierarchy's `cgroup.procs` (three times) and the waits. False at the
    /// first refusal: the caller kills and waits. The freezer's directory goes first, so
    /// that while it is kept the caller can still freeze whatever is left.
    fn rmdir_if_empty(&self) -> bool {
        let rest = self
            .paths
            .iter()
            .filter(|p| Some(*p) != self.freezer.as_ref());
        for p in self.freezer.iter().chain(rest) {
            match (self.fs.rmdir)(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// Freezes a v1 freezer cgroup and waits briefly for it to settle; false if it could not.
fn freeze(state: &Path) -> bool {
    if write_file(state, "FROZEN").is_err() {
        return false;
    }
    for _ in 0..100 {
        match std::fs::read_to_string(state) {
            Ok(s) if s.trim() == "FROZEN" => return true,
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            Err(_) => return true,
        }
    }
    // A task in uninterruptible sleep can keep it FREEZING; kill anyway and thaw after.
    true
}

/// A new v1 cpuset cgroup starts with empty `cpuset.cpus` and `cpuset.mems`, which refuses
/// tasks and child limits: copy them down from the nearest ancestor, as runc does.
fn fill_cpuset(mount: &Path, rel: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| CgroupError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let mut dir = mount.to_path_buf();
        let mut value = read(&dir.join(file))?;
        for comp in rel.components() {
            dir.push(comp);
            let path = dir.join(file);
            let own = read(&path)?;
            if own.trim().is_empty() {
                write_file(&path, value.trim()).map_err(|source| CgroupError::Write {
                    path: path.clone(),
                    source,
                })?;
            } else {
                value = own;
            }
        }
    }
    Ok(())
}
