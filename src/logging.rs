//! The `log` backend: stderr or syslog, one line per record.
//!
//! Everything logs through the `log` facade, so stderr and syslog get the
//! same lines and no call site knows which is in use. The level lives in the
//! facade's global max level, so a SIGHUP reload can change it at run time;
//! the sink is chosen once at start (a `log` logger cannot be replaced).

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

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
        timestamps: bool,
        priorities: bool,
    },
    Syslog(Mutex<syslog::Logger<LoggerBackend, Formatter3164>>),
}

struct Logger {
    sink: Sink,
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
            Sink::Stderr {
                timestamps,
                priorities,
            } => {
                let mut line = String::with_capacity(128);
                if *priorities {
                    line.push_str(match record.level() {
                        Level::Error => "<3>",
                        Level::Warn => "<4>",
                        Level::Info => "<6>",
                        Level::Debug | Level::Trace => "<7>",
                    });
                }
                if *timestamps {
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
                let message = record.args().to_string();
                // If syslog is gone there is nowhere left to report it.
                let _ = match record.level() {
                    Level::Error => logger.err(message),
                    Level::Warn => logger.warning(message),
                    Level::Info => logger.info(message),
                    Level::Debug | Level::Trace => logger.debug(message),
                };
            }
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
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
        Target::Stderr => {
            let journal = std::env::var_os("JOURNAL_STREAM").is_some();
            Sink::Stderr {
                timestamps: !journal,
                priorities: journal,
            }
        }
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
