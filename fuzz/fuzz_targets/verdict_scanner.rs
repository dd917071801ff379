//! A program's stdout cut into arbitrary reads: the scanner's verdict is
//! that of the first `JNHP:` line (checked against a plain reference
//! reading of the whole output), however the output arrives.
#![no_main]

use jnhpd::validator::{Cause, Verdict};
use jnhpd::fuzzing::{VerdictScanner, parse_verdict};
use libfuzzer_sys::fuzz_target;

/// The reference: split the whole output into lines; the first that
/// starts with `JNHP:` decides (one longer than the scanner's 4096-byte
/// limit is a malformed verdict).
fn reference(output: &[u8]) -> Option<Verdict> {
    let line = output.split(|&b| b == b'\n').find(|line| line.starts_with(b"JNHP:"))?;
    if line.len() > 4096 {
        return Some(Verdict::Failure(Cause::Malformed, "too long".into()));
    }
    parse_verdict(line)
}

fn kind(v: &Option<Verdict>) -> Option<u8> {
    v.as_ref().map(|v| match v {
        Verdict::Allow => 0,
        Verdict::Deny => 1,
        Verdict::Failure(..) => 2,
    })
}

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (cuts, output) = input;
    let mut scanner = VerdictScanner::default();
    let mut verdict = None;
    let mut rest = &output[..];
    let mut cut = cuts.iter().map(|&c| c as usize % 64 + 1).cycle();
    while !rest.is_empty() {
        let n = cut.next().unwrap_or(rest.len()).min(rest.len());
        if let Some(v) = scanner.feed(&rest[..n]) {
            verdict.get_or_insert(v);
        }
        rest = &rest[n..];
    }
    if let Some(v) = scanner.finish() {
        verdict.get_or_insert(v);
    }
    assert_eq!(kind(&verdict), kind(&reference(&output)), "output {:?}", String::from_utf8_lossy(&output));
});
