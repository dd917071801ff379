//! What jnhpd counts, and its rendering for Prometheus
//! (docs/observability.md).
//!
//! Counting costs the request path no lock and no system call: requests
//! are tallied in plain integers in each batch of the store
//! (by the store actor and the connection) and folded into atomics once
//! per store round trip; everything else (validators, the data file, the
//! PostgreSQL engine, connections) bumps atomics directly. Scraping reads
//! the atomics and hands them to `prometheus-client`, which writes the
//! Prometheus text format 0.0.4 or OpenMetrics.

#[macro_use]
mod slots;
mod render;

pub use slots::{Slot, Slots};

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::protocol::ProtocolError;
use crate::storage::postgres::replication::ReplicationState;

slot_enum! {
    /// A request's command (the `command` label).
    pub enum Command {
        Store => "store",
        Exists => "exists",
        Get => "get",
    }
}

/// An answer's outcome: the command's first or second ordinary one, or
/// an `ERROR` ([`Command::outcome`] names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// stored, present, hit
    Yes,
    /// rejected, absent, miss
    No,
    Error,
}

impl Answer {
    /// How many outcomes a command has.
    pub const COUNT: usize = <Answer as Slot>::ALL.len();
}

impl Slot for Answer {
    const ALL: &'static [Self] = &[Answer::Yes, Answer::No, Answer::Error];

    fn index(self) -> usize {
        self as usize
    }
}

impl Command {
    /// The `outcome` label of `answer` to this command.
    pub const fn outcome(self, answer: Answer) -> &'static str {
        match (self, answer) {
            (Command::Store, Answer::Yes) => "stored",
            (Command::Store, Answer::No) => "rejected",
            (Command::Exists, Answer::Yes) => "present",
            (Command::Exists, Answer::No) => "absent",
            (Command::Get, Answer::Yes) => "hit",
            (Command::Get, Answer::No) => "miss",
            (_, Answer::Error) => "error",
        }
    }
}

/// One figure per command.
pub type PerCommand<T> = Slots<Command, T, { Command::COUNT }>;
/// One figure per command and outcome.
pub type PerAnswer<T> = PerCommand<Slots<Answer, T, { Answer::COUNT }>>;

slot_enum! {
    /// Why an `ERROR` was sent (the `reason` label, snake_case): the
    /// protocol's reasons, then the server's.
    pub enum ErrorReason {
        UnknownCommand => "unknown_command",
        MissingName => "missing_name",
        MissingValue => "missing_value",
        TooManyArguments => "too_many_arguments",
        NameTooLong => "name_too_long",
        ValueTooLong => "value_too_long",
        ForbiddenByteInName => "forbidden_byte_in_name",
        ForbiddenByteInValue => "forbidden_byte_in_value",
        LineTooLong => "line_too_long",
        ReservedValue => "reserved_value",
        ShuttingDown => "shutting_down",
        TooManyConnections => "too_many_connections",
        StorageUnavailable => "storage_unavailable",
        StorageError => "storage_error",
    }
}

/// One figure per `ERROR` reason.
pub type PerReason<T> = Slots<ErrorReason, T, { ErrorReason::COUNT }>;

impl From<ProtocolError> for ErrorReason {
    fn from(err: ProtocolError) -> ErrorReason {
        match err {
            ProtocolError::UnknownCommand => ErrorReason::UnknownCommand,
            ProtocolError::MissingName => ErrorReason::MissingName,
            ProtocolError::MissingValue => ErrorReason::MissingValue,
            ProtocolError::ExtraArguments => ErrorReason::TooManyArguments,
            ProtocolError::NameTooLong => ErrorReason::NameTooLong,
            ProtocolError::ValueTooLong => ErrorReason::ValueTooLong,
            ProtocolError::ForbiddenNameByte => ErrorReason::ForbiddenByteInName,
            ProtocolError::ForbiddenValueByte => ErrorReason::ForbiddenByteInValue,
            ProtocolError::LineTooLong => ErrorReason::LineTooLong,
            ProtocolError::ReservedValue => ErrorReason::ReservedValue,
        }
    }
}

/// The server-side `ERROR` reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerError {
    ShuttingDown,
    TooManyConnections,
    StorageUnavailable,
    Storage,
}

impl From<ServerError> for ErrorReason {
    fn from(err: ServerError) -> ErrorReason {
        match err {
            ServerError::ShuttingDown => ErrorReason::ShuttingDown,
            ServerError::TooManyConnections => ErrorReason::TooManyConnections,
            ServerError::StorageUnavailable => ErrorReason::StorageUnavailable,
            ServerError::Storage => ErrorReason::StorageError,
        }
    }
}

/// The metric label of a fault the server answered.
pub fn server_error_for(fault: &crate::protocol::ServerFault) -> ServerError {
    use crate::protocol::ServerFault;
    match fault {
        ServerFault::ShuttingDown => ServerError::ShuttingDown,
        ServerFault::TooManyConnections => ServerError::TooManyConnections,
        ServerFault::StorageUnavailable => ServerError::StorageUnavailable,
        ServerFault::UnservableValue
        | ServerFault::StorageStopped
        | ServerFault::StorageUnusable
        | ServerFault::StorageIo { .. } => ServerError::Storage,
    }
}

/// Counts of one batch in plain integers: no atomics until
/// [`Metrics::fold`].
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub requests: PerAnswer<u64>,
    pub errors: PerReason<u64>,
    /// STOREs of absent names answered since the last fold (for the STORE
    /// duration histogram).
    pub fresh_stores: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Whether `errors` has anything (errors are rare: the fold skips
    /// them otherwise).
    any_errors: bool,
}

impl Tally {
    pub fn count(&mut self, command: Command, answer: Answer) {
        self.requests[command][answer] += 1;
    }

    pub fn protocol_error(&mut self, command: Option<Command>, err: ProtocolError) {
        self.error(command, err.into());
    }

    pub fn server_error(&mut self, command: Option<Command>, err: ServerError) {
        self.error(command, err.into());
    }

    fn error(&mut self, command: Option<Command>, reason: ErrorReason) {
        if let Some(command) = command {
            self.count(command, Answer::Error);
        }
        self.errors[reason] += 1;
        self.any_errors = true;
    }
}

/// A histogram with fixed buckets, lock-free: each observation is two or
/// three relaxed atomic additions.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum, in units of `1 / scale`.
    sum: AtomicU64,
    scale: f64,
}

/// Seconds, from 50 µs to 10 s.
pub const SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Counts, powers of two to 4096.
pub const COUNTS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

impl Histogram {
    /// Seconds (sums kept in nanoseconds).
    pub fn seconds() -> Histogram {
        Histogram::new(SECONDS, 1e9)
    }

    /// Whole counts.
    pub fn counts() -> Histogram {
        Histogram::new(COUNTS, 1.0)
    }

    fn new(bounds: &'static [f64], scale: f64) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    pub fn observe_duration(&self, duration: Duration, times: u64) {
        self.observe(duration.as_secs_f64(), times);
    }

    /// Records `value` `times` times.
    pub fn observe(&self, value: f64, times: u64) {
        if times == 0 {
            return;
        }
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.buckets[i].fetch_add(times, Relaxed);
        }
        self.count.fetch_add(times, Relaxed);
        self.sum
            .fetch_add((value * self.scale) as u64 * times, Relaxed);
    }

    fn encode(&self, encoder: &mut prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        // Per bucket, not cumulative: the encoder adds them up.
        let count = self.count.load(Relaxed);
        let mut bounded = 0;
        let mut buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, n)| {
                let n = n.load(Relaxed);
                bounded += n;
                (bound, n)
            })
            .collect();
        buckets.push((f64::INFINITY, count.saturating_sub(bounded)));
        let sum = self.sum.load(Relaxed) as f64 / self.scale;
        encoder
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }
}

/// Why a validator could not decide (the `cause` label of
/// `jnhpd_validator_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// It did not answer in `timeout_ms`.
    Timeout,
    /// It ended (or was ended) without a verdict.
    NoVerdict,
    /// Its answer was not a verdict.
    Malformed,
    /// It could not be started.
    Spawn,
    /// Its helper broke or none was available.
    BrokenHelper,
}

/// The length of the data file that is synced, published by the writer
/// thread after every sync; a watch, so long polls wake when it grows.
#[derive(Debug)]
pub struct DurableLength(watch::Sender<u64>);

impl Default for DurableLength {
    fn default() -> DurableLength {
        DurableLength(watch::Sender::new(0))
    }
}

impl DurableLength {
    /// Called by the writer thread (no runtime needed: a watch only
    /// stores the value and wakes receivers).
    pub fn publish(&self, len: u64) {
        self.0.send_if_modified(|durable| {
            let grew = len > *durable;
            if grew {
                *durable = len;
            }
            grew
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// One validator's figures (kept across reloads with the validator).
#[derive(Debug)]
pub struct ValidatorStats {
    pub name: String,
    pub kind: &'static str,
    pub verdicts: Slots<VerdictKind, AtomicU64, { VerdictKind::COUNT }>,
    pub failures: Slots<Cause, AtomicU64, { CAUSES }>,
    pub duration: Histogram,
    pub in_flight: AtomicI64,
    pub queued: AtomicI64,
    pub helper_processes: AtomicI64,
    pub helper_restarts: AtomicU64,
    /// The link's `mode`, as `Mode as u8` (set when the chain is built).
    pub mode: std::sync::atomic::AtomicU8,
    /// Refusals (denials, failures under `on_failure = "reject"`) that
    /// did not refuse: the validator was in `warn` or `dryrun` mode.
    pub not_enforced: AtomicU64,
    /// Failures that let the STORE go on (`on_failure = "allow"`).
    pub failed_open: AtomicU64,
    /// STOREs its deny cache refused without running it.
    pub deny_cache_hits: AtomicU64,
    /// Refusals its deny cache holds now.
    pub deny_cache_entries: AtomicI64,
}

slot_enum! {
    /// A validator's verdict as counted (the `verdict` label): a failure
    /// is counted as one whatever `on_failure` made of it.
    pub enum VerdictKind {
        Allow => "allow",
        Deny => "deny",
        Failure => "failure",
    }
}

/// The validator failures' causes are slots of [`ValidatorStats::failures`].
impl Slot for Cause {
    const ALL: &'static [Self] = &[
        Cause::Timeout,
        Cause::NoVerdict,
        Cause::Malformed,
        Cause::Spawn,
        Cause::BrokenHelper,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// How many failure causes there are.
const CAUSES: usize = <Cause as Slot>::ALL.len();

/// The `cause` label of a validator failure.
pub(crate) const fn cause_label(cause: Cause) -> &'static str {
    match cause {
        Cause::Timeout => "timeout",
        Cause::NoVerdict => "no_verdict",
        Cause::Malformed => "malformed",
        Cause::Spawn => "spawn",
        Cause::BrokenHelper => "broken_helper",
    }
}

impl ValidatorStats {
    pub fn new(name: String, kind: &'static str) -> Arc<ValidatorStats> {
        Arc::new(ValidatorStats {
            name,
            kind,
            verdicts: Default::default(),
            failures: Default::default(),
            duration: Histogram::seconds(),
            in_flight: AtomicI64::new(0),
            queued: AtomicI64::new(0),
            helper_processes: AtomicI64::new(0),
            helper_restarts: AtomicU64::new(0),
            mode: Default::default(),
            not_enforced: AtomicU64::new(0),
            failed_open: AtomicU64::new(0),
            deny_cache_hits: AtomicU64::new(0),
            deny_cache_entries: AtomicI64::new(0),
        })
    }
}

/// Every figure of a running jnhpd.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    started_at: SystemTime,
    requests: PerAnswer<AtomicU64>,
    errors: PerReason<AtomicU64>,
    pub store_duration: Histogram,
    pub connections: AtomicI64,
    pub connections_total: Slots<Admission, AtomicU64, { Admission::COUNT }>,
    /// Names in the local store; `None` for a shared namespace.
    pub names: Option<AtomicU64>,
    cache: Slots<CacheResult, AtomicU64, { CacheResult::COUNT }>,
    pub datafile: Option<DatafileStats>,
    pub postgres: Option<PostgresStats>,
    pub reloads: Slots<ReloadResult, AtomicU64, { ReloadResult::COUNT }>,
    /// The validators of the chain in force (replaced on reload).
    validators: std::sync::RwLock<Vec<Arc<ValidatorStats>>>,
    /// The decision log's lines (`[validation] decision_log`).
    pub decision_log: DecisionLogStats,
}

/// What became of the decision log's lines.
#[derive(Debug, Default)]
pub struct DecisionLogStats {
    /// Written whole.
    pub written: AtomicU64,
    /// Dropped because the writer was behind (its buffer was full).
    pub dropped: AtomicU64,
    /// Lost because writing failed (disk full, a closed file).
    pub failed: AtomicU64,
}

#[derive(Debug)]
pub struct DatafileStats {
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    pub records_per_sync: Histogram,
    pub sync_duration: Histogram,
    /// How much of the file is synced: what `GET /names` may list.
    pub durable: DurableLength,
    /// 1 while the file takes STOREs; 0 once a failed write or sync could
    /// not be undone (every later STORE is refused until a restart).
    pub writable: AtomicI64,
}

slot_enum! {
    /// A client connection's admission (the `result` label of
    /// `jnhpd_connections_total`).
    pub enum Admission {
        Accepted => "accepted",
        /// Over `max_connections`.
        Refused => "refused",
    }
}

impl Admission {
    /// `Accepted` if `accepted`, else `Refused`.
    pub fn of(accepted: bool) -> Admission {
        if accepted {
            Admission::Accepted
        } else {
            Admission::Refused
        }
    }
}

slot_enum! {
    /// Where a GET or EXISTS on a shared namespace was answered from (the
    /// `result` label of `jnhpd_cache_requests_total`).
    pub enum CacheResult {
        Hit => "hit",
        Miss => "miss",
    }
}

slot_enum! {
    /// A SIGHUP reload's result (the `result` label of
    /// `jnhpd_reloads_total`).
    pub enum ReloadResult {
        Ok => "ok",
        Rejected => "rejected",
    }
}

impl ReloadResult {
    /// `Ok` if the reload was applied, else `Rejected`.
    pub fn of(applied: bool) -> ReloadResult {
        if applied {
            ReloadResult::Ok
        } else {
            ReloadResult::Rejected
        }
    }
}

slot_enum! {
    /// The statements (jobs) the PostgreSQL engine runs (the `op` label).
    pub enum PostgresOp {
        LookUp => "look_up",
        Write => "write",
        Renew => "renew",
    }
}

slot_enum! {
    /// A PostgreSQL statement's result (the `result` label).
    pub enum QueryResult {
        Ok => "ok",
        Error => "error",
    }
}

impl QueryResult {
    /// `Ok` if the statement succeeded, else `Error`.
    pub fn of(ok: bool) -> QueryResult {
        if ok {
            QueryResult::Ok
        } else {
            QueryResult::Error
        }
    }
}

/// One figure per PostgreSQL op.
pub type PerOp<T> = Slots<PostgresOp, T, { PostgresOp::COUNT }>;

#[derive(Debug)]
pub struct PostgresStats {
    /// 1 while statements are answered (reads, the LISTEN connection).
    pub up: AtomicI64,
    /// 1 while writes commit durably (engine::state: write jobs and the
    /// renewal's check); 0 while they fail or are not confirmed.
    pub writable: AtomicI64,
    /// The replication state's index in `ReplicationState::ALL`, as the
    /// last renewal read it.
    pub replication: AtomicUsize,
    /// Standbys streaming from the primary, and of them those commits
    /// wait for (-1: the role may not see them).
    pub standbys: AtomicI64,
    pub sync_standbys: AtomicI64,
    /// The primary's timeline (0 until read); each rise is a failover
    /// seen, counted in `failovers`.
    pub timeline: AtomicI64,
    pub failovers: AtomicU64,
    /// `host H port P database D` this front-end is connected to.
    pub server: std::sync::Mutex<String>,
    pub queries: PerOp<Slots<QueryResult, AtomicU64, { QueryResult::COUNT }>>,
    pub durations: PerOp<Histogram>,
    /// Jobs whose commit PostgreSQL acknowledged with a WARNING (a wait
    /// for the synchronous standby cancelled): answered as not known.
    pub unconfirmed: AtomicU64,
    /// Rows whose value the protocol cannot carry: answered `ERROR`.
    pub unservable: AtomicU64,
}

/// What kind of store a jnhpd has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Datafile,
    Postgres,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Datafile => "datafile",
            StoreKind::Postgres => "postgres",
        }
    }
}

impl Metrics {
    pub fn new(store: StoreKind) -> Arc<Metrics> {
        Arc::new(Metrics {
            started: Instant::now(),
            started_at: SystemTime::now(),
            requests: Default::default(),
            errors: Default::default(),
            store_duration: Histogram::seconds(),
            connections: AtomicI64::new(0),
            connections_total: Default::default(),
            names: (store != StoreKind::Postgres).then(|| AtomicU64::new(0)),
            cache: Default::default(),
            datafile: (store == StoreKind::Datafile).then(|| DatafileStats {
                bytes: AtomicU64::new(0),
                syncs: AtomicU64::new(0),
                records_per_sync: Histogram::counts(),
                sync_duration: Histogram::seconds(),
                durable: Default::default(),
                writable: AtomicI64::new(1),
            }),
            postgres: (store == StoreKind::Postgres).then(|| PostgresStats {
                up: AtomicI64::new(1),
                writable: AtomicI64::new(1),
                replication: AtomicUsize::new(ReplicationState::Unknown.index()),
                standbys: AtomicI64::new(-1),
                sync_standbys: AtomicI64::new(-1),
                timeline: AtomicI64::new(0),
                failovers: AtomicU64::new(0),
                server: Default::default(),
                queries: Default::default(),
                durations: Slots::from_fn(|_| Histogram::seconds()),
                unconfirmed: Default::default(),
                unservable: Default::default(),
            }),
            reloads: Default::default(),
            validators: Default::default(),
            decision_log: Default::default(),
        })
    }

    /// Adds a batch's tally; observes its fresh STOREs as answered now,
    /// `since` their lines were read.
    pub fn fold(&self, tally: &mut Tally, since: Option<Instant>) {
        for (row, counts) in self.requests.values().zip(tally.requests.values()) {
            for (atomic, &n) in row.values().zip(counts.values()) {
                if n > 0 {
                    atomic.fetch_add(n, Relaxed);
                }
            }
        }
        if tally.any_errors {
            for (atomic, &n) in self.errors.values().zip(tally.errors.values()) {
                if n > 0 {
                    atomic.fetch_add(n, Relaxed);
                }
            }
        }
        if let Some(since) = since.filter(|_| tally.fresh_stores > 0) {
            self.store_duration
                .observe_duration(since.elapsed(), tally.fresh_stores);
        }
        if tally.cache_hits + tally.cache_misses > 0 {
            self.cache[CacheResult::Hit].fetch_add(tally.cache_hits, Relaxed);
            self.cache[CacheResult::Miss].fetch_add(tally.cache_misses, Relaxed);
        }
        tally.requests = Default::default();
        if tally.any_errors {
            tally.errors = Default::default();
            tally.any_errors = false;
        }
        (tally.fresh_stores, tally.cache_hits, tally.cache_misses) = (0, 0, 0);
    }

    /// Requests answered, by command, summed over outcomes.
    pub fn requests_by_command(&self) -> PerCommand<u64> {
        self.requests
            .map(|outcomes| outcomes.values().map(|a| a.load(Relaxed)).sum())
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().map(|a| a.load(Relaxed)).sum()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn set_validators(&self, validators: Vec<Arc<ValidatorStats>>) {
        *self.validators.write().unwrap_or_else(|e| e.into_inner()) = validators;
    }

    pub fn validators(&self) -> Vec<Arc<ValidatorStats>> {
        self.validators
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerFault;

    /// Each slot enum's `index` is its place in `ALL`, so a figure is
    /// stored in the slot `/metrics` reads it from.
    #[test]
    fn every_variant_has_its_own_slot_in_order() {
        fn check<K: Slot + std::fmt::Debug + PartialEq>() {
            for (i, k) in K::ALL.iter().enumerate() {
                assert_eq!(k.index(), i, "{k:?}");
            }
        }
        check::<Command>();
        check::<Answer>();
        check::<ErrorReason>();
        check::<VerdictKind>();
        check::<Cause>();
        check::<Admission>();
        check::<CacheResult>();
        check::<ReloadResult>();
        check::<PostgresOp>();
        check::<QueryResult>();
    }

    /// The label values, in their order, are those the metrics had when
    /// slots were numbered (docs/observability.md and the alert rules
    /// name them).
    #[test]
    fn labels_are_unchanged() {
        fn labels<K: Slot>(label: impl Fn(K) -> &'static str) -> Vec<&'static str> {
            K::ALL.iter().map(|&k| label(k)).collect()
        }
        assert_eq!(labels(Command::label), ["store", "exists", "get"]);
        let outcomes: Vec<Vec<&str>> = Command::ALL
            .iter()
            .map(|&c| labels(|a| c.outcome(a)))
            .collect();
        assert_eq!(
            outcomes,
            [
                ["stored", "rejected", "error"],
                ["present", "absent", "error"],
                ["hit", "miss", "error"],
            ]
        );
        assert_eq!(
            labels(ErrorReason::label),
            [
                "unknown_command",
                "missing_name",
                "missing_value",
                "too_many_arguments",
                "name_too_long",
                "value_too_long",
                "forbidden_byte_in_name",
                "forbidden_byte_in_value",
                "line_too_long",
                "reserved_value",
                "shutting_down",
                "too_many_connections",
                "storage_unavailable",
                "storage_error",
            ]
        );
        assert_eq!(labels(VerdictKind::label), ["allow", "deny", "failure"]);
        assert_eq!(
            labels(cause_label),
            [
                "timeout",
                "no_verdict",
                "malformed",
                "spawn",
                "broken_helper"
            ]
        );
        assert_eq!(labels(Admission::label), ["accepted", "refused"]);
        assert_eq!(labels(CacheResult::label), ["hit", "miss"]);
        assert_eq!(labels(ReloadResult::label), ["ok", "rejected"]);
        assert_eq!(labels(PostgresOp::label), ["look_up", "write", "renew"]);
        assert_eq!(labels(QueryResult::label), ["ok", "error"]);
    }

    /// Each reason lands on its own label: a protocol error's, a server
    /// error's (by the text of its `ERROR` line).
    #[test]
    fn errors_are_counted_under_their_reason() {
        let cases = [
            (ProtocolError::ExtraArguments.into(), "too_many_arguments"),
            (
                ProtocolError::ForbiddenNameByte.into(),
                "forbidden_byte_in_name",
            ),
            (ProtocolError::ReservedValue.into(), "reserved_value"),
            (
                server_error_for(&ServerFault::ShuttingDown).into(),
                "shutting_down",
            ),
            (
                server_error_for(&ServerFault::TooManyConnections).into(),
                "too_many_connections",
            ),
            (
                server_error_for(&ServerFault::StorageUnavailable).into(),
                "storage_unavailable",
            ),
            (
                server_error_for(&ServerFault::StorageIo {
                    action: "write",
                    reason: "No space left on device".into(),
                })
                .into(),
                "storage_error",
            ),
        ];
        for (reason, label) in cases {
            let reason: ErrorReason = reason;
            assert_eq!(reason.label(), label);
        }
    }

    /// A batch's tally, folded, shows under the labels it was counted
    /// with, and the tally is empty after.
    #[test]
    fn a_folded_tally_renders_under_its_labels() {
        let metrics = Metrics::new(StoreKind::Postgres);
        let mut tally = Tally::default();
        tally.count(Command::Get, Answer::No);
        tally.count(Command::Get, Answer::No);
        tally.count(Command::Store, Answer::Yes);
        tally.protocol_error(Some(Command::Exists), ProtocolError::ExtraArguments);
        tally.server_error(None, ServerError::TooManyConnections);
        tally.cache_hits = 4;
        metrics.fold(&mut tally, None);
        metrics.postgres.as_ref().unwrap().queries[PostgresOp::Renew][QueryResult::Error]
            .fetch_add(1, Relaxed);
        metrics.reloads[ReloadResult::Rejected].fetch_add(1, Relaxed);
        metrics.connections_total[Admission::Refused].fetch_add(1, Relaxed);
        let text = metrics.render(false);
        for line in [
            "jnhpd_requests_total{command=\"get\",outcome=\"miss\"} 2",
            "jnhpd_requests_total{command=\"store\",outcome=\"stored\"} 1",
            "jnhpd_requests_total{command=\"exists\",outcome=\"error\"} 1",
            "jnhpd_requests_total{command=\"exists\",outcome=\"present\"} 0",
            "jnhpd_protocol_errors_total{reason=\"too_many_arguments\"} 1",
            "jnhpd_protocol_errors_total{reason=\"too_many_connections\"} 1",
            "jnhpd_protocol_errors_total{reason=\"storage_error\"} 0",
            "jnhpd_cache_requests_total{result=\"hit\"} 4",
            "jnhpd_cache_requests_total{result=\"miss\"} 0",
            "jnhpd_postgres_queries_total{op=\"renew\",result=\"error\"} 1",
            "jnhpd_postgres_queries_total{op=\"look_up\",result=\"ok\"} 0",
            "jnhpd_reloads_total{result=\"rejected\"} 1",
            "jnhpd_connections_total{result=\"refused\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert_eq!(metrics.requests_by_command()[Command::Get], 2);
        assert_eq!(metrics.errors_total(), 2);
        assert!(
            tally
                .requests
                .values()
                .all(|row| row.values().all(|&n| n == 0))
        );
        assert!(tally.errors.values().all(|&n| n == 0));
    }
}
