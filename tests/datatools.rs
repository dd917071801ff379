//! `jnhpd data verify|repair|backup|export|import` against real files
//! written by real jnhpd processes (docs/backup.md).

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::datafile::{self, import, jnhpd, p, start, stop};
use common::{Client, PATIENCE, Server};
use nix::sys::signal::Signal;
use pg::Postgres;

/// STORE over the wire with raw bytes; returns the reply.
fn store(c: &mut Client, name: &[u8], value: &[u8]) -> String {
    let mut line = b"STORE ".to_vec();
    line.extend_from_slice(name);
    line.push(b' ');
    line.extend_from_slice(value);
    line.extend_from_slice(b"\r\n");
    c.send(&line);
    c.reply()
}

/// GET over the wire: the value's bytes (empty: not stored).
fn get(c: &mut Client, name: &[u8]) -> Vec<u8> {
    let mut line = b"GET ".to_vec();
    line.extend_from_slice(name);
    line.extend_from_slice(b"\r\n");
    c.send(&line);
    let mut reply = c.line();
    reply.truncate(reply.len() - 2);
    reply
}

/// A data file holding `records`, written by a real jnhpd.
fn written_by_jnhpd(dir: &Path, file: &str, records: &[(Vec<u8>, Vec<u8>)]) -> PathBuf {
    let path = dir.join(file);
    let server = start(dir, &datafile::config(&path, "always"));
    let mut c = server.connect();
    for (name, value) in records {
        assert_eq!(store(&mut c, name, value), "W00T!");
    }
    stop(server);
    path
}

fn numbered(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("name{i}").into_bytes(),
                format!("value {i}").into_bytes(),
            )
        })
        .collect()
}

/// Offsets of each record in a data file (header 16 bytes, record
/// header 12).
fn record_offsets(data: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 16;
    while at + 12 <= data.len() {
        offsets.push(at);
        let n = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap()) as usize;
        let v = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 12 + n + v;
    }
    offsets
}

/// Backup under write load, then restore: every name acknowledged before
/// the backup began is in it, the backup verifies clean, and a jnhpd
/// started on it serves them. Clients keep storing during the backup;
/// the backup goes to another file system (/dev/shm, a tmpfs).
fn backup_under_load(fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("names.data");
    let config = datafile::config(&data, fsync);
    let server = start(dir.path(), &config);
    let config_path = dir.path().join("jnhp.toml");
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (acked, done, addr) = (acked.clone(), done.clone(), server.addr());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    let (name, value) = (format!("c{t}-{i}"), format!("value of c{t}-{i}"));
                    assert_eq!(c.ask(&format!("STORE {name} {value}")), "W00T!");
                    acked.lock().unwrap().push((name, value));
                    i += 1;
                }
            })
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    while acked.lock().unwrap().len() < 400 {
        assert!(Instant::now() < deadline, "the clients store too slowly");
        std::thread::sleep(Duration::from_millis(10));
    }
    let before: Vec<(String, String)> = acked.lock().unwrap().clone();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let dest = shm.path().join("backup.data");
    let ran = jnhpd(
        dir.path(),
        &["data", "backup", "--config", p(&config_path), p(&dest)],
    );
    let during = acked.lock().unwrap().len() - before.len();
    done.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(ran.out.contains("backed up"), "{}", ran.all());
    assert!(ran.out.contains("stopped at byte offset"), "{}", ran.all());
    // The backup ran under write load, or this test showed nothing.
    assert!(
        during > 0,
        "{fsync}: no STORE was acknowledged during the backup"
    );
    eprintln!(
        "{fsync}: {} acknowledged before, {during} during the backup",
        before.len()
    );
    stop(server);
    // No temporary file is left beside the backup.
    let left: Vec<_> = std::fs::read_dir(shm.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    let verified = jnhpd(dir.path(), &["data", "verify", p(&dest)]);
    assert_eq!(verified.code, 0, "{}", verified.all());
    assert!(verified.out.contains(": clean\n"), "{}", verified.all());
    // Restore: a jnhpd started on the backup serves every name
    // acknowledged before the backup began.
    let restored_dir = tempfile::tempdir().unwrap();
    let restored = restored_dir.path().join("restored.data");
    std::fs::copy(&dest, &restored).unwrap();
    let server = start(restored_dir.path(), &datafile::config(&restored, "always"));
    let mut c = server.connect();
    for (name, value) in &before {
        assert_eq!(c.ask(&format!("GET {name}")), *value, "{name}");
    }
    stop(server);
}

#[test]
fn backup_under_write_load_with_fsync_always_restores_every_acknowledged_name() {
    backup_under_load("always");
}

#[test]
fn backup_under_write_load_with_fsync_never_restores_every_acknowledged_name() {
    backup_under_load("never");
}

/// A byte flipped in a middle record: verify names its offset and exits
/// 1; repair cuts there, the side file holds the rest byte for byte, and
/// the kept prefix serves.
#[test]
fn repair_cuts_damage_in_the_middle_and_keeps_the_rest_in_a_side_file() {
    let dir = tempfile::tempdir().unwrap();
    let records = numbered(10);
    let data = written_by_jnhpd(dir.path(), "names.data", &records);
    let mut bytes = std::fs::read(&data).unwrap();
    let offsets = record_offsets(&bytes);
    let fifth = offsets[4];
    bytes[fifth + 14] ^= 0x20;
    std::fs::write(&data, &bytes).unwrap();
    let verified = jnhpd(dir.path(), &["data", "verify", p(&data)]);
    assert_eq!(verified.code, 1, "{}", verified.all());
    assert!(
        verified
            .out
            .contains(&format!("damaged at byte offset {fifth}: CRC mismatch")),
        "{}",
        verified.all()
    );
    assert!(
        verified.out.contains(&format!(
            "a valid record follows at byte offset {}",
            offsets[5]
        )),
        "{}",
        verified.all()
    );
    let repaired = jnhpd(dir.path(), &["data", "repair", p(&data)]);
    assert_eq!(repaired.code, 0, "{}", repaired.all());
    assert!(
        repaired
            .out
            .contains(&format!("cut at byte offset {fifth}: CRC mismatch"))
            && repaired.out.contains("kept 4 records")
            && repaired
                .out
                .contains(&format!("cut {} bytes", bytes.len() - fifth)),
        "{}",
        repaired.all()
    );
    let side = repaired
        .out
        .split("kept in ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    assert!(
        side.starts_with(&format!("{}.cut-", data.display())),
        "{side}"
    );
    assert_eq!(std::fs::read(&side).unwrap(), bytes[fifth..]);
    assert_eq!(std::fs::read(&data).unwrap(), bytes[..fifth]);
    // The repaired file verifies clean and serves its first four names.
    let verified = jnhpd(dir.path(), &["data", "verify", p(&data)]);
    assert_eq!(verified.code, 0, "{}", verified.all());
    let server = start(dir.path(), &datafile::config(&data, "always"));
    let mut c = server.connect();
    for (i, (name, value)) in records.iter().enumerate() {
        let want = if i < 4 { value.clone() } else { Vec::new() };
        assert_eq!(get(&mut c, name), want, "record {i}");
    }
    stop(server);
    // Repair of a clean file changes nothing and makes no side file.
    let before = std::fs::read(&data).unwrap();
    let again = jnhpd(dir.path(), &["data", "repair", p(&data)]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        again.out.contains("clean") && again.out.contains("nothing changed"),
        "{}",
        again.all()
    );
    assert_eq!(std::fs::read(&data).unwrap(), before);
    let sides = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".cut-")
        })
        .count();
    assert_eq!(sides, 1);
}

/// Verify's exit status: 0 clean, 0 with a torn tail (said so), 1
/// damaged (each kind named), 2 for what is not a file to read.
#[test]
fn verify_exit_status_tells_clean_torn_damaged_and_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let data = written_by_jnhpd(dir.path(), "names.data", &numbered(5));
    let clean = std::fs::read(&data).unwrap();
    let offsets = record_offsets(&clean);
    let ran = jnhpd(dir.path(), &["data", "verify", p(&data)]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.out
            .contains(&format!("5 records, 5 names, {} bytes", clean.len()))
            && ran.out.contains(": clean\n"),
        "{}",
        ran.all()
    );
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    // Empty: a new data file before jnhpd wrote its header.
    let ran = jnhpd(dir.path(), &["data", "verify", p(&write("empty", b""))]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(ran.out.contains(": empty"), "{}", ran.all());
    // Torn: the last record cut short.
    let torn = write("torn", &clean[..clean.len() - 3]);
    let ran = jnhpd(dir.path(), &["data", "verify", p(&torn)]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    let torn_bytes = clean.len() - 3 - offsets[4];
    assert!(
        ran.out.contains(&format!(
            "clean, then {torn_bytes} torn bytes at the end (byte offset {}",
            offsets[4]
        )),
        "{}",
        ran.all()
    );
    // A huge length field in the middle: damage; at the end: torn.
    let mut huge = clean.clone();
    huge[offsets[2] + 4..offsets[2] + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let ran = jnhpd(dir.path(), &["data", "verify", p(&write("huge", &huge))]);
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(
        ran.out.contains(&format!(
            "damaged at byte offset {}: impossible length (name 4294967295 bytes",
            offsets[2]
        )),
        "{}",
        ran.all()
    );
    let mut huge_last = clean.clone();
    huge_last[offsets[4] + 8..offsets[4] + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let ran = jnhpd(
        dir.path(),
        &["data", "verify", p(&write("huge_last", &huge_last))],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(ran.out.contains("torn bytes at the end"), "{}", ran.all());
    // A name stored twice, and a record no STORE may hold.
    let mut twice = clean.clone();
    twice.extend_from_slice(&clean[offsets[1]..offsets[2]]);
    let ran = jnhpd(dir.path(), &["data", "verify", p(&write("twice", &twice))]);
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(
        ran.out.contains(&format!(
            "the first at byte offset {}: a name stored twice (first at byte offset {})",
            clean.len(),
            offsets[1]
        )),
        "{}",
        ran.all()
    );
    let mut forbidden = clean[..offsets[1]].to_vec();
    forbidden.extend_from_slice(&record(b"bad name", b"v"));
    let ran = jnhpd(
        dir.path(),
        &["data", "verify", p(&write("forbidden", &forbidden))],
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(
        ran.out.contains(&format!(
            "damaged at byte offset {}: a record holding what no STORE may",
            offsets[1]
        )),
        "{}",
        ran.all()
    );
    // A bad header.
    let ran = jnhpd(
        dir.path(),
        &[
            "data",
            "verify",
            p(&write("header", b"JNHPDATA\x02\0\0\0\0\0\0\0")),
        ],
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(
        ran.out.contains("bad header: format version 2"),
        "{}",
        ran.all()
    );
    // Not a file to read: exit 2, at once.
    for path in ["/dev/zero", "/", "/nonexistent/names.data"] {
        let ran = jnhpd(dir.path(), &["data", "verify", path]);
        assert_eq!(ran.code, 2, "{path}: {}", ran.all());
        assert!(ran.err.contains(path), "{}", ran.all());
    }
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let ran = jnhpd(dir.path(), &["data", "verify", p(&fifo)]);
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(ran.err.contains("a FIFO"), "{}", ran.all());
    // Usage errors: 2 as well.
    let ran = jnhpd(dir.path(), &["data", "verify"]);
    assert_eq!(ran.code, 2, "{}", ran.all());
}

/// One record's bytes, as the data file stores it.
fn record(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(name.len() as u32).to_le_bytes());
    body.extend_from_slice(&(value.len() as u32).to_le_bytes());
    body.extend_from_slice(name);
    body.extend_from_slice(value);
    let mut out = crc32(&body).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Repair and import take the daemon's lock: refused while it serves.
#[test]
fn repair_and_import_are_refused_while_a_daemon_holds_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("names.data");
    let server = start(dir.path(), &datafile::config(&data, "always"));
    let mut c = server.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    let before = std::fs::read(&data).unwrap();
    let ran = jnhpd(dir.path(), &["data", "repair", p(&data)]);
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(
        ran.err.contains("a jnhpd holds this data file"),
        "{}",
        ran.all()
    );
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"name\":\"b\",\"value\":\"2\"}\n").unwrap();
    let config = dir.path().join("jnhp.toml");
    let ran = import(dir.path(), p(&config), p(&input));
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(ran.err.contains("locked"), "{}", ran.all());
    assert_eq!(std::fs::read(&data).unwrap(), before);
    // Verify, backup and export read without the lock.
    assert_eq!(jnhpd(dir.path(), &["data", "verify", p(&data)]).code, 0);
    stop(server);
}

/// Names with every byte a name may hold (0x21-0x7e, 0x80-0xff) and
/// values with every byte a value may hold (all but NUL, CR, LF), many
/// not UTF-8.
fn binary_records() -> Vec<(Vec<u8>, Vec<u8>)> {
    let name_bytes: Vec<u8> = (0x21u8..=0x7e).chain(0x80..=0xff).collect();
    let value_bytes: Vec<u8> = (1u8..=255).filter(|b| *b != b'\r' && *b != b'\n').collect();
    let mut records = Vec::new();
    for (i, chunk) in name_bytes.chunks(20).enumerate() {
        let mut name = format!("n{i}-").into_bytes();
        name.extend_from_slice(chunk);
        let mut value = format!("v{i} ").into_bytes();
        value.extend(value_bytes.iter().cycle().skip(i * 7).take(300));
        records.push((name, value));
    }
    // Valid UTF-8 with quotes, backslashes and control bytes: JSON strings.
    records.push((
        "text\"name\\é".as_bytes().to_vec(),
        "tab\there \u{1} \"q\" \\ ü".as_bytes().to_vec(),
    ));
    records.push((vec![0xff], vec![0xfe]));
    records
}

fn serves(server: &Server, records: &[(Vec<u8>, Vec<u8>)]) {
    let mut c = server.connect();
    for (name, value) in records {
        assert_eq!(
            get(&mut c, name),
            *value,
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
}

/// Export, then import into a new data file: the same records byte for
/// byte (the second export equals the first), and a jnhpd on the
/// imported file serves them.
#[test]
fn export_import_round_trip_into_a_data_file_is_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let records = binary_records();
    let data = written_by_jnhpd(dir.path(), "names.data", &records);
    let export = dir.path().join("export.jsonl");
    let ran = jnhpd(dir.path(), &["data", "export", p(&data), "-o", p(&export)]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    let exported = std::fs::read_to_string(&export).unwrap();
    assert_eq!(exported.lines().count(), records.len());
    assert!(
        exported.contains("\"name_base64\":\"/w==\",\"value_base64\":\"/g==\""),
        "{exported}"
    );
    assert!(
        exported.contains("\"name\":\"text\\\"name\\\\é\""),
        "{exported}"
    );
    // Standard output gives the same lines.
    let to_stdout = jnhpd(dir.path(), &["data", "export", p(&data)]);
    assert_eq!(to_stdout.code, 0, "{}", to_stdout.all());
    assert_eq!(to_stdout.out, exported);
    // -o does not overwrite.
    let again = jnhpd(dir.path(), &["data", "export", p(&data), "-o", p(&export)]);
    assert_eq!(again.code, 1, "{}", again.all());
    assert!(again.err.contains("already exists"), "{}", again.all());
    // Import into a new data file.
    let target_dir = tempfile::tempdir().unwrap();
    let target = target_dir.path().join("imported.data");
    let config = target_dir.path().join("jnhp.toml");
    std::fs::write(&config, datafile::config(&target, "always")).unwrap();
    let ran = import(dir.path(), p(&config), p(&export));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.out.contains(&format!(
            "(JSON lines): {} imported, 0 already present, 0 conflicts",
            records.len()
        )),
        "{}",
        ran.all()
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(&data).unwrap()
    );
    // The data file itself imports as present.
    let ran = import(dir.path(), p(&config), p(&data));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.out.contains(&format!(
            "(data file): 0 imported, {} already present, 0 conflicts",
            records.len()
        )),
        "{}",
        ran.all()
    );
    let server = start(target_dir.path(), &datafile::config(&target, "always"));
    serves(&server, &records);
    stop(server);
}

/// Export from a data file, import into a PostgreSQL namespace: a
/// front-end serves every record byte for byte.
#[test]
fn export_import_round_trip_into_postgres_is_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let records = binary_records();
    let data = written_by_jnhpd(dir.path(), "names.data", &records);
    let export = dir.path().join("export.jsonl");
    let ran = jnhpd(dir.path(), &["data", "export", p(&data), "-o", p(&export)]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("datatools");
    let pg_config = format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n",
        pg.url(&db)
    );
    let config = dir.path().join("pg.toml");
    std::fs::write(&config, &pg_config).unwrap();
    let ran = import(dir.path(), p(&config), p(&export));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.out.contains(&format!(
            "{} imported, 0 already present, 0 conflicts",
            records.len()
        )),
        "{}",
        ran.all()
    );
    // The binary data file imports too: all present.
    let ran = import(dir.path(), p(&config), p(&data));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.out
            .contains(&format!("0 imported, {} already present", records.len())),
        "{}",
        ran.all()
    );
    let front_dir = tempfile::tempdir().unwrap();
    let server = start(front_dir.path(), &pg_config);
    serves(&server, &records);
    // A conflict in the namespace: counted, exit 1, the namespace keeps its value.
    let conflict = dir.path().join("conflict.jsonl");
    std::fs::write(
        &conflict,
        "{\"name\":\"n0-!\\\"#$%&'()*+,-./01234\",\"value\":\"other\"}\n",
    )
    .unwrap();
    let ran = import(dir.path(), p(&config), p(&conflict));
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(
        ran.out
            .contains("0 imported, 0 already present, 1 conflicts"),
        "{}",
        ran.all()
    );
    serves(&server, &records);
    stop(server);
}

/// A name present with another value is a conflict: reported, counted,
/// exit 1; the stored value stays; the other records are imported.
#[test]
fn import_conflicts_are_counted_and_keep_the_stored_value() {
    let dir = tempfile::tempdir().unwrap();
    let data = written_by_jnhpd(
        dir.path(),
        "names.data",
        &[
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
        ],
    );
    let config = dir.path().join("jnhp.toml");
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"name\":\"a\",\"value\":\"other\"}\r\n\n{\"name\":\"b\",\"value\":\"2\"}\n{\"name\":\"c\",\"value\":\"3\"}\n{\"name\":\"c\",\"value\":\"4\"}",
    )
    .unwrap();
    let ran = import(dir.path(), p(&config), p(&input));
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(
        ran.out
            .contains("1 imported, 1 already present, 2 conflicts"),
        "{}",
        ran.all()
    );
    assert!(
        ran.err.contains("a is stored with another value"),
        "{}",
        ran.all()
    );
    let server = start(dir.path(), &datafile::config(&data, "always"));
    let mut c = server.connect();
    assert_eq!(c.ask("GET a"), "1");
    assert_eq!(c.ask("GET c"), "3");
    stop(server);
}

/// Bad JSON lines are reported by number and nothing is imported: a CR
/// LF inside a value (no STORE can carry it), a line that is not a
/// record, a name over the config's limit.
#[test]
fn bad_json_lines_are_reported_by_number_and_nothing_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("names.data");
    let config = dir.path().join("jnhp.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nmax_name_bytes = 8\n{}",
            datafile::config(&data, "always")
        ),
    )
    .unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"name\":\"good\",\"value\":\"1\"}\n\
         {\"name\":\"crlf\",\"value\":\"x\\r\\ny\"}\n\
         not json\n\
         {\"name\":\"much-too-long\",\"value\":\"1\"}\n\
         {\"name_base64\":\"!!\",\"value\":\"1\"}\n",
    )
    .unwrap();
    let ran = import(dir.path(), p(&config), p(&input));
    assert_eq!(ran.code, 1, "{}", ran.all());
    for want in [
        "4 bad lines, nothing imported",
        "line 2: ",
        "line 3: not a JSON object",
        "line 4: name too long",
        "line 5: \"name_base64\"",
    ] {
        assert!(ran.err.contains(want), "{want}: {}", ran.all());
    }
    assert!(!data.exists() || std::fs::metadata(&data).unwrap().len() <= 16);
    // What is not a regular file is refused before it is read.
    for input in ["/dev/zero", "/tmp"] {
        let ran = import(dir.path(), p(&config), input);
        assert_eq!(ran.code, 1, "{input}: {}", ran.all());
        assert!(
            ran.err.contains("not a regular file"),
            "{input}: {}",
            ran.all()
        );
    }
}

/// A JSON line of 1 GiB (a sparse file: no newline in it) is read
/// through, never held: the import reports it within a 400 MB address
/// space limit.
#[test]
fn a_one_gigabyte_json_line_is_reported_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jnhp.toml");
    std::fs::write(
        &config,
        datafile::config(&dir.path().join("names.data"), "always"),
    )
    .unwrap();
    let input = dir.path().join("huge.jsonl");
    let mut file = std::fs::File::create(&input).unwrap();
    file.write_all(b"{\"name\":\"ok\",\"value\":\"1\"}\n{\"name\":\"a\",\"value\":\"")
        .unwrap();
    file.set_len(1 << 30).unwrap();
    drop(file);
    let ran = datafile::run(
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 400000 && exec \"$0\" data import --config \"$1\" \"$2\"")
            .arg(common::bin())
            .arg(&config)
            .arg(&input),
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(
        ran.err.contains("1 bad lines, nothing imported; line 2: "),
        "{}",
        ran.all()
    );
    assert!(ran.err.contains("longer than any record"), "{}", ran.all());
}

/// Destinations and sources that are not regular files are refused.
#[test]
fn backup_refuses_fifos_devices_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let data = written_by_jnhpd(dir.path(), "names.data", &numbered(3));
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for dest in [p(&fifo), "/dev/full", "/tmp"] {
        let ran = jnhpd(
            dir.path(),
            &["data", "backup", "--datafile", p(&data), dest],
        );
        assert_eq!(ran.code, 1, "{dest}: {}", ran.all());
        assert!(ran.err.contains("already exists"), "{dest}: {}", ran.all());
        let ran = jnhpd(
            dir.path(),
            &["data", "backup", "--force", "--datafile", p(&data), dest],
        );
        assert_eq!(ran.code, 1, "{dest}: {}", ran.all());
        assert!(
            ran.err.contains("only a regular file is replaced"),
            "{dest}: {}",
            ran.all()
        );
    }
    assert!(
        std::fs::metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device_like()
    );
    for source in ["/dev/zero", p(&fifo), "/tmp"] {
        let dest = dir.path().join("b");
        let ran = jnhpd(
            dir.path(),
            &["data", "backup", "--datafile", source, p(&dest)],
        );
        assert_eq!(ran.code, 1, "{source}: {}", ran.all());
        assert!(
            ran.err.contains("not a regular file"),
            "{source}: {}",
            ran.all()
        );
        assert!(!dest.exists());
    }
    // Never the file being read, by its name or another link to it:
    // a jnhpd appending to it would go on in a file no longer there.
    let link = dir.path().join("link.data");
    std::fs::hard_link(&data, &link).unwrap();
    let before = std::fs::read(&data).unwrap();
    for dest in [&data, &link] {
        let ran = jnhpd(
            dir.path(),
            &["data", "backup", "--force", "--datafile", p(&data), p(dest)],
        );
        assert_eq!(ran.code, 1, "{}", ran.all());
        assert!(ran.err.contains("is the file being read"), "{}", ran.all());
        let ran = jnhpd(
            dir.path(),
            &["data", "export", p(&data), "--force", "-o", p(dest)],
        );
        assert_eq!(ran.code, 1, "{}", ran.all());
        assert!(ran.err.contains("is the file being read"), "{}", ran.all());
    }
    assert_eq!(std::fs::read(&data).unwrap(), before);
    // --force replaces a regular file; a damaged source leaves no DEST.
    let dest = dir.path().join("backup.data");
    std::fs::write(&dest, "old").unwrap();
    let ran = jnhpd(
        dir.path(),
        &[
            "data",
            "backup",
            "--force",
            "--datafile",
            p(&data),
            p(&dest),
        ],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&data).unwrap());
    // A group being written (a torn last record) is left out: the backup
    // ends at the last whole record and verifies clean.
    let whole = std::fs::read(&data).unwrap();
    let mut torn = whole.clone();
    torn.extend_from_slice(&record(b"being", b"written")[..10]);
    let torn_path = dir.path().join("torn.data");
    std::fs::write(&torn_path, &torn).unwrap();
    let dest3 = dir.path().join("backup3.data");
    let ran = jnhpd(
        dir.path(),
        &["data", "backup", "--datafile", p(&torn_path), p(&dest3)],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.out.contains(&format!(
            "backed up 3 records, {} bytes, to {}; stopped at byte offset {} (the file had {} bytes; \
             the last 10, a group being written, were left out)",
            whole.len(),
            dest3.display(),
            whole.len(),
            torn.len()
        )),
        "{}",
        ran.all()
    );
    assert_eq!(std::fs::read(&dest3).unwrap(), whole);
    let mut damaged = std::fs::read(&data).unwrap();
    let offsets = record_offsets(&damaged);
    damaged[offsets[1] + 13] ^= 1;
    let bad = dir.path().join("bad.data");
    std::fs::write(&bad, &damaged).unwrap();
    let dest2 = dir.path().join("backup2.data");
    let ran = jnhpd(
        dir.path(),
        &["data", "backup", "--datafile", p(&bad), p(&dest2)],
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(
        ran.err
            .contains(&format!("damaged at byte offset {}", offsets[1])),
        "{}",
        ran.all()
    );
    assert!(!dest2.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

trait CharDevice {
    fn is_char_device_like(&self) -> bool;
}

impl CharDevice for std::fs::FileType {
    fn is_char_device_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_char_device(self)
    }
}

/// SIGKILL of a repair at any moment never leaves the original worse:
/// either it is as it was, or it is cut and the side file holds the cut
/// bytes whole. Killed as the side file appears, and when it has grown
/// to 4 and to 32 MiB of the 64 MiB to cut.
#[test]
fn a_repair_killed_midway_never_leaves_the_original_worse() {
    let dir = tempfile::tempdir().unwrap();
    let data = written_by_jnhpd(dir.path(), "names.data", &numbered(3));
    let good = std::fs::read(&data).unwrap();
    // Damage (a long bad region) with a valid record after it.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&data)
        .unwrap();
    file.write_all(&[0xff; 64]).unwrap();
    file.set_len(good.len() as u64 + (64 << 20)).unwrap();
    drop(file);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&data)
        .unwrap();
    file.write_all(&record(b"late", b"record")).unwrap();
    drop(file);
    let damaged = std::fs::read(&data).unwrap();
    let side_files = || -> Vec<PathBuf> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".cut-"))
            .map(|e| e.path())
            .collect()
    };
    for kill_at in [0u64, 4 << 20, 32 << 20] {
        std::fs::write(&data, &damaged).unwrap();
        for side in side_files() {
            std::fs::remove_file(side).unwrap();
        }
        let mut child = Command::new(common::bin())
            .args(["data", "repair", p(&data)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        let side = loop {
            let grown = side_files()
                .into_iter()
                .find(|side| std::fs::metadata(side).is_ok_and(|m| m.len() >= kill_at));
            if let Some(side) = grown {
                break side;
            }
            if child.try_wait().unwrap().is_some() {
                break side_files().pop().unwrap();
            }
            assert!(Instant::now() < deadline, "no side file appeared");
            std::thread::sleep(Duration::from_millis(1));
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            Signal::SIGKILL,
        );
        child.wait().unwrap();
        let now = std::fs::read(&data).unwrap();
        let side_bytes = std::fs::read(&side).unwrap();
        eprintln!(
            "killed at {kill_at}: data file {} of {} bytes, side file {} bytes",
            now.len(),
            damaged.len(),
            side_bytes.len()
        );
        if now.len() == damaged.len() {
            // Not cut: the original is as it was.
            assert!(now == damaged, "killed at {kill_at}: the data file changed");
        } else {
            // Cut: only after the side file held every cut byte.
            assert_eq!(now, good, "killed at {kill_at}");
            assert!(
                side_bytes == damaged[good.len()..],
                "killed at {kill_at}: side file"
            );
        }
        // A repair run again finishes the job, leaving the first side
        // file as it was.
        let ran = jnhpd(dir.path(), &["data", "repair", p(&data)]);
        assert_eq!(ran.code, 0, "{}", ran.all());
        assert_eq!(std::fs::read(&data).unwrap(), good);
        assert_eq!(std::fs::read(&side).unwrap().len(), side_bytes.len());
    }
}

/// `jnhpd` without a command still serves with every flag, and the data
/// commands do not take the daemon's flags.
#[test]
fn the_daemon_flags_and_the_data_commands_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let ran = jnhpd(
        dir.path(),
        &["--listen", "127.0.0.1:0", "data", "verify", "x"],
    );
    assert_eq!(ran.code, 2, "{}", ran.all());
    let ran = jnhpd(dir.path(), &["data", "--help"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    for verb in ["verify", "repair", "backup", "export", "import"] {
        assert!(ran.out.contains(verb), "{}", ran.all());
    }
    let ran = jnhpd(dir.path(), &["data", "verify", "--help"]);
    assert!(
        ran.out.contains("1 damaged") && ran.out.contains("2 usage or I/O error"),
        "{}",
        ran.all()
    );
}

/// The newest installed PostgreSQL's bin directory (pg_dump, pg_restore).
fn pg_bin(program: &str) -> PathBuf {
    common::need::postgres_bindir()
        .expect("require!(Postgres) checked it")
        .join(program)
}

/// docs/backup.md's PostgreSQL recipes: a pg_dump of the two tables
/// (without the pending table's rows) restored into a new database
/// serves every name; the psql query's JSON lines import into a data
/// file with the same records.
#[test]
fn the_postgres_recipes_of_the_backup_page_work() {
    let dir = tempfile::tempdir().unwrap();
    let records = binary_records();
    let data = written_by_jnhpd(dir.path(), "names.data", &records);
    require!(Postgres);
    let pg = Postgres::start();
    let db = pg.create_db("source");
    let pg_config = |db: &str| {
        format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n",
            pg.url(db)
        )
    };
    let config = dir.path().join("pg.toml");
    std::fs::write(&config, pg_config(&db)).unwrap();
    let ran = import(dir.path(), p(&config), p(&data));
    assert_eq!(ran.code, 0, "{}", ran.all());
    // A lease in the pending table, which the dump leaves out.
    pg.psql(
        &db,
        "INSERT INTO jnhp_pending VALUES ('pending'::bytea, 'gone', 1, now() + interval '1 hour')",
    );
    let dump = dir.path().join("jnhp.dump");
    let connect = [
        "-h",
        p(&pg.dir),
        "-p",
        &pg.port.to_string(),
        "-U",
        "postgres",
    ];
    let status = Command::new(pg_bin("pg_dump"))
        .args(connect)
        .args([
            "--format=custom",
            "--table=jnhp_names",
            "--table=jnhp_pending",
            "--exclude-table-data=jnhp_pending",
            "--file",
            p(&dump),
            &db,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let restored = pg.create_db("restored");
    let status = Command::new(pg_bin("pg_restore"))
        .args(connect)
        .args(["--dbname", &restored, p(&dump)])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(pg.psql(&restored, "SELECT count(*) FROM jnhp_pending"), "0");
    let front_dir = tempfile::tempdir().unwrap();
    let server = start(front_dir.path(), &pg_config(&restored));
    serves(&server, &records);
    let mut c = server.connect();
    assert_eq!(c.ask("STORE pending now"), "W00T!");
    stop(server);
    // psql's JSON lines into a data file: the same records.
    let lines = pg.psql(
        &db,
        "SELECT json_build_object(
            'name_base64', translate(encode(name, 'base64'), E'\\n', ''),
            'value_base64', translate(encode(value, 'base64'), E'\\n', ''))
         FROM jnhp_names ORDER BY stored_at, write_id",
    );
    let jsonl = dir.path().join("from-pg.jsonl");
    std::fs::write(&jsonl, lines + "\n").unwrap();
    let target = dir.path().join("from-pg.data");
    let local = dir.path().join("local.toml");
    std::fs::write(&local, datafile::config(&target, "always")).unwrap();
    let ran = import(dir.path(), p(&local), p(&jsonl));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.out.contains(&format!("{} imported", records.len())),
        "{}",
        ran.all()
    );
    let exported = |path: &Path| {
        let ran = jnhpd(dir.path(), &["data", "export", p(path)]);
        assert_eq!(ran.code, 0, "{}", ran.all());
        let mut lines: Vec<String> = ran.out.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(exported(&target), exported(&data));
}
