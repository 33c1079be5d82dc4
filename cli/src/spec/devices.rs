//! `--device HOST[:CONTAINER[:PERMS]]`, docker's syntax: a node for the host's device in the
//! container (`linux.devices`) and a rule that lets the container use it
//! (`linux.resources.devices`, after docker's deny-all list, so it is the exception that wins).
//! Without the rule the node would exist but every open of it would be refused, on v1 by the
//! devices controller and on v2 by the runtime's eBPF filter.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::{Host, SpecError};

/// A device node of the host, as `stat(2)` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostDevice {
    pub block: bool,
    pub major: u64,
    pub minor: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Reads a host path's node, following symlinks as docker does (`/dev/disk/by-id/...`);
/// `Ok(None)` if it exists but is no character or block device.
pub(crate) fn stat_host_device(path: &Path) -> std::io::Result<Option<HostDevice>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path)?;
    let ft = meta.file_type();
    if !ft.is_block_device() && !ft.is_char_device() {
        return Ok(None);
    }
    let rdev = meta.rdev();
    Ok(Some(HostDevice {
        block: ft.is_block_device(),
        major: nix::sys::stat::major(rdev),
        minor: nix::sys::stat::minor(rdev),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}

fn is_perms(s: &str) -> bool {
    !s.is_empty() && s.len() <= 3 && s.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
}

/// Splits one `--device` value into (host, container, perms), as docker's `ParseDevice`:
/// `HOST`, `HOST:PERMS`, `HOST:CONTAINER` or `HOST:CONTAINER:PERMS`.
fn split(value: &str) -> Result<(&str, &str, &str), SpecError> {
    let bad = |reason| SpecError::Device {
        value: value.to_owned(),
        reason,
    };
    let parts: Vec<&str> = value.split(':').collect();
    let (host, container, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if is_perms(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, if c.is_empty() { *h } else { *c }, *p),
        _ => return Err(bad("expected HOST[:CONTAINER[:PERMS]]")),
    };
    if host.is_empty() || !host.starts_with('/') {
        return Err(bad("the host path must be absolute, e.g. /dev/ttyUSB0"));
    }
    if !container.starts_with('/') {
        return Err(bad("the container path must be absolute"));
    }
    if !is_perms(perms) {
        return Err(bad("permissions must be made of r, w and m, e.g. rw"));
    }
    Ok((host, container, perms))
}

/// The nodes and the rules of every `--device`, in the order given.
pub(crate) fn build(
    flags: &[String],
    host: &dyn Host,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let mut nodes: Vec<LinuxDevice> = Vec::new();
    let mut rules = Vec::new();
    for value in flags {
        let (host_path, container, perms) = split(value)?;
        let dev = host
            .device(Path::new(host_path))
            .map_err(|source| SpecError::DeviceHost {
                value: value.clone(),
                path: PathBuf::from(host_path),
                source,
            })?
            .ok_or_else(|| SpecError::Device {
                value: value.clone(),
                reason: "the host path is not a character or block device",
            })?;
        let typ = if dev.block {
            LinuxDeviceType::B
        } else {
            LinuxDeviceType::C
        };
        let (major, minor) = (dev.major as i64, dev.minor as i64);
        let mut node = LinuxDevice::default();
        node.set_path(PathBuf::from(container));
        node.set_typ(typ);
        node.set_major(major);
        node.set_minor(minor);
        node.set_file_mode(Some(dev.mode));
        node.set_uid(Some(dev.uid));
        node.set_gid(Some(dev.gid));
        // A later --device for the same container path replaces the earlier node.
        nodes.retain(|n| n.path() != node.path());
        nodes.push(node);

        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(true);
        rule.set_typ(Some(typ));
        rule.set_major(Some(major));
        rule.set_minor(Some(minor));
        rule.set_access(Some(perms.to_owned()));
        rules.push(rule);
    }
    Ok((nodes, rules))
}
