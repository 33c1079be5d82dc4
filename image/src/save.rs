//! `slate save`: images from the store as one tar archive, for a USB stick instead of a
//! registry. The archive is an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`), which `slate load`, podman, skopeo (`oci-archive:`) and Docker 25+
//! read; [`Format::Docker`] adds Docker's `manifest.json` so that older `docker load` reads
//! it too (the layout Docker 25+ itself writes).
//!
//! An image keeps its identity: the config blob is written as pulled, so the config digest
//! (the image id) and the layers' diff ids are the same after `slate load` on another
//! machine. Layer blobs come from one of two places:
//! - the compressed blobs as pulled, when the store kept them (`keep_blobs`): then the
//!   original manifest is written too, and even the manifest digest is unchanged;
//! - otherwise each layer's uncompressed tar, re-created byte for byte from its directory and
//!   tar-split log ([`crate::tarsplit`]) and checked against its diff id, under a new OCI
//!   manifest that lists those tars (blob digest = diff id). Saving that image again gives
//!   the same archive, byte for byte.
//!
//! Entries are written in a fixed order with fixed owners, modes and times, so the archive
//! depends only on the images.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::PathBuf;

use oci_spec::image::{
    DescriptorBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType, SCHEMA_VERSION,
};

use crate::archive::{oci_digest, CONTAINERD_NAME, REF_NAME};
use crate::digest::{Digest, HashingReader};
use crate::reference::Reference;
use crate::store::{ImageRecord, Store, StoreError};
use crate::tarsplit::{self, SplitError};

/// What the archive is laid out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout.
    Oci,
    /// An OCI image layout with Docker's `manifest.json` beside it.
    Docker,
}

/// Why a save failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot save {image}")]
    Layer {
        image: String,
        #[source]
        source: SplitError,
    },
    #[error("cannot save {image}: {what} {digest} in the store does not match its digest; remove the image and pull it again")]
    Corrupt {
        image: String,
        what: &'static str,
        digest: Digest,
    },
    #[error("cannot save {image}: {reason}")]
    Unsupported { image: String, reason: String },
    #[error("writing the archive")]
    Write(#[source] io::Error),
}

/// One image as written.
#[derive(Debug, Clone)]
pub struct Saved {
    pub name: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    /// Whether the layers are the blobs as pulled (else re-created uncompressed tars).
    pub original_blobs: bool,
}

enum LayerSource {
    /// A compressed blob kept in `blobs/`.
    Blob { path: PathBuf },
    /// Re-created from `layers/<chain>/` and its tar-split log.
    Split { layer_dir: PathBuf },
}

struct PlannedLayer {
    digest: Digest,
    size: u64,
    source: LayerSource,
}

struct Planned {
    display: String,
    record: ImageRecord,
    manifest: Vec<u8>,
    manifest_digest: Digest,
    manifest_type: String,
    config: Vec<u8>,
    layers: Vec<PlannedLayer>,
    original_blobs: bool,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Plans an image: reads and checks its config (and manifest), finds each layer's source.
fn plan(store: &Store, record: &ImageRecord) -> Result<Planned, SaveError> {
    let display = record.display_name();
    let config = store.get_blob(&record.config_digest)?;
    if Digest::of(&config) != record.config_digest {
        return Err(SaveError::Corrupt {
            image: display,
            what: "config",
            digest: record.config_digest.clone(),
        });
    }
    // Original blobs when all of them were kept and the manifest is there to list them.
    let kept = record
        .layers
        .iter()
        .all(|l| store.blob_path(&l.digest).is_file());
    let original = if kept {
        store
            .get_blob(&record.digest)
            .ok()
            .filter(|m| Digest::of(m) == record.digest)
    } else {
        None
    };
    if let Some(manifest) = original {
        let manifest_type = serde_json::from_slice::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
            .unwrap_or_else(|| OCI_MANIFEST.to_string());
        let layers = record
            .layers
            .iter()
            .map(|l| PlannedLayer {
                digest: l.digest.clone(),
                size: l.size,
                source: LayerSource::Blob {
                    path: store.blob_path(&l.digest),
                },
            })
            .collect();
        return Ok(Planned {
            display,
            record: record.clone(),
            manifest_digest: record.digest.clone(),
            manifest,
            manifest_type,
            config,
            layers,
            original_blobs: true,
        });
    }

    let mut layers = Vec::new();
    for l in &record.layers {
        let layer_dir = store.layer_path(&l.chain_id);
        let size =
            tarsplit::tar_size(&layer_dir, &l.diff_id).map_err(|source| SaveError::Layer {
                image: display.clone(),
                source,
            })?;
        layers.push(PlannedLayer {
            digest: l.diff_id.clone(),
            size,
            source: LayerSource::Split { layer_dir },
        });
    }
    let unsupported = |e: oci_spec::OciSpecError| SaveError::Unsupported {
        image: display.clone(),
        reason: e.to_string(),
    };
    let descriptors = layers
        .iter()
        .map(|l| {
            DescriptorBuilder::default()
                .media_type(MediaType::ImageLayer)
                .digest(oci_digest(&l.digest))
                .size(l.size)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(unsupported)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageConfig)
                .digest(oci_digest(&record.config_digest))
                .size(config.len() as u64)
                .build()
                .map_err(unsupported)?,
        )
        .layers(descriptors)
        .build()
        .map_err(unsupported)?;
    let manifest = serde_json::to_vec(&manifest).map_err(|e| SaveError::Unsupported {
        image: display.clone(),
        reason: e.to_string(),
    })?;
    Ok(Planned {
        display,
        record: record.clone(),
        manifest_digest: Digest::of(&manifest),
        manifest,
        manifest_type: OCI_MANIFEST.to_string(),
        config,
        layers,
        original_blobs: false,
    })
}

/// Writes the images to `out` as one archive, under the shared store lock so that no layer
/// is removed meanwhile.
pub fn save(
    store: &Store,
    images: &[ImageRecord],
    format: Format,
    out: impl Write,
) -> Result<Vec<Saved>, SaveError> {
    let _shared = store.lock_shared()?;
    // Everything that can be checked before the first byte is written is checked here.
    let planned = images
        .iter()
        .map(|r| plan(store, r))
        .collect::<Result<Vec<_>, _>>()?;

    let mut tar = tar::Builder::new(out);
    let w = SaveError::Write;
    append_dir(&mut tar, "blobs/").map_err(w)?;
    append_dir(&mut tar, "blobs/sha256/").map_err(w)?;
    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(w)?;
    let mut written = HashSet::new();
    for p in &planned {
        for l in &p.layers {
            if !written.insert(l.digest.clone()) {
                continue;
            }
            write_layer(&mut tar, p, l)?;
        }
        for (digest, data) in [
            (&p.record.config_digest, &p.config),
            (&p.manifest_digest, &p.manifest),
        ] {
            if written.insert(digest.clone()) {
                append_bytes(&mut tar, &blob_name(digest), data).map_err(w)?;
            }
        }
    }

    let mut manifests = Vec::new();
    for p in &planned {
        let mut annotations = HashMap::new();
        let full = full_name(&p.record);
        if let Some(tag) = &p.record.tag {
            annotations.insert(REF_NAME.to_string(), tag.clone());
        }
        annotations.insert(CONTAINERD_NAME.to_string(), full);
        let media_type = MediaType::from(p.manifest_type.as_str());
        let d = DescriptorBuilder::default()
            .media_type(media_type)
            .digest(oci_digest(&p.manifest_digest))
            .size(p.manifest.len() as u64)
            .annotations(annotations)
            .build()
            .map_err(|e| SaveError::Unsupported {
                image: p.display.clone(),
                reason: e.to_string(),
            })?;
        manifests.push(d);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| SaveError::Unsupported {
            image: "index".to_string(),
            reason: e.to_string(),
        })?;
    // Through serde_json's Value, whose maps are sorted: the annotations are a HashMap, and
    // the archive must not depend on its iteration order.
    let index = serde_json::to_value(&index)
        .and_then(|v| serde_json::to_vec(&v))
        .map_err(|e| w(e.into()))?;
    append_bytes(&mut tar, "index.json", &index).map_err(w)?;

    if format == Format::Docker {
        let entries: Vec<serde_json::Value> = planned
            .iter()
            .map(|p| {
                serde_json::json!({
                    "Config": blob_name(&p.record.config_digest),
                    "RepoTags": p.record.tag.as_ref().map(|_| vec![familiar_name(&p.record)]).unwrap_or_default(),
                    "Layers": p.layers.iter().map(|l| blob_name(&l.digest)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let data = serde_json::to_vec(&entries).map_err(|e| w(e.into()))?;
        append_bytes(&mut tar, "manifest.json", &data).map_err(w)?;
    }
    tar.into_inner().and_then(|mut o| o.flush()).map_err(w)?;
    Ok(planned
        .into_iter()
        .map(|p| Saved {
            name: p.display,
            manifest_digest: p.manifest_digest,
            config_digest: p.record.config_digest,
            original_blobs: p.original_blobs,
        })
        .collect())
}

fn write_layer<W: Write>(
    tar: &mut tar::Builder<W>,
    p: &Planned,
    l: &PlannedLayer,
) -> Result<(), SaveError> {
    let name = blob_name(&l.digest);
    let corrupt = || SaveError::Corrupt {
        image: p.display.clone(),
        what: "layer",
        digest: l.digest.clone(),
    };
    match &l.source {
        LayerSource::Blob { path } => {
            let f = std::fs::File::open(path).map_err(|e| StoreError::Io {
                action: "cannot open",
                path: path.clone(),
                source: e,
            })?;
            if f.metadata().map(|m| m.len()).ok() != Some(l.size) {
                return Err(corrupt());
            }
            let mut hashing = HashingReader::new(f.take(l.size));
            append_reader(tar, &name, l.size, &mut hashing).map_err(SaveError::Write)?;
            let (digest, _) = hashing.finish().map_err(SaveError::Write)?;
            if digest != l.digest {
                return Err(corrupt());
            }
        }
        LayerSource::Split { layer_dir } => {
            let (mut r, size) =
                tarsplit::reassemble(layer_dir, &l.digest).map_err(|source| SaveError::Layer {
                    image: p.display.clone(),
                    source,
                })?;
            // The reassembly itself fails its last read when the digest is not the diff id.
            append_reader(tar, &name, size, &mut r).map_err(SaveError::Write)?;
        }
    }
    Ok(())
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// `registry/repository:tag` (or without tag).
fn full_name(r: &ImageRecord) -> String {
    match &r.tag {
        Some(t) => format!("{}:{t}", r.name),
        None => r.name.clone(),
    }
}

/// The name as `docker images` shows it (`alpine:3.20`, `me/app:1`): what Docker's
/// `manifest.json` uses in `RepoTags`.
fn familiar_name(r: &ImageRecord) -> String {
    let full = full_name(r);
    match full.parse::<Reference>() {
        Ok(_) => {
            let short = full.strip_prefix("docker.io/").unwrap_or(&full);
            short.strip_prefix("library/").unwrap_or(short).to_string()
        }
        Err(_) => full,
    }
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut h = header(0, 0o755, tar::EntryType::Directory);
    tar.append_data(&mut h, path, io::empty())
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> io::Result<()> {
    append_reader(tar, path, data.len() as u64, &mut &data[..])
}

fn append_reader<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: &mut dyn Read,
) -> io::Result<()> {
    let mut h = header(size, 0o644, tar::EntryType::Regular);
    // Exactly `size` bytes: a source that comes up short fails the save instead of
    // writing a truncated entry.
    let mut exact = ExactReader {
        inner: data,
        left: size,
    };
    tar.append_data(&mut h, path, &mut exact)?;
    if exact.left != 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{path}: source ended early"),
        ));
    }
    Ok(())
}

/// Reads exactly `left` bytes, then reports the end (and errors if the source ends first).
struct ExactReader<'a> {
    inner: &'a mut dyn Read,
    left: u64,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Let a reassembly reach its end record (and digest check).
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "source is longer than its size",
                )),
            };
        }
        let want = usize::try_from(self.left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        Ok(n)
    }
}
