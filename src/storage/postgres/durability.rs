//! Knowing that what jnhpd answers survives a failover
//! (docs/postgres.md, "What a failover can lose").
//!
//! PostgreSQL commits on the primary first and then waits for its
//! synchronous standby. When that wait ends early — the backend's query
//! is cancelled, or the backend is terminated — the commit stays on the
//! primary only: the client is told success with a `WARNING` ("canceling
//! wait for synchronous replication …, already committed locally"), or
//! loses its connection. A failover to the standby then loses the row, and
//! other sessions can read it meanwhile. So:
//!
//! - Every pooled connection's driver counts the `WARNING`s it receives
//!   ([`Warnings`]). The driver handles a notice before it hands the
//!   statement's ReadyForQuery to the waiting query, so once a statement
//!   has returned, a warning of its commit is counted: a job compares the
//!   count before and after its statements, and a moved count makes its
//!   commits' outcome unknown. Any warning counts, not only the wording
//!   of the sync-rep cancel (which is translated with `lc_messages`).
//! - A row read rather than written by the job (the name is taken, a
//!   retried STORE's own row, a GET's value) was maybe committed that way
//!   by someone else. Before it is answered, a *barrier* commits after the
//!   read: a transaction that writes WAL and so, like any commit, waits
//!   for the synchronous standby; the standby confirms WAL in order, so a
//!   barrier that commits without a warning proves every earlier commit
//!   as durable as its own (`Sql::barrier`; `look_up` carries its own).
//!   Without a synchronous standby named the barrier does nothing: a row
//!   committed with `synchronous_commit` on was flushed locally before
//!   anyone could see it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use tokio_postgres::error::Severity;
use tokio_postgres::{AsyncMessage, Client, Statement};

use super::sql::Sql;
use super::target::{ConnectError, Credentials, Target};

/// Why a job whose commit was acknowledged with a warning is tried again
/// (for the log; once out of time its requests get `ERROR storage
/// unavailable`, as for any fault).
pub const UNCONFIRMED: &str = "a commit was not confirmed durable (PostgreSQL warned)";

/// The `WARNING`s one connection has received.
#[derive(Debug, Clone, Default)]
pub struct Warnings(Arc<AtomicU64>);

impl Warnings {
    /// The count so far: take it before a job's statements.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Whether a warning arrived since `count` was taken.
    pub fn since(&self, count: u64) -> bool {
        self.count() != count
    }

    fn saw(&self, notice: &tokio_postgres::error::DbError) {
        let warning = match notice.parsed_severity() {
            Some(severity) => severity == Severity::Warning,
            // Servers before 9.6 send only the translated severity.
            None => notice.severity() != "NOTICE" && notice.severity() != "INFO",
        };
        // The server's text (a trigger's RAISE may carry any bytes),
        // escaped so that it stays part of one log line.
        let escape = crate::validator::escape_controls;
        let detail = escape(notice.detail().unwrap_or(""));
        let message = escape(notice.message());
        if !warning {
            log::debug!(
                "postgres: {}: {message} {detail}",
                escape(notice.severity())
            );
            return;
        }
        self.0.fetch_add(1, Ordering::AcqRel);
        log::warn!(
            "postgres: WARNING: {message} {detail} (the statement's commit counts as not known to be durable)"
        );
    }
}

/// A connection for the pool, its driver counting the warnings it sees.
pub async fn connect(
    target: &Target,
    credentials: &Credentials,
) -> Result<(Client, Warnings), ConnectError> {
    let (client, mut connection) = target.connect_raw(credentials).await?;
    let warnings = Warnings::default();
    let seen = warnings.clone();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notice(notice)) => seen.saw(&notice),
                Ok(_) => {}
                Err(err) => {
                    log::debug!("postgres: connection ended: {}", super::describe(&err));
                    return;
                }
            }
        }
    });
    Ok((client, warnings))
}

/// A pooled connection's means to prove durability.
pub struct Durability {
    pub warnings: Warnings,
    barrier: Statement,
}

impl Durability {
    pub async fn prepare(
        client: &Client,
        warnings: Warnings,
        sql: &Sql,
    ) -> Result<Durability, tokio_postgres::Error> {
        let barrier = client.prepare(&sql.barrier).await?;
        Ok(Durability { warnings, barrier })
    }

    /// Commits a barrier when `needed` (else returns at once). Pipelined
    /// after the statements whose reads it must cover: sent after them on
    /// the same connection, it runs after them.
    pub async fn barrier(
        &self,
        client: &Client,
        needed: bool,
    ) -> Result<(), tokio_postgres::Error> {
        if needed {
            client.query(&self.barrier, &[]).await?;
        }
        Ok(())
    }
}
