//! Per-source counters and gauges, served on the `--listen` address as
//! `/metrics` (Prometheus text, names starting `redvault_`) and `/healthz`.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
pub struct SourceMetrics {
    pub name: String,
    pub connected: AtomicBool,
    /// A base snapshot is being taken (healthy, though the stream is not followed yet).
    pub in_base: AtomicBool,
    /// Unix seconds of the last complete base snapshot / stored segment.
    pub last_base_time: AtomicU64,
    pub last_segment_time: AtomicU64,
    /// The primary's offset as far as received, and what storage holds.
    pub received_offset: AtomicU64,
    pub durable_offset: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub spool_full: AtomicBool,
    pub uploaded_bytes: AtomicU64,
    pub segments: AtomicU64,
    pub bases: AtomicU64,
    pub errors: AtomicU64,
    pub gaps: AtomicU64,
    /// A cluster source: each shard's stream, reported as its own source
    /// `<name>/shard-<first>-<last>` (replaced when a new base moves them).
    pub shards: std::sync::Mutex<Vec<Arc<SourceMetrics>>>,
    /// The last scheduled drill's result (`drills.rs`), if drills run.
    pub drill: std::sync::Mutex<Option<DrillResult>>,
}

/// A scheduled drill's result, as served and kept in the state directory.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DrillResult {
    pub ok: bool,
    /// Unix seconds: when the drill started, and when the last one that
    /// passed ended (0: none yet).
    pub at: u64,
    pub last_success: u64,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    pub generation: Option<String>,
    pub error: Option<String>,
}

impl SourceMetrics {
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(SourceMetrics {
            name: name.into(),
            ..Default::default()
        })
    }
}

/// The sources being served; replaced on a config reload.
pub type Registry = Arc<std::sync::RwLock<Vec<Arc<SourceMetrics>>>>;
pub use crate::text::unix_now;

/// The Prometheus text exposition of every source.
pub fn render(sources: &[Arc<SourceMetrics>]) -> String {
    let sources: Vec<Arc<SourceMetrics>> = sources
        .iter()
        .flat_map(|s| {
            let shards = s.shards.lock().map(|v| v.clone()).unwrap_or_default();
            std::iter::once(s.clone()).chain(shards)
        })
        .collect();
    let sources = &sources;
    let mut out = String::new();
    let metric = |out: &mut String,
                  name: &str,
                  kind: &str,
                  help: &str,
                  get: &dyn Fn(&SourceMetrics) -> u64| {
        let _ = writeln!(out, "# HELP redvault_{name} {help}");
        let _ = writeln!(out, "# TYPE redvault_{name} {kind}");
        for s in sources {
            let _ = writeln!(out, "redvault_{name}{{source=\"{}\"}} {}", s.name, get(s));
        }
    };
    metric(
        &mut out,
        "up",
        "gauge",
        "1 while the replication link is up.",
        &|s| s.connected.load(Relaxed) as u64,
    );
    metric(
        &mut out,
        "last_base_timestamp_seconds",
        "gauge",
        "When the last base snapshot completed.",
        &|s| s.last_base_time.load(Relaxed),
    );
    metric(
        &mut out,
        "last_segment_timestamp_seconds",
        "gauge",
        "When the last AOF segment was stored.",
        &|s| s.last_segment_time.load(Relaxed),
    );
    metric(
        &mut out,
        "received_offset",
        "gauge",
        "Replication offset received from the primary.",
        &|s| s.received_offset.load(Relaxed),
    );
    metric(
        &mut out,
        "durable_offset",
        "gauge",
        "Replication offset held by storage.",
        &|s| s.durable_offset.load(Relaxed),
    );
    metric(
        &mut out,
        "replication_lag_bytes",
        "gauge",
        "Received but not yet in storage.",
        &|s| {
            s.received_offset
                .load(Relaxed)
                .saturating_sub(s.durable_offset.load(Relaxed))
        },
    );
    metric(
        &mut out,
        "spool_bytes",
        "gauge",
        "Sealed segments waiting on local disk for storage.",
        &|s| s.spool_bytes.load(Relaxed),
    );
    metric(
        &mut out,
        "spool_full",
        "gauge",
        "1 when the spool is full and the link was dropped.",
        &|s| s.spool_full.load(Relaxed) as u64,
    );
    metric(
        &mut out,
        "uploaded_bytes_total",
        "counter",
        "Bytes written to storage.",
        &|s| s.uploaded_bytes.load(Relaxed),
    );
    metric(
        &mut out,
        "segments_total",
        "counter",
        "AOF segments stored.",
        &|s| s.segments.load(Relaxed),
    );
    metric(
        &mut out,
        "bases_total",
        "counter",
        "Base snapshots stored.",
        &|s| s.bases.load(Relaxed),
    );
    metric(
        &mut out,
        "errors_total",
        "counter",
        "Errors (link, storage), each logged.",
        &|s| s.errors.load(Relaxed),
    );
    metric(
        &mut out,
        "gaps_total",
        "counter",
        "Times the stream could not continue and a new generation began.",
        &|s| s.gaps.load(Relaxed),
    );
    // The same names a drill's --metrics-file carries (the alert rules
    // serve both), for sources whose drills the daemon runs.
    let drills: Vec<(String, DrillResult)> = sources
        .iter()
        .filter_map(|s| Some((s.name.clone(), s.drill.lock().ok()?.clone()?)))
        .collect();
    if !drills.is_empty() {
        let gauge = |out: &mut String,
                     name: &str,
                     help: &str,
                     get: &dyn Fn(&DrillResult) -> Option<f64>| {
            let _ = writeln!(out, "# HELP redvault_drill_{name} {help}");
            let _ = writeln!(out, "# TYPE redvault_drill_{name} gauge");
            for (source, r) in &drills {
                if let Some(v) = get(r) {
                    let _ = writeln!(out, "redvault_drill_{name}{{source=\"{source}\"}} {v}");
                }
            }
        };
        gauge(
            &mut out,
            "ok",
            "1 if the last drill passed, 0 if it failed.",
            &|r| Some(r.ok as u8 as f64),
        );
        gauge(
            &mut out,
            "last_success_timestamp_seconds",
            "When a drill last passed (Unix time).",
            &|r| (r.last_success > 0).then_some(r.last_success as f64),
        );
        gauge(
            &mut out,
            "rto_seconds",
            "How long the last drill took to a usable Redis.",
            &|r| r.rto_seconds,
        );
        gauge(
            &mut out,
            "rpo_seconds",
            "Age of the newest durable record at the last drill.",
            &|r| r.rpo_seconds,
        );
    }
    out
}

/// Serves /metrics and /healthz until the task is dropped. Healthy: every source
/// has its link up and nothing waits in the spool for longer than a minute.
pub async fn serve(listener: tokio::net::TcpListener, registry: Registry) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let sources = registry.read().map(|r| r.clone()).unwrap_or_default();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => ("200 OK", render(&sources)),
                "/healthz" => {
                    let now = unix_now();
                    let bad: Vec<String> = sources
                        .iter()
                        .filter(|s| {
                            !(s.connected.load(Relaxed) || s.in_base.load(Relaxed))
                                || (s.spool_bytes.load(Relaxed) > 0
                                    && now.saturating_sub(s.last_segment_time.load(Relaxed)) > 60)
                        })
                        .map(|s| s.name.clone())
                        .collect();
                    if bad.is_empty() {
                        ("200 OK", "ok\n".to_string())
                    } else {
                        (
                            "503 Service Unavailable",
                            format!("unhealthy: {}\n", bad.join(", ")),
                        )
                    }
                }
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let rsp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(rsp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
