//! Running the `jnhp` command to its exit, for the tests of this crate
//! (a directory module, so cargo builds no test binary of it; it is not in
//! tests/common since only this crate has `CARGO_BIN_EXE_jnhp`).

use std::process::{Command, Stdio};

/// `jnhp ARGS` with `env` set (and neither `JNHP_ADDR` nor
/// `JNHP_ADMIN_ADDR` unless `env` sets it), its standard streams as
/// given; returns exit code, stdout, stderr (empty where not piped).
/// Fails the test unless it exits within `common::PATIENCE`.
pub fn jnhp(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> (i32, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_jnhp"))
        .args(args)
        .env_remove("JNHP_ADDR")
        .env_remove("JNHP_ADMIN_ADDR")
        .envs(env.iter().copied())
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap();
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let patience = crate::common::PATIENCE;
    let out = wait
        .recv_timeout(patience)
        .unwrap_or_else(|_| panic!("jnhp {args:?} did not exit within {patience:?}"))
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
