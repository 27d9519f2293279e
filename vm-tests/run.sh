#!/usr/bin/env bash
# End-to-end tests of the packages in a real Debian 12 VM (systemd, journald,
# logind, dbus, sshd), following the README's admin steps: install the .deb,
# add the PAM line, apply a policy, read the journal; then the failure and
# removal paths. As root on a Debian 12 host:
#   vm-tests/run.sh
# Builds the packages (packaging/build.sh) and the guest image (image.sh,
# cached), boots the guest under qemu (TCG) with only its ssh port forwarded
# to 127.0.0.1, and runs every step over ssh: logins as the unprivileged
# user alice, admin commands as root over one persistent connection. All
# traffic in the guest goes to its own loopback addresses.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
if [ "$(id -u)" -ne 0 ]; then
    echo "vm-tests: must run as root (debootstrap, qemu)" >&2
    exit 1
fi
[ "${SKIP_SETUP:-}" = 1 ] || scripts/setup.sh
packaging/build.sh >/dev/null
DEB=$(ls target/packages/restrictd_*_amd64.deb)
# A second build whose kernel state has another map layout (one map one
# entry larger), packed as a newer version of the same package: step 8c
# upgrades to it and downgrades from it under a running session.
DEB2_DIR=$(mktemp -d /tmp/restrictd-deb2.XXXXXX)
RESTRICTD_TEST_LAYOUT=1 cargo build --release --quiet -p restrictd
dpkg-deb -R "$DEB" "$DEB2_DIR/pkg"
install -m 0755 target/release/restrictd "$DEB2_DIR/pkg/usr/sbin/restrictd"
strip --strip-unneeded "$DEB2_DIR/pkg/usr/sbin/restrictd"
sed -i 's/^Version: .*/&+layout2/' "$DEB2_DIR/pkg/DEBIAN/control"
(cd "$DEB2_DIR/pkg" && find usr lib -type f -exec md5sum {} + > DEBIAN/md5sums)
dpkg-deb -b "$DEB2_DIR/pkg" "$DEB2_DIR/restrictd-layout2.deb" >/dev/null
DEB2=$DEB2_DIR/restrictd-layout2.deb
IMG=$(vm-tests/image.sh)
RUN=$(mktemp -d /tmp/restrictd-vm.XXXXXX)
source vm-tests/lib.sh
cleanup() {
    vm_stop
    rm -rf "$DEB2_DIR"
    if [ "${KEEP_VM_LOGS:-}" = 1 ]; then echo "vm-tests: logs in $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

PASSED=0
FAILED=()
ok() { PASSED=$((PASSED + 1)); echo "  ok: $1"; }
fail() { FAILED+=("$1"); echo "  FAIL: $1${2:+ -- $2}"; }
# check NAME CODE: the step passes if the shell code CODE succeeds. Without
# pipefail: `journalctl | grep -q` is a success even when grep, done, makes
# journalctl die of SIGPIPE.
check() {
    if (set +o pipefail; eval "$2") >"$RUN/check.out" 2>&1; then ok "$1"; else fail "$1" "$(tail -5 "$RUN/check.out" | tr '\n' ' ')"; fi
}
has() { grep -qF -- "$2" <<<"$1"; }
step() { echo "== $*"; }

MID_CMD=74fc7442d41a4b4fbf47b8b416832e84
MID_DISK=55a41e0c8721449d97b7e323e9b03f19
MID_NET=474795d78298490aad64291e119d42c4
MID_START=229cb4f00de640b8847cab4a624b1eee
MID_END=e7598b7e69a44355ae16c9714d748802
# The line the README and pam_restrict(8) tell admins to add.
PAM_LINE='session [success=ok new_authtok_reqd=ok ignore=ignore module_unknown=ignore default=bad] pam_restrict.so'
grep -qF -- "$PAM_LINE" README.md || fail "README gives the PAM line the VM tests use"

# Events of one type in one session, as JSON objects (one per line).
events() { # MESSAGE_ID SID [FIELD=VALUE...]
    local mid=$1 sid=$2
    shift 2
    as_root journalctl --no-pager -o json "MESSAGE_ID=$mid" "SESSION_ID=$sid" "$@"
}
# Waits (TCG is slow) until a journal query returns something.
wait_events() {
    local i
    for i in $(seq 1 40); do
        out=$(events "$@")
        [ -n "$out" ] && { printf '%s\n' "$out"; return 0; }
        sleep 0.5
    done
    return 1
}
wait_for() { # FILE TEXT
    local i
    for i in $(seq 1 120); do
        grep -qF -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.5
    done
    echo "timed out waiting for '$2' in $1: $(cat "$1")" >&2
    return 1
}
sid_of() { sed -n 's/^SID=//p' "$1" | head -1; }
# One connect (tcp) or sendto (udp) from inside the guest; prints
# "TCP|UDP HOST PORT ok|EPERM|error: ...". Installed in the guest below.
VMNET='#!/bin/bash
case $1 in
tcp)
    if err=$(bash -c "exec 3<>/dev/tcp/$2/$3" 2>&1); then echo "TCP $2 $3 ok"
    elif [[ $err == *"Operation not permitted"* ]]; then echo "TCP $2 $3 EPERM"
    else echo "TCP $2 $3 error: $err"; fi ;;
udp)
    exec python3 -c "
import socket, sys
s = socket.socket(socket.AF_INET6 if \":\" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b\"x\", (sys.argv[1], int(sys.argv[2])))
    print(\"UDP\", sys.argv[1], sys.argv[2], \"ok\")
except PermissionError:
    print(\"UDP\", sys.argv[1], sys.argv[2], \"EPERM\")
" "$2" "$3" ;;
esac'

# The attack on failed-open names (issue 16, point 6): vm-tests/kname-race.c,
# built static here (the guest has no compiler).
cc -O2 -static -pthread -o "$RUN/kname-race" vm-tests/kname-race.c
# Runs the attack in a login and checks the session's disk events: every
# failed open named by the kernel's copy of its path carries the errno of
# that path; nearly all are named so (only an open that moved between CPUs
# falls back to the caller's memory, flagged PATH_FROM_CALLER).
kname_race_checks() {
    local out sid ev total
    out=$(login_as alice 'echo SID=$RESTRICTD_SESSION_ID; vm-kname-race 400' 2>&1 || true)
    echo "$out" | sed 's/^/    /'
    sid=$(sed -n 's/^SID=//p' <<<"$out")
    # Rounds of 400 until both paths were tried (kname-race.c).
    total=$(sed -n 's/^RACE .* TOTAL=//p' <<<"$out")
    check "the race made the kernel try both paths" '[[ $out =~ RACE\ ENOENT=[1-9][0-9]*\ ENOTDIR=[1-9] ]]'
    wait_events $MID_END "$sid" >/dev/null || true
    ev=$(events $MID_DISK "$sid" | jq -c 'select(.PATH|test("^/etc/hostnam[eX]/f$")) | {p: .PATH, rc: .RETURN_CODE, caller: (.PATH_FROM_CALLER // "")}')
    echo "    disk events of the race: $(jq -s -c 'group_by(.) | map({k: .[0], n: length})' <<<"$ev")"
    check "all $total failed opens recorded" '[ -n "$total" ] && [ "$(jq -s length <<<"$ev")" = "$total" ]'
    check "no failed open is named by a path the kernel did not try" '[ "$(jq -s "[.[] | select(.caller == \"\" and ((.p == \"/etc/hostnamX/f\" and .rc != \"-2\") or (.p == \"/etc/hostname/f\" and .rc != \"-20\")))] | length" <<<"$ev")" = 0 ]'
    check "the kernel's copy names at least 90% of them (no PATH_FROM_CALLER)" '[ "$(jq -s "[.[] | select(.caller == \"\")] | length" <<<"$ev")" -ge $((total * 9 / 10)) ]'
}

# What a copy of the path kept per CPU must not misname
# (vm-tests/kname-switch.c): an open that fails before the kernel copies
# its path, on the CPU where the same thread's earlier open left a copy and
# ended elsewhere; and a failed open through int $0x80, named as 64-bit
# ones are.
cc -O2 -static -pthread -o "$RUN/kname-switch" vm-tests/kname-switch.c
kname_switch_checks() {
    local out sid dir ev
    out=$(login_as alice 'echo SID=$RESTRICTD_SESSION_ID; d=$(mktemp -d); echo DIR=$d; vm-kname-switch $d' 2>&1 || true)
    echo "$out" | sed 's/^/    /'
    sid=$(sed -n 's/^SID=//p' <<<"$out")
    dir=$(sed -n 's/^DIR=//p' <<<"$out")
    check "the attack ran: EINTR, then EINVAL, then ENOENT through int 0x80" 'has "$out" "SWITCH EINTR=4 EINVAL=22 IA32=-2"'
    wait_events $MID_END "$sid" >/dev/null || true
    ev=$(events $MID_DISK "$sid" | jq -c --arg d "$dir/" 'select(.PATH|startswith($d)) | {p: (.PATH|ltrimstr($d)), rc: .RETURN_CODE, caller: (.PATH_FROM_CALLER // "")}')
    echo "    disk events: $(jq -s -c . <<<"$ev")"
    check "the open that failed before the kernel copied a path is named by its own" 'jq -e -s "any(.[]; .p==\"einval\" and .rc==\"-22\")" <<<"$ev" >/dev/null'
    check "no record names it by the copy an earlier open left on that CPU" 'jq -e -s "all(.[]; .rc!=\"-22\" or .p==\"einval\")" <<<"$ev" >/dev/null'
    check "the failed ia32 open is named by the kernel's copy" 'jq -e -s "any(.[]; .p==\"missing32\" and .rc==\"-2\" and .caller==\"\")" <<<"$ev" >/dev/null'
}

# Opens through io_uring, which make no open(2) call (vm-tests/uring-open.c,
# static: the guest's python has no ctypes): recorded at submission by the
# kernel's copy of the path, from the user's task and from a SQPOLL ring's
# kernel thread.
cc -O2 -static -o "$RUN/uring-open" vm-tests/uring-open.c
uring_open_checks() {
    local out sid
    out=$(login_as alice 'echo SID=$RESTRICTD_SESSION_ID; vm-uring-open /etc/hostname sqpoll:/etc/group' 2>&1 || true)
    echo "$out" | sed 's/^/    /'
    sid=$(sed -n 's/^SID=//p' <<<"$out")
    check "io_uring opened both files" '[[ $out =~ /etc/hostname=[0-9] ]] && [[ $out =~ sqpoll:/etc/group=[0-9] ]]'
    wait_events $MID_END "$sid" >/dev/null || true
    check "an io_uring open is in the journal: IO_URING=true, no RETURN_CODE" 'match "$(events $MID_DISK "$sid" PATH=/etc/hostname IO_URING=true)" ".PROGRAM==\"vm-uring-open\" and .USER==\"alice\" and .RETURN_CODE==null and (.MESSAGE|test(\"asked io_uring to open /etc/hostname\"))"'
    check "and one that a SQPOLL ring's kernel thread submitted" 'match "$(events $MID_DISK "$sid" PATH=/etc/group IO_URING=true)" "(.PROGRAM|test(\"^iou-sqp\")) and .USER==\"alice\""'
}

step "boot $IMG"
vm_boot
echo "  guest sshd on 127.0.0.1:$PORT"
kernel1=$(as_root uname -r)
echo "  guest kernel: $kernel1"

as_root "cat > /usr/local/bin/vmnet && chmod 755 /usr/local/bin/vmnet" <<<"$VMNET"
copy_to_guest "$RUN/kname-race" /usr/local/bin/vm-kname-race && as_root chmod 755 /usr/local/bin/vm-kname-race
copy_to_guest "$RUN/kname-switch" /usr/local/bin/vm-kname-switch && as_root chmod 755 /usr/local/bin/vm-kname-switch
copy_to_guest "$RUN/uring-open" /usr/local/bin/vm-uring-open && as_root chmod 755 /usr/local/bin/vm-uring-open
# A jq test over journal events (one JSON object per line): true if any matches.
match() {
    # Slurped: jq 1.6's -e looks only at the last input's result.
    jq -e -s "any(.[]; $2)" >/dev/null <<<"$1" && return 0
    jq -c '{EVENT, ACTION, OPERATION, DST_ADDR, DST_PORT, VERSION, PROGRAM, PRIORITY, PATH, ARGV}' <<<"$1" | tail -3
    return 1
}
# True once process PID has exited (waits up to 20 s).
gone() {
    local i
    for i in $(seq 40); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.5; done
    return 1
}

step "1. install the package"
pam_before=$(as_root sha256sum /etc/pam.d/sshd)
copy_to_guest "$DEB" /tmp/restrictd.deb
check "dpkg -i installs" 'as_root dpkg -i /tmp/restrictd.deb'
check "restrictd.service is active after install" 'as_root systemctl is-active restrictd'
check "restrictd.service is enabled" 'as_root systemctl is-enabled restrictd'
check "install did not touch /etc/pam.d/sshd" '[ "$pam_before" = "$(as_root sha256sum /etc/pam.d/sshd)" ]'
check "restrictd.yaml is a conffile" 'as_root cat /var/lib/dpkg/info/restrictd.conffiles | grep -qx /etc/restrictd/restrictd.yaml'
check "man pages installed" 'as_root man -w restrictd restrictctl pam_restrict restrictd.yaml'
out=$(login_as alice 'echo "SID=${RESTRICTD_SESSION_ID:-none}"')
check "a login before the PAM line is not a session" 'has "$out" SID=none'
echo "  systemd-analyze security: $(as_root systemd-analyze security restrictd.service --no-pager 2>/dev/null | tail -1 || true)"

step "2. add the PAM line"
as_root "echo '$PAM_LINE' >> /etc/pam.d/sshd"
check "pam-check finds the line safe" 'as_root restrictctl pam-check'

step "3. apply a policy"
as_root "cat > /root/policy.yaml" <<'POLICY'
kind: network_restrictions
version: v4
metadata:
  name: vm-tests
spec:
  allow:
    - cidr: 127.0.0.0/8
    - cidr: ::1/128
  deny:
    - cidr: 127.0.0.9
POLICY
check "restrictctl policy apply" 'as_root restrictctl policy apply /root/policy.yaml'
check "restrictctl status shows the policy" 'as_root restrictctl status | grep -q vm-tests'

step "4. a restricted, recorded SSH session"
out=$(login_as alice 'echo SID=$RESTRICTD_SESSION_ID; echo ASID=$(cat /proc/self/sessionid); vmnet tcp 127.0.0.9 22; vmnet tcp 127.0.0.9 2222; vmnet tcp 127.0.0.1 22; vmnet tcp ::1 22; vmnet udp 127.0.0.9 9; vmnet udp 127.0.0.1 9; cat /etc/hostname' 2>&1 || true)
echo "$out" | sed 's/^/    /'
sid=$(sed -n 's/^SID=//p' <<<"$out")
check "the login is a session" '[ -n "$sid" ]'
check "denied TCP connect fails with EPERM" 'has "$out" "TCP 127.0.0.9 22 EPERM"'
check "denied on every port" 'has "$out" "TCP 127.0.0.9 2222 EPERM"'
check "allowed TCP connect (IPv4) works" 'has "$out" "TCP 127.0.0.1 22 ok"'
check "allowed TCP connect (IPv6 ::1) works" 'has "$out" "TCP ::1 22 ok"'
check "denied UDP sendto fails with EPERM" 'has "$out" "UDP 127.0.0.9 9 EPERM"'
check "allowed UDP sendto works" 'has "$out" "UDP 127.0.0.1 9 ok"'

step "5. the events in the journal"
check "session.end in the journal" 'wait_events $MID_END $sid'
check "session.start: alice, T2000I" 'match "$(events $MID_START $sid)" ".USER==\"alice\" and .LOGIN==\"alice\" and .CODE==\"T2000I\""'
ev=$(events $MID_NET $sid ACTION=1)
check "denied connect: ACTION=1 with DST_ADDR, DST_PORT, PROGRAM, PRIORITY 4" 'match "$ev" ".DST_ADDR==\"127.0.0.9\" and .DST_PORT==\"22\" and .OPERATION==\"0\" and .USER==\"alice\" and .PROGRAM==\"bash\" and .PRIORITY==\"4\""'
check "denied sendto: OPERATION=1" 'match "$ev" ".DST_ADDR==\"127.0.0.9\" and .DST_PORT==\"9\" and .OPERATION==\"1\""'
ev=$(events $MID_NET $sid ACTION=0)
check "allowed connect: ACTION=0" 'match "$ev" ".DST_ADDR==\"127.0.0.1\" and .DST_PORT==\"22\" and .VERSION==\"4\""'
check "allowed IPv6 connect" 'match "$ev" ".DST_ADDR==\"::1\" and .VERSION==\"6\""'
check "session.command: cat /etc/hostname, with argv" 'match "$(events $MID_CMD $sid PATH=/usr/bin/cat)" "(.ARGV|fromjson)==[\"/etc/hostname\"] and .USER==\"alice\" and .RETURN_CODE==\"0\""'
check "session.command: the session ran vmnet 6 times" '[ "$(events $MID_CMD $sid PATH=/usr/local/bin/vmnet | wc -l)" = 6 ]'
check "session.disk: /etc/hostname read by cat" 'match "$(events $MID_DISK $sid PATH=/etc/hostname)" ".PROGRAM==\"cat\" and .USER==\"alice\" and .FLAGS==\"0\""'
# Teleport's fields, with their meanings (issue: Teleport's events, exactly).
asid=$(sed -n 's/^ASID=//p' <<<"$out")
mid=$(as_root cat /etc/machine-id)
check "session.start: Teleport's connection fields (addr.local, addr.remote with ports, proto ssh)" 'match "$(events $MID_START $sid)" "(.ADDR_LOCAL|test(\":22\$\")) and (.ADDR_REMOTE|test(\":[0-9]+\$\")) and .PROTO==\"ssh\""'
check "every event: server_id is the machine id, namespace default, uid a UUID" 'match "$(events $MID_CMD $sid PATH=/usr/bin/cat)" "(.SERVER_ID|gsub(\"-\";\"\"))==\"$mid\" and .NAMESPACE==\"default\" and (.UID|test(\"^[0-9a-f-]{36}\$\"))"'
check "commands carry the login's audit session id" 'match "$(events $MID_CMD $sid PATH=/usr/bin/cat)" ".AUDIT_SESSION_ID==\"$asid\" and .PPID!=\"0\""'
check "an allowed connect reports the source the kernel chose" 'match "$(events $MID_NET $sid ACTION=0)" ".DST_ADDR==\"127.0.0.1\" and .SRC_ADDR==\"127.0.0.1\""'
check "a successful open returns the file descriptor" 'match "$(events $MID_DISK $sid PATH=/etc/hostname)" ".PROGRAM==\"cat\" and .RETURN_CODE==\"3\""'
check "README query: what alice ran" "as_root journalctl --no-pager MESSAGE_ID=$MID_CMD USER=alice | grep -q 'alice ran /usr/bin/cat /etc/hostname'"
check "README query: everything denied" 'as_root journalctl --no-pager SYSLOG_IDENTIFIER=restrictd ACTION=1 | grep -q 127.0.0.9'

step "5b. a failed open is named by the path the kernel tried, whatever another thread does to the caller's copy"
kname_race_checks
kname_switch_checks

step "5c. opens through io_uring are recorded"
uring_open_checks

step "6. loginctl lists the session; terminate-session ends it"
login_as alice 'echo SID=$RESTRICTD_SESSION_ID; echo READY; exec sleep 600' >"$RUN/s6" 2>&1 &
bg=$!
wait_for "$RUN/s6" READY
sid6=$(sid_of "$RUN/s6")
lsess=$(as_root "loginctl list-sessions --no-legend | awk '\$3==\"alice\"{print \$1}'")
check "loginctl lists alice's session" '[ -n "$lsess" ]'
check "restrictctl sessions lists it" 'as_root restrictctl sessions | grep -q "$sid6"'
as_root loginctl terminate-session $lsess
check "terminate-session ends it: session.end" 'wait_events $MID_END $sid6'
check "the login's ssh exited" 'gone $bg'
check "loginctl no longer lists it" '! as_root loginctl list-sessions --no-legend | grep -q alice'
wait || true

step "6b. the PAM line before pam_systemd: the session follows the login into logind's scope"
as_root "cp /etc/pam.d/sshd /root/sshd.pam && grep -vxF '$PAM_LINE' /root/sshd.pam | sed '/^@include common-session/i $PAM_LINE' > /etc/pam.d/sshd"
check "the line now comes before @include common-session" 'as_root "grep -n . /etc/pam.d/sshd" | grep -B1 "@include common-session" | grep -qF pam_restrict.so'
check "pam-check warns that it runs before pam_systemd" 'as_root restrictctl pam-check | grep -q "runs before pam_systemd.so"'
login_as alice 'echo SID=$RESTRICTD_SESSION_ID; grep ^0:: /proc/self/cgroup; vmnet tcp 127.0.0.9 22; vmnet tcp 127.0.0.1 22; echo READY; exec sleep 600' >"$RUN/s6b" 2>&1 &
bg=$!
wait_for "$RUN/s6b" READY
sid6b=$(sid_of "$RUN/s6b")
sed 's/^/    /' "$RUN/s6b"
check "the login is a session" '[ -n "$sid6b" ]'
check "the shell runs in logind's session scope" 'grep -q "^0::/user.slice/user-1000.slice/session-.*\.scope$" "$RUN/s6b"'
check "denied TCP connect fails with EPERM" 'grep -qx "TCP 127.0.0.9 22 EPERM" "$RUN/s6b"'
check "allowed TCP connect works" 'grep -qx "TCP 127.0.0.1 22 ok" "$RUN/s6b"'
check "restrictctl sessions: the session's cgroup is the scope" 'as_root restrictctl sessions --json | jq -e --arg s "$sid6b" "any(.[]; .sid == \$s and (.cgroup | contains(\"/session-\") and endswith(\".scope\")))" >/dev/null'
check "the denial is recorded in the session" 'wait_events $MID_NET $sid6b ACTION=1 >/dev/null'
lsess=$(as_root "loginctl list-sessions --no-legend | awk '\$3==\"alice\"{print \$1}'")
as_root loginctl terminate-session $lsess
check "terminate-session ends it: session.end" 'wait_events $MID_END $sid6b'
check "the login's ssh exited" 'gone $bg'
wait || true
as_root "cp /root/sshd.pam /etc/pam.d/sshd"

step "7. a policy applied with restrictctl changes a live session"
as_root rm -f /tmp/go7
login_as alice 'echo SID=$RESTRICTD_SESSION_ID; vmnet tcp 127.0.0.1 22; echo READY; while [ ! -e /tmp/go7 ]; do sleep 0.3; done; vmnet tcp 127.0.0.1 22' >"$RUN/s7" 2>&1 &
wait_for "$RUN/s7" READY
as_root "sed 's/name: vm-tests/name: vm-tests-2/; s|    - cidr: 127.0.0.9|    - cidr: 127.0.0.9\n    - cidr: 127.0.0.1|' /root/policy.yaml > /root/policy2.yaml"
check "apply a policy that denies 127.0.0.1" 'as_root restrictctl policy apply /root/policy2.yaml'
as_root touch /tmp/go7
wait || true
check "before: 127.0.0.1 allowed" 'grep -qx "TCP 127.0.0.1 22 ok" "$RUN/s7"'
check "after: the same session is denied" 'grep -qx "TCP 127.0.0.1 22 EPERM" "$RUN/s7"'
as_root restrictctl policy apply /root/policy.yaml >/dev/null

step "7b. a per-login policy in policy.d binds alice by group, TCP port 22 only, with its own disk filter"
as_root "groupadd -f vmdba && usermod -aG vmdba alice && mkdir -p /etc/restrictd/policy.d && cat > /etc/restrictd/policy.d/50-dba.yaml" <<'POLICY'
kind: restrictd_policy
version: v1
metadata:
  name: vm-dba
spec:
  match:
    groups: [vmdba]
  allow:
    - cidr: 127.0.0.1/32
      ports: [22]
      protocol: tcp
  record:
    disk_exclude: [/etc/hostname]
POLICY
check "restrictd check says whom it binds" 'as_root restrictd check /root/policy.yaml /etc/restrictd/policy.d | grep -q "binds groups vmdba"'
check "applied with the policy file" 'as_root restrictctl policy apply /root/policy.yaml'
out=$(login_as alice 'echo SID=$RESTRICTD_SESSION_ID; vmnet tcp 127.0.0.1 22; vmnet tcp 127.0.0.1 2222; vmnet udp 127.0.0.1 9; cat /etc/hostname /etc/passwd >/dev/null' 2>&1 || true)
echo "$out" | sed 's/^/    /'
sid7b=$(sed -n 's/^SID=//p' <<<"$out")
check "its port is allowed" 'has "$out" "TCP 127.0.0.1 22 ok"'
check "another port of the same host is denied" 'has "$out" "TCP 127.0.0.1 2222 EPERM"'
check "UDP is denied (the rule is tcp)" 'has "$out" "UDP 127.0.0.1 9 EPERM"'
check "session.start names the policy" 'match "$(wait_events $MID_START $sid7b)" ".POLICY==\"vm-dba\""'
check "restrictd check shows its disk filter" 'as_root restrictd check /root/policy.yaml /etc/restrictd/policy.d | grep -q "not under /etc/hostname"'
check "its disk filter: /etc/passwd recorded" 'wait_events $MID_DISK $sid7b PATH=/etc/passwd >/dev/null'
check "its disk filter: /etc/hostname, read before it, not recorded" '[ -z "$(events $MID_DISK $sid7b PATH=/etc/hostname)" ]'
check "explain names the policy and the verdict" 'as_root restrictctl policy explain --user alice 127.0.0.1:2222/tcp | grep -q "policy: vm-dba.*" && as_root restrictctl policy explain --user alice 127.0.0.1:2222/tcp | grep -q "denied"'
check "pam-check notes Debian's pam_env user_readenv=1 before the line" 'as_root restrictctl pam-check | grep -q "user_readenv=1 runs before"'
as_root "rm /etc/restrictd/policy.d/50-dba.yaml && gpasswd -d alice vmdba >/dev/null && restrictctl policy apply /root/policy.yaml >/dev/null"

step "8. systemctl restart restrictd during a session"
as_root rm -f /tmp/go8
login_as alice 'echo SID=$RESTRICTD_SESSION_ID; echo READY; while [ ! -e /tmp/go8 ]; do sleep 0.3; done; vmnet tcp 127.0.0.9 22; cat /etc/os-release >/dev/null' >"$RUN/s8" 2>&1 &
wait_for "$RUN/s8" READY
sid8=$(sid_of "$RUN/s8")
check "systemctl restart restrictd" 'as_root systemctl restart restrictd'
check "the restarted daemon lists the session" 'as_root restrictctl sessions | grep -q "$sid8"'
as_root touch /tmp/go8
wait || true
check "still restricted after the restart" 'grep -qx "TCP 127.0.0.9 22 EPERM" "$RUN/s8"'
check "still recorded after the restart" 'wait_events $MID_CMD $sid8 PATH=/usr/bin/cat'
check "its end recorded after the restart" 'wait_events $MID_END $sid8'

step "8b. a changed buffer size is another kernel state version: it replaces the old one under a running session"
state_of() { as_root restrictctl status | sed -n 's/.*(kernel state \(v[0-9a-f]*\)).*/\1/p'; }
state_before=$(state_of)
as_root rm -f /tmp/go8b
login_as alice 'echo SID=$RESTRICTD_SESSION_ID; echo READY; while [ ! -e /tmp/go8b ]; do vmnet tcp 127.0.0.9 22; sleep 0.2; done; cat /etc/os-release >/dev/null' >"$RUN/s8b" 2>&1 &
wait_for "$RUN/s8b" READY
sid8b=$(sid_of "$RUN/s8b")
as_root "cp /etc/restrictd/restrictd.yaml /root/restrictd.yaml.orig && printf 'enhanced_recording:\n  network_buffer_size: 16\n' >> /etc/restrictd/restrictd.yaml"
check "systemctl restart restrictd with the new size" 'as_root systemctl restart restrictd'
state_after=$(state_of)
echo "    kernel state $state_before -> $state_after"
check "restrictctl status shows another kernel state" '[ -n "$state_before" ] && [ -n "$state_after" ] && [ "$state_before" != "$state_after" ]'
check "one kernel state is left pinned" '[ "$(as_root ls /sys/fs/bpf/restrictd)" = "$state_after" ]'
check "the session is taken over" 'as_root restrictctl sessions | grep -q "$sid8b"'
sleep 1
as_root touch /tmp/go8b
wait || true
check "probes ran across the switch" '[ "$(grep -c "^TCP 127.0.0.9 22" "$RUN/s8b")" -ge 5 ]'
check "every probe was denied, before, during and after" '! grep "^TCP 127.0.0.9 22" "$RUN/s8b" | grep -vq EPERM'
check "recorded by the new version" 'wait_events $MID_CMD $sid8b PATH=/usr/bin/cat'
as_root "cp /root/restrictd.yaml.orig /etc/restrictd/restrictd.yaml && systemctl restart restrictd"
check "back to the first kernel state" '[ "$(state_of)" = "$state_before" ]'

step "8c. upgrade to a build whose map layout differs, under a running session; then downgrade"
state1=$(state_of)
as_root rm -f /tmp/go8c
login_as alice 'echo SID=$RESTRICTD_SESSION_ID; echo READY; while [ ! -e /tmp/go8c ]; do vmnet tcp 127.0.0.9 22; sleep 0.2; done; cat /etc/os-release >/dev/null' >"$RUN/s8c" 2>&1 &
wait_for "$RUN/s8c" READY
sid8c=$(sid_of "$RUN/s8c")
copy_to_guest "$DEB2" /tmp/restrictd-layout2.deb
copy_to_guest "$DEB" /tmp/restrictd-1.deb
check "dpkg -i the newer build (upgrade)" 'as_root dpkg -i /tmp/restrictd-layout2.deb'
state2=$(state_of)
echo "    kernel state $state1 -> $state2"
check "restrictctl status shows the new build's kernel state" '[ -n "$state2" ] && [ "$state2" != "$state1" ]'
check "only the new kernel state is pinned" '[ "$(as_root ls /sys/fs/bpf/restrictd)" = "$state2" ]'
check "the upgraded daemon took the session over" 'as_root restrictctl sessions | grep -q "$sid8c"'
sleep 1
check "dpkg -i the older build (downgrade)" 'as_root dpkg -i /tmp/restrictd-1.deb'
check "restrictctl status shows the first kernel state again" '[ "$(state_of)" = "$state1" ]'
check "the downgraded daemon took the session over" 'as_root restrictctl sessions | grep -q "$sid8c"'
sleep 1
as_root touch /tmp/go8c
wait || true
check "probes ran across both switches" '[ "$(grep -c "^TCP 127.0.0.9 22" "$RUN/s8c")" -ge 5 ]'
check "every probe was denied, through the upgrade and the downgrade" '! grep "^TCP 127.0.0.9 22" "$RUN/s8c" | grep -vq EPERM'
check "the session is recorded after the downgrade" 'wait_events $MID_CMD $sid8c PATH=/usr/bin/cat'

step "9. restrictd stopped and not startable: new logins are denied (fail=closed)"
as_root systemctl mask --runtime restrictd >/dev/null 2>&1
as_root systemctl stop restrictd
since=$(as_root "date '+%Y-%m-%d %H:%M:%S'")
check "alice's login is denied" '! login_as alice true'
check "root's login is denied too" '! login_as root true'
check "the reason is in the journal" "as_root \"journalctl --no-pager --since '$since'\" | grep -q 'login denied (fail=closed)'"
as_root systemctl unmask --runtime restrictd >/dev/null 2>&1

step "10. D-Bus activation: a login while restrictd is stopped starts it"
check "restrictd is stopped" '! as_root systemctl is-active restrictd'
out=$(login_as alice 'echo SID=${RESTRICTD_SESSION_ID:-none}' || true)
check "the login succeeds, as a session" '[[ $out == SID=* && $out != SID=none ]]'
check "restrictd is running again" 'as_root systemctl is-active restrictd'
check "the bus activated it" "as_root journalctl --no-pager -u dbus | grep -q \"Activating via systemd: service name='org.restrictd.Daemon1'\""
# Nine more rounds (issue: the first login after a stop must become a
# session reliably on a slow host, with the default timeouts).
# Each must also be far from the PAM module's 30 s start_timeout: a round
# that waits on something (systemd's start rate limit made one wait 25 s)
# is a failure waiting to happen.
ok10=1
slowest=0
for i in $(seq 2 10); do
    as_root systemctl stop restrictd
    t0=$SECONDS
    out=$(login_as alice 'echo SID=${RESTRICTD_SESSION_ID:-none}' || true)
    took=$((SECONDS - t0))
    echo "    round $i: $out ($took s)"
    [[ $out == SID=* && $out != SID=none ]] && ok10=$((ok10 + 1))
    [ $took -gt $slowest ] && slowest=$took
done
check "10 of 10 first logins after a stop became sessions" '[ $ok10 = 10 ]'
check "each within 15 s (slowest: $slowest s)" '[ $slowest -lt 15 ]'

step "11. systemd-run --user from inside a session"
out=$(login_as alice 'echo SID=$RESTRICTD_SESSION_ID; vmnet tcp 127.0.0.9 22; systemd-run --user --wait --pipe --quiet sh -c "cat /proc/self/cgroup; vmnet tcp 127.0.0.9 22; vmnet tcp 127.0.0.1 22" 2>&1' || true)
echo "$out" | sed 's/^/    /'
sid11=$(sed -n 's/^SID=//p' <<<"$out")
# The unit runs in the user's systemd instance (user@1000.service), outside
# the login's scope; restrictd registers that instance with the session.
check "the unit ran outside the session's scope" 'has "$out" "user@1000.service/"'
check "in the session: denied" 'has "$out" "TCP 127.0.0.9 22 EPERM"'
check "in the systemd-run --user unit: denied too" '[ "$(grep -c "^TCP 127.0.0.9 22 EPERM" <<<"$out")" = 2 ] && ! has "$out" "TCP 127.0.0.9 22 ok"'
check "in the unit: allowed destinations still work" 'has "$out" "TCP 127.0.0.1 22 ok"'
check "the unit's denial is recorded in the session" 'wait_events $MID_END $sid11 >/dev/null && [ "$(events $MID_NET $sid11 ACTION=1 | wc -l)" = 2 ]'
check "the unit's commands are recorded in the session" '[ "$(events $MID_CMD $sid11 PATH=/usr/local/bin/vmnet | wc -l)" = 3 ]'

step "11b. the user manager restarted by root during a session"
as_root rm -f /tmp/go11
login_as alice 'echo SID=$RESTRICTD_SESSION_ID; echo READY; while [ ! -e /tmp/go11 ]; do sleep 0.3; done; systemd-run --user --wait --pipe --quiet vmnet tcp 127.0.0.9 22 2>&1' >"$RUN/s11" 2>&1 &
wait_for "$RUN/s11" READY
old_id=$(as_root stat -c %i /sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service)
as_root "systemctl stop user@1000.service && systemctl start user@1000.service"
new_id=$(as_root stat -c %i /sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service)
check "the manager has a new cgroup" '[ "$old_id" != "$new_id" ]'
check "restrictd registers the new one" 'for i in $(seq 20); do as_root journalctl --no-pager -u restrictd | grep -q "user manager .* restarted, now cgroup $new_id" && exit 0; sleep 0.5; done; exit 1'
as_root touch /tmp/go11
wait || true
check "a unit of the new manager is still denied" 'grep -qx "TCP 127.0.0.9 22 EPERM" "$RUN/s11"'

step "11c. restrictctl lock under logind: two sessions and a user unit end, loginctl shows them gone, logins are refused across a restart until unlock"
login_as alice 'echo SID=$RESTRICTD_SESSION_ID; echo READY; exec sleep 600' >"$RUN/s11c1" 2>&1 &
bg1=$!
login_as alice 'systemd-run --user --unit=vmlock sleep 600 >/dev/null 2>&1; echo SID=$RESTRICTD_SESSION_ID; echo READY; exec sleep 600' >"$RUN/s11c2" 2>&1 &
bg2=$!
wait_for "$RUN/s11c1" READY
wait_for "$RUN/s11c2" READY
sid11c=$(sid_of "$RUN/s11c1")
check "loginctl lists alice's two sessions" '[ "$(as_root loginctl list-sessions --no-legend | awk "\$3==\"alice\"" | wc -l)" = 2 ]'
# (as_root's arguments go through the guest's shell again: no spaces in them)
check "the user unit runs" 'as_root pgrep -u alice -f sleep.600 | wc -l | grep -qx 3'
check "restrictctl lock user alice ends both sessions" 'as_root restrictctl lock user alice --reason vm-lock-test | grep -q "ended 2 session"'
check "both logins' ssh exited" 'gone $bg1 && gone $bg2'
check "loginctl no longer lists alice's sessions" 'for i in $(seq 40); do as_root loginctl list-sessions --no-legend | grep -q alice || exit 0; sleep 0.5; done; exit 1'
check "no process of alice is left, the user unit included" 'for i in $(seq 20); do as_root pgrep -u alice >/dev/null || exit 0; sleep 0.5; done; exit 1'
check "session.end says the lock ended it" 'match "$(wait_events $MID_END $sid11c)" ".REASON==\"lock\""'
check "lock.created is in the journal" 'match "$(as_root journalctl --no-pager -o json MESSAGE_ID=f9d40d727e794bc8ae78244c85d08cc8)" ".SESSIONS_ENDED==\"2\" and .TARGET != null"'
out=$(login_as alice 'echo ADMITTED' 2>&1 || true)
check "a new login is refused, with the reason" 'has "$out" "vm-lock-test" && ! has "$out" ADMITTED'
# Written by the daemon's recorder after the refusal: waited for, like every event.
check "session.rejected is in the journal" 'for i in $(seq 40); do as_root journalctl --no-pager -o json MESSAGE_ID=a4848d110806400491284b9e213388f6 REASON=lock | grep -q alice && exit 0; sleep 0.5; done; exit 1'
as_root systemctl restart restrictd
out=$(login_as alice 'echo ADMITTED' 2>&1 || true)
check "still refused after a restart" 'has "$out" "vm-lock-test" && ! has "$out" ADMITTED'
check "restrictctl locks lists the lock" 'as_root restrictctl locks | grep -q alice'
check "restrictctl unlock user alice" 'as_root restrictctl unlock user alice'
out=$(login_as alice 'echo ADMITTED' 2>&1 || true)
check "admitted again" 'has "$out" ADMITTED'

step "11d. idle_timeout from a per-login policy, under the packaged unit and logind"
as_root "groupadd -f vmidle && usermod -aG vmidle alice && mkdir -p /etc/restrictd/policy.d && cat > /etc/restrictd/policy.d/60-idle.yaml" <<'POLICY'
kind: restrictd_policy
version: v1
metadata:
  name: vm-idle
spec:
  match:
    groups: [vmidle]
  controls:
    idle_timeout: 15s
  allow:
    - cidr: 127.0.0.0/8
POLICY
check "applied with the policy file" 'as_root restrictctl policy apply /root/policy.yaml'
# A terminal session nobody types in: its stdin (a fifo this script holds
# open) stays open and silent.
rm -f "$RUN/s11d.in" && mkfifo "$RUN/s11d.in"
login_as alice -tt 'echo SID=$RESTRICTD_SESSION_ID; exec sh -i' <"$RUN/s11d.in" >"$RUN/s11d" 2>&1 &
bg=$!
exec 7>"$RUN/s11d.in"
wait_for "$RUN/s11d" SID=
sid11d=$(sid_of "$RUN/s11d" | tr -d '\r')
check "the idle session is warned on its terminal" 'wait_for "$RUN/s11d" "unless you type"'
check "then ended, and told why" 'wait_for "$RUN/s11d" "(idle_timeout 15s): this session is ended"'
check "its ssh exited" 'gone $bg'
check "session.end says idle_timeout" 'match "$(wait_events $MID_END $sid11d)" ".REASON==\"idle_timeout\""'
as_root "rm /etc/restrictd/policy.d/60-idle.yaml && gpasswd -d alice vmidle >/dev/null && restrictctl policy apply /root/policy.yaml >/dev/null"
exec 7>&-

step "11e. terminal recording under the packaged unit: replay and show"
# The marker is built by printf, so only the terminal's output holds it
# whole, not the command line.
login_as alice -tt 'echo SID=$RESTRICTD_SESSION_ID; printf "vm-%s-marker\n" terminal; cat /etc/hostname' >"$RUN/s11e" 2>&1 || true
sid11e=$(sid_of "$RUN/s11e" | tr -d '\r')
check "the session ended" 'wait_events $MID_END $sid11e'
check "the client saw the marker" 'grep -q vm-terminal-marker "$RUN/s11e"'
check "restrictctl play replays it" 'as_root restrictctl play $sid11e --speed 100 | grep -q vm-terminal-marker'
check "restrictctl show lists the command and the file read" 'as_root restrictctl show $sid11e >"$RUN/show11e" && grep -q "/usr/bin/cat" "$RUN/show11e" && grep -q "/etc/hostname" "$RUN/show11e" && grep -q vm-terminal-marker "$RUN/show11e"'
check "the recording is root's alone" '[ "$(as_root stat -c %a:%U /var/lib/restrictd/terminal/$sid11e.tty.jsonl)" = "600:root" ]'

step "12. package removal with the PAM line still present"
as_root "echo 'session required pam_restrict.so' >> /etc/pam.d/sshd"
check "removal refused while a plain 'required' line exists" '! as_root dpkg -r restrictd >"$RUN/rm1" 2>&1'
check "the refusal names the line" 'grep -q "/etc/pam.d/sshd:.*: session required pam_restrict.so" "$RUN/rm1"'
check "still installed and running" 'as_root dpkg -l restrictd | grep -q "^.i  restrictd" && as_root systemctl is-active restrictd'
as_root "sed -i '\$d' /etc/pam.d/sshd"
check "dpkg -r succeeds with the recommended line" 'as_root dpkg -r restrictd'
check "the PAM line is still in /etc/pam.d/sshd" "as_root grep -qxF \"'$PAM_LINE'\" /etc/pam.d/sshd"
check "pam_restrict.so is gone" '! as_root ls /lib/x86_64-linux-gnu/security/pam_restrict.so'
check "root can still log in" 'login_as root true'
out=$(login_as alice 'echo SID=${RESTRICTD_SESSION_ID:-none}' || true)
check "alice can still log in (unrestricted)" 'has "$out" SID=none'
check "the pinned programs are gone" '! as_root ls /sys/fs/bpf/restrictd'
check "dpkg --purge" 'as_root dpkg --purge restrictd'

step "13. a second kernel: Debian's backports kernel, from a fresh image"
vm_stop
VM_KERNEL=bpo vm_boot
as_root "cat > /usr/local/bin/vmnet && chmod 755 /usr/local/bin/vmnet" <<<"$VMNET"
copy_to_guest "$RUN/kname-race" /usr/local/bin/vm-kname-race && as_root chmod 755 /usr/local/bin/vm-kname-race
copy_to_guest "$RUN/kname-switch" /usr/local/bin/vm-kname-switch && as_root chmod 755 /usr/local/bin/vm-kname-switch
copy_to_guest "$RUN/uring-open" /usr/local/bin/vm-uring-open && as_root chmod 755 /usr/local/bin/vm-uring-open
kernel2=$(as_root uname -r)
echo "  guest kernel: $kernel2"
check "the guest runs the backports kernel, not $kernel1" '[ "$kernel2" != "$kernel1" ] && [[ "$kernel2" == *+deb12* || "$kernel2" == *bpo* ]]'
copy_to_guest "$DEB" /tmp/restrictd.deb
check "dpkg -i installs" 'as_root dpkg -i /tmp/restrictd.deb'
check "restrictd.service is active" 'as_root systemctl is-active restrictd'
as_root "echo '$PAM_LINE' >> /etc/pam.d/sshd"
as_root "cat > /root/policy.yaml" <<'POLICY'
kind: network_restrictions
version: v4
metadata:
  name: vm-tests
spec:
  allow:
    - cidr: 127.0.0.0/8
    - cidr: ::1/128
  deny:
    - cidr: 127.0.0.9
POLICY
check "restrictctl policy apply" 'as_root restrictctl policy apply /root/policy.yaml'
out=$(login_as alice 'echo SID=$RESTRICTD_SESSION_ID; vmnet tcp 127.0.0.9 22; vmnet tcp 127.0.0.1 22; vmnet udp 127.0.0.9 9; cat /etc/hostname' 2>&1 || true)
echo "$out" | sed 's/^/    /'
sid=$(sed -n 's/^SID=//p' <<<"$out")
check "the login is a session" '[ -n "$sid" ]'
check "denied TCP connect fails with EPERM" 'has "$out" "TCP 127.0.0.9 22 EPERM"'
check "allowed TCP connect works" 'has "$out" "TCP 127.0.0.1 22 ok"'
check "denied UDP sendto fails with EPERM" 'has "$out" "UDP 127.0.0.9 9 EPERM"'
check "session.end in the journal" 'wait_events $MID_END $sid'
check "the denial is in the journal" 'match "$(events $MID_NET $sid ACTION=1)" ".DST_ADDR==\"127.0.0.9\" and .USER==\"alice\""'
check "the allowed connect, with its source" 'match "$(events $MID_NET $sid ACTION=0)" ".DST_ADDR==\"127.0.0.1\" and .SRC_ADDR==\"127.0.0.1\""'
check "the command, with argv" 'match "$(events $MID_CMD $sid PATH=/usr/bin/cat)" "(.ARGV|fromjson)==[\"/etc/hostname\"]"'
check "the open" 'match "$(events $MID_DISK $sid PATH=/etc/hostname)" ".PROGRAM==\"cat\""'
kname_race_checks
kname_switch_checks
uring_open_checks

echo
echo "vm-tests: $PASSED passed, ${#FAILED[@]} failed"
if [ ${#FAILED[@]} -gt 0 ]; then
    printf '  failed: %s\n' "${FAILED[@]}"
    exit 1
fi
