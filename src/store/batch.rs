//! A batch: the requests one read of a connection brought, going to the
//! store actor, and the answers coming back.
//!
//! A connection frames its read into [`Op`]s (their bytes given as
//! [`Span`]s of the chunks read, never copied) and sends the batch; the
//! actor answers each op with a typed [`Answer`], which the batch encodes
//! into its replies and counts in its [`Tally`]. The connection never looks
//! inside: it sends the batch, writes the replies that come back, and
//! folds the tally.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::base::shutdown::Flag;
use crate::metrics::{Answer as Tallied, Command, Tally, server_error_for};
use crate::protocol::{ProtocolError, Reply, ServerFault};
use crate::validator::{Peer, Resume, ValidatorChain};

/// Ops a batch keeps room for between bursts (a read of tiny requests
/// makes thousands: 56 bytes each).
const KEEP_OPS: usize = 1024;

/// Where a request's name or value lies in its batch's input: bytes
/// `start..end` of received chunk `chunk` (see [`Batch::input_index`]).
///
/// A request holds no reference of its own: its batch holds each chunk of
/// the connection's read buffer once, however many lines it has, and the
/// bytes are copied only when a STORE is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    chunk: usize,
    start: usize,
    end: usize,
}

impl Span {
    /// Bytes `range` of the batch's chunk `chunk`.
    pub fn new(chunk: usize, range: std::ops::Range<usize>) -> Span {
        Span {
            chunk,
            start: range.start,
            end: range.end,
        }
    }

    /// The bytes, in the input they were made for.
    #[inline]
    pub(crate) fn of(self, input: &[Bytes]) -> &[u8] {
        &input[self.chunk][self.start..self.end]
    }

    /// The bytes as a reference of their own (for work that outlives the
    /// actor's turn: a validation, a lookup).
    pub(crate) fn to_bytes(self, input: &[Bytes]) -> Bytes {
        input[self.chunk].slice(self.start..self.end)
    }
}

/// One request of a batch, its bytes given as [`Span`]s of the batch's
/// input.
#[derive(Debug)]
pub enum Op {
    /// `resume`: the STORE must still pass validators that could not
    /// answer inline (where its chain resumes is kept in the batch), so
    /// the actor reserves the name and has it validated before storing.
    Store {
        name: Span,
        value: Span,
        resume: Option<ResumeAt>,
    },
    /// A STORE the inline validators already refused: answered `RARGH!`.
    Refused,
    Exists(Span),
    Get(Span),
    /// A line that did not parse (of the command it named, if any): the
    /// actor answers its `ERROR` in order with the others.
    Invalid(Option<Command>, ProtocolError),
}

/// Where a STORE's validation resumes: its entry in [`Batch::resumes`].
/// An index, not the [`Resume`] itself, so that an [`Op`] stays a few
/// plain words that need no drop (batches are filled and cleared per
/// request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeAt(u32);

/// What the store made of one request. [`Batch::answer`] turns it into its
/// reply line and counts it.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    /// STORE: stored (`W00T!`).
    Stored,
    /// STORE: not stored, the name has a value or a validator said no
    /// (`RARGH!`).
    Refused,
    /// EXISTS: whether the name has a value (`AWESOME!` / `RARGH!`).
    Exists(bool),
    /// GET of a stored name: its value.
    Value(&'a [u8]),
    /// GET of a stored name, as the map keeps it: its value and line end
    /// (the reply in one copy; most requests are GETs).
    ValueLine(&'a [u8]),
    /// GET of an absent name (an empty line).
    Missing,
    /// A line that is not a request (of the command it named, if any).
    Invalid(Option<Command>, ProtocolError),
    /// The server could not serve the request.
    Fault(Command, &'a ServerFault),
}

/// What a STORE that waits for its validators needs outside the actor:
/// the chain current when its batch was read (a SIGHUP never changes the
/// rules under a request in flight), who sent it, and the end of the
/// grace period, at which a validation is abandoned.
#[derive(Debug, Clone)]
pub struct Validation {
    pub chain: Arc<ValidatorChain>,
    pub peer: Arc<Peer>,
    pub expired: Flag,
}

/// A run of requests from one connection and the replies to them.
///
/// The actor answers the ops in order, appending replies. It hands the
/// batch back when every op is answered, or early once the replies pass
/// [`OUT_HIGH_WATER`](super::OUT_HIGH_WATER) (the connection writes them,
/// then sends the batch again). While an op waits (a validation, a write,
/// a lookup) the actor keeps the batch, and hands the replies ready so far
/// to the connection on their own.
#[derive(Debug, Default)]
pub struct Batch {
    /// The received chunks the ops' spans point into (usually one).
    pub(crate) input: Vec<Bytes>,
    pub(crate) ops: Vec<Op>,
    /// The first op not answered yet.
    pub(crate) next: usize,
    pub(crate) out: BytesMut,
    /// What was answered, counted in plain integers until the connection
    /// folds it into the metrics.
    pub(crate) tally: Tally,
    /// Set once an op needs validation outside the actor.
    pub(crate) validation: Option<Validation>,
    /// Where each STORE that waits for validators resumes its chain
    /// (indexed by its op's [`ResumeAt`]).
    resumes: Vec<Resume>,
    /// The connection watches its client from the start of this trip, so
    /// a wait needs no empty part to say so (see [`Batch::watch`]).
    pub(crate) watched: bool,
    stores: bool,
}

impl Batch {
    /// The index of `chunk` in the batch's input, for the [`Span`]s of the
    /// requests framed from it: the chunk is added unless it is the one
    /// added last. (Two chunks alive at once are distinct, disjoint pieces
    /// of memory, so their start and length tell them apart.)
    pub fn input_index(&mut self, chunk: &Bytes) -> usize {
        let same = |last: &Bytes| last.as_ptr() == chunk.as_ptr() && last.len() == chunk.len();
        if !self.input.last().is_some_and(same) {
            self.input.push(chunk.clone());
        }
        self.input.len() - 1
    }

    /// Adds a request, to be answered after those already in the batch.
    pub fn push(&mut self, op: Op) {
        self.stores |= matches!(op, Op::Store { .. });
        self.ops.push(op);
    }

    /// Keeps where a STORE's validation resumes, for its op.
    pub fn resume_at(&mut self, resume: Resume) -> ResumeAt {
        // A batch holds far fewer than 2^32 requests (its input is
        // bounded by the connection's buffers).
        let at = ResumeAt(self.resumes.len() as u32);
        self.resumes.push(resume);
        at
    }

    /// Where the STORE of op `at` resumes its validation.
    pub(crate) fn resume(&self, at: ResumeAt) -> Resume {
        self.resumes.get(at.0 as usize).cloned().unwrap_or_default()
    }

    /// Whether the batch has what its STOREs that wait for validators are
    /// validated under.
    pub fn has_validation(&self) -> bool {
        self.validation.is_some()
    }

    /// Sets what the batch's STOREs that wait for validators are validated
    /// under (a batch has one chain: the one current when it was read).
    pub fn set_validation(&mut self, validation: Validation) {
        self.validation = Some(validation);
    }

    /// Says the connection watches its client for this whole trip (a
    /// batch of STOREs that will wait for storage: a wake per STORE to say
    /// so would cost more than the watch).
    pub fn watch(&mut self, watched: bool) {
        self.watched = watched;
    }

    /// Whether a STORE was added since the last [`clear`](Self::clear).
    pub fn has_stores(&self) -> bool {
        self.stores
    }

    /// Whether no request was added since the last [`clear`](Self::clear).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether every op has been answered.
    pub fn is_done(&self) -> bool {
        self.next >= self.ops.len()
    }

    /// The replies encoded so far; the connection writes and clears them.
    pub fn replies(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// What was answered since the last fold.
    pub fn tally(&mut self) -> &mut Tally {
        &mut self.tally
    }

    /// Answers the op at `next` and moves past it. (Inlined: once per
    /// request, with most arms constant-folded away at each call.)
    #[inline(always)]
    pub(crate) fn answer(&mut self, answer: Answer<'_>) {
        let tally = &mut self.tally;
        let out = &mut self.out;
        match answer {
            Answer::Stored => {
                tally.count(Command::Store, Tallied::Yes);
                Reply::Stored.encode(out);
            }
            Answer::Refused => {
                tally.count(Command::Store, Tallied::No);
                Reply::Rargh.encode(out);
            }
            Answer::Exists(true) => {
                tally.count(Command::Exists, Tallied::Yes);
                Reply::Awesome.encode(out);
            }
            Answer::Exists(false) => {
                tally.count(Command::Exists, Tallied::No);
                Reply::Rargh.encode(out);
            }
            Answer::Value(value) => {
                tally.count(Command::Get, Tallied::Yes);
                Reply::Value(value).encode(out);
            }
            Answer::ValueLine(line) => {
                tally.count(Command::Get, Tallied::Yes);
                out.extend_from_slice(line);
            }
            Answer::Missing => {
                tally.count(Command::Get, Tallied::No);
                Reply::Value(b"").encode(out);
            }
            Answer::Invalid(command, err) => {
                tally.protocol_error(command, err);
                Reply::Error(err).encode(out);
            }
            Answer::Fault(command, fault) => {
                tally.server_error(Some(command), server_error_for(fault));
                Reply::Fault(fault).encode(out);
            }
        }
        self.next += 1;
    }

    /// Answers a STORE that was absent (or pending) when it arrived: its
    /// answer also counts toward the STORE duration histogram.
    pub(crate) fn answer_fresh(&mut self, answer: Answer<'_>) {
        self.tally.fresh_stores += 1;
        self.answer(answer);
    }

    /// Empties the batch for reuse, keeping its allocations unless a burst
    /// made them large: an idle connection stays cheap.
    pub fn clear(&mut self) {
        self.stores = false;
        self.ops.clear();
        self.resumes.clear();
        // Keeps room for the usual batch (a burst's large list would be
        // regrown from nothing at every batch of a sustained one).
        self.ops.shrink_to(KEEP_OPS);
        self.input.clear();
        self.next = 0;
        // The chain ends with the batch: an idle connection must not keep
        // a replaced chain (and its helper processes) alive.
        self.validation = None;
    }
}
