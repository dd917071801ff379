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
use toml::Spanned;

use crate::protocol::Limits;
pub use crate::validator::OnFailure;

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
    /// `[[validator]]` tables as written; [`Config::parse`] resolves them
    /// into `validators`.
    #[serde(rename = "validator")]
    raw_validators: Vec<RawValidator>,
    /// The validator chain, in order, checked and resolved.
    #[serde(skip)]
    pub validators: Vec<ValidatorSpec>,
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
    /// As written, with its place in the file for error messages.
    #[serde(rename = "path")]
    raw_path: Option<Spanned<PathBuf>>,
    /// Empty: memory only. Else the data file, resolved against the config
    /// file's directory.
    #[serde(skip)]
    pub path: PathBuf,
    pub fsync: Fsync,
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
        if let Some(raw) = config.storage.raw_path.take()
            && !raw.get_ref().as_os_str().is_empty()
        {
            let at = raw.span().start;
            let data = base.join(raw.into_inner());
            check_data_dir(&data).map_err(|message| ConfigError::Invalid {
                path: path.to_path_buf(),
                line: line_of(text, at),
                key: "storage.path: ".into(),
                message,
            })?;
            config.storage.path = data;
        }
        config.validators = std::mem::take(&mut config.raw_validators)
            .into_iter()
            .enumerate()
            .map(|(i, raw)| raw.resolve(i, base))
            .collect::<Result<_, _>>()
            .map_err(|e| ConfigError::Invalid {
                path: path.to_path_buf(),
                line: line_of(text, e.at),
                key: format!("validator[{}].{}: ", e.index, e.key),
                message: e.message,
            })?;
        config.daemon.workdir = base.join(&config.daemon.workdir);
        if !config.daemon.pidfile.as_os_str().is_empty() {
            config.daemon.pidfile = base.join(&config.daemon.pidfile);
        }
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

/// The data file's directory must exist and be writable (the file itself
/// is created at start if missing).
fn check_data_dir(data: &Path) -> Result<(), String> {
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

/// What a validator looks at (`field`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    Name,
    #[default]
    Value,
}

/// How a process validator receives the value (`input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Input {
    /// The value is the program's last argument.
    #[default]
    Argv,
    /// The value, then `\n`, on the program's stdin.
    Stdin,
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
/// requires or allows) can still name the line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidator {
    kind: Spanned<Kind>,
    function: Option<Spanned<String>>,
    max: Option<Spanned<u64>>,
    field: Option<Spanned<Field>>,
    pattern: Option<Spanned<String>>,
    path: Option<Spanned<PathBuf>>,
    command: Option<Spanned<Vec<String>>>,
    input: Option<Spanned<Input>>,
    timeout_ms: Option<Spanned<u64>>,
    max_concurrent: Option<Spanned<usize>>,
    children: Option<Spanned<usize>>,
    concurrency: Option<Spanned<usize>>,
    max_requests: Option<Spanned<u64>>,
    on_failure: Option<Spanned<OnFailure>>,
}

/// One checked validator of the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatorSpec {
    pub check: Check,
    pub on_failure: OnFailure,
}

/// What a validator runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// `kind = "function"`, `function = "max_bytes"`: value at most `max` bytes.
    MaxBytes { max: u64 },
    /// `kind = "function"`, `function = "regex"`: `field` must match.
    Regex { field: Field, pattern: String },
    /// `kind = "blocking"`, `function = "denylist"`: refuse listed values.
    Denylist { path: PathBuf },
    /// `kind = "process"`: one program run per STORE.
    Process(ProcessSpec),
    /// `kind = "helper"`: long-running programs answering many STOREs.
    Helper(HelperSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HelperSpec {
    /// The program, resolved as for `process`.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Helper processes at most (started as needed).
    pub children: usize,
    /// Requests in flight per helper at most.
    pub concurrency: usize,
    /// Per request, from when it is written.
    pub timeout: Duration,
    /// Retire a helper after this many requests; 0 = never.
    pub max_requests: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// The program, resolved (relative to the config file, or from PATH).
    pub program: PathBuf,
    pub args: Vec<String>,
    pub input: Input,
    pub timeout: Duration,
    pub max_concurrent: usize,
}

/// A problem with one `[[validator]]` table, located by byte offset.
struct ValidatorError {
    index: usize,
    at: usize,
    key: &'static str,
    message: String,
}

impl RawValidator {
    fn resolve(self, index: usize, base: &Path) -> Result<ValidatorSpec, ValidatorError> {
        let err = |at: usize, key: &'static str, message: String| ValidatorError {
            index,
            at,
            key,
            message,
        };
        let kind_at = self.kind.span().start;
        let kind = *self.kind.get_ref();
        // Which keys each kind takes; any other key set is an error, not a
        // silently ignored line.
        let allowed: &[&str] = match kind {
            Kind::Function => &["function", "max", "field", "pattern", "on_failure"],
            Kind::Blocking => &["function", "path", "on_failure"],
            Kind::Process => &[
                "command",
                "input",
                "timeout_ms",
                "max_concurrent",
                "on_failure",
            ],
            Kind::Helper => &[
                "command",
                "children",
                "concurrency",
                "timeout_ms",
                "max_requests",
                "on_failure",
            ],
        };
        let present = [
            ("function", self.function.as_ref().map(|s| s.span().start)),
            ("max", self.max.as_ref().map(|s| s.span().start)),
            ("field", self.field.as_ref().map(|s| s.span().start)),
            ("pattern", self.pattern.as_ref().map(|s| s.span().start)),
            ("path", self.path.as_ref().map(|s| s.span().start)),
            ("command", self.command.as_ref().map(|s| s.span().start)),
            ("input", self.input.as_ref().map(|s| s.span().start)),
            (
                "timeout_ms",
                self.timeout_ms.as_ref().map(|s| s.span().start),
            ),
            (
                "max_concurrent",
                self.max_concurrent.as_ref().map(|s| s.span().start),
            ),
        ];
        for (key, at) in present {
            if let Some(at) = at
                && !allowed.contains(&key)
            {
                return Err(err(
                    at,
                    key,
                    format!("not used by kind = \"{}\"", kind_name(kind)),
                ));
            }
        }
        let required = |key: &'static str| {
            err(
                kind_at,
                key,
                format!("required by kind = \"{}\"", kind_name(kind)),
            )
        };
        let on_failure = self.on_failure.map(|s| s.into_inner()).unwrap_or_default();
        let function = self
            .function
            .as_ref()
            .map(|f| (f.span().start, f.get_ref().as_str()));
        // Keys a function does not take are refused like other unused keys.
        let only = |keys: &[(&'static str, Option<usize>)], wanted: &[&str], name: &str| {
            for (key, at) in keys {
                if let Some(at) = at
                    && !wanted.contains(key)
                {
                    return Err(err(*at, key, format!("not used by function = \"{name}\"")));
                }
            }
            Ok(())
        };
        let check = match kind {
            Kind::Function => match function {
                Some((_, "max_bytes")) => {
                    only(&present, &["function", "max"], "max_bytes")?;
                    let max = self.max.ok_or_else(|| required("max"))?.into_inner();
                    Check::MaxBytes { max }
                }
                Some((_, "regex")) => {
                    only(&present, &["function", "field", "pattern"], "regex")?;
                    let pattern = self.pattern.ok_or_else(|| required("pattern"))?;
                    if let Err(e) = regex::bytes::Regex::new(pattern.get_ref()) {
                        return Err(err(
                            pattern.span().start,
                            "pattern",
                            format!("invalid regex: {e}"),
                        ));
                    }
                    Check::Regex {
                        field: self.field.map(|f| f.into_inner()).unwrap_or_default(),
                        pattern: pattern.into_inner(),
                    }
                }
                Some((at, other)) => {
                    return Err(err(
                        at,
                        "function",
                        format!(
                            "unknown function {other:?} for kind = \"function\", expected \"max_bytes\" or \"regex\""
                        ),
                    ));
                }
                None => return Err(required("function")),
            },
            Kind::Blocking => match function {
                Some((_, "denylist")) => {
                    let path = self.path.ok_or_else(|| required("path"))?;
                    let at = path.span().start;
                    let path = base.join(path.into_inner());
                    if let Err(e) = std::fs::File::open(&path) {
                        return Err(err(
                            at,
                            "path",
                            format!("cannot read {}: {e}", path.display()),
                        ));
                    }
                    Check::Denylist { path }
                }
                Some((at, other)) => {
                    return Err(err(
                        at,
                        "function",
                        format!(
                            "unknown function {other:?} for kind = \"blocking\", expected \"denylist\""
                        ),
                    ));
                }
                None => return Err(required("function")),
            },
            Kind::Process | Kind::Helper => {
                let command = self.command.ok_or_else(|| required("command"))?;
                let at = command.span().start;
                let mut command = command.into_inner().into_iter();
                let Some(program) = command.next() else {
                    return Err(err(at, "command", "must name a program".into()));
                };
                let program =
                    find_program(&program, base).map_err(|message| err(at, "command", message))?;
                let args = command.collect();
                let timeout =
                    Duration::from_millis(self.timeout_ms.map(|t| t.into_inner()).unwrap_or(5000));
                let at_least_one = |value: Option<Spanned<usize>>,
                                    key: &'static str,
                                    default: usize| match value {
                    Some(v) if *v.get_ref() == 0 => {
                        Err(err(v.span().start, key, "must be at least 1".into()))
                    }
                    Some(v) => Ok(v.into_inner()),
                    None => Ok(default),
                };
                if kind == Kind::Process {
                    Check::Process(ProcessSpec {
                        program,
                        args,
                        input: self.input.map(|i| i.into_inner()).unwrap_or_default(),
                        timeout,
                        max_concurrent: at_least_one(self.max_concurrent, "max_concurrent", 16)?,
                    })
                } else {
                    Check::Helper(HelperSpec {
                        program,
                        args,
                        children: at_least_one(self.children, "children", 4)?,
                        concurrency: at_least_one(self.concurrency, "concurrency", 32)?,
                        timeout,
                        max_requests: self.max_requests.map(|m| m.into_inner()).unwrap_or(0),
                    })
                }
            }
        };
        Ok(ValidatorSpec { check, on_failure })
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
            err.starts_with("/etc/jnhp.toml:5: validator[0].concurrency: must be at least 1"),
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
            "[daemon]\ndaemonize = true\npidfile = \"run/j.pid\"\nuser = \"root\"\ngroup = \"root\"\n\
             [log]\ntarget = \"syslog\"\nsyslog_facility = \"local3\"\n",
        )
        .unwrap();
        assert!(c.daemon.daemonize);
        assert_eq!(c.daemon.pidfile, PathBuf::from("/etc/run/j.pid"));
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
                "4: validator[0].max_concurrent: must be at least 1",
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

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let c =
            Config::parse("[daemon]\nworkdir = \"w\"\n", Path::new("/etc/jnhp/j.toml")).unwrap();
        assert_eq!(c.daemon.workdir, PathBuf::from("/etc/jnhp/w"));
    }
}
