//! One client connection: the request loop (framing is the wire crate's
//! [`LineFramer`]).
//!
//! The loop is deliberately sequential (read, answer everything complete,
//! write, read again). That gives the protocol's guarantees without extra
//! machinery: replies leave in request order, each request sees the effects
//! of the ones before it, and a client that stops reading stops being read
//! from, because the loop is blocked writing its replies. Speed comes from
//! batching: every complete line of a read goes to the store actor in one
//! message, and every reply of a batch leaves in one write.
//!
//! Every read is paid for from the server's in-flight budget
//! ([`crate::net::inflight`]) before its lines are framed, and given back once
//! they are answered; a client whose socket reports an error, or to which
//! a reply cannot be written, is gone: nothing more is started for it.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::base::shutdown::{FlagWatch, Shutdown};
use crate::base::timer::sleep_until_or_never;
use crate::metrics::{Command, Metrics};
use crate::net::inflight::{InflightBudget, Share};
use crate::protocol::{self, Frame, FrameAt, Limits, LineFramer, ProtocolError, Reply, Request};
use crate::store::handback::Slot;
use crate::store::{Batch, Handback, OUT_HIGH_WATER, Op, Span, StoreHandle, Validation};
use crate::validator::{Inline, Peer, ValidatorChain};

/// Bytes asked of the socket per read (and so what an idle connection's
/// buffer holds).
pub(crate) const READ_CHUNK: usize = 32 * 1024;

/// Buffers that grew past this (a huge value went through) are replaced by
/// small ones once empty, so idle connections stay cheap.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Turns a line into the op the store actor answers (`None`: empty line):
/// the line is bytes `range` of `chunk`, the batch's input number `index`.
/// A STORE first passes the chain's synchronous validators here, so that
/// with only those configured it is stored in the same actor round trip.
fn to_op(
    chunk: &[u8],
    range: Range<usize>,
    index: usize,
    limits: &Limits,
    (chain, current): (&mut BatchChain, &watch::Receiver<Arc<ValidatorChain>>),
    peer: &Peer,
    batch: &mut Batch,
) -> Option<Op> {
    let line = &chunk[range];
    // The parsed parts become spans of the chunk by their offset in it.
    let span = |part: &[u8]| {
        let start = part.as_ptr() as usize - chunk.as_ptr() as usize;
        Span::new(index, start..start + part.len())
    };
    Some(match protocol::parse(line, limits) {
        Ok(None) => return None,
        Ok(Some(Request::Store { name, value })) => {
            let validate = match chain.get(current).check_inline(name, value, peer) {
                Inline::Denied => return Some(Op::Refused),
                Inline::Allowed => None,
                Inline::Pending(resume) => Some(batch.resume_at(resume)),
            };
            Op::Store {
                name: span(name),
                value: span(value),
                resume: validate,
            }
        }
        Ok(Some(Request::Exists { name })) => Op::Exists(span(name)),
        Ok(Some(Request::Get { name })) => Op::Get(span(name)),
        Err(err) => Op::Invalid(command_of(line), err),
    })
}

/// The validator chain of one batch: the one current when the batch was
/// read, taken from the watch the first time the batch needs it. Most
/// batches have no STORE and never do (taking it costs a read lock and a
/// reference count, twice each, per turn of the loop). It ends with the
/// batch: an idle connection must not keep a replaced chain (and its
/// helper processes) alive.
#[derive(Default)]
struct BatchChain(Option<Arc<ValidatorChain>>);

impl BatchChain {
    /// The batch's chain: `current`'s, the first time.
    fn get(&mut self, current: &watch::Receiver<Arc<ValidatorChain>>) -> &Arc<ValidatorChain> {
        self.0.get_or_insert_with(|| current.borrow().clone())
    }
}

/// The command a line names, if any (for counting its `ERROR`).
fn command_of(line: &[u8]) -> Option<Command> {
    let word = line
        .split(|&b| b == b' ' || b == b'\t')
        .find(|w| !w.is_empty())?;
    // Commands are case-insensitive, as the parser reads them.
    [
        (&b"STORE"[..], Command::Store),
        (b"EXISTS", Command::Exists),
        (b"GET", Command::Get),
    ]
    .into_iter()
    .find(|(known, _)| word.eq_ignore_ascii_case(known))
    .map(|(_, command)| command)
}

/// What every connection shares.
#[derive(Debug)]
pub struct ConnectionContext {
    pub store: StoreHandle,
    pub limits: Limits,
    pub idle_timeout: Option<Duration>,
    pub validators: watch::Receiver<Arc<ValidatorChain>>,
    pub shutdown: Shutdown,
    pub metrics: Arc<Metrics>,
    /// What requests read and not yet answered may hold, all connections
    /// together (`server.max_inflight_bytes`).
    pub inflight: Arc<InflightBudget>,
}

/// A client's byte stream: a TCP socket, or TLS over one.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP socket underneath, watched for the client's departure.
    fn socket(&self) -> &TcpStream;
}

impl Stream for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Stream for tokio_rustls::server::TlsStream<TcpStream> {
    fn socket(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Returns once the client is known to be gone: its socket reports an
/// error (the client reset the connection, which is also how a client
/// that closed answers a reply sent to it). A FIN alone is no error: a
/// half-closed client still reads its replies.
async fn gone(socket: &TcpStream) {
    // Resolves only with the error readiness set (which stays set), or
    // with the I/O driver shutting down: gone either way.
    let _ = socket.ready(Interest::ERROR).await;
}

/// Serves one client until it closes, times out, or the server shuts down.
pub async fn serve<S: Stream>(stream: S, peer: Peer, shared: Arc<ConnectionContext>) {
    shared.metrics.connections.fetch_add(1, Relaxed);
    let metrics = shared.metrics.clone();
    let mut conn = Connection {
        stores_since: None,
        framer: LineFramer::new(shared.limits.max_line_bytes()),
        stream,
        peer: Arc::new(peer),
        buf: BytesMut::with_capacity(READ_CHUNK),
        slot: Slot::default(),
        write_failed: false,
        share: Share::new(shared.inflight.clone()),
        draining: shared.shutdown.draining.watch(),
        expired: shared.shutdown.expired.watch(),
        shared,
    };
    conn.run().await;
    metrics.connections.fetch_sub(1, Relaxed);
}

struct Connection<S> {
    stream: S,
    /// Who is on the other end, for validators.
    peer: Arc<Peer>,
    framer: LineFramer,
    buf: BytesMut,
    /// Where the store actor hands replies and the batch back, every trip.
    slot: Slot<Handback>,
    /// The client is gone (a write failed, or its socket reports an error).
    /// What has started for it finishes (a validation, a commit: a STORE
    /// must not be half done) and its reply is dropped; requests not
    /// started yet are dropped, so that the connection's slot is freed.
    write_failed: bool,
    /// What the requests read and not answered yet hold of the server's
    /// in-flight budget.
    share: Share,
    /// `shared.shutdown`'s two flags, waited on by every read and write:
    /// watched once per connection, since registering a new waiter on each
    /// turn of the loop costs a lock and an unlock per request.
    draining: FlagWatch,
    expired: FlagWatch,
    shared: Arc<ConnectionContext>,
    /// When the batch being answered was read, if it holds a STORE: a
    /// STORE's duration runs from there (no clock is read otherwise).
    stores_since: Option<Instant>,
}

impl<S: Stream> Connection<S> {
    async fn run(&mut self) {
        let mut eof = false;
        // The connection's one batch: its box goes to the actor and comes
        // back on every round trip, and is reused for the next read.
        let mut batch = Box::<Batch>::default();
        loop {
            {
                // A batch is validated by the chain current when it was
                // read, so a SIGHUP swap never changes the rules under a
                // request in flight.
                let mut chain = BatchChain::default();
                while let Some(frame) = self.framer.next_range(&mut self.buf) {
                    match frame {
                        FrameAt::Line(range) => {
                            self.push(self.framer.chunk(), range, &mut chain, &mut batch);
                        }
                        FrameAt::TooLong => {
                            batch.push(Op::Invalid(None, ProtocolError::LineTooLong))
                        }
                    }
                }
                if eof && let Some(frame) = self.framer.finish(&mut self.buf) {
                    match frame {
                        Frame::Line(line) => {
                            self.push(&line, 0..line.len(), &mut chain, &mut batch)
                        }
                        Frame::TooLong => batch.push(Op::Invalid(None, ProtocolError::LineTooLong)),
                    }
                }
                if !batch.is_empty() {
                    batch = self.answer_batch(batch).await;
                }
            }
            // Answered: only a partial line is still held. Given back
            // before the replies are written, so that a client slow to read
            // them holds no budget meanwhile.
            self.share.settle(self.buf.len());
            self.flush(batch.replies()).await;
            if eof || self.write_failed {
                let _ = self.stream.shutdown().await;
                return;
            }
            if self.shared.shutdown.draining.is_raised() {
                self.refuse_late_requests(&mut batch).await;
                return;
            }
            if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
                self.buf = BytesMut::with_capacity(READ_CHUNK);
            }
            self.buf.reserve(READ_CHUNK);
            let idle = self.shared.idle_timeout;
            let mut fresh = 0;
            tokio::select! {
                biased;
                read = self.stream.read_buf(&mut self.buf) => match read {
                    Ok(0) => eof = true,
                    Ok(n) => fresh = n,
                    // A TLS client that closes its side without a
                    // close_notify (a half-close at the TCP level) has
                    // still sent complete requests: answer them.
                    Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => eof = true,
                    Err(err) => {
                        log::debug!("connection read error: {err}");
                        return;
                    }
                },
                // Idle (nothing received is unanswered): close at once.
                () = &mut self.draining => {
                    self.refuse_late_requests(&mut batch).await;
                    return;
                }
                _ = sleep_until_or_never(idle_deadline(idle)) => {
                    log::debug!("closing a connection idle for {:?}", idle.unwrap_or_default());
                    return;
                }
            }
            if fresh > 0 && !self.pay_for_read(fresh).await {
                return;
            }
        }
    }

    /// Pays for the `fresh` bytes just read (and their requests) from the
    /// in-flight budget before any of them is looked at, waiting while the
    /// budget is spent: meanwhile nothing more is read. `false`: the wait
    /// ended with the client gone or the grace period over.
    async fn pay_for_read(&mut self, fresh: usize) -> bool {
        let cost = InflightBudget::cost_of(&self.buf[self.buf.len() - fresh..]);
        // A read that ends a line leaves no partial line: it may use the
        // reserve that stalled long lines cannot hold.
        let complete = self.buf.last() == Some(&b'\n');
        if self.share.try_pay(cost, complete) {
            return true;
        }
        log::debug!("in-flight budget spent: waiting to pay for {cost} bytes read");
        tokio::select! {
            biased;
            () = self.share.pay(cost, complete) => true,
            _ = &mut self.expired => false,
            () = gone(self.stream.socket()) => false,
        }
    }

    /// Adds the request on bytes `range` of `chunk` to the batch.
    #[inline]
    fn push(&self, chunk: &Bytes, range: Range<usize>, chain: &mut BatchChain, batch: &mut Batch) {
        let index = batch.input_index(chunk);
        let current = &self.shared.validators;
        if let Some(op) = to_op(
            chunk,
            range,
            index,
            &self.shared.limits,
            (chain, current),
            &self.peer,
            batch,
        ) {
            if matches!(
                op,
                Op::Store {
                    resume: Some(_),
                    ..
                }
            ) && !batch.has_validation()
            {
                self.set_validation(chain, batch);
            }
            batch.push(op);
        }
    }

    /// What the batch's STOREs that wait for validators are validated
    /// under: its chain, this client, the end of the grace period.
    #[cold]
    fn set_validation(&self, chain: &mut BatchChain, batch: &mut Batch) {
        batch.set_validation(Validation {
            chain: chain.get(&self.shared.validators).clone(),
            peer: self.peer.clone(),
            expired: self.shared.shutdown.expired.clone(),
        });
    }

    /// Has the store answer every op of the batch, writing replies as they
    /// come (those ready while a request waits, and whenever they pass the
    /// high-water mark); gives the batch back cleared.
    async fn answer_batch(&mut self, mut batch: Box<Batch>) -> Box<Batch> {
        self.stores_since = batch.has_stores().then(Instant::now);
        // STOREs that will wait for storage: watched from the start, which
        // costs a registration, not the wake an empty part would.
        let watched = batch.has_stores() && self.shared.store.stores_wait();
        batch.watch(watched);
        loop {
            if self.shared.store.submit(batch, &self.slot).is_err() {
                // The store stopped: the server is going away.
                self.write_failed = true;
                return Box::default();
            }
            let Some(answered) = self.receive_answers(watched).await else {
                // The client left (the store goes on with what it started
                // and drops the rest), or the store stopped.
                self.write_failed = true;
                return Box::default();
            };
            batch = answered;
            self.shared.metrics.fold(batch.tally(), self.stores_since);
            if batch.is_done() {
                break;
            }
            // Stopped at the high-water mark: write, then go on.
            self.flush(batch.replies()).await;
            if self.write_failed {
                break;
            }
        }
        batch.clear();
        batch
    }

    /// Writes the replies the store hands back while the batch waits, and
    /// returns the batch once it comes back. `None`: the store stopped, or
    /// the client is gone: a write failed, or its socket reported an error
    /// while the batch waited. Then the store is told, lets the connection
    /// go at once, and starts nothing more for the batch (what has started
    /// finishes without it). The client is watched from the start when
    /// `watched` (STOREs that will wait for storage), else only once the
    /// store says the batch waits (a part): registering the watch takes a
    /// lock, too dear for every round trip.
    async fn receive_answers(&mut self, watched: bool) -> Option<Box<Batch>> {
        let (mut waiting, mut told) = (watched, false);
        loop {
            let handback = if told || !waiting {
                self.slot.receive().await
            } else {
                tokio::select! {
                    biased;
                    handback = self.slot.receive() => handback,
                    () = gone(self.stream.socket()) => {
                        self.write_failed = true;
                        self.shared.store.left(&self.slot);
                        told = true;
                        continue;
                    }
                }
            };
            match handback.ok()? {
                Handback::Batch(mut batch) if self.write_failed => {
                    // Counted, though nobody reads its replies.
                    self.shared.metrics.fold(batch.tally(), self.stores_since);
                    return None;
                }
                Handback::Batch(batch) => return Some(batch),
                Handback::Part(mut replies) => {
                    waiting = true;
                    self.flush(&mut replies).await;
                    if self.write_failed && !told {
                        self.shared.store.left(&self.slot);
                        told = true;
                    }
                }
            }
        }
    }

    /// Writes the replies gathered so far (`out`) in one write.
    async fn flush(&mut self, out: &mut BytesMut) {
        if out.is_empty() {
            return;
        }
        if !self.write_failed && self.shared.shutdown.expired.is_raised() {
            // Past the grace period: no more waiting on the client, but the
            // last replies (`ERROR shutting down`) go out if the socket
            // takes them now.
            let _ = now_or_never(self.stream.write(out));
            self.write_failed = true;
        }
        if !self.write_failed {
            let idle = self.shared.idle_timeout;
            let result = tokio::select! {
                result = async {
                    self.stream.write_all(out).await?;
                    // TLS: what the session still holds goes out too.
                    self.stream.flush().await
                } => result,
                _ = &mut self.expired => Err(std::io::ErrorKind::TimedOut.into()),
                // A client that reads nothing for the idle timeout is as
                // good as gone.
                _ = sleep_until_or_never(idle_deadline(idle)) => Err(std::io::ErrorKind::TimedOut.into()),
            };
            if let Err(err) = result {
                log::debug!("connection write error: {err}");
                self.write_failed = true;
            }
        }
        out.clear();
        if out.capacity() > KEEP_CAPACITY {
            *out = BytesMut::new();
        }
    }

    /// After SIGTERM: requests that arrived since are answered
    /// `ERROR shutting down`, then the connection closes.
    async fn refuse_late_requests(&mut self, batch: &mut Batch) {
        loop {
            self.buf.reserve(READ_CHUNK);
            match now_or_never(self.stream.read_buf(&mut self.buf)) {
                Some(Ok(n)) if n > 0 => {}
                _ => break,
            }
            while let Some(frame) = self.framer.next_frame(&mut self.buf) {
                // Every request, valid or not, gets the same answer; only
                // empty lines get none.
                let empty = matches!(&frame, Frame::Line(line) if line.iter().all(|&b| b == b' ' || b == b'\t'));
                if !empty {
                    let command = match &frame {
                        Frame::Line(line) => command_of(line),
                        Frame::TooLong => None,
                    };
                    let shutting_down = crate::metrics::ServerError::ShuttingDown;
                    batch.tally().server_error(command, shutting_down);
                    Reply::SHUTTING_DOWN.encode(batch.replies());
                }
            }
            if batch.replies().len() >= OUT_HIGH_WATER {
                break;
            }
        }
        self.shared.metrics.fold(batch.tally(), None);
        self.flush(batch.replies()).await;
        let _ = self.stream.shutdown().await;
    }
}

/// Polls `future` once: its output if it is ready now, `None` if it would
/// have to wait (a non-blocking try on any stream, TLS included).
fn now_or_never<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// The end of an idle period of `duration` (none: never).
fn idle_deadline(duration: Option<Duration>) -> Option<tokio::time::Instant> {
    duration.map(|d| tokio::time::Instant::now() + d)
}
