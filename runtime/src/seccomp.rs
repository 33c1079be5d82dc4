//! Seccomp: compiling an OCI seccomp profile to classic BPF and installing it.
