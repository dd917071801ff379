//! `[server]` and `[admin]`: what jnhpd listens on and the limits of what
//! it serves.

use std::time::Duration;

use super::listen::ListenAddr;
use super::place::Source;
use super::raw::{RawAdmin, RawServer};
use crate::protocol::Limits;

/// `[server]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Where to serve JNHP/1 in plain text.
    pub listen: Vec<ListenAddr>,
    /// Client connections at once at most; more are refused.
    pub max_connections: usize,
    /// Seconds a connection may stay silent; 0: forever.
    pub idle_timeout_secs: u64,
    /// The longest name a STORE may carry, in bytes.
    pub max_name_bytes: usize,
    /// The longest value a STORE may carry, in bytes.
    pub max_value_bytes: usize,
    /// Seconds the server waits for connections to finish when it stops.
    pub shutdown_grace_secs: u64,
    /// Bytes that requests read but not yet answered may hold, server-wide
    /// (their bytes plus 1 KiB each; see `inflight`).
    pub max_inflight_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        resolve_server(RawServer::default())
    }
}

impl ServerConfig {
    /// The wire limits these settings make.
    pub fn limits(&self) -> Limits {
        Limits {
            max_name_bytes: self.max_name_bytes,
            max_value_bytes: self.max_value_bytes,
        }
    }

    /// `None` when connections never time out.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0).then(|| Duration::from_secs(self.idle_timeout_secs))
    }

    /// `shutdown_grace_secs` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// `[admin]`: the HTTP listener for metrics, health and the status page
/// (docs/observability.md).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdminConfig {
    /// Empty: no admin listener, nothing bound.
    pub listen: Vec<ListenAddr>,
    /// `GET /names` lists stored names (docs/observability.md, "Listing
    /// names"). Off by default: the admin listener has no authentication,
    /// and names may be sensitive.
    pub list_names: bool,
}

/// Everything in `[server]` is checked while deserializing.
pub(super) fn resolve_server(raw: RawServer) -> ServerConfig {
    let RawServer {
        listen,
        max_connections,
        idle_timeout_secs,
        max_name_bytes,
        max_value_bytes,
        shutdown_grace_secs,
        max_inflight_bytes,
    } = raw;
    ServerConfig {
        listen: listen.map_or_else(|| vec![ListenAddr::default()], |l| l.into_inner()),
        max_connections,
        idle_timeout_secs,
        max_name_bytes,
        max_value_bytes,
        shutdown_grace_secs,
        max_inflight_bytes,
    }
}

pub(super) fn resolve_admin(raw: RawAdmin) -> AdminConfig {
    AdminConfig {
        listen: raw.listen.map(|l| l.into_inner()).unwrap_or_default(),
        list_names: raw.list_names,
    }
}

/// The line of a `listen` list as written, for a name that does not
/// resolve.
pub(super) fn listen_line(listen: &super::raw::RawListen, src: &Source) -> Option<usize> {
    listen.as_ref().map(|l| src.line(l.span().start))
}
