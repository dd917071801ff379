//! A PostgreSQL front-end's life: start-up before the database answers,
//! reservations across a shutdown, lapsed rows, lock order under load,
//! tables changed behind its back. Real PostgreSQL servers
//! (tests/common/pg.rs), real jnhpd processes, real signals.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, Server, process_validator};
use nix::sys::signal::Signal;
use pg::Postgres;

/// A front-end's config on `url` with `lease_secs`, plus `rest`.
fn config(url: &str, lease_secs: u64, rest: &str) -> String {
    format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{url}\"\n\
         lease_secs = {lease_secs}\nrequest_timeout_ms = 3000\nconnect_timeout_secs = 10\n{rest}"
    )
}

/// Polls `check` every 20 ms until it holds; panics after [`PATIENCE`].
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pending_rows(pg: &Postgres, db: &str) -> usize {
    pg.psql(db, "SELECT count(*) FROM jnhp_pending")
        .parse()
        .unwrap()
}

/// A validator that blocks until a `release` file appears in `dir`.
fn blocking_validator(dir: &Path) -> std::path::PathBuf {
    common::script(
        dir,
        "blocking",
        &format!(
            "while [ ! -e {}/release ]; do sleep 0.05; done\necho JNHP:1",
            dir.display()
        ),
    )
}

/// Issue 21, item 4: SIGTERM while 30 STOREs are being validated under
/// 15 s leases. Past the grace period the validations are abandoned; every
/// reservation is released before jnhpd exits (none left in
/// `jnhp_pending`), and another front-end's STORE of such a name is
/// answered at once, not after the lease.
#[test]
fn sigterm_releases_every_reservation() {
    let pg = Postgres::start();
    let db = pg.create_db("leases");
    let dir = tempfile::tempdir().unwrap();
    let program = blocking_validator(dir.path());
    let mut a = Server::start_in(
        dir,
        &config(
            &pg.url(&db),
            15,
            &format!(
                "[server]\nshutdown_grace_secs = 1\n{}",
                process_validator(&program, "timeout_ms = 60000\nmax_concurrent = 64")
            ),
        ),
    );
    let clients: Vec<Client> = (0..30)
        .map(|i| {
            let mut c = a.connect();
            c.send(format!("STORE n{i} v\r\n").as_bytes());
            c
        })
        .collect();
    eventually("30 reservations", || pending_rows(&pg, &db) == 30);
    a.signal(Signal::SIGTERM);
    assert_eq!(a.wait_exit().code(), Some(0), "{}", a.log.all());
    drop(clients);
    assert_eq!(pending_rows(&pg, &db), 0, "{}", a.log.all());
    let b = Server::start(&config(&pg.url(&db), 15, ""));
    let started = Instant::now();
    assert_eq!(b.connect().ask("STORE n7 from-b"), "W00T!");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?} for a released name",
        started.elapsed()
    );
}

/// Issue 21, item 16: rows of reservations that lapsed (a killed
/// front-end's) are deleted by any running front-end, a bounded number per
/// renewal; live reservations stay.
#[test]
fn lapsed_reservation_rows_are_deleted() {
    let pg = Postgres::start();
    let db = pg.create_db("sweep");
    let front = Server::start(&config(&pg.url(&db), 1, ""));
    pg.psql(
        &db,
        "INSERT INTO jnhp_pending (name, owner, lease, expires_at)
         SELECT convert_to('gone' || i, 'UTF8'), 'gone/1/0', i, now() - interval '1 hour'
         FROM generate_series(1, 3432) AS i;
         INSERT INTO jnhp_pending VALUES ('live'::bytea, 'other/2/0', 1, now() + interval '1 hour')",
    );
    eventually("the lapsed rows are deleted", || {
        pending_rows(&pg, &db) == 1
    });
    assert_eq!(
        pg.psql(&db, "SELECT owner FROM jnhp_pending"),
        "other/2/0",
        "a live reservation was deleted"
    );
    front.log.wait_for("deleted 1000 lapsed reservations");
}

/// A helper validator that allows every value after a random 0-200 ms,
/// answering out of order (so STOREs finish in another order than they
/// reserved their names).
fn shuffling_helper(dir: &Path) -> std::path::PathBuf {
    common::script(
        dir,
        "shuffle",
        "exec python3 -u -c '
import random, sys, threading
lock = threading.Lock()
def answer(rid):
    with lock:
        sys.stdout.write(rid + \" JNHP:1\\n\")
        sys.stdout.flush()
for line in sys.stdin:
    rid = line.split(\" \", 1)[0]
    threading.Timer(random.random() / 5, answer, [rid]).start()
'",
    )
}

/// Issue 21, item 6: one front-end renewing its leases (every third of a
/// 1 s lease) while validated STOREs finalize on its other pooled
/// connections: PostgreSQL never reports a deadlock (`40P01`, "deadlock
/// detected" in its log). Before, the renewal's `UPDATE … = ANY` and the
/// finalize's `DELETE … USING` locked shared rows in different orders.
#[test]
fn renewals_and_finalizes_never_deadlock() {
    let pg = Postgres::start_with(&["deadlock_timeout=50ms"]);
    let db = pg.create_db("locks");
    let dir = tempfile::tempdir().unwrap();
    let helper = shuffling_helper(dir.path());
    let front = Server::start_in(
        dir,
        &config(
            &pg.url(&db),
            1,
            &format!(
                "[[validator]]\nkind = \"helper\"\ncommand = [\"{}\"]\nchildren = 2\nconcurrency = 64\n",
                helper.display()
            ),
        ),
    );
    // Each row a statement updates or deletes costs a millisecond (a
    // trigger sleeps), as on a busy server: a statement then holds the
    // locks it took for a while, which widens the race windows from
    // microseconds to milliseconds without changing what is locked when.
    pg.psql(
        &db,
        "CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.001);
         IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW; END $$;
         CREATE TRIGGER slow_row BEFORE UPDATE OR DELETE ON jnhp_pending
         FOR EACH ROW EXECUTE FUNCTION slow_row();
         INSERT INTO jnhp_pending (name, owner, lease, expires_at)
         SELECT convert_to('pad' || i, 'UTF8'), 'gone/1/0', i, now() + interval '1 hour'
         FROM generate_series(1, 20000) AS i;
         ANALYZE jnhp_pending",
    );
    let addr: SocketAddr = front.addr();
    let until = Instant::now() + Duration::from_secs(8);
    let threads: Vec<_> = (0..48)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut i = 0;
                while Instant::now() < until {
                    assert_eq!(client.ask(&format!("STORE c{c}-{i} v")), "W00T!");
                    i += 1;
                }
                i
            })
        })
        .collect();
    let stored: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(stored > 100, "only {stored} STOREs: no load");
    let log = pg.server_log();
    assert!(!log.contains("deadlock detected"), "{log}");
}

/// The admin listener's `/readyz` status.
fn ready(admin: SocketAddr) -> u16 {
    common::get(admin, "/readyz").0
}

/// Issue 21, item 11: a column's type changed under a running front-end
/// (`ALTER TABLE jnhp_names ALTER value TYPE text`). No task panics; reads
/// of uncached names get `ERROR storage unavailable`, `/readyz` says not
/// ready, and the log names the column and both types. With the table put
/// back, it serves again by itself. A new front-end refuses to start on the
/// changed table with the same words.
#[test]
fn a_changed_column_type_is_a_clear_error_not_a_panic() {
    let pg = Postgres::start();
    let db = pg.create_db("altered");
    let front = Server::start(&config(
        &pg.url(&db),
        15,
        "[admin]\nlisten = [\"127.0.0.1:0\"]\n",
    ));
    let admin = common::admin_addr(&front);
    pg.psql(
        &db,
        "INSERT INTO jnhp_names (name, value, stored_by, write_id) VALUES ('x', 'vx', 'psql', 1)",
    );
    pg.psql(
        &db,
        "ALTER TABLE jnhp_names ALTER value TYPE text USING encode(value, 'escape')",
    );
    let mut c = front.connect();
    assert_eq!(c.ask("GET x"), "ERROR storage unavailable");
    eventually("not ready", || ready(admin) == 503);
    front
        .log
        .wait_for("column jnhp_names.value is text; jnhpd needs bytea");
    assert!(!front.log.all().contains("panicked"), "{}", front.log.all());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(&path, config(&pg.url(&db), 15, "")).unwrap();
    let (code, out) = common::start_fails(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("column jnhp_names.value is text; jnhpd needs bytea"),
        "{out}"
    );

    pg.psql(
        &db,
        "ALTER TABLE jnhp_names ALTER value TYPE bytea USING convert_to(value, 'UTF8')",
    );
    eventually("serving again", || c.ask("GET x") == "vx");
    eventually("ready again", || ready(admin) == 200);
    assert!(!front.log.all().contains("panicked"), "{}", front.log.all());
}

/// Issue 21, item 11: the names table dropped under a running front-end:
/// a clear error in the log, not ready, no panic.
#[test]
fn a_dropped_table_is_a_clear_error_not_a_panic() {
    let pg = Postgres::start();
    let db = pg.create_db("dropped");
    let front = Server::start(&config(
        &pg.url(&db),
        15,
        "[admin]\nlisten = [\"127.0.0.1:0\"]\n",
    ));
    let admin = common::admin_addr(&front);
    let mut c = front.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    pg.psql(&db, "DROP TABLE jnhp_names");
    assert_eq!(c.ask("GET b"), "ERROR storage unavailable");
    assert_eq!(c.ask("STORE b 2"), "ERROR storage unavailable");
    eventually("not ready", || ready(admin) == 503);
    front.log.wait_for("table jnhp_names does not exist");
    assert!(!front.log.all().contains("panicked"), "{}", front.log.all());
}
