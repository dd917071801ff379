//! The daemon as a library: `Server::start` in-process, served over a real
//! socket, reloaded, shut down and waited for.

use std::time::Duration;

use jnhp_client::Client;
use jnhpd::config::Config;
use jnhpd::server::{self, Server, Stopping};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_starts_serves_reloads_and_stops_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let text = format!("[storage]\npath = \"{}\"\n", data.display());
    let config = Config::parse(&text, &dir.path().join("jnhp.toml")).unwrap();
    let listeners = server::Listeners {
        plain: server::bind(&[jnhpd::config::ListenAddr::parse("127.0.0.1:0").unwrap()]).unwrap(),
        tls: Vec::new(),
        admin: Vec::new(),
    };
    let running = Server::start(config.clone(), listeners).await.unwrap();
    let addr = running.addrs()[0].to_string();
    let client = Client::connect(&addr, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(client.store(b"a", b"1").await.unwrap());
    assert!(!client.store(b"a", b"2").await.unwrap());

    // A reload with a validator: new STOREs pass it.
    let with_regex = format!(
        "{text}[[validator]]\nkind = \"function\"\nfunction = \"regex\"\npattern = \"^ok\"\n"
    );
    let reloaded = running
        .control()
        .reload(Config::parse(&with_regex, &dir.path().join("jnhp.toml")).unwrap())
        .unwrap();
    assert_eq!(reloaded.validators, 1);
    assert!(reloaded.need_restart.is_empty());
    assert!(!client.store(b"b", b"no").await.unwrap());
    assert!(client.store(b"c", b"ok").await.unwrap());

    let control = running.control();
    assert!(matches!(control.shutdown(), Stopping::Draining(_)));
    drop(client);
    running.wait().await.unwrap();

    // Everything acknowledged is in the data file, which is closed: a new
    // server on it starts and has it.
    let listeners = server::Listeners {
        plain: server::bind(&[jnhpd::config::ListenAddr::parse("127.0.0.1:0").unwrap()]).unwrap(),
        tls: Vec::new(),
        admin: Vec::new(),
    };
    let again = Server::start(config, listeners).await.unwrap();
    let client = Client::connect(&again.addrs()[0].to_string(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(client.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(client.get(b"c").await.unwrap().as_deref(), Some(&b"ok"[..]));
    assert_eq!(client.get(b"b").await.unwrap(), None);
    again.control().shutdown();
    drop(client);
    again.wait().await.unwrap();
}

/// Start and reload failures are typed: the variant says what failed, the
/// text is what the binary prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_reload_failures_say_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    let config = Config::parse("", &path).unwrap();
    let any_port = || server::bind(&[jnhpd::config::ListenAddr::parse("127.0.0.1:0").unwrap()]);

    // TLS sockets without a certificate in the config.
    let listeners = server::Listeners {
        plain: any_port().unwrap(),
        tls: any_port().unwrap(),
        admin: Vec::new(),
    };
    let err = Server::start(config.clone(), listeners).await.unwrap_err();
    assert!(matches!(err, server::StartError::NoCertificate), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("tls.cert_file: required to serve TLS"),
        "{err}"
    );

    // A data file that cannot be opened.
    std::fs::write(dir.path().join("data"), b"not a data file").unwrap();
    let with_file = Config::parse("[storage]\npath = \"data\"\n", &path).unwrap();
    let listeners = server::Listeners {
        plain: any_port().unwrap(),
        ..Default::default()
    };
    let err = Server::start(with_file, listeners).await.unwrap_err();
    assert!(matches!(err, server::StartError::DataFile(_)), "{err:?}");

    // A denylist removed between loading the new file and applying it.
    let running = Server::start(
        config,
        server::Listeners {
            plain: any_port().unwrap(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let denylist = dir.path().join("deny");
    std::fs::write(&denylist, "bad\n").unwrap();
    let new = Config::parse(
        "[[validator]]\nkind = \"blocking\"\nfunction = \"denylist\"\npath = \"deny\"\n",
        &path,
    )
    .unwrap();
    std::fs::remove_file(&denylist).unwrap();
    let err = running.control().reload(new).unwrap_err();
    assert!(matches!(err, server::ReloadError::Validators(_)), "{err:?}");
    assert!(err.to_string().contains("deny"), "{err}");
    running.control().shutdown();
    running.wait().await.unwrap();
}

/// A validator of the library user's own, put in front of the chain by
/// `Server::start_with`: it decides STOREs, and a reload (which replaces
/// the configured validators) keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_users_validator_checks_stores_and_survives_a_reload() {
    use std::sync::Arc;

    use jnhpd::validator::{Link, OnFailure, Peer, Validator, Verdict};

    /// Refuses names that do not begin with `user:`; asynchronous only, so
    /// the STORE takes the validators' path, not the inline check.
    #[derive(Debug)]
    struct UserNames;

    #[async_trait::async_trait]
    impl Validator for UserNames {
        async fn validate(&self, name: &[u8], _value: &[u8], _peer: &Peer) -> Verdict {
            if name.starts_with(b"user:") {
                Verdict::Allow
            } else {
                Verdict::Deny
            }
        }

        fn describe(&self) -> String {
            "names begin with user:".into()
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    let listeners = server::Listeners {
        plain: server::bind(&[jnhpd::config::ListenAddr::parse("127.0.0.1:0").unwrap()]).unwrap(),
        ..Default::default()
    };
    let own = vec![Link::new(
        "user-names",
        Arc::new(UserNames),
        OnFailure::Reject,
    )];
    let running = Server::start_with(Config::parse("", &path).unwrap(), listeners, own)
        .await
        .unwrap();
    let client = Client::connect(&running.addrs()[0].to_string(), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(client.store(b"user:a", b"1").await.unwrap());
    assert!(!client.store(b"other", b"1").await.unwrap());

    // A reload adds a configured validator after it; both decide.
    let with_regex =
        "[[validator]]\nkind = \"function\"\nfunction = \"regex\"\npattern = \"^ok\"\n";
    let reloaded = running
        .control()
        .reload(Config::parse(with_regex, &path).unwrap())
        .unwrap();
    assert_eq!(reloaded.validators, 2);
    assert!(!client.store(b"other2", b"ok").await.unwrap());
    assert!(!client.store(b"user:b", b"no").await.unwrap());
    assert!(client.store(b"user:c", b"ok").await.unwrap());

    running.control().shutdown();
    drop(client);
    running.wait().await.unwrap();
}

/// The body of `GET /metrics` from an admin listener.
async fn metrics(admin: std::net::SocketAddr) -> String {
    admin_get(admin, "/metrics").await
}

/// The response to `GET path` from an admin listener.
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

/// Waits (up to 30 s) until `/metrics` has a line starting with `line`.
async fn await_metric(admin: std::net::SocketAddr, line: &str) {
    for _ in 0..300 {
        if metrics(admin).await.lines().any(|l| l.starts_with(line)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {line:?} in /metrics:\n{}", metrics(admin).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_validators_have_names_policies_and_limits_in_the_chain() {
    use std::sync::Arc;

    use jnhpd::validator::{Cause, OnFailure, Peer, Validator, Verdict};

    /// Hangs on `hang*`, waits for `open` on `slow*`, allows the rest.
    #[derive(Debug)]
    struct Gate {
        open: Arc<tokio::sync::Notify>,
    }

    #[async_trait::async_trait]
    impl Validator for Gate {
        async fn validate(&self, name: &[u8], _value: &[u8], _peer: &Peer) -> Verdict {
            if name.starts_with(b"hang") {
                std::future::pending::<()>().await;
            }
            if name.starts_with(b"slow") {
                self.open.notified().await;
            }
            Verdict::Allow
        }

        fn describe(&self) -> String {
            "gate".into()
        }
    }

    /// Never decides.
    #[derive(Debug)]
    struct Undecided;

    #[async_trait::async_trait]
    impl Validator for Undecided {
        async fn validate(&self, _name: &[u8], _value: &[u8], _peer: &Peer) -> Verdict {
            Verdict::Failure(Cause::NoVerdict, "cannot tell".into())
        }

        fn describe(&self) -> String {
            "undecided".into()
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    let local = || server::bind(&[jnhpd::config::ListenAddr::parse("127.0.0.1:0").unwrap()]);
    let listeners = |admin: bool| server::Listeners {
        plain: local().unwrap(),
        tls: Vec::new(),
        admin: if admin { local().unwrap() } else { Vec::new() },
    };
    let config = || Config::parse("", &path).unwrap();

    // Bad options are refused at start, naming the validator.
    for (builder, why) in [
        (
            Server::builder(config())
                .validator("zero", Undecided)
                .max_concurrent(0)
                .done(),
            "validator \"zero\": max_concurrent must be at least 1",
        ),
        (
            Server::builder(config())
                .validator("twice", Undecided)
                .validator("twice", Undecided)
                .done(),
            "validator \"twice\": another validator has this name",
        ),
        (
            Server::builder(config())
                .validator("t", Undecided)
                .timeout(Duration::ZERO)
                .done(),
            "validator \"t\": the timeout must be more than 0",
        ),
    ] {
        let err = builder
            .listeners(listeners(false))
            .start()
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), why);
    }

    let open = Arc::new(tokio::sync::Notify::new());
    let running = Server::builder(config())
        .listeners(listeners(true))
        .validator("gate", Gate { open: open.clone() })
        .timeout(Duration::from_secs(1))
        .max_concurrent(1)
        .validator("undecided", Undecided)
        .on_failure(OnFailure::Allow)
        .start()
        .await
        .unwrap();
    let addr = running.addrs()[0].to_string();
    let admin = running.admin_addrs()[0];
    let a = Client::connect(&addr, Duration::from_secs(30))
        .await
        .unwrap();
    let b = Client::connect(&addr, Duration::from_secs(30))
        .await
        .unwrap();

    // A check past its timeout fails; on_failure = reject (the default).
    assert!(!a.store(b"hang", b"1").await.unwrap());
    // The other validator fails every time; on_failure = allow.
    assert!(a.store(b"fine", b"1").await.unwrap());

    // max_concurrent = 1: a second STORE waits for the slot, counted queued.
    let slow = tokio::spawn(async move { a.store(b"slow", b"1").await.unwrap() });
    await_metric(admin, "jnhpd_validator_in_flight{validator=\"gate\"} 1").await;
    let queued = tokio::spawn(async move { b.store(b"queued", b"1").await.unwrap() });
    await_metric(admin, "jnhpd_validator_queued{validator=\"gate\"} 1").await;
    open.notify_one();
    assert!(slow.await.unwrap());
    assert!(queued.await.unwrap());

    let text = metrics(admin).await;
    for line in [
        "jnhpd_validator_failures_total{validator=\"gate\",cause=\"timeout\"} 1",
        "jnhpd_validator_failures_total{validator=\"undecided\",cause=\"no_verdict\"} 3",
        "jnhpd_validator_verdicts_total{validator=\"gate\",verdict=\"allow\"} 3",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let status = admin_get(admin, "/status").await;
    assert!(
        status.contains(r#""name":"gate","kind":"library""#),
        "{status}"
    );
    running.control().shutdown();
    running.wait().await.unwrap();
}
