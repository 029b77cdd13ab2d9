//! Redis Cluster, real clusters of Debian's redis-server (tests/common/cluster.rs):
//! a backup imports into clusters of 2 and 4 primaries, every key on the
//! node that owns its slot with an equal value and TTL; a slot migrating
//! during the import is followed (ASK); `--flush` empties every primary;
//! a cluster exports as one generation of one object per primary, which
//! imports into a cluster of another shard count and into a single Redis;
//! a daemon generation of a single server replays into a cluster, each
//! command on the owner of its keys; the daemon follows a cluster (every
//! shard's stream in one generation) through a kill -9 and a failover, and
//! its backups restore anywhere; SCAN reads every primary of a cluster.

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
            same_key(
                &mut s,
                &mut owner,
                key,
                &format!("{primaries} primaries, db {db}"),
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

/// Writes keys of every type into the cluster, each on the node owning its
/// slot, and a library on every primary; returns the keys.
fn fill_cluster(cluster: &Cluster) -> Vec<Vec<u8>> {
    let mut keys = vec![];
    for i in 0..1500 {
        for key in [format!("k{i}"), format!("{{t}}:{i}")] {
            let mut c = cluster.owner(key.as_bytes()).client();
            match i % 5 {
                0 => c.ok(&["RPUSH", &key, "a", "b", &i.to_string()]),
                1 => c.ok(&["HSET", &key, "f", "v", "n", &i.to_string()]),
                2 => c.ok(&["ZADD", &key, "1.5", "m", &i.to_string(), "n"]),
                3 => c.ok(&["SET", &key, "with ttl", "PX", "86400000"]),
                _ => c.ok(&["SET", &key, &format!("value {i}")]),
            };
            keys.push(key.into_bytes());
        }
    }
    for n in &cluster.nodes {
        n.client().ok(&[
            "FUNCTION",
            "LOAD",
            "#!lua name=lib\nredis.register_function('one', function() return 1 end)",
        ]);
    }
    keys
}

/// `key` has the same value and TTL (within a minute) at `dst` as at `src`.
fn same_key(src: &mut Client, dst: &mut Client, key: &[u8], what: &str) {
    assert_eq!(
        digest_value(dst, key),
        digest_value(src, key),
        "{what}: {} differs or is not where its slot is",
        key.escape_ascii()
    );
    let (want, got) = (pttl(src, key), pttl(dst, key));
    assert!(
        (want < 0 && got == want) || (want >= 0 && (got - want).abs() < 60_000),
        "{what}: {} expires in {got} ms, at the source in {want}",
        key.escape_ascii()
    );
}

/// Where `key` lives in a target that is a cluster or a single server.
fn same_value(src: &Cluster, dst: &mut Client, key: &[u8], what: &str) {
    same_key(&mut src.owner(key).client(), dst, key, what);
}

/// A 3-shard cluster exports as one generation (one object per primary,
/// one manifest naming every shard), which verify passes and which imports
/// into a 2-shard cluster and into a single Redis, every key equal.
#[test]
fn a_cluster_exports_as_one_generation_and_imports_anywhere() {
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    let src = Cluster::start(3);
    let keys = fill_cluster(&src);
    let (code, _, err) = run(redvault()
        .args([
            "export",
            "--redis",
            &src.nodes[1].url(),
            "--to",
            &store,
            "--source",
            "c",
        ])
        .arg("--kek")
        .arg(work.path().join("kek.pub.pem")));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("3 shards"), "{err}");
    let gen_dir = std::fs::read_dir(work.path().join("store/c"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut objects: Vec<String> = std::fs::read_dir(&gen_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("shard-"))
        .collect();
    objects.sort();
    assert_eq!(
        objects,
        [
            "shard-0-5460.rdb.rv",
            "shard-10922-16383.rdb.rv",
            "shard-5461-10921.rdb.rv"
        ]
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gen_dir.join("manifest.json")).unwrap()).unwrap();
    let shards = manifest["cluster"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    let listed: u64 = shards
        .iter()
        .map(|s| s["keys"]["0"].as_u64().unwrap())
        .sum();
    assert_eq!(listed, keys.len() as u64);
    let (code, _, err) = run(redvault()
        .args(["verify", "--from", &store, "--source", "c"])
        .arg("--kek")
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "verify: {err}");
    // list names it, inspect reads each shard.
    let (code, out, err) = run(redvault().args(["--json", "list", "--from", &store]));
    assert_eq!(code, 0, "list: {err}");
    let generation = gen_dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(out.contains(&generation), "{out}");
    let (code, out, err) = run(redvault()
        .args(["--json", "inspect", "--from", &store])
        .arg("--kek")
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "inspect: {err}");
    let reports: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let inspected: u64 = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["keys"].as_u64().unwrap())
        .sum();
    assert_eq!(reports.as_array().unwrap().len(), 3);
    assert_eq!(inspected, keys.len() as u64);

    let two = Cluster::start(2);
    let (code, err) = import(&two, work.path(), &store, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("loaded {} keys", keys.len())),
        "{err}"
    );
    for key in &keys {
        same_value(&src, &mut two.owner(key).client(), key, "into 2 shards");
    }
    let single = RedisServer::start(&[]);
    let (code, _, err) = run(redvault()
        .args(["import", "--redis", &single.url(), "--from", &store])
        .arg("--kek")
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "{err}");
    let mut one = single.client();
    assert_eq!(one.ok(&["DBSIZE"]), Resp::Int(keys.len() as i64));
    for key in &keys {
        same_value(&src, &mut one, key, "into one server");
    }
    assert!(matches!(one.ok(&["FCALL", "one", "0"]), Resp::Int(1)));
}

/// SCAN over a cluster (managed clusters refuse PSYNC): `export --method
/// scan` and a SCAN daemon read every primary into one cluster generation
/// (marked not point-in-time), which imports whole; `--from-replica` with
/// SCAN is refused, and so is an export by a user who cannot tell a
/// cluster node; nothing is written then.
#[test]
fn scan_reads_every_primary_of_a_cluster() {
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    let cluster = Cluster::start(3);
    let keys = fill_cluster(&cluster);
    let export = |extra: &[&str]| {
        run(redvault()
            .args(["export", "--redis", &cluster.nodes[0].url(), "--to", &store])
            .args(["--source", "scanned", "--method", "scan"])
            .arg("--kek")
            .arg(work.path().join("kek.pub.pem"))
            .args(extra))
    };
    let (code, _, err) = export(&["--from-replica"]);
    assert_eq!(code, 1);
    assert!(one_line_error(&err).contains("--from-replica"), "{err}");
    let (code, _, err) = export(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("3 shards"), "{err}");
    let imported = |source: &str, what: &str| {
        let gen_dir = std::fs::read_dir(work.path().join("store").join(source))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join("manifest.json").exists())
            .expect("a generation");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(gen_dir.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["redis"]["method"], "scan", "{manifest}");
        assert_eq!(manifest["cluster"].as_array().unwrap().len(), 3);
        let single = RedisServer::start(&[]);
        let (code, _, err) = run(redvault()
            .args(["import", "--redis", &single.url(), "--from", &store])
            .args(["--source", source])
            .arg("--kek")
            .arg(work.path().join("kek.pem")));
        assert_eq!(code, 0, "{err}");
        let mut one = single.client();
        assert_eq!(one.ok(&["DBSIZE"]), Resp::Int(keys.len() as i64), "{what}");
        for key in &keys {
            same_value(&cluster, &mut one, key, what);
        }
    };
    imported("scanned", "export --method scan");

    // The daemon's SCAN bases read every primary too.
    let mut d = common::daemon::Daemon::start_env(
        work.path(),
        &cluster.nodes[1].url(),
        &store,
        &["--method", "scan", "--base-every", "24h"],
        &[],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while d.metric("bases_total") != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "no base; log:\n{}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    d.stop();
    imported("cache1", "daemon --method scan");

    // A user that may ask neither INFO nor CLUSTER: nobody can tell it is
    // a cluster node, so the export is refused rather than one shard kept.
    let blind = tempfile::tempdir().unwrap();
    let blind_store = format!("file://{}", blind.path().display());
    cluster.nodes[0].client().ok(&[
        "ACL", "SETUSER", "blind", "on", ">pw", "~*", "+@all", "-info", "-cluster",
    ]);
    let (code, _, err) = run(redvault()
        .env("REDVAULT_REDIS_PASSWORD", "pw")
        .args(["export", "--redis"])
        .arg(format!("redis://blind@127.0.0.1:{}", cluster.nodes[0].port))
        .args(["--to", &blind_store])
        .arg("--kek")
        .arg(work.path().join("kek.pub.pem")));
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("cannot tell") && line.contains("+info"),
        "{line}"
    );
    assert!(
        !files_below(blind.path())
            .iter()
            .any(|f| f.ends_with("manifest.json")),
        "nothing that looks like a backup is written"
    );
}

/// Every key of db 0 of a standalone server on the cluster node owning it,
/// with the same value and TTL, and nothing else in the cluster.
fn same_as_source(src: &RedisServer, cluster: &Cluster, what: &str) {
    let keys = keys_of(src);
    assert!(keys.iter().all(|(db, _)| *db == 0), "{what}: db 0 only");
    assert_eq!(cluster.dbsize(), keys.len() as i64, "{what}");
    let mut s = src.client();
    for (_, key) in &keys {
        same_key(&mut s, &mut cluster.owner(key).client(), key, what);
    }
}

/// A daemon generation of a single server (base and segments) restores into
/// a 3-primary cluster: every command goes to the owner of its keys' slot,
/// DEL and MSET over several slots are cut per slot, a transaction over
/// several slots is applied command by command, FLUSHALL and FUNCTION reach
/// every primary. A command over keys of two slots that cannot be cut (a
/// RENAME) is refused, naming it and its offset.
#[test]
fn a_daemon_generation_replays_into_a_cluster() {
    let (work, store) = common::daemon::workspace();
    let src = RedisServer::start(&[]);
    let mut c = src.client();
    for i in 0..300 {
        c.ok(&["SET", &format!("early:{i}"), "gone after FLUSHALL"]);
    }
    let mut d = common::daemon::Daemon::start(
        work.path(),
        &src.url(),
        &store,
        &["--segment-interval-ms", "50"],
    );
    d.wait_up();
    c.ok(&["FLUSHALL"]);
    for i in 0..500 {
        c.ok(&["SET", &format!("k:{i}"), &format!("v{i}")]);
        c.ok(&["HSET", &format!("h:{}", i % 40), &i.to_string(), "x"]);
        c.ok(&["RPUSH", &format!("{{list}}:{}", i % 7), &i.to_string()]);
    }
    c.ok(&["PEXPIRE", "k:1", "3600000"]);
    c.ok(&["DEL", "k:2", "k:3", "k:4", "k:5"]);
    c.ok(&["MSET", "m:a", "1", "m:b", "2", "m:c", "3"]);
    c.ok(&["MULTI"]);
    c.ok(&["INCR", "tx:a"]);
    c.ok(&["INCR", "tx:b"]);
    c.ok(&["ZADD", "tx:z", "1", "one"]);
    c.ok(&["EXEC"]);
    c.ok(&["RENAME", "{list}:0", "{list}:renamed"]);
    c.ok(&["LMOVE", "{list}:1", "{list}:2", "LEFT", "RIGHT"]);
    c.ok(&["XADD", "stream", "*", "f", "v"]);
    c.ok(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=lib\nredis.register_function('one', function() return 1 end)",
    ]);
    d.wait_durable(&src);
    d.stop();

    let cluster = Cluster::start(3);
    let restore = |extra: &[&str]| {
        run(redvault()
            .args(["restore", "--redis", &cluster.nodes[0].url()])
            .args(["--from", &store, "--source", "cache1", "--kek"])
            .arg(work.path().join("kek.pem"))
            .args(extra))
    };
    let (code, _, err) = restore(&[]);
    assert_eq!(code, 0, "{err}");
    same_as_source(&src, &cluster, "replayed into 3 primaries");
    for n in &cluster.nodes {
        assert!(
            matches!(n.client().ok(&["FCALL", "one", "0"]), Resp::Int(1)),
            "the library is missing on a node"
        );
    }

    // A RENAME across two slots: a cluster cannot run it.
    let (a, b) = ("k:10", "k:11");
    let slot = |k: &str| cluster.nodes[0].client().ok(&["CLUSTER", "KEYSLOT", k]);
    assert_ne!(slot(a), slot(b));
    let mut d = common::daemon::Daemon::start(
        work.path(),
        &src.url(),
        &store,
        &["--segment-interval-ms", "50"],
    );
    d.wait_up();
    c.ok(&["RENAME", a, b]);
    d.wait_durable(&src);
    d.stop();
    let (code, _, err) = restore(&["--flush", "--yes"]);
    assert_eq!(code, 1, "{err}");
    let line = one_line_error(&err);
    assert!(
        line.contains("RENAME") && line.contains("offset") && line.contains("one slot"),
        "{line}"
    );
}

/// The key positions redvault routes by are the ones the server itself
/// names (COMMAND GETKEYS), for the commands whose keys are not simply the
/// first argument.
#[test]
fn key_positions_match_the_servers_command_table() {
    use redvault::command::{Command, Keys};
    let server = RedisServer::start(&[]);
    let mut c = server.client();
    for args in [
        &["SET", "k", "v", "PX", "5"][..],
        &["DEL", "a", "b", "c"],
        &["UNLINK", "a", "b"],
        &["MSET", "a", "1", "b", "2"],
        &["MSETNX", "a", "1", "b", "2"],
        &["RENAME", "a", "b"],
        &["COPY", "a", "b", "REPLACE"],
        &["LMOVE", "a", "b", "LEFT", "RIGHT"],
        &["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"],
        &["SMOVE", "a", "b", "m"],
        &["RPOPLPUSH", "a", "b"],
        &["BLPOP", "a", "b", "0"],
        &["BZPOPMIN", "a", "b", "0"],
        &["BITOP", "AND", "d", "a", "b"],
        &["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"],
        &["ZINTERSTORE", "d", "1", "a"],
        &["ZDIFFSTORE", "d", "2", "a", "b"],
        &["ZRANGESTORE", "d", "s", "0", "-1"],
        &["SUNIONSTORE", "d", "a", "b"],
        &["PFMERGE", "d", "a", "b"],
        &["LMPOP", "2", "a", "b", "LEFT"],
        &["ZMPOP", "1", "z", "MIN"],
        &["BLMPOP", "0", "2", "a", "b", "LEFT"],
        &["BZMPOP", "0", "1", "z", "MIN"],
        &["XGROUP", "CREATE", "s", "g", "$"],
        &[
            "GEOSEARCHSTORE",
            "d",
            "s",
            "FROMLONLAT",
            "0",
            "0",
            "BYRADIUS",
            "1",
            "km",
        ],
        &["GEORADIUS", "g", "0", "0", "1", "km", "STORE", "d"],
        &["GEORADIUSBYMEMBER", "g", "store", "1", "km", "STORE", "d"],
        &["SORT", "l", "ALPHA", "STORE", "d"],
        &["SORT", "l", "BY", "store", "STORE", "d"],
        &["XADD", "s", "*", "f", "v"],
        &["HSET", "h", "f", "v"],
    ] {
        let cmd = Command {
            args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            offset: 0,
            time_ms: 0,
        };
        let ours: Vec<String> = match cmd.keys() {
            Keys::Listed { at, .. } => at.iter().map(|&i| args[i].to_string()).collect(),
            other => panic!("{args:?}: {other:?}"),
        };
        let mut ask: Vec<&str> = vec!["COMMAND", "GETKEYS"];
        ask.extend_from_slice(args);
        let Resp::Array(theirs) = c.ok(&ask) else {
            panic!("COMMAND GETKEYS {args:?}")
        };
        let theirs: Vec<String> = theirs
            .into_iter()
            .map(|k| match k {
                Resp::Bulk(Some(k)) => String::from_utf8(k).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ours, theirs, "{args:?}");
    }
}

/// Each primary of the cluster as CLUSTER SLOTS says now: (its stream name
/// `shard-<first>-<last>`, its port).
fn primaries_now(cluster: &Cluster) -> Vec<(String, u16)> {
    let Resp::Array(ranges) = cluster.nodes[0].client().ok(&["CLUSTER", "SLOTS"]) else {
        panic!("CLUSTER SLOTS")
    };
    let mut by_port: std::collections::BTreeMap<u16, (i64, i64)> = Default::default();
    for r in ranges {
        let Resp::Array(r) = r else { panic!("a range") };
        let (Resp::Int(a), Resp::Int(b), Resp::Array(p)) = (&r[0], &r[1], &r[2]) else {
            panic!("{r:?}")
        };
        let Resp::Int(port) = p[1] else {
            panic!("{p:?}")
        };
        let e = by_port.entry(port as u16).or_insert((*a, *b));
        e.0 = e.0.min(*a);
        e.1 = e.1.max(*b);
    }
    by_port
        .into_iter()
        .map(|(port, (a, b))| (format!("shard-{a}-{b}"), port))
        .collect()
}

/// Waits (bounded) until storage holds every primary's stream up to its
/// offset now (each shard reports as its own source, `cache1/shard-*`).
fn wait_cluster_durable(d: &common::daemon::Daemon, cluster: &Cluster) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // The offsets now, read once: a primary's later PINGs (keepalives, cut
    // only once a minute on their own) must not move the mark.
    let wants: Vec<(String, u64)> = primaries_now(cluster)
        .into_iter()
        .map(|(stream, port)| {
            let node = cluster
                .nodes
                .iter()
                .find(|n| n.port == port)
                .expect("a node");
            (stream, common::daemon::repl_offset(node))
        })
        .collect();
    assert!(
        wants.iter().all(|(_, w)| *w > 0),
        "write before waiting: {wants:?}"
    );
    loop {
        let m = d.metrics().unwrap_or_default();
        let all = wants.iter().all(|(stream, want)| {
            let line = format!("redvault_durable_offset{{source=\"cache1/{stream}\"}} ");
            m.lines()
                .find_map(|l| l.strip_prefix(&line))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|got| got >= *want)
        });
        if all {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shards' durable offsets never reached the primaries'; metrics:\n{m}\nlog:\n{}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Every key of the cluster, with its value's digest.
fn cluster_state(cluster: &Cluster) -> std::collections::BTreeMap<Vec<u8>, Resp> {
    let mut out = std::collections::BTreeMap::new();
    for n in &cluster.nodes {
        let mut c = n.client();
        let Resp::Array(keys) = c.ok(&["KEYS", "*"]) else {
            panic!("KEYS")
        };
        for k in keys {
            if let Resp::Bulk(Some(k)) = k {
                let d = digest_value(&mut c, &k);
                out.insert(k, d);
            }
        }
    }
    out
}

fn write_routed(cluster: &Cluster, tag: &str, n: usize) {
    for i in 0..n {
        let key = format!("{tag}:{i}");
        cluster
            .owner(key.as_bytes())
            .client()
            .ok(&["SET", &key, &format!("{tag} {i}")]);
        let h = format!("h:{}", i % 10);
        cluster
            .owner(h.as_bytes())
            .client()
            .ok(&["HINCRBY", &h, tag, "1"]);
    }
    // One multi-key write within a hash tag, and a TTL.
    let owner = cluster.owner(b"{t}");
    owner.client().ok(&[
        "MSET",
        &format!("{{t}}{tag}:a"),
        "1",
        &format!("{{t}}{tag}:b"),
        "2",
    ]);
    let k = format!("{tag}:0");
    cluster
        .owner(k.as_bytes())
        .client()
        .ok(&["PEXPIRE", &k, "86400000"]);
}

/// The latest state of source `cache1` in `store`, restored into a new
/// single server, equals `latest`.
fn restore_latest_equals(
    work: &Path,
    store: &str,
    latest: &std::collections::BTreeMap<Vec<u8>, Resp>,
    what: &str,
) {
    let one = RedisServer::start(&[]);
    let (code, _, err) = run(redvault()
        .args(["restore", "--redis", &one.url()])
        .args(["--from", store, "--source", "cache1", "--kek"])
        .arg(work.join("kek.pem")));
    assert_eq!(code, 0, "{err}");
    restored_equal(latest, &one, what);
}

fn restored_equal(
    state: &std::collections::BTreeMap<Vec<u8>, Resp>,
    dst: &RedisServer,
    what: &str,
) {
    let mut c = dst.client();
    assert_eq!(
        c.ok(&["DBSIZE"]),
        Resp::Int(state.len() as i64),
        "{what}: key count"
    );
    for (k, d) in state {
        assert_eq!(&digest_value(&mut c, k), d, "{what}: {}", k.escape_ascii());
    }
}

/// Every key of `state`, and only those, on the primary owning its slot in
/// `cluster`, each value's digest equal.
fn cluster_holds(cluster: &Cluster, state: &std::collections::BTreeMap<Vec<u8>, Resp>, what: &str) {
    assert_eq!(cluster.dbsize(), state.len() as i64, "{what}: key count");
    for (k, want) in state {
        assert_eq!(
            &digest_value(&mut cluster.owner(k).client(), k),
            want,
            "{what}: {}",
            k.escape_ascii()
        );
    }
}

/// The daemon on a 3-primary cluster: one generation with every shard's
/// stream, which a kill -9 and a restart continue; `restore` of the latest
/// state into a single Redis and into a 2-primary cluster, and `--at` an
/// earlier time, give exactly the cluster's keys of that moment; `verify`
/// passes.
#[test]
fn the_daemon_follows_a_cluster_through_a_restart() {
    let (work, store) = common::daemon::workspace();
    let cluster = Cluster::start(3);
    for n in &cluster.nodes {
        n.client().ok(&[
            "FUNCTION",
            "LOAD",
            "#!lua name=lib\nredis.register_function('one', function() return 1 end)",
        ]);
    }
    write_routed(&cluster, "base", 200);
    let start = || {
        common::daemon::Daemon::start(
            work.path(),
            &cluster.nodes[1].url(),
            &store,
            &["--segment-interval-ms", "50"],
        )
    };
    let mut d = start();
    d.wait_up();
    write_routed(&cluster, "first", 150);
    wait_cluster_durable(&d, &cluster);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let at_first = cluster_state(&cluster);
    let t1 = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    std::thread::sleep(std::time::Duration::from_millis(100));
    write_routed(&cluster, "second", 150);
    cluster.owner(b"first:5").client().ok(&["DEL", "first:5"]);
    wait_cluster_durable(&d, &cluster);
    d.kill9();
    write_routed(&cluster, "third", 100);
    let mut d = start();
    d.wait_up();
    wait_cluster_durable(&d, &cluster);
    d.stop();
    assert_eq!(
        generation_count(&work.path().join("store/cache1")),
        1,
        "the restart continued the cluster generation"
    );
    let shards = files_below(&work.path().join("store/cache1"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".aof.rv"))
        .filter_map(|p| {
            p.parent()?
                .parent()?
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(shards.len(), 3, "one stream per shard: {shards:?}");
    let latest = cluster_state(&cluster);
    let restore = |url: &str, extra: &[&str]| {
        run(redvault()
            .args(["restore", "--redis", url])
            .args(["--from", &store, "--source", "cache1", "--kek"])
            .arg(work.path().join("kek.pem"))
            .args(extra))
    };
    let one = RedisServer::start(&[]);
    let (code, _, err) = restore(&one.url(), &[]);
    assert_eq!(code, 0, "{err}");
    restored_equal(&latest, &one, "latest, into one server");
    let mut c = one.client();
    for k in latest.keys() {
        same_value(&cluster, &mut c, k, "latest, into one server");
    }
    assert!(matches!(c.ok(&["FCALL", "one", "0"]), Resp::Int(1)));

    let earlier = RedisServer::start(&[]);
    let (code, _, err) = restore(&earlier.url(), &["--at", &t1]);
    assert_eq!(code, 0, "{err}");
    restored_equal(&at_first, &earlier, "--at the first batch");
    // The summary states how far apart the shards' newest records are.
    assert!(
        err.contains("the shards' newest within"),
        "the shard skew is stated: {err}"
    );

    let two = Cluster::start(2);
    let (code, _, err) = restore(&two.nodes[0].url(), &[]);
    assert_eq!(code, 0, "{err}");
    cluster_holds(&two, &latest, "into 2 primaries");

    let (code, out, err) = run(redvault()
        .args([
            "--json", "verify", "--from", &store, "--source", "cache1", "--kek",
        ])
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "{out}{err}");
}

/// A FLUSHALL on one primary, and a FLUSHDB inside a transaction on
/// another, while the daemon follows: each emptied only its own shard's
/// slots, so the restore (into a single Redis, and into a 2-primary cluster)
/// deletes just those slots' keys at that point of the shard's stream, and
/// gives exactly the cluster's keys, the other shards' and the ones written
/// after the flushes.
#[test]
fn a_flush_of_one_shard_empties_only_its_slots_on_restore() {
    let (work, store) = common::daemon::workspace();
    let cluster = Cluster::start(3);
    write_routed(&cluster, "base", 100);
    let mut d = common::daemon::Daemon::start(
        work.path(),
        &cluster.nodes[0].url(),
        &store,
        &["--segment-interval-ms", "50"],
    );
    d.wait_up();
    write_routed(&cluster, "first", 100);
    cluster.nodes[0].client().ok(&["FLUSHALL"]);
    write_routed(&cluster, "second", 50);
    // A transaction's keys share a slot: a hash tag the third primary owns.
    let tag = (0..2000)
        .map(|i| format!("{{tx{i}}}"))
        .find(|t| cluster.owner(t.as_bytes()).port == cluster.nodes[2].port)
        .unwrap();
    let on_third = [format!("{tag}a"), format!("{tag}b")];
    let mut c = cluster.nodes[2].client();
    c.ok(&["MULTI"]);
    c.ok(&["SET", &on_third[0], "emptied by the FLUSHDB after it"]);
    c.ok(&["FLUSHDB"]);
    c.ok(&["SET", &on_third[1], "written after the FLUSHDB"]);
    c.ok(&["EXEC"]);
    write_routed(&cluster, "third", 30);
    wait_cluster_durable(&d, &cluster);
    d.stop();
    let latest = cluster_state(&cluster);
    let first_left = latest.keys().filter(|k| k.starts_with(b"first:")).count();
    assert!(
        first_left > 0 && first_left < 100,
        "the flushes emptied some shards' keys only: {first_left} of 100 left"
    );
    assert!(!latest.contains_key(on_third[0].as_bytes()));
    assert!(latest.contains_key(on_third[1].as_bytes()));
    restore_latest_equals(work.path(), &store, &latest, "into one server");
    let two = Cluster::start(2);
    let (code, _, err) = run(redvault()
        .args(["restore", "--redis", &two.nodes[0].url()])
        .args(["--from", &store, "--source", "cache1", "--kek"])
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "{err}");
    cluster_holds(&two, &latest, "into 2 primaries");
}

/// A failover of one shard (CLUSTER FAILOVER on its replica) while the
/// daemon follows: the generation ends for every shard, a new cluster
/// generation starts with the new primary, the gap is recorded per shard,
/// and the latest state restores whole.
#[test]
fn a_failover_of_one_shard_starts_a_new_cluster_generation() {
    let (work, store) = common::daemon::workspace();
    let cluster = Cluster::start(2);
    let replica = cluster.add_replica(0);
    write_routed(&cluster, "base", 200);
    let audit = work.path().join("audit.log");
    let mut d = common::daemon::Daemon::start(
        work.path(),
        &cluster.nodes[1].url(),
        &store,
        &[
            "--segment-interval-ms",
            "50",
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    d.wait_up();
    write_routed(&cluster, "before", 100);
    wait_cluster_durable(&d, &cluster);
    // A manual failover can time out on a loaded machine: asked again, a
    // bounded number of times, until the replica is a primary.
    let mut promoted = false;
    for _ in 0..4 {
        replica.client().ok(&["CLUSTER", "FAILOVER"]);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while std::time::Instant::now() < until {
            let Resp::Bulk(Some(i)) = replica.client().ok(&["INFO", "replication"]) else {
                panic!("INFO")
            };
            if String::from_utf8_lossy(&i).contains("role:master") {
                promoted = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if promoted {
            break;
        }
    }
    assert!(promoted, "the replica never took over");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while generation_count(&work.path().join("store/cache1")) < 2
        || !files_below(&work.path().join("store/cache1"))
            .iter()
            .any(|f| {
                f.ends_with("manifest.json")
                    && f.to_string_lossy()
                        .contains(&newest_generation(&work.path().join("store/cache1")))
            })
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no new generation after the failover; log:\n{}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The cluster as it is now: the replica serves the first shard's slots.
    let now = Cluster {
        nodes: vec![replica, cluster.nodes.into_iter().nth(1).unwrap()],
        ranges: cluster.ranges.clone(),
    };
    write_routed(&now, "after", 100);
    wait_cluster_durable(&d, &now);
    d.stop();
    let text = std::fs::read_to_string(&audit).unwrap();
    let gap = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["event"] == "gap")
        .unwrap_or_else(|| panic!("no gap record: {text}"));
    assert_eq!(
        gap["details"]["shards"].as_array().map(Vec::len),
        Some(2),
        "{gap}"
    );
    let latest = cluster_state(&now);
    restore_latest_equals(work.path(), &store, &latest, "after the failover");

    // Retention removes the old cluster generation whole, its shards'
    // streams included.
    let newest = newest_generation(&work.path().join("store/cache1"));
    let (code, _, err) = run(redvault()
        .args([
            "prune",
            "--from",
            &store,
            "--source",
            "cache1",
            "--keep-last",
            "1",
            "--kek",
        ])
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "{err}");
    let left: Vec<_> = files_below(&work.path().join("store/cache1"))
        .into_iter()
        .filter(|f| !f.to_string_lossy().contains("/.lease"))
        .filter(|f| !f.to_string_lossy().contains(&newest))
        .collect();
    assert!(left.is_empty(), "left of the pruned generation: {left:?}");
}

fn newest_generation(source_dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(source_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names.pop().unwrap_or_default()
}

/// A key migrated between shards while the daemon follows (MIGRATE: a DEL in
/// the old shard's stream, a RESTORE-ASKING in the new one's, then writes
/// there): the restore gives its newest value, whichever shard comes first.
/// A FLUSHALL of the new shard after that cannot be replayed exactly (which
/// keys of a moving slot it held is not known): restoring past it is
/// refused naming it, and `--at` a time before it restores. An export while
/// the slot is still migrating is refused, naming it.
#[test]
fn a_key_migrated_during_the_generation_keeps_its_new_writes() {
    let (work, store) = common::daemon::workspace();
    let cluster = Cluster::start(2);
    // A key of the second shard, to move to the first (replayed first).
    let key = (0..1000)
        .map(|i| format!("mig{i}"))
        .find(|k| cluster.owner(k.as_bytes()).port == cluster.nodes[1].port)
        .unwrap();
    let (from, to) = (&cluster.nodes[1], &cluster.nodes[0]);
    from.client().ok(&["SET", &key, "old"]);
    write_routed(&cluster, "base", 50);
    let mut d = common::daemon::Daemon::start(
        work.path(),
        &cluster.nodes[0].url(),
        &store,
        &["--segment-interval-ms", "50"],
    );
    d.wait_up();
    from.client().ok(&["SET", &key, "written before the move"]);
    let slot = cluster.slot(key.as_bytes()).to_string();
    to.client()
        .ok(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &Cluster::id(from)]);
    from.client()
        .ok(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &Cluster::id(to)]);
    from.client().ok(&[
        "MIGRATE",
        "127.0.0.1",
        &to.port.to_string(),
        &key,
        "0",
        "5000",
    ]);
    let mut c = to.client();
    c.ok(&["ASKING"]);
    c.ok(&["SET", &key, "written after the move"]);
    write_routed(&cluster, "during", 20);
    wait_cluster_durable(&d, &cluster);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let before_flush = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    std::thread::sleep(std::time::Duration::from_millis(100));
    to.client().ok(&["FLUSHALL"]);
    // Every shard's stream goes past that time (the coverage of a cluster
    // generation ends at its shards' earliest newest record).
    write_routed(&cluster, "after", 20);
    wait_cluster_durable(&d, &cluster);
    d.stop();

    let restore = |url: &str, extra: &[&str]| {
        run(redvault()
            .args(["restore", "--redis", url])
            .args(["--from", &store, "--source", "cache1", "--kek"])
            .arg(work.path().join("kek.pem"))
            .args(extra))
    };
    let one = RedisServer::start(&[]);
    let (code, _, err) = restore(&one.url(), &["--at", &before_flush]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        one.client().ok(&["GET", &key]),
        Resp::Bulk(Some(b"written after the move".to_vec()))
    );
    let past = RedisServer::start(&[]);
    let (code, _, err) = restore(&past.url(), &[]);
    assert_eq!(code, 1, "{err}");
    let line = one_line_error(&err);
    assert!(
        line.contains("FLUSHALL") && line.contains("migrated into this shard"),
        "{line}"
    );

    let (code, _, err) = run(redvault()
        .args(["export", "--redis", &cluster.nodes[0].url(), "--to", &store])
        .args(["--source", "again", "--kek"])
        .arg(work.path().join("kek.pub.pem")));
    assert_eq!(code, 1, "{err}");
    let line = one_line_error(&err);
    assert!(
        line.contains(&format!("slot {slot}")) && line.contains("migrated"),
        "{line}"
    );
}

fn total_forks(n: &RedisServer) -> u64 {
    let Resp::Bulk(Some(b)) = n.client().ok(&["INFO", "stats"]) else {
        panic!("INFO")
    };
    String::from_utf8_lossy(&b)
        .lines()
        .find_map(|l| l.strip_prefix("total_forks:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_forks")
}

/// `export --from-replica` reads each shard from a replica of its primary:
/// the primaries do not fork, the manifest names the replicas, and the
/// backup imports whole. A primary without a replica is refused, naming it,
/// and so is the flag for a single server.
#[test]
fn export_from_replicas_spares_the_primaries() {
    let (work, store) = common::daemon::workspace();
    let cluster = Cluster::start(2);
    write_routed(&cluster, "data", 300);
    let first = cluster.add_replica(0);
    let export = |url: &str| {
        run(redvault()
            .args(["--json", "export", "--from-replica", "--redis", url])
            .args(["--to", &store, "--source", "c", "--kek"])
            .arg(work.path().join("kek.pub.pem")))
    };
    let (code, _, err) = export(&cluster.nodes[0].url());
    assert_eq!(code, 1, "{err}");
    let line = one_line_error(&err);
    assert!(
        line.contains(&format!("127.0.0.1:{}", cluster.nodes[1].port))
            && line.contains("no replica"),
        "{line}"
    );
    let second = cluster.add_replica(1);
    let forks: Vec<u64> = cluster.nodes.iter().map(total_forks).collect();
    let (code, out, err) = export(&cluster.nodes[0].url());
    assert_eq!(code, 0, "{err}");
    let after: Vec<u64> = cluster.nodes.iter().map(total_forks).collect();
    assert_eq!(forks, after, "a primary forked for the export");
    let generation = serde_json::from_str::<serde_json::Value>(out.lines().last().unwrap())
        .unwrap()["generation"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            work.path()
                .join(format!("store/c/{generation}/manifest.json")),
        )
        .unwrap(),
    )
    .unwrap();
    let addrs: Vec<&str> = manifest["cluster"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["addr"].as_str().unwrap())
        .collect();
    assert_eq!(
        addrs,
        [
            format!("127.0.0.1:{}", first.port),
            format!("127.0.0.1:{}", second.port)
        ],
        "{manifest}"
    );
    let state = cluster_state(&cluster);
    let one = RedisServer::start(&[]);
    let (code, _, err) = run(redvault()
        .args(["import", "--redis", &one.url(), "--from", &store])
        .args(["--source", "c", "--kek"])
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "{err}");
    restored_equal(&state, &one, "from the replicas");

    let (code, _, err) = export(&one.url());
    assert_eq!(code, 1);
    assert!(one_line_error(&err).contains("no cluster node"), "{err}");
}

/// `daemon --from-replica` follows each shard on a replica of its primary:
/// the primaries never fork for the base, every write still becomes
/// durable, and the generation restores whole. The flag on a single
/// server is refused, naming why.
#[test]
fn the_daemon_follows_replicas_sparing_the_primaries() {
    let (work, store) = common::daemon::workspace();
    let cluster = Cluster::start(2);
    write_routed(&cluster, "before", 200);
    let _r0 = cluster.add_replica(0);
    let _r1 = cluster.add_replica(1);
    let forks: Vec<u64> = cluster.nodes.iter().map(total_forks).collect();
    let mut d = common::daemon::Daemon::start(
        work.path(),
        &cluster.nodes[0].url(),
        &store,
        &["--segment-interval-ms", "50", "--from-replica"],
    );
    d.wait_up();
    write_routed(&cluster, "after", 200);
    wait_cluster_durable(&d, &cluster);
    d.stop();
    let now: Vec<u64> = cluster.nodes.iter().map(total_forks).collect();
    assert_eq!(now, forks, "a primary forked for the daemon's base");
    let latest = cluster_state(&cluster);
    restore_latest_equals(work.path(), &store, &latest, "followed on replicas");

    // A single server: refused, and the daemon says why.
    let single = RedisServer::start(&[]);
    let (other, other_store) = common::daemon::workspace();
    let d = common::daemon::Daemon::start(
        other.path(),
        &single.url(),
        &other_store,
        &["--from-replica"],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !d.log().contains("no cluster node") {
        assert!(std::time::Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
