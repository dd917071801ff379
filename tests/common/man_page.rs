//! Reading a man page the binaries wrote (`--write-man-pages`): its
//! sections and the pages it refers to, for jnhpd(8) (tests/packaging.rs)
//! and jnhp(1) (crates/jnhp/tests/man_page.rs, which includes this file by
//! path).

use std::path::Path;

/// The sections of a man page, and every `name(section)` it refers to.
pub fn read(path: &Path) -> (Vec<String>, Vec<String>) {
    let roff = std::fs::read_to_string(path).unwrap();
    let sections = roff
        .lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .map(|s| s.trim_matches('"').to_string())
        .collect();
    // Font changes and escaped hyphens out: `\fBjnhp\fR(1)`, `jnhp\-store(1)`,
    // `.BR jnhp (1)`.
    let text = roff
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\-", "-")
        .replace(".BR ", "")
        .replace(" (", "(");
    let mut references = Vec::new();
    for (at, _) in text.match_indices('(') {
        let digit = text[at + 1..].chars().next();
        if !(digit.is_some_and(|d| d.is_ascii_digit()) && text[at + 2..].starts_with(')')) {
            continue;
        }
        let start = text[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
            .map_or(0, |i| i + 1);
        if start < at {
            references.push(text[start..at + 3].to_string());
        }
    }
    (sections, references)
}
