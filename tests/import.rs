//! `redvault import` and `inspect` against real redis-servers: round trips,
//! filters, conflicts, TTLs, and every bad input.

mod common;

use common::redis::*;
use common::*;
use std::path::{Path, PathBuf};

type Backup = SealedBackup;

/// Exports `src` sealed into a fresh file:// store.
fn backup(src: &RedisServer, extra: &[&str]) -> Backup {
    SealedBackup::export(&src.url(), extra)
}

fn import(target: &RedisServer, b: &Backup, extra: &[&str]) -> (i32, serde_json::Value, String) {
    b.import(&target.url(), extra)
}

fn dbsize(s: &RedisServer, db: u64) -> i64 {
    let mut c = s.client();
    c.ok(&["SELECT", &db.to_string()]);
    match c.ok(&["DBSIZE"]) {
        Resp::Int(n) => n,
        r => panic!("{r:?}"),
    }
}

/// The base snapshot of a backup, unsealed to a plain RDB file.
fn unseal_base(b: &Backup, out: &Path) {
    let base = find(&b.dir, "base.rdb.rv");
    let (code, _, err) = run(redvault()
        .args(["unseal", "--kek"])
        .arg(&b.kek)
        .arg(base)
        .arg(out));
    assert_eq!(code, 0, "{err}");
}

fn find(dir: &Path, name: &str) -> PathBuf {
    find_in(dir, name).unwrap_or_else(|| panic!("{name} not under {}", dir.display()))
}

fn find_in(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if let Some(f) = find_in(&p, name) {
                return Some(f);
            }
        } else if p.file_name().unwrap() == name {
            return Some(p);
        }
    }
    None
}

#[test]
fn backup_round_trip_gives_the_same_digest() {
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let b = backup(&src, &[]);
    let target = RedisServer::start(&[]);
    let (code, v, err) = import(&target, &b, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(target.digest(), src.digest());
    let total: i64 = [0, 1, 7].iter().map(|db| dbsize(&src, *db)).sum();
    assert_eq!(v["loaded"], total);
    assert_eq!(v["failed"], 0);
    // TTLs survive as absolute times.
    let ttl = match target.client().ok(&["PTTL", "ttl:key"]) {
        Resp::Int(n) => n,
        r => panic!("{r:?}"),
    };
    assert!(ttl > 80_000_000, "{ttl}");
}

#[test]
fn plain_and_compressed_rdb_files_and_blobs_import() {
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let b = backup(&src, &[]);
    let rdb = b.dir.join("dump.rdb");
    unseal_base(&b, &rdb);
    let zst = b.dir.join("dump.rdb.zst");
    assert!(std::process::Command::new("zstd")
        .arg("-q")
        .arg(&rdb)
        .arg("-o")
        .arg(&zst)
        .status()
        .unwrap()
        .success());
    let gz = b.dir.join("dump.rdb.gz");
    let gzipped = std::process::Command::new("gzip")
        .arg("-c")
        .arg(&rdb)
        .output()
        .unwrap();
    assert!(gzipped.status.success());
    std::fs::write(&gz, gzipped.stdout).unwrap();
    // Each as a local path and as a blob by store URL.
    for file in [&rdb, &zst, &gz] {
        for from in [
            file.display().to_string(),
            format!("file://{}", file.display()),
        ] {
            let target = RedisServer::start(&[]);
            let (code, _, err) =
                run(redvault().args(["import", "--redis", &target.url(), "--from", &from]));
            assert_eq!(code, 0, "{from}: {err}");
            assert_eq!(target.digest(), src.digest(), "{from}");
        }
    }
}

/// Filters, checked against the same filter applied to the source by hand.
#[test]
fn filters_match_the_same_filter_applied_by_hand() {
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let b = backup(&src, &[]);
    let rdb = b.dir.join("dump.rdb");
    unseal_base(&b, &rdb);

    let target = RedisServer::start(&[]);
    let (code, v, err) = import(
        &target,
        &b,
        &[
            "--db", "0", "--match", "*:large", "--match", "hash:*", "--type", "hash", "--type",
            "list",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // By hand: a copy of the source, every key not passing the filter deleted.
    let by_hand = RedisServer::start_with_rdb(&[], Some(&rdb));
    let mut c = by_hand.client();
    for db in ["1", "7"] {
        c.ok(&["SELECT", db]);
        c.ok(&["FLUSHDB"]);
    }
    c.ok(&["SELECT", "0"]);
    let keys = match c.ok(&["KEYS", "*"]) {
        Resp::Array(a) => a,
        r => panic!("{r:?}"),
    };
    for k in keys {
        let Resp::Bulk(Some(k)) = k else { panic!() };
        let t = match c.cmd(&[b"TYPE", &k]).unwrap() {
            Resp::Status(t) => t,
            r => panic!("{r:?}"),
        };
        let name_ok = redvault::target::glob_match(b"*:large", &k)
            || redvault::target::glob_match(b"hash:*", &k);
        if !(name_ok && (t == "hash" || t == "list")) {
            c.cmd(&[b"DEL", &k]).unwrap();
        }
    }
    assert_eq!(target.digest(), by_hand.digest());
    assert_eq!(v["loaded"].as_i64().unwrap(), dbsize(&by_hand, 0));
    assert!(v["filtered"].as_u64().unwrap() > 0);

    // --target-db moves a database.
    let t2 = RedisServer::start(&[]);
    let (code, _, err) = import(&t2, &b, &["--db", "7", "--target-db", "3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!((dbsize(&t2, 0), dbsize(&t2, 3)), (0, dbsize(&src, 7)));
}

#[test]
fn conflict_policies() {
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let b = backup(&src, &[]);
    let target = RedisServer::start(&[]);
    target
        .client()
        .ok(&["SET", "raw", "the target's own value"]);
    target.client().ok(&["SET", "only-in-target", "x"]);

    let (code, _, err) = import(&target, &b, &[]);
    assert_ne!(code, 0);
    let line = one_line_error(&err);
    assert!(line.contains("key raw already exists in db 0"), "{line}");

    let (code, v, err) = import(&target, &b, &["--skip-existing"]);
    assert_eq!(code, 0, "{err}");
    assert!(v["skipped_existing"].as_u64().unwrap() >= 1);
    assert!(
        matches!(target.client().ok(&["GET", "raw"]), Resp::Bulk(Some(v)) if v == b"the target's own value")
    );

    let (code, _, err) = import(&target, &b, &["--replace"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        matches!(target.client().ok(&["GET", "raw"]), Resp::Bulk(Some(v)) if v == b"hello world, a raw string")
    );

    // --flush needs --yes without a terminal; with it the target equals the source.
    let (code, _, err) = import(&target, &b, &["--flush"]);
    assert_ne!(code, 0);
    assert!(one_line_error(&err).contains("add --yes"), "{err}");
    let (code, _, err) = import(&target, &b, &["--flush", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(target.digest(), src.digest());
}

#[test]
fn expired_keys_are_skipped_and_counted_and_dry_run_changes_nothing() {
    let src = RedisServer::start(&[]);
    let mut c = src.client();
    c.ok(&["SET", "stays", "1"]);
    c.ok(&["SET", "goes", "1", "PX", "1500"]);
    let b = backup(&src, &[]);
    std::thread::sleep(std::time::Duration::from_millis(2000));
    let target = RedisServer::start(&[]);
    let (code, v, err) = import(&target, &b, &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (
            v["loaded"].as_u64(),
            v["expired"].as_u64(),
            v["dry_run"].as_bool()
        ),
        (Some(1), Some(1), Some(true))
    );
    assert_eq!(dbsize(&target, 0), 0, "dry run wrote nothing");
    // The RESTORE loader skips what expired (a replica fed the snapshot loads
    // it, and expires it once a primary again).
    let (code, v, err) = import(&target, &b, &["--via", "restore"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (v["loaded"].as_u64(), v["expired"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(dbsize(&target, 0), 1);
}

#[test]
fn a_tampered_chunk_is_named_and_nothing_from_it_on_is_loaded() {
    let src = RedisServer::start(&["--rdbcompression", "no"]);
    let mut c = src.client();
    for i in 0..3000 {
        c.ok(&[
            "SET",
            &format!("k{i:05}"),
            &format!("value-{i}-{}", "v".repeat(200)),
        ]);
    }
    let b = backup(&src, &["--chunk-size", "65536"]);
    let base = find(&b.dir, "base.rdb.rv");
    let mut bytes = std::fs::read(&base).unwrap();
    let f = frames(&bytes);
    assert!(f.len() >= 5, "{} chunks", f.len());
    bytes[f[3].0 + 30] ^= 0x40;
    std::fs::write(&base, bytes).unwrap();
    let target = RedisServer::start(&[]);
    let (code, _, err) = import(&target, &b, &[]);
    assert_ne!(code, 0);
    let line = one_line_error(&err);
    assert!(
        line.contains("chunk 3: authentication failed") && line.contains("base.rdb.rv"),
        "{line}"
    );
    // Only keys wholly inside chunks 0-2 can have loaded.
    assert!(dbsize(&target, 0) < 3000 * 3 / 5, "{}", dbsize(&target, 0));
}

#[test]
fn damaged_rdb_files_fail_with_their_cause() {
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let b = backup(&src, &[]);
    let rdb = b.dir.join("dump.rdb");
    unseal_base(&b, &rdb);
    let good = std::fs::read(&rdb).unwrap();
    let target = RedisServer::start(&[]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.rdb",
            good[..good.len() * 2 / 3].to_vec(),
            "truncated at byte offset",
        ),
        (
            "crc.rdb",
            {
                let mut g = good.clone();
                let n = g.len();
                g[n - 3] ^= 1;
                g
            },
            "checksum mismatch",
        ),
        (
            "magic.rdb",
            {
                let mut g = good.clone();
                g[0] = b'X';
                g
            },
            "bad magic",
        ),
        (
            "newer.rdb",
            {
                let mut g = good.clone();
                g[5..9].copy_from_slice(b"0013");
                g
            },
            "RDB version 13 is newer",
        ),
        // SELECTDB 0, a string whose key length byte is 0x82 (no such encoding).
        (
            "length.rdb",
            b"REDIS0009\xfe\x00\x00\x82abc".to_vec(),
            "corrupt at byte offset 12: bad length byte 0x82",
        ),
    ];
    for (name, bytes, expect) in cases {
        let p = b.dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let (code, _, err) = run(redvault()
            .args([
                "--json",
                "import",
                "--replace",
                "--redis",
                &target.url(),
                "--from",
            ])
            .arg(&p));
        assert_ne!(code, 0, "{name}");
        let line = one_line_error(&err);
        assert!(
            line.contains(expect) && line.contains(name),
            "{name}: {line}"
        );
    }
}

#[test]
fn target_unreachable_read_only_or_out_of_memory_is_named() {
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let b = backup(&src, &[]);
    let port = free_port();
    let (code, _, err) = run(redvault()
        .args([
            "import",
            "--redis",
            &format!("redis://127.0.0.1:{port}"),
            "--from",
            &b.store,
            "--kek",
        ])
        .arg(&b.kek));
    assert_ne!(code, 0);
    assert!(
        one_line_error(&err).contains(&format!("cannot connect to Redis at 127.0.0.1:{port}")),
        "{err}"
    );

    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &src.port.to_string()]);
    let (code, _, err) = import(&replica, &b, &["--replace"]);
    assert_ne!(code, 0);
    assert!(one_line_error(&err).contains("READONLY"), "{err}");

    let small = RedisServer::start(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let (code, _, err) = import(&small, &b, &[]);
    assert_ne!(code, 0);
    let line = one_line_error(&err);
    assert!(
        line.contains("OOM") && line.contains("the target refused key"),
        "{line}"
    );
}

/// Keys of this many bytes each as one RESTORE, for the split tests.
fn fill_values_over_1mb(c: &mut Client) {
    let text = |n: u64, seed: u64| -> String {
        (0..n)
            .map(|i| char::from(b'a' + (((i + seed) * 2654435761) >> 7) as u8 % 26))
            .collect()
    };
    c.ok(&["SET", "small", "1"]);
    // Over the limit only with RESTORE's few bytes around it.
    c.ok(&["SET", "huge", &text(1_048_570, 0)]);
    c.ok(&["PEXPIRE", "huge", "86400000"]);
    for chunk in 0..4 {
        let items: Vec<String> = (0..1000).map(|i| text(400, chunk * 1000 + i)).collect();
        let mut list = vec!["RPUSH", "biglist"];
        list.extend(items.iter().map(String::as_str));
        c.ok(&list);
        let mut set = vec!["SADD", "bigset"];
        set.extend(items.iter().map(String::as_str));
        c.ok(&set);
        let mut hash = vec!["HSET".to_string(), "bighash".into()];
        let mut zset = vec!["ZADD".to_string(), "bigzset".into()];
        for (i, it) in items.iter().enumerate() {
            hash.extend([format!("f{chunk}-{i}"), it.clone()]);
            zset.extend([format!("{}.25", chunk * 1000 + i as u64), it.clone()]);
        }
        c.ok(&hash.iter().map(String::as_str).collect::<Vec<_>>());
        c.ok(&zset.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// Temporary keys the split path left behind (none, ever).
fn leftovers(s: &RedisServer) -> Resp {
    s.client().ok(&["KEYS", "*redvault-part*"])
}

#[test]
fn values_over_the_targets_proto_max_bulk_len_go_as_commands() {
    let src = RedisServer::start(&["--rdbcompression", "no"]);
    fill_values_over_1mb(&mut src.client());
    let b = backup(&src, &[]);
    let target = RedisServer::start(&["--proto-max-bulk-len", "1mb"]);
    // The RESTORE loader (the feed is not bound by proto-max-bulk-len).
    let (code, v, err) = import(&target, &b, &["--via", "restore"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["split"], 5, "{v}");
    assert_eq!(v["loaded"], 6, "{v}");
    assert_eq!(target.digest(), src.digest());
    assert_eq!(leftovers(&target), Resp::Array(vec![]));
    let ttl = match target.client().ok(&["PTTL", "huge"]) {
        Resp::Int(t) => t,
        r => panic!("{r:?}"),
    };
    assert!(ttl > 86_000_000, "huge expires in {ttl} ms");
    // The key exists: the default policy names it; --skip-existing leaves
    // it; --replace replaces it. No temporary key stays in any case.
    target.client().ok(&["DEL", "biglist"]);
    target.client().ok(&["RPUSH", "biglist", "mine"]);
    let only = ["--match", "biglist"];
    let (code, _, err) = import(&target, &b, &only);
    assert_ne!(code, 0);
    let line = one_line_error(&err);
    assert!(line.contains("key biglist already exists"), "{line}");
    let (code, v, err) = import(&target, &b, &[&only[..], &["--skip-existing"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["skipped_existing"], 1, "{v}");
    assert_eq!(target.client().ok(&["LLEN", "biglist"]), Resp::Int(1));
    let (code, _, err) = import(&target, &b, &[&only[..], &["--replace"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(target.digest(), src.digest());
    assert_eq!(leftovers(&target), Resp::Array(vec![]));
}

/// A stream is not split; a string longer than the target's limit cannot
/// exist there at all. Either is named, and the import fails.
#[test]
fn a_value_that_cannot_be_split_is_named() {
    for (key, why) in [
        ("bigstream", "stream values are not split"),
        ("bigstring", "the longest string it holds"),
    ] {
        let src = RedisServer::start(&["--rdbcompression", "no"]);
        let mut c = src.client();
        c.ok(&["SET", "small", "1"]);
        if key == "bigstream" {
            let payload = "p".repeat(500);
            for i in 0..3000 {
                c.ok(&["XADD", key, "*", "n", &i.to_string(), "payload", &payload]);
            }
        } else {
            c.ok(&["SET", key, &"s".repeat(1_500_000)]);
        }
        let b = backup(&src, &[]);
        let target = RedisServer::start(&["--proto-max-bulk-len", "1mb"]);
        let (code, _, err) = import(&target, &b, &["--via", "restore"]);
        assert_ne!(code, 0);
        let line = one_line_error(&err);
        assert!(
            line.contains(&format!("key {key}"))
                && line.contains("proto-max-bulk-len of 1048576")
                && line.contains(why),
            "{line}"
        );
        assert_eq!(leftovers(&target), Resp::Array(vec![]));
    }
}

#[test]
fn function_libraries_are_restored_with_the_conflict_policy() {
    let src = RedisServer::start(&[]);
    let code = "#!lua name=mylib\nredis.register_function('hello', function() return 'hi' end)";
    src.client().ok(&["FUNCTION", "LOAD", code]);
    src.client().ok(&["SET", "k", "v"]);
    let b = backup(&src, &[]);
    let target = RedisServer::start(&[]);
    let (code_rc, v, err) = import(&target, &b, &[]);
    assert_eq!(code_rc, 0, "{err}");
    assert_eq!(v["functions"], 1);
    assert!(
        matches!(target.client().ok(&["FCALL", "hello", "0"]), Resp::Bulk(Some(r)) if r == b"hi")
    );
    // Again: the library exists. Default stops and names it; --skip-existing
    // counts it; --replace replaces it.
    let (rc, _, err) = import(&target, &b, &[]);
    assert_ne!(rc, 0);
    let line = one_line_error(&err);
    assert!(
        line.contains("mylib") || line.contains("already exists"),
        "{line}"
    );
    let (rc, v, err) = import(&target, &b, &["--skip-existing"]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(v["skipped_existing"], 2, "the key and the library");
    let (rc, v, err) = import(&target, &b, &["--replace"]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(v["functions"], 1);
}

#[test]
fn a_sealed_backup_needs_the_private_kek() {
    let src = RedisServer::start(&[]);
    src.client().ok(&["SET", "a", "1"]);
    let b = backup(&src, &[]);
    let target = RedisServer::start(&[]);
    let import_without_kek = |extra: &[&str]| {
        run(redvault()
            .env_remove("REDVAULT_KEK")
            .args(["import", "--redis", &target.url(), "--from", &b.store])
            .args(extra))
    };
    // No KEK, so no signing key beside it to trust: the error says what to copy.
    let (code, _, err) = import_without_kek(&[]);
    assert_ne!(code, 0);
    assert!(
        one_line_error(&err).contains("no trusted signer is given: copy signing.pub.pem"),
        "{err}"
    );
    let trusted = b.kek.with_file_name("signing.pub.pem");
    let (code, _, err) = import_without_kek(&["--trust", trusted.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        one_line_error(&err).contains("the backup is sealed: pass --kek"),
        "{err}"
    );
    let (code, _, err) = run(redvault()
        .args([
            "import",
            "--redis",
            &target.url(),
            "--from",
            &b.store,
            "--kek",
        ])
        .arg(b.kek.with_file_name("kek.pub.pem")));
    assert_ne!(code, 0);
    assert!(
        one_line_error(&err).contains("holds only a public key"),
        "{err}"
    );
    assert_eq!(dbsize(&target, 0), 0);
}

#[test]
fn inspect_reports_versions_counts_and_biggest_keys() {
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let b = backup(&src, &[]);
    let (code, out, err) = run(redvault()
        .args([
            "--json", "inspect", "--top", "3", "--from", &b.store, "--kek",
        ])
        .arg(&b.kek));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let r = &v[0];
    assert_eq!(r["rdb_version"], 10);
    assert_eq!(r["aux"]["redis-ver"], "7.0.15");
    assert_eq!(r["keys_per_db"]["1"].as_i64(), Some(dbsize(&src, 1)));
    assert_eq!(r["keys_per_type"]["stream"], 1);
    assert_eq!(r["biggest"].as_array().unwrap().len(), 3);
    // The 3 MB string is compressed (LZF) in the RDB; the large list and hash lead.
    let names: Vec<&str> = r["biggest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x[0].as_str().unwrap())
        .collect();
    assert!(names.contains(&"list:large"), "{names:?}");
}

/// A part of a split value refused (the target out of memory): the load
/// stops naming it, the value never takes its key (the old one stays, even
/// under --replace), and the half-built temporary key expires on its own.
#[test]
fn a_split_value_refused_half_way_never_replaces_its_key() {
    let src = RedisServer::start(&["--rdbcompression", "no"]);
    fill_values_over_1mb(&mut src.client());
    let b = backup(&src, &[]);
    let target = RedisServer::start(&["--proto-max-bulk-len", "1mb"]);
    target.client().ok(&["RPUSH", "biglist", "mine"]);
    let used = match target.client().ok(&["INFO", "memory"]) {
        Resp::Bulk(Some(t)) => String::from_utf8(t)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse::<u64>().ok())
            .unwrap(),
        r => panic!("{r:?}"),
    };
    // Room for about half of the list.
    target
        .client()
        .ok(&["CONFIG", "SET", "maxmemory", &(used + 800_000).to_string()]);
    let (code, _, err) = import(&target, &b, &["--match", "biglist", "--replace"]);
    assert_ne!(code, 0);
    let line = one_line_error(&err);
    assert!(
        line.contains("key biglist") && line.contains("OOM"),
        "{line}"
    );
    target.client().ok(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(
        target.client().ok(&["LRANGE", "biglist", "0", "-1"]),
        Resp::Array(vec![Resp::Bulk(Some(b"mine".to_vec()))])
    );
    let Resp::Array(left) = leftovers(&target) else {
        panic!()
    };
    for k in left {
        let Resp::Bulk(Some(k)) = k else { panic!() };
        match target.client().cmd(&[b"PTTL", &k]).unwrap() {
            Resp::Int(t) => assert!(t > 0 && t <= 86_400_000, "{t}"),
            r => panic!("{r:?}"),
        }
    }
}
