//! The append-only data file: every accepted STORE, in order.
//!
//! Names are write-once, so the file is a log that never needs rewriting or
//! compaction: replaying it rebuilds the map. Format (little-endian):
//!
//! ```text
//! header  "JNHPDATA" (8 bytes) | version u32 = 1 | reserved u32 = 0
//! record  crc32 u32 | name_len u32 | value_len u32 | name | value
//! ```
//!
//! The CRC-32 (IEEE) covers everything after itself: both lengths, the name
//! and the value. A writer thread appends records with group commit: the
//! records that queue while one `fdatasync` runs share the next, so durable
//! throughput grows with the number of clients.
//!
//! - `format`: the bytes (header, record encoding, the rules a record is
//!   held to);
//! - `replay`: reading a file back at start, cutting a torn tail;
//! - `search`: finding the next valid record after a bad region (the start
//!   and `jnhpd data` share it);
//! - `writer`: the open file, its writer thread and group commit, the
//!   backend the store actor appends to.

mod format;
mod replay;
pub(crate) mod search;
mod writer;

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::protocol::ServerFault;

pub(crate) use format::read_full;
pub use format::{
    HEADER_LEN, MAGIC, RECORD_HEADER_LEN, RecordCheck, VERSION, encode_record, is_torn_header,
};
pub use replay::{Replay, read_records, replay};
pub(crate) use search::{count_rest, find_record};
pub use writer::{DataFile, Fsync};

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("data file {path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("data file {path}: not a jnhpd data file (bad header)")]
    BadHeader { path: PathBuf },
    #[error(
        "data file {path}: version {version} is not supported (this jnhpd reads version {VERSION})"
    )]
    Version { path: PathBuf, version: u32 },
    #[error(
        "data file {path}: damaged record at byte offset {offset}, followed by more data; \
         refusing to start rather than drop acknowledged data (`jnhpd data verify {path}` \
         shows the damage; restore the file from a backup taken with `jnhpd data backup`, \
         or run `jnhpd data repair {path}` to cut it at that offset, keeping what it cuts \
         in a side file, if you accept losing what follows; see /usr/share/doc/jnhpd/backup.md)"
    )]
    Damaged { path: PathBuf, offset: u64 },
    #[error("data file {path} is in use by another jnhpd (it is locked)")]
    Locked { path: PathBuf },
    /// Not a regular file (a FIFO, a device), or unreadable.
    #[error("data file {0}")]
    File(crate::base::files::FileError),
    #[error(
        "data file {path}: the record at byte offset {offset} holds what no STORE may: {reason} \
         (stored names and values are held to the protocol's rules and to server.max_name_bytes \
         and server.max_value_bytes; `jnhpd data repair --config FILE {path}` cuts the file \
         there, keeping what it cuts in a side file; see /usr/share/doc/jnhpd/backup.md)"
    )]
    Forbidden {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl StorageError {
    /// What a client's `ERROR` line says of it: what failed, without the
    /// server's paths.
    pub fn fault(&self) -> ServerFault {
        match self {
            StorageError::Io { action, source, .. } => ServerFault::StorageIo {
                action,
                reason: source.to_string().into(),
            },
            // Not reached: only writes and syncs fail once the file is open.
            other => ServerFault::StorageIo {
                action: "use the data file",
                reason: other.to_string().into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::format::header;
    use super::*;

    fn file_with(records: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut data = header().to_vec();
        for (name, value) in records {
            encode_record(name, value, &mut data);
        }
        data
    }

    fn names(data: &[u8]) -> Result<(Vec<Vec<u8>>, Replay), StorageError> {
        let mut got = Vec::new();
        let r = replay(data, Path::new("d"), |n, _| got.push(n.to_vec()))?;
        Ok((got, r))
    }

    #[test]
    fn records_round_trip() {
        let data = file_with(&[(b"a", b"1"), (b"\xff name", b"v a l \x00\r\n")]);
        let mut got = Vec::new();
        let r = replay(&data, Path::new("d"), |n, v| {
            got.push((n.to_vec(), v.to_vec()))
        })
        .unwrap();
        assert_eq!(r, Replay::Clean { records: 2 });
        assert_eq!(got[1], (b"\xff name".to_vec(), b"v a l \x00\r\n".to_vec()));
    }

    /// A crash can cut the last write anywhere: every cut of the last
    /// record keeps the records before it and reports a torn tail.
    #[test]
    fn a_torn_last_record_at_every_byte_offset_is_cut_off() {
        let full = file_with(&[
            (b"first", b"one"),
            (b"second", b"two"),
            (b"third", b"three"),
        ]);
        let good = file_with(&[(b"first", b"one"), (b"second", b"two")]).len();
        for cut in good + 1..full.len() {
            let (got, r) = names(&full[..cut]).unwrap();
            assert_eq!(got, [b"first".to_vec(), b"second".to_vec()], "cut at {cut}");
            assert_eq!(
                r,
                Replay::TornTail {
                    records: 2,
                    good_len: good as u64
                },
                "cut at {cut}"
            );
        }
        assert_eq!(
            names(&full[..good]).unwrap().1,
            Replay::Clean { records: 2 }
        );
    }

    #[test]
    fn a_damaged_last_record_is_a_torn_tail() {
        let mut data = file_with(&[(b"a", b"1"), (b"b", b"2")]);
        let last = data.len() - 1;
        data[last] ^= 0xff;
        assert!(matches!(
            names(&data).unwrap().1,
            Replay::TornTail { records: 1, .. }
        ));
    }

    #[test]
    fn a_zero_filled_tail_is_a_torn_tail() {
        let mut data = file_with(&[(b"a", b"1")]);
        data.extend_from_slice(&[0; 100]);
        assert!(matches!(
            names(&data).unwrap().1,
            Replay::TornTail { records: 1, .. }
        ));
    }

    #[test]
    fn damage_followed_by_good_records_is_an_error_naming_the_offset() {
        let clean = file_with(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]);
        let second = file_with(&[(b"a", b"1")]).len();
        // A flipped value byte (bad checksum), and a flipped length byte.
        for flip in [second + RECORD_HEADER_LEN + 1, second + 5] {
            let mut data = clean.clone();
            data[flip] ^= 0x40;
            match names(&data) {
                Err(StorageError::Damaged { offset, .. }) => assert_eq!(offset, second as u64),
                other => panic!("flip at {flip}: {other:?}"),
            }
        }
    }

    /// Garbage after the last good record (a block allocated but never
    /// written holds whatever was there before) is a torn tail, however
    /// its bytes read as lengths, unless a valid record follows it.
    #[test]
    fn random_garbage_at_the_tail_is_cut_off() {
        let good = file_with(&[(b"a", b"1"), (b"b", b"2")]);
        // Lengths read from this garbage are sane and short: it looked
        // like a damaged complete record before.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in [13, 40, 100, 4096] {
            let mut data = good.clone();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                data.push(seed as u8);
            }
            data[good.len() + 4..good.len() + 12].copy_from_slice(&[3, 0, 0, 0, 3, 0, 0, 0]);
            let (kept, replay) = names(&data).unwrap();
            assert_eq!(
                kept,
                vec![b"a".to_vec(), b"b".to_vec()],
                "garbage of {len} bytes"
            );
            assert_eq!(
                replay,
                Replay::TornTail {
                    records: 2,
                    good_len: good.len() as u64
                }
            );
            // The same garbage with a good record after it is damage.
            let mut damaged = data.clone();
            damaged.extend_from_slice(&file_with(&[(b"c", b"3")])[HEADER_LEN..]);
            assert!(matches!(names(&damaged), Err(StorageError::Damaged { .. })));
        }
    }

    proptest::proptest! {
        /// Replay never panics, and every record it returns was written.
        #[test]
        fn replay_returns_only_records_that_were_written(
            records in proptest::collection::vec(
                (proptest::collection::vec(1u8..=255, 1..8), proptest::collection::vec(1u8..=255, 1..8)), 0..6),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let pairs: Vec<(&[u8], &[u8])> = records.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            let mut data = file_with(&pairs);
            data.extend_from_slice(&tail);
            let mut seen = Vec::new();
            let result = replay(&data, Path::new("t"), |n, v| seen.push((n.to_vec(), v.to_vec())));
            proptest::prop_assert!(result.is_ok(), "garbage alone is never damage: {:?}", result);
            proptest::prop_assert!(seen.len() >= records.len());
            proptest::prop_assert_eq!(&seen[..records.len()], &records[..]);
        }
    }
}
