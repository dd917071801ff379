//! The `log` backend: stderr, syslog or a file, one line per record.
//!
//! Everything logs through the `log` facade, so every sink gets the same
//! lines and no call site knows which is in use. The level lives in the
//! facade's global max level, so a SIGHUP reload can change it at run time;
//! the sink is chosen once at start (a `log` logger cannot be replaced),
//! but a file sink's file is reopened on SIGHUP ([`reopen`]) so logrotate
//! can rename it away.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Formatter3164, LoggerBackend};

/// Where log lines go.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Standard error (under systemd, the journal).
    Stderr,
    /// `socket` empty: the system's (`/dev/log`).
    Syslog {
        /// The syslog facility (`log.facility`).
        facility: &'a str,
        /// The syslog socket to send to.
        socket: &'a Path,
    },
    /// Appended to `path` (absolute: the config's paths are resolved).
    File {
        /// The file appended to (reopened on SIGHUP, for rotation).
        path: &'a Path,
    },
}

/// The log file and its path, shared by the logger and [`reopen`].
struct LogFile {
    path: PathBuf,
    /// Each line is one `write` under this lock, and [`reopen`] swaps the
    /// file under it too: a line goes whole to the old file or whole to
    /// the new one, never split between them.
    file: Mutex<File>,
}

/// The file sink's state, when `log.target = "file"`.
static LOG_FILE: OnceLock<Arc<LogFile>> = OnceLock::new();

/// Refuses an existing `path` that is not a regular file, saying what it
/// is: opening a FIFO without a reader for writing would fail with "No
/// such device or address", which names nothing an operator can act on.
/// (`open_regular` checks the opened file again.)
fn not_regular(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(format!(
            "cannot append to {}: it is {}, not a regular file",
            path.display(),
            crate::base::files::kind(meta.file_type())
        )),
        _ => Ok(()),
    }
}

/// Opens `path` for appending, creating it with mode 0640 (less the
/// umask). Only a regular file will do: a directory, a FIFO (which would
/// block every thread that logs once its reader stops) or a device is
/// refused.
pub(crate) fn open_log_file(path: &Path) -> Result<File, String> {
    not_regular(path)?;
    let mut options = OpenOptions::new();
    options.append(true).create(true).mode(0o640);
    crate::base::files::open_regular(path, &mut options, None)
        .map_err(|e| format!("cannot append to {}: {}", path.display(), e.detail()))
}

/// What `--check-config` can tell without creating anything: an existing
/// `path` must be a regular file jnhpd can append to; a missing one needs
/// a directory it can create files in.
pub fn check_log_file(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => {
            not_regular(path)?;
            let mut options = OpenOptions::new();
            options.append(true);
            crate::base::files::open_regular(path, &mut options, None)
                .map(drop)
                .map_err(|e| format!("cannot append to {}: {}", path.display(), e.detail()))
        }
        Err(_) => {
            let dir = path.parent().unwrap_or(Path::new("/"));
            let dir_ok = std::fs::metadata(dir).is_ok_and(|m| m.is_dir());
            let access = nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK;
            if dir_ok && nix::unistd::access(dir, access).is_ok() {
                Ok(())
            } else {
                Err(format!(
                    "cannot create {}: {} is not a directory jnhpd can create files in",
                    path.display(),
                    dir.display()
                ))
            }
        }
    }
}

/// SIGHUP: opens the log file's path again and writes there from now on
/// (logrotate renames the file, then sends SIGHUP). If it cannot be
/// opened, the file opened before keeps every line and the error is
/// logged there. Does nothing with other targets.
pub fn reopen() {
    let Some(log_file) = LOG_FILE.get() else {
        return;
    };
    match open_log_file(&log_file.path) {
        Ok(new) => {
            *log_file.file.lock().unwrap_or_else(|e| e.into_inner()) = new;
            log::info!("SIGHUP: log file {} reopened", log_file.path.display());
        }
        Err(err) => {
            log::error!("SIGHUP: {err}; still writing to the log file opened before (log.file)")
        }
    }
}

/// Appends `line` to the log file, whole or not at all. A full disk loses
/// the line, as on stderr: logging never stops the service. But a write
/// on a full file system is often short (the part that fit in the file's
/// last block), the rest failing: that part is cut off again, else the
/// next line written once there is room would be glued to it. Whether the
/// line was written whole.
pub(crate) fn append_whole(file: &mut File, line: &[u8]) -> bool {
    use std::io::{Seek, SeekFrom};
    let mut written = 0;
    while written < line.len() {
        match file.write(&line[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if written > 0 && written < line.len() {
        // Only this process appends, under the lock held here: the end of
        // the file is the end of this line's part.
        if let Ok(end) = file.seek(SeekFrom::End(0)) {
            let _ = file.set_len(end.saturating_sub(written as u64));
        }
    }
    written == line.len()
}

enum Sink {
    /// Under systemd (`JOURNAL_STREAM` set) the journal stamps each line
    /// itself, and reads a `<N>` prefix as the line's priority
    /// (sd-daemon(3)), so `journalctl -p err` finds jnhpd's errors.
    Stderr {
        journal: bool,
    },
    Syslog(Mutex<syslog::Logger<LoggerBackend, Formatter3164>>),
    File(Arc<LogFile>),
}

/// A stderr or file line: `<N>` under the journal, else a timestamp; then
/// `jnhpd[pid]: LEVEL: message` and the line end.
fn line_of(record: &Record, journal: bool) -> String {
    let mut line = String::with_capacity(128);
    if journal {
        line.push_str(match record.level() {
            Level::Error => "<3>",
            Level::Warn => "<4>",
            Level::Info => "<6>",
            Level::Debug | Level::Trace => "<7>",
        });
    } else {
        line.push_str(&humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
        line.push(' ');
    }
    line.push_str(&format!(
        "jnhpd[{}]: {}: {}\n",
        std::process::id(),
        record.level(),
        record.args()
    ));
    line
}

/// The most a log line waits for a reader of stderr (a pipe) to make
/// room: then it is dropped, and the lines after it do not wait until
/// the pipe takes lines again (see `base::stderr`).
const STDERR_WAIT: Duration = Duration::from_secs(1);

struct Logger {
    sink: Sink,
}

/// Log lines that could not be sent to syslog (its socket full: a syslog
/// daemon hung, or slower than jnhpd), since start. Logging never waits:
/// a thread that logs may be serving clients or handling SIGTERM.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines dropped since the last "log lines dropped" line reached syslog.
static DROPPED_UNREPORTED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped since start because the syslog socket was full
/// (`jnhpd_log_lines_dropped_total`).
pub(crate) fn dropped() -> u64 {
    DROPPED.load(Relaxed)
}

/// Sends one line to syslog at `level`, without waiting.
fn send_syslog(
    logger: &mut syslog::Logger<LoggerBackend, Formatter3164>,
    level: Level,
    message: String,
) -> bool {
    match level {
        Level::Error => logger.err(message),
        Level::Warn => logger.warning(message),
        Level::Info => logger.info(message),
        Level::Debug | Level::Trace => logger.debug(message),
    }
    .is_ok()
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match &self.sink {
            Sink::Stderr { journal } => {
                let line = line_of(record, *journal);
                // One write per line, so lines from several threads never
                // interleave; never waiting long on a reader that stopped
                // (a line it does not take within the wait is dropped).
                if !crate::base::stderr::write(line.as_bytes(), STDERR_WAIT) {
                    DROPPED.fetch_add(1, Relaxed);
                }
            }
            Sink::File(log_file) => {
                let line = line_of(record, false);
                let mut file = log_file.file.lock().unwrap_or_else(|e| e.into_inner());
                append_whole(&mut file, line.as_bytes());
            }
            Sink::Syslog(logger) => {
                // A poisoned lock only means a panic while logging; the
                // socket is still usable.
                let mut logger = logger.lock().unwrap_or_else(|e| e.into_inner());
                // Lines dropped earlier are reported first, once syslog
                // takes lines again.
                let unreported = DROPPED_UNREPORTED.load(Relaxed);
                if unreported > 0
                    && send_syslog(
                        &mut logger,
                        Level::Warn,
                        format!("{unreported} log lines dropped (the syslog socket was full)"),
                    )
                {
                    DROPPED_UNREPORTED.fetch_sub(unreported, Relaxed);
                }
                // The socket does not block: a line syslog cannot take now
                // (or if syslog is gone) is counted and dropped.
                if !send_syslog(&mut logger, record.level(), record.args().to_string()) {
                    DROPPED.fetch_add(1, Relaxed);
                    DROPPED_UNREPORTED.fetch_add(1, Relaxed);
                }
            }
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Whether stderr goes to the journal: systemd sets `JOURNAL_STREAM` for a
/// service whose output it reads.
fn under_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Writes an error found before the logger is installed (a config refused,
/// a port taken, syslog unreachable) to stderr as `jnhpd: message`. Under
/// the journal (`JOURNAL_STREAM` set) it begins with the `<3>` priority, as
/// the logger's error lines do, so `journalctl -p err` shows why a start
/// failed.
pub fn early_error(message: &str) {
    let priority = if under_journal() { "<3>" } else { "" };
    let line = format!("{priority}jnhpd: {message}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Connects to syslog as [`init`] would, and lets go again: the config
/// check refuses a socket the start would refuse.
pub fn probe_syslog(facility: &str, socket: &Path) -> Result<(), String> {
    syslog_logger(facility, socket).map(drop)
}

fn syslog_logger(
    facility: &str,
    socket: &Path,
) -> Result<syslog::Logger<LoggerBackend, Formatter3164>, String> {
    let formatter = Formatter3164 {
        facility: facility
            .parse()
            .map_err(|()| format!("unknown syslog facility {facility:?}"))?,
        hostname: None,
        process: "jnhpd".into(),
        pid: std::process::id(),
    };
    let logger = if socket.as_os_str().is_empty() {
        syslog::unix(formatter)
    } else {
        syslog::unix_custom(formatter, socket)
    };
    let logger = logger.and_then(|logger| {
        // Never wait on a syslog daemon that does not read: a full socket
        // drops the line (counted) rather than freezing the thread.
        match &logger.backend {
            LoggerBackend::Unix(socket) => socket.set_nonblocking(true),
            LoggerBackend::UnixStream(socket) => socket.get_ref().set_nonblocking(true),
            LoggerBackend::Udp(socket, _) => socket.set_nonblocking(true),
            LoggerBackend::Tcp(socket) => socket.get_ref().set_nonblocking(true),
        }
        .map_err(|e| syslog::Error::Initialization(Box::new(e)))?;
        Ok(logger)
    });
    logger.map_err(|e| {
        let socket = if socket.as_os_str().is_empty() {
            "the system's syslog socket".to_string()
        } else {
            socket.display().to_string()
        };
        format!("cannot log to {socket}: {e}")
    })
}

/// Installs the logger. Call once, in the process that will run (after
/// daemonizing: syslog lines carry the pid).
pub fn init(target: Target, level: LevelFilter) -> Result<(), String> {
    let sink = match target {
        Target::Stderr => Sink::Stderr {
            journal: under_journal(),
        },
        Target::Syslog { facility, socket } => {
            Sink::Syslog(Mutex::new(syslog_logger(facility, socket)?))
        }
        Target::File { path } => {
            let log_file = Arc::new(LogFile {
                path: path.to_path_buf(),
                file: Mutex::new(open_log_file(path)?),
            });
            // Set once: init runs once per process.
            let _ = LOG_FILE.set(log_file.clone());
            Sink::File(log_file)
        }
    };
    // Fails only if a logger is already installed: keep that one.
    let _ = log::set_boxed_logger(Box::new(Logger { sink }));
    set_level(level);
    Ok(())
}

/// Changes the level of every later record.
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}
