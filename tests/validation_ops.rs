//! What operators of validation ask for (issue 27), end to end against
//! the real binary, real validator scripts and real SIGHUPs: a validator
//! introduced in dry run, its would-be refusals read in the decision log
//! and the metrics, switched to enforce by a SIGHUP; a deny cache that
//! spares the validator a hammered refusal and stays within its size; one
//! deadline for the whole chain.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{PATIENCE, Server, admin_addr, metrics, script, start_fails};
use nix::sys::signal::Signal;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn metric(addr: SocketAddr, key: &str) -> f64 {
    metrics(addr).get(key).copied().unwrap_or(-1.0)
}

/// The decision log's lines, parsed, once it has at least `n`.
fn decisions(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, not {n}:\n{text}",
            path.display(),
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Rewrites the server's config and waits until the SIGHUP has applied it.
fn reload(s: &Server, config: &str) {
    let before = s.log.count("configuration reloaded");
    std::fs::write(s.config.as_ref().unwrap(), config).unwrap();
    s.signal(Signal::SIGHUP);
    let deadline = Instant::now() + PATIENCE;
    while s.log.count("configuration reloaded") <= before {
        assert!(
            Instant::now() < deadline,
            "no reload; log:\n{}",
            s.log.all()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A validator refusing values that begin with "bad", appending each
/// value it judges to `runs` beside it.
fn counting_validator(dir: &Path) -> std::path::PathBuf {
    script(
        dir,
        "gate",
        &format!(
            "echo \"$1\" >> {}\ncase \"$1\" in bad*) echo JNHP:0 ;; *) echo JNHP:1 ;; esac",
            dir.join("runs").display()
        ),
    )
}

fn runs(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn gate_config(gate: &Path, log: &Path, extra: &str) -> String {
    format!(
        "[admin]\nlisten = [\"127.0.0.1:0\"]\n\
         [validation]\ndecision_log = \"{}\"\n\
         [[validator]]\nname = \"gate\"\nkind = \"process\"\ncommand = [\"{}\"]\n{extra}\n",
        log.display(),
        gate.display()
    )
}

/// The issue's "done when", first half: a validator introduced in dry
/// run refuses nothing; the decision log and the metrics say what it
/// would have refused; a SIGHUP switches it to enforce, the same running
/// validator, and then it refuses.
#[test]
fn a_dry_run_validator_is_read_in_the_log_then_enforced_by_sighup() {
    let d = dir();
    let gate = counting_validator(d.path());
    let log = d.path().join("decisions.log");
    let config = gate_config(&gate, &log, "mode = \"dryrun\"");
    let s = Server::start_in(d, &config);
    let admin = admin_addr(&s);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a good"), "W00T!");
    assert_eq!(c.ask("STORE b bad1"), "W00T!", "dry run: never refuses");
    assert_eq!(c.ask("GET b"), "bad1");
    let lines = decisions(&log, 2);
    let b = &lines[1];
    assert_eq!(b["name"], "b");
    assert_eq!(b["outcome"], "allowed");
    assert_eq!(b["value_bytes"], 4);
    assert!(b.get("value").is_none(), "no value unless asked for: {b}");
    assert_eq!(b["validators"][0]["validator"], "gate");
    assert_eq!(b["validators"][0]["mode"], "dryrun");
    assert_eq!(b["validators"][0]["verdict"], "deny");
    assert!(b["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{b}");
    assert_eq!(lines[0]["validators"][0]["verdict"], "allow");
    let m = metrics(admin);
    assert_eq!(
        m["jnhpd_validator_mode{validator=\"gate\",mode=\"dryrun\"}"],
        1.0
    );
    assert_eq!(
        m["jnhpd_validator_not_enforced_total{validator=\"gate\"}"],
        1.0
    );
    assert_eq!(
        m["jnhpd_validator_verdicts_total{validator=\"gate\",verdict=\"deny\"}"],
        1.0
    );
    assert_eq!(s.log.count("would refuse"), 0, "dryrun does not log each");

    reload(&s, &config.replace("dryrun", "enforce"));
    assert_eq!(c.ask("STORE c bad2"), "RARGH!");
    assert_eq!(c.ask("STORE d fine"), "W00T!");
    let lines = decisions(&log, 4);
    assert_eq!(lines[2]["outcome"], "refused");
    assert_eq!(lines[2]["validators"][0]["mode"], "enforce");
    let m = metrics(admin);
    assert_eq!(
        m["jnhpd_validator_mode{validator=\"gate\",mode=\"enforce\"}"],
        1.0
    );
    assert_eq!(
        m["jnhpd_validator_verdicts_total{validator=\"gate\",verdict=\"deny\"}"], 2.0,
        "the same validator, its figures kept across the mode change"
    );
    assert_eq!(
        m["jnhpd_validator_not_enforced_total{validator=\"gate\"}"],
        1.0
    );
    assert_eq!(runs(s.dir.path()), ["good", "bad1", "bad2", "fine"]);
}

/// `warn` allows too, and logs each would-be refusal; on the inline path
/// (a regex, checked as the request is parsed) as on the async one.
#[test]
fn warn_logs_each_would_be_refusal_on_the_inline_path() {
    let d = dir();
    let log = d.path().join("decisions.log");
    let config = format!(
        "[validation]\ndecision_log = \"{}\"\n\
         [[validator]]\nname = \"lower\"\nkind = \"function\"\nfunction = \"regex\"\n\
         field = \"name\"\npattern = \"^[a-z]+$\"\nmode = \"warn\"\n",
        log.display()
    );
    let s = Server::start_in(d, &config);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE UPPER v"), "W00T!");
    assert_eq!(c.ask("STORE lower v"), "W00T!");
    let line = s.log.wait_for("would refuse");
    assert!(
        line.contains("lower") && line.contains("\"UPPER\""),
        "{line}"
    );
    assert_eq!(s.log.count("would refuse"), 1);
    let lines = decisions(&log, 2);
    assert_eq!(lines[0]["validators"][0]["verdict"], "deny");
    assert_eq!(lines[0]["validators"][0]["mode"], "warn");
    assert_eq!(lines[0]["outcome"], "allowed");
    assert!(lines[0]["peer"].as_str().is_some(), "{}", lines[0]);
    reload(&s, &config.replace("warn", "enforce"));
    assert_eq!(c.ask("STORE AGAIN v"), "RARGH!");
    assert_eq!(decisions(&log, 3)[2]["outcome"], "refused");
}

/// The issue's "done when", second half: a client hammering a refused
/// value costs the validator one run; another value (or name) runs it
/// again; a reload that changes only the mode keeps the cache, one that
/// changes the validator's table empties it.
#[test]
fn a_hammered_refusal_runs_the_validator_once() {
    let d = dir();
    let gate = counting_validator(d.path());
    let log = d.path().join("decisions.log");
    let config = gate_config(
        &gate,
        &log,
        "deny_cache_secs = 3600\ndeny_cache_entries = 10",
    );
    let s = Server::start_in(d, &config);
    let admin = admin_addr(&s);
    let mut c = s.connect();
    for _ in 0..50 {
        assert_eq!(c.ask("STORE n bad"), "RARGH!");
    }
    eprintln!(
        "{:?}",
        metrics(admin)
            .iter()
            .filter(|(k, _)| k.contains("gate"))
            .collect::<Vec<_>>()
    );
    assert_eq!(runs(s.dir.path()), ["bad"]);
    assert_eq!(
        metric(
            admin,
            "jnhpd_validator_deny_cache_hits_total{validator=\"gate\"}"
        ),
        49.0
    );
    assert_eq!(
        metric(
            admin,
            "jnhpd_validator_deny_cache_entries{validator=\"gate\"}"
        ),
        1.0
    );
    let lines = decisions(&log, 50);
    assert_eq!(lines[0]["validators"][0]["verdict"], "deny");
    assert_eq!(lines[49]["validators"][0]["verdict"], "cached_deny");
    assert_eq!(lines[49]["outcome"], "refused");
    // Keyed by name and value.
    assert_eq!(c.ask("STORE n bad-other"), "RARGH!");
    assert_eq!(c.ask("STORE m bad"), "RARGH!");
    assert_eq!(runs(s.dir.path()).len(), 3);
    // Allowed STOREs are not cached (they are stored).
    assert_eq!(c.ask("STORE n good"), "W00T!");
    assert_eq!(runs(s.dir.path()).len(), 4);
    assert_eq!(c.ask("STORE k bad"), "RARGH!");
    assert_eq!(c.ask("STORE k bad"), "RARGH!");
    assert_eq!(runs(s.dir.path()).len(), 5);

    // Mode only: the cache (the validator's own refusals) stays.
    reload(
        &s,
        &config.replace("deny_cache_secs", "mode = \"warn\"\ndeny_cache_secs"),
    );
    assert_eq!(
        c.ask("STORE p bad"),
        "W00T!",
        "warn: a refusal does not refuse"
    );
    assert_eq!(c.ask("STORE m bad"), "W00T!", "nor does a cached one");
    assert_eq!(runs(s.dir.path()).len(), 6, "only p ran");
    // The table changed: a new validator, an empty cache.
    reload(
        &s,
        &config.replace("deny_cache_secs", "timeout_ms = 4000\ndeny_cache_secs"),
    );
    assert_eq!(
        metric(
            admin,
            "jnhpd_validator_deny_cache_entries{validator=\"gate\"}"
        ),
        0.0
    );
    assert_eq!(c.ask("STORE k bad"), "RARGH!");
    assert_eq!(runs(s.dir.path()).len(), 7, "k ran again");
}

/// A flood of distinct refused values: the cache holds
/// `deny_cache_entries` and no more (the newest), on the inline path.
#[test]
fn a_flood_of_distinct_refusals_keeps_the_cache_at_its_size() {
    let config = "[admin]\nlisten = [\"127.0.0.1:0\"]\n\
         [[validator]]\nname = \"short\"\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 3\n\
         deny_cache_secs = 3600\ndeny_cache_entries = 50\n";
    let s = Server::start(config);
    let admin = admin_addr(&s);
    let mut c = s.connect();
    let mut batch = String::new();
    for i in 0..5000 {
        batch.push_str(&format!("STORE n too-long-{i}\n"));
    }
    c.send(batch.as_bytes());
    for _ in 0..5000 {
        assert_eq!(c.reply(), "RARGH!");
    }
    let key = "jnhpd_validator_deny_cache_entries{validator=\"short\"}";
    assert_eq!(metric(admin, key), 50.0);
    assert_eq!(c.ask("STORE n too-long-4999"), "RARGH!");
    assert_eq!(
        metric(
            admin,
            "jnhpd_validator_deny_cache_hits_total{validator=\"short\"}"
        ),
        1.0,
        "the newest are kept"
    );
}

/// Two slow validators whose timeouts add up far beyond the deadline:
/// the STORE is answered at the deadline, and what happens then is the
/// running validator's `on_failure`; a validator reached after the
/// deadline does not start.
#[test]
fn the_chain_deadline_bounds_a_store() {
    let d = dir();
    let slow = |name: &str| {
        script(
            d.path(),
            name,
            &format!(
                "touch {}\nsleep 60\necho JNHP:1",
                d.path().join(format!("{name}-ran")).display()
            ),
        )
    };
    let (first, second) = (slow("first"), slow("second"));
    let config = |first_failure: &str, second_failure: &str| {
        format!(
            "[validation]\ndeadline_ms = 1000\n\
             [[validator]]\nname = \"first\"\nkind = \"process\"\ncommand = [\"{}\"]\n\
             timeout_ms = 30000\non_failure = \"{first_failure}\"\n\
             [[validator]]\nname = \"second\"\nkind = \"process\"\ncommand = [\"{}\"]\n\
             timeout_ms = 30000\non_failure = \"{second_failure}\"\n",
            first.display(),
            second.display()
        )
    };
    let s = Server::start_in(d, &config("reject", "allow"));
    let mut c = s.connect();
    let started = Instant::now();
    assert_eq!(c.ask("STORE a v"), "RARGH!", "first's on_failure: reject");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    s.log.wait_for("validation.deadline_ms = 1000");
    assert!(s.dir.path().join("first-ran").exists());
    assert!(!s.dir.path().join("second-ran").exists());
    // The program the deadline cut short is gone, not left sleeping (or
    // holding its max_concurrent slot) until its own 30 s timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !common::children_of(s.pid()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            common::children_of(s.pid())
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    reload(&s, &config("allow", "reject"));
    let started = Instant::now();
    assert_eq!(
        c.ask("STORE b v"),
        "RARGH!",
        "second reached too late: its reject"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!s.dir.path().join("second-ran").exists(), "never started");

    reload(&s, &config("allow", "allow"));
    let started = Instant::now();
    assert_eq!(c.ask("STORE c v"), "W00T!", "both allow on failure");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// Names of any bytes a name may hold (C1, U+2028, invalid UTF-8) and a
/// value with ESC and control bytes,
/// logged on request: every line is one line of valid JSON, the exact
/// bytes in hex beside.
#[test]
fn the_decision_log_survives_hostile_names() {
    let d = dir();
    let log = d.path().join("decisions.log");
    let config = format!(
        "[validation]\ndecision_log = \"{}\"\ndecision_log_values = true\n\
         [[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 100\n",
        log.display()
    );
    let s = Server::start_in(d, &config);
    let mut c = s.connect();
    c.send(b"STORE a\xc2\x85\xe2\x80\xa8\xff\xfe v\x1b[31m\x01\xc3\n");
    assert_eq!(c.reply(), "W00T!");
    let lines = decisions(&log, 1);
    let text = std::fs::read(&log).unwrap();
    assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), 1);
    assert!(!text.contains(&0x1b) && !text.contains(&0x01) && !text.contains(&0xff));
    assert_eq!(lines[0]["name_hex"], "61c285e280a8fffe");
    assert_eq!(lines[0]["name"], "a\u{85}\u{2028}\u{fffd}\u{fffd}");
    assert_eq!(lines[0]["value_hex"], "761b5b33316d01c3");
    assert_eq!(lines[0]["value"], "v\u{1b}[31m\u{1}\u{fffd}");
    assert_eq!(lines[0]["value_bytes"], 8);
}

/// logrotate's way: the file renamed, then SIGHUP; the new lines go to a
/// new file. A path replaced by a FIFO (or a directory) is refused on
/// SIGHUP, and the file opened before keeps the lines; STOREs never wait.
#[test]
fn the_decision_log_is_reopened_on_sighup_and_refuses_a_fifo() {
    let d = dir();
    let log = d.path().join("decisions.log");
    let config = format!(
        "[validation]\ndecision_log = \"{}\"\n\
         [[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 3\n",
        log.display()
    );
    let s = Server::start_in(d, &config);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    decisions(&log, 1);
    let rotated = s.dir.path().join("decisions.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    reload(&s, &config);
    s.log.wait_for("decision log");
    assert_eq!(c.ask("STORE b 2"), "W00T!");
    assert_eq!(decisions(&log, 1)[0]["name"], "b");
    assert_eq!(decisions(&rotated, 1).len(), 1);

    // Another path takes a restart; the deadline does not.
    let moved = config.replace("decisions.log", "elsewhere.log");
    reload(&s, &format!("{moved}\n"));
    s.log
        .wait_for("changes to [validation] (other than deadline_ms) need a restart");
    assert_eq!(c.ask("STORE e 3"), "W00T!");
    assert_eq!(
        decisions(&log, 2)[1]["name"],
        "e",
        "still the file of the start"
    );
    assert!(!s.dir.path().join("elsewhere.log").exists());
    reload(
        &s,
        &config.replace("[validation]", "[validation]\ndeadline_ms = 100"),
    );
    assert_eq!(
        s.log.count("changes to [validation]"),
        1,
        "deadline_ms applies on SIGHUP"
    );

    std::fs::remove_file(&log).unwrap();
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // The reload itself applies: the decision log is only reopened.
    reload(&s, &config);
    let line = s
        .log
        .wait_for("still writing to the decision log opened before");
    assert!(line.contains("not a regular file"), "{line}");
    let started = Instant::now();
    for i in 0..100 {
        assert_eq!(c.ask(&format!("STORE f{i} {}", i % 10)), "W00T!");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A decision log jnhpd cannot append to, or a bad mode: the start is
/// refused, naming file, line and key (as `--check-config` does).
#[test]
fn bad_decision_logs_and_modes_are_refused_at_start() {
    let d = dir();
    let fifo = d.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (text, expected) in [
        (
            format!("[validation]\n\ndecision_log = \"{}\"\n", fifo.display()),
            ":3: validation.decision_log: cannot append to",
        ),
        (
            format!("[validation]\ndecision_log = \"{}\"\n", d.path().display()),
            ":2: validation.decision_log: cannot append to",
        ),
        (
            "[validation]\ndecision_log = \"/dev/full\"\n".to_string(),
            ":2: validation.decision_log: cannot append to /dev/full: it is a character device",
        ),
        (
            "[[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 3\nmode = \"deny\"\n"
                .to_string(),
            ":5: validator[0].mode: unknown variant `deny`",
        ),
    ] {
        let config = d.path().join("jnhp.toml");
        std::fs::write(&config, &text).unwrap();
        let (code, out) = start_fails(&config);
        assert_ne!(code, 0, "{text}");
        assert!(out.contains(expected), "{text}: {out}");
        let (code, out) = common::run_to_exit(
            &["--check-config", "--config", config.to_str().unwrap()],
            d.path(),
        );
        assert_ne!(code, 0, "{text}");
        assert!(out.contains(expected), "--check-config: {text}: {out}");
    }
}

/// A decision log whose reader stopped (stderr into a pipe nobody reads):
/// STOREs never wait for it; the lines that do not fit the buffer are
/// dropped and counted, and writing resumes once the reader does.
#[test]
fn a_stuck_decision_log_drops_lines_and_never_blocks_stores() {
    use std::io::{BufRead, BufReader, Read};
    let d = dir();
    let config = d.path().join("jnhp.toml");
    std::fs::write(
        &config,
        "[admin]\nlisten = [\"127.0.0.1:0\"]\n\
         [validation]\ndecision_log = \"stderr\"\ndecision_log_buffer = 10\n\
         [[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 5\n",
    )
    .unwrap();
    /// Killed however the test ends (a failed assertion included).
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Killed(
        std::process::Command::new(common::bin())
            .args([
                "--config",
                config.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let (mut addr, mut admin) = (None, None);
    while admin.is_none() {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "stderr closed");
        if let Some(rest) = line.split("listening on ").nth(1) {
            addr = Some(
                rest.split(';')
                    .next()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap(),
            );
        }
        if let Some(rest) = line.split("on http://").nth(1) {
            admin = Some(rest.trim().parse::<SocketAddr>().unwrap());
        }
    }
    // From here on nobody reads stderr: the pipe (64 KiB) fills.
    let mut c = common::Client::connect(addr.unwrap());
    let started = Instant::now();
    let mut batch = String::new();
    for i in 0..3000 {
        batch.push_str(&format!(
            "STORE n{i} {}\n",
            if i % 2 == 0 { "ok" } else { "toolong" }
        ));
    }
    c.send(batch.as_bytes());
    for i in 0..3000 {
        let expected = if i % 2 == 0 { "W00T!" } else { "RARGH!" };
        assert_eq!(c.reply(), expected);
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let admin = admin.unwrap();
    let dropped = metric(admin, "jnhpd_decision_log_lines_total{result=\"dropped\"}");
    assert!(dropped > 1000.0, "dropped {dropped}");
    // The reader comes back: the writer goes on.
    let reader = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stderr.read_to_end(&mut sink);
        sink
    });
    let settled = |total: f64| {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let m = metrics(admin);
            let written = m["jnhpd_decision_log_lines_total{result=\"written\"}"];
            let dropped = m["jnhpd_decision_log_lines_total{result=\"dropped\"}"];
            if written + dropped == total {
                return dropped;
            }
            assert!(Instant::now() < deadline, "{written} + {dropped}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let dropped = settled(3000.0);
    assert_eq!(c.ask("STORE late ok"), "W00T!");
    assert_eq!(settled(3001.0), dropped, "written once the reader is back");
    drop(child);
    let text = String::from_utf8(reader.join().unwrap()).unwrap();
    assert!(
        text.contains("\"name\":\"late\""),
        "the line after the stall"
    );
}

/// A SIGHUP storm during a flood of refusals, the log rotated and deleted
/// under it meanwhile: every line in every file is whole JSON, and every
/// line counted as written is in one of them.
#[test]
fn a_sighup_storm_during_a_flood_of_refusals_breaks_no_line() {
    let d = dir();
    let log = d.path().join("decisions.log");
    let config = format!(
        "[admin]\nlisten = [\"127.0.0.1:0\"]\n\
         [validation]\ndecision_log = \"{}\"\ndecision_log_buffer = 100000\n\
         [[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 3\n\
         deny_cache_secs = 60\ndeny_cache_entries = 100\n",
        log.display()
    );
    let s = Server::start_in(d, &config);
    let admin = admin_addr(&s);
    let addr = s.addr();
    let flood = std::thread::spawn(move || {
        let mut c = common::Client::connect(addr);
        for round in 0..20 {
            let mut batch = String::new();
            for i in 0..1000 {
                batch.push_str(&format!("STORE n{} too-long-{round}-{i}\n", i % 7));
            }
            c.send(batch.as_bytes());
            for _ in 0..1000 {
                assert_eq!(c.reply(), "RARGH!");
            }
        }
    });
    let mut files = vec![log.clone()];
    for i in 0..40 {
        if i % 10 == 3 {
            let rotated = s.dir.path().join(format!("decisions.log.{i}"));
            if std::fs::rename(&log, &rotated).is_ok() {
                files.push(rotated);
            }
        }
        if i % 10 == 7 {
            let _ = std::fs::remove_file(&log);
        }
        s.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(5));
    }
    flood.join().unwrap();
    let written =
        |m: &HashMap<String, f64>| m["jnhpd_decision_log_lines_total{result=\"written\"}"];
    let deadline = Instant::now() + PATIENCE;
    let mut m = metrics(admin);
    while written(&m) + m["jnhpd_decision_log_lines_total{result=\"dropped\"}"] < 20_000.0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
        m = metrics(admin);
    }
    assert_eq!(m["jnhpd_decision_log_lines_total{result=\"dropped\"}"], 0.0);
    let mut found = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            assert_eq!(v["outcome"], "refused");
            found += 1;
        }
    }
    // Lines written to a file deleted under jnhpd are gone with it.
    assert!(found as f64 <= written(&m), "{found}");
    assert!(found > 0);
    assert_eq!(
        metric(
            admin,
            "jnhpd_validator_deny_cache_entries{validator=\"function-0\"}"
        ),
        100.0
    );
    assert_eq!(s.connect().ask("STORE ok 1"), "W00T!", "still serving");
}

/// `write` on the decision log fails with ENOSPC while the file named by
/// `JNHP_TEST_DISK_FULL` exists (an `LD_PRELOAD` shim).
const DISK_FULL_SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

ssize_t write(int fd, const void *buf, size_t count) {
    const char *trigger = getenv("JNHP_TEST_DISK_FULL");
    struct stat st;
    if (trigger != NULL && stat(trigger, &st) == 0) {
        char link[64], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n > 0) {
            target[n] = 0;
            if (strstr(target, "decisions.log") != NULL) { errno = ENOSPC; return -1; }
        }
    }
    return ((ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write"))(fd, buf, count);
}
"#;

/// A full disk under the decision log: STOREs go on, the lost lines are
/// counted as failed and one error is logged for the run of failures;
/// once there is room again the log goes on, every line in it whole.
#[test]
fn a_full_disk_under_the_decision_log_loses_lines_not_stores() {
    let d = dir();
    let lib = common::shim::build(d.path(), "diskfull", DISK_FULL_SHIM);
    let log = d.path().join("decisions.log");
    let full = d.path().join("full");
    let config = d.path().join("jnhp.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = [\"127.0.0.1:0\"]\n[validation]\ndecision_log = \"{}\"\n\
             [[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 3\n",
            log.display()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("LD_PRELOAD", &lib)
        .env("JNHP_TEST_DISK_FULL", &full);
    let s = Server::spawn(cmd, d, None);
    let admin = admin_addr(&s);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    decisions(&log, 1);
    std::fs::write(&full, "").unwrap();
    for i in 0..20 {
        assert_eq!(c.ask(&format!("STORE f{i} 1")), "W00T!");
    }
    s.log.wait_for("decision log: a line could not be written");
    let failed = "jnhpd_decision_log_lines_total{result=\"failed\"}";
    let deadline = Instant::now() + PATIENCE;
    while metric(admin, failed) < 20.0 {
        assert!(Instant::now() < deadline, "{}", metric(admin, failed));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.log.count("decision log: a line could not be written"), 1);
    std::fs::remove_file(&full).unwrap();
    assert_eq!(c.ask("STORE z 1"), "W00T!");
    let lines = decisions(&log, 2);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["name"], "z");
    s.log.wait_for("decision log: writing again");
}

/// Modes flipped by a storm of SIGHUPs while a client floods a process
/// validator with refusals: every STORE gets W00T! or RARGH!, never an
/// ERROR, and the server ends in the mode of the last reload.
#[test]
fn modes_flipped_by_a_sighup_storm_under_load() {
    let d = dir();
    let gate = counting_validator(d.path());
    let log = d.path().join("decisions.log");
    let config = gate_config(&gate, &log, "mode = \"dryrun\"\ndeny_cache_secs = 60");
    let s = Server::start_in(d, &config);
    let admin = admin_addr(&s);
    let addr = s.addr();
    let flood = std::thread::spawn(move || {
        let mut c = common::Client::connect(addr);
        let mut answers = HashMap::new();
        for i in 0..300 {
            let reply = c.ask(&format!("STORE n{} bad{}", i % 50, i % 3));
            *answers.entry(reply).or_insert(0) += 1;
        }
        answers
    });
    for i in 0..30 {
        let mode = if i % 2 == 0 { "enforce" } else { "dryrun" };
        std::fs::write(s.config.as_ref().unwrap(), config.replace("dryrun", mode)).unwrap();
        s.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(10));
    }
    let answers = flood.join().unwrap();
    assert!(
        answers.keys().all(|a| a == "W00T!" || a == "RARGH!"),
        "{answers:?}"
    );
    reload(&s, &config.replace("dryrun", "enforce"));
    assert_eq!(s.connect().ask("STORE last bad"), "RARGH!");
    assert_eq!(
        metric(
            admin,
            "jnhpd_validator_mode{validator=\"gate\",mode=\"enforce\"}"
        ),
        1.0
    );
    assert_eq!(s.log.count("panicked"), 0, "{}", s.log.all());
}

/// The new alert rules fire on the series they are about (promtool's
/// rule unit tests): a dry-run validator that would refuse 10% of STOREs,
/// a validator failing open, a decision log dropping lines; and stay
/// quiet on a dry-run validator that would refuse 1%.
#[test]
fn the_alerts_fire_on_dry_run_refusals_failing_open_and_lost_lines() {
    require!(Promtool);
    let d = dir();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus/alerts.yml");
    let test = d.path().join("alerts_test.yml");
    std::fs::write(
        &test,
        format!(
            r#"rule_files:
  - {}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'jnhpd_validator_verdicts_total{{instance="a",validator="new",verdict="allow"}}'
        values: '0+90x60'
      - series: 'jnhpd_validator_verdicts_total{{instance="a",validator="new",verdict="deny"}}'
        values: '0+10x60'
      - series: 'jnhpd_validator_not_enforced_total{{instance="a",validator="new"}}'
        values: '0+10x60'
      - series: 'jnhpd_validator_verdicts_total{{instance="a",validator="quiet",verdict="allow"}}'
        values: '0+99x60'
      - series: 'jnhpd_validator_verdicts_total{{instance="a",validator="quiet",verdict="deny"}}'
        values: '0+1x60'
      - series: 'jnhpd_validator_not_enforced_total{{instance="a",validator="quiet"}}'
        values: '0+1x60'
      - series: 'jnhpd_validator_failed_open_total{{instance="a",validator="open"}}'
        values: '0+3x60'
      - series: 'jnhpd_decision_log_lines_total{{instance="a",result="dropped"}}'
        values: '0+5x60'
    alert_rule_test:
      - eval_time: 40m
        alertname: JnhpdDryRunValidatorWouldRefuse
        exp_alerts:
          - exp_labels: {{severity: info, instance: a, validator: new}}
            exp_annotations:
              summary: 'validator new (dry run or warn) would refuse 10% of STOREs'
              description: 'A validator not yet enforced (mode = "dryrun" or "warn", see jnhpd_validator_mode) would refuse more than 5% of the STOREs it judges. Read the decision log (docs/validators.md) before switching it to mode = "enforce".'
      - eval_time: 40m
        alertname: JnhpdValidatorFailingOpen
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a, validator: open}}
            exp_annotations:
              summary: 'validator open on a fails open'
              description: 'Its failures (timeouts, crashes, the chain''s deadline) let STOREs through unchecked (on_failure = "allow"): 50m per second. See jnhpd_validator_failures_total by cause.'
      - eval_time: 40m
        alertname: JnhpdDecisionLogLosingLines
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a, result: dropped}}
            exp_annotations:
              summary: 'the decision log on a loses lines (dropped)'
              description: 'dropped: the writer is behind (a slow disk, a stuck reader of stderr; raise validation.decision_log_buffer); failed: writes fail (disk full).'
"#,
            rules.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&test)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A SIGTERM right after STOREs loses none of their decision log lines:
/// the writer is flushed before jnhpd exits.
#[test]
fn a_sigterm_right_after_stores_loses_no_decision() {
    for round in 0..3 {
        let d = dir();
        let log = d.path().join("decisions.log");
        let config = format!(
            "[admin]\nlisten = [\"127.0.0.1:0\"]\n[validation]\ndecision_log = \"{}\"\n\
             [[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 3\n",
            log.display()
        );
        let mut s = Server::start_in(d, &config);
        let admin = admin_addr(&s);
        let mut c = s.connect();
        let mut batch = String::new();
        for i in 0..2000 {
            batch.push_str(&format!(
                "STORE n{i} {}\n",
                if i % 2 == 0 { "ok" } else { "toolong" }
            ));
        }
        c.send(batch.as_bytes());
        for _ in 0..2000 {
            c.reply();
        }
        let written = metric(admin, "jnhpd_decision_log_lines_total{result=\"written\"}");
        s.signal(Signal::SIGTERM);
        assert!(s.wait_exit().success());
        let lines = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            lines.lines().count(),
            2000,
            "round {round} ({written} written before the SIGTERM): {}",
            s.log.all()
        );
    }
}
