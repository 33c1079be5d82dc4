//! Issue 2: a registry that demands a bearer token and redirects blob downloads to another
//! host (a CDN, an S3 bucket) must get the token, and that other host must never see it.
//!
//! Two tiny HTTP servers on loopback stand in front of the real registry: the "registry"
//! (challenges, issues a token, checks it, answers blob GETs with 307) and the "storage"
//! (another port, so another host to an HTTP client), which records every Authorization
//! header it receives and serves the blob bytes it fetches from the real registry.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fixtures;
use crate::harness::fixture::Compression;
use crate::harness::registry::Registry;
use crate::harness::slate::Slate;
use crate::harness::store;

const TOKEN: &str = "redirect-test-token-5f2a";

struct Request {
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request head; `None` for anything that is not HTTP (slate's first TLS try).
fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?;
    if method != "GET" && method != "HEAD" {
        return None;
    }
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Some(Request { path, headers })
}

fn respond(mut s: &TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

/// A loopback server that handles each connection with `handle` until dropped.
struct Server {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(handle: impl Fn(&TcpStream, Request) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local addr").to_string();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = Arc::new(handle);
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        let h = handle.clone();
                        std::thread::spawn(move || {
                            if let Some(req) = read_request(&s) {
                                h(&s, req);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Server { addr, stop }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// GETs `path` from the real registry: (status, content type, docker digest, body).
fn upstream(registry: &str, path: &str, accept: Option<&str>) -> (u16, String, String, Vec<u8>) {
    let client = reqwest::blocking::Client::new();
    let mut rb = client.get(format!("http://{registry}{path}"));
    if let Some(a) = accept {
        rb = rb.header("Accept", a);
    }
    let resp = rb.send().expect("the real registry answers");
    let status = resp.status().as_u16();
    let get = |h: &str| {
        resp.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (ct, dcd) = (get("Content-Type"), get("Docker-Content-Digest"));
    let mut body = Vec::new();
    let mut resp = resp;
    resp.read_to_end(&mut body).expect("the registry's body");
    (status, ct, dcd, body)
}

#[test]
fn blob_redirects_to_another_host_never_carry_the_registry_token() {
    let reg = Registry::shared();
    let name = "redirect/img";
    let fx = fixtures::small("redirected", "linux/amd64", Compression::Gzip);
    reg.push_image(name, "v1", &fx.image);
    let real = reg.host().to_string();

    // Storage: another host:port; records the Authorization header of every request.
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let real2 = real.clone();
    let storage = Server::start(move |s, req| {
        seen2
            .lock()
            .expect("log lock")
            .push(req.header("Authorization").map(str::to_string));
        let upstream_path = req.path.replacen("/cdn", "/v2", 1);
        let (status, _, _, body) = upstream(&real2, &upstream_path, None);
        let st = if status == 200 {
            "200 OK"
        } else {
            "404 Not Found"
        };
        respond(
            s,
            st,
            &[("Content-Type", "application/octet-stream".into())],
            &body,
        );
    });

    // The registry: bearer challenge, token endpoint, token check, 307 for blobs.
    let storage_addr = storage.addr.clone();
    let front_addr: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let front_addr2 = front_addr.clone();
    let real3 = real.clone();
    let front = Server::start(move |s, req| {
        let me = front_addr2.lock().expect("addr lock").clone();
        let challenge = format!("Bearer realm=\"http://{me}/token\",service=\"redirect-test\"");
        if req.path.starts_with("/token") {
            let body = format!("{{\"token\":\"{TOKEN}\"}}");
            respond(
                s,
                "200 OK",
                &[("Content-Type", "application/json".into())],
                body.as_bytes(),
            );
            return;
        }
        if req.header("Authorization") != Some(&format!("Bearer {TOKEN}")) {
            respond(
                s,
                "401 Unauthorized",
                &[("WWW-Authenticate", challenge)],
                b"{}",
            );
            return;
        }
        if req.path.contains("/blobs/") {
            let location = format!(
                "http://{storage_addr}{}",
                req.path.replacen("/v2", "/cdn", 1)
            );
            respond(s, "307 Temporary Redirect", &[("Location", location)], b"");
            return;
        }
        let (status, ct, dcd, body) = upstream(&real3, &req.path, req.header("Accept"));
        let st = if status == 200 {
            "200 OK"
        } else {
            "404 Not Found"
        };
        respond(
            s,
            st,
            &[("Content-Type", ct), ("Docker-Content-Digest", dcd)],
            &body,
        );
    });
    *front_addr.lock().expect("addr lock") = front.addr.clone();

    let slate = Slate::new("redirect");
    let reference = format!("{}/{name}:v1", front.addr);
    let digest = slate.pull(&reference, None);
    assert_eq!(digest, fx.image.manifest_digest);
    store::assert_consistent(&slate, &fx.image.chain_ids(), &[]);

    let seen = seen.lock().expect("log lock").clone();
    // The config and both layers came through the storage host.
    assert!(seen.len() >= 3, "blobs were not redirected: {seen:?}");
    assert!(
        seen.iter().all(Option::is_none),
        "the storage host received the registry's Authorization header: {seen:?}"
    );
}
