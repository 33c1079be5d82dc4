//! Cgroup limits, seen from inside and outside the container: memory (OOM kill), pids (fork
//! bomb), CPU quota; plus the container's cgroup being in place before exec and gone after.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Bundle;
use serde_json::json;

/// The cgroup of `pid` in v1 hierarchy `controller`, as a host path.
fn cgroup_dir(pid: i32, controller: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        if ctrls.split(',').any(|c| c == controller) {
            return std::path::Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(path.trim_start_matches('/'));
        }
    }
    panic!("pid {pid} has no {controller} cgroup: {text}");
}

fn v1_host() -> bool {
    std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
        || std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists()
}

#[test]
fn limits_are_in_effect_before_exec() {
    let mut b = Bundle::new("cglimits");
    b.spec["linux"]["resources"] = json!({
        "memory": {"limit": 64u64 << 20},
        "pids": {"limit": 50},
        "cpu": {"quota": 50000, "period": 100000}
    });
    b.args(&["sleep", "30"]);
    let run = b.start(&[]);
    let pid = run.container_pid();
    std::thread::sleep(Duration::from_millis(200));
    if v1_host() {
        let mem = cgroup_dir(pid, "memory");
        assert_eq!(
            std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
                .unwrap()
                .trim(),
            (64u64 << 20).to_string()
        );
        let pids = cgroup_dir(pid, "pids");
        assert_eq!(
            std::fs::read_to_string(pids.join("pids.max"))
                .unwrap()
                .trim(),
            "50"
        );
        let cpu = cgroup_dir(pid, "cpu");
        assert_eq!(
            std::fs::read_to_string(cpu.join("cpu.cfs_quota_us"))
                .unwrap()
                .trim(),
            "50000"
        );
        assert!(mem.to_string_lossy().contains(&b.id), "{}", mem.display());
    }
    // Killing the container (not the supervisor) ends the run the ordinary way: the
    // supervisor reaps it and removes the cgroup.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = run.finish(Duration::from_secs(20));
    assert_eq!(out.code, 137, "{out:#?}");
    b.assert_clean();
}

#[test]
fn memory_hog_is_oom_killed() {
    let mut b = Bundle::new("oom");
    b.spec["linux"]["resources"] = json!({"memory": {"limit": 32u64 << 20, "swap": 32u64 << 20}});
    b.args(&["/probe", "hog", "512"]);
    let out = b.run(&[]);
    assert_eq!(out.code, 137, "{out:#?}");
    assert!(!out.stdout.contains("hog done"), "{}", out.stdout);
    b.assert_clean();
}

#[test]
fn fork_bomb_stops_at_the_pids_limit() {
    let mut b = Bundle::new("pids");
    b.spec["linux"]["resources"] = json!({"pids": {"limit": 20}});
    b.args(&["/probe", "forks", "1000"]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    let ok: u32 = out
        .one("forks_ok")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The probe itself counts against the limit.
    assert!(
        (1..20).contains(&ok),
        "{ok} forks succeeded under a limit of 20"
    );
    assert!(out.stdout.contains("errno=11"), "{}", out.stdout);
    b.assert_clean();
}

#[test]
fn cpu_quota_holds_a_busy_loop_near_half_a_core() {
    let mut b = Bundle::new("cpu");
    // Unthrottled first: on a machine busy with other work the loop gets less than a core
    // anyway, and then only the upper bound says something.
    b.args(&["/probe", "spin", "1"]);
    let free: f64 = b.run(&[]).one("spin_ratio").parse().unwrap();
    // Two busy processes, which could use two cores, held to half of one in total.
    b.spec["linux"]["resources"] = json!({"cpu": {"quota": 50000, "period": 100000}});
    b.args(&["/probe", "spin", "2", "2"]);
    let out = b.run(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    let ratio: f64 = out.one("spin_ratio").parse().unwrap();
    assert!(ratio <= 0.7, "cpu/wall = {ratio} under a 0.5 CPU quota");
    if free >= 0.9 {
        assert!(ratio >= 0.3, "cpu/wall = {ratio} under a 0.5 CPU quota");
    } else {
        eprintln!("host busy (unthrottled loop got {free:.2} of a core): lower bound not checked");
    }
    b.assert_clean();
}

#[test]
fn a_limit_the_kernel_refuses_is_an_error() {
    let mut b = Bundle::new("badlimit");
    // The kernel refuses a CFS quota below 1 ms: a clear error, and nothing left.
    b.spec["linux"]["resources"] = json!({"cpu": {"quota": 500, "period": 100}});
    let out = b.run(&[]);
    assert_eq!(out.code, 125, "{out:#?}");
    assert!(!out.stderr.is_empty());
    b.assert_clean();
}
