//! The example validators in `validators/`, each run by the real binary as
//! a user would configure it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("validators")
        .join(name)
}

fn serve(validator: &str) -> Server {
    Server::start(validator)
}

#[test]
fn the_jnhp_determine_template_allows_all_but_its_example_rule() {
    let s = serve(&format!(
        "[[validator]]\nkind = \"process\"\ncommand = [\"{}\", \"--\"]\n",
        example("jnhp-determine").display()
    ));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a -rf"), "W00T!");
    assert_eq!(c.ask("STORE b $(echo forbidden)"), "RARGH!");
    assert_eq!(c.ask("STORE c a forbidden word"), "RARGH!");
}

#[test]
fn reject_mp3_refuses_mp3_data_and_its_base64() {
    require!(Python3);
    let s = serve(&format!(
        "[[validator]]\nkind = \"process\"\ncommand = [\"{}\"]\n",
        example("reject-mp3").display()
    ));
    let mut c = s.connect();
    c.send(b"STORE id3 ID3\x04\x01\x02\x03\x7f\x23TSSE\r\n");
    assert_eq!(c.reply(), "RARGH!");
    c.send(b"STORE frame \xff\xfb\x90\x64\x01\x0f\r\n");
    assert_eq!(c.reply(), "RARGH!");
    // base64 of an ID3 header, and of an MPEG frame header.
    assert_eq!(
        c.ask("STORE b64 SUQzBAAAAAAAI1RTU0UAAAAPAAADTGF2ZjU4Ljc2LjEwMAAAAAAAAAAAAAAA"),
        "RARGH!"
    );
    assert_eq!(c.ask("STORE b64frame //uQZAAP"), "RARGH!");
    assert_eq!(c.ask("STORE text hello world"), "W00T!");
    assert_eq!(c.ask("STORE b64text aGVsbG8gd29ybGQ="), "W00T!");
    c.send(b"STORE notsync \xff\x01binary\r\n");
    assert_eq!(c.reply(), "W00T!");
}

#[test]
fn check_signature_looks_signers_up_in_sqlite() {
    require!(Python3);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("signers.sqlite");
    let tool = example("check-signature");
    let run = |args: &[&str]| {
        let out = Command::new(&tool)
            .arg("--db")
            .arg(&db)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    run(&["--add", "alice", "s3cret"]);
    run(&["--add", "bob", "hunter2"]);
    let signed = run(&["--sign", "alice", "s3cret", "greeting"]);
    let forged = run(&["--sign", "alice", "guessed", "greeting"]);
    let bobs = run(&["--sign", "bob", "hunter2", "other"]);
    let s = serve(&format!(
        "[[validator]]\nkind = \"process\"\ncommand = [\"{}\", \"--db\", \"{}\", \"--\"]\n",
        tool.display(),
        db.display()
    ));
    let mut c = s.connect();
    assert_eq!(c.ask(&format!("STORE greeting {forged}")), "RARGH!");
    assert_eq!(
        c.ask(&format!("STORE wrongname {signed}")),
        "RARGH!",
        "signs the name"
    );
    assert_eq!(c.ask("STORE greeting mallory:00ff"), "RARGH!");
    assert_eq!(c.ask("STORE greeting no-signature"), "RARGH!");
    assert_eq!(c.ask(&format!("STORE greeting {signed}")), "W00T!");
    run(&["--revoke", "bob"]);
    assert_eq!(
        c.ask(&format!("STORE other {bobs}")),
        "RARGH!",
        "a revoked signer"
    );
}

#[test]
fn utf8_text_reads_its_value_on_stdin() {
    require!(Python3);
    let s = serve(&format!(
        "[[validator]]\nkind = \"process\"\ncommand = [\"{}\"]\ninput = \"stdin\"\n",
        example("utf8-text").display()
    ));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a héllo wörld\twith tab"), "W00T!");
    c.send(b"STORE b \xff\xfe\r\n");
    assert_eq!(c.reply(), "RARGH!");
    c.send(b"STORE c escape \x1b[31m\r\n");
    assert_eq!(c.reply(), "RARGH!");
    assert_eq!(c.ask(&format!("STORE d {}", "é".repeat(30_000))), "W00T!");
}

fn helper_config(name: &str) -> String {
    format!(
        "[[validator]]\nkind = \"helper\"\ncommand = [\"{}\"]\nchildren = 1\n",
        example(name).display()
    )
}

#[test]
fn the_jnhp_helper_template_answers_like_its_process_twin() {
    let s = serve(&helper_config("jnhp-helper"));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a -rf  spaced  "), "W00T!");
    assert_eq!(c.ask("STORE b a forbidden word"), "RARGH!");
    assert_eq!(c.ask("GET a"), "-rf  spaced  ");
    for i in 0..100 {
        assert_eq!(c.ask(&format!("STORE n{i} v{i}")), "W00T!");
    }
}

#[test]
fn the_asyncio_helper_answers_concurrent_stores() {
    require!(Python3);
    let s = serve(&helper_config("asyncio-helper"));
    let addr = s.addr();
    let workers: Vec<_> = (0..16)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = common::Client::connect(addr);
                let value = if i % 2 == 0 {
                    "fine"
                } else {
                    "forbidden stuff"
                };
                (i, c.ask(&format!("STORE n{i} {value}")))
            })
        })
        .collect();
    for w in workers {
        let (i, reply) = w.join().unwrap();
        assert_eq!(
            reply,
            if i % 2 == 0 { "W00T!" } else { "RARGH!" },
            "STORE {i}"
        );
    }
}

/// `examples/custom_validator.rs`: a daemon with its own in-process check,
/// built by `cargo test` (examples are) and run as a program.
#[test]
fn the_custom_validator_example_runs_its_own_check_in_the_chain() {
    // Built here: `cargo test --test examples` alone does not build the
    // examples, and a stale one would be tested.
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let mut build = Command::new(env!("CARGO"));
    build
        .args([
            "build",
            "--quiet",
            "--example",
            "custom_validator",
            "--manifest-path",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", profile.parent().unwrap());
    if profile.ends_with("release") {
        build.arg("--release");
    }
    assert!(
        build.status().unwrap().success(),
        "cargo build --example failed"
    );
    let example = profile.join("examples/custom_validator");
    let mut cmd = Command::new(&example);
    cmd.arg("127.0.0.1:0");
    let mut s = Server::spawn(cmd, tempfile::tempdir().unwrap(), None);
    s.log
        .wait_for("validator utf8-text (library: values are UTF-8 text)");
    let mut c = s.connect();
    assert_eq!(c.ask("STORE text héllo"), "W00T!");
    c.send(b"STORE binary \xff\xfe\r\n");
    assert_eq!(c.reply(), "RARGH!");
    s.signal(nix::sys::signal::Signal::SIGINT);
    let status = s.wait_exit();
    assert!(status.success(), "{status:?}\n{}", s.log.all());
}
