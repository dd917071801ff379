//! Hostile tests of the `jnhp` command against the real daemon: where it
//! finds the admin listener, host names with dead addresses, and output
//! that cannot be written.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod run;

use std::process::Stdio;

use common::{Server, admin_addr};

/// `jnhp args` with `env` (and neither `JNHP_ADDR` nor `JNHP_ADMIN_ADDR`
/// unless `env` sets it), stdout to `stdout`; fails the test unless it
/// exits within `common::PATIENCE`.
fn jnhp(args: &[&str], env: &[(&str, &str)], stdout: Stdio) -> (i32, String, String) {
    run::jnhp(args, env, Stdio::null(), stdout, Stdio::piped())
}

fn listing() -> (Server, String) {
    let server = Server::start(
        "[storage]\npath = \"data\"\n[admin]\nlisten = [\"127.0.0.1:0\"]\nlist_names = true\n",
    );
    let admin = admin_addr(&server).to_string();
    (server, admin)
}

/// docs/observability.md: `jnhp stats` takes `--admin ADDR or
/// $JNHP_ADMIN_ADDR`; `jnhp names` talks to the same listener, so an
/// operator who exported JNHP_ADMIN_ADDR expects it there too. It went to
/// 127.0.0.1:9111 instead — on a machine running another jnhpd, that
/// one's names were listed.
#[test]
fn jnhp_names_takes_the_admin_listener_from_jnhp_admin_addr() {
    let (server, admin) = listing();
    assert_eq!(server.connect().ask("STORE only-here v"), "W00T!");
    let env = [("JNHP_ADMIN_ADDR", admin.as_str())];
    let (code, out, err) = jnhp(&["names"], &env, Stdio::piped());
    assert_eq!((code, out.as_str()), (0, "only-here\n"), "{err}");
    // The flag wins over the environment.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let env = [("JNHP_ADMIN_ADDR", dead.as_str())];
    let (code, out, err) = jnhp(&["names", "--admin", &admin], &env, Stdio::piped());
    assert_eq!((code, out.as_str()), (0, "only-here\n"), "{err}");
    let (_, help, _) = jnhp(&["names", "--help"], &[], Stdio::piped());
    assert!(help.contains("JNHP_ADMIN_ADDR"), "{help}");
}

/// A `getaddrinfo` shim: `multi.jnhp.test` resolves to 127.0.0.2, then
/// 127.0.0.1 (the port as asked).
const RESOLVER_SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <string.h>

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res) {
    int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **) =
        dlsym(RTLD_NEXT, "getaddrinfo");
    if (node == NULL || strcmp(node, "multi.jnhp.test") != 0)
        return real(node, service, hints, res);
    struct addrinfo *dead, *live, *last;
    int r = real("127.0.0.2", service, hints, &dead);
    if (r != 0) return r;
    r = real("127.0.0.1", service, hints, &live);
    if (r != 0) { freeaddrinfo(dead); return r; }
    for (last = dead; last->ai_next != NULL; last = last->ai_next) {}
    last->ai_next = live;
    *res = dead;
    return 0;
}
"#;

/// README: "a host name (each of its addresses is tried in turn)". An
/// address that drops SYNs (a dead host, a firewall) made the first
/// attempt take the whole `--timeout`, so the live second address was
/// never tried: a host name with one dead address was as good as down.
#[test]
fn a_host_name_whose_first_address_is_a_black_hole_reaches_the_second() {
    let server = Server::start("");
    let port = server.addr().port();
    // The black hole: a listener on 127.0.0.2 at the same port whose
    // accept queue (backlog 0) is full, so the kernel drops further SYNs.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_hole, _filler) = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(format!("127.0.0.2:{port}").parse().unwrap())
            .unwrap();
        let hole = socket.listen(0).unwrap();
        let filler = std::net::TcpStream::connect(format!("127.0.0.2:{port}")).unwrap();
        (hole, filler)
    });
    let probe = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.2:{port}").parse().unwrap(),
        std::time::Duration::from_millis(500),
    );
    assert!(probe.is_err(), "127.0.0.2:{port} is not a black hole");

    let shims = tempfile::tempdir().unwrap();
    let lib = common::shim::build(shims.path(), "resolver", RESOLVER_SHIM);
    let addr = format!("multi.jnhp.test:{port}");
    let env = [("LD_PRELOAD", lib.to_str().unwrap())];
    let (code, _, err) = jnhp(
        &["--addr", &addr, "--timeout", "8", "store", "n", "v"],
        &env,
        Stdio::piped(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.connect().ask("GET n"), "v");
    // Every address dead: the error names them all, within the timeout.
    drop(server);
    let (code, _, err) = jnhp(
        &["--addr", &addr, "--timeout", "4", "get", "n"],
        &env,
        Stdio::piped(),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("127.0.0.2") && err.contains("127.0.0.1"),
        "{err}"
    );
}

/// A value or listing that cannot be written out (a full disk: `> file`
/// on /dev/full) must not exit 0 as if it had been: a script would take
/// the empty file for the data. `jnhp get` exited 0, `jnhp names` exited
/// 0, `jnhp stats` panicked (exit 101). A closed pipe (`| head`) stays a
/// normal end for `names`.
#[test]
fn output_that_cannot_be_written_exits_2_saying_so() {
    let (server, admin) = listing();
    let addr = server.addr().to_string();
    assert_eq!(server.connect().ask("STORE n value"), "W00T!");
    let full = || Stdio::from(std::fs::File::create("/dev/full").unwrap());
    for args in [
        vec!["--addr", &addr, "get", "n"],
        vec!["names", "--admin", &admin],
        vec!["stats", "--admin", &admin],
        vec!["stats", "--admin", &admin, "--json"],
    ] {
        let (code, _, err) = jnhp(&args, &[], full());
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("No space left on device"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // A reader that has enough (closed pipe): names ends quietly, exit 0.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let (code, _, err) = jnhp(&["names", "--admin", &admin], &[], writer.into());
    assert_eq!(code, 0, "{err}");
}
