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

/// umoci's rootfs of `fx` must equal the model; `None` when umoci cannot read the format.
fn umoci_matches_model(name: &str, fx: &fixtures::Fixture) -> Option<()> {
    let reg = Registry::shared();
    let reference = reg.push_image(name, "v1", &fx.image);
    let dir = TestDir::new("selftest-umoci");
    let rootfs = match umoci::unpack(&reference, None, dir.path()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("umoci cannot unpack {name}: {e}");
            return None;
        }
    };
    let actual = Tree::snapshot(&rootfs).expect("snapshot of umoci's rootfs");
    fx.expected_tree().assert_matches(
        &actual,
        CompareOptions::default(),
        "umoci unpack vs the fixture's model",
    );
    Some(())
}

#[test]
fn umoci_unpacks_the_rich_fixtures_to_the_model() {
    for (name, c, flavor) in [
        ("selftest/rich-gzip", [Compression::Gzip; 3], Flavor::Oci),
        ("selftest/rich-plain", [Compression::None; 3], Flavor::Oci),
        (
            "selftest/rich-docker",
            [Compression::Gzip; 3],
            Flavor::Docker,
        ),
    ] {
        umoci_matches_model(name, &fixtures::rich(c, flavor))
            .unwrap_or_else(|| panic!("umoci must read {name}"));
    }
}

#[test]
fn umoci_unpacks_zstd_to_the_model_if_it_can() {
    // umoci 0.4.7 may not know zstd layers; when it does, it must agree with the model.
    let fx = fixtures::rich([Compression::Zstd; 3], Flavor::Oci);
    if umoci_matches_model("selftest/rich-zstd", &fx).is_none() {
        // Without umoci, at least the blobs must decompress to the tars the model was made from.
        for l in &fx.image.layers {
            let tar = zstd::stream::decode_all(&l.blob[..]).expect("zstd blob decodes");
            assert_eq!(tar, l.tar);
        }
    }
}

#[test]
fn a_failing_test_leaves_no_mount_and_no_files() {
    let reg = Registry::shared();
    let fx = fixtures::small("cleanup", "linux/amd64", Compression::Gzip);
    let reference = reg.push_image("selftest/cleanup", "v1", &fx.image);
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let slate = crate::harness::slate::Slate::new("cleanup");
        slate.pull(&reference, None);
        let mnt = slate.mount(&reference, "left-mounted");
        seen = Some((slate.dir().path().to_path_buf(), mnt));
        panic!("deliberate failure with an image mounted");
    }));
    assert!(result.is_err(), "the closure panicked");
    let (dir, mnt) = seen.expect("the closure got as far as mounting");
    assert!(
        !crate::harness::slate::is_mount_point(&mnt),
        "{} is still mounted after the test failed",
        mnt.display()
    );
    assert!(
        crate::harness::slate::mounts_below(&dir).is_empty(),
        "mounts left below {}",
        dir.display()
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

/// The checks the hostile tests rely on do catch what they look for.
#[test]
fn canary_and_marker_checks_catch_escapes() {
    use crate::harness::store::{assert_marker_absent, Canary};
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let dir = TestDir::new("selftest-canary");
    let caught = |f: &dyn Fn()| catch_unwind(AssertUnwindSafe(f)).is_err();

    let canary = Canary::new(&dir);
    canary.assert_untouched();
    std::fs::write(canary.dir.join("victim"), "changed\n").expect("changing the victim");
    assert!(caught(&|| canary.assert_untouched()), "a changed file");

    let dir2 = TestDir::new("selftest-canary-link");
    let canary = Canary::new(&dir2);
    std::fs::hard_link(canary.dir.join("secret"), canary.dir.join("sub/link")).expect("link");
    assert!(caught(&|| canary.assert_untouched()), "a new hardlink");

    let dir3 = TestDir::new("selftest-canary-new");
    let canary = Canary::new(&dir3);
    std::fs::write(canary.dir.join("sub/new"), "").expect("new file");
    assert!(caught(&|| canary.assert_untouched()), "a new file");

    let marker = format!("selftest-marker-{}", std::process::id());
    assert_marker_absent(dir.path(), &marker);
    let deep = dir.subdir("a/b/c");
    std::fs::write(deep.join(&marker), "").expect("marker");
    assert!(
        caught(&|| assert_marker_absent(dir.path(), &marker)),
        "a marker below"
    );
}
