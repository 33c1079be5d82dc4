//! Health checks, as docker runs them: a command run inside the container every
//! `--health-interval`, given `--health-timeout`; `--health-retries` failures in a row make the
//! container unhealthy, one success healthy; failures during `--health-start-period` do not
//! count. The image's `Healthcheck` is the default, each flag overrides its field, and
//! `--no-healthcheck` turns it off.
//!
//! Who runs them: `slate healthcheck ID` (hidden), a small process of its own started next to
//! the container (by `run -d` once the supervisor reports the app running, and by a foreground
//! `run` once its container runs). Not the supervisor: it is single-threaded and clones
//! containers on restarts, and a probe that hangs must not hold up its relay. Each probe is a
//! `slate exec`, so it enters the container exactly as a user's exec does. The monitor follows
//! the record: a restarted container (new PID) starts over as `starting`, and the monitor ends
//! when the record is gone or no longer active.
//!
//! The state is `<state_dir>/<id>/health.json` ([`Health`]): `ps` shows it beside the status,
//! `inspect` in full, and `slate auto-update` waits for `healthy` before it counts an update
//! as good.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::RunArgs;
use crate::state::{Record, StateDir};

/// docker's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 3;

/// The file beside the record.
pub const HEALTH_FILE: &str = "health.json";

/// Probe results kept in `health.json`, as docker keeps five.
const LOG_ENTRIES: usize = 5;
/// Bytes of a probe's output kept.
const OUTPUT_MAX: usize = 4096;

/// What to run and when (in the container's record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// The command, as `slate exec` runs it (`/bin/sh -c CMD` for docker's CMD-SHELL).
    pub test: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

impl HealthCheck {
    /// How long a container may take to become healthy at the most: the start period, then
    /// enough probes to fail `retries` times.
    pub fn patience(&self) -> Duration {
        Duration::from_millis(
            self.start_period_ms
                + (self.interval_ms + self.timeout_ms) * (u64::from(self.retries) + 1),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Starting,
    Healthy,
    Unhealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// One probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub start: String,
    pub end: String,
    /// The command's exit code; -1 when it timed out or could not run.
    pub exit_code: i32,
    pub output: String,
}

/// `health.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub status: Status,
    pub failing_streak: u32,
    /// The container process the status is about (a restart starts over).
    pub pid: Option<i32>,
    pub log: Vec<Probe>,
}

impl Health {
    /// A container (process `pid`) that no probe has judged yet.
    fn starting(pid: Option<i32>) -> Health {
        Health {
            status: Status::Starting,
            failing_streak: 0,
            pid,
            log: Vec::new(),
        }
    }

    pub fn load(sd: &StateDir, id: &str) -> Option<Health> {
        let bytes = std::fs::read(sd.dir(id).join(HEALTH_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn save(&self, sd: &StateDir, id: &str) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).context("cannot encode the health state")?;
        crate::state::write_atomic(&sd.dir(id).join(HEALTH_FILE), &bytes)
    }

    /// The last probe's outcome, for messages: one line, its control characters (the
    /// container wrote them: terminal escapes) shown as `?`.
    pub fn last_words(&self) -> String {
        match self.log.last() {
            Some(p) if p.output.trim().is_empty() => format!("exit {}", p.exit_code),
            Some(p) => {
                let text: String = p
                    .output
                    .trim()
                    .chars()
                    .take(200)
                    .map(|c| match c {
                        '\n' | '\t' => ' ',
                        c if c.is_control() => '?',
                        c => c,
                    })
                    .collect();
                format!("exit {}: {text}", p.exit_code)
            }
            None => "no probe yet".to_owned(),
        }
    }
}

/// Go's duration syntax, as docker takes it (`30s`, `1m30s`, `500ms`, `2h`); a bare number is
/// seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    if rest.is_empty() {
        bail!("empty duration");
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| anyhow!("invalid duration {s:?}: a unit is missing (s, m, h, ms)"))?;
        let (num, tail) = rest.split_at(num_end);
        let n: f64 = num
            .parse()
            .map_err(|_| anyhow!("invalid duration {s:?}: expected a number before the unit"))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => bail!("invalid duration {s:?}: unknown unit {unit:?} (ns, us, ms, s, m, h)"),
        };
        total += Duration::from_secs_f64(n * scale);
        rest = next;
    }
    Ok(total)
}

/// The container's health check: the image's, with the flags over it. None without one.
pub fn resolve(args: &RunArgs, image_config: &Value) -> anyhow::Result<Option<HealthCheck>> {
    let image = image_config
        .get("config")
        .and_then(|c| c.get("Healthcheck"))
        .filter(|h| h.is_object());
    if args.no_healthcheck {
        if args.health_cmd.is_some() {
            bail!("--no-healthcheck and --health-cmd contradict each other: give one");
        }
        return Ok(None);
    }
    let image_test: Option<Vec<String>> = image
        .and_then(|h| h.get("Test"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        });
    let test = match (&args.health_cmd, image_test) {
        (Some(cmd), _) => vec!["/bin/sh".to_owned(), "-c".to_owned(), cmd.clone()],
        (None, Some(t)) => match t.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
            Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
                vec!["/bin/sh".to_owned(), "-c".to_owned(), rest.join(" ")]
            }
            // NONE, an empty test, or one slate cannot read: no check, as docker.
            _ => return Ok(None),
        },
        (None, None) => return Ok(None),
    };
    // The image's times are Go durations in nanoseconds; 0 means the default.
    let image_ns = |field: &str| {
        image
            .and_then(|h| h.get(field))
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
            .map(Duration::from_nanos)
    };
    let flag = |v: &Option<String>, name: &str| -> anyhow::Result<Option<Duration>> {
        v.as_deref()
            .map(|s| parse_duration(s).with_context(|| format!("invalid --{name} {s:?}")))
            .transpose()
    };
    let interval = flag(&args.health_interval, "health-interval")?
        .or_else(|| image_ns("Interval"))
        .unwrap_or(DEFAULT_INTERVAL);
    let timeout = flag(&args.health_timeout, "health-timeout")?
        .or_else(|| image_ns("Timeout"))
        .unwrap_or(DEFAULT_TIMEOUT);
    let start_period = flag(&args.health_start_period, "health-start-period")?
        .or_else(|| image_ns("StartPeriod"))
        .unwrap_or(Duration::ZERO);
    if interval < Duration::from_millis(100) || timeout < Duration::from_millis(100) {
        bail!("--health-interval and --health-timeout must be at least 100ms");
    }
    let retries = args
        .health_retries
        .or_else(|| {
            image
                .and_then(|h| h.get("Retries"))
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
        })
        .unwrap_or(DEFAULT_RETRIES)
        .max(1);
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Ok(Some(HealthCheck {
        test,
        interval_ms: ms(interval),
        timeout_ms: ms(timeout),
        retries,
        start_period_ms: ms(start_period),
    }))
}

/// Starts `slate healthcheck ID` for a container that has a check: in a session of its own,
/// with nothing of ours (it outlives a `run -d`).
pub fn spawn_monitor(root: &Path, sd: &StateDir, rec: &Record) {
    if rec.healthcheck.is_none() {
        return;
    }
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("--root")
        .arg(root)
        .arg("--state-dir")
        .arg(sd.root());
    if let Some(c) = &rec.config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("healthcheck")
        .arg(&rec.id)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    // SAFETY: setsid(2) and close_range(2) in the forked child before exec: plain syscalls,
    // async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            // Nothing of the caller's (a unit's socket-activation descriptors, passed with
            // --preserve-fds, must not stay open in a process that lives as long as the
            // container). Kernels before 5.9 lack close_range: the descriptors then stay.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    match cmd.spawn() {
        // Not waited for: init reaps it once we are gone.
        Ok(child) => drop(child),
        Err(e) => {
            tracing::warn!(container = %rec.name, error = %e, "cannot start the health check")
        }
    }
}

/// `slate healthcheck ID`: probes until the container is gone.
pub fn monitor(settings: &crate::config::Settings, id: &str) -> anyhow::Result<u8> {
    let sd = StateDir::open(&settings.state_dir)?;
    let rec = sd.load(id)?;
    let Some(check) = rec.healthcheck.clone() else {
        return Ok(0);
    };
    let interval = Duration::from_millis(check.interval_ms);
    let mut health = Health::starting(rec.pid);
    let mut started = Instant::now();
    health.save(&sd, id)?;
    loop {
        std::thread::sleep(interval);
        let Ok(rec) = sd.load(id) else {
            return Ok(0);
        };
        if !rec.is_active() {
            return Ok(0);
        }
        if rec.pid != health.pid {
            // Restarted (or not running yet): its health starts over.
            health = Health::starting(rec.pid);
            started = Instant::now();
            health.save(&sd, id)?;
            continue;
        }
        // A paused container cannot answer (docker pauses its checks too).
        if !rec.container_alive() || crate::commands::lifecycle::is_paused(&sd, id) {
            continue;
        }
        let probe = run_probe(settings, &sd, &rec, &check);
        let ok = probe.exit_code == 0;
        health.log.push(probe);
        if health.log.len() > LOG_ENTRIES {
            health.log.remove(0);
        }
        let in_start_period = started.elapsed() < Duration::from_millis(check.start_period_ms);
        if ok {
            health.failing_streak = 0;
            health.status = Status::Healthy;
        } else if !in_start_period || health.status == Status::Healthy {
            health.failing_streak += 1;
            if health.failing_streak >= check.retries {
                health.status = Status::Unhealthy;
            }
        }
        // A record removed meanwhile took its directory: nothing more to say.
        if health.save(&sd, id).is_err() {
            return Ok(0);
        }
    }
}

/// One probe: `slate exec ID TEST...`, killed after the timeout.
fn run_probe(
    settings: &crate::config::Settings,
    sd: &StateDir,
    rec: &Record,
    check: &HealthCheck,
) -> Probe {
    let start = crate::state::now_rfc3339();
    let out_path = sd.dir(&rec.id).join("health.out");
    let result = (|| -> anyhow::Result<(i32, String)> {
        let out = std::fs::File::create(&out_path)
            .with_context(|| format!("cannot create {}", out_path.display()))?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("--root")
            .arg(&rec.store_root)
            .arg("--state-dir")
            .arg(sd.root());
        if let Some(c) = &settings.config_path {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd
            .arg("exec")
            .arg(&rec.id)
            .args(&check.test)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(out.try_clone().context("cannot duplicate a descriptor")?)
            .stderr(out)
            .spawn()
            .context("cannot run slate exec")?;
        let deadline = Instant::now() + Duration::from_millis(check.timeout_ms);
        let code = loop {
            if let Some(status) = child.try_wait().context("cannot wait for the probe")? {
                break status.code().unwrap_or(-1);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok((
                    -1,
                    format!(
                        "health check timed out after {:?}",
                        Duration::from_millis(check.timeout_ms)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut text = Vec::new();
        std::fs::File::open(&out_path)
            .and_then(|f| f.take(OUTPUT_MAX as u64).read_to_end(&mut text))
            .with_context(|| format!("cannot read {}", out_path.display()))?;
        Ok((code, String::from_utf8_lossy(&text).into_owned()))
    })();
    let _ = std::fs::remove_file(&out_path);
    let (exit_code, output) = result.unwrap_or_else(|e| (-1, format!("{e:#}")));
    Probe {
        start,
        end: crate::state::now_rfc3339(),
        exit_code,
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("2h"), Duration::from_secs(7200));
        assert_eq!(d("7"), Duration::from_secs(7));
        for bad in ["", "s", "5x", "1m5", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    fn args(flags: &[&str]) -> RunArgs {
        use clap::Parser as _;
        let mut argv = vec!["slate", "run"];
        argv.extend(flags);
        argv.push("img");
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Run(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_image_check_with_the_flags_over_it() {
        let image = serde_json::json!({"config": {"Healthcheck": {
            "Test": ["CMD-SHELL", "wget -q -O- localhost"],
            "Interval": 5_000_000_000u64, "Retries": 2}}});
        let c = resolve(&args(&[]), &image).unwrap().unwrap();
        assert_eq!(c.test, ["/bin/sh", "-c", "wget -q -O- localhost"]);
        assert_eq!((c.interval_ms, c.timeout_ms, c.retries), (5000, 30_000, 2));
        let c = resolve(
            &args(&[
                "--health-cmd",
                "true",
                "--health-interval",
                "1s",
                "--health-retries",
                "4",
            ]),
            &image,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.test, ["/bin/sh", "-c", "true"]);
        assert_eq!((c.interval_ms, c.retries), (1000, 4));
        assert_eq!(resolve(&args(&["--no-healthcheck"]), &image).unwrap(), None);
        assert!(resolve(&args(&["--no-healthcheck", "--health-cmd", "true"]), &image).is_err());
        let exec_form =
            serde_json::json!({"config": {"Healthcheck": {"Test": ["CMD", "/bin/check", "-q"]}}});
        assert_eq!(
            resolve(&args(&[]), &exec_form).unwrap().unwrap().test,
            ["/bin/check", "-q"]
        );
        let none = serde_json::json!({"config": {"Healthcheck": {"Test": ["NONE"]}}});
        assert_eq!(resolve(&args(&[]), &none).unwrap(), None);
        assert_eq!(resolve(&args(&[]), &serde_json::json!({})).unwrap(), None);
        assert!(resolve(
            &args(&["--health-cmd", "x", "--health-interval", "5x"]),
            &none
        )
        .is_err());
    }
}
