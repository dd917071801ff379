//! One namespace for many front-ends: the PostgreSQL backend
//! (docs/postgres.md).
//!
//! jnhpd replicates nothing: every front-end stores into the same two
//! tables, and PostgreSQL decides. A STORE is an
//! `INSERT … ON CONFLICT DO NOTHING` at READ COMMITTED, so of any number
//! of concurrent STOREs of one name exactly one inserts the row. A STORE
//! that must be validated first reserves its name with a lease row
//! (owner, expiry on the database's clock), renewed while the validator
//! runs; its insert succeeds only while that lease is still held, and
//! deleting the lease NOTIFYs front-ends whose STOREs of the name wait.
//!
//! The modules: `target` (the URL, `sslmode`, the password), `sql`
//! (tables and statements), `schema` (the columns jnhpd needs, checked
//! on every connection), `pool` (connections with their statements
//! prepared), `engine` (the task that batches requests into statements
//! and owns leases), [`import`] (`--import-datafile`).

pub(crate) mod durability;
pub(crate) mod engine;
pub mod import;
pub(crate) mod pool;
pub(crate) mod replication;
pub(crate) mod schema;
pub(crate) mod sql;
pub(crate) mod target;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

pub use engine::Namespace;
pub use target::Credentials;
pub(crate) use target::Target;

/// `[storage.postgres]`, checked (docs/configuration.md).
#[derive(Clone, PartialEq)]
pub struct PostgresSettings {
    /// As written; it may hold a password, so it is never displayed.
    pub url: String,
    /// Empty: the URL's password, else `PGPASSWORD`.
    pub password_file: PathBuf,
    /// The prefix of the tables' names (`storage.postgres.table_prefix`).
    pub table_prefix: String,
    /// Connections kept open at most.
    pub pool_size: usize,
    /// How long a name stays reserved while a STORE of it is validated.
    pub lease: Duration,
    /// How long one request to PostgreSQL may take.
    pub request_timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Bytes of names and values cached in memory.
    pub cache_bytes: usize,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        PostgresSettings {
            url: String::new(),
            password_file: PathBuf::new(),
            table_prefix: "jnhp".into(),
            pool_size: 8,
            lease: Duration::from_secs(15),
            request_timeout: Duration::from_millis(5000),
            connect_timeout: Duration::from_secs(10),
            cache_bytes: 64 << 20,
        }
    }
}

// Written by hand so that no `{:?}` of a config can show a password.
impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &"<not shown>")
            .field("password_file", &self.password_file)
            .field("table_prefix", &self.table_prefix)
            .field("pool_size", &self.pool_size)
            .field("lease", &self.lease)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("cache_bytes", &self.cache_bytes)
            .finish()
    }
}

/// What can go wrong reaching the shared namespace. Messages name the
/// server (host, port, database), never the password.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("storage.postgres.url: {0}")]
    /// The URL does not parse.
    Url(String),
    #[error("storage.postgres.password_file: {0}")]
    /// The password file cannot be read.
    Password(String),
    #[error("cannot reach PostgreSQL at {server} within {secs} s: {reason}")]
    /// No connection within the connect timeout.
    Unreachable {
        /// The server (host, port, database).
        server: String,
        /// The timeout, in seconds.
        secs: u64,
        /// The last error.
        reason: String,
    },
    #[error("PostgreSQL at {server}: {reason}")]
    /// The schema could not be created or checked.
    Schema {
        /// The server (host, port, database).
        server: String,
        /// Why.
        reason: String,
    },
    #[error("PostgreSQL at {server}: {reason}")]
    /// A query failed.
    Query {
        /// The server (host, port, database).
        server: String,
        /// Why.
        reason: String,
    },
}

/// A PostgreSQL error as one line (its SQLSTATE and message; never a
/// password: PostgreSQL does not echo one).
pub(crate) fn describe(err: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    match err.as_db_error() {
        // The server's text (a trigger's RAISE may carry any bytes),
        // escaped: it goes into log lines and must stay one line.
        Some(db) => format!(
            "{} ({})",
            crate::validator::escape_controls(db.message()),
            db.code().code()
        ),
        None => match err.source() {
            Some(source) => format!("{err}: {source}"),
            None => err.to_string(),
        },
    }
}

/// The bytes of hex text (`None` unless every pair is two hex digits):
/// NOTIFY payloads and listing cursors carry names this way.
pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Lower-case hex of `bytes` (the inverse of [`from_hex`]).
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
