"""Helpers for pop3d's system tests.

Start the real server on a socketpair (as inetd would, fd 0/1 = the
client), speak POP3 to it, look at its processes in /proc, build spools
and check them.  The runner (tests/system/run) creates the accounts and
exports P3SYS_* variables; the tests run as root.

Every process a test starts gets its own process group, recorded in
$P3SYS_WORK/pgids so that the runner's trap can end it by id if a test
dies; the tests end them themselves on every path.
"""

import grp
import os
import pwd
import select
import signal
import socket
import subprocess
import sys
import time
import traceback

POP3D = os.environ.get("P3SYS_POP3D", "")
WORK = os.environ.get("P3SYS_WORK", "")
PASSWORD = os.environ.get("P3SYS_PASS", "")
PYTHON = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))

# The accounts the runner creates (same names as in tests/system/run).
U_AUTH = "p3sys1"       # logins; also a supplementary member of "mail"
U_EXPIRED = "p3sys2"    # usermod -e 1 during the test
U_LOCKED = "p3sys3"     # passwd -l during the test
U_CHANGE = "p3sys4"     # chage -d 0 during the test
U_LOCK = "p3sys5"       # locking tests
U_FAULT = "p3sys6"      # fault injection
U_MAILGRP = "p3sys7"    # primary group mail
U_NOPASS = "p3sys8"     # empty password (passwd -d)

SPOOL_DIR = "/var/mail"
STATE_DIR = "/var/lib/pop3d"
CHROOT_DIR = STATE_DIR + "/empty"
JOURNAL_DIR = STATE_DIR + "/journal"

# Bounds: a reply that takes longer than this means a hung server.
REPLY_TIMEOUT = 20.0
EXIT_TIMEOUT = 10.0


class Failure(Exception):
    """A test's assertion failed."""


class Stall(Failure):
    """A reply that did not come in time (stall_report() has printed
    where every process was waiting)."""


class Skip(Exception):
    """A test cannot run here (missing tool); not counted."""


def check(cond, what):
    if not cond:
        raise Failure(what)


def info(text):
    """A comment line in the runner's output."""
    for line in str(text).splitlines():
        print("# " + line, flush=True)


# ---------------------------------------------------------------- processes

_started = []           # Popen objects whose process groups we own


def _record_pgid(pid):
    if WORK:
        with open(os.path.join(WORK, "pgids"), "a") as f:
            f.write("%d\n" % pid)


def spawn(argv, **kw):
    """Popen in a new process group, recorded for the runner's trap."""
    kw.setdefault("start_new_session", True)
    kw.setdefault("close_fds", True)
    p = subprocess.Popen(argv, **kw)
    _record_pgid(p.pid)
    _started.append(p)
    return p


def end_all():
    """End every process group this test file started, by its id."""
    for p in _started:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    del _started[:]


def become_subreaper():
    """Orphans of our servers become our children, so that we reap them
    at once (this machine's pid 1 reaps late: a zombie's pid looks alive
    to liblockfile's stale-lock check)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36
    check(libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0,
          "prctl(PR_SET_CHILD_SUBREAPER)")


def reap(pid):
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def wait_for(pred, timeout, interval=0.02):
    """Poll pred() until it is true; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def children(pid):
    kids = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids += [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return kids


def proc_status(pid):
    st = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            st[k] = v.strip()
    return st


def proc_ids(pid):
    """(uids, gids, groups) of a process: real, effective, saved, fs."""
    st = proc_status(pid)
    uids = [int(x) for x in st["Uid"].split()]
    gids = [int(x) for x in st["Gid"].split()]
    groups = [int(x) for x in st.get("Groups", "").split()]
    return uids, gids, groups, st


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("latin-1").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def alive(pid):
    try:
        return proc_status(pid).get("State", "Z")[0] not in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return False


def open_paths(pid):
    """Targets of a process's open descriptors."""
    out = []
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                out.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
            except OSError:
                pass
    except OSError:
        pass
    return out


def _read_proc(pid, name):
    try:
        with open("/proc/%d/%s" % (pid, name)) as f:
            return f.read().strip()
    except OSError:
        return "?"


def stall_report():
    """Where every process a test may be waiting on is: state, wait
    channel, syscall, tracer, kernel stack.  A reply that never comes is
    then a diagnosis, not a shrug."""
    names = ("pop3d", "strace", "dotlockfile", "procmail", "python3")
    for ent in sorted(os.listdir("/proc"), key=lambda x: (len(x), x)):
        if not ent.isdigit() or int(ent) == os.getpid():
            continue
        pid = int(ent)
        if _read_proc(pid, "comm") not in names:
            continue
        try:
            st = proc_status(pid)
        except OSError:
            continue
        stack = " < ".join(ln.split()[-1] for ln in
                           _read_proc(pid, "stack").splitlines()[:6])
        info("stall: pid %d ppid %s %s [%s] wchan %s syscall %s tracer %s "
             "stack %s" % (pid, st.get("PPid"), st.get("State"),
                           cmdline(pid)[:60], _read_proc(pid, "wchan"),
                           _read_proc(pid, "syscall").split(" ")[0],
                           st.get("TracerPid"), stack))


def uid_of(user):
    return pwd.getpwnam(user).pw_uid


def mail_gid():
    return grp.getgrnam("mail").gr_gid


# ------------------------------------------------------------------- client

class Client:
    """A POP3 client on a connected socket, line by line."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, text):
        data = text if isinstance(text, bytes) else text.encode() + b"\r\n"
        self.sock.sendall(data)

    def line(self, timeout=REPLY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                stall_report()
                raise Stall("no reply within %.0f s" % timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("latin-1")

    def cmd(self, text, timeout=REPLY_TIMEOUT):
        self.send(text)
        return self.line(timeout)

    def cmd_or_eof(self, text, timeout=REPLY_TIMEOUT):
        """The reply, or None if the server closed without one."""
        try:
            self.send(text)
        except (BrokenPipeError, ConnectionResetError):
            return None
        try:
            return self.line(timeout)
        except EOFError:
            return None

    def multi(self, timeout=REPLY_TIMEOUT):
        lines = []
        while True:
            ln = self.line(timeout)
            if ln == ".":
                return lines
            lines.append(ln[1:] if ln.startswith(".") else ln)

    def eof(self, timeout):
        """True if the server closes the connection within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
            if not chunk:
                return True
            self.buf += chunk

    def login(self, user, password=None):
        """USER/PASS; returns the reply to the last command sent."""
        r = self.cmd("USER " + user)
        if not r.startswith("+OK"):
            return r
        return self.cmd("PASS " + (PASSWORD if password is None
                                   else password))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


_nserver = 0


class Server:
    """One pop3d on a socketpair: fd 0 and 1 are the client's peer.

    wrap: a command to run it under (strace -f ...); pid is then the
    wrapper's, and kids() and the like do not apply.  debug: -d, the
    log on stderr (a file); without it pop3d logs to syslog."""

    def __init__(self, args=(), env=None, greet=True, wrap=(), debug=True):
        global _nserver
        _nserver += 1
        self.log = os.path.join(WORK, "pop3d.%d.%d.log" % (os.getpid(),
                                                          _nserver))
        ours, theirs = socket.socketpair()
        e = dict(os.environ)
        e.setdefault("REMOTE_ADDR", "127.0.0.1")
        e.update(env or {})
        with open(self.log, "wb") as logf:
            self.proc = spawn(list(wrap) + [POP3D] +
                              (["-d"] if debug else []) + list(args),
                              stdin=theirs,
                              stdout=theirs, stderr=logf, env=e)
        theirs.close()
        self.pid = self.proc.pid
        self.c = Client(ours)
        self.greeting = None
        if greet:
            self.greeting = self.c.line()
            check(self.greeting.startswith("+OK"),
                  "greeting: %r" % self.greeting)

    def wait(self, timeout=EXIT_TIMEOUT):
        """Exit status, or None if still running after timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kids(self):
        return [k for k in children(self.pid) if alive(k)]

    def child_titled(self, title, timeout=5.0):
        """The live child of the root parent whose title has title."""
        def find():
            for k in self.kids():
                if title in cmdline(k):
                    return k
            return None
        pid = wait_for(find, timeout)
        check(pid, "no child process titled %r (children: %s)" %
              (title, [(k, cmdline(k)) for k in self.kids()]))
        return pid

    def session_pid(self, user, timeout=5.0):
        """The session process: the parent's child running as user."""
        uid = uid_of(user)

        def find():
            for k in self.kids():
                try:
                    if proc_ids(k)[0][0] == uid:
                        return k
                except (FileNotFoundError, ProcessLookupError):
                    pass
            return None
        pid = wait_for(find, timeout)
        check(pid, "no session process for %s" % user)
        return pid

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("latin-1")
        except OSError:
            return ""

    def stop(self):
        self.c.close()
        if self.wait(EXIT_TIMEOUT) is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.wait(5)


def attach_strace(pid, log, args):
    """strace -p pid with args, once it has attached (10 s at most)."""
    st = spawn(["strace", "-p", str(pid), "-o", log] + list(args),
               stderr=subprocess.PIPE)
    buf = b""
    deadline = time.monotonic() + 10
    while b"attached" not in buf:
        left = deadline - time.monotonic()
        check(left > 0, "strace did not attach to %d: %r" % (pid, buf))
        r, _, _ = select.select([st.stderr], [], [], left)
        if r:
            chunk = os.read(st.stderr.fileno(), 4096)
            check(chunk, "strace ended: %r" % buf)
            buf += chunk
    return st


def login_session(user, args=(), debug=True):
    """A server with user logged in; check the +OK and return it."""
    s = Server(args, debug=debug)
    r = s.c.login(user)
    check(r.startswith("+OK"), "login %s: %r" % (user, r))
    return s, r


def run(argv, **kw):
    kw.setdefault("check", True)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.STDOUT)
    kw.setdefault("timeout", 60)
    return subprocess.run(argv, **kw)


# -------------------------------------------------------------------- mbox

def spool_path(user):
    return os.path.join(SPOOL_DIR, user)


def lock_path(user):
    return spool_path(user) + ".lock"


def write_spool(user, data):
    """The user's spool with data, 0660 user:mail, as Debian has it."""
    path = spool_path(user)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                 0o660)
    try:
        os.write(fd, data)
        os.fchown(fd, uid_of(user), mail_gid())
        os.fchmod(fd, 0o660)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_spool(user):
    try:
        with open(spool_path(user), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def remove_spool(user):
    for p in (spool_path(user), lock_path(user)):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def make_message(i, body_lines=6, width=60, tag="orig"):
    """One mbox message ending with its separator blank line."""
    head = (b"From sender%d@example.org Mon Jan  1 00:00:%02d 2024\n"
            b"From: Sender %d <sender%d@example.org>\n"
            b"To: someone@example.org\n"
            b"Subject: %s message %d\n"
            b"Message-ID: <%s.%d@example.org>\n\n"
            % (i, i % 60, i, i, tag.encode(), i, tag.encode(), i))
    body = b"".join(b"%s line %06d of message %d %s\n"
                    % (tag.encode(), n, i, b"x" * width)
                    for n in range(body_lines))
    return head + body + b"\n"


def parse_mbox(data):
    """Messages (each with its separator line), or None if not a mbox.

    A message starts at a "From " line at the start of the file or
    after a blank line; "From " inside a paragraph is text."""
    if data is None:
        return None
    if data == b"":
        return []
    if not data.startswith(b"From "):
        return None
    starts = [0]
    pos = 0
    while True:
        j = data.find(b"\n\nFrom ", pos)
        if j < 0:
            break
        starts.append(j + 2)
        pos = j + 2
    starts.append(len(data))
    return [data[starts[k]:starts[k + 1]] for k in range(len(starts) - 1)]


def locks_free(user):
    """None if no fcntl() or flock() lock is held on the spool, else why."""
    import fcntl
    path = spool_path(user)
    if not os.path.exists(path):
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        except OSError as e:
            return "fcntl lock still held (%s)" % e.strerror
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as e:
            return "flock lock still held (%s)" % e.strerror
    finally:
        os.close(fd)
    return None


# ------------------------------------------------------------------ harness

_tests = []


def test(fn):
    _tests.append(fn)
    return fn


def main():
    """Run this file's tests (or those named on the command line)."""
    if os.geteuid() != 0:
        print("FAIL %s: must run as root" % os.path.basename(sys.argv[0]))
        sys.exit(1)
    check_env()
    wanted = sys.argv[1:]
    failed = 0
    for fn in _tests:
        name = fn.__name__
        if wanted and name not in wanted:
            continue
        t0 = time.monotonic()
        try:
            fn()
            print("PASS %s (%.1f s)" % (name, time.monotonic() - t0),
                  flush=True)
        except Skip as e:
            print("SKIP %s: %s" % (name, e), flush=True)
        except Exception as e:      # a test's error is that test's failure
            failed += 1
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e),
                  flush=True)
            info(traceback.format_exc())
        finally:
            end_all()
    sys.exit(1 if failed else 0)


def check_env():
    for var, val in (("P3SYS_POP3D", POP3D), ("P3SYS_WORK", WORK),
                     ("P3SYS_PASS", PASSWORD)):
        if not val:
            print("FAIL environment: %s unset; use tests/system/run" % var)
            sys.exit(1)
