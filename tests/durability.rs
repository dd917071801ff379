//! The data file: every acknowledged STORE survives a crash and a restart.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::datafile::start;
use common::{Client, Server, run_to_exit, start_fails};
use nix::sys::signal::Signal;

fn durable(fsync: &str) -> String {
    format!("[storage]\npath = \"data\"\nfsync = \"{fsync}\"\n")
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
    // It names the tools that show, cut or replace the damage.
    for command in [
        "jnhpd data verify",
        "jnhpd data repair",
        "jnhpd data backup",
    ] {
        assert!(out.contains(command), "{command}: {out}");
    }
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

// --- Files that are not data files, records no STORE could make, and
// imports that stream (issue 21, items 2 and 3).

#[path = "common/pg.rs"]
mod pg;

use std::time::{Duration, Instant};

/// How a watched run of jnhpd ended.
struct Watched {
    /// The exit code, or `None` when a signal ended it.
    code: Option<i32>,
    output: String,
    /// Peak resident memory (VmHWM, the last seen), KiB.
    peak_kib: u64,
    /// Why the watch killed it, if it did.
    killed: Option<String>,
}

/// Runs `cmd` to its end, killing it if it passes `max_kib` of resident
/// memory or runs longer than `limit` (so a broken build fails the test
/// instead of taking the machine's memory).
fn run_watched(mut cmd: Command, max_kib: u64, limit: Duration) -> Watched {
    use std::io::Read;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let mut killed = None;
    // (Not wait4's ru_maxrss: that counts the test process's own memory,
    // copied by the fork before the exec.)
    let mut peak_kib = 0;
    let status = loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let rss = kib("VmRSS:");
        peak_kib = peak_kib.max(kib("VmHWM:"));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if killed.is_none() {
            let why = if rss > max_kib {
                Some(format!("resident memory {rss} KiB"))
            } else if Instant::now() > deadline {
                Some(format!("still running after {limit:?}"))
            } else {
                None
            };
            if let Some(why) = why {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                killed = Some(why);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Watched {
        code: status.code(),
        output: out.join().unwrap() + &err.join().unwrap(),
        peak_kib,
        killed,
    }
}

/// `jnhpd --config CONFIG` plus `args`, run in `dir`.
fn jnhpd_in(dir: &Path, config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(common::bin());
    cmd.current_dir(dir).arg("--config").arg(config).args(args);
    cmd
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// A data file holding `records`, written as jnhpd writes one.
fn data_file_with(path: &Path, records: &[(&[u8], &[u8])]) -> Vec<u64> {
    use jnhpd::datafile::{HEADER_LEN, MAGIC, VERSION, encode_record};
    let mut data = MAGIC.to_vec();
    data.extend_from_slice(&VERSION.to_le_bytes());
    data.resize(HEADER_LEN, 0);
    let mut offsets = Vec::new();
    for (name, value) in records {
        offsets.push(data.len() as u64);
        encode_record(name, value, &mut data);
    }
    std::fs::write(path, data).unwrap();
    offsets
}

/// Records whose name or value no STORE can make, each with the reason
/// the refusal gives: reply-line injection (CR LF, NUL, `ERROR `), names
/// with blanks or control bytes, and values over `max_value_bytes` (16
/// in the configs below).
fn forbidden_records() -> Vec<(&'static [u8], &'static [u8], &'static str)> {
    vec![
        (b"inject", b"1\r\nAWESOME!", "forbidden byte in value"),
        (b"nul", b"a\x00b", "forbidden byte in value"),
        (b"err", b"ERROR x", "reserved value"),
        (b"two words", b"v", "forbidden byte in name"),
        (b"ctl\x01", b"v", "forbidden byte in name"),
        (b"blank", b" leading", "value begins with a blank"),
        (
            b"long",
            b"0123456789abcdefX",
            "value too long (over 16 bytes)",
        ),
    ]
}

/// A data file's replay holds every record to the protocol's rules and
/// the configured limits: a record no STORE could make (which a GET would
/// send back as extra reply lines) stops the start, naming the file and
/// the record's offset, and the file is left as it is.
#[test]
fn replay_refuses_a_record_no_store_could_make_naming_file_and_offset() {
    for (name, value, reason) in forbidden_records() {
        let dir = tempfile::tempdir().unwrap();
        let data = data_file(dir.path());
        let offsets = data_file_with(&data, &[(b"fine", b"value"), (name, value), (b"z", b"1")]);
        let before = std::fs::read(&data).unwrap();
        let config = dir.path().join("jnhp.toml");
        std::fs::write(
            &config,
            "[server]\nmax_value_bytes = 16\n[storage]\npath = \"data\"\n",
        )
        .unwrap();
        let run = run_watched(
            jnhpd_in(dir.path(), &config, &["--listen", "127.0.0.1:0"]),
            1 << 20,
            Duration::from_secs(20),
        );
        let out = &run.output;
        assert_eq!(run.killed, None, "{name:?}: it started: {out}");
        assert_eq!(run.code, Some(1), "{name:?}: {out}");
        let want = format!(
            "data file {}: the record at byte offset {} holds what no STORE may: {reason}",
            data.display(),
            offsets[1]
        );
        assert!(out.contains(&want), "{name:?}:\n got {out}\nwant {want}");
        assert_eq!(
            std::fs::read(&data).unwrap(),
            before,
            "the file was changed"
        );
    }
    // Within the rules, the same file replays.
    let dir = tempfile::tempdir().unwrap();
    data_file_with(&data_file(dir.path()), &[(b"fine", b"value with  blanks ")]);
    let s = start(
        dir.path(),
        "[server]\nmax_value_bytes = 19\n[storage]\npath = \"data\"\n",
    );
    assert_eq!(s.connect().ask("GET fine"), "value with  blanks ");
}

/// `--import-datafile` holds the file to the same rules, before it
/// connects to anything: the record's offset is named and nothing is
/// imported. (The URL names a port nobody listens on: the check comes
/// first, so it is never tried.)
#[test]
fn import_refuses_a_record_no_store_could_make_naming_file_and_offset() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    for (name, value, reason) in forbidden_records() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("names.data");
        let offsets = data_file_with(&data, &[(b"fine", b"value"), (name, value)]);
        let config = dir.path().join("jnhp.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nmax_value_bytes = 16\n[storage]\nbackend = \"postgres\"\n\
                 [storage.postgres]\nurl = \"postgres://jnhp@127.0.0.1:{port}/names\"\n"
            ),
        )
        .unwrap();
        let run = run_watched(
            jnhpd_in(dir.path(), &config, &["--import-datafile", "names.data"]),
            1 << 20,
            Duration::from_secs(20),
        );
        let out = &run.output;
        assert_eq!((run.code, &run.killed), (Some(1), &None), "{name:?}: {out}");
        let want = format!(
            "the record at byte offset {} holds what no STORE may: {reason}",
            offsets[1]
        );
        assert!(
            out.contains(&want) && out.contains("names.data"),
            "{name:?}:\n got {out}\nwant {want}"
        );
    }
}

/// `--import-datafile` given `/dev/zero`, a FIFO or a symlink to either:
/// refused at once, naming what it is, in little memory (it read
/// `/dev/zero` until memory ran out, and waited on the FIFO forever). A
/// real file streams: importing 96 MiB of values stays far below 96 MiB
/// of memory.
#[test]
fn import_refuses_what_is_not_a_file_and_streams_a_large_one() {
    require!(Postgres);
    let pg = pg::Postgres::start();
    let db = pg.create_db("import");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jnhp.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n",
            pg.url(&db)
        ),
    )
    .unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let zero_link = dir.path().join("zero-link");
    std::os::unix::fs::symlink("/dev/zero", &zero_link).unwrap();
    let fifo_link = dir.path().join("fifo-link");
    std::os::unix::fs::symlink(&fifo, &fifo_link).unwrap();
    for (file, kind) in [
        (Path::new("/dev/zero"), "a character device"),
        (&zero_link, "a character device"),
        (&fifo, "a FIFO"),
        (&fifo_link, "a FIFO"),
    ] {
        let run = run_watched(
            jnhpd_in(
                dir.path(),
                &config,
                &["--import-datafile", file.to_str().unwrap()],
            ),
            256 << 10,
            Duration::from_secs(20),
        );
        let out = &run.output;
        assert_eq!(run.killed, None, "{}: {out}", file.display());
        assert_eq!(run.code, Some(1), "{}: {out}", file.display());
        assert!(
            out.contains(&format!("{}: cannot read: it is {kind}", file.display())),
            "{}: {out}",
            file.display()
        );
    }
    // 1,600 values of 60,000 bytes.
    let data = dir.path().join("big.data");
    let value = vec![b'v'; 60_000];
    let names: Vec<String> = (0..1600).map(|i| format!("name-{i}")).collect();
    let records: Vec<(&[u8], &[u8])> = names.iter().map(|n| (n.as_bytes(), &value[..])).collect();
    data_file_with(&data, &records);
    let size = std::fs::metadata(&data).unwrap().len();
    assert!(size > 96_000_000, "{size}");
    let run = run_watched(
        jnhpd_in(
            dir.path(),
            &config,
            &["--import-datafile", data.to_str().unwrap()],
        ),
        1 << 20,
        Duration::from_secs(300),
    );
    let out = &run.output;
    assert_eq!((run.code, &run.killed), (Some(0), &None), "{out}");
    assert!(
        out.contains("1600 imported, 0 already present, 0 conflicts"),
        "{out}"
    );
    assert!(
        run.peak_kib < 64 * 1024,
        "importing a {size}-byte file took {} KiB of memory",
        run.peak_kib
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*), sum(length(value)) FROM jnhp_names"),
        "1600|96000000"
    );
}

/// The data file itself a FIFO or `/dev/zero` at start (a symlink made
/// so after the config was written): a clear error naming it, never a
/// hang or an endless read.
#[test]
fn a_data_file_that_is_a_fifo_or_dev_zero_stops_the_start() {
    for target in ["fifo", "/dev/zero"] {
        let dir = tempfile::tempdir().unwrap();
        if target == "fifo" {
            mkfifo(&dir.path().join("fifo"));
        }
        std::os::unix::fs::symlink(target, data_file(dir.path())).unwrap();
        let config = dir.path().join("jnhp.toml");
        std::fs::write(&config, durable("always")).unwrap();
        let run = run_watched(
            jnhpd_in(dir.path(), &config, &["--listen", "127.0.0.1:0"]),
            256 << 10,
            Duration::from_secs(20),
        );
        let out = &run.output;
        assert_eq!((run.code, &run.killed), (Some(1), &None), "{target}: {out}");
        assert!(out.contains("is not a regular file"), "{target}: {out}");
    }
}
