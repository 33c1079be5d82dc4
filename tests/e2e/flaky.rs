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
            ..Faults::default()
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
    // A registry that answers 5xx keeps the whole schedule (unlike one that refuses
    // connections): both attempts of each request, and a warning for each retry.
    let log = proxy.log();
    let mut paths: Vec<&str> = log.iter().map(|l| l.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    for p in &paths {
        let n = log.iter().filter(|l| l.path == *p).count();
        assert_eq!(n, 2, "{p} asked {n} times: {log:?}");
    }
    let retries: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("answered 503") && l.contains("; retry "))
        .collect();
    assert_eq!(retries.len(), log.len() - paths.len(), "{out:?}");
    assert!(
        retries
            .iter()
            .all(|l| l.contains("WARN") && l.contains("; retry 2/2 in ")),
        "{retries:?}"
    );
}

#[test]
fn docker_hub_mirrors_are_tried_in_order_past_a_dead_one() {
    let reg = Registry::private();
    let fx = fixtures::small("mirrored", "linux/amd64", Compression::Gzip);
    // What a pull-through cache of Docker Hub holds for `mirrored:v1`.
    reg.push_image("library/mirrored", "v1", &fx.image);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("address").to_string()
    };
    // A mirror that answers but lacks the image, then the one that has it.
    let empty = Registry::private();
    let slate = Slate::new("mirrors");
    write_config(
        &slate,
        &format!(
            "[registries]\nmirrors = [\"http://{dead}\", \"http://{}\", \"http://{}\"]\n",
            empty.host(),
            reg.host()
        ),
    );
    let out = slate.run(&["pull", "mirrored:v1"]).success();
    assert_eq!(out.last_stdout_line(), fx.image.manifest_digest);
    let names: Vec<String> = slate
        .images()
        .iter()
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, vec!["docker.io/library/mirrored".to_string()]);
    reg.wait_for_blob_gets("library/mirrored", &[fx.image.layers[0].digest.clone()]);
    assert!(
        empty.log().contains("/v2/library/mirrored/manifests/v1"),
        "the second mirror was not asked before the third"
    );
}

#[test]
fn too_many_requests_is_retried_after_the_time_the_registry_asks() {
    let reg = Registry::private();
    let fx = fixtures::small("flaky-429", "linux/amd64", Compression::Gzip);
    reg.push_image("flaky/429", "v1", &fx.image);
    let proxy = FlakyProxy::start(
        reg.host(),
        Faults {
            fail_first: 2,
            fail_status: 429,
            retry_after: Some(2),
            ..Faults::default()
        },
    );
    let slate = Slate::new("flaky-429");
    let reference = format!("{}/flaky/429:v1", proxy.host());
    let out = slate.run(&["pull", &reference]).success();
    assert_eq!(out.last_stdout_line(), fx.image.manifest_digest);
    let log = proxy.log();
    let limited: Vec<_> = log.iter().filter(|l| l.action == "429").collect();
    assert_eq!(limited.len(), 2, "{log:?}");
    // Retry-After is a floor the client must respect (a lower bound, never flaky).
    let next = log
        .iter()
        .find(|l| l.action != "429" && l.at > limited[1].at)
        .expect("a request after the 429s");
    let floor = std::time::Duration::from_secs(2);
    assert!(
        limited[1].at.duration_since(limited[0].at) >= floor
            && next.at.duration_since(limited[1].at) >= floor,
        "a retry came before Retry-After: 2 had passed: {log:?}"
    );
}

#[test]
fn a_download_that_stalls_is_given_up_after_stall_timeout_and_resumed() {
    let work = TestDir::new("stall-build");
    let (img, _) = big_image(&work, &[("stall.bin", 2)]);
    let reg = Registry::private();
    let name = "flaky/stall";
    reg.push_image(name, "v1", &img);
    let proxy = FlakyProxy::start(
        reg.host(),
        Faults {
            cut_blobs: 2,
            cut_after: 500_000,
            stall: true,
            ..Faults::default()
        },
    );
    let slate = Slate::new("flaky-stall");
    // Far below the proxy's hold: only the stall timeout can end the silent connection.
    write_config(&slate, "[pull]\nstall_timeout = 2\n");
    let reference = format!("{}/{name}:v1", proxy.host());
    let out = slate.run(&["pull", &reference]).success();
    assert_eq!(out.last_stdout_line(), img.manifest_digest);
    store::assert_consistent(&slate, &img.chain_ids(), &[]);
    let gets = proxy.blob_gets(name, &img.layers[0].digest);
    assert!(
        gets.iter().any(|g| g.action == "stalled"),
        "the layer never stalled: {gets:?}"
    );
    assert!(
        gets.iter()
            .any(|g| g.range.as_deref().is_some_and(|r| r != "bytes=0-")),
        "the stalled layer was not resumed with a range: {gets:?}"
    );
}
