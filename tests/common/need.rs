//! What a test needs beyond Rust and a C compiler, checked in one place.
//!
//! `cargo test` must pass on a fresh machine (the README's second
//! command), so a test that needs PostgreSQL, root, a browser, another
//! outside tool or an IPv6 loopback starts with `require!(Postgres)` (or `Root`, `Chromium`,
//! ...): where the need is unmet it prints one line saying why and returns
//! (passes). Under `CI=true` an unmet need fails the test instead, so CI,
//! which installs everything (`.ci/run`), still runs every test.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Something outside Rust and a C compiler that a test uses.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// PostgreSQL's server binaries under /usr/lib/postgresql/*/bin, and
    /// root to run them as the postgres user (runuser, chown).
    Postgres,
    /// Root: privileged ports, dropping privileges, other users' files.
    Root,
    /// `chromium` on PATH (the status page, rendered).
    Chromium,
    /// `promtool` on PATH (Prometheus's format and rule checker).
    Promtool,
    /// `python3` on PATH (the example validators, scripted helpers).
    Python3,
    /// `openssl` on PATH (a TLS client nobody here wrote).
    Openssl,
    /// `socat` on PATH (another TLS client).
    Socat,
    /// An IPv6 loopback address (`::1`) to listen on: containers and
    /// hosts with IPv6 turned off have none.
    Ipv6,
    /// `pg_autoctl` on PATH (pg_auto_failover, a failover manager), with
    /// PostgreSQL and root as for `Postgres`.
    AutoFailover,
}

/// The newest installed PostgreSQL server's binary directory
/// (`/usr/lib/postgresql/<version>/bin` holding `postgres`), if any.
pub fn postgres_bindir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            is_executable(&bin.join("postgres")).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether `program` is an executable file in a directory on PATH (what
/// `Command::new(program)` and `#!/usr/bin/env program` will find).
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program))))
        .unwrap_or(false)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn tool(program: &str, package: &str) -> Option<String> {
    (!on_path(program)).then(|| {
        format!("needs {program} (not on PATH); install Debian's {package} package or run in CI")
    })
}

/// Why `need` is unmet on this machine, or None when it is met.
pub fn unmet(need: Need) -> Option<String> {
    match need {
        Need::Postgres => {
            if postgres_bindir().is_none() {
                Some(
                    "needs PostgreSQL (no /usr/lib/postgresql/*/bin/postgres); \
                     install postgresql or run in CI"
                        .into(),
                )
            } else if !is_root() {
                Some(
                    "needs root (PostgreSQL is started as the postgres user with runuser); \
                     run as root or in CI"
                        .into(),
                )
            } else {
                None
            }
        }
        Need::Root => (!is_root()).then(|| "needs root; run as root or in CI".into()),
        Need::Chromium => tool("chromium", "chromium"),
        Need::Promtool => tool("promtool", "prometheus"),
        Need::Python3 => tool("python3", "python3"),
        Need::Openssl => tool("openssl", "openssl"),
        Need::Socat => tool("socat", "socat"),
        Need::Ipv6 => std::net::TcpListener::bind("[::1]:0")
            .is_err()
            .then(|| "needs an IPv6 loopback (::1); enable IPv6 or run in CI".into()),
        Need::AutoFailover => unmet(Need::Postgres).or_else(|| {
            tool(
                "pg_autoctl",
                "pg-auto-failover-cli and postgresql-<version>-auto-failover",
            )
        }),
    }
}

/// Whether this is CI (`CI=true`), where every test must run.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The check `require!` runs: None when every need is met; otherwise the
/// skip line, already printed. Under `CI=true` it panics instead.
pub fn skip_line(needs: &[Need]) -> Option<String> {
    let why = needs.iter().find_map(|need| unmet(*need))?;
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    let line = format!("{test}: skipped: {why}");
    assert!(
        !in_ci(),
        "{test}: {why} — CI=true, where every test must run (.ci/run installs what they need)"
    );
    // Straight to the file descriptor: the test harness captures print!
    // and eprint! of passing tests, and this line is for the person
    // running `cargo test`.
    let _ = writeln!(std::io::stderr(), "{line}");
    Some(line)
}

/// `require!(Postgres)`, `require!(Python3, Openssl)`: at the top of a
/// test, returns (skips the test, with one line saying why) unless every
/// need is met; fails the test instead under `CI=true`.
#[macro_export]
macro_rules! require {
    ($($need:ident),+ $(,)?) => {
        if $crate::common::need::skip_line(&[$($crate::common::need::Need::$need),+]).is_some() {
            return;
        }
    };
}
