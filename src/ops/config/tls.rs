//! `[tls]` as plain data: which files, which versions, where to listen.
//! Loading the files (reading the PEM, checking the key against the
//! certificate) is `crate::net::tls`'s, run by the start, SIGHUP and
//! `--check-config` (`crate::ops::preflight`); config only says where they are.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::ConfigError;
use super::listen::ListenAddr;
use super::place::{Places, Source};
use super::raw::RawTls;
pub use crate::net::tls::MinVersion;

/// The `[tls]` section, checked: it exists (`Config::tls` is `Some`)
/// exactly when the file names a certificate and its key, which
/// `tls.listen`, `cert_file` and `key_file` each require.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    /// May be empty: `--tls-listen` then says where to serve TLS.
    pub listen: Vec<ListenAddr>,
    /// The certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// The certificate's private key, PEM.
    pub key_file: PathBuf,
    /// `None`: no client certificates asked for. Else mutual TLS.
    pub client_ca_file: Option<PathBuf>,
    /// The lowest TLS version a client may use.
    pub min_version: MinVersion,
    /// How long a client may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
}

impl TlsSettings {
    /// Loads and checks the files (see [`crate::net::tls::server_config`]).
    pub(crate) fn server_config(
        &self,
    ) -> Result<std::sync::Arc<rustls::ServerConfig>, crate::net::tls::TlsError> {
        crate::net::tls::server_config(&crate::net::tls::TlsFiles {
            cert_file: &self.cert_file,
            key_file: &self.key_file,
            client_ca_file: self.client_ca_file.as_deref(),
            min_version: self.min_version,
        })
    }
}

/// Checks `[tls]`: with `listen`, `cert_file` or `key_file` set, both
/// files are required. Records in `places` the line of each file key (or
/// of `[tls]`), for the errors loading them finds.
pub(super) fn resolve(
    raw: RawTls,
    src: &Source,
    places: &mut Places,
) -> Result<Option<TlsSettings>, ConfigError> {
    let RawTls {
        listen,
        cert_file,
        key_file,
        client_ca_file,
        min_version,
        handshake_timeout_secs,
    } = raw;
    let section = src.section_line("[tls]");
    let line = |at: Option<usize>| at.map_or(section, |at| src.line(at));
    let span = |f: &Option<Spanned<PathBuf>>| f.as_ref().map(|s| s.span().start);
    places.set("tls.listen", line(listen.as_ref().map(|l| l.span().start)));
    places.set("tls.cert_file", line(span(&cert_file)));
    places.set("tls.key_file", line(span(&key_file)));
    places.set("tls.client_ca_file", line(span(&client_ca_file)));
    places.set(
        "tls.min_version",
        line(min_version.as_ref().map(|s| s.span().start)),
    );
    let file = |f: Option<Spanned<PathBuf>>| {
        f.map(|f| f.into_inner())
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| src.base.join(p))
    };
    let listen = listen.map(|l| l.into_inner()).unwrap_or_default();
    let (cert_file, key_file) = match (file(cert_file), file(key_file)) {
        (None, None) if listen.is_empty() => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        (cert, _) => {
            let key = if cert.is_none() {
                "cert_file"
            } else {
                "key_file"
            };
            return Err(src.invalid(
                section,
                &format!("tls.{key}"),
                "required to serve TLS (with listen, cert_file or key_file set)",
            ));
        }
    };
    Ok(Some(TlsSettings {
        listen,
        cert_file,
        key_file,
        client_ca_file: file(client_ca_file),
        min_version: min_version.map(|v| v.into_inner()).unwrap_or_default(),
        handshake_timeout: Duration::from_secs(handshake_timeout_secs),
    }))
}
