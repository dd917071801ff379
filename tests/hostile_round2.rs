//! Hostile round 2: the in-flight budget, clients that leave, pidfiles,
//! syslog, replay. Each test is a defect a hostile tester found, pinned
//! to a promise of docs/; it failed before its fix.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::Server;

/// operations.md, "Memory and clients that leave": "A line larger than
/// what is left (values near the budget, or many connections each in the
/// middle of a long line) is let through one connection at a time without
/// paying ... so ... no set of long lines can stall the server."
///
/// With `max_inflight_bytes` at 1 MiB, four clients each send the first
/// 300 KB of a STORE (each line shorter than the budget, all four longer)
/// and stall. A fifth client's `EXISTS` then gets no reply at all while
/// the server sits idle: the stalled half-lines hold the whole budget and
/// nothing is read from anyone else until they leave. The same happens
/// with one client stalled 1.1 MB into a line (max_value_bytes 4 MB).
#[test]
fn stalled_half_lines_do_not_stall_other_clients() {
    for (stallers, bytes) in [(4usize, 300_000usize), (1, 1_100_000)] {
        let server =
            Server::start("[server]\nmax_inflight_bytes = 1048576\nmax_value_bytes = 4000000\n");
        let mut held = Vec::new();
        for i in 0..stallers {
            let mut c = server.connect();
            let mut line = format!("STORE long{i} ").into_bytes();
            line.resize(line.len() + bytes, b'x');
            c.send(&line);
            held.push(c);
        }
        std::thread::sleep(Duration::from_millis(500));
        let mut other = server.connect();
        other
            .stream()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let started = Instant::now();
        other.send(b"EXISTS small\r\n");
        let mut buf = [0u8; 64];
        let got = other.reader.read(&mut buf);
        assert!(
            matches!(got, Ok(n) if n > 0),
            "{stallers} client(s) stalled {bytes} bytes into a line: another client's \
             EXISTS got no reply in {:?} ({got:?})",
            started.elapsed()
        );
        assert_eq!(&buf[..8], b"RARGH!\r\n");
        drop(held);
    }
}
