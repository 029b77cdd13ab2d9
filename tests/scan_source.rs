//! The SCAN source, for servers that refuse PSYNC: a user without `psync`
//! (as a managed service's) gets a refusal naming the permission with
//! `--method psync`, and with `--method scan` or `auto` a backup whose
//! import equals the source (every type, TTLs, several databases, function
//! libraries), marked as not point-in-time in the manifest and in `list`.

mod common;

use common::redis::*;
use common::*;

#[test]
fn servers_that_refuse_psync_are_backed_up_by_scan() {
    let src = RedisServer::start(&[]);
    let mut c = src.client();
    fill_all_types(&mut c);
    c.ok(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=scanlib\nredis.register_function('one', function() return 1 end)",
    ]);
    for i in 0..3000 {
        c.ok(&["SET", &format!("many:{i}"), &format!("v{i}")]);
    }
    c.ok(&[
        "ACL", "SETUSER", "managed", "on", ">pw", "~*", "+@all", "-psync", "-sync",
    ]);
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    let export = |method: &str, source: &str, extra: &[&str]| {
        run(redvault()
            .env("REDVAULT_REDIS_PASSWORD", "pw")
            .args(["--json", "export", "--redis"])
            .arg(format!("redis://managed@127.0.0.1:{}", src.port))
            .args(["--to", &store, "--source", source, "--method", method])
            .args(extra)
            .arg("--kek")
            .arg(work.path().join("kek.pub.pem")))
    };

    let (code, _, err) = export("psync", "refused", &[]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(line.contains("'psync'"), "{line}");

    let (code, out, err) = export("scan", "scan", &["--max-keys-per-sec", "1000000"]);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["method"], "scan");
    assert_eq!(summary["point_in_time"], false);
    let (code, _, err) = export("auto", "auto", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("taking the snapshot with SCAN"), "{err}");

    let digest = src.digest();
    for source in ["scan", "auto"] {
        let dst = RedisServer::start(&[]);
        let (code, _, err) = run(redvault()
            .args([
                "import",
                "--redis",
                &dst.url(),
                "--from",
                &store,
                "--source",
                source,
            ])
            .arg("--kek")
            .arg(work.path().join("kek.pem")));
        assert_eq!(code, 0, "{source}: {err}");
        assert!(err.contains("not point-in-time"), "{source}: {err}");
        assert_eq!(dst.digest(), digest, "{source}: restored data differs");
        assert_eq!(
            dst.client().cmd(&[b"FCALL", b"one", b"0"]).unwrap(),
            Resp::Int(1),
            "{source}: the function library"
        );
        let ttl = match dst.client().cmd(&[b"PEXPIRETIME", b"ttl:key"]).unwrap() {
            Resp::Int(t) => t,
            other => panic!("{other:?}"),
        };
        let want = match src.client().cmd(&[b"PEXPIRETIME", b"ttl:key"]).unwrap() {
            Resp::Int(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(ttl, want, "{source}: the expiry moved");
    }
    // A plain SCAN export is an RDB Redis itself loads at startup.
    let (code, _, err) = run(redvault()
        .args([
            "export",
            "--method",
            "scan",
            "--plain",
            "--redis",
            &src.url(),
        ])
        .args(["--to", &store, "--source", "native", "--signing-key"])
        .arg(work.path().join("signing.pem")));
    assert_eq!(code, 0, "{err}");
    let base = files_below(&work.path().join("store/native"))
        .into_iter()
        .find(|p| p.ends_with("base.rdb"))
        .expect("a plain base");
    let native = RedisServer::start_with_rdb(&[], Some(&base));
    assert_eq!(
        native.digest(),
        digest,
        "Redis's own load of the SCAN RDB differs"
    );

    let (code, out, err) = run(redvault()
        .args(["list", "--from", &store, "--source", "scan", "--trust"])
        .arg(work.path().join("signing.pub.pem")));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("by SCAN, not point-in-time"), "{out}");
}

/// SCAN may return a key twice (when the table is resized during the scan).
/// A server that does so on purpose: the key is written once, so the
/// backup loads (Redis's own loader and RESTORE both refuse a key twice).
#[test]
fn a_key_scan_returns_twice_is_kept_once() {
    use common::resp_server::{array, bulk, serve};
    let value = |v: &[u8]| {
        // A string value as DUMP gives it: type 0, the RDB string, version
        // 10 and the CRC64.
        let mut raw = vec![0u8, v.len() as u8];
        raw.extend_from_slice(v);
        redvault::rdb::restore_payload(&raw, 10)
    };
    let port = serve(3, move |args| {
        let name = args[0].to_ascii_uppercase();
        match name.as_slice() {
            b"INFO" => {
                let text = match args.get(1).map(|a| a.to_ascii_lowercase()) {
                    Some(s) if s == b"replication" => {
                        "master_replid:0123456789abcdef0123456789abcdef01234567\r\nmaster_repl_offset:7\r\n"
                    }
                    Some(s) if s == b"keyspace" => "db0:keys=3,expires=0,avg_ttl=0\r\n",
                    Some(s) if s == b"cluster" => "cluster_enabled:0\r\n",
                    _ => "redis_version:7.0.15\r\n",
                };
                bulk(text.as_bytes())
            }
            // Two pages; k2 is in both.
            b"SCAN" if args[1] == b"0" => array(&[bulk(b"5"), array(&[bulk(b"k1"), bulk(b"k2")])]),
            b"SCAN" => array(&[bulk(b"0"), array(&[bulk(b"k2"), bulk(b"k3")])]),
            b"DUMP" => bulk(&value(&args[1])),
            b"PEXPIRETIME" => b":-1\r\n".to_vec(),
            b"FUNCTION" => bulk(&redvault::rdb::restore_payload(&[], 10)),
            b"MODULE" => b"*0\r\n".to_vec(),
            _ => b"+OK\r\n".to_vec(),
        }
    });
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    let (code, _, err) = run(redvault()
        .args([
            "export",
            "--method",
            "scan",
            "--scan-connections",
            "1",
            "--plain",
        ])
        .args([
            "--redis",
            &format!("redis://127.0.0.1:{port}"),
            "--to",
            &store,
        ])
        .args(["--source", "dup", "--signing-key"])
        .arg(work.path().join("signing.pem")));
    assert_eq!(code, 0, "{err}");
    let base = files_below(&work.path().join("store/dup"))
        .into_iter()
        .find(|p| p.ends_with("base.rdb"))
        .expect("a plain base");
    // Redis's own loader takes it: each key once.
    let native = RedisServer::start_with_rdb(&[], Some(&base));
    assert_eq!(native.client().ok(&["DBSIZE"]), Resp::Int(3));
    for k in ["k1", "k2", "k3"] {
        assert_eq!(
            native.client().ok(&["GET", k]),
            Resp::Bulk(Some(k.as_bytes().to_vec()))
        );
    }
}

/// The daemon on a server that refuses PSYNC: `--method scan` takes a SCAN
/// base on every `--base-every`, each a generation of its own marked not
/// point-in-time, and the newest restores equal to the source; without a
/// schedule it is refused, naming why.
#[test]
fn the_daemon_takes_scheduled_scan_bases_of_a_managed_server() {
    let src = RedisServer::start(&[]);
    let mut c = src.client();
    fill_all_types(&mut c);
    c.ok(&[
        "ACL", "SETUSER", "managed", "on", ">pw", "~*", "+@all", "-psync", "-sync",
    ]);
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    let url = format!("redis://managed@127.0.0.1:{}", src.port);
    let daemon = |extra: &[&str]| {
        let mut c = redvault();
        c.env("REDVAULT_REDIS_PASSWORD", "pw")
            .args([
                "daemon", "--redis", &url, "--to", &store, "--source", "managed",
            ])
            .args(["--method", "scan"])
            .args(extra)
            .arg("--kek")
            .arg(work.path().join("kek.pub.pem"))
            .arg("--state-dir")
            .arg(work.path().join("state"));
        c
    };
    let (code, _, err) = run(&mut daemon(&[]));
    assert_eq!(code, 1);
    assert!(one_line_error(&err).contains("base_every"), "{err}");

    let mut d =
        common::daemon::Daemon::spawn(|| daemon(&["--base-every", "*/2 * * * * *"]), work.path());
    let gens = work.path().join("store/managed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !gens.exists() || generation_count(&gens) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no second SCAN base in 30 s: {}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    d.stop();
    for g in std::fs::read_dir(&gens).unwrap() {
        let m = g.unwrap().path().join("manifest.json");
        if m.exists() {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap();
            assert_eq!(v["redis"]["method"], "scan");
        }
    }
    let dst = RedisServer::start(&[]);
    let (code, _, err) = run(&mut restore_cmd(
        &dst.url(),
        &store,
        "managed",
        &work.path().join("kek.pem"),
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), src.digest());
}
