//! A new user's view of `jnhp`: found by the fresh-machine and docs review
//! (issue 24, items 6 and 7).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::{Server, admin_addr};

/// jnhp(1) as the .deb ships it: the sections issue 24 asks for, and no
/// reference to a page the package does not ship (clap_mangen's own
/// SUBCOMMANDS section named jnhp-store(1) ... jnhp-help(1)).
#[test]
fn the_jnhp_man_page_has_its_sections_and_names_only_shipped_pages() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_jnhp"))
        .arg("--write-man-pages")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let roff = std::fs::read_to_string(dir.path().join("jnhp.1")).unwrap();
    let text = roff
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\-", "-");
    for section in [
        "SYNOPSIS",
        "COMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "SIGNALS",
        "SEE ALSO",
    ] {
        assert!(
            text.contains(&format!(".SH {section}\n")),
            "no {section}:\n{text}"
        );
    }
    assert!(text.contains("JNHP_ADDR") && text.contains("JNHP_ADMIN_ADDR"));
    for (i, _) in text.match_indices("(1)").chain(text.match_indices("(8)")) {
        let start = text[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .map_or(0, |p| p + 1);
        let page = &text[start..i + 3];
        assert!(
            page == "jnhp(1)" || page == "jnhpd(8)" || start == i,
            "jnhp.1 names {page}, which the package does not ship"
        );
    }
}

/// `jnhp stats` took the admin listener from `JNHP_ADMIN_ADDR`, `jnhp
/// names` did not: with only the variable set, `names` went to
/// 127.0.0.1:9111 and failed (or listed another jnhpd's names).
#[test]
fn jnhp_names_takes_the_admin_listener_from_jnhp_admin_addr() {
    let server = Server::start(
        "[storage]\npath = \"data\"\nfsync = \"always\"\n\
         [admin]\nlisten = [\"127.0.0.1:0\"]\nlist_names = true\n",
    );
    let mut c = server.connect();
    assert_eq!(c.ask("STORE from-the-environment v"), "W00T!");
    let out = Command::new(env!("CARGO_BIN_EXE_jnhp"))
        .arg("names")
        .env("JNHP_ADMIN_ADDR", admin_addr(&server).to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(out.stdout, b"from-the-environment\n", "{err}");
}
