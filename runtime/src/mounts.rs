//! The container's filesystem: rootfs, the standard kernel filesystems, the spec's mounts,
//! `pivot_root`, masked and read-only paths.
//!
//! The parent turns the spec into a [`MountPlan`] (all parsing, validation and string building
//! happen there, where an error costs nothing); the child, already inside its own mount
//! namespace, carries the plan out with [`MountPlan::setup_rootfs`] then
//! [`MountPlan::pivot`] and [`MountPlan::finish`].
//!
//! Guarantees:
//! - Every mount lives in the container's mount namespace only: the tree is made private (or as
//!   `linux.rootfsPropagation` says) first, the overlay rootfs is mounted by the child, so a run
//!   that dies leaves no mount on the host. The one exception is a spec without a mount
//!   namespace (it shares the host's): there every mount hangs off one bind mount of the
//!   rootfs in the host's namespace ([`HostRootMount`]), which goes with the container (or
//!   with its OCI `delete`), and the child chroots instead of pivoting.
//! - Every mount target is resolved inside the rootfs, never through a symlink out of it:
//!   `openat2(RESOLVE_IN_ROOT)`, or on kernels before 5.6 a component-by-component walk that
//!   treats the rootfs as `/` for `..` and absolute links. The mount itself goes through the
//!   `/proc/self/fd/N` of the resolved descriptor, so nothing can swap the path in between.
//! - `pivot_root`, not `chroot`, and the old root is detached: nothing of the host's tree stays
//!   reachable from inside.
//! - A `cgroup` mount shows the container its own cgroups only, on v1, hybrid and v2 hosts
//!   alike (see `cgroupfs`).

mod cgroupfs;

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mkdirat, mknodat, Mode, SFlag};
use nix::sys::statvfs::{fstatvfs, FsFlags};
use oci_spec::runtime::{LinuxDeviceType, Mount, Spec};

use crate::cgroups::View;
use crate::error::{ChildFailure, Error, Stage};
use crate::syscall::{file_type, openat2_in_root};

/// Docker's default masked paths: made unreadable (a `/dev/null` bind over files, an empty
/// read-only tmpfs over directories).
pub const DOCKER_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's default read-only paths.
pub const DOCKER_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The root filesystem of a container.
#[derive(Debug, Clone)]
pub enum Rootfs {
    /// An existing directory, bind-mounted as the root.
    Dir(PathBuf),
    /// An overlay of read-only layers plus a fresh writable upper directory, mounted by the
    /// container process inside its own mount namespace onto `target` (an existing, normally
    /// empty, directory that only serves as the mount point; the host never sees the overlay).
    Overlay {
        /// Layer directories, top-most first.
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
    },
}

/// One mount to perform inside the rootfs.
#[derive(Debug)]
pub(crate) struct MountOp {
    /// The destination as the spec wrote it, for messages.
    pub destination: PathBuf,
    /// The destination relative to the rootfs.
    pub target: CString,
    pub source: Option<CString>,
    pub fstype: Option<CString>,
    pub flags: MsFlags,
    pub data: Option<CString>,
    /// Flags that a bind mount only gets by a second, remounting call.
    pub remount: Option<MsFlags>,
    pub propagation: Option<MsFlags>,
    /// Bind of a non-directory: the target is created as an empty file.
    pub file: bool,
    /// A tmpfs at /dev: populate it with the standard devices afterwards.
    pub populate_dev: bool,
    /// The container's cgroup filesystem (`type: cgroup`), made as `MountPlan::cgroupfs` says.
    pub cgroup: bool,
}

/// A device node to create.
#[derive(Debug)]
pub(crate) struct DeviceNode {
    /// Relative to the rootfs.
    pub path: CString,
    pub kind: SFlag,
    pub mode: u32,
    pub major: u64,
    pub minor: u64,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Everything the child does to the filesystem, prepared by the parent.
#[derive(Debug)]
pub(crate) struct MountPlan {
    /// Given to the whole tree before anything is mounted: never shared (see
    /// [`root_propagation`]).
    pub propagation: MsFlags,
    /// Given to the container's `/` once it is the root, when the spec asks for more.
    pub root_propagation: Option<MsFlags>,
    /// The container shares the host's mount namespace (no `mount` entry in the spec): the
    /// parent has bind-mounted the rootfs ([`MountPlan::in_host_namespace`]), the tree's
    /// propagation is the host's business, and the child chroots instead of pivoting.
    pub host_namespace: bool,
    /// Host path where the rootfs ends up mounted.
    pub root: CString,
    pub root_source: RootSource,
    pub readonly_root: bool,
    pub ops: Vec<MountOp>,
    /// Devices created in a /dev tmpfs, then the spec's `linux.devices`.
    pub devices: Vec<DeviceNode>,
    /// Relative to the new root.
    pub masked: Vec<CString>,
    pub readonly: Vec<CString>,
    /// The working directory relative to the rootfs, created if missing.
    pub cwd: CString,
    /// The form of the `cgroup` mounts, known once the container's cgroup exists.
    pub cgroupfs: cgroupfs::Form,
}

#[derive(Debug)]
pub(crate) enum RootSource {
    Bind,
    /// `base`: the directory all lower dirs are in, when they share one; the child changes
    /// into it and `data` names the lowers relative to it. `volatile`: `data` plus
    /// `,volatile`, tried first (see `overlay_mount`).
    Overlay {
        data: CString,
        volatile: Option<CString>,
        base: Option<CString>,
    },
}

/// Mounts the overlay rootfs, `volatile` where the kernel has it (Linux 5.10).
///
/// Without it, the kernel syncs the whole upper filesystem (the disk slate's store is on,
/// with everything every other program wrote) when the overlay goes away at the container's
/// exit: 20 ms on an idle VM, more than 100 ms next to a build, per run (issue 14). A run's
/// upper directory is thrown away when it ends, and after a crash slate deletes what a dead
/// run left, so no sync of it can matter; `volatile` skips those syncs (and makes fsync in
/// the container a no-op for files of its rootfs, whose content does not outlive the run
/// anyway; volumes are bind mounts and keep their fsync). An older kernel refuses the
/// unknown option with EINVAL: then the plain options.
fn overlay_mount(target: &CStr, data: &CStr, volatile: Option<&CStr>) -> nix::Result<()> {
    let overlay = |options: &CStr| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options),
        )
    };
    match volatile.map(overlay) {
        Some(Ok(())) => Ok(()),
        Some(Err(Errno::EINVAL)) | None => overlay(data),
        Some(Err(e)) => Err(e),
    }
}

/// The kernel copies mount options into one page: longer ones fail the mount.
const MAX_MOUNT_DATA: usize = 4095;

fn cstring(what: &'static str, bytes: &[u8]) -> Result<CString, Error> {
    CString::new(bytes).map_err(|_| Error::Nul { what })
}

/// `/a/b/../c` -> `a/c`, never above the root: the lexical part of resolving inside the rootfs
/// (symlinks are handled in the child, at mount time).
pub(crate) fn relative(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn rel_cstring(what: &'static str, path: &Path) -> Result<CString, Error> {
    let rel = relative(path);
    if rel.as_os_str().is_empty() {
        return cstring(what, b".");
    }
    cstring(what, rel.as_os_str().as_bytes())
}

fn parse_options(m: &Mount) -> Result<(MsFlags, MsFlags, Option<MsFlags>, Vec<String>), Error> {
    let mut set = MsFlags::empty();
    let mut clear = MsFlags::empty();
    let mut propagation = None;
    let mut data = Vec::new();
    for o in m.options().iter().flatten() {
        let (flag, on) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, true),
            "rw" => (MsFlags::MS_RDONLY, false),
            "nosuid" => (MsFlags::MS_NOSUID, true),
            "suid" => (MsFlags::MS_NOSUID, false),
            "nodev" => (MsFlags::MS_NODEV, true),
            "dev" => (MsFlags::MS_NODEV, false),
            "noexec" => (MsFlags::MS_NOEXEC, true),
            "exec" => (MsFlags::MS_NOEXEC, false),
            "sync" => (MsFlags::MS_SYNCHRONOUS, true),
            "async" => (MsFlags::MS_SYNCHRONOUS, false),
            "dirsync" => (MsFlags::MS_DIRSYNC, true),
            "mand" => (MsFlags::MS_MANDLOCK, true),
            "nomand" => (MsFlags::MS_MANDLOCK, false),
            "noatime" => (MsFlags::MS_NOATIME, true),
            "atime" => (MsFlags::MS_NOATIME, false),
            "nodiratime" => (MsFlags::MS_NODIRATIME, true),
            "diratime" => (MsFlags::MS_NODIRATIME, false),
            "relatime" => (MsFlags::MS_RELATIME, true),
            "norelatime" => (MsFlags::MS_RELATIME, false),
            "strictatime" => (MsFlags::MS_STRICTATIME, true),
            "nostrictatime" => (MsFlags::MS_STRICTATIME, false),
            "bind" => (MsFlags::MS_BIND, true),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, true),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                propagation = Some(propagation_flags(o));
                continue;
            }
            "idmap" | "ridmap" => {
                return Err(Error::MountOption {
                    destination: m.destination().clone(),
                    option: o.clone(),
                })
            }
            _ => {
                data.push(o.clone());
                continue;
            }
        };
        if on {
            set |= flag;
            clear.remove(flag);
        } else {
            clear |= flag;
            set.remove(flag);
        }
    }
    Ok((set, clear, propagation, data))
}

/// `linux.rootfsPropagation` in two steps: what the whole tree gets before the rootfs is
/// mounted, and what the container's `/` gets after `pivot_root` (and after the masked and
/// read-only paths, which bind-mount from it).
///
/// Before the pivot nothing may be shared: pivot_root(2) refuses (EINVAL) a new root, or a
/// parent of it, that is shared, and the rootfs and every mount under it would propagate
/// into the host's namespace. So `shared` is a slave of the host's tree first (it still
/// sees the host's mounts, as `shared` would) and becomes shared as the root: a peer group
/// of the container's own. `unbindable` is private first, as the rootfs is bind-mounted
/// from the tree (an unbindable source makes that EINVAL), then unbindable as the root.
/// `private` and `slave` are what they say from the start, recursively (the container has
/// no mounts of its own yet to tell `slave` from `rslave`).
fn root_propagation(spec: MsFlags) -> (MsFlags, Option<MsFlags>) {
    let rec = MsFlags::MS_REC;
    if spec.contains(MsFlags::MS_SHARED) {
        (rec | MsFlags::MS_SLAVE, Some(spec))
    } else if spec.contains(MsFlags::MS_UNBINDABLE) {
        (rec | MsFlags::MS_PRIVATE, Some(spec))
    } else if spec.contains(MsFlags::MS_SLAVE) {
        (rec | MsFlags::MS_SLAVE, None)
    } else {
        (rec | MsFlags::MS_PRIVATE, None)
    }
}

fn propagation_flags(o: &str) -> MsFlags {
    let (rec, base) = match o.strip_prefix('r') {
        Some(b) if !b.is_empty() && o != "rw" => (MsFlags::MS_REC, b),
        _ => (MsFlags::empty(), o),
    };
    let f = match base {
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => MsFlags::MS_PRIVATE,
    };
    rec | f
}

/// The standard mounts every container gets unless the spec mounts something at the same place.
fn default_mounts(
    ipc_private: bool,
) -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    MsFlags,
    &'static str,
)> {
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let mut v = vec![
        ("/proc", "proc", "proc", nse, ""),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            "mode=755,size=65536k",
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
        ("/dev/shm", "shm", "tmpfs", nse, "mode=1777,size=65536k"),
        ("/sys", "sysfs", "sysfs", nse | MsFlags::MS_RDONLY, ""),
    ];
    if ipc_private {
        v.push(("/dev/mqueue", "mqueue", "mqueue", nse, ""));
    }
    v
}

/// The spec's mounts `ops` with the `defaults` it lacks: a default goes right after the last
/// mount above it (the spec's `/dev` tmpfs before the default `/dev/pts`, which that tmpfs
/// would otherwise hide, and which could not even be created in a rootfs the container's
/// root does not own), the others first, parents before children, so that they are there
/// for the spec's mounts below them.
fn with_defaults(mut defaults: Vec<MountOp>, ops: Vec<MountOp>) -> Vec<MountOp> {
    defaults.sort_by_key(|op| relative(&op.destination).components().count());
    let mut first = Vec::new();
    // (op, whether it is a default placed here)
    let mut ops: Vec<(MountOp, bool)> = ops.into_iter().map(|op| (op, false)).collect();
    for d in defaults {
        let dest = relative(&d.destination);
        let above = |(op, _): &(MountOp, bool)| {
            let o = relative(&op.destination);
            o.components().count() > 0 && dest.starts_with(&o)
        };
        match ops.iter().rposition(above) {
            Some(i) => {
                // After the defaults already placed there, to keep their order.
                let at = i
                    + 1
                    + ops[i + 1..]
                        .iter()
                        .take_while(|(_, placed)| *placed)
                        .count();
                ops.insert(at, (d, true));
            }
            None => first.push(d),
        }
    }
    first.extend(ops.into_iter().map(|(op, _)| op));
    first
}

/// The standard character devices of a /dev tmpfs: (name, major, minor).
const STANDARD_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const DEV_LINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("pts/ptmx", "ptmx"),
    ("/proc/kcore", "core"),
];

fn check_overlay_path(p: &Path) -> Result<(), Error> {
    let bytes = p.as_os_str().as_bytes();
    if bytes.iter().any(|b| matches!(b, b',' | b':' | b'\\')) {
        return Err(Error::OverlayPath(p.to_path_buf()));
    }
    if !p.is_dir() {
        return Err(Error::RootfsMissing(p.to_path_buf()));
    }
    Ok(())
}

impl MountPlan {
    /// Validates the rootfs and the spec's mounts and prepares every string the child needs.
    pub fn new(spec: &Spec, rootfs: &Rootfs, ipc_private: bool) -> Result<MountPlan, Error> {
        let (root, root_source) = match rootfs {
            Rootfs::Dir(dir) => {
                if !dir.is_dir() {
                    return Err(Error::RootfsMissing(dir.clone()));
                }
                (dir.clone(), RootSource::Bind)
            }
            Rootfs::Overlay {
                lower,
                upper,
                work,
                target,
            } => {
                if lower.is_empty() {
                    return Err(Error::SpecMissing("overlay lower directory"));
                }
                for p in lower.iter().chain([upper, work, target]) {
                    check_overlay_path(p)?;
                }
                // The option string is limited to a page; with the lowers named relative to
                // the one directory they share (the store's short links), an image of a
                // few hundred layers fits where absolute paths would stop at ~40.
                let parent = lower[0].parent().filter(|p| !p.as_os_str().is_empty());
                let shared = parent.filter(|p| lower.iter().all(|l| l.parent() == Some(*p)));
                let lowers = match shared {
                    Some(_) => lower
                        .iter()
                        .filter_map(|p| p.file_name())
                        .map(|n| n.to_string_lossy())
                        .collect::<Vec<_>>()
                        .join(":"),
                    None => lower
                        .iter()
                        .map(|p| p.to_string_lossy())
                        .collect::<Vec<_>>()
                        .join(":"),
                };
                // The child changes directory before mounting: every other path in the
                // options must not depend on the working directory.
                let abs = |p: &Path| {
                    std::path::absolute(p).map_err(|_| Error::RootfsMissing(p.to_path_buf()))
                };
                let data = format!(
                    "lowerdir={lowers},upperdir={},workdir={}",
                    abs(upper)?.display(),
                    abs(work)?.display()
                );
                if data.len() > MAX_MOUNT_DATA {
                    return Err(Error::TooManyLayers {
                        layers: lower.len(),
                        bytes: data.len(),
                    });
                }
                let volatile = format!("{data},volatile");
                (
                    target.clone(),
                    RootSource::Overlay {
                        volatile: (volatile.len() <= MAX_MOUNT_DATA)
                            .then(|| cstring("overlay option", volatile.as_bytes()))
                            .transpose()?,
                        data: cstring("overlay option", data.as_bytes())?,
                        base: shared
                            .map(|p| cstring("overlay lower directory", p.as_os_str().as_bytes()))
                            .transpose()?,
                    },
                )
            }
        };
        let root = root
            .canonicalize()
            .map_err(|_| Error::RootfsMissing(root.clone()))?;

        let linux = spec.linux().as_ref();
        let (propagation, root_propagation) = root_propagation(
            linux
                .and_then(|l| l.rootfs_propagation().as_deref())
                .map(propagation_flags)
                .unwrap_or(MsFlags::MS_REC | MsFlags::MS_PRIVATE),
        );

        let spec_mounts = spec.mounts().clone().unwrap_or_default();
        let mut defaults = Vec::new();
        for (dest, src, fstype, flags, data) in default_mounts(ipc_private) {
            if spec_mounts
                .iter()
                .any(|m| relative(m.destination()) == relative(Path::new(dest)))
            {
                continue;
            }
            defaults.push(MountOp {
                destination: PathBuf::from(dest),
                target: rel_cstring("mount destination", Path::new(dest))?,
                source: Some(cstring("mount source", src.as_bytes())?),
                fstype: Some(cstring("mount type", fstype.as_bytes())?),
                flags,
                data: if data.is_empty() {
                    None
                } else {
                    Some(cstring("mount option", data.as_bytes())?)
                },
                remount: None,
                propagation: None,
                file: false,
                populate_dev: dest == "/dev",
                cgroup: false,
            });
        }
        // The spec's mounts in its own order, as the runtime spec says ("MUST mount entries
        // in the listed order"): ordering parents before children is the spec writer's job
        // (slate's own builder sorts them, as docker's does). The defaults it lacks go in
        // around them (see `with_defaults`).
        let ops = with_defaults(
            defaults,
            spec_mounts.iter().map(Self::op).collect::<Result<_, _>>()?,
        );

        let mut devices = Vec::new();
        for d in linux
            .and_then(|l| l.devices().as_ref())
            .into_iter()
            .flatten()
        {
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
                LinuxDeviceType::B => SFlag::S_IFBLK,
                LinuxDeviceType::P => SFlag::S_IFIFO,
                LinuxDeviceType::A => continue,
            };
            devices.push(DeviceNode {
                path: rel_cstring("device path", d.path())?,
                kind,
                mode: d.file_mode().unwrap_or(0o666) & 0o7777,
                major: d.major() as u64,
                minor: d.minor() as u64,
                uid: d.uid(),
                gid: d.gid(),
            });
        }

        let rel_list = |paths: Option<&Vec<String>>| -> Result<Vec<CString>, Error> {
            paths
                .into_iter()
                .flatten()
                .map(|p| rel_cstring("masked or read-only path", Path::new(p)))
                .collect()
        };
        let masked = rel_list(linux.and_then(|l| l.masked_paths().as_ref()))?;
        let readonly = rel_list(linux.and_then(|l| l.readonly_paths().as_ref()))?;
        let cwd = spec
            .process()
            .as_ref()
            .map(|p| p.cwd().clone())
            .unwrap_or_else(|| PathBuf::from("/"));
        if !cwd.is_absolute() {
            return Err(Error::RelativeCwd(cwd));
        }

        Ok(MountPlan {
            propagation,
            root_propagation,
            host_namespace: false,
            root: cstring("rootfs path", root.as_os_str().as_bytes())?,
            root_source,
            readonly_root: spec
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false),
            ops,
            devices,
            masked,
            readonly,
            cwd: rel_cstring("cwd", &cwd)?,
            cgroupfs: cgroupfs::Form::Cgroup2,
        })
    }

    /// Makes the `cgroup` mounts show the container's cgroups `view` (the directories of the
    /// cgroup the parent has just created); `own_namespace`: the container creates a cgroup
    /// namespace of its own once it sits in that cgroup.
    pub fn show_cgroups(&mut self, view: &View, own_namespace: bool) -> Result<(), Error> {
        self.cgroupfs = cgroupfs::Form::new(view, own_namespace)?;
        Ok(())
    }

    fn op(m: &Mount) -> Result<MountOp, Error> {
        let dest = m.destination();
        if !dest.is_absolute() {
            return Err(Error::RelativeMountDestination(dest.clone()));
        }
        let (set, _clear, propagation, data) = parse_options(m)?;
        let typ = m.typ().clone().unwrap_or_default();
        let bind = set.contains(MsFlags::MS_BIND) || typ == "bind";
        let mut file = false;
        let (flags, remount) = if bind {
            let source = m
                .source()
                .clone()
                .ok_or(Error::SpecMissing("source for a bind mount"))?;
            let meta = std::fs::metadata(&source).map_err(|e| Error::BindSource {
                path: source.clone(),
                source: e,
            })?;
            file = !meta.is_dir();
            let base = MsFlags::MS_BIND | (set & MsFlags::MS_REC);
            let extra = set - (MsFlags::MS_BIND | MsFlags::MS_REC);
            let remount = if extra.is_empty() {
                None
            } else {
                Some(extra | MsFlags::MS_BIND | MsFlags::MS_REMOUNT)
            };
            (base, remount)
        } else {
            (set, None)
        };
        let cgroup = typ == "cgroup" && !bind;
        let fstype = match typ.as_str() {
            "" | "bind" | "none" => None,
            t => Some(cstring("mount type", t.as_bytes())?),
        };
        let source = match m.source() {
            Some(s) => Some(cstring("mount source", s.as_os_str().as_bytes())?),
            None => Some(cstring("mount source", typ.as_bytes())?),
        };
        let populate_dev = relative(dest) == Path::new("dev") && typ == "tmpfs";
        Ok(MountOp {
            destination: dest.clone(),
            target: rel_cstring("mount destination", dest)?,
            source,
            fstype,
            flags,
            data: if data.is_empty() || bind {
                None
            } else {
                Some(cstring("mount option", data.join(",").as_bytes())?)
            },
            remount,
            propagation,
            file,
            populate_dev,
            cgroup,
        })
    }

    /// Describes step `index` of `stage` for an error message.
    pub fn describe(&self, stage: Stage, index: u32) -> String {
        let i = index as usize;
        let lossy = |c: &CString| format!("/{}", c.to_string_lossy());
        match stage {
            Stage::Mount => match self.ops.get(i) {
                Some(op) if op.cgroup => {
                    format!(
                        "mount the container's cgroups at {}",
                        op.destination.display()
                    )
                }
                Some(op) => format!(
                    "mount {} at {}",
                    op.fstype
                        .as_ref()
                        .map(|t| t.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "bind".to_string()),
                    op.destination.display()
                ),
                None => "mount".to_string(),
            },
            Stage::CreateDevice => match self.devices.get(i) {
                Some(d) => format!("create device {}", lossy(&d.path)),
                None => "create the standard devices in /dev".to_string(),
            },
            Stage::MaskPath => self
                .masked
                .get(i)
                .map(|p| format!("mask {}", lossy(p)))
                .unwrap_or_default(),
            Stage::ReadonlyPath => self
                .readonly
                .get(i)
                .map(|p| format!("make {} read-only", lossy(p)))
                .unwrap_or_default(),
            Stage::MountRootfs => format!("mount the rootfs at {}", self.root.to_string_lossy()),
            Stage::OpenRootfs => format!("open the rootfs {}", self.root.to_string_lossy()),
            Stage::Cwd => format!("create the working directory {}", lossy(&self.cwd)),
            Stage::PivotRoot if index == 1 => "chroot into the rootfs".to_string(),
            Stage::MountPropagation if index == 1 => {
                "give / the propagation of linux.rootfsPropagation".to_string()
            }
            _ => String::new(),
        }
    }

    /// Child, in its new mount namespace: propagation, rootfs, every mount, devices, cwd.
    /// Returns the rootfs directory, for [`MountPlan::pivot`].
    pub fn setup_rootfs(&self) -> Result<OwnedFd, ChildFailure> {
        if !self.host_namespace {
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                self.propagation,
                None::<&str>,
            )
            .map_err(fail(Stage::MountPropagation, 0))?;
        }
        match &self.root_source {
            // Bound by the parent already.
            RootSource::Bind if self.host_namespace => Ok(()),
            RootSource::Bind => mount(
                Some(self.root.as_c_str()),
                self.root.as_c_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            ),
            RootSource::Overlay {
                data,
                volatile,
                base,
            } => {
                if let Some(b) = base {
                    nix::unistd::chdir(b.as_c_str()).map_err(fail(Stage::MountRootfs, 0))?;
                }
                overlay_mount(&self.root, data, volatile.as_deref())
            }
        }
        .map_err(fail(Stage::MountRootfs, 0))?;
        let root = open_dir(None, &self.root).map_err(fail(Stage::OpenRootfs, 0))?;

        for (i, op) in self.ops.iter().enumerate() {
            let at = fail(Stage::Mount, i as u32);
            if op.cgroup {
                cgroupfs::mount_op(root.as_fd(), op, &self.cgroupfs).map_err(at)?;
                continue;
            }
            let create = if op.file { Create::File } else { Create::Dir };
            let target = resolve(root.as_fd(), &op.target, create).map_err(at)?;
            mount(
                op.source.as_deref(),
                fd_path(&target).as_str(),
                op.fstype.as_deref(),
                op.flags,
                op.data.as_deref(),
            )
            .map_err(at)?;
            drop(target);
            if op.remount.is_some() || op.propagation.is_some() {
                // The descriptor above names the directory under the new mount; look again to
                // reach the mount itself.
                let mounted = resolve(root.as_fd(), &op.target, Create::No).map_err(at)?;
                let path = fd_path(&mounted);
                if let Some(flags) = op.remount {
                    let locked = locked_flags(mounted.as_fd()).map_err(at)?;
                    mount(
                        None::<&str>,
                        path.as_str(),
                        None::<&str>,
                        flags | locked,
                        None::<&str>,
                    )
                    .map_err(at)?;
                }
                if let Some(flags) = op.propagation {
                    mount(
                        None::<&str>,
                        path.as_str(),
                        None::<&str>,
                        flags,
                        None::<&str>,
                    )
                    .map_err(at)?;
                }
            }
            if op.populate_dev {
                populate_dev(root.as_fd(), &op.target)
                    .map_err(fail(Stage::CreateDevice, u32::MAX))?;
            }
        }
        for (i, op) in self.ops.iter().enumerate() {
            if op.cgroup {
                cgroupfs::seal(root.as_fd(), op, &self.cgroupfs)
                    .map_err(fail(Stage::Mount, i as u32))?;
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            create_device(root.as_fd(), d).map_err(fail(Stage::CreateDevice, i as u32))?;
        }
        resolve(root.as_fd(), &self.cwd, Create::Dir).map_err(fail(Stage::Cwd, 0))?;
        Ok(root)
    }

    /// Child: `pivot_root` into the rootfs and detach the old root (chroot in the host's
    /// mount namespace), then make the root read-only if the spec asks.
    pub fn pivot(&self, root: OwnedFd) -> Result<(), ChildFailure> {
        let at = fail(Stage::PivotRoot, 0);
        nix::unistd::fchdir(root.as_raw_fd()).map_err(at)?;
        if self.host_namespace {
            // pivot_root would move the root of every process of the host's namespace.
            // chroot, as runc and crun do here: sharing the host's mount namespace means
            // that a process allowed to chroot again can reach the host's tree.
            nix::unistd::chroot(".").map_err(fail(Stage::PivotRoot, 1))?;
        } else {
            self.pivot_here().map_err(at)?;
        }
        nix::unistd::chdir("/").map_err(at)?;
        drop(root);
        if self.readonly_root {
            let at = fail(Stage::ReadonlyRoot, 0);
            let root = open_dir(None, c"/").map_err(at)?;
            let locked = locked_flags(root.as_fd()).map_err(at)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | locked,
                None::<&str>,
            )
            .map_err(at)?;
        }
        Ok(())
    }

    /// `pivot_root` into the current directory, the rootfs, and detach the old root.
    fn pivot_here(&self) -> Result<(), Errno> {
        // pivot_root(".", ".") stacks the old root on top of the new one; unmounting "." then
        // removes the old root without needing a directory for it inside the rootfs.
        nix::unistd::pivot_root(".", ".")?;
        // Slave first, so that detaching does not propagate an unmount to the host.
        mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )?;
        umount2(".", MntFlags::MNT_DETACH)
    }

    /// Parent, for a container without a mount namespace of its own: bind-mounts the rootfs
    /// onto itself in the host's namespace, where the container's mounts then go, so that
    /// they all hang off one mount slate can remove again ([`HostRootMount`]). Only a
    /// directory rootfs: an overlay would be visible on the host.
    pub fn in_host_namespace(&mut self) -> Result<HostRootMount, Error> {
        if !matches!(self.root_source, RootSource::Bind) {
            return Err(Error::NeedsNamespace {
                what: "an overlay rootfs",
                namespace: "mount",
            });
        }
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(self.root.as_bytes()));
        mount(
            Some(path.as_path()),
            path.as_path(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(Error::sys(
            "bind-mounting the rootfs in the host's mount namespace",
        ))?;
        let mut bound = HostRootMount {
            path,
            mount_id: 0,
            keep: false,
        };
        // A failure here drops `bound`, and that unmounts the top mount at the path (the one
        // just made: nothing else can have been stacked on it yet).
        bound.mount_id = top_mount_id(&bound.path)?;
        self.host_namespace = true;
        Ok(bound)
    }

    /// Child, after `pivot`: masked and read-only paths. Paths that do not exist are skipped,
    /// as runc does (a kernel without /proc/acpi has nothing to hide).
    pub fn finish(&self) -> Result<(), ChildFailure> {
        let root = open_dir(None, c"/").map_err(fail(Stage::MaskPath, 0))?;
        for (i, p) in self.masked.iter().enumerate() {
            let at = fail(Stage::MaskPath, i as u32);
            let target = match resolve(root.as_fd(), p, Create::No) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(at(e)),
            };
            let is_dir = file_type(target.as_fd()).map_err(at)? == libc::S_IFDIR;
            let path = fd_path(&target);
            if is_dir {
                mount(
                    Some("tmpfs"),
                    path.as_str(),
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    Some("size=0"),
                )
            } else {
                mount(
                    Some("/dev/null"),
                    path.as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
            }
            .map_err(at)?;
        }
        for (i, p) in self.readonly.iter().enumerate() {
            let at = fail(Stage::ReadonlyPath, i as u32);
            let target = match resolve(root.as_fd(), p, Create::No) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(at(e)),
            };
            let path = fd_path(&target);
            mount(
                Some(path.as_str()),
                path.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(at)?;
            drop(target);
            let mounted = resolve(root.as_fd(), p, Create::No).map_err(at)?;
            let locked = locked_flags(mounted.as_fd()).map_err(at)?;
            mount(
                None::<&str>,
                fd_path(&mounted).as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked,
                None::<&str>,
            )
            .map_err(at)?;
        }
        if let Some(flags) = self.root_propagation {
            mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
                .map_err(fail(Stage::MountPropagation, 1))?;
        }
        Ok(())
    }
}

/// The bind mount of a rootfs in the host's mount namespace ([`MountPlan::in_host_namespace`]):
/// every mount of the container hangs off it, and detaching it removes them all, whatever
/// the host's mount under the rootfs was (that one stays). Dropping it does that, unless
/// [`HostRootMount::keep`] leaves it for a later [`unmount_host_rootfs`].
#[derive(Debug)]
pub struct HostRootMount {
    path: PathBuf,
    mount_id: u64,
    keep: bool,
}

impl HostRootMount {
    /// Where it is mounted and its mount id, for [`unmount_host_rootfs`].
    pub fn id(&self) -> (&Path, u64) {
        (&self.path, self.mount_id)
    }

    /// Leaves the mount in place (an OCI `create`, whose `delete` removes it).
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for HostRootMount {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(e) = unmount_host_rootfs(&self.path, self.mount_id) {
            tracing::warn!(path = %self.path.display(), error = %e, "removing the rootfs mount");
        }
    }
}

/// Detaches the rootfs mount [`HostRootMount::id`] named, with everything mounted under it.
/// Only while it is the top mount at `path` (mount id `mount_id`): if someone removed it
/// already, what is there now is not slate's to remove. Returns whether it did.
pub fn unmount_host_rootfs(path: &Path, mount_id: u64) -> Result<bool, Error> {
    match top_mount_id(path) {
        Ok(id) if id == mount_id => {}
        _ => return Ok(false),
    }
    umount2(path, MntFlags::MNT_DETACH).map_err(Error::sys(
        "unmounting the rootfs from the host's mount namespace",
    ))?;
    Ok(true)
}

/// The id of the mount `path` is on (the top one where several are stacked), by statx:
/// Linux 5.8 and later.
fn top_mount_id(path: &Path) -> Result<u64, Error> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let st = statx(CWD, path, AtFlags::empty(), StatxFlags::MNT_ID)
        .map_err(|e| Error::sys("statx of the rootfs")(Errno::from_raw(e.raw_os_error())))?;
    if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        return Err(Error::sys(
            "statx of the rootfs (mount id: Linux 5.8 or later)",
        )(Errno::ENOSYS));
    }
    Ok(st.stx_mnt_id)
}

fn fail(stage: Stage, index: u32) -> impl Fn(Errno) -> ChildFailure + Copy {
    move |e| ChildFailure {
        stage,
        index,
        errno: e as i32,
    }
}

/// The magic link through which a mount reaches exactly the object `fd` resolved to.
fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Mount flags the kernel refuses to clear on a remount (they are locked in a user namespace,
/// and dropping them by accident would be a silent loosening anyway).
fn locked_flags(fd: BorrowedFd<'_>) -> Result<MsFlags, Errno> {
    let st = fstatvfs(fd)?;
    let f = st.flags();
    let mut m = MsFlags::empty();
    for (s, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(s) {
            m |= ms;
        }
    }
    Ok(m)
}

fn open_dir(dir: Option<BorrowedFd<'_>>, path: &CStr) -> Result<OwnedFd, Errno> {
    let fd = openat(
        dir.map(|d| d.as_raw_fd()),
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    No,
    Dir,
    File,
}

/// Opens (`O_PATH`) `path` inside `root` as if `root` were `/`, creating missing components
/// (directories, and the last one as `create` says).
pub(crate) fn resolve(root: BorrowedFd<'_>, path: &CStr, create: Create) -> Result<OwnedFd, Errno> {
    match open_in_root(root, path) {
        Err(Errno::ENOENT) if create != Create::No => {}
        other => return other,
    }
    // Create one component at a time, each inside the resolved parent, so a symlink met on
    // the way is followed inside the root and never out of it.
    let bytes = path.to_bytes();
    let mut parent = open_in_root(root, c".")?;
    let mut end = 0;
    while end < bytes.len() {
        let start = end;
        end = bytes[start..]
            .iter()
            .position(|b| *b == b'/')
            .map(|p| start + p)
            .unwrap_or(bytes.len());
        let comp = &bytes[start..end];
        end += 1;
        if comp.is_empty() || comp == b"." {
            continue;
        }
        let prefix = CString::new(&bytes[..end.min(bytes.len())]).map_err(|_| Errno::EINVAL)?;
        let last = end >= bytes.len();
        match open_in_root(root, &prefix) {
            Ok(fd) => {
                parent = fd;
                continue;
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let name = CString::new(comp).map_err(|_| Errno::EINVAL)?;
        if last && create == Create::File {
            let fd = openat(
                Some(parent.as_raw_fd()),
                name.as_c_str(),
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            );
            // Through an O_PATH parent, *at calls need the magic link of the parent.
            let fd = match fd {
                Err(Errno::EBADF) => openat(
                    None,
                    format!("{}/{}", fd_path(&parent), name.to_string_lossy()).as_str(),
                    OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                ),
                other => other,
            }?;
            let _ = nix::unistd::close(fd);
        } else {
            match mkdirat(
                Some(parent.as_raw_fd()),
                name.as_c_str(),
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        parent = open_in_root(root, &prefix)?;
    }
    Ok(parent)
}

/// One lookup inside the root: `openat2(RESOLVE_IN_ROOT)`, or the careful walk where the
/// kernel lacks it.
fn open_in_root(root: BorrowedFd<'_>, path: &CStr) -> Result<OwnedFd, Errno> {
    match openat2_in_root(root, path, libc::O_PATH) {
        Err(Errno::ENOSYS) => walk_in_root(root, path),
        other => other,
    }
}

/// Fallback for kernels before 5.6: walk the path one component at a time with `O_NOFOLLOW`,
/// expanding symlinks ourselves: absolute targets restart from `root`, `..` never climbs above
/// it. Like openat2, at most 40 links are followed.
fn walk_in_root(root: BorrowedFd<'_>, path: &CStr) -> Result<OwnedFd, Errno> {
    let dup = |fd: BorrowedFd<'_>| fd.try_clone_to_owned().map_err(|_| Errno::EMFILE);
    let mut stack: Vec<OwnedFd> = vec![dup(root)?];
    let mut pending: Vec<Vec<u8>> = split(path.to_bytes()).into_iter().rev().collect();
    let mut links = 0;
    while let Some(comp) = pending.pop() {
        match comp.as_slice() {
            b"." => continue,
            b".." => {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            _ => {}
        }
        let cur = stack.last().ok_or(Errno::EINVAL)?;
        let name = CString::new(comp.clone()).map_err(|_| Errno::EINVAL)?;
        let fd = openat(
            Some(cur.as_raw_fd()),
            name.as_c_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if file_type(fd.as_fd())? != libc::S_IFLNK {
            stack.push(fd);
            continue;
        }
        links += 1;
        if links > 40 {
            return Err(Errno::ELOOP);
        }
        let target = nix::fcntl::readlinkat(Some(fd.as_raw_fd()), "")?;
        let target = target.as_bytes();
        if target.first() == Some(&b'/') {
            stack.truncate(1);
        }
        for c in split(target).into_iter().rev() {
            pending.push(c);
        }
    }
    stack.pop().ok_or(Errno::EINVAL)
}

fn split(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| c.to_vec())
        .collect()
}

/// Fills a fresh /dev tmpfs: the standard devices (mknod, or a bind of the host's node where
/// mknod is not allowed, as in a user namespace) and the standard links.
fn populate_dev(root: BorrowedFd<'_>, dev: &CStr) -> Result<(), Errno> {
    let dir = resolve(root, dev, Create::No)?;
    // mknodat and symlinkat need a real directory descriptor, not an O_PATH one.
    let dir_path = fd_path(&dir);
    let dirfd = openat(
        None,
        dir_path.as_str(),
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    let dirfd = unsafe { OwnedFd::from_raw_fd(dirfd) };
    for (name, major, minor) in STANDARD_DEVICES {
        match mknodat(
            Some(dirfd.as_raw_fd()),
            *name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(*major, *minor),
        ) {
            Ok(()) => {}
            Err(Errno::EPERM) => {
                let f = openat(
                    Some(dirfd.as_raw_fd()),
                    *name,
                    OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o666),
                )?;
                let _ = nix::unistd::close(f);
                let target = format!("{dir_path}/{name}");
                mount(
                    Some(format!("/dev/{name}").as_str()),
                    target.as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )?;
            }
            Err(e) => return Err(e),
        }
    }
    for (target, name) in DEV_LINKS {
        match nix::unistd::symlinkat(*target, Some(dirfd.as_raw_fd()), *name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn create_device(root: BorrowedFd<'_>, d: &DeviceNode) -> Result<(), Errno> {
    let rel = d.path.to_bytes();
    let (parent, name) = match rel.iter().rposition(|b| *b == b'/') {
        Some(p) => (&rel[..p], &rel[p + 1..]),
        None => (&b"."[..], rel),
    };
    let parent = CString::new(parent).map_err(|_| Errno::EINVAL)?;
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let dir = resolve(root, &parent, Create::Dir)?;
    let dirfd = openat(
        None,
        fd_path(&dir).as_str(),
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    let dirfd = unsafe { OwnedFd::from_raw_fd(dirfd) };
    match mknodat(
        Some(dirfd.as_raw_fd()),
        name.as_c_str(),
        d.kind,
        Mode::from_bits_truncate(d.mode),
        makedev(d.major, d.minor),
    ) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    if d.uid.is_some() || d.gid.is_some() {
        nix::unistd::fchownat(
            Some(dirfd.as_raw_fd()),
            name.as_c_str(),
            d.uid.map(nix::unistd::Uid::from_raw),
            d.gid.map(nix::unistd::Gid::from_raw),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn relative_never_climbs_out() {
        assert_eq!(relative(Path::new("/../../etc/x")), PathBuf::from("etc/x"));
        assert_eq!(relative(Path::new("/a/b/../c")), PathBuf::from("a/c"));
        assert_eq!(relative(Path::new("/")), PathBuf::from(""));
    }

    #[test]
    fn overlay_lowers_in_one_directory_are_named_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path().join("l");
        let mut lower = Vec::new();
        for i in 0..250 {
            let p = l.join(format!("{i:012x}"));
            std::fs::create_dir_all(&p).unwrap();
            lower.push(p);
        }
        let (upper, work, target) = (
            dir.path().join("u"),
            dir.path().join("w"),
            dir.path().join("t"),
        );
        for d in [&upper, &work, &target] {
            std::fs::create_dir(d).unwrap();
        }
        let plan = |lower: Vec<PathBuf>| {
            MountPlan::new(
                &Spec::default(),
                &Rootfs::Overlay {
                    lower,
                    upper: upper.clone(),
                    work: work.clone(),
                    target: target.clone(),
                },
                true,
            )
        };
        // 250 layers: far past what absolute paths would fit in a page.
        let p = plan(lower.clone()).unwrap();
        match &p.root_source {
            RootSource::Overlay {
                data,
                volatile,
                base,
            } => {
                assert_eq!(
                    volatile.as_deref().map(|v| v.to_str().unwrap()),
                    Some(format!("{},volatile", data.to_str().unwrap()).as_str())
                );
                let data = data.to_str().unwrap();
                assert!(
                    data.starts_with("lowerdir=000000000000:000000000001:"),
                    "{data}"
                );
                assert_eq!(
                    base.as_deref(),
                    Some(CString::new(l.as_os_str().as_bytes()).unwrap().as_c_str())
                );
            }
            RootSource::Bind => panic!("not an overlay"),
        }
        // Too many for any naming: a clear error, not a failed mount in the child.
        let mut many = lower.clone();
        for i in 250..400 {
            let p = l.join(format!("{i:012x}"));
            std::fs::create_dir_all(&p).unwrap();
            many.push(p);
        }
        assert!(matches!(
            plan(many),
            Err(Error::TooManyLayers { layers: 400, .. })
        ));
        // Lowers in different directories stay absolute.
        let other = dir.path().join("elsewhere");
        std::fs::create_dir(&other).unwrap();
        let p = plan(vec![lower[0].clone(), other]).unwrap();
        assert!(matches!(
            &p.root_source,
            RootSource::Overlay { base: None, .. }
        ));
    }

    #[test]
    fn defaults_go_after_the_spec_mounts_above_them() {
        let mount = |dest: &str, typ: &str| {
            oci_spec::runtime::MountBuilder::default()
                .destination(dest)
                .typ(typ)
                .source(typ)
                .build()
                .unwrap()
        };
        let spec = oci_spec::runtime::SpecBuilder::default()
            .mounts(vec![
                mount("/proc", "proc"),
                mount("/dev", "tmpfs"),
                mount("/sys/fs/cgroup", "cgroup"),
                mount("/tmp", "tmpfs"),
            ])
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let plan = MountPlan::new(&spec, &Rootfs::Dir(dir.path().to_path_buf()), true).unwrap();
        let order: Vec<_> = plan
            .ops
            .iter()
            .map(|op| op.destination.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            order,
            [
                "/sys",
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys/fs/cgroup",
                "/tmp"
            ]
        );
    }

    #[test]
    fn nothing_is_shared_before_the_pivot() {
        let (rec, shared, slave, private, unbindable) = (
            MsFlags::MS_REC,
            MsFlags::MS_SHARED,
            MsFlags::MS_SLAVE,
            MsFlags::MS_PRIVATE,
            MsFlags::MS_UNBINDABLE,
        );
        assert_eq!(root_propagation(shared), (rec | slave, Some(shared)));
        assert_eq!(
            root_propagation(rec | shared),
            (rec | slave, Some(rec | shared))
        );
        assert_eq!(
            root_propagation(unbindable),
            (rec | private, Some(unbindable))
        );
        assert_eq!(root_propagation(slave), (rec | slave, None));
        assert_eq!(root_propagation(rec | private), (rec | private, None));
    }

    #[test]
    fn propagation_names() {
        assert_eq!(
            propagation_flags("rprivate"),
            MsFlags::MS_REC | MsFlags::MS_PRIVATE
        );
        assert_eq!(propagation_flags("slave"), MsFlags::MS_SLAVE);
        assert_eq!(
            propagation_flags("rshared"),
            MsFlags::MS_REC | MsFlags::MS_SHARED
        );
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn walk_stays_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(dir.path().join("outside"), b"host").unwrap();
        std::fs::write(root.join("etc/inside"), b"container").unwrap();
        // Absolute and relative escapes both land inside the root.
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../etc", root.join("etc/rel")).unwrap();
        let rootfd = open_dir(None, &CString::new(root.as_os_str().as_bytes()).unwrap()).unwrap();
        for p in [c"abs/inside", c"etc/rel/inside", c"../etc/inside"] {
            for f in [walk_in_root, open_in_root] {
                let fd = f(rootfd.as_fd(), p).unwrap();
                let real = std::fs::read_link(fd_path(&fd)).unwrap();
                assert_eq!(
                    real,
                    root.join("etc/inside").canonicalize().unwrap(),
                    "{p:?}"
                );
            }
        }
        std::os::unix::fs::symlink("../outside", root.join("escape")).unwrap();
        assert_eq!(
            walk_in_root(rootfd.as_fd(), c"escape").err(),
            Some(Errno::ENOENT)
        );
        assert_eq!(
            open_in_root(rootfd.as_fd(), c"escape").err(),
            Some(Errno::ENOENT)
        );
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn resolve_creates_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink("/", root.join("up")).unwrap();
        let rootfd = open_dir(None, &CString::new(root.as_os_str().as_bytes()).unwrap()).unwrap();
        resolve(rootfd.as_fd(), c"up/new/dir", Create::Dir).unwrap();
        assert!(root.join("new/dir").is_dir());
        resolve(rootfd.as_fd(), c"up/file", Create::File).unwrap();
        assert!(root.join("file").is_file());
    }
}
