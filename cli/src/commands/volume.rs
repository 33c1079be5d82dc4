//! `slate volume create|ls|rm|inspect|prune`: docker's verbs for named volumes (see
//! [`crate::volumes`]).

use serde_json::json;

use crate::cli::Format;
use crate::config::Settings;
use crate::containers;
use crate::output::{human_size, table};
use crate::volumes;

#[derive(Debug, clap::Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (`-v NAME:/path` also creates one on first use)
    Create(CreateArgs),
    /// List volumes
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Remove volumes no container uses
    #[command(visible_alias = "remove")]
    Rm(NamesArgs),
    /// Show volumes as JSON
    Inspect(NamesArgs),
    /// Remove every volume no container uses
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    pub name: String,
    /// Set metadata (KEY=VALUE)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Print only names
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Do not ask (slate never asks: accepted for docker's command lines)
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(settings: &Settings, cmd: VolumeCommand) -> anyhow::Result<u8> {
    let dir = volumes::volumes_dir(&settings.root);
    match cmd {
        VolumeCommand::Create(a) => {
            let labels = a
                .label
                .iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (l.clone(), String::new()),
                })
                .collect();
            volumes::create_named(&dir, &a.name, labels)?;
            println!("{}", a.name);
            Ok(0)
        }
        VolumeCommand::Ls(a) => {
            let all = volumes::list(&dir)?;
            if a.quiet {
                for v in &all {
                    println!("{}", v.name);
                }
            } else if a.format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|v| {
                        let d = volumes::data_dir(&dir, &v.name);
                        vec![
                            v.name.clone(),
                            human_size(volumes::usage(&d)),
                            d.display().to_string(),
                        ]
                    })
                    .collect();
                print!("{}", table(&["VOLUME NAME", "SIZE", "MOUNTPOINT"], &rows));
            }
            Ok(0)
        }
        VolumeCommand::Rm(a) => {
            let sd = containers::open_swept(settings)?;
            let mut failed = false;
            for name in &a.names {
                let users = volumes::users(&sd, &dir, name);
                let res = if users.is_empty() {
                    volumes::remove(&dir, name)
                } else {
                    Err(anyhow::anyhow!(
                        "volume {name} is in use by container {}: remove the container first (slate rm never removes a volume)",
                        users.join(", ")
                    ))
                };
                match res {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        eprintln!("slate: {e:#}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
        VolumeCommand::Inspect(a) => {
            let sd = containers::open_swept(settings)?;
            let all = volumes::list(&dir)?;
            let mut out = Vec::new();
            for name in &a.names {
                let Some(v) = all.iter().find(|v| &v.name == name) else {
                    anyhow::bail!("no such volume: {name}");
                };
                let d = volumes::data_dir(&dir, name);
                out.push(json!({
                    "name": v.name,
                    "created": v.created,
                    "labels": v.labels,
                    "mountpoint": d,
                    "size": volumes::usage(&d),
                    "containers": volumes::users(&sd, &dir, name),
                }));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        VolumeCommand::Prune(_) => {
            let freed = prune(settings)?;
            println!("Total reclaimed space: {}", human_size(freed));
            Ok(0)
        }
    }
}

/// Removes every volume no container record names; prints each one and returns the bytes
/// freed (also for `system prune --volumes`).
pub fn prune(settings: &Settings) -> anyhow::Result<u64> {
    let sd = containers::open_swept(settings)?;
    let dir = volumes::volumes_dir(&settings.root);
    let mut freed = 0;
    for v in volumes::list(&dir)? {
        if !volumes::users(&sd, &dir, &v.name).is_empty() {
            continue;
        }
        let size = volumes::usage(&volumes::data_dir(&dir, &v.name));
        match volumes::remove(&dir, &v.name) {
            Ok(()) => {
                println!("Deleted volume {}", v.name);
                freed += size;
            }
            Err(e) => eprintln!("slate: {e:#}"),
        }
    }
    Ok(freed)
}
