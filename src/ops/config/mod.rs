//! Loading and checking the TOML configuration (`docs/configuration.md`).
//!
//! jnhpd never starts on a config it did not fully understand: unknown keys,
//! wrong types and values outside their allowed set are all errors naming the
//! file, the line and the key.
//!
//! The file is read in two steps. `raw` deserializes it into private
//! structs that mirror the TOML (every check one key can make on its own
//! is made there). Then each section's module resolves its part into the
//! public types, which hold only states jnhpd can run with: one
//! [`Storage`] with the settings of its kind, `Option<TlsSettings>`,
//! a [`LogTarget`] with the settings of its target. Config reads files
//! (the data file's directory, the pidfile, a password file, denylists,
//! validator programs) but does no network or TLS work: resolving listen
//! names, loading certificates and the PostgreSQL URL's TLS settings are
//! the preflight's, which `--check-config`, the start and SIGHUP
//! run, naming file, line and key from `Places`.
//!
//! Modules: `raw` (the file as written), `place` (lines, and the
//! places of keys checked later), `listen`, `server` (`[server]`,
//! `[admin]`), `storage`, `tls`, `daemon`, `log` and
//! `validators` (each section resolved).

mod daemon;
mod listen;
mod log;
mod place;
mod raw;
mod server;
mod storage;
#[cfg(test)]
mod tests;
mod tls;
mod validators;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use crate::validator::spec::{
    Check, DecisionLogTarget, DenyCacheSpec, Field, HelperSpec, Input, Mode, OnFailure,
    ProcessSpec, ValidationSpec, ValidatorSpec,
};
pub use daemon::DaemonConfig;
pub use listen::{DEFAULT_LISTEN, ListenAddr};
pub use log::{LogConfig, LogLevel, LogTarget};
pub(crate) use place::Places;
pub use server::{AdminConfig, ServerConfig};
pub use storage::{Fsync, POSTGRES_MAX_NAME_BYTES, Storage};
pub use tls::{MinVersion, TlsSettings};

use place::Source;
use raw::RawConfig;

/// A configuration that could not be loaded. `Display` gives the whole
/// message (`/etc/jnhp.toml:12: server.max_connections: ...`).
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file itself: missing, not a regular file, too large, too slow.
    #[error("{0}")]
    Read(crate::base::files::FileError),
    #[error("{path}:{line}: {key}{message}")]
    /// A key with a value jnhpd cannot run with, or a file that does not
    /// parse.
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The line (1-based) the error is at.
        line: usize,
        /// The dotted key (`server.listen`), with ": " appended when known.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A key checked after loading that no file placed (the built-in
    /// defaults, a command line override).
    #[error("{key}: {message}")]
    Unplaced {
        /// The dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A configuration jnhpd can run with: every section checked and
/// resolved (paths made absolute against the config file's directory).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `[server]`: listening, limits, timeouts.
    pub server: ServerConfig,
    /// `[storage]`: where acknowledged STOREs are kept.
    pub storage: Storage,
    /// `[admin]`: the HTTP admin listener.
    pub admin: AdminConfig,
    /// `[daemon]`: pidfile, user, group.
    pub daemon: DaemonConfig,
    /// `[log]`: where logs go, and how much.
    pub log: LogConfig,
    /// JNHP/1 over TLS (docs/tls.md): `None` when the file names no
    /// certificate.
    pub tls: Option<TlsSettings>,
    /// The validator chain, in order, checked and resolved.
    pub validators: Vec<ValidatorSpec>,
    /// `[validation]`: the chain's deadline and the decision log.
    pub validation: ValidationSpec,
    /// Where the keys checked after loading were written.
    pub places: Places,
}

impl Config {
    /// Parses a config file's text. `path` is used in error messages and to
    /// resolve relative paths (relative to the file's own directory).
    /// Does no network or TLS work: run `preflight::check` on
    /// the result for what a start would still refuse (a listen name that
    /// does not resolve, a certificate that does not load).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let RawConfig {
            server,
            storage,
            admin,
            daemon,
            log,
            tls,
            validation,
            validators,
        } = RawConfig::parse(text, path)?;
        let src = Source {
            text,
            path,
            base: path.parent().unwrap_or(Path::new(".")),
        };
        let mut places = Places::new(path);
        if let Some(line) = server::listen_line(&server.listen, &src) {
            places.set("server.listen", line);
        }
        if let Some(line) = server::listen_line(&admin.listen, &src) {
            places.set("admin.listen", line);
        }
        let server = server::resolve_server(server);
        let admin = server::resolve_admin(admin);
        let storage = storage::resolve(storage, &server, &src, &mut places)?;
        let validators = validators::resolve(validators, &src)?;
        let tls = tls::resolve(tls, &src, &mut places)?;
        if server.listen.is_empty() && tls.as_ref().is_none_or(|t| t.listen.is_empty()) {
            return Err(src.invalid(
                src.section_line("[server]"),
                "server.listen",
                "at least one address is needed, here or in tls.listen",
            ));
        }
        let daemon = daemon::resolve(daemon, &src, storage.data_file())?;
        let own_files = [
            (Some(path), "the config file itself"),
            (storage.data_file(), "the data file (storage.path)"),
            (daemon.pidfile.as_deref(), "the pidfile (daemon.pidfile)"),
        ];
        let log = log::resolve(log, &src, own_files, &mut places)?;
        // The decision log must not be the log file or a denylist either:
        // two writers in one file, or decisions read back as denied values.
        let log_file = match &log.target {
            log::LogTarget::File { path } => Some(path.as_path()),
            _ => None,
        };
        let denylists: Vec<(&Path, String)> = validators
            .iter()
            .filter_map(|v| match &v.check {
                Check::Denylist { path } => Some((
                    path.as_path(),
                    format!("the denylist of validator {:?}", v.name),
                )),
                _ => None,
            })
            .collect();
        let decision_log_clashes: Vec<(Option<&Path>, &str)> = own_files
            .into_iter()
            .chain([(log_file, "the log file (log.file)")])
            .chain(denylists.iter().map(|(p, what)| (Some(*p), what.as_str())))
            .collect();
        let validation =
            validators::resolve_validation(validation, &src, &decision_log_clashes, &mut places)?;
        Ok(Config {
            server,
            storage,
            admin,
            daemon,
            log,
            tls,
            validators,
            validation,
            places,
        })
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = crate::base::files::read(path, crate::base::files::CONFIG)
            .map_err(ConfigError::Read)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            ConfigError::Read(crate::base::files::FileError::Io {
                path: path.to_path_buf(),
                reason: format!("not UTF-8 text: {e}"),
            })
        })?;
        Config::parse(&text, path)
    }

    /// jnhpd's own files, which a log must never be written into: the
    /// config file, the data file, the pidfile, the log file and the
    /// denylists (those set). The decision log checks what SIGHUP reopens
    /// against them.
    pub(crate) fn own_files(&self) -> Vec<PathBuf> {
        let log_file = match &self.log.target {
            LogTarget::File { path } => Some(path.as_path()),
            _ => None,
        };
        let denylists = self.validators.iter().filter_map(|v| match &v.check {
            Check::Denylist { path } => Some(path.as_path()),
            _ => None,
        });
        [
            Some(self.places.file()),
            self.storage.data_file(),
            self.daemon.pidfile.as_deref(),
            log_file,
        ]
        .into_iter()
        .flatten()
        .chain(denylists)
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect()
    }

    /// Where JNHP/1 over TLS is served (empty without TLS).
    pub fn tls_listen(&self) -> &[ListenAddr] {
        self.tls.as_ref().map_or(&[], |tls| &tls.listen)
    }
}
