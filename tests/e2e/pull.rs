//! Pulling the fixtures and looking at them through `slate image mount`: the mount must show
//! exactly the tree each image defines (the fixture's own model), and the same tree as an
//! independent extraction (skopeo + umoci) where umoci supports the format.

use std::fs;
use std::path::Path;

use crate::fixtures::{self, Fixture};
use crate::harness::fixture::{busybox, Compression, Flavor, ImageSpec, LayerSpec};
use crate::harness::registry::Registry;
use crate::harness::slate::Slate;
use crate::harness::store;
use crate::harness::tar_writer::Entry;
use crate::harness::tree::{CompareOptions, Tree};
use crate::harness::umoci;

/// How to treat the independent extraction for a fixture.
#[derive(PartialEq)]
pub(crate) enum Umoci {
    /// Must succeed and match.
    Required,
    /// umoci 0.4.7 may not read this format: compare when it can, say so when it cannot.
    IfSupported,
}

/// Pushes `fx` as `name:v1`, pulls it into a fresh store, mounts it and compares.
pub(crate) fn pull_and_compare(name: &str, fx: &Fixture, umoci_mode: Umoci) {
    let reg = Registry::shared();
    let reference = reg.push_image(name, "v1", &fx.image);
    let slate = Slate::new(&name.replace('/', "-"));

    let digest = slate.pull(&reference, None);
    assert_eq!(
        digest, fx.image.manifest_digest,
        "pull prints the manifest digest"
    );
    store::assert_consistent(&slate, &fx.image.chain_ids(), &[]);
    for c in fx.image.chain_ids() {
        let dir = slate.root().join("layers").join(&c["sha256:".len()..]);
        assert!(dir.is_dir(), "layer {} is not in the store", dir.display());
    }
    // By default compressed blobs are dropped once unpacked (to spare SD cards).
    let kept = store::dir_names(&slate.root().join("blobs/sha256"));
    for l in &fx.image.layers {
        assert!(
            !kept.iter().any(|k| l.digest.ends_with(k.as_str())),
            "layer blob {} was kept in blobs/ under the default config",
            l.digest
        );
    }

    let mnt = slate.mount(&reference, "image");
    let actual = Tree::snapshot(&mnt).expect("snapshot of the mounted image");
    let expected = fx.expected_tree();
    assert!(!expected.nodes.is_empty(), "the fixture defines files");
    let model_diff = expected.diff(&actual, CompareOptions::default());

    let umoci_dir = slate.dir().subdir("umoci");
    let umoci_diff = match umoci::unpack(&reference, None, &umoci_dir) {
        Ok(rootfs) => {
            let theirs = Tree::snapshot(&rootfs).expect("snapshot of umoci's rootfs");
            theirs.diff(&actual, CompareOptions::default())
        }
        Err(e) if umoci_mode == Umoci::IfSupported => {
            eprintln!("note: no independent extraction of {name} (umoci cannot read it): {e}");
            Vec::new()
        }
        Err(e) => panic!("independent extraction of {name}: {e}"),
    };
    assert!(
        model_diff.is_empty() && umoci_diff.is_empty(),
        "slate image mount of {name} differs\n from the fixture's model ({} difference(s)):\n  {}\n from umoci unpack ({} difference(s)):\n  {}",
        model_diff.len(),
        model_diff.join("\n  "),
        umoci_diff.len(),
        umoci_diff.join("\n  ")
    );

    slate.unmount(&mnt);
    assert!(
        store::dir_names(&mnt).is_empty(),
        "the mount point still shows files after unmount"
    );
}

#[test]
fn rich_gzip_image_mounts_exactly_as_defined() {
    pull_and_compare(
        "pull/rich-gzip",
        &fixtures::rich([Compression::Gzip; 3], Flavor::Oci),
        Umoci::Required,
    );
}

#[test]
fn rich_zstd_image_mounts_exactly_as_defined() {
    pull_and_compare(
        "pull/rich-zstd",
        &fixtures::rich([Compression::Zstd; 3], Flavor::Oci),
        Umoci::IfSupported,
    );
}

#[test]
fn rich_uncompressed_image_mounts_exactly_as_defined() {
    pull_and_compare(
        "pull/rich-plain",
        &fixtures::rich([Compression::None; 3], Flavor::Oci),
        Umoci::Required,
    );
}

#[test]
fn rich_image_with_mixed_compression_mounts_exactly_as_defined() {
    pull_and_compare(
        "pull/rich-mixed",
        &fixtures::rich(
            [Compression::Zstd, Compression::None, Compression::Gzip],
            Flavor::Oci,
        ),
        Umoci::IfSupported,
    );
}

#[test]
fn docker_media_type_image_mounts_exactly_as_defined() {
    let fx = fixtures::rich([Compression::Gzip; 3], Flavor::Docker);
    assert_eq!(
        fx.image.manifest_media_type,
        crate::harness::fixture::DOCKER_MANIFEST
    );
    pull_and_compare("pull/rich-docker", &fx, Umoci::Required);
}

#[test]
fn absolute_entry_names_land_inside_the_layer() {
    // Unique per process so a stray host path can be told apart from another run's.
    let top = format!("slate-e2e-abs-{}", std::process::id());
    let fx = Fixture::new(ImageSpec::new(vec![LayerSpec::new(
        Compression::Gzip,
        vec![
            Entry::dir("/bin"),
            Entry::file("/bin/busybox", busybox()).mode(0o755),
            Entry::dir(format!("/{top}")),
            Entry::file(format!("/{top}/file"), "absolute\n"),
            Entry::symlink(format!("/{top}/link"), "file"),
            Entry::dir(format!("./{top}/dotslash")),
        ],
    )]));
    pull_and_compare("pull/absolute-names", &fx, Umoci::Required);
    assert!(
        !Path::new("/").join(&top).exists(),
        "an absolute entry name was written to the host's /{top}"
    );
}

#[test]
fn mount_is_read_only() {
    let reg = Registry::shared();
    let fx = fixtures::small("read-only", "linux/amd64", Compression::Gzip);
    let reference = reg.push_image("pull/read-only", "v1", &fx.image);
    let slate = Slate::new("read-only");
    slate.pull(&reference, None);
    let mnt = slate.mount(&reference, "ro");
    assert_eq!(
        fs::read_to_string(mnt.join("marker")).expect("marker in the mount"),
        "read-only\n"
    );
    let err = fs::write(mnt.join("new-file"), "x").expect_err("writing into a read-only mount");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "writing: {err}");
    let err = fs::remove_file(mnt.join("marker")).expect_err("deleting from a read-only mount");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "deleting: {err}");
    slate.unmount(&mnt);
    // The store is untouched by the attempts.
    slate
        .run(&["image", "mount", &reference, &mnt.display().to_string()])
        .success();
    assert_eq!(
        fs::read_to_string(mnt.join("marker")).expect("marker after remount"),
        "read-only\n"
    );
    assert!(!mnt.join("new-file").exists());
    slate.unmount(&mnt);
}

#[test]
fn pull_by_digest_and_by_tag_and_digest() {
    let reg = Registry::shared();
    let fx = fixtures::small("by-digest", "linux/amd64", Compression::Zstd);
    reg.push_image("pull/by-digest", "v1", &fx.image);
    let by_digest = format!("{}/pull/by-digest@{}", reg.host(), fx.image.manifest_digest);
    let slate = Slate::new("by-digest");
    assert_eq!(slate.pull(&by_digest, None), fx.image.manifest_digest);
    let mnt = slate.mount(&by_digest, "d");
    assert_eq!(
        fs::read_to_string(mnt.join("marker")).expect("marker"),
        "by-digest\n"
    );
    slate.unmount(&mnt);

    let both = format!(
        "{}/pull/by-digest:v1@{}",
        reg.host(),
        fx.image.manifest_digest
    );
    assert_eq!(slate.pull(&both, None), fx.image.manifest_digest);
}

#[test]
fn pull_without_quiet_reports_progress_on_stderr_and_digest_last_on_stdout() {
    let reg = Registry::shared();
    let fx = fixtures::small("progress", "linux/amd64", Compression::Gzip);
    let reference = reg.push_image("pull/progress", "v1", &fx.image);
    let slate = Slate::new("progress");
    let out = slate.run(&["pull", &reference]).success();
    assert_eq!(out.last_stdout_line(), fx.image.manifest_digest);
    assert!(
        !out.stderr.trim().is_empty(),
        "pull without -q prints no progress on stderr"
    );
    // A second pull of the same image reuses the store and prints the same digest.
    let again = slate.run(&["pull", &reference]).success();
    assert_eq!(again.last_stdout_line(), fx.image.manifest_digest);
    store::assert_consistent(&slate, &fx.image.chain_ids(), &[]);
}

#[test]
fn layers_already_in_the_store_are_not_fetched_again() {
    let reg = Registry::shared();
    // Identical first layers (same bytes, same chain id), different second layers.
    let a = fixtures::small("fetch-once-a", "linux/amd64", Compression::Gzip).image;
    let b = fixtures::small("fetch-once-b", "linux/amd64", Compression::Gzip).image;
    assert_eq!(a.layers[0].digest, b.layers[0].digest);
    let (na, nb) = ("pull/fetch-once-a", "pull/fetch-once-b");
    let ra = reg.push_image(na, "v1", &a);
    let rb = reg.push_image(nb, "v1", &b);
    let a_layers: Vec<String> = a.layers.iter().map(|l| l.digest.clone()).collect();

    let slate = Slate::new("fetch-once");
    slate.pull(&ra, None);
    reg.wait_for_blob_gets(na, &a_layers);
    slate.pull(&ra, None);
    slate.pull(&rb, None);
    reg.wait_for_blob_gets(nb, std::slice::from_ref(&b.layers[1].digest));
    for d in &a_layers {
        assert_eq!(
            reg.blob_gets(na, d),
            1,
            "layer {d} was fetched again though its layer is in the store"
        );
    }
    assert_eq!(
        reg.blob_gets(nb, &b.layers[0].digest),
        0,
        "the layer b shares with a was fetched again for b"
    );
    store::assert_consistent(&slate, &[a.chain_ids(), b.chain_ids()].concat(), &[]);
    assert_eq!(slate.images().len(), 2);
}

#[test]
fn concurrent_pulls_into_one_store_agree() {
    let reg = Registry::shared();
    let fx = fixtures::rich([Compression::Gzip; 3], Flavor::Oci);
    let reference = reg.push_image("pull/concurrent", "v1", &fx.image);
    let slate = Slate::new("concurrent");
    let digests: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| slate.pull(&reference, None)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a concurrent pull panicked"))
            .collect()
    });
    assert!(digests.iter().all(|d| *d == fx.image.manifest_digest));
    store::assert_consistent(&slate, &fx.image.chain_ids(), &[]);
    assert_eq!(slate.images().len(), 1);
    let mnt = slate.mount(&reference, "concurrent");
    let actual = Tree::snapshot(&mnt).expect("snapshot of the mounted image");
    fx.expected_tree()
        .assert_matches(&actual, CompareOptions::default(), "after concurrent pulls");
    slate.unmount(&mnt);
}
