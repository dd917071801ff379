//! `[[validator]]` tables: what each kind takes, and that every refusal
//! names the line and the key.

use std::time::Duration;

use super::parse;
use crate::ops::config::*;

#[test]
fn helper_validators() {
    let c = parse(
        "[[validator]]\nkind = \"helper\"\ncommand = [\"true\"]\nchildren = 2\nmax_requests = 9\n",
    )
    .unwrap();
    let Check::Helper(h) = &c.validators[0].check else {
        panic!("not a helper")
    };
    assert_eq!((h.children, h.concurrency, h.max_requests), (2, 32, 9));
    assert_eq!(h.timeout, Duration::from_millis(5000));
    let err = parse("[[validator]]\nkind = \"helper\"\ncommand = [\"true\"]\n\nconcurrency = 0\n")
        .unwrap_err();
    assert!(
        err.starts_with("/etc/jnhp.toml:5: validator[0].concurrency: 0 is outside 1..=10000"),
        "{err}"
    );
    let err = parse("[[validator]]\nkind = \"helper\"\ncommand = [\"true\"]\ninput = \"stdin\"\n")
        .unwrap_err();
    assert!(
        err.contains("validator[0].input: not used by kind = \"helper\""),
        "{err}"
    );
}

#[test]
fn validator_tables_resolve_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deny.txt"), "x\n").unwrap();
    let text = r#"
[[validator]]
kind = "function"
function = "max_bytes"
max = 10

[[validator]]
kind = "function"
function = "regex"
field = "name"
pattern = "^[a-z]+$"
on_failure = "allow"

[[validator]]
kind = "blocking"
function = "denylist"
path = "deny.txt"

[[validator]]
kind = "process"
command = ["true", "--", "x"]
input = "stdin"
timeout_ms = 250
max_concurrent = 2
"#;
    let c = Config::parse(text, &dir.path().join("j.toml")).unwrap();
    assert_eq!(c.validators.len(), 4);
    assert_eq!(c.validators[0].check, Check::MaxBytes { max: 10 });
    assert_eq!(c.validators[1].on_failure, OnFailure::Allow);
    assert_eq!(
        c.validators[2].check,
        Check::Denylist {
            path: dir.path().join("deny.txt")
        }
    );
    let Check::Process(p) = &c.validators[3].check else {
        panic!("not a process")
    };
    assert!(
        p.program.is_absolute() && p.program.ends_with("true"),
        "found in PATH"
    );
    assert_eq!(p.args, ["--", "x"]);
    assert_eq!(
        (p.input, p.timeout, p.max_concurrent),
        (Input::Stdin, Duration::from_millis(250), 2)
    );
}

#[test]
fn validator_errors_name_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "not executable").unwrap();
    let cases = [
        (
            "[[validator]]\nkind = \"function\"\n",
            "2: validator[0].function: required by kind",
        ),
        (
            "[[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\n",
            "2: validator[0].max: required",
        ),
        (
            "[[validator]]\nkind = \"function\"\nfunction = \"nope\"\n",
            "3: validator[0].function: unknown function",
        ),
        (
            "[[validator]]\nkind = \"function\"\nfunction = \"regex\"\npattern = \"(\"\n",
            "4: validator[0].pattern: invalid regex",
        ),
        (
            "[[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 1\npattern = \"x\"\n",
            "5: validator[0].pattern: not used by function = \"max_bytes\"",
        ),
        (
            "[[validator]]\nkind = \"function\"\ncommand = [\"x\"]\n",
            "3: validator[0].command: not used by kind = \"function\"",
        ),
        (
            "[[validator]]\nkind = \"process\"\n",
            "2: validator[0].command: required",
        ),
        (
            "[[validator]]\nkind = \"process\"\ncommand = []\n",
            "3: validator[0].command: must name a program",
        ),
        (
            "[[validator]]\nkind = \"process\"\ncommand = [\"./missing\"]\n",
            "3: validator[0].command: program",
        ),
        (
            "[[validator]]\nkind = \"process\"\ncommand = [\"plain\"]\n",
            "3: validator[0].command: program \"plain\" not found in PATH",
        ),
        (
            "[[validator]]\nkind = \"process\"\ncommand = [\"./plain\"]\n",
            "is not an executable file",
        ),
        (
            "[[validator]]\nkind = \"process\"\ncommand = [\"true\"]\nmax_concurrent = 0\n",
            "4: validator[0].max_concurrent: 0 is outside 1..=10000",
        ),
        (
            "[[validator]]\nkind = \"process\"\ncommand = [\"true\"]\ninput = \"file\"\n",
            "4: validator[0].input: unknown variant",
        ),
        (
            "[[validator]]\nkind = \"process\"\ncommand = [\"true\"]\non_failure = \"maybe\"\n",
            "4: validator[0].on_failure: unknown variant",
        ),
        (
            "[[validator]]\nkind = \"blocking\"\nfunction = \"denylist\"\npath = \"nothing\"\n",
            "4: validator[0].path: cannot read",
        ),
        (
            "[[validator]]\nkind = \"sometimes\"\n",
            "2: validator[0].kind: unknown variant",
        ),
        (
            "[[validator]]\nfunction = \"regex\"\n",
            "validator[0]: missing field `kind`",
        ),
        (
            "[[validator]]\nkind = \"process\"\ncommand = [\"true\"]\n[[validator]]\nkind = \"process\"\ncommand = [\"true\"]\nbogus = 1\n",
            "7: validator[1].bogus: unknown field",
        ),
    ];
    for (text, want) in cases {
        let err = Config::parse(text, &dir.path().join("j.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "for {text:?}:\n got {err}\nwant {want}");
        assert!(
            err.starts_with(&dir.path().join("j.toml:").display().to_string()),
            "{err}"
        );
    }
}

/// A key of another kind, or of another function, is an error like an
/// unknown key, for every kind.
#[test]
fn keys_of_another_kind_are_errors() {
    let kinds = [
        (
            "kind = \"function\"\nfunction = \"max_bytes\"\nmax = 1",
            &[
                "path",
                "command",
                "input",
                "timeout_ms",
                "max_concurrent",
                "children",
                "concurrency",
                "max_requests",
                "field",
                "pattern",
            ][..],
        ),
        (
            "kind = \"function\"\nfunction = \"regex\"\npattern = \"x\"",
            &[
                "max",
                "children",
                "concurrency",
                "max_requests",
                "timeout_ms",
            ][..],
        ),
        (
            "kind = \"blocking\"\nfunction = \"denylist\"\npath = \"/etc/passwd\"",
            &[
                "max",
                "field",
                "pattern",
                "command",
                "input",
                "timeout_ms",
                "max_concurrent",
                "children",
                "concurrency",
                "max_requests",
            ][..],
        ),
        (
            "kind = \"process\"\ncommand = [\"true\"]",
            &[
                "function",
                "max",
                "field",
                "pattern",
                "path",
                "children",
                "concurrency",
                "max_requests",
            ][..],
        ),
        (
            "kind = \"helper\"\ncommand = [\"true\"]",
            &[
                "function",
                "max",
                "field",
                "pattern",
                "path",
                "input",
                "max_concurrent",
            ][..],
        ),
    ];
    let value = |key: &str| match key {
        "function" | "pattern" | "path" => "\"x\"",
        "field" => "\"name\"",
        "input" => "\"stdin\"",
        "command" => "[\"true\"]",
        _ => "4",
    };
    for (table, foreign) in kinds {
        assert!(
            parse(&format!("[[validator]]\n{table}\n")).is_ok(),
            "{table}"
        );
        let line = table.lines().count() + 2;
        for key in foreign {
            let err =
                parse(&format!("[[validator]]\n{table}\n{key} = {}\n", value(key))).unwrap_err();
            let want = format!("/etc/jnhp.toml:{line}: validator[0].{key}: not used by ");
            assert!(
                err.starts_with(&want),
                "{table} + {key}:\n got {err}\nwant {want}"
            );
        }
    }
}

#[test]
fn modes_and_deny_caches() {
    let base = "[[validator]]\nkind = \"function\"\nfunction = \"max_bytes\"\nmax = 3\n";
    let c = parse(base).unwrap();
    assert_eq!(
        (c.validators[0].mode, c.validators[0].deny_cache),
        (Mode::Enforce, None)
    );
    let c = parse(&format!("{base}mode = \"dryrun\"\ndeny_cache_secs = 60\n")).unwrap();
    assert_eq!(c.validators[0].mode, Mode::Dryrun);
    assert_eq!(
        c.validators[0].deny_cache,
        Some(DenyCacheSpec {
            ttl: Duration::from_secs(60),
            entries: 10_000
        })
    );
    let c = parse(&format!("{base}mode = \"warn\"\n")).unwrap();
    assert_eq!(c.validators[0].mode, Mode::Warn);
    for (extra, expected) in [
        (
            "mode = \"Dry-Run\"",
            "/etc/jnhp.toml:5: validator[0].mode: unknown variant `Dry-Run`",
        ),
        (
            "deny_cache_secs = 0",
            "/etc/jnhp.toml:5: validator[0].deny_cache_secs: 0 is outside 1..=2592000",
        ),
        (
            "deny_cache_secs = 99999999999",
            "/etc/jnhp.toml:5: validator[0].deny_cache_secs: 99999999999 is outside",
        ),
        (
            "deny_cache_secs = 5\ndeny_cache_entries = 0",
            "/etc/jnhp.toml:6: validator[0].deny_cache_entries: 0 is outside 1..=1000000",
        ),
        (
            "deny_cache_entries = 5",
            "/etc/jnhp.toml:5: validator[0].deny_cache_entries: has no effect without deny_cache_secs",
        ),
    ] {
        let err = parse(&format!("{base}{extra}\n")).unwrap_err();
        assert!(err.starts_with(expected), "{extra}: {err}");
    }
}

#[test]
fn the_validation_section() {
    let c = parse("").unwrap();
    assert_eq!(c.validation, ValidationSpec::default());
    assert_eq!(c.validation.log_buffer, 10_000);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let c = parse(&format!(
        "[validation]\ndeadline_ms = 250\ndecision_log = \"{}\"\ndecision_log_values = true\ndecision_log_buffer = 7\n",
        log.display()
    ))
    .unwrap();
    assert_eq!(c.validation.deadline, Some(Duration::from_millis(250)));
    assert_eq!(c.validation.decision_log, DecisionLogTarget::File(log));
    assert!(c.validation.log_values);
    assert_eq!(c.validation.log_buffer, 7);
    // Whether the file can be appended to is for --check-config and the
    // start (tests/validation_ops.rs): a reload does not open it.
    let c = parse(&format!(
        "[validation]\n\ndecision_log = \"{}\"\n",
        dir.path().display()
    ))
    .unwrap();
    assert_eq!(
        c.places.at("validation.decision_log").as_deref(),
        Some("/etc/jnhp.toml:3")
    );
    let c = parse("[validation]\ndecision_log = \"stderr\"\ndeadline_ms = 0\n").unwrap();
    assert_eq!(c.validation.decision_log, DecisionLogTarget::Stderr);
    assert_eq!(c.validation.deadline, None);
    for (text, expected) in [
        (
            "[storage]\npath = \"/var/lib/d\"\n[validation]\ndecision_log = \"/var/lib/d\"\n"
                .to_string(),
            "/etc/jnhp.toml:4: validation.decision_log: /var/lib/d is the data file",
        ),
        (
            "[validation]\ndeadline_ms = -1\n".to_string(),
            "/etc/jnhp.toml:2: validation.deadline_ms: -1 is outside 0..=3600000",
        ),
        (
            "[validation]\ndecision_log_buffer = 0\n".to_string(),
            "/etc/jnhp.toml:2: validation.decision_log_buffer: 0 is outside",
        ),
        (
            "[validation]\ndecison_log = \"stderr\"\n".to_string(),
            "/etc/jnhp.toml:2: validation.decison_log: unknown field `decison_log`",
        ),
    ] {
        let err = parse(&text).unwrap_err();
        assert!(err.starts_with(expected), "{text}: {err}");
    }
}
