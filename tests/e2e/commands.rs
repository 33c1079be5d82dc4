//! `slate images --format json`, `slate image inspect` and `slate rmi` per the CLI contract.

use std::fs;

use serde_json::Value;

use crate::fixtures;
use crate::harness::fixture::{busybox, digest_hex, Compression, ImageSpec, LayerSpec};
use crate::harness::registry::Registry;
use crate::harness::slate::Slate;
use crate::harness::store;
use crate::harness::tar_writer::Entry;

#[test]
fn images_json_lists_each_pulled_image() {
    let reg = Registry::shared();
    let a = fixtures::small("a", "linux/amd64", Compression::Gzip);
    let ra = reg.push_image("cmd/images-a", "v1", &a.image);
    let mut b_spec = fixtures::small("b", "linux/amd64", Compression::Zstd).spec;
    b_spec.created = None;
    let b = b_spec.build();
    let rb = reg.push_image("cmd/images-b", "latest", &b);

    let slate = Slate::new("images");
    assert!(slate.images().is_empty(), "a new store lists no images");
    slate.pull(&ra, None);
    slate.pull(&rb, None);

    let images = slate.images();
    assert_eq!(images.len(), 2, "{images:?}");
    let find = |name: &str| -> Value {
        images
            .iter()
            .find(|i| i["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed: {images:?}"))
            .clone()
    };
    let ia = find(&format!("{}/cmd/images-a", reg.host()));
    assert_eq!(ia["tag"], "v1");
    assert_eq!(
        ia["digest"].as_str(),
        Some(a.image.manifest_digest.as_str())
    );
    assert_eq!(ia["platform"], "linux/amd64");
    let created = ia["created"]
        .as_str()
        .expect("created is a string when the config has it");
    assert!(
        created == "2024-01-02T03:04:05Z" || created == "2024-01-02T03:04:05+00:00",
        "created: {created}"
    );
    let size = ia["size"].as_u64().expect("size is a number");
    assert!(
        size >= busybox().len() as u64,
        "unpacked size {size} is less than the busybox it contains ({})",
        busybox().len()
    );

    let ib = find(&format!("{}/cmd/images-b", reg.host()));
    assert_eq!(ib["tag"], "latest");
    assert_eq!(ib["digest"].as_str(), Some(b.manifest_digest.as_str()));
    assert!(
        ib["created"].is_null(),
        "created without a config date: {}",
        ib["created"]
    );
}

#[test]
fn inspect_reports_config_and_layers() {
    let reg = Registry::shared();
    let img = ImageSpec::new(vec![
        LayerSpec::new(
            Compression::Gzip,
            vec![
                Entry::dir("bin"),
                Entry::file("bin/busybox", busybox()).mode(0o755),
            ],
        ),
        LayerSpec::new(Compression::Zstd, vec![Entry::file("z", "zstd layer\n")]),
        LayerSpec::new(Compression::None, vec![Entry::file("p", "plain layer\n")]),
    ])
    .platform("linux/arm/v7")
    .build();
    let reference = reg.push_image("cmd/inspect", "v2", &img);
    let slate = Slate::new("inspect");
    slate.pull(&reference, Some("linux/arm/v7"));

    let v = slate.inspect(&reference);
    assert_eq!(
        v["name"].as_str(),
        Some(format!("{}/cmd/inspect", reg.host()).as_str())
    );
    assert_eq!(v["tag"], "v2");
    assert_eq!(v["digest"].as_str(), Some(img.manifest_digest.as_str()));
    assert_eq!(v["platform"]["os"], "linux");
    assert_eq!(v["platform"]["architecture"], "arm");
    assert_eq!(v["platform"]["variant"], "v7");
    assert_eq!(
        v["config"],
        img.config_json(),
        "config is the image config as pulled"
    );

    let layers = v["layers"].as_array().expect("layers is an array");
    assert_eq!(layers.len(), img.layers.len());
    let chain = img.chain_ids();
    for (i, (got, want)) in layers.iter().zip(&img.layers).enumerate() {
        assert_eq!(
            got["digest"].as_str(),
            Some(want.digest.as_str()),
            "layer {i} digest"
        );
        assert_eq!(
            got["diff_id"].as_str(),
            Some(want.diff_id.as_str()),
            "layer {i} diff_id"
        );
        assert_eq!(
            got["chain_id"].as_str(),
            Some(chain[i].as_str()),
            "layer {i} chain_id"
        );
        assert_eq!(
            got["size"].as_u64(),
            Some(want.blob.len() as u64),
            "layer {i} size (the blob's size, as in the manifest)"
        );
    }

    // Inspect by digest names the same image.
    let by_digest = format!("{}/cmd/inspect@{}", reg.host(), img.manifest_digest);
    assert_eq!(slate.inspect(&by_digest)["digest"], v["digest"]);
}

#[test]
fn inspect_and_mount_of_an_unknown_image_fail_cleanly() {
    let reg = Registry::shared();
    let slate = Slate::new("unknown");
    let missing = reg.reference("cmd/never-pulled", "v1");
    let out = slate.run(&["image", "inspect", &missing]).failure(1);
    out.error_mentions(&["cmd/never-pulled"]);
    let dir = slate.dir().subdir("mnt");
    let out = slate
        .run(&["image", "mount", &missing, &dir.display().to_string()])
        .failure(1);
    out.error_mentions(&["cmd/never-pulled"]);
    let out = slate.run(&["rmi", &missing]).failure(1);
    out.error_mentions(&["cmd/never-pulled"]);
}

#[test]
fn pull_of_a_missing_tag_fails_and_lists_nothing() {
    let reg = Registry::shared();
    let slate = Slate::new("missing-tag");
    let missing = reg.reference("cmd/no-such-repo", "v1");
    let out = slate.run(&["pull", &missing]).failure(1);
    out.error_mentions(&["cmd/no-such-repo"]);
    assert!(slate.images().is_empty());
    store::assert_consistent(&slate, &[], &[]);
}

#[test]
fn rmi_removes_the_record_and_only_unshared_layers() {
    let reg = Registry::shared();
    // Same first layer (identical bytes, so the same chain id), different second layers.
    let a = fixtures::small("rmi-a", "linux/amd64", Compression::Gzip).image;
    let b = fixtures::small("rmi-b", "linux/amd64", Compression::Gzip).image;
    assert_eq!(a.chain_ids()[0], b.chain_ids()[0]);
    let ra = reg.push_image("cmd/rmi-a", "v1", &a);
    let rb = reg.push_image("cmd/rmi-b", "v1", &b);

    let slate = Slate::new("rmi");
    slate.pull(&ra, None);
    slate.pull(&rb, None);
    let layers = |s: &Slate| store::dir_names(&s.root().join("layers"));
    let hex = |c: &String| digest_hex(c).to_string();
    let mut all = vec![
        hex(&a.chain_ids()[0]),
        hex(&a.chain_ids()[1]),
        hex(&b.chain_ids()[1]),
    ];
    all.sort();
    assert_eq!(layers(&slate), all, "three distinct layers after two pulls");

    slate.run(&["rmi", &ra]).success();
    let images = slate.images();
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(
        images[0]["digest"].as_str(),
        Some(b.manifest_digest.as_str())
    );
    let mut left = vec![hex(&b.chain_ids()[0]), hex(&b.chain_ids()[1])];
    left.sort();
    assert_eq!(
        layers(&slate),
        left,
        "the shared layer stays, a's own layer goes"
    );
    let mnt = slate.mount(&rb, "b");
    assert_eq!(
        fs::read_to_string(mnt.join("marker")).expect("marker"),
        "rmi-b\n"
    );
    slate.unmount(&mnt);

    // Removing it again is an error, and does not disturb b.
    slate.run(&["rmi", &ra]).failure(1);

    slate.run(&["rmi", &rb]).success();
    assert!(slate.images().is_empty());
    assert!(
        layers(&slate).is_empty(),
        "layers left after the last rmi: {:?}",
        layers(&slate)
    );
    store::assert_consistent(&slate, &[], &[]);
}

#[test]
fn re_pulling_a_moved_tag_replaces_the_record() {
    let reg = Registry::shared();
    let old = fixtures::small("old", "linux/amd64", Compression::Gzip).image;
    let new = fixtures::small("new", "linux/amd64", Compression::Gzip).image;
    let name = "cmd/moved-tag";
    let reference = reg.push_image(name, "v1", &old);
    let slate = Slate::new("moved-tag");
    assert_eq!(slate.pull(&reference, None), old.manifest_digest);
    reg.push_image(name, "v1", &new);
    assert_eq!(slate.pull(&reference, None), new.manifest_digest);
    let images = slate.images();
    assert_eq!(images.len(), 1, "one record per name:tag: {images:?}");
    assert_eq!(
        images[0]["digest"].as_str(),
        Some(new.manifest_digest.as_str())
    );
    let mnt = slate.mount(&reference, "moved");
    assert_eq!(
        fs::read_to_string(mnt.join("marker")).expect("marker"),
        "new\n"
    );
    slate.unmount(&mnt);
}

#[test]
fn one_image_mounted_twice_and_unmount_errors() {
    let reg = Registry::shared();
    let img = fixtures::small("twice", "linux/amd64", Compression::Gzip).image;
    let reference = reg.push_image("cmd/mount-twice", "v1", &img);
    let slate = Slate::new("mount-twice");
    slate.pull(&reference, None);
    let m1 = slate.mount(&reference, "one");
    let m2 = slate.mount(&reference, "two");
    slate.unmount(&m1);
    assert_eq!(
        fs::read_to_string(m2.join("marker")).expect("the other mount still works"),
        "twice\n"
    );
    slate.unmount(&m2);
    // Unmounting what is not mounted is an error naming the directory.
    let out = slate
        .run(&["image", "unmount", &m1.display().to_string()])
        .failure(1);
    out.error_mentions(&[&m1.display().to_string()]);
}

#[test]
fn invalid_references_get_a_clear_error() {
    let slate = Slate::new("bad-refs");
    for bad in [
        "Upper/Case",
        "127.0.0.1:5000/a:b:c",
        "127.0.0.1:5000/a@sha256:123",
        "a//b",
        "a:",
    ] {
        let out = slate.run(&["pull", bad]).failure(1);
        out.error_mentions(&[bad]);
    }
    store::assert_consistent(&slate, &[], &[]);
    assert!(slate.images().is_empty());
}

/// Issue 11: `image mount` onto a symlink would mount over wherever it points (a symlink in
/// /tmp made by another user, to /etc); `image unmount` of a mount slate did not make would
/// unmount the user's own file systems.
#[test]
fn issue11_image_mount_refuses_symlinks_and_unmount_only_its_own() {
    use crate::harness::slate::is_mount_point;
    let reg = Registry::shared();
    let img = fixtures::small("own-mounts", "linux/amd64", Compression::Gzip).image;
    let reference = reg.push_image("cmd/own-mounts", "v1", &img);
    let slate = Slate::new("own-mounts");
    slate.pull(&reference, None);

    // A symlink to a directory: refused, and nothing is mounted where it points.
    let real = slate.dir().subdir("victim");
    let link = slate.dir().path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let out = slate
        .run(&["image", "mount", &reference, &link.display().to_string()])
        .failure(1);
    out.error_mentions(&[&link.display().to_string(), "symlink"]);
    assert!(!is_mount_point(&real), "mounted through the symlink");
    // A regular file is not a directory.
    let file = slate.dir().path().join("file");
    fs::write(&file, "x").expect("file");
    slate
        .run(&["image", "mount", &reference, &file.display().to_string()])
        .failure(1)
        .error_mentions(&["not a directory"]);

    // A tmpfs of the user's: `image unmount` leaves it alone and says why.
    let tmpfs = slate.dir().subdir("users-tmpfs");
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&tmpfs)
        .status()
        .expect("mount");
    assert!(st.success());
    let out = slate
        .run(&["image", "unmount", &tmpfs.display().to_string()])
        .failure(1);
    out.error_mentions(&["not an image slate mounted"]);
    assert!(is_mount_point(&tmpfs), "the user's tmpfs was unmounted");

    // An image mounted from another store is that store's to unmount.
    let other = Slate::new("own-mounts-other");
    other.pull(&reference, None);
    let theirs = other.mount(&reference, "theirs");
    slate
        .run(&["image", "unmount", &theirs.display().to_string()])
        .failure(1)
        .error_mentions(&["not an image slate mounted"]);
    assert!(is_mount_point(&theirs));
    other.unmount(&theirs);

    // A symlink to its own mount is refused too; the mount itself unmounts.
    let mine = slate.mount(&reference, "mine");
    let via = slate.dir().path().join("via");
    std::os::unix::fs::symlink(&mine, &via).expect("symlink");
    slate
        .run(&["image", "unmount", &via.display().to_string()])
        .failure(1)
        .error_mentions(&["symlink"]);
    slate.unmount(&mine);
    // The tmpfs goes with the test dir (TestDir unmounts what is below it).
}
