//! slate-runtime: turns an OCI runtime `Spec` plus a root filesystem into a running, confined
//! and supervised process. It speaks only `oci_spec::runtime::Spec` and knows nothing of images
//! or registries. The library never prints; it logs through `tracing`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use slate_runtime::{supervise, Container, ContainerOptions, Rootfs};
//! // The caller must be single-threaded here: no async runtime, no worker thread.
//! let spec = oci_spec::runtime::Spec::load("bundle/config.json")?;
//! let opts = ContainerOptions::new("web", spec, Rootfs::Dir("bundle/rootfs".into()));
//! let status = supervise(Container::spawn(opts)?)?;
//! std::process::exit(status.code());
//! # }
//! ```
//!
//! CVE-2019-5736: every process that enters a container is a clone or fork of the caller
//! until it execs the app (the optional init never does), so its `/proc/<pid>/exe` is the
//! caller's binary, and an image can even have the kernel execute that binary for it
//! (`/bin/evil -> /proc/self/exe`, `#!/proc/self/exe`). The caller must therefore run from a
//! copy the container cannot write: [`seal::ensure`] re-executes it from a read-only overlay
//! or a sealed memfd, and the `slate` command does so before `run`, `exec` and its
//! supervisor. The runtime adds two checks: the container's process is non-dumpable until it
//! execs, and a program path that goes through a `/proc` magic link is refused.

mod bpf;
pub mod bundle;
pub mod caps;
pub mod cgroups;
mod confine;
mod container;
pub mod error;
pub mod exec;
pub mod fsutil;
pub mod hooks;
mod init;
pub mod lifecycle;
pub mod mounts;
mod namespaces;
pub mod probe;
pub mod process;
mod pty;
pub mod seal;
pub mod seccomp;
pub mod supervise;
mod syscall;
pub mod time;

pub use caps::{docker_default_capabilities, DOCKER_DEFAULT};
pub use container::{BeforePivot, Container, ContainerOptions, Created, ExitStatus};
pub use error::Error;
pub use mounts::{Rootfs, DOCKER_MASKED_PATHS, DOCKER_READONLY_PATHS};
pub use supervise::{supervise, FORWARDED};

/// Network helpers for callers that make network namespaces of their own.
pub mod net {
    /// Brings up `lo` in the calling thread's network namespace (a new one starts with it
    /// down).
    pub fn loopback_up() -> Result<(), nix::errno::Errno> {
        crate::syscall::loopback_up()
    }
}
