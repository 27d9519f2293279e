#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the parsers that take
# outside input: policy, config, PAM arguments, kernel records (fuzz/).
# FUZZ_SECONDS per target (default 20: the short run the test command makes),
# or FUZZ_RUNS executions per target (the long run: FUZZ_RUNS=10000000).
# A crash, a hang (-timeout) or an allocation over -malloc_limit_mb fails the
# run and leaves the input in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SKIP_SETUP:-}" = 1 ] || bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
nightly=$(tr -d '[:space:]' < BPF_NIGHTLY)
if [ -n "${FUZZ_RUNS:-}" ]; then
    budget=(-runs="$FUZZ_RUNS")
else
    budget=(-max_total_time="${FUZZ_SECONDS:-20}")
fi
for t in policy config pam_args record; do
    corpus=target/fuzz-corpus/$t
    mkdir -p "$corpus" "fuzz/seeds/$t"
    echo "== fuzz $t (${budget[*]})"
    # -s none: the targets are safe Rust; coverage guidance is what matters,
    # and the build is faster without AddressSanitizer.
    log=target/fuzz-$t.log
    if ! cargo "+$nightly" fuzz run --fuzz-dir fuzz -s none "$t" "$corpus" "fuzz/seeds/$t" -- \
        "${budget[@]}" -timeout=10 -malloc_limit_mb=512 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz $t failed: the input is in fuzz/artifacts/$t" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log"
done
