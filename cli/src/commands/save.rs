//! `slate save`: images from the store as one archive (OCI layout, or docker-loadable with
//! `--format docker`), to a file or stdout; see `slate_image::save` for what is kept.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use slate_image::save::{self, Format};

use crate::config::Settings;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SaveFormat {
    /// OCI image layout (slate load, podman load, skopeo oci-archive:, docker load 25+)
    Oci,
    /// OCI image layout plus Docker's manifest.json (any docker load)
    Docker,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to this file instead of stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Archive layout
    #[arg(long, value_enum, default_value = "oci")]
    pub format: SaveFormat,
    /// Images to save (name[:tag], or id)
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

pub fn run(settings: &Settings, args: SaveArgs) -> anyhow::Result<u8> {
    if args.output.is_none() && std::io::stdout().is_terminal() {
        bail!("refusing to write an image archive to a terminal: use -o FILE or redirect stdout");
    }
    let store = super::open_store(settings)?;
    let mut records = Vec::new();
    for name in &args.images {
        let r = store.find_image(name)?;
        if !records.contains(&r) {
            records.push(r);
        }
    }
    let format = match args.format {
        SaveFormat::Oci => Format::Oci,
        SaveFormat::Docker => Format::Docker,
    };
    let saved = match &args.output {
        Some(path) => save_to_file(&store, &records, format, path)?,
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            let saved = save::save(&store, &records, format, &mut out).context("cannot save")?;
            out.flush().context("cannot write to stdout")?;
            saved
        }
    };
    for s in &saved {
        tracing::info!(image = %s.name, manifest = %s.manifest_digest, config = %s.config_digest,
            original_blobs = s.original_blobs, "saved");
    }
    Ok(0)
}

/// Writes next to `path` and renames at the end, so a failed save leaves no half archive
/// that a later `slate load` would reject with a confusing message.
fn save_to_file(
    store: &slate_image::store::Store,
    records: &[slate_image::store::ImageRecord],
    format: Format,
    path: &Path,
) -> anyhow::Result<Vec<save::Saved>> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut created = false;
    let result = (|| {
        // create_new: never follows a symlink planted at the temp name, never truncates.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        created = true;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
        let saved = save::save(store, records, format, &mut out)
            .with_context(|| format!("cannot save to {}", path.display()))?;
        let f = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", path.display()))?;
        f.sync_all()
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(saved)
    })();
    if result.is_err() && created {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
