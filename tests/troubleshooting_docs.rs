//! Every `ERROR` reply jnhpd can send is explained in
//! docs/troubleshooting.md, each in a table row of its own: the reply texts are gathered from the source
//! (the wire crate's protocol errors, and the server-side reasons the
//! daemon hands to `Reply::ServerError`), so a new reply cannot land
//! without its entry.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use regex::Regex;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `.rs` files under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path, text));
        }
    }
}

/// A file's text without its `#[cfg(test)]` module (by convention the
/// last item of a file here), so test fixtures are not taken for replies.
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// The reason texts (what follows `ERROR `) the code can send. A reason
/// built with `format!` is taken up to its first placeholder
/// (`storage: cannot {action}: …` → `storage: cannot`).
fn reasons_in_source() -> BTreeSet<String> {
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    sources(&root().join("crates/jnhp-wire/src"), &mut files);

    // The wire crate's protocol errors: their `Display` is the reason.
    let protocol = Regex::new(r#"#\[error\("([^"]+)"\)\]"#).unwrap();
    // Server-side reasons written in place, or named by a constant.
    let literal = Regex::new(r#"ServerError\("([^"]+)"\)"#).unwrap();
    let named = Regex::new(
        r"(?:ServerError|Unservable)\(([A-Z][A-Z0-9_]*)\)|(?:Failed|Err)\(([A-Z][A-Z0-9_]*)\.into\(\)\)",
    )
    .unwrap();
    let constant = Regex::new(r#"const ([A-Z][A-Z0-9_]*): &str = "([^"]+)";"#).unwrap();
    // Storage failures: "storage: …" strings (a data file that cannot take a
    // STORE; the backend gone).
    let storage = Regex::new(r#""(storage: [^"{]*)"#).unwrap();

    let mut reasons = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut constants = std::collections::BTreeMap::new();
    for (path, text) in &files {
        let text = without_tests(text);
        if path.ends_with("crates/jnhp-wire/src/lib.rs") {
            for c in protocol.captures_iter(text) {
                // Up to a placeholder: `storage: cannot {action}: …`.
                let reason = c[1].split('{').next().unwrap_or_default();
                reasons.insert(reason.trim_end().to_string());
            }
        }
        for c in literal.captures_iter(text) {
            reasons.insert(c[1].to_string());
        }
        for c in named.captures_iter(text) {
            names.insert(c.get(1).or(c.get(2)).unwrap().as_str().to_string());
        }
        for c in constant.captures_iter(text) {
            constants.insert(c[1].to_string(), c[2].to_string());
        }
        for c in storage.captures_iter(text) {
            reasons.insert(c[1].trim_end().to_string());
        }
    }
    for name in names {
        let text = constants
            .get(&name)
            .unwrap_or_else(|| panic!("reply reason {name}: no `const {name}: &str` found"));
        reasons.insert(text.clone());
    }
    reasons
}

#[test]
fn every_error_reply_is_in_troubleshooting() {
    let reasons = reasons_in_source();
    // The extraction itself must keep working: the ten protocol errors and
    // the server's own (shutting down, too many connections, storage
    // unavailable, unservable value, the data file's failures) at least.
    for known in [
        "unknown command",
        "line too long",
        "shutting down",
        "too many connections",
        "storage unavailable",
        "unservable value in storage",
        "storage: cannot",
    ] {
        assert!(
            reasons.contains(known),
            "the source scan no longer finds `ERROR {known}`: fix the scan ({reasons:?})"
        );
    }
    assert!(reasons.len() >= 15, "{reasons:?}");

    // An entry is a table row of its own, its first cell the reply:
    // "| `ERROR <reason>` | what it means | what to do |".
    let page = std::fs::read_to_string(root().join("docs/troubleshooting.md")).unwrap();
    let entries: Vec<&str> = page
        .lines()
        .filter_map(|line| line.strip_prefix("| `ERROR "))
        .collect();
    let missing: Vec<_> = reasons
        .iter()
        .filter(|reason| {
            !entries
                .iter()
                .any(|entry| entry.starts_with(reason.as_str()))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md does not explain these replies: {missing:?}"
    );
}
