//! The store: one actor task owns the names and values; connections hand
//! it batches of requests and get typed answers back as reply lines.
//!
//! - [`batch`]: a batch of requests, their [`Answer`]s and the replies;
//! - [`entries`]: the map (or the cache of a shared namespace);
//! - [`parked`]: the batches that wait, and the [`Ticket`]s that find them;
//! - [`actor`]: answering, and keeping what waits (validations, writes,
//!   lookups, STOREs queued behind another of their name);
//! - [`mode`]: the map as the whole truth or as a shared namespace's cache;
//! - [`handback`]: the channel replies and batches go back to a
//!   connection by;
//! - this module: the handle connections use, and the actor's life.
//!
//! Hand-offs, each one message on one channel: a STORE to a data file goes
//! connection → actor → writer → actor → connection; an uncached GET on
//! PostgreSQL connection → actor → engine → actor → connection (see
//! docs/architecture.md).

mod actor;
mod batch;
mod entries;
pub(crate) mod handback;
mod mode;
mod parked;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::base::shutdown::Flag;
use crate::metrics::Metrics;
use crate::storage::{Start, Started};
use crate::store::handback::{Giver, Slot, SlotId};
use actor::{Actor, Settle};
use mode::{Local, Mode, SharedNamespace};

pub use batch::{Batch, Op, Span, Validation};
pub use entries::Entries;
pub use parked::{Handback, Ticket};

/// Once a batch's encoded replies pass this many bytes, the actor stops and
/// returns the batch so the connection can write them first. This bounds a
/// connection's reply memory even when a client pipelines GETs of large
/// values and never reads (the protocol's "about 1 MiB").
pub const OUT_HIGH_WATER: usize = 1 << 20;

/// Reads of a shared namespace looked up together at most: one query, and
/// at most this many values encoded before the connection writes.
const READ_RUN: usize = 16;

/// Batches the actor answers per turn before it lets other tasks run.
const BATCHES_PER_TURN: usize = 64;

/// How long a closing store waits for what is in flight (STOREs being
/// validated or written) to settle before it stops regardless.
const CLOSE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// The same once the grace period is over (a second signal stops at once):
/// what is in flight then is a write or a lookup that does not return.
const EXPIRED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// What connections send the actor: a batch with where its answers go, or
/// word that a connection's client left (after its batch, on the same
/// channel: the actor has seen the batch by then).
enum Inbound {
    Batch(Box<Batch>, Giver<Handback>),
    Left(SlotId),
}

/// The store actor has stopped (the server is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the store has stopped")]
pub struct StoreClosed;

/// A cloneable handle to the store actor.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    batches: mpsc::UnboundedSender<Inbound>,
    /// Whether a STORE waits for storage (a data file, a shared
    /// namespace): its connection then watches its client from the start.
    stores_wait: bool,
}

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

impl StoreHandle {
    /// Starts a store holding `entries` on the current tokio runtime, with
    /// a durable backend when given (its outcomes come back to the actor).
    /// Once `expired` is raised (the end of the grace period), STOREs
    /// waiting for their name's turn are answered `ERROR shutting down`.
    /// Close the returned task to stop it cleanly.
    pub fn spawn_with(
        entries: Entries,
        backend: Option<Start<Ticket>>,
        metrics: Arc<Metrics>,
        expired: Flag,
    ) -> std::io::Result<(StoreHandle, StoreTask)> {
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let started = match backend {
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
        Ok(match started {
            Some(Started::Shared(shared)) => {
                // The map is a cache of the shared namespace.
                let entries = Entries::cache(shared.cache_bytes());
                let mode = SharedNamespace(shared);
                let actor = Actor::new(entries, metrics, settle_tx, expired.clone(), mode);
                StoreHandle::start(actor, settle_rx, expired)
            }
            Some(Started::Local(backend)) => {
                let mode = Local(Some(backend));
                let actor = Actor::new(entries, metrics, settle_tx, expired.clone(), mode);
                StoreHandle::start(actor, settle_rx, expired)
            }
            None => {
                let actor = Actor::new(entries, metrics, settle_tx, expired.clone(), Local(None));
                StoreHandle::start(actor, settle_rx, expired)
            }
        })
    }

    /// Spawns the actor: cannot fail.
    fn start<M: Mode>(
        mut actor: Actor<M>,
        settles: mpsc::UnboundedReceiver<Settle>,
        expired: Flag,
    ) -> (StoreHandle, StoreTask) {
        // Unbounded, since bounded already: a connection has one batch at
        // the actor at most (it waits for it back), so the queue never holds
        // more batches than there are connections, and `max_connections`
        // bounds those. A bounded channel would take a semaphore's lock per
        // batch for nothing.
        let (batches, batch_rx) = mpsc::unbounded_channel();
        let close = Flag::default();
        let stores_wait = actor.has_backend();
        let task = tokio::spawn(run(actor, batch_rx, settles, close.clone(), expired));
        let handle = StoreHandle {
            batches,
            stores_wait,
        };
        (handle, StoreTask { close, actor: task })
    }

    /// Hands `batch` to the actor; its replies come back through `slot`
    /// (the connection's for every trip): [`Handback::Part`]s while it
    /// waits, then [`Handback::Batch`]. The batch travels boxed, one
    /// pointer through the channel, the actor and the slot, with no
    /// allocation (copying it a dozen times was a tenth of all
    /// instructions at pipeline 1).
    pub fn submit(&self, batch: Box<Batch>, slot: &Slot<Handback>) -> Result<(), StoreClosed> {
        self.batches
            .send(Inbound::Batch(batch, slot.giver()))
            .map_err(|_| StoreClosed)
    }

    /// Whether a STORE waits for storage (a data file, a shared namespace)
    /// before it is answered.
    pub fn stores_wait(&self) -> bool {
        self.stores_wait
    }

    /// Tells the actor that the client of the connection with `slot` left
    /// while its batch was at the actor: the connection is let go at once
    /// (its slot receives the batch back, or word that none will come),
    /// and nothing more starts for the batch.
    pub fn left(&self, slot: &Slot<Handback>) {
        // If the actor is gone, so is the batch.
        let _ = self.batches.send(Inbound::Left(slot.id()));
    }
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

/// The actor's life: batches and outcomes until closed, then what is in
/// flight is settled (bounded) and the backend closed.
async fn run<M: Mode>(
    mut actor: Actor<M>,
    mut batches: mpsc::UnboundedReceiver<Inbound>,
    mut settles: mpsc::UnboundedReceiver<Settle>,
    close: Flag,
    expired: Flag,
) {
    // Watched, not waited on anew each turn: that would register (a lock)
    // and deregister (another) per batch.
    let mut closed = close.watch();
    let mut expiry = expired.watch();
    let mut answered_expiry = false;
    loop {
        tokio::select! {
            // Outcomes first: the batches waiting on them are blocked.
            biased;
            Some(settle) = settles.recv() => {
                actor.settle(settle);
                actor.publish();
            }
            () = &mut closed => break,
            () = &mut expiry, if !answered_expiry => {
                answered_expiry = true;
                actor.expire();
            }
            message = batches.recv() => match message {
                Some(Inbound::Left(slot)) => actor.left(slot),
                Some(Inbound::Batch(batch, giver)) => {
                    // Let the other connections woken with this one send
                    // theirs first: the scheduler runs a woken actor right
                    // after the task that woke it, so at one request per
                    // connection every batch would cost a whole actor turn
                    // (waiting on both channels again). Deferred, the actor
                    // answers them all in one turn.
                    after_queued_tasks().await;
                    settle_ready(&mut actor, &mut settles);
                    actor.serve(batch, Some(giver));
                    serve_ready(&mut actor, &mut batches);
                    actor.publish();
                }
                None => break,
            },
        }
    }
    // Every handle is gone or the store was closed: no batch is taken.
    // Settle what is left so no waiter hangs (records in the writer's
    // queue come back as written), then stop, which lets the writer sync
    // and stop.
    drop(batches);
    let settle_rest = async {
        while !actor.is_settled() {
            match settles.recv().await {
                Some(settle) => actor.settle(settle),
                None => break,
            }
        }
    };
    let patience = match expired.is_raised() {
        true => EXPIRED_PATIENCE,
        false => CLOSE_PATIENCE,
    };
    if tokio::time::timeout(patience, settle_rest).await.is_err() {
        log::warn!("store: stopping with STOREs still unsettled");
    }
    // The data file syncs and closes (its lock released) before the store
    // counts as stopped; once the grace period is over, not for longer
    // than EXPIRED_PATIENCE (a disk that does not answer must not keep a
    // second SIGTERM from stopping jnhpd).
    let mode = actor.stop();
    let closing = tokio::task::spawn_blocking(move || mode.close());
    let patience = async {
        expired.raised().await;
        tokio::time::sleep(EXPIRED_PATIENCE).await;
    };
    tokio::select! {
        _ = closing => {}
        () = patience => log::warn!(
            "store: the storage backend did not finish closing (a write or sync that does not \
             return); stopping without it"
        ),
    }
}

/// Takes in every outcome already reported. Done at the start of each turn,
/// so that work finished meanwhile (a lookup that filled the cache, a write
/// that freed or took a name) counts for its batches.
fn settle_ready<M: Mode>(actor: &mut Actor<M>, settles: &mut mpsc::UnboundedReceiver<Settle>) {
    while let Ok(settle) = settles.try_recv() {
        actor.settle(settle);
    }
}

/// Answers the batches already queued, up to a turn's worth, without
/// waiting. (Outcomes reported meanwhile wait for the next turn: a try of
/// the settle channel per batch cost 77 instructions a request at
/// pipeline 1, and the turn is short.)
fn serve_ready<M: Mode>(actor: &mut Actor<M>, batches: &mut mpsc::UnboundedReceiver<Inbound>) {
    for _ in 1..BATCHES_PER_TURN {
        match batches.try_recv() {
            Ok(Inbound::Batch(batch, giver)) => actor.serve(batch, Some(giver)),
            Ok(Inbound::Left(slot)) => actor.left(slot),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::protocol::ProtocolError;
    use crate::validator::{Link, OnFailure, Peer, Validator, ValidatorChain, Verdict};

    /// A validator that holds every STORE until the test opens its gate
    /// (one permit per STORE), then allows values beginning with `good`.
    #[derive(Debug)]
    struct Gated {
        gate: Semaphore,
        seen: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Validator for Gated {
        async fn validate(&self, _name: &[u8], value: &[u8], _peer: &Peer) -> Verdict {
            let value = String::from_utf8_lossy(value).into_owned();
            self.seen.lock().unwrap().push(value.clone());
            if let Ok(permit) = self.gate.acquire().await {
                permit.forget();
            }
            if value == "panic" {
                panic!("a validator that panics (a test)");
            }
            match value.starts_with("good") {
                true => Verdict::Allow,
                false => Verdict::Deny,
            }
        }

        fn describe(&self) -> String {
            "gated".into()
        }
    }

    /// A client of the store: its slot, and what it sends.
    struct Client {
        slot: Slot<Handback>,
    }

    /// What came back for one batch: the replies in order, and whether
    /// some came early (while the batch waited).
    #[derive(Debug)]
    struct Replies {
        text: String,
        parts: usize,
    }

    struct Harness {
        store: StoreHandle,
        chain: Arc<ValidatorChain>,
        gated: Arc<Gated>,
        expired: Flag,
        _task: StoreTask,
    }

    fn harness() -> Harness {
        let gated = Arc::new(Gated {
            gate: Semaphore::new(0),
            seen: Mutex::default(),
        });
        let link = Link::new("gated", gated.clone(), OnFailure::Reject);
        let chain = Arc::new(ValidatorChain::new(vec![link]));
        let expired = Flag::default();
        let metrics = Metrics::new(crate::metrics::StoreKind::Memory);
        let (store, task) =
            StoreHandle::spawn_with(Entries::default(), None, metrics, expired.clone()).unwrap();
        Harness {
            store,
            chain,
            gated,
            expired,
            _task: task,
        }
    }

    /// A shared namespace that has stopped: it takes nothing.
    struct Stopped;

    impl crate::storage::Backend<Ticket> for Stopped {
        fn append(
            &mut self,
            run: Vec<crate::storage::Record<Ticket>>,
        ) -> Result<(), Vec<crate::storage::Record<Ticket>>> {
            Err(run)
        }

        fn close(self: Box<Self>) {}
    }

    impl crate::storage::SharedBackend<Ticket> for Stopped {
        fn reserve(&mut self, name: Box<[u8]>) -> Result<(), Box<[u8]>> {
            Err(name)
        }

        fn release(&mut self, _lease: crate::storage::Lease) {}

        fn look_up(&mut self, _names: Vec<Bytes>, token: Ticket) -> Result<(), Ticket> {
            Err(token)
        }

        fn cache_bytes(&self) -> usize {
            1 << 20
        }
    }

    /// A store over a shared namespace that has stopped.
    fn stopped_harness() -> Harness {
        let mut h = harness();
        let metrics = Metrics::new(crate::metrics::StoreKind::Postgres);
        let start: Start<Ticket> = Box::new(|_sink| Ok(Started::Shared(Box::new(Stopped))));
        let (store, task) =
            StoreHandle::spawn_with(Entries::default(), Some(start), metrics, h.expired.clone())
                .unwrap();
        h.store = store;
        h._task = task;
        h
    }

    /// A request of a test batch; a `Validated` STORE goes through the
    /// gated validator.
    enum Req {
        Store(&'static str, &'static str),
        Validated(&'static str, &'static str),
        Get(&'static str),
        Exists(&'static str),
        Other(Op),
    }
    use Req::*;

    impl Harness {
        /// A batch of `reqs`, each name and value an input chunk of its own.
        fn batch(&self, reqs: Vec<Req>) -> Box<Batch> {
            let mut batch = Box::<Batch>::default();
            let span = |batch: &mut Batch, s: &'static str| {
                let index = batch.input_index(&Bytes::from_static(s.as_bytes()));
                Span::new(index, 0..s.len())
            };
            for req in reqs {
                match req {
                    Store(n, v) | Validated(n, v) => {
                        let validate = matches!(req, Validated(..));
                        let resume = validate
                            .then(|| batch.resume_at(crate::validator::Resume::from_start()));
                        let op = Op::Store {
                            name: span(&mut batch, n),
                            value: span(&mut batch, v),
                            resume,
                        };
                        if validate && !batch.has_validation() {
                            batch.set_validation(Validation {
                                chain: self.chain.clone(),
                                peer: Arc::new(Peer {
                                    addr: None,
                                    cert_subject: None,
                                }),
                                expired: self.expired.clone(),
                            });
                        }
                        batch.push(op);
                    }
                    Get(n) => {
                        let op = Op::Get(span(&mut batch, n));
                        batch.push(op)
                    }
                    Exists(n) => {
                        let op = Op::Exists(span(&mut batch, n));
                        batch.push(op)
                    }
                    Other(op) => batch.push(op),
                }
            }
            batch
        }

        /// Sends a batch from a new client; its replies are collected with
        /// [`Client::replies`].
        fn send(&self, reqs: Vec<Req>) -> Client {
            let client = Client {
                slot: Slot::default(),
            };
            self.store.submit(self.batch(reqs), &client.slot).unwrap();
            client
        }

        /// One round trip.
        async fn ask(&self, reqs: Vec<Req>) -> String {
            self.send(reqs).replies().await.text
        }

        /// Lets `n` validations through.
        fn open(&self, n: usize) {
            self.gated.gate.add_permits(n);
        }

        /// Waits until the validator has seen `n` STOREs.
        async fn validating(&self, n: usize) {
            within_10s(async {
                while self.gated.seen.lock().unwrap().len() < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
        }
    }

    impl Client {
        async fn replies(&self) -> Replies {
            let mut replies = Replies {
                text: String::new(),
                parts: 0,
            };
            loop {
                match within_10s(self.slot.receive()).await.expect("answered") {
                    Handback::Part(part) => {
                        replies.parts += 1;
                        replies.text.push_str(&String::from_utf8_lossy(&part));
                    }
                    Handback::Batch(mut batch) => {
                        assert!(batch.is_done());
                        replies
                            .text
                            .push_str(&String::from_utf8_lossy(batch.replies()));
                        return replies;
                    }
                }
            }
        }
    }

    /// A wake-up that never comes fails the test instead of hanging it.
    async fn within_10s<F: std::future::Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("within 10 s")
    }

    #[tokio::test]
    async fn requests_from_two_chunks_of_input_are_answered_from_their_own_bytes() {
        let h = harness();
        let mut b = Box::<Batch>::default();
        let first = Bytes::from_static(b"STORE a x\nGET a\n");
        let second = Bytes::from_static(b"GET a\n");
        let i = b.input_index(&first);
        assert_eq!(b.input_index(&first), i, "the same chunk is kept once");
        b.push(Op::Store {
            name: Span::new(i, 6..7),
            value: Span::new(i, 8..9),
            resume: None,
        });
        b.push(Op::Get(Span::new(i, 14..15)));
        let j = b.input_index(&second);
        assert_ne!(i, j);
        b.push(Op::Get(Span::new(j, 4..5)));
        let client = Client {
            slot: Slot::default(),
        };
        h.store.submit(b, &client.slot).unwrap();
        assert_eq!(client.replies().await.text, "W00T!\r\nx\r\nx\r\n");
    }

    #[tokio::test]
    async fn a_batch_is_answered_in_order_and_sees_its_own_stores() {
        let h = harness();
        let replies = h
            .ask(vec![
                Get("a"),
                Store("a", "x y "),
                Exists("a"),
                Store("a", "z"),
                Get("a"),
                Other(Op::Invalid(None, ProtocolError::MissingName)),
                Other(Op::Refused),
            ])
            .await;
        assert_eq!(
            replies,
            "\r\nW00T!\r\nAWESOME!\r\nRARGH!\r\nx y \r\nERROR missing name\r\nRARGH!\r\n"
        );
    }

    #[tokio::test]
    async fn replies_before_a_waiting_store_leave_first_and_reads_never_wait() {
        let h = harness();
        let first = h.send(vec![Get("n"), Validated("n", "good"), Get("n")]);
        h.validating(1).await;
        // The reply before the waiting STORE came on its own.
        let part = within_10s(first.slot.receive()).await.unwrap();
        assert!(
            matches!(&part, Handback::Part(p) if &p[..] == b"\r\n"),
            "{part:?}"
        );
        // A held name is not stored yet: other clients' reads do not wait.
        assert_eq!(h.ask(vec![Get("n"), Exists("n")]).await, "\r\nRARGH!\r\n");
        h.open(1);
        assert_eq!(first.replies().await.text, "W00T!\r\ngood\r\n");
    }

    #[tokio::test]
    async fn a_refused_store_hands_its_name_to_the_next_waiter() {
        let h = harness();
        let bad = h.send(vec![Validated("n", "bad")]);
        h.validating(1).await;
        let good = h.send(vec![Validated("n", "good")]);
        h.open(2);
        assert_eq!(bad.replies().await.text, "RARGH!\r\n");
        assert_eq!(good.replies().await.text, "W00T!\r\n");
        assert_eq!(h.ask(vec![Get("n")]).await, "good\r\n");
    }

    #[tokio::test]
    async fn a_stored_name_refuses_every_store_waiting_for_it() {
        let h = harness();
        let first = h.send(vec![Validated("n", "good1")]);
        h.validating(1).await;
        let waiting: Vec<Client> = (0..3)
            .map(|_| h.send(vec![Validated("n", "good2"), Store("m", "v")]))
            .collect();
        h.open(1);
        assert_eq!(first.replies().await.text, "W00T!\r\n");
        for (i, client) in waiting.iter().enumerate() {
            let expected = if i == 0 {
                "RARGH!\r\nW00T!\r\n"
            } else {
                "RARGH!\r\nRARGH!\r\n"
            };
            assert_eq!(client.replies().await.text, expected);
        }
        // Only the first was ever validated.
        assert_eq!(*h.gated.seen.lock().unwrap(), ["good1"]);
    }

    #[tokio::test]
    async fn a_waiter_whose_client_left_is_never_validated() {
        let h = harness();
        let bad = h.send(vec![Validated("n", "bad")]);
        h.validating(1).await;
        let gone = h.send(vec![Validated("n", "good-gone")]);
        let live = h.send(vec![Validated("n", "good-live")]);
        drop(gone);
        h.open(2);
        assert_eq!(bad.replies().await.text, "RARGH!\r\n");
        assert_eq!(live.replies().await.text, "W00T!\r\n");
        assert_eq!(*h.gated.seen.lock().unwrap(), ["bad", "good-live"]);
    }

    #[tokio::test]
    async fn a_client_that_left_is_let_go_at_once_and_its_waiting_store_never_starts() {
        let h = harness();
        let first = h.send(vec![Validated("n", "bad")]);
        h.validating(1).await;
        let gone = h.send(vec![Validated("n", "good-gone"), Store("m", "v")]);
        let validating = h.send(vec![Validated("x", "good-x"), Store("y", "v")]);
        h.validating(2).await;
        h.store.left(&gone.slot);
        h.store.left(&validating.slot);
        // Both connections are let go without waiting for anything (after
        // the empty part that said their batch waits).
        for client in [&gone, &validating] {
            loop {
                match within_10s(client.slot.receive()).await {
                    Ok(Handback::Part(part)) => assert!(part.is_empty()),
                    Ok(Handback::Batch(_)) => panic!("the batch came back"),
                    Err(_) => break,
                }
            }
        }
        h.open(2);
        assert_eq!(first.replies().await.text, "RARGH!\r\n");
        // The validation that had started finished and stored; nothing
        // after it, nor the waiting STORE, started.
        assert_eq!(
            h.ask(vec![Get("n"), Get("m"), Get("x"), Get("y")]).await,
            "\r\n\r\ngood-x\r\n\r\n"
        );
        assert_eq!(*h.gated.seen.lock().unwrap(), ["bad", "good-x"]);
    }

    #[tokio::test]
    async fn a_validator_that_panics_refuses_its_store_and_the_name_passes_on() {
        let h = harness();
        let panics = h.send(vec![Validated("n", "panic")]);
        h.validating(1).await;
        let next = h.send(vec![Validated("n", "good")]);
        h.open(2);
        assert_eq!(panics.replies().await.text, "RARGH!\r\n");
        assert_eq!(next.replies().await.text, "W00T!\r\n");
    }

    /// Reads, reservations and writes a stopped shared namespace refuses
    /// are answered at once (they waited without end), in order, however
    /// long the batch (the refused writes come back through the settle
    /// channel, not by recursion).
    #[tokio::test]
    async fn a_stopped_shared_namespace_fails_what_reaches_it() {
        let h = stopped_harness();
        let stopped = "ERROR storage: the backend has stopped\r\n";
        assert_eq!(
            h.ask(vec![Get("a"), Exists("b"), Validated("c", "good")])
                .await,
            stopped.repeat(3)
        );
        let names: Vec<&'static str> = (0..20_000)
            .map(|i| &*Box::leak(format!("n{i}").into_boxed_str()))
            .collect();
        let long: Vec<Req> = names.iter().flat_map(|n| [Store(n, "v"), Get(n)]).collect();
        assert_eq!(h.ask(long).await, stopped.repeat(40_000));
    }

    #[tokio::test]
    async fn past_the_grace_period_waiting_stores_are_answered_shutting_down() {
        let h = harness();
        let first = h.send(vec![Validated("n", "good")]);
        h.validating(1).await;
        let waiter = h.send(vec![Store("n", "v"), Get("n")]);
        // Answered after the waiter's batch: the waiter waits for its turn.
        assert_eq!(h.ask(vec![Exists("n")]).await, "RARGH!\r\n");
        h.expired.raise();
        // The validation is abandoned, the waiter refused: neither stored.
        assert_eq!(first.replies().await.text, "ERROR shutting down\r\n");
        assert_eq!(waiter.replies().await.text, "ERROR shutting down\r\n\r\n");
    }

    #[tokio::test]
    async fn replies_stop_at_the_high_water_mark() {
        let h = harness();
        let big: &'static str = Box::leak("v".repeat(60_000).into_boxed_str());
        h.ask(vec![Store("big", big)]).await;
        let client = h.send((0..100).map(|_| Get("big")).collect());
        let Handback::Batch(mut batch) = within_10s(client.slot.receive()).await.unwrap() else {
            panic!("expected the batch back");
        };
        assert!(!batch.is_done());
        let out = batch.replies().len();
        assert!(
            (OUT_HIGH_WATER..OUT_HIGH_WATER + 60_003).contains(&out),
            "{out}"
        );
    }
}
