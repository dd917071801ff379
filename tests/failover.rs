//! Front-ends on a highly available PostgreSQL lose nothing through a
//! failover (issue 22, item 3): a pg_auto_failover formation
//! (tests/common/autofailover.rs), two front-ends with multi-host URLs
//! (`target_session_attrs=read-write`, the hosts in opposite orders),
//! recording clients racing on shared names through a planned switchover
//! and an unplanned failover (the primary's node killed), then the
//! write-once history checker (tests/common/history.rs).
//!
//! Run with `--nocapture` to see each front-end's unavailability (from the
//! fault to its first `W00T!` of a STORE sent after it).

#[path = "common/autofailover.rs"]
mod autofailover;
mod common;
#[path = "common/history.rs"]
mod history;
#[path = "common/pg.rs"]
mod pg;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use autofailover::Formation;
use common::{Server, process_validator, script};
use history::{Event, Op};

/// Each request's bound in jnhpd.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(3000);

/// What a reply may take beyond its bound (a busy machine's scheduling,
/// a batch's last round trip).
const SLACK: Duration = Duration::from_millis(2500);

/// The longest a reply may take: a request's timeout, or two for a
/// validated STORE in a shared namespace (its reservation, then its
/// commit: docs/postgres.md), plus the slack.
fn bound(event: &Event, validator: bool) -> Duration {
    match event.op {
        Op::Store(_) if validator => REQUEST_TIMEOUT * 2 + SLACK,
        _ => REQUEST_TIMEOUT + SLACK,
    }
}

/// How long a front-end may take to serve writes again after a fault.
const RECOVERY: Duration = Duration::from_secs(90);

/// Recording clients per front-end.
const CLIENTS: usize = 3;

/// One formation at a time: each takes three PostgreSQL servers and most
/// of a small machine's CPU while it fails over.
static SERIAL: Mutex<()> = Mutex::new(());

/// A front-end on `url`; `pg` adds keys to `[storage.postgres]`, `rest`
/// more tables.
fn front_end_with(url: &str, pg: &str, rest: &str) -> Server {
    Server::start(&format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{url}\"\n\
         lease_secs = 2\nrequest_timeout_ms = {}\n{pg}\n{rest}",
        REQUEST_TIMEOUT.as_millis()
    ))
}

fn front_end(url: &str, rest: &str) -> Server {
    front_end_with(url, "connect_timeout_secs = 30", rest)
}

/// A multi-host URL listing the nodes in the order given.
fn url(formation: &Formation, order: [usize; 2]) -> String {
    format!(
        "postgres://jnhp@127.0.0.1:{},127.0.0.1:{}/jnhp?target_session_attrs=read-write&sslmode=disable",
        formation.nodes[order[0]].port, formation.nodes[order[1]].port
    )
}

/// A tiny deterministic generator (no dependency for it).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Clients sending STORE/GET/EXISTS mixes on a window of names that
/// slides with time (each name is raced for a moment by every client of
/// both front-ends, then left), recording every request.
struct Recorder {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<(usize, Event)>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Recorder {
    fn start(fronts: &[SocketAddr], start: Instant) -> Recorder {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (front, addr) in fronts.iter().enumerate() {
            for c in 0..CLIENTS {
                let (stop, events, addr) = (stop.clone(), events.clone(), *addr);
                let client = format!("f{front}c{c}");
                let seed = (front * CLIENTS + c + 1) as u64;
                threads.push(thread::spawn(move || {
                    record(front, &client, seed, addr, start, &stop, &events)
                }));
            }
        }
        Recorder {
            stop,
            events,
            threads,
        }
    }

    /// The first `W00T!` of `front` for a STORE sent after `since`.
    fn first_woot(&self, front: usize, since: Instant) -> Option<Instant> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(f, e)| {
                *f == front && e.sent >= since && e.reply == "W00T!" && matches!(e.op, Op::Store(_))
            })
            .map(|(_, e)| e.replied)
            .min()
    }

    /// Waits until `front` has stored something sent after `since`;
    /// returns how long after `since` that was answered.
    fn wait_woot(&self, front: usize, since: Instant, formation: &Formation) -> Duration {
        loop {
            if let Some(at) = self.first_woot(front, since) {
                return at - since;
            }
            assert!(
                since.elapsed() < RECOVERY,
                "front-end {front} served no write within {RECOVERY:?} of the fault\n{}",
                formation.logs()
            );
            assert!(
                !self.stop.load(Ordering::Relaxed),
                "the clients stopped (a hang?)"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The longest time between `from` and `to` in which `front`
    /// answered no `W00T!`.
    fn longest_pause(&self, front: usize, from: Instant, to: Instant) -> Duration {
        let mut woots: Vec<Instant> = self
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|(f, e)| *f == front && e.reply == "W00T!" && e.replied > from)
            .map(|(_, e)| e.replied.min(to))
            .collect();
        woots.push(from);
        woots.push(to);
        woots.sort();
        woots
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    fn finish(self) -> Vec<(usize, Event)> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

/// One client's loop. A reply that takes longer than the request timeout
/// and the slack is recorded as a hang (the checker rejects it) and ends
/// the client.
fn record(
    front: usize,
    client: &str,
    seed: u64,
    addr: SocketAddr,
    start: Instant,
    stop: &AtomicBool,
    events: &Mutex<Vec<(usize, Event)>>,
) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT * 2 + SLACK))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x1000_0001));
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        // A new name every 40 ms, each raced over ~6 windows.
        let window = start.elapsed().as_millis() as u64 / 40;
        let name = format!("k{}", window + rng.below(6));
        let op = match rng.below(10) {
            0..=3 => Op::Store(format!("{client}-{seq}")),
            4..=7 => Op::Get,
            _ => Op::Exists,
        };
        let line = match &op {
            Op::Store(value) => format!("STORE {name} {value}\r\n"),
            Op::Get => format!("GET {name}\r\n"),
            Op::Exists => format!("EXISTS {name}\r\n"),
        };
        let sent = Instant::now();
        writer.write_all(line.as_bytes()).unwrap();
        let mut reply = String::new();
        let hung = match reader.read_line(&mut reply) {
            Ok(0) => {
                reply = "CLOSED (the front-end closed the connection)".into();
                true
            }
            Ok(_) => {
                reply = reply.trim_end_matches("\r\n").to_string();
                false
            }
            Err(_) => {
                reply = format!("HANG (no reply within {:?})", REQUEST_TIMEOUT * 2 + SLACK);
                true
            }
        };
        let event = Event {
            client: client.to_string(),
            name,
            op,
            sent,
            replied: Instant::now(),
            reply,
        };
        events.lock().unwrap().push((front, event));
        if hung {
            stop.store(true, Ordering::Relaxed);
            return;
        }
        // Pacing, not waiting for anything: six clients at full speed
        // would starve the failover itself of the machine's two cores.
        thread::sleep(Duration::from_millis(2));
    }
}

/// One scenario: a switchover, then the primary's node killed, with the
/// clients running throughout; then the history checked.
fn scenario(validator: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let began = Instant::now();
    let mut formation = Formation::start();
    let setup = began.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let rest = if validator {
        // Each STORE holds a lease while the validator runs.
        let allow = script(dir.path(), "allow", "sleep 0.05\necho JNHP:1");
        process_validator(&allow, "")
    } else {
        String::new()
    };
    // Item 4: what jnhpd sees of the replication. The role sees which
    // standby is synchronous only with pg_monitor; without it, "unknown".
    let expected = if validator {
        let primary = formation.primary();
        formation.psql(primary, "postgres", "GRANT pg_monitor TO jnhp");
        "sync"
    } else {
        "unknown"
    };
    let rest = format!("{rest}\n[admin]\nlisten = [\"127.0.0.1:0\"]\n");
    let fronts = [
        front_end(&url(&formation, [0, 1]), &rest),
        front_end(&url(&formation, [1, 0]), &rest),
    ];
    let admins = fronts.each_ref().map(common::admin_addr);
    let mut timelines = Vec::new();
    for admin in admins {
        wait_for_replication(admin);
        wait_for_gauge(
            admin,
            &format!("jnhpd_postgres_replication{{state=\"{expected}\"}}"),
            "1",
        );
        let metrics = common::get(admin, "/metrics").2;
        let sync = if validator { "1" } else { "-1" };
        assert_eq!(
            gauge(&metrics, "jnhpd_postgres_standbys").as_deref(),
            Some(sync),
            "{metrics}"
        );
        assert_eq!(
            gauge(&metrics, "jnhpd_postgres_sync_standbys").as_deref(),
            Some(sync),
            "{metrics}"
        );
        let timeline: u64 = gauge(&metrics, "jnhpd_postgres_timeline")
            .unwrap()
            .parse()
            .unwrap();
        timelines.push(timeline);
    }
    let start = Instant::now();
    let recorder = Recorder::start(&[fronts[0].addr(), fronts[1].addr()], start);
    for front in 0..2 {
        recorder.wait_woot(front, start, &formation);
    }

    let mut figures = Vec::new();
    for fault in ["switchover", "node killed"] {
        // Asked before the clock starts: the question takes a moment, and
        // the primary serves meanwhile.
        let primary = formation.primary();
        let at = Instant::now();
        let faulted = if fault == "switchover" {
            formation.switchover();
            Instant::now() - at
        } else {
            formation.kill_node(primary);
            formation.wait_writable(1 - primary);
            Duration::ZERO
        };
        for front in 0..2 {
            // A STORE sent once the fault is over (the switchover done, or
            // at once after the kill) must be stored within RECOVERY.
            let took = recorder.wait_woot(front, at + faulted, &formation);
            let paused = recorder.longest_pause(front, at, at + faulted + took);
            figures.push(format!(
                "{fault}: front-end {front}: fault to first W00T! {:.1?}, writes paused {paused:.1?}",
                faulted + took
            ));
        }
        if fault == "switchover" {
            formation.wait_stable();
        }
    }
    // A moment of normal service on the new primary.
    let after = Instant::now();
    while after.elapsed() < Duration::from_secs(1) {
        thread::sleep(Duration::from_millis(50));
    }
    let events = recorder.finish();
    // Two promotions: each front-end saw the timeline rise twice, and is
    // on the new primary.
    for (admin, timeline) in admins.into_iter().zip(timelines) {
        wait_for_gauge(admin, "jnhpd_postgres_failovers_total", "2");
        let metrics = common::get(admin, "/metrics").2;
        let now = (timeline + 2).to_string();
        assert_eq!(
            gauge(&metrics, "jnhpd_postgres_timeline"),
            Some(now),
            "{metrics}"
        );
        let port = formation.nodes[formation.primary()].port;
        assert!(
            metrics.contains(&format!("port {port} database jnhp\"}} 1")),
            "{metrics}"
        );
        eprintln!(
            "  after the failovers: replication {:?}",
            metrics
                .lines()
                .filter(|l| l.starts_with("jnhpd_postgres_replication{") && l.ends_with(" 1"))
                .collect::<Vec<_>>()
        );
    }

    let primary = formation.primary();
    let at_end: HashMap<String, String> = formation.names(primary).into_iter().collect();
    let (summary, violations) = history::check(
        &events.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        &at_end,
    );
    let mut by_time: Vec<&(usize, Event)> = events.iter().collect();
    by_time.sort_by_key(|(_, e)| std::cmp::Reverse(e.replied - e.sent));
    let slowest = by_time
        .first()
        .map(|(_, e)| e.replied - e.sent)
        .unwrap_or_default();
    for (front, e) in by_time.iter().take(5) {
        eprintln!(
            "  slow: front-end {front}: sent at {:.1?}, took {:.1?}: {e}",
            e.sent - start,
            e.replied - e.sent
        );
    }
    eprintln!(
        "failover scenario ({}): set-up {setup:.1?}, run {:.1?}; {} requests, {} W00T!, {} ERROR {:?}; slowest reply {slowest:.1?}\n  {}",
        if validator {
            "with a validator"
        } else {
            "no validator"
        },
        start.elapsed(),
        summary.requests,
        summary.woots,
        summary.errors,
        summary.error_kinds,
        figures.join("\n  ")
    );
    assert!(
        violations.is_empty(),
        "{} violations, first ones: {:#?}\nfront-end 0 log:\n{}\nfront-end 1 log:\n{}",
        violations.len(),
        &violations[..violations.len().min(10)],
        fronts[0].log.all(),
        fronts[1].log.all()
    );
    assert!(summary.woots > 0);
    for (_, event) in &events {
        assert!(
            !event.reply.starts_with("ERROR") || event.reply == "ERROR storage unavailable",
            "{event}"
        );
        assert!(
            event.replied - event.sent <= bound(event, validator),
            "took {:?}: {event}",
            event.replied - event.sent
        );
    }
}

#[test]
fn a_switchover_and_a_node_crash_lose_nothing() {
    require!(AutoFailover);
    scenario(false);
}

#[test]
fn a_switchover_and_a_node_crash_lose_nothing_with_a_validator_holding_leases() {
    require!(AutoFailover);
    scenario(true);
}

/// A "server" that accepts TCP connections and never answers (a frozen
/// PostgreSQL: SIGSTOPped, or its machine hung with the kernel still up).
/// Counts the connections; holds them open until dropped.
struct HungHost {
    port: u16,
    accepted: Arc<Mutex<Vec<TcpStream>>>,
}

impl HungHost {
    fn start() -> HungHost {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let held = accepted.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                held.lock().unwrap().push(stream);
            }
        });
        HungHost { port, accepted }
    }

    fn connections(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

/// Issue 22, item 2: a host that accepts TCP but never answers, first in
/// a multi-host URL, stalled the front-end: tokio-postgres tries hosts in
/// order and its `connect_timeout` covers only the TCP connect, so every
/// connection attempt hung there (the start gave up after
/// `connect_timeout_secs`). Now it costs one bounded handshake: the next
/// host is tried, and the host connected to is tried first from then on;
/// the start-up log names it.
#[test]
fn a_hung_host_first_in_the_url_costs_one_bounded_handshake() {
    require!(Postgres);
    let pg = pg::Postgres::start();
    let db = pg.create_db("t");
    let hung = HungHost::start();
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{db}?sslmode=disable&target_session_attrs=read-write",
        hung.port, pg.port
    );
    let started = Instant::now();
    let front = front_end_with(&url, "connect_timeout_secs = 20", "");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let connected = front.log.wait_for("postgres: connected to ");
    assert!(
        connected.contains(&format!(
            "postgres: connected to host 127.0.0.1 port {} database {db} as ",
            pg.port
        )),
        "{connected}"
    );
    // Several connections at once: the pool opens more, each straight
    // to the host that answered.
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let mut client = front.connect();
            thread::spawn(move || {
                let sent = Instant::now();
                let stored = client.ask(&format!("STORE hung{i} v{i}"));
                let read = client.ask(&format!("GET hung{i}"));
                (stored, read, sent.elapsed())
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let (stored, read, took) = client.join().unwrap();
        assert_eq!((stored.as_str(), read), ("W00T!", format!("v{i}")));
        assert!(took <= REQUEST_TIMEOUT * 2 + SLACK, "{took:?}");
    }
    assert_eq!(hung.connections(), 1, "{}", front.log.all());
}

/// Makes every commit on `pg` wait for a synchronous standby that does not
/// exist (as while a real one is stalled); returns once new sessions have
/// the setting.
fn stall_commits(pg: &pg::Postgres) {
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = 'nobody'",
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let deadline = Instant::now() + common::PATIENCE;
    while pg.psql("postgres", "SHOW synchronous_standby_names") != "nobody" {
        assert!(Instant::now() < deadline, "the setting never took");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 22, item 2: a request during a switch gets `ERROR storage
/// unavailable` within `request_timeout_ms`. A STORE queued behind
/// another STORE of its name on the same front-end (racing clients do
/// that all the time) was answered only after the first one's whole
/// timeout and then one of its own (a reservation, then its commit): 6 s
/// and more for a 3 s timeout, seen in the failover scenario. Now, when
/// the first fails for want of storage, those queued behind it fail with
/// it.
#[test]
fn a_store_queued_behind_one_of_its_name_fails_within_the_request_timeout() {
    require!(Postgres);
    let pg = pg::Postgres::start();
    let db = pg.create_db("t");
    let front = front_end_with(&pg.url(&db), "", "");
    let mut first = front.connect();
    assert_eq!(first.ask("STORE warm v"), "W00T!");
    stall_commits(&pg);
    let mut queued: Vec<_> = (0..3).map(|_| front.connect()).collect();
    let sent = Instant::now();
    first.send(b"STORE same a\r\n");
    for (i, client) in queued.iter_mut().enumerate() {
        client.send(format!("STORE same q{i}\r\n").as_bytes());
    }
    assert_eq!(first.reply(), "ERROR storage unavailable");
    for client in &mut queued {
        assert_eq!(client.reply(), "ERROR storage unavailable");
    }
    let took = sent.elapsed();
    assert!(took < REQUEST_TIMEOUT + SLACK, "{took:?}");
}

/// A gauge's value in a `/metrics` text (`None`: not there).
fn gauge(metrics: &str, key: &str) -> Option<String> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::to_string))
}

/// Waits until the replication state was read once (the timeline is
/// known): before, every replication gauge says "unknown".
fn wait_for_replication(admin: SocketAddr) {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        let metrics = common::get(admin, "/metrics").2;
        if gauge(&metrics, "jnhpd_postgres_timeline").is_some_and(|t| t != "0") {
            return;
        }
        assert!(Instant::now() < deadline, "never read:\n{metrics}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `/metrics` has `key` at `value`.
fn wait_for_gauge(admin: SocketAddr, key: &str, value: &str) {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        let metrics = common::get(admin, "/metrics").2;
        if gauge(&metrics, key).as_deref() == Some(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{key} never {value}:\n{metrics}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 22, items 2 and 4: `/readyz` says whether writes commit, not only
/// whether PostgreSQL answers (it said ready while every write waited on
/// a stalled standby); the log says once that writes stopped and once
/// that they work again, with no STORE needed to find out (the renewal
/// checks every second meanwhile, not every third of the lease); reads
/// that work meanwhile log nothing (there were 154 "reachable again"
/// lines in 20 s); the replication state is in the metrics.
#[test]
fn readiness_and_the_log_follow_whether_writes_commit() {
    require!(Postgres);
    let pg = pg::Postgres::start();
    let db = pg.create_db("t");
    let front = Server::start(&format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n\
         lease_secs = 90\nrequest_timeout_ms = {}\n[admin]\nlisten = [\"127.0.0.1:0\"]\n",
        pg.url(&db),
        REQUEST_TIMEOUT.as_millis()
    ));
    let admin = common::admin_addr(&front);
    let mut client = front.connect();
    assert_eq!(client.ask("STORE a 1"), "W00T!");
    assert_eq!(common::get(admin, "/readyz").0, 200);
    wait_for_replication(admin);
    wait_for_gauge(
        admin,
        "jnhpd_postgres_replication{state=\"no_standby\"}",
        "1",
    );
    let metrics = common::get(admin, "/metrics").2;
    for (key, value) in [
        ("jnhpd_postgres_writable", "1"),
        ("jnhpd_postgres_replication{state=\"sync\"}", "0"),
        ("jnhpd_postgres_standbys", "0"),
        ("jnhpd_postgres_sync_standbys", "0"),
        ("jnhpd_postgres_timeline", "1"),
        ("jnhpd_postgres_failovers_total", "0"),
    ] {
        assert_eq!(
            gauge(&metrics, key).as_deref(),
            Some(value),
            "{key}:\n{metrics}"
        );
    }
    // Every PostgreSQL metric the dashboard and the alert rules query is
    // exposed (tests/observability.rs checks the others).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "contrib/grafana/jnhpd.json",
        "contrib/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("jnhpd_postgres_") || word.starts_with("jnhpd_cache_") {
                let exposed = metrics.lines().any(|l| {
                    l.split(['{', ' ']).next().is_some_and(|name| {
                        name == word
                            || name
                                .strip_prefix(word)
                                .is_some_and(|rest| ["_bucket", "_sum", "_count"].contains(&rest))
                    })
                });
                assert!(exposed, "{file} queries {word}, not exposed");
            }
        }
    }
    let server = format!(
        "jnhpd_postgres_server_info{{server=\"host {}",
        pg.dir.display()
    );
    assert!(metrics.contains(&server), "{metrics}");

    stall_commits(&pg);
    assert_eq!(client.ask("STORE b 2"), "ERROR storage unavailable");
    let (status, _, body) = common::get(admin, "/readyz");
    assert_eq!(
        (status, body.as_str()),
        (
            503,
            "postgres writes do not commit (STOREs fail until they do)\n"
        )
    );
    wait_for_gauge(admin, "jnhpd_postgres_replication{state=\"waiting\"}", "1");
    assert_eq!(
        gauge(&common::get(admin, "/metrics").2, "jnhpd_postgres_writable").as_deref(),
        Some("0")
    );
    // The same in /status and `jnhp stats`.
    let status = common::get(admin, "/status").2;
    for part in [
        "\"ready\":false",
        "\"reachable\":true,\"writable\":false,\"replication\":\"waiting\",\"standbys\":0,\"sync_standbys\":0,\"timeline\":1,\"failovers\":0",
    ] {
        assert!(status.contains(part), "{part} not in {status}");
    }
    let jnhp = Path::new(&common::bin()).parent().unwrap().join("jnhp");
    let stats = std::process::Command::new(jnhp)
        .args(["stats", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout);
    for line in [
        "pg state     writes FAIL (reads work)",
        "replication  waiting  (0 standbys, 0 synchronous)",
        "failovers    0 seen (timeline 1)",
    ] {
        assert!(stats.contains(line), "{line:?} not in:\n{stats}");
    }
    // Reads of absent names need no commit: they work, and say nothing.
    let until = Instant::now() + Duration::from_secs(3);
    let mut i = 0;
    while Instant::now() < until {
        assert_eq!(client.ask(&format!("GET absent{i}")), "");
        i += 1;
    }
    assert_eq!(client.ask("STORE c 3"), "ERROR storage unavailable");
    assert_eq!(
        front.log.count("writes do not commit"),
        1,
        "{}",
        front.log.all()
    );
    assert_eq!(front.log.count("reachable again"), 0, "{}", front.log.all());

    // The stall ends; no STORE is sent: the renewal's check finds it out
    // within seconds (a third of this lease would be 30 s).
    let ended = Instant::now();
    pg.psql("postgres", "ALTER SYSTEM RESET synchronous_standby_names");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    front.log.wait_for("postgres: writes commit again");
    let took = ended.elapsed();
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(common::get(admin, "/readyz").0, 200);
    wait_for_gauge(
        admin,
        "jnhpd_postgres_replication{state=\"no_standby\"}",
        "1",
    );
    // (b's commit, never acknowledged, went through when the wait ended:
    // an unknown outcome, docs/postgres.md.)
    assert_eq!(client.ask("STORE d 4"), "W00T!");
    assert_eq!(
        front.log.count("writes do not commit"),
        1,
        "{}",
        front.log.all()
    );
}

/// Backends of node `i` waiting for the synchronous standby.
fn waiting_for_standby(formation: &Formation, i: usize) -> u64 {
    formation
        .try_psql(
            i,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
        )
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Issue 22, item 3, the hazard: the synchronous standby frozen (SIGSTOP:
/// its keeper, postmaster and walreceiver; the monitor frozen too, so it
/// does not give up on the standby and let the primary commit alone), its
/// socket buffers filled so commits really wait; waits ended early
/// (cancelled, terminated) so those commits are visible on the primary
/// only; racing clients meanwhile get `ERROR storage unavailable`; then the primary's node is killed and the standby, thawed, is
/// promoted — losing those commits. Nothing acknowledged or served may be
/// missing from the new primary (item 1: a commit whose wait for the
/// standby never ended is never `W00T!`, and a row read is served only
/// once a barrier proved it replicated).
#[test]
fn a_failover_to_a_standby_that_stalled_loses_nothing_acknowledged_or_served() {
    use nix::sys::signal::Signal;
    require!(AutoFailover);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let began = Instant::now();
    let mut formation = Formation::start();
    let setup = began.elapsed();
    let fronts = [
        front_end(&url(&formation, [0, 1]), ""),
        front_end(&url(&formation, [1, 0]), ""),
    ];
    let start = Instant::now();
    let recorder = Recorder::start(&[fronts[0].addr(), fronts[1].addr()], start);
    for front in 0..2 {
        recorder.wait_woot(front, start, &formation);
    }
    let primary = formation.primary();
    let standby = 1 - primary;
    formation.monitor.signal(Signal::SIGSTOP);
    formation.nodes[standby].signal(Signal::SIGSTOP);
    let frozen = Instant::now();
    formation.fill_wal_until_stalled(primary, 8 << 20);
    // Commits wait for the standby; the clients' requests time out (more
    // than a request timeout, so retries meet their own rows too).
    let deadline = Instant::now() + common::PATIENCE;
    while waiting_for_standby(&formation, primary) == 0 {
        assert!(Instant::now() < deadline, "no commit waits for the standby");
        thread::sleep(Duration::from_millis(50));
    }
    // Waits ended early, as a statement timeout, an operator or a
    // failover tool ends them: cancelled (the client is told success with
    // a WARNING) or terminated (the connection cut). Either way the
    // commit is on the primary only, and visible there.
    let mut ended = 0u64;
    let waiting_since = Instant::now();
    let mut round = 0;
    while waiting_since.elapsed() < REQUEST_TIMEOUT * 2 {
        let how = ["pg_cancel_backend", "pg_terminate_backend"][round % 2];
        round += 1;
        ended += formation
            .try_psql(
                primary,
                "postgres",
                &format!(
                    "SELECT count({how}(pid)) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
                ),
            )
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        thread::sleep(Duration::from_millis(100));
    }
    let waiting = waiting_for_standby(&formation, primary);
    let killed = Instant::now();
    formation.kill_node(primary);
    formation.nodes[standby].signal(Signal::SIGCONT);
    formation.monitor.signal(Signal::SIGCONT);
    formation.wait_writable(standby);
    let mut figures = Vec::new();
    for front in 0..2 {
        let took = recorder.wait_woot(front, killed, &formation);
        figures.push(format!("front-end {front}: kill to first W00T! {took:.1?}"));
    }
    let events = recorder.finish();
    let at_end: HashMap<String, String> = formation.names(standby).into_iter().collect();
    let all: Vec<Event> = events.iter().map(|(_, e)| e.clone()).collect();
    let (summary, violations) = history::check(&all, &at_end);
    let frozen_errors = events
        .iter()
        .filter(|(_, e)| e.sent >= frozen && e.replied <= killed && e.reply.starts_with("ERROR"))
        .count();
    eprintln!(
        "stalled standby: set-up {setup:.1?}, run {:.1?}, frozen {:.1?} ({ended} waits ended early, {waiting} commits waiting at the kill); \
         {} requests, {} W00T!, {} ERROR ({frozen_errors} while frozen)\n  {}",
        start.elapsed(),
        killed - frozen,
        summary.requests,
        summary.woots,
        summary.errors,
        figures.join("\n  ")
    );
    assert!(
        violations.is_empty(),
        "{} violations, first ones: {:#?}\nfront-end 0 log:\n{}\nfront-end 1 log:\n{}",
        violations.len(),
        &violations[..violations.len().min(10)],
        fronts[0].log.all(),
        fronts[1].log.all()
    );
    assert!(
        frozen_errors > 0,
        "no request timed out while the standby was frozen"
    );
    for (_, event) in &events {
        assert!(
            !event.reply.starts_with("ERROR") || event.reply == "ERROR storage unavailable",
            "{event}"
        );
        assert!(
            event.replied - event.sent <= bound(event, false),
            "took {:?}: {event}",
            event.replied - event.sent
        );
    }
}

/// A front-end for the LISTEN tests: a lease long enough that a STORE
/// parked on another front-end's reservation wakes by its release (a
/// NOTIFY heard on the LISTEN connection), not by its expiry, within the
/// test's bound; `rest` adds tables.
fn listening_front_end(url: &str, dir: tempfile::TempDir, rest: &str) -> Server {
    Server::start_in(
        dir,
        &format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{url}\"\n\
             lease_secs = {}\nrequest_timeout_ms = {}\nconnect_timeout_secs = 30\n{rest}",
            LISTEN_LEASE.as_secs(),
            REQUEST_TIMEOUT.as_millis()
        ),
    )
}

/// The lease of the LISTEN tests: a STORE that waited this long was not
/// woken by a NOTIFY.
const LISTEN_LEASE: Duration = Duration::from_secs(90);

/// Front-end `holder` validates `name` behind a gate (its lease held);
/// `waiter`'s STORE of the name waits for it; the gate opens, the holder
/// refuses, releases (NOTIFY), and the waiter must be stored well before
/// the lease would have lapsed: it heard the release.
fn waiter_hears_the_release(holder: &Server, gate: &Path, waiter: &Server, name: &str) {
    let mut held = holder.connect();
    held.send(format!("STORE {name} bad-held\r\n").as_bytes());
    common::wait_for_file(&gate.join(format!("started-{name}-bad-held")));
    let mut waiting = waiter.connect();
    waiting.send(format!("STORE {name} waited\r\n").as_bytes());
    // Parked behind the reservation, not answered.
    waiting
        .stream()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(std::io::Read::read(&mut waiting.stream(), &mut byte).is_err());
    waiting.stream().set_read_timeout(None).unwrap();
    let released = Instant::now();
    std::fs::write(gate.join("release"), "").unwrap();
    assert_eq!(held.reply(), "RARGH!");
    assert_eq!(waiting.reply(), "W00T!");
    let took = released.elapsed();
    assert!(
        took < LISTEN_LEASE / 3,
        "woken after {took:?}: not by the NOTIFY"
    );
    std::fs::remove_file(gate.join("release")).unwrap();
}

/// Issue 22, item 2: after a switchover the LISTEN connection is made
/// again on the new primary, so a STORE waiting for another front-end's
/// reservation is woken by its release there, not by its expiry.
#[test]
fn the_listen_connection_follows_the_primary() {
    require!(AutoFailover);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let formation = Formation::start();
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().to_path_buf();
    let validator = process_validator(&common::gated(&gate), "timeout_ms = 60000");
    let holder = listening_front_end(&url(&formation, [0, 1]), dir, &validator);
    let waiter = listening_front_end(&url(&formation, [1, 0]), tempfile::tempdir().unwrap(), "");
    waiter_hears_the_release(&holder, &gate, &waiter, "before");
    formation.switchover();
    // Both write again (the gate open meanwhile: the holder validates).
    std::fs::write(gate.join("release"), "").unwrap();
    for front in [&holder, &waiter] {
        let deadline = Instant::now() + RECOVERY;
        let mut client = front.connect();
        let mut i = 0;
        while client.ask(&format!("STORE probe{i}-{} v", front.pid())) != "W00T!" {
            assert!(Instant::now() < deadline, "never wrote again");
            i += 1;
        }
    }
    std::fs::remove_file(gate.join("release")).unwrap();
    waiter_hears_the_release(&holder, &gate, &waiter, "after");
}

/// Issue 22, item 2: a LISTEN connection whose server stops answering (a
/// frozen server, a cut network: nothing breaks the connection) is given
/// up within about two request timeouts and made again, so releases are
/// heard again; before, it waited forever and every STORE parked behind
/// another front-end's reservation waited for the lease.
#[test]
fn a_listen_connection_that_stops_answering_is_made_again() {
    require!(Postgres);
    let pg = pg::Postgres::start();
    let db = pg.create_db("t");
    let url = pg.url(&db);
    let waiter = listening_front_end(&url, tempfile::tempdir().unwrap(), "");
    let listening = |pg: &pg::Postgres| {
        pg.psql(
            "postgres",
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%' ORDER BY backend_start",
        )
    };
    let deadline = Instant::now() + common::PATIENCE;
    while listening(&pg).is_empty() {
        assert!(Instant::now() < deadline, "never listened");
        thread::sleep(Duration::from_millis(50));
    }
    let frozen: i32 = listening(&pg).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().to_path_buf();
    let validator = process_validator(&common::gated(&gate), "timeout_ms = 60000");
    let holder = listening_front_end(&url, dir, &validator);
    let pid = nix::unistd::Pid::from_raw(frozen);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let line = waiter.log.wait_for("the LISTEN connection is given up");
    assert!(line.contains("no answer within"), "{line}");
    waiter_hears_the_release(&holder, &gate, &waiter, "n");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
}

/// A name the failover tool moves (a DNS name, a virtual IP, a proxy
/// such as HAProxy): a TCP forwarder to whichever port it is pointed at.
/// Connections already made stay with their server, as they do when a
/// DNS name moves.
struct MovableName {
    port: u16,
    target: Arc<std::sync::atomic::AtomicU16>,
}

impl MovableName {
    fn pointing_at(target: u16) -> MovableName {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(std::sync::atomic::AtomicU16::new(target));
        let to = target.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let port = to.load(Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        MovableName { port, target }
    }

    fn point_at(&self, target: u16) {
        self.target.store(target, Ordering::SeqCst);
    }
}

/// Issue 22, item 2: a URL with a single name that the failover tool
/// moves to the new primary. Until it moves, new connections land on the
/// old primary, now a standby: jnhpd refuses them (it always asks for a
/// read-write session, whatever the URL says; a standby would serve reads
/// it has not replayed) and tries again; once the name moves, writes
/// work again — no restart, no wrong answer, the LISTEN connection made
/// on the new primary.
#[test]
fn a_single_name_moved_by_the_failover_tool_is_followed() {
    require!(AutoFailover);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let formation = Formation::start();
    let old = formation.primary();
    let name = MovableName::pointing_at(formation.nodes[old].port);
    // No target_session_attrs in the URL.
    let url = format!(
        "postgres://jnhp@127.0.0.1:{}/jnhp?sslmode=disable",
        name.port
    );
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().to_path_buf();
    let validator = process_validator(&common::gated(&gate), "timeout_ms = 60000");
    let holder = listening_front_end(&url, dir, &validator);
    let waiter = listening_front_end(&url, tempfile::tempdir().unwrap(), "");
    let (holder_pid, waiter_pid) = (holder.pid(), waiter.pid());
    let mut client = waiter.connect();
    assert_eq!(client.ask("STORE before v"), "W00T!");
    let new = formation.switchover();
    assert_ne!(new, old);
    // The name still points at the old primary, a standby now.
    let mut refused = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        match client.ask(&format!("STORE during{refused} v")).as_str() {
            "ERROR storage unavailable" => refused += 1,
            other => panic!("a STORE through a standby got {other:?}"),
        }
        // A name stored before is served (cached), never lost; a name
        // not cached is not read on the standby, which may lag.
        assert_eq!(client.ask("GET before"), "v");
        let absent = client.ask(&format!("GET absent{refused}"));
        assert_eq!(absent, "ERROR storage unavailable", "read on a standby");
    }
    assert!(refused > 0);
    name.point_at(formation.nodes[new].port);
    let deadline = Instant::now() + RECOVERY;
    let mut i = 0;
    while client.ask(&format!("STORE after{i} v")) != "W00T!" {
        assert!(Instant::now() < deadline, "never wrote again");
        i += 1;
    }
    std::fs::write(gate.join("release"), "").unwrap();
    assert_eq!(holder.connect().ask("STORE holder-after v"), "W00T!");
    std::fs::remove_file(gate.join("release")).unwrap();
    waiter_hears_the_release(&holder, &gate, &waiter, "moved");
    assert_eq!((holder.pid(), waiter.pid()), (holder_pid, waiter_pid));
    // What was refused while the name pointed at the standby was not
    // stored there (it could not be: a standby takes no writes).
    let stored: HashMap<String, String> = formation.names(new).into_iter().collect();
    assert!(stored.contains_key("before"));
    assert!((0..refused).all(|i| !stored.contains_key(&format!("during{i}"))));
}
