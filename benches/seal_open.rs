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

criterion_group!(seal_open, benches);
criterion_main!(seal_open);
