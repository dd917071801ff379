//! Reading a data file back: at start (cutting a torn tail) and for
//! `--import-datafile`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

use super::format::*;
use super::*;
use crate::protocol::Limits;

/// How replaying the records after the header ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// Every byte was a good record.
    Clean {
        /// Records replayed.
        records: usize,
    },
    /// Good records up to `good_len`, then an incomplete or damaged last
    /// record (a write cut short by a crash): cut it off.
    TornTail {
        /// Records replayed.
        records: usize,
        /// The length of the file up to the end of the last good record.
        good_len: u64,
    },
}

/// Replays the records of `data` (the whole file, header included, already
/// checked), calling `each(name, value)` per good record in order.
///
/// A bad region with no valid record anywhere after it is what a crash
/// leaves (a torn last write, a block allocated but never written): it is
/// cut off. A bad region followed by a valid record is damage in the
/// middle: an error naming the offset, never silent loss.
pub fn replay(
    data: &[u8],
    path: &Path,
    mut each: impl FnMut(&[u8], &[u8]),
) -> Result<Replay, StorageError> {
    let mut body = data.get(HEADER_LEN..).unwrap_or_default();
    replay_stream(&mut body, path, |_, name, value| {
        each(name, value);
        Ok(())
    })
    .map(|(replay, _)| replay)
}

/// [`replay`] over a stream positioned just after the header: only one
/// record is held at a time (and, to tell damage from a torn tail, a
/// bounded window of what follows a bad region). `each` gets each good record's
/// offset; an error from it ends the replay. Returns how it ended and the
/// length of the good part.
pub(super) fn replay_stream(
    reader: &mut impl Read,
    path: &Path,
    mut each: impl FnMut(u64, &[u8], &[u8]) -> Result<(), StorageError>,
) -> Result<(Replay, u64), StorageError> {
    let io = |source| StorageError::Io {
        path: path.to_path_buf(),
        action: "read",
        source,
    };
    let mut at = HEADER_LEN as u64;
    let mut records = 0;
    let mut record = vec![0; RECORD_HEADER_LEN];
    loop {
        record.resize(RECORD_HEADER_LEN, 0);
        let got = read_full(reader, &mut record).map_err(io)?;
        if got == 0 {
            return Ok((Replay::Clean { records }, at));
        }
        let mut good = false;
        if got == RECORD_HEADER_LEN {
            let (name_len, value_len) = (u32_at(&record, 4), u32_at(&record, 8));
            if (1..=MAX_NAME_LEN).contains(&name_len) && (1..=MAX_VALUE_LEN).contains(&value_len) {
                let end = RECORD_HEADER_LEN + name_len + value_len;
                record.resize(end, 0);
                let got = read_full(reader, &mut record[RECORD_HEADER_LEN..]).map_err(io)?;
                record.truncate(RECORD_HEADER_LEN + got);
                good = record.len() == end
                    && u32_at(&record, 0) as u32 == crc32fast::hash(&record[4..end]);
                if good {
                    let (name, value) = record[RECORD_HEADER_LEN..].split_at(name_len);
                    each(at, name, value)?;
                    records += 1;
                    at += end as u64;
                }
            }
        } else {
            record.truncate(got);
        }
        if good {
            continue;
        }
        // A crash leaves at most a torn prefix of one record, or bytes that
        // were never written (zeros, or whatever the block held before):
        // none of that contains a whole valid record. So a bad region is
        // damage, with acknowledged data after it, exactly when a valid
        // record follows it; the lengths read from the bad bytes prove
        // nothing either way.
        // Searched through a bounded window, never the rest of the file
        // read into memory: damage near the start of a large file (a
        // failing disk) must not cost its size in memory at start.
        let after = record.get(1..).unwrap_or_default().to_vec();
        let (next_valid, _) = find_record(after, at + 1, reader).map_err(io)?;
        if next_valid.is_some() {
            return Err(StorageError::Damaged {
                path: path.to_path_buf(),
                offset: at,
            });
        }
        return Ok((
            Replay::TornTail {
                records,
                good_len: at,
            },
            at,
        ));
    }
}

/// Checks a file's header (its first [`HEADER_LEN`] bytes, or fewer if the
/// file is shorter): the magic and a version this build reads.
pub(super) fn check_header(data: &[u8], path: &Path) -> Result<(), StorageError> {
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        return Err(StorageError::BadHeader {
            path: path.to_path_buf(),
        });
    }
    let version = u32_at(data, 8) as u32;
    if version != VERSION {
        return Err(StorageError::Version {
            path: path.to_path_buf(),
            version,
        });
    }
    Ok(())
}

/// Opens an existing data file for reading and checks its header: a
/// regular file (a FIFO or a device is refused, not read).
pub(super) fn open_for_reading(path: &Path) -> Result<File, StorageError> {
    let mut file = crate::base::files::open_regular(path, OpenOptions::new().read(true), None)
        .map_err(StorageError::File)?;
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(&mut file, &mut header).map_err(|source| StorageError::Io {
        path: path.to_path_buf(),
        action: "read",
        source,
    })?;
    check_header(&header[..got], path)?;
    Ok(file)
}

/// Reads every good record of a data file without opening it for writing
/// or taking its lock (`--import-datafile`), one record at a time: a torn
/// tail is left as it is and not read. Each record is held to `limits`
/// and the protocol's rules ([`RecordCheck`]); one that fails them, or an
/// error from `each`, ends the read.
pub fn read_records(
    path: &Path,
    limits: Limits,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
) -> Result<Replay, StorageError> {
    let file = open_for_reading(path)?;
    let check = RecordCheck::new(limits);
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    replay_stream(&mut reader, path, |offset, name, value| {
        check.record(path, offset, name, value)?;
        each(name, value)
    })
    .map(|(replay, _)| replay)
}
