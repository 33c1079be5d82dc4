//! Issue 13's `slate auto-update` for detached containers with no systemd unit (the VM test,
//! tests/vm/guest/autoupdate.sh, does the same for a unit under systemd): v1 runs, v2 is
//! pushed and deployed on a fresh rootfs with the same flags, a broken v3 is rolled back and
//! not taken again, a registry that does not answer or a pull cut half way changes nothing
//! (and the next run resumes the download), `--dry-run` changes nothing, a reference pinned by
//! digest is never updated, `local` follows a `slate load`, and a second run waits for the
//! first, and a registry that refuses the credentials fails its container only.
//!
//! Each test has its own registry, store and state dir; [`Detached`]'s Drop kills what its
//! state dir records (by PID) and removes the cgroups.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::detached::Detached;
use crate::harness::fixture::{digest_hex, sha256_digest, BuiltImage};
use crate::harness::flaky_proxy::{Faults, FlakyProxy};
use crate::harness::registry::Registry;
use crate::harness::run_image;
use crate::harness::slate_cmd::{run_with, write_config};
use crate::harness::tar_writer::Entry;
use crate::harness::tls::TlsRegistry;

/// A value passed with `-e NAME` from the environment.
const SECRET: &str = "s3cret-Zq7-not-in-argv";

/// The app: runs while `/ok` exists (a broken release lacks it and exits 1 at start), and
/// ends at once on SIGTERM, so a replace does not wait for the stop timeout.
fn app_config() -> Value {
    json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh", "-c",
            "test -e /ok || { echo 'broken release' >&2; exit 1; }; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"],
    })
}

/// Release `version`: `/version` says it; `good` releases have `/ok`; `padding` bytes of
/// incompressible data make its layer large enough to cut a download in the middle.
fn release(version: &str, good: bool, padding: usize) -> BuiltImage {
    let mut layer = vec![Entry::file("version", format!("{version}\n"))];
    if good {
        layer.push(Entry::file("ok", ""));
    }
    if padding > 0 {
        // xorshift: deterministic, and gzip cannot shrink it.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ version.len() as u64;
        let data: Vec<u8> = (0..padding)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        layer.push(Entry::file("padding.bin", data));
    }
    run_image::image(app_config(), vec![layer])
}

/// Pushes `img` as `name:tag`; returns its manifest digest.
fn push(reg: &Registry, name: &str, tag: &str, img: &BuiltImage) -> String {
    reg.push_image(name, tag, img);
    img.manifest_digest.clone()
}

/// `slate auto-update ARGS --format json`, by container name.
fn report(out: &crate::harness::slate::Output) -> BTreeMap<String, Value> {
    match out.json() {
        Value::Array(a) => a
            .into_iter()
            .map(|r| (r["container"].as_str().unwrap_or_default().to_owned(), r))
            .collect(),
        other => panic!("auto-update --format json is not a list: {other}"),
    }
}

fn status(r: &BTreeMap<String, Value>, name: &str) -> String {
    r.get(name)
        .and_then(|v| v["status"].as_str())
        .unwrap_or("<absent>")
        .to_owned()
}

fn version_in(d: &Detached, name: &str) -> String {
    d.slate(&["exec", name, "cat", "/version"])
        .success()
        .stdout
        .trim()
        .to_owned()
}

#[test]
fn a_detached_container_is_updated_then_a_bad_release_rolled_back() {
    let reg = Registry::private();
    let v1 = push(&reg, "au/app", "latest", &release("v1", true, 0));
    let reference = reg.reference("au/app", "latest");
    let d = Detached::with_image("au-cycle", &reference);
    let label = "io.slate.autoupdate=registry";
    // `-e NAME` takes the value from the caller's environment: the replay must give the new
    // container the same value, without ever writing it into a command line.
    let out = run_with(
        &d.slate,
        &[
            "run",
            "-d",
            "--name",
            "app",
            "--label",
            label,
            "-l",
            "team=web",
            "-e",
            "MODE=prod",
            "-e",
            "AU_TOKEN",
            &reference,
        ],
        "info",
        &[("AU_TOKEN", SECRET)],
        None,
    )
    .success();
    let id1 = out.last_stdout_line().trim().to_owned();
    d.learn_id(&id1);
    let pinned = format!("{}/au/app@{v1}", reg.host());
    let out = d
        .slate(&["run", "-d", "--name", "pinned", "--label", label, &pinned])
        .success();
    d.learn_id(out.last_stdout_line().trim());
    // Podman's label opts in too; an unlabelled or opted-out container is never touched.
    d.run_d(
        &[
            "--name",
            "podmanish",
            "-l",
            // podman's older name for registry.
            "io.containers.autoupdate=image",
        ],
        &[],
    );
    d.run_d(&["--name", "plain"], &[]);
    d.run_d(
        &[
            "--name",
            "optout",
            "-l",
            "io.containers.autoupdate=disabled",
        ],
        &[],
    );
    d.slate(&["exec", "app", "touch", "/tmp/mark"]).success();

    // Nothing new in the registry.
    let r = report(&d.slate(&["auto-update", "--format", "json"]).success());
    assert_eq!(status(&r, "app"), "unchanged", "{r:?}");
    assert_eq!(status(&r, "podmanish"), "unchanged", "{r:?}");
    assert_eq!(status(&r, "pinned"), "pinned", "{r:?}");
    assert_eq!(status(&r, "plain"), "<absent>", "{r:?}");
    assert_eq!(status(&r, "optout"), "<absent>", "{r:?}");

    let v2 = push(&reg, "au/app", "latest", &release("v2", true, 0));
    // --dry-run says what would change, and changes nothing.
    let out = d.slate(&["auto-update", "--dry-run"]).success();
    assert!(
        out.stdout.contains("would update") && out.stdout.contains("pinned by digest"),
        "{out:?}"
    );
    let r = report(
        &d.slate(&["auto-update", "--dry-run", "--format", "json"])
            .success(),
    );
    assert_eq!(status(&r, "app"), "would-update", "{r:?}");
    assert_eq!(r["app"]["new_digest"], json!(v2));
    assert_eq!(d.inspect("app")["id"], json!(id1));
    assert_eq!(d.inspect("app")["image_digest"], json!(v1));

    // The update, with a second run started meanwhile: it waits, then finds nothing to do.
    let lock = d.state.join("auto-update.lock");
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| d.slate(&["auto-update", "--grace", "3", "--format", "json"]));
        wait_locked(&lock, Duration::from_secs(60));
        let second = d.slate(&["auto-update", "--grace", "1", "--format", "json"]);
        (first.join().expect("first auto-update"), second)
    });
    let first = first.success();
    let r = report(&first);
    assert_eq!(status(&r, "app"), "updated", "{first:?}");
    assert_eq!(r["app"]["old_digest"], json!(v1));
    assert_eq!(r["app"]["new_digest"], json!(v2));
    assert_eq!(status(&r, "podmanish"), "updated", "{first:?}");
    assert_eq!(status(&r, "pinned"), "pinned", "{first:?}");
    let second = second.success();
    assert!(
        second.stderr.contains("another slate auto-update (pid "),
        "the second run did not say it waited: {second:?}"
    );
    assert_eq!(status(&report(&second), "app"), "unchanged", "{second:?}");

    // v2 runs on a fresh rootfs, with the flags v1 was started with.
    let now = d.inspect("app");
    assert_ne!(now["id"], json!(id1));
    assert_eq!(now["image_digest"], json!(v2));
    assert_eq!(now["labels"]["team"], json!("web"));
    assert_eq!(version_in(&d, "app"), "v2");
    d.slate(&["exec", "app", "test", "!", "-e", "/tmp/mark"])
        .success();
    let env = d.slate(&["exec", "app", "env"]).success();
    assert!(env.stdout.lines().any(|l| l == "MODE=prod"), "{env:?}");
    assert!(
        env.stdout
            .lines()
            .any(|l| l == format!("AU_TOKEN={SECRET}")),
        "{env:?}"
    );
    let replay = now["replay"].to_string();
    assert!(
        replay.contains("--env=AU_TOKEN") && !replay.contains(SECRET),
        "the replay words hold the secret: {replay}"
    );
    assert_eq!(d.inspect("pinned")["image_digest"], json!(v1));

    // A broken v3: rolled back to v2, reported, exit 1; v2 serves again.
    let v3 = push(&reg, "au/app", "latest", &release("v3", false, 0));
    let out = d
        .slate(&["auto-update", "--grace", "2", "--format", "json"])
        .failure(1);
    let r = report(&out);
    assert_eq!(status(&r, "app"), "rolled-back", "{out:?}");
    assert_eq!(r["app"]["new_digest"], json!(v3));
    let why = r["app"]["reason"].as_str().unwrap_or_default();
    assert!(why.contains("did not come up"), "{why}");
    let now = d.inspect("app");
    assert_eq!(now["image_digest"], json!(v2));
    assert_eq!(now["status"], json!("running"));
    assert_eq!(version_in(&d, "app"), "v2");
    let images = d.slate.images();
    let app_image = images
        .iter()
        .find(|i| {
            i["tag"] == json!("latest") && i["name"].as_str().is_some_and(|n| n.ends_with("au/app"))
        })
        .expect("au/app:latest in the store");
    assert_eq!(app_image["digest"], json!(v2), "{images:?}");

    // The registry still serves v3: it is not taken again, and says why.
    let out = d
        .slate(&["auto-update", "--grace", "1", "--format", "json"])
        .success();
    let r = report(&out);
    assert_eq!(status(&r, "app"), "unchanged", "{out:?}");
    assert!(
        r["app"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("rolled back"),
        "{out:?}"
    );
    assert_eq!(d.inspect("app")["image_digest"], json!(v2));

    // Updates and rollbacks that ended let go of what they held.
    let held = d.slate.root().join("held");
    assert_eq!(json_files(&held), 0, "holds left after the updates");
    // A hold an interrupted update left (a power cut in the grace time) goes with `slate rm`.
    let holder = format!("{}:app", d.state.display());
    let digest = sha256_digest(holder.as_bytes());
    let key = &digest_hex(&digest)[..32];
    std::fs::copy(
        first_image_record(d.slate.root()),
        held.join(format!("{key}.json")),
    )
    .expect("planting a hold");
    assert_eq!(json_files(&held), 1);
    d.slate(&["rm", "-f", "app"]).success();
    assert_eq!(json_files(&held), 0, "slate rm left the container's hold");
}

fn json_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

/// Any image record of the store (`images/<key>.json`), to plant as a hold.
fn first_image_record(root: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(root.join("images"))
        .expect("the store's images")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("an image record")
}

/// Waits until someone holds `path`'s flock (the first auto-update).
fn wait_locked(path: &std::path::Path, timeout: Duration) {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if let Ok(f) = std::fs::File::open(path) {
            // SAFETY: flock(2) on a descriptor this function owns.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                return;
            }
            // SAFETY: as above; let go at once.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no auto-update took {} within {timeout:?}", path.display());
}

#[test]
fn a_dead_registry_or_a_cut_pull_changes_nothing_and_the_next_run_resumes() {
    let reg = Registry::private();
    let v1 = push(&reg, "au/net", "latest", &release("v1", true, 0));
    let proxy = FlakyProxy::start(reg.host(), Faults::default());
    let reference = format!("{}/au/net:latest", proxy.host());
    let d = Detached::with_image("au-net", &reference);
    // One attempt per request: a cut is a failed pull, not a retried one.
    write_config(&d.slate, "[pull]\nattempts = 1\n");
    let id1 = d.run_d(
        &["--name", "net", "-l", "io.slate.autoupdate=registry"],
        &[],
    );
    let v2_image = release("v2", true, 2 << 20);
    let v2 = push(&reg, "au/net", "latest", &v2_image);
    let big = v2_image
        .layers
        .last()
        .expect("v2's own layer")
        .digest
        .clone();

    // Nothing answers: one clear line, nothing changed, exit 1.
    proxy.set_faults(Faults {
        drop_first: u64::MAX / 2,
        ..Faults::default()
    });
    let out = d.slate(&["auto-update"]).failure(1);
    assert!(
        out.stdout.contains("failed") && out.stdout.contains("nothing changed"),
        "{out:?}"
    );
    assert_eq!(d.inspect("net")["id"], json!(id1));
    assert_eq!(d.inspect("net")["image_digest"], json!(v1));

    // The download of v2's layer is cut half way: nothing changed, the partial blob is kept.
    let blob_gets_so_far = proxy
        .log()
        .iter()
        .filter(|l| l.method == "GET" && l.path.contains("/blobs/"))
        .count() as u64;
    proxy.set_faults(Faults {
        // v2's config is fetched before its layer (and is shorter than the cut).
        cut_blobs: blob_gets_so_far + 2,
        cut_after: 1 << 20,
        ..Faults::default()
    });
    let out = d
        .slate(&["auto-update", "--grace", "1", "--format", "json"])
        .failure(1);
    let r = report(&out);
    assert_eq!(status(&r, "net"), "failed", "{out:?}");
    let why = r["net"]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("cannot pull") && why.contains("nothing changed"),
        "{why}"
    );
    assert_eq!(d.inspect("net")["id"], json!(id1));
    let name_digest = d
        .slate
        .images()
        .iter()
        .find(|i| i["tag"] == json!("latest"))
        .map(|i| i["digest"].clone());
    assert_eq!(
        name_digest,
        Some(json!(v1)),
        "the name moved on a failed pull"
    );
    assert!(
        !proxy.blob_gets("au/net", &big).is_empty(),
        "the cut layer was never asked for"
    );

    // The registry is back: the update goes through, resuming the layer where it was cut.
    proxy.set_faults(Faults::default());
    let out = d
        .slate(&["auto-update", "--grace", "1", "--format", "json"])
        .success();
    assert_eq!(status(&report(&out), "net"), "updated", "{out:?}");
    assert_eq!(d.inspect("net")["image_digest"], json!(v2));
    assert_eq!(version_in(&d, "net"), "v2");
    let gets = proxy.blob_gets("au/net", &big);
    assert!(
        gets.iter().any(|g| g
            .range
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && !r.starts_with("bytes=0-"))),
        "the layer was downloaded again from the start: {gets:?}"
    );
}

#[test]
fn local_follows_what_slate_load_brought() {
    let reg = Registry::private();
    let v1 = push(&reg, "au/usb", "latest", &release("v1", true, 0));
    let reference = reg.reference("au/usb", "latest");
    let d = Detached::with_image("au-local", &reference);
    d.run_d(&["--name", "kiosk", "-l", "io.slate.autoupdate=local"], &[]);
    // v2 reaches the registry, but a `local` container only looks at the store.
    push(&reg, "au/usb", "latest", &release("v2", true, 0));
    let r = report(&d.slate(&["auto-update", "--format", "json"]).success());
    assert_eq!(status(&r, "kiosk"), "unchanged", "{r:?}");
    assert_eq!(r["kiosk"]["new_digest"], json!(v1));

    // v2 on a USB stick: saved elsewhere, loaded here.
    let other = Detached::with_image("au-local-src", &reference);
    other.slate.pull(&reference, None);
    let archive = other.slate.dir().path().join("v2.tar");
    other
        .slate
        .run(&["save", "-o", &archive.display().to_string(), &reference])
        .success();
    d.slate
        .run(&["load", "-i", &archive.display().to_string()])
        .success();
    let r = report(
        &d.slate(&["auto-update", "--grace", "1", "--format", "json"])
            .success(),
    );
    assert_eq!(status(&r, "kiosk"), "updated", "{r:?}");
    // What the load put under the name (an archive may carry its own manifest encoding).
    let loaded = d
        .slate
        .images()
        .iter()
        .find(|i| i["tag"] == json!("latest"))
        .map(|i| i["digest"].clone())
        .expect("the loaded image");
    assert_ne!(loaded, json!(v1));
    assert_eq!(d.inspect("kiosk")["image_digest"], loaded);
    assert_eq!(version_in(&d, "kiosk"), "v2");
}

#[test]
fn a_registry_that_refuses_credentials_fails_its_container_and_the_others_go_on() {
    const USER: &str = "au-user";
    const PASSWORD: &str = "au-pw-Zq7";
    let plain = Registry::private();
    push(&plain, "au/locked", "latest", &release("v1", true, 0));
    let tls = TlsRegistry::start_with(&plain, USER, PASSWORD, false);
    let locked = format!("{}/au/locked:latest", tls.host());
    let open = plain.reference("au/open", "latest");
    push(&plain, "au/open", "latest", &release("v1", true, 0));

    let d = Detached::with_image("au-401", &open);
    let certs = d.slate.dir().subdir("certs.d");
    tls.write_certs_dir(&certs);
    write_config(
        &d.slate,
        &format!("[registries]\ncerts_dir = \"{}\"\n", certs.display()),
    );
    run_with(
        &d.slate,
        &["login", "-u", USER, "--password-stdin", tls.host()],
        "info",
        &[],
        Some(&format!("{PASSWORD}\n")),
    )
    .success();
    let out = d
        .slate(&[
            "run",
            "-d",
            "--name",
            "locked",
            "-l",
            "io.slate.autoupdate=registry",
            &locked,
        ])
        .success();
    d.learn_id(out.last_stdout_line().trim());
    let locked_id = d.inspect("locked")["id"].clone();
    d.run_d(
        &["--name", "open", "-l", "io.slate.autoupdate=registry"],
        &[],
    );

    // Both get a v2; the credentials are gone: 401 for one, the other is still updated.
    push(&plain, "au/locked", "latest", &release("v2", true, 0));
    let v2 = push(&plain, "au/open", "latest", &release("v2", true, 0));
    run_with(&d.slate, &["logout", tls.host()], "info", &[], None).success();
    let out = d
        .slate(&["auto-update", "--grace", "1", "--format", "json"])
        .failure(1);
    let r = report(&out);
    assert_eq!(status(&r, "locked"), "failed", "{out:?}");
    let why = r["locked"]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("nothing changed") && why.contains("slate login") && !why.contains('\n'),
        "{why}"
    );
    assert_eq!(d.inspect("locked")["id"], locked_id);
    assert_eq!(status(&r, "open"), "updated", "{out:?}");
    assert_eq!(d.inspect("open")["image_digest"], json!(v2));
}

/// A good release (it keeps running) whose image has a health check: `check` in the shell.
fn release_checked(version: &str, check: &str) -> BuiltImage {
    let mut config = app_config();
    config["Healthcheck"] = json!({
        "Test": ["CMD-SHELL", check],
        "Interval": 300_000_000u64,
        "Retries": 2,
    });
    let layer = vec![
        Entry::file("version", format!("{version}\n")),
        Entry::file("ok", ""),
    ];
    run_image::image(config, vec![layer])
}

#[test]
fn an_unhealthy_release_is_rolled_back_though_it_keeps_running() {
    let reg = Registry::private();
    let v1 = push(&reg, "au/health", "latest", &release("v1", true, 0));
    let reference = reg.reference("au/health", "latest");
    let d = Detached::with_image("au-health", &reference);
    d.run_d(
        &["--name", "svc", "-l", "io.slate.autoupdate=registry"],
        &[],
    );

    // v2 runs, but its own health check never passes.
    let v2 = push(
        &reg,
        "au/health",
        "latest",
        &release_checked("v2", "echo no /healthy; test -e /healthy"),
    );
    // (v1, which has no check, is back up after the grace.)
    let out = d
        .slate(&["auto-update", "--grace", "2", "--format", "json"])
        .failure(1);
    let r = report(&out);
    assert_eq!(status(&r, "svc"), "rolled-back", "{out:?}");
    assert_eq!(r["svc"]["new_digest"], json!(v2));
    let why = r["svc"]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("unhealthy") && why.contains("no /healthy"),
        "{why}"
    );
    assert_eq!(d.inspect("svc")["image_digest"], json!(v1));
    assert_eq!(version_in(&d, "svc"), "v1");

    // v3's check passes: healthy is up (no grace time to sit out).
    let v3 = push(
        &reg,
        "au/health",
        "latest",
        &release_checked("v3", "test -e /ok"),
    );
    let out = d.slate(&["auto-update", "--format", "json"]).success();
    assert_eq!(status(&report(&out), "svc"), "updated", "{out:?}");
    assert_eq!(d.inspect("svc")["image_digest"], json!(v3));
    assert_eq!(d.inspect("svc")["health"]["status"], json!("healthy"));
}
