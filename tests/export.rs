//! `redvault export` and `list` against a real redis-server.

mod common;

use common::azurite::Azurite;
use common::redis::*;
use common::*;
use std::path::Path;

fn export_cmd(redis_url: &str, store: &Path, extra: &[&str]) -> (i32, String, String) {
    run(redvault()
        .args(["--json", "export", "--redis", redis_url, "--to"])
        .arg(format!("file://{}", store.display()))
        .args(extra))
}

/// A temp dir holding the test keys (kek.pem, kek.pub.pem) and an empty `store`.
fn workspace() -> (tempfile::TempDir, std::path::PathBuf) {
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    let store = work.path().join("store");
    std::fs::create_dir(&store).unwrap();
    (work, store)
}

fn assert_no_manifest(store: &Path) {
    let found: Vec<_> = files_below(store)
        .into_iter()
        .filter(|p| p.file_name().unwrap() == "manifest.json")
        .collect();
    assert!(
        found.is_empty(),
        "a failed export wrote a manifest: {found:?}"
    );
}

fn sealed_round_trip(diskless: &str) {
    let src = RedisServer::start(&["--repl-diskless-sync", diskless]);
    fill_all_types(&mut src.client());
    let (work, store) = workspace();
    let kek_pub = work.path().join("kek.pub.pem");
    let (code, stdout, err) = export_cmd(
        &src.url(),
        &store,
        &["--source", "cache1", "--kek", kek_pub.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let generation = summary["generation"].as_str().unwrap().to_string();
    let gen_dir = store.join("cache1").join(&generation);
    let names: Vec<_> = files_below(&gen_dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["base.rdb.rv", "keyring.json", "manifest.json"]);

    // No key name or value in any stored byte.
    for f in files_below(&store) {
        let bytes = std::fs::read(&f).unwrap();
        for canary in [SECRET_KEY, SECRET_VALUE, "member-1999", "field-999"] {
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "{canary} in plaintext in {}",
                f.display()
            );
        }
    }

    // Unseal with the private key, load natively: the same data set.
    let rdb = work.path().join("restored.rdb");
    let (code, _, err) = run(redvault()
        .args(["unseal", "--kek"])
        .arg(work.path().join("kek.pem"))
        .arg(gen_dir.join("base.rdb.rv"))
        .arg(&rdb));
    assert_eq!(code, 0, "{err}");
    let restored = RedisServer::start_with_rdb(&[], Some(&rdb));
    assert_eq!(restored.digest(), src.digest(), "restored data set differs");
    assert_ne!(src.digest(), "0000000000000000000000000000000000000000");

    // list shows it complete.
    let (code, stdout, err) = run(redvault()
        .args(["--json", "list", "--from"])
        .arg(format!("file://{}", store.display())));
    assert_eq!(code, 0, "{err}");
    let gens: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(gens.as_array().unwrap().len(), 1);
    assert_eq!(gens[0]["generation"], generation.as_str());
    assert_eq!(gens[0]["complete"], true);
    assert_eq!(gens[0]["manifest"]["redis"]["rdb_version"], 10);
    // Keys per database, counted from the RDB itself.
    let dbsize = |db: &str| {
        let mut c = src.client();
        c.ok(&["SELECT", db]);
        match c.ok(&["DBSIZE"]) {
            Resp::Int(n) => n as u64,
            other => panic!("{other:?}"),
        }
    };
    let keys = &gens[0]["manifest"]["keys"];
    assert_eq!(keys["0"].as_u64(), Some(dbsize("0")), "{keys}");
    assert_eq!(keys["1"].as_u64(), Some(dbsize("1")), "{keys}");
    assert_eq!(keys["7"].as_u64(), Some(dbsize("7")), "{keys}");
    let sha = gens[0]["manifest"]["objects"][0]["plaintext_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    use sha2::Digest;
    assert_eq!(
        sha,
        hex::encode(sha2::Sha256::digest(std::fs::read(&rdb).unwrap()))
    );
}

#[test]
fn sealed_export_restores_the_same_data_set_diskless() {
    sealed_round_trip("yes");
}

#[test]
fn sealed_export_restores_the_same_data_set_disk_based() {
    sealed_round_trip("no");
}

#[test]
fn plain_export_writes_a_loadable_rdb_and_warns() {
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let (work, store) = workspace();
    let signing_key = work.path().join("signing.pem");
    let signing_pub = work.path().join("signing.pub.pem");
    // No KEK to find a signing key beside: without one nothing is written.
    let (code, _, err) = export_cmd(&src.url(), &store, &["--plain", "--prefix", "nightly/eu"]);
    assert_eq!(code, 1);
    assert!(one_line_error(&err).contains("no signing key"), "{err}");
    assert!(files_below(&store).is_empty(), "nothing written unsigned");
    let (code, stdout, err) = export_cmd(
        &src.url(),
        &store,
        &[
            "--plain",
            "--prefix",
            "nightly/eu",
            "--signing-key",
            signing_key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("UNENCRYPTED"), "{err}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let source = format!("127.0.0.1-{}", src.port);
    assert_eq!(summary["source"], source.as_str());
    let gen_dir = store
        .join("nightly/eu")
        .join(&source)
        .join(summary["generation"].as_str().unwrap());
    assert!(!gen_dir.join("keyring.json").exists());
    let restored = RedisServer::start_with_rdb(&[], Some(&gen_dir.join("base.rdb")));
    assert_eq!(restored.digest(), src.digest());
    // redvault import reads the plain generation too (its SHA-256 checked).
    let target = RedisServer::start(&[]);
    let (code, _, err) = run(redvault()
        .args([
            "import",
            "--redis",
            &target.url(),
            "--prefix",
            "nightly/eu",
            "--trust",
            signing_pub.to_str().unwrap(),
            "--from",
        ])
        .arg(format!("file://{}", store.display())));
    assert_eq!(code, 0, "{err}");
    assert_eq!(target.digest(), src.digest());

    // With a KEK given, a plain generation is refused (one planted by anyone
    // who can write to the store would look the same), unless --allow-plain.
    let (private, _) = write_test_keys(work.path());
    let with_kek = |extra: &[&str]| {
        let target = RedisServer::start(&[]);
        let r = run(redvault()
            .args([
                "import",
                "--redis",
                &target.url(),
                "--prefix",
                "nightly/eu",
                "--kek",
            ])
            .arg(&private)
            .args(extra)
            .arg("--from")
            .arg(format!("file://{}", store.display())));
        (target, r)
    };
    let (target, (code, _, err)) = with_kek(&[]);
    assert_eq!(code, 1);
    assert!(
        one_line_error(&err).contains("plain (unencrypted) generation")
            && err.contains("--allow-plain"),
        "{err}"
    );
    assert_eq!(
        target.client().ok(&["DBSIZE"]),
        Resp::Int(0),
        "nothing loaded"
    );
    let (target, (code, _, err)) = with_kek(&["--allow-plain"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(target.digest(), src.digest());
}

/// A generation copied from one source's folder into another's is not that
/// source's backup: its manifest names the folder it was written in.
#[test]
fn a_generation_copied_in_from_another_source_is_not_complete() {
    let (_src, work, store, generation) = sealed_generation("cache1");
    copy_folder(
        &store.join("cache1").join(&generation),
        &store.join("cache2").join(&generation),
    );
    let url = format!("file://{}", store.display());
    let (code, stdout, err) =
        run(redvault().args(["--json", "list", "--from", &url, "--source", "cache2"]));
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(listed[0]["complete"], false, "{listed}");
    assert!(
        listed[0]["problem"]
            .as_str()
            .unwrap()
            .contains("not the folder it is in"),
        "{listed}"
    );
    let target = RedisServer::start(&[]);
    let (code, _, err) = run(redvault()
        .args([
            "import",
            "--redis",
            &target.url(),
            "--source",
            "cache2",
            "--from",
            &url,
            "--kek",
        ])
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 1);
    assert!(one_line_error(&err).contains("no complete backup"), "{err}");
    assert_eq!(target.client().ok(&["DBSIZE"]), Resp::Int(0));
}

#[tokio::test]
async fn manifest_is_authenticated_by_the_data_key() {
    use redvault::backup::manifest::Manifest;
    use redvault::keyring::Keyring;
    let src = RedisServer::start(&[]);
    src.client().ok(&["SET", "a", "1"]);
    let (work, store) = workspace();
    let kek_pub = work.path().join("kek.pub.pem");
    let (code, stdout, err) = export_cmd(
        &src.url(),
        &store,
        &["--source", "s", "--kek", kek_pub.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let gen_dir = store
        .join("s")
        .join(summary["generation"].as_str().unwrap());
    let ring =
        Keyring::from_json(&std::fs::read(gen_dir.join("keyring.json")).unwrap(), "k").unwrap();
    let dek = ring.unwrap(&test_kek(), "k").await.unwrap();
    let bytes = std::fs::read(gen_dir.join("manifest.json")).unwrap();
    let m = Manifest::open(&bytes, &dek, "manifest.json").unwrap();
    assert_eq!(m.source, "s");
    assert_eq!(m.objects[0].name, "base.rdb.rv");
    let edited = String::from_utf8(bytes)
        .unwrap()
        .replace("\"offset\": 0", "\"offset\": 1");
    let e = Manifest::open(edited.as_bytes(), &dek, "manifest.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("failed authentication"), "{e}");
}

#[test]
fn unreachable_redis_is_named_and_nothing_is_written() {
    let (work, store) = workspace();
    let port = free_port();
    let (code, _, err) = export_cmd(
        &format!("redis://127.0.0.1:{port}"),
        &store,
        &["--kek", work.path().join("kek.pub.pem").to_str().unwrap()],
    );
    assert_ne!(code, 0);
    let line = one_line_error(&err);
    assert!(
        line.contains(&format!("cannot connect to Redis at 127.0.0.1:{port}")),
        "{line}"
    );
    assert!(files_below(&store).is_empty());
}

#[test]
fn wrong_password_and_missing_permission_are_named() {
    let src = RedisServer::start(&["--requirepass", "s3cret"]);
    let mut c = Client::connect(src.port).unwrap();
    c.ok(&["AUTH", "s3cret"]);
    c.ok(&[
        "ACL", "SETUSER", "reader", "on", ">readpw", "~*", "&*", "+@all", "-psync", "-sync",
    ]);
    let (work, store) = workspace();
    let kek = work.path().join("kek.pub.pem");
    let kek = kek.to_str().unwrap();

    // A password in the URL works, with a warning naming the safer ways.
    let (code, _, err) = export_cmd(
        &format!("redis://:wrong@127.0.0.1:{}", src.port),
        &store,
        &["--kek", kek],
    );
    assert_ne!(code, 0);
    assert!(err.contains("use --redis-password-file"), "{err}");
    let line = err.lines().last().unwrap_or_default();
    assert!(
        line.contains("refused authentication") && !line.contains("wrong"),
        "{line}"
    );
    // From a file (one trailing newline is not part of it).
    let pw = work.path().join("redis-password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let (code, _, err) = export_cmd(
        &format!("redis://127.0.0.1:{}", src.port),
        &store,
        &["--kek", kek, "--redis-password-file", pw.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("s3cret"), "{err}");

    let (code, _, err) = run(redvault()
        .env("REDVAULT_REDIS_PASSWORD", "readpw")
        .args([
            "export",
            "--redis",
            &format!("redis://reader@127.0.0.1:{}", src.port),
        ])
        .args(["--kek", kek, "--to"])
        .arg(format!("file://{}", store.display())));
    assert_ne!(code, 0);
    let line = one_line_error(&err);
    assert!(
        line.contains("reader lacks the permission to run 'psync'"),
        "{line}"
    );
    assert!(!line.contains("readpw"), "never print the password: {line}");

    // The password from the environment works.
    let (code, _, err) = run(redvault()
        .env("REDVAULT_REDIS_PASSWORD", "s3cret")
        .args([
            "export",
            "--redis",
            &format!("redis://127.0.0.1:{}", src.port),
            "--kek",
            kek,
            "--to",
        ])
        .arg(format!("file://{}", store.display())));
    assert_eq!(code, 0, "{err}");
}

/// Forwards a client to `upstream`, passing at most `limit` bytes back, then
/// cuts both directions: a connection dropped mid-snapshot.
fn cutting_proxy(upstream: u16, limit: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let server = std::net::TcpStream::connect(("127.0.0.1", upstream)).unwrap();
        let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut c_in, &mut s_out);
        });
        let (mut s_in, mut c_out) = (server, client);
        let mut sent = 0;
        let mut buf = [0u8; 16384];
        while sent < limit {
            let n = match s_in.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n.min(limit - sent),
            };
            if c_out.write_all(&buf[..n]).is_err() {
                break;
            }
            sent += n;
        }
        let _ = c_out.shutdown(std::net::Shutdown::Both);
        let _ = s_in.shutdown(std::net::Shutdown::Both);
    });
    port
}

#[test]
fn connection_dropped_mid_snapshot_leaves_no_complete_generation() {
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let (work, store) = workspace();
    let port = cutting_proxy(src.port, 20_000);
    let (code, _, err) = export_cmd(
        &format!("redis://127.0.0.1:{port}"),
        &store,
        &["--kek", work.path().join("kek.pub.pem").to_str().unwrap()],
    );
    assert_ne!(code, 0);
    let line = one_line_error(&err);
    assert!(
        line.contains("closed the connection during the snapshot"),
        "{line}"
    );
    assert_no_manifest(&store);
    let (_, stdout, _) = run(redvault()
        .args(["--json", "list", "--from"])
        .arg(format!("file://{}", store.display())));
    let gens: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        gens.as_array()
            .unwrap()
            .iter()
            .all(|g| g["complete"] == false),
        "{gens}"
    );
}

#[test]
fn silent_server_times_out_with_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(std::time::Duration::from_secs(5));
        drop(conn);
    });
    let (work, store) = workspace();
    let (code, _, err) = export_cmd(
        &format!("redis://127.0.0.1:{port}"),
        &store,
        &[
            "--redis-timeout",
            "1",
            "--kek",
            work.path().join("kek.pub.pem").to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    let line = one_line_error(&err);
    assert!(line.contains("no answer within 1 s"), "{line}");
    assert_no_manifest(&store);
}

#[test]
fn missing_storage_or_kek_fails_before_anything_is_written() {
    let src = RedisServer::start(&[]);
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    let kek = work.path().join("kek.pub.pem");
    let missing = work.path().join("nope");
    let (code, _, err) = export_cmd(&src.url(), &missing, &["--kek", kek.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(one_line_error(&err).contains("does not exist"), "{err}");

    let store = work.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let (code, _, err) = run(redvault()
        .env_remove("REDVAULT_KEK")
        .args(["export", "--redis", &src.url(), "--to"])
        .arg(format!("file://{}", store.display())));
    assert_ne!(code, 0);
    assert!(one_line_error(&err).contains("no KEK given"), "{err}");
    assert!(files_below(&store).is_empty());
    // No sync was started on the primary either.
    let info = match src.client().ok(&["INFO", "stats"]) {
        Resp::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(info.contains("sync_full:0"), "{info}");
}

/// Export to Azure Blob (Azurite on loopback), list it there, unseal it, restore.
#[tokio::test]
async fn export_to_azure_blob_on_azurite() {
    let az = Azurite::start();
    az.create_container("backups");
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    let env = az.env();
    let with_env = |c: &mut std::process::Command| {
        for (k, v) in &env {
            c.env(k, v);
        }
    };
    let mut cmd = redvault();
    with_env(&mut cmd);
    let (code, stdout, err) = run(cmd
        .args([
            "--json",
            "export",
            "--redis",
            &src.url(),
            "--to",
            "az://backups",
            "--prefix",
            "prod",
            "--source",
            "cache1",
            "--kek",
        ])
        .arg(work.path().join("kek.pub.pem")));
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let generation = summary["generation"].as_str().unwrap().to_string();

    let mut cmd = redvault();
    with_env(&mut cmd);
    let (code, stdout, err) = run(cmd.args([
        "--json",
        "list",
        "--from",
        "az://backups",
        "--prefix",
        "prod",
    ]));
    assert_eq!(code, 0, "{err}");
    let gens: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(gens[0]["generation"], generation.as_str());
    assert_eq!(gens[0]["complete"], true);

    // Fetch the objects through object_store, unseal, load natively.
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    let store = redvault::store::Store::open("az://backups", Some("prod")).unwrap();
    let gen_dir = work.path().join("gen");
    std::fs::create_dir(&gen_dir).unwrap();
    for name in ["keyring.json", "base.rdb.rv"] {
        let p = store.path(&["cache1", &generation, name]);
        let bytes = store.read(&p).await.unwrap();
        std::fs::write(gen_dir.join(name), bytes).unwrap();
    }
    let rdb = work.path().join("restored.rdb");
    let (code, _, err) = run(redvault()
        .args(["unseal", "--kek"])
        .arg(work.path().join("kek.pem"))
        .arg(gen_dir.join("base.rdb.rv"))
        .arg(&rdb));
    assert_eq!(code, 0, "{err}");
    let restored = RedisServer::start_with_rdb(&[], Some(&rdb));
    assert_eq!(restored.digest(), src.digest());

    // A missing container is named, and nothing is synced.
    let mut cmd = redvault();
    with_env(&mut cmd);
    let (code, _, err) = run(cmd
        .args([
            "export",
            "--redis",
            &src.url(),
            "--to",
            "az://nosuchcontainer",
            "--kek",
        ])
        .arg(work.path().join("kek.pub.pem")));
    assert_ne!(code, 0);
    let line = one_line_error(&err);
    assert!(
        line.contains("az://nosuchcontainer") && line.contains("cannot list"),
        "{line}"
    );
}

/// Exports one after another within a second (a cron beside a manual run)
/// each get their own generation: none overwrites another, all restore.
#[test]
fn back_to_back_exports_never_share_a_generation() {
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let (work, store) = workspace();
    let kek_pub = work.path().join("kek.pub.pem");
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let (code, stdout, err) = export_cmd(
            &src.url(),
            &store,
            &["--source", "s", "--kek", kek_pub.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{err}");
        let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        ids.insert(summary["generation"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 3, "{ids:?}");
    let url = format!("file://{}", store.display());
    let (code, stdout, err) = run(redvault().args(["--json", "list", "--from", &url]));
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let complete: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["complete"] == true)
        .map(|g| g["generation"].as_str().unwrap())
        .collect();
    assert_eq!(complete.len(), 3, "{listed}");
    for g in complete {
        let target = RedisServer::start(&[]);
        let (code, _, err) = run(redvault()
            .args([
                "import",
                "--redis",
                &target.url(),
                "--generation",
                g,
                "--from",
                &url,
                "--kek",
            ])
            .arg(work.path().join("kek.pem")));
        assert_eq!(code, 0, "{g}: {err}");
        assert_eq!(target.digest(), src.digest(), "{g}");
    }
}

/// A folder planted under a far-future name (a copy of a real generation, its
/// manifest renamed to the folder) is not complete: its name's time is not
/// when it was created. Import passes over it, names it, and loads the real one.
#[test]
fn a_planted_future_generation_is_skipped_and_named() {
    let (src, work, store, real) = sealed_generation("cache1");
    let planted = "29991231T000000.000Z-deadbeef-00000000";
    let to = store.join("cache1").join(planted);
    copy_folder(&store.join("cache1").join(&real), &to);
    let m = std::fs::read_to_string(to.join("manifest.json")).unwrap();
    std::fs::write(to.join("manifest.json"), m.replace(&real, planted)).unwrap();
    // And an interrupted run, newer than the real one too.
    let partial = store
        .join("cache1")
        .join("29990101T000000.000Z-deadbeef-11111111");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("base.rdb.rv"), b"partial").unwrap();

    let url = format!("file://{}", store.display());
    let target = RedisServer::start(&[]);
    let (code, _, err) = run(redvault()
        .args(["import", "--redis", &target.url(), "--from", &url, "--kek"])
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        target.digest(),
        src.digest(),
        "the real generation was loaded"
    );
    assert!(
        err.contains(&format!("skipped cache1/{planted}")) && err.contains("generation name says"),
        "{err}"
    );
    assert!(
        err.contains("skipped cache1/29990101T000000.000Z-deadbeef-11111111"),
        "{err}"
    );
}

/// A source filled with every type and one sealed export of it as `source`:
/// (the server, the workspace, the store folder, the generation).
fn sealed_generation(source: &str) -> (RedisServer, tempfile::TempDir, std::path::PathBuf, String) {
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let (work, store) = workspace();
    let kek_pub = work.path().join("kek.pub.pem");
    let (code, stdout, err) = export_cmd(
        &src.url(),
        &store,
        &["--source", source, "--kek", kek_pub.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let generation = summary["generation"].as_str().unwrap().to_string();
    (src, work, store, generation)
}

/// Copies a generation's folder (its top-level objects) elsewhere in the store.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A plain generation newer than the sealed ones (planted, or a --plain run)
/// is passed over by a default import given a KEK, and named; the newest
/// sealed one loads.
#[test]
fn a_newer_plain_generation_is_passed_over_when_a_kek_is_given() {
    let (src, work, store, _sealed) = sealed_generation("cache1");
    let before = src.digest();
    src.client().ok(&["SET", "planted", "1"]);
    let key = work.path().join("signing.pem");
    let (code, _, err) = export_cmd(
        &src.url(),
        &store,
        &[
            "--source",
            "cache1",
            "--plain",
            "--signing-key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let target = RedisServer::start(&[]);
    let url = format!("file://{}", store.display());
    let (code, _, err) = run(redvault()
        .args(["import", "--redis", &target.url(), "--from", &url, "--kek"])
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        target.digest(),
        before,
        "the sealed generation, not the plain one"
    );
    assert!(
        err.contains("a plain (unencrypted) generation, passed over"),
        "{err}"
    );
}
