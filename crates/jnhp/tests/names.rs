//! `jnhp names` against the real daemon: raw names one a line, paging
//! with `--limit` and `--after`, prefixes, `--follow` until interrupted,
//! and a clear exit 2 when listing is off.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, admin_addr};

fn jnhp(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jnhp"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn listing(list: bool) -> (Server, String) {
    let server = Server::start(&format!(
        "[storage]\npath = \"data\"\n[admin]\nlisten = [\"127.0.0.1:0\"]\nlist_names = {list}\n"
    ));
    let admin = admin_addr(&server).to_string();
    (server, admin)
}

fn store(server: &Server, name: &[u8]) {
    let mut c = server.connect();
    let mut line = b"STORE ".to_vec();
    line.extend_from_slice(name);
    line.extend_from_slice(b" v\n");
    c.send(&line);
    assert_eq!(c.reply(), "W00T!");
}

/// The cursor `jnhp names` printed on stderr.
fn cursor(stderr: &str) -> String {
    let line = stderr
        .lines()
        .rfind(|l| l.contains("--after "))
        .unwrap_or_else(|| panic!("no cursor: {stderr}"));
    line.rsplit(' ').next().unwrap().to_string()
}

#[test]
fn jnhp_names_prints_raw_names_pages_and_goes_on_from_the_cursor() {
    let (server, admin) = listing(true);
    for name in [&b"b1"[..], b"a1", b"\xff\xfebin", b"a2"] {
        store(&server, name);
    }
    let (code, out, err) = jnhp(&["names", "--admin", &admin]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, b"b1\na1\n\xff\xfebin\na2\n");
    let (code, out, err) = jnhp(&["names", "--admin", &admin, "--limit", "2"]);
    assert_eq!((code, out), (0, b"b1\na1\n".to_vec()), "{err}");
    let (code, out, err2) = jnhp(&["names", "--admin", &admin, "--after", &cursor(&err)]);
    assert_eq!((code, out), (0, b"\xff\xfebin\na2\n".to_vec()), "{err2}");
    let (code, out, _) = jnhp(&["names", "--admin", &admin, "--prefix", "a"]);
    assert_eq!((code, out), (0, b"a1\na2\n".to_vec()));
    // A binary prefix, as bytes of the argument.
    let out = Command::new(env!("CARGO_BIN_EXE_jnhp"))
        .args(["names", "--admin", &admin, "--prefix"])
        .arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"\xff"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"\xff\xfebin\n");
    // A bad cursor: the server's reason, exit 2.
    let (code, _, err) = jnhp(&["names", "--admin", &admin, "--after", "12-3-nonsense"]);
    assert_eq!(code, 2);
    assert!(err.contains("400") && err.contains("cursor"), "{err}");
}

#[test]
fn jnhp_names_exits_2_with_a_clear_message_when_listing_is_off() {
    let (_server, admin) = listing(false);
    let (code, out, err) = jnhp(&["names", "--admin", &admin]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("admin.list_names = true"), "{err}");
}

#[test]
fn jnhp_names_follow_prints_new_names_until_interrupted() {
    let (server, admin) = listing(true);
    store(&server, b"old");
    let mut follow = Command::new(env!("CARGO_BIN_EXE_jnhp"))
        .args(["names", "--admin", &admin, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "old\n");
    for name in ["new1", "new2"] {
        let started = Instant::now();
        store(&server, name.as_bytes());
        line.clear();
        lines.read_line(&mut line).unwrap();
        assert_eq!(line, format!("{name}\n"));
        assert!(started.elapsed() < Duration::from_secs(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(follow.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = common::wait_exit(&mut follow);
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut follow.stderr.take().unwrap(), &mut err).unwrap();
    // The cursor printed goes on after new2.
    store(&server, b"after");
    let (code, out, _) = jnhp(&["names", "--admin", &admin, "--after", &cursor(&err)]);
    assert_eq!((code, out), (0, b"after\n".to_vec()));
}
