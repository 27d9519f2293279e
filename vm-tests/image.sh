#!/bin/bash
# Builds the Debian 12 guest image for the VM tests, once: the result is cached
# under $RESTRICTD_VM_CACHE/<key>, where <key> is a hash of this script, so a
# change here builds a new image and an unchanged script reuses the old one.
# Prints the image directory on stdout.
set -euo pipefail
# Only the image directory goes to stdout; every tool's chatter to stderr.
exec 3>&1 1>&2

cache=${RESTRICTD_VM_CACHE:-/var/cache/restrictd-vm}
mirror=${RESTRICTD_VM_MIRROR:-http://deb.debian.org/debian}
key=$(cat "$0" | sha256sum | cut -c1-16)
dir=$cache/$key
if [ -f "$dir/done" ]; then
    echo "$dir" >&3
    exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

log() { echo "image: $*" >&2; }

# Everything the scenarios use is in the image: the guest gets no network
# beyond its forwarded ssh port, so it cannot fetch anything later.
# - libpam-systemd, dbus-user-session: logind sessions and `systemd-run --user`
# - python3-minimal: unconnected UDP sendto() from a session
# - netcat-openbsd: a guest-local listener for allowed connects
log "debootstrap bookworm from $mirror (a few minutes)"
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,dbus-user-session,libpam-systemd,openssh-server,linux-image-amd64,initramfs-tools,udev,kmod,iproute2,procps,netcat-openbsd,python3-minimal,man-db,ca-certificates \
    bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -30 "$work/debootstrap.log" >&2
    exit 1
}

# A second kernel for the tests (run.sh step 13): Debian's backports kernel,
# beside bookworm's 6.1. apt and the kernel's initramfs hook need /proc,
# /sys, /dev and name resolution in the chroot, for this step only.
log "adding the bookworm-backports kernel"
printf 'deb %s bookworm-backports main\n' "$mirror" >"$root/etc/apt/sources.list.d/backports.list"
cp /etc/resolv.conf "$root/etc/resolv.conf"
for m in proc sys dev; do mount --bind "/$m" "$root/$m"; done
# On failure: detach the bind mounts first, and never remove the tree while
# one is still attached (that would remove the host's /dev).
unbind() {
    local m
    for m in dev sys proc; do umount -l "$root/$m" 2>/dev/null || true; done
    for m in dev sys proc; do
        if mountpoint -q "$root/$m"; then
            echo "image: $root/$m still mounted; leaving $work" >&2
            return
        fi
    done
    rm -rf "$work"
}
trap unbind EXIT
if ! { chroot "$root" apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q --no-install-recommends \
        -t bookworm-backports linux-image-amd64 && chroot "$root" apt-get clean; } >"$work/backports.log" 2>&1; then
    tail -30 "$work/backports.log" >&2
    exit 1
fi
for m in dev sys proc; do umount "$root/$m"; done
rm -f "$root/etc/resolv.conf" "$root/etc/apt/sources.list.d/backports.list"

log "configuring"
echo restrictd-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 restrictd-vm\n::1 localhost\n' >"$root/etc/hosts"
echo '/dev/vda / ext4 defaults,errors=remount-ro 0 1' >"$root/etc/fstab"
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n' >"$root/etc/systemd/network/10-dhcp.network"
chroot "$root" systemctl enable systemd-networkd >/dev/null 2>&1
# Nothing in the background that would compete for the emulated CPU.
for t in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer; do
    chroot "$root" systemctl mask "$t" >/dev/null 2>&1 || true
done
# Keys: one per image, kept next to it. root is the admin; alice the user.
ssh-keygen -q -t ed25519 -N '' -C restrictd-vm-tests -f "$work/id_ed25519"
chroot "$root" useradd -m -s /bin/bash alice
for home in root home/alice; do
    install -d -m 700 "$root/$home/.ssh"
    install -m 600 "$work/id_ed25519.pub" "$root/$home/.ssh/authorized_keys"
done
chroot "$root" chown -R alice:alice /home/alice/.ssh
chroot "$root" passwd -d root >/dev/null
printf 'UseDNS no\nPermitRootLogin prohibit-password\n' >"$root/etc/ssh/sshd_config.d/vm-tests.conf"

# bookworm's kernel is the older one, the backports kernel the newer.
kernels=$(cd "$root/boot" && ls -v vmlinuz-* | sed 's/^vmlinuz-//')
[ "$(wc -l <<<"$kernels")" = 2 ] || { echo "image: expected two kernels, got: $kernels" >&2; exit 1; }
k1=$(head -1 <<<"$kernels")
k2=$(tail -1 <<<"$kernels")
cp "$root/boot/vmlinuz-$k1" "$work/vmlinuz"
cp "$root/boot/initrd.img-$k1" "$work/initrd.img"
cp "$root/boot/vmlinuz-$k2" "$work/vmlinuz-bpo"
cp "$root/boot/initrd.img-$k2" "$work/initrd.img-bpo"
chmod 644 "$work"/vmlinuz* "$work"/initrd.img*

log "making the ext4 image"
mkfs.ext4 -q -L root -d "$root" "$work/rootfs.img" 3G

mkdir -p "$dir"
mv "$work"/vmlinuz* "$work"/initrd.img* "$work/rootfs.img" "$work/id_ed25519" "$work/id_ed25519.pub" "$dir/"
touch "$dir/done"
log "built $dir"
echo "$dir" >&3
