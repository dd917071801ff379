//! jnhpd on a data file kept in a directory across restarts, and
//! `jnhpd data ...` (or any jnhpd command) run to its exit.

use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use super::Server;

/// What a finished command left: exit code, stdout, stderr.
pub struct Ran {
    pub code: i32,
    pub out: String,
    pub err: String,
}

impl Ran {
    /// All of it, for an assertion's message.
    pub fn all(&self) -> String {
        format!(
            "exit {}\nstdout: {}\nstderr: {}",
            self.code, self.out, self.err
        )
    }
}

/// Runs `jnhpd ARGS` in `dir` to its exit (within PATIENCE).
pub fn jnhpd(dir: &Path, args: &[&str]) -> Ran {
    run(Command::new(super::bin()).args(args).current_dir(dir))
}

/// Runs `jnhpd data import --config CONFIG INPUT` in `dir` to its exit.
pub fn import(dir: &Path, config: &str, input: &str) -> Ran {
    jnhpd(dir, &["data", "import", "--config", config, input])
}

/// Runs `jnhpd ARGS` in `dir` to its exit (within PATIENCE), its
/// standard output going to `stdout` (None: a file read back).
pub fn jnhpd_to(dir: &Path, args: &[&str], stdout: Option<Stdio>) -> Ran {
    run_to(
        Command::new(super::bin()).args(args).current_dir(dir),
        stdout,
    )
}

/// Runs `cmd` to its exit (within PATIENCE), stdin empty.
pub fn run(cmd: &mut Command) -> Ran {
    run_to(cmd, None)
}

/// Runs `cmd` to its exit (within PATIENCE), stdin empty, its standard
/// output going to `stdout` (None: a file read back).
pub fn run_to(cmd: &mut Command, stdout: Option<Stdio>) -> Ran {
    let out_file = tempfile::tempfile().unwrap();
    let err_file = tempfile::tempfile().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(stdout.unwrap_or_else(|| out_file.try_clone().unwrap().into()))
        .stderr(err_file.try_clone().unwrap())
        .spawn()
        .unwrap();
    let status = super::wait_exit(&mut child);
    let read = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut s = Vec::new();
        f.read_to_end(&mut s).unwrap();
        String::from_utf8_lossy(&s).into_owned()
    };
    Ran {
        code: status.code().unwrap_or(-1),
        out: read(out_file),
        err: read(err_file),
    }
}

/// A path as a command line argument (the tests' paths are UTF-8).
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A `[storage]` section for the data file at `path`.
pub fn config(path: &Path, fsync: &str) -> String {
    format!(
        "[storage]\npath = \"{}\"\nfsync = \"{fsync}\"\n",
        path.display()
    )
}

/// Starts jnhpd with `config` written to `dir/jnhp.toml`; the data stays
/// in `dir` across restarts (the server's own temp dir is unused).
pub fn start(dir: &Path, config: &str) -> Server {
    let path = dir.join("jnhp.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(super::bin());
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"]);
    Server::spawn(cmd, tempfile::tempdir().unwrap(), Some(path))
}

/// SIGTERM, and the clean exit it must bring.
pub fn stop(mut server: Server) {
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success());
}
