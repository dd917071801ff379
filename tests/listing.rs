//! `GET /names` on the admin listener (docs/observability.md, "Listing
//! names") against the real binary over real HTTP: off by default, paging
//! in order of storing, following, prefixes, cursors good and bad, only
//! synced names, restarts, PostgreSQL, and hostile clients.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Server, admin_addr, get};
use nix::sys::signal::Signal;
use serde_json::Value;

/// A server with a data file and an admin listener; `list` turns listing
/// on, `fsync` is the data file's mode.
fn listing_server(list: bool, fsync: &str) -> (Server, SocketAddr) {
    let server = Server::start(&config(list, fsync));
    let admin = admin_addr(&server);
    (server, admin)
}

fn config(list: bool, fsync: &str) -> String {
    format!(
        "[server]\nshutdown_grace_secs = 5\n\
         [storage]\npath = \"data\"\nfsync = \"{fsync}\"\n\
         [admin]\nlisten = [\"127.0.0.1:0\"]\nlist_names = {list}\n"
    )
}

/// A page: the names (bytes), the cursor to go on from, and whether the
/// listing was at the end.
#[derive(Debug)]
struct Page {
    names: Vec<Vec<u8>>,
    next: String,
    end: bool,
}

fn parse_page(body: &str) -> Page {
    let mut names = Vec::new();
    let mut last = None;
    for line in body.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(last.is_none(), "a line after the cursor line: {body}");
        if let Some(name) = v.get("name") {
            names.push(name.as_str().unwrap().as_bytes().to_vec());
        } else if let Some(b64) = v.get("name_base64") {
            names.push(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_str().unwrap())
                    .unwrap(),
            );
        } else {
            last = Some((
                v["next"].as_str().unwrap().to_string(),
                v["end"].as_bool().unwrap(),
            ));
        }
        assert!(
            v.as_object().unwrap().len() <= 2,
            "one name a line, nothing else: {line}"
        );
    }
    let (next, end) = last.unwrap_or_else(|| panic!("no cursor line: {body}"));
    Page { names, next, end }
}

/// `GET /names?query`, expecting 200.
fn page(admin: SocketAddr, query: &str) -> Page {
    let (status, _, body) = get(admin, &format!("/names?{query}"));
    assert_eq!(status, 200, "{query}: {body}");
    parse_page(&body)
}

/// Stores every `(name, value)` over one pipelined connection.
fn store_all(server: &Server, pairs: &[(Vec<u8>, Vec<u8>)]) {
    let mut c = server.connect();
    let mut out = Vec::new();
    for (name, value) in pairs {
        out.extend_from_slice(b"STORE ");
        out.extend_from_slice(name);
        out.push(b' ');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    c.send(&out);
    for (name, _) in pairs {
        assert_eq!(c.reply(), "W00T!", "{}", String::from_utf8_lossy(name));
    }
}

fn pairs(names: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
    names
        .iter()
        .map(|n| (n.to_vec(), b"value".to_vec()))
        .collect()
}

#[test]
fn listing_is_off_by_default_and_says_which_key_turns_it_on() {
    let server = Server::start("[storage]\npath = \"data\"\n[admin]\nlisten = [\"127.0.0.1:0\"]\n");
    let admin = admin_addr(&server);
    let mut c = server.connect();
    assert_eq!(c.ask("STORE secret 1"), "W00T!");
    let (status, _, body) = get(admin, "/names");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin.list_names = true"), "{body}");
    assert!(!body.contains("secret"), "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
    // Only GET (and HEAD) even when on.
    let (_on, admin_on) = listing_server(true, "always");
    let (status, _, _) = common::http(
        admin_on,
        "POST /names HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
}

#[test]
fn pages_of_2500_names_come_in_order_of_storing_then_a_long_poll_follows() {
    let (server, admin) = listing_server(true, "always");
    // Storing order differs from name order: a listing in name order
    // would fail this.
    let names: Vec<Vec<u8>> = (0..2500u32)
        .map(|i| format!("n{:05}", (i * 7919) % 2500).into_bytes())
        .collect();
    let stored: Vec<(Vec<u8>, Vec<u8>)> =
        names.iter().map(|n| (n.clone(), b"v".to_vec())).collect();
    store_all(&server, &stored);
    let mut listed = Vec::new();
    let mut cursor = String::new();
    let mut sizes = Vec::new();
    loop {
        let p = page(admin, &format!("after={cursor}&limit=1000"));
        sizes.push(p.names.len());
        listed.extend(p.names);
        cursor = p.next;
        if p.end {
            break;
        }
        assert!(sizes.len() < 10, "the listing does not end: {sizes:?}");
    }
    assert_eq!(listed, names, "every name once, in order of storing");
    assert_eq!(sizes[..3], [1000, 1000, 500], "{sizes:?}");
    // The default page is 100 names.
    assert_eq!(page(admin, "").names.len(), 100);
    // At the end, a long poll returns as soon as a name is stored from
    // another connection.
    let poll = {
        let cursor = cursor.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            (
                page(admin, &format!("after={cursor}&wait=50")),
                started.elapsed(),
            )
        })
    };
    // The poll is waiting (no answer yet) before the name is stored.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!poll.is_finished(), "the poll answered without a new name");
    assert_eq!(server.connect().ask("STORE fresh v"), "W00T!");
    let (p, took) = poll.join().unwrap();
    assert_eq!(p.names, [b"fresh".to_vec()]);
    assert!(p.end);
    assert!(took < Duration::from_secs(40), "{took:?}");
    // Nothing new: the poll times out empty, with the same cursor.
    let started = Instant::now();
    let empty = page(admin, &format!("after={}&wait=1", p.next));
    assert!(empty.names.is_empty() && empty.end);
    assert_eq!(empty.next, p.next);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_prefix_filters_and_binary_prefixes_work_percent_encoded() {
    let (server, admin) = listing_server(true, "always");
    store_all(
        &server,
        &pairs(&[
            b"a1",
            b"b1",
            b"a2",
            b"\xff\x80x",
            b"\xffy",
            b"a+b",
            b"a%b",
            b"caf\xc3\xa9",
        ]),
    );
    let names = |q: &str| page(admin, q).names;
    assert_eq!(
        names("prefix=a"),
        [
            b"a1".to_vec(),
            b"a2".to_vec(),
            b"a+b".to_vec(),
            b"a%b".to_vec()
        ]
    );
    assert_eq!(
        names("prefix=%FF"),
        [b"\xff\x80x".to_vec(), b"\xffy".to_vec()]
    );
    assert_eq!(names("prefix=%ff%80"), [b"\xff\x80x".to_vec()]);
    // `+` is a plus sign, `%25` a percent sign.
    assert_eq!(names("prefix=a+"), [b"a+b".to_vec()]);
    assert_eq!(names("prefix=a%25"), [b"a%b".to_vec()]);
    assert_eq!(names("prefix=caf%C3%A9"), [b"caf\xc3\xa9".to_vec()]);
    assert!(names("prefix=zzz").is_empty());
    // A UTF-8 name is a JSON string, any other a base64 one.
    let (_, _, body) = get(admin, "/names?prefix=%FFy");
    assert!(body.starts_with("{\"name_base64\":\"/3k=\"}\n"), "{body}");
    let (_, _, body) = get(admin, "/names?prefix=caf");
    assert!(body.starts_with("{\"name\":\"café\"}\n"), "{body}");
}

#[test]
fn a_prefix_over_a_large_log_scans_a_bounded_amount_per_request() {
    let server = Server::start(
        &config(true, "always").replace("[server]", "[server]\nmax_value_bytes = 2000000"),
    );
    let admin = admin_addr(&server);
    // 48 records of a 1 MiB value: 48 MiB of log, no name matching.
    let big = vec![b'v'; 1 << 20];
    let stored: Vec<(Vec<u8>, Vec<u8>)> = (0..48)
        .map(|i| (format!("big{i:02}").into_bytes(), big.clone()))
        .collect();
    store_all(&server, &stored);
    let mut cursor = String::new();
    let mut requests = 0;
    loop {
        let p = page(admin, &format!("after={cursor}&prefix=nomatch&limit=1000"));
        assert!(p.names.is_empty());
        requests += 1;
        cursor = p.next;
        if p.end {
            break;
        }
        assert!(requests < 100);
    }
    // 8 MiB a request at most: several requests, each with a cursor that
    // moved on although the page was empty.
    assert!(requests >= 5, "{requests} requests scanned 48 MiB");
    // Without a prefix too, a page ends after 8 MiB of records: here 8
    // names, then the cursor to go on from.
    let (_, _, body) = get(admin, "/names?limit=1000");
    assert!(!body.contains("vvvv"), "a value in the listing");
    let first = parse_page(&body);
    assert_eq!(first.names.len(), 8);
    assert!(!first.end);
}

#[test]
fn bad_parameters_get_400_with_a_clear_message() {
    let (server, admin) = listing_server(true, "always");
    store_all(&server, &pairs(&[b"a", b"b"]));
    for (query, says) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=1000000000000", "limit"),
        ("limit=abc", "limit"),
        ("wait=-1", "wait"),
        ("wait=61", "wait"),
        ("wait=1e3", "wait"),
        ("prefix=%zz", "percent"),
        ("after=garbage", "cursor"),
        ("after=16-14-zzzzzzzz", "cursor"),
        ("after=k6161", "cursor"),
        (
            "after=18446744073709551615-18446744073709551615-00000000",
            "cursor",
        ),
        ("after=18446744073709551615-14-00000000", "past the end"),
        ("colour=blue", "unknown parameter"),
        ("limit=1&limit=2", "twice"),
    ] {
        let (status, _, body) = get(admin, &format!("/names?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
        assert_eq!(body.lines().count(), 1, "{query}: {body}");
    }
    // A prefix longer than any name can be.
    let (status, _, body) = get(admin, &format!("/names?prefix={}", "a".repeat(300)));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("prefix"), "{body}");
    // A 1 MB prefix: refused by the admin listener's head limit, and the
    // server goes on.
    let (status, _, _) = get(admin, &format!("/names?prefix={}", "a".repeat(1 << 20)));
    assert!((400..500).contains(&status), "{status}");
    assert_eq!(page(admin, "").names.len(), 2);
    assert_eq!(server.connect().ask("GET a"), "value");
}

#[test]
fn a_cursor_that_is_not_a_record_boundary_or_past_the_end_is_refused() {
    let (server, admin) = listing_server(true, "always");
    store_all(&server, &pairs(&[b"first", b"second", b"third"]));
    let one = page(admin, "limit=1");
    assert_eq!(one.names, [b"first".to_vec()]);
    let (offset, rest) = one.next.split_once('-').unwrap();
    let offset: u64 = offset.parse().unwrap();
    let (len, crc) = rest.split_once('-').unwrap();
    let len: u64 = len.parse().unwrap();
    // The good cursor works.
    assert_eq!(
        page(admin, &format!("after={}", one.next)).names,
        [b"second".to_vec(), b"third".to_vec()]
    );
    let mut refused = 0;
    for o in offset.saturating_sub(6)..offset + 30 {
        for l in [len - 1, len, len + 1] {
            for c in [
                crc.to_string(),
                format!("{:08x}", u32::from_str_radix(crc, 16).unwrap() ^ 1),
            ] {
                let cursor = format!("{o}-{l}-{c}");
                if cursor == one.next {
                    continue;
                }
                let (status, _, body) = get(admin, &format!("/names?after={cursor}"));
                assert_eq!(status, 400, "{cursor}: {body}");
                assert!(body.contains("cursor"), "{cursor}: {body}");
                refused += 1;
            }
        }
    }
    assert!(refused > 100);
    // Past the end, also while waiting.
    let (status, _, body) = get(
        admin,
        &format!("/names?after={}-{len}-{crc}&wait=5", offset + 100000),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("past the end"), "{body}");
}

#[test]
fn names_only_never_values() {
    let (server, admin) = listing_server(true, "always");
    let stored: Vec<(Vec<u8>, Vec<u8>)> = (0..50)
        .map(|i| {
            (
                format!("k{i}").into_bytes(),
                format!("SECRETVALUE{i}").into_bytes(),
            )
        })
        .collect();
    store_all(&server, &stored);
    let (_, head, body) = get(admin, "/names?limit=1000");
    assert!(!body.contains("SECRETVALUE"), "{body}");
    assert!(!head.contains("SECRETVALUE"), "{head}");
    assert!(head.contains("application/x-ndjson"), "{head}");
    assert_eq!(parse_page(&body).names.len(), 50);
}

#[test]
fn a_cursor_stays_valid_across_a_restart() {
    let (mut server, admin) = listing_server(true, "always");
    store_all(&server, &pairs(&[b"one", b"two"]));
    let first = page(admin, "");
    assert_eq!(first.names, [b"one".to_vec(), b"two".to_vec()]);
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success());
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(server.path("data"), dir.path().join("data")).unwrap();
    drop(server);
    let server = Server::start_in(dir, &config(true, "always"));
    let admin = admin_addr(&server);
    store_all(&server, &pairs(&[b"three"]));
    let next = page(admin, &format!("after={}", first.next));
    assert_eq!(next.names, [b"three".to_vec()]);
    assert!(next.end);
}

#[test]
fn a_name_written_but_not_yet_synced_is_not_listed() {
    // fsync = "never": a STORE is answered once written, and the file is
    // synced at start and at shutdown only. A crash of the machine could
    // take the name back, so the listing must not show it yet.
    let (mut server, admin) = listing_server(true, "never");
    assert_eq!(server.connect().ask("STORE unsynced v"), "W00T!");
    assert_eq!(server.connect().ask("GET unsynced"), "v");
    let p = page(admin, "");
    assert!(p.names.is_empty(), "{p:?}");
    assert!(p.end);
    // The record is in the file (so the listing had something to show).
    let data = std::fs::read(server.path("data")).unwrap();
    assert!(data.windows(8).any(|w| w == b"unsynced"));
    // A long poll is not woken by the write either.
    let started = Instant::now();
    let p = page(admin, &format!("after={}&wait=1", p.next));
    assert!(p.names.is_empty() && started.elapsed() >= Duration::from_millis(900));
    // Synced at shutdown, listed after the restart.
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success());
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(server.path("data"), dir.path().join("data")).unwrap();
    drop(server);
    let server = Server::start_in(dir, &config(true, "never"));
    assert_eq!(page(admin_addr(&server), "").names, [b"unsynced".to_vec()]);
}

#[test]
fn everysec_lists_a_name_once_it_is_synced() {
    let (server, admin) = listing_server(true, "everysec");
    let cursor = page(admin, "").next;
    let started = Instant::now();
    assert_eq!(server.connect().ask("STORE soon v"), "W00T!");
    let p = page(admin, &format!("after={cursor}&wait=30"));
    assert_eq!(p.names, [b"soon".to_vec()]);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn the_memory_store_says_listing_needs_a_data_file_or_postgres() {
    let server = Server::start("[admin]\nlisten = [\"127.0.0.1:0\"]\nlist_names = true\n");
    let (status, _, body) = get(admin_addr(&server), "/names");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("data file or PostgreSQL"), "{body}");
}

/// Opens `n` connections, each sending a long poll, without reading.
fn long_polls(admin: SocketAddr, query: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect(admin).ok()?;
            let request =
                format!("GET /names?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(request.as_bytes()).ok()?;
            Some(s)
        })
        .collect()
}

#[test]
fn a_thousand_long_polls_stay_bounded_and_do_not_hold_up_shutdown() {
    // A thousand client sockets, in this process that runs the other
    // tests of the file at the same time: past a login's usual soft limit
    // of 1024 descriptors (their connects failed with EMFILE as a
    // non-root user on a fresh machine). The hard limit allows more.
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let (mut server, admin) = listing_server(true, "always");
    store_all(&server, &pairs(&[b"a"]));
    let end = page(admin, "").next;
    let before = server.rss_kib();
    let mut polls = long_polls(admin, &format!("after={end}&wait=60"), 1000);
    // Let them all arrive (the admin listener closes what is over its
    // connection limit at once, and answers polls over the waiting limit
    // 503).
    std::thread::sleep(Duration::from_secs(2));
    // Clients and the admin's health check still get answers.
    let started = Instant::now();
    assert_eq!(server.connect().ask("STORE b v"), "W00T!");
    assert_eq!(server.connect().ask("GET a"), "value");
    let (status, _, _) = get(admin, "/healthz");
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(10));
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    // The new name woke the waiting polls: their answers hold it. Start
    // a fresh thousand that wait from the new end, then SIGTERM.
    let mut answers = [0usize; 3];
    for s in &mut polls {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        if text.starts_with("HTTP/1.1 200") {
            assert!(text.contains("{\"name\":\"b\"}"), "{text}");
            answers[0] += 1;
        } else if text.starts_with("HTTP/1.1 503") {
            assert!(text.contains("long polls wait already"), "{text}");
            answers[1] += 1;
        } else {
            answers[2] += 1;
        }
    }
    assert!(answers[0] >= 1 && answers[0] <= 32, "{answers:?}");
    assert!(answers[1] >= 1, "none over the waiting limit: {answers:?}");
    drop(polls);
    let end = page(admin, &format!("after={end}")).next;
    let mut waiting = long_polls(admin, &format!("after={end}&wait=60"), 1000);
    std::thread::sleep(Duration::from_secs(2));
    let stopping = Instant::now();
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success());
    // shutdown_grace_secs = 5: well before the polls' 60 s.
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "{:?}",
        stopping.elapsed()
    );
    // The polls that waited were answered (an empty page and the same
    // cursor), not cut off.
    let mut answered = 0;
    for s in &mut waiting {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        if text.starts_with("HTTP/1.1 200") {
            let body = text.split_once("\r\n\r\n").unwrap().1;
            let p = parse_page(body);
            assert!(p.names.is_empty() && p.end && p.next == end, "{text}");
            answered += 1;
        }
    }
    assert!((1..=32).contains(&answered), "{answered}");
}

#[test]
fn postgres_lists_in_name_order_across_front_ends() {
    require!(Postgres);
    let pg = pg::Postgres::start();
    let url = pg.url(&pg.create_db("listing"));
    let front = |list: bool| {
        Server::start(&format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{url}\"\n\
             [admin]\nlisten = [\"127.0.0.1:0\"]\nlist_names = {list}\n"
        ))
    };
    let one = front(true);
    let two = front(false);
    let admin = admin_addr(&one);
    store_all(&one, &pairs(&[b"m", b"b", b"\xff\x80"]));
    store_all(&two, &pairs(&[b"a", b"mz", b"ma"]));
    let all = page(admin, "limit=1000");
    assert_eq!(
        all.names,
        [
            b"a".to_vec(),
            b"b".to_vec(),
            b"m".to_vec(),
            b"ma".to_vec(),
            b"mz".to_vec(),
            b"\xff\x80".to_vec()
        ]
    );
    assert!(all.end);
    // Paging by two: the keyset cursor goes on after the last name.
    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let p = page(admin, &format!("after={cursor}&limit=2"));
        listed.extend(p.names);
        cursor = p.next;
        if p.end {
            break;
        }
    }
    assert_eq!(listed, all.names);
    assert_eq!(
        page(admin, "prefix=m").names,
        [b"m".to_vec(), b"ma".to_vec(), b"mz".to_vec()]
    );
    assert_eq!(
        page(admin, "prefix=m&after=k6d&limit=1").names,
        [b"ma".to_vec()]
    );
    assert_eq!(page(admin, "prefix=%FF").names, [b"\xff\x80".to_vec()]);
    // A name stored later past the cursor shows up in the next page.
    // (one sorting before it does not: name order, documented.)
    store_all(&two, &pairs(&[b"\xff\xff", b"zz"]));
    assert_eq!(
        page(admin, &format!("after={cursor}")).names,
        [b"\xff\xff".to_vec()]
    );
    // Following needs a data file; data-file cursors are refused.
    let (status, _, body) = get(admin, "/names?wait=1");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("data file"), "{body}");
    let (status, _, body) = get(admin, "/names?after=16-14-00000000");
    assert_eq!(status, 400, "{body}");
    // The other front-end has it off.
    assert_eq!(get(admin_addr(&two), "/names").0, 403);
}

#[test]
fn a_postgres_page_is_bounded_by_bytes_and_paging_still_sees_every_name() {
    require!(Postgres);
    let pg = pg::Postgres::start();
    let url = pg.url(&pg.create_db("listing_bytes"));
    let server = Server::start(&format!(
        "[server]\nmax_name_bytes = 2000\n\
         [storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{url}\"\n\
         [admin]\nlisten = [\"127.0.0.1:0\"]\nlist_names = true\n"
    ));
    let admin = admin_addr(&server);
    // 600 names of 1,900 bytes: 1.1 MB of names, more than one page holds.
    let stored: Vec<(Vec<u8>, Vec<u8>)> = (0..600)
        .map(|i| {
            (
                format!("{i:04}{}", "n".repeat(1896)).into_bytes(),
                b"v".to_vec(),
            )
        })
        .collect();
    store_all(&server, &stored);
    let first = page(admin, "limit=1000");
    assert!(
        !first.end && !first.names.is_empty() && first.names.len() < 600,
        "{} names, end {}",
        first.names.len(),
        first.end
    );
    let mut listed = first.names;
    let mut cursor = first.next;
    for _ in 0..20 {
        let p = page(admin, &format!("after={cursor}&limit=1000"));
        listed.extend(p.names);
        cursor = p.next;
        if p.end {
            break;
        }
    }
    let names: Vec<Vec<u8>> = stored.into_iter().map(|(n, _)| n).collect();
    assert_eq!(listed, names);
}
