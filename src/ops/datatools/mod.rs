//! The data tools behind `jnhpd data <verb>`: verify, repair, back up,
//! export and import a data file (the format is in `crate::storage::datafile`).
//!
//! Every tool reads a data file as a stream, one record at a time
//! (`scan`), so memory stays bounded whatever the file's size; the only
//! exceptions are named where they are (the index of names that
//! [`verify`] keeps to find a name stored twice, and that an import into
//! a data file keeps to find conflicts: as large as the daemon's own map
//! of names, without values).
//!
//! - `scan`: reading records, telling each kind of damage apart;
//! - [`verify`]: what a file holds and its first damage;
//! - [`repair`]: cutting a file at its first damage, keeping what was cut;
//! - [`backup`]: a consistent copy of a file a jnhpd is writing;
//! - `portable`: the JSON-lines encoding of a record;
//! - [`export`]: a data file as JSON lines;
//! - [`import`]: a data file or JSON lines into a data file (PostgreSQL
//!   namespaces through [`crate::storage::postgres::import`]);
//! - [`output`]: writing a new file whole or not at all (temp file,
//!   fsync, rename, directory fsync).

pub mod backup;
pub mod export;
pub mod import;
pub mod output;
pub(crate) mod portable;
pub mod repair;
pub(crate) mod scan;
pub mod verify;

use std::io;
use std::path::{Path, PathBuf};

use crate::base::files::FileError;

pub use scan::{Damage, End, Scan};

/// Why a data tool stopped. `Display` names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataToolError {
    #[error("{}: cannot {action}: {source}", path.display())]
    /// Reading or writing a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Not a regular file, or cannot be opened.
    #[error("{0}")]
    File(FileError),
    #[error(
        "{}: a jnhpd holds this data file (it is locked); stop it first",
        path.display()
    )]
    /// A running jnhpd holds the data file.
    Locked {
        /// The file.
        path: PathBuf,
    },
    #[error("{}: not a jnhpd data file: {why}", path.display())]
    /// The file is not a data file.
    NotDataFile {
        /// The file.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    #[error(
        "{}: damaged at byte offset {offset}: {damage}; nothing was written \
         (`jnhpd data verify` tells more, `jnhpd data repair` cuts the damage off)",
        path.display()
    )]
    /// The data file is damaged before its end.
    Damaged {
        /// The file.
        path: PathBuf,
        /// Where the damage begins.
        offset: u64,
        /// What is wrong there.
        damage: Damage,
    },
    #[error("{}: already exists (add --force to replace it)", path.display())]
    /// The output exists and `--force` was not given.
    Exists {
        /// The file.
        path: PathBuf,
    },
    #[error("{}: is the file being read; refusing to replace it", path.display())]
    /// The output is the input.
    SameFile {
        /// The file.
        path: PathBuf,
    },
    #[error("{}: is {kind}; only a regular file is replaced", path.display())]
    /// The output exists and is no regular file.
    NotReplaceable {
        /// The file.
        path: PathBuf,
        /// What it is (a directory, a FIFO ...).
        kind: &'static str,
    },
    #[error("{}: {reason}", path.display())]
    /// The input cannot be read as what it claims to be.
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    #[error("{}: {count} bad lines, nothing imported; {}", path.display(), first.join("; "))]
    /// Lines of an export that cannot be imported.
    BadLines {
        /// The file.
        path: PathBuf,
        /// How many.
        count: u64,
        /// The first few, each "line N: why".
        first: Vec<String>,
    },
    /// The data file refused a record or could not be written.
    #[error("{0}")]
    Storage(#[from] crate::storage::datafile::StorageError),
}

impl DataToolError {
    /// An I/O error of `path` while doing `action`, for `map_err`.
    pub fn io(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| DataToolError::Io {
            path,
            action,
            source,
        }
    }
}

/// Fsyncs the directory holding `path`: a new or renamed entry in it is
/// durable only then.
pub(crate) fn sync_parent(path: &Path) -> Result<(), DataToolError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(DataToolError::io(dir, "sync the directory"))
}
