//! Reading a data file record by record as jnhpd's start does, telling
//! each kind of damage apart, with memory bounded by the largest record.
//!
//! The rules are the start's ([`crate::storage::datafile::replay`]): a bad region
//! with no valid record anywhere after it is a torn tail (what a crash
//! leaves: the next start cuts it); a bad region followed by a valid
//! record is damage; a whole record that no STORE could have made
//! ([`RecordCheck`]) is damage wherever it stands. Unlike the start, the
//! search for a valid record after a bad region reads the rest of the
//! file through a window of two maximal records, never all of it.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::DataToolError;
use crate::protocol::Limits;
use crate::storage::datafile::{
    HEADER_LEN, MAGIC, RECORD_HEADER_LEN, RecordCheck, VERSION, count_rest, find_record, read_full,
};

const MAX_NAME_LEN: usize = Limits::WIDEST.max_name_bytes;
const MAX_VALUE_LEN: usize = Limits::WIDEST.max_value_bytes;
/// What is wrong at an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The first 16 bytes are not a header this jnhpd reads.
    BadHeader(String),
    /// A length field no record can have (0, or over the widest limit).
    ImpossibleLength {
        /// The name length read.
        name_len: u32,
        /// The value length read.
        value_len: u32,
    },
    /// The record's bytes do not match its checksum.
    CrcMismatch {
        /// The checksum in the record.
        stored: u32,
        /// The checksum of its bytes.
        computed: u32,
    },
    /// The file ends inside the record.
    Incomplete {
        /// Bytes of the record in the file.
        have: u64,
        /// Bytes the record needs.
        need: u64,
    },
    /// A whole, valid record holding what no STORE may.
    Forbidden(String),
    /// A name stored before, at byte offset `first`.
    Duplicate {
        /// Where the name was first stored.
        first: u64,
    },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::BadHeader(why) => write!(f, "bad header: {why}"),
            Damage::ImpossibleLength {
                name_len,
                value_len,
            } => write!(
                f,
                "impossible length (name {name_len} bytes, value {value_len} bytes; \
                 a record has 1 to {MAX_NAME_LEN} and 1 to {MAX_VALUE_LEN})"
            ),
            Damage::CrcMismatch { stored, computed } => write!(
                f,
                "CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Damage::Incomplete { have, need } => write!(
                f,
                "incomplete record ({have} of its {need} bytes before the end of the file)"
            ),
            Damage::Forbidden(why) => write!(f, "a record holding what no STORE may: {why}"),
            Damage::Duplicate { first } => {
                write!(f, "a name stored twice (first at byte offset {first})")
            }
        }
    }
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every byte was a good record.
    Clean,
    /// Bad bytes from `offset` to the end with no valid record after
    /// them: an unfinished last write, which the next start cuts off.
    TornTail {
        /// Where the bad bytes begin.
        offset: u64,
        /// How many there are.
        bytes: u64,
        /// What is wrong with the first of them.
        damage: Damage,
    },
    /// Damage at `offset`: with a valid record after it at `next_valid`
    /// (acknowledged data beyond it), or a record no STORE may hold, or a
    /// bad header (offset 0).
    Damaged {
        /// Where the damage begins.
        offset: u64,
        /// What is wrong there.
        damage: Damage,
        /// The next valid record after it, if any.
        next_valid: Option<u64>,
    },
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Good records before the end (or the damage).
    pub records: u64,
    /// Distinct names among them, when names were tracked.
    pub names: Option<u64>,
    /// Records repeating a name (when names were tracked), and the first
    /// of them: its offset and the offset of the name's first record.
    pub duplicates: u64,
    /// The first repeat: its offset, and its name's first record's.
    pub first_duplicate: Option<(u64, u64)>,
    /// Header and good records: where a cut would leave the file.
    pub good_len: u64,
    /// Bytes read in all (the file's length, or the part scanned).
    pub bytes: u64,
    /// How the scan ended.
    pub end: End,
}

impl Scan {
    /// The first damage, if any: a repeated name counts.
    pub fn first_damage(&self) -> Option<(u64, Damage)> {
        let end = match &self.end {
            End::Damaged { offset, damage, .. } => Some((*offset, damage.clone())),
            _ => None,
        };
        match self.first_duplicate {
            Some((offset, first)) => Some((offset, Damage::Duplicate { first })),
            None => end,
        }
    }
}

/// Scans the data file read by `reader` from its first byte. `limits`
/// hold each whole record to what a STORE may carry; `track_names` keeps
/// an index of names (memory: the names) to count them and find
/// repeats; `each` gets every good record before the end or the damage,
/// with its offset. Damage ends the scan (a repeated name does not).
pub fn scan(
    reader: &mut impl Read,
    path: &Path,
    limits: Limits,
    track_names: bool,
    mut each: impl FnMut(u64, &[u8], &[u8]) -> Result<(), DataToolError>,
) -> Result<Scan, DataToolError> {
    let io = |e| DataToolError::io(path, "read")(e);
    let mut found = Scan {
        records: 0,
        names: track_names.then_some(0),
        duplicates: 0,
        first_duplicate: None,
        good_len: 0,
        bytes: 0,
        end: End::Clean,
    };
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(reader, &mut header).map_err(io)?;
    if got == 0 {
        // An empty file is what a new data file is until jnhpd's start
        // writes its header: nothing stored, nothing wrong.
        return Ok(found);
    }
    if let Err(why) = check_header(&header[..got]) {
        let rest = count_rest(reader).map_err(io)?;
        found.bytes = got as u64 + rest;
        found.end = match rest == 0 && crate::storage::datafile::is_torn_header(&header[..got]) {
            // What a crash while jnhpd created the file leaves; the next
            // start writes the header again.
            true => End::TornTail {
                offset: 0,
                bytes: got as u64,
                damage: Damage::BadHeader(format!(
                    "{why} (a header cut short by a crash as jnhpd created the file)"
                )),
            },
            false => End::Damaged {
                offset: 0,
                damage: Damage::BadHeader(why),
                next_valid: None,
            },
        };
        return Ok(found);
    }
    let check = RecordCheck::new(limits);
    let mut names: HashMap<Box<[u8]>, u64> = HashMap::new();
    let mut at = HEADER_LEN as u64;
    let mut record = Vec::with_capacity(1 << 16);
    loop {
        found.good_len = at;
        record.resize(RECORD_HEADER_LEN, 0);
        let got = read_full(reader, &mut record).map_err(io)?;
        if got == 0 {
            found.bytes = at;
            return Ok(found);
        }
        let damage = if got < RECORD_HEADER_LEN {
            record.truncate(got);
            Damage::Incomplete {
                have: got as u64,
                need: RECORD_HEADER_LEN as u64,
            }
        } else {
            let (name_len, value_len) = (u32_at(&record, 4), u32_at(&record, 8));
            let (n, v) = (name_len as usize, value_len as usize);
            if !(1..=MAX_NAME_LEN).contains(&n) || !(1..=MAX_VALUE_LEN).contains(&v) {
                Damage::ImpossibleLength {
                    name_len,
                    value_len,
                }
            } else {
                let end = RECORD_HEADER_LEN + n + v;
                record.resize(end, 0);
                let got = read_full(reader, &mut record[RECORD_HEADER_LEN..]).map_err(io)?;
                record.truncate(RECORD_HEADER_LEN + got);
                let (stored, computed) = (u32_at(&record, 0), crc32fast::hash(&record[4..]));
                if record.len() < end {
                    Damage::Incomplete {
                        have: record.len() as u64,
                        need: end as u64,
                    }
                } else if stored != computed {
                    Damage::CrcMismatch { stored, computed }
                } else {
                    let (name, value) = record[RECORD_HEADER_LEN..].split_at(n);
                    if let Err(why) = check.check(name, value) {
                        found.bytes = at + end as u64 + count_rest(reader).map_err(io)?;
                        found.end = End::Damaged {
                            offset: at,
                            damage: Damage::Forbidden(why),
                            next_valid: None,
                        };
                        return Ok(found);
                    }
                    if track_names {
                        match names.get(name) {
                            Some(&first) => {
                                found.duplicates += 1;
                                found.first_duplicate.get_or_insert((at, first));
                            }
                            None => {
                                names.insert(name.into(), at);
                                found.names = Some(names.len() as u64);
                            }
                        }
                    }
                    each(at, name, value)?;
                    found.records += 1;
                    at += end as u64;
                    continue;
                }
            }
        };
        // A bad region: damage if a valid record follows, else a torn tail.
        let after = record.get(1..).unwrap_or_default().to_vec();
        let (next_valid, end) = find_record(after, at + 1, reader).map_err(io)?;
        found.bytes = end;
        found.end = match next_valid {
            Some(next) => End::Damaged {
                offset: at,
                damage,
                next_valid: Some(next),
            },
            None => End::TornTail {
                offset: at,
                bytes: end - at,
                damage,
            },
        };
        return Ok(found);
    }
}

/// `Err(why)` unless `header` is a header this jnhpd reads.
fn check_header(header: &[u8]) -> Result<(), String> {
    if header.len() < HEADER_LEN {
        return Err(format!(
            "the file has {} bytes, fewer than the {HEADER_LEN} of a header",
            header.len()
        ));
    }
    if &header[..8] != MAGIC {
        return Err(format!(
            "it begins with {:?}, not \"JNHPDATA\"",
            String::from_utf8_lossy(&header[..8])
        ));
    }
    let version = u32_at(header, 8);
    if version != VERSION {
        return Err(format!(
            "format version {version} (this jnhpd reads version {VERSION})"
        ));
    }
    Ok(())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::datafile::encode_record;
    use crate::storage::datafile::search::MAX_RECORD;

    fn file_with(records: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&VERSION.to_le_bytes());
        data.extend_from_slice(&[0; 4]);
        for (name, value) in records {
            encode_record(name, value, &mut data);
        }
        data
    }

    fn scan_bytes(data: &[u8]) -> Scan {
        scan(
            &mut &data[..],
            Path::new("t"),
            Limits::WIDEST,
            true,
            |_, _, _| Ok(()),
        )
        .unwrap()
    }

    #[test]
    fn clean_file() {
        let data = file_with(&[(b"a", b"1"), (b"b", b"2")]);
        let s = scan_bytes(&data);
        assert_eq!(s.end, End::Clean);
        assert_eq!(
            (s.records, s.names, s.bytes),
            (2, Some(2), data.len() as u64)
        );
    }

    #[test]
    fn kinds_of_damage_are_told_apart() {
        let clean = file_with(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]);
        let second = file_with(&[(b"a", b"1")]).len();
        let mut crc = clean.clone();
        crc[second + RECORD_HEADER_LEN] ^= 1;
        let s = scan_bytes(&crc);
        assert!(
            matches!(s.end, End::Damaged { offset, damage: Damage::CrcMismatch { .. }, next_valid: Some(_) } if offset == second as u64),
            "{s:?}"
        );
        let mut len = clean.clone();
        len[second + 7] = 0x7f;
        let s = scan_bytes(&len);
        assert!(
            matches!(
                s.end,
                End::Damaged {
                    damage: Damage::ImpossibleLength { .. },
                    ..
                }
            ),
            "{s:?}"
        );
        let torn = &clean[..clean.len() - 2];
        let s = scan_bytes(torn);
        assert!(
            matches!(
                s.end,
                End::TornTail {
                    bytes: 12,
                    damage: Damage::Incomplete { have: 12, need: 14 },
                    ..
                }
            ),
            "{s:?}"
        );
        assert_eq!(s.records, 2);
        let dup = file_with(&[(b"a", b"1"), (b"a", b"2")]);
        let s = scan_bytes(&dup);
        assert_eq!(
            (s.duplicates, s.names, s.end.clone()),
            (1, Some(1), End::Clean)
        );
        assert!(matches!(
            s.first_damage(),
            Some((_, Damage::Duplicate { first: 16 }))
        ));
        let forbidden = file_with(&[(b"a", b"1"), (b"b", b"x\ry")]);
        let s = scan_bytes(&forbidden);
        assert!(
            matches!(
                s.end,
                End::Damaged {
                    damage: Damage::Forbidden(_),
                    ..
                }
            ),
            "{s:?}"
        );
        let s = scan_bytes(b"JNHPDATX");
        assert!(matches!(
            s.end,
            End::Damaged {
                offset: 0,
                damage: Damage::BadHeader(_),
                ..
            }
        ));
    }

    /// A valid record far past the bad region (more than a window away)
    /// is still found: damage, not a torn tail.
    #[test]
    fn a_record_far_after_a_bad_region_is_found() {
        let mut data = file_with(&[(b"a", b"1")]);
        data.extend(std::iter::repeat_n(0xffu8, MAX_RECORD * 2 + 12345));
        let at = data.len() as u64;
        encode_record(b"b", b"2", &mut data);
        let s = scan_bytes(&data);
        assert!(
            matches!(s.end, End::Damaged { next_valid: Some(n), .. } if n == at),
            "{s:?}"
        );
        data.truncate(data.len() - 1);
        let s = scan_bytes(&data);
        assert!(matches!(s.end, End::TornTail { .. }), "{s:?}");
        assert_eq!(s.bytes, data.len() as u64);
    }
}
