//! Namespaces from the spec's `linux.namespaces`: which ones the container gets fresh (passed to
//! `clone(2)` directly), which ones it joins by path (`setns(2)`), and the user namespace's id
//! maps.
//!
//! Guarantees: an absent namespace type means the host's (e.g. no `network` entry = host
//! network); paths are opened in the parent, so a bad path fails before any process exists. A
//! PID namespace given by path is entered by the parent around `clone` (setns on a PID namespace
//! only affects children), every other one by the child right after `clone`. A fresh user
//! namespace gets its id maps from the (privileged) parent before the child goes on; slate itself
//! running unprivileged (rootless) is not supported.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::error::Error;
use crate::syscall::{clone_process, Cloned};

/// A namespace the child joins by path.
#[derive(Debug)]
pub(crate) struct Join {
    pub fd: OwnedFd,
    pub kind: CloneFlags,
    pub path: PathBuf,
}

/// What the spec asks for, resolved and opened.
#[derive(Debug)]
pub(crate) struct Namespaces {
    /// Flags for `clone(2)`: the namespaces created fresh.
    pub clone_flags: CloneFlags,
    /// Namespaces joined by the child, mount last so the others' paths are still reachable.
    pub joins: Vec<Join>,
    /// PID namespace entered by the parent for the duration of `clone`.
    pub pid_join: Option<Join>,
    pub uid_map: Vec<LinuxIdMapping>,
    pub gid_map: Vec<LinuxIdMapping>,
}

impl Namespaces {
    /// True if the container gets its own namespace of `kind` (fresh or joined).
    pub fn private(&self, kind: CloneFlags) -> bool {
        self.clone_flags.contains(kind)
            || self.joins.iter().any(|j| j.kind == kind)
            || (kind == CloneFlags::CLONE_NEWPID && self.pid_join.is_some())
    }

    pub fn from_spec(spec: &Spec) -> Result<Namespaces, Error> {
        let mut ns = Namespaces {
            clone_flags: CloneFlags::empty(),
            joins: Vec::new(),
            pid_join: None,
            uid_map: Vec::new(),
            gid_map: Vec::new(),
        };
        let linux = match spec.linux() {
            Some(l) => l,
            None => return Ok(ns),
        };
        for n in linux.namespaces().iter().flatten() {
            if n.typ() == LinuxNamespaceType::Time {
                // clone(2) does not take CLONE_NEWTIME, and setting the clock offsets it is for
                // is not implemented: refuse rather than silently share the host's clocks.
                return Err(Error::UnsupportedNamespace("time"));
            }
            let kind = flag(n.typ());
            match n.path() {
                None => ns.clone_flags |= kind,
                Some(path) => {
                    let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                        .map_err(|source| Error::NamespacePath {
                            path: path.clone(),
                            source,
                        })?;
                    // SAFETY: open returned a new descriptor that nothing else owns.
                    let fd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
                    let join = Join {
                        fd,
                        kind,
                        path: path.clone(),
                    };
                    if kind == CloneFlags::CLONE_NEWPID {
                        ns.pid_join = Some(join);
                    } else {
                        ns.joins.push(join);
                    }
                }
            }
        }
        // The user namespace must be joined first (it owns the others), mount last.
        ns.joins.sort_by_key(|j| match j.kind {
            k if k == CloneFlags::CLONE_NEWUSER => 0,
            k if k == CloneFlags::CLONE_NEWNS => 2,
            _ => 1,
        });
        if ns.clone_flags.contains(CloneFlags::CLONE_NEWUSER) {
            ns.uid_map = linux.uid_mappings().clone().unwrap_or_default();
            ns.gid_map = linux.gid_mappings().clone().unwrap_or_default();
        }
        Ok(ns)
    }

    /// The host's uid and gid for the container's `uid` and `gid`: themselves without a
    /// fresh user namespace, else through its maps (`None` for an id the maps leave out).
    pub fn host_ids(&self, uid: u32, gid: u32) -> (Option<u32>, Option<u32>) {
        if !self.clone_flags.contains(CloneFlags::CLONE_NEWUSER) {
            return (Some(uid), Some(gid));
        }
        (to_host(&self.uid_map, uid), to_host(&self.gid_map, gid))
    }

    /// Writes the id maps of a fresh user namespace; the child waits for this before it does
    /// anything that needs its ids.
    pub fn write_id_maps(&self, pid: Pid) -> Result<(), Error> {
        if !self.clone_flags.contains(CloneFlags::CLONE_NEWUSER) {
            return Ok(());
        }
        let write = |file: &str, body: String| -> Result<(), Error> {
            std::fs::write(format!("/proc/{pid}/{file}"), body).map_err(|source| Error::Io {
                op: "writing the user namespace id maps",
                source,
            })
        };
        let render = |maps: &[LinuxIdMapping]| {
            maps.iter()
                .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
                .collect::<String>()
        };
        write("uid_map", render(&self.uid_map))?;
        write("gid_map", render(&self.gid_map))
    }
}

/// `id` of a user namespace, as the host sees it through `maps`.
fn to_host(maps: &[LinuxIdMapping], id: u32) -> Option<u32> {
    maps.iter().find_map(|m| {
        let offset = id.checked_sub(m.container_id())?;
        (offset < m.size()).then(|| m.host_id().checked_add(offset))?
    })
}

/// The clone flag of a namespace type.
pub(crate) fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // CLONE_NEWTIME is not accepted by clone(2), only by unshare/clone3; 0x80 is its value.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(0x80),
    }
}

/// Clones the container process with `flags`, inside the PID namespace `join` when the spec
/// names one: the parent's namespace for children is switched to it around the clone and back
/// afterwards (in the parent only: the child lives in `join` and could not go back anyway).
///
/// With `cgroup` (a cgroup v2 directory), the child is born in it (`clone3`'s
/// CLONE_INTO_CGROUP) where the kernel allows; the returned flag says whether it was, else
/// the caller moves it there. Any clone3 failure falls back on clone(2): clone3 has no effect
/// when it fails, and the move then reports a real problem with the cgroup in its own words.
pub(crate) fn clone_into(
    join: Option<&Join>,
    flags: CloneFlags,
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<(Cloned, bool), Error> {
    let clone = || -> Result<(Cloned, bool), Errno> {
        if let Some(fd) = cgroup {
            match crate::syscall::clone_into_cgroup(flags.bits(), fd) {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::debug!(error = %e, "clone3 into the cgroup: falling back on clone")
                }
            }
        }
        clone_process(flags.bits()).map(|c| (c, false))
    };
    let join = match join {
        None => return clone().map_err(Error::sys("clone")),
        Some(j) => j,
    };
    let own = open(
        "/proc/self/ns/pid",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(Error::sys("opening the own pid namespace"))?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let own: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(own) };
    nix::sched::setns(&join.fd, CloneFlags::CLONE_NEWPID).map_err(|source| {
        Error::NamespacePath {
            path: join.path.clone(),
            source,
        }
    })?;
    let cloned = clone();
    if let Ok((Cloned::Child, in_cgroup)) = cloned {
        return Ok((Cloned::Child, in_cgroup));
    }
    let back = nix::sched::setns(&own, CloneFlags::CLONE_NEWPID);
    let cloned = cloned.map_err(Error::sys("clone"))?;
    if let Err(e) = back {
        // Not fatal to this container, but every later fork of ours would land in `join`.
        tracing::warn!(error = %e, "returning to the own pid namespace");
    }
    Ok(cloned)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};

    fn spec_with(types: &[LinuxNamespaceType]) -> Spec {
        let namespaces = types
            .iter()
            .map(|t| LinuxNamespaceBuilder::default().typ(*t).build().unwrap())
            .collect::<Vec<_>>();
        let linux = LinuxBuilder::default()
            .namespaces(namespaces)
            .build()
            .unwrap();
        SpecBuilder::default().linux(linux).build().unwrap()
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn absent_network_means_host() {
        let ns = Namespaces::from_spec(&spec_with(&[
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
        ]))
        .unwrap();
        assert!(ns.private(CloneFlags::CLONE_NEWPID));
        assert!(ns.private(CloneFlags::CLONE_NEWNS));
        assert!(!ns.private(CloneFlags::CLONE_NEWNET));
    }

    /// The first cgroup2 mount in mountinfo (`/sys/fs/cgroup` on a v2 host,
    /// `/sys/fs/cgroup/unified` on a hybrid one such as the CI machine's).
    fn cgroup2_mount() -> PathBuf {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        info.lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                (post.split(' ').next() == Some("cgroup2"))
                    .then(|| PathBuf::from(pre.split(' ').nth(4).unwrap_or_default()))
            })
            .expect("this test needs a cgroup2 mount (hybrid or pure v2 host)")
    }

    /// A cgroup v2 directory of the test's own, removed even when an assertion fails.
    struct TestCgroup(PathBuf);

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    /// `clone_into` with `cgroup`, a child that only waits on a pipe and exits (the test
    /// harness is multi-threaded, so it makes no call that could take a lock), and what the
    /// parent sees of it: whether clone3 placed it, and its v2 cgroup from /proc.
    fn clone_and_look(cgroup: Option<BorrowedFd<'_>>) -> (bool, String) {
        let (r, w) = nix::unistd::pipe().unwrap();
        let (cloned, in_cgroup) = clone_into(None, CloneFlags::empty(), cgroup).unwrap();
        let pid = match cloned {
            Cloned::Child => {
                drop(w);
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&r), &mut b);
                crate::syscall::exit_now(0)
            }
            Cloned::Parent(pid) => pid,
        };
        drop(r);
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        drop(w);
        let status = nix::sys::wait::waitpid(pid, None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
        let v2 = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or_default()
            .to_owned();
        (in_cgroup, v2)
    }

    fn own_v2_cgroup() -> String {
        std::fs::read_to_string("/proc/self/cgroup")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
            .unwrap()
    }

    fn open_path(p: &std::path::Path) -> OwnedFd {
        use rustix::fs::{Mode, OFlags};
        rustix::fs::open(
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
    }

    #[test]
    fn clone3_places_the_child_in_the_cgroup_it_is_given() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "creating a cgroup needs root"
        );
        let root = cgroup2_mount();
        let name = format!("slate-clone3-test-{}", std::process::id());
        let cg = TestCgroup(root.join(&name));
        std::fs::create_dir(&cg.0).unwrap();
        // O_PATH, as the runtime opens it.
        let fd = open_path(&cg.0);
        let (in_cgroup, seen) = clone_and_look(Some(fd.as_fd()));
        assert!(in_cgroup, "clone3(CLONE_INTO_CGROUP) failed on this kernel");
        assert_eq!(seen, format!("/{name}"));
    }

    #[test]
    fn without_clone3_into_the_cgroup_the_child_is_cloned_where_the_parent_is() {
        // A directory that is no cgroup: clone3 fails (EBADF), as it does with ENOSYS or
        // EINVAL on kernels without it; clone(2) then makes the child in the parent's
        // cgroup and says so, and the caller moves it.
        let tmp = tempfile::tempdir().unwrap();
        let fd = open_path(tmp.path());
        let own = own_v2_cgroup();
        assert_eq!(clone_and_look(Some(fd.as_fd())), (false, own.clone()));
        // No cgroup to clone into (cgroup v1, or clone_into_cgroup switched off).
        assert_eq!(clone_and_look(None), (false, own));
    }

    #[test]
    fn host_ids_go_through_the_maps_of_a_fresh_user_namespace() {
        let map = |c: u32, h: u32, n: u32| {
            oci_spec::runtime::LinuxIdMappingBuilder::default()
                .container_id(c)
                .host_id(h)
                .size(n)
                .build()
                .unwrap()
        };
        let mut spec = spec_with(&[LinuxNamespaceType::Mount]);
        let ns = Namespaces::from_spec(&spec).unwrap();
        assert_eq!(ns.host_ids(1000, 5), (Some(1000), Some(5)));
        spec = spec_with(&[LinuxNamespaceType::User, LinuxNamespaceType::Mount]);
        if let Some(l) = spec.linux_mut() {
            l.set_uid_mappings(Some(vec![map(0, 1000, 2000), map(5000, 100, 1)]));
            l.set_gid_mappings(Some(vec![map(0, 1000, 3000)]));
        }
        let ns = Namespaces::from_spec(&spec).unwrap();
        assert_eq!(ns.host_ids(0, 0), (Some(1000), Some(1000)));
        assert_eq!(ns.host_ids(1999, 2999), (Some(2999), Some(3999)));
        assert_eq!(ns.host_ids(2000, 3000), (None, None));
        assert_eq!(ns.host_ids(5000, 0), (Some(100), Some(1000)));
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn missing_path_fails_before_clone() {
        let ns = LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path("/nonexistent/ns/net")
            .build()
            .unwrap();
        let linux = LinuxBuilder::default()
            .namespaces(vec![ns])
            .build()
            .unwrap();
        let spec = SpecBuilder::default().linux(linux).build().unwrap();
        assert!(matches!(
            Namespaces::from_spec(&spec),
            Err(Error::NamespacePath { .. })
        ));
    }
}
