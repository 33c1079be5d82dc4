//! The container's mounts: docker's defaults (`/proc`, `/dev`, `/dev/pts`, `/dev/shm`,
//! `/dev/mqueue`, `/sys`, `/sys/fs/cgroup`), the generated `/etc/resolv.conf`, `/etc/hosts` and
//! `/etc/hostname`, then `-v` and `--tmpfs`. A user mount at a default's destination replaces
//! the default (as docker: `--tmpfs /dev/shm:size=1g`); two user mounts at one place are an
//! error. The runtime orders them parents first.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;

use super::{Host, Network, SpecError};
use crate::cli::RunArgs;

pub(crate) struct MountInput<'a> {
    pub args: &'a RunArgs,
    pub network: Network,
    pub hostname: &'a str,
    pub run_dir: &'a Path,
    pub host: &'a dyn Host,
    /// `--ipc host`: the host's /dev/shm and /dev/mqueue, not the container's own.
    pub ipc_host: bool,
    /// Where named volumes live; None: `-v NAME:/path` is refused.
    pub volumes_dir: Option<&'a Path>,
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_owned()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// docker's default mounts (moby `oci/defaults.go`), with `--shm-size` (bytes) and
/// `--ipc host` applied to /dev/shm and /dev/mqueue.
fn default_mounts(privileged: bool, shm_bytes: Option<i64>, ipc_host: bool) -> Vec<Mount> {
    let shm_size = format!("size={}k", shm_bytes.map_or(65536, |b| (b + 1023) / 1024));
    // /sys is read-only unless --privileged; the cgroup tree as well (docker makes it
    // writable for privileged containers with their own cgroup namespace, as here).
    let sys_mode = if privileged { "rw" } else { "ro" };
    let mut shm = mount(
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
    );
    // (An mqueue mount shows the queues of the mounting process's IPC namespace: with
    // --ipc host a fresh one already is the host's.)
    let mqueue = mount(
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    );
    if ipc_host {
        // The host's POSIX shared memory, as docker's --ipc host shares it.
        shm = mount(
            "/dev/shm",
            "bind",
            "/dev/shm",
            &["rbind", "rprivate", "nosuid", "nodev"],
        );
    }
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        shm,
        mqueue,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
    ]
}

/// `/a/./b/../c/` -> `/a/c`; `None` unless absolute. Lexical only: the runtime resolves the
/// destination inside the rootfs at mount time.
pub(crate) fn clean_abs(p: &str) -> Option<PathBuf> {
    if !p.starts_with('/') || p.contains('\0') {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Some(out)
}

/// Whether a `-v` host part is a path relative to the current directory (`.`, `..`, `./x`,
/// `../x`): docker's CLI (23.0 and later) takes those against it, and any other relative name
/// as a named volume.
pub(crate) fn is_cwd_relative(src: &str) -> bool {
    src == "." || src == ".." || src.starts_with("./") || src.starts_with("../")
}

/// Options of `-v` after the second colon.
#[derive(Default)]
struct VolumeMode {
    readonly: bool,
    propagation: Option<&'static str>,
}

fn parse_volume_mode(value: &str, mode: &str) -> Result<VolumeMode, SpecError> {
    let bad = |reason| SpecError::Volume {
        value: value.to_owned(),
        reason,
    };
    let mut out = VolumeMode::default();
    let mut rw_seen = false;
    for o in mode.split(',') {
        match o {
            "ro" | "rw" => {
                if rw_seen {
                    return Err(bad("ro and rw given more than once"));
                }
                rw_seen = true;
                out.readonly = o == "ro";
            }
            // SELinux relabelling: nothing to do on hosts without SELinux, which is what slate
            // targets; accepted so docker command lines work unchanged.
            "z" | "Z" => {}
            // Docker Desktop consistency hints: no meaning on Linux.
            "consistent" | "cached" | "delegated" => {}
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                if out.propagation.is_some() {
                    return Err(bad("more than one propagation mode"));
                }
                out.propagation = Some(match o {
                    "shared" => "shared",
                    "rshared" => "rshared",
                    "slave" => "slave",
                    "rslave" => "rslave",
                    "private" => "private",
                    _ => "rprivate",
                });
            }
            "nocopy" => return Err(bad("nocopy applies to named volumes only")),
            "" => return Err(bad("empty option")),
            _ => {
                return Err(bad(
                    "unknown option; expected ro, rw, z, Z or a propagation mode",
                ))
            }
        }
    }
    Ok(out)
}

/// `-v HOST:CONTAINER[:OPTS]` -> a recursive bind mount. Missing host directories are created,
/// as docker does for `-v` (not for `--mount`). `-v NAME:CONTAINER` is the named volume
/// NAME's data directory (created on first use, as docker's).
fn volume(
    value: &str,
    host: &dyn Host,
    volumes_dir: Option<&Path>,
) -> Result<(Mount, Option<String>), SpecError> {
    let bad = |reason| SpecError::Volume {
        value: value.to_owned(),
        reason,
    };
    let parts: Vec<&str> = value.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [one] => {
            return Err(if one.starts_with('/') {
                SpecError::AnonymousVolume(value.to_owned())
            } else {
                bad("expected HOST:CONTAINER[:OPTIONS]")
            })
        }
        [s, d] => (*s, *d, None),
        [s, d, m] => (*s, *d, Some(*m)),
        _ => {
            return Err(bad(
                "expected HOST:CONTAINER[:OPTIONS] (a path cannot contain ':')",
            ))
        }
    };
    if src.is_empty() || dst.is_empty() {
        return Err(bad("expected HOST:CONTAINER[:OPTIONS]"));
    }
    let mut named = None;
    let src_path = if src.starts_with('/') {
        PathBuf::from(src)
    } else if crate::volumes::valid_name(src) && !is_cwd_relative(src) {
        let dir = volumes_dir.ok_or_else(|| SpecError::NamedVolume(value.to_owned()))?;
        named = Some(src.to_owned());
        crate::volumes::data_dir(dir, src)
    } else if is_cwd_relative(src) {
        match host.cwd() {
            Some(cwd) => cwd.join(src),
            None => {
                return Err(bad(
                    "cannot resolve a relative host path: no current directory",
                ))
            }
        }
    } else {
        return Err(SpecError::NamedVolume(value.to_owned()));
    };
    let src_path = clean_abs(&src_path.to_string_lossy())
        .ok_or_else(|| bad("the host path must be absolute"))?;
    let dst = clean_abs(dst).ok_or_else(|| bad("the container path must be absolute"))?;
    if dst == Path::new("/") {
        return Err(bad("the container path cannot be /"));
    }
    // `nocopy` (a new named volume stays empty) is for named volumes only.
    let kept: String;
    let mode = match mode {
        Some(m) if named.is_some() => {
            kept = m
                .split(',')
                .filter(|o| *o != "nocopy")
                .collect::<Vec<_>>()
                .join(",");
            if kept.is_empty() {
                VolumeMode::default()
            } else {
                parse_volume_mode(value, &kept)?
            }
        }
        Some(m) => parse_volume_mode(value, m)?,
        None => VolumeMode::default(),
    };
    let mut options = vec!["rbind", mode.propagation.unwrap_or("rprivate")];
    if mode.readonly {
        options.push("ro");
    }
    let mut m = mount("", "bind", "", &options);
    m.set_destination(dst);
    m.set_source(Some(src_path));
    Ok((m, named))
}

/// `--mount type=bind|volume|tmpfs,...` (docker's keys), as the `-v`/`--tmpfs` value it
/// means, plus whether its source must exist already (a bind's, unlike `-v`).
fn mount_flag(value: &str) -> Result<(MountKind, String), SpecError> {
    let bad = |reason: &str| SpecError::MountFlag {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let mut typ = "volume";
    let (mut source, mut target) = (None, None);
    let mut readonly = false;
    let mut propagation = None;
    let mut tmpfs_opts = Vec::new();
    for kv in value.split(',') {
        let (k, v) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (kv, None),
        };
        match (k, v) {
            ("type", Some(t)) => typ = t,
            ("source" | "src", Some(v)) => source = Some(v),
            ("target" | "destination" | "dst", Some(v)) => target = Some(v),
            ("readonly" | "ro", None | Some("true") | Some("1")) => readonly = true,
            ("readonly" | "ro", Some("false") | Some("0")) => readonly = false,
            ("bind-propagation", Some(p)) => propagation = Some(p),
            ("tmpfs-size", Some(sz)) => tmpfs_opts.push(format!("size={sz}")),
            ("tmpfs-mode", Some(m)) => tmpfs_opts.push(format!("mode={m}")),
            ("volume-nocopy", _) | ("consistency", _) => {}
            _ => return Err(bad(&format!("unknown or malformed key {kv:?}"))),
        }
    }
    let target = target.ok_or_else(|| bad("target= is missing"))?;
    match typ {
        "bind" | "volume" => {
            let source = source.ok_or_else(|| {
                bad(if typ == "bind" {
                    "source= is missing"
                } else {
                    "anonymous volumes are not supported yet: give source=NAME"
                })
            })?;
            if typ == "bind" && !source.starts_with('/') {
                return Err(bad("a bind's source must be an absolute host path"));
            }
            if typ == "volume" && source.starts_with('/') {
                return Err(bad(
                    "a volume's source is a volume name; use type=bind for a host path",
                ));
            }
            let mut opts = Vec::new();
            if readonly {
                opts.push("ro");
            }
            if let Some(p) = propagation {
                opts.push(p);
            }
            let mut v = format!("{source}:{target}");
            if !opts.is_empty() {
                v.push(':');
                v.push_str(&opts.join(","));
            }
            Ok((
                if typ == "bind" {
                    MountKind::Bind
                } else {
                    MountKind::Volume
                },
                v,
            ))
        }
        "tmpfs" => {
            if source.is_some() {
                return Err(bad("a tmpfs has no source"));
            }
            if readonly {
                tmpfs_opts.push("ro".into());
            }
            let mut v = target.to_owned();
            if !tmpfs_opts.is_empty() {
                v.push(':');
                v.push_str(&tmpfs_opts.join(","));
            }
            Ok((MountKind::Tmpfs, v))
        }
        other => Err(bad(&format!(
            "unknown type {other:?}: bind, volume or tmpfs"
        ))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

/// `--tmpfs PATH[:OPTS]`: docker's defaults `noexec,nosuid,nodev` (no size limit: tmpfs's own
/// default of half the RAM), with the user's options merged over them, last one winning.
fn tmpfs(value: &str) -> Result<Mount, SpecError> {
    let bad = |reason| SpecError::Tmpfs {
        value: value.to_owned(),
        reason,
    };
    let (dst, opts) = match value.split_once(':') {
        Some((d, o)) => (d, o),
        None => (value, ""),
    };
    let dst = clean_abs(dst).ok_or_else(|| bad("the container path must be absolute"))?;
    if dst == Path::new("/") {
        return Err(bad("the container path cannot be /"));
    }
    let mut merged: Vec<String> = vec!["noexec".into(), "nosuid".into(), "nodev".into()];
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        if o.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        // A flag replaces its opposite (`exec` over `noexec`); a key=value its earlier value.
        let key = o.split_once('=').map_or(o, |(k, _)| k);
        let opposite = key
            .strip_prefix("no")
            .map_or_else(|| format!("no{key}"), str::to_owned);
        merged.retain(|m| {
            let mk = m.split_once('=').map_or(m.as_str(), |(k, _)| k);
            mk != key && (o.contains('=') || mk != opposite)
        });
        if o == "ro" || o == "rw" {
            merged.retain(|m| m != "ro" && m != "rw");
        }
        merged.push(o.to_owned());
    }
    let mut m = Mount::default();
    m.set_destination(dst);
    m.set_typ(Some("tmpfs".into()));
    m.set_source(Some(PathBuf::from("tmpfs")));
    m.set_options(Some(merged));
    Ok(m)
}

/// Named volumes a run created: (data dir, container path).
pub(crate) type NewVolumes = Vec<(PathBuf, PathBuf)>;

/// The mounts, and the named volumes created by this run: they get the image's files at
/// that path, as docker's do.
pub(crate) fn build(input: &MountInput) -> Result<(Vec<Mount>, NewVolumes), SpecError> {
    let args = input.args;
    let mut user: Vec<Mount> = Vec::new();
    // -v values and --mount binds and volumes, with what creating their source means.
    let mut binds: Vec<(String, MountKind)> = args
        .volume
        .iter()
        .map(|v| (v.clone(), MountKind::Volume))
        .collect();
    let mut tmpfses: Vec<String> = args.tmpfs.clone();
    for m in &args.mount {
        match mount_flag(m)? {
            (MountKind::Tmpfs, v) => tmpfses.push(v),
            (kind, v) => binds.push((v, kind)),
        }
    }
    let mut named: Vec<Option<String>> = Vec::new();
    for (v, _) in &binds {
        let (m, n) = volume(v, input.host, input.volumes_dir)?;
        user.push(m);
        named.push(n);
    }
    for t in &tmpfses {
        user.push(tmpfs(t)?);
    }
    for (i, m) in user.iter().enumerate() {
        if user[..i].iter().any(|o| o.destination() == m.destination()) {
            return Err(SpecError::DuplicateMount(m.destination().clone()));
        }
    }
    let mut new_volumes = Vec::new();
    // Only now that every flag parsed: missing -v host directories are created, as docker;
    // named volumes on first use; a --mount bind's source must exist.
    for (((v, kind), m), name) in binds.iter().zip(&user).zip(&named) {
        let src = match m.source() {
            Some(s) => s,
            None => continue,
        };
        if let (Some(name), Some(dir)) = (name, input.volumes_dir) {
            let created = crate::volumes::ensure(dir, name).map_err(|e| SpecError::VolumeHost {
                value: v.clone(),
                path: src.clone(),
                source: std::io::Error::other(format!("{e:#}")),
            })?;
            let nocopy = v
                .rsplit_once(':')
                .is_some_and(|(_, o)| o.split(',').any(|o| o == "nocopy"));
            if created && !nocopy {
                new_volumes.push((src.clone(), m.destination().clone()));
            }
            continue;
        }
        match std::fs::symlink_metadata(src) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && *kind == MountKind::Bind => {
                return Err(SpecError::MountFlag {
                    value: v.clone(),
                    reason: format!("bind source path {} does not exist", src.display()),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(src).map_err(|source| SpecError::VolumeHost {
                    value: v.clone(),
                    path: src.clone(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(SpecError::VolumeHost {
                    value: v.clone(),
                    path: src.clone(),
                    source,
                })
            }
        }
    }
    let taken = |dest: &Path| user.iter().any(|u| u.destination() == dest);

    let shm_bytes = match &args.shm_size {
        None => None,
        Some(sz) => Some(
            super::resources::parse_size(sz)
                .filter(|b| *b > 0)
                .ok_or_else(|| SpecError::Size {
                    flag: "--shm-size",
                    value: sz.clone(),
                })?,
        ),
    };
    let mut out: Vec<Mount> = default_mounts(args.privileged, shm_bytes, input.ipc_host)
        .into_iter()
        .filter(|m| !taken(m.destination()))
        .collect();

    let files = write_etc_files(input)?;
    // docker: writable, except with --read-only where they are read-only too.
    let mode = if args.read_only { "ro" } else { "rw" };
    for (dest, src) in files {
        if taken(Path::new(dest)) {
            continue;
        }
        let mut m = mount(dest, "bind", "", &["rbind", "rprivate", mode]);
        m.set_source(Some(src));
        out.push(m);
    }
    out.extend(user);
    // Parents before children (docker sorts the same way), so that a -v below another is
    // not hidden by it; stable, so the order given holds between equal depths. The runtime
    // mounts in the spec's order, as the runtime spec says.
    out.sort_by_key(|m| m.destination().components().count());
    Ok((out, new_volumes))
}

/// Writes resolv.conf, hosts and hostname into the run directory; returns (destination,
/// source) pairs.
fn write_etc_files(input: &MountInput) -> Result<Vec<(&'static str, PathBuf)>, SpecError> {
    // Absolute, so the runtime's bind source does not depend on its current directory.
    let dir = std::path::absolute(input.run_dir).map_err(|source| SpecError::Write {
        path: input.run_dir.to_path_buf(),
        source,
    })?;
    let files = [
        (
            "/etc/resolv.conf",
            "resolv.conf",
            with_dns_flags(resolv_conf(input.network, input.host), input.args)?,
        ),
        (
            "/etc/hosts",
            "hosts",
            with_added_hosts(hosts(input.network, input.hostname, input.host), input.args)?,
        ),
        ("/etc/hostname", "hostname", format!("{}\n", input.hostname)),
    ];
    let mut out = Vec::new();
    for (dest, name, content) in files {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(|source| SpecError::Write {
            path: path.clone(),
            source,
        })?;
        out.push((dest, path));
    }
    Ok(out)
}

/// `--dns`, `--dns-search` and `--dns-option`, as docker applies them: each one given
/// replaces the lines of its kind in the file.
fn with_dns_flags(conf: String, args: &RunArgs) -> Result<String, SpecError> {
    for d in &args.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(SpecError::Dns(d.clone()));
        }
    }
    if args.dns.is_empty() && args.dns_search.is_empty() && args.dns_option.is_empty() {
        return Ok(conf);
    }
    let replaced = |l: &str| {
        let key = l.split_whitespace().next().unwrap_or("");
        (key == "nameserver" && !args.dns.is_empty())
            || ((key == "search" || key == "domain") && !args.dns_search.is_empty())
            || (key == "options" && !args.dns_option.is_empty())
    };
    let mut out: String = conf
        .lines()
        .filter(|l| !replaced(l))
        .flat_map(|l| [l, "\n"])
        .collect();
    if !args.dns_search.is_empty() {
        out.push_str(&format!("search {}\n", args.dns_search.join(" ")));
    }
    for d in &args.dns {
        out.push_str(&format!("nameserver {d}\n"));
    }
    if !args.dns_option.is_empty() {
        out.push_str(&format!("options {}\n", args.dns_option.join(" ")));
    }
    Ok(out)
}

/// `--add-host HOST:IP` lines (docker also takes `HOST=IP`), after the generated ones.
fn with_added_hosts(mut hosts: String, args: &RunArgs) -> Result<String, SpecError> {
    for a in &args.add_host {
        let (name, ip) = a
            .split_once('=')
            .or_else(|| a.split_once(':'))
            .ok_or_else(|| SpecError::AddHost(a.clone()))?;
        // An IPv6 address has colons of its own: only the first one separates.
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        if name.is_empty()
            || name.chars().any(|c| c.is_whitespace() || c == '#')
            || ip.parse::<std::net::IpAddr>().is_err()
        {
            return Err(SpecError::AddHost(a.clone()));
        }
        if !hosts.is_empty() && !hosts.ends_with('\n') {
            hosts.push('\n');
        }
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    Ok(hosts)
}

fn nameservers(conf: &str) -> impl Iterator<Item = &str> {
    conf.lines().filter_map(|l| {
        let mut w = l.split_whitespace();
        match (w.next(), w.next()) {
            (Some("nameserver"), Some(addr)) => Some(addr),
            _ => None,
        }
    })
}

fn is_loopback(addr: &str) -> bool {
    // An IPv6 address may carry a zone (`fe80::1%eth0`); loopback never does.
    match addr.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// The container's resolv.conf.
///
/// With the host's network the host's file is right as it is: a loopback resolver such as
/// systemd-resolved's stub at 127.0.0.53 is reachable from the container because it shares
/// the host's loopback. In a network namespace of its own, loopback is the container's own
/// and no resolver listens there, so the stub is replaced by systemd-resolved's upstream list
/// (`/run/systemd/resolve/resolv.conf`) and any loopback nameserver left is removed. (With
/// `--network none` nothing is reachable anyway; the file still tells the truth about the
/// host's servers, which matters once slate has other network modes.)
fn resolv_conf(network: Network, host: &dyn Host) -> String {
    let main = host.read_file("/etc/resolv.conf").unwrap_or_default();
    if network == Network::Host {
        return main;
    }
    let only_loopback = {
        let mut ns = nameservers(&main).peekable();
        ns.peek().is_some() && nameservers(&main).all(is_loopback)
    };
    let base = if only_loopback {
        host.read_file("/run/systemd/resolve/resolv.conf")
            .unwrap_or(main)
    } else {
        main
    };
    let mut out = String::new();
    for l in base.lines() {
        let mut w = l.split_whitespace();
        if let (Some("nameserver"), Some(addr)) = (w.next(), w.next()) {
            if is_loopback(addr) {
                continue;
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The container's /etc/hosts: the host's with the host's network (docker copies it), with
/// the container's name added when `--hostname` gave it one the host's file does not know;
/// docker's standard entries plus the name on 127.0.1.1 otherwise, so the container can
/// resolve its own name (Debian's convention; docker uses the container's bridge address,
/// which `--network none` does not have).
fn hosts(network: Network, hostname: &str, host: &dyn Host) -> String {
    if network == Network::Host {
        if let Some(mut h) = host.read_file("/etc/hosts") {
            let known = h.lines().any(|l| {
                let l = l.split('#').next().unwrap_or("");
                l.split_whitespace().skip(1).any(|n| n == hostname)
            });
            if !known {
                if !h.is_empty() && !h.ends_with('\n') {
                    h.push('\n');
                }
                h.push_str(&format!("127.0.1.1\t{hostname}\n"));
            }
            return h;
        }
    }
    format!(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n\
         127.0.1.1\t{hostname}\n"
    )
}
