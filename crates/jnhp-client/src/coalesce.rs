//! Writing a queue of byte strings to a stream, many per write.
//!
//! The client's request writer receives lines from every clone's task;
//! writing each line alone costs a syscall per request. Whatever has queued up while one write ran goes out in the next.

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Writes every chunk from `queue` to `out`, coalescing the chunks queued
/// meanwhile into one write. Returns `Ok` once the queue is closed and
/// drained, or the first write error.
pub(crate) async fn write_coalesced<W: AsyncWrite + Unpin>(
    out: &mut W,
    queue: &mut mpsc::UnboundedReceiver<Vec<u8>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(chunk) = queue.recv().await {
        buf.clear();
        buf.extend_from_slice(&chunk);
        while let Ok(more) = queue.try_recv() {
            buf.extend_from_slice(&more);
        }
        out.write_all(&buf).await?;
        if buf.capacity() > KEEP_CAPACITY {
            // A burst of large lines went through (values of several
            // MiB): an idle writer keeps little.
            buf = Vec::new();
        }
    }
    Ok(())
}

/// What the coalescing buffer keeps between bursts.
const KEEP_CAPACITY: usize = 64 * 1024;
