//! The data file: every acknowledged STORE survives a crash and a restart.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{Client, Server, run_to_exit, start_fails};
use nix::sys::signal::Signal;

fn durable(fsync: &str) -> String {
    format!("[storage]\npath = \"data\"\nfsync = \"{fsync}\"\n")
}

/// Starts jnhpd on the data file in `dir` (kept across restarts).
fn start(dir: &Path, config: &str) -> Server {
    let path = dir.join("jnhp.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"]);
    // The server's own temp dir is unused; the data lives in `dir`.
    Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(path))
}

fn kill9(mut s: Server) {
    s.signal(Signal::SIGKILL);
    s.wait_exit();
}

fn value_for(i: usize) -> Vec<u8> {
    // Every byte a value may hold, in a different mix per name.
    let mut v = format!("v{i} ").into_bytes();
    v.extend(
        (1u8..=255)
            .filter(|b| *b != b'\r' && *b != b'\n')
            .cycle()
            .skip(i % 200)
            .take(i % 97),
    );
    v
}

#[test]
fn a_thousand_names_survive_sigkill_byte_exact_in_every_fsync_mode() {
    for fsync in ["always", "everysec", "never"] {
        let dir = tempfile::tempdir().unwrap();
        let s = start(dir.path(), &durable(fsync));
        let mut c = s.connect();
        let mut burst = Vec::new();
        for i in 0..1000 {
            burst.extend_from_slice(format!("STORE name-{i} ").as_bytes());
            burst.extend_from_slice(&value_for(i));
            burst.extend_from_slice(b"\r\n");
        }
        c.send(&burst);
        for i in 0..1000 {
            assert_eq!(c.reply(), "W00T!", "{fsync}: STORE {i}");
        }
        kill9(s);

        let s = start(dir.path(), &durable(fsync));
        s.log.wait_for("replayed 1000 records (1000 names)");
        let mut c = s.connect();
        for i in 0..1000 {
            c.send(format!("GET name-{i}\r\n").as_bytes());
            let line = c.line();
            assert_eq!(
                &line[..line.len() - 2],
                &value_for(i)[..],
                "{fsync}: name-{i}"
            );
        }
        assert_eq!(
            c.ask("STORE name-7 again"),
            "RARGH!",
            "still write-once after replay"
        );
    }
}

/// Many clients store while the server is killed: every name that got
/// W00T! is there after the restart, with its value.
#[test]
fn every_acknowledged_store_survives_a_kill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &durable("always"));
    let addr = s.addr();
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let acked = acked.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let (name, value) = (format!("w{w}-{i}"), format!("value {w} {i}"));
                    c.send(format!("STORE {name} {value}\r\n").as_bytes());
                    let mut line = Vec::new();
                    // The kill cuts connections: stop at the first error.
                    match std::io::BufRead::read_until(&mut c.reader, b'\n', &mut line) {
                        Ok(n) if n > 0 && line == b"W00T!\r\n" => {
                            acked.lock().unwrap().insert(name, value);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    // Kill once a good number of STOREs were acknowledged.
    while acked.lock().unwrap().len() < 2000 {
        std::thread::yield_now();
    }
    kill9(s);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap();
    let s = start(dir.path(), &durable("always"));
    let mut c = s.connect();
    for (name, value) in acked.iter() {
        assert_eq!(
            &c.ask(&format!("GET {name}")),
            value,
            "acknowledged {name} was lost"
        );
    }
}

fn data_file(dir: &Path) -> PathBuf {
    dir.join("data")
}

/// Stores one, two, three (as value-one, ...) with `fsync = "always"`,
/// SIGKILLs the server, and returns the data file's path.
fn three_records_then_kill(dir: &Path) -> PathBuf {
    let s = start(dir, &durable("always"));
    let mut c = s.connect();
    for name in ["one", "two", "three"] {
        assert_eq!(c.ask(&format!("STORE {name} value-{name}")), "W00T!");
    }
    drop(c);
    kill9(s);
    data_file(dir)
}

#[test]
fn a_torn_last_record_is_cut_off_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = three_records_then_kill(dir.path());
    let full = std::fs::read(&path).unwrap();
    let last_record = 12 + "three".len() + "value-three".len();
    // Cut the last record at its first, middle and last byte (every offset
    // is covered by the replay unit test).
    for keep in [1, last_record / 2, last_record - 1] {
        let cut = full.len() - last_record + keep;
        std::fs::write(&path, &full[..cut]).unwrap();
        let s = start(dir.path(), &durable("always"));
        let warning = s.log.wait_for("cutting off");
        assert!(
            warning.contains(&format!("byte offset {}", full.len() - last_record)),
            "{warning}"
        );
        let mut c = s.connect();
        assert_eq!(c.ask("GET two"), "value-two");
        assert_eq!(c.ask("EXISTS three"), "RARGH!");
        // The file was cut back: a new record follows cleanly.
        assert_eq!(c.ask("STORE three again"), "W00T!");
        drop(c);
        kill9(s);
        let s = start(dir.path(), &durable("always"));
        assert_eq!(s.connect().ask("GET three"), "again");
        assert_eq!(s.log.count("cutting off"), 0);
        kill9(s);
    }
}

#[test]
fn a_damaged_record_followed_by_good_ones_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = three_records_then_kill(dir.path());
    let mut data = std::fs::read(&path).unwrap();
    data[16 + 12 + 4] ^= 0x20; // a byte of the first record's value
    std::fs::write(&path, &data).unwrap();
    let config = dir.path().join("jnhp.toml");
    let (code, out) = start_fails(&config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("data file {}", path.display())),
        "{out}"
    );
    assert!(out.contains("damaged record at byte offset 16"), "{out}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        data,
        "the file was left untouched"
    );
}

#[test]
fn a_file_that_is_not_a_data_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(data_file(dir.path()), "hello, I am a text file\n").unwrap();
    let config = dir.path().join("jnhp.toml");
    std::fs::write(&config, durable("always")).unwrap();
    let (code, out) = start_fails(&config);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a jnhpd data file"), "{out}");
}

#[test]
fn a_second_jnhpd_on_the_same_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), &durable("always"));
    assert_eq!(first.connect().ask("STORE a b"), "W00T!");
    let config = dir.path().join("jnhp.toml");
    let (code, out) = start_fails(&config);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("in use by another jnhpd"), "{out}");
    assert_eq!(first.connect().ask("GET a"), "b");
}

#[test]
fn a_missing_data_directory_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jnhp.toml");
    std::fs::write(&config, "[storage]\n\npath = \"missing/data\"\n").unwrap();
    let (code, out) = run_to_exit(
        &["--check-config", "--config", config.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("jnhp.toml:3: storage.path: directory"),
        "{out}"
    );
}

/// Out of space (here: past RLIMIT_FSIZE, a real EFBIG from write(2)): the
/// STORE gets an ERROR and is not acknowledged, reads go on, and the file
/// holds no partial record afterwards.
#[test]
fn a_full_disk_refuses_stores_with_an_error_and_keeps_serving_reads() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jnhp.toml");
    std::fs::write(&config, durable("always")).unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in pre_exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE, 4096, 4096)
                .map_err(std::io::Error::from)
        });
    }
    let s = Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(config.clone()));
    let mut c = s.connect();
    let value = "x".repeat(500);
    let mut stored = Vec::new();
    let mut refusal = None;
    for i in 0..20 {
        let reply = c.ask(&format!("STORE n{i} {value}"));
        if reply == "W00T!" {
            stored.push(i);
        } else {
            refusal = Some((i, reply));
            break;
        }
    }
    let (refused, reply) = refusal.expect("the file never filled up");
    assert!(reply.starts_with("ERROR storage: cannot write"), "{reply}");
    assert!(!stored.is_empty());
    assert_eq!(c.ask(&format!("EXISTS n{refused}")), "RARGH!", "not stored");
    assert_eq!(c.ask("GET n0"), value, "reads go on");
    assert!(
        c.ask(&format!("STORE again {value}"))
            .starts_with("ERROR storage"),
        "still full"
    );
    s.log.wait_for("STOREs not acknowledged");
    drop(c);
    kill9(s);

    // Without the limit: every acknowledged STORE is there, the file is
    // clean, and the refused name can be stored now.
    let s = start(dir.path(), &durable("always"));
    s.log
        .wait_for(&format!("replayed {} records", stored.len()));
    let mut c = s.connect();
    for i in &stored {
        assert_eq!(c.ask(&format!("GET n{i}")), value);
    }
    assert_eq!(c.ask(&format!("STORE n{refused} now")), "W00T!");
}

#[test]
fn sigterm_syncs_and_a_restart_has_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &durable("never"));
    let mut c = s.connect();
    for i in 0..100 {
        assert_eq!(c.ask(&format!("STORE k{i} v{i}")), "W00T!");
    }
    drop(c);
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit().code(), Some(0));
    let s = start(dir.path(), &durable("never"));
    s.log.wait_for("replayed 100 records");
    assert_eq!(s.connect().ask("GET k99"), "v99");
}

/// Durability composes with validation: a STORE allowed by a validator is
/// written before it is acknowledged, and a rejected one leaves nothing.
#[test]
fn validated_stores_are_durable_and_rejected_ones_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let prog = common::script(
        dir.path(),
        "check",
        "case \"$1\" in ok*) echo JNHP:1 ;; *) echo JNHP:0 ;; esac",
    );
    let config = format!(
        "{}{}",
        durable("always"),
        common::process_validator(&prog, "")
    );
    let s = start(dir.path(), &config);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE good ok-value"), "W00T!");
    assert_eq!(c.ask("STORE bad nope"), "RARGH!");
    drop(c);
    kill9(s);
    let s = start(dir.path(), &config);
    s.log.wait_for("replayed 1 records");
    let mut c = s.connect();
    assert_eq!(c.ask("GET good"), "ok-value");
    assert_eq!(c.ask("EXISTS bad"), "RARGH!");
}

/// Pipelined STOREs are written together; requests after them see their
/// outcome, and a repeated name inside the pipeline is refused.
#[test]
fn pipelined_stores_mixed_with_reads_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &durable("always"));
    let mut c = s.connect();
    c.send(b"STORE a 1\r\nSTORE b 2\r\nSTORE a 3\r\nGET a\r\nSTORE c 4\r\nSTORE d 5\r\nEXISTS c\r\nGET d\r\nSTORE b 6\r\n");
    for want in [
        "W00T!", "W00T!", "RARGH!", "1", "W00T!", "W00T!", "AWESOME!", "5", "RARGH!",
    ] {
        assert_eq!(c.reply(), want);
    }
    drop(c);
    kill9(s);
    let s = start(dir.path(), &durable("always"));
    s.log.wait_for("replayed 4 records (4 names)");
    assert_eq!(s.connect().ask("GET b"), "2");
}

/// Garbage after the last good record (a crash can leave a block that was
/// allocated but never written) is cut off with a warning, whatever
/// lengths its bytes seem to hold; acknowledged data is all there.
#[test]
fn garbage_at_the_tail_is_cut_off_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = three_records_then_kill(dir.path());
    let good_len = std::fs::metadata(&path).unwrap().len();
    let mut data = std::fs::read(&path).unwrap();
    // Looks like a record header with small, sane lengths, then noise.
    data.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 5, 0, 0, 0, 7, 0, 0, 0]);
    let mut x = 12345u32;
    for _ in 0..3000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        data.push((x >> 16) as u8);
    }
    std::fs::write(&path, &data).unwrap();
    let s = start(dir.path(), &durable("always"));
    s.log.wait_for("cutting off 3012 bytes");
    let mut c = s.connect();
    for name in ["one", "two", "three"] {
        assert_eq!(c.ask(&format!("GET {name}")), format!("value-{name}"));
    }
    assert_eq!(c.ask("STORE four value-four"), "W00T!");
    drop(c);
    kill9(s);
    assert!(std::fs::metadata(&path).unwrap().len() > good_len);
    let s = start(dir.path(), &durable("always"));
    assert_eq!(s.connect().ask("GET four"), "value-four");
    assert!(!s.log.all().contains("cutting off"), "{}", s.log.all());
}
