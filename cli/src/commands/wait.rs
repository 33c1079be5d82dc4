//! `slate wait`: blocks until containers exit for good (restarts included) and prints each
//! one's exit code.

use std::time::Duration;

use crate::config::Settings;
use crate::containers;

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Container names or ids (prefixes)
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(settings: &Settings, args: WaitArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    for key in &args.containers {
        let rec = sd.find(key)?;
        while !containers::wait_inactive(&sd, &rec.id, Duration::from_secs(3600)) {}
        let code = sd
            .load(&rec.id)
            .ok()
            .and_then(|r| r.exit_code)
            .or(rec.exit_code)
            .unwrap_or(0);
        println!("{code}");
    }
    Ok(0)
}
