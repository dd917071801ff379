//! A hostile look at WebAssembly validators (`kind = "wasm"`,
//! docs/wasm.md), beyond tests/wasm.rs: modules in the text form that
//! recurse without end, allocate strangely, forge log lines, use
//! proposals the docs do not mention, and an operator who swaps the
//! module file, storms SIGHUPs, stops jnhpd mid-loop or sets a chain
//! deadline. Every reply is recorded and checked.

mod common;
#[path = "common/pki.rs"]
mod pki;
#[path = "common/wasm.rs"]
mod wasm_common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, Server, admin_addr, metrics};
use nix::sys::signal::Signal;
use wasm_common::*;

/// The first byte of the value (the STORE written at 1024).
const FIRST_VALUE_BYTE: &str = "(i32.load8_u (i32.add (i32.const 1024) (local.get $n)))";

/// Busy work of `iterations` rounds when the value starts with `s`
/// (a "slow" STORE, for the blocking-pool path).
fn spin_if_s(iterations: u64) -> String {
    format!(
        "(if (i32.eq {FIRST_VALUE_BYTE} (i32.const 115)) (then
           (loop $busy (local.set $i (i64.add (local.get $i) (i64.const 1)))
             (br_if $busy (i64.lt_u (local.get $i) (i64.const {iterations}))))))"
    )
}

/// CPU ticks (1/100 s) `pid` uses over `secs` seconds.
fn ticks_over(pid: i32, secs: u64) -> u64 {
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(secs));
    cpu_ticks(pid) - before
}

fn status_kib(pid: i32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends raw request bytes (CRLF appended), returns the reply.
fn ask_raw(c: &mut Client, request: &[u8]) -> String {
    let mut line = request.to_vec();
    line.extend_from_slice(b"\r\n");
    c.send(&line);
    c.reply()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Rewrites the config and sends SIGHUP; waits for the reload's outcome
/// (`reloaded` or `keeping`) and returns that log line.
fn reload(s: &Server, outcome: &str) -> String {
    let before = s.log.count(outcome);
    s.signal(Signal::SIGHUP);
    wait_until(&format!("{outcome} after SIGHUP"), || {
        s.log.count(outcome) > before
    });
    s.log
        .all()
        .lines()
        .rfind(|l| l.contains(outcome))
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------
// Bytes: what reaches the module, and what the module writes to the log
// ---------------------------------------------------------------------

#[test]
fn names_and_values_reach_the_module_byte_for_byte() {
    // Expected name at 0, value at 64, peer prefix at 128; the module
    // compares the STORE written at 1024 with them, checks the lengths
    // against what jnhp_alloc was asked for, and allows only on a match.
    let name: &[u8] = b"n\xff\xfe\xc3\x28\xe2\x80\xa8\xc2\x85";
    let value: &[u8] = b"v\x1b[31m\xff \t x\xe2\x80\xa9 \x7f";
    let esc = |b: &[u8]| b.iter().map(|c| format!("\\{c:02x}")).collect::<String>();
    let check = format!(
        "(i32.and (i32.and
            (i32.and (i32.eq (local.get $n) (i32.const {nl})) (i32.eq (local.get $v) (i32.const {vl})))
            (i32.and (i32.gt_u (local.get $p) (i32.const 10)) (i32.eqz (local.get $s))))
          (i32.and (i32.and
            (i32.eq (global.get $asked) (i32.add (i32.add (local.get $n) (local.get $v)) (i32.add (local.get $p) (local.get $s))))
            (call $eq (i32.const 1024) (i32.const 0) (local.get $n)))
            (i32.and (call $eq (i32.add (i32.const 1024) (local.get $n)) (i32.const 64) (local.get $v))
              (call $eq (i32.add (i32.const 1024) (i32.add (local.get $n) (local.get $v))) (i32.const 128) (i32.const 10)))))",
        nl = name.len(),
        vl = value.len()
    );
    let extra = format!(
        r#"(data (i32.const 0) "{}") (data (i32.const 64) "{}") (data (i32.const 128) "127.0.0.1:")
  (global $asked (mut i32) (i32.const 0))
  (func $eq (param $a i32) (param $b i32) (param $len i32) (result i32)
    (block $differ
      (loop $next
        (if (i32.eqz (local.get $len)) (then (return (i32.const 1))))
        (br_if $differ (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    i32.const 0)"#,
        esc(name),
        esc(value)
    );
    let text = module_with(
        "(global.set $asked (local.get $len)) i32.const 1024",
        &check,
        &extra,
    );
    let s = start(
        &[("exact.wat", &text)],
        &format!("{ADMIN}{}", wasm_table("exact.wat", "")),
    );
    let mut c = s.connect();
    let mut store = b"STORE ".to_vec();
    store.extend_from_slice(name);
    store.push(b' ');
    store.extend_from_slice(value);
    assert_eq!(ask_raw(&mut c, &store), "W00T!", "{}", s.log.all());
    // One byte different in the value: refused, so the module did compare.
    let mut other = b"STORE ".to_vec();
    other.extend_from_slice(b"n2 ");
    other.extend_from_slice(value);
    assert_eq!(ask_raw(&mut c, &other), "RARGH!");
    let mut get = b"GET ".to_vec();
    get.extend_from_slice(name);
    get.extend_from_slice(b"\r\n");
    c.send(&get);
    let line = c.line();
    assert_eq!(&line[..line.len() - 2], value);
}

#[test]
fn log_lines_from_the_module_cannot_be_forged() {
    // LF, CR, ESC, NUL, DEL, NEL (U+0085), U+2028, U+2029 and bytes that
    // are not UTF-8, all in one jnhp.log call; then odd lengths.
    let forged = "hello\\0a2026-12-07T00:00:00Z jnhpd[1]: ERROR: FORGED-LF\\0dFORGED-CR\\1b[2J\\00\\7f\\c2\\85FORGED-NEL\\e2\\80\\a8FORGED-2028\\e2\\80\\a9FORGED-2029\\ff\\fe end";
    let check = format!(
        "(local $c i32)
         (local.set $c {FIRST_VALUE_BYTE})
         (if (i32.eq (local.get $c) (i32.const 102)) (then (call $log (i32.const 0) (i32.const {len}))))
         ;; '1': a negative length; '2': the whole page; '3': a negative address;
         ;; '4': nothing at the very end; '5': the largest positive length
         (if (i32.eq (local.get $c) (i32.const 49)) (then (call $log (i32.const 0) (i32.const -1))))
         (if (i32.eq (local.get $c) (i32.const 50)) (then (call $log (i32.const 0) (i32.const 65536))))
         (if (i32.eq (local.get $c) (i32.const 51)) (then (call $log (i32.const -1) (i32.const 1))))
         (if (i32.eq (local.get $c) (i32.const 52)) (then (call $log (i32.const 65536) (i32.const 0))))
         (if (i32.eq (local.get $c) (i32.const 53)) (then (call $log (i32.const 10) (i32.const 2147483647))))
         ;; '6': an address and length whose sum wraps around 2^32
         (if (i32.eq (local.get $c) (i32.const 54)) (then (call $log (i32.const -16) (i32.const 32))))
         i32.const 1",
        len = forged.len() - 2 * forged.matches('\\').count()
    );
    let text = module(&check, &format!("(data (i32.const 0) \"{forged}\")"));
    let s = start(
        &[("forge.wat", &text)],
        &format!("{ADMIN}{}", wasm_table("forge.wat", "")),
    );
    let mut c = s.connect();
    assert_eq!(c.ask("STORE f1 forge"), "W00T!");
    let line = s.log.wait_for("validator w: hello");
    for word in [
        "FORGED-LF",
        "FORGED-CR",
        "FORGED-NEL",
        "FORGED-2028",
        "FORGED-2029",
    ] {
        assert!(line.contains(word), "{line}");
        // Every occurrence is inside the one line.
        for other in s.log.all().lines().filter(|l| l.contains(word)) {
            assert!(other.contains("validator w: hello"), "forged: {other}");
        }
    }
    for raw in ['\x1b', '\0', '\x7f', '\r', '\u{85}', '\u{2028}', '\u{2029}'] {
        assert!(!line.contains(raw), "{raw:?} unescaped in {line:?}");
    }
    let replies: Vec<String> = (1..=6).map(|i| c.ask(&format!("STORE l{i} {i}"))).collect();
    assert_eq!(
        replies,
        ["RARGH!", "W00T!", "RARGH!", "W00T!", "RARGH!", "RARGH!"]
    );
    s.log
        .wait_for("jnhp.log: address 0 length 4294967295 is outside the module's memory");
    s.log
        .wait_for("jnhp.log: address 10 length 2147483647 is outside the module's memory");
    let admin = admin_addr(&s);
    assert_eq!(failures(admin, "no_verdict"), 4.0);
    // The whole page: one line, cut (1 024 bytes of NUL, escaped).
    let longest = s.log.all().lines().map(str::len).max().unwrap_or_default();
    assert!(longest < 5000, "a line of {longest} bytes");
    assert_eq!(c.ask("EXISTS l2"), "AWESOME!");
}

// ---------------------------------------------------------------------
// jnhp_alloc: where the STORE goes
// ---------------------------------------------------------------------

#[test]
fn an_allocation_ending_at_the_last_byte_of_memory_is_valid_one_past_is_not() {
    // The value's last byte sits just before the peer, at the very end.
    let at_end = module_with(
        "(i32.sub (i32.const 65536) (local.get $len))",
        "(i32.eq (i32.load8_u (i32.sub (i32.const 65535) (local.get $p))) (i32.const 122))",
        "",
    );
    let one_past = module_with(
        "(i32.sub (i32.const 65537) (local.get $len))",
        "i32.const 1",
        "",
    );
    let s = start(
        &[("end.wat", &at_end), ("past.wat", &one_past)],
        &format!(
            "{ADMIN}{}[[validator]]\nkind = \"wasm\"\nname = \"past\"\nmodule = \"past.wat\"\n",
            wasm_table("end.wat", "")
        ),
    );
    let mut c = s.connect();
    // Allowed by the first, a malformed answer of the second.
    assert_eq!(c.ask("STORE e1 valuez"), "RARGH!");
    s.log.wait_for("jnhp_alloc answered address");
    let admin = admin_addr(&s);
    assert_eq!(verdicts(admin, "allow"), 1.0);
    assert_eq!(
        metric(
            admin,
            "jnhpd_validator_failures_total{validator=\"past\",cause=\"malformed\"}"
        ),
        1.0
    );
    // Refused by the first (its last value byte is not z).
    assert_eq!(c.ask("STORE e2 valuey"), "RARGH!");
    assert_eq!(verdicts(admin, "deny"), 1.0);
}

/// Grows memory enough for `$len` and answers the start of the new
/// pages: the STORE lands where memory did not exist before.
fn growing_alloc() -> String {
    module_with(
        "(local $old i32)
         (local.set $old (memory.grow (i32.add (i32.shr_u (local.get $len) (i32.const 16)) (i32.const 1))))
         (global.set $at (i32.shl (local.get $old) (i32.const 16)))
         (global.get $at)",
        // Name starts with k, value ends with z.
        "(i32.and (i32.eq (i32.load8_u (global.get $at)) (i32.const 107))
                  (i32.eq (i32.load8_u (i32.sub (i32.add (global.get $at) (i32.add (local.get $n) (local.get $v))) (i32.const 1))) (i32.const 122)))",
        "(global $at (mut i32) (i32.const 0))",
    )
}

#[test]
fn an_alloc_that_grows_memory_gets_the_largest_store_the_protocol_allows() {
    let big = "[server]\nmax_name_bytes = 65536\nmax_value_bytes = 16777216\n";
    let s = start(
        &[("grow.wat", &growing_alloc())],
        &format!(
            "{ADMIN}{big}{}",
            wasm_table("grow.wat", "max_memory_mib = 64\ntimeout_ms = 10000")
        ),
    );
    let mut c = s.connect();
    let name = format!("k{}", "n".repeat(65535));
    let value = format!("{}z", "v".repeat(16_777_215));
    assert_eq!(c.ask(&format!("STORE {name} {value}")), "W00T!");
    let value_y = format!("{}y", "v".repeat(16_777_215));
    assert_eq!(c.ask(&format!("STORE k2 {value_y}")), "RARGH!");
    let admin = admin_addr(&s);
    assert_eq!(verdicts(admin, "allow"), 1.0);
    assert_eq!(verdicts(admin, "deny"), 1.0);
    assert_eq!(c.ask(&format!("EXISTS {name}")), "AWESOME!");

    // Under a 1 MiB cap the growth is refused (-1), so the address
    // answered is garbage: a malformed answer, not a crash.
    let s2 = start(
        &[("grow.wat", &growing_alloc())],
        &format!(
            "{ADMIN}{big}{}",
            wasm_table("grow.wat", "max_memory_mib = 1")
        ),
    );
    let mut c2 = s2.connect();
    let two_mib = format!("{}z", "v".repeat(2 << 20));
    assert_eq!(c2.ask(&format!("STORE k3 {two_mib}")), "RARGH!");
    assert_eq!(failures(admin_addr(&s2), "malformed"), 1.0);
    assert_eq!(c2.ask("STORE k4 smallz"), "W00T!");
}

#[test]
fn an_alloc_that_loops_or_traps_fails_the_store() {
    let looping = module_with("(loop $l (br $l)) i32.const 0", "i32.const 1", "");
    let trapping = module_with("unreachable", "i32.const 1", "");
    let s = start(
        &[("loop.wat", &looping)],
        &format!("{ADMIN}{}", wasm_table("loop.wat", "timeout_ms = 300")),
    );
    let mut c = s.connect();
    let asked = Instant::now();
    assert_eq!(c.ask("STORE a1 x"), "RARGH!");
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(failures(admin_addr(&s), "timeout"), 1.0);
    let s = start(
        &[("trap.wat", &trapping)],
        &format!(
            "{ADMIN}{}",
            wasm_table("trap.wat", "on_failure = \"allow\"")
        ),
    );
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a2 x"), "W00T!");
    let admin = admin_addr(&s);
    assert_eq!(failures(admin, "no_verdict"), 1.0);
    assert_eq!(wm(admin, "jnhpd_validator_failed_open_total", ""), 1.0);
}

// ---------------------------------------------------------------------
// Traps and state
// ---------------------------------------------------------------------

#[test]
fn deep_recursion_is_a_trap_inline_and_on_the_slow_path() {
    let text = module(
        &format!(
            "(local $i i64) {} (i32.wrap_i64 (call $down (i64.const 0)))",
            spin_if_s(30_000_000)
        ),
        "(func $down (param $d i64) (result i64)
           (i64.add (call $down (i64.add (local.get $d) (i64.const 1))) (i64.const 1)))",
    );
    let s = start(
        &[("rec.wat", &text)],
        &format!("{ADMIN}{}", wasm_table("rec.wat", "timeout_ms = 10000")),
    );
    let mut c = s.connect();
    assert_eq!(c.ask("STORE r1 fast"), "RARGH!");
    assert_eq!(c.ask("STORE r2 slow"), "RARGH!");
    assert_eq!(c.ask("STORE r3 fast"), "RARGH!");
    let admin = admin_addr(&s);
    assert_eq!(failures(admin, "no_verdict"), 3.0);
    // The log reaches the test through a pipe: wait for its lines.
    let deadline = Instant::now() + PATIENCE;
    while s.log.count("call stack exhausted") < 3 {
        assert!(Instant::now() < deadline, "{}", s.log.all());
        std::thread::sleep(Duration::from_millis(10));
    }
    // Still serving, and other kinds of requests are unaffected.
    assert_eq!(c.ask("EXISTS r1"), "RARGH!");
}

#[test]
fn an_instance_is_thrown_away_after_a_timeout_or_a_malformed_answer() {
    // Value "p...": poisons a global then answers 7; value "l...":
    // poisons then loops. Any other value is allowed only while the
    // global is clean.
    let text = module(
        &format!(
            "(local $c i32) (local.set $c {FIRST_VALUE_BYTE})
             (if (i32.eq (local.get $c) (i32.const 112)) (then (global.set $bad (i32.const 1)) (return (i32.const 7))))
             (if (i32.eq (local.get $c) (i32.const 108)) (then (global.set $bad (i32.const 1)) (loop $l (br $l))))
             (i32.eqz (global.get $bad))"
        ),
        "(global $bad (mut i32) (i32.const 0))",
    );
    let s = start(
        &[("p.wat", &text)],
        &format!(
            "{ADMIN}{}",
            wasm_table("p.wat", "max_concurrent = 1\ntimeout_ms = 200")
        ),
    );
    let mut c = s.connect();
    let replies: Vec<String> = ["fine", "poison", "fine", "loop", "fine", "fine"]
        .iter()
        .enumerate()
        .map(|(i, v)| c.ask(&format!("STORE s{i} {v}")))
        .collect();
    assert_eq!(
        replies,
        ["W00T!", "RARGH!", "W00T!", "RARGH!", "W00T!", "W00T!"]
    );
}

#[test]
fn a_run_interrupted_after_a_millisecond_leaves_no_half_done_state() {
    // A shadow stack as compiled languages keep one: taken at the start
    // of a check, given back at its end. A run interrupted on the inline
    // path (after 1 ms) must not leave it taken for the next STORE.
    let text = module(
        &format!(
            "(local $i i64) (local $ok i32)
             (local.set $ok (i32.eq (global.get $sp) (i32.const 1000)))
             (global.set $sp (i32.sub (global.get $sp) (i32.const 100)))
             {}
             (global.set $sp (i32.add (global.get $sp) (i32.const 100)))
             (local.get $ok)",
            spin_if_s(50_000_000)
        ),
        "(global $sp (mut i32) (i32.const 1000))",
    );
    let s = start(
        &[("sp.wat", &text)],
        &format!(
            "{ADMIN}{}",
            wasm_table("sp.wat", "max_concurrent = 1\ntimeout_ms = 10000")
        ),
    );
    let mut c = s.connect();
    for (i, v) in ["fast", "slow", "fast", "slow", "fast"].iter().enumerate() {
        assert_eq!(c.ask(&format!("STORE k{i} {v}")), "W00T!", "STORE {i}");
        // Past the second during which STOREs skip the inline path.
        std::thread::sleep(Duration::from_millis(1100));
    }
}

// ---------------------------------------------------------------------
// Modules the docs do not mention
// ---------------------------------------------------------------------

fn exports(check: &str) -> String {
    format!(
        r#"(func (export "jnhp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "jnhp_check") (param $n i32) (param $v i32) (param $p i32) (param $s i32) (result i32) {check})"#
    )
}

#[test]
fn modules_with_odd_imports_or_features_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = exports("i32.const 1");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "impmem.wat",
            format!(
                r#"(module (import "jnhp" "memory" (memory 1)) (export "memory" (memory 0)) {ok})"#
            ),
            "imports jnhp.memory (a memory)",
        ),
        (
            "imptable.wat",
            format!(
                r#"(module (import "jnhp" "t" (table 1 funcref)) (memory (export "memory") 1) {ok})"#
            ),
            "imports jnhp.t (a table)",
        ),
        (
            "logglobal.wat",
            format!(
                r#"(module (import "jnhp" "log" (global i32)) (memory (export "memory") 1) {ok})"#
            ),
            "imports jnhp.log (a global)",
        ),
        (
            "logi64.wat",
            format!(
                r#"(module (import "jnhp" "log" (func (param i64))) (memory (export "memory") 1) {ok})"#
            ),
            "imports jnhp.log (a function (i64) -> ())",
        ),
        (
            "memtable.wat",
            format!(r#"(module (table (export "memory") 1 funcref) {ok})"#),
            "exports memory as a table",
        ),
        (
            "twomem.wat",
            format!(r#"(module (memory (export "memory") 1) (memory $b 1) {ok})"#),
            "memory count",
        ),
        (
            "shared.wat",
            format!(r#"(module (memory (export "memory") 1 1 shared) {ok})"#),
            "threads",
        ),
        (
            "hugetable.wat",
            format!(r#"(module (memory (export "memory") 1) (table 100000000 funcref) {ok})"#),
            "table",
        ),
    ];
    for (file, text, expected) in &cases {
        std::fs::write(d.join(file), text).unwrap();
        let config = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n{}",
            wasm_table(file, "")
        );
        let (code, out) = check_config(d, &config);
        assert_ne!(code, 0, "{file}: {out}");
        assert!(
            out.contains("jnhp.toml:7: validator[0].module") && out.contains(expected),
            "{file}: {out}"
        );
    }
}

#[test]
fn a_text_module_that_fails_validation_is_not_called_something_else() {
    // Valid text syntax, invalid module (a duplicate export): the error
    // must not claim the file is not the text form.
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"(module (memory (export "memory") 1) (func $g (param i32) (result i32) i32.const 0) (export "jnhp_alloc" (func $g)) {})"#,
        exports("i32.const 1")
    );
    std::fs::write(dir.path().join("dup.wat"), text).unwrap();
    let (code, out) = check_config(
        dir.path(),
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n{}",
            wasm_table("dup.wat", "")
        ),
    );
    assert_ne!(code, 0);
    assert!(out.contains("duplicate export"), "{out}");
    assert!(
        !out.contains("neither a WebAssembly module nor its text form"),
        "{out}"
    );
}

#[test]
fn memory64_simd_and_start_functions_that_grow_memory_stay_capped() {
    // memory64: grows one page at a time until refused; allowed only if
    // the cap (2 MiB = 32 pages) held.
    let mem64 = format!(
        r#"(module (memory (export "memory") i64 1) {})"#,
        exports(
            "(block $full (loop $grow
               (br_if $full (i64.eq (memory.grow (i64.const 1)) (i64.const -1)))
               (br $grow)))
             (i64.le_u (memory.size) (i64.const 32))"
        )
    );
    let simd = format!(
        r#"(module (memory (export "memory") 1) {})"#,
        exports("(i32x4.extract_lane 0 (i32x4.splat (i32.const 1)))")
    );
    // Start functions that grow memory: within the cap (seen by the
    // check), and far past it (refused, -1).
    let start_grow = format!(
        r#"(module (memory (export "memory") 1) (func $s (drop (memory.grow (i32.const 3)))) (start $s) {})"#,
        exports("(i32.eq (memory.size) (i32.const 4))")
    );
    let start_huge = format!(
        r#"(module (memory (export "memory") 1) (func $s (drop (memory.grow (i32.const 10000)))) (start $s) {})"#,
        exports("(i32.eq (memory.size) (i32.const 1))")
    );
    for (file, text) in [
        ("mem64.wat", mem64),
        ("simd.wat", simd),
        ("startgrow.wat", start_grow),
        ("starthuge.wat", start_huge),
    ] {
        let s = start(
            &[(file, &text)],
            &format!("{ADMIN}{}", wasm_table(file, "max_memory_mib = 2")),
        );
        let mut c = s.connect();
        for i in 0..3 {
            assert_eq!(c.ask(&format!("STORE k{i} v")), "W00T!", "{file}");
        }
        let rss_mib = s.rss_kib() / 1024;
        assert!(rss_mib < 300, "{file}: RSS {rss_mib} MiB");
    }
}

// ---------------------------------------------------------------------
// The operator: the file, SIGHUP, SIGTERM
// ---------------------------------------------------------------------

#[test]
fn the_module_file_deleted_or_replaced_by_a_fifo_a_symlink_loop_or_a_directory() {
    let allow_a = module(&format!("(i32.eq {FIRST_VALUE_BYTE} (i32.const 97))"), "");
    let s = start(
        &[("m.wat", &allow_a)],
        &format!("{ADMIN}{}", wasm_table("m.wat", "")),
    );
    let path = s.path("m.wat");
    let mut c = s.connect();
    assert_eq!(c.ask("STORE d0 apple"), "W00T!");
    // Deleted: the compiled module serves on.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(c.ask("STORE d1 apple"), "W00T!");
    assert_eq!(c.ask("STORE d2 banana"), "RARGH!");
    let line = reload(&s, "keeping the running configuration");
    assert!(line.contains("validator[0].module"), "{line}");
    assert_eq!(c.ask("STORE d3 apple"), "W00T!");
    // A FIFO: the reload must not hang opening it.
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let line = reload(&s, "keeping the running configuration");
    assert!(line.contains("FIFO"), "{line}");
    assert_eq!(c.ask("STORE d4 apple"), "W00T!");
    std::fs::remove_file(&path).unwrap();
    // A symlink to itself.
    std::os::unix::fs::symlink("m.wat", &path).unwrap();
    let line = reload(&s, "keeping the running configuration");
    assert!(line.contains("validator[0].module"), "{line}");
    assert_eq!(c.ask("STORE d5 banana"), "RARGH!");
    std::fs::remove_file(&path).unwrap();
    // A directory.
    std::fs::create_dir(&path).unwrap();
    let line = reload(&s, "keeping the running configuration");
    assert!(line.contains("directory"), "{line}");
    assert_eq!(c.ask("STORE d6 apple"), "W00T!");
    std::fs::remove_dir(&path).unwrap();
    // Back: a module that allows everything takes over.
    std::fs::write(&path, module("i32.const 1", "")).unwrap();
    reload(&s, "configuration reloaded");
    assert_eq!(c.ask("STORE d7 banana"), "W00T!");
}

#[test]
fn a_sighup_storm_while_stores_are_checked_loses_no_reply() {
    // Two modules with the same rule (values starting with `a`), one
    // slower than the other; swapped in by rename, SIGHUP after each.
    let fast = module(&format!("(i32.eq {FIRST_VALUE_BYTE} (i32.const 97))"), "");
    let slow = module(
        &format!(
            "(local $i i64) {} (i32.eq {FIRST_VALUE_BYTE} (i32.const 97))",
            spin_if_s(1)
        ),
        "(global $g i32 (i32.const 1))",
    );
    let s = start(
        &[("m.wat", &fast)],
        &format!("{ADMIN}{}", wasm_table("m.wat", "max_concurrent = 2")),
    );
    let dir = s.dir.path().to_path_buf();
    let addr = s.addr();
    let stop = Arc::new(Mutex::new(false));
    let clients: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut wrong = Vec::new();
                let mut i = 0;
                while !*stop.lock().unwrap() {
                    let (value, expected) = if i % 2 == 0 {
                        ("apple", "W00T!")
                    } else {
                        ("banana", "RARGH!")
                    };
                    let reply = c.ask(&format!("STORE t{t}n{i} {value}"));
                    if reply != expected {
                        wrong.push((i, reply));
                    }
                    i += 1;
                }
                (i, wrong)
            })
        })
        .collect();
    for round in 0..60 {
        let tmp = dir.join("m.tmp");
        std::fs::write(&tmp, if round % 2 == 0 { &slow } else { &fast }).unwrap();
        std::fs::rename(&tmp, dir.join("m.wat")).unwrap();
        s.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(15));
    }
    wait_until("a reload after the storm", || {
        s.log.count("configuration reloaded") > 0
    });
    *stop.lock().unwrap() = true;
    let mut total = 0;
    for t in clients {
        let (n, wrong) = t.join().unwrap();
        assert!(wrong.is_empty(), "wrong replies: {wrong:?}");
        total += n;
    }
    assert!(total > 0);
    assert_eq!(s.log.count("panic"), 0, "{}", s.log.all());
    let mut c = s.connect();
    assert_eq!(c.ask("STORE last apple"), "W00T!");
    assert_eq!(c.ask("STORE last2 banana"), "RARGH!");
}

#[test]
fn sigterm_while_a_module_loops_stops_within_the_grace_period() {
    let mut s = start(
        &[("loop.wat", &endless())],
        &format!(
            "{ADMIN}[server]\nshutdown_grace_secs = 2\n{}",
            wasm_table("loop.wat", "timeout_ms = 3600000")
        ),
    );
    let admin = admin_addr(&s);
    let mut c = s.connect();
    c.send(b"STORE t1 x\r\n");
    wait_until("the STORE's module runs", || {
        wm(admin, "jnhpd_validator_in_flight", "") >= 1.0
    });
    let signalled = Instant::now();
    s.signal(Signal::SIGTERM);
    assert_eq!(c.reply(), "ERROR shutting down");
    let status = s.wait_exit();
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    // 2 s of grace, plus what operations.md allows on top (1 s for
    // replies); not the module's hour.
    assert!(took < Duration::from_secs(6), "stopped after {took:?}");
}

#[test]
fn a_client_that_leaves_its_looping_store_frees_the_cpu_at_the_timeout() {
    // operations.md: a validation under way finishes without its
    // connection; here it must finish at its timeout, and nothing spins
    // after.
    let s = start(
        &[("loop.wat", &endless())],
        &format!("{ADMIN}{}", wasm_table("loop.wat", "timeout_ms = 2000")),
    );
    let admin = admin_addr(&s);
    let mut c = s.connect();
    c.send(b"STORE gone x\r\n");
    wait_until("the STORE's module runs", || {
        wm(admin, "jnhpd_validator_in_flight", "") >= 1.0
    });
    let left = Instant::now();
    drop(c);
    wait_until("the module is stopped", || {
        wm(admin, "jnhpd_validator_in_flight", "") == 0.0
    });
    assert!(
        left.elapsed() < Duration::from_secs(5),
        "{:?}",
        left.elapsed()
    );
    assert_eq!(failures(admin, "timeout"), 1.0);
    let used = ticks_over(s.pid(), 2);
    assert!(used < 40, "{used} ticks in 2 s after the client left");
    assert_eq!(s.connect().ask("EXISTS gone"), "RARGH!");
}

#[test]
fn the_chain_deadline_cuts_a_module_with_a_long_timeout() {
    let s = start(
        &[("loop.wat", &endless())],
        &format!(
            "{ADMIN}[validation]\ndeadline_ms = 300\n{}",
            wasm_table("loop.wat", "timeout_ms = 60000")
        ),
    );
    let mut c = s.connect();
    let asked = Instant::now();
    assert_eq!(c.ask("STORE dl x"), "RARGH!");
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let admin = admin_addr(&s);
    assert_eq!(failures(admin, "timeout"), 1.0);
    assert_eq!(wm(admin, "jnhpd_validator_in_flight", ""), 0.0);
    let used = ticks_over(s.pid(), 2);
    assert!(used < 40, "the module still runs: {used} ticks in 2 s");
}

// ---------------------------------------------------------------------
// Modes, deny caches, the chain, concurrency
// ---------------------------------------------------------------------

#[test]
fn dryrun_and_warn_with_a_trapping_module_never_refuse() {
    let trap = module("unreachable", "");
    for mode in ["dryrun", "warn"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("trap.wat"), &trap).unwrap();
        let s = Server::start_in(
            dir,
            &format!(
                "{ADMIN}[validation]\ndecision_log = \"decisions.log\"\n{}",
                wasm_table("trap.wat", &format!("mode = \"{mode}\""))
            ),
        );
        let mut c = s.connect();
        for i in 0..3 {
            assert_eq!(c.ask(&format!("STORE m{i} v")), "W00T!", "{mode}");
        }
        let admin = admin_addr(&s);
        assert_eq!(failures(admin, "no_verdict"), 3.0, "{mode}");
        assert_eq!(wm(admin, "jnhpd_validator_not_enforced_total", ""), 3.0);
        let would = s.log.count("would refuse the STORE");
        assert_eq!(would, if mode == "warn" { 3 } else { 0 }, "{mode}");
        let path = s.path("decisions.log");
        wait_until("three decision lines", || {
            std::fs::read_to_string(&path)
                .map(|t| t.lines().count() >= 3)
                .unwrap_or(false)
        });
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["outcome"], "allowed", "{line}");
            assert_eq!(v["validators"][0]["verdict"], "failure", "{line}");
            assert_eq!(v["validators"][0]["cause"], "no_verdict", "{line}");
            assert_eq!(v["validators"][0]["mode"], mode, "{line}");
        }
    }
}

#[test]
fn a_deny_cache_hit_does_not_run_the_module() {
    // Logs the name at each run, denies everything.
    let text = module(
        "(call $log (i32.const 1024) (local.get $n)) i32.const 0",
        "",
    );
    let s = start(
        &[("deny.wat", &text)],
        &format!("{ADMIN}{}", wasm_table("deny.wat", "deny_cache_secs = 60")),
    );
    let mut c = s.connect();
    for _ in 0..3 {
        assert_eq!(c.ask("STORE cached same"), "RARGH!");
    }
    let admin = admin_addr(&s);
    assert_eq!(wm(admin, "jnhpd_validator_deny_cache_hits_total", ""), 2.0);
    assert_eq!(verdicts(admin, "deny"), 3.0);
    // validators.md: "refused from the cache without running the
    // validator". The module ran once.
    assert_eq!(
        s.log.count("validator w: cached"),
        1,
        "the module ran for cached denials:\n{}",
        s.log.all()
    );
}

#[test]
fn a_deny_cache_hit_skips_a_slow_module() {
    let text = module(
        &format!("(local $i i64) {} i32.const 0", spin_if_s(100_000_000)),
        "",
    );
    let s = start(
        &[("deny.wat", &text)],
        &format!(
            "{ADMIN}{}",
            wasm_table("deny.wat", "deny_cache_secs = 60\ntimeout_ms = 20000")
        ),
    );
    let mut c = s.connect();
    assert_eq!(c.ask("STORE c1 slow"), "RARGH!");
    let asked = Instant::now();
    assert_eq!(c.ask("STORE c1 slow"), "RARGH!");
    assert!(asked.elapsed() < Duration::from_millis(500));
    let admin = admin_addr(&s);
    assert_eq!(wm(admin, "jnhpd_validator_deny_cache_hits_total", ""), 1.0);
    // Another peer (a new connection) runs it again.
    assert_eq!(s.connect().ask("STORE c1 slow"), "RARGH!");
    assert_eq!(wm(admin, "jnhpd_validator_deny_cache_hits_total", ""), 1.0);
}

#[test]
fn a_wasm_validator_then_a_process_validator() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    // The process: marks each run, refuses values containing x.
    let program = common::script(
        &d,
        "proc",
        &format!(
            "touch \"{}/ran-$JNHP_NAME\"\ncase \"$1\" in *x*) echo JNHP:0 ;; *) echo JNHP:1 ;; esac",
            d.display()
        ),
    );
    // The module: allows values starting with a; spins when with s.
    let text = module(
        &format!(
            "(local $i i64) (local $c i32) (local.set $c {FIRST_VALUE_BYTE})
             (if (i32.eq (local.get $c) (i32.const 115)) (then
               (loop $busy (local.set $i (i64.add (local.get $i) (i64.const 1)))
                 (br_if $busy (i64.lt_u (local.get $i) (i64.const 30000000))))
               (return (i32.const 1))))
             (i32.eq (local.get $c) (i32.const 97))"
        ),
        "",
    );
    std::fs::write(d.join("m.wat"), text).unwrap();
    let s = Server::start_in(
        dir,
        &format!(
            "{ADMIN}{}{}",
            wasm_table("m.wat", "timeout_ms = 10000"),
            common::process_validator(&program, "")
        ),
    );
    let mut c = s.connect();
    let replies: Vec<String> = [
        ("k1", "apple"),
        ("k2", "banana"),
        ("k3", "axe"),
        ("k4", "slow"),
        ("k5", "sox"),
    ]
    .iter()
    .map(|(n, v)| c.ask(&format!("STORE {n} {v}")))
    .collect();
    assert_eq!(replies, ["W00T!", "RARGH!", "RARGH!", "W00T!", "RARGH!"]);
    let ran: Vec<bool> = (1..=5)
        .map(|i| d.join(format!("ran-k{i}")).exists())
        .collect();
    assert_eq!(ran, [true, false, true, true, true]);
}

#[test]
fn max_concurrent_one_serves_many_clients_correctly() {
    let text = module(&format!("(i32.eq {FIRST_VALUE_BYTE} (i32.const 97))"), "");
    let s = start(
        &[("m.wat", &text)],
        &format!(
            "{ADMIN}{}",
            wasm_table("m.wat", "max_concurrent = 1\ntimeout_ms = 5000")
        ),
    );
    let addr = s.addr();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut wrong = Vec::new();
                for i in 0..25 {
                    let (v, expected) = if (i + t) % 3 == 0 {
                        ("banana", "RARGH!")
                    } else {
                        ("apple", "W00T!")
                    };
                    let reply = c.ask(&format!("STORE c{t}x{i} {v}"));
                    if reply != expected {
                        wrong.push((t, i, reply));
                    }
                }
                wrong
            })
        })
        .collect();
    for t in threads {
        let wrong = t.join().unwrap();
        assert!(wrong.is_empty(), "{wrong:?}");
    }
    // Every reply was right (the figures: the next test).
    assert_eq!(s.connect().ask("EXISTS c0x1"), "AWESOME!");
}

#[test]
fn every_verdict_and_failure_is_counted_and_logged_under_contention() {
    // Values starting with t trap; the rest are allowed.
    let text = module(
        &format!("(if (i32.eq {FIRST_VALUE_BYTE} (i32.const 116)) (then unreachable)) i32.const 1"),
        "",
    );
    let s = start(
        &[("m.wat", &text)],
        &format!(
            "{ADMIN}{}",
            wasm_table("m.wat", "max_concurrent = 1\ntimeout_ms = 5000")
        ),
    );
    let addr = s.addr();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..500 {
                    let (v, expected) = if i % 2 == 0 {
                        ("trap", "RARGH!")
                    } else {
                        ("fine", "W00T!")
                    };
                    assert_eq!(c.ask(&format!("STORE c{t}x{i} {v}")), expected);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let admin = admin_addr(&s);
    let m = metrics(admin);
    let figures = format!(
        "allow {:?} failure {:?} no_verdict {:?}",
        m.get("jnhpd_validator_verdicts_total{validator=\"w\",verdict=\"allow\"}"),
        m.get("jnhpd_validator_verdicts_total{validator=\"w\",verdict=\"failure\"}"),
        m.get("jnhpd_validator_failures_total{validator=\"w\",cause=\"no_verdict\"}"),
    );
    // observability.md: verdicts count each validator's own answer;
    // wasm.md: a trap is logged and counted under no_verdict.
    assert_eq!(verdicts(admin, "allow"), 1000.0, "{figures}");
    assert_eq!(failures(admin, "no_verdict"), 1000.0, "{figures}");
    assert_eq!(verdicts(admin, "failure"), 1000.0, "{figures}");
    assert_eq!(
        s.log.count("unreachable` instruction executed"),
        1000,
        "{figures}"
    );
}

#[test]
fn a_wasm_failure_before_another_validator_has_its_cause_in_the_decision_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let program = common::script(&d, "allow", "echo JNHP:1");
    std::fs::write(d.join("trap.wat"), module("unreachable", "")).unwrap();
    let s = Server::start_in(
        dir,
        &format!(
            "{ADMIN}[validation]\ndecision_log = \"decisions.log\"\n{}{}",
            wasm_table("trap.wat", "on_failure = \"allow\""),
            common::process_validator(&program, "")
        ),
    );
    let mut c = s.connect();
    assert_eq!(c.ask("STORE k1 v"), "W00T!");
    let path = s.path("decisions.log");
    wait_until("a decision line", || {
        std::fs::read_to_string(&path)
            .map(|t| t.lines().count() >= 1)
            .unwrap_or(false)
    });
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["validators"][0]["verdict"], "failure", "{text}");
    // validators.md: `failure` (with `cause`: ... `no_verdict` ...).
    assert_eq!(v["validators"][0]["cause"], "no_verdict", "{text}");
    let admin = admin_addr(&s);
    assert_eq!(failures(admin, "no_verdict"), 1.0);
    assert_eq!(wm(admin, "jnhpd_validator_failed_open_total", ""), 1.0);
}

#[test]
fn many_stores_queued_behind_one_looping_instance_each_end_at_their_timeout() {
    let s = start(
        &[("loop.wat", &endless())],
        &format!(
            "{ADMIN}{}",
            wasm_table("loop.wat", "max_concurrent = 1\ntimeout_ms = 2000")
        ),
    );
    let addr = s.addr();
    let threads: Vec<_> = (0..200)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let asked = Instant::now();
                let reply = c.ask(&format!("STORE q{i} x"));
                (reply, asked.elapsed())
            })
        })
        .collect();
    let mut other = s.connect();
    let asked = Instant::now();
    assert_eq!(other.ask("EXISTS q0"), "RARGH!");
    assert!(asked.elapsed() < Duration::from_secs(1));
    for t in threads {
        let (reply, took) = t.join().unwrap();
        assert_eq!(reply, "RARGH!");
        assert!(took < Duration::from_secs(8), "{took:?}");
    }
    assert_eq!(failures(admin_addr(&s), "timeout"), 200.0);
}

// ---------------------------------------------------------------------
// Resources: CPU, memory, time
// ---------------------------------------------------------------------

#[test]
fn an_idle_jnhpd_with_a_wasm_validator_uses_no_cpu() {
    let text = module(
        &format!("(local $i i64) {} i32.const 1", spin_if_s(30_000_000)),
        "",
    );
    let s = start(
        &[("m.wat", &text)],
        &format!("{ADMIN}{}", wasm_table("m.wat", "timeout_ms = 10000")),
    );
    let pid = s.pid();
    let idle = ticks_over(pid, 3);
    assert!(idle < 30, "{idle} ticks in 3 s idle");
    let mut c = s.connect();
    assert_eq!(c.ask("STORE i1 slow"), "W00T!");
    assert_eq!(c.ask("STORE i2 fast"), "W00T!");
    let after = ticks_over(pid, 3);
    assert!(after < 30, "{after} ticks in 3 s after a slow STORE");
}

#[test]
fn memory_stays_within_max_concurrent_times_max_memory_mib() {
    // Each check grows to the cap and touches every page; values
    // starting with t trap afterwards (the instance is made anew).
    let text = module(
        &format!(
            "(local $a i32)
             (block $full (loop $grow
               (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
               (br $grow)))
             (local.set $a (i32.const 4096))
             (loop $touch
               (i32.store8 (local.get $a) (i32.const 7))
               (local.set $a (i32.add (local.get $a) (i32.const 4096)))
               (br_if $touch (i32.lt_u (local.get $a) (i32.mul (memory.size) (i32.const 65536)))))
             (if (i32.eq {FIRST_VALUE_BYTE} (i32.const 116)) (then unreachable))
             i32.const 1"
        ),
        "",
    );
    let s = start(
        &[("fill.wat", &text)],
        &format!(
            "{ADMIN}{}",
            wasm_table(
                "fill.wat",
                "max_concurrent = 8\nmax_memory_mib = 16\ntimeout_ms = 5000"
            )
        ),
    );
    let pid = s.pid();
    let base = status_kib(pid, "VmRSS:");
    let addr = s.addr();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                (0..10)
                    .map(|i| {
                        let v = if i % 2 == 0 { "fine" } else { "trap" };
                        c.ask(&format!("STORE r{t}x{i} {v}"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        let replies = t.join().unwrap();
        for (i, r) in replies.iter().enumerate() {
            assert_eq!(r, if i % 2 == 0 { "W00T!" } else { "RARGH!" });
        }
    }
    let peak = status_kib(pid, "VmHWM:");
    let grown_mib = peak.saturating_sub(base) / 1024;
    // 8 × 16 MiB, plus room for the rest of jnhpd.
    assert!(
        grown_mib < 8 * 16 + 64,
        "grew {grown_mib} MiB over {base} KiB"
    );
}

#[test]
fn timeouts_are_honoured_within_a_few_milliseconds() {
    for (timeout, floor, ceiling) in [(50u64, 49u64, 400u64), (1, 0, 200)] {
        let s = start(
            &[("loop.wat", &endless())],
            &format!(
                "{ADMIN}{}",
                wasm_table("loop.wat", &format!("timeout_ms = {timeout}"))
            ),
        );
        let mut c = s.connect();
        let mut took = Vec::new();
        for i in 0..10 {
            let asked = Instant::now();
            assert_eq!(c.ask(&format!("STORE t{i} x")), "RARGH!");
            took.push(asked.elapsed().as_millis() as u64);
        }
        took.sort_unstable();
        assert!(took[0] >= floor, "{timeout} ms: {took:?}");
        // The median: the machine is noisy.
        assert!(took[5] < ceiling, "{timeout} ms: {took:?}");
        assert_eq!(failures(admin_addr(&s), "timeout"), 10.0);
    }
}

#[test]
fn a_high_max_concurrent_of_looping_modules_does_not_hold_up_other_connections() {
    // wasm.md: "a slow module never holds up other connections", and
    // max_concurrent may be up to 1024. 800 clients each send a STORE
    // whose module loops: each should be answered at its timeout, and
    // another client served at once meanwhile.
    let s = start(
        &[("loop.wat", &endless())],
        &format!(
            "{ADMIN}[server]\nmax_connections = 2000\n{}",
            wasm_table("loop.wat", "max_concurrent = 1024\ntimeout_ms = 4000")
        ),
    );
    let addr = s.addr();
    let admin = admin_addr(&s);
    let sent = Instant::now();
    let clients: Vec<Client> = (0..800)
        .map(|i| {
            let mut c = Client::connect(addr);
            c.send(format!("STORE h{i} x\r\n").as_bytes());
            c
        })
        .collect();
    // A few run (twice the cores: docs/wasm.md), the rest wait their turn.
    wait_until("the modules run", || {
        wm(admin, "jnhpd_validator_in_flight", "") + wm(admin, "jnhpd_validator_queued", "")
            >= 100.0
    });
    let mut other = s.connect();
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let asked = Instant::now();
        assert_eq!(other.ask(&format!("EXISTS nothing{i}")), "RARGH!");
        slowest = slowest.max(asked.elapsed());
    }
    // Their replies come at their timeout, not seconds after it.
    let mut latest = Duration::ZERO;
    for mut c in clients {
        assert_eq!(c.reply(), "RARGH!");
        latest = latest.max(sent.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(1500) && latest < Duration::from_millis(5500),
        "an EXISTS waited {slowest:?}; the last of the 4000 ms timeouts came after {latest:?}"
    );
}

#[test]
fn stores_cut_by_the_deadline_while_queued_leave_the_queued_gauge() {
    // Five STOREs for one instance whose module loops; the chain's
    // deadline ends them all, four of them while they wait.
    let s = start(
        &[("loop.wat", &endless())],
        &format!(
            "{ADMIN}[validation]\ndeadline_ms = 300\n{}",
            wasm_table("loop.wat", "max_concurrent = 1\ntimeout_ms = 10000")
        ),
    );
    let addr = s.addr();
    let threads: Vec<_> = (0..5)
        .map(|i| {
            std::thread::spawn(move || {
                let asked = Instant::now();
                let reply = Client::connect(addr).ask(&format!("STORE q{i} x"));
                (reply, asked.elapsed())
            })
        })
        .collect();
    for t in threads {
        let (reply, took) = t.join().unwrap();
        assert_eq!(reply, "RARGH!");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    let admin = admin_addr(&s);
    assert_eq!(failures(admin, "timeout"), 5.0);
    // observability.md: queued = STOREs waiting for a slot now.
    wait_until("nothing queued or in flight", || {
        wm(admin, "jnhpd_validator_queued", "") == 0.0
            && wm(admin, "jnhpd_validator_in_flight", "") == 0.0
    });
}

#[test]
fn a_store_in_flight_keeps_its_module_across_a_reload() {
    let s = start(
        &[("m.wat", &endless())],
        &format!("{ADMIN}{}", wasm_table("m.wat", "timeout_ms = 3000")),
    );
    let admin = admin_addr(&s);
    let mut old = s.connect();
    let sent = Instant::now();
    old.send(b"STORE old x\r\n");
    wait_until("the old module runs", || {
        wm(admin, "jnhpd_validator_in_flight", "") >= 1.0
    });
    std::fs::write(s.path("m.wat"), module("i32.const 1", "")).unwrap();
    reload(&s, "configuration reloaded");
    // New STOREs: the new module, at once, while the old one loops on.
    let mut c = s.connect();
    let asked = Instant::now();
    assert_eq!(c.ask("STORE new x"), "W00T!");
    assert!(asked.elapsed() < Duration::from_secs(1));
    assert_eq!(old.reply(), "RARGH!");
    assert!(sent.elapsed() >= Duration::from_millis(2900));
    assert_eq!(c.ask("EXISTS old"), "RARGH!");
}

#[test]
fn a_reload_changing_only_the_mode_keeps_figures_and_deny_cache() {
    let deny = module("i32.const 0", "");
    let config = |mode: &str| {
        format!(
            "{ADMIN}{}",
            wasm_table(
                "m.wat",
                &format!("mode = \"{mode}\"\ndeny_cache_secs = 600")
            )
        )
    };
    let s = start(&[("m.wat", &deny)], &config("dryrun"));
    let admin = admin_addr(&s);
    let mut c = s.connect();
    assert_eq!(c.ask("STORE k1 v"), "W00T!");
    assert_eq!(c.ask("STORE k2 v"), "W00T!");
    assert_eq!(verdicts(admin, "deny"), 2.0);
    std::fs::write(s.config.as_ref().unwrap(), config("enforce")).unwrap();
    reload(&s, "configuration reloaded");
    assert_eq!(verdicts(admin, "deny"), 2.0);
    assert_eq!(wm(admin, "jnhpd_validator_deny_cache_entries", ""), 2.0);
    assert_eq!(
        metric(
            admin,
            "jnhpd_validator_mode{validator=\"w\",mode=\"enforce\"}"
        ),
        1.0
    );
    assert_eq!(c.ask("STORE k3 v"), "RARGH!");
    assert_eq!(verdicts(admin, "deny"), 3.0);
}

#[test]
fn a_fast_module_before_a_process_sees_each_store_at_most_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let program = common::script(&d, "allow", "echo JNHP:1");
    std::fs::write(
        d.join("m.wat"),
        module(
            "(call $log (i32.const 1024) (local.get $n)) i32.const 1",
            "",
        ),
    )
    .unwrap();
    let s = Server::start_in(
        dir,
        &format!(
            "{ADMIN}{}{}",
            wasm_table("m.wat", ""),
            common::process_validator(&program, "")
        ),
    );
    let mut c = s.connect();
    for i in 0..10 {
        assert_eq!(c.ask(&format!("STORE twice{i} v")), "W00T!");
    }
    for i in 0..10 {
        let runs = s.log.count(&format!("validator w: twice{i}"));
        assert!((1..=2).contains(&runs), "twice{i} ran {runs} times");
    }
    // Counted once each.
    assert_eq!(verdicts(admin_addr(&s), "allow"), 10.0);
}

/// A mutual-TLS client with an odd certificate subject: the module gets
/// the subject as the fourth string and logs it.
#[test]
fn the_certificate_subject_reaches_the_module_and_cannot_forge_a_log_line() {
    use rcgen::{DistinguishedName, DnType, DnValue};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let ca = pki::Ca::new(&d, "main");
    let server_cert = ca.server(&d, "server", 1);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, DnValue::Utf8String("Org".into()));
    dn.push(
        DnType::CommonName,
        DnValue::Utf8String("evil\nFORGED-SUBJECT\r\u{1b}[2J\u{2028}".into()),
    );
    let client = ca.client_dn(&d, "odd", dn);
    std::fs::write(
        d.join("m.wat"),
        module(
            "(call $log (i32.add (i32.const 1024) (i32.add (i32.add (local.get $n) (local.get $v)) (local.get $p))) (local.get $s))
             (i32.gt_u (local.get $s) (i32.const 0))",
            "",
        ),
    )
    .unwrap();
    let config = format!(
        "{ADMIN}[server]\nlisten = []\n[tls]\nlisten = [\"127.0.0.1:0\"]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n{}",
        server_cert.cert.display(),
        server_cert.key.display(),
        ca.pem.display(),
        wasm_table("m.wat", "")
    );
    let path = d.join("jnhp.toml");
    std::fs::write(&path, &config).unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config").arg(&path);
    let s = Server::spawn(cmd, dir, Some(path));

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca.pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            CertificateDer::pem_file_iter(&client.cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect(),
            PrivateKeyDer::from_pem_file(&client.key).unwrap(),
        )
        .unwrap(),
    );
    let tcp = std::net::TcpStream::connect(s.tls_addrs[0]).unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    let conn =
        rustls::ClientConnection::new(tls, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    stream.write_all(b"STORE who v\r\n").unwrap();
    stream.flush().unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1);
        reply.push(byte[0]);
    }
    assert_eq!(reply, b"W00T!\r\n");
    let line = s.log.wait_for("validator w: CN=evil");
    for other in s.log.all().lines().filter(|l| l.contains("FORGED-SUBJECT")) {
        assert!(other.contains("validator w: CN=evil"), "forged: {other}");
    }
    assert!(
        !line.contains('\u{1b}') && !line.contains('\u{2028}'),
        "{line:?}"
    );
    assert!(line.ends_with(",O=Org"), "{line}");
}

#[test]
fn a_reload_stuck_in_a_start_function_neither_stops_serving_nor_shutdown() {
    let allow_a = module(&format!("(i32.eq {FIRST_VALUE_BYTE} (i32.const 97))"), "");
    let mut s = start(
        &[("m.wat", &allow_a)],
        &format!("{ADMIN}{}", wasm_table("m.wat", "")),
    );
    // A start function that loops, under an hour's timeout_ms: the
    // reload takes that long to refuse it.
    std::fs::write(
        s.path("m.wat"),
        module("i32.const 1", "(func $st (loop $l (br $l))) (start $st)"),
    )
    .unwrap();
    std::fs::write(
        s.config.as_ref().unwrap(),
        format!("{ADMIN}{}", wasm_table("m.wat", "timeout_ms = 3600000")),
    )
    .unwrap();
    s.signal(Signal::SIGHUP);
    let mut c = s.connect();
    for i in 0..20 {
        assert_eq!(c.ask(&format!("STORE a{i} apple")), "W00T!");
        assert_eq!(c.ask(&format!("STORE b{i} banana")), "RARGH!");
    }
    let signalled = Instant::now();
    s.signal(Signal::SIGTERM);
    let status = s.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "{:?}",
        signalled.elapsed()
    );
}
