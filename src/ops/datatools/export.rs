//! `jnhpd data export PATH`: a data file's records as JSON lines in the
//! `portable` encoding, in the order they were stored.
//!
//! Read only, without the lock: a file a jnhpd is writing can be
//! exported (what was written when the export reached it). A torn tail
//! is left out, as the next start would cut it; damage stops the export
//! with an error (on standard output, the lines before it are written).

use std::fs::OpenOptions;
use std::path::Path;

use super::scan::{self, End};
use super::{DataToolError, portable};
use crate::protocol::Limits;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Records written.
    pub records: u64,
    /// Torn bytes at the end, not exported.
    pub torn: u64,
}

/// Exports the data file at `path`, each record held to `limits`,
/// passing each line (line end included) to `write`.
pub fn export(
    path: &Path,
    limits: Limits,
    mut write: impl FnMut(&[u8]) -> Result<(), DataToolError>,
) -> Result<Export, DataToolError> {
    let file = crate::base::files::open_regular(path, OpenOptions::new().read(true), None)
        .map_err(DataToolError::File)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let scanned = scan::scan(&mut reader, path, limits, false, |_, name, value| {
        line.clear();
        portable::encode_line(name, value, &mut line);
        write(&line)
    })?;
    match scanned.end {
        End::Clean => Ok(Export {
            records: scanned.records,
            torn: 0,
        }),
        End::TornTail { bytes, .. } => Ok(Export {
            records: scanned.records,
            torn: bytes,
        }),
        End::Damaged { offset, damage, .. } => Err(DataToolError::Damaged {
            path: path.to_path_buf(),
            offset,
            damage,
        }),
    }
}
