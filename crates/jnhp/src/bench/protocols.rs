//! The three protocols the workload is spoken in: encoding a request and
//! checking its reply.

use jnhp_wire::{Reply, Request};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Jnhp,
    Resp,
    Memcache,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Store,
    Exists,
    Get,
}

/// What a request's reply must be.
#[derive(Debug, Clone)]
pub(super) enum Expect {
    /// Stored (a unique STORE).
    Stored,
    /// Stored or not (a STORE of a prefilled name: not, but no matter).
    StoredOrNot,
    Present,
    /// The value of prefilled name `i` (see [`Table`]).
    Value(u64),
}

/// Every request and value of the key space, encoded once and shared by
/// all connections, so the generator spends its time on the wire, not on
/// formatting.
pub(super) struct Table {
    pub(super) protocol: Protocol,
    /// `requests[op][i]`: the encoded request of `op` for prefilled name `i`.
    pub(super) requests: [Vec<Vec<u8>>; 3],
    pub(super) values: Vec<Vec<u8>>,
}

impl Table {
    pub(super) fn new(protocol: Protocol, keys: u64, value_size: usize) -> Table {
        let values: Vec<Vec<u8>> = (0..keys).map(|i| value_for(i, value_size)).collect();
        let requests = [Op::Store, Op::Exists, Op::Get].map(|op| {
            (0..keys)
                .map(|i| {
                    let mut out = Vec::new();
                    encode(protocol, op, &key(i), &values[i as usize], &mut out);
                    out
                })
                .collect()
        });
        Table {
            protocol,
            requests,
            values,
        }
    }

    /// Appends the reply `expect` most likely gets, as each server writes
    /// it (a STORE of a prefilled name finds it there). Any other form
    /// [`take_reply`] accepts is right too.
    pub(super) fn likely_reply(&self, expect: &Expect, out: &mut Vec<u8>) {
        let value = |i: &u64| &self.values[*i as usize][..];
        match (self.protocol, expect) {
            (Protocol::Jnhp, Expect::Stored) => Reply::Stored.encode(out),
            (Protocol::Jnhp, Expect::StoredOrNot) => Reply::Rargh.encode(out),
            (Protocol::Jnhp, Expect::Present) => Reply::Awesome.encode(out),
            (Protocol::Jnhp, Expect::Value(i)) => Reply::Value(value(i)).encode(out),
            (Protocol::Resp, Expect::Stored | Expect::Present) => out.extend_from_slice(b":1\r\n"),
            (Protocol::Resp, Expect::StoredOrNot) => out.extend_from_slice(b":0\r\n"),
            (Protocol::Resp, Expect::Value(i)) => {
                out.extend_from_slice(format!("${}\r\n", value(i).len()).as_bytes());
                out.extend_from_slice(value(i));
                out.extend_from_slice(b"\r\n");
            }
            (Protocol::Memcache, Expect::Stored) => out.extend_from_slice(b"STORED\r\n"),
            (Protocol::Memcache, Expect::StoredOrNot) => out.extend_from_slice(b"NOT_STORED\r\n"),
            (Protocol::Memcache, Expect::Present) => out.extend_from_slice(b"HD\r\n"),
            (Protocol::Memcache, Expect::Value(i)) => {
                let header = format!("VALUE {} 0 {}\r\n", key(*i), value(i).len());
                out.extend_from_slice(header.as_bytes());
                out.extend_from_slice(value(i));
                out.extend_from_slice(b"\r\nEND\r\n");
            }
        }
    }
}

/// Connection `conn`'s random state: its own stream, never zero (xorshift
/// stays at zero). Wrapping: with eight connections or more the product
/// passes 2^64, which a debug build would stop on.
pub(super) fn seed(conn: usize) -> u64 {
    0x9E37_79B9_7F4A_7C15 ^ (conn as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// The value stored under prefilled name `i`.
pub(super) fn value_for(i: u64, size: usize) -> Vec<u8> {
    let mut v = format!("v{i}-").into_bytes();
    v.resize(size.max(v.len()), b'x');
    v.truncate(size.max(1));
    v
}

pub(super) fn key(i: u64) -> String {
    format!("key:{i:010}")
}

pub(super) fn encode(protocol: Protocol, op: Op, name: &str, value: &[u8], out: &mut Vec<u8>) {
    match (protocol, op) {
        (Protocol::Jnhp, Op::Store) => Request::Store {
            name: name.as_bytes(),
            value,
        }
        .encode(out),
        (Protocol::Jnhp, Op::Exists) => Request::Exists {
            name: name.as_bytes(),
        }
        .encode(out),
        (Protocol::Jnhp, Op::Get) => Request::Get {
            name: name.as_bytes(),
        }
        .encode(out),
        (Protocol::Resp, Op::Store) => {
            out.extend_from_slice(
                format!(
                    "*3\r\n$5\r\nSETNX\r\n${}\r\n{name}\r\n${}\r\n",
                    name.len(),
                    value.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        (Protocol::Resp, Op::Exists) => out.extend_from_slice(
            format!("*2\r\n$6\r\nEXISTS\r\n${}\r\n{name}\r\n", name.len()).as_bytes(),
        ),
        (Protocol::Resp, Op::Get) => out.extend_from_slice(
            format!("*2\r\n$3\r\nGET\r\n${}\r\n{name}\r\n", name.len()).as_bytes(),
        ),
        (Protocol::Memcache, Op::Store) => {
            out.extend_from_slice(format!("add {name} 0 0 {}\r\n", value.len()).as_bytes());
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        (Protocol::Memcache, Op::Exists) => {
            out.extend_from_slice(format!("mg {name}\r\n").as_bytes())
        }
        (Protocol::Memcache, Op::Get) => {
            out.extend_from_slice(format!("get {name}\r\n").as_bytes())
        }
    }
}

/// Splits one whole reply off the front of `buf`, if it holds one:
/// (its length in bytes, whether it matches `expect`).
pub(super) fn take_reply(
    protocol: Protocol,
    op: Op,
    expect: &Expect,
    values: &[Vec<u8>],
    buf: &[u8],
) -> Option<(usize, bool)> {
    let value = |i: &u64| &values[*i as usize][..];
    // Where the first line's CRLF starts (a line ends at the first LF that
    // follows a CR).
    let first = {
        let mut from = 0;
        loop {
            let lf = from + memchr::memchr(b'\n', &buf[from..])?;
            if lf > 0 && buf[lf - 1] == b'\r' {
                break lf - 1;
            }
            from = lf + 1;
        }
    };
    let line = &buf[..first];
    let after_line = first + 2;
    match protocol {
        Protocol::Jnhp => {
            let ok = match expect {
                Expect::Stored => line == b"W00T!",
                Expect::StoredOrNot => line == b"W00T!" || line == b"RARGH!",
                Expect::Present => line == b"AWESOME!",
                Expect::Value(i) => line == value(i),
            };
            Some((after_line, ok))
        }
        Protocol::Resp => {
            if let Some(len) = line.strip_prefix(b"$") {
                let len: i64 = std::str::from_utf8(len).ok()?.parse().ok()?;
                if len < 0 {
                    return Some((after_line, false));
                }
                let end = after_line + len as usize;
                if buf.len() < end + 2 {
                    return None;
                }
                let ok = matches!(expect, Expect::Value(i) if buf[after_line..end] == *value(i));
                return Some((end + 2, ok));
            }
            let ok = match expect {
                Expect::Stored => line == b":1",
                Expect::StoredOrNot => line == b":1" || line == b":0",
                Expect::Present => line == b":1",
                Expect::Value(_) => false,
            };
            Some((after_line, ok))
        }
        Protocol::Memcache => {
            if op == Op::Get && line.starts_with(b"VALUE ") {
                let len: usize = std::str::from_utf8(line.rsplit(|&b| b == b' ').next()?)
                    .ok()?
                    .parse()
                    .ok()?;
                let end = after_line + len;
                // value, CRLF, "END" CRLF
                if buf.len() < end + 7 {
                    return None;
                }
                let ok = matches!(expect, Expect::Value(i) if buf[after_line..end] == *value(i))
                    && &buf[end..end + 7] == b"\r\nEND\r\n";
                return Some((end + 7, ok));
            }
            let ok = match expect {
                Expect::Stored => line == b"STORED",
                Expect::StoredOrNot => line == b"STORED" || line == b"NOT_STORED",
                Expect::Present => line == b"HD",
                Expect::Value(_) => false,
            };
            Some((after_line, ok))
        }
    }
}
