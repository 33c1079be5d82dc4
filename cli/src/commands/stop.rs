//! `slate stop`: the container's stop signal (the image's StopSignal, else SIGTERM), then
//! SIGKILL to everything in its cgroup after the timeout, and says so when it came to that. A
//! stopped container is not restarted. Several containers are stopped at once, as docker's
//! CLI does: 30 containers that ignore their signal take one timeout, not thirty.

use std::time::Duration;

use crate::config::Settings;
use crate::containers;

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Seconds to wait before killing
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    /// Container names or ids (prefixes)
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(settings: &Settings, args: StopArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let timeout = Duration::from_secs(args.time);
    let results = containers::for_each_parallel(&args.containers, |key| {
        let rec = sd.find(key)?;
        let how = containers::stop(&sd, &rec, timeout)?;
        if how == containers::Stopped::Killed {
            eprintln!(
                "slate: {} did not stop on {} within {} s: killed it (SIGKILL)",
                rec.name, rec.stop_signal, args.time
            );
        }
        Ok(())
    });
    Ok(containers::report(&args.containers, results))
}
