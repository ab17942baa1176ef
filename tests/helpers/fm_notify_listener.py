#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A stand-in for systemd's notification socket (sd_notify(3)), for tests.

Usage: fm_notify_listener.py SOCKET LOG [--check-mount PATH | --entries]
Binds an AF_UNIX datagram socket at SOCKET ("@name": abstract) and appends
each datagram's assignments to LOG, one per line, as "SECONDS KEY=VALUE"
(seconds since the listener started).  With --check-mount PATH, when a
READY=1 arrives it also writes "MOUNTED yes|no" (whether PATH is a mount
point in /proc/self/mountinfo at that moment) and "READABLE yes|no" (one
4 KiB read of PATH/image, or of PATH if it is a file).  With --entries
(a stand-in for the journal's socket), each datagram is one line instead:
its fields joined by "|".  Writes "LISTENING" once bound; runs until
killed.
"""
import os
import socket
import sys
import time


def is_mount(path):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mp = fields[4].encode().decode("unicode_escape")
            if mp == path:
                return True
    return False


def main():
    sock_path, log_path = sys.argv[1], sys.argv[2]
    check = None
    entries = len(sys.argv) > 3 and sys.argv[3] == "--entries"
    if len(sys.argv) > 4 and sys.argv[3] == "--check-mount":
        check = sys.argv[4]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    addr = "\0" + sock_path[1:] if sock_path.startswith("@") else sock_path
    s.bind(addr)
    t0 = time.monotonic()
    log = open(log_path, "a", buffering=1)
    log.write("LISTENING\n")
    while True:
        data = s.recv(65536).decode(errors="replace")
        now = time.monotonic() - t0
        if entries:
            log.write("%.3f %s\n" % (now, "|".join(data.rstrip("\n").split("\n"))))
            continue
        for line in data.split("\n"):
            if line:
                log.write("%.3f %s\n" % (now, line))
            if line == "READY=1" and check:
                log.write("MOUNTED %s\n" % ("yes" if is_mount(check) else "no"))
                img = check if os.path.isfile(check) else os.path.join(check, "image")
                try:
                    with open(img, "rb") as f:
                        ok = len(f.read(4096)) == 4096
                except OSError:
                    ok = False
                log.write("READABLE %s\n" % ("yes" if ok else "no"))


if __name__ == "__main__":
    main()
