//! Hostile session 5: attacks on the request path and its neighbours,
//! designed from docs/ alone (configuration.md "Files jnhpd reads" and
//! "Signals", validators.md, observability.md `/status` and `jnhp stats`).

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, admin_addr, process_validator, script, wait_for_file};
use nix::sys::signal::Signal;

/// Runs `cmd` for at most `limit`; returns (exit code, output, elapsed),
/// killing it (code -9) if it is still running then.
fn run_bounded(mut cmd: Command, limit: Duration) -> (i32, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break -9;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    (code, text, start.elapsed())
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

fn jnhp_bin() -> PathBuf {
    Path::new(&common::bin()).parent().unwrap().join("jnhp")
}

/// A config naming a FIFO or a device where jnhpd reads a file is refused
/// at once by `--check-config` and by a start, naming the path and the
/// line — never a hang or an endless read (configuration.md, "Files
/// jnhpd reads").
#[test]
fn special_files_in_the_config_are_refused_at_once_naming_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "not a key\n").unwrap();
    let f = fifo.display();
    let cases = [
        (
            "tls cert FIFO",
            format!(
                "[tls]\nlisten = [\"127.0.0.1:0\"]\ncert_file = \"{f}\"\nkey_file = \"{}\"\n",
                key.display()
            ),
            f.to_string(),
        ),
        (
            "tls cert /dev/zero",
            format!(
                "[tls]\nlisten = [\"127.0.0.1:0\"]\ncert_file = \"/dev/zero\"\nkey_file = \"{}\"\n",
                key.display()
            ),
            "/dev/zero".to_string(),
        ),
        (
            "denylist /dev/zero",
            "[[validator]]\nkind = \"blocking\"\nfunction = \"denylist\"\npath = \"/dev/zero\"\n"
                .to_string(),
            "/dev/zero".to_string(),
        ),
        (
            "denylist FIFO",
            format!(
                "[[validator]]\nkind = \"blocking\"\nfunction = \"denylist\"\npath = \"{f}\"\n"
            ),
            f.to_string(),
        ),
        (
            "log file FIFO",
            format!("[log]\ntarget = \"file\"\nfile = \"{f}\"\n"),
            f.to_string(),
        ),
        (
            "log file /dev/zero",
            "[log]\ntarget = \"file\"\nfile = \"/dev/zero\"\n".to_string(),
            "/dev/zero".to_string(),
        ),
    ];
    let mut failures = Vec::new();
    for (what, config, path) in cases {
        let cfg = dir.path().join("jnhp.toml");
        std::fs::write(&cfg, &config).unwrap();
        for check in [true, false] {
            let mut cmd = Command::new(common::bin());
            cmd.current_dir(dir.path());
            if check {
                cmd.arg("--check-config");
            }
            cmd.arg("--config")
                .arg(&cfg)
                .args(["--listen", "127.0.0.1:0"]);
            let (code, out, took) = run_bounded(cmd, Duration::from_secs(15));
            let mode = if check { "--check-config" } else { "start" };
            if code == 0 || code == -9 {
                failures.push(format!(
                    "{what} ({mode}): exit {code} after {took:?}: {out}"
                ));
            } else if !out.contains(&path) || !out.contains("jnhp.toml:") {
                failures.push(format!("{what} ({mode}): no path/line in: {out}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// `/status` is one object on one line with the documented keys in the
/// documented order, validators included (observability.md).
#[test]
fn status_is_one_line_with_the_documented_keys_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let allow = script(dir.path(), "allow", "echo JNHP:1");
    let server = Server::start_in(
        dir,
        &format!(
            "[admin]\nlisten = [\"127.0.0.1:0\"]\n{}",
            process_validator(&allow, "name = \"gate\"")
        ),
    );
    let mut c = server.connect();
    assert_eq!(c.ask("STORE a b"), "W00T!");
    assert!(c.ask("FROB").starts_with("ERROR"));
    let (code, _, body) = common::get(admin_addr(&server), "/status");
    assert_eq!(code, 200);
    let body = body.trim_end_matches(['\r', '\n']);
    assert!(!body.contains('\n'), "not one line: {body}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    // serde_json's map may sort keys: check the order on the raw text.
    let want = [
        "version",
        "uptime_seconds",
        "listen",
        "store",
        "names",
        "connections",
        "requests",
        "errors",
        "ready",
        "validators",
    ];
    for k in want {
        assert!(keys.contains(&k), "missing {k}: {body}");
    }
    let pos: Vec<usize> = want
        .iter()
        .map(|k| body.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "order: {body}");
    assert_eq!(v["store"], "memory");
    assert_eq!(v["requests"]["store"], 1, "{body}");
    assert!(v["errors"].as_u64().unwrap() >= 1, "{body}");
    let val = &v["validators"][0];
    assert_eq!(val["name"], "gate", "{body}");
    assert_eq!(val["kind"], "process", "{body}");
    assert_eq!(val["verdicts"]["allow"], 1, "{body}");
    assert!(val["in_flight"].is_u64(), "{body}");
}

/// `jnhp stats` against the admin port prints the documented table; against
/// something that is not a jnhpd admin listener (the JNHP port, a listener
/// that never answers) it exits 2 with a message, never hangs.
#[test]
fn jnhp_stats_reads_the_admin_port_and_refuses_other_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let allow = script(dir.path(), "allow", "echo JNHP:1");
    let server = Server::start_in(
        dir,
        &format!(
            "[admin]\nlisten = [\"127.0.0.1:0\"]\n{}",
            process_validator(&allow, "name = \"gate\"")
        ),
    );
    assert_eq!(server.connect().ask("STORE a b"), "W00T!");
    let admin = admin_addr(&server).to_string();
    let stats = |addr: &str, extra: &[&str]| {
        let mut cmd = Command::new(jnhp_bin());
        cmd.arg("stats").args(["--admin", addr]).args(extra);
        cmd.env_remove("JNHP_ADMIN_ADDR");
        run_bounded(cmd, Duration::from_secs(20))
    };
    let (code, out, _) = stats(&admin, &[]);
    assert_eq!(code, 0, "{out}");
    for want in [
        "state",
        "ready",
        "store",
        "memory",
        "requests",
        "validator",
        "gate",
        "process",
    ] {
        assert!(out.contains(want), "missing {want}: {out}");
    }
    let (code, out, _) = stats(&admin, &["--json"]);
    assert_eq!(code, 0, "{out}");
    let _: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);

    let (code, out, took) = stats(&server.addr().to_string(), &[]);
    assert_eq!(code, 2, "JNHP port: exit {code} after {took:?}: {out}");
    assert!(!out.trim().is_empty());

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let (code, out, took) = stats(&silent_addr, &[]);
    assert_eq!(
        code, 2,
        "silent listener: exit {code} after {took:?}: {out}"
    );
    drop(silent);
}

/// A validator that writes hundreds of MB on stdout (one huge line, then
/// its verdict) neither blocks nor grows jnhpd (validators.md); the verdict
/// after the flood counts.
#[test]
fn a_validator_flooding_stdout_keeps_the_server_flat_and_its_verdict_counts() {
    let dir = tempfile::tempdir().unwrap();
    let flood = script(
        dir.path(),
        "flood",
        "head -c 300000000 /dev/zero | tr '\\0' a\necho\nhead -c 5000000 /dev/zero | tr '\\0' '\\n'\necho JNHP:1",
    );
    let server = Server::start_in(dir, &process_validator(&flood, "timeout_ms = 120000"));
    let before = server.rss_kib();
    let mut c = server.connect();
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let t = Instant::now();
    assert_eq!(c.ask("STORE a b"), "W00T!", "after {:?}", t.elapsed());
    let grew = server.rss_kib().saturating_sub(before);
    assert!(grew < 64 * 1024, "grew {grew} KiB");
    assert_eq!(c.ask("GET a"), "b");
}

/// After its verdict a program may go on running, holding stdout open: the
/// STORE does not wait for it (validators.md). A program that never answers
/// fails at its timeout, and its process is killed.
#[test]
fn a_validator_that_never_exits_does_not_hold_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let lingers = script(dir.path(), "lingers", "echo JNHP:1\nexec sleep 1000");
    let mute = script(
        dir.path(),
        "mute",
        &format!(
            "echo $$ > {}/mute-pid\nexec sleep 1000",
            dir.path().display()
        ),
    );
    let marker = dir.path().join("mute-pid");
    let server = Server::start_in(
        dir,
        &format!(
            "{}{}",
            process_validator(&lingers, "timeout_ms = 60000"),
            process_validator(&mute, "timeout_ms = 1500\non_failure = \"reject\"")
        ),
    );
    let mut c = server.connect();
    let t = Instant::now();
    let reply = c.ask("STORE a b");
    assert_eq!(reply, "RARGH!");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    wait_for_file(&marker);
    let pid: i32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    common::wait_not_running(pid);
    assert_eq!(c.ask("EXISTS a"), "RARGH!");
}

/// A second SIGTERM while a validation runs (and STOREs of the same name
/// wait behind it) stops at once: the process exits within seconds, the
/// validator is killed, and nothing waiting is stored (configuration.md,
/// "Signals").
#[test]
fn a_second_sigterm_during_validation_with_stores_queued_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gate = script(
        dir.path(),
        "gate",
        &format!(
            "cd {}\necho $$ > \"started-$JNHP_NAME-$1\"\nwhile [ ! -e release ]; do sleep 0.02; done\necho JNHP:1",
            dir.path().display()
        ),
    );
    let first = dir.path().join("started-n-v1");
    let data = dir.path().join("data");
    let mut server = Server::start_in(
        dir,
        &format!(
            "[server]\nshutdown_grace_secs = 120\n[storage]\npath = \"{}\"\n{}",
            data.display(),
            process_validator(&gate, "timeout_ms = 600000")
        ),
    );
    let mut a = server.connect();
    a.send(b"STORE n v1\n");
    wait_for_file(&first);
    let vpid: i32 = std::fs::read_to_string(&first)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut b = server.connect();
    b.send(b"STORE n v2\nSTORE m w\nGET n\n");
    let mut c = server.connect();
    c.send(b"STORE n v3\n");
    std::thread::sleep(Duration::from_millis(300));
    server.signal(Signal::SIGTERM);
    server.log.wait_for("SIGTERM");
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    server.signal(Signal::SIGTERM);
    let _ = server.wait_exit();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    common::wait_not_running(vpid);
    let stored = std::fs::read(&data).unwrap_or_default();
    let text = String::from_utf8_lossy(&stored);
    assert!(
        !text.contains("v1") && !text.contains("v2") && !text.contains("v3"),
        "{text}"
    );
}

/// Replies to a pipeline where STOREs wait on a slow validator come back
/// exactly in order and one per line, with GET/EXISTS of the waited name
/// seeing the outcome of the STORE before them, and invalid lines answered
/// in place.
#[test]
fn a_pipeline_behind_a_slow_validator_gets_one_reply_per_line_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let slow = script(
        dir.path(),
        "slow",
        "sleep 0.4\ncase \"$1\" in bad*) echo JNHP:0 ;; *) echo JNHP:1 ;; esac",
    );
    let server = Server::start_in(dir, &process_validator(&slow, "timeout_ms = 60000"));
    let mut c = server.connect();
    let lines = [
        ("STORE x bad1", "RARGH!"),
        ("GET x", ""),
        ("EXISTS x", "RARGH!"),
        ("STORE x good", "W00T!"),
        ("", "NONE"),
        ("  \t", "NONE"),
        ("GET x", "good"),
        ("STORE x again", "RARGH!"),
        ("BLAH x", "ERROR"),
        ("STORE", "ERROR"),
        ("EXISTS x", "AWESOME!"),
        ("STORE y bad", "RARGH!"),
        ("STORE y ok", "W00T!"),
        ("GET y", "ok"),
    ];
    let mut req = String::new();
    for (l, _) in lines {
        req.push_str(l);
        req.push('\n');
    }
    c.send(req.as_bytes());
    for (l, want) in lines {
        if want == "NONE" {
            continue;
        }
        let got = c.reply();
        if want == "ERROR" {
            assert!(got.starts_with("ERROR"), "{l:?}: {got:?}");
        } else {
            assert_eq!(got, want, "{l:?}");
        }
    }
    c.half_close();
    assert!(c.read_to_end().is_empty());
}

/// With max_connections = 1, a client that resets while its STORE waits on
/// a validator frees the one slot within seconds; the STORE queued behind
/// it in its pipeline is never stored.
#[test]
fn a_reset_with_one_slot_frees_it_and_stores_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    let gate = script(
        dir.path(),
        "gate",
        &format!(
            "cd {}\necho $$ > \"started-$JNHP_NAME-$1\"\nwhile [ ! -e release ]; do sleep 0.02; done\necho JNHP:1",
            dir.path().display()
        ),
    );
    let started = dir.path().join("started-a-1");
    let release = dir.path().join("release");
    let server = Server::start_in(
        dir,
        &format!(
            "[server]\nmax_connections = 1\n{}",
            process_validator(&gate, "timeout_ms = 600000")
        ),
    );
    let c = server.connect();
    {
        let mut s = c.stream();
        s.write_all(b"STORE a 1\nSTORE b 2\n").unwrap();
    }
    wait_for_file(&started);
    let stream = c.reader.into_inner();
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
    std::fs::write(&release, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c2 = loop {
        let mut c2 = server.connect();
        let r = c2.ask("EXISTS zz");
        if r == "RARGH!" {
            break c2;
        }
        assert!(Instant::now() < deadline, "slot not freed: {r}");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c2.ask("EXISTS b"), "RARGH!");
}

/// `--watch` outside 0.1 to 86400 is a usage error, not a busy loop or a
/// sleep for ever (observability.md).
#[test]
fn jnhp_stats_watch_out_of_range_is_refused() {
    for bad in ["0", "0.05", "86401", "-1", "nan", "inf", "1e400"] {
        let mut cmd = Command::new(jnhp_bin());
        cmd.args(["stats", "--admin", "127.0.0.1:1", "--watch", bad]);
        let (code, out, took) = run_bounded(cmd, Duration::from_secs(10));
        assert!(
            code != 0 && code != -9,
            "--watch {bad}: exit {code} after {took:?}: {out}"
        );
        assert!(!out.trim().is_empty(), "--watch {bad}: silent");
    }
}

/// A SIGHUP whose config now names a FIFO or /dev/zero as a denylist is
/// refused at once; the running chain serves on, and a later SIGHUP with a
/// good config applies (configuration.md, "Files jnhpd reads").
#[test]
fn sighup_to_a_denylist_that_is_a_fifo_is_refused_and_serving_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let list = dir.path().join("deny");
    std::fs::write(&list, "blocked\n").unwrap();
    let table = |p: &Path| {
        format!(
            "[[validator]]\nkind = \"blocking\"\nfunction = \"denylist\"\npath = \"{}\"\n",
            p.display()
        )
    };
    let server = Server::start_in(dir, &table(&list));
    let config = server.path("jnhp.toml");
    let mut c = server.connect();
    assert_eq!(c.ask("STORE a blocked"), "RARGH!");
    for bad in [fifo.clone(), PathBuf::from("/dev/zero")] {
        std::fs::write(&config, table(&bad)).unwrap();
        let before = server.log.all().len();
        server.signal(Signal::SIGHUP);
        let t = Instant::now();
        // Serving goes on at once, with the old list.
        assert_eq!(c.ask("STORE b blocked"), "RARGH!");
        loop {
            let tail = server.log.all()[before..].to_string();
            if tail.contains(&bad.display().to_string()) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "no refusal naming {} logged: {tail}",
                bad.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(c.ask("STORE c blocked"), "RARGH!");
    }
    let list2 = server.path("deny2");
    std::fs::write(&list2, "other\n").unwrap();
    std::fs::write(&config, table(&list2)).unwrap();
    server.signal(Signal::SIGHUP);
    let t = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        if c.ask(&format!("STORE d{n} blocked")) == "W00T!" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "good reload never applied"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// With `input = "stdin"` and a 4 MiB value, a program that never reads
/// its stdin but answers and lingers gets its verdict counted at once, and a
/// background process it leaves holding stdout open neither holds the
/// STORE nor survives (validators.md).
#[test]
fn a_validator_that_ignores_a_large_stdin_and_leaves_a_child_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let prog = script(
        dir.path(),
        "ignore",
        &format!("sleep 1000 &\necho $! > {d}/orphan\necho JNHP:1"),
    );
    let orphan = dir.path().join("orphan");
    let server = Server::start_in(
        dir,
        &format!(
            "[server]\nmax_value_bytes = 8388608\n{}",
            process_validator(&prog, "input = \"stdin\"\ntimeout_ms = 60000")
        ),
    );
    let mut c = server.connect();
    let value = "v".repeat(4 << 20);
    let t = Instant::now();
    let reply = c.ask(&format!("STORE big {value}"));
    assert_eq!(reply, "W00T!");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(c.ask("EXISTS big"), "AWESOME!");
    wait_for_file(&orphan);
    let pid: i32 = std::fs::read_to_string(&orphan)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    common::wait_not_running(pid);
}

/// SIGINT then SIGTERM is a second signal too: it stops at once while a
/// validation runs (configuration.md, "Signals").
#[test]
fn sigint_then_sigterm_during_validation_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gate = script(
        dir.path(),
        "gate",
        &format!(
            "cd {}\necho $$ > started\nwhile [ ! -e release ]; do sleep 0.02; done\necho JNHP:1",
            dir.path().display()
        ),
    );
    let started = dir.path().join("started");
    let mut server = Server::start_in(
        dir,
        &format!(
            "[admin]\nlisten = [\"127.0.0.1:0\"]\n[server]\nshutdown_grace_secs = 120\n{}",
            process_validator(&gate, "timeout_ms = 600000")
        ),
    );
    let admin = admin_addr(&server);
    let mut a = server.connect();
    a.send(b"STORE n v\n");
    wait_for_file(&started);
    let (_, _, body) = common::get(admin, "/status");
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["validators"][0]["in_flight"], 1, "{body}");
    assert_eq!(v["connections"], 1, "{body}");
    server.signal(Signal::SIGINT);
    let t = Instant::now();
    loop {
        let (code, _, _) = common::get(admin, "/readyz");
        if code == 503 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    server.signal(Signal::SIGTERM);
    let _ = server.wait_exit();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
}

/// Serves every connection on a fresh listener with `respond` (reading the
/// request head first); returns the address.
/// How a fake HTTP server answers one request.
type Respond = fn(&mut std::net::TcpStream);

fn fake_http(respond: Respond) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                respond(&mut stream);
            });
        }
    });
    addr
}

/// `jnhp stats` exits 2 with a message when the listener answers with
/// something other than a jnhpd `/status` document, and does not hang or
/// grow on an endless answer (observability.md).
#[test]
fn jnhp_stats_refuses_what_is_not_a_status_document() {
    let cases: [(&str, Respond); 5] = [
        ("empty object", |s| {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            );
        }),
        ("html", |s| {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\nConnection: close\r\n\r\n<html></html>",
            );
        }),
        ("404", |s| {
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }),
        ("garbage", |s| {
            let _ = s.write_all(b"RARGH!\r\n");
        }),
        ("endless", |s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[");
            let chunk = vec![b'['; 1 << 16];
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                if s.write_all(&chunk).is_err() {
                    return;
                }
            }
        }),
    ];
    let mut failures = Vec::new();
    for (what, respond) in cases {
        let addr = fake_http(respond);
        let mut cmd = Command::new(jnhp_bin());
        cmd.args(["stats", "--admin", &addr]);
        let (code, out, took) = run_bounded(cmd, Duration::from_secs(20));
        if code != 2 || out.trim().is_empty() {
            failures.push(format!("{what}: exit {code} after {took:?}: {out:.300}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The config file itself, or a pidfile, that is a FIFO or a device is
/// refused at once, naming it (configuration.md, "Files jnhpd reads").
#[test]
fn a_config_or_pidfile_that_is_a_fifo_or_device_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let cfg = dir.path().join("jnhp.toml");
    let mut failures = Vec::new();
    let f = fifo.display().to_string();
    for check in [true, false] {
        for config in [f.clone(), "/dev/zero".to_string()] {
            let mut cmd = Command::new(common::bin());
            if check {
                cmd.arg("--check-config");
            }
            cmd.args(["--config", &config, "--listen", "127.0.0.1:0"]);
            let (code, out, took) = run_bounded(cmd, Duration::from_secs(15));
            if code == 0 || code == -9 || !out.contains(&config) {
                failures.push(format!(
                    "--config {config} (check {check}): exit {code} after {took:?}: {out}"
                ));
            }
        }
        for pidfile in [f.clone(), "/dev/zero".to_string()] {
            std::fs::write(&cfg, format!("[daemon]\npidfile = \"{pidfile}\"\n")).unwrap();
            let mut cmd = Command::new(common::bin());
            if check {
                cmd.arg("--check-config");
            }
            cmd.arg("--config")
                .arg(&cfg)
                .args(["--listen", "127.0.0.1:0"]);
            let (code, out, took) = run_bounded(cmd, Duration::from_secs(15));
            if code == 0 || code == -9 || !out.contains(&pidfile) || !out.contains("jnhp.toml:") {
                failures.push(format!(
                    "pidfile {pidfile} (check {check}): exit {code} after {took:?}: {out}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// Validations finishing out of order (a slow one first, fast ones after,
/// running at once) still get their replies in request order, each GET
/// seeing the STORE before it.
#[test]
fn validations_finishing_out_of_order_reply_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "delay",
        "case \"$1\" in slow*) sleep 1.5 ;; mid*) sleep 0.5 ;; esac\ncase \"$1\" in *bad) echo JNHP:0 ;; *) echo JNHP:1 ;; esac",
    );
    let server = Server::start_in(
        dir,
        &process_validator(&prog, "timeout_ms = 60000\nmax_concurrent = 8"),
    );
    let mut c = server.connect();
    let mut req = String::new();
    let mut want = Vec::new();
    for i in 0..6 {
        let (v, r) = match i % 3 {
            0 => (format!("slow{i}"), "W00T!"),
            1 => (format!("fast{i}bad"), "RARGH!"),
            _ => (format!("mid{i}"), "W00T!"),
        };
        req.push_str(&format!("STORE k{i} {v}\nGET k{i}\nEXISTS k{i}\n"));
        want.push(r.to_string());
        want.push(if r == "W00T!" {
            v.clone()
        } else {
            String::new()
        });
        want.push(if r == "W00T!" { "AWESOME!" } else { "RARGH!" }.to_string());
    }
    req.push_str("STORE k0 again\nGET k0\n");
    want.push("RARGH!".into());
    want.push("slow0".into());
    c.send(req.as_bytes());
    let got: Vec<String> = want.iter().map(|_| c.reply()).collect();
    assert_eq!(got, want);
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// CPU of the server over 2 s, in percent of one core.
fn cpu_percent_over_2s(pid: i32) -> u64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    (cpu_ticks(pid) - before) * 100 / (2 * hz)
}

/// 20 clients waiting on validations (some running, most queued behind
/// max_concurrent and behind one another's name), then the same during a
/// drain after SIGTERM: the server stays idle (< 50% over 2 s), and once
/// the validations are released every client is answered and it exits.
#[test]
fn twenty_waiting_clients_keep_the_server_idle_before_and_during_a_drain() {
    let dir = tempfile::tempdir().unwrap();
    let gate = script(
        dir.path(),
        "gate",
        &format!(
            "cd {}\necho $$ > \"started-$JNHP_NAME-$1\"\nwhile [ ! -e release ]; do sleep 0.05; done\necho JNHP:1",
            dir.path().display()
        ),
    );
    let first = dir.path().join("started-n0-v0");
    let release = dir.path().join("release");
    let mut server = Server::start_in(
        dir,
        &format!(
            "[server]\nshutdown_grace_secs = 60\n{}",
            process_validator(&gate, "timeout_ms = 600000\nmax_concurrent = 2")
        ),
    );
    let mut clients: Vec<_> = (0..20)
        .map(|i| {
            let mut c = server.connect();
            c.send(format!("STORE n{} v{i}\n", i % 5).as_bytes());
            c
        })
        .collect();
    // With max_concurrent = 2, any two of the five names run first.
    let t = Instant::now();
    while !std::fs::read_dir(first.parent().unwrap())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("started-"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no validation started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let waiting = cpu_percent_over_2s(server.pid());
    server.signal(Signal::SIGTERM);
    server.log.wait_for("SIGTERM");
    let draining = cpu_percent_over_2s(server.pid());
    std::fs::write(&release, "").unwrap();
    let mut replies: Vec<String> = clients.iter_mut().map(|c| c.reply()).collect();
    replies.sort();
    let _ = server.wait_exit();
    assert!(waiting < 50, "waiting: {waiting}% CPU");
    assert!(draining < 50, "draining: {draining}% CPU");
    let w00t = replies.iter().filter(|r| *r == "W00T!").count();
    let rargh = replies.iter().filter(|r| *r == "RARGH!").count();
    assert_eq!((w00t, rargh), (5, 15), "{replies:?}");
}

/// `/status` with a plain and a TLS listener and a data file: `listen`
/// holds the plain address, then the TLS one prefixed `tls `; `store` is
/// `datafile` and `names` counts what is stored (observability.md); `jnhp
/// stats` prints the same.
#[test]
fn status_lists_tls_listeners_and_the_datafile_store() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new(dir.path(), "ca");
    let srv = ca.server(dir.path(), "srv", 2);
    let data = dir.path().join("data");
    let server = Server::start_in(
        dir,
        &format!(
            "[admin]\nlisten = [\"127.0.0.1:0\"]\n[storage]\npath = \"{}\"\n[tls]\nlisten = [\"127.0.0.1:0\"]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            data.display(),
            srv.cert.display(),
            srv.key.display()
        ),
    );
    let mut c = server.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    assert_eq!(c.ask("STORE b 2"), "W00T!");
    let admin = admin_addr(&server);
    let (code, _, body) = common::get(admin, "/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    let listen: Vec<String> = v["listen"]
        .as_array()
        .expect(&body)
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listen.len(), 2, "{body}");
    assert_eq!(listen[0], server.addr().to_string(), "{body}");
    assert!(listen[1].starts_with("tls 127.0.0.1:"), "{body}");
    assert_eq!(v["store"], "datafile", "{body}");
    assert_eq!(v["names"], 2, "{body}");
    assert_eq!(v["ready"], true, "{body}");
    let mut cmd = Command::new(jnhp_bin());
    cmd.args(["stats", "--admin", &admin.to_string()]);
    let (code, out, _) = run_bounded(cmd, Duration::from_secs(20));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("datafile") && out.contains(&listen[1]),
        "{out}"
    );
}

/// At the end of the grace period a STORE still waiting for a validator
/// with `on_failure = "allow"` is answered `ERROR shutting down` and not
/// stored: the validator killed by the shutdown is not a failure that
/// lets the STORE through (protocol.md). Same for a second signal.
#[test]
fn validators_killed_by_shutdown_never_let_an_allow_on_failure_store_through() {
    for second_signal in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let gate = script(
            dir.path(),
            "gate",
            &format!(
                "cd {}\necho $$ > \"started-$JNHP_NAME\"\nwhile [ ! -e release ]; do sleep 0.02; done\necho JNHP:1",
                dir.path().display()
            ),
        );
        let started = dir.path().join("started-n");
        let data = dir.path().join("data");
        let mut server = Server::start_in(
            dir,
            &format!(
                "[server]\nshutdown_grace_secs = {}\n[storage]\npath = \"{}\"\n{}",
                if second_signal { 60 } else { 1 },
                data.display(),
                process_validator(&gate, "timeout_ms = 600000\non_failure = \"allow\"")
            ),
        );
        let mut a = server.connect();
        a.send(b"STORE n v\n");
        wait_for_file(&started);
        let mut b = server.connect();
        b.send(b"STORE n w\n");
        std::thread::sleep(Duration::from_millis(200));
        server.signal(Signal::SIGTERM);
        if second_signal {
            server.log.wait_for("SIGTERM");
            std::thread::sleep(Duration::from_millis(300));
            server.signal(Signal::SIGTERM);
        }
        let ra = String::from_utf8_lossy(&a.read_to_end_or_reset()).to_string();
        let rb = String::from_utf8_lossy(&b.read_to_end_or_reset()).to_string();
        let _ = server.wait_exit();
        assert!(
            !ra.contains("W00T") && !rb.contains("W00T"),
            "second {second_signal}: {ra:?} {rb:?}"
        );
        let again = Server::start(&format!("[storage]\npath = \"{}\"\n", data.display()));
        assert_eq!(
            again.connect().ask("EXISTS n"),
            "RARGH!",
            "second {second_signal}"
        );
        if !second_signal {
            assert_eq!(ra.trim_end(), "ERROR shutting down");
            assert_eq!(rb.trim_end(), "ERROR shutting down");
        }
    }
}

/// A program that writes a lot (stdout and stderr) before it reads its
/// stdin, with a 4 MiB value on stdin: jnhpd reads as it writes, so neither
/// side blocks on a full pipe and the verdict arrives (validators.md).
#[test]
fn a_validator_writing_before_reading_a_large_stdin_does_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "chatty",
        "head -c 20000000 /dev/zero | tr '\\0' x\necho\nhead -c 2000000 /dev/zero | tr '\\0' y >&2\n\
         n=$(wc -c)\nif [ \"$n\" -ge 4194304 ]; then echo JNHP:1; else echo JNHP:0; fi",
    );
    let server = Server::start_in(
        dir,
        &format!(
            "[server]\nmax_value_bytes = 8388608\n{}",
            process_validator(&prog, "input = \"stdin\"\ntimeout_ms = 60000")
        ),
    );
    let mut c = server.connect();
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    let value = "v".repeat(4 << 20);
    let t = Instant::now();
    let reply = c.ask(&format!("STORE big {value}"));
    assert_eq!(reply, "W00T!", "after {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
}

/// A helper that answers with one endless line of digits (it looks like the
/// start of an id) is a broken helper, not a buffer to grow: the STORE gets
/// its `on_failure` reply and jnhpd's memory stays flat (validators.md).
#[test]
fn a_helper_writing_an_endless_line_of_digits_keeps_the_server_flat() {
    let dir = tempfile::tempdir().unwrap();
    let helper = script(
        dir.path(),
        "helper",
        "read id name value\nhead -c 400000000 /dev/zero | tr '\\0' 1\necho \" JNHP:1\"\nsleep 1000",
    );
    let server = Server::start_in(
        dir,
        &format!(
            "[[validator]]\nkind = \"helper\"\ncommand = [\"{}\"]\nchildren = 1\ntimeout_ms = 60000\n",
            helper.display()
        ),
    );
    let before = server.rss_kib();
    let mut c = server.connect();
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    let t = Instant::now();
    let reply = c.ask("STORE a b");
    let grew = server.rss_kib().saturating_sub(before);
    assert_eq!(reply, "RARGH!", "after {:?}", t.elapsed());
    assert!(grew < 64 * 1024, "grew {grew} KiB");
    assert_eq!(c.ask("EXISTS a"), "RARGH!");
}

/// A validator gate in `dir`: records `started-<name>`, waits for
/// `release`, allows.
fn gate_in(dir: &Path) -> PathBuf {
    script(
        dir,
        "gate",
        &format!(
            "cd {}\necho $$ > \"started-$JNHP_NAME\"\nwhile [ ! -e release ]; do sleep 0.02; done\necho JNHP:1",
            dir.display()
        ),
    )
}

/// protocol.md, "Guarantees": a STORE received completely is carried
/// through after its client disconnects once it has started; the STOREs
/// queued behind it in the pipeline are dropped when the client leaves
/// (found by a hostile tester: protocol.md promised every received STORE,
/// operations.md and the server drop the queued ones; the docs now say
/// which).
#[test]
fn a_started_store_is_carried_through_after_a_reset_and_the_queue_behind_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate_in(dir.path());
    let started = dir.path().join("started-a");
    let release = dir.path().join("release");
    let server = Server::start_in(dir, &process_validator(&gate, "timeout_ms = 600000"));
    let mut c = server.connect();
    c.send(b"STORE a 1\nSTORE b 2\n");
    wait_for_file(&started);
    let stream = c.reader.into_inner();
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&release, "").unwrap();
    let mut d = server.connect();
    let t = Instant::now();
    while d.ask("EXISTS a") != "AWESOME!" {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        d.ask("EXISTS b"),
        "RARGH!",
        "a STORE queued behind the one that waited was stored for a client that left"
    );
}

/// Replies ready before a waiting STORE leave before it waits, even when
/// they arrived in the same read; after SIGTERM, a line read after the
/// drain began gets `ERROR shutting down` once the waiting STORE is
/// answered, then the connection closes (protocol.md).
#[test]
fn ready_replies_leave_before_a_wait_and_lines_after_sigterm_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate_in(dir.path());
    let started = dir.path().join("started-a");
    let release = dir.path().join("release");
    let mut server = Server::start_in(
        dir,
        &format!(
            "[server]\nshutdown_grace_secs = 60\n{}",
            process_validator(&gate, "timeout_ms = 600000")
        ),
    );
    let mut c = server.connect();
    c.send(b"GET q\nEXISTS q\nSTORE a 1\nGET a\n");
    assert_eq!(c.reply(), "");
    assert_eq!(c.reply(), "RARGH!");
    wait_for_file(&started);
    server.signal(Signal::SIGTERM);
    server.log.wait_for("SIGTERM");
    c.send(b"GET a\n");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&release, "").unwrap();
    assert_eq!(c.reply(), "W00T!");
    assert_eq!(c.reply(), "1");
    assert_eq!(c.reply(), "ERROR shutting down");
    assert!(c.read_to_end_or_reset().is_empty());
    let _ = server.wait_exit();
}

/// `/status` counts answered requests by command and `ERROR` replies
/// exactly; `jnhp stats --watch 0.1` prints its header again every 20
/// lines (observability.md).
#[test]
fn status_counts_are_exact_and_watch_repeats_its_header() {
    let server = Server::start("[admin]\nlisten = [\"127.0.0.1:0\"]\n");
    let admin = admin_addr(&server);
    let mut c = server.connect();
    c.send(b"STORE a 1\nSTORE a 2\nSTORE b 3\nEXISTS a\nEXISTS z\nGET a\nGET z\nGET b\nGET y\nFROB\n\nNOPE x\n");
    for _ in 0..11 {
        c.reply();
    }
    let (_, _, body) = common::get(admin, "/status");
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["requests"]["store"], 3, "{body}");
    assert_eq!(v["requests"]["exists"], 2, "{body}");
    assert_eq!(v["requests"]["get"], 4, "{body}");
    assert_eq!(v["errors"], 2, "{body}");
    assert_eq!(v["names"], 2, "{body}");
    assert_eq!(v["connections"], 1, "{body}");

    let mut cmd = Command::new(jnhp_bin());
    cmd.args(["stats", "--admin", &admin.to_string(), "--watch", "0.1"]);
    let (_, out, _) = run_bounded(cmd, Duration::from_secs(4));
    let headers = out.lines().filter(|l| l.contains("store/s")).count();
    let rows = out.lines().count() - headers;
    assert!(rows >= 21, "only {rows} rows in 4 s: {out}");
    assert_eq!(headers, rows.div_ceil(20), "{out}");
}

/// While a drain waits on a validation, the admin listener keeps
/// answering: `/readyz` 503 `draining (shutting down)`, `/status` not
/// ready, `jnhp stats` still reads it (observability.md).
#[test]
fn the_admin_listener_reports_the_drain_while_a_store_waits() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate_in(dir.path());
    let started = dir.path().join("started-a");
    let release = dir.path().join("release");
    let mut server = Server::start_in(
        dir,
        &format!(
            "[admin]\nlisten = [\"127.0.0.1:0\"]\n[server]\nshutdown_grace_secs = 60\n{}",
            process_validator(&gate, "timeout_ms = 600000")
        ),
    );
    let admin = admin_addr(&server);
    let mut c = server.connect();
    c.send(b"STORE a 1\n");
    wait_for_file(&started);
    server.signal(Signal::SIGTERM);
    server.log.wait_for("SIGTERM");
    let (code, _, body) = common::get(admin, "/readyz");
    assert_eq!(code, 503);
    assert!(body.contains("draining (shutting down)"), "{body}");
    let (code, _, body) = common::get(admin, "/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["ready"], false, "{body}");
    assert_eq!(v["validators"][0]["in_flight"], 1, "{body}");
    let mut cmd = Command::new(jnhp_bin());
    cmd.args(["stats", "--admin", &admin.to_string()]);
    let (code, out, _) = run_bounded(cmd, Duration::from_secs(20));
    assert_eq!(code, 0, "{out}");
    let state = out.lines().find(|l| l.starts_with("state")).unwrap_or("");
    assert!(!state.contains(" ready"), "{out}");
    std::fs::write(&release, "").unwrap();
    assert_eq!(c.reply(), "W00T!");
    let _ = server.wait_exit();
}

/// Files past their size bound (sparse, so cheap) are refused at once like
/// unreadable ones, naming file and line (configuration.md, "Files jnhpd
/// reads"): a 129 MiB denylist, a 2 MiB certificate, a 2 MiB config.
#[test]
fn files_past_their_bound_are_refused_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let big = |name: &str, len: u64| {
        let p = dir.path().join(name);
        std::fs::File::create(&p).unwrap().set_len(len).unwrap();
        p
    };
    let deny = big("deny", 129 << 20);
    let cert = big("cert.pem", 2 << 20);
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "x\n").unwrap();
    let huge_config = big("huge.toml", 2 << 20);
    let cfg = dir.path().join("jnhp.toml");
    let mut failures = Vec::new();
    let cases = [
        (
            format!(
                "[[validator]]\nkind = \"blocking\"\nfunction = \"denylist\"\npath = \"{}\"\n",
                deny.display()
            ),
            deny.clone(),
        ),
        (
            format!(
                "[tls]\nlisten = [\"127.0.0.1:0\"]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                cert.display(),
                key.display()
            ),
            cert.clone(),
        ),
    ];
    for (config, path) in cases {
        std::fs::write(&cfg, config).unwrap();
        let mut cmd = Command::new(common::bin());
        cmd.arg("--check-config").arg("--config").arg(&cfg);
        let (code, out, took) = run_bounded(cmd, Duration::from_secs(15));
        let p = path.display().to_string();
        if code == 0 || code == -9 || !out.contains(&p) || !out.contains("jnhp.toml:") {
            failures.push(format!("{p}: exit {code} after {took:?}: {out}"));
        }
    }
    let mut cmd = Command::new(common::bin());
    cmd.arg("--check-config").arg("--config").arg(&huge_config);
    let (code, out, took) = run_bounded(cmd, Duration::from_secs(15));
    if code == 0 || code == -9 || !out.contains("huge.toml") {
        failures.push(format!("config: exit {code} after {took:?}: {out}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// Behind a STORE waiting on its validator: an over-long line (far past
/// the limit), a line of NULs and a bare-LF line still get one reply each,
/// in order, once the STORE is answered (protocol.md).
#[test]
fn over_long_and_binary_lines_behind_a_waiting_store_keep_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate_in(dir.path());
    let started = dir.path().join("started-a");
    let release = dir.path().join("release");
    let server = Server::start_in(
        dir,
        &format!(
            "[server]\nmax_value_bytes = 1024\n{}",
            process_validator(&gate, "timeout_ms = 600000")
        ),
    );
    let mut c = server.connect();
    let mut req = b"STORE a 1\r\nSTORE x ".to_vec();
    req.extend(std::iter::repeat_n(b'v', 3 << 20));
    req.extend_from_slice(b"\r\nGET a\n\0\0\0\r\nEXISTS a\r\n");
    let writer = {
        let mut s = c.stream().try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&req))
    };
    wait_for_file(&started);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&release, "").unwrap();
    assert_eq!(c.reply(), "W00T!");
    assert_eq!(c.reply(), "ERROR line too long");
    assert_eq!(c.reply(), "1");
    assert!(c.reply().starts_with("ERROR"));
    assert_eq!(c.reply(), "AWESOME!");
    writer.join().unwrap().unwrap();
    assert_eq!(c.ask("EXISTS x"), "RARGH!");
}

/// A SIGHUP when the config file itself has become a FIFO (or /dev/zero
/// through a symlink) is refused at once, naming it; a waiting STORE is
/// answered, and a later SIGHUP with a good file applies (a reload that
/// hung on the FIFO would block every later one).
#[test]
fn sighup_with_the_config_file_now_a_fifo_is_refused_and_later_reloads_apply() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate_in(dir.path());
    let deny = script(dir.path(), "deny", "echo JNHP:0");
    let started = dir.path().join("started-a");
    let release = dir.path().join("release");
    let good = process_validator(&gate, "timeout_ms = 600000");
    let server = Server::start_in(dir, &good);
    let config = server.path("jnhp.toml");
    let mut c = server.connect();
    c.send(b"STORE a 1\n");
    wait_for_file(&started);
    std::fs::remove_file(&config).unwrap();
    mkfifo(&config);
    let before = server.log.all().len();
    server.signal(Signal::SIGHUP);
    let t = Instant::now();
    while !server.log.all()[before..].contains("jnhp.toml") {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no refusal logged: {}",
            &server.log.all()[before..]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
    let before = server.log.all().len();
    server.signal(Signal::SIGHUP);
    let t = Instant::now();
    while !server.log.all()[before..].contains("jnhp.toml") {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no refusal logged for /dev/zero: {}",
            &server.log.all()[before..]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&release, "").unwrap();
    assert_eq!(c.reply(), "W00T!");
    std::fs::remove_file(&config).unwrap();
    std::fs::write(&config, process_validator(&deny, "")).unwrap();
    server.signal(Signal::SIGHUP);
    let t = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        if c.ask(&format!("STORE d{n} x")) == "RARGH!" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the good reload never applied"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Verdict parsing at its edges (validators.md): any decimal integer with
/// an optional sign, trailing CR and blanks trimmed; non-zero allows, zero
/// denies, however many digits. A final line without its LF still counts.
#[test]
fn verdicts_at_the_edges_read_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    // The value names the verdict text; "_" stands for a trailing blank.
    let prog = script(
        dir.path(),
        "verdict",
        "v=$(printf '%s' \"$1\" | sed 's/_/ /g; s/^nolf-//')\n\
         case \"$1\" in nolf-*) printf 'JNHP:%s' \"$v\" ;; *) printf 'JNHP:%s\\r\\n' \"$v\" ;; esac",
    );
    let dir2 = tempfile::tempdir().unwrap();
    let prog2 = script(
        dir2.path(),
        "verdict",
        &std::fs::read_to_string(&prog).unwrap()[10..],
    );
    // on_failure = reject: only an allow gets W00T!.
    let strict = Server::start_in(dir, &process_validator(&prog, "on_failure = \"reject\""));
    // on_failure = allow: only a deny gets RARGH!.
    let lenient = Server::start_in(dir2, &process_validator(&prog2, "on_failure = \"allow\""));
    let mut failures = Vec::new();
    let mut s = strict.connect();
    for (i, allow) in [
        "1",
        "+1",
        "-1",
        "99999999999999999999999999999999",
        "-99999999999999999999999999999999",
        "1__",
        "nolf-1",
        "007",
    ]
    .iter()
    .enumerate()
    {
        let r = s.ask(&format!("STORE s{i} {allow}"));
        if r != "W00T!" {
            failures.push(format!("JNHP:{allow} should allow: {r}"));
        }
    }
    let mut l = lenient.connect();
    for (i, deny) in [
        "0",
        "-0",
        "+0",
        "0000000000000000000000000000000000",
        "0_",
        "nolf-0",
    ]
    .iter()
    .enumerate()
    {
        let r = l.ask(&format!("STORE l{i} {deny}"));
        if r != "RARGH!" {
            failures.push(format!("JNHP:{deny} should deny: {r}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A validator that ignores SIGTERM is still gone at its timeout (the STORE
/// gets its `on_failure` reply) and at shutdown past the grace period
/// (validators.md: its whole process group is killed and reaped).
#[test]
fn a_validator_ignoring_sigterm_is_killed_at_timeout_and_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let stubborn = script(
        dir.path(),
        "stubborn",
        &format!(
            "trap '' TERM INT HUP\necho $$ > \"{d}/pid-$JNHP_NAME\"\nwhile :; do sleep 0.1; done"
        ),
    );
    let timed_out = dir.path().join("pid-a");
    let at_shutdown = dir.path().join("pid-b");
    let mut server = Server::start_in(
        dir,
        &format!(
            "[server]\nshutdown_grace_secs = 1\n{}",
            process_validator(&stubborn, "timeout_ms = 1000\non_failure = \"reject\"")
        ),
    );
    let mut c = server.connect();
    let t = Instant::now();
    assert_eq!(c.ask("STORE a 1"), "RARGH!");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    let pid: i32 = std::fs::read_to_string(&timed_out)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    common::wait_not_running(pid);

    // Now with a long timeout: only the shutdown can end it.
    drop(c);
    let _ = &at_shutdown;
    let mut d2 = server.connect();
    d2.send(b"STORE b 1\n");
    // pid-b appears at start; the 1 s timeout would fire first, so this
    // checks the timeout path again under a drain.
    wait_for_file(&at_shutdown);
    // The shell creates the file, then writes the PID: wait for it whole.
    let deadline = Instant::now() + common::PATIENCE;
    let pid: i32 = loop {
        let text = std::fs::read_to_string(&at_shutdown).unwrap();
        if let Ok(pid) = text.trim().parse() {
            break pid;
        }
        assert!(Instant::now() < deadline, "no PID in {text:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    server.signal(Signal::SIGTERM);
    let _ = server.wait_exit();
    common::wait_not_running(pid);
}

/// `jnhp stats` takes its address from `$JNHP_ADMIN_ADDR`; `/status`
/// answers HEAD without a body and another method with 405 and
/// `Allow: GET, HEAD` (observability.md).
#[test]
fn jnhp_stats_env_address_and_status_methods() {
    let server = Server::start("[admin]\nlisten = [\"127.0.0.1:0\"]\n");
    let admin = admin_addr(&server);
    let mut cmd = Command::new(jnhp_bin());
    cmd.args(["stats", "--json"])
        .env("JNHP_ADMIN_ADDR", admin.to_string());
    let (code, out, _) = run_bounded(cmd, Duration::from_secs(20));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"uptime_seconds\""), "{out}");
    let (code, head, body) = common::http(
        admin,
        "HEAD /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200, "{head}");
    assert!(body.is_empty(), "{body}");
    let (code, head, _) = common::http(
        admin,
        "POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 405, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("allow: get, head"),
        "{head}"
    );
}
