//! A disk that fails `fdatasync`: faults injected into the real daemon
//! with an `LD_PRELOAD` shim (built here with the C compiler) that makes
//! `fdatasync`, and on request `fsync` and `ftruncate`, fail with `EIO`
//! while a trigger file exists.
//!
//! What must hold: a STORE answered `ERROR` is never found stored later
//! (not after the disk recovers, not after a restart), and a name stored
//! again after such an `ERROR` keeps the value that was acknowledged.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Server;
use nix::sys::signal::Signal;

const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>

static int triggered(const char *var) {
    const char *path = getenv(var);
    struct stat st;
    return path != NULL && stat(path, &st) == 0;
}

#define REAL(name, type) ((type)dlsym(RTLD_NEXT, name))

int fdatasync(int fd) {
    if (triggered("JNHP_TEST_FAIL_SYNC")) { errno = EIO; return -1; }
    return REAL("fdatasync", int (*)(int))(fd);
}
int fsync(int fd) {
    if (triggered("JNHP_TEST_FAIL_CUT")) { errno = EIO; return -1; }
    return REAL("fsync", int (*)(int))(fd);
}
int ftruncate(int fd, off_t len) {
    if (triggered("JNHP_TEST_FAIL_CUT")) { errno = EIO; return -1; }
    return REAL("ftruncate", int (*)(int, off_t))(fd, len);
}
int ftruncate64(int fd, off_t len) {
    if (triggered("JNHP_TEST_FAIL_CUT")) { errno = EIO; return -1; }
    return REAL("ftruncate64", int (*)(int, off_t))(fd, len);
}
"#;

struct Disk {
    dir: tempfile::TempDir,
    lib: PathBuf,
}

impl Disk {
    fn new() -> Disk {
        Disk::with_fsync("always")
    }

    fn with_fsync(fsync: &str) -> Disk {
        let dir = tempfile::tempdir().unwrap();
        let lib = common::shim::build(dir.path(), "failsync", SHIM);
        std::fs::write(
            dir.path().join("jnhp.toml"),
            format!(
                "[storage]\npath = \"data\"\nfsync = \"{fsync}\"\n\
                 [admin]\nlisten = [\"127.0.0.1:0\"]\n"
            ),
        )
        .unwrap();
        Disk { dir, lib }
    }

    fn trigger(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Makes `fdatasync` (and with `cut`, also `fsync` and `ftruncate`)
    /// fail from now on, or work again.
    fn fail(&self, sync: bool, cut: bool) {
        for (file, on) in [("fail-sync", sync), ("fail-cut", cut)] {
            if on {
                std::fs::write(self.trigger(file), "").unwrap();
            } else {
                let _ = std::fs::remove_file(self.trigger(file));
            }
        }
    }

    fn start(&self) -> Server {
        let mut cmd = Command::new(common::bin());
        cmd.arg("--config")
            .arg(self.dir.path().join("jnhp.toml"))
            .args(["--listen", "127.0.0.1:0"])
            .env("LD_PRELOAD", &self.lib)
            .env("JNHP_TEST_FAIL_SYNC", self.trigger("fail-sync"))
            .env("JNHP_TEST_FAIL_CUT", self.trigger("fail-cut"));
        Server::spawn(cmd, tempfile::tempdir().unwrap(), None)
    }
}

fn stop(mut server: Server) {
    server.signal(Signal::SIGTERM);
    server.wait_exit();
}

#[test]
fn a_store_answered_error_after_a_failed_sync_is_never_found_later() {
    let disk = Disk::new();
    let server = disk.start();
    let mut c = server.connect();
    assert_eq!(c.ask("STORE before 1"), "W00T!");
    let admin = common::admin_addr(&server);
    assert_eq!(common::get(admin, "/readyz").0, 200);

    disk.fail(true, false);
    let reply = c.ask("STORE name failed-value");
    assert!(reply.starts_with("ERROR storage: cannot sync"), "{reply}");
    assert_eq!(c.ask("EXISTS name"), "RARGH!");

    // The disk works again: the name is free, and its next STORE is the
    // one that counts.
    // Undone: the file still takes STOREs, so jnhpd stays ready.
    assert_eq!(common::get(admin, "/readyz").0, 200);
    assert!(
        common::get(admin, "/metrics")
            .2
            .contains("jnhpd_datafile_writable 1")
    );
    disk.fail(false, false);
    assert_eq!(c.ask("STORE name acknowledged"), "W00T!");
    assert_eq!(c.ask("GET name"), "acknowledged");
    stop(server);

    let server = disk.start();
    let mut c = server.connect();
    assert_eq!(c.ask("GET before"), "1");
    assert_eq!(
        c.ask("GET name"),
        "acknowledged",
        "the replay kept the value answered ERROR"
    );
    stop(server);
}

#[test]
fn a_failed_sync_that_cannot_be_undone_refuses_every_later_store() {
    let disk = Disk::new();
    let server = disk.start();
    let mut c = server.connect();
    assert_eq!(c.ask("STORE before 1"), "W00T!");

    // Neither the sync nor the cut that would undo the write works.
    disk.fail(true, true);
    let reply = c.ask("STORE lost value");
    assert!(reply.starts_with("ERROR storage: cannot sync"), "{reply}");
    server.log.wait_for("in an unknown state");

    // Operators see it: not ready, and the gauge says why.
    assert_given_up(&server);

    // Even with a working disk again, nothing more is acknowledged on top
    // of a file in an unknown state; reads go on.
    disk.fail(false, false);
    let reply = c.ask("STORE later value");
    assert_eq!(
        reply,
        "ERROR storage: the data file is in an unknown state after a failed write or sync \
         (restart jnhpd)"
    );
    let reply = c.ask("STORE lost other-value");
    assert!(reply.starts_with("ERROR storage"), "{reply}");
    assert_eq!(c.ask("GET before"), "1");
    stop(server);

    // A restart sorts it out: what the file holds is served, and nothing
    // answered ERROR since the failure was written.
    let server = disk.start();
    let mut c = server.connect();
    assert_eq!(c.ask("GET before"), "1");
    assert_eq!(c.ask("EXISTS later"), "RARGH!");
    // The cut failed, so the record answered ERROR is still in the file,
    // whole: the restart serves it (docs/troubleshooting.md says so and
    // how to drop it).
    assert_eq!(c.ask("GET lost"), "value");
    stop(server);
}

/// With `everysec`, a STORE is acknowledged before its sync; when that sync
/// fails, acknowledged records may be lost and a later sync may succeed
/// without writing them: jnhpd says so and acknowledges nothing more.
#[test]
fn a_failed_background_sync_stops_acknowledging_stores() {
    let disk = Disk::with_fsync("everysec");
    let server = disk.start();
    let mut c = server.connect();
    disk.fail(true, false);
    assert_eq!(c.ask("STORE acked value"), "W00T!");
    server
        .log
        .wait_for("acknowledged STOREs may not be on disk");
    assert_given_up(&server);
    disk.fail(false, false);
    let reply = c.ask("STORE later value");
    assert!(
        reply.starts_with("ERROR storage: the data file is in an unknown state"),
        "{reply}"
    );
    assert_eq!(c.ask("GET acked"), "value");
    stop(server);
}

/// `/readyz` answers 503 naming the data file, and the gauge is 0.
fn assert_given_up(server: &Server) {
    let admin = common::admin_addr(server);
    let (status, _, body) = common::get(admin, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("data file in an unknown state"), "{body}");
    let (_, _, metrics) = common::get(admin, "/metrics");
    assert!(metrics.contains("jnhpd_datafile_writable 0"), "{metrics}");
}
