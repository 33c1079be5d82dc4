//! `slate stop`: the container's stop signal (the image's StopSignal, else SIGTERM), then
//! SIGKILL to everything in its cgroup after the timeout, and says so when it came to that. A
//! stopped container is not restarted. Several containers are stopped at once, as docker's
//! CLI does: 30 containers that ignore their signal take one timeout, not thirty.

use std::time::Duration;

use crate::config::Settings;
use crate::containers;

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Seconds to wait before killing [default: the container's --stop-timeout, else 10]
    #[arg(short = 't', long = "time", visible_alias = "timeout")]
    pub time: Option<u64>,
    /// Container names or ids (prefixes)
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(settings: &Settings, args: StopArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let results = containers::for_each_parallel(&args.containers, |key| {
        let rec = sd.find(key)?;
        let secs = timeout_of(args.time, &rec);
        let how = containers::stop(&sd, &rec, Duration::from_secs(secs))?;
        if how == containers::Stopped::Killed {
            eprintln!(
                "slate: {} did not stop on {} within {secs} s: killed it (SIGKILL)",
                rec.name, rec.stop_signal
            );
        }
        Ok(())
    });
    Ok(containers::report(&args.containers, results))
}

/// `-t`, else the container's `--stop-timeout`, else docker's 10 s.
pub fn timeout_of(flag: Option<u64>, rec: &crate::state::Record) -> u64 {
    flag.or(rec.stop_timeout.map(u64::from)).unwrap_or(10)
}
