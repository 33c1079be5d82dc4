//! The content store under slate's root (`/var/lib/slate` by default).
//!
//! ```text
//! blobs/sha256/<hex>      manifests and configs (small); layer blobs only when kept
//! layers/<chain-hex>/     one committed layer: diff/ (an overlayfs lower dir) + layer.json,
//!                         tar-split.zst (what `slate save` needs to re-create its tar),
//!                         tar-split.kept/ (files the layer itself overwrote, for the same)
//! l/<12 hex>              short links to layers/<chain-hex>/diff: overlayfs takes all
//!                         lower dirs in one page of mount options, so short names (from
//!                         this directory) let a run stack hundreds of layers, not ~40
//! images/<key>.json       one record per image name (reference -> manifest digest, layers)
//! tmp/                    work in progress; never read as content, except
//!                         blob-<hex>.partial: a layer download cut off, resumed by the
//!                         next pull (see `pull`), removed by `prune`
//! locks/                  flock files
//! empty/                  an empty directory (a filler lower dir for overlayfs)
//! runs/<id>/layers        a container's layer pin (see [`Store::pin_layers`]); the rest of
//!                         runs/<id>/ is the container's own (upper dir, work dir, rootfs)
//! held/<key>.json         an image kept, layers and all, for a rollback (see [`held`])
//! rejected/<hex>          a manifest digest that was rolled back, with the reason
//! restored/<key>          the digest a rollback put back under an image name
//! ```
//!
//! Guarantees: nothing under `layers/`, `images/` or `blobs/` is ever partial. Content is
//! written in `tmp/`, synced, and renamed into place; a crash leaves only debris in `tmp/`,
//! which the next store user removes. Layers are created under an exclusive per-layer
//! lock, so concurrent pulls unpack each layer once. Pulls hold the store lock shared and
//! removals hold it exclusive, so a layer is never removed while a pull is adopting it.
//!
//! Disk: a [`StorePolicy`] decides whether layer blobs are kept after unpacking and how
//! large the store may grow; over budget, [`Store::evict`] removes the least recently used
//! images (by [`ImageRecord::last_used`], which pulls and runs refresh with
//! [`Store::touch`]) with the layers only they used.
//!
//! Layers in use: a container's rootfs is an overlay of layer directories, which must not
//! be removed under it. Each run pins its layers with a file listing their chain ids, on
//! which its process (the foreground `slate run`, or a detached container's supervisor)
//! holds a shared `flock` for as long as the container may use them. Removals (under the
//! exclusive store lock) keep every layer named by a pin that is still locked; a pin whose
//! holder died is unlocked, so a crash never keeps layers forever.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::digest::Digest;
use crate::platform::Platform;
use crate::reference::Reference;

pub mod held;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("corrupt store record {path} (remove it and pull the image again)")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no such image: {0}")]
    NoSuchImage(String),
    #[error("{0:?} matches more than one image: use the full name or digest")]
    Ambiguous(String),
    #[error("layer {chain_id} of {image} is no longer in the store (pull the image again)")]
    MissingLayer { image: String, chain_id: String },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// One layer of an image, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerRecord {
    /// Digest of the blob as distributed (usually compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Identifies the layer with all below it: names its directory.
    pub chain_id: Digest,
    /// Size of the blob as distributed.
    pub size: u64,
    pub media_type: String,
}

/// What slate knows of a pulled image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    /// `registry/repository`.
    pub name: String,
    pub tag: Option<String>,
    /// The chosen platform's manifest digest: what `slate pull` prints and pins.
    pub digest: Digest,
    /// The index (multi-platform) digest, when the image came through one.
    #[serde(default)]
    pub index_digest: Option<Digest>,
    pub platform: Platform,
    pub config_digest: Digest,
    /// Bottom layer first.
    pub layers: Vec<LayerRecord>,
    /// The image config's creation time, as written there.
    #[serde(default)]
    pub created: Option<String>,
    /// Seconds since the epoch when this record was written.
    pub pulled_at: u64,
    /// Bytes of the unpacked layers.
    #[serde(default)]
    pub unpacked_size: u64,
    /// Milliseconds since the epoch when the image was last pulled or run: the clock of
    /// the least-recently-used eviction under `max_store_size` (milliseconds, because a
    /// script may pull several images within one second). 0 for records written before
    /// slate tracked it: they go first, oldest pull first.
    #[serde(default)]
    pub last_used: u64,
}

impl ImageRecord {
    /// `name:tag`, or `name@digest` for an image pulled by digest only.
    pub fn display_name(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.name),
            None => format!("{}@{}", self.name, self.digest),
        }
    }

    fn key(&self) -> String {
        let id = match &self.tag {
            Some(t) => format!("{}:{t}", self.name),
            None => format!("{}@{}", self.name, self.digest),
        };
        Digest::of(id.as_bytes()).hex()[..32].to_string()
    }
}

/// Metadata kept beside a layer's `diff/`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LayerMeta {
    pub diff_id: Digest,
    pub chain_id: Digest,
    /// Bytes of regular files in the layer.
    pub size: u64,
    pub entries: u64,
}

/// A held flock; released on drop.
pub struct Lock {
    _lock: Flock<fs::File>,
}

/// How the store spends disk: set once by the caller from its configuration.
#[derive(Debug, Clone, Default)]
pub struct StorePolicy {
    /// Keep compressed layer blobs under `blobs/` after unpacking (off by default: on an
    /// SD card the unpacked layer is all a run needs, and the blob would double the space).
    pub keep_blobs: bool,
    /// When the store grows beyond this many bytes after a pull, the least recently used
    /// images (never the one just pulled) are removed until it fits.
    pub max_size: Option<u64>,
}

/// What the store holds, by kind, in bytes (`slate system df`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    pub images: usize,
    /// Unpacked layers (files' apparent sizes).
    pub layers: u64,
    pub layer_count: usize,
    /// Layers that no image record uses (what `image prune` frees).
    pub unreferenced_layers: u64,
    /// Manifests, configs and kept layer blobs.
    pub blobs: u64,
    /// Work in progress and partial downloads kept for resuming.
    pub tmp: u64,
}

/// What a prune or an eviction removed.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    /// Display names of removed image records.
    pub images: Vec<String>,
    pub layers: usize,
    pub bytes: u64,
}

/// Name of a run's pin file inside its run directory.
const PIN_FILE: &str = "layers";

/// A held pin on a container's layers (see the module docs); released when dropped or when
/// the process dies.
#[derive(Debug)]
pub struct LayerPin {
    lock: Flock<fs::File>,
}

impl LayerPin {
    fn lock(path: &Path) -> Result<LayerPin, StoreError> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err("cannot open", path))?;
        let lock = Flock::lock(f, FlockArg::LockShared).map_err(|(_, e)| StoreError::Io {
            action: "cannot lock",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(LayerPin { lock })
    }

    fn file(&self) -> &fs::File {
        &self.lock
    }
}

/// The store at a root directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    policy: StorePolicy,
}

/// Prefix and suffix of a partial layer blob in `tmp/`: `blob-<hex>.partial`. Named without
/// a PID because it outlives the process that started it (see [`Store::partial_blob_path`]).
const PARTIAL_PREFIX: &str = "blob-";
const PARTIAL_SUFFIX: &str = ".partial";

const DIRS: [&str; 10] = [
    "blobs/sha256",
    "layers",
    "l",
    "images",
    "tmp",
    "locks",
    "empty",
    "held",
    "rejected",
    "restored",
];
/// Hex digits of a chain id that name its short link in `l/` (a longer name is used in
/// the unlikely case two chain ids share them).
const SHORT_LINK: usize = 12;

impl Store {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        // Absolute, so that paths handed to other processes and mounts (overlay lower
        // dirs, run dirs) mean the same wherever they are resolved from.
        let root = &std::path::absolute(root).map_err(io_err("cannot resolve", root))?;
        for d in DIRS {
            let p = root.join(d);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .map_err(io_err("cannot create", &p))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            policy: StorePolicy::default(),
        })
    }

    /// The same store with `policy` in effect.
    pub fn with_policy(mut self, policy: StorePolicy) -> Store {
        self.policy = policy;
        self
    }

    pub fn policy(&self) -> &StorePolicy {
        &self.policy
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An always-empty directory: the bottom lower dir where overlayfs needs two.
    pub fn empty_dir(&self) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("empty"))
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn lock_file(&self, name: &str, arg: FlockArg) -> Result<Lock, StoreError> {
        let path = self.root.join("locks").join(name);
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("cannot open lock", &path))?;
        let lock = Flock::lock(f, arg).map_err(|(_, e)| StoreError::Io {
            action: "cannot lock",
            path,
            source: e.into(),
        })?;
        Ok(Lock { _lock: lock })
    }

    /// Held (shared) by every pull; exclusive for removals.
    pub fn lock_shared(&self) -> Result<Lock, StoreError> {
        self.lock_file("store.lock", FlockArg::LockShared)
    }

    pub fn lock_exclusive(&self) -> Result<Lock, StoreError> {
        self.lock_file("store.lock", FlockArg::LockExclusive)
    }

    /// The exclusive store lock if no one holds the store lock at all (for housekeeping
    /// that can wait for a later pull rather than block this one).
    pub fn try_lock_exclusive(&self) -> Result<Option<Lock>, StoreError> {
        match self.lock_file("store.lock", FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(l)),
            Err(StoreError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EWOULDBLOCK) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Pins the layers of `record` for a container whose run directory is `run_dir`
    /// (`<root>/runs/<id>`): until the returned pin (and every [`Store::hold_pin`] of the
    /// same run) is dropped, no removal deletes them. Fails if a layer is already gone (an
    /// `rmi` won the race): the caller then has nothing to mount.
    pub fn pin_layers(&self, run_dir: &Path, record: &ImageRecord) -> Result<LayerPin, StoreError> {
        // Shared store lock: a removal in progress finishes first, and one that starts
        // after this returns sees the pin.
        let _shared = self.lock_shared()?;
        let path = run_dir.join(PIN_FILE);
        let mut text = String::new();
        for l in &record.layers {
            if !self.has_layer(&l.chain_id) {
                return Err(StoreError::NoSuchImage(format!(
                    "{} (layer {} was removed meanwhile; pull it again)",
                    record.display_name(),
                    l.chain_id
                )));
            }
            text.push_str(l.chain_id.hex());
            text.push('\n');
        }
        let pin = LayerPin::lock(&path)?;
        // No fsync (an SD card write on every start): the pin only means something while
        // its holder lives, and a crash ends both.
        pin.file()
            .write_all(text.as_bytes())
            .map_err(io_err("cannot write", &path))?;
        Ok(pin)
    }

    /// Takes a further hold on the pin of `run_dir` (a detached container's supervisor
    /// takes over from the `slate run` that started it). Fails if a pinned layer is gone
    /// (the first holder died before this hold, and a removal came in between).
    pub fn hold_pin(&self, run_dir: &Path) -> Result<LayerPin, StoreError> {
        let _shared = self.lock_shared()?;
        let path = run_dir.join(PIN_FILE);
        let pin = LayerPin::lock(&path)?;
        let text = fs::read_to_string(&path).map_err(io_err("cannot read", &path))?;
        for hex in text.lines() {
            let present = format!("sha256:{hex}")
                .parse::<Digest>()
                .is_ok_and(|chain| self.has_layer(&chain));
            if !present {
                return Err(StoreError::NoSuchImage(format!(
                    "layer {hex} of this container (it was removed meanwhile)"
                )));
            }
        }
        Ok(pin)
    }

    /// Chain ids (hex) of the layers that live containers have pinned. Pins no one holds
    /// any more (their container is gone) do not count. The caller holds the store lock
    /// exclusively, so no new pin appears meanwhile.
    fn pinned_chains(&self) -> Result<HashSet<String>, StoreError> {
        let mut chains = HashSet::new();
        let runs = self.root.join("runs");
        let entries = match fs::read_dir(&runs) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(chains),
            Err(e) => return Err(io_err("cannot list", &runs)(e)),
        };
        for e in entries.flatten() {
            let path = e.path().join(PIN_FILE);
            let f = match fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot open", &path)(e)),
            };
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                // Nobody holds it: the container is gone, its layers are free.
                Ok(_) => continue,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
                Err((_, e)) => return Err(io_err("cannot lock", &path)(e.into())),
            }
            let text = fs::read_to_string(&path).map_err(io_err("cannot read", &path))?;
            chains.extend(text.lines().map(str::to_string));
        }
        Ok(chains)
    }

    /// Exclusive lock on one layer while it is being created.
    pub fn lock_layer(&self, chain_id: &Digest) -> Result<Lock, StoreError> {
        self.lock_file(
            &format!("layer-{}.lock", chain_id.hex()),
            FlockArg::LockExclusive,
        )
    }

    pub fn layer_path(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("layers").join(chain_id.hex())
    }

    /// The directory overlayfs uses as this layer's lower dir.
    pub fn layer_diff(&self, chain_id: &Digest) -> PathBuf {
        self.layer_path(chain_id).join("diff")
    }

    /// A short path to the layer's `diff/` directory (`<root>/l/<12 hex>`, a symlink made
    /// on first use) for overlayfs lower dirs; see the module docs.
    pub fn layer_link(&self, chain_id: &Digest) -> Result<PathBuf, StoreError> {
        let target = Path::new("../layers").join(chain_id.hex()).join("diff");
        let hex = chain_id.hex();
        for name in [&hex[..SHORT_LINK], hex] {
            let link = self.root.join("l").join(name);
            // Usually made by an earlier run already: one readlink on the start path.
            if fs::read_link(&link).is_ok_and(|t| t == target) {
                return Ok(link);
            }
            match std::os::unix::fs::symlink(&target, &link) {
                Ok(()) => return Ok(link),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Made by a concurrent run meanwhile; another chain id with the same
                    // prefix takes the full name instead.
                    if fs::read_link(&link).is_ok_and(|t| t == target) {
                        return Ok(link);
                    }
                }
                Err(e) => return Err(io_err("cannot create", &link)(e)),
            }
        }
        Err(StoreError::Io {
            action: "cannot create a short link for layer",
            path: self.layer_diff(chain_id),
            source: io::ErrorKind::AlreadyExists.into(),
        })
    }

    /// A layer is present only once committed whole (its directory exists only then).
    pub fn has_layer(&self, chain_id: &Digest) -> bool {
        self.layer_path(chain_id).join("layer.json").is_file()
    }

    pub fn layer_meta(&self, chain_id: &Digest) -> Result<LayerMeta, StoreError> {
        let p = self.layer_path(chain_id).join("layer.json");
        let data = fs::read(&p).map_err(io_err("cannot read", &p))?;
        serde_json::from_slice(&data).map_err(|source| StoreError::Corrupt { path: p, source })
    }

    /// A fresh work directory under `tmp/`, removed when dropped unless committed.
    pub fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir, StoreError> {
        let tmp = self.tmp_dir();
        tempfile::Builder::new()
            .prefix(&format!("{prefix}-{}-", std::process::id()))
            .tempdir_in(&tmp)
            .map_err(io_err("cannot create a work directory in", &tmp))
    }

    /// Makes an unpacked layer (`work/diff`) visible under `layers/`, whole or not at all.
    /// The caller holds the layer's lock.
    pub fn commit_layer(
        &self,
        work: tempfile::TempDir,
        meta: &LayerMeta,
    ) -> Result<(), StoreError> {
        let meta_path = work.path().join("layer.json");
        write_synced(
            &meta_path,
            &serde_json::to_vec_pretty(meta)
                .map_err(|e| io_err("cannot encode", &meta_path)(e.into()))?,
        )?;
        // One syncfs for the whole tree is far cheaper on an SD card than an fsync per
        // file, and gives the same guarantee before the rename publishes it.
        syncfs(work.path())?;
        let dest = self.layer_path(&meta.chain_id);
        let work_path = work.keep();
        fs::rename(&work_path, &dest).map_err(|e| {
            let _ = fs::remove_dir_all(&work_path);
            io_err("cannot commit layer to", &dest)(e)
        })?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o700))
            .map_err(io_err("cannot set mode of", &dest))?;
        sync_dir(&self.root.join("layers"))
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Stores a small blob (manifest, config) that the caller has verified.
    pub fn put_blob(&self, digest: &Digest, data: &[u8]) -> Result<(), StoreError> {
        let path = self.blob_path(digest);
        if path.is_file() {
            return Ok(());
        }
        write_atomic(&path, data)
    }

    /// Where the compressed bytes of a layer blob are teed while it downloads, so that a
    /// download cut off (killed process, power cut, dropped link) resumes on the next pull
    /// with an HTTP range request. Only ever touched under the layer's lock; removed when the
    /// layer commits (or moved to `blobs/` with `keep_blobs`), and when its bytes prove bad.
    pub fn partial_blob_path(&self, digest: &Digest) -> PathBuf {
        self.tmp_dir()
            .join(format!("{PARTIAL_PREFIX}{}{PARTIAL_SUFFIX}", digest.hex()))
    }

    /// Moves a verified, synced layer blob into `blobs/` (`keep_blobs`).
    pub fn adopt_blob(&self, digest: &Digest, from: &Path) -> Result<(), StoreError> {
        let dest = self.blob_path(digest);
        fs::rename(from, &dest).map_err(io_err("cannot keep blob as", &dest))?;
        sync_dir(&self.root.join("blobs/sha256"))
    }

    pub fn get_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(digest);
        fs::read(&p).map_err(io_err("cannot read", &p))
    }

    fn image_path(&self, key: &str) -> PathBuf {
        self.root.join("images").join(format!("{key}.json"))
    }

    /// Writes (or replaces) an image record atomically.
    pub fn save_image(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let path = self.image_path(&record.key());
        let data = serde_json::to_vec_pretty(record)
            .map_err(|e| io_err("cannot encode", &path)(e.into()))?;
        write_atomic(&path, &data)?;
        // The file's mtime is the clock `touch` moves (see there): start it at the record's
        // own time, so that writing a record is not taken for a use of it. Not synced: lost
        // in a crash, the record's own `last_used` still counts.
        let used = std::time::UNIX_EPOCH + std::time::Duration::from_millis(record.last_used);
        fs::File::open(&path)
            .and_then(|f| f.set_modified(used))
            .map_err(io_err("cannot write", &path))
    }

    /// Marks `record` used now (pull and run call it): the clock of LRU eviction. A record
    /// removed or replaced meanwhile is left alone.
    ///
    /// The time goes into the record file's modification time, not its content: every
    /// `slate run` touches its image, and rewriting the record (temp file, fsync, rename,
    /// fsync of the directory) cost each start two disk syncs, on an SD card too (issue
    /// 14). Setting the mtime writes no data and needs no sync: a crash can lose the time of
    /// the last use, never the record. Records read back carry the later of the two times.
    pub fn touch(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let path = self.image_path(&record.key());
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("cannot read", &path)(e)),
        };
        let current: ImageRecord =
            serde_json::from_reader(io::BufReader::new(&file)).map_err(|source| {
                StoreError::Corrupt {
                    path: path.clone(),
                    source,
                }
            })?;
        if current.digest != record.digest {
            return Ok(());
        }
        file.set_modified(std::time::SystemTime::now())
            .map_err(io_err("cannot mark the use of", &path))
    }

    /// All image records, sorted by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut out = read_records(&self.root.join("images"), true)?;
        out.sort_by_key(|r| r.display_name());
        Ok(out)
    }

    /// Finds an image by reference (`name[:tag]`, `name@digest`) or by a digest or its
    /// hex prefix (at least 4 digits), as `docker images` shows them.
    pub fn find_image(&self, input: &str) -> Result<ImageRecord, StoreError> {
        let images = self.images()?;
        let hex = input.strip_prefix("sha256:").unwrap_or(input);
        let is_hex = hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if is_hex {
            let hits: Vec<&ImageRecord> = images
                .iter()
                .filter(|r| r.digest.hex().starts_with(hex))
                .collect();
            match hits.len() {
                0 => {}
                1 => return Ok(hits[0].clone()),
                _ => {
                    // Several names for one digest are one image for inspect and mount.
                    if hits.iter().all(|r| r.digest == hits[0].digest) {
                        return Ok(hits[0].clone());
                    }
                    return Err(StoreError::Ambiguous(input.to_string()));
                }
            }
        }
        let Ok(reference) = input.parse::<Reference>() else {
            return Err(StoreError::NoSuchImage(input.to_string()));
        };
        self.find_reference(&images, &reference)
            .cloned()
            .ok_or_else(|| StoreError::NoSuchImage(input.to_string()))
    }

    /// The record a parsed reference names, if pulled.
    pub fn find_reference<'a>(
        &self,
        images: &'a [ImageRecord],
        r: &Reference,
    ) -> Option<&'a ImageRecord> {
        let name = r.name();
        images.iter().find(|rec| {
            rec.name == name
                && match r.digest() {
                    Some(d) => &rec.digest == d || rec.index_digest.as_ref() == Some(d),
                    None => rec.tag.as_deref() == r.tag(),
                }
        })
    }

    /// Removes an image record, then every layer and blob no remaining record uses.
    /// Returns the bytes freed.
    pub fn remove_image(&self, record: &ImageRecord) -> Result<u64, StoreError> {
        let _lock = self.lock_exclusive()?;
        let path = self.image_path(&record.key());
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoSuchImage(record.display_name()))
            }
            Err(e) => return Err(io_err("cannot remove", &path)(e)),
        }
        sync_dir(&self.root.join("images"))?;
        let pinned = self.pinned_chains()?;
        self.remove_unreferenced(&pinned)
    }

    /// `slate image prune`: removes layers and blobs no image uses, partial downloads, and
    /// with `all` every image record first.
    pub fn prune(&self, all: bool) -> Result<Removed, StoreError> {
        let _lock = self.lock_exclusive()?;
        let mut removed = Removed::default();
        let pinned = self.pinned_chains()?;
        if all {
            // Images whose layers a live container has pinned stay, as docker keeps the
            // images of its containers.
            for r in self.images()? {
                if r.layers.iter().any(|l| pinned.contains(l.chain_id.hex())) {
                    continue;
                }
                let path = self.image_path(&r.key());
                match fs::remove_file(&path) {
                    Ok(()) => removed.images.push(r.display_name()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("cannot remove", &path)(e)),
                }
            }
            sync_dir(&self.root.join("images"))?;
        }
        let before = self.layer_count()?;
        removed.bytes = self.remove_unreferenced(&pinned)?;
        removed.layers = before.saturating_sub(self.layer_count()?);
        // No pull runs while the store lock is held exclusively, so no partial download is
        // in use: they are debris now.
        let tmp = self.tmp_dir();
        for e in fs::read_dir(&tmp)
            .map_err(io_err("cannot list", &tmp))?
            .flatten()
        {
            if is_partial_name(&e.file_name().to_string_lossy()) {
                removed.bytes += disk_usage(&e.path());
                remove_all(&e.path())?;
            }
        }
        Ok(removed)
    }

    fn layer_count(&self) -> Result<usize, StoreError> {
        let dir = self.root.join("layers");
        Ok(fs::read_dir(&dir)
            .map_err(io_err("cannot list", &dir))?
            .count())
    }

    /// Bytes the store uses: layers, blobs and tmp (the budget of `max_store_size`).
    /// Layers are counted by the size recorded when they were committed, so measuring
    /// after every pull does not stat every file of the store (tens of thousands on a Pi),
    /// plus their tar-split log: it holds whatever the tar had outside regular files,
    /// unbounded but for the tar itself, which a budget must not overlook.
    pub fn size(&self) -> u64 {
        let mut total: u64 = ["blobs", "images", "tmp"]
            .iter()
            .map(|d| disk_usage(&self.root.join(d)))
            .sum();
        let dir = self.root.join("layers");
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let meta = e.path().join("layer.json");
                let recorded = fs::read(&meta)
                    .ok()
                    .and_then(|d| serde_json::from_slice::<LayerMeta>(&d).ok());
                total += match recorded {
                    Some(m) => {
                        let log = e.path().join(crate::tarsplit::FILE_NAME);
                        m.size + fs::symlink_metadata(log).map_or(0, |m| m.len())
                    }
                    None => disk_usage(&e.path()),
                };
            }
        }
        total
    }

    /// Usage by kind, for `slate system df`.
    pub fn usage(&self) -> Result<Usage, StoreError> {
        let images = self.images()?;
        let used: HashSet<String> = images
            .iter()
            .flat_map(|r| r.layers.iter().map(|l| l.chain_id.hex().to_string()))
            .collect();
        let mut u = Usage {
            images: images.len(),
            blobs: disk_usage(&self.root.join("blobs")) + disk_usage(&self.root.join("images")),
            tmp: disk_usage(&self.tmp_dir()),
            ..Usage::default()
        };
        let dir = self.root.join("layers");
        for e in fs::read_dir(&dir)
            .map_err(io_err("cannot list", &dir))?
            .flatten()
        {
            let bytes = disk_usage(&e.path());
            u.layers += bytes;
            u.layer_count += 1;
            if !used.contains(e.file_name().to_string_lossy().as_ref()) {
                u.unreferenced_layers += bytes;
            }
        }
        Ok(u)
    }

    /// Under `max_size`, removes least recently used images other than `keep` until the
    /// store fits (or only `keep` is left). Skipped, returning `None`, when another slate
    /// holds the store lock: eviction can wait for the next pull, a pull should not wait
    /// for another to finish.
    pub fn evict(&self, keep: &ImageRecord) -> Result<Option<Removed>, StoreError> {
        let Some(max) = self.policy.max_size else {
            return Ok(Some(Removed::default()));
        };
        if self.size() <= max {
            return Ok(Some(Removed::default()));
        }
        let Some(_lock) = self.try_lock_exclusive()? else {
            return Ok(None);
        };
        // Images in use by a live container free nothing: not candidates.
        let pinned = self.pinned_chains()?;
        let mut candidates: Vec<ImageRecord> = self
            .images()?
            .into_iter()
            .filter(|r| r.key() != keep.key())
            .filter(|r| !r.layers.iter().any(|l| pinned.contains(l.chain_id.hex())))
            .collect();
        // Oldest use first; records from before `last_used` by their pull time.
        candidates.sort_by_key(|r| (r.last_used, r.pulled_at));
        let mut removed = Removed::default();
        for r in candidates {
            if self.size() <= max {
                break;
            }
            let path = self.image_path(&r.key());
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot remove", &path)(e)),
            }
            sync_dir(&self.root.join("images"))?;
            let before = self.layer_count()?;
            removed.bytes += self.remove_unreferenced(&pinned)?;
            removed.layers += before.saturating_sub(self.layer_count()?);
            removed.images.push(r.display_name());
        }
        Ok(Some(removed))
    }

    /// Deletes layers and blobs that no image record refers to and no live container has
    /// pinned (`pinned`, from [`Store::pinned_chains`], read once per removal); returns bytes
    /// freed. The caller holds the store lock exclusively, so `pinned` cannot grow meanwhile.
    fn remove_unreferenced(&self, pinned: &HashSet<String>) -> Result<u64, StoreError> {
        // A held image keeps its layers and blobs as an image record does: a rollback must
        // find them after its name moved on to a new release.
        let mut images = self.images()?;
        images.extend(self.held_images()?);
        let mut chains = pinned.clone();
        let mut blobs = HashSet::new();
        for r in &images {
            blobs.insert(r.digest.hex().to_string());
            blobs.insert(r.config_digest.hex().to_string());
            if let Some(i) = &r.index_digest {
                blobs.insert(i.hex().to_string());
            }
            for l in &r.layers {
                chains.insert(l.chain_id.hex().to_string());
                blobs.insert(l.digest.hex().to_string());
            }
        }
        let mut freed = 0;
        for (dir, keep) in [("layers", &chains), ("blobs/sha256", &blobs)] {
            let dir = self.root.join(dir);
            for e in fs::read_dir(&dir).map_err(io_err("cannot list", &dir))? {
                let e = e.map_err(io_err("cannot list", &dir))?;
                let name = e.file_name().to_string_lossy().to_string();
                if keep.contains(&name) {
                    continue;
                }
                let p = e.path();
                freed += disk_usage(&p);
                // Rename first so a half-deleted layer never looks committed.
                let doomed = self
                    .tmp_dir()
                    .join(format!("rm-{}-{name}", std::process::id()));
                match fs::rename(&p, &doomed) {
                    Ok(()) => remove_all(&doomed)?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("cannot remove", &p)(e)),
                }
            }
        }
        // Short links whose layer is gone.
        let links = self.root.join("l");
        for e in fs::read_dir(&links)
            .map_err(io_err("cannot list", &links))?
            .flatten()
        {
            if !e.path().exists() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(freed)
    }

    /// Removes debris that dead slate processes left in `tmp/` (work directories are
    /// named after their creator's PID).
    pub fn clean_debris(&self) -> Result<(), StoreError> {
        let tmp = self.tmp_dir();
        let entries = fs::read_dir(&tmp).map_err(io_err("cannot list", &tmp))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if is_partial_name(&name) {
                // Kept for resuming; bounded by the layers of images being pulled, and
                // removed by `image prune`.
                continue;
            }
            let pid = name.split('-').nth(1).and_then(|p| p.parse::<i32>().ok());
            let alive = match pid {
                Some(p) => {
                    p as u32 == std::process::id() || Path::new(&format!("/proc/{p}")).exists()
                }
                None => false,
            };
            if !alive {
                tracing::debug!(path = %e.path().display(), "removing debris of an interrupted slate");
                remove_all(&e.path())?;
            }
        }
        Ok(())
    }
}

/// The image records (`*.json`) of a directory of them (`images/`, `held/`).
/// The records in `dir`; with `touched`, `last_used` is the later of the record's and its
/// file's mtime (what [`Store::touch`] moves; only `images/` has such records).
fn read_records(dir: &Path, touched: bool) -> Result<Vec<ImageRecord>, StoreError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err("cannot list", dir))? {
        let p = e.map_err(io_err("cannot list", dir))?.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let file = match fs::File::open(&p) {
            Ok(f) => f,
            // Removed by a concurrent rmi (or release) between listing and reading.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("cannot read", &p)(e)),
        };
        let mut record: ImageRecord =
            serde_json::from_reader(io::BufReader::new(&file)).map_err(|source| {
                StoreError::Corrupt {
                    path: p.clone(),
                    source,
                }
            })?;
        if touched {
            let mtime = file
                .metadata()
                .and_then(|m| m.modified())
                .map_err(io_err("cannot read", &p))?
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            record.last_used = record.last_used.max(mtime);
        }
        out.push(record);
    }
    Ok(out)
}

fn is_partial_name(name: &str) -> bool {
    name.starts_with(PARTIAL_PREFIX) && name.ends_with(PARTIAL_SUFFIX)
}

/// Milliseconds since the epoch (the unit of [`ImageRecord::last_used`]).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Bytes used by a file or tree (apparent sizes of regular files).
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(md) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !md.is_dir() {
        return if md.is_file() { md.len() } else { 0 };
    }
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            total += disk_usage(&e.path());
        }
    }
    total
}

fn remove_all(p: &Path) -> Result<(), StoreError> {
    let md = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot remove", p)(e)),
    };
    let r = if md.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot remove", p)(e)),
    }
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let mut f = fs::File::create(path).map_err(io_err("cannot create", path))?;
    f.write_all(data).map_err(io_err("cannot write", path))?;
    f.sync_all().map_err(io_err("cannot sync", path))
}

/// Write to a temp file beside `path`, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err("cannot create a file in", dir))?;
    tmp.write_all(data).map_err(io_err("cannot write", path))?;
    tmp.as_file()
        .sync_all()
        .map_err(io_err("cannot sync", path))?;
    tmp.persist(path)
        .map_err(|e| io_err("cannot write", path)(e.error))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err("cannot sync", dir))
}

fn syncfs(path: &Path) -> Result<(), StoreError> {
    let f = fs::File::open(path).map_err(io_err("cannot open", path))?;
    nix::unistd::syncfs(f.as_raw_fd()).map_err(|e| io_err("cannot sync", path)(e.into()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(name: &str, tag: &str, layers: &[&str]) -> ImageRecord {
        let diff: Vec<Digest> = layers.iter().map(|l| Digest::of(l.as_bytes())).collect();
        let chains = Digest::chain_ids(&diff);
        ImageRecord {
            name: name.to_string(),
            tag: Some(tag.to_string()),
            digest: Digest::of(format!("{name}{tag}").as_bytes()),
            index_digest: None,
            platform: Platform::host(),
            config_digest: Digest::of(b"config"),
            layers: diff
                .iter()
                .zip(&chains)
                .map(|(d, c)| LayerRecord {
                    digest: d.clone(),
                    diff_id: d.clone(),
                    chain_id: c.clone(),
                    size: 1,
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                })
                .collect(),
            created: None,
            pulled_at: 0,
            unpacked_size: 0,
            last_used: 0,
        }
    }

    pub(crate) fn add_layers(store: &Store, rec: &ImageRecord) {
        for l in &rec.layers {
            if store.has_layer(&l.chain_id) {
                continue;
            }
            let work = store.temp_dir("layer").unwrap();
            fs::create_dir(work.path().join("diff")).unwrap();
            fs::write(work.path().join("diff/file"), b"1234").unwrap();
            store
                .commit_layer(
                    work,
                    &LayerMeta {
                        diff_id: l.diff_id.clone(),
                        chain_id: l.chain_id.clone(),
                        size: 4,
                        entries: 1,
                    },
                )
                .unwrap();
        }
    }

    #[test]
    fn pinned_layers_survive_prune_and_eviction_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap().with_policy(StorePolicy {
            max_size: Some(1),
            ..StorePolicy::default()
        });
        let used = record("r.example/used", "1", &["base", "used"]);
        let idle = record("r.example/idle", "1", &["idle"]);
        let fresh = record("r.example/fresh", "1", &["fresh"]);
        for r in [&used, &idle, &fresh] {
            add_layers(&store, r);
            store.save_image(r).unwrap();
        }
        let run = dir.path().join("runs/c1");
        fs::create_dir_all(&run).unwrap();
        let pin = store.pin_layers(&run, &used).unwrap();
        // A second hold (the supervisor's) outlives the first (slate run -d's).
        let held = store.hold_pin(&run).unwrap();
        drop(pin);

        // Over budget: only the idle image can go; the one in use frees nothing.
        let removed = store.evict(&fresh).unwrap().unwrap();
        assert_eq!(removed.images, vec!["r.example/idle:1".to_string()]);
        store.prune(true).unwrap();
        assert_eq!(store.images().unwrap(), vec![used.clone()]);
        // Even with its record gone, its layers stay while pinned.
        store.remove_image(&used).unwrap();
        for l in &used.layers {
            assert!(
                store.has_layer(&l.chain_id),
                "{} removed while pinned",
                l.chain_id
            );
        }
        // Released (the container is gone, or its holder died): removable.
        drop(held);
        store.prune(false).unwrap();
        for l in &used.layers {
            assert!(!store.has_layer(&l.chain_id));
        }
        // Pinning what is already gone fails instead of mounting nothing.
        assert!(store.pin_layers(&run, &used).is_err());
    }

    #[test]
    fn records_round_trip_and_removal_keeps_shared_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = record("r.example/a", "1", &["base", "a"]);
        let b = record("r.example/b", "1", &["base", "b"]);
        add_layers(&store, &a);
        add_layers(&store, &b);
        store.save_image(&a).unwrap();
        store.save_image(&b).unwrap();
        assert_eq!(store.images().unwrap(), vec![a.clone(), b.clone()]);
        assert_eq!(store.find_image("r.example/a:1").unwrap(), a);
        assert_eq!(store.find_image(&a.digest.hex()[..8]).unwrap(), a);
        assert!(matches!(
            store.find_image("r.example/a:2"),
            Err(StoreError::NoSuchImage(_))
        ));

        let freed = store.remove_image(&a).unwrap();
        assert_eq!(freed, 4 + layer_json_size(&store, &b));
        assert!(store.has_layer(&a.layers[0].chain_id), "shared base kept");
        assert!(!store.has_layer(&a.layers[1].chain_id));
        assert!(store.has_layer(&b.layers[1].chain_id));
        assert_eq!(store.images().unwrap(), vec![b]);
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    fn layer_json_size(store: &Store, b: &ImageRecord) -> u64 {
        fs::metadata(store.layer_path(&b.layers[0].chain_id).join("layer.json"))
            .unwrap()
            .len()
    }

    #[test]
    fn debris_of_dead_processes_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::create_dir(store.tmp_dir().join("layer-999999999-x")).unwrap();
        let mine = store.temp_dir("layer").unwrap();
        store.clean_debris().unwrap();
        let left: Vec<_> = fs::read_dir(store.tmp_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(left, vec![mine.path().to_path_buf()]);
    }

    #[test]
    fn partial_blobs_survive_debris_cleaning_until_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let partial = store.partial_blob_path(&Digest::of(b"blob"));
        fs::write(&partial, b"half").unwrap();
        store.clean_debris().unwrap();
        assert!(partial.is_file(), "a partial download is not debris");
        let removed = store.prune(false).unwrap();
        assert!(!partial.exists());
        assert_eq!(removed.bytes, 4);
    }

    #[test]
    fn eviction_removes_least_recently_used_images_but_not_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = record("r.example/a", "1", &["a"]);
        let mut b = record("r.example/b", "1", &["b"]);
        let mut c = record("r.example/c", "1", &["c"]);
        a.last_used = 30;
        b.last_used = 10;
        c.last_used = 20;
        let store = Store::open(dir.path()).unwrap();
        for r in [&a, &b, &c] {
            add_layers(&store, r);
            store.save_image(r).unwrap();
        }
        let three = store.size();
        // Room for about two of the three images.
        let store = store.with_policy(StorePolicy {
            keep_blobs: false,
            max_size: Some(three - 10),
        });
        // b is the oldest, but it is the one just pulled: c goes.
        let removed = store.evict(&b).unwrap().unwrap();
        assert_eq!(removed.images, vec!["r.example/c:1".to_string()]);
        assert_eq!(removed.layers, 1);
        let names: Vec<String> = store
            .images()
            .unwrap()
            .iter()
            .map(|r| r.name.clone())
            .collect();
        assert_eq!(names, vec!["r.example/a", "r.example/b"]);
        assert!(store.size() <= three - 10);
    }

    #[test]
    fn a_layers_tar_split_log_counts_in_the_store_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = record("r.example/a", "1", &["a"]);
        add_layers(&store, &a);
        let before = store.size();
        let log = store
            .layer_path(&a.layers[0].chain_id)
            .join(crate::tarsplit::FILE_NAME);
        fs::write(&log, vec![0u8; 1000]).unwrap();
        assert_eq!(store.size(), before + 1000);
    }

    #[test]
    fn touch_updates_last_used_of_the_same_image_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = record("r.example/a", "1", &["a"]);
        store.save_image(&a).unwrap();
        let file = dir.path().join("images").join(format!("{}.json", a.key()));
        let written = fs::read(&file).unwrap();
        assert_eq!(store.find_image("r.example/a:1").unwrap().last_used, 0);
        store.touch(&a).unwrap();
        let after = store.find_image("r.example/a:1").unwrap();
        assert!(after.last_used > 0);
        // The use is in the file's time: the record itself is not rewritten (no sync).
        assert_eq!(fs::read(&file).unwrap(), written);
        let mut other = a.clone();
        other.digest = Digest::of(b"another image now has this tag");
        store.touch(&other).unwrap();
        assert_eq!(
            store.find_image("r.example/a:1").unwrap().last_used,
            after.last_used
        );
    }
}
