//! Certificates made at test time (rcgen): a CA, a server certificate for
//! localhost and 127.0.0.1, client certificates, written as PEM files.
#![allow(dead_code)] // each test file uses a different part of it

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: PathBuf,
}

/// PEM files of one certificate and its key.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: Vec<u8>,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `names`, subject `dn` (RDN type and value pairs),
    /// valid from `not_before_days` to `not_after_days` from today.
    pub fn issue(
        &self,
        dir: &Path,
        file: &str,
        names: &[&str],
        dn: &[(DnType, &str)],
        (not_before_days, not_after_days): (i64, i64),
        serial: u64,
    ) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in dn {
            params.distinguished_name.push(ty.clone(), *value);
        }
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(not_before_days);
        params.not_after = now + time::Duration::days(not_after_days);
        let serial_bytes = serial.to_be_bytes().to_vec();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial_bytes));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = dir.join(format!("{file}.pem"));
        let key_path = dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            cert: cert_path,
            key: key_path,
            serial: serial_bytes,
        }
    }

    /// A server certificate for localhost and 127.0.0.1, valid now.
    pub fn server(&self, dir: &Path, file: &str, serial: u64) -> Issued {
        self.issue(
            dir,
            file,
            &["localhost", "127.0.0.1"],
            &[(DnType::CommonName, "localhost")],
            (-1, 30),
            serial,
        )
    }

    /// A client certificate with subject `dn` as given (any string types,
    /// any characters), valid now.
    pub fn client_dn(&self, dir: &Path, file: &str, dn: rcgen::DistinguishedName) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = dir.join(format!("{file}.pem"));
        let key_path = dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            cert: cert_path,
            key: key_path,
            serial: Vec::new(),
        }
    }

    /// A client certificate with subject `CN=<cn>,O=Example`.
    pub fn client(&self, dir: &Path, file: &str, cn: &str) -> Issued {
        self.issue(
            dir,
            file,
            &[],
            &[
                (DnType::OrganizationName, "Example"),
                (DnType::CommonName, cn),
            ],
            (-1, 30),
            7,
        )
    }
}
