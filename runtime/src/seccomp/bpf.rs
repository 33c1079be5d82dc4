//! Classic BPF for seccomp: a tiny assembler with forward labels, and the generator that turns
//! resolved per-architecture rules into a filter program.
//!
//! Program shape:
//! ```text
//!   ld arch; for each audit arch: jeq AUDIT_ARCH -> its sections; ret <mismatch>
//! sections of one audit arch:
//!   ld nr; [x86_64 and x32 share AUDIT_ARCH_X86_64: nr >= X32 bit -> the x32 section, else
//!   the x86_64 one; the half with no section -> ret <mismatch>]
//! section:
//!   [nr newer than the table -> ENOSYS]
//!   binary search over the sorted syscall numbers (jge splits, ja to the right half), leaves
//!   of up to four `jeq nr` that return the action or jump to the syscall's argument checks;
//!   not found -> ret <default>
//!   argument checks: rule by rule, every condition on 64-bit args compared as two 32-bit
//!   halves; the first rule whose conditions all hold returns its action, else <default>
//! ```
//! Conditional jumps only ever go a short way forward (within one rule or one leaf); every
//! long jump is a `ja`, whose offset is 32 bits, so programs of any size assemble.

use super::SeccompError;

/// One classic BPF instruction, laid out exactly as the kernel's `struct sock_filter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

pub(crate) const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
pub(crate) const ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
pub(crate) const JA: u16 = 0x05; // BPF_JMP | BPF_JA
pub(crate) const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
pub(crate) const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
pub(crate) const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
pub(crate) const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// The kernel's limit on the length of a filter (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

// Offsets into struct seccomp_data.
pub(crate) const OFF_NR: u32 = 0;
pub(crate) const OFF_ARCH: u32 = 4;
pub(crate) const OFF_ARGS: u32 = 16;

/// x86_64 marks x32 syscalls by this bit in the number, under the x86_64 audit arch.
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Label(usize);

#[derive(Clone, Copy, Debug)]
pub(crate) enum J {
    Next,
    To(Label),
}

#[derive(Clone, Copy)]
enum Slot {
    Jt,
    Jf,
    Ja,
}

#[derive(Default)]
pub(crate) struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Slot, Label)>,
}

impl Asm {
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }

    fn push(&mut self, code: u16, k: u32) -> usize {
        self.insns.push(Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        });
        self.insns.len() - 1
    }

    pub fn ld(&mut self, offset: u32) {
        self.push(LD_W_ABS, offset);
    }

    pub fn and(&mut self, k: u32) {
        self.push(ALU_AND_K, k);
    }

    pub fn ret(&mut self, k: u32) {
        self.push(RET_K, k);
    }

    pub fn ja(&mut self, l: Label) {
        let at = self.push(JA, 0);
        self.fixups.push((at, Slot::Ja, l));
    }

    pub fn jmp(&mut self, code: u16, k: u32, jt: J, jf: J) {
        let at = self.push(code, k);
        if let J::To(l) = jt {
            self.fixups.push((at, Slot::Jt, l));
        }
        if let J::To(l) = jf {
            self.fixups.push((at, Slot::Jf, l));
        }
    }

    /// Resolves every label; all jumps go forward.
    pub fn finish(mut self) -> Result<Vec<Insn>, SeccompError> {
        for (at, slot, l) in std::mem::take(&mut self.fixups) {
            let target = self.labels[l.0].ok_or(SeccompError::Internal("unbound label"))?;
            let off = target
                .checked_sub(at + 1)
                .ok_or(SeccompError::Internal("backward jump"))?;
            let insn = &mut self.insns[at];
            match slot {
                Slot::Ja => {
                    insn.k =
                        u32::try_from(off).map_err(|_| SeccompError::Internal("jump too far"))?
                }
                Slot::Jt | Slot::Jf => {
                    let short =
                        u8::try_from(off).map_err(|_| SeccompError::Internal("branch too far"))?;
                    if matches!(slot, Slot::Jt) {
                        insn.jt = short;
                    } else {
                        insn.jf = short;
                    }
                }
            }
        }
        if self.insns.len() > MAX_INSNS {
            return Err(SeccompError::TooLarge(self.insns.len()));
        }
        Ok(self.insns)
    }
}

/// Comparison of one syscall argument, as in the OCI profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// `(arg & value) == value_two`
    MaskedEq,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Cond {
    pub index: u32,
    pub op: Op,
    pub value: u64,
    pub value_two: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub ret: u32,
    pub conds: Vec<Cond>,
}

/// Which syscall numbers under its audit arch a section owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nrs {
    /// Every number: the audit arch names one ABI.
    All,
    /// x86_64: the numbers without [`X32_SYSCALL_BIT`]; those with it are x32's.
    BelowX32,
    /// x32: the numbers with [`X32_SYSCALL_BIT`], under AUDIT_ARCH_X86_64.
    X32,
}

/// The rules of one architecture, by syscall number, in profile order within a number.
pub(crate) struct Section {
    pub audit_arch: u32,
    pub nrs: Nrs,
    /// Numbers above this one (newer than slate's table) fail with ENOSYS instead of the
    /// default action, so a newer libc falls back to the older syscall it knows (glibc does
    /// for fchmodat2, clone3...) instead of failing with EPERM.
    pub enosys_above: Option<u32>,
    /// Start of the architecture's private syscall range, exempt from `enosys_above` (arm's
    /// cacheflush, set_tls... at 0x0f0000; x32's own entry points from 512 on).
    pub private_base: Option<u32>,
    pub syscalls: Vec<(u32, Vec<Rule>)>,
}

/// `SECCOMP_RET_ERRNO | ENOSYS`.
pub(crate) const RET_ENOSYS: u32 = 0x0005_0000 | 38;

enum Target {
    Ret(u32),
    Body(Label),
}

pub(crate) fn generate(
    sections: &[Section],
    default_ret: u32,
    mismatch_ret: u32,
) -> Result<Vec<Insn>, SeccompError> {
    // One group per audit arch, in the order the sections come (the kernel's own first, so
    // the common case takes one jump).
    let mut groups: Vec<(u32, Option<&Section>, Option<&Section>)> = Vec::new();
    for s in sections {
        let at = match groups.iter().position(|g| g.0 == s.audit_arch) {
            Some(i) => i,
            None => {
                groups.push((s.audit_arch, None, None));
                groups.len() - 1
            }
        };
        let g = &mut groups[at];
        let slot = if s.nrs == Nrs::X32 {
            &mut g.2
        } else {
            &mut g.1
        };
        if slot.is_some() {
            return Err(SeccompError::Internal("two sections for one audit arch"));
        }
        *slot = Some(s);
    }
    for (_, low, high) in &groups {
        if low.is_some_and(|l| l.nrs == Nrs::All) && high.is_some() {
            return Err(SeccompError::Internal(
                "x32 section beside a whole-arch one",
            ));
        }
    }

    let mut a = Asm::default();
    a.ld(OFF_ARCH);
    let starts: Vec<Label> = groups.iter().map(|_| a.label()).collect();
    for (g, start) in groups.iter().zip(&starts) {
        let next = a.label();
        a.jmp(JEQ_K, g.0, J::Next, J::To(next));
        a.ja(*start);
        a.bind(next);
    }
    a.ret(mismatch_ret);

    for ((_, low, high), start) in groups.iter().zip(&starts) {
        a.bind(*start);
        a.ld(OFF_NR);
        let split = high.is_some() || low.is_some_and(|l| l.nrs == Nrs::BelowX32);
        if !split {
            if let Some(s) = low {
                section(&mut a, s, default_ret);
            }
            continue;
        }
        // An x32 number never reaches the x86_64 table nor the other way round: the same
        // name has other numbers (and some syscalls other arguments) in each.
        let high_label = a.label();
        let low_label = a.label();
        a.jmp(JGE_K, X32_SYSCALL_BIT, J::Next, J::To(low_label));
        match high {
            Some(_) => a.ja(high_label),
            None => a.ret(mismatch_ret),
        }
        a.bind(low_label);
        match low {
            Some(s) => section(&mut a, s, default_ret),
            None => a.ret(mismatch_ret),
        }
        if let Some(s) = high {
            a.bind(high_label);
            section(&mut a, s, default_ret);
        }
    }
    a.finish()
}

/// One architecture's checks; the accumulator holds the syscall number.
fn section(a: &mut Asm, s: &Section, default_ret: u32) {
    if let Some(max) = s.enosys_above {
        let known = a.label();
        a.jmp(JGT_K, max, J::Next, J::To(known));
        if let Some(base) = s.private_base {
            a.jmp(JGE_K, base, J::To(known), J::Next);
        }
        a.ret(RET_ENOSYS);
        a.bind(known);
    }
    let mut leaves = Vec::with_capacity(s.syscalls.len());
    let mut bodies = Vec::new();
    for (nr, rules) in &s.syscalls {
        match rules.first() {
            Some(r) if r.conds.is_empty() => leaves.push((*nr, Target::Ret(r.ret))),
            Some(_) => {
                let l = a.label();
                leaves.push((*nr, Target::Body(l)));
                bodies.push((l, rules));
            }
            None => {}
        }
    }
    tree(a, &leaves, default_ret);
    for (l, rules) in bodies {
        a.bind(l);
        for r in rules.iter() {
            let fail = a.label();
            for c in &r.conds {
                cond(a, c, fail);
            }
            a.ret(r.ret);
            a.bind(fail);
        }
        a.ret(default_ret);
    }
}

/// Binary search over sorted syscall numbers; the accumulator holds the number throughout.
fn tree(a: &mut Asm, leaves: &[(u32, Target)], default_ret: u32) {
    if leaves.len() <= 4 {
        for (nr, t) in leaves {
            let after = a.label();
            a.jmp(JEQ_K, *nr, J::Next, J::To(after));
            match t {
                Target::Ret(k) => a.ret(*k),
                Target::Body(l) => a.ja(*l),
            }
            a.bind(after);
        }
        a.ret(default_ret);
        return;
    }
    let mid = leaves.len() / 2;
    let left = a.label();
    let right = a.label();
    a.jmp(JGE_K, leaves[mid].0, J::Next, J::To(left));
    a.ja(right);
    a.bind(left);
    tree(a, &leaves[..mid], default_ret);
    a.bind(right);
    tree(a, &leaves[mid..], default_ret);
}

/// One 64-bit comparison as two 32-bit ones; falls through when it holds, jumps to `fail`
/// otherwise.
fn cond(a: &mut Asm, c: &Cond, fail: Label) {
    let base = OFF_ARGS + 8 * c.index;
    let (lo_off, hi_off) = if cfg!(target_endian = "little") {
        (base, base + 4)
    } else {
        (base + 4, base)
    };
    let (vhi, vlo) = ((c.value >> 32) as u32, c.value as u32);
    let pass = a.label();
    let f = J::To(fail);
    let p = J::To(pass);
    match c.op {
        Op::Eq => {
            a.ld(hi_off);
            a.jmp(JEQ_K, vhi, J::Next, f);
            a.ld(lo_off);
            a.jmp(JEQ_K, vlo, J::Next, f);
        }
        Op::Ne => {
            a.ld(hi_off);
            a.jmp(JEQ_K, vhi, J::Next, p);
            a.ld(lo_off);
            a.jmp(JEQ_K, vlo, f, J::Next);
        }
        Op::Gt | Op::Ge => {
            a.ld(hi_off);
            a.jmp(JGT_K, vhi, p, J::Next);
            a.jmp(JEQ_K, vhi, J::Next, f);
            a.ld(lo_off);
            let code = if c.op == Op::Gt { JGT_K } else { JGE_K };
            a.jmp(code, vlo, J::Next, f);
        }
        Op::Lt | Op::Le => {
            a.ld(hi_off);
            a.jmp(JGT_K, vhi, f, J::Next);
            a.jmp(JEQ_K, vhi, J::Next, p);
            a.ld(lo_off);
            // lo < v  <=>  !(lo >= v);  lo <= v  <=>  !(lo > v)
            let code = if c.op == Op::Lt { JGE_K } else { JGT_K };
            a.jmp(code, vlo, f, J::Next);
        }
        Op::MaskedEq => {
            let (mhi, mlo) = ((c.value >> 32) as u32, c.value as u32);
            let (dhi, dlo) = ((c.value_two >> 32) as u32, c.value_two as u32);
            a.ld(hi_off);
            a.and(mhi);
            a.jmp(JEQ_K, dhi, J::Next, f);
            a.ld(lo_off);
            a.and(mlo);
            a.jmp(JEQ_K, dlo, J::Next, f);
        }
    }
    a.bind(pass);
}
