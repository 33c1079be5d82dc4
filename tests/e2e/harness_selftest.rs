//! Checks of the harness itself, without slate: the registry accepts the fixtures, and an
//! independent client (skopeo + umoci) unpacks them to exactly the modelled tree. When these
//! fail, the fixture or the model is wrong, not slate.

use crate::fixtures;
use crate::harness::fixture::{Compression, Flavor};
use crate::harness::registry::Registry;
use crate::harness::slate::TestDir;
use crate::harness::tree::{CompareOptions, Tree};
use crate::harness::umoci;

#[test]
fn registry_answers_and_keeps_access_log() {
    let reg = Registry::shared();
    let fx = fixtures::small("selftest", "linux/amd64", Compression::Gzip);
    let reference = reg.push_image("selftest/small", "v1", &fx.image);
    assert!(reference.starts_with("127.0.0.1:"));
    let log = reg.log();
    assert!(
        log.contains("PUT /v2/selftest/small/manifests/v1"),
        "access log lacks the manifest PUT:\n{log}"
    );
    let data = std::fs::read(reg.blob_data_path(&fx.image.layers[0].digest))
        .expect("the registry stores the blob where blob_data_path says");
    assert_eq!(data, fx.image.layers[0].blob);
}

#[test]
fn umoci_unpacks_the_rich_fixture_to_the_model() {
    let reg = Registry::shared();
    let fx = fixtures::rich([Compression::Gzip; 3], Flavor::Oci);
    let reference = reg.push_image("selftest/rich", "v1", &fx.image);
    let dir = TestDir::new("selftest-umoci");
    let rootfs = umoci::unpack(&reference, None, dir.path()).expect("skopeo + umoci");
    let actual = Tree::snapshot(&rootfs).expect("snapshot of umoci's rootfs");
    fx.expected_tree().assert_matches(
        &actual,
        CompareOptions::default(),
        "umoci unpack vs the fixture's model",
    );
}
