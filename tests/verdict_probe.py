#!/usr/bin/env python3
"""For each destination read from stdin, one per line ("4 ADDR" for an
AF_INET socket, "6 ADDR" for AF_INET6), connects a UDP socket to it and
sends a datagram to it from an unconnected one, and prints the two verdicts
on one line: "EPERM" when the call is refused with EPERM, "ok" otherwise
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
    family, addr = line.split()
    fam = socket.AF_INET if family == "4" else socket.AF_INET6
    out = []
    for op in ("connect", "send"):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            if op == "connect":
                out.append(verdict(lambda: s.connect((addr, 9))))
            else:
                out.append(verdict(lambda: s.sendto(b"x", (addr, 9))))
        finally:
            s.close()
    print(" ".join(out), flush=True)
