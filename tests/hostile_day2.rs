//! Hostile tests of the day-2 features against the real daemon: listing
//! names (`GET /names`) and the log file (`log.target = "file"`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Server, admin_addr, get};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The names of a `/names` page (UTF-8 ones; the tests store no others)
/// and its cursor.
fn parse_page(body: &str) -> (Vec<String>, String, bool) {
    let mut names = Vec::new();
    let mut next = None;
    for line in body.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if let Some(name) = v.get("name") {
            names.push(name.as_str().unwrap().to_string());
        } else {
            next = Some((
                v["next"].as_str().unwrap().to_string(),
                v["end"].as_bool().unwrap(),
            ));
        }
    }
    let (next, end) = next.unwrap_or_else(|| panic!("no cursor line: {body}"));
    (names, next, end)
}

fn names_page(admin: SocketAddr, query: &str) -> (Vec<String>, String, bool) {
    let (status, _, body) = get(admin, &format!("/names?{query}"));
    assert_eq!(status, 200, "{query}: {body}");
    parse_page(&body)
}

/// An `LD_PRELOAD` shim that, while a trigger file exists, makes the data
/// file's writer thread (`jnhpd-datafile`) pause for a while after every
/// wake-up it sends another thread (an eventfd `write` or a `FUTEX_WAKE`).
/// The pause lands right after the writer tells the world a sync happened:
/// whatever the daemon does between that and acknowledging the records
/// becomes a window wide enough to be seen.
const SLOW_WRITER_SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void pause_if_writer(void) {
    const char *trigger = getenv("JNHP_TEST_SLOW_WRITER");
    struct stat st;
    char name[32] = {0};
    if (trigger == NULL || stat(trigger, &st) != 0) return;
    prctl(PR_GET_NAME, name, 0, 0, 0);
    if (strcmp(name, "jnhpd-datafile") == 0) usleep(300 * 1000);
}

ssize_t write(int fd, const void *buf, size_t n) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "write");
    ssize_t r = real(fd, buf, n);
    if (n == 8) pause_if_writer();
    return r;
}

long syscall(long number, ...) {
    static long (*real)(long, ...);
    if (!real) real = dlsym(RTLD_NEXT, "syscall");
    va_list ap;
    va_start(ap, number);
    long a = va_arg(ap, long), b = va_arg(ap, long), c = va_arg(ap, long);
    long d = va_arg(ap, long), e = va_arg(ap, long), f = va_arg(ap, long);
    va_end(ap);
    long r = real(number, a, b, c, d, e, f);
    if (number == SYS_futex && ((b & 0x7f) == FUTEX_WAKE || (b & 0x7f) == FUTEX_WAKE_PRIVATE))
        pause_if_writer();
    return r;
}
"#;

/// docs/observability.md: "A listing shows a name only once it is
/// durable ... a consumer following the feed never sees a name that later
/// disappears". A consumer that lists a name and GETs it at once must
/// find it: the writer announced the sync (waking the long poll) before
/// the store put the name in its map, so the GET missed. And a name
/// answered `W00T!` must be listed at once (`fsync = "always"`).
#[test]
fn a_name_listed_by_a_long_poll_is_found_by_a_get_at_once() {
    let shims = tempfile::tempdir().unwrap();
    let lib = common::shim::build(shims.path(), "slowwriter", SLOW_WRITER_SHIM);
    let trigger = shims.path().join("slow");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jnhp.toml");
    std::fs::write(
        &config,
        "[storage]\npath = \"data\"\nfsync = \"always\"\n\
         [admin]\nlisten = [\"127.0.0.1:0\"]\nlist_names = true\n",
    )
    .unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("LD_PRELOAD", &lib)
        .env("JNHP_TEST_SLOW_WRITER", &trigger);
    let mut server = Server::spawn(cmd, dir, Some(config));
    let admin = admin_addr(&server);
    let mut storer = server.connect();
    let mut getter = server.connect();
    assert_eq!(storer.ask("STORE first 1"), "W00T!");
    let (names, mut cursor, end) = names_page(admin, "");
    assert_eq!((names, end), (vec!["first".to_string()], true));

    std::fs::write(&trigger, "").unwrap();
    for round in 0..3 {
        let poll = {
            let cursor = cursor.clone();
            std::thread::spawn(move || names_page(admin, &format!("after={cursor}&wait=30")))
        };
        // The long poll is waiting once the admin listener holds it; a
        // STORE sent before it waits is found by its first read anyway.
        let name = format!("name{round}");
        storer.send(format!("STORE {name} value{round}\n").as_bytes());
        let (names, next, _) = poll.join().unwrap();
        assert_eq!(names, vec![name.clone()]);
        let got = getter.ask(&format!("GET {name}"));
        assert_eq!(
            got,
            format!("value{round}"),
            "{name} was listed, GET missed it"
        );
        assert_eq!(storer.reply(), "W00T!");
        cursor = next;
    }
    std::fs::remove_file(&trigger).unwrap();
    // And the other way round, as the doc promises it: a name answered
    // W00T! is listed at once.
    for i in 0..100 {
        let name = format!("acked{i}");
        assert_eq!(storer.ask(&format!("STORE {name} v")), "W00T!");
        let (names, next, _) = names_page(admin, &format!("after={cursor}"));
        assert_eq!(names, vec![name], "answered W00T!, not listed");
        cursor = next;
    }
    server.signal(Signal::SIGTERM);
    server.wait_exit();
}

/// Waits until `path` holds `needle`, reading it as it grows.
fn wait_for_text(path: &Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} has no {needle:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Kills the daemon when the test ends, whatever happens.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// docs/operations.md: "A line that cannot be written (a full disk) is
/// lost" and no line is ever split. On a full file system a line's write
/// is often short (the part that fit in the file's last page), and the
/// rest failed: the part stayed in the file without its line end, and
/// the first line written once there was room again was glued to it.
/// The daemon runs in a mount namespace of its own on a 64 KiB tmpfs
/// (`unshare -m`, as root), seen from here through /proc/PID/root.
#[test]
fn a_full_disk_loses_log_lines_whole_and_never_glues_two_together() {
    require!(Root);
    let mount = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jnhp.toml");
    let log_path = mount.path().join("jnhpd.log");
    std::fs::write(
        &config,
        format!(
            "[log]\ntarget = \"file\"\nfile = \"{}\"\nlevel = \"debug\"\n",
            log_path.display()
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=64k tmpfs \"$1\" && shift && exec \"$@\"")
        .arg("sh")
        .arg(mount.path())
        .arg(common::bin())
        .arg("--config")
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("unshare (util-linux)");
    let pid = child.id();
    let _reap = Reap(child);
    // The daemon's view of the tmpfs.
    let inside = PathBuf::from(format!("/proc/{pid}/root")).join(
        mount
            .path()
            .strip_prefix("/")
            .expect("an absolute temporary directory"),
    );
    let log = inside.join("jnhpd.log");
    wait_for_text(&log, "listening on");
    // Fill the file system to the last page.
    let filler = inside.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let page = [b'f'; 4096];
        while file.write_all(&page).is_ok() {}
        while file.write_all(b"f").is_ok() {}
    }
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let connect = |n: usize| {
        for _ in 0..n {
            let mut c = common::Client::connect(addr);
            assert_eq!(c.ask("EXISTS x"), "RARGH!");
        }
    };
    // Lines until the log file's last page is full, and some lost.
    let before = std::fs::metadata(&log).unwrap().len();
    connect(150);
    let full = std::fs::metadata(&log).unwrap().len();
    assert!(full > before, "no line fitted at all");
    let logged = |text: &str| text.matches("connection from").count();
    let read = || String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    let at_full = logged(&read());
    // Room again: later lines are whole, each on its own line.
    std::fs::remove_file(&filler).unwrap();
    connect(6);
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let mut text = read();
    while logged(&text) < at_full + 6 {
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
        text = read();
    }
    for line in text.lines() {
        let (stamp, rest) = line.split_once(' ').unwrap_or(("", ""));
        assert!(
            stamp.len() == 20 && stamp.ends_with('Z'),
            "a line without its timestamp: {line:?}"
        );
        assert!(
            rest.starts_with(&format!("jnhpd[{pid}]: ")) && rest.matches("jnhpd[").count() == 1,
            "a line cut short or glued to the next: {line:?}"
        );
    }
    assert!(text.ends_with('\n'), "{text}");
}

/// docs/observability.md: "At SIGTERM every waiting long poll is answered
/// at once (an empty page with its cursor)". With no JNHP client to wait
/// for, the drain ended at once and the admin listener's connections were
/// dropped with their answers unwritten: a third of the polls got the
/// connection closed without a reply.
#[test]
fn every_waiting_long_poll_is_answered_at_sigterm() {
    let config = "[server]\nshutdown_grace_secs = 5\n\
         [storage]\npath = \"data\"\nfsync = \"always\"\n\
         [admin]\nlisten = [\"127.0.0.1:0\"]\nlist_names = true\n";
    // The race is narrow: several rounds, each with a large last record.
    for round in 0..4 {
        sigterm_round(config, round);
    }
}

fn sigterm_round(config: &str, round: usize) {
    use std::io::{Read, Write};
    let mut server = Server::start(config);
    let admin = admin_addr(&server);
    let big = "v".repeat(60_000);
    assert_eq!(
        server.connect().ask(&format!("STORE only{round} {big}")),
        "W00T!"
    );
    let (_, cursor, end) = names_page(admin, "");
    assert!(end);
    let request = format!(
        "GET /names?after={cursor}&wait=60 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    // 33 polls: one is refused at once (32 wait at most), which tells
    // that the other 32 wait.
    let (done, answers) = std::sync::mpsc::channel();
    for _ in 0..33 {
        let mut s = std::net::TcpStream::connect(admin).unwrap();
        s.set_read_timeout(Some(common::PATIENCE)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut raw = Vec::new();
            let _ = s.read_to_end(&mut raw);
            let _ = done.send(String::from_utf8_lossy(&raw).into_owned());
        });
    }
    drop(done);
    let refused = answers.recv_timeout(common::PATIENCE).unwrap();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    server.signal(Signal::SIGTERM);
    let answers: Vec<String> = answers.iter().collect();
    assert_eq!(answers.len(), 32);
    server.wait_exit();
    let unanswered = answers
        .iter()
        .filter(|a| {
            !(a.starts_with("HTTP/1.1 200") && a.contains(&format!("\"next\":\"{cursor}\"")))
        })
        .count();
    assert_eq!(unanswered, 0, "of 32 waiting polls: {answers:?}");
}

/// While jnhpd drains after SIGTERM, a new long poll was answered at once
/// with an empty page, so a follower (`jnhp names --follow`) asked again
/// at once, and again: a busy loop of requests for the whole drain (up
/// to `shutdown_grace_secs`). A poll that would wait is refused with 503
/// and `Retry-After` instead, as `/readyz` is.
#[test]
fn a_new_long_poll_during_the_drain_is_refused_not_answered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gate = common::gated(dir.path());
    let config = format!(
        "[server]\nshutdown_grace_secs = 30\n\
         [storage]\npath = \"data\"\nfsync = \"always\"\n\
         [admin]\nlisten = [\"127.0.0.1:0\"]\nlist_names = true\n{}",
        common::process_validator(&gate, "")
    );
    let release = dir.path().join("release");
    std::fs::write(&release, "").unwrap();
    let gates = dir.path().to_path_buf();
    let mut server = Server::start_in(dir, &config);
    let admin = admin_addr(&server);
    assert_eq!(server.connect().ask("STORE first v"), "W00T!");
    std::fs::remove_file(&release).unwrap();
    // A STORE in flight holds the drain.
    let mut held = server.connect();
    held.send(b"STORE second v\r\n");
    common::wait_for_file(&gates.join("started-second-v"));
    let (_, cursor, end) = names_page(admin, "");
    assert!(end);
    server.signal(Signal::SIGTERM);
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while get(admin, "/readyz").0 != 503 {
        assert!(std::time::Instant::now() < deadline, "never draining");
    }
    let (status, head, body) = get(admin, &format!("/names?after={cursor}&wait=30"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    // Without wait, a page is still served.
    assert_eq!(names_page(admin, &format!("after={cursor}")).0.len(), 0);
    std::fs::write(&release, "").unwrap();
    assert_eq!(held.reply(), "W00T!");
    server.wait_exit();
}
