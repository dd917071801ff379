//! Hostile tests of the PostgreSQL backend: leases at SIGINT, shutdown
//! with a frozen database, schema changes beyond a column's type, row
//! locks across three front-ends, memory during an outage. Real
//! PostgreSQL servers (tests/common/pg.rs), real jnhpd processes.

mod common;
#[path = "common/leases.rs"]
mod leases;
#[path = "common/pg.rs"]
mod pg;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Client, Server, process_validator};
use leases::{blocking_validator, config, eventually, pending_rows, ready, shuffling_helper};
use nix::sys::signal::Signal;
use pg::Postgres;

const ADMIN: &str = "[admin]\nlisten = [\"127.0.0.1:0\"]\n";

/// Every process of the cluster (postmaster and its children).
fn cluster_pids(pg: &Postgres) -> Vec<i32> {
    let pidfile = std::fs::read_to_string(pg.dir.join("postmaster.pid")).unwrap();
    let postmaster: i32 = pidfile.lines().next().unwrap().trim().parse().unwrap();
    let mut pids = vec![postmaster];
    pids.extend(common::children_of(postmaster).into_iter().map(|(p, _)| p));
    pids
}

/// Freezes the cluster with SIGSTOP; SIGCONT when dropped.
struct Frozen(Vec<i32>);
impl Frozen {
    fn new(pg: &Postgres) -> Frozen {
        let pids = cluster_pids(pg);
        for &p in &pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGSTOP);
        }
        Frozen(pids)
    }
}
impl Drop for Frozen {
    fn drop(&mut self) {
        for &p in &self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGCONT);
        }
    }
}

/// postgres.md, Faults, SIGTERM ("SIGTERM/SIGINT drain", operations.md):
/// SIGINT, like SIGTERM, ends with every reservation deleted, so no other
/// front-end waits them out.
#[test]
fn sigint_releases_every_reservation() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("sigint");
    let dir = tempfile::tempdir().unwrap();
    let program = blocking_validator(dir.path());
    let mut a = Server::start_in(
        dir,
        &config(
            &pg.url(&db),
            30,
            &format!(
                "[server]\nshutdown_grace_secs = 1\n{}",
                process_validator(&program, "timeout_ms = 60000\nmax_concurrent = 16")
            ),
        ),
    );
    let clients: Vec<Client> = (0..5)
        .map(|i| {
            let mut c = a.connect();
            c.send(format!("STORE n{i} v\r\n").as_bytes());
            c
        })
        .collect();
    eventually("5 leases", || pending_rows(&pg, &db) == 5);
    let t = Instant::now();
    a.signal(Signal::SIGINT);
    assert_eq!(a.wait_exit().code(), Some(0), "{}", a.log.all());
    assert!(
        t.elapsed() < Duration::from_secs(1 + 1 + 2 + 2 + 1),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(pending_rows(&pg, &db), 0, "{}", a.log.all());
    drop(clients);
}

/// operations.md, Signals and shutdown: "with PostgreSQL, up to 2 s to
/// give up the reservations still held ... A busy front-end whose
/// PostgreSQL had stopped answering exits within the grace period and
/// those 2 s". Here the database is frozen (SIGSTOP: connections open,
/// nothing answers) while validations hold leases.
#[test]
fn a_front_end_with_leases_stops_within_the_bound_when_the_database_is_frozen() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("frozen");
    let (mut a, mut clients) = four_blocked_stores(&pg, &db, "n");
    let frozen = Frozen::new(&pg);
    // Requests that need the database pile up on the frozen server.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("GET other{i}\r\nSTORE plain{i} v\r\n").as_bytes());
    }
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    a.signal(Signal::SIGTERM);
    let code = a.wait_exit().code();
    let took = t.elapsed();
    drop(frozen);
    assert_eq!(code, Some(0), "{}", a.log.all());
    // grace 1 + replies 1 + helpers 2 + reservations 2, + 1 slack
    assert!(
        took < Duration::from_secs(7),
        "stopped after {took:?}\n{}",
        a.log.all()
    );
}

/// postgres.md, Tables: "A front-end refuses to start on a <prefix>_names
/// table ... without its <prefix>_pending" — with a clear error, no panic.
#[test]
fn a_missing_pending_table_is_refused_at_start() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("nopending");
    {
        let front = Server::start(&config(&pg.url(&db), 15, ""));
        drop(front);
    }
    pg.psql(&db, "DROP TABLE jnhp_pending");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(&path, config(&pg.url(&db), 15, "")).unwrap();
    let (code, out) = common::start_fails(&path);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("jnhp_pending"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

/// postgres.md, Tables: columns checked (types, `name` and `value` NOT
/// NULL) "at start and on every new pooled connection, so also after a
/// reconnect"; a changed or missing column: ERROR storage unavailable,
/// /readyz 503, the log names the column; put back, it serves again by
/// itself; a new front-end refuses to start with the same words.
/// `reconnect`: the change raises no error by itself, so jnhpd's
/// backends are terminated after it (a reconnect, where the check runs).
/// `reads_need_it`: whether GETs of uncached names use what changed.
fn schema_change_while_serving(
    alter: &str,
    restore: &str,
    log_word: &str,
    validated: bool,
    reconnect: bool,
    reads_need_it: bool,
    check_start: bool,
) {
    let pg = Postgres::start();
    let db = pg.create_db("schema");
    let dir = tempfile::tempdir().unwrap();
    let program = common::script(dir.path(), "allow", "echo JNHP:1");
    let rest = if validated {
        format!("{ADMIN}{}", process_validator(&program, ""))
    } else {
        ADMIN.to_string()
    };
    let front = Server::start_in(dir, &config(&pg.url(&db), 15, &rest));
    let admin = common::admin_addr(&front);
    let mut c = front.connect();
    assert_eq!(c.ask("STORE before 1"), "W00T!");
    pg.psql(
        &db,
        "INSERT INTO jnhp_names (name, value, stored_by, write_id) \
         SELECT convert_to('x' || i, 'UTF8'), 'vx', 'psql', i FROM generate_series(0, 9) i",
    );
    pg.psql(&db, alter);
    if reconnect {
        pg.psql(
            &db,
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND pid <> pg_backend_pid()"
            ),
        );
    }
    let mut replies = Vec::new();
    for i in 0..3 {
        replies.push(c.ask(&format!("STORE during{i} v")));
        let get = c.ask(&format!("GET x{i}"));
        if reads_need_it || get != "vx" {
            replies.push(get);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let wrong: Vec<_> = replies
        .iter()
        .filter(|r| *r != "ERROR storage unavailable")
        .collect();
    assert!(
        wrong.is_empty(),
        "replies during the change: {replies:?}\n{}",
        front.log.all()
    );
    eventually("not ready", || ready(admin) == 503);
    front.log.wait_for(log_word);
    assert!(!front.log.all().contains("panicked"), "{}", front.log.all());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(&path, config(&pg.url(&db), 15, "")).unwrap();
    if check_start {
        let (code, out) = start_within(&path, Duration::from_secs(20));
        assert_eq!(code, Some(1), "a new front-end on the changed table: {out}");
        assert!(out.contains(log_word), "{out}");
        assert!(!out.contains("panicked"), "{out}");
    }

    pg.psql(&db, restore);
    eventually("serving again", || c.ask("GET x5") == "vx");
    eventually("ready again", || ready(admin) == 200);
    assert_eq!(c.ask("STORE after 1"), "W00T!");
    assert!(!front.log.all().contains("panicked"), "{}", front.log.all());
}

#[test]
fn a_renamed_value_column_is_a_clear_error() {
    require!(Postgres);
    schema_change_while_serving(
        "ALTER TABLE jnhp_names RENAME value TO value_old",
        "ALTER TABLE jnhp_names RENAME value_old TO value",
        "jnhp_names has no column value",
        false,
        false,
        true,
        true,
    );
}

#[test]
fn a_renamed_names_table_is_a_clear_error() {
    require!(Postgres);
    schema_change_while_serving(
        "ALTER TABLE jnhp_names RENAME TO jnhp_names_old",
        "ALTER TABLE jnhp_names_old RENAME TO jnhp_names",
        "jnhp_names",
        false,
        false,
        true,
        false,
    );
}

#[test]
fn a_renamed_pending_table_is_a_clear_error() {
    require!(Postgres);
    schema_change_while_serving(
        "ALTER TABLE jnhp_pending RENAME TO jnhp_pending_old",
        "ALTER TABLE jnhp_pending_old RENAME TO jnhp_pending",
        "jnhp_pending",
        true,
        false,
        false,
        true,
    );
}

#[test]
fn a_value_column_made_nullable_is_found_after_a_reconnect() {
    require!(Postgres);
    schema_change_while_serving(
        "ALTER TABLE jnhp_names ALTER value DROP NOT NULL",
        "ALTER TABLE jnhp_names ALTER value SET NOT NULL",
        "jnhp_names.value",
        false,
        true,
        true,
        true,
    );
}

#[test]
fn a_pending_expiry_without_time_zone_is_found_after_a_reconnect() {
    require!(Postgres);
    schema_change_while_serving(
        "ALTER TABLE jnhp_pending ALTER expires_at TYPE timestamp",
        "ALTER TABLE jnhp_pending ALTER expires_at TYPE timestamptz",
        "jnhp_pending.expires_at",
        true,
        true,
        false,
        true,
    );
}

#[test]
fn a_write_id_column_of_another_type_is_found_after_a_reconnect() {
    require!(Postgres);
    schema_change_while_serving(
        "ALTER TABLE jnhp_names ALTER write_id TYPE numeric",
        "ALTER TABLE jnhp_names ALTER write_id TYPE bigint",
        "jnhp_names.write_id",
        false,
        true,
        false,
        true,
    );
}

/// Starts a front-end on `config`; its exit code (None: still running
/// after `limit`, then killed) and its stderr.
fn start_within(config: &Path, limit: Duration) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0"]);
    let (mut child, log) = Server::launch(cmd);
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            log.wait_for("<stderr closed>");
            return (status.code(), log.all());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, log.all());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// postgres.md, How it works: rows locked in name order, so no
/// `deadlock detected` in PostgreSQL's log when three front-ends race
/// validated STOREs of shared names (pipelined, in shuffled orders) under
/// 1 s leases. And the write-once record: at most one W00T! per name,
/// every W00T!'s value in the table, every later GET agreeing.
#[test]
fn three_front_ends_racing_validated_stores_never_deadlock() {
    require!(Postgres, Python3);
    let pg = Postgres::start_with(&["deadlock_timeout=20ms"]);
    let db = pg.create_db("three");
    let fronts: Vec<Server> = (0..3)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let helper = shuffling_helper(dir.path(), 0.05);
            Server::start_in(
                dir,
                &config(
                    &pg.url(&db),
                    1,
                    &format!(
                        "[[validator]]\nkind = \"helper\"\ncommand = [\"{}\"]\nchildren = 2\nconcurrency = 64\n",
                        helper.display()
                    ),
                ),
            )
        })
        .collect();
    let addrs: Vec<SocketAddr> = fronts.iter().map(|f| f.addr()).collect();
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let addr = addrs[t % 3];
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let mut c = Client::connect(addr);
                for round in 0..6u64 {
                    // 40 shared names, in an order of this thread's own.
                    let mut names: Vec<u64> = (0..40).map(|i| round * 40 + i).collect();
                    let k = (t as u64 * 7 + round) as usize % 40;
                    names.rotate_left(k);
                    if t % 2 == 1 {
                        names.reverse();
                    }
                    let batch: String = names
                        .iter()
                        .map(|n| format!("STORE k{n} t{t}\r\n"))
                        .collect();
                    c.send(batch.as_bytes());
                    for n in &names {
                        out.push((format!("k{n}"), format!("t{t}"), c.reply()));
                    }
                }
                out
            })
        })
        .collect();
    let mut woot: HashMap<String, Vec<String>> = HashMap::new();
    let mut errors = Vec::new();
    for th in threads {
        for (name, value, reply) in th.join().unwrap() {
            match reply.as_str() {
                "W00T!" => woot.entry(name).or_default().push(value),
                "RARGH!" => {}
                _ => errors.push((name, reply)),
            }
        }
    }
    let log = pg.server_log();
    assert!(!log.contains("deadlock detected"), "{log}");
    for (name, values) in &woot {
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        let stored = pg.psql(
            &db,
            &format!(
                "SELECT convert_from(value, 'UTF8') FROM jnhp_names WHERE name = '{name}'::bytea"
            ),
        );
        assert_eq!(&stored, &values[0], "{name}");
        for f in &fronts {
            assert_eq!(f.connect().ask(&format!("GET {name}")), values[0]);
        }
    }
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(woot.len(), 240);
}

/// protocol.md, Bounded memory, and postgres.md, Faults ("PostgreSQL lost
/// while serving: jnhpd keeps accepting connections"): many connections
/// pipelining STOREs while PostgreSQL is stopped; memory stays bounded,
/// every request is answered, and memory is given back afterwards.
#[test]
fn memory_stays_bounded_while_the_database_is_stopped() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("outage");
    let front = Server::start(
        &config(&pg.url(&db), 15, "")
            .replace("request_timeout_ms = 3000", "request_timeout_ms = 1000"),
    );
    let mut c = front.connect();
    assert_eq!(c.ask("STORE warm 1"), "W00T!");
    let before = front.rss_kib();
    pg.stop_immediate();
    let addr = front.addr();
    let value = "v".repeat(2000);
    const CONNS: usize = 64;
    const PER: usize = 500;
    let started = Instant::now();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let threads: Vec<_> = (0..CONNS)
        .map(|t| {
            let value = value.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let n = PER;
                let batch: String = (0..n)
                    .map(|i| format!("STORE o{t}-{i} {value}\r\n"))
                    .collect();
                let writer = c.stream().try_clone().unwrap();
                let w = std::thread::spawn(move || {
                    use std::io::Write;
                    let mut writer = writer;
                    let _ = writer.write_all(batch.as_bytes());
                });
                let mut got = 0;
                for _ in 0..n {
                    let r = c.reply();
                    assert!(r.starts_with("ERROR"), "{r}");
                    got += 1;
                }
                let _ = w.join();
                got
            })
        })
        .collect();
    let pid = front.pid();
    let p2 = peak.clone();
    let watcher = std::thread::spawn(move || {
        for _ in 0..400 {
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                && let Some(l) = s.lines().find(|l| l.starts_with("VmRSS:"))
            {
                let kib: u64 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
                p2.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let answered: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(answered, CONNS * PER);
    eprintln!("answered {answered} in {:?}", started.elapsed());
    pg.start_again();
    eventually("serving again", || c.ask("STORE back 1") == "W00T!");
    std::thread::sleep(Duration::from_secs(2));
    let after = front.rss_kib();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    drop(watcher);
    eprintln!("rss before {before} KiB, peak {peak} KiB, after {after} KiB");
    // 64 connections x (1 MiB replies + a line) and the queues of the
    // engine: far below 512 MiB.
    assert!(peak < before + 512 * 1024, "peak {peak} KiB");
    assert!(
        after < before + 128 * 1024,
        "after {after} KiB (before {before})"
    );
}

/// postgres.md, Running it (`connect_timeout_secs`: "at start: retry this
/// long, then refuse to start") and Readiness: a database that accepts
/// connections but never answers (frozen with SIGSTOP) at start. The
/// client port refuses meanwhile, and jnhpd exits 1 with the documented
/// message once `connect_timeout_secs` is spent.
#[test]
fn a_frozen_database_at_start_is_given_up_after_connect_timeout_secs() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("frozenstart");
    let frozen = Frozen::new(&pg);
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let path = dir.path().join("jnhp.toml");
    std::fs::write(
        &path,
        config(&pg.tcp_url("postgres", &db), 15, "")
            .replace("connect_timeout_secs = 10", "connect_timeout_secs = 3"),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let t = Instant::now();
    let (mut child, log) = Server::launch(cmd);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port accepted before the database answered"
    );
    let mut code = None;
    while t.elapsed() < Duration::from_secs(15) {
        if let Some(status) = child.try_wait().unwrap() {
            code = status.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = t.elapsed();
    if code.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(frozen);
    assert_eq!(code, Some(1), "after {took:?}: {}", log.all());
    assert!(took < Duration::from_secs(3 + 5), "{took:?}");
    assert!(
        log.all().contains("cannot reach PostgreSQL"),
        "{}",
        log.all()
    );
}

/// postgres.md, Running it (`request_timeout_ms`: "no answer from
/// PostgreSQL in this time: ERROR storage unavailable"), Faults, and
/// observability.md (/readyz 503 while PostgreSQL does not answer): the
/// database frozen while serving, then thawed.
#[test]
fn a_frozen_database_while_serving_is_answered_in_time_and_recovers() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("frozenserve");
    let front = Server::start(&config(&pg.tcp_url("postgres", &db), 15, ADMIN));
    let admin = common::admin_addr(&front);
    let mut c = front.connect();
    assert_eq!(c.ask("STORE cached v"), "W00T!");
    let frozen = Frozen::new(&pg);
    let t = Instant::now();
    let get = c.ask("GET uncached");
    let took_get = t.elapsed();
    let t = Instant::now();
    let store = c.ask("STORE fresh v");
    let took_store = t.elapsed();
    assert_eq!(c.ask("GET cached"), "v");
    let mut readyz = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        readyz = ready(admin);
        if readyz == 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(frozen);
    assert_eq!(get, "ERROR storage unavailable");
    assert_eq!(store, "ERROR storage unavailable");
    assert!(
        took_get < Duration::from_secs(3 + 2),
        "GET took {took_get:?}"
    );
    assert!(
        took_store < Duration::from_secs(3 + 2),
        "STORE took {took_store:?}"
    );
    assert_eq!(readyz, 503, "/readyz while the database is frozen");
    eventually("serving again", || c.ask("STORE after v") == "W00T!");
    eventually("ready again", || ready(admin) == 200);
    // Whatever the frozen STORE did, a GET tells, and nothing contradicts it.
    let fresh = c.ask("GET fresh");
    assert!(fresh == "v" || fresh.is_empty(), "{fresh}");
}

fn waiting_for_standby(pg: &Postgres) -> u64 {
    pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
    )
    .parse()
    .unwrap()
}

/// postgres.md, What a failover can lose: with a synchronous standby named
/// that does not exist and every wait for it ended early (`how`, over and
/// over), validated STOREs (leases) on one front-end and plain STOREs,
/// GETs and EXISTS of the same names on another never get W00T!, a value,
/// AWESOME! or RARGH!. Once the setting is lifted, everything agrees: at
/// most one W00T! per name (none here), GET on both = the table, a STORE
/// of a name in the table RARGH!.
fn stalled_standby_with_leases(how: &'static str) {
    let pg = std::sync::Arc::new(Postgres::start());
    let db = pg.create_db("durable");
    let dir = tempfile::tempdir().unwrap();
    let program = common::script(dir.path(), "allow", "echo JNHP:1");
    let a = Server::start_in(
        dir,
        &config(
            &pg.url(&db),
            2,
            &process_validator(&program, "max_concurrent = 16"),
        ),
    );
    let b = Server::start(&config(&pg.url(&db), 2, ""));
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = 'nobody'",
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let interrupter = {
        let (pg, stop) = (pg.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut ended = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ended += pg
                    .psql(
                        "postgres",
                        &format!(
                            "SELECT count({how}(pid)) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
                        ),
                    )
                    .parse::<u64>()
                    .unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            ended
        })
    };
    let addrs = [a.addr(), b.addr()];
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let addr = addrs[t % 2];
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut out = Vec::new();
                for i in 0..6 {
                    let name = format!("d{}", (t / 2) * 6 + i);
                    let mut batch = format!("STORE {name} t{t}\r\n");
                    batch.push_str(&format!("GET {name}\r\nEXISTS {name}\r\n"));
                    c.send(batch.as_bytes());
                    for what in ["STORE", "GET", "EXISTS"] {
                        out.push((name.clone(), what, c.reply()));
                    }
                }
                out
            })
        })
        .collect();
    let mut during = Vec::new();
    for th in threads {
        during.extend(th.join().unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ended = interrupter.join().unwrap();
    let bad: Vec<_> = during
        .iter()
        .filter(|(_, what, r)| match *what {
            "STORE" => r != "ERROR storage unavailable",
            "GET" => !(r.is_empty() || r == "ERROR storage unavailable"),
            _ => !(r == "RARGH!" || r == "ERROR storage unavailable"),
        })
        .collect();
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = ''",
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
    eventually("no waits", || waiting_for_standby(&pg) == 0);
    assert!(ended > 0, "no wait was ended");
    assert!(
        bad.is_empty(),
        "answered as durable while the standby was missing: {bad:?}"
    );
    // Afterwards: everything consistent.
    std::thread::sleep(Duration::from_millis(500));
    for n in 0..24 {
        let name = format!("d{n}");
        let mut table = pg.psql(
            &db,
            &format!(
                "SELECT convert_from(value, 'UTF8') FROM jnhp_names WHERE name = '{name}'::bytea"
            ),
        );
        for front in [&a, &b] {
            let mut c = front.connect();
            let mut got = c.ask(&format!("GET {name}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while got.starts_with("ERROR") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                got = c.ask(&format!("GET {name}"));
            }
            assert_eq!(got, table, "{name}");
            let store = c.ask(&format!("STORE {name} later"));
            if table.is_empty() {
                assert_eq!(store, "W00T!", "{name}");
                table = "later".to_string();
            } else {
                assert_eq!(store, "RARGH!", "{name}");
            }
        }
    }
}

#[test]
fn a_cancelled_standby_wait_never_makes_leased_stores_durable() {
    require!(Postgres);
    stalled_standby_with_leases("pg_cancel_backend");
}

#[test]
fn a_terminated_standby_wait_never_makes_leased_stores_durable() {
    require!(Postgres);
    stalled_standby_with_leases("pg_terminate_backend");
}

/// postgres.md, Tables: a value must be what a STORE could have stored
/// (protocol.md: a value cannot begin with a blank, and a blank is a space
/// or a tab; `ERROR ` reserved). Rows another tool wrote: GET answers
/// `ERROR unservable value in storage`, one line each, never raw.
#[test]
fn more_values_the_protocol_cannot_carry() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("unservable");
    let front = Server::start(&config(&pg.url(&db), 15, ""));
    let mut c = front.connect();
    assert_eq!(c.ask("STORE warm v"), "W00T!");
    let bad = [
        ("tab", "\tvalue"),
        ("reserved", "ERROR "),
        ("cr", "abc\r"),
        ("lf", "\n"),
        ("nul", "\u{0}"),
    ];
    for (name, value) in bad {
        let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
        pg.psql(
            &db,
            &format!(
                "INSERT INTO jnhp_names (name, value, stored_by, write_id) \
                 VALUES ('{name}'::bytea, decode('{hex}', 'hex'), 'tool', 0)"
            ),
        );
    }
    let all: String = bad.iter().map(|(n, _)| format!("GET {n}\r\n")).collect();
    for _ in 0..2 {
        c.send(all.as_bytes());
        for (name, _) in bad {
            let line = c.line();
            assert_eq!(
                String::from_utf8_lossy(&line),
                "ERROR unservable value in storage\r\n",
                "{name}"
            );
        }
        assert_eq!(c.ask("GET warm"), "v");
    }
    for (name, _) in bad {
        assert_eq!(c.ask(&format!("EXISTS {name}")), "AWESOME!");
        assert_eq!(c.ask(&format!("STORE {name} x")), "RARGH!");
    }
}

/// postgres.md, How it works: "all waiting STOREs look again whenever the
/// LISTEN connection had to reconnect (announcements may have been
/// missed)". A STORE on B waits for A's validation; B's LISTEN backend is
/// terminated and A's validation ends at once: B answers RARGH! promptly,
/// not after the 30 s lease.
#[test]
fn a_store_waiting_across_a_lost_listen_connection_wakes() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("listen");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let program = blocking_validator(&root);
    let a = Server::start_in(
        dir,
        &config(
            &pg.url(&db),
            30,
            &process_validator(&program, "timeout_ms = 60000"),
        ),
    );
    let b = Server::start(&config(&pg.url(&db), 30, ""));
    let mut ca = a.connect();
    ca.send(b"STORE n va\r\n");
    eventually("A's lease", || pending_rows(&pg, &db) == 1);
    let mut cb = b.connect();
    cb.send(b"STORE n vb\r\n");
    std::thread::sleep(Duration::from_millis(500));
    let killed = pg.psql(
        &db,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query ILIKE 'LISTEN%'",
    );
    assert_ne!(killed, "0");
    std::fs::write(root.join("release"), "").unwrap();
    let t = Instant::now();
    assert_eq!(ca.reply(), "W00T!");
    assert_eq!(cb.reply(), "RARGH!");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(cb.ask("GET n"), "va");
}

/// postgres.md, Faults ("A validator slower than lease_secs: fine, the
/// lease is renewed while it runs") and Guarantees (pending names across
/// front-ends): 1 s leases, validators taking 3 s on A; B's STOREs of the
/// same names, sent after the first lease period, wait and get RARGH!.
#[test]
fn a_validator_slower_than_the_lease_keeps_its_names() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("slow");
    let dir = tempfile::tempdir().unwrap();
    let program = common::script(dir.path(), "slow", "sleep 3\necho JNHP:1");
    let a = Server::start_in(
        dir,
        &config(
            &pg.url(&db),
            1,
            &process_validator(&program, "max_concurrent = 16"),
        ),
    );
    let b = Server::start(&config(&pg.url(&db), 1, ""));
    let mut cas: Vec<Client> = (0..6)
        .map(|i| {
            let mut c = a.connect();
            c.send(format!("STORE s{i} a\r\n").as_bytes());
            c
        })
        .collect();
    eventually("leases", || pending_rows(&pg, &db) == 6);
    std::thread::sleep(Duration::from_millis(1600));
    let mut cbs: Vec<Client> = (0..6)
        .map(|i| {
            let mut c = b.connect();
            c.send(format!("STORE s{i} b\r\n").as_bytes());
            c
        })
        .collect();
    let ra: Vec<String> = cas.iter_mut().map(|c| c.reply()).collect();
    let rb: Vec<String> = cbs.iter_mut().map(|c| c.reply()).collect();
    assert_eq!(ra, vec!["W00T!"; 6], "A: {ra:?} B: {rb:?}");
    assert_eq!(rb, vec!["RARGH!"; 6], "A: {ra:?} B: {rb:?}");
}

/// operations.md, Signals and shutdown: the reservations are given up "in
/// one statement, on a connection of its own" within 2 s past the grace,
/// even when every pooled connection is stuck (a session holds a lock on
/// the names table).
#[test]
fn reservations_are_released_at_sigterm_while_the_pool_is_stuck() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("stuck");
    let dir = tempfile::tempdir().unwrap();
    let program = blocking_validator(dir.path());
    let mut a = Server::start_in(
        dir,
        &config(
            &pg.url(&db),
            60,
            &format!(
                "pool_size = 2\n[server]\nshutdown_grace_secs = 1\n{}",
                process_validator(&program, "timeout_ms = 60000\nmax_concurrent = 16")
            ),
        )
        .replace("request_timeout_ms = 3000", "request_timeout_ms = 30000"),
    );
    let mut held: Vec<Client> = (0..4)
        .map(|i| {
            let mut c = a.connect();
            c.send(format!("STORE held{i} v\r\n").as_bytes());
            c
        })
        .collect();
    eventually("4 leases", || pending_rows(&pg, &db) == 4);
    let mut psql = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(echo 'BEGIN; LOCK TABLE jnhp_names IN ACCESS EXCLUSIVE MODE;'; \
             echo \"SELECT 'locked';\"; sleep 60) | \
             /usr/lib/postgresql/15/bin/psql -X -q -A -t -h {} -p {} -U postgres -d {db}",
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
    for i in 0..4 {
        held[i].send(format!("GET g{i}\r\n").as_bytes());
        let mut c = a.connect();
        c.send(format!("STORE plain{i} v\r\nGET p{i}\r\n").as_bytes());
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    a.signal(Signal::SIGTERM);
    assert_eq!(a.wait_exit().code(), Some(0), "{}", a.log.all());
    let took = t.elapsed();
    let left = pending_rows(&pg, &db);
    let _ = psql.kill();
    let _ = psql.wait();
    assert!(took < Duration::from_secs(1 + 1 + 2 + 2 + 1), "{took:?}");
    assert_eq!(left, 0, "reservations left after SIGTERM\n{}", a.log.all());
}

/// postgres.md, Limits and choices: "a front-end whose event loop stalls
/// for longer than lease_secs (a paused VM) loses its leases, and its
/// validated STOREs then compete again ...; nothing wrong is stored". A
/// is paused (SIGSTOP) past its 1 s leases while validating; B stores the
/// names meanwhile (B validated too, for half of them); A resumes and its
/// validators allow: A answers RARGH!, and every GET agrees with B.
#[test]
fn a_paused_front_end_never_stores_on_a_lapsed_lease() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("paused");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let program = blocking_validator(&root);
    let a = Server::start_in(
        dir,
        &config(
            &pg.url(&db),
            1,
            &process_validator(&program, "timeout_ms = 60000\nmax_concurrent = 16"),
        ),
    );
    let bdir = tempfile::tempdir().unwrap();
    let allow = common::script(
        bdir.path(),
        "allow",
        "case \"$JNHP_NAME\" in v*) echo JNHP:1 ;; *) echo JNHP:1 ;; esac",
    );
    let b_plain = Server::start(&config(&pg.url(&db), 1, ""));
    let b_valid = Server::start_in(
        bdir,
        &config(&pg.url(&db), 1, &process_validator(&allow, "")),
    );
    let mut cas: Vec<Client> = (0..6)
        .map(|i| {
            let mut c = a.connect();
            c.send(format!("STORE p{i} a\r\n").as_bytes());
            c
        })
        .collect();
    eventually("leases", || pending_rows(&pg, &db) == 6);
    a.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(2500));
    let mut rb = Vec::new();
    for i in 0..6 {
        let front = if i % 2 == 0 { &b_plain } else { &b_valid };
        rb.push(front.connect().ask(&format!("STORE p{i} b")));
    }
    std::fs::write(root.join("release"), "").unwrap();
    a.signal(Signal::SIGCONT);
    let ra: Vec<String> = cas.iter_mut().map(|c| c.reply()).collect();
    assert_eq!(rb, vec!["W00T!"; 6], "B: {rb:?} A: {ra:?}");
    assert_eq!(ra, vec!["RARGH!"; 6], "A: {ra:?}");
    for i in 0..6 {
        assert_eq!(a.connect().ask(&format!("GET p{i}")), "b");
    }
}

/// postgres.md, How it works ("rows are inserted in name order ... cannot
/// deadlock") and Moving in ("It may run while front-ends serve: the
/// import inserts with the same statement as a STORE"): an import of a
/// data file written in descending name order, while three front-ends
/// store the same names in ascending order. No `deadlock detected` in
/// PostgreSQL's log, the import exits 0, and every name has one value
/// that every front-end serves.
#[test]
fn an_import_racing_front_ends_never_deadlocks() {
    require!(Postgres);
    let pg = Postgres::start_with(&["deadlock_timeout=20ms"]);
    let db = pg.create_db("importrace");
    const N: usize = 3000;
    let local_dir = tempfile::tempdir().unwrap();
    let data = local_dir.path().join("names.data");
    let mut local = Server::start_in(
        local_dir,
        &format!(
            "[storage]\npath = \"{}\"\nfsync = \"never\"\n",
            data.display()
        ),
    );
    {
        let mut c = local.connect();
        let batch: String = (0..N)
            .rev()
            .map(|i| format!("STORE m{i:05} file\r\n"))
            .collect();
        c.send(batch.as_bytes());
        for _ in 0..N {
            assert_eq!(c.reply(), "W00T!");
        }
    }
    local.signal(Signal::SIGTERM);
    local.wait_exit();
    let fronts: Vec<Server> = (0..3)
        .map(|_| Server::start(&config(&pg.url(&db), 15, "")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(&path, config(&pg.url(&db), 15, "")).unwrap();
    let addrs: Vec<SocketAddr> = fronts.iter().map(|f| f.addr()).collect();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let addr = addrs[t % 3];
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut out = Vec::new();
                for chunk in (0..N).collect::<Vec<_>>().chunks(200) {
                    let batch: String = chunk
                        .iter()
                        .map(|i| format!("STORE m{i:05} t{t}\r\n"))
                        .collect();
                    c.send(batch.as_bytes());
                    for i in chunk {
                        out.push((*i, format!("t{t}"), c.reply()));
                    }
                }
                out
            })
        })
        .collect();
    let (code, out) = common::run_to_exit(
        &[
            "--config",
            path.to_str().unwrap(),
            "--import-datafile",
            data.to_str().unwrap(),
        ],
        dir.path(),
    );
    let mut woot: HashMap<usize, String> = HashMap::new();
    for th in threads {
        for (i, v, r) in th.join().unwrap() {
            match r.as_str() {
                "W00T!" => assert!(woot.insert(i, v).is_none(), "two W00T! for {i}"),
                "RARGH!" => {}
                other => panic!("m{i:05}: {other}"),
            }
        }
    }
    let log = pg.server_log();
    assert!(!log.contains("deadlock detected"), "{log}");
    assert_eq!(code, 0, "{out}");
    let mut c = fronts[1].connect();
    for i in (0..N).step_by(97) {
        let got = c.ask(&format!("GET m{i:05}"));
        match woot.get(&i) {
            Some(v) => assert_eq!(&got, v),
            None => assert_eq!(got, "file"),
        }
    }
}

/// postgres.md, How it works ("A commit whose outcome is unknown") and
/// Guarantees: every backend of two front-ends (validated and plain)
/// terminated every 30 ms while clients race STOREs of shared names and
/// GET them. At most one W00T! per name; every W00T! is in the table with
/// its value; no GET contradicts the table; the front-ends serve again.
#[test]
fn terminated_backends_never_break_write_once() {
    require!(Postgres);
    let pg = std::sync::Arc::new(Postgres::start());
    let db = pg.create_db("killed");
    let dir = tempfile::tempdir().unwrap();
    let program = common::script(dir.path(), "allow", "echo JNHP:1");
    let a = Server::start_in(
        dir,
        &config(
            &pg.url(&db),
            2,
            &process_validator(&program, "max_concurrent = 16"),
        ),
    );
    let b = Server::start(&config(&pg.url(&db), 2, ""));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (pg, stop, db) = (pg.clone(), stop.clone(), db.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += pg
                    .psql(
                        "postgres",
                        &format!(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                             WHERE datname = '{db}' AND pid <> pg_backend_pid()"
                        ),
                    )
                    .parse::<u64>()
                    .unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
            n
        })
    };
    let addrs = [a.addr(), b.addr()];
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let addr = addrs[t % 2];
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut out = Vec::new();
                for round in 0..10 {
                    let batch: String = (0..10)
                        .map(|i| {
                            let n = round * 10 + i;
                            format!("STORE k{n} t{t}\r\nGET k{n}\r\n")
                        })
                        .collect();
                    c.send(batch.as_bytes());
                    for i in 0..10 {
                        let n = round * 10 + i;
                        out.push((n, format!("t{t}"), c.reply(), c.reply()));
                    }
                }
                out
            })
        })
        .collect();
    let mut history = Vec::new();
    for th in threads {
        history.extend(th.join().unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let killed = killer.join().unwrap();
    assert!(killed > 0);
    let mut woot: HashMap<usize, String> = HashMap::new();
    for (n, v, store, _) in &history {
        if store == "W00T!" {
            assert!(woot.insert(*n, v.clone()).is_none(), "two W00T! for k{n}");
        } else {
            assert!(
                store == "RARGH!" || store == "ERROR storage unavailable",
                "k{n}: {store}"
            );
        }
    }
    let mut c = b.connect();
    eventually("serving again", || c.ask("STORE after v") == "W00T!");
    for n in 0..100 {
        let table = pg.psql(
            &db,
            &format!(
                "SELECT convert_from(value, 'UTF8') FROM jnhp_names WHERE name = 'k{n}'::bytea"
            ),
        );
        if let Some(v) = woot.get(&n) {
            assert_eq!(&table, v, "k{n}: W00T! for {v}");
        }
        for (m, _, _, get) in &history {
            if *m == n && get != "ERROR storage unavailable" && !get.is_empty() {
                assert_eq!(get, &table, "k{n}: a GET served {get}");
            }
        }
        assert_eq!(c.ask(&format!("GET k{n}")), table, "k{n}");
    }
}

/// protocol.md ("no request ... leaks memory") across repeated outages:
/// three rounds of 32 connections pipelining STOREs of 2 kB values (half
/// of them never reading their replies until the end) while PostgreSQL is
/// stopped, each followed by a restart. RSS after the third round is not
/// above the first round's by more than a few MiB.
#[test]
fn repeated_outages_do_not_leak_memory() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("leak");
    let front = Server::start(
        &config(&pg.url(&db), 15, "")
            .replace("request_timeout_ms = 3000", "request_timeout_ms = 500"),
    );
    let mut c = front.connect();
    assert_eq!(c.ask("STORE warm 1"), "W00T!");
    let addr = front.addr();
    let mut after = Vec::new();
    for round in 0..3 {
        pg.stop_immediate();
        let threads: Vec<_> = (0..32)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    let value = "v".repeat(2000);
                    let n = 300;
                    let batch: String = (0..n)
                        .map(|i| format!("STORE r{round}-{t}-{i} {value}\r\n"))
                        .collect();
                    let writer = c.stream().try_clone().unwrap();
                    let w = std::thread::spawn(move || {
                        use std::io::Write;
                        let mut writer = writer;
                        let _ = writer.write_all(batch.as_bytes());
                    });
                    if t % 2 == 0 {
                        std::thread::sleep(Duration::from_secs(3));
                    }
                    for _ in 0..n {
                        let r = c.reply();
                        assert!(r.starts_with("ERROR"), "{r}");
                    }
                    let _ = w.join();
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        pg.start_again();
        eventually("serving again", || {
            c.ask(&format!("STORE back{round} 1")) == "W00T!"
        });
        std::thread::sleep(Duration::from_secs(1));
        after.push(front.rss_kib());
    }
    eprintln!("rss after each round: {after:?} KiB");
    assert!(after[2] < after[0] + 8 * 1024, "{after:?}");
}

/// postgres.md, Faults, SIGTERM: "every reservation the front-end still
/// has (held, being released, or whose acquiring statement's answer was
/// lost) is deleted in one statement". Validated STOREs are sent while the
/// database is frozen; jnhpd gives up on them (ERROR storage unavailable
/// after request_timeout_ms); the database thaws and runs the statements
/// it had been sent. At SIGTERM, none of their reservations is left, and
/// another front-end's STORE of such a name does not wait out the lease.
#[test]
fn reservations_whose_answer_was_lost_are_released_at_sigterm() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("lostanswer");
    let dir = tempfile::tempdir().unwrap();
    let program = blocking_validator(dir.path());
    let mut a = Server::start_in(
        dir,
        &config(
            &pg.url(&db),
            60,
            &format!(
                "[server]\nshutdown_grace_secs = 1\n{}",
                process_validator(&program, "timeout_ms = 60000\nmax_concurrent = 16")
            ),
        )
        .replace("request_timeout_ms = 3000", "request_timeout_ms = 1000"),
    );
    let b = Server::start(&config(&pg.url(&db), 60, ""));
    let mut cb = b.connect();
    assert_eq!(cb.ask("STORE warm v"), "W00T!");
    let mut ca = a.connect();
    assert_eq!(ca.ask("GET nothing"), "");
    let frozen = Frozen::new(&pg);
    let replies: Vec<String> = (0..4)
        .map(|i| {
            let mut c = a.connect();
            c.ask(&format!("STORE lost{i} v"))
        })
        .collect();
    drop(frozen);
    std::thread::sleep(Duration::from_millis(1500));
    let rows_before = pending_rows(&pg, &db);
    eprintln!("reservations before SIGTERM: {rows_before}; replies {replies:?}");
    a.signal(Signal::SIGTERM);
    assert_eq!(a.wait_exit().code(), Some(0), "{}", a.log.all());
    let left = pg.psql(
        &db,
        "SELECT string_agg(convert_from(name, 'UTF8'), ',') FROM jnhp_pending",
    );
    let t = Instant::now();
    let rb = cb.ask("STORE lost0 b");
    let took = t.elapsed();
    assert_eq!(
        left,
        "",
        "reservations left: {left} (before SIGTERM: {rows_before}); A's replies {replies:?}\n{}",
        a.log.all()
    );
    assert!(took < Duration::from_secs(5), "B waited {took:?}: {rb}");
}

/// configuration.md (`table_prefix`: `[a-z_][a-z0-9_]*`, tables
/// `<prefix>_names` and `<prefix>_pending`) and postgres.md (Tables):
/// PostgreSQL truncates identifiers to 63 bytes. Two front-ends with long
/// prefixes that differ only past that point must either be refused with
/// a clear error or keep two namespaces; never share one silently, and
/// never confuse the names table with the pending table.
#[test]
fn long_table_prefixes_are_refused_or_kept_apart() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("prefix");
    let p1 = format!("{}x", "a".repeat(63));
    let p2 = format!("{}y", "a".repeat(63));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(
        &path,
        config(&pg.url(&db), 15, &format!("table_prefix = \"{p1}\"\n")),
    )
    .unwrap();
    let (code, out) = start_within(&path, Duration::from_secs(8));
    if code == Some(1) || code == Some(2) {
        // Refused: it must say why, and not with a panic.
        assert!(!out.contains("panicked"), "{out}");
        assert!(
            out.contains("table_prefix"),
            "refused without naming table_prefix: {out}"
        );
        return;
    }
    assert_eq!(code, None, "exited {code:?}: {out}");
    let a = Server::start(&config(
        &pg.url(&db),
        15,
        &format!("table_prefix = \"{p1}\"\n"),
    ));
    let b = Server::start(&config(
        &pg.url(&db),
        15,
        &format!("table_prefix = \"{p2}\"\n"),
    ));
    let tables = pg.psql(
        &db,
        "SELECT string_agg(relname, ',') FROM pg_class WHERE relkind = 'r' AND relname LIKE 'aaa%'",
    );
    let mut ca = a.connect();
    let mut cb = b.connect();
    assert_eq!(ca.ask("STORE shared va"), "W00T!", "tables: {tables}");
    assert_eq!(
        cb.ask("GET shared"),
        "",
        "two prefixes share one namespace; tables: {tables}"
    );
    assert_eq!(cb.ask("STORE shared vb"), "W00T!", "tables: {tables}");
}

/// postgres.md, Readiness: "Ports jnhpd binds itself (`server.listen`,
/// `tls.listen`, `admin.listen`) are bound ... but they *listen* only once
/// it can serve". The database down at start: the admin port refuses too;
/// once the database is up, both serve and /readyz is 200.
#[test]
fn the_admin_port_refuses_until_the_database_is_reached() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("adminearly");
    pg.stop_immediate();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, admin_port) = (free(), free());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(
        &path,
        config(
            &pg.url(&db),
            15,
            &format!("[admin]\nlisten = [\"127.0.0.1:{admin_port}\"]\n"),
        )
        .replace("connect_timeout_secs = 10", "connect_timeout_secs = 60"),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let (mut child, log) = Server::launch(cmd);
    std::thread::sleep(Duration::from_millis(1500));
    let client = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    let admin = std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_ok();
    pg.start_again();
    log.wait_for("listening on");
    let addr: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    eventually("ready", || ready(addr) == 200);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !client,
        "the client port accepted before the database was reached"
    );
    assert!(
        !admin,
        "the admin port accepted before the database was reached"
    );
}

/// postgres.md, What a failover can lose: "Every pooled connection counts
/// the WARNINGs PostgreSQL sends it (any WARNING ...). A statement job
/// whose commit drew one has an unknown outcome ...: its STOREs (and
/// reservations) are tried again with the same write id". A trigger of
/// another tool that raises a WARNING on every insert into either table:
/// plain and validated STOREs are still answered W00T! (their own rows,
/// read back), promptly — a validated STORE does not wait out its own
/// 30 s reservation — and a second STORE is RARGH!.
#[test]
fn warnings_from_a_trigger_do_not_strand_stores() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("warned");
    let dir = tempfile::tempdir().unwrap();
    let program = common::script(dir.path(), "allow", "echo JNHP:1");
    let a = Server::start_in(
        dir,
        &config(&pg.url(&db), 30, &process_validator(&program, ""))
            .replace("request_timeout_ms = 3000", "request_timeout_ms = 10000"),
    );
    let b = Server::start(
        &config(&pg.url(&db), 30, "")
            .replace("request_timeout_ms = 3000", "request_timeout_ms = 10000"),
    );
    pg.psql(
        &db,
        "CREATE FUNCTION warn_row() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE WARNING 'audit: row inserted'; RETURN NEW; END $$;
         CREATE TRIGGER warn_names AFTER INSERT ON jnhp_names
         FOR EACH ROW EXECUTE FUNCTION warn_row();
         CREATE TRIGGER warn_pending AFTER INSERT ON jnhp_pending
         FOR EACH ROW EXECUTE FUNCTION warn_row();",
    );
    let mut cb = b.connect();
    let t = Instant::now();
    let plain = cb.ask("STORE plain v");
    let took_plain = t.elapsed();
    let mut ca = a.connect();
    let t = Instant::now();
    let validated = ca.ask("STORE checked v");
    let took_validated = t.elapsed();
    assert_eq!(
        plain,
        "W00T!",
        "plain STORE after {took_plain:?}\n{}",
        b.log.all()
    );
    assert_eq!(
        validated,
        "W00T!",
        "validated STORE after {took_validated:?}\n{}",
        a.log.all()
    );
    assert!(took_plain < Duration::from_secs(5), "{took_plain:?}");
    assert!(
        took_validated < Duration::from_secs(5),
        "{took_validated:?}"
    );
    assert_eq!(cb.ask("STORE checked w"), "RARGH!");
    assert_eq!(ca.ask("STORE plain w"), "RARGH!");
    assert_eq!(cb.ask("GET checked"), "v");
    assert_eq!(pending_rows(&pg, &db), 0);
}

/// postgres.md, Guarantees: "Per-connection order: each request observes
/// every earlier request on its connection", with "Pending names, across
/// front-ends": B's STORE of a name A is validating waits; a GET and an
/// EXISTS pipelined after it on B's connection must not be answered from
/// a lookup made before that STORE's outcome: after RARGH! (the name is
/// taken), never an empty GET or a RARGH! EXISTS.
#[test]
fn reads_pipelined_after_a_waiting_store_observe_its_outcome() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("inorder");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let program = blocking_validator(&root);
    let a = Server::start_in(
        dir,
        &config(
            &pg.url(&db),
            30,
            &process_validator(&program, "timeout_ms = 60000"),
        )
        .replace("request_timeout_ms = 3000", "request_timeout_ms = 20000"),
    );
    let b = Server::start(
        &config(&pg.url(&db), 30, "")
            .replace("request_timeout_ms = 3000", "request_timeout_ms = 20000"),
    );
    let mut ca = a.connect();
    ca.send(b"STORE n va\r\n");
    eventually("A's lease", || pending_rows(&pg, &db) == 1);
    let mut cb = b.connect();
    cb.send(b"STORE n vb\r\nGET n\r\nEXISTS n\r\n");
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(ca.reply(), "W00T!");
    let replies = [cb.reply(), cb.reply(), cb.reply()];
    assert_eq!(replies, ["RARGH!", "va", "AWESOME!"]);
}

/// operations.md, Signals and shutdown: "Signals are never fatal, at any
/// moment of jnhpd's life, start-up included"; SIGTERM/SIGINT drain for
/// up to shutdown_grace_secs then exit 0. While a front-end waits for a
/// database that is down (connect_timeout_secs = 60): SIGHUP does not end
/// it; SIGTERM ends it with status 0 within the grace period and the
/// documented extras, not after connect_timeout_secs.
#[test]
fn signals_while_waiting_for_the_database_at_start() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("startsignals");
    pg.stop_immediate();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(
        &path,
        config(&pg.url(&db), 15, "[server]\nshutdown_grace_secs = 1\n")
            .replace("connect_timeout_secs = 10", "connect_timeout_secs = 60"),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"]);
    let (mut child, log) = Server::launch(cmd);
    std::thread::sleep(Duration::from_millis(1000));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended it: {}",
        log.all()
    );
    let t = Instant::now();
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let mut code = None;
    while t.elapsed() < Duration::from_secs(15) {
        if let Some(status) = child.try_wait().unwrap() {
            code = Some(status.code());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = t.elapsed();
    if code.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(code, Some(Some(0)), "after {took:?}: {}", log.all());
    assert!(took < Duration::from_secs(1 + 1 + 2 + 1), "{took:?}");
}

/// postgres.md, Tables and Faults: the names table dropped while serving:
/// not ready, `ERROR storage unavailable`; put back with the documented
/// `CREATE TABLE` and `COMMENT`, it serves again by itself (and what was
/// cached of the dropped table is an operator's business, not checked).
#[test]
fn a_dropped_names_table_put_back_serves_again() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("putback");
    let front = Server::start(&config(&pg.url(&db), 15, ADMIN));
    let admin = common::admin_addr(&front);
    let mut c = front.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    pg.psql(&db, "DROP TABLE jnhp_names");
    assert_eq!(c.ask("STORE b 2"), "ERROR storage unavailable");
    eventually("not ready", || ready(admin) == 503);
    pg.psql(
        &db,
        "CREATE TABLE jnhp_names (
            name       bytea PRIMARY KEY,
            value      bytea NOT NULL,
            stored_by  text NOT NULL,
            write_id   bigint NOT NULL,
            stored_at  timestamptz NOT NULL DEFAULT now()
        );
        COMMENT ON TABLE jnhp_names IS 'jnhp schema 1'",
    );
    eventually("serving again", || c.ask("STORE b 2") == "W00T!");
    eventually("ready again", || ready(admin) == 200);
    assert_eq!(c.ask("GET b"), "2");
    assert!(!front.log.all().contains("panicked"), "{}", front.log.all());
}

/// operations.md, Signals and shutdown ("Nothing else waits for
/// PostgreSQL past the grace period"): a stalled synchronous standby
/// (every commit waits, the release of reservations too) while validated
/// and plain STOREs are under way. SIGTERM: exit 0 within the grace and
/// the documented extras; no STORE was acknowledged.
#[test]
fn sigterm_with_a_stalled_standby_stops_within_the_bound() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("stalledstop");
    let (mut a, mut clients) = four_blocked_stores(&pg, &db, "v");
    let root = a.dir.path().to_path_buf();
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = 'nobody'",
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(root.join("release"), "").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    a.signal(Signal::SIGTERM);
    let code = a.wait_exit().code();
    let took = t.elapsed();
    let replies: Vec<Vec<u8>> = clients
        .iter_mut()
        .map(|c| c.read_to_end_or_reset())
        .collect();
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = ''",
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
    assert_eq!(code, Some(0), "{}", a.log.all());
    assert!(took < Duration::from_secs(1 + 1 + 2 + 2 + 1), "{took:?}");
    for r in replies {
        assert!(
            !String::from_utf8_lossy(&r).contains("W00T!"),
            "{}",
            String::from_utf8_lossy(&r)
        );
    }
}

/// A front-end whose process validator blocks until `release` appears in
/// its directory (request timeout 30 s, drain 1 s), with four STOREs
/// (`{prefix}0` .. `{prefix}3`) sent and holding their leases.
fn four_blocked_stores(pg: &Postgres, db: &str, prefix: &str) -> (Server, Vec<Client>) {
    let dir = tempfile::tempdir().unwrap();
    let program = blocking_validator(dir.path());
    let a = Server::start_in(
        dir,
        &config(
            &pg.url(db),
            30,
            &format!(
                "[server]\nshutdown_grace_secs = 1\n{}",
                process_validator(&program, "timeout_ms = 60000\nmax_concurrent = 16")
            ),
        )
        .replace("request_timeout_ms = 3000", "request_timeout_ms = 30000"),
    );
    let clients = (0..4)
        .map(|i| {
            let mut c = a.connect();
            c.send(format!("STORE {prefix}{i} v\r\n").as_bytes());
            c
        })
        .collect();
    eventually("4 leases", || pending_rows(pg, db) == 4);
    (a, clients)
}
