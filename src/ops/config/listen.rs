//! `host:port` addresses to listen on (`server.listen`, `tls.listen`,
//! `admin.listen`, `--listen`).

use std::net::{SocketAddr, ToSocketAddrs};

/// The built-in listen address, used when neither the file nor `--listen`
/// gives one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8111";

/// A `host:port` to listen on: an IP literal or a host name. Loading the
/// config checks its form only; a name is resolved where the network is
/// used: by the checks `--check-config`, the start and SIGHUP run
/// (`crate::ops::preflight`, so a name that does not resolve is still refused
/// naming its line), and again when jnhpd binds, listening on every
/// address it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr(String);

impl ListenAddr {
    /// Checks that `text` is `host:port` (a port number, a host that is
    /// not empty). Does not resolve the host: see [`resolve`](Self::resolve).
    pub fn parse(text: &str) -> Result<ListenAddr, String> {
        let addr = ListenAddr(text.to_string());
        if text.parse::<SocketAddr>().is_ok() {
            return Ok(addr);
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(addr),
            _ => Err(format!(
                "{text:?} is not host:port such as \"127.0.0.1:8111\", \"[::1]:8111\" or \"localhost:8111\""
            )),
        }
    }

    /// Every address the name resolves to (one for an IP literal); asks
    /// the resolver for a host name.
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        if let Ok(addr) = self.0.parse::<SocketAddr>() {
            return Ok(vec![addr]);
        }
        let mut addrs: Vec<SocketAddr> = self
            .0
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {:?}: {e}", self.0))?
            .collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(format!("{:?} resolves to no address", self.0));
        }
        Ok(addrs)
    }

    /// [`parse`](Self::parse), then [`resolve`](Self::resolve): for a
    /// command line argument, refused at once if it does not resolve.
    pub fn parse_and_resolve(text: &str) -> Result<ListenAddr, String> {
        let addr = ListenAddr::parse(text)?;
        addr.resolve()?;
        Ok(addr)
    }
}

impl Default for ListenAddr {
    fn default() -> Self {
        ListenAddr(DEFAULT_LISTEN.to_string())
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
