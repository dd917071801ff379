//! Reading the files jnhpd is told to read: each one must be a regular
//! file, no larger than its purpose allows, and read within a time bound.
//!
//! A path in the config may name anything, or become a symlink to anything
//! before a SIGHUP: `/dev/zero` (endless), a FIFO (an `open` or a `read`
//! that never returns), a file far larger than any certificate. So every
//! read goes through [`read`]: the open does not wait (`O_NONBLOCK`: a FIFO
//! opens at once), the opened descriptor is `fstat`ed and anything but a
//! regular file is refused with what it is, the size is checked against
//! the purpose's [`Limit`] before a byte is read, and at most that many
//! bytes are read. The whole of it runs on a thread of its own that the
//! caller waits for at most [`TIMEOUT`]: a file on a hung network mount
//! costs a stuck thread, never a stuck caller.
//!
//! Large files that are read as a stream (the data file) use
//! [`open_regular`] for the same first checks.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// How long one read may take before it is given up.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Reads given up at their [`TIMEOUT`] and still running (stuck in the
/// kernel) at most; past this, reads are refused at once rather than
/// adding threads.
const MAX_STUCK: usize = 8;

/// Reads given up and still running.
static STUCK: AtomicUsize = AtomicUsize::new(0);

/// What a file is for, and so how large it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// In messages: "a config file", "a certificate file"...
    pub what: &'static str,
    pub max_bytes: u64,
}

/// The config file (`--config`).
pub const CONFIG: Limit = Limit {
    what: "a config file",
    max_bytes: 1 << 20,
};
/// A PEM certificate chain (`tls.cert_file`).
pub const CERTIFICATES: Limit = Limit {
    what: "a certificate file",
    max_bytes: 1 << 20,
};
/// A PEM private key (`tls.key_file`).
pub const KEY: Limit = Limit {
    what: "a key file",
    max_bytes: 64 << 10,
};
/// A bundle of CA certificates (`tls.client_ca_file`, the PostgreSQL
/// `sslrootcert`): a whole system bundle fits with room to spare.
pub const CA_BUNDLE: Limit = Limit {
    what: "a CA bundle",
    max_bytes: 16 << 20,
};
/// A denylist (`function = "denylist"`): a million digests fit.
pub const DENYLIST: Limit = Limit {
    what: "a denylist",
    max_bytes: 128 << 20,
};
/// A pidfile (`daemon.pidfile`): a PID and a line end; anything larger is
/// not a pidfile, and is never overwritten as one.
pub const PIDFILE: Limit = Limit {
    what: "a pidfile",
    max_bytes: 4096,
};
/// A password file (`storage.postgres.password_file`).
pub const PASSWORD: Limit = Limit {
    what: "a password file",
    max_bytes: 64 << 10,
};

/// A file that could not be read, and why. `Display` begins with the path.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FileError {
    #[error("{}: cannot read: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    #[error("{}: cannot read: it is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "{}: cannot read: larger than the {} bytes {} may have",
        path.display(), limit.max_bytes, limit.what
    )]
    TooLarge { path: PathBuf, limit: Limit },
    #[error("{}: cannot read: no answer within {} s (a hung file system?)", path.display(), TIMEOUT.as_secs())]
    TimedOut { path: PathBuf },
}

impl FileError {
    /// Why it cannot be read, without the path and "cannot read" (for
    /// messages that word them differently).
    pub fn detail(&self) -> String {
        let text = self.to_string();
        match text.split_once(": cannot read: ") {
            Some((_, detail)) => detail.to_string(),
            None => text,
        }
    }
}

/// What a file that is not regular is, in words.
pub(crate) fn kind(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Opens `path` without waiting (a FIFO opens at once) and makes sure it
/// is a regular file of at most `limit` bytes (`None`: any size). The
/// `O_NONBLOCK` flag is cleared again: on a regular file it changes
/// nothing, but the descriptor should not surprise whoever uses it.
pub fn open_regular(
    path: &Path,
    options: &mut OpenOptions,
    limit: Option<Limit>,
) -> Result<File, FileError> {
    let io = |e: std::io::Error| FileError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = options
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind: kind(meta.file_type()),
        });
    }
    if let Some(limit) = limit
        && meta.len() > limit.max_bytes
    {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    let flags =
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| io(e.into()))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| io(e.into()))?;
    Ok(file)
}

/// Checks that `path` could be [`read`] now (a regular file within
/// `limit`), without reading it.
pub fn check(path: &Path, limit: Limit) -> Result<(), FileError> {
    bounded(path, move |path| {
        open_regular(path, OpenOptions::new().read(true), Some(limit)).map(drop)
    })
}

/// Reads the whole of `path`: a regular file of at most `limit` bytes,
/// within [`TIMEOUT`]. Blocking: from async code, call it on the blocking
/// pool.
pub fn read(path: &Path, limit: Limit) -> Result<Vec<u8>, FileError> {
    bounded(path, move |path| read_now(path, limit))
}

fn read_now(path: &Path, limit: Limit) -> Result<Vec<u8>, FileError> {
    let file = open_regular(path, OpenOptions::new().read(true), Some(limit))?;
    let mut bytes = Vec::new();
    // One byte past the limit tells a file that grew since the fstat.
    file.take(limit.max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if bytes.len() as u64 > limit.max_bytes {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

/// Runs `work` on a thread of its own and waits for it at most
/// [`TIMEOUT`].
fn bounded<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce(&Path) -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    bounded_for(TIMEOUT, path, work)
}

fn bounded_for<T: Send + 'static>(
    timeout: Duration,
    path: &Path,
    work: impl FnOnce(&Path) -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    const RUNNING: u8 = 0;
    const DONE: u8 = 1;
    const ABANDONED: u8 = 2;
    let timed_out = || FileError::TimedOut {
        path: path.to_path_buf(),
    };
    if STUCK.load(Ordering::Acquire) >= MAX_STUCK {
        return Err(timed_out());
    }
    let state = Arc::new(AtomicU8::new(RUNNING));
    let (tx, rx) = mpsc::sync_channel(1);
    let owned = path.to_path_buf();
    let worker = state.clone();
    let spawned = std::thread::Builder::new()
        .name("jnhpd-read".into())
        .spawn(move || {
            let result = work(&owned);
            match worker.compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // The caller waits for it (or is about to take it).
                    let _ = tx.send(result);
                }
                // The caller gave up on this read: it is no longer stuck.
                Err(_) => {
                    STUCK.fetch_sub(1, Ordering::AcqRel);
                }
            }
        });
    if let Err(e) = spawned {
        return Err(FileError::Io {
            path: path.to_path_buf(),
            reason: format!("cannot start a thread to read it: {e}"),
        });
    }
    if let Ok(result) = rx.recv_timeout(timeout) {
        return result;
    }
    // Counted before it is marked abandoned: the worker uncounts it only
    // after seeing the mark, so the count never goes below zero.
    STUCK.fetch_add(1, Ordering::AcqRel);
    match state.compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Err(timed_out()),
        // It finished just now: its result is on its way.
        Err(_) => {
            STUCK.fetch_sub(1, Ordering::AcqRel);
            rx.recv().unwrap_or_else(|_| Err(timed_out()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        for (path, kind) in [
            (&fifo, "a FIFO"),
            (&zero, "a character device"),
            (&dir.path().to_path_buf(), "a directory"),
        ] {
            let started = std::time::Instant::now();
            let err = read(path, CONFIG).unwrap_err().to_string();
            assert!(
                err.starts_with(&path.display().to_string()) && err.contains(kind),
                "{err}"
            );
            assert!(started.elapsed() < TIMEOUT, "{err}");
        }
    }

    /// A read that does not finish in time is given up (the caller goes
    /// on) and counted as stuck until it does finish.
    #[test]
    fn a_read_that_hangs_is_given_up_at_the_timeout() {
        let (release, wait) = mpsc::channel::<()>();
        let started = std::time::Instant::now();
        let result = bounded_for(Duration::from_millis(100), Path::new("slow"), move |_| {
            let _ = wait.recv();
            Ok(())
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(result, Err(FileError::TimedOut { .. })),
            "{result:?}"
        );
        assert!(STUCK.load(Ordering::Acquire) >= 1);
        drop(release);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while STUCK.load(Ordering::Acquire) > 0 {
            assert!(std::time::Instant::now() < deadline, "still counted stuck");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn reads_up_to_the_limit_and_not_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let small = Limit {
            what: "a test file",
            max_bytes: 4,
        };
        std::fs::write(&path, b"1234").unwrap();
        assert_eq!(read(&path, small).unwrap(), b"1234");
        std::fs::write(&path, b"12345").unwrap();
        let err = read(&path, small).unwrap_err().to_string();
        assert!(
            err.contains("larger than the 4 bytes a test file may have"),
            "{err}"
        );
        assert!(check(&path, small).is_err());
        assert!(
            read(&dir.path().join("missing"), small)
                .unwrap_err()
                .to_string()
                .contains("cannot read: No such file")
        );
    }
}
