//! A daemon with a check of its own in the chain, in-process:
//! `cargo run --example custom_validator -- 127.0.0.1:8111`.
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use jnhpd::config::Config;
use jnhpd::logging::{self, Target};
use jnhpd::server::Server;
use jnhpd::validator::{OnFailure, Peer, Validator, Verdict};

/// Values must be UTF-8 text (an async check: it may await a database).
#[derive(Debug)]
struct Utf8Text;

#[async_trait::async_trait]
impl Validator for Utf8Text {
    async fn validate(&self, _name: &[u8], value: &[u8], _peer: &Peer) -> Verdict {
        std::str::from_utf8(value).is_ok().into()
    }
    fn describe(&self) -> String {
        "values are UTF-8 text".into()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logging::init(Target::Stderr, log::LevelFilter::Info)?;
    let listen = std::env::args().nth(1).unwrap_or("127.0.0.1:8111".into());
    let toml = format!("[server]\nlisten = [\"{listen}\"]\n"); // or read jnhp.toml
    // Caught from now on: a Ctrl-C as soon as clients are served stops us.
    let mut ctrl_c = signal(SignalKind::interrupt())?;
    let server = Server::builder(Config::parse(&toml, "jnhp.toml".as_ref())?)
        .validator("utf8-text", Utf8Text)
        .on_failure(OnFailure::Reject)
        .timeout(Duration::from_millis(500))
        .max_concurrent(64)
        .start()
        .await?;
    ctrl_c.recv().await;
    server.control().shutdown();
    Ok(server.wait().await?)
}
