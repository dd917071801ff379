//! What the tests of a PostgreSQL front-end's reservations share: its
//! config, the rows it holds, validators that hold or shuffle them.

#![allow(dead_code)] // each test file uses a different part of it

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{self, PATIENCE};
use crate::pg::Postgres;

/// A front-end's config on `url` with `lease_secs`, plus `rest`.
pub fn config(url: &str, lease_secs: u64, rest: &str) -> String {
    format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{url}\"\n\
         lease_secs = {lease_secs}\nrequest_timeout_ms = 3000\nconnect_timeout_secs = 10\n{rest}"
    )
}

/// Polls `check` every 20 ms until it holds; panics after [`PATIENCE`].
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The reservations held in `db`, every front-end's.
pub fn pending_rows(pg: &Postgres, db: &str) -> usize {
    pg.psql(db, "SELECT count(*) FROM jnhp_pending")
        .parse()
        .unwrap()
}

/// The admin listener's `/readyz` status.
pub fn ready(admin: SocketAddr) -> u16 {
    common::get(admin, "/readyz").0
}

/// A validator that blocks until a `release` file appears in `dir`.
pub fn blocking_validator(dir: &Path) -> PathBuf {
    common::script(
        dir,
        "blocking",
        &format!(
            "while [ ! -e {}/release ]; do sleep 0.05; done\necho JNHP:1",
            dir.display()
        ),
    )
}

/// A helper validator that allows everything, each answer after a random
/// delay of up to `max_delay_secs`: answers come back out of order.
pub fn shuffling_helper(dir: &Path, max_delay_secs: f64) -> PathBuf {
    common::script(
        dir,
        "shuffle",
        &format!(
            "exec python3 -u -c '
import random, sys, threading
lock = threading.Lock()
def answer(rid):
    with lock:
        sys.stdout.write(rid + \" JNHP:1\\n\")
        sys.stdout.flush()
for line in sys.stdin:
    rid = line.split(\" \", 1)[0]
    threading.Timer(random.random() * {max_delay_secs}, answer, [rid]).start()
'"
        ),
    )
}
