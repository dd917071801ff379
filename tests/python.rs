//! The Python package in `python/`: installed with pip into a fresh
//! virtual environment, then its pytest suite (`python/tests`) run against
//! the jnhpd cargo built. The package is copied first, so that pip's
//! build leaves nothing in the repository.
//!
//! Needs python3 with its `venv` module, and either pytest installed or
//! PyPI reachable to install it (and setuptools, to build the package);
//! where these are missing the test prints one line saying why and
//! passes, except under `CI=true`, where it fails (`.ci/run` installs
//! them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Skips (one line on stderr) or, under `CI=true`, fails.
fn unmet(why: &str) {
    assert!(
        !common::need::in_ci(),
        "{why} — CI=true, where every test must run (.ci/run installs what it needs)"
    );
    eprintln!("python package tests: skipped: {why}");
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn shown(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let keep = name
            .to_str()
            .is_some_and(|n| n != "__pycache__" && n != "build" && !n.ends_with(".egg-info"));
        if !keep {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// A virtual environment with the package and pytest installed; None
/// (after `unmet`) where that cannot be had.
fn venv(dir: &Path) -> Option<PathBuf> {
    if !common::need::on_path("python3") {
        unmet("needs python3 (not on PATH); install Debian's python3 package");
        return None;
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let package = dir.join("package");
    copy_tree(&source, &package);
    let env = dir.join("venv");
    // System site-packages: a pytest installed by the system (Debian's
    // python3-pytest) is used as is, without the network.
    let made = run(Command::new("python3")
        .args(["-m", "venv", "--system-site-packages"])
        .arg(&env));
    if !made.status.success() {
        unmet(&format!(
            "python3 -m venv failed (install Debian's python3-venv): {}",
            shown(&made)
        ));
        return None;
    }
    let python = env.join("bin/python");
    let has = |module: &str| {
        run(Command::new(&python).args(["-c", &format!("import {module}")]))
            .status
            .success()
    };
    // Build with the setuptools at hand if it can (no network), else in
    // pip's isolated build environment (setuptools from PyPI).
    let pip_install = |isolated: bool| {
        let mut install = Command::new(&python);
        install.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ]);
        if !isolated {
            install.arg("--no-build-isolation");
        }
        run(install.arg(&package))
    };
    let local = (has("setuptools") && has("wheel")).then(|| pip_install(false));
    let installed = match local {
        Some(out) if out.status.success() => out,
        _ => pip_install(true),
    };
    if !installed.status.success() {
        unmet(&format!(
            "pip install ./python failed (no PyPI?): {}",
            shown(&installed)
        ));
        return None;
    }
    if !has("pytest") {
        let got = run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "pytest",
        ]));
        if !got.status.success() {
            unmet(&format!(
                "no pytest, and pip install pytest failed (install Debian's python3-pytest): {}",
                shown(&got)
            ));
            return None;
        }
    }
    Some(python)
}

#[test]
fn the_python_package_installs_and_its_tests_pass_against_jnhpd() {
    let dir = tempfile::tempdir().unwrap();
    let Some(python) = venv(dir.path()) else {
        return;
    };
    let tests = dir.path().join("package/tests");
    // Run from the temp dir: `import jnhp` must find the installed
    // package, not a source tree.
    let out = run(Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"])
        .arg(&tests)
        .current_dir(dir.path())
        .env("JNHPD", env!("CARGO_BIN_EXE_jnhpd"))
        .env(
            "JNHP_VALIDATORS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("validators"),
        ));
    let text = shown(&out);
    assert!(out.status.success(), "pytest failed:\n{text}");
    assert!(text.contains(" passed"), "pytest ran no tests:\n{text}");
    if common::need::in_ci() {
        assert!(!text.contains(" skipped"), "tests skipped in CI:\n{text}");
    }
}
