//! Capabilities, `no_new_privileges`, seccomp, masked and read-only paths: docker's defaults,
//! `--cap-add`/`--cap-drop`, `--privileged` and `--security-opt`.

use std::collections::HashSet;
use std::path::PathBuf;

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxSeccomp};
use serde_json::Value;

use super::{Host, SpecError};
use crate::cli::RunArgs;

/// Which seccomp filter the container gets. Whichever it is, the resolved profile is written
/// into `spec.linux.seccomp` (docker's default resolved for the container's bounding set,
/// since `--cap-add` relaxes it as docker's does; a user's file with docker's extensions
/// resolved), so the bundle's config.json and `slate inspect` state the filter in force. The
/// runtime caches the compiled program by the profile's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompChoice {
    Default,
    Unconfined,
    Profile(PathBuf),
}

pub(crate) struct Security {
    pub capabilities: LinuxCapabilities,
    pub no_new_privileges: bool,
    pub choice: SeccompChoice,
    pub seccomp_profile: Option<LinuxSeccomp>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
}

/// Every capability with its number, to tell which the kernel knows (`cap_last_cap`).
const ALL: [(Capability, u32); 41] = [
    (Capability::Chown, 0),
    (Capability::DacOverride, 1),
    (Capability::DacReadSearch, 2),
    (Capability::Fowner, 3),
    (Capability::Fsetid, 4),
    (Capability::Kill, 5),
    (Capability::Setgid, 6),
    (Capability::Setuid, 7),
    (Capability::Setpcap, 8),
    (Capability::LinuxImmutable, 9),
    (Capability::NetBindService, 10),
    (Capability::NetBroadcast, 11),
    (Capability::NetAdmin, 12),
    (Capability::NetRaw, 13),
    (Capability::IpcLock, 14),
    (Capability::IpcOwner, 15),
    (Capability::SysModule, 16),
    (Capability::SysRawio, 17),
    (Capability::SysChroot, 18),
    (Capability::SysPtrace, 19),
    (Capability::SysPacct, 20),
    (Capability::SysAdmin, 21),
    (Capability::SysBoot, 22),
    (Capability::SysNice, 23),
    (Capability::SysResource, 24),
    (Capability::SysTime, 25),
    (Capability::SysTtyConfig, 26),
    (Capability::Mknod, 27),
    (Capability::Lease, 28),
    (Capability::AuditWrite, 29),
    (Capability::AuditControl, 30),
    (Capability::Setfcap, 31),
    (Capability::MacOverride, 32),
    (Capability::MacAdmin, 33),
    (Capability::Syslog, 34),
    (Capability::WakeAlarm, 35),
    (Capability::BlockSuspend, 36),
    (Capability::AuditRead, 37),
    (Capability::Perfmon, 38),
    (Capability::Bpf, 39),
    (Capability::CheckpointRestore, 40),
];

fn number(c: Capability) -> u32 {
    ALL.iter()
        .find(|(k, _)| *k == c)
        .map_or(u32::MAX, |(_, n)| *n)
}

/// All capabilities this kernel knows that slate holds: what `ALL` and `--privileged` mean
/// (docker's daemon holds them all; slate may run with fewer, e.g. in a container itself).
fn all_known(host: &dyn Host) -> Capabilities {
    let last = host.cap_last_cap();
    let held = host.cap_bounding();
    ALL.iter()
        .filter(|(_, n)| *n <= last && held & (1u64 << n) != 0)
        .map(|(c, _)| *c)
        .collect()
}

enum CapArg {
    All,
    One(Capability),
}

/// `sys_admin`, `SYS_ADMIN`, `CAP_SYS_ADMIN` and `ALL`, case-insensitively, as docker.
fn parse_cap(flag: &'static str, raw: &str, host: &dyn Host) -> Result<CapArg, SpecError> {
    let up = raw.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Ok(CapArg::All);
    }
    let name = up.strip_prefix("CAP_").unwrap_or(&up);
    let cap = name
        .parse::<Capability>()
        .map_err(|_| SpecError::Capability {
            flag,
            value: raw.to_owned(),
        })?;
    let n = number(cap);
    if n > host.cap_last_cap() {
        return Err(SpecError::CapabilityUnsupported {
            flag,
            value: raw.to_owned(),
        });
    }
    // Dropping one slate lacks is harmless; adding it would fail in the runtime with EPERM.
    if flag == "--cap-add" && n < 64 && host.cap_bounding() & (1u64 << n) == 0 {
        return Err(SpecError::CapabilityNotHeld {
            flag,
            value: raw.to_owned(),
        });
    }
    Ok(CapArg::One(cap))
}

/// docker's capability arithmetic: the default 14 (or all with `--privileged`), minus
/// `--cap-drop` (ALL empties it), plus `--cap-add` (ALL fills it); adds win over drops.
fn capability_set(args: &RunArgs, host: &dyn Host) -> Result<Capabilities, SpecError> {
    let mut set: Capabilities = if args.privileged {
        all_known(host)
    } else {
        slate_runtime::DOCKER_DEFAULT.iter().copied().collect()
    };
    // Parse everything first so a bad name is reported even when ALL would hide it.
    let drops = args
        .cap_drop
        .iter()
        .map(|c| parse_cap("--cap-drop", c, host))
        .collect::<Result<Vec<_>, _>>()?;
    let adds = args
        .cap_add
        .iter()
        .map(|c| parse_cap("--cap-add", c, host))
        .collect::<Result<Vec<_>, _>>()?;
    if args.privileged {
        // docker ignores --cap-add/--cap-drop with --privileged: everything is granted.
        return Ok(set);
    }
    for d in &drops {
        match d {
            CapArg::All => set.clear(),
            CapArg::One(c) => {
                set.remove(c);
            }
        }
    }
    for a in &adds {
        match a {
            CapArg::All => set.extend(all_known(host)),
            CapArg::One(c) => {
                set.insert(*c);
            }
        }
    }
    Ok(set)
}

pub(crate) fn build(
    args: &RunArgs,
    host: &dyn Host,
    no_new_privileges_default: bool,
) -> Result<Security, SpecError> {
    let set = capability_set(args, host)?;
    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(set.clone()));
    capabilities.set_effective(Some(set.clone()));
    capabilities.set_permitted(Some(set));
    // Empty inheritable (docker since 20.10, CVE-2022-24769: a file's inheritable caps must not
    // grow an exec'd program's set) and ambient.
    capabilities.set_inheritable(Some(HashSet::new()));
    capabilities.set_ambient(Some(HashSet::new()));

    // Off by default, as in docker and podman: setuid programs (`su`, `passwd`) and
    // file capabilities (`ping`) of an image work. They can only gain what the bounding set
    // still holds, which the capability drop already limited. Hardened hosts turn it on for
    // every container with `[security] no_new_privileges = true`; `--security-opt
    // no-new-privileges[=BOOL]` decides per container. `--privileged` confines nothing.
    let mut no_new_privileges = no_new_privileges_default && !args.privileged;
    let mut seccomp_opt: Option<String> = None;
    let mut systempaths_unconfined = false;
    for opt in &args.security_opt {
        let bad = || SpecError::SecurityOpt(opt.clone());
        // docker accepts both `key=value` and the legacy `key:value`.
        let (key, value) = match opt.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        match (key, value) {
            ("no-new-privileges", None) => no_new_privileges = true,
            ("no-new-privileges", Some(v)) => {
                no_new_privileges = match v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad()),
                }
            }
            ("seccomp", Some(v)) if !v.is_empty() => seccomp_opt = Some(v.to_owned()),
            // docker: no masked or read-only /proc and /sys paths.
            ("systempaths", Some("unconfined")) => systempaths_unconfined = true,
            // slate applies no AppArmor or SELinux confinement, so asking for none is what
            // happens anyway; accepted so docker command lines run unchanged. Asking for a
            // profile or label is refused: slate cannot give it.
            ("apparmor", Some("unconfined")) | ("label", Some("disable")) => {}
            _ => return Err(bad()),
        }
    }

    let (choice, seccomp_profile) = if args.privileged {
        // docker: --privileged runs unconfined whatever profile is asked for.
        (SeccompChoice::Unconfined, None)
    } else {
        match seccomp_opt.as_deref() {
            None => {
                let caps = capabilities
                    .bounding()
                    .iter()
                    .flatten()
                    .map(|c| c.to_string());
                let profile = slate_runtime::seccomp::docker_default_for_caps(caps)
                    .map_err(SpecError::DefaultSeccomp)?;
                (SeccompChoice::Default, Some(profile))
            }
            Some("unconfined") => (SeccompChoice::Unconfined, None),
            Some(path) => {
                let path = PathBuf::from(path);
                let caps: Vec<Capability> =
                    capabilities.bounding().iter().flatten().copied().collect();
                let profile = load_profile(&path, &caps, host)?;
                (SeccompChoice::Profile(path), Some(profile))
            }
        }
    };

    let (masked_paths, readonly_paths) = if args.privileged || systempaths_unconfined {
        (Vec::new(), Vec::new())
    } else {
        (
            slate_runtime::DOCKER_MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            slate_runtime::DOCKER_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    };

    Ok(Security {
        capabilities,
        no_new_privileges,
        choice,
        seccomp_profile,
        masked_paths,
        readonly_paths,
    })
}

/// docker's architecture names in profiles, for this build's target.
fn kernel_version(host: &dyn Host) -> Option<(u32, u32)> {
    let r = host.read_file("/proc/sys/kernel/osrelease")?;
    let mut it = r.trim().split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Loads a profile in the OCI format or in docker's (which adds `archMap` and per-rule
/// `includes`/`excludes` by capability, architecture and kernel): docker's extensions are
/// resolved here for this container, as docker does, so that a rule meant only for
/// `CAP_SYS_ADMIN` holders is not silently applied to everyone.
fn load_profile(
    path: &PathBuf,
    caps: &[Capability],
    host: &dyn Host,
) -> Result<LinuxSeccomp, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::SeccompRead {
        path: path.clone(),
        source,
    })?;
    let mut v: Value = serde_json::from_str(&text).map_err(|source| SpecError::SeccompProfile {
        path: path.clone(),
        source,
    })?;
    // The compiled program filters every architecture of the kernel, so a rule for any of
    // them stays (its names are looked up per architecture).
    let arches = slate_runtime::seccomp::docker_arch_names();
    resolve_docker_profile(&mut v, caps, &arches, kernel_version(host));
    serde_json::from_value(v).map_err(|source| SpecError::SeccompProfile {
        path: path.clone(),
        source,
    })
}

fn resolve_docker_profile(
    v: &mut Value,
    caps: &[Capability],
    arches: &[&str],
    kernel: Option<(u32, u32)>,
) {
    let obj = match v.as_object_mut() {
        Some(o) => o,
        None => return,
    };
    // archMap -> architectures, when the profile has none of its own (docker's rule).
    if !obj.contains_key("architectures") {
        if let Some(Value::Array(map)) = obj.remove("archMap") {
            let arches: Vec<Value> = map
                .iter()
                .flat_map(|m| {
                    let main = m.get("architecture").cloned().into_iter();
                    let sub = m
                        .get("subArchitectures")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    main.chain(sub)
                })
                .collect();
            obj.insert("architectures".into(), Value::Array(arches));
        }
    } else {
        obj.remove("archMap");
    }
    let has_cap = |name: &Value| {
        name.as_str().is_some_and(|n| {
            let up = n.to_ascii_uppercase();
            let bare = up.strip_prefix("CAP_").unwrap_or(&up);
            caps.iter().any(|c| c.to_string() == bare)
        })
    };
    let str_list = |f: Option<&Value>, key: &str| -> Vec<Value> {
        f.and_then(|f| f.get(key))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    if let Some(Value::Array(rules)) = obj.get_mut("syscalls") {
        rules.retain(|r| {
            let inc = r.get("includes");
            let exc = r.get("excludes");
            let inc_caps = str_list(inc, "caps");
            let exc_caps = str_list(exc, "caps");
            let inc_arches = str_list(inc, "arches");
            let exc_arches = str_list(exc, "arches");
            if !inc_caps.iter().all(has_cap) {
                return false;
            }
            if exc_caps.iter().any(has_cap) {
                return false;
            }
            let ours = |a: &Value| a.as_str().is_some_and(|a| arches.contains(&a));
            if !inc_arches.is_empty() && !inc_arches.iter().any(ours) {
                return false;
            }
            if exc_arches.iter().any(ours) {
                return false;
            }
            if let Some(min) = inc.and_then(|i| i.get("minKernel")).and_then(Value::as_str) {
                let mut it = min.split(|c: char| !c.is_ascii_digit());
                let want = (|| Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?)))();
                match (kernel, want) {
                    (Some(k), Some(w)) if k >= w => {}
                    _ => return false,
                }
            }
            true
        });
        for r in rules.iter_mut() {
            if let Some(o) = r.as_object_mut() {
                o.remove("includes");
                o.remove("excludes");
                o.remove("comment");
            }
        }
    }
}
