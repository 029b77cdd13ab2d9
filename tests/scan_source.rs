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
    let (code, out, err) = run(redvault()
        .args(["list", "--from", &store, "--source", "scan", "--trust"])
        .arg(work.path().join("signing.pub.pem")));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("by SCAN, not point-in-time"), "{out}");
}
