//! The client library against the real daemon, and against fake servers
//! that misbehave; and the `jnhp` command's exit codes.

mod common;

use std::time::Duration;

use common::Server;
use jnhpd::client::{Client, ClientError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn typed_results_against_the_real_daemon() {
    let s = Server::start("");
    let c = Client::connect(&s.addr().to_string(), PATIENCE)
        .await
        .unwrap();
    assert!(c.store(b"a", b"x  y ").await.unwrap());
    assert!(!c.store(b"a", b"other").await.unwrap());
    assert!(c.exists(b"a").await.unwrap());
    assert!(!c.exists(b"b").await.unwrap());
    assert_eq!(c.get(b"a").await.unwrap().as_deref(), Some(&b"x  y "[..]));
    assert_eq!(c.get(b"b").await.unwrap(), None);
    assert!(c.store(b"\xff\xfe", b"\x01binary\xff").await.unwrap());
    assert_eq!(
        c.get(b"\xff\xfe").await.unwrap().as_deref(),
        Some(&b"\x01binary\xff"[..])
    );
    // What the server would refuse is refused before sending.
    assert!(matches!(
        c.store(b"has space", b"v").await,
        Err(ClientError::Invalid(_))
    ));
    assert!(matches!(
        c.store(b"n", b"").await,
        Err(ClientError::Invalid(_))
    ));
    assert!(matches!(
        c.store(b"n", b" leading").await,
        Err(ClientError::Invalid(_))
    ));
    assert!(matches!(c.get(b"").await, Err(ClientError::Invalid(_))));
    // The connection is still good.
    assert!(c.exists(b"a").await.unwrap());
}

#[tokio::test]
async fn many_requests_in_flight_each_get_their_own_reply() {
    let s = Server::start("");
    let c = Client::connect(&s.addr().to_string(), PATIENCE)
        .await
        .unwrap();
    let stores: Vec<_> = (0..1000)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.store(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
                    .await
            })
        })
        .collect();
    for s in stores {
        assert!(s.await.unwrap().unwrap());
    }
    let gets: Vec<_> = (0..1000)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { (i, c.get(format!("k{i}").as_bytes()).await) })
        })
        .collect();
    for g in gets {
        let (i, value) = g.await.unwrap();
        assert_eq!(value.unwrap(), Some(format!("v{i}").into_bytes()));
    }
}

#[tokio::test]
async fn a_refused_connection_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = Client::connect(&addr, PATIENCE).await.err().unwrap();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
}

/// A fake server: `script` gets each request line and writes what it wants.
async fn fake(script: impl Fn(usize, String) -> Vec<u8> + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut n = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            let reply = script(n, line);
            n += 1;
            if reply == b"DROP" {
                return;
            }
            if write.write_all(&reply).await.is_err() {
                return;
            }
        }
    });
    addr
}

#[tokio::test]
async fn a_reply_when_nothing_is_pending_fails_the_connection_cleanly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(b"W00T!\r\n").await.unwrap();
        tokio::time::sleep(PATIENCE).await;
    });
    let c = Client::connect(&addr, PATIENCE).await.unwrap();
    // The unsolicited line arrives before any request: every call fails.
    let Err(err) = c.exists(b"a").await else {
        panic!("a reply was taken for a request that never got one");
    };
    // Either the line came with nothing pending, or it was checked against
    // the EXISTS and refused: never taken as its answer.
    assert!(matches!(&err, ClientError::Protocol(_)), "{err}");
    assert_eq!(c.get(b"b").await.err(), Some(err));
}

#[tokio::test]
async fn a_duplicate_reply_is_detected_not_misattributed() {
    // Answers the first request twice.
    let addr = fake(|n, _| {
        if n == 0 {
            b"W00T!\r\nW00T!\r\n".to_vec()
        } else {
            b"AWESOME!\r\n".to_vec()
        }
    })
    .await;
    let c = Client::connect(&addr, PATIENCE).await.unwrap();
    assert!(c.store(b"a", b"v").await.unwrap());
    // The duplicate either arrives with nothing pending, or cannot answer
    // the EXISTS at the head: both fail the connection, neither is taken
    // for the EXISTS's answer.
    let err = c
        .exists(b"a")
        .await
        .expect_err("the duplicate must not pass");
    assert!(matches!(err, ClientError::Protocol(_)), "{err}");
}

#[tokio::test]
async fn a_connection_dropped_mid_pipeline_fails_every_pending_request() {
    // Answers two requests, then drops the connection.
    let addr = fake(|n, _| {
        if n < 2 {
            b"RARGH!\r\n".to_vec()
        } else {
            b"DROP".to_vec()
        }
    })
    .await;
    let c = Client::connect(&addr, PATIENCE).await.unwrap();
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.exists(format!("n{i}").as_bytes()).await })
        })
        .collect();
    let mut answered = 0;
    let mut lost = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(false) => answered += 1,
            Err(ClientError::Lost(_)) => lost += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((answered, lost), (2, 8));
    assert!(matches!(c.exists(b"x").await, Err(ClientError::Lost(_))));
}

/// The fake server runs on its own OS thread (it blocks while it holds
/// back its first reply), so it can never stall the client's runtime.
#[tokio::test]
async fn a_slow_reply_times_out_and_its_late_reply_is_not_misattributed() {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (late_tx, late_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut write = stream.try_clone().unwrap();
        let mut lines = std::io::BufReader::new(stream).lines();
        let first = lines.next().unwrap().unwrap();
        assert!(first.starts_with("EXISTS"), "{first}");
        late_rx.recv().unwrap(); // until the client has given up on it
        write.write_all(b"AWESOME!\r\n").unwrap();
        let second = lines.next().unwrap().unwrap();
        assert!(second.starts_with("GET"), "{second}");
        write.write_all(b"second\r\n").unwrap();
    });
    let c = Client::connect(&addr, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(
        c.exists(b"slow").await.err(),
        Some(ClientError::Timeout(Duration::from_millis(200)))
    );
    late_tx.send(()).unwrap();
    assert_eq!(
        c.get(b"next").await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
    server.join().unwrap();
}

#[tokio::test]
async fn an_error_reply_is_a_server_error_and_the_connection_goes_on() {
    let addr = fake(|n, _| {
        if n == 0 {
            b"ERROR storage: disk full\r\n".to_vec()
        } else {
            b"W00T!\r\n".to_vec()
        }
    })
    .await;
    let c = Client::connect(&addr, PATIENCE).await.unwrap();
    assert_eq!(
        c.store(b"a", b"v").await.err(),
        Some(ClientError::Server("storage: disk full".into()))
    );
    assert!(c.store(b"b", b"v").await.unwrap());
}

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

#[tokio::test]
async fn a_get_answered_with_an_error_line_is_a_server_error() {
    let addr = fake(|_, _| b"ERROR name too long\r\n".to_vec()).await;
    let c = Client::connect(&addr, PATIENCE).await.unwrap();
    assert_eq!(
        c.get(b"a").await,
        Err(ClientError::Server("name too long".into()))
    );
    // The connection goes on.
    assert_eq!(
        c.get(b"b").await,
        Err(ClientError::Server("name too long".into()))
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
