//! Loading and checking the TOML configuration (`docs/configuration.md`).
//!
//! jnhpd never starts on a config it did not fully understand: unknown keys,
//! wrong types and values outside their allowed set are all errors naming the
//! file, the line and the key. Every check that can be expressed while
//! deserializing is done there, so that toml's span (for the line) and
//! serde_path_to_error's path (for the key) come for free.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};
use thiserror::Error;
use toml::Spanned;

use crate::postgres::PostgresSettings;
use crate::protocol::Limits;
use crate::tls::{MinVersion, TlsSettings};
pub use crate::validator::spec::{
    Check, Field, HelperSpec, Input, OnFailure, ProcessSpec, ValidatorSpec,
};

/// The built-in listen address, used when neither the file nor `--listen`
/// gives one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8111";

/// A configuration that could not be loaded. `Display` gives the whole
/// message (`/etc/jnhp.toml:12: server.max_connections: ...`).
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file itself: missing, not a regular file, too large, too slow.
    #[error("{0}")]
    Read(crate::files::FileError),
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
    pub admin: AdminConfig,
    pub daemon: DaemonConfig,
    pub log: LogConfig,
    /// `[tls]` as written; [`Config::parse`] checks its files into `tls`.
    #[serde(rename = "tls")]
    raw_tls: RawTls,
    /// JNHP/1 over TLS (docs/tls.md), checked.
    #[serde(skip)]
    pub tls: TlsSettings,
    /// `[[validator]]` tables as written; [`Config::parse`] resolves them
    /// into `validators`.
    #[serde(rename = "validator")]
    raw_validators: Vec<RawValidator>,
    /// The validator chain, in order, checked and resolved.
    #[serde(skip)]
    pub validators: Vec<ValidatorSpec>,
    /// With `log.target = "syslog"`, where the file sets
    /// `log.syslog_socket` (else `log.target`): `path:line`, for the syslog
    /// connection errors found at start and by `--check-config`. Else, or
    /// without a file, empty.
    #[serde(skip)]
    pub syslog_socket_at: String,
    /// With `log.target = "file"`, where the file sets `log.file`:
    /// `path:line`, for errors opening it at start and `--check-config`.
    #[serde(skip)]
    pub log_file_at: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    #[serde(deserialize_with = "listen_list")]
    pub listen: Vec<ListenAddr>,
    #[serde(deserialize_with = "ranged::<_, 1, 1_000_000, _>")]
    pub max_connections: usize,
    #[serde(deserialize_with = "ranged::<_, 0, 2_592_000, _>")]
    pub idle_timeout_secs: u64,
    #[serde(deserialize_with = "ranged::<_, 1, { Limits::WIDEST.max_name_bytes as u64 }, _>")]
    pub max_name_bytes: usize,
    #[serde(deserialize_with = "ranged::<_, 1, { Limits::WIDEST.max_value_bytes as u64 }, _>")]
    pub max_value_bytes: usize,
    #[serde(deserialize_with = "ranged::<_, 0, 3_600, _>")]
    pub shutdown_grace_secs: u64,
    /// Bytes that requests read but not yet answered may hold, server-wide
    /// (their bytes plus 1 KiB each; see `inflight`).
    #[serde(deserialize_with = "ranged::<_, 1_048_576, 1_099_511_627_776, _>")]
    pub max_inflight_bytes: usize,
}

/// `[tls]` as written, with the places of its files for error messages.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    #[serde(deserialize_with = "listen_list")]
    listen: Vec<ListenAddr>,
    cert_file: Option<Spanned<PathBuf>>,
    key_file: Option<Spanned<PathBuf>>,
    client_ca_file: Option<Spanned<PathBuf>>,
    min_version: Option<Spanned<MinVersion>>,
    #[serde(deserialize_with = "ranged::<_, 1, 3_600, _>")]
    handshake_timeout_secs: u64,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            listen: Vec::new(),
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            min_version: None,
            handshake_timeout_secs: 10,
        }
    }
}

/// A `host:port` to listen on: an IP literal or a host name. A name is
/// resolved when the config is checked (so `--check-config` catches one
/// that does not resolve) and again when jnhpd binds, listening on every
/// address it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr(String);

impl ListenAddr {
    /// Checks that `text` is `host:port` and resolves.
    pub fn parse(text: &str) -> Result<ListenAddr, String> {
        let addr = ListenAddr(text.to_string());
        addr.resolve()?;
        Ok(addr)
    }

    /// Every address the name resolves to (one for an IP literal).
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        if let Ok(addr) = self.0.parse::<SocketAddr>() {
            return Ok(vec![addr]);
        }
        let Some((host, port)) = self.0.rsplit_once(':') else {
            return Err(format!(
                "{:?} is not host:port such as \"127.0.0.1:8111\", \"[::1]:8111\" or \"localhost:8111\"",
                self.0
            ));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!(
                "{:?} is not host:port such as \"127.0.0.1:8111\", \"[::1]:8111\" or \"localhost:8111\"",
                self.0
            ));
        }
        let mut addrs: Vec<SocketAddr> = self
            .0
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {:?}: {e}", self.0))?
            .collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(format!("{:?} resolves to no address", self.0));
        }
        Ok(addrs)
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![ListenAddr(DEFAULT_LISTEN.to_string())],
            max_connections: 10_000,
            idle_timeout_secs: 0,
            max_name_bytes: Limits::default().max_name_bytes,
            max_value_bytes: Limits::default().max_value_bytes,
            shutdown_grace_secs: 10,
            max_inflight_bytes: 64 << 20,
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

/// `[admin]`: the HTTP listener for metrics, health and the status page
/// (docs/observability.md).
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Empty: no admin listener, nothing bound.
    #[serde(deserialize_with = "listen_list")]
    pub listen: Vec<ListenAddr>,
    /// `GET /names` lists stored names (docs/observability.md, "Listing
    /// names"). Off by default: the admin listener has no authentication,
    /// and names may be sensitive.
    pub list_names: bool,
}

/// Where names are kept (`storage.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Memory, or the data file at `path`: one daemon.
    #[default]
    Local,
    /// A namespace shared with other front-ends (docs/postgres.md).
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// As written, with its place in the file for error messages.
    #[serde(rename = "backend")]
    raw_backend: Option<Spanned<StorageBackend>>,
    #[serde(skip)]
    pub backend: StorageBackend,
    #[serde(rename = "path")]
    raw_path: Option<Spanned<PathBuf>>,
    /// Empty: memory only. Else the data file, resolved against the config
    /// file's directory.
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(rename = "fsync")]
    raw_fsync: Option<Spanned<Fsync>>,
    #[serde(skip)]
    pub fsync: Fsync,
    #[serde(rename = "postgres")]
    raw_postgres: Option<Spanned<RawPostgres>>,
    /// `[storage.postgres]`, checked: set exactly when the backend is
    /// `postgres`.
    #[serde(skip)]
    pub postgres: Option<PostgresSettings>,
}

/// `[storage.postgres]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPostgres {
    #[serde(deserialize_with = "postgres_url")]
    url: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    #[serde(deserialize_with = "table_prefix")]
    table_prefix: String,
    #[serde(deserialize_with = "ranged::<_, 1, 1_000, _>")]
    pool_size: usize,
    #[serde(deserialize_with = "ranged::<_, 1, 86_400, _>")]
    lease_secs: u64,
    #[serde(deserialize_with = "ranged::<_, 1, 600_000, _>")]
    request_timeout_ms: u64,
    #[serde(deserialize_with = "ranged::<_, 0, 3_600, _>")]
    connect_timeout_secs: u64,
    #[serde(deserialize_with = "ranged::<_, 0, { 1 << 40 }, _>")]
    cache_bytes: usize,
}

impl Default for RawPostgres {
    fn default() -> Self {
        let d = PostgresSettings::default();
        RawPostgres {
            url: None,
            password_file: None,
            table_prefix: d.table_prefix,
            pool_size: d.pool_size,
            lease_secs: d.lease.as_secs(),
            request_timeout_ms: d.request_timeout.as_millis() as u64,
            connect_timeout_secs: d.connect_timeout.as_secs(),
            cache_bytes: d.cache_bytes,
        }
    }
}

/// PostgreSQL's limit on an index entry (about a third of a page) keeps
/// names to this many bytes in a shared namespace.
pub const POSTGRES_MAX_NAME_BYTES: usize = 2000;

/// The URL as written, with its span; [`resolve_storage`] checks it once
/// the config file's directory is known (a relative `sslrootcert` is
/// relative to it).
fn postgres_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Spanned<String>>, D::Error> {
    Spanned::<String>::deserialize(d).map(Some)
}

/// `url` with a relative `sslrootcert` made relative to `base`, checked as
/// a start would use it: a URL tokio-postgres accepts, an `sslmode` jnhpd
/// knows, a CA file it can load. The message never quotes the URL (it may
/// hold a password).
fn check_postgres_url(url: &str, base: &Path) -> Result<String, String> {
    let url = crate::postgres::target::root_cert_relative_to(url, base)?;
    crate::postgres::Target::parse(&url).map_err(|e| match e {
        crate::postgres::PgError::Url(reason) => reason,
        other => other.to_string(),
    })?;
    Ok(url)
}

/// Part of SQL identifiers, so only `[a-z_][a-z0-9_]*`, at most 40 bytes.
fn table_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let prefix = String::deserialize(d)?;
    let mut bytes = prefix.bytes();
    let first = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !first || !rest || prefix.len() > 40 {
        return Err(D::Error::custom(format!(
            "{prefix:?} is not [a-z_][a-z0-9_]* of at most 40 bytes"
        )));
    }
    Ok(prefix)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Fork to the background (foreground suits systemd).
    pub daemonize: bool,
    /// Written (and removed on exit) when set, also in the foreground;
    /// relative to the config file.
    pub pidfile: PathBuf,
    /// Drop privileges to this user after binding.
    #[serde(deserialize_with = "existing_user")]
    pub user: String,
    /// "" = the user's primary group.
    #[serde(deserialize_with = "existing_group")]
    pub group: String,
    /// Applied when daemonized.
    #[serde(deserialize_with = "octal_umask")]
    pub umask: u32,
    /// Applied when daemonized.
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
    /// Appended to `log.file`, reopened on SIGHUP (logrotate's way).
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
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
    pub target: LogTarget,
    pub level: LogLevel,
    #[serde(deserialize_with = "facility")]
    pub syslog_facility: String,
    pub syslog_socket: PathBuf,
    /// With `target = "file"`: the file lines are appended to (relative:
    /// to the config file's directory). Unused with other targets.
    pub file: PathBuf,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            target: LogTarget::Stderr,
            level: LogLevel::Info,
            syslog_facility: "daemon".into(),
            syslog_socket: PathBuf::new(),
            file: PathBuf::new(),
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
            // Spanned<T> fields add a private segment to the path.
            let key = e
                .path()
                .to_string()
                .replace(".$__serde_spanned_private_value", "");
            let key = if key == "." {
                String::new()
            } else {
                format!("{key}: ")
            };
            invalid(e.into_inner(), key)
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        resolve_storage(&mut config, text, base).map_err(|(at, key, message)| {
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line: at.map_or_else(
                    || line_of_section(text, "[storage]"),
                    |at| line_of(text, at),
                ),
                key: format!("{key}: "),
                message,
            }
        })?;
        let raw_validators = std::mem::take(&mut config.raw_validators);
        let name_spans: Vec<Option<usize>> = raw_validators
            .iter()
            .map(|raw| raw.name.as_ref().map(|n| n.span().start))
            .collect();
        config.validators = raw_validators
            .into_iter()
            .enumerate()
            .map(|(i, raw)| raw.resolve(i, base))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Invalid {
                path: path.to_path_buf(),
                line: line_of(text, e.at),
                key: format!("validator[{}].{}: ", e.index, e.key),
                message: e.message,
            })?;
        for (i, spec) in config.validators.iter().enumerate() {
            if let Some(first) = config.validators[..i]
                .iter()
                .position(|v| v.name == spec.name)
            {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line: name_spans[i].map_or(1, |at| line_of(text, at)),
                    key: format!("validator[{i}].name: "),
                    message: format!("{:?} is already the name of validator[{first}]", spec.name),
                });
            }
        }
        config.tls = resolve_tls(std::mem::take(&mut config.raw_tls), base).map_err(
            |(at, key, message)| ConfigError::Invalid {
                path: path.to_path_buf(),
                line: at.map_or_else(|| line_of_section(text, "[tls]"), |at| line_of(text, at)),
                key: format!("tls.{key}: "),
                message,
            },
        )?;
        if config.server.listen.is_empty() && config.tls.listen.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line: line_of_section(text, "[server]"),
                key: "server.listen: ".into(),
                message: "at least one address is needed, here or in tls.listen".into(),
            });
        }
        config.daemon.workdir = base.join(&config.daemon.workdir);
        if !config.daemon.pidfile.as_os_str().is_empty() {
            config.daemon.pidfile = base.join(&config.daemon.pidfile);
            check_pidfile(&config.daemon.pidfile, path, &config.storage.path).map_err(
                |message| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line: line_start_of_key(text, "pidfile")
                        .map_or_else(|| line_of_section(text, "[daemon]"), |at| line_of(text, at)),
                    key: "daemon.pidfile: ".into(),
                    message,
                },
            )?;
        }
        if !config.log.syslog_socket.as_os_str().is_empty() {
            config.log.syslog_socket = base.join(&config.log.syslog_socket);
        }
        if config.log.target == LogTarget::Syslog {
            let syslog_line = line_start_of_key(text, "syslog_socket")
                .or_else(|| line_start_of_key(text, "target"))
                .map_or_else(|| line_of_section(text, "[log]"), |at| line_of(text, at));
            config.syslog_socket_at = format!("{}:{syslog_line}", path.display());
        }
        if config.log.target == LogTarget::File {
            let file_line = line_start_of_key(text, "file")
                .or_else(|| line_start_of_key(text, "target"))
                .map_or_else(|| line_of_section(text, "[log]"), |at| line_of(text, at));
            if config.log.file.as_os_str().is_empty() {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line: file_line,
                    key: "log.file: ".into(),
                    message: "log.target = \"file\" needs log.file, the file to append log \
                              lines to"
                        .into(),
                });
            }
            // Relative to the config file's directory, like every path in
            // it: `--daemon` changes directory, and SIGHUP reopens the file
            // by this path.
            config.log.file = base.join(&config.log.file);
            // Log lines appended to one of jnhpd's own files would damage
            // it: the data file above all.
            let log_file = &config.log.file;
            let clash = [
                (path, "the config file itself"),
                (
                    config.storage.path.as_path(),
                    "the data file (storage.path)",
                ),
                (
                    config.daemon.pidfile.as_path(),
                    "the pidfile (daemon.pidfile)",
                ),
            ]
            .into_iter()
            .find(|(other, _)| !other.as_os_str().is_empty() && same_file(log_file, other));
            if let Some((_, what)) = clash {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line: file_line,
                    key: "log.file: ".into(),
                    message: format!(
                        "{} is {what}: log lines appended there would damage it",
                        log_file.display()
                    ),
                });
            }
            config.log_file_at = format!("{}:{file_line}", path.display());
        }
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = crate::files::read(path, crate::files::CONFIG).map_err(ConfigError::Read)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            ConfigError::Read(crate::files::FileError::Io {
                path: path.to_path_buf(),
                reason: format!("not UTF-8 text: {e}"),
            })
        })?;
        Config::parse(&text, path)
    }
}

/// Checks `[storage]` and `[storage.postgres]` against the backend chosen.
/// Errors carry the offset of the key they concern.
fn resolve_storage(
    config: &mut Config,
    text: &str,
    base: &Path,
) -> Result<(), (Option<usize>, &'static str, String)> {
    let storage = &mut config.storage;
    let backend_at = storage.raw_backend.as_ref().map(|b| b.span().start);
    storage.backend = storage
        .raw_backend
        .take()
        .map(Spanned::into_inner)
        .unwrap_or_default();
    let raw_path = storage.raw_path.take();
    let raw_fsync = storage.raw_fsync.take();
    let raw_postgres = storage.raw_postgres.take();
    if storage.backend == StorageBackend::Local {
        if let Some(pg) = &raw_postgres {
            return Err((
                Some(pg.span().start),
                "storage.postgres",
                "only with storage.backend = \"postgres\"".into(),
            ));
        }
        storage.fsync = raw_fsync.map(Spanned::into_inner).unwrap_or_default();
        if let Some(raw) = raw_path
            && !raw.get_ref().as_os_str().is_empty()
        {
            let at = raw.span().start;
            let data = base.join(raw.into_inner());
            check_data_dir(&data).map_err(|message| (Some(at), "storage.path", message))?;
            storage.path = data;
        }
        return Ok(());
    }
    let local_only =
        "the data file's; not with storage.backend = \"postgres\" (the namespace is in PostgreSQL)";
    if let Some(raw) = raw_path {
        return Err((Some(raw.span().start), "storage.path", local_only.into()));
    }
    if let Some(raw) = raw_fsync {
        return Err((Some(raw.span().start), "storage.fsync", local_only.into()));
    }
    let table_at = raw_postgres.as_ref().map(|pg| pg.span().start);
    let raw = raw_postgres.map(Spanned::into_inner).unwrap_or_default();
    let url = raw
        .url
        .filter(|url| !url.get_ref().is_empty())
        .ok_or_else(|| {
            (
                table_at.or(backend_at),
                "storage.postgres.url",
                "required with storage.backend = \"postgres\"".to_string(),
            )
        })?;
    let url_at = url.span().start;
    let url = check_postgres_url(url.get_ref(), base)
        .map_err(|reason| (Some(url_at), "storage.postgres.url", reason))?;
    let password_file = match raw.password_file {
        Some(file) if !file.get_ref().as_os_str().is_empty() => {
            let at = file.span().start;
            let file = base.join(file.into_inner());
            crate::postgres::target::read_password(&file).map_err(|e| {
                let reason = match e {
                    crate::postgres::PgError::Password(reason) => reason,
                    other => other.to_string(),
                };
                (Some(at), "storage.postgres.password_file", reason)
            })?;
            file
        }
        _ => PathBuf::new(),
    };
    if config.server.max_name_bytes > POSTGRES_MAX_NAME_BYTES {
        return Err((
            line_start_of_key(text, "max_name_bytes"),
            "server.max_name_bytes",
            format!(
                "{} is above {POSTGRES_MAX_NAME_BYTES}, the most a name can have with storage.backend = \"postgres\" (PostgreSQL's index entry limit)",
                config.server.max_name_bytes
            ),
        ));
    }
    storage.postgres = Some(PostgresSettings {
        url,
        password_file,
        table_prefix: raw.table_prefix,
        pool_size: raw.pool_size,
        lease: Duration::from_secs(raw.lease_secs),
        request_timeout: Duration::from_millis(raw.request_timeout_ms),
        connect_timeout: Duration::from_secs(raw.connect_timeout_secs),
        cache_bytes: raw.cache_bytes,
    });
    Ok(())
}

/// The offset of the first line that sets `key` (`key =` at its start).
fn line_start_of_key(text: &str, key: &str) -> Option<usize> {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(at + line.len() - trimmed.len());
        }
        at += line.len();
    }
    None
}

/// The data file's directory must exist and be writable (the file itself
/// is created at start if missing); an existing path must be a regular
/// file, writable, so that the start cannot fail on it later.
fn check_data_dir(data: &Path) -> Result<(), String> {
    match std::fs::metadata(data) {
        Ok(meta) if !meta.is_file() => {
            return Err(format!(
                "{} is not a regular file (a data file is one file, not a directory)",
                data.display()
            ));
        }
        Ok(_) => {
            nix::unistd::access(
                data,
                nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
            )
            .map_err(|e| {
                format!(
                    "data file {} is not readable and writable: {e}",
                    data.display()
                )
            })?;
        }
        // Missing is fine (the start creates it); a symlink loop, a
        // component that is not a directory, a permission problem are not.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("data file {}: {e}", data.display())),
    }
    let dir = match data.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Err(e) => Err(format!("directory {} of the data file: {e}", dir.display())),
        Ok(meta) if !meta.is_dir() => Err(format!("{} is not a directory", dir.display())),
        Ok(_) => nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).map_err(|e| {
            format!(
                "directory {} of the data file is not writable: {e}",
                dir.display()
            )
        }),
    }
}

/// Whether two paths name the same file: the same path, or (both existing)
/// the same device and inode (a symlink, a hard link, `..` in a path).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if std::path::absolute(a).ok() == std::path::absolute(b).ok() {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `daemon.pidfile` is written at start and removed at exit, so everything
/// that would make that fail, or destroy something, is refused here (and
/// so in `--check-config`): a directory that does not exist, a path that
/// is not a regular file, a file holding anything but a PID, and above all
/// the data file or the config file itself.
fn check_pidfile(pidfile: &Path, config: &Path, data: &Path) -> Result<(), String> {
    let shown = pidfile.display();
    if same_file(pidfile, config) {
        return Err(format!("{shown} is the config file itself, not a pidfile"));
    }
    if !data.as_os_str().is_empty() && same_file(pidfile, data) {
        return Err(format!(
            "{shown} is the data file (storage.path), not a pidfile"
        ));
    }
    let dir = match pidfile.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Err(e) => return Err(format!("directory {} of the pidfile: {e}", dir.display())),
        Ok(meta) if !meta.is_dir() => {
            return Err(format!("{} is not a directory", dir.display()));
        }
        Ok(_) => {}
    }
    match std::fs::metadata(pidfile) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{shown}: {e}")),
        Ok(_) => {
            let bytes = crate::files::read(pidfile, crate::files::PIDFILE)
                .map_err(|e| format!("{shown}: {}", e.detail()))?;
            if crate::daemon::holds_only_a_pid(&bytes) {
                Ok(())
            } else {
                Err(format!(
                    "{shown} holds something other than a PID: not a pidfile jnhpd may overwrite"
                ))
            }
        }
    }
}

/// Checks `[tls]`: with `listen` set, `cert_file` and `key_file` are
/// required; whenever files are named they are loaded as a start would
/// load them. Errors carry the offset of the key they concern.
fn resolve_tls(
    raw: RawTls,
    base: &Path,
) -> Result<TlsSettings, (Option<usize>, &'static str, String)> {
    let RawTls {
        listen,
        cert_file,
        key_file,
        client_ca_file,
        min_version,
        handshake_timeout_secs,
    } = raw;
    let spans = [
        ("cert_file", cert_file.as_ref().map(|s| s.span().start)),
        ("key_file", key_file.as_ref().map(|s| s.span().start)),
        (
            "client_ca_file",
            client_ca_file.as_ref().map(|s| s.span().start),
        ),
        ("min_version", min_version.as_ref().map(|s| s.span().start)),
    ];
    let file = |f: Option<Spanned<PathBuf>>| {
        f.map(|f| f.into_inner())
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(PathBuf::new, |p| base.join(p))
    };
    let settings = TlsSettings {
        listen,
        cert_file: file(cert_file),
        key_file: file(key_file),
        client_ca_file: file(client_ca_file),
        min_version: min_version.map(|v| v.into_inner()).unwrap_or_default(),
        handshake_timeout: Duration::from_secs(handshake_timeout_secs),
    };
    let cert_set = !settings.cert_file.as_os_str().is_empty();
    let key_set = !settings.key_file.as_os_str().is_empty();
    if !settings.listen.is_empty() || cert_set || key_set {
        for (set, key) in [(cert_set, "cert_file"), (key_set, "key_file")] {
            if !set {
                return Err((
                    None,
                    key,
                    "required to serve TLS (with listen, cert_file or key_file set)".into(),
                ));
            }
        }
        crate::tls::server_config(&settings).map_err(|e| {
            let at = spans
                .iter()
                .find(|(k, _)| *k == e.key)
                .and_then(|(_, at)| *at);
            (at, e.key, e.to_string())
        })?;
    }
    Ok(settings)
}

/// The line of a section header (`[tls]`), or 1 when the file has none.
fn line_of_section(text: &str, header: &str) -> usize {
    text.lines()
        .position(|l| l.trim() == header)
        .map_or(1, |i| i + 1)
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

/// A list of `host:port`. `server.listen` may be empty only when
/// `tls.listen` is not (checked once the whole file is read).
fn listen_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ListenAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| ListenAddr::parse(s).map_err(D::Error::custom))
        .collect()
}

/// The message for an integer outside its range (config.md lists them).
fn out_of_range(n: i64, min: u64, max: u64) -> String {
    format!("{n} is outside {min}..={max}")
}

/// An integer key within `MIN..=MAX`. Every integer key has a range, so
/// that no value the config accepts can overflow what it sizes later
/// (a semaphore, an allocation, a timer).
fn ranged<'de, T, const MIN: u64, const MAX: u64, D>(d: D) -> Result<T, D::Error>
where
    T: TryFrom<u64>,
    D: Deserializer<'de>,
{
    let n = i64::deserialize(d)?;
    u64::try_from(n)
        .ok()
        .filter(|v| (MIN..=MAX).contains(v))
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| D::Error::custom(out_of_range(n, MIN, MAX)))
}

fn octal_umask<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    let octal = (3..=4).contains(&s.len()) && s.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(&s, 8) {
        Ok(mask) if octal && mask <= 0o777 => Ok(mask),
        _ => Err(D::Error::custom(format!(
            "{s:?} is not an octal umask of 3 or 4 digits such as \"0027\""
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

fn existing_user<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    crate::daemon::lookup_ids(&name, "").map_err(|e| D::Error::custom(e.to_string()))?;
    Ok(name)
}

fn existing_group<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    crate::daemon::lookup_ids("", &name).map_err(|e| D::Error::custom(e.to_string()))?;
    Ok(name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Function,
    Blocking,
    Process,
    Helper,
}

/// A `[[validator]]` table as written: every key optional, each with its
/// span, so that the checks that need the whole table (which keys a kind
/// requires or allows) can still name the line. Integers are read as
/// written (`i64`) and range-checked when resolved.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidator {
    kind: Spanned<Kind>,
    name: Option<Spanned<String>>,
    function: Option<Spanned<String>>,
    max: Option<Spanned<i64>>,
    field: Option<Spanned<Field>>,
    pattern: Option<Spanned<String>>,
    path: Option<Spanned<PathBuf>>,
    command: Option<Spanned<Vec<String>>>,
    input: Option<Spanned<Input>>,
    timeout_ms: Option<Spanned<i64>>,
    max_concurrent: Option<Spanned<i64>>,
    children: Option<Spanned<i64>>,
    concurrency: Option<Spanned<i64>>,
    max_requests: Option<Spanned<i64>>,
    on_failure: Option<Spanned<OnFailure>>,
}

/// A problem with one `[[validator]]` table, located by byte offset.
struct ValidatorError {
    index: usize,
    at: usize,
    key: &'static str,
    message: String,
}

/// Where a key was written (its span's start), if it was.
fn at<T>(key: &Option<Spanned<T>>) -> Option<usize> {
    key.as_ref().map(|k| k.span().start)
}

/// Resolves one `[[validator]]` table. Each kind's arm names every key of
/// the table, as used or as foreign, and the table is destructured whole:
/// a key added to [`RawValidator`] and forgotten here fails to compile
/// (unused variable), instead of being silently without effect.
struct Resolver<'a> {
    index: usize,
    base: &'a Path,
    kind: Kind,
    kind_at: usize,
}

impl Resolver<'_> {
    fn err(&self, at: usize, key: &'static str, message: String) -> ValidatorError {
        ValidatorError {
            index: self.index,
            at,
            key,
            message,
        }
    }

    fn required(&self, key: &'static str) -> ValidatorError {
        let kind = kind_name(self.kind);
        self.err(self.kind_at, key, format!("required by kind = \"{kind}\""))
    }

    /// Keys set in the table that `what` (a kind or a function) does not
    /// take are errors, like unknown keys.
    fn refuse(
        &self,
        foreign: &[(&'static str, Option<usize>)],
        what: &str,
    ) -> Result<(), ValidatorError> {
        match foreign.iter().find_map(|(key, at)| at.map(|at| (key, at))) {
            Some((key, at)) => Err(self.err(at, key, format!("not used by {what}"))),
            None => Ok(()),
        }
    }

    fn refuse_for_kind(
        &self,
        foreign: &[(&'static str, Option<usize>)],
    ) -> Result<(), ValidatorError> {
        self.refuse(foreign, &format!("kind = \"{}\"", kind_name(self.kind)))
    }

    /// An integer key within `min..=max`, or `default` when absent.
    fn ranged(
        &self,
        value: Option<Spanned<i64>>,
        key: &'static str,
        (min, max): (u64, u64),
        default: u64,
    ) -> Result<u64, ValidatorError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let n = *value.get_ref();
        u64::try_from(n)
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| self.err(value.span().start, key, out_of_range(n, min, max)))
    }

    /// `ranged` for keys that size something in memory.
    fn ranged_usize(
        &self,
        value: Option<Spanned<i64>>,
        key: &'static str,
        range: (u64, u64),
        default: u64,
    ) -> Result<usize, ValidatorError> {
        // The ranges read this way end far below 2^32.
        let n = self.ranged(value, key, range, default)?;
        Ok(n as usize)
    }

    fn function(
        &self,
        function: Option<Spanned<String>>,
        max: Option<Spanned<i64>>,
        field: Option<Spanned<Field>>,
        pattern: Option<Spanned<String>>,
    ) -> Result<Check, ValidatorError> {
        let function = function.ok_or_else(|| self.required("function"))?;
        match function.get_ref().as_str() {
            "max_bytes" => {
                self.refuse(&[("field", at(&field)), ("pattern", at(&pattern))], "function = \"max_bytes\"")?;
                if max.is_none() {
                    return Err(self.required("max"));
                }
                let max = self.ranged(max, "max", RANGE_MAX_BYTES, 0)?;
                Ok(Check::MaxBytes { max })
            }
            "regex" => {
                self.refuse(&[("max", at(&max))], "function = \"regex\"")?;
                let pattern = pattern.ok_or_else(|| self.required("pattern"))?;
                if let Err(e) = regex::bytes::Regex::new(pattern.get_ref()) {
                    return Err(self.err(pattern.span().start, "pattern", format!("invalid regex: {e}")));
                }
                Ok(Check::Regex {
                    field: field.map(|f| f.into_inner()).unwrap_or_default(),
                    pattern: pattern.into_inner(),
                })
            }
            other => Err(self.err(
                function.span().start,
                "function",
                format!("unknown function {other:?} for kind = \"function\", expected \"max_bytes\" or \"regex\""),
            )),
        }
    }

    fn blocking(
        &self,
        function: Option<Spanned<String>>,
        path: Option<Spanned<PathBuf>>,
    ) -> Result<Check, ValidatorError> {
        let function = function.ok_or_else(|| self.required("function"))?;
        if function.get_ref() != "denylist" {
            return Err(self.err(
                function.span().start,
                "function",
                format!(
                    "unknown function {:?} for kind = \"blocking\", expected \"denylist\"",
                    function.get_ref()
                ),
            ));
        }
        let path = path.ok_or_else(|| self.required("path"))?;
        let at = path.span().start;
        let path = self.base.join(path.into_inner());
        if let Err(e) = crate::files::check(&path, crate::files::DENYLIST) {
            let message = format!("cannot read {}: {}", path.display(), e.detail());
            return Err(self.err(at, "path", message));
        }
        Ok(Check::Denylist { path })
    }

    /// `command`, resolved: the program and its arguments.
    fn command(
        &self,
        command: Option<Spanned<Vec<String>>>,
    ) -> Result<(PathBuf, Vec<String>), ValidatorError> {
        let command = command.ok_or_else(|| self.required("command"))?;
        let at = command.span().start;
        let mut command = command.into_inner().into_iter();
        let Some(program) = command.next() else {
            return Err(self.err(at, "command", "must name a program".into()));
        };
        let program = find_program(&program, self.base)
            .map_err(|message| self.err(at, "command", message))?;
        Ok((program, command.collect()))
    }

    fn timeout(&self, timeout_ms: Option<Spanned<i64>>) -> Result<Duration, ValidatorError> {
        let ms = self.ranged(timeout_ms, "timeout_ms", RANGE_TIMEOUT_MS, 5000)?;
        Ok(Duration::from_millis(ms))
    }
}

const RANGE_MAX_BYTES: (u64, u64) = (1, 16_777_216);
const RANGE_TIMEOUT_MS: (u64, u64) = (1, 3_600_000);
const RANGE_MAX_CONCURRENT: (u64, u64) = (1, 10_000);
const RANGE_CHILDREN: (u64, u64) = (1, 1_000);
const RANGE_CONCURRENCY: (u64, u64) = (1, 10_000);
const RANGE_MAX_REQUESTS: (u64, u64) = (0, 4_294_967_295);

impl RawValidator {
    fn resolve(self, index: usize, base: &Path) -> Result<ValidatorSpec, ValidatorError> {
        let RawValidator {
            kind,
            name,
            function,
            max,
            field,
            pattern,
            path,
            command,
            input,
            timeout_ms,
            max_concurrent,
            children,
            concurrency,
            max_requests,
            on_failure,
        } = self;
        let r = Resolver {
            index,
            base,
            kind: *kind.get_ref(),
            kind_at: kind.span().start,
        };
        // Which kinds take each key: one table, so that a key of another
        // kind is refused like an unknown one, for every kind.
        use Kind::{Blocking, Function, Helper, Process};
        let keys: [(&'static str, Option<usize>, &[Kind]); 13] = [
            ("function", at(&function), &[Function, Blocking]),
            ("max", at(&max), &[Function]),
            ("field", at(&field), &[Function]),
            ("pattern", at(&pattern), &[Function]),
            ("path", at(&path), &[Blocking]),
            ("command", at(&command), &[Process, Helper]),
            ("input", at(&input), &[Process]),
            ("timeout_ms", at(&timeout_ms), &[Process, Helper]),
            ("max_concurrent", at(&max_concurrent), &[Process]),
            ("children", at(&children), &[Helper]),
            ("concurrency", at(&concurrency), &[Helper]),
            ("max_requests", at(&max_requests), &[Helper]),
            (
                "on_failure",
                at(&on_failure),
                &[Function, Blocking, Process, Helper],
            ),
        ];
        let foreign: Vec<_> = keys
            .iter()
            .filter(|(_, _, kinds)| !kinds.contains(&r.kind))
            .map(|&(key, at, _)| (key, at))
            .collect();
        r.refuse_for_kind(&foreign)?;
        let on_failure = on_failure.map(|s| s.into_inner()).unwrap_or_default();
        let check = match r.kind {
            Function => r.function(function, max, field, pattern)?,
            Blocking => r.blocking(function, path)?,
            Process => {
                let (program, args) = r.command(command)?;
                Check::Process(ProcessSpec {
                    program,
                    args,
                    input: input.map(|i| i.into_inner()).unwrap_or_default(),
                    timeout: r.timeout(timeout_ms)?,
                    max_concurrent: r.ranged_usize(
                        max_concurrent,
                        "max_concurrent",
                        RANGE_MAX_CONCURRENT,
                        16,
                    )?,
                })
            }
            Helper => {
                let (program, args) = r.command(command)?;
                Check::Helper(HelperSpec {
                    program,
                    args,
                    children: r.ranged_usize(children, "children", RANGE_CHILDREN, 4)?,
                    concurrency: r.ranged_usize(
                        concurrency,
                        "concurrency",
                        RANGE_CONCURRENCY,
                        32,
                    )?,
                    timeout: r.timeout(timeout_ms)?,
                    max_requests: r.ranged(max_requests, "max_requests", RANGE_MAX_REQUESTS, 0)?,
                })
            }
        };
        let name = match name {
            None => format!("{}-{index}", kind_name(r.kind)),
            Some(name) => {
                let ok = !name.get_ref().is_empty()
                    && name.get_ref().len() <= 64
                    && name.get_ref().bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    });
                if !ok {
                    return Err(r.err(
                        name.span().start,
                        "name",
                        format!(
                            "{:?} is not [a-z0-9_-]+ of at most 64 bytes",
                            name.get_ref()
                        ),
                    ));
                }
                name.into_inner()
            }
        };
        Ok(ValidatorSpec {
            name,
            check,
            on_failure,
        })
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Function => "function",
        Kind::Blocking => "blocking",
        Kind::Process => "process",
        Kind::Helper => "helper",
    }
}

/// Resolves a program the way an operator expects: a name with a `/` is a
/// path (relative to the config file's directory), a bare name is looked up
/// in PATH. The result must be an executable file.
fn find_program(program: &str, base: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = base.join(program);
        return match std::fs::metadata(&path) {
            Err(e) => Err(format!("program {}: {e}", path.display())),
            Ok(_) if !executable(&path) => Err(format!(
                "program {} is not an executable file",
                path.display()
            )),
            Ok(_) => Ok(path),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| format!("program {program:?} not found in PATH"))
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
            Config::default().server.listen[0].resolve().unwrap(),
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
max_inflight_bytes = 67108864

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
        assert!(c.server.listen[1].resolve().unwrap()[0].is_ipv6());
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
                "/etc/jnhp.toml:2: server.listen: \"nowhere\" is not host:port",
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
    fn helper_validators() {
        let c = parse("[[validator]]\nkind = \"helper\"\ncommand = [\"true\"]\nchildren = 2\nmax_requests = 9\n").unwrap();
        let Check::Helper(h) = &c.validators[0].check else {
            panic!("not a helper")
        };
        assert_eq!((h.children, h.concurrency, h.max_requests), (2, 32, 9));
        assert_eq!(h.timeout, Duration::from_millis(5000));
        let err =
            parse("[[validator]]\nkind = \"helper\"\ncommand = [\"true\"]\n\nconcurrency = 0\n")
                .unwrap_err();
        assert!(
            err.starts_with("/etc/jnhp.toml:5: validator[0].concurrency: 0 is outside 1..=10000"),
            "{err}"
        );
        let err =
            parse("[[validator]]\nkind = \"helper\"\ncommand = [\"true\"]\ninput = \"stdin\"\n")
                .unwrap_err();
        assert!(
            err.contains("validator[0].input: not used by kind = \"helper\""),
            "{err}"
        );
    }

    #[test]
    fn daemon_and_log_keys() {
        let c = parse(
            "[daemon]\ndaemonize = true\npidfile = \"j.pid\"\nuser = \"root\"\ngroup = \"root\"\n\
             [log]\ntarget = \"syslog\"\nsyslog_facility = \"local3\"\n",
        )
        .unwrap();
        assert!(c.daemon.daemonize);
        assert_eq!(c.daemon.pidfile, PathBuf::from("/etc/j.pid"));
        assert_eq!(c.log.target, LogTarget::Syslog);
        let err = parse("[daemon]\n\nuser = \"no-such-user-here\"\n").unwrap_err();
        assert!(
            err.starts_with("/etc/jnhp.toml:3: daemon.user: unknown user"),
            "{err}"
        );
        let err = parse("[daemon]\ngroup = \"no-such-group-here\"\n").unwrap_err();
        assert!(
            err.starts_with("/etc/jnhp.toml:2: daemon.group: unknown group"),
            "{err}"
        );
    }

    #[test]
    fn validator_tables_resolve_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deny.txt"), "x\n").unwrap();
        let text = r#"
[[validator]]
kind = "function"
function = "max_bytes"
max = 10

[[validator]]
kind = "function"
function = "regex"
field = "name"
pattern = "^[a-z]+$"
on_failure = "allow"

[[validator]]
kind = "blocking"
function = "denylist"
path = "deny.txt"

[[validator]]
kind = "process"
command = ["true", "--", "x"]
input = "stdin"
timeout_ms = 250
max_concurrent = 2
"#;
        let c = Config::parse(text, &dir.path().join("j.toml")).unwrap();
        assert_eq!(c.validators.len(), 4);
        assert_eq!(c.validators[0].check, Check::MaxBytes { max: 10 });
        assert_eq!(c.validators[1].on_failure, OnFailure::Allow);
        assert_eq!(
            c.validators[2].check,
            Check::Denylist {
                path: dir.path().join("deny.txt")
            }
        );
        let Check::Process(p) = &c.validators[3].check else {
            panic!("not a process")
        };
        assert!(
            p.program.is_absolute() && p.program.ends_with("true"),
            "found in PATH"
        );
        assert_eq!(p.args, ["--", "x"]);
        assert_eq!(
            (p.input, p.timeout, p.max_concurrent),
            (Input::Stdin, Duration::from_millis(250), 2)
        );
    }

    #[test]
    fn validator_errors_name_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "not executable").unwrap();
        let cases = [
            (
                "[[validator]]\nkind = \"function\"\n",
                "2: validator[0].function: required by kind",
            ),
            (
                "[[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\n",
                "2: validator[0].max: required",
            ),
            (
                "[[validator]]\nkind = \"function\"\nfunction = \"nope\"\n",
                "3: validator[0].function: unknown function",
            ),
            (
                "[[validator]]\nkind = \"function\"\nfunction = \"regex\"\npattern = \"(\"\n",
                "4: validator[0].pattern: invalid regex",
            ),
            (
                "[[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 1\npattern = \"x\"\n",
                "5: validator[0].pattern: not used by function = \"max_bytes\"",
            ),
            (
                "[[validator]]\nkind = \"function\"\ncommand = [\"x\"]\n",
                "3: validator[0].command: not used by kind = \"function\"",
            ),
            (
                "[[validator]]\nkind = \"process\"\n",
                "2: validator[0].command: required",
            ),
            (
                "[[validator]]\nkind = \"process\"\ncommand = []\n",
                "3: validator[0].command: must name a program",
            ),
            (
                "[[validator]]\nkind = \"process\"\ncommand = [\"./missing\"]\n",
                "3: validator[0].command: program",
            ),
            (
                "[[validator]]\nkind = \"process\"\ncommand = [\"plain\"]\n",
                "3: validator[0].command: program \"plain\" not found in PATH",
            ),
            (
                "[[validator]]\nkind = \"process\"\ncommand = [\"./plain\"]\n",
                "is not an executable file",
            ),
            (
                "[[validator]]\nkind = \"process\"\ncommand = [\"true\"]\nmax_concurrent = 0\n",
                "4: validator[0].max_concurrent: 0 is outside 1..=10000",
            ),
            (
                "[[validator]]\nkind = \"process\"\ncommand = [\"true\"]\ninput = \"file\"\n",
                "4: validator[0].input: unknown variant",
            ),
            (
                "[[validator]]\nkind = \"process\"\ncommand = [\"true\"]\non_failure = \"maybe\"\n",
                "4: validator[0].on_failure: unknown variant",
            ),
            (
                "[[validator]]\nkind = \"blocking\"\nfunction = \"denylist\"\npath = \"nothing\"\n",
                "4: validator[0].path: cannot read",
            ),
            (
                "[[validator]]\nkind = \"sometimes\"\n",
                "2: validator[0].kind: unknown variant",
            ),
            (
                "[[validator]]\nfunction = \"regex\"\n",
                "validator[0]: missing field `kind`",
            ),
            (
                "[[validator]]\nkind = \"process\"\ncommand = [\"true\"]\n[[validator]]\nkind = \"process\"\ncommand = [\"true\"]\nbogus = 1\n",
                "7: validator[1].bogus: unknown field",
            ),
        ];
        for (text, want) in cases {
            let err = Config::parse(text, &dir.path().join("j.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "for {text:?}:\n got {err}\nwant {want}");
            assert!(
                err.starts_with(&dir.path().join("j.toml:").display().to_string()),
                "{err}"
            );
        }
    }

    /// Every integer key has the range config.md gives: both ends are
    /// accepted, one past either end (and a huge value) is an error naming
    /// the line and the key.
    #[test]
    fn every_integer_key_is_range_checked() {
        let server = [
            ("max_connections", 1u64, 1_000_000u64),
            ("idle_timeout_secs", 0, 2_592_000),
            ("max_name_bytes", 1, 65_536),
            ("max_value_bytes", 1, 16_777_216),
            ("shutdown_grace_secs", 0, 3_600),
            ("max_inflight_bytes", 1_048_576, 1_099_511_627_776),
        ];
        let process = "kind = \"process\"\ncommand = [\"true\"]";
        let helper = "kind = \"helper\"\ncommand = [\"true\"]";
        let max_bytes = "kind = \"function\"\nfunction = \"max_bytes\"";
        let validator = [
            (max_bytes, "max", 1u64, 16_777_216u64),
            (process, "timeout_ms", 1, 3_600_000),
            (process, "max_concurrent", 1, 10_000),
            (helper, "timeout_ms", 1, 3_600_000),
            (helper, "children", 1, 1_000),
            (helper, "concurrency", 1, 10_000),
            (helper, "max_requests", 0, 4_294_967_295),
        ];
        let mut cases = Vec::new();
        for (key, min, max) in server {
            cases.push((
                format!("[server]\n{key} = "),
                format!("server.{key}"),
                min,
                max,
                2,
            ));
        }
        for (table, key, min, max) in validator {
            let line = table.lines().count() + 2;
            cases.push((
                format!("[[validator]]\n{table}\n{key} = "),
                format!("validator[0].{key}"),
                min,
                max,
                line,
            ));
        }
        for (prefix, key, min, max, line) in cases {
            for ok in [min, max] {
                assert!(
                    parse(&format!("{prefix}{ok}\n")).is_ok(),
                    "{key} = {ok}: {:?}",
                    parse(&format!("{prefix}{ok}\n"))
                );
            }
            let mut bad = vec![max as i64 + 1, i64::MAX, -1];
            if min > 0 {
                bad.push(min as i64 - 1);
            }
            for n in bad {
                let err = parse(&format!("{prefix}{n}\n")).unwrap_err();
                let want = format!("/etc/jnhp.toml:{line}: {key}: {n} is outside {min}..={max}");
                assert!(err.starts_with(&want), "got {err}\nwant {want}");
            }
        }
    }

    /// A key of another kind, or of another function, is an error like an
    /// unknown key, for every kind.
    #[test]
    fn keys_of_another_kind_are_errors() {
        let kinds = [
            (
                "kind = \"function\"\nfunction = \"max_bytes\"\nmax = 1",
                &[
                    "path",
                    "command",
                    "input",
                    "timeout_ms",
                    "max_concurrent",
                    "children",
                    "concurrency",
                    "max_requests",
                    "field",
                    "pattern",
                ][..],
            ),
            (
                "kind = \"function\"\nfunction = \"regex\"\npattern = \"x\"",
                &[
                    "max",
                    "children",
                    "concurrency",
                    "max_requests",
                    "timeout_ms",
                ][..],
            ),
            (
                "kind = \"blocking\"\nfunction = \"denylist\"\npath = \"/etc/passwd\"",
                &[
                    "max",
                    "field",
                    "pattern",
                    "command",
                    "input",
                    "timeout_ms",
                    "max_concurrent",
                    "children",
                    "concurrency",
                    "max_requests",
                ][..],
            ),
            (
                "kind = \"process\"\ncommand = [\"true\"]",
                &[
                    "function",
                    "max",
                    "field",
                    "pattern",
                    "path",
                    "children",
                    "concurrency",
                    "max_requests",
                ][..],
            ),
            (
                "kind = \"helper\"\ncommand = [\"true\"]",
                &[
                    "function",
                    "max",
                    "field",
                    "pattern",
                    "path",
                    "input",
                    "max_concurrent",
                ][..],
            ),
        ];
        let value = |key: &str| match key {
            "function" | "pattern" | "path" => "\"x\"",
            "field" => "\"name\"",
            "input" => "\"stdin\"",
            "command" => "[\"true\"]",
            _ => "4",
        };
        for (table, foreign) in kinds {
            assert!(
                parse(&format!("[[validator]]\n{table}\n")).is_ok(),
                "{table}"
            );
            let line = table.lines().count() + 2;
            for key in foreign {
                let err = parse(&format!("[[validator]]\n{table}\n{key} = {}\n", value(key)))
                    .unwrap_err();
                let want = format!("/etc/jnhp.toml:{line}: validator[0].{key}: not used by ");
                assert!(
                    err.starts_with(&want),
                    "{table} + {key}:\n got {err}\nwant {want}"
                );
            }
        }
    }

    #[test]
    fn umask_is_three_or_four_octal_digits() {
        for ok in ["027", "0027", "0777", "000"] {
            assert!(
                parse(&format!("[daemon]\numask = \"{ok}\"\n")).is_ok(),
                "{ok}"
            );
        }
        for bad in ["+27", "27", "00027", "0o27", "0089", "", " 027", "1777"] {
            let err = parse(&format!("[daemon]\numask = \"{bad}\"\n")).unwrap_err();
            assert!(
                err.starts_with("/etc/jnhp.toml:2: daemon.umask: "),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_postgres_backend_and_its_keys() {
        let c = parse(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://j@db/names\"\n\
             pool_size = 3\nlease_secs = 7\nrequest_timeout_ms = 250\ncache_bytes = 0\n",
        )
        .unwrap();
        assert_eq!(c.storage.backend, StorageBackend::Postgres);
        let pg = c.storage.postgres.unwrap();
        assert_eq!(
            (pg.pool_size, pg.lease, pg.request_timeout, pg.cache_bytes),
            (3, Duration::from_secs(7), Duration::from_millis(250), 0)
        );
        assert_eq!(pg.table_prefix, "jnhp");
        assert_eq!(pg.connect_timeout, Duration::from_secs(10));
        assert!(
            !format!("{pg:?}").contains("postgres://"),
            "Debug shows the URL"
        );
        // The local backend has no postgres settings.
        assert_eq!(
            parse("[storage]\nbackend = \"local\"\n")
                .unwrap()
                .storage
                .postgres,
            None
        );
    }

    #[test]
    fn postgres_config_errors_name_line_and_key() {
        let pg = "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"host=/run/postgresql\"\n";
        let cases: &[(&str, &str)] = &[
            (
                "[storage]\nbackend = \"local\"\n[storage.postgres]\nurl = \"postgres://j@db/n\"\n",
                "/etc/jnhp.toml:3: storage.postgres: only with storage.backend = \"postgres\"",
            ),
            (
                "[storage]\nbackend = \"postgres\"\npath = \"d\"\n",
                "/etc/jnhp.toml:3: storage.path: the data file's; not with",
            ),
            (
                "[storage]\nbackend = \"postgres\"\nfsync = \"always\"\n[storage.postgres]\nurl = \"postgres://j@db/n\"\n",
                "/etc/jnhp.toml:3: storage.fsync: the data file's; not with",
            ),
            (
                "[storage]\nbackend = \"postgres\"\n",
                "/etc/jnhp.toml:2: storage.postgres.url: required with storage.backend",
            ),
            (
                "[storage]\nbackend = \"postgres\"\n[storage.postgres]\npool_size = 2\n",
                "/etc/jnhp.toml:3: storage.postgres.url: required",
            ),
            (
                "[storage]\nbackend = \"sql\"\n",
                "/etc/jnhp.toml:2: storage.backend: unknown variant `sql`",
            ),
            (
                &format!("{pg}pool_size = 0\n"),
                "/etc/jnhp.toml:5: storage.postgres.pool_size: 0 is outside 1..=1000",
            ),
            (
                &format!("{pg}lease_secs = 0\n"),
                "/etc/jnhp.toml:5: storage.postgres.lease_secs: 0 is outside 1..=86400",
            ),
            (
                &format!("{pg}request_timeout_ms = -5\n"),
                "/etc/jnhp.toml:5: storage.postgres.request_timeout_ms: -5 is outside",
            ),
            (
                &format!("{pg}table_prefix = \"Jn-hp\"\n"),
                "/etc/jnhp.toml:5: storage.postgres.table_prefix: \"Jn-hp\" is not [a-z_][a-z0-9_]*",
            ),
            (
                &format!("{pg}colour = \"blue\"\n"),
                "/etc/jnhp.toml:5: storage.postgres.colour: unknown field `colour`",
            ),
            (
                &format!("{pg}password_file = \"/nonexistent/pw\"\n"),
                "/etc/jnhp.toml:5: storage.postgres.password_file: /nonexistent/pw: cannot read",
            ),
            (
                "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://u:s3cret@h/d?sslmode=maybe\"\n",
                "/etc/jnhp.toml:4: storage.postgres.url: sslmode \"maybe\" is not one of",
            ),
            (
                &format!("[server]\nmax_name_bytes = 2001\n{pg}"),
                "/etc/jnhp.toml:2: server.max_name_bytes: 2001 is above 2000",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.starts_with(expected),
                "{text:?}:\n  got {err}\n  want {expected}"
            );
            assert!(!err.contains("s3cret"), "{err}");
        }
        // 2000 bytes is allowed.
        parse(&format!("[server]\nmax_name_bytes = 2000\n{pg}")).unwrap();
    }

    #[test]
    fn storage_path_must_not_be_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let err = Config::parse("[storage]\npath = \"data\"\n", &dir.path().join("j.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("j.toml:2: storage.path: ") && err.contains("is not a regular file"),
            "{err}"
        );
        let err = Config::parse(
            "[storage]\npath = \"/dev/null\"\n",
            &dir.path().join("j.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not a regular file"), "{err}");
        assert!(
            Config::parse(
                "[storage]\npath = \"data/file\"\n",
                &dir.path().join("j.toml")
            )
            .is_ok()
        );
    }

    #[test]
    fn listen_accepts_host_names_and_resolves_them() {
        let c = parse("[server]\nlisten = [\"localhost:8111\"]\n").unwrap();
        let addrs = c.server.listen[0].resolve().unwrap();
        assert!(
            !addrs.is_empty()
                && addrs
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 8111),
            "{addrs:?}"
        );
        for bad in [
            "localhost",
            "localhost:x",
            ":8111",
            "no-such-host.invalid:1",
        ] {
            let err = parse(&format!("[server]\nlisten = [\"{bad}\"]\n")).unwrap_err();
            assert!(
                err.starts_with("/etc/jnhp.toml:2: server.listen: "),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let c =
            Config::parse("[daemon]\nworkdir = \"w\"\n", Path::new("/etc/jnhp/j.toml")).unwrap();
        assert_eq!(c.daemon.workdir, PathBuf::from("/etc/jnhp/w"));
    }
}
