//! jnhpd: a write-once key-value daemon speaking JNHP/1, as a library; the
//! `jnhpd` binary is a thin command line over [`server::Server`].
//!
//! The workspace: `jnhp-wire` (the wire format and line framer, no I/O),
//! `jnhp-client` (a pipelining client), this crate (the daemon), and `jnhp`
//! (the command and its load generator).
//!
//! # What a library user needs
//!
//! - [`config::Config`]: load ([`config::Config::load`]) or parse a
//!   configuration;
//! - [`server::bind`], [`server::Listeners`] and [`server::Server`]: bind,
//!   start, reload and stop a server ([`server::Control`] from any task);
//! - [`validator`]: the [`validator::Validator`] trait, to check STOREs
//!   with code of your own ([`server::Server::start_with`] puts it in
//!   front of the configured chain);
//! - [`protocol`]: the wire format, re-exported.
//!
//! The other public modules ([`daemon`], [`logging`], [`preflight`],
//! [`datatools`], [`postgres`], [`datafile`]) are what the `jnhpd` binary
//! and the tests use: public so the binary stays a thin command line, and
//! documented, but not meant as a stable library surface.
//!
//! # Map of the crate, by layer
//!
//! A module uses only what sits in its own layer or below (the layer rule,
//! docs/architecture.md "Modules of the daemon"):
//!
//! 1. foundation: `base` (`base::files`, `shutdown`,
//!    `timer`, [`logging`]) and `metrics` (the counters every layer bumps,
//!    and their rendering for Prometheus);
//! 2. `storage`: the seam between the store and durable storage, the data
//!    file ([`datafile`] is its format), PostgreSQL ([`postgres`]);
//! 3. [`validator`]: the trait and the chain every STORE passes (beside
//!    storage: neither uses the other);
//! 4. `store`: the actor that owns the map, the handle connections use, and
//!    `handback`, the channel a batch comes back to its connection by;
//! 5. `net`: accepting, TLS, each client's request loop, the in-flight
//!    budget, answering while not ready;
//! 6. `ops`: [`config`], [`preflight`], [`server`], the admin listener,
//!    listing names, [`daemon`], [`datatools`].
#![warn(missing_docs)]

pub(crate) mod base;
pub(crate) mod metrics;
pub(crate) mod net;
pub(crate) mod ops;
pub(crate) mod storage;
pub(crate) mod store;
pub mod validator;

pub use base::logging;
/// The wire format and framer (the `jnhp-wire` crate).
pub use jnhp_wire as protocol;
pub use ops::{config, daemon, datatools, preflight, server};
pub use storage::postgres;

/// The data file's format, for programs that write or check one (the
/// tests do; `jnhpd data` is the supported tool).
pub mod datafile {
    pub use crate::storage::datafile::{HEADER_LEN, MAGIC, VERSION, encode_record};
}

#[doc(hidden)]
pub mod fuzzing;
