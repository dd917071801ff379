//! What the WebAssembly validator tests share: modules in the text form
//! around jnhpd's interface, a `kind = "wasm"` table, a server started
//! beside its module files, and the validator's figures.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use crate::common::{Server, metrics, run_to_exit};

pub const ADMIN: &str = "[admin]\nlisten = [\"127.0.0.1:0\"]\n";

/// A module with the log import, one page of memory exported, `alloc`
/// as the body of `jnhp_alloc` (its parameter is `$len`) and `check` as
/// the body of `jnhp_check` (`$n`, `$v`, `$p`, `$s`).
pub fn module_with(alloc: &str, check: &str, extra: &str) -> String {
    format!(
        r#"(module
  (import "jnhp" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  {extra}
  (func (export "jnhp_alloc") (param $len i32) (result i32) {alloc})
  (func (export "jnhp_check") (param $n i32) (param $v i32) (param $p i32) (param $s i32) (result i32)
    {check}))"#
    )
}

/// The STORE written at 1024.
pub fn module(check: &str, extra: &str) -> String {
    module_with("i32.const 1024", check, extra)
}

pub fn endless() -> String {
    module("(loop $spin (br $spin)) i32.const 1", "")
}

pub fn wasm_table(file: &str, extra: &str) -> String {
    format!("[[validator]]\nkind = \"wasm\"\nname = \"w\"\nmodule = \"{file}\"\n{extra}\n")
}

/// Starts jnhpd with `files` (name, content) in its directory.
pub fn start(files: &[(&str, &str)], config: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    Server::start_in(dir, config)
}

pub fn metric(admin: SocketAddr, key: &str) -> f64 {
    metrics(admin).get(key).copied().unwrap_or(-1.0)
}

pub fn wm(admin: SocketAddr, family: &str, label: &str) -> f64 {
    let key = if label.is_empty() {
        format!("{family}{{validator=\"w\"}}")
    } else {
        format!("{family}{{validator=\"w\",{label}}}")
    };
    metric(admin, &key)
}

pub fn failures(admin: SocketAddr, cause: &str) -> f64 {
    wm(
        admin,
        "jnhpd_validator_failures_total",
        &format!("cause=\"{cause}\""),
    )
}

pub fn verdicts(admin: SocketAddr, verdict: &str) -> f64 {
    wm(
        admin,
        "jnhpd_validator_verdicts_total",
        &format!("verdict=\"{verdict}\""),
    )
}

/// The CPU time (user + system, in clock ticks) `pid` has used.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// `jnhpd --check-config` on `config` in `dir`: (exit code, output).
pub fn check_config(dir: &Path, config: &str) -> (i32, String) {
    let path = dir.join("jnhp.toml");
    std::fs::write(&path, config).unwrap();
    run_to_exit(&["--check-config", "--config", path.to_str().unwrap()], dir)
}
