//! jnhpd: a write-once key-value daemon speaking JNHP/1, as a library; the
//! `jnhpd` binary is a thin command line over [`server::Server`].
//!
//! The workspace: `jnhp-wire` (the wire format and line framer, no I/O),
//! `jnhp-client` (a pipelining client), this crate (the daemon), and `jnhp`
//! (the command and its load generator).
//!
//! Map of this crate, one idea per module:
//! - [`protocol`]: the `jnhp-wire` crate, re-exported;
//! - [`connection`]: one client's request loop;
//! - [`store`]: the actor that owns the map, and the handle connections use;
//! - [`validator`]: the [`validator::Validator`] trait and the chain every
//!   STORE passes;
//! - [`backend`]: the seam between the store and durable storage;
//! - `handback`: the reusable channel a batch comes back to its connection by;
//! - [`inflight`]: the server-wide budget of bytes requests in flight hold;
//! - [`datafile`]: the append-only data file (format, replay, group commit);
//! - [`datatools`]: `jnhpd data` verify, repair, backup, export, import;
//! - [`shutdown`]: the two flags connections watch while the server stops;
//! - [`server`]: binding, and the server's life: start, reload, shut down,
//!   wait (the accept loop is in `accept`);
//! - [`daemon`]: forking, the pidfile, privileges, systemd notification;
//! - [`config`]: loading and checking the TOML configuration;
//! - [`preflight`]: the checks of a loaded config that need the network
//!   or TLS (listen names, certificates, the PostgreSQL URL);
//! - [`files`]: reading the files the config names, bounded in kind,
//!   size and time;
//! - [`logging`]: the `log` backend (stderr or syslog).

mod accept;
pub mod admin;
pub mod backend;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod datafile;
pub mod datatools;
pub mod files;
mod handback;
pub mod inflight;
pub mod listing;
pub mod logging;
/// The wire format and framer (the `jnhp-wire` crate).
pub use jnhp_wire as protocol;
pub mod metrics;
mod not_ready;
pub mod postgres;
pub mod preflight;
pub mod server;
pub mod shutdown;
pub mod store;
mod timer;
pub mod tls;
pub mod validator;
