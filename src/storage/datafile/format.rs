//! The data file's bytes: the header, a record's encoding, and the rules
//! a record read back is held to.

use std::io::{self, Read};
use std::path::Path;

use super::*;
use crate::protocol::Limits;

/// The first 8 bytes of every data file.
pub const MAGIC: &[u8; 8] = b"JNHPDATA";
/// The format version this build writes and reads (after the magic).
pub const VERSION: u32 = 1;
/// The header's length: magic, version, 4 reserved bytes.
pub const HEADER_LEN: usize = 16;
pub const RECORD_HEADER_LEN: usize = 12;

/// Lengths no valid record can have: the config caps names at 64 KiB and
/// values at 16 MiB.
pub(super) const MAX_NAME_LEN: usize = Limits::WIDEST.max_name_bytes;
pub(super) const MAX_VALUE_LEN: usize = Limits::WIDEST.max_value_bytes;

/// Appends one record for (name, value) to `out`.
pub fn encode_record(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

pub(super) fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

pub(super) fn u32_at(bytes: &[u8], at: usize) -> usize {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word) as usize
}

/// Fills `buf` as far as the stream goes; returns the bytes read (fewer
/// than `buf.len()` only at the end of the stream). The data tools read
/// with it too (`datatools::scan`).
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Whether `start`, a whole file no longer than a header, is what a
/// crash while jnhpd created the file can leave: a prefix of the header,
/// or zeros (a block allocated, its data never written). It holds no
/// record, and jnhpd serves only after the header is synced, so nothing
/// was ever acknowledged from it: a start writes it again, and the data
/// tools call it a torn tail, not another program's file.
pub fn is_torn_header(start: &[u8]) -> bool {
    // A whole header is no torn one: an empty data file is that.
    start.len() <= HEADER_LEN
        && (start.iter().all(|&b| b == 0)
            || (start.len() < HEADER_LEN && header().starts_with(start)))
}

/// Holds a record read from storage to the protocol's rules: it must be a
/// name and value that a `STORE` line could have carried under `limits`.
/// The wire parser is the one definition of that: the record's `STORE`
/// line must parse back to exactly its name and value. Anything else (a
/// name with a blank or control byte, a value with CR, LF or NUL or
/// beginning with `ERROR `, either over its limit) would come back out on
/// the wire as something other than the one value line a GET promises.
pub struct RecordCheck {
    limits: Limits,
}

impl RecordCheck {
    pub fn new(limits: Limits) -> RecordCheck {
        RecordCheck { limits }
    }

    /// `Err(reason)` when no STORE could have made (name, value): the wire
    /// crate's own checks of a request's name and value.
    pub fn check(&self, name: &[u8], value: &[u8]) -> Result<(), String> {
        use crate::protocol::{ProtocolError, check_name, check_value};
        check_name(name, &self.limits)
            .and_then(|_| check_value(value, &self.limits))
            .map(drop)
            .map_err(|e| match e {
                ProtocolError::NameTooLong => {
                    format!("name too long (over {} bytes)", self.limits.max_name_bytes)
                }
                ProtocolError::ValueTooLong => format!(
                    "value too long (over {} bytes)",
                    self.limits.max_value_bytes
                ),
                // On the wire a leading blank is no byte of the value: say
                // what is wrong with this one.
                ProtocolError::ForbiddenValueByte
                    if value.first().is_some_and(|&b| b == b' ' || b == b'\t') =>
                {
                    "value begins with a blank".to_string()
                }
                other => other.reason().to_string(),
            })
    }

    /// [`check`](Self::check) as the error of record `offset` of `path`.
    pub(super) fn record(
        &self,
        path: &Path,
        offset: u64,
        name: &[u8],
        value: &[u8],
    ) -> Result<(), StorageError> {
        self.check(name, value)
            .map_err(|reason| StorageError::Forbidden {
                path: path.to_path_buf(),
                offset,
                reason,
            })
    }
}
