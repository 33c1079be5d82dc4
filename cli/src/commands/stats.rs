//! `slate stats` and `slate top`: what a container uses, from its cgroup's own files (the
//! figures the kernel enforces its limits with), and its processes, from /proc.
//!
//! CPU % is the CPU time the cgroup used over the wall time between two readings, as a
//! percentage of one CPU (docker's figure: 200% is two CPUs busy). A limit the container
//! does not have shows the host's total memory, as docker shows it.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;
use slate_runtime::cgroups::{Cgroup, Stats};

use crate::cli::Format;
use crate::config::Settings;
use crate::containers;
use crate::output::table;
use crate::state::{Record, StateDir};

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Print one reading and exit
    #[arg(long)]
    pub no_stream: bool,
    /// Show all containers (by default only running ones)
    #[arg(short, long)]
    pub all: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Container names or ids (all running ones if none)
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    pub container: String,
}

/// One container's line of `stats`.
#[derive(Debug, Serialize)]
struct Line {
    id: String,
    name: String,
    cpu_percent: f64,
    memory_usage: u64,
    /// The container's limit, or the host's memory when it has none.
    memory_limit: u64,
    memory_limited: bool,
    memory_percent: f64,
    pids: u64,
    /// The cgroup's figures as read.
    cgroup: Stats,
}

/// Between two readings: enough for a stable CPU figure, short enough for a prompt reply.
const SAMPLE: Duration = Duration::from_millis(500);

pub fn stats(settings: &Settings, args: StatsArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let host_mem = host_memory();
    let mut prev: Vec<(String, Stats, Instant)> = Vec::new();
    let mut first = true;
    loop {
        let recs = chosen(&sd, &args)?;
        let now_read: Vec<(Record, Option<Stats>, Instant)> = recs
            .into_iter()
            .map(|r| {
                let s = cgroup_of(&r).map(|c| c.stats());
                (r, s, Instant::now())
            })
            .collect();
        if first {
            // A CPU percentage needs two readings.
            prev = now_read
                .iter()
                .filter_map(|(r, s, t)| s.clone().map(|s| (r.id.clone(), s, *t)))
                .collect();
            first = false;
            std::thread::sleep(SAMPLE);
            continue;
        }
        let mut lines = Vec::new();
        for (r, s, t) in &now_read {
            let s = s.clone().unwrap_or_default();
            let cpu = prev
                .iter()
                .find(|(id, _, _)| id == &r.id)
                .map(|(_, p, pt)| {
                    let wall = t.duration_since(*pt).as_nanos() as f64;
                    let used = s.cpu_usage_ns.saturating_sub(p.cpu_usage_ns) as f64;
                    if wall > 0.0 {
                        used / wall * 100.0
                    } else {
                        0.0
                    }
                })
                .unwrap_or(0.0);
            let limit = s.memory_limit.unwrap_or(host_mem).min(host_mem.max(1));
            lines.push(Line {
                id: r.short_id().to_string(),
                name: r.name.clone(),
                cpu_percent: (cpu * 100.0).round() / 100.0,
                memory_usage: s.memory_usage,
                memory_limit: limit,
                memory_limited: s.memory_limit.is_some(),
                memory_percent: if limit > 0 {
                    ((s.memory_usage as f64 / limit as f64) * 10000.0).round() / 100.0
                } else {
                    0.0
                },
                pids: s.pids,
                cgroup: s,
            });
        }
        print_lines(&lines, args.format, !args.no_stream)?;
        if args.no_stream {
            return Ok(0);
        }
        prev = now_read
            .iter()
            .filter_map(|(r, s, t)| s.clone().map(|s| (r.id.clone(), s, *t)))
            .collect();
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn chosen(sd: &StateDir, args: &StatsArgs) -> anyhow::Result<Vec<Record>> {
    if args.containers.is_empty() {
        let mut all = sd.list()?;
        if !args.all {
            all.retain(|r| r.is_active());
        }
        return Ok(all);
    }
    args.containers.iter().map(|k| sd.find(k)).collect()
}

fn cgroup_of(r: &Record) -> Option<Cgroup> {
    if !r.is_active() {
        return None;
    }
    Cgroup::open_recorded(&r.id, r.cgroups_path.as_deref(), &r.cgroup_paths).ok()
}

fn print_lines(lines: &[Line], format: Format, streaming: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        writeln!(out, "{}", serde_json::to_string(lines)?)?;
        return Ok(out.flush()?);
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            vec![
                l.id.clone(),
                l.name.clone(),
                format!("{:.2}%", l.cpu_percent),
                format!("{} / {}", iec(l.memory_usage), iec(l.memory_limit)),
                format!("{:.2}%", l.memory_percent),
                l.pids.to_string(),
            ]
        })
        .collect();
    if streaming && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        // docker redraws in place on a terminal.
        write!(out, "\x1b[2J\x1b[H")?;
    }
    write!(
        out,
        "{}",
        table(
            &[
                "CONTAINER ID",
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "PIDS"
            ],
            &rows
        )
    )?;
    Ok(out.flush()?)
}

/// docker's binary units: `12.5MiB`.
fn iec(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// MemTotal, in bytes.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                let kb = l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?;
                kb.trim().parse::<u64>().ok()
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// `slate top`: the container's processes (every process of its cgroup), as `ps -ef` would
/// list them on the host.
pub fn top(settings: &Settings, args: TopArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let rec = sd.find(&args.container)?;
    let Some(cg) = cgroup_of(&rec).filter(|_| rec.container_alive()) else {
        bail!("container {} is not running", rec.name);
    };
    let mut pids: Vec<i32> = cg
        .pids()
        .with_context(|| format!("cannot list the processes of {}", rec.name))?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    pids.sort_unstable();
    let tps = procfs::ticks_per_second();
    let boot = procfs::boot_time_secs().unwrap_or(0);
    let mut rows = Vec::new();
    for pid in pids {
        // A process may exit between the listing and the read: skip it.
        let Ok(p) = procfs::process::Process::new(pid) else {
            continue;
        };
        let Ok(stat) = p.stat() else { continue };
        let uid = p.uid().unwrap_or(0);
        let cmd = match p.cmdline() {
            Ok(c) if !c.is_empty() => c.join(" "),
            _ => format!("[{}]", stat.comm),
        };
        let cpu = (stat.utime + stat.stime) / tps.max(1);
        let started = boot + stat.starttime / tps.max(1);
        rows.push(vec![
            uid.to_string(),
            pid.to_string(),
            stat.ppid.to_string(),
            crate::state::rfc3339(started as i64, 0)
                .get(11..19)
                .unwrap_or("")
                .to_string(),
            format!("{:02}:{:02}:{:02}", cpu / 3600, cpu / 60 % 60, cpu % 60),
            cmd,
        ]);
    }
    print!(
        "{}",
        table(&["UID", "PID", "PPID", "STIME", "TIME", "CMD"], &rows)
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iec_units() {
        assert_eq!(iec(512), "512B");
        assert_eq!(iec(1536), "1.5KiB");
        assert_eq!(iec(64 << 20), "64.0MiB");
    }
}
