//! Pooled connections, each with every statement prepared once (a
//! statement then costs one round trip, not two).
//!
//! deadpool keeps the connections; a broken one (PostgreSQL restarted, the
//! network cut) is noticed when it is next taken and replaced by a new
//! one, so the pool heals by itself once the server is back.

use std::sync::Arc;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tokio_postgres::{Client, Statement};

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
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<Conn, tokio_postgres::Error> {
        let (client, warnings) = durability::connect(&self.target, &self.credentials).await?;
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

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<tokio_postgres::Error> {
        if conn.client.is_closed() {
            return Err(RecycleError::message("the connection is closed"));
        }
        Ok(())
    }
}

pub type Pool = managed::Pool<Manager>;
pub type Pooled = managed::Object<Manager>;
