//! Any line a helper writes: the reply parser never panics; what it takes
//! for a reply starts with the decimal id it returns, then a space and a
//! `JNHP:` verdict, exactly as validators.md describes.
#![no_main]

use jnhpd::fuzzing::{parse_reply, parse_verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let Some((id, verdict)) = parse_reply(line) else {
        // Not a reply: either no space, a non-decimal id, or no JNHP: verdict.
        if let Some(space) = line.iter().position(|&b| b == b' ') {
            let digits = &line[..space];
            if !digits.is_empty()
                && digits.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(digits).unwrap().parse::<u64>().is_ok()
            {
                assert!(!line[space + 1..].starts_with(b"JNHP:"), "a reply was refused");
            }
        }
        return;
    };
    let space = line.iter().position(|&b| b == b' ').unwrap();
    assert_eq!(std::str::from_utf8(&line[..space]).unwrap().parse::<u64>().unwrap(), id);
    assert_eq!(parse_verdict(&line[space + 1..]), Some(verdict));
});
