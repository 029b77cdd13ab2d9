//! What a drill found, as one JSON object (`--json`) and as a Markdown
//! report with an SVG chart beside it (`--report FILE.md`): RTO by stage,
//! RPO, what was checked, and the generation's segments and holes.

use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stage {
    pub name: String,
    pub seconds: f64,
}

/// The source's key counts the daemon recorded at one offset, found equal
/// in the restore at that offset.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FingerprintChecked {
    pub offset: u64,
    /// Compared (a target fed by replication keeps expired keys as the
    /// source counted them), or not, and why (`note`).
    pub compared: bool,
    pub dbs: Vec<crate::fingerprint::DbCount>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub command: &'static str,
    pub ok: bool,
    pub source: String,
    pub generation: String,
    /// Where it was restored, and how the base went in.
    pub target: String,
    pub via: String,
    /// From the start to a usable target, and each stage of it.
    pub rto_seconds: f64,
    pub stages: Vec<Stage>,
    /// Age of the newest durable record at the drill (or at --at).
    pub rpo_seconds: Option<f64>,
    pub keys: u64,
    pub keys_per_db: Vec<(u64, u64)>,
    pub functions: u64,
    pub keys_per_sec: f64,
    pub mb_per_sec: f64,
    /// Objects opened and authenticated (base objects, manifest, keyring,
    /// segments), their RDB bytes, and the commands replayed.
    pub objects: usize,
    pub bytes: u64,
    pub segments_applied: usize,
    pub commands: u64,
    pub cut_transaction: Option<u64>,
    /// The key counts checked against the source's at a recorded offset.
    pub fingerprint: Option<FingerprintChecked>,
    pub base_offset: u64,
    pub segments_total: usize,
    pub segments: Vec<(u64, u64)>,
    pub holes: Vec<(u64, u64)>,
    pub failures: Vec<String>,
    pub started_ms: u64,
    /// The scratch server's private directory (removed when the drill ends).
    pub scratch_dir: Option<String>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG of the RTO by stage (one bar each) and the generation's stream
/// from its base offset: segments in blue, holes in red.
pub fn svg(r: &Report) -> String {
    let width = 720.0;
    let mut s = String::new();
    let stages_h = 30.0 * r.stages.len() as f64;
    let height = 90.0 + stages_h + 80.0;
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<text x="10" y="20" font-size="14">{} — drill of {} {}: {}</text>"#,
        esc(&crate::text::rfc3339_ms(r.started_ms)),
        esc(&r.source),
        esc(&r.generation),
        if r.ok { "ok" } else { "FAILED" }
    );
    let _ = write!(
        s,
        r#"<text x="10" y="45">RTO {:.2} s by stage</text>"#,
        r.rto_seconds
    );
    let longest = r
        .stages
        .iter()
        .map(|x| x.seconds)
        .fold(r.rto_seconds, f64::max)
        .max(1e-3);
    for (i, st) in r.stages.iter().enumerate() {
        let y = 55.0 + 30.0 * i as f64;
        let w = (st.seconds / longest * (width - 200.0)).max(1.0);
        let _ = write!(
            s,
            r##"<text x="10" y="{}">{}</text><rect x="80" y="{y}" width="{w:.1}" height="20" fill="#4a7bd0"/><text x="{:.1}" y="{}">{:.2} s</text>"##,
            y + 15.0,
            esc(&st.name),
            85.0 + w,
            y + 15.0,
            st.seconds
        );
    }
    let y0 = 70.0 + stages_h;
    let end = r
        .segments
        .iter()
        .map(|x| x.1)
        .chain(r.holes.iter().map(|h| h.1))
        .fold(r.base_offset, u64::max);
    let span = (end.saturating_sub(r.base_offset)).max(1) as f64;
    let x_of = |o: u64| 10.0 + (o.saturating_sub(r.base_offset)) as f64 / span * (width - 20.0);
    let _ = write!(
        s,
        r#"<text x="10" y="{y0}">the stream from the base (offset {}) to offset {end}: {} segments, {} holes</text>"#,
        r.base_offset,
        r.segments.len(),
        r.holes.len()
    );
    let _ = write!(
        s,
        r##"<rect x="10" y="{}" width="{}" height="24" fill="#eeeeee"/>"##,
        y0 + 10.0,
        width - 20.0
    );
    for (a, b) in &r.segments {
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{}" width="{:.1}" height="24" fill="#4a7bd0" stroke="#ffffff" stroke-width="0.5"/>"##,
            x_of(*a),
            y0 + 10.0,
            (x_of(*b) - x_of(*a)).max(1.0)
        );
    }
    for (a, b) in &r.holes {
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{}" width="{:.1}" height="24" fill="#d04a4a"/>"##,
            x_of(*a),
            y0 + 10.0,
            (x_of(*b) - x_of(*a)).max(2.0)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The Markdown report.
pub fn markdown(r: &Report, svg_name: &str) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "# Drill of {} — {}\n",
        r.source,
        if r.ok { "passed" } else { "FAILED" }
    );
    let _ = writeln!(m, "- When: {}", crate::text::rfc3339_ms(r.started_ms));
    let _ = writeln!(m, "- Generation: `{}`", r.generation);
    let _ = writeln!(m, "- Restored into: {} (base by {})", r.target, r.via);
    let _ = writeln!(m, "- RTO: **{:.2} s**", r.rto_seconds);
    let _ = writeln!(
        m,
        "- RPO: **{}**",
        r.rpo_seconds
            .map_or("unknown".into(), |s| format!("{s:.1} s"))
    );
    let _ = writeln!(
        m,
        "- Keys: {} ({} function libraries); load {:.0} keys/s, {:.1} MB/s",
        r.keys, r.functions, r.keys_per_sec, r.mb_per_sec
    );
    let _ = writeln!(
        m,
        "- Checked: {} objects opened and authenticated, {} RDB bytes, {} of {} segments, {} commands replayed",
        r.objects, r.bytes, r.segments_applied, r.segments_total, r.commands
    );
    match &r.fingerprint {
        Some(f) if f.compared => {
            let _ = writeln!(
                m,
                "- Key counts equal to the source's at offset {} ({} databases)",
                f.offset,
                f.dbs.len()
            );
        }
        Some(f) => {
            let _ = writeln!(
                m,
                "- Key counts of the source at offset {} not compared: {}",
                f.offset,
                f.note.as_deref().unwrap_or("")
            );
        }
        None => {
            let _ = writeln!(
                m,
                "- Key counts of the source: none in the newest chain head within the point (a cluster generation, or a daemon that may not run MULTI and INFO)"
            );
        }
    }
    if let Some(o) = r.cut_transaction {
        let _ = writeln!(
            m,
            "- The point falls inside a transaction: stopped before its MULTI, at offset {o}"
        );
    }
    let _ = writeln!(m, "\n| stage | seconds |\n| --- | --- |");
    for st in &r.stages {
        let _ = writeln!(m, "| {} | {:.2} |", st.name, st.seconds);
    }
    if !r.keys_per_db.is_empty() {
        let _ = writeln!(m, "\n| db | keys |\n| --- | --- |");
        for (db, n) in &r.keys_per_db {
            let _ = writeln!(m, "| {db} | {n} |");
        }
    }
    if !r.failures.is_empty() {
        let _ = writeln!(m, "\n## Failures\n");
        for f in &r.failures {
            let _ = writeln!(m, "- {f}");
        }
    }
    let _ = writeln!(m, "\n![timeline and RTO by stage]({svg_name})");
    m
}

/// Writes `path` (Markdown) and the SVG beside it (same name, `.svg`).
pub fn write(path: &Path, r: &Report) -> std::io::Result<()> {
    let svg_path = path.with_extension("svg");
    let svg_name = svg_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "drill.svg".into());
    std::fs::write(&svg_path, svg(r))?;
    std::fs::write(path, markdown(r, &svg_name))
}

/// The value of `name{source="..."}` in an earlier metrics file.
fn previous(text: &str, name: &str, source: &str) -> Option<f64> {
    let key = format!("{name}{{source=\"{source}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

/// Prometheus text for one source's drill; the last success time is kept
/// from `earlier` (the file's previous content) when this drill failed.
pub fn metrics(r: &Report, earlier: &str) -> String {
    let now = crate::text::now_ms() as f64 / 1000.0;
    let last_success = if r.ok {
        Some(now)
    } else {
        previous(
            earlier,
            "redvault_drill_last_success_timestamp_seconds",
            &r.source,
        )
    };
    let src = r.source.replace('\\', "\\\\").replace('"', "\\\"");
    let mut m = String::new();
    let mut gauge = |name: &str, help: &str, v: Option<f64>| {
        let _ = writeln!(m, "# HELP {name} {help}");
        let _ = writeln!(m, "# TYPE {name} gauge");
        if let Some(v) = v {
            let _ = writeln!(m, "{name}{{source=\"{src}\"}} {v}");
        }
    };
    gauge(
        "redvault_drill_ok",
        "1 if the last drill passed, 0 if it failed.",
        Some(if r.ok { 1.0 } else { 0.0 }),
    );
    gauge(
        "redvault_drill_last_success_timestamp_seconds",
        "When a drill last passed (Unix time).",
        last_success,
    );
    gauge(
        "redvault_drill_rto_seconds",
        "How long the last drill took to a usable Redis.",
        Some(r.rto_seconds),
    );
    gauge(
        "redvault_drill_rpo_seconds",
        "Age of the newest durable record at the last drill.",
        r.rpo_seconds,
    );
    m
}

/// Writes the metrics file whole (a temporary file renamed over it, so a
/// collector never reads half of it).
pub fn write_metrics(path: &Path, r: &Report) -> std::io::Result<()> {
    let earlier = std::fs::read_to_string(path).unwrap_or_default();
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, metrics(r, &earlier))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_drill_keeps_the_last_success_time() {
        let ok = Report {
            source: "cache1".into(),
            ok: true,
            rto_seconds: 2.5,
            rpo_seconds: Some(1.0),
            ..Report::default()
        };
        let first = metrics(&ok, "");
        let t = previous(
            &first,
            "redvault_drill_last_success_timestamp_seconds",
            "cache1",
        )
        .expect("a success time");
        let failed = Report {
            ok: false,
            ..ok.clone()
        };
        let second = metrics(&failed, &first);
        assert!(
            second.contains("redvault_drill_ok{source=\"cache1\"} 0"),
            "{second}"
        );
        assert_eq!(
            previous(
                &second,
                "redvault_drill_last_success_timestamp_seconds",
                "cache1"
            ),
            Some(t)
        );
        assert!(metrics(&failed, "")
            .contains("# TYPE redvault_drill_last_success_timestamp_seconds gauge"));
    }
}
