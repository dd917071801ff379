//! The `jnhp` command as a script sees it: exit codes, batch, bench,
//! against the real daemon and against fake servers.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/common/pki.rs"]
mod pki;
mod run;

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
        "--tls-client-cert",
        &cert,
        "--tls-client-key",
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
    // The spellings from before the rename still work.
    let (code, out, err) = jnhp(&[
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
        "get",
        "a",
    ]);
    assert_eq!((code, out.as_str()), (0, "over tls\n"), "{err}");
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

/// `jnhp` with `env` set (and `JNHP_ADDR` only if `env` sets it), stdin
/// from `stdin`, stderr to `stderr` (piped when `None`); fails the test
/// unless it exits within `common::PATIENCE`.
fn jnhp_in(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: std::process::Stdio,
    stderr: Option<std::process::Stdio>,
) -> (i32, String, String) {
    run::jnhp(
        args,
        env,
        stdin,
        std::process::Stdio::piped(),
        stderr.unwrap_or_else(std::process::Stdio::piped),
    )
}

fn null() -> std::process::Stdio {
    std::process::Stdio::null()
}

/// An address nothing listens on (bound, then closed).
fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn the_server_comes_from_jnhp_addr_and_the_flag_wins() {
    let s = Server::start("");
    let addr = s.addr().to_string();
    let dead = dead_addr();
    let env = [("JNHP_ADDR", addr.as_str())];
    assert_eq!(jnhp_in(&["store", "a", "1"], &env, null(), None).0, 0);
    assert_eq!(
        jnhp_in(&["get", "a"], &env, null(), None),
        (0, "1\n".into(), String::new())
    );
    // --addr wins over the environment, both ways.
    let env_dead = [("JNHP_ADDR", dead.as_str())];
    assert_eq!(
        jnhp_in(&["--addr", &addr, "exists", "a"], &env_dead, null(), None).0,
        0
    );
    let (code, _, err) = jnhp_in(&["--addr", &dead, "exists", "a"], &env, null(), None);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("cannot connect to {dead}")), "{err}");
}

#[test]
fn host_names_and_ipv6_addresses_are_resolved_and_bad_ones_explained() {
    let s = Server::start("[admin]\nlisten = [\"127.0.0.1:0\"]\n");
    let port = s.addr().port();
    let by_name = format!("localhost:{port}");
    let (code, _, err) = jnhp_in(&["--addr", &by_name, "store", "n", "v"], &[], null(), None);
    assert_eq!(code, 0, "{err}");
    let env = [("JNHP_ADDR", by_name.as_str())];
    assert_eq!(
        jnhp_in(&["get", "n"], &env, null(), None),
        (0, "v\n".into(), String::new())
    );
    // bench takes the same addresses.
    let (code, out, err) = jnhp_in(
        &[
            "--addr",
            &by_name,
            "bench",
            "--seconds",
            "0.3",
            "--connections",
            "1",
            "--keys",
            "10",
            "--json",
            "--quiet",
        ],
        &[],
        null(),
        None,
    );
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["errors"], 0);
    // So does stats, for the admin listener.
    let admin = common::admin_addr(&s);
    let admin_by_name = format!("localhost:{}", admin.port());
    let (code, out, err) = jnhp_in(
        &["stats", "--admin", &admin_by_name, "--json"],
        &[],
        null(),
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"names\""), "{out}");
    // A name nobody knows, and no port at all: exit 2, saying which.
    let (code, _, err) = jnhp_in(
        &["--addr", "no-such-host.invalid:8111", "get", "n"],
        &[],
        null(),
        None,
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot resolve the host name no-such-host.invalid"),
        "{err}"
    );
    let (code, _, err) = jnhp_in(&["--addr", "localhost", "get", "n"], &[], null(), None);
    assert_eq!(code, 2);
    assert!(err.contains("not host:port"), "{err}");
    let (code, _, err) = jnhp_in(
        &["stats", "--admin", "no-such-host.invalid:9111"],
        &[],
        null(),
        None,
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot resolve the host name no-such-host.invalid"),
        "{err}"
    );
}

#[test]
fn an_ipv6_address_in_brackets_is_a_server_address() {
    require!(Ipv6);
    let s = Server::start_with("", &["--listen", "[::1]:0"]);
    let addr = s.addr().to_string();
    assert!(addr.starts_with("[::1]:"), "{addr}");
    assert_eq!(
        jnhp_in(&["--addr", &addr, "store", "six", "yes"], &[], null(), None).0,
        0
    );
    assert_eq!(
        jnhp_in(&["--addr", &addr, "get", "six"], &[], null(), None),
        (0, "yes\n".into(), String::new())
    );
}

#[test]
fn store_dash_reads_the_value_from_stdin() {
    let s = Server::start("");
    let addr = s.addr().to_string();
    let store =
        |name: &str, input: &[u8]| jnhp_with_stdin(&["--addr", &addr, "store", name, "-"], input);
    let get = |name: &str| jnhp(&["--addr", &addr, "get", name]);
    // As `echo` writes it: one line end, removed.
    assert_eq!(store("echoed", b"hello,  world\n").0, 0);
    assert_eq!(get("echoed").1, "hello,  world\n");
    assert_eq!(store("crlf", b"windows\r\n").0, 0);
    assert_eq!(get("crlf").1, "windows\n");
    assert_eq!(store("bare", b"no line end").0, 0);
    assert_eq!(get("bare").1, "no line end\n");
    // Stored once, like any other STORE.
    assert_eq!(store("echoed", b"again\n").0, 1);
    // A line break inside (or two at the end) is refused before sending.
    for (name, input) in [
        ("inner", &b"one\ntwo\n"[..]),
        ("two-ends", b"one\n\n"),
        ("cr", b"one\rtwo"),
    ] {
        let (code, _, err) = store(name, input);
        assert_eq!(code, 2, "{name}");
        assert!(err.contains("line break"), "{name}: {err}");
        assert_eq!(jnhp(&["--addr", &addr, "exists", name]).0, 1, "{name}");
    }
    // An endless input stops at the bound with a clear message.
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let (code, _, err) = jnhp_in(
        &["--addr", &addr, "store", "endless", "-"],
        &[],
        zero.into(),
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("longer than 16777216 bytes"), "{err}");
    assert_eq!(jnhp(&["--addr", &addr, "exists", "endless"]).0, 1);
    // The help says so.
    let (_, help, _) = jnhp(&["store", "--help"]);
    assert!(help.contains("standard input"), "{help}");
}

/// stderr on a real terminal (a pseudo-terminal): a miss is said there; a
/// script's stderr (a pipe) stays empty and the exit status tells.
#[test]
fn a_miss_on_a_terminal_says_so_and_scripts_keep_silent() {
    use std::io::Read;
    let s = Server::start("");
    let addr = s.addr().to_string();
    assert_eq!(jnhp(&["--addr", &addr, "store", "taken", "v"]).0, 0);
    let on_terminal = |args: &[&str]| -> (i32, String) {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (code, _, _) = jnhp_in(args, &[], null(), Some(pty.slave.into()));
        // The child is gone and the parent's copy of the terminal side was
        // moved into it: reading the other side ends (EIO) after its text.
        let mut master = std::fs::File::from(pty.master);
        let mut text = Vec::new();
        let _ = master.read_to_end(&mut text);
        (code, String::from_utf8_lossy(&text).into_owned())
    };
    let (code, text) = on_terminal(&["--addr", &addr, "get", "nobody"]);
    assert_eq!((code, text.trim_end()), (1, "jnhp: nobody: absent"));
    let (code, text) = on_terminal(&["--addr", &addr, "exists", "nobody"]);
    assert_eq!((code, text.trim_end()), (1, "jnhp: nobody: absent"));
    let (code, text) = on_terminal(&["--addr", &addr, "store", "taken", "w"]);
    assert_eq!(code, 1);
    assert!(text.starts_with("jnhp: taken: not stored"), "{text}");
    let (code, text) = on_terminal(&["--addr", &addr, "get", "taken"]);
    assert_eq!((code, text.as_str()), (0, ""));
    // Not a terminal: the exit status alone.
    for args in [["get", "nobody"], ["exists", "nobody"], ["store", "taken"]] {
        let mut args = args.to_vec();
        if args[0] == "store" {
            args.push("w");
        }
        let (code, out, err) = jnhp(&[&["--addr", addr.as_str()][..], &args].concat());
        assert_eq!((code, out.as_str(), err.as_str()), (1, "", ""), "{args:?}");
    }
}

/// The files `--tls` reads are bounded and must be regular files: a FIFO
/// nobody writes, /dev/zero or a huge file is refused at once, exit 2.
#[test]
fn tls_files_that_are_not_regular_or_too_large_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let huge = dir.path().join("huge.pem");
    std::fs::write(&huge, vec![b'A'; 5 << 20]).unwrap();
    let ca = pki::Ca::new(dir.path(), "main");
    let client = ca.client(dir.path(), "client", "cli");
    let dead = dead_addr();
    let (fifo, huge, cert, key) = (
        fifo.display().to_string(),
        huge.display().to_string(),
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );
    for (args, says) in [
        (vec!["--ca", fifo.as_str()], "not a regular file"),
        (vec!["--ca", "/dev/zero"], "not a regular file"),
        (vec!["--ca", huge.as_str()], "larger than"),
        (
            vec!["--tls-client-cert", &cert, "--tls-client-key", &fifo],
            "not a regular file",
        ),
        (
            vec!["--tls-client-cert", &huge, "--tls-client-key", &key],
            "larger than",
        ),
    ] {
        let all = [
            &["--addr", dead.as_str(), "--tls"][..],
            &args,
            &["get", "a"],
        ]
        .concat();
        let (code, _, err) = jnhp_in(&all, &[], null(), None);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// An admin address that answers JSON which is not a jnhpd status
/// document (another service on the port): `jnhp stats` says so and
/// exits 2, rather than printing a table of blanks.
#[test]
fn jnhp_stats_refuses_a_document_that_is_not_a_status() {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        let body = "{\"status\":\"green\"}\n";
        write!(
            &stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    let (code, out, err) = jnhp(&["stats", "--admin", &addr]);
    server.join().unwrap();
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("not a jnhpd status document"), "{err}");
}
