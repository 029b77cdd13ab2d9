//! The audit log: one JSON record per command, with its outcome and what it
//! acted on, appended to a 0600 file; never a secret in it, nor in any output.

mod common;

use common::redis::*;
use common::*;

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
