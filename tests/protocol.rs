//! JNHP/1 as a client sees it: every clause of protocol.md's framing,
//! requests and errors, against the real binary.

mod common;

use common::{Client, Server};

fn server() -> Server {
    Server::start("")
}

#[test]
fn store_exists_get_and_write_once() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.ask("EXISTS k"), "RARGH!");
    assert_eq!(c.ask("GET k"), "");
    assert_eq!(c.ask("STORE k v1"), "W00T!");
    assert_eq!(c.ask("EXISTS k"), "AWESOME!");
    assert_eq!(c.ask("GET k"), "v1");
    assert_eq!(c.ask("STORE k v2"), "RARGH!");
    assert_eq!(c.ask("GET k"), "v1", "a name keeps its first value");
    // Another connection sees the same map.
    assert_eq!(s.connect().ask("GET k"), "v1");
}

#[test]
fn crlf_and_bare_lf_both_end_requests() {
    let s = server();
    let mut c = s.connect();
    c.send(b"STORE a 1\r\nSTORE b 2\nGET a\nGET b\r\n");
    assert_eq!(c.line(), b"W00T!\r\n");
    assert_eq!(c.line(), b"W00T!\r\n");
    assert_eq!(c.line(), b"1\r\n");
    assert_eq!(c.line(), b"2\r\n");
}

#[test]
fn empty_and_blank_lines_get_no_reply() {
    let s = server();
    let mut c = s.connect();
    c.send(b"\r\n\n  \t \r\n\t\nEXISTS nothing\r\n");
    // Had any of the blank lines been answered, this would be its reply.
    assert_eq!(c.reply(), "RARGH!");
    c.send(b"\nGET nothing\n");
    assert_eq!(c.line(), b"\r\n");
}

#[test]
fn commands_are_case_insensitive_names_are_not() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.ask("store Name v"), "W00T!");
    assert_eq!(c.ask("StOrE name w"), "W00T!");
    assert_eq!(c.ask("get Name"), "v");
    assert_eq!(c.ask("Get name"), "w");
    assert_eq!(c.ask("exists NAME"), "RARGH!");
}

#[test]
fn blanks_around_tokens_are_ignored_inner_and_trailing_value_blanks_kept() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.ask(" \t STORE \t k1 \t  a  b\tc  \t"), "W00T!");
    c.send(b"GET k1\r\n");
    assert_eq!(c.line(), b"a  b\tc  \t\r\n");
    assert_eq!(c.ask("\t GET \t k1 \t "), "a  b\tc  \t");
    assert_eq!(c.ask("  EXISTS   k1   "), "AWESOME!");
}

#[test]
fn values_and_names_are_kept_byte_for_byte() {
    let s = server();
    let mut c = s.connect();
    let value: Vec<u8> = (1u8..=255)
        .filter(|b| ![b'\r', b'\n'].contains(b))
        .collect();
    // The value may not begin with a blank: put a letter first.
    let value = [b"x".as_slice(), &value].concat();
    let name = b"\xff\xfe\xc3\xa9-name";
    c.send(&[b"STORE ".as_slice(), name, b" ", &value, b"\r\n"].concat());
    assert_eq!(c.reply(), "W00T!");
    c.send(&[b"GET ".as_slice(), name, b"\r\n"].concat());
    assert_eq!(c.line(), [&value[..], b"\r\n"].concat());
    assert_eq!(c.ask("GET -name"), "");
}

#[test]
fn a_store_of_an_existing_name_is_refused() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.ask("STORE n first"), "W00T!");
    for _ in 0..3 {
        assert_eq!(c.ask("STORE n other"), "RARGH!");
    }
}

#[test]
fn argument_errors_keep_the_connection_open() {
    let s = server();
    let mut c = s.connect();
    for (request, reply) in [
        ("FROB a", "ERROR unknown command"),
        ("STOREX a b", "ERROR unknown command"),
        ("GET", "ERROR missing name"),
        ("EXISTS", "ERROR missing name"),
        ("STORE", "ERROR missing name"),
        ("STORE a", "ERROR missing value"),
        ("STORE a   ", "ERROR missing value"),
        ("GET a b", "ERROR too many arguments"),
        ("EXISTS a b", "ERROR too many arguments"),
    ] {
        assert_eq!(c.ask(request), reply, "for {request:?}");
    }
    assert_eq!(c.ask("STORE ok v"), "W00T!");
}

#[test]
fn forbidden_bytes_are_errors() {
    let s = server();
    let mut c = s.connect();
    for byte in (0u8..0x20).chain([0x7f]) {
        if [b'\t', b'\n', b'\r'].contains(&byte) {
            continue; // separators and line ends
        }
        c.send(&[b"GET a".as_slice(), &[byte], b"b\r\n"].concat());
        assert_eq!(c.reply(), "ERROR forbidden byte in name", "byte {byte:#x}");
    }
    c.send(b"STORE a x\x00y\r\n");
    assert_eq!(c.reply(), "ERROR forbidden byte in value");
    c.send(b"STORE a x\ry\r\n");
    assert_eq!(c.reply(), "ERROR forbidden byte in value");
    c.send(b"GET a\rb\r\n");
    assert_eq!(c.reply(), "ERROR forbidden byte in name");
    assert_eq!(c.ask("EXISTS a"), "RARGH!", "nothing was stored");
}

/// Names, values and lines at exactly their limits and one byte over, with
/// the default limits.
#[test]
fn default_limits_at_their_exact_boundaries() {
    let s = server();
    let mut c = s.connect();
    let name = "n".repeat(250);
    assert_eq!(c.ask(&format!("STORE {name} v")), "W00T!");
    assert_eq!(c.ask(&format!("GET {name}")), "v");
    assert_eq!(c.ask(&format!("GET {name}x")), "ERROR name too long");
    assert_eq!(c.ask(&format!("STORE {name}x v")), "ERROR name too long");

    let value = "v".repeat(65536);
    assert_eq!(c.ask(&format!("STORE big {value}")), "W00T!");
    assert_eq!(c.ask("GET big"), value);
    assert_eq!(
        c.ask(&format!("STORE big2 {value}x")),
        "ERROR value too long"
    );

    // The line limit is 250 + 65536 + 64 = 65850 bytes, line end excluded.
    let at_limit = format!("STORE big3 {}", "w".repeat(65850 - 11));
    assert_eq!(at_limit.len(), 65850);
    assert_eq!(
        c.ask(&at_limit),
        "ERROR value too long",
        "not a line-length error"
    );
    assert_eq!(c.ask(&format!("{at_limit}w")), "ERROR line too long");
    assert_eq!(c.ask("EXISTS big3"), "RARGH!");
}

#[test]
fn configured_limits_at_their_exact_boundaries() {
    let s = Server::start("[server]\nmax_name_bytes = 4\nmax_value_bytes = 6\n");
    let mut c = s.connect();
    assert_eq!(c.ask("STORE abcd 123456"), "W00T!");
    assert_eq!(c.ask("STORE abcde 1"), "ERROR name too long");
    assert_eq!(c.ask("STORE abc 1234567"), "ERROR value too long");
    // max line = 4 + 6 + 64 = 74.
    let line74 = format!("GET {}", "x".repeat(70));
    assert_eq!(c.ask(&line74), "ERROR name too long");
    assert_eq!(c.ask(&format!("{line74}x")), "ERROR line too long");
    // Also when the line ends with a bare LF, and when it is all blanks.
    c.send(format!("{line74}x\n{}\n", " ".repeat(75)).as_bytes());
    assert_eq!(c.reply(), "ERROR line too long");
    assert_eq!(c.reply(), "ERROR line too long");
    assert_eq!(c.ask("GET abcd"), "123456");
}

#[test]
fn an_over_long_line_is_answered_once_and_the_connection_goes_on() {
    let s = server();
    let mut c = s.connect();
    c.send(b"STORE a ");
    for _ in 0..40 {
        c.send(&[b'x'; 8192]);
    }
    c.send(b"\r\nSTORE a b\r\nGET a\r\n");
    assert_eq!(c.reply(), "ERROR line too long");
    assert_eq!(c.reply(), "W00T!");
    assert_eq!(c.reply(), "b");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = server();
    let mut c = s.connect();
    let mut burst = Vec::new();
    for i in 0..10_000 {
        match i % 4 {
            0 => burst.extend_from_slice(format!("STORE k{i} v{i}\r\n").as_bytes()),
            1 => burst.extend_from_slice(format!("GET k{}\n", i - 1).as_bytes()),
            2 => burst.extend_from_slice(format!("EXISTS k{}\r\n", i - 2).as_bytes()),
            _ => burst.extend_from_slice(format!("STORE k{} again\r\n", i - 3).as_bytes()),
        }
    }
    c.send(&burst); // one write
    for i in 0..10_000 {
        let want = match i % 4 {
            0 => "W00T!".to_string(),
            1 => format!("v{}", i - 1),
            2 => "AWESOME!".to_string(),
            _ => "RARGH!".to_string(),
        };
        assert_eq!(c.reply(), want, "reply {i}");
    }
}

#[test]
/// Like the README's `printf 'STORE a b\r\nGET a\r\n' | nc -N 127.0.0.1 8111`.
fn half_close_gets_every_reply_then_eof() {
    let s = server();
    let mut c = s.connect();
    c.send(b"STORE a b\r\nGET a\r\nEXISTS a\r\n");
    c.half_close();
    assert_eq!(c.read_to_end(), b"W00T!\r\nb\r\nAWESOME!\r\n");
}

#[test]
fn a_trailing_partial_line_at_eof_is_a_final_request() {
    let s = server();
    let mut c = s.connect();
    c.send(b"STORE a b\r\nGET a");
    c.half_close();
    assert_eq!(c.read_to_end(), b"W00T!\r\nb\r\n");

    let mut c = s.connect();
    c.send(b"GET a\r");
    c.half_close();
    assert_eq!(c.read_to_end(), b"b\r\n");
}

/// Any number of concurrent STOREs of one absent name: exactly one wins,
/// and GET returns the winner's value.
#[test]
fn concurrent_stores_of_one_name_have_exactly_one_winner() {
    let s = server();
    let addr = s.addr();
    for round in 0..20 {
        let name = format!("race{round}");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(64));
        let racers: Vec<_> = (0..64)
            .map(|i| {
                let barrier = barrier.clone();
                let name = name.clone();
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    barrier.wait();
                    (i, c.ask(&format!("STORE {name} value-{i}")))
                })
            })
            .collect();
        let results: Vec<(usize, String)> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<usize> = results
            .iter()
            .filter(|(_, r)| r == "W00T!")
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(results.iter().all(|(_, r)| r == "W00T!" || r == "RARGH!"));
        assert_eq!(
            s.connect().ask(&format!("GET {name}")),
            format!("value-{}", winners[0])
        );
    }
}

#[test]
fn each_request_sees_the_connections_earlier_requests() {
    let s = server();
    let mut c = s.connect();
    c.send(b"STORE a x\r\nGET a\r\nEXISTS a\r\nSTORE a y\r\nGET a\r\n");
    assert_eq!(c.reply(), "W00T!");
    assert_eq!(c.reply(), "x");
    assert_eq!(c.reply(), "AWESOME!");
    assert_eq!(c.reply(), "RARGH!");
    assert_eq!(c.reply(), "x");
}

/// Random bytes (line ends, blanks, commands and NULs among them) on many
/// connections at once: the server answers what it can, stays up, and keeps
/// serving a well-behaved client.
#[test]
fn random_bytes_on_many_connections_crash_nothing() {
    use std::io::Read;
    let s = Server::start("[server]\nmax_name_bytes = 16\nmax_value_bytes = 64\n");
    let addr = s.addr();
    let pieces: [&[u8]; 12] = [
        b"\r\n",
        b"\n",
        b" ",
        b"\t",
        b"STORE ",
        b"GET ",
        b"EXISTS ",
        b"\x00",
        b"\xff\xfe",
        b"\r",
        b"x",
        b"store",
    ];
    let noisy: Vec<_> = (0..16u64)
        .map(|seed| {
            std::thread::spawn(move || {
                let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut c = Client::connect(addr);
                let mut sent = Vec::new();
                for _ in 0..50_000 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if rng % 3 == 0 {
                        sent.push((rng >> 8) as u8);
                    } else {
                        sent.extend_from_slice(pieces[(rng >> 16) as usize % pieces.len()]);
                    }
                }
                c.send(&sent);
                c.half_close();
                // Every reply is a CRLF-terminated line; then the server closes.
                let mut replies = Vec::new();
                c.reader.read_to_end(&mut replies).unwrap();
                assert!(replies.is_empty() || replies.ends_with(b"\r\n"));
            })
        })
        .collect();
    for t in noisy {
        t.join().unwrap();
    }
    let mut c = s.connect();
    assert_eq!(c.ask("STORE after-the-noise ok"), "W00T!");
    assert_eq!(c.ask("GET after-the-noise"), "ok");
}

/// A value may not begin with `ERROR ` (so a GET reply that does is
/// always an error); `ERROR` alone, `ERRORS x` or `error x` are values.
#[test]
fn values_beginning_with_error_are_reserved() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a ERROR shutting down"), "ERROR reserved value");
    assert_eq!(c.ask("EXISTS a"), "RARGH!");
    assert_eq!(c.ask("STORE a ERROR "), "ERROR reserved value");
    assert_eq!(c.ask("STORE b ERROR"), "W00T!");
    assert_eq!(c.ask("STORE c ERRORS x"), "W00T!");
    assert_eq!(c.ask("STORE d error x"), "W00T!");
    assert_eq!(c.ask("GET b"), "ERROR");
    assert_eq!(c.ask("GET d"), "error x");
}
