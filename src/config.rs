//! Loading and checking the TOML configuration (`../shared/spec/config.md`).
//!
//! jnhpd never starts on a config it did not fully understand: unknown keys,
//! wrong types and values outside their allowed set are all errors naming the
//! file, the line and the key. Every check that can be expressed while
//! deserializing is done there, so that toml's span (for the line) and
//! serde_path_to_error's path (for the key) come for free.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};
use thiserror::Error;

use crate::protocol::Limits;

/// The built-in listen address, used when neither the file nor `--listen`
/// gives one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8111";

/// A configuration that could not be loaded. `Display` gives the whole
/// message (`/etc/jnhp.toml:12: server.max_connections: ...`).
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {key}{message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        /// The dotted key (`server.listen`), with ": " appended when known.
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub daemon: DaemonConfig,
    pub log: LogConfig,
    /// `[[validator]]` tables. Not supported yet: any entry is refused.
    #[serde(rename = "validator", deserialize_with = "unsupported_validators")]
    pub validators: Vec<toml::Table>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    #[serde(deserialize_with = "listen_addrs")]
    pub listen: Vec<SocketAddr>,
    #[serde(deserialize_with = "at_least_one")]
    pub max_connections: usize,
    pub idle_timeout_secs: u64,
    #[serde(deserialize_with = "name_limit")]
    pub max_name_bytes: usize,
    #[serde(deserialize_with = "value_limit")]
    pub max_value_bytes: usize,
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![DEFAULT_LISTEN.parse().expect("the default address parses")],
            max_connections: 10_000,
            idle_timeout_secs: 0,
            max_name_bytes: 250,
            max_value_bytes: 65_536,
            shutdown_grace_secs: 10,
        }
    }
}

impl ServerConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            max_name_bytes: self.max_name_bytes,
            max_value_bytes: self.max_value_bytes,
        }
    }

    /// `None` when connections never time out.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0).then(|| Duration::from_secs(self.idle_timeout_secs))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    #[default]
    Always,
    Everysec,
    Never,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Empty: memory only. A data file is not supported yet.
    #[serde(deserialize_with = "unsupported_path")]
    pub path: PathBuf,
    pub fsync: Fsync,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    #[serde(deserialize_with = "unsupported_true")]
    pub daemonize: bool,
    #[serde(deserialize_with = "unsupported_path")]
    pub pidfile: PathBuf,
    #[serde(deserialize_with = "unsupported_string")]
    pub user: String,
    #[serde(deserialize_with = "unsupported_string")]
    pub group: String,
    /// Applies only when daemonized.
    #[serde(deserialize_with = "octal_umask")]
    pub umask: u32,
    /// Applies only when daemonized.
    pub workdir: PathBuf,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            daemonize: false,
            pidfile: PathBuf::new(),
            user: String::new(),
            group: String::new(),
            umask: 0o027,
            workdir: PathBuf::from("/"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    #[default]
    Stderr,
    Syslog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
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
const FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    #[serde(deserialize_with = "unsupported_syslog")]
    pub target: LogTarget,
    pub level: LogLevel,
    #[serde(deserialize_with = "facility")]
    pub syslog_facility: String,
    pub syslog_socket: PathBuf,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            target: LogTarget::Stderr,
            level: LogLevel::Info,
            syslog_facility: "daemon".into(),
            syslog_socket: PathBuf::new(),
        }
    }
}

impl Config {
    /// Parses a config file's text. `path` is used in error messages and to
    /// resolve relative paths (relative to the file's own directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |err: toml::de::Error, key: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: err
                .span()
                .map(|span| line_of(text, span.start))
                .unwrap_or(1),
            key,
            message: err.message().trim_end().to_string(),
        };
        let deserializer =
            toml::de::Deserializer::parse(text).map_err(|e| invalid(e, String::new()))?;
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." {
                String::new()
            } else {
                format!("{key}: ")
            };
            invalid(e.into_inner(), key)
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.daemon.workdir = base.join(&config.daemon.workdir);
        if !config.log.syslog_socket.as_os_str().is_empty() {
            config.log.syslog_socket = base.join(&config.log.syslog_socket);
        }
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }
}

/// 1-based line number of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn listen_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    if raw.is_empty() {
        return Err(D::Error::custom("at least one address is needed"));
    }
    raw.iter()
        .map(|s| {
            s.parse().map_err(|_| {
                D::Error::custom(format!(
                    "{s:?} is not an IP address and port such as \"127.0.0.1:8111\" or \"[::1]:8111\""
                ))
            })
        })
        .collect()
}

fn bounded<'de, D: Deserializer<'de>>(d: D, min: usize, max: usize) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n < min || n > max {
        return Err(D::Error::custom(format!("{n} is outside {min}..={max}")));
    }
    Ok(n)
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    bounded(d, 1, usize::MAX)
}

/// Names are bounded so that a request line stays small.
fn name_limit<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    bounded(d, 1, 65_536)
}

/// Values are bounded so that one connection's line buffer stays bounded.
fn value_limit<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    bounded(d, 1, 16 << 20)
}

fn octal_umask<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    match u32::from_str_radix(&s, 8) {
        Ok(mask) if mask <= 0o777 && !s.is_empty() => Ok(mask),
        _ => Err(D::Error::custom(format!(
            "{s:?} is not an octal umask such as \"0027\""
        ))),
    }
}

fn facility<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if FACILITIES.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(D::Error::custom(format!(
            "unknown syslog facility {s:?}, expected one of {}",
            FACILITIES.join(", ")
        )))
    }
}

// Keys whose behaviour a later issue builds are refused when set to anything
// but their default, rather than accepted and silently ignored.

fn not_supported<E: serde::de::Error>(what: &str) -> E {
    E::custom(format!("not supported yet: {what}"))
}

fn unsupported_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let p = PathBuf::deserialize(d)?;
    if p.as_os_str().is_empty() {
        Ok(p)
    } else {
        Err(not_supported("a non-empty path here"))
    }
}

fn unsupported_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        Ok(s)
    } else {
        Err(not_supported("privilege drop"))
    }
}

fn unsupported_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match bool::deserialize(d)? {
        false => Ok(false),
        true => Err(not_supported("daemonize = true")),
    }
}

fn unsupported_syslog<'de, D: Deserializer<'de>>(d: D) -> Result<LogTarget, D::Error> {
    match LogTarget::deserialize(d)? {
        LogTarget::Stderr => Ok(LogTarget::Stderr),
        LogTarget::Syslog => Err(not_supported("target = \"syslog\"")),
    }
}

fn unsupported_validators<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<toml::Table>, D::Error> {
    let tables = Vec::<toml::Table>::deserialize(d)?;
    if tables.is_empty() {
        Ok(tables)
    } else {
        Err(not_supported("[[validator]]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/jnhp.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(
            Config::default().server.listen,
            vec!["127.0.0.1:8111".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn the_documented_defaults_parse_to_the_defaults() {
        let text = r#"
[server]
listen = ["127.0.0.1:8111"]
max_connections = 10000
idle_timeout_secs = 0
max_name_bytes = 250
max_value_bytes = 65536
shutdown_grace_secs = 10

[storage]
path = ""
fsync = "always"

[daemon]
daemonize = false
pidfile = ""
user = ""
group = ""
umask = "0027"
workdir = "/"

[log]
target = "stderr"
level = "info"
syslog_facility = "daemon"
syslog_socket = ""
"#;
        assert_eq!(parse(text).unwrap(), Config::default());
    }

    #[test]
    fn several_listen_addresses_v4_and_v6() {
        let c = parse("[server]\nlisten = [\"0.0.0.0:1\", \"[::1]:2\"]\n").unwrap();
        assert_eq!(c.server.listen.len(), 2);
        assert!(c.server.listen[1].is_ipv6());
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "[server]\n\nmax_connections = \"x\"\n",
                "/etc/jnhp.toml:3: server.max_connections: ",
            ),
            (
                "[server]\nfoo = 1\n",
                "/etc/jnhp.toml:2: server.foo: unknown field `foo`",
            ),
            (
                "\n[storage]\nfsync = \"sometimes\"\n",
                "/etc/jnhp.toml:3: storage.fsync: unknown variant `sometimes`",
            ),
            (
                "[server]\nlisten = [\"nowhere\"]\n",
                "/etc/jnhp.toml:2: server.listen: \"nowhere\" is not an IP address",
            ),
            (
                "[server]\nmax_connections = 0\n",
                "/etc/jnhp.toml:2: server.max_connections: 0 is outside",
            ),
            (
                "[server]\nmax_value_bytes = 0\n",
                "/etc/jnhp.toml:2: server.max_value_bytes: 0 is outside",
            ),
            (
                "[daemon]\numask = \"999\"\n",
                "/etc/jnhp.toml:2: daemon.umask: \"999\" is not an octal umask",
            ),
            (
                "[log]\nlevel = \"loud\"\n",
                "/etc/jnhp.toml:2: log.level: unknown variant `loud`",
            ),
            (
                "[log]\nsyslog_facility = \"nope\"\n",
                "/etc/jnhp.toml:2: log.syslog_facility: unknown syslog facility",
            ),
            (
                "[sever]\n",
                "/etc/jnhp.toml:1: sever: unknown field `sever`",
            ),
            ("[server\n", "/etc/jnhp.toml:1: "),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.starts_with(want),
                "for {text:?}:\n got {err}\nwant {want}"
            );
        }
    }

    #[test]
    fn later_features_are_refused_not_ignored() {
        let cases = [
            (
                "[storage]\npath = \"/var/lib/jnhp/data\"\n",
                "storage.path: not supported yet",
            ),
            (
                "[daemon]\ndaemonize = true\n",
                "daemon.daemonize: not supported yet",
            ),
            (
                "[daemon]\npidfile = \"/run/j.pid\"\n",
                "daemon.pidfile: not supported yet",
            ),
            (
                "[daemon]\nuser = \"nobody\"\n",
                "daemon.user: not supported yet",
            ),
            (
                "[daemon]\ngroup = \"nogroup\"\n",
                "daemon.group: not supported yet",
            ),
            (
                "[log]\ntarget = \"syslog\"\n",
                "log.target: not supported yet",
            ),
            (
                "[[validator]]\nkind = \"function\"\n",
                "validator: not supported yet",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "for {text:?}: got {err}");
            assert!(err.starts_with("/etc/jnhp.toml:"), "{err}");
        }
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let c =
            Config::parse("[daemon]\nworkdir = \"w\"\n", Path::new("/etc/jnhp/j.toml")).unwrap();
        assert_eq!(c.daemon.workdir, PathBuf::from("/etc/jnhp/w"));
    }
}
