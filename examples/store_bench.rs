//! Load generator for the validator benchmark (`bench/validators.sh`).
//!
//! `store_bench stores ADDR`: connections each send unique STOREs, one at a
//! time, for a fixed time; prints STOREs per second (every reply checked).
//! `store_bench spawn PROG`: the same number of workers each run `PROG
//! value` and wait for it, in a loop: the bare cost of a process per STORE,
//! the yardstick for `kind = "process"`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
    /// Concurrent connections (stores) or workers (spawn).
    #[arg(long, default_value_t = 50, global = true)]
    concurrency: usize,
    #[arg(long, default_value_t = 5.0, global = true)]
    seconds: f64,
}

#[derive(Subcommand)]
enum Mode {
    Stores { addr: String },
    Spawn { program: String },
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let done = done.clone();
        workers.push(match &args.mode {
            Mode::Stores { addr } => tokio::spawn(stores(addr.clone(), worker, deadline, done)),
            Mode::Spawn { program } => tokio::spawn(spawns(program.clone(), deadline, done)),
        });
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!("{rate:.0}");
}

async fn stores(addr: String, worker: usize, deadline: Instant, done: Arc<AtomicU64>) {
    let stream = TcpStream::connect(&addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (read, mut write) = stream.into_split();
    let mut replies = BufReader::new(read);
    let mut reply = String::new();
    let nonce = std::process::id();
    let mut i = 0u64;
    while Instant::now() < deadline {
        let request = format!("STORE b{nonce}-{worker}-{i} value-{i}\r\n");
        write.write_all(request.as_bytes()).await.expect("write");
        reply.clear();
        replies.read_line(&mut reply).await.expect("read");
        assert_eq!(reply, "W00T!\r\n", "every unique STORE must be stored");
        done.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

async fn spawns(program: String, deadline: Instant, done: Arc<AtomicU64>) {
    let mut i = 0u64;
    while Instant::now() < deadline {
        let out = tokio::process::Command::new(&program)
            .arg(format!("value-{i}"))
            .output()
            .await
            .expect("spawn");
        assert!(out.stdout.starts_with(b"JNHP:1"));
        done.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}
