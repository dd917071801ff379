//! Hostile tests of issue 25's Rust side: `Server::builder(..)
//! .validator(..)` with hostile validators, limits and names. (The
//! Python package's hostile tests are python/tests/test_hostile_*.py, run
//! by tests/python.rs.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jnhp_client::Client;
use jnhpd::config::Config;
use jnhpd::server::{self, Server};
use jnhpd::validator::{OnFailure, Peer, Validator, Verdict};

fn local() -> Vec<std::net::TcpListener> {
    server::bind(&[jnhpd::config::ListenAddr::parse("127.0.0.1:0").unwrap()]).unwrap()
}

fn listeners() -> server::Listeners {
    server::Listeners {
        plain: local(),
        tls: Vec::new(),
        admin: local(),
    }
}

fn config(dir: &std::path::Path, extra: &str) -> Config {
    Config::parse(extra, &dir.join("jnhp.toml")).unwrap()
}

async fn client(running: &Server) -> Client {
    Client::connect(&running.addrs()[0].to_string(), Duration::from_secs(30))
        .await
        .unwrap()
}

async fn admin_get(admin: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

/// Panics on `panic*`, hangs on `hang*`, counts how many run at once.
#[derive(Debug, Default)]
struct Hostile {
    now: AtomicUsize,
    most: AtomicUsize,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Validator for Hostile {
    async fn validate(&self, name: &[u8], _value: &[u8], _peer: &Peer) -> Verdict {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.now);
        if name.starts_with(b"panic") {
            panic!("hostile validator panics on purpose");
        }
        if name.starts_with(b"hang") {
            std::future::pending::<()>().await;
        }
        if name.starts_with(b"slow") {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (!name.starts_with(b"deny")).into()
    }

    fn describe(&self) -> String {
        "hostile".into()
    }
}

/// A check_now that panics: runs "as the request is parsed".
#[derive(Debug)]
struct PanicsNow;

#[async_trait::async_trait]
impl Validator for PanicsNow {
    async fn validate(&self, _name: &[u8], _value: &[u8], _peer: &Peer) -> Verdict {
        Verdict::Allow
    }
    fn check_now(&self, name: &[u8], _value: &[u8], _peer: &Peer) -> Option<Verdict> {
        if name.starts_with(b"panic") {
            panic!("check_now panics on purpose");
        }
        Some(Verdict::Allow)
    }
    fn describe(&self) -> String {
        "panics now".into()
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 20 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_that_panics_fails_its_store_and_the_server_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let running = Server::builder(config(dir.path(), ""))
        .listeners(listeners())
        .validator("hostile", Hostile::default())
        .max_concurrent(1)
        .start()
        .await
        .unwrap();
    let c = client(&running).await;
    // on_failure = reject (the default): RARGH!, or at worst an ERROR
    // line; never a hang or a closed connection.
    let got = within(
        "STORE of a name the validator panics on",
        c.store(b"panic1", b"x"),
    )
    .await;
    assert!(matches!(got, Ok(false)), "{got:?}");
    // The slot of max_concurrent = 1 was given back; the server serves.
    assert!(
        within("STORE after a panic", c.store(b"fine", b"x"))
            .await
            .unwrap()
    );
    let other = client(&running).await;
    assert!(
        within("another client", other.store(b"fine2", b"x"))
            .await
            .unwrap()
    );
    running.control().shutdown();
    drop((c, other));
    within("shutdown", running.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_check_now_that_panics_fails_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let running = Server::builder(config(dir.path(), ""))
        .listeners(listeners())
        .validator("now", PanicsNow)
        .start()
        .await
        .unwrap();
    let c = client(&running).await;
    let got = within("STORE whose check_now panics", c.store(b"panic1", b"x")).await;
    assert!(matches!(got, Ok(false)), "{got:?}");
    assert!(within("next STORE", c.store(b"fine", b"x")).await.unwrap());
    running.control().shutdown();
    drop(c);
    within("shutdown", running.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_timeouts_and_limits_start_or_are_refused_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    for (timeout, max) in [
        (Duration::MAX, usize::MAX),
        (Duration::from_secs(u64::MAX), 1),
        (Duration::from_nanos(1), usize::MAX / 2),
    ] {
        let started = Server::builder(config(dir.path(), ""))
            .listeners(listeners())
            .validator("hostile", Hostile::default())
            .timeout(timeout)
            .max_concurrent(max)
            .start()
            .await;
        let Ok(running) = started else {
            let err = started.err().unwrap().to_string();
            assert!(err.contains("validator \"hostile\""), "{err}");
            continue;
        };
        let c = client(&running).await;
        let got = within("STORE", c.store(b"slow-a", b"x")).await.unwrap();
        // 1 ns: timed out (reject); otherwise allowed.
        assert_eq!(got, timeout > Duration::from_secs(1), "{timeout:?}");
        running.control().shutdown();
        drop(c);
        within("shutdown", running.wait()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_one_under_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = Arc::new(Hostile::default());
    #[derive(Debug)]
    struct Shared(Arc<Hostile>);
    #[async_trait::async_trait]
    impl Validator for Shared {
        async fn validate(&self, name: &[u8], value: &[u8], peer: &Peer) -> Verdict {
            self.0.validate(name, value, peer).await
        }
        fn describe(&self) -> String {
            "shared".into()
        }
    }
    let running = Server::builder(config(dir.path(), ""))
        .listeners(listeners())
        .validator("one", Shared(hostile.clone()))
        .max_concurrent(1)
        .timeout(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let addr = running.addrs()[0].to_string();
    let mut tasks = Vec::new();
    for t in 0..50 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(&addr, Duration::from_secs(60))
                .await
                .unwrap();
            for i in 0..10 {
                let name = if i % 3 == 0 {
                    format!("deny-{t}-{i}")
                } else {
                    format!("slow-{t}-{i}")
                };
                let got = c.store(name.as_bytes(), b"v").await.unwrap();
                assert_eq!(got, i % 3 != 0, "{name}");
            }
        }));
    }
    for task in tasks {
        within("flood", task).await.unwrap();
    }
    assert_eq!(hostile.most.load(Ordering::SeqCst), 1);
    assert_eq!(hostile.calls.load(Ordering::SeqCst), 500);
    running.control().shutdown();
    within("shutdown", running.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_library_names_cannot_forge_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let name = "x\"} 1\nforged_metric{a=\"b\"} 42\n# HELP y";
    let started = Server::builder(config(dir.path(), ""))
        .listeners(listeners())
        .validator(name, Hostile::default())
        .start()
        .await;
    let running = match started {
        Ok(running) => running,
        // Refused at start (as a config name outside [a-z0-9_-]+ would
        // be): fine, if the error names it readably.
        Err(e) => {
            assert!(e.to_string().contains("validator"), "{e}");
            return;
        }
    };
    let c = client(&running).await;
    assert!(c.store(b"a", b"x").await.unwrap());
    let metrics = admin_get(running.admin_addrs()[0], "/metrics").await;
    assert!(
        !metrics.lines().any(|l| l.starts_with("forged_metric")),
        "{metrics}"
    );
    // /status is JSON: the name in it escaped, on no line of its own.
    let status = admin_get(running.admin_addrs()[0], "/status").await;
    assert!(
        status.contains(r#""name":"x\"} 1\nforged_metric{a=\"b\"} 42\n# HELP y""#),
        "{status}"
    );
    assert!(
        !status.lines().any(|l| l.starts_with("forged_metric")),
        "{status}"
    );
    running.control().shutdown();
    drop(c);
    within("shutdown", running.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_name_taken_by_a_configured_validator_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    for (table, taken) in [
        (
            "[[validator]]\nkind = \"function\"\nfunction = \"regex\"\npattern = \"^\"\nname = \"gate\"\n",
            "gate",
        ),
        (
            "[[validator]]\nkind = \"function\"\nfunction = \"regex\"\npattern = \"^\"\n",
            "function-0",
        ),
    ] {
        let err = Server::builder(config(dir.path(), table))
            .listeners(listeners())
            .validator(taken, Hostile::default())
            .start()
            .await
            .err()
            .unwrap_or_else(|| panic!("{taken:?} given twice was accepted"));
        assert!(err.to_string().contains(taken), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_library_validators_in_front_with_their_counts() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = Arc::new(Hostile::default());
    #[derive(Debug)]
    struct Shared(Arc<Hostile>);
    #[async_trait::async_trait]
    impl Validator for Shared {
        async fn validate(&self, name: &[u8], value: &[u8], peer: &Peer) -> Verdict {
            self.0.validate(name, value, peer).await
        }
        fn describe(&self) -> String {
            "shared".into()
        }
    }
    let running = Server::builder(config(dir.path(), ""))
        .listeners(listeners())
        .validator("lib", Shared(hostile.clone()))
        .on_failure(OnFailure::Allow)
        .start()
        .await
        .unwrap();
    let c = client(&running).await;
    assert!(!c.store(b"deny-1", b"x").await.unwrap());
    assert!(c.store(b"ok-1", b"x").await.unwrap());
    // A configured validator refusing every value but "ok...".
    let table = "[[validator]]\nkind = \"function\"\nfunction = \"regex\"\npattern = \"^ok\"\nname = \"cfg\"\n";
    let reloaded = running.control().reload(config(dir.path(), table)).unwrap();
    assert_eq!(reloaded.validators, 2); // the library one and the configured one
    assert!(!c.store(b"deny-2", b"ok").await.unwrap());
    assert!(!c.store(b"other", b"x").await.unwrap());
    assert!(c.store(b"ok-2", b"ok").await.unwrap());
    // The library validator ran first: on other, deny-2 and ok-2 too
    // (a function validator answers inline, yet the order holds).
    assert_eq!(hostile.calls.load(Ordering::SeqCst), 2 + 3);
    let metrics = admin_get(running.admin_addrs()[0], "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "jnhpd_validator_verdicts_total{validator=\"lib\",verdict=\"deny\"} 2"),
        "{metrics}"
    );
    running.control().shutdown();
    drop(c);
    within("shutdown", running.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_never_completes_does_not_block_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let running = Server::builder(config(dir.path(), "[server]\nshutdown_grace_secs = 1\n"))
        .listeners(listeners())
        .validator("hostile", Hostile::default())
        .start()
        .await
        .unwrap();
    let c = client(&running).await;
    let hung = tokio::spawn(async move { c.store(b"hang", b"x").await });
    // A second client shows the first STORE is being judged.
    let d = client(&running).await;
    assert!(d.store(b"ok", b"x").await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.control().shutdown();
    within("shutdown with a hung check", running.wait())
        .await
        .unwrap();
    let got = within("the hung STORE's reply", hung).await.unwrap();
    // ERROR shutting down (not stored) or the connection closed; never
    // W00T!.
    assert!(!matches!(got, Ok(true)), "{got:?}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_taking_a_library_validators_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let running = Server::builder(config(dir.path(), ""))
        .listeners(listeners())
        .validator("lib", Hostile::default())
        .start()
        .await
        .unwrap();
    let clash = "[[validator]]\nkind = \"function\"\nfunction = \"regex\"\npattern = \"^\"\nname = \"lib\"\n";
    let reloaded = running.control().reload(config(dir.path(), clash));
    let metrics = admin_get(running.admin_addrs()[0], "/metrics").await;
    let series = "jnhpd_validator_verdicts_total{validator=\"lib\",verdict=\"allow\"}";
    let count = metrics.lines().filter(|l| l.starts_with(series)).count();
    assert_eq!(count, 1, "{metrics}");
    let err = reloaded.expect_err("a reload naming a second validator \"lib\" was accepted");
    assert!(err.to_string().contains("lib"), "{err}");
    running.control().shutdown();
    within("shutdown", running.wait()).await.unwrap();
}
