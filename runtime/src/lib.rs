//! slate-runtime: turns an OCI runtime `Spec` plus a root filesystem into a running,
//! confined and supervised process. It speaks only `oci_spec::runtime::Spec` and knows
//! nothing of images or registries.

pub mod cgroups;
pub mod seccomp;
