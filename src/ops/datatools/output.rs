//! Writing a new file whole or not at all: a temporary file beside the
//! destination (so the rename stays on one file system, wherever the
//! destination is), fsynced, renamed into place, and the directory
//! fsynced. A crash leaves either no destination or the whole of it
//! (and at worst a stray `.NAME.partial-PID` file).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{DataToolError, sync_parent};

/// A destination being written.
pub struct Output {
    dest: PathBuf,
    temp: PathBuf,
    force: bool,
    writer: Option<BufWriter<File>>,
}

impl Output {
    /// Starts writing `dest` with permission bits `mode`. Without
    /// `force`, an existing `dest` is refused now and at the rename (no
    /// replacing what appeared meanwhile); with it, only a regular file
    /// is replaced (never a FIFO, a device or a directory), and never
    /// the file being read (`source`, opened): replacing a data file a
    /// jnhpd is appending to would leave its later STOREs in a file no
    /// longer in any directory.
    pub fn create(
        dest: &Path,
        force: bool,
        mode: u32,
        source: &std::fs::Metadata,
    ) -> Result<Output, DataToolError> {
        if let Ok(meta) = std::fs::metadata(dest)
            && meta.dev() == source.dev()
            && meta.ino() == source.ino()
        {
            return Err(DataToolError::SameFile {
                path: dest.to_path_buf(),
            });
        }
        if let Ok(meta) = std::fs::symlink_metadata(dest) {
            if !force {
                return Err(DataToolError::Exists {
                    path: dest.to_path_buf(),
                });
            }
            let kind = meta.file_type();
            if !kind.is_file() {
                return Err(DataToolError::NotReplaceable {
                    path: dest.to_path_buf(),
                    kind: crate::base::files::kind(kind),
                });
            }
            refuse_a_held_data_file(dest)?;
        }
        let file_name = dest.file_name().ok_or_else(|| DataToolError::Input {
            path: dest.to_path_buf(),
            reason: "names no file".into(),
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(".partial-{}", std::process::id()));
        let temp = dest.with_file_name(temp_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(DataToolError::io(&temp, "create"))?;
        Ok(Output {
            dest: dest.to_path_buf(),
            temp,
            force,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Writes `bytes`, naming the output file in an error.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), DataToolError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(self.gone());
        };
        writer
            .write_all(bytes)
            .map_err(DataToolError::io(&self.temp, "write"))
    }

    /// Flushes, fsyncs and renames the file into place, then fsyncs the
    /// directory.
    pub fn finish(mut self) -> Result<(), DataToolError> {
        let writer = self.writer.take().ok_or_else(|| self.gone())?;
        let file = writer
            .into_inner()
            .map_err(|e| DataToolError::io(&self.temp, "write")(e.into_error()))?;
        file.sync_all()
            .map_err(DataToolError::io(&self.temp, "sync"))?;
        drop(file);
        let flags = match self.force {
            true => nix::fcntl::RenameFlags::empty(),
            false => nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        };
        let renamed = nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &self.temp,
            nix::fcntl::AT_FDCWD,
            &self.dest,
            flags,
        );
        match renamed {
            Ok(()) => {}
            Err(nix::errno::Errno::EEXIST) => {
                return Err(DataToolError::Exists {
                    path: self.dest.clone(),
                });
            }
            Err(e) => return Err(DataToolError::io(&self.dest, "rename into")(e.into())),
        }
        // Renamed: nothing left to remove.
        self.temp = PathBuf::new();
        sync_parent(&self.dest)
    }

    fn gone(&self) -> DataToolError {
        DataToolError::io(&self.temp, "write")(std::io::Error::other("already finished"))
    }
}

impl Drop for Output {
    /// Not finished (an error on the way): the temporary file goes.
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Refuses to replace a data file a jnhpd holds (its lock, `flock`):
/// a restore done as `backup --force BACKUP LIVE_FILE` while the daemon
/// runs would leave every later STORE in a file no longer in any
/// directory, lost at the next start. Only taken for a moment: a
/// shared lock, released when the descriptor is dropped.
fn refuse_a_held_data_file(dest: &Path) -> Result<(), DataToolError> {
    let file = match OpenOptions::new()
        .read(true)
        // Never blocks on a FIFO put there since it was checked.
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(dest)
    {
        Ok(file) => file,
        // Unreadable or gone: nothing holds it that we could see; the
        // rename decides.
        Err(_) => return Ok(()),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(DataToolError::Locked {
            path: dest.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(DataToolError::io(dest, "lock")(e)),
    }
}
