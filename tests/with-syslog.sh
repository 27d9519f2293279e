#!/usr/bin/env bash
# Runs CMD on a host view with no journald but a syslog socket at /dev/log
# whose datagrams are written to OUT (one per line). Uses a private mount
# namespace: /run/systemd and /dev are replaced there only.
# Usage: with-syslog.sh OUT CMD [ARGS...]
set -euo pipefail
if [ -z "${RESTRICTD_IN_NS:-}" ]; then
  RESTRICTD_IN_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi
out=$1; shift
mount -t tmpfs tmpfs /run/systemd
keep=$(mktemp -d)
mount --rbind /dev "$keep"
mount -t tmpfs tmpfs /dev
for n in null zero full random urandom tty pts; do
  if [ -d "$keep/$n" ]; then mkdir "/dev/$n"; else touch "/dev/$n"; fi
  mount --rbind "$keep/$n" "/dev/$n"
done
python3 - "$out" <<'PY' &
import socket, sys, os
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
open("/dev/log.ready", "w").close()
with open(sys.argv[1], "ab", buffering=0) as f:
    while True:
        d = s.recv(1 << 20)
        f.write(d.rstrip(b"\n").replace(b"\n", b" ") + b"\n")
PY
rpid=$!
trap 'kill $rpid 2>/dev/null; wait $rpid 2>/dev/null || true' EXIT
for _ in $(seq 200); do [ -e /dev/log.ready ] && break; sleep 0.02; done
set +e
"$@"
rc=$?
set -e
sleep 0.2
exit $rc
