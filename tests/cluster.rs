//! Redis Cluster, real clusters of Debian's redis-server (tests/common/cluster.rs):
//! a backup imports into clusters of 2 and 4 primaries, every key on the
//! node that owns its slot with an equal value and TTL; a slot migrating
//! during the import is followed (ASK); `--flush` empties every primary;
//! an export of a cluster node is refused, since it would hold one shard.

mod common;

use common::cluster::Cluster;
use common::redis::*;
use common::*;
use std::path::Path;

/// (db, key) of every key of a standalone server.
fn keys_of(s: &RedisServer) -> Vec<(u64, Vec<u8>)> {
    let mut out = vec![];
    let mut c = s.client();
    for db in 0..16u64 {
        c.ok(&["SELECT", &db.to_string()]);
        let Resp::Array(keys) = c.ok(&["KEYS", "*"]) else {
            panic!("KEYS")
        };
        for k in keys {
            if let Resp::Bulk(Some(k)) = k {
                out.push((db, k));
            }
        }
    }
    out
}

fn digest_value(c: &mut Client, key: &[u8]) -> Resp {
    c.cmd(&[b"DEBUG", b"DIGEST-VALUE", key]).unwrap()
}

fn pttl(c: &mut Client, key: &[u8]) -> i64 {
    match c.cmd(&[b"PTTL", key]).unwrap() {
        Resp::Int(t) => t,
        r => panic!("PTTL: {r:?}"),
    }
}

/// A standalone source with every type, several dbs, hash-tagged keys and a
/// function library, exported sealed into a fresh store.
fn backed_up_source(work: &Path) -> (RedisServer, String) {
    write_test_keys(work);
    std::fs::create_dir(work.join("store")).unwrap();
    let store = format!("file://{}", work.join("store").display());
    let src = RedisServer::start(&[]);
    let mut c = src.client();
    fill_all_types(&mut c);
    for i in 0..2000 {
        c.ok(&["SET", &format!("user:{i}"), &format!("v{i}")]);
        c.ok(&["SET", &format!("{{tagged}}:{i}"), "same slot"]);
    }
    c.ok(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=lib\nredis.register_function('one', function() return 1 end)",
    ]);
    let (code, _, err) = run(redvault()
        .args([
            "export",
            "--redis",
            &src.url(),
            "--to",
            &store,
            "--source",
            "src",
        ])
        .arg("--kek")
        .arg(work.join("kek.pub.pem")));
    assert_eq!(code, 0, "{err}");
    (src, store)
}

fn import(cluster: &Cluster, work: &Path, store: &str, extra: &[&str]) -> (i32, String) {
    let (code, _, err) = run(redvault()
        .args([
            "import",
            "--redis",
            &cluster.nodes[0].url(),
            "--from",
            store,
        ])
        .arg("--kek")
        .arg(work.join("kek.pem"))
        .args(extra));
    (code, err)
}

#[test]
fn a_backup_imports_into_clusters_of_any_shard_count() {
    let work = tempfile::tempdir().unwrap();
    let (src, store) = backed_up_source(work.path());
    let keys = keys_of(&src);
    for primaries in [2, 4] {
        let cluster = Cluster::start(primaries);
        // Databases other than 0 are refused, named, unless mapped to 0.
        let (code, err) = import(&cluster, work.path(), &store, &[]);
        assert_eq!(code, 1, "{primaries} primaries");
        let line = one_line_error(&err);
        assert!(
            line.contains("is in db 1") && line.contains("--target-db 0"),
            "{line}"
        );
        let (code, err) = import(
            &cluster,
            work.path(),
            &store,
            &["--target-db", "0", "--flush", "--yes"],
        );
        assert_eq!(code, 0, "{primaries} primaries: {err}");
        assert_eq!(cluster.dbsize(), keys.len() as i64, "{primaries} primaries");
        let mut s = src.client();
        for (db, key) in &keys {
            s.ok(&["SELECT", &db.to_string()]);
            let mut owner = cluster.owner(key).client();
            assert_eq!(
                digest_value(&mut owner, key),
                digest_value(&mut s, key),
                "{primaries} primaries: {} (db {db}) is not on the owner of its slot, or differs",
                key.escape_ascii()
            );
            let (want, got) = (pttl(&mut s, key), pttl(&mut owner, key));
            assert!(
                (want < 0 && got == want) || (want >= 0 && (got - want).abs() < 60_000),
                "{primaries} primaries: {} expires in {got} ms, at the source in {want}",
                key.escape_ascii()
            );
        }
        // The library is on every primary.
        for n in &cluster.nodes {
            assert!(
                matches!(n.client().ok(&["FCALL", "one", "0"]), Resp::Int(1)),
                "{primaries} primaries: the library is missing on a node"
            );
        }
        // --flush empties every primary before the load: loading again works.
        let (code, err) = import(
            &cluster,
            work.path(),
            &store,
            &["--target-db", "0", "--flush", "--yes", "--match", "user:*"],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(cluster.dbsize(), 2000, "{primaries} primaries");
    }
}

/// A slot being migrated while the import runs: the node giving it up
/// answers ASK for keys it does not hold, and redvault sends them (after
/// ASKING) to the node taking it.
#[test]
fn a_slot_migrating_during_the_import_is_followed() {
    let work = tempfile::tempdir().unwrap();
    let (_src, store) = backed_up_source(work.path());
    let cluster = Cluster::start(2);
    let slot = cluster.slot(b"{tagged}").to_string();
    let from = cluster.owner(b"{tagged}");
    let to = cluster.nodes.iter().find(|n| n.port != from.port).unwrap();
    let (from_id, to_id) = (Cluster::id(from), Cluster::id(to));
    to.client()
        .ok(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
    from.client()
        .ok(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    let (code, err) = import(&cluster, work.path(), &store, &["--match", "{tagged}:*"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("loaded 2000 keys"), "{err}");
    // The migration ends: the slot is the new node's, with every key.
    for n in &cluster.nodes {
        n.client()
            .ok(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
    }
    let mut c = to.client();
    match c.ok(&["CLUSTER", "COUNTKEYSINSLOT", &slot]) {
        Resp::Int(n) => assert_eq!(n, 2000),
        r => panic!("{r:?}"),
    }
    assert_eq!(
        c.ok(&["GET", "{tagged}:1999"]),
        Resp::Bulk(Some(b"same slot".to_vec()))
    );
    assert_eq!(from.client().ok(&["DBSIZE"]), Resp::Int(0));
}

/// One node's snapshot is one shard: exporting it would look whole and be
/// partial. Refused by PSYNC and by SCAN, naming why; nothing is written.
#[test]
fn an_export_of_a_cluster_node_is_refused() {
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    let cluster = Cluster::start(2);
    for method in ["psync", "scan"] {
        let (code, _, err) = run(redvault()
            .args([
                "export",
                "--redis",
                &cluster.nodes[0].url(),
                "--to",
                &store,
                "--method",
                method,
            ])
            .arg("--kek")
            .arg(work.path().join("kek.pub.pem")));
        assert_eq!(code, 1, "{method}");
        let line = one_line_error(&err);
        assert!(
            line.to_lowercase().contains("cluster node") && line.contains("partial"),
            "{method}: {line}"
        );
    }
    assert!(
        files_below(&work.path().join("store")).is_empty(),
        "nothing is written"
    );
}
