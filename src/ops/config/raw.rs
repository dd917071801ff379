//! The file as written: serde structs that mirror the TOML, private to
//! `config`. Every check that can be made while deserializing is made
//! here (types, ranges, spellings), so that toml's span (for the line) and
//! serde_path_to_error's path (for the key) come for free. Keys whose
//! checks need the rest of the file keep their span (`Spanned`), so that
//! the resolving modules can still name their line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, de::Error as _};
use toml::Spanned;

use super::ConfigError;
use super::listen::ListenAddr;
use super::log::{FACILITIES, LogLevel};
use super::storage::Fsync;
use super::tls::MinVersion;
use crate::protocol::Limits;
use crate::storage::postgres::PostgresSettings;
use crate::validator::spec::{Field, Input, Mode, OnFailure};

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub server: RawServer,
    pub storage: RawStorage,
    pub admin: RawAdmin,
    pub daemon: RawDaemon,
    pub log: RawLog,
    pub tls: RawTls,
    pub validation: RawValidation,
    #[serde(rename = "validator")]
    pub validators: Vec<RawValidator>,
}

/// `[validation]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawValidation {
    /// 0: no deadline.
    #[serde(deserialize_with = "ranged::<_, 0, 3_600_000, _>")]
    pub deadline_ms: u64,
    /// "" (off), "stderr", or a file.
    pub decision_log: Spanned<String>,
    pub decision_log_values: bool,
    #[serde(deserialize_with = "ranged::<_, 1, 1_000_000, _>")]
    pub decision_log_buffer: usize,
}

impl Default for RawValidation {
    fn default() -> Self {
        RawValidation {
            deadline_ms: 0,
            decision_log: Spanned::new(0..0, String::new()),
            decision_log_values: false,
            decision_log_buffer: 10_000,
        }
    }
}

impl RawConfig {
    /// Deserializes `text`; errors name `path`, the line and the key.
    pub fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
        let invalid = |err: toml::de::Error, key: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: err
                .span()
                .map(|span| super::place::line_of(text, span.start))
                .unwrap_or(1),
            key,
            message: err.message().trim_end().to_string(),
        };
        let deserializer = toml::de::Deserializer::parse(text).map_err(|e| {
            // The parser's "duplicate key" names no key: its span is the
            // repeated key as written.
            let key = match e.span() {
                Some(span) if e.message().starts_with("duplicate key") => text
                    .get(span)
                    .map(|k| format!("{}: ", k.trim()))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            invalid(e, key)
        })?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
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
        })
    }
}

/// A `listen` list as written (`None`: the key is absent).
pub(super) type RawListen = Option<Spanned<Vec<ListenAddr>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    #[serde(deserialize_with = "listen_list")]
    pub listen: RawListen,
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
    #[serde(deserialize_with = "ranged::<_, 1_048_576, 1_099_511_627_776, _>")]
    pub max_inflight_bytes: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: None,
            max_connections: 10_000,
            idle_timeout_secs: 0,
            max_name_bytes: Limits::default().max_name_bytes,
            max_value_bytes: Limits::default().max_value_bytes,
            shutdown_grace_secs: 10,
            max_inflight_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    #[serde(deserialize_with = "listen_list")]
    pub listen: RawListen,
    pub list_names: bool,
}

/// `storage.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(super) enum StorageBackend {
    /// Memory, or the data file at `path`: one daemon.
    #[default]
    Local,
    /// A namespace shared with other front-ends (docs/postgres.md).
    Postgres,
}

/// `[storage]` as written: which keys go together depends on `backend`,
/// so each keeps its place for the error that refuses it.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStorage {
    pub backend: Option<Spanned<StorageBackend>>,
    pub path: Option<Spanned<PathBuf>>,
    pub fsync: Option<Spanned<Fsync>>,
    pub postgres: Option<Spanned<RawPostgres>>,
}

/// `[storage.postgres]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPostgres {
    #[serde(deserialize_with = "postgres_url")]
    pub url: Option<Spanned<String>>,
    pub password_file: Option<Spanned<PathBuf>>,
    #[serde(deserialize_with = "table_prefix")]
    pub table_prefix: String,
    #[serde(deserialize_with = "ranged::<_, 1, 1_000, _>")]
    pub pool_size: usize,
    #[serde(deserialize_with = "ranged::<_, 1, 86_400, _>")]
    pub lease_secs: u64,
    #[serde(deserialize_with = "ranged::<_, 1, 600_000, _>")]
    pub request_timeout_ms: u64,
    #[serde(deserialize_with = "ranged::<_, 0, 3_600, _>")]
    pub connect_timeout_secs: u64,
    #[serde(deserialize_with = "ranged::<_, 0, { 1 << 40 }, _>")]
    pub cache_bytes: usize,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDaemon {
    pub daemonize: bool,
    pub pidfile: PathBuf,
    #[serde(deserialize_with = "existing_user")]
    pub user: String,
    #[serde(deserialize_with = "existing_group")]
    pub group: String,
    #[serde(deserialize_with = "octal_umask")]
    pub umask: u32,
    pub workdir: PathBuf,
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            daemonize: false,
            pidfile: PathBuf::new(),
            user: String::new(),
            group: String::new(),
            umask: 0o027,
            workdir: PathBuf::from("/"),
        }
    }
}

/// `log.target` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawLogTarget {
    #[default]
    Stderr,
    Syslog,
    File,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub target: RawLogTarget,
    pub level: LogLevel,
    #[serde(deserialize_with = "facility")]
    pub syslog_facility: String,
    pub syslog_socket: PathBuf,
    pub file: PathBuf,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            target: RawLogTarget::Stderr,
            level: LogLevel::Info,
            syslog_facility: "daemon".into(),
            syslog_socket: PathBuf::new(),
            file: PathBuf::new(),
        }
    }
}

/// `[tls]` as written, with the places of its files for error messages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTls {
    #[serde(deserialize_with = "listen_list")]
    pub listen: RawListen,
    pub cert_file: Option<Spanned<PathBuf>>,
    pub key_file: Option<Spanned<PathBuf>>,
    pub client_ca_file: Option<Spanned<PathBuf>>,
    pub min_version: Option<Spanned<MinVersion>>,
    #[serde(deserialize_with = "ranged::<_, 1, 3_600, _>")]
    pub handshake_timeout_secs: u64,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            listen: None,
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            min_version: None,
            handshake_timeout_secs: 10,
        }
    }
}

/// `kind` of a `[[validator]]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Kind {
    Function,
    Blocking,
    Process,
    Helper,
    Wasm,
}

/// A `[[validator]]` table as written: every key optional, each with its
/// span, so that the checks that need the whole table (which keys a kind
/// requires or allows) can still name the line. Integers are read as
/// written (`i64`) and range-checked when resolved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawValidator {
    pub kind: Spanned<Kind>,
    pub name: Option<Spanned<String>>,
    pub function: Option<Spanned<String>>,
    pub max: Option<Spanned<i64>>,
    pub field: Option<Spanned<Field>>,
    pub pattern: Option<Spanned<String>>,
    pub path: Option<Spanned<PathBuf>>,
    pub command: Option<Spanned<Vec<String>>>,
    pub input: Option<Spanned<Input>>,
    pub timeout_ms: Option<Spanned<i64>>,
    pub max_concurrent: Option<Spanned<i64>>,
    pub children: Option<Spanned<i64>>,
    pub concurrency: Option<Spanned<i64>>,
    pub max_requests: Option<Spanned<i64>>,
    pub module: Option<Spanned<PathBuf>>,
    pub max_memory_mib: Option<Spanned<i64>>,
    pub on_failure: Option<Spanned<OnFailure>>,
    pub mode: Option<Spanned<Mode>>,
    pub deny_cache_secs: Option<Spanned<i64>>,
    pub deny_cache_entries: Option<Spanned<i64>>,
}

/// A list of `host:port`, checked for its form only: whether a name
/// resolves is asked where the network is used (`crate::ops::preflight`), so
/// the list keeps its span for that error. `server.listen` may be empty
/// only when `tls.listen` is not (checked once the whole file is read).
fn listen_list<'de, D: Deserializer<'de>>(d: D) -> Result<RawListen, D::Error> {
    let list = Spanned::<Vec<String>>::deserialize(d)?;
    let span = list.span();
    let addrs = list
        .get_ref()
        .iter()
        .map(|s| ListenAddr::parse(s).map_err(D::Error::custom))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Spanned::new(span, addrs)))
}

/// The message for an integer outside its range (config.md lists them).
pub(super) fn out_of_range(n: i64, min: u64, max: u64) -> String {
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
    crate::ops::daemon::lookup_ids(&name, "").map_err(|e| D::Error::custom(e.to_string()))?;
    Ok(name)
}

fn existing_group<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    crate::ops::daemon::lookup_ids("", &name).map_err(|e| D::Error::custom(e.to_string()))?;
    Ok(name)
}

/// The URL as written, with its span; `storage::resolve` checks it once
/// the config file's directory is known (a relative `sslrootcert` is
/// relative to it).
fn postgres_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Spanned<String>>, D::Error> {
    Spanned::<String>::deserialize(d).map(Some)
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
