//! The spec's `cgroup` mount: the container's own cgroups, nothing above or beside them. As in
//! runc, the type means "the container's cgroup filesystem" and the runtime picks its form for
//! the host:
//!
//! - cgroup v2 with the container's own cgroup namespace: a fresh `cgroup2` mount, which the
//!   kernel roots at the namespace's root, the container's cgroup (what runc and crun do).
//! - cgroup v2 without one: a bind of the container's cgroup directory (a fresh mount would
//!   show the host's whole tree).
//! - cgroup v1 and hybrid hosts (runc's `mountCgroupV1`): a tmpfs, and in it one directory per
//!   hierarchy named as the host's mount point (`memory`, `cpu,cpuacct`, `unified` for a
//!   hybrid host's cgroup2) with the container's own cgroup directory of that hierarchy bound
//!   onto it, plus `cpu` and `cpuacct` links to a co-mounted `cpu,cpuacct`. With `ro` (every
//!   container but a privileged one, as docker) the binds are read-only, and so is the tmpfs
//!   once every mount is made (runc leaves its tmpfs writable; nothing in it needs to be).
//!   systemd's named hierarchy is not shown: slate creates no cgroup there, and slate's own
//!   place in it is not the container's.
//!
//! Safety: the destination is resolved inside the rootfs like every other mount target (a
//! symlinked `/sys` or `/sys/fs/cgroup` in the image stays in the image), and the directories
//! and links are made relative to a descriptor of the fresh tmpfs, checked to be one, so
//! nothing of the image's is walked after it is mounted. The bind sources are host paths the
//! parent took from the cgroup it created, in the host's tree the child still sees.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use rustix::fs::{Mode as RMode, OFlags};

use super::{fd_path, locked_flags, resolve, Create, MountOp};
use crate::cgroups::View;
use crate::error::Error;

/// How the container's cgroup filesystem is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Form {
    /// A fresh `cgroup2` mount (the container has its own cgroup namespace).
    Cgroup2,
    /// A bind of the container's cgroup2 directory.
    Bind(CString),
    /// A tmpfs with one bind per hierarchy: (name, the container's directory), then links
    /// (name, target) for the controllers of a co-mounted hierarchy.
    Hierarchies {
        binds: Vec<(CString, CString)>,
        links: Vec<(CString, CString)>,
    },
}

impl Form {
    /// The form for the container's cgroups `view`; `own_namespace`: the container gets a
    /// cgroup namespace of its own, created once it sits in its cgroup.
    pub fn new(view: &View, own_namespace: bool) -> Result<Form, Error> {
        let path = |p: &std::path::Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Nul {
                what: "cgroup path",
            })
        };
        match view {
            View::Unified(_) if own_namespace => Ok(Form::Cgroup2),
            View::Unified(dir) => Ok(Form::Bind(path(dir)?)),
            View::Hierarchies(list) => {
                let mut binds: Vec<(CString, CString)> = Vec::new();
                for (name, dir) in list {
                    let n = name.as_bytes();
                    // One component of the tmpfs, whatever the host named its mount point.
                    if n.is_empty() || n == b"." || n == b".." || n.contains(&b'/') {
                        continue;
                    }
                    let name = CString::new(n).map_err(|_| Error::Nul {
                        what: "cgroup hierarchy name",
                    })?;
                    if binds.iter().any(|(b, _)| *b == name) {
                        continue;
                    }
                    binds.push((name, path(dir)?));
                }
                let mut links: Vec<(CString, CString)> = Vec::new();
                for (name, _) in &binds {
                    let bytes = name.as_bytes();
                    if !bytes.contains(&b',') {
                        continue;
                    }
                    for part in bytes.split(|b| *b == b',').filter(|p| !p.is_empty()) {
                        let taken = binds.iter().any(|(b, _)| b.as_bytes() == part)
                            || links.iter().any(|(l, _)| l.as_bytes() == part);
                        if !taken {
                            let link = CString::new(part).map_err(|_| Error::Nul {
                                what: "cgroup hierarchy name",
                            })?;
                            links.push((link, name.clone()));
                        }
                    }
                }
                Ok(Form::Hierarchies { binds, links })
            }
        }
    }
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// Child: makes the container's cgroup filesystem at `op`'s destination.
pub(super) fn mount_op(root: BorrowedFd<'_>, op: &MountOp, form: &Form) -> Result<(), Errno> {
    let target = resolve(root, &op.target, Create::Dir)?;
    match form {
        Form::Cgroup2 => {
            mount(
                Some("cgroup"),
                fd_path(&target).as_str(),
                Some("cgroup2"),
                op.flags,
                op.data.as_deref(),
            )?;
            drop(target);
        }
        Form::Bind(dir) => {
            mount(
                Some(dir.as_c_str()),
                fd_path(&target).as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            drop(target);
            let mounted = resolve(root, &op.target, Create::No)?;
            remount_bind(&mounted, op.flags)?;
        }
        Form::Hierarchies { binds, links } => {
            // Writable until `seal`: later mounts of the spec may go below it.
            mount(
                Some("tmpfs"),
                fd_path(&target).as_str(),
                Some("tmpfs"),
                op.flags - MsFlags::MS_RDONLY,
                Some("mode=755"),
            )?;
            drop(target);
            let dir = open_tmpfs(root, op)?;
            for (name, source) in binds {
                rustix::fs::mkdirat(&dir, name.as_c_str(), RMode::from_raw_mode(0o755))
                    .map_err(errno)?;
                let under = open_below(&dir, name)?;
                mount(
                    Some(source.as_c_str()),
                    fd_path(&under).as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )?;
                drop(under);
                // Looked up again, the name now leads to the bind itself.
                let mounted = open_below(&dir, name)?;
                remount_bind(&mounted, op.flags)?;
            }
            for (link, to) in links {
                rustix::fs::symlinkat(to.as_c_str(), &dir, link.as_c_str()).map_err(errno)?;
            }
        }
    }
    if let Some(flags) = op.propagation {
        let mounted = resolve(root, &op.target, Create::No)?;
        mount(
            None::<&str>,
            fd_path(&mounted).as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        )?;
    }
    Ok(())
}

/// Child, once every mount is made: the v1 tmpfs becomes read-only if the spec says `ro`.
pub(super) fn seal(root: BorrowedFd<'_>, op: &MountOp, form: &Form) -> Result<(), Errno> {
    if !matches!(form, Form::Hierarchies { .. }) || !op.flags.contains(MsFlags::MS_RDONLY) {
        return Ok(());
    }
    let dir = open_tmpfs(root, op)?;
    remount_bind(&dir, op.flags)
}

/// Applies `flags` (read-only, nosuid...) to the bind mount `fd` is the root of, keeping the
/// flags the kernel would refuse to clear.
fn remount_bind(fd: &OwnedFd, flags: MsFlags) -> Result<(), Errno> {
    let locked = locked_flags(fd.as_fd())?;
    mount(
        None::<&str>,
        fd_path(fd).as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked,
        None::<&str>,
    )
}

/// The tmpfs mounted at `op`'s destination, as a directory descriptor; refuses anything that
/// is not a tmpfs (the destination resolved elsewhere than where the tmpfs went).
fn open_tmpfs(root: BorrowedFd<'_>, op: &MountOp) -> Result<OwnedFd, Errno> {
    let path = resolve(root, &op.target, Create::No)?;
    let dir = rustix::fs::open(
        fd_path(&path).as_str(),
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        RMode::empty(),
    )
    .map_err(errno)?;
    let st = nix::sys::statfs::fstatfs(&dir)?;
    if st.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return Err(Errno::EXDEV);
    }
    Ok(dir)
}

/// `name` in `dir`, not following a symlink (there is none in a fresh tmpfs; this makes sure).
fn open_below(dir: &OwnedFd, name: &CString) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name.as_c_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        RMode::empty(),
    )
    .map_err(errno)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::path::PathBuf;

    fn c(s: &str) -> CString {
        CString::new(s).expect("no NUL")
    }

    #[test]
    fn forms_follow_the_host_and_the_namespace() {
        let dir = PathBuf::from("/sys/fs/cgroup/slate/c1");
        assert_eq!(
            Form::new(&View::Unified(dir.clone()), true).expect("form"),
            Form::Cgroup2
        );
        assert_eq!(
            Form::new(&View::Unified(dir), false).expect("form"),
            Form::Bind(c("/sys/fs/cgroup/slate/c1"))
        );
        let view = View::Hierarchies(
            [
                ("cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/slate/c1"),
                ("memory", "/sys/fs/cgroup/memory/slate/c1"),
                (
                    "net_cls,net_prio",
                    "/sys/fs/cgroup/net_cls,net_prio/slate/c1",
                ),
                // a lone net_prio hierarchy would win over the link of the same name
                ("net_prio", "/sys/fs/cgroup/net_prio/slate/c1"),
                ("memory", "/elsewhere/memory/slate/c1"),
                ("..", "/x/slate/c1"),
                ("unified", "/sys/fs/cgroup/unified/slate/c1"),
            ]
            .iter()
            .map(|(n, d)| (OsString::from(n), PathBuf::from(d)))
            .collect(),
        );
        let Form::Hierarchies { binds, links } = Form::new(&view, true).expect("form") else {
            panic!("v1 hosts get a tmpfs of binds");
        };
        let names: Vec<&str> = binds.iter().map(|(n, _)| n.to_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "cpu,cpuacct",
                "memory",
                "net_cls,net_prio",
                "net_prio",
                "unified"
            ]
        );
        assert_eq!(binds[1].1, c("/sys/fs/cgroup/memory/slate/c1"));
        assert_eq!(
            links,
            vec![
                (c("cpu"), c("cpu,cpuacct")),
                (c("cpuacct"), c("cpu,cpuacct")),
                (c("net_cls"), c("net_cls,net_prio")),
            ]
        );
    }
}
