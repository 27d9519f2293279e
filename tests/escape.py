#!/usr/bin/env python3
"""Escape attempts for restrictd/tests/escape.rs, run as an unprivileged user.

escape.py attack NAME...      run the named attacks (inside a session); print
                              "NAME=RESULT" per attack, RESULT "sent" or an
                              errno name: the caller's view, which the test
                              does not trust (it checks the receiving end).
escape.py helper DIR          a process of the same user outside the session
                              (a cron job): serves a unix socket DIR/helper.sock
escape.py inbound PORT SECS   listen on TCP and UDP PORT on all addresses for
                              SECS seconds; print what arrived
escape.py uring-open SPEC... open files through io_uring (IORING_OP_OPENAT), which
                              makes no open(2) call: SPEC "/path", "DIR:NAME" (NAME
                              relative to an fd of DIR) or "sqpoll:/path" (by a
                              SQPOLL ring's kernel thread); print "SPEC=fd" or errno.
                              In the same process, to keep within one second of a
                              flood: "plain:PATH" opens with open(2), and
                              "flood:N:PATH" opens and closes PATH N times
escape.py sniff IFACE OUT     (root, in the denied host's netns) write one JSON
                              line per IP packet arriving on IFACE

Environment for attacks: D4, D6 (the denied host), BASE (first port), HELPER
(the helper's socket), RAWPY (a python with cap_net_raw, for raw sockets).
Every datagram carries the marker "rdx-NAME", and attack i uses port BASE+i,
so the test can tell the attempts apart at the receiving end.
"""
import array
import ctypes
import errno
import json
import mmap
import os
import re
import socket
import struct
import subprocess
import sys
import time

ATTACKS = [
    "tcp4", "tcp6", "tcp6_mapped", "tfo4", "mptcp4", "mptcp6",
    "udp4_sendto", "udp6_sendto", "udp6_mapped_sendto", "udp4_connect",
    "udp6_connect", "udp4_sendmsg", "udp4_connected_sendto_other",
    "udplite4_connect", "udplite6_connect", "udplite4_sendto", "udplite6_sendto",
    "icmp4_ping", "icmp6_ping", "raw4_icmp", "raw6_icmp", "raw4_proto253",
    "srh6_via_denied", "srh6_via_allowed", "lsrr4", "broadcast4", "multicast4",
    "pidfd_getfd", "scm_rights_in", "scm_rights_out", "outside_process",
    "uring_tcp4_connect", "uring_udp4_sendmsg", "uring_socket_udp4_sendmsg",
    "uring_sqpoll_udp6_sendmsg",
]
IPPROTO_UDPLITE = 136
IPPROTO_MPTCP = 262
IPV6_RTHDR = 57
MSG_FASTOPEN = 0x20000000
SYS_PIDFD_GETFD = 438
SYS_IO_URING_SETUP, SYS_IO_URING_ENTER = 425, 426
IORING_OP_SENDMSG, IORING_OP_CONNECT, IORING_OP_OPENAT, IORING_OP_SOCKET = 9, 16, 18, 45
AT_FDCWD = -100
IORING_SETUP_SQPOLL = 2
IORING_ENTER_GETEVENTS, IORING_ENTER_SQ_WAKEUP = 1, 2


def env():
    return os.environ["D4"], os.environ["D6"], int(os.environ["BASE"])


def port(name):
    return int(os.environ["BASE"]) + ATTACKS.index(name)


def marker(name):
    return ("rdx-" + name).encode()


def helper_call(cmd, fd=None):
    """Asks the outside helper; returns (reply, received fd or None)."""
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.connect(os.environ["HELPER"])
    if fd is None:
        u.sendall(cmd.encode())
    else:
        socket.send_fds(u, [cmd.encode()], [fd])
    msg, fds, _, _ = socket.recv_fds(u, 1024, 1)
    return msg.decode(), (fds[0] if fds else None)


class Uring:
    """An io_uring instance driven by raw syscalls (no liburing here): one
    operation at a time, submitted and waited for. With `sqpoll`, the
    kernel's submission thread, not this process, carries out the
    operation."""

    def __init__(self, sqpoll=False):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        self.sqpoll = sqpoll
        params = ctypes.create_string_buffer(120)
        if sqpoll:
            struct.pack_into("<IIII", params, 8, IORING_SETUP_SQPOLL, 0, 1000, 0)
        self.fd = self.libc.syscall(SYS_IO_URING_SETUP, 4, params)
        if self.fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, "io_uring_setup: " + os.strerror(e))
        sq_entries, cq_entries = struct.unpack_from("<II", params, 0)
        # io_sqring_offsets and io_cqring_offsets: 8 u32 and a u64 each.
        self.sq_off = struct.unpack_from("<8IQ", params, 40)
        self.cq_off = struct.unpack_from("<8IQ", params, 80)
        self.sq = mmap.mmap(self.fd, self.sq_off[6] + 4 * sq_entries, offset=0)
        self.cq = mmap.mmap(self.fd, self.cq_off[5] + 16 * cq_entries, offset=0x8000000)
        self.sqes = mmap.mmap(self.fd, 64 * sq_entries, offset=0x10000000)

    def op(self, opcode, fd, addr=0, addr2=0, length=0):
        """Runs one operation; returns its result (>= 0, or raises)."""
        self.sqes[0:64] = bytes(64)
        struct.pack_into("<BBHiQQIIQ", self.sqes, 0, opcode, 0, 0, fd, addr2, addr, length, 0, 0x7264)
        head_off, tail_off, mask_off = self.sq_off[0], self.sq_off[1], self.sq_off[2]
        tail = struct.unpack_from("<I", self.sq, tail_off)[0]
        mask = struct.unpack_from("<I", self.sq, mask_off)[0]
        struct.pack_into("<I", self.sq, self.sq_off[6] + 4 * (tail & mask), 0)
        struct.pack_into("<I", self.sq, tail_off, tail + 1)
        flags = IORING_ENTER_GETEVENTS | (IORING_ENTER_SQ_WAKEUP if self.sqpoll else 0)
        if self.libc.syscall(SYS_IO_URING_ENTER, self.fd, 1, 1, flags, None, 0) < 0:
            e = ctypes.get_errno()
            raise OSError(e, "io_uring_enter: " + os.strerror(e))
        head = struct.unpack_from("<I", self.cq, self.cq_off[0])[0]
        cmask = struct.unpack_from("<I", self.cq, self.cq_off[2])[0]
        _, res, _ = struct.unpack_from("<QiI", self.cq, self.cq_off[5] + 16 * (head & cmask))
        struct.pack_into("<I", self.cq, self.cq_off[0], head + 1)
        if res < 0:
            raise OSError(-res, os.strerror(-res))
        return res


def sockaddr(addr):
    """A C sockaddr for (host, port), and its length."""
    host, p = addr
    if ":" in host:
        raw = struct.pack("<H", socket.AF_INET6) + struct.pack("!HI", p, 0) + \
            socket.inet_pton(socket.AF_INET6, host) + bytes(4)
    else:
        raw = struct.pack("<H", socket.AF_INET) + struct.pack("!H", p) + \
            socket.inet_aton(host) + bytes(8)
    return ctypes.create_string_buffer(raw, len(raw)), len(raw)


def uring_sendmsg(ring, fd, data, addr):
    """IORING_OP_SENDMSG of `data` to `addr` on socket `fd`."""
    name, namelen = sockaddr(addr)
    buf = ctypes.create_string_buffer(data, len(data))
    iov = ctypes.create_string_buffer(struct.pack("<QQ", ctypes.addressof(buf), len(data)))
    msg = ctypes.create_string_buffer(struct.pack(
        "<QI4xQQQQi4x", ctypes.addressof(name), namelen, ctypes.addressof(iov), 1, 0, 0, 0))
    ring.op(IORING_OP_SENDMSG, fd, ctypes.addressof(msg), 0, 1)


def uring_open(spec):
    """Opens what `spec` names through io_uring (or as the usage says);
    returns the fd as text."""
    if spec.startswith("plain:"):
        fd = os.open(spec[len("plain:"):], os.O_RDONLY)
        os.close(fd)
        return str(fd)
    if spec.startswith("flood:"):
        _, n, path = spec.split(":", 2)
        for _ in range(int(n)):
            os.close(os.open(path, os.O_RDONLY))
        return n
    sqpoll = spec.startswith("sqpoll:")
    path = spec[len("sqpoll:"):] if sqpoll else spec
    dfd = AT_FDCWD
    if ":" in path:
        d, path = path.split(":", 1)
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    name = ctypes.create_string_buffer(path.encode())
    fd = Uring(sqpoll).op(IORING_OP_OPENAT, dfd, ctypes.addressof(name))
    os.close(fd)
    return str(fd)


def run(name):
    d4, d6, _ = env()
    p, m = port(name), marker(name)
    a4, a6 = (d4, p), (d6, p)
    if name == "tcp4":
        socket.create_connection(a4, timeout=3).sendall(m)
    elif name == "tcp6":
        socket.create_connection(a6, timeout=3).sendall(m)
    elif name == "tcp6_mapped":
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect(("::ffff:" + d4, p))
        s.sendall(m)
    elif name == "tfo4":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.sendto(m, MSG_FASTOPEN, a4)
    elif name in ("mptcp4", "mptcp6"):
        fam = socket.AF_INET if name == "mptcp4" else socket.AF_INET6
        s = socket.socket(fam, socket.SOCK_STREAM, IPPROTO_MPTCP)
        s.settimeout(3)
        s.connect(a4 if fam == socket.AF_INET else a6)
        s.sendall(m)
    elif name == "udp4_sendto":
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(m, a4)
    elif name == "udp6_sendto":
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(m, a6)
    elif name == "udp6_mapped_sendto":
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(m, ("::ffff:" + d4, p))
    elif name in ("udp4_connect", "udp6_connect"):
        fam = socket.AF_INET if name == "udp4_connect" else socket.AF_INET6
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.connect(a4 if fam == socket.AF_INET else a6)
        s.send(m)
    elif name == "udp4_sendmsg":
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendmsg([m], [], 0, a4)
    elif name == "udp4_connected_sendto_other":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", 9))
        s.sendto(m, a4)
    elif name.startswith("udplite"):
        fam = socket.AF_INET if "4" in name else socket.AF_INET6
        s = socket.socket(fam, socket.SOCK_DGRAM, IPPROTO_UDPLITE)
        dst = a4 if fam == socket.AF_INET else a6
        if name.endswith("connect"):
            s.connect(dst)
            s.send(m)
        else:
            s.sendto(m, dst)
    elif name == "icmp4_ping":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        s.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + m, (d4, 0))
    elif name == "icmp6_ping":
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
        s.sendto(struct.pack("!BBHHH", 128, 0, 0, 0, 1) + m, (d6, 0))
    elif name.startswith("raw") or name == "lsrr4":
        # Raw sockets and IPv4 source routing need CAP_NET_RAW: a setcap'd
        # interpreter, as a setcap'd ping would have.
        out = subprocess.run([os.environ["RAWPY"], __file__, "raw", name],
                             capture_output=True, text=True, timeout=10)
        res = out.stdout.strip() or out.stderr.strip().splitlines()[-1]
        if res != "sent":
            return res
    elif name in ("srh6_via_denied", "srh6_via_allowed"):
        # A segment routing header: the packet goes to the segment listed
        # last, then on to the one before. "via_denied": to an allowed
        # address (::1) by way of the denied host; "via_allowed": to the
        # denied host by way of ::1.
        allowed = socket.inet_pton(socket.AF_INET6, "::1")
        denied = socket.inet_pton(socket.AF_INET6, d6)
        final, first = (allowed, denied) if name == "srh6_via_denied" else (denied, allowed)
        srh = struct.pack("!BBBBBBH", 0, 4, 4, 1, 1, 0, 0) + final + first
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RTHDR, srh)
        dst = "::1" if name == "srh6_via_denied" else d6
        s.sendto(m, (dst, p))
    elif name == "broadcast4":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        b = socket.inet_ntoa(struct.pack("!I", struct.unpack("!I", socket.inet_aton(d4))[0] | 1))
        s.sendto(m, (b, p))
    elif name == "multicast4":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        local = socket.inet_ntoa(struct.pack("!I", struct.unpack("!I", socket.inet_aton(d4))[0] - 1))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
        s.sendto(m, ("224.0.0.251", p))
    elif name == "pidfd_getfd":
        # Take the helper's socket out of its fd table (same uid, no Yama).
        reply, _ = helper_call("pid")
        pid, fd = map(int, reply.split())
        pidfd = os.pidfd_open(pid)
        libc = ctypes.CDLL(None, use_errno=True)
        got = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            return errno.errorcode.get(ctypes.get_errno(), "?")
        socket.socket(fileno=got).sendto(m, a4)
    elif name == "scm_rights_in":
        _, fd = helper_call("give")
        socket.socket(fileno=fd).sendto(m, a4)
    elif name == "scm_rights_out":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        reply, _ = helper_call("take %s %d %s" % (d4, p, m.decode()), s.fileno())
        return reply
    elif name == "outside_process":
        reply, _ = helper_call("send %s %d %s" % (d4, p, m.decode()))
        return reply
    elif name == "uring_tcp4_connect":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sa, salen = sockaddr(a4)
        Uring().op(IORING_OP_CONNECT, s.fileno(), ctypes.addressof(sa), salen)
        s.sendall(m)
    elif name == "uring_udp4_sendmsg":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        uring_sendmsg(Uring(), s.fileno(), m, a4)
    elif name == "uring_socket_udp4_sendmsg":
        # The socket itself made by io_uring (IORING_OP_SOCKET, Linux 5.19).
        ring = Uring()
        fd = ring.op(IORING_OP_SOCKET, socket.AF_INET, 0, socket.SOCK_DGRAM, 0)
        uring_sendmsg(ring, fd, m, a4)
    elif name == "uring_sqpoll_udp6_sendmsg":
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        uring_sendmsg(Uring(sqpoll=True), s.fileno(), m, a6)
    else:
        return "unknown"
    return "sent"


def raw(name):
    d4, d6, _ = env()
    m = marker(name)
    if name == "raw4_icmp":
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.sendto(struct.pack("!BBHHH", 8, 0, 0, 7, 1) + m, (d4, 0))
    elif name == "raw6_icmp":
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        s.sendto(struct.pack("!BBHHH", 128, 0, 0, 7, 1) + m, (d6, 0))
    elif name == "raw4_proto253":
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 253)
        s.sendto(m, (d4, 0))
    elif name == "lsrr4":
        # Loose source route through the denied host to 127.0.0.1.
        opt = bytes([1, 0x83, 7, 4]) + socket.inet_aton(d4)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, opt)
        s.sendto(m, ("127.0.0.1", port(name)))


def errname(e):
    return errno.errorcode.get(e.errno, str(e)) if isinstance(e, OSError) else type(e).__name__


def helper(directory):
    path = os.path.join(directory, "helper.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o777)
    srv.listen(8)
    kept = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print("ready", flush=True)
    while True:
        c, _ = srv.accept()
        msg, fds, _, _ = socket.recv_fds(c, 1024, 1)
        words = msg.decode().split()
        reply = "?"
        try:
            if words[0] == "pid":
                reply = "%d %d" % (os.getpid(), kept.fileno())
            elif words[0] == "give":
                socket.send_fds(c, [b"fd"], [kept.fileno()])
                c.close()
                continue
            elif words[0] in ("take", "send"):
                s = socket.socket(fileno=fds[0]) if words[0] == "take" else \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.sendto(words[3].encode(), (words[1], int(words[2])))
                reply = "sent"
        except OSError as e:
            reply = errname(e)
        c.sendall(reply.encode())
        c.close()


def inbound(p, secs):
    t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("::", p))
    t.listen(8)
    t.setblocking(False)
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.bind(("::", p))
    u.setblocking(False)
    print("listening", flush=True)
    got = []
    end = time.time() + secs
    while time.time() < end:
        try:
            c, a = t.accept()
            got.append("tcp from %s" % a[0])
        except BlockingIOError:
            pass
        try:
            d, a = u.recvfrom(100)
            got.append("udp from %s: %r" % (a[0], d))
        except BlockingIOError:
            pass
        time.sleep(0.05)
    print("inbound=" + (";".join(got) or "nothing"), flush=True)


def sniff(iface, out):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((iface, 0))
    f = open(out, "a", buffering=1)
    while True:
        pkt, addr = s.recvfrom(65535)
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        eth = struct.unpack("!H", pkt[12:14])[0]
        ip = pkt[14:]
        rec = {"markers": [x.decode() for x in re.findall(rb"rdx-[a-z0-9_]+", ip)]}
        if eth == 0x0800:
            ihl = (ip[0] & 15) * 4
            rec.update(v=4, proto=ip[9], dst=socket.inet_ntoa(ip[16:20]))
            l4 = ip[ihl:]
        elif eth == 0x86DD:
            rec.update(v=6, proto=ip[6], dst=socket.inet_ntop(socket.AF_INET6, ip[24:40]))
            l4 = ip[40:]
        else:
            continue
        if rec["proto"] in (6, 17, IPPROTO_UDPLITE) and len(l4) >= 4:
            rec["dport"] = struct.unpack("!H", l4[2:4])[0]
        f.write(json.dumps(rec) + "\n")


def main():
    mode = sys.argv[1]
    if mode == "attack":
        for name in sys.argv[2:]:
            try:
                res = run(name)
            except Exception as e:  # the result is informative only
                res = errname(e)
            print("%s=%s" % (name, res), flush=True)
    elif mode == "raw":
        try:
            raw(sys.argv[2])
            print("sent")
        except OSError as e:
            print(errname(e))
    elif mode == "helper":
        helper(sys.argv[2])
    elif mode == "inbound":
        inbound(int(sys.argv[2]), float(sys.argv[3]))
    elif mode == "uring-open":
        for spec in sys.argv[2:]:
            try:
                res = uring_open(spec)
            except OSError as e:
                res = errname(e)
            print("%s=%s" % (spec, res), flush=True)
    elif mode == "sniff":
        sniff(sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    main()
