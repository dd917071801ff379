//! `[log]`: where log lines go and how many.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use super::daemon::same_file;
use super::place::{Places, Source};
use super::raw::{RawLog, RawLogTarget};

/// `[log]`, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogConfig {
    /// Where logs go.
    pub target: LogTarget,
    /// The lowest level logged.
    pub level: LogLevel,
}

/// Where log lines go, with the settings of that target only.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum LogTarget {
    /// Standard error (`log.target = "stderr"`).
    #[default]
    Stderr,
    /// The system log (`log.target = "syslog"`).
    Syslog {
        /// A syslog facility a daemon may log to (`daemon`, `local0` ...).
        facility: String,
        /// `None`: the system's socket (`/dev/log`).
        socket: Option<PathBuf>,
    },
    /// Appended to `path` (`log.file`, relative to the config file's
    /// directory), reopened on SIGHUP (logrotate's way).
    File {
        /// The log file.
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
/// The lowest level logged (`log.level`).
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// What the server does, once per event (the default).
    #[default]
    Info,
    /// Per-request detail.
    Debug,
    /// Everything.
    Trace,
}
impl std::str::FromStr for LogLevel {
    type Err = String;

    /// The names the config file uses (`--log-level` takes the same).
    fn from_str(s: &str) -> Result<LogLevel, String> {
        LogLevel::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s))
            .map_err(|_| format!("{s:?} is not one of error, warn, info, debug, trace"))
    }
}

impl LogLevel {
    /// The `log` crate's filter for this level.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// syslog facilities a daemon may log to.
pub(super) const FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];

/// Resolves `[log]`. A log file must not be one of jnhpd's own files;
/// `places` gets the line of `log.syslog_socket` or `log.file`, for the
/// errors connecting or opening them finds at start.
pub(super) fn resolve(
    raw: RawLog,
    src: &Source,
    own_files: [(Option<&Path>, &str); 3],
    places: &mut Places,
) -> Result<LogConfig, ConfigError> {
    let RawLog {
        target,
        level,
        syslog_facility,
        syslog_socket,
        file,
    } = raw;
    let target = match target {
        RawLogTarget::Stderr => LogTarget::Stderr,
        RawLogTarget::Syslog => {
            places.set(
                "log.syslog_socket",
                src.key_line(&["syslog_socket", "target"], "[log]"),
            );
            LogTarget::Syslog {
                facility: syslog_facility,
                socket: (!syslog_socket.as_os_str().is_empty())
                    .then(|| src.base.join(&syslog_socket)),
            }
        }
        RawLogTarget::File => {
            let file_line = src.key_line(&["file", "target"], "[log]");
            if file.as_os_str().is_empty() {
                return Err(src.invalid(
                    file_line,
                    "log.file",
                    "log.target = \"file\" needs log.file, the file to append log lines to",
                ));
            }
            // Relative to the config file's directory, like every path in
            // it: `--daemon` changes directory, and SIGHUP reopens the file
            // by this path.
            let path = src.base.join(&file);
            // Log lines appended to one of jnhpd's own files would damage
            // it: the data file above all.
            let clash = own_files
                .into_iter()
                .find(|(other, _)| other.is_some_and(|other| same_file(&path, other)));
            if let Some((_, what)) = clash {
                return Err(src.invalid(
                    file_line,
                    "log.file",
                    format!(
                        "{} is {what}: log lines appended there would damage it",
                        path.display()
                    ),
                ));
            }
            places.set("log.file", file_line);
            LogTarget::File { path }
        }
    };
    Ok(LogConfig { target, level })
}
