//! The open data file: its lock, the writer thread with group commit,
//! and the backend the store actor appends to.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::metrics::Metrics;
use crate::protocol::{Limits, ServerFault};
use crate::storage::{Backend, Event, Outcome, Record, Sink, Start, Started, Written};

use super::format::*;
use super::replay::*;
use super::*;

/// When the data file is synced (`storage.fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Before every acknowledgement (group commit shares the syncs).
    #[default]
    Always,
    /// About once a second: a crash may lose the last second.
    Everysec,
    /// Only when the server stops: a crash may lose anything unsynced.
    Never,
}

/// Records written per write (and per fsync) at most.
const MAX_GROUP: usize = 4096;

/// An open, locked data file, replayed and ready for appends.
pub struct DataFile {
    path: PathBuf,
    file: File,
    len: u64,
    /// Set when a failed write or sync could not be undone: every later
    /// STORE gets [`ServerFault::StorageUnusable`].
    unusable: bool,
    /// Where the writer publishes the file's state (`/readyz`, the
    /// writable gauge), when it runs with metrics: set before the log
    /// line that says the file was given up, so whoever reads that line
    /// finds the server already not ready.
    metrics: Option<Arc<Metrics>>,
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
                    metrics: None,
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
                metrics: None,
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
        self.metrics = metrics.clone();
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
                    // Given up first (the gauge and /readyz say so), then
                    // logged: whoever reads the line finds it not ready.
                    Err(err) => {
                        self.give_up();
                        log::error!("{err}; {records} acknowledged STOREs may not be on disk");
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
        if let Some(stats) = self.metrics.as_ref().and_then(|m| m.datafile.as_ref()) {
            stats.writable.store(0, Relaxed);
        }
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
