//! Any bytes after a data file's header: replay never panics, every record
//! it returns was in the input (encoded, at the offset it was read from,
//! in order), and a bad region is refused as damage only when a valid
//! record follows it (otherwise it is a tail to cut off).
#![no_main]

use std::path::Path;

use jnhpd::datafile::{HEADER_LEN, MAGIC, VERSION, encode_record};
use jnhpd::fuzzing::{Replay, replay};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let mut data = MAGIC.to_vec();
    data.extend_from_slice(&VERSION.to_le_bytes());
    data.resize(HEADER_LEN, 0);
    data.extend_from_slice(body);
    let mut at = HEADER_LEN;
    let mut count = 0;
    let result = replay(&data, Path::new("fuzz"), |name, value| {
        let mut record = Vec::new();
        encode_record(name, value, &mut record);
        assert_eq!(&data[at..at + record.len()], &record[..], "a record not in the input");
        at += record.len();
        count += 1;
    });
    match result {
        Ok(Replay::Clean { records }) => {
            assert_eq!(records, count);
            assert_eq!(at, data.len());
        }
        Ok(Replay::TornTail { records, good_len }) => {
            assert_eq!((records, good_len as usize), (count, at));
            assert!(at < data.len());
        }
        Err(_) => assert!(at < data.len(), "damage must lie after the good records"),
    }
});
