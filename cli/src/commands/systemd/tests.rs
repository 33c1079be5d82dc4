//! The unit's text, and every run flag through it and back: `slate systemd unit ARGS` is
//! rendered, its `ExecStart=` read back with the model of systemd's parser (`quote::model`)
//! and parsed as `slate run` again; the container must come out the same. The VM test
//! (tests/vm/guest/unit.sh) does the same through systemd itself.

#![allow(clippy::unwrap_used)]

use std::ffi::OsString;

use clap::{Args, CommandFactory, FromArgMatches, Parser};

use super::*;
use crate::cli::{Cli, Command as Verb, PullPolicy, SystemdCommand};

const SLATE: &str = "/usr/local/bin/slate";

fn argv(args: &[&str]) -> Vec<OsString> {
    ["slate", "systemd", "unit"]
        .iter()
        .chain(args)
        .map(OsString::from)
        .collect()
}

/// `slate systemd unit ARGS` as `run` builds it, from `cwd`.
fn unit_in(args: &[&str], cwd: &str) -> anyhow::Result<Unit> {
    let all = argv(args);
    let matches = Cli::command().try_get_matches_from(&all)?;
    let m = matches
        .subcommand_matches("systemd")
        .and_then(|m| m.subcommand_matches("unit"))
        .unwrap();
    let parsed = UnitArgs::from_arg_matches(m)?;
    Unit::new(&parsed, m, Path::new(cwd), Path::new(SLATE))
}

fn unit(args: &[&str]) -> anyhow::Result<Unit> {
    unit_in(args, "/home/pi")
}

fn err(args: &[&str]) -> String {
    format!("{:#}", unit(args).err().expect("must be refused"))
}

/// The value of `KEY=` in a rendered unit, continuation lines joined as systemd joins them.
fn setting(text: &str, key: &str) -> Option<String> {
    let mut lines = text.lines();
    let first = lines.find_map(|l| l.strip_prefix(&format!("{key}=")))?;
    let mut value = first.to_owned();
    while let Some(v) = value.strip_suffix('\\') {
        value = format!("{v} {}", lines.next()?);
    }
    Some(value)
}

/// `ExecStart=` as systemd hands it to exec: argv.
fn exec_start(u: &Unit) -> Vec<String> {
    let line = setting(&u.render(), "ExecStart").expect("an ExecStart= line");
    quote::model::split(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// The unit's command line parsed as slate would parse it: `slate ... run ...`.
fn run_of(u: &Unit) -> (Cli, RunArgs) {
    let argv = exec_start(u);
    assert_eq!(argv[0], SLATE);
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{e}: {argv:?}"));
    let Verb::Run(run) = &cli.command else {
        panic!("not a run: {argv:?}")
    };
    let run = (**run).clone();
    (cli, run)
}

/// What `slate run` must see for `slate systemd unit ARGS`: the same flags, with the unit's own.
fn expected_run(args: &[&str]) -> RunArgs {
    let cli = Cli::try_parse_from(argv(args)).unwrap();
    let Verb::Systemd(SystemdCommand::Unit(u)) = cli.command else {
        panic!()
    };
    let mut run = u.run;
    run.rm = true;
    run.replace = true;
    if !args.iter().any(|a| a.starts_with("--pull")) {
        run.pull = PullPolicy::Always;
    }
    // Turned into Restart=, not given to slate run.
    run.restart = "no".to_owned();
    // The unit's default is slate run's: set explicitly, so the unit says which.
    if !args.iter().any(|a| a.starts_with("--sdnotify")) {
        run.sdnotify = crate::sdnotify::Mode::Conmon;
    }
    run
}

fn assert_round_trip(args: &[&str]) {
    let u = unit(args).unwrap_or_else(|e| panic!("{e:#}: {args:?}"));
    let (_, got) = run_of(&u);
    let want = expected_run(args);
    assert_eq!(
        format!("{got:#?}"),
        format!("{want:#?}"),
        "ExecStart of {args:?}:\n{}",
        u.render()
    );
}

/// A value for each run flag that takes one: the nastiest clap accepts for it.
fn sample_value(arg: &clap::Arg, all: &[&str]) -> String {
    if let Some(v) = arg.get_possible_values().last() {
        return v.get_name().to_owned();
    }
    let long = arg.get_long().unwrap();
    let candidates = [r#"/abs/we$ird %n val"ue' \ ; #x"#, "7", "0.5"];
    for c in candidates {
        let flag = format!("--{long}={c}");
        let mut a: Vec<&str> = all.to_vec();
        a.insert(2, &flag);
        if Cli::try_parse_from(argv(&a)).is_ok() {
            return c.to_owned();
        }
    }
    panic!("no sample value for --{long}")
}

#[test]
fn every_run_flag_round_trips_alone_and_all_together() {
    let base = ["--name", "web", "img:1"];
    let def = RunArgs::augment_args(clap::Command::new("run"));
    let mut together: Vec<String> = Vec::new();
    let mut tried = 0;
    for arg in def.get_arguments() {
        let id = arg.get_id().as_str();
        if flags::OWNED.contains(&id)
            || flags::REFUSED.iter().any(|(r, _)| *r == id)
            || arg.is_positional()
        {
            continue;
        }
        let long = arg.get_long().unwrap();
        let words: Vec<String> = if arg.get_action().takes_values() {
            let v = sample_value(arg, &base);
            vec![format!("--{long}"), v]
        } else {
            vec![format!("--{long}")]
        };
        let mut args: Vec<&str> = words.iter().map(String::as_str).collect();
        args.extend(base);
        assert_round_trip(&args);
        together.extend(words);
        tried += 1;
    }
    assert!(tried > 20, "only {tried} run flags tried");
    let mut args: Vec<&str> = together.iter().map(String::as_str).collect();
    args.extend(base);
    assert_round_trip(&args);
}

#[test]
fn repeated_flags_keep_their_order() {
    assert_round_trip(&[
        "-e",
        "B=2",
        "-e",
        "A=1",
        "-v",
        "/a:/a",
        "-v",
        "/b:/b:ro",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        "--name",
        "web",
        "img",
    ]);
}

#[test]
fn the_command_after_the_image_round_trips_word_for_word() {
    let cmd = [
        "sh",
        "-c",
        r#"echo "$HOME" 100% \ 'q' ; exit 3"#,
        "",
        "a b",
        ";",
        "--rm",
        "-d",
        "#",
        "$$",
        "%%",
        "\t\n",
        "it's",
    ];
    let mut args = vec!["--name", "web", "busybox"];
    args.extend(cmd);
    assert_round_trip(&args);
    let u = unit(&args).unwrap();
    let (_, run) = run_of(&u);
    assert_eq!(run.command(), cmd);
}

#[test]
fn explicit_pull_restart_and_sdnotify_choices_are_kept() {
    assert_round_trip(&["--pull", "never", "--name", "web", "img"]);
    let u = unit(&["--restart", "always", "--name", "web", "img"]).unwrap();
    assert_eq!(setting(&u.render(), "Restart").unwrap(), "always");
    let u = unit(&["--restart-policy", "on-abnormal", "--name", "web", "img"]).unwrap();
    assert_eq!(setting(&u.render(), "Restart").unwrap(), "on-abnormal");
    let u = unit(&["--restart", "unless-stopped", "--name", "web", "img"]).unwrap();
    assert_eq!(setting(&u.render(), "Restart").unwrap(), "always");
    assert_round_trip(&["--sdnotify", "container", "--name", "web", "img"]);
    let u = unit(&["--sdnotify=container", "--name", "web", "img"]).unwrap();
    assert!(exec_start(&u).contains(&"--sdnotify=container".to_owned()));
    let msg = err(&["--sdnotify", "ignore", "--name", "web", "img"]);
    assert!(
        msg.contains("--sdnotify=ignore") && msg.contains("Type=notify"),
        "{msg}"
    );
}

#[test]
fn the_unit_has_the_recommended_shape() {
    let u = unit(&[
        "--stop-timeout",
        "25",
        "--name",
        "web",
        "-m",
        "64m",
        "nginx:alpine",
    ])
    .unwrap();
    let text = u.render();
    for (key, value) in [
        ("Description", "slate container web (nginx:alpine)"),
        ("Wants", "network-online.target"),
        ("After", "network-online.target"),
        ("Type", "notify"),
        ("NotifyAccess", "all"),
        ("Delegate", "yes"),
        ("KillMode", "mixed"),
        ("TimeoutStartSec", "900"),
        ("TimeoutStopSec", "45"),
        ("SuccessExitStatus", "143"),
        ("Restart", "on-failure"),
        ("ExecStop", "-/usr/local/bin/slate stop -t 25 web"),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(
            setting(&text, key).as_deref(),
            Some(value),
            "{key}= in\n{text}"
        );
    }
    assert!(setting(&text, "Documentation").is_some_and(|d| d.starts_with("http")));
    assert_eq!(u.file_name, "slate-web.service");
    assert_eq!(
        exec_start(&u),
        [
            SLATE,
            "run",
            "--rm",
            "--replace",
            "--name",
            "web",
            "--pull",
            "always",
            "--sdnotify=conmon",
            "--memory=64m",
            "--stop-timeout=25",
            "nginx:alpine"
        ]
    );
    assert!(
        !text.contains("Environment="),
        "slate puts nothing in the unit's environment:\n{text}"
    );
}

#[test]
fn global_options_reach_run_and_stop_as_absolute_paths() {
    let u = unit_in(
        &[
            "--root",
            "store",
            "--state-dir",
            "/run/s",
            "--name",
            "web",
            "img",
        ],
        "/srv/slate",
    )
    .unwrap();
    let (cli, _) = run_of(&u);
    assert_eq!(cli.root.as_deref(), Some(Path::new("/srv/slate/store")));
    assert_eq!(cli.state_dir.as_deref(), Some(Path::new("/run/s")));
    let stop = setting(&u.render(), "ExecStop").unwrap();
    let stop = quote::model::split(stop.trim_start_matches('-')).unwrap();
    let cli = Cli::try_parse_from(&stop).unwrap();
    assert_eq!(cli.root.as_deref(), Some(Path::new("/srv/slate/store")));
    assert_eq!(cli.state_dir.as_deref(), Some(Path::new("/run/s")));
    assert!(matches!(cli.command, Verb::Stop(_)));
}

#[test]
fn relative_host_paths_and_archives_become_absolute() {
    let u = unit_in(
        &[
            "-v",
            "./www:/www",
            "--env-file",
            "app.env",
            "--name",
            "web",
            "oci-archive:img.tar",
        ],
        "/home/pi",
    )
    .unwrap();
    let (_, run) = run_of(&u);
    assert_eq!(run.volume, ["/home/pi/www:/www"]);
    assert_eq!(run.env_file, [PathBuf::from("/home/pi/app.env")]);
    assert_eq!(run.image(), "oci-archive:/home/pi/img.tar");
}

#[test]
fn auto_update_labels_the_container() {
    let u = unit(&["--auto-update", "-l", "a=b", "--name", "web", "img"]).unwrap();
    let (_, run) = run_of(&u);
    assert_eq!(run.label, ["a=b", "io.slate.autoupdate=registry"]);
    assert_eq!(run.pull, PullPolicy::Always);
    let u = unit(&["--auto-update=local", "--name", "web", "img"]).unwrap();
    let (_, run) = run_of(&u);
    assert_eq!(run.label, ["io.slate.autoupdate=local"]);
    assert_eq!(
        run.pull,
        PullPolicy::Missing,
        "a local container's restarts must not need a registry"
    );
    assert!(unit(&["--auto-update=sometimes", "--name", "web", "img"]).is_err());
}

#[test]
fn the_auto_update_timer_runs_slate_with_the_units_globals() {
    let [(sname, service), (tname, timer)] =
        auto_update_files(SLATE, &["--root=/srv/slate".to_owned()], "*-*-* 04:00").unwrap();
    assert_eq!(sname, "slate-auto-update.service");
    assert_eq!(tname, "slate-auto-update.timer");
    assert!(service.contains("Type=oneshot\n"), "{service}");
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let cli = Cli::try_parse_from(quote::model::split(exec).unwrap()).unwrap();
    assert_eq!(cli.root.as_deref(), Some(Path::new("/srv/slate")));
    assert!(matches!(cli.command, Verb::AutoUpdate(_)));
    for want in [
        "OnCalendar=*-*-* 04:00\n",
        "RandomizedDelaySec=900\n",
        "Persistent=true\n",
        "WantedBy=timers.target\n",
    ] {
        assert!(timer.contains(want), "{want} not in {timer}");
    }
    assert!(auto_update_files(SLATE, &[], "daily\nExecStart=/bin/evil").is_err());
    assert!(auto_update_files(SLATE, &[], " ").is_err());
}

#[test]
fn an_existing_timer_for_other_global_options_is_left_alone() {
    if systemd_running() {
        return; // install() would run systemctl here.
    }
    let dir = tempfile::tempdir().unwrap();
    let first = auto_update_files(SLATE, &["--root=/srv/a".to_owned()], "daily").unwrap();
    std::fs::write(dir.path().join(&first[0].0), &first[0].1).unwrap();
    let argv: Vec<OsString> = argv(&[
        "--install",
        "--unit-dir",
        dir.path().to_str().unwrap(),
        "--auto-update",
        "--name",
        "web",
        "img",
    ]);
    let matches = Cli::command().try_get_matches_from(&argv).unwrap();
    let Verb::Systemd(SystemdCommand::Unit(args)) =
        Cli::from_arg_matches(&matches).unwrap().command
    else {
        panic!("not a unit");
    };
    run_with_matches(*args, &matches).unwrap();
    assert!(dir.path().join("slate-web.service").is_file());
    let kept = std::fs::read_to_string(dir.path().join("slate-auto-update.service")).unwrap();
    assert_eq!(
        kept, first[0].1,
        "the first unit's timer service was replaced"
    );
}

#[test]
fn install_writes_and_loads_the_timer_with_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let u = unit(&["--auto-update", "--name", "web", "img"]).unwrap();
    let mut files = vec![(u.file_name.clone(), u.render())];
    files.extend(auto_update_files(SLATE, &u.line.globals, "daily").unwrap());
    // No systemd here (or not as PID 1 of this test): the files are written all the same.
    if !systemd_running() {
        install(dir.path(), &files, false, false).unwrap();
        for f in [
            "slate-web.service",
            "slate-auto-update.service",
            "slate-auto-update.timer",
        ] {
            assert!(dir.path().join(f).is_file(), "{f} not written");
        }
    }
}

#[test]
fn flags_that_make_no_sense_in_a_unit_are_refused_one_line_each() {
    for (flag, says) in [
        ("-d", "-d/--detach"),
        ("-i", "-i/--interactive"),
        ("-t", "-t/--tty"),
        ("--log-driver=journald", "--log-driver"),
        ("--log-max-size=1m", "--log-max-size"),
        ("--log-max-files=2", "--log-max-files"),
    ] {
        let msg = err(&[flag, "--name", "web", "img"]);
        assert!(
            msg.contains(says) && msg.contains("makes no sense in a unit") && !msg.contains('\n'),
            "{flag}: {msg}"
        );
    }
    // Set anyway: accepted as given.
    assert_round_trip(&["--rm", "--replace", "--name", "web", "img"]);
}

#[test]
fn a_name_is_required_and_must_be_a_container_name() {
    assert!(err(&["img"]).contains("--name"));
    assert!(err(&["--name", "a b", "img"]).contains("invalid container name"));
    assert!(err(&["--name", "-x", "img"]).contains("invalid container name"));
}

#[test]
fn bad_images_and_restart_policies_are_refused_now() {
    assert!(err(&["--name", "web", "Bad Image"]).contains("invalid image"));
    assert!(err(&["--name", "web", "--bogus", "img"]).contains("unknown flag --bogus"));
    let msg = err(&["--restart", "on-failure:3", "--name", "web", "img"]);
    assert!(msg.contains("StartLimitBurst"), "{msg}");
    assert!(err(&["--restart-policy", "sometimes", "--name", "web", "img"]).contains("sometimes"));
}

#[test]
fn an_env_without_value_warns() {
    let u = unit(&["-e", "TOKEN", "--name", "web", "img"]).unwrap();
    assert_eq!(u.line.warnings.len(), 1);
    assert!(u.line.warnings[0].contains("--env-file"));
}
