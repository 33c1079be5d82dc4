//! `slate image prune [-a]`: remove what no image uses (and with `-a` the images too), and
//! say how much that freed.

use anyhow::Context;

use crate::cli::PruneArgs;
use crate::config::Settings;
use crate::output::human_size;

pub fn run(settings: &Settings, args: PruneArgs) -> anyhow::Result<u8> {
    let store = super::open_store(settings)?;
    let removed = store.prune(args.all).context("cannot prune the store")?;
    for name in &removed.images {
        println!("Deleted: {name}");
    }
    if removed.layers > 0 {
        println!("Deleted {} unused layer(s)", removed.layers);
    }
    println!("Total reclaimed space: {}", human_size(removed.bytes));
    Ok(0)
}
