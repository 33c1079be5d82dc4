//! Root filesystem assembly: an image's layers stacked with overlayfs.
//!
//! The layers are the lower dirs (top-most first). `slate image mount` mounts them
//! read-only for inspection; `slate run` hands the same list to the runtime, which adds a
//! fresh upper dir per run inside the container's own mount namespace.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::store::{ImageRecord, Store, StoreError};

/// The kernel takes mount options of at most one page.
const MAX_MOUNT_DATA: usize = 4095;

/// Why a rootfs could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("layer {0} of the image is missing from the store: pull the image again")]
    MissingLayer(String),
    #[error("cannot use {0} as an overlay layer: its path contains ':' or ','; choose a --root without them")]
    BadPath(PathBuf),
    #[error("the image has too many layers for one overlay mount ({0} bytes of options)")]
    TooManyLayers(usize),
    #[error("cannot mount the image at {target}: {source}")]
    Mount { target: PathBuf, source: nix::Error },
    #[error("cannot {op} {target}: {reason}")]
    Target {
        op: &'static str,
        target: PathBuf,
        reason: &'static str,
    },
    #[error("cannot open {target}: {source}")]
    Open { target: PathBuf, source: nix::Error },
    #[error("cannot read the mount table: {0}")]
    MountInfo(String),
    #[error("cannot unmount {target}: {source}")]
    Unmount { target: PathBuf, source: nix::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The image's layer directories, top-most first, each checked to be committed, as the
/// store's short links (`<root>/l/<12 hex>`, all in one directory: see [`Store::layer_link`]).
pub fn lower_dirs(store: &Store, record: &ImageRecord) -> Result<Vec<PathBuf>, RootfsError> {
    let mut out = Vec::with_capacity(record.layers.len());
    for l in record.layers.iter().rev() {
        if !store.has_layer(&l.chain_id) {
            return Err(RootfsError::MissingLayer(l.digest.to_string()));
        }
        out.push(store.layer_link(&l.chain_id)?);
    }
    Ok(out)
}

/// The `lowerdir=` option for `lowers` (top-most first).
pub fn lowerdir_option(lowers: &[PathBuf]) -> Result<String, RootfsError> {
    let mut opt = String::from("lowerdir=");
    for (i, l) in lowers.iter().enumerate() {
        let s = l.to_string_lossy();
        if s.contains(':') || s.contains(',') {
            return Err(RootfsError::BadPath(l.clone()));
        }
        if i > 0 {
            opt.push(':');
        }
        opt.push_str(&s);
    }
    if opt.len() > MAX_MOUNT_DATA {
        return Err(RootfsError::TooManyLayers(opt.len()));
    }
    Ok(opt)
}

/// Mounts the image read-only at `target`, a directory that must not be a symlink: the
/// target is opened with O_NOFOLLOW and the mount made on that very directory (through its
/// `/proc/self/fd` link), so a symlink put there, before or during the call, cannot redirect
/// the mount onto `/etc` or anywhere else.
pub fn mount_readonly(
    store: &Store,
    record: &ImageRecord,
    target: &Path,
) -> Result<(), RootfsError> {
    let mut lowers = lower_dirs(store, record)?;
    // Without an upper dir the kernel wants two lower dirs at least; an empty one at the
    // bottom changes nothing in the merged view.
    lowers.push(store.empty_dir()?);
    let opt = lowerdir_option(&lowers)?;
    let dir = open_target(target, "mount the image at")?;
    let via = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    mount(
        Some(MOUNT_SOURCE),
        &via,
        Some("overlay"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some(opt.as_str()),
    )
    .map_err(|source| RootfsError::Mount {
        target: target.to_path_buf(),
        source,
    })
}

/// The mount source slate's overlays carry, to tell them from others in mountinfo.
const MOUNT_SOURCE: &str = "slate";

/// Opens the mount target, refusing a symlink or anything but a directory.
fn open_target(target: &Path, op: &'static str) -> Result<std::os::fd::OwnedFd, RootfsError> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match nix::fcntl::open(target, flags, nix::sys::stat::Mode::empty()) {
        // SAFETY: open returned a new descriptor that nothing else owns.
        Ok(fd) => Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }),
        // With O_DIRECTORY the kernel says ENOTDIR for a symlink too; tell the two apart.
        Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) => Err(RootfsError::Target {
            op,
            target: target.to_path_buf(),
            reason: if std::fs::symlink_metadata(target).is_ok_and(|m| m.is_symlink()) {
                "it is a symlink; give the directory itself"
            } else {
                "it is not a directory"
            },
        }),
        Err(nix::errno::Errno::ENOENT) => Err(RootfsError::Target {
            op,
            target: target.to_path_buf(),
            reason: "it does not exist",
        }),
        Err(source) => Err(RootfsError::Open {
            target: target.to_path_buf(),
            source,
        }),
    }
}

/// Unmounts what [`mount_readonly`] mounted, and only that: the top mount at `target` must be
/// a slate overlay whose layers are all in this store. Anything else (a tmpfs of the user's,
/// another store's image, a container's rootfs) is refused, so a typo cannot unmount it.
pub fn unmount(store: &Store, target: &Path) -> Result<(), RootfsError> {
    const OP: &str = "unmount";
    let dir = open_target(target, OP)?;
    // The canonical path, as mountinfo shows it: the path the user typed may go through
    // symlinked parents.
    let canon = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).map_err(|_| {
        RootfsError::Target {
            op: OP,
            target: target.to_path_buf(),
            reason: "its path cannot be resolved",
        }
    })?;
    drop(dir);
    let mounts = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map_err(|e| RootfsError::MountInfo(e.to_string()))?;
    // The last entry for a mount point is the one on top, the one umount removes.
    let Some(top) = mounts.into_iter().rfind(|m| m.mount_point == canon) else {
        return Err(RootfsError::Target {
            op: OP,
            target: target.to_path_buf(),
            reason: "nothing is mounted there",
        });
    };
    if !is_store_overlay(store, &top) {
        return Err(RootfsError::Target {
            op: OP,
            target: target.to_path_buf(),
            reason: "what is mounted there is not an image slate mounted from this store (see `slate image mount`); use umount(8) for other mounts",
        });
    }
    umount2(&canon, MntFlags::UMOUNT_NOFOLLOW).map_err(|source| RootfsError::Unmount {
        target: target.to_path_buf(),
        source,
    })
}

/// Whether `m` is a read-only image overlay of `store`: slate's source name, and every lower
/// dir one of the store's layer links or its empty dir.
fn is_store_overlay(store: &Store, m: &procfs::process::MountInfo) -> bool {
    if m.fs_type != "overlay" || m.mount_source.as_deref() != Some(MOUNT_SOURCE) {
        return false;
    }
    if m.super_options.contains_key("upperdir") {
        return false;
    }
    let Some(Some(lower)) = m.super_options.get("lowerdir") else {
        return false;
    };
    let links = store.root().join("l");
    let empty = store.root().join("empty");
    lower.split(':').all(|l| {
        let p = Path::new(l);
        p == empty || p.parent() == Some(links.as_path())
    })
}

/// Largest file [`read_file`] returns: it is for small config files of the image.
const MAX_READ: u64 = 4 << 20;

/// Reads a regular file of the image (e.g. `/etc/passwd`) straight from its layers, as the
/// merged overlay would show it, without mounting anything: the top-most layer that has
/// the path wins, a whiteout or an opaque directory hides what lies below. Symlinks are
/// not followed (an image's own symlink could point anywhere on the host), so a path
/// through one reads as absent.
pub fn read_file(lowers: &[PathBuf], path: &str) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileTypeExt;
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if comps.is_empty() || comps.contains(&"..") {
        return None;
    }
    'layers: for layer in lowers {
        let mut cur = layer.clone();
        let mut hidden_below = false;
        for (i, comp) in comps.iter().enumerate() {
            cur.push(comp);
            let md = match std::fs::symlink_metadata(&cur) {
                Ok(m) => m,
                Err(_) if hidden_below => return None,
                Err(_) => continue 'layers,
            };
            let ft = md.file_type();
            if ft.is_char_device()
                && nix::sys::stat::major(md_rdev(&md)) == 0
                && nix::sys::stat::minor(md_rdev(&md)) == 0
            {
                return None; // a whiteout
            }
            if i + 1 == comps.len() {
                if !ft.is_file() || md.len() > MAX_READ {
                    return None;
                }
                return std::fs::read(&cur).ok();
            }
            if !ft.is_dir() {
                return None;
            }
            if is_opaque(&cur) {
                hidden_below = true;
            }
        }
    }
    None
}

fn md_rdev(md: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    md.rdev()
}

fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 4];
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `buf` a writable buffer of the length
    // passed; lgetxattr does not follow a final symlink and writes at most that many bytes.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn reads_through_layers_like_the_merged_view() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("top");
        let mid = d.path().join("mid");
        let bottom = d.path().join("bottom");
        for l in [&top, &mid, &bottom] {
            fs::create_dir_all(l.join("etc")).unwrap();
        }
        fs::write(bottom.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(bottom.join("etc/group"), "root:x:0:\n").unwrap();
        fs::write(mid.join("etc/passwd"), "app:x:1000:1000::/:/bin/sh\n").unwrap();
        let lowers = vec![top.clone(), mid.clone(), bottom.clone()];
        assert_eq!(
            read_file(&lowers, "/etc/passwd").unwrap(),
            b"app:x:1000:1000::/:/bin/sh\n"
        );
        assert_eq!(read_file(&lowers, "etc/group").unwrap(), b"root:x:0:\n");
        assert!(read_file(&lowers, "/etc/shadow").is_none());
        assert!(read_file(&lowers, "/etc/../etc/passwd").is_none());

        // A whiteout in the top layer hides the file below.
        nix::sys::stat::mknod(
            &top.join("etc/group"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        assert!(read_file(&lowers, "/etc/group").is_none());

        // A symlink is never followed.
        std::os::unix::fs::symlink("/etc/hostname", top.join("etc/hostname")).unwrap();
        assert!(read_file(&lowers, "/etc/hostname").is_none());
    }
}
