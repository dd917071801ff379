//! A hostile look at the one request path (issue 23): the store actor keeps
//! every request that waits (a validation, a write, a turn behind another
//! STORE of the same name, a lookup) by parking its connection's batch, and
//! the connection only frames lines, submits them and writes what comes
//! back. These tests attack it from outside, with real sockets, real
//! validator scripts and real signals, against what docs/ promises:
//! replies exact and in order, exactly one `W00T!` per name, clients that
//! leave freeing their slot without anything more being started for them,
//! the grace period's `ERROR shutting down` never stored, acknowledged
//! STOREs surviving a kill, bounded memory.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, Server, process_validator, script, wait_for_file};
use nix::sys::signal::Signal;

/// A validator script in `dir` that records each run as
/// `started-<name>-<value>`, waits until a `release` file (or a
/// `release-<name>` file) exists there, then allows values not starting
/// with "bad".
fn gate(dir: &Path) -> PathBuf {
    script(
        dir,
        "gate",
        &format!(
            "cd {dir}\necho $$ > \"started-$JNHP_NAME-$1\"\n\
             while [ ! -e release ] && [ ! -e \"release-$JNHP_NAME\" ]; do sleep 0.02; done\n\
             case \"$1\" in bad*) echo JNHP:0 ;; *) echo JNHP:1 ;; esac",
            dir = dir.display()
        ),
    )
}

/// The gate as the one validator, with a timeout far beyond any test.
fn gate_config(dir: &Path, extra: &str) -> String {
    format!(
        "{extra}\n{}",
        process_validator(&gate(dir), "timeout_ms = 600000")
    )
}

/// The validator runs recorded by [`gate`] so far.
fn runs(dir: &Path) -> Vec<String> {
    let mut runs: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("started-").map(str::to_string)
        })
        .collect();
    runs.sort();
    runs
}

/// Leaves with a reset (SO_LINGER 0, then close): the way a crashed or
/// killed client's system, or a load balancer, ends a connection.
fn reset(client: Client) {
    let stream = client.reader.into_inner();
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// Tries one connection: `true` if the server took it (answered a request),
/// `false` if it refused it (`ERROR too many connections`) or closed it.
fn accepted(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = stream.write_all(b"EXISTS probe-of-a-slot\r\n");
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\n") {
        match stream.read(&mut byte) {
            Ok(1) => reply.push(byte[0]),
            _ => return false,
        }
    }
    reply == b"RARGH!\r\n" || reply == b"AWESOME!\r\n"
}

/// Whether a connection is taken within `within` (a slot came back).
fn slot_back_within(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if accepted(addr) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `GET name` on new connections until it answers `want`.
fn wait_for_value(addr: SocketAddr, name: &str, want: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if Client::connect(addr).ask(&format!("GET {name}")) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "GET {name} never answered {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `connections` count of `/status` on the admin listener.
fn open_connections(server: &Server) -> u64 {
    let (_, _, body) = common::get(common::admin_addr(server), "/status");
    let after = body
        .split("\"connections\":")
        .nth(1)
        .expect("/status has connections");
    after
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Waits until `/status` counts `n` open connections; `false` if that
/// does not happen within `within`.
fn connections_become(server: &Server, n: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if open_connections(server) == n {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts jnhpd again in `dir` on `config` (after a stop), on a new port.
fn restart_in(dir: tempfile::TempDir, config: &Path) -> Server {
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0"]);
    Server::spawn(cmd, dir, Some(config.to_path_buf()))
}

/// Takes the directory out of a stopped server, to start another on it.
fn take_dir(server: &mut Server) -> tempfile::TempDir {
    std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap())
}

// ---------------------------------------------------------------------------
// Clients that leave
// ---------------------------------------------------------------------------

/// A client that resets while its STORE is being validated (the first
/// request of its read, so no reply went out before it waited) has left:
/// operations.md promises its slot back "while the connection waits", and
/// the brief of issue 23 "within seconds", not when a validator that may
/// run for minutes ends.
#[test]
fn a_client_reset_while_its_store_is_validated_frees_its_slot() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &gate_config(&root, "[server]\nmax_connections = 1\n"));
    let mut c = s.connect();
    c.send(b"STORE held v\r\n");
    wait_for_file(&root.join("started-held-v"));
    reset(c);
    let back = slot_back_within(s.addr(), Duration::from_secs(10));
    std::fs::write(root.join("release"), "").unwrap();
    assert!(
        back,
        "the slot of a client that reset during its validation was not freed within 10 s"
    );
}

/// The same, when a reply left before the STORE started waiting (so the
/// connection watches its client): the slot comes back at once, the
/// validation under way finishes and is stored, and the STOREs pipelined
/// behind it are dropped.
#[test]
fn a_client_reset_while_validated_after_a_reply_frees_its_slot_and_finishes_what_started() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &gate_config(&root, "[server]\nmax_connections = 1\n"));
    let mut c = s.connect();
    c.send(b"GET x\r\nSTORE held v\r\nSTORE after1 v\r\nSTORE after2 v\r\n");
    assert_eq!(c.reply(), "");
    wait_for_file(&root.join("started-held-v"));
    reset(c);
    let back = slot_back_within(s.addr(), Duration::from_secs(10));
    std::fs::write(root.join("release"), "").unwrap();
    assert!(back, "the slot was not freed within 10 s");
    wait_for_value(s.addr(), "held", "v");
    std::thread::sleep(Duration::from_secs(1));
    let mut probe = s.connect();
    assert_eq!(probe.ask("EXISTS after1"), "RARGH!");
    assert_eq!(probe.ask("EXISTS after2"), "RARGH!");
    assert_eq!(runs(&root), ["held-v"]);
}

/// A client pipelines 200 validated STOREs and resets while the first is
/// validated: that one finishes ("what has started finishes"), none of the
/// 199 not started may be validated or stored for a client that is gone.
#[test]
fn nothing_queued_behind_a_validation_is_validated_for_a_client_that_reset() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let s = Server::start_in(
        d,
        &gate_config(&root, "[admin]\nlisten = [\"127.0.0.1:0\"]\n"),
    );
    let mut c = s.connect();
    let pipeline: String = (0..200).map(|i| format!("STORE k{i} v\r\n")).collect();
    c.send(pipeline.as_bytes());
    wait_for_file(&root.join("started-k0-v"));
    reset(c);
    // Give the server its chance to see the reset before the gate opens
    // (not asserted here: the test above is about the slot).
    let _ = connections_become(&s, 0, Duration::from_secs(10));
    std::fs::write(root.join("release"), "").unwrap();
    // What had started finishes.
    wait_for_value(s.addr(), "k0", "v");
    // Nothing signals that nothing else happens: give it two seconds.
    std::thread::sleep(Duration::from_secs(2));
    let mut probe = s.connect();
    let stored: Vec<usize> = (1..200)
        .filter(|i| probe.ask(&format!("EXISTS k{i}")) == "AWESOME!")
        .collect();
    let validated = runs(&root);
    assert!(
        stored.is_empty() && validated == ["k0-v"],
        "for a client that had reset: {} more STOREs stored, validator runs {:?}...",
        stored.len(),
        &validated[..validated.len().min(5)]
    );
}

/// A STORE waiting for its name's turn behind another client's validation
/// is watched: its client resets, it is never validated, and the name goes
/// to the next waiter when the first is refused.
#[test]
fn a_waiter_that_reset_is_skipped_and_the_name_goes_to_the_next() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let s = Server::start_in(
        d,
        &gate_config(&root, "[admin]\nlisten = [\"127.0.0.1:0\"]\n"),
    );
    let mut a = s.connect();
    a.send(b"STORE n bad-a\r\n");
    wait_for_file(&root.join("started-n-bad-a"));
    // The GET's reply leaves before the STORE waits: once it is read, the
    // STORE waits for its turn.
    let mut b = s.connect();
    b.send(b"GET x\r\nSTORE n good-b\r\n");
    assert_eq!(b.reply(), "");
    let mut c = s.connect();
    c.send(b"GET y\r\nSTORE n good-c\r\n");
    assert_eq!(c.reply(), "");
    reset(b);
    assert!(
        connections_become(&s, 2, Duration::from_secs(10)),
        "a client that reset while its STORE waited for its turn still holds its connection"
    );
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(a.reply(), "RARGH!");
    assert_eq!(c.reply(), "W00T!");
    assert_eq!(s.connect().ask("GET n"), "good-c");
    assert_eq!(runs(&root), ["n-bad-a", "n-good-c"]);
}

/// A client that half-closes (FIN after its requests, as `nc -N` does) has
/// not left: every STORE queued behind a slow validation is answered.
#[test]
fn a_half_closed_client_gets_every_reply_behind_a_slow_validation() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &gate_config(&root, ""));
    let mut c = s.connect();
    c.send(b"STORE h0 v\r\nGET h0\r\nSTORE h1 bad\r\nEXISTS h1\r\nSTORE h2 w");
    c.half_close();
    wait_for_file(&root.join("started-h0-v"));
    std::fs::write(root.join("release"), "").unwrap();
    let all = String::from_utf8(c.read_to_end()).unwrap();
    assert_eq!(all, "W00T!\r\nv\r\nRARGH!\r\nRARGH!\r\nW00T!\r\n");
}

// ---------------------------------------------------------------------------
// Order and count of replies; races on one name
// ---------------------------------------------------------------------------

/// Pipelines mixing validated STOREs (allowed and refused), GETs, EXISTS,
/// blank and invalid lines, fifty rounds in one write: one reply per
/// non-blank line, in order, each seeing the requests before it.
#[test]
fn a_pipeline_mixing_validated_stores_reads_and_bad_lines_is_answered_in_order() {
    let d = tempfile::tempdir().unwrap();
    let allow = script(
        d.path(),
        "allow",
        "case \"$1\" in bad*) echo JNHP:0 ;; *) echo JNHP:1 ;; esac",
    );
    let s = Server::start_in(d, &process_validator(&allow, "max_concurrent = 4"));
    let round = |i: usize| -> (String, Vec<String>) {
        let pairs = [
            (format!("GET a{i}"), String::new()),
            (format!("STORE a{i} one {i}"), "W00T!".into()),
            (format!("STORE a{i} two"), "RARGH!".into()),
            (format!("EXISTS a{i}"), "AWESOME!".into()),
            ("frob".into(), "ERROR unknown command".into()),
            ("  \t".into(), "-".into()),
            (format!("STORE b{i} bad{i}"), "RARGH!".into()),
            (format!("EXISTS b{i}"), "RARGH!".into()),
            (format!("store b{i} good"), "W00T!".into()),
            (format!("GET b{i}"), "good".into()),
            (format!("STORE c{i} ERROR x"), "ERROR reserved value".into()),
            ("EXISTS".into(), "ERROR missing name".into()),
            (format!("GET a{i} b{i}"), "ERROR too many arguments".into()),
            (format!("STORE d{i}  "), "ERROR missing value".into()),
            (format!("GET a{i}"), format!("one {i}")),
        ];
        let mut text = String::new();
        let mut want = Vec::new();
        for (request, reply) in pairs {
            text.push_str(&request);
            text.push_str(if i.is_multiple_of(2) { "\r\n" } else { "\n" });
            if reply != "-" {
                want.push(reply);
            }
        }
        (text, want)
    };
    let mut c = s.connect();
    let (mut all, mut want) = (String::new(), Vec::new());
    for i in 0..50 {
        let (text, replies) = round(i);
        all.push_str(&text);
        want.extend(replies);
    }
    c.send(all.as_bytes());
    c.half_close();
    let got = String::from_utf8(c.read_to_end()).unwrap();
    let got: Vec<&str> = got.split_terminator("\r\n").collect();
    assert_eq!(got.len(), want.len(), "reply count");
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "reply {i}");
    }
}

/// Twelve clients STORE one name through a slow validator that refuses
/// half of them: exactly one `W00T!`, for an allowed value, GET returns
/// it, and every other client gets `RARGH!`.
#[test]
fn many_clients_storing_one_name_through_a_refusing_validator_get_one_w00t() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &gate_config(&root, ""));
    let mut clients: Vec<(String, Client)> = Vec::new();
    for i in 0..12usize {
        let value = if i.is_multiple_of(2) {
            format!("bad-{i}")
        } else {
            format!("good-{i}")
        };
        let mut c = s.connect();
        // The GET's reply says the STORE after it is in the server.
        c.send(format!("GET z{i}\r\nSTORE same {value}\r\n").as_bytes());
        assert_eq!(c.reply(), "");
        clients.push((value, c));
    }
    std::fs::write(root.join("release"), "").unwrap();
    let mut winners = Vec::new();
    for (value, c) in &mut clients {
        match c.reply().as_str() {
            "W00T!" => winners.push(value.clone()),
            "RARGH!" => {}
            other => panic!("STORE same {value}: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert!(winners[0].starts_with("good-"), "{winners:?}");
    assert_eq!(s.connect().ask("GET same"), winners[0]);
    // The refused ones handed the name on; after the winner no validator
    // ran.
    let ran = runs(&root);
    assert_eq!(
        ran.iter().filter(|r| r.contains("good-")).count(),
        1,
        "an allowed STORE was validated after the name was stored: {ran:?}"
    );
}

/// A helper that breaks (replies garbage) on one value while STOREs of the
/// same name queue behind it: the broken one fails (`on_failure =
/// "reject"`: `RARGH!`), the helper is replaced, the name goes on to the
/// next STORE, which is stored.
#[test]
fn a_helper_breaking_while_stores_queue_hands_the_name_on() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let helper = script(
        &root,
        "helper",
        &format!(
            "cd {dir}\nwhile read id name value; do\n\
               case \"$value\" in\n\
                 evil) while [ ! -e release ]; do sleep 0.02; done; echo 'garbage!' ;;\n\
                 *) echo \"$id JNHP:1\" ;;\n\
               esac\n\
             done",
            dir = root.display()
        ),
    );
    let s = Server::start_in(
        d,
        &format!(
            "[[validator]]\nkind = \"helper\"\ncommand = [\"{}\"]\nchildren = 1\nconcurrency = 4\ntimeout_ms = 60000\n",
            helper.display()
        ),
    );
    let mut evil = s.connect();
    evil.send(b"STORE name evil\r\n");
    let mut queued = Vec::new();
    for i in 0..4 {
        let mut c = s.connect();
        c.send(format!("GET q{i}\r\nSTORE name fine-{i}\r\n").as_bytes());
        assert_eq!(c.reply(), "");
        queued.push(c);
    }
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(evil.reply(), "RARGH!");
    let replies: Vec<String> = queued.iter_mut().map(Client::reply).collect();
    assert_eq!(replies, ["W00T!", "RARGH!", "RARGH!", "RARGH!"]);
    assert_eq!(s.connect().ask("GET name"), "fine-0");
}

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

/// SIGINT while a STORE is validated (never finishing) and another STORE
/// of its name waits for its turn, with a data file: at the end of the
/// grace period both are answered `ERROR shutting down`, the process exits
/// 0, and after a restart neither is stored while what was acknowledged
/// is.
#[test]
fn past_the_grace_period_waiting_stores_are_refused_and_not_stored() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let mut s = Server::start_in(
        d,
        &gate_config(
            &root,
            "[server]\nshutdown_grace_secs = 1\n[storage]\npath = \"data\"\nfsync = \"always\"\n",
        ),
    );
    std::fs::write(root.join("release-done"), "").unwrap();
    assert_eq!(s.connect().ask("STORE done yes"), "W00T!");
    let mut a = s.connect();
    a.send(b"STORE n a-val\r\n");
    wait_for_file(&root.join("started-n-a-val"));
    let mut b = s.connect();
    b.send(b"GET x\r\nSTORE n b-val\r\nGET n\r\n");
    assert_eq!(b.reply(), "");
    let started = Instant::now();
    s.signal(Signal::SIGINT);
    assert_eq!(a.reply(), "ERROR shutting down");
    assert_eq!(b.reply(), "ERROR shutting down");
    assert_eq!(b.reply(), "");
    assert_eq!(s.wait_exit().code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "exit took {:?}",
        started.elapsed()
    );
    let config = s.config.clone().unwrap();
    let s = restart_in(take_dir(&mut s), &config);
    let mut c = s.connect();
    assert_eq!(c.ask("GET done"), "yes");
    assert_eq!(c.ask("EXISTS n"), "RARGH!");
}

/// SIGTERM while STOREs are validated and released within the grace
/// period: every one is answered (not `ERROR`), a STORE waiting behind one
/// of them gets `RARGH!`, and what was acknowledged is there after a
/// restart.
#[test]
fn sigterm_during_validation_answers_what_finishes_within_the_grace() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let mut s = Server::start_in(
        d,
        &gate_config(
            &root,
            "[server]\nshutdown_grace_secs = 20\n[storage]\npath = \"data\"\n",
        ),
    );
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut c = s.connect();
        c.send(format!("STORE t{i} v{i}\r\nGET t{i}\r\n").as_bytes());
        wait_for_file(&root.join(format!("started-t{i}-v{i}")));
        clients.push(c);
    }
    let mut behind = s.connect();
    behind.send(b"GET w\r\nSTORE t0 other\r\n");
    assert_eq!(behind.reply(), "");
    s.signal(Signal::SIGTERM);
    s.log.wait_for("SIGTERM");
    std::fs::write(root.join("release"), "").unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.reply(), "W00T!");
        assert_eq!(c.reply(), format!("v{i}"));
    }
    assert_eq!(behind.reply(), "RARGH!");
    assert_eq!(s.wait_exit().code(), Some(0));
    let config = s.config.clone().unwrap();
    let s = restart_in(take_dir(&mut s), &config);
    let mut c = s.connect();
    for i in 0..6 {
        assert_eq!(c.ask(&format!("GET t{i}")), format!("v{i}"));
    }
}

/// SIGHUP swaps the validators while STOREs wait: each batch is validated
/// by the chain current when it was read. A STORE waiting for its name's
/// turn (read before the SIGHUP) is validated by the old, allowing chain
/// once the first is refused; a STORE read after it by the new, refusing
/// one.
#[test]
fn sighup_while_stores_wait_keeps_each_batch_on_its_chain() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let mut s = Server::start_in(d, &gate_config(&root, ""));
    let mut a = s.connect();
    a.send(b"STORE n bad-a\r\nSTORE m fine\r\n");
    wait_for_file(&root.join("started-n-bad-a"));
    let mut b = s.connect();
    b.send(b"GET x\r\nSTORE n good-b\r\n");
    assert_eq!(b.reply(), "");
    // The new chain refuses every value longer than a byte.
    let config = s.config.clone().unwrap();
    std::fs::write(
        &config,
        "[[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 1\n",
    )
    .unwrap();
    s.signal(Signal::SIGHUP);
    s.log.wait_for("SIGHUP: configuration reloaded");
    let mut late = s.connect();
    assert_eq!(late.ask("STORE late long-value"), "RARGH!");
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(a.reply(), "RARGH!");
    assert_eq!(a.reply(), "W00T!", "the batch's second STORE, old chain");
    assert_eq!(
        b.reply(),
        "W00T!",
        "a waiter read before the SIGHUP, old chain"
    );
    assert_eq!(late.ask("GET n"), "good-b");
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit().code(), Some(0));
}

// ---------------------------------------------------------------------------
// The data file: a write that hangs, a write that fails, a kill
// ---------------------------------------------------------------------------

/// An `LD_PRELOAD` shim whose `fdatasync` waits while the file named by
/// `JNHP_TEST_HOLD_SYNC` exists, creating the file named by
/// `JNHP_TEST_SYNC_HELD` once it waits (the test's readiness signal), and
/// fails with `EIO` while the file named by `JNHP_TEST_FAIL_SYNC` exists.
const SYNC_SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int exists(const char *var) {
    const char *path = getenv(var);
    struct stat st;
    return path != NULL && stat(path, &st) == 0;
}

int fdatasync(int fd) {
    if (exists("JNHP_TEST_HOLD_SYNC")) {
        const char *held = getenv("JNHP_TEST_SYNC_HELD");
        if (held != NULL) close(open(held, O_CREAT | O_WRONLY, 0644));
        while (exists("JNHP_TEST_HOLD_SYNC")) usleep(10000);
    }
    if (exists("JNHP_TEST_FAIL_SYNC")) { errno = EIO; return -1; }
    return ((int (*)(int))dlsym(RTLD_NEXT, "fdatasync"))(fd);
}
"#;

/// jnhpd on a data file (`fsync = "always"`) in `dir`, with [`SYNC_SHIM`]
/// preloaded; `extra` goes into the config.
fn with_sync_shim(dir: tempfile::TempDir, extra: &str) -> Server {
    let root = dir.path().to_path_buf();
    let lib = common::shim::build(&root, "holdsync", SYNC_SHIM);
    let config = root.join("jnhp.toml");
    std::fs::write(
        &config,
        format!("[storage]\npath = \"data\"\nfsync = \"always\"\n{extra}\n"),
    )
    .unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("LD_PRELOAD", &lib)
        .env("JNHP_TEST_HOLD_SYNC", root.join("hold"))
        .env("JNHP_TEST_SYNC_HELD", root.join("held"))
        .env("JNHP_TEST_FAIL_SYNC", root.join("fail"));
    Server::spawn(cmd, dir, Some(config))
}

/// A client resets while its STORE's record waits on the disk (a sync that
/// hangs): operations.md promises that a connection waiting for "a write"
/// whose socket reports an error closes and frees its slot, the write
/// finishing on its own, and that what comes after it in the pipeline is
/// not started.
#[test]
fn a_client_reset_during_a_hung_write_frees_its_slot_and_starts_nothing_more() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let s = with_sync_shim(d, "[server]\nmax_connections = 1\n");
    std::fs::write(root.join("hold"), "").unwrap();
    let mut c = s.connect();
    c.send(b"STORE w1 v\r\nGET w1\r\nSTORE w2 v\r\n");
    wait_for_file(&root.join("held"));
    reset(c);
    let back = slot_back_within(s.addr(), Duration::from_secs(10));
    std::fs::remove_file(root.join("hold")).unwrap();
    // The write under way finishes.
    wait_for_value(s.addr(), "w1", "v");
    std::thread::sleep(Duration::from_secs(1));
    let w2 = s.connect().ask("EXISTS w2");
    assert!(
        back && w2 == "RARGH!",
        "slot back within 10 s: {back}; the STORE after the reset: {w2}"
    );
}

/// STOREs of one name queued behind a write that fails (`fdatasync`
/// `EIO`): the failed one gets `ERROR storage: ...`, the name goes on to
/// the next, and nothing answered `ERROR` is there after a restart.
#[test]
fn stores_queued_behind_a_failing_write_are_each_answered_and_never_stored_on_error() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let mut s = with_sync_shim(d, "");
    assert_eq!(s.connect().ask("STORE before ok"), "W00T!");
    std::fs::write(root.join("hold"), "").unwrap();
    std::fs::write(root.join("fail"), "").unwrap();
    let mut first = s.connect();
    first.send(b"STORE n first\r\n");
    wait_for_file(&root.join("held"));
    let mut queued = Vec::new();
    for i in 0..4 {
        let mut c = s.connect();
        c.send(format!("GET x{i}\r\nSTORE n second-{i}\r\nGET n\r\n").as_bytes());
        assert_eq!(c.reply(), "");
        queued.push(c);
    }
    std::fs::remove_file(root.join("hold")).unwrap();
    let mut replies = vec![first.reply()];
    // Let the disk recover while the queue drains: any of them may fail.
    std::fs::remove_file(root.join("fail")).unwrap();
    let mut reads = Vec::new();
    for c in &mut queued {
        replies.push(c.reply());
        reads.push(c.reply());
    }
    assert!(replies[0].starts_with("ERROR storage"), "{replies:?}");
    let stored: Vec<usize> = (0..replies.len())
        .filter(|&i| replies[i] == "W00T!")
        .collect();
    assert!(stored.len() <= 1, "{replies:?}");
    for r in &replies {
        assert!(
            r == "W00T!" || r == "RARGH!" || r.starts_with("ERROR storage"),
            "{replies:?}"
        );
    }
    let value = stored.first().map(|&i| format!("second-{}", i - 1));
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit().code(), Some(0));
    let config = s.config.clone().unwrap();
    let s = restart_in(take_dir(&mut s), &config);
    let mut c = s.connect();
    assert_eq!(c.ask("GET before"), "ok");
    assert_eq!(c.ask("GET n"), value.unwrap_or_default(), "{replies:?}");
}

/// Many clients race validated STOREs of a few names on a data file; the
/// server is SIGKILLed mid-stream. After a restart every acknowledged
/// STORE is there with its value, and each name has at most one winner.
#[test]
fn sigkill_under_racing_validated_stores_keeps_every_acknowledged_one() {
    let d = tempfile::tempdir().unwrap();
    let allow = script(d.path(), "allow", "echo JNHP:1");
    let mut s = Server::start_in(
        d,
        &format!(
            "[storage]\npath = \"data\"\nfsync = \"always\"\n{}",
            process_validator(&allow, "max_concurrent = 8")
        ),
    );
    let addr = s.addr();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let Ok(stream) = TcpStream::connect(addr) else {
                    return;
                };
                let mut c = Client {
                    reader: std::io::BufReader::new(stream),
                };
                for i in 0..400 {
                    let (name, value) = (format!("r{}", i / 2), format!("t{t}-{i}"));
                    let line = format!("STORE {name} {value}\r\nSTORE solo{t}-{i} x\r\n");
                    if c.reader.get_mut().write_all(line.as_bytes()).is_err() {
                        return;
                    }
                    let mut replies = Vec::new();
                    for _ in 0..2 {
                        let mut line = String::new();
                        match std::io::BufRead::read_line(&mut c.reader, &mut line) {
                            Ok(n) if n > 0 => replies.push(line.trim_end().to_string()),
                            _ => return,
                        }
                    }
                    let mut acked = acked.lock().unwrap();
                    if replies[0] == "W00T!" {
                        acked.push((name, value));
                    }
                    if replies[1] == "W00T!" {
                        acked.push((format!("solo{t}-{i}"), "x".into()));
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "too slow");
        std::thread::sleep(Duration::from_millis(10));
    }
    s.signal(Signal::SIGKILL);
    s.wait_exit();
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let config = s.config.clone().unwrap();
    let s = restart_in(take_dir(&mut s), &config);
    let mut c = s.connect();
    let mut winners = std::collections::HashMap::new();
    for (name, value) in &acked {
        if let Some(other) = winners.insert(name.clone(), value.clone()) {
            panic!("{name}: two W00T! ({other}, {value})");
        }
        assert_eq!(&c.ask(&format!("GET {name}")), value, "{name}");
    }
}

/// SIGTERM while a record waits on a hung disk and another STORE of its
/// name waits for its turn: at the end of the grace period the waiter is
/// answered `ERROR shutting down`; the write under way is waited for once
/// the disk answers, and what each client was told holds after a restart.
#[test]
fn past_the_grace_period_a_store_behind_a_hung_write_is_refused_and_the_write_kept() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let mut s = with_sync_shim(d, "[server]\nshutdown_grace_secs = 1\n");
    assert_eq!(s.connect().ask("STORE before ok"), "W00T!");
    std::fs::write(root.join("hold"), "").unwrap();
    let mut a = s.connect();
    a.send(b"STORE n a-val\r\n");
    wait_for_file(&root.join("held"));
    let mut b = s.connect();
    b.send(b"GET x\r\nSTORE n b-val\r\n");
    assert_eq!(b.reply(), "");
    let mut c = s.connect();
    c.send(b"STORE m c-val\r\n");
    s.signal(Signal::SIGTERM);
    assert_eq!(b.reply(), "ERROR shutting down");
    std::fs::remove_file(root.join("hold")).unwrap();
    let a_reply = String::from_utf8(a.read_to_end_or_reset()).unwrap();
    let c_reply = String::from_utf8(c.read_to_end_or_reset()).unwrap();
    assert_eq!(s.wait_exit().code(), Some(0));
    let config = s.config.clone().unwrap();
    let s = restart_in(take_dir(&mut s), &config);
    let mut probe = s.connect();
    assert_eq!(probe.ask("GET before"), "ok");
    let n = probe.ask("GET n");
    assert_ne!(
        n, "b-val",
        "a STORE answered ERROR shutting down was stored"
    );
    for (reply, name, got, want) in [
        (&a_reply, "n", n.clone(), "a-val"),
        (&c_reply, "m", probe.ask("GET m"), "c-val"),
    ] {
        match reply.as_str() {
            "W00T!\r\n" => assert_eq!(got, want, "{name}: acknowledged, then lost"),
            "" => {}
            other if other.starts_with("ERROR ") => assert_eq!(got, "", "{name}: {other}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    eprintln!("a: {a_reply:?}, c: {c_reply:?}");
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

/// A client pipelines GETs of a 60 KB value (about 120 MB of replies) and
/// never reads: the server stops reading it once about 1 MiB waits, its
/// memory stays flat, other clients are served meanwhile, and once it
/// resets, its slot comes back.
#[test]
fn a_client_that_never_reads_its_replies_keeps_the_server_flat() {
    let s = Server::start("[server]\nmax_connections = 2\n");
    let big = "v".repeat(60_000);
    assert_eq!(s.connect().ask(&format!("STORE big {big}")), "W00T!");
    let before = s.rss_kib();
    let hog = s.connect();
    let mut writer = hog.stream().try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let request = "GET big\r\n".repeat(1000);
    let mut sent = 0usize;
    // Write until the server stops reading (the write times out).
    for _ in 0..2000 {
        match writer.write(request.as_bytes()) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent < 2000 * request.len(), "the server read everything");
    let after = s.rss_kib();
    assert!(
        after < before + 32 * 1024,
        "rss grew from {before} KiB to {after} KiB for one client that never reads"
    );
    assert_eq!(s.connect().ask("GET big").len(), 60_000);
    reset(hog);
    assert!(slot_back_within(s.addr(), Duration::from_secs(10)));
    assert!(slot_back_within(s.addr(), Duration::from_secs(10)));
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// A front-end on `pg`'s database `db`, bounding requests by
/// `request_timeout_ms`; `extra` goes into the config.
fn pg_front_end(pg: &pg::Postgres, db: &str, request_timeout_ms: u64, extra: &str) -> Server {
    Server::start(&format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n\
         lease_secs = 2\nrequest_timeout_ms = {request_timeout_ms}\nconnect_timeout_secs = 10\n{extra}\n",
        pg.url(db)
    ))
}

/// Sends `signal` to `pg`'s postmaster and every process under it:
/// SIGSTOP freezes PostgreSQL (it takes connections and never answers),
/// SIGCONT wakes it.
fn signal_postgres(pg: &pg::Postgres, signal: Signal) {
    let pidfile = std::fs::read_to_string(pg.dir.join("postmaster.pid")).unwrap();
    let postmaster: i32 = pidfile.lines().next().unwrap().trim().parse().unwrap();
    let mut pids = vec![postmaster];
    pids.extend(
        common::children_of(postmaster)
            .into_iter()
            .map(|(pid, _)| pid),
    );
    for pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// Wakes a frozen PostgreSQL even when the test fails (a stopped
/// postmaster would hang the server's own clean-up).
struct Thaw<'a>(&'a pg::Postgres);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        signal_postgres(self.0, Signal::SIGCONT);
    }
}

/// PostgreSQL frozen (SIGSTOP: it never answers): uncached GET and EXISTS,
/// and a STORE with another of its name queued behind it, are answered
/// `ERROR storage unavailable` within `request_timeout_ms` (never
/// `RARGH!`, never an empty GET), cached names still read; once
/// PostgreSQL answers again everything works, and the names whose STORE
/// failed can be stored.
#[test]
fn a_frozen_postgres_fails_uncached_requests_within_the_timeout_then_recovers() {
    require!(Postgres);
    let pg = pg::Postgres::start();
    let db = pg.create_db("frozen");
    let s = pg_front_end(&pg, &db, 2000, "");
    let mut c = s.connect();
    assert_eq!(c.ask("STORE warm 1"), "W00T!");
    let thaw = Thaw(&pg);
    signal_postgres(&pg, Signal::SIGSTOP);
    let started = Instant::now();
    c.send(b"GET warm\r\nGET cold\r\nEXISTS cold\r\nGET warm\r\n");
    let replies: Vec<String> = (0..4).map(|_| c.reply()).collect();
    assert_eq!(
        replies,
        [
            "1",
            "ERROR storage unavailable",
            "ERROR storage unavailable",
            "1"
        ]
    );
    let mut first = s.connect();
    first.send(b"STORE n first\r\n");
    let mut second = s.connect();
    second.send(b"STORE n second\r\n");
    let (a, b) = (first.reply(), second.reply());
    assert!(a.starts_with("ERROR storage unavailable"), "{a}");
    assert!(b.starts_with("ERROR storage unavailable"), "{b}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?} with request_timeout_ms = 2000",
        started.elapsed()
    );
    drop(thaw);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = s.connect().ask("EXISTS cold");
        if reply == "RARGH!" {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {reply}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut c = s.connect();
    let n = c.ask("GET n");
    assert!(n.is_empty() || n == "first" || n == "second", "{n}");
    if n.is_empty() {
        assert_eq!(c.ask("STORE n third"), "W00T!");
    }
}

/// A client resets while its uncached GET waits on a frozen PostgreSQL:
/// operations.md promises that a connection waiting for "a lookup" whose
/// socket reports an error closes and frees its slot, not one
/// `request_timeout_ms` later.
#[test]
fn a_client_reset_during_a_hung_lookup_frees_its_slot() {
    require!(Postgres);
    let pg = pg::Postgres::start();
    let db = pg.create_db("hunglookup");
    let s = pg_front_end(&pg, &db, 60_000, "[server]\nmax_connections = 1\n");
    assert_eq!(s.connect().ask("STORE warm 1"), "W00T!");
    let thaw = Thaw(&pg);
    signal_postgres(&pg, Signal::SIGSTOP);
    let mut c = s.connect();
    c.send(b"GET cold\r\n");
    // Nothing a client sees tells when the lookup has started (a reply
    // before it would make the connection watch its client): give it half
    // a second.
    std::thread::sleep(Duration::from_millis(500));
    reset(c);
    // Probed with a cached name (an uncached one would wait too).
    let back = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let Ok(mut stream) = TcpStream::connect(s.addr()) else {
                break false;
            };
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let _ = stream.write_all(b"EXISTS warm\r\n");
            let mut reply = [0u8; 10];
            let n = stream.read(&mut reply).unwrap_or(0);
            if reply[..n].starts_with(b"AWESOME!") {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    drop(thaw);
    assert!(back, "the slot was not freed within 10 s");
}

/// SIGTERM with a client's thousand validated STOREs pipelined behind one
/// whose validator never ends: past the grace period the validation is
/// abandoned (`ERROR shutting down`), and none of the STOREs behind it is
/// validated or stored: nothing starts waiting after the grace period.
#[test]
fn past_the_grace_period_no_validator_starts_for_a_pipeline_left_behind() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let mut s = Server::start_in(
        d,
        &gate_config(
            &root,
            "[server]\nshutdown_grace_secs = 1\n[storage]\npath = \"data\"\n",
        ),
    );
    let mut c = s.connect();
    let pipeline: String = (0..1000).map(|i| format!("STORE p{i} v\r\n")).collect();
    c.send(pipeline.as_bytes());
    wait_for_file(&root.join("started-p0-v"));
    s.signal(Signal::SIGTERM);
    let replies = String::from_utf8(c.read_to_end_or_reset()).unwrap();
    assert_eq!(s.wait_exit().code(), Some(0));
    let replies: Vec<&str> = replies.split_terminator("\r\n").collect();
    assert!(
        replies.iter().all(|r| *r == "ERROR shutting down"),
        "{:?}",
        &replies[..replies.len().min(5)]
    );
    let ran = runs(&root);
    let config = s.config.clone().unwrap();
    let s = restart_in(take_dir(&mut s), &config);
    let mut probe = s.connect();
    let stored = (0..1000)
        .filter(|i| probe.ask(&format!("EXISTS p{i}")) == "AWESOME!")
        .count();
    assert_eq!(stored, 0);
    assert!(
        ran.len() <= 2,
        "{} validator runs started for STOREs left behind past the grace period ({} replies)",
        ran.len(),
        replies.len()
    );
}

/// Fifty clients queue STOREs behind one name's validation, then all
/// reset at once: every slot comes back, and when the first is refused no
/// one of them is validated.
#[test]
fn fifty_waiters_that_reset_free_their_slots_and_none_is_validated() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let s = Server::start_in(
        d,
        &gate_config(
            &root,
            "[server]\nmax_connections = 52\n[admin]\nlisten = [\"127.0.0.1:0\"]\n",
        ),
    );
    let mut holder = s.connect();
    holder.send(b"STORE n bad-holder\r\n");
    wait_for_file(&root.join("started-n-bad-holder"));
    let waiters: Vec<Client> = (0..50)
        .map(|i| {
            let mut c = s.connect();
            c.send(format!("GET x\r\nSTORE n good-{i}\r\nSTORE other-{i} v\r\n").as_bytes());
            assert_eq!(c.reply(), "");
            c
        })
        .collect();
    for c in waiters {
        reset(c);
    }
    assert!(
        connections_become(&s, 1, Duration::from_secs(10)),
        "{} connections still open",
        open_connections(&s)
    );
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(holder.reply(), "RARGH!");
    assert_eq!(runs(&root), ["n-bad-holder"]);
    let mut probe = s.connect();
    assert_eq!(probe.ask("EXISTS n"), "RARGH!");
    assert_eq!(probe.ask("STORE n good-late"), "W00T!");
    assert_eq!(probe.ask("EXISTS other-0"), "RARGH!");
}

/// Validators that time out, crash (killed by a signal) or refuse, racing
/// for one name with allowed STOREs: every failure is `RARGH!`
/// (`on_failure = "reject"`) and hands the name on; exactly one allowed
/// STORE wins.
#[test]
fn timeouts_and_crashes_racing_for_one_name_leave_exactly_one_winner() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let program = script(
        &root,
        "moody",
        &format!(
            "cd {dir}\nwhile [ ! -e release ]; do sleep 0.02; done\n\
             case \"$1\" in\n\
               slow*) exec sleep 30 ;;\n\
               crash*) kill -9 $$ ;;\n\
               bad*) echo JNHP:0 ;;\n\
               *) echo JNHP:1 ;;\n\
             esac",
            dir = root.display()
        ),
    );
    let s = Server::start_in(
        d,
        &process_validator(&program, "timeout_ms = 1500\nmax_concurrent = 16"),
    );
    let values = [
        "slow-0", "crash-1", "bad-2", "slow-3", "good-4", "crash-5", "good-6", "bad-7",
    ];
    let mut clients: Vec<(&str, Client)> = values
        .iter()
        .map(|v| {
            let mut c = s.connect();
            c.send(format!("GET x\r\nSTORE race {v}\r\n").as_bytes());
            assert_eq!(c.reply(), "");
            (*v, c)
        })
        .collect();
    std::fs::write(root.join("release"), "").unwrap();
    let mut winners = Vec::new();
    for (value, c) in &mut clients {
        match c.reply().as_str() {
            "W00T!" => winners.push(value.to_string()),
            "RARGH!" => {}
            other => panic!("{value}: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert!(winners[0].starts_with("good-"), "{winners:?}");
    assert_eq!(s.connect().ask("GET race"), winners[0]);
}

/// Names and values at their limits, through a validator program (argv
/// and stdin), pipelined with one byte over each limit: the limits pass
/// byte for byte, one over gets its `ERROR`, and every reply is in order.
#[test]
fn names_and_values_at_the_limits_pass_validation_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let by_argv = script(
        &root,
        "by-argv",
        "[ ${#1} -eq \"$JNHP_VALUE_BYTES\" ] && echo JNHP:1 || echo JNHP:0",
    );
    let by_stdin = script(
        &root,
        "by-stdin",
        "n=$(head -c 100000 | wc -c)\n[ $n -eq $((JNHP_VALUE_BYTES + 1)) ] && echo JNHP:1 || echo JNHP:0",
    );
    let s = Server::start_in(
        d,
        &format!(
            "{}{}",
            process_validator(&by_argv, ""),
            process_validator(&by_stdin, "input = \"stdin\"")
        ),
    );
    let name = "n".repeat(250);
    let value = "v".repeat(65536);
    let mut c = s.connect();
    let pipeline = format!(
        "STORE {name} {value}\r\nSTORE {name}x v\r\nSTORE m {value}x\r\nGET {name}\r\nEXISTS {name}x\r\n\
         STORE {name} other\r\nSTORE high \u{00e9}\u{00e9} \r\nGET high\r\n"
    );
    c.send(pipeline.as_bytes());
    assert_eq!(c.reply(), "W00T!");
    assert_eq!(c.reply(), "ERROR name too long");
    assert_eq!(c.reply(), "ERROR value too long");
    assert_eq!(c.reply(), value);
    assert_eq!(c.reply(), "ERROR name too long");
    assert_eq!(c.reply(), "RARGH!");
    assert_eq!(c.reply(), "W00T!");
    assert_eq!(c.reply(), "\u{00e9}\u{00e9} ");
}

/// CPU time (user + system, in clock ticks) the process has used.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of stat(5), counted after the command's ')'.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clients whose STORE waits (for its turn, or on its own validation)
/// after a reply already went out, so the connection watches them, then
/// half-close: a FIN is not leaving. Every reply is delivered, and the
/// server stays idle while they wait.
#[test]
fn half_closed_clients_being_watched_while_they_wait_get_every_reply() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &gate_config(&root, ""));
    let mut holder = s.connect();
    holder.send(b"GET x\r\nSTORE n bad-holder\r\nGET n\r\n");
    assert_eq!(holder.reply(), "");
    wait_for_file(&root.join("started-n-bad-holder"));
    holder.half_close();
    let mut waiters: Vec<Client> = (0..20)
        .map(|i| {
            let mut c = s.connect();
            c.send(
                format!("GET x\r\nSTORE n good-{i}\r\nSTORE own-{i} v\r\nGET own-{i}\r\n")
                    .as_bytes(),
            );
            assert_eq!(c.reply(), "");
            c.half_close();
            c
        })
        .collect();
    let before = cpu_ticks(s.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(s.pid()) - before;
    // 100 ticks a second on Linux: a busy loop would use about 200.
    assert!(used < 100, "{used} ticks in 2 s while 21 clients wait");
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(
        String::from_utf8(holder.read_to_end()).unwrap(),
        "RARGH!\r\n\r\n"
    );
    let mut winners = 0;
    for (i, c) in waiters.iter_mut().enumerate() {
        let all = String::from_utf8(c.read_to_end()).unwrap();
        match all.strip_suffix("W00T!\r\nv\r\n") {
            Some("W00T!\r\n") => winners += 1,
            Some("RARGH!\r\n") => {}
            _ => panic!("client {i}: {all:?}"),
        }
    }
    assert_eq!(winners, 1);
}

/// SIGTERM while PostgreSQL is frozen, with an uncached GET, an EXISTS and
/// a STORE waiting on it (`request_timeout_ms` far away): operations.md
/// promises that past the grace period nothing waits for PostgreSQL but
/// the release of reservations (2 s), the requests waiting on it are
/// answered `ERROR storage unavailable` (a STORE waiting for its
/// reservation: `ERROR shutting down` or that), and the front-end exits
/// within the grace period and those 2 s.
#[test]
fn sigterm_with_requests_waiting_on_a_frozen_postgres_answers_them_and_exits_in_time() {
    require!(Postgres);
    let pg = pg::Postgres::start();
    let db = pg.create_db("frozenstop");
    let mut s = pg_front_end(&pg, &db, 60_000, "[server]\nshutdown_grace_secs = 1\n");
    assert_eq!(s.connect().ask("STORE warm 1"), "W00T!");
    let thaw = Thaw(&pg);
    signal_postgres(&pg, Signal::SIGSTOP);
    let mut get = s.connect();
    get.send(b"GET warm\r\nGET cold\r\n");
    assert_eq!(get.reply(), "1");
    let mut exists = s.connect();
    exists.send(b"EXISTS warm\r\nEXISTS cold\r\n");
    assert_eq!(exists.reply(), "AWESOME!");
    let mut store = s.connect();
    store.send(b"GET warm\r\nSTORE fresh v\r\n");
    assert_eq!(store.reply(), "1");
    let started = Instant::now();
    s.signal(Signal::SIGTERM);
    let replies = [
        String::from_utf8(get.read_to_end_or_reset()).unwrap(),
        String::from_utf8(exists.read_to_end_or_reset()).unwrap(),
        String::from_utf8(store.read_to_end_or_reset()).unwrap(),
    ];
    let status = s.wait_exit();
    let took = started.elapsed();
    drop(thaw);
    assert_eq!(status.code(), Some(0));
    assert_eq!(replies[0], "ERROR storage unavailable\r\n", "{replies:?}");
    assert_eq!(replies[1], "ERROR storage unavailable\r\n", "{replies:?}");
    assert!(
        replies[2] == "ERROR storage unavailable\r\n" || replies[2] == "ERROR shutting down\r\n",
        "{replies:?}"
    );
    assert!(
        took < Duration::from_secs(6),
        "exit took {took:?} with shutdown_grace_secs = 1"
    );
}

/// A second SIGTERM stops at once (configuration.md), even while a record
/// waits on a hung disk and a validation runs; what was acknowledged
/// before is there after a restart.
#[test]
fn a_second_sigterm_stops_at_once_during_a_hung_write() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let mut s = with_sync_shim(d, "[server]\nshutdown_grace_secs = 60\n");
    assert_eq!(s.connect().ask("STORE before ok"), "W00T!");
    std::fs::write(root.join("hold"), "").unwrap();
    let mut c = s.connect();
    c.send(b"STORE n v\r\n");
    wait_for_file(&root.join("held"));
    s.signal(Signal::SIGTERM);
    s.log.wait_for("SIGTERM");
    let started = Instant::now();
    s.signal(Signal::SIGTERM);
    let deadline = started + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The disk answers again (whatever happened), so the server can end.
    std::fs::remove_file(root.join("hold")).unwrap();
    let status = s.wait_exit();
    assert!(
        exited.is_some(),
        "still running 10 s after a second SIGTERM (exited {:?} after the disk answered: {status:?}); log:\n{}",
        started.elapsed(),
        s.log.all()
    );
    let reply = String::from_utf8(c.read_to_end_or_reset()).unwrap();
    let config = s.config.clone().unwrap();
    let s = restart_in(take_dir(&mut s), &config);
    let mut probe = s.connect();
    assert_eq!(probe.ask("GET before"), "ok");
    if reply == "W00T!\r\n" {
        assert_eq!(probe.ask("GET n"), "v");
    }
}

/// Replies past the high-water mark (1 MiB) around a STORE that waits on
/// its validator: the batch is cut, written, and goes on, every reply in
/// order.
#[test]
fn large_replies_around_a_waiting_store_keep_their_order() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &gate_config(&root, ""));
    std::fs::write(root.join("release-big"), "").unwrap();
    let big = "b".repeat(60_000);
    assert_eq!(s.connect().ask(&format!("STORE big {big}")), "W00T!");
    let mut c = s.connect();
    let mut pipeline = "GET big\r\n".repeat(40);
    pipeline.push_str("STORE mid v\r\nGET mid\r\n");
    pipeline.push_str(&"GET big\r\nEXISTS mid\r\n".repeat(40));
    c.send(pipeline.as_bytes());
    for _ in 0..40 {
        assert_eq!(c.reply().len(), 60_000);
    }
    wait_for_file(&root.join("started-mid-v"));
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(c.reply(), "W00T!");
    assert_eq!(c.reply(), "v");
    for _ in 0..40 {
        assert_eq!(c.reply().len(), 60_000);
        assert_eq!(c.reply(), "AWESOME!");
    }
}

/// Two front-ends STORE one name through a slow validator; on the second,
/// the first STORE waiting for the first front-end's lease belongs to a
/// client that resets. When the first front-end's STORE is refused, the
/// name goes to the next live waiter (never to the one that left), and
/// both front-ends read the winner.
#[test]
fn across_front_ends_a_waiter_that_reset_is_skipped_and_the_name_goes_on() {
    require!(Postgres);
    let pg = pg::Postgres::start();
    let db = pg.create_db("twofronts");
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (r1, r2) = (d1.path().to_path_buf(), d2.path().to_path_buf());
    let config = |root: &Path| {
        format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n\
             lease_secs = 2\nrequest_timeout_ms = 10000\nconnect_timeout_secs = 10\n\
             [admin]\nlisten = [\"127.0.0.1:0\"]\n{}",
            pg.url(&db),
            process_validator(&gate(root), "timeout_ms = 600000")
        )
    };
    let one = Server::start_in(d1, &config(&r1));
    let two = Server::start_in(d2, &config(&r2));
    let mut a = one.connect();
    a.send(b"STORE n bad-a\r\n");
    wait_for_file(&r1.join("started-n-bad-a"));
    let mut b = two.connect();
    b.send(b"GET x\r\nSTORE n good-b\r\n");
    assert_eq!(b.reply(), "");
    let mut c = two.connect();
    c.send(b"GET y\r\nSTORE n good-c\r\n");
    assert_eq!(c.reply(), "");
    reset(b);
    assert!(
        connections_become(&two, 1, Duration::from_secs(10)),
        "a client that reset while waiting for another front-end's lease still holds its connection"
    );
    std::fs::write(r1.join("release"), "").unwrap();
    std::fs::write(r2.join("release"), "").unwrap();
    assert_eq!(a.reply(), "RARGH!");
    assert_eq!(c.reply(), "W00T!");
    assert_eq!(one.connect().ask("GET n"), "good-c");
    assert_eq!(two.connect().ask("GET n"), "good-c");
    assert!(runs(&r2).iter().all(|r| r != "n-good-b"), "{:?}", runs(&r2));
}

/// Clients that queue a large STORE behind a name whose validation hangs,
/// then reset, one after another: each frees its slot and its share of the
/// in-flight budget, so what their abandoned requests hold must not grow
/// the server without bound (protocol.md: no request "leaks memory";
/// operations.md: the budget bounds what requests hold).
#[test]
fn clients_leaving_large_stores_behind_a_hung_validation_do_not_grow_the_server() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let s = Server::start_in(
        d,
        &gate_config(
            &root,
            "[server]\nmax_inflight_bytes = 4194304\nmax_connections = 16\n",
        ),
    );
    let mut holder = s.connect();
    holder.send(b"STORE n v\r\n");
    wait_for_file(&root.join("started-n-v"));
    let before = s.rss_kib();
    let request = format!("GET x\r\nSTORE n {}\r\n", "v".repeat(60_000));
    for _ in 0..1500 {
        let mut c = s.connect();
        c.send(request.as_bytes());
        assert_eq!(c.reply(), "");
        reset(c);
    }
    let after = s.rss_kib();
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(holder.reply(), "W00T!");
    assert!(
        after < before + 48 * 1024,
        "rss grew from {before} KiB to {after} KiB (budget 4 MiB) for clients that left"
    );
}

/// The data file on a full file system (a 128 KiB tmpfs in a mount
/// namespace of the daemon's own, filled by another file): validated
/// STOREs pipelined with GETs get `ERROR storage: ...` and are not seen,
/// never `RARGH!`; once there is room the same names are stored; and the
/// file then replays clean, holding exactly what was acknowledged.
#[test]
fn validated_stores_on_a_full_file_system_fail_cleanly_and_work_again() {
    require!(Root);
    let mount = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let allow = script(d.path(), "allow", "echo JNHP:1");
    let config = d.path().join("jnhp.toml");
    let validator = process_validator(&allow, "");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = \"{}/data\"\nfsync = \"always\"\n{validator}",
            mount.path().display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=128k tmpfs \"$1\" && shift && exec \"$@\"")
        .arg("sh")
        .arg(mount.path())
        .arg(common::bin())
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"]);
    let s = Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(config.clone()));
    let inside = PathBuf::from(format!("/proc/{}/root", s.pid()))
        .join(mount.path().strip_prefix("/").unwrap());
    {
        let mut filler = std::fs::File::create(inside.join("filler")).unwrap();
        while filler.write_all(&[b'f'; 4096]).is_ok() {}
        while filler.write_all(b"f").is_ok() {}
    }
    let value = |i: usize, round: &str| format!("{round}-{i}-{}", "x".repeat(1500));
    let mut acked = std::collections::HashMap::new();
    let mut failed = Vec::new();
    let mut c = s.connect();
    let pipeline: String = (0..10)
        .map(|i| format!("STORE f{i} {}\r\nGET f{i}\r\n", value(i, "first")))
        .collect();
    c.send(pipeline.as_bytes());
    for i in 0..10 {
        let (store, get) = (c.reply(), c.reply());
        match store.as_str() {
            "W00T!" => {
                assert_eq!(get, value(i, "first"));
                acked.insert(i, value(i, "first"));
            }
            error if error.starts_with("ERROR storage") => {
                assert_eq!(get, "", "f{i}: answered {error}, then seen");
                failed.push(i);
            }
            other => panic!("f{i}: {other}"),
        }
    }
    assert!(!failed.is_empty(), "the file system never filled up");
    std::fs::remove_file(inside.join("filler")).unwrap();
    for &i in &failed {
        assert_eq!(c.ask(&format!("STORE f{i} {}", value(i, "again"))), "W00T!");
        acked.insert(i, value(i, "again"));
    }
    std::fs::copy(inside.join("data"), d.path().join("copy")).unwrap();
    drop(s);
    let copy_config = d.path().join("copy.toml");
    std::fs::write(
        &copy_config,
        format!("[storage]\npath = \"{}/copy\"\n", d.path().display()),
    )
    .unwrap();
    let s = restart_in(tempfile::tempdir().unwrap(), &copy_config);
    let mut c = s.connect();
    for i in 0..10 {
        assert_eq!(c.ask(&format!("GET f{i}")), acked[&i], "f{i}");
    }
    assert!(!s.log.all().contains("damaged"), "{}", s.log.all());
}

/// SIGTERM on a front-end whose STORE waits for another front-end's lease
/// (a validation that hangs there): past the grace period the STORE is
/// answered `ERROR shutting down` and the front-end exits promptly; it
/// leaves no reservation behind, so once the other front-end's STORE is
/// refused, a third front-end stores the name at once, not a `lease_secs`
/// (here 60 s) later.
#[test]
fn sigterm_while_waiting_for_another_front_ends_lease_leaves_no_reservation() {
    require!(Postgres);
    let pg = pg::Postgres::start();
    let db = pg.create_db("leavelease");
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (r1, r2) = (d1.path().to_path_buf(), d2.path().to_path_buf());
    let config = |root: &Path| {
        format!(
            "[server]\nshutdown_grace_secs = 1\n\
             [storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n\
             lease_secs = 60\nrequest_timeout_ms = 10000\nconnect_timeout_secs = 10\n{}",
            pg.url(&db),
            process_validator(&gate(root), "timeout_ms = 600000")
        )
    };
    let one = Server::start_in(d1, &config(&r1));
    let mut two = Server::start_in(d2, &config(&r2));
    let mut a = one.connect();
    a.send(b"STORE n bad-a\r\n");
    wait_for_file(&r1.join("started-n-bad-a"));
    let mut b = two.connect();
    b.send(b"GET x\r\nSTORE n good-b\r\nGET n\r\n");
    assert_eq!(b.reply(), "");
    let started = Instant::now();
    two.signal(Signal::SIGTERM);
    assert_eq!(b.reply(), "ERROR shutting down");
    assert_eq!(two.wait_exit().code(), Some(0));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
    assert!(runs(&r2).is_empty(), "{:?}", runs(&r2));
    std::fs::write(r1.join("release"), "").unwrap();
    assert_eq!(a.reply(), "RARGH!");
    let d3 = tempfile::tempdir().unwrap();
    let r3 = d3.path().to_path_buf();
    std::fs::write(r3.join("release"), "").unwrap();
    let three = Server::start_in(d3, &config(&r3));
    let mut c = three.connect();
    let t = Instant::now();
    assert_eq!(c.ask("STORE n good-c"), "W00T!");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the STORE waited {:?} for a reservation the stopped front-end left",
        t.elapsed()
    );
    assert_eq!(one.connect().ask("GET n"), "good-c");
}

/// PostgreSQL stopped (immediate: connections cut) while a validated
/// STORE runs, and started again before `request_timeout_ms`: the STORE,
/// and the STOREs of its name queued behind it on the front-end, get
/// their answer (never lost, never `RARGH!` for the first unless another
/// won), and what GET then returns agrees with the replies.
#[test]
fn postgres_restarted_under_a_validated_store_and_its_queue_keeps_the_replies_true() {
    require!(Postgres);
    let pg = pg::Postgres::start();
    let db = pg.create_db("restarted");
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let s = Server::start_in(
        d,
        &format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n\
             lease_secs = 2\nrequest_timeout_ms = 20000\nconnect_timeout_secs = 10\n{}",
            pg.url(&db),
            process_validator(&gate(&root), "timeout_ms = 600000")
        ),
    );
    let mut first = s.connect();
    first.send(b"STORE n first\r\n");
    wait_for_file(&root.join("started-n-first"));
    let mut queued: Vec<Client> = (0..3)
        .map(|i| {
            let mut c = s.connect();
            c.send(format!("GET x\r\nSTORE n q{i}\r\n").as_bytes());
            assert_eq!(c.reply(), "");
            c
        })
        .collect();
    pg.stop_immediate();
    std::fs::write(root.join("release"), "").unwrap();
    pg.start_again();
    let mut replies = vec![("first".to_string(), first.reply())];
    for (i, c) in queued.iter_mut().enumerate() {
        replies.push((format!("q{i}"), c.reply()));
    }
    let winners: Vec<&String> = replies
        .iter()
        .filter(|(_, r)| r == "W00T!")
        .map(|(v, _)| v)
        .collect();
    assert!(winners.len() <= 1, "{replies:?}");
    for (value, reply) in &replies {
        assert!(
            reply == "W00T!" || reply == "RARGH!" || reply == "ERROR storage unavailable",
            "{value}: {reply}"
        );
    }
    let deadline = Instant::now() + PATIENCE;
    let stored = loop {
        let reply = s.connect().ask("GET n");
        if !reply.starts_with("ERROR") {
            break reply;
        }
        assert!(Instant::now() < deadline, "{reply}");
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Some(winner) = winners.first() {
        assert_eq!(&&stored, winner, "{replies:?}");
    } else {
        // Nobody was told W00T!: the name is absent, or stored by a STORE
        // answered ERROR (its outcome was not known).
        let errored: Vec<&String> = replies
            .iter()
            .filter(|(_, r)| r.starts_with("ERROR"))
            .map(|(v, _)| v)
            .collect();
        assert!(
            stored.is_empty() || errored.contains(&&stored),
            "stored {stored:?}; {replies:?}"
        );
        // Some RARGH! with nothing stored would be a lie.
        if stored.is_empty() {
            assert!(
                replies.iter().all(|(_, r)| r != "RARGH!"),
                "RARGH! but nothing stored: {replies:?}"
            );
        }
    }
    eprintln!("{replies:?} -> {stored:?}");
}

/// A client pipelines `GET big` (a 60 KB value) and STOREs that each wait
/// on the data file, and never reads: protocol.md bounds the unsent
/// replies a connection holds to about 1 MiB. The replies ready while the
/// batch waits must not pile up past that while the actor goes on with
/// the batch.
#[test]
fn replies_ready_while_a_batch_waits_stay_bounded_for_a_client_that_never_reads() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start_in(d, "[storage]\npath = \"data\"\nfsync = \"never\"\n");
    let big = "b".repeat(60_000);
    assert_eq!(s.connect().ask(&format!("STORE big {big}")), "W00T!");
    let before = s.rss_kib();
    let hog = s.connect();
    // One write of less than one read (32 KiB): one batch.
    let pipeline: String = (0..1300)
        .map(|i| format!("GET big\r\nSTORE k{i} v\r\n"))
        .collect();
    let mut writer = hog.stream().try_clone().unwrap();
    writer.write_all(pipeline.as_bytes()).unwrap();
    // The batch goes on until its replies reach the high-water mark, then
    // waits for a client that does not read (it stops being served, as
    // protocol.md says): wait until the STOREs stop progressing.
    wait_for_value(s.addr(), "k0", "v");
    let stored = |addr| {
        // The STOREs are answered in order: the first absent one.
        let mut probe = Client::connect(addr);
        (0..1300)
            .find(|i| probe.ask(&format!("EXISTS k{i}")) != "AWESOME!")
            .unwrap_or(1300)
    };
    let mut last = stored(s.addr());
    let deadline = Instant::now() + PATIENCE;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = stored(s.addr());
        if now == last {
            break;
        }
        assert!(Instant::now() < deadline, "STOREs still progressing: {now}");
        last = now;
    }
    let after = s.rss_kib();
    drop(hog);
    assert!(
        after < before + 32 * 1024,
        "rss grew from {before} KiB to {after} KiB for one client that never reads"
    );
}
