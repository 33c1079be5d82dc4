//! Issue 3, flaky networks: a registry that answers 503, drops connections, and cuts blob
//! bodies short for its first requests (a fault-injecting proxy on loopback in front of the
//! real registry, bounded in requests). The pull succeeds, resuming cut blobs with a range
//! request; a registry that never recovers fails the pull with a clear, bounded error.

use crate::fixtures;
use crate::harness::fixture::Compression;
use crate::harness::flaky_proxy::{Faults, FlakyProxy};
use crate::harness::registry::Registry;
use crate::harness::slate::{Slate, TestDir};
use crate::harness::slate_cmd::write_config;
use crate::harness::store;
use crate::resume::big_image;

#[test]
fn pull_survives_503s_dropped_connections_and_cut_blobs() {
    let work = TestDir::new("flaky-build");
    let (img, _) = big_image(&work, &[("one.bin", 2), ("two.bin", 2)]);
    let reg = Registry::private();
    let name = "flaky/img";
    reg.push_image(name, "v1", &img);
    let proxy = FlakyProxy::start(
        reg.host(),
        Faults {
            // Four failures in a row stay within one request's five attempts.
            fail_first: 2,
            drop_first: 2,
            cut_blobs: 3,
            cut_after: 300_000,
            bytes_per_sec: 0,
        },
    );
    let slate = Slate::new("flaky");
    let reference = format!("{}/{name}:v1", proxy.host());
    let out = slate.run(&["pull", &reference]).success();
    assert_eq!(out.last_stdout_line(), img.manifest_digest);
    store::assert_consistent(&slate, &img.chain_ids(), &[]);
    assert_eq!(slate.images().len(), 1);

    let log = proxy.log();
    for action in ["503", "dropped", "cut"] {
        assert!(
            log.iter().any(|l| l.action == action),
            "the proxy never did {action}: {log:?}"
        );
    }
    // Every layer blob whose body was cut was asked for again from where it broke off.
    for l in &img.layers {
        let gets = proxy.blob_gets(name, &l.digest);
        if gets.iter().any(|g| g.action == "cut") {
            assert!(
                gets.iter()
                    .any(|g| g.range.as_deref().is_some_and(|r| r != "bytes=0-")),
                "blob {} was cut but not resumed with a range: {gets:?}",
                l.digest
            );
        }
    }
    assert!(
        log.iter().any(|l| l.range.is_some()),
        "no ranged request at all: {log:?}"
    );
}

#[test]
fn a_registry_that_never_recovers_fails_the_pull_clearly() {
    let reg = Registry::private();
    let fx = fixtures::small("flaky-down", "linux/amd64", Compression::Gzip);
    reg.push_image("flaky/down", "v1", &fx.image);
    let proxy = FlakyProxy::start(
        reg.host(),
        Faults {
            fail_first: 1_000,
            ..Faults::default()
        },
    );
    let slate = Slate::new("flaky-down");
    write_config(&slate, "[pull]\nattempts = 2\n");
    let reference = format!("{}/flaky/down:v1", proxy.host());
    let out = slate.run(&["pull", &reference]).failure(1);
    out.error_mentions(&["503"]);
    out.assert_each_cause_once();
    store::assert_consistent(&slate, &[], &[]);
    assert!(slate.images().is_empty());
}
