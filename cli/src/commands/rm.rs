//! `slate rm`: removes exited containers (record and logs); `-f` kills running ones first.

use crate::config::Settings;
use crate::containers;

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Kill and remove running containers
    #[arg(short, long)]
    pub force: bool,
    /// docker's "and its anonymous volumes": slate has none (image VOLUMEs are not made
    /// into volumes yet), and named volumes are never removed by rm, as in docker
    #[arg(short, long)]
    pub volumes: bool,
    /// Container names or ids (prefixes)
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(settings: &Settings, args: RmArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    // In parallel, as `slate stop`: `rm -f` of many waits for their kills at once.
    let results = containers::for_each_parallel(&args.containers, |key| {
        let r = sd.find(key)?;
        containers::remove(&sd, &r, args.force)?;
        super::autoupdate::release_hold(&sd, &r);
        Ok(())
    });
    Ok(containers::report(&args.containers, results))
}
