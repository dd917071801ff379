//! Finding the next valid record after a bad region: how the start tells
//! a torn tail (nothing valid after it) from damage (a valid record after
//! it), and how `jnhpd data verify` and `repair` find where damage ends.

use std::io::{self, Read};

use super::format::{MAX_NAME_LEN, MAX_VALUE_LEN, RECORD_HEADER_LEN, read_full};

/// The largest record any jnhpd can write.
pub(crate) const MAX_RECORD: usize = RECORD_HEADER_LEN + MAX_NAME_LEN + MAX_VALUE_LEN;
/// Bytes read at a time while searching past a bad region.
const CHUNK: usize = 1 << 20;

/// Searches the stream, whose next bytes follow `first` (which begins at
/// byte offset `base`), for the first valid record. Returns its offset,
/// if any, and the offset of the end of the stream (read to its end). Holds at most a window of about two maximal
/// records; linear in the bytes, as [`crate::storage::datafile`]'s own search is
/// (a candidate's bytes are summed only if they hold no NUL).
pub(crate) fn find_record(
    mut buf: Vec<u8>,
    mut base: u64,
    reader: &mut impl Read,
) -> io::Result<(Option<u64>, u64)> {
    let mut eof = false;
    let mut pos = 0;
    let mut chunk = vec![0u8; CHUNK];
    loop {
        while !eof && buf.len() < pos + MAX_RECORD {
            let got = read_full(reader, &mut chunk)?;
            buf.extend_from_slice(&chunk[..got]);
            eof = got < chunk.len();
        }
        let last = if eof {
            buf.len().saturating_sub(RECORD_HEADER_LEN - 1)
        } else {
            buf.len() - MAX_RECORD + 1
        };
        while pos < last {
            if record_at(&buf[pos..]) {
                let end = base + buf.len() as u64 + count_rest(reader)?;
                return Ok((Some(base + pos as u64), end));
            }
            pos += 1;
        }
        if eof {
            return Ok((None, base + buf.len() as u64));
        }
        // Drop what was searched, a few chunks at a time (each drop moves
        // the window's bytes).
        if pos >= 8 * CHUNK {
            buf.drain(..pos);
            base += pos as u64;
            pos = 0;
        }
    }
}

/// Whether a valid record (one jnhpd could have written: no NUL in its
/// name or value) begins at the start of `rest`.
///
/// Checking every offset stays linear however the bytes read: a
/// candidate's CRC is computed only if its name and value hold no NUL,
/// and every candidate has a NUL at offset 7 (the high byte of a name
/// length of at most 64 KiB), so a NUL-free name and value of one
/// candidate holds no other candidate's offset 7: the spans searched and
/// summed overlap at most a few times per byte. (Without that, a tail
/// whose every offset reads as in-range lengths cost a whole maximal
/// record per byte.)
fn record_at(rest: &[u8]) -> bool {
    // The argument above needs offset 7 of every candidate to be a NUL.
    const _: () = assert!(MAX_NAME_LEN < 1 << 24);
    if rest.len() < RECORD_HEADER_LEN {
        return false;
    }
    let (n, v) = (u32_at(rest, 4) as usize, u32_at(rest, 8) as usize);
    let end = RECORD_HEADER_LEN + n + v;
    (1..=MAX_NAME_LEN).contains(&n)
        && (1..=MAX_VALUE_LEN).contains(&v)
        && end <= rest.len()
        && !rest[RECORD_HEADER_LEN..end].contains(&0)
        && u32_at(rest, 0) == crc32fast::hash(&rest[4..end])
}

/// Bytes left in the stream, read and dropped a chunk at a time.
pub(crate) fn count_rest(reader: &mut impl Read) -> io::Result<u64> {
    io::copy(reader, &mut io::sink())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}
