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
use crate::manifest::{self, Compression, Manifest, ManifestError, MAX_MANIFEST_SIZE};
use crate::pull::{self, Progress, PullError, PullOptions, Pulled, Resolved};
use crate::reference::Reference;
use crate::store::{ImageRecord, LayerRecord, Store, StoreError};
use crate::unpack::{Budgeted, HEADER_BUDGET};

/// The annotation that names a manifest in an OCI layout's index (a tag, or a full name).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The full image name that Docker 25+ and containerd write beside a tag-only [`REF_NAME`].
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Space an archive import leaves free on the store's filesystem.
const DISK_RESERVE: u64 = 64 << 20;
/// `manifest.json` of a `docker save` archive is small; so are its entries' names.
const MAX_DOCKER_MANIFEST_SIZE: u64 = 4 << 20;
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

/// Imports every image of an OCI layout archive or `docker save` archive read from
/// `input` (`slate load`).
pub fn load_archive(
    store: &Store,
    input: impl Read,
    label: &Path,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Vec<Pulled>, ArchiveError> {
    let work = store.temp_dir("archive")?;
    extract_layout(input, &label.display().to_string(), work.path())?;
    import_all(store, work.path(), &base_name(label), opts, progress)
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
    for d in ["blobs", "blobs/sha256", "docker"] {
        std::fs::create_dir(dest.join(d)).map_err(io_err("cannot create", dest))?;
    }
    // Archives may come compressed (`docker save | gzip`, `.tar.zst` on a stick), as docker
    // load accepts them: the first bytes tell.
    let mut input = input;
    let mut head = [0u8; 4];
    let got = read_head(&mut input, &mut head).map_err(read_err)?;
    let input = BufReader::new(std::io::Cursor::new(head[..got].to_vec()).chain(input));
    let input: Box<dyn Read> = match Compression::sniff(&head[..got]) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(read_err)?)
        }
        Compression::None => Box::new(input),
    };
    let mut aliases = std::collections::HashMap::new();
    // The first name that belongs to a `docker save` archive only: stray in an OCI one.
    let mut stray: Option<String> = None;
    // As for layers: the tar crate reads long names and PAX records whole into memory, so
    // the metadata between two entries is bounded (a compressed archive could otherwise
    // inflate one long-name record to gigabytes).
    let budget = std::cell::Cell::new(HEADER_BUDGET);
    let mut archive = tar::Archive::new(Budgeted {
        inner: input,
        budget: &budget,
    });
    let mut entries = archive.entries().map_err(read_err)?;
    loop {
        budget.set(HEADER_BUDGET);
        let next = entries.next();
        budget.set(u64::MAX);
        let Some(entry) = next else { break };
        let mut entry = entry.map_err(read_err)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut name = raw.as_str();
        while let Some(rest) = name.strip_prefix("./") {
            name = rest;
        }
        let name = name.trim_end_matches('/');
        let kind = entry.header().entry_type();
        if kind.is_dir() && ["", ".", "blobs", "blobs/sha256"].contains(&name) {
            continue;
        }
        let oci = name == "oci-layout"
            || name == "index.json"
            || name
                .strip_prefix("blobs/sha256/")
                .is_some_and(|h| format!("sha256:{h}").parse::<Digest>().is_ok());
        // Anything else may be part of a `docker save` archive (`manifest.json`,
        // `<id>/layer.tar`, `<hex>.json`): kept under docker/, read only if there is no
        // OCI index. Its names are one or two plain components, nothing else.
        if !oci && !docker_name(name) {
            return Err(hostile(
                &raw,
                "not a file of an OCI layout or a docker save archive",
            ));
        }
        if !oci && name != "manifest.json" && name != "repositories" && stray.is_none() {
            stray = Some(raw.clone());
        }
        if kind.is_dir() {
            if name.contains('/') {
                return Err(hostile(&raw, "not a directory of a docker save archive"));
            }
            mkdir_once(&dest.join("docker").join(name))?;
            continue;
        }
        if kind.is_symlink() && !oci {
            // Older `docker save` links a layer it already wrote (`b/layer.tar ->
            // ../a/layer.tar`). Kept as a name-to-name alias; nothing is linked on disk.
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            let resolved = resolve_alias(name, &target)
                .ok_or_else(|| hostile(&raw, "link points outside the archive's own files"))?;
            if aliases.insert(name.to_string(), resolved).is_some() {
                return Err(hostile(&raw, "given twice"));
            }
            continue;
        }
        if !kind.is_file() {
            return Err(hostile(
                &raw,
                "only regular files belong in an image archive",
            ));
        }
        let path = if oci {
            dest.join(name)
        } else {
            // Archives need not list a directory before the files in it.
            if let Some((dir, _)) = name.split_once('/') {
                mkdir_once(&dest.join("docker").join(dir))?;
            }
            dest.join("docker").join(name)
        };
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
        // The archive says how large each file is before it is written: refuse one that
        // would fill the store's filesystem (a small compressed archive can inflate to
        // anything) rather than leave the board without space.
        // (The casts are not no-ops on 32-bit targets, where both fields are 32-bit.)
        #[allow(clippy::unnecessary_cast)]
        let free = nix::sys::statvfs::statvfs(dest)
            .map(|v| (v.blocks_available() as u64).saturating_mul(v.fragment_size() as u64))
            .unwrap_or(u64::MAX);
        if entry.size() > free.saturating_sub(DISK_RESERVE) {
            return Err(ArchiveError::Layout {
                layout: label.to_string(),
                reason: format!(
                    "entry {raw:?} is {} bytes and the store's filesystem has {free} bytes free",
                    entry.size()
                ),
            });
        }
        std::io::copy(&mut entry, &mut out).map_err(io_err("cannot write", &path))?;
    }
    if dest.join("index.json").exists() {
        // Docker 25+ writes manifest.json and repositories beside an OCI layout; anything
        // else there is not part of what is imported and refuses the archive.
        if let Some(s) = stray {
            return Err(hostile(&s, "not a file of an OCI layout"));
        }
    } else if dest.join("docker/manifest.json").exists() {
        docker_to_layout(dest, label, &aliases)?;
    } else {
        return Err(ArchiveError::Layout {
            layout: label.to_string(),
            reason: "it has neither index.json (OCI image layout) nor manifest.json (docker save)"
                .to_string(),
        });
    }
    Ok(())
}

/// Fills `head` from `r` as far as the stream goes (a pipe may deliver fewer bytes at once);
/// returns how many it got.
fn read_head(r: &mut impl Read, head: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn mkdir_once(path: &Path) -> Result<(), ArchiveError> {
    match std::fs::create_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(io_err("cannot create", path)(e))
        }
        _ => Ok(()),
    }
}

/// A name that may appear in a `docker save` archive: one or two components of letters,
/// digits, `.`, `_`, `-`, not starting with `.`.
fn docker_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 128
                && !p.starts_with('.')
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

/// Resolves a link target of a `docker save` archive (relative to the link's directory)
/// to another name of the archive, lexically; `None` if it leaves the archive.
fn resolve_alias(link: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    let resolved = parts.join("/");
    docker_name(&resolved).then_some(resolved)
}

/// Turns the `docker save` archive extracted under `dest/docker/` into an OCI layout in
/// `dest` (what `import_dir` reads): every file `manifest.json` names is hashed and moved
/// to `blobs/sha256/<hex>`, and a manifest per image and an `index.json` naming each of its
/// `RepoTags` are written. The layers are then verified against the config's diff ids
/// like any other layer; a config named `<hex>.json` must have that digest.
fn docker_to_layout(
    dest: &Path,
    label: &str,
    aliases: &std::collections::HashMap<String, String>,
) -> Result<(), ArchiveError> {
    use oci_spec::image::{DescriptorBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType};

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let bad = |reason: String| ArchiveError::Layout {
        layout: label.to_string(),
        reason,
    };
    let hostile = |entry: &str, reason| ArchiveError::Hostile {
        archive: label.to_string(),
        entry: entry.to_string(),
        reason,
    };
    let docker = dest.join("docker");
    let list_path = docker.join("manifest.json");
    let mut list = Vec::new();
    std::fs::File::open(&list_path)
        .and_then(|f| f.take(MAX_DOCKER_MANIFEST_SIZE).read_to_end(&mut list))
        .map_err(io_err("cannot read", &list_path))?;
    let entries: Vec<Entry> =
        serde_json::from_slice(&list).map_err(|e| bad(format!("manifest.json: {e}")))?;
    let blobs = dest.join("blobs/sha256");
    // name in the archive -> (digest, size, first bytes)
    let mut moved: std::collections::HashMap<String, (Digest, u64, [u8; 4])> =
        std::collections::HashMap::new();
    let mut blob_of = |name: &str| -> Result<(Digest, u64, [u8; 4]), ArchiveError> {
        let mut resolved = name.to_string();
        for _ in 0..8 {
            match aliases.get(&resolved) {
                Some(t) => resolved = t.clone(),
                None => break,
            }
        }
        if !docker_name(&resolved) {
            return Err(hostile(
                name,
                "manifest.json names a path outside the archive",
            ));
        }
        if let Some(m) = moved.get(&resolved) {
            return Ok(m.clone());
        }
        let path = docker.join(&resolved);
        let f = std::fs::File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                hostile(name, "manifest.json names a file the archive does not hold")
            } else {
                io_err("cannot open", &path)(e)
            }
        })?;
        let mut head = [0u8; 4];
        let mut hashing = crate::digest::HashingReader::new(BufReader::new(f));
        // The first bytes tell the compression.
        read_head(&mut hashing, &mut head).map_err(io_err("cannot read", &path))?;
        let (digest, size) = hashing.finish().map_err(io_err("cannot read", &path))?;
        let to = blobs.join(digest.hex());
        if !to.exists() {
            std::fs::rename(&path, &to).map_err(io_err("cannot move", &path))?;
        }
        let m = (digest, size, head);
        moved.insert(resolved, m.clone());
        Ok(m)
    };
    let invalid = |e: oci_spec::OciSpecError| bad(e.to_string());
    let mut descriptors = Vec::new();
    for e in &entries {
        let (config_digest, config_size, _) = blob_of(&e.config)?;
        // Docker names the config by its digest: a config that is not what its name says
        // was changed after `docker save`.
        if let Some(hex) = e
            .config
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_suffix(".json"))
        {
            if hex.len() == 64 && hex != config_digest.hex() {
                return Err(hostile(
                    &e.config,
                    "config does not match the digest it is named by",
                ));
            }
        }
        let mut layers = Vec::new();
        for l in &e.layers {
            let (digest, size, head) = blob_of(l)?;
            let media_type = match Compression::sniff(&head) {
                Compression::Gzip => MediaType::ImageLayerGzip,
                Compression::Zstd => MediaType::ImageLayerZstd,
                Compression::None => MediaType::ImageLayer,
            };
            layers.push(
                DescriptorBuilder::default()
                    .media_type(media_type)
                    .digest(oci_digest(&digest))
                    .size(size)
                    .build()
                    .map_err(invalid)?,
            );
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(
                DescriptorBuilder::default()
                    .media_type(MediaType::ImageConfig)
                    .digest(oci_digest(&config_digest))
                    .size(config_size)
                    .build()
                    .map_err(invalid)?,
            )
            .layers(layers)
            .build()
            .map_err(invalid)?;
        let bytes = serde_json::to_vec(&manifest).map_err(|e| bad(e.to_string()))?;
        let digest = Digest::of(&bytes);
        let path = blobs.join(digest.hex());
        std::fs::write(&path, &bytes).map_err(io_err("cannot write", &path))?;
        let names: Vec<Option<String>> = match e.repo_tags.as_deref() {
            Some(tags) if !tags.is_empty() => tags.iter().cloned().map(Some).collect(),
            _ => vec![None],
        };
        for n in names {
            let mut b = DescriptorBuilder::default()
                .media_type(MediaType::ImageManifest)
                .digest(oci_digest(&digest))
                .size(bytes.len() as u64);
            if let Some(n) = n {
                let r: Reference = n
                    .parse()
                    .map_err(|_| bad(format!("manifest.json: {n:?} is not an image name")))?;
                let full = match r.tag() {
                    Some(t) => format!("{}:{t}", r.name()),
                    None => r.name(),
                };
                b = b.annotations(std::collections::HashMap::from([(
                    CONTAINERD_NAME.to_string(),
                    full,
                )]));
            }
            descriptors.push(b.build().map_err(invalid)?);
        }
    }
    if descriptors.is_empty() {
        return Err(bad("manifest.json lists no image".to_string()));
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .manifests(descriptors)
        .build()
        .map_err(invalid)?;
    let index_path = dest.join("index.json");
    std::fs::write(
        &index_path,
        serde_json::to_vec(&index).map_err(|e| bad(e.to_string()))?,
    )
    .map_err(io_err("cannot write", &index_path))?;
    let layout_path = dest.join("oci-layout");
    std::fs::write(&layout_path, br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(io_err("cannot write", &layout_path))?;
    Ok(())
}

pub(crate) fn oci_digest(d: &Digest) -> oci_spec::image::Digest {
    // A Digest is always a valid sha256 digest, which oci-spec accepts.
    oci_spec::image::Digest::try_from(d.to_string())
        .unwrap_or_else(|_| unreachable!("sha256 digests are valid OCI digests"))
}

/// `localhost/<name>` from a path's base name.
fn base_name(path: &Path) -> String {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let base = [".tar", ".tar.gz", ".tgz", ".tar.zst"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))
        .unwrap_or(&base);
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

fn annotation<'a>(d: &'a Descriptor, key: &str) -> Option<&'a str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    annotation(d, REF_NAME)
}

/// The full image name a descriptor carries: Docker's and containerd's own annotation, else
/// a ref.name that is a full reference.
fn descriptor_name(d: &Descriptor) -> Option<Reference> {
    annotation(d, CONTAINERD_NAME)
        .and_then(|n| n.parse().ok())
        .or_else(|| ref_name(d).and_then(full_reference))
}

/// The tag a descriptor carries (from its full name, else its tag-only ref.name).
fn descriptor_tag(d: &Descriptor) -> Option<String> {
    match descriptor_name(d) {
        Some(r) => r.tag().map(str::to_string),
        None => ref_name(d).map(str::to_string),
    }
}

/// What tells the images of a layout apart: their name, or for unnamed ones nothing (the
/// platforms of one image).
fn image_key(d: &Descriptor) -> String {
    match descriptor_name(d) {
        Some(r) => format!("{}:{}", r.name(), r.tag().unwrap_or("")),
        None => match ref_name(d) {
            Some(n) => n.to_string(),
            // Unnamed and not one platform of several (`docker save ID1 ID2`): an image
            // of its own.
            None if d.platform().is_none() => d.digest().to_string(),
            None => String::new(),
        },
    }
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
    let index = read_index(dir, &name)?;

    // The user's :TAG picks by annotation; a layout without annotations takes it as its tag.
    let mut candidates: Vec<Descriptor> = index.manifests().clone();
    if let Some(t) = tag {
        let named: Vec<Descriptor> = candidates
            .iter()
            .filter(|d| descriptor_tag(d).as_deref() == Some(t))
            .cloned()
            .collect();
        if !named.is_empty() || candidates.iter().any(|d| descriptor_tag(d).is_some()) {
            candidates = named;
        }
    }
    let mut keys: Vec<String> = candidates.iter().map(image_key).collect();
    keys.sort();
    keys.dedup();
    if keys.len() > 1 {
        return Err(bad(format!(
            "it holds {} images ({}): name one with :TAG, or load them all with `slate load`",
            keys.len(),
            keys.join(", ")
        )));
    }
    import_candidates(store, dir, &name, candidates, tag, opts, progress)
}

/// Reads `index.json` of the layout in `dir` and imports every image it names (`slate
/// load`), each as [`import_layout`] would with its own tag.
fn import_all(
    store: &Store,
    dir: &Path,
    base: &str,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Vec<Pulled>, ArchiveError> {
    let name = format!("localhost/{base}");
    let index = read_index(dir, &name)?;
    let mut groups: Vec<(String, Vec<Descriptor>)> = Vec::new();
    for d in index.manifests() {
        let key = image_key(d);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(d.clone()),
            None => groups.push((key, vec![d.clone()])),
        }
    }
    if groups.is_empty() {
        return Err(ArchiveError::Layout {
            layout: name,
            reason: "index.json lists no manifest".to_string(),
        });
    }
    let several = groups.len() > 1;
    groups
        .into_iter()
        .map(|(_, candidates)| {
            // Several images and this one unnamed: tagged by its digest, so that it does
            // not take the name (localhost/<file>:latest) of another.
            let own_tag = match candidates.first() {
                Some(d) if several && descriptor_tag(d).is_none() => {
                    let hex = d.digest().digest();
                    Some(hex.get(..12).unwrap_or(hex).to_string())
                }
                _ => None,
            };
            import_candidates(
                store,
                dir,
                &name,
                candidates,
                own_tag.as_deref(),
                opts,
                progress,
            )
        })
        .collect()
}

fn read_index(dir: &Path, name: &str) -> Result<ImageIndex, ArchiveError> {
    let bad = |reason: String| ArchiveError::Layout {
        layout: name.to_string(),
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
    serde_json::from_slice(&index_bytes).map_err(|e| bad(format!("index.json: {e}")))
}

/// Imports one image: `candidates` are its manifests (one per platform, or one index).
fn import_candidates(
    store: &Store,
    dir: &Path,
    name: &str,
    mut candidates: Vec<Descriptor>,
    tag: Option<&str>,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled, ArchiveError> {
    let name = name.to_string();
    let bad = |reason: String| ArchiveError::Layout {
        layout: name.clone(),
        reason,
    };
    let blobs = dir.join("blobs/sha256");
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
            let narrowed = oci_spec::image::ImageIndexBuilder::default()
                .schema_version(2u32)
                .manifests(candidates)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            manifest::select(&name, &narrowed, &wanted)?.clone()
        }
    };
    let record_name = descriptor_name(&chosen).map_or_else(|| name.clone(), |r| r.name());
    let record_tag = tag
        .map(str::to_string)
        .or_else(|| descriptor_tag(&chosen))
        .unwrap_or_else(|| "latest".to_string());
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
        pull::import_layer(store, &display, layer, progress, BufReader::new(f), None)
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
