//! Writing to stderr without ever waiting on a reader that stopped.
//!
//! jnhpd's log lines and the decision log (`decision_log = "stderr"`)
//! share stderr. When it is a pipe whose reader stopped (a stuck journal
//! forwarder, a `| less` left paused), a plain write blocks once the pipe
//! is full, and every thread that logs after it (one serving a STORE in
//! `warn` mode, the one handling SIGTERM) would block with it, for ever.
//!
//! So when stderr is a pipe, lines are written through a non-blocking
//! handle of their own on it (`/proc/self/fd/2` opened again: the pipe's
//! other users keep their blocking mode), under one lock, each whole or
//! not at all as far as the pipe allows: a line is waited for at most
//! the `wait` its caller gives; then it is dropped, and until a write
//! goes through again, lines are tried once and dropped if the pipe is
//! full, without waiting. A line longer than the pipe holds may be cut
//! short by a reader that stops in its middle; the next line written then
//! starts on a line of its own. Anything else (a terminal, a file, the
//! journal's socket) is written as before, blocking.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often a full pipe is looked at again while a line waits.
const RETRY: Duration = Duration::from_millis(5);

struct Pipe {
    /// A non-blocking handle on the pipe; its lock keeps lines whole.
    out: Mutex<PipeOut>,
    /// Set when a line was dropped because the pipe stayed full; cleared
    /// by the next line that goes through.
    stuck: AtomicBool,
}

struct PipeOut {
    file: File,
    /// The last line was cut short: the next one starts with a line end.
    cut: bool,
}

/// `None`: stderr is not a pipe (or could not be opened again): written
/// the ordinary way.
static PIPE: OnceLock<Option<Pipe>> = OnceLock::new();

fn pipe() -> Option<&'static Pipe> {
    PIPE.get_or_init(|| {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let meta = std::fs::metadata("/proc/self/fd/2").ok()?;
        if !meta.file_type().is_fifo() {
            return None;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open("/proc/self/fd/2")
            .ok()?;
        Some(Pipe {
            out: Mutex::new(PipeOut { file, cut: false }),
            stuck: AtomicBool::new(false),
        })
    })
    .as_ref()
}

/// Writes `bytes` (whole lines) to stderr, waiting at most `wait` for a
/// pipe's reader to make room (not at all while the pipe is known to be
/// stuck). Whether they were written whole.
pub(crate) fn write(bytes: &[u8], wait: Duration) -> bool {
    let Some(pipe) = pipe() else {
        return std::io::stderr().lock().write_all(bytes).is_ok();
    };
    // A poisoned lock only means a panic while writing; the pipe is fine.
    let mut out = pipe.out.lock().unwrap_or_else(|e| e.into_inner());
    let wait = if pipe.stuck.load(Relaxed) {
        Duration::ZERO
    } else {
        wait
    };
    let until = Instant::now() + wait;
    if out.cut {
        if !write_within(&mut out.file, b"\n", until) {
            pipe.stuck.store(true, Relaxed);
            return false;
        }
        out.cut = false;
    }
    let written = write_within_counting(&mut out.file, bytes, until);
    if written == bytes.len() {
        pipe.stuck.store(false, Relaxed);
        true
    } else {
        out.cut = written > 0;
        pipe.stuck.store(true, Relaxed);
        false
    }
}

fn write_within(file: &mut File, bytes: &[u8], until: Instant) -> bool {
    write_within_counting(file, bytes, until) == bytes.len()
}

/// Writes as much of `bytes` as the pipe takes before `until`; how much.
fn write_within_counting(file: &mut File, bytes: &[u8], until: Instant) -> usize {
    let mut written = 0;
    while written < bytes.len() {
        match file.write(&bytes[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                std::thread::sleep(RETRY.min(until - now));
            }
            Err(_) => break,
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pipe_takes_what_fits_and_the_wait_is_bounded() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        let mut file = File::from(write);
        let big = vec![b'x'; 4 << 20];
        let t = Instant::now();
        let took = write_within_counting(&mut file, &big, t + Duration::from_millis(200));
        assert!(took > 0 && took < big.len(), "{took}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        // Full now: nothing more goes, at once.
        let t = Instant::now();
        assert!(!write_within(&mut file, b"line\n", t));
        drop(read);
    }
}
