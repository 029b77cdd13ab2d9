//! The replication feed (`--via replication|auto`) against real
//! redis-servers: the target loads the backup's RDB as a replica of
//! redvault, ends a primary with its settings as before, and gets nothing
//! from a backup that fails its checks; what cannot take the feed falls
//! back under auto (one line saying why) and fails under replication.

mod common;

use common::redis::*;
use common::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

type Backup = SealedBackup;

fn backup(src: &RedisServer) -> Backup {
    backup_with(src, &[])
}

fn backup_with(src: &RedisServer, extra: &[&str]) -> Backup {
    let mut c = src.client();
    fill_all_types(&mut c);
    c.ok(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=feedlib\nredis.register_function('feedfn', function() return 1 end)",
    ]);
    for db in ["2", "9"] {
        c.ok(&["SELECT", db]);
        for i in 0..500 {
            c.ok(&["SET", &format!("k:{db}:{i}"), &format!("v{i}")]);
        }
        c.ok(&["EXPIRE", &format!("k:{db}:1"), "86400"]);
    }
    SealedBackup::export(&src.url(), extra)
}

fn import(target: &RedisServer, b: &Backup, extra: &[&str]) -> (i32, serde_json::Value, String) {
    b.import(&target.url(), extra)
}

fn info_field(s: &RedisServer, section: &str, name: &str) -> String {
    let text = match s.client().ok(&["INFO", section]) {
        Resp::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO {section}: {other:?}"),
    };
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn config(s: &RedisServer, name: &str) -> String {
    s.config(name)
}

fn dbsize(s: &RedisServer) -> i64 {
    match s.client().ok(&["DBSIZE"]) {
        Resp::Int(n) => n,
        r => panic!("{r:?}"),
    }
}

/// The target ends a primary of its own: no master, the feed's password
/// gone, its load setting as before, taking writes.
fn assert_primary_again(t: &RedisServer, masterauth: &str) {
    assert_eq!(info_field(t, "replication", "role"), "master");
    assert_eq!(config(t, "masterauth"), masterauth, "masterauth put back");
    assert_eq!(
        config(t, "repl-diskless-load"),
        "disabled",
        "repl-diskless-load put back"
    );
    assert!(
        t.client()
            .cmd(&[b"SET", b"writable", b"1"])
            .is_ok_and(|r| r == Resp::Status("OK".into())),
        "the target takes writes again"
    );
    t.client().ok(&["DEL", "writable"]);
}

/// The whole base, loaded by the target itself: every value, TTL, database
/// and function library equal (DEBUG DIGEST on both sides), the summary
/// says replication, and the target is a primary with its settings back.
#[test]
fn import_by_replication_equals_the_source() {
    let src = RedisServer::start(&[]);
    let b = backup(&src);
    let target = RedisServer::start(&[]);
    target
        .client()
        .ok(&["CONFIG", "SET", "masterauth", "before-feed"]);
    let (code, v, err) = import(&target, &b, &["--via", "replication"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["via"], "replication", "{v}");
    assert_eq!(v["functions"], 1, "{v}");
    assert_eq!(target.digest(), src.digest());
    assert_eq!(v["loaded"].as_i64(), Some(dbsize_all(&src)), "{v}");
    assert_primary_again(&target, "before-feed");
    assert!(
        !err.contains("before-feed"),
        "the target's masterauth is never printed: {err}"
    );
    // auto takes the feed too, with nothing to say.
    let again = RedisServer::start(&[]);
    let (code, v, err) = import(&again, &b, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["via"], "replication", "{v}: {err}");
    assert_eq!(again.digest(), src.digest());
}

fn dbsize_all(s: &RedisServer) -> i64 {
    let mut c = s.client();
    let mut n = 0;
    for db in 0..16 {
        c.ok(&["SELECT", &db.to_string()]);
        if let Resp::Int(k) = c.ok(&["DBSIZE"]) {
            n += k;
        }
    }
    n
}

/// A target that refuses REPLICAOF (renamed away): auto loads with RESTORE
/// and says why in one line; `--via replication` fails in one line naming
/// the cause, and the target is untouched.
#[test]
fn a_target_that_refuses_replicaof_falls_back_or_fails() {
    let src = RedisServer::start(&[]);
    let b = backup(&src);
    let target = RedisServer::start(&["--rename-command", "REPLICAOF", ""]);
    let (code, _, err) = import(&target, &b, &["--via", "replication"]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("--via replication") && line.contains("REPLICAOF"),
        "{line}"
    );
    assert_eq!(dbsize(&target), 0);
    let (code, v, err) = import(&target, &b, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["via"], "restore", "{v}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("redvault: note: loading with RESTORE")
                && l.contains("REPLICAOF")),
        "{err}"
    );
    assert_eq!(target.digest(), src.digest());
}

/// A target holding keys: a full sync would replace them, so auto loads
/// with RESTORE (and the usual conflict rules), and replication is refused,
/// pointing at --flush; with --flush --yes the feed replaces them. Filters
/// go through the feed too; --target-db does not.
#[test]
fn a_non_empty_target_needs_flush_for_the_feed() {
    let src = RedisServer::start(&[]);
    let b = backup(&src);
    let target = RedisServer::start(&[]);
    target.client().ok(&["SET", "someone-elses", "key"]);
    let (code, _, err) = import(&target, &b, &["--via", "replication"]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("holds keys") && line.contains("--flush"),
        "{line}"
    );
    assert_eq!(dbsize(&target), 1, "nothing changed");
    let (code, v, err) = import(&target, &b, &["--via", "replication", "--flush", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["via"], "replication", "{v}");
    assert_eq!(target.digest(), src.digest());
    // Filters: the snapshot re-emitted with only those keys (a new RDB,
    // streamed) goes through the feed, and equals what RESTORE loads.
    let args = [
        "--db", "9", "--db", "2", "--match", "k:*", "--type", "string",
    ];
    let fed = RedisServer::start(&[]);
    let (code, v, err) = import(&fed, &b, &args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["via"], "replication", "{v}");
    assert_eq!(v["loaded"], 1000, "{v}");
    let restored = RedisServer::start(&[]);
    let (code, v, err) = import(&restored, &b, &[&args[..], &["--via", "restore"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["loaded"], 1000, "{v}");
    assert_eq!(fed.digest(), restored.digest());
    // --target-db merges databases key by key: RESTORE, said so.
    let merged = RedisServer::start(&[]);
    let (code, v, err) = import(&merged, &b, &["--db", "2", "--target-db", "5"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["via"], "restore", "{v}");
    assert!(err.contains("--target-db"), "{err}");
}

/// A target that cannot connect back to the address the feed listens on
/// (here a server in its own network namespace, as one on another host
/// given an address of this one): `--via replication` fails in one line
/// naming the address and --feed-listen, and the target is a primary again
/// with its masterauth as before and nothing loaded; auto loads with RESTORE
/// and says why.
#[test]
fn a_target_that_cannot_connect_back_falls_back_or_fails() {
    let src = RedisServer::start(&[]);
    let b = backup(&src);
    let target = RedisServer::start_isolated(&[]);
    target
        .client()
        .ok(&["CONFIG", "SET", "masterauth", "before-feed"]);
    let wait = ["--feed-connect-timeout", "2"];
    let (code, _, err) = import(
        &target,
        &b,
        &[&wait[..], &["--via", "replication"]].concat(),
    );
    assert_eq!(code, 1, "{err}");
    let line = one_line_error(&err);
    assert!(
        line.contains("--via replication")
            && line.contains("did not connect back to 127.0.0.1:")
            && line.contains("--feed-listen"),
        "{line}"
    );
    assert_eq!(dbsize(&target), 0, "nothing loaded");
    assert_primary_again(&target, "before-feed");
    assert!(!err.contains("before-feed"), "{err}");
    let (code, v, err) = import(&target, &b, &wait);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["via"], "restore", "{v}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("redvault: note: loading with RESTORE")
                && l.contains("did not connect back")),
        "{err}"
    );
    assert_eq!(target.digest(), src.digest());
    assert_primary_again(&target, "before-feed");
}

/// A byte flipped in a late chunk of the sealed base (small chunks: the
/// earlier ones are served first): that chunk fails authentication, the
/// transfer never completes (its end is held back), and the target keeps
/// nothing of it: a primary, empty, its masterauth as before. The error
/// names the chunk.
#[test]
fn a_tampered_chunk_is_never_loaded_by_the_target() {
    let src = RedisServer::start(&[]);
    let b = backup_with(&src, &["--chunk-size", "65536"]);
    let base = find_file(&b.dir, "base.rdb.rv");
    let mut bytes = std::fs::read(&base).unwrap();
    let at = bytes.len() * 3 / 4;
    bytes[at] ^= 0x40;
    std::fs::write(&base, &bytes).unwrap();
    let target = RedisServer::start(&[]);
    let (code, _, err) = import(&target, &b, &["--via", "replication"]);
    assert_eq!(code, 1, "{err}");
    let line = one_line_error(&err);
    assert!(line.contains("chunk"), "{line}");
    assert_eq!(dbsize(&target), 0, "nothing of a tampered backup loaded");
    assert_primary_again(&target, "");
}

/// A plain RDB file with a byte flipped (no seal, no digest): its own CRC64
/// is checked as it is served, and the target never completes the
/// transfer: a primary, empty, refusing nothing afterwards.
#[test]
fn a_corrupt_plain_rdb_is_never_loaded_by_the_target() {
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    src.client().ok(&["SAVE"]);
    let work = tempfile::tempdir().unwrap();
    let rdb = work.path().join("dump.rdb");
    let mut bytes = std::fs::read(src.dir.path().join("dump.rdb")).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&rdb, &bytes).unwrap();
    let target = RedisServer::start(&[]);
    let (code, _, err) = run(redvault()
        .args([
            "import",
            "--redis",
            &target.url(),
            "--via",
            "replication",
            "--from",
        ])
        .arg(&rdb));
    assert_eq!(code, 1, "{err}");
    let line = one_line_error(&err);
    assert!(line.contains("CRC64") && line.contains("corrupt"), "{line}");
    assert_eq!(dbsize(&target), 0);
    assert_primary_again(&target, "");
}

/// SIGTERM while the target replicates from the feed: redvault exits non-zero
/// saying so, and the target is a primary again (never left replicating from
/// a dead address). The signal lands while the feed runs: the target is
/// polled until it reports the sync (bounded).
#[test]
fn sigterm_during_the_feed_leaves_the_target_a_primary() {
    let src = RedisServer::start(&[]);
    // Enough data that the transfer and load take a moment.
    {
        let mut c = src.client();
        let blob = "x".repeat(4096);
        for batch in 0..50 {
            let mut args: Vec<String> = vec!["MSET".into()];
            for i in 0..1000 {
                args.push(format!("big:{batch}:{i}"));
                args.push(blob.clone());
            }
            c.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
    let b = backup(&src);
    let target = RedisServer::start(&[]);
    let mut child = redvault()
        .args([
            "import",
            "--redis",
            &target.url(),
            "--from",
            &b.store,
            "--kek",
        ])
        .arg(&b.kek)
        .args(["--via", "replication"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut saw_replica = false;
    while Instant::now() < deadline {
        if info_field(&target, "replication", "role") == "slave" {
            saw_replica = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(saw_replica, "the target never became the feed's replica");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // The feed finished before the signal: the data is whole.
        assert_eq!(target.digest(), src.digest());
    } else {
        assert!(err.contains("interrupted"), "{err}");
    }
    assert_primary_again(&target, "");
}

fn find_file(dir: &std::path::Path, name: &str) -> PathBuf {
    files_below(dir)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == name))
        .unwrap_or_else(|| panic!("no {name} below {}", dir.display()))
}
