//! The registry client (distribution API v2): manifests and blobs, with docker's rules for
//! transport and authentication.
//!
//! - HTTPS with the system roots (plus a per-registry CA and client certificate from
//!   `certs.d/<host[:port]>/`, docker's convention). Plain HTTP only for loopback registries
//!   and those the configuration names insecure; for those, HTTPS is tried first, as docker
//!   does, and the answer is remembered for the life of the client.
//! - Authentication by challenge: an anonymous or credentialed `Bearer` token per
//!   repository scope (cached, renewed on 401), or `Basic`.
//! - Redirects (blob storage behind a CDN) are followed by reqwest, which drops the
//!   `Authorization` header whenever the host or port changes, so registry credentials
//!   never reach another host.
//! - Docker Hub may be reached through pull-through mirrors (`mirrors`), tried in order
//!   for each request; when a mirror fails the next is tried, then Docker Hub itself. A
//!   mirror that cannot be reached at all is skipped for the life of the client.
//! - Idempotent requests are retried with capped exponential backoff on connection
//!   errors, timeouts, 429 (honouring `Retry-After`) and 5xx. Each retry is handed to the
//!   caller's observer ([`Client::on_retry`]) to show, as the library prints nothing
//!   (without one it is logged at info). A registry where nothing answers at all (two
//!   attempts in a row refused, or with no route to it) is not waited for: that request
//!   fails at once and later ones to it get a single attempt, so a `run --pull always`
//!   with the registry down falls back to the local image in well under a second instead
//!   of sitting out the whole backoff. Timeouts, 429 and 5xx keep the full schedule.
//!
//! The client is blocking: layer downloads run on plain threads that decompress and unpack
//! as they read. reqwest keeps one small I/O thread per client; it is dropped with the
//! client, before any container is cloned.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, RANGE, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use reqwest::StatusCode;

use crate::auth::{Credential, Credentials};
use crate::digest::{Digest, HashingReader};
use crate::manifest::{self, MAX_MANIFEST_SIZE};
use crate::reference::{is_loopback_host, Reference};

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Not `source`: the message already spells out the whole chain, which `{:#}` would
    /// print a second time.
    #[error("cannot reach registry {registry}: {}", error_chain(.error))]
    Connect {
        registry: String,
        error: reqwest::Error,
    },
    #[error("registry {registry} requires authentication for {repository}: run `slate login {registry}`")]
    Unauthorized {
        registry: String,
        repository: String,
    },
    #[error("registry {registry} denied access to {repository}: check the name and your credentials (`slate login {registry}`)")]
    Denied {
        registry: String,
        repository: String,
    },
    #[error("{what} not found in registry {registry}")]
    NotFound { registry: String, what: String },
    #[error("registry {registry} answered {status} for {what}")]
    Status {
        registry: String,
        what: String,
        status: StatusCode,
    },
    #[error("registry {registry}: token service failed: {reason}")]
    Token { registry: String, reason: String },
    #[error("registry {registry}: manifest {what} is larger than {MAX_MANIFEST_SIZE} bytes")]
    TooLarge { registry: String, what: String },
    #[error("cannot use TLS files for {registry} in {path}: {reason}")]
    Certs {
        registry: String,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot set up the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("registry {registry}: reading {what}")]
    Read {
        registry: String,
        what: String,
        source: std::io::Error,
    },
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// A request that failed and is about to be sent again, for the caller to show.
#[derive(Debug, Clone)]
pub struct Retry {
    /// `host[:port]` of the registry (or mirror) asked.
    pub registry: String,
    /// What was asked for: `the API root`, `manifest name:tag`, `blob sha256:...`.
    pub what: String,
    pub cause: RetryCause,
    /// The attempt about to be made (2 on the first retry), of `attempts` at most.
    pub next: u32,
    pub attempts: u32,
    /// The pause before it.
    pub wait: Duration,
}

/// Why a request is sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryCause {
    /// No connection was made: refused, no route, a connect timeout, a name that does
    /// not resolve. `reason` is short: `connection refused`, `timed out`.
    Unreachable { reason: String },
    /// Connected, but the request failed before an answer (timed out, reset).
    Failed { reason: String },
    /// The registry answered 429 or a 5xx.
    Busy { status: StatusCode },
    /// A download broke off in the middle of the body and is resumed or redone.
    CutOff { reason: String },
}

impl fmt::Display for Retry {
    /// One line: `registry 127.0.0.1:5000 not reachable (connection refused); retry 2/5
    /// in 0.4 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.registry;
        match &self.cause {
            RetryCause::Unreachable { reason } => {
                write!(f, "registry {r} not reachable ({reason})")?
            }
            RetryCause::Failed { reason } => write!(
                f,
                "registry {r}: request for {} failed ({reason})",
                self.what
            )?,
            RetryCause::Busy { status } => {
                write!(f, "registry {r} answered {status} for {}", self.what)?
            }
            RetryCause::CutOff { reason } => {
                write!(f, "registry {r}: {} cut off ({reason})", self.what)?
            }
        }
        write!(
            f,
            "; retry {}/{} in {:.1} s",
            self.next,
            self.attempts,
            self.wait.as_secs_f64()
        )
    }
}

/// What [`Client::on_retry`] calls, from whichever thread retries.
type RetryObserver = Arc<dyn Fn(&Retry) + Send + Sync>;

/// Attempts in a row that found nothing there (refused, no route) after which a request to
/// a registry stops retrying. A port that refuses twice, 0.4 s apart, has nothing listening:
/// sitting out the rest of the backoff (6 s with the defaults) would only delay the
/// fallback to a local image. A registry that is slow or overloaded answers or times out
/// instead, and keeps the full schedule.
const REFUSED_IN_A_ROW: u32 = 2;

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) that may be reached over plain HTTP besides loopback.
    pub insecure_registries: Vec<String>,
    /// Docker-convention directory of per-registry TLS files (`/etc/slate/certs.d`).
    pub certs_dir: Option<PathBuf>,
    pub credentials: Credentials,
    /// Attempts for one request, including the first.
    pub attempts: u32,
    /// Longest pause between attempts.
    pub max_backoff: Duration,
    /// A connection that delivers nothing for this long is given up (and retried).
    pub stall_timeout: Duration,
    pub user_agent: String,
    /// Pull-through mirrors of Docker Hub (`https://mirror.example[:port]`), tried in order
    /// before it.
    pub mirrors: Vec<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            certs_dir: None,
            credentials: Credentials::default(),
            attempts: 5,
            max_backoff: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
            user_agent: concat!("slate/", env!("CARGO_PKG_VERSION")).to_string(),
            mirrors: Vec::new(),
        }
    }
}

#[derive(Clone)]
enum Challenge {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct Endpoint {
    base: String,
    http: Http,
    challenge: Challenge,
}

/// A registry client shared by the threads of one pull.
pub struct Client {
    opts: ClientOptions,
    endpoints: Mutex<HashMap<String, std::sync::Arc<Endpoint>>>,
    tokens: Mutex<HashMap<(String, String), String>>,
    /// Mirrors that could not be reached: not tried again by this client.
    dead_mirrors: Mutex<Vec<String>>,
    /// Registries where nothing answered (see [`REFUSED_IN_A_ROW`]): one attempt per request
    /// until one gets an answer.
    unreachable: Mutex<Vec<String>>,
    observer: Option<RetryObserver>,
}

/// Where one request goes: a registry, or a mirror standing in for Docker Hub.
struct Target {
    /// `host[:port]`: names the registry in errors and keys its credentials and tokens.
    registry: String,
    ep: std::sync::Arc<Endpoint>,
}

/// A manifest as served.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: Option<String>,
    /// Computed from the bytes, never taken from the registry's header.
    pub digest: Digest,
    /// What the registry said the digest is (`Docker-Content-Digest`), if it said: bytes
    /// that do not match it are corrupt even when asked for by tag.
    pub announced: Option<Digest>,
}

/// A registry's answer to [`Client::ping`].
#[derive(Debug, Clone)]
pub struct Pong {
    /// The URL that answered (`https://host/v2/`).
    pub url: String,
    pub status: StatusCode,
}

/// A blob download in progress.
pub struct Blob {
    pub response: Response,
    /// Where the body starts in the blob: the requested offset if the registry honoured
    /// the range, else 0.
    pub offset: u64,
    /// Content length of this response, when known.
    pub length: Option<u64>,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Client {
        Client {
            opts,
            endpoints: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            dead_mirrors: Mutex::new(Vec::new()),
            unreachable: Mutex::new(Vec::new()),
            observer: None,
        }
    }

    /// Hands every retry to `f` (to show it: the library prints nothing) instead of logging
    /// it at info.
    pub fn on_retry(mut self, f: impl Fn(&Retry) + Send + Sync + 'static) -> Client {
        self.observer = Some(Arc::new(f));
        self
    }

    /// Reports a retry to the observer, or logs it when there is none.
    pub(crate) fn retrying(&self, retry: Retry) {
        match &self.observer {
            Some(f) => {
                tracing::debug!(registry = %retry.registry, what = %retry.what, cause = ?retry.cause, "retrying");
                f(&retry)
            }
            None => tracing::info!("{retry}"),
        }
    }

    /// Attempts per request, including the first (also bounds resumes of a stream).
    pub fn attempts(&self) -> u32 {
        self.opts.attempts.max(1)
    }

    /// The pause before retry number `attempt` (1-based): exponential, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        Duration::from_millis(200u64 << attempt.min(10)).min(self.opts.max_backoff)
    }

    fn insecure(&self, registry: &str) -> bool {
        is_loopback_host(registry) || self.opts.insecure_registries.iter().any(|r| r == registry)
    }

    fn build_http(&self, registry: &str) -> Result<Http, RegistryError> {
        // For the blocking client `timeout` bounds each read of the body too: a stall timeout.
        self.build_http_with(registry, Duration::from_secs(15), self.opts.stall_timeout)
    }

    fn build_http_with(
        &self,
        registry: &str,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Http, RegistryError> {
        let mut b = Http::builder()
            .user_agent(self.opts.user_agent.clone())
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(10));
        if let Some(dir) = &self.opts.certs_dir {
            let dir = dir.join(registry);
            b = add_cert_dir(b, registry, &dir)?;
        }
        b.build().map_err(RegistryError::Client)
    }

    /// Finds the registry's base URL and its authentication challenge (GET /v2/), once.
    fn endpoint(
        &self,
        registry: &str,
        api_host: &str,
    ) -> Result<std::sync::Arc<Endpoint>, RegistryError> {
        self.endpoint_at(registry, registry, &self.registry_bases(registry, api_host))
    }

    /// The base URLs to try for a registry, each with its attempts: for one that may be plain
    /// HTTP, one quick HTTPS try (as docker), then HTTP with the usual retries.
    fn registry_bases(&self, registry: &str, api_host: &str) -> Vec<(String, u32)> {
        if self.insecure(registry) {
            vec![
                (format!("https://{api_host}"), 1),
                (format!("http://{api_host}"), self.opts.attempts),
            ]
        } else {
            vec![(format!("https://{api_host}"), self.opts.attempts)]
        }
    }

    /// The endpoint cached under `key`, or the first of `bases` that answers `GET /v2/`.
    fn endpoint_at(
        &self,
        key: &str,
        registry: &str,
        bases: &[(String, u32)],
    ) -> Result<std::sync::Arc<Endpoint>, RegistryError> {
        if let Some(e) = lock(&self.endpoints).get(key) {
            return Ok(e.clone());
        }
        let http = self.build_http(registry)?;
        let mut last_err = None;
        for (base, attempts) in bases {
            let url = format!("{base}/v2/");
            match self.with_attempts(registry, "the API root", *attempts, || http.get(&url)) {
                // A TLS server asked in plain HTTP says 400: the HTTPS failure (an untrusted
                // certificate, say) is the one worth reporting.
                Ok(resp) if resp.status() == StatusCode::BAD_REQUEST && last_err.is_some() => {
                    tracing::debug!(registry, base, "plain HTTP refused by a TLS server");
                }
                Ok(resp) => {
                    let challenge = if resp.status() == StatusCode::UNAUTHORIZED {
                        parse_challenge(resp.headers())
                    } else {
                        Challenge::None
                    };
                    let ep = std::sync::Arc::new(Endpoint {
                        base: base.clone(),
                        http,
                        challenge,
                    });
                    lock(&self.endpoints).insert(key.to_string(), ep.clone());
                    return Ok(ep);
                }
                Err(e) => {
                    tracing::debug!(registry, base, error = %e, "registry ping failed");
                    last_err = Some(e)
                }
            }
        }
        Err(last_err.unwrap_or_else(|| RegistryError::Token {
            registry: registry.to_string(),
            reason: "no transport".to_string(),
        }))
    }

    /// The endpoint of a Docker Hub mirror given as `[scheme://]host[:port][/path]`. Plain
    /// HTTP only where a registry could be plain HTTP (loopback, `insecure`).
    fn mirror_target(&self, mirror: &str) -> Result<Target, RegistryError> {
        let (host, bases) = self.mirror_bases(mirror);
        let ep = self.endpoint_at(&format!("mirror {host}"), &host, &bases)?;
        Ok(Target { registry: host, ep })
    }

    /// A mirror's `host[:port]` and the base URLs to try for it, once each.
    fn mirror_bases(&self, mirror: &str) -> (String, Vec<(String, u32)>) {
        let (scheme, rest) = match mirror.split_once("://") {
            Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
            None => (None, mirror),
        };
        let host = rest.split('/').next().unwrap_or(rest).to_string();
        let bases = match scheme.as_deref() {
            Some("http") if self.insecure(&host) => vec![(format!("http://{host}"), 1)],
            Some("https") | Some("http") => vec![(format!("https://{host}"), 1)],
            _ if self.insecure(&host) => vec![
                (format!("https://{host}"), 1),
                (format!("http://{host}"), 1),
            ],
            _ => vec![(format!("https://{host}"), 1)],
        };
        (host, bases)
    }

    /// Whether a registry answers at all, for `slate doctor`: one `GET /v2/` per transport
    /// the registry may use (the same ones a pull would try), each bounded by `timeout` from
    /// connecting to the last byte, no retries, nothing cached. Any HTTP answer counts, a 401
    /// included: it is reachable, credentials are another matter. `target` is a registry as
    /// the configuration names it (`docker.io`, `host:port`) or, with `mirror`, a mirror's
    /// `[scheme://]host[:port]`.
    pub fn ping(
        &self,
        target: &str,
        mirror: bool,
        timeout: Duration,
    ) -> Result<Pong, RegistryError> {
        let (registry, bases) = if mirror {
            self.mirror_bases(target)
        } else {
            let api_host = if target == crate::reference::DOCKER_HUB {
                crate::reference::DOCKER_HUB_API
            } else {
                target
            };
            (target.to_string(), self.registry_bases(target, api_host))
        };
        let http = self.build_http_with(&registry, timeout, timeout)?;
        let mut last_err = None;
        for (base, _) in &bases {
            let url = format!("{base}/v2/");
            match http.get(&url).send() {
                // A TLS server asked in plain HTTP says 400: the HTTPS failure is the answer.
                Ok(resp) if resp.status() == StatusCode::BAD_REQUEST && last_err.is_some() => {}
                Ok(resp) => {
                    return Ok(Pong {
                        url,
                        status: resp.status(),
                    })
                }
                Err(error) => {
                    last_err = Some(RegistryError::Connect {
                        registry: registry.clone(),
                        error,
                    })
                }
            }
        }
        Err(last_err.unwrap_or_else(|| RegistryError::Token {
            registry,
            reason: "no transport".to_string(),
        }))
    }

    /// Sends a request built by `make` again after transient failures.
    fn with_retries<F>(
        &self,
        registry: &str,
        what: &str,
        make: F,
    ) -> Result<Response, RegistryError>
    where
        F: Fn() -> RequestBuilder,
    {
        self.with_attempts(registry, what, self.opts.attempts, make)
    }

    fn with_attempts<F>(
        &self,
        registry: &str,
        what: &str,
        attempts: u32,
        make: F,
    ) -> Result<Response, RegistryError>
    where
        F: Fn() -> RequestBuilder,
    {
        // Found unreachable by an earlier request: one try, so a registry that came back is
        // used and one still gone costs nothing.
        let attempts = if lock(&self.unreachable).iter().any(|r| r == registry) {
            1
        } else {
            attempts.max(1)
        };
        let retry = |cause, next, wait| Retry {
            registry: registry.to_string(),
            what: what.to_string(),
            cause,
            next,
            attempts,
            wait,
        };
        let mut refused = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= attempts;
            let backoff = self.backoff(attempt);
            match make().send() {
                Ok(resp) => {
                    lock(&self.unreachable).retain(|r| r != registry);
                    let s = resp.status();
                    let transient = s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error();
                    if !transient || last {
                        return Ok(resp);
                    }
                    let wait = retry_after(resp.headers())
                        .unwrap_or(backoff)
                        .min(self.opts.max_backoff * 3);
                    self.retrying(retry(RetryCause::Busy { status: s }, attempt + 1, wait));
                    std::thread::sleep(wait);
                }
                Err(e) => {
                    let nothing = nothing_there(&e);
                    refused = if nothing.is_some() { refused + 1 } else { 0 };
                    let gone = refused >= REFUSED_IN_A_ROW;
                    if gone {
                        tracing::debug!(registry, "nothing answers: no more retries for it");
                        let mut u = lock(&self.unreachable);
                        if !u.iter().any(|r| r == registry) {
                            u.push(registry.to_string());
                        }
                    }
                    let retryable =
                        e.is_connect() || e.is_timeout() || e.is_request() || e.is_body();
                    if last || gone || !retryable {
                        return Err(RegistryError::Connect {
                            registry: registry.to_string(),
                            error: e,
                        });
                    }
                    let reason = nothing
                        .map(str::to_string)
                        .unwrap_or_else(|| short_reason(&e));
                    let cause = if e.is_connect() {
                        RetryCause::Unreachable { reason }
                    } else {
                        RetryCause::Failed { reason }
                    };
                    self.retrying(retry(cause, attempt + 1, backoff));
                    std::thread::sleep(backoff);
                }
            }
        }
    }

    fn credential(&self, registry: &str) -> Option<&Credential> {
        self.opts.credentials.get(registry)
    }

    fn token(
        &self,
        registry: &str,
        repository: &str,
        ep: &Endpoint,
        renew: bool,
    ) -> Result<Option<String>, RegistryError> {
        let scope = format!("repository:{repository}:pull");
        let key = (registry.to_string(), scope.clone());
        let (realm, service) = match &ep.challenge {
            Challenge::Bearer { realm, service } => (realm.clone(), service.clone()),
            Challenge::Basic => return Ok(self.credential(registry).map(basic_header)),
            Challenge::None => return Ok(None),
        };
        if !renew {
            if let Some(t) = lock(&self.tokens).get(&key) {
                return Ok(Some(t.clone()));
            }
        }
        let token_err = |reason: String| RegistryError::Token {
            registry: registry.to_string(),
            reason,
        };
        let mut query: Vec<(&str, &str)> = vec![("scope", &scope)];
        if let Some(s) = &service {
            query.push(("service", s));
        }
        let cred = self.credential(registry);
        let resp = self.with_retries(registry, "a token", || {
            let mut rb = ep.http.get(&realm).query(&query);
            if let Some(c) = cred {
                rb = rb.basic_auth(&c.username, Some(&c.password));
            }
            rb
        })?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(RegistryError::Unauthorized {
                    registry: registry.to_string(),
                    repository: repository.to_string(),
                })
            }
            s => return Err(token_err(format!("{realm} answered {s}"))),
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
        }
        let reply: TokenReply = resp
            .json()
            .map_err(|e| token_err(format!("unreadable reply from {realm}: {e}")))?;
        let token = reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_err(format!("{realm} returned no token")))?;
        let header = format!("Bearer {token}");
        lock(&self.tokens).insert(key, header.clone());
        Ok(Some(header))
    }

    /// GET `path` on the reference's registry (or, for Docker Hub, its mirrors first)
    /// with authentication.
    fn get(
        &self,
        reference: &Reference,
        path: &str,
        what: &str,
        headers: HeaderMap,
    ) -> Result<Response, RegistryError> {
        let registry = reference.registry();
        if registry == crate::reference::DOCKER_HUB {
            for mirror in &self.opts.mirrors {
                if lock(&self.dead_mirrors).contains(mirror) {
                    continue;
                }
                let result = self
                    .mirror_target(mirror)
                    .and_then(|t| self.get_at(&t, reference, path, what, headers.clone()));
                match result {
                    Ok(resp) => return Ok(resp),
                    Err(e) => {
                        if matches!(e, RegistryError::Connect { .. }) {
                            lock(&self.dead_mirrors).push(mirror.clone());
                        }
                        tracing::warn!(mirror = %mirror, what, error = %e, "mirror failed, trying the next source");
                    }
                }
            }
        }
        let target = Target {
            registry: registry.to_string(),
            ep: self.endpoint(registry, reference.registry_api_host())?,
        };
        self.get_at(&target, reference, path, what, headers)
    }

    /// GET `path` at `target` with authentication, renewing a token once on 401.
    fn get_at(
        &self,
        target: &Target,
        reference: &Reference,
        path: &str,
        what: &str,
        headers: HeaderMap,
    ) -> Result<Response, RegistryError> {
        let registry = target.registry.as_str();
        let ep = &target.ep;
        let repository = reference.repository();
        let url = format!("{}/v2/{}/{}", ep.base, repository, path);
        let mut renew = false;
        loop {
            let auth = self.token(registry, repository, ep, renew)?;
            let resp = self.with_retries(registry, what, || {
                let mut rb = ep.http.get(&url).headers(headers.clone());
                if let Some(a) = &auth {
                    rb = rb.header(AUTHORIZATION, a);
                }
                rb
            })?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED
                && !renew
                && matches!(ep.challenge, Challenge::Bearer { .. })
            {
                // The token expired or lacks the scope: one fresh token, then give up.
                renew = true;
                continue;
            }
            return match status {
                s if s.is_success() => Ok(resp),
                StatusCode::UNAUTHORIZED => Err(RegistryError::Unauthorized {
                    registry: registry.to_string(),
                    repository: repository.to_string(),
                }),
                StatusCode::FORBIDDEN => Err(RegistryError::Denied {
                    registry: registry.to_string(),
                    repository: repository.to_string(),
                }),
                StatusCode::NOT_FOUND => Err(RegistryError::NotFound {
                    registry: registry.to_string(),
                    what: what.to_string(),
                }),
                s => Err(RegistryError::Status {
                    registry: registry.to_string(),
                    what: what.to_string(),
                    status: s,
                }),
            };
        }
    }

    /// Fetches a manifest by tag or digest (`which`), reading at most
    /// [`MAX_MANIFEST_SIZE`] bytes, and computes its digest.
    pub fn manifest(
        &self,
        reference: &Reference,
        which: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        self.reading_again(|| self.manifest_once(reference, which))
    }

    /// Runs a whole small download again when its body breaks off (the response's own
    /// retries cover only getting it started).
    fn reading_again<T>(
        &self,
        f: impl Fn() -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f() {
                Err(RegistryError::Read {
                    registry,
                    what,
                    source,
                }) if attempt < self.attempts() => {
                    let wait = self.backoff(attempt);
                    self.retrying(Retry {
                        registry,
                        what,
                        cause: RetryCause::CutOff {
                            reason: source.to_string(),
                        },
                        next: attempt + 1,
                        attempts: self.attempts(),
                        wait,
                    });
                    std::thread::sleep(wait);
                }
                r => return r,
            }
        }
    }

    fn manifest_once(
        &self,
        reference: &Reference,
        which: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            reqwest::header::HeaderValue::from_static(manifest::ACCEPT),
        );
        let what = format!("manifest {}:{}", reference.name(), which);
        let resp = self.get(reference, &format!("manifests/{which}"), &what, headers)?;
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let announced = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<Digest>().ok());
        let mut bytes = Vec::new();
        let mut hr = HashingReader::new(resp.take(MAX_MANIFEST_SIZE + 1));
        hr.read_to_end(&mut bytes)
            .map_err(|source| RegistryError::Read {
                registry: reference.registry().to_string(),
                what: what.clone(),
                source,
            })?;
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(RegistryError::TooLarge {
                registry: reference.registry().to_string(),
                what,
            });
        }
        Ok(FetchedManifest {
            digest: Digest::of(&bytes),
            bytes,
            media_type,
            announced,
        })
    }

    /// Starts downloading a blob, from `offset` when resuming. The caller hashes and
    /// verifies what it reads.
    pub fn blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<Blob, RegistryError> {
        let mut headers = HeaderMap::new();
        if offset > 0 {
            if let Ok(v) = format!("bytes={offset}-").parse() {
                headers.insert(RANGE, v);
            }
        }
        let resp = self.get(
            reference,
            &format!("blobs/{digest}"),
            &format!("blob {digest}"),
            headers,
        )?;
        let offset = if resp.status() == StatusCode::PARTIAL_CONTENT {
            // A body that starts elsewhere than asked would splice wrong bytes in; the
            // digest would catch it, but only after the whole download.
            let start = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(content_range_start);
            if start != Some(offset) {
                return Err(RegistryError::Status {
                    registry: reference.registry().to_string(),
                    what: format!("blob {digest} (a range starting elsewhere than byte {offset})"),
                    status: resp.status(),
                });
            }
            offset
        } else {
            0
        };
        let length = resp.content_length();
        Ok(Blob {
            response: resp,
            offset,
            length,
        })
    }

    /// Fetches a small blob (an image config) whole; the caller verifies it.
    pub fn small_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        self.reading_again(|| {
            let blob = self.blob(reference, digest, 0)?;
            let mut bytes = Vec::new();
            blob.response
                .take(limit + 1)
                .read_to_end(&mut bytes)
                .map_err(|source| RegistryError::Read {
                    registry: reference.registry().to_string(),
                    what: format!("blob {digest}"),
                    source,
                })?;
            if bytes.len() as u64 > limit {
                return Err(RegistryError::TooLarge {
                    registry: reference.registry().to_string(),
                    what: format!("blob {digest}"),
                });
            }
            Ok(bytes)
        })
    }

    /// Checks credentials against a registry (for `slate login`): Ok when the registry
    /// accepts them.
    pub fn check_login(&self, registry: &str) -> Result<(), RegistryError> {
        let api_host = if registry == crate::reference::DOCKER_HUB {
            crate::reference::DOCKER_HUB_API
        } else {
            registry
        };
        let ep = self.endpoint(registry, api_host)?;
        let unauthorized = || RegistryError::Unauthorized {
            registry: registry.to_string(),
            repository: "login".to_string(),
        };
        let cred = self.credential(registry).ok_or_else(unauthorized)?;
        let url = format!("{}/v2/", ep.base);
        let auth = match &ep.challenge {
            Challenge::None => return Ok(()),
            Challenge::Basic => basic_header(cred),
            Challenge::Bearer { realm, service } => {
                let mut query: Vec<(&str, &str)> = Vec::new();
                if let Some(s) = service {
                    query.push(("service", s));
                }
                let resp = self.with_retries(registry, "a token", || {
                    ep.http
                        .get(realm)
                        .query(&query)
                        .basic_auth(&cred.username, Some(&cred.password))
                })?;
                if !resp.status().is_success() {
                    return Err(unauthorized());
                }
                return Ok(());
            }
        };
        let resp = self.with_retries(registry, "the API root", || {
            ep.http.get(&url).header(AUTHORIZATION, &auth)
        })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(unauthorized())
        }
    }
}

/// The errors that say nothing is there at all, as opposed to something slow or broken:
/// the host refused the connection, or the network has no route to it. Walks the source
/// chain to the socket's own error (reqwest and hyper wrap it).
fn nothing_there(e: &reqwest::Error) -> Option<&'static str> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Some("connection refused"),
                std::io::ErrorKind::NetworkUnreachable => return Some("network unreachable"),
                std::io::ErrorKind::HostUnreachable => return Some("host unreachable"),
                _ => {}
            }
        }
        cur = c.source();
    }
    None
}

/// A few words on why a request failed, for a retry line (the full chain is for the final
/// error): `timed out`, or the innermost cause (`Connection reset by peer (os error 104)`).
fn short_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_string();
    }
    let mut inner: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

fn basic_header(c: &Credential) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these maps leaves them consistent (plain inserts), so a
    // poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first byte of `Content-Range: bytes <first>-<last>/<total>`.
fn content_range_start(v: &str) -> Option<u64> {
    let range = v.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn parse_challenge(h: &HeaderMap) -> Challenge {
    for v in h.get_all(WWW_AUTHENTICATE) {
        let Ok(v) = v.to_str() else { continue };
        let (scheme, params) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            let p = parse_params(params);
            if let Some(realm) = p.get("realm") {
                return Challenge::Bearer {
                    realm: realm.clone(),
                    service: p.get("service").cloned(),
                };
            }
        } else if scheme.eq_ignore_ascii_case("basic") {
            return Challenge::Basic;
        }
    }
    Challenge::Basic
}

/// `key="value", key2=value2` as in RFC 7235 auth-params.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = r.char_indices();
            let mut end = r.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &r[end.min(r.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.insert(key, value);
    }
    out
}

/// Adds docker-convention TLS files: `*.crt` CAs, `client.cert` + `client.key`.
fn add_cert_dir(
    mut b: reqwest::blocking::ClientBuilder,
    registry: &str,
    dir: &Path,
) -> Result<reqwest::blocking::ClientBuilder, RegistryError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(_) => return Ok(b),
    };
    let bad = |path: &Path, reason: String| RegistryError::Certs {
        registry: registry.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let mut client_cert = None;
    let mut client_key = None;
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".crt") {
            let pem = std::fs::read(&path).map_err(|e| bad(&path, e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(&path, e.to_string()))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        } else if name.ends_with(".cert") {
            client_cert = Some(path);
        } else if name.ends_with(".key") {
            client_key = Some(path);
        }
    }
    match (client_cert, client_key) {
        (Some(c), Some(k)) => {
            let mut pem = std::fs::read(&c).map_err(|e| bad(&c, e.to_string()))?;
            pem.push(b'\n');
            pem.extend(std::fs::read(&k).map_err(|e| bad(&k, e.to_string()))?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| bad(&c, e.to_string()))?;
            b = b.identity(id);
        }
        (Some(c), None) => {
            return Err(bad(
                &c,
                "client certificate without a client.key".to_string(),
            ))
        }
        (None, Some(k)) => return Err(bad(&k, "client key without a client.cert".to_string())),
        (None, None) => {}
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let mut h = HeaderMap::new();
        h.insert(
            WWW_AUTHENTICATE,
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#
                .parse()
                .unwrap(),
        );
        match parse_challenge(&h) {
            Challenge::Bearer { realm, service } => {
                assert_eq!(realm, "https://auth.docker.io/token");
                assert_eq!(service.as_deref(), Some("registry.docker.io"));
            }
            _ => panic!("expected a bearer challenge"),
        }
    }

    #[test]
    fn parses_params_with_escapes_and_bare_values() {
        let p = parse_params(r#"realm="a\"b", service=svc , scope="x,y""#);
        assert_eq!(p["realm"], "a\"b");
        assert_eq!(p["service"], "svc");
        assert_eq!(p["scope"], "x,y");
    }

    #[test]
    fn basic_challenge() {
        let mut h = HeaderMap::new();
        h.insert(
            WWW_AUTHENTICATE,
            r#"Basic realm="Registry""#.parse().unwrap(),
        );
        assert!(matches!(parse_challenge(&h), Challenge::Basic));
    }

    #[test]
    fn content_range_starts() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
    }

    /// A loopback server that answers every request with `reply`, or accepts and never
    /// answers when `reply` is `None`; returns its `127.0.0.1:port`.
    fn loopback(reply: Option<&'static str>) -> String {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for mut s in l.incoming().flatten() {
                match reply {
                    Some(r) => {
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(r.as_bytes());
                    }
                    None => held.push(s),
                }
            }
        });
        addr
    }

    #[test]
    fn ping_takes_any_http_answer_and_reports_silence() {
        let c = Client::new(ClientOptions::default());
        let t = Duration::from_secs(3);
        let host = loopback(Some(
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ));
        // Loopback: HTTPS first, which this plain server cannot speak, then HTTP.
        let pong = c.ping(&host, false, t).expect("a 401 is an answer");
        assert_eq!(pong.status, StatusCode::UNAUTHORIZED);
        assert_eq!(pong.url, format!("http://{host}/v2/"));
        let pong = c
            .ping(&format!("http://{host}"), true, t)
            .expect("as a mirror");
        assert_eq!(pong.url, format!("http://{host}/v2/"));

        let silent = loopback(None);
        let err = c
            .ping(&silent, false, t)
            .expect_err("a server that never answers");
        assert!(matches!(err, RegistryError::Connect { .. }), "{err}");

        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let err = c.ping(&closed, false, t).expect_err("nothing listens");
        assert!(err.to_string().contains(&closed), "{err}");
    }

    /// A client whose retries are collected, with pauses too short to slow a test.
    fn observed(attempts: u32, stall: Duration) -> (Client, Arc<Mutex<Vec<Retry>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let c = Client::new(ClientOptions {
            attempts,
            max_backoff: Duration::from_millis(1),
            stall_timeout: stall,
            ..ClientOptions::default()
        })
        .on_retry(move |r| lock(&sink).push(r.clone()));
        (c, seen)
    }

    #[test]
    fn a_registry_that_refuses_is_given_up_after_two_refusals() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let (c, seen) = observed(5, Duration::from_secs(5));
        let r: Reference = format!("{closed}/some/image:v1")
            .parse()
            .expect("reference");
        let err = c.manifest(&r, "v1").expect_err("nothing listens");
        assert!(matches!(err, RegistryError::Connect { .. }), "{err}");
        // The HTTPS probe of a loopback registry is one attempt; plain HTTP is retried once,
        // then the second refusal in a row ends it.
        let retries = lock(&seen).clone();
        assert_eq!(retries.len(), 1, "{retries:?}");
        assert_eq!(
            retries[0].cause,
            RetryCause::Unreachable {
                reason: "connection refused".to_string()
            }
        );
        assert_eq!((retries[0].next, retries[0].attempts), (2, 5));
        assert_eq!(
            retries[0].to_string(),
            format!("registry {closed} not reachable (connection refused); retry 2/5 in 0.0 s")
        );
        // Later requests to it are not retried at all.
        c.manifest(&r, "v1").expect_err("still nothing");
        assert_eq!(lock(&seen).len(), 1, "{:?}", lock(&seen));
    }

    /// A loopback server answering every HTTP request with 503 (and closing what is not
    /// HTTP, a TLS hello); returns its address and how many HTTP requests it got.
    fn always_busy() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::Write;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let count = Arc::new(AtomicUsize::new(0));
        let n = count.clone();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let got = s.read(&mut buf).unwrap_or(0);
                if buf[..got].starts_with(b"GET ") {
                    n.fetch_add(1, Ordering::SeqCst);
                    let _ = s.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        });
        (addr, count)
    }

    #[test]
    fn busy_and_silent_registries_keep_the_whole_schedule() {
        let (host, requests) = always_busy();
        let (c, seen) = observed(3, Duration::from_secs(5));
        let r: Reference = format!("{host}/some/image:v1").parse().expect("reference");
        let err = c.manifest(&r, "v1").expect_err("always 503");
        assert!(
            matches!(err, RegistryError::Status { status, .. } if status == StatusCode::SERVICE_UNAVAILABLE),
            "{err}"
        );
        // The API root, then the manifest: three attempts each, two retries each.
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 6);
        let retries = lock(&seen).clone();
        assert_eq!(retries.len(), 4, "{retries:?}");
        assert!(retries.iter().all(|r| r.cause
            == RetryCause::Busy {
                status: StatusCode::SERVICE_UNAVAILABLE
            }));

        // Accepts and never answers: every attempt times out, and each is retried.
        let silent = loopback(None);
        let (c, seen) = observed(3, Duration::from_millis(200));
        let r: Reference = format!("{silent}/some/image:v1")
            .parse()
            .expect("reference");
        c.manifest(&r, "v1").expect_err("silence");
        let retries = lock(&seen).clone();
        assert_eq!(retries.len(), 2, "{retries:?}");
        assert!(
            retries.iter().all(
                |r| matches!(&r.cause, RetryCause::Failed { reason } if reason == "timed out")
            ),
            "{retries:?}"
        );
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }
}
