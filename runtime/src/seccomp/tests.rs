//! Tests of the BPF generator: generated programs run through a small classic-BPF interpreter
//! on hand-made `seccomp_data` inputs, for the default profile and for every operator.

use oci_spec::runtime::{
    Arch as OciArch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator,
    LinuxSyscall,
};

use super::bpf::{self, Insn};
use super::*;

const ALLOW: u32 = RET_ALLOW;
const EPERM: u32 = RET_ERRNO | 1;
const ENOSYS: u32 = RET_ERRNO | 38;

struct Data {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

impl Data {
    fn bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        b[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        b
    }
}

/// Runs a program the way the kernel's classic BPF interpreter would, for the instructions
/// the generator emits; panics on anything else or on a jump out of the program.
fn run(prog: &[Insn], data: &Data) -> u32 {
    let mem = data.bytes();
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    for _ in 0..100_000 {
        let i = prog
            .get(pc)
            .unwrap_or_else(|| panic!("pc {pc} out of the program"));
        pc += 1;
        match i.code {
            bpf::LD_W_ABS => {
                let k = i.k as usize;
                assert!(k % 4 == 0 && k + 4 <= 64, "bad load offset {k}");
                acc = u32::from_ne_bytes([mem[k], mem[k + 1], mem[k + 2], mem[k + 3]]);
            }
            bpf::ALU_AND_K => acc &= i.k,
            bpf::JA => pc += i.k as usize,
            bpf::JEQ_K | bpf::JGT_K | bpf::JGE_K => {
                let taken = match i.code {
                    bpf::JEQ_K => acc == i.k,
                    bpf::JGT_K => acc > i.k,
                    _ => acc >= i.k,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            bpf::RET_K => return i.k,
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
    panic!("program did not return");
}

fn nr(arch: Arch, name: &str) -> u32 {
    arch.lookup(name)
        .unwrap_or_else(|| panic!("{name} unknown on {arch:?}"))
}

fn call(p: &Program, arch: Arch, name: &str, args: [u64; 6]) -> u32 {
    run(
        p.instructions(),
        &Data {
            nr: nr(arch, name),
            arch: arch.audit(),
            args,
        },
    )
}

/// docker's names of every architecture slate has a table for.
const ALL_DOCKER_ARCHES: &[&str] = &["amd64", "386", "x86", "x32", "arm64", "arm"];

fn default_profile(caps: &[&str]) -> LinuxSeccomp {
    resolve_profile(
        DEFAULT_PROFILE_JSON,
        caps.iter(),
        Some((6, 1)),
        ALL_DOCKER_ARCHES,
    )
    .expect("resolve")
}

const CLONE_NEWUSER: u64 = 0x1000_0000;
const CLONE_NEWNS: u64 = 0x0002_0000;
const THREAD_FLAGS: u64 = 0x003d_0f00; // what pthread_create passes
const SIGCHLD: u64 = 17;

#[test]
fn tables_are_sorted_and_plausible() {
    for arch in [Arch::X86_64, Arch::Aarch64, Arch::Arm] {
        let t = arch.table();
        assert!(t.windows(2).all(|w| w[0].0 < w[1].0), "{arch:?} not sorted");
        assert!(t.len() > 280, "{arch:?} has only {} syscalls", t.len());
    }
    assert_eq!(Arch::X86_64.lookup("read"), Some(0));
    assert_eq!(Arch::X86_64.lookup("keyctl"), Some(250));
    assert_eq!(Arch::Aarch64.lookup("read"), Some(63));
    assert_eq!(Arch::Aarch64.lookup("open"), None);
    assert_eq!(Arch::Arm.lookup("read"), Some(3));
    assert_eq!(Arch::Arm.lookup("cacheflush"), Some(0x0f_0002));
}

#[test]
fn default_profile_allows_ordinary_work_and_denies_the_rest() {
    for (kernel, arch) in [
        (Kernel::X86_64, Arch::X86_64),
        (Kernel::Aarch64, Arch::Aarch64),
    ] {
        let p = compile_for(&default_profile(&DOCKER_DEFAULT_CAPS), kernel).expect("compile");
        assert!(p.instructions().len() < MAX_INSNS);
        for name in [
            "read",
            "write",
            "openat",
            "execve",
            "exit_group",
            "futex",
            "mmap",
            "chroot",
        ] {
            assert_eq!(call(&p, arch, name, [0; 6]), ALLOW, "{name} on {arch:?}");
        }
        for name in [
            "keyctl",
            "add_key",
            "request_key",
            "mount",
            "umount2",
            "unshare",
            "setns",
            "pivot_root",
            "reboot",
            "kexec_load",
            "bpf",
            "perf_event_open",
            "init_module",
            "io_uring_setup",
        ] {
            assert_eq!(call(&p, arch, name, [0; 6]), EPERM, "{name} on {arch:?}");
        }
        assert_eq!(call(&p, arch, "clone3", [0; 6]), ENOSYS);
        assert_eq!(
            call(&p, arch, "clone", [THREAD_FLAGS, 0, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(call(&p, arch, "clone", [SIGCHLD, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            call(&p, arch, "clone", [SIGCHLD | CLONE_NEWUSER, 0, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(call(&p, arch, "clone", [CLONE_NEWNS, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(call(&p, arch, "socket", [2, 1, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call(&p, arch, "socket", [40, 1, 0, 0, 0, 0]), EPERM);
        assert_eq!(call(&p, arch, "personality", [0; 6]), ALLOW);
        assert_eq!(
            call(&p, arch, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]),
            ALLOW
        );
        // ADDR_NO_RANDOMIZE
        assert_eq!(
            call(&p, arch, "personality", [0x0004_0000, 0, 0, 0, 0, 0]),
            EPERM
        );
        // a number beyond every table: "no such syscall", so libc can fall back
        assert_eq!(
            run(
                p.instructions(),
                &Data {
                    nr: 4000,
                    arch: arch.audit(),
                    args: [0; 6]
                }
            ),
            ENOSYS
        );
        // ptrace is allowed from 4.8 on
        assert_eq!(call(&p, arch, "ptrace", [0; 6]), ALLOW);
    }
}

#[test]
fn every_listed_name_is_allowed_and_every_other_denied() {
    let profile = default_profile(&DOCKER_DEFAULT_CAPS);
    let p = compile_for(&profile, Kernel::X86_64).expect("compile");
    let unconditional: Vec<&String> = profile
        .syscalls()
        .iter()
        .flatten()
        .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
        .flat_map(|s| s.names())
        .collect();
    let conditional: Vec<&String> = profile
        .syscalls()
        .iter()
        .flatten()
        .filter(|s| s.action() != LinuxSeccompAction::ScmpActAllow || s.args().is_some())
        .flat_map(|s| s.names())
        .collect();
    for (name, number) in Arch::X86_64.table() {
        let got = run(
            p.instructions(),
            &Data {
                nr: *number,
                arch: Arch::X86_64.audit(),
                args: [0; 6],
            },
        );
        if unconditional.iter().any(|n| n == name) {
            assert_eq!(got, ALLOW, "{name}");
        } else if !conditional.iter().any(|n| n == name) {
            assert_eq!(got, EPERM, "{name}");
        }
    }
}

#[test]
fn cap_add_relaxes_the_default_profile() {
    let mut caps: Vec<&str> = DOCKER_DEFAULT_CAPS.to_vec();
    caps.push("SYS_ADMIN");
    let p = compile_for(&default_profile(&caps), Kernel::X86_64).expect("compile");
    let a = Arch::X86_64;
    assert_eq!(call(&p, a, "mount", [0; 6]), ALLOW);
    assert_eq!(
        call(&p, a, "unshare", [CLONE_NEWUSER, 0, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(
        call(&p, a, "clone", [CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(call(&p, a, "clone3", [0; 6]), ALLOW);
    // still never
    assert_eq!(call(&p, a, "keyctl", [0; 6]), EPERM);
    // and without CAP_SYS_CHROOT, chroot goes
    let p = compile_for(&default_profile(&["CAP_CHOWN"]), Kernel::X86_64).expect("compile");
    assert_eq!(call(&p, a, "chroot", [0; 6]), EPERM);
}

#[test]
fn min_kernel_gates_ptrace() {
    let old = resolve_profile(
        DEFAULT_PROFILE_JSON,
        DOCKER_DEFAULT_CAPS,
        Some((4, 4)),
        ALL_DOCKER_ARCHES,
    )
    .expect("resolve");
    let p = compile_for(&old, Kernel::X86_64).expect("compile");
    assert_eq!(call(&p, Arch::X86_64, "ptrace", [0; 6]), EPERM);
    assert_eq!(parse_kernel_version("6.18.44-fc-v782\n"), Some((6, 18)));
    assert_eq!(parse_kernel_version("4.8"), Some((4, 8)));
}

#[test]
fn aarch64_programs_also_filter_arm_compat_syscalls() {
    let p = compile_for(&default_profile(&DOCKER_DEFAULT_CAPS), Kernel::Aarch64).expect("compile");
    assert_eq!(call(&p, Arch::Arm, "read", [0; 6]), ALLOW);
    assert_eq!(call(&p, Arch::Arm, "cacheflush", [0; 6]), ALLOW);
    assert_eq!(call(&p, Arch::Arm, "keyctl", [0; 6]), EPERM);
    assert_eq!(
        call(&p, Arch::Arm, "clone", [CLONE_NEWUSER, 0, 0, 0, 0, 0]),
        EPERM
    );
    // x86_64 is not a compat arch of aarch64: its syscalls cannot be checked
    assert_eq!(call(&p, Arch::X86_64, "read", [0; 6]), RET_KILL_PROCESS);
}

fn rule(names: &[&str], action: LinuxSeccompAction, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(action);
    if !args.is_empty() {
        s.set_args(Some(args));
    }
    s
}

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
    let b = oci_spec::runtime::LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    match value_two {
        Some(v) => b.value_two(v),
        None => b,
    }
    .build()
    .expect("arg")
}

fn profile(default: LinuxSeccompAction, rules: Vec<LinuxSyscall>) -> LinuxSeccomp {
    let mut p = LinuxSeccomp::default();
    p.set_default_action(default);
    p.set_syscalls(Some(rules));
    p
}

#[test]
fn unfiltered_arches_and_x32_are_killed_whatever_the_default() {
    let mut only_x86_64 = profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![rule(
            &["keyctl"],
            LinuxSeccompAction::ScmpActKillProcess,
            vec![],
        )],
    );
    only_x86_64.set_architectures(Some(vec![OciArch::ScmpArchX86_64]));
    let p = compile_for(&only_x86_64, Kernel::X86_64).expect("compile");
    let a = Arch::X86_64;
    assert_eq!(call(&p, a, "read", [0; 6]), ALLOW);
    assert_eq!(call(&p, a, "keyctl", [0; 6]), RET_KILL_PROCESS);
    let i386 = Data {
        nr: 3,
        arch: 0x4000_0003,
        args: [0; 6],
    };
    assert_eq!(run(p.instructions(), &i386), RET_KILL_PROCESS);
    let x32 = Data {
        nr: bpf::X32_SYSCALL_BIT | 250,
        arch: a.audit(),
        args: [0; 6],
    };
    assert_eq!(run(p.instructions(), &x32), RET_KILL_PROCESS);

    let mut kill = profile(LinuxSeccompAction::ScmpActKill, vec![]);
    kill.set_architectures(Some(vec![OciArch::ScmpArchX86_64]));
    let kill = compile_for(&kill, Kernel::X86_64).expect("compile");
    assert_eq!(run(kill.instructions(), &i386), RET_KILL_PROCESS);
    let mut errno = profile(LinuxSeccompAction::ScmpActErrno, vec![]);
    errno.set_architectures(Some(vec![OciArch::ScmpArchX86_64]));
    let errno = compile_for(&errno, Kernel::X86_64).expect("compile");
    assert_eq!(run(errno.instructions(), &i386), RET_KILL_PROCESS);
    assert_eq!(run(errno.instructions(), &x32), RET_KILL_PROCESS);
}

#[test]
fn actions_are_encoded() {
    use LinuxSeccompAction::*;
    let mut errno = rule(&["read"], ScmpActErrno, vec![]);
    errno.set_errno_ret(Some(13));
    let p = compile_for(
        &profile(
            ScmpActAllow,
            vec![
                errno,
                rule(&["write"], ScmpActTrap, vec![]),
                rule(&["close"], ScmpActLog, vec![]),
                rule(&["getpid"], ScmpActKillThread, vec![]),
                rule(&["getppid"], ScmpActTrace, vec![]),
                rule(&["no_such_syscall_anywhere"], ScmpActKill, vec![]),
            ],
        ),
        Kernel::X86_64,
    )
    .expect("unknown names are skipped, not errors");
    let a = Arch::X86_64;
    assert_eq!(call(&p, a, "read", [0; 6]), RET_ERRNO | 13);
    assert_eq!(call(&p, a, "write", [0; 6]), RET_TRAP);
    assert_eq!(call(&p, a, "close", [0; 6]), RET_LOG);
    assert_eq!(call(&p, a, "getpid", [0; 6]), RET_KILL_THREAD);
    assert_eq!(call(&p, a, "getppid", [0; 6]), RET_TRACE);
    assert_eq!(call(&p, a, "openat", [0; 6]), ALLOW);

    let notify = profile(ScmpActAllow, vec![rule(&["read"], ScmpActNotify, vec![])]);
    assert!(matches!(
        compile_for(&notify, Kernel::X86_64),
        Err(SeccompError::UnsupportedAction(_))
    ));
    let bad_index = profile(
        ScmpActAllow,
        vec![rule(
            &["read"],
            ScmpActErrno,
            vec![arg(6, LinuxSeccompOperator::ScmpCmpEq, 0, None)],
        )],
    );
    assert!(matches!(
        compile_for(&bad_index, Kernel::X86_64),
        Err(SeccompError::ArgIndex { .. })
    ));
}

#[test]
fn argument_operators_compare_full_64_bit_values() {
    use LinuxSeccompOperator::*;
    let big: u64 = 0x0000_0001_0000_0005; // differs from 5 only in the high half
                                          // operator, value, valueTwo, then (argument, whether the rule matches)
    type Case<'a> = (LinuxSeccompOperator, u64, Option<u64>, &'a [(u64, bool)]);
    let cases: &[Case] = &[
        (ScmpCmpEq, 5, None, &[(5, true), (4, false), (big, false)]),
        (ScmpCmpNe, 5, None, &[(5, false), (6, true), (big, true)]),
        (
            ScmpCmpLt,
            big,
            None,
            &[(5, true), (big - 1, true), (big, false), (u64::MAX, false)],
        ),
        (
            ScmpCmpLe,
            big,
            None,
            &[(5, true), (big, true), (big + 1, false), (1 << 33, false)],
        ),
        (
            ScmpCmpGt,
            5,
            None,
            &[(5, false), (6, true), (big, true), (4, false)],
        ),
        (
            ScmpCmpGe,
            big,
            None,
            &[(big, true), (big - 1, false), (5, false), (u64::MAX, true)],
        ),
        (
            ScmpCmpMaskedEq,
            0xff00_0000_0000_00ff,
            Some(0x1200_0000_0000_0034),
            &[
                (0x12ab_cdef_0000_1234, true),
                (0x1300_0000_0000_0034, false),
                (0x1200_0000_0000_0035, false),
            ],
        ),
    ];
    for (op, value, two, checks) in cases {
        for index in [0usize, 3, 5] {
            let p = compile_for(
                &profile(
                    LinuxSeccompAction::ScmpActErrno,
                    vec![rule(
                        &["read"],
                        LinuxSeccompAction::ScmpActAllow,
                        vec![arg(index, *op, *value, *two)],
                    )],
                ),
                Kernel::X86_64,
            )
            .expect("compile");
            for (input, allowed) in *checks {
                let mut args = [0u64; 6];
                args[index] = *input;
                let want = if *allowed { ALLOW } else { EPERM };
                assert_eq!(
                    call(&p, Arch::X86_64, "read", args),
                    want,
                    "{op:?} {value:#x} on arg {index} = {input:#x}"
                );
            }
        }
    }
}

#[test]
fn conditions_of_a_rule_are_anded_and_rules_tried_in_order() {
    use LinuxSeccompOperator::*;
    let mut second = rule(
        &["ioctl"],
        LinuxSeccompAction::ScmpActErrno,
        vec![arg(1, ScmpCmpEq, 7, None)],
    );
    second.set_errno_ret(Some(22));
    let p = compile_for(
        &profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![
                rule(
                    &["ioctl"],
                    LinuxSeccompAction::ScmpActAllow,
                    vec![arg(0, ScmpCmpEq, 1, None), arg(1, ScmpCmpGe, 10, None)],
                ),
                second,
            ],
        ),
        Kernel::X86_64,
    )
    .expect("compile");
    let a = Arch::X86_64;
    assert_eq!(call(&p, a, "ioctl", [1, 10, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(&p, a, "ioctl", [2, 10, 0, 0, 0, 0]), EPERM);
    assert_eq!(call(&p, a, "ioctl", [1, 9, 0, 0, 0, 0]), EPERM);
    assert_eq!(call(&p, a, "ioctl", [1, 7, 0, 0, 0, 0]), RET_ERRNO | 22);
}

#[test]
fn many_syscalls_with_arguments_still_assemble() {
    // far branches everywhere: every syscall of the table with a two-condition rule
    let names: Vec<&str> = Arch::X86_64.table().iter().map(|(n, _)| *n).collect();
    let rules = names
        .iter()
        .map(|n| {
            rule(
                &[n],
                LinuxSeccompAction::ScmpActAllow,
                vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, 1, None)],
            )
        })
        .collect();
    // one architecture: three of these would not fit in 4096 instructions
    let mut many = profile(LinuxSeccompAction::ScmpActErrno, rules);
    many.set_architectures(Some(vec![OciArch::ScmpArchX86_64]));
    let p = compile_for(&many, Kernel::X86_64).expect("compile");
    for n in names.iter().step_by(37) {
        assert_eq!(call(&p, Arch::X86_64, n, [1, 0, 0, 0, 0, 0]), ALLOW, "{n}");
        assert_eq!(call(&p, Arch::X86_64, n, [2, 0, 0, 0, 0, 0]), EPERM, "{n}");
    }
}

#[test]
fn programs_round_trip_through_bytes() {
    let p = compile(&docker_default().expect("default")).expect("compile");
    let bytes = p.to_bytes();
    assert_eq!(Program::from_bytes(&bytes).expect("read back"), p);
    for at in [0, 9, 13, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        assert!(
            Program::from_bytes(&bad).is_err(),
            "corruption at {at} accepted"
        );
    }
    assert!(Program::from_bytes(&bytes[..bytes.len() - 3]).is_err());
    assert!(Program::from_bytes(&[]).is_err());
}

#[test]
fn the_shipped_profile_parses_and_lists_every_architecture() {
    let p = docker_default().expect("default");
    assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
    let arches = p.architectures().clone().unwrap_or_default();
    for a in [
        OciArch::ScmpArchX86_64,
        OciArch::ScmpArchAarch64,
        OciArch::ScmpArchArm,
    ] {
        assert!(arches.contains(&a), "{a:?}");
    }
    let names: Vec<&String> = p
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|s| s.names())
        .collect();
    for never in [
        "keyctl",
        "add_key",
        "request_key",
        "kexec_load",
        "io_uring_setup",
    ] {
        assert!(!names.iter().any(|n| n == &never), "{never} listed");
    }
}

#[test]
fn syscalls_newer_than_the_table_get_enosys() {
    let a = Arch::X86_64;
    let p = compile_for(&default_profile(&DOCKER_DEFAULT_CAPS), Kernel::X86_64).expect("compile");
    // known and allowed since 6.6: glibc 2.39 uses it for fchmodat
    assert_eq!(call(&p, a, "fchmodat2", [0; 6]), ALLOW);
    let future = Data {
        nr: 600,
        arch: a.audit(),
        args: [0; 6],
    };
    assert_eq!(run(p.instructions(), &future), ENOSYS);
    // known to the table but not allowed: the default
    assert_eq!(call(&p, a, "mseal", [0; 6]), EPERM);
    // a hole below the newest number is not "newer"
    let hole = Data {
        nr: 400,
        arch: a.audit(),
        args: [0; 6],
    };
    assert_eq!(run(p.instructions(), &hole), EPERM);

    let p = compile_for(&default_profile(&DOCKER_DEFAULT_CAPS), Kernel::Aarch64).expect("compile");
    let future_arm = Data {
        nr: 600,
        arch: Arch::Arm.audit(),
        args: [0; 6],
    };
    assert_eq!(run(p.instructions(), &future_arm), ENOSYS);
    assert_eq!(call(&p, Arch::Arm, "set_tls", [0; 6]), ALLOW);
    let private_unknown = Data {
        nr: 0x0f_0100,
        arch: Arch::Arm.audit(),
        args: [0; 6],
    };
    assert_eq!(run(p.instructions(), &private_unknown), EPERM);

    // under an allowing default, newer syscalls are simply allowed
    let allow = compile_for(
        &profile(LinuxSeccompAction::ScmpActAllow, vec![]),
        Kernel::X86_64,
    )
    .expect("compile");
    assert_eq!(run(allow.instructions(), &future), ALLOW);
}

#[test]
fn programs_can_be_shared_and_cache_keys_follow_the_profile() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Program>();
    let base = docker_default().expect("default");
    let admin = docker_default_for_caps(["SYS_ADMIN"]).expect("admin");
    let k = cache_key(&base).expect("key");
    assert_eq!(k, cache_key(&base).expect("key"));
    assert_ne!(k, cache_key(&admin).expect("key"));
    assert!(k.contains(kernel_arch_set_name()), "{k}");
}

#[test]
fn compile_cached_writes_reads_and_survives_a_corrupt_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = docker_default().expect("default");
    let compiled = compile(&profile).expect("compile");
    let first = compile_cached(&profile, Some(dir.path())).expect("first");
    assert_eq!(first, compiled);
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one cache file, no temporary left: {files:?}"
    );
    let cached = &files[0];
    assert!(cached
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("seccomp-") && n.ends_with(".bpf")));
    // A second start reads it: the same program.
    assert_eq!(
        compile_cached(&profile, Some(dir.path())).expect("second"),
        compiled
    );
    // Another profile gets its own file, never the first one's program.
    let admin = docker_default_for_caps(["SYS_ADMIN"]).expect("admin");
    let other = compile_cached(&admin, Some(dir.path())).expect("admin");
    assert_eq!(other, compile(&admin).expect("compile admin"));
    assert_ne!(other, compiled);
    // A corrupt file (a torn write, a bit flip) is compiled again and replaced.
    std::fs::write(cached, b"SLSECCMP garbage").expect("corrupt");
    assert_eq!(
        compile_cached(&profile, Some(dir.path())).expect("after corruption"),
        compiled
    );
    assert_eq!(
        Program::from_bytes(&std::fs::read(cached).expect("read")).expect("rewritten"),
        compiled
    );
    // No cache dir at all: compiled, nothing written.
    assert_eq!(compile_cached(&profile, None).expect("uncached"), compiled);
    // A cache dir that cannot be created is not an error.
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, b"").expect("file");
    assert_eq!(
        compile_cached(&profile, Some(&blocked.join("sub"))).expect("unwritable cache"),
        compiled
    );
}

#[test]
fn rules_for_other_architectures_are_dropped() {
    let json = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
             "includes": {"arches": ["s390", "s390x"]}},
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["s390x"]}},
            {"names": ["write"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "arm64", "arm"]}}
        ]
    }"#;
    let p = resolve_profile(json, ["CAP_CHOWN"], Some((6, 1)), &["amd64", "x86", "x32"])
        .expect("resolve");
    let names: Vec<&String> = p
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|s| s.names())
        .collect();
    assert_eq!(names, vec!["read", "write"]);
}

fn raw(p: &Program, arch: u32, nr: u32) -> u32 {
    run(
        p.instructions(),
        &Data {
            nr,
            arch,
            args: [0; 6],
        },
    )
}

const AUDIT_X86_64: u32 = 0xc000_003e;
const AUDIT_I386: u32 = 0x4000_0003;
const AUDIT_AARCH64: u32 = 0xc000_00b7;
const AUDIT_ARM: u32 = 0x4000_0028;
const X32: u32 = bpf::X32_SYSCALL_BIT;

#[test]
fn issue11_the_default_profile_filters_every_abi_of_the_kernel() {
    for kernel in [Kernel::X86_64, Kernel::Aarch64, Kernel::Arm] {
        let p = compile_for(&default_profile(&DOCKER_DEFAULT_CAPS), kernel).expect("compile");
        // the instruction counts of the final report; the limit is the kernel's
        eprintln!(
            "default profile on a {kernel:?} kernel: {} instructions",
            p.instructions().len()
        );
        assert!(p.instructions().len() <= MAX_INSNS);
        for &arch in kernel.arches() {
            for name in ["read", "write", "execve", "getpid", "exit_group", "futex"] {
                assert_eq!(call(&p, arch, name, [0; 6]), ALLOW, "{name} {arch:?}");
            }
            for name in ["kexec_load", "keyctl", "mount", "unshare", "bpf"] {
                assert_eq!(call(&p, arch, name, [0; 6]), EPERM, "{name} {arch:?}");
            }
            let newuser = [SIGCHLD | CLONE_NEWUSER, 0, 0, 0, 0, 0];
            assert_eq!(call(&p, arch, "clone", newuser), EPERM, "{arch:?}");
            assert_eq!(call(&p, arch, "socket", [40, 1, 0, 0, 0, 0]), EPERM);
            assert_eq!(call(&p, arch, "socket", [2, 1, 0, 0, 0, 0]), ALLOW);
        }
        // an architecture value no kernel of this kind produces, and a made-up one
        for bogus in [
            AUDIT_X86_64,
            AUDIT_I386,
            AUDIT_AARCH64,
            AUDIT_ARM,
            0xdead_beef,
        ] {
            if kernel.arches().iter().any(|a| a.audit() == bogus) {
                continue;
            }
            assert_eq!(
                raw(&p, bogus, 20),
                RET_KILL_PROCESS,
                "{kernel:?} {bogus:#x}"
            );
        }
    }
}

#[test]
fn issue11_i386_and_x32_under_an_x86_64_kernel() {
    let p = compile_for(&default_profile(&DOCKER_DEFAULT_CAPS), Kernel::X86_64).expect("compile");
    // i386: its own numbers, not x86_64's (20 is writev there, 283 timerfd_create)
    assert_eq!(raw(&p, AUDIT_I386, 20), ALLOW, "i386 getpid");
    assert_eq!(raw(&p, AUDIT_I386, 283), EPERM, "i386 kexec_load");
    // one number, two syscalls: 246 is x86_64's kexec_load and i386's io_destroy; 283 is
    // i386's kexec_load and x86_64's timerfd_create
    assert_eq!(raw(&p, AUDIT_I386, 246), ALLOW, "i386 io_destroy");
    assert_eq!(raw(&p, AUDIT_X86_64, 246), EPERM, "x86_64 kexec_load");
    assert_eq!(raw(&p, AUDIT_X86_64, 283), ALLOW, "x86_64 timerfd_create");
    for name in [
        "socketcall",
        "ipc",
        "mmap2",
        "clock_gettime64",
        "fcntl64",
        "_llseek",
    ] {
        assert_eq!(call(&p, Arch::X86, name, [0; 6]), ALLOW, "i386 {name}");
    }
    assert_eq!(Arch::X86.lookup("arch_prctl"), Some(384));
    // x32: x86_64's numbers with the x32 bit, and its own entry points from 512
    assert_eq!(raw(&p, AUDIT_X86_64, 39 | X32), ALLOW, "x32 getpid");
    assert_eq!(raw(&p, AUDIT_X86_64, 246 | X32), EPERM, "x32 kexec_load");
    assert_eq!(raw(&p, AUDIT_X86_64, 512 | X32), ALLOW, "x32 rt_sigaction");
    assert_eq!(raw(&p, AUDIT_X86_64, 520 | X32), ALLOW, "x32 execve");
    // x86_64's rt_sigaction is not x32's, so an x32 process cannot reach it
    assert_eq!(raw(&p, AUDIT_X86_64, 13 | X32), EPERM);
    assert_eq!(raw(&p, AUDIT_X86_64, 13), ALLOW, "x86_64 rt_sigaction");
    // new syscalls come after the newest shared number (470 on), x32's own ones are at 512
    assert_eq!(
        raw(&p, AUDIT_X86_64, 470 | X32),
        ENOSYS,
        "newer than the x32 table"
    );
    assert_eq!(raw(&p, AUDIT_X86_64, 600 | X32), EPERM, "x32's own range");
    assert_eq!(
        raw(&p, AUDIT_X86_64, 600),
        ENOSYS,
        "newer than the x86_64 table"
    );
    assert_eq!(
        raw(&p, AUDIT_I386, 600),
        ENOSYS,
        "newer than the i386 table"
    );
    assert_eq!(
        raw(&p, AUDIT_X86_64, u32::MAX),
        EPERM,
        "beyond the x32 range"
    );
}

#[test]
fn issue11_arm_under_an_aarch64_kernel_and_aarch64_under_a_32_bit_slate() {
    // whichever arch slate was built for, the kernel decides: the same program both ways
    let p = compile_for(&default_profile(&DOCKER_DEFAULT_CAPS), Kernel::Aarch64).expect("compile");
    assert_eq!(raw(&p, AUDIT_ARM, 20), ALLOW, "arm getpid");
    assert_eq!(raw(&p, AUDIT_AARCH64, 172), ALLOW, "aarch64 getpid");
    assert_eq!(raw(&p, AUDIT_ARM, 347), EPERM, "arm kexec_load");
    assert_eq!(raw(&p, AUDIT_AARCH64, 104), EPERM, "aarch64 kexec_load");
    assert_eq!(
        select_arches(&default_profile(&[]), Kernel::Aarch64, Some(Arch::Arm)),
        [Arch::Aarch64, Arch::Arm]
    );
    let arm_only = compile_for(&default_profile(&DOCKER_DEFAULT_CAPS), Kernel::Arm).expect("arm");
    assert_eq!(raw(&arm_only, AUDIT_AARCH64, 172), RET_KILL_PROCESS);
}

#[test]
fn issue11_the_kernel_is_named_by_uname() {
    let k = |m| Kernel::from_machine(m);
    assert_eq!(k("x86_64"), Some(Kernel::X86_64));
    assert_eq!(k("aarch64"), Some(Kernel::Aarch64));
    assert_eq!(k("arm64"), Some(Kernel::Aarch64));
    // a 64-bit kernel's answer to a process under the PER_LINUX32 personality
    assert_eq!(k("armv8l"), Some(Kernel::Aarch64));
    assert_eq!(k("armv7l"), Some(Kernel::Arm));
    assert_eq!(k("armv6l"), Some(Kernel::Arm));
    assert_eq!(k("i686"), Some(Kernel::X86));
    assert_eq!(k("riscv64"), None);
    assert_eq!(k("s390x"), None);
    assert_eq!(
        Kernel::X86_64.arches(),
        [Arch::X86_64, Arch::X86, Arch::X32]
    );
    // the machine running these tests
    let running = Kernel::running().expect("a supported kernel");
    assert!(running.arches().contains(&Arch::build().expect("build")));
}

#[test]
fn issue11_listed_architectures_are_honoured() {
    let mut p = default_profile(&DOCKER_DEFAULT_CAPS);
    let sel = |p: &LinuxSeccomp, k, b| select_arches(p, k, b);
    // the shipped profile lists every one: all the kernel's
    assert_eq!(
        sel(&p, Kernel::X86_64, Some(Arch::X86_64)),
        [Arch::X86_64, Arch::X86, Arch::X32]
    );
    p.set_architectures(Some(vec![OciArch::ScmpArchX86, OciArch::ScmpArchAarch64]));
    // slate's own arch always, the listed ones the kernel has, in the kernel's order
    assert_eq!(
        sel(&p, Kernel::X86_64, Some(Arch::X86_64)),
        [Arch::X86_64, Arch::X86]
    );
    p.set_architectures(Some(vec![OciArch::ScmpArchArm]));
    assert_eq!(sel(&p, Kernel::Aarch64, Some(Arch::Arm)), [Arch::Arm]);
    assert_eq!(
        sel(&p, Kernel::Aarch64, Some(Arch::Aarch64)),
        [Arch::Aarch64, Arch::Arm]
    );
    p.set_architectures(Some(vec![OciArch::ScmpArchNative]));
    assert_eq!(
        sel(&p, Kernel::Aarch64, Some(Arch::Arm)),
        [Arch::Aarch64, Arch::Arm]
    );
    p.set_architectures(Some(vec![OciArch::ScmpArchPpc64le]));
    assert_eq!(sel(&p, Kernel::X86_64, Some(Arch::X86_64)), [Arch::X86_64]);
    p.set_architectures(None);
    assert_eq!(sel(&p, Kernel::Arm, Some(Arch::Arm)), [Arch::Arm]);

    // x32 alone beside x86_64: i386 is then killed, x32 checked
    p.set_architectures(Some(vec![OciArch::ScmpArchX86_64, OciArch::ScmpArchX32]));
    let prog = compile_for(&p, Kernel::X86_64).expect("compile");
    assert_eq!(raw(&prog, AUDIT_X86_64, 39 | X32), ALLOW);
    assert_eq!(raw(&prog, AUDIT_I386, 20), RET_KILL_PROCESS);
}

#[test]
fn issue11_cached_programs_are_tied_to_the_kernels_arch_set() {
    let profile = default_profile(&DOCKER_DEFAULT_CAPS);
    for kernel in [Kernel::X86_64, Kernel::Aarch64, Kernel::Arm] {
        let bytes = compile_for(&profile, kernel).expect("compile").to_bytes();
        for other in [Kernel::X86_64, Kernel::Aarch64, Kernel::Arm] {
            let back = Program::from_bytes_for(&bytes, other);
            assert_eq!(
                back.is_ok(),
                other == kernel,
                "{kernel:?} read on {other:?}"
            );
        }
    }
    let names: Vec<&str> = [Kernel::X86_64, Kernel::Aarch64, Kernel::Arm, Kernel::X86]
        .iter()
        .map(|k| k.set_name())
        .collect();
    assert_eq!(names, ["x86_64+x86+x32", "aarch64+arm", "arm", "x86"]);
}
