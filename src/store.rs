//! The store actor: the one task that owns the map.
//!
//! Connections never touch the map. They send the actor a [`Batch`] of parsed
//! requests through a [`StoreHandle`] and get it back with the replies already
//! encoded into the batch's output buffer. One round trip per batch (not per
//! request) keeps pipelined load cheap, and because only the actor reads and
//! writes the map, two STOREs of one name can never both win: there is no
//! lock to forget.
//!
//! A STORE that must be validated cannot be finished inside the actor (a
//! validator may take seconds), so the actor *reserves* the name and hands the
//! connection a [`Reservation`]. The connection validates outside the actor
//! and then commits or releases. Another STORE of a reserved name waits in a
//! FIFO for that outcome: [`Turn::Taken`] if the first was stored, or the
//! reservation itself ([`Turn::Yours`]) if it was rejected, so a slow invalid
//! STORE cannot lock a name away from a valid one. EXISTS and GET never wait:
//! a reserved name is not stored yet.
//!
//! With a data file, a STORE stays reserved while its record is written (by
//! the data file's writer thread, so the disk never blocks the actor); the
//! writer's result comes back to the actor, which only then puts the value
//! in the map and acknowledges it. Nothing is visible that is not durable.
//!
//! With a shared namespace (PostgreSQL, several front-ends) the map is a
//! bounded cache of names seen: a GET or EXISTS it cannot answer becomes a
//! lookup the connection awaits ([`Deferred::Reading`]), and a name is
//! reserved in the shared namespace too (a lease) before its STORE is
//! validated. STOREs of one name on this front-end still queue here first,
//! so a front-end holds at most one reservation per name.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use crate::backend::{
    Backend, Event, Found, Lease, Looked, Outcome, Record, Reserved, Start, Written,
};
use crate::handback::{Giver, Slot};
use crate::metrics::{Answer, Command, Metrics, Tally, server_error_of};
use crate::protocol::{ProtocolError, Reply};
use crate::shutdown::Flag;

/// Once a batch's encoded replies pass this many bytes, the actor stops and
/// returns the batch so the connection can write them first. This bounds a
/// connection's reply memory even when a client pipelines GETs of large
/// values and never reads (the protocol's "about 1 MiB").
pub const OUT_HIGH_WATER: usize = 1 << 20;

/// Ops a batch keeps room for between bursts (a read of tiny requests
/// makes thousands: 56 bytes each).
const KEEP_OPS: usize = 1024;

/// Reads of a shared namespace looked up together at most: one query, and
/// at most this many values encoded before the connection writes.
const READ_RUN: usize = 16;

type Hasher_ = foldhash::fast::RandomState;
type Map<V> = HashMap<Box<[u8]>, V, Hasher_>;

/// A stored name and its value in one allocation:
/// `name_len (u32 LE) | name | value | \r\n`. One allocation per entry
/// instead of two keeps a million small entries close to the bytes they
/// hold; the line end kept after the value makes a GET's reply one copy.
struct Entry(Box<[u8]>);

impl Entry {
    fn new(name: &[u8], value: &[u8]) -> Entry {
        let mut bytes = Vec::with_capacity(4 + name.len() + value.len() + 2);
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
        Entry(bytes.into_boxed_slice())
    }

    fn name_len(&self) -> usize {
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.0[..4]);
        u32::from_le_bytes(len) as usize
    }

    fn name(&self) -> &[u8] {
        &self.0[4..4 + self.name_len()]
    }

    fn value(&self) -> &[u8] {
        let line = self.reply_line();
        &line[..line.len() - 2]
    }

    /// The value and its line end: the reply to a GET of the name.
    fn reply_line(&self) -> &[u8] {
        &self.0[4 + self.name_len()..]
    }
}

// An entry is its name as far as the set is concerned, so it can be looked
// up by `&[u8]` (Borrow requires Hash and Eq to agree with the name's).
impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.name()
    }
}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Entry {}

/// The stored names and values: all of them (memory, the data file), or
/// a bounded cache of a shared namespace.
#[derive(Default)]
pub struct Entries {
    set: HashSet<Entry, Hasher_>,
    /// Set for a cache: what it may hold, and which entry goes first.
    budget: Option<Budget>,
}

/// A cache's memory: entries leave oldest first once `used` would pass
/// `limit`. Names are write-once, so an entry is never stale; eviction
/// only costs a lookup later.
struct Budget {
    limit: usize,
    used: usize,
    order: VecDeque<Box<[u8]>>,
}

/// What an entry costs a cache beyond its bytes: the set's slot, the
/// allocation and the name's place in the eviction order.
const ENTRY_OVERHEAD: usize = 64;

impl Entries {
    /// An empty cache that holds at most `limit` bytes.
    pub fn cache(limit: usize) -> Entries {
        Entries {
            set: HashSet::default(),
            budget: Some(Budget {
                limit,
                used: 0,
                order: VecDeque::new(),
            }),
        }
    }

    /// Adds a replayed entry; a name seen before keeps its first value
    /// (write-once). Returns whether it was added.
    pub fn insert_replayed(&mut self, name: &[u8], value: &[u8]) -> bool {
        if self.set.contains(name) {
            return false;
        }
        self.set.insert(Entry::new(name, value))
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    fn contains(&self, name: &[u8]) -> bool {
        self.set.contains(name)
    }

    /// The reply line of a GET of `name` (its value and line end).
    fn reply_line(&self, name: &[u8]) -> Option<&[u8]> {
        self.set.get(name).map(Entry::reply_line)
    }

    /// Adds a stored name (once: names are write-once). A cache makes room
    /// first, and skips an entry larger than all of it.
    fn insert(&mut self, name: &[u8], value: &[u8]) {
        if let Some(budget) = &mut self.budget {
            let cost = 2 * name.len() + value.len() + ENTRY_OVERHEAD;
            if cost > budget.limit || self.set.contains(name) {
                return;
            }
            while budget.used + cost > budget.limit {
                let Some(oldest) = budget.order.pop_front() else {
                    break;
                };
                if let Some(entry) = self.set.take(&oldest[..]) {
                    budget.used -= 2 * entry.name_len() + entry.value().len() + ENTRY_OVERHEAD;
                }
            }
            budget.used += cost;
            budget.order.push_back(name.into());
        }
        self.set.insert(Entry::new(name, value));
    }
}

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
    fn of(self, input: &[Bytes]) -> &[u8] {
        &input[self.chunk][self.start..self.end]
    }

    /// The bytes as a reference of their own (for requests that outlive
    /// their batch's round trip).
    fn to_bytes(self, input: &[Bytes]) -> Bytes {
        input[self.chunk].slice(self.start..self.end)
    }
}

/// One request of a batch, its bytes given as [`Span`]s of the batch's
/// input.
#[derive(Debug)]
pub enum Op {
    /// `validate`: the STORE must still pass validators that cannot answer
    /// inline, so the actor reserves the name instead of storing at once.
    Store {
        name: Span,
        value: Span,
        validate: bool,
    },
    /// A STORE the inline validators already refused: answered `RARGH!`.
    Refused,
    Exists(Span),
    Get(Span),
    /// A line that did not parse (of the command it named, if any): the
    /// actor encodes its `ERROR` reply in order with the others.
    Invalid(Option<Command>, ProtocolError),
}

/// A run of requests from one connection and the buffer their replies go to.
///
/// The actor answers the ops in order, appending replies. It stops early
/// when the replies pass [`OUT_HIGH_WATER`] (the connection writes them,
/// then sends the batch again) or when a STORE cannot be answered at once;
/// then [`take_deferred`](Batch::take_deferred) says what the connection
/// must do, and [`answer_deferred`](Batch::answer_deferred) records the
/// reply once it is known.
#[derive(Debug, Default)]
pub struct Batch {
    /// The received chunks the ops' spans point into (usually one).
    input: Vec<Bytes>,
    ops: Vec<Op>,
    /// The first op not answered yet.
    next: usize,
    out: BytesMut,
    deferred: Option<Deferred>,
    /// What was answered, counted in plain integers until the connection
    /// folds it into the metrics.
    tally: Tally,
    stores: bool,
}

/// The reply to a request that needed a shared namespace it could not
/// reach.
pub const STORAGE_UNAVAILABLE: &str = "storage unavailable";

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
        self.next >= self.ops.len() && self.deferred.is_none()
    }

    /// The replies encoded so far; the connection writes and clears them.
    pub fn replies(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// What the connection must do before the batch can go on.
    pub fn take_deferred(&mut self) -> Option<Deferred> {
        self.deferred.take()
    }

    /// Whether the actor stopped at a STORE the connection must finish.
    pub fn has_deferred(&self) -> bool {
        self.deferred.is_some()
    }

    /// The reply to the oldest deferred STORE; the batch moves past it.
    pub fn answer_deferred(&mut self, reply: Reply<'_>) {
        let tally = &mut self.tally;
        match reply {
            Reply::Stored => tally.count(Command::Store, Answer::Yes),
            Reply::ServerError(reason) => {
                tally.server_error(Some(Command::Store), server_error_of(reason));
            }
            _ => tally.count(Command::Store, Answer::No),
        }
        // It was absent (or pending) when it arrived.
        tally.fresh_stores += 1;
        reply.encode(&mut self.out);
        self.next += 1;
    }

    /// What was answered since the last fold.
    pub fn tally(&mut self) -> &mut Tally {
        &mut self.tally
    }

    /// Answers the `count` reads of a [`Deferred::Reading`] with what the
    /// lookup found (or `ERROR storage unavailable` for each).
    pub fn answer_reads(&mut self, count: usize, found: &Found) {
        for i in 0..count {
            let command = match &self.ops[self.next] {
                Op::Get(_) => Command::Get,
                _ => Command::Exists,
            };
            let reply = match (command, found) {
                (_, Err(_)) => {
                    let unavailable = crate::metrics::ServerError::StorageUnavailable;
                    self.tally.server_error(Some(command), unavailable);
                    Reply::ServerError(STORAGE_UNAVAILABLE)
                }
                (Command::Get, Ok(values)) => match values.get(i) {
                    Some(Looked::Value(value)) => {
                        self.tally.count(Command::Get, Answer::Yes);
                        Reply::Value(value)
                    }
                    Some(Looked::Unservable(reason)) => {
                        self.tally
                            .server_error(Some(command), server_error_of(reason));
                        Reply::ServerError(reason)
                    }
                    _ => {
                        self.tally.count(Command::Get, Answer::No);
                        Reply::Value(b"")
                    }
                },
                (_, Ok(values)) => match values.get(i) {
                    Some(Looked::Value(_) | Looked::Unservable(_)) => {
                        self.tally.count(Command::Exists, Answer::Yes);
                        Reply::Awesome
                    }
                    _ => {
                        self.tally.count(Command::Exists, Answer::No);
                        Reply::Rargh
                    }
                },
            };
            reply.encode(&mut self.out);
            self.next += 1;
        }
    }

    /// Empties the batch for reuse, keeping its allocations unless a burst
    /// made them large: an idle connection stays cheap.
    pub fn clear(&mut self) {
        self.stores = false;
        self.ops.clear();
        // Keeps room for the usual batch (a burst's large list would be
        // regrown from nothing at every batch of a sustained one).
        self.ops.shrink_to(KEEP_OPS);
        self.input.clear();
        self.next = 0;
        self.deferred = None;
    }
}

/// What the connection must do to finish requests the actor could not
/// answer at once. Each variant carries what it needs: the connection
/// never looks back into the batch.
#[derive(Debug)]
pub enum Deferred {
    /// One STORE to finish outside the actor.
    One(PendingStore),
    /// The next STOREs of the batch are being written (to the data file or
    /// the shared namespace), one outcome each, in order: await them.
    Committing(Vec<oneshot::Receiver<Committed>>),
    /// The next `count` requests are GET/EXISTS of names the cache lacks:
    /// await the lookup, then [`Batch::answer_reads`].
    Reading {
        count: usize,
        lookup: oneshot::Receiver<Found>,
    },
}

/// A commit's outcome: `Ok(true)` stored, `Ok(false)` the name was taken
/// meanwhile (by another front-end), or why it failed.
pub type Committed = Result<bool, CommitError>;

/// A STORE waiting on something that may take long: its validation, or
/// another STORE of the same name.
#[derive(Debug)]
pub enum PendingStore {
    /// The name is reserved for this STORE: validate, then commit or release.
    Validate {
        reservation: Reservation,
        name: Bytes,
        value: Bytes,
    },
    /// Another STORE of this name is being validated (or the name is being
    /// reserved in the shared namespace): await the outcome, then validate
    /// this one if the name passes to it.
    Wait {
        turn: oneshot::Receiver<Turn>,
        name: Bytes,
        value: Bytes,
    },
}

/// The outcome a waiting STORE receives.
#[derive(Debug)]
pub enum Turn {
    /// The STORE ahead of it was stored: reply `RARGH!`.
    Taken,
    /// The STORE ahead of it was rejected: this one now holds the name.
    Yours(Reservation),
    /// The shared namespace could not be reached to reserve the name.
    Failed(String),
}

/// Messages that settle a reservation. They travel on an unbounded channel
/// because a `Reservation` must be able to release itself from `Drop`; the
/// channel holds at most one message per live reservation, so it is bounded
/// by the number of STOREs in flight.
enum Settle {
    Commit {
        name: Box<[u8]>,
        value: Box<[u8]>,
        lease: Option<Lease>,
        done: Done,
    },
    Release {
        name: Box<[u8]>,
        lease: Option<Lease>,
    },
    /// The backend reports.
    Backend(Event<Ticket>),
}

/// Where a commit's outcome goes.
type Done = oneshot::Sender<Committed>;

/// The exclusive right to store one name, held while a STORE is validated.
///
/// Dropping it without [`commit`](Reservation::commit) releases the name to
/// the next waiting STORE, so a cancelled or failed STORE never leaves a name
/// locked.
#[derive(Debug)]
pub struct Reservation {
    name: Option<Box<[u8]>>,
    /// The shared namespace's reservation of the name, with one.
    lease: Option<Lease>,
    settle: mpsc::UnboundedSender<Settle>,
}

impl std::fmt::Debug for Settle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Settle::Commit { .. } => "Commit",
            Settle::Release { .. } => "Release",
            Settle::Backend(_) => "Backend",
        })
    }
}

impl Reservation {
    /// Stores `value` under the reserved name. Returns once the value is in
    /// the map (and so visible to every later request) and, with a data
    /// file, written to it; `Ok(false)` if a shared namespace found the
    /// name taken after all.
    pub async fn commit(mut self, value: &[u8]) -> Committed {
        let name = self.name.take().ok_or(CommitError::Closed)?;
        let (done, stored) = oneshot::channel();
        self.settle
            .send(Settle::Commit {
                name,
                value: value.into(),
                lease: self.lease,
                done,
            })
            .map_err(|_| CommitError::Closed)?;
        stored.await.map_err(|_| CommitError::Closed)?
    }

    /// Gives the name up (the STORE was rejected). Same as dropping it.
    pub fn release(self) {}
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            // If the actor is gone there is nobody left to wake.
            let _ = self.settle.send(Settle::Release {
                name,
                lease: self.lease,
            });
        }
    }
}

/// The store actor has stopped (the server is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the store has stopped")]
pub struct StoreClosed;

/// Why a STORE was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("the store has stopped")]
    Closed,
    /// The data file could not take it; the reason is for the client.
    #[error("{0}")]
    Storage(String),
}

/// Lets the tasks already queued on this worker run first.
///
/// Not `tokio::task::yield_now`: that one waits until the scheduler has
/// also polled the I/O driver, one more `epoll_wait` per actor turn (about
/// one per request at pipeline 1). A task that wakes itself while it runs
/// goes to the back of the run queue instead, behind the connections woken
/// with it, and nothing else happens in between.
async fn after_queued_tasks() {
    let mut queued = false;
    std::future::poll_fn(|cx| {
        if queued {
            return std::task::Poll::Ready(());
        }
        queued = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// A batch on its way to the actor, with where to send it back.
type BatchMessage = (Box<Batch>, Giver<Box<Batch>>);

/// Batches the actor answers per turn before it lets other tasks run.
const BATCHES_PER_TURN: usize = 64;

/// A cloneable handle to the store actor.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    batches: mpsc::UnboundedSender<BatchMessage>,
}

/// How long a closing store waits for reservations still held (STOREs
/// being validated or written) to settle before it stops regardless.
const CLOSE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// The running actor, for whoever stops the store: [`StoreTask::close`]
/// ends it even while handles remain.
#[derive(Debug)]
pub struct StoreTask {
    close: Flag,
    actor: tokio::task::JoinHandle<()>,
}

impl StoreTask {
    /// Stops taking batches, settles what is in flight (bounded), and
    /// returns once the backend, if any, has finished (the data file is
    /// synced and closed).
    pub async fn close(self) {
        self.close.raise();
        let _ = self.actor.await;
    }
}

/// A started backend with the settle channel its outcomes travel on.
type BackendParts = (
    Option<Box<dyn Backend<Ticket>>>,
    mpsc::UnboundedSender<Settle>,
    mpsc::UnboundedReceiver<Settle>,
);

/// A commit's outcome, routed back to the STORE that asked for it
/// (opaque to backends: they hand it back with the record's outcome).
pub struct Ticket(Done);

impl StoreHandle {
    /// Starts an empty in-memory store on the current tokio runtime. It
    /// stops when the last handle is dropped.
    pub fn spawn() -> StoreHandle {
        let metrics = crate::metrics::Metrics::new(crate::metrics::StoreKind::Memory);
        let (handle, _task) = StoreHandle::start(Entries::default(), None, metrics);
        handle
    }

    /// Starts a store holding `entries` on the current tokio runtime, with
    /// a durable backend when given (its outcomes come back to the actor).
    /// Close the returned task to stop it cleanly.
    pub fn spawn_with(
        entries: Entries,
        backend: Option<Start<Ticket>>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(StoreHandle, StoreTask)> {
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let backend = match backend {
            Some(start) => {
                let settle = settle_tx.clone();
                Some(start(Box::new(move |event| {
                    // The actor outlives the backend; if it is gone, so is
                    // everyone waiting.
                    let _ = settle.send(Settle::Backend(event));
                }))?)
            }
            None => None,
        };
        Ok(StoreHandle::start(
            entries,
            Some((backend, settle_tx, settle_rx)),
            metrics,
        ))
    }

    /// Spawns the actor over a started backend (or none): cannot fail.
    fn start(
        mut entries: Entries,
        with: Option<BackendParts>,
        metrics: Arc<Metrics>,
    ) -> (StoreHandle, StoreTask) {
        // Unbounded, since bounded already: a connection has one batch at
        // the actor at most (it waits for it back), so the queue never holds
        // more batches than there are connections, and `max_connections`
        // bounds those. A bounded channel would take a semaphore's lock per
        // batch for nothing.
        let (batches, batch_rx) = mpsc::unbounded_channel();
        let (mut backend, settle_tx, settle_rx) = match with {
            Some(parts) => parts,
            None => {
                let (settle_tx, settle_rx) = mpsc::unbounded_channel();
                (None, settle_tx, settle_rx)
            }
        };
        if let Some(shared) = backend.as_mut().and_then(|b| b.shared()) {
            // The map is a cache of the shared namespace.
            entries = Entries::cache(shared.cache_bytes());
        }
        let actor = Store {
            entries,
            metrics,
            pending: Map::default(),
            settle_tx,
            backend,
        };
        let close = Flag::default();
        let actor = tokio::spawn(actor.run(batch_rx, settle_rx, close.clone()));
        (StoreHandle { batches }, StoreTask { close, actor })
    }

    /// Has the actor answer `batch.ops[batch.next..]` (see [`Batch`]).
    ///
    /// The batch travels boxed, and a connection keeps the same box for its
    /// whole life, and the batch comes back through `slot`, the
    /// connection's for every trip: the batch moves through the channel,
    /// the actor and the slot as one pointer, with no allocation, instead
    /// of being copied a dozen times (a tenth of all instructions at
    /// pipeline 1).
    pub async fn execute(
        &self,
        batch: Box<Batch>,
        slot: &Slot<Box<Batch>>,
    ) -> Result<Box<Batch>, StoreClosed> {
        self.batches
            .send((batch, slot.giver()))
            .map_err(|_| StoreClosed)?;
        slot.receive().await.map_err(|_| StoreClosed)
    }
}

struct Store {
    entries: Entries,
    /// Where the number of names is published (a local store's).
    metrics: Arc<Metrics>,
    /// Reserved names, each with the STOREs waiting for its outcome.
    pending: Map<VecDeque<oneshot::Sender<Turn>>>,
    /// Kept to mint reservations; also keeps the settle channel open for as
    /// long as the actor runs.
    settle_tx: mpsc::UnboundedSender<Settle>,
    /// Where commits are made durable, when anywhere.
    backend: Option<Box<dyn Backend<Ticket>>>,
}

impl Store {
    async fn run(
        mut self,
        mut batches: mpsc::UnboundedReceiver<BatchMessage>,
        mut settles: mpsc::UnboundedReceiver<Settle>,
        close: Flag,
    ) {
        // Watched, not waited on anew each turn: that would register (a
        // lock) and deregister (another) per batch.
        let mut closed = close.watch();
        loop {
            tokio::select! {
                // Settle first: a commit's waiter is blocked on it.
                biased;
                Some(settle) = settles.recv() => {
                    self.settle(settle);
                    self.publish();
                }
                () = &mut closed => break,
                msg = batches.recv() => match msg {
                    Some(first) => {
                        // Let the other connections woken with this one send
                        // theirs first: the scheduler runs a woken actor
                        // right after the task that woke it, so at one
                        // request per connection every batch would cost a
                        // whole actor turn (waiting on both channels again).
                        // Deferred, the actor answers them all in one turn.
                        after_queued_tasks().await;
                        self.serve(first);
                        self.serve_ready(&mut settles, &mut batches);
                        self.publish();
                    }
                    None => break,
                },
            }
        }
        // Every handle is gone or the store was closed: no batch is taken.
        // Settle what is left so no waiter hangs (records in the writer's
        // queue come back as Written), then stop, which lets the writer
        // sync and stop.
        drop(batches);
        let settle_rest = async {
            while !self.pending.is_empty() {
                match settles.recv().await {
                    Some(settle) => self.settle(settle),
                    None => break,
                }
            }
        };
        if tokio::time::timeout(CLOSE_PATIENCE, settle_rest)
            .await
            .is_err()
        {
            log::warn!("store: stopping with STOREs still unsettled");
        }
        // The data file syncs and closes (its lock released) before the
        // store counts as stopped.
        if let Some(backend) = self.backend.take() {
            let _ = tokio::task::spawn_blocking(move || backend.close()).await;
        }
    }

    /// Answers one batch and hands it back to its connection.
    fn serve(&mut self, (mut batch, reply): BatchMessage) {
        self.process(&mut batch);
        // The connection may have gone; its STOREs are done.
        reply.give(batch);
    }

    /// Answers the batches already queued, up to a turn's worth (settling
    /// first what is ready: a commit's waiter is blocked on it), without
    /// waiting.
    fn serve_ready(
        &mut self,
        settles: &mut mpsc::UnboundedReceiver<Settle>,
        batches: &mut mpsc::UnboundedReceiver<BatchMessage>,
    ) {
        for _ in 1..BATCHES_PER_TURN {
            while let Ok(settle) = settles.try_recv() {
                self.settle(settle);
            }
            match batches.try_recv() {
                Ok(message) => self.serve(message),
                Err(_) => return,
            }
        }
    }

    /// Publishes the number of names (one relaxed store: the actor is its
    /// only writer).
    fn publish(&self) {
        if let Some(names) = &self.metrics.names {
            names.store(
                self.entries.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    fn reservation(&self, name: Box<[u8]>, lease: Option<Lease>) -> Reservation {
        Reservation {
            name: Some(name),
            lease,
            settle: self.settle_tx.clone(),
        }
    }

    /// The shared namespace, when the map is only its cache.
    fn shared(&mut self) -> Option<&mut dyn crate::backend::Shared> {
        self.backend.as_mut().and_then(|b| b.shared())
    }

    fn process(&mut self, batch: &mut Batch) {
        let shared = self.shared().is_some();
        while batch.next < batch.ops.len() {
            let out = &mut batch.out;
            if out.len() >= OUT_HIGH_WATER {
                return;
            }
            let tally = &mut batch.tally;
            let input = &batch.input;
            match &batch.ops[batch.next] {
                Op::Get(name) => match self.entries.reply_line(name.of(input)) {
                    Some(line) => {
                        tally.count(Command::Get, Answer::Yes);
                        tally.cache_hits += shared as u64;
                        // `Reply::Value(value).encode(out)`, in one copy.
                        out.extend_from_slice(line);
                    }
                    None if shared => return self.look_up(batch),
                    None => {
                        tally.count(Command::Get, Answer::No);
                        Reply::Value(b"").encode(out);
                    }
                },
                Op::Exists(name) => match self.entries.contains(name.of(input)) {
                    true => {
                        tally.count(Command::Exists, Answer::Yes);
                        tally.cache_hits += shared as u64;
                        Reply::Awesome.encode(out);
                    }
                    false if shared => return self.look_up(batch),
                    false => {
                        tally.count(Command::Exists, Answer::No);
                        Reply::Rargh.encode(out);
                    }
                },
                Op::Invalid(command, err) => {
                    tally.protocol_error(*command, *err);
                    Reply::Error(*err).encode(out);
                }
                Op::Refused => {
                    tally.count(Command::Store, Answer::No);
                    Reply::Rargh.encode(out);
                }
                &Op::Store {
                    name: name_at,
                    value: value_at,
                    validate,
                } => {
                    let name = name_at.of(input);
                    if self.entries.contains(name) {
                        tally.count(Command::Store, Answer::No);
                        Reply::Rargh.encode(out);
                    } else if let Some(waiters) = self.pending.get_mut(name) {
                        let (tx, turn) = oneshot::channel();
                        waiters.push_back(tx);
                        batch.deferred = Some(Deferred::One(PendingStore::Wait {
                            turn,
                            name: name_at.to_bytes(input),
                            value: value_at.to_bytes(input),
                        }));
                        return;
                    } else if validate && shared {
                        // Validate only once the shared namespace has
                        // reserved the name for this front-end: the STORE
                        // waits for that like for a STORE ahead of it.
                        let key: Box<[u8]> = name.into();
                        let (tx, turn) = oneshot::channel();
                        self.pending.insert(key.clone(), VecDeque::from([tx]));
                        if let Some(shared) = self.shared() {
                            shared.reserve(key);
                        }
                        batch.deferred = Some(Deferred::One(PendingStore::Wait {
                            turn,
                            name: name_at.to_bytes(input),
                            value: value_at.to_bytes(input),
                        }));
                        return;
                    } else if validate {
                        let key: Box<[u8]> = name.into();
                        self.pending.insert(key.clone(), VecDeque::new());
                        batch.deferred = Some(Deferred::One(PendingStore::Validate {
                            reservation: self.reservation(key, None),
                            name: name_at.to_bytes(input),
                            value: value_at.to_bytes(input),
                        }));
                        return;
                    } else if self.backend.is_some() {
                        batch.deferred = Some(Deferred::Committing(self.commit_run(batch)));
                        return;
                    } else {
                        self.entries.insert(name, value_at.of(input));
                        tally.count(Command::Store, Answer::Yes);
                        tally.fresh_stores += 1;
                        Reply::Stored.encode(out);
                    }
                }
            }
            batch.next += 1;
        }
    }

    /// Starts one lookup for the GET/EXISTS at `batch.next` and those right
    /// after it that the cache cannot answer either (a cached one ends the
    /// run: the actor answers it next time, in order).
    fn look_up(&mut self, batch: &mut Batch) {
        let input = &batch.input;
        let names: Vec<Bytes> = batch.ops[batch.next..]
            .iter()
            .map_while(|op| match op {
                Op::Get(name) | Op::Exists(name) if !self.entries.contains(name.of(input)) => {
                    Some(name.to_bytes(input))
                }
                _ => None,
            })
            .take(READ_RUN)
            .collect();
        let count = names.len();
        batch.tally.cache_misses += count as u64;
        let lookup = match self.shared() {
            Some(shared) => shared.look_up(names),
            // Not reached: only a shared store looks names up.
            None => oneshot::channel().1,
        };
        batch.deferred = Some(Deferred::Reading { count, lookup });
    }

    fn settle(&mut self, settle: Settle) {
        match settle {
            Settle::Commit {
                name,
                value,
                lease,
                done,
            } => self.commit(name, value, lease, done),
            Settle::Release { name, lease } => self.release(name, lease),
            Settle::Backend(Event::Written(Written {
                name,
                value,
                token: Ticket(done),
                lease,
                outcome,
                durable_end,
            })) => match outcome {
                Outcome::Stored => self.store(name, value, durable_end, done),
                Outcome::Taken => {
                    self.taken(&name);
                    let _ = done.send(Ok(false));
                }
                Outcome::Failed(reason) if self.shared().is_some() => {
                    // The shared namespace was unavailable for this STORE's
                    // whole request timeout: the STOREs of the name queued
                    // behind it fail with it, as a reservation's failure
                    // fails them. Handing them the name would make each
                    // wait one more timeout (or two: a reservation, then
                    // a commit) past its own.
                    self.failed(&name, &reason);
                    let _ = done.send(Err(CommitError::Storage(reason)));
                    if let (Some(lease), Some(shared)) = (lease, self.shared()) {
                        shared.release(lease);
                    }
                }
                Outcome::Failed(reason) => {
                    let _ = done.send(Err(CommitError::Storage(reason)));
                    self.release(name, lease);
                }
            },
            Settle::Backend(Event::Reserved { name, reserved }) => match reserved {
                Reserved::Held(lease) => self.release(name, Some(lease)),
                Reserved::Taken => self.taken(&name),
                Reserved::Failed(reason) => {
                    self.failed(&name, &reason);
                }
            },
            Settle::Backend(Event::Found(found)) => {
                for (name, value) in found {
                    self.entries.insert(&name, &value);
                }
            }
        }
    }

    /// Starts writing the STORE at `batch.next` and every STORE right after
    /// it that needs no validation and names a free name, so that one
    /// connection's pipelined STOREs share the data file's writes and
    /// syncs. The run stops at any other request: its reply comes after
    /// theirs, and what it sees must include their outcome.
    fn commit_run(&mut self, batch: &Batch) -> Vec<oneshot::Receiver<Committed>> {
        let mut outcomes = Vec::new();
        let mut run = Vec::new();
        for op in &batch.ops[batch.next..] {
            let &Op::Store {
                name,
                value,
                validate: false,
            } = op
            else {
                break;
            };
            let name = name.of(&batch.input);
            if self.entries.contains(name) || self.pending.contains_key(name) {
                break;
            }
            let name: Box<[u8]> = name.into();
            self.pending.insert(name.clone(), VecDeque::new());
            let (done, outcome) = oneshot::channel();
            run.push(Record {
                name,
                value: value.of(&batch.input).into(),
                token: Ticket(done),
                lease: None,
            });
            outcomes.push(outcome);
        }
        self.append(run);
        outcomes
    }

    /// Hands a run of reserved records to the backend; if it has stopped,
    /// their STOREs fail and their names are released.
    fn append(&mut self, run: Vec<Record<Ticket>>) {
        let Some(backend) = self.backend.as_mut() else {
            return;
        };
        if let Err(failed) = backend.append(run) {
            for Record {
                name, token, lease, ..
            } in failed
            {
                let _ = token.0.send(Err(CommitError::Storage(
                    "storage: the backend has stopped".into(),
                )));
                self.release(name, lease);
            }
        }
    }

    /// Commits a reserved name: with a backend, once it has the record
    /// (the name stays reserved meanwhile); else at once.
    fn commit(&mut self, name: Box<[u8]>, value: Box<[u8]>, lease: Option<Lease>, done: Done) {
        if self.backend.is_none() {
            return self.store(name, value, None, done);
        }
        self.append(vec![Record {
            name,
            value,
            token: Ticket(done),
            lease,
        }]);
    }

    /// Puts a committed value in the map and answers every STORE waiting
    /// on its name.
    /// The name now has this value (durable up to `durable_end` of the
    /// data file, where there is one).
    fn store(&mut self, name: Box<[u8]>, value: Box<[u8]>, durable_end: Option<u64>, done: Done) {
        self.taken(&name);
        self.entries.insert(&name, &value);
        // Listings see the name once the map has it, and before its STORE
        // is answered (Written::durable_end).
        if let (Some(end), Some(datafile)) = (durable_end, &self.metrics.datafile) {
            datafile.durable.publish(end);
        }
        let _ = done.send(Ok(true));
    }

    /// The shared namespace could not be had for the name: every STORE
    /// waiting for it fails with the same reason.
    fn failed(&mut self, name: &[u8], reason: &str) {
        for waiter in self.pending.remove(name).unwrap_or_default() {
            let _ = waiter.send(Turn::Failed(reason.to_string()));
        }
    }

    /// The name has a value: every STORE waiting for it is answered.
    fn taken(&mut self, name: &[u8]) {
        for waiter in self.pending.remove(name).unwrap_or_default() {
            let _ = waiter.send(Turn::Taken);
        }
    }

    /// Hands a reserved name (and its shared reservation, if any) to the
    /// first STORE still waiting for it, or frees it. In a shared
    /// namespace a waiter is handed the name only with a lease: without
    /// one, the name is reserved there first.
    fn release(&mut self, name: Box<[u8]>, lease: Option<Lease>) {
        let shared = self.shared().is_some();
        let Some(waiters) = self.pending.get_mut(&name) else {
            return;
        };
        if shared && lease.is_none() && !waiters.is_empty() {
            if let Some(shared) = self.shared() {
                shared.reserve(name);
            }
            return;
        }
        while let Some(waiter) = waiters.pop_front() {
            let turn = Turn::Yours(Reservation {
                name: Some(name.clone()),
                lease,
                settle: self.settle_tx.clone(),
            });
            match waiter.send(turn) {
                Ok(()) => return,
                Err(Turn::Yours(mut unused)) => {
                    // That STORE is gone; defuse its reservation rather than
                    // looping a Release through the queue.
                    unused.name = None;
                }
                Err(_) => {}
            }
        }
        self.pending.remove(&name);
        if let (Some(lease), Some(shared)) = (lease, self.shared()) {
            shared.release(lease);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_find_what_was_added_and_keep_the_first_value() {
        let mut entries = Entries::default();
        let name = |i: usize| format!("{}{i}", "n".repeat(i % 40)).into_bytes();
        for i in 0..2_000 {
            assert!(entries.insert_replayed(&name(i), format!("v{i}").as_bytes()));
        }
        assert!(!entries.insert_replayed(&name(7), b"other"));
        entries.insert(&name(8), b"other");
        assert_eq!(entries.len(), 2_000);
        for i in 0..2_000 {
            let line = entries.reply_line(&name(i)).expect("added");
            assert_eq!(line, format!("v{i}\r\n").as_bytes());
        }
        assert!(!entries.contains(b"n"));
        assert!(!entries.contains(&name(2_000)));
    }

    #[test]
    fn a_cache_lets_its_oldest_entries_go_first() {
        // Room for about three entries of this size.
        let cost = 2 * 4 + 4 + ENTRY_OVERHEAD;
        let mut cache = Entries::cache(3 * cost + cost / 2);
        for name in [b"name1", b"name2", b"name3", b"name4"] {
            cache.insert(&name[1..], b"vvvv");
        }
        assert!(!cache.contains(b"ame1"));
        for kept in [b"ame2", b"ame3", b"ame4"] {
            assert_eq!(cache.reply_line(kept), Some(&b"vvvv\r\n"[..]));
        }
        assert_eq!(cache.len(), 3);
    }

    /// One round trip, on a slot of its own.
    async fn run(handle: &StoreHandle, batch: Box<Batch>) -> Result<Box<Batch>, StoreClosed> {
        handle.execute(batch, &Slot::default()).await
    }

    /// A request of a test batch, its bytes given as they are.
    enum Req {
        Store(&'static str, &'static str),
        Get(&'static str),
        Exists(&'static str),
        Other(Op),
    }

    /// A batch whose STOREs do (`validate`) or do not need validation;
    /// each name and value is an input chunk of its own.
    fn batch(reqs: Vec<Req>, validate: bool) -> Box<Batch> {
        let mut batch = Box::<Batch>::default();
        let span = |batch: &mut Batch, s: &'static str| {
            let index = batch.input_index(&Bytes::from_static(s.as_bytes()));
            Span::new(index, 0..s.len())
        };
        for req in reqs {
            let op = match req {
                Req::Store(n, v) => Op::Store {
                    name: span(&mut batch, n),
                    value: span(&mut batch, v),
                    validate,
                },
                Req::Get(n) => Op::Get(span(&mut batch, n)),
                Req::Exists(n) => Op::Exists(span(&mut batch, n)),
                Req::Other(op) => op,
            };
            batch.push(op);
        }
        batch
    }

    fn store(n: &'static str, v: &'static str) -> Req {
        Req::Store(n, v)
    }

    fn get(n: &'static str) -> Req {
        Req::Get(n)
    }

    #[tokio::test]
    async fn requests_from_two_chunks_of_input_are_answered_from_their_own_bytes() {
        let mut b = Box::<Batch>::default();
        let first = Bytes::from_static(b"STORE a x\nGET a\n");
        let second = Bytes::from_static(b"GET a\n");
        let i = b.input_index(&first);
        assert_eq!(b.input_index(&first), i, "the same chunk is kept once");
        b.push(Op::Store {
            name: Span::new(i, 6..7),
            value: Span::new(i, 8..9),
            validate: false,
        });
        b.push(Op::Get(Span::new(i, 14..15)));
        let j = b.input_index(&second);
        assert_ne!(i, j);
        b.push(Op::Get(Span::new(j, 4..5)));
        let b = run(&StoreHandle::spawn(), b).await.unwrap();
        assert_eq!(&b.out[..], b"W00T!\r\nx\r\nx\r\n");
    }

    #[tokio::test]
    async fn a_batch_is_answered_in_order_and_sees_its_own_stores() {
        let handle = StoreHandle::spawn();
        let ops = vec![
            get("a"),
            store("a", "x y "),
            Req::Exists("a"),
            store("a", "z"),
            get("a"),
            Req::Other(Op::Invalid(None, ProtocolError::MissingName)),
            Req::Other(Op::Refused),
        ];
        let b = run(&handle, batch(ops, false)).await.unwrap();
        assert!(b.is_done());
        assert_eq!(
            &b.out[..],
            b"\r\nW00T!\r\nAWESOME!\r\nRARGH!\r\nx y \r\nERROR missing name\r\nRARGH!\r\n"
        );
    }

    #[tokio::test]
    async fn a_rejected_reservation_passes_to_the_next_waiter() {
        let handle = StoreHandle::spawn();
        let mut first = run(&handle, batch(vec![store("n", "bad")], true))
            .await
            .unwrap();
        let Some(Deferred::One(PendingStore::Validate {
            reservation: res, ..
        })) = first.deferred.take()
        else {
            panic!("expected a reservation");
        };
        let mut second = run(&handle, batch(vec![store("n", "good")], true))
            .await
            .unwrap();
        let Some(Deferred::One(PendingStore::Wait { turn: rx, .. })) = second.deferred.take()
        else {
            panic!("expected to wait");
        };
        // Reads do not wait for the pending name.
        let b = run(&handle, batch(vec![get("n"), Req::Exists("n")], true))
            .await
            .unwrap();
        assert_eq!(&b.out[..], b"\r\nRARGH!\r\n");

        drop(res); // rejected
        let Turn::Yours(res) = rx.await.unwrap() else {
            panic!("expected the name to pass on");
        };
        res.commit(b"good").await.unwrap();
        let b = run(&handle, batch(vec![get("n")], true)).await.unwrap();
        assert_eq!(&b.out[..], b"good\r\n");
    }

    #[tokio::test]
    async fn a_commit_answers_every_waiter_taken() {
        let handle = StoreHandle::spawn();
        let mut first = run(&handle, batch(vec![store("n", "1")], true))
            .await
            .unwrap();
        let Some(Deferred::One(PendingStore::Validate {
            reservation: res, ..
        })) = first.deferred.take()
        else {
            panic!("expected a reservation");
        };
        let mut waits = Vec::new();
        for _ in 0..3 {
            let mut b = run(&handle, batch(vec![store("n", "2")], true))
                .await
                .unwrap();
            let Some(Deferred::One(PendingStore::Wait { turn: rx, .. })) = b.deferred.take() else {
                panic!("expected to wait");
            };
            waits.push(rx);
        }
        res.commit(b"1").await.unwrap();
        for rx in waits {
            assert!(matches!(rx.await.unwrap(), Turn::Taken));
        }
    }

    #[tokio::test]
    async fn a_waiter_that_went_away_is_skipped() {
        let handle = StoreHandle::spawn();
        let mut first = run(&handle, batch(vec![store("n", "1")], true))
            .await
            .unwrap();
        let Some(Deferred::One(PendingStore::Validate {
            reservation: res, ..
        })) = first.deferred.take()
        else {
            panic!("expected a reservation");
        };
        let mut gone = run(&handle, batch(vec![store("n", "2")], true))
            .await
            .unwrap();
        drop(gone.deferred.take());
        let mut live = run(&handle, batch(vec![store("n", "3")], true))
            .await
            .unwrap();
        let Some(Deferred::One(PendingStore::Wait { turn: rx, .. })) = live.deferred.take() else {
            panic!("expected to wait");
        };
        res.release();
        assert!(matches!(rx.await.unwrap(), Turn::Yours(_)));
    }

    #[tokio::test]
    async fn replies_stop_at_the_high_water_mark() {
        let handle = StoreHandle::spawn();
        let big = "v".repeat(60_000);
        let big: &'static str = Box::leak(big.into_boxed_str());
        run(&handle, batch(vec![store("big", big)], false))
            .await
            .unwrap();
        let ops = (0..100).map(|_| get("big")).collect();
        let b = run(&handle, batch(ops, false)).await.unwrap();
        assert!(!b.is_done());
        assert!(b.out.len() >= OUT_HIGH_WATER && b.out.len() < OUT_HIGH_WATER + 60_003);
    }
}
