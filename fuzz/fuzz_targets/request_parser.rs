//! Any line: `parse` never panics, and what it accepts obeys the protocol
//! (names and values within the limits, without forbidden bytes, values
//! never starting with `ERROR `) and survives a round trip through
//! `Request::encode`.
#![no_main]

use bytes::BytesMut;
use jnhp_wire::{ERROR_PREFIX, Limits, Request, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    for limits in [Limits::default(), Limits { max_name_bytes: 3, max_value_bytes: 5 }] {
        let Ok(Some(request)) = parse(line, &limits) else {
            continue;
        };
        let name = match request {
            Request::Store { name, value } => {
                assert!(!value.is_empty() && value.len() <= limits.max_value_bytes);
                assert!(!value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n'));
                assert!(!value.starts_with(ERROR_PREFIX));
                assert!(value[0] != b' ' && value[0] != b'\t');
                name
            }
            Request::Exists { name } | Request::Get { name } => name,
        };
        assert!(!name.is_empty() && name.len() <= limits.max_name_bytes);
        assert!(!name.iter().any(|&b| b <= 0x20 || b == 0x7f));
        let mut encoded = BytesMut::new();
        request.encode(&mut encoded);
        let again = &encoded[..encoded.len() - 2];
        assert_eq!(parse(again, &limits), Ok(Some(request)));
    }
});
