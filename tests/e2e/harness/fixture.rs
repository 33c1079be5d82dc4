//! Image fixtures built directly as registry objects: layer blobs, image configs, manifests
//! and indexes, with digests computed here, so every byte and media type a test pushes is the
//! one it intends (no docker daemon, no build tool in between).
//!
//! [`ImageSpec`] describes an image (layers of [`Entry`]s, platform, flavour: OCI or Docker
//! media types); [`ImageSpec::build`] turns it into a [`BuiltImage`] whose blobs can be pushed
//! with [`crate::harness::registry::Registry`]. Chain ids and diff ids are computed the way the
//! OCI image spec defines them, so tests can name the store directories they expect.

use std::io::Write;
use std::sync::OnceLock;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::tar_writer::{write_tar, Entry};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The hex part of a `sha256:<hex>` digest.
pub fn digest_hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Chain ids of a layer stack, per the OCI image spec:
/// `ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The payload binary of every fixture: Debian's `busybox-static`.
pub fn busybox() -> &'static [u8] {
    static BUSYBOX: OnceLock<Vec<u8>> = OnceLock::new();
    BUSYBOX.get_or_init(|| {
        let path = std::env::var("SLATE_E2E_BUSYBOX").unwrap_or_else(|_| "/bin/busybox".into());
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "reading {path} (install Debian's busybox-static, or set SLATE_E2E_BUSYBOX): {e}"
            )
        })
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Oci,
    Docker,
}

/// One layer of a fixture: its entries in archive order and how the blob is compressed.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    pub entries: Vec<Entry>,
    pub compression: Compression,
}

impl LayerSpec {
    pub fn new(compression: Compression, entries: Vec<Entry>) -> LayerSpec {
        LayerSpec {
            entries,
            compression,
        }
    }
}

/// A layer as pushed.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
    pub media_type: String,
}

/// `os/arch[/variant]` of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Platform {
        let parts: Vec<&str> = s.split('/').collect();
        assert!(parts.len() == 2 || parts.len() == 3, "platform {s}");
        Platform {
            os: parts[0].into(),
            architecture: parts[1].into(),
            variant: parts.get(2).map(|v| v.to_string()),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Everything that defines a single-platform image.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub layers: Vec<LayerSpec>,
    pub platform: Platform,
    pub flavor: Flavor,
    pub created: Option<String>,
    /// Extra keys merged into the config's `config` object (Env, Cmd, ...).
    pub runtime_config: Value,
}

impl ImageSpec {
    pub fn new(layers: Vec<LayerSpec>) -> ImageSpec {
        ImageSpec {
            layers,
            platform: Platform::parse("linux/amd64"),
            flavor: Flavor::Oci,
            created: Some("2024-01-02T03:04:05Z".into()),
            runtime_config: json!({
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
            }),
        }
    }
    pub fn platform(mut self, p: &str) -> ImageSpec {
        self.platform = Platform::parse(p);
        self
    }
    pub fn flavor(mut self, f: Flavor) -> ImageSpec {
        self.flavor = f;
        self
    }

    pub fn build(&self) -> BuiltImage {
        let layers: Vec<BuiltLayer> = self
            .layers
            .iter()
            .map(|l| build_layer(l, self.flavor))
            .collect();
        self.assemble(layers)
    }

    /// Config and manifest over already built layers (which may be raw, e.g. malformed tars
    /// that no [`Entry`] list describes); `self.layers` is not consulted.
    pub fn assemble(&self, layers: Vec<BuiltLayer>) -> BuiltImage {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let mut config = json!({
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": self.runtime_config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": layers.iter().map(|_| json!({"created_by": "slate e2e fixture"})).collect::<Vec<_>>(),
        });
        if let Some(v) = &self.platform.variant {
            config["variant"] = json!(v);
        }
        if let Some(c) = &self.created {
            config["created"] = json!(c);
        }
        let config = serde_json::to_vec_pretty(&config).expect("serialising a config");
        let config_digest = sha256_digest(&config);
        let (manifest_type, config_type) = match self.flavor {
            Flavor::Oci => (OCI_MANIFEST, OCI_CONFIG),
            Flavor::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG),
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": { "mediaType": config_type, "digest": config_digest, "size": config.len() },
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.digest, "size": l.blob.len(),
            })).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec_pretty(&manifest).expect("serialising a manifest");
        BuiltImage {
            manifest_digest: sha256_digest(&manifest),
            manifest,
            manifest_media_type: manifest_type.to_string(),
            config_digest,
            config,
            layers,
            platform: self.platform.clone(),
        }
    }
}

/// Builds a layer from its entries.
pub fn build_layer(spec: &LayerSpec, flavor: Flavor) -> BuiltLayer {
    raw_layer(write_tar(&spec.entries), spec.compression, flavor)
}

/// A layer from raw tar bytes (which need not be a valid archive).
pub fn raw_layer(tar: Vec<u8>, compression: Compression, flavor: Flavor) -> BuiltLayer {
    let blob = compress(&tar, compression);
    let media_type = match (flavor, compression) {
        (Flavor::Oci, Compression::None) => OCI_LAYER,
        (Flavor::Oci, Compression::Gzip) => OCI_LAYER_GZIP,
        (Flavor::Oci, Compression::Zstd) => OCI_LAYER_ZSTD,
        (Flavor::Docker, Compression::Gzip) => DOCKER_LAYER_GZIP,
        (Flavor::Docker, c) => panic!("docker media types have no {c:?} layer in this harness"),
    };
    BuiltLayer {
        diff_id: sha256_digest(&tar),
        digest: sha256_digest(&blob),
        tar,
        blob,
        media_type: media_type.to_string(),
    }
}

/// Compresses a layer tar (fast levels: fixtures are rebuilt by every test).
pub fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(tar).expect("gzip to memory");
            enc.finish().expect("gzip to memory")
        }
        Compression::Zstd => zstd::stream::encode_all(tar, 1).expect("zstd to memory"),
    }
}

/// An image ready to push.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layers: Vec<BuiltLayer>,
    pub platform: Platform,
}

impl BuiltImage {
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }
    /// Chain ids, one per layer, in order.
    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.diff_ids())
    }
    /// The parsed config, for comparing with what `slate image inspect` reports.
    pub fn config_json(&self) -> Value {
        serde_json::from_slice(&self.config).expect("own config is JSON")
    }
}

/// A multi-platform index (OCI image index or Docker manifest list) over built images.
#[derive(Clone, Debug)]
pub struct BuiltIndex {
    pub index: Vec<u8>,
    pub digest: String,
    pub media_type: String,
    pub images: Vec<BuiltImage>,
}

/// Builds an index over `images`; `platforms[i]` is what the index *says* about image i (it may
/// differ from the image config, e.g. arm64 without a variant).
pub fn build_index(flavor: Flavor, images: Vec<BuiltImage>, platforms: &[Platform]) -> BuiltIndex {
    assert_eq!(images.len(), platforms.len());
    let media_type = match flavor {
        Flavor::Oci => OCI_INDEX,
        Flavor::Docker => DOCKER_LIST,
    };
    let manifests: Vec<Value> = images
        .iter()
        .zip(platforms)
        .map(|(img, p)| {
            let mut platform = json!({"os": p.os, "architecture": p.architecture});
            if let Some(v) = &p.variant {
                platform["variant"] = json!(v);
            }
            json!({
                "mediaType": img.manifest_media_type,
                "digest": img.manifest_digest,
                "size": img.manifest.len(),
                "platform": platform,
            })
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests});
    let index = serde_json::to_vec_pretty(&index).expect("serialising an index");
    BuiltIndex {
        digest: sha256_digest(&index),
        index,
        media_type: media_type.to_string(),
        images,
    }
}

/// A `security.capability` xattr value (VFS_CAP_REVISION_2) granting `cap` permitted and
/// effective, as `setcap cap_xxx+ep` writes it.
pub fn file_capability(cap: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    let magic: u32 = 0x0200_0000 | 0x1; // revision 2, effective bit
    v.extend_from_slice(&magic.to_le_bytes());
    let (lo, hi) = if cap < 32 {
        (1u32 << cap, 0u32)
    } else {
        (0, 1u32 << (cap - 32))
    };
    v.extend_from_slice(&lo.to_le_bytes()); // permitted lo
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable lo
    v.extend_from_slice(&hi.to_le_bytes()); // permitted hi
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable hi
    v
}
