//! JNHP/1 over TLS: loading and checking certificates, the acceptor that
//! SIGHUP swaps, and who a client is (docs/tls.md).
//!
//! rustls with the `ring` provider: pure Rust and assembly, no C toolchain
//! (cmake, aws-lc) needed to build jnhpd. The config only names the files
//! (`config::TlsSettings`); they are loaded here, by the preflight (so
//! `--check-config`, the start and SIGHUP catch an unreadable file, a key
//! that does not match, an expired certificate, naming the key's line)
//! and again, identically, when the acceptor is built.

mod subject;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;
pub use subject::subject;

/// The lowest TLS version a client may use (`tls.min_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum MinVersion {
    #[default]
    #[serde(rename = "1.2")]
    /// TLS 1.2 and 1.3.
    Tls12,
    #[serde(rename = "1.3")]
    /// TLS 1.3 only.
    Tls13,
}

/// The files a TLS server is built from, and the lowest version allowed
/// (the config's `[tls]`, borrowed: this layer does not know the config).
#[derive(Debug, Clone, Copy)]
pub struct TlsFiles<'a> {
    pub cert_file: &'a Path,
    pub key_file: &'a Path,
    /// `None`: no client certificates asked for. Else mutual TLS.
    pub client_ca_file: Option<&'a Path>,
    pub min_version: MinVersion,
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
/// bounded time (see [`crate::base::files`]).
fn read_file(
    key: &'static str,
    path: &Path,
    limit: crate::base::files::Limit,
) -> Result<Vec<u8>, TlsError> {
    crate::base::files::read(path, limit)
        .map_err(|e| error(key, path, format!("cannot read: {}", e.detail())))
}

/// Reads a PEM certificate chain (a CA bundle when `key` is
/// `client_ca_file`): at least one certificate, none expired.
fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let limit = match key {
        "client_ca_file" => crate::base::files::CA_BUNDLE,
        _ => crate::base::files::CERTIFICATES,
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
pub fn server_config(tls: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let chain = certificates("cert_file", tls.cert_file)?;
    let pem = read_file("key_file", tls.key_file, crate::base::files::KEY)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        error(
            "key_file",
            tls.key_file,
            format!("cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        error(
            "key_file",
            tls.key_file,
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
    let builder = if let Some(client_ca_file) = tls.client_ca_file {
        let mut roots = RootCertStore::empty();
        for ca in certificates("client_ca_file", client_ca_file)? {
            roots.add(ca).map_err(|e| {
                error(
                    "client_ca_file",
                    client_ca_file,
                    format!("not a usable CA certificate: {e}"),
                )
            })?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| error("client_ca_file", client_ca_file, e))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
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

#[cfg(test)]
mod tests {
    use super::subject::*;
    use super::*;

    #[test]
    fn rfc4514_escaping() {
        assert_eq!(escape("ingest-1"), "ingest-1");
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape("#x "), "\\#x\\ ");
        assert_eq!(escape(" lead"), "\\ lead");
    }

    #[test]
    fn control_characters_are_escaped_as_hex_pairs() {
        assert_eq!(escape("a\nb\rc\td"), "a\\0Ab\\0Dc\\09d");
        assert_eq!(escape("\u{1b}[31m\u{7}"), "\\1B[31m\\07");
        assert_eq!(escape("nul\0"), "nul\\00");
        assert_eq!(escape("del\u{7f}"), "del\\7F");
        // C1 controls: the hex of their two UTF-8 bytes.
        assert_eq!(escape("nel\u{85}"), "nel\\C2\\85");
        // Other text, ASCII or not, stays as it is.
        assert_eq!(escape("Zoë = 東京"), "Zoë = 東京");
    }

    /// The DER of a self-signed certificate whose subject is `dn`.
    fn certificate(dn: &[(rcgen::DnType, rcgen::DnValue)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in dn {
            params.distinguished_name.push(ty.clone(), value.clone());
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn subject_of(der: &[u8]) -> Option<String> {
        subject(&CertificateDer::from(der.to_vec()))
    }

    /// Replaces `from` in the subject of a self-signed `der` by `to` (same
    /// length), to make values rcgen will not write. The subject follows
    /// the issuer, which is the same name: the second occurrence. The
    /// signature no longer matches; `subject` does not look at it.
    fn patched(mut der: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let at: Vec<usize> = (0..=der.len() - from.len())
            .filter(|&i| &der[i..i + from.len()] == from)
            .collect();
        assert_eq!(at.len(), 2, "{from:02x?} occurs {} times", at.len());
        der[at[1]..at[1] + to.len()].copy_from_slice(to);
        der
    }

    #[test]
    fn every_string_type_reads_as_the_same_text() {
        use rcgen::string::{BmpString, Ia5String, PrintableString, UniversalString};
        use rcgen::{DnType, DnValue};
        let text = "ingest-1";
        let values = [
            DnValue::Utf8String(text.into()),
            DnValue::PrintableString(PrintableString::try_from(text).unwrap()),
            DnValue::Ia5String(Ia5String::try_from(text).unwrap()),
            DnValue::TeletexString(rcgen::string::TeletexString::try_from(text).unwrap()),
            DnValue::BmpString(BmpString::try_from(text).unwrap()),
            DnValue::UniversalString(UniversalString::try_from(text).unwrap()),
        ];
        for value in values {
            let der = certificate(&[(DnType::CommonName, value.clone())]);
            assert_eq!(
                subject_of(&der).as_deref(),
                Some("CN=ingest-1"),
                "{value:?}"
            );
        }
        // Beyond ASCII (beyond the BMP, too, where BMPString cannot go).
        let text = "Zoë 東京";
        let wide = "Zoë 東京 \u{1F600}";
        for (value, text) in [
            (DnValue::Utf8String(wide.into()), wide),
            (DnValue::BmpString(BmpString::try_from(text).unwrap()), text),
            (
                DnValue::UniversalString(UniversalString::try_from(wide).unwrap()),
                wide,
            ),
        ] {
            let der = certificate(&[(DnType::CommonName, value.clone())]);
            assert_eq!(subject_of(&der), Some(format!("CN={text}")), "{value:?}");
        }
    }

    #[test]
    fn teletex_strings_read_as_latin_1() {
        use rcgen::{DnType, DnValue};
        let value = DnValue::TeletexString(rcgen::string::TeletexString::try_from("cafe").unwrap());
        let der = certificate(&[(DnType::CommonName, value)]);
        let der = patched(der, b"\x14\x04cafe", b"\x14\x04caf\xe9");
        assert_eq!(subject_of(&der).as_deref(), Some("CN=café"));
    }

    #[test]
    fn control_characters_in_subjects_are_escaped() {
        use rcgen::string::BmpString;
        use rcgen::{DnType, DnValue};
        let der = certificate(&[
            (
                DnType::OrganizationName,
                DnValue::BmpString(BmpString::try_from("a\tb").unwrap()),
            ),
            (
                DnType::CommonName,
                DnValue::Utf8String("x\ny\rz\u{1b}\u{7}".into()),
            ),
        ]);
        assert_eq!(
            subject_of(&der).as_deref(),
            Some("CN=x\\0Ay\\0Dz\\1B\\07,O=a\\09b")
        );
    }

    #[test]
    fn values_that_cannot_be_decoded_are_the_hex_of_their_whole_encoding() {
        use rcgen::{DnType, DnValue};
        let cert =
            |text: &str| certificate(&[(DnType::CommonName, DnValue::Utf8String(text.into()))]);
        // Invalid UTF-8 in a UTF8String.
        let der = patched(cert("abcd"), b"\x0c\x04abcd", b"\x0c\x04ab\xff\xfe");
        assert_eq!(subject_of(&der).as_deref(), Some("CN=#0c046162fffe"));
        // A BMPString of odd length.
        let der = patched(cert("abc"), b"\x0c\x03abc", b"\x1e\x03abc");
        assert_eq!(subject_of(&der).as_deref(), Some("CN=#1e03616263"));
        // A lone surrogate in a BMPString.
        let der = patched(cert("abcd"), b"\x0c\x04abcd", b"\x1e\x04\xd8\x00\x00a");
        assert_eq!(subject_of(&der).as_deref(), Some("CN=#1e04d8000061"));
        // A byte over 0x7F in a PrintableString.
        let der = patched(cert("abcd"), b"\x0c\x04abcd", b"\x13\x04ab\xc3\xa9");
        assert_eq!(subject_of(&der).as_deref(), Some("CN=#13046162c3a9"));
        // Not a string at all: an OCTET STRING.
        let der = patched(cert("abcd"), b"\x0c\x04abcd", b"\x04\x04abcd");
        assert_eq!(subject_of(&der).as_deref(), Some("CN=#040461626364"));
        // A long value: the length in long form.
        let long = "a".repeat(200);
        let mut from = vec![0x0c, 0x81, 200];
        from.extend_from_slice(long.as_bytes());
        let mut to = vec![0x04, 0x81, 200];
        to.extend_from_slice(long.as_bytes());
        let der = patched(cert(&long), &from, &to);
        assert_eq!(
            subject_of(&der),
            Some(format!("CN=#0481c8{}", "61".repeat(200)))
        );
    }

    #[test]
    fn oids_are_dotted_with_arcs_of_any_size() {
        assert_eq!(dotted_oid(&[0x55, 0x04, 0x03]).as_deref(), Ok("2.5.4.3"));
        assert_eq!(dotted_oid(&[0x00]).as_deref(), Ok("0.0"));
        assert_eq!(dotted_oid(&[0x27]).as_deref(), Ok("0.39"));
        assert_eq!(dotted_oid(&[0x28]).as_deref(), Ok("1.0"));
        assert_eq!(dotted_oid(&[0x4f]).as_deref(), Ok("1.39"));
        assert_eq!(dotted_oid(&[0x50]).as_deref(), Ok("2.0"));
        assert_eq!(dotted_oid(&[0x7f, 0x05]).as_deref(), Ok("2.47.5"));
        assert_eq!(dotted_oid(&[0x88, 0x37, 0x01]).as_deref(), Ok("2.999.1"));
        // 2^64 - 1 and 2^64 as the third arc.
        let mut max = vec![0x01, 0x81];
        max.extend([0xff; 8]);
        max.push(0x7f);
        assert_eq!(dotted_oid(&max).as_deref(), Ok("0.1.18446744073709551615"));
        let mut over = vec![0x01, 0x82];
        over.extend([0x80; 8]);
        over.push(0x00);
        assert_eq!(dotted_oid(&over).as_deref(), Ok("0.1.18446744073709551616"));
        // The first subidentifier beyond 64 bits: 2 and a huge second arc.
        let mut huge = vec![0x82];
        huge.extend([0x80; 9]);
        huge.push(0x00);
        // 2 * 2^70 = 2^71 = 2361183241434822606848, minus 80.
        assert_eq!(dotted_oid(&huge).as_deref(), Ok("2.2361183241434822606768"));
        for bad in [&[][..], &[0x80, 0x01], &[0x55, 0x84]] {
            assert_eq!(dotted_oid(bad), Err(()), "{bad:02x?}");
        }
    }

    #[test]
    fn a_subject_that_is_not_a_name_in_full_is_the_hex_of_all_of_it() {
        let atv = |v: &[u8]| {
            [
                &[0x30, 5 + v.len() as u8, 0x06, 0x03, 0x55, 0x04, 0x03][..],
                v,
            ]
            .concat()
        };
        let set = |c: &[u8]| [&[0x31, c.len() as u8][..], c].concat();
        let seq = |c: &[u8]| [&[0x30, c.len() as u8][..], c].concat();
        let name = |der: &[u8]| {
            let (tlv, rest) = der_tlv(der).unwrap();
            assert!(rest.is_empty());
            rfc4514_name(&tlv)
        };
        let good = seq(&[set(&atv(b"\x0c\x01a")), set(&atv(b"\x0c\x01b"))].concat());
        assert_eq!(name(&good).as_deref(), Ok("CN=b,CN=a"));
        for bad in [
            seq(&[set(&atv(b"\x0c\x01a")), set(&[])].concat()),
            seq(&[set(&atv(b"\x0c\x01a")), seq(&[])].concat()),
            seq(&set(&[0x30, 0x05, 0x06, 0x03, 0x55, 0x04, 0x03])),
            seq(&set(&atv(b"\x0c\x01a\x05\x00"))),
            seq(&set(&[0x04, 0x00])),
        ] {
            assert_eq!(name(&bad), Err(()), "{bad:02x?}");
        }
        assert_eq!(hex(&[0x30, 0x00]), "#3000");
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
