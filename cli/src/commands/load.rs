//! `slate load`: import every image of an archive (an OCI image-layout tar, or a `docker
//! save` tarball) from a file or stdin, verified as a registry pull is (see
//! `slate_image::archive`).

use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use slate_image::archive;
use slate_image::platform::Platform;
use slate_image::pull::PullOptions;

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Archive to read instead of stdin
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print nothing but the loaded images' names
    #[arg(short, long)]
    pub quiet: bool,
    /// Platform to load when the archive holds several, instead of this host's
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

pub fn run(settings: &Settings, args: LoadArgs) -> anyhow::Result<u8> {
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
    let progress = crate::progress::for_stderr(args.quiet);
    let loaded = match &args.input {
        Some(path) => {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            archive::load_archive(&store, BufReader::new(f), path, &opts, progress.as_ref())
                .with_context(|| format!("cannot load {}", path.display()))?
        }
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            anyhow::bail!("no archive to load: give one with -i FILE, or pipe it in (slate save IMAGE | slate load)")
        }
        None => archive::load_archive(
            &store,
            BufReader::new(std::io::stdin().lock()),
            Path::new("stdin"),
            &opts,
            progress.as_ref(),
        )
        .context("cannot load the archive on stdin")?,
    };
    drop(progress);
    for pulled in &loaded {
        if args.quiet {
            println!("{}", pulled.record.display_name());
        } else {
            println!("Loaded image: {}", pulled.record.display_name());
        }
    }
    Ok(0)
}
