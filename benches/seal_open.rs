//! Throughput of sealing and opening, in process (criterion).
//! `cargo bench --bench seal_open`; the end-to-end comparison against `zstd -T2`
//! and `openssl speed` is benches/seal-vs-reference.sh.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use redvault::format::{seal_chunk, ObjectKind};
use redvault::keyring::DataKey;
use redvault::opener::{Opener, RawHeader};
use redvault::sealer::{default_parallelism, ObjectSpec, SealOptions, Sealer};

const SIZE: usize = 64 << 20;

/// RDB-like data: keys, small integers, repeated field names, some noise.
fn rdb_like(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 128);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut i = 0u64;
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(0); // type byte
        let key = format!("session:{:08}", i);
        v.push(key.len() as u8);
        v.extend_from_slice(key.as_bytes());
        let val = format!(
            "{{\"user\":{},\"cart\":[{},{}],\"token\":\"{:016x}\",\"ttl\":3600}}",
            x % 100_000,
            x % 97,
            x % 13,
            x
        );
        v.push(val.len() as u8);
        v.extend_from_slice(val.as_bytes());
        i += 1;
    }
    v.truncate(n);
    v
}

fn random(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut v);
    v
}

fn spec() -> ObjectSpec {
    ObjectSpec {
        kind: ObjectKind::Rdb,
        generation: "bench".into(),
        name: "base.rdb.rv".into(),
        embedded_keyring: vec![],
        attestation: vec![],
    }
}

async fn seal(data: &[u8], dek: &DataKey, level: i32) -> Vec<u8> {
    let o = SealOptions {
        zstd_level: Some(level),
        parallelism: default_parallelism(),
        ..SealOptions::default()
    };
    let mut s = Sealer::new(Vec::with_capacity(data.len() / 2), spec(), dek, &o)
        .await
        .unwrap();
    for piece in data.chunks(1 << 20) {
        s.write(piece).await.unwrap();
    }
    s.finish().await.unwrap().1
}

async fn open(sealed: &[u8], dek: &DataKey) -> usize {
    let mut input = sealed;
    let raw = RawHeader::read(&mut input, "bench").await.unwrap();
    let mut o = Opener::new(input, &raw, dek, "bench", default_parallelism()).unwrap();
    let mut n = 0;
    while let Some(c) = o.next_chunk().await.unwrap() {
        n += c.len();
    }
    n
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dek = DataKey::generate();
    let inputs = [("rdb-like", rdb_like(SIZE)), ("random", random(SIZE))];

    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Bytes(SIZE as u64)).sample_size(10);
    for (name, data) in &inputs {
        for level in [1, 3] {
            g.bench_with_input(
                BenchmarkId::new(*name, format!("zstd{level}")),
                data,
                |b, d| b.iter(|| rt.block_on(seal(d, &dek, level))),
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("open");
    g.throughput(Throughput::Bytes(SIZE as u64)).sample_size(10);
    for (name, data) in &inputs {
        for level in [1, 3] {
            let sealed = rt.block_on(seal(data, &dek, level));
            g.bench_with_input(
                BenchmarkId::new(*name, format!("zstd{level}")),
                &sealed,
                |b, s| b.iter(|| assert_eq!(rt.block_on(open(s, &dek)), SIZE)),
            );
        }
    }
    g.finish();

    // The AES-GCM stage alone, one core, 16 KiB blocks (as `openssl speed` measures).
    let mut g = c.benchmark_group("aes-256-gcm");
    let block = random(16 << 10);
    let key = dek.chunk_key(&[0; 32]);
    use aes_gcm::KeyInit;
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(key.as_ref()).unwrap();
    g.throughput(Throughput::Bytes(block.len() as u64));
    g.bench_function("16KiB", |b| {
        b.iter(|| seal_chunk(&cipher, &[0; 32], 0, false, &block, None))
    });
    g.finish();
}

/// What signing costs a daemon segment: a 256 KiB segment (about a second of
/// a busy primary) sealed as an unsigned object, and sealed signed (digest,
/// statement, Ed25519) with `aof::seal_segment`; and the reader's check.
fn segment_benches(c: &mut Criterion) {
    use redvault::aof::{chain, seal_segment, SegmentPlace, SessionKeys};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dek = DataKey::generate();
    let ring = redvault::keyring::Keyring {
        format: "redvault-keyring".into(),
        version: 1,
        data_key_id: hex::encode(dek.id()),
        wrapped: vec![],
    };
    let signer = redvault::signing::Signer::generate();
    let mut trust = redvault::signing::Trust::new(false);
    trust.add_signer(&signer);
    let plain = rdb_like(256 << 10);
    let o = SealOptions {
        zstd_level: Some(1),
        parallelism: 2,
        ..SealOptions::default()
    };
    let place = SegmentPlace {
        source: "bench",
        generation: "bench",
        name: "00000000000000000000-00000000000000262144.aof.rv",
        from: 0,
        to: 262_144,
    };
    let keys = SessionKeys {
        dek: &dek,
        keyring: &ring,
        signer: &signer,
    };
    let mut g = c.benchmark_group("segment-256KiB");
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.bench_function("seal-unsigned", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut s = Sealer::new(Vec::new(), spec(), &dek, &o).await.unwrap();
                s.write(&plain).await.unwrap();
                s.finish().await.unwrap().1
            })
        })
    });
    g.bench_function("seal-signed", |b| {
        b.iter(|| {
            rt.block_on(seal_segment(&plain, &place, chain::GENESIS, 1, &keys, &o))
                .unwrap()
        })
    });
    let (sealed, _) = rt
        .block_on(seal_segment(&plain, &place, chain::GENESIS, 1, &keys, &o))
        .unwrap();
    let raw = rt
        .block_on(RawHeader::read(&mut &sealed[..], "bench"))
        .unwrap();
    g.bench_function("verify-attestation-and-digest", |b| {
        b.iter(|| {
            chain::verify(&raw.header.attestation, &trust, "bench").unwrap();
            use sha2::Digest;
            sha2::Sha256::digest(&plain)
        })
    });
    g.finish();
}

criterion_group!(seal_open, benches, segment_benches);
criterion_main!(seal_open);
