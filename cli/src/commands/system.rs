//! `slate system df`: what the store uses on disk, by kind.

use anyhow::Context;
use serde_json::json;

use crate::cli::{DfArgs, Format};
use crate::config::Settings;
use crate::output::{human_size, table};

pub fn df(settings: &Settings, args: DfArgs) -> anyhow::Result<u8> {
    let store = super::open_store(settings)?;
    let u = store.usage().context("cannot measure the store")?;
    let budget = store.policy().max_size;
    let total = u.layers + u.blobs + u.tmp;
    match args.format {
        Format::Json => {
            let v = json!({
                "root": store.root().display().to_string(),
                "images": u.images,
                "layers": { "count": u.layer_count, "bytes": u.layers, "reclaimable": u.unreferenced_layers },
                "blobs": { "bytes": u.blobs },
                "tmp": { "bytes": u.tmp },
                "total": total,
                "max_store_size": budget,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let rows = vec![
                vec![
                    "Images".to_string(),
                    u.images.to_string(),
                    String::new(),
                    String::new(),
                ],
                vec![
                    "Layers".to_string(),
                    u.layer_count.to_string(),
                    human_size(u.layers),
                    human_size(u.unreferenced_layers),
                ],
                vec![
                    "Blobs".to_string(),
                    String::new(),
                    human_size(u.blobs),
                    String::new(),
                ],
                vec![
                    "Tmp".to_string(),
                    String::new(),
                    human_size(u.tmp),
                    human_size(u.tmp),
                ],
                vec![
                    "Total".to_string(),
                    String::new(),
                    human_size(total),
                    budget
                        .map(|b| format!("(budget {})", human_size(b)))
                        .unwrap_or_default(),
                ],
            ];
            print!(
                "{}",
                table(&["TYPE", "COUNT", "SIZE", "RECLAIMABLE"], &rows)
            );
        }
    }
    Ok(0)
}

/// `slate container prune`: removes every stopped container (record and logs); returns the
/// bytes of logs freed.
pub fn container_prune(settings: &Settings) -> anyhow::Result<u64> {
    let sd = crate::containers::open_swept(settings)?;
    let _lock = sd.lock()?;
    let mut freed = 0;
    for rec in sd.list()? {
        if rec.is_active() {
            continue;
        }
        freed += slate_image::store::disk_usage(&rec.log_dir);
        crate::containers::remove_files(&sd, &rec);
        println!("Deleted container {}", rec.short_id());
    }
    Ok(freed)
}

#[derive(Debug, clap::Args)]
pub struct SystemPruneArgs {
    /// Also remove every image no container uses (not only unused layers)
    #[arg(short, long)]
    pub all: bool,
    /// Also remove volumes no container uses
    #[arg(long)]
    pub volumes: bool,
    /// Do not ask (slate never asks: accepted for docker's command lines)
    #[arg(short, long)]
    pub force: bool,
}

/// `slate system prune`: stopped containers, unused networks, unused layers (and with `-a`
/// images), and with `--volumes` unused volumes, in that order (each frees what the next
/// may then remove).
pub fn prune(settings: &Settings, args: SystemPruneArgs) -> anyhow::Result<u8> {
    let mut freed = container_prune(settings)?;
    let sd = crate::containers::open_swept(settings)?;
    let used: Vec<String> = crate::network::all_attachments(&sd)
        .into_iter()
        .map(|a| a.network)
        .collect();
    for n in crate::network::defs::list(settings)? {
        if n.name != crate::network::defs::DEFAULT && !used.contains(&n.name) {
            crate::network::defs::remove(settings, &n.name)?;
            println!("Deleted network {}", n.name);
        }
    }
    if args.volumes {
        freed += super::volume::prune(settings)?;
    }
    let store = super::open_store(settings)?;
    let removed = store.prune(args.all).context("cannot prune the store")?;
    for name in &removed.images {
        println!("Deleted image {name}");
    }
    if removed.layers > 0 {
        println!("Deleted {} unused layer(s)", removed.layers);
    }
    freed += removed.bytes;
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(0)
}

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// `slate info`: this host and this slate, as a script or a bug report wants them.
pub fn info(settings: &Settings, args: InfoArgs) -> anyhow::Result<u8> {
    let uts = nix::sys::utsname::uname().context("uname failed")?;
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    let cgroups = slate_runtime::cgroups::report().ok();
    let mode = match cgroups.as_ref().map(|r| r.mode) {
        Some(slate_runtime::cgroups::Mode::Unified) => "v2",
        Some(slate_runtime::cgroups::Mode::Hybrid) => "hybrid (v1 controllers, v2 mounted)",
        Some(slate_runtime::cgroups::Mode::Legacy) => "v1",
        None => "unknown",
    };
    let controllers: Vec<&str> = cgroups
        .iter()
        .flat_map(|r| r.controllers.iter())
        .filter(|c| {
            matches!(
                c.availability,
                slate_runtime::cgroups::Availability::Available(_)
            )
        })
        .map(|c| c.name)
        .collect();
    let sd = crate::containers::open_swept(settings)?;
    let recs = sd.list()?;
    let running = recs.iter().filter(|r| r.is_active()).count();
    let paused = recs
        .iter()
        .filter(|r| super::lifecycle::is_paused(&sd, &r.id))
        .count();
    let store = super::open_store(settings)?;
    let images = store.images().map(|i| i.len()).unwrap_or(0);
    let cni = crate::network::defs::plugin_dirs(settings)
        .iter()
        .any(|d| d.join("bridge").is_file());
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    let v = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "host": {
            "os": os,
            "kernel": uts.release().to_string_lossy(),
            "arch": uts.machine().to_string_lossy(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "memory": mem_total,
            "systemd_unit": slate_runtime::cgroups::systemd_unit(),
        },
        "cgroups": { "version": mode, "controllers": controllers },
        "store": {
            "root": store.root(),
            "images": images,
            "bytes": store.size(),
            "volumes": crate::volumes::list(&crate::volumes::volumes_dir(&settings.root)).map(|v| v.len()).unwrap_or(0),
        },
        "containers": {
            "state_dir": sd.root(),
            "total": recs.len(),
            "running": running - paused,
            "paused": paused,
            "stopped": recs.len() - running,
        },
        "runtime": {
            "name": "slate (built in, no daemon)",
            "seccomp": "docker's default profile, every ABI of the kernel",
            "no_new_privileges_default": settings.file.security.no_new_privileges,
            "networks": if cni { "host, none, bridge, user networks (CNI)" } else { "host, none (no CNI plugins)" },
            "config": settings.config_path,
        },
    });
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let mut out = String::new();
    let line = |out: &mut String, k: &str, val: String| out.push_str(&format!(" {k}: {val}\n"));
    out.push_str(&format!("slate {}\n", env!("CARGO_PKG_VERSION")));
    out.push_str("Host:\n");
    line(&mut out, "OS", os);
    line(
        &mut out,
        "Kernel",
        uts.release().to_string_lossy().into_owned(),
    );
    line(
        &mut out,
        "Architecture",
        uts.machine().to_string_lossy().into_owned(),
    );
    line(&mut out, "CPUs", v["host"]["cpus"].to_string());
    line(&mut out, "Total memory", human_size(mem_total));
    out.push_str("Cgroups:\n");
    line(&mut out, "Version", mode.to_string());
    line(&mut out, "Controllers", controllers.join(" "));
    out.push_str("Store:\n");
    line(&mut out, "Root", store.root().display().to_string());
    line(&mut out, "Images", images.to_string());
    line(&mut out, "Size", human_size(store.size()));
    out.push_str("Containers:\n");
    line(&mut out, "State dir", sd.root().display().to_string());
    line(
        &mut out,
        "Total",
        format!(
            "{} ({} running, {paused} paused, {} stopped)",
            recs.len(),
            running - paused,
            recs.len() - running
        ),
    );
    out.push_str("Runtime:\n");
    line(&mut out, "Seccomp", "docker's default profile".into());
    line(
        &mut out,
        "no_new_privileges by default",
        settings.file.security.no_new_privileges.to_string(),
    );
    line(
        &mut out,
        "Networks",
        v["runtime"]["networks"].as_str().unwrap_or("").to_string(),
    );
    print!("{out}");
    Ok(0)
}

#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// `slate version`: one binary is client, engine and runtime at once.
pub fn version(args: VersionArgs) -> anyhow::Result<u8> {
    let v = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "oci_runtime_spec": "1.0.2",
        "engine": "none (daemonless)",
    });
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("slate {}", env!("CARGO_PKG_VERSION"));
        println!(
            " OS/Arch:          {}/{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        );
        println!(" OCI runtime spec: 1.0.2");
        println!(" Engine:           none: slate is daemonless, one supervisor per container");
    }
    Ok(0)
}
