//! Errors of the runtime, one enum composed with `#[from]`.
//!
//! What the caller is promised: every failure of [`crate::Container::spawn`] comes back as one of
//! these, after everything the attempt created (process, cgroup, mounts) is gone. Failures inside
//! the container's setup are reported by the child over the sync channel ([`ChildFailure`]) and
//! turned into [`Error::Setup`] or an exec error by the parent, which knows what each step was.
//! [`Error::exit_code`] maps an error to docker's exit codes (125, 126, 127).

use std::path::PathBuf;

use nix::errno::Errno;

use crate::cgroups::CgroupError;
use crate::seccomp::SeccompError;

/// Everything that can go wrong while starting or supervising a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec lacks a section the runtime cannot do without.
    #[error("the spec has no {0}")]
    SpecMissing(&'static str),
    /// `process.args` is empty.
    #[error("the spec's process has no args")]
    NoArgs,
    /// A string from the spec holds a NUL byte and cannot reach the kernel.
    #[error("{what} contains a NUL byte")]
    Nul { what: &'static str },
    /// A capability name the kernel interface does not know.
    #[error("unknown capability {0}")]
    UnknownCapability(String),
    /// A mount option the runtime does not understand.
    #[error("unknown option {option:?} for the mount at {destination}")]
    MountOption {
        destination: PathBuf,
        option: String,
    },
    /// A mount whose destination is not absolute.
    #[error("mount destination {0} is not absolute")]
    RelativeMountDestination(PathBuf),
    /// The spec asks for something that needs a private namespace it does not create.
    #[error("{what} needs a private {namespace} namespace, which the spec does not create")]
    NeedsNamespace {
        what: &'static str,
        namespace: &'static str,
    },
    /// An overlay directory whose name the overlay option syntax cannot carry.
    #[error(
        "overlay directory {0} contains ',', ':' or '\\', which overlayfs options cannot carry"
    )]
    OverlayPath(PathBuf),
    /// The overlay mount options do not fit in the page the kernel copies them into.
    #[error("the image has too many layers for one overlay mount ({layers} layers, {bytes} bytes of mount options; the kernel takes 4095)")]
    TooManyLayers { layers: usize, bytes: usize },
    /// The source of a bind mount is not there.
    #[error("bind mount source {path}")]
    BindSource {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `process.cwd` is not absolute.
    #[error("the working directory {0} is not absolute")]
    RelativeCwd(PathBuf),
    /// A sysctl the container may not set.
    #[error("cannot set sysctl {key}: {reason}")]
    Sysctl { key: String, reason: &'static str },
    /// A namespace type the runtime cannot create.
    #[error("{0} namespaces are not supported")]
    UnsupportedNamespace(&'static str),
    /// The root filesystem is not there.
    #[error("rootfs {0} does not exist or is not a directory")]
    RootfsMissing(PathBuf),
    /// `Container::spawn` was called while other threads run (forking would copy held locks).
    #[error("the container must be started from a single-threaded process, but {0} threads are running (stop async runtimes and worker threads first)")]
    MultiThreaded(usize),
    /// A system call of the parent failed.
    #[error("{op} failed")]
    Sys {
        op: &'static str,
        #[source]
        source: Errno,
    },
    /// Opening a namespace to join failed.
    #[error("cannot open namespace {path}")]
    NamespacePath {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    /// A step of the container's setup failed inside the child.
    #[error("container setup failed: {step}")]
    Setup {
        step: String,
        #[source]
        source: Errno,
    },
    /// The executable was not found (docker exit code 127).
    #[error("{0}: executable file not found in the container")]
    ExecNotFound(String),
    /// The executable exists but cannot be executed (docker exit code 126).
    #[error("{path}: cannot execute")]
    ExecDenied {
        path: String,
        #[source]
        source: Errno,
    },
    /// CVE-2019-5736: the program is reached through a `/proc` magic link, which leads to
    /// the runtime's own binary or another process's files, not to the image (docker's 126).
    #[error("{0}: refusing to execute a program reached through a /proc magic link such as /proc/self/exe")]
    ExecMagicLink(String),
    /// A hook failed: `createContainer` or `startContainer`, run inside the container, or
    /// a runtime hook run before pivot_root.
    #[error("the {kind} hook {path} {why}")]
    Hook {
        kind: &'static str,
        path: PathBuf,
        why: String,
    },
    /// The child died before it reported success or failure.
    #[error("the container process died during setup")]
    ChildDied,
    /// The child spoke a message that does not follow the sync protocol.
    #[error("malformed message from the container process")]
    Protocol,
    /// Cgroup creation, placement or removal failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Seccomp profile compilation failed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// I/O of the supervisor (terminal relay, signal handling).
    #[error("{op} failed")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Docker's exit code for this error: 127 executable not found, 126 not executable,
    /// 125 for every failure of the runtime itself.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::ExecNotFound(_) => 127,
            Error::ExecDenied { .. } | Error::ExecMagicLink(_) => 126,
            _ => 125,
        }
    }

    pub(crate) fn sys(op: &'static str) -> impl FnOnce(Errno) -> Error {
        move |source| Error::Sys { op, source }
    }
}

/// What the child reports when a setup step fails: which step, which item of that step (an
/// index into the parent's plan) and the errno. Fixed size so the child sends it with one
/// `write(2)` and no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChildFailure {
    pub stage: Stage,
    pub index: u32,
    pub errno: i32,
}

/// Setup steps of the child, in the order it runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Stage {
    Sync = 1,
    JoinNamespace,
    CgroupNamespace,
    Loopback,
    MountPropagation,
    MountRootfs,
    OpenRootfs,
    Mount,
    CreateDevice,
    PivotRoot,
    ReadonlyRoot,
    MaskPath,
    ReadonlyPath,
    Hostname,
    Sysctl,
    Rlimit,
    NoNewPrivs,
    Seccomp,
    Bounding,
    Groups,
    Gid,
    Uid,
    Capabilities,
    Cwd,
    CwdOutsideRoot,
    Terminal,
    CloseFds,
    Fork,
    Exec,
    /// The program's path goes through a `/proc` magic link (see `process::MAGIC_LINK`).
    ExecMagicLink,
    /// Waiting at the OCI start gate (`ContainerOptions::start_gate`).
    StartGate,
    /// Putting the descriptors of `ContainerOptions::stdio` on 0, 1 and 2.
    Stdio,
    /// The spec's `createContainer` hooks, before `pivot_root`.
    CreateContainerHook,
    /// The spec's `startContainer` hooks, right before exec.
    StartContainerHook,
}

impl Stage {
    const ALL: [Stage; 34] = [
        Stage::Sync,
        Stage::JoinNamespace,
        Stage::CgroupNamespace,
        Stage::Loopback,
        Stage::MountPropagation,
        Stage::MountRootfs,
        Stage::OpenRootfs,
        Stage::Mount,
        Stage::CreateDevice,
        Stage::PivotRoot,
        Stage::ReadonlyRoot,
        Stage::MaskPath,
        Stage::ReadonlyPath,
        Stage::Hostname,
        Stage::Sysctl,
        Stage::Rlimit,
        Stage::NoNewPrivs,
        Stage::Seccomp,
        Stage::Bounding,
        Stage::Groups,
        Stage::Gid,
        Stage::Uid,
        Stage::Capabilities,
        Stage::Cwd,
        Stage::CwdOutsideRoot,
        Stage::Terminal,
        Stage::CloseFds,
        Stage::Fork,
        Stage::Exec,
        Stage::ExecMagicLink,
        Stage::StartGate,
        Stage::Stdio,
        Stage::CreateContainerHook,
        Stage::StartContainerHook,
    ];

    fn from_u32(v: u32) -> Option<Stage> {
        Stage::ALL.iter().copied().find(|s| *s as u32 == v)
    }
}

impl ChildFailure {
    pub const SIZE: usize = 12;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&(self.stage as u32).to_ne_bytes());
        b[4..8].copy_from_slice(&self.index.to_ne_bytes());
        b[8..12].copy_from_slice(&self.errno.to_ne_bytes());
        b
    }

    /// The record that announces the pty master, passed alongside with SCM_RIGHTS.
    pub const PTY_MASTER: [u8; Self::SIZE] = [0xff; Self::SIZE];

    /// The record that says the process is set up and waits at its start gate (the OCI
    /// `created` state).
    pub const AT_GATE: [u8; Self::SIZE] = [0xfe; Self::SIZE];

    /// The record that says the process has its namespaces and rootfs mounts and waits
    /// before pivot_root (`ContainerOptions::before_pivot`).
    pub const BEFORE_PIVOT: [u8; Self::SIZE] = [0xfd; Self::SIZE];

    pub fn decode(b: &[u8; Self::SIZE]) -> Option<ChildFailure> {
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Some(ChildFailure {
            stage: Stage::from_u32(u32::from_ne_bytes(word(0)))?,
            index: u32::from_ne_bytes(word(4)),
            errno: i32::from_ne_bytes(word(8)),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn failure_round_trips() {
        for stage in Stage::ALL {
            let f = ChildFailure {
                stage,
                index: 7,
                errno: libc::ENOENT,
            };
            assert_eq!(ChildFailure::decode(&f.encode()), Some(f));
        }
    }

    #[test]
    fn unknown_stage_is_rejected() {
        assert_eq!(ChildFailure::decode(&[0xff; ChildFailure::SIZE]), None);
    }

    #[test]
    fn exit_codes_follow_docker() {
        assert_eq!(Error::ExecNotFound("x".into()).exit_code(), 127);
        let denied = Error::ExecDenied {
            path: "x".into(),
            source: Errno::EACCES,
        };
        assert_eq!(denied.exit_code(), 126);
        assert_eq!(Error::ChildDied.exit_code(), 125);
    }
}
