# Helpers for the VM tests: boot the guest under qemu, talk to it over ssh.
# Sourced by run.sh. Needs: $IMG (image dir from image.sh), $RUN (scratch dir).

# A free port on 127.0.0.1 for the guest's forwarded sshd.
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Boots a throwaway copy-on-write overlay of the cached image, with
# bookworm's kernel, or with VM_KERNEL=bpo the backports one. KVM guests hang
# on some hosts, so this is TCG. restrict=on: the guest can reach nothing
# outside itself; only the forwarded port connects host to guest.
vm_boot() {
    PORT=$(free_port)
    rm -f "$RUN/disk.qcow2"
    qemu-img create -q -f qcow2 -F raw -b "$IMG/rootfs.img" "$RUN/disk.qcow2"
    qemu-system-x86_64 -machine q35 -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
        -kernel "$IMG/vmlinuz${VM_KERNEL:+-$VM_KERNEL}" -initrd "$IMG/initrd.img${VM_KERNEL:+-$VM_KERNEL}" \
        -append "root=/dev/vda rw console=ttyS0 quiet" \
        -drive "file=$RUN/disk.qcow2,if=virtio,format=qcow2" \
        -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$PORT-:22" \
        -device virtio-net-pci,netdev=n0,romfile= \
        -display none -serial "file:$RUN/console.log" -monitor none \
        -pidfile "$RUN/qemu.pid" -daemonize
    cp "$IMG/id_ed25519" "$RUN/key"
    chmod 600 "$RUN/key"
    SSH_OPTS=(-i "$RUN/key" -p "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
        -o LogLevel=ERROR -o ConnectTimeout=30 -o BatchMode=yes -o ServerAliveInterval=10)
    local deadline=$((SECONDS + ${VM_BOOT_TIMEOUT:-300}))
    until ssh "${SSH_OPTS[@]}" -o ControlMaster=yes -o ControlPersist=yes \
        -o ControlPath="$RUN/root.ctl" root@127.0.0.1 true 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            echo "vm: no ssh after ${VM_BOOT_TIMEOUT:-300}s; console:" >&2
            tail -40 "$RUN/console.log" >&2
            return 1
        fi
        sleep 3
    done
}

vm_stop() {
    # Safe at any point of vm_boot (the cleanup trap calls it on failures).
    if [ -n "${SSH_OPTS+set}" ]; then
        ssh "${SSH_OPTS[@]}" -o ControlPath="$RUN/root.ctl" -O exit root@127.0.0.1 2>/dev/null || true
    fi
    if [ -f "$RUN/qemu.pid" ]; then
        kill "$(cat "$RUN/qemu.pid")" 2>/dev/null || true
        rm -f "$RUN/qemu.pid"
    fi
}

# A root command over the one persistent admin connection (no new login, so
# it keeps working while logins are denied).
as_root() {
    ssh "${SSH_OPTS[@]}" -o ControlPath="$RUN/root.ctl" root@127.0.0.1 "$@"
}

# A fresh login (a new PAM session) as USER.
login_as() {
    local user=$1
    shift
    ssh "${SSH_OPTS[@]}" -o ControlPath=none "$user@127.0.0.1" "$@"
}

copy_to_guest() {
    scp -q -i "$RUN/key" -P "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o LogLevel=ERROR -o ControlPath="$RUN/root.ctl" "$1" "root@127.0.0.1:$2"
}
