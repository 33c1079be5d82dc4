//! `slate run --pull missing|always|never`: a moved tag is deployed by `always` only, a
//! registry that is gone falls back to the local copy with a warning (at once when its port
//! refuses connections, saying so as it retries; colours on a terminal only), and `never`
//! without the image fails with 125.

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::harness::registry::Registry;
use crate::harness::run_image::{self, RunEnv};
use crate::harness::slate::SLATE_BIN;
use crate::harness::tar_writer::Entry;

fn marked(which: &str) -> crate::harness::fixture::BuiltImage {
    run_image::image(
        run_image::default_config(),
        vec![vec![Entry::file("which", format!("{which}\n"))]],
    )
}

#[test]
fn pull_always_runs_the_image_a_moved_tag_points_to() {
    let reg = Registry::shared();
    let reference = reg.push_image("run/moved", "v1", &marked("one"));
    let env = RunEnv::empty("pull-moved", &reference);
    // Missing: pulled on first use.
    let out = env.run(&[], &["cat", "/which"]).success();
    assert_eq!(out.stdout, "one\n", "{out:?}");

    reg.push_image("run/moved", "v1", &marked("two"));
    let out = env.run(&[], &["cat", "/which"]).success();
    assert_eq!(
        out.stdout, "one\n",
        "--pull missing keeps the local image: {out:?}"
    );
    let out = env.run(&["--pull", "always"], &["cat", "/which"]).success();
    assert_eq!(
        out.stdout, "two\n",
        "--pull always deploys the moved tag: {out:?}"
    );
    let out = env.run(&["--pull", "never"], &["cat", "/which"]).success();
    assert_eq!(
        out.stdout, "two\n",
        "the new image is now the local one: {out:?}"
    );
}

#[test]
fn pull_always_runs_the_local_copy_when_the_registry_is_gone() {
    let reg = Registry::private();
    let reference = reg.push_image("run/gone", "v1", &marked("local"));
    let env = RunEnv::empty("pull-gone", &reference);
    env.slate.pull(&reference, None);
    drop(reg); // killed and removed
    let out = env.run(&["--pull", "always"], &["cat", "/which"]).success();
    assert_eq!(out.stdout, "local\n", "{out:?}");
    let warning = out
        .stderr
        .lines()
        .find(|l| l.contains("local copy"))
        .unwrap_or_else(|| panic!("no warning about the local copy on stderr: {out:?}"));
    assert!(
        warning.contains("WARN") && warning.contains("run/gone"),
        "a warning that says the local copy of what runs: {warning}"
    );
    // Without a local copy there is nothing to fall back to: 125.
    let other = RunEnv::empty("pull-gone-empty", &reference);
    let out = other.run(&["--pull", "always"], &["true"]).failure(125);
    out.error_mentions(&["run/gone"]);
}

#[test]
fn pull_never_without_the_image_fails_with_125() {
    let reg = Registry::shared();
    let reference = reg.push_image("run/never", "v1", &marked("x"));
    let env = RunEnv::empty("pull-never", &reference);
    let out = env.run(&["--pull", "never"], &["true"]).failure(125);
    out.error_mentions(&["--pull never", "run/never"]);
    out.assert_each_cause_once();
    assert!(
        !reg.log()
            .lines()
            .any(|l| l.contains("GET /v2/run/never/manifests")),
        "--pull never asked the registry for the manifest"
    );
    assert!(env.slate.images().is_empty(), "nothing was pulled");
}

/// A store with the `run/<label>:v1` image pulled from a private registry that is then
/// killed: its port refuses connections.
fn local_copy_only(label: &str) -> RunEnv {
    let reg = Registry::private();
    let reference = reg.push_image(&format!("run/{label}"), "v1", &marked("local"));
    let env = RunEnv::empty(label, &reference);
    env.slate.pull(&reference, None);
    drop(reg); // killed and removed
    env
}

#[test]
fn pull_always_gives_up_a_refusing_registry_at_once_and_says_so() {
    let env = local_copy_only("pull-refused");
    let t = Instant::now();
    let out = env.run(&["--pull", "always"], &["cat", "/which"]).success();
    // Measured, not asserted: the attempts below are what keeps it short.
    eprintln!(
        "run --pull always, registry port closed: fell back after {:?}",
        t.elapsed()
    );
    assert_eq!(out.stdout, "local\n", "{out:?}");
    // HTTPS first (a loopback registry may be plain HTTP), then HTTP retried once: its
    // second refusal in a row ends it, where a timeout or a 503 would go on to attempt 5.
    let retries: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("not reachable"))
        .collect();
    assert_eq!(retries.len(), 1, "one retry line: {out:?}");
    assert!(
        retries[0].contains(" WARN ") && retries[0].contains("(connection refused); retry 2/5 in "),
        "not a terminal: a warning per retry: {}",
        retries[0]
    );
    assert!(
        out.stderr.lines().any(|l| l.contains("local copy")),
        "{out:?}"
    );
    // The journal (or this pipe) gets no colour codes.
    assert!(
        !out.stderr.contains("\x1b["),
        "escape codes: {:?}",
        out.stderr
    );
}

/// `slate ARGS` on a terminal of its own (`script`), with extra environment; returns what
/// the terminal showed (stdout and stderr together).
fn on_a_terminal(env: &RunEnv, args: &[&str], extra_env: &[(&str, &str)]) -> String {
    let (_, all) = run_image::command(&env.slate, args);
    let line = std::iter::once(SLATE_BIN.to_string())
        .chain(all)
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env(
            "DOCKER_CONFIG",
            crate::harness::slate_cmd::docker_config_dir(&env.slate),
        );
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running script");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    env.assert_clean(&text);
    text
}

#[test]
fn on_a_terminal_retries_are_plain_lines_and_no_color_turns_colours_off() {
    let env = local_copy_only("pull-refused-tty");
    let args = env.args(&["--pull", "always"], &["cat", "/which"]);
    let shown = on_a_terminal(&env, &args, &[]);
    assert!(shown.contains("local"), "{shown}");
    let retries: Vec<&str> = shown
        .lines()
        .filter(|l| l.contains("not reachable"))
        .collect();
    assert_eq!(retries.len(), 1, "{shown}");
    assert!(
        retries[0].starts_with("registry ")
            && retries[0].contains("(connection refused); retry 2/5 in "),
        "a plain line, not a log record: {:?}",
        retries[0]
    );
    assert!(
        shown.contains("\x1b["),
        "a terminal gets colours: {shown:?}"
    );
    let shown = on_a_terminal(&env, &args, &[("NO_COLOR", "1")]);
    assert!(shown.lines().any(|l| l.contains("local copy")), "{shown}");
    assert!(!shown.contains("\x1b["), "NO_COLOR: {shown:?}");
}
