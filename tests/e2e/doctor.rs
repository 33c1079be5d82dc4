//! `slate doctor` on this host: every check listed in both formats and agreeing, the exit
//! status following the FAIL lines, the cgroup mode and controllers compared with what the
//! test reads itself from /proc and /sys, a store on a file system overlayfs cannot use as
//! an upper layer (another overlay, mounted by the test: this kernel has no vfat, and a
//! loop-mounted FAT image is the VM test's job, tests/vm/guest/doctor.sh), and the registry
//! checks against the test registry and a port where nothing listens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::registry::Registry;
use crate::harness::slate::{Output, Slate, SLATE_BIN};
use crate::harness::slate_cmd;

/// One line of the table: status, name, the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    status: String,
    name: String,
    rest: String,
}

fn table(out: &Output) -> Vec<Line> {
    let mut lines = Vec::new();
    let body: Vec<&str> = out.stdout.lines().collect();
    let (summary, checks) = body.split_last().expect("doctor printed nothing");
    assert!(
        summary.contains(" checks: ") && summary.ends_with(" FAIL"),
        "last line is the summary: {summary:?}"
    );
    for l in checks {
        let mut parts = l.split_whitespace();
        let status = parts.next().unwrap_or_default().to_owned();
        let name = parts.next().unwrap_or_default().to_owned();
        assert!(
            ["OK", "WARN", "FAIL"].contains(&status.as_str()),
            "every line is a check: {l:?}"
        );
        let rest = l
            .split_once(&name)
            .map(|(_, r)| r.trim().to_owned())
            .unwrap_or_default();
        if status == "OK" {
            assert!(!rest.contains(" -- fix: "), "an OK line has no fix: {l:?}");
        } else {
            assert!(rest.contains(" -- fix: "), "{status} without a fix: {l:?}");
        }
        lines.push(Line { status, name, rest });
    }
    lines
}

/// Runs `slate doctor ARGS` on the test's store, config and state dir, outside any systemd
/// unit (so that the cgroups it reports are the root's, whoever runs the tests).
fn doctor(slate: &Slate, args: &[&str]) -> Output {
    let state = slate.dir().path().join("state");
    let state = state.display().to_string();
    let mut all = vec!["--state-dir", state.as_str(), "doctor"];
    all.extend_from_slice(args);
    let (mut cmd, shown) = slate_cmd::command(slate, &all, "warn");
    cmd.env_remove("INVOCATION_ID");
    let out = cmd.output().expect("running slate doctor");
    Output {
        args: shown,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn by_name(lines: &[Line]) -> BTreeMap<String, Line> {
    lines.iter().map(|l| (l.name.clone(), l.clone())).collect()
}

fn assert_exit_follows_fails(out: &Output, fails: usize) {
    let want = if fails > 0 { 1 } else { 0 };
    assert_eq!(
        out.status.code(),
        Some(want),
        "{fails} FAIL line(s) must exit {want}: {out:?}"
    );
}

/// How this host mounts cgroups, read independently of slate: statfs magics.
fn host_mode() -> &'static str {
    let magic = |p: &str| {
        nix::sys::statfs::statfs(p)
            .map(|s| s.filesystem_type().0 as u32)
            .ok()
    };
    const CGROUP2: u32 = 0x6367_7270;
    if magic("/sys/fs/cgroup") == Some(CGROUP2) {
        "unified"
    } else if magic("/sys/fs/cgroup/unified") == Some(CGROUP2) {
        "hybrid"
    } else {
        "legacy"
    }
}

/// Mount points of cgroup v1 hierarchies by the controllers in their options.
fn v1_mounts() -> Vec<(Vec<String>, PathBuf)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut r = right.split(' ');
            if r.next()? != "cgroup" {
                return None;
            }
            let opts: Vec<String> = r.nth(1)?.split(',').map(str::to_owned).collect();
            Some((opts, PathBuf::from(left.split(' ').nth(4)?)))
        })
        .collect()
}

/// `enabled` of each controller in /proc/cgroups.
fn proc_cgroups() -> BTreeMap<String, bool> {
    std::fs::read_to_string("/proc/cgroups")
        .expect("/proc/cgroups")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            Some((c.first()?.to_string(), *c.get(3)? == "1"))
        })
        .collect()
}

#[test]
fn doctor_lists_every_check_in_both_formats_and_exits_by_its_fails() {
    let slate = Slate::new("doctor");
    let out = doctor(&slate, &["--offline"]);
    let lines = table(&out);
    let names: Vec<&str> = lines.iter().map(|l| l.name.as_str()).collect();
    let io = if host_mode() == "unified" {
        "cgroup-io"
    } else {
        "cgroup-blkio"
    };
    for want in [
        "privileges",
        "kernel",
        "arch",
        "cgroup-mode",
        "cgroup-cpu",
        "cgroup-cpuset",
        "cgroup-memory",
        "cgroup-pids",
        io,
        "devices",
        "systemd",
        "seccomp",
        "userns",
        "networks",
        "store-fs",
        "overlayfs",
        "store-space",
        "state-dir",
        "registries",
    ] {
        assert!(names.contains(&want), "no {want} check in {names:?}");
    }
    assert_eq!(names.len(), 19, "{names:?}");
    let fails = lines.iter().filter(|l| l.status == "FAIL").count();
    assert_exit_follows_fails(&out, fails);
    // Offline: no registry was asked.
    assert!(by_name(&lines)["registries"].rest.contains("--offline"));

    // What this host really is, as the lines say it.
    let kernel = nix::sys::utsname::uname().expect("uname");
    let release = kernel.release().to_string_lossy().into_owned();
    assert!(
        by_name(&lines)["kernel"].rest.contains(&release),
        "{:?}",
        by_name(&lines)["kernel"]
    );
    assert!(by_name(&lines)["arch"]
        .rest
        .starts_with(&format!("slate {}", std::env::consts::ARCH)));
    // The test's store is in its temp dir; the doctor left no directory of its own there
    // (the store did not exist before).
    assert!(
        !slate.root().exists(),
        "doctor created the store at {}",
        slate.root().display()
    );

    // JSON: the same checks, statuses and details, and counts that add up.
    let out_json = doctor(&slate, &["--offline", "--format", "json"]);
    let v: Value = serde_json::from_str(&out_json.stdout)
        .unwrap_or_else(|e| panic!("doctor --format json is not JSON ({e}): {out_json:?}"));
    let checks = v["checks"].as_array().expect("a checks array");
    assert_eq!(checks.len(), lines.len());
    for (c, l) in checks.iter().zip(&lines) {
        assert_eq!(c["name"], l.name.as_str(), "{c}");
        assert_eq!(c["status"], l.status.as_str(), "{c}");
        let detail = c["detail"].as_str().expect("detail");
        // Free space and inodes are live figures that other processes change between runs.
        if l.name != "store-space" {
            assert!(l.rest.starts_with(detail), "{c} vs {l:?}");
        }
        assert_eq!(c.get("fix").is_some(), l.status != "OK", "{c}");
    }
    let count = |s: &str| checks.iter().filter(|c| c["status"] == s).count();
    assert_eq!(v["ok"], count("OK"));
    assert_eq!(v["warn"], count("WARN"));
    assert_eq!(v["fail"], count("FAIL"));
    assert_exit_follows_fails(&out_json, count("FAIL"));
}

#[test]
fn doctor_reports_this_hosts_cgroup_mode_and_controllers() {
    let slate = Slate::new("doctor-cgroups");
    let out = doctor(&slate, &["--offline"]);
    let lines = by_name(&table(&out));
    let mode = host_mode();
    let mode_line = &lines["cgroup-mode"].rest;
    let enabled = proc_cgroups();
    match mode {
        "unified" => {
            assert!(mode_line.starts_with("cgroup v2 (unified)"), "{mode_line}");
            let root = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .expect("cgroup.controllers");
            for c in ["cpu", "cpuset", "memory", "pids", "io"] {
                let l = &lines[&format!("cgroup-{c}")];
                let has = root.split_whitespace().any(|x| x == c);
                assert_eq!(l.status == "OK", has, "{c}: root has it: {has}; {l:?}");
            }
        }
        _ => {
            let want = if mode == "hybrid" {
                "hybrid: v1 controllers ("
            } else {
                "cgroup v1 (legacy): "
            };
            assert!(mode_line.starts_with(want), "{mode_line}");
            if mode == "hybrid" {
                assert!(
                    mode_line.contains("cgroup2 at /sys/fs/cgroup/unified without controllers"),
                    "{mode_line}"
                );
            }
            let mounts = v1_mounts();
            for c in ["cpu", "cpuset", "memory", "pids", "blkio", "devices"] {
                let name = if c == "devices" {
                    "devices".to_owned()
                } else {
                    format!("cgroup-{c}")
                };
                let l = &lines[&name];
                let mount = mounts
                    .iter()
                    .find(|(opts, _)| opts.iter().any(|o| o == c))
                    .map(|(_, m)| m.clone());
                match mount {
                    Some(m) if enabled.get(c) == Some(&true) => {
                        assert_eq!(l.status, "OK", "{c} is mounted at {}: {l:?}", m.display());
                        assert!(
                            l.rest.ends_with(&format!("mounted at {}", m.display())),
                            "{c}: {l:?}"
                        );
                        assert!(
                            mode_line.contains(&format!("{c} at {}", m.display())),
                            "{c} missing from {mode_line}"
                        );
                    }
                    _ => {
                        let bad = if c == "devices" { "FAIL" } else { "WARN" };
                        assert_eq!(l.status, bad, "{c} is not mounted: {l:?}");
                        if enabled.get(c) == Some(&false) {
                            assert!(l.rest.contains("disabled at boot"), "{c}: {l:?}");
                        }
                    }
                }
            }
        }
    }
}

/// A store on another overlay: overlayfs refuses it as a run's upper directory, and so does
/// the doctor, with the reason and exit status 1.
#[test]
fn a_store_on_an_overlay_fails_the_overlay_checks() {
    let slate = Slate::new("doctor-overlay-store");
    let base = slate.dir().path();
    let merged = slate.dir().subdir("merged");
    for d in ["lower", "upper", "work"] {
        slate.dir().subdir(d);
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        base.join("lower").display(),
        base.join("upper").display(),
        base.join("work").display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .expect("mounting the test's overlay");
    let store = merged.join("store");
    let out = doctor_on_root(&slate, &store);
    let lines = by_name(&table(&out));
    let fs = &lines["store-fs"];
    assert_eq!(fs.status, "FAIL", "{fs:?}");
    assert!(fs.rest.contains("is on overlay"), "{fs:?}");
    assert!(fs.rest.contains("fix: put the store on ext4"), "{fs:?}");
    let ov = &lines["overlayfs"];
    assert_eq!(ov.status, "FAIL", "{ov:?}");
    assert!(ov.rest.contains("upper"), "{ov:?}");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Nothing of the probe or of a store stays on the overlay.
    let left: Vec<_> = std::fs::read_dir(&merged)
        .expect("read the overlay")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left on the overlay: {left:?}");
}

/// `slate doctor --offline` with a store root other than the test's usual one.
fn doctor_on_root(slate: &Slate, root: &Path) -> Output {
    let args: Vec<String> = vec![
        "--root".into(),
        root.display().to_string(),
        "--config".into(),
        slate.dir().path().join("config.toml").display().to_string(),
        "--state-dir".into(),
        slate.dir().path().join("state").display().to_string(),
        "doctor".into(),
        "--offline".into(),
    ];
    let out = std::process::Command::new(SLATE_BIN)
        .args(&args)
        .env_remove("INVOCATION_ID")
        .env("DOCKER_CONFIG", slate_cmd::docker_config_dir(slate))
        .output()
        .expect("running slate doctor");
    Output {
        args,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Registries named in the config are each asked: a mirror that is the test registry
/// answers, an insecure registry on a port where nothing listens is a WARN that names it,
/// and neither changes the exit status, which still follows the FAIL lines.
#[test]
fn doctor_asks_every_configured_registry() {
    let slate = Slate::new("doctor-registries");
    let reg = Registry::shared();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    slate_cmd::write_config(
        &slate,
        &format!(
            "[registries]\nmirrors = [\"http://{}\"]\ninsecure = [\"{closed}\"]\n",
            reg.host()
        ),
    );
    let out = doctor(&slate, &[]);
    let lines = table(&out);
    let named = by_name(&lines);
    let mirror = &named[&format!("registry:http://{}", reg.host())];
    assert_eq!(mirror.status, "OK", "{mirror:?}");
    assert!(
        mirror
            .rest
            .contains(&format!("http://{}/v2/ said 200 OK", reg.host())),
        "{mirror:?}"
    );
    let dead = &named[&format!("registry:{closed}")];
    assert_eq!(dead.status, "WARN", "{dead:?}");
    assert!(dead.rest.contains(&closed), "{dead:?}");
    assert!(dead.rest.contains("slate load"), "{dead:?}");
    // Docker Hub is always asked; whether this machine reaches it is not the test's business.
    assert!(named.contains_key("registry:docker.io"), "{lines:?}");
    assert!(!named.contains_key("registries"), "{lines:?}");
    let fails = lines.iter().filter(|l| l.status == "FAIL").count();
    assert_exit_follows_fails(&out, fails);
}
