//! Several front-ends on one PostgreSQL namespace, against real servers:
//! each test starts its own PostgreSQL (tests/common/pg.rs) and real
//! jnhpd processes, and checks what clients see.

mod common;
#[path = "common/pg.rs"]
mod pg;

use common::{Server, script};
use pg::Postgres;

/// The config of a front-end on `url`, with `extra` appended.
fn front_end_config(url: &str, extra: &str) -> String {
    format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{url}\"\nlease_secs = 2\nrequest_timeout_ms = 3000\nconnect_timeout_secs = 5\n{extra}"
    )
}

fn front_end(pg: &Postgres, db: &str, extra: &str) -> Server {
    Server::start(&front_end_config(&pg.url(db), extra))
}

#[test]
fn a_store_on_one_front_end_is_read_at_once_on_another() {
    let pg = Postgres::start();
    let db = pg.create_db("t");
    let a = front_end(&pg, &db, "");
    let b = front_end(&pg, &db, "");
    let (mut ca, mut cb) = (a.connect(), b.connect());
    assert_eq!(cb.ask("GET n"), "");
    assert_eq!(cb.ask("EXISTS n"), "RARGH!");
    assert_eq!(ca.ask("STORE n v1"), "W00T!");
    assert_eq!(cb.ask("EXISTS n"), "AWESOME!");
    assert_eq!(cb.ask("GET n"), "v1");
    assert_eq!(cb.ask("STORE n v2"), "RARGH!");
    assert_eq!(ca.ask("GET n"), "v1");
    assert_eq!(pg.psql(&db, "SELECT encode(value, 'escape') FROM jnhp_names"), "v1");
}
