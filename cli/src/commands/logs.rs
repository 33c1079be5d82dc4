//! `slate logs`: what a detached container wrote, from its log files; `-f` keeps following
//! until the container stops.

use anyhow::bail;

use crate::config::Settings;
use crate::containers;
use crate::logs::{self, ReadOptions};
use crate::state::LogDriver;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Follow the output until the container stops
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end ("all" for all)
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Only lines since a time (RFC 3339, Unix seconds) or a duration back from now (10m)
    #[arg(long, value_name = "TIME|DURATION")]
    pub since: Option<String>,
    /// Prefix each line with its time
    #[arg(short, long)]
    pub timestamps: bool,
    /// Container name or id (prefix)
    pub container: String,
}

pub fn run(settings: &Settings, args: LogsArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let rec = sd.find(&args.container)?;
    if rec.foreground {
        let whose = match &rec.unit {
            Some(u) => format!("the journal of {u}: journalctl -u {u}"),
            None => "the terminal of the `slate run` that started it".to_string(),
        };
        bail!(
            "container {} runs in the foreground: its output goes to {whose} and is not kept (run it with -d to keep logs)",
            rec.name
        );
    }
    match rec.log_driver {
        LogDriver::File => {}
        LogDriver::None => bail!("container {} was started with --log-driver none", rec.name),
        LogDriver::Journald => bail!(
            "container {} logs to the journal: journalctl CONTAINER_NAME={}",
            rec.name,
            rec.name
        ),
    }
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse::<usize>()
                .map_err(|_| anyhow::anyhow!("invalid --tail {n:?}: expected a number or all"))?,
        ),
    };
    let opts = ReadOptions {
        tail,
        since: args.since.as_deref().map(logs::parse_since).transpose()?,
        timestamps: args.timestamps,
    };
    let id = rec.id.clone();
    let running = move || {
        // The record going inactive (or away) ends the follow; a dead supervisor too.
        sd.load(&id)
            .map(|r| r.is_active() && (r.supervisor_alive() || r.supervisor_pid.is_none()))
            .unwrap_or(false)
    };
    let follow: Option<&dyn Fn() -> bool> = if args.follow { Some(&running) } else { None };
    logs::print(&rec.log_dir, &opts, follow)?;
    Ok(0)
}
