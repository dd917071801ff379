//! Becoming a daemon: forking to the background, the pidfile, dropping
//! privileges, and telling systemd how things stand.
//!
//! Forking is done with nix directly rather than the `daemonize` crate: that
//! crate is unmaintained (RUSTSEC-2025-0069), and it cannot tell the
//! launching process whether the daemon actually started. Here the launcher
//! waits on a status pipe, as twistd does: it exits 0 only once the daemon
//! serves, and prints the daemon's start-up error and exits 1 otherwise.
//! Forking must happen before the tokio runtime exists (a forked child keeps
//! only the forking thread).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, umask};
use nix::unistd::{ForkResult, Gid, Group, Uid, User, fork, setsid};
use thiserror::Error;

/// Why daemonizing, the pidfile or dropping privileges failed.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("cannot {action}: {source}")]
    /// A system call failed.
    Sys {
        /// What was being done.
        action: String,
        /// The error.
        source: nix::Error,
    },
    #[error("cannot {action}: {source}")]
    /// A file operation failed.
    Io {
        /// What was being done.
        action: String,
        /// The error.
        source: std::io::Error,
    },
    #[error("pidfile {}: holds something other than a PID: refusing to overwrite it", path.display())]
    /// The pidfile holds something else.
    NotAPidfile {
        /// The pidfile.
        path: PathBuf,
    },
    #[error("pidfile {path} names a live jnhpd (pid {pid}): refusing to start a second one")]
    /// The pidfile names a running jnhpd.
    Live {
        /// The pidfile.
        path: PathBuf,
        /// The PID it holds.
        pid: String,
    },
    #[error("unknown {what} {name:?}")]
    /// No such user or group.
    Unknown {
        /// `user` or `group`.
        what: &'static str,
        /// The name looked up.
        name: String,
    },
    #[error("dropped privileges to uid {uid} but could become root again: refusing to run")]
    /// Dropping privileges did not stick.
    Regained {
        /// The uid switched to.
        uid: u32,
    },
}

fn sys(action: impl Into<String>) -> impl FnOnce(nix::Error) -> DaemonError {
    let action = action.into();
    move |source| DaemonError::Sys { action, source }
}

fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let action = action.into();
    move |source| DaemonError::Io { action, source }
}

/// The daemon's end of the status pipe: tells the launching process how the
/// start went. In the foreground it does nothing.
#[derive(Debug, Default)]
pub struct StartReport(Option<File>);

impl StartReport {
    /// The daemon serves: the launcher exits 0.
    pub fn ready(&mut self) {
        self.send("ok\n");
    }

    /// The start failed: the launcher prints `message` and exits 1.
    pub fn failed(&mut self, message: &str) {
        self.send(message);
    }

    fn send(&mut self, message: &str) {
        if let Some(mut pipe) = self.0.take() {
            // The launcher may have been killed; nothing to do then.
            let _ = pipe.write_all(message.as_bytes());
        }
    }
}

/// Forks into the background: returns only in the daemon, a grandchild of
/// the launching process in a new session, with `umask` and `workdir`
/// applied and stdin/stdout on /dev/null (stderr too when it is a
/// terminal: a log file or pipe the operator chose is kept). The launching
/// process waits for the daemon's [`StartReport`] and exits with it.
///
/// Call it before any thread is started.
pub fn daemonize(mask: u32, workdir: &Path) -> Result<StartReport, DaemonError> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("create a pipe"))?;
    // SAFETY: no other thread exists yet (see the doc comment), so the child
    // is a whole copy of the process.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Parent { child } => {
            drop(write_end);
            // The launcher handles no signal: ^C ends it as usual.
            release_signals();
            // The intermediate child exits at once; reap it.
            let _ = nix::sys::wait::waitpid(child, None);
            std::process::exit(launcher_waits(read_end))
        }
        ForkResult::Child => {}
    }
    drop(read_end);
    setsid().map_err(sys("start a new session"))?;
    // Fork again so the daemon is not a session leader and can never get a
    // controlling terminal back.
    // SAFETY: still single-threaded.
    match unsafe { fork() }.map_err(sys("fork"))? {
        // SAFETY: _exit ends the intermediate child without running atexit
        // handlers or flushing buffers that belong to the daemon.
        ForkResult::Parent { .. } => unsafe { nix::libc::_exit(0) },
        ForkResult::Child => {}
    }
    umask(Mode::from_bits_truncate(mask as nix::libc::mode_t));
    std::env::set_current_dir(workdir)
        .map_err(io(format!("change to workdir {}", workdir.display())))?;
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io("open /dev/null"))?;
    let mut targets = vec![0, 1];
    if nix::unistd::isatty(std::io::stderr()).unwrap_or(false) {
        targets.push(2);
    }
    for fd in targets {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        if unsafe { nix::libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) } < 0 {
            return Err(io("redirect the standard descriptors")(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(StartReport(Some(File::from(write_end))))
}

/// The signals jnhpd handles: held pending from the first moment of `main`
/// until their handlers exist.
fn handled_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(signal);
    }
    set
}

/// Blocks SIGTERM, SIGINT and SIGHUP for this thread and every thread it
/// starts: one that arrives stays pending instead of killing the process.
/// (Programs jnhpd runs start with an empty mask: the standard library
/// resets it in the child.)
pub fn hold_signals() {
    let _ = handled_signals().thread_block();
}

/// Unblocks them again on this thread: pending ones are delivered now, to
/// whatever handlers exist.
pub fn release_signals() {
    let _ = handled_signals().thread_unblock();
}

/// In the launching process: the daemon's report decides the exit status.
fn launcher_waits(read_end: OwnedFd) -> i32 {
    let mut report = String::new();
    let _ = File::from(read_end).read_to_string(&mut report);
    match report.as_str() {
        "ok\n" => 0,
        "" => {
            eprintln!("jnhpd: the daemon exited during start-up (see its log)");
            1
        }
        message => {
            eprintln!("jnhpd: {}", message.trim_end());
            1
        }
    }
}

/// A pidfile, locked for as long as this jnhpd runs and removed on exit.
///
/// The lock, not the pid written in the file, says whether another jnhpd is
/// alive: a crashed jnhpd leaves a stale file whose pid may since have been
/// reused by an unrelated process, but never a lock.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    _file: File,
}

/// A pidfile holds a pid and a newline: no more than this is read of one.
const PIDFILE_READ_BYTES: u64 = crate::base::files::PIDFILE.max_bytes;

impl Pidfile {
    /// Writes this process's PID to `path`, refusing a file that is not a
    /// pidfile or names a live jnhpd.
    pub fn create(path: &Path) -> Result<Pidfile, DaemonError> {
        let shown = path.display();
        // A regular file only: a FIFO or a device there would hang or
        // flood the reads below.
        let mut file = crate::base::files::open_regular(
            path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644),
            None,
        )
        .map_err(|e| io(format!("open pidfile {shown}"))(std::io::Error::other(e.detail())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = (&mut file)
                    .take(PIDFILE_READ_BYTES)
                    .read_to_string(&mut pid);
                return Err(DaemonError::Live {
                    path: path.to_path_buf(),
                    pid: pid.trim().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io(format!("lock pidfile {shown}"))(e));
            }
        }
        let mut stale = Vec::new();
        (&mut file)
            .take(PIDFILE_READ_BYTES + 1)
            .read_to_end(&mut stale)
            .map_err(io(format!("read pidfile {shown}")))?;
        // Only a file holding nothing but a PID is a stale pidfile: anything
        // else (the data file, the config, by an operator's slip) is left
        // exactly as it is.
        if !holds_only_a_pid(&stale) {
            return Err(DaemonError::NotAPidfile {
                path: path.to_path_buf(),
            });
        }
        let stale = String::from_utf8_lossy(&stale);
        if !stale.trim().is_empty() {
            log::info!(
                "pidfile {shown}: replacing a stale one (pid {})",
                stale.trim()
            );
        }
        file.set_len(0)
            .map_err(io(format!("truncate pidfile {shown}")))?;
        std::io::Seek::rewind(&mut file).map_err(io(format!("write pidfile {shown}")))?;
        writeln!(file, "{}", std::process::id()).map_err(io(format!("write pidfile {shown}")))?;
        Ok(Pidfile {
            path: path.to_path_buf(),
            _file: file,
        })
    }
}

/// Whether `bytes` are what a pidfile holds: nothing, or a PID (decimal
/// digits) and white space around it.
pub(crate) fn holds_only_a_pid(bytes: &[u8]) -> bool {
    bytes.len() as u64 <= PIDFILE_READ_BYTES
        && bytes.trim_ascii().iter().all(|b| b.is_ascii_digit())
}

impl Pidfile {
    /// Whether the path is still this jnhpd's pidfile: the very file it
    /// created and locked (an operator may have removed it and another
    /// jnhpd written its own there since), still holding this PID.
    fn still_ours(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let (Ok(there), Ok(mine)) = (std::fs::metadata(&self.path), self._file.metadata()) else {
            return false;
        };
        if there.dev() != mine.dev() || there.ino() != mine.ino() {
            return false;
        }
        crate::base::files::read(&self.path, crate::base::files::PIDFILE)
            .is_ok_and(|text| text.trim_ascii() == std::process::id().to_string().as_bytes())
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        if !self.still_ours() {
            log::warn!(
                "pidfile {}: no longer this jnhpd's own (replaced or removed): left as it is",
                self.path.display()
            );
            return;
        }
        if let Err(err) = std::fs::remove_file(&self.path) {
            log::warn!("cannot remove pidfile {}: {err}", self.path.display());
        }
    }
}

/// The uid and gid a `user` / `group` pair names (`group` empty: the user's
/// primary group). Checked at config load so `--check-config` reports them.
pub(crate) fn lookup_ids(
    user: &str,
    group: &str,
) -> Result<(Option<User>, Option<Gid>), DaemonError> {
    let user = match user {
        "" => None,
        name => Some(
            User::from_name(name)
                .map_err(sys(format!("look up user {name:?}")))?
                .ok_or_else(|| DaemonError::Unknown {
                    what: "user",
                    name: name.into(),
                })?,
        ),
    };
    let gid = match group {
        "" => user.as_ref().map(|u| u.gid),
        name => Some(
            Group::from_name(name)
                .map_err(sys(format!("look up group {name:?}")))?
                .ok_or_else(|| DaemonError::Unknown {
                    what: "group",
                    name: name.into(),
                })?
                .gid,
        ),
    };
    Ok((user, gid))
}

/// Drops privileges to `user` / `group`: supplementary groups first (the
/// user's own), then the gid, then the uid, and checks that root cannot be
/// regained. Does nothing when both are empty.
pub fn drop_privileges(user: &str, group: &str) -> Result<(), DaemonError> {
    let (user, gid) = lookup_ids(user, group)?;
    let Some(gid) = gid else { return Ok(()) };
    match &user {
        Some(user) => {
            let name = CString::new(user.name.as_str()).map_err(|_| DaemonError::Unknown {
                what: "user",
                name: user.name.clone(),
            })?;
            nix::unistd::initgroups(&name, gid)
                .map_err(sys(format!("set the groups of user {}", user.name)))?;
        }
        None => nix::unistd::setgroups(&[gid]).map_err(sys("set the supplementary groups"))?,
    }
    nix::unistd::setgid(gid).map_err(sys(format!("set gid {gid}")))?;
    if let Some(user) = user {
        nix::unistd::setuid(user.uid)
            .map_err(sys(format!("set uid {} ({})", user.uid, user.name)))?;
        if !user.uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err(DaemonError::Regained {
                uid: user.uid.as_raw(),
            });
        }
    }
    Ok(())
}

/// Tells systemd (when it started us with `Type=notify`) how things stand;
/// a no-op otherwise.
pub fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(err) = sd_notify::notify(state) {
        log::warn!("cannot notify systemd: {err}");
    }
}

/// Listening sockets handed over by systemd socket activation, if any.
pub fn inherited_listeners() -> std::io::Result<Vec<std::net::TcpListener>> {
    use std::os::fd::FromRawFd;
    let fds: Vec<_> = sd_notify::listen_fds()?.collect();
    fds.into_iter()
        .map(|fd| {
            // SAFETY: systemd passed us these descriptors (LISTEN_PID is
            // ours); nothing else in the process owns them.
            let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .collect()
}
