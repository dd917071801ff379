//! `GET /names` on the admin listener: the stored names, a page at a time
//! from a cursor, and a long poll that waits for new ones
//! (docs/observability.md, "Listing names").
//!
//! With a data file the file is the log, in order of storing: a page is
//! read from it with a read-only descriptor of its own, a record at a
//! time, never past the length the writer last synced
//! ([`DurableLength`](crate::metrics::DurableLength)), so no name a crash could take back is listed. A
//! cursor is the offset just after the last listed record together with
//! that record's length and CRC: before reading on, the record before the
//! offset is read and checked, so an offset that is not a record boundary
//! of this file (a made-up cursor, one from another file, a file restored
//! from an older backup) is refused instead of read as garbage. Every
//! record listed is checked by its CRC as well.
//!
//! Memory and time stay bounded whatever the size of the namespace: a page
//! holds at most [`MAX_LIMIT`] names and about [`PAGE_BYTES`] of body, a
//! request reads about [`SCAN_BYTES`] of records at most (a prefix that
//! matches nothing answers an empty page whose cursor goes on from where
//! it stopped), at most [`MAX_READING`] pages are read at once, and at
//! most [`MAX_WAITING`] long polls wait at once.

mod postgres;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use tokio::sync::{Semaphore, watch};

use crate::base::shutdown::Flag;
use crate::metrics::Metrics;
use crate::ops::config::Config;
use crate::protocol::Limits;
use crate::storage::datafile::{HEADER_LEN, RECORD_HEADER_LEN};

/// Names a page holds when the request names no limit.
pub const DEFAULT_LIMIT: usize = 100;
/// Names a page holds at most.
pub const MAX_LIMIT: usize = 1000;
/// The longest long poll, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;
/// Record bytes one request reads, past which the page ends (after the
/// record that crossed it: at least one record is always read, so a
/// listing always moves on).
pub const SCAN_BYTES: u64 = 8 << 20;
/// Body bytes past which a page ends (after the name that crossed it).
pub const PAGE_BYTES: usize = 1 << 20;
/// Long polls that may wait at once; more are answered 503 at once, so
/// waiting polls never hold every admin connection (`/metrics` and the
/// health checks keep working).
pub const MAX_WAITING: usize = 32;
/// Pages read at once (each holds up to [`PAGE_BYTES`] and a read
/// buffer); more requests queue for a turn.
pub const MAX_READING: usize = 4;
/// How long a request waits for the writer's first sync after a start.
const FIRST_SYNC: Duration = Duration::from_secs(10);
/// Bytes read at once while checking a record's CRC.
const CHUNK: usize = 64 * 1024;

/// A request's parameters.
#[derive(Debug, PartialEq)]
pub struct Query {
    /// The cursor as given; empty: from the start.
    pub after: String,
    pub limit: usize,
    pub prefix: Vec<u8>,
    pub wait: Duration,
}

/// Parses `after`, `limit`, `prefix` and `wait` (percent-encoded; `+` is
/// a plus sign, not a blank: a name has no blank). An unknown or repeated
/// parameter is an error too, so a misspelt one is not silently ignored.
pub fn parse_query(query: Option<&str>, max_prefix: usize) -> Result<Query, String> {
    let mut parsed = Query {
        after: String::new(),
        limit: DEFAULT_LIMIT,
        prefix: Vec::new(),
        wait: Duration::ZERO,
    };
    let mut seen: Vec<&str> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        if seen.contains(&key) {
            return Err(format!("parameter {key:?} given twice"));
        }
        let value = percent_decode(raw).map_err(|e| format!("parameter {key:?}: {e}"))?;
        let number = |max: u64| {
            std::str::from_utf8(&value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|n| *n <= max)
        };
        match key {
            "after" => {
                parsed.after = String::from_utf8(value)
                    .map_err(|_| "after: not a cursor this listing gave".to_string())?;
            }
            "limit" => {
                parsed.limit = number(MAX_LIMIT as u64)
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("limit must be a whole number from 1 to {MAX_LIMIT}"))?
                    as usize;
            }
            "prefix" => {
                if value.len() > max_prefix {
                    return Err(format!(
                        "prefix is longer than the longest name ({max_prefix} bytes)"
                    ));
                }
                parsed.prefix = value;
            }
            "wait" => {
                parsed.wait = Duration::from_secs(number(MAX_WAIT_SECS).ok_or_else(|| {
                    format!("wait must be a whole number of seconds from 0 to {MAX_WAIT_SECS}")
                })?);
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?} (known: after, limit, prefix, wait)"
                ));
            }
        }
        seen.push(key);
    }
    Ok(parsed)
}

/// Decodes `%XX` escapes; every other byte stands for itself.
pub fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// One name as a line of the portable encoding.
pub use crate::ops::datatools::portable::encode_name_line as name_line;

/// Where a data-file listing goes on: the offset just after the last
/// listed record, and that record's length and CRC, which prove the
/// offset a record boundary of this file. Written `OFFSET-LEN-CRC`
/// (`0` at the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCursor {
    pub offset: u64,
    pub prev: Option<(u64, u32)>,
}

impl FileCursor {
    pub const START: FileCursor = FileCursor {
        offset: HEADER_LEN as u64,
        prev: None,
    };

    pub fn parse(text: &str) -> Result<FileCursor, String> {
        if text.is_empty() || text == "0" {
            return Ok(FileCursor::START);
        }
        let bad = || format!("cursor {text:?} is not one this listing gave (OFFSET-LEN-CRC)");
        let mut parts = text.split('-');
        let (Some(offset), Some(len), Some(crc), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let digits = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        let (Some(offset), Some(len)) = (digits(offset), digits(len)) else {
            return Err(bad());
        };
        if crc.len() != 8 || !crc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let crc = u32::from_str_radix(crc, 16).map_err(|_| bad())?;
        let widest = Limits::WIDEST;
        let longest = (RECORD_HEADER_LEN + widest.max_name_bytes + widest.max_value_bytes) as u64;
        if !(RECORD_HEADER_LEN as u64 + 2..=longest).contains(&len)
            || offset < HEADER_LEN as u64 + len
        {
            return Err(bad());
        }
        Ok(FileCursor {
            offset,
            prev: Some((len, crc)),
        })
    }
}

impl std::fmt::Display for FileCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.prev {
            None => f.write_str("0"),
            Some((len, crc)) => write!(f, "{}-{len}-{crc:08x}", self.offset),
        }
    }
}

/// Why a request gets no page.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The request's fault: 400.
    #[error("{0}")]
    Bad(String),
    /// Listing cannot answer this (the store or the mode): 409.
    #[error("{0}")]
    Conflict(String),
    /// Try again later: 503.
    #[error("{0}")]
    Unavailable(String),
    /// Stored data is not as it was written: 500.
    #[error("{0}")]
    Damaged(String),
}

impl ListError {
    pub fn status(&self) -> StatusCode {
        match self {
            ListError::Bad(_) => StatusCode::BAD_REQUEST,
            ListError::Conflict(_) => StatusCode::CONFLICT,
            ListError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ListError::Damaged(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A page: its lines of names, and the cursor to go on from.
#[derive(Debug)]
pub struct Page {
    pub body: Vec<u8>,
    pub names: usize,
    pub next: String,
    /// Nothing stored is past `next` (as far as was known).
    pub end: bool,
}

impl Page {
    /// The body with its last line: `{"next":CURSOR,"end":BOOL}`.
    pub fn finish(mut self) -> Vec<u8> {
        let last = format!(
            "{{\"next\":{},\"end\":{}}}\n",
            serde_json::Value::from(self.next),
            self.end
        );
        self.body.extend_from_slice(last.as_bytes());
        self.body
    }
}

/// A record read and checked.
struct Checked {
    len: u64,
    crc: u32,
}

/// Reads the record at `at` whose end must be at most `end`, its name
/// into `name`, and checks its CRC (the value is read in [`CHUNK`]s and
/// not kept). `None`: no valid record there.
fn read_record(
    file: &File,
    at: u64,
    end: u64,
    name: &mut Vec<u8>,
    chunk: &mut [u8],
) -> io::Result<Option<Checked>> {
    let mut head = [0u8; RECORD_HEADER_LEN];
    if end.saturating_sub(at) < RECORD_HEADER_LEN as u64 {
        return Ok(None);
    }
    file.read_exact_at(&mut head, at)?;
    let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let (crc, name_len, value_len) = (word(0), word(4) as u64, word(8) as u64);
    let widest = Limits::WIDEST;
    if !(1..=widest.max_name_bytes as u64).contains(&name_len)
        || !(1..=widest.max_value_bytes as u64).contains(&value_len)
    {
        return Ok(None);
    }
    let len = RECORD_HEADER_LEN as u64 + name_len + value_len;
    if end - at < len {
        return Ok(None);
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head[4..]);
    name.resize(name_len as usize, 0);
    file.read_exact_at(name, at + RECORD_HEADER_LEN as u64)?;
    hasher.update(name);
    let mut left = value_len;
    let mut from = at + RECORD_HEADER_LEN as u64 + name_len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.read_exact_at(&mut chunk[..n], from)?;
        hasher.update(&chunk[..n]);
        left -= n as u64;
        from += n as u64;
    }
    Ok((hasher.finalize() == crc).then_some(Checked { len, crc }))
}

/// Reads one page of the data file from `cursor`, never past `durable`.
/// Blocking: run it off the runtime's worker threads.
pub fn read_file_page(
    file: &File,
    cursor: FileCursor,
    durable: u64,
    limit: usize,
    prefix: &[u8],
) -> Result<Page, ListError> {
    let io = |e: io::Error| ListError::Unavailable(format!("cannot read the data file: {e}"));
    let mut name = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    if cursor.offset > durable {
        return Err(ListError::Bad(format!(
            "cursor {cursor} is past the end of what is stored ({durable} bytes): \
             not a cursor of this data file (was it restored from an older backup?)"
        )));
    }
    let mut scanned = 0u64;
    if let Some((len, crc)) = cursor.prev {
        let start = cursor.offset - len;
        let checked = read_record(file, start, cursor.offset, &mut name, &mut chunk).map_err(io)?;
        if !checked.is_some_and(|c| c.len == len && c.crc == crc) {
            return Err(ListError::Bad(format!(
                "cursor {cursor} is not a record boundary of this data file \
                 (made up, or from another file?)"
            )));
        }
        scanned += len;
    }
    let mut page = Page {
        body: Vec::new(),
        names: 0,
        next: cursor.to_string(),
        end: false,
    };
    let mut at = cursor;
    while at.offset < durable
        && page.names < limit
        && scanned < SCAN_BYTES
        && page.body.len() < PAGE_BYTES
    {
        let Some(checked) =
            read_record(file, at.offset, durable, &mut name, &mut chunk).map_err(io)?
        else {
            log::error!(
                "data file: damaged record at byte offset {} (found by GET /names)",
                at.offset
            );
            return Err(ListError::Damaged(format!(
                "the data file is damaged at byte offset {}",
                at.offset
            )));
        };
        scanned += checked.len;
        at = FileCursor {
            offset: at.offset + checked.len,
            prev: Some((checked.len, checked.crc)),
        };
        if name.starts_with(prefix) {
            name_line(&name, &mut page.body);
            page.names += 1;
        }
    }
    page.next = at.to_string();
    page.end = at.offset >= durable;
    Ok(page)
}

/// Where names are listed from.
enum Source {
    /// `admin.list_names` is off.
    Off,
    Memory,
    File {
        file: Arc<File>,
        durable: watch::Receiver<u64>,
    },
    /// The data file could not be opened for reading.
    Broken(String),
    Postgres(Box<crate::ops::listing::postgres::PgLister>),
}

/// What `/names` answers from, with its bounds.
pub struct Lister {
    source: Source,
    waiting: Semaphore,
    reading: Arc<Semaphore>,
    max_prefix: usize,
}

/// The one-line answer when listing is off.
pub const OFF: &str = "listing names is off: set admin.list_names = true in the configuration \
     (docs/observability.md, \"Listing names\")";

impl Lister {
    /// Called once the store is open (so the data file exists and is
    /// this jnhpd's).
    pub fn new(
        config: &Config,
        metrics: &Metrics,
        credentials: Option<crate::storage::postgres::Credentials>,
    ) -> Lister {
        let source = if !config.admin.list_names {
            Source::Off
        } else if let Some(pg) = config.storage.postgres() {
            match crate::ops::listing::postgres::PgLister::new(pg, credentials.unwrap_or_default())
            {
                Ok(lister) => Source::Postgres(Box::new(lister)),
                Err(e) => Source::Broken(e.to_string()),
            }
        } else if let (Some(stats), Some(path)) = (&metrics.datafile, config.storage.data_file()) {
            match crate::base::files::open_regular(
                path,
                std::fs::OpenOptions::new().read(true),
                None,
            ) {
                Ok(file) => Source::File {
                    file: Arc::new(file),
                    durable: stats.durable.subscribe(),
                },
                Err(e) => {
                    log::error!("GET /names: cannot open the data file for reading: {e}");
                    Source::Broken(format!("cannot open the data file for reading: {e}"))
                }
            }
        } else {
            Source::Memory
        };
        Lister {
            source,
            waiting: Semaphore::new(MAX_WAITING),
            reading: Arc::new(Semaphore::new(MAX_READING)),
            max_prefix: config.server.max_name_bytes,
        }
    }

    /// Answers `GET /names?query`: status and body. `draining` ends long
    /// polls (a shutdown is not held up by them).
    pub async fn answer(&self, query: Option<&str>, draining: &Flag) -> (StatusCode, Vec<u8>) {
        if matches!(self.source, Source::Off) {
            return (StatusCode::FORBIDDEN, format!("{OFF}\n").into_bytes());
        }
        let result = match parse_query(query, self.max_prefix) {
            Ok(query) => self.list(query, draining).await,
            Err(e) => Err(ListError::Bad(e)),
        };
        match result {
            Ok(page) => (StatusCode::OK, page.finish()),
            Err(e) => (e.status(), format!("{e}\n").into_bytes()),
        }
    }

    async fn list(&self, query: Query, draining: &Flag) -> Result<Page, ListError> {
        match &self.source {
            Source::Off => Err(ListError::Conflict(OFF.into())),
            Source::Memory => Err(ListError::Conflict(
                "listing needs a data file or PostgreSQL: the memory store keeps no order \
                 of storing (set storage.path)"
                    .into(),
            )),
            Source::Broken(why) => Err(ListError::Unavailable(why.clone())),
            Source::Postgres(pg) => {
                if !query.wait.is_zero() {
                    return Err(ListError::Conflict(
                        "following (wait) needs a data file: PostgreSQL rows keep no order of \
                         storing, so a name stored later can sort before the cursor; page \
                         through in name order without wait"
                            .into(),
                    ));
                }
                let _turn = self.reading.acquire().await.map_err(closed)?;
                pg.page(&query).await
            }
            Source::File { file, durable } => {
                self.follow_file(file, durable.clone(), query, draining)
                    .await
            }
        }
    }

    /// Pages the data file; with `wait`, waits while nothing past the
    /// cursor is durable (or nothing matching the prefix was found).
    async fn follow_file(
        &self,
        file: &Arc<File>,
        mut durable: watch::Receiver<u64>,
        query: Query,
        draining: &Flag,
    ) -> Result<Page, ListError> {
        let mut cursor = FileCursor::parse(&query.after).map_err(ListError::Bad)?;
        let deadline = tokio::time::Instant::now() + query.wait;
        let prefix = Arc::new(query.prefix);
        let mut waiting = None;
        // Zero until the writer's first sync at start: wait for it a
        // little (a request may come first), never list unsynced bytes.
        if *durable.borrow() == 0 {
            let synced = durable.wait_for(|len| *len > 0);
            if tokio::time::timeout(FIRST_SYNC, synced).await.is_err() {
                return Err(ListError::Unavailable(
                    "the data file has not been synced since the start yet".into(),
                ));
            }
        }
        loop {
            let length = (*durable.borrow_and_update()).max(HEADER_LEN as u64);
            let page = {
                let _turn = self.reading.acquire().await.map_err(closed)?;
                let (file, prefix) = (file.clone(), prefix.clone());
                let limit = query.limit;
                tokio::task::spawn_blocking(move || {
                    read_file_page(&file, cursor, length, limit, &prefix)
                })
                .await
                .map_err(|e| ListError::Unavailable(e.to_string()))??
            };
            let now = tokio::time::Instant::now();
            if page.names > 0 || !page.end || now >= deadline {
                return Ok(page);
            }
            if draining.is_raised() {
                // A poll that waited gets its page (answered at SIGTERM);
                // a new one is refused: answered at once with an empty
                // page, a follower would ask again at once, and again, for
                // the whole drain.
                if waiting.is_some() {
                    return Ok(page);
                }
                return Err(ListError::Unavailable(
                    "jnhpd is shutting down: no long poll waits now".into(),
                ));
            }
            // At the end with nothing to show: wait for the writer's
            // next sync, the deadline, or the drain.
            if waiting.is_none() {
                waiting = Some(self.waiting.try_acquire().map_err(|_| {
                    ListError::Unavailable(format!(
                        "{MAX_WAITING} long polls wait already; try again shortly"
                    ))
                })?);
            }
            cursor = FileCursor::parse(&page.next).map_err(ListError::Bad)?;
            tokio::select! {
                changed = durable.changed() => {
                    if changed.is_err() {
                        return Ok(page);
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(page),
                () = draining.raised() => return Ok(page),
            }
        }
    }
}

fn closed(_: tokio::sync::AcquireError) -> ListError {
    ListError::Unavailable("shutting down".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_bad_ones_say_why() {
        let q = parse_query(
            Some("after=16-20-0000abcd&limit=5&prefix=a%FFb+&wait=3"),
            250,
        )
        .unwrap();
        assert_eq!(q.after, "16-20-0000abcd");
        assert_eq!(q.limit, 5);
        assert_eq!(q.prefix, b"a\xffb+");
        assert_eq!(q.wait, Duration::from_secs(3));
        let q = parse_query(None, 250).unwrap();
        assert_eq!((q.limit, q.wait), (DEFAULT_LIMIT, Duration::ZERO));
        for (bad, says) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=1000000000000", "limit"),
            ("limit=-1", "limit"),
            ("limit=", "limit"),
            ("wait=-1", "wait"),
            ("wait=61", "wait"),
            ("wait=1.5", "wait"),
            ("prefix=%zz", "percent"),
            ("prefix=%f", "percent"),
            ("limit=1&limit=2", "twice"),
            ("lmit=3", "unknown"),
        ] {
            let err = parse_query(Some(bad), 250).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(parse_query(Some(&format!("prefix={}", "a".repeat(251))), 250).is_err());
    }

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let c = FileCursor {
            offset: 4816,
            prev: Some((40, 0x9a3c01ff)),
        };
        assert_eq!(c.to_string(), "4816-40-9a3c01ff");
        assert_eq!(FileCursor::parse("4816-40-9a3c01ff"), Ok(c));
        assert_eq!(FileCursor::parse(""), Ok(FileCursor::START));
        assert_eq!(FileCursor::parse("0"), Ok(FileCursor::START));
        for junk in [
            "16",
            "x",
            "16-0-00000000",
            "20-10-00000000",
            "100-40",
            "100-40-zz",
            "100-40-1234567",
            "+100-40-00000000",
            "100-40-00000000-1",
            "99999999999999999999-40-00000000",
            "18446744073709551615-18446744073709551615-00000000",
        ] {
            assert!(FileCursor::parse(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn non_utf8_names_are_base64() {
        let mut out = Vec::new();
        name_line(b"caf\xc3\xa9 \"q\"", &mut out);
        name_line(b"\xff\x00", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"name\":\"café \\\"q\\\"\"}\n{\"name_base64\":\"/wA=\"}\n"
        );
    }

    fn file_of(records: &[(&[u8], &[u8])]) -> (tempfile::NamedTempFile, Vec<u64>) {
        let mut data = Vec::new();
        data.extend_from_slice(crate::storage::datafile::MAGIC);
        data.extend_from_slice(&1u32.to_le_bytes());
        data.extend_from_slice(&0u32.to_le_bytes());
        let mut ends = Vec::new();
        for (n, v) in records {
            crate::storage::datafile::encode_record(n, v, &mut data);
            ends.push(data.len() as u64);
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &data).unwrap();
        (file, ends)
    }

    fn names_of(page: &Page) -> Vec<String> {
        String::from_utf8(page.body.clone())
            .unwrap()
            .lines()
            .map(|l| l.to_string())
            .collect()
    }

    #[test]
    fn pages_follow_the_log_and_refuse_offsets_that_are_no_boundary() {
        let (tmp, ends) = file_of(&[(b"a1", b"v"), (b"b2", b"vv"), (b"a3", b"vvv")]);
        let file = File::open(tmp.path()).unwrap();
        let durable = *ends.last().unwrap();
        let page = read_file_page(&file, FileCursor::START, durable, 2, b"").unwrap();
        assert_eq!(names_of(&page), ["{\"name\":\"a1\"}", "{\"name\":\"b2\"}"]);
        assert!(!page.end);
        let next = FileCursor::parse(&page.next).unwrap();
        assert_eq!(next.offset, ends[1]);
        let page = read_file_page(&file, next, durable, 2, b"a").unwrap();
        assert_eq!(names_of(&page), ["{\"name\":\"a3\"}"]);
        assert!(page.end);
        // Not past what is durable: the last record is not listed.
        let page = read_file_page(&file, next, ends[1], 2, b"").unwrap();
        assert_eq!((page.names, page.end), (0, true));
        // Every offset that is no boundary, with any check, is refused.
        for offset in HEADER_LEN as u64 + 1..durable {
            for len in [1u64, 14, 15, 16] {
                let cursor = format!("{offset}-{len}-00000000");
                if let Ok(c) = FileCursor::parse(&cursor) {
                    assert!(
                        read_file_page(&file, c, durable, 10, b"").is_err(),
                        "{cursor}"
                    );
                }
            }
        }
        // The right offset with the wrong check is refused too.
        let mut wrong = next;
        wrong.prev = Some((next.prev.unwrap().0, next.prev.unwrap().1 ^ 1));
        assert!(matches!(
            read_file_page(&file, wrong, durable, 10, b""),
            Err(ListError::Bad(_))
        ));
        // Past the end.
        let past = FileCursor {
            offset: durable + 100,
            prev: next.prev,
        };
        assert!(matches!(
            read_file_page(&file, past, durable, 10, b""),
            Err(ListError::Bad(_))
        ));
    }
}
