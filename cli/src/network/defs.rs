//! Which networks exist, and the CNI configuration list each one is.
//!
//! - `bridge`: slate's default bridge network, `slate0` on 10.44.0.0/16 (`[network]
//!   bridge_subnet` in the config file changes it), with outbound NAT and published ports.
//! - User networks from `slate network create`: `<root>/networks/<name>.json`, slate's own
//!   small definition (driver, subnet, interface). The conflist is generated from it on each
//!   use, so a newer slate's better defaults reach old networks too.
//! - Any CNI `.conflist` a user drops in `<root>/networks/`: used as written, for whatever
//!   CNI offers beyond slate's two drivers.
//!
//! Leases of the generated configs live in `<state>/networks/leases`: on the state dir's
//! tmpfs, so a reboot, which ends every container, also forgets every lease.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::Settings;

/// The default network's name (docker's).
pub const DEFAULT: &str = "bridge";
pub const DEFAULT_SUBNET: &str = "10.44.0.0/16";
const DEFAULT_BRIDGE: &str = "slate0";
/// User bridge networks get a /24 each from here, in creation order.
const USER_POOL: [u8; 2] = [10, 45];

/// slate's definition of a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Definition {
    pub name: String,
    /// `bridge` or `macvlan`.
    pub driver: String,
    pub subnet: String,
    pub gateway: String,
    /// The bridge (bridge) or the parent interface (macvlan).
    pub interface: String,
    /// Addresses handed out, within the subnet (macvlan: keep clear of the LAN's DHCP).
    #[serde(default)]
    pub ip_range: Option<String>,
    #[serde(default)]
    pub created: String,
}

/// A network ready for the CNI plugins.
#[derive(Debug)]
pub struct Network {
    pub name: String,
    /// None for a user's own `.conflist`.
    pub definition: Option<Definition>,
    pub conflist: Value,
}

/// An IPv4 network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> anyhow::Result<Cidr> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("{s:?} is not in CIDR form (e.g. 10.45.0.0/24)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| anyhow!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| anyhow!("the prefix of {s:?} must be between /8 and /30"))?;
        let c = Cidr { addr, prefix };
        if c.network() != addr {
            bail!(
                "{s:?} has host bits set: did you mean {}/{prefix}?",
                c.network()
            );
        }
        Ok(c)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// The first host address: the usual gateway.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + 1)
    }

    fn last_host(&self) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.network()) | !self.mask()) - 1)
    }

    fn overlaps(&self, o: &Cidr) -> bool {
        self.contains(o.network()) || o.contains(self.network())
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

pub fn networks_dir(settings: &Settings) -> PathBuf {
    settings.root.join("networks")
}

pub fn leases_dir(settings: &Settings) -> PathBuf {
    settings.state_dir.join("networks").join("leases")
}

/// Network names become file names and appear in iptables comments: docker's rule (the
/// same as for volume names), and short.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64 && crate::volumes::valid_name(name);
    if !ok {
        bail!("invalid network name {name:?}: letters, digits, '_', '.' and '-', starting with a letter or digit, at most 64");
    }
    Ok(())
}

fn default_definition(settings: &Settings) -> anyhow::Result<Definition> {
    let subnet = settings
        .file
        .network
        .bridge_subnet
        .clone()
        .unwrap_or_else(|| DEFAULT_SUBNET.to_string());
    let cidr = Cidr::parse(&subnet).context("invalid [network] bridge_subnet")?;
    Ok(Definition {
        name: DEFAULT.into(),
        driver: "bridge".into(),
        subnet,
        gateway: cidr.first_host().to_string(),
        interface: DEFAULT_BRIDGE.into(),
        ip_range: None,
        created: String::new(),
    })
}

/// Loads a network by name.
pub fn load(settings: &Settings, name: &str) -> anyhow::Result<Network> {
    if name == DEFAULT {
        let d = default_definition(settings)?;
        return Ok(from_definition(settings, d));
    }
    validate_name(name)?;
    let dir = networks_dir(settings);
    let def = dir.join(format!("{name}.json"));
    match std::fs::read(&def) {
        Ok(b) => {
            let d: Definition = serde_json::from_slice(&b)
                .with_context(|| format!("corrupt network definition {}", def.display()))?;
            return Ok(from_definition(settings, d));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", def.display())),
    }
    let list = dir.join(format!("{name}.conflist"));
    match std::fs::read(&list) {
        Ok(b) => {
            let conflist: Value = serde_json::from_slice(&b)
                .with_context(|| format!("{} is not JSON", list.display()))?;
            if conflist.get("plugins").and_then(Value::as_array).is_none() {
                bail!("{} has no \"plugins\" list: not a CNI conflist", list.display());
            }
            Ok(Network {
                name: name.into(),
                definition: None,
                conflist,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "network {name} does not exist: `slate network create {name}` makes it (`slate network ls` lists them)"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", list.display())),
    }
}

fn from_definition(settings: &Settings, d: Definition) -> Network {
    let leases = leases_dir(settings);
    let mut range = json!({ "subnet": d.subnet, "gateway": d.gateway });
    if let Some((start, end)) = d.ip_range.as_deref().and_then(range_bounds) {
        range["rangeStart"] = json!(start.to_string());
        range["rangeEnd"] = json!(end.to_string());
    }
    let ipam = json!({
        "type": "host-local",
        "dataDir": leases,
        "routes": [{ "dst": "0.0.0.0/0" }],
        "ranges": [[range]],
    });
    let plugins = if d.driver == "macvlan" {
        // Its own address on the LAN: nothing to publish or NAT.
        json!([{ "type": "macvlan", "master": d.interface, "mode": "bridge", "ipam": ipam }])
    } else {
        json!([
            {
                "type": "bridge",
                "bridge": d.interface,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": ipam,
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
            // Accepts the containers' traffic in FORWARD even where the policy drops it
            // (a host with docker, or a hardened firewall).
            { "type": "firewall", "backend": "iptables" },
        ])
    };
    Network {
        name: d.name.clone(),
        conflist: json!({ "cniVersion": "1.0.0", "name": d.name, "plugins": plugins }),
        definition: Some(d),
    }
}

fn range_bounds(cidr: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let c = Cidr::parse(cidr).ok()?;
    Some((c.first_host(), c.last_host()))
}

/// Every network: the default one first, then the store's, by name.
pub fn list(settings: &Settings) -> anyhow::Result<Vec<Network>> {
    let mut out = vec![load(settings, DEFAULT)?];
    let dir = networks_dir(settings);
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                n.strip_suffix(".json")
                    .or_else(|| n.strip_suffix(".conflist"))
                    .map(str::to_owned)
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    names.sort();
    names.dedup();
    for n in names.iter().filter(|n| n.as_str() != DEFAULT) {
        match load(settings, n) {
            Ok(net) => out.push(net),
            Err(e) => tracing::warn!(network = %n, "skipping a network: {e:#}"),
        }
    }
    Ok(out)
}

/// What `slate network create` was asked.
pub struct Create<'a> {
    pub name: &'a str,
    pub driver: &'a str,
    pub subnet: Option<&'a str>,
    pub gateway: Option<&'a str>,
    pub ip_range: Option<&'a str>,
    pub parent: Option<&'a str>,
}

/// Creates a user network's definition; returns it.
pub fn create(settings: &Settings, req: &Create) -> anyhow::Result<Definition> {
    validate_name(req.name)?;
    if matches!(req.name, "host" | "none" | DEFAULT) {
        bail!(
            "{} is a network mode of its own: choose another name",
            req.name
        );
    }
    let existing = list(settings)?;
    if existing.iter().any(|n| n.name == req.name) {
        bail!("network {} already exists", req.name);
    }
    let used: Vec<Cidr> = existing
        .iter()
        .filter_map(|n| n.definition.as_ref())
        .filter_map(|d| Cidr::parse(&d.subnet).ok())
        .collect();
    let (subnet, interface) = match req.driver {
        "bridge" => {
            let subnet = match req.subnet {
                Some(s) => {
                    let c = Cidr::parse(s)?;
                    if let Some(u) = used.iter().find(|u| u.overlaps(&c)) {
                        bail!("--subnet {s} overlaps {u}, a subnet of another network");
                    }
                    c
                }
                None => (0..=255u8)
                    .map(|i| Cidr {
                        addr: Ipv4Addr::new(USER_POOL[0], USER_POOL[1], i, 0),
                        prefix: 24,
                    })
                    .find(|c| !used.iter().any(|u| u.overlaps(c)))
                    .ok_or_else(|| {
                        anyhow!("no free subnet left in 10.45.0.0/16: give one with --subnet")
                    })?,
            };
            if req.parent.is_some() {
                bail!("--parent is for --driver macvlan");
            }
            // Interface names are at most 15 bytes: numbered, like docker's br-<id>.
            let taken: Vec<&str> = existing
                .iter()
                .filter_map(|n| n.definition.as_ref())
                .map(|d| d.interface.as_str())
                .collect();
            let iface = (1..)
                .map(|i| format!("slate{i}"))
                .find(|n| !taken.contains(&n.as_str()))
                .unwrap_or_default();
            (subnet, iface)
        }
        "macvlan" => {
            let parent = req.parent.ok_or_else(|| {
                anyhow!(
                    "--driver macvlan needs --parent: the host interface on the LAN (e.g. eth0)"
                )
            })?;
            if parent.is_empty() || parent.len() > 15 || parent.contains('/') {
                bail!("invalid --parent {parent:?}: an interface name");
            }
            let s = req.subnet.ok_or_else(|| {
                anyhow!("--driver macvlan needs --subnet: the LAN's (e.g. 192.168.1.0/24)")
            })?;
            (Cidr::parse(s)?, parent.to_string())
        }
        other => bail!("unknown --driver {other:?}: bridge or macvlan"),
    };
    let gateway = match req.gateway {
        Some(g) => {
            let ip: Ipv4Addr = g
                .parse()
                .map_err(|_| anyhow!("--gateway {g:?} is not an IPv4 address"))?;
            if !subnet.contains(ip) {
                bail!("--gateway {g} is not in {subnet}");
            }
            ip
        }
        None => subnet.first_host(),
    };
    if let Some(r) = req.ip_range {
        let c = Cidr::parse(r).context("invalid --ip-range")?;
        if !subnet.contains(c.network()) || c.prefix < subnet.prefix {
            bail!("--ip-range {r} is not inside {subnet}");
        }
    }
    let d = Definition {
        name: req.name.into(),
        driver: req.driver.into(),
        subnet: subnet.to_string(),
        gateway: gateway.to_string(),
        interface,
        ip_range: req.ip_range.map(str::to_owned),
        created: crate::state::now_rfc3339(),
    };
    let dir = networks_dir(settings);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes = serde_json::to_vec_pretty(&d).context("cannot serialise the network")?;
    crate::state::write_atomic(&dir.join(format!("{}.json", d.name)), &bytes)?;
    Ok(d)
}

/// Removes a user network's definition (or `.conflist`).
pub fn remove(settings: &Settings, name: &str) -> anyhow::Result<()> {
    if name == DEFAULT {
        bail!("the default network {DEFAULT} cannot be removed");
    }
    validate_name(name)?;
    let dir = networks_dir(settings);
    let mut found = false;
    for f in [format!("{name}.json"), format!("{name}.conflist")] {
        match std::fs::remove_file(dir.join(&f)) {
            Ok(()) => found = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove {}", dir.join(f).display()))
            }
        }
    }
    if !found {
        bail!("network {name} does not exist");
    }
    Ok(())
}

/// The directories CNI plugins are looked for in.
pub fn plugin_dirs(settings: &Settings) -> Vec<PathBuf> {
    match &settings.file.network.cni_path {
        Some(p) if !p.is_empty() => p.clone(),
        _ => vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.45.3.0/24").unwrap();
        assert_eq!(c.first_host().to_string(), "10.45.3.1");
        assert_eq!(c.last_host().to_string(), "10.45.3.254");
        assert!(c.contains("10.45.3.77".parse().unwrap()));
        assert!(!c.contains("10.45.4.1".parse().unwrap()));
        assert!(c.overlaps(&Cidr::parse("10.45.0.0/16").unwrap()));
        assert!(!c.overlaps(&Cidr::parse("10.45.4.0/24").unwrap()));
        for bad in [
            "10.45.3.1/24",
            "10.45.3.0",
            "10.45.3.0/33",
            "x/24",
            "10.0.0.0/4",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        for ok in ["app", "a.b-c_d", "9net"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "-a", "a/b", "../x", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
