//! Published ports: docker's `-p [IP:][HOST:]CONTAINER[/PROTO]` (ranges too), `-P` and
//! `--expose`, and the host sockets that reserve them.
//!
//! The CNI `portmap` plugin forwards with DNAT rules, which never bind the host port: a
//! second container (or a host program) could take the same port and silently get nothing.
//! So slate binds each published port itself, without listening, for as long as the
//! container has its network: taken ports fail at `run` with a clear error, as docker's
//! userland proxy makes them do. The sockets are close-on-exec and the runtime closes every
//! descriptor above 2 before the app runs, so they never reach the container.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;

use anyhow::{anyhow, bail, Context as _};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrStorage};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => bail!("sctp ports are not supported (tcp or udp)"),
            other => bail!("unknown protocol {other:?} (tcp or udp)"),
        }
    }
}

/// One published port. `host_port` 0 means "any free port" until [`reserve`] picks one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Empty: every address of the host.
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl std::fmt::Display for PortMapping {
    /// docker's `port` format: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = if self.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &self.host_ip
        };
        write!(
            f,
            "{}/{} -> {ip}:{}",
            self.container_port,
            self.protocol.as_str(),
            self.host_port
        )
    }
}

/// A container port, or a range of them: `80`, `8000-8010`, with an optional `/proto`.
fn port_range(s: &str) -> anyhow::Result<(u16, u16)> {
    let port = |p: &str| -> anyhow::Result<u16> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("{p:?} is not a port (1-65535)"),
        }
    };
    match s.split_once('-') {
        None => {
            let p = port(s)?;
            Ok((p, p))
        }
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if b < a {
                bail!("the range {s:?} ends before it starts");
            }
            Ok((a, b))
        }
    }
}

/// Parses one `-p` value into its mappings (one per port of a range).
pub fn parse_publish(spec: &str) -> anyhow::Result<Vec<PortMapping>> {
    let err = |e: anyhow::Error| {
        e.context(format!(
            "invalid -p {spec:?}: expected [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]"
        ))
    };
    let (addr, proto) = match spec.rsplit_once('/') {
        Some((a, p)) => (a, Protocol::parse(p).map_err(err)?),
        None => (spec, Protocol::Tcp),
    };
    // IPv6 host addresses come bracketed, as docker writes them: [::1]:8080:80.
    let (host_ip, rest) = if let Some(r) = addr.strip_prefix('[') {
        let (ip, rest) = r
            .split_once("]:")
            .ok_or_else(|| err(anyhow!("unclosed [")))?;
        (ip.to_string(), rest)
    } else {
        let parts: Vec<&str> = addr.split(':').collect();
        match parts.len() {
            1 | 2 => (String::new(), addr),
            3 => (parts[0].to_string(), &addr[parts[0].len() + 1..]),
            _ => return Err(err(anyhow!("too many colons"))),
        }
    };
    if !host_ip.is_empty() {
        let ip: IpAddr = host_ip
            .parse()
            .map_err(|_| err(anyhow!("{host_ip:?} is not an IP address")))?;
        if ip.is_ipv6() {
            return Err(err(anyhow!(
                "IPv6 host addresses are not supported yet: publish on an IPv4 address"
            )));
        }
    }
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (Some(h), c),
        None => (None, rest),
    };
    let (c_lo, c_hi) = port_range(container).map_err(err)?;
    let (h_lo, h_hi) = match host {
        None | Some("") => (0, 0),
        Some(h) => port_range(h).map_err(err)?,
    };
    if h_lo != 0 && h_hi - h_lo != c_hi - c_lo {
        return Err(err(anyhow!(
            "the host and container ranges are not the same length"
        )));
    }
    Ok((c_lo..=c_hi)
        .enumerate()
        .map(|(i, c)| PortMapping {
            host_ip: host_ip.clone(),
            host_port: if h_lo == 0 { 0 } else { h_lo + i as u16 },
            container_port: c,
            protocol: proto,
        })
        .collect())
}

/// `--expose` and the image's `ExposedPorts` key (`80/tcp`): the container ports `-P`
/// publishes.
pub fn parse_exposed(spec: &str) -> anyhow::Result<Vec<(u16, Protocol)>> {
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((a, p)) => (a, Protocol::parse(p)?),
        None => (spec, Protocol::Tcp),
    };
    let (lo, hi) = port_range(ports).with_context(|| format!("invalid exposed port {spec:?}"))?;
    Ok((lo..=hi).map(|p| (p, proto)).collect())
}

/// Binds every mapping's host port (picking a free one for port 0, written back into the
/// mapping) and returns the sockets that keep them reserved.
pub fn reserve(ports: &mut [PortMapping]) -> anyhow::Result<Vec<OwnedFd>> {
    let mut held = Vec::with_capacity(ports.len());
    for p in ports.iter_mut() {
        let ip: Ipv4Addr = if p.host_ip.is_empty() {
            Ipv4Addr::UNSPECIFIED
        } else {
            p.host_ip
                .parse()
                .with_context(|| format!("invalid host address {:?}", p.host_ip))?
        };
        let ty = match p.protocol {
            Protocol::Tcp => SockType::Stream,
            Protocol::Udp => SockType::Datagram,
        };
        let fd = socket::socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None)
            .context("cannot create a socket to reserve a published port")?;
        let addr = SockaddrIn::from(std::net::SocketAddrV4::new(ip, p.host_port));
        let shown = SocketAddr::new(IpAddr::V4(ip), p.host_port);
        match socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => {}
            Err(nix::errno::Errno::EADDRINUSE) => bail!(
                "cannot publish {shown}/{}: the port is already in use (by a program on this host or another container's -p); choose another host port",
                p.protocol.as_str()
            ),
            Err(nix::errno::Errno::EADDRNOTAVAIL) => bail!(
                "cannot publish on {ip}: it is not an address of this host"
            ),
            Err(e) => {
                return Err(anyhow!(e))
                    .with_context(|| format!("cannot reserve the host port {shown}"))
            }
        }
        if p.host_port == 0 {
            let bound: SockaddrStorage = socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd))
                .context("cannot read the port the kernel picked")?;
            p.host_port = bound
                .as_sockaddr_in()
                .map(|s| s.port())
                .ok_or_else(|| anyhow!("the kernel picked no IPv4 port"))?;
        }
        held.push(fd);
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> PortMapping {
        let mut v = parse_publish(s).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        v.remove(0)
    }

    #[test]
    fn docker_forms() {
        let p = one("8080:80");
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.container_port),
            ("", 8080, 80)
        );
        assert_eq!(p.protocol, Protocol::Tcp);
        let p = one("127.0.0.1:8080:80/udp");
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.protocol),
            ("127.0.0.1", 8080, Protocol::Udp)
        );
        let p = one("80");
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = one("127.0.0.1::80");
        assert_eq!((p.host_ip.as_str(), p.host_port), ("127.0.0.1", 0));
        let v = parse_publish("8000-8002:9000-9002").unwrap();
        assert_eq!(
            v.iter()
                .map(|p| (p.host_port, p.container_port))
                .collect::<Vec<_>>(),
            [(8000, 9000), (8001, 9001), (8002, 9002)]
        );
        assert_eq!(
            one("127.0.0.1:8080:80").to_string(),
            "80/tcp -> 127.0.0.1:8080"
        );
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        for (s, why) in [
            ("0:80", "not a port"),
            ("8080:70000", "not a port"),
            ("a:b:c:d", "too many colons"),
            ("1.2.3:80:80", "not an IP"),
            ("8000-8001:80", "same length"),
            ("80/sctp", "sctp"),
            ("9-8:9-8", "ends before"),
            ("[::1]:80:80", "IPv6"),
        ] {
            let e = format!("{:#}", parse_publish(s).unwrap_err());
            assert!(e.contains(why) && e.contains("invalid -p"), "{s}: {e}");
        }
    }

    #[test]
    fn exposed_ports() {
        assert_eq!(parse_exposed("80/tcp").unwrap(), [(80, Protocol::Tcp)]);
        assert_eq!(parse_exposed("53/udp").unwrap(), [(53, Protocol::Udp)]);
        assert_eq!(parse_exposed("7-8").unwrap().len(), 2);
    }

    #[test]
    fn a_reserved_port_cannot_be_reserved_twice() {
        let mut a = parse_publish("127.0.0.1::80").unwrap();
        let _held = reserve(&mut a).unwrap();
        assert_ne!(a[0].host_port, 0);
        let mut b = parse_publish(&format!("127.0.0.1:{}:80", a[0].host_port)).unwrap();
        let e = reserve(&mut b).unwrap_err().to_string();
        assert!(e.contains("already in use"), "{e}");
    }
}
