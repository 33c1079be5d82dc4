//! Capabilities: the spec's five sets, converted once in the parent, applied in the child.
//!
//! Guarantees: the bounding set is cut first (it needs CAP_SETPCAP, which may be about to go),
//! the other sets are set after the uid switch (with keep-caps across it, so a non-root user
//! keeps what the spec grants), and an absent `process.capabilities` means *no* capabilities,
//! never "whatever the caller had".

use std::collections::HashSet;

use caps::{CapSet, Capability as Cap, CapsHashSet};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use crate::error::Error;

/// Docker's 14 default capabilities.
pub const DOCKER_DEFAULT: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Docker's default capability sets for `process.capabilities`: the 14 in the bounding,
/// effective and permitted sets; inheritable and ambient empty (docker empties inheritable
/// since CVE-2022-24769, so that file capabilities cannot grow an exec'd program's set).
pub fn docker_default_capabilities() -> LinuxCapabilities {
    let set: Capabilities = DOCKER_DEFAULT.iter().copied().collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(Some(HashSet::new()));
    caps.set_ambient(Some(HashSet::new()));
    caps
}

/// The five sets, as the `caps` crate wants them.
#[derive(Debug, Default)]
pub(crate) struct CapsPlan {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
    /// Every capability this kernel knows, to drop from the bounding set what is not kept.
    pub known: Vec<Cap>,
}

fn convert(set: &Option<Capabilities>) -> Result<CapsHashSet, Error> {
    set.iter()
        .flatten()
        .map(|c| {
            format!("CAP_{c}")
                .parse::<Cap>()
                .map_err(|_| Error::UnknownCapability(c.to_string()))
        })
        .collect()
}

impl CapsPlan {
    pub fn new(caps: Option<&LinuxCapabilities>) -> Result<CapsPlan, Error> {
        let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u8>().ok())
            .unwrap_or(40);
        let mut known: Vec<Cap> = caps::all()
            .into_iter()
            .filter(|c| c.index() <= last)
            .collect();
        known.sort_by_key(|c| c.index());
        let caps = match caps {
            Some(c) => c,
            None => {
                return Ok(CapsPlan {
                    known,
                    ..CapsPlan::default()
                })
            }
        };
        Ok(CapsPlan {
            bounding: convert(caps.bounding())?,
            effective: convert(caps.effective())?,
            permitted: convert(caps.permitted())?,
            inheritable: convert(caps.inheritable())?,
            ambient: convert(caps.ambient())?,
            known,
        })
    }

    /// Child: cuts the bounding set. Must run while CAP_SETPCAP is still effective.
    pub fn apply_bounding(&self) -> Result<(), nix::errno::Errno> {
        for c in &self.known {
            if !self.bounding.contains(c) {
                caps::drop(None, CapSet::Bounding, *c).map_err(|_| nix::errno::Errno::last())?;
            }
        }
        Ok(())
    }

    /// Child, after the uid switch: effective, permitted, inheritable, then ambient.
    pub fn apply_sets(&self) -> Result<(), nix::errno::Errno> {
        let err = |_| nix::errno::Errno::last();
        // Inheritable and effective may only shrink within the permitted set that is still
        // full here; permitted goes last among the three so the others stay subsets of it.
        caps::set(None, CapSet::Inheritable, &self.inheritable).map_err(err)?;
        caps::set(None, CapSet::Effective, &self.effective).map_err(err)?;
        caps::set(None, CapSet::Permitted, &self.permitted).map_err(err)?;
        caps::clear(None, CapSet::Ambient).map_err(err)?;
        // The kernel raises an ambient capability only if it is both permitted and
        // inheritable. runc and crun skip the others rather than fail: `runc spec`'s own
        // config asks for ambient caps with an empty inheritable set.
        for c in self
            .ambient
            .iter()
            .filter(|c| self.inheritable.contains(c) && self.permitted.contains(c))
        {
            caps::raise(None, CapSet::Ambient, *c).map_err(err)?;
        }
        Ok(())
    }

    /// The bit mask of a set, as /proc/<pid>/status shows it.
    #[cfg(test)]
    pub fn mask(set: &CapsHashSet) -> u64 {
        set.iter().fold(0, |m, c| m | c.bitmask())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn docker_defaults_convert() {
        let d = docker_default_capabilities();
        let plan = CapsPlan::new(Some(&d)).unwrap();
        assert_eq!(plan.bounding.len(), 14);
        assert!(plan.effective.contains(&Cap::CAP_NET_BIND_SERVICE));
        assert!(plan.inheritable.is_empty());
        assert_eq!(CapsPlan::mask(&plan.bounding), 0xa80425fb);
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn absent_means_none() {
        let plan = CapsPlan::new(None).unwrap();
        assert!(plan.bounding.is_empty() && plan.effective.is_empty());
        assert!(!plan.known.is_empty());
    }
}
