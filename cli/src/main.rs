//! The `slate` command line: parses, decides and prints. The work is done by
//! `slate-image` (pull, store, rootfs) and `slate-runtime` (containers).

mod cli;
mod commands;
mod config;
mod containers;
mod copy;
mod health;
mod listing;
mod logs;
mod network;
mod oci;
mod output;
mod progress;
mod sdnotify;
mod spec;
mod state;
mod supervisor;
mod volumes;

use std::process::ExitCode;

use clap::Parser;

/// Exit status when slate itself fails (docker's convention for `run`; also used by every
/// other command so scripts can tell slate's failures from a container's status).
pub const EXIT_SLATE_FAILED: u8 = 125;

fn main() -> ExitCode {
    static_nss::pin_host_lookups();
    if let Some(code) = supervisor::fast_path() {
        return ExitCode::from(code);
    }
    // runc's command line: as `slate-runc` (or `runc`), or `slate oci ...`.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.first().is_some_and(|a| oci::is_runc_name(a)) {
        return oci_main(args);
    }
    if args.get(1).is_some_and(|a| a == "oci") {
        return oci_main(args.into_iter().skip(1).collect());
    }
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; a flag that does not parse is
            // slate's failure: docker's 125, not clap's 2, so scripts can tell it from the
            // container's own status.
            let code = if e.use_stderr() { EXIT_SLATE_FAILED } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.log_level.as_deref());
    // What relays a container's output keeps going when its reader goes (the app's output
    // is dropped, the container lives on); cp and logs handle a closed stdout themselves.
    let relays = matches!(
        cli.command,
        cli::Command::Run(_) | cli::Command::Exec(_) | cli::Command::Cp(_) | cli::Command::Logs(_)
    );
    if !relays {
        end_quietly_on_a_closed_stdout();
    }
    let run_args = match &cli.command {
        cli::Command::Run(a) => Some(a.as_ref()),
        cli::Command::Systemd(cli::SystemdCommand::Unit(u)) => Some(&u.run),
        _ => None,
    };
    if let Some(word) = run_args.map(|a| a.image()).filter(|w| w.starts_with('-')) {
        // Everything after the first word that is not a flag is the image and its command,
        // so an unknown flag would otherwise be read as the image.
        eprintln!("slate: {}", cli::misplaced_flag(word, &cli::run_flags()));
        return ExitCode::from(EXIT_SLATE_FAILED);
    }
    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: what failed, on what, and why (the whole context chain). Causes
            // quoted from elsewhere (a tar header, a registry's body) may hold newlines.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("slate: {msg}");
            ExitCode::from(exit_code_for(&e))
        }
    }
}

/// `slate ps | head -1`, `slate-runc state ID | grep -q running`: when the reader of stdout
/// goes away, end as Unix tools do, by SIGPIPE, instead of panicking in `println!` with a
/// backtrace (Rust starts programs with SIGPIPE ignored). Not for the commands that relay a
/// container's output, and not inherited by what slate starts that matters: a supervisor is
/// a fresh Rust program (SIGPIPE ignored again) and a container's process resets every
/// disposition.
fn end_quietly_on_a_closed_stdout() {
    // SAFETY: signal(2) with SIG_DFL installs no handler; the process is single-threaded here.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The OCI command line, from a sealed copy of the binary when it creates containers (the
/// container's process is a clone of this one: CVE-2019-5736, see slate_runtime::seal).
fn oci_main(args: Vec<std::ffi::OsString>) -> ExitCode {
    init_logging(None);
    // Parsed, not guessed from the first word that is not a flag: containerd and podman
    // call `runc --root DIR --log FILE create ...`, and taking DIR for the verb skipped the
    // seal, leaving the container's process a clone of the host's binary.
    let verb = oci::verb_of(&args);
    let creates = verb == oci::Verb::Creates;
    // `run` and `exec` relay the container's output; the rest print and end.
    if verb == oci::Verb::Other {
        end_quietly_on_a_closed_stdout();
    }
    if creates {
        let scratch = std::path::Path::new("/run/slate-runc");
        if let Err(e) = std::fs::create_dir_all(scratch)
            .map_err(anyhow::Error::from)
            .and_then(|_| slate_runtime::seal::ensure(scratch).map_err(anyhow::Error::from))
        {
            eprintln!("slate-runc: cannot run from a sealed copy of slate: {e:#}");
            return ExitCode::from(1);
        }
    }
    oci::main(args)
}

/// Host name lookups of the static ARM builds (cross/build: glibc `+crt-static`).
///
/// glibc resolves names through the sources `/etc/nsswitch.conf` lists. `files` and `dns`
/// are built into glibc, but any other source is a shared module that a static program
/// would `dlopen` from the board's own glibc, of another version: Raspberry Pi OS lists
/// `mdns4_minimal`, and glibc documents that mixing versions this way may fail or crash.
/// So the static build pins host lookups to `files dns` (what docker's pure-Go resolver
/// does too) before anything resolves. A dynamic build keeps the system's configuration.
mod static_nss {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_feature = "crt-static"))]
    pub fn pin_host_lookups() {
        extern "C" {
            // glibc's public override of one nsswitch.conf line (GLIBC_2.0).
            fn __nss_configure_lookup(
                db: *const std::ffi::c_char,
                line: *const std::ffi::c_char,
            ) -> std::ffi::c_int;
        }
        // SAFETY: both arguments are NUL-terminated static strings; called first thing
        // in main, before any thread exists or any lookup ran.
        let rc = unsafe { __nss_configure_lookup(c"hosts".as_ptr(), c"files dns".as_ptr()) };
        debug_assert_eq!(rc, 0);
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu", target_feature = "crt-static")))]
    pub fn pin_host_lookups() {}
}

fn exit_code_for(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<commands::ExitWith>()
        .map(|x| x.code)
        .unwrap_or(1)
}

/// Dependencies' chatter that is not the user's business: libcgroups warns about every v1
/// controller this kernel lacks on each start (hugetlb, net_cls...), which says nothing
/// about the container.
const QUIET_DEPS: &str = "hyper=warn,reqwest=warn,rustls=warn,h2=warn,libcgroups=error";

/// Whether log lines get colours: for a terminal only (a unit's stderr is the journal,
/// which would keep the escape codes, as would a file or a pipe), and not when `NO_COLOR`
/// is set to anything but the empty string (no-color.org).
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_logging(level: Option<&str>) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    // `target=level` directives, comma-separated, with a bare level as the default: what
    // `--log-level` and `SLATE_LOG` need. (tracing's EnvFilter would also take span and
    // field filters, at the price of a regex engine: a tenth of the ARM binaries.)
    let quiet = |l: &str| format!("{l},{QUIET_DEPS}");
    let directives = match level {
        Some(l) => quiet(l),
        None => std::env::var("SLATE_LOG").unwrap_or_else(|_| quiet("warn")),
    };
    let filter: Targets = directives.parse().unwrap_or_else(|e| {
        eprintln!("slate: ignoring log directives {directives:?}: {e}");
        quiet("warn").parse().unwrap_or_default()
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour(
                    std::io::IsTerminal::is_terminal(&std::io::stderr()),
                    std::env::var_os("NO_COLOR").as_deref(),
                ))
                .with_target(false)
                .without_time(),
        )
        .with(filter)
        .init();
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(super::colour(true, None));
        assert!(!super::colour(false, None), "a pipe or the journal");
        assert!(!super::colour(true, Some(OsStr::new("1"))));
        // no-color.org: an empty NO_COLOR does not count.
        assert!(super::colour(true, Some(OsStr::new(""))));
    }
}
