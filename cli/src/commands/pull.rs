//! `slate pull`: fetch an image into the store and print its digest.
//!
//! Besides registry references, `oci:DIR[:TAG]` (an OCI image layout directory) and
//! `oci-archive:FILE[:TAG]` (a tar of one) import the image from local files, with the
//! same verification as a registry pull (see `slate_image::archive` for how they are
//! named: the layout's `org.opencontainers.image.ref.name` when it is a full reference,
//! else `localhost/<base name>:<TAG or annotation or latest>`).

use anyhow::Context;
use slate_image::archive;
use slate_image::platform::Platform;
use slate_image::pull::{self, PullOptions};
use slate_image::reference::Reference;
use slate_image::store::Store;

use crate::cli::PullArgs;
use crate::config::Settings;

/// Imports `image` when it is an `oci:` or `oci-archive:` reference; `None` for a
/// registry reference.
pub(crate) fn import_local(
    store: &Store,
    image: &str,
    opts: &PullOptions,
    quiet: bool,
) -> Option<anyhow::Result<pull::Pulled>> {
    let (archive, spec) = if let Some(rest) = image.strip_prefix("oci-archive:") {
        (true, rest)
    } else if let Some(rest) = image.strip_prefix("oci:") {
        (false, rest)
    } else {
        return None;
    };
    let (path, tag) = archive::split_tag(spec);
    let path = std::path::Path::new(path);
    let progress = crate::progress::for_stderr(quiet);
    let result = if archive {
        std::fs::File::open(path)
            .with_context(|| format!("cannot open {}", path.display()))
            .and_then(|f| {
                archive::import_archive(
                    store,
                    std::io::BufReader::new(f),
                    path,
                    tag,
                    opts,
                    progress.as_ref(),
                )
                .map_err(anyhow::Error::from)
            })
    } else {
        archive::import_layout(store, path, tag, opts, progress.as_ref())
            .map_err(anyhow::Error::from)
    };
    Some(result.with_context(|| format!("cannot import {image}")))
}

pub fn run(settings: &Settings, args: PullArgs) -> anyhow::Result<u8> {
    let platform = args
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()?;
    let store = super::open_store(settings)?;
    let opts = PullOptions {
        platform,
        parallel: settings.parallel(),
    };
    let pulled = match import_local(&store, &args.image, &opts, args.quiet) {
        Some(imported) => imported?,
        None => {
            let reference: Reference = args.image.parse()?;
            let client = settings.registry_client(args.quiet)?;
            let progress = crate::progress::for_stderr(args.quiet);
            let pulled = pull::pull(&store, &client, &reference, &opts, progress.as_ref())
                .with_context(|| format!("cannot pull {reference}"))?;
            drop(progress);
            pulled
        }
    };
    // Pulled on purpose: a release `slate auto-update` rolled back may run again.
    if let Err(e) = store.unreject(&pulled.record.digest) {
        tracing::warn!(error = %e, "cannot clear the rollback mark of {}", pulled.record.digest);
    }
    if !args.quiet {
        let status = if pulled.fetched == 0 {
            "Image is up to date for"
        } else {
            "Downloaded newer image for"
        };
        eprintln!("{status} {}", pulled.record.display_name());
        if let Some(ev) = pulled.evicted.as_ref().filter(|e| !e.images.is_empty()) {
            eprintln!(
                "Evicted to fit max_store_size: {} ({} freed)",
                ev.images.join(", "),
                crate::output::human_size(ev.bytes)
            );
        }
    }
    println!("{}", pulled.record.digest);
    Ok(0)
}
