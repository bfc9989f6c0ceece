#!/usr/bin/python3
"""A minimal Debian-policy MDA for the system tests (run as the user).

usage: mda.py SPOOL MESSAGE-FILE

Opens the spool first and then waits for its locks, as an MDA blocked
behind a POP3 session does: fcntl() (blocking), the dot-lock SPOOL.lock
through the setgid helper dotlockfile (-p: our pid inside, so a lock
whose holder died is broken at once, as liblockfile does), flock()
(blocking).  Prints the SHA-256 of the spool as it finds it with all
three locks, appends the message, fsyncs, unlocks in reverse order.
If the session replaced the spool by another inode meanwhile, the
message goes to the unlinked file and is lost: the test sees that.
Prints one line per step with a monotonic time stamp.
"""

import fcntl
import hashlib
import os
import subprocess
import sys
import time


def step(what):
    print("%.3f %s" % (time.monotonic(), what), flush=True)


def main():
    spool, msgfile = sys.argv[1], sys.argv[2]
    with open(msgfile, "rb") as f:
        msg = f.read()
    # Read-write: the spool is read through this descriptor, since
    # closing any other one of this file would drop our fcntl lock.
    fd = os.open(spool, os.O_RDWR | os.O_APPEND)
    step("opened")
    fcntl.lockf(fd, fcntl.LOCK_EX)
    step("fcntl")
    # One try at a time, every 50 ms for a minute: dotlockfile's own
    # retries wait whole seconds, which would set the pace of the tests.
    deadline = time.monotonic() + 60
    while subprocess.run(["dotlockfile", "-p", "-l", "-r", "0",
                          spool + ".lock"]).returncode != 0:
        if time.monotonic() > deadline:
            sys.exit("dot-lock not taken in 60 s")
        time.sleep(0.05)
    step("dotlock")
    fcntl.flock(fd, fcntl.LOCK_EX)
    step("flock")
    h, off = hashlib.sha256(), 0
    while True:
        chunk = os.pread(fd, 1 << 20, off)
        if not chunk:
            break
        h.update(chunk)
        off += len(chunk)
    step("saw " + h.hexdigest())
    done = 0
    while done < len(msg):
        done += os.write(fd, msg[done:])
    os.fsync(fd)
    step("appended")
    fcntl.flock(fd, fcntl.LOCK_UN)
    subprocess.run(["dotlockfile", "-u", spool + ".lock"], check=True)
    fcntl.lockf(fd, fcntl.LOCK_UN)
    os.close(fd)
    step("done")


if __name__ == "__main__":
    main()
