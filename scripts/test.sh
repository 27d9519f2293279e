#!/usr/bin/env bash
# All tests: installs what is missing, then formatting and lint checks, unit
# tests and the real-kernel tests (BPF, cgroups, journald/syslog). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
# `cargo test` does not emit pam_restrict's cdylib; the PAM/SSH tests load it.
cargo build
cargo test
