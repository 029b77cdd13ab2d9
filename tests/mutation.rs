//! A deterministic mutation run over every parser of bytes from outside: the
//! RDB scanner (the shared fixtures), the sealed object opener, keyring and
//! manifest JSON, AOF segment records, and RESP replies. Seeded mutants (bit
//! flips, truncations, huge length fields, duplicated ranges) must each end in
//! a value or an error: no panic, no hang. Bounded in count; each parse runs
//! on a thread with a generous deadline that only a hang would reach.

mod common;

use common::*;
use redvault::rdb::{RdbScanner, ScanOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// xorshift64*: deterministic, so a failure repeats. REDVAULT_MUTATION_SEED
/// explores other mutants (the default is fixed).
struct Rng(u64);

fn rng(stream: u64) -> Rng {
    let base: u64 = std::env::var("REDVAULT_MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_0000);
    Rng(base ^ (stream << 32) | 1)
}

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutant of `seed`.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    if b.is_empty() {
        return b;
    }
    match rng.below(6) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => b.truncate(rng.below(b.len())),
        2 => {
            // A length field set huge: 0x81 (64-bit RDB length) or 0xFF bytes.
            let i = rng.below(b.len());
            let huge: &[u8] = if rng.below(2) == 0 {
                &[0x81, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
            } else {
                &[0xFF, 0xFF, 0xFF, 0xFF]
            };
            for (k, v) in huge.iter().enumerate() {
                if let Some(x) = b.get_mut(i + k) {
                    *x = *v;
                }
            }
        }
        3 => {
            let i = rng.below(b.len());
            let n = rng.below(64.min(b.len() - i)) + 1;
            let piece = b[i..(i + n).min(b.len())].to_vec();
            let at = rng.below(b.len());
            b.splice(at..at, piece);
        }
        4 => {
            let i = rng.below(b.len());
            b[i] = [0x00, 0xFF, 0x7F, 0x80][rng.below(4)];
        }
        _ => {
            let i = rng.below(b.len());
            b.remove(i);
        }
    }
    b
}

/// Runs `f` on its own thread; a panic or a hang fails the test, naming `what`.
fn bounded<T: Send + 'static>(what: String, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(v) => {
            h.join().unwrap();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{what}: the parser panicked: {:?}", h.join().err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no result in 60 s (a hang)")
        }
    }
}

fn fixtures() -> Vec<PathBuf> {
    let dir = std::env::var_os("REDVAULT_RDB_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/rdb"));
    assert!(
        dir.join("SOURCES.md").exists(),
        "RDB fixtures not found in {}: set REDVAULT_RDB_FIXTURES (scripts/test does)",
        dir.display()
    );
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rdb")
                && p.metadata().unwrap().len() < 256 << 10
            {
                out.push(p);
            }
        }
    }
    let mut out = vec![];
    walk(&dir, &mut out);
    out.sort();
    out
}

#[test]
fn the_rdb_scanner_survives_mutants_of_every_fixture() {
    let files = fixtures();
    assert!(files.len() > 20, "{} fixtures", files.len());
    let mut rng = rng(1);
    let mut mutants = 0;
    for f in &files {
        let seed = std::fs::read(f).unwrap();
        for _ in 0..300 {
            let m = mutate(&seed, &mut rng);
            let what = format!("{} mutant {mutants}", f.display());
            bounded(what, move || {
                let Ok(mut s) = RdbScanner::new(
                    &m[..],
                    ScanOptions {
                        keep_values: true,
                        ..Default::default()
                    },
                ) else {
                    return;
                };
                // Walk to the end or the first error; either is fine.
                for _ in 0..1_000_000 {
                    match s.next() {
                        Ok(Some(_)) => {}
                        _ => return,
                    }
                }
                panic!("a million items from a small fixture");
            });
            mutants += 1;
        }
    }
    assert!(mutants >= 6000, "{mutants}");
}

#[test]
fn the_opener_never_gives_other_plaintext() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dek = redvault::data_key::DataKey::generate();
    let data = compressible(40_000);
    let sealed = rt.block_on(seal_bytes(&data, &dek, "obj", &opts(4096, Some(1))));
    let mut rng = rng(2);
    for i in 0..3000 {
        let m = mutate(&sealed, &mut rng);
        if m == sealed {
            continue;
        }
        let dek = dek.clone();
        let data = data.clone();
        bounded(format!("sealed mutant {i}"), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            if let Ok(plain) = rt.block_on(open_bytes(&m, &dek, "obj")) {
                panic!(
                    "a changed object opened ({} bytes, equal: {})",
                    plain.len(),
                    plain == data
                );
            }
        });
    }
}

#[test]
fn keyring_manifest_records_and_replies_parse_or_refuse() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dek = redvault::data_key::DataKey::generate();
    let ring = rt
        .block_on(redvault::keyring::Keyring::wrap(&dek, &test_kek()))
        .unwrap();
    let ring_json = ring.to_json();
    let mut manifest = redvault::backup::manifest::Manifest {
        cluster: None,
        format: redvault::backup::manifest::MANIFEST_FORMAT.into(),
        version: redvault::backup::manifest::MANIFEST_VERSION,
        generation: "g".into(),
        source: "s".into(),
        created: "2026-12-01T00:00:00Z".into(),
        completed: "2026-12-01T00:00:01Z".into(),
        sealed: true,
        redis: redvault::backup::manifest::RedisInfo {
            version: Some("7.0.15".into()),
            rdb_version: Some(10),
            replid: "0".repeat(40),
            offset: 7,
            method: None,
        },
        keks: vec![test_kek_id()],
        data_key_id: Some(ring.data_key_id.clone()),
        objects: vec![],
        keys: None,
        signer: None,
        mac: None,
        signature: None,
    };
    let signer = redvault::signing::Signer::generate();
    let mut trust = redvault::signing::Trust::new(false);
    trust.add_signer(&signer);
    let manifest_json = futures::executor::block_on(manifest.to_json(Some(&dek), &signer)).unwrap();
    let original = manifest.clone();
    let mut records = vec![];
    for (i, args) in [&["SELECT", "0"][..], &["SET", "k", "v"], &["PING"]]
        .iter()
        .enumerate()
    {
        redvault::aof::encode_record(
            &mut records,
            &redvault::command::Command {
                args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
                offset: 10 * (i as u64 + 1),
                time_ms: 1,
            },
        );
    }
    let replies = b"*3\r\n$3\r\nfoo\r\n*2\r\n:1\r\n-ERR x\r\n$-1\r\n+OK\r\n".to_vec();
    let mut rng = rng(3);
    for i in 0..5000 {
        let k = mutate(&ring_json, &mut rng);
        let m = mutate(&manifest_json, &mut rng);
        let r = mutate(&records, &mut rng);
        let p = mutate(&replies, &mut rng);
        let dek = dek.clone();
        let original = original.clone();
        let trust = trust.clone();
        bounded(format!("mutant {i}"), move || {
            let _ = redvault::keyring::Keyring::from_json(&k, "k");
            if let Ok(mut m) = redvault::backup::manifest::Manifest::open(&m, &dek, "m") {
                // The MAC's and signature's own spelling (hex case) is not content.
                m.mac = original.mac.clone();
                m.signature = original.signature.clone();
                assert_eq!(m, original, "an edited manifest authenticated");
            }
            if let Ok(mut parsed) = redvault::backup::manifest::Manifest::parse(&m, "m") {
                if parsed.check_signature(&trust, "m").is_ok() {
                    parsed.mac = original.mac.clone();
                    parsed.signature = original.signature.clone();
                    assert_eq!(parsed, original, "an edited manifest kept its signature");
                }
            }
            let _ = redvault::aof::decode_records(&r, "r");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use tokio::io::AsyncWriteExt;
                let (mut a, b) = tokio::io::duplex(1 << 16);
                a.write_all(&p).await.unwrap();
                drop(a);
                let mut c =
                    redvault::resp::Conn::new(Box::new(b), "t".into(), Duration::from_secs(5));
                for _ in 0..64 {
                    if c.read_reply("t").await.is_err() {
                        break;
                    }
                }
            });
        });
    }
}

fn test_kek_id() -> String {
    use redvault::kek::Kek;
    test_kek().id().to_string()
}
