//! Writing a helper's queued request lines to its stdin, many per write.
//!
//! Connections queue lines for a helper from their own tasks; writing each
//! line alone costs a syscall per STORE. Whatever has queued up while one
//! write ran goes out in the next.
//!
//! The client crate has its own writer of the same shape for its request
//! queue: the daemon does not depend on the client crate, and the two
//! crates share no crate with I/O in which one writer could live.

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
            // A burst of large lines went through: an idle writer keeps
            // little (helpers see values of several MiB).
            buf = Vec::new();
        }
    }
    Ok(())
}

/// What the coalescing buffer keeps between bursts.
const KEEP_CAPACITY: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines queued before the writer runs leave in one write, in order;
    /// the writer ends once the queue is closed and drained.
    #[tokio::test]
    async fn queued_lines_leave_together_in_order() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for line in [&b"1 a\n"[..], b"2 b\n", b"3 c\n"] {
            tx.send(line.to_vec()).unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        write_coalesced(&mut out, &mut rx).await.unwrap();
        assert_eq!(out, b"1 a\n2 b\n3 c\n");
    }

    /// A write error ends the writer with that error.
    #[tokio::test]
    async fn write_error_is_returned() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(b"x\n".to_vec()).unwrap();
        let (mut near, far) = tokio::io::duplex(64);
        drop(far);
        let err = write_coalesced(&mut near, &mut rx).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
