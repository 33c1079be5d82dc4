//! Seccomp: compiling an OCI seccomp profile to a classic BPF program and installing it, in
//! pure Rust (no libseccomp, so slate cross-compiles for armv7 and aarch64 with no C build).
//!
//! What a compiled [`Program`] guarantees:
//! - it filters the architectures of the running kernel, not of slate's build: `uname -m`
//!   decides, so a 32-bit slate on a 64-bit kernel filters the 64-bit ABI too. An x86_64
//!   kernel has x86_64, i386 and x32 (x32 shares x86_64's audit arch; its numbers carry
//!   `__X32_SYSCALL_BIT` and are checked against x32's own table); an aarch64 kernel has
//!   aarch64 and arm; an arm one arm. A profile that lists no `architectures` gets all of
//!   them; one that lists some gets those the kernel has, plus slate's own (its execve of
//!   the container's process is the first syscall checked). The shipped profile lists all;
//! - each architecture is checked against its own syscall table: a number is only ever
//!   allowed by a name that has that number on that architecture. Any other value of
//!   `seccomp_data.arch`, and x32 numbers when x32 is not filtered, kill the process;
//! - names are looked up per architecture (tables generated from the kernel's uapi headers in
//!   `tables.rs`); a name unknown to an architecture is skipped there, as libseccomp does.
//!   So i386's `socketcall` and `ipc` are allowed where the profile names them, as docker's
//!   does, and argument conditions on `socket` cannot reach the socket family behind
//!   `socketcall` (it is in user memory): on i386 an allowed `socketcall` opens any family;
//! - a cached program ([`compile_cached`], [`Program::to_bytes`]) names the kernel's architecture
//!   set, and [`Program::from_bytes`] refuses one written for another set;
//! - rules for one syscall are tried in profile order, the first whose argument conditions
//!   all hold decides; conditions compare full 64-bit arguments as two 32-bit halves;
//! - [`Program::install`] does no allocation and no logging, so it is safe in the cloned
//!   child right before exec.
//!
//! The default profile lives in `configs/seccomp-default.json`. Its format is the OCI one plus
//! docker's per-rule `includes`/`excludes` by capability (and `minKernel`); they are resolved
//! here ([`docker_default_for_caps`]) into a plain OCI profile, so `--cap-add SYS_ADMIN`
//! relaxes it the way docker's does. Architecture-specific names need no `arches` filter
//! (per-architecture lookup skips them where they do not exist) and the shipped profile has
//! none; `arches` is still honoured, so a rule of docker's own profile meant for another
//! architecture (s390's clone, whose flags are its second argument) never applies here.

mod bpf;
mod tables;

use oci_spec::runtime::{
    Arch as OciArch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

pub use bpf::{Insn, MAX_INSNS};

/// Errors of compiling, caching and installing seccomp programs.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("invalid seccomp profile: {0}")]
    Profile(#[from] serde_json::Error),
    #[error("seccomp action {0} is not supported")]
    UnsupportedAction(String),
    #[error("seccomp filter flag {0} is not supported")]
    UnsupportedFlag(String),
    #[error("seccomp notification listeners are not supported")]
    Listener,
    #[error("seccomp rule for {syscall}: argument index {index} is out of range (0-5)")]
    ArgIndex { syscall: String, index: usize },
    #[error("seccomp filtering is not implemented for this cpu architecture")]
    UnsupportedArch,
    #[error("seccomp program has {0} instructions, more than the kernel's limit of 4096")]
    TooLarge(usize),
    #[error("seccomp program generator bug: {0}")]
    Internal(&'static str),
    #[error("invalid cached seccomp program: {0}")]
    Cache(&'static str),
    #[error(
        "cannot install the seccomp filter: {0} (set no_new_privs first, or hold CAP_SYS_ADMIN)"
    )]
    NeedsNoNewPrivs(nix::errno::Errno),
    #[error("cannot install the seccomp filter: {0}")]
    Install(nix::errno::Errno),
    #[error(
        "cannot install the seccomp filter on every thread: thread {0} cannot be synchronized"
    )]
    Tsync(i64),
}

/// The architectures slate has syscall tables for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arch {
    X86_64,
    /// i386, the 32-bit ABI of an x86_64 kernel.
    X86,
    /// x32, x86_64's ILP32 ABI: AUDIT_ARCH_X86_64, numbers carrying `__X32_SYSCALL_BIT`.
    X32,
    Aarch64,
    Arm,
}

impl Arch {
    fn audit(self) -> u32 {
        match self {
            Arch::X86_64 | Arch::X32 => 0xc000_003e,
            Arch::X86 => 0x4000_0003,
            Arch::Aarch64 => 0xc000_00b7,
            Arch::Arm => 0x4000_0028,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::X86 => "x86",
            Arch::X32 => "x32",
            Arch::Aarch64 => "aarch64",
            Arch::Arm => "arm",
        }
    }

    fn table(self) -> &'static [(&'static str, u32)] {
        match self {
            Arch::X86_64 => tables::X86_64,
            Arch::X86 => tables::X86,
            Arch::X32 => tables::X32,
            Arch::Aarch64 => tables::AARCH64,
            Arch::Arm => tables::ARM,
        }
    }

    pub(crate) fn lookup(self, name: &str) -> Option<u32> {
        let t = self.table();
        t.binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| t[i].1)
    }

    /// Where the architecture's numbers past its ordinary range start: arm's private
    /// syscalls (`__ARM_NR_*`), x32's own entry points for the syscalls whose arguments
    /// differ from x86_64's (rt_sigaction, ioctl, readv... at 512 and up).
    fn private_base(self) -> Option<u32> {
        match self {
            Arch::Arm => Some(0x000f_0000),
            Arch::X32 => Some(bpf::X32_SYSCALL_BIT + 512),
            Arch::X86_64 | Arch::X86 | Arch::Aarch64 => None,
        }
    }

    /// The highest ordinary syscall number in the table.
    fn max_regular(self) -> Option<u32> {
        let limit = self.private_base().unwrap_or(u32::MAX);
        self.table()
            .iter()
            .map(|(_, nr)| *nr)
            .filter(|nr| *nr < limit)
            .max()
    }

    fn nrs(self) -> bpf::Nrs {
        match self {
            Arch::X86_64 => bpf::Nrs::BelowX32,
            Arch::X32 => bpf::Nrs::X32,
            Arch::X86 | Arch::Aarch64 | Arch::Arm => bpf::Nrs::All,
        }
    }

    /// The architecture slate itself was built for, whose syscalls (the execve of the
    /// container's process, right after the filter is installed) must always pass.
    fn build() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else if cfg!(target_arch = "arm") {
            Some(Arch::Arm)
        } else {
            None
        }
    }

    fn from_oci(a: OciArch) -> Option<Arch> {
        match a {
            OciArch::ScmpArchX86_64 => Some(Arch::X86_64),
            OciArch::ScmpArchX86 => Some(Arch::X86),
            OciArch::ScmpArchX32 => Some(Arch::X32),
            OciArch::ScmpArchAarch64 => Some(Arch::Aarch64),
            OciArch::ScmpArchArm => Some(Arch::Arm),
            _ => None,
        }
    }

    /// docker's names for the architecture, as its profiles' `includes.arches` use them
    /// (i386 appears as "x86" in docker's profile and as Go's "386" in others).
    fn docker_names(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["amd64"],
            Arch::X86 => &["386", "x86"],
            Arch::X32 => &["x32"],
            Arch::Aarch64 => &["arm64"],
            Arch::Arm => &["arm"],
        }
    }
}

/// The kernel a program is compiled for: which architectures' syscalls it accepts. That is
/// the kernel's, not slate's build target: a 32-bit slate on a 64-bit kernel starts 64-bit
/// images, and a 64-bit one starts 32-bit images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    X86_64,
    Aarch64,
    Arm,
    X86,
}

impl Kernel {
    /// Its native architecture first, then the compat ones.
    pub(crate) fn arches(self) -> &'static [Arch] {
        match self {
            Kernel::X86_64 => &[Arch::X86_64, Arch::X86, Arch::X32],
            Kernel::Aarch64 => &[Arch::Aarch64, Arch::Arm],
            Kernel::Arm => &[Arch::Arm],
            Kernel::X86 => &[Arch::X86],
        }
    }

    /// Names the architecture set, in cache keys.
    fn set_name(self) -> &'static str {
        match self {
            Kernel::X86_64 => "x86_64+x86+x32",
            Kernel::Aarch64 => "aarch64+arm",
            Kernel::Arm => "arm",
            Kernel::X86 => "x86",
        }
    }

    /// Identifies the architecture set in a cached program.
    fn set_mask(self) -> u32 {
        self.arches().iter().fold(0, |m, a| m | 1 << (*a as u32))
    }

    /// From `uname -m`.
    pub(crate) fn from_machine(machine: &str) -> Option<Kernel> {
        match machine {
            "x86_64" | "amd64" => Some(Kernel::X86_64),
            "aarch64" | "arm64" => Some(Kernel::Aarch64),
            // Only a 64-bit kernel says armv8l (its COMPAT_UTS_MACHINE, shown to a process
            // under the PER_LINUX32 personality, as `linux32` sets it); a 32-bit arm kernel
            // reports v7 at most, even on an ARMv8 core.
            "armv8l" | "armv8b" => Some(Kernel::Aarch64),
            m if m.starts_with("arm") => Some(Kernel::Arm),
            "i386" | "i486" | "i586" | "i686" => Some(Kernel::X86),
            _ => None,
        }
    }

    /// The running kernel, by `uname -m`. A personality can make uname name an architecture
    /// this build cannot run on (`linux32` on x86_64 says i686): then the build's own kernel
    /// is the one, since a 64-bit slate runs only on its own 64-bit kernel.
    pub(crate) fn running() -> Option<Kernel> {
        let from_uname = nix::sys::utsname::uname()
            .ok()
            .and_then(|u| u.machine().to_str().and_then(Kernel::from_machine));
        let build = Arch::build()?;
        match from_uname {
            Some(k) if k.arches().contains(&build) => Some(k),
            _ => match build {
                Arch::X86_64 | Arch::X86 | Arch::X32 => Some(Kernel::X86_64),
                Arch::Aarch64 => Some(Kernel::Aarch64),
                Arch::Arm => Some(Kernel::Arm),
            },
        }
    }
}

/// Names the set of architectures programs are compiled for on the running kernel (its
/// native and compat ones), for cache keys: a program cached on one set is never found on
/// another.
pub fn kernel_arch_set_name() -> &'static str {
    Kernel::running().map_or("unsupported", Kernel::set_name)
}

/// docker's architecture names (as in a profile's `includes.arches`) of the running kernel's
/// architecture set, for resolving profiles in docker's format.
pub fn docker_arch_names() -> Vec<&'static str> {
    Kernel::running()
        .map(|k| {
            k.arches()
                .iter()
                .flat_map(|a| a.docker_names())
                .copied()
                .collect()
        })
        .unwrap_or_default()
}

const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;

fn ret_value(action: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, SeccompError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActErrno => {
            RET_ERRNO | (errno.unwrap_or(libc::EPERM as u32) & 0xffff)
        }
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | (errno.unwrap_or(0) & 0xffff),
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::UnsupportedAction(action.to_string()))
        }
    })
}

/// A compiled seccomp filter, ready to install or to cache on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
    flags: u32,
    /// [`Kernel::set_mask`] of the kernel it was compiled for.
    arches: u32,
}

/// Compiles `profile` for the running kernel's architectures.
pub fn compile(profile: &LinuxSeccomp) -> Result<Program, SeccompError> {
    let kernel = Kernel::running().ok_or(SeccompError::UnsupportedArch)?;
    compile_for(profile, kernel)
}

/// The architectures a program for `kernel` filters. A profile that lists none gets all of
/// the kernel's (each against its own table, so a name allowed is allowed in every ABI, as
/// docker's archMap does for its default). One that lists some gets those the kernel has,
/// plus the architecture slate runs as (`build`), as libseccomp always adds its native one:
/// slate's own execve of the container's process is the first syscall the filter sees.
pub(crate) fn select_arches(
    profile: &LinuxSeccomp,
    kernel: Kernel,
    build: Option<Arch>,
) -> Vec<Arch> {
    let ours = kernel.arches();
    let listed = profile.architectures().as_deref().unwrap_or_default();
    if listed.is_empty() {
        return ours.to_vec();
    }
    let mut want: Vec<Arch> = build.into_iter().collect();
    for a in listed {
        match Arch::from_oci(*a) {
            Some(arch) => want.push(arch),
            None if *a == OciArch::ScmpArchNative => want.push(ours[0]),
            None => {
                tracing::debug!(arch = %a, "no syscall table for this architecture, its processes are killed")
            }
        }
    }
    // In the kernel's order, native first: the common case takes the first jump.
    ours.iter().copied().filter(|a| want.contains(a)).collect()
}

pub(crate) fn compile_for(profile: &LinuxSeccomp, kernel: Kernel) -> Result<Program, SeccompError> {
    if profile.listener_path().is_some() {
        return Err(SeccompError::Listener);
    }
    let mut flags = 0;
    for f in profile.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            other => return Err(SeccompError::UnsupportedFlag(other.to_string())),
        };
    }

    let default_ret = ret_value(profile.default_action(), profile.default_errno_ret())?;
    // A syscall of an architecture the program has no table for cannot be checked. Failing
    // each one with the default errno leaves a process that crashes somewhere later (issue
    // 11: arm64 images under an arm-only filter segfaulted, exit 139); killing it at its
    // first syscall says what happened, as libseccomp's default bad-arch action does.
    let mismatch_ret = RET_KILL_PROCESS;

    // Only where the default denies: under an allowing default a newer syscall is allowed.
    let enosys = matches!(
        profile.default_action(),
        LinuxSeccompAction::ScmpActErrno
            | LinuxSeccompAction::ScmpActKill
            | LinuxSeccompAction::ScmpActKillThread
            | LinuxSeccompAction::ScmpActKillProcess
            | LinuxSeccompAction::ScmpActTrap
    );

    let mut rules = Vec::new();
    for sc in profile.syscalls().iter().flatten() {
        rules.push((sc, to_rule(sc)?));
    }

    let mut sections = Vec::new();
    for arch in select_arches(profile, kernel, Arch::build()) {
        let mut by_nr: Vec<(u32, Vec<bpf::Rule>)> = Vec::new();
        let mut skipped = 0usize;
        for (sc, rule) in &rules {
            for name in sc.names() {
                let Some(nr) = arch.lookup(name) else {
                    skipped += 1;
                    continue;
                };
                match by_nr.iter_mut().find(|(n, _)| *n == nr) {
                    Some((_, list)) => list.push(rule.clone()),
                    None => by_nr.push((nr, vec![rule.clone()])),
                }
            }
        }
        by_nr.sort_by_key(|(nr, _)| *nr);
        tracing::trace!(
            arch = arch.name(),
            skipped,
            "syscall names unknown to the architecture"
        );
        sections.push(bpf::Section {
            audit_arch: arch.audit(),
            nrs: arch.nrs(),
            enosys_above: if enosys { arch.max_regular() } else { None },
            private_base: arch.private_base(),
            syscalls: by_nr,
        });
    }

    let insns = bpf::generate(&sections, default_ret, mismatch_ret)?;
    Ok(Program {
        insns,
        flags,
        arches: kernel.set_mask(),
    })
}

fn to_rule(sc: &LinuxSyscall) -> Result<bpf::Rule, SeccompError> {
    let ret = ret_value(sc.action(), sc.errno_ret())?;
    let mut conds = Vec::new();
    for arg in sc.args().iter().flatten() {
        conds.push(to_cond(sc, arg)?);
    }
    Ok(bpf::Rule { ret, conds })
}

fn to_cond(sc: &LinuxSyscall, arg: &LinuxSeccompArg) -> Result<bpf::Cond, SeccompError> {
    if arg.index() > 5 {
        return Err(SeccompError::ArgIndex {
            syscall: sc.names().join(","),
            index: arg.index(),
        });
    }
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => bpf::Op::Ne,
        LinuxSeccompOperator::ScmpCmpLt => bpf::Op::Lt,
        LinuxSeccompOperator::ScmpCmpLe => bpf::Op::Le,
        LinuxSeccompOperator::ScmpCmpEq => bpf::Op::Eq,
        LinuxSeccompOperator::ScmpCmpGe => bpf::Op::Ge,
        LinuxSeccompOperator::ScmpCmpGt => bpf::Op::Gt,
        LinuxSeccompOperator::ScmpCmpMaskedEq => bpf::Op::MaskedEq,
    };
    Ok(bpf::Cond {
        index: arg.index() as u32,
        op,
        value: arg.value(),
        value_two: arg.value_two().unwrap_or(0),
    })
}

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_MODE_FILTER: libc::c_ulong = 2;

// The kernel reads the program as an array of struct sock_filter; Insn must match it.
const _: () = assert!(std::mem::size_of::<Insn>() == std::mem::size_of::<libc::sock_filter>());
const _: () = assert!(std::mem::align_of::<Insn>() == std::mem::align_of::<libc::sock_filter>());

const CACHE_MAGIC: &[u8; 8] = b"SLSECCMP";
/// 2: the header's arch word names the kernel's architecture set, no longer one arch.
const CACHE_VERSION: u32 = 2;

impl Program {
    /// Installs the filter on the calling thread (and, with the TSYNC flag, its siblings).
    /// Needs `no_new_privs` or CAP_SYS_ADMIN. Allocates nothing, logs nothing: it runs in
    /// the cloned child right before exec.
    pub fn install(&self) -> Result<(), SeccompError> {
        let prog = libc::sock_fprog {
            // compile/from_bytes guarantee at most MAX_INSNS (4096) instructions
            len: self.insns.len() as libc::c_ushort,
            filter: self.insns.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `self.insns`, which is alive for the whole call and laid
        // out as an array of `struct sock_filter` (repr(C), size and alignment asserted
        // above); the kernel only reads it and copies the program before returning.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                self.flags as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        if rc > 0 {
            // with TSYNC, the id of a thread whose filters diverge
            return Err(SeccompError::Tsync(rc as i64));
        }
        let mut errno = nix::errno::Errno::last();
        if errno == nix::errno::Errno::ENOSYS && self.flags == 0 {
            // Kernels before 3.17 have no seccomp(2), only the prctl.
            // SAFETY: as above; PR_SET_SECCOMP with SECCOMP_MODE_FILTER reads the same
            // sock_fprog and nothing else.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                )
            };
            if rc == 0 {
                return Ok(());
            }
            errno = nix::errno::Errno::last();
        }
        if errno == nix::errno::Errno::EACCES {
            Err(SeccompError::NeedsNoNewPrivs(errno))
        } else {
            Err(SeccompError::Install(errno))
        }
    }

    /// The BPF instructions.
    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// Serializes the program for an on-disk cache (keyed by profile hash and
    /// [`kernel_arch_set_name`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 8 * self.insns.len());
        out.extend_from_slice(CACHE_MAGIC);
        out.extend_from_slice(&CACHE_VERSION.to_le_bytes());
        out.extend_from_slice(&self.arches.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&(self.insns.len() as u32).to_le_bytes());
        for i in &self.insns {
            out.extend_from_slice(&i.code.to_le_bytes());
            out.push(i.jt);
            out.push(i.jf);
            out.extend_from_slice(&i.k.to_le_bytes());
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Reads back [`Program::to_bytes`]; refuses a truncated or corrupted cache and one
    /// compiled for another kernel's set of architectures.
    pub fn from_bytes(bytes: &[u8]) -> Result<Program, SeccompError> {
        let kernel = Kernel::running().ok_or(SeccompError::UnsupportedArch)?;
        Program::from_bytes_for(bytes, kernel)
    }

    pub(crate) fn from_bytes_for(bytes: &[u8], kernel: Kernel) -> Result<Program, SeccompError> {
        const HEADER: usize = 8 + 4 * 4;
        if bytes.len() < HEADER + 8 {
            return Err(SeccompError::Cache("too short"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        if fnv1a(body).to_le_bytes() != sum {
            return Err(SeccompError::Cache("checksum mismatch"));
        }
        if &body[..8] != CACHE_MAGIC {
            return Err(SeccompError::Cache("not a slate seccomp program"));
        }
        let word =
            |at: usize| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        if word(8) != CACHE_VERSION {
            return Err(SeccompError::Cache("written by another slate version"));
        }
        let arches = word(12);
        if arches != kernel.set_mask() {
            return Err(SeccompError::Cache(
                "compiled for another set of architectures",
            ));
        }
        let flags = word(16);
        let count = word(20) as usize;
        if count == 0 || count > MAX_INSNS || body.len() != HEADER + 8 * count {
            return Err(SeccompError::Cache("bad instruction count"));
        }
        let insns = body[HEADER..]
            .chunks_exact(8)
            .map(|c| Insn {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        Ok(Program {
            insns,
            flags,
            arches,
        })
    }
}

/// A key for caching the compiled form of `profile` on the running kernel: changes with the
/// profile, the kernel's set of architectures and the program format. SHA-256, not a fast
/// hash: a profile comes from a bundle someone else wrote (containerd, podman, a pod spec),
/// and a crafted collision would hand that container another profile's weaker program.
pub fn cache_key(profile: &LinuxSeccomp) -> Result<String, SeccompError> {
    use sha2::Digest as _;
    let json = serde_json::to_vec(profile)?;
    let mut h = sha2::Sha256::new();
    h.update(CACHE_MAGIC);
    h.update(CACHE_VERSION.to_le_bytes());
    h.update(kernel_arch_set_name().as_bytes());
    h.update(&json);
    let hex: String = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("{hex}-{}-v{CACHE_VERSION}", kernel_arch_set_name()))
}

/// Compiles `profile`, or reads its compiled form from `cache_dir` (`seccomp-<key>.bpf`,
/// see [`cache_key`]) when an earlier start left it there, and leaves it there otherwise.
/// Compiling docker's default profile costs about a millisecond, most of a warm start's
/// user time; the cache makes it a read of 10 KiB. A cache that cannot be read, is corrupt
/// or cannot be written only costs a compile: it is never an error.
pub fn compile_cached(
    profile: &LinuxSeccomp,
    cache_dir: Option<&std::path::Path>,
) -> Result<Program, SeccompError> {
    let Some(dir) = cache_dir else {
        return compile(profile);
    };
    let path = dir.join(format!("seccomp-{}.bpf", cache_key(profile)?));
    if let Ok(bytes) = std::fs::read(&path) {
        match Program::from_bytes(&bytes) {
            Ok(p) => return Ok(p),
            Err(e) => {
                tracing::warn!(cache = %path.display(), error = %e, "ignoring a bad seccomp cache file")
            }
        }
    }
    let program = compile(profile)?;
    if let Err(e) = write_cache(dir, &path, &program) {
        tracing::debug!(cache = %path.display(), error = %e, "cannot cache the compiled seccomp filter");
    }
    Ok(program)
}

/// Writes through a temporary file and a rename, so a reader never sees half a program
/// (one that did would refuse it by its checksum anyway). No fsync: a cache lost in a crash
/// is compiled again.
fn write_cache(dir: &std::path::Path, path: &std::path::Path, p: &Program) -> std::io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    std::fs::create_dir_all(dir)?;
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".seccomp-{}-{seq}.tmp", std::process::id()));
    std::fs::write(&tmp, p.to_bytes())?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The default profile's file, in the extended format described in the module docs.
pub const DEFAULT_PROFILE_JSON: &str = include_str!("../../../configs/seccomp-default.json");

/// docker's default capability set, for which [`docker_default`] resolves the profile.
const DOCKER_DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileFile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<OciArch>,
    #[serde(default)]
    flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default)]
    syscalls: Vec<RuleFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleFile {
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<LinuxSeccompArg>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
    /// docker's architecture names ("amd64", "arm64", "arm", "s390x"...).
    #[serde(default)]
    arches: Vec<String>,
}

/// The default profile from `configs/seccomp-default.json`, for docker's default capabilities.
pub fn docker_default() -> Result<LinuxSeccomp, SeccompError> {
    docker_default_for_caps(DOCKER_DEFAULT_CAPS)
}

/// The default profile for a container holding `caps` (its bounding set; "SYS_ADMIN" and
/// "CAP_SYS_ADMIN" both work), relaxed the way docker relaxes its profile for `--cap-add`.
pub fn docker_default_for_caps<I, S>(caps: I) -> Result<LinuxSeccomp, SeccompError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|r| parse_kernel_version(&r));
    resolve_profile(DEFAULT_PROFILE_JSON, caps, kernel, &docker_arch_names())
}

fn normalize_cap(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// `(major, minor)` of a kernel release (`6.1.0-57-cloud-amd64`, `6.12.34+rpt-rpi-2712`).
pub fn parse_kernel_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.trim().split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Resolves the extended profile format into a plain OCI profile for `caps` on `kernel`
/// (rules with a `minKernel` are dropped when the kernel version is unknown) whose
/// architectures docker calls `arches`.
pub(crate) fn resolve_profile<I, S>(
    json: &str,
    caps: I,
    kernel: Option<(u32, u32)>,
    arches: &[&str],
) -> Result<LinuxSeccomp, SeccompError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let file: ProfileFile = serde_json::from_str(json)?;
    let caps: Vec<String> = caps
        .into_iter()
        .map(|c| normalize_cap(c.as_ref()))
        .collect();
    let has = |c: &String| caps.contains(&normalize_cap(c));
    let mut syscalls = Vec::new();
    for r in file.syscalls {
        if !r.includes.caps.iter().all(has) {
            continue;
        }
        if !r.excludes.caps.is_empty() && r.excludes.caps.iter().any(has) {
            continue;
        }
        // A rule written for other architectures can have other argument positions (clone
        // on s390 takes its flags second): never let it apply here. One program filters
        // all the kernel's architectures, so a rule for any of them is kept (its names are
        // looked up per architecture, and skipped where they do not exist).
        if !r.includes.arches.is_empty()
            && !r
                .includes
                .arches
                .iter()
                .any(|a| arches.contains(&a.as_str()))
        {
            continue;
        }
        if r.excludes
            .arches
            .iter()
            .any(|a| arches.contains(&a.as_str()))
        {
            continue;
        }
        if let Some(min) = &r.includes.min_kernel {
            let want = parse_kernel_version(min);
            let ok = match (kernel, want) {
                (Some(k), Some(w)) => k >= w,
                _ => false,
            };
            if !ok {
                continue;
            }
        }
        let mut sc = LinuxSyscall::default();
        sc.set_names(r.names);
        sc.set_action(r.action);
        sc.set_errno_ret(r.errno_ret);
        if !r.args.is_empty() {
            sc.set_args(Some(r.args));
        }
        syscalls.push(sc);
    }
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(file.default_action);
    profile.set_default_errno_ret(file.default_errno_ret);
    if !file.architectures.is_empty() {
        profile.set_architectures(Some(file.architectures));
    }
    if !file.flags.is_empty() {
        profile.set_flags(Some(file.flags));
    }
    profile.set_syscalls(Some(syscalls));
    Ok(profile)
}

#[cfg(test)]
mod tests;
