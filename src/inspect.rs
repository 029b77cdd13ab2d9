//! What an RDB input holds: version, aux fields, keys per db and per type,
//! function libraries and the biggest keys. Walks the stream once, holding only
//! the current top list.

use crate::inputs::{Input, InputError};
use crate::rdb::{Item, RdbError, RdbScanner, ScanOptions};
use crate::target::{show_key, type_name};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{label}: {source}")]
    Rdb { label: String, source: RdbError },
    #[error(transparent)]
    Input(#[from] InputError),
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Inspection {
    pub source: String,
    pub rdb_version: u32,
    pub aux: BTreeMap<String, String>,
    pub keys: u64,
    pub keys_per_db: BTreeMap<u64, u64>,
    pub keys_per_type: BTreeMap<String, u64>,
    pub functions: u64,
    /// (key, db, type, value bytes), biggest first.
    pub biggest: Vec<(String, u64, String, u64)>,
}

/// Scans one input on a blocking thread; `top` biggest keys are kept.
pub async fn inspect(input: Input, top: usize) -> Result<Inspection, InspectError> {
    let Input {
        label,
        reader,
        pump,
    } = input;
    let lbl = label.clone();
    let scan = tokio::task::spawn_blocking(move || -> Result<Inspection, RdbError> {
        let mut s = RdbScanner::new(reader, ScanOptions::default())?;
        let mut r = Inspection {
            source: lbl,
            rdb_version: s.version(),
            ..Default::default()
        };
        let mut sizes: Vec<(u64, u64, Vec<u8>, u8)> = vec![];
        while let Some(item) = s.next()? {
            match item {
                Item::Aux { key, value } => {
                    r.aux.insert(
                        String::from_utf8_lossy(&key).into(),
                        String::from_utf8_lossy(&value).into(),
                    );
                }
                Item::Function(_) => r.functions += 1,
                Item::Entry(e) => {
                    r.keys += 1;
                    *r.keys_per_db.entry(e.db).or_default() += 1;
                    *r.keys_per_type
                        .entry(type_name(e.type_byte).into())
                        .or_default() += 1;
                    sizes.push((e.value_len, e.db, e.key, e.type_byte));
                    if sizes.len() > top * 4 + 64 {
                        sizes.sort_by_key(|s| std::cmp::Reverse(s.0));
                        sizes.truncate(top);
                    }
                }
                _ => {}
            }
        }
        sizes.sort_by_key(|s| std::cmp::Reverse(s.0));
        sizes.truncate(top);
        r.biggest = sizes
            .into_iter()
            .map(|(n, db, k, t)| (show_key(&k), db, type_name(t).to_string(), n))
            .collect();
        Ok(r)
    });
    let scanned = scan.await.map_err(|e| InspectError::Rdb {
        label: label.clone(),
        source: RdbError::Io(e.to_string()),
    })?;
    if let Some(p) = pump {
        p.await.map_err(|e| InputError::Read {
            label: label.clone(),
            message: e.to_string(),
        })??;
    }
    scanned.map_err(|source| InspectError::Rdb { label, source })
}
