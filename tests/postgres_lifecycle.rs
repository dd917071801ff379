//! A PostgreSQL front-end's life: start-up before the database answers,
//! reservations across a shutdown, lapsed rows, lock order under load,
//! tables changed behind its back. Real PostgreSQL servers
//! (tests/common/pg.rs), real jnhpd processes, real signals.

mod common;
#[path = "common/leases.rs"]
mod leases;
#[path = "common/pg.rs"]
mod pg;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Client, Server, process_validator};
use leases::{blocking_validator, config, eventually, pending_rows, ready, shuffling_helper};
use nix::sys::signal::Signal;
use pg::Postgres;

/// Issue 21, item 4: SIGTERM while 30 STOREs are being validated under
/// 15 s leases. Past the grace period the validations are abandoned; every
/// reservation is released before jnhpd exits (none left in
/// `jnhp_pending`), and another front-end's STORE of such a name is
/// answered at once, not after the lease.
#[test]
fn sigterm_releases_every_reservation() {
    require!(Postgres);
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
    require!(Postgres);
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

/// Issue 21, item 6: one front-end renewing its leases (every third of a
/// 1 s lease) while validated STOREs finalize on its other pooled
/// connections: PostgreSQL never reports a deadlock (`40P01`, "deadlock
/// detected" in its log). Before, the renewal's `UPDATE … = ANY` and the
/// finalize's `DELETE … USING` locked shared rows in different orders.
#[test]
fn renewals_and_finalizes_never_deadlock() {
    require!(Postgres, Python3);
    let pg = Postgres::start_with(&["deadlock_timeout=50ms"]);
    let db = pg.create_db("locks");
    let dir = tempfile::tempdir().unwrap();
    let helper = shuffling_helper(dir.path(), 0.2);
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

/// Issue 21, item 11: a column's type changed under a running front-end
/// (`ALTER TABLE jnhp_names ALTER value TYPE text`). No task panics; reads
/// of uncached names get `ERROR storage unavailable`, `/readyz` says not
/// ready, and the log names the column and both types. With the table put
/// back, it serves again by itself. A new front-end refuses to start on the
/// changed table with the same words.
#[test]
fn a_changed_column_type_is_a_clear_error_not_a_panic() {
    require!(Postgres);
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
    require!(Postgres);
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config file in `dir` for a database that is down at start (jnhpd
/// retries for up to a minute).
fn waiting_config(dir: &Path, pg: &Postgres, db: &str) -> std::path::PathBuf {
    let path = dir.join("jnhp.toml");
    std::fs::write(
        &path,
        config(&pg.url(db), 15, "")
            .replace("connect_timeout_secs = 10", "connect_timeout_secs = 60"),
    )
    .unwrap();
    path
}

/// Issue 21, item 12, a port jnhpd binds itself: while PostgreSQL cannot
/// be reached at start, connecting to the client port is refused at once
/// (no client sits connected without a reply), the retries are logged
/// with back-off (not four lines a second), and once PostgreSQL is there
/// the port serves.
#[test]
fn the_port_refuses_clients_until_the_database_is_reached() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("early");
    pg.stop_immediate();
    let dir = tempfile::tempdir().unwrap();
    let path = waiting_config(dir.path(), &pg, &db);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", &addr.to_string()]);
    let (mut child, log) = Server::launch(cmd);
    let first = Instant::now();
    log.wait_for("cannot reach");
    let refused = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5));
    assert_eq!(
        refused.as_ref().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "connected before jnhpd could serve: {refused:?}"
    );
    // Five attempts logged: at 0.25 s, 0.5 s, 1 s, 2 s apart (0.25 s each
    // before: 1 s for five).
    eventually("five retry lines", || log.count("cannot reach") >= 5);
    assert!(
        first.elapsed() >= Duration::from_millis(3500),
        "five retry lines within {:?}:\n{}",
        first.elapsed(),
        log.all()
    );
    pg.start_again();
    log.wait_for("listening on");
    assert_eq!(Client::connect(addr).ask("STORE e 1"), "W00T!");
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 21, item 12, a socket handed over by systemd (already listening,
/// its backlog systemd's): while PostgreSQL cannot be reached at start, a
/// client is answered `ERROR storage unavailable` at once and closed; once
/// PostgreSQL is there the same socket serves.
#[test]
fn a_socket_from_systemd_answers_until_the_database_is_reached() {
    require!(Postgres);
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let pg = Postgres::start();
    let db = pg.create_db("early2");
    pg.stop_immediate();
    let dir = tempfile::tempdir().unwrap();
    let path = waiting_config(dir.path(), &pg, &db);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = std::process::Command::new("sh");
    // As systemd does: the socket at fd 3, LISTEN_PID naming the process.
    cmd.arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\" {}",
            if fd == 3 {
                String::new()
            } else {
                format!("3<&{fd} {fd}<&-")
            }
        ))
        .arg(common::bin())
        .arg("--config")
        .arg(&path);
    // SAFETY: fcntl is async-signal-safe; it only lets the listener be
    // inherited by the shell.
    unsafe {
        cmd.pre_exec(move || {
            nix::fcntl::fcntl(
                std::os::fd::BorrowedFd::borrow_raw(fd),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .map(drop)
            .map_err(std::io::Error::from)
        });
    }
    let (mut child, log) = Server::launch(cmd);
    drop(listener);
    log.wait_for("cannot reach");
    let mut early = Client::connect(addr);
    early
        .stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    early.send(b"GET x\r\n");
    assert_eq!(early.reply(), "ERROR storage unavailable");
    assert!(early.is_closed_by_server());
    pg.start_again();
    log.wait_for("listening on");
    assert_eq!(Client::connect(addr).ask("STORE s 1"), "W00T!");
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 21, item 16: a busy front-end whose PostgreSQL stopped answering
/// (a session holds an exclusive lock on the names table), with
/// `request_timeout_ms = 30000`, gets SIGTERM with a 1 s grace period. At
/// the end of the grace its STOREs are answered `ERROR storage
/// unavailable`, and it exits within the grace plus the 2 s that
/// operations.md adds for releasing reservations (plus 1 s of slack), not
/// after the request timeout (30 s before; 9 s while the store still
/// waited for the engine).
#[test]
fn a_busy_front_end_stops_within_the_documented_bound() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("stop");
    let mut front = Server::start(
        &config(&pg.url(&db), 15, "[server]\nshutdown_grace_secs = 1\n")
            .replace("request_timeout_ms = 3000", "request_timeout_ms = 30000"),
    );
    let mut c = front.connect();
    assert_eq!(c.ask("STORE warm 1"), "W00T!");
    // Holds the lock until the test ends (the server is stopped when
    // dropped, which ends the session).
    let mut psql = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(echo 'BEGIN; LOCK TABLE jnhp_names IN ACCESS EXCLUSIVE MODE;'; \
             echo \"SELECT 'locked';\"; sleep 120) | \
             $(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/psql -X -q -A -t \
             -h {} -p {} -U postgres -d {db}",
            pg.dir.display(),
            pg.port
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(psql.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    let addr = front.addr();
    let clients: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send(format!("STORE busy{i} v\r\nGET other{i}\r\n").as_bytes());
                c.read_to_end_or_reset()
            })
        })
        .collect();
    eventually("the STOREs wait on the lock", || {
        pg.psql(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        )
        .parse::<u32>()
        .unwrap()
            >= 1
    });
    let stopping = Instant::now();
    front.signal(Signal::SIGTERM);
    assert_eq!(front.wait_exit().code(), Some(0), "{}", front.log.all());
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(1 + 2 + 1),
        "stopped after {took:?}:\n{}",
        front.log.all()
    );
    for client in clients {
        let got = client.join().unwrap();
        assert!(
            got.starts_with(b"ERROR storage unavailable\r\n"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    let _ = psql.kill();
    let _ = psql.wait();
}
