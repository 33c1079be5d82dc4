//! `slate ps`: the containers of the state dir, like `docker ps`: running ones by default,
//! all with `-a`, ids only with `-q`, full records with `--format json`.

use crate::cli::Format;
use crate::config::Settings;
use crate::containers;
use crate::output::{ago, parse_rfc3339, table};
use crate::state::{Record, Status};

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show all containers (by default only running ones)
    #[arg(short, long)]
    pub all: bool,
    /// Print only container ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Do not truncate ids and commands
    #[arg(long)]
    pub no_trunc: bool,
}

pub fn run(settings: &Settings, args: PsArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let mut all = sd.list()?;
    if !args.all {
        all.retain(Record::is_active);
    }
    // Newest first, as docker lists them.
    all.reverse();
    if args.quiet {
        for r in &all {
            println!("{}", if args.no_trunc { &r.id } else { r.short_id() });
        }
        return Ok(0);
    }
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|r| {
            let cmd = format!("\"{}\"", r.command.join(" "));
            vec![
                if args.no_trunc {
                    r.id.clone()
                } else {
                    r.short_id().to_string()
                },
                r.image.clone(),
                if args.no_trunc {
                    cmd
                } else {
                    truncate(&cmd, 22)
                },
                parse_rfc3339(&r.created).map(ago).unwrap_or_default(),
                status_text(
                    r,
                    crate::commands::lifecycle::is_paused(&sd, &r.id),
                    r.healthcheck
                        .as_ref()
                        .and_then(|_| crate::health::Health::load(&sd, &r.id))
                        .as_ref(),
                ),
                ports_text(&sd, r),
                r.name.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES"
            ],
            &rows
        )
    );
    Ok(0)
}

/// docker's PORTS column: `127.0.0.1:8080->80/tcp, 0.0.0.0:8443->443/tcp`.
fn ports_text(sd: &crate::state::StateDir, r: &Record) -> String {
    if r.network.as_ref().is_none_or(|n| n.ports.is_empty()) {
        return String::new();
    }
    let Some(att) = crate::network::load_attachment(sd, &r.id) else {
        return String::new();
    };
    att.ports
        .iter()
        .map(|p| {
            let ip = if p.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &p.host_ip
            };
            format!(
                "{ip}:{}->{}/{}",
                p.host_port,
                p.container_port,
                p.protocol.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// `Up 5 minutes`, `Exited (0) 3 hours ago`, `Restarting (1) 2 seconds ago`.
pub fn status_text(r: &Record, paused: bool, health: Option<&crate::health::Health>) -> String {
    let since = |t: &Option<String>| {
        t.as_deref()
            .and_then(parse_rfc3339)
            .map(|s| {
                let a = ago(s);
                a.strip_suffix(" ago").map(str::to_string).unwrap_or(a)
            })
            .unwrap_or_default()
    };
    match r.status {
        Status::Created => "Created".to_string(),
        Status::Running if paused => format!("Up {} (Paused)", since(&r.started)),
        Status::Running => match health {
            Some(h) if h.status == crate::health::Status::Starting => {
                format!("Up {} (health: starting)", since(&r.started))
            }
            Some(h) => format!("Up {} ({})", since(&r.started), h.status.as_str()),
            None => format!("Up {}", since(&r.started)),
        },
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            r.exit_code.unwrap_or(0),
            since(&r.finished)
        ),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            r.exit_code.unwrap_or(0),
            since(&r.finished)
        ),
    }
}
