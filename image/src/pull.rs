//! `pull`: resolve a reference to one platform's image, fetch what the store lacks, verify
//! every byte, and record the image.
//!
//! Each missing layer is one pass over the network stream: blob bytes -> sha256 (blob
//! digest) -> decompress -> sha256 (diff id) -> unpack into a work directory. Only when
//! both digests match is the layer committed; the image record is written last, so an
//! interrupted or failed pull never lists an image and never leaves a partial layer.
//!
//! Flaky links: a connection that fails or stalls while a blob streams is reopened with an
//! HTTP `Range` request from the byte reached, invisibly to the decompressor (see
//! `NetStream`). A pull that dies altogether (kill -9, power cut) resumes on the next
//! pull: the compressed bytes are teed, in order, into `tmp/blob-<hex>.partial` as they
//! stream, and the next pull replays that file through the same pipeline, then asks the
//! registry only for the rest. The tee is a sequential append that is deleted as soon as the
//! layer commits, so on a pull that completes the bytes mostly live and die in the page
//! cache and rarely reach the SD card; it is never read back except to resume.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use reqwest::blocking::Response;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::digest::{Digest, HashingReader, Sha256};
use crate::gzip::GzipReader;
use crate::manifest::{self, Compression, Manifest, ManifestError};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry::{Client, RegistryError, Retry, RetryCause};
use crate::store::{ImageRecord, LayerMeta, LayerRecord, Removed, Store, StoreError};
use crate::tarsplit;
use crate::unpack::{self, UnpackError};
use oci_spec::image::ImageManifest;

/// Image configs are small; anything larger is hostile.
const MAX_CONFIG_SIZE: u64 = 8 << 20;
/// Read buffer for layer streams: large enough that decompression works in big steps,
/// small enough that three parallel layers stay well under a megabyte of buffers.
const STREAM_BUFFER: usize = 128 << 10;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} of {reference}: digest mismatch: expected {expected}, got {actual}; the registry served corrupt or tampered data, nothing was stored")]
    DigestMismatch {
        reference: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what} of {reference}: expected {expected} bytes, got {actual}; nothing was stored")]
    SizeMismatch {
        reference: String,
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("layer {digest} of {reference}")]
    Unpack {
        reference: String,
        digest: Digest,
        source: UnpackError,
    },
    #[error("layer {digest} of {reference}: reading the stream")]
    Stream {
        reference: String,
        digest: Digest,
        source: std::io::Error,
    },
    #[error("malformed image config of {reference}: {reason}")]
    Config { reference: String, reason: String },
    #[error("{reference} is for {offered}, not {wanted}")]
    WrongPlatform {
        reference: String,
        wanted: String,
        offered: String,
    },
    #[error("cannot prepare layer {digest} of {reference}")]
    Work {
        reference: String,
        digest: Digest,
        source: std::io::Error,
    },
}

/// What the caller wants of a pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// `None`: this host's platform.
    pub platform: Option<Platform>,
    /// Layers fetched at once.
    pub parallel: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            parallel: 3,
        }
    }
}

/// Progress of a pull, for the CLI to show. Called from worker threads.
pub trait Progress: Sync {
    /// The image is resolved; `missing` layers (of `total`) will be fetched.
    fn resolved(&self, _record: &ImageRecord, _missing: &[LayerRecord]) {}
    fn layer_started(&self, _layer: &LayerRecord) {}
    /// `n` more bytes of `layer`'s blob were read.
    fn layer_bytes(&self, _layer: &LayerRecord, _n: u64) {}
    fn layer_done(&self, _layer: &LayerRecord) {}
}

/// Shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// The outcome of a pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub record: ImageRecord,
    /// Layers that were fetched (the others were in the store already).
    pub fetched: usize,
    /// What `max_store_size` evicted to make room (`None`: eviction was due but skipped
    /// because another slate was using the store).
    pub evicted: Option<Removed>,
}

/// A resolved image: what to fetch, not yet fetched.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub record: ImageRecord,
    pub manifest: Vec<u8>,
    pub index: Option<Vec<u8>>,
    pub config: Vec<u8>,
}

/// Resolves `reference` to one platform's manifest and config, verified.
pub fn resolve(
    client: &Client,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<Resolved, PullError> {
    let name = reference.to_string();
    let host = Platform::host();
    let wanted = opts.platform.clone().unwrap_or_else(|| host.clone());
    let top = client.manifest(reference, &reference.manifest_reference())?;
    if let Some(d) = reference.digest() {
        check_digest(&name, "manifest", d, &top.digest)?;
    } else if let Some(d) = &top.announced {
        check_digest(&name, "manifest", d, &top.digest)?;
    }
    let (manifest_bytes, manifest_digest, index) =
        match manifest::parse(&name, &top.bytes, top.media_type.as_deref())? {
            Manifest::Index(idx) => {
                let desc = manifest::select(&name, &idx, &wanted)?;
                let digest = manifest::descriptor_digest(&name, desc)?;
                let m = client.manifest(reference, &digest.to_string())?;
                check_digest(&name, "manifest", &digest, &m.digest)?;
                (m, digest, Some(top))
            }
            Manifest::Image(_) => {
                let d = top.digest.clone();
                (top, d, None)
            }
        };
    let image = match manifest::parse(
        &name,
        &manifest_bytes.bytes,
        manifest_bytes.media_type.as_deref(),
    )? {
        Manifest::Image(m) => m,
        Manifest::Index(_) => {
            return Err(PullError::Config {
                reference: name,
                reason: "an index points to another index".to_string(),
            })
        }
    };
    let config_digest = manifest::descriptor_digest(&name, image.config())?;
    let config = client.small_blob(reference, &config_digest, MAX_CONFIG_SIZE)?;
    check_digest(&name, "config", &config_digest, &Digest::of(&config))?;
    let parts = image_parts(&name, &image, &config, opts, index.is_some())?;
    let record = ImageRecord {
        name: reference.name(),
        tag: reference.tag().map(str::to_string),
        digest: manifest_digest,
        index_digest: index.as_ref().map(|i| i.digest.clone()),
        platform: parts.platform,
        config_digest,
        layers: parts.layers,
        created: parts.created,
        pulled_at: now(),
        unpacked_size: 0,
        last_used: crate::store::now_ms(),
    };
    Ok(Resolved {
        record,
        manifest: manifest_bytes.bytes,
        index: index.map(|i| i.bytes),
        config,
    })
}

/// What an image record takes from a verified manifest and config.
pub(crate) struct ImageParts {
    pub platform: Platform,
    pub layers: Vec<LayerRecord>,
    pub created: Option<String>,
}

/// Reads the platform, layers and creation time of an image from its manifest and its
/// (already verified) config; `from_index` says the manifest was chosen from an index by
/// platform, so the config's platform needs no second check.
pub(crate) fn image_parts(
    name: &str,
    image: &ImageManifest,
    config: &[u8],
    opts: &PullOptions,
    from_index: bool,
) -> Result<ImageParts, PullError> {
    let name = name.to_string();
    let host = Platform::host();
    let wanted = opts.platform.clone().unwrap_or_else(|| host.clone());
    let parsed = parse_config(&name, config)?;
    let platform = Platform::new(&parsed.os, &parsed.architecture, parsed.variant.as_deref());
    if !from_index && !wanted.accepts(&platform) {
        if opts.platform.is_some() {
            return Err(PullError::WrongPlatform {
                reference: name,
                wanted: wanted.to_string(),
                offered: platform.to_string(),
            });
        }
        tracing::warn!(image = %name, "image is for {platform}, this host is {host}: it may not run here");
    }
    if image.layers().len() != parsed.diff_ids.len() {
        return Err(ManifestError::LayerCount {
            reference: name,
            layers: image.layers().len(),
            diff_ids: parsed.diff_ids.len(),
        }
        .into());
    }
    let chain = Digest::chain_ids(&parsed.diff_ids);
    let mut layers = Vec::new();
    for ((desc, diff_id), chain_id) in image.layers().iter().zip(&parsed.diff_ids).zip(chain) {
        let media_type = desc.media_type().to_string();
        if Compression::from_media_type(&media_type).is_none() {
            return Err(ManifestError::LayerType {
                reference: name,
                media_type,
            }
            .into());
        }
        layers.push(LayerRecord {
            digest: manifest::descriptor_digest(&name, desc)?,
            diff_id: diff_id.clone(),
            chain_id,
            size: desc.size(),
            media_type,
        });
    }
    Ok(ImageParts {
        platform,
        layers,
        created: parsed.created,
    })
}

struct ParsedConfig {
    os: String,
    architecture: String,
    variant: Option<String>,
    diff_ids: Vec<Digest>,
    created: Option<String>,
}

fn parse_config(reference: &str, data: &[u8]) -> Result<ParsedConfig, PullError> {
    #[derive(serde::Deserialize)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        variant: Option<String>,
        rootfs: RootFs,
        created: Option<String>,
    }
    let bad = |reason: String| PullError::Config {
        reference: reference.to_string(),
        reason,
    };
    let c: Config = serde_json::from_slice(data).map_err(|e| bad(e.to_string()))?;
    let diff_ids = c
        .rootfs
        .diff_ids
        .iter()
        .map(|d| d.parse::<Digest>().map_err(|e| bad(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ParsedConfig {
        os: c.os,
        architecture: c.architecture,
        variant: c.variant,
        diff_ids,
        created: c.created,
    })
}

fn check_digest(
    reference: &str,
    what: &str,
    expected: &Digest,
    actual: &Digest,
) -> Result<(), PullError> {
    if expected == actual {
        Ok(())
    } else {
        Err(PullError::DigestMismatch {
            reference: reference.to_string(),
            what: what.to_string(),
            expected: expected.clone(),
            actual: actual.clone(),
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Pulls `reference` into `store`.
pub fn pull(
    store: &Store,
    client: &Client,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled, PullError> {
    let resolved = resolve(client, reference, opts)?;
    fetch(store, client, reference, resolved, opts, progress)
}

/// Fetches and records a resolved image.
pub fn fetch(
    store: &Store,
    client: &Client,
    reference: &Reference,
    resolved: Resolved,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled, PullError> {
    let name = reference.to_string();
    fetch_with(store, resolved, opts, progress, &|layer: &LayerRecord| {
        fetch_layer(store, client, reference, &name, layer, progress)
    })
}

/// Records a resolved image, calling `fetch_one` (in parallel, `opts.parallel` at a
/// time) for each layer the store lacks; `fetch_one` takes the layer lock and commits
/// through [`import_layer`]. Registry pulls and OCI layout imports both come here.
pub(crate) fn fetch_with(
    store: &Store,
    resolved: Resolved,
    opts: &PullOptions,
    progress: &dyn Progress,
    fetch_one: &(dyn Fn(&LayerRecord) -> Result<(), PullError> + Sync),
) -> Result<Pulled, PullError> {
    let _shared = store.lock_shared()?;
    store.clean_debris()?;
    let mut record = resolved.record;
    // The same layer may appear twice in one image; fetch it once.
    let mut missing: Vec<LayerRecord> = Vec::new();
    for l in &record.layers {
        if !store.has_layer(&l.chain_id) && !missing.iter().any(|m| m.chain_id == l.chain_id) {
            missing.push(l.clone());
        }
    }
    progress.resolved(&record, &missing);
    let fetched = missing.len();
    let queue = Mutex::new(missing.into_iter());
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<PullError>> = Mutex::new(None);
    let workers = opts.parallel.clamp(1, 16).min(fetched.max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                let Some(layer) = next else { return };
                progress.layer_started(&layer);
                match fetch_one(&layer) {
                    Ok(()) => progress.layer_done(&layer),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut unpacked = 0;
    for l in &record.layers {
        unpacked += store.layer_meta(&l.chain_id)?.size;
    }
    record.unpacked_size = unpacked;
    // Blobs before the record: a listed image always has its manifest and config.
    if let Some(index) = &resolved.index {
        if let Some(d) = &record.index_digest {
            store.put_blob(d, index)?;
        }
    }
    store.put_blob(&record.digest, &resolved.manifest)?;
    store.put_blob(&record.config_digest, &resolved.config)?;
    record.last_used = crate::store::now_ms();
    store.save_image(&record)?;
    drop(_shared);
    // The image is complete and listed whatever happens now: a failed eviction is only
    // a warning, and the next pull tries again.
    let evicted = match store.evict(&record) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cannot evict images to fit max_store_size");
            None
        }
    };
    Ok(Pulled {
        record,
        fetched,
        evicted,
    })
}

/// Chunks of tar stream in flight between the decompressing and the unpacking thread:
/// enough to ride out a burst of small files, little enough memory.
const PIPE_DEPTH: usize = 8;
const PIPE_CHUNK: usize = 128 << 10;

/// The reading side of a layer: blob bytes -> sha256 -> decompress -> queue. Returns the
/// blob digest and size, or `None` when the unpacker gave up. The tar's own digest (the
/// diff id) is taken on the unpacking side, as it reads ([`ChannelReader`]): inflating is
/// the slowest step of a pull, so this thread does as little else as it can.
fn produce(
    source: impl Read,
    layer: &LayerRecord,
    progress: &dyn Progress,
    name: &str,
    tx: std::sync::mpsc::SyncSender<std::io::Result<Vec<u8>>>,
    aborted: &AtomicBool,
) -> Result<Option<(Digest, u64)>, PullError> {
    let stream_err = |source| PullError::Stream {
        reference: name.to_string(),
        digest: layer.digest.clone(),
        source,
    };
    // The unpacker must hear of a failure too, or it would wait for more.
    let fail = |tx: &std::sync::mpsc::SyncSender<std::io::Result<Vec<u8>>>, e: std::io::Error| {
        let _ = tx.send(Err(std::io::Error::new(e.kind(), e.to_string())));
        stream_err(e)
    };
    // One byte more than the manifest says is enough to prove a blob too long, without
    // reading whatever a hostile registry keeps sending.
    let mut compressed = HashingReader::new(Counting {
        inner: source.take(layer.size.saturating_add(1)),
        layer,
        progress,
    });
    {
        let mut buffered = BufReader::with_capacity(STREAM_BUFFER, &mut compressed);
        let head = match buffered.fill_buf() {
            Ok(h) => h,
            Err(e) => return Err(fail(&tx, e)),
        };
        let compression = Compression::sniff(head);
        let mut decoder = match compression {
            Compression::Gzip => Decoder::Gzip(GzipReader::new(buffered)),
            Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(buffered) {
                Ok(d) => Decoder::Other(Box::new(d)),
                Err(e) => return Err(fail(&tx, e)),
            },
            Compression::None => Decoder::Other(Box::new(buffered)),
        };
        loop {
            if aborted.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let chunk = match decoder.chunk() {
                Ok(c) if c.is_empty() => break,
                Ok(c) => c,
                Err(e) => return Err(fail(&tx, e)),
            };
            // The unpacking side reads to the end (past the tar's end-of-archive marker:
            // every byte counts for the diff id) unless it failed.
            if tx.send(Ok(chunk)).is_err() {
                return Ok(None);
            }
        }
    }
    // The end of the tar for the unpacking side; the rest of the blob is only hashed.
    drop(tx);
    let (blob_digest, blob_size) = compressed.finish().map_err(stream_err)?;
    Ok(Some((blob_digest, blob_size)))
}

/// The decompressing side of a layer stream.
enum Decoder<'a, R: BufRead> {
    /// Inflated straight into each chunk's spare capacity (nothing zeroed first).
    Gzip(GzipReader<R>),
    Other(Box<dyn Read + 'a>),
}

impl<R: BufRead> Decoder<'_, R> {
    /// The next chunk of the tar stream: [`PIPE_CHUNK`] bytes, fewer only at its end, none
    /// past it. Full chunks mean fewer hand-overs to the unpacking thread.
    fn chunk(&mut self) -> std::io::Result<Vec<u8>> {
        let mut chunk = Vec::with_capacity(PIPE_CHUNK);
        match self {
            Decoder::Gzip(g) => loop {
                match g.read_into(&mut chunk) {
                    Ok(0) => break,
                    Ok(_) if chunk.len() >= PIPE_CHUNK => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            },
            Decoder::Other(r) => {
                chunk.resize(PIPE_CHUNK, 0);
                let mut n = 0;
                while n < PIPE_CHUNK {
                    match r.read(&mut chunk[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                chunk.truncate(n);
            }
        }
        Ok(chunk)
    }
}

/// The unpacking side's view of the queue: a plain reader, which also takes the tar's
/// sha256 (the diff id), a chunk at a time as it arrives.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
    hasher: Sha256,
    count: u64,
}

impl ChannelReader {
    fn new(rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>) -> ChannelReader {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            at: 0,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The next chunk, hashed; `None` at the end of the stream.
    fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        match self.rx.recv() {
            Ok(Ok(c)) => {
                self.hasher.update(&c);
                self.count += c.len() as u64;
                Ok(Some(c))
            }
            Ok(Err(e)) => Err(e),
            // Sender gone: the end of the stream.
            Err(_) => Ok(None),
        }
    }

    /// Reads what the unpacker left (the tar's end and anything after it) and returns the
    /// digest and size of the whole stream.
    fn finish(mut self) -> std::io::Result<(Digest, u64)> {
        while self.next_chunk()?.is_some() {}
        Ok((self.hasher.finish(), self.count))
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.next_chunk()? {
                Some(c) => {
                    self.chunk = c;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Counts bytes for progress as they are read.
struct Counting<'a, R> {
    inner: R,
    layer: &'a LayerRecord,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.layer_bytes(self.layer, n as u64);
        Ok(n)
    }
}

/// Why the network side of a layer stream gave up, kept aside because the error that
/// reaches the pipeline is only an `io::Error` inside the decompressor's or unpacker's.
#[derive(Default)]
struct NetFailure(Mutex<Option<PullError>>);

impl NetFailure {
    fn set(&self, e: PullError) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(e);
        }
    }

    fn is_set(&self) -> bool {
        self.0.lock().map(|s| s.is_some()).unwrap_or(true)
    }

    fn take(&self) -> Option<PullError> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// The network bytes of one blob from a given offset, teed into the partial file, with
/// failed or stalled connections reopened from the byte reached (`Range`). A registry that
/// ignores the range (200) is read from the start again and the bytes already had are
/// skipped, so what comes out is always the blob's next bytes.
struct NetStream<'a> {
    client: &'a Client,
    reference: &'a Reference,
    digest: &'a Digest,
    name: &'a str,
    /// Offset in the blob of the next byte to hand out.
    pos: u64,
    body: Option<Response>,
    tee: Option<std::fs::File>,
    tee_path: &'a std::path::Path,
    failure: &'a NetFailure,
    /// Failures since the last byte that got through.
    failures: u32,
    /// Reopens of this blob in all; bounds a registry that keeps cutting.
    reopens: u32,
}

impl NetStream<'_> {
    fn reopen(&mut self) -> std::io::Result<()> {
        let blob = match self.client.blob(self.reference, self.digest, self.pos) {
            Ok(b) => b,
            Err(e) => {
                let msg = e.to_string();
                self.failure.set(e.into());
                return Err(std::io::Error::other(msg));
            }
        };
        let mut body = blob.response;
        let mut skip = self.pos - blob.offset;
        if skip > 0 {
            tracing::debug!(blob = %self.digest, skip, "registry ignored the range; skipping bytes already had");
        }
        let mut scratch = vec![0u8; 64 << 10];
        while skip > 0 {
            let want = scratch
                .len()
                .min(usize::try_from(skip).unwrap_or(usize::MAX));
            let n = body.read(&mut scratch[..want])?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob ended before the bytes already had",
                ));
            }
            skip -= n as u64;
        }
        self.body = Some(body);
        Ok(())
    }

    fn tee(&mut self, data: &[u8]) {
        let Some(f) = self.tee.as_mut() else { return };
        if let Err(e) = f.write_all(data) {
            // Only resuming is lost (a full disk fails the unpack soon anyway); a torn tail
            // must not be replayed, so the file goes.
            tracing::debug!(error = %e, "cannot keep the partial blob; the download will not resume");
            self.tee = None;
            let _ = std::fs::remove_file(self.tee_path);
        }
    }
}

impl Read for NetStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let attempts = self.client.attempts();
        loop {
            let result = match self.body.as_mut() {
                Some(body) => body.read(buf),
                None => match self.reopen() {
                    Ok(()) => continue,
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(n) => {
                    self.tee(&buf[..n]);
                    self.pos += n as u64;
                    self.failures = 0;
                    return Ok(n);
                }
                Err(e) => {
                    self.body = None;
                    self.failures += 1;
                    self.reopens += 1;
                    if self.failure.is_set()
                        || self.failures >= attempts
                        || self.reopens >= attempts * 4
                    {
                        self.failure.set(PullError::Stream {
                            reference: self.name.to_string(),
                            digest: self.digest.clone(),
                            source: std::io::Error::new(e.kind(), e.to_string()),
                        });
                        return Err(e);
                    }
                    let wait = self.client.backoff(self.failures);
                    tracing::debug!(blob = %self.digest, at = self.pos, error = %e, "download cut off");
                    self.client.retrying(Retry {
                        registry: self.reference.registry().to_string(),
                        what: format!("blob {}", self.digest),
                        cause: RetryCause::CutOff {
                            reason: e.to_string(),
                        },
                        next: self.failures + 1,
                        attempts,
                        wait,
                    });
                    std::thread::sleep(wait);
                }
            }
        }
    }
}

fn fetch_layer(
    store: &Store,
    client: &Client,
    reference: &Reference,
    name: &str,
    layer: &LayerRecord,
    progress: &dyn Progress,
) -> Result<(), PullError> {
    // The layer lock also guards the partial blob: one writer, and no reader of a file
    // still being written.
    let _lock = store.lock_layer(&layer.chain_id)?;
    if store.has_layer(&layer.chain_id) {
        // Another pull committed it while we waited for the lock.
        tracing::debug!(layer = %layer.digest, "layer appeared while waiting for its lock");
        return Ok(());
    }
    let partial = store.partial_blob_path(&layer.digest);
    let mut resumed = false;
    let first = fetch_layer_once(
        store,
        client,
        reference,
        name,
        layer,
        progress,
        &partial,
        &mut resumed,
    );
    match first {
        // The partial is gone when its bytes proved bad (see fetch_layer_once).
        Err(e) if resumed && !partial.exists() => {
            // Resumed bytes are trusted only until the digest says otherwise: a torn write
            // at a power cut could be what is wrong, so once more from the registry alone
            // before blaming it.
            tracing::warn!(layer = %layer.digest, error = %e, "resumed download failed verification; downloading it again");
            let _ = std::fs::remove_file(&partial);
            let mut again = false;
            fetch_layer_once(
                store, client, reference, name, layer, progress, &partial, &mut again,
            )
        }
        r => r,
    }
}

/// One attempt at a layer, resuming from the partial blob if there is one; `resumed`
/// says whether bytes of an earlier pull were replayed.
#[allow(clippy::too_many_arguments)]
fn fetch_layer_once(
    store: &Store,
    client: &Client,
    reference: &Reference,
    name: &str,
    layer: &LayerRecord,
    progress: &dyn Progress,
    partial: &std::path::Path,
    resumed: &mut bool,
) -> Result<(), PullError> {
    let failure = NetFailure::default();
    let result = stream_layer(
        store, client, reference, name, layer, progress, partial, &failure, resumed,
    );
    match result {
        Ok(()) => {
            if store.policy().keep_blobs {
                // Verified whole: sync it, then it is a blob like any other.
                let kept = std::fs::File::open(partial)
                    .and_then(|f| f.sync_all())
                    .map_err(|source| PullError::Work {
                        reference: name.to_string(),
                        digest: layer.digest.clone(),
                        source,
                    })
                    .and_then(|()| Ok(store.adopt_blob(&layer.digest, partial)?));
                if let Err(e) = kept {
                    tracing::warn!(error = %e, "cannot keep the layer blob");
                    let _ = std::fs::remove_file(partial);
                }
            } else {
                let _ = std::fs::remove_file(partial);
            }
            Ok(())
        }
        Err(e) => {
            // The network's own failure explains a broken pipeline better than the
            // decompressor's view of it, and the bytes so far are good to resume from;
            // so they are when the registry could not be asked at all. Any other failure
            // is in the bytes themselves (digest, size, gzip, tar) or in the store: not
            // worth resuming from.
            if let Some(net) = failure.take() {
                return Err(net);
            }
            if !matches!(e, PullError::Registry(_)) {
                let _ = std::fs::remove_file(partial);
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn stream_layer(
    store: &Store,
    client: &Client,
    reference: &Reference,
    name: &str,
    layer: &LayerRecord,
    progress: &dyn Progress,
    partial: &std::path::Path,
    failure: &NetFailure,
    resumed: &mut bool,
) -> Result<(), PullError> {
    let work_err = |source| PullError::Work {
        reference: name.to_string(),
        digest: layer.digest.clone(),
        source,
    };
    let mut have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    if have > layer.size {
        have = 0;
    }
    // A partial as long as the blob needs no network at all (killed after the download,
    // before the commit).
    let blob = if have < layer.size || layer.size == 0 {
        let b = client.blob(reference, &layer.digest, have)?;
        if b.offset != have {
            tracing::info!(layer = %layer.digest, have, "registry ignored the range request; starting over");
            have = 0;
        }
        Some(b)
    } else {
        None
    };
    if have > 0 {
        *resumed = true;
        tracing::info!(layer = %layer.digest, bytes = have, "resuming an interrupted download");
    }
    let replay = if have > 0 {
        Some(std::fs::File::open(partial).map_err(work_err)?.take(have))
    } else {
        None
    };
    let tee = match &blob {
        Some(_) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(partial)
                .and_then(|f| {
                    // Truncate only what is to be dropped. On ext4 (and XFS) a truncate that
                    // leaves a file empty, even a no-op one on a file just created, marks it
                    // to be flushed when closed (auto_da_alloc): the whole compressed layer
                    // would then go to the disk every pull, only to be deleted.
                    if f.metadata()?.len() != have {
                        f.set_len(have)?;
                    }
                    Ok(f)
                });
            match f {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot keep a partial blob; the download will not resume");
                    None
                }
            }
        }
        None => None,
    };
    let net = blob.map(|b| NetStream {
        client,
        reference,
        digest: &layer.digest,
        name,
        pos: have,
        body: Some(b.response),
        tee,
        tee_path: partial,
        failure,
        failures: 0,
        reopens: 0,
    });
    let source = replay
        .map(|r| Box::new(r) as Box<dyn Read + Send>)
        .unwrap_or_else(|| Box::new(std::io::empty()))
        .chain(
            net.map(|n| Box::new(n) as Box<dyn Read + Send>)
                .unwrap_or_else(|| Box::new(std::io::empty())),
        );
    // Verified, the partial is no use unless it becomes the kept blob (see import_layer).
    let spent = (!store.policy().keep_blobs).then_some(partial);
    import_layer(store, name, layer, progress, source, spent)
}

/// The layer pipeline shared by registry pulls and OCI layout imports: blob bytes from
/// `source` -> sha256 (blob digest) and size -> decompress -> sha256 (diff id) -> unpack
/// into a work directory; the layer is committed only when both digests and the size match.
/// The caller holds the layer lock. `spent` is the partial blob a registry pull teed the
/// bytes into: it is removed once both digests match, before the commit syncs the file
/// system, since that sync would otherwise write the whole compressed layer out (to an SD
/// card) only for it to be deleted a moment later. A crash in between costs that layer's
/// download again, not its correctness.
pub(crate) fn import_layer(
    store: &Store,
    name: &str,
    layer: &LayerRecord,
    progress: &dyn Progress,
    source: impl Read + Send,
    spent: Option<&std::path::Path>,
) -> Result<(), PullError> {
    let work_err = |source| PullError::Work {
        reference: name.to_string(),
        digest: layer.digest.clone(),
        source,
    };
    let stream_err = |source| PullError::Stream {
        reference: name.to_string(),
        digest: layer.digest.clone(),
        source,
    };
    let work = store.temp_dir("layer")?;
    let diff = work.path().join("diff");
    std::fs::create_dir(&diff).map_err(work_err)?;
    // Two threads per layer, so one large layer still keeps two cores busy: this one
    // unpacks (file system calls) and hashes the tar, a helper reads, hashes and
    // decompresses the blob, handing the tar stream over in chunks through a short queue.
    // What `slate save` needs to re-create this exact tar later (see tarsplit.rs).
    let recorder = std::cell::RefCell::new(
        tarsplit::Recorder::create(&work.path().join(tarsplit::FILE_NAME)).map_err(work_err)?,
    );
    let aborted = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(PIPE_DEPTH);
    let (unpacked, produced) = std::thread::scope(|s| {
        let producer = s.spawn(|| produce(source, layer, progress, name, tx, &aborted));
        let mut tar = ChannelReader::new(rx);
        let unpacked = match unpack::unpack_recorded(&mut tar, &diff, Some(&recorder)) {
            // Every byte of the stream counts for the diff id, also any the unpacker did
            // not need.
            Ok(stats) => tar
                .finish()
                .map(|digest| (stats, digest))
                .map_err(UnpackError::Tar),
            Err(e) => {
                // Gone before the join below: a producer blocked on the full queue wakes.
                drop(tar);
                Err(e)
            }
        };
        if unpacked.is_err() {
            aborted.store(true, Ordering::Relaxed);
        }
        let produced = producer.join().unwrap_or_else(|_| {
            Err(stream_err(std::io::Error::other(
                "the decompressing thread panicked",
            )))
        });
        (unpacked, produced)
    });
    // The reading side's failure is the cause when both failed (the unpacker only saw
    // its stream break); a hostile entry stops the reader, which then reports nothing.
    let (stats, (diff_id, _), (blob_digest, blob_size)) = match (unpacked, produced) {
        (_, Err(e)) => return Err(e),
        (Err(source), Ok(_)) => {
            return Err(PullError::Unpack {
                reference: name.to_string(),
                digest: layer.digest.clone(),
                source,
            })
        }
        (Ok((stats, tar)), Ok(Some(blob))) => (stats, tar, blob),
        (Ok(_), Ok(None)) => {
            return Err(stream_err(std::io::Error::other(
                "the decompressing thread stopped early",
            )))
        }
    };
    check_digest(
        name,
        &format!("layer {}", layer.digest),
        &layer.digest,
        &blob_digest,
    )?;
    if blob_size != layer.size {
        return Err(PullError::SizeMismatch {
            reference: name.to_string(),
            what: format!("layer {}", layer.digest),
            expected: layer.size,
            actual: blob_size,
        });
    }
    check_digest(
        name,
        &format!("layer {} (uncompressed)", layer.digest),
        &layer.diff_id,
        &diff_id,
    )?;
    if let Some(partial) = spent {
        // Already gone is fine; a file that cannot be removed only misses this saving.
        let _ = std::fs::remove_file(partial);
    }
    store.commit_layer(
        work,
        &LayerMeta {
            diff_id: layer.diff_id.clone(),
            chain_id: layer.chain_id.clone(),
            size: stats.bytes,
            entries: stats.entries,
        },
    )?;
    Ok(())
}

/// Attacks on the layer pipeline: every way a blob or its tar can differ from what the
/// manifest and config name must fail the import and commit nothing. Since the gzip CRC-32 is
/// no longer checked (see gzip.rs), the blob digest and the diff id are all that stands
/// between a registry and the store, so each is tested alone here.
#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// What a manifest and config would say of a one-layer image with this blob and tar.
    fn record(blob: &[u8], tar: &[u8], media_type: &str) -> LayerRecord {
        let diff_id = Digest::of(tar);
        LayerRecord {
            digest: Digest::of(blob),
            chain_id: Digest::chain_ids(std::slice::from_ref(&diff_id))[0].clone(),
            diff_id,
            size: blob.len() as u64,
            media_type: media_type.to_string(),
        }
    }

    fn import(store: &Store, layer: &LayerRecord, blob: &[u8]) -> Result<(), PullError> {
        import_layer(store, "test", layer, &NoProgress, blob, None)
    }

    /// The import failed with a digest mismatch on `what`, and nothing was left behind.
    fn assert_refused(store: &Store, layer: &LayerRecord, r: Result<(), PullError>, what: &str) {
        match r {
            Err(PullError::DigestMismatch { what: w, .. }) => assert!(w.ends_with(what), "{w}"),
            other => panic!("expected a digest mismatch of {what}, got {other:?}"),
        }
        assert!(!store.has_layer(&layer.chain_id));
        assert!(!store.layer_path(&layer.chain_id).exists());
        let left: Vec<_> = std::fs::read_dir(store.tmp_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with("layer-"))
            .collect();
        assert!(left.is_empty(), "work directories left: {left:?}");
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn a_layer_whose_digests_match_is_committed_and_its_partial_dropped() {
        let (_dir, store) = store();
        let tar = tar_of(&[("etc/hostname", b"slate\n")]);
        let blob = gz(&tar, 6);
        let layer = record(&blob, &tar, GZIP);
        let partial = store.partial_blob_path(&layer.digest);
        std::fs::write(&partial, &blob).unwrap();
        import_layer(
            &store,
            "test",
            &layer,
            &NoProgress,
            &blob[..],
            Some(&partial),
        )
        .unwrap();
        assert!(store.has_layer(&layer.chain_id));
        let file = store.layer_path(&layer.chain_id).join("diff/etc/hostname");
        assert_eq!(std::fs::read(file).unwrap(), b"slate\n");
        assert!(!partial.exists(), "the verified partial is of no more use");
    }

    /// The same tar compressed differently: only the blob digest can tell.
    #[test]
    fn a_blob_other_than_the_manifests_is_refused_even_with_the_right_tar() {
        let (_dir, store) = store();
        let tar = tar_of(&[("a", b"a")]);
        let layer = record(&gz(&tar, 6), &tar, GZIP);
        let other = gz(&tar, 1);
        assert_ne!(other, gz(&tar, 6));
        let mut layer_same_size = layer.clone();
        layer_same_size.size = other.len() as u64;
        let r = import(&store, &layer_same_size, &other);
        assert_refused(&store, &layer, r, &format!("layer {}", layer.digest));
    }

    /// A manifest rewritten to name a tampered blob (its digest and size right) is caught by
    /// the config's diff id, for every compression.
    #[test]
    fn tampered_content_is_refused_by_the_diff_id_whatever_the_compression() {
        let (_dir, store) = store();
        let good = tar_of(&[("bin/sh", b"the real shell")]);
        let evil = tar_of(&[("bin/sh", b"an evil shell!")]);
        assert_eq!(good.len(), evil.len());
        let zstd = zstd::encode_all(&evil[..], 3).unwrap();
        for (blob, media_type) in [
            (gz(&evil, 6), GZIP),
            (zstd, "application/vnd.oci.image.layer.v1.tar+zstd"),
            (evil.clone(), "application/vnd.oci.image.layer.v1.tar"),
        ] {
            let mut layer = record(&blob, &evil, media_type);
            let good_layer = record(&blob, &good, media_type);
            layer.diff_id = good_layer.diff_id.clone();
            layer.chain_id = good_layer.chain_id.clone();
            let r = import(&store, &layer, &blob);
            assert_refused(&store, &layer, r, "(uncompressed)");
        }
    }

    /// The gzip CRC-32 is not checked: content changed inside a stored (uncompressed)
    /// deflate block inflates without error, the CRC now wrong, and the diff id must catch it.
    #[test]
    fn content_changed_under_a_stale_crc_is_refused_by_the_diff_id() {
        let (_dir, store) = store();
        let good = tar_of(&[("bin/sh", b"the real shell")]);
        let mut blob = gz(&good, 0);
        let at = blob
            .windows(4)
            .position(|w| w == b"real")
            .expect("level 0 stores the tar as it is");
        blob[at..at + 4].copy_from_slice(b"evil");
        let mut layer = record(&blob, &good, GZIP);
        let r = import(&store, &layer, &blob);
        assert_refused(&store, &layer, r, "(uncompressed)");
        // What was inflated is exactly the changed tar: nothing else (the CRC) failed it.
        let mut evil = good.clone();
        let at = evil.windows(4).position(|w| w == b"real").unwrap();
        evil[at..at + 4].copy_from_slice(b"evil");
        layer = record(&blob, &evil, GZIP);
        import(&store, &layer, &blob).unwrap();
        assert!(store.has_layer(&layer.chain_id));
    }

    /// Bytes after the tar's end-of-archive marker are not unpacked but still count for the
    /// diff id, also those in chunks the unpacker never asks for (the padding spans many).
    #[test]
    fn bytes_after_the_end_of_the_archive_count_for_the_diff_id() {
        let (_dir, store) = store();
        let good = tar_of(&[("a", b"a")]);
        let mut padded = good.clone();
        padded.resize(good.len() + 16 * PIPE_CHUNK, 0);
        padded.extend_from_slice(b"smuggled");
        let blob = gz(&padded, 6);
        // The config names the tar without them: refused.
        let mut layer = record(&blob, &padded, GZIP);
        layer.diff_id = Digest::of(&good);
        layer.chain_id = Digest::chain_ids(std::slice::from_ref(&layer.diff_id))[0].clone();
        let r = import(&store, &layer, &blob);
        assert_refused(&store, &layer, r, "(uncompressed)");
        // The config names them too: accepted, which needs every chunk hashed.
        let layer = record(&blob, &padded, GZIP);
        import(&store, &layer, &blob).unwrap();
        assert!(store.has_layer(&layer.chain_id));
    }

    #[test]
    fn a_blob_cut_short_is_refused() {
        let (_dir, store) = store();
        let tar = tar_of(&[("a", &[7u8; 50_000][..])]);
        let blob = gz(&tar, 6);
        let layer = record(&blob, &tar, GZIP);
        let r = import(&store, &layer, &blob[..blob.len() - 3]);
        assert!(r.is_err());
        assert!(!store.has_layer(&layer.chain_id));
    }
}
