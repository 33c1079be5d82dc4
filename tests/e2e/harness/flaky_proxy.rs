//! A small HTTP proxy on loopback in front of a registry, for the tests of flaky networks:
//! it logs every request with its `Range` header (the registry's own access log does not
//! show request headers), and it can misbehave in bounded, scripted ways: answer 503, drop
//! connections, cut a blob's body short, or serve slowly.
//!
//! One request per connection: the proxy forwards the request head with `Connection: close`
//! and copies the answer back until the registry closes, so it never has to parse bodies.
//! Only GET and HEAD are proxied (what a pull sends); anything else gets 501.
//!
//! Clean-up: Drop stops the accept loop; connection threads end when either side closes,
//! and every socket has a timeout, so nothing outlives a test for long.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy does wrong, and how often. Counters count HTTP requests the proxy parsed
/// (a TLS hello, which slate sends first to a loopback registry, is closed and not counted).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer `503 Service Unavailable` (or `fail_status`) to this many first requests.
    pub fail_first: u64,
    /// The status of those answers when not 0: 429, 500 (else 503).
    pub fail_status: u16,
    /// A `Retry-After` (seconds) to send with them.
    pub retry_after: Option<u64>,
    /// Close this many first requests' connections without answering (after the 503s).
    pub drop_first: u64,
    /// Cut the body of this many first blob GETs after `cut_after` bytes (or, with
    /// `stall`, stop sending there and hold the connection open, silent, for up to
    /// [`STALL_HOLD`]).
    pub cut_blobs: u64,
    pub cut_after: u64,
    pub stall: bool,
    /// Limit responses to about this many bytes per second (0: no limit).
    pub bytes_per_sec: u64,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    /// What the proxy did: `forwarded`, `503` (or the `fail_status`), `dropped`, `cut`.
    pub action: &'static str,
    /// When the request arrived.
    pub at: Instant,
}

struct Shared {
    upstream: String,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Logged>>,
    requests: AtomicU64,
    blob_gets: AtomicU64,
    stop: AtomicBool,
}

/// A running proxy; stopped on Drop.
pub struct FlakyProxy {
    addr: String,
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stalled connection is held open at most (the client's stall timeout in a
/// test is shorter).
pub const STALL_HOLD: Duration = Duration::from_secs(20);

impl FlakyProxy {
    /// Starts a proxy to `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str, faults: Faults) -> FlakyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            faults: Mutex::new(faults),
            log: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            blob_gets: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = handle(&s, conn);
                });
            }
        });
        FlakyProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT` of the proxy: use it as the registry host.
    pub fn host(&self) -> &str {
        &self.addr
    }

    /// Replaces the faults (counters keep counting from where they are).
    pub fn set_faults(&self, f: Faults) {
        if let Ok(mut g) = self.shared.faults.lock() {
            *g = f;
        }
    }

    pub fn log(&self) -> Vec<Logged> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// GETs of `/v2/<name>/blobs/<digest>` seen, with their Range headers.
    pub fn blob_gets(&self, name: &str, digest: &str) -> Vec<Logged> {
        let path = format!("/v2/{name}/blobs/{digest}");
        self.log()
            .into_iter()
            .filter(|l| l.method == "GET" && l.path == path)
            .collect()
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn record(s: &Shared, method: &str, path: &str, range: &Option<String>, action: &'static str) {
    if let Ok(mut l) = s.log.lock() {
        l.push(Logged {
            method: method.to_string(),
            path: path.to_string(),
            range: range.clone(),
            action,
            at: Instant::now(),
        });
    }
}

fn handle(s: &Shared, client: TcpStream) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        // Not HTTP (e.g. a TLS client hello): close.
        return Ok(());
    };
    if !version.starts_with("HTTP/1") {
        return Ok(());
    }
    let (method, path) = (method.to_string(), path.to_string());
    let mut headers = Vec::new();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let lower = trimmed.to_ascii_lowercase();
        if lower.starts_with("range:") {
            range = Some(trimmed[6..].trim().to_string());
        }
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        headers.push(trimmed.to_string());
    }
    let mut client = client;
    if method != "GET" && method != "HEAD" {
        record(s, &method, &path, &range, "501");
        client.write_all(
            b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let n = s.requests.fetch_add(1, Ordering::SeqCst);
    let is_blob_get = method == "GET" && path.contains("/blobs/sha256:");
    let blob_n = if is_blob_get {
        s.blob_gets.fetch_add(1, Ordering::SeqCst)
    } else {
        u64::MAX
    };
    let faults = s.faults.lock().map(|f| f.clone()).unwrap_or_default();
    if n < faults.fail_first {
        let (action, line) = match faults.fail_status {
            429 => ("429", "429 Too Many Requests"),
            500 => ("500", "500 Internal Server Error"),
            _ => ("503", "503 Service Unavailable"),
        };
        record(s, &method, &path, &range, action);
        let retry = faults
            .retry_after
            .map(|r| format!("Retry-After: {r}\r\n"))
            .unwrap_or_default();
        client.write_all(
            format!("HTTP/1.1 {line}\r\n{retry}Content-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )?;
        return Ok(());
    }
    if n < faults.fail_first + faults.drop_first {
        record(s, &method, &path, &range, "dropped");
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    let cut = if blob_n < faults.cut_blobs {
        Some(faults.cut_after)
    } else {
        None
    };
    record(
        s,
        &method,
        &path,
        &range,
        match cut {
            Some(_) if faults.stall => "stalled",
            Some(_) => "cut",
            None => "forwarded",
        },
    );

    let mut upstream = TcpStream::connect(&s.upstream)?;
    upstream.set_read_timeout(Some(IO_TIMEOUT))?;
    upstream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!("{method} {path} {version}\r\n");
    for h in &headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    upstream.write_all(head.as_bytes())?;

    // Copy the answer back: the head whole, then the body, cut or throttled as scripted.
    let mut up = BufReader::new(upstream);
    let mut resp_head = Vec::new();
    loop {
        let mut line = Vec::new();
        if up.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let end = line == b"\r\n";
        resp_head.extend_from_slice(&line);
        if end {
            break;
        }
    }
    client.write_all(&resp_head)?;
    let mut sent: u64 = 0;
    let started = Instant::now();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let want = match cut {
            Some(limit) if sent >= limit => {
                if faults.stall {
                    // Silence on a live connection: only the client's stall timeout ends it
                    // (bounded here, and cut short when the proxy stops).
                    let until = Instant::now() + STALL_HOLD;
                    while Instant::now() < until && !s.stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                // Abrupt end mid-body: the client sees fewer bytes than Content-Length.
                let _ = client.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(limit) => buf.len().min((limit - sent) as usize),
            None => buf.len(),
        };
        let n = up.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        client.write_all(&buf[..n])?;
        sent += n as u64;
        if faults.bytes_per_sec > 0 {
            let due = Duration::from_secs_f64(sent as f64 / faults.bytes_per_sec as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}
