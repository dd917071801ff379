//! The task between the store actor and PostgreSQL.
//!
//! The actor hands it STOREs, reservations, releases and lookups without
//! waiting; the engine queues them and, whenever a pooled connection is
//! free, turns everything queued of one kind into one statement: STOREs
//! from any number of connections share one `INSERT … SELECT FROM
//! unnest(…)`, reads share one `= ANY($1)` query. So the busier jnhpd is,
//! the more each round trip carries.
//!
//! What the engine owns:
//! - **Leases** it holds (renewed every third of `lease_secs`, released
//!   at shutdown).
//! - **Parked** work: a STORE or reservation of a name another front-end
//!   has reserved waits for that reservation's end, announced on the
//!   `<prefix>_released` channel (`LISTEN` on a connection of its own), or
//!   for its expiry on the database's clock, whichever comes first.
//! - **Retries**: a statement that failed (server gone, timed out) is
//!   tried again until the request's `request_timeout_ms` is spent, then
//!   answered `ERROR storage unavailable`. A STORE's write id makes a
//!   retry safe after a lost answer: a row already there that carries this
//!   STORE's own id means it was stored.
//! - **Durability** of what it answers (durability.rs): a job whose commit
//!   drew a WARNING is retried like one whose answer was lost, and rows
//!   read rather than written are answered only after a barrier proved
//!   them as durable as a commit. Values the protocol cannot carry are
//!   answered `ERROR`, never sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant};
use tokio_postgres::AsyncMessage;

use super::durability::UNCONFIRMED;
use super::pool::{Conn, Manager, Pool, Pooled};
use super::schema::check_columns;
use super::sql::Sql;
use super::target::{Credentials, Target};
use super::{PgError, PostgresSettings, describe};
use crate::backend::{
    Backend, Event, Lease, Looked, Outcome, Record, Reserved, Shared, Sink, Start, Started, Written,
};
use crate::metrics::{Metrics, PostgresOp, QueryResult};
use crate::protocol::Limits;
use crate::protocol::ServerFault;
use crate::shutdown::Flag;
use crate::timer::sleep_until_or_never;

/// How long a failed statement waits before it is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long after a blocking reservation's expiry a parked request looks
/// again (the two clocks, ours and the database's, need not agree).
const EXPIRY_SLACK: Duration = Duration::from_millis(50);

/// The pause after the first failed connection attempt at start; it
/// doubles after each further one, up to [`CONNECT_PAUSE_MAX`].
const CONNECT_PAUSE_FIRST: Duration = Duration::from_millis(250);
const CONNECT_PAUSE_MAX: Duration = Duration::from_secs(4);

/// The least a host's connection attempt gets, however short
/// `request_timeout_ms` is (`Target::limit_handshake`).
const HANDSHAKE_LIMIT_MIN: Duration = Duration::from_millis(500);

/// How long the engine may take to stop once the store has closed it:
/// half for statements in flight, the rest for releasing reservations.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

/// Lapsed reservation rows one renewal job deletes at most.
const SWEEP_ROWS: i64 = 1000;

/// Requests one statement carries at most.
const MAX_PER_STATEMENT: usize = 2048;

/// How often a row that cannot be served is logged again.
const UNSERVABLE_LOG_EVERY: Duration = Duration::from_secs(10);

/// The `ERROR` reason of a GET whose row holds a value the protocol
/// cannot carry (written by another tool).
pub const UNSERVABLE: ServerFault = ServerFault::UnservableValue;

/// A connected namespace, before the store starts on it.
pub struct Namespace {
    target: Target,
    credentials: Credentials,
    sql: Arc<Sql>,
    settings: PostgresSettings,
    owner: Arc<str>,
    pool: Pool,
}

impl Namespace {
    /// Connects (retrying for `connect_timeout_secs`), creates the tables
    /// when missing and checks their schema version.
    pub async fn connect(
        settings: &PostgresSettings,
        credentials: Credentials,
    ) -> Result<Namespace, PgError> {
        let mut target = Target::parse(&settings.url)?;
        // A host that never answers costs at most half a request: the
        // next host is tried within the same request.
        target.limit_handshake((settings.request_timeout / 2).max(HANDSHAKE_LIMIT_MIN));
        let sql = Arc::new(Sql::new(&settings.table_prefix));
        let deadline = Instant::now() + settings.connect_timeout;
        let mut pause = CONNECT_PAUSE_FIRST;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(
                left.max(Duration::from_secs(1)),
                target.connect(&credentials),
            )
            .await;
            let reason = match attempt {
                Ok(Ok(client)) => {
                    ensure_schema(&client, &sql, target.server()).await?;
                    check_columns(&client, &sql)
                        .await
                        .map_err(|e| PgError::Schema {
                            server: target.server().to_string(),
                            reason: e.to_string(),
                        })?;
                    break;
                }
                Ok(Err(err)) => describe(&err),
                Err(_) => "no answer".to_string(),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PgError::Unreachable {
                    server: target.server().to_string(),
                    secs: settings.connect_timeout.as_secs(),
                    reason,
                });
            }
            let wait = left.min(pause);
            log::info!(
                "postgres: cannot reach {} yet ({reason}); retrying in {} ms",
                target.server(),
                wait.as_millis()
            );
            tokio::time::sleep(wait).await;
            // Back-off: a database that stays away costs a line every few
            // seconds, not four a second.
            pause = (pause * 2).min(CONNECT_PAUSE_MAX);
        }
        let manager = Manager {
            target: target.clone(),
            credentials: credentials.clone(),
            sql: sql.clone(),
            schema_logged: Default::default(),
            closing: Default::default(),
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .build()
            .map_err(|e| PgError::Query {
                server: target.server().to_string(),
                reason: format!("cannot build the pool: {e}"),
            })?;
        Ok(Namespace {
            target,
            credentials,
            sql,
            settings: settings.clone(),
            owner: owner_id().into(),
            pool,
        })
    }

    /// `host H port P database D`.
    pub fn server(&self) -> &str {
        self.target.server()
    }

    /// `host H port P database D` of the host connected to (with several
    /// hosts in the URL, the one found writable).
    pub fn connected(&self) -> String {
        self.target.connected()
    }

    /// The tables' statements.
    pub fn sql(&self) -> &Sql {
        &self.sql
    }

    /// Who this front-end is in `stored_by` and lease rows.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// A pooled connection (for `--import-datafile`).
    pub async fn connection(&self) -> Result<Pooled, PgError> {
        self.pool.get().await.map_err(|e| PgError::Query {
            server: self.server().to_string(),
            reason: match e {
                deadpool::managed::PoolError::Backend(e) => e.to_string(),
                other => other.to_string(),
            },
        })
    }

    /// The store's backend: the engine starts with the store. `limits`:
    /// what a value read from the database must meet to be served. Once
    /// `expired` (the shutdown's grace period is over) is raised, nothing
    /// waits for PostgreSQL any more: statements running are abandoned and
    /// every request still open is answered `ERROR storage unavailable`.
    pub fn into_backend<T: Send + 'static>(
        self,
        metrics: Arc<Metrics>,
        limits: Limits,
        expired: Flag,
    ) -> Start<T> {
        Box::new(move |sink: Sink<T>| {
            let (requests, request_rx) = mpsc::unbounded_channel();
            let (notices, notice_rx) = mpsc::unbounded_channel();
            let listener = tokio::spawn(listen(
                self.target.clone(),
                self.credentials.clone(),
                self.sql.channel.clone(),
                notices,
            ));
            let cache_bytes = self.settings.cache_bytes;
            let engine = Engine {
                max_writers: (self.settings.pool_size / 2).max(1),
                settings: self.settings,
                target: self.target,
                credentials: self.credentials,
                pool: self.pool,
                sql: self.sql,
                owner: self.owner,
                sink,
                inserts: VecDeque::new(),
                acquires: VecDeque::new(),
                releases: Vec::new(),
                lookups: VecDeque::new(),
                parked: HashMap::new(),
                delayed: Vec::new(),
                held: HashSet::new(),
                next_id: 1,
                jobs: JoinSet::new(),
                writing: 0,
                renew_due: false,
                closing: false,
                available: true,
                metrics,
                limits,
                unservable_logged: None,
            };
            let engine = tokio::spawn(engine.run(request_rx, notice_rx, listener, expired));
            Ok(Started::Shared(Box::new(PgBackend {
                requests,
                engine: Some(engine),
                runtime: tokio::runtime::Handle::current(),
                cache_bytes,
            })))
        })
    }
}

/// `host/pid/random`: unique among the front-ends of one namespace.
fn owner_id() -> String {
    use std::hash::BuildHasher;
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    let salt =
        std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    format!("{host}/{}/{:08x}", std::process::id(), salt as u32)
}

/// Creates the tables when missing; refuses tables of another version.
async fn ensure_schema(
    client: &tokio_postgres::Client,
    sql: &Sql,
    server: &str,
) -> Result<(), PgError> {
    let schema = |reason: String| PgError::Schema {
        server: server.to_string(),
        reason,
    };
    let query = |e: tokio_postgres::Error| PgError::Query {
        server: server.to_string(),
        reason: describe(&e),
    };
    let row = client.query_one(&sql.version, &[]).await.map_err(query)?;
    let (names, pending, comment): (bool, bool, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    if !names {
        // Several front-ends may start at once: one creates, the others
        // wait on the lock and find the tables made.
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock(hashtext('{names}')); {create} COMMIT;",
                names = sql.names,
                create = sql.create
            ))
            .await
            .map_err(query)?;
        log::info!("postgres: created tables {} and {}", sql.names, sql.pending);
        return Ok(());
    }
    let want = Sql::version_comment();
    match comment {
        Some(comment) if comment == want => {}
        Some(comment) => {
            return Err(schema(format!(
                "table {} is marked {comment:?}; this jnhpd knows {want:?} only",
                sql.names
            )));
        }
        None => {
            return Err(schema(format!(
                "table {} exists but is not marked {want:?}: not a jnhp table, or made by hand",
                sql.names
            )));
        }
    }
    if !pending {
        return Err(schema(format!(
            "table {} exists but {} does not",
            sql.names, sql.pending
        )));
    }
    Ok(())
}

/// The backend the store actor holds: a queue into the engine.
struct PgBackend<T> {
    requests: mpsc::UnboundedSender<Request<T>>,
    engine: Option<tokio::task::JoinHandle<()>>,
    runtime: tokio::runtime::Handle,
    cache_bytes: usize,
}

enum Request<T> {
    Append(Vec<Record<T>>),
    Reserve(Box<[u8]>),
    Release(Lease),
    LookUp(Vec<Bytes>, T),
    Close,
}

impl<T: Send + 'static> Backend<T> for PgBackend<T> {
    fn append(&mut self, run: Vec<Record<T>>) -> Result<(), Vec<Record<T>>> {
        self.requests
            .send(Request::Append(run))
            .map_err(|returned| match returned.0 {
                Request::Append(run) => run,
                _ => Vec::new(),
            })
    }

    fn close(mut self: Box<Self>) {
        let _ = self.requests.send(Request::Close);
        if let Some(engine) = self.engine.take() {
            // Called on the blocking pool, never on a runtime thread.
            let _ = self.runtime.block_on(engine);
        }
    }
}

impl<T: Send + 'static> Shared<T> for PgBackend<T> {
    fn reserve(&mut self, name: Box<[u8]>) {
        let _ = self.requests.send(Request::Reserve(name));
    }

    fn release(&mut self, lease: Lease) {
        let _ = self.requests.send(Request::Release(lease));
    }

    fn look_up(&mut self, names: Vec<Bytes>, token: T) {
        let _ = self.requests.send(Request::LookUp(names, token));
    }

    fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }
}

/// A STORE on its way into the names table.
struct Insert<T> {
    record: Record<T>,
    /// Unique per front-end: tells this STORE's own row from another's.
    write_id: i64,
    /// Tried before (a lost answer): a conflicting row may be its own.
    retried: bool,
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

/// What the listener tells the engine.
enum Notice {
    /// A reservation of this name ended somewhere.
    Released(Vec<u8>),
    /// Listening (again): announcements may have been missed meanwhile.
    Listening,
    /// The LISTEN connection broke (PostgreSQL may be gone).
    Lost(String),
}

/// A job's work, handed back with its results.
enum Done<T> {
    Write {
        inserts: Vec<Insert<T>>,
        acquires: Vec<Acquire>,
        releases: (Vec<i64>, Instant),
        result: Result<WriteRows, String>,
        took: Duration,
    },
    Read {
        lookups: Vec<LookUp<T>>,
        result: Result<ReadRows, String>,
        took: Duration,
    },
    Renewed {
        ok: bool,
        took: Duration,
    },
}

/// One read job's rows: names and values found.
struct ReadRows {
    found: Vec<(Bytes, Bytes)>,
    /// A warning came with the statement's commit, so the rows found are
    /// not known to be durable (durability.rs).
    unconfirmed: bool,
}

/// One write job's answers, by name.
#[derive(Default)]
struct WriteRows {
    inserts: HashMap<Vec<u8>, InsertRow>,
    acquires: HashMap<Vec<u8>, AcquireRow>,
    /// A warning came with a commit: no answer of the job is known to be
    /// durable (durability.rs).
    unconfirmed: bool,
}

struct InsertRow {
    stored: bool,
    free: bool,
    wait_secs: Option<f64>,
}

struct AcquireRow {
    held: bool,
    taken: bool,
    wait_secs: Option<f64>,
}

struct Engine<T> {
    settings: PostgresSettings,
    /// For the release at shutdown (see `close`).
    target: Target,
    credentials: Credentials,
    pool: Pool,
    sql: Arc<Sql>,
    owner: Arc<str>,
    sink: Sink<T>,
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
    next_id: i64,
    jobs: JoinSet<Done<T>>,
    /// Write jobs in flight, and how many may be.
    writing: usize,
    max_writers: usize,
    renew_due: bool,
    /// The grace period is over: no retries, no waiting.
    closing: bool,
    /// Whether the last statement succeeded (to log changes, not each
    /// failure).
    available: bool,
    metrics: Arc<Metrics>,
    /// The protocol's limits, which a value must meet to be served.
    limits: Limits,
    /// When an unservable row was last logged (at most every
    /// [`UNSERVABLE_LOG_EVERY`]: every GET of it finds it again).
    unservable_logged: Option<Instant>,
}

impl<T: Send + 'static> Engine<T> {
    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request<T>>,
        mut notices: mpsc::UnboundedReceiver<Notice>,
        listener: tokio::task::JoinHandle<()>,
        expired: Flag,
    ) {
        let mut renew = tokio::time::interval(self.settings.lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'serve: loop {
            self.dispatch();
            let wake = self.next_wake();
            tokio::select! {
                request = requests.recv() => {
                    let mut next = request;
                    // Take everything queued: it may share statements.
                    loop {
                        match next {
                            Some(Request::Close) | None => break 'serve,
                            Some(request) => self.take(request),
                        }
                        match requests.try_recv() {
                            Ok(request) => next = Some(request),
                            Err(_) => break,
                        }
                    }
                }
                Some(done) = self.jobs.join_next() => match done {
                    Ok(done) => self.finish(done),
                    Err(err) => log::error!("postgres: a job failed: {err}"),
                },
                Some(notice) = notices.recv() => self.notice(notice),
                () = sleep_until_or_never(wake) => self.wake_due(),
                () = expired.raised(), if !self.closing => self.expire(),
                _ = renew.tick() => self.renew_due = true,
            }
        }
        listener.abort();
        self.close().await;
    }

    /// After the store closed it: lets the jobs in flight finish for a
    /// moment, then gives up every reservation this front-end still has
    /// in one statement, so other front-ends need not wait them out. The
    /// store has settled what it could, so nobody waits for an answer any
    /// more: queued work is dropped, and the whole close is bounded by
    /// [`CLOSE_PATIENCE`] (docs/operations.md adds it to the shutdown).
    async fn close(&mut self) {
        let until = Instant::now() + CLOSE_PATIENCE;
        let jobs = &mut self.jobs;
        let finished = tokio::time::timeout_at(until - CLOSE_PATIENCE / 2, async {
            while jobs.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            log::warn!(
                "postgres: abandoning {} statements still running at shutdown",
                self.jobs.len()
            );
            self.jobs.abort_all();
        }
        let left = until.saturating_duration_since(Instant::now());
        let (sql, owner) = (&self.sql, &*self.owner);
        // A connection of its own, not a pooled one: past the grace period
        // `with_connection` abandons every statement, and a new pooled
        // connection prepares statements on the names table, which waits
        // for whatever holds that table.
        let (target, credentials) = (&self.target, &self.credentials);
        let release = async {
            let client = target
                .connect(credentials)
                .await
                .map_err(|e| describe(&e))?;
            let row = client
                .query_one(&sql.release_all, &[&owner, &sql.channel])
                .await
                .map_err(|e| describe(&e))?;
            row.try_get::<_, i64>(0).map_err(|e| describe(&e))
        };
        let released = match tokio::time::timeout(left, release).await {
            Ok(released) => released,
            Err(_) => Err(format!("no answer within {} ms", left.as_millis())),
        };
        match released {
            Ok(0) => {}
            Ok(count) => log::info!("postgres: released {count} reservations at shutdown"),
            Err(reason) => log::warn!(
                "postgres: could not release reservations at shutdown ({reason}); they lapse in {} s",
                self.settings.lease.as_secs()
            ),
        }
    }

    /// The grace period is over: abandons the statements running (their
    /// requests come back failed) and answers everything queued, waiting
    /// or parked now, so the store settles at once.
    fn expire(&mut self) {
        self.closing = true;
        self.pool.manager().closing.cancel();
        let mut items: Vec<Item<T>> = Vec::new();
        items.extend(self.inserts.drain(..).map(Item::Insert));
        items.extend(self.acquires.drain(..).map(Item::Acquire));
        items.extend(self.lookups.drain(..).map(Item::LookUp));
        items.extend(self.delayed.drain(..).map(|(_, item)| item));
        items.extend(self.parked.drain().map(|(_, (_, item))| item));
        for item in items {
            self.retry(item);
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.settings.request_timeout
    }

    fn take(&mut self, request: Request<T>) {
        let deadline = self.deadline();
        match request {
            Request::Append(run) => {
                for record in run {
                    let write_id = self.next_id();
                    self.inserts.push_back(Insert {
                        record,
                        write_id,
                        retried: false,
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

    fn next_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Starts jobs while connections are free: reads first (they are
    /// cheap and a reader waits on each), then writes (at most half the
    /// pool, so reads always find a connection), then a renewal.
    fn dispatch(&mut self) {
        let size = self.settings.pool_size;
        loop {
            let mut started = false;
            if !self.lookups.is_empty() && self.jobs.len() < size {
                self.start_read();
                started = true;
            }
            let writes =
                !self.inserts.is_empty() || !self.acquires.is_empty() || !self.releases.is_empty();
            if writes && self.writing < self.max_writers && self.jobs.len() < size {
                self.start_write();
                started = true;
            }
            if self.renew_due && self.jobs.len() < size {
                // Even with no lease held: the job also sweeps lapsed rows.
                self.renew_due = false;
                self.start_renew();
            }
            if !started {
                return;
            }
        }
    }

    fn start_read(&mut self) {
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
        let limit = time_left(lookups.iter().map(|l| l.deadline));
        let pool = self.pool.clone();
        self.jobs.spawn(async move {
            let started = Instant::now();
            let result = with_connection(&pool, limit, |conn| async move {
                let names: Vec<&[u8]> = names.iter().map(|n| &n[..]).collect();
                let warnings = conn.durability.warnings.count();
                let rows = conn.client.query(&conn.look_up, &[&names]).await?;
                Ok(ReadRows {
                    found: rows.iter().map(name_and_value).collect::<Result<_, _>>()?,
                    unconfirmed: conn.durability.warnings.since(warnings),
                })
            })
            .await;
            let took = started.elapsed();
            Done::Read {
                lookups,
                result,
                took,
            }
        });
    }

    fn start_write(&mut self) {
        let take = |n: usize| n.min(MAX_PER_STATEMENT);
        let inserts: Vec<Insert<T>> = self.inserts.drain(..take(self.inserts.len())).collect();
        let acquires: Vec<Acquire> = self.acquires.drain(..take(self.acquires.len())).collect();
        let releases: Vec<(i64, Instant)> =
            self.releases.drain(..take(self.releases.len())).collect();
        let release_deadline = releases
            .iter()
            .map(|r| r.1)
            .min()
            .unwrap_or_else(|| self.deadline());
        let releases: Vec<i64> = releases.into_iter().map(|r| r.0).collect();
        let limit = time_left(
            inserts
                .iter()
                .map(|i| i.deadline)
                .chain(acquires.iter().map(|a| a.deadline))
                .chain(std::iter::once(release_deadline)),
        );
        // What the statements need, copied out so the job owns it.
        let (plain, leased) = InsertArgs::split(&inserts);
        let acquire_names: Vec<Vec<u8>> = acquires.iter().map(|a| a.name.to_vec()).collect();
        let acquire_leases: Vec<i64> = acquires.iter().map(|a| a.lease).collect();
        let (pool, sql, owner) = (self.pool.clone(), self.sql.clone(), self.owner.clone());
        let lease_secs = self.settings.lease.as_secs_f64();
        let release_list = releases.clone();
        self.writing += 1;
        self.jobs.spawn(async move {
            let started = Instant::now();
            let result = with_connection(&pool, limit, |conn| async move {
                write(
                    &conn,
                    &sql,
                    &owner,
                    lease_secs,
                    (&plain, &leased),
                    (&acquire_names, &acquire_leases),
                    &release_list,
                )
                .await
            })
            .await;
            Done::Write {
                inserts,
                acquires,
                releases: (releases, release_deadline),
                result,
                took: started.elapsed(),
            }
        });
    }

    fn start_renew(&mut self) {
        let leases: Vec<i64> = self.held.iter().copied().collect();
        let (pool, owner, sql) = (self.pool.clone(), self.owner.clone(), self.sql.clone());
        let secs = self.settings.lease.as_secs_f64();
        let limit = self.settings.request_timeout;
        self.jobs.spawn(async move {
            let started = Instant::now();
            let renewed = with_connection(&pool, limit, |conn| async move {
                if !leases.is_empty() {
                    conn.client
                        .execute(&conn.renew, &[&leases, &&*owner, &secs])
                        .await?;
                }
                sweep(&conn, &sql).await
            })
            .await;
            if let Err(reason) = &renewed {
                log::debug!("postgres: renewing reservations failed: {reason}");
            }
            Done::Renewed {
                ok: renewed.is_ok(),
                took: started.elapsed(),
            }
        });
    }

    fn finish(&mut self, done: Done<T>) {
        match done {
            Done::Read {
                lookups,
                result,
                took,
            } => {
                self.count(PostgresOp::LookUp, result.is_ok(), took);
                self.finish_read(lookups, result);
            }
            Done::Write {
                inserts,
                acquires,
                releases,
                result,
                took,
            } => {
                self.count(PostgresOp::Write, result.is_ok(), took);
                self.writing -= 1;
                self.finish_write(inserts, acquires, releases, result);
            }
            Done::Renewed { ok, took } => self.count(PostgresOp::Renew, ok, took),
        }
    }

    /// Counts a job of `op`.
    fn count(&self, op: PostgresOp, ok: bool, took: Duration) {
        if let Some(pg) = &self.metrics.postgres {
            pg.queries[op][QueryResult::of(ok)].fetch_add(1, Relaxed);
            pg.durations[op].observe_duration(took, 1);
        }
    }

    fn note(&mut self, result: Result<(), &str>) {
        if self.closing {
            // Statements fail because they were abandoned, not because
            // PostgreSQL is away.
            return;
        }
        match result {
            Ok(()) if !self.available => {
                log::info!("postgres: reachable again ({})", self.target.connected());
                self.available = true;
                if let Some(pg) = &self.metrics.postgres {
                    pg.up.store(1, Relaxed);
                }
            }
            Err(reason) if self.available => {
                if let Some(pg) = &self.metrics.postgres {
                    pg.up.store(0, Relaxed);
                }
                log::warn!(
                    "postgres: {reason}; retrying for up to {} ms per request",
                    self.settings.request_timeout.as_millis()
                );
                self.available = false;
            }
            _ => {}
        }
    }

    fn finish_read(&mut self, lookups: Vec<LookUp<T>>, result: Result<ReadRows, String>) {
        let ReadRows { found, unconfirmed } = match result {
            Ok(rows) => rows,
            Err(reason) => {
                self.note(Err(&reason));
                for lookup in lookups {
                    self.retry(Item::LookUp(lookup));
                }
                return;
            }
        };
        self.note(Ok(()));
        if unconfirmed {
            return self.unconfirmed_read(lookups, &found);
        }
        let mut by_name: HashMap<&[u8], Looked> = HashMap::with_capacity(found.len());
        for (name, value) in &found {
            let looked = match crate::protocol::check_value(value, &self.limits) {
                // Only what may be served is cached (the actor caches
                // each value found): the cache answers as it is.
                Ok(_) => Looked::Value(value.clone()),
                Err(why) => {
                    self.unservable(name, value, why);
                    Looked::Unservable
                }
            };
            by_name.insert(&name[..], looked);
        }
        for lookup in lookups {
            let values = lookup
                .names
                .iter()
                .map(|name| by_name.get(&name[..]).cloned().unwrap_or(Looked::Absent))
                .collect();
            (self.sink)(Event::LookedUp {
                token: lookup.token,
                found: Ok(values),
            });
        }
    }

    /// A read whose commit drew a warning: what it found is not known to
    /// be durable, so it is neither answered nor cached. Reads that found
    /// nothing are answered (an absent name promises nothing); the others
    /// are tried again, and get `ERROR storage unavailable` if that never
    /// succeeds in time.
    fn unconfirmed_read(&mut self, lookups: Vec<LookUp<T>>, found: &[(Bytes, Bytes)]) {
        self.count_unconfirmed();
        let found: HashSet<&[u8]> = found.iter().map(|(name, _)| &name[..]).collect();
        for lookup in lookups {
            if lookup.names.iter().any(|name| found.contains(&name[..])) {
                self.retry(Item::LookUp(lookup));
            } else {
                let absent = vec![Looked::Absent; lookup.names.len()];
                (self.sink)(Event::LookedUp {
                    token: lookup.token,
                    found: Ok(absent),
                });
            }
        }
    }

    fn count_unconfirmed(&self) {
        if let Some(pg) = &self.metrics.postgres {
            pg.unconfirmed.fetch_add(1, Relaxed);
        }
    }

    /// Counts (and now and then logs) a row whose value the protocol
    /// cannot carry: sent as it is, it could end a reply line early or
    /// pass for another reply.
    fn unservable(&mut self, name: &[u8], value: &[u8], why: crate::protocol::ProtocolError) {
        if let Some(pg) = &self.metrics.postgres {
            pg.unservable.fetch_add(1, Relaxed);
        }
        if self
            .unservable_logged
            .is_none_or(|at| at.elapsed() >= UNSERVABLE_LOG_EVERY)
        {
            self.unservable_logged = Some(Instant::now());
            log::warn!(
                "postgres: {}: the value of name \"{}\" ({} bytes) cannot be served: {why}; \
                 GETs of it are answered \"ERROR {UNSERVABLE}\"",
                self.sql.names,
                name.escape_ascii(),
                value.len()
            );
        }
    }

    fn finish_write(
        &mut self,
        inserts: Vec<Insert<T>>,
        acquires: Vec<Acquire>,
        (releases, release_deadline): (Vec<i64>, Instant),
        result: Result<WriteRows, String>,
    ) {
        let mut rows = match result {
            Ok(rows) if rows.unconfirmed => {
                // PostgreSQL answered, but a commit is maybe on the
                // primary only: as unknown as a lost answer. The retry
                // finds this job's own rows, and proves them durable
                // before they count (`write`).
                self.count_unconfirmed();
                log::debug!("postgres: {UNCONFIRMED}; trying the job's requests again");
                return self.write_failed(inserts, acquires, (releases, release_deadline));
            }
            Ok(rows) => rows,
            Err(reason) => {
                self.note(Err(&reason));
                return self.write_failed(inserts, acquires, (releases, release_deadline));
            }
        };
        self.note(Ok(()));
        for insert in inserts {
            let row = rows.inserts.remove(&insert.record.name[..]);
            self.inserted(insert, row);
        }
        for acquire in acquires {
            let row = rows.acquires.remove(&acquire.name[..]);
            self.acquired(acquire, row);
        }
    }

    /// A write job whose outcome is not known: each of its requests is
    /// tried again (a STORE as a retry: it may meet its own row).
    fn write_failed(
        &mut self,
        inserts: Vec<Insert<T>>,
        acquires: Vec<Acquire>,
        (releases, release_deadline): (Vec<i64>, Instant),
    ) {
        for mut insert in inserts {
            insert.retried = true;
            self.retry(Item::Insert(insert));
        }
        for acquire in acquires {
            self.retry(Item::Acquire(acquire));
        }
        if !releases.is_empty() {
            self.retry(Item::Release(releases, release_deadline));
        }
    }

    fn inserted(&mut self, mut insert: Insert<T>, row: Option<InsertRow>) {
        let Some(row) = row else {
            // Not reached with a sound statement; try again rather than guess.
            return self.retry(Item::Insert(insert));
        };
        if let Some(lease) = insert.record.lease {
            // Used, or lost: this front-end's reservation ended either way.
            self.held.remove(&lease.0);
        }
        if row.stored {
            return self.written(insert, Outcome::Stored);
        }
        if row.free {
            // The name has a row; `write` already checked whether a retried
            // STORE's own (it then counts as stored).
            return self.written(insert, Outcome::Taken);
        }
        // Not allowed: another front-end holds the name, or this STORE's
        // reservation lapsed. Without a reservation it competes again.
        insert.record.lease = None;
        match row.wait_secs {
            Some(secs) => self.park(Item::Insert(insert), secs),
            None => self.inserts.push_front(insert),
        }
    }

    fn written(&mut self, insert: Insert<T>, outcome: Outcome) {
        let Record {
            name,
            value,
            token,
            lease,
        } = insert.record;
        (self.sink)(Event::Written(Written {
            name,
            value,
            token,
            lease,
            outcome,
            durable_end: None,
        }));
    }

    fn acquired(&mut self, acquire: Acquire, row: Option<AcquireRow>) {
        let Some(row) = row else {
            return self.retry(Item::Acquire(acquire));
        };
        if row.held {
            self.held.insert(acquire.lease);
            let reserved = Reserved::Held(Lease(acquire.lease));
            return (self.sink)(Event::Reserved {
                name: acquire.name,
                reserved,
            });
        }
        if row.taken {
            return (self.sink)(Event::Reserved {
                name: acquire.name,
                reserved: Reserved::Taken,
            });
        }
        // The name's reservation row was being changed as we looked: look
        // again shortly.
        self.park(Item::Acquire(acquire), row.wait_secs.unwrap_or(0.01));
    }

    /// Waits for another front-end's reservation: its release (a NOTIFY)
    /// or its expiry `secs` from now.
    fn park(&mut self, item: Item<T>, secs: f64) {
        let name = match &item {
            Item::Insert(insert) => insert.record.name.clone(),
            Item::Acquire(acquire) => acquire.name.clone(),
            // Only STOREs and reservations wait for a name.
            Item::LookUp(_) | Item::Release(..) => return self.retry(item),
        };
        if self.closing {
            return self.retry(item);
        }
        let secs = secs.clamp(0.0, self.settings.lease.as_secs_f64() + 1.0);
        let at = Instant::now() + Duration::from_secs_f64(secs) + EXPIRY_SLACK;
        self.parked.insert(name, (at, item));
    }

    /// Tries `item` again after a pause, or answers it `ERROR storage
    /// unavailable` if its time is spent.
    fn retry(&mut self, item: Item<T>) {
        let now = Instant::now();
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
            Item::Acquire(acquire) => (self.sink)(Event::Reserved {
                name: acquire.name,
                reserved: Reserved::Failed(ServerFault::StorageUnavailable),
            }),
            Item::LookUp(lookup) => {
                (self.sink)(Event::LookedUp {
                    token: lookup.token,
                    found: Err(ServerFault::StorageUnavailable),
                });
            }
            // The reservations lapse by themselves.
            Item::Release(..) => {}
        }
    }

    /// Puts `item` back in its queue with a fresh deadline (it was waiting,
    /// not failing).
    fn requeue(&mut self, item: Item<T>, fresh: bool) {
        let deadline = self.deadline();
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

    fn next_wake(&self) -> Option<Instant> {
        self.parked
            .values()
            .map(|(at, _)| *at)
            .chain(self.delayed.iter().map(|(at, _)| *at))
            .min()
    }

    fn wake_due(&mut self) {
        let now = Instant::now();
        let due: Vec<Box<[u8]>> = self
            .parked
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            if let Some((_, item)) = self.parked.remove(&name) {
                self.requeue(item, true);
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.delayed = later;
        for (_, item) in due {
            self.requeue(item, false);
        }
    }

    fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::Released(name) => {
                if let Some((_, item)) = self.parked.remove(&name[..]) {
                    self.requeue(item, true);
                }
            }
            Notice::Lost(reason) => self.note(Err(&reason)),
            Notice::Listening => {
                // PostgreSQL answers again (readiness need not wait for
                // the next request to find out).
                self.note(Ok(()));
                let parked: Vec<_> = self.parked.drain().map(|(_, (_, item))| item).collect();
                for item in parked {
                    self.requeue(item, true);
                }
            }
        }
    }
}

/// The time until the earliest of `deadlines` (at least a little: a job
/// must be able to start).
fn time_left(deadlines: impl Iterator<Item = Instant>) -> Duration {
    deadlines
        .min()
        .map(|at| at.saturating_duration_since(Instant::now()))
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_millis(20))
}

/// Runs `work` on a pooled connection within `limit`. A connection whose
/// work failed or ran out of time is discarded, not returned to the pool:
/// it may be broken, or still busy with the abandoned statement.
async fn with_connection<R, F, Fut>(pool: &Pool, limit: Duration, work: F) -> Result<R, String>
where
    F: FnOnce(Arc<Pooled>) -> Fut,
    Fut: std::future::Future<Output = Result<R, tokio_postgres::Error>>,
{
    let started = Instant::now();
    let no_answer = || format!("no answer within {} ms", limit.as_millis());
    // Past the shutdown's grace period nothing waits for PostgreSQL.
    let closing = pool.manager().closing.clone();
    let abandoned = || "abandoned at shutdown".to_string();
    // `biased`, closing first: once it is raised, no statement starts.
    let got = tokio::select! {
        biased;
        () = closing.cancelled() => return Err(abandoned()),
        got = tokio::time::timeout(limit, pool.get()) => got,
    };
    let conn = match got {
        Ok(Ok(conn)) => Arc::new(conn),
        Ok(Err(deadpool::managed::PoolError::Backend(err))) => return Err(err.to_string()),
        Ok(Err(err)) => return Err(err.to_string()),
        Err(_) => return Err(no_answer()),
    };
    let left = limit.saturating_sub(started.elapsed());
    let worked = tokio::select! {
        biased;
        () = closing.cancelled() => None,
        worked = tokio::time::timeout(left, work(conn.clone())) => Some(worked),
    };
    let result = match worked {
        Some(Ok(Ok(result))) => return Ok(result),
        Some(Ok(Err(err))) => Err(describe(&err)),
        Some(Err(_)) => Err(no_answer()),
        None => Err(abandoned()),
    };
    // The work (and its clone) is gone: this is the only handle left.
    if let Ok(conn) = Arc::try_unwrap(conn) {
        drop(Pooled::take(conn));
    }
    result
}

/// A looked-up row. `try_get`: a row jnhpd cannot read (a NULL value put
/// there by hand) fails the read with an error instead of panicking.
fn name_and_value(row: &tokio_postgres::Row) -> Result<(Bytes, Bytes), tokio_postgres::Error> {
    let name: &[u8] = row.try_get(0)?;
    let value: &[u8] = row.try_get(1)?;
    Ok((Bytes::copy_from_slice(name), Bytes::copy_from_slice(value)))
}

/// Deletes up to [`SWEEP_ROWS`] lapsed reservations, any front-end's:
/// nothing else ever deletes the rows of a front-end that was killed.
async fn sweep(conn: &Conn, sql: &Sql) -> Result<u64, tokio_postgres::Error> {
    let swept = conn.client.execute(&sql.sweep, &[&SWEEP_ROWS]).await?;
    if swept > 0 {
        log::info!("postgres: deleted {swept} lapsed reservations");
    }
    Ok(swept)
}

/// The arrays of a STORE statement.
#[derive(Default)]
struct InsertArgs {
    names: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    leases: Vec<Option<i64>>,
    write_ids: Vec<i64>,
    /// Retried STOREs: a conflict may be with their own row.
    retried: Vec<bool>,
}

impl InsertArgs {
    /// Splits `inserts` into those without a reservation (the lean
    /// `insert`) and those validated under one (`finalize`).
    fn split<T>(inserts: &[Insert<T>]) -> (InsertArgs, InsertArgs) {
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
}

/// One write job: releases, plain STOREs, validated STOREs and
/// reservations as four statements pipelined on one connection (one round
/// trip); then, only for STOREs that were not inserted or names found
/// taken, one more to tell taken from waiting (and a retried STORE's own
/// row from another's) and to prove what was read durable.
async fn write(
    conn: &Conn,
    sql: &Sql,
    owner: &str,
    lease_secs: f64,
    (plain, leased): (&InsertArgs, &InsertArgs),
    (acquire_names, acquire_leases): (&[Vec<u8>], &[i64]),
    releases: &[i64],
) -> Result<WriteRows, tokio_postgres::Error> {
    let warnings = conn.durability.warnings.count();
    let client = &conn.client;
    let release = async {
        if releases.is_empty() {
            return Ok(Vec::new());
        }
        client
            .query(&conn.release, &[&releases, &owner, &sql.channel])
            .await
    };
    let insert = async {
        if plain.names.is_empty() {
            return Ok(Vec::new());
        }
        client
            .query(
                &conn.insert,
                &[&plain.names, &plain.values, &plain.write_ids, &owner],
            )
            .await
    };
    let finalize = async {
        if leased.names.is_empty() {
            return Ok(Vec::new());
        }
        client
            .query(
                &conn.finalize,
                &[
                    &leased.names,
                    &leased.values,
                    &leased.leases,
                    &leased.write_ids,
                    &owner,
                    &sql.channel,
                ],
            )
            .await
    };
    let acquire = async {
        if acquire_names.is_empty() {
            return Ok(Vec::new());
        }
        client
            .query(
                &conn.acquire,
                &[&acquire_names, &acquire_leases, &owner, &lease_secs],
            )
            .await
    };
    let (released, inserted, finalized, acquired) =
        tokio::join!(release, insert, finalize, acquire);
    released?;
    let mut rows = WriteRows::default();
    for row in inserted? {
        let name: Vec<u8> = row.get(0);
        let stored = InsertRow {
            stored: true,
            free: true,
            wait_secs: None,
        };
        rows.inserts.insert(name, stored);
    }
    for row in finalized? {
        let name: Vec<u8> = row.get(0);
        rows.inserts.insert(
            name,
            InsertRow {
                stored: row.get(1),
                free: row.get(2),
                wait_secs: row.get(3),
            },
        );
    }
    for row in acquired? {
        let name: Vec<u8> = row.get(0);
        rows.acquires.insert(
            name,
            AcquireRow {
                held: row.get(1),
                taken: row.get(2),
                wait_secs: row.get(3),
            },
        );
    }
    let unclassified = unclassified(plain, &rows);
    let unread = unread(leased, &rows);
    // Rows this job found rather than wrote: another's (`RARGH!`), or a
    // retried STORE's own (`W00T!`). Either may be a commit whose wait for
    // the standby was cancelled: a barrier after reading them proves them
    // durable before they are answered.
    let found_rows = rows.inserts.values().any(|row| row.free && !row.stored)
        || rows.acquires.values().any(|row| row.taken);
    let proof = found_rows || !unclassified.0.is_empty() || !unread.0.is_empty();
    let (classified, own, proven) = tokio::join!(
        classify(conn, owner, unclassified),
        read_back(conn, owner, unread),
        conn.durability.barrier(client, proof),
    );
    for (name, row) in classified? {
        rows.inserts.insert(name, row);
    }
    for name in own? {
        if let Some(own) = rows.inserts.get_mut(&name) {
            own.stored = true;
        }
    }
    proven?;
    rows.unconfirmed = conn.durability.warnings.since(warnings);
    Ok(rows)
}

/// Plain STOREs that `insert` did not insert (names, write ids).
fn unclassified<'a>(plain: &'a InsertArgs, rows: &WriteRows) -> (Vec<&'a [u8]>, Vec<i64>) {
    let (mut names, mut ids) = (Vec::new(), Vec::new());
    for (name, id) in plain.names.iter().zip(&plain.write_ids) {
        if !rows.inserts.contains_key(name) {
            names.push(&name[..]);
            ids.push(*id);
        }
    }
    (names, ids)
}

/// Plain STOREs that `insert` did not insert: taken (or this STORE's own
/// row, after a lost answer), or waiting for a reservation.
async fn classify(
    conn: &Conn,
    owner: &str,
    (names, ids): (Vec<&[u8]>, Vec<i64>),
) -> Result<Vec<(Vec<u8>, InsertRow)>, tokio_postgres::Error> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let rows = conn
        .client
        .query(&conn.classify, &[&names, &owner, &ids])
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let name: Vec<u8> = row.get(0);
            let (taken, own): (bool, bool) = (row.get(1), row.get(2));
            let row = InsertRow {
                stored: own,
                free: taken,
                wait_secs: if taken { None } else { row.get(3) },
            };
            (name, row)
        })
        .collect())
}

/// Validated STOREs retried after a lost answer that met a row (names,
/// write ids).
fn unread<'a>(leased: &'a InsertArgs, rows: &WriteRows) -> (Vec<&'a [u8]>, Vec<i64>) {
    let (mut names, mut ids) = (Vec::new(), Vec::new());
    for (i, name) in leased.names.iter().enumerate() {
        let met_a_row = rows
            .inserts
            .get(name)
            .is_some_and(|row| row.free && !row.stored);
        if leased.retried[i] && met_a_row {
            names.push(&name[..]);
            ids.push(leased.write_ids[i]);
        }
    }
    (names, ids)
}

/// Validated STOREs retried after a lost answer that met a row: the names
/// whose row is the one their lost attempt wrote.
async fn read_back(
    conn: &Conn,
    owner: &str,
    (names, ids): (Vec<&[u8]>, Vec<i64>),
) -> Result<Vec<Vec<u8>>, tokio_postgres::Error> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let rows = conn
        .client
        .query(&conn.read_back, &[&names, &owner, &ids])
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Keeps a connection LISTENing on the channel, telling the engine of
/// every ended reservation, and reconnecting when it breaks.
async fn listen(
    target: Target,
    credentials: Credentials,
    channel: String,
    engine: mpsc::UnboundedSender<Notice>,
) {
    loop {
        if let Ok((client, mut connection)) = target.connect_raw(&credentials).await {
            let (payloads, mut received) = mpsc::unbounded_channel::<String>();
            let driver = tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = messages.next().await {
                    if let AsyncMessage::Notification(n) = message
                        && payloads.send(n.payload().to_string()).is_err()
                    {
                        return;
                    }
                }
            });
            if client
                .batch_execute(&format!("LISTEN {channel}"))
                .await
                .is_ok()
            {
                if engine.send(Notice::Listening).is_err() {
                    return;
                }
                while let Some(payload) = received.recv().await {
                    if let Some(name) = super::from_hex(&payload)
                        && engine.send(Notice::Released(name)).is_err()
                    {
                        return;
                    }
                }
            }
            driver.abort();
            let lost = Notice::Lost("the LISTEN connection was lost".into());
            if engine.send(lost).is_err() {
                return;
            }
        }
        if engine.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_names_decode() {
        assert_eq!(super::super::from_hex("00ff41"), Some(vec![0, 255, b'A']));
        assert_eq!(super::super::from_hex("0"), None);
        assert_eq!(super::super::from_hex("zz"), None);
    }
}
