//! A hostile operator (and an unlucky one) against `jnhpd data
//! verify|repair|backup|export|import` (docs/backup.md): reports written
//! to a full disk or a closed pipe, a backup "restored" over a file a
//! running jnhpd holds, the restore steps run as written under the
//! packaged unit's `DynamicUser` layout. Real processes, real files.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::datafile::{self, import, jnhpd, p, start, stop};
use common::{PATIENCE, Server};
use nix::sys::signal::Signal;

/// A data file holding `n` names, written by a real jnhpd.
fn written_by_jnhpd(dir: &Path, file: &str, n: usize) -> PathBuf {
    let path = dir.join(file);
    let server = start(dir, &datafile::config(&path, "always"));
    let mut c = server.connect();
    for i in 0..n {
        assert_eq!(c.ask(&format!("STORE name{i} value {i}")), "W00T!");
    }
    stop(server);
    path
}

/// The write end of a pipe whose read end is already closed: a write to
/// it fails with EPIPE (jnhpd ignores SIGPIPE, as every Rust program).
fn closed_pipe() -> OwnedFd {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    write
}

/// `println!` panics when standard output cannot be written; the data
/// commands' reports went through it, so `verify > /dev/full` or a
/// closed pipe ended in a panic and exit status 101, which no script
/// reading docs/backup.md's exit statuses expects. Each report that
/// cannot be written is now an error on stderr with the command's
/// failure status (verify: 2, the others: 1).
#[test]
fn a_report_to_a_full_disk_or_a_closed_pipe_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = written_by_jnhpd(dir.path(), "names.data", 3);
    std::fs::write(
        dir.path().join("import.toml"),
        "[storage]\npath = \"imported.data\"\n",
    )
    .unwrap();
    type Sink = fn() -> Stdio;
    let sinks: [(&str, Sink); 2] = [
        ("/dev/full", || {
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap()
                .into()
        }),
        ("a closed pipe", || closed_pipe().into()),
    ];
    for (sink, open) in sinks {
        let backup = dir.path().join(format!("backup-{}.data", sink.len()));
        let side_source = dir.path().join(format!("torn-{}.data", sink.len()));
        let mut torn = std::fs::read(&data).unwrap();
        torn.extend_from_slice(b"\x01\x02\x03");
        std::fs::write(&side_source, torn).unwrap();
        let commands: [(&[&str], i32); 5] = [
            (&["data", "verify", p(&data)], 2),
            (&["data", "backup", "--datafile", p(&data), p(&backup)], 1),
            (&["data", "repair", p(&side_source)], 1),
            (&["data", "import", "--config", "import.toml", p(&data)], 1),
            (&["data", "export", p(&data)], 1),
        ];
        for (args, status) in commands {
            let ran = datafile::jnhpd_to(dir.path(), args, Some(open()));
            assert!(
                !ran.err.contains("panicked"),
                "{args:?} to {sink}: {}",
                ran.all()
            );
            assert_eq!(ran.code, status, "{args:?} to {sink}: {}", ran.all());
            assert!(
                ran.err.contains("standard output") && ran.err.contains("cannot write"),
                "{args:?} to {sink}: {}",
                ran.all()
            );
        }
        // The work itself was done: the backup is whole, the repair cut.
        let verified = jnhpd(dir.path(), &["data", "verify", p(&backup)]);
        assert_eq!(verified.code, 0, "{}", verified.all());
        assert_eq!(
            std::fs::metadata(&side_source).unwrap().len(),
            std::fs::metadata(&data).unwrap().len()
        );
    }
}

/// Restoring "by backup": `jnhpd data backup --datafile BACKUP --force
/// LIVE` while the jnhpd writing LIVE runs. The rename put the backup in
/// LIVE's place while the daemon went on appending to the old file, no
/// longer in any directory: every STORE acknowledged after it was lost
/// at the next start. `--force` (backup's and export's) now refuses a
/// file a jnhpd holds.
#[test]
fn force_never_replaces_a_data_file_a_running_jnhpd_holds() {
    let dir = tempfile::tempdir().unwrap();
    let backup_source = written_by_jnhpd(dir.path(), "old.data", 2);
    let live = dir.path().join("live.data");
    let server = start(dir.path(), &datafile::config(&live, "always"));
    let mut c = server.connect();
    assert_eq!(c.ask("STORE before yes"), "W00T!");
    let before = std::fs::metadata(&live).unwrap();
    for args in [
        vec![
            "data",
            "backup",
            "--datafile",
            p(&backup_source),
            "--force",
            p(&live),
        ],
        vec![
            "data",
            "export",
            p(&backup_source),
            "-o",
            p(&live),
            "--force",
        ],
    ] {
        let ran = jnhpd(dir.path(), &args);
        assert_eq!(ran.code, 1, "{args:?}: {}", ran.all());
        assert!(ran.err.contains("a jnhpd holds"), "{args:?}: {}", ran.all());
        let now = std::fs::metadata(&live).unwrap();
        assert_eq!((now.dev(), now.ino()), (before.dev(), before.ino()));
    }
    assert_eq!(c.ask("STORE after yes"), "W00T!");
    drop(c);
    stop(server);
    let server = start(dir.path(), &datafile::config(&live, "always"));
    let mut c = server.connect();
    assert_eq!(c.ask("EXISTS before"), "AWESOME!");
    assert_eq!(c.ask("EXISTS after"), "AWESOME!");
    drop(c);
    stop(server);
    // Stopped, the file is replaced as documented.
    let ran = jnhpd(
        dir.path(),
        &[
            "data",
            "backup",
            "--datafile",
            p(&backup_source),
            "--force",
            p(&live),
        ],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
}

/// The console lines (`# ...`) of the Restore section of docs/backup.md,
/// with the documented paths replaced by `state` and `backup`.
fn restore_commands(state: &Path, backup: &Path) -> Vec<String> {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/backup.md")).unwrap();
    let section = page
        .split("\n## Restore")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let commands: Vec<String> = section
        .lines()
        .map(str::trim_start)
        .filter_map(|line| line.strip_prefix("# "))
        .map(|cmd| {
            cmd.replace("/var/lib/private/jnhpd", p(state))
                .replace("/srv/backup/jnhpd-2026-12-06.data", p(backup))
        })
        .collect();
    assert!(commands.len() >= 2, "{section}");
    commands
}

/// jnhpd as the packaged unit's DynamicUser runs it: not root, owning
/// its state directory; returns whether it started, and its log.
fn starts_as(uid: u32, dir: &Path, data: &Path) -> (bool, String) {
    let config = dir.join("jnhp.toml");
    std::fs::write(&config, datafile::config(data, "always")).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .uid(uid)
        .gid(uid);
    let (mut child, log) = Server::launch(cmd);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let all = log.all();
        if all.contains("listening on") {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                Signal::SIGTERM,
            )
            .unwrap();
            common::wait_exit(&mut child);
            return (true, all);
        }
        if all.contains("<stderr closed>") {
            common::wait_exit(&mut child);
            return (false, all);
        }
        assert!(Instant::now() < deadline, "no start, no exit: {all}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// docs/backup.md's Restore, step 3, run as written (as root) under the
/// DynamicUser layout: the state directory owned by the service's user,
/// the data file 0600. The page said systemd hands "everything in it" to
/// the service's user at each start, so a file copied in as root is
/// fine; but systemd's recursive chown stops at once when the directory
/// itself is already owned by that user (as it is from the first start
/// on), so the copy stayed root's, 0600, and jnhpd could not open it.
/// The page now has the step that gives it to the directory's owner.
#[test]
fn the_restore_steps_work_as_written_under_the_dynamic_user_layout() {
    require!(Root);
    const SERVICE: u32 = 65534; // nobody: stands in for the dynamic user
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // /var/lib/private/jnhpd; `private` is 0700 under systemd, reached
    // by the service through its own mount namespace: 0755 here.
    let private = root.path().join("private");
    let state = private.join("jnhpd");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&state, Some(SERVICE.into()), Some(SERVICE.into())).unwrap();
    let data = state.join("data");
    let (started, log) = starts_as(SERVICE, root.path(), &data);
    assert!(started, "{log}");
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), SERVICE);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o600)).unwrap();
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("jnhpd-2026-12-06.data");
    let ran = jnhpd(
        root.path(),
        &["data", "backup", "--datafile", p(&data), p(&backup)],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    for command in restore_commands(&state, &backup) {
        let status = Command::new("sh").args(["-c", &command]).status().unwrap();
        assert!(status.success(), "{command}");
    }
    let (started, log) = starts_as(SERVICE, root.path(), &data);
    assert!(
        started,
        "jnhpd as the service's user after the documented restore: {log}"
    );
}

/// A small tmpfs mounted for the test (root only), unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `bytes` (needs root: `require!(Root)` first).
    fn mount(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(mounted, "cannot mount a tmpfs at {}", dir.path().display());
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The import's report says `imported` imported and `present` already
/// present.
#[track_caller]
fn assert_imported(ran: &datafile::Ran, imported: u64, present: u64) {
    assert_eq!(
        count_before(&ran.out, "imported"),
        imported,
        "{}",
        ran.all()
    );
    assert_eq!(
        count_before(&ran.out, "already present"),
        present,
        "{}",
        ran.all()
    );
}

/// The number after `word` in `text` ("... 12 imported ...": `12`).
fn count_before(text: &str, word: &str) -> u64 {
    let at = text
        .find(&format!(" {word}"))
        .unwrap_or_else(|| panic!("no {word:?} in {text}"));
    text[..at]
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no count before {word:?} in {text}"))
}

/// An import into a data file on a disk that fills: the records of the
/// batch whose write failed are cut off again (docs/backup.md), but
/// "so far: N imported" counted them, so the operator was told of
/// records that are not there (every one of them, when the first batch
/// failed). The count now matches the file; a rerun with room imports
/// the rest and counts what the first run left as present.
#[test]
fn an_import_stopped_by_a_full_disk_counts_only_what_it_left_in_the_file() {
    require!(Root);
    let disk = SmallDisk::mount(1536 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("names.jsonl");
    let value = "v".repeat(1000);
    let lines: String = (0..3000)
        .map(|i| format!("{{\"name\":\"n{i}\",\"value\":\"{value}\"}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let data = disk.path().join("data");
    let config = dir.path().join("import.toml");
    std::fs::write(&config, datafile::config(&data, "always")).unwrap();
    let ran = import(dir.path(), p(&config), p(&input));
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(ran.err.contains("No space left"), "{}", ran.all());
    let said = count_before(&ran.err, "imported");
    let verified = jnhpd(dir.path(), &["data", "verify", p(&data)]);
    assert_eq!(verified.code, 0, "{}", verified.all());
    let held = count_before(&verified.out, "records");
    assert!(held > 0, "the first batch fits: {}", verified.all());
    assert_eq!(
        said,
        held,
        "import said:\n{}\nverify said:\n{}",
        ran.all(),
        verified.all()
    );
    // With room (the file moved to a larger disk), a rerun completes it.
    let roomy = dir.path().join("data");
    std::fs::copy(&data, &roomy).unwrap();
    std::fs::write(&config, datafile::config(&roomy, "always")).unwrap();
    let ran = import(dir.path(), p(&config), p(&input));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_imported(&ran, 3000 - held, held);
}

/// The same JSON lines, with a name repeated (once with its first value,
/// once with another), into a data file and into PostgreSQL: the data
/// file counted the repeats (present, conflict: exit 1), PostgreSQL
/// dropped them uncounted and exited 0, so a script checking the status
/// saw a contradictory input only on one backend. Both count alike now.
#[test]
fn a_name_repeated_in_the_input_counts_alike_into_a_data_file_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"name\":\"a\",\"value\":\"1\"}\n{\"name\":\"b\",\"value\":\"2\"}\n\
         {\"name\":\"a\",\"value\":\"1\"}\n{\"name\":\"b\",\"value\":\"other\"}\n",
    )
    .unwrap();
    let file_config = dir.path().join("file.toml");
    std::fs::write(
        &file_config,
        datafile::config(&dir.path().join("names.data"), "always"),
    )
    .unwrap();
    let into_file = import(dir.path(), p(&file_config), p(&input));
    assert_eq!(into_file.code, 1, "{}", into_file.all());
    assert!(
        into_file
            .out
            .contains("2 imported, 1 already present, 1 conflicts"),
        "{}",
        into_file.all()
    );
    require!(Postgres);
    let pg = pg::Postgres::start();
    let db = pg.create_db("repeats");
    let pg_config = dir.path().join("pg.toml");
    std::fs::write(
        &pg_config,
        format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n",
            pg.url(&db)
        ),
    )
    .unwrap();
    let into_pg = import(dir.path(), p(&pg_config), p(&input));
    assert_eq!(
        (into_pg.code, into_pg.out.replace(p(&input), "")),
        (into_file.code, into_file.out.replace(p(&input), "")),
        "into PostgreSQL:\n{}\ninto a data file:\n{}",
        into_pg.all(),
        into_file.all()
    );
    assert!(
        into_pg.err.contains("b is stored with another value"),
        "{}",
        into_pg.all()
    );
    assert_eq!(
        pg.psql(&db, "SELECT value FROM jnhp_names WHERE name = 'b'")
            .trim(),
        "\\x32"
    );
}

/// JSON lines saved by an editor: a UTF-8 byte order mark first (RFC
/// 8259 lets a parser ignore it) made line 1 "not a JSON object:
/// expected value at line 1 column 1", and nothing was imported; CR-only
/// line ends made the file one long line, "trailing characters". The
/// mark is skipped now; the bare CR is named in the report.
#[test]
fn json_lines_from_an_editor_a_bom_is_skipped_and_a_bare_cr_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jnhp.toml");
    std::fs::write(
        &config,
        datafile::config(&dir.path().join("names.data"), "always"),
    )
    .unwrap();
    let bom = dir.path().join("bom.jsonl");
    std::fs::write(
        &bom,
        b"\xef\xbb\xbf{\"name\":\"a\",\"value\":\"1\"}\r\n{\"name\":\"b\",\"value\":\"2\"}\r\n",
    )
    .unwrap();
    let ran = import(dir.path(), p(&config), p(&bom));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(ran.out.contains("2 imported"), "{}", ran.all());
    let cr = dir.path().join("cr.jsonl");
    std::fs::write(
        &cr,
        "{\"name\":\"c\",\"value\":\"3\"}\r{\"name\":\"d\",\"value\":\"4\"}\r",
    )
    .unwrap();
    let ran = import(dir.path(), p(&config), p(&cr));
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(
        ran.err.contains("line 1:") && ran.err.contains("bare CR"),
        "{}",
        ran.all()
    );
    // A mark anywhere but first is not skipped.
    let late = dir.path().join("late.jsonl");
    std::fs::write(
        &late,
        b"{\"name\":\"e\",\"value\":\"5\"}\n\xef\xbb\xbf{\"name\":\"f\",\"value\":\"6\"}\n",
    )
    .unwrap();
    let ran = import(dir.path(), p(&config), p(&late));
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(ran.err.contains("line 2:"), "{}", ran.all());
}

/// An `LD_PRELOAD` shim (as tests/failed_sync.rs builds) making
/// `fdatasync`, `fsync` and `ftruncate` fail with EIO while the file
/// named by `JNHP_TEST_FAIL` exists.
const FAILING_DISK: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
static int failing(void) {
    const char *path = getenv("JNHP_TEST_FAIL");
    struct stat st;
    return path != NULL && stat(path, &st) == 0;
}
#define REAL(name, type) ((type)dlsym(RTLD_NEXT, name))
int fdatasync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    return REAL("fdatasync", int (*)(int))(fd);
}
int fsync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    return REAL("fsync", int (*)(int))(fd);
}
int ftruncate(int fd, off_t len) {
    if (failing()) { errno = EIO; return -1; }
    return REAL("ftruncate", int (*)(int, off_t))(fd, len);
}
int ftruncate64(int fd, off_t len) {
    if (failing()) { errno = EIO; return -1; }
    return REAL("ftruncate64", int (*)(int, off_t))(fd, len);
}
"#;

/// docs/troubleshooting.md, "A failed sync" whose cut fails too: the
/// page said to stop jnhpd, check the disk and verify the file; but the
/// STORE answered `ERROR` left a whole, valid record that verify calls
/// clean and the restart served. The page now says how to cut it off
/// (`truncate -s N`, N from the log line); done as written, the STORE
/// answered ERROR is not found after the restart.
#[test]
fn after_a_failed_sync_and_cut_the_documented_truncate_drops_the_store_answered_error() {
    let dir = tempfile::tempdir().unwrap();
    let lib = common::shim::build(dir.path(), "failing", FAILING_DISK);
    let trigger = dir.path().join("fail-now");
    let data = dir.path().join("data");
    let config = dir.path().join("jnhp.toml");
    std::fs::write(&config, datafile::config(&data, "always")).unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("LD_PRELOAD", &lib)
        .env("JNHP_TEST_FAIL", &trigger);
    let server = Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(config.clone()));
    let mut c = server.connect();
    assert_eq!(c.ask("STORE before 1"), "W00T!");
    std::fs::write(&trigger, "").unwrap();
    let reply = c.ask("STORE lost value");
    assert!(reply.starts_with("ERROR storage: cannot sync"), "{reply}");
    let line = server.log.wait_for("cannot cut back to");
    std::fs::remove_file(&trigger).unwrap();
    drop(c);
    stop(server);
    // What the page says: N from the log line, `truncate -s N PATH`.
    let n: u64 = line
        .split("cannot cut back to ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {line:?}"));
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/troubleshooting.md"
    ))
    .unwrap();
    let section = page.split("#### A failed sync").nth(1).unwrap();
    let section = section.split("\n#").next().unwrap();
    let command = section
        .split('`')
        .find(|code| code.starts_with("truncate "))
        .unwrap_or_else(|| panic!("the page names no truncate command:\n{section}"));
    let command = command
        .replace('N', &n.to_string())
        .replace("PATH", p(&data));
    let status = Command::new("sh").args(["-c", &command]).status().unwrap();
    assert!(status.success(), "{command}");
    let server = start(dir.path(), &datafile::config(&data, "always"));
    let mut c = server.connect();
    assert_eq!(c.ask("GET before"), "1");
    assert_eq!(
        c.ask("EXISTS lost"),
        "RARGH!",
        "the STORE answered ERROR is served"
    );
    drop(c);
    stop(server);
}

/// Moving to a new host under the packaged unit: the state directory
/// exists (systemd made it, the service's user owns it), the data file
/// not yet, and `jnhpd data import` is run as root, as the page shows.
/// The import created the file root's, and jnhpd, as the service's user,
/// could not open it: it refused to start. The import now gives a file
/// it creates to the directory's owner.
#[test]
fn an_import_run_as_root_creates_a_data_file_jnhpd_can_open() {
    require!(Root);
    const SERVICE: u32 = 65534;
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = root.path().join("jnhpd");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&state, Some(SERVICE.into()), Some(SERVICE.into())).unwrap();
    let data = state.join("data");
    let config = root.path().join("jnhp.toml");
    std::fs::write(&config, datafile::config(&data, "always")).unwrap();
    let input = root.path().join("names.jsonl");
    std::fs::write(&input, "{\"name\":\"moved\",\"value\":\"in\"}\n").unwrap();
    let ran = import(root.path(), p(&config), p(&input));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), SERVICE);
    let (started, log) = starts_as(SERVICE, root.path(), &data);
    assert!(
        started,
        "jnhpd as the directory's owner after the import: {log}"
    );
    // Into a file that exists, its owner is left as it is.
    std::fs::write(&input, "{\"name\":\"more\",\"value\":\"in\"}\n").unwrap();
    let ran = import(root.path(), p(&config), p(&input));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), SERVICE);
}

/// Peak resident memory of a process, in KiB.
fn peak_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A failing disk that leaves a long bad region (here 200 MiB of
/// zeros, as a block allocated and never written reads) after the last
/// good record: a start read all of it into memory to look for a valid
/// record after it, so a bad region near the start of a large file cost
/// the file's size in memory (the data tools searched through a bounded
/// window already). The start now uses that window: it cuts the tail as
/// before, with its peak memory far below the region's size.
#[test]
fn a_start_after_a_long_bad_region_keeps_its_memory_bounded() {
    const REGION: u64 = 200 << 20;
    let dir = tempfile::tempdir().unwrap();
    let data = written_by_jnhpd(dir.path(), "names.data", 3);
    let good = std::fs::metadata(&data).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    file.set_len(good + REGION).unwrap(); // sparse: zeros, no disk space
    drop(file);
    let server = start(dir.path(), &datafile::config(&data, "always"));
    server.log.wait_for("cutting off");
    let peak = peak_kib(server.pid());
    let mut c = server.connect();
    assert_eq!(c.ask("GET name2"), "value 2");
    drop(c);
    stop(server);
    assert_eq!(std::fs::metadata(&data).unwrap().len(), good);
    assert!(
        peak < (REGION >> 10) / 2,
        "peak memory {peak} KiB at start, for a bad region of {} KiB",
        REGION >> 10
    );
}

/// A crash while jnhpd creates its data file (before the header it
/// writes is on disk) can leave the header cut short, or zeros (a file
/// system that logged the size before the data). Nothing was ever
/// stored in it (jnhpd serves only once the header is synced), yet the
/// start refused it as "not a jnhpd data file", under systemd at every
/// restart, and repair refused to touch a bad header: the operator had
/// to delete the file by hand. The start now writes the header again;
/// verify calls it a torn tail (exit 0), repair cuts it. Another
/// program's file (other bytes, or anything after them) is still refused.
#[test]
fn a_header_cut_short_by_a_crash_at_creation_is_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("names.data");
    let mut header = b"JNHPDATA".to_vec();
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    for torn in [vec![0u8; 16], vec![0u8; 7], header[..11].to_vec()] {
        std::fs::write(&data, &torn).unwrap();
        let ran = jnhpd(dir.path(), &["data", "verify", p(&data)]);
        assert_eq!(ran.code, 0, "{torn:?}: {}", ran.all());
        assert!(ran.out.contains("torn bytes"), "{torn:?}: {}", ran.all());
        let server = start(dir.path(), &datafile::config(&data, "always"));
        server.log.wait_for("cut short by a crash");
        let mut c = server.connect();
        assert_eq!(c.ask("STORE after crash"), "W00T!");
        drop(c);
        stop(server);
        let server = start(dir.path(), &datafile::config(&data, "always"));
        let mut c = server.connect();
        assert_eq!(c.ask("GET after"), "crash");
        drop(c);
        stop(server);
        std::fs::write(&data, &torn).unwrap();
        let ran = jnhpd(dir.path(), &["data", "repair", p(&data)]);
        assert_eq!(ran.code, 0, "{torn:?}: {}", ran.all());
        assert_eq!(std::fs::metadata(&data).unwrap().len(), 0);
    }
    // Not a torn header: other bytes, or zeros with more after them.
    for other in [b"#!/bin/sh\n".to_vec(), vec![0u8; 17]] {
        std::fs::write(&data, &other).unwrap();
        let (code, out) = common::start_fails(&dir.path().join("jnhp.toml"));
        assert_ne!(code, 0, "{out}");
        assert!(out.contains("not a jnhpd data file"), "{out}");
        assert_eq!(std::fs::read(&data).unwrap(), other);
        let ran = jnhpd(dir.path(), &["data", "verify", p(&data)]);
        assert_eq!(ran.code, 1, "{}", ran.all());
    }
}

/// An import into PostgreSQL killed midway, then run again (what
/// docs/backup.md promises: committed chunks stay, the rerun counts them
/// present and imports the rest, exactly once each).
#[test]
fn an_import_into_postgres_killed_midway_completes_when_run_again() {
    require!(Postgres);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("names.jsonl");
    let lines: String = (0..50_000)
        .map(|i| format!("{{\"name\":\"n{i}\",\"value\":\"value {i}\"}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let pg = pg::Postgres::start();
    let db = pg.create_db("killed");
    let config = dir.path().join("pg.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n",
            pg.url(&db)
        ),
    )
    .unwrap();
    let mut child = Command::new(common::bin())
        .args(["data", "import", "--config", p(&config), p(&input)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once some chunks are committed (or at its end, if faster).
    let deadline = Instant::now() + PATIENCE;
    let rows = || -> u64 {
        // The import creates the table once connected.
        if pg
            .psql(&db, "SELECT to_regclass('jnhp_names') IS NOT NULL")
            .trim()
            != "t"
        {
            return 0;
        }
        pg.psql(&db, "SELECT count(*) FROM jnhp_names")
            .trim()
            .parse()
            .unwrap_or(0)
    };
    while rows() == 0 && child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the import committed nothing");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let first = rows();
    eprintln!("killed with {first} of 50000 names committed");
    let ran = import(dir.path(), p(&config), p(&input));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_imported(&ran, 50_000 - first, first);
    assert_eq!(rows(), 50_000);
}
