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
//!
//! Where each lives: `state` decides all of the above without I/O (the
//! clock passed in, so its tests steer time); `messages` is what goes in
//! and out of it; `jobs` runs the statements it asks for; `task` glues
//! them (requests, finished jobs, notices, wake-ups); `listen` keeps the
//! LISTEN connection; `handle` is the backend the store holds. This
//! module connects and checks the schema.

mod handle;
mod jobs;
mod listen;
mod messages;
mod state;
mod task;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant};

use super::pool::{Manager, Pool, Pooled};
use super::schema::check_columns;
use super::sql::Sql;
use super::target::{Credentials, Target};
use super::{PgError, PostgresSettings, describe};
use crate::base::shutdown::Flag;
use crate::metrics::Metrics;
use crate::protocol::Limits;
use crate::storage::{Sink, Start, Started};
use handle::PgBackend;
use jobs::Runner;
use state::{Settings, State};
use task::Task;

/// The pause after the first failed connection attempt at start; it
/// doubles after each further one, up to [`CONNECT_PAUSE_MAX`].
const CONNECT_PAUSE_FIRST: Duration = Duration::from_millis(250);
const CONNECT_PAUSE_MAX: Duration = Duration::from_secs(4);

/// The least a host's connection attempt gets, however short
/// `request_timeout_ms` is (`Target::limit_handshake`).
const HANDSHAKE_LIMIT_MIN: Duration = Duration::from_millis(500);

/// The `ERROR` reason of a GET whose row holds a value the protocol
/// cannot carry (written by another tool).
pub const UNSERVABLE: crate::protocol::ServerFault = crate::protocol::ServerFault::UnservableValue;

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
                Ok(Err(err)) => err.to_string(),
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
            newest_timeline: Default::default(),
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
    pub(crate) fn into_backend<T: Send + 'static>(
        self,
        metrics: Arc<Metrics>,
        limits: Limits,
        expired: Flag,
    ) -> Start<T> {
        Box::new(move |sink: Sink<T>| {
            let (requests, request_rx) = mpsc::unbounded_channel();
            let (notices, notice_rx) = mpsc::unbounded_channel();
            let listener = tokio::spawn(listen::listen(
                self.target.clone(),
                self.credentials.clone(),
                self.sql.channel.clone(),
                notices,
                self.settings.request_timeout,
            ));
            let cache_bytes = self.settings.cache_bytes;
            let settings = Settings {
                pool_size: self.settings.pool_size,
                lease: self.settings.lease,
                request_timeout: self.settings.request_timeout,
                limits,
                table: self.sql.names.clone(),
            };
            let engine = Task {
                state: State::new(settings, metrics.clone(), Instant::now()),
                runner: Runner {
                    pool: self.pool,
                    sql: self.sql,
                    owner: self.owner,
                },
                sink,
                target: self.target,
                credentials: self.credentials,
                metrics,
                lease: self.settings.lease,
                request_timeout: self.settings.request_timeout,
                jobs: JoinSet::new(),
                job_ids: HashMap::new(),
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
