#!/usr/bin/env python3
"""Network probe run inside sessions by tests and the demo.

probe.py tcp HOST PORT            connect()
probe.py udp-sendto HOST PORT     unconnected UDP sendto()
probe.py udp-connect HOST PORT    connect() a UDP socket, then send()
probe.py tcp6-mapped HOST PORT    connect() an AF_INET6 socket to ::ffff:HOST
probe.py udp6-mapped HOST PORT    sendto() ::ffff:HOST from an AF_INET6 UDP socket

Prints "ok" or the errno name (e.g. "EPERM") and exits 0 on ok, 1 otherwise.
"""
import errno
import socket
import sys


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    mapped = mode in ("tcp6-mapped", "udp6-mapped")
    family = socket.AF_INET6 if ":" in host or mapped else socket.AF_INET
    if mapped:
        host = "::ffff:" + host
    try:
        if mode in ("tcp", "tcp6-mapped"):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect((host, port))
        elif mode in ("udp-sendto", "udp6-mapped"):
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.sendto(b"probe", (host, port))
        elif mode == "udp-connect":
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.connect((host, port))
            s.send(b"probe")
        else:
            print("unknown mode " + mode, file=sys.stderr)
            return 2
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
