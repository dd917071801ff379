//! JNHP/1 over TLS against the real binary, with certificates made at test
//! time: round trips, mutual TLS, versions, rotation, hostile clients,
//! the peer's identity for validators, and clients nobody here wrote.

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{PATIENCE, Server, run_to_exit, script};
use nix::sys::signal::Signal;
use pki::{Ca, Issued};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A CA and a server certificate in a fresh directory.
struct Setup {
    dir: tempfile::TempDir,
    ca: Ca,
    server: Issued,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let server = ca.server(dir.path(), "server", 1);
    Setup { dir, ca, server }
}

/// `[tls]` serving on an ephemeral port with the setup's files, plus `extra`.
fn tls_config(s: &Setup, extra: &str) -> String {
    format!(
        "[server]\nlisten = []\n[tls]\nlisten = [\"127.0.0.1:0\"]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}",
        s.server.cert.display(),
        s.server.key.display()
    )
}

fn start(s: Setup, extra: &str) -> (Server, Setup) {
    let config = tls_config(&s, extra);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(&path, &config).unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config").arg(&path);
    (Server::spawn(cmd, dir, Some(path)), s)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting `ca`, with a client certificate if given,
/// limited to `versions`.
fn client_config(
    ca: &Path,
    client: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        Some(c) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&c.cert)
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_file(&c.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A blocking TLS connection; the handshake is completed (or fails) here.
fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(PATIENCE))?;
    let conn = rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
        .map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Sends `request` and reads one reply line.
fn ask(stream: &mut TlsStream, request: &str) -> String {
    stream
        .write_all(format!("{request}\r\n").as_bytes())
        .unwrap();
    stream.flush().unwrap();
    read_line(stream)
}

fn read_line(stream: &mut TlsStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        let n = stream.read(&mut byte).unwrap();
        assert!(n == 1, "closed while a reply was expected");
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line[..line.len() - 2]).into_owned()
}

/// Whether the server refuses this connection (at the handshake, or by
/// closing right after it).
fn is_refused(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    match connect(addr, config) {
        Err(_) => true,
        Ok(mut stream) => {
            // TLS 1.3: a client certificate is checked after the client's
            // handshake is done; the refusal arrives on the first read.
            let _ = stream.write_all(b"EXISTS a\r\n");
            let _ = stream.flush();
            let mut buf = [0u8; 64];
            !matches!(stream.read(&mut buf), Ok(n) if n > 0)
        }
    }
}

fn all_versions() -> &'static [&'static rustls::SupportedProtocolVersion] {
    rustls::ALL_VERSIONS
}

#[test]
fn tls_only_round_trips_pipelining_and_half_close() {
    let (server, s) = start(setup(), "");
    assert!(
        server.addrs.is_empty(),
        "server.listen = [] serves TLS only"
    );
    let addr = server.tls_addrs[0];
    let config = client_config(&s.ca.pem, None, all_versions());
    let mut c = connect(addr, config.clone()).unwrap();
    assert_eq!(ask(&mut c, "STORE greeting hello,  world"), "W00T!");
    assert_eq!(ask(&mut c, "GET greeting"), "hello,  world");

    // 500 pipelined requests in one write, answered in order.
    let mut burst = String::new();
    for i in 0..500 {
        burst.push_str(&format!("STORE n{i} v{i}\r\nGET n{i}\r\n"));
    }
    c.write_all(burst.as_bytes()).unwrap();
    c.flush().unwrap();
    for i in 0..500 {
        assert_eq!(read_line(&mut c), "W00T!");
        assert_eq!(read_line(&mut c), format!("v{i}"));
    }

    // Half-close: close_notify after the last request; every reply, then EOF.
    let mut c = connect(addr, config).unwrap();
    c.write_all(b"GET greeting\r\nEXISTS n7\r\nGET nothing")
        .unwrap();
    c.conn.send_close_notify();
    c.flush().unwrap();
    c.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "hello,  world\r\nAWESOME!\r\n\r\n"
    );
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate_or_from_another_ca() {
    let s = setup();
    let good = s.ca.client(s.dir.path(), "good", "ingest-1");
    let other = Ca::new(s.dir.path(), "other");
    let stranger = other.client(s.dir.path(), "stranger", "ingest-1");
    let extra = format!("client_ca_file = \"{}\"\n", s.ca.pem.display());
    let (server, s) = start(s, &extra);
    let addr = server.tls_addrs[0];
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        assert!(
            is_refused(addr, client_config(&s.ca.pem, None, versions)),
            "no certificate"
        );
        assert!(
            is_refused(addr, client_config(&s.ca.pem, Some(&stranger), versions)),
            "another CA"
        );
        let mut c = connect(addr, client_config(&s.ca.pem, Some(&good), versions)).unwrap();
        assert_eq!(ask(&mut c, "EXISTS a"), "RARGH!");
    }
}

#[test]
fn min_version_1_3_refuses_tls_1_2() {
    let (server, s) = start(setup(), "min_version = \"1.3\"\n");
    let addr = server.tls_addrs[0];
    assert!(is_refused(
        addr,
        client_config(&s.ca.pem, None, &[&rustls::version::TLS12])
    ));
    let mut c = connect(
        addr,
        client_config(&s.ca.pem, None, &[&rustls::version::TLS13]),
    )
    .unwrap();
    assert_eq!(ask(&mut c, "GET a"), "");
}

/// The serial number of the certificate a connection was served with.
fn served_serial(stream: &TlsStream) -> Vec<u8> {
    let chain = stream.conn.peer_certificates().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
    let raw = cert.raw_serial();
    let mut serial = vec![0u8; 8usize.saturating_sub(raw.len())];
    serial.extend_from_slice(&raw[raw.len().saturating_sub(8)..]);
    serial
}

/// SIGHUP re-reads the files: new handshakes get the new certificate,
/// established connections go on; bad files are refused and the old ones
/// stay.
#[test]
fn sighup_rotates_the_certificate() {
    let (server, s) = start(setup(), "");
    let addr = server.tls_addrs[0];
    let config = client_config(&s.ca.pem, None, all_versions());
    let mut old = connect(addr, config.clone()).unwrap();
    assert_eq!(served_serial(&old), s.server.serial);
    assert_eq!(ask(&mut old, "STORE a 1"), "W00T!");

    // Replace the files in place, as an ACME client would.
    let renewed = s.ca.server(s.dir.path(), "renewed", 2);
    std::fs::copy(&renewed.cert, &s.server.cert).unwrap();
    std::fs::copy(&renewed.key, &s.server.key).unwrap();
    server.signal(Signal::SIGHUP);
    server.log.wait_for("configuration reloaded");
    let mut new = connect(addr, config.clone()).unwrap();
    assert_eq!(served_serial(&new), renewed.serial);
    assert_eq!(ask(&mut new, "GET a"), "1");
    assert_eq!(
        ask(&mut old, "STORE b 2"),
        "W00T!",
        "the old connection keeps working"
    );

    // A key that does not match the certificate: refused, old files kept.
    let third = s.ca.server(s.dir.path(), "third", 3);
    std::fs::copy(&third.key, &s.server.key).unwrap();
    server.signal(Signal::SIGHUP);
    let refused = server.log.wait_for("keeping the running configuration");
    assert!(
        refused.contains("tls.key_file") && refused.contains("does not match"),
        "{refused}"
    );
    let mut still = connect(addr, config).unwrap();
    assert_eq!(served_serial(&still), renewed.serial);
    assert_eq!(ask(&mut still, "GET b"), "2");
}

/// Plain text, garbage, 200 stalled handshakes: each is disconnected on
/// its own, and a good client is served while the stalled ones are still
/// pending (so they did not hold it up).
#[test]
fn hostile_clients_do_not_affect_others() {
    let (server, s) = start(setup(), "handshake_timeout_secs = 3600\n");
    let addr = server.tls_addrs[0];
    let config = client_config(&s.ca.pem, None, all_versions());

    let mut plain = TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(PATIENCE)).unwrap();
    plain.write_all(b"STORE a b\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("W00T!"),
        "plain text is not JNHP over TLS"
    );

    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.set_read_timeout(Some(PATIENCE)).unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5])
        .unwrap();
    let _ = garbage.read_to_end(&mut buf);

    let stalled: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let mut c = connect(addr, config).unwrap();
    assert_eq!(ask(&mut c, "STORE good 1"), "W00T!");
    // Every stalled handshake is still open: the good client was served
    // beside them, not after them.
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut byte = [0u8; 1];
        let still_open = matches!(s.read(&mut byte), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        assert!(
            still_open,
            "a stalled handshake was closed before its timeout"
        );
    }
    assert_eq!(ask(&mut c, "GET good"), "1");
}

/// A client that never finishes its handshake is disconnected after
/// `handshake_timeout_secs`.
#[test]
fn a_stalled_handshake_is_closed_at_the_timeout() {
    let (server, _s) = start(setup(), "handshake_timeout_secs = 1\n");
    let mut stalled = TcpStream::connect(server.tls_addrs[0]).unwrap();
    stalled.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut byte = [0u8; 1];
    let read = stalled.read(&mut byte);
    let closed = match &read {
        Ok(n) => *n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(closed, "the stalled handshake is still open: {read:?}");
}

#[test]
fn bad_tls_files_stop_the_start_and_check_config() {
    let s = setup();
    let expired = s.ca.issue(
        s.dir.path(),
        "expired",
        &["localhost"],
        &[(rcgen::DnType::CommonName, "old")],
        (-30, -1),
        9,
    );
    let other = s.ca.server(s.dir.path(), "other", 4);
    let path = s.dir.path().join("bad.toml");
    let cases = [
        (
            format!(
                "cert_file = \"{}\"\nkey_file = \"{}\"\n",
                expired.cert.display(),
                expired.key.display()
            ),
            "bad.toml:3: tls.cert_file: ",
            "expired on",
        ),
        (
            format!(
                "cert_file = \"{}\"\nkey_file = \"{}\"\n",
                s.server.cert.display(),
                other.key.display()
            ),
            "bad.toml:4: tls.key_file: ",
            "does not match",
        ),
        (
            format!(
                "cert_file = \"missing.pem\"\nkey_file = \"{}\"\n",
                s.server.key.display()
            ),
            "bad.toml:3: tls.cert_file: ",
            "cannot read",
        ),
        (
            format!("cert_file = \"{}\"\n", s.server.cert.display()),
            "tls.key_file: ",
            "required",
        ),
        (
            format!(
                "cert_file = \"{}\"\nkey_file = \"{}\"\nmin_version = \"1.1\"\n",
                s.server.cert.display(),
                s.server.key.display()
            ),
            "bad.toml:5: tls.min_version: ",
            "unknown variant",
        ),
    ];
    for (files, want, reason) in cases {
        std::fs::write(&path, format!("[tls]\nlisten = [\"127.0.0.1:0\"]\n{files}")).unwrap();
        for args in [&["--check-config", "--config"][..], &["--config"][..]] {
            let (code, out) =
                run_to_exit(&[args, &[path.to_str().unwrap()]].concat(), s.dir.path());
            assert_eq!(code, 1, "{files}: {out}");
            assert!(
                out.contains(want) && out.contains(reason),
                "{files}:\n got {out}\nwant {want} ... {reason}"
            );
        }
    }
    std::fs::write(&path, "[server]\nlisten = []\n").unwrap();
    let (code, out) = run_to_exit(
        &["--check-config", "--config", path.to_str().unwrap()],
        s.dir.path(),
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("bad.toml:1: server.listen: at least one address is needed"),
        "{out}"
    );
}

/// A process validator sees who is storing: the client's address and its
/// certificate's subject.
#[test]
fn the_peer_reaches_process_validators() {
    let s = setup();
    let client = s.ca.client(s.dir.path(), "ingest", "ingest-1");
    let record = script(
        s.dir.path(),
        "record",
        &format!(
            "printf '%s|%s' \"$JNHP_PEER\" \"$JNHP_PEER_CERT_SUBJECT\" > {}/peer-$JNHP_NAME\necho JNHP:1",
            s.dir.path().display()
        ),
    );
    let extra = format!(
        "client_ca_file = \"{}\"\n{}",
        s.ca.pem.display(),
        common::process_validator(&record, "")
    );
    let (server, s) = start(s, &extra);
    let mut c = connect(
        server.tls_addrs[0],
        client_config(&s.ca.pem, Some(&client), all_versions()),
    )
    .unwrap();
    assert_eq!(ask(&mut c, "STORE who v"), "W00T!");
    let local = c.sock.local_addr().unwrap();
    let seen = std::fs::read_to_string(s.dir.path().join("peer-who")).unwrap();
    assert_eq!(seen, format!("{local}|CN=ingest-1,O=Example"));
}

/// A subject with control characters and a BMPString reaches validators
/// escaped and decoded: one line of text, the BMPString's text as a
/// UTF8String's would be (issue 21, item 10).
#[test]
fn peer_subjects_reach_validators_decoded_and_escaped() {
    use rcgen::string::BmpString;
    use rcgen::{DistinguishedName, DnType, DnValue};
    let s = setup();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        DnValue::BmpString(BmpString::try_from("Zoë & Co").unwrap()),
    );
    dn.push(
        DnType::CommonName,
        DnValue::Utf8String("evil\nJNHP:1\r\t\u{1b}[2J\u{7}".into()),
    );
    let client = s.ca.client_dn(s.dir.path(), "odd", dn);
    let record = script(
        s.dir.path(),
        "record",
        &format!(
            "printf '%s' \"$JNHP_PEER_CERT_SUBJECT\" > {}/subject-$JNHP_NAME\necho JNHP:1",
            s.dir.path().display()
        ),
    );
    let extra = format!(
        "client_ca_file = \"{}\"\n{}",
        s.ca.pem.display(),
        common::process_validator(&record, "")
    );
    let (server, s) = start(s, &extra);
    let mut c = connect(
        server.tls_addrs[0],
        client_config(&s.ca.pem, Some(&client), all_versions()),
    )
    .unwrap();
    assert_eq!(ask(&mut c, "STORE who v"), "W00T!");
    let seen = std::fs::read_to_string(s.dir.path().join("subject-who")).unwrap();
    assert_eq!(seen, "CN=evil\\0AJNHP:1\\0D\\09\\1B[2J\\07,O=Zoë & Co");
}

/// Clients nobody here wrote: `openssl s_client` and `socat`.
#[test]
fn openssl_s_client_and_socat_store_and_read() {
    require!(Openssl, Socat);
    let (server, s) = start(setup(), "");
    let addr = server.tls_addrs[0];
    // Each tool gets the requests on stdin, which stays open until the
    // expected number of replies has been read; then it is stopped.
    let run = |program: &str, args: &[String], input: &[u8], replies: usize| -> String {
        use std::io::BufRead;
        let mut child = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} is needed for this test (.ci/run installs it): {e}")
            });
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut text = String::new();
        for _ in 0..replies {
            if out.read_line(&mut text).unwrap() == 0 {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        text
    };
    let out = run(
        "openssl",
        &[
            "s_client".into(),
            "-quiet".into(),
            "-verify_return_error".into(),
            "-CAfile".into(),
            s.ca.pem.display().to_string(),
            "-connect".into(),
            addr.to_string(),
        ],
        b"STORE via-openssl yes\r\nGET via-openssl\r\n",
        2,
    );
    assert_eq!(out, "W00T!\r\nyes\r\n");
    let out = run(
        "socat",
        &[
            "-".into(),
            format!(
                "OPENSSL:{addr},cafile={},commonname=localhost",
                s.ca.pem.display()
            ),
        ],
        b"GET via-openssl\r\nSTORE via-socat also\r\nGET via-socat\r\n",
        3,
    );
    assert_eq!(out, "yes\r\nW00T!\r\nalso\r\n");
}

/// The example validator: only listed certificate subjects store names
/// with a protected prefix.
#[test]
fn allow_subjects_lets_only_listed_clients_store_protected_names() {
    let s = setup();
    let ingest = s.ca.client(s.dir.path(), "ingest", "ingest-1");
    let other = s.ca.client(s.dir.path(), "other", "intruder");
    let rules = s.dir.path().join("subjects");
    std::fs::write(
        &rules,
        "# who may store what\nlogs:  CN=ingest-1,O=Example\n",
    )
    .unwrap();
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("validators/allow-subjects");
    let extra = format!(
        "client_ca_file = \"{}\"\n[[validator]]\nkind = \"process\"\ncommand = [\"{}\", \"{}\"]\n",
        s.ca.pem.display(),
        program.display(),
        rules.display()
    );
    let (server, s) = start(s, &extra);
    let addr = server.tls_addrs[0];
    let mut a = connect(
        addr,
        client_config(&s.ca.pem, Some(&ingest), all_versions()),
    )
    .unwrap();
    let mut b = connect(addr, client_config(&s.ca.pem, Some(&other), all_versions())).unwrap();
    assert_eq!(ask(&mut b, "STORE logs:1 forged"), "RARGH!");
    assert_eq!(ask(&mut a, "STORE logs:1 real"), "W00T!");
    assert_eq!(ask(&mut b, "STORE misc:1 fine"), "W00T!");
    assert_eq!(ask(&mut b, "GET logs:1"), "real");
}

/// A handshake holds a connection slot; past max_connections a TLS client
/// is told so inside TLS, then closed.
#[test]
fn max_connections_counts_tls_connections() {
    let s = setup();
    let config = tls_config(&s, "").replace("[server]\n", "[server]\nmax_connections = 1\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(&path, &config).unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config").arg(&path);
    let server = Server::spawn(cmd, dir, Some(path));
    let addr = server.tls_addrs[0];
    let client = client_config(&s.ca.pem, None, all_versions());
    let mut first = connect(addr, client.clone()).unwrap();
    assert_eq!(ask(&mut first, "STORE a 1"), "W00T!");
    let mut second = connect(addr, client).unwrap();
    assert_eq!(read_line(&mut second), "ERROR too many connections");
    let mut rest = Vec::new();
    let _ = second.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert_eq!(ask(&mut first, "GET a"), "1");
}

/// TLS connections obey `idle_timeout_secs` like plain ones.
#[test]
fn idle_tls_connections_are_closed_after_the_idle_timeout() {
    let s = setup();
    let config = tls_config(&s, "").replace("[server]\n", "[server]\nidle_timeout_secs = 1\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(&path, &config).unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config").arg(&path);
    let server = Server::spawn(cmd, dir, Some(path));
    let mut c = connect(
        server.tls_addrs[0],
        client_config(&s.ca.pem, None, all_versions()),
    )
    .unwrap();
    assert_eq!(ask(&mut c, "STORE a 1"), "W00T!");
    // Idle from here: the server closes it (the read sees EOF or a reset,
    // not the test's 30 s read timeout).
    let mut rest = Vec::new();
    let read = c.read_to_end(&mut rest);
    let closed = match &read {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(closed && rest.is_empty(), "{read:?} {rest:?}");
}

/// Waits until `needle` has been logged `n` times, failing at once if
/// the server's resident memory passes 256 MiB meanwhile; returns the
/// n-th such line.
fn wait_for_nth_watching_memory(server: &Server, needle: &str, n: usize) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let lines: Vec<String> = server
            .log
            .all()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect();
        if lines.len() >= n {
            return lines[n - 1].clone();
        }
        let rss = server.rss_kib();
        assert!(rss < 256 << 10, "resident memory {rss} KiB while reloading");
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} #{n}; log:\n{}",
            server.log.all()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGHUP with `tls.key_file` a symlink to `/dev/zero`, then to a FIFO:
/// each reload is refused at once, naming what the file is, in bounded
/// memory, and everything keeps answering (`/healthz`, new handshakes
/// with the old certificate, STOREs). It took gigabytes in seconds, and
/// the FIFO hung the daemon.
#[test]
fn sighup_with_the_key_file_dev_zero_or_a_fifo_is_refused_and_serving_goes_on() {
    let s = setup();
    let link = s.dir.path().join("key-link.pem");
    std::os::unix::fs::symlink(&s.server.key, &link).unwrap();
    let fifo = s.dir.path().join("key.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jnhp.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = []\n[tls]\nlisten = [\"127.0.0.1:0\"]\ncert_file = \"{}\"\n\
             key_file = \"{}\"\n[admin]\nlisten = [\"127.0.0.1:0\"]\n",
            s.server.cert.display(),
            link.display()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config").arg(&path);
    let server = Server::spawn(cmd, dir, Some(path));
    let admin = common::admin_addr(&server);
    let config = client_config(&s.ca.pem, None, all_versions());
    for (n, (target, kind)) in [
        (Path::new("/dev/zero"), "a character device"),
        (&fifo, "a FIFO"),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(target, &link).unwrap();
        server.signal(Signal::SIGHUP);
        let refused =
            wait_for_nth_watching_memory(&server, "keeping the running configuration", n + 1);
        assert!(
            refused.contains("tls.key_file")
                && refused.contains(&format!("cannot read: it is {kind}, not a regular file")),
            "{refused}"
        );
        assert_eq!(common::get(admin, "/healthz").0, 200);
        let mut c = connect(server.tls_addrs[0], config.clone()).unwrap();
        assert_eq!(served_serial(&c), s.server.serial);
        assert_eq!(ask(&mut c, &format!("STORE after-{n} 1")), "W00T!");
    }
    assert!(server.rss_kib() < 256 << 10);
}
