//! `slate rm`: removes exited containers (record and logs); `-f` kills running ones first.

use crate::config::Settings;
use crate::containers;

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Kill and remove running containers
    #[arg(short, long)]
    pub force: bool,
    /// Container names or ids (prefixes)
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(settings: &Settings, args: RmArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let mut failed = false;
    for key in &args.containers {
        let res = sd.find(key).and_then(|r| {
            containers::remove(&sd, &r, args.force)?;
            super::autoupdate::release_hold(&sd, &r);
            Ok(())
        });
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
