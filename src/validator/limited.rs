//! Limits for a library user's validator: `timeout` and `max_concurrent`
//! with the meaning the config gives a `process` validator's `timeout_ms`
//! and `max_concurrent`, so that an in-process check can be bounded like a
//! program: a check that hangs fails (and `on_failure` decides) instead of
//! holding its STORE for ever, and a check that is expensive runs at most
//! so many times at once, the other STOREs waiting for a slot.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{Cause, Link, OnFailure, Peer, Validator, Verdict};
use crate::metrics::ValidatorStats;

/// A validator's limits. `None`: no limit (the default for library
/// validators: an in-process check is the caller's own code).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// A check not done this long after it started (after it got its
    /// slot) is abandoned: its future is dropped and the STORE gets a
    /// `timeout` failure, decided by `on_failure`.
    pub timeout: Option<Duration>,
    /// At most this many checks run at once; more STOREs wait for a slot
    /// (counted as queued in the metrics).
    pub max_concurrent: Option<usize>,
}

/// `inner` under [`Limits`].
#[derive(Debug)]
struct Limited {
    inner: Arc<dyn Validator>,
    limits: Limits,
    slots: Option<Semaphore>,
    stats: Arc<ValidatorStats>,
}

#[async_trait]
impl Validator for Limited {
    async fn validate(&self, name: &[u8], value: &[u8], peer: &Peer) -> Verdict {
        // Held until the check is done (or abandoned).
        let _slot = match &self.slots {
            None => None,
            Some(slots) => {
                self.stats.queued.fetch_add(1, Relaxed);
                let slot = slots.acquire().await;
                self.stats.queued.fetch_sub(1, Relaxed);
                // The semaphore is never closed.
                slot.ok()
            }
        };
        let check = self.inner.validate(name, value, peer);
        match self.limits.timeout {
            None => check.await,
            Some(limit) => match tokio::time::timeout(limit, check).await {
                Ok(verdict) => verdict,
                Err(_) => Verdict::Failure(
                    Cause::Timeout,
                    format!("no verdict within {} ms", limit.as_millis()),
                ),
            },
        }
    }

    fn check_now(&self, name: &[u8], value: &[u8], peer: &Peer) -> Option<Verdict> {
        // A synchronous answer is cheap by the trait's contract: no limit
        // applies to it.
        self.inner.check_now(name, value, peer)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await
    }
}

impl Link {
    /// A link for a library user's validator called `name` in logs and
    /// metrics (kind `library`), with `limits` applied to its asynchronous
    /// checks.
    pub fn with_limits(
        name: &str,
        validator: Arc<dyn Validator>,
        on_failure: OnFailure,
        limits: Limits,
    ) -> Link {
        let mut link = Link::new(name, validator, on_failure);
        if limits != Limits::default() {
            link.validator = Arc::new(Limited {
                inner: link.validator,
                limits,
                // 0 would make every STORE wait for ever: at least 1 (the
                // builder refuses 0 before it gets here).
                slots: limits
                    .max_concurrent
                    .map(|n| Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS))),
                stats: link.stats.clone(),
            });
        }
        link
    }
}
