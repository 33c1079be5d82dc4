//! Blobs the registry serves corrupted: the image is pushed intact to a private registry, then
//! the blob's `data` file in the registry's storage is overwritten (same length or not), so the
//! registry serves other bytes under the right digest. The pull must fail with a digest error
//! naming the blob, commit nothing of it, list nothing; once the blob is restored the same
//! store pulls the image fine.

use std::fs;

use crate::harness::fixture::{busybox, digest_hex, BuiltImage, Compression, ImageSpec, LayerSpec};
use crate::harness::registry::Registry;
use crate::harness::slate::Slate;
use crate::harness::store;
use crate::harness::tar_writer::Entry;

/// A two-layer image whose second layer is uncompressed, so a flipped byte still decompresses
/// and parses as tar: only the digest can catch it.
fn image() -> BuiltImage {
    ImageSpec::new(vec![
        LayerSpec::new(
            Compression::Gzip,
            vec![
                Entry::dir("bin"),
                Entry::file("bin/busybox", busybox()).mode(0o755),
            ],
        ),
        LayerSpec::new(
            Compression::None,
            vec![Entry::file(
                "payload",
                "the original payload of this layer\n",
            )],
        ),
    ])
    .build()
}

enum Damage {
    /// Replace a byte string inside the blob by another of the same length.
    Replace(&'static [u8], &'static [u8]),
    /// Append bytes after the end of the archive.
    Longer,
    /// Drop the end-of-archive blocks.
    Shorter,
}

fn damage(data: &[u8], how: &Damage) -> Vec<u8> {
    let mut d = data.to_vec();
    match how {
        Damage::Replace(needle, with) => {
            assert_eq!(needle.len(), with.len());
            let at = d
                .windows(needle.len())
                .position(|w| w == *needle)
                .expect("the text to damage is in the blob");
            d[at..at + needle.len()].copy_from_slice(with);
        }
        Damage::Longer => d.extend_from_slice(&[0u8; 1024]),
        Damage::Shorter => d.truncate(d.len() - 1024),
    }
    d
}

fn assert_digest_error(out: &crate::harness::slate::Output, digest: &str) {
    eprintln!("{}", out.error_line());
    let line = out.error_line().to_lowercase();
    assert!(
        line.contains("digest") || line.contains("size") || line.contains("length"),
        "the error does not say the blob failed verification:\n  {line}"
    );
    assert!(
        line.contains(&digest_hex(digest)[..12]),
        "the error does not name the blob {digest}:\n  {line}"
    );
}

/// Pushes, damages the blob `digest`, pulls (must fail), restores, pulls (must work).
fn corrupt_and_pull(
    label: &str,
    img: &BuiltImage,
    digest: &str,
    how: Damage,
    allowed: &[String],
    forbidden: &[String],
) {
    let reg = Registry::private();
    let name = format!("corrupt/{label}");
    let reference = reg.push_image(&name, "v1", img);
    let path = reg.blob_data_path(digest);
    let original = fs::read(&path).expect("the pushed blob in registry storage");
    fs::write(&path, damage(&original, &how)).expect("damaging the blob");

    let slate = Slate::new(label);
    let out = slate.run(&["pull", &reference]).failure(1);
    assert_digest_error(&out, digest);
    store::assert_consistent(&slate, allowed, forbidden);
    store::assert_not_listed(&slate, &format!("{}/{name}", reg.host()));
    assert!(
        store::dir_names(&slate.root().join("images"))
            .iter()
            .all(|n| !n.contains("corrupt")),
        "an image record was written for a failed pull"
    );

    fs::write(&path, &original).expect("restoring the blob");
    assert_eq!(slate.pull(&reference, None), img.manifest_digest);
    assert_eq!(slate.images().len(), 1);
    let mnt = slate.mount(&reference, "restored");
    assert_eq!(
        fs::read_to_string(mnt.join("payload")).expect("payload"),
        "the original payload of this layer\n"
    );
    slate.unmount(&mnt);
}

#[test]
fn layer_served_with_flipped_bytes_fails_with_a_digest_error() {
    let img = image();
    let chain = img.chain_ids();
    let bad = img.layers[1].digest.clone();
    corrupt_and_pull(
        "layer-same-length",
        &img,
        &bad,
        Damage::Replace(b"original", b"ORIGINAL"),
        &chain[..1],
        &chain[1..],
    );
}

#[test]
fn layer_served_longer_fails_with_a_digest_error() {
    let img = image();
    let chain = img.chain_ids();
    let bad = img.layers[1].digest.clone();
    corrupt_and_pull(
        "layer-longer",
        &img,
        &bad,
        Damage::Longer,
        &chain[..1],
        &chain[1..],
    );
}

#[test]
fn layer_served_truncated_fails_with_a_digest_error() {
    let img = image();
    let chain = img.chain_ids();
    let bad = img.layers[1].digest.clone();
    corrupt_and_pull(
        "layer-shorter",
        &img,
        &bad,
        Damage::Shorter,
        &chain[..1],
        &chain[1..],
    );
}

#[test]
fn config_served_with_flipped_bytes_fails_with_a_digest_error() {
    let img = image();
    let bad = img.config_digest.clone();
    // The diff ids come from the config: nothing may be committed before it is verified.
    let chain = img.chain_ids();
    corrupt_and_pull(
        "config",
        &img,
        &bad,
        Damage::Replace(b"fixture", b"FIXTURE"),
        &[],
        &chain,
    );
}

/// Replaces one space of a pretty-printed manifest's indentation with a tab: still valid JSON
/// of the same length, so only the digest tells.
fn damage_manifest(reg: &Registry, digest: &str) -> (std::path::PathBuf, Vec<u8>) {
    let path = reg.blob_data_path(digest);
    let original = fs::read(&path).expect("the pushed manifest in registry storage");
    fs::write(
        &path,
        damage(&original, &Damage::Replace(b"\n  \"", b"\n \t\"")),
    )
    .expect("damaging the manifest");
    (path, original)
}

fn assert_manifest_refused(slate: &Slate, args: &[&str], digest: &str, name: &str, reg: &Registry) {
    let out = slate.run(args).failure(1);
    assert_digest_error(&out, digest);
    store::assert_consistent(slate, &[], &[]);
    store::assert_not_listed(slate, &format!("{}/{name}", reg.host()));
}

#[test]
fn manifest_served_corrupted_is_refused() {
    let reg = Registry::private();
    let img = image();
    let name = "corrupt/manifest";
    let reference = reg.push_image(name, "v1", &img);
    let (path, original) = damage_manifest(&reg, &img.manifest_digest);
    let slate = Slate::new("corrupt-manifest");

    let by_digest = format!("{}/{name}@{}", reg.host(), img.manifest_digest);
    assert_manifest_refused(
        &slate,
        &["pull", &by_digest],
        &img.manifest_digest,
        name,
        &reg,
    );
    // By tag the registry still announces the original digest (Docker-Content-Digest); bytes
    // that do not match it are as corrupt as by digest.
    let (announced, served) = reg.get_manifest_digests(name, "v1", &img.manifest_media_type);
    assert_eq!(announced.as_deref(), Some(img.manifest_digest.as_str()));
    assert_ne!(
        served, img.manifest_digest,
        "the registry serves the damaged bytes"
    );
    assert_manifest_refused(
        &slate,
        &["pull", &reference],
        &img.manifest_digest,
        name,
        &reg,
    );

    fs::write(&path, &original).expect("restoring the manifest");
    assert_eq!(slate.pull(&reference, None), img.manifest_digest);
}

#[test]
fn platform_manifest_served_corrupted_under_an_index_is_refused() {
    let reg = Registry::private();
    let index = crate::fixtures::multi_arch(
        &["linux/amd64", "linux/arm64/v8"],
        crate::harness::fixture::Flavor::Oci,
        true,
    );
    let name = "corrupt/index-child";
    let reference = reg.push_index(name, "latest", &index);
    let child = &index.images[0];
    let (path, original) = damage_manifest(&reg, &child.manifest_digest);
    let slate = Slate::new("corrupt-index-child");
    assert_manifest_refused(
        &slate,
        &["pull", "--platform", "linux/amd64", &reference],
        &child.manifest_digest,
        name,
        &reg,
    );
    fs::write(&path, &original).expect("restoring the manifest");
    assert_eq!(
        slate.pull(&reference, Some("linux/amd64")),
        child.manifest_digest
    );
}
