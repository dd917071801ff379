//! A JNHP/1 client: typed requests, many in flight on one connection.
//!
//! JNHP replies carry no request id: the only way to match a reply to its
//! request is order. The client keeps a FIFO of pending requests; every
//! reply resolves exactly the oldest one. Anything that breaks that
//! accounting (a reply when nothing is pending, a reply that cannot answer
//! the request at the head, a lost connection) fails the connection and
//! every pending request with an error, never a panic, and never a reply
//! handed to the wrong request.
//!
//! ```no_run
//! # async fn demo() -> Result<(), jnhp_client::ClientError> {
//! use std::time::Duration;
//! use jnhp_client::Client;
//!
//! let client = Client::connect("127.0.0.1:8111", Duration::from_secs(5)).await?;
//! if client.store(b"greeting", b"hello, world").await? {
//!     println!("stored");
//! }
//! assert!(client.exists(b"greeting").await?);
//! let value = client.get(b"greeting").await?;
//! assert_eq!(value.as_deref(), Some(&b"hello, world"[..]));
//! # Ok(()) }
//! ```
//!
//! Requests may be issued concurrently from many tasks (the client is
//! cheap to clone); they are pipelined on the one connection:
//!
//! ```no_run
//! # async fn demo(client: jnhp_client::Client) -> Result<(), jnhp_client::ClientError> {
//! let (a, b) = tokio::join!(client.get(b"a"), client.get(b"b"));
//! println!("{:?} {:?}", a?, b?);
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use jnhp_wire::{self as protocol, Limits, Request};

mod coalesce;

/// The longest reply line accepted: the largest value a server may be
/// configured to hold and its line end.
const MAX_REPLY: u64 = Limits::WIDEST.max_value_bytes as u64 + 2;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server answered `ERROR <reason>`.
    #[error("server error: {0}")]
    Server(String),
    /// The request cannot be sent (a name with a blank, an empty value, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Which reply a pending request expects.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Store,
    Exists,
    Get,
}

/// A decoded reply.
#[derive(Debug)]
enum Answer {
    Yes,
    No,
    Value(Option<Vec<u8>>),
}

type Pending = (Kind, oneshot::Sender<Result<Answer, ClientError>>);

#[derive(Default)]
struct State {
    pending: VecDeque<Pending>,
    /// Set once the connection is unusable; every later call gets it.
    failed: Option<ClientError>,
}

struct Shared {
    state: Mutex<State>,
    writer: mpsc::UnboundedSender<Vec<u8>>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a panic in another caller; the queue itself
        // is still consistent (every change is a single push or pop).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails the connection: every pending request and every later call.
    fn fail(&self, error: ClientError) {
        let mut state = self.state();
        if state.failed.is_none() {
            state.failed = Some(error.clone());
        }
        for (_, reply) in state.pending.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// A connection to a JNHP server. Clones share the connection.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    timeout: Duration,
}

impl Client {
    /// Connects within `timeout`; `timeout` also bounds each request.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let stream = connect_tcp(addr, timeout).await?;
        Ok(Client::from_stream(stream, timeout))
    }

    /// Connects and speaks JNHP/1 over TLS, checking the server's
    /// certificate for `server_name` against `config`'s roots (and
    /// presenting a client certificate if `config` has one). The handshake
    /// is bounded by `timeout` too.
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        addr: &str,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let stream = tls_stream(addr, server_name, config, timeout).await?;
        Ok(Client::from_stream(stream, timeout))
    }

    /// Wraps a connected stream (TCP, TLS, or anything that reads and
    /// writes bytes).
    pub fn from_stream<S>(stream: S, timeout: Duration) -> Client
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        let (writer, lines) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            writer,
        });
        tokio::spawn(write_requests(write, lines, shared.clone()));
        tokio::spawn(read_replies(read, shared.clone()));
        Client { shared, timeout }
    }

    /// `STORE`: `Ok(true)` stored (W00T!), `Ok(false)` not stored (RARGH!).
    pub async fn store(&self, name: &[u8], value: &[u8]) -> Result<bool, ClientError> {
        match self
            .call(Request::Store { name, value }, Kind::Store)
            .await?
        {
            Answer::Yes => Ok(true),
            _ => Ok(false),
        }
    }

    /// `EXISTS`: whether the name is stored.
    pub async fn exists(&self, name: &[u8]) -> Result<bool, ClientError> {
        match self.call(Request::Exists { name }, Kind::Exists).await? {
            Answer::Yes => Ok(true),
            _ => Ok(false),
        }
    }

    /// `GET`: the value, or `None` if the name is absent.
    pub async fn get(&self, name: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        match self.call(Request::Get { name }, Kind::Get).await? {
            Answer::Value(value) => Ok(value),
            _ => Err(ClientError::Protocol("not a GET reply".into())),
        }
    }

    async fn call(&self, request: Request<'_>, kind: Kind) -> Result<Answer, ClientError> {
        let mut line = BytesMut::new();
        request.encode(&mut line);
        // Check locally what the server would refuse, so that every request
        // sent gets a reply of its own kind (limits are the protocol's
        // widest; the server may be stricter and answer ERROR).
        match protocol::parse(&line[..line.len() - 2], &Limits::WIDEST) {
            Err(e) => return Err(ClientError::Invalid(e.to_string())),
            // The line must read back as the very request: a blank in a
            // name, or at the start of a value, would silently change it.
            Ok(Some(parsed)) if parsed == request => {}
            Ok(_) => {
                return Err(ClientError::Invalid(
                    "a name may not contain blanks, and a value may not start with one".into(),
                ));
            }
        }
        let (reply, answer) = oneshot::channel();
        {
            // Queue and send under one lock: the FIFO's order is the order
            // on the wire.
            let mut state = self.shared.state();
            if let Some(error) = &state.failed {
                return Err(error.clone());
            }
            state.pending.push_back((kind, reply));
            if self.shared.writer.send(line.to_vec()).is_err() {
                drop(state);
                self.shared
                    .fail(ClientError::Lost("the connection is closed".into()));
            }
        }
        // A request that times out keeps its place in the FIFO, so its late
        // reply is consumed, not handed to the next request.
        match tokio::time::timeout(self.timeout, answer).await {
            Err(_) => Err(ClientError::Timeout(self.timeout)),
            Ok(Err(_)) => Err(ClientError::Lost("the connection is closed".into())),
            Ok(Ok(result)) => result,
        }
    }
}

/// A TCP connection to `addr` within `timeout`, with Nagle off.
///
/// `addr` is `host:port`: an IPv4 address, an IPv6 address in brackets
/// (`[::1]:8111`) or a host name, which is resolved (tokio's lookup, the
/// system resolver) and each of its addresses tried in turn until one
/// connects; `timeout` bounds the lookup and every attempt together. Each
/// address gets an equal share of the time left, so one that never
/// answers (a dead host, a firewall that drops) cannot use up the time of
/// the addresses after it.
pub async fn connect_tcp(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
    let connect_error = |reason: String| ClientError::Connect {
        addr: addr.to_string(),
        reason,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let attempt = async {
        let candidates: Vec<std::net::SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| connect_error(lookup_failure(addr, &e)))?
            .collect();
        let mut failures = Vec::new();
        for (i, candidate) in candidates.iter().enumerate() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // At least 1: `i` counts up to the last candidate.
            let share = left / (candidates.len() - i) as u32;
            match tokio::time::timeout(share, TcpStream::connect(candidate)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => failures.push(format!("{candidate}: {e}")),
                Err(_) => failures.push(format!("{candidate}: timed out after {share:?}")),
            }
        }
        Err(connect_error(match failures.len() {
            0 => "the name resolves to no address".to_string(),
            // One address: it is `addr` or what its name resolved to.
            1 => failures
                .remove(0)
                .split_once(": ")
                .map_or_else(String::new, |(_, e)| e.to_string()),
            _ => failures.join("; "),
        }))
    };
    // The last attempt ends at the deadline itself: a moment later, so
    // its own message (naming every address) wins.
    let stream = tokio::time::timeout_at(deadline + Duration::from_millis(100), attempt)
        .await
        .map_err(|_| connect_error(format!("timed out after {timeout:?}")))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Why `addr` gave no address to connect to, in words an operator can act
/// on: not of the form `host:port` at all, or a host the resolver does not
/// know.
fn lookup_failure(addr: &str, error: &std::io::Error) -> String {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            format!("cannot resolve the host name {host}: {error}")
        }
        _ => {
            "not host:port (for example 127.0.0.1:8111, [::1]:8111 or db.example:8111)".to_string()
        }
    }
}

/// A TLS stream to `addr` for `server_name`, handshake done within
/// `timeout` (for callers that want the raw stream: `jnhp batch`, the
/// load generator).
#[cfg(feature = "tls")]
pub async fn tls_stream(
    addr: &str,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
    let connect_error = |reason: String| ClientError::Connect {
        addr: addr.to_string(),
        reason,
    };
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| connect_error(format!("server name {server_name:?}: {e}")))?;
    let stream = connect_tcp(addr, timeout).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    tokio::time::timeout(timeout, connector.connect(name, stream))
        .await
        .map_err(|_| connect_error(format!("TLS handshake timed out after {timeout:?}")))?
        .map_err(|e| connect_error(format!("TLS handshake: {e}")))
}

async fn write_requests<W: AsyncWrite + Unpin>(
    mut write: W,
    mut lines: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    if let Err(e) = crate::coalesce::write_coalesced(&mut write, &mut lines).await {
        return shared.fail(ClientError::Lost(e.to_string()));
    }
    // Every Client is gone: tell the server we are done.
    let _ = write.shutdown().await;
}

async fn read_replies<R: AsyncRead + Unpin>(read: R, shared: Arc<Shared>) {
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_REPLY)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) => return shared.fail(ClientError::Lost("closed by the server".into())),
            Err(e) => return shared.fail(ClientError::Lost(e.to_string())),
            Ok(_) => {}
        }
        let Some(body) = line.strip_suffix(b"\r\n") else {
            return shared.fail(ClientError::Protocol(if line.len() as u64 >= MAX_REPLY {
                "reply too long".into()
            } else {
                format!(
                    "reply {:?} does not end with CRLF",
                    String::from_utf8_lossy(&line)
                )
            }));
        };
        let head = shared.state().pending.pop_front();
        let Some((kind, reply)) = head else {
            let error = match protocol::error_reason(body) {
                // e.g. "ERROR too many connections", sent before any request.
                Some(reason) => ClientError::Server(String::from_utf8_lossy(reason).into_owned()),
                None => ClientError::Protocol(format!(
                    "reply {:?} with no request pending",
                    String::from_utf8_lossy(body)
                )),
            };
            return shared.fail(error);
        };
        match interpret(kind, body) {
            Ok(answer) => {
                let _ = reply.send(Ok(answer));
            }
            Err(error @ ClientError::Server(_)) => {
                let _ = reply.send(Err(error));
            }
            Err(error) => {
                let _ = reply.send(Err(error.clone()));
                return shared.fail(error);
            }
        }
    }
}

/// Decodes a reply for a request of `kind`. A line beginning with
/// `ERROR ` is an error for every kind: the protocol reserves that prefix,
/// so no value can begin with it.
fn interpret(kind: Kind, body: &[u8]) -> Result<Answer, ClientError> {
    if let Some(reason) = protocol::error_reason(body) {
        return Err(ClientError::Server(
            String::from_utf8_lossy(reason).into_owned(),
        ));
    }
    match (kind, body) {
        (Kind::Store, protocol::STORED) | (Kind::Exists, protocol::AWESOME) => Ok(Answer::Yes),
        (Kind::Store | Kind::Exists, protocol::RARGH) => Ok(Answer::No),
        (Kind::Store | Kind::Exists, _) => Err(ClientError::Protocol(format!(
            "reply {:?} cannot answer a {kind:?}",
            String::from_utf8_lossy(body)
        ))),
        (Kind::Get, b"") => Ok(Answer::Value(None)),
        (Kind::Get, value) => Ok(Answer::Value(Some(value.to_vec()))),
    }
}
