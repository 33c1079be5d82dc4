//! `slate kill`: sends a signal (SIGKILL by default) to a container's PID 1. Like docker, a
//! killed container is not restarted by its restart policy.

use anyhow::{anyhow, bail};
use nix::sys::signal::Signal;

use crate::config::Settings;
use crate::containers;

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// Signal: a name (KILL, SIGTERM) or a number
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    /// Container names or ids (prefixes)
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `KILL`, `SIGKILL`, `9`.
pub fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow!("invalid signal {s:?}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow!("invalid signal {s:?}"))
}

pub fn run(settings: &Settings, args: KillArgs) -> anyhow::Result<u8> {
    let sig = parse_signal(&args.signal)?;
    let sd = containers::open_swept(settings)?;
    // All at once, as docker's CLI does; each container's failure is its own line.
    let results = containers::for_each_parallel(&args.containers, |key| {
        let rec = sd.find(key)?;
        if !rec.is_active() {
            bail!("container {} is not running", rec.name);
        }
        sd.request_stop(&rec.id)?;
        if !containers::signal(&rec, sig)? {
            bail!("container {} is not running", rec.name);
        }
        Ok(())
    });
    Ok(containers::report(&args.containers, results))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("10").unwrap(), Signal::SIGUSR1);
        assert!(parse_signal("NOPE").is_err());
    }
}
