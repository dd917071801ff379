//! `jnhpd data verify PATH`: what a data file holds and its first damage.
//!
//! Reads only: no lock is taken, so a file a jnhpd is writing can be
//! verified (its last group may then show as a torn tail: a write in
//! progress looks exactly like one a crash cut short).

use std::fs::OpenOptions;
use std::path::Path;

use super::DataToolError;
use super::scan::{self, Scan};
use crate::protocol::Limits;

/// Scans the data file at `path`: a regular file (a FIFO, a device or a
/// directory is refused, not read), every record held to `limits`,
/// names indexed to count them and to find one stored twice.
pub fn verify(path: &Path, limits: Limits) -> Result<Scan, DataToolError> {
    let file = crate::base::files::open_regular(path, OpenOptions::new().read(true), None)
        .map_err(DataToolError::File)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    scan::scan(&mut reader, path, limits, true, |_, _, _| Ok(()))
}

/// Whether a scan found damage (exit status 1), a torn tail not being
/// damage: it is the unfinished last write of a crash (or of a write in
/// progress), no acknowledged record is in it, and the next start cuts
/// it.
pub fn is_damaged(scan: &Scan) -> bool {
    scan.first_damage().is_some()
}
