//! `slate systemd unit` (issue 12, part 5) on a host without systemd as PID 1: the unit it
//! prints, `--install` into a directory of the test's own (never the host's /etc), what it
//! says when systemd is not running, the flags it refuses, and the unit's `ExecStart=` read
//! back the way systemd reads it and run for real. systemd itself drives the units in the VM
//! (tests/vm/guest/unit.sh).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::harness::run_image::{self, RunEnv};
use crate::harness::slate::{Output, Slate, SLATE_BIN};

/// The binary as the unit names it: its real path.
fn slate_path() -> String {
    std::fs::canonicalize(SLATE_BIN)
        .expect("canonical path of the slate binary")
        .display()
        .to_string()
}

/// `KEY=` of a unit file, continuation lines joined.
fn setting(text: &str, key: &str) -> Option<String> {
    let mut lines = text.lines();
    let first = lines.find_map(|l| l.strip_prefix(&format!("{key}=")))?;
    let mut value = first.to_owned();
    while let Some(v) = value.strip_suffix('\\') {
        value = format!("{v} {}", lines.next()?);
    }
    Some(value)
}

/// A small reading of a systemd command line (systemd.service(5), "Command lines"), written
/// apart from slate's own: words split on blanks, double quotes with C escapes, `%%` and
/// `$$` for literal `%` and `$`. Anything else slate must not write: a panic.
fn systemd_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    // None between words; a quoted "" makes an empty word.
    let mut cur: Option<String> = None;
    let mut quoted = false;
    let mut it = line.chars();
    while let Some(c) = it.next() {
        if !quoted && (c == ' ' || c == '\t') {
            out.extend(cur.take());
            continue;
        }
        let w = cur.get_or_insert_with(String::new);
        match c {
            '"' => quoted = !quoted,
            '\\' => match it.next() {
                Some('\\') => w.push('\\'),
                Some('"') => w.push('"'),
                Some('n') => w.push('\n'),
                Some('t') => w.push('\t'),
                Some('r') => w.push('\r'),
                Some('x') => {
                    let h: String = it.by_ref().take(2).collect();
                    w.push(u8::from_str_radix(&h, 16).expect("hex escape") as char);
                }
                other => panic!("unexpected escape \\{other:?} in {line}"),
            },
            '%' | '$' => {
                assert_eq!(it.next(), Some(c), "{c} not doubled in {line}");
                w.push(c);
            }
            ';' | '\'' | '#' if !quoted => panic!("unquoted {c} in {line}"),
            c => w.push(c),
        }
    }
    assert!(!quoted, "unbalanced quote in {line}");
    out.extend(cur);
    out
}

fn unit(slate: &Slate, args: &[&str]) -> Output {
    let mut all = vec!["systemd", "unit"];
    all.extend(args);
    slate.run(&all)
}

#[test]
fn unit_prints_the_expected_lines() {
    let slate = Slate::new("sdunit-print");
    let www = slate.dir().subdir("www");
    let vol = format!("{}:/www:ro", www.display());
    let out = unit(
        &slate,
        &[
            "--name",
            "web",
            "-e",
            "GREETING=hi there",
            "-v",
            &vol,
            "--memory",
            "64m",
            "--init",
            "registry.example.com/app:latest",
            "httpd",
            "-f",
            "-p",
            "8080",
        ],
    )
    .success();
    let text = &out.stdout;
    let exe = slate_path();
    let globals = format!(
        "--root={} --config={}",
        slate.root().display(),
        slate.dir().path().join("config.toml").display()
    );
    let want = [
        (
            "Description",
            "slate container web (registry.example.com/app:latest)".to_owned(),
        ),
        ("Wants", "network-online.target".to_owned()),
        ("After", "network-online.target".to_owned()),
        ("Type", "notify".to_owned()),
        ("NotifyAccess", "all".to_owned()),
        ("Delegate", "yes".to_owned()),
        ("KillMode", "mixed".to_owned()),
        ("TimeoutStartSec", "900".to_owned()),
        ("TimeoutStopSec", "30".to_owned()),
        ("Restart", "on-failure".to_owned()),
        ("ExecStop", format!("-{exe} {globals} stop -t 10 web")),
        ("WantedBy", "multi-user.target".to_owned()),
    ];
    for (key, value) in want {
        assert_eq!(setting(text, key), Some(value), "{key}= in:\n{text}");
    }
    let exec = setting(text, "ExecStart").expect("ExecStart=");
    assert_eq!(
        systemd_words(&exec),
        [
            exe.as_str(),
            &format!("--root={}", slate.root().display()),
            &format!(
                "--config={}",
                slate.dir().path().join("config.toml").display()
            ),
            "run",
            "--rm",
            "--replace",
            "--name",
            "web",
            "--pull",
            "always",
            "--sdnotify=conmon",
            "--env=GREETING=hi there",
            &format!("--volume={vol}"),
            "--memory=64m",
            "--init",
            "registry.example.com/app:latest",
            "httpd",
            "-f",
            "-p",
            "8080",
        ],
        "{text}"
    );
    assert!(
        out.stderr.trim().is_empty(),
        "nothing to warn about: {}",
        out.stderr
    );
    // The unit files systemd reads start with the section or a comment, nothing else.
    assert!(text.lines().next().is_some_and(|l| l.starts_with('#')));
}

/// A `systemctl` that only records its arguments, first on PATH: whatever the host, the test
/// never reaches the real one.
fn fake_systemctl(slate: &Slate) -> (PathBuf, PathBuf) {
    let bin = slate.dir().subdir("fake-bin");
    let log = slate.dir().path().join("systemctl.calls");
    let script = bin.join("systemctl");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display()),
    )
    .expect("writing the fake systemctl");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (bin, log)
}

fn install(slate: &Slate, dir: &Path, fake: &Path, extra: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut args = vec!["systemd", "unit", "--install", "--unit-dir"];
    let d = dir.display().to_string();
    args.push(&d);
    args.extend(extra);
    args.extend(["--name", "web", "registry.example.com/app:latest"]);
    crate::harness::run_image::run_with(slate, &args, &[("PATH", &path)], None)
}

#[test]
fn install_writes_the_unit_and_says_what_it_did_with_systemd() {
    let slate = Slate::new("sdunit-install");
    let dir = slate.dir().subdir("units");
    let (fake, calls) = fake_systemctl(&slate);
    let printed = unit(
        &slate,
        &["--name", "web", "registry.example.com/app:latest"],
    )
    .success();

    let out = install(&slate, &dir, &fake, &[]).success();
    let file = dir.join("slate-web.service");
    let written = std::fs::read_to_string(&file).expect("the unit file");
    assert_eq!(written, printed.stdout, "--install writes what is printed");
    let mode = std::fs::metadata(&file).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644, "a unit file is 0644");
    assert_eq!(
        out.stdout.lines().next(),
        Some(format!("wrote {}", file.display()).as_str())
    );

    let systemd_runs = Path::new("/run/systemd/system").is_dir();
    if systemd_runs {
        // Only the fake was reached (first on PATH).
        let said = std::fs::read_to_string(&calls).expect("systemctl was called");
        assert_eq!(said, "daemon-reload\n");
        assert!(
            out.stdout.contains("ran systemctl daemon-reload"),
            "{out:?}"
        );
    } else {
        let line = out.stderr.trim();
        assert!(
            line.starts_with("slate: systemd is not running on this host")
                && line.contains("skipped systemctl daemon-reload")
                && !line.contains('\n'),
            "one line saying daemon-reload was skipped: {out:?}"
        );
        assert!(!calls.exists(), "systemctl must not be run without systemd");
    }

    // Again: the same file, replaced.
    let out = install(&slate, &dir, &fake, &[]).success();
    assert_eq!(
        out.stdout.lines().next(),
        Some(format!("replaced {}", file.display()).as_str())
    );

    if !systemd_runs {
        // Asked to start it, and it cannot be: a failure, the file still written.
        std::fs::remove_file(&file).expect("rm");
        let out = install(&slate, &dir, &fake, &["--now"]).failure(1);
        out.error_mentions(&["systemd is not running", "slate-web.service"]);
        assert!(file.exists());
        assert!(!calls.exists());
    }
}

#[test]
fn flags_that_make_no_sense_in_a_unit_are_refused() {
    let slate = Slate::new("sdunit-refuse");
    for (flag, name) in [("-d", "--detach"), ("-t", "--tty"), ("-i", "--interactive")] {
        let out = unit(&slate, &[flag, "--name", "web", "img"]).failure(1);
        out.error_mentions(&[name, "makes no sense in a unit"]);
        assert!(out.stdout.is_empty(), "no unit printed: {out:?}");
    }
    let out = unit(&slate, &["img"]).failure(1);
    out.error_mentions(&["--name"]);
    let out = unit(&slate, &["--name", "no/slash", "img"]).failure(1);
    out.error_mentions(&["invalid container name"]);
}

/// The unit's `ExecStart=`, read as systemd reads it, run by hand: slate must take back every
/// flag it wrote, and the app must get its arguments word for word.
#[test]
fn the_units_command_line_runs_the_container_as_asked() {
    let env = RunEnv::new("sdunit-exec", run_image::default_config());
    let script = r#"echo "[$GREETING]"; for a; do echo "<$a>"; done; exit 3"#;
    let args = [
        "a b",
        "",
        "100%",
        "$HOME",
        "it's",
        "q\"uote",
        "back\\slash",
        ";",
        "#hash",
        "--rm",
    ];
    let mut unit_args = vec![
        "--name",
        "sdunit-exec",
        "-e",
        "GREETING=hi $there 100%",
        "--memory",
        "64m",
        env.image.as_str(),
        "sh",
        "-c",
        script,
        "sh",
    ];
    unit_args.extend(args);
    let out = unit(&env.slate, &unit_args).success();
    let exec = setting(&out.stdout, "ExecStart").expect("ExecStart=");
    let words = systemd_words(&exec);
    assert_eq!(words[0], slate_path());
    // Run it as systemd would, without a notify socket (no one to tell).
    let ran = std::process::Command::new(&words[0])
        .args(&words[1..])
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running the unit's command line");
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let mut want = vec!["[hi $there 100%]".to_owned()];
    want.extend(args.iter().map(|a| format!("<{a}>")));
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        want,
        "stderr: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(ran.status.code(), Some(3), "the app's status is slate's");
}
