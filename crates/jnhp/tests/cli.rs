//! The `jnhp` command as a script sees it: exit codes, batch, bench,
//! against the real daemon and against fake servers.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/common/pki.rs"]
mod pki;

use common::Server;

fn jnhp(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jnhp"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_jnhp_command_has_exit_codes_scripts_can_use() {
    let s = Server::start("");
    let addr = s.addr().to_string();
    assert_eq!(jnhp(&["--addr", &addr, "store", "a", "hello world"]).0, 0);
    assert_eq!(jnhp(&["--addr", &addr, "store", "a", "again"]).0, 1);
    assert_eq!(jnhp(&["--addr", &addr, "exists", "a"]).0, 0);
    assert_eq!(jnhp(&["--addr", &addr, "exists", "b"]).0, 1);
    assert_eq!(
        jnhp(&["--addr", &addr, "get", "a"]),
        (0, "hello world\n".into(), String::new())
    );
    assert_eq!(jnhp(&["--addr", &addr, "get", "b"]).0, 1);
    let (code, _, err) = jnhp(&["--addr", &addr, "store", "bad name", "v"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid request"), "{err}");
    let (code, _, err) = jnhp(&["--addr", "127.0.0.1:1", "get", "a"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot connect to 127.0.0.1:1"), "{err}");
}

#[test]
fn jnhp_batch_pipes_requests_and_prints_replies() {
    use std::io::Write;
    let s = Server::start("");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jnhp"))
        .args(["--addr", &s.addr().to_string(), "batch"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"STORE a 1\nGET a\nFROB\nEXISTS a\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "W00T!\r\n1\r\nERROR unknown command\r\nAWESOME!\r\n"
    );
    // Every reply is printed; an ERROR among them makes the exit status 2.
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 replies were errors"));
    let (code, out, _) = jnhp_with_stdin(
        &["--addr", &s.addr().to_string(), "batch"],
        b"GET a\n\n  \nEXISTS a",
    );
    assert_eq!((code, out.as_str()), (0, "1\r\nAWESOME!\r\n"));
}

fn jnhp_with_stdin(args: &[&str], input: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jnhp"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A server that dies mid-pipeline: `jnhp batch` prints what it got, exits
/// 2 and says how many requests got no reply.
#[test]
fn jnhp_batch_fails_when_replies_are_missing() {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut write = stream.try_clone().unwrap();
        let mut lines = std::io::BufReader::new(stream).lines();
        // Answers two requests, then reads the rest and closes.
        for _ in 0..2 {
            lines.next();
            write.write_all(b"W00T!\r\n").unwrap();
        }
        for _ in 0..3 {
            lines.next();
        }
    });
    let (code, out, err) = jnhp_with_stdin(
        &["--addr", &addr, "batch"],
        b"STORE a 1\nSTORE b 1\nSTORE c 1\nSTORE d 1\nSTORE e 1\n",
    );
    assert_eq!(out, "W00T!\r\nW00T!\r\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("3 of 5 requests without a reply"), "{err}");
}

/// An ERROR reply is an error for every command: `jnhp get` on a full
/// server exits 2 rather than printing `ERROR too many connections` as a
/// value, and `--timeout` values that are not a sane duration are usage
/// errors, not panics.
#[test]
fn error_replies_and_bad_timeouts_exit_2() {
    let s = Server::start("[server]\nmax_connections = 1\n");
    let addr = s.addr().to_string();
    let mut held = s.connect();
    assert_eq!(held.ask("STORE a b"), "W00T!");
    for args in [&["get", "a"][..], &["exists", "a"], &["store", "x", "y"]] {
        let (code, out, err) = jnhp(&[&["--addr", &addr][..], args].concat());
        assert_eq!(code, 2, "{args:?}: {out} {err}");
        assert!(err.contains("too many connections"), "{err}");
        assert!(out.is_empty(), "{out}");
    }
    drop(held);
    let (code, _, err) = jnhp(&["--addr", &addr, "store", "r", "ERROR x"]);
    assert_eq!(code, 2, "{err}");
    for bad in ["nan", "-1", "0", "1e300", "inf", "x"] {
        let (code, _, err) = jnhp(&["--addr", &addr, &format!("--timeout={bad}"), "get", "a"]);
        assert_eq!(code, 2, "--timeout {bad}: {err}");
        assert!(!err.contains("panicked"), "--timeout {bad}: {err}");
        assert!(err.contains("--timeout"), "--timeout {bad}: {err}");
    }
    assert_eq!(
        jnhp(&["--addr", &addr, "--timeout", "0.5", "get", "a"]).0,
        0
    );
}

#[test]
fn jnhp_bench_verifies_replies_and_reports_json() {
    let s = Server::start("");
    let (code, out, err) = jnhp(&[
        "--addr",
        &s.addr().to_string(),
        "bench",
        "--seconds",
        "0.5",
        "--connections",
        "4",
        "--pipeline",
        "8",
        "--keys",
        "100",
        "--json",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["errors"], 0);
    assert!(report["requests"].as_u64().unwrap() > 0);
    assert!(report["p999_ms"].as_f64().unwrap() >= report["p50_ms"].as_f64().unwrap());
}

/// `jnhp --tls` against a mutual-TLS server: the commands, batch and bench
/// all speak TLS; without a client certificate the server refuses.
#[test]
fn jnhp_speaks_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new(dir.path(), "main");
    let server = ca.server(dir.path(), "server", 1);
    let client = ca.client(dir.path(), "client", "cli");
    let s = Server::start_with(
        &format!(
            "[server]\nlisten = []\n[tls]\nlisten = [\"127.0.0.1:0\"]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n",
            server.cert.display(),
            server.key.display(),
            ca.pem.display()
        ),
        &[],
    );
    let addr = s.tls_addrs[0].to_string();
    let (ca_pem, cert, key) = (
        ca.pem.display().to_string(),
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );
    let tls = [
        "--addr",
        &addr,
        "--tls",
        "--ca",
        &ca_pem,
        "--cert",
        &cert,
        "--key",
        &key,
        "--server-name",
        "localhost",
    ];
    assert_eq!(jnhp(&[&tls[..], &["store", "a", "over tls"]].concat()).0, 0);
    assert_eq!(
        jnhp(&[&tls[..], &["get", "a"]].concat()),
        (0, "over tls\n".into(), String::new())
    );
    let (code, out, _) = jnhp_with_stdin(&[&tls[..], &["batch"]].concat(), b"GET a\nEXISTS b\n");
    assert_eq!((code, out.as_str()), (0, "over tls\r\nRARGH!\r\n"));
    let (code, out, err) = jnhp(
        &[
            &tls[..],
            &[
                "bench",
                "--seconds",
                "0.5",
                "--connections",
                "2",
                "--pipeline",
                "4",
                "--keys",
                "50",
                "--json",
                "--quiet",
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["errors"], 0);
    assert!(report["requests"].as_u64().unwrap() > 0);
    // No client certificate: refused, exit 2.
    let (code, _, err) = jnhp(&["--addr", &addr, "--tls", "--ca", &ca_pem, "get", "a"]);
    assert_eq!(code, 2, "{err}");
}

/// `jnhp stats` prints the admin listener's status (as a table, or the
/// /status document with --json); `--watch SECS` prints a line per
/// interval with the requests per second of live traffic.
#[test]
fn jnhp_stats_shows_the_status_and_live_traffic() {
    use std::io::BufRead;
    let s = Server::start("[admin]\nlisten = [\"127.0.0.1:0\"]\n");
    let admin = common::admin_addr(&s).to_string();
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    let (code, out, _) = jnhp(&["stats", "--admin", &admin]);
    assert_eq!(code, 0);
    assert!(out.contains("store        memory"), "{out}");
    assert!(out.contains("names        1"), "{out}");
    assert!(
        out.contains("requests     store 1  exists 0  get 0"),
        "{out}"
    );
    let (code, out, _) = jnhp(&["stats", "--admin", &admin, "--json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["names"], 1);
    // Live traffic while --watch runs: its lines show GETs per second.
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_jnhp"))
        .args(["stats", "--admin", &admin, "--watch", "0.5"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(c.ask("GET a"), "1");
            }
        })
    };
    let mut lines = std::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    assert!(
        header.contains("get/s") && header.contains("conns"),
        "{header}"
    );
    let busy = lines.by_ref().take(6).map(|l| l.unwrap()).find(|line| {
        let get_rate: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        get_rate > 0
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(busy.is_some(), "no line showed the GETs");
    // No admin listener there: exit 2 with a message.
    let (code, _, err) = jnhp(&["stats", "--admin", "127.0.0.1:1"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot connect"), "{err}");
}
