//! `[storage]`: where names are kept, resolved into one [`Storage`] with
//! only the settings of the kind chosen.

pub use crate::storage::datafile::Fsync;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::ConfigError;
use super::place::{Places, Source};
use super::raw::{RawStorage, StorageBackend};
use super::server::ServerConfig;
use crate::storage::postgres::PostgresSettings;

/// Where names are kept. The keys of one kind are refused with another
/// (`storage.fsync` with PostgreSQL, `[storage.postgres]` with a data
/// file), so what is here is exactly what is used.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Storage {
    /// No `storage.path`: names are lost at exit.
    #[default]
    Memory,
    /// `storage.path`, resolved against the config file's directory.
    DataFile {
        /// The data file.
        path: PathBuf,
        /// When it is synced.
        fsync: Fsync,
    },
    /// `storage.backend = "postgres"`: a namespace shared with other
    /// front-ends (docs/postgres.md).
    Postgres(PostgresSettings),
}

impl Storage {
    /// The data file, if names are kept in one.
    pub fn data_file(&self) -> Option<&Path> {
        match self {
            Storage::DataFile { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The PostgreSQL settings, if names are kept there.
    pub fn postgres(&self) -> Option<&PostgresSettings> {
        match self {
            Storage::Postgres(pg) => Some(pg),
            _ => None,
        }
    }
}

/// PostgreSQL's limit on an index entry (about a third of a page) keeps
/// names to this many bytes in a shared namespace.
pub const POSTGRES_MAX_NAME_BYTES: usize = 2000;

/// A refused key: the offset where it is written (else the `[storage]`
/// header's line is named), the key, why.
type Refusal = (Option<usize>, &'static str, String);

/// Checks `[storage]` and `[storage.postgres]` against the backend chosen.
/// The URL's form is checked here; whether its TLS settings load is
/// checked where the network is used (`crate::ops::preflight`), at the line
/// kept in `places`.
pub(super) fn resolve(
    raw: RawStorage,
    server: &ServerConfig,
    src: &Source,
    places: &mut Places,
) -> Result<Storage, ConfigError> {
    resolve_at(raw, server, src, places).map_err(|(at, key, message)| {
        let line = at.map_or_else(|| src.section_line("[storage]"), |at| src.line(at));
        src.invalid(line, key, message)
    })
}

fn resolve_at(
    raw: RawStorage,
    server: &ServerConfig,
    src: &Source,
    places: &mut Places,
) -> Result<Storage, Refusal> {
    let RawStorage {
        backend,
        path,
        fsync,
        postgres,
    } = raw;
    let backend_at = backend.as_ref().map(|b| b.span().start);
    let backend = backend.map(Spanned::into_inner).unwrap_or_default();
    if backend == StorageBackend::Local {
        if let Some(pg) = &postgres {
            return Err((
                Some(pg.span().start),
                "storage.postgres",
                "only with storage.backend = \"postgres\"".into(),
            ));
        }
        let fsync = fsync.map(Spanned::into_inner).unwrap_or_default();
        return match path {
            Some(raw) if !raw.get_ref().as_os_str().is_empty() => {
                let at = raw.span().start;
                let path = src.base.join(raw.into_inner());
                check_data_dir(&path).map_err(|message| (Some(at), "storage.path", message))?;
                Ok(Storage::DataFile { path, fsync })
            }
            _ => Ok(Storage::Memory),
        };
    }
    let local_only =
        "the data file's; not with storage.backend = \"postgres\" (the namespace is in PostgreSQL)";
    if let Some(raw) = path {
        return Err((Some(raw.span().start), "storage.path", local_only.into()));
    }
    if let Some(raw) = fsync {
        return Err((Some(raw.span().start), "storage.fsync", local_only.into()));
    }
    let table_at = postgres.as_ref().map(|pg| pg.span().start);
    let raw = postgres.map(Spanned::into_inner).unwrap_or_default();
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
    places.set("storage.postgres.url", src.line(url_at));
    let url = crate::storage::postgres::target::root_cert_relative_to(url.get_ref(), src.base)
        .map_err(|reason| (Some(url_at), "storage.postgres.url", reason))?;
    let password_file = match raw.password_file {
        Some(file) if !file.get_ref().as_os_str().is_empty() => {
            let at = file.span().start;
            let file = src.base.join(file.into_inner());
            crate::storage::postgres::target::read_password(&file).map_err(|e| {
                let reason = match e {
                    crate::storage::postgres::PgError::Password(reason) => reason,
                    other => other.to_string(),
                };
                (Some(at), "storage.postgres.password_file", reason)
            })?;
            file
        }
        _ => PathBuf::new(),
    };
    if server.max_name_bytes > POSTGRES_MAX_NAME_BYTES {
        return Err((
            src.key_offset("max_name_bytes"),
            "server.max_name_bytes",
            format!(
                "{} is above {POSTGRES_MAX_NAME_BYTES}, the most a name can have with storage.backend = \"postgres\" (PostgreSQL's index entry limit)",
                server.max_name_bytes
            ),
        ));
    }
    Ok(Storage::Postgres(PostgresSettings {
        url,
        password_file,
        table_prefix: raw.table_prefix,
        pool_size: raw.pool_size,
        lease: Duration::from_secs(raw.lease_secs),
        request_timeout: Duration::from_millis(raw.request_timeout_ms),
        connect_timeout: Duration::from_secs(raw.connect_timeout_secs),
        cache_bytes: raw.cache_bytes,
    }))
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
