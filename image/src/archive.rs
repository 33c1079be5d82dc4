//! Images without a registry: import an OCI image layout (a directory holding `oci-layout`,
//! `index.json` and `blobs/sha256/<hex>`), or a tar archive of one, into the store.
//!
//! The import is held to the same rules as a registry pull and shares its code: manifest
//! and config are read bounded and checked against their digests, the platform is chosen
//! with [`manifest::select`] when the layout offers several, and every layer blob goes
//! through the pull's own pipeline ([`pull::import_layer`]: sha256 of the blob, size,
//! decompress, sha256 of the tar against the config's diff id, the hardened unpacker,
//! commit under the layer lock); the image record is written last, so a refused layout
//! lists nothing.
//!
//! An archive is unpacked first into a work directory under `<root>/tmp/`, and only names
//! of a layout are accepted: `oci-layout`, `index.json`, the `blobs/` and `blobs/sha256/`
//! directories and regular files `blobs/sha256/<64 hex>`. `manifest.json` and
//! `repositories` (what `docker save` adds beside an OCI layout since Docker 25) are skipped
//! unread; any other entry, any link or device, and any name given twice refuses the
//! archive before anything is imported.
//!
//! Naming: the chosen manifest's `org.opencontainers.image.ref.name` annotation names the
//! image when it is a full reference (`docker.io/library/alpine:3.20`); otherwise the image
//! is `localhost/<name>:<tag>`, `<name>` being the layout directory's or archive file's
//! base name (lowercased, without `.tar`) and `<tag>` the `:TAG` asked for, else the
//! annotation, else `latest`. A `:TAG` asked for picks the manifest whose annotation is that
//! tag (or a full reference with that tag).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex};

use crate::digest::Digest;
use crate::manifest::{self, Manifest, ManifestError, MAX_MANIFEST_SIZE};
use crate::pull::{self, Progress, PullError, PullOptions, Pulled, Resolved};
use crate::reference::Reference;
use crate::store::{ImageRecord, LayerRecord, Store, StoreError};

/// The annotation that names a manifest in an OCI layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Image configs are small; anything larger is hostile (as in a pull).
const MAX_CONFIG_SIZE: u64 = 8 << 20;
/// `index.json` is small too.
const MAX_INDEX_SIZE: u64 = 4 << 20;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing archive {archive}: entry {entry:?}: {reason}; nothing was stored")]
    Hostile {
        archive: String,
        entry: String,
        reason: &'static str,
    },
    #[error("{layout} is not a usable OCI image layout: {reason}")]
    Layout { layout: String, reason: String },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |source| ArchiveError::Io {
        action,
        path,
        source,
    }
}

/// Splits `oci:DIR[:TAG]` / `oci-archive:FILE[:TAG]` after the prefix into path and tag. A
/// last `:` part is a tag only when it looks like one (no `/`), so `dir:with:colons/x` works.
pub fn split_tag(spec: &str) -> (&str, Option<&str>) {
    match spec.rsplit_once(':') {
        Some((path, tag))
            if !path.is_empty()
                && !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            (path, Some(tag))
        }
        _ => (spec, None),
    }
}

/// Imports the OCI layout in directory `dir`. `tag` is the `:TAG` the user gave, if any.
pub fn import_layout(
    store: &Store,
    dir: &Path,
    tag: Option<&str>,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled, ArchiveError> {
    import_dir(store, dir, &base_name(dir), tag, opts, progress)
}

/// Imports an OCI layout archive (tar) read from `input`; `label` names it in messages and,
/// through its base name, names the image when the layout does not.
pub fn import_archive(
    store: &Store,
    input: impl Read,
    label: &Path,
    tag: Option<&str>,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled, ArchiveError> {
    let work = store.temp_dir("archive")?;
    extract_layout(input, &label.display().to_string(), work.path())?;
    import_dir(store, work.path(), &base_name(label), tag, opts, progress)
}

/// Unpacks the layout entries of a tar into `dest` (an empty directory), refusing anything
/// that is not part of an OCI layout.
fn extract_layout(input: impl Read, label: &str, dest: &Path) -> Result<(), ArchiveError> {
    let hostile = |entry: &str, reason| ArchiveError::Hostile {
        archive: label.to_string(),
        entry: entry.to_string(),
        reason,
    };
    let read_err = |source| ArchiveError::Io {
        action: "cannot read archive",
        path: PathBuf::from(label),
        source,
    };
    std::fs::create_dir(dest.join("blobs")).map_err(io_err("cannot create", dest))?;
    std::fs::create_dir(dest.join("blobs/sha256")).map_err(io_err("cannot create", dest))?;
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut name = raw.as_str();
        while let Some(rest) = name.strip_prefix("./") {
            name = rest;
        }
        let name = name.trim_end_matches('/');
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            if ["", ".", "blobs", "blobs/sha256"].contains(&name) {
                continue;
            }
            return Err(hostile(&raw, "not a directory of an OCI layout"));
        }
        if name == "manifest.json" || name == "repositories" {
            // docker save's own index beside the OCI one: not needed, not extracted.
            continue;
        }
        let allowed = name == "oci-layout"
            || name == "index.json"
            || name
                .strip_prefix("blobs/sha256/")
                .is_some_and(|h| format!("sha256:{h}").parse::<Digest>().is_ok());
        if !allowed {
            return Err(hostile(&raw, "not a file of an OCI layout"));
        }
        if !kind.is_file() {
            return Err(hostile(&raw, "only regular files belong in an OCI layout"));
        }
        let path = dest.join(name);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    hostile(&raw, "given twice")
                } else {
                    io_err("cannot create", &path)(e)
                }
            })?;
        std::io::copy(&mut entry, &mut out).map_err(io_err("cannot write", &path))?;
    }
    Ok(())
}

/// `localhost/<name>` from a path's base name.
fn base_name(path: &Path) -> String {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let base = base.strip_suffix(".tar").unwrap_or(&base);
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if clean.is_empty() {
        "image".to_string()
    } else {
        clean.to_string()
    }
}

/// Reads a blob of the layout, at most `max` bytes, and checks its digest.
fn read_blob(
    blobs: &Path,
    name: &str,
    what: &str,
    digest: &Digest,
    max: u64,
) -> Result<Vec<u8>, ArchiveError> {
    let path = blobs.join(digest.hex());
    let f = std::fs::File::open(&path).map_err(io_err("cannot open blob", &path))?;
    let mut data = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut data)
        .map_err(io_err("cannot read blob", &path))?;
    if data.len() as u64 > max {
        return Err(ArchiveError::Layout {
            layout: name.to_string(),
            reason: format!("{what} {digest} is larger than {max} bytes"),
        });
    }
    let actual = Digest::of(&data);
    if &actual != digest {
        return Err(PullError::DigestMismatch {
            reference: name.to_string(),
            what: what.to_string(),
            expected: digest.clone(),
            actual,
        }
        .into());
    }
    Ok(data)
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

/// A ref.name annotation that is a full reference (has a `/` or `:`), parsed.
fn full_reference(annotation: &str) -> Option<Reference> {
    if annotation.contains('/') || annotation.contains(':') {
        annotation.parse().ok()
    } else {
        None
    }
}

fn import_dir(
    store: &Store,
    dir: &Path,
    base: &str,
    tag: Option<&str>,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled, ArchiveError> {
    let name = format!("localhost/{base}");
    let bad = |reason: String| ArchiveError::Layout {
        layout: name.clone(),
        reason,
    };
    let layout_file = dir.join("oci-layout");
    let layout = std::fs::read(&layout_file).map_err(io_err("cannot read", &layout_file))?;
    let version: serde_json::Value =
        serde_json::from_slice(&layout).map_err(|e| bad(format!("oci-layout: {e}")))?;
    if version.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
        return Err(bad("oci-layout is not imageLayoutVersion 1.0.0".to_string()));
    }
    let index_file = dir.join("index.json");
    let mut index_bytes = Vec::new();
    std::fs::File::open(&index_file)
        .and_then(|f| f.take(MAX_INDEX_SIZE).read_to_end(&mut index_bytes))
        .map_err(io_err("cannot read", &index_file))?;
    let index: ImageIndex =
        serde_json::from_slice(&index_bytes).map_err(|e| bad(format!("index.json: {e}")))?;
    let blobs = dir.join("blobs/sha256");

    // The user's :TAG picks by annotation; a layout without annotations takes it as its tag.
    let mut candidates: Vec<Descriptor> = index.manifests().clone();
    if let Some(t) = tag {
        let named: Vec<Descriptor> = candidates
            .iter()
            .filter(|d| {
                ref_name(d).is_some_and(|r| {
                    r == t || full_reference(r).is_some_and(|f| f.tag() == Some(t))
                })
            })
            .cloned()
            .collect();
        if !named.is_empty() || candidates.iter().any(|d| ref_name(d).is_some()) {
            candidates = named;
        }
    }
    let wanted = opts
        .platform
        .clone()
        .unwrap_or_else(crate::platform::Platform::host);
    let chosen: Descriptor = match candidates.len() {
        0 => {
            return Err(bad(match tag {
                Some(t) => format!("no manifest is tagged {t}"),
                None => "index.json lists no manifest".to_string(),
            }))
        }
        1 => candidates.remove(0),
        _ => {
            let mut narrowed = index.clone();
            narrowed.set_manifests(candidates);
            manifest::select(&name, &narrowed, &wanted)?.clone()
        }
    };
    let annotation = ref_name(&chosen).map(str::to_string);
    let (record_name, record_tag) = match annotation.as_deref().and_then(full_reference) {
        Some(r) => (r.name(), tag.or(r.tag()).unwrap_or("latest").to_string()),
        None => (
            name.clone(),
            tag.or(annotation.as_deref())
                .unwrap_or("latest")
                .to_string(),
        ),
    };
    let display = format!("{record_name}:{record_tag}");

    // The chosen descriptor may be a manifest or a (multi-platform) index.
    let mut digest = manifest::descriptor_digest(&display, &chosen)?;
    let mut bytes = read_blob(&blobs, &display, "manifest", &digest, MAX_MANIFEST_SIZE)?;
    let mut nested_index: Option<(Digest, Vec<u8>)> = None;
    let image = match manifest::parse(&display, &bytes, Some(chosen.media_type().as_ref()))? {
        Manifest::Image(m) => m,
        Manifest::Index(idx) => {
            let desc = manifest::select(&display, &idx, &wanted)?;
            let inner = manifest::descriptor_digest(&display, desc)?;
            let inner_bytes = read_blob(&blobs, &display, "manifest", &inner, MAX_MANIFEST_SIZE)?;
            nested_index = Some((digest, bytes));
            digest = inner;
            bytes = inner_bytes;
            match manifest::parse(&display, &bytes, Some(desc.media_type().as_ref()))? {
                Manifest::Image(m) => m,
                Manifest::Index(_) => {
                    return Err(bad("an index points to another index".to_string()))
                }
            }
        }
    };
    let config_digest = manifest::descriptor_digest(&display, image.config())?;
    let config = read_blob(&blobs, &display, "config", &config_digest, MAX_CONFIG_SIZE)?;
    let parts = pull::image_parts(&display, &image, &config, opts, nested_index.is_some())?;
    let record = ImageRecord {
        name: record_name,
        tag: Some(record_tag),
        digest,
        index_digest: nested_index.as_ref().map(|(d, _)| d.clone()),
        platform: parts.platform,
        config_digest,
        layers: parts.layers,
        created: parts.created,
        pulled_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        unpacked_size: 0,
        last_used: crate::store::now_ms(),
    };
    let resolved = Resolved {
        record,
        manifest: bytes,
        index: nested_index.map(|(_, b)| b),
        config,
    };
    let fetch_one = |layer: &LayerRecord| -> Result<(), PullError> {
        let _lock = store.lock_layer(&layer.chain_id)?;
        if store.has_layer(&layer.chain_id) {
            return Ok(());
        }
        let path = blobs.join(layer.digest.hex());
        let f = std::fs::File::open(&path).map_err(|source| PullError::Work {
            reference: display.clone(),
            digest: layer.digest.clone(),
            source,
        })?;
        pull::import_layer(store, &display, layer, progress, BufReader::new(f))
    };
    Ok(pull::fetch_with(
        store, resolved, opts, progress, &fetch_one,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_only_when_they_look_like_tags() {
        assert_eq!(split_tag("/a/b:v1"), ("/a/b", Some("v1")));
        assert_eq!(split_tag("/a/b"), ("/a/b", None));
        assert_eq!(split_tag("/a:b/c"), ("/a:b/c", None));
        assert_eq!(split_tag("img.tar"), ("img.tar", None));
    }

    #[test]
    fn base_names_are_valid_repository_names() {
        assert_eq!(base_name(Path::new("/x/My Image.tar")), "my-image");
        assert_eq!(base_name(Path::new("/")), "image");
        assert_eq!(base_name(Path::new("alpine")), "alpine");
    }
}
