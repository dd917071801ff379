//! Waiting for an optional deadline.

use tokio::time::Instant;

/// Sleeps until `at`, or forever when there is no deadline (an idle
/// timeout of 0, a pool with nothing in flight): one arm of a `select!`
/// that may or may not have a timer.
pub(crate) async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
