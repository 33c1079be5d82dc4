//! systemd's readiness protocol (`sd_notify(3)`) for `slate run` under a `Type=notify` unit.
//!
//! systemd passes the socket in `NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace) and takes datagrams of `KEY=VALUE` lines from it. `--sdnotify` picks who says
//! `READY=1`, with podman's names and meanings:
//! - `conmon` (the default): slate, once the container's process has exec'd the app, together
//!   with `MAINPID` of the process that supervises the container (the foreground `slate run`
//!   itself, or the detached supervisor of `run -d`), so systemd follows the right process.
//! - `container`: the app, which knows when it is ready to serve. The socket is bound into the
//!   container at [`CONTAINER_SOCKET`] and `NOTIFY_SOCKET` set to it; slate sends only
//!   `MAINPID`. The unit needs `NotifyAccess=all`, as the app is not its main process
//!   (`slate systemd unit` writes that). `WATCHDOG=1` from the app reaches systemd the same
//!   way, and `WATCHDOG_USEC` is passed in.
//! - `ignore`: nothing is sent, and the container never sees the socket.
//!
//! While the image is pulled slate sends `STATUS=` lines ("pulling 2/5 layers"), which
//! `systemctl status` shows. Errors sending are logged and otherwise ignored: a broken
//! notification socket must not stop the service, and systemd's start timeout reports a
//! readiness that never came.

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use slate_image::pull::Progress;
use slate_image::store::{ImageRecord, LayerRecord};

/// Where the socket appears inside the container with `--sdnotify=container` (podman's path).
pub const CONTAINER_SOCKET: &str = "/run/notify/notify.sock";

/// `--sdnotify`: who tells systemd that the service is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// slate, once the container's process runs the app
    #[default]
    Conmon,
    /// the app itself, through the socket passed into the container
    Container,
    /// nobody: the socket is not used
    Ignore,
}

/// The notification socket systemd gave this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Path(PathBuf),
    /// `@name`: the abstract namespace, reachable only from this network namespace.
    Abstract(Vec<u8>),
}

impl Target {
    fn parse(value: &std::ffi::OsStr) -> Option<Target> {
        let b = value.as_encoded_bytes();
        match b.first()? {
            b'@' if b.len() > 1 => Some(Target::Abstract(b[1..].to_vec())),
            b'/' => Some(Target::Path(PathBuf::from(value))),
            _ => None,
        }
    }
}

/// A connection to systemd's notification socket.
pub struct Notifier {
    pub target: Target,
    pub mode: Mode,
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// Takes `NOTIFY_SOCKET` (and the watchdog variables meant for this process) out of the
    /// environment, so nothing slate starts inherits them by accident, and connects unless
    /// the mode is `ignore`. `None` when not started by a `Type=notify` unit.
    pub fn from_env(mode: Mode) -> Option<Notifier> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        std::env::remove_var("NOTIFY_SOCKET");
        if mode == Mode::Ignore {
            return None;
        }
        let Some(target) = Target::parse(&value) else {
            tracing::warn!(value = ?value, "ignoring NOTIFY_SOCKET: neither a path nor @name");
            return None;
        };
        let addr = match &target {
            Target::Path(p) => SocketAddr::from_pathname(p),
            Target::Abstract(name) => SocketAddr::from_abstract_name(name),
        };
        let sock = UnixDatagram::unbound();
        match (addr, sock) {
            (Ok(addr), Ok(sock)) => Some(Notifier {
                target,
                mode,
                sock,
                addr,
            }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot use NOTIFY_SOCKET; systemd will not hear from slate");
                None
            }
        }
    }

    /// Sends one datagram of `KEY=VALUE` lines.
    pub fn send(&self, msg: &str) {
        if let Err(e) = self.sock.send_to_addr(msg.as_bytes(), &self.addr) {
            tracing::warn!(error = %e, message = msg, "cannot notify systemd");
        }
    }

    pub fn status(&self, text: &str) {
        // One line: a newline would start a new assignment.
        self.send(&format!("STATUS={}", text.replace('\n', " ")));
    }

    /// The container runs: `pid` supervises it. In `conmon` mode that is the readiness too.
    pub fn started(&self, pid: u32, image: &str) {
        let mut msg = format!("MAINPID={pid}\nSTATUS=running {image}");
        if self.mode == Mode::Conmon {
            msg.push_str("\nREADY=1");
        }
        self.send(&msg);
    }
}

/// `--sdnotify=container`: the app gets the socket. A path socket is bound into the container
/// at [`CONTAINER_SOCKET`] (a bind of the socket file itself: connecting to it reaches
/// systemd from any mount namespace); an abstract one (`@name`) belongs to a network
/// namespace, so it is passed only to a container that shares the host's.
pub fn pass_into(spec: &mut oci_spec::runtime::Spec, n: &Notifier) -> anyhow::Result<()> {
    let shares_host_net = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_none_or(|ns| {
            !ns.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        });
    let value = match &n.target {
        Target::Path(p) => {
            let mut m = oci_spec::runtime::Mount::default();
            m.set_destination(PathBuf::from(CONTAINER_SOCKET));
            m.set_typ(Some("bind".into()));
            m.set_source(Some(p.clone()));
            m.set_options(Some(vec!["bind".into(), "nosuid".into(), "nodev".into()]));
            let mut mounts = spec.mounts().clone().unwrap_or_default();
            mounts.push(m);
            spec.set_mounts(Some(mounts));
            CONTAINER_SOCKET.to_string()
        }
        Target::Abstract(name) if shares_host_net => {
            format!("@{}", String::from_utf8_lossy(name))
        }
        Target::Abstract(_) => anyhow::bail!(
            "--sdnotify=container: systemd's notification socket is abstract (NOTIFY_SOCKET=@...), which a container with its own network cannot reach; use --sdnotify=conmon or the host network"
        ),
    };
    let mut env = vec![format!("NOTIFY_SOCKET={value}")];
    // The app pings the watchdog itself; WATCHDOG_PID would name slate, not the app.
    if let Some(usec) = std::env::var_os("WATCHDOG_USEC") {
        env.push(format!("WATCHDOG_USEC={}", usec.to_string_lossy()));
    }
    if let Some(process) = spec.process_mut().as_mut() {
        let mut all = process.env().clone().unwrap_or_default();
        all.retain(|e| !e.starts_with("NOTIFY_SOCKET=") && !e.starts_with("WATCHDOG_USEC="));
        all.extend(env);
        process.set_env(Some(all));
    }
    Ok(())
}

/// Pull progress that also reports to systemd: wraps the display's own.
pub struct StatusProgress<'a> {
    pub inner: &'a dyn Progress,
    pub notifier: &'a Notifier,
    total: AtomicUsize,
    done: AtomicUsize,
}

impl<'a> StatusProgress<'a> {
    pub fn new(inner: &'a dyn Progress, notifier: &'a Notifier) -> StatusProgress<'a> {
        StatusProgress {
            inner,
            notifier,
            total: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        }
    }
}

impl Progress for StatusProgress<'_> {
    fn resolved(&self, record: &ImageRecord, missing: &[LayerRecord]) {
        self.total.store(missing.len(), Ordering::Relaxed);
        self.notifier.status(&format!(
            "pulling {}: 0/{} layers",
            record.display_name(),
            missing.len()
        ));
        self.inner.resolved(record, missing);
    }

    fn layer_started(&self, layer: &LayerRecord) {
        self.inner.layer_started(layer);
    }

    fn layer_bytes(&self, layer: &LayerRecord, n: u64) {
        self.inner.layer_bytes(layer, n);
    }

    fn layer_done(&self, layer: &LayerRecord) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.total.load(Ordering::Relaxed);
        self.notifier
            .status(&format!("pulling {done}/{total} layers"));
        self.inner.layer_done(layer);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse(OsStr::new("/run/systemd/notify")),
            Some(Target::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            Target::parse(OsStr::new("@/org/x")),
            Some(Target::Abstract(b"/org/x".to_vec()))
        );
        assert_eq!(Target::parse(OsStr::new("@")), None);
        assert_eq!(Target::parse(OsStr::new("relative")), None);
        assert_eq!(Target::parse(OsStr::new("")), None);
    }

    #[test]
    fn messages_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Target::Path(path.clone()),
            mode: Mode::Conmon,
            sock: UnixDatagram::unbound().unwrap(),
            addr: SocketAddr::from_pathname(&path).unwrap(),
        };
        n.started(42, "img");
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "MAINPID=42\nSTATUS=running img\nREADY=1"
        );
        let c = Notifier {
            mode: Mode::Container,
            ..n
        };
        c.status("a\nb");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=a b");
        c.started(7, "img");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"MAINPID=7\nSTATUS=running img");
    }
}
