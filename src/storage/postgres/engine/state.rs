//! The engine's state machine: what to ask PostgreSQL next, and what each
//! answer means for the requests waiting on it. No I/O happens here.
//!
//! Why a machine of its own: leases, parked work, retries and read-back
//! are where a shared namespace goes wrong (a STORE answered twice, a
//! reservation never renewed, a reader answered from a row not yet
//! durable), and they are decided by timings that a test against a real
//! PostgreSQL cannot steer. Here every input is a plain value, including
//! the clock (`now`, passed in), and every decision comes out as an
//! [`Output`]: a [`Job`] to run, an [`Event`] for the store actor, a
//! lookup's answer. The task (task.rs) runs the jobs (jobs.rs) and feeds
//! their [`Done`] back; the unit tests (state/tests.rs) play PostgreSQL.
//!
//! Inputs: [`State::request`] (the actor), [`State::finished`] (a job),
//! [`State::notice`] (the LISTEN connection), [`State::wake`] (the clock
//! reached [`State::next_wake`]), [`State::expire`] (the shutdown's grace
//! period is over). Outputs: [`State::outputs`], which also starts jobs
//! while connections are free.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use tokio::time::{Duration, Instant};

use super::UNSERVABLE;
pub use super::messages::{
    AcquireRow, Done, Health, InsertArgs, InsertRow, Job, Notice, Output, ReadRows, Request, Rows,
    Settings, Work, WriteArgs, WriteRows,
};
use crate::metrics::{Metrics, PostgresOp, QueryResult};
use crate::protocol::ServerFault;
use crate::storage::postgres::durability::UNCONFIRMED;
use crate::storage::{Outcome, Record, Reserved};

mod reads;
#[cfg(test)]
mod tests;
mod writes;

/// How long a failed statement waits before it is tried again.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long after a blocking reservation's expiry a parked request looks
/// again (the two clocks, ours and the database's, need not agree).
pub(super) const EXPIRY_SLACK: Duration = Duration::from_millis(50);

/// Requests one statement carries at most.
pub(super) const MAX_PER_STATEMENT: usize = 2048;

/// How often the renewal job (which also checks that writes commit) runs
/// while writes fail, however long the lease: so that a front-end sees
/// writes work again, and says so, even when no STORE arrives.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How often a row that cannot be served is logged again.
const UNSERVABLE_LOG_EVERY: Duration = Duration::from_secs(10);

/// The least time a job gets, however close its deadline: it must be
/// able to start.
const JOB_LIMIT_MIN: Duration = Duration::from_millis(20);

/// A STORE on its way into the names table.
struct Insert<T> {
    record: Record<T>,
    /// Unique per front-end: tells this STORE's own row from another's.
    write_id: i64,
    /// Tried before (a lost answer): a conflicting row may be its own.
    retried: bool,
    /// Its statement was refused for its data (a constraint, a trigger):
    /// it is tried in a statement of its own, which holds no other
    /// STORE back.
    alone: bool,
    deadline: Instant,
}

/// A reservation on its way into the pending table.
struct Acquire {
    name: Box<[u8]>,
    lease: i64,
    deadline: Instant,
}

struct LookUp<T> {
    names: Vec<Bytes>,
    /// The actor's, handed back with the answer.
    token: T,
    deadline: Instant,
}

/// Work waiting for a time: a retry, or the expiry of another front-end's
/// reservation.
enum Item<T> {
    Insert(Insert<T>),
    Acquire(Acquire),
    LookUp(LookUp<T>),
    Release(Vec<i64>, Instant),
}

/// The requests a running job carries, handed back with its [`Done`].
enum Batch<T> {
    Read(Vec<LookUp<T>>),
    Write {
        inserts: Vec<Insert<T>>,
        acquires: Vec<Acquire>,
        releases: (Vec<i64>, Instant),
    },
    Renew,
}

/// The engine's state: queues, jobs running, leases held, parked and
/// delayed work.
pub struct State<T> {
    settings: Settings,
    metrics: Arc<Metrics>,
    inserts: VecDeque<Insert<T>>,
    acquires: VecDeque<Acquire>,
    releases: Vec<(i64, Instant)>,
    lookups: VecDeque<LookUp<T>>,
    /// Blocked by another front-end's reservation of the name: woken by
    /// its release or at its expiry.
    parked: HashMap<Box<[u8]>, (Instant, Item<T>)>,
    /// Retries, each with its time.
    delayed: Vec<(Instant, Item<T>)>,
    /// Leases held, renewed until released or used.
    held: HashSet<i64>,
    /// Write ids and leases: unique per front-end.
    next_id: i64,
    /// Jobs running, by id, with the requests each carries.
    running: HashMap<u64, Batch<T>>,
    next_job: u64,
    /// Write jobs running, and how many may be (half the pool, so reads
    /// always find a connection).
    writing: usize,
    max_writers: usize,
    /// When the next renewal is due (every third of the lease).
    renew_at: Instant,
    renew_due: bool,
    /// A renewal job is running (one at a time: while writes hang, a
    /// renewal due every [`CHECK_EVERY`] must not take the whole pool).
    renewing: bool,
    /// The grace period is over: no retries, no waiting.
    closing: bool,
    /// Whether statements are answered, and whether writes commit
    /// durably, as last seen (to report changes, not each failure).
    reachable: bool,
    writable: bool,
    /// Writes were last found failing by the renewal's check being
    /// refused, which the check alone may then clear
    /// ([`State::note_writes`]).
    failed_by_check: bool,
    /// When an unservable row was last logged (at most every
    /// [`UNSERVABLE_LOG_EVERY`]: every GET of it finds it again).
    unservable_logged: Option<Instant>,
    /// When a statement refused for its data was last logged (as rarely).
    refusal_logged: Option<Instant>,
    out: Vec<Output<T>>,
}

impl<T> State<T> {
    /// A machine with nothing queued; its first renewal (which also
    /// sweeps lapsed rows) is due at once.
    pub fn new(settings: Settings, metrics: Arc<Metrics>, now: Instant) -> State<T> {
        State {
            max_writers: (settings.pool_size / 2).max(1),
            settings,
            metrics,
            inserts: VecDeque::new(),
            acquires: VecDeque::new(),
            releases: Vec::new(),
            lookups: VecDeque::new(),
            parked: HashMap::new(),
            delayed: Vec::new(),
            held: HashSet::new(),
            next_id: 1,
            running: HashMap::new(),
            next_job: 1,
            writing: 0,
            renew_at: now,
            renew_due: false,
            renewing: false,
            closing: false,
            reachable: true,
            writable: true,
            failed_by_check: false,
            unservable_logged: None,
            refusal_logged: None,
            out: Vec::new(),
        }
    }

    /// Whether the grace period is over ([`State::expire`]).
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Starts jobs while connections are free, then hands over everything
    /// decided since the last call, in order.
    pub fn outputs(&mut self, now: Instant) -> Vec<Output<T>> {
        self.dispatch(now);
        std::mem::take(&mut self.out)
    }

    /// When [`State::wake`] is next due: a parked request's expiry, a
    /// retry, or the next renewal.
    pub fn next_wake(&self) -> Instant {
        self.parked
            .values()
            .map(|(at, _)| *at)
            .chain(self.delayed.iter().map(|(at, _)| *at))
            .fold(self.renew_at, Instant::min)
    }

    /// A request of the store actor.
    pub fn request(&mut self, request: Request<T>, now: Instant) {
        let deadline = self.deadline(now);
        match request {
            Request::Append(run) => {
                for record in run {
                    let write_id = self.next_id();
                    self.inserts.push_back(Insert {
                        record,
                        write_id,
                        retried: false,
                        alone: false,
                        deadline,
                    });
                }
            }
            Request::Reserve(name) => {
                let lease = self.next_id();
                self.acquires.push_back(Acquire {
                    name,
                    lease,
                    deadline,
                });
            }
            Request::Release(lease) => {
                self.held.remove(&lease.0);
                self.releases.push((lease.0, deadline));
            }
            Request::LookUp(names, token) => self.lookups.push_back(LookUp {
                names,
                token,
                deadline,
            }),
            Request::Close => {}
        }
    }

    /// A job's outcome.
    pub fn finished(&mut self, done: Done, now: Instant) {
        let Done { id, took, result } = done;
        let Some(batch) = self.running.remove(&id) else {
            log::error!("postgres: the outcome of an unknown job {id}");
            return;
        };
        let mismatch = || format!("job {id} answered with rows of another kind");
        match batch {
            Batch::Read(lookups) => {
                let result = result.and_then(|rows| match rows {
                    Rows::Read(rows) => Ok(rows),
                    _ => Err(mismatch()),
                });
                self.count(PostgresOp::LookUp, result.is_ok(), took);
                self.finish_read(lookups, result, now);
            }
            Batch::Write {
                inserts,
                acquires,
                releases,
            } => {
                let result = result.and_then(|rows| match rows {
                    Rows::Write(rows) => Ok(rows),
                    _ => Err(mismatch()),
                });
                self.count(PostgresOp::Write, result.is_ok(), took);
                self.writing -= 1;
                self.finish_write(inserts, acquires, releases, result, now);
            }
            Batch::Renew => {
                self.renewing = false;
                self.count(PostgresOp::Renew, result.is_ok(), took);
                self.finish_renewal(result, now);
            }
        }
    }

    /// What the LISTEN connection saw.
    pub fn notice(&mut self, notice: Notice, now: Instant) {
        match notice {
            Notice::Released(name) => {
                if let Some((_, item)) = self.parked.remove(&name[..]) {
                    self.requeue(item, true, now);
                }
            }
            Notice::Lost(reason) => self.note_reads(Err(&reason)),
            Notice::Listening => {
                // PostgreSQL answers again (readiness need not wait for
                // the next request to find out), and releases may have
                // been announced while nobody listened: every parked
                // request looks again.
                self.note_reads(Ok(()));
                let parked: Vec<_> = self.parked.drain().map(|(_, (_, item))| item).collect();
                for item in parked {
                    self.requeue(item, true, now);
                }
            }
        }
    }

    /// The clock reached [`State::next_wake`] (or later): requeues the
    /// parked requests whose blocking reservation has expired and the
    /// retries due, and marks a renewal due.
    pub fn wake(&mut self, now: Instant) {
        let due: Vec<Box<[u8]>> = self
            .parked
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            if let Some((_, item)) = self.parked.remove(&name) {
                self.requeue(item, true, now);
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.delayed = later;
        for (_, item) in due {
            self.requeue(item, false, now);
        }
        if self.renew_at <= now {
            // Even with no lease held: the job also sweeps lapsed rows.
            self.renew_due = true;
            let every = match self.writable {
                true => self.settings.lease / 3,
                false => (self.settings.lease / 3).min(CHECK_EVERY),
            };
            self.renew_at += every;
            if self.renew_at <= now {
                // Late (a busy machine): the next one a full period on,
                // not a burst to catch up.
                self.renew_at = now + every;
            }
        }
    }

    /// The grace period is over (the task has abandoned the statements
    /// running; their requests come back failed): answers everything
    /// queued, waiting or parked now, so the store settles at once.
    pub fn expire(&mut self, now: Instant) {
        self.closing = true;
        let mut items: Vec<Item<T>> = Vec::new();
        items.extend(self.inserts.drain(..).map(Item::Insert));
        items.extend(self.acquires.drain(..).map(Item::Acquire));
        items.extend(self.lookups.drain(..).map(Item::LookUp));
        items.extend(self.delayed.drain(..).map(|(_, item)| item));
        items.extend(self.parked.drain().map(|(_, (_, item))| item));
        for item in items {
            self.retry(item, now);
        }
    }

    fn deadline(&self, now: Instant) -> Instant {
        now + self.settings.request_timeout
    }

    fn next_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn start(&mut self, batch: Batch<T>, limit: Duration, work: Work) {
        let id = self.next_job;
        self.next_job += 1;
        self.running.insert(id, batch);
        self.out.push(Output::Start(Job { id, limit, work }));
    }

    /// Starts jobs while connections are free: reads first (they are
    /// cheap and a reader waits on each), then writes (at most half the
    /// pool, so reads always find a connection), then a renewal.
    fn dispatch(&mut self, now: Instant) {
        let size = self.settings.pool_size;
        loop {
            let mut started = false;
            if !self.lookups.is_empty() && self.running.len() < size {
                self.start_read(now);
                started = true;
            }
            let writes =
                !self.inserts.is_empty() || !self.acquires.is_empty() || !self.releases.is_empty();
            if writes && self.writing < self.max_writers && self.running.len() < size {
                self.start_write(now);
                started = true;
            }
            if self.renew_due && !self.renewing && self.running.len() < size {
                self.renew_due = false;
                self.renewing = true;
                let work = Work::Renew {
                    leases: self.held.iter().copied().collect(),
                    lease_secs: self.settings.lease.as_secs_f64(),
                };
                self.start(Batch::Renew, self.settings.request_timeout, work);
            }
            if !started {
                return;
            }
        }
    }

    fn start_read(&mut self, now: Instant) {
        let mut lookups = Vec::new();
        let mut names: Vec<Bytes> = Vec::new();
        while let Some(lookup) = self.lookups.front() {
            if !names.is_empty() && names.len() + lookup.names.len() > MAX_PER_STATEMENT {
                break;
            }
            let Some(lookup) = self.lookups.pop_front() else {
                break;
            };
            names.extend(lookup.names.iter().cloned());
            lookups.push(lookup);
        }
        let limit = time_left(lookups.iter().map(|l| l.deadline), now);
        self.start(Batch::Read(lookups), limit, Work::Read { names });
    }

    fn start_write(&mut self, now: Instant) {
        let take = |n: usize| n.min(MAX_PER_STATEMENT);
        if self.inserts.front().is_some_and(|i| i.alone) {
            return self.start_alone(now);
        }
        // Up to the first STORE that must go alone.
        let batch = self.inserts.iter().take_while(|i| !i.alone).count();
        let inserts: Vec<Insert<T>> = self.inserts.drain(..take(batch)).collect();
        let acquires: Vec<Acquire> = self.acquires.drain(..take(self.acquires.len())).collect();
        let releases: Vec<(i64, Instant)> =
            self.releases.drain(..take(self.releases.len())).collect();
        let release_deadline = releases
            .iter()
            .map(|r| r.1)
            .min()
            .unwrap_or_else(|| self.deadline(now));
        let releases: Vec<i64> = releases.into_iter().map(|r| r.0).collect();
        let limit = time_left(
            inserts
                .iter()
                .map(|i| i.deadline)
                .chain(acquires.iter().map(|a| a.deadline))
                .chain(std::iter::once(release_deadline)),
            now,
        );
        let (plain, leased) = insert_args(&inserts);
        let work = Work::Write(Box::new(WriteArgs {
            plain,
            leased,
            acquire_names: acquires.iter().map(|a| a.name.to_vec()).collect(),
            acquire_leases: acquires.iter().map(|a| a.lease).collect(),
            releases: releases.clone(),
            lease_secs: self.settings.lease.as_secs_f64(),
        }));
        self.writing += 1;
        let batch = Batch::Write {
            inserts,
            acquires,
            releases: (releases, release_deadline),
        };
        self.start(batch, limit, work);
    }

    /// A write job of the one STORE at the front, which must go alone.
    fn start_alone(&mut self, now: Instant) {
        let Some(insert) = self.inserts.pop_front() else {
            return;
        };
        let limit = time_left(std::iter::once(insert.deadline), now);
        let inserts = vec![insert];
        let (plain, leased) = insert_args(&inserts);
        let work = Work::Write(Box::new(WriteArgs {
            plain,
            leased,
            lease_secs: self.settings.lease.as_secs_f64(),
            ..Default::default()
        }));
        self.writing += 1;
        let batch = Batch::Write {
            inserts,
            acquires: Vec::new(),
            releases: (Vec::new(), self.deadline(now)),
        };
        self.start(batch, limit, work);
    }

    /// Counts a job of `op`.
    fn count(&self, op: PostgresOp, ok: bool, took: Duration) {
        if let Some(pg) = &self.metrics.postgres {
            pg.queries[op][QueryResult::of(ok)].fetch_add(1, Relaxed);
            pg.durations[op].observe_duration(took, 1);
        }
    }

    fn count_unconfirmed(&self) {
        if let Some(pg) = &self.metrics.postgres {
            pg.unconfirmed.fetch_add(1, Relaxed);
        }
    }

    /// What a renewal job found: whether its commit was durable (writes
    /// work), and the replication state.
    fn finish_renewal(&mut self, result: Result<Rows, String>, now: Instant) {
        match result {
            Ok(Rows::Renewed(renewal)) => {
                if renewal.writes.as_ref().is_err_and(|e| e == UNCONFIRMED) {
                    self.count_unconfirmed();
                }
                let writes = renewal.writes.as_ref().map(|_| ()).map_err(String::as_str);
                self.note_writes(writes, Witness::Check, now);
                if let Some(replication) = renewal.replication {
                    self.out.push(Output::Replication(replication));
                }
            }
            Ok(_) => self.note_writes(
                Err("a renewal answered with rows of another kind"),
                Witness::Check,
                now,
            ),
            Err(reason) => {
                self.note_writes(Err(&reason), Witness::Check, now);
                // Nothing read: the replication state is not known.
                self.out.push(Output::Replication(Err(reason)));
            }
        }
    }

    /// Reports a change of whether statements are answered (reads, the
    /// LISTEN connection), not each failure.
    fn note_reads(&mut self, result: Result<(), &str>) {
        if self.closing {
            // Statements fail because they were abandoned, not because
            // PostgreSQL is away.
            return;
        }
        match result {
            Ok(()) if !self.reachable => {
                self.reachable = true;
                self.out.push(Output::Health(Health::Reachable));
            }
            Err(reason) if self.reachable => {
                self.reachable = false;
                self.out
                    .push(Output::Health(Health::Unreachable(reason.to_string())));
            }
            _ => {}
        }
    }

    /// Reports a change of whether writes commit durably, not each
    /// failure. Two witnesses: write jobs, and the renewal's check (a
    /// commit that waits for the standby as a STORE's would).
    ///
    /// - Only the check clears a failure the check found when PostgreSQL
    ///   refused the check itself (its function revoked, say): a STORE
    ///   that commits proves nothing of a check that cannot run, and the
    ///   two flapped every second. A check that timed out or lost its
    ///   connection is cleared by any durable commit, so readiness
    ///   returns with the first STORE after an outage.
    /// - A write job refused by the database for its data (a constraint
    ///   or trigger another tool added, a permission: SQLSTATE classes
    ///   22, 23, 42, P0) says nothing of whether writes commit: the
    ///   same poisoned STORE retried flapped readiness.
    /// - A durable commit also means PostgreSQL answers.
    fn note_writes(&mut self, result: Result<(), &str>, by: Witness, now: Instant) {
        if self.closing {
            return;
        }
        match result {
            Ok(()) => {
                self.note_reads(Ok(()));
                if !self.writable && (by == Witness::Check || !self.failed_by_check) {
                    self.writable = true;
                    self.failed_by_check = false;
                    self.out.push(Output::Health(Health::Writable));
                }
            }
            Err(reason) if by == Witness::Job && refused_for_its_data(reason) => {
                // Not an outage, but why STOREs fail: said now and then.
                if self
                    .refusal_logged
                    .is_none_or(|at| now >= at + UNSERVABLE_LOG_EVERY)
                {
                    self.refusal_logged = Some(now);
                    log::warn!(
                        "postgres: a statement was refused ({reason}); its STOREs are tried again until their time is spent"
                    );
                }
            }
            Err(reason) if self.writable => {
                self.writable = false;
                self.failed_by_check = by == Witness::Check && refused_for_its_data(reason);
                self.out
                    .push(Output::Health(Health::Unwritable(reason.to_string())));
                // The next check comes soon, not a third of a lease on.
                self.renew_at = self.renew_at.min(now + CHECK_EVERY);
            }
            Err(reason) => {
                self.failed_by_check |= by == Witness::Check && refused_for_its_data(reason);
            }
        }
    }

    /// Waits for another front-end's reservation: its release (a NOTIFY)
    /// or its expiry `secs` from now.
    fn park(&mut self, item: Item<T>, secs: f64, now: Instant) {
        let name = match &item {
            Item::Insert(insert) => insert.record.name.clone(),
            Item::Acquire(acquire) => acquire.name.clone(),
            // Only STOREs and reservations wait for a name.
            Item::LookUp(_) | Item::Release(..) => return self.retry(item, now),
        };
        if self.closing {
            return self.retry(item, now);
        }
        // The database's word, bounded: a reservation never outlives a
        // lease, and a negative wait (or NaN, which `Duration` refuses
        // with a panic) is no wait.
        let secs = match secs.is_nan() {
            true => 0.0,
            false => secs.clamp(0.0, self.settings.lease.as_secs_f64() + 1.0),
        };
        let at = now + Duration::from_secs_f64(secs) + EXPIRY_SLACK;
        self.parked.insert(name, (at, item));
    }

    /// Tries `item` again after a pause, or answers it `ERROR storage
    /// unavailable` if its time is spent.
    fn retry(&mut self, item: Item<T>, now: Instant) {
        let deadline = match &item {
            Item::Insert(insert) => insert.deadline,
            Item::Acquire(acquire) => acquire.deadline,
            Item::LookUp(lookup) => lookup.deadline,
            Item::Release(_, deadline) => *deadline,
        };
        if now + RETRY_PAUSE < deadline && !self.closing {
            self.delayed.push((now + RETRY_PAUSE, item));
            return;
        }
        match item {
            Item::Insert(insert) => {
                self.written(insert, Outcome::Failed(ServerFault::StorageUnavailable));
            }
            Item::Acquire(acquire) => {
                let failed = Reserved::Failed(ServerFault::StorageUnavailable);
                self.reserved(acquire.name, failed);
            }
            Item::LookUp(lookup) => {
                let failed = Err(ServerFault::StorageUnavailable);
                self.out.push(Output::Answer(lookup.token, failed));
            }
            // The reservations lapse by themselves.
            Item::Release(..) => {}
        }
    }

    /// Puts `item` back in its queue; with a fresh deadline if `fresh`
    /// (it was waiting, not failing).
    fn requeue(&mut self, item: Item<T>, fresh: bool, now: Instant) {
        let deadline = self.deadline(now);
        match item {
            Item::Insert(mut insert) => {
                if fresh {
                    insert.deadline = deadline;
                }
                self.inserts.push_back(insert);
            }
            Item::Acquire(mut acquire) => {
                if fresh {
                    acquire.deadline = deadline;
                }
                self.acquires.push_back(acquire);
            }
            Item::LookUp(lookup) => self.lookups.push_back(lookup),
            Item::Release(leases, deadline) => {
                self.releases
                    .extend(leases.into_iter().map(|lease| (lease, deadline)));
            }
        }
    }
}

/// Who saw whether writes commit ([`State::note_writes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Witness {
    /// A write job (STOREs, reservations, releases).
    Job,
    /// The renewal's check.
    Check,
}

/// Whether a statement's error (`message (SQLSTATE)`, as
/// `postgres::describe` writes it) is the database refusing the data or
/// the statement — a data exception (22), an integrity constraint (23),
/// a permission or syntax (42), a trigger's `RAISE` (P0) — rather than
/// writes not committing.
pub(super) fn refused_for_its_data(reason: &str) -> bool {
    let code = reason
        .strip_suffix(')')
        .and_then(|r| r.rsplit_once('('))
        .map(|(_, code)| code)
        .filter(|code| code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric()));
    code.is_some_and(|code| ["22", "23", "42", "P0"].contains(&&code[..2]))
}

/// Splits `inserts` into the arrays of those without a reservation and
/// those validated under one.
fn insert_args<T>(inserts: &[Insert<T>]) -> (InsertArgs, InsertArgs) {
    let (mut plain, mut leased) = (InsertArgs::default(), InsertArgs::default());
    for insert in inserts {
        let args = match insert.record.lease {
            None => &mut plain,
            Some(_) => &mut leased,
        };
        args.names.push(insert.record.name.to_vec());
        args.values.push(insert.record.value.to_vec());
        args.leases.push(insert.record.lease.map(|l| l.0));
        args.write_ids.push(insert.write_id);
        args.retried.push(insert.retried);
    }
    (plain, leased)
}

/// The time from `now` until the earliest of `deadlines` (at least
/// [`JOB_LIMIT_MIN`]).
fn time_left(deadlines: impl Iterator<Item = Instant>, now: Instant) -> Duration {
    deadlines
        .min()
        .map(|at| at.saturating_duration_since(now))
        .unwrap_or(Duration::from_secs(1))
        .max(JOB_LIMIT_MIN)
}
