//! The client library against the real daemon, and against fake servers
//! that misbehave; and the `jnhp` command's exit codes.

mod common;

use std::time::Duration;

use common::Server;
use jnhp_client::{Client, ClientError};
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
