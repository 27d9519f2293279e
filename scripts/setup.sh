#!/usr/bin/env bash
# Installs everything restrictd needs on a fresh Debian 12 machine (as root).
# Idempotent: each step checks first and does nothing when already satisfied.
set -euo pipefail

BPF_LINKER_VERSION=0.10.4
CARGO_FUZZ_VERSION=0.13.1
APT_PACKAGES=(
  build-essential pkg-config libpam0g-dev   # pam_restrict links libpam
  iproute2 bpftool                          # netns test hosts; attach checks
  openssh-server openssh-client dbus pamtester # SSH/PAM/D-Bus tests
  systemd rsyslog                           # standalone journald / syslog sinks
  python3 curl jq
  procps                                    # top: the full-screen program a terminal test records
  libcap2-bin                               # setcap: the escape test's raw-socket attacker
  debhelper rpm lintian rpmlint             # packaging/build.sh
  debootstrap e2fsprogs                     # vm-tests/image.sh
)

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: must run as root (it installs apt packages)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt packages missing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps packages from trying to start services on a host without systemd.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# qemu for the VM tests. This Debian image may come with qemu-utils from
# bookworm-backports; qemu-system-x86 only installs beside it from there too.
if ! command -v qemu-system-x86_64 >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
    log "installing qemu-system-x86 from bookworm-backports (to match qemu-utils)"
    list=/etc/apt/sources.list.d/bookworm-backports.list
    grep -qs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/* \
      || echo 'deb http://deb.debian.org/debian bookworm-backports main' >"$list"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
  else
    log "installing qemu-system-x86"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends qemu-system-x86 qemu-utils >/dev/null
  fi
fi

export PATH="$HOME/.cargo/bin:$PATH"
command -v rustup >/dev/null || { echo "setup: rustup not found; install Rust via rustup first" >&2; exit 1; }

# The host toolchain comes from rust-toolchain.toml (rustup installs it with
# its components on first use; asking for it here makes that happen now).
cd "$(dirname "$0")/.."
HOST=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
rustup toolchain list | grep -q "^$HOST" || rustup toolchain install "$HOST" --profile minimal
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

# The eBPF crate is built (and linted) with a pinned nightly and -Z
# build-std=core, which needs rust-src.
NIGHTLY=$(cat BPF_NIGHTLY)
rustup toolchain list | grep -q "^$NIGHTLY" || rustup toolchain install "$NIGHTLY" --profile minimal
for c in rust-src clippy; do
  rustup component list --toolchain "$NIGHTLY" --installed | grep -q "^$c" \
    || rustup component add "$c" --toolchain "$NIGHTLY"
done

# Newer bpf-linker wants a system LLVM this Debian does not have; 0.10.4 uses rustc's own.
if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  log "installing bpf-linker $BPF_LINKER_VERSION"
  cargo install bpf-linker --version "$BPF_LINKER_VERSION" --locked --force
fi

# The fuzzer driver (scripts/fuzz.sh, part of the test command).
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --force
fi

# Debugfs carries tracepoint formats on kernels where tracefs is not mounted.
if [ ! -e /sys/kernel/tracing/events ] && ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
fi

# BPF pins need bpffs; systemd mounts it, hosts without systemd may not have it.
if [ -d /sys/fs/bpf ] && ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf -o nosuid,nodev,noexec,mode=0700 bpf /sys/fs/bpf
fi
# sshd's privilege separation directory (the SSH tests run a real sshd).
mkdir -p /run/sshd && chmod 0755 /run/sshd

log "ok"
