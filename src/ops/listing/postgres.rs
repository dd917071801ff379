//! `GET /names` on a PostgreSQL namespace (docs/observability.md,
//! "Listing names").
//!
//! Rows keep no order of storing (`stored_at` is each front-end's commit
//! clock, neither unique nor in commit order), so names are listed in
//! name order with a keyset cursor: the last name listed, as `k` and its
//! hex. A page is one index range scan of the primary key, bounded by the
//! limit and, in the statement itself, by the bytes of the names, so
//! neither jnhpd nor PostgreSQL holds more than a page. Rows are answered
//! only as durable as a `GET`'s: the statement carries the barrier the
//! engine's look-ups carry (durability.rs), and a page whose commit drew
//! a warning is refused (503).
//!
//! The listing has a connection of its own, made when first needed and
//! again after a failure, so it never takes one from the engine's pool.

use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::{ListError, PAGE_BYTES, Page, Query, name_line};
use crate::storage::postgres::durability::{self, Warnings};
use crate::storage::postgres::sql::Sql;
use crate::storage::postgres::target::{ConnectError, Credentials, Target};
use crate::storage::postgres::{self as pg, PgError, PostgresSettings};

/// Lists the names of one namespace.
pub struct PgLister {
    target: Target,
    credentials: Credentials,
    statement: String,
    timeout: std::time::Duration,
    conn: Mutex<Option<(Client, Warnings)>>,
}

impl PgLister {
    pub fn new(settings: &PostgresSettings, credentials: Credentials) -> Result<PgLister, PgError> {
        let target = Target::parse(&settings.url)?;
        let sql = Sql::new(&settings.table_prefix);
        // $1 after (exclusive), $2 prefix (inclusive lower bound), $3 the
        // first byte string past every name with the prefix (NULL: none),
        // $4 limit, $5 bytes of names (the page ends with the name that
        // crosses it). `rows` counts what the limit let through, so the
        // page knows whether the range goes on.
        let statement = format!(
            "SELECT name, ({barrier}) IS NOT NULL AS barrier, rows FROM (
                SELECT name, count(*) OVER () AS rows,
                    sum(octet_length(name)) OVER (ORDER BY name) - octet_length(name) AS before
                FROM (SELECT name FROM {names}
                    WHERE name > $1::bytea AND name >= $2::bytea
                      AND ($3::bytea IS NULL OR name < $3::bytea)
                    ORDER BY name LIMIT $4::int8) page
            ) sized WHERE before < $5::int8 ORDER BY name",
            barrier = sql.barrier,
            names = sql.names,
        );
        Ok(PgLister {
            target,
            credentials,
            statement,
            timeout: settings.request_timeout,
            conn: Mutex::new(None),
        })
    }

    /// One page in name order after `query.after`.
    pub async fn page(&self, query: &Query) -> Result<Page, ListError> {
        let after = parse_cursor(&query.after).map_err(ListError::Bad)?;
        let upper = successor(&query.prefix);
        let limit = query.limit as i64;
        let bytes = (PAGE_BYTES / 2) as i64;
        let mut conn = self.conn.lock().await;
        let run = async {
            if conn.is_none() {
                *conn = Some(durability::connect(&self.target, &self.credentials).await?);
            }
            let Some((client, warnings)) = conn.as_ref() else {
                unreachable!("connected just above");
            };
            let before = warnings.count();
            let rows = client
                .query(
                    &self.statement,
                    &[&after, &query.prefix, &upper, &limit, &bytes],
                )
                .await
                .map_err(ConnectError::from)?;
            Ok::<_, ConnectError>((rows, warnings.since(before)))
        };
        let (rows, warned) = match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                *conn = None;
                return Err(ListError::Unavailable(format!("postgres: {e}")));
            }
            Err(_) => {
                *conn = None;
                return Err(ListError::Unavailable(format!(
                    "postgres: no answer within {:?}",
                    self.timeout
                )));
            }
        };
        if warned {
            return Err(ListError::Unavailable(durability::UNCONFIRMED.into()));
        }
        let mut page = Page {
            body: Vec::new(),
            names: 0,
            next: query.after.clone(),
            end: true,
        };
        let mut last: Option<Vec<u8>> = None;
        for row in &rows {
            let name: Vec<u8> = row
                .try_get(0)
                .map_err(|e| ListError::Unavailable(format!("postgres: {e}")))?;
            let counted: i64 = row
                .try_get(2)
                .map_err(|e| ListError::Unavailable(format!("postgres: {e}")))?;
            page.end = counted < limit && rows.len() as i64 == counted;
            name_line(&name, &mut page.body);
            page.names += 1;
            last = Some(name);
        }
        if let Some(last) = last {
            page.next = format!("k{}", pg::to_hex(&last));
        }
        Ok(page)
    }
}

/// The cursor's name: `k` and the name's hex; empty or `0`: the start.
fn parse_cursor(text: &str) -> Result<Vec<u8>, String> {
    if text.is_empty() || text == "0" {
        return Ok(Vec::new());
    }
    let bad = || format!("cursor {text:?} is not one this listing gave (k and a name in hex)");
    let hex = text.strip_prefix('k').ok_or_else(bad)?;
    pg::from_hex(hex)
        .filter(|name| !name.is_empty())
        .ok_or_else(bad)
}

/// The least byte string greater than every string that starts with
/// `prefix`, if there is one (none for an empty prefix or all `ff`).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < 0xff {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_end_where_the_prefix_does() {
        assert_eq!(successor(b""), None);
        assert_eq!(successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(successor(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(successor(b"\xff"), None);
    }

    #[test]
    fn cursors_are_hex_names() {
        assert_eq!(parse_cursor("k61ff"), Ok(b"a\xff".to_vec()));
        assert_eq!(parse_cursor(""), Ok(vec![]));
        for bad in ["k", "k6", "61", "kzz", "16-20-00000000"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
        assert_eq!(super::pg::to_hex(b"a\xff"), "61ff");
    }
}
