//! Cgroup setup (v1, v2, hybrid) through libcgroups.
