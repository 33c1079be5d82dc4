//! What the host's cgroup setup looks like: v2 or v1/hybrid hierarchies, the kernel's view of
//! its controllers, and the systemd unit slate runs in, if any. Detected once per operation
//! from `/sys/fs/cgroup`, `/proc/self/cgroup`, `/proc/cgroups` and the environment; tests
//! build a `Host` by hand over a fake cgroupfs tree instead.

use std::path::{Path, PathBuf};

use super::boot::BootInfo;
use super::CgroupError;
use crate::bpf::Insn;

pub(crate) const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup hierarchies slate works with.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    /// Pure cgroup v2, mounted at `root`.
    Unified { root: PathBuf },
    /// Legacy or hybrid: each v1 controller by name with its hierarchy's mount point, and a
    /// hybrid host's cgroup2 mount. That one holds no controller slate uses, but the container
    /// gets its own cgroup there too (as runc does), so that what the container is shown of
    /// it is its own subtree, not the host's whole tree.
    V1 {
        hierarchies: Vec<(String, PathBuf)>,
        unified: Option<PathBuf>,
    },
}

/// The operations a fake cgroupfs must emulate: directory creation and removal (the kernel
/// populates a new cgroup with its interface files, and removes a cgroup that still has them),
/// writes to `cgroup.subtree_control` (the kernel refuses a controller the cgroup does not
/// have, or one for the children of a cgroup with processes of its own, and the children's
/// `cgroup.controllers` follow), and attaching a v2 device filter (only a real cgroup2
/// directory takes one).
#[derive(Clone, Copy)]
pub(crate) struct FsOps {
    pub mkdir: fn(&Path) -> std::io::Result<()>,
    pub rmdir: fn(&Path) -> std::io::Result<()>,
    pub subtree_control: fn(&Path, &str) -> std::io::Result<()>,
    pub attach_devices: fn(&Path, &[Insn]) -> Result<(), CgroupError>,
}

fn real_mkdir(p: &Path) -> std::io::Result<()> {
    std::fs::create_dir(p)
}

fn real_rmdir(p: &Path) -> std::io::Result<()> {
    std::fs::remove_dir(p)
}

impl FsOps {
    pub const REAL: FsOps = FsOps {
        mkdir: real_mkdir,
        rmdir: real_rmdir,
        subtree_control: super::write_file,
        attach_devices: super::devices::attach,
    };
}

pub(crate) struct Host {
    pub layout: Layout,
    /// `/proc/cgroups`: tells a controller disabled at boot from one never built.
    pub proc_cgroups: Option<String>,
    /// The cgroup of the systemd service slate runs in, relative to the hierarchy root, when
    /// it runs in one: container cgroups go inside it so that stopping the unit stops them.
    pub unit: Option<PathBuf>,
    /// The unit (v2) is known not to be delegated to slate (no `Delegate=yes`): systemd keeps
    /// owning its cgroup tree, and may remove what slate creates there or disable controllers
    /// slate enabled whenever it realizes the unit again (CGROUP_DELEGATION.md: "never create
    /// your own cgroups below arbitrary cgroups systemd manages").
    pub unit_not_delegated: bool,
    pub fs: FsOps,
    /// The boot configuration, for the fix in a missing-controller message. `None`: read it
    /// when a message needs it (never on the path of a start that succeeds).
    pub boot: Option<BootInfo>,
}

impl Host {
    pub fn detect() -> Result<Host, CgroupError> {
        let root = Path::new(DEFAULT_ROOT);
        let setup = libcgroups::common::get_cgroup_setup_with_root(root)?;
        let v2 = matches!(setup, libcgroups::common::CgroupSetup::Unified);
        let layout = if v2 {
            Layout::Unified {
                root: root.to_path_buf(),
            }
        } else {
            // One read of mountinfo for all controllers: libcgroups'
            // `list_supported_mount_points` reads and parses it once per controller (twelve
            // times), on the path of every container start.
            let path = Path::new("/proc/self/mountinfo");
            let mountinfo = std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            Layout::V1 {
                hierarchies: v1_hierarchies(&mountinfo),
                unified: mountinfo.lines().find_map(cgroup2_mount_point),
            }
        };
        let self_path = Path::new("/proc/self/cgroup");
        let self_cgroup =
            std::fs::read_to_string(self_path).map_err(|source| CgroupError::Read {
                path: self_path.to_path_buf(),
                source,
            })?;
        let proc_cgroups = std::fs::read_to_string("/proc/cgroups").ok();
        // systemd sets INVOCATION_ID for every process it starts as part of a service; a shell
        // in a login session has no such variable even though its cgroup is a scope.
        let in_service = std::env::var_os("INVOCATION_ID").is_some();
        let unit = if in_service {
            unit_cgroup(&self_cgroup, v2)
        } else {
            None
        };
        if let Some(u) = &unit {
            tracing::debug!(unit = %u.display(), "running in a systemd service, nesting container cgroups in it");
        }
        // v1 hosts keep their unit handling (per hierarchy; systemd's v1 delegation differs).
        // No mark may also mean a systemd older than the mark (Raspberry Pi OS bullseye's
        // 247): then systemd itself is asked, and when it cannot say, slate goes on as a
        // delegated unit would rather than refuse limits a Delegate=yes unit allows.
        let unit_not_delegated = match (&layout, &unit) {
            (Layout::Unified { root }, Some(u)) => {
                !delegated(&root.join(u))
                    && u.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(systemctl_delegate)
                        == Some(false)
            }
            _ => false,
        };
        Ok(Host {
            layout,
            proc_cgroups,
            unit,
            unit_not_delegated,
            fs: FsOps::REAL,
            boot: None,
        })
    }

    /// Unique mount points of the hierarchies slate creates cgroups in (on a hybrid host, the
    /// cgroup2 mount last).
    pub fn mounts(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::Unified { root } => vec![root.clone()],
            Layout::V1 {
                hierarchies,
                unified,
            } => {
                let mut out: Vec<PathBuf> = Vec::new();
                for m in hierarchies.iter().map(|(_, m)| m).chain(unified) {
                    if !out.contains(m) {
                        out.push(m.clone());
                    }
                }
                out
            }
        }
    }

    /// slate's parent cgroup, relative to the hierarchy root: the unit's cgroup or the root.
    pub fn base_path(&self) -> PathBuf {
        self.unit.clone().unwrap_or_default()
    }
}

/// The v1 controllers libcgroups knows, by the name its v1 manager gives them.
const V1_CONTROLLERS: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "pids",
    "perf_event",
    "memory",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// Each v1 controller's hierarchy in `/proc/self/mountinfo` text, sorted by controller.
///
/// The same lookup as libcgroups' `get_subsystem_mount_point` (0.7), which its v1 manager uses
/// to find where to write limits: the first `cgroup` mount whose directory name is the
/// controller's, or one of the usual co-mounts ("cpu,cpuacct", "net_cls,net_prio"). That
/// copes with cpu and cpuacct mounted separately as well as co-mounted, and keeps the
/// directories we create and remove identical to the ones it writes limits into.
pub(crate) fn v1_hierarchies(mountinfo: &str) -> Vec<(String, PathBuf)> {
    let mounts: Vec<PathBuf> = mountinfo.lines().filter_map(cgroup1_mount_point).collect();
    let mut out = Vec::new();
    for c in V1_CONTROLLERS {
        let names: &[&str] = match c {
            "net_cls" => &["net_cls,net_prio", "net_prio,net_cls", "net_cls"],
            "net_prio" => &["net_cls,net_prio", "net_prio,net_cls", "net_prio"],
            "cpu" => &["cpu,cpuacct", "cpu"],
            "cpuacct" => &["cpu,cpuacct", "cpuacct"],
            _ => std::slice::from_ref(&c),
        };
        // Path::ends_with compares whole components, as libcgroups' lookup does.
        if let Some(m) = mounts.iter().find(|m| names.iter().any(|n| m.ends_with(n))) {
            out.push((c.to_owned(), m.clone()));
        }
    }
    out.sort();
    out
}

/// The mount point of a mountinfo line if it is a cgroup v1 mount.
fn cgroup1_mount_point(line: &str) -> Option<PathBuf> {
    mount_point_of_type(line, "cgroup")
}

/// The mount point of a mountinfo line if it is a cgroup2 mount (a hybrid host's).
pub(crate) fn cgroup2_mount_point(line: &str) -> Option<PathBuf> {
    mount_point_of_type(line, "cgroup2")
}

/// `proc(5)`: the mount point is the fifth field; the filesystem type follows the ` - `
/// separator.
fn mount_point_of_type(line: &str, fstype: &str) -> Option<PathBuf> {
    let mut fields = line.split(' ');
    let mount_point = fields.nth(4)?;
    let mut rest = fields.skip_while(|f| *f != "-");
    rest.next()?;
    if rest.next()? != fstype {
        return None;
    }
    Some(PathBuf::from(unescape_octal(mount_point)))
}

/// Undoes mountinfo's escaping of space, tab, newline and backslash as `\NNN` (octal).
fn unescape_octal(s: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                let v = (u32::from(d[0] - b'0') << 6)
                    | (u32::from(d[1] - b'0') << 3)
                    | u32::from(d[2] - b'0');
                out.push(v as u8);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// `systemctl show -p Delegate --value UNIT`: `Some(true)`/`Some(false)`, or `None` when
/// systemctl is missing or says nothing usable. Only asked when systemd's mark is absent.
pub fn systemctl_delegate(unit: &str) -> Option<bool> {
    let out = std::process::Command::new("systemctl")
        .args(["show", "-p", "Delegate", "--value", unit])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// Whether systemd marked a unit's cgroup as delegated: `trusted.delegate` = `1` on units with
/// `Delegate=yes`, and from v251 also `user.delegate`, as systemd's own `cg_is_delegated`
/// reads them (Debian 12's, Raspberry Pi OS bookworm's and AL2023's 252 set both).
fn delegated(dir: &Path) -> bool {
    ["trusted.delegate", "user.delegate"].iter().any(|name| {
        let mut buf = [0u8; 8];
        rustix::fs::getxattr(dir, *name, &mut buf[..]).is_ok_and(|n| buf[..n] == *b"1")
    })
}

/// The systemd service this process runs in (`app.service`), when systemd started it as
/// part of one: what `slate ps` and `inspect` show, and what restarting the container means.
pub fn systemd_unit() -> Option<String> {
    std::env::var_os("INVOCATION_ID")?;
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // The v2 line where there is one, else the name=systemd hierarchy of a v1 host.
    let unit = unit_cgroup(&text, true).or_else(|| unit_cgroup(&text, false))?;
    unit.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// The cgroup of the systemd service in `/proc/self/cgroup` text: the path up to and
/// including its last `*.service` component (slate may already sit in a leaf below it).
pub(crate) fn unit_cgroup(self_cgroup: &str, v2: bool) -> Option<PathBuf> {
    let path = self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let ctrls = parts.next()?;
        let path = parts.next()?;
        let wanted = if v2 {
            ctrls.is_empty()
        } else {
            ctrls == "name=systemd"
        };
        if wanted {
            Some(path.to_owned())
        } else {
            None
        }
    })?;
    let mut unit = PathBuf::new();
    let mut found = None;
    for comp in Path::new(&path).components() {
        if let std::path::Component::Normal(n) = comp {
            unit.push(n);
            if n.to_string_lossy().ends_with(".service") {
                found = Some(unit.clone());
            }
        }
    }
    found
}
