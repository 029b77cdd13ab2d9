//! What an operator of the service sees: log lines fit for a file or the
//! journal (no colour codes off a terminal; JSON lines on request or by the
//! config; journal lines without time stamps), a `--version` that names the
//! formats read and written, completions and a man page.

mod common;

use common::*;

/// A command that logs (the audit record at info) and fails at once: no
/// signing key, nothing written.
fn logging_run(extra: &[&str]) -> String {
    let work = tempfile::tempdir().unwrap();
    let (code, _, err) = run(redvault()
        .env("REDVAULT_LOG", "info")
        .env_remove("NO_COLOR")
        .args(extra)
        .args([
            "export",
            "--redis",
            "redis://127.0.0.1:1",
            "--source",
            "s",
            "--plain",
        ])
        .arg("--to")
        .arg(format!("file://{}", work.path().display())));
    assert_eq!(code, 1, "{err}");
    err
}

#[test]
fn logs_have_no_colour_codes_off_a_terminal_and_json_lines_parse() {
    let text = logging_run(&[]);
    assert!(text.contains("INFO"), "an info line was logged: {text}");
    assert!(
        !text.contains('\x1b'),
        "colour codes in a log off a terminal: {text:?}"
    );
    let json = logging_run(&["--log-format", "json"]);
    let lines: Vec<&str> = json.lines().filter(|l| l.starts_with('{')).collect();
    assert!(!lines.is_empty(), "{json}");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["target"].is_string(), "{v}");
    }
}

/// `log_format` in the config takes effect (journal: no time stamps, no
/// escape codes; json), and `--log-format` wins over it.
#[test]
fn the_config_sets_the_log_format() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("redvault.toml");
    std::fs::write(&config, "log_format = \"json\"\n").unwrap();
    let c = config.to_str().unwrap();
    let json = logging_run(&["--config", c]);
    let lines: Vec<&str> = json
        .lines()
        .filter(|l| !l.starts_with("redvault:"))
        .collect();
    assert!(!lines.is_empty(), "{json}");
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
    let text = logging_run(&["--config", c, "--log-format", "text"]);
    assert!(
        text.contains(" INFO ") && !text.contains("{\"level\""),
        "{text}"
    );
    std::fs::write(&config, "log_format = \"journal\"\n").unwrap();
    let journal = logging_run(&["--config", c]);
    let info = journal
        .lines()
        .find(|l| l.contains("INFO"))
        .unwrap_or_else(|| panic!("{journal}"));
    assert!(
        info.trim_start().starts_with("INFO") && !journal.contains('\x1b'),
        "the journal adds its own time stamp and shows no colour: {journal:?}"
    );
    std::fs::write(&config, "log_format = \"xml\"\n").unwrap();
    let (code, _, err) =
        run(redvault().args(["--config", c, "list", "--from", "file:///nonexistent"]));
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(line.contains("`xml`") && line.contains("journal"), "{line}");
}

#[test]
fn version_names_the_formats() {
    let (code, out, err) = run(redvault().arg("--version"));
    assert_eq!(code, 0, "{err}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(out.starts_with(&format!("redvault {version}\n")), "{out}");
    assert!(
        out.contains("sealed objects: format 2 written; formats 1 and 2 read")
            && out.contains("Redis RDB: versions 1 to 12 read"),
        "{out}"
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_commands() {
    let (code, bash, err) = run(redvault().args(["completions", "bash"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        bash.contains("_redvault") && bash.contains("drill") && bash.contains("--via"),
        "{bash}"
    );
    for shell in ["zsh", "fish"] {
        let (code, out, err) = run(redvault().args(["completions", shell]));
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("restore") && out.contains("drill"),
            "{shell}: {out}"
        );
    }
    let (code, man, err) = run(redvault().arg("man"));
    assert_eq!(code, 0, "{err}");
    assert!(
        man.contains(".TH redvault") && man.contains("drill"),
        "{man}"
    );
}

/// The metric names in `text` (`redvault_...`).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("redvault_") {
        let start = i + at;
        let mut end = start + "redvault_".len();
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'_') {
            end += 1;
        }
        out.insert(text[start..end].to_string());
        i = end;
    }
    out
}

/// Every metric the Grafana dashboard and the alert rules name is one that
/// redvault exports: the daemon's /metrics, or a drill's metrics file.
#[test]
fn the_dashboard_and_alert_rules_name_only_exported_metrics() {
    use common::daemon::*;
    let (work, store) = workspace();
    let primary = common::redis::RedisServer::start(&[]);
    let mut d = Daemon::start(work.path(), &primary.url(), &store, &[]);
    d.wait_up();
    write_batch(&primary, "m", 5);
    d.wait_durable(&primary);
    let mut exported = metric_names(&d.metrics().unwrap());
    d.stop();
    let prom = work.path().join("drill.prom");
    let (code, _, err) = run(redvault()
        .args(["drill", "--from", &store, "--source", "cache1", "--kek"])
        .arg(work.path().join("kek.pem"))
        .arg("--metrics-file")
        .arg(&prom));
    assert_eq!(code, 0, "{err}");
    exported.extend(metric_names(&std::fs::read_to_string(&prom).unwrap()));
    assert!(
        exported.contains("redvault_drill_rto_seconds"),
        "{exported:?}"
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let dashboard = std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(v["panels"].as_array().is_some_and(|p| p.len() >= 8), "{v}");
    let rules = std::fs::read_to_string(root.join("redvault-alerts.yml")).unwrap();
    for (what, text) in [("dashboard", &dashboard), ("alert rules", &rules)] {
        let named = metric_names(text);
        assert!(named.len() >= 5, "{what}: {named:?}");
        let unknown: Vec<_> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics nobody exports: {unknown:?}"
        );
    }
}
