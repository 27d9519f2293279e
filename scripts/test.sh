#!/usr/bin/env bash
# All tests: installs what is missing, then formatting and lint checks, unit
# tests, the real-kernel tests (BPF, cgroups, journald/syslog, sshd, D-Bus),
# a short fuzzing run of the input parsers (scripts/fuzz.sh) and the VM tests
# of the packages (vm-tests/run.sh). Needs root.
# SKIP_VM_TESTS=1 leaves the VM tests out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
# The eBPF crate, linted for its own target with the pinned nightly.
cargo "+$(cat BPF_NIGHTLY)" clippy --quiet -p restrictd-ebpf --release \
    --target bpfel-unknown-none -Z build-std=core -- -D warnings
# `cargo test` does not emit pam_restrict's cdylib; the PAM/SSH tests load it.
cargo build
cargo test
# A short coverage-guided run of every input parser (the long run is in
# README "Testing").
SKIP_SETUP=1 bash scripts/fuzz.sh
if [ "${SKIP_VM_TESTS:-}" != 1 ]; then
    SKIP_SETUP=1 bash vm-tests/run.sh
fi
