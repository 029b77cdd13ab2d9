//! Progress on a terminal (stderr), silent otherwise and with --json.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

pub fn bytes_bar(total: Option<u64>, enabled: bool) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("static template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {binary_bytes_per_sec}")
                .expect("static template"),
        ),
    }
}

/// Human-readable byte count for summaries.
pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}
