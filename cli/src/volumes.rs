//! Named volumes: `-v NAME:/path` and `--mount type=volume,source=NAME,...`, managed with
//! `slate volume create|ls|rm|inspect|prune`.
//!
//! A volume is `<root>/volumes/<NAME>/` in the store: `_data/` (what containers see, as in
//! docker's layout) and `volume.json` (when it was made, its labels). It is the one thing a
//! container writes that outlives it: `slate rm` never removes one, `slate volume rm` and
//! `prune` do, and only when no container record still names it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

/// What `volume.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub name: String,
    pub created: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (one character allowed too).
pub fn valid_name(name: &str) -> bool {
    name.len() <= 255
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub fn volumes_dir(root: &Path) -> PathBuf {
    root.join("volumes")
}

pub fn data_dir(volumes: &Path, name: &str) -> PathBuf {
    volumes.join(name).join("_data")
}

/// Creates the volume if it does not exist; true when it was created now.
pub fn ensure(volumes: &Path, name: &str) -> anyhow::Result<bool> {
    create(volumes, name, Default::default(), true)
}

fn create(
    volumes: &Path,
    name: &str,
    labels: std::collections::BTreeMap<String, String>,
    existing_ok: bool,
) -> anyhow::Result<bool> {
    if !valid_name(name) {
        bail!("invalid volume name {name:?}: letters, digits, '_', '.' and '-', starting with a letter or digit");
    }
    let dir = volumes.join(name);
    if dir.join("_data").is_dir() {
        if existing_ok {
            return Ok(false);
        }
        bail!("volume {name} already exists");
    }
    std::fs::create_dir_all(volumes)
        .with_context(|| format!("cannot create {}", volumes.display()))?;
    // Made aside and renamed in: a concurrent `run -v NAME:...` sees the volume whole or not
    // at all.
    let tmp = volumes.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("_data"))
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let meta = Meta {
        name: name.to_string(),
        created: crate::state::now_rfc3339(),
        labels,
    };
    let bytes = serde_json::to_vec_pretty(&meta).context("cannot serialise the volume")?;
    std::fs::write(tmp.join("volume.json"), bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(true),
        // Someone else made it first.
        Err(_) if dir.join("_data").is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            if existing_ok {
                Ok(false)
            } else {
                bail!("volume {name} already exists")
            }
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e).with_context(|| format!("cannot create volume {name}"))
        }
    }
}

/// `slate volume create`.
pub fn create_named(
    volumes: &Path,
    name: &str,
    labels: std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    create(volumes, name, labels, false).map(drop)
}

/// Every volume, by name.
pub fn list(volumes: &Path) -> anyhow::Result<Vec<Meta>> {
    let rd = match std::fs::read_dir(volumes) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", volumes.display())),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if !valid_name(&name) || !e.path().join("_data").is_dir() {
            continue;
        }
        let meta = std::fs::read(e.path().join("volume.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
            .unwrap_or(Meta {
                name: name.clone(),
                created: String::new(),
                labels: Default::default(),
            });
        out.push(meta);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The names of the containers (of `records`) whose spec mounts the volume's data.
pub fn users(sd: &crate::state::StateDir, volumes: &Path, name: &str) -> Vec<String> {
    let data = data_dir(volumes, name);
    let mut out = Vec::new();
    for rec in sd.list().unwrap_or_default() {
        let spec = sd
            .config_path(&rec.id)
            .ok()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let uses = spec
            .as_ref()
            .and_then(|s| s.get("mounts")?.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|m| m.get("source").and_then(|s| s.as_str()).map(Path::new) == Some(&data));
        if uses {
            out.push(rec.name.clone());
        }
    }
    out
}

/// Removes a volume and its data.
pub fn remove(volumes: &Path, name: &str) -> anyhow::Result<()> {
    if !valid_name(name) || !volumes.join(name).join("_data").is_dir() {
        bail!("no such volume: {name}");
    }
    let dir = volumes.join(name);
    // Renamed out of the way first, so a run starting meanwhile creates a new, empty one
    // rather than getting a half-deleted tree.
    let doomed = volumes.join(format!(".rm-{name}.{}", std::process::id()));
    std::fs::rename(&dir, &doomed).with_context(|| format!("cannot remove volume {name}"))?;
    std::fs::remove_dir_all(&doomed).with_context(|| format!("cannot remove volume {name}"))
}

/// Bytes and files under a directory (not following symlinks), for `volume ls`/`inspect`.
pub fn usage(dir: &Path) -> u64 {
    fn walk(p: &Path, total: &mut u64) {
        let Ok(rd) = std::fs::read_dir(p) else {
            return;
        };
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                *total += m.len();
                if m.is_dir() {
                    walk(&e.path(), total);
                }
            }
        }
    }
    let mut t = 0;
    walk(dir, &mut t);
    t
}

/// Fills named volumes this run created with what the image has at their container paths,
/// as docker does (`-v nginx-conf:/etc/nginx` starts with nginx's configuration), owner and
/// mode included. `volumes` are (data dir, container path) pairs.
///
/// The image is mounted read-only in a mount namespace of a short-lived thread's own, so
/// nothing shows on the host; each path is resolved inside that root (`RESOLVE_IN_ROOT`:
/// a symlink in the image cannot point the copy at the host), and below it nothing is
/// followed: symlinks are copied as symlinks, device nodes and sockets are skipped. On
/// failure the volumes are removed again, so the next run copies afresh.
pub fn copy_up(
    store: &slate_image::store::Store,
    image: &slate_image::store::ImageRecord,
    scratch: &Path,
    volumes: &[(PathBuf, PathBuf)],
) -> anyhow::Result<()> {
    if volumes.is_empty() {
        return Ok(());
    }
    let res = std::thread::scope(|s| {
        s.spawn(|| copy_up_in_own_namespace(store, image, scratch, volumes))
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the volume copy thread panicked")))
    });
    let _ = std::fs::remove_dir(scratch);
    if res.is_err() {
        for (data, _) in volumes {
            if let Some(dir) = data.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    res
}

fn copy_up_in_own_namespace(
    store: &slate_image::store::Store,
    image: &slate_image::store::ImageRecord,
    scratch: &Path,
    volumes: &[(PathBuf, PathBuf)],
) -> anyhow::Result<()> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    // CLONE_FS: the thread gets its own root and cwd, which a mount namespace needs.
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)
        .context("cannot create a mount namespace to copy the image into a new volume")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("cannot make the copy's mounts private")?;
    std::fs::create_dir_all(scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    slate_image::rootfs::mount_readonly(store, image, scratch)
        .context("cannot mount the image to copy it into a new volume")?;
    let root = rustix::fs::open(
        scratch,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", scratch.display()))?;
    for (data, dest) in volumes {
        let rel = dest.strip_prefix("/").unwrap_or(dest);
        let fd = match rustix::fs::openat2(
            &root,
            rel,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            // Nothing (or no directory) there in the image: the volume starts empty.
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => continue,
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("cannot open {} in the image", dest.display()))
            }
        };
        let src = PathBuf::from(format!(
            "/proc/thread-self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ));
        copy_tree(&src, data).with_context(|| {
            format!(
                "cannot copy the image's {} into the new volume",
                dest.display()
            )
        })?;
        let md = std::fs::metadata(&src)
            .with_context(|| format!("cannot stat {} in the image", dest.display()))?;
        set_owner_mode(data, &md)?;
    }
    Ok(())
}

/// Copies a directory's contents, not following any symlink, keeping owners and modes.
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let from = e.path();
        let to = dst.join(e.file_name());
        let md = std::fs::symlink_metadata(&from)?;
        let ft = md.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&to)?;
            copy_tree(&from, &to)?;
            set_owner_mode(&to, &md)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            std::os::unix::fs::lchown(&to, Some(md.uid()), Some(md.gid()))?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to)?;
            set_owner_mode(&to, &md)?;
        }
        // Device nodes, fifos and sockets: not data a volume carries (docker skips them too).
    }
    Ok(())
}

fn set_owner_mode(path: &Path, md: &std::fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    // Owner first: chown clears the set-id bits that the mode then puts back.
    std::os::unix::fs::chown(path, Some(md.uid()), Some(md.gid()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(md.mode() & 0o7777))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["data", "pg-15_data.v1", "a"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a/b", "..", "a b", "x:y"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn create_list_remove() {
        let t = tempfile::tempdir().unwrap();
        let v = t.path().join("volumes");
        assert!(ensure(&v, "data").unwrap());
        assert!(!ensure(&v, "data").unwrap());
        assert!(create_named(&v, "data", Default::default()).is_err());
        std::fs::write(data_dir(&v, "data").join("f"), "x").unwrap();
        let l = list(&v).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].name, "data");
        remove(&v, "data").unwrap();
        assert!(list(&v).unwrap().is_empty());
        assert!(remove(&v, "data").is_err());
        assert!(remove(&v, "../etc").is_err());
    }
}
