//! Whole-spec tests: real flag parsing (clap) -> `build_on` with a stand-in host.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use nix::sys::signal::Signal;
use oci_spec::runtime::{Capability, LinuxNamespaceType, Mount, PosixRlimitType, Spec};
use serde_json::{json, Value};

use super::devices::HostDevice;
use super::*;

#[derive(Parser)]
#[command(disable_help_flag = true)]
struct Wrap {
    #[command(flatten)]
    run: RunArgs,
}

fn args(argv: &[&str]) -> RunArgs {
    let mut full = vec!["slate"];
    full.extend_from_slice(argv);
    Wrap::try_parse_from(full).unwrap().run
}

struct FakeHost {
    files: HashMap<&'static str, String>,
    hostname: Option<String>,
    cpus: usize,
    swap: bool,
    last_cap: u32,
    bounding: u64,
    nofile_hard: u64,
    can_raise: bool,
    cwd: PathBuf,
    /// `None`: the path exists but is no device; absent: no such file.
    devices: HashMap<&'static str, Option<HostDevice>>,
}

fn host_dev(block: bool, major: u64, minor: u64, mode: u32, gid: u32) -> Option<HostDevice> {
    Some(HostDevice {
        block,
        major,
        minor,
        mode,
        uid: 0,
        gid,
    })
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost {
            files: HashMap::from([
                (
                    "/etc/resolv.conf",
                    "nameserver 192.0.2.1\nsearch lan\n".to_string(),
                ),
                (
                    "/etc/hosts",
                    "127.0.0.1 localhost\n192.0.2.9 pi\n".to_string(),
                ),
                ("/proc/sys/kernel/osrelease", "6.1.0-rpi7\n".to_string()),
            ]),
            hostname: Some("pi".into()),
            cpus: 4,
            swap: true,
            last_cap: 40,
            bounding: u64::MAX,
            nofile_hard: 4096,
            can_raise: false,
            cwd: PathBuf::from("/home/me"),
            devices: HashMap::from([
                ("/dev/null", host_dev(false, 1, 3, 0o666, 0)),
                ("/dev/ttyUSB0", host_dev(false, 188, 0, 0o660, 20)),
                ("/dev/sda", host_dev(true, 8, 0, 0o660, 6)),
                ("/etc/passwd", None),
            ]),
        }
    }
}

impl Host for FakeHost {
    fn read_file(&self, path: &str) -> Option<String> {
        self.files.get(path).cloned()
    }
    fn hostname(&self) -> Option<String> {
        self.hostname.clone()
    }
    fn cpus(&self) -> usize {
        self.cpus
    }
    fn swap_accounting(&self) -> bool {
        self.swap
    }
    fn cap_last_cap(&self) -> u32 {
        self.last_cap
    }
    fn cap_bounding(&self) -> u64 {
        self.bounding
    }
    fn rlimit_hard(&self, typ: PosixRlimitType) -> Option<u64> {
        match typ {
            PosixRlimitType::RlimitNofile => Some(self.nofile_hard),
            _ => Some(u64::MAX),
        }
    }
    fn can_raise_rlimits(&self) -> bool {
        self.can_raise
    }
    fn cwd(&self) -> Option<PathBuf> {
        Some(self.cwd.clone())
    }
    fn device(&self, path: &Path) -> std::io::Result<Option<HostDevice>> {
        path.to_str()
            .and_then(|p| self.devices.get(p))
            .copied()
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))
    }
}

const ID: &str = "0123456789abcdef0123456789abcdef";

fn image() -> Value {
    json!({
        "architecture": "arm64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/docker-entrypoint.sh"],
            "Cmd": ["nginx", "-g", "daemon off;"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NGINX_VERSION=1.25"],
            "WorkingDir": "/srv",
            "StopSignal": "SIGQUIT",
            "Labels": {"maintainer": "nginx", "shared": "image"}
        }
    })
}

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\n";
const GROUP: &str = "root:x:0:root\nnginx:x:101:\nwww:x:33:nginx\n";

fn image_files(path: &str) -> Option<Vec<u8>> {
    match path {
        "/etc/passwd" => Some(PASSWD.as_bytes().to_vec()),
        "/etc/group" => Some(GROUP.as_bytes().to_vec()),
        _ => None,
    }
}

fn host_env(name: &str) -> Option<String> {
    (name == "TOKEN").then(|| "s3cret".to_string())
}

struct Run {
    dir: tempfile::TempDir,
    host: FakeHost,
    image: Value,
}

impl Run {
    fn new() -> Run {
        Run {
            dir: tempfile::tempdir().unwrap(),
            host: FakeHost::default(),
            image: image(),
        }
    }

    fn try_build(&self, argv: &[&str]) -> Result<SpecOutput, SpecError> {
        self.try_build_args(&args(argv))
    }

    fn try_build_args(&self, a: &RunArgs) -> Result<SpecOutput, SpecError> {
        let input = SpecInput {
            args: a,
            image_config: &self.image,
            read_image_file: &image_files,
            id: ID,
            run_dir: self.dir.path(),
            host_env: &host_env,
            no_new_privileges: false,
            volumes_dir: Some(&self.dir.path().join("volumes")),
        };
        build_on(&input, &self.host)
    }

    fn build(&self, argv: &[&str]) -> SpecOutput {
        self.try_build(argv).unwrap()
    }

    fn err(&self, argv: &[&str]) -> String {
        self.try_build(argv).unwrap_err().to_string()
    }
}

fn process(s: &Spec) -> &oci_spec::runtime::Process {
    s.process().as_ref().unwrap()
}

fn linux(s: &Spec) -> &oci_spec::runtime::Linux {
    s.linux().as_ref().unwrap()
}

fn argv(s: &Spec) -> Vec<String> {
    process(s).args().clone().unwrap()
}

fn env(s: &Spec) -> Vec<String> {
    process(s).env().clone().unwrap()
}

fn mount_at<'a>(s: &'a Spec, dest: &str) -> Option<&'a Mount> {
    s.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(dest))
}

fn opts(m: &Mount) -> Vec<String> {
    m.options().clone().unwrap_or_default()
}

fn namespaces(s: &Spec) -> Vec<LinuxNamespaceType> {
    linux(s)
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect()
}

// ---- process args

#[test]
fn image_entrypoint_and_cmd() {
    let r = Run::new();
    let s = r.build(&["nginx"]).spec;
    assert_eq!(
        argv(&s),
        ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
    );
}

#[test]
fn command_replaces_cmd_only() {
    let r = Run::new();
    let s = r.build(&["nginx", "nginx", "-t"]).spec;
    assert_eq!(argv(&s), ["/docker-entrypoint.sh", "nginx", "-t"]);
}

#[test]
fn entrypoint_flag_replaces_entrypoint_and_drops_image_cmd() {
    let r = Run::new();
    let s = r.build(&["--entrypoint", "/bin/sh", "nginx"]).spec;
    assert_eq!(argv(&s), ["/bin/sh"]);
    // A dash right after IMAGE belongs to the command, not to slate.
    let a = args(&["--entrypoint", "/bin/sh", "nginx", "-c", "echo hi"]);
    let s = r.try_build_args(&a).unwrap().spec;
    assert_eq!(argv(&s), ["/bin/sh", "-c", "echo hi"]);
}

#[test]
fn empty_entrypoint_clears_it() {
    let r = Run::new();
    let s = r.build(&["--entrypoint", "", "nginx", "/bin/true"]).spec;
    assert_eq!(argv(&s), ["/bin/true"]);
    assert_eq!(
        r.err(&["--entrypoint", "", "nginx"]),
        SpecError::NoCommand.to_string()
    );
}

#[test]
fn no_command_at_all() {
    let mut r = Run::new();
    r.image = json!({"config": {"Entrypoint": null, "Cmd": []}});
    assert!(r.err(&["img"]).starts_with("no command specified"));
    r.image = json!({});
    assert!(r.err(&["img"]).starts_with("no command specified"));
    assert_eq!(argv(&r.build(&["img", "/bin/true"]).spec), ["/bin/true"]);
}

#[test]
fn bad_image_config_fields() {
    let mut r = Run::new();
    r.image = json!({"config": {"Cmd": "not an array"}});
    assert_eq!(
        r.err(&["img"]),
        "invalid image config: Cmd must be an array of strings"
    );
    r.image = json!({"config": {"Cmd": ["ok", 3]}});
    assert!(r.err(&["img"]).contains("Cmd"));
    r.image = json!({"config": {"Cmd": ["x"], "User": 5}});
    assert!(r.err(&["img"]).contains("User must be a string"));
}

// ---- env

#[test]
fn env_defaults_image_and_flags() {
    let r = Run::new();
    let s = r
        .build(&[
            "-e",
            "NGINX_VERSION=override",
            "-e",
            "TOKEN",
            "-e",
            "A=b=c",
            "-t",
            "nginx",
        ])
        .spec;
    let e = env(&s);
    assert_eq!(e[0], format!("PATH={}", env::DEFAULT_PATH));
    assert!(e.contains(&"HOSTNAME=pi".to_string()));
    assert!(e.contains(&"TERM=xterm".to_string()));
    assert!(e.contains(&"NGINX_VERSION=override".to_string()));
    assert!(e.contains(&"TOKEN=s3cret".to_string()));
    assert!(e.contains(&"A=b=c".to_string()));
    assert!(e.contains(&"HOME=/root".to_string()));
    let s = r.build(&["nginx"]).spec;
    assert!(!env(&s).iter().any(|v| v.starts_with("TERM=")));
}

#[test]
fn env_file_between_image_and_flags() {
    let r = Run::new();
    let f = r.dir.path().join("x.env");
    std::fs::write(&f, "NGINX_VERSION=file\nB=file\n# c\nTOKEN\n").unwrap();
    let fs = f.to_str().unwrap();
    let s = r.build(&["--env-file", fs, "-e", "B=flag", "nginx"]).spec;
    let e = env(&s);
    assert!(e.contains(&"NGINX_VERSION=file".to_string()));
    assert!(e.contains(&"B=flag".to_string()));
    assert!(e.contains(&"TOKEN=s3cret".to_string()));
}

#[test]
fn home_follows_user() {
    let r = Run::new();
    let s = r.build(&["-u", "nginx", "nginx"]).spec;
    assert!(env(&s).contains(&"HOME=/var/cache/nginx".to_string()));
}

// ---- working dir

#[test]
fn workdir_rules() {
    let r = Run::new();
    assert_eq!(process(&r.build(&["nginx"]).spec).cwd(), Path::new("/srv"));
    assert_eq!(
        process(&r.build(&["-w", "/tmp", "nginx"]).spec).cwd(),
        Path::new("/tmp")
    );
    assert!(r.err(&["-w", "tmp", "nginx"]).contains("--workdir"));
    let mut r = Run::new();
    r.image = json!({"config": {"Cmd": ["x"]}});
    assert_eq!(process(&r.build(&["img"]).spec).cwd(), Path::new("/"));
    r.image = json!({"config": {"Cmd": ["x"], "WorkingDir": "rel"}});
    assert!(r.err(&["img"]).contains("WorkingDir"));
}

// ---- user

#[test]
fn user_from_image_and_flag() {
    let mut r = Run::new();
    let u = process(&r.build(&["nginx"]).spec).user().clone();
    assert_eq!((u.uid(), u.gid()), (0, 0));
    let u = process(&r.build(&["-u", "nginx", "nginx"]).spec)
        .user()
        .clone();
    assert_eq!((u.uid(), u.gid()), (101, 101));
    // The primary group first (CVE-2023-25173), then the groups naming the user.
    assert_eq!(u.additional_gids().clone(), Some(vec![101, 33]));
    let u = process(&r.build(&["-u", "1234:www", "nginx"]).spec)
        .user()
        .clone();
    assert_eq!((u.uid(), u.gid()), (1234, 33));
    assert_eq!(
        r.err(&["-u", "ghost", "nginx"]),
        "unable to find user ghost: no matching entries in passwd file"
    );
    r.image["config"]["User"] = json!("nginx");
    let u = process(&r.build(&["nginx"]).spec).user().clone();
    assert_eq!(u.uid(), 101);
    // the flag beats the image
    let u = process(&r.build(&["-u", "0", "nginx"]).spec).user().clone();
    assert_eq!(u.uid(), 0);
}

// ---- hostname and namespaces

#[test]
fn hostname_rules() {
    let mut r = Run::new();
    // --network host (the default): the host's name, as docker.
    let s = r.build(&["nginx"]).spec;
    assert_eq!(s.hostname().as_deref(), Some("pi"));
    // own network namespace: the short id.
    let s = r.build(&["--network", "none", "nginx"]).spec;
    assert_eq!(s.hostname().as_deref(), Some("0123456789ab"));
    let s = r.build(&["--hostname", "web1", "nginx"]).spec;
    assert_eq!(s.hostname().as_deref(), Some("web1"));
    assert!(env(&s).contains(&"HOSTNAME=web1".to_string()));
    r.host.hostname = None;
    let s = r.build(&["nginx"]).spec;
    assert_eq!(s.hostname().as_deref(), Some("0123456789ab"));
    assert!(r
        .err(&["--hostname", "a b", "nginx"])
        .contains("--hostname"));
    assert!(r
        .err(&["--hostname", &"x".repeat(65), "nginx"])
        .contains("64"));
}

#[test]
fn namespaces_by_network() {
    let r = Run::new();
    let base = [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Cgroup,
    ];
    assert_eq!(namespaces(&r.build(&["nginx"]).spec), base);
    let ns = namespaces(&r.build(&["--network", "none", "nginx"]).spec);
    assert!(ns.contains(&LinuxNamespaceType::Network));
    assert_eq!(ns.len(), 6);
    // A CNI network: its own namespace too (`run` points it at the one it pins), and so
    // does -p without --network.
    for flags in [&["--network", "bridge"][..], &["-p", "8080:80"], &["-P"]] {
        let mut a = flags.to_vec();
        a.push("nginx");
        let ns = namespaces(&r.build(&a).spec);
        assert!(ns.contains(&LinuxNamespaceType::Network), "{flags:?}");
    }
    assert_eq!(
        r.err(&["--network", "a/b", "nginx"]),
        "invalid --network \"a/b\": expected host (the default), none, bridge or a network name"
    );
}

#[test]
fn dns_and_add_host_flags() {
    let r = Run::new();
    r.build(&[
        "--network",
        "none",
        "--dns",
        "192.0.2.53",
        "--dns",
        "2001:db8::53",
        "--dns-search",
        "a.example",
        "--dns-option",
        "ndots:2",
        "--add-host",
        "printer:192.168.1.9",
        "--add-host",
        "v6=2001:db8::9",
        "nginx",
    ]);
    let resolv = std::fs::read_to_string(r.dir.path().join("resolv.conf")).unwrap();
    assert!(!resolv.contains("nameserver 10."), "{resolv}");
    assert!(
        resolv.contains("nameserver 192.0.2.53\nnameserver 2001:db8::53\n"),
        "{resolv}"
    );
    assert!(
        resolv.contains("search a.example\n") && resolv.contains("options ndots:2\n"),
        "{resolv}"
    );
    let hosts = std::fs::read_to_string(r.dir.path().join("hosts")).unwrap();
    assert!(
        hosts.ends_with("192.168.1.9\tprinter\n2001:db8::9\tv6\n"),
        "{hosts}"
    );
    assert!(r.err(&["--dns", "x", "nginx"]).contains("--dns"));
    assert!(r
        .err(&["--add-host", "nocolon", "nginx"])
        .contains("--add-host"));
    assert!(r
        .err(&["--add-host", "h:notip", "nginx"])
        .contains("--add-host"));
}

// ---- mounts

#[test]
fn default_mounts_are_dockers() {
    let r = Run::new();
    let s = r.build(&["nginx"]).spec;
    let proc_ = mount_at(&s, "/proc").unwrap();
    assert_eq!(proc_.typ().as_deref(), Some("proc"));
    assert_eq!(opts(proc_), ["nosuid", "noexec", "nodev"]);
    let dev = mount_at(&s, "/dev").unwrap();
    assert_eq!(
        opts(dev),
        ["nosuid", "strictatime", "mode=755", "size=65536k"]
    );
    assert!(opts(mount_at(&s, "/dev/pts").unwrap()).contains(&"newinstance".to_string()));
    assert!(opts(mount_at(&s, "/dev/shm").unwrap()).contains(&"mode=1777".to_string()));
    assert_eq!(
        mount_at(&s, "/dev/mqueue").unwrap().typ().as_deref(),
        Some("mqueue")
    );
    assert!(opts(mount_at(&s, "/sys").unwrap()).contains(&"ro".to_string()));
    let cg = mount_at(&s, "/sys/fs/cgroup").unwrap();
    assert_eq!(cg.typ().as_deref(), Some("cgroup"));
    assert!(opts(cg).contains(&"ro".to_string()));
    // The rootfs is not a mount.
    assert!(mount_at(&s, "/").is_none());
    let root = s.root().as_ref().unwrap();
    assert_eq!(root.path(), Path::new("rootfs"));
    assert_eq!(root.readonly(), Some(false));
}

#[test]
fn privileged_sys_is_writable() {
    let r = Run::new();
    let s = r.build(&["--privileged", "nginx"]).spec;
    assert!(opts(mount_at(&s, "/sys").unwrap()).contains(&"rw".to_string()));
    assert!(!opts(mount_at(&s, "/sys").unwrap()).contains(&"ro".to_string()));
}

#[test]
fn volumes() {
    let r = Run::new();
    let host_dir = r.dir.path().join("data");
    std::fs::create_dir(&host_dir).unwrap();
    let v = format!("{}:/data:ro", host_dir.display());
    let s = r.build(&["-v", &v, "nginx"]).spec;
    let m = mount_at(&s, "/data").unwrap();
    assert_eq!(m.typ().as_deref(), Some("bind"));
    assert_eq!(m.source().as_deref(), Some(host_dir.as_path()));
    assert_eq!(opts(m), ["rbind", "rprivate", "ro"]);

    let v = format!("{}:/data/../x/:rw,z,rshared", host_dir.display());
    let s = r.build(&["-v", &v, "nginx"]).spec;
    let m = mount_at(&s, "/x").unwrap();
    assert_eq!(opts(m), ["rbind", "rshared"]);
}

#[test]
fn volume_creates_missing_host_dir() {
    let r = Run::new();
    let missing = r.dir.path().join("new/deeper");
    let v = format!("{}:/data", missing.display());
    r.build(&["-v", &v, "nginx"]);
    assert!(missing.is_dir());
}

#[test]
fn refused_command_line_touches_nothing() {
    let r = Run::new();
    let missing = r.dir.path().join("never");
    let v = format!("{}:/data", missing.display());
    for bad in [
        vec!["-v", v.as_str(), "--memory", "12q", "nginx"],
        vec!["-v", v.as_str(), "--sysctl", "nokeyvalue", "nginx"],
        vec!["-v", v.as_str(), "--ulimit", "bogus=1", "nginx"],
    ] {
        assert!(r.try_build(&bad).is_err());
    }
    assert!(!missing.exists());
    assert!(!r.dir.path().join("hosts").exists());
}

#[test]
fn volume_errors() {
    let r = Run::new();
    // A name is a named volume, created on first use under the store's volumes/.
    let s = r.build(&["-v", "mydata:/data:ro", "nginx"]).spec;
    let m = s
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/data"))
        .unwrap();
    let data = r.dir.path().join("volumes/mydata/_data");
    assert_eq!(m.source().as_deref(), Some(data.as_path()));
    assert!(data.is_dir());
    assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
    assert!(r
        .err(&["-v", "/data", "nginx"])
        .contains("anonymous volumes"));
    assert!(r
        .err(&["-v", "/tmp:data", "nginx"])
        .contains("container path must be absolute"));
    assert!(r.err(&["-v", "/tmp:/", "nginx"]).contains("cannot be /"));
    assert!(r
        .err(&["-v", "/tmp:/x:rx", "nginx"])
        .contains("unknown option"));
    assert!(r
        .err(&["-v", "/tmp:/x:ro,rw", "nginx"])
        .contains("more than once"));
    assert!(r
        .err(&["-v", "/a:/b:/c:ro", "nginx"])
        .contains("expected HOST:CONTAINER"));
    assert!(r
        .err(&["-v", "/tmp:/x", "--tmpfs", "/x", "nginx"])
        .starts_with("duplicate mount point /x"));
}

#[test]
fn relative_volume_uses_cwd() {
    let mut r = Run::new();
    r.host.cwd = r.dir.path().to_path_buf();
    let s = r.build(&["-v", "./sub:/sub", "nginx"]).spec;
    assert_eq!(
        mount_at(&s, "/sub").unwrap().source().as_deref(),
        Some(r.dir.path().join("sub").as_path())
    );
}

#[test]
fn tmpfs_defaults_and_merge() {
    let r = Run::new();
    let s = r
        .build(&[
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/cache:exec,size=64m,mode=1777,size=32m",
            "nginx",
        ])
        .spec;
    let m = mount_at(&s, "/run").unwrap();
    assert_eq!(m.typ().as_deref(), Some("tmpfs"));
    assert_eq!(opts(m), ["noexec", "nosuid", "nodev"]);
    let m = mount_at(&s, "/cache").unwrap();
    assert_eq!(
        opts(m),
        ["nosuid", "nodev", "exec", "mode=1777", "size=32m"]
    );
    assert!(r
        .err(&["--tmpfs", "run", "nginx"])
        .starts_with("invalid --tmpfs"));
}

#[test]
fn user_mount_replaces_default() {
    let r = Run::new();
    let s = r.build(&["--tmpfs", "/dev/shm:size=1g", "nginx"]).spec;
    let shm: Vec<_> = s
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/dev/shm"))
        .collect();
    assert_eq!(shm.len(), 1);
    assert!(opts(shm[0]).contains(&"size=1g".to_string()));
}

#[test]
fn etc_files_written_and_bound() {
    let r = Run::new();
    let s = r.build(&["nginx"]).spec;
    for (dest, name) in [
        ("/etc/resolv.conf", "resolv.conf"),
        ("/etc/hosts", "hosts"),
        ("/etc/hostname", "hostname"),
    ] {
        let m = mount_at(&s, dest).unwrap();
        assert_eq!(
            m.source().as_deref(),
            Some(r.dir.path().join(name).as_path())
        );
        assert_eq!(opts(m), ["rbind", "rprivate", "rw"]);
    }
    assert_eq!(
        std::fs::read_to_string(r.dir.path().join("hostname")).unwrap(),
        "pi\n"
    );
    // host network: the host's files
    assert_eq!(
        std::fs::read_to_string(r.dir.path().join("resolv.conf")).unwrap(),
        "nameserver 192.0.2.1\nsearch lan\n"
    );
    assert_eq!(
        std::fs::read_to_string(r.dir.path().join("hosts")).unwrap(),
        "127.0.0.1 localhost\n192.0.2.9 pi\n"
    );
    // --read-only: still bind mounts, read-only
    let s = r.build(&["--read-only", "nginx"]).spec;
    assert!(opts(mount_at(&s, "/etc/hosts").unwrap()).contains(&"ro".to_string()));
    assert_eq!(s.root().as_ref().unwrap().readonly(), Some(true));
    // a user's own bind at one of them wins
    let v = format!("{}:/etc/hosts", r.dir.path().join("myhosts").display());
    let s = r.build(&["-v", &v, "nginx"]).spec;
    let hosts: Vec<_> = s
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/etc/hosts"))
        .collect();
    assert_eq!(hosts.len(), 1);
    assert!(hosts[0].source().as_ref().unwrap().ends_with("myhosts"));
}

#[test]
fn hosts_file_gets_custom_hostname_with_host_network() {
    let r = Run::new();
    r.build(&["--hostname", "web1", "nginx"]);
    let h = std::fs::read_to_string(r.dir.path().join("hosts")).unwrap();
    assert!(h.starts_with("127.0.0.1 localhost\n192.0.2.9 pi\n"));
    assert!(h.ends_with("127.0.1.1\tweb1\n"));
}

#[test]
fn own_network_files() {
    let r = Run::new();
    r.build(&["--network", "none", "nginx"]);
    let h = std::fs::read_to_string(r.dir.path().join("hosts")).unwrap();
    assert!(h.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"));
    assert!(h.ends_with("127.0.1.1\t0123456789ab\n"));
}

#[test]
fn resolv_conf_replaces_systemd_stub_in_own_netns() {
    let mut r = Run::new();
    r.host.files.insert(
        "/etc/resolv.conf",
        "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n".into(),
    );
    r.host.files.insert(
        "/run/systemd/resolve/resolv.conf",
        "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch lan\n".into(),
    );
    // host network: the stub is reachable, kept as is
    r.build(&["nginx"]);
    let c = std::fs::read_to_string(r.dir.path().join("resolv.conf")).unwrap();
    assert!(c.contains("nameserver 127.0.0.53"));
    // own network namespace: upstream servers
    r.build(&["--network", "none", "nginx"]);
    let c = std::fs::read_to_string(r.dir.path().join("resolv.conf")).unwrap();
    assert_eq!(
        c,
        "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch lan\n"
    );
    // no upstream file: loopback servers dropped, the rest kept
    r.host.files.remove("/run/systemd/resolve/resolv.conf");
    r.host.files.insert(
        "/etc/resolv.conf",
        "nameserver 127.0.0.53\nnameserver ::1\nsearch lan\n".into(),
    );
    r.build(&["--network", "none", "nginx"]);
    let c = std::fs::read_to_string(r.dir.path().join("resolv.conf")).unwrap();
    assert_eq!(c, "search lan\n");
    // mixed: loopback dropped, others kept, no upstream lookup
    r.host.files.insert(
        "/etc/resolv.conf",
        "nameserver 127.0.0.1\nnameserver 192.0.2.1\n".into(),
    );
    r.build(&["--network", "none", "nginx"]);
    let c = std::fs::read_to_string(r.dir.path().join("resolv.conf")).unwrap();
    assert_eq!(c, "nameserver 192.0.2.1\n");
}

#[test]
fn missing_host_resolv_conf_is_empty() {
    let mut r = Run::new();
    r.host.files.remove("/etc/resolv.conf");
    r.build(&["nginx"]);
    assert_eq!(
        std::fs::read_to_string(r.dir.path().join("resolv.conf")).unwrap(),
        ""
    );
}

// ---- resources

fn resources(s: &Spec) -> &oci_spec::runtime::LinuxResources {
    linux(s).resources().as_ref().unwrap()
}

#[test]
fn memory_and_swap() {
    let mut r = Run::new();
    let s = r.build(&["--memory", "128m", "nginx"]).spec;
    let m = resources(&s).memory().unwrap();
    assert_eq!(m.limit(), Some(128 << 20));
    assert_eq!(m.swap(), Some(256 << 20), "docker: swap total = 2x memory");
    let s = r
        .build(&["-m", "1g", "--memory-swap", "1536m", "nginx"])
        .spec;
    let m = resources(&s).memory().unwrap();
    assert_eq!((m.limit(), m.swap()), (Some(1 << 30), Some(1536 << 20)));
    let s = r.build(&["-m", "1g", "--memory-swap=-1", "nginx"]).spec;
    assert_eq!(resources(&s).memory().unwrap().swap(), None);
    let s = r.build(&["-m", "1g", "--memory-swap", "1g", "nginx"]).spec;
    assert_eq!(resources(&s).memory().unwrap().swap(), Some(1 << 30));
    // no swap accounting: memory only, as docker
    r.host.swap = false;
    let s = r.build(&["--memory", "128m", "nginx"]).spec;
    assert_eq!(resources(&s).memory().unwrap().swap(), None);
    assert!(resources(&r.build(&["nginx"]).spec).memory().is_none());
}

#[test]
fn memory_errors() {
    let r = Run::new();
    assert_eq!(
        r.err(&["--memory", "12q", "nginx"]),
        "invalid --memory \"12q\": expected a size like 128m or 1g"
    );
    assert!(r
        .err(&["--memory", "1m", "nginx"])
        .contains("minimum is 6m"));
    assert!(r
        .err(&["--memory-swap", "1g", "nginx"])
        .starts_with("--memory-swap needs --memory"));
    assert!(r
        .err(&["-m", "1g", "--memory-swap", "512m", "nginx"])
        .contains("at least --memory"));
    assert!(r
        .err(&["-m", "1g", "--memory-swap", "x", "nginx"])
        .starts_with("invalid --memory-swap \"x\""));
}

#[test]
fn memory_reservation_and_dockers_swap_rules() {
    let r = Run::new();
    let s = r
        .build(&["-m", "128m", "--memory-reservation", "64m", "nginx"])
        .spec;
    let m = resources(&s).memory().unwrap();
    assert_eq!(
        (m.limit(), m.reservation(), m.swap()),
        (Some(128 << 20), Some(64 << 20), Some(256 << 20))
    );
    // A soft limit alone: no hard limit, and so no swap limit either.
    let s = r.build(&["--memory-reservation", "64m", "nginx"]).spec;
    let m = resources(&s).memory().unwrap();
    assert_eq!(
        (m.limit(), m.reservation(), m.swap()),
        (None, Some(64 << 20), None)
    );
    // docker: 0 is none at all.
    let s = r.build(&["--memory-reservation", "0", "nginx"]).spec;
    assert!(resources(&s).memory().is_none());
    // --memory-swap equal to --memory: no swap (the runtime writes memory.swap.max 0).
    let s = r
        .build(&["-m", "64m", "--memory-swap", "64m", "nginx"])
        .spec;
    let m = resources(&s).memory().unwrap();
    assert_eq!((m.limit(), m.swap()), (Some(64 << 20), Some(64 << 20)));
    // --memory-swap -1 without --memory: docker takes it, and it changes nothing.
    let s = r.build(&["--memory-swap=-1", "nginx"]).spec;
    assert!(resources(&s).memory().is_none());
    // docker's --memory-swap 0 is unset: the default of twice the memory.
    let s = r.build(&["-m", "64m", "--memory-swap", "0", "nginx"]).spec;
    assert_eq!(resources(&s).memory().unwrap().swap(), Some(128 << 20));
}

#[test]
fn memory_reservation_and_swap_errors() {
    let r = Run::new();
    assert_eq!(
        r.err(&["--memory-reservation", "1m", "nginx"]),
        "invalid --memory-reservation \"1m\": the minimum is 6m"
    );
    assert_eq!(
        r.err(&["-m", "64m", "--memory-reservation", "128m", "nginx"]),
        "invalid --memory-reservation \"128m\": a soft limit cannot be above --memory \"64m\""
    );
    assert_eq!(
        r.err(&["--memory-reservation", "lots", "nginx"]),
        "invalid --memory-reservation \"lots\": expected a size like 128m or 1g"
    );
    assert_eq!(
        r.err(&["--memory-swap", "128m", "nginx"]),
        "--memory-swap needs --memory: it is the total of memory and swap"
    );
    assert_eq!(
        r.err(&["-m", "128m", "--memory-swap", "64m", "nginx"]),
        "invalid --memory-swap \"64m\": it is the total of memory and swap, so it must be at \
         least --memory \"128m\" (or -1 for unlimited swap)"
    );
}

/// A host with four cpus online and (unless a test removes it) one NUMA node.
fn cpuset_run() -> Run {
    let mut r = Run::new();
    r.host
        .files
        .insert("/sys/devices/system/cpu/online", "0-3\n".to_string());
    r.host
        .files
        .insert("/sys/devices/system/node/online", "0\n".to_string());
    r
}

#[test]
fn cpuset_cpus_and_mems() {
    let mut r = cpuset_run();
    let s = r
        .build(&["--cpuset-cpus", "0-1,3", "--cpuset-mems", "0", "nginx"])
        .spec;
    let cpu = resources(&s).cpu().as_ref().unwrap();
    assert_eq!(cpu.cpus().as_deref(), Some("0-1,3"));
    assert_eq!(cpu.mems().as_deref(), Some("0"));
    assert_eq!(cpu.quota(), None, "a cpuset sets no quota");
    // docker's ParseUintList forms: any order, overlaps and duplicates
    for ok in ["3,2,1", "0-0,0,1-3", "0-3", "2"] {
        let s = r.build(&["--cpuset-cpus", ok, "nginx"]).spec;
        assert_eq!(
            resources(&s).cpu().as_ref().unwrap().cpus().as_deref(),
            Some(ok)
        );
    }
    // an empty list is docker's unset
    let s = r.build(&["--cpuset-cpus", "", "nginx"]).spec;
    assert!(resources(&s).cpu().is_none());
    // together with --cpus
    let s = r
        .build(&["--cpus", "1.5", "--cpuset-cpus", "1-2", "nginx"])
        .spec;
    let cpu = resources(&s).cpu().as_ref().unwrap();
    assert_eq!(
        (cpu.quota(), cpu.cpus().as_deref()),
        (Some(150_000), Some("1-2"))
    );
    // no node directory: a kernel without NUMA, all memory is node 0
    r.host.files.remove("/sys/devices/system/node/online");
    let s = r.build(&["--cpuset-mems", "0", "nginx"]).spec;
    assert_eq!(
        resources(&s).cpu().as_ref().unwrap().mems().as_deref(),
        Some("0")
    );
    assert_eq!(
        r.err(&["--cpuset-mems", "1", "nginx"]),
        "invalid --cpuset-mems \"1\": memory nodes 1 not available on this host, which has \
         memory nodes 0"
    );
}

#[test]
fn cpuset_errors() {
    let r = cpuset_run();
    assert_eq!(
        r.err(&["--cpuset-cpus", "0-4", "nginx"]),
        "invalid --cpuset-cpus \"0-4\": cpus 0-4 not available on this host, which has cpus 0-3"
    );
    assert_eq!(
        r.err(&["--cpuset-cpus", "1,7,9-10", "nginx"]),
        "invalid --cpuset-cpus \"1,7,9-10\": cpus 7,9-10 not available on this host, which has \
         cpus 0-3"
    );
    for bad in ["1-", "-1", "a", "3-1", "0,,1", "1 ,2", "0x1", "99999999999"] {
        assert_eq!(
            r.err(&["--cpuset-cpus", bad, "nginx"]),
            format!(
                "invalid --cpuset-cpus {bad:?}: expected a list of numbers and ranges like 0-2,4"
            ),
            "{bad}"
        );
        assert!(
            r.err(&["--cpuset-mems", bad, "nginx"])
                .starts_with("invalid --cpuset-mems"),
            "{bad}"
        );
    }
    // online cpus with a hole (cpu 2 offline)
    let mut r = cpuset_run();
    r.host
        .files
        .insert("/sys/devices/system/cpu/online", "0-1,3\n".to_string());
    assert!(r
        .err(&["--cpuset-cpus", "1-3", "nginx"])
        .contains("cpus 1-3 not available"));
    r.build(&["--cpuset-cpus", "0,1,3", "nginx"]);
}

fn block_io(s: &Spec) -> &oci_spec::runtime::LinuxBlockIo {
    resources(s).block_io().as_ref().unwrap()
}

/// (major, minor, rate) of each throttled device.
fn throttled(l: &Option<Vec<oci_spec::runtime::LinuxThrottleDevice>>) -> Vec<(i64, i64, u64)> {
    l.iter()
        .flatten()
        .map(|d| (d.major(), d.minor(), d.rate()))
        .collect()
}

#[test]
fn block_io_flags() {
    let mut r = Run::new();
    r.host
        .devices
        .insert("/dev/vda", host_dev(true, 254, 0, 0o660, 6));
    let s = r
        .build(&[
            "--blkio-weight",
            "300",
            "--blkio-weight-device",
            "/dev/sda:200",
            "--device-read-bps",
            "/dev/sda:512kb",
            "--device-write-bps",
            "/dev/vda:1mb",
            "--device-write-bps",
            "/dev/sda:1g",
            "--device-read-iops",
            "/dev/vda:100",
            "--device-write-iops",
            "/dev/vda:50",
            "nginx",
        ])
        .spec;
    let io = block_io(&s);
    assert_eq!(
        io.weight(),
        Some(300),
        "v1's scale: the runtime converts for v2"
    );
    let wd: Vec<_> = io
        .weight_device()
        .iter()
        .flatten()
        .map(|d| (d.major(), d.minor(), d.weight()))
        .collect();
    assert_eq!(wd, vec![(8, 0, Some(200))]);
    assert_eq!(
        throttled(io.throttle_read_bps_device()),
        vec![(8, 0, 512 << 10)]
    );
    assert_eq!(
        throttled(io.throttle_write_bps_device()),
        vec![(254, 0, 1 << 20), (8, 0, 1 << 30)]
    );
    assert_eq!(
        throttled(io.throttle_read_iops_device()),
        vec![(254, 0, 100)]
    );
    assert_eq!(
        throttled(io.throttle_write_iops_device()),
        vec![(254, 0, 50)]
    );
    // a later flag for the same disk replaces the earlier one, as the kernel would
    let s = r
        .build(&[
            "--device-write-bps",
            "/dev/sda:1mb",
            "--device-write-bps",
            "/dev/sda:2mb",
            "nginx",
        ])
        .spec;
    assert_eq!(
        throttled(block_io(&s).throttle_write_bps_device()),
        vec![(8, 0, 2 << 20)]
    );
    // docker's 0s are "unset": no blockIO section at all, so no io/blkio controller is needed
    let s = r
        .build(&[
            "--blkio-weight",
            "0",
            "--blkio-weight-device",
            "/dev/sda:0",
            "nginx",
        ])
        .spec;
    assert!(resources(&s).block_io().is_none());
    assert!(resources(&r.build(&["nginx"]).spec).block_io().is_none());
    // a device name with colons of its own (by-path names) splits at the last one
    r.host.devices.insert(
        "/dev/disk/by-path/pci-0000:00:04.0",
        host_dev(true, 254, 0, 0o660, 6),
    );
    let s = r
        .build(&[
            "--device-read-iops",
            "/dev/disk/by-path/pci-0000:00:04.0:10",
            "nginx",
        ])
        .spec;
    assert_eq!(
        throttled(block_io(&s).throttle_read_iops_device()),
        vec![(254, 0, 10)]
    );
}

#[test]
fn block_io_errors() {
    let mut r = Run::new();
    r.host
        .devices
        .insert("/dev/sda1", host_dev(true, 8, 1, 0o660, 6));
    r.host
        .files
        .insert("/sys/dev/block/8:1/partition", "1\n".to_string());
    assert_eq!(
        r.err(&["--blkio-weight", "5", "nginx"]),
        "invalid --blkio-weight 5: expected 10 to 1000 (or 0 for the default)"
    );
    assert!(r
        .err(&["--blkio-weight", "1001", "nginx"])
        .starts_with("invalid --blkio-weight 1001"));
    assert_eq!(
        r.err(&["--device-write-bps", "/dev/null:1mb", "nginx"]),
        "invalid --device-write-bps \"/dev/null:1mb\": /dev/null is not a block device"
    );
    assert_eq!(
        r.err(&["--device-read-bps", "/dev/ttyUSB0:1mb", "nginx"]),
        "invalid --device-read-bps \"/dev/ttyUSB0:1mb\": /dev/ttyUSB0 is not a block device"
    );
    assert_eq!(
        r.err(&["--blkio-weight-device", "/etc/passwd:100", "nginx"]),
        "invalid --blkio-weight-device \"/etc/passwd:100\": /etc/passwd is not a block device"
    );
    let err = r
        .try_build(&["--device-read-iops", "/dev/nope:100", "nginx"])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "--device-read-iops \"/dev/nope:100\": cannot use /dev/nope"
    );
    // the cause follows once, as the source (printed by the CLI's `{:#}`)
    let cause = std::error::Error::source(&err).map(|c| c.to_string());
    assert_eq!(
        cause.as_deref(),
        Some("No such file or directory (os error 2)")
    );
    assert_eq!(
        r.err(&["--device-write-iops", "/dev/sda1:100", "nginx"]),
        "invalid --device-write-iops \"/dev/sda1:100\": /dev/sda1 is a partition (8:1); block \
         I/O limits apply to whole disks, give the disk it is on"
    );
    for (flag, value, reason) in [
        (
            "--blkio-weight-device",
            "/dev/sda:5",
            "a weight N from 10 to 1000",
        ),
        (
            "--blkio-weight-device",
            "/dev/sda:1001",
            "a weight N from 10 to 1000",
        ),
        (
            "--blkio-weight-device",
            "/dev/sda:x",
            "a weight N from 10 to 1000",
        ),
        ("--device-read-bps", "/dev/sda:fast", "a rate above 0"),
        ("--device-read-bps", "/dev/sda:0", "a rate above 0"),
        ("--device-write-bps", "/dev/sda:-1mb", "a rate above 0"),
        ("--device-read-iops", "/dev/sda:1k", "operations per second"),
        ("--device-write-iops", "/dev/sda:0", "operations per second"),
        ("--device-write-iops", "/dev/sda:", "operations per second"),
        ("--device-write-bps", "sda:1mb", "an absolute device path"),
        ("--device-write-bps", "/dev/sda", "an absolute device path"),
        ("--device-write-bps", "", "an absolute device path"),
    ] {
        let msg = r.err(&[flag, value, "nginx"]);
        assert!(
            msg.starts_with(&format!("invalid {flag} {value:?}: expected "))
                && msg.contains(reason),
            "{flag} {value}: {msg}"
        );
    }
}

#[test]
fn size_units() {
    use resources::parse_size;
    assert_eq!(parse_size("100"), Some(100));
    assert_eq!(parse_size("100b"), Some(100));
    assert_eq!(parse_size("64k"), Some(64 << 10));
    assert_eq!(parse_size("64KB"), Some(64 << 10));
    assert_eq!(parse_size("128m"), Some(128 << 20));
    assert_eq!(parse_size("128MiB"), Some(128 << 20));
    assert_eq!(parse_size("1.5g"), Some(3 << 29));
    assert_eq!(parse_size("2 g"), Some(2 << 30));
    assert_eq!(parse_size("1t"), Some(1 << 40));
    for bad in [
        "",
        "m",
        "-1m",
        "1x",
        "1mm",
        "1bb",
        ".5g",
        "1e3",
        "99999999999p",
    ] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
}

#[test]
fn cpus_shares_pids() {
    let r = Run::new();
    let s = r
        .build(&[
            "--cpus",
            "1.5",
            "--cpu-shares",
            "512",
            "--pids-limit",
            "100",
            "nginx",
        ])
        .spec;
    let cpu = resources(&s).cpu().as_ref().unwrap();
    assert_eq!((cpu.quota(), cpu.period()), (Some(150_000), Some(100_000)));
    assert_eq!(cpu.shares(), Some(512));
    assert_eq!(resources(&s).pids().unwrap().limit(), 100);
    for unlimited in ["-1", "0"] {
        let s = r.build(&["--pids-limit", unlimited, "nginx"]).spec;
        assert!(resources(&s).pids().is_none());
    }
    assert!(resources(&r.build(&["nginx"]).spec).cpu().is_none());
    let s = r.build(&["--cpu-shares", "1", "nginx"]).spec;
    assert_eq!(resources(&s).cpu().as_ref().unwrap().shares(), Some(2));
    assert_eq!(
        r.err(&["--cpus", "5", "nginx"]),
        "invalid --cpus 5: expected a number from 0.01 to 4 (this host has 4 cpus)"
    );
    assert!(r
        .err(&["--cpus", "0", "nginx"])
        .starts_with("invalid --cpus"));
    assert!(r
        .err(&["--pids-limit", "-2", "nginx"])
        .starts_with("invalid --pids-limit -2"));
}

#[test]
fn device_allowlist() {
    let r = Run::new();
    let s = r.build(&["nginx"]).spec;
    let d = resources(&s).devices().as_ref().unwrap();
    assert!(!d[0].allow());
    assert_eq!(d[0].access().as_deref(), Some("rwm"));
    let allowed: Vec<String> = d
        .iter()
        .filter(|r| r.allow())
        .map(|r| r.to_string())
        .collect();
    for want in [
        "c 1:3 rwm",
        "c 1:9 rwm",
        "c 5:0 rwm",
        "c 136:* rwm",
        "c 10:200 rwm",
        "c *:* m",
        "b *:* m",
    ] {
        assert!(allowed.iter().any(|a| a == want), "{want} in {allowed:?}");
    }
    assert!(!allowed.iter().any(|a| a.starts_with("b 8:")));
    let s = r.build(&["--privileged", "nginx"]).spec;
    let d = resources(&s).devices().as_ref().unwrap();
    assert_eq!(d.len(), 1);
    assert!(d[0].allow());
}

#[test]
fn device_flag_adds_node_and_rule() {
    let r = Run::new();
    let s = r
        .build(&[
            "--device",
            "/dev/ttyUSB0",
            "--device",
            "/dev/null:/dev/mynull:rw",
            "--device",
            "/dev/sda:r",
            "nginx",
        ])
        .spec;
    let nodes = linux(&s).devices().as_ref().unwrap();
    let show: Vec<String> = nodes
        .iter()
        .map(|d| {
            format!(
                "{} {:?} {}:{} {:o} {:?}",
                d.path().display(),
                d.typ(),
                d.major(),
                d.minor(),
                d.file_mode().unwrap(),
                d.gid()
            )
        })
        .collect();
    assert_eq!(
        show,
        [
            "/dev/ttyUSB0 C 188:0 660 Some(20)",
            "/dev/mynull C 1:3 666 Some(0)",
            "/dev/sda B 8:0 660 Some(6)",
        ]
    );
    // the rules come after docker's deny-all list: the last match wins
    let rules: Vec<String> = resources(&s)
        .devices()
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    let n = rules.len();
    assert_eq!(rules[0], "a *:* rwm");
    assert_eq!(
        rules[n - 3..],
        ["c 188:0 rwm", "c 1:3 rw", "b 8:0 r"],
        "{rules:?}"
    );
    assert!(resources(&s).devices().as_ref().unwrap()[n - 1].allow());
    // without --device there are no extra nodes
    assert!(linux(&r.build(&["nginx"]).spec).devices().is_none());
}

#[test]
fn device_flag_errors() {
    let r = Run::new();
    let e = r.err(&["--device", "/dev/nope", "nginx"]);
    assert!(
        e.starts_with("--device \"/dev/nope\": cannot use host path /dev/nope:"),
        "{e}"
    );
    assert!(e.contains("No such file"), "{e}");
    let e = r.err(&["--device", "/etc/passwd", "nginx"]);
    assert_eq!(
        e,
        "invalid --device \"/etc/passwd\": the host path is not a character or block device"
    );
    assert!(r
        .err(&["--device", "/dev/null:/dev/n:rx", "nginx"])
        .contains("permissions must be made of r, w and m"));
    assert!(r
        .err(&["--device", "/dev/null:dev/n", "nginx"])
        .contains("container path must be absolute"));
    assert!(r
        .err(&["--device", "null", "nginx"])
        .contains("host path must be absolute"));
    assert!(r
        .err(&["--device", "/a:/b:rw:x", "nginx"])
        .contains("expected HOST[:CONTAINER[:PERMS]]"));
}

#[test]
fn ulimits() {
    let mut r = Run::new();
    let s = r
        .build(&[
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "core=0",
            "--ulimit",
            "nofile=512:1024",
            "nginx",
        ])
        .spec;
    let rl = process(&s).rlimits().clone().unwrap();
    assert_eq!(rl.len(), 2);
    let nofile = rl
        .iter()
        .find(|l| l.typ() == PosixRlimitType::RlimitNofile)
        .unwrap();
    assert_eq!((nofile.soft(), nofile.hard()), (512, 1024));
    let core = rl
        .iter()
        .find(|l| l.typ() == PosixRlimitType::RlimitCore)
        .unwrap();
    assert_eq!((core.soft(), core.hard()), (0, 0));
    assert!(process(&r.build(&["nginx"]).spec).rlimits().is_none());

    assert_eq!(
        r.err(&["--ulimit", "nofile=1024:8192", "nginx"]),
        "invalid --ulimit \"nofile=1024:8192\": hard limit 8192 is above slate's own hard limit 4096, and raising it needs CAP_SYS_RESOURCE"
    );
    r.host.can_raise = true;
    r.build(&["--ulimit", "nofile=1024:8192", "nginx"]);
    let s = r.build(&["--ulimit", "stack=-1", "nginx"]).spec;
    assert_eq!(process(&s).rlimits().clone().unwrap()[0].hard(), u64::MAX);
    assert!(r
        .err(&["--ulimit", "bogus=1", "nginx"])
        .contains("unknown name"));
    assert!(r
        .err(&["--ulimit", "nofile=2:1", "nginx"])
        .contains("soft limit is above"));
    assert!(r
        .err(&["--ulimit", "nofile", "nginx"])
        .contains("expected NAME=SOFT"));
    assert!(r
        .err(&["--ulimit", "nofile=abc", "nginx"])
        .contains("numbers"));
}

// ---- capabilities and security

fn caps(s: &Spec) -> Vec<Capability> {
    let c = process(s).capabilities().as_ref().unwrap();
    let mut v: Vec<Capability> = c.bounding().clone().unwrap().into_iter().collect();
    assert_eq!(c.effective(), c.bounding());
    assert_eq!(c.permitted(), c.bounding());
    assert_eq!(c.inheritable().as_ref().map(|s| s.len()), Some(0));
    assert_eq!(c.ambient().as_ref().map(|s| s.len()), Some(0));
    v.sort_by_key(|c| c.to_string());
    v
}

#[test]
fn docker_default_capabilities() {
    let r = Run::new();
    let c = caps(&r.build(&["nginx"]).spec);
    assert_eq!(c.len(), 14);
    assert!(c.contains(&Capability::NetBindService));
    assert!(!c.contains(&Capability::SysAdmin));
}

#[test]
fn cap_add_and_drop() {
    let r = Run::new();
    let c = caps(
        &r.build(&[
            "--cap-add",
            "sys_admin",
            "--cap-drop",
            "CAP_NET_RAW",
            "nginx",
        ])
        .spec,
    );
    assert!(c.contains(&Capability::SysAdmin));
    assert!(!c.contains(&Capability::NetRaw));
    assert_eq!(c.len(), 14);
    let c = caps(
        &r.build(&["--cap-drop", "all", "--cap-add", "chown", "nginx"])
            .spec,
    );
    assert_eq!(c, [Capability::Chown]);
    let c = caps(&r.build(&["--cap-add", "ALL", "nginx"]).spec);
    assert_eq!(c.len(), 41);
    assert_eq!(
        r.err(&["--cap-add", "CAP_FLY", "nginx"]),
        "invalid --cap-add \"CAP_FLY\": unknown capability"
    );
    assert!(r
        .err(&["--cap-drop", "nope", "nginx"])
        .starts_with("invalid --cap-drop"));
}

#[test]
fn capabilities_the_kernel_lacks() {
    let mut r = Run::new();
    r.host.last_cap = 37; // before CAP_PERFMON, CAP_BPF, CAP_CHECKPOINT_RESTORE
    let c = caps(&r.build(&["--cap-add", "all", "nginx"]).spec);
    assert_eq!(c.len(), 38);
    assert!(!c.contains(&Capability::Bpf));
    assert!(r
        .err(&["--cap-add", "bpf", "nginx"])
        .contains("kernel does not know"));
    assert_eq!(caps(&r.build(&["--privileged", "nginx"]).spec).len(), 38);
}

#[test]
fn capabilities_slate_lacks() {
    let mut r = Run::new();
    r.host.bounding = !(1u64 << 24); // no CAP_SYS_RESOURCE, as in a container
    let c = caps(&r.build(&["--privileged", "nginx"]).spec);
    assert_eq!(c.len(), 40);
    assert!(!c.contains(&Capability::SysResource));
    assert_eq!(
        caps(&r.build(&["--cap-add", "ALL", "nginx"]).spec).len(),
        40
    );
    assert!(r
        .err(&["--cap-add", "sys_resource", "nginx"])
        .contains("slate itself does not hold"));
    // dropping it is fine
    assert_eq!(
        caps(&r.build(&["--cap-drop", "SYS_RESOURCE", "nginx"]).spec).len(),
        14
    );
}

#[test]
fn security_defaults() {
    let r = Run::new();
    let out = r.build(&["nginx"]);
    // Off, as docker: setuid and file-capability programs work ([security] turns it on).
    assert_eq!(process(&out.spec).no_new_privileges(), Some(false));
    let nnp = r.build(&["--security-opt", "no-new-privileges", "nginx"]);
    assert_eq!(process(&nnp.spec).no_new_privileges(), Some(true));
    assert_eq!(out.seccomp, SeccompChoice::Default);
    // The default profile is in the spec, resolved for the container's capabilities: what
    // the runtime installs is what config.json and `inspect` say.
    let default = linux(&out.spec)
        .seccomp()
        .clone()
        .expect("default profile in the spec");
    assert_eq!(
        default,
        slate_runtime::seccomp::docker_default().expect("docker's default")
    );
    let admin = r.build(&["--cap-add", "SYS_ADMIN", "nginx"]);
    let relaxed = linux(&admin.spec).seccomp().clone().expect("profile");
    assert_ne!(relaxed, default, "--cap-add SYS_ADMIN relaxes the profile");
    let unconfined = r.build(&["--security-opt", "seccomp=unconfined", "nginx"]);
    assert!(linux(&unconfined.spec).seccomp().is_none());
    let privileged = r.build(&["--privileged", "nginx"]);
    assert!(linux(&privileged.spec).seccomp().is_none());
    assert_eq!(
        linux(&out.spec).masked_paths().as_ref().unwrap().len(),
        slate_runtime::DOCKER_MASKED_PATHS.len()
    );
    assert_eq!(
        linux(&out.spec).readonly_paths().as_ref().unwrap().len(),
        slate_runtime::DOCKER_READONLY_PATHS.len()
    );
    assert_eq!(process(&out.spec).terminal(), Some(false));
    assert_eq!(
        process(&r.build(&["-t", "nginx"]).spec).terminal(),
        Some(true)
    );
}

#[test]
fn security_opts() {
    let r = Run::new();
    let s = r
        .build(&["--security-opt", "no-new-privileges=false", "nginx"])
        .spec;
    assert_eq!(process(&s).no_new_privileges(), Some(false));
    let s = r
        .build(&["--security-opt", "no-new-privileges", "nginx"])
        .spec;
    assert_eq!(process(&s).no_new_privileges(), Some(true));
    let s = r
        .build(&["--security-opt", "no-new-privileges:true", "nginx"])
        .spec;
    assert_eq!(process(&s).no_new_privileges(), Some(true));
    let out = r.build(&["--security-opt", "seccomp=unconfined", "nginx"]);
    assert_eq!(out.seccomp, SeccompChoice::Unconfined);
    let s = r
        .build(&[
            "--security-opt",
            "systempaths=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--security-opt",
            "label=disable",
            "nginx",
        ])
        .spec;
    assert!(linux(&s).masked_paths().as_ref().unwrap().is_empty());
    assert!(linux(&s).readonly_paths().as_ref().unwrap().is_empty());
    assert!(r
        .err(&["--security-opt", "apparmor=x", "nginx"])
        .starts_with("invalid --security-opt \"apparmor=x\""));
    assert!(r
        .err(&["--security-opt", "no-new-privileges=maybe", "nginx"])
        .contains("invalid"));
}

#[test]
fn privileged() {
    let r = Run::new();
    let out = r.build(&[
        "--privileged",
        "--security-opt",
        "seccomp=/nonexistent.json",
        "nginx",
    ]);
    assert_eq!(out.seccomp, SeccompChoice::Unconfined);
    assert_eq!(caps(&out.spec).len(), 41);
    assert_eq!(process(&out.spec).no_new_privileges(), Some(false));
    assert!(linux(&out.spec).masked_paths().as_ref().unwrap().is_empty());
    assert!(linux(&out.spec)
        .readonly_paths()
        .as_ref()
        .unwrap()
        .is_empty());
}

#[test]
fn seccomp_profile_oci_format() {
    let r = Run::new();
    let p = r.dir.path().join("p.json");
    std::fs::write(
        &p,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_AARCH64"],
            "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", p.display());
    let out = r.build(&["--security-opt", &opt, "nginx"]);
    assert_eq!(out.seccomp, SeccompChoice::Profile(p.clone()));
    let sc = linux(&out.spec).seccomp().as_ref().unwrap();
    assert_eq!(sc.syscalls().as_ref().unwrap().len(), 1);
}

#[test]
fn seccomp_profile_docker_format_is_resolved() {
    let r = Run::new();
    let p = r.dir.path().join("docker.json");
    std::fs::write(
        &p,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86","SCMP_ARCH_X32"]},
                       {"architecture":"SCMP_ARCH_AARCH64","subArchitectures":["SCMP_ARCH_ARM"]}],
            "syscalls":[
              {"names":["read"],"action":"SCMP_ACT_ALLOW","args":[],"comment":"","includes":{},"excludes":{}},
              {"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
              {"names":["clone"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMIN"]}},
              {"names":["new_thing"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"9.0"}},
              {"names":["old_thing"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.8"}},
              {"names":["ppc_only"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["ppc64le"]}}
            ]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", p.display());
    let names = |out: &SpecOutput| -> Vec<String> {
        linux(&out.spec)
            .seccomp()
            .as_ref()
            .unwrap()
            .syscalls()
            .clone()
            .unwrap()
            .iter()
            .flat_map(|s| s.names().clone())
            .collect()
    };
    let out = r.build(&["--security-opt", &opt, "nginx"]);
    assert_eq!(names(&out), ["read", "clone", "old_thing"]);
    let sc = linux(&out.spec).seccomp().as_ref().unwrap();
    assert_eq!(sc.architectures().as_ref().unwrap().len(), 5);
    assert_eq!(sc.default_errno_ret(), Some(1));
    let out = r.build(&["--security-opt", &opt, "--cap-add", "SYS_ADMIN", "nginx"]);
    assert_eq!(names(&out), ["read", "mount", "old_thing"]);
}

#[test]
fn seccomp_profile_errors() {
    let r = Run::new();
    let e = r.err(&["--security-opt", "seccomp=/nonexistent/p.json", "nginx"]);
    assert!(
        e.starts_with("--security-opt seccomp=/nonexistent/p.json: cannot read"),
        "{e}"
    );
    let p = r.dir.path().join("bad.json");
    std::fs::write(&p, "{not json").unwrap();
    let e = r.err(&[
        "--security-opt",
        &format!("seccomp={}", p.display()),
        "nginx",
    ]);
    assert!(e.contains("invalid seccomp profile"), "{e}");
    std::fs::write(&p, r#"{"defaultAction":"SCMP_ACT_BOGUS"}"#).unwrap();
    let e = r.err(&[
        "--security-opt",
        &format!("seccomp={}", p.display()),
        "nginx",
    ]);
    assert!(e.contains("invalid seccomp profile"), "{e}");
}

// ---- labels, stop signal

#[test]
fn labels_merge_into_annotations() {
    let r = Run::new();
    let s = r
        .build(&[
            "--label",
            "shared=flag",
            "-l",
            "team=web",
            "-l",
            "bare",
            "nginx",
        ])
        .spec;
    let a = s.annotations().as_ref().unwrap();
    assert_eq!(a.get("maintainer").map(String::as_str), Some("nginx"));
    assert_eq!(a.get("shared").map(String::as_str), Some("flag"));
    assert_eq!(a.get("team").map(String::as_str), Some("web"));
    assert_eq!(a.get("bare").map(String::as_str), Some(""));
    assert!(r.err(&["-l", "=x", "nginx"]).starts_with("invalid --label"));
}

#[test]
fn stop_signal_forms() {
    let mut r = Run::new();
    assert_eq!(r.build(&["nginx"]).stop_signal, Signal::SIGQUIT);
    for (raw, want) in [
        ("TERM", Signal::SIGTERM),
        ("sigint", Signal::SIGINT),
        ("9", Signal::SIGKILL),
        (" SIGUSR1 ", Signal::SIGUSR1),
        ("SIGRTMIN+3", Signal::SIGTERM),
        ("", Signal::SIGTERM),
    ] {
        r.image["config"]["StopSignal"] = json!(raw);
        assert_eq!(r.build(&["nginx"]).stop_signal, want, "{raw}");
    }
    r.image["config"]["StopSignal"] = Value::Null;
    assert_eq!(r.build(&["nginx"]).stop_signal, Signal::SIGTERM);
    // --stop-signal wins over the image's.
    r.image["config"]["StopSignal"] = json!("SIGQUIT");
    assert_eq!(
        r.build(&["--stop-signal", "usr2", "nginx"]).stop_signal,
        Signal::SIGUSR2
    );
    assert_eq!(
        r.err(&["--stop-signal", "NOPE", "nginx"]),
        "invalid --stop-signal \"NOPE\": expected a signal name like SIGTERM or a number"
    );
    for bad in ["SIGNOPE", "999", "-1"] {
        r.image["config"]["StopSignal"] = json!(bad);
        assert_eq!(
            r.err(&["nginx"]),
            format!("invalid StopSignal \"{bad}\" in the image config: expected a signal name like SIGTERM or a number")
        );
    }
}

#[test]
fn spec_serializes_and_round_trips() {
    let r = Run::new();
    let s = r
        .build(&["-m", "64m", "-u", "nginx", "-v", "/tmp:/t:ro", "nginx"])
        .spec;
    let text = serde_json::to_string(&s).unwrap();
    let back: Spec = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);
    assert_eq!(s.hostname().as_deref(), Some("pi"));
    // What the supervisor and exec read back (without oci-spec's Deserialize for Spec),
    // for a spec with everything slate writes: seccomp, caps, rlimits, mounts, resources.
    let s = r
        .build(&[
            "-m",
            "64m",
            "--pids-limit",
            "9",
            "-u",
            "1:2",
            "--cap-add",
            "NET_ADMIN",
            "-t",
            "-e",
            "A=b",
            "-w",
            "/srv",
            "--read-only",
            "--tmpfs",
            "/run",
            "-v",
            "/tmp:/t:ro",
            "--ulimit",
            "nofile=10:20",
            "--oom-score-adj",
            "100",
            "nginx",
            "sh",
            "-c",
            "x",
        ])
        .spec;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&s).unwrap()).unwrap();
    assert_eq!(slate_runtime::bundle::load(&path).unwrap(), s);
}

// ---- hostile flag values: errors, never panics

#[test]
fn junk_flag_values_never_panic() {
    let r = Run::new();
    let alphabet: Vec<char> = "a0:=,-./\\ \t\u{0}éZ9mkg1:ro".chars().collect();
    let mut seed: u64 = 0x5eed;
    let mut junk = || {
        let mut s = String::new();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = (seed >> 59) as usize;
        for _ in 0..len {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
        }
        s
    };
    let base = r.dir.path().join("v");
    let parsed = args(&["nginx"]);
    for _ in 0..100 {
        let j = junk();
        let vol = format!("{}{}", base.display(), j);
        for (flag, value) in [
            ("--memory", j.as_str()),
            ("--memory-swap", j.as_str()),
            ("--tmpfs", j.as_str()),
            ("--ulimit", j.as_str()),
            ("--user", j.as_str()),
            ("--hostname", j.as_str()),
            ("--security-opt", j.as_str()),
            ("--cap-add", j.as_str()),
            ("--label", j.as_str()),
            ("--env", j.as_str()),
            ("--workdir", j.as_str()),
            ("--volume", vol.as_str()),
            ("--memory-reservation", j.as_str()),
            ("--cpuset-cpus", j.as_str()),
            ("--cpuset-mems", j.as_str()),
            ("--blkio-weight-device", j.as_str()),
            ("--device-write-bps", j.as_str()),
            ("--device-read-iops", j.as_str()),
        ] {
            let mut a = parsed.clone();
            match flag {
                "--memory" => a.memory = Some(value.into()),
                "--memory-swap" => {
                    a.memory = Some("64m".into());
                    a.memory_swap = Some(value.into())
                }
                "--tmpfs" => a.tmpfs = vec![value.into()],
                "--ulimit" => a.ulimit = vec![value.into()],
                "--user" => a.user = Some(value.into()),
                "--hostname" => a.hostname = Some(value.into()),
                "--security-opt" => a.security_opt = vec![value.into()],
                "--cap-add" => a.cap_add = vec![value.into()],
                "--label" => a.label = vec![value.into()],
                "--env" => a.env = vec![value.into()],
                "--workdir" => a.workdir = Some(value.into()),
                "--memory-reservation" => a.memory_reservation = Some(value.into()),
                "--cpuset-cpus" => a.cpuset_cpus = Some(value.into()),
                "--cpuset-mems" => a.cpuset_mems = Some(value.into()),
                "--blkio-weight-device" => a.blkio_weight_device = vec![value.into()],
                "--device-write-bps" => a.device_write_bps = vec![format!("/dev/sda:{value}")],
                "--device-read-iops" => a.device_read_iops = vec![value.into()],
                _ => a.volume = vec![value.into()],
            }
            let _ = r.try_build_args(&a);
        }
    }
}

#[test]
fn real_host_probes() {
    // The real probes (resolv.conf, hostname, cap_last_cap, swap accounting, rlimits) on
    // whatever machine runs the tests: they must work and never panic.
    let dir = tempfile::tempdir().unwrap();
    let image = image();
    for argv in [
        vec!["nginx"],
        vec![
            "--network",
            "none",
            "-m",
            "64m",
            "--cpus",
            "0.5",
            "--ulimit",
            "nofile=64",
            "nginx",
        ],
    ] {
        let a = args(&argv);
        let input = SpecInput {
            args: &a,
            image_config: &image,
            read_image_file: &image_files,
            id: ID,
            run_dir: dir.path(),
            host_env: &host_env,
            no_new_privileges: false,
            volumes_dir: None,
        };
        let out = build(&input).unwrap();
        assert!(out
            .spec
            .hostname()
            .as_deref()
            .is_some_and(|h| !h.is_empty()));
        assert!(dir.path().join("resolv.conf").is_file());
    }
    assert!(RealHost.cap_last_cap() >= 36);
    assert!(RealHost.cpus() >= 1);
    assert!(RealHost
        .rlimit_hard(PosixRlimitType::RlimitNofile)
        .is_some());
}

#[test]
fn host_namespaces_sysctl_shm_and_oom() {
    let r = Run::new();
    let s = r
        .build(&["--pid", "host", "--ipc", "host", "--uts", "host", "nginx"])
        .spec;
    let ns = namespaces(&s);
    for t in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
    ] {
        assert!(!ns.contains(&t), "{t:?} must be the host's");
    }
    // The host's UTS namespace: no name is set (it would rename the host).
    assert_eq!(s.hostname(), &None);
    let shm = |s: &Spec| {
        s.mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .cloned()
            .unwrap()
    };
    assert_eq!(shm(&s).typ().as_deref(), Some("bind"));
    let s = r
        .build(&[
            "--shm-size",
            "256m",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--network",
            "none",
            "--oom-score-adj",
            "-500",
            "nginx",
        ])
        .spec;
    assert!(shm(&s)
        .options()
        .as_ref()
        .unwrap()
        .contains(&"size=262144k".to_string()));
    assert_eq!(
        linux(&s)
            .sysctl()
            .as_ref()
            .unwrap()
            .get("net.core.somaxconn")
            .map(String::as_str),
        Some("1024")
    );
    assert_eq!(process(&s).oom_score_adj(), Some(-500));
    assert!(r
        .err(&["--shm-size", "lots", "nginx"])
        .contains("--shm-size"));
    assert!(r
        .err(&["--sysctl", "novalue", "nginx"])
        .contains("--sysctl"));
    assert!(r.err(&["--pid", "bogus", "nginx"]).contains("--pid"));
    assert!(r
        .err(&["--oom-score-adj", "-1001", "nginx"])
        .contains("-1000 to 1000"));
}

#[test]
fn mount_flag_forms() {
    let r = Run::new();
    let src = r.dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let bind = format!(
        "type=bind,src={},dst=/b,ro=true,bind-propagation=rslave",
        src.display()
    );
    let s = r
        .build(&[
            "--mount",
            &bind,
            "--mount",
            "type=tmpfs,destination=/t,tmpfs-mode=1770",
            "--mount",
            "source=named,target=/v",
            "nginx",
        ])
        .spec;
    let find = |d: &str| {
        s.mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new(d))
            .cloned()
            .unwrap()
    };
    let b = find("/b");
    assert_eq!(b.source().as_deref(), Some(src.as_path()));
    let o = b.options().clone().unwrap();
    assert!(
        o.contains(&"ro".into()) && o.contains(&"rslave".into()),
        "{o:?}"
    );
    assert!(find("/t")
        .options()
        .clone()
        .unwrap()
        .contains(&"mode=1770".into()));
    assert!(find("/v")
        .source()
        .as_ref()
        .unwrap()
        .ends_with("volumes/named/_data"));
    for (bad, why) in [
        ("type=bind,source=rel,target=/x", "absolute"),
        ("type=volume,source=/abs,target=/x", "type=bind"),
        ("type=tmpfs,source=x,target=/x", "no source"),
        ("type=bind,source=/x", "target= is missing"),
        ("type=volume,target=/x", "anonymous"),
        (
            "type=bind,bogus=1,target=/x,source=/x",
            "unknown or malformed",
        ),
    ] {
        let e = r.err(&["--mount", bad, "nginx"]);
        assert!(e.contains(why) && e.contains("--mount"), "{bad}: {e}");
    }
}
