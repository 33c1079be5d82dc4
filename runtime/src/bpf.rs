//! The `bpf(2)` calls of the cgroup v2 device filter: load a `BPF_PROG_TYPE_CGROUP_DEVICE`
//! program, attach it to a cgroup directory, and (for the tests) list what is attached and
//! whether a program still exists. Each call fills a prefix of the kernel's
//! `union bpf_attr` as a `#[repr(C)]` struct of its own; the kernel accepts a shorter
//! attribute than its own union (and checks that any extra tail we pass is zero).
//!
//! The instructions themselves are built in `cgroups::devices`; this module only encodes them
//! into `struct bpf_insn` and hands them over.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
#[cfg(test)]
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
#[cfg(test)]
const BPF_PROG_QUERY: libc::c_int = 16;

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Several programs on one cgroup (and its ancestors') all have to allow an access, so a
/// program slate attaches can only narrow what a parent (systemd's, a nested runtime's)
/// allows, never widen it.
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The license the kernel is told: device programs call no GPL-only helper, any string does.
const LICENSE: &[u8] = b"Apache-2.0\0";
/// Shown by `bpftool prog` (at most 15 bytes and a NUL).
const PROG_NAME: &[u8] = b"slate_devices";
/// Enough for the verifier's account of a program of a few hundred instructions.
const LOG_SIZE: usize = 64 * 1024;

/// One eBPF instruction, as `cgroups::devices` builds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

/// `struct bpf_insn`: the two registers share one byte as C bit fields, whose order follows
/// the byte order.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawInsn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl From<Insn> for RawInsn {
    fn from(i: Insn) -> RawInsn {
        #[cfg(target_endian = "little")]
        let regs = (i.dst & 0x0f) | (i.src << 4);
        #[cfg(target_endian = "big")]
        let regs = (i.dst << 4) | (i.src & 0x0f);
        RawInsn {
            code: i.code,
            regs,
            off: i.off,
            imm: i.imm,
        }
    }
}

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` member, up to `replace_bpf_fd`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[cfg(test)]
/// The `BPF_PROG_QUERY` member, up to `prog_cnt`.
#[repr(C)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

#[cfg(test)]
/// The `BPF_*_GET_FD_BY_ID` member.
#[repr(C)]
struct GetIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// `T` must be the `#[repr(C)]` layout of the member of `union bpf_attr` that `cmd` reads,
/// and every pointer stored in it must be valid for what `cmd` does with it (read or write)
/// for the duration of the call.
unsafe fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> Result<libc::c_long, Errno> {
    // SAFETY: the caller upholds the contract above; the kernel reads and writes at most
    // `size_of::<T>()` bytes of `attr`, which is a valid, writable `T`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    Errno::result(ret)
}

/// Why a program was refused: the errno, and the verifier's log when it had something to say
/// (empty when the kernel refused before verifying, e.g. an unknown program type).
#[derive(Debug)]
pub(crate) struct LoadError {
    pub errno: Errno,
    pub log: String,
}

/// Loads `insns` as a cgroup device program and returns its descriptor.
///
/// Kernels before 5.11 charge program memory to `RLIMIT_MEMLOCK` and answer `EPERM` when it
/// is low (64 KiB by default); the limit is then raised for the one retry and put back, so the
/// container does not inherit a raised limit.
pub(crate) fn load_device_program(insns: &[Insn]) -> Result<OwnedFd, LoadError> {
    let raw: Vec<RawInsn> = insns.iter().copied().map(RawInsn::from).collect();
    match load(&raw, None) {
        Ok(fd) => return Ok(fd),
        Err(Errno::EPERM) => {
            if let Some(fd) = with_memlock_raised(|| load(&raw, None)) {
                return Ok(fd);
            }
        }
        Err(Errno::EINVAL | Errno::EACCES) => {}
        Err(errno) => {
            return Err(LoadError {
                errno,
                log: String::new(),
            })
        }
    }
    // Once more with the verifier's log, so that the error says why.
    let mut log = vec![0u8; LOG_SIZE];
    match load(&raw, Some(&mut log)) {
        Ok(fd) => Ok(fd),
        Err(errno) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(LoadError {
                errno,
                log: String::from_utf8_lossy(&log[..end]).trim().to_owned(),
            })
        }
    }
}

fn load(insns: &[RawInsn], log: Option<&mut [u8]>) -> Result<OwnedFd, Errno> {
    let mut prog_name = [0u8; 16];
    prog_name[..PROG_NAME.len()].copy_from_slice(PROG_NAME);
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    // SAFETY: ProgLoadAttr is the BPF_PROG_LOAD layout; `insns` points at `insn_cnt`
    // instructions and `license` at a NUL-terminated string, both read during the call only;
    // `log_buf`, when set, is a writable buffer of `log_size` bytes that outlives the call.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &mut attr) }?;
    // SAFETY: on success BPF_PROG_LOAD returns a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Runs `f` with `RLIMIT_MEMLOCK` unlimited, then restores it; `None` if the limit cannot be
/// raised or `f` fails all the same.
fn with_memlock_raised(f: impl FnOnce() -> Result<OwnedFd, Errno>) -> Option<OwnedFd> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_MEMLOCK).ok()?;
    if soft == libc::RLIM_INFINITY {
        return None;
    }
    setrlimit(
        Resource::RLIMIT_MEMLOCK,
        libc::RLIM_INFINITY,
        libc::RLIM_INFINITY,
    )
    .ok()?;
    let result = f();
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, soft, hard) {
        tracing::warn!(error = %e, "cannot restore RLIMIT_MEMLOCK after loading the device filter");
    }
    result.ok()
}

/// Attaches device program `prog` to the cgroup v2 directory open as `cgroup`, beside any
/// program already there (`BPF_F_ALLOW_MULTI`, as runc does).
pub(crate) fn attach_device_program(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
) -> Result<(), Errno> {
    let mut attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: ProgAttachAttr is the BPF_PROG_ATTACH layout and holds no pointers.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map(drop)
}

#[cfg(test)]
/// The ids of the device programs attached to the cgroup open as `cgroup` itself (not those
/// inherited from its ancestors).
pub(crate) fn attached_device_programs(cgroup: BorrowedFd<'_>) -> Result<Vec<u32>, Errno> {
    let mut ids = vec![0u32; 64];
    let mut attr = ProgQueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
    };
    // SAFETY: ProgQueryAttr is the BPF_PROG_QUERY layout; `prog_ids` is a writable array of
    // `prog_cnt` u32s that outlives the call, and the kernel writes at most that many.
    unsafe { bpf(BPF_PROG_QUERY, &mut attr) }?;
    ids.truncate((attr.prog_cnt as usize).min(64));
    Ok(ids)
}

#[cfg(test)]
/// Whether a BPF program with this id still exists (programs are freed asynchronously once
/// their last reference, e.g. the attachment to a removed cgroup, is gone).
pub(crate) fn program_exists(id: u32) -> Result<bool, Errno> {
    let mut attr = GetIdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: GetIdAttr is the BPF_PROG_GET_FD_BY_ID layout and holds no pointers.
    match unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) } {
        Ok(fd) => {
            // SAFETY: on success the kernel returned a new descriptor that nothing else owns;
            // it is only closed here.
            drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
            Ok(true)
        }
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}
