//! Persistent helper programs (`kind = "helper"`): long-running processes
//! that answer many STOREs each, many at once (validators.md, "Persistent
//! helpers"). Spawning a program per STORE costs from half a millisecond to
//! tens of milliseconds for an interpreter; a helper answers in
//! microseconds.
//!
//! One pool task owns the helpers of a validator. STOREs send it requests;
//! it writes `<id> <name> <value>` lines to a helper with room, and matches
//! the `<id> JNHP:<int>` replies (in any order) to them. Per helper, a writer
//! task feeds its stdin (a slow helper never blocks the pool), and reader
//! tasks turn its stdout lines and its exit into events for the pool and
//! log its stderr. A helper that breaks the protocol, exits or lets a request
//! time out is killed with its process group and replaced; its requests in
//! flight fail (decided by `on_failure`).

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::process::{Group, parse_verdict};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::spec::HelperSpec;
use super::{Cause, Peer, Validator, Verdict, escape_controls, reaper};
use crate::base::timer::sleep_until_or_never;
use crate::metrics::ValidatorStats;

/// Restart delays for helpers that keep failing before they serve.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Shutdown: how long helpers get to exit once their stdin is closed.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// How long an exited helper's stdout is still read for its last replies.
const STDOUT_GRACE: Duration = Duration::from_secs(1);
/// stderr: lines longer than this are cut; at most `STDERR_BURST` lines are
/// logged at once, then `STDERR_PER_SEC` a second.
const STDERR_LINE: usize = 1024;
const STDERR_BURST: f64 = 100.0;
const STDERR_PER_SEC: f64 = 10.0;

/// A validator backed by a pool of helper processes.
#[derive(Debug)]
pub struct HelperPool {
    description: String,
    requests: mpsc::UnboundedSender<Request>,
    /// Tells the pool task to shut down now, even while handles remain.
    close: tokio_util::sync::CancellationToken,
    /// The pool task, awaited by [`Validator::shutdown`].
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Request {
    name: Vec<u8>,
    value: Vec<u8>,
    reply: oneshot::Sender<Verdict>,
}

impl HelperPool {
    /// Starts the pool task (helpers themselves start on demand).
    pub fn new(spec: HelperSpec, stats: Arc<ValidatorStats>) -> HelperPool {
        let description = std::iter::once(spec.program.display().to_string())
            .chain(spec.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let (requests, incoming) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let pool = Pool {
            spec,
            description: description.clone(),
            helpers: HashMap::new(),
            next_helper: 0,
            waiting: VecDeque::new(),
            events_tx,
            failures_in_a_row: 0,
            backoff_until: None,
            stats,
        };
        let close = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(pool.run(incoming, events, close.clone()));
        HelperPool {
            description,
            requests,
            close,
            task: std::sync::Mutex::new(Some(task)),
        }
    }
}

#[async_trait]
impl Validator for HelperPool {
    async fn validate(&self, name: &[u8], value: &[u8], _peer: &Peer) -> Verdict {
        let (reply, verdict) = oneshot::channel();
        let request = Request {
            name: name.to_vec(),
            value: value.to_vec(),
            reply,
        };
        if self.requests.send(request).is_err() {
            return Verdict::Failure(Cause::BrokenHelper, "the helper pool has stopped".into());
        }
        verdict.await.unwrap_or_else(|_| {
            Verdict::Failure(Cause::BrokenHelper, "the helper pool has stopped".into())
        })
    }

    fn describe(&self) -> String {
        format!("helper {}", self.description)
    }

    async fn shutdown(&self) {
        self.close.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// What the I/O tasks of helper `helper` report to the pool.
enum Event {
    Line { helper: u64, line: Vec<u8> },
    Exited { helper: u64, status: String },
}

struct Helper {
    pid: u32,
    group: Group,
    /// Lines to write to its stdin; dropping it closes stdin.
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    in_flight: HashMap<u64, InFlight>,
    next_id: u64,
    /// Requests written so far (for `max_requests`).
    written: u64,
    /// Replies received so far.
    served: u64,
    /// No new requests: recycling after `max_requests`, or shutting down.
    retiring: bool,
    /// A retiring helper that has closed its stdin must be gone by then.
    kill_at: Option<Instant>,
}

struct InFlight {
    reply: oneshot::Sender<Verdict>,
    deadline: Instant,
}

struct Pool {
    spec: HelperSpec,
    description: String,
    helpers: HashMap<u64, Helper>,
    next_helper: u64,
    waiting: VecDeque<Request>,
    events_tx: mpsc::UnboundedSender<Event>,
    /// Helpers that broke before serving anything, in a row.
    failures_in_a_row: u32,
    /// No helper may be started before then (crash-loop back-off).
    backoff_until: Option<Instant>,
    /// Live helpers, waiting requests and restarts, for metrics.
    stats: Arc<ValidatorStats>,
}

impl Pool {
    async fn run(
        mut self,
        mut incoming: mpsc::UnboundedReceiver<Request>,
        mut events: mpsc::UnboundedReceiver<Event>,
        close: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                () = close.cancelled() => break,
                request = incoming.recv() => match request {
                    Some(request) => self.waiting.push_back(request),
                    None => break,
                },
                Some(event) = events.recv() => self.handle(event),
                () = sleep_until_or_never(wake) => self.check_deadlines(),
            }
            self.dispatch();
            self.stats
                .helper_processes
                .store(self.helpers.len() as i64, Relaxed);
            self.stats.queued.store(self.waiting.len() as i64, Relaxed);
        }
        self.stats.queued.store(0, Relaxed);
        self.shut_down(&mut events).await;
        self.stats.helper_processes.store(0, Relaxed);
    }

    /// The earliest request deadline, retirement kill, or back-off end
    /// that requests are waiting for. Never a moment already past that
    /// nothing will clear: the pool would wake again at once, forever.
    fn next_wake(&self) -> Option<Instant> {
        let helpers = self
            .helpers
            .values()
            .flat_map(|h| h.in_flight.values().map(|r| r.deadline).chain(h.kill_at));
        let backoff = self.backoff_until.filter(|_| !self.waiting.is_empty());
        helpers.chain(backoff).min()
    }

    /// Hands waiting requests to helpers, starting helpers as needed;
    /// while none can be had, fails them at once.
    ///
    /// Requests are spread over `children`: an idle helper takes the next
    /// request; if every live helper is busy and fewer than `children` run
    /// (and no back-off holds), another is started; only at `children`
    /// does a busy helper take more, the least loaded first, up to
    /// `concurrency`.
    fn dispatch(&mut self) {
        while let Some(request) = self.waiting.pop_front() {
            let concurrency = self.spec.concurrency;
            let least_loaded = self
                .helpers
                .iter()
                .filter(|(_, h)| !h.retiring && h.in_flight.len() < concurrency)
                .min_by_key(|(_, h)| h.in_flight.len())
                .map(|(id, h)| (*id, h.in_flight.len()));
            let live = self.helpers.values().filter(|h| !h.retiring).count();
            let backing_off = self.backoff_until.is_some_and(|t| Instant::now() < t);
            let may_start = live < self.spec.children && !backing_off;
            let helper = match least_loaded {
                Some((id, 0)) => id,
                Some((id, _)) if !may_start => id,
                _ if may_start => match self.start_helper().or(least_loaded.map(|(id, _)| id)) {
                    Some(id) => id,
                    None => {
                        let _ = request.reply.send(Verdict::Failure(
                            Cause::Spawn,
                            "no helper could be started".into(),
                        ));
                        continue;
                    }
                },
                _ if live == 0 => {
                    // Crash-looping: answer now rather than queue.
                    let _ = request.reply.send(Verdict::Failure(
                        Cause::BrokenHelper,
                        "no helper available (restarting)".into(),
                    ));
                    continue;
                }
                _ => {
                    // All busy: wait for a reply to free room.
                    self.waiting.push_front(request);
                    return;
                }
            };
            self.send_to(helper, request);
        }
    }

    fn send_to(&mut self, id: u64, request: Request) {
        let timeout = self.spec.timeout;
        let max_requests = self.spec.max_requests;
        let Some(helper) = self.helpers.get_mut(&id) else {
            return;
        };
        let request_id = helper.next_id;
        helper.next_id += 1;
        // Name and value are free of line ends by the protocol's rules, so
        // the request line needs no escaping.
        let mut line = Vec::with_capacity(request.name.len() + request.value.len() + 24);
        line.extend_from_slice(request_id.to_string().as_bytes());
        line.push(b' ');
        line.extend_from_slice(&request.name);
        line.push(b' ');
        line.extend_from_slice(&request.value);
        line.push(b'\n');
        if let Some(stdin) = &helper.stdin {
            let _ = stdin.send(line);
        }
        helper.in_flight.insert(
            request_id,
            InFlight {
                reply: request.reply,
                deadline: Instant::now() + timeout,
            },
        );
        helper.written += 1;
        if max_requests > 0 && helper.written >= max_requests {
            helper.retiring = true;
            log::debug!(
                "helper {} (pid {}): {max_requests} requests; retiring it",
                self.description,
                helper.pid
            );
        }
    }

    fn start_helper(&mut self) -> Option<u64> {
        let mut command = Command::new(&self.spec.program);
        command
            .args(&self.spec.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let (run, mut child) = match reaper::Run::spawn(&mut command) {
            Ok(spawned) => spawned,
            Err(err) => {
                log::error!("helper {}: cannot start: {err}", self.description);
                self.note_failure(false);
                return None;
            }
        };
        let id = self.next_helper;
        self.next_helper += 1;
        let pid = child.id().unwrap_or(0);
        let group = Group::of(&child);
        let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
        if let Some(stdin) = child.stdin.take() {
            tokio::spawn(write_lines(stdin, stdin_rx));
        }
        let stdout = child
            .stdout
            .take()
            .map(|stdout| tokio::spawn(read_lines(id, stdout, self.events_tx.clone())));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log_stderr(
                format!("helper {} (pid {pid})", self.description),
                stderr,
            ));
        }
        tokio::spawn(wait_exit(id, child, run, stdout, self.events_tx.clone()));
        log::debug!("helper {}: started pid {pid}", self.description);
        self.helpers.insert(
            id,
            Helper {
                pid,
                group,
                stdin: Some(stdin_tx),
                in_flight: HashMap::new(),
                next_id: 1,
                written: 0,
                served: 0,
                retiring: false,
                kill_at: None,
            },
        );
        Some(id)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Line { helper, line } => self.reply(helper, &line),
            Event::Exited { helper, status } => {
                if let Some(h) = self.helpers.get(&helper) {
                    if h.retiring && h.in_flight.is_empty() {
                        // Recycled (max_requests): replaced as needed.
                        self.stats.helper_restarts.fetch_add(1, Relaxed);
                        self.remove(helper);
                    } else {
                        self.broken(helper, &format!("exited ({status})"));
                    }
                }
            }
        }
        self.retire_idle();
    }

    /// One line from a helper: a reply `<id> JNHP:<verdict>`, or a broken
    /// helper.
    fn reply(&mut self, helper: u64, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some((id, verdict)) = parse_reply(line) else {
            let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
            return self.broken(
                helper,
                &format!("wrote a line that is not a reply: {shown:?}"),
            );
        };
        let Some(h) = self.helpers.get_mut(&helper) else {
            return;
        };
        let Some(request) = h.in_flight.remove(&id) else {
            return self.broken(
                helper,
                &format!("replied to request {id}, which is not in flight"),
            );
        };
        h.served += 1;
        self.failures_in_a_row = 0;
        let _ = request.reply.send(verdict);
    }

    /// Closes the stdin of retiring helpers whose last reply is in.
    fn retire_idle(&mut self) {
        let timeout = self.spec.timeout;
        for helper in self.helpers.values_mut() {
            if helper.retiring && helper.in_flight.is_empty() && helper.stdin.is_some() {
                helper.stdin = None;
                helper.kill_at = Some(Instant::now() + timeout);
            }
        }
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        // A back-off that is over is no back-off: forget it, so that it is
        // no wake-up time either.
        if self.backoff_until.is_some_and(|t| t <= now) {
            self.backoff_until = None;
        }
        let late: Vec<(u64, &'static str)> = self
            .helpers
            .iter()
            .filter_map(|(id, h)| {
                if h.in_flight.values().any(|r| r.deadline <= now) {
                    Some((*id, "a request timed out"))
                } else if h.kill_at.is_some_and(|t| t <= now) {
                    Some((*id, "did not exit after its stdin was closed"))
                } else {
                    None
                }
            })
            .collect();
        for (id, cause) in late {
            let timeout = self.spec.timeout.as_millis();
            self.broken(id, &format!("{cause} ({timeout} ms)"));
        }
    }

    /// Kills a helper with its process group and fails its requests.
    fn broken(&mut self, id: u64, cause: &str) {
        let Some(helper) = self.helpers.remove(&id) else {
            return;
        };
        self.stats.helper_restarts.fetch_add(1, Relaxed);
        helper.group.kill();
        let failed = helper.in_flight.len();
        log::warn!(
            "helper {} (pid {}): {cause}; killed it, {failed} requests in flight fail",
            self.description,
            helper.pid
        );
        for (_, request) in helper.in_flight {
            let _ = request.reply.send(Verdict::Failure(
                if cause.contains("timed out") {
                    Cause::Timeout
                } else {
                    Cause::BrokenHelper
                },
                format!("helper {cause}"),
            ));
        }
        self.note_failure(helper.served > 0);
    }

    /// A helper that served before it broke is replaced at once, and so is
    /// the first that breaks before serving; helpers that break before
    /// serving again and again wait longer each time (0.1 s, doubling, at
    /// most 10 s), so a broken program never restarts in a tight loop.
    fn note_failure(&mut self, had_served: bool) {
        if had_served {
            self.failures_in_a_row = 0;
            self.backoff_until = None;
            return;
        }
        self.failures_in_a_row += 1;
        if self.failures_in_a_row < 2 {
            return;
        }
        let delay = FIRST_BACKOFF
            .saturating_mul(1 << (self.failures_in_a_row - 2).min(10))
            .min(MAX_BACKOFF);
        log::warn!(
            "helper {}: failed {} times in a row before serving; next start in {} ms",
            self.description,
            self.failures_in_a_row,
            delay.as_millis()
        );
        self.backoff_until = Some(Instant::now() + delay);
    }

    fn remove(&mut self, id: u64) {
        if let Some(mut helper) = self.helpers.remove(&id) {
            // Reaped by its wait task: its group id may be reused now.
            helper.group.0 = None;
        }
    }

    /// Every pool handle is gone (the chain was replaced or jnhpd stops):
    /// close every stdin, give helpers 2 s to exit, kill what remains.
    async fn shut_down(&mut self, events: &mut mpsc::UnboundedReceiver<Event>) {
        // In-flight requests are answered if their helper replies before
        // it is gone; ones not yet written never will be.
        for request in self.waiting.drain(..) {
            let _ = request
                .reply
                .send(Verdict::Failure(Cause::NoVerdict, "shutting down".into()));
        }
        for helper in self.helpers.values_mut() {
            helper.stdin = None;
            helper.retiring = true;
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while !self.helpers.is_empty() {
            tokio::select! {
                Some(event) = events.recv() => match event {
                    Event::Exited { helper, .. } => self.remove(helper),
                    Event::Line { helper, line } => self.reply(helper, &line),
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        for helper in self.helpers.values() {
            helper.group.kill();
        }
        self.helpers.clear();
    }
}

/// Parses one line a helper wrote (line end removed): `<id> JNHP:<int>`,
/// the id a decimal number. `None`: not a reply at all (the helper is
/// broken). A reply whose verdict is malformed (`7 JNHP:abc`) is
/// `Some((7, Verdict::Failure(..)))`: it fails that request only.
pub fn parse_reply(line: &[u8]) -> Option<(u64, Verdict)> {
    let space = line.iter().position(|&b| b == b' ')?;
    let id = &line[..space];
    if id.is_empty() || !id.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let id = std::str::from_utf8(id).ok()?.parse::<u64>().ok()?;
    let verdict = parse_verdict(&line[space + 1..])?;
    Some((id, verdict))
}

/// Feeds a helper's stdin until the pool drops the sender (retiring or
/// shutting down: stdin closes) or the helper exits (the wait task reports
/// that).
async fn write_lines(
    mut stdin: tokio::process::ChildStdin,
    mut lines: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let _ = super::coalesce::write_coalesced(&mut stdin, &mut lines).await;
}

async fn read_lines<R: AsyncRead + Unpin>(
    helper: u64,
    stdout: R,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Replies are short; a line without end for this long is garbage.
        let mut limited = (&mut reader).take(64 * 1024);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if events
                    .send(Event::Line {
                        helper,
                        line: line.clone(),
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Reaps helper `helper`; then its run ends (its orphans are killed).
///
/// The exit is reported only once its stdout reader has read to end of
/// file (or [`STDOUT_GRACE`] has passed): replies a helper wrote just before
/// exiting are in the pipe, and must reach the pool before the exit does,
/// or the requests they answer would fail as still in flight. The grace
/// bounds the wait when something else (a process the helper left in its
/// group) still holds the pipe open.
async fn wait_exit(
    helper: u64,
    mut child: Child,
    run: reaper::Run,
    stdout: Option<tokio::task::JoinHandle<()>>,
    events: mpsc::UnboundedSender<Event>,
) {
    let status = match child.wait().await {
        Ok(status) => status.to_string(),
        Err(err) => err.to_string(),
    };
    // Orphans that left the group and hold the pipe are killed here.
    drop(run);
    if let Some(reader) = stdout {
        let _ = tokio::time::timeout(STDOUT_GRACE, reader).await;
    }
    let _ = events.send(Event::Exited { helper, status });
}

/// Logs a helper's stderr line by line, lines cut at [`STDERR_LINE`] bytes
/// and rate-limited, so a chatty helper cannot flood the log. A longer
/// line is logged once, its first [`STDERR_LINE`] bytes marked as cut, and
/// the rest of it is skipped; control characters are escaped
/// ([`escape_controls`]), so one stderr line is always one log line.
async fn log_stderr<R: AsyncRead + Unpin>(who: String, stderr: R) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut tokens = STDERR_BURST;
    let mut last = Instant::now();
    let mut dropped = 0u64;
    loop {
        line.clear();
        let mut limited = (&mut reader).take(STDERR_LINE as u64);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let cut = if line.last() == Some(&b'\n') {
            line.pop();
            false
        } else if line.len() < STDERR_LINE {
            // The last line, without a line end.
            false
        } else {
            // Skip the rest of the line, reading (not keeping) it.
            skip_line(&mut reader).await
        };
        let now = Instant::now();
        tokens =
            (tokens + now.duration_since(last).as_secs_f64() * STDERR_PER_SEC).min(STDERR_BURST);
        last = now;
        if tokens < 1.0 {
            if dropped == 0 {
                log::warn!("{who}: too many stderr lines; some are not logged");
            }
            dropped += 1;
            continue;
        }
        tokens -= 1.0;
        if dropped > 0 {
            log::warn!("{who}: {dropped} stderr lines not logged (too many)");
            dropped = 0;
        }
        let text = String::from_utf8_lossy(&line);
        let text = escape_controls(text.trim_end_matches('\r'));
        if cut {
            log::warn!("{who} stderr: {text} [line cut at {STDERR_LINE} bytes]");
        } else {
            log::warn!("{who} stderr: {text}");
        }
    }
    if dropped > 0 {
        log::warn!("{who}: {dropped} stderr lines not logged (too many)");
    }
}

/// Reads and drops the rest of a line; whether there was any rest (a line
/// of exactly [`STDERR_LINE`] bytes ending right at the limit was not cut).
async fn skip_line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> bool {
    let mut skipped = 0usize;
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => return skipped > 0,
            Ok(buf) => buf,
        };
        match memchr::memchr(b'\n', buf) {
            Some(at) => {
                reader.consume(at + 1);
                return skipped + at > 0;
            }
            None => {
                let n = buf.len();
                skipped += n;
                reader.consume(n);
            }
        }
    }
}
