//! Seccomp: compiling an OCI seccomp profile to a classic BPF program and installing it, in
//! pure Rust (no libseccomp, so slate cross-compiles for armv7 and aarch64 with no C build).
//!
//! What a compiled [`Program`] guarantees:
//! - it filters the host's native architecture, plus arm on aarch64 (32-bit userlands on
//!   64-bit Raspberry Pi kernels), when the profile lists it. Any other architecture value in
//!   `seccomp_data.arch`, and x32 syscalls on x86_64, get the default action when that denies
//!   (errno, kill, trap), and kill the process when the default would let them through: a
//!   number never checked against this architecture's table is never allowed;
//! - names are looked up per architecture (tables generated from the kernel's uapi headers in
//!   `tables.rs`); a name unknown to an architecture is skipped there, as libseccomp does;
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
    Aarch64,
    Arm,
}

impl Arch {
    fn audit(self) -> u32 {
        match self {
            Arch::X86_64 => 0xc000_003e,
            Arch::Aarch64 => 0xc000_00b7,
            Arch::Arm => 0x4000_0028,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Arm => "arm",
        }
    }

    fn table(self) -> &'static [(&'static str, u32)] {
        match self {
            Arch::X86_64 => tables::X86_64,
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

    /// arm's private syscalls (`__ARM_NR_*`) start here.
    fn private_base(self) -> Option<u32> {
        match self {
            Arch::Arm => Some(0x000f_0000),
            Arch::X86_64 | Arch::Aarch64 => None,
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

    pub(crate) fn native() -> Option<Arch> {
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
            OciArch::ScmpArchAarch64 => Some(Arch::Aarch64),
            OciArch::ScmpArchArm => Some(Arch::Arm),
            _ => None,
        }
    }

    /// Architectures whose syscalls a process on a kernel of this one can make.
    fn compat(self) -> &'static [Arch] {
        match self {
            Arch::Aarch64 => &[Arch::Arm],
            Arch::X86_64 | Arch::Arm => &[],
        }
    }
}

/// Name of the architecture programs are compiled for on this build, for cache keys.
pub fn native_arch_name() -> &'static str {
    Arch::native().map_or("unsupported", Arch::name)
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
    arch: u32,
}

/// Compiles `profile` for this host's architecture.
pub fn compile(profile: &LinuxSeccomp) -> Result<Program, SeccompError> {
    let native = Arch::native().ok_or(SeccompError::UnsupportedArch)?;
    compile_for(profile, native)
}

pub(crate) fn compile_for(profile: &LinuxSeccomp, native: Arch) -> Result<Program, SeccompError> {
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

    // The native architecture is always filtered (as libseccomp does); compat ones when
    // listed. Listed ones we have no table for (x86, x32) fall to the mismatch action.
    let mut arches = vec![native];
    for a in profile.architectures().iter().flatten() {
        match Arch::from_oci(*a) {
            Some(arch) if native.compat().contains(&arch) && !arches.contains(&arch) => {
                arches.push(arch)
            }
            Some(_) => {}
            None if *a == OciArch::ScmpArchNative => {}
            None => {
                tracing::debug!(arch = %a, "no syscall table for this architecture, its syscalls get the mismatch action")
            }
        }
    }

    let default_ret = ret_value(profile.default_action(), profile.default_errno_ret())?;
    let mismatch_ret = match profile.default_action() {
        LinuxSeccompAction::ScmpActAllow
        | LinuxSeccompAction::ScmpActLog
        | LinuxSeccompAction::ScmpActTrace => RET_KILL_PROCESS,
        _ => default_ret,
    };

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
    for arch in arches {
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
            x32_guard: arch == Arch::X86_64,
            enosys_above: if enosys { arch.max_regular() } else { None },
            private_base: arch.private_base(),
            syscalls: by_nr,
        });
    }

    let insns = bpf::generate(&sections, default_ret, mismatch_ret)?;
    Ok(Program {
        insns,
        flags,
        arch: native.audit(),
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
const CACHE_VERSION: u32 = 1;

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
    /// [`native_arch_name`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 8 * self.insns.len());
        out.extend_from_slice(CACHE_MAGIC);
        out.extend_from_slice(&CACHE_VERSION.to_le_bytes());
        out.extend_from_slice(&self.arch.to_le_bytes());
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
    /// compiled for another architecture.
    pub fn from_bytes(bytes: &[u8]) -> Result<Program, SeccompError> {
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
        let arch = word(12);
        if Some(arch) != Arch::native().map(Arch::audit) {
            return Err(SeccompError::Cache("compiled for another architecture"));
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
        Ok(Program { insns, flags, arch })
    }
}

/// A key for caching the compiled form of `profile` on this architecture: changes with the
/// profile, the architecture and the program format.
pub fn cache_key(profile: &LinuxSeccomp) -> Result<String, SeccompError> {
    let json = serde_json::to_vec(profile)?;
    Ok(format!(
        "{:016x}-{}-v{CACHE_VERSION}",
        fnv1a(&json),
        native_arch_name()
    ))
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

/// docker's names for the architectures a program of this build filters.
fn docker_arch_names() -> &'static [&'static str] {
    match Arch::native() {
        Some(Arch::X86_64) => &["amd64"],
        Some(Arch::Aarch64) => &["arm64", "arm"],
        Some(Arch::Arm) => &["arm"],
        None => &[],
    }
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
    resolve_profile(DEFAULT_PROFILE_JSON, caps, kernel)
}

fn normalize_cap(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

pub(crate) fn parse_kernel_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.trim().split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Resolves the extended profile format into a plain OCI profile for `caps` on `kernel`
/// (rules with a `minKernel` are dropped when the kernel version is unknown).
pub(crate) fn resolve_profile<I, S>(
    json: &str,
    caps: I,
    kernel: Option<(u32, u32)>,
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
        // on s390 takes its flags second): never let it apply here.
        let ours = docker_arch_names();
        if !r.includes.arches.is_empty()
            && !r.includes.arches.iter().any(|a| ours.contains(&a.as_str()))
        {
            continue;
        }
        if r.excludes.arches.iter().any(|a| ours.contains(&a.as_str())) {
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
