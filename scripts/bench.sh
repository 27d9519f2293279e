#!/usr/bin/env bash
# All benchmarks, one command (root): network restriction cost and policy
# load time, login latency and daemon memory, exec storm with recording. Prints numbers; see
# BENCHMARKS.md for how to read them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# The login benchmark loads target/release/libpam_restrict.so.
cargo build --release --quiet
cargo bench --quiet -p restrictd --bench connect
cargo bench --quiet -p restrictd --bench login
cargo bench --quiet -p restrictd --bench recording
