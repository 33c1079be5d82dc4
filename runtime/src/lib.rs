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
//! CVE-2019-5736: slate's own binary never runs inside a container: the container process is
//! a clone of the caller that execs the app directly (the optional init is that same clone, not
//! a re-exec), so there is no runtime binary reachable through the container's
//! `/proc/self/exe` to overwrite.

mod bpf;
pub mod caps;
pub mod cgroups;
mod container;
pub mod error;
pub mod exec;
mod init;
pub mod mounts;
mod namespaces;
pub mod process;
mod pty;
pub mod seccomp;
pub mod supervise;
mod syscall;

pub use caps::{docker_default_capabilities, DOCKER_DEFAULT};
pub use container::{bundle_rootfs, Container, ContainerOptions, ExitStatus};
pub use error::Error;
pub use mounts::{Rootfs, DOCKER_MASKED_PATHS, DOCKER_READONLY_PATHS};
pub use supervise::{supervise, FORWARDED};
