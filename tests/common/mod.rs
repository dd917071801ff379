//! Test harness: the real `jnhpd` binary on an ephemeral port, and a plain
//! blocking line client.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod datafile;
pub mod man_page;
pub mod need;
pub mod shim;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Generous: the machine has two noisy cores. Nothing waits this long
/// unless something is broken.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Lines the server wrote to stderr, with a condvar to wait on new ones.
#[derive(Default)]
pub struct Log {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Log {
    /// Waits until a line containing `needle` has been logged; returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no log line containing {needle:?}; log:\n{}",
                lines.join("\n")
            );
            lines = self.changed.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Adds a line (for tests that read a process's stderr themselves).
    pub fn push(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
        self.changed.notify_all();
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn all(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

pub struct Server {
    pub child: Child,
    pub addrs: Vec<SocketAddr>,
    /// The TLS ports (`tls.listen`).
    pub tls_addrs: Vec<SocketAddr>,
    pub log: Arc<Log>,
    pub dir: tempfile::TempDir,
    pub config: Option<PathBuf>,
}

/// The `jnhpd` binary under test. Tests of the daemon's own package get
/// its path from cargo; other packages of the workspace (the `jnhp`
/// command's tests) find it beside their own test binary, where a
/// workspace `cargo test` has built it.
pub fn bin() -> String {
    if let Some(path) = option_env!("CARGO_BIN_EXE_jnhpd") {
        return path.to_string();
    }
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(Path::parent).unwrap().join("jnhpd");
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test` at the workspace root",
        path.display()
    );
    path.display().to_string()
}

impl Server {
    /// Starts jnhpd on 127.0.0.1:0 with `config` (TOML text, written to a
    /// temp file) and waits until it listens.
    pub fn start(config: &str) -> Server {
        Server::start_with(config, &["--listen", "127.0.0.1:0"])
    }

    /// Like `start`, with explicit command-line arguments.
    pub fn start_with(config: &str, args: &[&str]) -> Server {
        Server::start_in_with(tempfile::tempdir().unwrap(), config, args)
    }

    /// Like `start`, in a directory prepared beforehand (scripts the config
    /// names must exist before the server starts).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Server {
        Server::start_in_with(dir, config, &["--listen", "127.0.0.1:0"])
    }

    fn start_in_with(dir: tempfile::TempDir, config: &str, args: &[&str]) -> Server {
        let path = dir.path().join("jnhp.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(&path).args(args);
        Server::spawn(cmd, dir, Some(path))
    }

    /// Starts `cmd` with its stderr collected into `log`, without waiting
    /// for anything (for tests that watch the start-up itself).
    pub fn launch(mut cmd: Command) -> (Child, Arc<Log>) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Log::default());
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.push(line);
            }
            sink.push("<stderr closed>".into());
        });
        (child, log)
    }

    pub fn spawn(cmd: Command, dir: tempfile::TempDir, config: Option<PathBuf>) -> Server {
        let (child, log) = Server::launch(cmd);
        let started = log.wait_for("listening on");
        let list = started
            .split("listening on ")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        let (mut addrs, mut tls_addrs) = (Vec::new(), Vec::new());
        for addr in list.split(", ").filter(|a| !a.is_empty()) {
            match addr.strip_prefix("tls ") {
                Some(tls) => tls_addrs.push(tls.parse().unwrap()),
                None => addrs.push(addr.parse().unwrap()),
            }
        }
        Server {
            child,
            addrs,
            tls_addrs,
            log,
            dir,
            config,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr())
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the server to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child)
    }

    /// Resident memory of the server, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes an executable `/bin/sh` script `name` into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A validator script in `dir` that announces each run
/// (`started-<name>-<value>`), waits for a `release` file there, then
/// allows values not starting with "bad".
pub fn gated(dir: &Path) -> PathBuf {
    script(
        dir,
        "gated",
        &format!(
            "cd {dir}\necho $$ > \"started-$JNHP_NAME-$1\"\nwhile [ ! -e release ]; do sleep 0.02; done\n\
             case \"$1\" in bad*) echo JNHP:0 ;; *) echo JNHP:1 ;; esac",
            dir = dir.display()
        ),
    )
}

/// A `[[validator]]` table running `program`, plus `extra` keys.
pub fn process_validator(program: &Path, extra: &str) -> String {
    format!(
        "[[validator]]\nkind = \"process\"\ncommand = [\"{}\"]\n{extra}\n",
        program.display()
    )
}

/// Waits until `path` exists (a script's "I have started" marker).
pub fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a process is running (not gone, not a zombie).
pub fn is_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            state != Some("Z")
        }
    }
}

/// Waits until process `pid` is no longer running (gone or a zombie).
pub fn wait_not_running(pid: i32) {
    let deadline = Instant::now() + PATIENCE;
    while is_running(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the pid written in `pidfile` is no longer running.
pub fn wait_until_gone(pidfile: &Path) -> i32 {
    wait_for_file(pidfile);
    let pid: i32 = std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_not_running(pid);
    pid
}

/// The children of `parent` as (pid, state), from /proc.
pub fn children_of(parent: i32) -> Vec<(i32, String)> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let state = fields.next().unwrap_or("").to_string();
        let ppid: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent {
            children.push((pid, state));
        }
    }
    children
}

pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs jnhpd to completion with `args` (for --check-config and start-up
/// errors); returns (exit code, stdout + stderr).
pub fn run_to_exit(args: &[&str], dir: &Path) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Runs jnhpd on `config` (listening on an ephemeral port), expecting it
/// to refuse to start; returns (exit code, output).
pub fn start_fails(config: &Path) -> (i32, String) {
    let dir = config.parent().unwrap_or(Path::new("."));
    run_to_exit(
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        dir,
    )
}

/// A blocking JNHP connection for tests.
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// Reads one reply line, CRLF included. Panics on EOF.
    pub fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).unwrap();
        assert!(
            !line.is_empty(),
            "connection closed while a reply was expected"
        );
        assert!(
            line.ends_with(b"\r\n"),
            "reply {line:?} does not end with CRLF"
        );
        line
    }

    /// Reads one reply, CRLF removed, as (lossy) text.
    pub fn reply(&mut self) -> String {
        let line = self.line();
        String::from_utf8_lossy(&line[..line.len() - 2]).into_owned()
    }

    /// Sends one request line (CRLF appended) and reads its reply.
    pub fn ask(&mut self, request: &str) -> String {
        self.send(format!("{request}\r\n").as_bytes());
        self.reply()
    }

    pub fn half_close(&self) {
        self.stream().shutdown(Shutdown::Write).unwrap();
    }

    /// Reads until the server closes; returns everything read.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).unwrap();
        rest
    }

    /// Reads until the server closes or resets; returns what was read.
    pub fn read_to_end_or_reset(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            match self.reader.read(&mut chunk) {
                Ok(0) | Err(_) => return rest,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Whether the server closed the connection (EOF or reset) with nothing
    /// more to read.
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// One HTTP/1.1 exchange (`Connection: close`) with an admin listener:
/// status, head, body.
pub fn http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// `GET path` on an admin listener.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

/// The admin listener's address, from the server's start-up log.
pub fn admin_addr(server: &Server) -> SocketAddr {
    let line = server
        .log
        .wait_for("admin (metrics, health, status page) on http://");
    line.split("http://")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `/metrics` as `name{labels}` → value.
pub fn metrics(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let (status, _, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}
