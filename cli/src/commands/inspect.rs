//! `slate inspect`: a container's record, with the spec it runs under, as JSON.

use anyhow::Context;

use crate::config::Settings;
use crate::containers;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Container names or ids (prefixes)
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// The seccomp confinement the container runs under: the profile in its spec, which is all the
/// runtime installs, and where it came from.
fn seccomp_in_force(rec: &crate::state::Record, spec: &serde_json::Value) -> serde_json::Value {
    let source = match rec.seccomp_source.as_deref() {
        Some("default") => "docker's default profile, for the container's capabilities",
        Some("unconfined") => "none (unconfined)",
        Some(file) => file,
        None => "unknown (started by an older slate)",
    };
    match spec.pointer("/linux/seccomp").filter(|p| !p.is_null()) {
        Some(profile) => serde_json::json!({ "source": source, "profile": profile }),
        None => serde_json::json!({ "source": source, "profile": null }),
    }
}

pub fn run(settings: &Settings, args: InspectArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let mut out = Vec::new();
    for key in &args.containers {
        let rec = sd.find(key)?;
        let mut v = serde_json::to_value(&rec).context("cannot serialise a record")?;
        let spec_path = sd.config_path(&rec.id);
        if let Some(bytes) = spec_path.ok().and_then(|p| std::fs::read(p).ok()) {
            if let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                v["seccomp"] = seccomp_in_force(&rec, &spec);
                v["spec"] = spec;
            }
        }
        if let Some(a) = crate::network::load_attachment(&sd, &rec.id) {
            v["network_settings"] = serde_json::json!({
                "network": a.network,
                "ip": a.ip,
                "mac": a.mac,
                "ports": a.ports,
                "netns": a.netns,
            });
        }
        v["paused"] = serde_json::json!(crate::commands::lifecycle::is_paused(&sd, &rec.id));
        if let Some(h) = crate::health::Health::load(&sd, &rec.id) {
            v["health"] = serde_json::to_value(&h).context("cannot serialise the health state")?;
        }
        out.push(v);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}
