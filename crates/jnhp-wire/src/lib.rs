//! The JNHP/1 wire format: request lines to [`Request`], [`Reply`] to bytes
//! and back, and the [`LineFramer`] that cuts a byte stream into lines.
//!
//! Nothing here does I/O. Keeping the format pure means it can be unit-,
//! property- and fuzz-tested byte for byte, and shared by the server and
//! the client: every byte jnhpd writes on the wire is written here.

pub mod framer;

pub use framer::{Frame, FrameAt, LineFramer};

use std::io::Write as _;

use bytes::BufMut;
use thiserror::Error;

/// Size limits that make a request invalid (from `[server]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_name_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_bytes: 250,
            max_value_bytes: 65536,
        }
    }
}

impl Limits {
    /// The largest limits a server may be configured with (config.md's
    /// ranges for `max_name_bytes` and `max_value_bytes`); clients and the
    /// data file accept anything within them.
    pub const WIDEST: Limits = Limits {
        max_name_bytes: 65_536,
        max_value_bytes: 16 << 20,
    };

    /// The longest line (line end excluded) the server accepts: longer ones
    /// get `ERROR line too long` and are discarded without being buffered.
    pub fn max_line_bytes(&self) -> usize {
        self.max_name_bytes + self.max_value_bytes + 64
    }
}

/// One parsed request, borrowing from the line it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    Store { name: &'a [u8], value: &'a [u8] },
    Exists { name: &'a [u8] },
    Get { name: &'a [u8] },
}

/// Why a line is not a request the server can serve. The `Display` text is
/// the reason sent in the `ERROR <reason>` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("unknown command")]
    UnknownCommand,
    #[error("missing name")]
    MissingName,
    #[error("missing value")]
    MissingValue,
    #[error("too many arguments")]
    ExtraArguments,
    #[error("name too long")]
    NameTooLong,
    #[error("value too long")]
    ValueTooLong,
    #[error("forbidden byte in name")]
    ForbiddenNameByte,
    #[error("forbidden byte in value")]
    ForbiddenValueByte,
    #[error("line too long")]
    LineTooLong,
    /// A value beginning with `ERROR ` (so that no GET reply that begins
    /// with it is ever a value).
    #[error("reserved value")]
    ReservedValue,
}

/// One reply line. Encoded with [`Reply::encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `W00T!`: the STORE was stored.
    Stored,
    /// `RARGH!`: not stored (STORE) or not present (EXISTS).
    Rargh,
    /// `AWESOME!`: EXISTS found the name.
    Awesome,
    /// A GET reply: the value, or empty when the name is absent.
    Value(&'a [u8]),
    /// `ERROR <reason>` for a request that cannot be served.
    Error(ProtocolError),
    /// `ERROR <reason>` for a condition of the server's, not the request's.
    Fault(&'a ServerFault),
}

/// Why the server could not serve a request it understood: the reason of
/// an `ERROR <reason>` reply that is the server's doing, not the client's
/// ([`ProtocolError`] is the client's). Its `Display` text is the wire
/// text, kept here beside the other reply words so that every byte jnhpd
/// writes is written by this crate.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ServerFault {
    /// After SIGTERM: a request that came too late, or a STORE abandoned
    /// at the end of the grace period.
    #[error("shutting down")]
    ShuttingDown,
    /// Sent once to a connection accepted past `max_connections`.
    #[error("too many connections")]
    TooManyConnections,
    /// A shared namespace could not be reached within the request's time.
    #[error("storage unavailable")]
    StorageUnavailable,
    /// A stored value the protocol cannot carry (written by another tool):
    /// EXISTS finds the name, GET answers this, never the bytes.
    #[error("unservable value in storage")]
    UnservableValue,
    /// The storage backend has stopped (the server is going away).
    #[error("storage: the backend has stopped")]
    StorageStopped,
    /// The data file was given up after a write or sync that could not be
    /// undone: every STORE is refused until a restart.
    #[error(
        "storage: the data file is in an unknown state after a failed write or sync (restart jnhpd)"
    )]
    StorageUnusable,
    /// The data file could not `action` (`write`, `sync`) the STORE's
    /// record; `reason` is the system's, e.g. `No space left on device (os
    /// error 28)`. Shared (not copied) by every STORE of the failed group.
    #[error("storage: cannot {action}: {reason}")]
    StorageIo {
        action: &'static str,
        reason: std::sync::Arc<str>,
    },
}

/// The reply words, line end excluded (clients compare against them).
pub const STORED: &[u8] = b"W00T!";
pub const RARGH: &[u8] = b"RARGH!";
pub const AWESOME: &[u8] = b"AWESOME!";

impl Reply<'static> {
    /// After SIGTERM: a request that came too late, or a STORE abandoned at
    /// the end of the grace period.
    pub const SHUTTING_DOWN: Reply<'static> = Reply::Fault(&ServerFault::ShuttingDown);
    /// Sent once to a connection accepted past `max_connections`.
    pub const TOO_MANY_CONNECTIONS: Reply<'static> = Reply::Fault(&ServerFault::TooManyConnections);
}

impl Reply<'_> {
    /// Appends the reply line, CRLF included, to `out`.
    #[inline(always)]
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            // Whole lines in one copy each.
            Reply::Stored => out.put_slice(b"W00T!\r\n"),
            Reply::Rargh => out.put_slice(b"RARGH!\r\n"),
            Reply::Awesome => out.put_slice(b"AWESOME!\r\n"),
            Reply::Value(v) => line(out, v),
            Reply::Error(e) => {
                out.put_slice(b"ERROR ");
                // The reasons are short static strings; format them without
                // going through fmt on the hot path.
                out.put_slice(e.reason().as_bytes());
                out.put_slice(b"\r\n");
            }
            Reply::Fault(fault) => encode_fault(fault, out),
        }
    }
}

/// `ERROR <fault>`: rare, so formatted through `fmt` and kept out of the
/// hot replies' way.
#[cold]
#[inline(never)]
fn encode_fault(fault: &ServerFault, out: &mut impl BufMut) {
    out.put_slice(b"ERROR ");
    let mut writer = out.writer();
    let _ = write!(writer, "{fault}\r\n");
}

fn line(out: &mut impl BufMut, bytes: &[u8]) {
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

impl ProtocolError {
    /// The reason text of the `ERROR` reply (same as `Display`).
    pub fn reason(&self) -> &'static str {
        match self {
            ProtocolError::UnknownCommand => "unknown command",
            ProtocolError::MissingName => "missing name",
            ProtocolError::MissingValue => "missing value",
            ProtocolError::ExtraArguments => "too many arguments",
            ProtocolError::NameTooLong => "name too long",
            ProtocolError::ValueTooLong => "value too long",
            ProtocolError::ForbiddenNameByte => "forbidden byte in name",
            ProtocolError::ForbiddenValueByte => "forbidden byte in value",
            ProtocolError::LineTooLong => "line too long",
            ProtocolError::ReservedValue => "reserved value",
        }
    }
}

/// Every error reply begins with these bytes, and no value may.
pub const ERROR_PREFIX: &[u8] = b"ERROR ";

/// Whether a reply line (line end removed) is an `ERROR <reason>` line,
/// and if so its reason. Values cannot begin with [`ERROR_PREFIX`], so this
/// holds for GET replies too.
pub fn error_reason(reply: &[u8]) -> Option<&[u8]> {
    reply.strip_prefix(ERROR_PREFIX)
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Bytes a name may not contain: blanks and ASCII control characters.
fn is_forbidden_in_name(b: u8) -> bool {
    b <= 0x20 || b == 0x7f
}

/// Bytes a value may not contain. LF cannot occur (it ends the line).
/// (`parse` searches for the same three bytes with `memchr3`.)
#[cfg(test)]
fn is_forbidden_in_value(b: u8) -> bool {
    b == 0 || b == b'\r' || b == b'\n'
}

fn skip_blanks(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|&b| !is_blank(b))
        .unwrap_or(line.len());
    &line[start..]
}

/// Splits off the next token (up to a blank); returns (token, rest).
fn token(line: &[u8]) -> (&[u8], &[u8]) {
    // Tokens are short: a plain loop beats memchr's call and set-up here.
    let end = line.iter().position(|&b| is_blank(b)).unwrap_or(line.len());
    line.split_at(end)
}

/// Checks `name` as a request's name: what a STORE can store under, and
/// so what may come back from storage as a name (the companion of
/// [`check_value`]).
pub fn check_name<'a>(name: &'a [u8], limits: &Limits) -> Result<&'a [u8], ProtocolError> {
    if name.is_empty() {
        return Err(ProtocolError::MissingName);
    }
    if name.len() > limits.max_name_bytes {
        return Err(ProtocolError::NameTooLong);
    }
    // No early exit: the fold compiles to a vectorized scan, cheaper than
    // a branch per byte for names of any length.
    if name
        .iter()
        .fold(false, |bad, &b| bad | is_forbidden_in_name(b))
    {
        return Err(ProtocolError::ForbiddenNameByte);
    }
    Ok(name)
}

/// Whether any byte of `bytes` may not be in a name (a blank, an ASCII
/// control character or DEL), eight bytes at a time.
///
/// For a word `x`, `(x - 0x21…) & !x & 0x80…` has a byte's high bit set
/// exactly when some byte is below 0x21 (the classic "has less than"
/// test: exact as a yes/no for thresholds up to 0x80; bytes of 0x80 and
/// above never count, so non-UTF-8 names pass), and the same test on
/// `x ^ 0x7f…` with threshold 1 finds a DEL.
fn has_name_forbidden(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let word_bad = |x: u64| {
        let below = x.wrapping_sub(ONES * 0x21) & !x & HIGH;
        let del = x ^ (ONES * 0x7f);
        let del = del.wrapping_sub(ONES) & !del & HIGH;
        below | del != 0
    };
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if word_bad(u64::from_le_bytes(word)) {
            return true;
        }
    }
    // The last 1-7 bytes as one more word: padded with an allowed byte, or
    // (when a whole word came before) the last eight bytes, overlapping
    // bytes already found allowed. No loop per byte either way.
    let tail = chunks.remainder();
    if tail.is_empty() {
        return false;
    }
    let mut word = [b'a'; 8];
    if bytes.len() >= 8 {
        word.copy_from_slice(&bytes[bytes.len() - 8..]);
    } else {
        word[..tail.len()].copy_from_slice(tail);
    }
    word_bad(u64::from_le_bytes(word))
}

/// Checks `value` as a STORE's value: what a STORE can store, and so
/// what a GET may send back as one line. Also for values that come from
/// elsewhere (a database row another tool wrote): one that fails here
/// could end a reply line early, or pass for another reply.
pub fn check_value<'a>(value: &'a [u8], limits: &Limits) -> Result<&'a [u8], ProtocolError> {
    if value.is_empty() {
        return Err(ProtocolError::MissingValue);
    }
    if value.len() > limits.max_value_bytes {
        return Err(ProtocolError::ValueTooLong);
    }
    if memchr::memchr3(0, b'\r', b'\n', value).is_some() {
        return Err(ProtocolError::ForbiddenValueByte);
    }
    // A STORE's value starts after the blanks that follow the name.
    if is_blank(value[0]) {
        return Err(ProtocolError::ForbiddenValueByte);
    }
    if value.starts_with(ERROR_PREFIX) {
        return Err(ProtocolError::ReservedValue);
    }
    Ok(value)
}

/// The common shapes, exactly: `GET <name>`, `EXISTS <name>` and
/// `STORE <name> <value>` in upper case with single spaces and a value
/// that does not start with a blank. `None` means "not this shape": the
/// general parser decides (it would give the same answer for these lines;
/// a property test holds the two to it).
#[inline(always)]
fn parse_common<'a>(line: &'a [u8], limits: &Limits) -> Option<Request<'a>> {
    let fits = |name: &[u8]| !name.is_empty() && name.len() <= limits.max_name_bytes;
    if let Some(name) = line.strip_prefix(b"GET ") {
        return (fits(name) && !has_name_forbidden(name)).then_some(Request::Get { name });
    }
    if let Some(name) = line.strip_prefix(b"EXISTS ") {
        return (fits(name) && !has_name_forbidden(name)).then_some(Request::Exists { name });
    }
    let rest = line.strip_prefix(b"STORE ")?;
    let space = memchr::memchr(b' ', rest)?;
    let (name, value) = (&rest[..space], &rest[space + 1..]);
    let plain_value = value
        .first()
        .is_some_and(|&b| !is_blank(b) && value.len() <= limits.max_value_bytes)
        && memchr::memchr3(0, b'\r', b'\n', value).is_none()
        && !value.starts_with(ERROR_PREFIX);
    (plain_value && fits(name) && !has_name_forbidden(name))
        .then_some(Request::Store { name, value })
}

/// Parses one request line (line end already removed).
///
/// Returns `Ok(None)` for an empty or all-blank line, which gets no reply.
/// The common shapes take a fast path (`parse_common`); every other
/// line, and every error, the general one.
// Inlined into the caller's loop with the common shapes; the general
// grammar stays a call of its own (it is rare, and inlined it made `parse`
// too large to inline: +10% instructions per pipelined request).
#[inline]
pub fn parse<'a>(line: &'a [u8], limits: &Limits) -> Result<Option<Request<'a>>, ProtocolError> {
    if let Some(request) = parse_common(line, limits) {
        return Ok(Some(request));
    }
    parse_general(line, limits)
}

/// The grammar of protocol.md, for any line.
#[inline(never)]
fn parse_general<'a>(
    line: &'a [u8],
    limits: &Limits,
) -> Result<Option<Request<'a>>, ProtocolError> {
    let line = skip_blanks(line);
    if line.is_empty() {
        return Ok(None);
    }
    let (command, rest) = token(line);
    let rest = skip_blanks(rest);
    if command.eq_ignore_ascii_case(b"STORE") {
        let (name, rest) = token(rest);
        let name = check_name(name, limits)?;
        // The value starts at the first non-blank byte after the name and
        // runs to the line end, trailing blanks included.
        let value = check_value(skip_blanks(rest), limits)?;
        Ok(Some(Request::Store { name, value }))
    } else if command.eq_ignore_ascii_case(b"GET") || command.eq_ignore_ascii_case(b"EXISTS") {
        let (name, rest) = token(rest);
        let name = check_name(name, limits)?;
        if !skip_blanks(rest).is_empty() {
            return Err(ProtocolError::ExtraArguments);
        }
        Ok(Some(if command.len() == 3 {
            Request::Get { name }
        } else {
            Request::Exists { name }
        }))
    } else {
        Err(ProtocolError::UnknownCommand)
    }
}

impl Request<'_> {
    /// Appends the request line, CRLF included, to `out` (client side).
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            Request::Store { name, value } => {
                out.put_slice(b"STORE ");
                out.put_slice(name);
                out.put_u8(b' ');
                out.put_slice(value);
            }
            Request::Exists { name } => {
                out.put_slice(b"EXISTS ");
                out.put_slice(name);
            }
            Request::Get { name } => {
                out.put_slice(b"GET ");
                out.put_slice(name);
            }
        }
        out.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;

    fn p(line: &[u8]) -> Result<Option<Request<'_>>, ProtocolError> {
        parse(line, &Limits::default())
    }

    fn small() -> Limits {
        Limits {
            max_name_bytes: 4,
            max_value_bytes: 6,
        }
    }

    #[test]
    fn values_beginning_with_error_and_a_space_are_reserved() {
        assert_eq!(p(b"STORE a ERROR x"), Err(ProtocolError::ReservedValue));
        assert_eq!(p(b"STORE a ERROR "), Err(ProtocolError::ReservedValue));
        for ordinary in [
            &b"STORE a ERROR"[..],
            b"STORE a ERRORS x",
            b"STORE a error x",
            b"STORE a x ERROR y",
        ] {
            assert!(
                matches!(p(ordinary), Ok(Some(Request::Store { .. }))),
                "{ordinary:?}"
            );
        }
        let mut out = BytesMut::new();
        Reply::Error(ProtocolError::ReservedValue).encode(&mut out);
        assert_eq!(&out[..], b"ERROR reserved value\r\n");
        assert_eq!(
            error_reason(b"ERROR reserved value"),
            Some(&b"reserved value"[..])
        );
        assert_eq!(error_reason(b"ERRORx"), None);
    }

    #[test]
    fn parses_the_three_commands_case_insensitively() {
        assert_eq!(
            p(b"STORE a b"),
            Ok(Some(Request::Store {
                name: b"a",
                value: b"b"
            }))
        );
        assert_eq!(p(b"store a b"), p(b"StOrE a b"));
        assert_eq!(p(b"get Name"), Ok(Some(Request::Get { name: b"Name" })));
        assert_eq!(p(b"ExIsTs n"), Ok(Some(Request::Exists { name: b"n" })));
    }

    #[test]
    fn blanks_are_runs_of_spaces_and_tabs() {
        assert_eq!(p(b" \t GET \t n \t"), Ok(Some(Request::Get { name: b"n" })));
        assert_eq!(
            p(b"\tSTORE \t n \t v  w \t"),
            Ok(Some(Request::Store {
                name: b"n",
                value: b"v  w \t"
            }))
        );
    }

    #[test]
    fn empty_and_blank_lines_are_ignored() {
        assert_eq!(p(b""), Ok(None));
        assert_eq!(p(b" \t  "), Ok(None));
    }

    #[test]
    fn argument_errors() {
        assert_eq!(p(b"GET"), Err(ProtocolError::MissingName));
        assert_eq!(p(b"GET   "), Err(ProtocolError::MissingName));
        assert_eq!(p(b"GET a b"), Err(ProtocolError::ExtraArguments));
        assert_eq!(p(b"EXISTS a b"), Err(ProtocolError::ExtraArguments));
        assert_eq!(p(b"STORE"), Err(ProtocolError::MissingName));
        assert_eq!(p(b"STORE a"), Err(ProtocolError::MissingValue));
        assert_eq!(p(b"STORE a  \t "), Err(ProtocolError::MissingValue));
        assert_eq!(p(b"FROB a"), Err(ProtocolError::UnknownCommand));
        assert_eq!(p(b"GETS a"), Err(ProtocolError::UnknownCommand));
        assert_eq!(p(b"\x00"), Err(ProtocolError::UnknownCommand));
    }

    #[test]
    fn length_limits_at_their_exact_boundaries() {
        let l = small();
        assert!(parse(b"GET abcd", &l).is_ok());
        assert_eq!(parse(b"GET abcde", &l), Err(ProtocolError::NameTooLong));
        assert!(parse(b"STORE abcd 123456", &l).is_ok());
        assert_eq!(
            parse(b"STORE abcd 1234567", &l),
            Err(ProtocolError::ValueTooLong)
        );
        assert_eq!(parse(b"STORE abcde 1", &l), Err(ProtocolError::NameTooLong));
        assert_eq!(l.max_line_bytes(), 4 + 6 + 64);
    }

    #[test]
    fn forbidden_bytes() {
        for b in (0u8..0x20).chain([0x7f]) {
            if b == b'\t' {
                continue; // a tab separates tokens instead
            }
            let line = [b"GET a".as_slice(), &[b]].concat();
            assert_eq!(
                p(&line),
                Err(ProtocolError::ForbiddenNameByte),
                "byte {b:#x}"
            );
        }
        assert_eq!(p(b"STORE a x\x00y"), Err(ProtocolError::ForbiddenValueByte));
        assert_eq!(p(b"STORE a x\ry"), Err(ProtocolError::ForbiddenValueByte));
        // Other control bytes, and any high byte, are fine in a value.
        assert!(p(b"STORE a x\x01\x7f\xff\ty").is_ok());
        // Non-UTF-8 names are fine.
        assert_eq!(
            p(b"GET \xff\xfe"),
            Ok(Some(Request::Get { name: b"\xff\xfe" }))
        );
    }

    #[test]
    fn replies_encode_as_the_spec_says() {
        let mut out = BytesMut::new();
        for r in [
            Reply::Stored,
            Reply::Rargh,
            Reply::Awesome,
            Reply::Value(b"v w "),
            Reply::Value(b""),
            Reply::Error(ProtocolError::LineTooLong),
            Reply::SHUTTING_DOWN,
        ] {
            r.encode(&mut out);
        }
        assert_eq!(
            &out[..],
            b"W00T!\r\nRARGH!\r\nAWESOME!\r\nv w \r\n\r\nERROR line too long\r\nERROR shutting down\r\n"
        );
        // The whole lines written at once are the published words.
        for (reply, word) in [
            (Reply::Stored, STORED),
            (Reply::Rargh, RARGH),
            (Reply::Awesome, AWESOME),
        ] {
            let mut out = BytesMut::new();
            reply.encode(&mut out);
            assert_eq!(&out[..], [word, b"\r\n"].concat());
        }
    }

    /// Each server fault's line is the text docs/troubleshooting.md lists
    /// (the reasons clients and operators match on).
    #[test]
    fn server_faults_encode_their_documented_reasons() {
        let cases = [
            (ServerFault::ShuttingDown, "shutting down"),
            (ServerFault::TooManyConnections, "too many connections"),
            (ServerFault::StorageUnavailable, "storage unavailable"),
            (ServerFault::UnservableValue, "unservable value in storage"),
            (
                ServerFault::StorageStopped,
                "storage: the backend has stopped",
            ),
            (
                ServerFault::StorageUnusable,
                "storage: the data file is in an unknown state after a failed write or sync \
                 (restart jnhpd)",
            ),
            (
                ServerFault::StorageIo {
                    action: "sync",
                    reason: "Input/output error (os error 5)".into(),
                },
                "storage: cannot sync: Input/output error (os error 5)",
            ),
        ];
        for (fault, reason) in cases {
            let mut out = BytesMut::new();
            Reply::Fault(&fault).encode(&mut out);
            assert_eq!(&out[..], format!("ERROR {reason}\r\n").as_bytes());
        }
    }

    #[test]
    fn error_reason_matches_display() {
        use ProtocolError::*;
        for e in [
            UnknownCommand,
            MissingName,
            MissingValue,
            ExtraArguments,
            NameTooLong,
            ValueTooLong,
            ForbiddenNameByte,
            ForbiddenValueByte,
            LineTooLong,
        ] {
            assert_eq!(e.reason(), e.to_string());
        }
    }

    fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0x21u8..=0xff, 1..=12)
            .prop_filter("no DEL", |n| !n.contains(&0x7f))
    }

    fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<u8>().prop_filter("not blank or forbidden", |b| {
                !is_blank(*b) && !is_forbidden_in_value(*b)
            }),
            proptest::collection::vec(
                any::<u8>().prop_filter("allowed", |b| !is_forbidden_in_value(*b)),
                0..40,
            ),
        )
            .prop_map(|(first, rest)| [vec![first], rest].concat())
            .prop_filter("not reserved", |v| !v.starts_with(ERROR_PREFIX))
    }

    proptest! {
        /// The fast path answers exactly as the general parser, on lines
        /// built near its shapes (commands, separators, forbidden bytes,
        /// lengths around the limits) and on arbitrary bytes.
        #[test]
        fn the_fast_path_agrees_with_the_grammar(
            command in prop_oneof![Just(&b"GET "[..]), Just(&b"EXISTS "[..]), Just(&b"STORE "[..]),
                                   Just(&b"get "[..]), Just(&b"GET  "[..]), Just(&b"STORE\t"[..])],
            name in proptest::collection::vec(prop_oneof![
                Just(b'a'), Just(b' '), Just(b'\t'), Just(0x7f), Just(0x00), Just(0x1f),
                Just(0x20), Just(0x21), Just(0x80), Just(0xff), any::<u8>()], 0..20),
            sep in prop_oneof![Just(&b" "[..]), Just(&b"  "[..]), Just(&b"\t"[..]), Just(&b""[..])],
            value in proptest::collection::vec(prop_oneof![
                Just(b'v'), Just(b' '), Just(0u8), Just(b'\r'), Just(b'E'), any::<u8>()], 0..24),
            error_prefix in any::<bool>(),
            raw in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut line = command.to_vec();
            line.extend_from_slice(&name);
            line.extend_from_slice(sep);
            if error_prefix {
                line.extend_from_slice(b"ERROR ");
            }
            line.extend_from_slice(&value);
            for limits in [Limits::default(), small()] {
                if let Some(fast) = parse_common(&line, &limits) {
                    proptest::prop_assert_eq!(Ok(Some(fast)), parse_general(&line, &limits));
                }
                if let Some(fast) = parse_common(&raw, &limits) {
                    proptest::prop_assert_eq!(Ok(Some(fast)), parse_general(&raw, &limits));
                }
            }
        }

        /// `check_value` passes exactly the values a STORE line stores as
        /// they are: a value from elsewhere that passes is one a client
        /// could have stored.
        #[test]
        fn check_value_passes_what_a_store_stores(
            value in proptest::collection::vec(prop_oneof![
                Just(b'v'), Just(b' '), Just(b'\t'), Just(0u8), Just(b'\r'), Just(b'\n'),
                Just(b'E'), any::<u8>()], 0..10),
            error_prefix in any::<bool>(),
        ) {
            let value = if error_prefix { [&b"ERROR "[..], &value].concat() } else { value };
            let line = [&b"STORE n "[..], &value].concat();
            for limits in [Limits::default(), small()] {
                let stored = matches!(parse(&line, &limits),
                    Ok(Some(Request::Store { value: v, .. })) if v == &value[..]);
                proptest::prop_assert_eq!(check_value(&value, &limits).is_ok(), stored);
            }
        }

        #[test]
        fn names_are_checked_like_byte_by_byte(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            proptest::prop_assert_eq!(
                has_name_forbidden(&bytes),
                bytes.iter().any(|&b| is_forbidden_in_name(b))
            );
        }

        #[test]
        fn arbitrary_bytes_never_panic(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&line, &Limits::default());
            let _ = parse(&line, &small());
        }

        #[test]
        fn arbitrary_token_soup_never_panics(
            words in proptest::collection::vec(
                prop_oneof![Just(b"STORE".to_vec()), Just(b"get".to_vec()), Just(b"EXISTS".to_vec()),
                            Just(b" ".to_vec()), Just(b"\t".to_vec()),
                            proptest::collection::vec(any::<u8>(), 0..8)],
                0..8)
        ) {
            let line = words.concat();
            let _ = parse(&line, &small());
        }

        #[test]
        fn parse_of_encode_is_identity(
            name in name_strategy(),
            value in value_strategy(),
            kind in 0u8..3
        ) {
            let req = match kind {
                0 => Request::Store { name: &name, value: &value },
                1 => Request::Exists { name: &name },
                _ => Request::Get { name: &name },
            };
            let mut out = BytesMut::new();
            req.encode(&mut out);
            prop_assert!(out.ends_with(b"\r\n"));
            let line = &out[..out.len() - 2];
            prop_assert_eq!(parse(line, &Limits::default()), Ok(Some(req)));
        }
    }
}
