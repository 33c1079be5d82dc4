//! Images without a registry (issue 7 item 4): `oci:DIR[:TAG]` and `oci-archive:FILE[:TAG]`
//! for `pull` and `run`, built here from the harness's fixtures. The import must verify as a
//! registry pull does: a hostile layer, a corrupted blob or a stray archive entry is refused,
//! nothing outside the store changes and nothing is listed.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::harness::fixture::{digest_hex, BuiltImage, Compression, ImageSpec, LayerSpec};
use crate::harness::run_image::{self, host_platform, RunEnv};
use crate::harness::slate::Slate;
use crate::harness::store::{self, Canary};
use crate::harness::tar_writer::{write_tar, Entry};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The files of an OCI layout holding `images`, each annotated with its ref name if given.
pub(crate) fn layout_files(images: &[(&BuiltImage, Option<&str>)]) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let mut manifests = Vec::new();
    for (img, name) in images {
        let mut platform =
            json!({"os": img.platform.os, "architecture": img.platform.architecture});
        if let Some(v) = &img.platform.variant {
            platform["variant"] = json!(v);
        }
        let mut desc = json!({
            "mediaType": img.manifest_media_type,
            "digest": img.manifest_digest,
            "size": img.manifest.len(),
            "platform": platform,
        });
        if let Some(n) = name {
            desc["annotations"] = json!({"org.opencontainers.image.ref.name": n});
        }
        manifests.push(desc);
        let mut blobs = vec![
            (img.manifest_digest.clone(), img.manifest.clone()),
            (img.config_digest.clone(), img.config.clone()),
        ];
        for l in &img.layers {
            blobs.push((l.digest.clone(), l.blob.clone()));
        }
        for (d, data) in blobs {
            files.push((format!("blobs/sha256/{}", digest_hex(&d)), data));
        }
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    files.push((
        "index.json".to_string(),
        serde_json::to_vec_pretty(&index).expect("index JSON"),
    ));
    files
}

fn write_layout(dir: &Path, files: &[(String, Vec<u8>)]) {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("creating the layout");
    for (name, data) in files {
        fs::write(dir.join(name), data).expect("writing a layout file");
    }
}

pub(crate) fn write_archive(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut entries = vec![Entry::dir("blobs"), Entry::dir("blobs/sha256")];
    for (name, data) in files {
        entries.push(Entry::file(name, data));
    }
    fs::write(path, write_tar(&entries)).expect("writing the archive");
}

/// The run fixture's image with one more layer holding `/marker`.
fn marker_image() -> BuiltImage {
    run_image::image(
        run_image::default_config(),
        vec![vec![Entry::file("marker", "from an archive\n")]],
    )
}

fn names(slate: &Slate) -> Vec<String> {
    slate
        .images()
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["name"].as_str().unwrap_or("?"),
                i["tag"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[test]
fn oci_layouts_and_archives_pull_and_run() {
    let img = marker_image();
    let other = ImageSpec::new(vec![LayerSpec::new(
        Compression::Gzip,
        vec![Entry::file("other", "not this one\n")],
    )])
    .platform("linux/s390x")
    .build();
    let slate = Slate::new("archive-pull");

    // A directory with a tagged manifest: named after the directory, tagged by the annotation.
    let dir = slate.dir().subdir("My-Layout");
    write_layout(&dir, &layout_files(&[(&img, Some("v1"))]));
    let digest = slate.pull(&format!("oci:{}", dir.display()), None);
    assert_eq!(digest, img.manifest_digest);
    assert!(
        names(&slate).contains(&"localhost/my-layout:v1".to_string()),
        "{:?}",
        names(&slate)
    );
    let inspected = slate.inspect("localhost/my-layout:v1");
    assert!(
        inspected.to_string().contains(&img.config_digest),
        "inspect shows the config digest: {inspected}"
    );

    // An archive with two platforms and no annotations: the host's is chosen, tagged by the user.
    let tar = slate.dir().path().join("two.tar");
    write_archive(&tar, &layout_files(&[(&other, None), (&img, None)]));
    let digest = slate.pull(&format!("oci-archive:{}:t2", tar.display()), None);
    assert_eq!(digest, img.manifest_digest);
    assert!(names(&slate).contains(&"localhost/two:t2".to_string()));
    store::assert_consistent(&slate, &img.chain_ids(), &[]);

    // A full reference in the annotation names the image; a :TAG picks by annotation.
    let named = slate.dir().path().join("named.tar");
    write_archive(
        &named,
        &layout_files(&[(&img, Some("registry.example/app/marker:1.0"))]),
    );
    slate.pull(&format!("oci-archive:{}:1.0", named.display()), None);
    assert!(names(&slate).contains(&"registry.example/app/marker:1.0".to_string()));
    let out = slate.run(&["pull", &format!("oci-archive:{}:2.0", named.display())]);
    assert!(!out.status.success(), "no manifest is tagged 2.0");
    out.error_mentions(&["2.0"]);
}

#[test]
fn run_takes_an_oci_archive() {
    let img = marker_image();
    let holder = Slate::new("archive-run-files");
    let tar = holder.dir().path().join("marker.tar");
    write_archive(&tar, &layout_files(&[(&img, Some("v1"))]));
    let env = RunEnv::empty("archive", &format!("oci-archive:{}", tar.display()));
    let out = env.run(&[], &["cat", "/marker"]).success();
    assert_eq!(out.stdout, "from an archive\n");
    // Run again: the layers are in the store, the image is the same.
    let out = env.run(&[], &["cat", "/marker"]).success();
    assert_eq!(out.stdout, "from an archive\n");
    assert_eq!(env.slate.images().len(), 1);
}

/// Pulls `archive` expecting a refusal that mentions `needles`; nothing may be listed and
/// only `allowed` layers committed.
fn refused(slate: &Slate, archive: &Path, needles: &[&str], allowed: &[String]) {
    let out = slate.run(&["pull", &format!("oci-archive:{}", archive.display())]);
    assert!(
        !out.status.success(),
        "the archive was imported: {}",
        out.stderr
    );
    out.error_mentions(needles);
    store::assert_consistent(slate, allowed, &[]);
    assert!(slate.images().is_empty(), "{:?}", slate.images());
}

#[test]
fn hostile_and_corrupt_archives_are_refused() {
    let slate = Slate::new("archive-hostile");
    let canary = Canary::new(slate.dir());
    let marker = format!("slate-e2e-archive-escaped-{}", std::process::id());
    let base = vec![Entry::dir("base"), Entry::file("base/ok", "ok\n")];
    let img = ImageSpec::new(vec![
        LayerSpec::new(Compression::Gzip, base),
        LayerSpec::new(
            Compression::Gzip,
            vec![Entry::file(format!("../{marker}"), "escaped\n")],
        ),
    ])
    .platform(host_platform())
    .build();
    let hostile = slate.dir().path().join("hostile.tar");
    write_archive(&hostile, &layout_files(&[(&img, None)]));
    // The good base layer below the hostile one may stay, as in a registry pull.
    let base_layer = img.chain_ids()[..1].to_vec();
    refused(&slate, &hostile, &["../"], &base_layer);
    canary.assert_untouched();
    store::assert_marker_absent(slate.dir().path(), &marker);

    // A layer blob with one byte changed (a layer not in the store yet: one that is would
    // not be read, as in a registry pull).
    let good = ImageSpec::new(vec![LayerSpec::new(
        Compression::None,
        vec![Entry::file("fresh", "not committed before\n")],
    )])
    .platform(host_platform())
    .build();
    let mut files = layout_files(&[(&good, None)]);
    let layer = format!("blobs/sha256/{}", digest_hex(&good.layers[0].digest));
    let blob = files
        .iter_mut()
        .find(|(n, _)| *n == layer)
        .expect("the layer blob");
    // In the file's data, so the tar still parses and only the digests can tell.
    let at = blob
        .1
        .windows(13)
        .position(|w| w == b"not committed")
        .expect("the file data in the layer");
    blob.1[at] ^= 0x20;
    let corrupt = slate.dir().path().join("corrupt.tar");
    write_archive(&corrupt, &files);
    refused(&slate, &corrupt, &["digest mismatch"], &base_layer);

    // Archive entries that are not part of a layout.
    for (what, entry) in [
        ("dotdot", Entry::file(format!("../{marker}"), "x\n")),
        ("stray", Entry::file("etc/passwd", "x\n")),
        ("link", Entry::symlink("index.json", "/etc/passwd")),
    ] {
        let mut entries = vec![entry];
        for (n, d) in layout_files(&[(&good, None)]) {
            entries.push(Entry::file(n, d));
        }
        let path: PathBuf = slate.dir().path().join(format!("{what}.tar"));
        fs::write(&path, write_tar(&entries)).expect("writing the archive");
        refused(&slate, &path, &["refusing archive"], &base_layer);
    }
    canary.assert_untouched();
    store::assert_marker_absent(slate.dir().path(), &marker);
}

#[test]
fn load_reads_an_oci_archive_from_a_file_or_stdin() {
    let img = ImageSpec::new(vec![LayerSpec::new(
        Compression::Gzip,
        vec![Entry::file("loaded", "by slate load\n")],
    )])
    .platform(host_platform())
    .build();
    let slate = Slate::new("archive-load");
    let tar = slate.dir().path().join("img.tar");
    write_archive(
        &tar,
        &layout_files(&[(&img, Some("registry.example/load/me:v3"))]),
    );
    let out = slate
        .run(&["load", "-i", &tar.display().to_string()])
        .success();
    assert_eq!(out.stdout, "Loaded image: registry.example/load/me:v3\n");
    assert!(slate
        .inspect("registry.example/load/me:v3")
        .to_string()
        .contains(&img.manifest_digest));

    // The same archive on stdin, into another store.
    let other = Slate::new("archive-load-stdin");
    let out = std::process::Command::new(crate::harness::slate::SLATE_BIN)
        .arg("--root")
        .arg(other.root())
        .arg("--config")
        .arg(other.dir().path().join("config.toml"))
        .arg("load")
        .stdin(fs::File::open(&tar).expect("opening the archive"))
        .output()
        .expect("running slate load");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Loaded image: registry.example/load/me:v3\n"
    );
    store::assert_consistent(&other, &img.chain_ids(), &[]);
}
