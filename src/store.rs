//! The store actor: the one task that owns the map.
//!
//! Connections never touch the map. They send the actor a [`Batch`] of parsed
//! requests through a [`StoreHandle`] and get it back with the replies already
//! encoded into the batch's output buffer. One round trip per batch (not per
//! request) keeps pipelined load cheap, and because only the actor reads and
//! writes the map, two STOREs of one name can never both win: there is no
//! lock to forget.
//!
//! A STORE that must be validated cannot be finished inside the actor (a
//! validator may take seconds), so the actor *reserves* the name and hands the
//! connection a [`Reservation`]. The connection validates outside the actor
//! and then commits or releases. Another STORE of a reserved name waits in a
//! FIFO for that outcome: [`Turn::Taken`] if the first was stored, or the
//! reservation itself ([`Turn::Yours`]) if it was rejected, so a slow invalid
//! STORE cannot lock a name away from a valid one. EXISTS and GET never wait:
//! a reserved name is not stored yet.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{ProtocolError, Reply};

/// Once a batch's encoded replies pass this many bytes, the actor stops and
/// returns the batch so the connection can write them first. This bounds a
/// connection's reply memory even when a client pipelines GETs of large
/// values and never reads (the protocol's "about 1 MiB").
pub const OUT_HIGH_WATER: usize = 1 << 20;

/// Batches queued to the actor at most; senders wait beyond it.
const QUEUE_DEPTH: usize = 4096;

type Map<V> = HashMap<Box<[u8]>, V, foldhash::fast::RandomState>;

/// One request of a batch, owning its bytes (slices of the connection's read
/// buffer: no copy until a STORE is committed).
#[derive(Debug)]
pub enum Op {
    /// `validate`: the STORE must still pass validators that cannot answer
    /// inline, so the actor reserves the name instead of storing at once.
    Store {
        name: Bytes,
        value: Bytes,
        validate: bool,
    },
    /// A STORE the inline validators already refused: answered `RARGH!`.
    Refused,
    Exists(Bytes),
    Get(Bytes),
    /// A line that did not parse: the actor encodes its `ERROR` reply in
    /// order with the others.
    Invalid(ProtocolError),
}

/// A run of requests from one connection and the buffer their replies go to.
///
/// The actor processes `ops[next..]` in order, appending replies to `out`. It
/// stops early, leaving `next` at the first unanswered op, when `out` passes
/// [`OUT_HIGH_WATER`] or when a STORE cannot be answered at once; in the
/// latter case `deferred` says what the connection must do for `ops[next]`.
#[derive(Debug, Default)]
pub struct Batch {
    pub ops: Vec<Op>,
    pub next: usize,
    pub out: BytesMut,
    pub deferred: Option<DeferredStore>,
}

impl Batch {
    /// Whether every op has been answered.
    pub fn is_done(&self) -> bool {
        self.next >= self.ops.len()
    }

    /// Empties the batch for reuse, keeping its allocations.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.next = 0;
        self.deferred = None;
    }
}

/// What the connection must do to finish a STORE the actor could not answer.
#[derive(Debug)]
pub enum DeferredStore {
    /// The name is reserved for this STORE: validate, then commit or release.
    Validate(Reservation),
    /// Another STORE of this name is being validated: await its outcome.
    Wait(oneshot::Receiver<Turn>),
}

/// The outcome a waiting STORE receives.
#[derive(Debug)]
pub enum Turn {
    /// The STORE ahead of it was stored: reply `RARGH!`.
    Taken,
    /// The STORE ahead of it was rejected: this one now holds the name.
    Yours(Reservation),
}

/// Messages that settle a reservation. They travel on an unbounded channel
/// because a `Reservation` must be able to release itself from `Drop`; the
/// channel holds at most one message per live reservation, so it is bounded
/// by the number of STOREs in flight.
enum Settle {
    Commit {
        name: Box<[u8]>,
        value: Box<[u8]>,
        done: oneshot::Sender<()>,
    },
    Release {
        name: Box<[u8]>,
    },
}

/// The exclusive right to store one name, held while a STORE is validated.
///
/// Dropping it without [`commit`](Reservation::commit) releases the name to
/// the next waiting STORE, so a cancelled or failed STORE never leaves a name
/// locked.
#[derive(Debug)]
pub struct Reservation {
    name: Option<Box<[u8]>>,
    settle: mpsc::UnboundedSender<Settle>,
}

impl std::fmt::Debug for Settle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Settle::Commit { .. } => "Commit",
            Settle::Release { .. } => "Release",
        })
    }
}

impl Reservation {
    /// Stores `value` under the reserved name. Returns once the value is in
    /// the map (and so visible to every later request).
    pub async fn commit(mut self, value: &[u8]) -> Result<(), StoreClosed> {
        let name = self.name.take().ok_or(StoreClosed)?;
        let (done, stored) = oneshot::channel();
        self.settle
            .send(Settle::Commit {
                name,
                value: value.into(),
                done,
            })
            .map_err(|_| StoreClosed)?;
        stored.await.map_err(|_| StoreClosed)
    }

    /// Gives the name up (the STORE was rejected). Same as dropping it.
    pub fn release(self) {}
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            // If the actor is gone there is nobody left to wake.
            let _ = self.settle.send(Settle::Release { name });
        }
    }
}

/// The store actor has stopped (the server is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the store has stopped")]
pub struct StoreClosed;

/// A cloneable handle to the store actor.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    batches: mpsc::Sender<(Batch, oneshot::Sender<Batch>)>,
}

impl StoreHandle {
    /// Starts an empty in-memory store on the current tokio runtime.
    pub fn spawn() -> StoreHandle {
        let (batches, batch_rx) = mpsc::channel(QUEUE_DEPTH);
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let actor = Store {
            map: Map::default(),
            pending: Map::default(),
            settle_tx,
        };
        tokio::spawn(actor.run(batch_rx, settle_rx));
        StoreHandle { batches }
    }

    /// Has the actor answer `batch.ops[batch.next..]` (see [`Batch`]).
    pub async fn execute(&self, batch: Batch) -> Result<Batch, StoreClosed> {
        let (tx, rx) = oneshot::channel();
        self.batches
            .send((batch, tx))
            .await
            .map_err(|_| StoreClosed)?;
        rx.await.map_err(|_| StoreClosed)
    }
}

struct Store {
    map: Map<Box<[u8]>>,
    /// Reserved names, each with the STOREs waiting for its outcome.
    pending: Map<VecDeque<oneshot::Sender<Turn>>>,
    /// Kept to mint reservations; also keeps the settle channel open for as
    /// long as the actor runs.
    settle_tx: mpsc::UnboundedSender<Settle>,
}

impl Store {
    async fn run(
        mut self,
        mut batches: mpsc::Receiver<(Batch, oneshot::Sender<Batch>)>,
        mut settles: mpsc::UnboundedReceiver<Settle>,
    ) {
        loop {
            tokio::select! {
                // Settle first: a commit's waiter is blocked on it.
                biased;
                Some(settle) = settles.recv() => self.settle(settle),
                msg = batches.recv() => match msg {
                    Some((mut batch, reply)) => {
                        self.process(&mut batch);
                        // The connection may have gone; its STOREs are done.
                        let _ = reply.send(batch);
                    }
                    None => break,
                },
            }
        }
        // Every handle is gone: no batch can arrive. Settle what is left so
        // no waiter hangs, then stop.
        settles.close();
        while let Some(settle) = settles.recv().await {
            self.settle(settle);
        }
    }

    fn reservation(&self, name: Box<[u8]>) -> Reservation {
        Reservation {
            name: Some(name),
            settle: self.settle_tx.clone(),
        }
    }

    fn process(&mut self, batch: &mut Batch) {
        let out = &mut batch.out;
        while batch.next < batch.ops.len() {
            if out.len() >= OUT_HIGH_WATER {
                return;
            }
            match &batch.ops[batch.next] {
                Op::Get(name) => {
                    let value = self.map.get(&name[..]).map(|v| &v[..]).unwrap_or(b"");
                    Reply::Value(value).encode(out);
                }
                Op::Exists(name) => {
                    let reply = if self.map.contains_key(&name[..]) {
                        Reply::Awesome
                    } else {
                        Reply::Rargh
                    };
                    reply.encode(out);
                }
                Op::Invalid(err) => Reply::Error(*err).encode(out),
                Op::Refused => Reply::Rargh.encode(out),
                Op::Store {
                    name,
                    value,
                    validate,
                } => {
                    if self.map.contains_key(&name[..]) {
                        Reply::Rargh.encode(out);
                    } else if let Some(waiters) = self.pending.get_mut(&name[..]) {
                        let (tx, rx) = oneshot::channel();
                        waiters.push_back(tx);
                        batch.deferred = Some(DeferredStore::Wait(rx));
                        return;
                    } else if *validate {
                        let name: Box<[u8]> = name[..].into();
                        self.pending.insert(name.clone(), VecDeque::new());
                        batch.deferred = Some(DeferredStore::Validate(self.reservation(name)));
                        return;
                    } else {
                        self.map.insert(name[..].into(), value[..].into());
                        Reply::Stored.encode(out);
                    }
                }
            }
            batch.next += 1;
        }
    }

    fn settle(&mut self, settle: Settle) {
        match settle {
            Settle::Commit { name, value, done } => {
                if let Some(waiters) = self.pending.remove(&name) {
                    for waiter in waiters {
                        let _ = waiter.send(Turn::Taken);
                    }
                }
                self.map.insert(name, value);
                let _ = done.send(());
            }
            Settle::Release { name } => {
                let Some(waiters) = self.pending.get_mut(&name) else {
                    return;
                };
                // Hand the name to the first waiter still listening.
                while let Some(waiter) = waiters.pop_front() {
                    let turn = Turn::Yours(Reservation {
                        name: Some(name.clone()),
                        settle: self.settle_tx.clone(),
                    });
                    match waiter.send(turn) {
                        Ok(()) => return,
                        Err(Turn::Yours(mut unused)) => {
                            // That STORE is gone; defuse its reservation
                            // rather than looping a Release through the queue.
                            unused.name = None;
                        }
                        Err(Turn::Taken) => {}
                    }
                }
                self.pending.remove(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch whose STOREs do (`validate`) or do not need validation.
    fn batch(ops: Vec<Op>, validate: bool) -> Batch {
        let ops = ops
            .into_iter()
            .map(|op| match op {
                Op::Store { name, value, .. } => Op::Store {
                    name,
                    value,
                    validate,
                },
                other => other,
            })
            .collect();
        Batch {
            ops,
            ..Batch::default()
        }
    }

    fn store(n: &'static str, v: &'static str) -> Op {
        Op::Store {
            name: Bytes::from_static(n.as_bytes()),
            value: Bytes::from_static(v.as_bytes()),
            validate: false,
        }
    }

    fn get(n: &'static str) -> Op {
        Op::Get(Bytes::from_static(n.as_bytes()))
    }

    #[tokio::test]
    async fn a_batch_is_answered_in_order_and_sees_its_own_stores() {
        let handle = StoreHandle::spawn();
        let ops = vec![
            get("a"),
            store("a", "x y "),
            Op::Exists(Bytes::from_static(b"a")),
            store("a", "z"),
            get("a"),
            Op::Invalid(ProtocolError::MissingName),
            Op::Refused,
        ];
        let b = handle.execute(batch(ops, false)).await.unwrap();
        assert!(b.is_done());
        assert_eq!(
            &b.out[..],
            b"\r\nW00T!\r\nAWESOME!\r\nRARGH!\r\nx y \r\nERROR missing name\r\nRARGH!\r\n"
        );
    }

    #[tokio::test]
    async fn a_rejected_reservation_passes_to_the_next_waiter() {
        let handle = StoreHandle::spawn();
        let mut first = handle
            .execute(batch(vec![store("n", "bad")], true))
            .await
            .unwrap();
        let Some(DeferredStore::Validate(res)) = first.deferred.take() else {
            panic!("expected a reservation");
        };
        let mut second = handle
            .execute(batch(vec![store("n", "good")], true))
            .await
            .unwrap();
        let Some(DeferredStore::Wait(rx)) = second.deferred.take() else {
            panic!("expected to wait");
        };
        // Reads do not wait for the pending name.
        let b = handle
            .execute(batch(
                vec![get("n"), Op::Exists(Bytes::from_static(b"n"))],
                true,
            ))
            .await
            .unwrap();
        assert_eq!(&b.out[..], b"\r\nRARGH!\r\n");

        drop(res); // rejected
        let Turn::Yours(res) = rx.await.unwrap() else {
            panic!("expected the name to pass on");
        };
        res.commit(b"good").await.unwrap();
        let b = handle.execute(batch(vec![get("n")], true)).await.unwrap();
        assert_eq!(&b.out[..], b"good\r\n");
    }

    #[tokio::test]
    async fn a_commit_answers_every_waiter_taken() {
        let handle = StoreHandle::spawn();
        let mut first = handle
            .execute(batch(vec![store("n", "1")], true))
            .await
            .unwrap();
        let Some(DeferredStore::Validate(res)) = first.deferred.take() else {
            panic!("expected a reservation");
        };
        let mut waits = Vec::new();
        for _ in 0..3 {
            let mut b = handle
                .execute(batch(vec![store("n", "2")], true))
                .await
                .unwrap();
            let Some(DeferredStore::Wait(rx)) = b.deferred.take() else {
                panic!("expected to wait");
            };
            waits.push(rx);
        }
        res.commit(b"1").await.unwrap();
        for rx in waits {
            assert!(matches!(rx.await.unwrap(), Turn::Taken));
        }
    }

    #[tokio::test]
    async fn a_waiter_that_went_away_is_skipped() {
        let handle = StoreHandle::spawn();
        let mut first = handle
            .execute(batch(vec![store("n", "1")], true))
            .await
            .unwrap();
        let Some(DeferredStore::Validate(res)) = first.deferred.take() else {
            panic!("expected a reservation");
        };
        let mut gone = handle
            .execute(batch(vec![store("n", "2")], true))
            .await
            .unwrap();
        drop(gone.deferred.take());
        let mut live = handle
            .execute(batch(vec![store("n", "3")], true))
            .await
            .unwrap();
        let Some(DeferredStore::Wait(rx)) = live.deferred.take() else {
            panic!("expected to wait");
        };
        res.release();
        assert!(matches!(rx.await.unwrap(), Turn::Yours(_)));
    }

    #[tokio::test]
    async fn replies_stop_at_the_high_water_mark() {
        let handle = StoreHandle::spawn();
        let big = "v".repeat(60_000);
        let big: &'static str = Box::leak(big.into_boxed_str());
        handle
            .execute(batch(vec![store("big", big)], false))
            .await
            .unwrap();
        let ops = (0..100).map(|_| get("big")).collect();
        let b = handle.execute(batch(ops, false)).await.unwrap();
        assert!(!b.is_done());
        assert!(b.out.len() >= OUT_HIGH_WATER && b.out.len() < OUT_HIGH_WATER + 60_003);
    }
}
