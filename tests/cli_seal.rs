//! `redvault keys generate`, `seal` and `unseal` as a user runs them.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn seal_file(dir: &Path, input: &Path, out: &str) {
    let (code, _, err) = run(redvault()
        .arg("seal")
        .arg("--kek")
        .arg(dir.join("kek.pub.pem"))
        .arg(input)
        .arg(dir.join(out)));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn keys_generate_writes_a_private_key_0600_and_its_public_half() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kek.pem");
    let (code, stdout, err) = run(redvault()
        .args(["--json", "keys", "generate", "--bits", "2048", "--out"])
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(v["key_id"].as_str().unwrap().starts_with("local-rsa:"));
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let public = std::fs::read_to_string(dir.path().join("kek.pub.pem")).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    // Never overwrites a key.
    let (code, _, err) = run(redvault().args(["keys", "generate", "--out"]).arg(&out));
    assert_ne!(code, 0);
    assert!(one_line_error(&err).contains("kek.pem"), "{err}");
}

#[test]
fn seal_and_unseal_round_trip_files_and_pipes() {
    let dir = tempfile::tempdir().unwrap();
    write_test_keys(dir.path());
    let mut data = compressible(9 << 20);
    data.extend(random(3 << 20));
    let input = dir.path().join("dump.rdb");
    std::fs::write(&input, &data).unwrap();
    let (code, stdout, err) = run(redvault()
        .args(["--json", "seal", "--chunk-size", "1048576", "--kek"])
        .arg(dir.path().join("kek.pub.pem"))
        .arg(&input)
        .arg(dir.path().join("dump.rdb.rv")));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["plaintext_bytes"], data.len() as u64);
    assert_eq!(v["chunks"], 12);
    let sealed = std::fs::read(dir.path().join("dump.rdb.rv")).unwrap();
    assert!(sealed.len() < data.len(), "compressed");
    // Under umask 022 the plaintext is still private: 0600.
    let (code, _, err) = run(std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 022 && exec {} unseal --kek kek.pem dump.rdb.rv back.rdb",
            env!("CARGO_BIN_EXE_redvault")
        ))
        .current_dir(dir.path()));
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(dir.path().join("back.rdb")).unwrap() == data);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("back.rdb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    // stdin -> stdout both ways.
    let sealed = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} seal --kek kek.pub.pem - - < dump.rdb | {} unseal --kek kek.pem - - | cmp - dump.rdb",
            env!("CARGO_BIN_EXE_redvault"),
            env!("CARGO_BIN_EXE_redvault")
        ))
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(sealed.success());
}

#[test]
fn config_file_and_environment_supply_the_kek() {
    let dir = tempfile::tempdir().unwrap();
    write_test_keys(dir.path());
    let input = dir.path().join("in");
    std::fs::write(&input, b"hello").unwrap();
    let cfg = dir.path().join("redvault.toml");
    std::fs::write(
        &cfg,
        format!(
            "kek = {:?}\n[seal]\nzstd_level = 3\n",
            dir.path().join("kek.pub.pem")
        ),
    )
    .unwrap();
    let (code, _, err) = run(redvault()
        .arg("--config")
        .arg(&cfg)
        .arg("seal")
        .arg(&input)
        .arg(dir.path().join("in.rv")));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(redvault()
        .env("REDVAULT_KEK", dir.path().join("kek.pem"))
        .arg("unseal")
        .arg(dir.path().join("in.rv"))
        .arg(dir.path().join("out")));
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), b"hello");
    // A typo in the config is named.
    std::fs::write(&cfg, "kekk = 1\n").unwrap();
    let (code, _, err) = run(redvault()
        .arg("--config")
        .arg(&cfg)
        .arg("seal")
        .arg(&input)
        .arg(dir.path().join("x")));
    assert_ne!(code, 0);
    assert!(
        one_line_error(&err).contains("unknown field `kekk`"),
        "{err}"
    );
}

#[test]
fn no_kek_means_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, b"secret data").unwrap();
    let (code, _, err) = run(redvault()
        .env_remove("REDVAULT_KEK")
        .arg("seal")
        .arg(&input)
        .arg(dir.path().join("in.rv")));
    assert_ne!(code, 0);
    assert!(one_line_error(&err).contains("no KEK given"), "{err}");
    let (code, _, err) = run(redvault()
        .arg("seal")
        .arg("--kek")
        .arg(dir.path().join("nope.pem"))
        .arg(&input)
        .arg(dir.path().join("in.rv")));
    assert_ne!(code, 0);
    assert!(one_line_error(&err).contains("nope.pem"), "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("in")],
        "nothing written"
    );
}

#[test]
fn damaged_objects_fail_with_one_line_naming_object_and_chunk_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    write_test_keys(dir.path());
    let input = dir.path().join("in");
    std::fs::write(&input, compressible(5 << 20)).unwrap();
    seal_file(dir.path(), &input, "in.rv");
    let sealed = std::fs::read(dir.path().join("in.rv")).unwrap();
    let f = frames(&sealed);
    assert_eq!(f.len(), 2);
    let unseal = |name: &str| {
        run(redvault()
            .args(["unseal", "--kek"])
            .arg(dir.path().join("kek.pem"))
            .arg(dir.path().join(name))
            .arg(dir.path().join("out")))
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "flip.rv",
            {
                let mut s = sealed.clone();
                s[f[1].0 + 40] ^= 4;
                s
            },
            "chunk 1: authentication failed",
        ),
        (
            "trunc.rv",
            sealed[..f[1].0].to_vec(),
            "without its final chunk",
        ),
        (
            "half.rv",
            sealed[..f[0].1 - 100].to_vec(),
            "truncated inside chunk 0",
        ),
        (
            "version.rv",
            {
                let mut s = sealed.clone();
                s[9] = 9;
                s
            },
            "format version 9 is not supported",
        ),
        (
            "header.rv",
            {
                let mut s = sealed.clone();
                s[18] ^= 1;
                s
            },
            "header failed authentication",
        ),
    ];
    for (name, bytes, expect) in cases {
        std::fs::write(dir.path().join(name), bytes).unwrap();
        let (code, _, err) = unseal(name);
        assert_ne!(code, 0, "{name}");
        let line = one_line_error(&err);
        assert!(
            line.contains(expect) && line.contains(name),
            "{name}: {line}"
        );
        assert!(
            !dir.path().join("out").exists(),
            "{name}: no output left behind"
        );
    }
    // The public key cannot unseal; it says so.
    let (code, _, err) = run(redvault()
        .args(["unseal", "--kek"])
        .arg(dir.path().join("kek.pub.pem"))
        .arg(dir.path().join("in.rv"))
        .arg(dir.path().join("out")));
    assert_ne!(code, 0);
    assert!(
        one_line_error(&err).contains("holds only a public key"),
        "{err}"
    );
    // A key file with loose permissions is refused.
    std::fs::set_permissions(
        dir.path().join("kek.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (code, _, err) = unseal("in.rv");
    assert_ne!(code, 0);
    assert!(one_line_error(&err).contains("chmod 600"), "{err}");
}

#[test]
fn wrong_kek_names_the_key_the_object_needs() {
    let dir = tempfile::tempdir().unwrap();
    write_test_keys(dir.path());
    let input = dir.path().join("in");
    std::fs::write(&input, b"data").unwrap();
    seal_file(dir.path(), &input, "in.rv");
    let other = dir.path().join("other.pem");
    let (code, _, err) = run(redvault()
        .args(["keys", "generate", "--bits", "2048", "--out"])
        .arg(&other));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(redvault()
        .args(["unseal", "--kek"])
        .arg(&other)
        .arg(dir.path().join("in.rv"))
        .arg(dir.path().join("out")));
    assert_ne!(code, 0);
    let line = one_line_error(&err);
    assert!(
        line.contains("was wrapped by") && line.contains(test_kek_id()),
        "{line}"
    );
}

fn test_kek_id() -> &'static str {
    use redvault::kek::Kek;
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| test_kek().id().to_string())
}

/// A backup object keeps its keyring beside it (keyring.json); unseal finds it.
#[tokio::test]
async fn unseal_reads_the_keyring_beside_a_backup_object() {
    use redvault::keyring::{DataKey, Keyring};
    let dir = tempfile::tempdir().unwrap();
    write_test_keys(dir.path());
    let dek = DataKey::generate();
    let ring = Keyring::wrap(&dek, &test_kek()).await.unwrap();
    let gen = dir.path().join("gen");
    std::fs::create_dir(&gen).unwrap();
    std::fs::write(gen.join("keyring.json"), ring.to_json()).unwrap();
    let data = compressible(100_000);
    std::fs::write(
        gen.join("base.rdb.rv"),
        seal_bytes(&data, &dek, "base.rdb.rv", &opts(65536, Some(1))).await,
    )
    .unwrap();
    let (code, _, err) = run(redvault()
        .args(["unseal", "--kek"])
        .arg(dir.path().join("kek.pem"))
        .arg(gen.join("base.rdb.rv"))
        .arg(dir.path().join("out")));
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(dir.path().join("out")).unwrap() == data);
    // Without its keyring it says what is missing.
    std::fs::remove_file(gen.join("keyring.json")).unwrap();
    let (code, _, err) = run(redvault()
        .args(["unseal", "--kek"])
        .arg(dir.path().join("kek.pem"))
        .arg(gen.join("base.rdb.rv"))
        .arg(dir.path().join("out2")));
    assert_ne!(code, 0);
    assert!(
        one_line_error(&err).contains("cannot read its keyring"),
        "{err}"
    );
}
