//! The columns jnhpd needs in its tables, checked against PostgreSQL's
//! catalog at start and on every new pooled connection (so also after
//! each reconnect).
//!
//! Why: a statement prepared on a table whose column changed type returns
//! values of the new type, and reading them as the old one is a bug
//! waiting to happen (it panicked a task: `ALTER TABLE jnhp_names ALTER
//! value TYPE text`). Checked first, such a table is one clear error that
//! names table, column and types: jnhpd refuses to start on it, and while
//! serving, every connection made after the change fails with that error,
//! so requests get `ERROR storage unavailable` and `/readyz` says not
//! ready until the table is put back. A dropped table is found the same
//! way. Connections made before the change fail by themselves: PostgreSQL
//! refuses to run a prepared statement whose result type changed.

use std::collections::HashMap;

use super::sql::Sql;

/// One column as jnhpd needs it.
struct Needed {
    table: fn(&Sql) -> &str,
    column: &'static str,
    /// As `format_type` spells it.
    ty: &'static str,
    /// jnhpd reads it back, so a NULL in it would be a value it cannot
    /// answer.
    not_null: bool,
}

/// The columns of postgres.md's layout that jnhpd reads or writes
/// (`stored_at` only has a default, so it is not required).
const NEEDED: &[Needed] = &[
    Needed {
        table: names,
        column: "name",
        ty: "bytea",
        not_null: true,
    },
    Needed {
        table: names,
        column: "value",
        ty: "bytea",
        not_null: true,
    },
    Needed {
        table: names,
        column: "stored_by",
        ty: "text",
        not_null: false,
    },
    Needed {
        table: names,
        column: "write_id",
        ty: "bigint",
        not_null: false,
    },
    Needed {
        table: pending,
        column: "name",
        ty: "bytea",
        not_null: true,
    },
    Needed {
        table: pending,
        column: "owner",
        ty: "text",
        not_null: false,
    },
    Needed {
        table: pending,
        column: "lease",
        ty: "bigint",
        not_null: false,
    },
    Needed {
        table: pending,
        column: "expires_at",
        ty: "timestamp with time zone",
        not_null: false,
    },
];

fn names(sql: &Sql) -> &str {
    &sql.names
}

fn pending(sql: &Sql) -> &str {
    &sql.pending
}

/// Every column of both tables: table, column, type, NOT NULL. A missing
/// table has none.
const COLUMNS: &str = "SELECT c.relname::text, a.attname::text,
        format_type(a.atttypid, a.atttypmod), a.attnotnull
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    WHERE a.attrelid IN (to_regclass($1::text), to_regclass($2::text))
      AND a.attnum > 0 AND NOT a.attisdropped";

/// Why a connection is not fit to serve: PostgreSQL's error, or tables
/// that are not as jnhpd needs them.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{}", super::describe(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Connect(#[from] super::target::ConnectError),
    #[error("{0}")]
    Mismatch(String),
    /// The server is on an older timeline than one a connection of this
    /// front-end has seen: a primary that was failed over and not fenced
    /// yet (frozen, then thawed). Its rows may lack acknowledged ones.
    #[error(
        "the server is on timeline {timeline}, behind timeline {newest} seen since: an old primary, failed over"
    )]
    OldPrimary {
        /// Its timeline.
        timeline: i64,
        /// The newest seen.
        newest: i64,
    },
}

/// Checks that both tables exist with the columns jnhpd needs.
pub async fn check_columns(client: &tokio_postgres::Client, sql: &Sql) -> Result<(), SchemaError> {
    let rows = client.query(COLUMNS, &[&sql.names, &sql.pending]).await?;
    let mut found: HashMap<(String, String), (String, bool)> = HashMap::new();
    for row in rows {
        found.insert(
            (row.try_get(0)?, row.try_get(1)?),
            (row.try_get(2)?, row.try_get(3)?),
        );
    }
    let mut wrong = Vec::new();
    for table in [&sql.names, &sql.pending] {
        if !found.keys().any(|(t, _)| t == table) {
            wrong.push(format!("table {table} does not exist"));
        }
    }
    if wrong.is_empty() {
        for needed in NEEDED {
            let table = (needed.table)(sql);
            match found.get(&(table.to_string(), needed.column.to_string())) {
                None => wrong.push(format!(
                    "table {table} has no column {} ({} needed)",
                    needed.column, needed.ty
                )),
                Some((ty, _)) if ty != needed.ty => wrong.push(format!(
                    "column {table}.{} is {ty}; jnhpd needs {}",
                    needed.column, needed.ty
                )),
                Some((_, false)) if needed.not_null => {
                    wrong.push(format!("column {table}.{} must be NOT NULL", needed.column))
                }
                Some(_) => {}
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Mismatch(format!(
            "{} (see Tables in postgres.md)",
            wrong.join("; ")
        )))
    }
}
