//! A channel made once and used for every round trip: how the store actor
//! hands a connection's replies and batch back.
//!
//! A `oneshot` per batch allocates its shared state each time and frees it
//! when the batch is back: at one request per round trip that was a tenth
//! of the connection's own instructions. A [`Slot`] lives as long as its
//! connection; each trip takes a [`Giver`] from it (a reference count, no
//! allocation). The actor may hand over [`parts`](Giver::part) first (the
//! replies ready while the batch waits) and ends the trip with
//! [`give`](Giver::give), or by dropping the giver.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// The receiving end, kept by its owner for every trip.
#[derive(Debug)]
pub struct Slot<T> {
    shared: Arc<Mutex<State<T>>>,
}

/// The sending end for one trip: [`part`](Self::part)s, then
/// [`give`](Self::give) the last value, or drop it, which tells the waiting
/// owner that no more will come.
#[derive(Debug)]
pub struct Giver<T> {
    shared: Arc<Mutex<State<T>>>,
    given: bool,
}

/// The Giver of the trip was dropped without giving anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped;

#[derive(Debug)]
struct State<T> {
    /// Values given and not received yet, in order (rarely more than one).
    values: VecDeque<T>,
    dropped: bool,
    /// The owner's waker, kept across trips (woken by reference, so a
    /// trip does not clone it).
    waker: Option<Waker>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            shared: Arc::new(Mutex::new(State {
                values: VecDeque::new(),
                dropped: false,
                waker: None,
            })),
        }
    }
}

/// Which slot a giver belongs to: the same for the slot and every giver
/// taken from it, for as long as the slot lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotId(usize);

impl<T> Slot<T> {
    /// This slot's identity.
    pub fn id(&self) -> SlotId {
        SlotId(Arc::as_ptr(&self.shared) as usize)
    }

    /// The sending end of the next trip. One trip at a time: take the next
    /// giver once the last one's final value was received.
    pub fn giver(&self) -> Giver<T> {
        Giver {
            shared: self.shared.clone(),
            given: false,
        }
    }

    /// Waits for this trip's next value, or for its giver to be dropped.
    pub async fn receive(&self) -> Result<T, Dropped> {
        poll_fn(|cx| {
            let mut state = lock(&self.shared);
            if let Some(value) = state.values.pop_front() {
                return Poll::Ready(Ok(value));
            }
            if std::mem::take(&mut state.dropped) {
                return Poll::Ready(Err(Dropped));
            }
            if !state
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

impl<T> Giver<T> {
    /// Hands `value` to the slot's owner and wakes it; more follow.
    pub fn part(&self, value: T) {
        let mut state = lock(&self.shared);
        state.values.push_back(value);
        wake(state);
    }

    /// Hands the trip's last value to the slot's owner and wakes it.
    pub fn give(mut self, value: T) {
        self.given = true;
        self.part(value);
    }

    /// Whether the slot's owner is gone (nobody will receive what is
    /// given): the owner drops its slot when its client has left.
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }

    /// Whether the owner has received everything given so far.
    pub fn is_drained(&self) -> bool {
        lock(&self.shared).values.is_empty()
    }

    /// The slot this giver belongs to.
    pub fn slot_id(&self) -> SlotId {
        SlotId(Arc::as_ptr(&self.shared) as usize)
    }
}

impl<T> Drop for Giver<T> {
    fn drop(&mut self) {
        if !self.given {
            let mut state = lock(&self.shared);
            state.dropped = true;
            wake(state);
        }
    }
}

/// Wakes the owner, by reference and under the lock: a tokio waker only
/// schedules the task, and never takes this lock.
fn wake<T>(state: MutexGuard<'_, State<T>>) {
    if let Some(waker) = &state.waker {
        waker.wake_by_ref();
    }
}

/// The state's lock. Nothing panics while holding it (plain moves of an
/// `Option`), but a poisoned lock still holds consistent data.
fn lock<T>(shared: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wake-up that never comes fails the test instead of hanging it.
    async fn within_10s<F: std::future::Future>(future: F) -> F::Output {
        tokio::time::timeout(std::time::Duration::from_secs(10), future)
            .await
            .expect("woken within 10 s")
    }

    #[tokio::test]
    async fn a_slot_carries_one_value_per_trip_across_tasks() {
        let slot = Slot::default();
        for trip in 0..3 {
            let giver = slot.giver();
            let task = tokio::spawn(async move {
                tokio::task::yield_now().await;
                giver.give(trip);
            });
            assert_eq!(within_10s(slot.receive()).await, Ok(trip));
            task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_dropped_giver_ends_the_wait_and_the_next_trip_works() {
        let slot: Slot<u32> = Slot::default();
        let giver = slot.giver();
        let task = tokio::spawn(async move {
            tokio::task::yield_now().await;
            drop(giver);
        });
        assert_eq!(within_10s(slot.receive()).await, Err(Dropped));
        task.await.unwrap();
        let giver = slot.giver();
        giver.give(7);
        assert_eq!(slot.receive().await, Ok(7));
    }

    #[tokio::test]
    async fn parts_arrive_in_order_before_the_last_value() {
        let slot = Slot::default();
        let giver = slot.giver();
        giver.part(1);
        giver.part(2);
        assert!(!giver.is_abandoned());
        giver.give(3);
        for expected in 1..=3 {
            assert_eq!(within_10s(slot.receive()).await, Ok(expected));
        }
        let giver = slot.giver();
        drop(slot);
        assert!(giver.is_abandoned());
    }
}
