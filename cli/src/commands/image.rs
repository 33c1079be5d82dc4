//! `slate images`, `rmi`, `image inspect`, `image mount` / `unmount`.

use anyhow::Context;
use serde_json::json;
use slate_image::rootfs;
use slate_image::store::ImageRecord;

use crate::cli::{ImagesArgs, InspectArgs, MountArgs, RmiArgs, UnmountArgs};
use crate::config::Settings;
use crate::output::{ago, human_size, parse_rfc3339, table};

const FIELDS: &[(&str, &str)] = &[
    ("ID", "IMAGE ID"),
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("Digest", "DIGEST"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("Platform", "PLATFORM"),
];

/// docker's `reference=`: against `name:tag`, and against the name alone, also with
/// docker.io's defaults left out (`nginx` for `docker.io/library/nginx`).
fn reference_matches(r: &ImageRecord, pattern: &str) -> bool {
    let short = r
        .name
        .strip_prefix("docker.io/library/")
        .or_else(|| r.name.strip_prefix("docker.io/"))
        .unwrap_or(&r.name);
    let tag = r.tag.as_deref().unwrap_or("<none>");
    [r.name.as_str(), short].iter().any(|n| {
        crate::listing::glob(pattern, n) || crate::listing::glob(pattern, &format!("{n}:{tag}"))
    })
}

pub fn list(settings: &Settings, args: ImagesArgs) -> anyhow::Result<u8> {
    let format = crate::listing::OutputFormat::parse(&args.format, FIELDS)?;
    let filters =
        crate::listing::Filters::parse(&args.filter, &["reference", "dangling", "label"])?;
    let store = super::open_store(settings)?;
    let mut images = store.images().context("cannot list images")?;
    let labels_of = |r: &ImageRecord| -> std::collections::BTreeMap<String, String> {
        store
            .get_blob(&r.config_digest)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|c| c.pointer("/config/Labels").cloned())
            .and_then(|l| serde_json::from_value(l).ok())
            .unwrap_or_default()
    };
    images.retain(|r| {
        filters.accept(&|k, v| match k {
            "reference" => reference_matches(r, v),
            "dangling" => (v == "true") == r.tag.is_none(),
            "label" => crate::listing::label_matches(&labels_of(r), v),
            _ => false,
        })
    });
    if args.quiet {
        for r in &images {
            println!("{}", r.digest);
        }
        return Ok(0);
    }
    let created = |r: &ImageRecord| {
        r.created
            .as_deref()
            .and_then(parse_rfc3339)
            .map(ago)
            .unwrap_or_else(|| "N/A".to_string())
    };
    match format {
        crate::listing::OutputFormat::Json => {
            let v: Vec<_> = images
                .iter()
                .map(|r| {
                    json!({
                        "name": r.name,
                        "tag": r.tag,
                        "digest": r.digest.to_string(),
                        "size": r.unpacked_size,
                        "created": r.created,
                        "platform": r.platform.to_string(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        crate::listing::OutputFormat::Template { header, parts } => {
            use crate::listing::Part;
            let field = |r: &ImageRecord, p: &Part| -> String {
                match p {
                    Part::Label(k) => labels_of(r).get(k).cloned().unwrap_or_default(),
                    Part::Text(t) => t.clone(),
                    Part::Field(f) => match f.as_str() {
                        "ID" => r.digest.hex()[..12].to_string(),
                        "Repository" => r.name.clone(),
                        "Tag" => r.tag.clone().unwrap_or_else(|| "<none>".into()),
                        "Digest" => r.digest.to_string(),
                        "CreatedSince" => created(r),
                        "CreatedAt" => r.created.clone().unwrap_or_default(),
                        "Size" => human_size(r.unpacked_size),
                        "Platform" => r.platform.to_string(),
                        _ => String::new(),
                    },
                }
            };
            print!(
                "{}",
                crate::listing::render(header, &parts, FIELDS, &images, field)
            );
        }
        crate::listing::OutputFormat::Table => {
            let rows: Vec<Vec<String>> = images
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.tag.clone().unwrap_or_else(|| "<none>".to_string()),
                        r.digest.hex()[..12].to_string(),
                        created(r),
                        human_size(r.unpacked_size),
                        r.platform.to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["REPOSITORY", "TAG", "DIGEST", "CREATED", "SIZE", "PLATFORM"],
                    &rows
                )
            );
        }
    }
    Ok(0)
}

pub fn remove(settings: &Settings, args: RmiArgs) -> anyhow::Result<u8> {
    let store = super::open_store(settings)?;
    let mut failed = None;
    for name in &args.images {
        let result = store
            .find_image(name)
            .and_then(|rec| store.remove_image(&rec).map(|freed| (rec, freed)));
        match result {
            Ok((rec, freed)) => {
                println!("Untagged: {}", rec.display_name());
                println!("Deleted: {} ({} freed)", rec.digest, human_size(freed));
            }
            Err(e) => {
                // Carry on with the others, as docker does; fail at the end.
                let e = anyhow::Error::new(e).context(format!("cannot remove {name}"));
                eprintln!("slate: {e:#}");
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(_) => Ok(1),
        None => Ok(0),
    }
}

pub fn inspect(settings: &Settings, args: InspectArgs) -> anyhow::Result<u8> {
    let store = super::open_store(settings)?;
    let rec = store.find_image(&args.image)?;
    let config = store
        .get_blob(&rec.config_digest)
        .with_context(|| format!("cannot read the config of {}", rec.display_name()))?;
    let config: serde_json::Value = serde_json::from_slice(&config)
        .with_context(|| format!("corrupt config blob of {}", rec.display_name()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&inspect_json(&rec, config))?
    );
    Ok(0)
}

fn inspect_json(rec: &ImageRecord, config: serde_json::Value) -> serde_json::Value {
    json!({
        "name": rec.name,
        "tag": rec.tag,
        "digest": rec.digest.to_string(),
        "index_digest": rec.index_digest.as_ref().map(|d| d.to_string()),
        "platform": {
            "os": rec.platform.os,
            "architecture": rec.platform.architecture,
            "variant": rec.platform.variant,
        },
        "created": rec.created,
        "size": rec.unpacked_size,
        "config_digest": rec.config_digest.to_string(),
        "config": config,
        "layers": rec.layers.iter().map(|l| json!({
            "digest": l.digest.to_string(),
            "diff_id": l.diff_id.to_string(),
            "chain_id": l.chain_id.to_string(),
            "size": l.size,
            "media_type": l.media_type,
        })).collect::<Vec<_>>(),
    })
}

pub fn mount(settings: &Settings, args: MountArgs) -> anyhow::Result<u8> {
    let store = super::open_store(settings)?;
    let rec = store.find_image(&args.image)?;
    rootfs::mount_readonly(&store, &rec, &args.dir)?;
    println!("{}", args.dir.display());
    Ok(0)
}

pub fn unmount(settings: &Settings, args: UnmountArgs) -> anyhow::Result<u8> {
    let store = super::open_store(settings)?;
    rootfs::unmount(&store, &args.dir)?;
    Ok(0)
}
