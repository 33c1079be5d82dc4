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
