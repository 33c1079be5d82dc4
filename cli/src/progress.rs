//! Pull progress: bars on a terminal (indicatif), one line per finished layer otherwise
//! (systemd's journal, CI logs), nothing with `-q`. Registry retries likewise: a plain line
//! on a terminal, a warning in a log.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use slate_image::pull::Progress;
use slate_image::registry::Client;
use slate_image::store::{ImageRecord, LayerRecord};

use crate::output::human_size;

/// Picks the progress display for the current stderr.
pub fn for_stderr(quiet: bool) -> Box<dyn Progress> {
    if quiet {
        Box::new(slate_image::pull::NoProgress)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines)
    }
}

/// Has `client` say when it retries a registry: on a terminal, one plain line per retry
/// (`registry 127.0.0.1:5000 not reachable (connection refused); retry 2/5 in 0.4 s`,
/// above the bars of a pull drawing them; none with `-q`); otherwise (systemd's journal, a
/// CI log) a warning per retry, without escape codes.
pub fn show_retries(client: Client, quiet: bool) -> Client {
    let terminal = std::io::stderr().is_terminal();
    client.on_retry(move |retry| {
        if !terminal {
            tracing::warn!("{retry}");
        } else if !quiet {
            print_line(&retry.to_string());
        }
    })
}

/// The bars being drawn on stderr, if a pull draws any: a line printed under them would be
/// overdrawn, so it goes through them. stderr is one per process, so is this.
static DRAWING: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// One line on stderr, above the bars if some are drawn (they are cleared for it and drawn
/// again below; `MultiProgress::println` leaves the line unterminated while no bar is drawn
/// yet, as during a manifest's retries).
fn print_line(line: &str) {
    let drawing = DRAWING.lock().ok().and_then(|d| d.clone());
    match drawing {
        Some(multi) => multi.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// Plain lines, one per event that matters.
struct Lines;

impl Progress for Lines {
    fn resolved(&self, record: &ImageRecord, missing: &[LayerRecord]) {
        let bytes: u64 = missing.iter().map(|l| l.size).sum();
        eprintln!(
            "{}: {} layers, {} to fetch ({})",
            record.display_name(),
            record.layers.len(),
            missing.len(),
            human_size(bytes)
        );
    }

    fn layer_done(&self, layer: &LayerRecord) {
        eprintln!("{}: pulled ({})", short(layer), human_size(layer.size));
    }
}

fn short(l: &LayerRecord) -> String {
    l.digest.hex()[..12].to_string()
}

/// indicatif bars: one per layer and an overall one.
struct Bars {
    multi: MultiProgress,
    total: Mutex<Option<ProgressBar>>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        if let Ok(mut d) = DRAWING.lock() {
            *d = Some(multi.clone());
        }
        Bars {
            multi,
            total: Mutex::new(None),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{prefix:>12} {bar:30} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
    }
}

impl Progress for Bars {
    fn resolved(&self, record: &ImageRecord, missing: &[LayerRecord]) {
        let bytes: u64 = missing.iter().map(|l| l.size).sum();
        let total = self.multi.add(ProgressBar::new(bytes));
        total.set_style(Self::style());
        total.set_prefix("total");
        if let Ok(mut t) = self.total.lock() {
            *t = Some(total);
        }
        let _ = self.multi.println(format!(
            "{}: {} layers, {} to fetch",
            record.display_name(),
            record.layers.len(),
            missing.len()
        ));
    }

    fn layer_started(&self, layer: &LayerRecord) {
        let b = self.multi.add(ProgressBar::new(layer.size));
        b.set_style(Self::style());
        b.set_prefix(short(layer));
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(layer.digest.to_string(), b);
        }
    }

    fn layer_bytes(&self, layer: &LayerRecord, n: u64) {
        if let Ok(bars) = self.bars.lock() {
            if let Some(b) = bars.get(&layer.digest.to_string()) {
                b.inc(n);
            }
        }
        if let Ok(t) = self.total.lock() {
            if let Some(t) = t.as_ref() {
                t.inc(n);
            }
        }
    }

    fn layer_done(&self, layer: &LayerRecord) {
        if let Ok(mut bars) = self.bars.lock() {
            if let Some(b) = bars.remove(&layer.digest.to_string()) {
                b.finish_and_clear();
                self.multi.remove(&b);
            }
        }
        let _ = self.multi.println(format!(
            "{}: pulled ({})",
            short(layer),
            human_size(layer.size)
        ));
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        if let Ok(t) = self.total.lock() {
            if let Some(t) = t.as_ref() {
                t.finish_and_clear();
            }
        }
        if let Ok(mut d) = DRAWING.lock() {
            *d = None;
        }
    }
}
