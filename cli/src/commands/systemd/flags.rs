//! The `slate run` command line of a unit, from the flags given to `slate systemd unit`.
//!
//! The run flags are `slate run`'s own ([`RunArgs`], flattened into the unit's arguments), and
//! they are written back by walking clap's definition of `RunArgs` with the parsed matches: a
//! flag is re-emitted as `--LONG=VALUE` (one word whatever the value looks like) when it was
//! typed, and left out when it has its default, which `slate run` applies again. So a flag
//! added to `RunArgs` reaches units without a change here; only the few with a meaning for the
//! unit itself are named below (the unit sets them, or they make no sense in one).

use std::ffi::{OsStr, OsString};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args};

use super::quote;
use crate::cli::RunArgs;

/// Run flags the unit writes itself (or, for `--restart`, turns into `Restart=`).
pub(super) const OWNED: &[&str] = &[
    "help", "rm", "replace", "name", "pull", "restart", "sdnotify",
];

/// Run flags a unit cannot use, and why, for the one line that refuses them.
pub(super) const REFUSED: &[(&str, &str)] = &[
    (
        "detach",
        "systemd keeps the container in the background; the unit runs it in the foreground",
    ),
    ("interactive", "a unit has no input to keep open"),
    (
        "tty",
        "a unit has no terminal; the output goes to the journal",
    ),
    (
        "log_driver",
        "a unit's output goes to the journal (journalctl -u UNIT)",
    ),
    (
        "log_max_size",
        "a unit's output goes to the journal, which rotates it",
    ),
    (
        "log_max_files",
        "a unit's output goes to the journal, which rotates it",
    ),
];

/// Global options that say where slate keeps things: a unit must use the same ones as the
/// command that wrote it. (`--log-level` is about this command, not the unit.)
const GLOBALS: &[&str] = &["root", "config", "state_dir"];

/// The label `slate auto-update` looks for (podman's `io.containers.autoupdate` works too).
pub(crate) const AUTOUPDATE_LABEL: &str = "io.slate.autoupdate";

/// A unit's `slate run` line, every word already quoted for systemd.
#[derive(Debug, Default)]
pub(super) struct RunLine {
    /// Global options, before the verb; also used by the unit's `slate stop`.
    pub globals: Vec<String>,
    /// The user's run flags, one `--LONG=VALUE` (or `--LONG`) word each.
    pub flags: Vec<String>,
    /// The image, then the command and its arguments.
    pub image_and_command: Vec<String>,
    /// What the user should know about the line (printed, not fatal).
    pub warnings: Vec<String>,
}

pub(crate) fn given(m: &ArgMatches, id: &str) -> bool {
    m.value_source(id) == Some(ValueSource::CommandLine)
}

/// `--LONG` of a run flag, for messages: `-d/--detach`.
fn flag_name(arg: &clap::Arg) -> String {
    match (arg.get_short(), arg.get_long()) {
        (Some(s), Some(l)) => format!("-{s}/--{l}"),
        (None, Some(l)) => format!("--{l}"),
        (Some(s), None) => format!("-{s}"),
        (None, None) => arg.get_id().to_string(),
    }
}

/// The definition of `slate run`'s flags, as clap has it.
pub(crate) fn run_definition() -> clap::Command {
    RunArgs::augment_args(clap::Command::new("run"))
}

/// Who the typed run flags are written back for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum For {
    /// A unit's `slate run` line: the unit's own flags are left out, the ones that make no
    /// sense in a unit refused.
    Unit,
    /// The same container started again by `slate auto-update` (`run -d --replace --name N`
    /// plus these): everything but those three and `--help`, with `--env NAME` resolved now,
    /// since the restart does not run in this shell's environment.
    Replay,
}

/// The typed run flags, unquoted: one `--LONG=VALUE` (or `--LONG`) word each.
#[derive(Debug, Default)]
pub(crate) struct RunWords {
    pub flags: Vec<OsString>,
    /// The image, then the command and its arguments.
    pub image_and_command: Vec<OsString>,
    pub warnings: Vec<String>,
    /// For a replay: the values of the `--env NAME` flags (no `=`), from this environment.
    pub env: Vec<(OsString, OsString)>,
}

impl RunWords {
    /// Every word, flags first, as `slate run` takes them.
    pub fn args(&self) -> Vec<OsString> {
        let mut v = self.flags.clone();
        v.extend(self.image_and_command.iter().cloned());
        v
    }
}

/// Run flags a replayed `run -d` sets itself.
const REPLAY_OWNED: &[&str] = &["help", "detach", "replace", "name"];

/// The run flags typed in `m` (matches of `slate run`, or of `slate systemd unit`, which
/// flattens them), written back as words. `cwd` makes relative host paths absolute: a unit
/// runs in `/`, a replay wherever `slate auto-update` was started.
pub(crate) fn typed_run_words(
    m: &ArgMatches,
    cwd: &Path,
    purpose: For,
) -> anyhow::Result<RunWords> {
    let mut words = RunWords::default();
    let def = run_definition();
    for arg in def.get_arguments() {
        let id = arg.get_id().as_str();
        if !given(m, id) {
            continue;
        }
        match purpose {
            For::Unit => {
                if OWNED.contains(&id) {
                    continue;
                }
                if let Some((_, why)) = REFUSED.iter().find(|(r, _)| *r == id) {
                    bail!("{} makes no sense in a unit: {why}", flag_name(arg));
                }
            }
            For::Replay if REPLAY_OWNED.contains(&id) => continue,
            For::Replay => {}
        }
        if arg.is_positional() {
            for (i, v) in m.get_raw(id).into_iter().flatten().enumerate() {
                let v = if i == 0 { image(v, cwd)? } else { v.to_owned() };
                words.image_and_command.push(v);
            }
            continue;
        }
        let Some(long) = arg.get_long() else {
            bail!("cannot write {} back: it has no long name", flag_name(arg));
        };
        match arg.get_action() {
            ArgAction::SetTrue => words.flags.push(format!("--{long}").into()),
            ArgAction::Set | ArgAction::Append => {
                for v in m.get_raw(id).into_iter().flatten() {
                    let v = absolute_host_path(id, v, cwd)?;
                    if id == "env" && !v.as_encoded_bytes().contains(&b'=') {
                        match purpose {
                            For::Unit => words.warnings.push(format!(
                                "--env {}: the unit takes it from its own environment, which systemd \
                                 starts empty; write NAME=VALUE, or use --env-file FILE",
                                v.to_string_lossy()
                            )),
                            // The value is kept apart from the words (it is often a secret,
                            // and the words become a command line); the flag stays `--env NAME`.
                            For::Replay => match std::env::var_os(&v) {
                                Some(value) => words.env.push((v.clone(), value)),
                                // docker passes nothing for an unset NAME.
                                None => continue,
                            },
                        }
                    }
                    let mut w = OsString::from(format!("--{long}="));
                    w.push(v);
                    words.flags.push(w);
                }
            }
            other => bail!(
                "cannot write {} back (clap action {other:?})",
                flag_name(arg)
            ),
        }
    }
    Ok(words)
}

/// Builds the line from the matches of `slate systemd unit` (which hold the run flags and, as
/// clap propagates them, the global options). `cwd` makes relative host paths absolute: a
/// unit runs in `/`.
pub(super) fn run_line(
    m: &ArgMatches,
    cwd: &Path,
    auto_update: Option<&str>,
) -> anyhow::Result<RunLine> {
    let mut line = RunLine::default();
    for id in GLOBALS {
        if !matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        for v in m.get_raw(id).into_iter().flatten() {
            let v = std::path::absolute(cwd.join(v))
                .with_context(|| format!("cannot make --{} absolute", id.replace('_', "-")))?;
            line.globals
                .push(long_word(&id.replace('_', "-"), v.as_os_str())?);
        }
    }
    let words = typed_run_words(m, cwd, For::Unit)?;
    for f in &words.flags {
        line.flags.push(quote::word(f)?);
    }
    for w in &words.image_and_command {
        line.image_and_command.push(quote::word(w)?);
    }
    line.warnings = words.warnings;
    if let Some(mode) = auto_update {
        line.flags.push(long_word(
            "label",
            OsStr::new(&format!("{AUTOUPDATE_LABEL}={mode}")),
        )?);
    }
    Ok(line)
}

/// The image, checked now rather than at the unit's first start; an `oci:`/`oci-archive:`
/// path made absolute.
fn image(v: &OsStr, cwd: &Path) -> anyhow::Result<OsString> {
    let s = v
        .to_str()
        .ok_or_else(|| anyhow!("the image {:?} is not UTF-8", v.to_string_lossy()))?;
    // `slate run`'s positional takes anything after the last flag it knows, so a mistyped flag
    // arrives here.
    if s.starts_with('-') {
        bail!("unknown flag {s}: neither slate run nor slate systemd unit has it (the image comes after the flags)");
    }
    for prefix in ["oci-archive:", "oci:"] {
        if let Some(path) = s.strip_prefix(prefix) {
            if path.starts_with('/') {
                return Ok(v.to_owned());
            }
            return Ok(format!("{prefix}{}", cwd.join(path).display()).into());
        }
    }
    s.parse::<slate_image::reference::Reference>()
        .with_context(|| format!("invalid image {s:?}"))?;
    Ok(v.to_owned())
}

fn long_word(long: &str, value: &OsStr) -> anyhow::Result<String> {
    let mut w = OsString::from(format!("--{long}="));
    w.push(value);
    quote::word(&w).with_context(|| format!("cannot write --{long} into a unit"))
}

/// Host paths a run flag may give relative to the current directory, made absolute: the unit
/// runs in `/`. `-v` takes the same rule as `slate run` (`.`-relative only; other relative
/// names are named volumes), `--env-file` and `--security-opt seccomp=FILE` any relative path.
fn absolute_host_path(id: &str, v: &OsStr, cwd: &Path) -> anyhow::Result<OsString> {
    let Some(s) = v.to_str() else {
        return Ok(v.to_owned());
    };
    // Files slate opens as given (the kernel resolves `..`): joined only.
    let joined = |p: &str| cwd.join(p).to_string_lossy().into_owned();
    let fixed = match id {
        "env_file" if !s.starts_with('/') => joined(s),
        "security_opt" => match s.strip_prefix("seccomp=") {
            Some(p) if p != "unconfined" && !p.starts_with('/') => format!("seccomp={}", joined(p)),
            _ => return Ok(v.to_owned()),
        },
        // As `slate run` resolves them: joined, then `.` and `..` removed lexically.
        "volume" => match s.split_once(':') {
            Some((host, rest)) if crate::spec::is_cwd_relative(host) => {
                let host = crate::spec::clean_abs(&joined(host))
                    .with_context(|| format!("cannot make the host path of -v {s:?} absolute"))?;
                format!("{}:{rest}", host.display())
            }
            _ => return Ok(v.to_owned()),
        },
        _ => return Ok(v.to_owned()),
    };
    Ok(fixed.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_run_flags_exist() {
        // A renamed RunArgs field must not silently drop out of these lists.
        let def = run_definition();
        let ids: Vec<&str> = def.get_arguments().map(|a| a.get_id().as_str()).collect();
        for id in OWNED.iter().chain(REFUSED.iter().map(|(id, _)| id)) {
            assert!(ids.contains(id), "RunArgs has no {id}: {ids:?}");
        }
    }

    /// The words `slate auto-update` replays for `slate run ARGS` typed in `/home/pi`.
    fn replay(args: &[&str]) -> Vec<String> {
        use clap::CommandFactory as _;
        let argv: Vec<&str> = ["slate", "run"].iter().chain(args).copied().collect();
        let matches = crate::cli::Cli::command()
            .try_get_matches_from(argv)
            .unwrap();
        let m = matches.subcommand_matches("run").unwrap();
        let words = typed_run_words(m, Path::new("/home/pi"), For::Replay).unwrap();
        assert_eq!(
            words.env,
            [("SLATE_FLAGS_TEST_TOKEN".into(), "s3cret".into())],
            "the values of --env NAME, from this environment"
        );
        words
            .args()
            .into_iter()
            .map(|w| w.into_string().unwrap())
            .collect()
    }

    #[test]
    fn a_replay_keeps_the_typed_flags_but_its_own() {
        // SAFETY: the test process's environment; no other test reads this variable.
        unsafe { std::env::set_var("SLATE_FLAGS_TEST_TOKEN", "s3cret") };
        let words = replay(&[
            "-d",
            "--name",
            "web",
            "--replace",
            "--rm",
            "-e",
            "SLATE_FLAGS_TEST_TOKEN",
            "-e",
            "SLATE_FLAGS_TEST_UNSET",
            "-e",
            "A=1",
            "-v",
            "./www:/www:ro",
            "--restart",
            "always",
            "-l",
            "io.slate.autoupdate=registry",
            "img:1",
            "sh",
            "-c",
            "echo hi",
        ]);
        // The image and its command last, as typed.
        assert_eq!(words[words.len() - 4..], ["img:1", "sh", "-c", "echo hi"]);
        // The flags in RunArgs' order, which is not the typed one: compared as a set.
        let mut flags = words[..words.len() - 4].to_vec();
        flags.sort();
        let mut want = vec![
            "--env=SLATE_FLAGS_TEST_TOKEN",
            "--env=A=1",
            "--volume=/home/pi/www:/www:ro",
            "--rm",
            "--restart=always",
            "--label=io.slate.autoupdate=registry",
        ];
        want.sort();
        assert_eq!(
            flags, want,
            "-d, --name and --replace are the replay's own; an unset --env NAME is dropped, a set one's value is not in the words"
        );
    }

    #[test]
    fn relative_host_paths_become_absolute() {
        let cwd = Path::new("/home/pi/app");
        let f = |id, v: &str| {
            absolute_host_path(id, OsStr::new(v), cwd)
                .unwrap()
                .into_string()
                .unwrap()
        };
        assert_eq!(f("volume", "./www:/www:ro"), "/home/pi/app/www:/www:ro");
        assert_eq!(f("volume", "..:/up"), "/home/pi:/up");
        assert_eq!(f("volume", "/srv:/srv"), "/srv:/srv");
        assert_eq!(
            f("volume", "data:/data"),
            "data:/data",
            "a named volume stays as typed"
        );
        assert_eq!(f("env_file", "app.env"), "/home/pi/app/app.env");
        assert_eq!(f("env_file", "../x.env"), "/home/pi/app/../x.env");
        assert_eq!(
            f("security_opt", "seccomp=p.json"),
            "seccomp=/home/pi/app/p.json"
        );
        assert_eq!(
            f("security_opt", "seccomp=unconfined"),
            "seccomp=unconfined"
        );
        assert_eq!(f("security_opt", "no-new-privileges"), "no-new-privileges");
        assert_eq!(
            f("workdir", "rel"),
            "rel",
            "container paths are not touched"
        );
    }
}
