//! The engine's task: glue between the store actor, the state machine
//! (state.rs) and the jobs (jobs.rs). It waits for whichever comes first
//! (a request, a finished job, a notice from the LISTEN connection, the
//! machine's next wake-up, the end of the shutdown's grace period),
//! hands it to the machine with the time, and carries out what the
//! machine decided. It decides nothing itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant};

use super::jobs::Runner;
use super::messages::{Done, Health, Notice, Output, Request};
use super::state::State;
use crate::base::shutdown::Flag;
use crate::metrics::Metrics;
use crate::storage::postgres::describe;
use crate::storage::postgres::replication::{Replication, ReplicationState};
use crate::storage::postgres::target::{Credentials, Target};
use crate::storage::{Event, Sink};

/// How long the engine may take to stop once the store has closed it:
/// half for statements in flight, the rest for releasing reservations.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

pub(super) struct Task<T> {
    pub state: State<T>,
    pub runner: Runner,
    pub sink: Sink<T>,
    /// For the release at shutdown (see `close`) and the log.
    pub target: Target,
    pub credentials: Credentials,
    pub metrics: Arc<Metrics>,
    pub lease: Duration,
    pub request_timeout: Duration,
    pub jobs: JoinSet<Done>,
    /// The machine's id of each job running, by task: a job that panics
    /// is answered as failed, not forgotten with its requests.
    pub job_ids: HashMap<tokio::task::Id, u64>,
}

impl<T: Send + 'static> Task<T> {
    pub async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request<T>>,
        mut notices: mpsc::UnboundedReceiver<Notice>,
        listener: tokio::task::JoinHandle<()>,
        expired: Flag,
    ) {
        if let Some(pg) = &self.metrics.postgres {
            *pg.server.lock().unwrap_or_else(|e| e.into_inner()) = self.target.connected();
        }
        'serve: loop {
            self.carry_out();
            let wake = self.state.next_wake();
            tokio::select! {
                request = requests.recv() => {
                    let mut next = request;
                    // Take everything queued: it may share statements.
                    loop {
                        match next {
                            Some(Request::Close) | None => break 'serve,
                            Some(request) => self.state.request(request, Instant::now()),
                        }
                        match requests.try_recv() {
                            Ok(request) => next = Some(request),
                            Err(_) => break,
                        }
                    }
                }
                Some(joined) = self.jobs.join_next_with_id() => {
                    let done = match joined {
                        Ok((task, done)) => {
                            self.job_ids.remove(&task);
                            Some(done)
                        }
                        Err(err) => {
                            log::error!("postgres: a job failed: {err}");
                            self.job_ids.remove(&err.id()).map(|id| Done {
                                id,
                                took: Duration::ZERO,
                                result: Err(format!("a job failed: {err}")),
                            })
                        }
                    };
                    if let Some(done) = done {
                        self.state.finished(done, Instant::now());
                    }
                }
                Some(notice) = notices.recv() => self.state.notice(notice, Instant::now()),
                () = tokio::time::sleep_until(wake) => self.state.wake(Instant::now()),
                () = expired.raised(), if !self.state.closing() => {
                    // Statements running are abandoned; their requests
                    // come back failed, and the machine answers the rest.
                    self.runner.pool.manager().closing.cancel();
                    self.state.expire(Instant::now());
                }
            }
        }
        listener.abort();
        self.close().await;
    }

    /// Does what the machine decided, in order.
    fn carry_out(&mut self) {
        for output in self.state.outputs(Instant::now()) {
            match output {
                Output::Start(job) => {
                    let (runner, id) = (self.runner.clone(), job.id);
                    let task = self.jobs.spawn(runner.run(job));
                    self.job_ids.insert(task.id(), id);
                }
                Output::Report(event) => (self.sink)(event),
                Output::Answer(token, found) => (self.sink)(Event::LookedUp { token, found }),
                Output::Health(health) => self.health(health),
                Output::Replication(replication) => self.replication(replication),
            }
        }
    }

    /// Logs a change of what PostgreSQL does for this front-end, and
    /// keeps the gauges `/readyz` reads.
    fn health(&self, health: Health) {
        let Some(pg) = &self.metrics.postgres else {
            return;
        };
        let server = self.target.connected();
        *pg.server.lock().unwrap_or_else(|e| e.into_inner()) = server.clone();
        match health {
            Health::Reachable => {
                pg.up.store(1, Relaxed);
                log::info!("postgres: reachable again ({server})");
            }
            Health::Unreachable(reason) => {
                pg.up.store(0, Relaxed);
                log::warn!(
                    "postgres: {reason}; retrying for up to {} ms per request",
                    self.request_timeout.as_millis()
                );
            }
            Health::Writable => {
                pg.writable.store(1, Relaxed);
                log::info!("postgres: writes commit again ({server})");
            }
            Health::Unwritable(reason) => {
                pg.writable.store(0, Relaxed);
                log::warn!(
                    "postgres: writes do not commit ({reason}; {server}); STOREs get `ERROR storage unavailable` until they do"
                );
            }
        }
    }

    /// Keeps the replication gauges; logs a change of state and a
    /// failover seen (the primary's timeline rose).
    fn replication(&self, replication: Result<Replication, String>) {
        let Some(pg) = &self.metrics.postgres else {
            return;
        };
        let server = self.target.connected();
        *pg.server.lock().unwrap_or_else(|e| e.into_inner()) = server.clone();
        let state = match &replication {
            Ok(figures) => figures.state(),
            Err(_) => ReplicationState::Unknown,
        };
        let before = ReplicationState::ALL
            .get(pg.replication.swap(state.index(), Relaxed))
            .copied();
        if before != Some(state) {
            let why = match &replication {
                Ok(figures) => format!(
                    "synchronous_standby_names {:?}, synchronous_commit {}, {}",
                    figures.sync_names,
                    figures.sync_commit,
                    match (figures.standbys, figures.sync_standbys) {
                        (Some(all), Some(sync)) =>
                            format!("{all} standbys streaming, {sync} synchronous"),
                        _ => "standbys not visible to this role (grant it pg_monitor)".into(),
                    }
                ),
                Err(reason) => format!("cannot read it: {reason}"),
            };
            let line = format!(
                "postgres: replication {} on {server} ({why})",
                state.label()
            );
            match state {
                ReplicationState::Sync => log::info!("{line}"),
                _ => log::warn!("{line}"),
            }
        }
        let Ok(figures) = replication else {
            return;
        };
        pg.standbys.store(figures.standbys.unwrap_or(-1), Relaxed);
        pg.sync_standbys
            .store(figures.sync_standbys.unwrap_or(-1), Relaxed);
        // What the pool fences old primaries by (pool.rs).
        let manager = self.runner.pool.manager();
        manager
            .newest_timeline
            .fetch_max(figures.timeline, std::sync::atomic::Ordering::AcqRel);
        let timeline = pg.timeline.swap(figures.timeline, Relaxed);
        if timeline != 0 && figures.timeline > timeline {
            pg.failovers.fetch_add(1, Relaxed);
            log::warn!(
                "postgres: the primary changed (timeline {timeline} -> {}): now on {server}",
                figures.timeline
            );
        }
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
        let (sql, owner) = (&self.runner.sql, &*self.runner.owner);
        // A connection of its own, not a pooled one: past the grace period
        // `with_connection` abandons every statement, and a new pooled
        // connection prepares statements on the names table, which waits
        // for whatever holds that table.
        let (target, credentials) = (&self.target, &self.credentials);
        let release = async {
            let client = target
                .connect(credentials)
                .await
                .map_err(|e| e.to_string())?;
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
                self.lease.as_secs()
            ),
        }
    }
}
