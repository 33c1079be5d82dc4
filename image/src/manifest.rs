//! Manifests: OCI index and manifest, Docker manifest list and v2 schema 2, decoded into
//! oci-spec types; the choice of one platform's manifest from an index; layer media types.
//!
//! Docker's schema 1 is refused: it cannot be verified by digest the way schema 2 is and
//! no registry has served it by default for years.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::digest::{Digest, DigestError};
use crate::platform::Platform;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The `Accept` header for manifest requests: everything we can decode.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Manifests are small; a larger one is hostile or broken.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "{0} uses Docker image manifest schema 1, which slate does not support: push it again with a current docker or skopeo"
    )]
    Schema1(String),
    #[error("unsupported manifest media type {media_type:?} for {reference}")]
    MediaType {
        reference: String,
        media_type: String,
    },
    #[error("malformed manifest for {reference}: {source}")]
    Malformed {
        reference: String,
        source: serde_json::Error,
    },
    #[error("no image for {wanted} in {reference}; it offers {}", offered_list(.offered))]
    NoMatch {
        reference: String,
        wanted: Platform,
        offered: Vec<Platform>,
    },
    #[error("bad digest in manifest of {reference}: {source}")]
    Digest {
        reference: String,
        source: DigestError,
    },
    #[error("unsupported layer media type {media_type:?} in {reference}")]
    LayerType {
        reference: String,
        media_type: String,
    },
    #[error("image {reference} has {layers} layers but its config lists {diff_ids} diff ids")]
    LayerCount {
        reference: String,
        layers: usize,
        diff_ids: usize,
    },
}

fn offered_list(p: &[Platform]) -> String {
    if p.is_empty() {
        return "no platforms".to_string();
    }
    p.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A decoded manifest.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// An OCI index or Docker manifest list: one manifest per platform.
    Index(Box<ImageIndex>),
    /// One image.
    Image(Box<ImageManifest>),
}

/// Decodes `bytes`, served with `content_type` (the registry's word; when absent or
/// generic, the document's own `mediaType` decides).
pub fn parse(
    reference: &str,
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<Manifest, ManifestError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let malformed = |source| ManifestError::Malformed {
        reference: reference.to_string(),
        source,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(malformed)?;
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "text/plain");
    let kind = ct
        .map(str::to_string)
        .or(probe.media_type)
        .unwrap_or_else(|| {
            // Neither header nor field: an OCI index is recognized by its `manifests`.
            if probe.manifests.is_some() {
                OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        });
    if probe.schema_version == Some(1) || kind == DOCKER_SCHEMA1 || kind == DOCKER_SCHEMA1_SIGNED {
        return Err(ManifestError::Schema1(reference.to_string()));
    }
    match kind.as_str() {
        OCI_INDEX | DOCKER_LIST => Ok(Manifest::Index(Box::new(
            serde_json::from_slice(bytes).map_err(malformed)?,
        ))),
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(Manifest::Image(Box::new(
            serde_json::from_slice(bytes).map_err(malformed)?,
        ))),
        other => Err(ManifestError::MediaType {
            reference: reference.to_string(),
            media_type: other.to_string(),
        }),
    }
}

/// The platform a descriptor in an index claims, if it claims one.
pub fn descriptor_platform(d: &Descriptor) -> Option<Platform> {
    let p = d.platform().as_ref()?;
    Some(Platform::new(
        &p.os().to_string(),
        &p.architecture().to_string(),
        p.variant().as_deref(),
    ))
}

/// The digest of a descriptor, as slate's verified type.
pub fn descriptor_digest(reference: &str, d: &Descriptor) -> Result<Digest, ManifestError> {
    d.digest()
        .to_string()
        .parse()
        .map_err(|source| ManifestError::Digest {
            reference: reference.to_string(),
            source,
        })
}

/// Picks `wanted`'s manifest from an index. Attestation manifests (BuildKit's
/// `unknown/unknown`) are never candidates.
pub fn select<'a>(
    reference: &str,
    index: &'a ImageIndex,
    wanted: &Platform,
) -> Result<&'a Descriptor, ManifestError> {
    let candidates: Vec<(&Descriptor, Platform)> = index
        .manifests()
        .iter()
        .filter_map(|d| descriptor_platform(d).map(|p| (d, p)))
        .filter(|(_, p)| p.os != "unknown")
        .collect();
    match wanted.best_match(candidates.iter().map(|(_, p)| p)) {
        Some(i) => Ok(candidates[i].0),
        None => Err(ManifestError::NoMatch {
            reference: reference.to_string(),
            wanted: wanted.clone(),
            offered: candidates.into_iter().map(|(_, p)| p).collect(),
        }),
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a layer's media type; `None` when the type is not a layer slate can unpack.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// From the first bytes of a blob. Registries and build tools do mislabel layers
    /// (a `.tar` type over gzip bytes), so the bytes have the last word, as in docker.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn index_json(media: &str) -> String {
        let entry = |d: &str, arch: &str, variant: Option<&str>| {
            let v = variant
                .map(|v| format!(r#","variant":"{v}""#))
                .unwrap_or_default();
            format!(
                r#"{{"mediaType":"{DOCKER_MANIFEST}","digest":"{d}","size":10,"platform":{{"os":"linux","architecture":"{arch}"{v}}}}}"#
            )
        };
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media}","manifests":[{},{},{},{}]}}"#,
            entry(D1, "amd64", None),
            entry(D2, "arm64", Some("v8")),
            entry(D1, "arm", Some("v7")),
            r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":5,"platform":{"os":"unknown","architecture":"unknown"}}"#
        )
    }

    fn manifest_json(media: Option<&str>) -> String {
        let m = media
            .map(|m| format!(r#""mediaType":"{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{m}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":3}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":4}}]}}"#
        )
    }

    #[test]
    fn decodes_all_four_kinds() {
        for media in [OCI_INDEX, DOCKER_LIST] {
            let j = index_json(media);
            assert!(matches!(
                parse("r", j.as_bytes(), Some(media)).unwrap(),
                Manifest::Index(_)
            ));
            // Without a content type the document's field decides.
            assert!(matches!(
                parse("r", j.as_bytes(), None).unwrap(),
                Manifest::Index(_)
            ));
        }
        for media in [OCI_MANIFEST, DOCKER_MANIFEST] {
            let j = manifest_json(Some(media));
            assert!(matches!(
                parse("r", j.as_bytes(), Some(media)).unwrap(),
                Manifest::Image(_)
            ));
        }
        let j = manifest_json(None);
        assert!(matches!(
            parse("r", j.as_bytes(), Some("application/json")).unwrap(),
            Manifest::Image(_)
        ));
    }

    #[test]
    fn refuses_schema1_and_garbage() {
        let s1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let e = parse("r", s1.as_bytes(), Some(DOCKER_SCHEMA1_SIGNED)).unwrap_err();
        assert!(e.to_string().contains("schema 1"), "{e}");
        let e = parse("r", s1.as_bytes(), None).unwrap_err();
        assert!(matches!(e, ManifestError::Schema1(_)));
        assert!(matches!(
            parse("r", b"not json", None),
            Err(ManifestError::Malformed { .. })
        ));
        assert!(matches!(
            parse("r", b"{}", Some("application/vnd.example+json")),
            Err(ManifestError::MediaType { .. })
        ));
    }

    #[test]
    fn selects_platforms_and_lists_them_when_none_fits() {
        let j = index_json(OCI_INDEX);
        let Manifest::Index(idx) = parse("r", j.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        let pick = |p: &str| select("r", &idx, &p.parse().unwrap()).map(|d| d.digest().to_string());
        assert_eq!(pick("linux/amd64").unwrap(), D1);
        assert_eq!(pick("linux/arm64").unwrap(), D2);
        assert_eq!(
            pick("linux/arm/v6").unwrap_err().to_string(),
            "no image for linux/arm/v6 in r; it offers linux/amd64, linux/arm64/v8, linux/arm/v7"
        );
    }

    #[test]
    fn compression_from_type_and_bytes() {
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_media_type("application/octet-stream"),
            None
        );
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
    }
}
