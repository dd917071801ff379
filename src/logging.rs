//! The `log` backend: stderr or syslog, one line per record.
//!
//! Everything logs through the `log` facade, so stderr and syslog get the
//! same lines and no call site knows which is in use. The level lives in the
//! facade's global max level, so a SIGHUP reload can change it at run time;
//! the sink is chosen once at start (a `log` logger cannot be replaced).

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Formatter3164, LoggerBackend};

/// Where log lines go.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Stderr,
    /// `socket` empty: the system's (`/dev/log`).
    Syslog {
        facility: &'a str,
        socket: &'a Path,
    },
}

enum Sink {
    /// Under systemd (`JOURNAL_STREAM` set) the journal stamps each line
    /// itself, and reads a `<N>` prefix as the line's priority
    /// (sd-daemon(3)), so `journalctl -p err` finds jnhpd's errors.
    Stderr {
        journal: bool,
    },
    Syslog(Mutex<syslog::Logger<LoggerBackend, Formatter3164>>),
}

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
pub fn dropped() -> u64 {
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
                let mut line = String::with_capacity(128);
                if *journal {
                    line.push_str(match record.level() {
                        Level::Error => "<3>",
                        Level::Warn => "<4>",
                        Level::Info => "<6>",
                        Level::Debug | Level::Trace => "<7>",
                    });
                }
                if !*journal {
                    line.push_str(
                        &humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                            .to_string(),
                    );
                    line.push(' ');
                }
                line.push_str(&format!(
                    "jnhpd[{}]: {}: {}\n",
                    std::process::id(),
                    record.level(),
                    record.args()
                ));
                // One write per line, so lines from several threads never
                // interleave.
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
