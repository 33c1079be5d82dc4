//! End-to-end tests of the real `slate` binary, as root, against a real registry on loopback
//! (Debian's `docker-registry`) with images the tests build themselves (payload: Debian's
//! `busybox-static`).
//!
//! Run with `cargo test -p slate --test e2e` (as root: layers hold device nodes and foreign
//! owners, and `slate image mount` mounts overlays). Needs `docker-registry`, `busybox-static`,
//! `skopeo` and `umoci` installed.
//!
//! - `harness/`: the registry, fixture building, the binary wrapper, tree comparison, store checks.
//! - `fixtures`: the images, each with the tree it must unpack to.
//! - `harness_selftest`: the fixtures and the model against an independent client alone, so a
//!   harness bug is not mistaken for a slate bug.
//! - `pull`, `hostile`, `corrupt`, `platform`, `commands`: issue 2's "Must show".
//! - `auth`, `resume`, `concurrent`, `flaky`, `prune`: issue 3's.
//! - `detached`: issue 6's (`run -d`, ps, logs, exec, stop, rm, restarts, crash clean-up).
//! - `run`, `run_security`, `run_limits`, `run_pull`: issue 5's (`slate run`).
//! - `systemd_unit`: issue 12's `slate systemd unit` (the VM runs its units under systemd).
//! - `run_cgroupfs`: issue 12's container-own /sys/fs/cgroup (the v1 ones `#[ignore]`d,
//!   run by `tests/run` on a v1 or hybrid host).
//! - `doctor`: issue 12's `slate doctor` on this host.
//! - `run_resources`: issue 12 part 4's (block I/O, cpuset, swap and soft-limit flags).
//! - `health`: `--health-cmd` and the image's `Healthcheck` (issue 15's health checks).
//! - `auto_update`: issue 13's `slate auto-update` of detached containers (the VM test does units).

mod archive;
mod auth;
mod auto_update;
mod commands;
mod concurrent;
mod corrupt;
mod cp;
mod detached;
mod doctor;
mod fixtures;
mod flaky;
mod harness;
mod harness_selftest;
mod health;
mod hostile;
mod issue11_exe;
mod network;
mod oci;
mod platform;
mod prune;
mod pull;
mod redirect;
mod resume;
mod run;
mod run_cgroupfs;
mod run_devices;
mod run_docker;
mod run_foreground;
mod run_limits;
mod run_pull;
mod run_resources;
mod run_security;
mod save_load;
mod systemd_unit;
mod verbs;
