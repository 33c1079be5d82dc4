//! The compiler's output checked two ways: its shape (what the verifier insists on), and its
//! decisions, by running it in a small interpreter of the opcodes it emits. The same program
//! on the real kernel is tested in `kernel_tests` below (root, a cgroup2 mount).

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::*;

fn rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: Option<&str>,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(typ);
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(access.map(str::to_owned));
    r
}

/// What `slate run` puts in the spec (cli/src/spec/resources.rs `device_rules`).
pub(crate) fn docker_rules() -> Vec<LinuxDeviceCgroup> {
    let c = Some(LinuxDeviceType::C);
    let mut rules = vec![
        rule(false, None, None, None, Some("rwm")),
        rule(true, c, None, None, Some("m")),
        rule(true, Some(LinuxDeviceType::B), None, None, Some("m")),
    ];
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(0)),
        (5, Some(1)),
        (5, Some(2)),
        (136, None),
        (10, Some(200)),
    ] {
        rules.push(rule(true, c, Some(major), minor, Some("rwm")));
    }
    rules
}

fn program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    match compile(rules).expect("compiles") {
        DeviceFilter::Program(p) => p,
        DeviceFilter::AllowAll => panic!("expected a program"),
    }
}

/// Runs `prog` on one request as the kernel would, for the opcodes the compiler emits; any
/// other opcode, a jump out of the program or a read of an unset register fails the test.
fn run(prog: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> bool {
    let ctx = [(access << 16) | typ, major, minor];
    let mut regs: [Option<u64>; 11] = [None; 11];
    regs[1] = Some(0); // the context pointer; only ever used as the base of LDX_W
    let mut pc = 0usize;
    for _ in 0..10_000 {
        let i = prog.get(pc).copied().expect("pc inside the program");
        let get = |r: u8| regs[r as usize].unwrap_or_else(|| panic!("r{r} read unset at {pc}"));
        let mut next = pc + 1;
        match i.code {
            LDX_W => {
                assert_eq!(i.src, 1, "loads only from the context");
                let off = i.off as usize;
                assert!(off % 4 == 0 && off < 12, "context offset {off}");
                regs[i.dst as usize] = Some(u64::from(ctx[off / 4]));
            }
            AND32_K => regs[i.dst as usize] = Some((get(i.dst) as u32 & i.imm as u32) as u64),
            RSH32_K => regs[i.dst as usize] = Some(((get(i.dst) as u32) >> i.imm) as u64),
            MOV32_X => regs[i.dst as usize] = Some(get(i.src) as u32 as u64),
            MOV64_K => regs[i.dst as usize] = Some(i.imm as i64 as u64),
            JNE_K => {
                if get(i.dst) != i.imm as i64 as u64 {
                    next = (pc as i64 + 1 + i64::from(i.off)) as usize;
                }
            }
            JNE_X => {
                if get(i.dst) != get(i.src) {
                    next = (pc as i64 + 1 + i64::from(i.off)) as usize;
                }
            }
            EXIT => return get(0) != 0,
            other => panic!("opcode {other:#x} at {pc}"),
        }
        assert!(next > pc, "backward jump at {pc}");
        pc = next;
    }
    panic!("program did not exit");
}

const R: u32 = ACC_READ;
const W: u32 = ACC_WRITE;
const M: u32 = ACC_MKNOD;

#[test]
fn docker_list_allows_the_standard_devices_and_nothing_else() {
    let p = program(&docker_rules());
    // the standard devices, every way
    for (maj, min) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        assert!(run(&p, DEV_CHAR, R | W, maj, min), "c {maj}:{min} rw");
        assert!(run(&p, DEV_CHAR, R, maj, min), "c {maj}:{min} r");
        assert!(run(&p, DEV_CHAR, M, maj, min), "c {maj}:{min} m");
    }
    assert!(run(&p, DEV_CHAR, R | W, 136, 0), "pts/0");
    assert!(run(&p, DEV_CHAR, R | W, 136, 4711), "pts/4711");
    assert!(run(&p, DEV_CHAR, R | W, 10, 200), "tun");
    // issue 11: the host's disk, its partitions, memory, a serial port, the tun's neighbours
    assert!(!run(&p, DEV_BLOCK, R, 254, 0), "b 254:0 r");
    assert!(!run(&p, DEV_BLOCK, W, 8, 1), "b 8:1 w");
    assert!(!run(&p, DEV_BLOCK, R | W, 179, 0), "b 179:0 rw (mmcblk0)");
    assert!(!run(&p, DEV_CHAR, R, 1, 1), "c 1:1 (mem)");
    assert!(!run(&p, DEV_CHAR, R | W, 4, 64), "c 4:64 (ttyS0)");
    assert!(!run(&p, DEV_CHAR, R, 10, 201));
    assert!(!run(&p, DEV_CHAR, R, 137, 0));
    // a null-typed block device is not /dev/null
    assert!(!run(&p, DEV_BLOCK, R, 1, 3));
    // mknod of anything: creating a node is harmless, opening it is what counts
    assert!(run(&p, DEV_BLOCK, M, 254, 0), "mknod b 254:0");
    assert!(run(&p, DEV_CHAR, M, 1, 1), "mknod c 1:1");
    // but mknod is not a key to open
    assert!(!run(&p, DEV_BLOCK, M | R, 254, 0));
}

#[test]
fn the_last_matching_rule_wins() {
    // (major 4, the serial ports, is not in the default allowlist)
    let c = Some(LinuxDeviceType::C);
    let rules = [
        rule(true, None, None, None, Some("rwm")),
        rule(false, c, Some(4), None, Some("rwm")),
        rule(true, c, Some(4), Some(64), Some("r")),
    ];
    let p = program(&rules);
    assert!(run(&p, DEV_CHAR, R, 4, 64), "re-allowed by the last rule");
    assert!(
        !run(&p, DEV_CHAR, W, 4, 64),
        "w is not in the last rule, the deny matches"
    );
    assert!(!run(&p, DEV_CHAR, R, 4, 65), "denied by the middle rule");
    assert!(run(&p, DEV_CHAR, R | W, 7, 5), "allowed by the first rule");
    assert!(run(&p, DEV_BLOCK, R, 4, 64), "b is not c: the first rule");
}

#[test]
fn access_must_be_within_the_rule() {
    let rules = [
        rule(false, None, None, None, None),
        rule(
            true,
            Some(LinuxDeviceType::C),
            Some(4),
            Some(64),
            Some("rw"),
        ),
    ];
    let p = program(&rules);
    assert!(run(&p, DEV_CHAR, R, 4, 64));
    assert!(run(&p, DEV_CHAR, W, 4, 64));
    assert!(run(&p, DEV_CHAR, R | W, 4, 64));
    assert!(!run(&p, DEV_CHAR, R | M, 4, 64), "rm is not within rw");
    // the default allowlist appends mknod of any node, as on v1
    assert!(run(&p, DEV_CHAR, M, 4, 64));
}

#[test]
fn wildcards_and_types() {
    let rules = [
        rule(false, None, None, None, Some("rwm")),
        // -1 is the wildcard as much as none is
        rule(true, Some(LinuxDeviceType::B), Some(7), Some(-1), Some("r")),
        rule(
            true,
            Some(LinuxDeviceType::A),
            Some(42),
            Some(1),
            Some("rw"),
        ),
    ];
    let p = program(&rules);
    assert!(run(&p, DEV_BLOCK, R, 7, 0));
    assert!(run(&p, DEV_BLOCK, R, 7, 99));
    assert!(!run(&p, DEV_BLOCK, W, 7, 0));
    assert!(!run(&p, DEV_CHAR, R, 7, 0));
    assert!(run(&p, DEV_BLOCK, R | W, 42, 1), "type a: block");
    assert!(run(&p, DEV_CHAR, R | W, 42, 1), "type a: char");
    assert!(!run(&p, DEV_CHAR, R, 42, 2));
}

#[test]
fn an_empty_list_denies_all_but_the_defaults() {
    let p = program(&[]);
    assert!(
        run(&p, DEV_CHAR, R | W, 1, 3),
        "null, from the default allowlist"
    );
    assert!(
        run(&p, DEV_CHAR, R | W, 136, 2),
        "pts, from the default allowlist"
    );
    assert!(!run(&p, DEV_BLOCK, R, 254, 0));
    assert!(!run(&p, DEV_CHAR, R, 1, 1));
}

#[test]
fn allow_all_needs_no_program() {
    // --privileged
    let all = [rule(true, None, None, None, Some("rwm"))];
    assert_eq!(compile(&all), Ok(DeviceFilter::AllowAll));
    // a deny after the allow-all still needs one
    let mut some = all.to_vec();
    some.push(rule(
        false,
        Some(LinuxDeviceType::B),
        Some(254),
        None,
        Some("r"),
    ));
    let p = program(&some);
    assert!(!run(&p, DEV_BLOCK, R, 254, 0));
    assert!(run(&p, DEV_BLOCK, R, 8, 0));
    // an allow-all that comes after a deny overrides it
    some.push(rule(true, None, Some(-1), Some(-1), None));
    assert_eq!(compile(&some), Ok(DeviceFilter::AllowAll));
}

#[test]
fn program_shape() {
    let p = program(&docker_rules());
    // six context loads, then blocks of checks ending in `r0 = verdict; exit`
    assert_eq!(p[0], insn(LDX_W, 2, 1, 0, 0));
    assert_eq!(p[5], insn(LDX_W, 5, 1, 8, 0));
    // the deny-all rule is first in the list, so it is the last block, and it has no checks:
    // the program ends with it and has no default tail behind it (unreachable code is refused)
    let n = p.len();
    assert_eq!(p[n - 2], insn(MOV64_K, 0, 0, 0, 0));
    assert_eq!(p[n - 1], insn(EXIT, 0, 0, 0, 0));
    assert_eq!(
        p[n - 4..n - 2],
        [insn(MOV64_K, 0, 0, 0, 1), insn(EXIT, 0, 0, 0, 0)],
        "an allow block right before it: no default tail, nothing unreachable"
    );
    // every jump lands inside the program, on the start of a block or a check
    for (pc, i) in p.iter().enumerate() {
        if i.code == JNE_K || i.code == JNE_X {
            let target = pc + 1 + i.off as usize;
            assert!(i.off > 0 && target < n, "jump at {pc} to {target}");
        }
    }
    // every path ends in an exit with r0 set: the interpreter has checked the decisions;
    // the size stays far below the kernel's 4096-instruction limit for any privilege
    // docker's list repeats the default allowlist but for the deny-all: 6 loads, 12 blocks
    // of 4 to 6 instructions, the deny-all
    assert_eq!(n, 69, "{n} instructions");
    // the program ends with the deny-all rather than a default only because docker's list
    // starts with one; without it, the default deny tail is emitted
    let p = program(&docker_rules()[1..]);
    assert_eq!(
        &p[p.len() - 2..],
        &[insn(MOV64_K, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)]
    );
    assert!(!run(&p, DEV_BLOCK, R, 254, 0));
}

#[test]
fn bad_rules_are_named() {
    let e = compile(&[rule(
        true,
        Some(LinuxDeviceType::C),
        Some(1),
        Some(3),
        Some("rx"),
    )])
    .expect_err("x is no access");
    assert_eq!(e.rule, "allow c 1:3 rx");
    assert!(e.to_string().contains("r, w and m"), "{e}");
    let e = compile(&[rule(true, Some(LinuxDeviceType::P), None, None, None)])
        .expect_err("p is no device");
    assert!(e.reason.contains("FIFO"));
    let e = compile(&[rule(false, Some(LinuxDeviceType::B), Some(-2), None, None)])
        .expect_err("negative major");
    assert_eq!(e.rule, "deny b -2:* rwm");
    compile(&[rule(
        false,
        Some(LinuxDeviceType::B),
        Some(1 << 31),
        None,
        None,
    )])
    .expect_err("too large for an immediate");
}

#[test]
fn empty_access_matches_nothing() {
    let rules = [
        rule(false, None, None, None, Some("rwm")),
        rule(true, Some(LinuxDeviceType::B), Some(254), Some(0), Some("")),
    ];
    let p = program(&rules);
    assert!(!run(&p, DEV_BLOCK, R, 254, 0));
}

/// The program on this machine's kernel: loaded, attached to a fresh cgroup under the cgroup2
/// mount (the unified one of a hybrid host is enough: device programs need no controller), and
/// asked by a real open(2) and mknod(2) of a child process inside that cgroup.
mod kernel_tests {
    use std::ffi::CString;
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::PathBuf;

    use super::*;
    use crate::bpf;

    /// The first cgroup2 mount in mountinfo (`/sys/fs/cgroup` on a v2 host,
    /// `/sys/fs/cgroup/unified` on a hybrid one).
    fn cgroup2_mount() -> PathBuf {
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        info.lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                (post.split(' ').next() == Some("cgroup2"))
                    .then(|| PathBuf::from(pre.split(' ').nth(4).unwrap_or_default()))
            })
            .expect("these tests need a cgroup2 mount (hybrid or pure v2 host)")
    }

    fn need_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the kernel tests of the device filter need root (bpf, mknod, cgroup directories)"
        );
    }

    /// A block device of this machine: the one `/` is on, else any in /sys/dev/block.
    fn host_block_device() -> (u32, u32) {
        let dev = std::fs::metadata("/").expect("stat /").dev();
        let (maj, min) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        if maj != 0 && std::path::Path::new(&format!("/sys/dev/block/{maj}:{min}")).exists() {
            return (maj as u32, min as u32);
        }
        let entry = std::fs::read_dir("/sys/dev/block")
            .expect("/sys/dev/block")
            .flatten()
            .next()
            .expect("a block device");
        let name = entry.file_name().into_string().expect("utf-8");
        let (a, b) = name.split_once(':').expect("MAJ:MIN");
        (a.parse().expect("major"), b.parse().expect("minor"))
    }

    struct CgroupDir(PathBuf);

    impl Drop for CgroupDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    fn open_dir(p: &std::path::Path) -> OwnedFd {
        std::fs::File::open(p)
            .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
            .into()
    }

    /// What the child saw, one errno (0 for success) per step.
    #[derive(Debug, PartialEq, Eq)]
    struct Seen {
        join: i32,
        mknod_block: i32,
        open_block: i32,
        mknod_null: i32,
        open_own_null: i32,
        open_dev_null: i32,
        open_mem: i32,
    }

    /// Forks a child that joins `cgroup` and tries the steps of [`Seen`] in `dir`. The child
    /// only makes raw system calls on strings prepared here: the test harness is
    /// multi-threaded, and another thread may hold the allocator's lock at the fork.
    fn probe(cgroup: &std::path::Path, dir: &std::path::Path, block: (u32, u32)) -> Seen {
        let c = |p: PathBuf| CString::new(p.into_os_string().into_encoded_bytes()).expect("path");
        let procs = c(cgroup.join("cgroup.procs"));
        let blk = c(dir.join("disk"));
        let null = c(dir.join("null"));
        let dev_null = CString::new("/dev/null").expect("literal");
        let mem = c(dir.join("mem"));
        let (rfd, wfd) = nix::unistd::pipe().expect("pipe");
        // SAFETY: the child runs only async-signal-safe calls (open, write, mknod, close,
        // _exit) on memory prepared before the fork, then exits without unwinding.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                drop(rfd);
                let mut out = [0i32; 7];
                let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
                // SAFETY (all calls below): valid NUL-terminated paths, a valid buffer; a
                // returned descriptor is closed at once.
                unsafe {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    out[0] = if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        errno()
                    } else {
                        0
                    };
                    let dev = libc::makedev(block.0, block.1);
                    out[1] = if libc::mknod(blk.as_ptr(), libc::S_IFBLK | 0o600, dev) == 0 {
                        0
                    } else {
                        errno()
                    };
                    let try_open = |p: &CString, flags| {
                        let fd = libc::open(p.as_ptr(), flags | libc::O_CLOEXEC);
                        if fd < 0 {
                            errno()
                        } else {
                            libc::close(fd);
                            0
                        }
                    };
                    out[2] = try_open(&blk, libc::O_RDONLY);
                    out[3] =
                        if libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3))
                            == 0
                        {
                            0
                        } else {
                            errno()
                        };
                    out[4] = try_open(&null, libc::O_RDWR);
                    out[5] = try_open(&dev_null, libc::O_RDWR);
                    out[6] =
                        if libc::mknod(mem.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 1))
                            == 0
                        {
                            try_open(&mem, libc::O_RDONLY)
                        } else {
                            errno()
                        };
                    libc::write(
                        wfd.as_raw_fd(),
                        out.as_ptr().cast(),
                        std::mem::size_of_val(&out),
                    );
                    libc::_exit(0);
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(wfd);
                let mut buf = [0u8; 28];
                let mut got = 0;
                while got < buf.len() {
                    match nix::unistd::read(rfd.as_raw_fd(), &mut buf[got..]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => panic!("read from the child: {e}"),
                    }
                }
                let _ = nix::sys::wait::waitpid(child, None);
                assert_eq!(got, buf.len(), "the child reported nothing");
                let v: Vec<i32> = buf
                    .chunks(4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                Seen {
                    join: v[0],
                    mknod_block: v[1],
                    open_block: v[2],
                    mknod_null: v[3],
                    open_own_null: v[4],
                    open_dev_null: v[5],
                    open_mem: v[6],
                }
            }
        }
    }

    /// A temp dir on a file system that allows device nodes (not nodev), so that a refused
    /// open is the filter's EPERM, not the mount's EACCES.
    fn dev_dir() -> tempfile::TempDir {
        let base = std::env::var_os("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).expect("tmp base");
        tempfile::tempdir_in(base).expect("tempdir")
    }

    #[test]
    fn docker_list_on_the_kernel_denies_the_disk_and_allows_null() {
        need_root();
        let root = cgroup2_mount();
        let cg = CgroupDir(root.join(format!("slate-devtest-{}", std::process::id())));
        std::fs::create_dir(&cg.0).expect("mkdir cgroup");
        let DeviceFilter::Program(insns) = compile(&docker_rules()).expect("compiles") else {
            panic!("docker's list needs a program");
        };
        let prog = bpf::load_device_program(&insns)
            .unwrap_or_else(|e| panic!("load: {} {}", e.errno, e.log));
        let dir_fd = open_dir(&cg.0);
        bpf::attach_device_program(dir_fd.as_fd(), prog.as_fd()).expect("attach");
        drop(prog);
        let ids = bpf::attached_device_programs(dir_fd.as_fd()).expect("query");
        assert_eq!(ids.len(), 1, "one program attached: {ids:?}");

        let block = host_block_device();
        let tmp = dev_dir();
        let seen = probe(&cg.0, tmp.path(), block);
        assert_eq!(
            seen,
            Seen {
                join: 0,
                mknod_block: 0,
                open_block: libc::EPERM,
                mknod_null: 0,
                open_own_null: 0,
                open_dev_null: 0,
                open_mem: libc::EPERM,
            },
            "block device {}:{}",
            block.0,
            block.1
        );
        let disk = std::fs::metadata(tmp.path().join("disk")).expect("the node exists");
        assert!(disk.file_type().is_block_device());

        // Removing the cgroup detaches the program, the last reference to it: it is freed
        // (asynchronously, after an RCU grace period).
        drop(dir_fd);
        let id = ids[0];
        assert!(bpf::program_exists(id).expect("get fd by id"));
        std::fs::remove_dir(&cg.0).expect("rmdir cgroup");
        let start = std::time::Instant::now();
        while bpf::program_exists(id).expect("get fd by id") {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "program {id} still exists 10 s after its cgroup was removed"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
