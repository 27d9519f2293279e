#!/usr/bin/env bash
# All benchmarks, one command (root): network restriction cost and policy
# load time, login latency and daemon memory, exec and open storms with
# recording, beside libbpf-tools' execsnoop and opensnoop and auditd, and
# terminal recording's cost through sshd. Prints numbers; see
# BENCHMARKS.md for how to read them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The peers the benchmarks run beside restrictd (nftables for the connect
# cost; execsnoop, opensnoop and auditd for recording); not needed for
# anything else.
missing=()
for p in libbpf-tools auditd nftables; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"
# The login benchmark loads target/release/libpam_restrict.so.
cargo build --release --quiet
cargo bench --quiet -p restrictd --bench connect
cargo bench --quiet -p restrictd --bench login
cargo bench --quiet -p restrictd --bench login -- apply
cargo bench --quiet -p restrictd --bench recording
cargo bench --quiet -p restrictd --bench terminal
