//! Container networks other than the host's: `--network bridge` (or any `-p`), user networks
//! (`slate network create`) and any CNI `.conflist` of the store.
//!
//! slate is a CNI runtime, driving the reference plugins (`bridge`, `host-local`,
//! `portmap`, `firewall`, `macvlan`) rather than doing netlink and NAT itself: they are
//! what podman, containerd and k3s have run for years, and a user can plug in anything
//! else CNI offers. Life of a container's network, owned by whoever supervises it (the
//! foreground `slate run`, or a detached container's supervisor):
//!
//! 1. its published host ports are bound (reserved) by that process: a taken port fails the
//!    run with a clear error;
//! 2. `network.json` is written beside the record, *before* anything exists, so a crash at
//!    any later point leaves enough to undo it;
//! 3. a network namespace is pinned at `<state>/<id>/netns` (the spec joins it by path) and
//!    the plugins' ADD runs; the result (address, interfaces) goes into `network.json`;
//! 4. every member of the network gets the others in its `/etc/hosts`: containers reach
//!    each other by name without a DNS server, and the files are rewritten in place (the
//!    container's `/etc/hosts` is a bind mount of that inode) whenever one joins or leaves;
//! 5. when the container is gone for good (not between restarts: it keeps its address as
//!    in docker) DEL runs through the plugins, which remove the veth, the lease and the NAT
//!    rules, and the namespace is unpinned. A supervisor killed with SIGKILL never gets
//!    there: the next slate command's sweep does the same from `network.json`.

pub mod cni;
pub mod defs;
pub mod netns;
pub mod ports;

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Settings;
use crate::state::{Record, StateDir};
use ports::PortMapping;

/// Beside a container's record: what its network is, for the DEL.
pub const ATTACHMENT_FILE: &str = "network.json";
/// The pinned network namespace, beside the record.
pub const NETNS_FILE: &str = "netns";
/// The interface the container sees.
const IFNAME: &str = "eth0";

/// What `slate run` asked for, resolved (the network's configuration list included), kept
/// in the record: a detached container's supervisor attaches it without reading any
/// configuration, and a restart gets the same network even if it was changed since.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub network: String,
    pub conflist: Value,
    pub plugin_dirs: Vec<PathBuf>,
    /// Host port 0: any free port, chosen at attach.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// `--ip`.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
}

/// A container's network as attached (`network.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub container_id: String,
    pub container_name: String,
    /// The configuration the ADD ran with: the DEL needs exactly it, even if the network
    /// was changed or removed since.
    pub conflist: Value,
    pub plugin_dirs: Vec<PathBuf>,
    pub netns: PathBuf,
    pub ifname: String,
    pub cni_args: String,
    /// The ports as bound (random ones resolved).
    pub ports: Vec<PortMapping>,
    /// Set once the ADD succeeded.
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub mac: Option<String>,
    /// The container's /etc/hosts (its bind source) and its content before the network's
    /// names were added.
    pub hosts_file: PathBuf,
    pub hosts_base: String,
}

impl Attachment {
    fn invocation(&self) -> cni::Invocation<'_> {
        cni::Invocation {
            container_id: &self.container_id,
            netns: &self.netns,
            ifname: &self.ifname,
            args: &self.cni_args,
            plugin_dirs: &self.plugin_dirs,
        }
    }
}

/// A container's attached network; torn down on drop (or by [`Attached::release`]).
pub struct Attached {
    sd_root: PathBuf,
    att: Option<Attachment>,
    /// The published ports' reservations.
    _ports: Vec<OwnedFd>,
}

impl Attached {
    /// DEL, unpin, forget. Idempotent.
    pub fn release(&mut self) {
        if let Some(att) = self.att.take() {
            let sd = match StateDir::open(&self.sd_root) {
                Ok(sd) => sd,
                Err(e) => {
                    tracing::warn!(
                        "cannot tear down the network of {}: {e:#}",
                        att.container_name
                    );
                    return;
                }
            };
            teardown(&sd, &att);
        }
        self._ports.clear();
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.release();
    }
}

/// `--network` as slate resolves it: host unless told otherwise, but `-p`/`-P` without a
/// `--network` mean the default bridge (the ports would mean nothing on the host's network).
pub fn mode_of(network: Option<&str>, publishes: bool) -> &str {
    match network {
        Some(n) => n,
        None if publishes => defs::DEFAULT,
        None => "host",
    }
}

/// Whether the mode is a CNI network (not host, not none).
pub fn is_cni(mode: &str) -> bool {
    !matches!(mode, "host" | "none" | "")
}

/// Serialises attach, teardown and the hosts files' rewrites of one state dir.
fn lock(sd: &StateDir) -> anyhow::Result<Flock<std::fs::File>> {
    sd.lock_named("networks.lock")
}

fn save(sd: &StateDir, att: &Attachment) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(att).context("cannot serialise the network state")?;
    crate::state::write_atomic(&sd.dir(&att.container_id).join(ATTACHMENT_FILE), &bytes)
}

/// Reads a container's `network.json`, if it has one.
pub fn load_attachment(sd: &StateDir, id: &str) -> Option<Attachment> {
    let p = sd.dir(id).join(ATTACHMENT_FILE);
    let bytes = std::fs::read(&p).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "corrupt network state");
            None
        }
    }
}

/// Attaches the container of `rec` to the network its record asks for; None when it asks
/// for none (host or `--network none`).
pub fn attach(sd: &StateDir, rec: &Record) -> anyhow::Result<Option<Attached>> {
    let Some(req) = &rec.network else {
        return Ok(None);
    };
    let mut ports = req.ports.clone();
    let held = ports::reserve(&mut ports)?;
    let hosts_file = rec.run_dir.join("hosts");
    let hosts_base =
        strip_network_section(&std::fs::read_to_string(&hosts_file).unwrap_or_default());
    let mut cni_args = String::from("IgnoreUnknown=1");
    if let Some(ip) = req.ip {
        cni_args.push_str(&format!(";IP={ip}"));
    }
    let mut att = Attachment {
        network: req.network.clone(),
        container_id: rec.id.clone(),
        container_name: rec.name.clone(),
        conflist: req.conflist.clone(),
        plugin_dirs: req.plugin_dirs.clone(),
        netns: sd.dir(&rec.id).join(NETNS_FILE),
        ifname: IFNAME.into(),
        cni_args,
        ports,
        result: None,
        ip: None,
        mac: None,
        hosts_file,
        hosts_base,
    };
    let _lock = lock(sd)?;
    save(sd, &att)?;
    let mut attached = Attached {
        sd_root: sd.root().to_path_buf(),
        att: None,
        _ports: held,
    };
    let res = (|| -> anyhow::Result<()> {
        netns::create(&att.netns)?;
        let rc = cni::runtime_config(&att.ports);
        let result = cni::add(&att.conflist, &att.invocation(), &rc)
            .with_context(|| format!("cannot attach to network {}", att.network))?;
        att.ip = cni::first_ipv4(&result);
        att.mac = cni::mac_of(&result, &att.ifname);
        att.result = Some(result);
        save(sd, &att)
    })();
    // From here on the drop tears down whatever exists, also after a failed ADD (a plugin
    // may have made its veth or lease before the one after it failed).
    attached.att = Some(att.clone());
    res?;
    refresh_hosts(sd, &att.network);
    tracing::debug!(network = %att.network, ip = ?att.ip, "attached");
    Ok(Some(attached))
}

/// Undoes an attachment: DEL through the plugins, unpin the namespace, drop `network.json`,
/// and the container's name from the other members' hosts files.
fn teardown(sd: &StateDir, att: &Attachment) {
    let _lock = match lock(sd) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("{e:#}");
            None
        }
    };
    // A crash between creating the file and pinning the namespace leaves an empty file:
    // CNI then wants no namespace at all, and the plugins release what lives outside it.
    let pinned = is_nsfs(&att.netns);
    let empty = PathBuf::new();
    let mut inv = att.invocation();
    if !pinned {
        inv.netns = &empty;
    }
    let rc = cni::runtime_config(&att.ports);
    if let Err(e) = cni::del(&att.conflist, &inv, &rc, att.result.as_ref()) {
        tracing::warn!(container = %att.container_name, "network teardown: {e:#}");
    }
    netns::remove(&att.netns);
    let f = sd.dir(&att.container_id).join(ATTACHMENT_FILE);
    if let Err(e) = std::fs::remove_file(&f) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %f.display(), error = %e, "cannot remove the network state");
        }
    }
    refresh_hosts(sd, &att.network);
}

/// Whether `path` is a network namespace (nsfs), not the empty placeholder file.
fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: libc::c_long = 0x6e73_6673;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs(2) reads the NUL-terminated path and writes only into the zeroed,
    // properly sized struct passed.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    let ret = unsafe { libc::statfs(c.as_ptr(), &mut s) };
    #[allow(clippy::unnecessary_cast)]
    let magic = s.f_type as libc::c_long;
    ret == 0 && magic == NSFS_MAGIC
}

/// Tears down the network a container left behind (its supervisor died, or `rm` of a
/// container whose supervisor is gone). Nothing to do without `network.json`.
pub fn release_recorded(sd: &StateDir, id: &str) {
    if let Some(att) = load_attachment(sd, id) {
        tracing::info!(container = %att.container_name, network = %att.network, "removing a dead container's network");
        teardown(sd, &att);
    }
}

/// Every attachment of the state dir on `network`, with an address.
fn members(sd: &StateDir, network: &str) -> Vec<Attachment> {
    let Ok(rd) = std::fs::read_dir(sd.root()) else {
        return Vec::new();
    };
    let mut out: Vec<Attachment> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|id| load_attachment(sd, &id))
        .filter(|a| a.network == network && a.ip.is_some())
        .collect();
    out.sort_by(|a, b| a.container_name.cmp(&b.container_name));
    out
}

/// The attachments of every container of the state dir (for `network inspect`, `rm`).
pub fn all_attachments(sd: &StateDir) -> Vec<Attachment> {
    let Ok(rd) = std::fs::read_dir(sd.root()) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|id| load_attachment(sd, &id))
        .collect()
}

/// The first line of the names slate adds to a member's hosts file.
fn section_marker(network: &str) -> String {
    format!("# network {network}, kept current by slate")
}

/// A hosts file without the names an earlier run of the container had added (`slate
/// start` brings back the file as that run left it).
fn strip_network_section(hosts: &str) -> String {
    let mut out = String::new();
    for l in hosts.lines() {
        if l.starts_with("# network ") && l.ends_with(", kept current by slate") {
            break;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// A container was renamed: its peers' hosts files get the new name.
pub fn renamed(sd: &StateDir, id: &str, name: &str) {
    let Some(mut att) = load_attachment(sd, id) else {
        return;
    };
    att.container_name = name.to_string();
    let _lock = lock(sd);
    if let Err(e) = save(sd, &att) {
        tracing::warn!("{e:#}");
    }
    refresh_hosts(sd, &att.network);
}

/// Rewrites the hosts file of every member of `network`: its base, then every member's
/// address and names (name and short id, as docker's DNS answers them).
fn refresh_hosts(sd: &StateDir, network: &str) {
    let members = members(sd, network);
    for a in &members {
        let mut s = a.hosts_base.clone();
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&section_marker(network));
        s.push('\n');
        for m in &members {
            if let Some(ip) = m.ip {
                let short: String = m.container_id.chars().take(12).collect();
                s.push_str(&format!("{ip}\t{} {short}\n", m.container_name));
            }
        }
        // In place: the container's /etc/hosts is a bind mount of this very inode.
        let res = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&a.hosts_file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, s.as_bytes()));
        if let Err(e) = res {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %a.hosts_file.display(), error = %e, "cannot update a container's /etc/hosts");
            }
        }
    }
}

/// The request for a `slate run`: the network, the ports of `-p` and, with `-P`, the
/// container ports the image and `--expose` declare (each on a free host port). None for
/// the host's network and `--network none`.
pub fn request(
    settings: &Settings,
    args: &crate::cli::RunArgs,
    image_exposed: &[String],
) -> anyhow::Result<Option<Request>> {
    let mode = args.network_mode();
    let mut ports = Vec::new();
    for p in &args.publish {
        ports.extend(ports::parse_publish(p)?);
    }
    let mut exposed = Vec::new();
    for e in image_exposed.iter().chain(&args.expose) {
        exposed.extend(ports::parse_exposed(e)?);
    }
    if args.publish_all {
        exposed.sort();
        exposed.dedup();
        for (port, proto) in exposed {
            if !ports
                .iter()
                .any(|m| m.container_port == port && m.protocol == proto)
            {
                ports.push(PortMapping {
                    host_ip: String::new(),
                    host_port: 0,
                    container_port: port,
                    protocol: proto,
                });
            }
        }
    }
    let ip = match args.ip.as_deref() {
        None => None,
        Some(s) => Some(
            s.parse::<Ipv4Addr>()
                .map_err(|_| anyhow::anyhow!("invalid --ip {s:?}: an IPv4 address"))?,
        ),
    };
    if !is_cni(mode) {
        if ip.is_some() {
            bail!("--ip needs a network of its own: --network bridge or a user network");
        }
        if !ports.is_empty() {
            if mode == "none" {
                bail!(
                    "-p and -P need a network: with --network none there is nothing to publish on"
                );
            }
            // docker's behaviour: the container already has the host's ports.
            tracing::warn!("published ports are discarded with --network host: the container uses the host's ports directly");
        }
        return Ok(None);
    }
    if ip.is_some() && mode == defs::DEFAULT {
        bail!("--ip works on user networks only (docker's rule): `slate network create NAME`, then --network NAME");
    }
    let net = defs::load(settings, mode)?;
    if let Some(d) = &net.definition {
        if !ports.is_empty() && d.driver == "macvlan" {
            bail!("network {} is a macvlan network: its containers have their own LAN address, so -p has nothing to publish", net.name);
        }
        if let Some(ip) = ip {
            let subnet = defs::Cidr::parse(&d.subnet)?;
            if !subnet.contains(ip) {
                bail!("--ip {ip} is not in network {}'s subnet {subnet}", net.name);
            }
        }
    }
    Ok(Some(Request {
        network: net.name,
        conflist: net.conflist,
        plugin_dirs: defs::plugin_dirs(settings),
        ports,
        ip,
    }))
}
