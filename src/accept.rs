//! Accepting connections, bounding their number, and waiting for them to
//! finish when the server drains.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::connection::{self, Shared};
use crate::protocol::Reply;

/// Accept errors that concern the process (out of descriptors or memory)
/// are retried after a pause that doubles up to this.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves on `listeners` until `shared.shutdown.draining` is cancelled, then
/// waits for open connections to finish (they are bounded by the grace
/// period, after which `shared.shutdown.expired` fires).
pub(crate) async fn serve(
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    max_connections: usize,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut accepting = Vec::new();
    for listener in listeners {
        accepting.push(tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            slots.clone(),
            tracker.clone(),
        )));
    }
    shared.shutdown.draining.cancelled().await;
    for task in &accepting {
        task.abort();
    }
    tracker.close();
    tokio::select! {
        _ = tracker.wait() => {}
        // Past the grace period connections abandon what they wait on;
        // allow them a moment to say so, then stop regardless.
        _ = async {
            shared.shutdown.expired.cancelled().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        } => log::warn!("{} connections still open after the grace period", tracker.len()),
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(10);
    // Warn once each time the limit is reached, not once per refusal.
    let mut full = false;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) if is_per_connection(&err) => continue,
            Err(err) => {
                log::error!("accept failed: {err}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        log::debug!("connection from {peer}");
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                full = false;
                let shared = shared.clone();
                tracker.spawn(async move {
                    connection::serve(stream, shared).await;
                    drop(slot);
                });
            }
            Err(_) => {
                if !full {
                    log::warn!("max_connections reached: refusing new connections");
                    full = true;
                }
                tracker.spawn(refuse(stream));
            }
        }
    }
}

/// Errors that end one pending connection but say nothing of the listener.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn refuse(mut stream: TcpStream) {
    let mut line = Vec::new();
    Reply::TOO_MANY_CONNECTIONS.encode(&mut line);
    let said = async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), said).await;
}
