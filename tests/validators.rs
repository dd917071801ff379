//! Store validators end to end: real scripts written at test time, run by
//! the real binary; one test (or more) per clause of validators.md.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{
    Client, PATIENCE, Server, children_of, gated, is_running, process_validator, script,
    wait_for_file, wait_until_gone,
};
use nix::sys::signal::Signal;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A script whose verdict depends on the value's first word.
const VERDICTS: &str = r#"
case "$1" in
  yes*) echo JNHP:1 ;;
  deny*) echo JNHP:0 ;;
  neg*) echo JNHP:-3 ;;
  plus0*) echo JNHP:+0 ;;
  junk*) echo hello; echo jnhp:0; echo ' JNHP:0'; printf 'JNHP:7 \t\r\n'; echo JNHP:0 ;;
  late*) echo starting; echo JNHP:1 ;;
  abc*) echo JNHP:abc ;;
  empty*) echo JNHP: ;;
  x1*) echo JNHP:1x ;;
  none*) echo no verdict here ;;
  crash*) echo "it broke" >&2; exit 3 ;;
  noeol*) printf 'JNHP:1' ;;
esac
"#;

#[test]
fn allow_deny_and_the_verdict_line_rules() {
    let d = dir();
    let prog = script(d.path(), "verdicts", VERDICTS);
    let s = Server::start_in(d, &process_validator(&prog, ""));
    let mut c = s.connect();
    for (name, value, reply) in [
        ("a", "yes", "W00T!"),
        ("b", "deny", "RARGH!"),
        ("c", "neg", "W00T!"),
        ("d", "plus0", "RARGH!"),
        ("e", "junk", "W00T!"),
        ("f", "late", "W00T!"),
        ("g", "abc", "RARGH!"),
        ("h", "empty", "RARGH!"),
        ("i", "x1", "RARGH!"),
        ("j", "none", "RARGH!"),
        ("k", "crash", "RARGH!"),
        ("l", "noeol", "W00T!"),
    ] {
        assert_eq!(
            c.ask(&format!("STORE {name} {value}")),
            reply,
            "value {value}"
        );
    }
    assert_eq!(c.ask("GET b"), "", "a denied STORE stores nothing");
    assert_eq!(c.ask("STORE b yes"), "W00T!", "a denied name stays free");
    s.log.wait_for("malformed verdict \"JNHP:abc\"");
    s.log.wait_for("malformed verdict \"JNHP:\"");
    s.log.wait_for("malformed verdict \"JNHP:1x\"");
    let failure = s.log.wait_for("\"k\"");
    assert!(failure.contains(&prog.display().to_string()), "{failure}");
    assert!(
        failure.contains("exit status: 3 without a verdict"),
        "{failure}"
    );
    assert!(failure.contains("stderr: it broke"), "{failure}");
    assert!(failure.contains("rejecting the STORE"), "{failure}");
}

#[test]
fn on_failure_allow_turns_failures_into_stores() {
    let d = dir();
    let prog = script(d.path(), "verdicts", VERDICTS);
    let config = process_validator(&prog, "on_failure = \"allow\"");
    let s = Server::start_in(d, &config);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a none"), "W00T!");
    assert_eq!(c.ask("STORE b abc"), "W00T!");
    assert_eq!(c.ask("STORE c crash"), "W00T!");
    assert_eq!(c.ask("STORE d deny"), "RARGH!", "a deny is still a deny");
    s.log
        .wait_for("allowing the STORE (on_failure = \"allow\")");
}

#[test]
fn values_reach_the_program_verbatim_as_one_argument() {
    let d = dir();
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let prog = script(
        d.path(),
        "record",
        &format!(
            "cd {out}\nprintf '%s' \"$#\" > \"$JNHP_NAME.argc\"\nprintf '%s' \"$1\" > \"$JNHP_NAME.arg\"\n\
             printf '%s' \"$JNHP_VALUE_BYTES\" > \"$JNHP_NAME.len\"\necho JNHP:1",
            out = out.display()
        ),
    );
    let pwned = d.path().join("pwned");
    let s = Server::start_in(d, &process_validator(&prog, ""));
    let mut c = s.connect();
    let values: Vec<Vec<u8>> = vec![
        b"-rf".to_vec(),
        format!("$(touch {});echo pwned", pwned.display()).into_bytes(),
        b"`touch x` 'single' \"double\" ; | & > <".to_vec(),
        b"caf\xc3\xa9 \xff\xfe raw".to_vec(),
        b"inner  and trailing  ".to_vec(),
    ];
    for (i, value) in values.iter().enumerate() {
        c.send(&[format!("STORE v{i} ").as_bytes(), value, b"\r\n"].concat());
        assert_eq!(c.reply(), "W00T!");
        assert_eq!(std::fs::read(out.join(format!("v{i}.argc"))).unwrap(), b"1");
        assert_eq!(
            &std::fs::read(out.join(format!("v{i}.arg"))).unwrap(),
            value
        );
        assert_eq!(
            std::fs::read_to_string(out.join(format!("v{i}.len"))).unwrap(),
            value.len().to_string()
        );
    }
    assert!(!pwned.exists(), "the value was run through a shell");
}

#[test]
fn stdin_mode_writes_the_value_and_a_newline_then_closes() {
    let d = dir();
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let prog = script(
        d.path(),
        "from-stdin",
        &format!(
            "cat > {}/\"$JNHP_NAME\"; echo \"args:$#\" >&2; echo JNHP:1",
            out.display()
        ),
    );
    let s = Server::start_in(d, &process_validator(&prog, "input = \"stdin\""));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE small -rf  x "), "W00T!");
    assert_eq!(std::fs::read(out.join("small")).unwrap(), b"-rf  x \n");
    let big = "b".repeat(65_536);
    assert_eq!(c.ask(&format!("STORE big {big}")), "W00T!");
    assert_eq!(
        std::fs::read(out.join("big")).unwrap(),
        format!("{big}\n").into_bytes()
    );
}

#[test]
fn a_program_that_never_reads_stdin_still_counts() {
    let d = dir();
    let prog = script(d.path(), "ignores-stdin", "echo JNHP:1");
    let s = Server::start_in(d, &process_validator(&prog, "input = \"stdin\""));
    // Larger than a pipe's buffer, so the write cannot complete.
    assert_eq!(
        s.connect()
            .ask(&format!("STORE big {}", "v".repeat(65_536))),
        "W00T!"
    );
}

#[test]
fn a_hung_program_is_killed_with_its_group_at_the_timeout() {
    let d = dir();
    let prog = script(
        d.path(),
        "hangs",
        &format!(
            "sleep 300 & echo $! > {dir}/grandchild.pid\necho $$ > {dir}/child.pid\necho 'about to hang' >&2\nsleep 300",
            dir = d.path().display()
        ),
    );
    let (child_pid, grandchild_pid) = (d.path().join("child.pid"), d.path().join("grandchild.pid"));
    let mut s = Server::start_in(d, &process_validator(&prog, "timeout_ms = 300"));
    assert_eq!(s.connect().ask("STORE n v"), "RARGH!");
    let failure = s.log.wait_for("timed out after 300 ms");
    assert!(failure.contains("stderr: about to hang"), "{failure}");
    wait_until_gone(&child_pid);
    wait_until_gone(&grandchild_pid);
    assert!(
        children_of(s.pid()).is_empty(),
        "{:?}",
        children_of(s.pid())
    );
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit().code(), Some(0));
}

/// A program may linger after its verdict: the STORE does not wait for it,
/// but the program keeps its `max_concurrent` slot until it is gone (killed
/// at its timeout).
#[test]
fn a_program_lingering_after_its_verdict_keeps_its_slot_until_killed() {
    let d = dir();
    let prog = script(
        d.path(),
        "lingers",
        &format!(
            "cd {dir}\nfor p in $(cat pids 2>/dev/null); do kill -0 $p 2>/dev/null && echo overlap >> overlap; done\n\
             echo $$ >> pids\necho $$ > \"$JNHP_NAME.pid\"\necho JNHP:1\nexec sleep 300",
            dir = d.path().display()
        ),
    );
    let root = d.path().to_path_buf();
    let s = Server::start_in(
        d,
        &process_validator(&prog, "timeout_ms = 1500\nmax_concurrent = 1"),
    );
    let mut c = s.connect();
    // Had the STORE waited for the program to exit, this would time out.
    assert_eq!(c.ask("STORE first v"), "W00T!");
    assert_eq!(c.ask("STORE second v"), "W00T!");
    wait_until_gone(&root.join("first.pid"));
    wait_until_gone(&root.join("second.pid"));
    assert!(
        !root.join("overlap").exists(),
        "two programs ran at once with max_concurrent = 1"
    );
}

#[test]
fn max_concurrent_is_never_exceeded() {
    let d = dir();
    let run = d.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let prog = script(
        d.path(),
        "count-running",
        &format!(
            "cd {dir}\ntouch run/$$\nls run | wc -l >> counts\nsleep 0.2\nrm run/$$\necho JNHP:1",
            dir = d.path().display()
        ),
    );
    let counts = d.path().join("counts");
    let s = Server::start_in(d, &process_validator(&prog, "max_concurrent = 2"));
    let addr = s.addr();
    let workers: Vec<_> = (0..8)
        .map(|i| std::thread::spawn(move || Client::connect(addr).ask(&format!("STORE n{i} v"))))
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap(), "W00T!");
    }
    let counts = std::fs::read_to_string(counts).unwrap();
    let counts: Vec<u32> = counts
        .split_whitespace()
        .map(|n| n.parse().expect(&counts))
        .collect();
    assert_eq!(counts.len(), 8);
    assert!(counts.iter().all(|&n| n <= 2), "at once: {counts:?}");
}

#[test]
fn a_program_that_cannot_start_is_a_failure() {
    let d = dir();
    let prog = script(d.path(), "vanishes", "echo JNHP:1");
    let s = Server::start_in(d, &process_validator(&prog, ""));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a v"), "W00T!");
    std::fs::remove_file(&prog).unwrap();
    assert_eq!(c.ask("STORE b v"), "RARGH!");
    let failure = s.log.wait_for("cannot start");
    assert!(failure.contains("\"b\""), "{failure}");
}

#[test]
fn a_missing_program_stops_the_start() {
    let d = dir();
    let config = d.path().join("jnhp.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[[validator]]\nkind = \"process\"\ncommand = [\"./nope\"]\n",
    )
    .unwrap();
    let (code, out) = common::run_to_exit(&["--config", config.to_str().unwrap()], d.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("jnhp.toml:6: validator[0].command: program"),
        "{out}"
    );
    let (code, _) = common::run_to_exit(
        &["--check-config", "--config", config.to_str().unwrap()],
        d.path(),
    );
    assert_eq!(code, 1);
}

#[test]
fn the_chain_runs_in_order_and_the_first_no_wins() {
    let d = dir();
    let prog = script(
        d.path(),
        "marks",
        &format!(
            "touch {}/\"ran-$JNHP_NAME\"; echo JNHP:1",
            d.path().display()
        ),
    );
    let root = d.path().to_path_buf();
    let config = format!(
        "[[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 3\n\n\
         [[validator]]\nkind = \"function\"\nfunction = \"regex\"\nfield = \"name\"\npattern = \"^[a-z]+$\"\n\n{}",
        process_validator(&prog, "")
    );
    let s = Server::start_in(d, &config);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE long toolong"), "RARGH!");
    assert_eq!(c.ask("STORE UPPER abc"), "RARGH!");
    assert_eq!(c.ask("STORE ok abc"), "W00T!");
    assert!(
        !root.join("ran-long").exists(),
        "the program ran after a deny"
    );
    assert!(
        !root.join("ran-UPPER").exists(),
        "the program ran after a deny"
    );
    assert!(root.join("ran-ok").exists());
    let started = s.log.wait_for("listening on");
    assert!(started.contains("3 validators"), "{started}");
}

#[test]
fn a_store_of_an_existing_name_runs_no_validator() {
    let d = dir();
    let prog = script(
        d.path(),
        "counts-runs",
        &format!("echo run >> {}/runs; echo JNHP:1", d.path().display()),
    );
    let runs = d.path().join("runs");
    let s = Server::start_in(d, &process_validator(&prog, ""));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE n v"), "W00T!");
    for _ in 0..5 {
        assert_eq!(c.ask("STORE n other"), "RARGH!");
    }
    assert_eq!(std::fs::read_to_string(runs).unwrap().lines().count(), 1);
}

#[test]
fn floods_on_stdout_and_stderr_neither_block_nor_grow_memory() {
    let d = dir();
    let prog = script(
        d.path(),
        "floods",
        "head -c 100000000 /dev/zero\nhead -c 100000000 /dev/zero >&2\necho\necho JNHP:1",
    );
    let s = Server::start_in(d, &process_validator(&prog, "timeout_ms = 60000"));
    let mut c = s.connect();
    let before = s.rss_kib();
    assert_eq!(c.ask("STORE n v"), "W00T!");
    let grown = s.rss_kib().saturating_sub(before);
    assert!(grown < 16 * 1024, "resident memory grew by {grown} KiB");
}

#[test]
fn no_zombies_after_a_thousand_stores() {
    let d = dir();
    let prog = script(d.path(), "allow", "echo JNHP:1");
    let s = Server::start_in(d, &process_validator(&prog, ""));
    let addr = s.addr();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..250 {
                    assert_eq!(c.ask(&format!("STORE w{w}-{i} v")), "W00T!");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // Every program has exited and been reaped: no child is left at all.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let children = children_of(s.pid());
        if children.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "children left: {children:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server whose one validator is [`gated`]; with the directory its
/// script works in.
fn gated_server() -> (Server, PathBuf) {
    let d = dir();
    let prog = gated(d.path());
    let root = d.path().to_path_buf();
    // A gated run waits for the test to release it, which on a loaded
    // machine can take longer than the default 5 s timeout.
    let config = process_validator(&prog, "timeout_ms = 60000");
    (Server::start_in(d, &config), root)
}

/// While a STORE of a name is validated, another STORE of that name waits
/// for its outcome: a rejected first STORE hands the name to the second.
/// GET and EXISTS do not wait.
#[test]
fn a_pending_name_passes_to_the_next_store_when_the_first_is_rejected() {
    let (s, root) = gated_server();
    let mut first = s.connect();
    let mut second = s.connect();
    first.send(b"STORE n bad-value\r\n");
    wait_for_file(&root.join("started-n-bad-value"));
    second.send(b"STORE n good\r\n");
    let mut reader = s.connect();
    assert_eq!(reader.ask("GET n"), "");
    assert_eq!(reader.ask("EXISTS n"), "RARGH!");
    assert!(
        !root.join("started-n-good").exists(),
        "the second STORE must wait for the first"
    );
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(first.reply(), "RARGH!");
    assert_eq!(second.reply(), "W00T!");
    assert_eq!(reader.ask("GET n"), "good");
}

#[test]
fn a_pending_name_refuses_the_next_store_when_the_first_is_stored() {
    let (s, root) = gated_server();
    let mut first = s.connect();
    let mut second = s.connect();
    first.send(b"STORE n first\r\n");
    wait_for_file(&root.join("started-n-first"));
    second.send(b"STORE n second\r\n");
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(first.reply(), "W00T!");
    assert_eq!(second.reply(), "RARGH!");
    assert!(
        !root.join("started-n-second").exists(),
        "no validation for a taken name"
    );
    assert_eq!(s.connect().ask("GET n"), "first");
}

#[test]
fn concurrent_stores_through_a_program_have_exactly_one_winner() {
    let d = dir();
    let prog = script(d.path(), "allow", "echo JNHP:1");
    let s = Server::start_in(d, &process_validator(&prog, ""));
    let addr = s.addr();
    for round in 0..5 {
        let barrier = Arc::new(Barrier::new(32));
        let racers: Vec<_> = (0..32)
            .map(|i| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    barrier.wait();
                    (i, c.ask(&format!("STORE race{round} value-{i}")))
                })
            })
            .collect();
        let results: Vec<(usize, String)> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<usize> = results
            .iter()
            .filter(|(_, r)| r == "W00T!")
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert_eq!(
            s.connect().ask(&format!("GET race{round}")),
            format!("value-{}", winners[0])
        );
    }
}

/// 100 STOREs wait on a slow validator; other connections are served
/// meanwhile, and a pipelined GET after a waiting STORE waits only on its
/// own connection.
#[test]
fn slow_validations_do_not_stall_other_connections() {
    let (s, root) = gated_server();
    let mut reader = s.connect();
    let mut waiting: Vec<Client> = (0..100)
        .map(|i| {
            let mut c = s.connect();
            c.send(format!("STORE slow{i} v\r\nGET slow{i}\r\n").as_bytes());
            c
        })
        .collect();
    // Some of them are being validated (not necessarily slow0: which 16
    // of the 100 STOREs get max_concurrent's slots first is the
    // scheduler's choice, and the rest wait for the release).
    let deadline = Instant::now() + common::PATIENCE;
    while !std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("started-slow"))
    {
        assert!(Instant::now() < deadline, "no STORE was ever validated");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut busy = Vec::new();
    for i in 0..1000 {
        busy.extend_from_slice(format!("EXISTS slow{}\r\nGET nothing{i}\r\n", i % 100).as_bytes());
    }
    reader.send(&busy);
    for _ in 0..1000 {
        assert_eq!(reader.reply(), "RARGH!");
        assert_eq!(reader.reply(), "");
    }
    std::fs::write(root.join("release"), "").unwrap();
    for c in &mut waiting {
        assert_eq!(c.reply(), "W00T!");
        assert_eq!(c.reply(), "v");
    }
}

#[test]
fn a_connection_waiting_on_a_validator_is_not_idle() {
    let d = dir();
    let prog = script(d.path(), "slow", "sleep 2.5; echo JNHP:1");
    let config = format!(
        "[server]\nidle_timeout_secs = 1\n\n{}",
        process_validator(&prog, "")
    );
    let s = Server::start_in(d, &config);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE n v"), "W00T!");
    assert!(c.is_closed_by_server(), "idle after the reply: closed");
}

#[test]
fn sighup_swaps_the_chain_and_stores_in_flight_keep_theirs() {
    let (s, root) = gated_server();
    let config = s.config.clone().unwrap();
    let mut in_flight = s.connect();
    in_flight.send(b"STORE old-chain v\r\n");
    wait_for_file(&root.join("started-old-chain-v"));

    let deny_most =
        "[[validator]]\nkind = \"function\"\nfunction = \"regex\"\npattern = \"^only-this$\"\n";
    std::fs::write(&config, deny_most).unwrap();
    s.signal(Signal::SIGHUP);
    s.log
        .wait_for("configuration reloaded; log level Info; 1 validators");
    let mut c = s.connect();
    assert_eq!(c.ask("STORE new v"), "RARGH!");
    assert_eq!(c.ask("STORE new only-this"), "W00T!");

    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(
        in_flight.reply(),
        "W00T!",
        "finished with the chain it started with"
    );

    // A config that fails its checks leaves the running chain in place.
    std::fs::write(
        &config,
        "[[validator]]\nkind = \"process\"\ncommand = [\"./missing\"]\n",
    )
    .unwrap();
    s.signal(Signal::SIGHUP);
    let refused = s.log.wait_for("keeping the running configuration");
    assert!(refused.contains("validator[0].command"), "{refused}");
    assert_eq!(c.ask("STORE other v"), "RARGH!");
    assert_eq!(c.ask("STORE other only-this"), "W00T!");
}

#[test]
fn sigterm_lets_a_store_waiting_on_a_validator_finish() {
    let (mut s, root) = gated_server();
    let mut c = s.connect();
    c.send(b"STORE n v\r\n");
    wait_for_file(&root.join("started-n-v"));
    s.signal(Signal::SIGTERM);
    s.log.wait_for("SIGTERM: shutting down");
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(c.reply(), "W00T!");
    assert_eq!(s.wait_exit().code(), Some(0));
}

#[test]
fn past_the_grace_period_a_waiting_store_is_refused_and_its_program_killed() {
    let d = dir();
    let prog = gated(d.path());
    let root = d.path().to_path_buf();
    let config = format!(
        "[server]\nshutdown_grace_secs = 1\n\n{}",
        process_validator(&prog, "timeout_ms = 600000")
    );
    let mut s = Server::start_in(d, &config);
    let mut c = s.connect();
    c.send(b"STORE n v\r\n");
    wait_for_file(&root.join("started-n-v"));
    s.signal(Signal::SIGTERM);
    assert_eq!(c.reply(), "ERROR shutting down");
    assert_eq!(s.wait_exit().code(), Some(0));
    wait_until_gone(&root.join("started-n-v"));
}

#[test]
fn denylist_refuses_digests_and_exact_values_and_follows_the_file() {
    let d = dir();
    let list = d.path().join("denylist");
    // The digest of "evil" in upper case, an exact value with a trailing
    // blank, and a digest of something else.
    let evil_digest = sha256_hex(b"evil");
    let other_digest = sha256_hex(b"other");
    std::fs::write(
        &list,
        format!("# denied\n\n{evil_digest}\nbad value \n{other_digest}\n"),
    )
    .unwrap();
    let config =
        "[[validator]]\nkind = \"blocking\"\nfunction = \"denylist\"\npath = \"denylist\"\n";
    let s = Server::start_in(d, config);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a evil"), "RARGH!");
    assert_eq!(c.ask("STORE b bad value "), "RARGH!");
    assert_eq!(
        c.ask("STORE c bad value"),
        "W00T!",
        "exact means byte for byte"
    );
    assert_eq!(c.ask("STORE d fine"), "W00T!");

    // A change takes effect within 2 s.
    std::fs::write(&list, "newly bad\n").unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut i = 0;
    while c.ask(&format!("STORE probe{i} newly bad")) == "W00T!" {
        assert!(Instant::now() < deadline, "the change never took effect");
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.ask("STORE e evil"), "W00T!", "the old list was replaced");

    // If the file vanishes, the last list stays.
    std::fs::remove_file(&list).unwrap();
    s.log.wait_for("denylist");
    let deadline = Instant::now() + PATIENCE;
    let mut i = 0;
    while s.log.count("keeping the 1 entries read before") == 0 {
        assert_eq!(c.ask(&format!("STORE gone{i} newly bad")), "RARGH!");
        assert!(
            Instant::now() < deadline,
            "no warning about the vanished file"
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.ask("STORE last newly bad"), "RARGH!");
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

#[test]
fn processes_still_running_are_killed_at_shutdown() {
    let d = dir();
    let prog = script(
        d.path(),
        "lingers",
        &format!(
            "echo $$ > {}/lingering.pid; echo JNHP:1; exec sleep 300",
            d.path().display()
        ),
    );
    let root = d.path().to_path_buf();
    let mut s = Server::start_in(d, &process_validator(&prog, "timeout_ms = 600000"));
    assert_eq!(s.connect().ask("STORE n v"), "W00T!");
    wait_for_file(&root.join("lingering.pid"));
    let pid: i32 = std::fs::read_to_string(root.join("lingering.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(is_running(pid));
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit().code(), Some(0));
    wait_until_gone(&root.join("lingering.pid"));
}

/// Function validators answer as requests are parsed: pipelined STOREs
/// that pass are visible to the requests after them, refused ones are not.
#[test]
fn function_validators_alone_judge_pipelined_stores_in_order() {
    let config = "[[validator]]\nkind = \"function\"\nfunction = \"regex\"\nfield = \"name\"\npattern = \"^[a-z]+$\"\n\n\
                  [[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 4\n";
    let s = Server::start(config);
    let mut c = s.connect();
    c.send(b"STORE ok abcd\r\nGET ok\r\nSTORE Bad x\r\nEXISTS Bad\r\nSTORE big abcde\r\nGET big\r\nSTORE ok again\r\n");
    for want in ["W00T!", "abcd", "RARGH!", "RARGH!", "RARGH!", "", "RARGH!"] {
        assert_eq!(c.reply(), want);
    }
}

/// A program that fills its stdout before reading its stdin: jnhpd reads
/// while it writes, so neither side waits for the other forever.
#[test]
fn a_program_writing_before_reading_stdin_does_not_deadlock() {
    let d = dir();
    let prog = script(
        d.path(),
        "writes-first",
        "head -c 1000000 /dev/zero | tr '\\0' x\necho\n\
         # the whole value and its newline must arrive\n\
         if [ \"$(wc -c)\" -eq 65537 ]; then echo JNHP:1; else echo JNHP:0; fi",
    );
    let s = Server::start_in(
        d,
        &process_validator(&prog, "input = \"stdin\"\ntimeout_ms = 60000"),
    );
    let mut c = s.connect();
    assert_eq!(c.ask(&format!("STORE big {}", "v".repeat(65_536))), "W00T!");
}

/// Sent in one write, `GET a` then a STORE whose validator is slow: the
/// GET's reply leaves at once, not after the STORE's validation.
#[test]
fn replies_before_a_waiting_store_are_not_held_back() {
    let (s, root) = gated_server();
    let mut c = s.connect();
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    std::fs::remove_file(root.join("release")).unwrap();
    c.send(b"GET a\r\nEXISTS a\r\nSTORE b 1\r\nGET b\r\n");
    // The gate is closed: only the replies before the STORE can arrive.
    assert_eq!(c.reply(), "1");
    assert_eq!(c.reply(), "AWESOME!");
    wait_for_file(&root.join("started-b-1"));
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(c.reply(), "W00T!");
    assert_eq!(c.reply(), "1");
}

/// A program that detaches a process into its own session (`setsid`),
/// which ignores SIGTERM: that process is killed when the program times
/// out, when it exits after its verdict, and when jnhpd stops.
#[test]
fn processes_that_leave_the_group_do_not_outlive_their_program() {
    let d = dir();
    let root = d.path().to_path_buf();
    let prog = script(
        &root,
        "detach",
        &format!(
            "cd {}\nsetsid sh -c 'echo $$ > \"detached-$JNHP_NAME\"; trap \"\" TERM; exec sleep 41' &\n\
             while [ ! -s \"detached-$JNHP_NAME\" ]; do sleep 0.01; done\n\
             case \"$1\" in hang) sleep 60 ;; wait) while [ ! -e release ]; do sleep 0.02; done; echo JNHP:1 ;; *) echo JNHP:1 ;; esac",
            root.display()
        ),
    );
    let mut s = Server::start_in(d, &process_validator(&prog, "timeout_ms = 1000"));
    let detached = |name: &str| -> i32 {
        wait_for_file(&root.join(format!("detached-{name}")));
        let text = std::fs::read_to_string(root.join(format!("detached-{name}"))).unwrap();
        text.trim().parse().unwrap()
    };
    let mut c = s.connect();
    // Exits right after its verdict.
    assert_eq!(c.ask("STORE quick go"), "W00T!");
    common::wait_not_running(detached("quick"));
    // Times out.
    assert_eq!(c.ask("STORE slow hang"), "RARGH!");
    common::wait_not_running(detached("slow"));
    // Still running when jnhpd stops.
    c.send(b"STORE last wait\r\n");
    let last = detached("last");
    assert!(is_running(last));
    s.signal(Signal::SIGTERM);
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit().code(), Some(0));
    common::wait_not_running(last);
    assert!(!s.log.all().contains("panicked"), "{}", s.log.all());
}

/// `max_concurrent = 1` holds across reloads that leave the validator's
/// table unchanged: the running count is kept, so programs never overlap.
#[test]
fn max_concurrent_holds_across_reloads() {
    let d = dir();
    let root = d.path().to_path_buf();
    let prog = script(
        &root,
        "slow",
        &format!(
            "cd {}\necho start >> runs\nsleep 1\necho end >> runs\necho JNHP:1",
            root.display()
        ),
    );
    let s = Server::start_in(d, &process_validator(&prog, "max_concurrent = 1"));
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = s.connect();
        c.send(format!("STORE n{i} v\r\n").as_bytes());
        clients.push(c);
        if i == 0 {
            // The first program holds the slot before the reloads begin.
            while !std::fs::read_to_string(root.join("runs"))
                .unwrap_or_default()
                .contains("start")
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        s.signal(Signal::SIGHUP);
        while s.log.count("configuration reloaded") < i + 1 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for mut c in clients {
        assert_eq!(c.reply(), "W00T!");
    }
    let runs = std::fs::read_to_string(root.join("runs")).unwrap();
    assert_eq!(runs, "start\nend\n".repeat(3), "programs overlapped");
}

/// Validator programs, per STORE and helpers alike, get jnhpd's
/// environment without the secrets jnhpd consumed (`PGPASSWORD`); the rest
/// of it reaches them (issue 21, item 9).
#[test]
fn validators_do_not_inherit_the_postgres_password() {
    let d = dir();
    let root = d.path().to_path_buf();
    let process = script(
        &root,
        "process",
        &format!("env > {}/process-env\necho JNHP:1", root.display()),
    );
    let helper = script(
        &root,
        "helper",
        &format!(
            "env > {0}/helper-env.tmp && mv {0}/helper-env.tmp {0}/helper-env\n\
             while read id name value; do echo \"$id JNHP:1\"; done",
            root.display()
        ),
    );
    let config = format!(
        "{}[[validator]]\nkind = \"helper\"\ncommand = [\"{}\"]\n",
        process_validator(&process, ""),
        helper.display()
    );
    let path = root.join("jnhp.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .env("PGPASSWORD", "hunter2-secret")
        .env("JNHP_TEST_KEPT", "kept-value");
    let s = Server::spawn(cmd, d, Some(path));
    assert_eq!(s.connect().ask("STORE a v"), "W00T!");
    for file in ["process-env", "helper-env"] {
        wait_for_file(&root.join(file));
        let env = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(!env.contains("hunter2-secret"), "{file}:\n{env}");
        assert!(!env.contains("PGPASSWORD"), "{file}:\n{env}");
        assert!(env.contains("JNHP_TEST_KEPT=kept-value"), "{file}:\n{env}");
    }
}
