//! owner-json: a jnhpd WebAssembly validator in Rust.
//!
//! Allows a STORE whose value is a JSON object with an `"owner"` member
//! that is a non-empty string, e.g. `{"owner":"alice","size":3}`; refuses
//! anything else (not JSON, not an object, no owner, an owner that is not
//! a string or is empty), and writes each refusal to jnhpd's log with the
//! client's address (and its certificate subject on a mutual-TLS
//! connection):
//!
//! ```text
//! refused "report-7" from 127.0.0.1:50412: the value has no "owner"
//! ```
//!
//! The interface (docs/wasm.md): jnhpd calls `jnhp_alloc` with the total
//! length of name, value, peer and subject, writes them back to back at
//! the address it answers, then calls `jnhp_check` with the four lengths;
//! 1 allows, 0 refuses. Built for `wasm32-unknown-unknown` with
//! `panic = "abort"`, the module's only import is `jnhp`.`log`: a panic
//! is a trap, which fails the STORE as `on_failure` says.

use std::sync::Mutex;

use serde_json::Value;

#[link(wasm_import_module = "jnhp")]
unsafe extern "C" {
    /// One line of jnhpd's log: the UTF-8 bytes at (address, length) of
    /// this module's memory.
    #[link_name = "log"]
    fn jnhp_log(ptr: *const u8, len: usize);
}

/// The STORE's bytes, written by jnhpd: one buffer, reused for every
/// STORE. jnhpd never calls a module from two threads at once, so the
/// lock is never contended; it only makes the static safe to share.
static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Answers the address of `len` writable bytes in memory.
#[unsafe(no_mangle)]
pub extern "C" fn jnhp_alloc(len: usize) -> *mut u8 {
    let mut buffer = BUFFER.lock().unwrap_or_else(|e| e.into_inner());
    buffer.clear();
    buffer.resize(len, 0);
    buffer.as_mut_ptr()
}

/// Judges the STORE jnhpd just wrote: 1 allows it, 0 refuses it.
#[unsafe(no_mangle)]
pub extern "C" fn jnhp_check(
    name_len: usize,
    value_len: usize,
    peer_len: usize,
    subject_len: usize,
) -> i32 {
    let buffer = BUFFER.lock().unwrap_or_else(|e| e.into_inner());
    // The four lengths add up to what jnhp_alloc was asked for; if they
    // did not, slicing panics, which is a trap: this STORE fails.
    let (name, rest) = buffer.split_at(name_len);
    let (value, rest) = rest.split_at(value_len);
    let (peer, rest) = rest.split_at(peer_len);
    let subject = &rest[..subject_len];
    match owner_problem(value) {
        None => 1,
        Some(why) => {
            let mut line = format!(
                "refused \"{}\" from {}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(peer)
            );
            if !subject.is_empty() {
                line += &format!(" ({})", String::from_utf8_lossy(subject));
            }
            line += ": ";
            line += why;
            // SAFETY: the import reads `line.len()` bytes at `line`'s
            // address, all inside this module's memory.
            unsafe { jnhp_log(line.as_ptr(), line.len()) };
            0
        }
    }
}

/// What is wrong with `value`, or None when it is a JSON object with a
/// non-empty string `"owner"`.
fn owner_problem(value: &[u8]) -> Option<&'static str> {
    let Ok(json) = serde_json::from_slice::<Value>(value) else {
        return Some("the value is not JSON");
    };
    let Value::Object(object) = json else {
        return Some("the value is not a JSON object");
    };
    match object.get("owner") {
        None => Some("the value has no \"owner\""),
        Some(Value::String(owner)) if !owner.is_empty() => None,
        Some(_) => Some("\"owner\" is not a non-empty string"),
    }
}
