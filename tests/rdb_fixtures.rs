//! The scanner walks the real RDB files of ../shared/fixtures/rdb (written by
//! Redis 2.4 to 8.x and by Valkey) with the key counts SOURCES.md states, and
//! rejects the negative and future-version ones with errors that say why.

use redvault::rdb::{Item, RdbError, RdbScanner, ScanOptions};
use std::path::PathBuf;

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("REDVAULT_RDB_FIXTURES") {
        Some(d) => {
            let d = PathBuf::from(d);
            assert!(
                d.join("SOURCES.md").exists(),
                "REDVAULT_RDB_FIXTURES={} has no SOURCES.md",
                d.display()
            );
            d
        }
        None => {
            let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/rdb");
            assert!(
                d.join("SOURCES.md").exists(),
                "RDB fixtures not found: set REDVAULT_RDB_FIXTURES (scripts/test does) or provide ../shared/fixtures/rdb"
            );
            d
        }
    }
}

struct Expect {
    file: String,
    version: String,
    keys: Option<u64>,
    negative: bool,
    future: bool,
}

/// Rows of the Files table of SOURCES.md.
fn expectations(dir: &std::path::Path) -> Vec<Expect> {
    let text = std::fs::read_to_string(dir.join("SOURCES.md")).unwrap();
    let mut out = vec![];
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() < 10 || !cols[1].ends_with(".rdb`") && !cols[1].ends_with(".aof`") {
            continue;
        }
        let exercises = cols[8];
        let keys = exercises
            .rsplit("keys: ")
            .next()
            .filter(|_| exercises.contains("keys: "))
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok());
        out.push(Expect {
            file: cols[1].trim_matches('`').to_string(),
            version: cols[6].to_string(),
            keys,
            negative: exercises.contains("NEGATIVE"),
            future: exercises.contains("FUTURE VERSION"),
        });
    }
    out
}

fn scan(path: &std::path::Path) -> Result<(u64, Vec<Item>), RdbError> {
    let f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut s = RdbScanner::new(
        f,
        ScanOptions {
            keep_values: true,
            ..ScanOptions::default()
        },
    )?;
    let mut keys = 0;
    let mut other = vec![];
    while let Some(item) = s.next()? {
        match item {
            Item::Entry(e) => {
                assert_eq!(e.raw.first(), Some(&e.type_byte));
                keys += 1;
            }
            i => other.push(i),
        }
    }
    Ok((keys, other))
}

#[test]
fn every_supported_fixture_scans_with_its_documented_key_count() {
    let dir = fixtures_dir();
    let all = expectations(&dir);
    assert!(all.len() >= 80, "SOURCES.md lists {} files", all.len());
    let mut walked = 0;
    let mut failures = vec![];
    for e in &all {
        let path = dir.join(&e.file);
        assert!(path.exists(), "{} listed in SOURCES.md but missing", e.file);
        let result = scan(&path);
        let opaque_module = e.file.ends_with("redis-replicator/module.rdb");
        match (&result, e) {
            (Err(RdbError::UnsupportedVersion(v)), Expect { future: true, .. }) => {
                assert_eq!(*v, 15)
            }
            (Err(RdbError::UnsupportedVersion(75)), Expect { negative: true, .. }) => {}
            (
                Err(RdbError::Truncated { .. } | RdbError::Corrupt { .. }),
                Expect { negative: true, .. },
            ) => {}
            (Err(RdbError::Valkey(magic)), _) => assert_eq!(magic, "VALKEY080"),
            (Err(RdbError::Opaque { what, .. }), _) if opaque_module => {
                assert!(what.contains("type 6"))
            }
            (
                Ok((n, _)),
                Expect {
                    negative: false,
                    future: false,
                    ..
                },
            ) if !opaque_module => {
                walked += 1;
                if let Some(k) = e.keys {
                    if *n != k {
                        failures.push(format!("{}: {} keys, SOURCES.md says {}", e.file, n, k));
                    }
                }
            }
            // The ziplist inside is corrupt, but the scanner copies blobs without
            // decoding them; the count still matches.
            (Ok((n, _)), Expect { negative: true, .. })
                if e.file.ends_with("corrupt_ziplist.rdb") =>
            {
                assert_eq!(Some(*n), e.keys);
            }
            (r, _) => failures.push(format!(
                "{} (v{}): unexpected {:?}",
                e.file,
                e.version,
                r.as_ref().map(|x| x.0)
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(walked >= 75, "walked {walked}");
}

/// A filtered snapshot (what the replication feed serves under `--db`,
/// `--match`, `--type`) keeps a module's aux data byte for byte: it is the
/// module's own format, and the RDB keeps its version. Every key the filter
/// keeps comes through equal; with none kept, the aux data still does.
#[test]
fn a_filtered_rewrite_keeps_module_aux_data() {
    let path = fixtures_dir().join("redis-rdb-tools/redis_60_with_module_aux.rdb");
    let bytes = std::fs::read(&path).unwrap();
    let (keys, items) = scan(&path).unwrap();
    let aux = |items: &[Item]| -> Vec<Item> {
        items
            .iter()
            .filter(|i| matches!(i, Item::ModuleAux { .. }))
            .cloned()
            .collect()
    };
    assert!(
        aux(&items)
            .iter()
            .all(|i| matches!(i, Item::ModuleAux { raw, .. } if raw.len() > 4)),
        "{items:?}"
    );
    assert!(!aux(&items).is_empty(), "the fixture holds module aux data");
    let work = tempfile::tempdir().unwrap();
    for (name, keep_all) in [("all.rdb", true), ("none.rdb", false)] {
        let mut out = vec![];
        let done = redvault::rdb::rewrite_selected(
            &bytes[..],
            redvault::rdb::MAX_RDB_VERSION,
            1 << 16,
            |_| keep_all,
            |p| {
                out.extend_from_slice(&p);
                true
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let written = work.path().join(name);
        std::fs::write(&written, &out).unwrap();
        let (again, items_again) = scan(&written).unwrap();
        assert_eq!(aux(&items_again), aux(&items), "{name}");
        if keep_all {
            assert_eq!((again, done.keys), (keys, keys), "{name}");
        } else {
            assert_eq!((again, done.left_out), (0, keys), "{name}");
        }
    }
}

#[test]
fn functions_aux_fields_and_resizedb_are_reported() {
    let dir = fixtures_dir();
    let (_, items) = scan(&dir.join("hdt3213-rdb/function.rdb")).unwrap();
    let f = items.iter().find_map(|i| match i {
        Item::Function(code) => Some(String::from_utf8_lossy(code).into_owned()),
        _ => None,
    });
    assert!(f.unwrap().contains("mylib"));
    let (_, items) = scan(&dir.join("redis-replicator/listpack-bug.rdb")).unwrap();
    assert!(items
        .iter()
        .any(|i| matches!(i, Item::Aux { key, .. } if key == b"redis-ver")));
    let sizes: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            Item::ResizeDb { db, .. } => Some(*db),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![0, 1, 2]);
}

#[test]
fn damaged_rdbs_fail_with_the_offset() {
    let dir = fixtures_dir();
    let good = std::fs::read(dir.join("redis-replicator/listpack-bug.rdb")).unwrap();
    let run = |bytes: &[u8]| -> Result<u64, RdbError> {
        let mut s = RdbScanner::new(bytes, ScanOptions::default())?;
        let mut n = 0;
        while s.next()?.is_some() {
            n += 1;
        }
        Ok(n)
    };
    assert!(run(&good).is_ok());
    let e = run(&good[..good.len() / 2]).unwrap_err();
    assert!(matches!(e, RdbError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("byte offset"), "{e}");
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x01;
    let e = run(&bad).unwrap_err().to_string();
    assert!(e.contains("checksum") || e.contains("offset"), "{e}");
    let mut magic = good.clone();
    magic[0] = b'X';
    assert_eq!(run(&magic).unwrap_err(), RdbError::BadMagic);
    let mut newer = good.clone();
    newer[5..9].copy_from_slice(b"0099");
    assert_eq!(
        run(&newer).unwrap_err().to_string(),
        "RDB version 99 is newer than this redvault reads (1 to 12)"
    );
}
