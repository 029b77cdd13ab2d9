//! Origin authentication against someone who can write to the store and holds
//! the public KEK: generations signed by another key, planted far-future
//! manifests, unsigned (format 1) generations, a deleted newest manifest. Each
//! on data written by the real commands into a real redis-server.

mod common;

use common::redis::*;
use common::*;
use std::path::Path;

struct World {
    work: tempfile::TempDir,
    store: String,
    src: RedisServer,
}

impl World {
    fn new() -> Self {
        let work = tempfile::tempdir().unwrap();
        write_test_keys(work.path());
        std::fs::create_dir(work.path().join("store")).unwrap();
        let store = format!("file://{}", work.path().join("store").display());
        let src = RedisServer::start(&[]);
        fill_all_types(&mut src.client());
        World { work, store, src }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.work.path().join(name)
    }

    /// Exports `redis` as source cache1 with the victim's public KEK, signed
    /// by `signing_key`; returns the generation.
    fn export(&self, redis: &RedisServer, signing_key: &Path) -> String {
        let (code, out, err) = run(redvault()
            .args([
                "--json",
                "export",
                "--redis",
                &redis.url(),
                "--to",
                &self.store,
            ])
            .args(["--source", "cache1", "--kek"])
            .arg(self.path("kek.pub.pem"))
            .arg("--signing-key")
            .arg(signing_key));
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v["generation"].as_str().unwrap().to_string()
    }

    /// Runs a reading command with the victim's private KEK (so the signing
    /// key beside it is trusted).
    fn read(&self, args: &[&str]) -> (i32, String, String) {
        run(redvault()
            .args(args)
            .args(["--from", &self.store, "--kek"])
            .arg(self.path("kek.pem")))
    }

    fn gen_dir(&self, generation: &str) -> std::path::PathBuf {
        self.path("store").join("cache1").join(generation)
    }
}

/// Rewrites a manifest as format 1 wrote it: version 1, no signer, no signature.
fn make_unsigned(manifest: &Path) {
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    m["version"] = 1.into();
    let obj = m.as_object_mut().unwrap();
    obj.remove("signer");
    obj.remove("signature");
    std::fs::write(manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// An attacker's own export (their Redis, the victim's public KEK, their
/// signing key) copied in as the newest generation: a default import passes
/// it over and names it; asking for it by name, verify and list say whose
/// signature it bears; the target holds only the victim's data.
#[test]
fn a_generation_signed_by_another_key_is_never_restored() {
    let w = World::new();
    let own = w.path("signing.pem");
    w.export(&w.src, &own);
    let attacker = tempfile::tempdir().unwrap();
    let forged = redvault::signing::write_signer_files(attacker.path()).unwrap();
    let evil = RedisServer::start(&[]);
    evil.client().ok(&["SET", "attacker", "1"]);
    let planted = w.export(&evil, &forged.private_path);

    let target = RedisServer::start(&[]);
    let (code, _, err) = w.read(&["import", "--redis", &target.url()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(target.digest(), w.src.digest(), "the victim's own data");
    assert!(
        err.contains(&format!("skipped cache1/{planted}")) && err.contains(&forged.id),
        "{err}"
    );

    let other = RedisServer::start(&[]);
    let (code, _, err) = w.read(&["import", "--redis", &other.url(), "--generation", &planted]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains(&forged.id) && line.contains("not a trusted signer"),
        "{line}"
    );
    assert_eq!(other.client().ok(&["DBSIZE"]), Resp::Int(0));

    let (code, _, err) = w.read(&["verify"]);
    assert_eq!(code, 1);
    assert!(err.contains(&forged.id), "{err}");

    let (code, out, err) = run(redvault()
        .args(["list", "--from", &w.store, "--trust"])
        .arg(w.path("signing.pub.pem")));
    assert_eq!(code, 0, "{err}");
    let planted_line = out.lines().find(|l| l.contains(&planted)).unwrap();
    assert!(planted_line.contains("refused"), "{out}");
    assert!(out.lines().any(|l| l.contains("trusted")), "{out}");
}

/// Planted manifests under far-future names (an attacker's signed exports,
/// renamed) never count towards --keep-last: with two real generations and
/// --keep-last 2, prune deletes nothing, and the daemon's retention would
/// keep them likewise (the same selection).
#[test]
fn planted_generations_never_make_prune_delete_real_ones() {
    let w = World::new();
    let own = w.path("signing.pem");
    let g1 = w.export(&w.src, &own);
    let g2 = w.export(&w.src, &own);
    let attacker = tempfile::tempdir().unwrap();
    let forged = redvault::signing::write_signer_files(attacker.path()).unwrap();
    let evil = RedisServer::start(&[]);
    for i in 0..3 {
        let planted = w.export(&evil, &forged.private_path);
        // Also as a far-future name (its manifest then names another folder).
        let future = format!("2999010{i}T000000.000Z-deadbeef-0000000{i}");
        std::fs::rename(w.gen_dir(&planted), w.gen_dir(&future)).unwrap();
    }
    for dry in [true, false] {
        let mut args = vec!["--json", "prune", "--keep-last", "2"];
        if dry {
            args.push("--dry-run");
        }
        let (code, out, err) = w.read(&args);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["generations"], serde_json::json!([]), "{out}");
    }
    assert!(w.gen_dir(&g1).join("manifest.json").exists());
    assert!(w.gen_dir(&g2).join("manifest.json").exists());
    // Without a trusted signer, prune refuses to judge at all.
    let (code, _, err) = run(redvault().args(["prune", "--from", &w.store, "--keep-last", "1"]));
    assert_eq!(code, 1);
    assert!(one_line_error(&err).contains("no trusted signer"), "{err}");
}

/// A generation of the older, unsigned format (here a plain export with its
/// signature taken out, as format 1 wrote it) is refused, naming
/// --allow-unsigned; with it, it is read and the warning says so.
#[test]
fn an_unsigned_generation_needs_allow_unsigned() {
    let w = World::new();
    let (code, out, err) = run(redvault()
        .args([
            "--json",
            "export",
            "--redis",
            &w.src.url(),
            "--to",
            &w.store,
        ])
        .args(["--source", "cache1", "--plain", "--signing-key"])
        .arg(w.path("signing.pem")));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let generation = v["generation"].as_str().unwrap();
    make_unsigned(&w.gen_dir(generation).join("manifest.json"));

    let import = |extra: &[&str]| {
        let target = RedisServer::start(&[]);
        let r = run(redvault()
            .args(["import", "--redis", &target.url(), "--from", &w.store])
            .args(extra));
        (target, r)
    };
    let trust = w.path("signing.pub.pem");
    let (target, (code, _, err)) = import(&["--trust", trust.to_str().unwrap()]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("unsigned") && line.contains("--allow-unsigned"),
        "{line}"
    );
    assert_eq!(target.client().ok(&["DBSIZE"]), Resp::Int(0));
    let (target, (code, _, err)) = import(&["--allow-unsigned"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("unsigned"), "said loudly: {err}");
    assert_eq!(target.digest(), w.src.digest());
}

/// Deleting the newest manifest rolls a default import back one generation,
/// but never silently: the skipped newer folder is named.
#[test]
fn a_deleted_newest_manifest_is_named_when_rolled_back() {
    let w = World::new();
    let own = w.path("signing.pem");
    w.export(&w.src, &own);
    let before = w.src.digest();
    w.src.client().ok(&["SET", "newer", "1"]);
    let newest = w.export(&w.src, &own);
    std::fs::remove_file(w.gen_dir(&newest).join("manifest.json")).unwrap();
    let target = RedisServer::start(&[]);
    let (code, _, err) = w.read(&["import", "--redis", &target.url()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(target.digest(), before);
    assert!(
        err.contains(&format!("skipped cache1/{newest}")) && err.contains("incomplete"),
        "{err}"
    );
}

/// A keyring swapped for one wrapping the attacker's own data key (anyone can
/// wrap one with the public KEK) is refused before its key opens anything:
/// the signed manifest names the data key.
#[tokio::test]
async fn a_swapped_keyring_is_refused() {
    let w = World::new();
    let generation = w.export(&w.src, &w.path("signing.pem"));
    let kek = redvault::kek::LocalRsaKek::from_pem(
        &std::fs::read_to_string(w.path("kek.pub.pem")).unwrap(),
        "kek.pub.pem",
    )
    .unwrap();
    let theirs = redvault::data_key::DataKey::generate();
    let ring = redvault::keyring::Keyring::wrap(&theirs, &kek)
        .await
        .unwrap();
    let path = w.gen_dir(&generation).join("keyring.json");
    std::fs::write(&path, ring.to_json()).unwrap();
    let target = RedisServer::start(&[]);
    let (code, _, err) = w.read(&["import", "--redis", &target.url()]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("keyring.json") && line.contains("the signed manifest names"),
        "{line}"
    );
    assert_eq!(target.client().ok(&["DBSIZE"]), Resp::Int(0));
}

/// With --allow-unsigned, an unsigned generation newer than the source's
/// oldest signed one (planted: no redvault writes one after signing began)
/// is passed over and named, and prune does not count it.
#[test]
fn allow_unsigned_never_prefers_a_planted_unsigned_generation() {
    let w = World::new();
    w.export(&w.src, &w.path("signing.pem"));
    let before = w.src.digest();
    let evil = RedisServer::start(&[]);
    evil.client().ok(&["SET", "attacker", "1"]);
    let (code, out, err) = run(redvault()
        .args(["--json", "export", "--redis", &evil.url(), "--to", &w.store])
        .args(["--source", "cache1", "--kek"])
        .arg(w.path("kek.pub.pem"))
        .arg("--signing-key")
        .arg(w.path("signing.pem")));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let planted = v["generation"].as_str().unwrap().to_string();
    // Made unsigned: a format 1 manifest (its MAC was over the signer too,
    // so the attacker recomputes nothing: it need not verify to be chosen).
    make_unsigned(&w.gen_dir(&planted).join("manifest.json"));

    let target = RedisServer::start(&[]);
    let (code, _, err) = w.read(&["import", "--redis", &target.url(), "--allow-unsigned"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(target.digest(), before);
    assert!(
        err.contains(&format!("skipped cache1/{planted}")) && err.contains("planted"),
        "{err}"
    );
    let (code, out, err) = w.read(&["--json", "prune", "--keep-last", "1", "--allow-unsigned"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["generations"], serde_json::json!([]), "{out}");
}
