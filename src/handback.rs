//! A one-value channel made once and used for every round trip: how the
//! store actor hands a connection's batch back.
//!
//! A `oneshot` per batch allocates its shared state each time and frees it
//! when the batch is back: at one request per round trip that was a tenth
//! of the connection's own instructions. A [`Slot`] lives as long as its
//! connection; each trip takes a [`Giver`] from it (a reference count, no
//! allocation), which the actor uses or drops.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// The receiving end, kept by its owner for every trip.
#[derive(Debug)]
pub struct Slot<T> {
    shared: Arc<Mutex<State<T>>>,
}

/// The sending end for one trip: [`give`](Self::give) it a value, or drop
/// it, which tells the waiting owner that none will come.
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
    value: Option<T>,
    dropped: bool,
    /// The owner's waker, kept across trips (woken by reference, so a
    /// trip does not clone it).
    waker: Option<Waker>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            shared: Arc::new(Mutex::new(State {
                value: None,
                dropped: false,
                waker: None,
            })),
        }
    }
}

impl<T> Slot<T> {
    /// The sending end of the next trip. One trip at a time: a value given
    /// before the last one was received replaces it.
    pub fn giver(&self) -> Giver<T> {
        Giver {
            shared: self.shared.clone(),
            given: false,
        }
    }

    /// Waits for this trip's value, or for its giver to be dropped.
    pub async fn receive(&self) -> Result<T, Dropped> {
        poll_fn(|cx| {
            let mut state = lock(&self.shared);
            if let Some(value) = state.value.take() {
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
    /// Hands `value` to the slot's owner and wakes it.
    pub fn give(mut self, value: T) {
        self.given = true;
        let mut state = lock(&self.shared);
        state.value = Some(value);
        wake(state);
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
}
