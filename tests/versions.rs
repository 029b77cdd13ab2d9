//! The version matrix: Redis 6.0, 6.2, 7.0, 7.4, 8.2 and Valkey 8.1, real
//! servers (scripts/setup). Every version's export (sealed, plain, and by
//! SCAN) imports into every version that reads its RDB, with equal digests; into
//! one that does not, it is refused with one line naming both sides. The
//! daemon follows each version, continues its stream after a restart
//! (PSYNC continue), and restores into the same version.

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
}

fn name(v: &Version, kind: Kind) -> String {
    match kind {
        Kind::Sealed => v.label.to_string(),
        Kind::Plain => format!("{}-plain", v.label),
        Kind::Scan => format!("{}-scan", v.label),
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

fn import(source: &str, dst: &RedisServer, work: &Path, store: &str, plain: bool) -> (i32, String) {
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
    let (code, _, err) = run(&mut c);
    (code, err)
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
        for kind in [Kind::Sealed, Kind::Plain, Kind::Scan] {
            export(v, &src, work.path(), &store, kind);
        }
        let ttl = pttl(&src);
        for t in &versions {
            let dst = RedisServer::start_bin(&t.bin, &[]);
            let (code, err) = import(v.label, &dst, work.path(), &store, false);
            if t.rdb >= v.rdb {
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
                    let (code, err) =
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
            } else {
                assert_eq!(
                    code, 1,
                    "{} -> {} loaded an RDB it cannot read",
                    v.label, t.label
                );
                let line = one_line_error(&err);
                let name = t.label.replace('-', " ");
                assert!(
                    line.contains(&format!("RDB version {}", v.rdb))
                        && line.to_lowercase().contains(&name),
                    "{} -> {}: {line}",
                    v.label,
                    t.label
                );
                assert_eq!(
                    dst.client().ok(&["DBSIZE"]),
                    Resp::Int(0),
                    "{} -> {}",
                    v.label,
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
        let dst = RedisServer::start_bin(&v.bin, &[]);
        let (code, _, err) = run(redvault()
            .args([
                "restore",
                "--redis",
                &dst.url(),
                "--from",
                &store,
                "--source",
                "cache1",
            ])
            .arg("--kek")
            .arg(work.path().join("kek.pem")));
        assert_eq!(code, 0, "{}: {err}", v.label);
        assert_eq!(
            dst.digest(),
            primary.digest(),
            "{}: restored data differs",
            v.label
        );
    }
}
