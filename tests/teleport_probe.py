#!/usr/bin/env python3
"""Teleport's own restricted-session probe (lib/restrictedsession
restricted_test.go): for each "VER IP" line on stdin, a TCP connect and a
UDP sendto to IP port 8888 from a socket bound to the unspecified address
of family VER, as Teleport's dialTCP and sendUDP do. Prints this process's
pid first, then "tcp=V udp=V" per line, V being "EPERM" or "ok" (any other
outcome, such as no route, is the network's answer, not the policy's).

Run it in a network namespace with no interface up: the policy hooks run
before the route lookup, so nothing leaves for these public addresses.
"""
import errno
import os
import socket
import sys

PORT = 8888


def attempt(call):
    try:
        call()
        return "ok"
    except OSError as e:
        return "EPERM" if e.errno == errno.EPERM else "ok"


def probe(ver, ip, kind):
    fam = socket.AF_INET if ver == "4" else socket.AF_INET6
    s = socket.socket(fam, kind)
    try:
        s.bind(("0.0.0.0", 0) if ver == "4" else ("::", 0))
        if kind == socket.SOCK_STREAM:
            s.settimeout(0.5)
            return attempt(lambda: s.connect((ip, PORT)))
        return attempt(lambda: s.sendto(b"abc", (ip, PORT)))
    finally:
        s.close()


print(os.getpid(), flush=True)
for line in sys.stdin:
    ver, ip = line.split()
    tcp = probe(ver, ip, socket.SOCK_STREAM)
    udp = probe(ver, ip, socket.SOCK_DGRAM)
    print("tcp=%s udp=%s" % (tcp, udp), flush=True)
