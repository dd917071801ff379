//! `jnhpd data import --config FILE INPUT`: a data file or a JSON-lines
//! export into the storage the config names.
//!
//! The input is read twice, as a stream each time: first every record is
//! checked (a bad header, damage, a record no STORE under the config's
//! limits may hold, a JSON line that is not a record: each reported, the
//! lines by number), and nothing is imported unless all are good; then
//! the records are imported. Memory is bounded by one record (one line,
//! at most `portable::max_line_len` bytes: a longer line is read
//! through and reported, never held), plus, for a data-file target, an
//! index of the names it holds with a SHA-256 of each value (to tell a
//! name already present from a conflict): the daemon itself holds every
//! name and value.
//!
//! Into a data file: refused while a jnhpd holds it (the daemon's lock
//! is taken for the whole import); a torn tail of the target is cut as a
//! start would; a name not yet stored is appended, one with the same
//! value is *present*, one with another value a *conflict* (the target
//! keeps its value: names are write-once), reported and counted; the
//! file is fsynced at the end. PostgreSQL namespaces are imported into
//! through [`crate::storage::postgres::import::import_records`].

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, BufRead};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::scan::{self, End};
use super::{DataToolError, portable};
use crate::protocol::Limits;
use crate::storage::datafile::{DataFile, MAGIC, encode_record, read_full};
use crate::storage::postgres::import::{Counts, EachRecord};

/// What the input is, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Begins with the data file's magic, `JNHPDATA`.
    DataFile,
    /// Anything else: JSON lines.
    JsonLines,
}

/// Bad lines reported by number at most; the rest are counted.
const BAD_LINES_SHOWN: usize = 10;
/// Bytes appended per write to a data-file target at most.
const BATCH_BYTES: usize = 1 << 20;

/// Opens the input: a regular file (a FIFO or a device is refused, not
/// read: it is read twice).
fn open_input(path: &Path) -> Result<std::fs::File, DataToolError> {
    crate::base::files::open_regular(path, OpenOptions::new().read(true), None)
        .map_err(DataToolError::File)
}

/// Tells a data file from JSON lines by the first eight bytes.
pub fn input_kind(path: &Path) -> Result<InputKind, DataToolError> {
    let mut file = open_input(path)?;
    let mut magic = [0u8; 8];
    let got = read_full(&mut file, &mut magic).map_err(DataToolError::io(path, "read"))?;
    Ok(match &magic[..got] == MAGIC {
        true => InputKind::DataFile,
        false => InputKind::JsonLines,
    })
}

/// Reads every record of the input, in order, passing it to `each`
/// (which is not called again once a bad line has been seen). Returns
/// the number of records; an error names the first damage, or the bad
/// lines (the first few by number, and how many).
pub fn read_input(
    path: &Path,
    kind: InputKind,
    limits: Limits,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<(), DataToolError>,
) -> Result<u64, DataToolError> {
    let file = open_input(path)?;
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    match kind {
        InputKind::DataFile => {
            let scanned = scan::scan(&mut reader, path, limits, false, |_, n, v| each(n, v))?;
            match scanned.end {
                End::Clean => {}
                End::TornTail { offset, bytes, .. } => log::warn!(
                    "{}: {bytes} torn bytes at the end (byte offset {offset}) not read",
                    path.display()
                ),
                End::Damaged { offset, damage, .. } => {
                    return Err(DataToolError::Damaged {
                        path: path.to_path_buf(),
                        offset,
                        damage,
                    });
                }
            }
            Ok(scanned.records)
        }
        InputKind::JsonLines => read_lines(&mut reader, path, limits, each),
    }
}

fn read_lines(
    reader: &mut impl BufRead,
    path: &Path,
    limits: Limits,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<(), DataToolError>,
) -> Result<u64, DataToolError> {
    let check = crate::storage::datafile::RecordCheck::new(limits);
    let max = portable::max_line_len(limits.max_name_bytes, limits.max_value_bytes);
    let mut line = Vec::new();
    let (mut number, mut records, mut bad) = (0u64, 0u64, 0u64);
    let mut shown = Vec::new();
    loop {
        let got = next_line(reader, max, &mut line).map_err(DataToolError::io(path, "read"))?;
        number += 1;
        let record = match got {
            Got::End => break,
            Got::TooLong(len) => Err(format!(
                "{len} bytes, longer than any record within the limits can need ({max} bytes)"
            )),
            Got::Line if line.iter().all(u8::is_ascii_whitespace) => continue,
            Got::Line => {
                // A UTF-8 byte order mark, which some editors put first,
                // is skipped (RFC 8259 lets a parser ignore it).
                let text = match number {
                    1 => line.strip_prefix(BOM).unwrap_or(&line),
                    _ => &line[..],
                };
                portable::decode_line(text)
                    .map_err(|why| match has_bare_cr(text) {
                        true => format!("{why} (lines end with LF or CR LF, not a bare CR)"),
                        false => why,
                    })
                    .and_then(|(name, value)| check.check(&name, &value).map(|()| (name, value)))
            }
        };
        match record {
            Ok((name, value)) => {
                if bad == 0 {
                    each(&name, &value)?;
                }
                records += 1;
            }
            Err(why) => {
                bad += 1;
                if shown.len() < BAD_LINES_SHOWN {
                    shown.push(format!("line {number}: {why}"));
                }
            }
        }
    }
    if bad > 0 {
        return Err(DataToolError::BadLines {
            path: path.to_path_buf(),
            count: bad,
            first: shown,
        });
    }
    Ok(records)
}

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// Whether `line` holds a CR that does not end it (before its LF): a file
/// with CR-only line ends (old Mac) reads as one long line.
fn has_bare_cr(line: &[u8]) -> bool {
    let body = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .or_else(|| line.strip_suffix(b"\r"))
        .unwrap_or(line);
    body.contains(&b'\r')
}

enum Got {
    Line,
    /// A line longer than the bound, read through and dropped.
    TooLong(u64),
    End,
}

/// Reads the next line into `line` (its line end included) if it has at
/// most `max` bytes besides the line end; a longer one is read through
/// without being held.
fn next_line(reader: &mut impl BufRead, max: usize, line: &mut Vec<u8>) -> io::Result<Got> {
    line.clear();
    let (mut len, mut too_long) = (0u64, false);
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(match (len, too_long) {
                (0, _) => Got::End,
                (_, true) => Got::TooLong(len),
                _ => Got::Line,
            });
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(at) => (at + 1, true),
            None => (buf.len(), false),
        };
        if !too_long {
            if line.len() + take > max + 2 {
                too_long = true;
                *line = Vec::new();
            } else {
                line.extend_from_slice(&buf[..take]);
            }
        }
        len += take as u64;
        reader.consume(take);
        if done {
            return Ok(if too_long {
                Got::TooLong(len)
            } else {
                Got::Line
            });
        }
    }
}

/// Why an import stopped, with what it had done by then.
#[derive(Debug, thiserror::Error)]
#[error("{error} (so far: {counts})")]
pub struct ImportFailed {
    /// What stopped the import.
    pub error: DataToolError,
    /// What was done before it stopped.
    pub counts: Counts,
}

/// Imports the input (already checked whole with [`read_input`]) into
/// the data file `target` (see the module's doc).
pub fn into_datafile(
    input: &Path,
    kind: InputKind,
    target: &Path,
    limits: Limits,
) -> Result<Counts, ImportFailed> {
    let mut counts = Counts::default();
    let failed = |error: DataToolError, counts: &Counts| ImportFailed {
        error,
        counts: counts.clone(),
    };
    let mut index: HashMap<Box<[u8]>, [u8; 32]> = HashMap::new();
    let existed = std::fs::symlink_metadata(target).is_ok();
    let (mut file, _) = DataFile::open(target, limits, |name, value| {
        index
            .entry(name.into())
            .or_insert_with(|| Sha256::digest(value).into());
    })
    .map_err(|e| failed(e.into(), &counts))?;
    if !existed {
        give_to_the_directory_owner(target).map_err(|e| failed(e, &counts))?;
    }
    let mut batch = Vec::new();
    // Records in `batch`: counted as imported only once appended (a
    // failed append cuts them off again, and "so far" must not count
    // them).
    let mut batched = 0u64;
    let read = read_input(input, kind, limits, |name, value| {
        let digest: [u8; 32] = Sha256::digest(value).into();
        match index.get(name) {
            Some(stored) if *stored == digest => counts.present += 1,
            Some(_) => {
                counts.conflicts += 1;
                log::warn!(
                    "import: {} is stored with another value; the data file keeps it",
                    String::from_utf8_lossy(name)
                );
            }
            None => {
                index.insert(name.into(), digest);
                encode_record(name, value, &mut batch);
                batched += 1;
                if batch.len() >= BATCH_BYTES {
                    file.append(&batch)?;
                    batch.clear();
                    counts.imported += std::mem::take(&mut batched);
                }
            }
        }
        Ok(())
    });
    let appended = read.and_then(|_| {
        file.append(&batch)?;
        counts.imported += batched;
        file.sync()?;
        Ok(())
    });
    match appended {
        Ok(()) => Ok(counts),
        Err(error) => {
            // What was appended stays (whole records); make it durable.
            let _ = file.sync();
            Err(failed(error, &counts))
        }
    }
}

/// Gives a data file the import created to the owner of its directory,
/// when the import runs as root: jnhpd runs as that user (under the
/// packaged unit, its `DynamicUser`, which owns the state directory), and
/// a root-owned file in its place would stop it from starting (it opens
/// the file for writing). Run as anyone else, the file is already the
/// runner's, as a file jnhpd creates is jnhpd's.
fn give_to_the_directory_owner(target: &Path) -> Result<(), DataToolError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let owner = std::fs::metadata(dir).map_err(DataToolError::io(dir, "read"))?;
    use std::os::unix::fs::MetadataExt;
    std::os::unix::fs::chown(target, Some(owner.uid()), Some(owner.gid()))
        .map_err(DataToolError::io(target, "give to the directory's owner"))
}

/// The records of the input as a [`crate::storage::postgres::import::import_records`]
/// source.
pub fn source(
    input: &Path,
    kind: InputKind,
    limits: Limits,
) -> impl FnOnce(&mut EachRecord) -> Result<(), String> + Send + 'static {
    let input = input.to_path_buf();
    move |each| {
        read_input(&input, kind, limits, |name, value| {
            each(name, value).map_err(|reason| DataToolError::Input {
                path: input.clone(),
                reason,
            })
        })
        .map(drop)
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_read_through_not_held() {
        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100_000));
        input.extend_from_slice(b"\nafter");
        let mut reader = io::BufReader::with_capacity(64, &input[..]);
        let mut line = Vec::new();
        assert!(matches!(
            next_line(&mut reader, 10, &mut line).unwrap(),
            Got::Line
        ));
        assert_eq!(line, b"short\n");
        assert!(matches!(
            next_line(&mut reader, 10, &mut line).unwrap(),
            Got::TooLong(100_001)
        ));
        assert!(line.capacity() < 1000);
        assert!(matches!(
            next_line(&mut reader, 10, &mut line).unwrap(),
            Got::Line
        ));
        assert_eq!(line, b"after");
        assert!(matches!(
            next_line(&mut reader, 10, &mut line).unwrap(),
            Got::End
        ));
    }
}
