//! `jnhp bench`: one workload spoken three ways, to compare jnhpd with the
//! systems users would otherwise pick: JNHP (STORE/EXISTS/GET), Redis RESP
//! (SETNX/EXISTS/GET) and memcached's text protocol (add/mg/get).
//!
//! Closed loop (default): each connection sends `pipeline` requests, waits
//! for their replies, and so on; a request's latency is its batch's round
//! trip. Over prefilled names, a connection draws its requests once, a
//! script of about 4,096, and sends it round and round (see [`Script`]), so
//! the generator's cost per request stays far below the servers'. Open loop (`--rate`): requests are sent on a fixed schedule,
//! whatever the replies do, and latency counts from the *scheduled* send
//! time, so a server that stalls cannot hide the requests it delayed
//! (coordinated omission). Every reply is checked against what the workload
//! implies; a wrong reply is an error, counted and reported.

mod loops;
mod protocols;

use loops::*;
use protocols::*;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;

use crate::tls::{TlsTarget, connect};
use tokio::sync::Mutex;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// jnhp | resp | memcache
    #[arg(long, default_value = "jnhp")]
    pub protocol: Protocol,
    /// Connections opened at once.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Requests in flight per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// STORE:EXISTS:GET weights.
    #[arg(long, default_value = "10:10:80")]
    pub mix: String,
    /// How many names the workload uses (prefilled before measuring).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Bytes in each value stored.
    #[arg(long, default_value_t = 32)]
    pub value_size: usize,
    /// Every request is a STORE of a new name (expects every one stored).
    #[arg(long)]
    pub unique_stores: bool,
    /// How long to measure, in seconds (after the prefill).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Open loop: this many requests per second in all, on a schedule.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// The request generator of one connection.
struct Workload {
    protocol: Protocol,
    table: Arc<Table>,
    weights: [u32; 3],
    /// The sum of `weights`.
    total_weight: u32,
    keys: u64,
    value_size: usize,
    unique: Option<(usize, u64)>,
    rng: u64,
}

impl Workload {
    fn next(&mut self, out: &mut Vec<u8>) -> (Op, Expect) {
        if let Some((conn, seq)) = &mut self.unique {
            *seq += 1;
            let name = format!("u:{}:{conn}:{seq}", std::process::id());
            encode(
                self.protocol,
                Op::Store,
                &name,
                &value_for(*seq, self.value_size),
                out,
            );
            return (Op::Store, Expect::Stored);
        }
        // xorshift: cheap, and every connection gets its own stream. The
        // pick and the name come from its low and high bits scaled to
        // their ranges (a multiply instead of a division, which costs the
        // generator tens of cycles per request).
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let pick = (((self.rng & 0xFFFF_FFFF) * u64::from(self.total_weight)) >> 32) as u32;
        let i = ((u128::from(self.rng) * u128::from(self.keys)) >> 64) as u64;
        let (op, which, expect) = if pick < self.weights[0] {
            (Op::Store, 0, Expect::StoredOrNot)
        } else if pick < self.weights[0] + self.weights[1] {
            (Op::Exists, 1, Expect::Present)
        } else {
            (Op::Get, 2, Expect::Value(i))
        };
        out.extend_from_slice(&self.table.requests[which][i as usize]);
        (op, expect)
    }
}

#[derive(Default)]
struct Totals {
    done: AtomicU64,
    errors: AtomicU64,
}

pub async fn run(addr: &str, args: BenchArgs, tls: Option<TlsTarget>) -> u8 {
    match bench(addr, args, tls.as_ref()).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("jnhp bench: {e}");
            2
        }
    }
}

/// How long a connection (and its TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

async fn bench(addr: &str, args: BenchArgs, tls: Option<&TlsTarget>) -> Result<(), String> {
    let weights: Vec<u32> = args
        .mix
        .split(':')
        .map(|w| {
            w.parse()
                .map_err(|_| format!("--mix {:?}: expected STORE:EXISTS:GET weights", args.mix))
        })
        .collect::<Result<_, _>>()?;
    let [s, e, g] = weights[..] else {
        return Err(format!("--mix {:?}: expected three weights", args.mix));
    };
    let total_weight = s
        .checked_add(e)
        .and_then(|t| t.checked_add(g))
        .ok_or_else(|| format!("--mix {:?}: weights too large", args.mix))?;
    if total_weight == 0 || args.connections == 0 || args.pipeline == 0 || args.keys == 0 {
        return Err("--mix, --connections, --pipeline and --keys must not be zero".into());
    }
    let table = Arc::new(Table::new(
        args.protocol,
        if args.unique_stores { 0 } else { args.keys },
        args.value_size,
    ));
    if !args.unique_stores {
        prefill(addr, tls, &args, &table).await?;
    }
    let totals = Arc::new(Totals::default());
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new(3).map_err(|e| e.to_string())?,
    ));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for conn in 0..args.connections {
        let stream = connect(addr, tls, CONNECT_TIMEOUT).await?;
        let mut workload = Workload {
            protocol: args.protocol,
            table: table.clone(),
            weights: [s, e, g],
            total_weight,
            keys: args.keys,
            value_size: args.value_size,
            unique: args.unique_stores.then_some((conn, 0)),
            rng: seed(conn),
        };
        let (totals, histogram) = (totals.clone(), histogram.clone());
        let pipeline = args.pipeline;
        let per_conn_rate = args.rate.map(|r| r / args.connections as f64);
        tasks.push(tokio::spawn(async move {
            match per_conn_rate {
                None if workload.unique.is_none() => {
                    let script = Script::new(&mut workload, pipeline);
                    let table = workload.table.clone();
                    let mut recorder = Recorder::new(totals, histogram)?;
                    scripted_loop(stream, &script, &table, pipeline, deadline, &mut recorder)
                        .await?;
                    recorder.finish().await
                }
                None => closed_loop(stream, workload, pipeline, deadline, totals, histogram).await,
                Some(rate) => open_loop(stream, workload, rate, deadline, totals, histogram).await,
            }
        }));
    }
    let progress = (!args.quiet).then(|| {
        let totals = totals.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let done = totals.done.load(Ordering::Relaxed);
                eprint!(
                    "\r{:>6.1} s  {:>10} req/s  {} errors   ",
                    start.elapsed().as_secs_f64(),
                    done - last,
                    totals.errors.load(Ordering::Relaxed)
                );
                last = done;
            }
        })
    });
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let histogram = histogram.lock().await;
    let done = totals.done.load(Ordering::Relaxed);
    let errors = totals.errors.load(Ordering::Relaxed);
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let report = serde_json::json!({
        "protocol": args.protocol,
        "connections": args.connections,
        "pipeline": args.pipeline,
        "mix": if args.unique_stores { "unique stores".to_string() } else { args.mix.clone() },
        "rate": args.rate,
        "seconds": elapsed,
        "requests": done,
        "errors": errors,
        "ops_per_sec": done as f64 / elapsed,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": histogram.max() as f64 / 1000.0,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{:?}: {:.0} ops/s over {elapsed:.1} s ({done} requests, {errors} wrong replies); \
             latency p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms",
            args.protocol,
            done as f64 / elapsed,
            ms(0.5),
            ms(0.99),
            ms(0.999)
        );
    }
    if errors > 0 {
        return Err(format!(
            "{errors} replies were not what the workload implies"
        ));
    }
    Ok(())
}

/// Stores every name of the key space (a name already there is fine).
async fn prefill(
    addr: &str,
    tls: Option<&TlsTarget>,
    args: &BenchArgs,
    table: &Table,
) -> Result<(), String> {
    let mut stream = connect(addr, tls, CONNECT_TIMEOUT).await?;
    let mut buf = Vec::new();
    let mut expects = VecDeque::new();
    let mut pending = Vec::new();
    for first in (0..args.keys).step_by(1000) {
        let last = (first + 1000).min(args.keys);
        pending.clear();
        for i in first..last {
            pending.extend_from_slice(&table.requests[0][i as usize]);
            expects.push_back((Op::Store, Expect::StoredOrNot, Instant::now()));
        }
        stream
            .write_all(&pending)
            .await
            .map_err(|e| e.to_string())?;
        let mut bad = 0;
        read_replies(&mut stream, table, &mut buf, &mut expects, 0, |replies| {
            bad += replies.wrong
        })
        .await?;
        if bad > 0 {
            return Err(format!("prefill: {bad} unexpected replies"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_split_and_checked_per_protocol() {
        let values = vec![b"abc".to_vec()];
        let take = |p, op, e: &Expect, buf: &[u8]| take_reply(p, op, e, &values, buf);
        let v = Expect::Value(0);
        assert_eq!(
            take(Protocol::Jnhp, Op::Get, &v, b"abc\r\nW00T!\r\n"),
            Some((5, true))
        );
        assert_eq!(take(Protocol::Jnhp, Op::Get, &v, b"ab"), None);
        assert_eq!(
            take(Protocol::Resp, Op::Get, &v, b"$3\r\nabc\r\n:1\r\n"),
            Some((9, true))
        );
        assert_eq!(take(Protocol::Resp, Op::Get, &v, b"$3\r\nab"), None);
        assert_eq!(
            take(Protocol::Resp, Op::Get, &v, b"$-1\r\n"),
            Some((5, false))
        );
        assert_eq!(
            take(Protocol::Resp, Op::Store, &Expect::Stored, b":1\r\n"),
            Some((4, true))
        );
        assert_eq!(
            take(
                Protocol::Memcache,
                Op::Get,
                &v,
                b"VALUE key:1 0 3\r\nabc\r\nEND\r\n"
            ),
            Some((27, true))
        );
        assert_eq!(
            take(Protocol::Memcache, Op::Get, &v, b"END\r\n"),
            Some((5, false))
        );
        assert_eq!(
            take(Protocol::Memcache, Op::Exists, &Expect::Present, b"HD\r\n"),
            Some((4, true))
        );
        assert_eq!(
            take(
                Protocol::Memcache,
                Op::Store,
                &Expect::StoredOrNot,
                b"NOT_STORED\r\n"
            ),
            Some((12, true))
        );
    }

    #[test]
    fn the_workload_follows_the_mix_and_spans_the_names() {
        let keys = 50;
        let mut workload = Workload {
            protocol: Protocol::Jnhp,
            table: Arc::new(Table::new(Protocol::Jnhp, keys, 8)),
            weights: [1, 2, 7],
            total_weight: 10,
            keys,
            value_size: 8,
            unique: None,
            rng: 0x9E37_79B9_7F4A_7C15,
        };
        let (mut ops, mut names) = ([0u32; 3], vec![0u32; keys as usize]);
        let mut out = Vec::new();
        for _ in 0..100_000 {
            out.clear();
            let (op, _) = workload.next(&mut out);
            ops[op as usize] += 1;
            let i = (0..keys as usize)
                .find(|&i| workload.table.requests[op as usize][i] == out)
                .expect("a request of the table");
            names[i] += 1;
        }
        // 10%, 20%, 70%, within a percentage point.
        for (got, want) in ops.iter().zip([10_000, 20_000, 70_000]) {
            assert!(got.abs_diff(want) < 1_000, "{ops:?}");
        }
        // Every name about equally often (2,000 each).
        assert!(
            names.iter().all(|&n| (1_600..2_400).contains(&n)),
            "{names:?}"
        );
    }

    #[test]
    fn the_likely_replies_are_what_the_parser_accepts() {
        for protocol in [Protocol::Jnhp, Protocol::Resp, Protocol::Memcache] {
            let table = Table::new(protocol, 3, 8);
            for (op, expect) in [
                (Op::Store, Expect::Stored),
                (Op::Store, Expect::StoredOrNot),
                (Op::Exists, Expect::Present),
                (Op::Get, Expect::Value(2)),
            ] {
                let mut likely = Vec::new();
                table.likely_reply(&expect, &mut likely);
                let parsed = take_reply(protocol, op, &expect, &table.values, &likely);
                assert_eq!(
                    parsed,
                    Some((likely.len(), true)),
                    "{protocol:?} {expect:?}"
                );
            }
        }
    }

    #[test]
    fn replies_written_otherwise_are_parsed_and_checked() {
        let table = Table::new(Protocol::Memcache, 3, 3);
        let take = |table: &Table, op, expect: &Expect, buf: &[u8]| {
            take_reply(table.protocol, op, expect, &table.values, buf)
        };
        let v = Expect::Value(1);
        let mut usual = Vec::new();
        table.likely_reply(&v, &mut usual);
        let mut two = usual.clone();
        two.extend_from_slice(b"HD\r\n");
        assert_eq!(take(&table, Op::Get, &v, &two), Some((usual.len(), true)));
        // Incomplete: wait for the rest.
        assert_eq!(take(&table, Op::Get, &v, &usual[..usual.len() - 1]), None);
        // Other flags: not the usual bytes, still the right value.
        let other = b"VALUE key:0000000001 7 3\r\nv1-\r\nEND\r\n";
        assert_eq!(take(&table, Op::Get, &v, other), Some((other.len(), true)));
        // The value of another name: wrong.
        let mut wrong = Vec::new();
        table.likely_reply(&Expect::Value(2), &mut wrong);
        assert_eq!(
            take(&table, Op::Get, &v, &wrong),
            Some((wrong.len(), false))
        );
        let jnhp = Table::new(Protocol::Jnhp, 1, 3);
        let either = Expect::StoredOrNot;
        assert_eq!(
            take(&jnhp, Op::Store, &either, b"RARGH!\r\n"),
            Some((8, true))
        );
        assert_eq!(
            take(&jnhp, Op::Store, &Expect::Stored, b"RARGH!\r\n"),
            Some((6 + 2, false))
        );
    }

    /// A fake server for [`scripted_loop`]: answers each request right,
    /// except request number `wrong`, which gets an `ERROR`; the first STORE
    /// from request `other` on is answered "stored", the less usual (but
    /// right) form.
    async fn fake_server(
        stream: tokio::io::DuplexStream,
        table: Arc<Table>,
        wrong: usize,
        mut other: usize,
    ) -> usize {
        use tokio::io::AsyncBufReadExt;
        let (read, mut write) = tokio::io::split(stream);
        let mut lines = tokio::io::BufReader::new(read).lines();
        let mut served = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            let name = line.split(' ').nth(1).unwrap_or_default();
            let i: usize = name.trim_start_matches("key:").parse().unwrap();
            let reply: Vec<u8> = match line.split(' ').next() {
                _ if served == wrong => b"ERROR nope\r\n".to_vec(),
                Some("GET") => {
                    let mut value = Vec::new();
                    table.likely_reply(&Expect::Value(i as u64), &mut value);
                    value
                }
                Some("EXISTS") => b"AWESOME!\r\n".to_vec(),
                _ if served >= other => {
                    other = usize::MAX;
                    b"W00T!\r\n".to_vec()
                }
                _ => b"RARGH!\r\n".to_vec(),
            };
            served += 1;
            if write.write_all(&reply).await.is_err() {
                break;
            }
        }
        served
    }

    #[tokio::test]
    async fn the_scripted_loop_checks_every_reply() {
        let table = Arc::new(Table::new(Protocol::Jnhp, 20, 4));
        let mut workload = Workload {
            protocol: Protocol::Jnhp,
            table: table.clone(),
            weights: [1, 1, 2],
            total_weight: 4,
            keys: 20,
            value_size: 4,
            unique: None,
            rng: 12345,
        };
        // Few round trips per pass over the script (16), so that it goes
        // round in the time given on a slow machine too. Batch 1 has the
        // wrong reply, batch 3 the unusual one; the others match as a whole.
        let pipeline = 256;
        let script = Script::new(&mut workload, pipeline);
        assert_eq!(script.expects.len(), SCRIPT_REQUESTS);
        let (client, server) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(fake_server(server, table.clone(), 300, 800));
        let totals = Arc::new(Totals::default());
        let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
        let mut recorder = Recorder::new(totals.clone(), histogram.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        scripted_loop(client, &script, &table, pipeline, deadline, &mut recorder)
            .await
            .unwrap();
        recorder.finish().await.unwrap();
        let served = served.await.unwrap();
        // Every request was answered and counted, the script went round
        // more than once, and exactly the one wrong reply was caught (the
        // "stored" replies to STOREs of prefilled names are right too).
        assert!(served > SCRIPT_REQUESTS, "{served}");
        assert_eq!(totals.done.load(Ordering::Relaxed), served as u64);
        assert_eq!(totals.errors.load(Ordering::Relaxed), 1);
        assert_eq!(histogram.lock().await.len(), served as u64);
    }

    #[test]
    fn every_connection_gets_its_own_nonzero_seed() {
        let seeds: std::collections::HashSet<u64> = (0..10_000).map(seed).collect();
        assert_eq!(seeds.len(), 10_000);
        assert!(!seeds.contains(&0));
    }

    #[test]
    fn values_have_the_requested_size() {
        assert_eq!(value_for(7, 32).len(), 32);
        assert_eq!(value_for(123456789, 4).len(), 4);
    }
}
