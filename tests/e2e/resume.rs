//! Issue 3, resuming: `kill -9` in the middle of a pull of a large layer, then the same
//! pull again. It succeeds, it asks the registry only for the rest of the blob (the proxy
//! in front of the registry logs the `Range` header, which the registry's access log does
//! not show), the layer's content is exact, and no half image was ever listed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::fixture::{digest_hex, BuiltImage, BuiltLayer, ImageSpec, OCI_LAYER_GZIP};
use crate::harness::flaky_proxy::{Faults, FlakyProxy};
use crate::harness::registry::Registry;
use crate::harness::slate::{Slate, TestDir};
use crate::harness::slate_cmd::Running;
use crate::harness::store;

fn sh(cmd: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("sh -c {cmd}: {e}"));
    assert!(
        out.status.success(),
        "sh -c {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha256_file(p: &Path) -> String {
    let out = sh(&format!("sha256sum '{}'", p.display()));
    let hex = String::from_utf8_lossy(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    format!("sha256:{hex}")
}

/// An image of one gzip layer holding `big.bin`, `mb` MiB of random bytes, built with the
/// system's tar and gzip (fast, where the test binary's debug build would not be).
/// Returns the image and the digest of big.bin's content.
pub(crate) fn big_image(dir: &TestDir, files: &[(&str, usize)]) -> (BuiltImage, Vec<String>) {
    let mut layers = Vec::new();
    let mut sums = Vec::new();
    for (name, mb) in files {
        let src = dir.subdir(&format!("src-{name}"));
        let file = src.join(name);
        sh(&format!(
            "head -c {}M /dev/urandom > '{}'",
            mb,
            file.display()
        ));
        sums.push(sha256_file(&file));
        let tar_path: PathBuf = dir.path().join(format!("{name}.tar"));
        sh(&format!(
            "tar --owner=0 --group=0 -C '{}' -cf '{}' {name}",
            src.display(),
            tar_path.display()
        ));
        sh(&format!("gzip -1 -k -f '{}'", tar_path.display()));
        let gz_path = dir.path().join(format!("{name}.tar.gz"));
        let tar = fs::read(&tar_path).expect("reading the tar");
        let blob = fs::read(&gz_path).expect("reading the gzip");
        layers.push(BuiltLayer {
            diff_id: sha256_file(&tar_path),
            digest: sha256_file(&gz_path),
            tar,
            blob,
            media_type: OCI_LAYER_GZIP.to_string(),
        });
    }
    (ImageSpec::new(Vec::new()).assemble(layers), sums)
}

fn partial_len(slate: &Slate, digest: &str) -> u64 {
    let p = slate
        .root()
        .join("tmp")
        .join(format!("blob-{}.partial", digest_hex(digest)));
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn killed_pull_resumes_with_a_range_request_and_never_lists_a_half_image() {
    let work = TestDir::new("resume-build");
    let (img, sums) = big_image(&work, &[("big.bin", 60)]);
    let layer = img.layers[0].clone();
    let reg = Registry::private();
    let name = "resume/big";
    reg.push_image(name, "v1", &img);
    // Slow enough that the kill lands mid-blob on any machine; fast enough to be quick.
    let proxy = FlakyProxy::start(
        reg.host(),
        Faults {
            bytes_per_sec: 6 << 20,
            ..Faults::default()
        },
    );
    let reference = format!("{}/{name}:v1", proxy.host());
    let slate = Slate::new("resume");

    let mut pull = Running::spawn(&slate, &["pull", &reference]);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(
            slate.images().is_empty(),
            "an image is listed while its pull is in flight"
        );
        if partial_len(&slate, &layer.digest) >= 12 << 20 {
            break;
        }
        assert!(
            !pull.exited(),
            "the throttled pull ended before it could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "the partial blob never grew; proxy log: {:?}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pull.kill9();
    let had = partial_len(&slate, &layer.digest);
    assert!(
        had > 0 && had < layer.blob.len() as u64,
        "partial blob of {had} bytes after the kill"
    );
    assert!(
        slate.images().is_empty(),
        "a killed pull left an image listed"
    );
    let chain = img.chain_ids();
    assert!(
        !slate
            .root()
            .join("layers")
            .join(digest_hex(&chain[0]))
            .exists(),
        "a killed pull left a layer marked complete"
    );

    proxy.set_faults(Faults::default());
    assert_eq!(slate.pull(&reference, None), img.manifest_digest);

    let gets = proxy.blob_gets(name, &layer.digest);
    let ranged: Vec<_> = gets.iter().filter_map(|g| g.range.clone()).collect();
    assert!(
        ranged.contains(&format!("bytes={had}-")),
        "the second pull did not resume from byte {had}: blob GETs {gets:?}"
    );
    assert_eq!(
        partial_len(&slate, &layer.digest),
        0,
        "the partial blob outlived the commit"
    );
    store::assert_consistent(&slate, &chain, &[]);
    let unpacked = slate
        .root()
        .join("layers")
        .join(digest_hex(&chain[0]))
        .join("diff/big.bin");
    assert_eq!(
        sha256_file(&unpacked),
        sums[0],
        "big.bin differs after resuming"
    );
    assert_eq!(slate.images().len(), 1);
}

#[test]
fn a_partial_blob_of_bad_bytes_is_dropped_and_the_layer_fetched_whole() {
    let work = TestDir::new("resume-bad-build");
    let (img, sums) = big_image(&work, &[("mid.bin", 4)]);
    let layer = img.layers[0].clone();
    let reg = Registry::private();
    let name = "resume/bad-partial";
    let reference = reg.push_image(name, "v1", &img);
    let slate = Slate::new("resume-bad");
    // A torn tail after a power cut, say: the right length, the wrong bytes.
    fs::create_dir_all(slate.root().join("tmp")).expect("tmp dir");
    let mut junk = layer.blob[..1 << 20].to_vec();
    junk[4096..8192].fill(0xA5);
    fs::write(
        slate
            .root()
            .join("tmp")
            .join(format!("blob-{}.partial", digest_hex(&layer.digest))),
        junk,
    )
    .expect("planting a bad partial");
    assert_eq!(slate.pull(&reference, None), img.manifest_digest);
    store::assert_consistent(&slate, &img.chain_ids(), &[]);
    let unpacked = slate
        .root()
        .join("layers")
        .join(digest_hex(&img.chain_ids()[0]))
        .join("diff/mid.bin");
    assert_eq!(sha256_file(&unpacked), sums[0]);
}
