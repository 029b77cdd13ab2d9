//! What an operator of the service sees: log lines fit for a file or the
//! journal (no colour codes off a terminal; JSON lines on request), and a
//! `--version` that names the formats read and written.

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
