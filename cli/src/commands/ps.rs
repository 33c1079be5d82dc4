//! `slate ps`: the containers of the state dir, like `docker ps`: running ones by default,
//! all with `-a`, ids only with `-q`, full records with `--format json`, docker's
//! `--filter` keys and `--format` templates (see [`crate::listing`]).

use crate::config::Settings;
use crate::containers;
use crate::listing::{Filters, OutputFormat, Part};
use crate::output::{ago, parse_rfc3339, table};
use crate::state::{Record, StateDir, Status};

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show all containers (by default only running ones)
    #[arg(short, long)]
    pub all: bool,
    /// Print only container ids
    #[arg(short, long)]
    pub quiet: bool,
    /// table, json (the full records), or a template: '{{.Names}}', 'table {{.ID}}\t{{.Status}}'
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Filter: id=, name=, label=KEY[=VALUE], status=, ancestor=, network=, exited=, health=
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Do not truncate ids and commands
    #[arg(long)]
    pub no_trunc: bool,
}

/// The template fields and their column titles (docker's).
const FIELDS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Networks", "NETWORKS"),
];

const FILTERS: &[&str] = &[
    "id", "name", "label", "status", "ancestor", "network", "exited", "health",
];

/// docker's state names: created, running, paused, restarting, exited.
fn state_of(sd: &StateDir, r: &Record) -> &'static str {
    match r.status {
        Status::Running if crate::commands::lifecycle::is_paused(sd, &r.id) => "paused",
        s => s.as_str(),
    }
}

fn health_of(sd: &StateDir, r: &Record) -> String {
    match r.healthcheck {
        None => "none".into(),
        Some(_) => crate::health::Health::load(sd, &r.id)
            .map(|h| h.status.as_str().to_string())
            .unwrap_or_else(|| "starting".into()),
    }
}

fn network_of(r: &Record) -> String {
    match &r.network {
        Some(n) => n.network.clone(),
        None => "host".into(),
    }
}

fn matches(sd: &StateDir, r: &Record, key: &str, v: &str) -> bool {
    match key {
        "id" => r.id.starts_with(v),
        "name" => r.name.contains(v),
        "label" => crate::listing::label_matches(&r.labels, v),
        "status" => state_of(sd, r) == v,
        "ancestor" => {
            r.image == v
                || r.image_digest == v
                || r.image.split_once(':').is_some_and(|(n, _)| n == v)
                || (!v.contains(':') && r.image == format!("{v}:latest"))
        }
        "network" => network_of(r) == v,
        "exited" => {
            r.status == Status::Exited && r.exit_code.map(|c| c.to_string()).as_deref() == Some(v)
        }
        "health" => health_of(sd, r) == v,
        _ => false,
    }
}

pub fn run(settings: &Settings, args: PsArgs) -> anyhow::Result<u8> {
    let format = OutputFormat::parse(&args.format, FIELDS)?;
    let filters = Filters::parse(&args.filter, FILTERS)?;
    let sd = containers::open_swept(settings)?;
    let mut all = sd.list()?;
    // docker: a status filter other than running looks at every container.
    let wants_stopped = args
        .filter
        .iter()
        .any(|f| f.starts_with("status=") && f != "status=running" && f != "status=paused")
        || args.filter.iter().any(|f| f.starts_with("exited="));
    if !args.all && !wants_stopped {
        all.retain(Record::is_active);
    }
    all.retain(|r| filters.accept(&|k, v| matches(&sd, r, k, v)));
    // Newest first, as docker lists them.
    all.reverse();
    if args.quiet {
        for r in &all {
            println!("{}", if args.no_trunc { &r.id } else { r.short_id() });
        }
        return Ok(0);
    }
    let status = |r: &Record| {
        status_text(
            r,
            crate::commands::lifecycle::is_paused(&sd, &r.id),
            r.healthcheck
                .as_ref()
                .and_then(|_| crate::health::Health::load(&sd, &r.id))
                .as_ref(),
        )
    };
    let id = |r: &Record| {
        if args.no_trunc {
            r.id.clone()
        } else {
            r.short_id().to_string()
        }
    };
    let command = |r: &Record| {
        let cmd = format!("\"{}\"", r.command.join(" "));
        if args.no_trunc {
            cmd
        } else {
            truncate(&cmd, 22)
        }
    };
    let created = |r: &Record| parse_rfc3339(&r.created).map(ago).unwrap_or_default();
    match format {
        OutputFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        OutputFormat::Template { header, parts } => {
            let field = |r: &Record, p: &Part| -> String {
                match p {
                    Part::Label(k) => r.labels.get(k).cloned().unwrap_or_default(),
                    Part::Text(t) => t.clone(),
                    Part::Field(f) => match f.as_str() {
                        "ID" => id(r),
                        "Image" => r.image.clone(),
                        "Command" => command(r),
                        "CreatedAt" => r.created.clone(),
                        "RunningFor" => created(r),
                        "Ports" => ports_text(&sd, r),
                        "State" => state_of(&sd, r).to_string(),
                        "Status" => status(r),
                        "Names" => r.name.clone(),
                        "Labels" => r
                            .labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                        "Networks" => network_of(r),
                        _ => String::new(),
                    },
                }
            };
            print!(
                "{}",
                crate::listing::render(header, &parts, FIELDS, &all, field)
            );
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|r| {
                    vec![
                        id(r),
                        r.image.clone(),
                        command(r),
                        created(r),
                        status(r),
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
        }
    }
    Ok(0)
}

/// docker's PORTS column: `127.0.0.1:8080->80/tcp, 0.0.0.0:8443->443/tcp`.
fn ports_text(sd: &StateDir, r: &Record) -> String {
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
