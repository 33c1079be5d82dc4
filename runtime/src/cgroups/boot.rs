//! What the boot configuration says about a cgroup controller: the kernel command line's
//! `cgroup_disable=` / `cgroup_enable=` switches, and which file a user edits to change them.
//! It decides the fix in a missing-controller message (and in `slate doctor`), never whether
//! a controller is there: that is the kernel's cgroup files' word.
//!
//! The Raspberry Pi case (raspberrypi/linux#6980): the Pi firmware passes its own boot
//! arguments, `cgroup_disable=memory` among them, in front of the single line of
//! `cmdline.txt`; Pi kernels (and only those) also know a downstream `cgroup_enable=`, and
//! the switches apply in the order they appear in `/proc/cmdline`, so the last one naming a
//! controller wins. `cgroup_enable=memory` at the end of cmdline.txt therefore enables the
//! memory controller, while one followed by another `cgroup_disable=memory` does not;
//! `cgroup_memory=1` is an old spelling recent kernels ignore. On 6.12 Pi kernels built
//! without `CONFIG_MEMCG_V1`, `/proc/cgroups` no longer lists `memory` at all, whether it is
//! enabled or not, so its absence proves nothing there.

use std::path::{Path, PathBuf};

/// Where the kernel command line comes from on this machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BootInfo {
    /// `/proc/cmdline`.
    pub cmdline: Option<String>,
    /// The Raspberry Pi firmware's `cmdline.txt` that exists here, if any.
    pub cmdline_txt: Option<PathBuf>,
    /// A Raspberry Pi (its device tree says so, or it boots from a `cmdline.txt`): the
    /// kernel then knows `cgroup_enable=`.
    pub raspberry_pi: bool,
    /// GRUB's `/etc/default/grub` exists: where other machines set the command line.
    pub grub: bool,
}

/// Raspberry Pi OS bookworm and later, then bullseye and older. On bookworm `/boot/cmdline.txt`
/// may still exist as a stub that points at the new place, so the new one is looked at first.
const CMDLINE_TXT: [&str; 2] = ["/boot/firmware/cmdline.txt", "/boot/cmdline.txt"];

impl BootInfo {
    pub fn read() -> BootInfo {
        let cmdline_txt = CMDLINE_TXT
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .map(Path::to_path_buf);
        let model = std::fs::read("/proc/device-tree/model").unwrap_or_default();
        let raspberry_pi = cmdline_txt.is_some() || model.starts_with(b"Raspberry Pi");
        BootInfo {
            cmdline: std::fs::read_to_string("/proc/cmdline").ok(),
            cmdline_txt,
            raspberry_pi,
            grub: Path::new("/etc/default/grub").is_file(),
        }
    }
}

/// What the command line does to one controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Switches {
    /// No `cgroup_disable=` or `cgroup_enable=` names it.
    None,
    /// The last switch naming it is `cgroup_disable=`. `enable_overridden`: a
    /// `cgroup_enable=` for it comes earlier and is undone (the #6980 trap).
    Disabled { enable_overridden: bool },
    /// The last switch naming it is `cgroup_enable=` (a Pi kernel's; elsewhere the kernel
    /// ignores it). `after_disable`: it undoes an earlier `cgroup_disable=`.
    Enabled { after_disable: bool },
}

/// The switches of `controller` in a kernel command line. Both take comma-separated lists;
/// the kernel matches the v2 and the v1 name of a controller (`io` and `blkio`).
pub(crate) fn switches(cmdline: &str, controller: &str) -> Switches {
    let names: &[&str] = match controller {
        "io" | "blkio" => &["io", "blkio"],
        _ => std::slice::from_ref(&controller),
    };
    let mut state = Switches::None;
    let mut seen_enable = false;
    let mut seen_disable = false;
    for word in cmdline.split_whitespace() {
        let (disable, list) = if let Some(l) = word.strip_prefix("cgroup_disable=") {
            (true, l)
        } else if let Some(l) = word.strip_prefix("cgroup_enable=") {
            (false, l)
        } else {
            continue;
        };
        if !list.split(',').any(|n| names.contains(&n)) {
            continue;
        }
        if disable {
            state = Switches::Disabled {
                enable_overridden: seen_enable,
            };
            seen_disable = true;
        } else {
            state = Switches::Enabled {
                after_disable: seen_disable,
            };
            seen_enable = true;
        }
    }
    state
}

/// How to turn on a controller the kernel has disabled at boot, as one clause ("...; then
/// reboot"), for this machine's boot setup.
pub(crate) fn enable_at_boot(controller: &str, boot: &BootInfo) -> String {
    let sw = boot
        .cmdline
        .as_deref()
        .map_or(Switches::None, |c| switches(c, controller));
    if boot.raspberry_pi {
        let file = match &boot.cmdline_txt {
            Some(p) => p.display().to_string(),
            None => format!("{} (older images: {})", CMDLINE_TXT[0], CMDLINE_TXT[1]),
        };
        let why = match sw {
            Switches::Disabled {
                enable_overridden: true,
            } => format!(
                "the kernel command line has `cgroup_enable={controller}` before a \
                 `cgroup_disable={controller}`, and the last one wins"
            ),
            Switches::Disabled { .. } => format!(
                "the kernel command line has `cgroup_disable={controller}` (the firmware puts \
                 it in front of cmdline.txt), and the last switch wins"
            ),
            _ => "this kernel disables it by default".to_owned(),
        };
        format!(
            "{why} (raspberrypi/linux#6980): append ` cgroup_enable={controller}` to the end of \
             the single line of {file}, after any `cgroup_disable={controller}` \
             (`cgroup_memory=1` is not needed), then reboot"
        )
    } else {
        let place = if boot.grub {
            "GRUB_CMDLINE_LINUX in /etc/default/grub, then run `update-grub`"
        } else {
            "wherever your boot loader sets it"
        };
        match sw {
            Switches::Disabled { .. } => format!(
                "remove `cgroup_disable={controller}` from the kernel command line ({place}), \
                 then reboot (only Raspberry Pi kernels know `cgroup_enable=`)"
            ),
            _ => format!(
                "the kernel disables it by default: add `cgroup_enable={controller}` to the \
                 kernel command line ({place}; Raspberry Pi OS: the end of the single line of \
                 {} or, on older images, {}) and remove any `cgroup_disable={controller}`, \
                 then reboot",
                CMDLINE_TXT[0], CMDLINE_TXT[1]
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// /proc/cmdline of a Raspberry Pi 5 on a 6.12 kernel, as reported in
    /// raspberrypi/linux#6980: the firmware's arguments, then cmdline.txt's.
    const PI5: &str = "reboot=w coherent_pool=1M 8250.nr_uarts=1 pci=pcie_bus_safe \
        cgroup_disable=memory numa_policy=interleave console=ttyAMA10,115200 console=tty1 \
        root=PARTUUID=4d8097e2-02 rootfstype=ext4 fsck.repair=yes rootwait";

    fn pi(cmdline: &str) -> BootInfo {
        BootInfo {
            cmdline: Some(cmdline.to_owned()),
            cmdline_txt: Some(PathBuf::from("/boot/firmware/cmdline.txt")),
            raspberry_pi: true,
            grub: false,
        }
    }

    #[test]
    fn the_last_switch_wins() {
        assert_eq!(
            switches(PI5, "memory"),
            Switches::Disabled {
                enable_overridden: false
            }
        );
        let fixed = format!("{PI5} cgroup_enable=memory");
        assert_eq!(
            switches(&fixed, "memory"),
            Switches::Enabled {
                after_disable: true
            }
        );
        // The reporter's second machine in #6980: cmdline.txt's own disable comes last.
        let trap = "console=tty1 cgroup_enable=memory cgroup_memory=1 cgroup_disable=memory";
        assert_eq!(
            switches(trap, "memory"),
            Switches::Disabled {
                enable_overridden: true
            }
        );
        assert_eq!(switches(PI5, "cpu"), Switches::None);
    }

    #[test]
    fn lists_and_v1_names_count() {
        assert_eq!(
            switches("cgroup_disable=cpuset,memory", "memory"),
            Switches::Disabled {
                enable_overridden: false
            }
        );
        assert_eq!(
            switches("cgroup_disable=blkio", "io"),
            Switches::Disabled {
                enable_overridden: false
            }
        );
        // A prefix of a name is another controller.
        assert_eq!(switches("cgroup_disable=memoryx", "memory"), Switches::None);
        assert_eq!(switches("xcgroup_disable=memory", "memory"), Switches::None);
    }

    #[test]
    fn the_pi_fix_names_this_machines_file_and_the_order() {
        let hint = enable_at_boot("memory", &pi(PI5));
        assert!(hint.contains("append ` cgroup_enable=memory`"), "{hint}");
        assert!(hint.contains("/boot/firmware/cmdline.txt"), "{hint}");
        assert!(!hint.contains("/boot/cmdline.txt"), "{hint}");
        assert!(hint.contains("raspberrypi/linux#6980"), "{hint}");
        assert!(hint.contains("reboot"), "{hint}");

        let mut old = pi(PI5);
        old.cmdline_txt = Some(PathBuf::from("/boot/cmdline.txt"));
        assert!(enable_at_boot("memory", &old).contains("of /boot/cmdline.txt"));

        let trap = pi("console=tty1 cgroup_enable=memory cgroup_disable=memory");
        let hint = enable_at_boot("memory", &trap);
        assert!(
            hint.contains("`cgroup_enable=memory` before a `cgroup_disable=memory`"),
            "{hint}"
        );

        // A Pi known by its device tree only: both places are named.
        let mut dt_only = pi(PI5);
        dt_only.cmdline_txt = None;
        let hint = enable_at_boot("memory", &dt_only);
        assert!(hint.contains("/boot/firmware/cmdline.txt (older images: /boot/cmdline.txt)"));
    }

    #[test]
    fn elsewhere_the_fix_is_to_remove_the_disable() {
        let vm = BootInfo {
            cmdline: Some("console=ttyS0 cgroup_disable=memory".to_owned()),
            cmdline_txt: None,
            raspberry_pi: false,
            grub: true,
        };
        let hint = enable_at_boot("memory", &vm);
        assert!(hint.starts_with("remove `cgroup_disable=memory`"), "{hint}");
        assert!(hint.contains("/etc/default/grub"), "{hint}");
        assert!(!hint.contains("append"), "{hint}");

        // Disabled without a switch (an old Pi kernel's built-in default, not recognised):
        // both ways are named.
        let quiet = BootInfo {
            cmdline: Some("console=ttyS0".to_owned()),
            ..vm
        };
        let hint = enable_at_boot("memory", &quiet);
        assert!(hint.contains("cgroup_enable=memory"), "{hint}");
        assert!(hint.contains("/boot/firmware/cmdline.txt"), "{hint}");
        assert!(hint.contains("/boot/cmdline.txt"), "{hint}");
    }
}
