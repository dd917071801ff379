//! The repository is the whole product: every link in the README and in
//! docs/ resolves inside it (files and #anchors), and nothing points
//! outside it.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md"), root().join("fuzz/README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    pages
}

/// `[text](target)` links of a Markdown page (outside code blocks).
fn links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            links.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    links
}

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(page: &Path) -> Vec<String> {
    std::fs::read_to_string(page)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn every_link_resolves_inside_the_repository() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        assert!(
            !text.contains(concat!("..", "/shared")),
            "{} points outside the repository",
            page.display()
        );
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (file, anchor) = match link.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (link.as_str(), None),
            };
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            let inside = target
                .canonicalize()
                .is_ok_and(|t| t.starts_with(root().canonicalize().unwrap()));
            if !inside {
                broken.push(format!("{}: {link}", page.display()));
                continue;
            }
            if let Some(anchor) = anchor
                && !anchors(&target).contains(&anchor.to_string())
            {
                broken.push(format!("{}: {link} (no such heading)", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_starts_with_the_two_commands() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let head: Vec<&str> = readme.lines().take(6).collect();
    assert!(
        head.iter().any(|l| l.starts_with("cargo run --release")),
        "{head:?}"
    );
    assert!(head.iter().any(|l| l.starts_with("cargo test")), "{head:?}");
    assert!(
        readme.lines().count() <= 200,
        "the README is what a newcomer reads first: keep it short"
    );
}
