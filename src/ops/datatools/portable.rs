//! The portable encoding of a record (export, import, listing): one JSON
//! object per line. A name or value that is valid UTF-8 is a JSON string
//! under `"name"`/`"value"`; otherwise it is standard padded base64
//! under `"name_base64"`/`"value_base64"`. Lossless for every byte
//! string, and readable where the data is text.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Appends the line for (name, value), line end included, to `out`.
pub fn encode_line(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(b'{');
    field(out, "name", name);
    out.push(b',');
    field(out, "value", value);
    out.extend_from_slice(b"}\n");
}

/// Appends the line for a name alone (`GET /names`), line end included.
pub fn encode_name_line(name: &[u8], out: &mut Vec<u8>) {
    out.push(b'{');
    field(out, "name", name);
    out.extend_from_slice(b"}\n");
}

fn field(out: &mut Vec<u8>, key: &str, bytes: &[u8]) {
    // Writing JSON into a Vec cannot fail: serde_json's only errors here
    // would be the writer's, and a Vec's writes always succeed.
    let string = |out: &mut Vec<u8>, s: &str| {
        let _ = serde_json::to_writer(&mut *out, s);
    };
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            string(out, key);
            out.push(b':');
            string(out, text);
        }
        Err(_) => {
            string(out, &format!("{key}_base64"));
            out.push(b':');
            string(out, &STANDARD.encode(bytes));
        }
    }
}

#[derive(serde::Deserialize)]
struct Line {
    name: Option<String>,
    name_base64: Option<String>,
    value: Option<String>,
    value_base64: Option<String>,
}

/// Decodes one line (without or with its line end) into (name, value);
/// `Err` says what is wrong, for a message naming the line. Other keys
/// are ignored.
pub fn decode_line(line: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let line: Line = serde_json::from_slice(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let name = one_of("name", line.name, line.name_base64)?;
    let value = one_of("value", line.value, line.value_base64)?;
    Ok((name, value))
}

fn one_of(key: &str, text: Option<String>, base64: Option<String>) -> Result<Vec<u8>, String> {
    match (text, base64) {
        (Some(text), None) => Ok(text.into_bytes()),
        (None, Some(encoded)) => STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| format!("\"{key}_base64\" is not padded standard base64: {e}")),
        (None, None) => Err(format!("no \"{key}\" or \"{key}_base64\"")),
        (Some(_), Some(_)) => Err(format!("both \"{key}\" and \"{key}_base64\"")),
    }
}

/// The longest line a record within limits of `max_name` and `max_value`
/// bytes can need: JSON escapes a byte as at most six (`\u001f`), base64
/// as 4/3; plus the keys and punctuation.
pub fn max_line_len(max_name: usize, max_value: usize) -> usize {
    6 * (max_name + max_value) + 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_byte_string() {
        let all: Vec<u8> = (0..=255).collect();
        for (name, value) in [
            (&b"plain"[..], &b"text \xc3\xa9 \"quoted\" \\ \t"[..]),
            (&b"\xff\xfe"[..], &all[..]),
        ] {
            let mut line = Vec::new();
            encode_line(name, value, &mut line);
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            assert!(line.len() <= max_line_len(name.len(), value.len()));
            assert_eq!(decode_line(&line).unwrap(), (name.to_vec(), value.to_vec()));
        }
        let mut line = Vec::new();
        encode_line(b"n", b"v", &mut line);
        assert_eq!(line, b"{\"name\":\"n\",\"value\":\"v\"}\n");
        let mut line = Vec::new();
        encode_line(b"\x80", b"v", &mut line);
        assert_eq!(line, b"{\"name_base64\":\"gA==\",\"value\":\"v\"}\n");
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(
            decode_line(b"{\"name\":\"a\"}")
                .unwrap_err()
                .contains("no \"value\"")
        );
        assert!(decode_line(b"[1]").is_err());
        assert!(
            decode_line(b"{\"name\":\"a\",\"name_base64\":\"YQ==\",\"value\":\"v\"}")
                .unwrap_err()
                .contains("both")
        );
        assert!(decode_line(b"{\"name_base64\":\"!!\",\"value\":\"v\"}").is_err());
        assert_eq!(
            decode_line(b"{\"name\":\"a\",\"value\":\"b\"}\r\n").unwrap(),
            (b"a".to_vec(), b"b".to_vec())
        );
    }
}
