//! The example WebAssembly validators in `examples/wasm/`, each built the
//! way its README says and run by the real jnhpd as a user would
//! configure it (`kind = "wasm"`), with STOREs over a socket that the
//! check must allow and ones it must refuse.
//!
//! The text-form module needs nothing; the AssemblyScript one needs node
//! and npm (and the npm registry, for `npm ci`), the Rust one the
//! `wasm32-unknown-unknown` target. Where these are missing a test
//! prints one line saying why and passes, except under `CI=true`, where
//! it fails (`.ci/run` installs them). The builds leave the repository
//! as it was: AssemblyScript builds in a copy of its folder, Rust into
//! `target/wasm-examples`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Server;
use common::need::{in_ci, on_path};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wasm")
}

/// Prints the one skip line, or under `CI=true` fails: `why` says what is
/// missing.
fn skip(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    assert!(
        !in_ci(),
        "{test}: {why} — CI=true, where every test must run (.ci/run installs what it needs)"
    );
    // Straight to the file descriptor: the harness captures eprint! of
    // passing tests, and this line is for the person running cargo test.
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
}

/// Runs `cmd`, failing the test with its output unless it succeeds.
fn build(cmd: &mut Command) {
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// jnhpd with one validator: the wasm module at `module`. A failure of
/// the module (a trap, a bad address from `jnhp_alloc`) lets the STORE
/// through (`on_failure = "allow"`), so that a `RARGH!` below is the
/// module's verdict, never a failure that `reject` would also answer
/// with `RARGH!`.
fn serve(module: &Path) -> Server {
    Server::start(&format!(
        "[[validator]]\nkind = \"wasm\"\nmodule = '{}'\non_failure = \"allow\"\n",
        module.display()
    ))
}

/// Copies the AssemblyScript example's sources (not a `node_modules/` or
/// `build/` someone made in place) into `to`.
fn copy_sources(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "node_modules" || name == "build" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_sources(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn the_wat_example_allows_printable_text_of_at_most_4096_bytes() {
    let s = serve(&examples().join("wat/printable-text.wat"));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE plain hello, world"), "W00T!");
    assert_eq!(c.ask("STORE tabbed a\tb"), "W00T!");
    assert_eq!(c.ask("STORE accented café ☕ 😀"), "W00T!");
    assert_eq!(
        c.ask(&format!("STORE longest {}", "x".repeat(4096))),
        "W00T!"
    );
    assert_eq!(c.ask("GET accented"), "café ☕ 😀");
    // Over a page with its name: the module grows its memory to judge it.
    let (name, value) = ("n".repeat(250), "x".repeat(65536));
    assert_eq!(c.ask(&format!("STORE {name} {value}")), "RARGH!");

    assert_eq!(
        c.ask(&format!("STORE too-long {}", "x".repeat(4097))),
        "RARGH!"
    );
    for (name, value) in [
        ("escape", &b"\x1b[31mred"[..]),       // a terminal escape (C0 ESC)
        ("delete", b"a\x7f"),                  // DEL
        ("csi", b"\xc2\x9b31m"),               // U+009B, a C1 control
        ("latin1", b"caf\xe9"),                // not UTF-8
        ("overlong", b"\xc0\xaf"),             // "/" in two bytes
        ("surrogate", b"\xed\xa0\x80"),        // U+D800
        ("past-unicode", b"\xf4\x90\x80\x80"), // U+110000
        ("cut-short", b"ab\xe2\x82"),          // a three-byte sequence, cut
    ] {
        c.send(b"STORE ");
        c.send(name.as_bytes());
        c.send(b" ");
        c.send(value);
        c.send(b"\r\n");
        assert_eq!(c.reply(), "RARGH!", "STORE {name} {value:?}");
        assert_eq!(c.ask(&format!("EXISTS {name}")), "RARGH!");
    }
}

#[test]
fn the_assemblyscript_example_allows_tenant_names_and_logs_why_it_refuses() {
    if !on_path("npm") || !on_path("node") {
        return skip(
            "needs node and npm (not on PATH) to build the AssemblyScript example; \
             install Debian's nodejs and npm packages or run in CI",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("assemblyscript");
    copy_sources(&examples().join("assemblyscript"), &project);
    build(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&project),
    );
    build(
        Command::new("npm")
            .args(["run", "build"])
            .current_dir(&project),
    );

    let s = serve(&project.join("build/tenant-names.wasm"));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE acme/orders/42 shipped"), "W00T!");
    assert_eq!(c.ask("STORE team-7/a/b/c x"), "W00T!");
    let tenant = "t".repeat(32);
    assert_eq!(c.ask(&format!("STORE {tenant}/k x")), "W00T!");

    assert_eq!(c.ask("STORE Acme/x shipped"), "RARGH!");
    assert_eq!(c.ask("STORE acme shipped"), "RARGH!");
    assert_eq!(c.ask(&format!("STORE t{tenant}/k x")), "RARGH!");
    assert_eq!(
        c.ask(&format!("STORE acme/{} x", "k".repeat(129))),
        "RARGH!"
    );
    assert_eq!(c.ask("EXISTS Acme/x"), "RARGH!");
    // Longer than any STORE before: the module grows its buffer.
    assert_eq!(
        c.ask(&format!("STORE Acme/big {}", "x".repeat(65536))),
        "RARGH!"
    );

    // The refusals' reasons, through the module's jnhp.log import.
    s.log
        .wait_for(r#"refused "Acme/x": the tenant is not 1-32 of [a-z0-9-]"#);
    s.log
        .wait_for(r#"refused "acme": no slash: names are <tenant>/<key>"#);
    s.log.wait_for(r#"": the key is not 1-128 bytes long"#);
}

/// Whether rustc has the standard library for wasm32-unknown-unknown.
fn has_wasm32_target() -> bool {
    let out = Command::new("rustc")
        .args([
            "--print",
            "target-libdir",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .current_dir(examples().join("rust"))
        .output();
    let Ok(out) = out else { return false };
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    out.status.success()
        && std::fs::read_dir(libdir).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
        })
}

#[test]
fn the_rust_example_allows_json_with_an_owner_and_logs_refusals_with_the_peer() {
    if !has_wasm32_target() {
        return skip(
            "needs the wasm32-unknown-unknown target to build the Rust example; \
             `rustup target add wasm32-unknown-unknown` or run in CI",
        );
    }
    let crate_dir = examples().join("rust");
    let target_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/wasm-examples");
    build(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--locked", "--quiet"])
            .args(["--target", "wasm32-unknown-unknown", "--manifest-path"])
            .arg(crate_dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir),
    );

    let s = serve(&target_dir.join("wasm32-unknown-unknown/release/owner_json.wasm"));
    let mut c = s.connect();
    assert_eq!(
        c.ask(r#"STORE report-1 {"owner":"alice","size":3}"#),
        "W00T!"
    );
    assert_eq!(
        c.ask(r#"STORE report-2 {"meta": {"owner": 1}, "owner": "bob"}"#),
        "W00T!"
    );
    assert_eq!(c.ask("GET report-1"), r#"{"owner":"alice","size":3}"#);

    assert_eq!(c.ask(r#"STORE report-3 {"size":3}"#), "RARGH!");
    assert_eq!(c.ask(r#"STORE report-4 {"owner":""}"#), "RARGH!");
    assert_eq!(c.ask(r#"STORE report-5 {"owner":7}"#), "RARGH!");
    assert_eq!(c.ask(r#"STORE report-6 ["owner"]"#), "RARGH!");
    assert_eq!(c.ask(r#"STORE report-7 {"owner":"alice""#), "RARGH!");
    assert_eq!(c.ask("EXISTS report-3"), "RARGH!");
    let big = format!(r#"STORE report-big {{"size":"{}"}}"#, "x".repeat(65000));
    assert_eq!(c.ask(&big), "RARGH!");

    // The module logs the client's address jnhpd gave it: this
    // connection's own.
    let peer = c.stream().local_addr().unwrap();
    s.log.wait_for(&format!(
        r#"refused "report-3" from {peer}: the value has no "owner""#
    ));
    s.log.wait_for(&format!(
        r#"refused "report-7" from {peer}: the value is not JSON"#
    ));
}

/// The smallest module, as docs/wasm.md lists it in its Examples section.
fn smallest_module_in_the_docs() -> String {
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/wasm.md"))
        .unwrap();
    let examples = page
        .split_once("\n## Examples\n")
        .expect("docs/wasm.md has an Examples section")
        .1;
    let listing = examples
        .split_once("```wat\n")
        .expect("the Examples section has a WAT listing")
        .1;
    listing.split_once("```").unwrap().0.to_string()
}

#[test]
fn the_smallest_module_in_the_docs_works_up_to_the_longest_store() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("smallest.wat");
    std::fs::write(&module, smallest_module_in_the_docs()).unwrap();
    let s = serve(&module);
    let mut c = s.connect();
    assert_eq!(c.ask(&format!("STORE short {}", "x".repeat(99))), "W00T!");
    assert_eq!(c.ask(&format!("STORE long {}", "x".repeat(100))), "RARGH!");
    // The longest STORE the default limits allow fits its two pages: a
    // verdict, not a failure of the validator (which would let it through).
    let name = "n".repeat(250);
    assert_eq!(
        c.ask(&format!("STORE {name} {}", "x".repeat(65536))),
        "RARGH!"
    );
}
