//! `slate systemd unit`: a systemd service for one container, in the shape systemd's and
//! podman's documentation give a containerised service. Printed, or with `--install` written
//! to `/etc/systemd/system/slate-NAME.service` and loaded (`systemctl daemon-reload`).
//!
//! Every start of the unit deploys the image anew on a fresh root filesystem:
//! `slate run --rm --replace --name NAME --pull always --sdnotify=conmon [run flags] IMAGE`,
//! in the foreground, as the unit's main process. What each setting is for:
//! - `Type=notify`, `NotifyAccess=all`: the unit is active once the container runs (slate
//!   sends READY=1 and its own PID as MAINPID; with `--sdnotify=container` the app does, from
//!   inside the container, hence `all`). A pull on a slow link counts as starting:
//!   `TimeoutStartSec=` (`--start-timeout`).
//! - `Delegate=yes`: slate creates the container's cgroup inside the unit's and enables
//!   controllers there (runtime `cgroups`); without delegation systemd owns that tree and may
//!   take the controllers back whenever it realizes the unit again.
//! - `ExecStop=slate stop -t T NAME`: the image's StopSignal to the container's PID 1, T
//!   seconds, then SIGKILL to its cgroup (`--stop-timeout`). `KillMode=mixed`: should that not
//!   end it, systemd's SIGTERM goes to slate alone, which forwards it, and the final SIGKILL to
//!   everything in the unit. `TimeoutStopSec=` is T plus a margin for slate's clean-up.
//! - `SuccessExitStatus=143`: slate exits 128+N when the app dies of signal N (docker's
//!   convention), so an app that ends on the SIGTERM of a stop is a clean stop.
//! - `Restart=on-failure` (`--restart-policy`/`--restart`), `RestartSec=5`: a crash restarts it
//!   on a fresh rootfs, without running into systemd's start limit (5 starts in 10 s) when,
//!   say, DNS is not up yet at boot.
//! - `Wants=`/`After=network-online.target`: the pull needs the network.
//!
//! With `--auto-update`, the container is labelled for `slate auto-update`, and `--install`
//! also writes `slate-auto-update.service` (a oneshot `slate auto-update` with the same global
//! options) and `slate-auto-update.timer` (`OnCalendar=` from `--auto-update-interval`, daily
//! by default, `RandomizedDelaySec=900` so that a fleet of boards does not ask the registry at
//! the same minute, `Persistent=true` so a board that was off catches up at boot), as podman
//! ships `podman-auto-update.timer`. One timer serves every unit of the host.
//!
//! The unit is named `slate-NAME.service` (podman uses `container-NAME.service`): the prefix
//! keeps it apart from a distribution's own `nginx.service` and lists slate's units together
//! (`systemctl list-units 'slate-*'`).

pub(crate) mod flags;
mod quote;

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context};
use clap::{ArgMatches, CommandFactory, ValueEnum};

use crate::cli::RunArgs;
use crate::sdnotify::Mode;

/// Where units for the system manager go by default (systemd.unit(5): the local
/// administrator's directory, above the distribution's `/usr/lib/systemd/system`).
const UNIT_DIR: &str = "/etc/systemd/system";

/// Seconds `TimeoutStopSec=` adds to `--stop-timeout`: `slate stop`'s kill and wait, then slate
/// unmounting and deleting the run's writable layer (slow on an SD card).
const STOP_MARGIN_SECS: u64 = 20;

#[derive(Debug, clap::Args)]
pub struct UnitArgs {
    /// Write the unit to /etc/systemd/system/slate-NAME.service and run `systemctl daemon-reload`
    #[arg(long)]
    pub install: bool,
    /// With --install: `systemctl enable` the unit, so it starts at boot
    #[arg(long, requires = "install")]
    pub enable: bool,
    /// With --install: `systemctl restart` the unit now (starts it, or deploys the new unit if it runs)
    #[arg(long, requires = "install")]
    pub now: bool,
    /// Label the container for `slate auto-update` (io.slate.autoupdate=MODE: registry, the
    /// default, or local); with --install also write and load slate-auto-update.service and .timer
    #[arg(
        long,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "registry",
        value_parser = ["registry", "local"]
    )]
    pub auto_update: Option<String>,
    /// How often the auto-update timer runs (systemd's OnCalendar=: daily, hourly, "*-*-* 04:00")
    #[arg(
        long,
        value_name = "CALENDAR",
        default_value = "daily",
        requires = "auto_update"
    )]
    pub auto_update_interval: String,
    /// Seconds the unit may take to start, the pull included (TimeoutStartSec=; 0: no limit)
    #[arg(long, default_value_t = 900, value_name = "SECS")]
    pub start_timeout: u64,
    /// systemd's Restart=: no, on-success, on-failure (the default), on-abnormal, on-watchdog,
    /// on-abort or always (--restart takes the same, and docker's unless-stopped)
    #[arg(long, value_name = "POLICY", conflicts_with = "restart")]
    pub restart_policy: Option<String>,
    /// The slate binary the unit runs [default: this one's real path]
    #[arg(long, value_name = "PATH")]
    pub slate_path: Option<PathBuf>,
    /// Directory to install the unit in instead of /etc/systemd/system (for tests)
    #[arg(long, hide = true, value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
    #[command(
        flatten,
        next_help_heading = "Options of slate run (-d, -i, -t and --log-* are refused; --rm and --replace are always set)"
    )]
    pub run: RunArgs,
}

pub fn run(args: UnitArgs) -> anyhow::Result<u8> {
    // clap's derive keeps the values, not which flags were typed; the matches do, and the unit
    // re-emits exactly the typed ones.
    let matches = crate::cli::Cli::command()
        .try_get_matches_from(std::env::args_os())
        .context("cannot read the command line again")?;
    run_with_matches(args, &matches)
}

fn run_with_matches(args: UnitArgs, matches: &ArgMatches) -> anyhow::Result<u8> {
    let m = matches
        .subcommand_matches("systemd")
        .and_then(|m| m.subcommand_matches("unit"))
        .ok_or_else(|| anyhow!("cannot read the command line again: no `systemd unit` in it"))?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let slate = match &args.slate_path {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => bail!("--slate-path {}: give an absolute path", p.display()),
        None => own_binary()?,
    };
    let unit = Unit::new(&args, m, &cwd, &slate)?;
    for w in &unit.line.warnings {
        tracing::warn!("{w}");
    }
    let text = unit.render();
    let timer = match &args.auto_update {
        Some(_) => Some(auto_update_files(
            &unit.program,
            &unit.line.globals,
            &args.auto_update_interval,
        )?),
        None => None,
    };
    if !args.install {
        print!("{text}");
        if timer.is_some() {
            eprintln!("slate: with --install, {AUTO_UPDATE}.service and {AUTO_UPDATE}.timer are written too (they run `slate auto-update` {})", args.auto_update_interval);
        }
        return Ok(0);
    }
    let dir = args.unit_dir.as_deref().unwrap_or(Path::new(UNIT_DIR));
    let mut files = vec![(unit.file_name.clone(), text)];
    if let Some([(sname, service), timer_file]) = timer {
        // One timer per host: written by the first unit, kept when another unit asks for
        // other global options (it would stop covering the first one's containers).
        let exec = |t: &str| {
            t.lines()
                .find(|l| l.starts_with("ExecStart="))
                .map(str::to_owned)
        };
        match std::fs::read_to_string(dir.join(&sname)) {
            Ok(existing) if exec(&existing) != exec(&service) => tracing::warn!(
                "{} already runs `{}`: left as it is, so it does not update containers of this unit's --root/--state-dir/--config; add a second service and timer for them",
                dir.join(&sname).display(),
                exec(&existing).unwrap_or_default().trim_start_matches("ExecStart=")
            ),
            _ => files.extend([(sname, service), timer_file]),
        }
    }
    install(dir, &files, args.enable, args.now)
}

/// This binary's real path: what the unit runs unless `--slate-path` says otherwise.
fn own_binary() -> anyhow::Result<PathBuf> {
    let exe = std::fs::canonicalize("/proc/self/exe")
        .context("cannot tell where slate's binary is (/proc/self/exe): give --slate-path")?;
    if exe.to_string_lossy().ends_with(" (deleted)") {
        bail!(
            "slate's binary {} was deleted or replaced while running: give --slate-path",
            exe.display()
        );
    }
    Ok(exe)
}

/// Everything the unit file says, decided and quoted.
struct Unit {
    file_name: String,
    name: String,
    image: String,
    program: String,
    line: flags::RunLine,
    /// The run flags the unit sets itself, before the user's.
    fixed: Vec<String>,
    restart: String,
    stop_timeout: u64,
    start_timeout: u64,
}

impl Unit {
    fn new(args: &UnitArgs, m: &ArgMatches, cwd: &Path, slate: &Path) -> anyhow::Result<Unit> {
        let name = args.run.name.clone().ok_or_else(|| {
            anyhow!("give the container a --name: the unit is named after it and stops it by name")
        })?;
        crate::state::validate_name(&name)?;
        let program = quote::program(slate.as_os_str()).context("invalid slate path")?;
        let line = flags::run_line(m, cwd, args.auto_update.as_deref())?;
        let pull = args
            .run
            .pull
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .filter(|_| flags::given(m, "pull"))
            // A `local` container is updated from the store (`slate load`): its restarts must
            // not ask a registry, which may not have the name at all.
            .unwrap_or_else(|| match args.auto_update.as_deref() {
                Some("local") => "missing".to_owned(),
                _ => "always".to_owned(),
            });
        let sdnotify = sdnotify(args, m)?;
        let fixed = [
            "--rm",
            "--replace",
            "--name",
            &name,
            "--pull",
            &pull,
            &format!("--sdnotify={sdnotify}"),
        ]
        .iter()
        .map(|w| quote::word(OsStr::new(w)))
        .collect::<Result<Vec<_>, _>>()?;
        Ok(Unit {
            file_name: format!("slate-{name}.service"),
            image: args.run.image().to_owned(),
            name,
            program,
            line,
            fixed,
            restart: restart_policy(args, m)?,
            // `run`'s --stop-timeout (docker's flag): what `slate stop` gives the app after
            // its stop signal; the unit's TimeoutStopSec= adds a margin.
            stop_timeout: args.run.stop_timeout.map_or(10, u64::from),
            start_timeout: args.start_timeout,
        })
    }

    fn render(&self) -> String {
        let globals: String = self.line.globals.iter().map(|g| format!(" {g}")).collect();
        let mut exec_start = format!("{}{globals} run {}", self.program, self.fixed.join(" "));
        // One flag per line, and the image with its command last: readable in `systemctl
        // cat`. A continuation line never starts with `#` or `;` (quote::word), which systemd
        // would drop as a comment even here.
        for f in &self.line.flags {
            exec_start.push_str(" \\\n        ");
            exec_start.push_str(f);
        }
        exec_start.push_str(" \\\n        ");
        exec_start.push_str(&self.line.image_and_command.join(" "));
        let exec_stop = format!(
            "-{}{globals} stop -t {} {}",
            self.program, self.stop_timeout, self.name
        );
        let file = &self.file_name;
        let version = env!("CARGO_PKG_VERSION");
        let doc = env!("CARGO_PKG_REPOSITORY");
        let description = quote::text(&format!("slate container {} ({})", self.name, self.image));
        let start_timeout = self.start_timeout;
        let stop_secs = self.stop_timeout + STOP_MARGIN_SECS;
        let restart = &self.restart;
        format!(
            "\
# {file}: written by `slate systemd unit` (slate {version}). Every start runs the
# container on a fresh root filesystem; `systemctl restart` deploys the newest image.
[Unit]
Description={description}
Documentation={doc}
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=all
Delegate=yes
ExecStart={exec_start}
ExecStop={exec_stop}
KillMode=mixed
TimeoutStartSec={start_timeout}
TimeoutStopSec={stop_secs}
SuccessExitStatus=143
Restart={restart}
RestartSec=5
SyslogIdentifier=%N

[Install]
WantedBy=multi-user.target
"
        )
    }
}

/// The auto-update service and timer files, `(file name, text)`.
fn auto_update_files(
    program: &str,
    globals: &[String],
    interval: &str,
) -> anyhow::Result<[(String, String); 2]> {
    if interval.trim().is_empty() || interval.contains(['\n', '\r']) {
        bail!("invalid --auto-update-interval {interval:?}: give one systemd calendar event (daily, hourly, \"*-*-* 04:00\")");
    }
    let globals: String = globals.iter().map(|g| format!(" {g}")).collect();
    let version = env!("CARGO_PKG_VERSION");
    let doc = env!("CARGO_PKG_REPOSITORY");
    let service = format!(
        "\
# {AUTO_UPDATE}.service: written by `slate systemd unit --auto-update` (slate {version}).
# Pulls what the registry serves for every container labelled io.slate.autoupdate, restarts
# its unit, and rolls back a release that does not come up.
[Unit]
Description=slate auto-update: deploy new images of labelled containers
Documentation={doc}
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart={program}{globals} auto-update
# Each unit's restart is bounded by its own TimeoutStartSec=; this bounds a run of many.
TimeoutStartSec=2h
SyslogIdentifier=%N
"
    );
    let timer = format!(
        "\
# {AUTO_UPDATE}.timer: written by `slate systemd unit --auto-update` (slate {version}).
[Unit]
Description=slate auto-update timer
Documentation={doc}

[Timer]
OnCalendar={interval}
RandomizedDelaySec=900
Persistent=true

[Install]
WantedBy=timers.target
"
    );
    Ok([
        (format!("{AUTO_UPDATE}.service"), service),
        (format!("{AUTO_UPDATE}.timer"), timer),
    ])
}

/// The auto-update service and timer's name (without the suffix).
const AUTO_UPDATE: &str = "slate-auto-update";

/// `--sdnotify` for the unit: slate's own READY=1 unless the user chose the app's.
fn sdnotify(args: &UnitArgs, m: &ArgMatches) -> anyhow::Result<&'static str> {
    if !flags::given(m, "sdnotify") {
        return Ok("conmon");
    }
    match args.run.sdnotify {
        Mode::Conmon => Ok("conmon"),
        Mode::Container => Ok("container"),
        Mode::Ignore => bail!(
            "--sdnotify=ignore makes no sense in a unit: it is Type=notify and would never become ready"
        ),
    }
}

/// systemd's `Restart=` from `--restart-policy` or `--restart` (default on-failure).
fn restart_policy(args: &UnitArgs, m: &ArgMatches) -> anyhow::Result<String> {
    let (flag, value) = match &args.restart_policy {
        Some(p) => ("--restart-policy", p.as_str()),
        None if flags::given(m, "restart") => ("--restart", args.run.restart.as_str()),
        None => return Ok("on-failure".to_owned()),
    };
    match value {
        "no" | "on-success" | "on-failure" | "on-abnormal" | "on-watchdog" | "on-abort"
        | "always" => Ok(value.to_owned()),
        // `systemctl stop` never restarts a unit: docker's unless-stopped is systemd's always.
        "unless-stopped" => Ok("always".to_owned()),
        v if v.starts_with("on-failure:") => bail!(
            "{flag} {v}: systemd's Restart= takes no count; use on-failure, and cap restarts \
             with StartLimitBurst= in a drop-in"
        ),
        v => bail!(
            "invalid {flag} {v:?}: expected no, on-success, on-failure, on-abnormal, \
             on-watchdog, on-abort or always"
        ),
    }
}

/// Whether systemd runs this host (sd_booted(3): it creates /run/systemd/system at boot).
fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Writes the unit (first in `files`) and, with `--auto-update`, the timer's service and the
/// timer; loads them, and enables and starts the unit and the timer as asked.
fn install(dir: &Path, files: &[(String, String)], enable: bool, now: bool) -> anyhow::Result<u8> {
    for (name, text) in files {
        let path = dir.join(name);
        let existed = path.exists();
        crate::state::write_atomic_mode(&path, text.as_bytes(), 0o644).with_context(|| {
            if nix::unistd::geteuid().is_root() {
                format!("cannot write {}", path.display())
            } else {
                format!("cannot write {} (run it with sudo)", path.display())
            }
        })?;
        println!(
            "{} {}",
            if existed { "replaced" } else { "wrote" },
            path.display()
        );
    }
    let file_name = files.first().map(|(n, _)| n.as_str()).unwrap_or_default();
    let timer = files
        .iter()
        .map(|(n, _)| n.as_str())
        .find(|n| n.ends_with(".timer"));
    if !systemd_running() {
        let skipped = if enable || now {
            "daemon-reload, enable and start"
        } else {
            "daemon-reload"
        };
        // Not a failure: a chroot or an image build writes units that systemd reads when it
        // boots. But a unit that was asked to start and did not is one.
        let why = format!(
            "systemd is not running on this host (no /run/systemd/system): skipped systemctl \
             {skipped}; systemd reads {file_name} when it boots"
        );
        if enable || now {
            bail!("{why}");
        }
        eprintln!("slate: {why}");
        return Ok(0);
    }
    systemctl(&["daemon-reload"])?;
    if enable {
        systemctl(&["enable", file_name])?;
        if let Some(t) = timer {
            systemctl(&["enable", t])?;
        }
    }
    if now {
        systemctl(&["restart", file_name])?;
        if let Some(t) = timer {
            systemctl(&["start", t])?;
        }
    } else {
        println!("start it with: systemctl start {file_name}");
        if let Some(t) = timer {
            println!("and the auto-update timer with: systemctl enable --now {t}");
        }
    }
    Ok(0)
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    run_systemctl(args)?;
    println!("ran systemctl {}", args.join(" "));
    Ok(())
}

/// `systemctl ARGS`, quietly; its stderr in the error when it fails (also `slate auto-update`'s).
pub(crate) fn run_systemctl(args: &[&str]) -> anyhow::Result<()> {
    let what = format!("systemctl {}", args.join(" "));
    let out = match Command::new("systemctl")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            bail!("cannot run {what}: systemctl is not installed, though systemd runs")
        }
        Err(e) => return Err(anyhow!(e).context(format!("cannot run {what}"))),
    };
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', " ");
        bail!("{what} failed ({}): {said}", out.status);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
