//! Hostile tests of issue 22: a front-end on PostgreSQL through failures
//! and odd settings — readiness that follows whether writes commit, the
//! log once per change, the replication state, multi-host URLs — against
//! docs/postgres.md ("Readiness", "What a failover can lose", "Seeing
//! replication and failovers") and docs/observability.md.

#[path = "common/autofailover.rs"]
mod autofailover;
mod common;
#[path = "common/history.rs"]
mod history;
#[path = "common/pg.rs"]
mod pg;

use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, Server, admin_addr, get};
use nix::sys::signal::Signal;
use pg::Postgres;

const ADMIN: &str = "[admin]\nlisten = [\"127.0.0.1:0\"]\n";

/// A front-end on `url` with an admin listener; `extra` adds keys to
/// `[storage.postgres]`.
fn front(url: &str, extra: &str) -> Server {
    Server::start(&format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{url}\"\n\
         connect_timeout_secs = 10\n{extra}\n{ADMIN}"
    ))
}

fn gauge(metrics: &str, key: &str) -> Option<String> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::to_string))
}

/// The replication state whose gauge is 1.
fn state(admin: SocketAddr) -> String {
    let metrics = get(admin, "/metrics").2;
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("jnhpd_postgres_replication{state=\"")?
                .strip_suffix("\"} 1")
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("none in:\n{metrics}"))
}

/// Waits until the replication statement was read once (timeline known),
/// then a little more than one renewal so a state settles.
fn wait_for(admin: SocketAddr, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = get(admin, "/metrics").2;
        if check(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{metrics}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn wait_state(admin: SocketAddr, expected: &str) -> String {
    let key = format!("jnhpd_postgres_replication{{state=\"{expected}\"}}");
    wait_for(admin, &format!("state {expected}"), |m| {
        gauge(m, &key).as_deref() == Some("1")
    })
}

fn set_system(pg: &Postgres, name: &str, value: &str) {
    pg.psql("postgres", &format!("ALTER SYSTEM SET {name} = '{value}'"));
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let deadline = Instant::now() + PATIENCE;
    while pg.psql("postgres", &format!("SHOW {name}")) != value {
        assert!(Instant::now() < deadline, "{name} never took");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A database owned by a plain role `jnhp` (no superuser, no pg_monitor),
/// and a socket URL for it (trust on the socket).
fn plain_role(pg: &Postgres) -> String {
    pg.psql("postgres", "CREATE ROLE jnhp LOGIN");
    pg.psql("postgres", "CREATE DATABASE t OWNER jnhp");
    format!(
        "host={} port={} user=jnhp dbname=t",
        pg.dir.display(),
        pg.port
    )
}

fn jnhp_stats(admin: SocketAddr) -> String {
    let jnhp = Path::new(&common::bin()).parent().unwrap().join("jnhp");
    let out = std::process::Command::new(jnhp)
        .args(["stats", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// CPU time (user + system, in clock ticks) a process used so far.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A role without pg_monitor cannot see standbys: the state is `unknown`,
/// standbys -1 — not a guessed `no_standby` (docs: "reports the
/// replication state as `unknown` rather than guess"). Granting
/// pg_monitor makes it `no_standby`.
#[test]
fn a_role_without_pg_monitor_is_unknown_not_guessed() {
    require!(Postgres);
    let pg = Postgres::start();
    let url = plain_role(&pg);
    let f = front(&url, "lease_secs = 3");
    let admin = admin_addr(&f);
    assert_eq!(f.connect().ask("STORE a 1"), "W00T!");
    let metrics = wait_for(admin, "timeline read", |m| {
        gauge(m, "jnhpd_postgres_timeline").is_some_and(|t| t != "0")
    });
    // Two more renewals for good measure.
    thread::sleep(Duration::from_millis(2500));
    let metrics2 = get(admin, "/metrics").2;
    assert_eq!(state(admin), "unknown", "{metrics}");
    assert_eq!(
        gauge(&metrics2, "jnhpd_postgres_standbys").as_deref(),
        Some("-1")
    );
    assert_eq!(
        gauge(&metrics2, "jnhpd_postgres_sync_standbys").as_deref(),
        Some("-1")
    );
    assert_eq!(get(admin, "/readyz").0, 200);
    let status = get(admin, "/status").2;
    assert!(status.contains("\"replication\":\"unknown\""), "{status}");
    // `jnhp stats` says it cannot see them, not "-1 standbys".
    let stats = jnhp_stats(admin);
    assert!(stats.contains("replication  unknown"), "{stats}");
    assert!(!stats.contains("-1"), "{stats}");
    pg.psql("postgres", "GRANT pg_monitor TO jnhp");
    wait_state(admin, "no_standby");
}

/// Revoking EXECUTE on pg_logical_emit_message: docs say `/readyz` says
/// `postgres writes do not commit`, the log names the permission error;
/// granting it back turns the front-end ready by itself. Meanwhile STOREs
/// of fresh names must not make readiness flap nor the log repeat the
/// change ("Each change is logged once").
#[test]
fn revoked_emit_message_makes_writes_fail_without_flapping() {
    require!(Postgres);
    let pg = Postgres::start();
    let url = plain_role(&pg);
    let f = front(&url, "lease_secs = 3\nrequest_timeout_ms = 1500");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    pg.psql(
        "t",
        "REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) FROM PUBLIC",
    );
    // Seen by the regular check within a renewal or two.
    wait_for(admin, "writable 0", |m| {
        gauge(m, "jnhpd_postgres_writable").as_deref() == Some("0")
    });
    f.log.wait_for("pg_logical_emit_message");
    let mut replies = Vec::new();
    let mut statuses = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    let mut i = 0;
    while Instant::now() < until {
        replies.push((format!("f{i}"), c.ask(&format!("STORE f{i} v"))));
        statuses.push(get(admin, "/readyz"));
        i += 1;
    }
    // (STORE a on `f` may be answered from its cache.) A STORE that met
    // a row, and a GET of an uncached stored name, on a cache-free
    // front-end: both fail.
    let g = front(
        &url,
        "lease_secs = 3\nrequest_timeout_ms = 1500\ncache_bytes = 0",
    );
    let mut cg = g.connect();
    assert_eq!(cg.ask("STORE a 2"), "ERROR storage unavailable");
    assert_eq!(cg.ask("GET a"), "ERROR storage unavailable");
    assert_eq!(cg.ask("EXISTS a"), "ERROR storage unavailable");
    let not_ready: Vec<_> = statuses.iter().filter(|s| s.0 != 503).collect();
    assert!(
        not_ready.is_empty(),
        "readyz 200 {} times of {} while the check fails; log:\n{}",
        not_ready.len(),
        statuses.len(),
        f.log.all()
    );
    assert_eq!(
        statuses[0].2,
        "postgres writes do not commit (STOREs fail until they do)\n"
    );
    assert_eq!(f.log.count("writes do not commit"), 1, "{}", f.log.all());
    pg.psql(
        "t",
        "GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO PUBLIC",
    );
    f.log.wait_for("writes commit again");
    assert_eq!(get(admin, "/readyz").0, 200);
    // Every W00T! is in the table.
    for (name, reply) in &replies {
        if reply == "W00T!" {
            assert_eq!(c.ask(&format!("GET {name}")), "v");
        }
    }
}

/// Revoking pg_walfile_name (used for the timeline): the replication
/// statement fails → `unknown` ("the statement failed"), but writes still
/// commit, so the front-end must stay ready and writable.
#[test]
fn revoked_walfile_name_is_unknown_but_still_ready() {
    require!(Postgres);
    let pg = Postgres::start();
    let url = plain_role(&pg);
    pg.psql("postgres", "GRANT pg_monitor TO jnhp");
    pg.psql(
        "t",
        "REVOKE EXECUTE ON FUNCTION pg_walfile_name(pg_lsn) FROM PUBLIC",
    );
    let f = front(&url, "lease_secs = 3");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    thread::sleep(Duration::from_secs(4));
    assert_eq!(c.ask("STORE b 1"), "W00T!");
    let (status, _, body) = get(admin, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"), "{}", f.log.all());
    let metrics = get(admin, "/metrics").2;
    assert_eq!(
        gauge(&metrics, "jnhpd_postgres_writable").as_deref(),
        Some("1"),
        "{}",
        f.log.all()
    );
    assert_eq!(state(admin), "unknown");
    // The failure is said, once, not every second.
    assert!(f.log.count("pg_walfile_name") <= 1, "{}", f.log.all());
}

/// synchronous_standby_names naming more standbys than exist
/// ('ANY 2 (a)'): `waiting`, not ready; held for seconds the change is
/// logged once; flapped back and forth quickly, the front-end ends ready
/// and the log says at most one line per change; no acknowledged STORE
/// missing.
#[test]
fn standby_names_waiting_then_flapping() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 1500");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    wait_state(admin, "no_standby");
    set_system(&pg, "synchronous_standby_names", "ANY 2 (a)");
    wait_state(admin, "waiting");
    assert_eq!(c.ask("STORE b 1"), "ERROR storage unavailable");
    let (status, _, body) = get(admin, "/readyz");
    assert_eq!(
        (status, body.as_str()),
        (
            503,
            "postgres writes do not commit (STOREs fail until they do)\n"
        )
    );
    thread::sleep(Duration::from_secs(4));
    assert_eq!(f.log.count("writes do not commit"), 1, "{}", f.log.all());
    assert_eq!(f.log.count("replication waiting"), 1, "{}", f.log.all());
    // Flap.
    let mut woots = vec!["a".to_string()];
    for round in 0..6 {
        let value = if round % 2 == 0 { "" } else { "nobody" };
        set_system(&pg, "synchronous_standby_names", value);
        let name = format!("flap{round}");
        if c.ask(&format!("STORE {name} v")) == "W00T!" {
            woots.push(name);
        }
    }
    set_system(&pg, "synchronous_standby_names", "");
    f.log.wait_for("writes commit again");
    let deadline = Instant::now() + PATIENCE;
    while get(admin, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", f.log.all());
        thread::sleep(Duration::from_millis(100));
    }
    wait_state(admin, "no_standby");
    assert_eq!(c.ask("STORE z 1"), "W00T!");
    // 1 + up to 4 flaps (it may miss some), never more.
    assert!(f.log.count("writes do not commit") <= 5, "{}", f.log.all());
    assert!(f.log.count("writes commit again") <= 5, "{}", f.log.all());
    for name in woots {
        assert_eq!(
            pg.psql(
                &db,
                &format!("SELECT count(*) FROM jnhp_names WHERE name = '{name}'::bytea")
            ),
            "1"
        );
    }
}

/// synchronous_commit = local for jnhpd's role with a synchronous standby
/// named that does not exist: commits do not wait, so writes commit
/// (ready), and the state says commits do not wait (`no_standby`: no
/// standby streams) — not `waiting`, not `sync`.
#[test]
fn synchronous_commit_local_for_the_role_is_not_waiting() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    pg.psql(
        "postgres",
        "ALTER ROLE postgres SET synchronous_commit = local",
    );
    set_system(&pg, "synchronous_standby_names", "nobody");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 1500");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    assert_eq!(c.ask("GET a"), "1");
    wait_for(admin, "timeline read", |m| {
        gauge(m, "jnhpd_postgres_timeline").is_some_and(|t| t != "0")
    });
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(state(admin), "no_standby", "{}", f.log.all());
    assert_eq!(get(admin, "/readyz").0, 200);
    // And `off`, for the database: the same.
    pg.psql(&db, "ALTER DATABASE t SET synchronous_commit = off");
    let g = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 1500");
    let admin_g = admin_addr(&g);
    assert_eq!(g.connect().ask("STORE b 1"), "W00T!");
    wait_for(admin_g, "timeline read", |m| {
        gauge(m, "jnhpd_postgres_timeline").is_some_and(|t| t != "0")
    });
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(state(admin_g), "no_standby", "{}", g.log.all());
}

/// The LISTEN backends now on the server.
fn listen_backends(pg: &Postgres) -> u32 {
    pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'",
    )
    .parse()
    .unwrap()
}

/// PostgreSQL restarted three times (no promotion): no failover counted,
/// timeline 1; `/status` and `jnhp stats` answer at once while it is
/// down; at most one "reachable again" per outage; the LISTEN connection
/// is made again; every acknowledged STORE still there.
#[test]
fn restarts_are_not_failovers_and_status_answers_while_down() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 1500");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    let mut woots = Vec::new();
    for round in 0..3 {
        let name = format!("n{round}");
        assert_eq!(c.ask(&format!("STORE {name} v")), "W00T!");
        woots.push(name);
        wait_for(admin, "timeline read", |m| {
            gauge(m, "jnhpd_postgres_timeline").is_some_and(|t| t != "0")
        });
        pg.stop_immediate();
        let started = Instant::now();
        assert_eq!(c.ask("STORE down v"), "ERROR storage unavailable");
        assert!(started.elapsed() < Duration::from_secs(5));
        let t = Instant::now();
        let status = get(admin, "/status");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(status.2.contains("\"ready\":false"), "{}", status.2);
        let t = Instant::now();
        let stats = jnhp_stats(admin);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(stats.contains("postgres"), "{stats}");
        assert_eq!(get(admin, "/readyz").0, 503);
        pg.start_again();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let name = format!("back{round}");
            if c.ask(&format!("STORE {name} v")) == "W00T!" {
                woots.push(name);
                break;
            }
            assert!(Instant::now() < deadline, "not back");
        }
    }
    let deadline = Instant::now() + PATIENCE;
    while listen_backends(&pg) != 1 {
        assert!(
            Instant::now() < deadline,
            "no LISTEN connection:\n{}",
            f.log.all()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let metrics = get(admin, "/metrics").2;
    assert_eq!(
        gauge(&metrics, "jnhpd_postgres_failovers_total").as_deref(),
        Some("0")
    );
    assert_eq!(
        gauge(&metrics, "jnhpd_postgres_timeline").as_deref(),
        Some("1")
    );
    assert!(
        !f.log.all().contains("the primary changed"),
        "{}",
        f.log.all()
    );
    assert!(f.log.count("reachable again") <= 3, "{}", f.log.all());
    for name in woots {
        assert_eq!(c.ask(&format!("GET {name}")), "v");
        assert_eq!(
            pg.psql(
                &db,
                &format!("SELECT count(*) FROM jnhp_names WHERE name = '{name}'::bytea")
            ),
            "1"
        );
    }
}

/// Docs (Readiness, observability.md): `/readyz` answers 503 `postgres
/// unreachable` while statements are not answered, `jnhpd_postgres_up` is
/// 0, `/status` says `"reachable":false`. That must hold for every
/// outage, not only the first: PostgreSQL stopped, started, stopped again.
#[test]
fn every_outage_shows_as_unreachable() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 1500");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    for round in 0..2 {
        let deadline = Instant::now() + PATIENCE;
        while c.ask(&format!("STORE n{round} v")) != "W00T!" {
            assert!(Instant::now() < deadline, "not back");
        }
        pg.stop_immediate();
        let started = Instant::now();
        assert_eq!(c.ask("STORE down v"), "ERROR storage unavailable");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = get(admin, "/readyz").2;
            let up = gauge(&get(admin, "/metrics").2, "jnhpd_postgres_up");
            let status = get(admin, "/status").2;
            if ready == "postgres unreachable\n"
                && up.as_deref() == Some("0")
                && status.contains("\"reachable\":false")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "outage {round}: PostgreSQL down {:?}, readyz {ready:?}, \
                 jnhpd_postgres_up {up:?}, status {status}\nlog:\n{}",
                started.elapsed(),
                f.log.all()
            );
            thread::sleep(Duration::from_millis(200));
        }
        pg.start_again();
    }
}

/// The whole PostgreSQL frozen (SIGSTOP postmaster and backends) for
/// 10 s: every reply within its bound (`ERROR storage unavailable`), the
/// admin endpoints answer, readyz turns 503; after SIGCONT service
/// resumes by itself and no acknowledged STORE is missing.
#[test]
fn a_frozen_postgres_costs_bounded_replies_and_loses_nothing() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 1500");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a v"), "W00T!");
    let pid: i32 = std::fs::read_to_string(pg.dir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut pids = vec![pid];
    pids.extend(common::children_of(pid).into_iter().map(|(p, _)| p));
    let sig = |s: Signal| {
        for p in &pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), s);
        }
    };
    sig(Signal::SIGSTOP);
    let frozen = Instant::now();
    let mut woots = vec!["a".to_string()];
    let mut slowest = Duration::ZERO;
    let mut saw_503 = false;
    let rss_before = f.rss_kib();
    let mut i = 0;
    while frozen.elapsed() < Duration::from_secs(10) {
        let name = format!("fz{i}");
        let t = Instant::now();
        let reply = c.ask(&format!("STORE {name} v"));
        slowest = slowest.max(t.elapsed());
        if reply == "W00T!" {
            woots.push(name);
        } else {
            assert_eq!(reply, "ERROR storage unavailable");
        }
        let t = Instant::now();
        let (status, _, _) = get(admin, "/readyz");
        assert!(t.elapsed() < Duration::from_secs(3), "readyz slow");
        saw_503 |= status == 503;
        i += 1;
    }
    let t = Instant::now();
    let _ = get(admin, "/status");
    assert!(t.elapsed() < Duration::from_secs(3), "status slow");
    sig(Signal::SIGCONT);
    assert!(
        slowest < Duration::from_millis(1500 * 2 + 2500),
        "{slowest:?}"
    );
    assert!(saw_503, "never 503 while frozen:\n{}", f.log.all());
    assert!(f.rss_kib() < rss_before + 50_000);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let name = format!("after{i}");
        i += 1;
        if c.ask(&format!("STORE {name} v")) == "W00T!" {
            woots.push(name);
            break;
        }
        assert!(Instant::now() < deadline, "not back");
    }
    let deadline = Instant::now() + PATIENCE;
    while get(admin, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", f.log.all());
        thread::sleep(Duration::from_millis(100));
    }
    for name in woots {
        assert_eq!(
            pg.psql(
                &db,
                &format!("SELECT count(*) FROM jnhp_names WHERE name = '{name}'::bytea")
            ),
            "1",
            "{name}"
        );
    }
}

/// A multi-host URL with an unreachable port, duplicates, and a Unix
/// socket after TCP hosts: the front-end finds the writable one and names
/// it in server_info.
#[test]
fn a_host_list_with_duplicates_dead_ports_and_a_socket() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!(
        "host=127.0.0.1,127.0.0.1,{dir},{dir} port={dead},{dead},{p},{p} user=postgres dbname={db}",
        dir = pg.dir.display(),
        p = pg.port
    );
    let f = front(&url, "lease_secs = 3\nrequest_timeout_ms = 3000");
    let admin = admin_addr(&f);
    assert_eq!(f.connect().ask("STORE a 1"), "W00T!");
    let metrics = get(admin, "/metrics").2;
    let info = format!(
        "jnhpd_postgres_server_info{{server=\"host {} port {}",
        pg.dir.display(),
        pg.port
    );
    assert!(metrics.contains(&info), "{metrics}");
    // TCP form, with duplicates and a dead port first.
    let url = format!(
        "postgres://postgres@127.0.0.1:{dead},127.0.0.1:{dead},127.0.0.1:{p},127.0.0.1:{p}/{db}?sslmode=disable",
        p = pg.port
    );
    let g = front(&url, "lease_secs = 3\nrequest_timeout_ms = 3000");
    assert_eq!(g.connect().ask("GET a"), "1");
    // Restart: both follow it.
    pg.stop_immediate();
    pg.start_again();
    for s in [&f, &g] {
        let mut c = s.connect();
        let deadline = Instant::now() + PATIENCE;
        while c.ask("EXISTS a") != "AWESOME!" || c.ask(&format!("STORE x{} 1", s.pid())) != "W00T!"
        {
            assert!(Instant::now() < deadline, "not back");
        }
    }
}

/// request_timeout_ms = 1 and lease_secs = 1 (both in range): no CPU spin
/// while idle (the write check runs every 1/3 s, not in a loop), STOREs
/// answer, and while PostgreSQL is down the front-end does not burn CPU.
#[test]
fn tiny_timeouts_do_not_spin() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 1\nrequest_timeout_ms = 1");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    for i in 0..20 {
        let r = c.ask(&format!("STORE t{i} v"));
        assert!(r == "W00T!" || r == "ERROR storage unavailable", "{r}");
    }
    let before = cpu_ticks(f.pid());
    thread::sleep(Duration::from_secs(5));
    let idle = cpu_ticks(f.pid()) - before;
    // 5 s of wall time; 100 ticks a second. A spin would use ~500.
    assert!(idle < 100, "idle CPU {idle} ticks in 5 s:\n{}", f.log.all());
    pg.stop_immediate();
    let before = cpu_ticks(f.pid());
    thread::sleep(Duration::from_secs(5));
    let down = cpu_ticks(f.pid()) - before;
    assert!(down < 100, "CPU while down {down} ticks in 5 s");
    assert_eq!(get(admin, "/readyz").0, 503);
    let lines = f.log.all().lines().count();
    assert!(lines < 200, "log flood while down: {lines} lines");
    pg.start_again();
    let deadline = Instant::now() + PATIENCE;
    let mut ok = false;
    while Instant::now() < deadline {
        if c.ask(&format!(
            "STORE up{} v",
            Instant::now().elapsed().as_nanos()
        )) == "W00T!"
        {
            ok = true;
            break;
        }
    }
    let _ = ok; // with a 1 ms bound a STORE may never make it; no assertion
    let _ = Client::connect(f.addr());
}

/// The LISTEN backend terminated in a loop: the front-end keeps serving,
/// its STOREs answer, and the log does not grow without bound.
#[test]
fn the_listen_backend_killed_in_a_loop() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 1500");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    let mut killed = 0;
    for i in 0..15 {
        let n = pg.psql(
            "postgres",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query ILIKE 'LISTEN%'",
        );
        killed += n.parse::<u32>().unwrap_or(0);
        assert_eq!(c.ask(&format!("STORE k{i} v")), "W00T!", "{}", f.log.all());
        thread::sleep(Duration::from_millis(200));
    }
    assert!(killed >= 3, "LISTEN backend never found ({killed})");
    assert_eq!(get(admin, "/readyz").0, 200);
    assert!(
        f.log.count("LISTEN connection was lost") <= 15,
        "{}",
        f.log.all()
    );
}

/// "Served means as durable as acknowledged": with a synchronous standby
/// named that never confirms, a row another tool committed with
/// `synchronous_commit = local` is visible on the primary but not
/// replicated. No GET value, no `AWESOME!`, no `RARGH!` may rest on it
/// (`ERROR storage unavailable`); a miss still answers at once; once the
/// setting is reset, the row is served.
#[test]
fn an_unreplicated_row_is_never_served() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 1500");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    set_system(&pg, "synchronous_standby_names", "nobody");
    pg.psql(
        &db,
        "SET synchronous_commit = local; INSERT INTO jnhp_names (name, value, stored_by, write_id) \
         VALUES ('ghost'::bytea, 'boo'::bytea, 'psql', 1)",
    );
    let t = Instant::now();
    assert_eq!(c.ask("GET ghost"), "ERROR storage unavailable");
    assert_eq!(c.ask("EXISTS ghost"), "ERROR storage unavailable");
    assert_eq!(c.ask("STORE ghost x"), "ERROR storage unavailable");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    // Pipelined with a miss: answered together, both ERROR or the miss
    // empty — never the value.
    c.send(b"GET nothing\r\nGET ghost\r\n");
    let (r1, r2) = (c.reply(), c.reply());
    assert!(r1.is_empty() || r1 == "ERROR storage unavailable", "{r1}");
    assert_eq!(r2, "ERROR storage unavailable");
    // A miss alone answers at once.
    let t = Instant::now();
    assert_eq!(c.ask("GET nothing2"), "");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    // Cached names still answer.
    assert_eq!(c.ask("GET a"), "1");
    assert_eq!(get(admin, "/readyz").0, 503);
    set_system(&pg, "synchronous_standby_names", "");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = c.ask("GET ghost");
        if r == "boo" {
            break;
        }
        assert_eq!(r, "ERROR storage unavailable");
        assert!(Instant::now() < deadline, "never served");
    }
    assert_eq!(c.ask("STORE ghost y"), "RARGH!");
}

/// The wait for the synchronous standby cancelled (pg_cancel_backend) in
/// a loop while STOREs are sent: PostgreSQL tells success with a WARNING;
/// no STORE may get `W00T!` (nor `RARGH!` for its own row) while the
/// standby never confirmed; `jnhpd_postgres_unconfirmed_commits_total`
/// counts them. After the reset, GET serves them (they are committed).
#[test]
fn cancelled_sync_waits_are_never_acknowledged() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 2000");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    set_system(&pg, "synchronous_standby_names", "nobody");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let canceller = {
        let stop = stop.clone();
        let dir = pg.dir.clone();
        let port = pg.port;
        thread::spawn(move || {
            let psql = common::need::postgres_bindir().unwrap().join("psql");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::process::Command::new(&psql)
                    .args(["-X", "-q", "-A", "-t", "-h"])
                    .arg(&dir)
                    .args([
                        "-p",
                        &port.to_string(),
                        "-U",
                        "postgres",
                        "-d",
                        "postgres",
                        "-c",
                    ])
                    .arg(
                        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                         WHERE wait_event = 'SyncRep'",
                    )
                    .output();
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut replies = Vec::new();
    for i in 0..8 {
        let t = Instant::now();
        let r = c.ask(&format!("STORE s{i} v{i}"));
        replies.push((i, r.clone(), t.elapsed()));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    canceller.join().unwrap();
    for (i, r, took) in &replies {
        assert_eq!(r, "ERROR storage unavailable", "s{i}");
        assert!(*took < Duration::from_secs(7), "s{i} took {took:?}");
    }
    let metrics = get(admin, "/metrics").2;
    let unconfirmed: u64 = gauge(&metrics, "jnhpd_postgres_unconfirmed_commits_total")
        .unwrap()
        .parse()
        .unwrap();
    assert!(unconfirmed >= 1, "{metrics}");
    set_system(&pg, "synchronous_standby_names", "");
    f.log.wait_for("writes commit again");
    // Each one is either stored with its own value, or free.
    for i in 0..8 {
        let r = c.ask(&format!("GET s{i}"));
        assert!(r.is_empty() || r == format!("v{i}"), "s{i}: {r}");
    }
}

/// The database dropped under a running front-end (WITH (FORCE)), then
/// made again with the tables of docs/postgres.md "Tables": meanwhile
/// `ERROR storage unavailable`, `/readyz` 503, `/status` answers, the log
/// bounded; then it serves again by itself.
#[test]
fn the_database_dropped_and_made_again() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 1500");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    pg.psql("postgres", "DROP DATABASE t WITH (FORCE)");
    let lines_before = f.log.all().lines().count();
    let until = Instant::now() + Duration::from_secs(6);
    let mut i = 0;
    while Instant::now() < until {
        let t = Instant::now();
        assert_eq!(c.ask(&format!("STORE d{i} v")), "ERROR storage unavailable");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(c.ask(&format!("GET d{i}")), "ERROR storage unavailable");
        i += 1;
    }
    assert_eq!(c.ask("GET a"), "1", "cached");
    assert_eq!(get(admin, "/readyz").0, 503);
    let status = get(admin, "/status").2;
    assert!(status.contains("\"ready\":false"), "{status}");
    let grown = f.log.all().lines().count() - lines_before;
    assert!(grown < 30, "{grown} log lines in 6 s:\n{}", f.log.all());
    pg.psql("postgres", "CREATE DATABASE t");
    pg.psql(
        "t",
        "CREATE TABLE jnhp_names (name bytea PRIMARY KEY, value bytea NOT NULL, \
         stored_by text NOT NULL, write_id bigint NOT NULL, \
         stored_at timestamptz NOT NULL DEFAULT now()); \
         CREATE TABLE jnhp_pending (name bytea PRIMARY KEY, owner text NOT NULL, \
         lease bigint NOT NULL, expires_at timestamptz NOT NULL); \
         COMMENT ON TABLE jnhp_names IS 'jnhp schema 1'",
    );
    let deadline = Instant::now() + PATIENCE;
    while c.ask("STORE back v") != "W00T!" {
        assert!(Instant::now() < deadline, "never back:\n{}", f.log.all());
    }
    let deadline = Instant::now() + PATIENCE;
    while get(admin, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", f.log.all());
        thread::sleep(Duration::from_millis(100));
    }
}

/// A flood of pipelined STOREs while writes do not commit (a standby
/// named that never confirms): every reply `ERROR storage unavailable`,
/// in order, none later than its bound past the last request; memory
/// bounded.
#[test]
fn a_flood_while_writes_do_not_commit() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 1500");
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    let rss_before = f.rss_kib();
    set_system(&pg, "synchronous_standby_names", "nobody");
    let clients: Vec<_> = (0..4)
        .map(|k| {
            let addr = f.addr();
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                let n = 5000;
                let batch: String = (0..n).map(|i| format!("STORE fl{k}x{i} v\r\n")).collect();
                let sent = Instant::now();
                c.send(batch.as_bytes());
                let mut errors = 0;
                for _ in 0..n {
                    let r = c.reply();
                    assert_eq!(r, "ERROR storage unavailable");
                    errors += 1;
                }
                (errors, sent.elapsed())
            })
        })
        .collect();
    for h in clients {
        let (errors, took) = h.join().unwrap();
        assert_eq!(errors, 5000);
        assert!(took < Duration::from_secs(60), "{took:?}");
    }
    let rss = f.rss_kib();
    assert!(rss < rss_before + 100_000, "{rss_before} -> {rss} KiB");
    set_system(&pg, "synchronous_standby_names", "");
    f.log.wait_for("writes commit again");
    // Backends stuck in SyncRep are released by the reset; STOREs work.
    let deadline = Instant::now() + PATIENCE;
    while c.ask("STORE after v") != "W00T!" {
        assert!(Instant::now() < deadline, "never back:\n{}", f.log.all());
    }
}

/// Every log line of the front-end starts with its timestamp prefix.
fn forged_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| !l.contains("jnhpd["))
        .map(str::to_string)
        .collect()
}

/// Strings PostgreSQL hands jnhpd end up in its log: a WARNING raised by
/// a trigger (logged as `postgres: WARNING: …`) and
/// `synchronous_standby_names` (quoted in the replication line). A
/// newline or an ESC in them must not start a new log line or reach the
/// terminal raw (security.md: control characters escaped).
#[test]
fn strings_from_postgres_cannot_forge_log_lines() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 1500");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    wait_state(admin, "no_standby");
    pg.psql(
        &db,
        "CREATE FUNCTION warn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         RAISE WARNING '%', E'trigger\\n2026-01-01T00:00:00Z jnhpd[1]: INFO: FORGED-W \\x1b[31mred'; \
         RETURN NEW; END $$; \
         CREATE TRIGGER w BEFORE INSERT ON jnhp_names FOR EACH ROW EXECUTE FUNCTION warn()",
    );
    let r = c.ask("STORE b 1");
    assert!(r == "ERROR storage unavailable" || r == "W00T!", "{r}");
    f.log.wait_for("trigger");
    // An error's message, in "writes do not commit (…)".
    pg.psql(
        &db,
        "CREATE OR REPLACE FUNCTION warn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         RAISE EXCEPTION '%', E'boom\\n2026-01-01T00:00:00Z jnhpd[1]: INFO: FORGED-E'; \
         END $$",
    );
    let deadline = Instant::now() + PATIENCE;
    while !f.log.all().contains("boom") {
        let _ = c.ask("STORE c 1");
        assert!(Instant::now() < deadline, "{}", f.log.all());
    }
    pg.psql(&db, "DROP TRIGGER w ON jnhp_names");
    // The standby names, through the config file (its `\n` escape).
    let conf = pg.dir.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nsynchronous_standby_names = '\"s\\nFORGED-S \\x1b[31m\"'\n");
    std::fs::write(&conf, text).unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()");
    wait_state(admin, "waiting");
    f.log.wait_for("replication waiting");
    let log = f.log.all();
    assert!(!log.contains('\x1b'), "ESC in the log:\n{log}");
    let forged = forged_lines(&log);
    assert!(forged.is_empty(), "lines not jnhpd's: {forged:?}\n{log}");
}

/// A read-only server behind the URL (`default_transaction_read_only`
/// turned on by a reload, as some tools fence an old primary): docs
/// (Readiness) list "a read-only server behind the URL" among the cases
/// of 503 `postgres writes do not commit`. STOREs get `ERROR storage
/// unavailable`; `/readyz` must say so and stay so, the log say it once.
#[test]
fn a_server_turned_read_only_is_not_ready() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 1500");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    set_system(&pg, "default_transaction_read_only", "on");
    let mut statuses = Vec::new();
    let until = Instant::now() + Duration::from_secs(6);
    let mut i = 0;
    while Instant::now() < until {
        let r = c.ask(&format!("STORE ro{i} v"));
        assert_eq!(r, "ERROR storage unavailable", "ro{i}");
        if i > 0 {
            statuses.push(get(admin, "/readyz"));
        }
        i += 1;
    }
    let ready: Vec<_> = statuses.iter().filter(|s| s.0 == 200).collect();
    assert!(
        ready.is_empty(),
        "/readyz 200 {} times of {} while every STORE fails:\n{}",
        ready.len(),
        statuses.len(),
        f.log.all()
    );
    assert_eq!(
        statuses.last().unwrap().2,
        "postgres writes do not commit (STOREs fail until they do)\n"
    );
    assert!(f.log.count("writes do not commit") <= 1, "{}", f.log.all());
    set_system(&pg, "default_transaction_read_only", "off");
    let deadline = Instant::now() + PATIENCE;
    while c.ask("STORE back v") != "W00T!" {
        assert!(Instant::now() < deadline, "never back:\n{}", f.log.all());
    }
}

/// One STORE that PostgreSQL refuses for a reason of its own (a CHECK
/// constraint another tool added on `jnhp_names`, allowed: "Columns added
/// by other tools are fine"), retried by its client: the rest of the
/// writes commit, so the front-end should not flap between "writes do
/// not commit" and "writes commit again" every second (log spam and
/// readiness flapping driven by one client's bytes).
#[test]
fn one_refused_store_does_not_flap_readiness() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    // Time enough for good statements on a loaded machine: only the
    // poisoned one fails.
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 2000");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    pg.psql(
        &db,
        "ALTER TABLE jnhp_names ADD CONSTRAINT no_poison CHECK (name <> 'poison'::bytea)",
    );
    let until = Instant::now() + Duration::from_secs(6);
    let mut statuses = Vec::new();
    while Instant::now() < until {
        assert_eq!(c.ask("STORE poison v"), "ERROR storage unavailable");
        statuses.push(get(admin, "/readyz").0);
    }
    let changes = f.log.count("writes do not commit") + f.log.count("writes commit again");
    assert!(
        changes <= 2,
        "{changes} changes logged in 6 s:\n{}",
        f.log.all()
    );
}

/// A STORE refused by PostgreSQL for its own row (a CHECK constraint
/// another tool added) must not take down STOREs of other names that
/// share its statement: "requests arriving together ... share one
/// statement", so a poisoned row fails the whole batch unless it is
/// split.
#[test]
fn a_refused_row_does_not_fail_the_others_in_its_batch() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 5000");
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    pg.psql(
        &db,
        "ALTER TABLE jnhp_names ADD CONSTRAINT no_poison CHECK (name <> 'poison'::bytea)",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poisoners: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let addr = f.addr();
            thread::spawn(move || {
                let mut p = Client::connect(addr);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    p.send("STORE poison v\r\n".repeat(10).as_bytes());
                    for _ in 0..10 {
                        assert_eq!(p.reply(), "ERROR storage unavailable");
                    }
                }
            })
        })
        .collect();
    let mut failed = Vec::new();
    for round in 0..20 {
        let batch: String = (0..5)
            .map(|i| format!("STORE good{round}x{i} v\r\n"))
            .collect();
        c.send(batch.as_bytes());
        for i in 0..5 {
            let r = c.reply();
            if r != "W00T!" {
                failed.push((format!("good{round}x{i}"), r));
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in poisoners {
        p.join().unwrap();
    }
    assert!(
        failed.is_empty(),
        "{} of 30 failed: {failed:?}",
        failed.len()
    );
}

/// One formation at a time (three PostgreSQL servers each).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A recording client: STORE/GET/EXISTS on a window of names that slides
/// with time, every request and reply kept.
fn record(
    client: String,
    addr: SocketAddr,
    start: Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    events: std::sync::Arc<std::sync::Mutex<Vec<history::Event>>>,
) {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut seq = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        seq += 1;
        let name = format!("k{}", start.elapsed().as_millis() as u64 / 50 + seq % 4);
        let op = match seq % 5 {
            0 | 1 => history::Op::Store(format!("{client}-{seq}")),
            2 | 3 => history::Op::Get,
            _ => history::Op::Exists,
        };
        let line = match &op {
            history::Op::Store(v) => format!("STORE {name} {v}\r\n"),
            history::Op::Get => format!("GET {name}\r\n"),
            history::Op::Exists => format!("EXISTS {name}\r\n"),
        };
        let sent = Instant::now();
        writer.write_all(line.as_bytes()).unwrap();
        let mut reply = String::new();
        let hung = !matches!(reader.read_line(&mut reply), Ok(n) if n > 0);
        let reply = if hung {
            "HANG".to_string()
        } else {
            reply.trim_end_matches("\r\n").to_string()
        };
        events.lock().unwrap().push(history::Event {
            client: client.clone(),
            name,
            op,
            sent,
            replied: Instant::now(),
            reply,
        });
        if hung {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The primary's whole node frozen (SIGSTOP: keeper, postmaster,
/// backends — a hung VM); pg_auto_failover promotes the standby; then the
/// old primary thaws (and is demoted by its keeper). Front-ends with
/// multi-host URLs (both orders): every reply within its bound, both
/// serve writes on the new primary by themselves, count one failover and
/// name the new server; no acknowledged or served name is missing from
/// the new primary, no name stored twice (tests/common/history.rs).
#[test]
fn a_frozen_primary_then_thawed_loses_nothing() {
    require!(AutoFailover);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let formation = autofailover::Formation::start();
    let primary = formation.primary();
    formation.psql(primary, "postgres", "GRANT pg_monitor TO jnhp");
    let url = |order: [usize; 2]| {
        format!(
            "postgres://jnhp@127.0.0.1:{},127.0.0.1:{}/jnhp?target_session_attrs=read-write&sslmode=disable",
            formation.nodes[order[0]].port, formation.nodes[order[1]].port
        )
    };
    let extra = "lease_secs = 3\nrequest_timeout_ms = 3000";
    let fronts = [front(&url([0, 1]), extra), front(&url([1, 0]), extra)];
    let admins = fronts.each_ref().map(admin_addr);
    for admin in admins {
        wait_state(admin, "sync");
    }
    let start = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for (i, f) in fronts.iter().enumerate() {
        for k in 0..2 {
            let (stop, events, addr) = (stop.clone(), events.clone(), f.addr());
            threads.push(thread::spawn(move || {
                record(format!("f{i}c{k}"), addr, start, stop, events)
            }));
        }
    }
    let woot_after = |front: usize, since: Instant| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let found = events.lock().unwrap().iter().any(|e: &history::Event| {
                e.client.starts_with(&format!("f{front}")) && e.sent >= since && e.reply == "W00T!"
            });
            if found {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "front-end {front}: no W00T!\n{}",
                formation.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    };
    woot_after(0, start);
    woot_after(1, start);
    formation.nodes[primary].signal(Signal::SIGSTOP);
    let frozen = Instant::now();
    formation.wait_writable(1 - primary);
    let promoted = Instant::now();
    for front in 0..2 {
        woot_after(front, promoted);
    }
    eprintln!(
        "frozen to promoted {:?}, to both writing {:?}",
        promoted - frozen,
        frozen.elapsed()
    );
    formation.nodes[primary].signal(Signal::SIGCONT);
    let thawed = Instant::now();
    while thawed.elapsed() < Duration::from_secs(8) {
        thread::sleep(Duration::from_millis(100));
    }
    for front in 0..2 {
        woot_after(front, Instant::now());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let events = std::mem::take(&mut *events.lock().unwrap());
    let new = formation.primary();
    assert_eq!(new, 1 - primary);
    let at_end: std::collections::HashMap<String, String> =
        formation.names(new).into_iter().collect();
    let (summary, violations) = history::check(&events, &at_end);
    if !violations.is_empty() {
        // When, relative to the freeze, each request about the names
        // involved was sent and answered.
        let at = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
        eprintln!(
            "frozen at {:.2}, promoted at {:.2}, thawed at {:.2}",
            at(frozen),
            at(promoted),
            at(thawed)
        );
        for v in &violations {
            let text = format!("{v:?}");
            for e in events
                .iter()
                .filter(|e| text.contains(&format!(" {} ", e.name)))
            {
                eprintln!("  {:.3}..{:.3} {e}", at(e.sent), at(e.replied));
            }
        }
    }
    eprintln!(
        "{} requests, {} W00T!, {} ERROR {:?}",
        summary.requests, summary.woots, summary.errors, summary.error_kinds
    );
    assert!(
        violations.is_empty(),
        "{} violations: {:#?}\nf0:\n{}\nf1:\n{}",
        violations.len(),
        &violations[..violations.len().min(10)],
        fronts[0].log.all(),
        fronts[1].log.all()
    );
    for e in &events {
        assert!(
            e.reply != "HANG"
                && (!e.reply.starts_with("ERROR") || e.reply == "ERROR storage unavailable"),
            "{e}"
        );
        assert!(
            e.replied - e.sent <= Duration::from_millis(3000 + 3000 + 2500),
            "took {:?}: {e}",
            e.replied - e.sent
        );
    }
    let port = formation.nodes[new].port;
    for (i, admin) in admins.into_iter().enumerate() {
        let metrics = wait_for(admin, "one failover", |m| {
            gauge(m, "jnhpd_postgres_failovers_total").as_deref() == Some("1")
        });
        assert!(
            metrics.contains(&format!("port {port} database jnhp\"}} 1")),
            "{metrics}"
        );
        assert_eq!(
            fronts[i].log.count("the primary changed"),
            1,
            "{}",
            fronts[i].log.all()
        );
        let deadline = Instant::now() + PATIENCE;
        while get(admin, "/readyz").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "never ready:\n{}",
                fronts[i].log.all()
            );
            thread::sleep(Duration::from_millis(100));
        }
        let stats = jnhp_stats(admin);
        assert!(stats.contains(&format!("port {port}")), "{stats}");
        assert!(stats.contains("failovers    1 seen"), "{stats}");
    }
}

/// A key repeated in the config file (easy when adding
/// `[storage.postgres]` keys for a failover setup): the start error names
/// file, line and key (configuration.md), not just "duplicate key".
#[test]
fn a_repeated_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(
        &path,
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"host=/tmp\"\n\
         connect_timeout_secs = 10\nlease_secs = 3\nconnect_timeout_secs = 30\n",
    )
    .unwrap();
    let (code, out) = common::run_to_exit(
        &["--check-config", "--config", path.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("jnhp.toml:7: connect_timeout_secs: duplicate key"),
        "{out}"
    );
}

/// Every backend of the front-end terminated (pg_terminate_backend) in a
/// loop while STOREs of distinct names flow: each STORE gets `W00T!` or
/// `ERROR storage unavailable` — never `RARGH!` for its own row — every
/// `W00T!` is in the table with its value, and every ERRORed one is
/// either absent or holds its own value.
#[test]
fn backends_terminated_in_a_loop_lose_nothing() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 2000");
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let dir = pg.dir.clone();
        let port = pg.port;
        thread::spawn(move || {
            let psql = common::need::postgres_bindir().unwrap().join("psql");
            let mut kills = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = std::process::Command::new(&psql)
                    .args(["-X", "-q", "-A", "-t", "-h"])
                    .arg(&dir)
                    .args(["-p", &port.to_string(), "-U", "postgres", "-d", "t", "-c"])
                    .arg(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE datname = 't' AND pid <> pg_backend_pid() \
                         AND backend_type = 'client backend'",
                    )
                    .output();
                if let Ok(out) = out {
                    kills += String::from_utf8_lossy(&out.stdout)
                        .trim()
                        .parse::<u32>()
                        .unwrap_or(0);
                }
                thread::sleep(Duration::from_millis(5));
            }
            kills
        })
    };
    let mut replies = Vec::new();
    for i in 0..1000 {
        let r = c.ask(&format!("STORE t{i} v{i}"));
        replies.push((i, r));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.join().unwrap();
    assert!(kills > 10, "{kills} backends terminated");
    let (mut woots, mut errors) = (0, 0);
    for (i, r) in &replies {
        let row = pg.psql(
            &db,
            &format!("SELECT encode(value, 'escape') FROM jnhp_names WHERE name = 't{i}'::bytea"),
        );
        match r.as_str() {
            "W00T!" => {
                woots += 1;
                assert_eq!(row, format!("v{i}"), "t{i} acknowledged, then missing");
            }
            "ERROR storage unavailable" => {
                errors += 1;
                assert!(row.is_empty() || row == format!("v{i}"), "t{i}: {row}");
            }
            other => panic!("t{i}: {other}"),
        }
    }
    eprintln!("{woots} W00T!, {errors} ERROR, {kills} backends terminated");
    assert!(woots > 0);
}

/// docs/postgres.md: `unknown` is the state when "the statement failed".
/// With PostgreSQL down, the replication statement fails at every renewal
/// (every second while writes fail): the state must not stay at the last
/// one read (`no_standby` here; `sync` on a formation, which would tell an
/// operator replication is fine while the primary is gone).
#[test]
fn the_replication_state_is_unknown_while_postgres_is_down() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 1500");
    let admin = admin_addr(&f);
    assert_eq!(f.connect().ask("STORE a 1"), "W00T!");
    wait_state(admin, "no_standby");
    pg.stop_immediate();
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(admin) != "unknown" {
        assert!(
            Instant::now() < deadline,
            "still {} 10 s after PostgreSQL stopped: {}",
            state(admin),
            get(admin, "/status").2
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// The server's name lands in a Prometheus label
/// (`jnhpd_postgres_server_info{server=…}`), in `/status` JSON and in log
/// lines. A socket directory whose path holds a quote, a backslash and a
/// newline (a symlink to the real one) must not break any of them.
#[test]
fn a_socket_path_with_quotes_and_a_newline_breaks_nothing() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let parent = tempfile::tempdir().unwrap();
    let link = parent.path().join("so\"ck\\et\nWARN: x");
    std::os::unix::fs::symlink(&pg.dir, &link).unwrap();
    let host = link.display().to_string();
    let url = format!(
        "host='{}' port={} user=postgres dbname={db}",
        host.replace('\\', "\\\\").replace('\'', "\\'"),
        pg.port
    );
    let f = front(
        &url.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
        "lease_secs = 3",
    );
    let admin = admin_addr(&f);
    assert_eq!(f.connect().ask("STORE a 1"), "W00T!");
    let metrics = get(admin, "/metrics").2;
    let info: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("server_info"))
        .collect();
    // One sample line, its label escaped as the text format wants.
    let samples: Vec<&&str> = info.iter().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(samples.len(), 1, "{info:?}");
    assert!(samples[0].contains("so\\\"ck\\\\et"), "{}", samples[0]);
    assert!(samples[0].ends_with("} 1"), "{}", samples[0]);
    for line in metrics.lines() {
        assert!(
            line.is_empty()
                || line.starts_with('#')
                || line.starts_with("jnhpd_")
                || line.starts_with("process_"),
            "a line broken off: {line:?}"
        );
    }
    let status = get(admin, "/status").2;
    assert_eq!(status.trim_end().lines().count(), 1, "{status}");
    assert!(forged_lines(&f.log.all()).is_empty(), "{}", f.log.all());
}

/// The always-read-write session at start: the only host behind the URL
/// is read-only (a fenced old primary, `default_transaction_read_only`):
/// the front-end does not start serving on it; it retries for
/// `connect_timeout_secs`, then exits 1 with the documented message and a
/// reason that says why (not writable), and `--check-config` says the
/// same.
#[test]
fn a_read_only_server_at_start_is_refused_clearly() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    set_system(&pg, "default_transaction_read_only", "on");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(
        &path,
        format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n\
             connect_timeout_secs = 2\n",
            pg.url(&db)
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (code, out) = common::start_fails(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        out.contains("cannot reach PostgreSQL at host") && out.contains("within 2 s"),
        "{out}"
    );
    assert!(
        out.contains("does not allow writes"),
        "no reason given: {out}"
    );
    let (code, check) = common::run_to_exit(
        &["--check-config", "--config", path.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 1, "{check}");
    assert!(check.contains("cannot reach PostgreSQL at host"), "{check}");
}

/// `request_timeout_ms` at its maximum (600,000) and PostgreSQL stopped:
/// a STORE waits (retried every 100 ms), but readiness must not wait ten
/// minutes to say so — the check fails at once (connection refused) —
/// and once PostgreSQL is back the waiting STORE is answered `W00T!`
/// and stored.
#[test]
fn a_huge_request_timeout_still_turns_not_ready_quickly() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let f = front(&pg.url(&db), "lease_secs = 3\nrequest_timeout_ms = 600000");
    let admin = admin_addr(&f);
    let mut c = f.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    pg.stop_immediate();
    c.send(b"STORE waiting v\r\n");
    let stopped = Instant::now();
    while get(admin, "/readyz").0 != 503 {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "still ready {:?} after PostgreSQL stopped:\n{}",
            stopped.elapsed(),
            f.log.all()
        );
        thread::sleep(Duration::from_millis(100));
    }
    pg.start_again();
    assert_eq!(c.reply(), "W00T!");
    assert_eq!(
        pg.psql(
            &db,
            "SELECT count(*) FROM jnhp_names WHERE name = 'waiting'::bytea"
        ),
        "1"
    );
    let deadline = Instant::now() + PATIENCE;
    while get(admin, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", f.log.all());
        thread::sleep(Duration::from_millis(100));
    }
}
