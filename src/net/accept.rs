//! Accepting connections, bounding their number, and waiting for them to
//! finish when the server drains.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::metrics::Admission;
use crate::net::connection::{self, ConnectionContext, Stream};
use crate::net::tls::Acceptor;
use crate::protocol::Reply;
use crate::validator::Peer;

/// The listen backlog: bursts of connections are queued, not dropped.
pub const BACKLOG: i32 = 1024;

/// A listening socket and, for a TLS port, the acceptor its connections
/// go through first.
pub(crate) struct Listener {
    pub socket: TcpListener,
    pub tls: Option<Arc<Acceptor>>,
}

/// Accept errors that concern the process (out of descriptors or memory)
/// are retried after a pause that doubles up to this.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves on `listeners` until `shared.shutdown.draining` is cancelled, then
/// waits for open connections to finish (they are bounded by the grace
/// period, after which `shared.shutdown.expired` fires).
pub(crate) async fn serve(
    listeners: Vec<Listener>,
    shared: Arc<ConnectionContext>,
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
    let give_back = tokio::spawn({
        let shared = shared.clone();
        async move {
            let footprint = || {
                let open = shared.metrics.connections.load(Relaxed).max(0) as usize;
                shared.inflight.used() + open * connection::READ_CHUNK
            };
            crate::net::inflight::give_back_after_bursts(&shared.inflight, footprint).await
        }
    });
    shared.shutdown.draining.raised().await;
    for task in &accepting {
        task.abort();
    }
    give_back.abort();
    tracker.close();
    tokio::select! {
        _ = tracker.wait() => {}
        // Past the grace period connections abandon what they wait on;
        // allow them a moment to say so, then stop regardless.
        _ = async {
            shared.shutdown.expired.raised().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        } => log::warn!("{} connections still open after the grace period", tracker.len()),
    }
    Ok(())
}

async fn accept_loop(
    listener: Listener,
    shared: Arc<ConnectionContext>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    // Warn once each time the limit is reached, not once per refusal.
    let mut full = false;
    loop {
        let (stream, peer) = accept(&listener.socket).await;
        log::debug!("connection from {peer}");
        let _ = stream.set_nodelay(true);
        // A handshake in progress is a connection: it holds a slot.
        let slot = slots.clone().try_acquire_owned();
        let metrics = &shared.metrics;
        metrics.connections_total[Admission::of(slot.is_ok())].fetch_add(1, Relaxed);
        if slot.is_ok() {
            full = false;
        } else if !full {
            log::warn!("max_connections reached: refusing new connections");
            full = true;
        }
        let (shared, tls) = (shared.clone(), listener.tls.clone());
        tracker.spawn(async move {
            match (slot, tls) {
                (Ok(_slot), None) => connection::serve(stream, plain_peer(peer), shared).await,
                (Ok(_slot), Some(tls)) => {
                    if let Some((stream, peer)) = handshake(stream, peer, &tls, &shared).await {
                        connection::serve(stream, peer, shared).await;
                    }
                }
                (Err(_), None) => refuse(stream, &shared).await,
                (Err(_), Some(tls)) => {
                    if let Some((stream, _)) = handshake(stream, peer, &tls, &shared).await {
                        refuse(stream, &shared).await;
                    }
                }
            }
        });
    }
}

/// Errors that end one pending connection but say nothing of the listener.
/// The next connection on `socket`. An error of one connection is skipped;
/// any other (out of descriptors: EMFILE, ENFILE, ENOBUFS) would fail
/// again at once, so it is retried after a pause that doubles up to
/// [`MAX_ACCEPT_BACKOFF`] instead of spinning.
pub(crate) async fn accept(socket: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_millis(10);
    loop {
        match socket.accept().await {
            Ok(accepted) => return accepted,
            Err(err) if is_per_connection(&err) => continue,
            Err(err) => {
                log::error!("accept failed: {err}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

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

fn plain_peer(addr: SocketAddr) -> Peer {
    Peer {
        addr: Some(addr),
        cert_subject: None,
    }
}

/// The TLS handshake, bounded by `handshake_timeout_secs` and abandoned
/// when the server drains. A client that fails it (plain text, no or a
/// wrong certificate, an old protocol version) is just disconnected.
async fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
    tls: &Acceptor,
    shared: &ConnectionContext,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Peer)> {
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(tls.handshake_timeout, tls.get().accept(stream)) => accepted,
        () = shared.shutdown.draining.raised() => return None,
    };
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            log::debug!("TLS handshake with {addr} failed: {err}");
            return None;
        }
        Err(_) => {
            log::debug!("TLS handshake with {addr} timed out");
            return None;
        }
    };
    let cert_subject = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(crate::net::tls::subject);
    let peer = Peer {
        addr: Some(addr),
        cert_subject,
    };
    Some((stream, peer))
}

async fn refuse<S: Stream>(mut stream: S, shared: &ConnectionContext) {
    let mut tally = crate::metrics::Tally::default();
    tally.server_error(None, crate::metrics::ServerError::TooManyConnections);
    shared.metrics.fold(&mut tally, None);
    let mut line = Vec::new();
    Reply::TOO_MANY_CONNECTIONS.encode(&mut line);
    let said = async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), said).await;
}
