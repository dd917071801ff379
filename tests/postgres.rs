//! Several front-ends on one PostgreSQL namespace, against real servers:
//! each test starts its own PostgreSQL (tests/common/pg.rs) and real jnhpd
//! processes, and checks what clients see: the guarantees of one daemon,
//! across front-ends, through faults.

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/pki.rs"]
mod pki;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, Server, gated, process_validator, run_to_exit, wait_for_file};
use nix::sys::signal::Signal;
use pg::Postgres;

/// A front-end's config on `url`: leases of 2 s and requests bounded by
/// 3 s keep the fault tests short.
fn config(url: &str, extra_storage: &str, rest: &str) -> String {
    format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{url}\"\n\
         lease_secs = 2\nrequest_timeout_ms = 3000\nconnect_timeout_secs = 10\n{extra_storage}\n{rest}"
    )
}

fn front_end(pg: &Postgres, db: &str) -> Server {
    Server::start(&config(&pg.url(db), "", ""))
}

/// A front-end whose one validator is `program` (in `dir`).
fn validated_front_end(pg: &Postgres, db: &str, dir: tempfile::TempDir, program: &Path) -> Server {
    Server::start_in(
        dir,
        &config(
            &pg.url(db),
            "",
            &process_validator(program, "timeout_ms = 60000"),
        ),
    )
}

/// Asserts that no reply arrives on `client` within `wait`.
fn replies_within(client: &mut Client, wait: Duration) {
    let stream = client.stream().try_clone().unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    let got = matches!(std::io::Read::read(&mut &stream, &mut byte), Ok(n) if n > 0);
    stream.set_read_timeout(None).unwrap();
    assert!(!got, "a reply arrived early");
}

#[test]
fn a_store_on_one_front_end_is_read_at_once_on_another() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let a = front_end(&pg, &db);
    let b = front_end(&pg, &db);
    let (mut ca, mut cb) = (a.connect(), b.connect());
    assert_eq!(cb.ask("GET n"), "");
    assert_eq!(cb.ask("EXISTS n"), "RARGH!");
    assert_eq!(ca.ask("STORE n v1"), "W00T!");
    assert_eq!(cb.ask("EXISTS n"), "AWESOME!");
    assert_eq!(cb.ask("GET n"), "v1");
    assert_eq!(cb.ask("STORE n v2"), "RARGH!");
    assert_eq!(ca.ask("GET n"), "v1");
    // Pipelined: a batch of reads is one lookup, in order with STOREs.
    cb.send(b"GET n\r\nSTORE m 1\r\nGET m\r\nEXISTS zz\r\nGET n\r\n");
    let replies: Vec<String> = (0..5).map(|_| cb.reply()).collect();
    assert_eq!(replies, ["v1", "W00T!", "1", "RARGH!", "v1"]);
    assert_eq!(
        pg.psql(
            &db,
            "SELECT encode(value, 'escape') FROM jnhp_names ORDER BY name"
        ),
        "1\nv1"
    );
    // Who stored it and when are kept.
    let stored_by = pg.psql(&db, "SELECT DISTINCT stored_by FROM jnhp_names");
    assert!(stored_by.contains('/'), "{stored_by}");
}

/// Three front-ends, four connections each, all STOREing the same 40 names
/// at once: exactly one W00T! per name, and every front-end then reads the
/// winner's value.
#[test]
fn racing_front_ends_store_each_name_exactly_once() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("race");
    let fronts: Vec<Server> = (0..3).map(|_| front_end(&pg, &db)).collect();
    let addrs: Vec<SocketAddr> = fronts.iter().map(Server::addr).collect();
    let names = 40;
    let barrier = Arc::new(Barrier::new(12));
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let (addr, barrier) = (addrs[t % 3], barrier.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                barrier.wait();
                // Each connection pipelines its STOREs, so they arrive in
                // batches that share statements.
                let mut batch = Vec::new();
                for n in 0..names {
                    write!(batch, "STORE name{n} from-{t}\r\n").unwrap();
                }
                client.send(&batch);
                (0..names).map(|_| client.reply()).collect::<Vec<_>>()
            })
        })
        .collect();
    let replies: Vec<Vec<String>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for n in 0..names {
        let of_name: Vec<&str> = replies.iter().map(|r| r[n].as_str()).collect();
        let winners: Vec<usize> = (0..12).filter(|&t| of_name[t] == "W00T!").collect();
        assert_eq!(winners.len(), 1, "name{n}: {of_name:?}");
        assert!(of_name.iter().all(|r| ["W00T!", "RARGH!"].contains(r)));
        for front in &fronts {
            let value = front.connect().ask(&format!("GET name{n}"));
            assert_eq!(value, format!("from-{}", winners[0]));
        }
    }
}

/// A front-end A whose validator is [`gated`] (in the returned directory)
/// and a front-end B without validators, on one namespace.
fn gated_and_plain() -> (Postgres, Server, Server, std::path::PathBuf) {
    let pg = Postgres::start();
    let db = pg.create_db("pending");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let program = gated(&root);
    let a = validated_front_end(&pg, &db, dir, &program);
    let b = front_end(&pg, &db);
    (pg, a, b, root)
}

/// `STORE n <on_a>` on A, once its validation runs, then `STORE n <on_b>`
/// on B; returns both connections.
fn store_on_both(a: &Server, b: &Server, root: &Path, on_a: &str, on_b: &str) -> (Client, Client) {
    let mut ca = a.connect();
    ca.send(format!("STORE n {on_a}\r\n").as_bytes());
    wait_for_file(&root.join(format!("started-n-{on_a}")));
    let mut cb = b.connect();
    cb.send(format!("STORE n {on_b}\r\n").as_bytes());
    (ca, cb)
}

/// The pending rule across front-ends, one way: a slow valid STORE on A, a
/// fast STORE of the same name on B. B waits for A's outcome (A's lease is
/// renewed past lease_secs meanwhile) and gets RARGH!.
#[test]
fn a_store_waits_for_a_validation_on_another_front_end_that_succeeds() {
    require!(Postgres);
    let (_pg, a, b, root) = gated_and_plain();
    let (mut ca, mut cb) = store_on_both(&a, &b, &root, "good", "other");
    // Longer than lease_secs (2 s): renewals keep A's reservation.
    replies_within(&mut cb, Duration::from_millis(3500));
    assert_eq!(b.connect().ask("EXISTS n"), "RARGH!");
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(ca.reply(), "W00T!");
    assert_eq!(cb.reply(), "RARGH!");
    assert_eq!(b.connect().ask("GET n"), "good");
}

/// The other way: a slow invalid STORE on A; B's STORE of the name waits,
/// then is stored once A's is refused.
#[test]
fn a_store_proceeds_when_the_validation_on_another_front_end_refuses() {
    require!(Postgres);
    let (_pg, a, b, root) = gated_and_plain();
    let (mut ca, mut cb) = store_on_both(&a, &b, &root, "bad-one", "fine");
    replies_within(&mut cb, Duration::from_millis(500));
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(ca.reply(), "RARGH!");
    assert_eq!(cb.reply(), "W00T!");
    assert_eq!(a.connect().ask("GET n"), "fine");
}

/// Both front-ends validate: while A's validation runs, B's STORE of the
/// name does not even start its validator.
#[test]
fn a_validation_waits_for_another_front_ends_validation() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("pend3");
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ra, rb) = (da.path().to_path_buf(), db_dir.path().to_path_buf());
    let (pa, pb) = (gated(&ra), gated(&rb));
    let a = validated_front_end(&pg, &db, da, &pa);
    let b = validated_front_end(&pg, &db, db_dir, &pb);
    std::fs::write(rb.join("release"), "").unwrap();
    let mut ca = a.connect();
    ca.send(b"STORE n bad-a\r\n");
    wait_for_file(&ra.join("started-n-bad-a"));
    let mut cb = b.connect();
    cb.send(b"STORE n good-b\r\n");
    replies_within(&mut cb, Duration::from_millis(500));
    assert!(!rb.join("started-n-good-b").exists());
    std::fs::write(ra.join("release"), "").unwrap();
    assert_eq!(ca.reply(), "RARGH!");
    assert_eq!(cb.reply(), "W00T!");
    assert!(rb.join("started-n-good-b").exists());
}

/// A front-end SIGKILLed in the middle of a slow validation: its
/// reservation lapses after lease_secs and another front-end's STORE of
/// the name is stored.
#[test]
fn a_killed_front_ends_reservation_lapses() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("kill");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let program = gated(&root);
    let a = validated_front_end(&pg, &db, dir, &program);
    let b = front_end(&pg, &db);
    let mut ca = a.connect();
    ca.send(b"STORE n from-a\r\n");
    wait_for_file(&root.join("started-n-from-a"));
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM jnhp_pending"), "1");
    a.signal(Signal::SIGKILL);
    let started = Instant::now();
    let mut cb = b.connect();
    assert_eq!(cb.ask("STORE n from-b"), "W00T!");
    // It waited for the lease, no longer than the lease and a renewal.
    assert!(started.elapsed() < PATIENCE);
    assert_eq!(cb.ask("GET n"), "from-b");
    // The orphaned script ends too.
    std::fs::write(root.join("release"), "").unwrap();
}

/// Non-UTF-8 names and 64 KiB values come back byte for byte, on another
/// front-end and in the table.
#[test]
fn names_and_values_are_bytes() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("bytes");
    let a = front_end(&pg, &db);
    let b = front_end(&pg, &db);
    let name: Vec<u8> = vec![0xff, 0xfe, b'n', 0x80, 0xc3];
    let value: Vec<u8> = (0..65536u32)
        .map(|i| match (i * 7919 % 251) as u8 {
            b'\r' | b'\n' => b'x',
            // No blanks: a value's leading blanks belong to the separator.
            b => b.max(0x21),
        })
        .collect();
    let mut request = b"STORE ".to_vec();
    request.extend_from_slice(&name);
    request.push(b' ');
    request.extend_from_slice(&value);
    request.extend_from_slice(b"\r\n");
    let mut ca = a.connect();
    ca.send(&request);
    assert_eq!(ca.reply(), "W00T!");
    let mut get = b"GET ".to_vec();
    get.extend_from_slice(&name);
    get.extend_from_slice(b"\r\n");
    let mut cb = b.connect();
    cb.send(&get);
    let mut got = cb.line();
    assert!(got.ends_with(b"\r\n"));
    got.truncate(got.len() - 2);
    assert!(
        got == value,
        "{} bytes back, not the {} stored",
        got.len(),
        value.len()
    );
    assert_eq!(
        pg.psql(
            &db,
            "SELECT encode(name, 'hex'), length(value) FROM jnhp_names"
        ),
        "fffe6e80c3|65536"
    );
}

/// One recorded request and its reply.
#[derive(Clone, Debug)]
struct Event {
    op: &'static str,
    name: String,
    value: String,
    reply: String,
    sent: Instant,
    answered: Instant,
}

/// Checks a history of STORE/GET/EXISTS against a write-once register per
/// name: one value per name; nothing read before it was sent; everything
/// acknowledged read by every later request; RARGH! only for a taken name.
fn check_write_once(history: &[Event]) {
    let mut by_name: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in history {
        by_name.entry(&e.name).or_default().push(e);
    }
    for (name, events) in by_name {
        let stores: Vec<&&Event> = events
            .iter()
            .filter(|e| e.op == "STORE" && e.reply == "W00T!")
            .collect();
        assert!(
            stores.len() <= 1,
            "{name}: {} STOREs acknowledged",
            stores.len()
        );
        let winner = stores.first();
        for e in &events {
            assert!(
                ["W00T!", "RARGH!", "AWESOME!", ""].contains(&e.reply.as_str()) || e.op == "GET",
                "{name}: unexpected reply {e:?}"
            );
            let after_ack = winner.is_some_and(|w| e.sent > w.answered);
            match e.op {
                "GET" if !e.reply.is_empty() => {
                    let w = winner.unwrap_or_else(|| panic!("{name}: read {e:?} of no STORE"));
                    assert_eq!(e.reply, w.value, "{name}: read another value");
                    assert!(e.answered > w.sent, "{name}: read before it was sent");
                }
                "GET" => assert!(!after_ack, "{name}: acknowledged but not read: {e:?}"),
                "EXISTS" if e.reply == "AWESOME!" => {
                    let w = winner.unwrap_or_else(|| panic!("{name}: exists without a STORE"));
                    assert!(e.answered > w.sent, "{name}: seen before it was sent");
                }
                "EXISTS" => assert!(!after_ack, "{name}: acknowledged but absent: {e:?}"),
                "STORE" if e.reply == "RARGH!" => {
                    let w = winner.unwrap_or_else(|| panic!("{name}: RARGH! with no winner"));
                    assert!(
                        e.answered > w.sent,
                        "{name}: refused before the winner was sent"
                    );
                }
                _ => {}
            }
        }
    }
}

/// Runs `clients` threads against `addrs`, each doing `ops` random
/// requests on names `k0..k{names}`, and returns the recorded history.
fn record_history(addrs: &[SocketAddr], clients: usize, ops: usize, names: u64) -> Vec<Event> {
    let history = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let addr = addrs[c % addrs.len()];
            let history = history.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
                let mut next = || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                for i in 0..ops {
                    let name = format!("k{}", next() % names);
                    let (op, value) = match next() % 3 {
                        0 => ("STORE", format!("c{c}-{i}")),
                        1 => ("GET", String::new()),
                        _ => ("EXISTS", String::new()),
                    };
                    let request = match op {
                        "STORE" => format!("STORE {name} {value}"),
                        _ => format!("{op} {name}"),
                    };
                    let sent = Instant::now();
                    let reply = client.ask(&request);
                    let answered = Instant::now();
                    history.lock().unwrap().push(Event {
                        op,
                        name,
                        value,
                        reply,
                        sent,
                        answered,
                    });
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    Arc::try_unwrap(history).unwrap().into_inner().unwrap()
}

/// A concurrent history from three front-ends is a write-once register's.
#[test]
fn a_concurrent_history_is_linearizable_as_write_once_registers() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("hist");
    let fronts: Vec<Server> = (0..3).map(|_| front_end(&pg, &db)).collect();
    let addrs: Vec<SocketAddr> = fronts.iter().map(Server::addr).collect();
    let history = record_history(&addrs, 9, 300, 60);
    assert_eq!(history.len(), 2700);
    check_write_once(&history);
    let stored = history.iter().filter(|e| e.reply == "W00T!").count();
    assert!(stored > 0 && stored <= 60);
}

/// The checker itself catches what it must (a test that cannot fail is a
/// defect).
#[test]
fn the_history_checker_finds_violations() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let ev = |op, value: &str, reply: &str, sent, answered| Event {
        op,
        name: "n".into(),
        value: value.into(),
        reply: reply.into(),
        sent: at(sent),
        answered: at(answered),
    };
    let cases = [
        vec![
            ev("STORE", "a", "W00T!", 0, 1),
            ev("STORE", "b", "W00T!", 2, 3),
        ],
        vec![ev("STORE", "a", "W00T!", 0, 1), ev("GET", "", "b", 2, 3)],
        vec![ev("STORE", "a", "W00T!", 5, 6), ev("GET", "", "a", 1, 2)],
        vec![ev("STORE", "a", "W00T!", 0, 1), ev("GET", "", "", 2, 3)],
        vec![
            ev("STORE", "a", "W00T!", 0, 1),
            ev("EXISTS", "", "RARGH!", 2, 3),
        ],
        vec![ev("STORE", "a", "RARGH!", 0, 1)],
    ];
    for history in cases {
        let caught = std::panic::catch_unwind(|| check_write_once(&history));
        assert!(caught.is_err(), "not caught: {history:?}");
    }
    check_write_once(&[
        ev("GET", "", "", 0, 1),
        ev("STORE", "a", "W00T!", 0, 4),
        ev("GET", "", "a", 2, 3),
        ev("STORE", "b", "RARGH!", 3, 5),
    ]);
}

/// PostgreSQL stopped (`pg_ctl stop -m immediate`) and started again under
/// load, every reply recorded: no acknowledged STORE missing afterwards, no
/// RARGH! for a fresh name, cached names still read during the outage, and
/// service back without restarting jnhpd.
#[test]
fn the_database_stopped_and_started_under_load() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("outage");
    let fronts: Vec<Server> = (0..2).map(|_| front_end(&pg, &db)).collect();
    let addrs: Vec<SocketAddr> = fronts.iter().map(Server::addr).collect();
    // Stored before the outage, and so cached on its front-end.
    let mut early = Client::connect(addrs[0]);
    assert_eq!(early.ask("STORE early e"), "W00T!");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let replies = Arc::new(Mutex::new(Vec::<(String, String, String)>::new()));
    let threads: Vec<_> = (0..6)
        .map(|c| {
            let (addr, stop, replies) = (addrs[c % 2], stop.clone(), replies.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (name, value) = (format!("c{c}-{i}"), format!("v{c}-{i}"));
                    let reply = client.ask(&format!("STORE {name} {value}"));
                    replies.lock().unwrap().push((name, value, reply));
                    i += 1;
                }
            })
        })
        .collect();
    let acknowledged = || {
        replies
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.2 == "W00T!")
            .count()
    };
    let wait_for_progress = |beyond: usize| {
        let deadline = Instant::now() + PATIENCE;
        while acknowledged() < beyond + 20 {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_progress(0);
    pg.stop_immediate();
    // During the outage: a cached name answers; a name never seen here
    // gets ERROR storage unavailable; so does a STORE.
    assert_eq!(early.ask("GET early"), "e");
    assert_eq!(early.ask("EXISTS early"), "AWESOME!");
    let mut other = Client::connect(addrs[1]);
    assert_eq!(other.ask("GET early"), "ERROR storage unavailable");
    assert_eq!(other.ask("STORE fresh x"), "ERROR storage unavailable");
    pg.start_again();
    let before = acknowledged();
    wait_for_progress(before);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let replies = replies.lock().unwrap().clone();
    let mut errors = 0;
    for (name, value, reply) in &replies {
        match reply.as_str() {
            "W00T!" => {
                let stored = pg.psql(
                    &db,
                    &format!(
                        "SELECT encode(value, 'escape') FROM jnhp_names WHERE name = '{name}'::bytea"
                    ),
                );
                assert_eq!(&stored, value, "{name} was acknowledged");
            }
            "ERROR storage unavailable" => errors += 1,
            other => panic!("{name}: {other}"),
        }
    }
    assert!(errors > 0, "the outage was not seen");
    // Both front-ends serve again, reads and writes.
    for addr in &addrs {
        let mut c = Client::connect(*addr);
        assert_eq!(
            c.ask("STORE fresh-after x"),
            if *addr == addrs[0] { "W00T!" } else { "RARGH!" }
        );
        assert_eq!(c.ask("GET early"), "e");
    }
}

/// The password comes from password_file and appears in no output: not in
/// the log of a start, nor in the errors of a wrong one.
#[test]
fn the_password_is_never_shown() {
    require!(Postgres);
    let pg = Postgres::start();
    let password = "Pw-0f-jnhp-4711";
    pg.psql(
        "postgres",
        &format!("CREATE ROLE jnhp LOGIN PASSWORD '{password}'"),
    );
    pg.psql("postgres", "CREATE DATABASE owned OWNER jnhp");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), format!("{password}\n")).unwrap();
    let url = pg.tcp_url("jnhp", "owned");
    let text = config(&url, "password_file = \"pw\"", "");
    let mut server = Server::start_in(dir, &text);
    assert_eq!(server.connect().ask("STORE a b"), "W00T!");
    server.signal(Signal::SIGTERM);
    server.wait_exit();
    assert!(!server.log.all().contains(password));

    // Wrong password: refused at start, the message names the server.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "wrong-Pw-0f-jnhp\n").unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(
        &path,
        config(&url, "password_file = \"pw\"\nconnect_timeout_secs = 1", "")
            .replace("connect_timeout_secs = 10\n", ""),
    )
    .unwrap();
    let (code, out) = common::start_fails(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("host 127.0.0.1 port {} database owned", pg.port)),
        "{out}"
    );
    assert!(out.contains("password authentication failed"), "{out}");
    assert!(!out.contains("wrong-Pw"), "{out}");

    // A password in the URL is never echoed either, by --check-config too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    let in_url = format!("postgres://jnhp:{password}@127.0.0.1:{}/owned", pg.port);
    std::fs::write(&path, config(&in_url, "", "")).unwrap();
    let (code, out) = run_to_exit(
        &["--config", path.to_str().unwrap(), "--check-config"],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("connected to host 127.0.0.1"), "{out}");
    assert!(!out.contains(password), "{out}");
    let bad = in_url.replace("/owned", "/owned?sslmode=sometimes");
    std::fs::write(&path, config(&bad, "", "")).unwrap();
    let (code, out) = run_to_exit(
        &["--config", path.to_str().unwrap(), "--check-config"],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("jnhp.toml:4: storage.postgres.url: sslmode"),
        "{out}"
    );
    assert!(!out.contains(password), "{out}");
}

/// Unreachable at start: jnhpd retries for connect_timeout_secs, then
/// refuses to start naming host, port and database; --check-config says
/// the same.
#[test]
fn an_unreachable_database_is_refused_at_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    let url = format!("postgres://nobody@127.0.0.1:{port}/names");
    std::fs::write(
        &path,
        config(&url, "", "").replace("connect_timeout_secs = 10", "connect_timeout_secs = 1"),
    )
    .unwrap();
    let started = Instant::now();
    let (code, out) = common::start_fails(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it did not retry"
    );
    let expected =
        format!("cannot reach PostgreSQL at host 127.0.0.1 port {port} database names within 1 s");
    assert!(out.contains(&expected), "{out}");
    let (code, out) = run_to_exit(
        &["--config", path.to_str().unwrap(), "--check-config"],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(out.contains(&expected), "{out}");
}

/// Tables of a schema version jnhpd does not know are refused.
#[test]
fn an_unknown_schema_version_is_refused() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("schema");
    drop(front_end(&pg, &db));
    pg.psql(&db, "COMMENT ON TABLE jnhp_names IS 'jnhp schema 99'");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(&path, config(&pg.url(&db), "", "")).unwrap();
    let (code, out) = common::start_fails(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("table jnhp_names is marked \"jnhp schema 99\""),
        "{out}"
    );
}

/// --import-datafile: a local data file's records into the namespace,
/// with the counts (imported, present, conflicts).
#[test]
fn a_data_file_is_imported() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("import");
    // A local daemon writes the data file.
    let local_dir = tempfile::tempdir().unwrap();
    let data = local_dir.path().join("names.data");
    let mut local = Server::start_in(
        local_dir,
        &format!("[storage]\npath = \"{}\"\n", data.display()),
    );
    let mut c = local.connect();
    for (n, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")] {
        assert_eq!(c.ask(&format!("STORE {n} {v}")), "W00T!");
    }
    local.signal(Signal::SIGTERM);
    local.wait_exit();
    // The namespace already has b (same value) and c (another value).
    let front = front_end(&pg, &db);
    let mut f = front.connect();
    assert_eq!(f.ask("STORE b 2"), "W00T!");
    assert_eq!(f.ask("STORE c 9"), "W00T!");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(&path, config(&pg.url(&db), "", "")).unwrap();
    let import = |file: &Path| {
        let args = [
            "--config",
            path.to_str().unwrap(),
            "--import-datafile",
            file.to_str().unwrap(),
        ];
        run_to_exit(&args, dir.path())
    };
    let (code, out) = import(&data);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("2 imported, 1 already present, 1 conflicts"),
        "{out}"
    );
    assert_eq!(f.ask("GET a"), "1");
    assert_eq!(f.ask("GET c"), "9");
    // Again: everything is present now.
    let (code, out) = import(&data);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("0 imported, 3 already present, 1 conflicts"),
        "{out}"
    );
    // Not a data file: exit 1.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "not a data file").unwrap();
    let (code, out) = import(&junk);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a jnhpd data file"), "{out}");
}

/// sslmode is honoured: verify-full against the right CA connects over
/// TLS; against another CA the start is refused; require connects without
/// checking; verify-ca checks the chain.
#[test]
fn sslmode_is_honoured() {
    require!(Postgres);
    let certs = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new(certs.path(), "pg");
    let issued = ca.server(certs.path(), "server", 1);
    let other = pki::Ca::new(certs.path(), "other");
    let keep = tempfile::Builder::new()
        .prefix("jnhp-pg-certs")
        .tempdir()
        .unwrap();
    for (from, to) in [(&issued.cert, "server.crt"), (&issued.key, "server.key")] {
        std::fs::copy(from, keep.path().join(to)).unwrap();
    }
    std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(keep.path())
        .status()
        .unwrap();
    std::fs::set_permissions(
        keep.path().join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let cert = format!("ssl_cert_file={}", keep.path().join("server.crt").display());
    let key = format!("ssl_key_file={}", keep.path().join("server.key").display());
    let pg = Postgres::start_with(&["ssl=on", &cert, &key]);
    let db = pg.create_db("tls");
    let url = format!(
        "postgres://postgres@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        pg.port,
        ca.pem.display()
    );
    let front = Server::start(&config(&url, "", ""));
    assert_eq!(front.connect().ask("STORE over tls"), "W00T!");
    let encrypted = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.datname = 'tls'",
    );
    assert_ne!(encrypted, "0");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    let wrong = url.replace(
        &ca.pem.display().to_string(),
        &other.pem.display().to_string(),
    );
    std::fs::write(
        &path,
        config(&wrong, "", "").replace("connect_timeout_secs = 10", "connect_timeout_secs = 0"),
    )
    .unwrap();
    let (code, out) = common::start_fails(&path);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("certificate"), "{out}");
    // require: encrypted, certificate not checked (even another CA's);
    // verify-ca: the chain is checked, not the host name.
    for mode in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-ca&sslrootcert={}", ca.pem.display()),
    ] {
        let url = format!("postgres://postgres@localhost:{}/{db}?{mode}", pg.port);
        std::fs::write(&path, config(&url, "", "")).unwrap();
        let (code, out) = run_to_exit(
            &["--config", path.to_str().unwrap(), "--check-config"],
            dir.path(),
        );
        assert_eq!(code, 0, "{mode}: {out}");
        assert!(out.contains("connected to host localhost"), "{out}");
    }
    let wrong_ca = format!("sslmode=verify-ca&sslrootcert={}", other.pem.display());
    let url = format!("postgres://postgres@localhost:{}/{db}?{wrong_ca}", pg.port);
    std::fs::write(
        &path,
        config(&url, "", "").replace("connect_timeout_secs = 10", "connect_timeout_secs = 0"),
    )
    .unwrap();
    let (code, out) = run_to_exit(
        &["--config", path.to_str().unwrap(), "--check-config"],
        dir.path(),
    );
    assert_eq!(code, 1, "verify-ca with another CA: {out}");
}

/// SIGHUP re-reads password_file: after the role's password changes, new
/// connections fail until the file has the new one and jnhpd reloads.
#[test]
fn sighup_rereads_the_password_file() {
    require!(Postgres);
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE ROLE rot LOGIN PASSWORD 'first-Pw-1'");
    pg.psql("postgres", "CREATE DATABASE rotdb OWNER rot");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "first-Pw-1\n").unwrap();
    let url = pg.tcp_url("rot", "rotdb");
    let server = Server::start_in(dir, &config(&url, "password_file = \"pw\"", ""));
    let mut c = server.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    let cut = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'rot'";
    pg.psql("postgres", "ALTER ROLE rot PASSWORD 'second-Pw-2'");
    // Until none is left: a connection jnhpd was making in the background
    // (the renewal job sweeps lapsed rows every third of lease_secs) may
    // have authenticated with the old password after the first cut looked.
    let left = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'rot'";
    let deadline = Instant::now() + PATIENCE;
    while {
        pg.psql("postgres", cut);
        pg.psql("postgres", left) != "0"
    } {
        assert!(Instant::now() < deadline, "rot's sessions keep coming back");
    }
    // Every connection must be made anew, with the old password: refused.
    // (A connection that was authenticating while the password changed
    // shows in pg_stat_activity only once in: it may serve one more STORE,
    // and is cut then.)
    let mut attempt = 0;
    loop {
        match c.ask(&format!("STORE early{attempt} 2")).as_str() {
            "ERROR storage unavailable" => break,
            "W00T!" => {
                assert!(Instant::now() < deadline, "the old password keeps working");
                pg.psql("postgres", cut);
                attempt += 1;
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
    std::fs::write(&pw, "second-Pw-2\n").unwrap();
    server.signal(Signal::SIGHUP);
    server.log.wait_for("SIGHUP: configuration reloaded");
    assert_eq!(c.ask("STORE b 2"), "W00T!");
    assert_eq!(c.ask("GET a"), "1");
    let log = server.log.all();
    assert!(
        !log.contains("first-Pw-1") && !log.contains("second-Pw-2"),
        "{log}"
    );
}

/// Readiness: while PostgreSQL cannot be reached at start, jnhpd retries
/// and tells systemd nothing; READY=1 comes once it is connected, and
/// then it serves.
#[test]
fn ready_only_once_connected() {
    require!(Postgres);
    use std::os::unix::net::UnixDatagram;
    let pg = Postgres::start();
    let db = pg.create_db("ready");
    pg.stop_immediate();
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(
        &path,
        config(&pg.url(&db), "", "")
            .replace("connect_timeout_secs = 10", "connect_timeout_secs = 60"),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &notify);
    let (mut child, log) = Server::launch(cmd);
    log.wait_for("cannot reach");
    let mut buf = [0u8; 4096];
    let early = socket
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(early.is_err(), "told systemd {early:?} before connecting");
    pg.start_again();
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "no READY=1");
        if let Ok(n) = socket.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("READY=1")
        {
            break;
        }
    }
    let started = log.wait_for("listening on");
    let addr: SocketAddr = started
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(Client::connect(addr).ask("STORE r 1"), "W00T!");
    let _ = child.kill();
    let _ = child.wait();
}

/// /readyz turns 503 while PostgreSQL is down and 200 once it is back;
/// jnhpd_postgres_up and the PostgreSQL and cache metrics follow.
#[test]
fn readiness_and_metrics_follow_the_database() {
    require!(Postgres);
    use common::{admin_addr, get};
    let pg = Postgres::start();
    let db = pg.create_db("obs");
    let front = Server::start(&config(
        &pg.url(&db),
        "",
        "[admin]\nlisten = [\"127.0.0.1:0\"]\n",
    ));
    let admin = admin_addr(&front);
    let mut c = front.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    assert_eq!(c.ask("GET a"), "1");
    assert_eq!(c.ask("GET zz"), "");
    assert_eq!(get(admin, "/readyz").0, 200);
    let (_, _, metrics) = get(admin, "/metrics");
    for line in [
        "jnhpd_postgres_up 1",
        "jnhpd_cache_requests_total{result=\"hit\"} 1",
        "jnhpd_cache_requests_total{result=\"miss\"} 1",
        "jnhpd_postgres_queries_total{op=\"write\",result=\"ok\"} 1",
        "jnhpd_postgres_queries_total{op=\"look_up\",result=\"ok\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    assert!(metrics.contains("jnhpd_postgres_query_duration_seconds_bucket"));
    // Batching: ten pipelined reads of uncached names share one query, ten
    // pipelined STOREs one statement (two, should the ten lines arrive in
    // two reads; never ten).
    let count = |metrics: &str, key: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(key)).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let look_ups = "jnhpd_postgres_queries_total{op=\"look_up\",result=\"ok\"}";
    let writes = "jnhpd_postgres_queries_total{op=\"write\",result=\"ok\"}";
    let reads: String = (0..10).map(|i| format!("GET u{i}\r\n")).collect();
    c.send(reads.as_bytes());
    assert!((0..10).all(|_| c.reply().is_empty()));
    let stores: String = (0..10).map(|i| format!("STORE s{i} v\r\n")).collect();
    c.send(stores.as_bytes());
    assert!((0..10).all(|_| c.reply() == "W00T!"));
    let (_, _, after) = get(admin, "/metrics");
    assert!(
        count(&after, look_ups) - count(&metrics, look_ups) <= 2,
        "{after}"
    );
    assert!(
        count(&after, writes) - count(&metrics, writes) <= 2,
        "{after}"
    );
    let misses = "jnhpd_cache_requests_total{result=\"miss\"}";
    assert_eq!(count(&after, misses), 11);
    assert!(
        !metrics.contains("jnhpd_names "),
        "no name count for a shared namespace"
    );
    pg.stop_immediate();
    assert_eq!(c.ask("STORE b 2"), "ERROR storage unavailable");
    let (status, _, body) = get(admin, "/readyz");
    assert_eq!((status, body.as_str()), (503, "postgres unreachable\n"));
    let down = get(admin, "/metrics").2;
    assert!(down.contains("jnhpd_postgres_up 0"), "{down}");
    assert!(down.contains("jnhpd_protocol_errors_total{reason=\"storage_unavailable\"} 1"));
    assert!(down.contains("jnhpd_requests_total{command=\"store\",outcome=\"error\"} 1"));
    pg.start_again();
    let deadline = Instant::now() + PATIENCE;
    while c.ask("STORE b 2") != "W00T!" {
        assert!(Instant::now() < deadline, "not back");
    }
    assert_eq!(get(admin, "/readyz").0, 200);
    assert!(get(admin, "/metrics").2.contains("jnhpd_postgres_up 1"));
}
