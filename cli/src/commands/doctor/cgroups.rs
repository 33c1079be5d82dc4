//! The cgroup checks: the mode and where it is mounted, each controller slate uses (as the
//! runtime's `cgroups::report` sees it, with the fix its missing-controller errors give), the
//! device filter (v2: the BPF program really loaded; v1: the devices controller), and systemd:
//! PID 1, the unit slate runs in and whether it is delegated.

use std::path::Path;

use slate_runtime::cgroups::{Availability, Mode, Report, Unit};

use super::Check;

pub fn checks() -> Vec<Check> {
    let pid1 = std::fs::read_to_string("/proc/1/comm")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let report = match slate_runtime::cgroups::report() {
        Ok(r) => r,
        Err(e) => {
            return vec![
                Check::fail(
                    "cgroup-mode",
                    e.to_string(),
                    "mount cgroup2 at /sys/fs/cgroup (`mount -t cgroup2 cgroup2 /sys/fs/cgroup`; \
                     systemd does this at boot)",
                ),
                systemd_check(&pid1, None, None),
            ]
        }
    };
    let mut out = vec![mode_check(&report)];
    out.extend(controller_checks(&report));
    out.push(devices_check(&report, || {
        slate_runtime::cgroups::probe_device_filter().map_err(|e| e.to_string())
    }));
    // systemd's own mark settles it; older systemd (before 251) is asked instead.
    let delegate = report
        .unit
        .as_ref()
        .filter(|u| u.delegate_mark != Some(true))
        .and_then(|u| slate_runtime::cgroups::systemctl_delegate(&u.name));
    out.push(systemd_check(&pid1, report.unit.as_ref(), delegate));
    out
}

fn mode_check(r: &Report) -> Check {
    let list = |h: &[(String, std::path::PathBuf)]| {
        h.iter()
            .map(|(c, m)| format!("{c} at {}", m.display()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let detail = match r.mode {
        Mode::Unified => format!(
            "cgroup v2 (unified) at {}",
            r.hierarchies
                .first()
                .map_or("/sys/fs/cgroup".to_owned(), |(_, m)| m
                    .display()
                    .to_string())
        ),
        Mode::Hybrid => format!(
            "hybrid: v1 controllers ({}), cgroup2 at {} without controllers",
            list(&r.hierarchies),
            r.unified
                .as_deref()
                .map_or("?".to_owned(), |p| p.display().to_string())
        ),
        Mode::Legacy => format!("cgroup v1 (legacy): {}", list(&r.hierarchies)),
    };
    Check::ok("cgroup-mode", detail)
}

/// What needs a controller, for the line of one that is missing.
fn needed_by(controller: &str) -> &'static str {
    match controller {
        "memory" => "--memory and --memory-swap are refused",
        "cpu" => "--cpus and --cpu-shares are refused",
        "pids" => "--pids-limit is refused",
        "cpuset" => "cpu.cpus and cpu.mems limits of an OCI bundle are refused",
        "io" | "blkio" => "blockIO limits of an OCI bundle are refused",
        "devices" => "no container can start (it enforces the device allowlist)",
        _ => "limits of its kind are refused",
    }
}

fn controller_checks(r: &Report) -> Vec<Check> {
    r.controllers
        .iter()
        // v1's devices controller is the `devices` check.
        .filter(|c| c.name != "devices")
        .map(|c| {
            let name = format!("cgroup-{}", c.name);
            match &c.availability {
                Availability::Available(at) => {
                    let detail = if r.mode == Mode::Unified {
                        format!("available in {}", at.join("cgroup.controllers").display())
                    } else {
                        format!("mounted at {}", at.display())
                    };
                    Check::ok(name, detail)
                }
                Availability::Missing(hint) => Check::warn(
                    name,
                    format!("not available: {}", needed_by(c.name)),
                    hint.clone(),
                ),
            }
        })
        .collect()
}

fn devices_check(r: &Report, probe: impl FnOnce() -> Result<usize, String>) -> Check {
    if r.mode == Mode::Unified {
        return match probe() {
            Ok(n) => Check::ok(
                "devices",
                format!(
                    "the kernel loads slate's cgroup v2 device filter (a {n}-instruction \
                     BPF_PROG_TYPE_CGROUP_DEVICE program)"
                ),
            ),
            Err(e) => Check::fail(
                "devices",
                e,
                "use a kernel with CONFIG_CGROUP_BPF and CONFIG_BPF_SYSCALL, not in lockdown, \
                 and run slate outside seccomp sandboxes; or start containers with \
                 --privileged (every device open to them)",
            ),
        };
    }
    match r.controllers.iter().find(|c| c.name == "devices") {
        Some(c) => match &c.availability {
            Availability::Available(at) => Check::ok(
                "devices",
                format!("cgroup v1 devices controller mounted at {}", at.display()),
            ),
            Availability::Missing(hint) => Check::fail(
                "devices",
                format!("no cgroup v1 devices controller: {}", needed_by("devices")),
                hint.clone(),
            ),
        },
        None => Check::fail(
            "devices",
            "slate did not look for the devices controller",
            "report this as a bug of slate doctor",
        ),
    }
}

/// `delegate`: systemctl's answer about the unit, when it gave one.
fn systemd_check(pid1: &str, unit: Option<&Unit>, delegate: Option<bool>) -> Check {
    let Some(unit) = unit else {
        let detail = if pid1 == "systemd" {
            "PID 1 is systemd; slate runs outside a service (no INVOCATION_ID), so container \
             cgroups go under the root's slate/ cgroup"
                .to_owned()
        } else {
            format!(
                "PID 1 is {}, not systemd: slate manages container cgroups itself, under the \
                 root's slate/ cgroup",
                if pid1.is_empty() { "unknown" } else { pid1 }
            )
        };
        return Check::ok("systemd", detail);
    };
    let name = if unit.name.is_empty() {
        unit.cgroup.display().to_string()
    } else {
        unit.name.clone()
    };
    let fix = format!(
        "add `Delegate=yes` to the [Service] section of {name} (`systemctl edit {name}`), then \
         `systemctl restart {name}`"
    );
    let at = Path::new("/").join(&unit.cgroup);
    match (unit.delegate_mark, delegate) {
        (Some(true), _) | (_, Some(true)) => Check::ok(
            "systemd",
            format!(
                "slate runs in {name} ({}), which has Delegate=yes: container cgroups nest in \
                 it and stop with it",
                at.display()
            ),
        ),
        (_, Some(false)) => Check::warn(
            "systemd",
            format!(
                "slate runs in {name}, which is not delegated (Delegate=no): systemd owns its \
                 cgroup {}, so containers get no controllers there (--memory, --cpus and \
                 --pids-limit are refused) and systemd may undo what slate sets up",
                at.display()
            ),
            fix,
        ),
        (_, None) => Check::warn(
            "systemd",
            format!(
                "slate runs in {name} ({}); systemd has not marked its cgroup delegated \
                 (no trusted.delegate) and systemctl cannot say whether it has Delegate=yes",
                at.display()
            ),
            fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use slate_runtime::cgroups::Controller;

    use super::super::Status;
    use super::*;

    fn v2(controllers: Vec<Controller>, unit: Option<Unit>) -> Report {
        Report {
            mode: Mode::Unified,
            hierarchies: vec![("cgroup2".to_owned(), PathBuf::from("/sys/fs/cgroup"))],
            unified: None,
            unit,
            controllers,
        }
    }

    fn ctl(name: &'static str, a: Availability) -> Controller {
        Controller {
            name,
            every_container: name == "devices",
            availability: a,
        }
    }

    #[test]
    fn a_missing_controller_warns_with_the_runtime_s_fix() {
        let r = v2(
            vec![
                ctl(
                    "cpu",
                    Availability::Available(PathBuf::from("/sys/fs/cgroup")),
                ),
                ctl(
                    "memory",
                    Availability::Missing("append ` cgroup_enable=memory` ...".to_owned()),
                ),
            ],
            None,
        );
        let c = controller_checks(&r);
        assert_eq!(c[0].status, Status::Ok);
        assert_eq!(
            c[0].detail,
            "available in /sys/fs/cgroup/cgroup.controllers"
        );
        assert_eq!(c[1].name, "cgroup-memory");
        assert_eq!(c[1].status, Status::Warn);
        assert!(c[1].detail.contains("--memory"), "{:?}", c[1]);
        assert_eq!(
            c[1].fix.as_deref(),
            Some("append ` cgroup_enable=memory` ...")
        );
    }

    #[test]
    fn devices_on_v2_is_the_bpf_probe_and_on_v1_the_controller() {
        let r = v2(Vec::new(), None);
        assert_eq!(devices_check(&r, || Ok(40)).status, Status::Ok);
        let c = devices_check(&r, || Err("no cgroup BPF".to_owned()));
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("CONFIG_CGROUP_BPF"));

        let v1 = Report {
            mode: Mode::Hybrid,
            hierarchies: Vec::new(),
            unified: Some(PathBuf::from("/sys/fs/cgroup/unified")),
            unit: None,
            controllers: vec![ctl("devices", Availability::Missing("mount it".to_owned()))],
        };
        let c = devices_check(&v1, || panic!("no BPF probe on v1"));
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.fix.as_deref(), Some("mount it"));
        // Not listed twice.
        assert!(controller_checks(&v1).is_empty());
    }

    fn unit(mark: Option<bool>) -> Unit {
        Unit {
            cgroup: PathBuf::from("system.slice/app.service"),
            name: "app.service".to_owned(),
            delegate_mark: mark,
        }
    }

    #[test]
    fn delegation_from_the_mark_or_from_systemctl() {
        assert_eq!(
            systemd_check("systemd", Some(&unit(Some(true))), None).status,
            Status::Ok
        );
        assert_eq!(
            systemd_check("systemd", Some(&unit(Some(false))), Some(true)).status,
            Status::Ok
        );
        let c = systemd_check("systemd", Some(&unit(Some(false))), Some(false));
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("Delegate=no"), "{c:?}");
        assert!(c.fix.unwrap().contains("systemctl edit app.service"));
        let c = systemd_check("systemd", Some(&unit(None)), None);
        assert_eq!(c.status, Status::Warn);
    }

    #[test]
    fn outside_a_unit_says_who_pid_1_is() {
        let c = systemd_check("systemd", None, None);
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.starts_with("PID 1 is systemd;"), "{c:?}");
        let c = systemd_check("process_api", None, None);
        assert!(
            c.detail.contains("PID 1 is process_api, not systemd"),
            "{c:?}"
        );
    }

    #[test]
    fn the_mode_line_names_the_mounts() {
        let r = Report {
            mode: Mode::Hybrid,
            hierarchies: vec![
                ("cpu".to_owned(), PathBuf::from("/sys/fs/cgroup/cpu")),
                ("memory".to_owned(), PathBuf::from("/sys/fs/cgroup/memory")),
            ],
            unified: Some(PathBuf::from("/sys/fs/cgroup/unified")),
            unit: None,
            controllers: Vec::new(),
        };
        assert_eq!(
            mode_check(&r).detail,
            "hybrid: v1 controllers (cpu at /sys/fs/cgroup/cpu, memory at \
             /sys/fs/cgroup/memory), cgroup2 at /sys/fs/cgroup/unified without controllers"
        );
        assert_eq!(
            mode_check(&v2(Vec::new(), None)).detail,
            "cgroup v2 (unified) at /sys/fs/cgroup"
        );
    }
}
