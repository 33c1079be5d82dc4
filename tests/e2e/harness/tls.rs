//! A second `docker-registry` with TLS and htpasswd auth, serving the storage of a plain
//! [`Registry`] (so fixtures are pushed the easy way, over plain HTTP without auth, and read
//! back through the guarded door).
//!
//! The CA and the server certificate (for `127.0.0.1`, by IP SAN) are made with the
//! `openssl` CLI; the htpasswd file (bcrypt, which the distribution server requires) with
//! `htpasswd -Bbn`. Everything lives in the instance's temp dir, removed on Drop with the
//! process killed.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::registry::Registry;

/// A running TLS + htpasswd registry.
pub struct TlsRegistry {
    addr: String,
    dir: PathBuf,
    child: Option<Child>,
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `ca.crt`/`ca.key` and `server.crt`/`server.key` (SAN IP:127.0.0.1) in `dir`.
fn make_certs(dir: &Path) {
    let p = |n: &str| dir.join(n).display().to_string();
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=slate e2e CA",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.crt"),
    ]));
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
    ]));
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("writing ext.cnf");
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("server.crt"),
    ]));
}

/// The storage root of a plain registry (its filesystem driver's `rootdirectory`).
fn storage_of(reg: &Registry) -> PathBuf {
    // blob_data_path is <storage>/docker/registry/v2/blobs/sha256/<2>/<hex>/data.
    let zero = format!("sha256:{}", "0".repeat(64));
    let mut p = reg.blob_data_path(&zero);
    for _ in 0..8 {
        p.pop();
    }
    p
}

/// Makes `client.cert`/`client.key` signed by the CA in `dir` (docker's names for a
/// registry's client certificate).
fn make_client_cert(dir: &Path) {
    let p = |n: &str| dir.join(n).display().to_string();
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=slate e2e client",
        "-keyout",
        &p("client.key"),
        "-out",
        &p("client.csr"),
    ]));
    fs::write(
        dir.join("client-ext.cnf"),
        "extendedKeyUsage=clientAuth
",
    )
    .expect("writing client-ext.cnf");
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("client.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("client-ext.cnf"),
        "-out",
        &p("client.cert"),
    ]));
}

impl TlsRegistry {
    /// Starts a TLS registry with one htpasswd user over `plain`'s storage.
    pub fn start(plain: &Registry, user: &str, password: &str) -> TlsRegistry {
        TlsRegistry::start_with(plain, user, password, false)
    }

    /// As [`TlsRegistry::start`]; with `client_certs`, the registry also demands a client
    /// certificate signed by its CA (`http.tls.clientcas`).
    pub fn start_with(
        plain: &Registry,
        user: &str,
        password: &str,
        client_certs: bool,
    ) -> TlsRegistry {
        let dir = std::env::temp_dir().join(format!(
            "slate-e2e-tls-{}-{}",
            std::process::id(),
            plain.host().replace(':', "-")
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating the TLS registry dir");
        let mut reg = TlsRegistry {
            addr: String::new(),
            dir: dir.clone(),
            child: None,
        };
        make_certs(&dir);
        if client_certs {
            make_client_cert(&dir);
        }
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("running htpasswd (apache2-utils)");
        assert!(out.status.success(), "htpasswd failed");
        fs::write(dir.join("htpasswd"), &out.stdout).expect("writing htpasswd");

        let storage = storage_of(plain);
        let mut last = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 auth:\n  htpasswd:\n    realm: slate-e2e\n    path: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: slate-e2e\n  tls:\n    certificate: {}\n    key: {}\n",
                storage.display(),
                dir.join("htpasswd").display(),
                dir.join("server.crt").display(),
                dir.join("server.key").display(),
            );
            let config = if client_certs {
                format!(
                    "{config}    clientcas:\n      - {}\n",
                    dir.join("ca.crt").display()
                )
            } else {
                config
            };
            fs::write(dir.join("config.yml"), config).expect("writing config.yml");
            let log = fs::File::create(dir.join("registry.log")).expect("registry.log");
            let mut cmd = Command::new(
                std::env::var("SLATE_E2E_REGISTRY")
                    .unwrap_or_else(|_| "/usr/bin/docker-registry".into()),
            );
            cmd.arg("serve")
                .arg(dir.join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log);
            // SAFETY: prctl is async-signal-safe and touches only the forked child.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("starting docker-registry");
            reg.child = Some(child);
            reg.addr = format!("127.0.0.1:{port}");
            match reg.wait_ready() {
                Ok(()) => return reg,
                Err(e) => {
                    last = e;
                    if let Some(mut c) = reg.child.take() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                }
            }
        }
        panic!("the TLS registry did not start: {last}");
    }

    /// Ready when `GET /v2/` over TLS (trusting our CA, with the client certificate if
    /// there is one) answers 401.
    fn wait_ready(&mut self) -> Result<(), String> {
        let ca = fs::read(self.ca_cert()).map_err(|e| e.to_string())?;
        let mut b = reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).map_err(|e| e.to_string())?)
            .timeout(Duration::from_secs(10));
        if self.dir.join("client.cert").is_file() {
            let mut pem = fs::read(self.dir.join("client.cert")).map_err(|e| e.to_string())?;
            pem.extend(fs::read(self.dir.join("client.key")).map_err(|e| e.to_string())?);
            b = b.identity(reqwest::Identity::from_pem(&pem).map_err(|e| e.to_string())?);
        }
        let http = b.build().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!("exited with {status}: {}", self.log()));
                }
            }
            if let Ok(r) = http.get(format!("https://{}/v2/", self.addr)).send() {
                if r.status().as_u16() == 401 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no answer on {}: {}", self.addr, self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn host(&self) -> &str {
        &self.addr
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Writes a docker-convention certs dir (`<dir>/<host:port>/ca.crt`) trusting our CA,
    /// with `client.cert` and `client.key` when the registry demands them.
    pub fn write_certs_dir(&self, dir: &Path) {
        let d = dir.join(&self.addr);
        fs::create_dir_all(&d).expect("creating the certs dir");
        fs::copy(self.ca_cert(), d.join("ca.crt")).expect("copying ca.crt");
        for f in ["client.cert", "client.key"] {
            if self.dir.join(f).is_file() {
                fs::copy(self.dir.join(f), d.join(f)).expect("copying the client certificate");
            }
        }
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
