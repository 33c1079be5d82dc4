//! Platform choice from multi-arch indexes: each architecture of the fixture by `--platform`,
//! the arm variant fallback (v7 -> v6 -> v5, never upwards), arm64 with or without `v8`, the
//! host's own platform by default, Docker manifest lists as well as OCI indexes, and the
//! no-match error that lists what the image offers.

use std::fs;

use crate::fixtures;
use crate::harness::fixture::{BuiltIndex, Flavor};
use crate::harness::registry::Registry;
use crate::harness::slate::Slate;
use crate::harness::store;

const FULL: [&str; 4] = [
    "linux/amd64",
    "linux/arm64/v8",
    "linux/arm/v7",
    "linux/arm/v6",
];

/// Pushes `index` as `name:latest` once per test process and returns its reference.
fn push(name: &str, index: &BuiltIndex) -> String {
    Registry::shared().push_index(name, "latest", index)
}

/// Pulls `reference` for `platform` into a fresh store and checks that the image for
/// `index.images[expect]` was chosen: printed digest, listed platform, marker file, inspect.
fn assert_chooses(reference: &str, index: &BuiltIndex, platform: Option<&str>, expect: usize) {
    let want = &index.images[expect];
    let slate = Slate::new("platform");
    let digest = slate.pull(reference, platform);
    assert_eq!(
        digest, want.manifest_digest,
        "--platform {platform:?} chose another manifest than {}",
        want.platform
    );
    let images = slate.images();
    assert_eq!(images.len(), 1, "{images:?}");
    let want_platform = want.platform.to_string();
    assert_eq!(images[0]["platform"].as_str(), Some(want_platform.as_str()));
    assert_eq!(
        images[0]["digest"].as_str(),
        Some(want.manifest_digest.as_str())
    );

    let inspect = slate.inspect(reference);
    assert_eq!(
        inspect["platform"]["os"].as_str(),
        Some(want.platform.os.as_str())
    );
    assert_eq!(
        inspect["platform"]["architecture"].as_str(),
        Some(want.platform.architecture.as_str())
    );
    assert_eq!(
        inspect["platform"]["variant"].as_str(),
        want.platform.variant.as_deref(),
        "variant in inspect: {}",
        inspect["platform"]
    );

    let mnt = slate.mount(reference, "platform");
    let marker = fs::read_to_string(mnt.join("marker")).expect("marker of the chosen image");
    assert_eq!(marker, format!("{want_platform}\n"));
    slate.unmount(&mnt);
    store::assert_consistent(&slate, &want.chain_ids(), &[]);
}

fn full_index() -> (String, BuiltIndex) {
    let index = fixtures::multi_arch(&FULL, Flavor::Oci, true);
    (push("platform/multi", &index), index)
}

#[test]
fn platform_linux_amd64() {
    let (r, i) = full_index();
    assert_chooses(&r, &i, Some("linux/amd64"), 0);
}

#[test]
fn platform_linux_arm64_means_v8() {
    let (r, i) = full_index();
    assert_chooses(&r, &i, Some("linux/arm64"), 1);
}

#[test]
fn platform_linux_arm64_v8() {
    let (r, i) = full_index();
    assert_chooses(&r, &i, Some("linux/arm64/v8"), 1);
}

#[test]
fn platform_linux_arm_v7() {
    let (r, i) = full_index();
    assert_chooses(&r, &i, Some("linux/arm/v7"), 2);
}

#[test]
fn platform_linux_arm_v6() {
    let (r, i) = full_index();
    assert_chooses(&r, &i, Some("linux/arm/v6"), 3);
}

#[test]
fn default_platform_is_the_hosts() {
    let (r, i) = full_index();
    let expect = match std::env::consts::ARCH {
        "x86_64" => 0,
        "aarch64" => 1,
        other => {
            // The fixture has no image for this host: the no-match error is the right answer,
            // and it is tested below; here, say so instead of asserting a wrong choice.
            panic!("no multi-arch fixture entry for host arch {other}");
        }
    };
    assert_chooses(&r, &i, None, expect);
}

#[test]
fn arm_v7_falls_back_to_v6_then_v5() {
    let index = fixtures::multi_arch(
        &["linux/amd64", "linux/arm/v6", "linux/arm/v5"],
        Flavor::Oci,
        true,
    );
    let r = push("platform/arm-v6-v5", &index);
    assert_chooses(&r, &index, Some("linux/arm/v7"), 1);

    let index = fixtures::multi_arch(&["linux/amd64", "linux/arm/v5"], Flavor::Oci, true);
    let r = push("platform/arm-v5", &index);
    assert_chooses(&r, &index, Some("linux/arm/v7"), 1);
    assert_chooses(&r, &index, Some("linux/arm/v6"), 1);
}

#[test]
fn arm64_without_variant_in_the_index_matches_v8() {
    let index = fixtures::multi_arch(&["linux/amd64", "linux/arm64/v8"], Flavor::Oci, false);
    let r = push("platform/arm64-novariant", &index);
    assert_chooses(&r, &index, Some("linux/arm64/v8"), 1);
    assert_chooses(&r, &index, Some("linux/arm64"), 1);
}

#[test]
fn docker_manifest_list_platforms() {
    let index = fixtures::multi_arch(&FULL, Flavor::Docker, true);
    assert_eq!(index.media_type, crate::harness::fixture::DOCKER_LIST);
    let r = push("platform/docker-list", &index);
    assert_chooses(&r, &index, Some("linux/arm/v7"), 2);
    assert_chooses(&r, &index, Some("linux/arm64"), 1);
}

#[test]
fn pull_index_by_digest_chooses_the_platform_manifest() {
    let (_, index) = full_index();
    let by_digest = format!(
        "{}/platform/multi@{}",
        Registry::shared().host(),
        index.digest
    );
    assert_chooses(&by_digest, &index, Some("linux/arm/v6"), 3);
}

/// The no-match error: exit 1, the standard error line, naming the platform asked for, the
/// reference, and every platform the image offers.
fn assert_no_match(reference: &str, platform: &str, offers: &str) {
    let slate = Slate::new("no-match");
    let out = slate
        .run(&["pull", "--platform", platform, reference])
        .failure(1);
    let expected = format!("no image for {platform} in {reference}; it offers {offers}");
    eprintln!("{}", out.error_line());
    out.error_mentions(&[&expected]);
    store::assert_consistent(&slate, &[], &[]);
    assert!(
        slate.images().is_empty(),
        "nothing is listed after a no-match"
    );
}

#[test]
fn no_match_lists_what_the_image_offers() {
    let (r, _) = full_index();
    let offers = "linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6";
    assert_no_match(&r, "linux/riscv64", offers);
    assert_no_match(&r, "linux/ppc64le", offers);
}

#[test]
fn arm_v5_does_not_fall_forward_to_v6_or_v7() {
    let (r, _) = full_index();
    assert_no_match(
        &r,
        "linux/arm/v5",
        "linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6",
    );
    let index = fixtures::multi_arch(&["linux/amd64", "linux/arm/v7"], Flavor::Oci, true);
    let r = push("platform/arm-v7-only", &index);
    assert_no_match(&r, "linux/arm/v6", "linux/amd64, linux/arm/v7");
}
