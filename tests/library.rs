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
