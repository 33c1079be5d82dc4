//! Issue 3, concurrency: two pulls of one image into one store at once (two shells, two
//! systemd units at boot) both succeed, and the registry serves each layer blob once.

use crate::harness::fixture::digest_hex;
use crate::harness::registry::Registry;
use crate::harness::slate::{Slate, TestDir};
use crate::harness::slate_cmd::Running;
use crate::harness::store;
use crate::resume::big_image;

#[test]
fn two_concurrent_pulls_both_succeed_and_fetch_each_layer_once() {
    let work = TestDir::new("concurrent-build");
    let (img, _) = big_image(&work, &[("a.bin", 6), ("b.bin", 6), ("c.bin", 6)]);
    let reg = Registry::private();
    let name = "concurrent/img";
    let reference = reg.push_image(name, "v1", &img);
    let slate = Slate::new("concurrent");

    let first = Running::spawn(&slate, &["pull", "-q", &reference]);
    let second = Running::spawn(&slate, &["pull", "-q", &reference]);
    let a = first.finish();
    let b = second.finish();
    for (which, out) in [("first", &a), ("second", &b)] {
        assert!(
            out.status.success(),
            "the {which} pull failed: {}\n{}",
            out.status,
            out.stderr
        );
        assert_eq!(
            out.stdout.trim(),
            img.manifest_digest,
            "{which} pull's digest"
        );
    }

    let layers: Vec<String> = img.layers.iter().map(|l| l.digest.clone()).collect();
    reg.wait_for_blob_gets(name, &layers);
    for d in &layers {
        assert_eq!(
            reg.blob_gets(name, d),
            1,
            "layer blob {d} was fetched more than once:\n{}",
            reg.log()
        );
    }
    store::assert_consistent(&slate, &img.chain_ids(), &[]);
    assert_eq!(slate.images().len(), 1);
    for c in img.chain_ids() {
        assert!(slate
            .root()
            .join("layers")
            .join(digest_hex(&c))
            .join("layer.json")
            .is_file());
    }
}
