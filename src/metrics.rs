//! What jnhpd counts, and its rendering for Prometheus
//! (docs/observability.md).
//!
//! Counting costs the request path no lock and no system call: requests
//! are tallied in plain integers in each [`Batch`](crate::store::Batch)
//! (by the store actor and the connection) and folded into atomics once
//! per store round trip; everything else (validators, the data file, the
//! PostgreSQL engine, connections) bumps atomics directly. Scraping reads
//! the atomics and hands them to `prometheus-client`, which writes the
//! Prometheus text format 0.0.4 or OpenMetrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::protocol::ProtocolError;

/// The commands, in the order of [`Tally`]'s rows.
pub const COMMANDS: [&str; 3] = ["store", "exists", "get"];

/// Per command: its two ordinary outcomes, then `error`.
pub const OUTCOMES: [[&str; 3]; 3] = [
    ["stored", "rejected", "error"],
    ["present", "absent", "error"],
    ["hit", "miss", "error"],
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Store = 0,
    Exists = 1,
    Get = 2,
}

/// An answer's outcome: the command's first or second ordinary one, or
/// an `ERROR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// stored, present, hit
    Yes = 0,
    /// rejected, absent, miss
    No = 1,
    Error = 2,
}

/// `ERROR` reasons, snake_case: the protocol's, then the server's.
pub const ERROR_REASONS: [&str; 14] = [
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
];

/// The server-side reasons' places in [`ERROR_REASONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerError {
    ShuttingDown = 10,
    TooManyConnections = 11,
    StorageUnavailable = 12,
    Storage = 13,
}

/// The place of a protocol error's reason in [`ERROR_REASONS`].
pub fn error_index(err: ProtocolError) -> usize {
    match err {
        ProtocolError::UnknownCommand => 0,
        ProtocolError::MissingName => 1,
        ProtocolError::MissingValue => 2,
        ProtocolError::ExtraArguments => 3,
        ProtocolError::NameTooLong => 4,
        ProtocolError::ValueTooLong => 5,
        ProtocolError::ForbiddenNameByte => 6,
        ProtocolError::ForbiddenValueByte => 7,
        ProtocolError::LineTooLong => 8,
        ProtocolError::ReservedValue => 9,
    }
}

/// The reason of a server-side `ERROR` line's text.
pub fn server_error_of(reason: &str) -> ServerError {
    match reason {
        "shutting down" => ServerError::ShuttingDown,
        "too many connections" => ServerError::TooManyConnections,
        "storage unavailable" => ServerError::StorageUnavailable,
        _ => ServerError::Storage,
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
    pub requests: [[u64; 3]; 3],
    pub errors: [u64; ERROR_REASONS.len()],
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
        self.requests[command as usize][answer as usize] += 1;
    }

    pub fn protocol_error(&mut self, command: Option<Command>, err: ProtocolError) {
        if let Some(command) = command {
            self.count(command, Answer::Error);
        }
        self.errors[error_index(err)] += 1;
        self.any_errors = true;
    }

    pub fn server_error(&mut self, command: Option<Command>, err: ServerError) {
        if let Some(command) = command {
            self.count(command, Answer::Error);
        }
        self.errors[err as usize] += 1;
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

/// One validator's figures (kept across reloads with the validator).
#[derive(Debug)]
pub struct ValidatorStats {
    pub name: String,
    pub kind: &'static str,
    /// allow, deny, failure
    pub verdicts: [AtomicU64; 3],
    /// timeout, no_verdict, malformed, spawn, broken_helper
    pub failures: [AtomicU64; 5],
    pub duration: Histogram,
    pub in_flight: AtomicI64,
    pub queued: AtomicI64,
    pub helper_processes: AtomicI64,
    pub helper_restarts: AtomicU64,
}

pub const VERDICTS: [&str; 3] = ["allow", "deny", "failure"];
pub const FAILURE_CAUSES: [&str; 5] = [
    "timeout",
    "no_verdict",
    "malformed",
    "spawn",
    "broken_helper",
];

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
        })
    }
}

/// Every figure of a running jnhpd.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    started_at: SystemTime,
    requests: [[AtomicU64; 3]; 3],
    errors: [AtomicU64; ERROR_REASONS.len()],
    pub store_duration: Histogram,
    pub connections: AtomicI64,
    /// accepted, refused
    pub connections_total: [AtomicU64; 2],
    /// Names in the local store; `None` for a shared namespace.
    pub names: Option<AtomicU64>,
    cache: [AtomicU64; 2],
    pub datafile: Option<DatafileStats>,
    pub postgres: Option<PostgresStats>,
    /// ok, rejected
    pub reloads: [AtomicU64; 2],
    /// The validators of the chain in force (replaced on reload).
    validators: std::sync::RwLock<Vec<Arc<ValidatorStats>>>,
}

#[derive(Debug)]
pub struct DatafileStats {
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    pub records_per_sync: Histogram,
    pub sync_duration: Histogram,
    /// How much of the file is synced: what `GET /names` may list.
    pub durable: crate::listing::DurableLength,
    /// 1 while the file takes STOREs; 0 once a failed write or sync could
    /// not be undone (every later STORE is refused until a restart).
    pub writable: AtomicI64,
}

/// The statements the PostgreSQL engine runs, for `op` labels.
pub const POSTGRES_OPS: [&str; 3] = ["look_up", "write", "renew"];

#[derive(Debug)]
pub struct PostgresStats {
    pub up: AtomicI64,
    /// [op][ok, error]
    pub queries: [[AtomicU64; 2]; 3],
    pub durations: [Histogram; 3],
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
                queries: Default::default(),
                durations: std::array::from_fn(|_| Histogram::seconds()),
                unconfirmed: Default::default(),
                unservable: Default::default(),
            }),
            reloads: Default::default(),
            validators: Default::default(),
        })
    }

    /// Adds a batch's tally; observes its fresh STOREs as answered now,
    /// `since` their lines were read.
    pub fn fold(&self, tally: &mut Tally, since: Option<Instant>) {
        for (row, counts) in self.requests.iter().zip(&tally.requests) {
            for (atomic, &n) in row.iter().zip(counts) {
                if n > 0 {
                    atomic.fetch_add(n, Relaxed);
                }
            }
        }
        if tally.any_errors {
            for (atomic, &n) in self.errors.iter().zip(&tally.errors) {
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
            self.cache[0].fetch_add(tally.cache_hits, Relaxed);
            self.cache[1].fetch_add(tally.cache_misses, Relaxed);
        }
        tally.requests = Default::default();
        if tally.any_errors {
            tally.errors = Default::default();
            tally.any_errors = false;
        }
        (tally.fresh_stores, tally.cache_hits, tally.cache_misses) = (0, 0, 0);
    }

    /// Requests answered, by command, summed over outcomes.
    pub fn requests_by_command(&self) -> [u64; 3] {
        std::array::from_fn(|c| self.requests[c].iter().map(|a| a.load(Relaxed)).sum())
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().map(|a| a.load(Relaxed)).sum()
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

    /// A registry that reads these metrics at each scrape.
    pub fn registry(self: &Arc<Metrics>) -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collector(self.clone())));
        registry
    }

    /// The Prometheus text format 0.0.4, or OpenMetrics.
    pub fn render(self: &Arc<Metrics>, openmetrics: bool) -> String {
        let registry = self.registry();
        let mut out = String::new();
        let rendered = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        };
        // Writing into a String cannot fail; a failure would be a bug in
        // an encoder, and a partial page is still worth serving.
        if let Err(err) = rendered {
            log::error!("metrics: encoding failed: {err}");
        }
        out
    }
}

/// Reads [`Metrics`] into an encoder at each scrape.
#[derive(Debug)]
struct Collector(Arc<Metrics>);

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        family
            .encode_family(labels)?
            .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(value, None)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, i64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        family.encode_family(labels)?.encode_gauge(value)?;
    }
    Ok(())
}

fn histograms(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, &Histogram)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, histogram) in samples {
        histogram.encode(&mut family.encode_family(labels)?)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.0;
        let load = |a: &AtomicU64| a.load(Relaxed);
        let mut requests = Vec::new();
        for (c, command) in COMMANDS.iter().enumerate() {
            for (o, outcome) in OUTCOMES[c].iter().enumerate() {
                let labels = vec![("command", *command), ("outcome", *outcome)];
                requests.push((labels, load(&m.requests[c][o])));
            }
        }
        counter(
            &mut e,
            "jnhpd_requests",
            "Requests answered, by command and outcome.",
            &requests,
        )?;
        let errors: Vec<_> = ERROR_REASONS
            .iter()
            .zip(&m.errors)
            .map(|(reason, n)| (vec![("reason", *reason)], load(n)))
            .collect();
        counter(
            &mut e,
            "jnhpd_protocol_errors",
            "ERROR replies, by reason.",
            &errors,
        )?;
        histograms(
            &mut e,
            "jnhpd_store_duration_seconds",
            "STOREs of absent names, from the line read to the reply (validation and commit included).",
            &[(vec![], &m.store_duration)],
        )?;
        gauge(
            &mut e,
            "jnhpd_connections",
            "Open client connections.",
            &[(vec![], m.connections.load(Relaxed))],
        )?;
        counter(
            &mut e,
            "jnhpd_connections",
            "Client connections, accepted or refused (over max_connections).",
            &[
                (vec![("result", "accepted")], load(&m.connections_total[0])),
                (vec![("result", "refused")], load(&m.connections_total[1])),
            ],
        )?;
        counter(
            &mut e,
            "jnhpd_log_lines_dropped",
            "Log lines dropped because the syslog socket was full.",
            &[(vec![], crate::logging::dropped())],
        )?;
        if let Some(names) = &m.names {
            gauge(
                &mut e,
                "jnhpd_names",
                "Names in the local store.",
                &[(vec![], load(names) as i64)],
            )?;
        }
        self.encode_validators(&mut e)?;
        if let Some(d) = &m.datafile {
            gauge(
                &mut e,
                "jnhpd_datafile_bytes",
                "Size of the data file.",
                &[(vec![], load(&d.bytes) as i64)],
            )?;
            gauge(
                &mut e,
                "jnhpd_datafile_writable",
                "1 while the data file takes STOREs; 0 after a failed write or sync that \
                 could not be undone (until a restart).",
                &[(vec![], d.writable.load(Relaxed))],
            )?;
            counter(
                &mut e,
                "jnhpd_datafile_syncs",
                "fsyncs of the data file.",
                &[(vec![], load(&d.syncs))],
            )?;
            histograms(
                &mut e,
                "jnhpd_datafile_records_per_sync",
                "Records made durable by one sync.",
                &[(vec![], &d.records_per_sync)],
            )?;
            histograms(
                &mut e,
                "jnhpd_datafile_sync_duration_seconds",
                "Time of one sync of the data file.",
                &[(vec![], &d.sync_duration)],
            )?;
        }
        if let Some(pg) = &m.postgres {
            gauge(
                &mut e,
                "jnhpd_postgres_up",
                "1 while PostgreSQL answers, else 0.",
                &[(vec![], pg.up.load(Relaxed))],
            )?;
            let mut queries = Vec::new();
            for (op, row) in POSTGRES_OPS.iter().zip(&pg.queries) {
                queries.push((vec![("op", *op), ("result", "ok")], load(&row[0])));
                queries.push((vec![("op", *op), ("result", "error")], load(&row[1])));
            }
            counter(
                &mut e,
                "jnhpd_postgres_queries",
                "Statements run on PostgreSQL, by op and result.",
                &queries,
            )?;
            let durations: Vec<_> = POSTGRES_OPS
                .iter()
                .zip(&pg.durations)
                .map(|(op, h)| (vec![("op", *op)], h))
                .collect();
            histograms(
                &mut e,
                "jnhpd_postgres_query_duration_seconds",
                "Time of one statement (job) on PostgreSQL.",
                &durations,
            )?;
            counter(
                &mut e,
                "jnhpd_postgres_unconfirmed_commits",
                "Jobs whose commit PostgreSQL acknowledged with a WARNING (not known to be replicated).",
                &[(vec![], load(&pg.unconfirmed))],
            )?;
            counter(
                &mut e,
                "jnhpd_postgres_unservable_values",
                "Rows whose value the protocol cannot carry, answered ERROR.",
                &[(vec![], load(&pg.unservable))],
            )?;
            counter(
                &mut e,
                "jnhpd_cache_requests",
                "GET/EXISTS answered from the name cache (hit) or looked up (miss).",
                &[
                    (vec![("result", "hit")], load(&m.cache[0])),
                    (vec![("result", "miss")], load(&m.cache[1])),
                ],
            )?;
        }
        counter(
            &mut e,
            "jnhpd_reloads",
            "SIGHUP reloads, applied or rejected.",
            &[
                (vec![("result", "ok")], load(&m.reloads[0])),
                (vec![("result", "rejected")], load(&m.reloads[1])),
            ],
        )?;
        gauge(
            &mut e,
            "jnhpd_build_info",
            "Always 1; the version is a label.",
            &[(vec![("version", env!("CARGO_PKG_VERSION"))], 1)],
        )?;
        self.encode_process(&mut e)
    }
}

impl Collector {
    fn encode_validators(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let validators = self.0.validators();
        if validators.is_empty() {
            return Ok(());
        }
        let load = |a: &AtomicU64| a.load(Relaxed);
        let mut verdicts = Vec::new();
        let mut failures = Vec::new();
        let mut durations = Vec::new();
        let (mut in_flight, mut queued, mut processes, mut restarts) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for v in &validators {
            let name = v.name.as_str();
            for (verdict, n) in VERDICTS.iter().zip(&v.verdicts) {
                verdicts.push((vec![("validator", name), ("verdict", *verdict)], load(n)));
            }
            for (cause, n) in FAILURE_CAUSES.iter().zip(&v.failures) {
                failures.push((vec![("validator", name), ("cause", *cause)], load(n)));
            }
            durations.push((vec![("validator", name)], &v.duration));
            in_flight.push((vec![("validator", name)], v.in_flight.load(Relaxed)));
            queued.push((vec![("validator", name)], v.queued.load(Relaxed)));
            if v.kind == "helper" {
                processes.push((vec![("validator", name)], v.helper_processes.load(Relaxed)));
                restarts.push((vec![("validator", name)], load(&v.helper_restarts)));
            }
        }
        counter(
            e,
            "jnhpd_validator_verdicts",
            "Verdicts, by validator.",
            &verdicts,
        )?;
        counter(
            e,
            "jnhpd_validator_failures",
            "Validator failures, by cause.",
            &failures,
        )?;
        histograms(
            e,
            "jnhpd_validator_duration_seconds",
            "Time in each validator.",
            &durations,
        )?;
        gauge(
            e,
            "jnhpd_validator_in_flight",
            "Validations running now.",
            &in_flight,
        )?;
        gauge(
            e,
            "jnhpd_validator_queued",
            "STOREs waiting for a validator's slot.",
            &queued,
        )?;
        if !processes.is_empty() {
            gauge(
                e,
                "jnhpd_helper_processes",
                "Live helper processes.",
                &processes,
            )?;
            counter(
                e,
                "jnhpd_helper_restarts",
                "Helpers replaced (broken, exited, recycled).",
                &restarts,
            )?;
        }
        Ok(())
    }

    /// The standard process metrics, from /proc.
    fn encode_process(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let process = ProcessFigures::read();
        let mut family = e.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?;
        family.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
            &process.cpu_seconds,
            None,
        )?;
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            &[(vec![], process.resident_bytes)],
        )?;
        gauge(
            e,
            "process_open_fds",
            "Number of open file descriptors.",
            &[(vec![], process.open_fds)],
        )?;
        let start = self
            .0
            .started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds.",
            &[(vec![], start)],
        )
    }
}

struct ProcessFigures {
    cpu_seconds: f64,
    resident_bytes: i64,
    open_fds: i64,
}

impl ProcessFigures {
    fn read() -> ProcessFigures {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096);
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command (which may hold spaces) in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 of stat; 11 and 12 here.
        let cpu_seconds = (field(11) + field(12)) / ticks;
        let rss_pages = field(21);
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
        ProcessFigures {
            cpu_seconds,
            resident_bytes: (rss_pages as i64) * page,
            open_fds,
        }
    }
}
