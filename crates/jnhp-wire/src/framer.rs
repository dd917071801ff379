//! Splitting a byte stream into request lines, bounded.
//!
//! The framer never buffers more than one line of the maximum length (plus
//! one read): a longer line is reported once as [`Frame::TooLong`] and its
//! bytes are dropped as they stream in. It does no I/O; the caller reads
//! into a `BytesMut` and calls [`LineFramer::next_frame`] until `None`.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// A framed piece of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// One line, its line end (`\n` or `\r\n`) removed.
    Line(Bytes),
    /// A line longer than the limit. Its bytes have been (or are being)
    /// discarded without ever being buffered whole.
    TooLong,
}

/// A framed piece of input, the line given as where it lies in
/// [`LineFramer::chunk`] (see [`LineFramer::next_range`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameAt {
    /// One line, its line end removed: `chunk()[range]`.
    Line(Range<usize>),
    /// A line longer than the limit (as [`Frame::TooLong`]).
    TooLong,
}

/// Splits a byte stream into lines, never buffering more than one line of
/// the maximum length (plus one read).
#[derive(Debug)]
pub struct LineFramer {
    max_line: usize,
    /// Inside a too-long line: drop bytes up to the next `\n`.
    discarding: bool,
    /// How much of the buffer is known to hold no `\n`.
    scanned: usize,
    /// Complete lines split off the buffer, not all handed out yet.
    chunk: Bytes,
    /// Where the next line of `chunk` starts.
    pos: usize,
}

impl LineFramer {
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            max_line,
            discarding: false,
            scanned: 0,
            chunk: Bytes::new(),
            pos: 0,
        }
    }

    /// Takes the next frame out of `buf`, or `None` when it holds no complete
    /// line. Call until `None` after each read.
    ///
    /// All the complete lines of a read are split off `buf` at once, as one
    /// frozen chunk, and handed out as slices of it: one reference count
    /// per line instead of a split, a freeze and a slice each.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        Some(match self.next_range(buf)? {
            FrameAt::Line(range) => Frame::Line(self.chunk.slice(range)),
            FrameAt::TooLong => Frame::TooLong,
        })
    }

    /// [`next_frame`](Self::next_frame) without the reference count: a
    /// line is a range of [`chunk`](Self::chunk), valid until the next
    /// call. A caller that keeps many lines keeps the chunk once instead
    /// of a reference per line.
    pub fn next_range(&mut self, buf: &mut BytesMut) -> Option<FrameAt> {
        loop {
            if let Some(frame) = self.next_in_chunk() {
                return Some(frame);
            }
            // The chunk is used up; drop it, so that the read buffer's
            // memory is the buffer's alone again once the lines are.
            self.chunk = Bytes::new();
            self.pos = 0;
            match memchr::memrchr(b'\n', &buf[self.scanned..]) {
                Some(at) => {
                    let end = self.scanned + at + 1;
                    self.scanned = 0;
                    self.chunk = buf.split_to(end).freeze();
                }
                None if self.discarding => {
                    buf.clear();
                    self.scanned = 0;
                    return None;
                }
                // `max_line + 1`: the last byte may be the `\r` of a line of
                // exactly the maximum length.
                None if buf.len() > self.max_line + 1 => {
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Some(FrameAt::TooLong);
                }
                None => {
                    self.scanned = buf.len();
                    return None;
                }
            }
        }
    }

    /// The complete lines split off the buffer that the ranges of
    /// [`next_range`](Self::next_range) point into.
    pub fn chunk(&self) -> &Bytes {
        &self.chunk
    }

    /// The next line of the current chunk (which ends with a `\n`).
    fn next_in_chunk(&mut self) -> Option<FrameAt> {
        loop {
            let rest = self.chunk.get(self.pos..).filter(|r| !r.is_empty())?;
            let at = memchr::memchr(b'\n', rest)?;
            let start = self.pos;
            self.pos += at + 1;
            if self.discarding {
                // The end of a too-long line whose start is gone.
                self.discarding = false;
                continue;
            }
            let mut end = start + at;
            if end > start && self.chunk[end - 1] == b'\r' {
                end -= 1;
            }
            if end - start > self.max_line {
                return Some(FrameAt::TooLong);
            }
            return Some(FrameAt::Line(start..end));
        }
    }

    /// At end of input: a trailing partial line counts as a final request.
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        let discarding = std::mem::replace(&mut self.discarding, false);
        self.scanned = 0;
        if discarding || buf.is_empty() {
            buf.clear();
            return None;
        }
        let line = strip_cr(buf.split().freeze());
        Some(if line.len() > self.max_line {
            Frame::TooLong
        } else {
            Frame::Line(line)
        })
    }
}

fn strip_cr(mut line: Bytes) -> Bytes {
    if line.last() == Some(&b'\r') {
        line.truncate(line.len() - 1);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(framer: &mut LineFramer, buf: &mut BytesMut) -> Vec<Frame> {
        std::iter::from_fn(|| framer.next_frame(buf)).collect()
    }

    fn line(s: &'static [u8]) -> Frame {
        Frame::Line(Bytes::from_static(s))
    }

    #[test]
    fn crlf_and_bare_lf_end_lines() {
        let mut f = LineFramer::new(100);
        let mut buf = BytesMut::from(&b"a\r\nb\nc\r\r\n\nd"[..]);
        assert_eq!(
            frames(&mut f, &mut buf),
            vec![line(b"a"), line(b"b"), line(b"c\r"), line(b"")]
        );
        assert_eq!(f.finish(&mut buf), Some(line(b"d")));
        assert_eq!(f.finish(&mut buf), None);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_one_more_is_too_long() {
        let mut f = LineFramer::new(5);
        let mut buf = BytesMut::from(&b"12345\r\n123456\n12345\n"[..]);
        assert_eq!(
            frames(&mut f, &mut buf),
            vec![line(b"12345"), Frame::TooLong, line(b"12345")]
        );
    }

    #[test]
    fn a_too_long_line_is_discarded_as_it_streams_in() {
        let mut f = LineFramer::new(5);
        let mut buf = BytesMut::from(&b"12345\r"[..]);
        assert_eq!(frames(&mut f, &mut buf), vec![]); // may still be exactly 5
        buf.extend_from_slice(b"x");
        assert_eq!(frames(&mut f, &mut buf), vec![Frame::TooLong]);
        assert!(buf.is_empty());
        for _ in 0..1000 {
            buf.extend_from_slice(b"yyyyyyyyyy");
            assert_eq!(frames(&mut f, &mut buf), vec![]);
            assert!(buf.is_empty(), "discarded bytes must not be kept");
        }
        buf.extend_from_slice(b"zz\nGET a\n");
        assert_eq!(frames(&mut f, &mut buf), vec![line(b"GET a")]);
    }

    #[test]
    fn eof_inside_a_discarded_line_yields_nothing() {
        let mut f = LineFramer::new(2);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert_eq!(frames(&mut f, &mut buf), vec![Frame::TooLong]);
        assert_eq!(f.finish(&mut buf), None);
    }

    #[test]
    fn a_trailing_partial_line_keeps_its_cr_stripped() {
        let mut f = LineFramer::new(10);
        let mut buf = BytesMut::from(&b"GET a\r"[..]);
        assert_eq!(frames(&mut f, &mut buf), vec![]);
        assert_eq!(f.finish(&mut buf), Some(line(b"GET a")));
    }

    proptest! {
        /// However the input is cut into reads, the same frames come out,
        /// and the buffer never holds more than a line and a read.
        #[test]
        fn framing_does_not_depend_on_read_boundaries(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(b' ')], 0..200),
            cuts in proptest::collection::vec(1usize..20, 1..40),
        ) {
            let max = 6;
            let mut whole = LineFramer::new(max);
            let mut buf = BytesMut::from(&input[..]);
            let mut expected = frames(&mut whole, &mut buf);
            expected.extend(whole.finish(&mut buf));

            let mut pieces = LineFramer::new(max);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut rest = &input[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                got.extend(frames(&mut pieces, &mut buf));
                prop_assert!(buf.len() <= max + 1 + 20);
            }
            got.extend(pieces.finish(&mut buf));
            prop_assert_eq!(got, expected);
        }
    }
}
