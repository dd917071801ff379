//! `[daemon]`: forking, the pidfile, the user to run as.

use std::path::{Path, PathBuf};

use super::ConfigError;
use super::place::Source;
use super::raw::RawDaemon;

/// `[daemon]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// Fork to the background (foreground suits systemd).
    pub daemonize: bool,
    /// Written (and removed on exit) when set, also in the foreground;
    /// relative to the config file.
    pub pidfile: Option<PathBuf>,
    /// Drop privileges to this user after binding.
    pub user: Option<String>,
    /// `None`: the user's primary group.
    pub group: Option<String>,
    /// Applied when daemonized.
    pub umask: u32,
    /// Applied when daemonized.
    pub workdir: PathBuf,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            daemonize: false,
            pidfile: None,
            user: None,
            group: None,
            umask: 0o027,
            workdir: PathBuf::from("/"),
        }
    }
}

/// Resolves `[daemon]` (the user and group were looked up while
/// deserializing); `data` is the data file, which the pidfile must not be.
pub(super) fn resolve(
    raw: RawDaemon,
    src: &Source,
    data: Option<&Path>,
) -> Result<DaemonConfig, ConfigError> {
    let RawDaemon {
        daemonize,
        pidfile,
        user,
        group,
        umask,
        workdir,
    } = raw;
    let pidfile = if pidfile.as_os_str().is_empty() {
        None
    } else {
        let pidfile = src.base.join(pidfile);
        check_pidfile(&pidfile, src.path, data).map_err(|message| {
            src.invalid(
                src.key_line(&["pidfile"], "[daemon]"),
                "daemon.pidfile",
                message,
            )
        })?;
        Some(pidfile)
    };
    let named = |name: String| (!name.is_empty()).then_some(name);
    Ok(DaemonConfig {
        daemonize,
        pidfile,
        user: named(user),
        group: named(group),
        umask,
        workdir: src.base.join(workdir),
    })
}

/// Whether two paths name the same file: the same path, or (both existing)
/// the same device and inode (a symlink, a hard link, `..` in a path).
pub(super) fn same_file(a: &Path, b: &Path) -> bool {
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
fn check_pidfile(pidfile: &Path, config: &Path, data: Option<&Path>) -> Result<(), String> {
    let shown = pidfile.display();
    if same_file(pidfile, config) {
        return Err(format!("{shown} is the config file itself, not a pidfile"));
    }
    if data.is_some_and(|data| same_file(pidfile, data)) {
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
            let bytes = crate::base::files::read(pidfile, crate::base::files::PIDFILE)
                .map_err(|e| format!("{shown}: {}", e.detail()))?;
            if crate::ops::daemon::holds_only_a_pid(&bytes) {
                Ok(())
            } else {
                Err(format!(
                    "{shown} holds something other than a PID: not a pidfile jnhpd may overwrite"
                ))
            }
        }
    }
}
