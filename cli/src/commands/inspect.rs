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

/// The seccomp confinement the container runs under, as a profile: the default one is
/// compiled once per capability set and cached as BPF, so the spec does not carry it; it is
/// resolved again here, as the start resolved it.
fn seccomp_in_force(rec: &crate::state::Record, spec: &serde_json::Value) -> serde_json::Value {
    if let Some(profile) = spec.pointer("/linux/seccomp").filter(|p| !p.is_null()) {
        return serde_json::json!({ "source": "--security-opt seccomp=FILE", "profile": profile });
    }
    if !rec.seccomp_file {
        return serde_json::json!({ "source": "none (unconfined)" });
    }
    let caps: Vec<String> = spec
        .pointer("/process/capabilities/bounding")
        .and_then(|b| b.as_array())
        .map(|b| {
            b.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    match slate_runtime::seccomp::docker_default_for_caps(caps.iter().map(String::as_str)) {
        Ok(p) => serde_json::json!({
            "source": "docker's default profile, for the container's capabilities",
            "profile": p,
        }),
        Err(e) => {
            serde_json::json!({ "source": "docker's default profile", "error": e.to_string() })
        }
    }
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
