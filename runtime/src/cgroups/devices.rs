//! The device allowlist on cgroup v2: `linux.resources.devices` compiled into a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program, as runc and crun do (issue 11: without one, a
//! container with docker's default CAP_MKNOD can `mknod` the host's disk and read it).
//!
//! cgroup v2 has no `devices.allow`/`devices.deny` files: the kernel asks an eBPF program
//! attached to the cgroup about every open and mknod of a device node, with the node's type,
//! major, minor and the access wanted. The program here is written instruction by instruction
//! (a handful of opcodes), not through libbpf: that is a C build per ARM target for a program
//! of a few dozen instructions.
//!
//! Semantics, the same as the v1 devices controller gives the same list (and as runc's):
//! - the rules are those of the spec followed by libcgroups' default allowlist, which its v1
//!   controller appends too, so a container has the same devices on both hierarchies;
//! - the last rule that matches decides (emitted in reverse, the first match returns);
//! - a rule matches when the type is its type (`a` and no type: any), major and minor equal
//!   its own (none or -1: any), and the access wanted is within its access (`rwm`; none: all);
//! - what no rule matches is denied, so a list that does not start with allow-all is a deny
//!   list with exceptions.
//!
//! A list that allows everything (`--privileged`) compiles to no program at all.

use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::CgroupError;
use crate::bpf::{self, Insn, LoadError};

/// What is wrong with one device rule of the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device rule {rule:?}: {reason}")]
pub struct DeviceRuleError {
    pub rule: String,
    pub reason: &'static str,
}

// Access bits and device types of `struct bpf_cgroup_dev_ctx` (include/uapi/linux/bpf.h):
// `access_type` is (access << 16) | type.
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
pub(super) const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;

/// One rule, checked and in the kernel's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    allow: bool,
    /// `None`: any type.
    typ: Option<u32>,
    major: Option<u32>,
    minor: Option<u32>,
    access: u32,
}

impl Rule {
    fn matches_everything(&self) -> bool {
        self.typ.is_none() && self.major.is_none() && self.minor.is_none() && self.access == ACC_ALL
    }
}

/// libcgroups' default allowlist (`common::default_devices` and `default_allow_devices`),
/// which `v1_limits` writes after the spec's rules: mknod of any node, the standard devices
/// the runtime creates in /dev, the ptys and tun.
pub(super) const DEFAULT_ALLOW: [(u32, Option<u32>, Option<u32>, u32); 12] = [
    (DEV_CHAR, Some(1), Some(3), ACC_ALL),    // null
    (DEV_CHAR, Some(1), Some(5), ACC_ALL),    // zero
    (DEV_CHAR, Some(1), Some(7), ACC_ALL),    // full
    (DEV_CHAR, Some(5), Some(0), ACC_ALL),    // tty
    (DEV_CHAR, Some(1), Some(9), ACC_ALL),    // urandom
    (DEV_CHAR, Some(1), Some(8), ACC_ALL),    // random
    (DEV_CHAR, None, None, ACC_MKNOD),        // mknod of any char device
    (DEV_BLOCK, None, None, ACC_MKNOD),       // mknod of any block device
    (DEV_CHAR, Some(5), Some(1), ACC_ALL),    // console
    (DEV_CHAR, Some(136), None, ACC_ALL),     // pts/*
    (DEV_CHAR, Some(5), Some(2), ACC_ALL),    // ptmx
    (DEV_CHAR, Some(10), Some(200), ACC_ALL), // net/tun
];

/// An access mask as the v1 devices controller spells it: `rwm`, `m`.
pub(super) fn access_letters(access: u32) -> String {
    [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')]
        .iter()
        .filter(|(bit, _)| access & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// A compiled device filter: the instructions to load, or nothing to load because the rules
/// allow every device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceFilter {
    AllowAll,
    Program(Vec<Insn>),
}

/// Compiles the spec's device rules (plus the default allowlist) into a filter.
pub(crate) fn compile(spec_rules: &[LinuxDeviceCgroup]) -> Result<DeviceFilter, DeviceRuleError> {
    let mut rules = Vec::with_capacity(spec_rules.len() + DEFAULT_ALLOW.len());
    for r in spec_rules {
        rules.push(check(r)?);
    }
    for (typ, major, minor, access) in DEFAULT_ALLOW {
        rules.push(Rule {
            allow: true,
            typ: Some(typ),
            major,
            minor,
            access,
        });
    }
    // Everything after the last catch-all rule decides alone; before it, nothing matters.
    let last_catch_all = rules.iter().rposition(Rule::matches_everything);
    if let Some(i) = last_catch_all {
        if rules[i..].iter().all(|r| r.allow) {
            return Ok(DeviceFilter::AllowAll);
        }
    }
    Ok(DeviceFilter::Program(emit(&rules)))
}

fn check(r: &LinuxDeviceCgroup) -> Result<Rule, DeviceRuleError> {
    let bad = |reason| DeviceRuleError {
        rule: describe(r),
        reason,
    };
    let typ = match r.typ() {
        None | Some(LinuxDeviceType::A) => None,
        Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
        Some(LinuxDeviceType::C | LinuxDeviceType::U) => Some(DEV_CHAR),
        Some(LinuxDeviceType::P) => {
            return Err(bad("type p (a FIFO) is not a device; use a, b or c"))
        }
    };
    let number = |n: Option<i64>| -> Result<Option<u32>, DeviceRuleError> {
        match n {
            None | Some(-1) => Ok(None),
            // The kernel's device numbers have 12 (major) and 20 (minor) bits; a compare
            // with an immediate takes a signed 32-bit value.
            Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(Some(n as u32)),
            Some(_) => Err(bad(
                "major and minor must be between 0 and 2^31-1, or -1 for any",
            )),
        }
    };
    let major = number(r.major())?;
    let minor = number(r.minor())?;
    let access = match r.access().as_deref() {
        None => ACC_ALL,
        Some(s) => {
            let mut bits = 0;
            for c in s.chars() {
                bits |= match c {
                    'r' => ACC_READ,
                    'w' => ACC_WRITE,
                    'm' => ACC_MKNOD,
                    _ => return Err(bad("access must be made of r, w and m")),
                };
            }
            bits
        }
    };
    Ok(Rule {
        allow: r.allow(),
        typ,
        major,
        minor,
        access,
    })
}

/// The rule as `devices.allow` would spell it, for error messages.
fn describe(r: &LinuxDeviceCgroup) -> String {
    let typ = match r.typ() {
        None | Some(LinuxDeviceType::A) => "a",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::C) => "c",
        Some(LinuxDeviceType::U) => "u",
        Some(LinuxDeviceType::P) => "p",
    };
    let num = |n: Option<i64>| match n {
        None | Some(-1) => "*".to_owned(),
        Some(n) => n.to_string(),
    };
    format!(
        "{} {typ} {}:{} {}",
        if r.allow() { "allow" } else { "deny" },
        num(r.major()),
        num(r.minor()),
        r.access().as_deref().unwrap_or("rwm"),
    )
}

// The opcodes emitted (include/uapi/linux/bpf_common.h, bpf.h).
pub(crate) const LDX_W: u8 = 0x61; // BPF_LDX | BPF_W | BPF_MEM: dst = *(u32 *)(src + off)
pub(crate) const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K: dst = (u32)dst & imm
pub(crate) const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K: dst = (u32)dst >> imm
pub(crate) const MOV32_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X: dst = (u32)src
pub(crate) const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K: dst = imm
pub(crate) const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K: if dst != imm: pc += off
pub(crate) const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X: if dst != src: pc += off
pub(crate) const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT: return r0

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

/// The program: load the context into r2 (type), r3 (access), r4 (major), r5 (minor), then
/// one block per rule, last rule first; a block whose every check passes returns the rule's
/// verdict, a failing check jumps to the next block. Nothing follows a block without checks:
/// the verifier refuses unreachable instructions.
fn emit(rules: &[Rule]) -> Vec<Insn> {
    let mut out = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    let mut seen: Vec<Rule> = Vec::new();
    for rule in rules.iter().rev() {
        // What the rule matches, whatever its verdict.
        let key = Rule {
            allow: false,
            ..*rule
        };
        if rule.access == 0 || seen.contains(&key) {
            // No access matches no request; a rule that matches what a later one does never
            // decides (the default allowlist repeats most of docker's list).
            continue;
        }
        seen.push(key);
        // Each check is a conditional jump over the rest of the block, whose length is known
        // only once the block is complete: collect the checks with their jump offsets open.
        let mut block: Vec<(Insn, bool)> = Vec::new();
        if let Some(t) = rule.typ {
            block.push((insn(JNE_K, 2, 0, 0, t as i32), true));
        }
        if rule.access != ACC_ALL {
            // Wanted within allowed: (wanted & allowed) == wanted.
            block.push((insn(MOV32_X, 1, 3, 0, 0), false));
            block.push((insn(AND32_K, 1, 0, 0, rule.access as i32), false));
            block.push((insn(JNE_X, 1, 3, 0, 0), true));
        }
        if let Some(m) = rule.major {
            block.push((insn(JNE_K, 4, 0, 0, m as i32), true));
        }
        if let Some(m) = rule.minor {
            block.push((insn(JNE_K, 5, 0, 0, m as i32), true));
        }
        let unconditional = block.is_empty();
        block.push((insn(MOV64_K, 0, 0, 0, i32::from(rule.allow)), false));
        block.push((insn(EXIT, 0, 0, 0, 0), false));
        let len = block.len();
        for (i, (mut ins, is_jump)) in block.into_iter().enumerate() {
            if is_jump {
                // Blocks have at most 8 instructions.
                ins.off = (len - i - 1) as i16;
            }
            out.push(ins);
        }
        if unconditional {
            return out;
        }
    }
    out.push(insn(MOV64_K, 0, 0, 0, 0));
    out.push(insn(EXIT, 0, 0, 0, 0));
    out
}

/// Loads `insns` and attaches them to the cgroup v2 directory `dir`. The program's descriptor
/// is closed on return: the attachment holds the program, and removing the cgroup frees it.
pub(super) fn attach(dir: &Path, insns: &[Insn]) -> Result<(), CgroupError> {
    let prog = bpf::load_device_program(insns).map_err(load_error)?;
    let cgroup = std::fs::File::open(dir).map_err(|source| CgroupError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    bpf::attach_device_program(cgroup.as_fd(), prog.as_fd())
        .map_err(|source| attach_error(dir, source))?;
    tracing::debug!(path = %dir.display(), instructions = insns.len(), "attached the device filter");
    Ok(())
}

/// Tells a kernel that cannot filter devices from one that refused this program (a bug of
/// slate's compiler, explained by the verifier's log).
pub(super) fn load_error(e: LoadError) -> CgroupError {
    let unsupported = |reason| CgroupError::DeviceFilterUnsupported {
        step: "BPF_PROG_LOAD",
        reason,
        source: e.errno,
    };
    match e.errno {
        Errno::ENOSYS => unsupported("the kernel has no bpf(2) system call (CONFIG_BPF_SYSCALL)"),
        // An unknown program type is refused before the verifier runs, so without a log.
        Errno::EINVAL if e.log.is_empty() => {
            unsupported("the kernel does not know cgroup device programs (CONFIG_CGROUP_BPF)")
        }
        Errno::EPERM => unsupported(
            "the kernel does not let slate load BPF programs (kernel lockdown, a seccomp \
             filter around slate, or no CAP_SYS_ADMIN)",
        ),
        errno => CgroupError::DeviceFilterRejected {
            source: errno,
            log: if e.log.is_empty() {
                "no verifier log".to_owned()
            } else {
                e.log
                    .lines()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        },
    }
}

fn attach_error(dir: &Path, source: Errno) -> CgroupError {
    let unsupported = |reason| CgroupError::DeviceFilterUnsupported {
        step: "BPF_PROG_ATTACH",
        reason,
        source,
    };
    match source {
        Errno::EINVAL | Errno::EOPNOTSUPP => {
            unsupported("the kernel cannot attach device programs to cgroups")
        }
        Errno::EPERM => unsupported("the kernel does not let slate attach BPF programs"),
        _ => CgroupError::DeviceFilterAttach {
            path: dir.to_path_buf(),
            source,
        },
    }
}

#[cfg(test)]
#[path = "devices_tests.rs"]
pub(super) mod tests;
