//! The store actor: the one task that owns the map, answers every request,
//! and keeps the requests that wait.
//!
//! Only the actor reads and writes the map, so two STOREs of one name can
//! never both win: there is no lock to forget. A request it cannot answer
//! in its turn parks its batch ([`super::parked`]); what it waits for
//! reports back through the actor's settle channel, and the actor goes on
//! with the batch from there. So every path is: the connection hands the
//! actor a batch, the actor hands work out and takes outcomes in, and the
//! connection gets its replies.
//!
//! A STORE that must be validated holds its name while its validators run
//! (in a task of its own: a validator may take seconds). Other STOREs of
//! that name wait in a FIFO: refused if the first is stored, handed the
//! name if it is refused, so a slow invalid STORE cannot lock a name away
//! from a valid one. EXISTS and GET never wait: a held name is not stored
//! yet.
//!
//! With a data file, a STORE keeps its name held while its record is
//! written (by the data file's writer thread, so the disk never blocks the
//! actor); only once the writer reports does the actor put the value in
//! the map and answer. Nothing is visible that is not durable.
//!
//! With a shared namespace (PostgreSQL, several front-ends) the map is a
//! bounded cache of names seen: reads it cannot answer are looked up, and
//! a name is reserved in the shared namespace too (a lease) before its
//! STORE is validated. STOREs of one name on this front-end still queue
//! here first, so a front-end holds at most one reservation per name. The
//! two modes are two types ([`Mode`], in `mode.rs`), chosen once at start.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::OUT_HIGH_WATER;
use super::batch::{Answer, Batch, Op, Span};
use super::entries::{Entries, Hasher_};
use super::mode::Mode;
use super::parked::{Back, Handback, Parked, ParkedBatches, Ticket, Wait};
use crate::base::shutdown::Flag;
use crate::metrics::{Command, Metrics};
use crate::protocol::ServerFault;
use crate::storage::{Event, Found, Lease, Looked, Outcome, Record, Reserved, Written};
use crate::store::handback::{Giver, SlotId};

mod reads;
mod validation;

pub(crate) use validation::Ruling;

type Map<V> = HashMap<Box<[u8]>, V, Hasher_>;

/// What becomes of a STORE the actor looks at.
enum Step {
    /// Answered now (stored in memory, refused, or past the grace period).
    Answered,
    /// Its name is held by another STORE.
    WaitForTurn,
    /// A shared namespace must reserve the name before it is validated.
    Reserve,
    /// Its name is held for it while its validators run.
    Validate,
    /// It goes to the backend (with the STOREs right after it).
    Commit,
}

/// What reaches the actor besides batches: outcomes of the work it handed
/// out. Unbounded, since bounded already: at most one message per request
/// in flight.
pub(crate) enum Settle {
    /// The backend reports.
    Backend(Event<Ticket>),
    /// A STORE's validators are done.
    Validated { ticket: Ticket, ruling: Ruling },
}

pub(crate) struct Actor<M> {
    entries: Entries,
    /// Where the number of names is published (a local store's), and
    /// requests answered for a client that left are counted.
    metrics: Arc<Metrics>,
    /// Held names, each with the parked batches whose STORE waits for it.
    pending: Map<VecDeque<Ticket>>,
    parked: ParkedBatches,
    /// Where validation tasks report.
    settle_tx: mpsc::UnboundedSender<Settle>,
    /// Raised at the end of the grace period: nothing starts waiting from
    /// then on (read where it matters, not only when the actor's loop
    /// notices it: a validation abandoned at that moment must not hand
    /// its name on).
    expired: Flag,
    mode: M,
}

impl<M: Mode> Actor<M> {
    pub fn new(
        entries: Entries,
        metrics: Arc<Metrics>,
        settle_tx: mpsc::UnboundedSender<Settle>,
        expired: Flag,
        mode: M,
    ) -> Actor<M> {
        Actor {
            entries,
            metrics,
            pending: Map::default(),
            parked: ParkedBatches::default(),
            settle_tx,
            expired,
            mode,
        }
    }

    /// Whether STOREs go to storage (and wait for it).
    pub fn has_backend(&mut self) -> bool {
        self.mode.backend().is_some()
    }

    /// Whether nothing waits any more.
    pub fn is_settled(&self) -> bool {
        self.parked.is_empty() && self.pending.is_empty()
    }

    /// Publishes the number of names (one relaxed store: the actor is its
    /// only writer).
    pub fn publish(&self) {
        if let Some(names) = &self.metrics.names {
            names.store(
                self.entries.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Stops, handing the backend back to be closed; batches still parked
    /// are dropped (their connections are told the store stopped).
    pub fn stop(mut self) -> M {
        for parked in self.parked.drain() {
            drop(parked);
        }
        self.mode
    }

    /// Answers `batch` from its next request on, as far as it can go now.
    /// A batch whose client left is dropped: nothing more starts for it.
    pub fn serve(&mut self, mut batch: Box<Batch>, back: Back) {
        let Some(giver) = back.filter(|giver| !giver.is_abandoned()) else {
            return self.drop_batch(batch);
        };
        let shared = M::SHARED;
        while batch.next < batch.ops.len() {
            if batch.out.len() >= OUT_HIGH_WATER {
                break;
            }
            let input = &batch.input;
            match &batch.ops[batch.next] {
                Op::Get(name) => match self.entries.value_line(name.of(input)) {
                    Some(line) => {
                        batch.tally.cache_hits += shared as u64;
                        batch.answer(Answer::ValueLine(line));
                    }
                    None if shared => return self.look_up(batch, giver),
                    None => batch.answer(Answer::Missing),
                },
                Op::Exists(name) => match self.entries.contains(name.of(input)) {
                    true => {
                        batch.tally.cache_hits += shared as u64;
                        batch.answer(Answer::Exists(true));
                    }
                    false if shared => return self.look_up(batch, giver),
                    false => batch.answer(Answer::Exists(false)),
                },
                &Op::Invalid(command, err) => batch.answer(Answer::Invalid(command, err)),
                Op::Refused => batch.answer(Answer::Refused),
                &Op::Store {
                    name,
                    value,
                    resume,
                } => {
                    let validate = resume.is_some();
                    match self.store_at_once(&mut batch, name, value, validate) {
                        Step::Answered => {}
                        Step::WaitForTurn => return self.wait_for_turn(batch, giver),
                        Step::Reserve => return self.reserve(batch, giver),
                        Step::Validate => return self.validate(batch, giver, None),
                        Step::Commit => return self.commit_run(batch, giver),
                    }
                }
            }
        }
        giver.give(Handback::Batch(batch));
    }

    /// Answers the STORE at `batch.next` if it can be now, or says what it
    /// must wait for (its name held for it where it waits for its
    /// validators). Out of `serve`'s loop: a loop this small keeps its map
    /// lookups inlined for the GETs and EXISTS that are most requests.
    #[inline(never)]
    fn store_at_once(
        &mut self,
        batch: &mut Batch,
        name: Span,
        value: Span,
        validate: bool,
    ) -> Step {
        let name = name.of(&batch.input);
        if self.entries.contains(name) {
            batch.answer(Answer::Refused);
        } else if (validate || self.pending.contains_key(name)) && self.expired.is_raised() {
            // Past the grace period nothing starts waiting: no validator
            // runs, no STORE queues behind another.
            batch.answer_fresh(Answer::Fault(Command::Store, &ServerFault::ShuttingDown));
        } else if self.pending.contains_key(name) {
            return Step::WaitForTurn;
        } else if validate && M::SHARED {
            return Step::Reserve;
        } else if validate {
            self.pending.insert(name.into(), VecDeque::new());
            return Step::Validate;
        } else if self.mode.backend().is_some() {
            return Step::Commit;
        } else {
            self.entries.insert(name, value.of(&batch.input));
            batch.answer_fresh(Answer::Stored);
        }
        Step::Answered
    }

    /// Parks `batch` waiting for `wait`, handing its connection the replies
    /// ready so far. `None`: the client left, and the batch was dropped
    /// instead (requests not started yet are not started).
    fn park(&mut self, batch: Box<Batch>, giver: Giver<Handback>, wait: Wait) -> Option<Ticket> {
        if giver.is_abandoned() {
            self.drop_batch(batch);
            return None;
        }
        let ticket = self.parked.vacant();
        self.park_at(ticket, batch, Some(giver), wait);
        Some(ticket)
    }

    /// A batch whose client left: counted, and its requests not started
    /// are dropped.
    fn drop_batch(&self, mut batch: Box<Batch>) {
        log::debug!("client gone: dropping the requests it left unanswered");
        self.metrics.fold(&mut batch.tally, None);
    }

    /// Goes on with a parked batch.
    fn resume(&mut self, parked: Parked) {
        self.serve(parked.batch, parked.giver);
    }

    /// The name and value of the STORE at `batch.next`.
    fn store_at(batch: &Batch) -> (&[u8], &[u8]) {
        match &batch.ops[batch.next] {
            Op::Store { name, value, .. } => (name.of(&batch.input), value.of(&batch.input)),
            _ => (&[], &[]),
        }
    }

    /// The STORE at `batch.next` queues behind the one holding its name.
    fn wait_for_turn(&mut self, batch: Box<Batch>, giver: Giver<Handback>) {
        let name: Box<[u8]> = Self::store_at(&batch).0.into();
        if let Some(ticket) = self.park(batch, giver, Wait::Turn)
            && let Some(waiters) = self.pending.get_mut(&name)
        {
            waiters.push_back(ticket);
        }
    }

    /// A shared namespace reserves the name for this front-end before the
    /// STORE at `batch.next` is validated: it waits for that like for a
    /// STORE ahead of it.
    fn reserve(&mut self, batch: Box<Batch>, giver: Giver<Handback>) {
        let name: Box<[u8]> = Self::store_at(&batch).0.into();
        let Some(ticket) = self.park(batch, giver, Wait::Turn) else {
            return;
        };
        self.pending.insert(name.clone(), VecDeque::from([ticket]));
        self.reserve_shared(name);
    }

    /// Asks the shared namespace for `name`; if it has stopped, the STOREs
    /// waiting for the name fail now (no answer would ever come).
    fn reserve_shared(&mut self, name: Box<[u8]>) {
        let refused = match self.mode.shared() {
            Some(shared) => shared.reserve(name).err(),
            None => Some(name),
        };
        if let Some(name) = refused {
            self.failed(&name, &ServerFault::StorageStopped);
        }
    }

    /// Starts writing the STORE at `batch.next` and every STORE right after
    /// it that needs no validation and names a free name, so that one
    /// connection's pipelined STOREs share the data file's writes and
    /// syncs. The run stops at any other request: its reply comes after
    /// theirs, and what it sees must include their outcome.
    fn commit_run(&mut self, batch: Box<Batch>, giver: Giver<Handback>) {
        if giver.is_abandoned() {
            return self.drop_batch(batch);
        }
        let ticket = self.parked.vacant();
        let mut run = Vec::new();
        for op in &batch.ops[batch.next..] {
            let &Op::Store {
                name,
                value,
                resume: None,
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
            run.push(Record {
                name,
                value: value.of(&batch.input).into(),
                token: ticket.with_index(run.len()),
                lease: None,
            });
        }
        let wait = Wait::Commits {
            outcomes: vec![None; run.len()],
            left: run.len(),
        };
        self.park_at(ticket, batch, Some(giver), wait);
        self.append(run);
    }

    /// Parks `batch` under a ticket already handed out. The replies ready
    /// go to the connection now (a part, empty if none is ready: it tells
    /// the connection to watch its client while the batch waits), unless
    /// its last part is still unreceived (a client that does not read):
    /// then they stay in the batch, whose high-water mark bounds them.
    fn park_at(&mut self, ticket: Ticket, mut batch: Box<Batch>, giver: Back, wait: Wait) {
        if let Some(giver) = &giver
            && giver.is_drained()
            && (!batch.out.is_empty() || !batch.watched)
        {
            giver.part(Handback::Part(std::mem::take(&mut batch.out)));
        }
        self.parked.fill(ticket, Parked { batch, giver, wait });
    }

    /// Commits the validated STORE at `batch.next`, which holds its name:
    /// with a backend once it has the record; else at once.
    fn commit(&mut self, batch: Box<Batch>, giver: Back, lease: Option<Lease>) {
        let (name, value) = Self::store_at(&batch);
        let (name, value): (Box<[u8]>, Box<[u8]>) = (name.into(), value.into());
        if self.mode.backend().is_none() {
            self.stored(&name, &value, None);
            let mut batch = batch;
            batch.answer_fresh(Answer::Stored);
            return self.serve(batch, giver);
        }
        let ticket = self.parked.vacant();
        let wait = Wait::Commits {
            outcomes: vec![None],
            left: 1,
        };
        self.park_at(ticket, batch, giver, wait);
        self.append(vec![Record {
            name,
            value,
            token: ticket,
            lease,
        }]);
    }

    /// Hands a run of held records to the backend; if it has stopped,
    /// their STOREs fail and their names are released.
    fn append(&mut self, run: Vec<Record<Ticket>>) {
        let Some(backend) = self.mode.backend() else {
            return;
        };
        if let Err(failed) = backend.append(run) {
            // Reported like any outcome, through the settle channel: taken
            // in here, they would resume the batch from inside its own
            // serve, once more per STORE of a long batch.
            for record in failed {
                let written = Written {
                    outcome: Outcome::Failed(ServerFault::StorageStopped),
                    name: record.name,
                    value: record.value,
                    token: record.token,
                    lease: record.lease,
                    durable_end: None,
                };
                let _ = self
                    .settle_tx
                    .send(Settle::Backend(Event::Written(written)));
            }
        }
    }

    /// Whether the batch of `ticket` waits for what `kind` says: every
    /// ticket is redeemed once, by the outcome it was handed out for, so
    /// anything else is a defect; the batch is then left where it is
    /// rather than taken and lost.
    fn waits_for(&mut self, ticket: Ticket, kind: impl Fn(&Wait) -> bool) -> bool {
        let waits = self.parked.get_mut(ticket).is_some_and(|p| kind(&p.wait));
        debug_assert!(waits, "an outcome for a batch that does not wait for it");
        waits
    }

    /// Takes in what was handed out.
    pub fn settle(&mut self, settle: Settle) {
        match settle {
            Settle::Validated { ticket, ruling } => self.validated(ticket, ruling),
            Settle::Backend(Event::Written(written)) => self.written(written),
            Settle::Backend(Event::Reserved { name, reserved }) => match reserved {
                Reserved::Held(lease) => self.release(name, Some(lease)),
                Reserved::Taken => self.taken(&name),
                Reserved::Failed(fault) => self.failed(&name, &fault),
            },
            Settle::Backend(Event::LookedUp { token, found }) => self.looked_up(token, found),
        }
    }

    /// One record's outcome: the map and the waiters of its name learn it,
    /// then its parked batch; once the batch's whole run is in, it goes on.
    fn written(&mut self, written: Written<Ticket>) {
        let Written {
            name,
            value,
            token,
            lease,
            outcome,
            durable_end,
        } = written;
        let result = match outcome {
            Outcome::Stored => {
                self.stored(&name, &value, durable_end);
                Ok(true)
            }
            Outcome::Taken => {
                self.taken(&name);
                Ok(false)
            }
            Outcome::Failed(fault) if M::SHARED => {
                // The shared namespace was unavailable for this STORE's
                // whole request timeout: the STOREs of the name queued
                // behind it fail with it, as a reservation's failure fails
                // them. Handing them the name would make each wait one
                // more timeout (or two: a reservation, then a commit) past
                // its own.
                self.failed(&name, &fault);
                self.end_lease(lease);
                Err(fault)
            }
            Outcome::Failed(fault) => {
                self.release(name, lease);
                Err(fault)
            }
        };
        let Some(parked) = self.parked.get_mut(token) else {
            return;
        };
        let Wait::Commits { outcomes, left } = &mut parked.wait else {
            return;
        };
        if let Some(slot) = outcomes.get_mut(token.index())
            && slot.is_none()
        {
            *slot = Some(result);
            *left -= 1;
        }
        if *left > 0 {
            return;
        }
        let Some(Parked {
            mut batch,
            giver,
            wait: Wait::Commits { outcomes, .. },
        }) = self.parked.take(token)
        else {
            return;
        };
        for outcome in outcomes.into_iter().flatten() {
            batch.answer_fresh(match &outcome {
                Ok(true) => Answer::Stored,
                Ok(false) => Answer::Refused,
                Err(fault) => Answer::Fault(Command::Store, fault),
            });
        }
        self.serve(batch, giver);
    }

    /// Puts a committed value in the map and answers every STORE waiting
    /// for its name. Listings see the name once the map has it, and before
    /// its STORE is answered (durable up to `durable_end` of the data file,
    /// where there is one).
    fn stored(&mut self, name: &[u8], value: &[u8], durable_end: Option<u64>) {
        self.entries.insert(name, value);
        if let (Some(end), Some(datafile)) = (durable_end, &self.metrics.datafile) {
            datafile.durable.publish(end);
        }
        self.taken(name);
    }

    /// The name has a value: every STORE waiting for it is refused.
    fn taken(&mut self, name: &[u8]) {
        self.answer_waiters(name, Answer::Refused);
    }

    /// The shared namespace could not be had for the name: every STORE
    /// waiting for it fails with the same reason.
    fn failed(&mut self, name: &[u8], fault: &ServerFault) {
        // Past the grace period the shared namespace answers whatever is
        // open as unavailable; to the STOREs that waited, it is the end
        // of the grace period that answers.
        let fault = match self.expired.is_raised() {
            true => &ServerFault::ShuttingDown,
            false => fault,
        };
        self.answer_waiters(name, Answer::Fault(Command::Store, fault));
    }

    fn answer_waiters(&mut self, name: &[u8], answer: Answer<'_>) {
        for ticket in self.pending.remove(name).unwrap_or_default() {
            if let Some(mut parked) = self.parked.take(ticket) {
                parked.batch.answer_fresh(answer);
                self.resume(parked);
            }
        }
    }

    /// Hands a held name (and its lease, if any) to the first STORE still
    /// waiting for it, or frees it. In a shared namespace a waiter is
    /// handed the name only with a lease: without one, the name is
    /// reserved there first.
    fn release(&mut self, name: Box<[u8]>, lease: Option<Lease>) {
        loop {
            let Some(waiters) = self.pending.get_mut(&name) else {
                return self.end_lease(lease);
            };
            if M::SHARED && lease.is_none() && !waiters.is_empty() {
                return self.reserve_shared(name);
            }
            let Some(ticket) = waiters.pop_front() else {
                self.pending.remove(&name);
                return self.end_lease(lease);
            };
            let Some(mut parked) = self.parked.take(ticket) else {
                continue;
            };
            let Some(giver) = parked.giver.filter(|giver| !giver.is_abandoned()) else {
                self.drop_batch(parked.batch);
                continue;
            };
            parked.giver = Some(giver);
            if self.expired.is_raised() {
                let shutting_down = Answer::Fault(Command::Store, &ServerFault::ShuttingDown);
                parked.batch.answer_fresh(shutting_down);
                self.resume(parked);
                continue;
            }
            // Its turn: the name stays held, now for this STORE.
            let validate = matches!(
                parked.batch.ops[parked.batch.next],
                Op::Store {
                    resume: Some(_),
                    ..
                }
            );
            return match (validate, parked.giver) {
                (true, Some(giver)) => self.validate(parked.batch, giver, lease),
                (_, giver) => self.commit(parked.batch, giver, lease),
            };
        }
    }

    /// Gives a lease back to the shared namespace.
    fn end_lease(&mut self, lease: Option<Lease>) {
        if let (Some(lease), Some(shared)) = (lease, self.mode.shared()) {
            shared.release(lease);
        }
    }

    /// The client of the connection with `slot` left. Its batch, if parked
    /// here, lets the connection go at once: a STORE waiting for its
    /// name's turn has not started and is dropped now (its memory too);
    /// what has started (a validation, a write, a lookup) finishes, and the
    /// batch is dropped after.
    pub fn left(&mut self, slot: SlotId) {
        let Some(ticket) = self.parked.find(slot) else {
            return;
        };
        let Some(parked) = self.parked.get_mut(ticket) else {
            return;
        };
        if !matches!(parked.wait, Wait::Turn) {
            return self.parked.let_go(ticket);
        }
        let Some(parked) = self.parked.take(ticket) else {
            return;
        };
        let name = Self::store_at(&parked.batch).0;
        if let Some(waiters) = self.pending.get_mut(name) {
            waiters.retain(|waiting| *waiting != ticket);
        }
        self.drop_batch(parked.batch);
    }

    /// The grace period is over: STOREs waiting for a name's turn are
    /// answered `ERROR shutting down` (not stored), and none waits from
    /// now on. Validations end by themselves; writes are waited for.
    pub fn expire(&mut self) {
        let waiting: Vec<Ticket> = self
            .pending
            .values_mut()
            .flat_map(|waiters| waiters.drain(..))
            .collect();
        for ticket in waiting {
            if let Some(mut parked) = self.parked.take(ticket) {
                let shutting_down = Answer::Fault(Command::Store, &ServerFault::ShuttingDown);
                parked.batch.answer_fresh(shutting_down);
                self.resume(parked);
            }
        }
    }
}
