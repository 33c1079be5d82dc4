//! Block I/O, cpuset and memory/swap limits as files: cgroup v2 and v1 through the whole
//! `create` path over the fake cgroupfs of `tests` (libcgroups' v2 writers included), cgroup
//! v1's weights on a fake blkio directory. The real v1 hierarchies are exercised by
//! tests/e2e/run_resources.rs.

use oci_spec::runtime::{
    LinuxBlockIo, LinuxBlockIoBuilder, LinuxThrottleDevice, LinuxThrottleDeviceBuilder,
    LinuxWeightDevice, LinuxWeightDeviceBuilder,
};

use super::*;

fn throttle(major: i64, minor: i64, rate: u64) -> LinuxThrottleDevice {
    LinuxThrottleDeviceBuilder::default()
        .major(major)
        .minor(minor)
        .rate(rate)
        .build()
        .expect("throttle device")
}

fn weight_device(major: i64, minor: i64, weight: u16) -> LinuxWeightDevice {
    LinuxWeightDeviceBuilder::default()
        .major(major)
        .minor(minor)
        .weight(weight)
        .build()
        .expect("weight device")
}

fn with_io(io: LinuxBlockIo) -> LinuxResources {
    let mut r = LinuxResources::default();
    r.set_block_io(Some(io));
    r
}

/// What `slate run --blkio-weight 300 --device-write-bps /dev/vda:1mb
/// --device-read-iops /dev/vda:100 --device-read-bps /dev/sda:512kb` puts in the spec.
fn docker_io() -> LinuxBlockIo {
    LinuxBlockIoBuilder::default()
        .weight(300u16)
        .throttle_write_bps_device(vec![throttle(254, 0, 1 << 20)])
        .throttle_read_iops_device(vec![throttle(254, 0, 100)])
        .throttle_read_bps_device(vec![throttle(8, 0, 512 << 10)])
        .build()
        .expect("block io")
}

/// A cgroupfs whose kernel has BFQ loaded: new cgroups also get `io.bfq.weight`.
fn fake_mkdir_bfq(p: &Path) -> std::io::Result<()> {
    fake_mkdir(p)?;
    fs::write(p.join("io.bfq.weight"), "")
}

/// A kernel with neither BFQ nor the io cost model: no weight file at all.
fn fake_mkdir_no_weights(p: &Path) -> std::io::Result<()> {
    fake_mkdir(p)?;
    fs::remove_file(p.join("io.weight"))
}

#[test]
fn v2_io_weight_is_converted_once_linearly() {
    // runc's and crun's 10..1000 -> 1..10000; libcgroups' u16 version overflows above 16.
    assert_eq!(limits::v2_io_weight(0), 0);
    assert_eq!(limits::v2_io_weight(10), 1);
    assert_eq!(limits::v2_io_weight(300), 2930);
    assert_eq!(limits::v2_io_weight(500), 4950);
    assert_eq!(limits::v2_io_weight(1000), 10000);
}

#[test]
fn v2_block_io_writes_io_weight_and_one_io_max_line_per_device() {
    let (_tmp, root) = fake_root("cpuset cpu io memory pids");
    let host = fake_host(&root, None);
    let cg = Cgroup::create_on(&host, "io", None, Some(&with_io(docker_io()))).expect("create");
    let leaf = root.join("slate/io");
    for dir in [&root, &root.join("slate")] {
        let sc = words(&dir.join("cgroup.subtree_control"));
        assert!(sc.iter().any(|c| c == "io"), "{}: {sc:?}", dir.display());
    }
    // A plain file keeps the last write (the kernel merges them): the last device's line,
    // whole, with both of its limits; the lines themselves are checked below.
    assert_eq!(read(&leaf.join("io.max")), "254:0 wbps=1048576 riops=100");
    assert_eq!(read(&leaf.join("io.weight")), "2930");
    cg.remove().expect("remove");
}

#[test]
fn io_max_lines_are_one_per_device_in_the_order_first_given() {
    assert_eq!(
        limits::io_max_lines(&docker_io()),
        vec!["8:0 rbps=524288", "254:0 wbps=1048576 riops=100"]
    );
    assert!(limits::io_max_lines(&LinuxBlockIo::default()).is_empty());
}

#[test]
fn v2_io_max_line_has_every_limit_of_the_device_later_ones_winning() {
    let (_tmp, root) = fake_root("io");
    let host = fake_host(&root, None);
    let io = LinuxBlockIoBuilder::default()
        .throttle_read_bps_device(vec![throttle(254, 0, 1 << 20)])
        .throttle_write_bps_device(vec![throttle(254, 0, 1), throttle(254, 0, 2 << 20)])
        .throttle_read_iops_device(vec![throttle(254, 0, 100)])
        .throttle_write_iops_device(vec![throttle(254, 0, 0)])
        .build()
        .expect("block io");
    let cg = Cgroup::create_on(&host, "max", None, Some(&with_io(io))).expect("create");
    // 0 is v1's "no limit": io.max says that with `max` (it refuses 0 with ERANGE).
    assert_eq!(
        read(&root.join("slate/max/io.max")),
        "254:0 rbps=1048576 wbps=2097152 riops=100 wiops=max"
    );
    cg.remove().expect("remove");
}

#[test]
fn v2_bfq_takes_the_weight_unconverted_also_per_device() {
    let (_tmp, root) = fake_root("io");
    let mut host = fake_host(&root, None);
    host.fs.mkdir = fake_mkdir_bfq;
    let io = LinuxBlockIoBuilder::default()
        .weight(300u16)
        .build()
        .expect("block io");
    let cg = Cgroup::create_on(&host, "bfq", None, Some(&with_io(io))).expect("create");
    let leaf = root.join("slate/bfq");
    assert_eq!(read(&leaf.join("io.bfq.weight")), "300");
    assert_eq!(
        read(&leaf.join("io.weight")),
        "",
        "BFQ's file is the one used"
    );
    cg.remove().expect("remove");

    let io = LinuxBlockIoBuilder::default()
        .weight_device(vec![weight_device(8, 16, 700)])
        .build()
        .expect("block io");
    let cg = Cgroup::create_on(&host, "bfqdev", None, Some(&with_io(io))).expect("create");
    assert_eq!(read(&root.join("slate/bfqdev/io.bfq.weight")), "8:16 700");
    cg.remove().expect("remove");
}

#[test]
fn v2_device_weight_without_bfq_goes_to_io_weight_converted() {
    let (_tmp, root) = fake_root("io");
    let host = fake_host(&root, None);
    let io = LinuxBlockIoBuilder::default()
        .weight_device(vec![weight_device(254, 0, 1000)])
        .build()
        .expect("block io");
    let cg = Cgroup::create_on(&host, "dw", None, Some(&with_io(io))).expect("create");
    assert_eq!(read(&root.join("slate/dw/io.weight")), "254:0 10000");
    cg.remove().expect("remove");
}

#[test]
fn v2_weight_on_a_host_without_weight_files_is_one_clear_line() {
    let (_tmp, root) = fake_root("io");
    let mut host = fake_host(&root, None);
    host.fs.mkdir = fake_mkdir_no_weights;
    let io = LinuxBlockIoBuilder::default()
        .weight(300u16)
        .build()
        .expect("block io");
    let err = Cgroup::create_on(&host, "now", None, Some(&with_io(io))).expect_err("must fail");
    let msg = err.to_string();
    assert!(
        matches!(err, CgroupError::BlkioWeightUnsupported { .. }),
        "{msg}"
    );
    for part in [
        "cannot weight block I/O",
        "io.bfq.weight",
        "io.weight",
        "BFQ",
    ] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(!root.join("slate/now").exists(), "nothing left behind");
    // Throttling needs no weight file: the same host takes io.max.
    let io = LinuxBlockIoBuilder::default()
        .throttle_write_bps_device(vec![throttle(254, 0, 1 << 20)])
        .build()
        .expect("block io");
    let cg = Cgroup::create_on(&host, "thr", None, Some(&with_io(io))).expect("create");
    assert_eq!(read(&root.join("slate/thr/io.max")), "254:0 wbps=1048576");
    cg.remove().expect("remove");
}

#[test]
fn v2_block_io_without_the_io_controller_names_it() {
    let (_tmp, root) = fake_root("cpu memory pids");
    let host = fake_host(&root, None);
    let err =
        Cgroup::create_on(&host, "noio", None, Some(&with_io(docker_io()))).expect_err("must fail");
    assert!(
        matches!(&err, CgroupError::MissingController { controller, .. } if controller == "io"),
        "{err}"
    );
    // An empty blockIO section asks for nothing, so it needs no controller.
    let cg = Cgroup::create_on(
        &host,
        "empty",
        None,
        Some(&with_io(LinuxBlockIo::default())),
    )
    .expect("create");
    cg.remove().expect("remove");
}

#[test]
fn weights_out_of_range_and_v2_leaf_weights_are_refused() {
    let (_tmp, root) = fake_root("io");
    let host = fake_host(&root, None);
    for (io, want) in [
        (
            LinuxBlockIoBuilder::default().weight(5u16).build(),
            "invalid block I/O weight 5: expected 10 to 1000",
        ),
        (
            LinuxBlockIoBuilder::default()
                .weight_device(vec![weight_device(8, 0, 1001)])
                .build(),
            "invalid block I/O weight 1001",
        ),
        (
            LinuxBlockIoBuilder::default().leaf_weight(100u16).build(),
            "leaf weights do not exist on cgroup v2",
        ),
    ] {
        let io = io.expect("block io");
        let err = Cgroup::create_on(&host, "w", None, Some(&with_io(io))).expect_err("must fail");
        assert!(err.to_string().contains(want), "{err}");
        assert!(!root.join("slate/w").exists());
    }
}

#[test]
fn v2_cpuset_and_memory_files() {
    let (_tmp, root) = fake_root("cpuset memory");
    let host = fake_host(&root, None);
    let mut cpu = oci_spec::runtime::LinuxCpu::default();
    cpu.set_cpus(Some("0-1,3".to_owned()));
    cpu.set_mems(Some("0".to_owned()));
    let mut r = LinuxResources::default();
    r.set_cpu(Some(cpu));
    // --memory 64m --memory-swap 128m --memory-reservation 32m
    r.set_memory(Some(
        LinuxMemoryBuilder::default()
            .limit(64 << 20)
            .swap(128 << 20)
            .reservation(32 << 20)
            .build()
            .expect("memory"),
    ));
    let cg = Cgroup::create_on(&host, "cs", None, Some(&r)).expect("create");
    let leaf = root.join("slate/cs");
    assert!(words(&root.join("slate/cgroup.subtree_control"))
        .iter()
        .any(|c| c == "cpuset"));
    assert_eq!(read(&leaf.join("cpuset.cpus")), "0-1,3");
    assert_eq!(read(&leaf.join("cpuset.mems")), "0");
    assert_eq!(read(&leaf.join("memory.max")), "67108864");
    // OCI's swap is memory+swap; v2's memory.swap.max is the swap alone
    assert_eq!(read(&leaf.join("memory.swap.max")), "67108864");
    assert_eq!(read(&leaf.join("memory.low")), "33554432");
    cg.remove().expect("remove");
}

#[test]
fn v2_swap_equal_to_memory_means_no_swap() {
    // docker's --memory 64m --memory-swap 64m; libcgroups alone leaves swap unlimited here
    let (_tmp, root) = fake_root("memory");
    let host = fake_host(&root, None);
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 << 20)
                .swap(64 << 20)
                .build()
                .expect("memory"),
        )
        .build()
        .expect("resources");
    let cg = Cgroup::create_on(&host, "noswap", None, Some(&r)).expect("create");
    let leaf = root.join("slate/noswap");
    assert_eq!(read(&leaf.join("memory.max")), "67108864");
    assert_eq!(read(&leaf.join("memory.swap.max")), "0");
    cg.remove().expect("remove");
}

/// A v1 blkio directory as a kernel with BFQ (and without CFQ, gone in 5.0) makes it.
fn v1_blkio_dir(files: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("blkio/slate/c");
    fs::create_dir_all(&dir).expect("dir");
    for f in files {
        fs::write(dir.join(f), "").expect("file");
    }
    (tmp, dir)
}

#[test]
fn v1_weights_go_to_bfq_files_without_cfq() {
    let (_tmp, dir) = v1_blkio_dir(&["blkio.bfq.weight", "blkio.bfq.weight_device"]);
    let io = LinuxBlockIoBuilder::default()
        .weight(300u16)
        .weight_device(vec![weight_device(8, 0, 50)])
        .build()
        .expect("block io");
    limits::apply_v1(&dir, &with_io(io)).expect("apply");
    // v1's scale is the spec's: no conversion
    assert_eq!(read(&dir.join("blkio.bfq.weight")), "300");
    assert_eq!(read(&dir.join("blkio.bfq.weight_device")), "8:0 50");
}

#[test]
fn v1_weights_prefer_cfq_files_where_the_kernel_has_them() {
    let (_tmp, dir) = v1_blkio_dir(&[
        "blkio.weight",
        "blkio.weight_device",
        "blkio.leaf_weight",
        "blkio.leaf_weight_device",
        "blkio.bfq.weight",
    ]);
    let dev = LinuxWeightDeviceBuilder::default()
        .major(8)
        .minor(0)
        .weight(50u16)
        .leaf_weight(60u16)
        .build()
        .expect("weight device");
    let io = LinuxBlockIoBuilder::default()
        .weight(300u16)
        .leaf_weight(200u16)
        .weight_device(vec![dev])
        .build()
        .expect("block io");
    limits::apply_v1(&dir, &with_io(io)).expect("apply");
    assert_eq!(read(&dir.join("blkio.weight")), "300");
    assert_eq!(read(&dir.join("blkio.weight_device")), "8:0 50");
    assert_eq!(read(&dir.join("blkio.leaf_weight")), "200");
    assert_eq!(read(&dir.join("blkio.leaf_weight_device")), "8:0 60");
    assert_eq!(read(&dir.join("blkio.bfq.weight")), "");
}

#[test]
fn v1_weight_without_weight_files_is_one_clear_line_and_throttles_are_not_written_there() {
    let (_tmp, dir) = v1_blkio_dir(&["blkio.throttle.write_bps_device"]);
    let err = limits::apply_v1(
        &dir,
        &with_io(
            LinuxBlockIoBuilder::default()
                .weight(300u16)
                .build()
                .expect("block io"),
        ),
    )
    .expect_err("must fail");
    let msg = err.to_string();
    for part in [
        "cannot weight block I/O",
        "blkio.weight",
        "blkio.bfq.weight",
    ] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }
    // Throttles are v1_limits' job: nothing written here, and on v2 libcgroups gets no
    // block I/O at all.
    limits::apply_v1(
        &dir,
        &with_io(
            LinuxBlockIoBuilder::default()
                .throttle_write_bps_device(vec![throttle(254, 0, 1)])
                .build()
                .expect("block io"),
        ),
    )
    .expect("throttles only");
    assert_eq!(read(&dir.join("blkio.throttle.write_bps_device")), "");
    assert!(limits::for_libcgroups_v2(&with_io(docker_io()))
        .block_io()
        .is_none());
}

/// A v1 cgroup's interface files as the kernel creates them (all of them in every
/// hierarchy: the fake does not tell hierarchies apart).
fn fake_mkdir_v1(p: &Path) -> std::io::Result<()> {
    fs::create_dir(p)?;
    for f in [
        "cgroup.procs",
        "memory.memsw.limit_in_bytes",
        "memory.soft_limit_in_bytes",
        "memory.oom_control",
        "memory.swappiness",
        "cpu.shares",
        "cpu.cfs_period_us",
        "cpu.cfs_quota_us",
        "cpuset.cpus",
        "cpuset.mems",
        "pids.max",
        "devices.allow",
        "devices.deny",
        "blkio.weight",
        "blkio.throttle.read_bps_device",
        "blkio.throttle.write_bps_device",
        "blkio.throttle.read_iops_device",
        "blkio.throttle.write_iops_device",
        "net_cls.classid",
    ] {
        fs::write(p.join(f), "")?;
    }
    // A kernel says 9223372036854771712 (no limit); a plain file is not truncated by a
    // write, so the fake's current limit is a short one, lower than any written here.
    fs::write(p.join("memory.limit_in_bytes"), "1")
}

const FAKE_OPS_V1: FsOps = FsOps {
    mkdir: fake_mkdir_v1,
    ..FAKE_OPS
};

/// The whole v1 `create` over a fake cgroupfs: every limit lands in its hierarchy's
/// directory of the container, with libcgroups' file formats.
#[test]
fn v1_create_writes_every_limit_into_its_hierarchy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = |n: &str| tmp.path().join(n);
    let names = [
        "blkio",
        "cpu,cpuacct",
        "cpuset",
        "devices",
        "memory",
        "net_cls",
        "pids",
    ];
    for h in names {
        fs::create_dir(m(h)).expect("hierarchy");
        fake_mkdir_v1(&m(h).join("slate")).expect("slate parent");
    }
    for d in [m("cpuset"), m("cpuset").join("slate")] {
        fs::write(d.join("cpuset.cpus"), "0-3").expect("cpus");
        fs::write(d.join("cpuset.mems"), "0").expect("mems");
    }
    let host = Host {
        layout: Layout::V1 {
            hierarchies: [
                ("blkio", "blkio"),
                ("cpu", "cpu,cpuacct"),
                ("cpuacct", "cpu,cpuacct"),
                ("cpuset", "cpuset"),
                ("devices", "devices"),
                ("memory", "memory"),
                ("net_cls", "net_cls"),
                ("pids", "pids"),
            ]
            .iter()
            .map(|(c, d)| (c.to_string(), m(d)))
            .collect(),
            unified: None,
        },
        proc_cgroups: Some(PROC_CGROUPS_PI.to_owned()),
        unit: None,
        unit_not_delegated: false,
        fs: FAKE_OPS_V1,
        boot: Some(BootInfo::default()),
    };
    let mut r = limits();
    r.set_block_io(Some(
        LinuxBlockIoBuilder::default()
            .throttle_read_bps_device(vec![throttle(8, 0, 512 << 10)])
            .build()
            .expect("block io"),
    ));
    r.set_devices(Some(vec![
        oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .expect("deny all"),
    ]));
    r.set_network(Some(
        oci_spec::runtime::LinuxNetworkBuilder::default()
            .class_id(0x10001u32)
            .build()
            .expect("network"),
    ));
    let cg = Cgroup::create_on(&host, "c1", None, Some(&r)).expect("create");
    let leaf = |h: &str, f: &str| read(&m(h).join("slate/c1").join(f));
    assert_eq!(leaf("memory", "memory.limit_in_bytes"), "134217728");
    assert_eq!(leaf("memory", "memory.memsw.limit_in_bytes"), "268435456");
    assert_eq!(leaf("memory", "memory.soft_limit_in_bytes"), "67108864");
    assert_eq!(leaf("memory", "memory.oom_control"), "0");
    assert_eq!(leaf("cpu,cpuacct", "cpu.shares"), "1024");
    assert_eq!(leaf("cpu,cpuacct", "cpu.cfs_quota_us"), "50000");
    assert_eq!(leaf("cpu,cpuacct", "cpu.cfs_period_us"), "100000");
    assert_eq!(leaf("cpuset", "cpuset.cpus"), "0-1");
    assert_eq!(leaf("cpuset", "cpuset.mems"), "0");
    assert_eq!(leaf("pids", "pids.max"), "64");
    assert_eq!(
        leaf("blkio", "blkio.throttle.read_bps_device"),
        "8:0 524288"
    );
    assert_eq!(leaf("devices", "devices.deny"), "a *:* rwm");
    // The default allowlist follows, one rule per write on one descriptor (a plain file
    // shows the writes one after the other).
    let defaults = [
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 1:7 rwm",
        "c 5:0 rwm",
        "c 1:9 rwm",
        "c 1:8 rwm",
        "c *:* m",
        "b *:* m",
        "c 5:1 rwm",
        "c 136:* rwm",
        "c 5:2 rwm",
        "c 10:200 rwm",
    ];
    assert_eq!(leaf("devices", "devices.allow"), defaults.concat());
    assert_eq!(leaf("net_cls", "net_cls.classid"), "65537");
    cg.remove().expect("remove");
    assert!(!m("memory").join("slate/c1").exists());
}

#[test]
fn v1_without_a_devices_hierarchy_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pids = tmp.path().join("pids");
    fs::create_dir(&pids).expect("pids");
    let host = Host {
        layout: Layout::V1 {
            hierarchies: vec![("pids".to_owned(), pids.clone())],
            unified: None,
        },
        proc_cgroups: Some(PROC_CGROUPS_PI.to_owned()),
        unit: None,
        unit_not_delegated: false,
        fs: FAKE_OPS_V1,
        boot: Some(BootInfo::default()),
    };
    let err = Cgroup::create_on(&host, "nodev", None, None).expect_err("must fail");
    assert!(err.to_string().contains("devices"), "{err}");
    assert!(!pids.join("slate").exists());
}

#[test]
fn v1_device_access_letters_are_the_kernels() {
    use super::devices::access_letters;
    assert_eq!(access_letters(7), "rwm");
    assert_eq!(access_letters(1), "m");
    assert_eq!(access_letters(6), "rw");
}

#[test]
fn required_controllers_ask_for_io_blkio_and_cpuset() {
    let r = with_io(docker_io());
    assert_eq!(required_controllers(&r, true), vec!["io"]);
    assert_eq!(required_controllers(&r, false), vec!["blkio", "devices"]);
    let mut cpu = oci_spec::runtime::LinuxCpu::default();
    cpu.set_mems(Some("0".to_owned()));
    let mut r = LinuxResources::default();
    r.set_cpu(Some(cpu));
    assert_eq!(required_controllers(&r, true), vec!["cpuset"]);
    assert!(required_controllers(&with_io(LinuxBlockIo::default()), true).is_empty());
}

/// A kernel whose parents allow cpus 1 and 3 and node 0 only: every new cgroup's effective
/// cpuset is narrowed to that, whatever is written to `cpuset.cpus`.
fn fake_mkdir_cpus_1_and_3(p: &Path) -> std::io::Result<()> {
    fake_mkdir(p)?;
    fs::write(p.join("cpuset.cpus.effective"), "1,3\n")?;
    fs::write(p.join("cpuset.mems.effective"), "0\n")
}

fn cpuset(cpus: &str, mems: Option<&str>) -> LinuxResources {
    let mut cpu = oci_spec::runtime::LinuxCpu::default();
    cpu.set_cpus(Some(cpus.to_owned()));
    cpu.set_mems(mems.map(str::to_owned));
    let mut r = LinuxResources::default();
    r.set_cpu(Some(cpu));
    r
}

#[test]
fn v2_cpuset_the_parents_do_not_allow_is_refused_not_narrowed() {
    let (_tmp, root) = fake_root("cpuset");
    let mut host = fake_host(&root, None);
    host.fs.mkdir = fake_mkdir_cpus_1_and_3;
    // in effect as asked, however it is spelled
    for asked in ["1,3", "3,1", "1,3-3"] {
        let cg = Cgroup::create_on(&host, "ok", None, Some(&cpuset(asked, Some("0"))))
            .unwrap_or_else(|e| panic!("{asked}: {e}"));
        assert_eq!(read(&root.join("slate/ok/cpuset.cpus")), asked);
        cg.remove().expect("remove");
    }
    // cpu 0 is not in effect: the kernel would have run the container on 1 and 3
    let err = Cgroup::create_on(&host, "c0", None, Some(&cpuset("0-1", None)))
        .expect_err("cpu 0 is not available");
    let msg = err.to_string();
    assert!(
        matches!(err, CgroupError::CpusetNotInEffect { .. }),
        "{msg}"
    );
    for part in [
        "cpuset.cpus.effective",
        "\"1,3\"",
        "\"0-1\"",
        "AllowedCPUs=",
    ] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }
    assert!(!root.join("slate/c0").exists(), "nothing left behind");
    let err = Cgroup::create_on(&host, "m1", None, Some(&cpuset("1,3", Some("1"))))
        .expect_err("node 1 is not available");
    assert!(err.to_string().contains("cpuset.mems.effective"), "{err}");
}

#[test]
fn cpu_lists_parse_and_compare_as_the_kernel_writes_them() {
    assert_eq!(parse_cpu_list("0-2,4"), Some(vec![(0, 2), (4, 4)]));
    for bad in [
        "",
        "a",
        "1-",
        "-1",
        "3-1",
        "0-7:2",
        "1,,2",
        "1 2",
        "99999999999",
    ] {
        assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
    }
    assert_eq!(normalized_cpu_list("3,0-1,2\n"), Some(vec![(0, 3)]));
    assert_eq!(normalized_cpu_list("0-1,1-2,5"), Some(vec![(0, 2), (5, 5)]));
    assert_eq!(normalized_cpu_list(""), Some(vec![]));
}
