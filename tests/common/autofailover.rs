//! A highly available PostgreSQL for tests: a pg_auto_failover monitor
//! and two nodes (a primary and its synchronous standby) on loopback, run
//! as the `postgres` user in a temporary directory, with a `jnhp` user
//! and database; a planned switchover and an unplanned failover on
//! demand; everything killed when dropped (even on panic).
//!
//! What setting it up taught (issue 22): ports must be below 32768 (above,
//! they collide with outgoing connections); the monitor needs `--listen`
//! too; pg_autoctl sizes `shared_buffers` to a share of the machine's
//! memory (set to 128 MB here, in `postgresql.auto.conf`, which is read
//! last and which pg_autoctl does not rewrite); killing only a postmaster
//! makes its keeper restart it in place, so an unplanned failover kills
//! the node's whole process group (keeper, its services, postmaster) and
//! the postmaster's children (backends, walsenders: each in a session of
//! its own); a SIGSTOPped standby's socket buffers still take about a
//! megabyte of WAL, so a test of waiting commits first writes filler WAL
//! until the walsender stalls. The monitor's timeouts are shortened (a node unhealthy after
//! 6 s instead of 20 s, a lost primary demoted after 10 s instead of 30 s)
//! so that a failover fits a CI run.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the formation may take to settle (creation, a failover).
pub const SETTLE: Duration = Duration::from_secs(120);

/// One pg_autoctl service: the monitor or a node.
pub struct Keeper {
    pub name: String,
    pub port: u16,
    pub pgdata: PathBuf,
    /// `runuser … pg_autoctl run`, the leader of its own process group.
    child: Option<Child>,
}

impl Keeper {
    /// The process group of the keeper and everything it started.
    pub fn pgid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL to the whole process group (keeper, postmaster) and the
    /// postmaster's children.
    fn kill(&mut self) {
        if self.child.is_some() {
            // The backends first: their sessions are their own.
            if let Some(postmaster) = self.postmaster_pid() {
                for (child, _) in crate::common::children_of(postmaster) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(child),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` to the keeper's process group and to every child of
    /// the postmaster (PostgreSQL's children start sessions of their own,
    /// so the group does not reach them): SIGSTOP freezes the node
    /// (keeper, postmaster, walreceiver, backends; the postmaster first,
    /// so it starts no new child meanwhile), SIGCONT thaws it.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        use nix::sys::signal::{kill, killpg};
        use nix::unistd::Pid;
        if let Some(pgid) = self.pgid() {
            let _ = killpg(Pid::from_raw(pgid), signal);
        }
        if let Some(postmaster) = self.postmaster_pid() {
            for (child, _) in crate::common::children_of(postmaster) {
                let _ = kill(Pid::from_raw(child), signal);
            }
        }
    }

    /// The postmaster's pid (first line of postmaster.pid), if running.
    pub fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pgdata.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

/// A monitor and two nodes.
pub struct Formation {
    pub dir: PathBuf,
    pub monitor: Keeper,
    pub nodes: Vec<Keeper>,
    bindir: PathBuf,
}

/// Where a node stands, as the monitor has it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub name: String,
    pub port: u16,
    pub reported: String,
    pub goal: String,
}

/// A free port below 32768 (above, the kernel hands ports out for
/// outgoing connections, and a test's server may find its port taken).
fn low_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() as u16 % 400) * 25;
    loop {
        let port = 20000 + (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % 12000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn output(mut cmd: Command, what: &str) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed: {text}");
    text
}

impl Formation {
    /// Creates and starts the monitor and two nodes; returns once one is
    /// primary and the other its synchronous standby, with the `jnhp`
    /// user and database (owned by it, trusted on loopback) created.
    pub fn start() -> Formation {
        let bindir = crate::common::need::postgres_bindir().expect("PostgreSQL not installed");
        let dir = tempfile::Builder::new()
            .prefix("jnhp-autofailover")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        output(
            {
                let mut c = Command::new("chown");
                c.args(["postgres:postgres"]).arg(&dir);
                c
            },
            "chown",
        );
        let keeper = |name: &str| Keeper {
            name: name.to_string(),
            port: low_port(),
            pgdata: dir.join(name),
            child: None,
        };
        let mut formation = Formation {
            monitor: keeper("monitor"),
            nodes: vec![keeper("node1"), keeper("node2")],
            dir,
            bindir,
        };
        formation.create_monitor();
        formation.create_node(0);
        formation.wait_for(|s| s.iter().any(|n| n.reported == "single"), "node1 single");
        formation.create_node(1);
        formation.wait_stable();
        let primary = formation.primary();
        formation.psql(primary, "postgres", "CREATE ROLE jnhp LOGIN");
        formation.psql(primary, "postgres", "CREATE DATABASE jnhp OWNER jnhp");
        formation
    }

    /// `pg_autoctl` (or another program) as the postgres user, with its
    /// configuration kept in the formation's directory.
    fn autoctl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", "env"])
            .arg(format!("XDG_CONFIG_HOME={}/config", self.dir.display()))
            .arg(format!("XDG_DATA_HOME={}/data", self.dir.display()))
            .arg(format!(
                "PATH={}:/usr/bin:/bin:/usr/sbin:/sbin",
                self.bindir.display()
            ))
            .arg("pg_autoctl")
            .args(args);
        cmd
    }

    fn pgctl(&self) -> String {
        self.bindir.join("pg_ctl").display().to_string()
    }

    pub fn monitor_url(&self) -> String {
        format!(
            "postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover?sslmode=disable",
            self.monitor.port
        )
    }

    /// Appends settings to a data directory's `postgresql.auto.conf`
    /// (read last, so they win over pg_autoctl's own file).
    fn append_auto_conf(&self, pgdata: &Path, lines: &str) {
        let path = pgdata.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(lines);
        std::fs::write(&path, text).unwrap();
    }

    fn run(&self, keeper: &Keeper) -> Child {
        let mut cmd = self.autoctl(&["run", "--pgdata", keeper.pgdata.to_str().unwrap()]);
        let log = std::fs::File::create(self.dir.join(format!("{}.log", keeper.name))).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        cmd.spawn().unwrap()
    }

    /// `pg_autoctl create KIND` for `instance`: on loopback, trusting local
    /// connections, without TLS (a test on one machine), plus `extra`.
    fn create(&self, kind: &str, instance: &Keeper, extra: &[&str]) -> Command {
        let port = instance.port.to_string();
        let pgctl = self.pgctl();
        let mut args = vec![
            "create",
            kind,
            "--pgdata",
            instance.pgdata.to_str().unwrap(),
            "--pgport",
            &port,
            "--hostname",
            "127.0.0.1",
            "--listen",
            "127.0.0.1",
            "--auth",
            "trust",
            "--no-ssl",
            "--ssl-mode",
            "disable",
            "--pgctl",
            &pgctl,
        ];
        args.extend_from_slice(extra);
        self.autoctl(&args)
    }

    fn create_monitor(&mut self) {
        let cmd = self.create("monitor", &self.monitor, &[]);
        output(cmd, "pg_autoctl create monitor");
        self.append_auto_conf(
            &self.monitor.pgdata,
            "shared_buffers = '128MB'\n\
             pgautofailover.health_check_period = 1000\n\
             pgautofailover.health_check_timeout = 1000\n\
             pgautofailover.health_check_retry_delay = 500\n\
             pgautofailover.node_considered_unhealthy_timeout = 6000\n\
             pgautofailover.primary_demote_timeout = 10000\n",
        );
        self.monitor.child = Some(self.run(&self.monitor));
        let deadline = Instant::now() + SETTLE;
        while self.try_monitor_sql("SELECT 1").is_none() {
            assert!(Instant::now() < deadline, "the monitor never answered");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn create_node(&mut self, i: usize) {
        let node = &self.nodes[i];
        let monitor = self.monitor_url();
        let cmd = self.create(
            "postgres",
            node,
            &["--monitor", &monitor, "--name", &node.name],
        );
        output(cmd, &format!("pg_autoctl create postgres ({})", node.name));
        self.append_auto_conf(&node.pgdata, "shared_buffers = '128MB'\n");
        let child = self.run(&self.nodes[i]);
        self.nodes[i].child = Some(child);
    }

    /// psql as the postgres superuser on node `i`, over loopback.
    pub fn try_psql(&self, i: usize, db: &str, sql: &str) -> Result<String, String> {
        self.try_psql_port(self.nodes[i].port, "postgres", db, sql)
    }

    fn try_psql_port(&self, port: u16, user: &str, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bindir.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", user, "-d", db, "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// psql on node `i`; panics on failure.
    pub fn psql(&self, i: usize, db: &str, sql: &str) -> String {
        self.try_psql(i, db, sql)
            .unwrap_or_else(|e| panic!("psql on {}: {sql}: {e}", self.nodes[i].name))
    }

    fn try_monitor_sql(&self, sql: &str) -> Option<String> {
        self.try_psql_port(self.monitor.port, "autoctl_node", "pg_auto_failover", sql)
            .ok()
    }

    /// Every node as the monitor has it.
    pub fn state(&self) -> Vec<NodeState> {
        let Some(text) = self.try_monitor_sql(
            "SELECT nodename, nodeport, reportedstate, goalstate \
             FROM pgautofailover.node ORDER BY nodeid",
        ) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|line| {
                let mut f = line.split('|');
                Some(NodeState {
                    name: f.next()?.to_string(),
                    port: f.next()?.parse().ok()?,
                    reported: f.next()?.to_string(),
                    goal: f.next()?.to_string(),
                })
            })
            .collect()
    }

    fn wait_for(&self, done: impl Fn(&[NodeState]) -> bool, what: &str) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let state = self.state();
            if done(&state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the formation never reached {what}: {state:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until one node is primary and the other its secondary, both
    /// as reported and as assigned, and the primary names a synchronous
    /// standby.
    pub fn wait_stable(&self) {
        self.wait_for(
            |s| {
                s.len() == 2
                    && s.iter()
                        .any(|n| n.reported == "primary" && n.goal == "primary")
                    && s.iter()
                        .any(|n| n.reported == "secondary" && n.goal == "secondary")
            },
            "a primary and a secondary",
        );
        let primary = self.primary();
        let deadline = Instant::now() + SETTLE;
        loop {
            let sync = self.try_psql(
                primary,
                "postgres",
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')",
            );
            if sync.as_deref() == Ok("1") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no synchronous standby: {sync:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The index of the node the monitor has as primary (goal and
    /// reported), or as `wait_primary` (a primary without a standby).
    pub fn primary(&self) -> usize {
        let state = self.state();
        let node = state
            .iter()
            .find(|n| n.goal == n.reported && (n.goal == "primary" || n.goal == "wait_primary"))
            .unwrap_or_else(|| panic!("no primary: {state:?}"));
        self.nodes.iter().position(|k| k.name == node.name).unwrap()
    }

    /// Waits until node `i` is a primary that accepts writes: promoted,
    /// and no longer waiting for the standby it lost (`wait_primary`).
    pub fn wait_writable(&self, i: usize) {
        let name = self.nodes[i].name.clone();
        self.wait_for(
            |s| {
                s.iter().any(|n| {
                    n.name == name
                        && n.reported == n.goal
                        && (n.goal == "primary" || n.goal == "wait_primary")
                })
            },
            &format!("{name} writable"),
        );
    }

    /// `pg_autoctl perform switchover`: returns once it is done (the old
    /// primary demoted, the other promoted); the index of the new primary.
    pub fn switchover(&self) -> usize {
        let old = self.primary();
        let cmd = self.autoctl(&[
            "perform",
            "switchover",
            "--pgdata",
            self.nodes[old].pgdata.to_str().unwrap(),
        ]);
        output(cmd, "pg_autoctl perform switchover");
        let new = 1 - old;
        self.wait_writable(new);
        new
    }

    /// SIGKILL of the primary's keeper, postmaster and backends at once
    /// (a node crash: killing only the postmaster makes the keeper start
    /// it again in place). Returns the index of the node killed.
    pub fn kill_primary(&mut self) -> usize {
        let old = self.primary();
        self.nodes[old].kill();
        old
    }

    /// SIGKILL of node `i`'s keeper, postmaster and backends.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Writes WAL on node `i` (the primary) without waiting for the
    /// standby (`synchronous_commit = local`) until its walsender has
    /// `behind` bytes it could not send: a frozen standby's socket buffers
    /// take about a megabyte before the walsender stalls, and until then
    /// commits seem replicated that are not.
    pub fn fill_wal_until_stalled(&self, i: usize, behind: u64) {
        self.psql(
            i,
            "postgres",
            "SET synchronous_commit = local; \
             CREATE TABLE IF NOT EXISTS filler (x text) WITH (autovacuum_enabled = off)",
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.psql(
                i,
                "postgres",
                "SET synchronous_commit = local; \
                 INSERT INTO filler SELECT repeat(md5(g::text), 32) FROM generate_series(1, 1000) g",
            );
            let lag = self.psql(
                i,
                "postgres",
                "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn)), 0)::bigint \
                 FROM pg_stat_replication",
            );
            if lag.parse::<u64>().unwrap_or(0) >= behind {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the walsender never stalled ({lag} bytes behind): {}\n{}",
                self.psql(i, "postgres", "SELECT * FROM pg_stat_replication"),
                String::from_utf8_lossy(
                    &Command::new("ps")
                        .args(["-eo", "pid,pgid,stat,args"])
                        .output()
                        .unwrap()
                        .stdout
                )
            );
        }
    }

    /// The names table on node `i`: (name, value) pairs, escaped as
    /// PostgreSQL's `escape` encoding does (plain text stays as it is).
    pub fn names(&self, i: usize) -> Vec<(String, String)> {
        let text = self.psql(
            i,
            "jnhp",
            "SELECT encode(name, 'escape') || '|' || encode(value, 'escape') FROM jnhp_names",
        );
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once('|').unwrap();
                (name.to_string(), value.to_string())
            })
            .collect()
    }

    /// The last lines of every service's log (for failure messages).
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for name in ["monitor", "node1", "node2"] {
            let text =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            all.push_str(&format!("--- {name}.log\n{}\n", tail.join("\n")));
        }
        all
    }
}

impl Drop for Formation {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        self.monitor.kill();
        // A backend a SIGKILL missed (none should be) holds no file open
        // that a removal needs.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
