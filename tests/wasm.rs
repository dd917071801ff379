//! WebAssembly validators (`kind = "wasm"`, docs/wasm.md) against the
//! real binary: modules in the text form written here, real STOREs on
//! real sockets, real SIGHUPs, the metrics and the log. Most modules are
//! hostile: an endless loop, a memory hog, a trap, garbage answers, a
//! log flood, files that are not modules at all.

mod common;
#[path = "common/wasm.rs"]
mod wasm_common;

use std::time::{Duration, Instant};

use common::{Client, PATIENCE, Server, admin_addr, metrics};
use nix::sys::signal::Signal;
use wasm_common::*;

/// Allows a STORE whose value starts with `a`; logs the peer's address.
fn starts_with_a() -> String {
    module(
        "(call $log (i32.add (i32.const 1024) (i32.add (local.get $n) (local.get $v))) (local.get $p))
         (i32.eq (i32.load8_u (i32.add (i32.const 1024) (local.get $n))) (i32.const 97))",
        "",
    )
}

#[test]
fn a_module_allows_refuses_and_sees_the_peer() {
    let s = start(
        &[("check.wat", &starts_with_a())],
        &format!("{ADMIN}{}", wasm_table("check.wat", "")),
    );
    let mut c = s.connect();
    assert_eq!(c.ask("STORE k1 apple"), "W00T!");
    assert_eq!(c.ask("STORE k2 banana"), "RARGH!");
    assert_eq!(c.ask("GET k1"), "apple");
    assert_eq!(c.ask("GET k2"), "");
    // The module logged the peer's address, as jnhpd wrote it.
    let port = c.stream().local_addr().unwrap().port();
    s.log.wait_for(&format!("validator w: 127.0.0.1:{port}"));
    let admin = admin_addr(&s);
    let m = metrics(admin);
    assert_eq!(
        m["jnhpd_validator_verdicts_total{validator=\"w\",verdict=\"allow\"}"],
        1.0
    );
    assert_eq!(
        m["jnhpd_validator_verdicts_total{validator=\"w\",verdict=\"deny\"}"],
        1.0
    );
}

#[test]
fn an_endless_loop_is_stopped_and_never_holds_up_other_connections() {
    let s = start(
        &[("loop.wat", &endless())],
        &format!(
            "{ADMIN}{}",
            wasm_table("loop.wat", "timeout_ms = 3000\nmax_concurrent = 8")
        ),
    );
    let addr = s.addr();
    // Eight STOREs of a looping module: more than the machine's cores,
    // and so more than the threads that serve connections.
    let spinning: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let reply = Client::connect(addr).ask(&format!("STORE spin{i} x"));
                (reply, started.elapsed())
            })
        })
        .collect();
    // Meanwhile another client is served at once, again and again.
    let mut other = s.connect();
    let admin = admin_addr(&s);
    let deadline = Instant::now() + PATIENCE;
    // Some run (twice the cores, at least 4), the rest wait their turn.
    let running_or_waiting = || {
        metric(admin, "jnhpd_validator_in_flight{validator=\"w\"}")
            + metric(admin, "jnhpd_validator_queued{validator=\"w\"}")
    };
    while running_or_waiting() < 8.0 {
        assert!(Instant::now() < deadline, "the eight STOREs never all came");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..20 {
        let asked = Instant::now();
        assert_eq!(other.ask(&format!("EXISTS nothing{i}")), "RARGH!");
        assert!(
            asked.elapsed() < Duration::from_millis(1500),
            "an EXISTS waited {:?} behind looping modules",
            asked.elapsed()
        );
    }
    for thread in spinning {
        let (reply, took) = thread.join().unwrap();
        assert_eq!(reply, "RARGH!");
        assert!(
            took >= Duration::from_millis(2900),
            "stopped early: {took:?}"
        );
        assert!(took < Duration::from_secs(20), "stopped late: {took:?}");
    }
    assert_eq!(failures(admin, "timeout"), 8.0);
    let stopped = s.log.count("no verdict within 3000 ms");
    let never_ran = s.log.count("no instance free within timeout_ms (3000 ms)");
    assert!(stopped >= 4 && stopped + never_ran >= 8, "{}", s.log.all());
    // Nothing spins on afterwards.
    let before = cpu_ticks(s.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(s.pid()) - before;
    assert!(used < 50, "jnhpd used {used} ticks of CPU in 2 s once idle");
}

#[test]
fn a_loop_under_a_short_timeout_fails_each_store_and_on_failure_decides() {
    let s = start(
        &[("loop.wat", &endless())],
        &format!(
            "{ADMIN}{}",
            wasm_table("loop.wat", "timeout_ms = 1\non_failure = \"allow\"")
        ),
    );
    let mut c = s.connect();
    for i in 0..5 {
        assert_eq!(c.ask(&format!("STORE n{i} v")), "W00T!");
    }
    let admin = admin_addr(&s);
    assert_eq!(failures(admin, "timeout"), 5.0);
    assert_eq!(
        metric(admin, "jnhpd_validator_failed_open_total{validator=\"w\"}"),
        5.0
    );
}

#[test]
fn max_concurrent_bounds_the_instances() {
    let s = start(
        &[("loop.wat", &endless())],
        &format!(
            "{ADMIN}{}",
            wasm_table("loop.wat", "timeout_ms = 2000\nmax_concurrent = 1")
        ),
    );
    let addr = s.addr();
    let admin = admin_addr(&s);
    let store = move |i: usize| {
        std::thread::spawn(move || Client::connect(addr).ask(&format!("STORE c{i} x")))
    };
    let first = store(0);
    let deadline = Instant::now() + PATIENCE;
    while metric(admin, "jnhpd_validator_in_flight{validator=\"w\"}") < 1.0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let others = [store(1), store(2)];
    // The two others wait for the one instance.
    while metric(admin, "jnhpd_validator_queued{validator=\"w\"}") < 2.0 {
        assert!(Instant::now() < deadline, "{:?}", metrics(admin));
        std::thread::sleep(Duration::from_millis(10));
    }
    for t in others.into_iter().chain([first]) {
        assert_eq!(t.join().unwrap(), "RARGH!");
    }
    assert_eq!(failures(admin, "timeout"), 3.0);
    assert_eq!(
        metric(admin, "jnhpd_validator_queued{validator=\"w\"}"),
        0.0
    );
}

#[test]
fn memory_cannot_grow_past_the_cap() {
    // Grows one page at a time until refused, then answers how many
    // pages it has: 1 (allow) only if the cap held it to 16 pages
    // (1 MiB), 0 if it got more.
    let hog = module(
        "(block $full (loop $grow
            (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
            (br $grow)))
         (i32.le_u (memory.size) (i32.const 16))",
        "",
    );
    let s = start(
        &[("hog.wat", &hog)],
        &format!(
            "{ADMIN}{}",
            wasm_table("hog.wat", "max_memory_mib = 1\nmax_concurrent = 4")
        ),
    );
    let mut c = s.connect();
    for i in 0..50 {
        assert_eq!(c.ask(&format!("STORE m{i} x")), "W00T!");
    }
    // One that traps when refused: a failure, and the next STORE is
    // judged on an instance made anew.
    let trapper = module(
        "(loop $grow
            (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
            (br $grow))
         i32.const 1",
        "",
    );
    let s2 = start(
        &[("trap.wat", &trapper)],
        &format!("{ADMIN}{}", wasm_table("trap.wat", "max_memory_mib = 64")),
    );
    let mut c2 = s2.connect();
    assert_eq!(c2.ask("STORE t1 x"), "RARGH!");
    s2.log
        .wait_for("trapped: wasm trap: wasm `unreachable` instruction executed");
    let rss_mib = s2.rss_kib() / 1024;
    assert!(rss_mib < 300, "jnhpd's RSS is {rss_mib} MiB");
    assert_eq!(failures(admin_addr(&s2), "no_verdict"), 1.0);
}

#[test]
fn a_trap_discards_the_instance_and_its_state() {
    // A STORE of value "poison" sets a global, then traps; any other
    // STORE is allowed only while the global is unset.
    let poisoned = module(
        "(if (i32.eq (i32.load8_u (i32.add (i32.const 1024) (local.get $n))) (i32.const 112))
            (then (global.set $poisoned (i32.const 1)) unreachable))
         (i32.eqz (global.get $poisoned))",
        "(global $poisoned (mut i32) (i32.const 0))",
    );
    let s = start(
        &[("p.wat", &poisoned)],
        &format!("{ADMIN}{}", wasm_table("p.wat", "max_concurrent = 1")),
    );
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a1 fine"), "W00T!");
    assert_eq!(c.ask("STORE a2 poison"), "RARGH!");
    assert_eq!(c.ask("STORE a3 fine"), "W00T!");
    assert_eq!(c.ask("STORE a4 fine"), "W00T!");
}

#[test]
fn garbage_answers_are_failures() {
    let seven = module("i32.const 7", "");
    let far = r#"(module
  (memory (export "memory") 1)
  (func (export "jnhp_alloc") (param i32) (result i32) i32.const 65530)
  (func (export "jnhp_check") (param i32 i32 i32 i32) (result i32) i32.const 1))"#;
    let negative = far.replace("i32.const 65530", "i32.const -4");
    for (file, text, expected) in [
        (
            "seven.wat",
            seven.as_str(),
            "jnhp_check answered 7, not 1 (allow) or 0 (deny)",
        ),
        ("far.wat", far, "jnhp_alloc answered address 65530"),
        (
            "neg.wat",
            negative.as_str(),
            "jnhp_alloc answered address 4294967292",
        ),
    ] {
        let s = start(&[(file, text)], &format!("{ADMIN}{}", wasm_table(file, "")));
        let mut c = s.connect();
        assert_eq!(c.ask("STORE g1 0123456789abcdef"), "RARGH!");
        s.log.wait_for(expected);
        assert_eq!(failures(admin_addr(&s), "malformed"), 1.0, "{file}");
        // Still answering.
        assert_eq!(c.ask("EXISTS g1"), "RARGH!");
    }
}

#[test]
fn a_log_flood_is_cut() {
    let flood = module(
        "(local $i i32)
         (loop $again
           (call $log (i32.const 1024) (local.get $n))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $again (i32.lt_u (local.get $i) (i32.const 20000))))
         i32.const 1",
        "",
    );
    let s = start(
        &[("flood.wat", &flood)],
        &wasm_table("flood.wat", "timeout_ms = 10000"),
    );
    let mut c = s.connect();
    assert_eq!(c.ask("STORE floodname x"), "W00T!");
    assert_eq!(c.ask("GET floodname"), "x");
    // Ten lines for the STORE (twice at most: it may be judged again).
    let lines = s.log.count("validator w: floodname");
    assert!(
        (10..=20).contains(&lines),
        "{lines} lines:\n{}",
        s.log.all()
    );
    // A line from memory it does not have traps.
    let outside = module(
        "(call $log (i32.const 65000) (i32.const 4000)) i32.const 1",
        "",
    );
    let s = start(&[("out.wat", &outside)], &wasm_table("out.wat", ""));
    assert_eq!(s.connect().ask("STORE o x"), "RARGH!");
    s.log.wait_for("outside the module's memory");
}

#[test]
fn modules_that_cannot_serve_are_config_errors_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, bytes: &[u8]| std::fs::write(d.join(name), bytes).unwrap();
    write("garbage.wasm", b"\0asm\x01\0\0\0\x99\x99");
    write("text.wat", b"this is not a module");
    write(
        "wasi.wat",
        br#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) (memory (export "memory") 1)
            (func (export "jnhp_alloc") (param i32) (result i32) i32.const 0)
            (func (export "jnhp_check") (param i32 i32 i32 i32) (result i32) i32.const 1))"#,
    );
    write(
        "nocheck.wat",
        br#"(module (memory (export "memory") 1) (func (export "jnhp_alloc") (param i32) (result i32) i32.const 0))"#,
    );
    write(
        "badtype.wat",
        br#"(module (memory (export "memory") 1) (func (export "jnhp_alloc") (param i32) (result i32) i32.const 0)
            (func (export "jnhp_check") (param i32) (result i32) i32.const 1))"#,
    );
    write(
        "big.wat",
        module("i32.const 1", "")
            .replace(
                "(memory (export \"memory\") 1)",
                "(memory (export \"memory\") 100)",
            )
            .as_bytes(),
    );
    write(
        "startloop.wat",
        module("i32.const 1", "(func $s (loop $l (br $l))) (start $s)").as_bytes(),
    );
    write(
        "starttrap.wat",
        module("i32.const 1", "(func $s unreachable) (start $s)").as_bytes(),
    );
    // Over the 32 MiB a module may have.
    let huge = std::fs::File::create(d.join("huge.wasm")).unwrap();
    huge.set_len(50 << 20).unwrap();
    nix::unistd::mkfifo(
        &d.join("fifo.wasm"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    for (module_key, extra, expected) in [
        ("garbage.wasm", "", "not a valid WebAssembly module"),
        (
            "text.wat",
            "",
            "neither a WebAssembly module nor its text form",
        ),
        ("wasi.wat", "", "imports wasi_snapshot_preview1.fd_write"),
        ("nocheck.wat", "", "does not export jnhp_check"),
        (
            "badtype.wat",
            "",
            "exports jnhp_check as a function (i32) -> (i32)",
        ),
        ("big.wat", "max_memory_mib = 1", "cannot make an instance"),
        (
            "startloop.wat",
            "timeout_ms = 200",
            "its start function ran past timeout_ms (200 ms)",
        ),
        ("starttrap.wat", "", "cannot make an instance: wasm trap"),
        ("huge.wasm", "", "larger than"),
        ("fifo.wasm", "", "not a regular file"),
        ("/dev/zero", "", "not a regular file"),
        ("missing.wasm", "", "missing.wasm"),
    ] {
        let config = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n{}",
            wasm_table(module_key, extra)
        );
        let started = Instant::now();
        let (code, out) = check_config(d, &config);
        assert_ne!(code, 0, "{module_key}: {out}");
        assert!(
            out.contains("jnhp.toml:7: validator[0].module") && out.contains(expected),
            "{module_key}: {out}"
        );
        assert!(
            started.elapsed() < PATIENCE,
            "{module_key} took {:?}",
            started.elapsed()
        );
    }
}

/// Rewrites the config and sends SIGHUP; waits for the reload's outcome
/// (`reloaded` or `keeping`) and returns that log line.
fn reload(s: &Server, config: &str, outcome: &str) -> String {
    let before = s.log.count(outcome);
    std::fs::write(s.config.as_ref().unwrap(), config).unwrap();
    s.signal(Signal::SIGHUP);
    let deadline = Instant::now() + PATIENCE;
    while s.log.count(outcome) <= before {
        assert!(
            Instant::now() < deadline,
            "no {outcome:?}:\n{}",
            s.log.all()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    s.log
        .all()
        .lines()
        .rfind(|l| l.contains(outcome))
        .unwrap()
        .to_string()
}

#[test]
fn a_reload_swaps_the_module_and_a_broken_one_is_refused() {
    let s = start(
        &[("check.wasm", &starts_with_a())],
        &format!("{ADMIN}{}", wasm_table("check.wasm", "")),
    );
    let config = s.config.clone().unwrap();
    let config_text = std::fs::read_to_string(&config).unwrap();
    let module_path = config.parent().unwrap().join("check.wasm");
    let mut c = s.connect();
    assert_eq!(c.ask("STORE r1 banana"), "RARGH!");
    // A broken module: refused, the running one serves on.
    std::fs::write(&module_path, "(module").unwrap();
    let line = reload(&s, &config_text, "keeping the running configuration");
    assert!(line.contains("validator[0].module"), "{line}");
    assert_eq!(c.ask("STORE r2 banana"), "RARGH!");
    assert_eq!(c.ask("STORE r3 apple"), "W00T!");
    // A module that allows everything: in force after the SIGHUP.
    std::fs::write(&module_path, module("i32.const 1", "")).unwrap();
    reload(&s, &config_text, "configuration reloaded");
    assert_eq!(c.ask("STORE r4 banana"), "W00T!");
}

#[test]
fn a_module_slow_to_compile_holds_up_only_the_reload() {
    // A function of many thousand blocks: compiling it takes a while
    // (seconds in a debug build), time during which jnhpd must serve.
    let mut body = String::from("(local $x i32)\n");
    for i in 0..6_000 {
        body.push_str(&format!(
            "(if (i32.eq (local.get $n) (i32.const {i})) (then (local.set $x (i32.add (local.get $x) (i32.const {i})))))\n"
        ));
    }
    body.push_str("(i32.ge_s (local.get $x) (i32.const 0))");
    let slow = module(&body, "");
    let s = start(&[], ADMIN);
    let dir = s.config.as_ref().unwrap().parent().unwrap().to_path_buf();
    std::fs::write(dir.join("slow.wat"), &slow).unwrap();
    let before = s.log.count("configuration reloaded");
    std::fs::write(
        s.config.as_ref().unwrap(),
        format!("{ADMIN}{}", wasm_table("slow.wat", "")),
    )
    .unwrap();
    s.signal(Signal::SIGHUP);
    let mut c = s.connect();
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while s.log.count("configuration reloaded") == before {
        assert!(Instant::now() < deadline, "no reload:\n{}", s.log.all());
        let asked = Instant::now();
        assert_eq!(c.ask(&format!("STORE before{answered} x")), "W00T!");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );
        answered += 1;
    }
    assert!(answered > 0);
    assert_eq!(c.ask("STORE after x"), "W00T!");
    // Judged by the module (a STORE sent just before the log line may
    // have been too).
    assert!(
        metric(
            admin_addr(&s),
            "jnhpd_validator_verdicts_total{validator=\"w\",verdict=\"allow\"}"
        ) >= 1.0
    );
}

#[test]
fn where_executable_memory_is_refused_the_error_says_so() {
    // What systemd's MemoryDenyWriteExecute=yes does, by the kernel's own
    // switch (PR_SET_MDWE, Linux 6.3 and later).
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok.wat"), starts_with_a()).unwrap();
    let config = dir.path().join("jnhp.toml");
    std::fs::write(&config, wasm_table("ok.wat", "")).unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.args(["--check-config", "--config", config.to_str().unwrap()]);
    const PR_SET_MDWE: i32 = 65;
    const PR_MDWE_REFUSE_EXEC_GAIN: u64 = 1;
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            if nix::libc::prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            println!("skipped: this kernel has no PR_SET_MDWE ({e})");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("jnhp.toml:4: validator[0].module")
            && text.contains("the system refuses executable memory"),
        "{text}"
    );
}

#[test]
fn a_reload_that_changes_nothing_keeps_the_running_instances() {
    // Allows only the first STORE its instance judges: a global says
    // whether it has judged one. One instance (max_concurrent = 1).
    let once = module(
        "(if (global.get $judged) (then (return (i32.const 0))))
         (global.set $judged (i32.const 1))
         i32.const 1",
        "(global $judged (mut i32) (i32.const 0))",
    );
    let s = start(
        &[("once.wat", &once)],
        &wasm_table("once.wat", "max_concurrent = 1"),
    );
    let config = std::fs::read_to_string(s.config.as_ref().unwrap()).unwrap();
    let mut c = s.connect();
    assert_eq!(c.ask("STORE k1 x"), "W00T!");
    assert_eq!(c.ask("STORE k2 x"), "RARGH!", "the instance is reused");
    // The same file and table: the instance (and its state) stays.
    reload(&s, &config, "configuration reloaded");
    assert_eq!(c.ask("STORE k3 x"), "RARGH!", "a reload kept nothing");
    // A changed table is a new validator, with a new instance.
    reload(
        &s,
        &config.replace("max_concurrent = 1", "max_concurrent = 1\ntimeout_ms = 200"),
        "configuration reloaded",
    );
    assert_eq!(c.ask("STORE k4 x"), "W00T!");
}
