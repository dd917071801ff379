//! External validator programs (`kind = "process"`): one run of a
//! `jnhp-determine` program per STORE, per `docs/validators.md`.
//!
//! Each run is watched by its own supervisor task, which owns the child and
//! its `max_concurrent` slot until the program is gone: the STORE gets its
//! verdict the moment the `JNHP:` line arrives, while the supervisor goes on
//! draining the program's output (so it never blocks on a full pipe) and
//! kills its whole process group at the deadline. Nothing is left behind: the
//! child is always reaped, and its group is killed after it exits so that
//! grandchildren cannot outlive it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use std::sync::atomic::Ordering::Relaxed;

use super::spec::{Input, ProcessSpec};
use super::{Cause, Peer, Validator, Verdict, reaper};
use crate::metrics::ValidatorStats;

/// How long a program's stdout and stderr are still read after it exited:
/// a process it left behind may hold them open (and is killed as an
/// orphan), and the run must not wait for that process's end.
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// How much of a program's stderr is kept for the failure log.
const STDERR_KEPT: usize = 4096;

/// Longest stdout line examined; the rest of a longer line is skipped (a
/// verdict line that long is malformed).
const MAX_OUTPUT_LINE: usize = 4096;

/// A program run once per STORE.
#[derive(Debug)]
pub struct Process {
    spec: ProcessSpec,
    slots: Arc<Semaphore>,
    /// Where STOREs waiting for a slot are counted.
    stats: Arc<ValidatorStats>,
}

impl Process {
    pub fn new(spec: ProcessSpec, stats: Arc<ValidatorStats>) -> Process {
        let slots = Arc::new(Semaphore::new(spec.max_concurrent));
        Process { spec, slots, stats }
    }
}

/// A validation waiting for a `max_concurrent` slot. The chain counts it
/// in `in_flight` ("validations running now") for the whole call; while it
/// waits it is queued, not running, so it moves from one gauge to the
/// other until dropped, however the wait ends (a slot, or the STORE
/// abandoned).
pub(crate) struct Waiting<'a>(&'a ValidatorStats);

impl<'a> Waiting<'a> {
    pub(crate) fn new(stats: &'a ValidatorStats) -> Waiting<'a> {
        stats.queued.fetch_add(1, Relaxed);
        stats.in_flight.fetch_sub(1, Relaxed);
        Waiting(stats)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_add(1, Relaxed);
        self.0.queued.fetch_sub(1, Relaxed);
    }
}

#[async_trait]
impl Validator for Process {
    async fn validate(&self, name: &[u8], value: &[u8], peer: &Peer) -> Verdict {
        let waiting = Waiting::new(&self.stats);
        let slot = self.slots.clone().acquire_owned().await;
        drop(waiting);
        let Ok(slot) = slot else {
            return Verdict::Failure(Cause::NoVerdict, "validator closed".into());
        };
        let mut command = Command::new(&self.spec.program);
        command
            .args(&self.spec.args)
            .env("JNHP_NAME", OsStr::from_bytes(name))
            .env("JNHP_VALUE_BYTES", value.len().to_string())
            .env(
                "JNHP_PEER",
                peer.addr.map(|a| a.to_string()).unwrap_or_default(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills its children too.
            .process_group(0);
        match &peer.cert_subject {
            Some(subject) => command.env("JNHP_PEER_CERT_SUBJECT", subject),
            None => command.env_remove("JNHP_PEER_CERT_SUBJECT"),
        };
        let input = match self.spec.input {
            Input::Argv => {
                command.arg(OsStr::from_bytes(value)).stdin(Stdio::null());
                None
            }
            Input::Stdin => {
                command.stdin(Stdio::piped());
                let mut data = Vec::with_capacity(value.len() + 1);
                data.extend_from_slice(value);
                data.push(b'\n');
                Some(data)
            }
        };
        let deadline = Instant::now() + self.spec.timeout;
        let (run, child) = match reaper::Run::spawn(&mut command) {
            Ok(spawned) => spawned,
            Err(err) => return Verdict::Failure(Cause::Spawn, format!("cannot start: {err}")),
        };
        let (verdict_tx, verdict_rx) = oneshot::channel();
        let supervisor = Supervisor {
            group: Group::of(&child),
            run: Some(run),
            child,
            deadline,
            timeout: self.spec.timeout,
            verdict: Some(verdict_tx),
        };
        tokio::spawn(async move {
            supervisor.supervise(input).await;
            drop(slot); // the slot is free only once the program is gone
        });
        verdict_rx
            .await
            .unwrap_or_else(|_| Verdict::Failure(Cause::NoVerdict, "the supervisor stopped".into()))
    }

    fn describe(&self) -> String {
        let mut text = self.spec.program.display().to_string();
        for arg in &self.spec.args {
            text.push(' ');
            text.push_str(arg);
        }
        text
    }
}

/// A process group that is killed when dropped (unless disarmed).
pub(super) struct Group(pub(super) Option<Pid>);

impl Group {
    pub(super) fn of(child: &Child) -> Group {
        Group(child.id().map(|pid| Pid::from_raw(pid as i32)))
    }

    pub(super) fn kill(&self) {
        if let Some(pgid) = self.0 {
            // ESRCH: the group is already empty.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Watches one run of the program until it is gone.
struct Supervisor {
    child: Child,
    group: Group,
    /// Taken and dropped once the program is reaped: that ends the run,
    /// and its orphans are killed then.
    run: Option<reaper::Run>,
    deadline: Instant,
    timeout: Duration,
    verdict: Option<oneshot::Sender<Verdict>>,
}

impl Supervisor {
    fn decide(&mut self, verdict: Verdict) {
        if let Some(tx) = self.verdict.take() {
            // The STORE may have been abandoned (shutdown); nobody to tell.
            let _ = tx.send(verdict);
        }
    }

    async fn supervise(mut self, input: Option<Vec<u8>>) {
        let mut stdout = self.child.stdout.take();
        let mut stderr = self.child.stderr.take();
        let stdin = self.child.stdin.take();
        let mut scanner = VerdictScanner::default();
        let mut kept_stderr = Vec::new();
        let mut status: Option<std::io::Result<ExitStatus>> = None;
        let feed = feed_stdin(stdin, input);
        tokio::pin!(feed);
        let mut fed = false;
        let mut out_buf = vec![0u8; 8192];
        let mut err_buf = vec![0u8; 8192];
        let mut timed_out = false;
        // Once the program is reaped, its pipes are read only until then.
        let mut pipes_until: Option<Instant> = None;
        while status.is_none() || stdout.is_some() || stderr.is_some() {
            tokio::select! {
                read = read_some(&mut stdout, &mut out_buf), if stdout.is_some() => match read {
                    Some(n) => {
                        if let Some(verdict) = scanner.feed(&out_buf[..n]) {
                            self.decide(verdict);
                        }
                    }
                    None => {
                        stdout = None;
                        if let Some(verdict) = scanner.finish() {
                            self.decide(verdict);
                        }
                    }
                },
                read = read_some(&mut stderr, &mut err_buf), if stderr.is_some() => match read {
                    Some(n) => {
                        let room = STDERR_KEPT.saturating_sub(kept_stderr.len());
                        kept_stderr.extend_from_slice(&err_buf[..n.min(room)]);
                    }
                    None => stderr = None,
                },
                () = &mut feed, if !fed => fed = true,
                exit = self.child.wait(), if status.is_none() => {
                    status = Some(exit);
                    // The program is gone; whatever it left in its group
                    // goes too (this also closes pipes they hold open),
                    // and so does what left the group: the run is over.
                    self.group.kill();
                    self.run = None;
                    pipes_until = Some(Instant::now() + PIPE_GRACE);
                }
                () = crate::base::timer::sleep_until_or_never(pipes_until) => {
                    // Something outside the program still holds its
                    // pipes open: what is in them by now is all it wrote.
                    // Stop reading, and catch what has arrived as an
                    // orphan since the run ended.
                    if let Some(verdict) = scanner.finish() {
                        self.decide(verdict);
                    }
                    reaper::sweep_now();
                    break;
                }
                () = tokio::time::sleep_until(self.deadline) => {
                    timed_out = true;
                    break;
                }
                // Nobody waits for the verdict any more (the chain's
                // deadline passed, or the STORE was abandoned): the
                // program is stopped now, not left to hold its slot until
                // its own timeout.
                () = abandoned(&mut self.verdict), if self.verdict.is_some() => {
                    self.verdict = None;
                    timed_out = true;
                    break;
                }
            }
        }
        if timed_out {
            self.group.kill();
            if status.is_none() {
                let _ = self.child.wait().await;
            }
        }
        // The child is reaped: its pid (and so the group id) may be reused,
        // so the group must not be signalled again.
        self.group.0 = None;
        if self.verdict.is_some() {
            let cause = if timed_out {
                format!("timed out after {} ms", self.timeout.as_millis())
            } else {
                match status {
                    Some(Ok(status)) => format!("{status} without a verdict"),
                    Some(Err(err)) => format!("cannot wait for it: {err}"),
                    None => "ended without a verdict".into(),
                }
            };
            let stderr = String::from_utf8_lossy(&kept_stderr);
            let stderr = stderr.trim_end();
            let message = if stderr.is_empty() {
                format!("{cause} (stderr empty)")
            } else {
                format!("{cause}; stderr: {stderr}")
            };
            let cause = if timed_out {
                Cause::Timeout
            } else {
                Cause::NoVerdict
            };
            self.decide(Verdict::Failure(cause, message));
        }
    }
}

/// Resolves once the receiver of `verdict` is gone (never if it is
/// `None`; the branch awaiting it is disabled then).
async fn abandoned(verdict: &mut Option<oneshot::Sender<Verdict>>) {
    match verdict {
        Some(tx) => tx.closed().await,
        None => std::future::pending().await,
    }
}

/// Writes the value to the program's stdin and closes it. A program that
/// exits without reading makes the write fail: not an error.
async fn feed_stdin(stdin: Option<ChildStdin>, input: Option<Vec<u8>>) {
    if let (Some(mut stdin), Some(input)) = (stdin, input) {
        let _ = stdin.write_all(&input).await;
    }
}

/// Reads from `pipe`; `None` at end of file or on an error.
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    match pipe.as_mut()?.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

/// Finds the verdict in a program's stdout as it streams in: the first line
/// that begins with `JNHP:`. Holds at most one line of `MAX_OUTPUT_LINE`
/// bytes, whatever the program writes.
#[derive(Debug, Default)]
pub struct VerdictScanner {
    line: Vec<u8>,
    /// Skipping the rest of an over-long line.
    skipping: bool,
    decided: bool,
}

impl VerdictScanner {
    /// Consumes a chunk of output; returns the verdict once its line is
    /// complete (only once).
    pub fn feed(&mut self, mut chunk: &[u8]) -> Option<Verdict> {
        while !self.decided && !chunk.is_empty() {
            let (part, rest, complete) = match memchr::memchr(b'\n', chunk) {
                Some(at) => (&chunk[..at], &chunk[at + 1..], true),
                None => (chunk, &[][..], false),
            };
            chunk = rest;
            if !self.skipping {
                let room = MAX_OUTPUT_LINE - self.line.len();
                if part.len() > room {
                    self.line.extend_from_slice(&part[..room]);
                    // A verdict line this long is malformed; any other
                    // line is skipped.
                    if self.line.starts_with(b"JNHP:") {
                        self.decided = true;
                        return Some(Verdict::Failure(
                            Cause::Malformed,
                            "malformed verdict: line too long".into(),
                        ));
                    }
                    self.line.clear();
                    self.skipping = true;
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            if complete && let Some(verdict) = self.end_line() {
                return Some(verdict);
            }
        }
        None
    }

    /// At end of output: a last line without a line end counts too.
    pub fn finish(&mut self) -> Option<Verdict> {
        if self.decided || self.skipping {
            return None;
        }
        self.end_line()
    }

    fn end_line(&mut self) -> Option<Verdict> {
        let skipped = std::mem::replace(&mut self.skipping, false);
        let line = std::mem::take(&mut self.line);
        if skipped {
            return None;
        }
        let verdict = parse_verdict(&line)?;
        self.decided = true;
        Some(verdict)
    }
}

/// The verdict of one output line, or `None` if it is not a `JNHP:` line.
/// The rest of the line, with trailing CR and blanks trimmed, must be a
/// decimal integer with an optional sign: non-zero allows, zero denies.
pub fn parse_verdict(line: &[u8]) -> Option<Verdict> {
    let rest = line.strip_prefix(b"JNHP:")?;
    let end = rest
        .iter()
        .rposition(|&b| !matches!(b, b'\r' | b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    let number = &rest[..end];
    let digits = number
        .strip_prefix(b"+")
        .or_else(|| number.strip_prefix(b"-"))
        .unwrap_or(number);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Some(Verdict::Failure(
            Cause::Malformed,
            format!("malformed verdict {:?}", String::from_utf8_lossy(line)),
        ));
    }
    Some(if digits.iter().any(|&d| d != b'0') {
        Verdict::Allow
    } else {
        Verdict::Deny
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn malformed(v: Option<Verdict>) -> bool {
        matches!(v, Some(Verdict::Failure(..)))
    }

    #[test]
    fn verdict_lines() {
        assert_eq!(parse_verdict(b"JNHP:1"), Some(Verdict::Allow));
        assert_eq!(parse_verdict(b"JNHP:-7"), Some(Verdict::Allow));
        assert_eq!(parse_verdict(b"JNHP:+12 \t\r"), Some(Verdict::Allow));
        assert_eq!(
            parse_verdict(b"JNHP:99999999999999999999999999"),
            Some(Verdict::Allow)
        );
        assert_eq!(parse_verdict(b"JNHP:0"), Some(Verdict::Deny));
        assert_eq!(parse_verdict(b"JNHP:-000"), Some(Verdict::Deny));
        for bad in [
            &b"JNHP:"[..],
            b"JNHP:abc",
            b"JNHP:1x",
            b"JNHP: 1",
            b"JNHP:+",
            b"JNHP:1 2",
            b"JNHP:\r",
        ] {
            assert!(
                malformed(parse_verdict(bad)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_verdict(b"jnhp:1"), None);
        assert_eq!(parse_verdict(b"xJNHP:1"), None);
        assert_eq!(parse_verdict(b""), None);
    }

    #[test]
    fn the_first_jnhp_line_decides_once() {
        let mut s = VerdictScanner::default();
        assert_eq!(s.feed(b"hello\njnhp:1\nJNHP"), None);
        assert_eq!(s.feed(b":0\r\nJNHP:1\n"), Some(Verdict::Deny));
        assert_eq!(s.feed(b"JNHP:1\n"), None);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn a_last_line_without_newline_counts_at_eof() {
        let mut s = VerdictScanner::default();
        assert_eq!(s.feed(b"noise\nJNHP:5"), None);
        assert_eq!(s.finish(), Some(Verdict::Allow));
    }

    #[test]
    fn long_lines_are_skipped_and_memory_stays_bounded() {
        let mut s = VerdictScanner::default();
        for _ in 0..1000 {
            assert_eq!(s.feed(&[b'x'; 10_000]), None);
            assert!(s.line.capacity() <= 2 * MAX_OUTPUT_LINE);
        }
        // The JNHP: inside the skipped line is not at a line start.
        assert_eq!(s.feed(b"JNHP:1\nJNHP:0\n"), Some(Verdict::Deny));

        let mut s = VerdictScanner::default();
        let mut long = b"JNHP:".to_vec();
        long.extend(std::iter::repeat_n(b'1', MAX_OUTPUT_LINE));
        assert!(malformed(s.feed(&long)));
    }

    proptest! {
        /// However the output is cut into reads, the scanner reaches the
        /// same verdict as reading it whole.
        #[test]
        fn chunking_does_not_change_the_verdict(
            lines in proptest::collection::vec(
                prop_oneof![Just("JNHP:1".to_string()), Just("JNHP:0".to_string()),
                            Just("JNHP:x".to_string()), Just("junk".to_string()), "[ -~]{0,20}"],
                0..6),
            cut in 1usize..7,
        ) {
            let text = lines.join("\n");
            let mut whole = VerdictScanner::default();
            let expected = whole.feed(text.as_bytes()).or_else(|| whole.finish());
            let mut pieces = VerdictScanner::default();
            let mut got = None;
            for chunk in text.as_bytes().chunks(cut) {
                if let Some(v) = pieces.feed(chunk) {
                    got = Some(v);
                    break;
                }
            }
            let got = got.or_else(|| pieces.finish());
            prop_assert_eq!(got, expected);
        }
    }
}
