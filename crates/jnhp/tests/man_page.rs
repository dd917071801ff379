//! jnhp(1) has the sections a user looks for, and names no page the
//! package does not ship (clap_mangen's own rendering named one page per
//! command, `jnhp-store(1)` and so on, none of which exists).

use std::process::Command;

#[test]
fn the_man_page_has_its_sections_and_names_only_shipped_pages() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("man-page");
    let status = Command::new(env!("CARGO_BIN_EXE_jnhp"))
        .arg("--write-man-pages")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let roff = std::fs::read_to_string(dir.join("jnhp.1")).unwrap();
    let sections: Vec<_> = roff
        .lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .map(|s| s.trim_matches('"'))
        .collect();
    for wanted in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "COMMANDS",
        "FILES",
        "ENVIRONMENT",
        "EXIT STATUS",
        "SEE ALSO",
    ] {
        assert!(sections.contains(&wanted), "no {wanted} in {sections:?}");
    }
    // Font changes and escaped hyphens out: `jnhp\-store(1)`, `.BR jnhpd (8)`.
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
    assert!(references.iter().any(|r| r == "jnhpd(8)"), "{references:?}");
    for reference in references {
        assert!(
            ["jnhpd(8)", "jnhp(1)"].contains(&reference.as_str()),
            "jnhp.1 names {reference}, which the package does not ship"
        );
    }
}
