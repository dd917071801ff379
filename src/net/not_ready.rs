//! The client ports before jnhpd can serve (the store is opening: the
//! data file replays, or PostgreSQL is being connected to).
//!
//! No client may sit connected without a reply meanwhile (docs/postgres.md,
//! Readiness). A port jnhpd binds itself is bound but not listening
//! (the server's `bind`): connecting is refused until [`NotReady::ready`]
//! listens, so a client fails at once and can try another front-end. A
//! socket handed over already listening (by systemd, whose backlog it is)
//! cannot be made to refuse: until ready, each client accepted on it gets
//! `ERROR storage unavailable` and is closed.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use jnhp_wire::{Reply, ServerFault};
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::net::accept::BACKLOG;

/// Connections answered at once that may still be lingering (reading what
/// the client sent, so that closing does not reset the reply away); past
/// that, a connection is closed without lingering.
const LINGERING: usize = 256;

/// How long an answered connection is read from before it is closed.
const LINGER: Duration = Duration::from_secs(1);

/// Client sockets until jnhpd can serve.
pub struct NotReady {
    /// Not listening yet, or listening and answered by a task.
    sockets: Vec<Waiting>,
    stop: CancellationToken,
}

enum Waiting {
    Bound(std::net::TcpListener),
    Answered(tokio::task::JoinHandle<io::Result<std::net::TcpListener>>),
}

impl NotReady {
    /// Starts answering on the sockets that already listen; the others
    /// stay unlistened. Call on the runtime.
    pub fn answer(sockets: Vec<std::net::TcpListener>) -> io::Result<NotReady> {
        let stop = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(LINGERING));
        let mut waiting = Vec::new();
        for socket in sockets {
            if !SockRef::from(&socket).is_listener()? {
                waiting.push(Waiting::Bound(socket));
                continue;
            }
            let socket = tokio::net::TcpListener::from_std(socket)?;
            let (stop, slots) = (stop.clone(), slots.clone());
            waiting.push(Waiting::Answered(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return socket.into_std(),
                        (stream, _) = crate::net::accept::accept(&socket) => refuse(stream, &slots),
                    }
                }
            })));
        }
        Ok(NotReady {
            sockets: waiting,
            stop,
        })
    }

    /// jnhpd can serve: stops answering, listens on the sockets that were
    /// only bound, and hands all of them back in their order.
    pub async fn ready(mut self) -> io::Result<Vec<std::net::TcpListener>> {
        self.stop.cancel();
        let mut sockets = Vec::new();
        for waiting in std::mem::take(&mut self.sockets) {
            sockets.push(match waiting {
                Waiting::Bound(socket) => {
                    listen(&socket)?;
                    socket
                }
                Waiting::Answered(task) => task.await.map_err(io::Error::other)??,
            });
        }
        Ok(sockets)
    }
}

impl Drop for NotReady {
    /// A start that failed: the answering tasks stop (and close their
    /// sockets) rather than answer for a server that will never serve.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Listens on `socket` unless it already does (a socket handed over, or
/// bound and listened on by a library user).
pub fn listen(socket: &std::net::TcpListener) -> io::Result<()> {
    let socket = SockRef::from(socket);
    if !socket.is_listener()? {
        socket.listen(BACKLOG)?;
    }
    Ok(())
}

/// Sends `ERROR storage unavailable` and closes, after reading briefly
/// what the client sent (closing with unread input would reset the
/// connection, and the reply could be lost). Bounded: at most
/// [`LINGERING`] such connections at a time, each for [`LINGER`]; past
/// that, the reply is tried once without waiting and the connection
/// closed.
fn refuse(mut stream: tokio::net::TcpStream, slots: &Arc<Semaphore>) {
    let mut reply = Vec::new();
    Reply::Fault(&ServerFault::StorageUnavailable).encode(&mut reply);
    let Ok(slot) = slots.clone().try_acquire_owned() else {
        let _ = stream.try_write(&reply);
        return;
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(LINGER, async {
            stream.write_all(&reply).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
        drop(slot);
    });
}
