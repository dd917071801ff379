//! Pooled connections, each with every statement prepared once (a
//! statement then costs one round trip, not two).
//!
//! deadpool keeps the connections; a broken one (PostgreSQL restarted, the
//! network cut) is noticed when it is next taken and replaced by a new
//! one, so the pool heals by itself once the server is back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tokio_postgres::{Client, Statement};
use tokio_util::sync::CancellationToken;

use super::schema::{SchemaError, check_columns};
use super::sql::Sql;
use super::target::{Credentials, Target};

use super::durability::{self, Durability};

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
        })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<ConnError> {
        if conn.client.is_closed() {
            return Err(RecycleError::message("the connection is closed"));
        }
        Ok(())
    }
}

pub type Pool = managed::Pool<Manager>;
pub type Pooled = managed::Object<Manager>;
