//! The registries: Docker Hub and every registry the configuration names (its mirrors and
//! insecure registries), each asked `GET /v2/` once per transport with a short timeout, all
//! at once, so that a board with no network answers within a few seconds. Unreachable is a
//! WARN: an air-gapped board that gets its images with `slate load` is fine.

use std::time::{Duration, Instant};

use slate_image::registry::{Client, Pong};

use super::Check;
use crate::config::Settings;

/// Per transport: an insecure registry gets an HTTPS then an HTTP try.
const TIMEOUT: Duration = Duration::from_secs(3);

/// A registry to ask: how the configuration names it, and whether it is a mirror URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    name: String,
    mirror: bool,
}

fn targets(settings: &Settings) -> Vec<Target> {
    let r = &settings.file.registries;
    let mut out: Vec<Target> = r
        .mirrors
        .iter()
        .map(|m| Target {
            name: m.clone(),
            mirror: true,
        })
        .collect();
    out.push(Target {
        name: slate_image::reference::DOCKER_HUB.to_owned(),
        mirror: false,
    });
    for i in &r.insecure {
        if !out.iter().any(|t| !t.mirror && &t.name == i) {
            out.push(Target {
                name: i.clone(),
                mirror: false,
            });
        }
    }
    out
}

pub fn checks(settings: &Settings) -> Vec<Check> {
    let opts = match settings.client_options() {
        Ok(o) => o,
        Err(e) => {
            return vec![Check::fail(
                "registries",
                format!("{e:#}"),
                "fix or remove the credentials file named above",
            )]
        }
    };
    let client = Client::new(opts);
    let targets = targets(settings);
    let results: Vec<(Result<Pong, String>, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|t| {
                let client = &client;
                s.spawn(move || {
                    let start = Instant::now();
                    let r = client
                        .ping(&t.name, t.mirror, TIMEOUT)
                        .map_err(|e| e.to_string());
                    (r, start.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (Err("the check panicked".to_owned()), Duration::ZERO))
            })
            .collect()
    });
    targets
        .iter()
        .zip(results)
        .map(|(t, (r, took))| verdict(t, r, took))
        .collect()
}

fn verdict(t: &Target, r: Result<Pong, String>, took: Duration) -> Check {
    let name = format!("registry:{}", t.name);
    let what = if t.mirror { "mirror" } else { "registry" };
    match r {
        Ok(p) => Check::ok(
            name,
            format!(
                "{what} answers: {} said {} in {} ms",
                p.url,
                p.status,
                took.as_millis()
            ),
        ),
        Err(e) => Check::warn(
            name,
            format!("{e} (gave up after {} ms)", took.as_millis()),
            "check the network, DNS and any proxy for it; an air-gapped board gets images \
             with `slate load` instead (then `slate doctor --offline` skips this check)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    #[test]
    fn docker_hub_and_every_configured_registry_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[registries]\nmirrors = [\"https://mirror.example\"]\n\
             insecure = [\"10.0.0.5:5000\", \"docker.io\", \"10.0.0.5:5000\"]\n",
        )
        .unwrap();
        let s = Settings::load(None, Some(&p)).unwrap();
        let names: Vec<_> = targets(&s)
            .into_iter()
            .map(|t| (t.name, t.mirror))
            .collect();
        assert_eq!(
            names,
            vec![
                ("https://mirror.example".to_owned(), true),
                ("docker.io".to_owned(), false),
                ("10.0.0.5:5000".to_owned(), false),
            ]
        );
    }

    #[test]
    fn unreachable_is_a_warning() {
        let t = Target {
            name: "docker.io".to_owned(),
            mirror: false,
        };
        let c = verdict(
            &t,
            Err("cannot reach registry docker.io: dns".to_owned()),
            Duration::from_millis(5),
        );
        assert_eq!(c.name, "registry:docker.io");
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.unwrap().contains("slate load"));
    }
}
