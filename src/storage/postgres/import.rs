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

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};
use std::path::Path;

use tokio::time::{Duration, Instant};

use super::{Namespace, describe};
use crate::protocol::Limits;
use crate::storage::datafile::{self, Replay, StorageError};

/// Records per statement at most.
const CHUNK: usize = 1000;
/// Bytes of names and values per statement at most: a chunk of large
/// values is cut short rather than held (and sent) whole.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks read ahead of the inserts.
const READ_AHEAD: usize = 1;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Records newly stored.
    pub imported: u64,
    /// Records already there with the same value.
    pub present: u64,
    /// Records whose name is there with another value (not imported).
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
    /// Why the import stopped.
    pub reason: String,
    /// What was done before it stopped.
    pub counts: Counts,
}

/// Reads the whole data file at `path` once, one record at a time,
/// before anything is imported: a file that is not a data file (a FIFO,
/// a device, a bad header), or holds a record no STORE under `limits`
/// could have made, is refused naming the record's offset, and nothing
/// of it reaches the namespace. Returns the number of good records.
pub fn check_datafile(path: &Path, limits: Limits) -> Result<usize, StorageError> {
    let replay = datafile::read_records(path, limits, |_, _| Ok(()))?;
    Ok(match replay {
        Replay::Clean { records } => records,
        Replay::TornTail { records, good_len } => {
            log::warn!(
                "data file {}: incomplete last record at byte offset {good_len} not read",
                path.display()
            );
            records
        }
    })
}

type Chunk = Vec<(Vec<u8>, Vec<u8>)>;

/// Imports every record of the data file at `path` (a name repeated in
/// the file keeps its first value, as a replay would). The file is read
/// as a stream on the blocking pool, a chunk at a time (at most
/// 1,000 records and 1 MiB), never whole; each record
/// is held to `limits` and the protocol's rules again as it is read.
pub async fn import_datafile(
    namespace: &Namespace,
    path: &Path,
    limits: Limits,
) -> Result<Counts, ImportError> {
    let reading = path.to_path_buf();
    import_records(namespace, move |each| {
        datafile::read_records(&reading, limits, |name, value| {
            each(name, value).map_err(|reason| StorageError::Io {
                path: reading.clone(),
                action: "read",
                source: std::io::Error::other(reason),
            })
        })
        .map(drop)
        .map_err(|e| e.to_string())
    })
    .await
}

/// What a record source passes each record to, in order: an error
/// stops the source.
pub type EachRecord<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), String> + 'a;

/// Imports the records `read` produces (`jnhpd data import`: a data file
/// or JSON lines), as [`import_datafile`] does: `read` runs on the
/// blocking pool, a chunk at a time is held (at most 1,000 records and
/// 1 MiB), a name repeated in the input keeps its first value.
pub async fn import_records(
    namespace: &Namespace,
    read: impl FnOnce(&mut EachRecord) -> Result<(), String> + Send + 'static,
) -> Result<Counts, ImportError> {
    let mut counts = Counts::default();
    let fail = |reason: String, counts: &Counts| ImportError {
        reason,
        counts: counts.clone(),
    };
    let (tx, mut chunks) = tokio::sync::mpsc::channel::<Chunk>(READ_AHEAD);
    let reader = tokio::task::spawn_blocking(move || {
        let mut chunk = Chunk::new();
        let mut bytes = 0;
        let send = |chunk: Chunk| {
            tx.blocking_send(chunk)
                .map_err(|_| "the import stopped".to_string())
        };
        read(&mut |name, value| {
            bytes += name.len() + value.len();
            chunk.push((name.to_vec(), value.to_vec()));
            if chunk.len() >= CHUNK || bytes >= CHUNK_BYTES {
                bytes = 0;
                send(std::mem::take(&mut chunk))?;
            }
            Ok(())
        })?;
        if !chunk.is_empty() {
            send(chunk)?;
        }
        Ok::<(), String>(())
    });
    let conn = namespace
        .connection()
        .await
        .map_err(|e| fail(e.to_string(), &counts))?;
    let owner = namespace.owner();
    let mut write_id = 0i64;
    // A name repeated in the input keeps its first value and counts as
    // an import into a data file counts it: present with the same value,
    // a conflict with another (it was dropped here, uncounted).
    let mut seen: HashMap<Vec<u8>, [u8; 32]> = HashMap::new();
    while let Some(mut chunk) = chunks.recv().await {
        chunk.retain(|(name, value)| {
            let digest: [u8; 32] = Sha256::digest(value).into();
            match seen.get(name) {
                None => {
                    seen.insert(name.clone(), digest);
                    return true;
                }
                Some(first) if *first == digest => counts.present += 1,
                Some(_) => {
                    counts.conflicts += 1;
                    log::warn!(
                        "import: {} is stored with another value; the namespace keeps it",
                        String::from_utf8_lossy(name)
                    );
                }
            }
            false
        });
        import_chunk(&conn, owner, &chunk, &mut write_id, &mut counts)
            .await
            .map_err(|reason| fail(reason, &counts))?;
    }
    match reader.await {
        Ok(Ok(())) => Ok(counts),
        Ok(Err(e)) => Err(fail(e, &counts)),
        Err(e) => Err(fail(format!("reading the file failed: {e}"), &counts)),
    }
}

/// Inserts one chunk, waiting out names that front-ends hold reserved.
async fn import_chunk(
    conn: &super::pool::Conn,
    owner: &str,
    chunk: &Chunk,
    write_id: &mut i64,
    counts: &mut Counts,
) -> Result<(), String> {
    let mut todo: Vec<&(Vec<u8>, Vec<u8>)> = chunk.iter().collect();
    while !todo.is_empty() {
        let names: Vec<&[u8]> = todo.iter().map(|r| &r.0[..]).collect();
        let values: Vec<&[u8]> = todo.iter().map(|r| &r.1[..]).collect();
        let ids: Vec<i64> = todo
            .iter()
            .map(|_| {
                *write_id += 1;
                *write_id
            })
            .collect();
        let inserted: HashSet<Vec<u8>> = conn
            .client
            .query(&conn.insert, &[&names, &values, &ids, &owner])
            .await
            .map_err(|e| describe(&e))?
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
                .map_err(|e| describe(&e))?;
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
                .map_err(|e| describe(&e))?;
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
    Ok(())
}
