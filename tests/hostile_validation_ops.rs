//! Hostile tests of issue 27 (validator modes, the decision log, deny
//! caches, the chain's deadline), from the documentation only
//! (docs/validators.md, docs/configuration.md, docs/observability.md,
//! docs/operations.md).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, Server, admin_addr, metrics, run_to_exit, script};
use nix::sys::signal::Signal;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// The decision log's raw lines once it has at least `n`, each checked
/// to be one JSON object.
fn raw_decisions(path: &Path, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let bytes = std::fs::read(path).unwrap_or_default();
        let lines: Vec<Vec<u8>> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        if lines.len() >= n && bytes.ends_with(b"\n") {
            for l in &lines {
                let v: serde_json::Value = serde_json::from_slice(l)
                    .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(l)));
                assert!(v.is_object(), "{v}");
            }
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, not {n}",
            path.display(),
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn decisions(path: &Path, n: usize) -> Vec<serde_json::Value> {
    raw_decisions(path, n)
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

fn wait_log(s: &Server, needle: &str, before: usize) {
    let deadline = Instant::now() + PATIENCE;
    while s.log.count(needle) <= before {
        assert!(
            Instant::now() < deadline,
            "no {needle:?}; log:\n{}",
            s.log.all()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn reload(s: &Server, config: &str) {
    let before = s.log.count("configuration reloaded");
    std::fs::write(s.config.as_ref().unwrap(), config).unwrap();
    s.signal(Signal::SIGHUP);
    wait_log(s, "configuration reloaded", before);
}

/// Refuses values containing "bad"; appends each value it judges to
/// `runs` beside it.
fn gate(dir: &Path) -> std::path::PathBuf {
    script(
        dir,
        "gate",
        &format!(
            "printf '%s\\n' \"$1\" >> {}\ncase \"$1\" in *bad*) echo JNHP:0 ;; *) echo JNHP:1 ;; esac",
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

fn ask_bytes(c: &mut Client, request: &[u8]) -> String {
    let mut line = request.to_vec();
    line.extend_from_slice(b"\r\n");
    c.send(&line);
    c.reply()
}

/// The docs: "Every line is one line of valid JSON whatever the bytes
/// (control characters are escaped)", and validators.md counts DEL, C1
/// and U+2028/U+2029 among the control characters it escapes in log lines
/// ("so a program can neither forge log lines nor drive a terminal").
/// The decision log writes them raw: a C1 CSI (U+009B) drives terminals
/// that honour C1 under `tail -f`, and U+2028 splits the line for
/// readers that split on Unicode line ends (Python's `str.splitlines`).
#[test]
fn the_decision_log_escapes_del_c1_and_line_separators() {
    let d = dir();
    let log = d.path().join("decisions.log");
    let config = format!(
        "[validation]\ndecision_log = \"{}\"\ndecision_log_values = true\n\
         [[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 100\n",
        log.display()
    );
    let s = Server::start_in(d, &config);
    let mut c = s.connect();
    assert_eq!(
        ask_bytes(
            &mut c,
            b"STORE c1\xc2\x9b31m v\x7f\xc2\x85\xe2\x80\xa8\xe2\x80\xa9x"
        ),
        "W00T!"
    );
    let lines = raw_decisions(&log, 1);
    let text = String::from_utf8(lines[0].clone()).unwrap();
    let raw: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() || *c == '\u{2028}' || *c == '\u{2029}')
        .collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in {text:?}");
    assert_eq!(text.lines().count(), 1);
    assert_eq!(
        text.split(['\u{2028}', '\u{2029}', '\u{85}']).count(),
        1,
        "one line for every reader: {text:?}"
    );
}

/// The same STORE is keyed by the name *and* the value: the bytes of a
/// denied (name, value) concatenated the same way as another allowed
/// pair must not hit the cache; the same value under another name runs
/// the validator again.
#[test]
fn the_deny_cache_tells_the_name_from_the_value() {
    let d = dir();
    let g = gate(d.path());
    let config = format!(
        "[[validator]]\nname = \"gate\"\nkind = \"process\"\ncommand = [\"{}\"]\n\
         deny_cache_secs = 600\n",
        g.display()
    );
    let s = Server::start_in(d, &config);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE x badq"), "RARGH!");
    assert_eq!(c.ask("STORE x badq"), "RARGH!");
    assert_eq!(c.ask("STORE xbad q"), "W00T!", "xbad+q is not x+badq");
    assert_eq!(c.ask("STORE y badq"), "RARGH!");
    assert_eq!(runs(s.dir.path()), ["badq", "q", "badq"]);
}

/// A cached denial lapses after deny_cache_secs: the validator runs again.
#[test]
fn a_cached_denial_lapses_and_the_validator_runs_again() {
    let d = dir();
    let g = gate(d.path());
    let config = format!(
        "[admin]\nlisten = [\"127.0.0.1:0\"]\n\
         [[validator]]\nname = \"gate\"\nkind = \"process\"\ncommand = [\"{}\"]\n\
         deny_cache_secs = 1\n",
        g.display()
    );
    let s = Server::start_in(d, &config);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a bad1"), "RARGH!");
    assert_eq!(c.ask("STORE a bad1"), "RARGH!");
    assert_eq!(runs(s.dir.path()), ["bad1"]);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(c.ask("STORE a bad1"), "RARGH!");
    assert_eq!(runs(s.dir.path()), ["bad1", "bad1"]);
    let m = metrics(admin_addr(&s));
    assert_eq!(
        m["jnhpd_validator_deny_cache_hits_total{validator=\"gate\"}"],
        1.0
    );
}

/// A validator renamed (its table changed) starts with an empty cache;
/// a change of mode alone keeps it, and a cached deny under dryrun is not
/// enforced but counted as not enforced.
#[test]
fn renaming_empties_the_cache_and_dryrun_does_not_enforce_cached_denials() {
    let d = dir();
    let g = gate(d.path());
    let log = d.path().join("d.log");
    let table = |name: &str, mode: &str| {
        format!(
            "[admin]\nlisten = [\"127.0.0.1:0\"]\n[validation]\ndecision_log = \"{}\"\n\
             [[validator]]\nname = \"{name}\"\nkind = \"process\"\ncommand = [\"{}\"]\n\
             deny_cache_secs = 600\nmode = \"{mode}\"\n",
            log.display(),
            g.display()
        )
    };
    let s = Server::start_in(d, &table("one", "enforce"));
    let admin = admin_addr(&s);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a bad"), "RARGH!");
    reload(&s, &table("one", "dryrun"));
    assert_eq!(c.ask("STORE a bad"), "W00T!", "dryrun: a cached deny too");
    assert_eq!(runs(s.dir.path()), ["bad"], "served from the cache");
    let m = metrics(admin);
    assert_eq!(
        m["jnhpd_validator_not_enforced_total{validator=\"one\"}"],
        1.0
    );
    assert_eq!(
        m["jnhpd_validator_deny_cache_hits_total{validator=\"one\"}"],
        1.0
    );
    let lines = decisions(&log, 2);
    assert_eq!(lines[1]["validators"][0]["verdict"], "cached_deny");
    assert_eq!(lines[1]["outcome"], "allowed");
    reload(&s, &table("two", "enforce"));
    assert_eq!(c.ask("STORE b bad"), "RARGH!");
    assert_eq!(runs(s.dir.path()), ["bad", "bad"], "a new validator runs");
    let m = metrics(admin);
    assert_eq!(
        m["jnhpd_validator_deny_cache_entries{validator=\"two\"}"],
        1.0
    );
    assert!(
        !m.contains_key("jnhpd_validator_mode{validator=\"one\",mode=\"dryrun\"}"),
        "the old mode series is gone"
    );
}

/// The decision log's path is a symlink swapped to a FIFO without a
/// reader between SIGHUPs: the reopen must not block the reload (nor
/// STOREs), and the old file keeps the lines.
#[test]
fn a_decision_log_symlink_swapped_to_a_fifo_does_not_hang_a_sighup() {
    let d = dir();
    let g = gate(d.path());
    let real = d.path().join("real.log");
    let link = d.path().join("decisions.log");
    let fifo = d.path().join("fifo");
    std::fs::write(&real, "").unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let config = format!(
        "[validation]\ndecision_log = \"{}\"\n\
         [[validator]]\nname = \"gate\"\nkind = \"process\"\ncommand = [\"{}\"]\n",
        link.display(),
        g.display()
    );
    let s = Server::start_in(d, &config);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a good"), "W00T!");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    reload(&s, &config);
    wait_log(&s, "still writing to the decision log opened before", 0);
    assert_eq!(c.ask("STORE b bad"), "RARGH!");
    // Back to a regular file: the next SIGHUP reopens it.
    std::fs::remove_file(&link).unwrap();
    let newer = s.path("newer.log");
    std::os::unix::fs::symlink(&newer, &link).unwrap();
    reload(&s, &config);
    wait_log(&s, "reopened", 0);
    assert_eq!(c.ask("STORE c good"), "W00T!");
    assert_eq!(decisions(&real, 2).len(), 2);
    assert_eq!(decisions(&newer, 1)[0]["name"], "c");
}

/// The decision log may not be one of jnhpd's own files, however it is
/// spelt: `..`, a symlink, a hard link to the data file.
#[test]
fn a_decision_log_that_is_the_data_file_by_another_name_is_refused() {
    let d = dir();
    let data = d.path().join("data");
    std::fs::write(&data, "").unwrap();
    std::fs::create_dir(d.path().join("x")).unwrap();
    std::os::unix::fs::symlink(&data, d.path().join("sym")).unwrap();
    std::fs::hard_link(&data, d.path().join("hard")).unwrap();
    for spelling in ["x/../data", "sym", "hard"] {
        let config = d.path().join("jnhp.toml");
        std::fs::write(
            &config,
            format!("[storage]\npath = \"data\"\n\n[validation]\ndecision_log = \"{spelling}\"\n"),
        )
        .unwrap();
        let (code, out) = run_to_exit(
            &["--config", config.to_str().unwrap(), "--check-config"],
            d.path(),
        );
        assert_ne!(code, 0, "{spelling}: {out}");
        assert!(
            out.contains("jnhp.toml:5: validation.decision_log") && out.contains("data file"),
            "{spelling}: {out}"
        );
    }
}

/// --check-config names file, line and key for every bad new value.
#[test]
fn check_config_names_file_line_and_key_for_every_bad_value() {
    let d = dir();
    let g = gate(d.path());
    let v = format!(
        "[[validator]]\nkind = \"process\"\ncommand = [\"{}\"]\n",
        g.display()
    );
    let cases: Vec<(String, &str)> = vec![
        (
            "[validation]\ndeadline_ms = -1\n".into(),
            ":2: validation.deadline_ms",
        ),
        (
            "[validation]\ndeadline_ms = 1.5\n".into(),
            ":2: validation.deadline_ms",
        ),
        (
            "[validation]\ndeadline_ms = 3600001\n".into(),
            ":2: validation.deadline_ms",
        ),
        (
            "[validation]\ndecision_log_buffer = 0\n".into(),
            ":2: validation.decision_log_buffer",
        ),
        (
            "[validation]\ndecision_log_buffer = 1000001\n".into(),
            ":2: validation.decision_log_buffer",
        ),
        (
            "[validation]\ndecision_log_values = \"yes\"\n".into(),
            ":2: validation.decision_log_values",
        ),
        (
            "[validation]\ndecision_log = \"/dev/full\"\n".into(),
            ":2: validation.decision_log",
        ),
        (
            "[validation]\ndecision_log = \"/tmp\"\n".into(),
            ":2: validation.decision_log",
        ),
        (
            "[validation]\ndecision_log = \"/nonexistent-dir/x\"\n".into(),
            ":2: validation.decision_log",
        ),
        (format!("{v}mode = \"Enforce\"\n"), ":4: validator[0].mode"),
        (
            format!("{v}deny_cache_secs = 0\n"),
            ":4: validator[0].deny_cache_secs",
        ),
        (
            format!("{v}deny_cache_secs = 2592001\n"),
            ":4: validator[0].deny_cache_secs",
        ),
        (
            format!("{v}deny_cache_entries = 5\n"),
            ":4: validator[0].deny_cache_entries",
        ),
        (
            format!("{v}deny_cache_secs = 5\ndeny_cache_entries = 0\n"),
            ":5: validator[0].deny_cache_entries",
        ),
    ];
    for (text, want) in cases {
        let config = d.path().join("jnhp.toml");
        std::fs::write(&config, &text).unwrap();
        let (code, out) = run_to_exit(
            &["--config", config.to_str().unwrap(), "--check-config"],
            d.path(),
        );
        assert_ne!(code, 0, "{text}: {out}");
        assert!(out.contains(&format!("jnhp.toml{want}")), "{text}: {out}");
    }
}

/// The deadline covers a wait for a `max_concurrent` slot and for a
/// saturated helper pool; a dry-run validator failing under
/// `on_failure = "allow"` counts as failed open, not as not enforced.
#[test]
fn the_deadline_covers_queues_and_dryrun_fail_open_counts_failed_open() {
    let d = dir();
    let slow = script(d.path(), "slow", "sleep 30\necho JNHP:1");
    let helper = script(d.path(), "slowhelper", "while read line; do sleep 30; done");
    let log = d.path().join("d.log");
    let config = format!(
        "[admin]\nlisten = [\"127.0.0.1:0\"]\n\
         [validation]\ndeadline_ms = 500\ndecision_log = \"{}\"\n\
         [[validator]]\nname = \"slowp\"\nkind = \"process\"\ncommand = [\"{}\"]\n\
         max_concurrent = 1\ntimeout_ms = 60000\non_failure = \"allow\"\nmode = \"dryrun\"\n\
         [[validator]]\nname = \"slowh\"\nkind = \"helper\"\ncommand = [\"{}\"]\n\
         children = 1\nconcurrency = 1\ntimeout_ms = 60000\n",
        log.display(),
        slow.display(),
        helper.display()
    );
    let s = Server::start_in(d, &config);
    let addr = s.addr();
    let start = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = Client::connect(addr).ask(&format!("STORE n{i} v"));
                (r, t.elapsed())
            })
        })
        .collect();
    for t in threads {
        let (r, took) = t.join().unwrap();
        assert_eq!(r, "RARGH!");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    assert!(start.elapsed() < Duration::from_secs(15));
    let lines = decisions(&log, 4);
    for l in &lines {
        assert_eq!(l["validators"][0]["cause"], "timeout", "{l}");
        assert_eq!(l["validators"][1]["cause"], "timeout", "{l}");
        assert_eq!(l["outcome"], "refused");
    }
    let m = metrics(admin_addr(&s));
    assert_eq!(
        m["jnhpd_validator_failed_open_total{validator=\"slowp\"}"],
        4.0
    );
    assert_eq!(
        m["jnhpd_validator_not_enforced_total{validator=\"slowp\"}"],
        0.0
    );
}

/// "lines wait in a buffer of `decision_log_buffer` lines ... when it is
/// full (a slow disk, a reader of stderr that stopped) lines are dropped":
/// the buffer counts lines, not bytes. With `decision_log_values = true`
/// a 64 KiB value of control bytes makes a line of about 450 KiB
/// (`\u0001` escapes plus `value_hex`), so a reader of stderr that stopped
/// lets the default buffer of 10000 lines grow jnhpd by about 4.5 GB; the
/// docs give no bound in bytes (max_inflight_bytes, 64 MiB, is the
/// daemon's stated budget for requests in memory).
#[test]
fn a_stuck_stderr_with_values_keeps_memory_bounded() {
    use std::io::{BufRead, BufReader};
    let d = dir();
    let config = d.path().join("jnhp.toml");
    std::fs::write(
        &config,
        "[validation]\ndecision_log = \"stderr\"\ndecision_log_values = true\n\
         [[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 100000\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(common::bin())
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read up to the "listening on" line, then never again.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no start");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split(';').next().unwrap().trim().parse().unwrap();
        }
    };
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let before = rss();
    let mut c = Client::connect(addr);
    let value = vec![1u8; 65000];
    let n = 600u64;
    for i in 0..n {
        let mut req = format!("STORE n{i} ").into_bytes();
        req.extend_from_slice(&value);
        req.extend_from_slice(b"\r\n");
        c.send(&req);
        let _ = c.reply();
    }
    let grown_kib = rss().saturating_sub(before);
    let _ = child.kill();
    let _ = child.wait();
    let stored_kib = n * 65000 / 1024;
    assert!(
        grown_kib < stored_kib + 64 * 1024,
        "grew {grown_kib} KiB for {stored_kib} KiB stored: the stuck log's buffer holds the rest"
    );
}

/// `decision_log = "stderr"` shares stderr with jnhpd's own log lines:
/// long decision lines (64 KiB values, beyond PIPE_BUF) written while
/// "would refuse" warnings are logged from other connections must never
/// be split or interleaved: each stderr line is a log line or one JSON
/// object.
#[test]
fn decision_lines_on_stderr_never_interleave_with_log_lines() {
    let config = "[validation]\ndecision_log = \"stderr\"\ndecision_log_values = true\n\
         [[validator]]\nname = \"w\"\nkind = \"function\"\nfunction = \"regex\"\n\
         pattern = \"^[a-z]+$\"\nmode = \"warn\"\n";
    let s = Server::start(config);
    let addr = s.addr();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..50 {
                    let value = if t % 2 == 0 {
                        "\u{1}".repeat(60000)
                    } else {
                        "X".into()
                    };
                    assert_eq!(c.ask(&format!("STORE n{t}-{i} {value}")), "W00T!");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let deadline = Instant::now() + PATIENCE;
    while s.log.count("{\"time\"") < 200 {
        assert!(
            Instant::now() < deadline,
            "{} lines",
            s.log.count("{\"time\"")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = s.log.all();
    let mut json = 0;
    for line in all.lines() {
        if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{e}: {}", &line[..line.len().min(300)]));
            assert!(v.is_object());
            json += 1;
        } else {
            assert!(
                line.starts_with("20") && line.contains(" jnhpd[") && line.len() < 2000,
                "a broken line: {}",
                &line[..line.len().min(300)]
            );
        }
    }
    assert_eq!(json, 200);
    assert_eq!(s.log.count("would refuse"), 200);
}

/// jnhpd with its stderr a pipe that was read up to "listening on" and
/// then never again (a reader of stderr that stopped); returns the child
/// and its JNHP address.
fn start_with_stuck_stderr(dir: &Path, config: &str) -> (std::process::Child, SocketAddr) {
    use std::io::{BufRead, BufReader};
    let path = dir.join("jnhp.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = std::process::Command::new(common::bin())
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no start");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split(';').next().unwrap().trim().parse().unwrap();
        }
    };
    // Keep the pipe open, unread, for as long as the child lives.
    std::mem::forget(stderr);
    (child, addr)
}

fn exits_within(child: &mut std::process::Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// "At shutdown (after the drain) jnhpd waits up to 2 s for the writer
/// to write the lines still waiting ...; a writer stuck longer loses them
/// (logged)." With `decision_log = "stderr"` and a reader of stderr that
/// stopped (the docs' own example of a stuck writer), SIGTERM never ends
/// jnhpd: the writer blocks holding the process-wide stderr lock
/// (`std::io::stderr().lock().write_all`), so every log line after it,
/// the shutdown's included, waits forever.
#[test]
fn sigterm_ends_jnhpd_whose_stderr_decision_log_is_stuck() {
    let d = dir();
    let (mut child, addr) = start_with_stuck_stderr(
        d.path(),
        "[validation]\ndecision_log = \"stderr\"\ndecision_log_values = true\n\
         [[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 100000\n",
    );
    let mut c = Client::connect(addr);
    let value = "\u{1}".repeat(60000);
    for i in 0..20 {
        let _ = c.ask(&format!("STORE n{i} {value}"));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        exits_within(&mut child, Duration::from_secs(20)),
        "jnhpd did not exit within 20 s of SIGTERM"
    );
}

/// "The log never holds a STORE back ... (a slow disk, a reader of stderr
/// that stopped)". A validator in `warn` mode logs each would-be refusal
/// to the same stderr: once the decision lines have filled the pipe, each
/// such STORE hangs on its warning.
#[test]
fn a_stuck_stderr_decision_log_never_holds_a_warn_store_back() {
    let d = dir();
    let (mut child, addr) = start_with_stuck_stderr(
        d.path(),
        "[validation]\ndecision_log = \"stderr\"\ndecision_log_values = true\n\
         [[validator]]\nkind = \"function\"\nfunction = \"regex\"\n\
         pattern = \"^[a-z]+$\"\nmode = \"warn\"\n",
    );
    let c = Client::connect(addr);
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut c = c;
    let value = "\u{1}".repeat(60000);
    let mut held = None;
    for i in 0..20 {
        c.send(format!("STORE n{i} {value}\r\n").as_bytes());
        let mut line = Vec::new();
        let got = std::io::BufRead::read_until(&mut c.reader, b'\n', &mut line);
        if got.is_err() || !line.starts_with(b"W00T!") {
            held = Some(format!(
                "STORE {i} held back: {got:?} {:?}",
                String::from_utf8_lossy(&line)
            ));
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(held.is_none(), "{}", held.unwrap());
}

/// Validators see who sends a STORE (`JNHP_PEER`,
/// `JNHP_PEER_CERT_SUBJECT`; `allow-subjects` decides by it), but the
/// deny cache is keyed by the name and the value only: a refusal of an
/// unauthorised client is then served, from the cache, to the authorised
/// client storing the same name and value, without running the validator
/// that would allow it. A hostile client can so block any name+value it
/// can guess for `deny_cache_secs` (up to 30 days). The docs neither key
/// the cache by the peer nor warn against a deny cache on a validator
/// that looks at the peer.
#[test]
fn a_refusal_for_one_peer_is_not_served_to_another_from_the_cache() {
    let d = dir();
    let trusted = d.path().join("trusted");
    let v = script(
        d.path(),
        "by-peer",
        &format!(
            "if [ \"$JNHP_PEER\" = \"$(cat {})\" ]; then echo JNHP:1; else echo JNHP:0; fi",
            trusted.display()
        ),
    );
    let config = format!(
        "[[validator]]\nname = \"by-peer\"\nkind = \"process\"\ncommand = [\"{}\"]\n\
         deny_cache_secs = 600\n",
        v.display()
    );
    let s = Server::start_in(d, &config);
    let mut good = s.connect();
    let mut hostile = s.connect();
    std::fs::write(&trusted, good.stream().local_addr().unwrap().to_string()).unwrap();
    assert_eq!(hostile.ask("STORE payroll 1000"), "RARGH!");
    assert_eq!(
        good.ask("STORE payroll 1000"),
        "W00T!",
        "the validator allows this peer; the cache refused it"
    );
}

/// A deadline applied by SIGHUP; past it, with `on_failure = "allow"`
/// everywhere, the validators after the late one do not run, fail at once
/// as `timeout`, each counted as failed open, and the STORE is stored.
#[test]
fn past_a_sighup_deadline_the_rest_of_an_allow_chain_fails_open_unrun() {
    let d = dir();
    let g = gate(d.path());
    let slow = script(d.path(), "slow", "sleep 30\necho JNHP:1");
    let log = d.path().join("d.log");
    let config = |deadline: u64| {
        format!(
            "[admin]\nlisten = [\"127.0.0.1:0\"]\n\
             [validation]\ndeadline_ms = {deadline}\ndecision_log = \"{}\"\n\
             [[validator]]\nname = \"slow\"\nkind = \"process\"\ncommand = [\"{}\"]\n\
             timeout_ms = 60000\non_failure = \"allow\"\n\
             [[validator]]\nname = \"gate\"\nkind = \"process\"\ncommand = [\"{}\"]\n\
             on_failure = \"allow\"\n",
            log.display(),
            slow.display(),
            g.display()
        )
    };
    let s = Server::start_in(d, &config(0));
    reload(&s, &config(300));
    let mut c = s.connect();
    let t = Instant::now();
    assert_eq!(c.ask("STORE a bad"), "W00T!", "every failure fails open");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(runs(s.dir.path()).is_empty(), "gate ran past the deadline");
    let line = &decisions(&log, 1)[0];
    assert_eq!(line["validators"][0]["cause"], "timeout", "{line}");
    assert_eq!(line["validators"][1]["verdict"], "failure", "{line}");
    assert_eq!(line["validators"][1]["cause"], "timeout", "{line}");
    assert_eq!(line["outcome"], "allowed");
    let m = metrics(admin_addr(&s));
    for v in ["slow", "gate"] {
        assert_eq!(
            m[&format!("jnhpd_validator_failed_open_total{{validator=\"{v}\"}}")],
            1.0,
            "{v}"
        );
    }
}

/// With a buffer of one line and a pipelined burst, every judged STORE is
/// accounted for: written + dropped = judged, and the file holds exactly
/// the written lines, each whole.
#[test]
fn a_one_line_buffer_accounts_for_every_line() {
    let d = dir();
    let log = d.path().join("d.log");
    let config = format!(
        "[admin]\nlisten = [\"127.0.0.1:0\"]\n\
         [validation]\ndecision_log = \"{}\"\ndecision_log_buffer = 1\n\
         [[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 10\n",
        log.display()
    );
    let s = Server::start_in(d, &config);
    let admin = admin_addr(&s);
    let mut c = s.connect();
    let n = 3000;
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend_from_slice(format!("STORE n{i} v\r\n").as_bytes());
    }
    c.send(&burst);
    for _ in 0..n {
        assert_eq!(c.reply(), "W00T!");
    }
    let deadline = Instant::now() + PATIENCE;
    let (written, dropped) = loop {
        let m = metrics(admin);
        let w = m["jnhpd_decision_log_lines_total{result=\"written\"}"];
        let dr = m["jnhpd_decision_log_lines_total{result=\"dropped\"}"];
        assert_eq!(m["jnhpd_decision_log_lines_total{result=\"failed\"}"], 0.0);
        if w + dr >= n as f64 {
            break (w, dr);
        }
        assert!(Instant::now() < deadline, "written {w} dropped {dr}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(written + dropped, n as f64);
    assert_eq!(
        raw_decisions(&log, written as usize).len(),
        written as usize
    );
}

/// "it may not be one of jnhpd's own files": the data file, the pidfile
/// and the config file are refused, but the log file (`log.file`) is
/// accepted, spelt the same: decision lines and log lines then share one
/// file (the docs' `jq` recipes fail on the log lines, and operations.md
/// says "jnhpd must be the only writer" of a log file whose cut-off lines
/// are truncated away after a full disk: now two writers with two
/// handles). A denylist's `path` is accepted as well: each decision line
/// becomes a denied value within 2 s.
#[test]
fn a_decision_log_that_is_the_log_file_or_a_denylist_is_refused() {
    let d = dir();
    std::fs::write(d.path().join("deny.txt"), "evil\n").unwrap();
    for (text, line) in [
        (
            "[log]\ntarget = \"file\"\nfile = \"j.log\"\n\n[validation]\ndecision_log = \"j.log\"\n",
            ":6: validation.decision_log",
        ),
        (
            "[validation]\ndecision_log = \"deny.txt\"\n\
             [[validator]]\nkind = \"blocking\"\nfunction = \"denylist\"\npath = \"deny.txt\"\n",
            ":2: validation.decision_log",
        ),
    ] {
        let config = d.path().join("jnhp.toml");
        std::fs::write(&config, text).unwrap();
        let (code, out) = run_to_exit(
            &["--config", config.to_str().unwrap(), "--check-config"],
            d.path(),
        );
        assert_ne!(code, 0, "{text}: {out}");
        assert!(out.contains(&format!("jnhp.toml{line}")), "{text}: {out}");
    }
}

/// "it may not be one of jnhpd's own files (that last also on SIGHUP)".
/// The decision log's path swapped for a symlink to the data file before
/// a SIGHUP: the reload is refused for it, but the decision log has
/// already been reopened on the new path, so decision lines go into the
/// data file (the next start finds a "damaged last record" and cuts it).
#[test]
fn a_decision_log_swapped_for_the_data_file_never_writes_into_it() {
    let d = dir();
    let data = d.path().join("data");
    let log = d.path().join("d.log");
    let config = "[storage]\npath = \"data\"\n[validation]\ndecision_log = \"d.log\"\n\
         [[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 10\n";
    let mut s = Server::start_in(d, config);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a b"), "W00T!");
    decisions(&log, 1);
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&data, &log).unwrap();
    let before = s.log.count("SIGHUP");
    s.signal(Signal::SIGHUP);
    wait_log(&s, "SIGHUP", before);
    assert_eq!(c.ask("STORE c d"), "W00T!");
    assert_eq!(c.ask("STORE e f"), "W00T!");
    s.signal(Signal::SIGTERM);
    s.wait_exit();
    let bytes = std::fs::read(&data).unwrap();
    assert!(
        !bytes.windows(7).any(|w| w == b"\"name\":"),
        "decision lines in the data file: {:?}\nlog:\n{}",
        String::from_utf8_lossy(&bytes),
        s.log.all()
    );
}

/// A change of `on_failure` keeps the validator and its cache; a change of
/// its cache settings keeps the validator (its figures) but empties the
/// cache, so the validator runs again.
#[test]
fn cache_settings_changed_by_sighup_empty_the_cache_and_keep_the_figures() {
    let d = dir();
    let g = gate(d.path());
    let table = |on_failure: &str, entries: u32| {
        format!(
            "[admin]\nlisten = [\"127.0.0.1:0\"]\n\
             [[validator]]\nname = \"gate\"\nkind = \"process\"\ncommand = [\"{}\"]\n\
             on_failure = \"{on_failure}\"\ndeny_cache_secs = 600\ndeny_cache_entries = {entries}\n",
            g.display()
        )
    };
    let s = Server::start_in(d, &table("reject", 100));
    let admin = admin_addr(&s);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a bad"), "RARGH!");
    reload(&s, &table("allow", 100));
    assert_eq!(c.ask("STORE a bad"), "RARGH!");
    assert_eq!(
        runs(s.dir.path()),
        ["bad"],
        "on_failure alone keeps the cache"
    );
    reload(&s, &table("allow", 200));
    let m = metrics(admin);
    assert_eq!(
        m["jnhpd_validator_deny_cache_entries{validator=\"gate\"}"],
        0.0
    );
    assert_eq!(c.ask("STORE a bad"), "RARGH!");
    assert_eq!(runs(s.dir.path()), ["bad", "bad"], "an emptied cache");
    let m = metrics(admin);
    assert_eq!(
        m["jnhpd_validator_verdicts_total{validator=\"gate\",verdict=\"deny\"}"], 3.0,
        "the same validator, its figures kept"
    );
}
