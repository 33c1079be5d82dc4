//! Issue 3, disk: `slate image prune` frees exactly the layers no image uses (and says how
//! much), `-a` everything; `max_store_size` evicts the least recently used image; `system
//! df` reports it; a full disk fails a pull cleanly with nothing half-committed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixtures;
use crate::harness::fixture::{digest_hex, Compression};
use crate::harness::registry::Registry;
use crate::harness::slate::{Slate, TestDir};
use crate::harness::slate_cmd::{run_with, write_config};
use crate::harness::store;
use crate::resume::big_image;

/// Apparent size of a tree's regular files, as the store counts it.
fn tree_bytes(p: &Path) -> u64 {
    let Ok(md) = fs::symlink_metadata(p) else {
        return 0;
    };
    if md.is_file() {
        return md.len();
    }
    if !md.is_dir() {
        return 0;
    }
    fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| tree_bytes(&e.path())).sum())
        .unwrap_or(0)
}

fn df(slate: &Slate) -> serde_json::Value {
    slate
        .run(&["system", "df", "--format", "json"])
        .success()
        .json()
}

#[test]
fn prune_frees_exactly_the_unreferenced_layers() {
    // A pull whose second layer is corrupt leaves its first layer committed but used by no
    // image: exactly what prune is for.
    let work = TestDir::new("prune-build");
    let reg = Registry::private();
    let good = fixtures::small("prune-good", "linux/amd64", Compression::Gzip).image;
    // Random content: shares no layer with `good`.
    let (orphaned, _) = big_image(&work, &[("x.bin", 1), ("y.bin", 1)]);
    let good_ref = reg.push_image("prune/good", "v1", &good);
    let bad_ref = reg.push_image("prune/orphan", "v1", &orphaned);
    let path = reg.blob_data_path(&orphaned.layers[1].digest);
    let mut data = fs::read(&path).expect("blob in registry storage");
    let at = data.len() / 2;
    data[at] ^= 0xff;
    fs::write(&path, data).expect("damaging a blob");

    let slate = Slate::new("prune");
    write_config(&slate, "[pull]\nparallel = 1\n");
    slate.pull(&good_ref, None);
    slate.run(&["pull", &bad_ref]).failure(1);
    store::assert_consistent(
        &slate,
        &[good.chain_ids(), orphaned.chain_ids()[..1].to_vec()].concat(),
        &orphaned.chain_ids()[1..],
    );
    let orphan_chain = digest_hex(&orphaned.chain_ids()[0]).to_string();
    let orphan_dir = slate.root().join("layers").join(&orphan_chain);
    assert!(
        orphan_dir.is_dir(),
        "the first layer of the failed pull was not committed"
    );
    let orphan_bytes = tree_bytes(&orphan_dir);
    let before = store::dir_names(&slate.root().join("layers"));

    let usage = df(&slate);
    assert_eq!(usage["images"], 1);
    assert_eq!(usage["layers"]["reclaimable"], orphan_bytes);

    let out = slate.run(&["image", "prune"]).success();
    let after = store::dir_names(&slate.root().join("layers"));
    let removed: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
    assert_eq!(
        removed,
        vec![&orphan_chain],
        "prune removed other layers than the orphan"
    );
    assert!(
        out.stdout
            .contains(&format!("Total reclaimed space: {}", human(orphan_bytes))),
        "prune does not report {orphan_bytes} bytes freed:\n{}",
        out.stdout
    );
    store::assert_consistent(&slate, &good.chain_ids(), &orphaned.chain_ids());
    assert_eq!(slate.images().len(), 1, "prune without -a removed an image");
    let mnt = slate.mount(&good_ref, "after-prune");
    assert_eq!(
        fs::read_to_string(mnt.join("marker")).expect("marker"),
        "prune-good\n"
    );
    slate.unmount(&mnt);

    // Nothing left to free: 0B.
    let again = slate.run(&["image", "prune"]).success();
    assert!(
        again.stdout.contains("Total reclaimed space: 0B"),
        "{}",
        again.stdout
    );

    // -a: every image and layer goes.
    slate.run(&["image", "prune", "-a"]).success();
    assert!(slate.images().is_empty());
    assert!(store::dir_names(&slate.root().join("layers")).is_empty());
    let usage = df(&slate);
    assert_eq!(usage["layers"]["count"], 0);
}

/// docker-style decimal size, as slate prints it.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[u]
    }
}

#[test]
fn max_store_size_evicts_the_least_recently_used_image() {
    let work = TestDir::new("lru-build");
    let reg = Registry::private();
    let mut refs = Vec::new();
    let mut images = Vec::new();
    for n in ["a", "b", "c"] {
        let (img, _) = big_image(&work, &[(&format!("{n}.bin"), 2)]);
        refs.push(reg.push_image(&format!("lru/{n}"), "v1", &img));
        images.push(img);
    }
    let slate = Slate::new("lru");
    // Room for two 2 MiB images, not three.
    write_config(&slate, "[pull]\nmax_store_size = \"5M\"\n");
    slate.pull(&refs[0], None);
    slate.pull(&refs[1], None);
    // Use a again: b is now the least recently used.
    slate.pull(&refs[0], None);
    let out = slate.run(&["pull", &refs[2]]).success();
    assert!(
        out.stderr.contains("Evicted") && out.stderr.contains("lru/b"),
        "the pull does not say it evicted lru/b:\n{}",
        out.stderr
    );
    let names: Vec<String> = slate
        .images()
        .iter()
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect();
    let host = reg.host();
    assert_eq!(
        names,
        vec![format!("{host}/lru/a"), format!("{host}/lru/c")],
        "not exactly the least recently used image was evicted"
    );
    store::assert_consistent(
        &slate,
        &[images[0].chain_ids(), images[2].chain_ids()].concat(),
        &images[1].chain_ids(),
    );
    let total = df(&slate)["total"].as_u64().expect("df total");
    assert!(
        total <= 5 << 20,
        "store is {total} bytes, over its 5M budget"
    );
}

/// A tmpfs mounted for one test; unmounted (lazily) on Drop, failures included.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&dir).expect("creating the mount point");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("running mount");
        assert!(st.success(), "mounting a tmpfs at {}", dir.display());
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_fails_the_pull_cleanly() {
    let work = TestDir::new("full-disk-build");
    let (img, _) = big_image(&work, &[("fits.bin", 1), ("too-big.bin", 3)]);
    let reg = Registry::private();
    let reference = reg.push_image("full/disk", "v1", &img);
    let slate = Slate::new("full-disk");
    let _tmpfs = Tmpfs::mount(slate.root().to_path_buf(), "2m");
    write_config(&slate, "[pull]\nparallel = 1\n");

    let out = run_with(&slate, &["pull", &reference], "info", &[], None).failure(1);
    out.error_mentions(&["No space left on device"]);
    out.assert_each_cause_once();
    assert!(
        slate.images().is_empty(),
        "a pull that ran out of space listed its image"
    );
    // The layer that fit may be committed; the one that did not must not be, and no debris
    // (work dirs, partial blobs) is left.
    store::assert_consistent(&slate, &img.chain_ids()[..1], &img.chain_ids()[1..]);
    // Once space is freed the store works again.
    slate.run(&["image", "prune"]).success();
    assert!(store::dir_names(&slate.root().join("layers")).is_empty());
}

#[test]
fn layer_blobs_are_dropped_after_unpacking_unless_keep_blobs() {
    let reg = Registry::shared();
    let fx = fixtures::small("keep-blobs", "linux/amd64", Compression::Gzip);
    let reference = reg.push_image("prune/keep-blobs", "v1", &fx.image);
    let layer_blob = |slate: &Slate, d: &str| slate.root().join("blobs/sha256").join(digest_hex(d));

    let default = Slate::new("no-keep-blobs");
    default.pull(&reference, None);
    for l in &fx.image.layers {
        assert!(
            !layer_blob(&default, &l.digest).exists(),
            "layer blob {} kept without keep_blobs",
            l.digest
        );
    }

    let keep = Slate::new("keep-blobs");
    write_config(&keep, "[pull]\nkeep_blobs = true\n");
    keep.pull(&reference, None);
    for l in &fx.image.layers {
        let p = layer_blob(&keep, &l.digest);
        let data = fs::read(&p).unwrap_or_else(|e| panic!("kept blob {}: {e}", p.display()));
        assert_eq!(data, l.blob, "the kept blob is not the blob");
    }
    store::assert_consistent(&keep, &fx.image.chain_ids(), &[]);
    keep.run(&["rmi", &reference]).success();
    for l in &fx.image.layers {
        assert!(
            !layer_blob(&keep, &l.digest).exists(),
            "rmi left the kept blob"
        );
    }
}
