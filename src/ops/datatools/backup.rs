//! `jnhpd data backup`: a consistent copy of a data file, taken while a
//! jnhpd appends to it, without its cooperation and without pausing it.
//!
//! Why the copy is consistent (docs/backup.md says it for operators):
//! the file is a log that is only ever appended to, one whole group of
//! records per write, every record carrying its lengths and a CRC. The
//! backup notes the file's length L, then `fdatasync`s it: an fsync
//! writes out every dirty page of the file, whichever descriptor wrote
//! it, so every record wholly within L is durable on the source before
//! the copy holds it (no record in the backup is one a crash of the
//! source could take back, even under `fsync = "never"`). It then reads
//! records up to L, checking each. A group being written may be seen
//! only in part (a read racing a write may see part of it, and L may
//! fall inside it): its first incomplete record fails its length or CRC
//! check, and the copy stops just before it. So the copy is a prefix of
//! the log ending at a record boundary: exactly the state after the
//! STOREs it holds, in their order. Every STORE acknowledged before the
//! backup began is in it: a record is written before its STORE is
//! acknowledged, so it lies within L.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::DataToolError;
use super::output::Output;
use super::scan::{self, End};
use crate::protocol::Limits;
use crate::storage::datafile::{HEADER_LEN, MAGIC, VERSION, encode_record};

/// What a backup copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// Records copied.
    pub records: u64,
    /// The backup's length: the offset in the source it stopped at.
    pub bytes: u64,
    /// The source's length when the backup began (L).
    pub source_len: u64,
    /// Bytes within L after the last whole record (a group being
    /// written): not copied.
    pub left_out: u64,
}

/// Copies the data file `source` to `dest` (see the module's doc),
/// holding every record to `limits`. `dest` must not exist unless
/// `force`, and is written whole or not at all ([`Output`]). Damage in
/// the source (a bad record followed by a valid one, a record no STORE
/// may hold) is an error, and nothing is written.
pub fn backup(
    source: &Path,
    dest: &Path,
    force: bool,
    limits: Limits,
) -> Result<Backup, DataToolError> {
    let file = crate::base::files::open_regular(source, OpenOptions::new().read(true), None)
        .map_err(DataToolError::File)?;
    let meta = file.metadata().map_err(DataToolError::io(source, "read"))?;
    let source_len = meta.len();
    // Every record wholly within source_len is durable from here on.
    file.sync_data()
        .map_err(DataToolError::io(source, "sync"))?;
    let mut out = Output::create(dest, force, meta.permissions().mode() & 0o777, &meta)?;
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    debug_assert_eq!(header.len(), HEADER_LEN);
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file.take(source_len));
    let mut buf = Vec::new();
    let mut wrote_header = false;
    let scanned = scan::scan(&mut reader, source, limits, false, |_, name, value| {
        if !wrote_header {
            out.write_all(&header)?;
            wrote_header = true;
        }
        buf.clear();
        encode_record(name, value, &mut buf);
        out.write_all(&buf)
    })?;
    let left_out = match scanned.end {
        End::Clean => 0,
        End::TornTail { bytes, .. } => bytes,
        End::Damaged { offset, damage, .. } => {
            return Err(DataToolError::Damaged {
                path: source.to_path_buf(),
                offset,
                damage,
            });
        }
    };
    if !wrote_header {
        out.write_all(&header)?;
    }
    out.finish()?;
    Ok(Backup {
        records: scanned.records,
        bytes: scanned.good_len,
        source_len,
        left_out,
    })
}
