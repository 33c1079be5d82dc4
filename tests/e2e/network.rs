//! Networks (issue 15): `--network bridge` with `-p`, user networks where containers reach
//! each other by name, outbound NAT, macvlan, the clean-up after a crash, and the flags'
//! errors.
//!
//! Nothing here touches the host's network or firewall: every slate command of a test runs
//! in a network namespace the test creates (`unshare --net`, entered with `nsenter --net`),
//! so the bridge, the veths, the iptables rules and the traffic all live and die there.
//! Images are pulled in the host's namespace first (the registry is on the host's
//! loopback) and run with `--pull never`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::detached::Detached;
use crate::harness::fixture::{busybox, Compression, ImageSpec, LayerSpec};
use crate::harness::registry::Registry;
use crate::harness::tar_writer::Entry;

const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "true", "sleep", "httpd", "wget", "ip", "hostname", "grep", "ping",
];

/// busybox with httpd serving /www, exposing 80/tcp.
fn image() -> &'static str {
    static REF: OnceLock<String> = OnceLock::new();
    REF.get_or_init(|| {
        let mut e = Vec::new();
        for d in ["bin", "dev", "etc", "proc", "sys", "tmp", "www"] {
            e.push(Entry::dir(d));
        }
        e.push(Entry::file("bin/busybox", busybox()).mode(0o755));
        for a in APPLETS {
            e.push(Entry::symlink(format!("bin/{a}"), "busybox"));
        }
        e.push(Entry::file("www/index.html", "hello from the container\n"));
        e.push(Entry::file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"));
        e.push(Entry::file("etc/group", "root:x:0:\n"));
        let platform = crate::harness::run_image::host_platform();
        let mut spec =
            ImageSpec::new(vec![LayerSpec::new(Compression::Gzip, e)]).platform(platform);
        spec.runtime_config = json!({
            "Env": ["PATH=/bin"],
            "Cmd": ["httpd", "-f", "-p", "80", "-h", "/www"],
            "ExposedPorts": {"80/tcp": {}},
        });
        Registry::shared().push_image("network/httpd", "v1", &spec.build())
    })
}

/// A network namespace of the test's own, kept alive by a `sleep` it started.
struct Lab {
    holder: Child,
}

impl Lab {
    fn new() -> Lab {
        let holder = Command::new("unshare")
            .args(["--net", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare --net");
        let lab = Lab { holder };
        let mine = std::fs::read_link("/proc/self/ns/net").expect("own netns");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(lab.ns()).ok().as_ref() == Some(&mine) || !lab.ns().exists() {
            assert!(Instant::now() < deadline, "unshare did not make a netns");
            std::thread::sleep(Duration::from_millis(5));
        }
        lab.sh("ip link set lo up");
        lab
    }

    fn ns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder.id()))
    }

    /// Runs `sh -c script` in the lab; returns stdout (panics on failure).
    fn sh(&self, script: &str) -> String {
        let out = self.sh_status(script);
        assert!(out.0, "in the lab: {script}: {}", out.1);
        out.1
    }

    fn sh_status(&self, script: &str) -> (bool, String) {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.ns().display()))
            .args(["--", "sh", "-c", script])
            .output()
            .expect("nsenter");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// A Detached whose every slate command runs in the lab, with the image pulled.
    fn detached(&self, label: &str) -> Detached {
        let mut d = Detached::with_image(label, image());
        d.slate.pull(image(), None);
        d.netns = Some(self.ns());
        d
    }

    /// GETs `url` from the lab, retrying while the server starts.
    fn get(&self, url: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (ok, out) = self.sh_status(&format!("curl -sS -m 3 {url}"));
            if ok {
                return out;
            }
            assert!(Instant::now() < deadline, "GET {url}: {out}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn run_flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--pull", "never"];
    v.extend_from_slice(extra);
    v
}

#[test]
fn bridge_publishes_a_port_on_loopback_and_refuses_a_taken_one() {
    let lab = Lab::new();
    let d = lab.detached("net-bridge");
    let id = d.run_d(
        &run_flags(&[
            "--name",
            "web",
            "--network",
            "bridge",
            "-p",
            "127.0.0.1:18080:80",
        ]),
        &[],
    );
    assert_eq!(
        lab.get("http://127.0.0.1:18080/"),
        "hello from the container\n"
    );

    let port = d.slate(&["port", "web"]).success();
    assert_eq!(port.stdout.trim(), "80/tcp -> 127.0.0.1:18080");
    let one = d.slate(&["port", "web", "80"]).success();
    assert_eq!(one.stdout.trim(), "127.0.0.1:18080");
    let ps = d.slate(&["ps"]).success();
    assert!(
        ps.stdout.contains("127.0.0.1:18080->80/tcp"),
        "{}",
        ps.stdout
    );

    let v = d.inspect("web");
    let ip = v["network_settings"]["ip"]
        .as_str()
        .expect("an address")
        .to_string();
    assert!(ip.starts_with("10.44."), "{ip}");
    // The container's own view: eth0 with that address, a default route.
    let inside = d
        .slate(&["exec", "web", "ip", "-4", "addr", "show", "eth0"])
        .success();
    assert!(inside.stdout.contains(&ip), "{}", inside.stdout);

    // The same host port again: a clear error at run, exit 125, nothing left behind.
    let out = d
        .slate(&[
            "run",
            "--rm",
            "--pull",
            "never",
            "-p",
            "127.0.0.1:18080:80",
            image(),
            "true",
        ])
        .failure(125);
    out.error_mentions(&["127.0.0.1:18080", "already in use"]);
    // A program of the host (the lab) holding a port is refused the same way.
    let (ok, msg) = lab
        .sh_status("python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 18080))'");
    assert!(!ok && msg.contains("Address already in use"), "{msg}");

    d.slate(&["rm", "-f", "web"]).success();
    assert_eq!(veths(&lab), Vec::<String>::new());
    assert_no_rules_for(&lab, &id);
    assert_eq!(leases(&d), Vec::<String>::new());
}

#[test]
fn publish_implies_bridge_and_publish_all_picks_free_ports() {
    let lab = Lab::new();
    let d = lab.detached("net-pall");
    // No --network: -p means the default bridge (the port would mean nothing on the host's).
    d.run_d(
        &run_flags(&["--name", "a", "-P", "--expose", "8081/udp"]),
        &[],
    );
    let port = d.slate(&["port", "a", "80/tcp"]).success();
    let addr = port.stdout.trim().to_string();
    assert!(addr.starts_with("0.0.0.0:"), "{addr}");
    let host_port = addr.trim_start_matches("0.0.0.0:");
    assert_eq!(
        lab.get(&format!("http://127.0.0.1:{host_port}/")),
        "hello from the container\n"
    );
    let v = d.inspect("a");
    assert_eq!(v["network"]["network"], "bridge");
    // --expose adds to the image's ports for -P.
    let udp = d.slate(&["port", "a", "8081/udp"]).success();
    assert!(udp.stdout.trim().starts_with("0.0.0.0:"), "{}", udp.stdout);
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name() {
    let lab = Lab::new();
    let d = lab.detached("net-user");
    let out = d.slate(&["network", "create", "appnet"]).success();
    assert_eq!(out.stdout.trim(), "appnet");
    let ls = d.slate(&["network", "ls"]).success();
    assert!(
        ls.stdout.contains("appnet") && ls.stdout.contains("10.45.0.0/24"),
        "{}",
        ls.stdout
    );
    d.slate(&["network", "create", "appnet"])
        .failure(1)
        .error_mentions(&["already exists"]);

    d.run_d(&run_flags(&["--name", "db", "--network", "appnet"]), &[]);
    // A later container finds the earlier one...
    let out = d
        .slate(&[
            "run",
            "--rm",
            "--pull",
            "never",
            "--network",
            "appnet",
            "--name",
            "client",
            image(),
            "wget",
            "-qO-",
            "http://db/",
        ])
        .success();
    assert_eq!(out.stdout, "hello from the container\n");
    // ...and an earlier one the later ones, while they live.
    d.run_d(&run_flags(&["--name", "cache", "--network", "appnet"]), &[]);
    let hosts = d.slate(&["exec", "db", "cat", "/etc/hosts"]).success();
    assert!(hosts.stdout.contains("\tcache "), "{}", hosts.stdout);
    let out = d
        .slate(&["exec", "db", "wget", "-qO-", "http://cache/"])
        .success();
    assert_eq!(out.stdout, "hello from the container\n");

    let inspect = d.slate(&["network", "inspect", "appnet"]).success().json();
    let names: Vec<&str> = inspect[0]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{inspect}");

    d.slate(&["network", "rm", "appnet"])
        .failure(1)
        .error_mentions(&["in use"]);
    d.slate(&["rm", "-f", "cache"]).success();
    let hosts = d.slate(&["exec", "db", "cat", "/etc/hosts"]).success();
    assert!(!hosts.stdout.contains("cache"), "{}", hosts.stdout);
    d.slate(&["rm", "-f", "db"]).success();
    d.slate(&["network", "rm", "appnet"]).success();
    assert!(!d
        .slate(&["network", "ls", "-q"])
        .success()
        .stdout
        .contains("appnet"));
}

#[test]
fn a_killed_supervisor_leaves_no_veth_lease_or_rule_after_the_next_command() {
    let lab = Lab::new();
    let d = lab.detached("net-crash");
    let id = d.run_d(&run_flags(&["--name", "web", "-p", "18081:80"]), &[]);
    lab.get("http://127.0.0.1:18081/");
    assert_eq!(veths(&lab).len(), 1);
    assert_eq!(leases(&d).len(), 1);
    let v = d.inspect("web");
    let sup = v["supervisor_pid"].as_i64().expect("supervisor pid") as i32;
    // SAFETY: kill(2) on the supervisor this test started.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{sup}")).exists() {
        assert!(Instant::now() < deadline, "supervisor {sup} did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Any command sweeps.
    d.slate(&["ps", "-a"]).success();
    assert_eq!(veths(&lab), Vec::<String>::new());
    assert_eq!(leases(&d), Vec::<String>::new());
    assert_no_rules_for(&lab, &id);
    assert!(!d.state.join(&id).join("netns").exists());
    // The port is free again.
    d.run_d(&run_flags(&["--name", "web2", "-p", "18081:80"]), &[]);
    lab.get("http://127.0.0.1:18081/");
}

#[test]
fn outbound_traffic_is_masqueraded() {
    let lab = Lab::new();
    // A second namespace plays the outside world, behind a veth from the lab.
    let wan = Lab::new();
    lab.sh(&format!(
        "ip link add wan0 type veth peer name wan1 netns {} && ip addr add 192.0.2.1/24 dev wan0 && ip link set wan0 up",
        wan.holder.id()
    ));
    wan.sh("ip addr add 192.0.2.2/24 dev wan1 && ip link set wan1 up");
    let log = tempfile_path("wan-http.log");
    let mut server = Command::new("nsenter")
        .arg(format!("--net={}", wan.ns().display()))
        .args([
            "--",
            "python3",
            "-m",
            "http.server",
            "8000",
            "--bind",
            "192.0.2.2",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("python3 http.server");
    let d = lab.detached("net-nat");
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = d.slate(&[
            "run",
            "--rm",
            "--pull",
            "never",
            "--network",
            "bridge",
            image(),
            "wget",
            "-qO-",
            "http://192.0.2.2:8000/",
        ]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = server.kill();
    let _ = server.wait();
    let out = out.success();
    assert!(out.stdout.contains("Directory listing"), "{}", out.stdout);
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    // The outside saw the lab's address, not the container's 10.44.x.y.
    assert!(seen.contains("192.0.2.1 - -"), "{seen}");
    assert!(!seen.contains("10.44."), "{seen}");
}

#[test]
fn macvlan_gives_an_address_of_the_lan_range() {
    let lab = Lab::new();
    lab.sh(
        "ip link add lan0 type veth peer name lan1 && ip link set lan0 up && ip link set lan1 up",
    );
    let d = lab.detached("net-macvlan");
    d.slate(&["network", "create", "lan", "--driver", "macvlan"])
        .failure(1)
        .error_mentions(&["--parent"]);
    d.slate(&[
        "network",
        "create",
        "lan",
        "-d",
        "macvlan",
        "-o",
        "parent=lan0",
        "--subnet",
        "192.168.77.0/24",
        "--ip-range",
        "192.168.77.128/25",
    ])
    .success();
    let out = d
        .slate(&[
            "run",
            "--rm",
            "--pull",
            "never",
            "--network",
            "lan",
            image(),
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "eth0",
        ])
        .success();
    let addr = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("192.168.77."))
        .unwrap_or_else(|| panic!("no LAN address: {}", out.stdout));
    let last: u8 = addr
        .trim_start_matches("192.168.77.")
        .split('/')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("an address");
    assert!(last >= 129, "{addr} is not in the --ip-range");
    d.slate(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        "lan",
        "-p",
        "80",
        image(),
        "true",
    ])
    .failure(125)
    .error_mentions(&["macvlan"]);
}

#[test]
fn network_flags_are_checked_and_applied() {
    let lab = Lab::new();
    let d = lab.detached("net-flags");
    let run = |extra: &[&str]| {
        let mut a = vec!["run", "--rm", "--pull", "never"];
        a.extend_from_slice(extra);
        d.slate(&a)
    };
    run(&["-p", "99999:80", image(), "true"])
        .failure(125)
        .error_mentions(&["invalid -p", "not a port"]);
    run(&["--network", "nosuch", image(), "true"])
        .failure(125)
        .error_mentions(&["network nosuch does not exist", "slate network create"]);
    run(&["--network", "none", "-p", "80", image(), "true"])
        .failure(125)
        .error_mentions(&["--network none"]);
    run(&["--ip", "10.44.0.9", "--network", "bridge", image(), "true"])
        .failure(125)
        .error_mentions(&["user networks"]);
    let out = run(&["--network", "host", "-p", "80:80", image(), "true"]).success();
    assert!(out.stderr.contains("discarded"), "{}", out.stderr);

    d.slate(&["network", "create", "fixed", "--subnet", "10.46.9.0/24"])
        .success();
    let out = run(&[
        "--network",
        "fixed",
        "--ip",
        "10.46.9.77",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        "lab.example",
        "--add-host",
        "printer:192.168.1.9",
        "--hostname",
        "box",
        image(),
        "sh",
        "-c",
        "ip -4 -o addr show eth0; cat /etc/resolv.conf /etc/hosts; hostname",
    ])
    .success();
    assert!(out.stdout.contains("10.46.9.77/24"), "{}", out.stdout);
    assert!(
        out.stdout.contains("nameserver 192.0.2.53"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("search lab.example"), "{}", out.stdout);
    assert!(
        out.stdout.contains("192.168.1.9\tprinter"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.trim_end().ends_with("box"), "{}", out.stdout);
    run(&["--network", "fixed", "--ip", "10.47.0.1", image(), "true"])
        .failure(125)
        .error_mentions(&["not in network fixed"]);
    // The reserved host ports never reach the container: the same descriptors as without -p.
    let fds = |extra: &[&str]| {
        let mut a = extra.to_vec();
        a.extend_from_slice(&[image(), "sh", "-c", "echo /proc/self/fd/*"]);
        run(&a).success().stdout
    };
    assert_eq!(
        fds(&["-p", "18090:80", "-p", "18091:81/udp"]),
        fds(&["--network", "bridge"])
    );
    // A foreground run's network goes with it.
    assert_eq!(veths(&lab), Vec::<String>::new());
    assert_eq!(leases(&d), Vec::<String>::new());
}

/// The lab's veth interfaces (the host ends of containers' links).
fn veths(lab: &Lab) -> Vec<String> {
    lab.sh("ip -o link show type veth")
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_owned))
        .collect()
}

/// The addresses leased in the state dir's host-local store.
fn leases(d: &Detached) -> Vec<String> {
    let dir = d.state.join("networks").join("leases");
    let mut out = Vec::new();
    for net in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(net.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = f.file_name().to_string_lossy().into_owned();
            if n.parse::<std::net::IpAddr>().is_ok() {
                out.push(n);
            }
        }
    }
    out
}

/// No iptables rule of the lab still names the container (the CNI plugins comment their
/// rules with its id) or its address.
fn assert_no_rules_for(lab: &Lab, id: &str) {
    let rules = lab.sh("iptables-save");
    assert!(!rules.contains(id), "rules left for {id}:\n{rules}");
    assert!(
        !rules
            .lines()
            .any(|l| l.contains("10.44.") && l.contains("/32")),
        "per-container rules left:\n{rules}"
    );
}

fn tempfile_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("slate-e2e-{}-{name}", std::process::id()))
}
