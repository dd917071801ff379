//! jnhpd: a write-once key-value daemon speaking JNHP/1.
//!
//! Map of the crate, one idea per module:
//! - [`protocol`]: the wire format, pure (bytes to [`protocol::Request`],
//!   [`protocol::Reply`] to bytes);
//! - [`connection`]: framing a byte stream into lines, and one client's
//!   request loop;
//! - [`store`]: the actor that owns the map, and the handle connections use;
//! - [`validator`]: the [`validator::Validator`] trait and the chain every
//!   STORE passes;
//! - [`datafile`]: the append-only data file (format, replay, group commit);
//! - [`server`]: binding, and the server's life: start, reload, shut down,
//!   wait (the accept loop is in `accept`);
//! - [`daemon`]: forking, the pidfile, privileges, systemd notification;
//! - [`config`]: loading and checking the TOML configuration;
//! - [`logging`]: the `log` backend (stderr or syslog);
//! - [`client`]: a pipelining JNHP client, and [`bench`] the load generator
//!   behind `jnhp bench`.

mod accept;
pub mod bench;
pub mod client;
mod coalesce;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod datafile;
pub mod logging;
pub mod protocol;
pub mod server;
pub mod store;
pub mod validator;
