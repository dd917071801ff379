//! The admin listener against the real binary: exact counters after a
//! known sequence of requests, the exposition format checked by promtool,
//! the alert rules and the dashboard, health and readiness, hostile admin
//! clients, and the status page rendered by a real browser.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Server, admin_addr, get, http, metrics, script, wait_for_file};
use nix::sys::signal::Signal;

/// A server with a data file, two validators (a process `gate` and a
/// helper `h`), small limits, and an admin listener.
fn instrumented(max_connections: usize) -> (Server, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let gate = script(
        dir.path(),
        "gate",
        "case \"$1\" in deny*) echo JNHP:0 ;; slow*) sleep 30 ;; junk*) echo JNHP:what ;; *) echo JNHP:1 ;; esac",
    );
    let helper = script(
        dir.path(),
        "helper",
        "while read -r id name value; do case \"$value\" in crash*) exit 1 ;; esac; echo \"$id JNHP:1\"; done",
    );
    let config = format!(
        "[server]\nmax_connections = {max_connections}\nmax_name_bytes = 8\nmax_value_bytes = 16\n\
         [storage]\npath = \"data\"\nfsync = \"always\"\n\
         [admin]\nlisten = [\"127.0.0.1:0\"]\n\
         [[validator]]\nname = \"gate\"\nkind = \"process\"\ncommand = [\"{}\"]\ntimeout_ms = 2000\n\
         [[validator]]\nkind = \"helper\"\ncommand = [\"{}\"]\nchildren = 1\n",
        gate.display(),
        helper.display()
    );
    let server = Server::start_in(dir, &config);
    let admin = admin_addr(&server);
    (server, admin)
}

#[test]
fn every_counter_has_exactly_the_expected_value() {
    let (server, admin) = instrumented(2);
    let mut c = server.connect();
    let asks = [
        ("STORE a 1", "W00T!"),
        ("STORE a 2", "RARGH!"),
        ("STORE b deny-me", "RARGH!"),
        ("STORE c slow", "RARGH!"),
        ("STORE d junk", "RARGH!"),
        ("STORE e crash", "RARGH!"),
        ("STORE f 2", "W00T!"),
        ("EXISTS a", "AWESOME!"),
        ("EXISTS zz", "RARGH!"),
        ("GET a", "1"),
        ("GET zz", ""),
        ("FROB", "ERROR unknown command"),
        ("GET", "ERROR missing name"),
        ("STORE x", "ERROR missing value"),
        ("get a b", "ERROR too many arguments"),
        ("GET aaaaaaaaaa", "ERROR name too long"),
        ("STORE v 12345678901234567", "ERROR value too long"),
        ("GET a\u{1}", "ERROR forbidden byte in name"),
        ("STORE v a\u{0}b", "ERROR forbidden byte in value"),
        (&format!("STORE {}", "x".repeat(100)), "ERROR line too long"),
        ("STORE r ERROR x", "ERROR reserved value"),
    ];
    for (request, expected) in asks {
        assert_eq!(c.ask(request), expected, "{request}");
    }
    // max_connections = 2: a second connection fits, a third is refused.
    let _second = server.connect();
    let mut third = server.connect();
    assert_eq!(third.reply(), "ERROR too many connections");
    // Reloads: one applied, one rejected.
    let config = server.config.clone().unwrap();
    server.signal(Signal::SIGHUP);
    server.log.wait_for("SIGHUP: configuration reloaded");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("[admin]", "[admin]\nbogus = 1")).unwrap();
    server.signal(Signal::SIGHUP);
    server.log.wait_for("keeping the running configuration");
    std::fs::write(&config, good).unwrap();

    let m = metrics(admin);
    let expect = |key: &str, value: f64| {
        assert_eq!(m.get(key).copied(), Some(value), "{key}");
    };
    let request = |command: &str, outcome: &str| {
        format!("jnhpd_requests_total{{command=\"{command}\",outcome=\"{outcome}\"}}")
    };
    for (command, outcome, n) in [
        ("store", "stored", 2.0),
        ("store", "rejected", 5.0),
        ("store", "error", 4.0),
        ("exists", "present", 1.0),
        ("exists", "absent", 1.0),
        ("exists", "error", 0.0),
        ("get", "hit", 1.0),
        ("get", "miss", 1.0),
        ("get", "error", 4.0),
    ] {
        expect(&request(command, outcome), n);
    }
    for reason in [
        "unknown_command",
        "missing_name",
        "missing_value",
        "too_many_arguments",
        "name_too_long",
        "value_too_long",
        "forbidden_byte_in_name",
        "forbidden_byte_in_value",
        "line_too_long",
        "reserved_value",
        "too_many_connections",
    ] {
        expect(
            &format!("jnhpd_protocol_errors_total{{reason=\"{reason}\"}}"),
            1.0,
        );
    }
    expect("jnhpd_protocol_errors_total{reason=\"shutting_down\"}", 0.0);
    expect("jnhpd_connections_total{result=\"accepted\"}", 2.0);
    expect("jnhpd_connections_total{result=\"refused\"}", 1.0);
    expect("jnhpd_connections", 2.0);
    expect("jnhpd_names", 2.0);
    expect("jnhpd_store_duration_seconds_count", 6.0);
    let verdict = |v: &str, verdict: &str| {
        format!("jnhpd_validator_verdicts_total{{validator=\"{v}\",verdict=\"{verdict}\"}}")
    };
    let failure = |v: &str, cause: &str| {
        format!("jnhpd_validator_failures_total{{validator=\"{v}\",cause=\"{cause}\"}}")
    };
    expect(&verdict("gate", "allow"), 3.0);
    expect(&verdict("gate", "deny"), 1.0);
    expect(&verdict("gate", "failure"), 2.0);
    expect(&failure("gate", "timeout"), 1.0);
    expect(&failure("gate", "malformed"), 1.0);
    expect(&failure("gate", "spawn"), 0.0);
    // The helper has no name: `<kind>-<index>`.
    expect(&verdict("helper-1", "allow"), 2.0);
    expect(&verdict("helper-1", "failure"), 1.0);
    expect(&failure("helper-1", "broken_helper"), 1.0);
    expect("jnhpd_helper_restarts_total{validator=\"helper-1\"}", 1.0);
    expect("jnhpd_helper_processes{validator=\"helper-1\"}", 1.0);
    expect("jnhpd_validator_in_flight{validator=\"gate\"}", 0.0);
    expect(
        "jnhpd_validator_duration_seconds_count{validator=\"gate\"}",
        6.0,
    );
    expect("jnhpd_datafile_syncs_total", 2.0);
    expect("jnhpd_datafile_records_per_sync_count", 2.0);
    expect("jnhpd_datafile_records_per_sync_sum", 2.0);
    let size = std::fs::metadata(server.path("data")).unwrap().len();
    expect("jnhpd_datafile_bytes", size as f64);
    expect("jnhpd_reloads_total{result=\"ok\"}", 1.0);
    expect("jnhpd_reloads_total{result=\"rejected\"}", 1.0);
    expect("jnhpd_build_info{version=\"0.1.0\"}", 1.0);
    assert!(m["process_resident_memory_bytes"] > 0.0);
    // Log lines name validators by their name.
    assert!(
        server.log.all().contains("validator gate ("),
        "{}",
        server.log.all()
    );
}

/// promtool (from Debian's prometheus package) parses /metrics, in both
/// formats' default, and the alert rules.
#[test]
fn promtool_accepts_the_metrics_and_the_alert_rules() {
    require!(Promtool);
    let (server, admin) = instrumented(10);
    assert_eq!(server.connect().ask("STORE a 1"), "W00T!");
    let (_, head, body) = get(admin, "/metrics");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus/alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // OpenMetrics when asked for.
    let (status, head, body) = http(
        admin,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.trim_end().ends_with("# EOF"));
}

/// Every metric the dashboard and the alert rules query exists (a metric
/// of PostgreSQL only exists with that backend: tests/failover.rs,
/// readiness_and_the_log_follow_whether_writes_commit, checks those).
#[test]
fn the_dashboard_and_the_alerts_query_metrics_that_exist() {
    let (server, admin) = instrumented(10);
    assert_eq!(server.connect().ask("STORE a 1"), "W00T!");
    let (_, _, body) = get(admin, "/metrics");
    let exposed: Vec<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut queried = Vec::new();
    for file in [
        "contrib/grafana/jnhpd.json",
        "contrib/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if (word.starts_with("jnhpd_") || word.starts_with("process_"))
                && !queried.contains(&word.to_string())
            {
                queried.push(word.to_string());
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for name in queried {
        if name.starts_with("jnhpd_postgres_") || name.starts_with("jnhpd_cache_") {
            continue;
        }
        assert!(
            exposed.iter().any(|e| *e == name
                || e.strip_prefix(name.as_str())
                    .is_some_and(|rest| ["_bucket", "_sum", "_count"].contains(&rest))),
            "{name} is queried but not exposed"
        );
    }
}

#[test]
fn health_readiness_and_http_errors() {
    let dir = tempfile::tempdir().unwrap();
    let slow = script(
        dir.path(),
        "slow",
        &format!(
            "touch {}/started; sleep 3; echo JNHP:1",
            dir.path().display()
        ),
    );
    let root = dir.path().to_path_buf();
    let config = format!(
        "[admin]\nlisten = [\"127.0.0.1:0\"]\n[server]\nshutdown_grace_secs = 20\n{}",
        common::process_validator(&slow, "")
    );
    let mut server = Server::start_in(dir, &config);
    let admin = admin_addr(&server);
    assert_eq!(get(admin, "/healthz").0, 200);
    let (status, _, body) = get(admin, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    assert_eq!(get(admin, "/nothing-here").0, 404);
    let (status, head, _) = http(
        admin,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
    assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
    assert_eq!(http(admin, "NOT HTTP AT ALL\r\n\r\n").0, 400);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let (status, head, _) = http(admin, &huge);
    assert_eq!(status, 400);
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let (status, _, body) = get(admin, "/status");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["store"], "memory");
    assert_eq!(doc["validators"][0]["name"], "process-0");
    // Draining after SIGTERM (a STORE in flight holds the drain): 503.
    let mut c = server.connect();
    c.send(b"STORE n v\r\n");
    wait_for_file(&root.join("started"));
    server.signal(Signal::SIGTERM);
    server.log.wait_for("shutting down");
    let (status, _, body) = get(admin, "/readyz");
    assert_eq!((status, body.as_str()), (503, "draining (shutting down)\n"));
    assert_eq!(get(admin, "/healthz").0, 200);
    assert_eq!(c.reply(), "W00T!");
    server.wait_exit();
}

/// A flood of admin connections (far over the 64 allowed, all idle) leaves
/// the JNHP port unaffected, and the admin port serves again after.
#[test]
fn an_admin_flood_leaves_the_jnhp_port_alone() {
    let server = Server::start("[admin]\nlisten = [\"127.0.0.1:0\"]\n");
    let admin = admin_addr(&server);
    let flood: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(admin).ok())
        .collect();
    let mut c = server.connect();
    for i in 0..200 {
        assert_eq!(c.ask(&format!("STORE k{i} v")), "W00T!");
        assert_eq!(c.ask(&format!("GET k{i}")), "v");
    }
    drop(flood);
    // The slots come back once the flood's connections are gone.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        if get(admin, "/healthz").0 == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the admin port did not recover"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Listening sockets of a process (from /proc).
fn listening_sockets(pid: i32) -> usize {
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) == Some(&"0A") {
                listening.push(fields[9].to_string());
            }
        }
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| {
            let target = target.to_string_lossy();
            target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .is_some_and(|inode| listening.iter().any(|l| l == inode))
        })
        .count()
}

#[test]
fn no_admin_port_is_bound_when_listen_is_empty() {
    let quiet = Server::start("[admin]\nlisten = []\n");
    assert_eq!(listening_sockets(quiet.pid()), 1);
    assert!(!quiet.log.all().contains("admin"));
    let loud = Server::start("[admin]\nlisten = [\"127.0.0.1:0\"]\n");
    admin_addr(&loud);
    assert_eq!(listening_sockets(loud.pid()), 2);
}

/// The status page in a real browser (Debian's chromium, headless): the
/// chart is drawn at its size with a line per command, and the figures
/// are those of /status.
#[test]
fn the_status_page_renders_in_a_browser() {
    require!(Chromium);
    let (server, admin) = instrumented(10);
    let mut c = server.connect();
    // Traffic over a few seconds, so the chart has points to draw.
    let started = std::time::Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(c.ask(&format!("GET k{i}")), "");
        i += 1;
    }
    assert_eq!(c.ask("STORE page 1"), "W00T!");
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("page.png");
    let chromium = |args: &[&str]| {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1000,900",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .args(args)
            .arg(format!("http://{admin}/"))
            .output()
            .expect("chromium (Debian's chromium package; .ci/run installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = chromium(&["--dump-dom"]);
    let (_, _, status) = get(admin, "/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let figure = |id: &str| {
        let at = dom
            .find(&format!("id=\"{id}\">"))
            .unwrap_or_else(|| panic!("no #{id}: {dom}"));
        let rest = &dom[at + id.len() + 6..];
        rest[..rest.find('<').unwrap()].to_string()
    };
    assert_eq!(figure("names"), status["names"].to_string());
    assert_eq!(figure("store"), status["requests"]["store"].to_string());
    assert_eq!(figure("connections"), status["connections"].to_string());
    assert!(dom.contains("<svg id=\"chart\"") && dom.contains("width=\"760\" height=\"260\""));
    assert_eq!(dom.matches("<polyline").count(), 3, "{dom}");
    chromium(&[&format!("--screenshot={}", png.display())]);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1000, 900));
    let channels = frame.line_size / frame.width as usize;
    // The GET line is #2ca02c: the screenshot shows it.
    let green = pixels[..frame.buffer_size()]
        .chunks(channels)
        .filter(|p| p[0] == 0x2c && p[1] == 0xa0 && p[2] == 0x2c)
        .count();
    assert!(
        green > 50,
        "the chart's GET line is not on the screenshot ({green} pixels)"
    );
}

/// Request heads are judged by their size in bytes, as
/// docs/observability.md says (400 past 8 KiB, 431 past 64 KiB), not by
/// how many headers they have: 99 headers in 1.3 KiB, or 1,300 tiny ones
/// in under 8 KiB, are served (they got 431).
#[test]
fn admin_heads_are_judged_by_bytes_not_by_header_count() {
    let server = Server::start("[admin]\nlisten = [\"127.0.0.1:0\"]\n");
    let admin = admin_addr(&server);
    let head = |headers: &str| {
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n")
    };
    let ninety_nine: String = (0..99).map(|i| format!("X-H{i}: v\r\n")).collect();
    let tiny: String = "a: b\r\n".repeat(1300);
    for (headers, want) in [
        (ninety_nine, 200),
        (tiny, 200),
        ("a:\r\n".repeat(2300), 400),
        (format!("X-Big: {}\r\n", "a".repeat(9000)), 400),
        (format!("X-Big: {}\r\n", "a".repeat(70_000)), 431),
    ] {
        let request = head(&headers);
        let (status, _, _) = http(admin, &request);
        assert_eq!(
            status,
            want,
            "a head of {} bytes with {} lines",
            request.len(),
            request.matches("\r\n").count()
        );
    }
}

/// `/status` is the `jnhp-status` crate's `Status`: the served document
/// reads back as that type with the figures of what was served, and the
/// type writes the same JSON value back (no key lost or renamed).
#[test]
fn the_status_document_reads_as_the_status_type() {
    let (server, admin) = instrumented(10);
    let mut c = server.connect();
    assert_eq!(c.ask("STORE a 1"), "W00T!");
    assert_eq!(c.ask("STORE b deny"), "RARGH!");
    assert_eq!(c.ask("GET a"), "1");
    let (status, head, body) = get(admin, "/status");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let doc: jnhp_status::Status = serde_json::from_str(&body).unwrap();
    assert_eq!(doc.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(doc.store, "datafile");
    assert_eq!(doc.names, Some(1));
    assert_eq!(doc.connections, 1);
    assert_eq!((doc.requests.store, doc.requests.get), (2, 1));
    assert!(doc.ready);
    let gate = &doc.validators[0];
    assert_eq!(
        (gate.name.as_str(), gate.kind.as_str()),
        ("gate", "process")
    );
    assert_eq!((gate.verdicts.allow, gate.verdicts.deny), (1, 1));
    let served: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(serde_json::to_value(&doc).unwrap(), served);
}
