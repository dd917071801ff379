//! The jobs that talk SQL: each runs one [`Job`] of the state machine on
//! a pooled connection and hands back its [`Done`], typed rows or the
//! reason there are none. What the rows mean for the requests is the
//! machine's business (state.rs); a job only asks and reads.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::{Duration, Instant};

use super::messages::{
    AcquireRow, Done, InsertArgs, InsertRow, Job, ReadRows, Renewal, Rows, Work, WriteArgs,
    WriteRows,
};
use crate::storage::postgres::describe;
use crate::storage::postgres::durability::UNCONFIRMED;
use crate::storage::postgres::pool::{Conn, Pool, Pooled};
use crate::storage::postgres::replication::{self, Replication};
use crate::storage::postgres::sql::Sql;

/// Lapsed reservation rows one renewal job deletes at most.
const SWEEP_ROWS: i64 = 1000;

/// What every job needs: the pool, the statements' table names and who
/// this front-end is. Cheap to clone (one per job).
#[derive(Clone)]
pub(super) struct Runner {
    pub pool: Pool,
    pub sql: Arc<Sql>,
    pub owner: Arc<str>,
}

impl Runner {
    /// Runs `job` within its limit.
    pub async fn run(self, job: Job) -> Done {
        let started = Instant::now();
        let Job { id, limit, work } = job;
        let (sql, owner) = (&*self.sql, &*self.owner);
        let result = match work {
            Work::Read { names } => {
                let names = &names;
                with_connection(
                    &self.pool,
                    limit,
                    |conn| async move { read(&conn, names).await },
                )
                .await
                .map(Rows::Read)
            }
            Work::Write(args) => {
                let args = &args;
                with_connection(&self.pool, limit, |conn| async move {
                    write(&conn, sql, owner, args).await
                })
                .await
                .map(Rows::Write)
            }
            Work::Renew { leases, lease_secs } => {
                let leases = &leases;
                let renewed = with_connection(&self.pool, limit, |conn| async move {
                    renew(&conn, sql, owner, leases, lease_secs).await
                })
                .await;
                match renewed {
                    Err(reason) => {
                        log::debug!("postgres: renewing reservations failed: {reason}");
                        Err(reason)
                    }
                    Ok(replication) => {
                        // A connection of its own: a check that hangs (a
                        // stalled standby) is abandoned with it.
                        let left = limit.saturating_sub(started.elapsed());
                        let writes = with_connection(&self.pool, left, |conn| check(conn, sql))
                            .await
                            .and_then(|warned| match warned {
                                true => Err(UNCONFIRMED.to_string()),
                                false => Ok(()),
                            });
                        Ok(Rows::Renewed(Renewal {
                            writes,
                            replication: Some(replication),
                        }))
                    }
                }
            }
        };
        Done {
            id,
            took: started.elapsed(),
            result,
        }
    }
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

/// One read job: the rows of `names`, and whether the statement's commit
/// drew a warning (then they are not known to be durable).
async fn read(conn: &Conn, names: &[Bytes]) -> Result<ReadRows, tokio_postgres::Error> {
    let names: Vec<&[u8]> = names.iter().map(|n| &n[..]).collect();
    let warnings = conn.durability.warnings.count();
    let rows = conn.client.query(&conn.look_up, &[&names]).await?;
    Ok(ReadRows {
        found: rows.iter().map(name_and_value).collect::<Result<_, _>>()?,
        unconfirmed: conn.durability.warnings.since(warnings),
    })
}

/// A looked-up row. `try_get`: a row jnhpd cannot read (a NULL value put
/// there by hand) fails the read with an error instead of panicking.
fn name_and_value(row: &tokio_postgres::Row) -> Result<(Bytes, Bytes), tokio_postgres::Error> {
    let name: &[u8] = row.try_get(0)?;
    let value: &[u8] = row.try_get(1)?;
    Ok((Bytes::copy_from_slice(name), Bytes::copy_from_slice(value)))
}

/// One renewal: extends `leases`, sweeps lapsed rows, and reads the
/// replication state (replication.rs; its failure, e.g. a function
/// revoked, is reported, not fatal).
async fn renew(
    conn: &Conn,
    sql: &Sql,
    owner: &str,
    leases: &[i64],
    lease_secs: f64,
) -> Result<Result<Replication, String>, tokio_postgres::Error> {
    if !leases.is_empty() {
        conn.client
            .execute(&conn.renew, &[&leases, &owner, &lease_secs])
            .await?;
    }
    sweep(conn, sql).await?;
    Ok(replication::query(&conn.client)
        .await
        .map_err(|e| describe(&e)))
}

/// Commits `Sql::check`, which waits for the synchronous standby as a
/// STORE's commit would: whether writes commit durably now. Returns
/// whether a warning came with the commit (a cancelled wait: not
/// durable).
async fn check(conn: Arc<Pooled>, sql: &Sql) -> Result<bool, tokio_postgres::Error> {
    let warnings = conn.durability.warnings.count();
    conn.client.batch_execute(&sql.check).await?;
    Ok(conn.durability.warnings.since(warnings))
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

/// One write job: releases, plain STOREs, validated STOREs and
/// reservations as four statements pipelined on one connection (one round
/// trip); then, only for STOREs that were not inserted or names found
/// taken, one more to tell taken from waiting (and a retried STORE's own
/// row from another's) and to prove what was read durable.
async fn write(
    conn: &Conn,
    sql: &Sql,
    owner: &str,
    args: &WriteArgs,
) -> Result<WriteRows, tokio_postgres::Error> {
    let WriteArgs {
        plain,
        leased,
        acquire_names,
        acquire_leases,
        releases,
        lease_secs,
    } = args;
    let warnings = conn.durability.warnings.count();
    let client = &conn.client;
    let release = async {
        if releases.is_empty() {
            return Ok(Vec::new());
        }
        client
            .query(&conn.release, &[releases, &owner, &sql.channel])
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
                &[acquire_names, acquire_leases, &owner, lease_secs],
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
    let proof = needs_proof(&rows) || !unclassified.0.is_empty() || !unread.0.is_empty();
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

/// Whether the first round found rows rather than wrote them: another's
/// (`RARGH!`), or a retried STORE's own (`W00T!`). Either may be a commit
/// whose wait for the standby was cancelled: a barrier after reading them
/// proves them durable before they are answered.
fn needs_proof(rows: &WriteRows) -> bool {
    rows.inserts.values().any(|row| row.free && !row.stored)
        || rows.acquires.values().any(|row| row.taken)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(names: &[&str], retried: &[bool]) -> InsertArgs {
        let mut args = InsertArgs::default();
        for (i, name) in names.iter().enumerate() {
            args.names.push(name.as_bytes().to_vec());
            args.values.push(b"v".to_vec());
            args.leases.push(Some(i as i64 + 100));
            args.write_ids.push(i as i64 + 1);
            args.retried.push(retried[i]);
        }
        args
    }

    fn row(stored: bool, free: bool) -> InsertRow {
        InsertRow {
            stored,
            free,
            wait_secs: None,
        }
    }

    /// Plain STOREs the `insert` statement returned no row for are the
    /// ones asked about again (taken, own, or waiting).
    #[test]
    fn unclassified_are_the_plain_stores_not_inserted() {
        let plain = args(&["a", "b", "c"], &[false, true, false]);
        let mut rows = WriteRows::default();
        rows.inserts.insert(b"b".to_vec(), row(true, true));
        let (names, ids) = unclassified(&plain, &rows);
        assert_eq!(names, vec![&b"a"[..], &b"c"[..]]);
        assert_eq!(ids, vec![1, 3]);
    }

    /// Only a retried validated STORE that met a row is read back: a
    /// first attempt that met one met another's.
    #[test]
    fn read_back_is_for_retried_stores_that_met_a_row() {
        let leased = args(
            &["first", "retried", "stored", "waiting"],
            &[false, true, true, true],
        );
        let mut rows = WriteRows::default();
        rows.inserts.insert(b"first".to_vec(), row(false, true));
        rows.inserts.insert(b"retried".to_vec(), row(false, true));
        rows.inserts.insert(b"stored".to_vec(), row(true, true));
        rows.inserts.insert(b"waiting".to_vec(), row(false, false));
        let (names, ids) = unread(&leased, &rows);
        assert_eq!(names, vec![&b"retried"[..]]);
        assert_eq!(ids, vec![2]);
    }

    /// Rows found rather than written need the durability barrier; rows
    /// this job wrote do not (their own commit proved them).
    #[test]
    fn found_rows_need_the_barrier() {
        let mut rows = WriteRows::default();
        rows.inserts.insert(b"mine".to_vec(), row(true, true));
        assert!(!needs_proof(&rows));
        rows.inserts.insert(b"theirs".to_vec(), row(false, true));
        assert!(needs_proof(&rows));
        let mut rows = WriteRows::default();
        let taken = AcquireRow {
            held: false,
            taken: true,
            wait_secs: None,
        };
        rows.acquires.insert(b"r".to_vec(), taken);
        assert!(needs_proof(&rows));
    }
}
