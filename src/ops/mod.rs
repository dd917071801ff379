//! Operations: the configuration, the server's life and everything an
//! operator drives (the admin listener, listing names, daemonizing, the
//! `jnhpd data` tools). May use every layer below; nothing below uses it.
//!
//! - [`config`]: loading and checking the TOML configuration;
//! - [`preflight`]: the checks of a loaded config that need the network or
//!   TLS (listen names, certificates, the PostgreSQL URL);
//! - [`server`]: binding, and the server's life: start, reload, shut down,
//!   wait;
//! - `admin`: the HTTP admin listener (metrics, health, status, names);
//! - `listing`: `GET /names`, from the data file or PostgreSQL;
//! - [`daemon`]: forking, the pidfile, privileges, systemd notification;
//! - [`datatools`]: `jnhpd data` verify, repair, backup, export, import.

pub(crate) mod admin;
mod builder;
pub mod config;
pub mod daemon;
pub mod datatools;
pub(crate) mod listing;
pub mod preflight;
pub mod server;
