//! JNHP/1 over TLS: loading and checking certificates, the acceptor that
//! SIGHUP swaps, and who a client is (docs/tls.md).
//!
//! rustls with the `ring` provider: pure Rust and assembly, no C toolchain
//! (cmake, aws-lc) needed to build jnhpd. Certificates are checked when the
//! config is loaded (so `--check-config` and SIGHUP catch an unreadable
//! file, a key that does not match, an expired certificate) and again,
//! identically, when the acceptor is built.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;

use crate::config::ListenAddr;

/// The lowest TLS version a client may use (`min_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum MinVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// The `[tls]` section, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub listen: Vec<ListenAddr>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Empty: no client certificates asked for. Else mutual TLS.
    pub client_ca_file: PathBuf,
    pub min_version: MinVersion,
    pub handshake_timeout: std::time::Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            listen: Vec::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
            min_version: MinVersion::default(),
            handshake_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// A TLS file that cannot be used, and why; `key` is the config key that
/// names it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct TlsError {
    pub key: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

fn error(key: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError {
        key,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads one of the `[tls]` files: a regular file within `limit`, in
/// bounded time (see [`crate::files`]).
fn read_file(
    key: &'static str,
    path: &Path,
    limit: crate::files::Limit,
) -> Result<Vec<u8>, TlsError> {
    crate::files::read(path, limit)
        .map_err(|e| error(key, path, format!("cannot read: {}", e.detail())))
}

/// Reads a PEM certificate chain (a CA bundle when `key` is
/// `client_ca_file`): at least one certificate, none expired.
fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let limit = match key {
        "client_ca_file" => crate::files::CA_BUNDLE,
        _ => crate::files::CERTIFICATES,
    };
    let pem = read_file(key, path, limit)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(key, path, format!("not a PEM certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(error(key, path, "holds no certificate"));
    }
    let now = x509_parser::time::ASN1Time::now();
    for cert in &chain {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| error(key, path, format!("not a valid certificate: {e}")))?;
        let validity = parsed.validity();
        if validity.not_after < now {
            return Err(error(
                key,
                path,
                format!(
                    "certificate {} expired on {}",
                    describe_subject(cert),
                    validity.not_after
                ),
            ));
        }
        if validity.not_before > now {
            return Err(error(
                key,
                path,
                format!(
                    "certificate {} is not valid before {}",
                    describe_subject(cert),
                    validity.not_before
                ),
            ));
        }
    }
    Ok(chain)
}

fn describe_subject(cert: &CertificateDer) -> String {
    subject(cert).map_or_else(|| "(unreadable subject)".into(), |s| format!("{s:?}"))
}

/// Builds the server side from the files, checking everything a start
/// needs: readable, PEM, not expired, the key matching the leaf.
pub fn server_config(tls: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let chain = certificates("cert_file", &tls.cert_file)?;
    let pem = read_file("key_file", &tls.key_file, crate::files::KEY)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        error(
            "key_file",
            &tls.key_file,
            format!("cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        error(
            "key_file",
            &tls.key_file,
            format!("does not match {}: {e}", tls.cert_file.display()),
        )
    })?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| error("min_version", Path::new(""), e))?;
    let builder = if tls.client_ca_file.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for ca in certificates("client_ca_file", &tls.client_ca_file)? {
            roots.add(ca).map_err(|e| {
                error(
                    "client_ca_file",
                    &tls.client_ca_file,
                    format!("not a usable CA certificate: {e}"),
                )
            })?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| error("client_ca_file", &tls.client_ca_file, e))?;
        builder.with_client_cert_verifier(verifier)
    };
    let resolver = rustls::sign::SingleCertAndKey::from(certified);
    Ok(Arc::new(builder.with_cert_resolver(Arc::new(resolver))))
}

/// The acceptor in force; SIGHUP replaces it, new handshakes use the new
/// one, established connections keep theirs.
pub struct Acceptor {
    current: RwLock<tokio_rustls::TlsAcceptor>,
    pub handshake_timeout: std::time::Duration,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    pub fn new(config: Arc<ServerConfig>, handshake_timeout: std::time::Duration) -> Acceptor {
        Acceptor {
            current: RwLock::new(config.into()),
            handshake_timeout,
        }
    }

    pub fn get(&self) -> tokio_rustls::TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config.into();
    }
}

/// A certificate's subject as an RFC 4514 string (`CN=ingest-1,O=Example`:
/// the most specific RDN first).
pub fn subject(cert: &CertificateDer) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut rdns: Vec<String> = cert
        .subject()
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let name = short_name(&oid).map_or(oid, str::to_string);
                    let value = match atv.as_str() {
                        Ok(text) => escape(text),
                        Err(_) => {
                            let hex: String =
                                atv.as_slice().iter().map(|b| format!("{b:02x}")).collect();
                            format!("#{hex}")
                        }
                    };
                    format!("{name}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.reverse();
    Some(rdns.join(","))
}

/// The short names RFC 4514 (and common use) give attribute types.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

/// RFC 4514 escaping of an attribute value.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4514_escaping() {
        assert_eq!(escape("ingest-1"), "ingest-1");
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape("#x "), "\\#x\\ ");
        assert_eq!(escape(" lead"), "\\ lead");
    }

    #[test]
    fn subjects_are_most_specific_first() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ingest-1");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject(cert.der()).as_deref(),
            Some("CN=ingest-1,O=Example\\, Inc")
        );
    }
}
