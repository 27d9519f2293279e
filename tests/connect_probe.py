#!/usr/bin/env python3
"""Connects a UDP socket to each destination read from stdin, one per line
("4 ADDR" for an AF_INET socket, "6 ADDR" for AF_INET6), and prints one
verdict per line: "EPERM" when the connect is refused with EPERM, "ok"
otherwise (another error, such as no route, is the network's answer, not
the policy's). A UDP connect sends no packet, so any address may be probed.
"""
import errno
import socket
import sys

for line in sys.stdin:
    family, addr = line.split()
    s = socket.socket(socket.AF_INET if family == "4" else socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.connect((addr, 9))
        print("ok")
    except OSError as e:
        print("EPERM" if e.errno == errno.EPERM else "ok")
    finally:
        s.close()
