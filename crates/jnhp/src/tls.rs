//! `--tls`, `--ca`, `--cert`, `--key`, `--server-name`: the client side
//! of JNHP/1 over TLS, for every subcommand.

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
    #[arg(long, value_name = "FILE", global = true, requires_all = ["tls", "key"])]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", global = true, requires_all = ["tls", "cert"])]
    pub key: Option<PathBuf>,
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
                for cert in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| format!("--ca {}: {e}", ca.display()))?
                {
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
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("--cert {}: {e}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("--key {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("--cert/--key: {e}"))?
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
