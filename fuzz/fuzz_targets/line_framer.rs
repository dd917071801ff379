//! The same bytes cut into arbitrary reads give exactly the frames of one
//! whole read, and the buffer never holds more than a line and a read.
#![no_main]

use bytes::BytesMut;
use jnhp_wire::{Frame, LineFramer};
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 16;

fn all_frames(framer: &mut LineFramer, buf: &mut BytesMut, out: &mut Vec<Frame>) {
    while let Some(frame) = framer.next_frame(buf) {
        out.push(frame);
    }
}

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (cuts, data) = input;
    let mut whole = LineFramer::new(MAX_LINE);
    let mut buf = BytesMut::from(&data[..]);
    let mut expected = Vec::new();
    all_frames(&mut whole, &mut buf, &mut expected);
    expected.extend(whole.finish(&mut buf));

    let mut pieces = LineFramer::new(MAX_LINE);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut rest = &data[..];
    let mut cut = cuts.iter().map(|&c| c as usize % 24 + 1).cycle();
    while !rest.is_empty() {
        let n = cut.next().unwrap_or(rest.len()).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        all_frames(&mut pieces, &mut buf, &mut got);
        assert!(buf.len() <= MAX_LINE + 1 + 24, "buffered {} bytes", buf.len());
    }
    got.extend(pieces.finish(&mut buf));
    assert_eq!(got, expected);
    for frame in &got {
        if let Frame::Line(line) = frame {
            assert!(line.len() <= MAX_LINE && !line.contains(&b'\n'));
        }
    }
});
