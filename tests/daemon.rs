//! Running jnhpd as operators do: daemon mode, pidfiles, syslog, systemd
//! readiness and socket activation, privilege drop.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, Server, is_running, run_to_exit, start_fails, wait_not_running};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Kills a daemon (by pid) when the test ends, whatever happens.
struct Reap(i32);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn config_in(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("jnhp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn daemon_mode_detaches_and_the_launcher_exits_zero_once_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(
        dir.path(),
        "[daemon]\ndaemonize = true\npidfile = \"jnhpd.pid\"\numask = \"0077\"\nworkdir = \".\"\n",
    );
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"]);
    // The daemon keeps stderr (a pipe, not a terminal): its log still
    // reaches the harness.
    let mut s = Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(config));
    assert_eq!(s.wait_exit().code(), Some(0), "the launcher exits 0");
    let pidfile = dir.path().join("jnhpd.pid");
    let pid = read_pid(&pidfile);
    let _reap = Reap(pid);
    assert_ne!(pid, s.pid(), "the daemon is not the launcher");
    assert!(is_running(pid));
    assert_eq!(s.connect().ask("STORE a b"), "W00T!");
    // The daemon is in its own session, without the launcher's terminal.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let session: i32 = fields[3].parse().unwrap();
    assert_ne!(session, nix::unistd::getsid(None).unwrap().as_raw());
    assert_eq!(fields[4], "0", "no controlling terminal");
    // umask and workdir applied.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l == "Umask:\t0077"), "{status}");
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, dir.path().canonicalize().unwrap());

    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    wait_not_running(pid);
    assert!(!pidfile.exists(), "the pidfile is removed on exit");
}

#[test]
fn the_launcher_reports_a_start_up_failure_after_the_fork() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "[daemon]\npidfile = \"jnhpd.pid\"\n");
    let running = {
        let mut cmd = Command::new(common::bin());
        cmd.arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"]);
        Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(config.clone()))
    };
    // A second jnhpd, daemonized, on the same pidfile: the failure happens
    // in the daemon, after the fork, and the launcher says so.
    let (code, out) = run_to_exit(
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--daemon",
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("names a live jnhpd"), "{out}");
    assert_eq!(running.connect().ask("EXISTS a"), "RARGH!");
}

#[test]
fn the_launcher_exits_non_zero_when_the_port_is_busy() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = run_to_exit(&["--daemon", "--listen", &addr], dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("cannot listen on {addr}")), "{out}");
}

#[test]
fn a_stale_pidfile_is_replaced_and_a_live_one_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("jnhpd.pid");
    std::fs::write(&pidfile, "999999\n").unwrap();
    let config = config_in(dir.path(), "[daemon]\npidfile = \"jnhpd.pid\"\n");
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"]);
    let mut s = Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(config.clone()));
    s.log.wait_for("replacing a stale one (pid 999999)");
    assert_eq!(read_pid(&pidfile), s.pid(), "written in the foreground too");

    let (code, out) = start_fails(&config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("names a live jnhpd (pid {})", s.pid())),
        "{out}"
    );

    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit().code(), Some(0));
    assert!(!pidfile.exists());
}

/// Reads datagrams from `socket` until one contains `needle`.
fn receive_until(socket: &UnixDatagram, needle: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut buf = vec![0u8; 65536];
    let mut seen = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no datagram containing {needle:?}; got {seen:?}"
        );
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.contains(needle) {
                    return text;
                }
                seen.push(text);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn syslog_lines_arrive_with_the_configured_facility() {
    let dir = tempfile::tempdir().unwrap();
    let socket = UnixDatagram::bind(dir.path().join("log.sock")).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let config = config_in(
        dir.path(),
        "[log]\ntarget = \"syslog\"\nsyslog_facility = \"local3\"\nsyslog_socket = \"log.sock\"\n",
    );
    let mut child = Command::new(common::bin())
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _reap = Reap(child.id() as i32);
    // local3 = 19, info = 6: priority 19 * 8 + 6 = 158.
    let started = receive_until(&socket, "listening on");
    assert!(started.starts_with("<158>"), "{started}");
    assert!(
        started.contains(&format!("jnhpd[{}]", child.id())),
        "{started}"
    );
    let addr = started
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert_eq!(
        Client::connect(addr.parse().unwrap()).ask("STORE a b"),
        "W00T!"
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let stopped = receive_until(&socket, "stopped");
    assert!(stopped.starts_with("<158>"), "{stopped}");
    assert_eq!(common::wait_exit(&mut child).code(), Some(0));
}

#[test]
fn readiness_reload_and_stop_are_told_to_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let config = config_in(dir.path(), "");
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &path);
    let mut s = Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(config));
    receive_until(&socket, "READY=1");
    s.signal(Signal::SIGHUP);
    let reloading = receive_until(&socket, "RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    receive_until(&socket, "READY=1");
    s.signal(Signal::SIGTERM);
    receive_until(&socket, "STOPPING=1");
    assert_eq!(s.wait_exit().code(), Some(0));
}

#[test]
fn socket_activation_serves_on_the_inherited_listener() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let dir = tempfile::tempdir().unwrap();
    // The config would listen elsewhere: the inherited socket wins.
    let config = config_in(dir.path(), "[server]\nlisten = [\"127.0.0.1:1\"]\n");
    let mut cmd = Command::new("sh");
    // As systemd does: the socket at fd 3, LISTEN_PID naming the process
    // (sh execs jnhpd, keeping its pid).
    cmd.arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\" {}",
            // Move the listener to fd 3, unless it is fd 3 already.
            if fd == 3 {
                String::new()
            } else {
                format!("3<&{fd} {fd}<&-")
            }
        ))
        .arg(common::bin())
        .arg("--config")
        .arg(&config);
    // SAFETY: fcntl is async-signal-safe; it only lets the listener be
    // inherited by the shell.
    unsafe {
        cmd.pre_exec(move || {
            nix::fcntl::fcntl(
                std::os::fd::BorrowedFd::borrow_raw(fd),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .map(drop)
            .map_err(std::io::Error::from)
        });
    }
    let s = Server::spawn(cmd, tempfile::tempdir().unwrap(), None);
    assert_eq!(s.addrs, vec![addr]);
    assert_eq!(Client::connect(addr).ask("STORE a b"), "W00T!");
}

#[test]
fn privileges_are_dropped_after_binding() {
    require!(Root);
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "[daemon]\nuser = \"nobody\"\n");
    let mut cmd = Command::new(common::bin());
    // Port 1023 needs root to bind: jnhpd binds first, then drops.
    let low = (900..1023)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free privileged port");
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{low}")]);
    let s = Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(config));
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let uid = nobody.uid.to_string();
    let gid = nobody.gid.to_string();
    assert_eq!(
        field("Uid:"),
        vec![uid.clone(), uid.clone(), uid.clone(), uid],
        "{status}"
    );
    assert_eq!(
        field("Gid:"),
        vec![gid.clone(), gid.clone(), gid.clone(), gid.clone()],
        "{status}"
    );
    let groups = field("Groups:");
    assert!(
        groups.iter().all(|g| g != "0"),
        "root's groups were kept: {groups:?}"
    );
    assert_eq!(s.connect().ask("STORE a b"), "W00T!");
}

/// Under systemd's journal (JOURNAL_STREAM set) stderr lines carry no
/// timestamp: the journal adds its own.
#[test]
fn stderr_lines_have_no_timestamp_under_the_journal() {
    let mut plain = Command::new(common::bin());
    plain
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("JOURNAL_STREAM");
    let s = Server::spawn(plain, tempfile::tempdir().unwrap(), None);
    let line = s.log.wait_for("listening on");
    assert!(line.starts_with("20"), "a timestamp first: {line}");

    let mut journal = Command::new(common::bin());
    journal
        .args(["--listen", "127.0.0.1:0"])
        .env("JOURNAL_STREAM", "8:12345");
    let s = Server::spawn(journal, tempfile::tempdir().unwrap(), None);
    let line = s.log.wait_for("listening on");
    // The priority the journal reads, then the line without a timestamp.
    assert!(line.starts_with("<6>jnhpd["), "no timestamp: {line}");
}

// --- Files read bounded, signals on every path, the reload's path, the
// check's syslog, the journal's priorities (issue 21, items 2, 5, 14, 15,
// 16).

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// Points the symlink `link` at `target` (replacing what it pointed at).
fn relink(target: &Path, link: &Path) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// Runs `work` on a thread while watching the server's memory: fails at
/// once if it passes 256 MiB, or if `work` takes longer than PATIENCE.
fn watching_memory<T: Send + 'static>(
    server: &Server,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    let deadline = Instant::now() + PATIENCE;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(done) => return done,
            Err(_) => {
                let rss = server.rss_kib();
                assert!(rss < 256 << 10, "resident memory {rss} KiB");
                assert!(Instant::now() < deadline, "no answer within {PATIENCE:?}");
            }
        }
    }
}

/// Waits until `needle` has been logged `n` times, in bounded memory.
fn wait_for_nth(server: &Server, needle: &str, n: usize) -> String {
    let log = server.log.clone();
    let needle = needle.to_string();
    watching_memory(server, move || {
        loop {
            let lines: Vec<String> = log
                .all()
                .lines()
                .filter(|l| l.contains(&needle))
                .map(str::to_string)
                .collect();
            if lines.len() >= n {
                return lines[n - 1].clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// SIGHUP with the config file a symlink to `/dev/zero`, then to a FIFO:
/// refused at once naming what it is, the running configuration serves
/// on, STOREs and `/healthz` answer, memory stays bounded. (It read
/// `/dev/zero` until memory ran out; the FIFO hung the daemon.)
/// `--check-config` refuses both at once too.
#[test]
fn sighup_with_the_config_file_dev_zero_or_a_fifo_is_refused_and_serving_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let real = config_in(dir.path(), "[admin]\nlisten = [\"127.0.0.1:0\"]\n");
    let link = dir.path().join("link.toml");
    relink(&real, &link);
    let fifo = dir.path().join("config.fifo");
    mkfifo(&fifo);
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(&link)
        .args(["--listen", "127.0.0.1:0"]);
    let s = Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(link.clone()));
    let admin = common::admin_addr(&s);
    for (n, (target, kind)) in [
        (Path::new("/dev/zero"), "a character device"),
        (&fifo, "a FIFO"),
    ]
    .into_iter()
    .enumerate()
    {
        relink(target, &link);
        s.signal(Signal::SIGHUP);
        let refused = wait_for_nth(&s, "keeping the running configuration", n + 1);
        assert!(
            refused.contains(&format!("cannot read: it is {kind}, not a regular file")),
            "{refused}"
        );
        assert_eq!(common::get(admin, "/healthz").0, 200);
        let addr = s.addr();
        let stored = watching_memory(&s, move || {
            Client::connect(addr).ask(&format!("STORE n{n} v"))
        });
        assert_eq!(stored, "W00T!");
        let (code, out) = run_to_exit(
            &["--check-config", "--config", link.to_str().unwrap()],
            dir.path(),
        );
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(&format!("it is {kind}")), "{out}");
    }
    relink(&real, &link);
    s.signal(Signal::SIGHUP);
    wait_for_nth(&s, "SIGHUP: configuration reloaded", 1);
}

/// The denylist swapped for `/dev/zero`, then for a FIFO: STOREs keep
/// being answered with the list read before (it took gigabytes on the
/// next STORE, and a FIFO hung every STORE: the lock was held across the
/// read).
#[test]
fn a_denylist_swapped_for_dev_zero_or_a_fifo_keeps_the_list_read_before() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("deny.txt");
    std::fs::write(&list, "bad-value\n").unwrap();
    let link = dir.path().join("deny-link");
    relink(&list, &link);
    let fifo = dir.path().join("deny.fifo");
    mkfifo(&fifo);
    let config = config_in(
        dir.path(),
        &format!(
            "[[validator]]\nkind = \"blocking\"\nfunction = \"denylist\"\npath = \"{}\"\n",
            link.display()
        ),
    );
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"]);
    let s = Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(config));
    let addr = s.addr();
    assert_eq!(Client::connect(addr).ask("STORE first bad-value"), "RARGH!");
    for (n, (target, kind)) in [
        (Path::new("/dev/zero"), "a character device"),
        (&fifo, "a FIFO"),
    ]
    .into_iter()
    .enumerate()
    {
        relink(target, &link);
        // The file is looked at again once a second, on a STORE: store
        // until the refusal is logged.
        let log = s.log.clone();
        let warned = watching_memory(&s, move || {
            let mut c = Client::connect(addr);
            for i in 0.. {
                assert_eq!(c.ask(&format!("STORE n{n}-{i} bad-value")), "RARGH!");
                let warned: Vec<String> = log
                    .all()
                    .lines()
                    .filter(|l| l.contains("keeping the 1 entries read before"))
                    .map(str::to_string)
                    .collect();
                if warned.len() > n {
                    return warned[n].clone();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            unreachable!()
        });
        assert!(
            warned.contains(&format!("it is {kind}, not a regular file")),
            "{warned}"
        );
        assert_eq!(
            Client::connect(addr).ask(&format!("STORE ok-{n} fine")),
            "W00T!"
        );
        // Back to the file, so the next refusal is logged again.
        relink(&list, &link);
        let log = s.log.clone();
        watching_memory(&s, move || {
            let mut c = Client::connect(addr);
            for i in 0.. {
                c.ask(&format!("STORE back{n}-{i} x"));
                if log.count(": 1 entries") > n {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    }
}

/// A PostgreSQL "server" that accepts connections and never answers:
/// returns it and a config naming it, with a long connect timeout.
fn silent_postgres(dir: &Path) -> (std::net::TcpListener, std::path::PathBuf) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = config_in(
        dir,
        &format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\n\
             url = \"postgres://jnhp@127.0.0.1:{port}/names\"\nconnect_timeout_secs = 600\n"
        ),
    );
    (listener, config)
}

/// `--check-config` and `--import-datafile` waiting on an unreachable
/// PostgreSQL end on SIGTERM and on SIGINT (the signals blocked at start
/// stayed blocked on these paths: they ran their whole connect timeout,
/// or forever).
#[test]
fn check_config_and_import_end_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, config) = silent_postgres(dir.path());
    listener.set_nonblocking(true).unwrap();
    // A data file with one record, for the import.
    let data = dir.path().join("names.data");
    let mut bytes = jnhpd::datafile::MAGIC.to_vec();
    bytes.extend_from_slice(&jnhpd::datafile::VERSION.to_le_bytes());
    bytes.resize(jnhpd::datafile::HEADER_LEN, 0);
    jnhpd::datafile::encode_record(b"a", b"1", &mut bytes);
    std::fs::write(&data, bytes).unwrap();
    let mut held = Vec::new();
    for mode in [
        &["--check-config"][..],
        &["--import-datafile", "names.data"],
    ] {
        for signal in [Signal::SIGTERM, Signal::SIGINT] {
            let mut child = Command::new(common::bin())
                .current_dir(dir.path())
                .arg("--config")
                .arg(&config)
                .args(mode)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let pid = child.id() as i32;
            let _reap = Reap(pid);
            // Wait until it has connected: then it waits on the server.
            let deadline = Instant::now() + PATIENCE;
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        held.push(stream);
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "{mode:?} never connected");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            kill(Pid::from_raw(pid), signal).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "{mode:?} still running 10 s after {signal}"
                );
                std::thread::sleep(Duration::from_millis(10));
            };
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(signal as i32), "{mode:?}: {status}");
        }
    }
}

/// `--daemon` with a relative `--config`: the daemon changes to its
/// workdir, and SIGHUP still reads the file meant at start (it was always
/// refused with "cannot read").
#[test]
fn sighup_rereads_a_relative_config_under_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = tempfile::tempdir().unwrap();
    config_in(
        dir.path(),
        &format!(
            "[daemon]\npidfile = \"jnhpd.pid\"\nworkdir = \"{}\"\n",
            workdir.path().display()
        ),
    );
    let mut cmd = Command::new(common::bin());
    cmd.current_dir(dir.path()).args([
        "--config",
        "jnhp.toml",
        "--daemon",
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut s = Server::spawn(cmd, tempfile::tempdir().unwrap(), None);
    assert_eq!(s.wait_exit().code(), Some(0), "the launcher exits 0");
    let started = s.log.wait_for("listening on");
    let pid: i32 = started
        .split("jnhpd[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap();
    let _reap = Reap(pid);
    // Relative paths in the file are relative to the file, not the workdir.
    assert_eq!(read_pid(&dir.path().join("jnhpd.pid")), pid);
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, workdir.path().canonicalize().unwrap());
    kill(Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    let reloaded = s.log.wait_for("SIGHUP: ");
    assert!(
        reloaded.contains("SIGHUP: configuration reloaded"),
        "{reloaded}"
    );
    assert_eq!(s.connect().ask("STORE a b"), "W00T!");
}

/// `--check-config` refuses a syslog socket that the start refuses
/// (it said "configuration OK" to one that does not exist), and accepts
/// one that is there.
#[test]
fn check_config_refuses_a_syslog_socket_the_start_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(
        dir.path(),
        "[log]\ntarget = \"syslog\"\nsyslog_socket = \"missing.sock\"\n",
    );
    let (code, out) = start_fails(&config);
    assert_eq!(code, 1, "the start refuses it: {out}");
    let (code, out) = run_to_exit(
        &["--check-config", "--config", config.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("log.syslog_socket") && out.contains("missing.sock"),
        "{out}"
    );
    let _socket = UnixDatagram::bind(dir.path().join("log.sock")).unwrap();
    let config = config_in(
        dir.path(),
        "[log]\ntarget = \"syslog\"\nsyslog_socket = \"log.sock\"\n",
    );
    let (code, out) = run_to_exit(
        &["--check-config", "--config", config.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
}

/// Under the journal (JOURNAL_STREAM set), each stderr line begins with
/// its syslog priority, `<3>` errors, `<4>` warnings, `<6>` information
/// (sd-daemon(3)), so `journalctl -p err` finds jnhpd's errors; without
/// it, lines are as before.
#[test]
fn journal_lines_carry_their_priority() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "");
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("JOURNAL_STREAM", "8:12345");
    let s = Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(config.clone()));
    let started = s.log.wait_for("listening on");
    assert!(started.starts_with("<6>jnhpd["), "{started}");
    // A change that needs a restart: a warning, then the reload (info).
    std::fs::write(&config, "[server]\nidle_timeout_secs = 7\n").unwrap();
    s.signal(Signal::SIGHUP);
    let warned = s.log.wait_for("need a restart");
    assert!(warned.starts_with("<4>jnhpd["), "{warned}");
    let reloaded = s.log.wait_for("configuration reloaded");
    assert!(reloaded.starts_with("<6>jnhpd["), "{reloaded}");
    // A config that does not parse: an error.
    std::fs::write(&config, "[server\n").unwrap();
    s.signal(Signal::SIGHUP);
    let refused = s.log.wait_for("keeping the running configuration");
    assert!(refused.starts_with("<3>jnhpd["), "{refused}");
    for line in s.log.all().lines().filter(|l| l.contains("jnhpd[")) {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"]
                .iter()
                .any(|p| line.starts_with(p)),
            "{line}"
        );
    }
}
