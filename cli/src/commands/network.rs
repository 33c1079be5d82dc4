//! `slate network ls|create|rm|inspect` (docker's verbs for user networks) and `slate port`.
//! The networks themselves are in [`crate::network`].

use anyhow::{bail, Context as _};
use serde_json::json;

use crate::cli::Format;
use crate::config::Settings;
use crate::containers;
use crate::network::{self, defs};
use crate::output::table;

#[derive(Debug, clap::Subcommand)]
pub enum NetworkCommand {
    /// List networks
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Create a network: a bridge of its own (the default), or macvlan (own LAN addresses)
    Create(CreateArgs),
    /// Remove networks no container uses
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Show networks, with their containers, as JSON
    Inspect(InspectArgs),
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
pub struct CreateArgs {
    pub name: String,
    /// bridge (a bridge with NAT, like the default network) or macvlan
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// IPv4 subnet, e.g. 10.45.7.0/24 (bridge: a free /24 of 10.45.0.0/16 by default)
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway (the subnet's first address by default)
    #[arg(long)]
    pub gateway: Option<String>,
    /// Hand out addresses from this part of the subnet only (macvlan: clear of the LAN's DHCP)
    #[arg(long, value_name = "CIDR")]
    pub ip_range: Option<String>,
    /// macvlan: the host's interface on the LAN (docker's `-o parent=IF` works too)
    #[arg(long)]
    pub parent: Option<String>,
    /// Driver options: parent=IF
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    pub opt: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PortArgs {
    /// Container name or id
    pub container: String,
    /// Only this container port: PORT[/PROTO]
    pub port: Option<String>,
}

pub fn run(settings: &Settings, cmd: NetworkCommand) -> anyhow::Result<u8> {
    match cmd {
        NetworkCommand::Ls(a) => ls(settings, a),
        NetworkCommand::Create(a) => create(settings, a),
        NetworkCommand::Rm(a) => rm(settings, a),
        NetworkCommand::Inspect(a) => inspect(settings, a),
    }
}

fn driver_of(n: &defs::Network) -> String {
    match &n.definition {
        Some(d) => d.driver.clone(),
        None => "cni".into(),
    }
}

fn ls(settings: &Settings, args: LsArgs) -> anyhow::Result<u8> {
    let nets = defs::list(settings)?;
    if args.quiet {
        for n in &nets {
            println!("{}", n.name);
        }
        return Ok(0);
    }
    if args.format == Format::Json {
        let v: Vec<_> = nets
            .iter()
            .map(|n| {
                json!({
                    "name": n.name,
                    "driver": driver_of(n),
                    "subnet": n.definition.as_ref().map(|d| d.subnet.clone()),
                    "interface": n.definition.as_ref().map(|d| d.interface.clone()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = nets
        .iter()
        .map(|n| {
            let d = n.definition.as_ref();
            vec![
                n.name.clone(),
                driver_of(n),
                d.map(|d| d.subnet.clone()).unwrap_or_default(),
                d.map(|d| d.interface.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["NAME", "DRIVER", "SUBNET", "INTERFACE"], &rows)
    );
    Ok(0)
}

fn create(settings: &Settings, args: CreateArgs) -> anyhow::Result<u8> {
    let mut parent = args.parent.clone();
    for o in &args.opt {
        match o.split_once('=') {
            Some(("parent", v)) => parent = Some(v.to_string()),
            _ => bail!("unknown --opt {o:?}: slate knows parent=IF (macvlan)"),
        }
    }
    let d = defs::create(
        settings,
        &defs::Create {
            name: &args.name,
            driver: &args.driver,
            subnet: args.subnet.as_deref(),
            gateway: args.gateway.as_deref(),
            ip_range: args.ip_range.as_deref(),
            parent: parent.as_deref(),
        },
    )?;
    println!("{}", d.name);
    Ok(0)
}

fn rm(settings: &Settings, args: RmArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let attached = network::all_attachments(&sd);
    let mut failed = false;
    for name in &args.names {
        let users: Vec<&str> = attached
            .iter()
            .filter(|a| &a.network == name)
            .map(|a| a.container_name.as_str())
            .collect();
        let res = if users.is_empty() {
            defs::remove(settings, name)
        } else {
            Err(anyhow::anyhow!(
                "network {name} is in use by {}: stop or remove {} first",
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" }
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

fn inspect(settings: &Settings, args: InspectArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let attached = network::all_attachments(&sd);
    let mut out = Vec::new();
    for name in &args.names {
        let n = defs::load(settings, name)?;
        let containers: Vec<_> = attached
            .iter()
            .filter(|a| a.network == n.name)
            .map(|a| {
                json!({
                    "id": a.container_id,
                    "name": a.container_name,
                    "ip": a.ip,
                    "mac": a.mac,
                    "ports": a.ports.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect();
        out.push(json!({
            "name": n.name,
            "driver": driver_of(&n),
            "definition": n.definition,
            "conflist": n.conflist,
            "containers": containers,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

/// `slate port CONTAINER [PORT[/PROTO]]`: the published ports, as docker prints them.
pub fn port(settings: &Settings, args: PortArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let rec = sd.find(&args.container)?;
    let Some(att) = network::load_attachment(&sd, &rec.id) else {
        if rec.is_active() {
            // docker prints nothing for a container without published ports.
            return Ok(0);
        }
        bail!("container {} is not running", rec.name);
    };
    let want = match &args.port {
        None => None,
        Some(p) => {
            let v =
                network::ports::parse_exposed(p).with_context(|| format!("invalid port {p:?}"))?;
            Some(v)
        }
    };
    let mut found = false;
    for m in &att.ports {
        if let Some(w) = &want {
            if !w.contains(&(m.container_port, m.protocol)) {
                continue;
            }
        }
        found = true;
        if want.is_some() {
            let ip = if m.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &m.host_ip
            };
            println!("{ip}:{}", m.host_port);
        } else {
            println!("{m}");
        }
    }
    if let (Some(p), false) = (&args.port, found) {
        bail!("no public port {p} published for {}", rec.name);
    }
    Ok(0)
}
