//! What a failover can lose is never acknowledged or served, and what
//! another tool wrote into the names table never breaks a reply: against
//! a real PostgreSQL (tests/common/pg.rs).
//!
//! A synchronous standby that never answers is a `synchronous_standby_names`
//! naming one that does not exist: every commit then waits, as it does
//! while a real standby is stalled, and `pg_cancel_backend` /
//! `pg_terminate_backend` end those waits the way an operator, a timeout
//! or a failover tool does — the commit stays on the primary only.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use common::{PATIENCE, Server, admin_addr, gated, get, process_validator, wait_for_file};
use pg::Postgres;

/// Requests bounded by 3 s keep the stalls short.
fn front_end(pg: &Postgres, db: &str, rest: &str) -> Server {
    Server::start(&format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n\
         lease_secs = 2\nrequest_timeout_ms = 3000\nconnect_timeout_secs = 10\n\
         [admin]\nlisten = [\"127.0.0.1:0\"]\n{rest}",
        pg.url(db)
    ))
}

/// The newest installed server's psql.
fn psql_program() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let psql = e.path().join("bin/psql");
            psql.exists().then_some((version, psql))
        })
        .collect();
    found.sort();
    found.pop().expect("psql not found").1
}

/// psql running `sql` as the superuser, not waited for.
fn psql(pg: &Postgres, db: &str, sql: &str) -> Command {
    let mut psql = Command::new(psql_program());
    psql.args(["-X", "-q", "-A", "-t"])
        .arg("-h")
        .arg(&pg.dir)
        .arg("-p")
        .arg(pg.port.to_string())
        .args(["-U", "postgres", "-d", db, "-c", sql])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    psql
}

/// Backends waiting for the synchronous standby.
fn waiting(pg: &Postgres) -> u64 {
    pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
    )
    .parse()
    .unwrap()
}

/// Makes every commit wait for a standby that does not exist; returns once
/// a commit is seen waiting (the setting is in force).
fn stall_standby(pg: &Postgres) {
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = 'nobody'",
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let deadline = Instant::now() + PATIENCE;
    loop {
        // A commit that writes WAL: it waits once the setting is in force.
        let mut probe = psql(
            pg,
            "postgres",
            "SELECT pg_logical_emit_message(true, 'p', '')",
        )
        .spawn()
        .unwrap();
        loop {
            assert!(Instant::now() < deadline, "the standby setting never took");
            if waiting(pg) > 0 {
                end_waits(pg, "pg_cancel_backend");
                probe.wait().unwrap();
                return;
            }
            if probe.try_wait().unwrap().is_some() {
                break;
            }
        }
    }
}

/// Lets commits complete without a standby again; returns once no commit
/// waits any more.
fn unstall_standby(pg: &Postgres) {
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = ''",
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let deadline = Instant::now() + PATIENCE;
    while waiting(pg) > 0 {
        assert!(Instant::now() < deadline, "commits still wait");
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Ends every wait for the standby with `how` (`pg_cancel_backend` or
/// `pg_terminate_backend`); returns how many.
fn end_waits(pg: &Postgres, how: &str) -> u64 {
    pg.psql(
        "postgres",
        &format!("SELECT count({how}(pid)) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"),
    )
    .parse()
    .unwrap()
}

/// Ends waits with `how` over and over until dropped.
struct Interrupter {
    stop: Arc<AtomicBool>,
    ended: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Interrupter {
    fn start(pg: &Arc<Postgres>, how: &'static str) -> Interrupter {
        let (stop, ended) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (pg, flag, count) = (pg.clone(), stop.clone(), ended.clone());
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                count.fetch_add(end_waits(&pg, how), Ordering::Relaxed);
                thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        Interrupter {
            stop,
            ended,
            thread: Some(thread),
        }
    }

    /// Stops; returns how many waits it ended.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.ended.load(Ordering::Relaxed)
    }
}

/// Sends `requests` pipelined on `clients` connections at once; returns
/// every connection's replies, in order.
fn pipelined(front: &Server, clients: usize, requests: &[String]) -> Vec<Vec<String>> {
    let readers: Vec<_> = (0..clients)
        .map(|i| {
            let mut client = front.connect();
            let mine: Vec<String> = requests.iter().skip(i).step_by(clients).cloned().collect();
            thread::spawn(move || {
                let all: String = mine.iter().map(|r| format!("{r}\r\n")).collect();
                client.send(all.as_bytes());
                mine.iter().map(|_| client.reply()).collect::<Vec<_>>()
            })
        })
        .collect();
    readers.into_iter().map(|r| r.join().unwrap()).collect()
}

fn metric(front: &Server, key: &str) -> u64 {
    let metrics = get(admin_addr(front), "/metrics").2;
    let line = metrics
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} not in:\n{metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Issue 22, item 1: STOREs whose commit waited for the standby and was
/// then cancelled or cut off are committed on the primary only. jnhpd
/// answered `W00T!` for them (it took the cancel's WARNING for success,
/// and after a cut connection found its own row and took that for
/// stored). Now each is `ERROR`: unknown, until proven durable. Once the
/// standby setting is lifted, those rows are as durable as any, and a
/// GET serves them and a STORE of the name is `RARGH!`.
#[test]
fn stores_whose_wait_for_the_standby_ended_early_are_never_acknowledged() {
    require!(Postgres);
    let pg = Arc::new(Postgres::start());
    let db = pg.create_db("t");
    let front = front_end(&pg, &db, "");
    let mut client = front.connect();
    assert_eq!(client.ask("STORE before v"), "W00T!");
    // Validated STOREs, their names reserved before the stall: the insert
    // that ends the reservation is the commit that waits.
    let dir = tempfile::tempdir().unwrap();
    let gate = gated(dir.path());
    let validated = front_end(&pg, &db, &process_validator(&gate, ""));
    let waiting_validations: Vec<_> = (0..4)
        .map(|i| {
            let mut client = validated.connect();
            client.send(format!("STORE validated{i} v{i}\r\n").as_bytes());
            wait_for_file(&dir.path().join(format!("started-validated{i}-v{i}")));
            client
        })
        .collect();
    stall_standby(&pg);
    let interrupter = Interrupter::start(&pg, "pg_cancel_backend");
    std::fs::write(dir.path().join("release"), "").unwrap();
    for mut client in waiting_validations {
        assert_eq!(client.reply(), "ERROR storage unavailable");
    }
    assert!(interrupter.stop() > 0);
    for how in ["pg_cancel_backend", "pg_terminate_backend"] {
        let stores: Vec<String> = (0..20).map(|i| format!("STORE {how}{i} v{i}")).collect();
        let interrupter = Interrupter::start(&pg, how);
        let replies = pipelined(&front, 4, &stores);
        let ended = interrupter.stop();
        assert!(ended > 0, "{how}: no wait was ended");
        for reply in replies.iter().flatten() {
            assert_eq!(reply, "ERROR storage unavailable", "{how}: {replies:?}");
        }
        // The rows are there, on the primary only: what a failover loses.
        let rows = pg.psql(
            &db,
            &format!("SELECT count(*) FROM jnhp_names WHERE encode(name, 'escape') LIKE '{how}%'"),
        );
        assert_ne!(rows, "0", "{how}: nothing was committed locally");
    }
    // A name absent from the table is answered at once, stalled or not.
    assert_eq!(client.ask("GET nothere"), "");
    unstall_standby(&pg);
    // Now durable as any commit: resolved as stored, by whoever stored it.
    for how in ["pg_cancel_backend", "pg_terminate_backend", "validated"] {
        let stored: Vec<String> = pg
            .psql(
                &db,
                &format!(
                    "SELECT encode(name, 'escape') FROM jnhp_names \
                     WHERE encode(name, 'escape') LIKE '{how}%' ORDER BY name"
                ),
            )
            .lines()
            .map(str::to_string)
            .collect();
        assert!(!stored.is_empty());
        for name in stored {
            let i = name.trim_start_matches(how);
            assert_eq!(client.ask(&format!("GET {name}")), format!("v{i}"));
            assert_eq!(client.ask(&format!("STORE {name} again")), "RARGH!");
        }
    }
    assert!(metric(&front, "jnhpd_postgres_unconfirmed_commits_total") > 0);
    assert_eq!(client.ask("STORE after v"), "W00T!");
}

/// Issue 22, item 1: a row another session committed while the standby
/// was stalled, whose wait was then cancelled, is visible on the primary
/// but would vanish in a failover. GET must not serve it (nor cache it),
/// EXISTS must not find it and a STORE of the name must not be refused
/// because of it, while the standby is missing; a name never stored is
/// answered at once. Once the standby setting is lifted, all three see it.
#[test]
fn rows_committed_on_the_primary_only_are_not_served_until_durable() {
    require!(Postgres);
    let pg = Arc::new(Postgres::start());
    let db = pg.create_db("t");
    let front = front_end(&pg, &db, "");
    let mut client = front.connect();
    assert_eq!(client.ask("STORE before v"), "W00T!");
    stall_standby(&pg);
    // Another tool's insert waits for the standby; cancelled, it stays on
    // the primary.
    let insert = psql(
        &pg,
        &db,
        "INSERT INTO jnhp_names (name, value, stored_by, write_id) \
         VALUES ('local'::bytea, 'lost'::bytea, 'tool', 0)",
    )
    .spawn()
    .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while waiting(&pg) == 0 {
        assert!(Instant::now() < deadline, "the insert never waited");
    }
    end_waits(&pg, "pg_cancel_backend");
    let output = insert.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(said.contains("committed locally"), "{said}");
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM jnhp_names WHERE name = 'local'"),
        "1"
    );
    // Left waiting (until the request's time is spent) ...
    let started = Instant::now();
    let waited = pipelined(&front, 1, &["GET local".into(), "EXISTS local".into()]);
    assert_eq!(
        waited[0],
        ["ERROR storage unavailable", "ERROR storage unavailable"]
    );
    assert!(started.elapsed() < PATIENCE);
    // ... or cancelled: never the value.
    let interrupter = Interrupter::start(&pg, "pg_cancel_backend");
    let cancelled = pipelined(
        &front,
        3,
        &[
            "GET local".into(),
            "EXISTS local".into(),
            "STORE local mine".into(),
        ],
    );
    assert!(interrupter.stop() > 0);
    for reply in cancelled.iter().flatten() {
        assert_eq!(reply, "ERROR storage unavailable", "{cancelled:?}");
    }
    // Misses cost no wait; the cache still answers what it holds.
    assert_eq!(client.ask("GET nothere"), "");
    assert_eq!(client.ask("EXISTS nothere"), "RARGH!");
    assert_eq!(client.ask("GET before"), "v");
    unstall_standby(&pg);
    assert_eq!(client.ask("GET local"), "lost");
    assert_eq!(client.ask("EXISTS local"), "AWESOME!");
    assert_eq!(client.ask("STORE local mine"), "RARGH!");
}

/// Issue 21, item 3: rows another tool put into the names table whose
/// value the protocol cannot carry (a line end, a NUL, `ERROR ` in front,
/// a blank in front, empty, longer than `max_value_bytes`) are answered
/// `ERROR unservable value in storage` and counted, never sent: pipelined
/// requests get exactly one well-formed line each. EXISTS finds them (the
/// name is taken), and nothing of them is cached.
#[test]
fn values_the_protocol_cannot_carry_are_answered_error_never_raw() {
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let front = front_end(&pg, &db, "[server]\nmax_value_bytes = 16\n");
    let mut client = front.connect();
    assert_eq!(client.ask("STORE warmup v"), "W00T!");
    let bad = [
        ("tool1", "x\r\nW00T!\r\n"),
        ("tool2", "ERROR storage unavailable"),
        ("tool3", ""),
        ("tool4", "a\u{0}b"),
        ("tool5", "seventeen bytes.."),
        ("tool6", " leading"),
        ("tool7", "line\nend"),
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
    pg.psql(
        &db,
        "INSERT INTO jnhp_names (name, value, stored_by, write_id) \
         VALUES ('good'::bytea, 'sixteen bytes...'::bytea, 'tool', 0)",
    );
    // The three, then every bad row, then the good one.
    let mut requests: Vec<String> = vec![
        "GET tool1".into(),
        "STORE fresh v".into(),
        "EXISTS nothere".into(),
    ];
    requests.extend(bad.iter().map(|(name, _)| format!("GET {name}")));
    requests.push("EXISTS tool1".into());
    requests.push("GET good".into());
    let all: String = requests.iter().map(|r| format!("{r}\r\n")).collect();
    // Twice: the second time nothing may come from a cache either.
    for round in 0..2 {
        client.send(all.as_bytes());
        let mut replies = Vec::new();
        for _ in &requests {
            let line = client.line();
            assert_eq!(
                line.iter().filter(|&&b| b == b'\n' || b == b'\r').count(),
                2,
                "{line:?}"
            );
            replies.push(String::from_utf8(line[..line.len() - 2].to_vec()).unwrap());
        }
        let store = if round == 0 { "W00T!" } else { "RARGH!" };
        let unservable = "ERROR unservable value in storage";
        let mut expected = vec![unservable, store, "RARGH!"];
        expected.extend(bad.iter().map(|_| unservable));
        expected.extend(["AWESOME!", "sixteen bytes..."]);
        assert_eq!(replies, expected, "round {round}");
        // In line still: the next request's reply is its own.
        assert_eq!(client.ask("GET warmup"), "v");
    }
    let counted = metric(&front, "jnhpd_postgres_unservable_values_total");
    assert!(counted >= 2 * bad.len() as u64, "{counted}");
    let logged = front.log.count("cannot be served") as u64;
    assert!(
        (1..counted).contains(&logged),
        "logged now and then, not per row"
    );
}

/// A streaming standby of `primary`, made with pg_basebackup; stopped
/// (after a SIGCONT, should it be stopped) when dropped.
struct Standby {
    dir: PathBuf,
    port: u16,
    stopped: Option<i32>,
}

fn bindir() -> PathBuf {
    psql_program().parent().unwrap().to_path_buf()
}

fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"])
        .arg(bindir().join(program))
        .stdin(Stdio::null());
    cmd
}

fn succeed(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Standby {
    fn start(primary: &Postgres) -> Standby {
        // Replication connections over the primary's socket.
        let hba = primary.dir.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).unwrap();
        text.push_str("local replication all trust\n");
        std::fs::write(&hba, text).unwrap();
        primary.psql("postgres", "SELECT pg_reload_conf()");
        let dir = tempfile::Builder::new()
            .prefix("jnhp-standby")
            .tempdir()
            .unwrap()
            .keep();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        succeed(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(&dir);
                c
            },
            "chown",
        );
        let mut backup = as_postgres("pg_basebackup");
        backup
            .arg("-D")
            .arg(&dir)
            .arg("-h")
            .arg(&primary.dir)
            .args(["-p", &primary.port.to_string(), "-U", "postgres"])
            .args(["-R", "-X", "stream", "-c", "fast"]);
        succeed(backup, "pg_basebackup");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let standby = Standby {
            dir,
            port,
            stopped: None,
        };
        let mut ctl = as_postgres("pg_ctl");
        ctl.arg("-D")
            .arg(&standby.dir)
            .arg("-l")
            .arg(standby.dir.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses='' -c cluster_name=standby",
                standby.dir.display()
            ))
            .args(["-w", "-t", "60", "start"]);
        let started = ctl.output().unwrap();
        assert!(
            started.status.success(),
            "pg_ctl start (standby): {}",
            std::fs::read_to_string(standby.dir.join("server.log")).unwrap_or_default()
        );
        standby
    }

    /// Stops the standby's WAL receiver (SIGSTOP): it confirms nothing
    /// more, as a stalled standby.
    fn stall(&mut self) {
        let pid = psql_at(&self.dir, self.port, "SELECT pid FROM pg_stat_wal_receiver");
        let pid: i32 = pid.parse().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        self.stopped = Some(pid);
    }

    fn resume(&mut self) {
        if let Some(pid) = self.stopped.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        self.resume();
        let mut ctl = as_postgres("pg_ctl");
        ctl.arg("-D")
            .arg(&self.dir)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = ctl.status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// psql on the server at `dir`/`port`; its output, trimmed.
fn psql_at(dir: &std::path::Path, port: u16, sql: &str) -> String {
    let out = Command::new(psql_program())
        .args(["-X", "-q", "-A", "-t", "-h"])
        .arg(dir)
        .args([
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The same against a real synchronous standby whose WAL receiver is
/// stopped (SIGSTOP): cancelled waits draw PostgreSQL's WARNING, and
/// neither the STOREs involved nor a row committed on the primary only
/// are answered as durable; once the standby runs again, they are.
#[test]
fn a_stalled_real_standby_confirms_nothing_and_nothing_is_answered_as_durable() {
    require!(Postgres);
    let pg = Arc::new(Postgres::start());
    let db = pg.create_db("t");
    let mut standby = Standby::start(&pg);
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let deadline = Instant::now() + PATIENCE;
    while pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
    ) != "1"
    {
        assert!(
            Instant::now() < deadline,
            "the standby never became synchronous"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
    let front = front_end(&pg, &db, "");
    let mut client = front.connect();
    assert_eq!(client.ask("STORE before v"), "W00T!");
    assert_eq!(
        psql_at(
            &standby.dir,
            standby.port,
            "SELECT count(*) FROM pg_database WHERE datname = 't'"
        ),
        "1"
    );
    standby.stall();
    let stores: Vec<String> = (0..8).map(|i| format!("STORE s{i} v{i}")).collect();
    let interrupter = Interrupter::start(&pg, "pg_cancel_backend");
    let replies = pipelined(&front, 2, &stores);
    let local = psql(
        &pg,
        &db,
        "INSERT INTO jnhp_names (name, value, stored_by, write_id) \
         VALUES ('local'::bytea, 'lost'::bytea, 'tool', 0)",
    )
    .output()
    .unwrap();
    let read = pipelined(&front, 1, &["GET local".into(), "EXISTS local".into()]);
    assert!(interrupter.stop() > 0);
    for reply in replies.iter().chain(&read).flatten() {
        assert_eq!(reply, "ERROR storage unavailable", "{replies:?} {read:?}");
    }
    assert!(
        String::from_utf8_lossy(&local.stderr).contains("committed locally"),
        "{local:?}"
    );
    assert!(front.log.count("synchronous replication") > 0);
    assert_eq!(client.ask("GET nothere"), "");
    standby.resume();
    let deadline = Instant::now() + PATIENCE;
    while client.ask("GET local") != "lost" {
        assert!(Instant::now() < deadline, "never served once replicated");
    }
    assert_eq!(client.ask("EXISTS local"), "AWESOME!");
    for i in 0..8 {
        assert_eq!(client.ask(&format!("GET s{i}")), format!("v{i}"));
    }
}

/// Issue 22: a primary that was failed over but not fenced yet (frozen
/// while its standby was promoted, then thawed) still takes connections
/// as a primary, on the old timeline, and lacks what the new primary
/// acknowledged. A hostile tester saw a front-end serve an empty GET of
/// a name stored on the new primary from such a server's idle pooled
/// connections. Here the same split brain, made on purpose: a standby
/// promoted (timeline 2) while its primary runs on (timeline 1). Once
/// the front-end has seen timeline 2, it reads nothing from timeline 1:
/// a request gets `ERROR storage unavailable`, never "absent".
#[test]
fn an_old_primary_behind_the_newest_timeline_is_never_read() {
    require!(Postgres);
    let old = Postgres::start();
    let db = old.create_db("fence");
    // jnhpd's tables exist before the copy.
    drop(front_end(&old, &db, ""));
    let new = Standby::start(&old);
    let mut promote = as_postgres("pg_ctl");
    promote.arg("-D").arg(&new.dir).args(["-w", "promote"]);
    succeed(promote, "pg_ctl promote");
    let url = format!(
        "host={},{} port={},{} user=postgres dbname={db}",
        old.dir.display(),
        new.dir.display(),
        old.port,
        new.port
    );
    let front = Server::start(&format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{url}\"\n\
         cache_bytes = 0\nlease_secs = 2\nrequest_timeout_ms = 3000\nconnect_timeout_secs = 10\n"
    ));
    let mut client = front.connect();
    assert_eq!(client.ask("STORE on-old v"), "W00T!");
    // The old primary goes away; the front-end moves to the new one and
    // stores there (it has seen timeline 2 now).
    old.stop_immediate();
    let deadline = Instant::now() + PATIENCE;
    while client.ask("STORE on-new v") != "W00T!" {
        assert!(Instant::now() < deadline, "never wrote on the new primary");
    }
    // The old primary comes back, unfenced; the new one goes away.
    old.start_again();
    let mut stop = as_postgres("pg_ctl");
    stop.arg("-D")
        .arg(&new.dir)
        .args(["-m", "immediate", "-w", "stop"]);
    succeed(stop, "pg_ctl stop");
    let until = Instant::now() + std::time::Duration::from_secs(4);
    while Instant::now() < until {
        let reply = client.ask("GET on-new");
        assert_eq!(
            reply, "ERROR storage unavailable",
            "read on the old primary"
        );
        let reply = client.ask("STORE on-old-again v");
        assert_eq!(
            reply, "ERROR storage unavailable",
            "written on the old primary"
        );
    }
}
