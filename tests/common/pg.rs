//! A real PostgreSQL server per test, from Debian's `postgresql` package.
//!
//! `initdb` runs once per test binary (as the `postgres` user, with
//! `runuser`) into a template directory under cargo's target tmpdir; each
//! test copies it, starts `postgres` on a free port with its socket in its
//! own directory, and stops it (immediately) when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The newest installed server's binaries (tests call `require!(Postgres)`
/// first, which checks with the same function).
fn bindir() -> PathBuf {
    crate::common::need::postgres_bindir().expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql: \
         install Debian's postgresql package (.ci/run does)",
    )
}

fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed: {text}");
    text
}

fn chown_postgres(path: &Path) {
    run(
        {
            let mut c = Command::new("chown");
            c.args(["-R", "postgres:postgres"]).arg(path);
            c
        },
        "chown",
    );
}

/// The initialised cluster every test copies: made once per machine and
/// server version (initdb is most of a start's time), under /tmp so the
/// postgres user can read it.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let version = bindir()
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let done = PathBuf::from(format!("/tmp/jnhp-pg-template-{version}-v1"));
        if done.join("PG_VERSION").exists() {
            return done;
        }
        let data = PathBuf::from(format!("{}.{}", done.display(), std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        chown_postgres(&data);
        let mut initdb = as_postgres(&bindir().join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run(initdb, "initdb");
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        // Tests need speed, not the test server's own crash safety (the
        // fault tests stop it with -m immediate, which keeps every
        // committed transaction in the WAL that is already written).
        text.push_str(
            "\nfsync = off\nfull_page_writes = off\n\
             shared_buffers = 16MB\nmax_connections = 60\nlog_min_messages = warning\n",
        );
        std::fs::write(&conf, text).unwrap();
        let hba = "local all all trust\n\
                   host all postgres 127.0.0.1/32 trust\n\
                   host all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        chown_postgres(&data);
        // Another test binary may have finished first: then use its.
        if std::fs::rename(&data, &done).is_err() {
            let _ = std::fs::remove_dir_all(&data);
        }
        done
    })
}

pub struct Postgres {
    pub dir: PathBuf,
    pub port: u16,
    extra: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// A new server, started and ready.
    pub fn start() -> Postgres {
        Postgres::start_with(&[])
    }

    /// A new server with extra `-c name=value` settings.
    pub fn start_with(settings: &[&str]) -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("jnhp-pg")
            .tempdir()
            .unwrap()
            .keep();
        run(
            {
                let mut c = Command::new("cp");
                c.arg("-a")
                    .arg(format!("{}/.", template().display()))
                    .arg(&dir);
                c
            },
            "cp",
        );
        chown_postgres(&dir);
        let pg = Postgres {
            dir,
            port: free_port(),
            extra: settings.iter().map(|s| s.to_string()).collect(),
        };
        pg.start_again();
        pg
    }

    /// Starts the (stopped) server again on its port; returns once it
    /// accepts connections.
    pub fn start_again(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        for setting in &self.extra {
            options.push_str(&format!(" -c {setting}"));
        }
        let mut ctl = as_postgres(&bindir().join("pg_ctl"));
        ctl.arg("-D")
            .arg(&self.dir)
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"]);
        run(ctl, "pg_ctl start");
    }

    /// `pg_ctl stop -m immediate`: every connection is cut at once.
    pub fn stop_immediate(&self) {
        let mut ctl = as_postgres(&bindir().join("pg_ctl"));
        ctl.arg("-D")
            .arg(&self.dir)
            .args(["-m", "immediate", "-w", "stop"]);
        run(ctl, "pg_ctl stop");
    }

    /// A keyword string for `user` on the server's socket.
    pub fn url(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.dir.display(),
            self.port
        )
    }

    /// A `postgres://` URL over TCP.
    pub fn tcp_url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with psql as the postgres superuser; returns its output
    /// (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut psql = Command::new(bindir().join("psql"));
        psql.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db, "-c", sql]);
        run(psql, "psql").trim().to_string()
    }

    /// Creates a database and returns its name.
    pub fn create_db(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name.to_string()
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut ctl = as_postgres(&bindir().join("pg_ctl"));
        ctl.arg("-D")
            .arg(&self.dir)
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = ctl.stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
