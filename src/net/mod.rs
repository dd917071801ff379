//! The wire-facing layer: sockets, TLS, and each client's request loop.
//! Uses the store, the validators and the foundation; nothing here knows
//! the configuration file or the server's life (those sit above, in
//! `ops`).
//!
//! - `accept`: the accept loop, admission against `max_connections`;
//! - `connection`: one client's request loop;
//! - `inflight`: the server-wide budget of bytes requests in flight hold;
//! - `tls`: loading and checking certificates, the TLS acceptor;
//! - `not_ready`: answering clients while the store opens.

pub mod accept;
pub mod connection;
pub mod inflight;
pub mod not_ready;
pub mod tls;
