//! Root filesystem assembly: an image's layers stacked with overlayfs.
//!
//! The layers are the lower dirs (top-most first). `slate image mount` mounts them
//! read-only for inspection; `slate run` hands the same list to the runtime, which adds a
//! fresh upper dir per run inside the container's own mount namespace.

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
    #[error("cannot unmount {target}: {source}")]
    Unmount { target: PathBuf, source: nix::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The image's layer directories, top-most first, each checked to be committed.
pub fn lower_dirs(store: &Store, record: &ImageRecord) -> Result<Vec<PathBuf>, RootfsError> {
    let mut out = Vec::with_capacity(record.layers.len());
    for l in record.layers.iter().rev() {
        if !store.has_layer(&l.chain_id) {
            return Err(RootfsError::MissingLayer(l.digest.to_string()));
        }
        out.push(store.layer_diff(&l.chain_id));
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

/// Mounts the image read-only at `target`.
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
    mount(
        Some("slate"),
        target,
        Some("overlay"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some(opt.as_str()),
    )
    .map_err(|source| RootfsError::Mount {
        target: target.to_path_buf(),
        source,
    })
}

/// Unmounts what [`mount_readonly`] mounted.
pub fn unmount(target: &Path) -> Result<(), RootfsError> {
    umount2(target, MntFlags::UMOUNT_NOFOLLOW).map_err(|source| RootfsError::Unmount {
        target: target.to_path_buf(),
        source,
    })
}
