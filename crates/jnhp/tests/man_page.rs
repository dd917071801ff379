//! jnhp(1) has the sections a user looks for, and names no page the
//! package does not ship (clap_mangen's own rendering named one page per
//! command, `jnhp-store(1)` and so on, none of which exists).

use std::process::Command;

#[path = "../../../tests/common/man_page.rs"]
mod man_page;

#[test]
fn the_man_page_has_its_sections_and_names_only_shipped_pages() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("man-page");
    let status = Command::new(env!("CARGO_BIN_EXE_jnhp"))
        .arg("--write-man-pages")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let (sections, references) = man_page::read(&dir.join("jnhp.1"));
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
        assert!(
            sections.iter().any(|s| s == wanted),
            "no {wanted} in {sections:?}"
        );
    }
    assert!(references.iter().any(|r| r == "jnhpd(8)"), "{references:?}");
    for reference in references {
        assert!(
            ["jnhpd(8)", "jnhp(1)"].contains(&reference.as_str()),
            "jnhp.1 names {reference}, which the package does not ship"
        );
    }
}
