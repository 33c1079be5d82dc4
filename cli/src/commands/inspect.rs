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

pub fn run(settings: &Settings, args: InspectArgs) -> anyhow::Result<u8> {
    let sd = containers::open_swept(settings)?;
    let mut out = Vec::new();
    for key in &args.containers {
        let rec = sd.find(key)?;
        let mut v = serde_json::to_value(&rec).context("cannot serialise a record")?;
        let spec_path = sd.dir(&rec.id).join("spec.json");
        if let Ok(bytes) = std::fs::read(&spec_path) {
            if let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&bytes) {
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
