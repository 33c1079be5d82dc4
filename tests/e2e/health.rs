//! Health checks (`--health-cmd` and the image's `Healthcheck`): a detached container goes
//! starting -> unhealthy -> healthy -> unhealthy as its check fails and passes, `ps` and
//! `inspect` show it, `--no-healthcheck` turns the image's off, and the monitor process ends
//! with the container (a failed test's are killed by [`Detached`]'s Drop). (`auto_update` checks that an unhealthy release is rolled back.)

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::detached::{health_monitors as monitors, Detached};
use crate::harness::registry::Registry;
use crate::harness::run_image;
use crate::harness::slate_cmd;

/// The app runs until TERM; the image's own check (when asked for) passes once /tmp/ok exists.
fn image(with_check: bool) -> String {
    let mut config = json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"],
    });
    if with_check {
        config["Healthcheck"] = json!({
            "Test": ["CMD-SHELL", "test -e /tmp/ok"],
            "Interval": 300_000_000u64,
            "Retries": 2,
        });
    }
    let tag = if with_check { "check" } else { "plain" };
    Registry::shared().push_image("health/app", tag, &run_image::image(config, vec![]))
}

/// The container's health state (null while it has none, or no record yet).
fn health(d: &Detached, name: &str) -> Value {
    let out = d.slate(&["inspect", name]);
    if !out.status.success() {
        return Value::Null;
    }
    out.json()[0]["health"].clone()
}

/// Waits until the container's health status is `want`; returns its health state.
fn wait_status(d: &Detached, name: &str, want: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let h = health(d, name);
        if h["status"] == json!(want) {
            return h;
        }
        assert!(Instant::now() < until, "{name} never became {want}: {h}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for container `id`'s health monitor to end (`what` ended the container).
fn assert_monitor_ends(id: &str, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while !monitors(id).is_empty() {
        assert!(Instant::now() < until, "the health monitor outlived {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_health_cmd_follows_the_container_and_ends_with_it() {
    let img = image(false);
    let d = Detached::with_image("health-cmd", &img);
    let id = d.run_d(
        &[
            "--name",
            "h",
            "--health-cmd",
            "test -e /tmp/ok || { echo not yet; exit 1; }",
            "--health-interval",
            "300ms",
            "--health-retries",
            "2",
        ],
        &[],
    );
    assert_eq!(d.inspect("h")["healthcheck"]["retries"], json!(2));
    let h = wait_status(&d, "h", "unhealthy");
    assert!(h["failing_streak"].as_u64().unwrap_or(0) >= 2, "{h}");
    let last = &h["log"]
        .as_array()
        .expect("a probe log")
        .last()
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["exit_code"], json!(1), "{h}");
    assert!(
        last["output"]
            .as_str()
            .unwrap_or_default()
            .contains("not yet"),
        "{h}"
    );
    let ps = d.slate(&["ps"]).success();
    assert!(ps.stdout.contains("(unhealthy)"), "{ps:?}");

    d.slate(&["exec", "h", "touch", "/tmp/ok"]).success();
    wait_status(&d, "h", "healthy");
    let ps = d.slate(&["ps"]).success();
    assert!(ps.stdout.contains("(healthy)"), "{ps:?}");
    let h = health(&d, "h");
    assert!(h["log"].as_array().map_or(0, Vec::len) <= 5, "{h}");

    d.slate(&["exec", "h", "rm", "/tmp/ok"]).success();
    wait_status(&d, "h", "unhealthy");

    assert_eq!(
        monitors(&id).len(),
        1,
        "one health monitor for the container"
    );
    d.slate(&["stop", "-t", "5", "h"]).success();
    assert_monitor_ends(&id, "its container");
}

#[test]
fn the_images_check_is_the_default_and_no_healthcheck_turns_it_off() {
    let img = image(true);
    let d = Detached::with_image("health-image", &img);
    d.run_d(&["--name", "with"], &[]);
    d.run_d(&["--name", "without", "--no-healthcheck"], &[]);
    assert_eq!(
        d.inspect("with")["healthcheck"]["test"],
        json!(["/bin/sh", "-c", "test -e /tmp/ok"])
    );
    wait_status(&d, "with", "unhealthy");
    d.slate(&["exec", "with", "touch", "/tmp/ok"]).success();
    wait_status(&d, "with", "healthy");
    assert_eq!(d.inspect("without")["healthcheck"], Value::Null);
    assert_eq!(health(&d, "without"), Value::Null);
    let ps = d.slate(&["ps"]).success();
    let line = ps
        .stdout
        .lines()
        .find(|l| l.ends_with(" without"))
        .unwrap_or_default();
    assert!(
        !line.contains("healthy") && !line.contains("(health"),
        "{ps:?}"
    );
    // A bad duration is refused at run, in one line.
    let out = d.slate(&[
        "run",
        "-d",
        "--health-cmd",
        "true",
        "--health-interval",
        "5x",
        &img,
    ]);
    let out = out.failure(125);
    out.error_mentions(&["--health-interval", "5x"]);
}

#[test]
fn a_foreground_containers_check_runs_and_ends_with_the_run() {
    let img = image(false);
    let d = Detached::with_image("health-fg", &img);
    d.slate.pull(&img, None);
    let args = [
        "run",
        "--rm",
        "--name",
        "fg",
        "--health-cmd",
        "true",
        "--health-interval",
        "300ms",
        img.as_str(),
        "sleep",
        "4",
    ];
    let (mut cmd, _) = slate_cmd::command(&d.slate, &args, "info");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("starting slate run");
    wait_status(&d, "fg", "healthy");
    let id = d.inspect("fg")["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(monitors(&id).len(), 1);
    let status = child.wait().expect("waiting for slate run");
    assert!(status.success(), "{status:?}");
    assert_monitor_ends(&id, "the foreground run");
}
