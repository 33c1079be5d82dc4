//! The checks of the machine itself: privileges, kernel, this binary's architecture against
//! the kernel's and the userland's, seccomp and user namespaces. What is read is interpreted
//! by pure functions over the text or bytes, tested below on fixed inputs.

use std::path::Path;

use slate_image::platform::Platform;

use super::Check;

pub fn privileges() -> Check {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        Check::ok("privileges", "running as root")
    } else {
        Check::fail(
            "privileges",
            format!(
                "running as uid {euid}: slate mounts, creates namespaces and cgroups as root, \
                 and the probes below need it too"
            ),
            "run `sudo slate doctor` (and slate itself with sudo)",
        )
    }
}

/// The oldest kernel of the systems slate is made for (Raspberry Pi OS bullseye's 5.10;
/// Debian 12, Ubuntu 22.04 and Amazon Linux 2023 run 5.15 to 6.1).
const TESTED_SINCE: (u32, u32) = (5, 10);

pub fn kernel() -> Check {
    match nix::sys::utsname::uname() {
        Ok(u) => kernel_check(
            &u.release().to_string_lossy(),
            &u.machine().to_string_lossy(),
        ),
        Err(e) => Check::fail(
            "kernel",
            format!("uname failed: {e}"),
            "check that /proc is mounted",
        ),
    }
}

fn kernel_check(release: &str, machine: &str) -> Check {
    match slate_runtime::seccomp::parse_kernel_version(release) {
        Some(v) if v >= TESTED_SINCE => Check::ok("kernel", format!("Linux {release} ({machine})")),
        Some(_) => Check::warn(
            "kernel",
            format!(
                "Linux {release} ({machine}) is older than {}.{}, the oldest kernel slate is \
                 tested on; the probes below say what works",
                TESTED_SINCE.0, TESTED_SINCE.1
            ),
            "upgrade the kernel (Raspberry Pi OS: `sudo apt full-upgrade`)",
        ),
        None => Check::warn(
            "kernel",
            format!("cannot read a version from the release {release:?} ({machine})"),
            "none needed if the probes below pass",
        ),
    }
}

/// What an ELF header says about the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elf {
    pub bits: u8,
    /// Rust's name for the architecture (`x86_64`, `x86`, `aarch64`, `arm`), or the raw
    /// `e_machine` for others.
    pub machine: ElfMachine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfMachine {
    Known(&'static str),
    Other(u16),
}

impl std::fmt::Display for Elf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.machine {
            ElfMachine::Known(m) => write!(f, "{}-bit {m}", self.bits),
            ElfMachine::Other(m) => write!(f, "{}-bit ELF machine {m}", self.bits),
        }
    }
}

/// The class and machine of an ELF file's first bytes (`e_ident`, `e_machine` at 18).
pub fn parse_elf(header: &[u8]) -> Option<Elf> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return None;
    }
    let bits = match header[4] {
        1 => 32,
        2 => 64,
        _ => return None,
    };
    let raw = [header[18], header[19]];
    let machine = match header[5] {
        1 => u16::from_le_bytes(raw),
        2 => u16::from_be_bytes(raw),
        _ => return None,
    };
    let machine = match machine {
        3 => ElfMachine::Known("x86"),
        62 => ElfMachine::Known("x86_64"),
        40 => ElfMachine::Known("arm"),
        183 => ElfMachine::Known("aarch64"),
        m => ElfMachine::Other(m),
    };
    Some(Elf { bits, machine })
}

/// The userland's programs, by the ELF header of the first of these that reads as one.
const USERLAND_PROBES: [&str; 3] = ["/bin/sh", "/usr/bin/env", "/bin/ls"];

fn userland() -> Option<(Elf, &'static str)> {
    use std::io::Read;
    USERLAND_PROBES.iter().find_map(|p| {
        let mut header = [0u8; 20];
        std::fs::File::open(Path::new(p))
            .and_then(|mut f| f.read_exact(&mut header))
            .ok()?;
        parse_elf(&header).map(|e| (e, *p))
    })
}

pub fn arch() -> Check {
    let machine = nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_default();
    arch_check(
        std::env::consts::ARCH,
        &Platform::host().to_string(),
        &machine,
        userland(),
    )
}

/// The ABIs a kernel runs natively, by Rust's architecture names, and its `--platform`s.
fn kernel_abis(machine: &str) -> Option<(&'static [&'static str], &'static str)> {
    match machine {
        "x86_64" | "amd64" => Some((&["x86_64", "x86"], "linux/amd64, linux/386")),
        // armv8l: a 64-bit kernel seen through the PER_LINUX32 personality.
        "aarch64" | "arm64" | "armv8l" | "armv8b" => Some((
            &["aarch64", "arm"],
            "linux/arm64 and, where the CPU runs 32-bit code, linux/arm/v7, v6, v5",
        )),
        m if m.starts_with("arm") => Some((&["arm"], "linux/arm/v7 (and v6, v5)")),
        "i386" | "i486" | "i586" | "i686" => Some((&["x86"], "linux/386")),
        _ => None,
    }
}

/// The verdict on this build (`binary`, Rust's arch name; `default` the platform it pulls)
/// on a kernel that says `machine` with this userland.
fn arch_check(binary: &str, default: &str, machine: &str, userland: Option<(Elf, &str)>) -> Check {
    let land = match &userland {
        Some((elf, path)) => format!("{elf} userland ({path})"),
        None => "unknown userland (no ELF program at /bin/sh)".to_owned(),
    };
    let Some((abis, platforms)) = kernel_abis(machine) else {
        return Check::warn(
            "arch",
            format!(
                "slate {binary} build, {machine:?} kernel (one slate knows nothing of), {land}"
            ),
            "none known: slate is built and tested for x86_64, aarch64 and armv7",
        );
    };
    let detail = format!(
        "slate {binary} build, {machine} kernel, {land}: pulls {default} images by default; \
         this kernel runs {platforms} (pick one with --platform)"
    );
    if !abis.contains(&binary) {
        return Check::fail(
            "arch",
            format!(
                "slate {binary} cannot run natively on the {machine} kernel: it runs under \
                 emulation (qemu-user binfmt?), where the namespaces, cgroups and seccomp it \
                 sets up are not the kernel's"
            ),
            format!(
                "use the {} build of slate (cross/build makes slate-aarch64 and slate-armv7)",
                abis[0]
            ),
        );
    }
    let userland_64 = matches!(userland, Some((Elf { bits: 64, .. }, _)));
    if binary == "arm" && abis[0] == "aarch64" && userland_64 {
        return Check::warn(
            "arch",
            format!("{detail}; this 32-bit build on a 64-bit system picks 32-bit images"),
            "install slate-aarch64 (cross/build), which pulls linux/arm64 images by default, \
             or pass --platform linux/arm64",
        );
    }
    Check::ok("arch", detail)
}

pub fn seccomp() -> Check {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let own = parse_seccomp_status(&status);
    let arches = slate_runtime::seccomp::kernel_arch_set_name();
    let program =
        slate_runtime::seccomp::docker_default().and_then(|p| slate_runtime::seccomp::compile(&p));
    let probe = match &program {
        Ok(p) => slate_runtime::probe::seccomp_filter(p).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    seccomp_check(
        own,
        arches,
        program.as_ref().map(|p| p.instructions().len()).ok(),
        probe,
    )
}

/// `Seccomp:` and `Seccomp_filters:` of /proc/self/status (mode 0 none, 1 strict, 2 filter);
/// `None` when the kernel has no seccomp at all (no such line).
fn parse_seccomp_status(status: &str) -> Option<(u32, Option<u32>)> {
    let field = |name: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u32>().ok())
        })
    };
    Some((field("Seccomp")?, field("Seccomp_filters")))
}

fn seccomp_check(
    own: Option<(u32, Option<u32>)>,
    arches: &str,
    instructions: Option<usize>,
    probe: Result<(), String>,
) -> Check {
    let no_filter_fix = "use a kernel with CONFIG_SECCOMP_FILTER, or run containers with \
                         `--security-opt seccomp=unconfined` (docker's profile off)";
    let Some((mode, filters)) = own else {
        return Check::fail(
            "seccomp",
            "the kernel has no seccomp (no Seccomp line in /proc/self/status)",
            no_filter_fix,
        );
    };
    if arches == "unsupported" {
        return Check::fail(
            "seccomp",
            "slate has no syscall tables for this architecture",
            "run containers with `--security-opt seccomp=unconfined`",
        );
    }
    if let Err(e) = probe {
        return Check::fail(
            "seccomp",
            format!("slate's default filter for {arches} does not install: {e}"),
            no_filter_fix,
        );
    }
    let detail = format!(
        "filter mode works: docker's default profile compiles for {arches} ({} instructions) \
         and the kernel installs it",
        instructions.unwrap_or_default()
    );
    if mode != 0 {
        let n = filters
            .map(|n| format!(", {n} filter(s)"))
            .unwrap_or_default();
        return Check::warn(
            "seccomp",
            format!(
                "{detail}; but slate itself already runs under seccomp (mode {mode}{n}), which \
                 may refuse calls it needs (mount, bpf, clone3)"
            ),
            "run slate outside any container or sandbox (in a systemd unit: no \
             SystemCallFilter=)",
        );
    }
    Check::ok("seccomp", detail)
}

pub fn userns() -> Check {
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    userns_check(
        read("/proc/sys/user/max_user_namespaces"),
        read("/proc/sys/kernel/unprivileged_userns_clone"),
        read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        slate_runtime::probe::user_namespace().map_err(|e| e.to_string()),
    )
}

/// User namespaces are a WARN at worst: slate runs as root and does not create them today.
fn userns_check(
    max: Option<u64>,
    unprivileged_clone: Option<u64>,
    apparmor_restrict: Option<u64>,
    probe: Result<(), String>,
) -> Check {
    let mut facts = Vec::new();
    if let Some(m) = max {
        facts.push(format!("user.max_user_namespaces={m}"));
    }
    if let Some(u) = unprivileged_clone {
        facts.push(format!("kernel.unprivileged_userns_clone={u}"));
    }
    if let Some(a) = apparmor_restrict {
        facts.push(format!("kernel.apparmor_restrict_unprivileged_userns={a}"));
    }
    let facts = if facts.is_empty() {
        String::new()
    } else {
        format!(" ({})", facts.join(", "))
    };
    match probe {
        Err(e) => {
            let fix = if max == Some(0) {
                "`sysctl -w user.max_user_namespaces=15000` (and the same line in \
                 /etc/sysctl.d/99-userns.conf)"
            } else {
                "a kernel with CONFIG_USER_NS"
            };
            Check::warn(
                "userns",
                format!(
                    "cannot create a user namespace as root: {e}{facts}; slate runs as root \
                     and does not need one today"
                ),
                fix,
            )
        }
        Ok(()) => {
            let unprivileged_off = unprivileged_clone == Some(0) || apparmor_restrict == Some(1);
            let note = if unprivileged_off {
                "; unprivileged users cannot create them, which root-run slate does not mind"
            } else {
                ""
            };
            Check::ok("userns", format!("user namespaces work{facts}{note}"))
        }
    }
}

/// The CNI plugins and iptables that `--network bridge`, `-p` and user networks need. The
/// host's network (slate's default) needs neither: a warning, not a failure.
pub fn cni(settings: &crate::config::Settings) -> Check {
    let dirs = crate::network::defs::plugin_dirs(settings);
    let wanted = ["bridge", "host-local", "portmap", "firewall", "macvlan"];
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !dirs.iter().any(|d| d.join(p).is_file()))
        .collect();
    let iptables = ["/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    if missing.is_empty() && iptables {
        return Check::ok(
            "networks",
            format!(
                "CNI plugins in {} and iptables: --network bridge and -p work",
                shown.join(", ")
            ),
        );
    }
    let mut what = Vec::new();
    if !missing.is_empty() {
        what.push(format!(
            "CNI plugins {} not found in {}",
            missing.join(", "),
            shown.join(", ")
        ));
    }
    if !iptables {
        what.push("no iptables".to_string());
    }
    Check::warn(
        "networks",
        format!("{}: only --network host and none work", what.join("; ")),
        "apt-get install containernetworking-plugins iptables (or set [network] cni_path)",
    )
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    fn header(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', class, data, 1];
        h.resize(18, 0);
        let m = if data == 1 {
            machine.to_le_bytes()
        } else {
            machine.to_be_bytes()
        };
        h.extend_from_slice(&m);
        h
    }

    #[test]
    fn elf_headers_name_class_and_machine() {
        let known = |bits, m| {
            Some(Elf {
                bits,
                machine: ElfMachine::Known(m),
            })
        };
        assert_eq!(parse_elf(&header(2, 1, 62)), known(64, "x86_64"));
        assert_eq!(parse_elf(&header(1, 1, 40)), known(32, "arm"));
        assert_eq!(parse_elf(&header(2, 1, 183)), known(64, "aarch64"));
        assert_eq!(parse_elf(&header(1, 1, 3)), known(32, "x86"));
        // Big-endian s390x.
        assert_eq!(
            parse_elf(&header(2, 2, 22)),
            Some(Elf {
                bits: 64,
                machine: ElfMachine::Other(22)
            })
        );
        assert_eq!(parse_elf(b"#!/bin/sh\nexec true\n"), None);
        assert_eq!(parse_elf(&header(2, 1, 62)[..19]), None);
        let mut bad_class = header(2, 1, 62);
        bad_class[4] = 3;
        assert_eq!(parse_elf(&bad_class), None);
    }

    #[test]
    fn this_binary_reads_as_its_own_arch() {
        use std::io::Read;
        let mut h = [0u8; 20];
        std::fs::File::open("/proc/self/exe")
            .unwrap()
            .read_exact(&mut h)
            .unwrap();
        let elf = parse_elf(&h).unwrap();
        assert_eq!(elf.machine, ElfMachine::Known(std::env::consts::ARCH));
    }

    fn elf(bits: u8, m: &'static str) -> Option<(Elf, &'static str)> {
        Some((
            Elf {
                bits,
                machine: ElfMachine::Known(m),
            },
            "/bin/sh",
        ))
    }

    #[test]
    fn the_armv7_build_on_a_64_bit_kernel_with_a_32_bit_userland_is_fine() {
        let c = arch_check("arm", "linux/arm/v7", "aarch64", elf(32, "arm"));
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.detail.contains("pulls linux/arm/v7 images by default"),
            "{c:?}"
        );
        assert!(c.detail.contains("linux/arm64"), "{c:?}");
        // The same through `linux32` (armv8l), and on a 32-bit kernel.
        assert_eq!(
            arch_check("arm", "linux/arm/v7", "armv8l", elf(32, "arm")).status,
            Status::Ok
        );
        assert_eq!(
            arch_check("arm", "linux/arm/v7", "armv7l", elf(32, "arm")).status,
            Status::Ok
        );
    }

    #[test]
    fn the_armv7_build_on_a_64_bit_system_warns() {
        let c = arch_check("arm", "linux/arm/v7", "aarch64", elf(64, "aarch64"));
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.fix.unwrap().contains("slate-aarch64"));
    }

    #[test]
    fn a_binary_the_kernel_cannot_run_natively_fails() {
        // What uname says under qemu-user: the emulated machine, while the userland is the host's.
        let c = arch_check("x86_64", "linux/amd64", "aarch64", elf(64, "aarch64"));
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.fix.unwrap().contains("aarch64 build"));
        let c = arch_check("aarch64", "linux/arm64/v8", "armv7l", elf(32, "arm"));
        assert_eq!(c.status, Status::Fail, "{c:?}");
    }

    #[test]
    fn x86_64_everywhere_is_fine_and_says_what_runs() {
        let c = arch_check("x86_64", "linux/amd64", "x86_64", elf(64, "x86_64"));
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("linux/amd64, linux/386"), "{c:?}");
        let c = arch_check("x86_64", "linux/amd64", "x86_64", None);
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("unknown userland"), "{c:?}");
        assert_eq!(
            arch_check("x86_64", "linux/amd64", "riscv64", None).status,
            Status::Warn
        );
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(
            kernel_check("6.12.34+rpt-rpi-2712", "aarch64").status,
            Status::Ok
        );
        assert_eq!(kernel_check("5.10.103-v7l+", "armv7l").status, Status::Ok);
        let old = kernel_check("4.19.66-v7+", "armv7l");
        assert_eq!(old.status, Status::Warn);
        assert!(old.detail.contains("older than 5.10"), "{old:?}");
        assert_eq!(kernel_check("weird", "x86_64").status, Status::Warn);
    }

    #[test]
    fn seccomp_status_lines() {
        let status =
            "Name:\tslate\nSeccomp:\t2\nSeccomp_filters:\t1\nSpeculation_Store_Bypass:\tx\n";
        assert_eq!(parse_seccomp_status(status), Some((2, Some(1))));
        assert_eq!(parse_seccomp_status("Seccomp:\t0\n"), Some((0, None)));
        assert_eq!(parse_seccomp_status("Name:\tslate\n"), None);
    }

    #[test]
    fn seccomp_verdicts() {
        let ok = seccomp_check(Some((0, Some(0))), "x86_64+x86+x32", Some(900), Ok(()));
        assert_eq!(ok.status, Status::Ok);
        assert!(
            ok.detail.contains("x86_64+x86+x32 (900 instructions)"),
            "{ok:?}"
        );
        let nested = seccomp_check(Some((2, Some(1))), "aarch64+arm", Some(900), Ok(()));
        assert_eq!(nested.status, Status::Warn);
        assert!(nested.detail.contains("mode 2, 1 filter(s)"), "{nested:?}");
        assert_eq!(
            seccomp_check(None, "arm", None, Ok(())).status,
            Status::Fail
        );
        let refused = seccomp_check(Some((0, None)), "arm", Some(9), Err("EINVAL".into()));
        assert_eq!(refused.status, Status::Fail);
        assert!(refused.fix.unwrap().contains("seccomp=unconfined"));
        assert_eq!(
            seccomp_check(Some((0, None)), "unsupported", None, Ok(())).status,
            Status::Fail
        );
    }

    #[test]
    fn user_namespaces_warn_at_worst() {
        let c = userns_check(Some(0), None, None, Err("ENOSPC".into()));
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.unwrap().contains("user.max_user_namespaces=15000"));
        let c = userns_check(Some(63450), Some(0), None, Ok(()));
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("unprivileged_userns_clone=0"), "{c:?}");
        assert!(c.detail.contains("unprivileged users cannot"), "{c:?}");
        let c = userns_check(Some(63450), None, Some(1), Ok(()));
        assert!(c.detail.contains("apparmor_restrict_unprivileged_userns=1"));
    }
}
