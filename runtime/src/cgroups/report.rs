//! The cgroup setup as `slate doctor` shows it: the mode and where its hierarchies are, the
//! systemd unit container cgroups would nest in (and whether systemd marked it delegated), and
//! for each controller slate uses whether a container would get it, with the fix `create`
//! would name when it is missing. Nothing is created or written: it reads what `create` reads
//! and asks the same questions, so the answers cannot drift from what a run meets.

use std::path::{Path, PathBuf};

use super::devices::{self, DeviceFilter};
use super::host::DEFAULT_ROOT;
use super::{join_rel, missing_hint, CgroupError, Host, Layout};
use crate::bpf;

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pure cgroup v2 (what systemd hosts boot by default).
    Unified,
    /// v1 controllers, plus a cgroup2 mount that holds none of them.
    Hybrid,
    /// v1 only.
    Legacy,
}

/// Whether containers get a controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Where it was found: the v1 hierarchy's mount point, or the v2 cgroup whose
    /// `cgroup.controllers` lists it (the one container cgroups are created under).
    Available(PathBuf),
    /// Why not, and how to enable it (the same text a `create` that needs it fails with).
    Missing(String),
}

/// One controller slate uses.
#[derive(Debug, Clone)]
pub struct Controller {
    /// Its name on this hierarchy (`io` on v2 is `blkio` on v1).
    pub name: &'static str,
    /// Every container needs it (v1's devices controller enforces the device allowlist);
    /// the others only containers with a limit of theirs.
    pub every_container: bool,
    pub availability: Availability,
}

/// The systemd service slate runs in.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Its cgroup, relative to the hierarchy root (`system.slice/app.service`).
    pub cgroup: PathBuf,
    /// `app.service`.
    pub name: String,
    /// systemd's `trusted.delegate` mark on that cgroup (set for `Delegate=yes` units by
    /// systemd 251 and later): `Some(true)` marked, `Some(false)` readable and unmarked,
    /// `None` when no cgroup of the unit could be read.
    pub delegate_mark: Option<bool>,
}

/// The host's cgroup setup, as a container would meet it.
#[derive(Debug, Clone)]
pub struct Report {
    pub mode: Mode,
    /// v2: one entry, ("cgroup2", mount point); v1: each controller with its mount point.
    pub hierarchies: Vec<(String, PathBuf)>,
    /// A hybrid host's cgroup2 mount (no controllers: slate does not use it for limits).
    pub unified: Option<PathBuf>,
    /// The service slate runs in, when it runs in one.
    pub unit: Option<Unit>,
    pub controllers: Vec<Controller>,
}

/// Controllers slate writes limits to (or, for v1 devices, every container's allowlist), by
/// their name on each hierarchy.
const V2_CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "memory", "pids", "io"];
const V1_CONTROLLERS: [&str; 6] = ["cpu", "cpuset", "memory", "pids", "blkio", "devices"];

/// Detects the host's cgroup setup and reports it.
pub fn report() -> Result<Report, CgroupError> {
    let host = Host::detect()?;
    let setup = libcgroups::common::get_cgroup_setup_with_root(Path::new(DEFAULT_ROOT))?;
    let mode = match setup {
        libcgroups::common::CgroupSetup::Unified => Mode::Unified,
        libcgroups::common::CgroupSetup::Hybrid => Mode::Hybrid,
        libcgroups::common::CgroupSetup::Legacy => Mode::Legacy,
    };
    // libcgroups calls a host hybrid exactly when a cgroup2 is mounted there.
    let unified = (mode == Mode::Hybrid).then(|| Path::new(DEFAULT_ROOT).join("unified"));
    Ok(report_on(&host, mode, unified))
}

pub(crate) fn report_on(host: &Host, mode: Mode, unified: Option<PathBuf>) -> Report {
    let base = host.base_path();
    let (hierarchies, controllers) = match &host.layout {
        Layout::Unified { root } => {
            // Where `create` checks: the cgroup container cgroups go under (the unit's, or
            // the root's), whose cgroup.controllers its parent decides.
            let parent = join_rel(root, &base);
            let listed =
                std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
            let controllers = V2_CONTROLLERS
                .iter()
                .map(|c| Controller {
                    name: c,
                    every_container: false,
                    availability: if listed.split_whitespace().any(|l| l == *c) {
                        Availability::Available(parent.clone())
                    } else {
                        Availability::Missing(missing_hint(host, c, &parent))
                    },
                })
                .collect();
            (vec![("cgroup2".to_owned(), root.clone())], controllers)
        }
        Layout::V1 { hierarchies, .. } => {
            let controllers = V1_CONTROLLERS
                .iter()
                .map(|c| Controller {
                    name: c,
                    every_container: *c == "devices",
                    availability: match hierarchies.iter().find(|(name, _)| name == c) {
                        Some((_, mount)) => Availability::Available(mount.clone()),
                        None => {
                            Availability::Missing(missing_hint(host, c, Path::new(DEFAULT_ROOT)))
                        }
                    },
                })
                .collect();
            (hierarchies.clone(), controllers)
        }
    };
    let unit = host.unit.as_ref().map(|cgroup| {
        // systemd marks the cgroup of its own hierarchy: the unified one (v2, hybrid) or
        // name=systemd (legacy).
        let dirs: Vec<PathBuf> = match &host.layout {
            Layout::Unified { root } => vec![join_rel(root, cgroup)],
            Layout::V1 { .. } => ["unified", "systemd"]
                .iter()
                .map(|h| join_rel(&Path::new(DEFAULT_ROOT).join(h), cgroup))
                .collect(),
        };
        Unit {
            cgroup: cgroup.clone(),
            name: cgroup
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            delegate_mark: delegate_mark(&dirs),
        }
    });
    Report {
        mode,
        hierarchies,
        unified,
        unit,
        controllers,
    }
}

/// systemd's delegation mark on the first of `dirs` that exists.
fn delegate_mark(dirs: &[PathBuf]) -> Option<bool> {
    let dir = dirs.iter().find(|d| d.is_dir())?;
    let mut buf = [0u8; 8];
    Some(
        match rustix::fs::getxattr(dir, "trusted.delegate", &mut buf[..]) {
            Ok(n) => buf[..n].starts_with(b"1"),
            Err(_) => false,
        },
    )
}

/// Whether this kernel loads slate's cgroup v2 device filter: compiles the default
/// allowlist (what every container without `--device` gets), loads it as a
/// `BPF_PROG_TYPE_CGROUP_DEVICE` program and closes it without attaching it anywhere.
/// Returns the program's length in instructions; the error is the one `create` would fail
/// with (a kernel without cgroup BPF, lockdown, a seccomp filter around slate).
pub fn probe_device_filter() -> Result<usize, CgroupError> {
    let insns = match devices::compile(&[])? {
        DeviceFilter::Program(insns) => insns,
        // The default list is not allow-all; nothing to load would be a compiler bug.
        DeviceFilter::AllowAll => return Ok(0),
    };
    let prog = bpf::load_device_program(&insns).map_err(devices::load_error)?;
    drop(prog);
    Ok(insns.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::boot::BootInfo;
    use super::super::FsOps;
    use super::*;

    fn pi_boot() -> BootInfo {
        BootInfo {
            cmdline: Some(
                "coherent_pool=1M cgroup_disable=memory console=tty1 root=PARTUUID=1-02".to_owned(),
            ),
            cmdline_txt: Some(PathBuf::from("/boot/firmware/cmdline.txt")),
            raspberry_pi: true,
            grub: false,
        }
    }

    /// A Raspberry Pi 5 on a 6.12 kernel: pure v2, memory disabled by the firmware's
    /// `cgroup_disable=memory`, and /proc/cgroups without a memory line at all
    /// (CONFIG_MEMCG_V1 is off), as in raspberrypi/linux#6980.
    #[test]
    fn a_pi_without_the_memory_controller() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("cgroup.controllers"), "cpuset cpu io pids\n").unwrap();
        let proc_cgroups = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
            cpuset\t0\t70\t1\ncpu\t0\t70\t1\ncpuacct\t0\t70\t1\nblkio\t0\t70\t1\n\
            devices\t0\t70\t1\nfreezer\t0\t70\t1\npids\t0\t70\t1\n";
        let host = Host {
            layout: Layout::Unified {
                root: root.to_path_buf(),
            },
            proc_cgroups: Some(proc_cgroups.to_owned()),
            unit: None,
            unit_not_delegated: false,
            fs: FsOps::REAL,
            boot: Some(pi_boot()),
        };
        let r = report_on(&host, Mode::Unified, None);
        assert_eq!(
            r.hierarchies,
            vec![("cgroup2".to_owned(), root.to_path_buf())]
        );
        let names: Vec<_> = r.controllers.iter().map(|c| c.name).collect();
        assert_eq!(names, V2_CONTROLLERS);
        for c in &r.controllers {
            match (&c.availability, c.name) {
                (Availability::Missing(hint), "memory") => {
                    assert!(hint.contains("disabled at boot"), "{hint}");
                    assert!(
                        hint.contains("append ` cgroup_enable=memory` to the end of the single line of /boot/firmware/cmdline.txt"),
                        "{hint}"
                    );
                    assert!(hint.contains("reboot"), "{hint}");
                }
                (Availability::Available(at), _) => assert_eq!(at, root),
                (a, name) => panic!("{name}: {a:?}"),
            }
        }

        // The fix applied: the last switch enables it, and the v2 root lists it; still no
        // memory line in /proc/cgroups, which must not make it "not built".
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let r = report_on(&host, Mode::Unified, None);
        let memory = r.controllers.iter().find(|c| c.name == "memory").unwrap();
        assert_eq!(
            memory.availability,
            Availability::Available(root.to_path_buf())
        );
    }

    /// In a unit without delegation the root has memory but the unit's cgroup does not: the
    /// fix is Delegate=yes, not the kernel command line, even with no memory line in
    /// /proc/cgroups (the 6.12 kernels of #6980).
    #[test]
    fn an_undelegated_unit_is_told_to_delegate() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        let unit_dir = root.join("system.slice/app.service");
        std::fs::create_dir_all(&unit_dir).unwrap();
        std::fs::write(unit_dir.join("cgroup.controllers"), "").unwrap();
        let host = Host {
            layout: Layout::Unified {
                root: root.to_path_buf(),
            },
            proc_cgroups: Some("#subsys_name\thierarchy\tnum_cgroups\tenabled\n".to_owned()),
            unit: Some(PathBuf::from("system.slice/app.service")),
            unit_not_delegated: false,
            fs: FsOps::REAL,
            boot: Some(BootInfo::default()),
        };
        let r = report_on(&host, Mode::Unified, None);
        let memory = r.controllers.iter().find(|c| c.name == "memory").unwrap();
        match &memory.availability {
            Availability::Missing(hint) => {
                assert!(hint.contains("Delegate=yes"), "{hint}");
                assert!(!hint.contains("cmdline"), "{hint}");
            }
            a => panic!("{a:?}"),
        }
        let unit = r.unit.unwrap();
        assert_eq!(unit.name, "app.service");
        // A temp dir's files take no trusted.* xattr without the mark: readable, unmarked.
        assert_eq!(unit.delegate_mark, Some(false));
    }

    #[test]
    fn v1_devices_is_needed_by_every_container() {
        let host = Host {
            layout: Layout::V1 {
                hierarchies: vec![("cpu".to_owned(), PathBuf::from("/sys/fs/cgroup/cpu"))],
                unified: None,
            },
            proc_cgroups: Some(
                "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t1\t1\ndevices\t0\t1\t1\n"
                    .to_owned(),
            ),
            unit: None,
            unit_not_delegated: false,
            fs: FsOps::REAL,
            boot: Some(BootInfo::default()),
        };
        let r = report_on(&host, Mode::Legacy, None);
        let devices = r.controllers.iter().find(|c| c.name == "devices").unwrap();
        assert!(devices.every_container);
        match &devices.availability {
            Availability::Missing(hint) => {
                assert!(hint.contains("mount -t cgroup -o devices"), "{hint}")
            }
            a => panic!("{a:?}"),
        }
        let cpu = r.controllers.iter().find(|c| c.name == "cpu").unwrap();
        assert!(!cpu.every_container);
        assert_eq!(
            cpu.availability,
            Availability::Available(PathBuf::from("/sys/fs/cgroup/cpu"))
        );
    }

    /// The real kernel: the default allowlist must load (every test runs as root).
    #[test]
    fn the_default_device_filter_loads_here() {
        let n = probe_device_filter().expect("the default device program must load");
        assert!(n > 6, "{n} instructions");
    }
}
