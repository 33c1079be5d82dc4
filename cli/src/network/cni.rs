//! The CNI runtime side of the protocol (spec 1.0): slate runs a network configuration
//! list's plugins as libcni does, with the same environment and stdin, and reads their
//! results and errors.
//!
//! ADD runs the plugins in order, each given the previous one's result (`prevResult`); DEL
//! runs them in reverse, each given the result of the ADD, which slate keeps in the
//! container's `network.json` (libcni's cache). Capabilities a plugin declares
//! (`portMappings`, `ips`...) get their `runtimeConfig` from slate. A plugin runs with a
//! clean environment (PATH only: `bridge` and `portmap` call `iptables`) and a deadline, so
//! a plugin that hangs (a DHCP server that never answers) fails the run instead of hanging it.

use std::io::{Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Map, Value};

/// How long one plugin may take. The bridge plugin's first ADD creates the bridge and
/// iptables chains: well under a second even on a Pi; DHCP may wait for a lease.
const PLUGIN_DEADLINE: Duration = Duration::from_secs(60);

/// What the plugins are told about the container, besides their configuration.
pub struct Invocation<'a> {
    pub container_id: &'a str,
    /// The network namespace's path; empty for a DEL whose namespace is already gone (the
    /// spec allows it: the plugins then release what lives outside it).
    pub netns: &'a Path,
    pub ifname: &'a str,
    /// `CNI_ARGS`: `K=V;K=V` (host-local reads `IP=` from it).
    pub args: &'a str,
    /// Where plugins are looked for, in order.
    pub plugin_dirs: &'a [PathBuf],
}

/// Runs ADD through the list; returns the last plugin's result.
pub fn add(conflist: &Value, inv: &Invocation, runtime_config: &Value) -> anyhow::Result<Value> {
    let plugins = plugins(conflist)?;
    let mut prev: Option<Value> = None;
    for p in plugins {
        let conf = plugin_conf(conflist, p, runtime_config, prev.as_ref())?;
        let out = exec(&conf, "ADD", inv)?;
        let result: Value = serde_json::from_slice(&out).with_context(|| {
            format!(
                "the CNI plugin {} returned no result JSON",
                plugin_type(p).unwrap_or("?")
            )
        })?;
        prev = Some(result);
    }
    prev.ok_or_else(|| anyhow!("the network configuration has no plugins"))
}

/// Runs DEL through the list in reverse. Every plugin is called even when one fails (each
/// releases its own resources: a lease, a veth, NAT rules); the first error is returned.
pub fn del(
    conflist: &Value,
    inv: &Invocation,
    runtime_config: &Value,
    prev: Option<&Value>,
) -> anyhow::Result<()> {
    let mut first_err = None;
    for p in plugins(conflist)?.iter().rev() {
        let res = plugin_conf(conflist, p, runtime_config, prev).and_then(|c| exec(&c, "DEL", inv));
        if let Err(e) = res {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn plugins(conflist: &Value) -> anyhow::Result<&Vec<Value>> {
    conflist
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("the network configuration has no \"plugins\" list"))
}

fn plugin_type(p: &Value) -> Option<&str> {
    p.get("type").and_then(Value::as_str)
}

/// One plugin's stdin: its own object, with the list's name and version, the runtime
/// config for the capabilities it declares and the previous result (spec 1.0, section
/// "Deriving execution configuration from plugin configuration").
fn plugin_conf(
    conflist: &Value,
    plugin: &Value,
    runtime_config: &Value,
    prev: Option<&Value>,
) -> anyhow::Result<Value> {
    let mut conf: Map<String, Value> = plugin
        .as_object()
        .cloned()
        .ok_or_else(|| anyhow!("a plugin of the network configuration is not an object"))?;
    for key in ["name", "cniVersion"] {
        if let Some(v) = conflist.get(key) {
            conf.insert(key.into(), v.clone());
        }
    }
    if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
        let mut rc = Map::new();
        for (cap, on) in caps {
            if on.as_bool() == Some(true) {
                if let Some(v) = runtime_config.get(cap) {
                    rc.insert(cap.clone(), v.clone());
                }
            }
        }
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
    }
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    Ok(Value::Object(conf))
}

/// Finds the plugin binary: a bare name, in the first directory that has it.
fn find_plugin(typ: &str, dirs: &[PathBuf]) -> anyhow::Result<PathBuf> {
    if typ.is_empty() || typ.contains('/') || typ.starts_with('.') {
        bail!("invalid CNI plugin type {typ:?}");
    }
    for d in dirs {
        let p = d.join(typ);
        if p.is_file() {
            return Ok(p);
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "the CNI plugin {typ:?} is not installed (looked in {}): install containernetworking-plugins, or set [network] cni_path",
        looked.join(", ")
    )
}

/// Runs one plugin; its stdout on success, its error (CNI's `{code, msg, details}`) as the
/// error otherwise.
fn exec(conf: &Value, command: &str, inv: &Invocation) -> anyhow::Result<Vec<u8>> {
    let typ = conf
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("a plugin of the network configuration has no \"type\""))?;
    let bin = find_plugin(typ, inv.plugin_dirs)?;
    let path_var = inv
        .plugin_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let stdin = serde_json::to_vec(conf).context("cannot serialise a CNI plugin's config")?;
    tracing::debug!(plugin = typ, command, "running CNI plugin");
    let mut child = Command::new(&bin)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", path_var)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the CNI plugin {}", bin.display()))?;
    // A config is a few KB: it fits the pipe, so writing it whole before reading cannot
    // deadlock with a plugin that writes before it has read everything.
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(&stdin);
    }
    let mut out = Vec::new();
    let mut err = Vec::new();
    let deadline = Instant::now() + PLUGIN_DEADLINE;
    let timed_out = read_until(&mut child, &mut out, &mut err, deadline);
    if timed_out {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for the CNI plugin {typ}"))?;
    if timed_out {
        bail!(
            "the CNI plugin {typ} ({command}) did not finish within {} s",
            PLUGIN_DEADLINE.as_secs()
        );
    }
    if status.success() {
        return Ok(out);
    }
    // CNI errors are JSON on stdout; stderr is the plugin's own logging.
    let msg = match serde_json::from_slice::<Value>(&out) {
        Ok(v) if v.get("msg").is_some() => {
            let m = v.get("msg").and_then(Value::as_str).unwrap_or("");
            match v
                .get("details")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
            {
                Some(d) => format!("{m}: {d}"),
                None => m.to_string(),
            }
        }
        _ => {
            let text = String::from_utf8_lossy(if out.is_empty() { &err } else { &out });
            text.trim().to_string()
        }
    };
    bail!("the CNI plugin {typ} ({command}) failed: {msg}")
}

/// Reads the child's stdout and stderr until both close or the deadline passes (true then).
fn read_until(
    child: &mut std::process::Child,
    out: &mut Vec<u8>,
    err: &mut Vec<u8>,
    deadline: Instant,
) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut o = child.stdout.take();
    let mut e = child.stderr.take();
    let mut buf = [0u8; 8192];
    while o.is_some() || e.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let (ready_o, ready_e) = {
            let mut fds = Vec::new();
            if let Some(p) = &o {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            if let Some(p) = &e {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            if poll(&mut fds, PollTimeout::from(ms)).is_err() {
                continue;
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let mut it = fds.iter();
            let ro = o
                .as_ref()
                .map(|_| it.next().is_some_and(ready))
                .unwrap_or(false);
            let re = e
                .as_ref()
                .map(|_| it.next().is_some_and(ready))
                .unwrap_or(false);
            (ro, re)
        };
        if ready_o {
            if let Some(p) = o.as_mut() {
                match p.read(&mut buf) {
                    Ok(0) | Err(_) => o = None,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        }
        if ready_e {
            if let Some(p) = e.as_mut() {
                match p.read(&mut buf) {
                    Ok(0) | Err(_) => e = None,
                    Ok(n) => err.extend_from_slice(&buf[..n]),
                }
            }
        }
    }
    false
}

/// The first IPv4 address of a CNI result (`ips[].address`, CIDR form), without its prefix.
pub fn first_ipv4(result: &Value) -> Option<std::net::Ipv4Addr> {
    result
        .get("ips")?
        .as_array()?
        .iter()
        .filter_map(|ip| ip.get("address")?.as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .next()
}

/// A result's interface MAC for `ifname` (the container side), for `inspect`.
pub fn mac_of(result: &Value, ifname: &str) -> Option<String> {
    result
        .get("interfaces")?
        .as_array()?
        .iter()
        .find(|i| {
            i.get("name").and_then(Value::as_str) == Some(ifname) && i.get("sandbox").is_some()
        })
        .and_then(|i| i.get("mac")?.as_str().map(str::to_owned))
}

/// The runtime config slate passes: published ports (portmap's `portMappings`).
pub fn runtime_config(ports: &[super::ports::PortMapping]) -> Value {
    let mappings: Vec<Value> = ports
        .iter()
        .map(|p| {
            json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": p.protocol.as_str(),
                "hostIP": p.host_ip,
            })
        })
        .collect();
    json!({ "portMappings": mappings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_conf_takes_name_version_caps_and_prev() {
        let list = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "bridge"},
            {"type": "portmap", "capabilities": {"portMappings": true, "ips": false}},
        ]});
        let rc = json!({"portMappings": [1], "ips": ["x"]});
        let p = &list["plugins"][1];
        let prev = json!({"ips": []});
        let c = plugin_conf(&list, p, &rc, Some(&prev)).unwrap();
        assert_eq!(c["name"], "n");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["runtimeConfig"], json!({"portMappings": [1]}));
        assert_eq!(c["prevResult"], prev);
        let c = plugin_conf(&list, &list["plugins"][0], &rc, None).unwrap();
        assert!(c.get("runtimeConfig").is_none() && c.get("prevResult").is_none());
    }

    #[test]
    fn plugin_names_cannot_walk_out_of_the_plugin_dirs() {
        for t in ["../../bin/sh", "/bin/sh", "", ".hidden"] {
            assert!(
                find_plugin(t, &[PathBuf::from("/usr/lib/cni")]).is_err(),
                "{t}"
            );
        }
    }

    #[test]
    fn result_addresses() {
        let r = json!({"interfaces": [{"name": "slate0", "mac": "aa"}, {"name": "eth0", "mac": "bb", "sandbox": "/x"}],
                       "ips": [{"address": "fd00::2/64"}, {"address": "10.44.0.2/16", "interface": 1}]});
        assert_eq!(first_ipv4(&r), Some("10.44.0.2".parse().unwrap()));
        assert_eq!(mac_of(&r, "eth0").as_deref(), Some("bb"));
    }
}
