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
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
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
    assert!(line.starts_with("jnhpd["), "no timestamp: {line}");
}
