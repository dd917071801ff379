//! The load generators: closed loop (each connection waits for its
//! batch), scripted (prefilled names, a script sent round and round) and
//! open loop (a fixed schedule), and reading the replies.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::WriteHalf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::tls::Conn;
use tokio::sync::Mutex;

use super::*;

/// Reads replies until at most `leave` are still expected, calling
/// `each(Replies)` per run of replies that came in one read and were sent
/// together.
///
/// The generator's own cost per request caps what a benchmark can show
/// (it has one core, the server another), so this reads straight into
/// `buf` (no zeroed scratch buffer, no second copy), takes the time once
/// per read (a reply's latency runs from its request's send to the read
/// that brought it), and reports the replies of one batch at once.
pub(super) async fn read_replies(
    read: &mut (impl AsyncRead + Unpin),
    table: &Table,
    buf: &mut Vec<u8>,
    expects: &mut VecDeque<(Op, Expect, Instant)>,
    leave: usize,
    mut each: impl FnMut(Replies),
) -> Result<(), String> {
    let mut arrived = Instant::now();
    while expects.len() > leave {
        let mut used = 0;
        let mut run: Option<(Instant, Replies)> = None;
        while let Some((op, expect, sent)) = expects.front() {
            let Some((len, ok)) =
                take_reply(table.protocol, *op, expect, &table.values, &buf[used..])
            else {
                break;
            };
            used += len;
            let sent = *sent;
            expects.pop_front();
            match &mut run {
                Some((at, replies)) if *at == sent => replies.add(ok),
                _ => {
                    if let Some((_, replies)) = run.take() {
                        each(replies);
                    }
                    let mut replies = Replies {
                        count: 0,
                        wrong: 0,
                        latency: arrived.saturating_duration_since(sent),
                    };
                    replies.add(ok);
                    run = Some((sent, replies));
                }
            }
            if expects.len() <= leave {
                break;
            }
        }
        if let Some((_, replies)) = run {
            each(replies);
        }
        buf.drain(..used);
        if expects.len() <= leave {
            break;
        }
        buf.reserve(READ_CHUNK);
        let n = read.read_buf(buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        arrived = Instant::now();
    }
    Ok(())
}

/// Bytes asked of the socket per read.
pub(super) const READ_CHUNK: usize = 64 * 1024;

/// Replies that share a latency (sent together, read together).
pub(super) struct Replies {
    pub(super) count: u64,
    /// Replies that were not what the workload implies.
    pub(super) wrong: u64,
    pub(super) latency: Duration,
}

impl Replies {
    pub(super) fn add(&mut self, ok: bool) {
        self.count += 1;
        self.wrong += u64::from(!ok);
    }
}

/// The closed loop that draws each batch as it goes: for unique STOREs,
/// whose names must not repeat (over prefilled names, [`scripted_loop`]).
pub(super) async fn closed_loop(
    stream: Conn,
    mut workload: Workload,
    pipeline: usize,
    deadline: Instant,
    totals: Arc<Totals>,
    histogram: Arc<Mutex<Histogram<u64>>>,
) -> Result<(), String> {
    // Writes, then reads: no need to split the stream (and lock its
    // halves on every poll).
    let mut stream = stream;
    let mut recorder = Recorder::new(totals, histogram)?;
    let (mut out, mut buf, mut expects) = (Vec::new(), Vec::new(), VecDeque::new());
    while Instant::now() < deadline {
        out.clear();
        let sent = Instant::now();
        for _ in 0..pipeline {
            let (op, expect) = workload.next(&mut out);
            expects.push_back((op, expect, sent));
        }
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        read_replies(
            &mut stream,
            &workload.table,
            &mut buf,
            &mut expects,
            0,
            |replies| recorder.add(replies),
        )
        .await?;
        recorder.publish();
    }
    recorder.finish().await
}

/// Requests per connection in a [`Script`] (rounded up to whole batches).
pub(super) const SCRIPT_REQUESTS: usize = 4096;

/// A closed loop's requests, drawn from the workload once and encoded back
/// to back, with the replies they should get: a connection sends slices
/// of it, batch after batch, round and round. What comes back is compared
/// with the expected bytes in one comparison per read; only when they
/// differ are the replies parsed one by one ([`take_reply`]), so every
/// wrong reply is still found and counted. (Each connection draws its own
/// script, as it drew its own requests before.)
pub(super) struct Script {
    pub(super) requests: Vec<u8>,
    pub(super) replies: Vec<u8>,
    /// `ends[i]`: where request `i` and its expected reply end in the two
    /// buffers.
    pub(super) ends: Vec<(usize, usize)>,
    /// What each request is and expects, for the one-by-one path.
    pub(super) expects: Vec<(Op, Expect)>,
}

impl Script {
    pub(super) fn new(workload: &mut Workload, pipeline: usize) -> Script {
        let len = SCRIPT_REQUESTS.div_ceil(pipeline) * pipeline;
        let mut script = Script {
            requests: Vec::new(),
            replies: Vec::new(),
            ends: Vec::with_capacity(len),
            expects: Vec::with_capacity(len),
        };
        for _ in 0..len {
            let (op, expect) = workload.next(&mut script.requests);
            workload.table.likely_reply(&expect, &mut script.replies);
            script
                .ends
                .push((script.requests.len(), script.replies.len()));
            script.expects.push((op, expect));
        }
        script
    }

    /// Where requests `first..first + count` lie in `requests`, and their
    /// replies in `replies`.
    pub(super) fn batch(&self, first: usize, count: usize) -> (Range<usize>, Range<usize>) {
        let (start_request, start_reply) = match first {
            0 => (0, 0),
            _ => self.ends[first - 1],
        };
        let (end_request, end_reply) = self.ends[first + count - 1];
        (start_request..end_request, start_reply..end_reply)
    }
}

/// The closed loop over a [`Script`].
pub(super) async fn scripted_loop(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    script: &Script,
    table: &Table,
    pipeline: usize,
    deadline: Instant,
    recorder: &mut Recorder,
) -> Result<(), String> {
    let (mut buf, mut expects) = (Vec::new(), VecDeque::new());
    let mut first = 0;
    while Instant::now() < deadline {
        let (requests, replies) = script.batch(first, pipeline);
        let want = &script.replies[replies];
        let sent = Instant::now();
        stream
            .write_all(&script.requests[requests])
            .await
            .map_err(|e| e.to_string())?;
        // Read while what came is a strict prefix of what should come.
        let mut arrived = sent;
        while buf.len() < want.len() && want.starts_with(&buf) {
            buf.reserve(READ_CHUNK);
            let n = stream.read_buf(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            arrived = Instant::now();
        }
        if buf.starts_with(want) {
            buf.drain(..want.len());
            recorder.add(Replies {
                count: pipeline as u64,
                wrong: 0,
                latency: arrived.saturating_duration_since(sent),
            });
        } else {
            // Something else came: parse the batch's replies one by one.
            let batch = &script.expects[first..first + pipeline];
            expects.extend(batch.iter().map(|(op, expect)| (*op, expect.clone(), sent)));
            read_replies(&mut stream, table, &mut buf, &mut expects, 0, |replies| {
                recorder.add(replies)
            })
            .await?;
        }
        recorder.publish();
        first = (first + pipeline) % script.expects.len();
    }
    Ok(())
}

/// A connection's count of replies and their latencies: published to the
/// run's totals after every batch (the progress line reads them), merged
/// into the run's histogram at the end.
pub(super) struct Recorder {
    pub(super) local: Histogram<u64>,
    pub(super) done: u64,
    pub(super) wrong: u64,
    pub(super) totals: Arc<Totals>,
    pub(super) histogram: Arc<Mutex<Histogram<u64>>>,
}

impl Recorder {
    pub(super) fn new(
        totals: Arc<Totals>,
        histogram: Arc<Mutex<Histogram<u64>>>,
    ) -> Result<Recorder, String> {
        Ok(Recorder {
            local: Histogram::<u64>::new(3).map_err(|e| e.to_string())?,
            done: 0,
            wrong: 0,
            totals,
            histogram,
        })
    }

    pub(super) fn add(&mut self, replies: Replies) {
        self.done += replies.count;
        self.wrong += replies.wrong;
        let _ = self
            .local
            .record_n(replies.latency.as_micros() as u64, replies.count);
    }

    pub(super) fn publish(&mut self) {
        let done = std::mem::take(&mut self.done);
        let wrong = std::mem::take(&mut self.wrong);
        self.totals.done.fetch_add(done, Ordering::Relaxed);
        self.totals.errors.fetch_add(wrong, Ordering::Relaxed);
    }

    pub(super) async fn finish(mut self) -> Result<(), String> {
        self.publish();
        self.histogram
            .lock()
            .await
            .add(&self.local)
            .map_err(|e| e.to_string())
    }
}

pub(super) async fn open_loop(
    stream: Conn,
    workload: Workload,
    rate: f64,
    deadline: Instant,
    totals: Arc<Totals>,
    histogram: Arc<Mutex<Histogram<u64>>>,
) -> Result<(), String> {
    let table = workload.table.clone();
    let (mut read, write) = tokio::io::split(stream);
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let expects = Arc::new(std::sync::Mutex::new(VecDeque::new()));
    let sender = tokio::spawn(send_on_schedule(
        write,
        workload,
        interval,
        deadline,
        expects.clone(),
    ));
    let mut recorder = Recorder::new(totals, histogram)?;
    let mut buf = Vec::new();
    loop {
        // Match whole replies in the buffer to the oldest sent requests.
        let mut used = 0;
        loop {
            let mut queue = expects.lock().unwrap_or_else(|e| e.into_inner());
            let Some((op, expect, scheduled)) = queue.front() else {
                break;
            };
            let Some((len, ok)) =
                take_reply(table.protocol, *op, expect, &table.values, &buf[used..])
            else {
                break;
            };
            recorder.add(Replies {
                count: 1,
                wrong: u64::from(!ok),
                latency: scheduled.elapsed(),
            });
            queue.pop_front();
            used += len;
        }
        recorder.publish();
        buf.drain(..used);
        let finished =
            sender.is_finished() && expects.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        if finished {
            break;
        }
        buf.reserve(READ_CHUNK);
        let read = tokio::time::timeout(Duration::from_millis(50), read.read_buf(&mut buf)).await;
        match read {
            Ok(Ok(0)) => return Err("the server closed the connection".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {}
        }
    }
    sender.await.map_err(|e| e.to_string())??;
    recorder.finish().await
}

/// Sends one request per `interval`, on schedule: a late tick sends every
/// request that is due (recording each one's scheduled time).
pub(super) async fn send_on_schedule(
    mut write: WriteHalf<Conn>,
    mut workload: Workload,
    interval: Duration,
    deadline: Instant,
    expects: Arc<std::sync::Mutex<VecDeque<(Op, Expect, Instant)>>>,
) -> Result<(), String> {
    let mut next = Instant::now();
    let mut out = Vec::new();
    while next < deadline {
        tokio::time::sleep_until(next.into()).await;
        out.clear();
        let now = Instant::now();
        {
            let mut queue = expects.lock().unwrap_or_else(|e| e.into_inner());
            while next <= now && next < deadline {
                let (op, expect) = workload.next(&mut out);
                queue.push_back((op, expect, next));
                next += interval;
            }
        }
        write.write_all(&out).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
