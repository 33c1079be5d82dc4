//! A real registry on loopback: Debian's `docker-registry` (the CNCF distribution server 2.8).
//!
//! [`Registry::shared`] starts one instance per test process, on first use; tests that must
//! tamper with the registry's storage start their own with [`Registry::private`]. Each instance
//! gets a free 127.0.0.1 port, its own temp dir (storage, generated `config.yml`, and `registry.log`
//! with the access log, for tests that want to see the requests made), and is ready when
//! `GET /v2/` answers.
//!
//! Clean-up: a private instance is killed and its dir removed on Drop. The shared one lives in a
//! static whose Drop never runs, so it is killed by an `atexit` handler (by its PID only) and,
//! should the test process die without running `atexit` (SIGKILL), by `PR_SET_PDEATHSIG`. The
//! death signal fires when the *thread* that forked exits, so the shared instance is spawned from
//! a thread that never exits; test threads come and go.
//!
//! Pushing uses the distribution API directly (monolithic upload: POST, then PUT `?digest=`;
//! manifests by PUT with their exact media type), so the registry stores exactly the bytes built
//! by [`crate::harness::fixture`].

use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::fixture::{digest_hex, BuiltImage, BuiltIndex};

/// A running registry.
pub struct Registry {
    addr: String,
    dir: PathBuf,
    /// `Some` for private instances (killed on Drop); the shared one is owned by its thread.
    child: Mutex<Option<Child>>,
    client: reqwest::blocking::Client,
}

static SHARED: OnceLock<Registry> = OnceLock::new();
static SHARED_PID: OnceLock<i32> = OnceLock::new();
static SHARED_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn kill_shared_registry() {
    if let Some(pid) = SHARED_PID.get() {
        // SAFETY: plain syscalls on the PID of our own child; waitpid reaps it so the temp dir
        // is no longer in use when it is removed.
        unsafe {
            libc::kill(*pid, libc::SIGKILL);
            libc::waitpid(*pid, std::ptr::null_mut(), 0);
        }
    }
    if let Some(dir) = SHARED_DIR.get() {
        let _ = fs::remove_dir_all(dir);
    }
}

fn registry_binary() -> String {
    std::env::var("SLATE_E2E_REGISTRY").unwrap_or_else(|_| "/usr/bin/docker-registry".into())
}

fn free_port() -> io::Result<u16> {
    // The port is free when we look; the registry binds it a moment later. A lost race shows
    // up as the registry exiting, and `start` then tries another port.
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn write_config(dir: &Path, port: u16) -> io::Result<PathBuf> {
    let storage = dir.join("storage");
    fs::create_dir_all(&storage)?;
    let config = format!(
        "version: 0.1\n\
         log:\n  level: info\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: slate-e2e\n",
        storage.display()
    );
    let path = dir.join("config.yml");
    fs::write(&path, config)?;
    Ok(path)
}

fn spawn(dir: &Path, port: u16) -> io::Result<Child> {
    let config = write_config(dir, port)?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("registry.log"))?;
    let mut cmd = Command::new(registry_binary());
    cmd.arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe and touches nothing but this (forked) process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "starting {} (install Debian's docker-registry, or set SLATE_E2E_REGISTRY): {e}",
                registry_binary()
            ),
        )
    })
}

fn make_temp_dir(prefix: &str) -> io::Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("building an HTTP client")
}

/// Starts a registry (retrying on another port if the chosen one was taken), returning the
/// child once `GET /v2/` answers.
fn start(dir: &Path) -> io::Result<(Child, String)> {
    let http = client();
    let mut last_err = None;
    for _ in 0..5 {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut child = spawn(dir, port)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
                last_err = Some(io::Error::other(format!(
                    "registry on {addr} exited with {status}; log:\n{log}"
                )));
                break;
            }
            if let Ok(r) = http.get(format!("http://{addr}/v2/")).send() {
                if r.status().is_success() {
                    return Ok((child, addr));
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "registry on {addr} did not answer GET /v2/"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("registry did not start")))
}

impl Registry {
    /// The registry shared by all tests of this process.
    pub fn shared() -> &'static Registry {
        SHARED.get_or_init(|| {
            let dir = make_temp_dir("slate-e2e-registry").expect("creating the registry dir");
            let _ = SHARED_DIR.set(dir.clone());
            let (tx, rx) = mpsc::channel();
            let thread_dir = dir.clone();
            std::thread::Builder::new()
                .name("slate-e2e-registry".into())
                .spawn(move || {
                    let started = start(&thread_dir);
                    let child = match started {
                        Ok((child, addr)) => {
                            let _ = SHARED_PID.set(child.id() as i32);
                            // SAFETY: registering a plain extern "C" fn with no captured state.
                            unsafe { libc::atexit(kill_shared_registry) };
                            let _ = tx.send(Ok(addr));
                            child
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    // Keep this thread (the registry's parent for PR_SET_PDEATHSIG) alive for
                    // the life of the process; keep the handle so the PID stays ours.
                    let _child = child;
                    loop {
                        std::thread::park();
                    }
                })
                .expect("spawning the registry thread");
            let addr = rx
                .recv()
                .expect("registry thread")
                .unwrap_or_else(|e| panic!("starting the shared registry: {e}"));
            Registry {
                addr,
                dir,
                child: Mutex::new(None),
                client: client(),
            }
        })
    }

    /// A registry of the calling test's own, killed and removed on Drop.
    pub fn private() -> Registry {
        let dir = make_temp_dir("slate-e2e-registry").expect("creating the registry dir");
        let (child, addr) = match start(&dir) {
            Ok(x) => x,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                panic!("starting a private registry: {e}");
            }
        };
        Registry {
            addr,
            dir,
            child: Mutex::new(Some(child)),
            client: client(),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        &self.addr
    }

    /// `127.0.0.1:PORT/<name>:<tag>`.
    pub fn reference(&self, name: &str, tag: &str) -> String {
        format!("{}/{name}:{tag}", self.addr)
    }

    /// The registry's log (its access log included).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Where the filesystem driver keeps a blob's bytes (for corrupting it).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest_hex(digest);
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Uploads a blob (monolithic upload), unless the repository already has it.
    pub fn push_blob(&self, name: &str, digest: &str, data: &[u8]) {
        let head = self
            .client
            .head(self.url(&format!("/v2/{name}/blobs/{digest}")))
            .send()
            .unwrap_or_else(|e| panic!("HEAD blob {digest}: {e}"));
        if head.status().is_success() {
            return;
        }
        let r = self
            .client
            .post(self.url(&format!("/v2/{name}/blobs/uploads/")))
            .send()
            .unwrap_or_else(|e| panic!("starting upload of {digest}: {e}"));
        assert_eq!(r.status().as_u16(), 202, "POST upload for {digest}");
        let location = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .expect("upload Location header")
            .to_string();
        let mut url = if location.starts_with("http") {
            location
        } else {
            self.url(&location)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        let r = self
            .client
            .put(url)
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .unwrap_or_else(|e| panic!("PUT blob {digest}: {e}"));
        let status = r.status();
        assert_eq!(
            status.as_u16(),
            201,
            "PUT blob {digest}: {}",
            r.text().unwrap_or_default()
        );
    }

    /// Stores a manifest (or index) under `reference` (tag or digest) with exactly `media_type`.
    pub fn push_manifest(&self, name: &str, reference: &str, media_type: &str, data: &[u8]) {
        let r = self
            .client
            .put(self.url(&format!("/v2/{name}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(data.to_vec())
            .send()
            .unwrap_or_else(|e| panic!("PUT manifest {name}:{reference}: {e}"));
        let status = r.status();
        let digest = r
            .headers()
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
            .map(str::to_string);
        assert_eq!(
            status.as_u16(),
            201,
            "PUT manifest {name}:{reference}: {}",
            r.text().unwrap_or_default()
        );
        let expected = super::fixture::sha256_digest(data);
        assert_eq!(
            digest.as_deref(),
            Some(expected.as_str()),
            "registry's digest of {name}:{reference}"
        );
    }

    /// Pushes an image's blobs and manifest, tagging it `tag`; returns its reference.
    pub fn push_image(&self, name: &str, tag: &str, img: &BuiltImage) -> String {
        self.push_image_blobs(name, img);
        self.push_manifest(name, tag, &img.manifest_media_type, &img.manifest);
        self.reference(name, tag)
    }

    fn push_image_blobs(&self, name: &str, img: &BuiltImage) {
        for l in &img.layers {
            self.push_blob(name, &l.digest, &l.blob);
        }
        self.push_blob(name, &img.config_digest, &img.config);
    }

    /// Pushes every image of an index by digest, then the index under `tag`.
    pub fn push_index(&self, name: &str, tag: &str, index: &BuiltIndex) -> String {
        for img in &index.images {
            self.push_image_blobs(name, img);
            self.push_manifest(
                name,
                &img.manifest_digest,
                &img.manifest_media_type,
                &img.manifest,
            );
        }
        self.push_manifest(name, tag, &index.media_type, &index.index);
        self.reference(name, tag)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let child = self.child.get_mut().map(|c| c.take()).unwrap_or(None);
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Registry {
    /// How many `GET` requests for `/v2/<name>/blobs/<digest>` the access log holds.
    pub fn blob_gets(&self, name: &str, digest: &str) -> usize {
        let needle = format!("\"GET /v2/{name}/blobs/{digest} ");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// Waits until the access log shows at least one GET of each of `digests` under `name`.
    /// The registry writes its access log line after the response, so a client can be done
    /// before the line is; waiting makes later counts exact.
    pub fn wait_for_blob_gets(&self, name: &str, digests: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while digests.iter().any(|d| self.blob_gets(name, d) == 0) {
            assert!(
                Instant::now() < deadline,
                "the registry never logged GETs of all of {digests:?} under {name}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Registry {
    /// GETs a manifest and returns the `Docker-Content-Digest` the registry announces with it
    /// and the sha256 of the bytes it actually served.
    pub fn get_manifest_digests(
        &self,
        name: &str,
        reference: &str,
        accept: &str,
    ) -> (Option<String>, String) {
        let r = self
            .client
            .get(self.url(&format!("/v2/{name}/manifests/{reference}")))
            .header("accept", accept)
            .send()
            .unwrap_or_else(|e| panic!("GET manifest {name}:{reference}: {e}"));
        let header = r
            .headers()
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
            .map(str::to_string);
        let body = r
            .bytes()
            .unwrap_or_else(|e| panic!("reading manifest {name}:{reference}: {e}"));
        (header, super::fixture::sha256_digest(&body))
    }
}
