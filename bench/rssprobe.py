#!/usr/bin/env python3
"""Where an inetd-style POP3 server's memory is when it runs PAM.

    bench/rssprobe.py USER PASSWORD SERVER [ARGS...]      (as root)

Starts SERVER on a socketpair (fd 0 and 1), sends USER, and prints the
resident KB per mapping of the server's first process (the one that
will run PAM's password hash) before PASS; sends PASS and prints that
process's VmHWM (the peak, with the hash's buffer) and VmRSS; QUIT.
Used for bench/README.md's "Peak RSS" paragraph: run it alternately on
pop3d and popa3d with an account and PAM service both accept.
"""
import collections
import os
import re
import socket
import subprocess
import sys


def rss_by_mapping(pid):
    per = collections.Counter()
    name = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                name = os.path.basename(parts[5]) if len(parts) > 5 \
                    else "[anon]"
            elif line.startswith("Rss:"):
                per[name] += int(line.split()[1])
    return per


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    user, password, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    ours, theirs = socket.socketpair()
    server = subprocess.Popen(argv, stdin=theirs, stdout=theirs,
                              stderr=subprocess.DEVNULL)
    theirs.close()
    ours.settimeout(30)
    replies = ours.makefile("rb")

    def command(line):
        ours.sendall(line.encode() + b"\r\n")
        return replies.readline()

    replies.readline()
    command("USER " + user)
    before = rss_by_mapping(server.pid)
    print("before PASS: %d KB" % sum(before.values()))
    for name, kb in before.most_common():
        if kb:
            print("  %6d %s" % (kb, name))
    reply = command("PASS " + password)
    if not reply.startswith(b"+OK"):
        sys.exit("login failed: %r" % reply)
    with open("/proc/%d/status" % server.pid) as f:
        status = f.read()
    for field in ("VmHWM", "VmRSS"):
        print("%s: %s KB" % (field, re.search(field + r":\s+(\d+)",
                                               status).group(1)))
    command("QUIT")
    server.wait(timeout=30)


if __name__ == "__main__":
    main()
