#!/usr/bin/env bash
# Builds target/debian/jnhpd_<version>_<arch>.deb: both binaries (jnhpd and
# jnhp), their man pages and shell completions (generated from the command
# line definitions), the systemd units, the config and the example
# validators. Needs cargo-deb (`cargo install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin jnhpd --bin jnhp
rm -rf target/man
target/release/jnhpd --write-man-pages target/man
target/release/jnhp --write-man-pages target/man
cargo deb --no-build --locked -p jnhpd "$@"
ls -t target/debian/jnhpd_*.deb | head -1
