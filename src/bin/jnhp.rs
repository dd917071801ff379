//! `jnhp`: a command-line client for jnhpd.
//!
//! Exit codes are for scripts: 0 = stored / present / found, 1 = RARGH! /
//! absent, 2 = an error (the message is on stderr).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::io::AsyncWriteExt;

use jnhpd::client::Client;

#[derive(Parser)]
#[command(version, about = "A client for jnhpd (JNHP/1)")]
struct Cli {
    /// The server's host:port.
    #[arg(long, default_value = "127.0.0.1:8111", global = true)]
    addr: String,
    /// Seconds to wait for the connection and for each reply.
    #[arg(long, default_value_t = 10.0, global = true)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Store VALUE under NAME (exit 0 stored, 1 not stored).
    Store { name: OsString, value: OsString },
    /// Is NAME stored? (exit 0 yes, 1 no)
    Exists { name: OsString },
    /// Print NAME's value (exit 0 found, 1 absent).
    Get { name: OsString },
    /// Send request lines from stdin (pipelined), print the replies.
    Batch,
    /// Load generator: JNHP, Redis (RESP) or memcached, same workload.
    Bench(jnhpd::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("jnhp: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(run(cli));
    ExitCode::from(code)
}

async fn run(cli: Cli) -> u8 {
    let timeout = Duration::from_secs_f64(cli.timeout);
    let result = match cli.command {
        Command::Batch => return batch(&cli.addr, timeout).await,
        Command::Bench(args) => return jnhpd::bench::run(&cli.addr, args).await,
        command => one_request(&cli.addr, timeout, command).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jnhp: {e}");
            2
        }
    }
}

async fn one_request(
    addr: &str,
    timeout: Duration,
    command: Command,
) -> Result<u8, jnhpd::client::ClientError> {
    let client = Client::connect(addr, timeout).await?;
    let yes = match command {
        Command::Store { name, value } => client.store(name.as_bytes(), value.as_bytes()).await?,
        Command::Exists { name } => client.exists(name.as_bytes()).await?,
        Command::Get { name } => match client.get(name.as_bytes()).await? {
            Some(value) => {
                let mut out = tokio::io::stdout();
                let _ = out.write_all(&value).await;
                let _ = out.write_all(b"\n").await;
                let _ = out.flush().await;
                true
            }
            None => false,
        },
        Command::Batch | Command::Bench(_) => unreachable!("handled by run"),
    };
    Ok(if yes { 0 } else { 1 })
}

/// Copies stdin to the server and the replies to stdout. After stdin ends
/// the connection is half-closed: the server answers everything it got,
/// then closes, which ends the copy of replies.
async fn batch(addr: &str, timeout: Duration) -> u8 {
    let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            eprintln!("jnhp: cannot connect to {addr}: {e}");
            return 2;
        }
        Err(_) => {
            eprintln!("jnhp: cannot connect to {addr}: timed out");
            return 2;
        }
    };
    let (mut read, mut write) = stream.into_split();
    let requests = async {
        tokio::io::copy(&mut tokio::io::stdin(), &mut write).await?;
        write.shutdown().await
    };
    let replies = async {
        let mut out = tokio::io::stdout();
        tokio::io::copy(&mut read, &mut out).await?;
        out.flush().await
    };
    match tokio::try_join!(requests, replies) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("jnhp: {e}");
            2
        }
    }
}
