//! The decision log (`[validation] decision_log`): one JSON line per
//! validated STORE, saying who was refused (or would have been) and why.
//!
//! A STORE never waits for it: lines go through a bounded channel
//! (`decision_log_buffer`) to a thread of their own, and a line that does
//! not fit is dropped and counted (`jnhpd_decision_log_lines_total{result=
//! "dropped"}`). The writer is a thread, not a task, because the file may
//! block (a FIFO whose reader stopped, a hung NFS mount): then only the
//! writer waits, and STOREs go on, losing lines, not time.
//!
//! The value itself is not logged unless `decision_log_values = true`:
//! its length and SHA-256 digest are. Names, values and peers are written
//! as JSON strings (every control character escaped as `\uXXXX`: C0 by
//! serde_json, then DEL, C1 and U+2028/U+2029 by `json_line`); bytes that
//! are not UTF-8 are replaced by U+FFFD there, and the exact bytes given
//! in hex beside (`name_hex`, `value_hex`), so every line is valid JSON on
//! one line and nothing is lost.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Peer;
use super::spec::{DecisionLogTarget, Mode, ValidationSpec};
use crate::metrics::Metrics;

/// What one validator made of a STORE, for the decision log.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Step {
    pub validator: String,
    pub mode: &'static str,
    /// `allow`, `deny`, `cached_deny` (from the deny cache, not run) or
    /// `failure`.
    pub verdict: &'static str,
    /// Why it failed (`failure` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
    /// Time in the validator (0 for a cached denial).
    pub duration_us: u64,
}

impl Step {
    pub(crate) fn new(
        validator: &str,
        mode: Mode,
        verdict: &'static str,
        cause: Option<&'static str>,
        took: Duration,
    ) -> Step {
        Step {
            validator: validator.to_string(),
            mode: mode.label(),
            verdict,
            cause,
            duration_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        }
    }
}

/// One line of the log.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    name: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_hex: Option<String>,
    value_bytes: usize,
    value_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_cert_subject: Option<&'a str>,
    validators: &'a [Step],
    /// `allowed` or `refused`: what the chain decided.
    outcome: &'static str,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `bytes` as a JSON string, and in hex too when they are not UTF-8.
fn text(bytes: &[u8]) -> (std::borrow::Cow<'_, str>, Option<String>) {
    let lossy = String::from_utf8_lossy(bytes);
    let exact = matches!(lossy, std::borrow::Cow::Borrowed(_));
    (lossy, (!exact).then(|| hex(bytes)))
}

/// `line` as one line of JSON, `\n` ended, with every character a
/// terminal or a line reader might act on escaped. serde_json escapes only
/// C0 controls; DEL, the C1 controls (U+0080 to U+009F, U+0085 NEL among
/// them: a C1 CSI drives terminals under `tail -f`) and U+2028/U+2029
/// (line ends to some readers) are escaped here as `\uXXXX`. Outside
/// strings serde_json writes only ASCII punctuation, digits and literals,
/// so every such character met is inside a string, where the escape means
/// the same character: the JSON is unchanged.
fn json_line(line: &Line) -> Option<String> {
    // Strings and numbers only: serializing cannot fail.
    let raw = serde_json::to_string(line).ok()?;
    let mut text = String::with_capacity(raw.len() + 1);
    for c in raw.chars() {
        if c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) || c == '\u{2028}' || c == '\u{2029}'
        {
            use std::fmt::Write;
            // Writing to a String cannot fail.
            let _ = write!(text, "\\u{:04x}", c as u32);
        } else {
            text.push(c);
        }
    }
    text.push('\n');
    Some(text)
}

enum Message {
    Line(String),
    Reopen,
    /// Write what waits, then say so.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The most bytes of lines the decision log holds waiting (in the channel
/// and in the writer's batch), whatever `decision_log_buffer` says: that
/// counts lines, and with `decision_log_values` one line may be hundreds
/// of KiB (a 64 KiB value of control bytes, escaped and in hex), so a
/// writer that stopped (a reader of stderr that stopped) would otherwise
/// hold GBs. A line that does not fit is dropped and counted as dropped;
/// one line is always let in when nothing waits, so a line larger than
/// this is still written. Documented in docs/configuration.md.
pub(crate) const BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// The decision log's sending end, shared by every chain.
#[derive(Debug)]
pub struct DecisionLog {
    lines: SyncSender<Message>,
    /// Bytes of lines sent and not yet written (see [`BUFFER_BYTES`]).
    queued: Arc<AtomicUsize>,
    log_values: bool,
    metrics: Arc<Metrics>,
}

/// A decision log that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OpenError(String);

impl DecisionLog {
    /// Starts the writer of `spec.decision_log` (`None` when it is off).
    /// `own_files` are jnhpd's own files (config, data file, pidfile, log
    /// file, denylists): a SIGHUP never reopens the log onto one of them.
    pub fn start(
        spec: &ValidationSpec,
        metrics: Arc<Metrics>,
        own_files: Vec<PathBuf>,
    ) -> Result<Option<Arc<DecisionLog>>, OpenError> {
        let sink = match &spec.decision_log {
            DecisionLogTarget::Off => return Ok(None),
            DecisionLogTarget::Stderr => Sink::Stderr,
            DecisionLogTarget::File(path) => Sink::File {
                file: crate::base::logging::open_log_file(path).map_err(OpenError)?,
                path: path.clone(),
                own: OwnFiles::capture(own_files),
            },
        };
        let (lines, received) = sync_channel(spec.log_buffer);
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            sink,
            metrics: metrics.clone(),
            failing: false,
            queued: queued.clone(),
        };
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || writer.run(received))
            .map_err(|e| OpenError(format!("cannot start the decision log's writer: {e}")))?;
        Ok(Some(Arc::new(DecisionLog {
            lines,
            queued,
            log_values: spec.log_values,
            metrics,
        })))
    }

    /// SIGHUP: the file is opened again by its path (logrotate's way).
    /// Asked through the channel, after the lines already waiting; if the
    /// channel is full the writer is behind and the reopen waits for the
    /// next SIGHUP (logged).
    pub fn reopen(&self) {
        if self.lines.try_send(Message::Reopen).is_err() {
            log::warn!(
                "SIGHUP: the decision log's writer is behind (its buffer is full); \
                 validation.decision_log is not reopened this time"
            );
        }
    }

    /// Waits (blocking, up to `within`) until the lines logged so far
    /// are written: at shutdown, so that a SIGTERM right after a STORE
    /// does not lose its line. Whether they were.
    pub fn flush(&self, within: Duration) -> bool {
        let until = std::time::Instant::now() + within;
        let (done, written) = std::sync::mpsc::channel();
        let mut message = Message::Flush(done);
        loop {
            match self.lines.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if std::time::Instant::now() < until => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        written.recv_timeout(left).is_ok()
    }

    /// Logs a validated STORE. Never waits: a line that does not fit is
    /// counted as dropped.
    pub(crate) fn record(
        &self,
        name: &[u8],
        value: &[u8],
        peer: &Peer,
        steps: &[Step],
        allowed: bool,
    ) {
        let (name, name_hex) = text(name);
        let (value_text, value_hex) = match self.log_values {
            true => {
                let (v, h) = text(value);
                (Some(v), h)
            }
            false => (None, None),
        };
        let line = Line {
            time: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            name,
            name_hex,
            value_bytes: value.len(),
            value_sha256: hex(&Sha256::digest(value)),
            value: value_text,
            value_hex,
            peer: peer.addr.map(|a| a.to_string()),
            peer_cert_subject: peer.cert_subject.as_deref(),
            validators: steps,
            outcome: if allowed { "allowed" } else { "refused" },
        };
        let Some(text) = json_line(&line) else {
            return;
        };
        let len = text.len();
        if !reserve(&self.queued, len, BUFFER_BYTES) {
            self.metrics.decision_log.dropped.fetch_add(1, Relaxed);
            return;
        }
        match self.lines.try_send(Message::Line(text)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(len, Relaxed);
                self.metrics.decision_log.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Counts `len` more bytes in `queued` if they fit in `budget`, or if
/// nothing is queued (so that one line larger than the budget still
/// goes). Whether they were counted.
fn reserve(queued: &AtomicUsize, len: usize, budget: usize) -> bool {
    let mut now = queued.load(Relaxed);
    loop {
        if now != 0 && now.saturating_add(len) > budget {
            return false;
        }
        match queued.compare_exchange_weak(now, now + len, Relaxed, Relaxed) {
            Ok(_) => return true,
            Err(actual) => now = actual,
        }
    }
}

/// The writer's rest after each write: at most this much delay in the
/// log, and `decision_log_buffer` lines must hold what arrives meanwhile.
const PAUSE: Duration = Duration::from_millis(10);

/// The most a batch of lines waits for a reader of stderr to make room
/// (`decision_log = "stderr"`): then they are counted as failed, and the
/// writer does not hold stderr (shared with the log) any longer.
const STDERR_WAIT: Duration = Duration::from_secs(1);

/// Lines are gathered into writes of about this many bytes.
const BATCH_BYTES: usize = 64 * 1024;

enum Sink {
    Stderr,
    File {
        path: PathBuf,
        file: File,
        own: OwnFiles,
    },
}

/// jnhpd's own files, as the decision log must never be reopened onto
/// them: the path swapped for a link to the data file between two
/// SIGHUPs would otherwise get JSON lines appended to the data file
/// (the config check runs after the reopen, and only on the new config).
/// Each is known by its (device, inode) at start, so a file later moved
/// away or replaced is still recognised, and by its path, looked up again
/// at each reopen, for a file created after start (a data file, a
/// pidfile) or replaced since.
struct OwnFiles {
    paths: Vec<PathBuf>,
    at_start: Vec<(u64, u64)>,
}

impl OwnFiles {
    fn capture(paths: Vec<PathBuf>) -> OwnFiles {
        let at_start = paths.iter().filter_map(|p| identity(p)).collect();
        OwnFiles { paths, at_start }
    }

    /// Whether the file whose (device, inode) is `id` is one of them.
    fn holds(&self, id: (u64, u64)) -> bool {
        self.at_start.contains(&id) || self.paths.iter().any(|p| identity(p) == Some(id))
    }
}

/// A file's (device, inode), following links; `None` if it is missing.
fn identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

struct Writer {
    sink: Sink,
    metrics: Arc<Metrics>,
    /// Whether the last write failed (a failure is logged once per run of
    /// failures, not once per line).
    failing: bool,
    /// Bytes of lines sent and not yet written: lowered as they are.
    queued: Arc<AtomicUsize>,
}

impl Writer {
    /// Writes the lines waiting together (up to [`BATCH_BYTES`]), one
    /// system call for many: under load the writer keeps up with far
    /// less CPU than a write per line.
    fn run(mut self, received: Receiver<Message>) {
        let mut batch = Vec::with_capacity(BATCH_BYTES);
        while let Ok(mut message) = received.recv() {
            let mut lines = 0u64;
            let drained;
            loop {
                match message {
                    Message::Line(line) => {
                        batch.extend_from_slice(line.as_bytes());
                        lines += 1;
                    }
                    Message::Reopen => {
                        self.write_out(&mut batch, lines);
                        lines = 0;
                        self.reopen();
                    }
                    Message::Flush(done) => {
                        self.write_out(&mut batch, lines);
                        lines = 0;
                        let _ = done.send(());
                    }
                }
                if batch.len() >= BATCH_BYTES {
                    drained = false;
                    break;
                }
                match received.try_recv() {
                    Ok(next) => message = next,
                    Err(_) => {
                        drained = true;
                        break;
                    }
                }
            }
            self.write_out(&mut batch, lines);
            if batch.capacity() > 4 * BATCH_BYTES {
                batch.shrink_to(BATCH_BYTES);
            }
            // Lines arriving meanwhile wait in the channel: under load
            // the writer then wakes once per pause, not once per line
            // (each wake a context switch on the cores serving STOREs).
            if drained {
                std::thread::sleep(PAUSE);
            }
        }
    }

    /// Writes the batch of `lines` lines and empties it: its bytes no
    /// longer count against [`BUFFER_BYTES`].
    fn write_out(&mut self, batch: &mut Vec<u8>, lines: u64) {
        self.write(batch, lines);
        self.queued.fetch_sub(batch.len(), Relaxed);
        batch.clear();
    }

    /// Writes `lines` lines, whole or not at all.
    fn write(&mut self, bytes: &[u8], lines: u64) {
        if lines == 0 {
            return;
        }
        let whole = match &mut self.sink {
            // Shared with the log's lines: never held long by a reader
            // that stopped (see `base::stderr`).
            Sink::Stderr => crate::base::stderr::write(bytes, STDERR_WAIT),
            Sink::File { file, .. } => crate::base::logging::append_whole(file, bytes),
        };
        let stats = &self.metrics.decision_log;
        if whole {
            stats.written.fetch_add(lines, Relaxed);
            if std::mem::take(&mut self.failing) {
                log::info!("decision log: writing again");
            }
        } else {
            stats.failed.fetch_add(lines, Relaxed);
            if !std::mem::replace(&mut self.failing, true) {
                log::error!(
                    "decision log: a line could not be written (disk full? a reader of stderr that stopped?); lines are lost \
                     until writing works again (jnhpd_decision_log_lines_total{{result=\"failed\"}})"
                );
            }
        }
    }

    fn reopen(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Sink::File { path, file, own } = &mut self.sink else {
            return;
        };
        match crate::base::logging::open_log_file(path) {
            // What was opened, not what the path names now: no race.
            Ok(new) if new.metadata().is_ok_and(|m| own.holds((m.dev(), m.ino()))) => {
                log::error!(
                    "SIGHUP: the decision log {} is now one of jnhpd's own files (the config, \
                     the data file, the pidfile, the log file or a denylist): not reopened; \
                     still writing to the decision log opened before (validation.decision_log)",
                    path.display()
                );
            }
            Ok(new) => {
                *file = new;
                log::info!("SIGHUP: decision log {} reopened", path.display());
            }
            Err(err) => log::error!(
                "SIGHUP: {err}; still writing to the decision log opened before \
                 (validation.decision_log)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_line_of_json_whatever_the_bytes() {
        let (name, name_hex) = text(b"a\r\n\x1b[31m\0\xff");
        assert_eq!(name_hex.as_deref(), Some("610d0a1b5b33316d00ff"));
        let steps = [Step::new("v", Mode::Dryrun, "deny", None, Duration::ZERO)];
        let line = Line {
            time: "t".into(),
            name,
            name_hex,
            value_bytes: 0,
            value_sha256: hex(&Sha256::digest(b"")),
            value: None,
            value_hex: None,
            peer: None,
            peer_cert_subject: Some("CN=a\nb"),
            validators: &steps,
            outcome: "allowed",
        };
        let text = serde_json::to_string(&line).unwrap();
        assert!(!text.contains('\n') && !text.contains('\r') && !text.contains('\x1b'));
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["name"], "a\r\n\x1b[31m\0\u{fffd}");
        assert_eq!(
            back["value_sha256"],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(back["validators"][0]["mode"], "dryrun");
        assert!(back.get("value").is_none());
    }

    #[test]
    fn own_files_are_known_by_inode_at_start_and_by_path_later() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let later = dir.path().join("pidfile");
        std::fs::write(&data, "d").unwrap();
        let own = OwnFiles::capture(vec![data.clone(), later.clone()]);
        let id = |p: &std::path::Path| identity(p).unwrap();
        let data_id = id(&data);
        assert!(own.holds(data_id));
        // Moved away: still known by its inode at start.
        let moved = dir.path().join("moved");
        std::fs::rename(&data, &moved).unwrap();
        assert!(own.holds(id(&moved)));
        // Created after start: known by its path.
        std::fs::write(&later, "1").unwrap();
        assert!(own.holds(id(&later)));
        let other = dir.path().join("other");
        std::fs::write(&other, "o").unwrap();
        assert!(!own.holds(id(&other)));
    }

    #[test]
    fn the_byte_budget_lets_one_line_in_when_empty_and_no_more_than_it_holds() {
        let queued = AtomicUsize::new(0);
        assert!(
            reserve(&queued, 150, 100),
            "one line larger than the budget"
        );
        assert!(!reserve(&queued, 1, 100));
        queued.fetch_sub(150, Relaxed);
        assert!(reserve(&queued, 60, 100));
        assert!(reserve(&queued, 40, 100));
        assert!(!reserve(&queued, 1, 100));
        assert_eq!(queued.load(Relaxed), 100);
    }

    #[test]
    fn del_c1_and_unicode_line_ends_are_escaped() {
        let odd = "a\u{7f}\u{80}\u{85}\u{9b}\u{9f}\u{2028}\u{2029}\u{a0}é\"\\";
        let steps = [];
        let line = Line {
            time: "t".into(),
            name: odd.into(),
            name_hex: None,
            value_bytes: 0,
            value_sha256: String::new(),
            value: Some(odd.into()),
            value_hex: None,
            peer: None,
            peer_cert_subject: Some(odd),
            validators: &steps,
            outcome: "allowed",
        };
        let text = json_line(&line).unwrap();
        assert!(text.ends_with('\n'));
        let body = &text[..text.len() - 1];
        assert!(
            !body
                .chars()
                .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'),
            "{body:?}"
        );
        assert!(
            body.contains("\\u009b") && body.contains("\\u2028"),
            "{body:?}"
        );
        assert!(
            body.contains("\u{a0}é"),
            "printable characters stay as they are"
        );
        let back: serde_json::Value = serde_json::from_str(body).unwrap();
        for key in ["name", "value", "peer_cert_subject"] {
            assert_eq!(back[key], odd, "{key}");
        }
    }
}
