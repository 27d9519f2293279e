#!/usr/bin/env bash
# Runs CMD with a private, standalone systemd-journald (no systemd PID 1
# needed), then prints what the journal received from restrictd as JSON lines.
# Everything happens in a new mount namespace, so the host's /run and journal
# are untouched and parallel runs do not see each other.
# Usage: with-journald.sh OUT_JSON CMD [ARGS...]
# With WITH_JOURNALD_FIELD=NAME, OUT_JSON gets only that field of each
# entry, one per line (EVENT_JSON: restrictd's events as JSON lines).
set -euo pipefail
if [ -z "${RESTRICTD_IN_NS:-}" ]; then
  RESTRICTD_IN_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi
out=$1; shift
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/log && mount -t tmpfs tmpfs /run/log
[ -d /var/log/journal ] && mount -t tmpfs tmpfs /var/log/journal
# As restrictd.service's LogRateLimitIntervalSec=0: journald keeps every
# event, a storm's too (its default drops past 10,000 in 30 s).
conf=$(mktemp)
printf '[Journal]\nRateLimitIntervalSec=0\nRuntimeMaxUse=4G\nSystemMaxUse=4G\n' > "$conf"
[ -f /etc/systemd/journald.conf ] && mount --bind "$conf" /etc/systemd/journald.conf
rm -f "$conf"
journald=/lib/systemd/systemd-journald
[ -x "$journald" ] || journald=/usr/lib/systemd/systemd-journald
"$journald" >/dev/null 2>&1 &
jpid=$!
trap 'kill $jpid 2>/dev/null; wait $jpid 2>/dev/null || true' EXIT
for _ in $(seq 200); do [ -S /run/systemd/journal/socket ] && break; sleep 0.02; done
[ -S /run/systemd/journal/socket ] || { echo "with-journald: journald did not start" >&2; exit 98; }
set +e
# In the background, so that SIGTERM/SIGINT to this script reach CMD (a daemon).
"$@" &
cpid=$!
trap 'kill -TERM $cpid 2>/dev/null' TERM INT
wait $cpid
rc=$?
[ $rc -gt 128 ] && kill -0 $cpid 2>/dev/null && { wait $cpid; rc=$?; }
set -e
journalctl --sync 2>/dev/null || sleep 0.5
# WITH_JOURNALD_CPU=1: journald's CPU time (user + system clock ticks), for
# benchmarks that count what recording costs the host.
if [ -n "${WITH_JOURNALD_CPU:-}" ]; then
  read -r -a st < /proc/$jpid/stat
  echo "with-journald: journald CPU $(( st[13] + st[14] )) ticks of 1/$(getconf CLK_TCK) s" >&2
fi
# journald writes to /run until told to flush to /var, which nobody does here.
jdir=/run/log/journal
if [ -n "${WITH_JOURNALD_FIELD:-}" ]; then
  journalctl -D "$jdir" -o cat --output-fields="$WITH_JOURNALD_FIELD" --no-pager SYSLOG_IDENTIFIER=restrictd > "$out" || true
else
  journalctl -D "$jdir" -o json --no-pager SYSLOG_IDENTIFIER=restrictd > "$out" || true
fi
exit $rc
