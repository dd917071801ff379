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

/// Builds a C shim into `dir`.
fn shim(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    let lib = dir.join(format!("{name}.so"));
    std::fs::write(&c, source).unwrap();
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&c)
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc) builds the shim");
    assert!(status.success(), "cc failed to build the shim");
    lib
}

/// docs/observability.md: "A listing shows a name only once it is
/// durable ... a consumer following the feed never sees a name that later
/// disappears". A consumer that lists a name and GETs it at once must
/// find it: the writer announced the sync (waking the long poll) before
/// the store put the name in its map, so the GET missed.
#[test]
fn a_name_listed_by_a_long_poll_is_found_by_a_get_at_once() {
    let shims = tempfile::tempdir().unwrap();
    let lib = shim(shims.path(), "slowwriter", SLOW_WRITER_SHIM);
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
    server.signal(Signal::SIGTERM);
    server.wait_exit();
}
