//! Pooled connections, each with every statement prepared once (a
//! statement then costs one round trip, not two).
//!
//! deadpool keeps the connections; a broken one (PostgreSQL restarted, the
//! network cut) is noticed when it is next taken and replaced by a new
//! one, so the pool heals by itself once the server is back.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tokio_postgres::{Client, Statement};
use tokio_util::sync::CancellationToken;

use super::schema::{SchemaError, check_columns};
use super::sql::Sql;
use super::target::{Credentials, Target};

use super::durability::{self, Durability};
use super::replication;

/// A connection and its prepared statements.
pub struct Conn {
    pub client: Client,
    /// The warnings its commits drew, and its barrier (durability.rs).
    pub durability: Durability,
    pub look_up: Statement,
    pub insert: Statement,
    pub classify: Statement,
    pub finalize: Statement,
    pub acquire: Statement,
    pub release: Statement,
    pub renew: Statement,
    pub read_back: Statement,
    /// The server's timeline when connected (0: unknown).
    pub timeline: i64,
}

/// Makes and checks [`Conn`]s for deadpool.
pub struct Manager {
    pub target: Target,
    pub credentials: Credentials,
    pub sql: Arc<Sql>,
    /// When a wrong table was last logged (once per `SCHEMA_LOG_EVERY`,
    /// not once per connection attempt).
    pub schema_logged: Mutex<Option<Instant>>,
    /// Cancelled when the shutdown's grace period is over: statements
    /// still running are then abandoned (`engine::jobs::with_connection`).
    pub closing: CancellationToken,
    /// The newest timeline any connection (or the renewal's replication
    /// read) has seen. A connection to a server on an older one is to a
    /// primary that was failed over — frozen, say, while its standby was
    /// promoted, then thawed before its failover tool fenced it: it still
    /// takes connections as a primary, but lacks what the new one
    /// acknowledged, so a read there may say "absent" of a stored name.
    /// Such connections are refused, and pooled ones dropped.
    pub newest_timeline: Arc<AtomicI64>,
}

/// How often a table that changed under a running jnhpd is logged again.
const SCHEMA_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a pooled connection could not be made.
pub type ConnError = SchemaError;

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = ConnError;

    async fn create(&self) -> Result<Conn, ConnError> {
        let (client, warnings) = durability::connect(&self.target, &self.credentials).await?;
        // Before preparing: a statement prepared on a changed table would
        // return values of another type than jnhpd reads (schema.rs).
        if let Err(err) = check_columns(&client, &self.sql).await {
            if let SchemaError::Mismatch(reason) = &err {
                let mut logged = self.schema_logged.lock().unwrap_or_else(|e| e.into_inner());
                if logged.is_none_or(|at| at.elapsed() >= SCHEMA_LOG_EVERY) {
                    *logged = Some(Instant::now());
                    log::error!("postgres: {reason}; not serving until it is put back");
                }
            }
            return Err(err);
        }
        // Each statement takes arrays whose length varies with the batch:
        // planning them anew per execution (PostgreSQL's default for the
        // first runs, and whenever a custom plan looks cheaper) cost more
        // than running them. One generic plan serves every batch size.
        client
            .batch_execute("SET plan_cache_mode = force_generic_plan")
            .await?;
        let sql = &self.sql;
        let (look_up, insert, classify, finalize, acquire, release, renew, read_back) = tokio::try_join!(
            client.prepare(&sql.look_up),
            client.prepare(&sql.insert),
            client.prepare(&sql.classify),
            client.prepare(&sql.finalize),
            client.prepare(&sql.acquire),
            client.prepare(&sql.release),
            client.prepare(&sql.renew),
            client.prepare(&sql.read_back),
        )?;
        let durability = Durability::prepare(&client, warnings, sql).await?;
        // Unknown (0) where the function is revoked: not fenced then.
        let timeline = match client.query_one(replication::TIMELINE, &[]).await {
            Ok(row) => row.try_get::<_, i64>(0).unwrap_or(0),
            Err(_) => 0,
        };
        let newest = self.newest_timeline.fetch_max(timeline, Ordering::AcqRel);
        if timeline != 0 && timeline < newest {
            return Err(SchemaError::OldPrimary { timeline, newest });
        }
        Ok(Conn {
            client,
            durability,
            look_up,
            insert,
            classify,
            finalize,
            acquire,
            release,
            renew,
            read_back,
            timeline,
        })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<ConnError> {
        if conn.client.is_closed() {
            return Err(RecycleError::message("the connection is closed"));
        }
        if conn.timeline != 0 && conn.timeline < self.newest_timeline.load(Ordering::Acquire) {
            return Err(RecycleError::message(
                "its server is behind the newest timeline: an old primary",
            ));
        }
        Ok(())
    }
}

pub type Pool = managed::Pool<Manager>;
pub type Pooled = managed::Object<Manager>;
