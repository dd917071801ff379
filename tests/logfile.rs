//! `log.target = "file"`: a daemon started with `--daemon` appends its log
//! to a file, which logrotate renames and then signals with SIGHUP.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, run_to_exit, start_fails, wait_not_running};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Kills the daemon (by pid) when the test ends, whatever happens.
struct Reap(i32);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until `path` holds a line containing `needle`.
fn wait_for_line(path: &Path, needle: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !read(path).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{} has no line containing {needle:?}:\n{}",
            path.display(),
            read(path)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every line is whole and as the log writes it: a timestamp, the
/// process, the level, the message, the line end.
fn assert_whole_lines(path: &Path, pid: i32) {
    let text = read(path);
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends mid-line",
        path.display()
    );
    for line in text.lines() {
        let (stamp, rest) = line.split_once(' ').unwrap_or(("", ""));
        assert!(
            stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{}: no timestamp: {line:?}",
            path.display()
        );
        assert!(
            rest.starts_with(&format!("jnhpd[{pid}]: ")),
            "{}: {line:?}",
            path.display()
        );
    }
}

/// Opens connections (each logged, at debug level, as `connection from
/// 127.0.0.1:PORT`) one after another until stopped; counts them.
struct Traffic {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(addr: std::net::SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, made) = (stop.clone(), made.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    // The reply comes after the accept loop logged the
                    // connection: once answered, its line is written.
                    assert_eq!(Client::connect(addr).ask("EXISTS x"), "RARGH!");
                    made.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        Traffic {
            stop,
            made,
            thread: Some(thread),
        }
    }

    fn made(&self) -> usize {
        self.made.load(Ordering::SeqCst)
    }

    /// Waits until `more` connections beyond `from` were made.
    fn wait_for(&self, from: usize, more: usize) -> usize {
        let deadline = Instant::now() + PATIENCE;
        while self.made() < from + more {
            assert!(Instant::now() < deadline, "the traffic stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.made()
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.made()
    }
}

/// Starts `jnhpd --daemon` on `port` with `config`; returns the daemon's
/// pid once the launcher exited 0 (it does once the daemon serves).
fn start_daemon(config: &Path, port: u16) -> i32 {
    let status = Command::new(common::bin())
        .arg("--config")
        .arg(config)
        .args(["--daemon", "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "the launcher exits 0");
    let pidfile = config.parent().unwrap().join("jnhpd.pid");
    read(&pidfile).trim().parse().unwrap()
}

#[test]
fn a_daemon_logs_to_its_file_and_reopens_it_on_sighup_after_a_rename() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jnhp.toml");
    // A relative log.file is relative to the config's directory, although
    // the daemon changes directory to /.
    std::fs::write(
        &config,
        "[daemon]\npidfile = \"jnhpd.pid\"\numask = \"0022\"\nworkdir = \"/\"\n\
         [log]\ntarget = \"file\"\nfile = \"jnhpd.log\"\nlevel = \"debug\"\n",
    )
    .unwrap();
    let port = free_port();
    let pid = start_daemon(&config, port);
    let _reap = Reap(pid);
    let log: PathBuf = dir.path().join("jnhpd.log");
    wait_for_line(&log, "listening on 127.0.0.1:");
    // 0640 less the umask (0022).
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);

    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let traffic = Traffic::start(addr);
    let made = traffic.wait_for(0, 50);

    // logrotate's way: rename, then SIGHUP. Connections keep coming.
    let first = dir.path().join("jnhpd.log.1");
    std::fs::rename(&log, &first).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    wait_for_line(&log, "reopened");
    let made = traffic.wait_for(made, 50);
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);

    // A reopen that fails (a directory where the file was) keeps the file
    // open before, which says why.
    let second = dir.path().join("jnhpd.log.2");
    std::fs::rename(&log, &second).unwrap();
    std::fs::create_dir(&log).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    wait_for_line(&second, "still writing to the log file opened before");
    assert!(
        read(&second).contains("it is a directory"),
        "{}",
        read(&second)
    );
    let made = traffic.wait_for(made, 50);
    std::fs::remove_dir(&log).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    wait_for_line(&log, "reopened");
    traffic.wait_for(made, 50);
    let total = traffic.finish();

    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    wait_not_running(pid);
    wait_for_line(&log, "stopped");

    // Nothing lost, nothing twice, no line split between files.
    let files = [&first, &second, &log];
    let mut logged = 0;
    for file in files {
        assert_whole_lines(file, pid);
        logged += read(file).matches("DEBUG: connection from ").count();
    }
    assert_eq!(logged, total, "every connection logged exactly once");
    assert!(read(&first).contains("listening on"));
    assert!(!read(&first).contains("reopened"));
    for file in [&second, &log] {
        assert!(
            read(file).contains("connection from"),
            "{} got no traffic",
            file.display()
        );
    }
}

#[test]
fn start_refuses_a_log_file_it_cannot_append_to() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jnhp.toml");
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::create_dir(dir.path().join("a-dir")).unwrap();
    for (file, says) in [
        ("a-dir", "it is a directory"),
        ("fifo", "it is a FIFO"),
        ("no-such-dir/jnhpd.log", "No such file or directory"),
    ] {
        std::fs::write(
            &config,
            format!("[log]\ntarget = \"file\"\nfile = \"{file}\"\n"),
        )
        .unwrap();
        let path = dir.path().join(file);
        let (code, out) = start_fails(&config);
        assert_eq!(code, 1, "{file}: {out}");
        assert!(
            out.contains(&format!(
                "{}:3: log.file: cannot append to {}: ",
                config.display(),
                path.display()
            )) && out.contains(says),
            "{file}: {out}"
        );
        // --daemon: the launcher says it too.
        let (code, out) = run_to_exit(
            &[
                "--config",
                config.to_str().unwrap(),
                "--daemon",
                "--listen",
                "127.0.0.1:0",
            ],
            dir.path(),
        );
        assert_eq!(code, 1, "{file}: {out}");
        assert!(out.contains("log.file: cannot append to"), "{file}: {out}");
        // --check-config refuses it as well.
        let (code, out) = run_to_exit(
            &["--check-config", "--config", config.to_str().unwrap()],
            dir.path(),
        );
        assert_eq!(code, 1, "{file}: {out}");
        assert!(out.contains("log.file: cannot"), "{file}: {out}");
    }
    // A file that can be created passes the check, which creates nothing.
    std::fs::write(&config, "[log]\ntarget = \"file\"\nfile = \"new.log\"\n").unwrap();
    let (code, out) = run_to_exit(
        &["--check-config", "--config", config.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(!dir.path().join("new.log").exists());
    // One of jnhpd's own files: refused before anything is appended.
    let data = dir.path().join("data");
    std::fs::write(&data, b"").unwrap();
    for (file, what) in [
        ("data", "the data file (storage.path)"),
        ("jnhp.toml", "the config file itself"),
        ("./jnhpd.pid", "the pidfile (daemon.pidfile)"),
    ] {
        std::fs::write(
            &config,
            format!(
                "[storage]\npath = \"data\"\n[daemon]\npidfile = \"jnhpd.pid\"\n\
                 [log]\ntarget = \"file\"\nfile = \"{file}\"\n"
            ),
        )
        .unwrap();
        let before = std::fs::read(&config).unwrap();
        // The check parses the file as a start does, and always exits
        // (a start that wrongly accepted it would serve on).
        let (code, out) = run_to_exit(
            &["--check-config", "--config", config.to_str().unwrap()],
            dir.path(),
        );
        assert_eq!(code, 1, "{file}: {out}");
        assert!(
            out.contains(&format!("{}:7: log.file: ", config.display()))
                && out.contains(&format!(
                    "is {what}: log lines appended there would damage it"
                )),
            "{file}: {out}"
        );
        assert_eq!(std::fs::read(&data).unwrap(), b"", "{file}");
        assert_eq!(std::fs::read(&config).unwrap(), before, "{file}");
    }
    // target = "file" without a file.
    std::fs::write(&config, "[log]\ntarget = \"file\"\n").unwrap();
    let (code, out) = start_fails(&config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "{}:2: log.file: log.target = \"file\" needs log.file",
            config.display()
        )),
        "{out}"
    );
}

/// A file the user jnhpd runs as may not append to (or a directory it may
/// not create files in) is refused at start and by the check. Root is
/// needed to be another user; root itself may write anywhere.
#[test]
fn a_log_file_the_user_may_not_write_is_refused() {
    require!(Root);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let owned_by_root = dir.path().join("root.log");
    std::fs::write(&owned_by_root, b"").unwrap();
    std::fs::set_permissions(&owned_by_root, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (file, says) in [
        ("root.log", "cannot append to"),
        ("new.log", "is not a directory jnhpd can create files in"),
    ] {
        let config = dir.path().join(format!("{file}.toml"));
        std::fs::write(
            &config,
            format!("[log]\ntarget = \"file\"\nfile = \"{file}\"\n"),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let as_nobody = |args: &[&str]| {
            let out = Command::new("runuser")
                .args(["-u", "nobody", "--", &common::bin(), "--config"])
                .arg(&config)
                .args(args)
                .current_dir("/")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (code, err) = as_nobody(&["--check-config"]);
        assert_eq!(code, Some(1), "{file}: {err}");
        assert!(
            err.contains(":3: log.file: ") && err.contains(says),
            "{file}: {err}"
        );
        let (code, err) = as_nobody(&["--listen", "127.0.0.1:0"]);
        assert_eq!(code, Some(1), "{file}: {err}");
        assert!(
            err.contains(":3: log.file: cannot append to") && err.contains("Permission denied"),
            "{file}: {err}"
        );
    }
    assert!(!dir.path().join("new.log").exists());
}
