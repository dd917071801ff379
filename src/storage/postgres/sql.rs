//! The tables and every statement jnhpd runs on them (docs/postgres.md
//! documents the layout for other tools).
//!
//! Each statement takes arrays (`unnest`), so one statement serves a whole
//! batch of STOREs or reads, whichever connections they came from.
//!
//! Every statement that locks several rows of one table locks them in
//! name order: rows are inserted in name order, and rows updated or
//! deleted are first locked by a `SELECT … ORDER BY name FOR UPDATE`.
//! Two statements that share rows (two front-ends' batches, or one
//! front-end's renewal and its finalize on two pooled connections) then
//! wait for each other at most one way and cannot deadlock. A plain
//! `UPDATE`/`DELETE … = ANY(…)` would lock in whatever order its plan
//! visits rows (PostgreSQL logged `deadlock detected` between the renewal
//! and the finalize before).

/// The schema version jnhpd writes into its names table's comment and
/// refuses to start without.
pub const SCHEMA_VERSION: u32 = 1;

/// The text of every statement, for one table prefix.
#[derive(Debug, Clone)]
pub struct Sql {
    pub names: String,
    pub pending: String,
    /// The NOTIFY channel on which ended reservations are announced.
    pub channel: String,
    pub create: String,
    pub version: String,
    pub look_up: String,
    pub insert: String,
    pub classify: String,
    pub finalize: String,
    pub acquire: String,
    pub release: String,
    pub renew: String,
    pub release_all: String,
    pub sweep: String,
    pub read_back: String,
    /// A commit that waits for the synchronous standby, if one is named:
    /// it proves every commit before it as durable (durability.rs).
    pub barrier: String,
    /// A commit that writes WAL, so that it waits for the synchronous
    /// standby exactly as a STORE's would: the renewal's check that
    /// writes commit durably (engine::state, "writable").
    pub check: String,
}

impl Sql {
    /// `prefix` is checked by the config (`[a-z_][a-z0-9_]*`), so it can be
    /// part of an identifier as it is.
    pub fn new(prefix: &str) -> Sql {
        let names = format!("{prefix}_names");
        let pending = format!("{prefix}_pending");
        let channel = format!("{prefix}_released");
        let barrier = barrier(prefix);
        Sql {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {names} (
                    name bytea PRIMARY KEY,
                    value bytea NOT NULL,
                    stored_by text NOT NULL,
                    write_id bigint NOT NULL,
                    stored_at timestamptz NOT NULL DEFAULT now()
                );
                CREATE TABLE IF NOT EXISTS {pending} (
                    name bytea PRIMARY KEY,
                    owner text NOT NULL,
                    lease bigint NOT NULL,
                    expires_at timestamptz NOT NULL
                );
                COMMENT ON TABLE {names} IS 'jnhp schema {SCHEMA_VERSION}';"
            ),
            version: format!(
                "SELECT to_regclass('{names}') IS NOT NULL, to_regclass('{pending}') IS NOT NULL,
                    obj_description(to_regclass('{names}'), 'pg_class')"
            ),
            // $1 names. Rows found are answered (and cached) only as
            // durable as a commit: with a synchronous standby named, the
            // third column (an InitPlan, run once and only if a row is
            // found) writes WAL, so this statement's commit waits for the
            // standby like any commit, and so covers every commit it saw
            // (durability.rs).
            look_up: format!(
                "SELECT name, value, ({barrier}) IS NOT NULL AS barrier
                FROM {names} WHERE name = ANY($1::bytea[])"
            ),
            // STOREs without a reservation, the common case, kept lean:
            // $1 names, $2 values, $3 write ids, $4 owner. Returns the
            // names inserted; each other name was taken, or is reserved by
            // another front-end (`classify` tells which).
            insert: format!(
                "INSERT INTO {names} (name, value, stored_by, write_id)
                SELECT i.name, i.value, $4, i.write_id
                FROM unnest($1::bytea[], $2::bytea[], $3::int8[]) AS i(name, value, write_id)
                WHERE NOT EXISTS (SELECT 1 FROM {pending} p
                    WHERE p.name = i.name AND p.expires_at > now() AND p.owner <> $4)
                ORDER BY i.name
                ON CONFLICT (name) DO NOTHING
                RETURNING name"
            ),
            // The names `insert` did not insert, looked at again (a new
            // snapshot: a conflicting row is committed by now): $1 names,
            // $2 owner, $3 write ids. taken; own (the row is this STORE's,
            // written by an attempt whose answer was lost); wait_secs while
            // another front-end's reservation is live. None of them: the
            // reservation ended meanwhile, so try again.
            classify: format!(
                "SELECT i.name,
                    EXISTS (SELECT 1 FROM {names} n WHERE n.name = i.name) AS taken,
                    EXISTS (SELECT 1 FROM {names} n
                        WHERE n.name = i.name AND n.stored_by = $2 AND n.write_id = i.write_id) AS own,
                    (SELECT extract(epoch FROM p.expires_at - now())::float8 FROM {pending} p
                        WHERE p.name = i.name AND p.expires_at > now() AND p.owner <> $2)
                        AS wait_secs
                FROM unnest($1::bytea[], $3::int8[]) AS i(name, write_id)"
            ),
            // STOREs validated under a reservation: $1 names, $2 values,
            // $3 leases (NULL: none), $4 write ids, $5 owner, $6 channel. Per input row: stored; free (the
            // insert was allowed: with a lease, only while it is still
            // live; without, while no other front-end's is), so free and
            // not stored means taken; wait_secs while another front-end's
            // reservation is live. This front-end's reservations of the
            // names end (and are announced) either way.
            finalize: format!(
                "WITH input AS (
                    SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::int8[])
                        AS i(name, value, lease, write_id)
                ), checked AS (
                    SELECT i.*, CASE WHEN i.lease IS NULL
                        THEN NOT EXISTS (SELECT 1 FROM {pending} p
                            WHERE p.name = i.name AND p.expires_at > now() AND p.owner <> $5)
                        ELSE EXISTS (SELECT 1 FROM {pending} p
                            WHERE p.name = i.name AND p.owner = $5 AND p.lease = i.lease
                              AND p.expires_at > now())
                        END AS free
                    FROM input i
                ), inserted AS (
                    INSERT INTO {names} (name, value, stored_by, write_id)
                    SELECT name, value, $5, write_id FROM checked WHERE free ORDER BY name
                    ON CONFLICT (name) DO NOTHING
                    RETURNING name
                ), locked AS (
                    SELECT p.name FROM {pending} p
                    WHERE p.name = ANY($1::bytea[]) AND p.owner = $5
                    ORDER BY p.name FOR UPDATE
                ), released AS (
                    DELETE FROM {pending} p USING locked l
                    WHERE p.name = l.name
                    RETURNING p.name
                )
                SELECT c.name,
                    EXISTS (SELECT 1 FROM inserted s WHERE s.name = c.name) AS stored,
                    c.free,
                    (SELECT extract(epoch FROM p.expires_at - now())::float8 FROM {pending} p
                        WHERE p.name = c.name AND p.expires_at > now() AND p.owner <> $5)
                        AS wait_secs,
                    (SELECT count(pg_notify($6, encode(r.name, 'hex'))) FROM released r
                        WHERE r.name = c.name) AS notified
                FROM checked c"
            ),
            // $1 names, $2 leases, $3 owner, $4 lease seconds. A lapsed
            // reservation is taken over, and so is one of this front-end's
            // own (left by an attempt whose answer was lost: a front-end
            // reserves a name once at a time, so it is not in use).
            acquire: format!(
                "WITH input AS (
                    SELECT * FROM unnest($1::bytea[], $2::int8[]) AS i(name, lease)
                ), checked AS (
                    SELECT i.*, EXISTS (SELECT 1 FROM {names} n WHERE n.name = i.name) AS taken
                    FROM input i
                ), acquired AS (
                    INSERT INTO {pending} AS p (name, owner, lease, expires_at)
                    SELECT name, $3, lease, now() + make_interval(secs => $4)
                    FROM checked WHERE NOT taken ORDER BY name
                    ON CONFLICT (name) DO UPDATE
                        SET owner = EXCLUDED.owner, lease = EXCLUDED.lease,
                            expires_at = EXCLUDED.expires_at
                        WHERE p.expires_at <= now() OR p.owner = EXCLUDED.owner
                    RETURNING p.name
                )
                SELECT c.name,
                    EXISTS (SELECT 1 FROM acquired a WHERE a.name = c.name) AS held,
                    c.taken,
                    (SELECT extract(epoch FROM p.expires_at - now())::float8 FROM {pending} p
                        WHERE p.name = c.name) AS wait_secs
                FROM checked c"
            ),
            // $1 leases, $2 owner, $3 channel.
            release: format!(
                "WITH locked AS (
                    SELECT name FROM {pending} WHERE owner = $2 AND lease = ANY($1::int8[])
                    ORDER BY name FOR UPDATE
                ), released AS (
                    DELETE FROM {pending} p USING locked l WHERE p.name = l.name
                    RETURNING p.name
                )
                SELECT count(pg_notify($3, encode(name, 'hex'))) FROM released"
            ),
            // $1 leases, $2 owner, $3 lease seconds. Only live ones: a
            // lapsed reservation stays lapsed.
            renew: format!(
                "WITH locked AS (
                    SELECT name FROM {pending}
                    WHERE owner = $2 AND lease = ANY($1::int8[]) AND expires_at > now()
                    ORDER BY name FOR UPDATE
                )
                UPDATE {pending} p SET expires_at = now() + make_interval(secs => $3)
                FROM locked l WHERE p.name = l.name"
            ),
            // $1 owner, $2 channel: every reservation this front-end still
            // has, at shutdown (whatever its engine lost track of: a lease
            // whose acquiring statement's answer was lost, a release still
            // queued).
            release_all: format!(
                "WITH locked AS (
                    SELECT name FROM {pending} WHERE owner = $1
                    ORDER BY name FOR UPDATE
                ), released AS (
                    DELETE FROM {pending} p USING locked l WHERE p.name = l.name
                    RETURNING p.name
                )
                SELECT count(pg_notify($2, encode(name, 'hex'))) FROM released"
            ),
            // $1 rows at most. Lapsed reservations of any front-end (one
            // that was killed leaves its rows behind): a lapsed row means
            // nothing any more (every statement ignores it or takes it
            // over), so deleting it changes no outcome. Rows another
            // statement has locked are skipped, not waited for, so the
            // sweep never takes part in a lock wait, let alone a deadlock.
            sweep: format!(
                "WITH lapsed AS (
                    SELECT name FROM {pending} WHERE expires_at <= now()
                    ORDER BY name LIMIT $1 FOR UPDATE SKIP LOCKED
                )
                DELETE FROM {pending} p USING lapsed l WHERE p.name = l.name"
            ),
            // $1 names, $2 owner, $3 write ids: which of these rows are
            // this front-end's own (a write retried after a lost answer).
            read_back: format!(
                "SELECT name FROM {names}
                WHERE name = ANY($1::bytea[]) AND stored_by = $2 AND write_id = ANY($3::int8[])"
            ),
            barrier,
            check: format!("SELECT pg_logical_emit_message(true, '{prefix}_check', '')"),
            names,
            pending,
            channel,
        }
    }

    /// The comment a names table of this version carries.
    pub fn version_comment() -> String {
        format!("jnhp schema {SCHEMA_VERSION}")
    }
}

/// One row when a synchronous standby is named (then the statement's
/// transaction has written WAL: a transactional logical message, which any
/// role may emit and no table keeps), none otherwise (then nothing is
/// written and nothing waited for). `txid_current()` would not do: a
/// transaction that assigned an id but wrote nothing else commits without
/// waiting for the standby.
fn barrier(prefix: &str) -> String {
    format!(
        "SELECT pg_logical_emit_message(true, '{prefix}_barrier', '')
        WHERE current_setting('synchronous_standby_names') <> ''"
    )
}
