//! `--tls`, `--ca`, `--tls-client-cert`, `--tls-client-key`,
//! `--server-name`: the client side of JNHP/1 over TLS, for every
//! subcommand.
//!
//! The client certificate options carry `tls-client-` so that, next to
//! `bench --keys N` (the size of the key space), nobody reads the private
//! key's option as a count; `--cert` and `--key` still work (hidden
//! aliases, for scripts written before).

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};

/// The TLS flags, as given (global: they go before or after the command).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Speak JNHP/1 over TLS.
    #[arg(long, global = true)]
    pub tls: bool,
    /// CA certificates (PEM) to check the server against; default: the
    /// system's roots.
    #[arg(long, value_name = "FILE", global = true, requires = "tls")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for servers that ask (mutual TLS).
    #[arg(
        long = "tls-client-cert",
        alias = "cert",
        value_name = "FILE",
        global = true,
        requires_all = ["tls", "client_key"]
    )]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long = "tls-client-key",
        alias = "key",
        value_name = "FILE",
        global = true,
        requires_all = ["tls", "client_cert"]
    )]
    pub client_key: Option<PathBuf>,
    /// The name the server's certificate must carry; default: the host of
    /// --addr.
    #[arg(long, value_name = "NAME", global = true, requires = "tls")]
    pub server_name: Option<String>,
}

/// Where and how to speak TLS.
#[derive(Clone)]
pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: String,
}

/// Any connection the commands use: TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

pub type Conn = Box<dyn Stream>;

impl TlsArgs {
    /// The TLS target, or `None` without `--tls`.
    pub fn target(&self, addr: &str) -> Result<Option<TlsTarget>, String> {
        if !self.tls {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                let pem = read_pem_file(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| format!("--ca {}: {e}", ca.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let cert_error = |e: String| format!("--tls-client-cert {}: {e}", cert.display());
                let key_error = |e: String| format!("--tls-client-key {}: {e}", key.display());
                let chain =
                    CertificateDer::pem_slice_iter(&read_pem_file(cert).map_err(cert_error)?)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| cert_error(e.to_string()))?;
                let key = PrivateKeyDer::from_pem_slice(&read_pem_file(key).map_err(key_error)?)
                    .map_err(|e| key_error(e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("--tls-client-cert/--tls-client-key: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        let server_name = match &self.server_name {
            Some(name) => name.clone(),
            None => host_of(addr).to_string(),
        };
        Ok(Some(TlsTarget {
            config: Arc::new(config),
            server_name,
        }))
    }
}

/// The most a PEM file given to `jnhp` may hold: far more than any
/// certificate chain, key or CA bundle (a system's whole bundle is a few
/// hundred KiB), far less than would hurt.
pub const MAX_PEM_BYTES: u64 = 4 << 20;

/// A PEM file's bytes: a regular file (a FIFO or a device such as
/// /dev/zero would block or never end) of at most `MAX_PEM_BYTES`.
pub fn read_pem_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    // Checked on the opened file, so what is read is what was checked;
    // opening a FIFO without a writer would block, hence O_NONBLOCK (the
    // flag does not change reads of a regular file).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!("larger than {MAX_PEM_BYTES} bytes"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("larger than {MAX_PEM_BYTES} bytes"));
    }
    Ok(bytes)
}

/// The host part of `host:port` (`[::1]:8112` → `::1`).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A connection to `addr`, over TLS when `tls` is given.
pub async fn connect(
    addr: &str,
    tls: Option<&TlsTarget>,
    timeout: Duration,
) -> Result<Conn, String> {
    Ok(match tls {
        None => Box::new(
            jnhp_client::connect_tcp(addr, timeout)
                .await
                .map_err(|e| e.to_string())?,
        ),
        Some(tls) => Box::new(
            jnhp_client::tls_stream(addr, &tls.server_name, tls.config.clone(), timeout)
                .await
                .map_err(|e| e.to_string())?,
        ),
    })
}
