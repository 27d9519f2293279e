#!/usr/bin/env python3
"""For each destination read from stdin, one per line ("4 ADDR" for an
AF_INET socket, "6 ADDR" for AF_INET6, optionally followed by a port
(default 9) and "udp" (the default) or "tcp"), connects a UDP socket to it
and sends a datagram to it from an unconnected one, and prints the two
verdicts on one line; for "tcp", connects a TCP socket and prints that
one verdict: "EPERM" when the call is refused with EPERM, "ok" otherwise
(another error, such as no route, is the network's answer, not the
policy's).

Run it in a network namespace of its own with no interface up: the policy
hooks run before the route lookup, so a denied call still fails with EPERM,
and an allowed send finds no route, so no datagram leaves for any address.
"""
import errno
import socket
import sys


def verdict(call):
    try:
        call()
        return "ok"
    except OSError as e:
        return "EPERM" if e.errno == errno.EPERM else "ok"


for line in sys.stdin:
    words = line.split()
    family, addr = words[0], words[1]
    port = int(words[2]) if len(words) > 2 else 9
    proto = words[3] if len(words) > 3 else "udp"
    fam = socket.AF_INET if family == "4" else socket.AF_INET6
    out = []
    if proto == "tcp":
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            out.append(verdict(lambda: s.connect((addr, port))))
        finally:
            s.close()
    else:
        for op in ("connect", "send"):
            s = socket.socket(fam, socket.SOCK_DGRAM)
            try:
                if op == "connect":
                    out.append(verdict(lambda: s.connect((addr, port))))
                else:
                    out.append(verdict(lambda: s.sendto(b"x", (addr, port))))
            finally:
                s.close()
    print(" ".join(out), flush=True)
