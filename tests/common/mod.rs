//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod azurite;
pub mod cluster;
pub mod daemon;
pub mod http;
pub mod key_vault;
pub mod redis;
pub mod resp_server;
pub mod tls;
pub mod token_endpoint;
pub mod versions;

use redvault::format::ObjectKind;
use redvault::kek::LocalRsaKek;
use redvault::keyring::DataKey;
use redvault::opener::{Opener, RawHeader};
use redvault::sealer::{ObjectSpec, SealOptions, Sealer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One 2048-bit test key per test binary (generation is the slow part).
pub fn test_key_pems() -> &'static (String, String) {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let k = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        (
            k.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap(),
        )
    })
}

pub fn test_kek() -> LocalRsaKek {
    LocalRsaKek::from_pem(&test_key_pems().0, "test-key").unwrap()
}

/// Writes the test key pair into `dir` as kek.pem (0600) and kek.pub.pem.
pub fn write_test_keys(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let (private, public) = test_key_pems();
    let p = dir.join("kek.pem");
    let q = dir.join("kek.pub.pem");
    std::fs::write(&p, private).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&q, public).unwrap();
    // The signing pair beside the KEK pair, as `keys generate` leaves it.
    if !dir.join(redvault::signing::SIGNING_KEY_FILE).exists() {
        redvault::signing::write_signer_files(dir).unwrap();
    }
    (p, q)
}

/// How many generation folders a source folder holds (dot folders, the
/// writer leases, are none).
pub fn generation_count(source_dir: &Path) -> usize {
    std::fs::read_dir(source_dir)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count()
}

/// The signing key `write_test_keys` left in `dir`.
pub fn test_signer(dir: &Path) -> redvault::signing::Signer {
    redvault::signing::Signer::load(&dir.join(redvault::signing::SIGNING_KEY_FILE)).unwrap()
}

pub fn opts(chunk_size: u32, level: Option<i32>) -> SealOptions {
    SealOptions {
        chunk_size,
        zstd_level: level,
        parallelism: 2,
    }
}

pub fn spec(name: &str) -> ObjectSpec {
    ObjectSpec {
        kind: ObjectKind::Rdb,
        generation: "20261123T000000Z-test".into(),
        name: name.into(),
        embedded_keyring: vec![],
        attestation: vec![],
    }
}

/// Seals `data` in memory.
pub async fn seal_bytes(data: &[u8], dek: &DataKey, name: &str, o: &SealOptions) -> Vec<u8> {
    let mut s = Sealer::new(Vec::new(), spec(name), dek, o).await.unwrap();
    // Uneven writes, to cross chunk boundaries at odd places.
    for piece in data.chunks(7777) {
        s.write(piece).await.unwrap();
    }
    s.finish().await.unwrap().1
}

/// Opens sealed bytes in memory; the error is returned as its one-line message.
pub async fn open_bytes(sealed: &[u8], dek: &DataKey, label: &str) -> Result<Vec<u8>, String> {
    let mut input = sealed;
    let raw = RawHeader::read(&mut input, label)
        .await
        .map_err(|e| e.to_string())?;
    let mut o = Opener::new(input, &raw, dek, label, 2).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(c) = o.next_chunk().await.map_err(|e| e.to_string())? {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// Byte ranges (start, end) of each chunk frame, length prefix included.
pub fn frames(sealed: &[u8]) -> Vec<(usize, usize)> {
    let hlen = u32::from_be_bytes(sealed[10..14].try_into().unwrap()) as usize;
    let mut pos = hlen;
    let mut out = vec![];
    loop {
        let field = u32::from_be_bytes(sealed[pos..pos + 4].try_into().unwrap());
        let len = (field & 0x7fff_ffff) as usize;
        out.push((pos, pos + 4 + len));
        pos += 4 + len;
        if field & 0x8000_0000 != 0 {
            return out;
        }
    }
}

/// RDB-like test data: compressible, with some structure and some noise.
pub fn compressible(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    let mut i: u64 = 0;
    while v.len() < n {
        let line = format!(
            "user:{i}\x00{{\"name\":\"n{}\",\"score\":{}}}",
            i % 977,
            i.wrapping_mul(2654435761) % 100_000
        );
        v.extend_from_slice(line.as_bytes());
        i += 1;
    }
    v.truncate(n);
    v
}

pub fn random(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut v);
    v
}

/// The built `redvault` binary.
pub fn redvault() -> Command {
    Command::new(env!("CARGO_BIN_EXE_redvault"))
}

/// Runs the binary; returns (exit code, stdout, stderr).
/// `redvault restore` of `source`'s newest generation in `store` into the
/// Redis at `redis`, with the private KEK at `kek`.
pub fn restore_cmd(redis: &str, store: &str, source: &str, kek: &Path) -> Command {
    let mut c = redvault();
    c.args([
        "restore", "--redis", redis, "--from", store, "--source", source,
    ])
    .arg("--kek")
    .arg(kek);
    c
}

pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run redvault");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The single `redvault: error:` line of a failed run (warnings and notes aside).
pub fn one_line_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("redvault: warning") && !l.starts_with("redvault: note"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one line on failure: {stderr:?}");
    assert!(lines[0].starts_with("redvault: error: "), "{stderr}");
    lines[0].to_string()
}

/// Every file under `dir`, recursively, sorted.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_below(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A sealed export of a test Redis into a fresh file:// store, with the test
/// keys beside it.
pub struct SealedBackup {
    pub work: tempfile::TempDir,
    /// The store's folder.
    pub dir: PathBuf,
    /// Its file:// URL.
    pub store: String,
    /// The private KEK.
    pub kek: PathBuf,
}

impl SealedBackup {
    /// Exports the Redis at `url` as source `src` (plus `extra` flags).
    pub fn export(url: &str, extra: &[&str]) -> Self {
        let work = tempfile::tempdir().unwrap();
        write_test_keys(work.path());
        let dir = work.path().join("store");
        std::fs::create_dir(&dir).unwrap();
        let store = format!("file://{}", dir.display());
        let (code, _, err) = run(redvault()
            .args([
                "export", "--redis", url, "--to", &store, "--source", "src", "--kek",
            ])
            .arg(work.path().join("kek.pub.pem"))
            .args(extra));
        assert_eq!(code, 0, "{err}");
        SealedBackup {
            kek: work.path().join("kek.pem"),
            dir,
            store,
            work,
        }
    }

    /// `redvault --json import` of it into the Redis at `url`: (exit code,
    /// the summary, stderr).
    pub fn import(&self, url: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
        let (code, out, err) = run(redvault()
            .args([
                "--json",
                "import",
                "--redis",
                url,
                "--from",
                &self.store,
                "--kek",
            ])
            .arg(&self.kek)
            .args(extra));
        let v = serde_json::from_str(out.lines().last().unwrap_or("null"))
            .unwrap_or(serde_json::Value::Null);
        (code, v, err)
    }
}
