#!/usr/bin/python3
"""pop3d integration tests: spools, real POP3 clients, and the checks.

Run by the shell scripts beside it (tests/integration/run), as root.
IT_DIR names the run's private directory; each spool's messages are kept
there (spool-USER.json), so that every check compares what a client got
with the bytes that were written.

Each subcommand exits 0 on success; on failure it prints why and exits 1.

What a client must get (maildrop.c's mbox rules): a message is the text
after its From_ line up to, not including, the empty line that separates
it from the next From_ line (or the one trailing empty line at the end of
the file); sent with every line end CRLF (a CRLF in the file stays CRLF,
a bare LF becomes CRLF), dot-stuffed on the wire, and its size (STAT,
LIST, RETR's octets) is that of the unstuffed CRLF text.  Nothing is
unquoted (">From " stays as it is).  After DELE and QUIT the spool holds
exactly the kept messages' bytes, From_ lines and separators included.
"""

import argparse
import base64
import grp
import json
import os
import poplib
import pwd
import re
import socket
import ssl
import sys
import threading
import time

TIMEOUT = 30            # seconds, on every socket operation
poplib._MAXLINE = 1 << 20   # our messages have a 5000-byte line

IT_DIR = os.environ.get("IT_DIR", "")


class Fail(Exception):
    """A failed check: its text is printed."""


def expect(cond, what):
    if not cond:
        raise Fail(what)


# --- Spools -----------------------------------------------------------

def state_file(user):
    return os.path.join(IT_DIR, "spool-%s.json" % user)


def spool_file(user, path=None):
    return path or "/var/mail/%s" % user


def load_state(user):
    with open(state_file(user)) as f:
        st = json.load(f)
    for m in st["msgs"]:
        m["from"] = base64.b64decode(m["from"])
        m["text"] = base64.b64decode(m["text"])
    return st


def save_state(user, st):
    out = {"path": st["path"], "msgs": [
        {"from": base64.b64encode(m["from"]).decode(),
         "text": base64.b64encode(m["text"]).decode(),
         "id": m["id"]} for m in st["msgs"]]}
    with open(state_file(user), "w") as f:
        json.dump(out, f)


def message(user, n, tag):
    """One message; n varies its size and shape."""
    frm = b"From sender%d@example.org Mon Jan  %d 10:%02d:00 2024\n" % (
        n, n % 28 + 1, n % 60)
    hdr = (b"Return-Path: <sender%d@example.org>\n"
           b"From: Sender %d <sender%d@example.org>\n"
           b"To: %s@localhost\n"
           b"Subject: message %d for %s %s\n"
           b"Message-ID: <%d.%s.%s@example.org>\n"
           b"Received: from example.org\n"
           b"\tby localhost; Mon, 1 Jan 2024 10:00:00 +0000\n"
           b"\n") % (n, n, n, user.encode(), n, user.encode(), tag.encode(),
                     n, user.encode(), tag.encode())
    body = [b"Body of message %d." % n,
            b".",                              # stuffed on the wire
            b"..two dots",
            b".leading dot",
            b">From quoted in the spool, sent as it is",
            b"From not at a message start (no empty line before)",
            b"8-bit: \xc3\xbc\xc3\xb1\xc3\xaf\xc3\xa7\xc3\xb6d\xc3\xa9",
            b"x" * (100 + 997 * (n % 6)),       # up to 5085 bytes
            b"",
            b"second paragraph"]
    if n % 3 == 0:
        body.append(b"a line that ends in CRLF in the spool\r")
    if n % 4 == 0:
        body.append(b"")                       # text ends in an empty line
    text = hdr + b"".join(line + b"\n" for line in body)
    return {"from": frm, "text": text, "id": "%s-%s-%d" % (user, tag, n)}


def write_spool(user, st, append_from=None):
    """The spool file as an MDA leaves it: From_, text, empty line."""
    pw = pwd.getpwnam(user)
    gid = grp.getgrnam("mail").gr_gid
    path = st["path"]
    msgs = st["msgs"] if append_from is None else st["msgs"][append_from:]
    data = b"".join(m["from"] + m["text"] + b"\n" for m in msgs)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
    flags |= os.O_APPEND if append_from is not None else os.O_TRUNC
    fd = os.open(path, flags, 0o660)
    try:
        os.write(fd, data)
        os.fchown(fd, pw.pw_uid, gid)
        os.fchmod(fd, 0o660)
    finally:
        os.close(fd)


def big_message(user, n, tag, size):
    """A message of about size bytes: many lines, some of them dots."""
    m = message(user, n, tag)
    line = b"big message line (%s), with a few words to fill it up\n" % (
        tag.encode())
    # Every other line starts with a dot: dot-stuffing all the way.
    body = (line * (size // len(line))).replace(line * 2, line + b"." + line)
    m["text"] += body
    return m


def cmd_mkspool(a):
    st = {"path": spool_file(a.user, a.path), "msgs": []}
    if a.append:
        st = load_state(a.user)
    first = len(st["msgs"])
    for i in range(a.count):
        n = first + i + 1
        if a.big and i == a.count // 2:
            st["msgs"].append(big_message(a.user, n, a.tag, a.big))
        else:
            st["msgs"].append(message(a.user, n, a.tag))
    write_spool(a.user, st, first if a.append else None)
    save_state(a.user, st)


def wire(text):
    """The message as RETR sends it, unstuffed: every line end CRLF."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", text)


def top_of(text, lines):
    head, _, body = text.partition(b"\n\n")
    body_lines = body.splitlines(keepends=True)
    return wire(head + b"\n\n" + b"".join(body_lines[:lines]))


def check_spool(user, kept_ids):
    """The spool holds exactly the kept messages, in order; state updated."""
    st = load_state(user)
    kept = [m for m in st["msgs"] if m["id"] in kept_ids]
    want = b"".join(m["from"] + m["text"] + b"\n" for m in kept)
    with open(st["path"], "rb") as f:
        got = f.read()
    if got != want:
        raise Fail("%s: spool is not the kept messages (%d bytes, want %d)"
                   "\n%s" % (st["path"], len(got), len(want),
                             first_difference(got, want)))
    st["msgs"] = kept
    save_state(user, st)


def first_difference(got, want):
    for i, (x, y) in enumerate(zip(got, want)):
        if x != y:
            break
    else:
        i = min(len(got), len(want))
    return "first difference at %d: got %r, want %r" % (
        i, got[max(0, i - 20):i + 40], want[max(0, i - 20):i + 40])


def cmd_checkspool(a):
    st = load_state(a.user)
    gone = set(int(x) for x in a.deleted.split(",") if x)
    kept = [m["id"] for i, m in enumerate(st["msgs"], 1) if i not in gone]
    check_spool(a.user, set(kept))


# --- POP3 sessions ------------------------------------------------------

class POP3(poplib.POP3):
    """poplib.POP3 from a chosen source address."""

    def __init__(self, host, port, source=None):
        self.source = source
        poplib.POP3.__init__(self, host, port, timeout=TIMEOUT)

    def _create_socket(self, timeout):
        if self.host.startswith("/"):   # a front end on a UNIX socket
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(self.host)
            return sock
        src = (self.source, 0) if self.source else None
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=src)


class POP3_SSL(poplib.POP3_SSL):
    """poplib.POP3_SSL from a chosen source address, checking the CA."""

    def __init__(self, host, port, cafile, source=None):
        self.source = source
        ctx = ssl.create_default_context(cafile=cafile)
        poplib.POP3_SSL.__init__(self, host, port, timeout=TIMEOUT,
                                 context=ctx)

    def _create_socket(self, timeout):
        src = (self.source, 0) if self.source else None
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=src)
        return self.context.wrap_socket(sock, server_hostname=self.host)


def connect(a):
    if a.ssl:
        return POP3_SSL(a.host, a.port, a.cafile, a.source)
    return POP3(a.host, a.port, a.source)


def password(user):
    return os.environ.get("IT_PASSWORD_PREFIX", "it pass ") + user


def login(p, user):
    p.user(user)
    return p.pass_(password(user))


def retr_bytes(p, n):
    resp, lines, octets = p.retr(n)
    return resp, b"".join(line + b"\r\n" for line in lines), octets


def check_listing(p, msgs):
    """STAT, LIST, LIST n, UIDL, UIDL n against msgs (wire numbers 1..)."""
    sizes = [len(wire(m["text"])) for m in msgs]
    count, octets = p.stat()
    expect((count, octets) == (len(msgs), sum(sizes)),
           "STAT %d %d, want %d %d" % (count, octets, len(msgs), sum(sizes)))
    resp, lines, _ = p.list()
    want = [b"%d %d" % (i, s) for i, s in enumerate(sizes, 1)]
    expect(lines == want, "LIST %r, want %r" % (lines, want))
    for i, s in enumerate(sizes, 1):
        got = p.list(i)
        expect(got == b"+OK %d %d" % (i, s), "LIST %d: %r" % (i, got))
    resp, lines, _ = p.uidl()
    expect(len(lines) == len(msgs), "UIDL gave %d lines" % len(lines))
    uidls = []
    for i, line in enumerate(lines, 1):
        num, _, uid = line.partition(b" ")
        expect(num == b"%d" % i, "UIDL line %r" % line)
        expect(re.fullmatch(rb"[\x21-\x7e]{1,70}", uid) is not None,
               "UIDL %r is not 1-70 characters 0x21-0x7E" % uid)
        one = p.uidl(i)
        expect(one == b"+OK %d %s" % (i, uid), "UIDL %d: %r" % (i, one))
        uidls.append(uid.decode())
    expect(len(set(uidls)) == len(uidls), "UIDLs not unique: %r" % uidls)
    return uidls


def check_retr(p, msgs):
    for i, m in enumerate(msgs, 1):
        want = wire(m["text"])
        resp, got, octets = retr_bytes(p, i)
        expect(got == want, "RETR %d differs: %s" % (
            i, first_difference(got, want)))
        expect(octets == len(want), "RETR %d: %d octets, want %d" % (
            i, octets, len(want)))
        expect(resp.startswith(b"+OK %d octets" % len(want)),
               "RETR %d: %r" % (i, resp))


def check_top(p, msgs):
    for i, m in enumerate(msgs, 1):
        for n in (0, 2):
            resp, lines, _ = p.top(i, n)
            got = b"".join(line + b"\r\n" for line in lines)
            want = top_of(m["text"], n)
            expect(got == want, "TOP %d %d differs: %s" % (
                i, n, first_difference(got, want)))


def remember_uidls(user, msgs, uidls):
    """UIDLs must persist across sessions: compare with earlier ones."""
    seen = {}
    path = os.path.join(IT_DIR, "uidl-%s.json" % user)
    if os.path.exists(path):
        with open(path) as f:
            seen = json.load(f)
    for m, u in zip(msgs, uidls):
        old = seen.get(m["id"])
        expect(old is None or old == u, "message %s: UIDL %s, earlier %s"
               % (m["id"], u, old))
        expect(u not in [v for k, v in seen.items() if k != m["id"]],
               "UIDL %s reused for another message" % u)
        seen[m["id"]] = u
    with open(path, "w") as f:
        json.dump(seen, f)


def full_session(a, user, dele):
    """A whole session: CAPA, login, listings, every RETR, TOP, DELE, QUIT."""
    st = load_state(user)
    msgs = st["msgs"]
    p = connect(a)
    try:
        expect(p.getwelcome().startswith(b"+OK"), "greeting %r"
               % p.getwelcome())
        capa = p.capa()
        for c in ("USER", "UIDL", "TOP", "RESP-CODES", "PIPELINING"):
            expect(c in capa, "CAPA lacks %s: %r" % (c, capa))
        resp = login(p, user)
        expect(resp.startswith(b"+OK"), "PASS: %r" % resp)
        uidls = check_listing(p, msgs)
        remember_uidls(user, msgs, uidls)
        check_retr(p, msgs)
        check_top(p, msgs)
        for n in dele:
            expect(p.dele(n).startswith(b"+OK"), "DELE %d" % n)
        kept = [m for i, m in enumerate(msgs, 1) if i not in dele]
        if dele:
            count, octets = p.stat()
            expect(count == len(kept), "STAT after DELE: %d" % count)
            try:
                p.retr(dele[0])
                raise Fail("RETR of a deleted message worked")
            except poplib.error_proto as e:
                expect(str(e).startswith("b'-ERR"), "RETR deleted: %s" % e)
        resp = p.quit()
        expect(resp.startswith(b"+OK"), "QUIT: %r" % resp)
    except (poplib.error_proto, OSError) as e:
        raise Fail("%s: %s" % (type(e).__name__, e))
    check_spool(user, set(m["id"] for m in kept))


def cmd_session(a):
    dele = [int(x) for x in a.dele.split(",") if x]
    full_session(a, a.user, dele)
    if a.again:
        # A second session sees the kept messages, with the same UIDLs.
        full_session(a, a.user, [])


def cmd_login(a):
    """Log in, STAT, QUIT: the smallest whole session."""
    p = connect(a)
    try:
        resp = login(p, a.user)
        expect(resp.startswith(b"+OK"), "PASS: %r" % resp)
        st = load_state(a.user)
        count, _ = p.stat()
        expect(count == len(st["msgs"]), "STAT %d" % count)
        p.quit()
    except (poplib.error_proto, OSError) as e:
        raise Fail("%s: %s" % (type(e).__name__, e))


def cmd_refused(a):
    """Cleartext login refused (-c): CAPA has no USER, USER gets -ERR."""
    p = connect(a)
    try:
        capa = p.capa()
        expect("USER" not in capa, "CAPA announces USER: %r" % capa)
        try:
            p.user(a.user)
            raise Fail("USER accepted")
        except poplib.error_proto as e:
            expect(str(e).startswith("b'-ERR"), "USER: %s" % e)
        p.quit()
    except (poplib.error_proto, OSError) as e:
        raise Fail("%s: %s" % (type(e).__name__, e))


# --- Load and IN-USE ----------------------------------------------------

def load_one(a, user, errors):
    try:
        full_session(a, user, [1])
    except Exception as e:                     # noqa: any failure counts
        errors.append("%s: %s" % (user, e))


def cmd_load(a):
    """Concurrent whole sessions, one per account, all started at once."""
    users = a.users.split(",")
    errors = []
    threads = [threading.Thread(target=load_one, args=(a, u, errors))
               for u in users]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1, a.deadline - (time.monotonic() - start)))
    late = [u for u, t in zip(users, threads) if t.is_alive()]
    if late:
        errors.append("still running after %d s: %s" % (a.deadline, late))
    if errors:
        raise Fail("%d of %d sessions failed:\n%s" % (
            len(errors), len(users), "\n".join(sorted(errors)[:10])))
    print("%d sessions in %.1f s" % (len(users), time.monotonic() - start))


def cmd_inuse(a):
    """Two sessions of one account at once: one works, one is IN-USE."""
    st = load_state(a.user)
    msgs = st["msgs"]
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    results = [None, None]
    hold = threading.Event()

    def attempt(k):
        p = connect(a)
        try:
            p.user(a.user)
            barrier.wait()
            try:
                p.pass_(password(a.user))
            except poplib.error_proto as e:
                results[k] = ("refused", str(e))
                p.close()
                return
            results[k] = ("in", None)
            # The winner keeps the maildrop until the loser has its answer.
            hold.wait(TIMEOUT)
            check_listing(p, msgs)
            check_retr(p, msgs)
            p.dele(len(msgs))
            p.quit()
            results[k] = ("done", None)
        except Exception as e:                  # noqa: reported below
            results[k] = ("error", "%s: %s" % (type(e).__name__, e))

    threads = [threading.Thread(target=attempt, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if any(r is not None and r[0] == "refused" for r in results):
            break
        if any(r is not None and r[0] == "error" for r in results):
            break
        time.sleep(0.05)
    hold.set()
    for t in threads:
        t.join(TIMEOUT)
    kinds = sorted(r[0] if r else "hung" for r in results)
    expect(kinds == ["done", "refused"], "results %r" % results)
    why = [r[1] for r in results if r[0] == "refused"][0]
    expect("-ERR [IN-USE]" in why, "the loser got %s" % why)
    # Nothing lost: only the winner's DELE of the last message is gone.
    check_spool(a.user, set(m["id"] for m in msgs[:-1]))


# --- Inactivity timeout -------------------------------------------------------

def wait_close(sock, limit):
    """Seconds until the server closed the connection; it must say nothing."""
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        data = sock.recv(4096)
    except socket.timeout:
        raise Fail("still open after %d s" % limit)
    expect(data == b"", "the server said %r at the timeout (RFC 1939 "
           "section 3: close without a response)" % data)
    return time.monotonic() - start


def cmd_idle(a):
    """pop3d -t T: an idle session is closed after T s, silently, and a
    DELE before it is not committed (no UPDATE)."""
    p = connect(a)
    try:
        took = wait_close(p.sock, a.timeout + 10)
        expect(took >= a.timeout - 0.5, "closed after %.1f s before login"
               % took)
        p = connect(a)
        expect(login(p, a.user).startswith(b"+OK"), "login")
        expect(p.dele(1).startswith(b"+OK"), "DELE 1")
        took = wait_close(p.sock, a.timeout + 10)
        expect(took >= a.timeout - 0.5, "closed after %.1f s" % took)
    except (poplib.error_proto, OSError) as e:
        raise Fail("%s: %s" % (type(e).__name__, e))
    check_spool(a.user, set(m["id"] for m in load_state(a.user)["msgs"]))


# --- Descriptors -------------------------------------------------------------

def fd_targets(pid, low=0):
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        if int(fd) >= low:
            try:
                out[int(fd)] = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except FileNotFoundError:
                pass
    return out


def children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid:
                kids.append(int(d))
    return sorted(kids)


def wait_for(what, fn, limit=5):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.05)
    raise Fail("no %s after %d s" % (what, limit))


def cmd_fdleak(a):
    """A descriptor the front end left open does not reach pop3d's
    unprivileged processes.

    The test starts the front end with MARKER open on an extra
    descriptor, as a front end started from a careless environment has
    (stunnel passes its own inherited descriptors on to exec'd programs).
    The pre-login child runs unprivileged on untrusted input, and the
    session runs as the user: neither may hold it, so pop3d must close
    every descriptor but 0, 1 and 2 before it forks them.
    """
    fe = a.fe_pid
    before = set(children(fe))
    p = connect(a)
    leaks = []
    try:
        parent = wait_for("pop3d process", lambda: sorted(
            set(children(fe)) - before))[-1]
        child = wait_for("pre-login child", lambda: children(parent))[0]
        for fd, t in sorted(fd_targets(child, 3).items()):
            if t == a.marker:
                leaks.append("pre-login child (uid %d): fd %d -> %s" % (
                    os.stat("/proc/%d" % child).st_uid, fd, t))
        expect(login(p, a.user).startswith(b"+OK"), "login")
        uid = pwd.getpwnam(a.user).pw_uid
        session = wait_for("session process", lambda: [
            k for k in children(parent) if os.stat("/proc/%d" % k).st_uid
            == uid])[0]
        for fd, t in sorted(fd_targets(session, 3).items()):
            if t == a.marker:
                leaks.append("session (uid %d): fd %d -> %s" % (uid, fd, t))
        p.quit()
    except (poplib.error_proto, OSError) as e:
        raise Fail("%s: %s" % (type(e).__name__, e))
    expect(not leaks, "the front end's descriptor, open in pop3d:\n"
           + "\n".join(leaks))


# --- fetchmail's deliveries ----------------------------------------------

def cmd_mdacheck(a):
    """Messages an MDA stored (one file each, in order) are the originals.

    fetchmail hands the MDA the message with LF line ends, unstuffed,
    without a Received: header (--invisible) or rewriting (--norewrite).
    """
    st = load_state(a.user)
    want = [st["msgs"][int(x) - 1] for x in a.msgs.split(",") if x]
    files = sorted(f for f in os.listdir(a.dir) if f.startswith("msg."))
    expect(len(files) == len(want), "%d messages delivered, want %d" % (
        len(files), len(want)))
    for f, m in zip(files, want):
        with open(os.path.join(a.dir, f), "rb") as fh:
            got = fh.read()
        exp = re.sub(rb"\r\n", b"\n", m["text"])
        expect(got == exp, "%s (message %s) differs: %s" % (
            f, m["id"], first_difference(got, exp)))


# --- The peer address -----------------------------------------------------

def cmd_peercheck(a):
    """pop3d's log and PAM agree on where USER's login came from.

    One pop3d process logs "connection from ADDR (SOURCE)" and then
    "login: USER from ADDR"; pam_exec in the test's PAM stack recorded
    PAM_RHOST=ADDR for USER.  Each check uses an account of its own.
    """
    syslog = os.environ["IT_SYSLOG"]
    rhost = os.environ["IT_RHOST"]
    login_re = re.compile(r"pop3d\[(\d+)\]: login: %s from (\S+)$"
                          % re.escape(a.user))
    deadline = time.monotonic() + 5
    while True:
        with open(syslog, errors="replace") as f:
            lines = f.read().splitlines()
        logins = [m for m in map(login_re.search, lines) if m]
        if logins or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    expect(len(logins) == 1, "%d login lines for %s" % (len(logins), a.user))
    pid, addr = logins[0].group(1), logins[0].group(2)
    expect(addr == a.addr, "login from %s, want %s" % (addr, a.addr))
    conn_re = re.compile(r"pop3d\[%s\]: connection from (\S+) \((\S+)\)$"
                         % pid)
    conns = [m for m in map(conn_re.search, lines) if m]
    expect(len(conns) == 1, "pop3d[%s]: %d connection lines" % (
        pid, len(conns)))
    expect(conns[0].group(1) == a.addr and
           re.fullmatch(a.source, conns[0].group(2)) is not None,
           "pop3d[%s]: connection from %s (%s), want %s (%s)" % (
               pid, conns[0].group(1), conns[0].group(2), a.addr, a.source))
    for pattern in a.log or []:
        expect(any(re.search(r"pop3d\[%s\]: .*%s" % (pid, pattern), line)
                   for line in lines), "pop3d[%s] logged no %r" % (
                       pid, pattern))
    with open(rhost) as f:
        seen = [line.split() for line in f if line.split()[1:2] == [a.user]]
    # An unknown peer is no PAM_RHOST at all: a name there would be
    # looked up in the DNS by libpam's audit code on every PAM call.
    want = [os.environ["IT_SERVICE"], a.user] + (
        [] if a.addr == "unknown" else [a.addr])
    expect(seen == [want], "PAM_RHOST records for %s: %r, want %r" % (
        a.user, seen, [want]))


# --- Misc -----------------------------------------------------------------

def cmd_curlcheck(a):
    """curl's output for pop3://host/N is the message as sent, CRLF."""
    st = load_state(a.user)
    m = st["msgs"][a.num - 1]
    with open(a.file, "rb") as f:
        got = f.read()
    want = wire(m["text"])
    expect(got == want, "curl output differs: %s" % first_difference(
        got, want))


def cmd_curllist(a):
    st = load_state(a.user)
    with open(a.file, "rb") as f:
        got = f.read()
    want = b"".join(b"%d %d\r\n" % (i, len(wire(m["text"])))
                    for i, m in enumerate(st["msgs"], 1))
    expect(got == want, "curl listing %r, want %r" % (got, want))


def cmd_syslogd(a):
    """A syslog catcher on a datagram socket: one line per message."""
    try:
        os.unlink(a.socket)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(a.socket)
    os.chmod(a.socket, 0o666)
    with open(a.log, "ab", buffering=0) as out:
        while True:
            data = s.recv(65536)
            out.write(data.rstrip(b"\0\n").replace(b"\n", b" ") + b"\n")


def cmd_freeport(a):
    s = socket.socket()
    s.bind((a.host, 0))
    print(s.getsockname()[1])
    s.close()


def cmd_demo_fetch(a):
    """The demo's account through poplib: a few messages, every one RETR'd."""
    p = POP3(a.host, a.port)
    try:
        p.user(a.user)
        expect(p.pass_(a.password).startswith(b"+OK"), "login")
        count, _ = p.stat()
        expect(count >= 3, "demo maildrop has %d messages" % count)
        for i in range(1, count + 1):
            p.retr(i)
        p.quit()
    except (poplib.error_proto, OSError) as e:
        raise Fail("%s: %s" % (type(e).__name__, e))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)

    def client(p):
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--ssl", action="store_true")
        p.add_argument("--cafile")
        p.add_argument("--source")

    p = sub.add_parser("mkspool")
    p.add_argument("user")
    p.add_argument("count", type=int)
    p.add_argument("--tag", default="a")
    p.add_argument("--path")
    p.add_argument("--append", action="store_true")
    p.add_argument("--big", type=int, default=0,
                   help="the middle message has about this many bytes")
    p.set_defaults(fn=cmd_mkspool)

    p = sub.add_parser("checkspool")
    p.add_argument("user")
    p.add_argument("--deleted", default="")
    p.set_defaults(fn=cmd_checkspool)

    p = sub.add_parser("session")
    client(p)
    p.add_argument("user")
    p.add_argument("--dele", default="")
    p.add_argument("--again", action="store_true")
    p.set_defaults(fn=cmd_session)

    p = sub.add_parser("login")
    client(p)
    p.add_argument("user")
    p.set_defaults(fn=cmd_login)

    p = sub.add_parser("refused")
    client(p)
    p.add_argument("user")
    p.set_defaults(fn=cmd_refused)

    p = sub.add_parser("load")
    client(p)
    p.add_argument("users")
    p.add_argument("--deadline", type=int, default=90)
    p.set_defaults(fn=cmd_load)

    p = sub.add_parser("fdleak")
    client(p)
    p.add_argument("user")
    p.add_argument("--fe-pid", type=int, required=True)
    p.add_argument("--marker", required=True)
    p.set_defaults(fn=cmd_fdleak)

    p = sub.add_parser("idle")
    client(p)
    p.add_argument("user")
    p.add_argument("--timeout", type=int, required=True)
    p.set_defaults(fn=cmd_idle)

    p = sub.add_parser("inuse")
    client(p)
    p.add_argument("user")
    p.set_defaults(fn=cmd_inuse)

    p = sub.add_parser("mdacheck")
    p.add_argument("user")
    p.add_argument("dir")
    p.add_argument("--msgs", required=True)
    p.set_defaults(fn=cmd_mdacheck)

    p = sub.add_parser("curlcheck")
    p.add_argument("user")
    p.add_argument("num", type=int)
    p.add_argument("file")
    p.set_defaults(fn=cmd_curlcheck)

    p = sub.add_parser("curllist")
    p.add_argument("user")
    p.add_argument("file")
    p.set_defaults(fn=cmd_curllist)

    p = sub.add_parser("peercheck")
    p.add_argument("user")
    p.add_argument("addr")
    p.add_argument("source", help="regular expression")
    p.add_argument("--log", action="append",
                   help="another line of that process (regex)")
    p.set_defaults(fn=cmd_peercheck)

    p = sub.add_parser("syslogd")
    p.add_argument("socket")
    p.add_argument("log")
    p.set_defaults(fn=cmd_syslogd)

    p = sub.add_parser("freeport")
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(fn=cmd_freeport)

    p = sub.add_parser("demo-fetch")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.set_defaults(fn=cmd_demo_fetch)

    a = ap.parse_args()
    try:
        a.fn(a)
    except Fail as e:
        print(e)
        sys.exit(1)


if __name__ == "__main__":
    main()
