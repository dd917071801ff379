//! `jnhpd --config FILE --import-datafile PATH`: a local data file's
//! records into the shared namespace.
//!
//! Each record is a STORE without validation (the data file's were
//! validated when first stored), through the same insert statement the
//! front-ends use: so it respects their reservations (a name being
//! validated elsewhere waits for that outcome) and may run while they
//! serve. A name already in the namespace counts as *present* with the
//! same value, as a *conflict* with another (the namespace keeps its
//! value: names are write-once).

use std::collections::HashSet;
use std::path::Path;

use tokio::time::{Duration, Instant};

use super::{Namespace, describe};
use crate::datafile;

/// Records per statement.
const CHUNK: usize = 1000;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub imported: u64,
    pub present: u64,
    pub conflicts: u64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} imported, {} already present, {} conflicts",
            self.imported, self.present, self.conflicts
        )
    }
}

/// Why an import stopped, with what it had done by then.
#[derive(Debug, thiserror::Error)]
#[error("{reason} (so far: {counts})")]
pub struct ImportError {
    pub reason: String,
    pub counts: Counts,
}

/// Imports every record of the data file at `path` (a name repeated in
/// the file keeps its first value, as a replay would).
pub async fn import_datafile(namespace: &Namespace, path: &Path) -> Result<Counts, ImportError> {
    let mut counts = Counts::default();
    let fail = |reason: String, counts: &Counts| ImportError {
        reason,
        counts: counts.clone(),
    };
    let mut seen = HashSet::new();
    let mut records = Vec::new();
    datafile::read_records(path, |name, value| {
        if seen.insert(name.to_vec()) {
            records.push((name.to_vec(), value.to_vec()));
        }
    })
    .map_err(|e| fail(e.to_string(), &counts))?;
    drop(seen);
    let conn = namespace
        .connection()
        .await
        .map_err(|e| fail(e.to_string(), &counts))?;
    let owner = namespace.owner();
    let mut write_id = 0i64;
    for chunk in records.chunks(CHUNK) {
        let mut todo: Vec<&(Vec<u8>, Vec<u8>)> = chunk.iter().collect();
        while !todo.is_empty() {
            let names: Vec<&[u8]> = todo.iter().map(|r| &r.0[..]).collect();
            let values: Vec<&[u8]> = todo.iter().map(|r| &r.1[..]).collect();
            let ids: Vec<i64> = todo
                .iter()
                .map(|_| {
                    write_id += 1;
                    write_id
                })
                .collect();
            let query = |e: tokio_postgres::Error| fail(describe(&e), &counts);
            let inserted: HashSet<Vec<u8>> = conn
                .client
                .query(&conn.insert, &[&names, &values, &ids, &owner])
                .await
                .map_err(query)?
                .iter()
                .map(|row| row.get(0))
                .collect();
            counts.imported += inserted.len() as u64;
            let (rest, rest_ids): (Vec<&[u8]>, Vec<i64>) = names
                .iter()
                .zip(&ids)
                .filter(|(name, _)| !inserted.contains(**name))
                .map(|(name, id)| (*name, *id))
                .unzip();
            let mut taken = Vec::new();
            let mut blocked = HashSet::new();
            let mut wait = Duration::from_millis(200);
            if !rest.is_empty() {
                let rows = conn
                    .client
                    .query(&conn.classify, &[&rest, &owner, &rest_ids])
                    .await
                    .map_err(|e| fail(describe(&e), &counts))?;
                for row in &rows {
                    let name: Vec<u8> = row.get(0);
                    if row.get::<_, bool>(1) {
                        taken.push(name);
                    } else {
                        // Reserved by a front-end validating a STORE of it.
                        if let Some(secs) = row.get::<_, Option<f64>>(3) {
                            wait = wait.min(Duration::from_secs_f64(secs.max(0.01)));
                        }
                        blocked.insert(name);
                    }
                }
            }
            if !taken.is_empty() {
                let rows = conn
                    .client
                    .query(&conn.look_up, &[&taken])
                    .await
                    .map_err(|e| fail(describe(&e), &counts))?;
                for row in &rows {
                    let (name, value): (&[u8], &[u8]) = (row.get(0), row.get(1));
                    let ours = chunk.iter().find(|r| r.0 == name).map(|r| &r.1[..]);
                    if ours == Some(value) {
                        counts.present += 1;
                    } else {
                        counts.conflicts += 1;
                        log::warn!(
                            "import: {} is stored with another value; the namespace keeps it",
                            String::from_utf8_lossy(name)
                        );
                    }
                }
            }
            todo.retain(|r| blocked.contains(&r.0));
            if !todo.is_empty() {
                tokio::time::sleep_until(Instant::now() + wait).await;
            }
        }
    }
    Ok(counts)
}
