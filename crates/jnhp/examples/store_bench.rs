//! Load generator for the validator benchmark (`bench/validators.sh`).
//!
//! `store_bench stores ADDR`: connections each send unique STOREs, one at a
//! time, for a fixed time; prints STOREs per second (every reply checked).
//! `store_bench spawn PROG`: the same number of workers each run `PROG
//! value` and wait for it, in a loop: the bare cost of a process per STORE,
//! the yardstick for `kind = "process"`.
//! `store_bench fill ADDR --count N`: stores N names (16-byte names, 32-byte
//! values) in pipelined bursts, for replay and memory measurements.
//! `--resp` speaks Redis's protocol instead (SETNX), for side-by-side runs.

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
    /// Speak RESP (Redis: SETNX) instead of JNHP.
    #[arg(long, global = true)]
    resp: bool,
    /// `stores`: each connection sends this value under one name of its
    /// own again and again, every reply checked to be `RARGH!` (a client
    /// hammering a refused STORE: the deny cache's case).
    #[arg(long, global = true)]
    refused: Option<String>,
}

#[derive(Subcommand)]
enum Mode {
    Stores {
        addr: String,
    },
    Spawn {
        program: String,
    },
    Fill {
        addr: String,
        #[arg(long, default_value_t = 1_000_000)]
        count: usize,
    },
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Mode::Fill { addr, count } = &args.mode {
        return fill(addr, *count, args.resp).await;
    }
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let done = done.clone();
        workers.push(match &args.mode {
            Mode::Stores { addr } => {
                let refused = args.refused.clone();
                match refused {
                    Some(value) => {
                        tokio::spawn(refusals(addr.clone(), worker, value, deadline, done))
                    }
                    None => tokio::spawn(stores(addr.clone(), worker, deadline, done, args.resp)),
                }
            }
            Mode::Spawn { program } => tokio::spawn(spawns(program.clone(), deadline, done)),
            Mode::Fill { .. } => unreachable!("handled above"),
        });
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!("{rate:.0}");
}

/// One STORE (JNHP) or SETNX (RESP) request, and the reply that means "stored".
fn store_request(resp: bool, name: &str, value: &str, out: &mut Vec<u8>) -> &'static str {
    if resp {
        for part in [
            format!("*3\r\n$5\r\nSETNX\r\n${}\r\n", name.len()),
            format!("{name}\r\n${}\r\n{value}\r\n", value.len()),
        ] {
            out.extend_from_slice(part.as_bytes());
        }
        ":1\r\n"
    } else {
        jnhp_wire::Request::Store {
            name: name.as_bytes(),
            value: value.as_bytes(),
        }
        .encode(out);
        "W00T!\r\n"
    }
}

async fn stores(addr: String, worker: usize, deadline: Instant, done: Arc<AtomicU64>, resp: bool) {
    let stream = TcpStream::connect(&addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (read, mut write) = stream.into_split();
    let mut replies = BufReader::new(read);
    let mut reply = String::new();
    let nonce = std::process::id();
    let mut i = 0u64;
    let mut request = Vec::new();
    while Instant::now() < deadline {
        request.clear();
        let stored = store_request(
            resp,
            &format!("b{nonce}-{worker}-{i}"),
            &format!("value-{i}"),
            &mut request,
        );
        write.write_all(&request).await.expect("write");
        reply.clear();
        replies.read_line(&mut reply).await.expect("read");
        assert_eq!(reply, stored, "every unique STORE must be stored");
        done.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

async fn refusals(
    addr: String,
    worker: usize,
    value: String,
    deadline: Instant,
    done: Arc<AtomicU64>,
) {
    let stream = TcpStream::connect(&addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (read, mut write) = stream.into_split();
    let mut replies = BufReader::new(read);
    let mut reply = String::new();
    let mut request = Vec::new();
    store_request(
        false,
        &format!("r{}-{worker}", std::process::id()),
        &value,
        &mut request,
    );
    while Instant::now() < deadline {
        write.write_all(&request).await.expect("write");
        reply.clear();
        replies.read_line(&mut reply).await.expect("read");
        assert_eq!(reply, "RARGH!\r\n", "the value must be refused");
        done.fetch_add(1, Ordering::Relaxed);
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

/// Stores `count` names of 16 bytes with values of 32 bytes, in pipelined
/// bursts of 1000, checking every reply.
async fn fill(addr: &str, count: usize, resp: bool) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut replies = BufReader::new(read);
    let mut reply = String::new();
    let mut burst = Vec::new();
    let mut stored = "";
    let start = Instant::now();
    for first in (0..count).step_by(1000) {
        burst.clear();
        let last = (first + 1000).min(count);
        for i in first..last {
            stored = store_request(
                resp,
                &format!("name:{i:011}"),
                &format!("value:{i:026}"),
                &mut burst,
            );
        }
        write.write_all(&burst).await.expect("write");
        for _ in first..last {
            reply.clear();
            replies.read_line(&mut reply).await.expect("read");
            assert_eq!(reply, stored);
        }
    }
    println!("{:.0}", count as f64 / start.elapsed().as_secs_f64());
}
