//! TLS to Redis (rediss://) against Debian's redis-server with a TLS port
//! and a CA the tests make: export and import over TLS give the same data;
//! a plain URL on a TLS port, a TLS URL on a plain port, a server name the
//! certificate does not carry, a server offering only TLS 1.1 and a missing
//! client certificate each fail with one line naming the cause.

mod common;

use common::daemon::Daemon;
use common::redis::*;
use common::tls::TestCa;
use common::*;

/// A server with its plain port (for the test's own client) and a TLS port.
fn tls_server(ca: &TestCa, auth_clients: bool) -> (RedisServer, u16) {
    let tls_port = free_port();
    let p = tls_port.to_string();
    let s = RedisServer::start(&[
        "--tls-port",
        &p,
        "--tls-cert-file",
        ca.cert.to_str().unwrap(),
        "--tls-key-file",
        ca.key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.ca.to_str().unwrap(),
        "--tls-auth-clients",
        if auth_clients { "yes" } else { "no" },
    ]);
    (s, tls_port)
}

fn store() -> (tempfile::TempDir, String) {
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    (work, store)
}

#[test]
fn export_and_import_over_tls_give_the_same_data() {
    let ca = TestCa::new();
    let (src, src_tls) = tls_server(&ca, false);
    fill_all_types(&mut src.client());
    let (work, store) = store();
    let url = format!("rediss://127.0.0.1:{src_tls}");
    let (code, _, err) = run(redvault()
        .args(["export", "--redis", &url, "--to", &store, "--source", "s"])
        .arg("--tls-ca")
        .arg(&ca.ca)
        .arg("--kek")
        .arg(work.path().join("kek.pub.pem")));
    assert_eq!(code, 0, "{err}");
    let (dst, dst_tls) = tls_server(&ca, false);
    let (code, _, err) = run(redvault()
        .args([
            "import",
            "--redis",
            &format!("rediss://127.0.0.1:{dst_tls}"),
        ])
        .args(["--from", &store])
        .env("REDVAULT_TLS_CA", &ca.ca)
        .arg("--kek")
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), src.digest());
}

#[test]
fn mismatched_links_and_names_fail_naming_the_cause() {
    let ca = TestCa::new();
    let (src, src_tls) = tls_server(&ca, false);
    let (work, store) = store();
    let export = |url: &str, extra: &[&str]| {
        let mut c = redvault();
        c.args(["export", "--redis", url, "--to", &store, "--source", "s"])
            .args(extra)
            .arg("--kek")
            .arg(work.path().join("kek.pub.pem"));
        if url.starts_with("rediss:") {
            c.arg("--tls-ca").arg(&ca.ca);
        }
        run(&mut c)
    };
    // A plain URL on the TLS port.
    let (code, _, err) = export(&format!("redis://127.0.0.1:{src_tls}"), &[]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(line.contains("a TLS port? use rediss://"), "{line}");
    // A TLS URL on the plain port.
    let (code, _, err) = export(&format!("rediss://127.0.0.1:{}", src.port), &[]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(line.contains("TLS handshake failed"), "{line}");
    // A name the certificate does not carry.
    let (code, _, err) = export(
        &format!("rediss://127.0.0.1:{src_tls}"),
        &["--tls-server-name", "cache.example.net"],
    );
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("TLS handshake failed") && line.contains("certificate"),
        "{line}"
    );
    // A server whose CA is not trusted (no --tls-ca: the system's roots).
    let (code, _, err) = run(redvault()
        .args([
            "export",
            "--redis",
            &format!("rediss://127.0.0.1:{src_tls}"),
        ])
        .args(["--to", &store, "--source", "s", "--kek"])
        .arg(work.path().join("kek.pub.pem")));
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("TLS handshake failed") && line.contains("certificate"),
        "{line}"
    );
    // A server that offers only TLS 1.1 (below redvault's minimum).
    let old_tls = free_port();
    let _old = RedisServer::start(&[
        "--tls-port",
        &old_tls.to_string(),
        "--tls-cert-file",
        ca.cert.to_str().unwrap(),
        "--tls-key-file",
        ca.key.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
        "--tls-protocols",
        "TLSv1.1",
    ]);
    let (code, _, err) = export(&format!("rediss://127.0.0.1:{old_tls}"), &[]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(line.contains("TLS 1.2 or newer is required"), "{line}");
    // Nothing was written by any of them.
    assert!(files_below(&work.path().join("store")).is_empty());
}

/// The IPv6 loopback (`rediss://[::1]:PORT`, the certificate naming
/// IP ::1), and connecting by IP while verifying a name the certificate
/// carries (`--tls-server-name localhost`): both export and import.
#[test]
fn ipv6_and_a_server_name_for_an_ip_work() {
    let ca = TestCa::new();
    let tls_port = free_port();
    let p = tls_port.to_string();
    let src = RedisServer::start(&[
        "--bind",
        "127.0.0.1",
        "::1",
        "--tls-port",
        &p,
        "--tls-cert-file",
        ca.cert.to_str().unwrap(),
        "--tls-key-file",
        ca.key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.ca.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    fill_all_types(&mut src.client());
    let (work, store) = store();
    let (code, _, err) = run(redvault()
        .args(["export", "--redis", &format!("rediss://[::1]:{tls_port}")])
        .args(["--to", &store, "--source", "s", "--tls-ca"])
        .arg(&ca.ca)
        .arg("--kek")
        .arg(work.path().join("kek.pub.pem")));
    assert_eq!(code, 0, "export over [::1]: {err}");
    let (dst, dst_tls) = tls_server(&ca, false);
    let (code, _, err) = run(redvault()
        .args([
            "import",
            "--redis",
            &format!("rediss://127.0.0.1:{dst_tls}"),
        ])
        .args([
            "--from",
            &store,
            "--tls-server-name",
            "localhost",
            "--tls-ca",
        ])
        .arg(&ca.ca)
        .arg("--kek")
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "import by IP as localhost: {err}");
    assert_eq!(dst.digest(), src.digest());
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let ca = TestCa::new();
    let (src, src_tls) = tls_server(&ca, true);
    src.client().ok(&["SET", "k", "v"]);
    let (work, store) = store();
    let url = format!("rediss://127.0.0.1:{src_tls}");
    let export = |extra: &[&str]| {
        run(redvault()
            .args(["export", "--redis", &url, "--to", &store, "--source", "s"])
            .args(extra)
            .arg("--tls-ca")
            .arg(&ca.ca)
            .arg("--kek")
            .arg(work.path().join("kek.pub.pem")))
    };
    let (code, _, err) = export(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        one_line_error(&err).contains("requires a client certificate"),
        "{err}"
    );
    let (code, _, err) = export(&[
        "--tls-cert",
        ca.cert.to_str().unwrap(),
        "--tls-key",
        ca.key.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
}

/// The daemon follows a primary over TLS (the replication stream included),
/// through a clean stop and restart that continue the generation, and
/// restore and a drill write into TLS targets: the digests are equal.
#[test]
fn the_daemon_and_restore_work_over_tls() {
    let ca = TestCa::new();
    let (src, src_tls) = tls_server(&ca, false);
    let (work, store) = store();
    let start = || {
        let command = || {
            let mut c = redvault();
            c.env("REDVAULT_TLS_CA", &ca.ca)
                .args([
                    "daemon",
                    "--redis",
                    &format!("rediss://127.0.0.1:{src_tls}"),
                ])
                .args([
                    "--to",
                    &store,
                    "--source",
                    "cache1",
                    "--segment-interval-ms",
                    "100",
                ])
                .arg("--kek")
                .arg(work.path().join("kek.pub.pem"))
                .arg("--state-dir")
                .arg(work.path().join("state"));
            c
        };
        Daemon::spawn(command, work.path())
    };
    // Twice: the second run continues the generation over TLS (PSYNC from
    // the checkpoint) after a clean stop.
    for round in 0..2 {
        let mut daemon = start();
        daemon.wait_up();
        if round == 0 {
            fill_all_types(&mut src.client());
        } else {
            src.client().ok(&["SET", "after-restart", "1"]);
        }
        daemon.wait_durable(&src);
        daemon.stop();
    }
    let generations = generation_count(&work.path().join("store/cache1"));
    assert_eq!(generations, 1, "the restart continued the generation");
    let (dst, dst_tls) = tls_server(&ca, false);
    let (code, _, err) = run(redvault()
        .args([
            "restore",
            "--redis",
            &format!("rediss://127.0.0.1:{dst_tls}"),
        ])
        .args(["--from", &store, "--source", "cache1", "--tls-ca"])
        .arg(&ca.ca)
        .arg("--kek")
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), src.digest());

    // A drill into a TLS target checks the same generation.
    let (drilled, drilled_tls) = tls_server(&ca, false);
    let (code, out, err) = run(redvault()
        .args(["--json", "drill", "--target"])
        .arg(format!("rediss://127.0.0.1:{drilled_tls}"))
        .args(["--from", &store, "--source", "cache1", "--tls-ca"])
        .arg(&ca.ca)
        .arg("--kek")
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"ok\":true"), "{out}");
    assert_eq!(drilled.digest(), src.digest());
}

fn role_of(s: &RedisServer) -> String {
    match s.client().ok(&["ROLE"]) {
        Resp::Array(items) => match items.first() {
            Some(Resp::Bulk(Some(v))) => String::from_utf8_lossy(v).into_owned(),
            other => panic!("ROLE: {other:?}"),
        },
        other => panic!("ROLE: {other:?}"),
    }
}

/// The replication feed into a target reached over TLS serves TLS itself
/// (the data never comes back in plaintext): the target replicates from
/// the feed over TLS, loads the base whole, and ends a primary with
/// `tls-replication` as before. Without the feed's certificate, auto loads
/// with RESTORE saying why and `--via replication` fails naming the flags;
/// a target that replicates over TLS only is fed over TLS too.
#[test]
fn the_feed_serves_tls_to_a_target_reached_over_tls() {
    let ca = TestCa::new();
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let (work, store) = store();
    let (code, _, err) = run(redvault()
        .args([
            "export",
            "--redis",
            &src.url(),
            "--to",
            &store,
            "--source",
            "s",
        ])
        .arg("--kek")
        .arg(work.path().join("kek.pub.pem")));
    assert_eq!(code, 0, "{err}");
    let import = |url: &str, extra: &[&str], feed_cert: bool| {
        let mut c = redvault();
        c.args(["--json", "import", "--redis", url, "--from", &store]);
        if url.starts_with("rediss://") {
            c.arg("--tls-ca").arg(&ca.ca);
        }
        c.arg("--kek").arg(work.path().join("kek.pem")).args(extra);
        if feed_cert {
            c.arg("--feed-tls-cert")
                .arg(&ca.cert)
                .arg("--feed-tls-key")
                .arg(&ca.key);
        }
        run(&mut c)
    };

    let (dst, dst_tls) = tls_server(&ca, false);
    let url = format!("rediss://127.0.0.1:{dst_tls}");
    let (code, _, err) = import(&url, &["--via", "replication"], false);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("reached over TLS") && line.contains("--feed-tls-cert"),
        "{line}"
    );
    assert_eq!(role_of(&dst), "master");

    let (code, out, err) = import(&url, &["--via", "replication"], true);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["via"], "replication", "{v}");
    assert_eq!(dst.digest(), src.digest());
    assert_eq!(role_of(&dst), "master");
    assert_eq!(dst.config("tls-replication"), "no", "put back");
    assert_eq!(dst.config("masterauth"), "", "put back");

    // auto without the certificate: RESTORE, one line saying why.
    let (plain, plain_tls) = tls_server(&ca, false);
    let (code, out, err) = import(&format!("rediss://127.0.0.1:{plain_tls}"), &[], false);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["via"], "restore", "{v}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("redvault: note: loading with RESTORE")
                && l.contains("--feed-tls-cert")),
        "{err}"
    );
    assert_eq!(plain.digest(), src.digest());

    // Reached on its plain port, but replicating over TLS only.
    let (only, _) = tls_server(&ca, false);
    only.client()
        .ok(&["CONFIG", "SET", "tls-replication", "yes"]);
    let (code, _, err) = import(&only.url(), &["--via", "replication"], false);
    assert_eq!(code, 1);
    assert!(
        one_line_error(&err).contains("tls-replication yes"),
        "{err}"
    );
    let (code, out, err) = import(&only.url(), &["--via", "replication"], true);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["via"], "replication", "{v}");
    assert_eq!(only.digest(), src.digest());
    assert_eq!(only.config("tls-replication"), "yes");
    assert_eq!(role_of(&only), "master");
}
