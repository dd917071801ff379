//! The packaged config (`config/jnhp.toml`, the .deb's `/etc/jnhp.toml`)
//! keeps what it acknowledged: run as shipped, with only its absolute paths
//! moved into a scratch directory and its ports made free ones, every
//! stored name is found again after a restart (SIGTERM) and after a crash
//! (SIGKILL).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, run_to_exit};
use nix::sys::signal::Signal;

const PACKAGED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/jnhp.toml");

/// Where the package keeps state: the unit's `StateDirectory=jnhpd`.
const STATE_DIR: &str = "/var/lib/jnhpd/";

/// The packaged config with every path under [`STATE_DIR`] moved to
/// `scratch` and every listener on a free port. Anything else stays as
/// shipped, so what the test runs is what an install runs.
fn packaged_in(scratch: &Path) -> String {
    let text = std::fs::read_to_string(PACKAGED).unwrap();
    let mut config: toml::Table = text.parse().unwrap();
    fn relocate(value: &mut toml::Value, scratch: &Path) {
        match value {
            toml::Value::String(s) => {
                if let Some(rest) = s.strip_prefix(STATE_DIR) {
                    *s = scratch.join(rest).display().to_string();
                }
            }
            toml::Value::Array(items) => items.iter_mut().for_each(|v| relocate(v, scratch)),
            toml::Value::Table(table) => table.iter_mut().for_each(|(_, v)| relocate(v, scratch)),
            _ => {}
        }
    }
    for (_, value) in config.iter_mut() {
        relocate(value, scratch);
    }
    for section in ["server", "admin"] {
        if let Some(toml::Value::Table(table)) = config.get_mut(section)
            && let Some(toml::Value::Array(listen)) = table.get_mut("listen")
            && !listen.is_empty()
        {
            *listen = vec![toml::Value::String("127.0.0.1:0".into())];
        }
    }
    toml::to_string(&config).unwrap()
}

/// Starts jnhpd on `config` (written to `scratch/jnhp.toml`); the data
/// stays in `scratch` across restarts.
fn start(scratch: &Path, config: &str) -> Server {
    let path = scratch.join("jnhp.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config").arg(&path);
    Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(path))
}

fn name(i: usize) -> String {
    format!("pkg:{i:04}")
}

fn value(i: usize) -> String {
    format!("value {i} with spaces and {}", "x".repeat(i % 300))
}

const NAMES: usize = 500;

/// Stores [`NAMES`] names, pipelined, and checks each was acknowledged.
fn store_all(server: &Server) {
    let mut client = server.connect();
    let mut burst = String::new();
    for i in 0..NAMES {
        burst.push_str(&format!("STORE {} {}\r\n", name(i), value(i)));
    }
    client.send(burst.as_bytes());
    for i in 0..NAMES {
        assert_eq!(client.reply(), "W00T!", "STORE {}", name(i));
    }
}

/// Every name is back with its value, and nothing can overwrite it.
fn find_all(server: &Server) {
    let mut client = server.connect();
    for i in 0..NAMES {
        assert_eq!(
            client.ask(&format!("GET {}", name(i))),
            value(i),
            "{} lost across the restart (the packaged config must keep data)",
            name(i)
        );
    }
    assert_eq!(client.ask(&format!("STORE {} other", name(0))), "RARGH!");
}

fn restart_keeps_every_name(signal: Signal) {
    let scratch = tempfile::tempdir().unwrap();
    let config = packaged_in(scratch.path());
    let mut server = start(scratch.path(), &config);
    store_all(&server);
    server.signal(signal);
    let status = server.wait_exit();
    if signal == Signal::SIGTERM {
        assert_eq!(status.code(), Some(0), "{}", server.log.all());
    }
    let server = start(scratch.path(), &config);
    find_all(&server);
}

#[test]
fn the_packaged_config_keeps_every_name_across_a_restart() {
    restart_keeps_every_name(Signal::SIGTERM);
}

#[test]
fn the_packaged_config_keeps_every_acknowledged_name_across_a_crash() {
    restart_keeps_every_name(Signal::SIGKILL);
}

/// What the two tests above rely on, said outright: the package stores in
/// the unit's state directory and acknowledges only what is on disk.
#[test]
fn the_packaged_config_stores_in_the_state_directory_with_fsync_always() {
    let config: toml::Table = std::fs::read_to_string(PACKAGED).unwrap().parse().unwrap();
    let storage = config["storage"].as_table().unwrap();
    assert_eq!(storage["backend"].as_str(), Some("local"));
    assert_eq!(storage["path"].as_str(), Some("/var/lib/jnhpd/data"));
    assert_eq!(storage["fsync"].as_str(), Some("always"));
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/jnhpd.service"
    ))
    .unwrap();
    for line in ["StateDirectory=jnhpd", "DynamicUser=yes"] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "jnhpd.service lacks {line}"
        );
    }
}

#[test]
fn the_packaged_config_is_valid() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("jnhp.toml");
    std::fs::write(&path, packaged_in(scratch.path())).unwrap();
    let (code, out) = run_to_exit(
        &["--check-config", "--config", path.to_str().unwrap()],
        scratch.path(),
    );
    assert_eq!(code, 0, "{out}");
}

/// jnhpd(8) has the sections an operator looks for, and names no page the
/// package does not ship (clap_mangen's own rendering named one page per
/// subcommand, `jnhpd-data(8)`, none of which exists).
#[test]
fn the_man_page_has_the_operator_sections_and_names_only_shipped_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = run_to_exit(
        &["--write-man-pages", dir.path().to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    let (sections, references) = common::man_page::read(&dir.path().join("jnhpd.8"));
    for wanted in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "FILES",
        "ENVIRONMENT",
        "SIGNALS",
        "EXIT STATUS",
        "SEE ALSO",
    ] {
        assert!(
            sections.iter().any(|s| s == wanted),
            "no {wanted} in {sections:?}"
        );
    }
    assert!(references.iter().any(|r| r == "jnhp(1)"), "{references:?}");
    for reference in references {
        assert!(
            ["jnhpd(8)", "jnhp(1)"].contains(&reference.as_str()),
            "jnhpd.8 names {reference}, which the package does not ship"
        );
    }
}
