//! `slate run` (issue 5): a fresh root filesystem for every run, the image's config and the
//! flags that override it, stdin and terminals. Every run is checked for leftovers (run dir,
//! mounts, cgroups) by [`RunEnv::run`].

use std::collections::BTreeMap;

use serde_json::json;

use crate::harness::run_image::{self, RunEnv, PRINT_ID};
use crate::harness::slate::{mounts_below, Output};
use crate::harness::tar_writer::Entry;
use crate::harness::tree::{CompareOptions, Tree};

/// The `key=value` lines of the report script (and of `env:` lines, keyed `env:NAME`).
pub(crate) fn report(out: &Output) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for l in out.stdout.lines() {
        if let Some((k, v)) = l.split_once('=') {
            m.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
    }
    m
}

fn get<'a>(r: &'a BTreeMap<String, String>, k: &str, out: &Output) -> &'a str {
    r.get(k)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("the report has no {k}: {out:?}"))
}

/// The image config most tests here use: the report script as the entrypoint, a Cmd, Env,
/// WorkingDir and a non-root User.
fn report_config() -> serde_json::Value {
    json!({
        "Entrypoint": ["/usr/local/bin/report"],
        "Cmd": ["from-cmd", "second"],
        "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "FROM_IMAGE=image-value",
            "OVERRIDDEN=image",
        ],
        "WorkingDir": "/srv",
        "User": "app",
        "Labels": {"org.example.from-image": "yes"},
        "StopSignal": "SIGINT",
    })
}

#[test]
fn a_write_in_one_run_is_gone_in_the_next_and_nothing_is_left() {
    let env = RunEnv::new("stateless", run_image::default_config());
    let layers = env.slate.root().join("layers");
    let before = Tree::snapshot(&layers).expect("snapshot of the layers");

    let script = format!(
        "{PRINT_ID}; echo scribble > /srv/data.txt; echo new > /etc/new-file; rm /bin/true; \
         mkdir /var/made; cat /srv/data.txt; ls /etc/new-file /var/made"
    );
    let out = env.run(&[], &["sh", "-c", &script]).success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() >= 4, "the first run's output: {out:?}");
    env.learn_id(lines[0]);
    assert_eq!(
        lines[1], "scribble",
        "the first run sees its own write: {out:?}"
    );

    let out = env
        .run(
            &[],
            &[
                "sh",
                "-c",
                "cat /srv/data.txt; ls /etc/new-file /var/made 2>&1; test -e /bin/true && echo true-is-back",
            ],
        )
        .success();
    assert!(
        out.stdout.starts_with("image data\n"),
        "the second run sees the image's file, not the first run's write: {out:?}"
    );
    assert!(
        out.stdout.contains("/etc/new-file: No such file")
            && out.stdout.contains("/var/made: No such file"),
        "files the first run created are gone: {out:?}"
    );
    assert!(
        out.stdout.contains("true-is-back"),
        "a file the first run deleted is back: {out:?}"
    );

    let after = Tree::snapshot(&layers).expect("snapshot of the layers");
    let diff = before.diff(&after, CompareOptions::default());
    assert!(
        diff.is_empty(),
        "runs changed the image's layers:\n  {}",
        diff.join("\n  ")
    );
    let runs = env.slate.root().join("runs");
    assert!(
        std::fs::read_dir(&runs)
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "{} is not empty",
        runs.display()
    );
    assert!(mounts_below(env.slate.dir().path()).is_empty());
}

#[test]
fn the_image_config_is_honoured() {
    let env = RunEnv::new("config", report_config());
    let out = env.run(&[], &[]).success();
    let r = report(&out);
    assert_eq!(get(&r, "args", &out), "from-cmd second", "Entrypoint + Cmd");
    assert_eq!(get(&r, "uid", &out), "1000", "User app");
    assert_eq!(get(&r, "gid", &out), "1000", "app's primary group");
    let mut groups: Vec<&str> = get(&r, "groups", &out).split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, ["1000", "29", "50"], "app's groups from /etc/group");
    assert_eq!(get(&r, "cwd", &out), "/srv", "WorkingDir");
    assert_eq!(get(&r, "env:FROM_IMAGE", &out), "image-value", "Env");
    assert_eq!(
        get(&r, "env:HOME", &out),
        "/home/app",
        "HOME from /etc/passwd"
    );
    assert!(
        get(&r, "env:PATH", &out).starts_with("/usr/local/sbin"),
        "the image's PATH"
    );
}

#[test]
fn a_command_replaces_cmd_but_keeps_the_entrypoint() {
    let env = RunEnv::new("command", report_config());
    let out = env.run(&[], &["given", "args"]).success();
    assert_eq!(get(&report(&out), "args", &out), "given args");
}

#[test]
fn entrypoint_flag_replaces_the_entrypoint_and_drops_the_image_cmd() {
    let env = RunEnv::new("entrypoint", report_config());
    // docker: --entrypoint drops the image's Cmd (it was written for the old entrypoint).
    let out = env.run(&["--entrypoint", "/bin/echo"], &[]).success();
    assert_eq!(out.stdout, "\n", "echo with no arguments: {out:?}");
    let out = env
        .run(&["--entrypoint", "/bin/echo"], &["a", "b"])
        .success();
    assert_eq!(out.stdout, "a b\n", "{out:?}");
    // --entrypoint "" clears it: the command runs on its own.
    let out = env
        .run(&["--entrypoint", ""], &["/bin/echo", "alone"])
        .success();
    assert_eq!(out.stdout, "alone\n", "{out:?}");
}

#[test]
fn env_flags_override_the_image_env() {
    let env = RunEnv::new("env", report_config());
    let file = env.slate.dir().path().join("env.list");
    std::fs::write(
        &file,
        "# a comment\nFROM_FILE=file-value\nOVERRIDDEN=file\n\nFROM_HOST_VIA_FILE\n",
    )
    .unwrap();
    let file = file.display().to_string();
    let out = run_image::run_with(
        &env.slate,
        &env.args(
            &[
                "--env-file",
                &file,
                "-e",
                "OVERRIDDEN=flag",
                "-e",
                "NEW=1",
                "-e",
                "FROM_HOST",
            ],
            &[],
        ),
        &[
            ("FROM_HOST", "host-value"),
            ("FROM_HOST_VIA_FILE", "via-file"),
        ],
        None,
    )
    .success();
    env.assert_clean(&out);
    let r = report(&out);
    assert_eq!(get(&r, "env:FROM_IMAGE", &out), "image-value");
    assert_eq!(get(&r, "env:FROM_FILE", &out), "file-value");
    assert_eq!(
        get(&r, "env:OVERRIDDEN", &out),
        "flag",
        "-e wins over --env-file and the image"
    );
    assert_eq!(get(&r, "env:NEW", &out), "1");
    assert_eq!(
        get(&r, "env:FROM_HOST", &out),
        "host-value",
        "-e NAME takes slate's own"
    );
    assert_eq!(get(&r, "env:FROM_HOST_VIA_FILE", &out), "via-file");
}

#[test]
fn workdir_and_hostname_flags() {
    let env = RunEnv::new("workdir", report_config());
    let out = env
        .run(&["-w", "/tmp", "--hostname", "box-1"], &[])
        .success();
    let r = report(&out);
    assert_eq!(get(&r, "cwd", &out), "/tmp");
    assert_eq!(get(&r, "hostname", &out), "box-1");
    // A working directory that is not in the image is created, as docker does.
    let out = env.run(&["-w", "/new/dir"], &[]).success();
    assert_eq!(get(&report(&out), "cwd", &out), "/new/dir");
}

#[test]
fn user_flag_by_name_uid_uid_gid_and_name_group() {
    let env = RunEnv::new("user", report_config());
    let ids = |flag: &str| {
        let out = env.run(&["-u", flag], &[]).success();
        let r = report(&out);
        let mut groups: Vec<String> = get(&r, "groups", &out)
            .split_whitespace()
            .map(String::from)
            .collect();
        groups.sort();
        (
            get(&r, "uid", &out).to_string(),
            get(&r, "gid", &out).to_string(),
            groups,
        )
    };
    assert_eq!(ids("root"), ("0".into(), "0".into(), vec!["0".to_string()]));
    assert_eq!(
        ids("app"),
        (
            "1000".into(),
            "1000".into(),
            vec!["1000".into(), "29".into(), "50".into()]
        )
    );
    // A uid of the passwd file is that user (its groups too); an unknown one has gid 0.
    let (u, g, _) = ids("1000");
    assert_eq!((u.as_str(), g.as_str()), ("1000", "1000"));
    let (u, g, _) = ids("4321");
    assert_eq!((u.as_str(), g.as_str()), ("4321", "0"));
    let (u, g, _) = ids("4321:4322");
    assert_eq!((u.as_str(), g.as_str()), ("4321", "4322"));
    let (u, g, _) = ids("app:staff");
    assert_eq!((u.as_str(), g.as_str()), ("1000", "50"));
    // A name the image does not know fails before anything runs.
    let out = env.run(&["-u", "nosuchuser"], &[]).failure(125);
    out.error_mentions(&["nosuchuser"]);
}

#[test]
fn tmpfs_flag_mounts_a_writable_tmpfs() {
    let env = RunEnv::new("tmpfs", run_image::default_config());
    let out = env
        .run(
            &["--tmpfs", "/scratch"],
            &[
                "sh",
                "-c",
                "echo x > /scratch/f && cat /scratch/f; grep ' /scratch ' /proc/self/mountinfo",
            ],
        )
        .success();
    assert!(out.stdout.starts_with("x\n"), "{out:?}");
    assert!(
        out.stdout.contains(" - tmpfs "),
        "/scratch is a tmpfs: {out:?}"
    );
}

#[test]
fn volumes_read_write_and_read_only() {
    let env = RunEnv::new("volume", run_image::default_config());
    let rw = env.slate.dir().subdir("vol-rw");
    let ro = env.slate.dir().subdir("vol-ro");
    std::fs::write(ro.join("given.txt"), "from the host\n").unwrap();
    let rw_arg = format!("{}:/data", rw.display());
    let ro_arg = format!("{}:/config:ro", ro.display());
    let out = env
        .run(
            &["-v", &rw_arg, "-v", &ro_arg],
            &[
                "sh",
                "-c",
                "echo written > /data/out.txt; cat /config/given.txt; \
                 if echo no > /config/new.txt; then echo ro-write-succeeded; fi",
            ],
        )
        .success();
    assert_eq!(
        std::fs::read_to_string(rw.join("out.txt")).unwrap_or_default(),
        "written\n",
        "a write to a rw volume reaches the host: {out:?}"
    );
    assert!(out.stdout.starts_with("from the host\n"), "{out:?}");
    assert!(!out.stdout.contains("ro-write-succeeded"), "{out:?}");
    assert!(
        out.stderr.contains("Read-only file system"),
        "writing to a :ro volume fails with EROFS: {out:?}"
    );
    assert!(!ro.join("new.txt").exists(), "the :ro volume was written");
}

#[test]
fn stdin_reaches_the_app_with_i() {
    let env = RunEnv::new("stdin", run_image::default_config());
    let out = env.run_stdin(&["-i"], &["cat"], "hi\nthere\n").success();
    assert_eq!(out.stdout, "hi\nthere\n", "{out:?}");
}

#[test]
fn stdin_does_not_reach_the_app_without_i() {
    let env = RunEnv::new("no-stdin", run_image::default_config());
    let out = env.run_stdin(&[], &["cat"], "hi\n").success();
    assert_eq!(
        out.stdout, "",
        "docker gives the app no stdin without -i: {out:?}"
    );
}

/// Runs `slate run -t` under `script`, which gives it a terminal.
fn run_in_pty(env: &RunEnv, cmd: &[&str]) -> (Option<i32>, String) {
    let mut line = vec![
        crate::harness::slate::SLATE_BIN.to_string(),
        "--root".into(),
        env.slate.root().display().to_string(),
        "--config".into(),
        env.slate
            .dir()
            .path()
            .join("config.toml")
            .display()
            .to_string(),
    ];
    for a in env.args(&["-t"], cmd) {
        line.push(a.to_string());
    }
    let quoted: Vec<String> = line
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let out = std::process::Command::new("script")
        .args(["-qec", &quoted.join(" "), "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running script (util-linux)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn t_gives_the_app_a_terminal() {
    let env = RunEnv::new("tty", run_image::default_config());
    let (code, out) = run_in_pty(&env, &["sh", "-c", "tty; echo TERM=$TERM; exit 5"]);
    assert_eq!(
        code,
        Some(5),
        "the app's status through a terminal: {out:?}"
    );
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(
        lines.iter().any(|l| l.ends_with("/dev/pts/0")),
        "tty inside prints /dev/pts/0: {out:?}"
    );
    assert!(
        lines.contains(&"TERM=xterm"),
        "TERM is set with -t: {out:?}"
    );
    let (code, out) = run_in_pty(&env, &["sh", "-c", "test -t 0 && test -t 1 && echo both"]);
    assert_eq!(code, Some(0), "{out:?}");
    assert!(out.contains("both"), "{out:?}");
    env.assert_clean(&out);
}

#[test]
fn t_output_is_only_what_the_app_wrote() {
    // docker -t without -i attaches no stdin: what the outer terminal sends (script writes a
    // NUL when its own stdin, /dev/null, ends) must not reach the app.
    let env = RunEnv::new("tty-exact", run_image::default_config());
    let (code, out) = run_in_pty(&env, &["sh", "-c", "sleep 0.3; tty"]);
    assert_eq!(code, Some(0));
    assert_eq!(out, "/dev/pts/0\r\n");
}

#[test]
fn init_flag_puts_an_init_in_front_of_the_app() {
    let env = RunEnv::new("init", run_image::default_config());
    let out = env.run(&[], &["sh", "-c", "echo $$"]).success();
    assert_eq!(
        out.stdout, "1\n",
        "without --init the app is PID 1: {out:?}"
    );
    let out = env
        .run(&["--init"], &["sh", "-c", "echo $$; sleep 0.1 & wait"])
        .success();
    let pid: u32 = out.stdout.trim().parse().unwrap_or(0);
    assert!(pid > 1, "with --init the app is not PID 1: {out:?}");
}

#[test]
fn labels_are_accepted_and_image_labels_do_not_break_the_run() {
    // There is no `slate inspect` yet to show them: this checks that --label is accepted
    // (and a bad one refused) next to an image that has labels of its own.
    let env = RunEnv::new("labels", report_config());
    env.run(&["--label", "a=b", "--label", "flag-only"], &[])
        .success();
    env.run(&["--label", "=novalue"], &[]).failure(125);
}

#[test]
fn image_with_several_layers_and_a_whiteout_runs_on_the_merged_tree() {
    let img = run_image::image(
        run_image::default_config(),
        vec![
            vec![
                Entry::file("srv/layer2.txt", "two\n"),
                Entry::whiteout("srv", "data.txt"),
            ],
            vec![Entry::file("srv/layer3.txt", "three\n")],
        ],
    );
    let env = RunEnv::with_image("layers", &img);
    let out = env.run(&[], &["sh", "-c", "ls /srv"]).success();
    assert_eq!(out.stdout, "layer2.txt\nlayer3.txt\n", "{out:?}");
}

#[test]
fn an_image_of_many_layers_runs() {
    // Absolute lower dir paths would fill the kernel's one page of overlay options at about
    // 40 layers; the store's short links, named relative to their directory, go far past
    // docker's own limit of 125.
    let extra: Vec<Vec<Entry>> = (0..150)
        .map(|i| vec![Entry::file(format!("layer{i}"), format!("{i}\n"))])
        .collect();
    let img = run_image::image(run_image::default_config(), extra);
    assert!(img.layers.len() > 150);
    let env = RunEnv::with_image("many-layers", &img);
    let out = env
        .run(&[], &["cat", "/layer0", "/layer77", "/layer149"])
        .success();
    assert_eq!(out.stdout, "0\n77\n149\n");
    env.assert_clean(&"many layers");
}

#[test]
fn a_relative_root_works() {
    // `--root ./store`: the store makes its root absolute, so overlay options and run
    // directories do not depend on where the child happens to be when it mounts.
    let img = run_image::image(
        run_image::default_config(),
        vec![vec![Entry::file("marker", "relative\n")]],
    );
    let holder = crate::harness::slate::Slate::new("run-relative-root");
    let tar = holder.dir().path().join("img.tar");
    crate::archive::write_archive(&tar, &crate::archive::layout_files(&[(&img, Some("v1"))]));
    let out = std::process::Command::new(crate::harness::slate::SLATE_BIN)
        .current_dir(holder.dir().path())
        .args([
            "--root",
            "store",
            "--config",
            "config.toml",
            "--state-dir",
            "state",
        ])
        .args([
            "run",
            "--rm",
            &format!("oci-archive:{}", tar.display()),
            "cat",
            "/marker",
        ])
        .output()
        .expect("running slate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "relative\n");
    assert!(mounts_below(holder.dir().path()).is_empty());
}
