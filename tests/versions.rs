//! The version matrix: Redis 6.0, 6.2, 7.0, 7.4, 8.2 and Valkey 8.1, real
//! servers (scripts/setup). Every version's export (sealed, plain, and by
//! SCAN) imports into every version that reads its RDB, with equal digests;
//! into an older one, through conversion, with equal digests and the
//! conversion named; written with `--rdb-version 9`, it loads natively into
//! Redis 6.0. The
//! daemon follows each version, continues its stream after a restart
//! (PSYNC continue), and restores into the same version and into the oldest.

mod common;

use common::daemon::Daemon;
use common::redis::*;
use common::versions::{all, Version};
use common::*;
use std::path::Path;

/// How each version is exported: sealed, plain, and sealed by SCAN.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sealed,
    Plain,
    Scan,
    /// Plain, written as RDB 9 (`--rdb-version 9`).
    Rdb9,
}

fn name(v: &Version, kind: Kind) -> String {
    match kind {
        Kind::Sealed => v.label.to_string(),
        Kind::Plain => format!("{}-plain", v.label),
        Kind::Scan => format!("{}-scan", v.label),
        Kind::Rdb9 => format!("{}-rdb9", v.label),
    }
}

fn export(v: &Version, src: &RedisServer, work: &Path, store: &str, kind: Kind) {
    let mut c = redvault();
    c.args(["export", "--redis", &src.url(), "--to", store, "--source"])
        .arg(name(v, kind));
    match kind {
        Kind::Plain => {
            c.arg("--plain");
        }
        Kind::Rdb9 => {
            c.args(["--plain", "--rdb-version", "9"]);
        }
        Kind::Scan => {
            c.args(["--method", "scan", "--kek"])
                .arg(work.join("kek.pub.pem"));
        }
        Kind::Sealed => {
            c.arg("--kek").arg(work.join("kek.pub.pem"));
        }
    }
    c.arg("--signing-key").arg(work.join("signing.pem"));
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 0, "export from {}: {err}", v.label);
}

/// Exit code, stdout and stderr (the summary) of an import.
fn import(
    source: &str,
    dst: &RedisServer,
    work: &Path,
    store: &str,
    plain: bool,
) -> (i32, String, String) {
    let mut c = redvault();
    c.args([
        "import",
        "--redis",
        &dst.url(),
        "--from",
        store,
        "--source",
        source,
    ]);
    c.arg("--trust").arg(work.join("signing.pub.pem"));
    if !plain {
        c.arg("--kek").arg(work.join("kek.pem"));
    }
    run(&mut c)
}

/// The one base.rdb a plain export of `source` wrote.
fn plain_base(store: &Path, source: &str) -> std::path::PathBuf {
    let gens: Vec<_> = std::fs::read_dir(store.join(source))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("base.rdb").exists())
        .collect();
    assert_eq!(gens.len(), 1, "{source}: {gens:?}");
    gens[0].join("base.rdb")
}

/// The pending-entries summary of group g1 (set by fill_all_types).
fn pending(s: &RedisServer) -> String {
    format!("{:?}", s.client().ok(&["XPENDING", "stream", "g1"]))
}

/// Milliseconds until `ttl:key` (set by fill_all_types) expires.
fn pttl(s: &RedisServer) -> i64 {
    match s.client().ok(&["PTTL", "ttl:key"]) {
        Resp::Int(t) => t,
        other => panic!("PTTL: {other:?}"),
    }
}

#[test]
fn every_export_imports_into_every_version_that_reads_it() {
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    let versions = all();
    for v in &versions {
        let src = RedisServer::start_bin(&v.bin, &[]);
        fill_all_types(&mut src.client());
        let digest = src.digest();
        for kind in [Kind::Sealed, Kind::Plain, Kind::Scan, Kind::Rdb9] {
            export(v, &src, work.path(), &store, kind);
        }
        let ttl = pttl(&src);
        let pel = pending(&src);
        // Written as RDB 9: Redis 6.0 loads it at startup, whole.
        let oldest = &versions[0];
        let file = plain_base(&work.path().join("store"), &name(v, Kind::Rdb9));
        assert_eq!(&std::fs::read(&file).unwrap()[..9], b"REDIS0009");
        let native = RedisServer::start_bin_with_rdb(&oldest.bin, &[], &file);
        assert_eq!(
            native.digest(),
            digest,
            "{} as RDB 9 -> {}",
            v.label,
            oldest.label
        );
        assert_eq!(pending(&native), pel, "{} as RDB 9", v.label);
        for t in &versions {
            let dst = RedisServer::start_bin(&t.bin, &[]);
            // The summary line is on stderr.
            let (code, _, err) = import(v.label, &dst, work.path(), &store, false);
            if t.rdb < v.rdb {
                // Into an older server: converted, and said.
                assert_eq!(code, 0, "{} -> {}: {err}", v.label, t.label);
                assert!(
                    err.contains(&format!("converted for RDB {}", t.rdb)),
                    "{} -> {}: {err}",
                    v.label,
                    t.label
                );
                assert_eq!(
                    dst.digest(),
                    digest,
                    "{} -> {}: data differs",
                    v.label,
                    t.label
                );
                assert_eq!(
                    pending(&dst),
                    pel,
                    "{} -> {}: consumer groups differ",
                    v.label,
                    t.label
                );
                continue;
            }
            assert_eq!(code, 0, "{} -> {}: {err}", v.label, t.label);
            assert_eq!(
                dst.digest(),
                digest,
                "{} -> {}: data differs",
                v.label,
                t.label
            );
            // By SCAN into every version that reads it; plain into its own.
            let kinds: &[Kind] = if t.label == v.label {
                &[Kind::Scan, Kind::Plain]
            } else {
                &[Kind::Scan]
            };
            for &kind in kinds {
                let dst = RedisServer::start_bin(&t.bin, &[]);
                let source = name(v, kind);
                let (code, _, err) =
                    import(&source, &dst, work.path(), &store, kind == Kind::Plain);
                assert_eq!(code, 0, "{source} -> {}: {err}", t.label);
                assert_eq!(
                    dst.digest(),
                    digest,
                    "{source} -> {}: data differs",
                    t.label
                );
                // The digest says only that a key expires; the time must
                // be right too (PTTL on the server's clock before 7.0).
                let got = pttl(&dst);
                assert!(
                    (got - ttl).abs() < 60_000,
                    "{source} -> {}: ttl:key expires in {got} ms, the source's in {ttl} ms",
                    t.label
                );
            }
        }
    }
}

#[test]
fn the_daemon_follows_continues_and_restores_on_every_version() {
    for v in all() {
        let work = tempfile::tempdir().unwrap();
        write_test_keys(work.path());
        std::fs::create_dir(work.path().join("store")).unwrap();
        let store = format!("file://{}", work.path().join("store").display());
        let primary = RedisServer::start_bin(&v.bin, &[]);
        let daemon = || {
            let command = || {
                let mut c = redvault();
                c.args(["daemon", "--redis", &primary.url(), "--to", &store])
                    .args(["--source", "cache1", "--segment-interval-ms", "100"])
                    .arg("--kek")
                    .arg(work.path().join("kek.pub.pem"))
                    .arg("--state-dir")
                    .arg(work.path().join("state"));
                c
            };
            Daemon::spawn(command, work.path())
        };
        let mut d = daemon();
        d.wait_up();
        fill_all_types(&mut primary.client());
        d.wait_durable(&primary);
        d.stop();
        // Written while no daemon runs: the next one continues the stream.
        primary.client().ok(&["SET", "while-stopped", "1"]);
        let mut d = daemon();
        d.wait_durable(&primary);
        for i in 0..20 {
            primary.client().ok(&["INCR", &format!("after:{}", i % 3)]);
        }
        d.wait_durable(&primary);
        d.stop();
        assert_eq!(
            generation_count(&work.path().join("store/cache1")),
            1,
            "{}: the restart did not continue the generation; log:\n{}",
            v.label,
            d.log()
        );
        // Into the same version, and into the oldest (converted, when newer).
        let oldest = &all()[0];
        for t in [&v, oldest] {
            let dst = RedisServer::start_bin(&t.bin, &[]);
            let (code, _, err) = run(&mut restore_cmd(
                &dst.url(),
                &store,
                "cache1",
                &work.path().join("kek.pem"),
            ));
            assert_eq!(code, 0, "{} -> {}: {err}", v.label, t.label);
            assert_eq!(
                dst.digest(),
                primary.digest(),
                "{} -> {}: restored data differs",
                v.label,
                t.label
            );
            if t.rdb < v.rdb {
                assert!(
                    err.contains("converted for RDB 9"),
                    "{} -> {}: {err}",
                    v.label,
                    t.label
                );
            }
        }
    }
}

/// Hash field TTLs (Redis 7.4) and function libraries (7.0) have no form in
/// older servers: restored into one, the fields stay without their TTLs (those
/// already expired are dropped), libraries are left out, and the summary names
/// both; a server that has them keeps them.
#[test]
fn what_an_older_server_cannot_hold_is_named() {
    let versions = all();
    let by = |label: &str| versions.iter().find(|v| v.label == label).unwrap();
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    let src = RedisServer::start_bin(&by("redis-7.4").bin, &[]);
    let mut c = src.client();
    // A small hash (a listpack with TTLs) and a large one (a table with TTLs).
    c.ok(&["HSET", "hx:small", "keep", "1", "ttl", "2", "soon", "3"]);
    let mut args = vec!["HSET".to_string(), "hx:large".into()];
    for i in 0..300 {
        args.extend([format!("f{i}"), format!("v{i}")]);
    }
    c.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for key in ["hx:small", "hx:large"] {
        let (ttl, soon) = if key == "hx:small" {
            ("ttl", "soon")
        } else {
            ("f1", "f2")
        };
        c.ok(&["HPEXPIRE", key, "86400000", "FIELDS", "1", ttl]);
        c.ok(&["HPEXPIRE", key, "1500", "FIELDS", "1", soon]);
    }
    c.ok(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=lib\nredis.register_function('one', function() return 1 end)",
    ]);
    export(by("redis-7.4"), &src, work.path(), &store, Kind::Sealed);
    // The short TTLs pass before the import.
    std::thread::sleep(std::time::Duration::from_millis(2_000));
    for (label, keeps) in [
        ("redis-7.0", false),
        ("redis-6.0", false),
        ("redis-8.2", true),
    ] {
        let dst = RedisServer::start_bin(&by(label).bin, &[]);
        let (code, _, err) = import("redis-7.4", &dst, work.path(), &store, false);
        assert_eq!(code, 0, "{label}: {err}");
        let mut d = dst.client();
        assert_eq!(
            d.ok(&["HGET", "hx:small", "soon"]),
            Resp::Bulk(None),
            "{label}"
        );
        assert_eq!(
            d.ok(&["HGET", "hx:large", "f2"]),
            Resp::Bulk(None),
            "{label}"
        );
        if !keeps {
            // Converted: the expired fields were dropped, not sent.
            assert_eq!(d.ok(&["HLEN", "hx:small"]), Resp::Int(2), "{label}");
            assert_eq!(d.ok(&["HLEN", "hx:large"]), Resp::Int(299), "{label}");
        }
        assert_eq!(
            d.ok(&["HGET", "hx:small", "ttl"]),
            Resp::Bulk(Some(b"2".to_vec())),
            "{label}"
        );
        if keeps {
            assert!(!err.contains("cannot hold"), "{label}: {err}");
            match d.ok(&["HPTTL", "hx:small", "FIELDS", "1", "ttl"]) {
                Resp::Array(a) => assert!(
                    matches!(a[..], [Resp::Int(t)] if t > 80_000_000),
                    "{label}: {a:?}"
                ),
                other => panic!("{label}: {other:?}"),
            }
        } else {
            assert!(err.contains("2 hash field TTLs"), "{label}: {err}");
        }
        // Libraries: from Redis 7.0 on.
        if label == "redis-6.0" {
            assert!(err.contains("1 function libraries"), "{label}: {err}");
        } else {
            assert!(!err.contains("function libraries"), "{label}: {err}");
            assert!(
                matches!(d.ok(&["FUNCTION", "LIST"]), Resp::Array(a) if a.len() == 1),
                "{label}: the library is missing"
            );
        }
    }
}
