//! `jnhp store NAME -`: the value from standard input.
//!
//! Read to its end but never more than the largest value any server may
//! accept (`Limits::WIDEST`) plus a line end, so `jnhp store x - </dev/zero`
//! stops with an error instead of filling memory. Exactly one trailing
//! line end is removed because `echo value | jnhp store x -` is how people
//! will call it, and `echo` adds one; a line break anywhere else could only
//! end the request early on the wire, so it is refused before connecting.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest value, in bytes, that any server may be configured to accept.
pub const MAX_VALUE_BYTES: usize = jnhp_wire::Limits::WIDEST.max_value_bytes;

/// Why a value from standard input cannot be sent.
#[derive(Debug, PartialEq, Eq)]
pub enum StdinValueError {
    TooLong,
    LineBreak,
    Read(String),
}

impl std::fmt::Display for StdinValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StdinValueError::TooLong => write!(
                f,
                "the value on standard input is longer than {MAX_VALUE_BYTES} bytes \
                 (16 MiB, the most any server accepts)"
            ),
            StdinValueError::LineBreak => write!(
                f,
                "the value on standard input holds a line break (CR or LF) before its end; \
                 a JNHP/1 value is one line"
            ),
            StdinValueError::Read(e) => write!(f, "reading standard input: {e}"),
        }
    }
}

/// Reads `input` to its end (bounded) and returns the value to store.
pub async fn read<R: AsyncRead + Unpin>(input: R) -> Result<Vec<u8>, StdinValueError> {
    // One byte past the value and a CRLF tells "too long" from "just fits".
    let cap = MAX_VALUE_BYTES + 3;
    let mut value = Vec::new();
    input
        .take(cap as u64)
        .read_to_end(&mut value)
        .await
        .map_err(|e| StdinValueError::Read(e.to_string()))?;
    if value.ends_with(b"\r\n") {
        value.truncate(value.len() - 2);
    } else if value.ends_with(b"\n") {
        value.truncate(value.len() - 1);
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(StdinValueError::TooLong);
    }
    if value.iter().any(|&b| b == b'\n' || b == b'\r') {
        return Err(StdinValueError::LineBreak);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn value(input: &[u8]) -> Result<Vec<u8>, StdinValueError> {
        read(input).await
    }

    #[tokio::test]
    async fn exactly_one_line_end_is_removed() {
        assert_eq!(value(b"hello\n").await.unwrap(), b"hello");
        assert_eq!(value(b"hello\r\n").await.unwrap(), b"hello");
        assert_eq!(value(b"hello").await.unwrap(), b"hello");
        assert_eq!(value(b"a b\tc").await.unwrap(), b"a b\tc");
        assert_eq!(value(b"hello\n\n").await, Err(StdinValueError::LineBreak));
        assert_eq!(value(b"hello\r").await, Err(StdinValueError::LineBreak));
        assert_eq!(value(b"a\nb\n").await, Err(StdinValueError::LineBreak));
        assert_eq!(value(b"a\rb").await, Err(StdinValueError::LineBreak));
    }

    #[tokio::test]
    async fn the_largest_value_fits_and_one_byte_more_does_not() {
        let mut input = vec![b'x'; MAX_VALUE_BYTES];
        assert_eq!(value(&input).await.unwrap().len(), MAX_VALUE_BYTES);
        input.extend_from_slice(b"\r\n");
        assert_eq!(value(&input).await.unwrap().len(), MAX_VALUE_BYTES);
        input.truncate(MAX_VALUE_BYTES);
        input.push(b'x');
        assert_eq!(value(&input).await, Err(StdinValueError::TooLong));
    }

    #[tokio::test]
    async fn an_endless_input_is_cut_at_the_bound() {
        let endless = tokio::io::repeat(b'z');
        assert_eq!(read(endless).await, Err(StdinValueError::TooLong));
    }
}
