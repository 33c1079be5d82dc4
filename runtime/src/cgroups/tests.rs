//! Unit tests of the cgroup v2 code path against a fake cgroupfs tree in a temp dir (this
//! machine's kernel runs a hybrid setup and cannot show v2), and of the pure helpers.
//!
//! Pids written into the fake tree are above the kernel's maximum pid (2^22), so that even a
//! bug that signalled them could not reach a real process.

use std::fs;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};

use super::boot::BootInfo;
use super::host::unit_cgroup;
use super::*;

const FAKE_PID: i32 = 999_999_999;

/// A new cgroup's interface files. They start empty (for the limits, that stands for the
/// kernel's `max`): libcgroups writes without truncating, as a real cgroup file wants, so
/// a shorter value written over a longer one would leave a mix in a plain file.
const FILES: &[&str] = &[
    "cgroup.procs",
    "cgroup.subtree_control",
    "cgroup.controllers",
    "cgroup.kill",
    "cgroup.freeze",
    "memory.max",
    "memory.high",
    "memory.swap.max",
    "memory.low",
    "cpu.max",
    "cpu.weight",
    "pids.max",
    "cpuset.cpus",
    "cpuset.mems",
    "io.max",
    "io.weight",
];

/// What the kernel does on mkdir in cgroupfs: the directory comes with its interface files,
/// and its controllers are those its parent enables for its children.
fn fake_mkdir(p: &Path) -> std::io::Result<()> {
    fs::create_dir(p)?;
    for f in FILES {
        fs::write(p.join(f), "")?;
    }
    if let Some(parent) = p.parent() {
        if let Ok(enabled) = fs::read_to_string(parent.join("cgroup.subtree_control")) {
            fs::write(p.join("cgroup.controllers"), enabled)?;
        }
    }
    Ok(())
}

/// Controllers a fake cgroup's kernel refuses to enable for its children (EINVAL), listed
/// in this file of the cgroup: what the cpu controller does next to a realtime task.
const FAKE_REFUSED: &str = "slate.refused";

/// How many writes to a fake cgroup's `cgroup.subtree_control` fail with EBUSY before they
/// work (what the kernel does for a moment after the cgroup's processes moved out).
const FAKE_BUSY: &str = "slate.busy";

fn words(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// What the kernel does on a write to `cgroup.subtree_control`: all of the line's `+c`/`-c`
/// or none; ENOENT for a controller the cgroup does not have, EINVAL for one listed in
/// [`FAKE_REFUSED`]; the children's `cgroup.controllers` follow. (The kernel's EBUSY for a
/// cgroup with processes of its own is not modelled: the fake cannot move processes.)
fn fake_subtree_control(file: &Path, line: &str) -> std::io::Result<()> {
    let err = std::io::Error::from_raw_os_error;
    let dir = file.parent().ok_or_else(|| err(libc::EINVAL))?;
    let available = words(&dir.join("cgroup.controllers"));
    let refused = words(&dir.join(FAKE_REFUSED));
    if let Ok(n) = fs::read_to_string(dir.join(FAKE_BUSY)) {
        let n: u32 = n.trim().parse().unwrap_or(0);
        if n > 0 {
            fs::write(dir.join(FAKE_BUSY), (n - 1).to_string())?;
            return Err(err(libc::EBUSY));
        }
    }
    let mut enabled = words(file);
    for token in line.split_whitespace() {
        let (on, c) = match token.split_at(1) {
            ("+", c) => (true, c),
            ("-", c) => (false, c),
            _ => return Err(err(libc::EINVAL)),
        };
        if !available.iter().any(|a| a == c) {
            return Err(err(libc::ENOENT));
        }
        if refused.iter().any(|r| r == c) {
            return Err(err(libc::EINVAL));
        }
        enabled.retain(|e| e != c);
        if on {
            enabled.push(c.to_owned());
        }
    }
    let text = enabled.join(" ");
    fs::write(file, &text)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::write(entry.path().join("cgroup.controllers"), &text)?;
        }
    }
    Ok(())
}

/// What the kernel does on rmdir of an empty cgroup: the interface files go with it.
fn fake_rmdir(p: &Path) -> std::io::Result<()> {
    if !fs::read_to_string(p.join("cgroup.procs"))?
        .trim()
        .is_empty()
    {
        return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
    }
    fs::remove_dir_all(p)
}

/// Where a real cgroup2 directory would take the device program: the fake records its length.
fn fake_attach_devices(p: &Path, insns: &[crate::bpf::Insn]) -> Result<(), CgroupError> {
    fs::write(p.join(FAKE_DEVICE_PROGRAM), insns.len().to_string()).map_err(|source| {
        CgroupError::Write {
            path: p.to_path_buf(),
            source,
        }
    })
}

const FAKE_DEVICE_PROGRAM: &str = "slate.device-program";

const FAKE_OPS: FsOps = FsOps {
    mkdir: fake_mkdir,
    rmdir: fake_rmdir,
    subtree_control: fake_subtree_control,
    attach_devices: fake_attach_devices,
};

const PROC_CGROUPS_PI: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
cpuset\t0\t1\t1\ncpu\t0\t1\t1\ncpuacct\t0\t1\t1\nblkio\t0\t1\t1\nmemory\t0\t1\t0\n\
devices\t0\t1\t1\nfreezer\t0\t1\t1\nnet_cls\t0\t1\t1\npids\t0\t1\t1\n";

fn fake_root(controllers: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("cgroup");
    fs::create_dir(&root).expect("root");
    // The root cgroup has no limit files, as on a real host.
    for f in FILES.iter().filter(|f| f.starts_with("cgroup.")) {
        fs::write(root.join(f), "").expect("file");
    }
    fs::write(root.join("cgroup.controllers"), controllers).expect("controllers");
    (tmp, root)
}

fn fake_host(root: &Path, unit: Option<&str>) -> Host {
    Host {
        layout: Layout::Unified {
            root: root.to_path_buf(),
        },
        proc_cgroups: Some(PROC_CGROUPS_PI.to_owned()),
        unit: unit.map(PathBuf::from),
        unit_not_delegated: false,
        fs: FAKE_OPS,
        boot: Some(BootInfo::default()),
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn limits() -> LinuxResources {
    LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(128 * 1024 * 1024)
                .swap(256 * 1024 * 1024)
                .reservation(64 * 1024 * 1024)
                .build()
                .expect("memory"),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .quota(50_000)
                .period(100_000u64)
                .shares(1024u64)
                .cpus("0-1")
                .build()
                .expect("cpu"),
        )
        .pids(LinuxPidsBuilder::default().limit(64).build().expect("pids"))
        .build()
        .expect("resources")
}

#[test]
fn v2_create_writes_limits_and_enables_controllers() {
    let (_tmp, root) = fake_root("cpuset cpu io memory hugetlb pids");
    let host = fake_host(&root, None);
    let cg = Cgroup::create_on(&host, "c1", None, Some(&limits())).expect("create");

    let leaf = root.join("slate/c1");
    assert_eq!(cg.unified_path(), Some(leaf.as_path()));
    // The limits' controllers, and every other one offered (io, hugetlb), as docker's.
    for dir in [&root, &root.join("slate")] {
        assert_eq!(
            sorted(words(&dir.join("cgroup.subtree_control"))),
            ["cpu", "cpuset", "hugetlb", "io", "memory", "pids"],
            "{}",
            dir.display()
        );
    }
    assert_eq!(read(&leaf.join("memory.max")), "134217728");
    // OCI swap is memory+swap; v2 wants swap alone
    assert_eq!(read(&leaf.join("memory.swap.max")), "134217728");
    assert_eq!(read(&leaf.join("memory.low")), "67108864");
    assert_eq!(read(&leaf.join("cpu.max")), "50000 100000");
    assert_eq!(read(&leaf.join("cpu.weight")), "100");
    assert_eq!(read(&leaf.join("cpuset.cpus")), "0-1");
    assert_eq!(read(&leaf.join("pids.max")), "64");

    cg.add_task(Pid::from_raw(FAKE_PID)).expect("add task");
    assert_eq!(read(&leaf.join("cgroup.procs")), FAKE_PID.to_string());

    assert_eq!(
        list_leftovers_on(&host).expect("list"),
        vec!["c1".to_owned()]
    );
    let reopened = Cgroup::open_on(&host, "c1", None).expect("open");
    assert_eq!(reopened.paths(), vec![leaf.clone()]);

    // the fake kernel cannot kill; empty the cgroup as SIGKILL would have
    fs::write(leaf.join("cgroup.procs"), "").expect("empty procs");
    cg.remove().expect("remove");
    assert_eq!(
        read(&leaf.parent().expect("parent").join("cgroup.kill")),
        ""
    );
    assert!(!leaf.exists(), "leaf left behind");
    assert!(root.join("slate").is_dir(), "shared parent must stay");
    assert!(list_leftovers_on(&host).expect("list").is_empty());
    assert!(matches!(
        Cgroup::open_on(&host, "c1", None),
        Err(CgroupError::NotFound { .. })
    ));
}

#[test]
fn v2_remove_uses_cgroup_kill() {
    let (_tmp, root) = fake_root("cpu memory pids");
    let host = fake_host(&root, None);
    let cg = Cgroup::create_on(&host, "k", None, None).expect("create");
    let leaf = root.join("slate/k");
    cg.kill_all().expect("kill");
    assert_eq!(read(&leaf.join("cgroup.kill")), "1");
    cg.remove().expect("remove");
    assert!(!leaf.exists());
}

#[test]
fn v2_missing_memory_controller_names_cmdline() {
    let (_tmp, root) = fake_root("cpuset cpu io pids");
    let host = fake_host(&root, None);
    let err = Cgroup::create_on(&host, "c2", None, Some(&limits())).expect_err("must fail");
    let msg = err.to_string();
    assert!(
        matches!(&err, CgroupError::MissingController { controller, .. } if controller == "memory"),
        "{msg}"
    );
    assert!(msg.contains("cgroup_enable=memory"), "{msg}");
    assert!(msg.contains("/boot/firmware/cmdline.txt"), "{msg}");
    assert!(msg.contains("/boot/cmdline.txt"), "{msg}");
    assert!(msg.contains("reboot"), "{msg}");
    assert!(
        !root.join("slate").exists(),
        "nothing may be created on error"
    );
    assert_eq!(read(&root.join("cgroup.subtree_control")), "");
}

#[test]
fn v2_no_limits_needs_no_controller() {
    let (_tmp, root) = fake_root("");
    let host = fake_host(&root, None);
    let cg = Cgroup::create_on(&host, "bare", None, None).expect("create");
    assert_eq!(read(&root.join("cgroup.subtree_control")), "");
    cg.remove().expect("remove");
}

#[test]
fn v2_failed_apply_leaves_nothing() {
    let (_tmp, root) = fake_root("cpu memory pids");
    let host = fake_host(&root, None);
    // swap (memory+swap) below the memory limit is invalid
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(1 << 30)
                .swap(1 << 20)
                .build()
                .expect("memory"),
        )
        .build()
        .expect("resources");
    let err = Cgroup::create_on(&host, "bad", None, Some(&r)).expect_err("must fail");
    assert!(matches!(err, CgroupError::ApplyV2 { .. }), "{err}");
    assert!(!root.join("slate/bad").exists());
}

#[test]
fn v2_existing_cgroup_with_processes_is_refused() {
    let (_tmp, root) = fake_root("cpu memory pids");
    let host = fake_host(&root, None);
    fake_mkdir(&root.join("slate")).expect("parent");
    fake_mkdir(&root.join("slate/busy")).expect("leaf");
    fs::write(root.join("slate/busy/cgroup.procs"), FAKE_PID.to_string()).expect("procs");
    let err = Cgroup::create_on(&host, "busy", None, None).expect_err("must fail");
    assert!(matches!(err, CgroupError::InUse { .. }), "{err}");
    assert!(root.join("slate/busy").exists(), "not ours to remove");
}

fn fake_unit(root: &Path, controllers: &str) -> PathBuf {
    let slice = root.join("system.slice");
    fake_mkdir(&slice).expect("slice");
    let unit = slice.join("app.service");
    fake_mkdir(&unit).expect("unit");
    fs::write(unit.join("cgroup.controllers"), controllers).expect("controllers");
    fs::write(
        unit.join("cgroup.procs"),
        format!("{}\n{}\n", FAKE_PID, FAKE_PID - 1),
    )
    .expect("procs");
    unit
}

#[test]
fn v2_systemd_unit_nests_and_moves_slate_to_a_leaf() {
    let (_tmp, root) = fake_root("cpuset cpu io memory pids");
    let unit = fake_unit(&root, "cpu memory pids");
    let host = fake_host(&root, Some("system.slice/app.service"));
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(10).build().expect("pids"))
        .build()
        .expect("resources");
    let cg = Cgroup::create_on(&host, "web", None, Some(&r)).expect("create");

    let leaf = unit.join("slate/web");
    assert_eq!(cg.paths(), vec![leaf.clone()]);
    assert_eq!(read(&leaf.join("pids.max")), "10");
    let supervisor = unit.join("supervisor/cgroup.procs");
    assert!(!read(&supervisor).is_empty(), "unit processes not moved");
    for dir in [&unit, &unit.join("slate")] {
        assert_eq!(
            sorted(words(&dir.join("cgroup.subtree_control"))),
            ["cpu", "memory", "pids"],
            "{}",
            dir.display()
        );
    }
    // above the unit is systemd's
    assert_eq!(read(&root.join("cgroup.subtree_control")), "");
    assert_eq!(read(&root.join("system.slice/cgroup.subtree_control")), "");

    assert_eq!(
        list_leftovers_on(&host).expect("list"),
        vec!["web".to_owned()]
    );
    cg.remove().expect("remove");
    assert!(!leaf.exists());
    assert!(unit.exists());
}

#[test]
fn v2_systemd_unit_without_delegation_says_delegate() {
    let (_tmp, root) = fake_root("cpuset cpu io memory pids");
    let _unit = fake_unit(&root, "");
    let host = fake_host(&root, Some("system.slice/app.service"));
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(10).build().expect("pids"))
        .build()
        .expect("resources");
    let err = Cgroup::create_on(&host, "web", None, Some(&r)).expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("Delegate=yes"), "{msg}");
    assert!(msg.contains("pids"), "{msg}");
}

#[test]
fn v2_unit_without_delegate_refuses_limits_and_says_delegate() {
    let (_tmp, root) = fake_root("cpuset cpu io memory pids");
    // systemd gave the unit controllers (accounting), but not the unit to slate.
    let unit = fake_unit(&root, "cpu memory pids");
    let mut host = fake_host(&root, Some("system.slice/app.service"));
    host.unit_not_delegated = true;
    let err = Cgroup::create_on(&host, "web", None, Some(&limits())).expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("Delegate=yes") && msg.contains("memory"),
        "{msg}"
    );
    assert!(
        !msg.contains("  ") && !msg.contains('\n'),
        "one line: {msg}"
    );
    assert!(!unit.join("slate").exists(), "nothing created");
    assert!(!unit.join("supervisor").exists(), "nothing moved");
    assert_eq!(read(&unit.join("cgroup.subtree_control")), "");
}

#[test]
fn v2_unit_without_delegate_runs_without_limits_and_moves_nothing() {
    let (_tmp, root) = fake_root("cpuset cpu io memory pids");
    let unit = fake_unit(&root, "cpu memory pids");
    let mut host = fake_host(&root, Some("system.slice/app.service"));
    host.unit_not_delegated = true;
    let cg = Cgroup::create_on(&host, "web", None, None).expect("create");
    assert_eq!(cg.paths(), vec![unit.join("slate/web")]);
    assert!(
        !unit.join("supervisor").exists(),
        "slate stays where systemd put it"
    );
    assert_eq!(
        read(&unit.join("cgroup.subtree_control")),
        "",
        "systemd's to set"
    );
    assert_eq!(read(&unit.join("slate/cgroup.subtree_control")), "");
    cg.remove().expect("remove");
}

#[test]
fn v2_absolute_cgroups_path_is_from_the_root() {
    let (_tmp, root) = fake_root("cpu memory pids");
    let host = fake_host(&root, None);
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(5).build().expect("pids"))
        .build()
        .expect("resources");
    let cg =
        Cgroup::create_on(&host, "x", Some(Path::new("/k8s/pod1/x")), Some(&r)).expect("create");
    assert_eq!(read(&root.join("k8s/pod1/x/pids.max")), "5");
    assert!(words(&root.join("k8s/pod1/cgroup.subtree_control")).contains(&"pids".to_owned()));
    cg.remove().expect("remove");
    assert!(!root.join("k8s/pod1/x").exists());
}

#[test]
fn unit_cgroup_is_found_in_proc_self_cgroup() {
    assert_eq!(
        unit_cgroup("0::/system.slice/app.service\n", true),
        Some(PathBuf::from("system.slice/app.service"))
    );
    assert_eq!(
        unit_cgroup("0::/system.slice/app.service/supervisor\n", true),
        Some(PathBuf::from("system.slice/app.service"))
    );
    assert_eq!(
        unit_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n", true),
        None
    );
    assert_eq!(
        unit_cgroup(
            "4:memory:/x\n1:name=systemd:/system.slice/a.service\n0::/system.slice/a.service\n",
            false
        ),
        Some(PathBuf::from("system.slice/a.service"))
    );
}

#[test]
fn cgroups_paths_are_checked() {
    let base = Path::new("system.slice/a.service");
    assert_eq!(
        container_rel_path(base, "c", None).expect("default"),
        PathBuf::from("system.slice/a.service/slate/c")
    );
    assert_eq!(
        container_rel_path(Path::new(""), "c", Some(Path::new("/a/b"))).expect("absolute"),
        PathBuf::from("a/b")
    );
    assert_eq!(
        container_rel_path(base, "c", Some(Path::new("mine/c"))).expect("relative"),
        PathBuf::from("system.slice/a.service/mine/c")
    );
    for bad in ["/a/../b", "/", "system.slice:cri:abc"] {
        assert!(
            container_rel_path(base, "c", Some(Path::new(bad))).is_err(),
            "{bad} accepted"
        );
    }
    for bad in ["", "..", "a/b", "a b"] {
        assert!(validate_id(bad).is_err(), "{bad:?} accepted");
    }
    assert!(validate_id("web-1_a.b").is_ok());
}

#[test]
fn kernel_state_reads_proc_cgroups() {
    assert_eq!(
        kernel_state(Some(PROC_CGROUPS_PI), "memory"),
        KernelState::DisabledAtBoot
    );
    assert_eq!(
        kernel_state(Some(PROC_CGROUPS_PI), "io"),
        KernelState::Enabled {
            v1_hierarchy: false
        }
    );
    assert_eq!(
        kernel_state(Some(PROC_CGROUPS_PI), "hugetlb"),
        KernelState::NotBuilt
    );
    assert_eq!(kernel_state(None, "cpu"), KernelState::Unknown);
}

#[test]
fn required_controllers_follow_the_resources() {
    assert!(required_controllers(&LinuxResources::default(), true).is_empty());
    assert_eq!(
        required_controllers(&LinuxResources::default(), false),
        vec!["devices"]
    );
    assert_eq!(
        required_controllers(&limits(), true),
        vec!["memory", "cpu", "cpuset", "pids"]
    );
}

#[test]
fn v2_systemd_unit_without_limits_still_nests() {
    let (_tmp, root) = fake_root("cpu memory pids");
    let unit = fake_unit(&root, "cpu memory pids");
    let host = fake_host(&root, Some("system.slice/app.service"));
    let cg = Cgroup::create_on(&host, "plain", None, None).expect("create");
    let leaf = unit.join("slate/plain");
    assert_eq!(cg.paths(), vec![leaf.clone()]);
    assert!(!read(&unit.join("supervisor/cgroup.procs")).is_empty());
    // Without limits too, the container gets every delegated controller's files.
    assert_eq!(
        sorted(words(&leaf.join("cgroup.controllers"))),
        ["cpu", "memory", "pids"]
    );
    cg.remove().expect("remove");
}

#[test]
fn v1_missing_memory_hierarchy_names_cmdline_and_creates_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cpu = tmp.path().join("cpu");
    fs::create_dir(&cpu).expect("cpu");
    let host = Host {
        layout: Layout::V1 {
            hierarchies: vec![
                ("cpu".to_owned(), cpu.clone()),
                ("devices".to_owned(), tmp.path().join("devices")),
                ("pids".to_owned(), tmp.path().join("pids")),
            ],
            unified: None,
        },
        proc_cgroups: Some(PROC_CGROUPS_PI.to_owned()),
        unit: None,
        unit_not_delegated: false,
        fs: FAKE_OPS,
        boot: Some(BootInfo::default()),
    };
    let err = Cgroup::create_on(&host, "v1", None, Some(&limits())).expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("memory"), "{msg}");
    assert!(msg.contains("cgroup_enable=memory"), "{msg}");
    assert!(!cpu.join("slate").exists());
}

/// A Raspberry Pi OS style hybrid host: cpu and cpuacct co-mounted, a lookalike tmpfs, and
/// net_cls,net_prio co-mounted, a controller-less cgroup2 and systemd's named
/// hierarchy (neither used), and a space escaped in a mount point.
const MOUNTINFO_HYBRID: &str = "\
22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/root rw
25 22 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio
32 25 0:29 / /sys/fs/cgroup/mem\\040ory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
33 25 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
34 25 0:31 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,devices
35 25 0:32 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,cpuset
36 22 0:33 / /mnt/pids rw,relatime shared:20 - tmpfs tmpfs rw
";

#[test]
fn v1_hierarchies_from_one_mountinfo_read() {
    let h = super::host::v1_hierarchies(MOUNTINFO_HYBRID);
    let want: Vec<(String, PathBuf)> = [
        ("cpu", "/sys/fs/cgroup/cpu,cpuacct"),
        ("cpuacct", "/sys/fs/cgroup/cpu,cpuacct"),
        ("cpuset", "/sys/fs/cgroup/cpuset"),
        ("devices", "/sys/fs/cgroup/devices"),
        ("net_cls", "/sys/fs/cgroup/net_cls,net_prio"),
        ("net_prio", "/sys/fs/cgroup/net_cls,net_prio"),
        ("pids", "/sys/fs/cgroup/pids"),
    ]
    .iter()
    .map(|(c, p)| (c.to_string(), PathBuf::from(p)))
    .collect();
    // "mem ory" is not named like the controller: libcgroups would not find it either.
    assert_eq!(h, want);
    let spaced = MOUNTINFO_HYBRID.replace("mem\\040ory", "x\\040y/memory");
    let h = super::host::v1_hierarchies(&spaced);
    assert!(h.contains(&(
        "memory".to_owned(),
        PathBuf::from("/sys/fs/cgroup/x y/memory")
    )));
}

/// On a real v1 or hybrid host, the single-read lookup finds exactly what libcgroups' own
/// (one read per controller) lookup finds, so the directories slate creates are the ones
/// libcgroups' v1 manager writes limits into.
#[test]
#[ignore = "needs a cgroup v1 or hybrid host; tests/run runs it there"]
fn v1_hierarchies_match_libcgroups_on_this_host() {
    let setup = libcgroups::common::get_cgroup_setup_with_root(Path::new("/sys/fs/cgroup"));
    assert!(
        matches!(
            setup,
            Ok(libcgroups::common::CgroupSetup::Legacy | libcgroups::common::CgroupSetup::Hybrid)
        ),
        "not a cgroup v1 or hybrid host: {setup:?}"
    );
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mut theirs: Vec<(String, PathBuf)> = libcgroups::v1::util::list_supported_mount_points()
        .expect("libcgroups lookup")
        .into_iter()
        .map(|(c, p)| (c.to_string(), p))
        .collect();
    theirs.sort();
    assert_eq!(super::host::v1_hierarchies(&mountinfo), theirs);
}

fn device_resources(rules: Vec<oci_spec::runtime::LinuxDeviceCgroup>) -> LinuxResources {
    let mut r = LinuxResources::default();
    r.set_devices(Some(rules));
    r
}

#[test]
fn v2_device_rules_attach_a_program_before_the_container_runs() {
    // issue 11: docker's list on v2 must end up as a program on the container's cgroup
    let (_tmp, root) = fake_root("");
    let host = fake_host(&root, None);
    let r = device_resources(devices::tests::docker_rules());
    let cg = Cgroup::create_on(&host, "dev", None, Some(&r)).expect("create");
    let n: usize = read(&root.join("slate/dev").join(FAKE_DEVICE_PROGRAM))
        .parse()
        .expect("instruction count");
    assert!(n > 6, "{n} instructions");
    cg.remove().expect("remove");
    // without any rule, the default allowlist alone still makes a deny-by-default program
    let cg = Cgroup::create_on(&host, "none", None, None).expect("create");
    assert!(root.join("slate/none").join(FAKE_DEVICE_PROGRAM).exists());
    cg.remove().expect("remove");
}

#[test]
fn v2_allow_all_devices_attaches_nothing() {
    let (_tmp, root) = fake_root("");
    let host = fake_host(&root, None);
    let mut all = oci_spec::runtime::LinuxDeviceCgroup::default();
    all.set_allow(true);
    all.set_access(Some("rwm".to_owned()));
    let cg =
        Cgroup::create_on(&host, "priv", None, Some(&device_resources(vec![all]))).expect("create");
    assert!(!root.join("slate/priv").join(FAKE_DEVICE_PROGRAM).exists());
    cg.remove().expect("remove");
}

fn no_cgroup_bpf(_: &Path, _: &[crate::bpf::Insn]) -> Result<(), CgroupError> {
    // what BPF_PROG_LOAD says on a kernel without CONFIG_CGROUP_BPF
    Err(devices::load_error(crate::bpf::LoadError {
        errno: nix::errno::Errno::EINVAL,
        log: String::new(),
    }))
}

#[test]
fn v2_kernel_without_device_programs_refuses_to_start() {
    let (_tmp, root) = fake_root("");
    let mut host = fake_host(&root, None);
    host.fs.attach_devices = no_cgroup_bpf;
    let r = device_resources(devices::tests::docker_rules());
    let err = Cgroup::create_on(&host, "nobpf", None, Some(&r)).expect_err("must refuse");
    let msg = err.to_string();
    assert!(
        matches!(err, CgroupError::DeviceFilterUnsupported { .. }),
        "{msg}"
    );
    for part in ["CONFIG_CGROUP_BPF", "--privileged", "a *:* rwm", "EINVAL"] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(!root.join("slate/nobpf").exists(), "nothing left behind");
    // the opt-out named in the message works on that kernel
    let mut all = oci_spec::runtime::LinuxDeviceCgroup::default();
    all.set_allow(true);
    let cg = Cgroup::create_on(&host, "optout", None, Some(&device_resources(vec![all])))
        .expect("allow-all needs no program");
    cg.remove().expect("remove");
}

#[test]
fn v2_bad_device_rule_creates_nothing() {
    let (_tmp, root) = fake_root("");
    let host = fake_host(&root, None);
    let mut bad = oci_spec::runtime::LinuxDeviceCgroup::default();
    bad.set_allow(true);
    bad.set_access(Some("rwx".to_owned()));
    let err = Cgroup::create_on(&host, "bad", None, Some(&device_resources(vec![bad])))
        .expect_err("must fail");
    assert!(matches!(err, CgroupError::DeviceRule(_)), "{err}");
    assert!(!root.join("slate").exists());
}

#[test]
fn device_filter_errors_tell_unsupported_from_rejected() {
    use crate::bpf::LoadError;
    use nix::errno::Errno;
    let e = |errno, log: &str| {
        devices::load_error(LoadError {
            errno,
            log: log.to_owned(),
        })
    };
    assert!(matches!(
        e(Errno::ENOSYS, ""),
        CgroupError::DeviceFilterUnsupported { .. }
    ));
    assert!(matches!(
        e(Errno::EPERM, ""),
        CgroupError::DeviceFilterUnsupported { .. }
    ));
    // a verifier that explains itself has understood the type and refused the program
    let rejected = e(Errno::EINVAL, "0: (61) r2 = *(u32 *)(r1 +0)\nR0 !read_ok");
    assert!(
        matches!(&rejected, CgroupError::DeviceFilterRejected { log, .. } if log.contains("R0 !read_ok")),
        "{rejected}"
    );
    assert!(matches!(
        e(Errno::EACCES, "invalid bpf_context access"),
        CgroupError::DeviceFilterRejected { .. }
    ));
}

#[test]
fn v2_a_units_container_is_found_from_elsewhere_through_its_recorded_path() {
    let (_tmp, root) = fake_root("cpuset cpu io memory pids");
    let _unit = fake_unit(&root, "cpu memory pids");
    let in_unit = fake_host(&root, Some("system.slice/app.service"));
    let cg = Cgroup::create_on(&in_unit, "web", None, None).expect("create");
    let recorded = cg.paths();
    // `slate exec web` from a shell, or from another unit: its own guess misses the cgroup.
    for elsewhere in [
        fake_host(&root, None),
        fake_host(&root, Some("system.slice/other.service")),
    ] {
        assert!(matches!(
            Cgroup::open_on(&elsewhere, "web", None),
            Err(CgroupError::NotFound { .. })
        ));
        let found = Cgroup::open_recorded_on(&elsewhere, "web", None, &recorded).expect("recorded");
        assert_eq!(found.paths(), recorded);
    }
    // A recorded path outside the hierarchy is not trusted; without a match, the usual lookup.
    let bogus = vec![PathBuf::from("/etc")];
    assert!(Cgroup::open_recorded_on(&fake_host(&root, None), "web", None, &bogus).is_err());
    cg.remove().expect("remove");
}

#[test]
fn v2_optional_controllers_are_best_effort_required_ones_are_not() {
    let (_tmp, root) = fake_root("cpuset cpu io memory pids rdma");
    // The kernel refuses cpu here (a realtime task, say) and rdma.
    fs::write(root.join(FAKE_REFUSED), "cpu rdma").expect("refused");
    let host = fake_host(&root, None);
    let cg = Cgroup::create_on(&host, "opt", None, None).expect("create without limits");
    assert_eq!(
        sorted(words(&root.join("cgroup.subtree_control"))),
        ["cpuset", "io", "memory", "pids"]
    );
    assert_eq!(
        sorted(words(&root.join("slate/opt/cgroup.controllers"))),
        ["cpuset", "io", "memory", "pids"]
    );
    cg.remove().expect("remove");

    // A cpu limit needs cpu: that failure is the user's business.
    let r = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .quota(50_000)
                .period(100_000u64)
                .build()
                .expect("cpu"),
        )
        .build()
        .expect("resources");
    let err = Cgroup::create_on(&host, "req", None, Some(&r)).expect_err("must fail");
    assert!(
        matches!(&err, CgroupError::EnableController { controller, .. } if controller == "cpu"),
        "{err}"
    );
    assert!(!root.join("slate/req").exists(), "nothing left behind");
}

fn memory_limit(bytes: i64) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .build()
                .expect("memory"),
        )
        .build()
        .expect("resources")
}

/// Issue 12: under a unit with `MemoryMax=256M`, the container reads 256M as its own
/// memory.max without --memory, its own 64M with --memory 64m, and `max` when nothing above
/// it limits memory.
#[test]
fn v2_container_shows_the_units_memory_max_unless_it_has_its_own() {
    let (_tmp, root) = fake_root("cpu memory pids");
    let unit = fake_unit(&root, "cpu memory pids");
    fs::write(unit.join("memory.max"), "268435456\n").expect("MemoryMax=256M");
    let mut host = fake_host(&root, Some("system.slice/app.service"));
    // The kernel's default in a new cgroup (written values here are all longer, so a plain
    // file written without truncation still reads right).
    host.fs.mkdir = |p| {
        fake_mkdir(p)?;
        fs::write(p.join("memory.max"), "max\n")
    };

    let cg = Cgroup::create_on(&host, "inherit", None, None).expect("create");
    assert_eq!(
        read(&unit.join("slate/inherit/memory.max")),
        "268435456",
        "the unit's MemoryMax= is the container's memory.max"
    );
    cg.remove().expect("remove");

    let cg = Cgroup::create_on(&host, "own", None, Some(&memory_limit(64 << 20))).expect("create");
    assert_eq!(read(&unit.join("slate/own/memory.max")), "67108864");
    cg.remove().expect("remove");

    fs::write(unit.join("memory.max"), "max\n").expect("no MemoryMax=");
    let cg = Cgroup::create_on(&host, "none", None, None).expect("create");
    assert_eq!(read(&unit.join("slate/none/memory.max")), "max\n");
    cg.remove().expect("remove");
}

#[test]
fn v2_inherited_limits_are_the_tightest_of_all_ancestors() {
    let (_tmp, root) = fake_root("cpu memory pids");
    let unit = fake_unit(&root, "cpu memory pids");
    let slice = root.join("system.slice");
    let limits = [
        // (file, the slice's, the unit's, what the container must read)
        ("memory.max", "134217728", "268435456", "134217728"),
        ("memory.high", "max", "201326592", "201326592"),
        ("memory.swap.max", "0", "max", "0"),
        ("pids.max", "max", "4915", "4915"),
        // 0.25 CPU with its own 1 s period is tighter than the unit's 0.5 CPU
        (
            "cpu.max",
            "250000 1000000",
            "50000 100000",
            "250000 1000000",
        ),
    ];
    for (file, s, u, _) in limits {
        fs::write(slice.join(file), format!("{s}\n")).expect("slice");
        fs::write(unit.join(file), format!("{u}\n")).expect("unit");
    }
    let host = fake_host(&root, Some("system.slice/app.service"));
    let cg = Cgroup::create_on(&host, "tight", None, None).expect("create");
    let leaf = unit.join("slate/tight");
    for (file, _, _, want) in limits {
        assert_eq!(read(&leaf.join(file)), want, "{file}");
    }
    cg.remove().expect("remove");

    // The user's own limits win, each kind on its own: --pids-limit and --cpus here, the
    // memory ones still inherited.
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(50).build().expect("pids"))
        .cpu(
            LinuxCpuBuilder::default()
                .quota(150_000)
                .period(100_000u64)
                .build()
                .expect("cpu"),
        )
        .build()
        .expect("resources");
    let cg = Cgroup::create_on(&host, "mine", None, Some(&r)).expect("create");
    let leaf = unit.join("slate/mine");
    assert_eq!(read(&leaf.join("pids.max")), "50");
    assert_eq!(read(&leaf.join("cpu.max")), "150000 100000");
    assert_eq!(read(&leaf.join("memory.max")), "134217728");
    cg.remove().expect("remove");
}

#[test]
fn v2_inherited_limits_need_the_controller_in_the_container() {
    let (_tmp, root) = fake_root("pids");
    let unit = fake_unit(&root, "pids");
    fs::write(unit.join("memory.max"), "268435456\n").expect("unit");
    let mut host = fake_host(&root, Some("system.slice/app.service"));
    // A cgroup without the memory controller has no memory.max: none is made up.
    host.fs.mkdir = |p| {
        fake_mkdir(p)?;
        fs::remove_file(p.join("memory.max"))
    };
    let cg = Cgroup::create_on(&host, "nomem", None, None).expect("create");
    assert!(!unit.join("slate/nomem/memory.max").exists());
    cg.remove().expect("remove");
}

/// A hybrid host: cpu and cpuacct co-mounted, memory, pids, and the cgroup2 mount; the
/// container's view names each hierarchy as its mount point and includes the cgroup2 one.
#[test]
fn v1_hybrid_view_has_every_hierarchy_and_the_unified_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = |n: &str| tmp.path().join(n);
    let unified = m("unified");
    let host = Host {
        layout: Layout::V1 {
            hierarchies: vec![
                ("cpu".to_owned(), m("cpu,cpuacct")),
                ("cpuacct".to_owned(), m("cpu,cpuacct")),
                ("memory".to_owned(), m("memory")),
                ("pids".to_owned(), m("pids")),
            ],
            unified: Some(unified.clone()),
        },
        proc_cgroups: Some(PROC_CGROUPS_PI.to_owned()),
        unit: None,
        unit_not_delegated: false,
        fs: FAKE_OPS,
        boot: Some(BootInfo::default()),
    };
    for h in ["cpu,cpuacct", "memory", "pids", "unified"] {
        fs::create_dir_all(m(h).join("slate/hy")).expect("dirs");
    }
    let cg = Cgroup::open_on(&host, "hy", None).expect("open");
    let want: Vec<(std::ffi::OsString, PathBuf)> = ["cpu,cpuacct", "memory", "pids", "unified"]
        .iter()
        .map(|h| (h.into(), m(h).join("slate/hy")))
        .collect();
    assert_eq!(cg.view(), View::Hierarchies(want));
    assert!(cg.paths().contains(&unified.join("slate/hy")));
    // Only the unified hierarchy left: still found, for the clean-up after a crash.
    for h in ["cpu,cpuacct", "memory", "pids"] {
        fs::remove_dir(m(h).join("slate/hy")).expect("rmdir");
    }
    assert_eq!(
        list_leftovers_on(&host).expect("list"),
        vec!["hy".to_owned()]
    );
}

#[test]
fn v2_a_moment_of_ebusy_after_the_evacuation_is_waited_out() {
    let (_tmp, root) = fake_root("cpu memory pids");
    let unit = fake_unit(&root, "cpu memory pids");
    fs::write(unit.join(FAKE_BUSY), "2").expect("busy");
    let host = fake_host(&root, Some("system.slice/app.service"));
    let cg = Cgroup::create_on(&host, "busy", None, None).expect("create");
    assert_eq!(
        sorted(words(&unit.join("cgroup.subtree_control"))),
        ["cpu", "memory", "pids"]
    );
    cg.remove().expect("remove");
}

#[path = "limits_tests.rs"]
mod limits_tests;
