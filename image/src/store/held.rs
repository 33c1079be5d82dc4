//! Images held for a rollback, and releases that were rolled back (`slate auto-update`).
//!
//! An update moves an image's name to a new release; the old one must stay whole until the new
//! one has proved itself, so that going back needs no network. [`Store::hold_image`] keeps the
//! old record under `held/<key>.json`, where removals count it as an image: prune, `rmi` and
//! eviction keep its layers and blobs. [`Store::restore_image`] puts it back under its name.
//!
//! A release that failed is remembered in `rejected/<digest hex>` (the reason inside), so that
//! the next `--pull always` start (a unit's restart) does not take it again while the registry
//! still serves it. A new push is a new digest, and an explicit `slate pull` clears the mark:
//! the user asked for that release.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::{io_err, sync_dir, write_atomic, ImageRecord, Store, StoreError};
use crate::digest::Digest;

impl Store {
    fn held_path(&self, holder: &str) -> PathBuf {
        // Hashed: a holder is any string (a container name), never a path.
        let key = Digest::of(holder.as_bytes());
        self.root
            .join("held")
            .join(format!("{}.json", &key.hex()[..32]))
    }

    /// Keeps `record` (its layers and blobs) for `holder` until [`Store::release_image`],
    /// replacing what the holder held before. Fails when a layer is already gone: there would
    /// be nothing to roll back to.
    pub fn hold_image(&self, holder: &str, record: &ImageRecord) -> Result<(), StoreError> {
        // Shared, as a pull: no removal runs between the check and the write.
        let _lock = self.lock_shared()?;
        self.check_layers(record)?;
        let path = self.held_path(holder);
        let data = serde_json::to_vec_pretty(record)
            .map_err(|e| io_err("cannot encode", &path)(e.into()))?;
        write_atomic(&path, &data)
    }

    /// Lets go of what `holder` holds (its layers go with the next removal if nothing else
    /// uses them).
    pub fn release_image(&self, holder: &str) -> Result<(), StoreError> {
        let path = self.held_path(holder);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.root.join("held")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", &path)(e)),
        }
    }

    /// Every held record (removals keep their layers).
    pub fn held_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("held");
        if !dir.exists() {
            // A store from before holds existed, opened read-only.
            return Ok(Vec::new());
        }
        super::read_records(&dir, false)
    }

    /// Puts `record` back under its name (replacing the record there), offline: every layer
    /// must still be in the store. The name is marked as restored to that digest (see
    /// [`Store::is_restored`]) until a pull moves it on.
    pub fn restore_image(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let _lock = self.lock_shared()?;
        self.check_layers(record)?;
        let mut record = record.clone();
        record.last_used = super::now_ms();
        let dir = self.root.join("restored");
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        write_atomic(
            &dir.join(record.key()),
            record.digest.to_string().as_bytes(),
        )?;
        self.save_image(&record)
    }

    /// Whether `record` is under its name because a rollback put it back (and no pull has
    /// moved the name since): a start that cannot ask the registry, or is refused by it, may
    /// run it rather than fail, as the rollback promised to work offline.
    pub fn is_restored(&self, record: &ImageRecord) -> bool {
        fs::read_to_string(self.root.join("restored").join(record.key()))
            .is_ok_and(|d| d.trim() == record.digest.to_string())
    }

    fn check_layers(&self, record: &ImageRecord) -> Result<(), StoreError> {
        for l in &record.layers {
            if !self.has_layer(&l.chain_id) {
                return Err(StoreError::MissingLayer {
                    image: record.display_name(),
                    chain_id: l.chain_id.to_string(),
                });
            }
        }
        let config = self.blob_path(&record.config_digest);
        if !config.exists() {
            return Err(io_err("missing image config", &config)(io::Error::from(
                io::ErrorKind::NotFound,
            )));
        }
        Ok(())
    }

    fn rejected_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("rejected").join(digest.hex())
    }

    /// Remembers that the release `digest` was rolled back, and why.
    pub fn reject(&self, digest: &Digest, reason: &str) -> Result<(), StoreError> {
        let dir = self.root.join("rejected");
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        write_atomic(&self.rejected_path(digest), reason.as_bytes())
    }

    /// Why `digest` was rolled back, if it was.
    pub fn rejected(&self, digest: &Digest) -> Result<Option<String>, StoreError> {
        let path = self.rejected_path(digest);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &path)(e)),
        }
    }

    /// Forgets a rollback of `digest` (the user pulled it on purpose).
    pub fn unreject(&self, digest: &Digest) -> Result<(), StoreError> {
        let path = self.rejected_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{add_layers, record};
    use super::*;

    #[test]
    fn a_held_image_survives_its_name_moving_on_and_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let v1 = record("r.example/app", "latest", &["base", "v1"]);
        add_layers(&store, &v1);
        fs::write(store.blob_path(&v1.config_digest), b"{}").unwrap();
        store.save_image(&v1).unwrap();
        store.hold_image("web", &v1).unwrap();

        // The name moves to v2 (same key: same name and tag); v1's record is gone.
        let mut v2 = record("r.example/app", "latest", &["base", "v2"]);
        v2.digest = Digest::of(b"v2");
        add_layers(&store, &v2);
        store.save_image(&v2).unwrap();
        store.prune(true).unwrap();
        for l in &v1.layers {
            assert!(store.has_layer(&l.chain_id), "a held layer was pruned");
        }
        assert!(store.blob_path(&v1.config_digest).exists());
        assert_eq!(store.held_images().unwrap(), std::slice::from_ref(&v1));

        assert!(!store.is_restored(&v1));
        store.restore_image(&v1).unwrap();
        let now = store.find_image("r.example/app:latest").unwrap();
        assert_eq!(now.digest, v1.digest);
        assert!(store.is_restored(&now));
        // A pull that moves the name on ends it.
        assert!(!store.is_restored(&v2));

        store.release_image("web").unwrap();
        assert!(store.held_images().unwrap().is_empty());
        store.release_image("web").unwrap();
    }

    #[test]
    fn nothing_to_hold_or_restore_without_the_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let gone = record("r.example/gone", "1", &["gone"]);
        assert!(matches!(
            store.hold_image("web", &gone),
            Err(StoreError::MissingLayer { .. })
        ));
        assert!(store.restore_image(&gone).is_err());
        assert!(store.images().unwrap().is_empty());
    }

    #[test]
    fn rejections_are_remembered_until_pulled_on_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"v3");
        assert_eq!(store.rejected(&d).unwrap(), None);
        store.reject(&d, "exited with status 1").unwrap();
        assert_eq!(
            store.rejected(&d).unwrap().as_deref(),
            Some("exited with status 1")
        );
        assert_eq!(store.rejected(&Digest::of(b"v4")).unwrap(), None);
        store.unreject(&d).unwrap();
        assert_eq!(store.rejected(&d).unwrap(), None);
        store.unreject(&d).unwrap();
    }
}
