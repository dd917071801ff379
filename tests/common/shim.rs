//! `LD_PRELOAD` shims: C source built with the C compiler at test time,
//! to inject faults (a failing `fdatasync`, a slow write, a resolver
//! answering a dead address) into the real programs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `source` into `dir/NAME.so` (`cc -shared -fPIC ... -ldl`) and
/// returns its path; fails the test if it does not build.
pub fn build(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    let lib = dir.join(format!("{name}.so"));
    std::fs::write(&c, source).unwrap();
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&c)
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc) builds the shim");
    assert!(status.success(), "cc failed to build the shim {name}");
    lib
}
