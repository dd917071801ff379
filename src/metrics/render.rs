//! Rendering the metrics for Prometheus: at each scrape a collector reads
//! the atomics and hands them to `prometheus-client`, which writes the
//! Prometheus text format 0.0.4 or OpenMetrics. Counting is the parent
//! module's; this one only reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::*;

impl Metrics {
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

/// A counter's samples: one per slot, labelled `key="label"`.
fn labelled<K: Slot, const N: usize>(
    key: &'static str,
    slots: &Slots<K, AtomicU64, N>,
    label: fn(K) -> &'static str,
) -> Vec<(Vec<(&'static str, &'static str)>, u64)> {
    slots
        .iter()
        .map(|(k, n)| (vec![(key, label(k))], n.load(Relaxed)))
        .collect()
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
        for (command, outcomes) in m.requests.iter() {
            for (answer, n) in outcomes.iter() {
                let labels = vec![
                    ("command", command.label()),
                    ("outcome", command.outcome(answer)),
                ];
                requests.push((labels, load(n)));
            }
        }
        counter(
            &mut e,
            "jnhpd_requests",
            "Requests answered, by command and outcome.",
            &requests,
        )?;
        let errors: Vec<_> = m
            .errors
            .iter()
            .map(|(reason, n)| (vec![("reason", reason.label())], load(n)))
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
            &labelled("result", &m.connections_total, Admission::label),
        )?;
        counter(
            &mut e,
            "jnhpd_log_lines_dropped",
            "Log lines dropped because the syslog socket (or stderr, a pipe) was full.",
            &[(vec![], crate::base::logging::dropped())],
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
        let lines = &m.decision_log;
        counter(
            &mut e,
            "jnhpd_decision_log_lines",
            "Decision log lines: written, dropped (the writer was behind), failed (a write \
             failed).",
            &[
                (vec![("result", "written")], load(&lines.written)),
                (vec![("result", "dropped")], load(&lines.dropped)),
                (vec![("result", "failed")], load(&lines.failed)),
            ],
        )?;
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
            gauge(
                &mut e,
                "jnhpd_postgres_writable",
                "1 while writes commit durably on PostgreSQL, else 0 (STOREs get ERROR storage unavailable).",
                &[(vec![], pg.writable.load(Relaxed))],
            )?;
            let current = pg.replication.load(Relaxed);
            let states: Vec<_> = ReplicationState::ALL
                .iter()
                .map(|s| (vec![("state", s.label())], i64::from(s.index() == current)))
                .collect();
            gauge(
                &mut e,
                "jnhpd_postgres_replication",
                "1 for the primary's replication state: sync, waiting (commits wait for absent standbys), async, no_standby, unknown.",
                &states,
            )?;
            gauge(
                &mut e,
                "jnhpd_postgres_standbys",
                "Standbys streaming from the primary (-1: the role may not see them; grant pg_monitor).",
                &[(vec![], pg.standbys.load(Relaxed))],
            )?;
            gauge(
                &mut e,
                "jnhpd_postgres_sync_standbys",
                "Streaming standbys that commits wait for (-1: the role may not see it; grant pg_monitor).",
                &[(vec![], pg.sync_standbys.load(Relaxed))],
            )?;
            gauge(
                &mut e,
                "jnhpd_postgres_timeline",
                "The primary's timeline (0 until read); it rises with every promotion.",
                &[(vec![], pg.timeline.load(Relaxed))],
            )?;
            counter(
                &mut e,
                "jnhpd_postgres_failovers",
                "Rises of the primary's timeline seen (failovers and switchovers).",
                &[(vec![], load(&pg.failovers))],
            )?;
            let server = pg.server.lock().unwrap_or_else(|e| e.into_inner()).clone();
            gauge(
                &mut e,
                "jnhpd_postgres_server_info",
                "Always 1; the PostgreSQL server this front-end is connected to is a label.",
                &[(vec![("server", server.as_str())], 1)],
            )?;
            let mut queries = Vec::new();
            for (op, results) in pg.queries.iter() {
                for (result, n) in results.iter() {
                    let labels = vec![("op", op.label()), ("result", result.label())];
                    queries.push((labels, load(n)));
                }
            }
            counter(
                &mut e,
                "jnhpd_postgres_queries",
                "Statements run on PostgreSQL, by op and result.",
                &queries,
            )?;
            let durations: Vec<_> = pg
                .durations
                .iter()
                .map(|(op, h)| (vec![("op", op.label())], h))
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
                &labelled("result", &m.cache, CacheResult::label),
            )?;
        }
        counter(
            &mut e,
            "jnhpd_reloads",
            "SIGHUP reloads, applied or rejected.",
            &labelled("result", &m.reloads, ReloadResult::label),
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
        let (mut modes, mut not_enforced, mut failed_open) = (Vec::new(), Vec::new(), Vec::new());
        let (mut cache_hits, mut cache_entries) = (Vec::new(), Vec::new());
        for v in &validators {
            let name = v.name.as_str();
            let mode = crate::validator::spec::Mode::ALL
                .get(usize::from(v.mode.load(Relaxed)))
                .map_or("enforce", |m| m.label());
            modes.push((vec![("validator", name), ("mode", mode)], 1));
            not_enforced.push((vec![("validator", name)], load(&v.not_enforced)));
            failed_open.push((vec![("validator", name)], load(&v.failed_open)));
            cache_hits.push((vec![("validator", name)], load(&v.deny_cache_hits)));
            cache_entries.push((
                vec![("validator", name)],
                v.deny_cache_entries.load(Relaxed),
            ));
            for (verdict, n) in v.verdicts.iter() {
                verdicts.push((
                    vec![("validator", name), ("verdict", verdict.label())],
                    load(n),
                ));
            }
            for (cause, n) in v.failures.iter() {
                failures.push((
                    vec![("validator", name), ("cause", cause_label(cause))],
                    load(n),
                ));
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
            "jnhpd_validator_mode",
            "Always 1; the validator's mode (enforce, warn, dryrun) is a label.",
            &modes,
        )?;
        counter(
            e,
            "jnhpd_validator_not_enforced",
            "Refusals (denials, failures under on_failure = reject) that did not refuse: \
             the validator is in warn or dryrun mode.",
            &not_enforced,
        )?;
        counter(
            e,
            "jnhpd_validator_failed_open",
            "Failures that let the STORE go on (on_failure = allow).",
            &failed_open,
        )?;
        counter(
            e,
            "jnhpd_validator_deny_cache_hits",
            "STOREs refused from the validator's deny cache, without running it.",
            &cache_hits,
        )?;
        gauge(
            e,
            "jnhpd_validator_deny_cache_entries",
            "Refusals the validator's deny cache holds.",
            &cache_entries,
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
