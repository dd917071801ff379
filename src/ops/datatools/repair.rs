//! `jnhpd data repair PATH`: the way `redis-check-aof --fix` repairs an
//! append-only file: cut it at its first damage, keeping what was cut.
//!
//! Order matters for a repair killed at any point: the bytes to be cut
//! are copied into a new side file, which is fsynced (with its
//! directory) before the data file is truncated. Killed before the
//! truncation, the data file is as it was (and a side file, whole or
//! partial, is left beside it); after it, the side file holds the cut
//! bytes. The original is never left worse.
//!
//! What is cut: a torn tail (what the next start would cut anyway), or a
//! damaged record and everything after it, or a record no STORE may
//! hold and everything after it. A name stored twice is not cut: the
//! daemon keeps its first value and starts, and cutting there would
//! drop every later record. A bad header is not repaired (the file may
//! be another program's).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::scan::{self, Damage, End, Scan};
use super::{DataToolError, sync_parent};
use crate::protocol::Limits;

/// What a repair did.
#[derive(Debug)]
pub struct Repair {
    /// The scan before any change: records and names kept, the damage.
    pub scan: Scan,
    /// `None`: the file was clean (a repeated name aside) and is unchanged.
    pub cut: Option<Cut>,
}

/// The part cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Where the cut was made.
    pub offset: u64,
    /// Bytes cut off.
    pub bytes: u64,
    /// What was wrong at the cut.
    pub damage: Damage,
    /// Where the bytes cut off were saved.
    pub side_file: PathBuf,
}

/// Repairs the data file at `path` (see the module's doc). Refused while
/// a jnhpd holds the file's lock, which is the daemon's own (`flock`),
/// taken here for the whole repair so no jnhpd starts on it meanwhile.
pub fn repair(path: &Path, limits: Limits) -> Result<Repair, DataToolError> {
    let mut file =
        crate::base::files::open_regular(path, OpenOptions::new().read(true).write(true), None)
            .map_err(DataToolError::File)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(DataToolError::Locked {
                path: path.to_path_buf(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(DataToolError::io(path, "lock")(e)),
    }
    let meta = file.metadata().map_err(DataToolError::io(path, "read"))?;
    let scanned = {
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
        scan::scan(&mut reader, path, limits, true, |_, _, _| Ok(()))?
    };
    let (offset, damage) = match &scanned.end {
        End::Clean => {
            return Ok(Repair {
                scan: scanned,
                cut: None,
            });
        }
        End::Damaged {
            damage: Damage::BadHeader(why),
            ..
        } => {
            return Err(DataToolError::NotDataFile {
                path: path.to_path_buf(),
                why: format!("{why}; repair changes nothing"),
            });
        }
        End::TornTail { offset, damage, .. } | End::Damaged { offset, damage, .. } => {
            (*offset, damage.clone())
        }
    };
    let len = meta.len();
    let side_file = create_side_file(path, meta.permissions().mode() & 0o777)?;
    let (mut side, side_path) = side_file;
    file.seek(SeekFrom::Start(offset))
        .map_err(DataToolError::io(path, "seek"))?;
    let copied = std::io::copy(&mut (&file).take(len - offset), &mut side)
        .map_err(DataToolError::io(&side_path, "write"))?;
    if copied != len - offset {
        return Err(DataToolError::io(path, "read")(std::io::Error::other(
            format!(
                "the file shrank while it was copied ({copied} of {} bytes)",
                len - offset
            ),
        )));
    }
    side.sync_all()
        .map_err(DataToolError::io(&side_path, "sync"))?;
    sync_parent(&side_path)?;
    // The cut bytes are durable in the side file: only now is the data
    // file cut.
    file.set_len(offset)
        .map_err(DataToolError::io(path, "truncate"))?;
    file.sync_all().map_err(DataToolError::io(path, "sync"))?;
    Ok(Repair {
        scan: scanned,
        cut: Some(Cut {
            offset,
            bytes: len - offset,
            damage,
            side_file: side_path,
        }),
    })
}

/// A new side file `PATH.cut-<UTC time>` (`-2`, `-3`... if that exists),
/// created exclusively: nothing is ever overwritten.
fn create_side_file(path: &Path, mode: u32) -> Result<(File, PathBuf), DataToolError> {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    let mut base = path.as_os_str().to_owned();
    base.push(format!(".cut-{stamp}"));
    for n in 1..1000 {
        let mut name = base.clone();
        if n > 1 {
            name.push(format!("-{n}"));
        }
        let candidate = PathBuf::from(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&candidate)
        {
            Ok(file) => return Ok((file, candidate)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(DataToolError::io(&candidate, "create")(e)),
        }
    }
    Err(DataToolError::Exists {
        path: PathBuf::from(base),
    })
}
