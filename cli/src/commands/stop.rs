//! `slate stop`: the container's stop signal (the image's StopSignal, else SIGTERM), then
//! SIGKILL to everything in its cgroup after the timeout. A stopped container is not restarted.

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
    let mut failed = false;
    for key in &args.containers {
        let res = sd
            .find(key)
            .and_then(|r| containers::stop(&sd, &r, Duration::from_secs(args.time)));
        match res {
            Ok(()) => println!("{key}"),
            Err(e) => {
                eprintln!("slate: {}", format!("{e:#}").replace('\n', " "));
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}
