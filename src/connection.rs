//! One client connection: framing bytes into lines, and the request loop.
//!
//! The loop is deliberately sequential (read, answer everything complete,
//! write, read again). That gives the protocol's guarantees without extra
//! machinery: replies leave in request order, each request sees the effects
//! of the ones before it, and a client that stops reading stops being read
//! from, because the loop is blocked writing its replies. Speed comes from
//! batching: every complete line of a read goes to the store actor in one
//! message, and every reply of a batch leaves in one write.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::protocol::{self, Limits, ProtocolError, Reply, Request};
use crate::store::{
    Batch, CommitError, DeferredStore, OUT_HIGH_WATER, Op, Reservation, StoreHandle, Turn,
};
use crate::validator::{Inline, ValidatorChain};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 32 * 1024;

/// Buffers that grew past this (a huge value went through) are replaced by
/// small ones once empty, so idle connections stay cheap.
const KEEP_CAPACITY: usize = 64 * 1024;

const SHUTTING_DOWN: Reply<'static> = Reply::ServerError("shutting down");

/// A framed piece of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// One line, its line end (`\n` or `\r\n`) removed.
    Line(Bytes),
    /// A line longer than the limit. Its bytes have been (or are being)
    /// discarded without ever being buffered whole.
    TooLong,
}

/// Splits a byte stream into lines, never buffering more than one line of
/// the maximum length (plus one read).
#[derive(Debug)]
pub struct LineFramer {
    max_line: usize,
    /// Inside a too-long line: drop bytes up to the next `\n`.
    discarding: bool,
    /// How much of the buffer is known to hold no `\n`.
    scanned: usize,
}

impl LineFramer {
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            max_line,
            discarding: false,
            scanned: 0,
        }
    }

    /// Takes the next frame out of `buf`, or `None` when it holds no complete
    /// line. Call until `None` after each read.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            match memchr::memchr(b'\n', &buf[self.scanned..]) {
                Some(at) => {
                    let end = self.scanned + at;
                    self.scanned = 0;
                    if self.discarding {
                        buf.advance(end + 1);
                        self.discarding = false;
                        continue;
                    }
                    let line = strip_cr(buf.split_to(end + 1).freeze().slice(..end));
                    if line.len() > self.max_line {
                        return Some(Frame::TooLong);
                    }
                    return Some(Frame::Line(line));
                }
                None if self.discarding => {
                    buf.clear();
                    self.scanned = 0;
                    return None;
                }
                // `max_line + 1`: the last byte may be the `\r` of a line of
                // exactly the maximum length.
                None if buf.len() > self.max_line + 1 => {
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Some(Frame::TooLong);
                }
                None => {
                    self.scanned = buf.len();
                    return None;
                }
            }
        }
    }

    /// At end of input: a trailing partial line counts as a final request.
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        let discarding = std::mem::replace(&mut self.discarding, false);
        self.scanned = 0;
        if discarding || buf.is_empty() {
            buf.clear();
            return None;
        }
        let line = strip_cr(buf.split().freeze());
        Some(if line.len() > self.max_line {
            Frame::TooLong
        } else {
            Frame::Line(line)
        })
    }
}

fn strip_cr(mut line: Bytes) -> Bytes {
    if line.last() == Some(&b'\r') {
        line.truncate(line.len() - 1);
    }
    line
}

/// Turns a frame into the op the store actor answers (`None`: empty line).
/// A STORE first passes the chain's synchronous validators here, so that
/// with only those configured it is stored in the same actor round trip.
fn to_op(frame: Frame, limits: &Limits, chain: &ValidatorChain) -> Option<Op> {
    let line = match frame {
        Frame::Line(line) => line,
        Frame::TooLong => return Some(Op::Invalid(ProtocolError::LineTooLong)),
    };
    Some(match protocol::parse(&line, limits) {
        Ok(None) => return None,
        Ok(Some(Request::Store { name, value })) => {
            let validate = match chain.check_inline(name, value) {
                Inline::Denied => return Some(Op::Refused),
                Inline::Allowed => false,
                Inline::Pending => true,
            };
            Op::Store {
                name: line.slice_ref(name),
                value: line.slice_ref(value),
                validate,
            }
        }
        Ok(Some(Request::Exists { name })) => Op::Exists(line.slice_ref(name)),
        Ok(Some(Request::Get { name })) => Op::Get(line.slice_ref(name)),
        Err(err) => Op::Invalid(err),
    })
}

/// How the server shuts down, shared by all connections.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// SIGTERM received: stop accepting, close idle connections, answer what
    /// was received, refuse what arrives later.
    pub draining: CancellationToken,
    /// The grace period is over: abandon validations and blocked writes.
    pub expired: CancellationToken,
}

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub store: StoreHandle,
    pub limits: Limits,
    pub idle_timeout: Option<Duration>,
    pub validators: watch::Receiver<Arc<ValidatorChain>>,
    pub shutdown: Shutdown,
}

/// Serves one client until it closes, times out, or the server shuts down.
pub async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let mut conn = Connection {
        framer: LineFramer::new(shared.limits.max_line_bytes()),
        stream,
        buf: BytesMut::with_capacity(READ_CHUNK),
        batch: Batch::default(),
        write_failed: false,
        shared,
    };
    conn.run().await;
}

struct Connection {
    stream: TcpStream,
    framer: LineFramer,
    buf: BytesMut,
    batch: Batch,
    /// The client is gone. Requests already received are still carried out
    /// (an acknowledged-or-not STORE must not be half done); their replies
    /// are dropped.
    write_failed: bool,
    shared: Arc<Shared>,
}

impl Connection {
    async fn run(&mut self) {
        let mut eof = false;
        loop {
            {
                // A batch is validated by the chain current when it was
                // read, so a SIGHUP swap never changes the rules under a
                // request in flight. The snapshot ends with the batch: an
                // idle connection must not keep a replaced chain (and its
                // helper processes) alive.
                let chain = self.shared.validators.borrow().clone();
                while let Some(frame) = self.framer.next_frame(&mut self.buf) {
                    self.push(frame, &chain);
                }
                if eof && let Some(frame) = self.framer.finish(&mut self.buf) {
                    self.push(frame, &chain);
                }
                if !self.batch.ops.is_empty() {
                    self.answer_batch(&chain).await;
                }
            }
            self.flush().await;
            if eof || self.write_failed {
                let _ = self.stream.shutdown().await;
                return;
            }
            if self.shared.shutdown.draining.is_cancelled() {
                self.refuse_late_requests().await;
                return;
            }
            if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
                self.buf = BytesMut::with_capacity(READ_CHUNK);
            }
            self.buf.reserve(READ_CHUNK);
            let idle = self.shared.idle_timeout;
            tokio::select! {
                biased;
                read = self.stream.read_buf(&mut self.buf) => match read {
                    Ok(0) => eof = true,
                    Ok(_) => {}
                    Err(err) => {
                        log::debug!("connection read error: {err}");
                        return;
                    }
                },
                // Idle (nothing received is unanswered): close at once.
                _ = self.shared.shutdown.draining.cancelled() => {
                    self.refuse_late_requests().await;
                    return;
                }
                _ = sleep_or_never(idle) => {
                    log::debug!("closing a connection idle for {:?}", idle.unwrap_or_default());
                    return;
                }
            }
        }
    }

    fn push(&mut self, frame: Frame, chain: &ValidatorChain) {
        if let Some(op) = to_op(frame, &self.shared.limits, chain) {
            self.batch.ops.push(op);
        }
    }

    /// Answers every op of the batch, writing replies whenever they pass the
    /// high-water mark.
    async fn answer_batch(&mut self, chain: &ValidatorChain) {
        let mut batch = std::mem::take(&mut self.batch);
        loop {
            batch = match self.shared.store.execute(batch).await {
                Ok(batch) => batch,
                Err(_) => {
                    // The store stopped: the server is going away.
                    self.batch = Batch::default();
                    self.write_failed = true;
                    return;
                }
            };
            if batch.deferred.is_some() && !batch.out.is_empty() {
                // The replies before a waiting STORE are ready: they go out
                // now, not after its validation or its write.
                self.write_out(&mut batch.out).await;
            }
            if let Some(DeferredStore::Committing(outcomes)) = batch.deferred {
                batch.deferred = None;
                // A write under way is waited for even past the grace
                // period: its outcome is not known until the disk answers.
                for outcome in outcomes {
                    let committed = outcome.await.unwrap_or(Err(CommitError::Closed));
                    Self::encode_commit(committed.map(|()| true), &mut batch.out);
                    batch.next += 1;
                }
            } else if let Some(deferred) = batch.deferred.take() {
                match &batch.ops[batch.next] {
                    Op::Store { name, value, .. } => {
                        self.finish_store(deferred, name, value, chain, &mut batch.out)
                            .await
                    }
                    other => unreachable!("the store defers only STOREs, not {other:?}"),
                };
                batch.next += 1;
            }
            if batch.out.len() >= OUT_HIGH_WATER {
                self.write_out(&mut batch.out).await;
            }
            if batch.is_done() {
                break;
            }
        }
        batch.clear();
        self.batch = batch;
    }

    /// Finishes a STORE the actor could not answer at once: validate (or
    /// wait for the STORE ahead of it), then commit or release the name;
    /// encodes the reply into `out`.
    async fn finish_store(
        &self,
        deferred: DeferredStore,
        name: &[u8],
        value: &[u8],
        chain: &ValidatorChain,
        out: &mut BytesMut,
    ) {
        let expired = &self.shared.shutdown.expired;
        let committed = match deferred {
            DeferredStore::Validate(reservation) => {
                Self::validate_and_commit(reservation, name, value, chain, expired).await
            }
            DeferredStore::Wait(turn) => {
                let turn = tokio::select! {
                    turn = turn => turn,
                    _ = expired.cancelled() => return SHUTTING_DOWN.encode(out),
                };
                match turn {
                    Ok(Turn::Taken) => Ok(false),
                    Ok(Turn::Yours(reservation)) => {
                        Self::validate_and_commit(reservation, name, value, chain, expired).await
                    }
                    Err(_) => Err(CommitError::Closed),
                }
            }
            DeferredStore::Committing(_) => unreachable!("answered by answer_batch"),
        };
        Self::encode_commit(committed, out);
    }

    /// The reply to a STORE that was stored (`Ok(true)`), refused
    /// (`Ok(false)`) or failed.
    fn encode_commit(committed: Result<bool, CommitError>, out: &mut BytesMut) {
        match committed {
            Ok(true) => Reply::Stored.encode(out),
            Ok(false) => Reply::Rargh.encode(out),
            Err(CommitError::Closed) => SHUTTING_DOWN.encode(out),
            Err(CommitError::Storage(reason)) => Reply::ServerError(&reason).encode(out),
        }
    }

    /// Runs the chain for a reserved name, then commits (`Ok(true)`) or
    /// releases it (`Ok(false)`). Past the grace period the validation is
    /// abandoned (`Closed`): dropping the reservation hands the name on.
    async fn validate_and_commit(
        reservation: Reservation,
        name: &[u8],
        value: &[u8],
        chain: &ValidatorChain,
        expired: &CancellationToken,
    ) -> Result<bool, CommitError> {
        let allowed = tokio::select! {
            allowed = chain.allows(name, value) => allowed,
            _ = expired.cancelled() => return Err(CommitError::Closed),
        };
        if !allowed {
            reservation.release();
            return Ok(false);
        }
        reservation.commit(value).await.map(|()| true)
    }

    /// Writes `out` (the replies of a batch taken out of `self`) now.
    async fn write_out(&mut self, out: &mut BytesMut) {
        std::mem::swap(&mut self.batch.out, out);
        self.flush().await;
        std::mem::swap(&mut self.batch.out, out);
    }

    /// Writes the replies gathered so far in one write.
    async fn flush(&mut self) {
        let out = &mut self.batch.out;
        if out.is_empty() {
            return;
        }
        if !self.write_failed && self.shared.shutdown.expired.is_cancelled() {
            // Past the grace period: no more waiting on the client, but the
            // last replies (`ERROR shutting down`) go out if the socket
            // takes them now.
            let _ = self.stream.try_write(out);
            self.write_failed = true;
        }
        if !self.write_failed {
            let idle = self.shared.idle_timeout;
            let result = tokio::select! {
                result = self.stream.write_all(out) => result,
                _ = self.shared.shutdown.expired.cancelled() => Err(std::io::ErrorKind::TimedOut.into()),
                // A client that reads nothing for the idle timeout is as
                // good as gone.
                _ = sleep_or_never(idle) => Err(std::io::ErrorKind::TimedOut.into()),
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
    async fn refuse_late_requests(&mut self) {
        loop {
            self.buf.reserve(READ_CHUNK);
            match self.stream.try_read_buf(&mut self.buf) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
            while let Some(frame) = self.framer.next_frame(&mut self.buf) {
                // Every request, valid or not, gets the same answer; only
                // empty lines get none.
                let empty = matches!(&frame, Frame::Line(line) if line.iter().all(|&b| b == b' ' || b == b'\t'));
                if !empty {
                    SHUTTING_DOWN.encode(&mut self.batch.out);
                }
            }
            if self.batch.out.len() >= OUT_HIGH_WATER {
                break;
            }
        }
        self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

async fn sleep_or_never(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(framer: &mut LineFramer, buf: &mut BytesMut) -> Vec<Frame> {
        std::iter::from_fn(|| framer.next_frame(buf)).collect()
    }

    fn line(s: &'static [u8]) -> Frame {
        Frame::Line(Bytes::from_static(s))
    }

    #[test]
    fn crlf_and_bare_lf_end_lines() {
        let mut f = LineFramer::new(100);
        let mut buf = BytesMut::from(&b"a\r\nb\nc\r\r\n\nd"[..]);
        assert_eq!(
            frames(&mut f, &mut buf),
            vec![line(b"a"), line(b"b"), line(b"c\r"), line(b"")]
        );
        assert_eq!(f.finish(&mut buf), Some(line(b"d")));
        assert_eq!(f.finish(&mut buf), None);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_one_more_is_too_long() {
        let mut f = LineFramer::new(5);
        let mut buf = BytesMut::from(&b"12345\r\n123456\n12345\n"[..]);
        assert_eq!(
            frames(&mut f, &mut buf),
            vec![line(b"12345"), Frame::TooLong, line(b"12345")]
        );
    }

    #[test]
    fn a_too_long_line_is_discarded_as_it_streams_in() {
        let mut f = LineFramer::new(5);
        let mut buf = BytesMut::from(&b"12345\r"[..]);
        assert_eq!(frames(&mut f, &mut buf), vec![]); // may still be exactly 5
        buf.extend_from_slice(b"x");
        assert_eq!(frames(&mut f, &mut buf), vec![Frame::TooLong]);
        assert!(buf.is_empty());
        for _ in 0..1000 {
            buf.extend_from_slice(b"yyyyyyyyyy");
            assert_eq!(frames(&mut f, &mut buf), vec![]);
            assert!(buf.is_empty(), "discarded bytes must not be kept");
        }
        buf.extend_from_slice(b"zz\nGET a\n");
        assert_eq!(frames(&mut f, &mut buf), vec![line(b"GET a")]);
    }

    #[test]
    fn eof_inside_a_discarded_line_yields_nothing() {
        let mut f = LineFramer::new(2);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert_eq!(frames(&mut f, &mut buf), vec![Frame::TooLong]);
        assert_eq!(f.finish(&mut buf), None);
    }

    #[test]
    fn a_trailing_partial_line_keeps_its_cr_stripped() {
        let mut f = LineFramer::new(10);
        let mut buf = BytesMut::from(&b"GET a\r"[..]);
        assert_eq!(frames(&mut f, &mut buf), vec![]);
        assert_eq!(f.finish(&mut buf), Some(line(b"GET a")));
    }

    proptest! {
        /// However the input is cut into reads, the same frames come out,
        /// and the buffer never holds more than a line and a read.
        #[test]
        fn framing_does_not_depend_on_read_boundaries(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(b' ')], 0..200),
            cuts in proptest::collection::vec(1usize..20, 1..40),
        ) {
            let max = 6;
            let mut whole = LineFramer::new(max);
            let mut buf = BytesMut::from(&input[..]);
            let mut expected = frames(&mut whole, &mut buf);
            expected.extend(whole.finish(&mut buf));

            let mut pieces = LineFramer::new(max);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut rest = &input[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                got.extend(frames(&mut pieces, &mut buf));
                prop_assert!(buf.len() <= max + 1 + 20);
            }
            got.extend(pieces.finish(&mut buf));
            prop_assert_eq!(got, expected);
        }
    }
}
