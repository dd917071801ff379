//! How the server shuts down: two one-way flags every connection watches.
//!
//! A connection looks at both flags on every turn of its loop, so looking
//! must cost next to nothing. A `CancellationToken` alone does not: asking
//! it whether it was cancelled takes a mutex, and polling a registered
//! waiter takes its waiter list's lock, a lock and an unlock per request
//! on the hot path. A [`Flag`] keeps the token for waking waiters and adds
//! an atomic that answers the question with one load; a [`FlagWatch`]
//! registers with the token once and afterwards only loads the atomic.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{
    CancellationToken, WaitForCancellationFuture, WaitForCancellationFutureOwned,
};

/// How the server shuts down, shared by all connections.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// SIGTERM received: stop accepting, close idle connections, answer what
    /// was received, refuse what arrives later.
    pub draining: Flag,
    /// The grace period is over: abandon validations and blocked writes.
    pub expired: Flag,
}

/// A flag raised once and never lowered.
#[derive(Debug, Clone, Default)]
pub struct Flag {
    raised: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Flag {
    /// Raises the flag and wakes everything waiting on it.
    pub fn raise(&self) {
        // The atomic first: a watcher woken by the token must find it set
        // (see `FlagWatch::poll`).
        self.raised.store(true, Ordering::SeqCst);
        self.token.cancel();
    }

    /// Whether the flag was raised: one atomic load.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Waits for the flag once (where waiting is rare: registering costs
    /// a lock).
    pub fn raised(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// A waiter to poll again and again, as a connection's loop does.
    pub fn watch(&self) -> FlagWatch {
        FlagWatch {
            raised: self.raised.clone(),
            wait: Box::pin(self.token.clone().cancelled_owned()),
            waker: None,
        }
    }
}

/// Waits for a [`Flag`]; polled again after it returned `Pending`, it only
/// loads the flag's atomic, unless the flag is up.
///
/// Sound because the token keeps the waker of the last poll that reached
/// it and wakes it when the flag is raised; a poll with a waker that would
/// wake the same task needs nothing new from the token, and the flag's
/// atomic is set before the token is cancelled, so that wake-up (or any
/// later poll) sees it and polls the token, which is then ready. A poll
/// with another waker goes to the token.
#[derive(Debug)]
pub struct FlagWatch {
    raised: Arc<AtomicBool>,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The waker the token holds, once polled.
    waker: Option<Waker>,
}

impl FlagWatch {
    fn poll_raised(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let registered = self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if registered && !self.raised.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        self.waker = Some(cx.waker().clone());
        self.wait.as_mut().poll(cx)
    }
}

impl Future for &mut FlagWatch {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        (**self).poll_raised(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_polled_many_times_wakes_when_the_flag_is_raised() {
        let flag = Flag::default();
        let mut watch = flag.watch();
        for _ in 0..3 {
            // Pending, repeatedly, while the flag is down.
            assert!(poll_once(&mut watch).is_pending());
        }
        let raiser = flag.clone();
        let task = tokio::spawn(async move {
            let mut watch = raiser.watch();
            (&mut watch).await;
            raiser.is_raised()
        });
        tokio::task::yield_now().await;
        assert!(!flag.is_raised());
        flag.raise();
        assert!(flag.is_raised());
        let woken = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        assert!(woken.expect("the waiting task was woken").unwrap());
        assert!(poll_once(&mut watch).is_ready());
    }

    fn poll_once(watch: &mut FlagWatch) -> Poll<()> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        watch.poll_raised(&mut cx)
    }
}
