//! `slate pull`: fetch an image into the store and print its digest.

use anyhow::Context;
use slate_image::platform::Platform;
use slate_image::pull::{self, PullOptions};
use slate_image::reference::Reference;
use slate_image::registry::Client;

use crate::cli::PullArgs;
use crate::config::Settings;

pub fn run(settings: &Settings, args: PullArgs) -> anyhow::Result<u8> {
    let reference: Reference = args.image.parse()?;
    let platform = args
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()?;
    let store = super::open_store(settings)?;
    let client = Client::new(settings.client_options()?);
    let opts = PullOptions {
        platform,
        parallel: settings.parallel(),
    };
    let progress = crate::progress::for_stderr(args.quiet);
    let pulled = pull::pull(&store, &client, &reference, &opts, progress.as_ref())
        .with_context(|| format!("cannot pull {reference}"))?;
    drop(progress);
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
