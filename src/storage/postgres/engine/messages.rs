//! What goes into the engine's state machine and what comes out: the
//! actor's requests, the LISTEN connection's notices, the jobs it asks
//! for and their outcomes, and its decisions. The contract between
//! state.rs (which decides), jobs.rs (which runs statements) and task.rs
//! (which carries decisions out). Plain data, so the machine's tests can
//! play the actor and PostgreSQL.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::time::Duration;

use crate::protocol::Limits;
use crate::storage::postgres::replication::Replication;
use crate::storage::{Event, Found, Lease, Record};

/// What the store actor asks of the engine (through `PgBackend`).
pub enum Request<T> {
    Append(Vec<Record<T>>),
    Reserve(Box<[u8]>),
    Release(Lease),
    /// Names to look up, with the actor's token for the answer.
    LookUp(Vec<Bytes>, T),
    /// Handled by the task (it stops); the machine ignores it.
    Close,
}

/// What the LISTEN connection tells the engine.
#[derive(Debug)]
pub enum Notice {
    /// A reservation of this name ended somewhere.
    Released(Vec<u8>),
    /// Listening (again): announcements may have been missed meanwhile.
    Listening,
    /// The LISTEN connection broke (PostgreSQL may be gone).
    Lost(String),
}

/// A statement (or a few pipelined on one connection) to run, within
/// `limit`. Its [`Done`] carries the same `id`.
#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub limit: Duration,
    pub work: Work,
}

/// What a job asks PostgreSQL.
#[derive(Debug)]
pub enum Work {
    /// The rows of these names (the lookups queued, in one `= ANY($1)`).
    Read { names: Vec<Bytes> },
    /// Releases, STOREs and reservations (jobs.rs `write`).
    Write(Box<WriteArgs>),
    /// Extends these leases by `lease_secs`, sweeps lapsed rows, commits
    /// a check that writes are durable, and reads the replication state:
    /// the engine's regular look at the database, due every third of the
    /// lease (every [`super::state::CHECK_EVERY`] while writes fail).
    Renew { leases: Vec<i64>, lease_secs: f64 },
}

/// The arrays of one write job.
#[derive(Debug, Default)]
pub struct WriteArgs {
    /// STOREs without a reservation (the lean `insert`).
    pub plain: InsertArgs,
    /// STOREs validated under a reservation (`finalize`).
    pub leased: InsertArgs,
    pub acquire_names: Vec<Vec<u8>>,
    pub acquire_leases: Vec<i64>,
    pub releases: Vec<i64>,
    pub lease_secs: f64,
}

/// The arrays of a STORE statement.
#[derive(Debug, Default, PartialEq)]
pub struct InsertArgs {
    pub names: Vec<Vec<u8>>,
    pub values: Vec<Vec<u8>>,
    pub leases: Vec<Option<i64>>,
    pub write_ids: Vec<i64>,
    /// Retried STOREs: a conflict may be with their own row.
    pub retried: Vec<bool>,
}

/// A job's outcome: its rows, or why there are none (then nothing is
/// known of what it did).
#[derive(Debug)]
pub struct Done {
    pub id: u64,
    pub took: Duration,
    pub result: Result<Rows, String>,
}

/// The rows of a job, by its kind.
#[derive(Debug)]
pub enum Rows {
    Read(ReadRows),
    Write(WriteRows),
    Renewed(Renewal),
}

/// What a renewal job found, its leases renewed.
#[derive(Debug)]
pub struct Renewal {
    /// Whether its check committed durably, or why not (no answer, an
    /// error, a warning with the commit: durability.rs).
    pub writes: Result<(), String>,
    /// The replication state, or why it could not be read (which is not
    /// a failure of the job). Read before the check, so that it is known
    /// while commits hang.
    pub replication: Option<Result<Replication, String>>,
}

impl Default for Renewal {
    /// Writes commit; nothing read of the replication.
    fn default() -> Renewal {
        Renewal {
            writes: Ok(()),
            replication: None,
        }
    }
}

/// One read job's rows: names and values found.
#[derive(Debug, Default)]
pub struct ReadRows {
    pub found: Vec<(Bytes, Bytes)>,
    /// A warning came with the statement's commit, so the rows found are
    /// not known to be durable (durability.rs).
    pub unconfirmed: bool,
}

/// One write job's answers, by name.
#[derive(Debug, Default)]
pub struct WriteRows {
    pub inserts: HashMap<Vec<u8>, InsertRow>,
    pub acquires: HashMap<Vec<u8>, AcquireRow>,
    /// A warning came with a commit: no answer of the job is known to be
    /// durable (durability.rs).
    pub unconfirmed: bool,
}

/// What became of one STORE.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InsertRow {
    /// The name now has this STORE's value (inserted now, or found to be
    /// this STORE's own row after a lost answer).
    pub stored: bool,
    /// The name has a row (`stored`, or another's: taken).
    pub free: bool,
    /// Not allowed: another front-end's reservation lapses in this many
    /// seconds (`None`: this STORE's own reservation lapsed).
    pub wait_secs: Option<f64>,
}

/// What became of one reservation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AcquireRow {
    pub held: bool,
    pub taken: bool,
    /// Neither: another front-end's reservation lapses in this many
    /// seconds.
    pub wait_secs: Option<f64>,
}

/// What the machine decided; the task carries it out in order.
pub enum Output<T> {
    /// Run this job and hand its [`Done`] to `State::finished`.
    Start(Job),
    /// Report this to the store actor.
    Report(Event<T>),
    /// Answer a lookup (the task reports it to the actor as
    /// [`Event::LookedUp`] with its token).
    Answer(T, Found),
    /// What PostgreSQL does for this front-end changed: once per change,
    /// for the log, metrics and `/readyz`.
    Health(Health),
    /// What the last renewal read of the replication state.
    Replication(Result<Replication, String>),
}

/// A change of what PostgreSQL does for this front-end. Reads and writes
/// are told apart: while a synchronous standby stalls, reads work and
/// commits do not, and a front-end that said "reachable again" at every
/// read (it did: 154 lines in 20 s) told operators nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Statements are answered again (a read, the LISTEN connection).
    Reachable,
    /// Statements are not answered: why.
    Unreachable(String),
    /// A write committed, durably, again.
    Writable,
    /// Writes do not commit, or not durably: why.
    Unwritable(String),
}

/// What the machine needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub pool_size: usize,
    pub lease: Duration,
    pub request_timeout: Duration,
    /// The protocol's limits, which a value must meet to be served.
    pub limits: Limits,
    /// The names table, for log lines.
    pub table: String,
}
