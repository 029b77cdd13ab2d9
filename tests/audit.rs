//! The audit log: one JSON record per command, with its outcome and what it
//! acted on, appended to a 0600 file; never a secret in it, nor in any output.

mod common;

use common::daemon::Daemon;
use common::redis::*;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn each_command_appends_one_record_and_no_secret_anywhere() {
    const CANARY: &str = "canary-pw-7f3a91";
    let src = RedisServer::start(&["--requirepass", CANARY]);
    let mut c = Client::connect(src.port).unwrap();
    c.ok(&["AUTH", CANARY]);
    c.ok(&["SET", "k", "v"]);
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    let log = work.path().join("audit.jsonl");
    let mut seen = String::new();
    let mut go = |args: &[&str]| {
        let (code, out, err) = run(redvault()
            .env("REDVAULT_REDIS_PASSWORD", CANARY)
            .arg("--audit-log")
            .arg(&log)
            .args(args)
            .arg("--kek")
            .arg(work.path().join(if args[1] == "export" {
                "kek.pub.pem"
            } else {
                "kek.pem"
            })));
        seen.push_str(&out);
        seen.push_str(&err);
        code
    };
    let url = format!("redis://127.0.0.1:{}", src.port);
    assert_eq!(
        go(&["--json", "export", "--redis", &url, "--to", &store, "--source", "s"]),
        0
    );
    let dead = format!("redis://127.0.0.1:{}", free_port());
    assert_eq!(
        go(&["--json", "import", "--redis", &dead, "--from", &store]),
        1
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2, "{text}");
    assert_eq!(recs[0]["action"], "export");
    assert_eq!(recs[0]["outcome"], "ok");
    assert_eq!(recs[0]["details"]["source"], "s");
    assert!(recs[0]["details"]["generation"].is_string(), "{text}");
    assert!(recs[0]["user"].is_string() && recs[0]["seconds"].is_number());
    assert_eq!(recs[1]["action"], "import");
    assert_eq!(recs[1]["outcome"], "error");
    assert!(
        recs[1]["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!text.contains(CANARY), "a secret in the audit log");
    assert!(!seen.contains(CANARY), "a secret in the output: {seen}");
}

/// The daemon's own events, in order: its start, the first generation, a gap
/// when the primary comes back empty (new replication id), that generation's
/// end and the next one's start, a reload whose new configuration cannot start (an unreadable
/// KEK: recorded as an error, and the daemon keeps backing up with the old
/// one), and its end.
#[test]
fn the_daemon_records_its_events_in_order() {
    let mut src = RedisServer::start(&[]);
    src.client().ok(&["SET", "k", "v"]);
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    let audit = work.path().join("audit.jsonl");
    let config = work.path().join("redvault.toml");
    let kek_line = |p: &std::path::Path| format!("kek = \"{}\"\n", p.display());
    std::fs::write(&config, kek_line(&work.path().join("kek.pub.pem"))).unwrap();
    let command = || {
        let mut c = redvault();
        c.arg("--config")
            .arg(&config)
            .arg("--audit-log")
            .arg(&audit)
            .args(["daemon", "--redis", &src.url(), "--to", &store])
            .args(["--source", "cache1", "--segment-interval-ms", "100"])
            .arg("--state-dir")
            .arg(work.path().join("state"));
        c
    };
    let mut d = Daemon::spawn(command, work.path());
    d.wait_durable(&src);

    // The primary loses its data: the generation ends, a new one starts.
    src.restart_empty();
    src.client().ok(&["SET", "k2", "v2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.metric("bases_total").unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "no second base: {}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }

    // A reload whose KEK cannot be read is refused; backups go on.
    std::fs::write(&config, kek_line(&work.path().join("missing.pub.pem"))).unwrap();
    let _ = Command::new("kill")
        .arg("-HUP")
        .arg(d.child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.log().contains("keeping the running configuration") {
        assert!(Instant::now() < deadline, "no refused reload: {}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    src.client().ok(&["SET", "after-reload", "1"]);
    d.wait_durable(&src);
    d.stop();

    let text = std::fs::read_to_string(&audit).unwrap();
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| (r["event"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        events,
        [
            ("start", "ok"),
            ("generation start", "ok"),
            ("gap", "ok"),
            ("generation end", "ok"),
            ("generation start", "ok"),
            ("reload", "error"),
            ("end", "ok"),
        ],
        "{text}"
    );
    assert!(recs.iter().all(|r| r["action"] == "daemon"), "{text}");
    let first = &recs[1]["details"];
    assert_eq!(first["source"], "cache1");
    assert!(
        first["keks"][0].as_str().unwrap().starts_with("local-rsa:"),
        "{text}"
    );
    assert!(
        first["signer"].as_str().unwrap().starts_with("ed25519:"),
        "{text}"
    );
    let gap = &recs[2]["details"];
    assert_eq!(gap["generation"], first["generation"], "{text}");
    assert_ne!(gap["new_replid"], gap["replid"], "{text}");
    assert_eq!(
        recs[3]["details"]["generation"], first["generation"],
        "{text}"
    );
    assert!(
        recs[5]["error"]
            .as_str()
            .unwrap()
            .contains("missing.pub.pem"),
        "{text}"
    );
}
