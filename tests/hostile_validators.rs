//! Hostile validators: helper programs, process validators and client
//! certificates that misbehave, each test pinned to a promise of
//! docs/validators.md or docs/tls.md. Each records a defect a hostile
//! tester found; every one failed before its fix.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{PATIENCE, Server, script};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn helper_config(program: &Path, extra: &str) -> String {
    format!(
        "[[validator]]\nkind = \"helper\"\ncommand = [\"{}\"]\n{extra}\n",
        program.display()
    )
}

// ---------------------------------------------------------------------
// Helpers (`kind = "helper"`)
// ---------------------------------------------------------------------

/// A helper that answers a request and exits right after (a helper that
/// recycles itself, or one told to stop): its answer was written, and is
/// in the pipe, before the exit. validators.md: a helper answers
/// `<id> JNHP:<integer>`; only requests *in flight* fail when it exits,
/// and a request whose reply has arrived is no longer in flight (for
/// `process`, "the verdict counts the moment its line arrives, whatever
/// the exit status"). jnhpd often sees the exit first and fails the STORE
/// ("exited ...; killed it, 1 requests in flight fail"), dropping the
/// reply it was sent.
#[test]
fn a_reply_written_before_the_helper_exits_counts() {
    let d = tempfile::tempdir().unwrap();
    let prog = script(
        d.path(),
        "h",
        "while read id name value; do\n  echo \"$id JNHP:1\"\n  \
         case \"$value\" in last) exit 0 ;; esac\ndone",
    );
    let s = Server::start_in(d, &helper_config(&prog, "children = 1"));
    let mut c = s.connect();
    let mut lost = Vec::new();
    for i in 0..100 {
        // A fresh helper serves one ordinary request, then the last one.
        // (Until jnhpd has seen the previous helper exit, a request may
        // still go to it: try again.)
        let served = (0..50).any(|try_| {
            let ok = c.ask(&format!("STORE first{i}-{try_} ok")) == "W00T!";
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            ok
        });
        assert!(served, "no helper served an ordinary request");
        let reply = c.ask(&format!("STORE last{i} last"));
        if reply != "W00T!" {
            lost.push(format!("last{i}: {reply}"));
        }
        // Let jnhpd see the exit before the next helper is wanted.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        lost.is_empty(),
        "replies written before the helper exited were dropped: {lost:?}\nlog:\n{}",
        s.log.all()
    );
}

// ---------------------------------------------------------------------
// Mutual TLS: JNHP_PEER_CERT_SUBJECT (certificates made with openssl)
// ---------------------------------------------------------------------

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With openssl in `dir`: a CA (`ca.pem`), a server certificate for
/// localhost and 127.0.0.1 (`server.pem`, `server.key`), and a client
/// certificate (`client.pem`, `client.key`) whose subject is the `[dn]`
/// section `dn` (with `oids` as an `oid_section`, to name any OID).
fn openssl_pki(dir: &Path, oids: &str, dn: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=hostile CA",
    ]);
    openssl(dir, &ca);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    let mut server = vec!["req", "-new"];
    server.extend(ec);
    server.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &server);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "30",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
    std::fs::write(
        dir.join("client.cnf"),
        format!(
            "oid_section = new_oids\n[new_oids]\n{oids}\n[req]\ndistinguished_name = dn\n\
             prompt = no\nutf8 = yes\n[dn]\n{dn}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage = clientAuth\n").unwrap();
    let mut client = vec!["req", "-new"];
    client.extend(ec);
    client.extend([
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-config",
        "client.cnf",
    ]);
    openssl(dir, &client);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "3",
            "-days",
            "30",
            "-extfile",
            "client.ext",
            "-out",
            "client.pem",
        ],
    );
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_connect(addr: SocketAddr, dir: &Path) -> std::io::Result<TlsStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        CertificateDer::pem_file_iter(dir.join("client.pem"))
            .unwrap()
            .map(|c| c.unwrap())
            .collect(),
        PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Sends `request`, reads one reply; None if the server closed instead.
fn tls_ask(stream: &mut TlsStream, request: &str) -> Option<String> {
    stream.write_all(format!("{request}\r\n").as_bytes()).ok()?;
    stream.flush().ok()?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&line[..line.len() - 2]).into_owned())
}

/// Starts jnhpd serving mutual TLS with the openssl PKI of `dir` and a
/// process validator that records `JNHP_PEER_CERT_SUBJECT`; stores one
/// name as the client and returns the subject the validator saw (None if
/// the client certificate was refused).
fn try_subject_seen_by_validator(dir: tempfile::TempDir) -> Option<String> {
    let root: PathBuf = dir.path().to_path_buf();
    let record = script(
        &root,
        "record",
        &format!(
            "printf '%s' \"$JNHP_PEER_CERT_SUBJECT\" > {}/subject\necho JNHP:1",
            root.display()
        ),
    );
    let config = format!(
        "[server]\nlisten = []\n[tls]\nlisten = [\"127.0.0.1:0\"]\n\
         cert_file = \"{d}/server.pem\"\nkey_file = \"{d}/server.key\"\n\
         client_ca_file = \"{d}/ca.pem\"\n{v}",
        d = root.display(),
        v = common::process_validator(&record, "")
    );
    let path = root.join("jnhp.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config").arg(&path);
    let server = Server::spawn(cmd, dir, Some(path));
    let mut c = tls_connect(server.tls_addrs[0], &root).ok()?;
    assert_eq!(tls_ask(&mut c, "STORE who v")?, "W00T!");
    Some(std::fs::read_to_string(root.join("subject")).unwrap())
}

fn subject_seen_by_validator(dir: tempfile::TempDir) -> String {
    try_subject_seen_by_validator(dir).expect("the client certificate was refused")
}

/// tls.md: attribute types without a short name are shown "by their
/// dotted OID". The first two arcs share the first subidentifier (40 ×
/// first + second, where the second arc under joint-iso-itu-t (2) may be
/// 40 or more). jnhpd splits it as `n / 40`, `n % 40` without capping the
/// first arc at 2, and reads only the first byte of a multi-byte one:
/// 2.47.5 is shown as `3.7.5`, 2.999.1 as `3.16.55.1` (OIDs that cannot
/// exist: first arcs are 0, 1 or 2), and 0.0 as `0`.
#[test]
fn a_subject_oid_with_a_large_second_arc_is_shown_dotted() {
    require!(Openssl);
    let d = tempfile::tempdir().unwrap();
    openssl_pki(
        d.path(),
        "wide = 2.999.1\ntwo47 = 2.47.5\nzero = 0.0",
        "wide = v\ntwo47 = w\nzero = z",
    );
    assert_eq!(subject_seen_by_validator(d), "0.0=z,2.47.5=w,2.999.1=v");
}

/// tls.md: types without a short name are shown "by their dotted OID".
/// An OID with an arc beyond 64 bits, as UUID-based OIDs under 2.25 have
/// (X.667, RFC 4122's example below), is shown as space-separated hex
/// bytes instead (`69 83 f0 9d ... 76=v`): not dotted, and with blanks in
/// a string validators are told to compare whole. (Seen by hand: an arc
/// of 2^64 - 1, which fits in 64 bits, is shown as hex bytes too.)
#[test]
fn a_subject_oid_with_a_uuid_arc_is_shown_dotted() {
    require!(Openssl);
    let d = tempfile::tempdir().unwrap();
    openssl_pki(
        d.path(),
        "uuid = 2.25.329800735698586629295641978511506172918",
        "uuid = v",
    );
    assert_eq!(
        subject_seen_by_validator(d),
        "2.25.329800735698586629295641978511506172918=v"
    );
}

// ---------------------------------------------------------------------
// Process validators (`kind = "process"`)
// ---------------------------------------------------------------------

/// A program that starts a daemon with `setsid` without redirecting its
/// stdout (an everyday mistake), answers, and exits. validators.md: the
/// program "keeps its max_concurrent slot until it is gone"; "when a run
/// ends (its program exited or was killed), jnhpd kills and reaps the
/// orphans of that run". The program is gone at once; but because the
/// detached process still holds the stdout pipe, jnhpd treats the run as
/// going on: the orphan lives and the slot stays taken until
/// `timeout_ms`, so with `max_concurrent = 1` the next STORE waits the
/// whole timeout. (The same holds, seen by hand, when the detached
/// process holds only stderr.)
#[test]
fn a_detached_process_holding_stdout_does_not_keep_the_run_alive() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let prog = script(
        &root,
        "v",
        &format!(
            "setsid sh -c 'echo $$ > {r}/orphan-$JNHP_NAME.tmp; mv {r}/orphan-$JNHP_NAME.tmp {r}/orphan-$JNHP_NAME; exec sleep 300' &\n\
             while [ ! -e {r}/orphan-$JNHP_NAME ]; do sleep 0.01; done\n\
             echo JNHP:1\nexit 0",
            r = root.display()
        ),
    );
    let s = Server::start_in(
        d,
        &common::process_validator(&prog, "timeout_ms = 20000\nmax_concurrent = 1"),
    );
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a v"), "W00T!");
    let orphan_file = root.join("orphan-a");
    common::wait_for_file(&orphan_file);
    let orphan: i32 = std::fs::read_to_string(&orphan_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The program has exited: its orphan goes within the once-a-second
    // sweep, far before the 20 s timeout.
    let start = std::time::Instant::now();
    while common::is_running(orphan) && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let orphan_alive = common::is_running(orphan);
    let start = std::time::Instant::now();
    let reply = c.ask("STORE b v");
    let waited = start.elapsed();
    // Leave nothing behind when the server is killed below.
    common::wait_for_file(&root.join("orphan-b"));
    for name in ["orphan-a", "orphan-b"] {
        if let Ok(pid) = std::fs::read_to_string(root.join(name))
            .unwrap()
            .trim()
            .parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    assert!(
        !orphan_alive,
        "the orphan of a run whose program exited is still running 5 s later"
    );
    assert_eq!(reply, "W00T!");
    assert!(
        waited < std::time::Duration::from_secs(5),
        "the next STORE waited {waited:?} for the slot of a program that had exited"
    );
}

/// Same mistake, without a verdict: the program exits at once without
/// one. validators.md: "Failure: the program ... exits without a verdict"
/// (the STORE gets its `on_failure` reply then). jnhpd instead waits for
/// the detached process to close stdout, i.e. for `timeout_ms`, and
/// reports a timeout.
#[test]
fn a_program_exiting_without_a_verdict_fails_at_once_despite_a_detached_process() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    // The program leaves only once the detached process is in its own
    // session (it has written its marker).
    let prog = script(
        &root,
        "v",
        &format!(
            "setsid sh -c 'echo $$ > {r}/orphan.tmp; mv {r}/orphan.tmp {r}/orphan; exec sleep 300' &\n\
             while [ ! -e {r}/orphan ]; do sleep 0.01; done\nexit 0",
            r = root.display()
        ),
    );
    let s = Server::start_in(d, &common::process_validator(&prog, "timeout_ms = 20000"));
    let mut c = s.connect();
    let start = std::time::Instant::now();
    assert_eq!(c.ask("STORE a v"), "RARGH!");
    let waited = start.elapsed();
    if let Ok(pid) = std::fs::read_to_string(root.join("orphan"))
        && let Ok(pid) = pid.trim().parse::<i32>()
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        waited < std::time::Duration::from_secs(5),
        "the failure came after {waited:?} (timeout_ms is 20 s); log:\n{}",
        s.log.all()
    );
    s.log.wait_for("without a verdict");
}

/// validators.md: "Nothing a program starts outlives it." Orphans are
/// told apart by the `JNHP_RUN` they inherit; one "whose run is over" is
/// killed as soon as it is seen. A program that detaches a process with
/// `JNHP_RUN` set to the run of a long-lived helper (here the helper of
/// the same chain, started just before it: its own run minus one) makes
/// that process live as long as the helper does, i.e. for ever with
/// `max_requests = 0`: the program is long gone, its run is over, and the
/// process it started lives on.
///
/// Run tags are now 128 random bits, so the program can only guess: it
/// tries its own tag minus one (the old counter's neighbour, what it would
/// be if tags were counted) or, for a hex tag, its tag with the last
/// digit changed. Either way the guess names no live run.
#[test]
fn an_orphan_borrowing_a_helpers_run_does_not_outlive_its_program() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let helper = script(
        &root,
        "helper",
        "while read id name value; do echo \"$id JNHP:1\"; done",
    );
    let prog = script(
        &root,
        "v",
        &format!(
            "case \"$JNHP_RUN\" in\n  *[!0-9]*) guess=$(printf %s \"$JNHP_RUN\" | sed 's/.$//')$(case \"$JNHP_RUN\" in *0) echo 1 ;; *) echo 0 ;; esac) ;;\n  *) guess=$((JNHP_RUN - 1)) ;;\nesac\n\
             setsid env JNHP_RUN=$guess sh -c 'echo $$ > {r}/orphan.tmp; mv {r}/orphan.tmp {r}/orphan; exec sleep 300' </dev/null >/dev/null 2>&1 &\n\
             while [ ! -e {r}/orphan ]; do sleep 0.01; done\necho JNHP:1",
            r = root.display()
        ),
    );
    let config = format!(
        "{}{}",
        helper_config(&helper, "children = 1"),
        common::process_validator(&prog, "")
    );
    let s = Server::start_in(d, &config);
    assert_eq!(s.connect().ask("STORE a v"), "W00T!");
    let orphan: i32 = std::fs::read_to_string(root.join("orphan"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The sweep runs every second while a program (the helper) runs.
    let start = std::time::Instant::now();
    while common::is_running(orphan) && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let alive = common::is_running(orphan);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(orphan),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(
        !alive,
        "the process detached by a finished program (run over) still runs 5 s later"
    );
    drop(s);
}

/// validators.md, helpers: a SIGHUP that replaces a helper's table
/// stops its helpers as STOREs in flight allow: those keep the chain they
/// started with (as for every validator), so a request in flight on an
/// old helper gets its verdict or fails at its `timeout_ms`; new STOREs go
/// to new helpers at once; once the old helpers' last request is over
/// they are shut down (stdin closed, 2 s, killed).
///
/// (The hostile tester expected the hung request to fail within 2 s of
/// the SIGHUP. The docs promised "2 s" for a SIGHUP-replaced helper while
/// its requests in flight could keep it until their `timeout_ms`; the
/// docs now say what happens, which is what a reload of an unrelated
/// section should do to STOREs in flight: not cut them short.)
#[test]
fn a_replaced_helper_with_a_hung_request_is_stopped_after_its_request() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let prog = script(
        &root,
        "h",
        &format!(
            "echo $$ > {r}/helper-$$\n\
             while read id name value; do\n  case \"$value\" in hang) ;; *) echo \"$id JNHP:1\" ;; esac\ndone",
            r = root.display()
        ),
    );
    let helpers = |root: &Path| -> Vec<i32> {
        std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("helper-")?
                    .parse()
                    .ok()
            })
            .collect()
    };
    let s = Server::start_in(d, &helper_config(&prog, "children = 1\ntimeout_ms = 4000"));
    let mut hung = s.connect();
    hung.send(b"STORE a hang\r\n");
    // The request has reached the helper once it has answered another.
    assert_eq!(s.connect().ask("STORE b ok"), "W00T!");
    let old = helpers(&root);
    assert_eq!(old.len(), 1);
    let old = old[0];
    let config = s.config.clone().unwrap();
    std::fs::write(
        &config,
        helper_config(&prog, "children = 2\ntimeout_ms = 4000"),
    )
    .unwrap();
    let start = std::time::Instant::now();
    s.signal(nix::sys::signal::Signal::SIGHUP);
    s.log.wait_for("configuration reloaded");
    // A new STORE is answered by a new helper, not queued behind the old.
    assert_eq!(s.connect().ask("STORE c ok"), "W00T!");
    assert_eq!(helpers(&root).len(), 2, "a new helper answered");
    let reply = hung.reply();
    let waited = start.elapsed();
    assert_eq!(
        reply, "RARGH!",
        "the helper never answered: on_failure = reject"
    );
    assert!(
        waited < std::time::Duration::from_secs(12),
        "the STORE in flight on the replaced helper was answered after {waited:?} (timeout_ms is 4 s)"
    );
    common::wait_not_running(old);
}

/// validators.md, helpers: "stderr is read and logged, lines cut at 1
/// KiB, rate-limited." A 5000-byte stderr line is not cut at 1 KiB: it is
/// split into five log lines, each looking like a stderr line of its own
/// (so one line a helper writes becomes several in the log, and a
/// newline-less flood becomes a flood of lines, only held back by the
/// rate limit).
#[test]
fn a_long_helper_stderr_line_is_logged_once_cut_at_1_kib() {
    let d = tempfile::tempdir().unwrap();
    let prog = script(
        d.path(),
        "h",
        "head -c 5000 /dev/zero | tr '\\0' A >&2\necho >&2\necho end-marker >&2\n\
         while read -r id name value; do echo \"$id JNHP:1\"; done",
    );
    let s = Server::start_in(d, &helper_config(&prog, "children = 1"));
    assert_eq!(s.connect().ask("STORE a v"), "W00T!");
    s.log.wait_for("stderr: end-marker");
    let long: Vec<String> = s
        .log
        .all()
        .lines()
        .filter(|l| l.contains("stderr: AAAA"))
        .map(|l| l.to_string())
        .collect();
    assert_eq!(
        long.len(),
        1,
        "one stderr line of 5000 bytes became {} log lines",
        long.len()
    );
    let text = long[0].split("stderr: ").nth(1).unwrap();
    assert!(
        text.len() <= 1100,
        "a stderr line logged with {} bytes",
        text.len()
    );
}

/// What a validator writes cannot forge log lines: a helper's stderr and
/// a process validator's stderr (quoted in its failure log) with CR, LF,
/// ESC and NUL in them each stay inside one log line, the control
/// characters escaped (validators.md: "control characters escaped").
#[test]
fn validator_stderr_cannot_forge_log_lines() {
    let d = tempfile::tempdir().unwrap();
    let helper = script(
        d.path(),
        "h",
        "printf 'helper-said\\r[2099] ERROR FORGED-BY-HELPER\\033[2J\\000tail\\n' >&2\n\
         echo helper-marker >&2\n\
         while read -r id name value; do echo \"$id JNHP:1\"; done",
    );
    let prog = script(
        d.path(),
        "v",
        "printf 'first\\n[2099] ERROR FORGED-BY-PROCESS\\r\\033[31m\\000end' >&2\nexit 3",
    );
    let config = format!(
        "{}{}",
        helper_config(&helper, "children = 1"),
        common::process_validator(&prog, "")
    );
    let s = Server::start_in(d, &config);
    assert_eq!(s.connect().ask("STORE a v"), "RARGH!");
    s.log.wait_for("helper-marker");
    s.log.wait_for("without a verdict");
    let log = s.log.all();
    for forged in ["FORGED-BY-HELPER", "FORGED-BY-PROCESS"] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(forged)).collect();
        assert_eq!(lines.len(), 1, "{forged}: {lines:?}\nlog:\n{log}");
        let line = lines[0];
        assert!(
            !line.contains(['\r', '\x1b', '\0']),
            "a raw control character reached the log: {line:?}"
        );
        assert!(
            line.contains("\\x1b") && line.contains("\\x00") && line.contains("\\x0d"),
            "control characters not escaped: {line:?}"
        );
        // The forged text is inside the line jnhpd wrote, not a line start.
        assert!(!line.starts_with("[2099]"), "{line:?}");
    }
    let process = log
        .lines()
        .find(|l| l.contains("FORGED-BY-PROCESS"))
        .unwrap();
    assert!(process.contains("first\\x0a[2099]"), "{process:?}");
}

// ---------------------------------------------------------------------
// The shipped examples (validators.md, "Examples to copy")
// ---------------------------------------------------------------------

/// `validators/asyncio-helper` promises (its header, after validators.md)
/// to allow every value without "forbidden", and that "a check that
/// raises denies that STORE (reply 0) rather than breaking the helper".
/// Its request reader is limited to 1 MiB lines, while
/// `server.max_value_bytes` may be up to 16 MiB: a 2 MB value makes
/// `readline` raise LimitOverrunError outside any check, the helper dies,
/// the STORE is refused, and every other STORE in flight on that helper
/// fails with it. Any client can do it, again and again.
#[test]
fn the_asyncio_helper_example_survives_a_large_value() {
    require!(Python3);
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("validators/asyncio-helper");
    let s = Server::start(&format!(
        "[server]\nmax_value_bytes = 4000000\n{}",
        helper_config(&helper, "children = 1")
    ));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE small v"), "W00T!");
    let big = "x".repeat(2_000_000);
    assert_eq!(
        c.ask(&format!("STORE big {big}")),
        "W00T!",
        "a 2 MB value without \"forbidden\" was refused; log:\n{}",
        s.log.all().chars().take(3000).collect::<String>()
    );
    assert!(!s.log.all().contains("LimitOverrunError"));
}

/// `validators/utf8-text` promises (its header) to allow "valid UTF-8
/// text without control characters (tabs allowed)" and to deny "terminal
/// escape sequences". It checks only C0 and DEL: the C1 controls U+0080 to
/// U+009F (which tls.md counts as control characters too) pass, among
/// them NEL (U+0085) and CSI (U+009B), the one-character form of ESC [.
#[test]
fn the_utf8_text_example_refuses_c1_controls() {
    require!(Python3);
    let prog = Path::new(env!("CARGO_MANIFEST_DIR")).join("validators/utf8-text");
    let s = Server::start(&common::process_validator(&prog, "input = \"stdin\""));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE plain text"), "W00T!");
    assert_eq!(c.ask("STORE esc a\u{1b}[2J"), "RARGH!");
    assert_eq!(
        c.ask("STORE csi a\u{9b}2J"),
        "RARGH!",
        "U+009B (CSI) was allowed"
    );
    assert_eq!(
        c.ask("STORE nel a\u{85}b"),
        "RARGH!",
        "U+0085 (NEL) was allowed"
    );
}

/// validators.md lists `validators/reject-mp3` as "refuses MP3 data, raw
/// or base64". Base64 without its `=` padding (as many encoders write it)
/// is not recognised: `base64.b64decode(validate=True)` raises on it and
/// the value is allowed. Here an ID3-tagged blob whose padded base64 is
/// refused passes once its trailing `=` is dropped.
#[test]
fn the_reject_mp3_example_refuses_unpadded_base64() {
    require!(Python3);
    let prog = Path::new(env!("CARGO_MANIFEST_DIR")).join("validators/reject-mp3");
    let s = Server::start(&common::process_validator(&prog, ""));
    let mut c = s.connect();
    // base64 of b"ID3\x03\0\0\0\0\0\0abcd"
    assert_eq!(c.ask("STORE padded SUQzAwAAAAAAAGFiY2Q="), "RARGH!");
    assert_eq!(
        c.ask("STORE unpadded SUQzAwAAAAAAAGFiY2Q"),
        "RARGH!",
        "the same MP3 data, base64 without padding, was stored"
    );
}

/// DER: a tag, its length, its content.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The elements of the DER SEQUENCE (or SET) `data` holds: (whole TLV).
fn der_elements(data: &[u8]) -> Vec<&[u8]> {
    let header = |d: &[u8]| -> (usize, usize) {
        if d[1] < 0x80 {
            (2, d[1] as usize)
        } else {
            let k = (d[1] & 0x7f) as usize;
            let len = d[2..2 + k].iter().fold(0usize, |a, b| a << 8 | *b as usize);
            (2 + k, len)
        }
    };
    let (h, len) = header(data);
    let mut inner = &data[h..h + len];
    let mut out = Vec::new();
    while !inner.is_empty() {
        let (h, len) = header(inner);
        out.push(&inner[..h + len]);
        inner = &inner[h + len..];
    }
    out
}

/// tls.md: validators get "the client certificate's subject as an RFC
/// 4514 string". A subject whose RDN sequence holds an empty RDN (a SET
/// with no attribute: not valid DER, but the CA signed it and the
/// handshake accepts it) is cut at that RDN: for `O=Example, {},
/// CN=mallory` (DER order) validators see `O=Example`, the most specific
/// part silently gone (and a subject starting with an empty RDN reads as
/// ""). Either refusing such a certificate or showing all of it would do;
/// showing a shorter, different subject that a rule may trust does not.
/// (Seen by hand, same cut: an RDN holding a non-SEQUENCE, an attribute
/// without a value, a non-SET element between RDNs; an attribute with
/// an extra element is shown without it.)
///
/// jnhpd now shows such a subject as `#` and the hex of the whole Name's
/// DER (tls.md): never shortened, and no rule written for RFC 4514 names
/// can match it.
#[test]
fn a_subject_with_an_empty_rdn_is_not_cut_short() {
    require!(Openssl);
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    openssl_pki(&root, "", "CN = placeholder");
    // The client certificate, made by hand and signed by the CA with
    // openssl: subject O=Example, {}, CN=mallory.
    openssl(
        &root,
        &[
            "pkey",
            "-in",
            "client.key",
            "-pubout",
            "-outform",
            "DER",
            "-out",
            "client.spki",
        ],
    );
    openssl(
        &root,
        &["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"],
    );
    let ca = std::fs::read(root.join("ca.der")).unwrap();
    let ca_tbs = der_elements(&ca)[0];
    let ca_subject = der_elements(ca_tbs)[5].to_vec(); // version, serial, alg, issuer, validity, subject
    let spki = std::fs::read(root.join("client.spki")).unwrap();
    let oid = |bytes: &[u8]| der(0x06, bytes);
    let ecdsa_sha256 = der(
        0x30,
        &oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
    );
    let atv = |o: &[u8], v: &str| der(0x30, &[oid(o), der(0x0c, v.as_bytes())].concat());
    let subject = der(
        0x30,
        &[
            der(0x31, &atv(&[0x55, 0x04, 0x0a], "Example")),
            der(0x31, &[]),
            der(0x31, &atv(&[0x55, 0x04, 0x03], "mallory")),
        ]
        .concat(),
    );
    let validity = der(
        0x30,
        &[der(0x17, b"250101000000Z"), der(0x17, b"491231235959Z")].concat(),
    );
    let eku = der(
        0x30,
        &[
            oid(&[0x55, 0x1d, 0x25]),
            der(
                0x04,
                &der(
                    0x30,
                    &oid(&[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02]),
                ),
            ),
        ]
        .concat(),
    );
    let tbs = der(
        0x30,
        &[
            der(0xa0, &der(0x02, &[2])),
            der(0x02, &[0x12, 0x34]),
            ecdsa_sha256.clone(),
            ca_subject,
            validity,
            subject.clone(),
            spki,
            der(0xa3, &der(0x30, &eku)),
        ]
        .concat(),
    );
    std::fs::write(root.join("tbs.der"), &tbs).unwrap();
    openssl(
        &root,
        &[
            "dgst", "-sha256", "-sign", "ca.key", "-out", "sig.der", "tbs.der",
        ],
    );
    let sig = std::fs::read(root.join("sig.der")).unwrap();
    let cert = der(
        0x30,
        &[tbs, ecdsa_sha256, der(0x03, &[&[0u8][..], &sig].concat())].concat(),
    );
    // PEM, for the client of `subject_seen_by_validator`.
    let b64 = {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for chunk in cert.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    };
    let pem: String = b64
        .as_bytes()
        .chunks(64)
        .map(|l| format!("{}\n", std::str::from_utf8(l).unwrap()))
        .collect();
    std::fs::write(
        root.join("client.pem"),
        format!("-----BEGIN CERTIFICATE-----\n{pem}-----END CERTIFICATE-----\n"),
    )
    .unwrap();
    // Refusing the certificate would do.
    let Some(seen) = try_subject_seen_by_validator(d) else {
        return;
    };
    let whole: String = std::iter::once("#".to_string())
        .chain(subject.iter().map(|b| format!("{b:02x}")))
        .collect();
    assert!(
        seen.contains("CN=mallory") || seen == whole,
        "the validator was told the subject is {seen:?}; the certificate's is O=Example, {{}}, CN=mallory"
    );
    assert_eq!(seen, whole, "the hex of the whole subject");
}
