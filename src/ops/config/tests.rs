//! The config's own tests: what each key accepts, and that every refusal
//! names the file, the line and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

mod validators;

/// Loads `text` as `/etc/jnhp.toml` and runs the checks a start adds
/// (`crate::ops::preflight`: listen names, TLS files, the PostgreSQL URL), as
/// `--check-config` does.
pub(super) fn parse(text: &str) -> Result<Config, String> {
    let config = Config::parse(text, Path::new("/etc/jnhp.toml")).map_err(|e| e.to_string())?;
    crate::ops::preflight::check(&config).map_err(|e| e.to_string())?;
    Ok(config)
}

#[test]
fn an_empty_file_is_the_defaults() {
    assert_eq!(parse("").unwrap(), Config::default());
    assert_eq!(
        Config::default().server.listen[0].resolve().unwrap(),
        vec!["127.0.0.1:8111".parse::<SocketAddr>().unwrap()]
    );
}

#[test]
fn the_documented_defaults_parse_to_the_defaults() {
    let text = r#"
[server]
listen = ["127.0.0.1:8111"]
max_connections = 10000
idle_timeout_secs = 0
max_name_bytes = 250
max_value_bytes = 65536
shutdown_grace_secs = 10
max_inflight_bytes = 67108864

[storage]
path = ""
fsync = "always"

[daemon]
daemonize = false
pidfile = ""
user = ""
group = ""
umask = "0027"
workdir = "/"

[log]
target = "stderr"
level = "info"
syslog_facility = "daemon"
syslog_socket = ""
"#;
    assert_eq!(parse(text).unwrap(), Config::default());
}

#[test]
fn several_listen_addresses_v4_and_v6() {
    let c = parse("[server]\nlisten = [\"0.0.0.0:1\", \"[::1]:2\"]\n").unwrap();
    assert_eq!(c.server.listen.len(), 2);
    assert!(c.server.listen[1].resolve().unwrap()[0].is_ipv6());
}

#[test]
fn errors_name_file_line_and_key() {
    let cases = [
        (
            "[server]\n\nmax_connections = \"x\"\n",
            "/etc/jnhp.toml:3: server.max_connections: ",
        ),
        (
            "[server]\nfoo = 1\n",
            "/etc/jnhp.toml:2: server.foo: unknown field `foo`",
        ),
        (
            "\n[storage]\nfsync = \"sometimes\"\n",
            "/etc/jnhp.toml:3: storage.fsync: unknown variant `sometimes`",
        ),
        (
            "[server]\nlisten = [\"nowhere\"]\n",
            "/etc/jnhp.toml:2: server.listen: \"nowhere\" is not host:port",
        ),
        (
            "[server]\nmax_connections = 0\n",
            "/etc/jnhp.toml:2: server.max_connections: 0 is outside",
        ),
        (
            "[server]\nmax_value_bytes = 0\n",
            "/etc/jnhp.toml:2: server.max_value_bytes: 0 is outside",
        ),
        (
            "[daemon]\numask = \"999\"\n",
            "/etc/jnhp.toml:2: daemon.umask: \"999\" is not an octal umask",
        ),
        (
            "[log]\nlevel = \"loud\"\n",
            "/etc/jnhp.toml:2: log.level: unknown variant `loud`",
        ),
        (
            "[log]\nsyslog_facility = \"nope\"\n",
            "/etc/jnhp.toml:2: log.syslog_facility: unknown syslog facility",
        ),
        (
            "[sever]\n",
            "/etc/jnhp.toml:1: sever: unknown field `sever`",
        ),
        ("[server\n", "/etc/jnhp.toml:1: "),
    ];
    for (text, want) in cases {
        let err = parse(text).unwrap_err();
        assert!(
            err.starts_with(want),
            "for {text:?}:\n got {err}\nwant {want}"
        );
    }
}

#[test]
fn daemon_and_log_keys() {
    let c = parse(
        "[daemon]\ndaemonize = true\npidfile = \"j.pid\"\nuser = \"root\"\ngroup = \"root\"\n\
         [log]\ntarget = \"syslog\"\nsyslog_facility = \"local3\"\n",
    )
    .unwrap();
    assert!(c.daemon.daemonize);
    assert_eq!(c.daemon.pidfile, Some(PathBuf::from("/etc/j.pid")));
    assert_eq!(
        c.log.target,
        LogTarget::Syslog {
            facility: "local3".into(),
            socket: None
        }
    );
    let err = parse("[daemon]\n\nuser = \"no-such-user-here\"\n").unwrap_err();
    assert!(
        err.starts_with("/etc/jnhp.toml:3: daemon.user: unknown user"),
        "{err}"
    );
    let err = parse("[daemon]\ngroup = \"no-such-group-here\"\n").unwrap_err();
    assert!(
        err.starts_with("/etc/jnhp.toml:2: daemon.group: unknown group"),
        "{err}"
    );
}

/// Every integer key has the range config.md gives: both ends are
/// accepted, one past either end (and a huge value) is an error naming
/// the line and the key.
#[test]
fn every_integer_key_is_range_checked() {
    let server = [
        ("max_connections", 1u64, 1_000_000u64),
        ("idle_timeout_secs", 0, 2_592_000),
        ("max_name_bytes", 1, 65_536),
        ("max_value_bytes", 1, 16_777_216),
        ("shutdown_grace_secs", 0, 3_600),
        ("max_inflight_bytes", 1_048_576, 1_099_511_627_776),
    ];
    let process = "kind = \"process\"\ncommand = [\"true\"]";
    let helper = "kind = \"helper\"\ncommand = [\"true\"]";
    let max_bytes = "kind = \"function\"\nfunction = \"max_bytes\"";
    let validator = [
        (max_bytes, "max", 1u64, 16_777_216u64),
        (process, "timeout_ms", 1, 3_600_000),
        (process, "max_concurrent", 1, 10_000),
        (helper, "timeout_ms", 1, 3_600_000),
        (helper, "children", 1, 1_000),
        (helper, "concurrency", 1, 10_000),
        (helper, "max_requests", 0, 4_294_967_295),
    ];
    let mut cases = Vec::new();
    for (key, min, max) in server {
        cases.push((
            format!("[server]\n{key} = "),
            format!("server.{key}"),
            min,
            max,
            2,
        ));
    }
    for (table, key, min, max) in validator {
        let line = table.lines().count() + 2;
        cases.push((
            format!("[[validator]]\n{table}\n{key} = "),
            format!("validator[0].{key}"),
            min,
            max,
            line,
        ));
    }
    for (prefix, key, min, max, line) in cases {
        for ok in [min, max] {
            assert!(
                parse(&format!("{prefix}{ok}\n")).is_ok(),
                "{key} = {ok}: {:?}",
                parse(&format!("{prefix}{ok}\n"))
            );
        }
        let mut bad = vec![max as i64 + 1, i64::MAX, -1];
        if min > 0 {
            bad.push(min as i64 - 1);
        }
        for n in bad {
            let err = parse(&format!("{prefix}{n}\n")).unwrap_err();
            let want = format!("/etc/jnhp.toml:{line}: {key}: {n} is outside {min}..={max}");
            assert!(err.starts_with(&want), "got {err}\nwant {want}");
        }
    }
}

#[test]
fn umask_is_three_or_four_octal_digits() {
    for ok in ["027", "0027", "0777", "000"] {
        assert!(
            parse(&format!("[daemon]\numask = \"{ok}\"\n")).is_ok(),
            "{ok}"
        );
    }
    for bad in ["+27", "27", "00027", "0o27", "0089", "", " 027", "1777"] {
        let err = parse(&format!("[daemon]\numask = \"{bad}\"\n")).unwrap_err();
        assert!(
            err.starts_with("/etc/jnhp.toml:2: daemon.umask: "),
            "{bad}: {err}"
        );
    }
}

#[test]
fn the_postgres_backend_and_its_keys() {
    let c = parse(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://j@db/names\"\n\
         pool_size = 3\nlease_secs = 7\nrequest_timeout_ms = 250\ncache_bytes = 0\n",
    )
    .unwrap();
    let Storage::Postgres(pg) = c.storage else {
        panic!("not postgres: {:?}", c.storage)
    };
    assert_eq!(
        (pg.pool_size, pg.lease, pg.request_timeout, pg.cache_bytes),
        (3, Duration::from_secs(7), Duration::from_millis(250), 0)
    );
    assert_eq!(pg.table_prefix, "jnhp");
    assert_eq!(pg.connect_timeout, Duration::from_secs(10));
    assert!(
        !format!("{pg:?}").contains("postgres://"),
        "Debug shows the URL"
    );
    // The local backend has no postgres settings.
    assert_eq!(
        parse("[storage]\nbackend = \"local\"\n")
            .unwrap()
            .storage
            .postgres(),
        None
    );
}

#[test]
fn postgres_config_errors_name_line_and_key() {
    let pg =
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"host=/run/postgresql\"\n";
    let cases: &[(&str, &str)] = &[
        (
            "[storage]\nbackend = \"local\"\n[storage.postgres]\nurl = \"postgres://j@db/n\"\n",
            "/etc/jnhp.toml:3: storage.postgres: only with storage.backend = \"postgres\"",
        ),
        (
            "[storage]\nbackend = \"postgres\"\npath = \"d\"\n",
            "/etc/jnhp.toml:3: storage.path: the data file's; not with",
        ),
        (
            "[storage]\nbackend = \"postgres\"\nfsync = \"always\"\n[storage.postgres]\nurl = \"postgres://j@db/n\"\n",
            "/etc/jnhp.toml:3: storage.fsync: the data file's; not with",
        ),
        (
            "[storage]\nbackend = \"postgres\"\n",
            "/etc/jnhp.toml:2: storage.postgres.url: required with storage.backend",
        ),
        (
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\npool_size = 2\n",
            "/etc/jnhp.toml:3: storage.postgres.url: required",
        ),
        (
            "[storage]\nbackend = \"sql\"\n",
            "/etc/jnhp.toml:2: storage.backend: unknown variant `sql`",
        ),
        (
            &format!("{pg}pool_size = 0\n"),
            "/etc/jnhp.toml:5: storage.postgres.pool_size: 0 is outside 1..=1000",
        ),
        (
            &format!("{pg}lease_secs = 0\n"),
            "/etc/jnhp.toml:5: storage.postgres.lease_secs: 0 is outside 1..=86400",
        ),
        (
            &format!("{pg}request_timeout_ms = -5\n"),
            "/etc/jnhp.toml:5: storage.postgres.request_timeout_ms: -5 is outside",
        ),
        (
            &format!("{pg}table_prefix = \"Jn-hp\"\n"),
            "/etc/jnhp.toml:5: storage.postgres.table_prefix: \"Jn-hp\" is not [a-z_][a-z0-9_]*",
        ),
        (
            &format!("{pg}colour = \"blue\"\n"),
            "/etc/jnhp.toml:5: storage.postgres.colour: unknown field `colour`",
        ),
        (
            &format!("{pg}password_file = \"/nonexistent/pw\"\n"),
            "/etc/jnhp.toml:5: storage.postgres.password_file: /nonexistent/pw: cannot read",
        ),
        (
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://u:s3cret@h/d?sslmode=maybe\"\n",
            "/etc/jnhp.toml:4: storage.postgres.url: sslmode \"maybe\" is not one of",
        ),
        (
            &format!("[server]\nmax_name_bytes = 2001\n{pg}"),
            "/etc/jnhp.toml:2: server.max_name_bytes: 2001 is above 2000",
        ),
    ];
    for (text, expected) in cases {
        let err = parse(text).unwrap_err();
        assert!(
            err.starts_with(expected),
            "{text:?}:\n  got {err}\n  want {expected}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }
    // 2000 bytes is allowed.
    parse(&format!("[server]\nmax_name_bytes = 2000\n{pg}")).unwrap();
}

#[test]
fn storage_path_must_not_be_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let err = Config::parse("[storage]\npath = \"data\"\n", &dir.path().join("j.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("j.toml:2: storage.path: ") && err.contains("is not a regular file"),
        "{err}"
    );
    let err = Config::parse(
        "[storage]\npath = \"/dev/null\"\n",
        &dir.path().join("j.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("is not a regular file"), "{err}");
    assert!(
        Config::parse(
            "[storage]\npath = \"data/file\"\n",
            &dir.path().join("j.toml")
        )
        .is_ok()
    );
}

#[test]
fn listen_accepts_host_names_and_resolves_them() {
    let c = parse("[server]\nlisten = [\"localhost:8111\"]\n").unwrap();
    let addrs = c.server.listen[0].resolve().unwrap();
    assert!(
        !addrs.is_empty()
            && addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8111),
        "{addrs:?}"
    );
    for bad in [
        "localhost",
        "localhost:x",
        ":8111",
        "no-such-host.invalid:1",
    ] {
        let err = parse(&format!("[server]\nlisten = [\"{bad}\"]\n")).unwrap_err();
        assert!(
            err.starts_with("/etc/jnhp.toml:2: server.listen: "),
            "{bad}: {err}"
        );
    }
}

#[test]
fn relative_paths_are_relative_to_the_file() {
    let c = Config::parse("[daemon]\nworkdir = \"w\"\n", Path::new("/etc/jnhp/j.toml")).unwrap();
    assert_eq!(c.daemon.workdir, PathBuf::from("/etc/jnhp/w"));
}

/// Config describes; it does not connect: a listen name that does not
/// resolve and certificate files that do not exist load, and the checks
/// that need the network or TLS (`crate::ops::preflight`) refuse them, naming
/// the file, the line and the key as a loading error would.
#[test]
fn loading_does_no_network_or_tls_work_and_preflight_names_the_line() {
    let text = "[server]\nlisten = [\"no-such-host.invalid:1\"]\n\n[tls]\n\
                cert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"\n";
    let path = Path::new("/etc/jnhp.toml");
    let config = Config::parse(text, path).unwrap();
    let tls = config.tls.as_ref().unwrap();
    assert_eq!(tls.cert_file, PathBuf::from("/nonexistent/c.pem"));
    let err = crate::ops::preflight::check(&config)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/etc/jnhp.toml:2: server.listen: "),
        "{err}"
    );
    let text = text.replace("no-such-host.invalid:1", "127.0.0.1:1");
    let config = Config::parse(&text, path).unwrap();
    let err = crate::ops::preflight::check(&config)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/etc/jnhp.toml:5: tls.cert_file: /nonexistent/c.pem: cannot read"),
        "{err}"
    );
    // The form of an address is still checked while loading.
    let err = Config::parse("[admin]\nlisten = [\"x\"]\n", path)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/etc/jnhp.toml:2: admin.listen: \"x\" is not host:port"),
        "{err}"
    );
}

#[test]
fn storage_resolves_to_one_kind_with_its_own_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.toml");
    let load = |text: &str| Config::parse(text, &path).unwrap().storage;
    assert_eq!(load(""), Storage::Memory);
    assert_eq!(
        load("[storage]\npath = \"\"\nfsync = \"never\"\n"),
        Storage::Memory
    );
    assert_eq!(
        load("[storage]\npath = \"d\"\nfsync = \"everysec\"\n"),
        Storage::DataFile {
            path: dir.path().join("d"),
            fsync: Fsync::Everysec
        }
    );
    let pg = load("[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"host=/run/x\"\n");
    assert!(
        matches!(&pg, Storage::Postgres(pg) if pg.url == "host=/run/x"),
        "{pg:?}"
    );
    assert_eq!(pg.data_file(), None);
}

#[test]
fn tls_exists_exactly_when_a_certificate_is_named() {
    let path = Path::new("/etc/jnhp.toml");
    // Keys that only tune TLS do not make it exist.
    let c = Config::parse(
        "[tls]\nmin_version = \"1.3\"\nclient_ca_file = \"ca.pem\"\n",
        path,
    )
    .unwrap();
    assert_eq!(c.tls, None);
    assert!(c.tls_listen().is_empty());
    let c = Config::parse("[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n", path).unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(
        (tls.cert_file, tls.key_file, tls.client_ca_file),
        ("/etc/c.pem".into(), "/etc/k.pem".into(), None)
    );
    let err = Config::parse("[server]\n[tls]\nlisten = [\"127.0.0.1:1\"]\n", path)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/etc/jnhp.toml:2: tls.cert_file: required to serve TLS"),
        "{err}"
    );
}

#[test]
fn the_log_target_carries_its_settings_and_place() {
    let path = Path::new("/etc/jnhp.toml");
    let c = Config::parse("[log]\ntarget = \"file\"\n\nfile = \"j.log\"\n", path).unwrap();
    assert_eq!(
        c.log.target,
        LogTarget::File {
            path: "/etc/j.log".into()
        }
    );
    assert_eq!(c.places.at("log.file").as_deref(), Some("/etc/jnhp.toml:4"));
    let c = Config::parse("[log]\ntarget = \"syslog\"\nsyslog_socket = \"s\"\n", path).unwrap();
    assert_eq!(
        c.log.target,
        LogTarget::Syslog {
            facility: "daemon".into(),
            socket: Some("/etc/s".into())
        }
    );
    assert_eq!(
        c.places.at("log.syslog_socket").as_deref(),
        Some("/etc/jnhp.toml:3")
    );
    assert_eq!(Config::default().places.at("log.file"), None);
}

/// A reload compares sections with `==`: a file that only moved its keys
/// to other lines is the same configuration.
#[test]
fn where_keys_are_written_does_not_change_the_configuration() {
    let path = Path::new("/etc/jnhp.toml");
    let a = Config::parse("[server]\nlisten = [\"127.0.0.1:1\"]\n", path).unwrap();
    let b = Config::parse("# moved\n\n[server]\n\nlisten = [\"127.0.0.1:1\"]\n", path).unwrap();
    assert_ne!(a.places.at("server.listen"), b.places.at("server.listen"));
    assert_eq!(a, b);
}
