#!/usr/bin/env bash
# The main job: a restricted, recorded session, end to end.
# Installs what is missing, builds, starts two loopback web servers
# (127.0.0.1 allowed, 127.0.0.2 denied by examples/demo-policy.yaml), runs curl
# against both inside `restrictd run`, and shows the denial event as JSON and
# as the system journal has it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet
bin=target/release/restrictd

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for ip in 127.0.0.1 127.0.0.2; do
  mkdir -p "$work/$ip" && echo "hello from $ip" > "$work/$ip/index.html"
  python3 -m http.server --bind "$ip" --directory "$work/$ip" "$port" >/dev/null 2>&1 &
  pids+=($!)
done
for ip in 127.0.0.1 127.0.0.2; do
  for _ in $(seq 100); do curl -s "http://$ip:$port/" >/dev/null && break; sleep 0.05; done
done

echo "== policy (examples/demo-policy.yaml)"
$bin check examples/demo-policy.yaml
echo
echo "== inside a restricted session: read /etc/hostname, curl 127.0.0.1 (allowed), then 127.0.0.2 (denied)"
session='cat /etc/hostname >/dev/null; curl -sS --max-time 5 http://127.0.0.1:'$port'/; out=$(curl -sv --max-time 5 http://127.0.0.2:'$port'/ 2>&1); rc=$?; printf "%s\n" "$out" | grep -E "Immediate connect fail|Failed to connect"; echo "curl exit status: $rc"'
run=("$bin" run --policy examples/demo-policy.yaml --events "$work/events.jsonl" -- sh -c "$session")
if [ -S /run/systemd/journal/socket ]; then
  "${run[@]}" || true
  journal=(journalctl --no-pager -o json SYSLOG_IDENTIFIER=restrictd)
else
  # No journald on this host: run the session with a private, standalone one.
  tests/with-journald.sh "$work/journal.json" "${run[@]}" || true
  journal=(cat "$work/journal.json")
fi
echo
echo "== what the session did, as recorded (restrictd --events: Teleport's JSON events)"
python3 - "$work/events.jsonl" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
for e in events:
    if e["event"] == "session.command":
        print("  command  %-6s %s" % (e["return_code"], " ".join([e["path"]] + e["argv"])))
    elif e["event"] == "session.network":
        verdict = "DENIED" if e["action"] == 1 else "allowed"
        print("  network  %-7s %s -> %s:%s" % (verdict, e["program"], e["dst_addr"], e["dst_port"]))
    elif e["event"] == "session.disk" and e["path"].startswith("/etc/host"):
        print("  open     %-6s %s by %s" % (e["return_code"], e["path"], e["program"]))
opens = [e for e in events if e["event"] == "session.disk"]
print("  (%d file opens recorded in all, shared libraries and config files included)" % len(opens))
denial = next(e for e in events if e["event"] == "session.network" and e["action"] == 1)
print()
print("the denial event:")
print(json.dumps(denial, indent=4))
PY
sid=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["sid"])' "$work/events.jsonl")
echo
echo "== the same events in the journal (journalctl SYSLOG_IDENTIFIER=restrictd SESSION_ID=$sid)"
"${journal[@]}" | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    if e.get("SESSION_ID") != sys.argv[1]:
        continue
    if e.get("EVENT") == "session.disk" and not e.get("PATH", "").startswith("/etc/host"):
        continue
    print("  " + e["MESSAGE"])
    if e.get("ACTION") == "1":
        for k in ("MESSAGE_ID", "PRIORITY", "EVENT", "SESSION_ID", "PROGRAM", "DST_ADDR", "DST_PORT", "ACTION"):
            print("      %s=%s" % (k, e.get(k)))
' "$sid"
