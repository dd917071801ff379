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

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::metrics::Metrics;
use crate::ops::config::Fsync;
use crate::protocol::{Limits, ServerFault};
use crate::storage::{Backend, Event, Outcome, Record, Sink, Start, Started, Written};

pub const MAGIC: &[u8; 8] = b"JNHPDATA";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 16;
pub const RECORD_HEADER_LEN: usize = 12;

/// Lengths no valid record can have: the config caps names at 64 KiB and
/// values at 16 MiB.
const MAX_NAME_LEN: usize = Limits::WIDEST.max_name_bytes;
const MAX_VALUE_LEN: usize = Limits::WIDEST.max_value_bytes;

/// Records written per write (and per fsync) at most.
const MAX_GROUP: usize = 4096;

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

fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// How replaying the records after the header ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// Every byte was a good record.
    Clean { records: usize },
    /// Good records up to `good_len`, then an incomplete or damaged last
    /// record (a write cut short by a crash): cut it off.
    TornTail { records: usize, good_len: u64 },
}

fn u32_at(bytes: &[u8], at: usize) -> usize {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word) as usize
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
fn replay_stream(
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
        let (next_valid, _) =
            crate::ops::datatools::scan::find_record(after, at + 1, reader).map_err(io)?;
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

/// Checks a file's header (its first [`HEADER_LEN`] bytes, or fewer if the
/// file is shorter): the magic and a version this build reads.
fn check_header(data: &[u8], path: &Path) -> Result<(), StorageError> {
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
    fn record(
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

/// Opens an existing data file for reading and checks its header: a
/// regular file (a FIFO or a device is refused, not read).
fn open_for_reading(path: &Path) -> Result<File, StorageError> {
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

/// An open, locked data file, replayed and ready for appends.
pub struct DataFile {
    path: PathBuf,
    file: File,
    len: u64,
    /// Set when a failed write or sync could not be undone: every later
    /// STORE gets [`ServerFault::StorageUnusable`].
    unusable: bool,
}

impl DataFile {
    /// Opens (or creates) the data file, takes its lock, and replays it
    /// through `each`, one record at a time. A torn tail is cut off with a
    /// warning; a record that `limits` or the protocol's rules refuse
    /// ([`RecordCheck`]) stops the start, naming its offset.
    pub fn open(
        path: &Path,
        limits: Limits,
        mut each: impl FnMut(&[u8], &[u8]),
    ) -> Result<(DataFile, usize), StorageError> {
        let io = |action| {
            let path = path.to_path_buf();
            move |source| StorageError::Io {
                path,
                action,
                source,
            }
        };
        // A regular file only: a FIFO or a device in its place is an error
        // at start, never a hang or an endless read.
        let mut file = crate::base::files::open_regular(
            path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            None,
        )
        .map_err(StorageError::File)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock")(e)),
        }
        let mut size = file.metadata().map_err(io("read"))?.len();
        if size > 0 && size <= HEADER_LEN as u64 {
            let mut start = [0u8; HEADER_LEN];
            let got = read_full(&mut file, &mut start).map_err(io("read"))?;
            file.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
            if is_torn_header(&start[..got]) {
                log::warn!(
                    "data file {}: its header was cut short by a crash while jnhpd created \
                     it ({got} bytes, nothing stored); writing it again",
                    path.display()
                );
                file.set_len(0).map_err(io("truncate"))?;
                size = 0;
            }
        }
        if size == 0 {
            file.write_all(&header()).map_err(io("write"))?;
            file.sync_all().map_err(io("sync"))?;
            // The new file's directory entry must be durable too.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io("sync the directory of"))?;
            }
            return Ok((
                DataFile {
                    path: path.to_path_buf(),
                    file,
                    len: HEADER_LEN as u64,
                    unusable: false,
                },
                0,
            ));
        }
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut file, &mut header).map_err(io("read"))?;
        check_header(&header[..got], path)?;
        let check = RecordCheck::new(limits);
        let mut reader = io::BufReader::with_capacity(1 << 20, &file);
        let (replayed, end) = replay_stream(&mut reader, path, |offset, name, value| {
            check.record(path, offset, name, value)?;
            each(name, value);
            Ok(())
        })?;
        drop(reader);
        let (records, len) = match replayed {
            Replay::Clean { records } => (records, end),
            Replay::TornTail { records, good_len } => {
                let file_len = file.metadata().map_err(io("read"))?.len();
                log::warn!(
                    "data file {}: incomplete or damaged last record at byte offset {good_len} \
                     (a write cut short by a crash); cutting off {} bytes",
                    path.display(),
                    file_len.saturating_sub(good_len)
                );
                file.set_len(good_len).map_err(io("truncate"))?;
                file.sync_all().map_err(io("sync"))?;
                (records, good_len)
            }
        };
        file.seek(SeekFrom::Start(len)).map_err(io("seek"))?;
        Ok((
            DataFile {
                path: path.to_path_buf(),
                file,
                len,
                unusable: false,
            },
            records,
        ))
    }

    /// Starts the writer thread; records are appended through the
    /// returned [`Appender`]. `written` receives each append's outcome.
    pub fn start_writer<T: Send + 'static>(
        self,
        fsync: Fsync,
        metrics: Option<Arc<Metrics>>,
        written: impl Fn(Written<T>) + Send + 'static,
    ) -> io::Result<(Appender<T>, WriterThread)> {
        let (tx, rx) = mpsc::channel::<Record<T>>();
        let thread = std::thread::Builder::new()
            .name("jnhpd-datafile".into())
            .spawn(move || self.write_loop(rx, fsync, metrics, written))?;
        Ok((Appender { tx }, WriterThread(Some(thread))))
    }

    /// The data file as the store's [`Backend`]: its writer thread starts
    /// when the store does.
    pub fn into_backend<T: Send + 'static>(self, fsync: Fsync, metrics: Arc<Metrics>) -> Start<T> {
        Box::new(move |sink: Sink<T>| {
            let (appender, writer) = self.start_writer(fsync, Some(metrics), move |written| {
                sink(Event::Written(written))
            })?;
            Ok(Started::Local(Box::new(DataFileBackend {
                appender,
                writer,
            })))
        })
    }

    fn write_loop<T>(
        mut self,
        rx: mpsc::Receiver<Record<T>>,
        fsync: Fsync,
        metrics: Option<Arc<Metrics>>,
        written: impl Fn(Written<T>),
    ) {
        let stats = metrics.as_ref().and_then(|m| m.datafile.as_ref());
        if let Some(stats) = stats {
            stats.bytes.store(self.len, Relaxed);
            // What replay kept may be in the page cache only (a killed
            // jnhpd under everysec or never): synced, it may be listed.
            match self.sync() {
                Ok(()) => stats.durable.publish(self.len),
                Err(err) => log::error!("{err}"),
            }
        }
        let publish = |len: u64| {
            if let Some(stats) = stats {
                stats.durable.publish(len);
            }
        };
        // Every sync, timed, with the records it made durable. It does not
        // publish the durable length: a listing that saw a name before the
        // store has it in its map would show a name a GET misses. Under
        // `always` each record's end is handed back with it
        // (`Written::durable_end`) and the store publishes it; under
        // `everysec` the records were handed back when written, before
        // the sync that publishes them.
        let synced = |this: &mut DataFile, records: usize| {
            let started = Instant::now();
            let result = this.sync();
            if let Some(stats) = stats {
                stats.syncs.fetch_add(1, Relaxed);
                stats.sync_duration.observe_duration(started.elapsed(), 1);
                stats.records_per_sync.observe(records as f64, 1);
            }
            result
        };
        let mut unsynced_records = 0usize;
        let mut buf = Vec::new();
        let mut group = Vec::new();
        let mut unsynced = false;
        let mut last_sync = Instant::now();
        loop {
            // everysec: wake at least once a second to sync what was written.
            let first = if fsync == Fsync::Everysec && unsynced {
                let left = Duration::from_secs(1).saturating_sub(last_sync.elapsed());
                match rx.recv_timeout(left) {
                    Ok(append) => Some(append),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(append) => Some(append),
                    Err(_) => break,
                }
            };
            if let Some(first) = first {
                group.push(first);
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(append) => group.push(append),
                        Err(_) => break,
                    }
                }
                buf.clear();
                for append in &group {
                    encode_record(&append.name, &append.value, &mut buf);
                }
                let group_start = self.len;
                // A file in an unknown state takes nothing more: no later
                // STORE may be acknowledged on top of it.
                let result = if self.unusable {
                    Err(ServerFault::StorageUnusable)
                } else {
                    let mut result = self.append(&buf);
                    if result.is_ok() && fsync == Fsync::Always {
                        result = synced(&mut self, group.len());
                        last_sync = Instant::now();
                        if result.is_err() {
                            self.cut_back(group_start, "sync", true);
                        }
                    } else if result.is_ok() {
                        unsynced = true;
                        unsynced_records += group.len();
                    }
                    result.map_err(|err| {
                        log::error!("{err}; {} STOREs not acknowledged", group.len());
                        err.fault()
                    })
                };
                if let Some(stats) = stats {
                    stats.bytes.store(self.len, Relaxed);
                    if self.unusable {
                        stats.writable.store(0, Relaxed);
                    }
                }
                let synced_now = result.is_ok() && fsync == Fsync::Always;
                let mut end = group_start;
                for Record {
                    name,
                    value,
                    token,
                    lease,
                } in group.drain(..)
                {
                    end += (RECORD_HEADER_LEN + name.len() + value.len()) as u64;
                    written(Written {
                        name,
                        value,
                        token,
                        lease,
                        outcome: match &result {
                            Ok(()) => Outcome::Stored,
                            Err(reason) => Outcome::Failed(reason.clone()),
                        },
                        durable_end: synced_now.then_some(end),
                    });
                }
            }
            if fsync == Fsync::Everysec && unsynced && last_sync.elapsed() >= Duration::from_secs(1)
            {
                let records = std::mem::take(&mut unsynced_records);
                match synced(&mut self, records) {
                    // Each record was handed back when it was written.
                    Ok(()) => publish(self.len),
                    // Acknowledged records may be lost, and after a failed
                    // fdatasync a later one can succeed without writing
                    // them (the kernel may have dropped the pages): nothing
                    // more is acknowledged or listed on top of that.
                    Err(err) => {
                        log::error!("{err}; {records} acknowledged STOREs may not be on disk");
                        self.give_up();
                        if let Some(stats) = stats {
                            stats.writable.store(0, Relaxed);
                        }
                    }
                }
                unsynced = false;
                last_sync = Instant::now();
            }
        }
        // Shutting down: whatever the mode, leave the file synced.
        if let Err(err) = self.sync() {
            log::error!("{err}");
        }
    }

    /// Appends `bytes` (whole records); on failure cuts the file back to
    /// its last good length, so a partial write never leaves garbage
    /// before later records. Public for `jnhpd data import`, which
    /// appends to a file it has opened (and locked) the daemon's way.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(source) => {
                self.rewind();
                Err(StorageError::Io {
                    path: self.path.clone(),
                    action: "write",
                    source,
                })
            }
        }
    }

    /// `fdatasync`s what was appended.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(|source| StorageError::Io {
            path: self.path.clone(),
            action: "sync",
            source,
        })
    }

    fn rewind(&mut self) {
        self.cut_back(self.len, "write", false);
    }

    /// Cuts the file back to `to` bytes after a failed write (what was
    /// written of the group is garbage before the next record) or a failed
    /// `fdatasync` with `fsync = "always"` (`durable`: the group's records
    /// were answered `ERROR` and their names left free, so the next replay
    /// must not find them — it would keep a value never acknowledged over
    /// one acknowledged later — and the cut itself is synced). If the cut
    /// fails, the file's state is unknown and it takes no more writes
    /// ([`DataFile::give_up`]).
    fn cut_back(&mut self, to: u64, after: &str, durable: bool) {
        let cut = self
            .file
            .set_len(to)
            .and_then(|()| self.file.seek(SeekFrom::Start(to)).map(drop))
            .and_then(|()| {
                if durable {
                    self.file.sync_all()
                } else {
                    Ok(())
                }
            });
        match cut {
            Ok(()) => self.len = to,
            Err(err) => {
                log::error!(
                    "data file {}: cannot cut back to {to} bytes after a failed {after}: {err}",
                    self.path.display()
                );
                self.give_up();
            }
        }
    }

    /// The file may now hold records answered `ERROR`, or garbage before
    /// the next record: every later STORE is refused until a restart,
    /// whose replay (or `jnhpd data verify` and `repair`) sorts it out.
    /// Reads go on from memory.
    fn give_up(&mut self) {
        log::error!(
            "data file {}: in an unknown state after a failed write or sync; refusing every \
             STORE until jnhpd is restarted (check the disk, then `jnhpd data verify`)",
            self.path.display()
        );
        self.unusable = true;
    }
}

/// Queues records for the writer thread. Cheap and non-blocking, so the
/// store actor never waits on the disk.
pub struct Appender<T> {
    tx: mpsc::Sender<Record<T>>,
}

impl<T> Appender<T> {
    /// Queues a record; the writer reports its outcome with its token.
    /// Returns the record back if the writer has stopped.
    pub fn append(&self, record: Record<T>) -> Result<(), Record<T>> {
        self.tx
            .send(record)
            .map_err(|mpsc::SendError(record)| record)
    }
}

/// The data file behind the store's backend seam.
struct DataFileBackend<T> {
    appender: Appender<T>,
    writer: WriterThread,
}

impl<T: Send> Backend<T> for DataFileBackend<T> {
    fn append(&mut self, run: Vec<Record<T>>) -> Result<(), Vec<Record<T>>> {
        let mut records = run.into_iter();
        while let Some(record) = records.next() {
            if let Err(record) = self.appender.append(record) {
                // The writer has stopped: this record and the rest fail.
                let mut failed = vec![record];
                failed.extend(records);
                return Err(failed);
            }
        }
        Ok(())
    }

    fn close(self: Box<Self>) {
        let DataFileBackend { appender, writer } = *self;
        // The writer syncs and stops once its queue is closed.
        drop(appender);
        writer.join();
    }
}

/// The writer thread; [`join`](WriterThread::join) waits until it has
/// synced and stopped (after every `Appender` is dropped).
#[derive(Debug)]
pub struct WriterThread(Option<std::thread::JoinHandle<()>>);

impl WriterThread {
    pub fn join(mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
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
