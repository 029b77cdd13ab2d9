//! The one-line summary, human or JSON.

pub struct Output {
    pub json: bool,
    /// The last summary, for the audit record.
    pub last: std::sync::Mutex<Option<serde_json::Value>>,
}

impl Output {
    /// Prints the summary. Human text goes to stderr; JSON to stdout, unless the
    /// command writes its data there (`OUT` is `-`), then to stderr.
    pub fn summary_to(&self, human: &str, json: serde_json::Value, stdout_busy: bool) {
        if let Ok(mut l) = self.last.lock() {
            *l = Some(json.clone());
        }
        if self.json && !stdout_busy {
            println!("{json}");
        } else if self.json {
            eprintln!("{json}");
        } else {
            eprintln!("{human}");
        }
    }

    pub fn summary(&self, human: &str, json: serde_json::Value) {
        self.summary_to(human, json, false)
    }

    /// Progress bars only on a terminal, and never with --json.
    pub fn progress(&self) -> bool {
        !self.json
    }
}
