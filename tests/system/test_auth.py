#!/usr/bin/python3
"""Issue 3, as root with real accounts through pam_unix: logins, refused
accounts, the privileges of each process, failure timing, AUTH PLAIN,
root logins (through pam_wrapper, so that root's password is never
touched), and a login over TCP through systemd-socket-activate."""

import base64
import os
import pwd
import re
import shutil
import socket
import statistics
import time

from pop3sys import (CHROOT_DIR, JOURNAL_DIR, PASSWORD, POP3D, U_AUTH,
                     U_CHANGE, U_EXPIRED, U_LOCKED, U_MAILGRP, U_NOPASS,
                     WORK, Client, Server,
                     Skip, check, children, cmdline, info, login_session,
                     mail_gid, main, open_paths, proc_ids, read_spool,
                     remove_spool, run, spawn, test, uid_of, wait_for)

def plain(authzid, authcid, password):
    raw = ("%s\0%s\0%s" % (authzid, authcid, password)).encode()
    return base64.b64encode(raw).decode()


def quit_ok(s):
    r = s.c.cmd("QUIT")
    check(r.startswith("+OK"), "QUIT: %r" % r)
    check(s.wait() is not None, "pop3d did not exit after QUIT")


def refused(user, why):
    """Correct password, account refused by PAM: -ERR [AUTH]."""
    s = Server()
    t0 = time.monotonic()
    r = s.c.login(user)
    dt = time.monotonic() - t0
    check(r.startswith("-ERR [AUTH]"), "%s account: PASS got %r" % (why, r))
    check(read_spool(user) is None, "%s account: spool created" % why)
    check(not any(proc_ids(k)[0][0] == uid_of(user) for k in s.kids()),
          "%s account: a process runs as the user" % why)
    info("%s account refused after %.2f s: %s" % (why, dt, r))
    s.c.cmd("QUIT")


def controlled_login(user):
    """Positive control: the account and password work as they are."""
    remove_spool(user)
    s, r = login_session(user)
    quit_ok(s)


@test
def test_login_user_pass():
    remove_spool(U_AUTH)
    s = Server()
    r = s.c.cmd("USER " + U_AUTH)
    check(r.startswith("+OK"), "USER: %r" % r)
    r = s.c.cmd("PASS " + PASSWORD)     # the password holds a space
    check(r.startswith("+OK"), "PASS: %r" % r)
    r = s.c.cmd("STAT")
    check(r == "+OK 0 0", "STAT with no spool file: %r" % r)
    quit_ok(s)
    check(read_spool(U_AUTH) is None, "a missing spool was created")
    check(s.proc.returncode == 0, "exit status %r" % s.proc.returncode)


@test
def test_auth_plain_same_path():
    remove_spool(U_AUTH)
    # Initial response, empty authzid.
    s = Server()
    r = s.c.cmd("AUTH PLAIN " + plain("", U_AUTH, PASSWORD))
    check(r.startswith("+OK"), "AUTH PLAIN initial response: %r" % r)
    sp = s.session_pid(U_AUTH)
    uids, gids, _, _ = proc_ids(sp)
    check(uids == [uid_of(U_AUTH)] * 4, "AUTH PLAIN session uids %s" % uids)
    quit_ok(s)
    # Continuation, authzid equal to authcid.
    s = Server()
    r = s.c.cmd("AUTH PLAIN")
    check(r.startswith("+"), "AUTH PLAIN challenge: %r" % r)
    r = s.c.cmd(plain(U_AUTH, U_AUTH, PASSWORD))
    check(r.startswith("+OK"), "AUTH PLAIN continuation: %r" % r)
    quit_ok(s)
    # Wrong password: the same answer after the same delay as USER/PASS.
    s = Server()
    t0 = time.monotonic()
    r = s.c.cmd("AUTH PLAIN " + plain("", U_AUTH, PASSWORD + "x"))
    dt = time.monotonic() - t0
    check(r.startswith("-ERR [AUTH]"), "AUTH PLAIN bad password: %r" % r)
    check(1.8 <= dt <= 3.0, "AUTH PLAIN failure answered after %.2f s, "
          "not about 2 s" % dt)
    # Another user as authzid: refused, not a way to read another box,
    # and failed like a wrong password: same answer, delay and count.
    t0 = time.monotonic()
    r = s.c.cmd("AUTH PLAIN " + plain(U_EXPIRED, U_AUTH, PASSWORD))
    dt = time.monotonic() - t0
    check(r == "-ERR [AUTH] Authentication failed",
          "authzid of another user: %r" % r)
    check(1.8 <= dt <= 3.0, "authzid mismatch answered after %.2f s" % dt)
    check(not any(proc_ids(k)[0][0] in (uid_of(U_AUTH), uid_of(U_EXPIRED))
                  for k in s.kids()), "authzid mismatch started a session")
    # A password too long to be anyone's: the third failure ends it.
    check(s.c.cmd("AUTH PLAIN").startswith("+"), "AUTH PLAIN challenge")
    t0 = time.monotonic()
    r = s.c.cmd(plain("", U_AUTH, "x" * 300))
    dt = time.monotonic() - t0
    check(r == "-ERR [AUTH] Authentication failed; too many failures, "
          "closing", "third failure, a 300-octet password: %r" % r)
    check(1.8 <= dt <= 3.0, "long password answered after %.2f s" % dt)
    check(s.wait() is not None, "pop3d did not exit after 3 failures")


@test
def test_expired_account_refused():
    run(["usermod", "-e", "", U_EXPIRED])
    controlled_login(U_EXPIRED)
    run(["usermod", "-e", "1", U_EXPIRED])
    refused(U_EXPIRED, "expired (usermod -e 1)")


@test
def test_locked_account_refused():
    run(["passwd", "-u", U_LOCKED], check=False)
    controlled_login(U_LOCKED)
    run(["passwd", "-l", U_LOCKED])
    refused(U_LOCKED, "locked (passwd -l)")


@test
def test_password_change_required_refused():
    controlled_login(U_CHANGE)
    run(["chage", "-d", "0", U_CHANGE])     # PAM_NEW_AUTHTOK_REQD
    refused(U_CHANGE, "must change password (chage -d 0)")


@test
def test_preauth_child_unprivileged_and_chrooted():
    priv = pwd.getpwnam("pop3d")
    s = Server(debug=False)     # as deployed: no -d
    check(s.c.cmd("USER " + U_AUTH).startswith("+OK"), "USER")
    kid = s.child_titled("[auth]")
    check(cmdline(kid).startswith("pop3d: [auth]"),
          "pre-login title %r" % cmdline(kid))
    uids, gids, groups, st = proc_ids(kid)
    check(0 not in uids, "pre-login child has uid 0: %s" % uids)
    check(uids == [priv.pw_uid] * 4,
          "pre-login child uids %s, not pop3d's %d" % (uids, priv.pw_uid))
    check(0 not in gids and gids == [priv.pw_gid] * 4,
          "pre-login child gids %s" % gids)
    check(set(groups) <= {priv.pw_gid}, "pre-login child groups %s" % groups)
    check(int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0,
          "pre-login child capabilities %s/%s" % (st["CapEff"],
                                                  st["CapPrm"]))
    # Non-dumpable (PR_SET_DUMPABLE 0, or reset by the uid change): its
    # /proc/PID/mem belongs to root, so no other process running as
    # pop3d can ptrace it or read its memory for a password.
    check(os.stat("/proc/%d/mem" % kid).st_uid == 0, "the pre-login child "
          "is dumpable: another pop3d-uid process could read its memory")
    root = os.readlink("/proc/%d/root" % kid)
    check(root == CHROOT_DIR, "pre-login child root %r, not %r" %
          (root, CHROOT_DIR))
    cwd = os.readlink("/proc/%d/cwd" % kid)
    check(cwd == CHROOT_DIR, "pre-login child cwd %r" % cwd)
    check(os.listdir(CHROOT_DIR) == [], "chroot %s is not empty: %s" %
          (CHROOT_DIR, os.listdir(CHROOT_DIR)))
    # Before login no file of any user is open, in either process.
    for pid in (s.pid, kid):
        bad = [p for p in open_paths(pid)
               if p.startswith(("/var/mail", JOURNAL_DIR, "/etc/shadow"))]
        check(not bad, "before login pid %d has open: %s" % (pid, bad))
    check(proc_ids(s.pid)[0][0] == 0, "the parent is not root before login")
    s.c.cmd("QUIT")
    check(s.wait() is not None, "QUIT in AUTHORIZATION did not end it")


@test
def test_session_privileges_no_mail_gid():
    pw = pwd.getpwnam(U_AUTH)
    mail = mail_gid()
    check(mail in os.getgrouplist(U_AUTH, pw.pw_gid),
          "setup: %s should be a supplementary member of mail" % U_AUTH)
    remove_spool(U_AUTH)
    s, _ = login_session(U_AUTH, debug=False)
    check(s.c.cmd("NOOP").startswith("+OK"), "NOOP in TRANSACTION")
    sp = s.session_pid(U_AUTH)
    uids, gids, groups, st = proc_ids(sp)
    check(uids == [pw.pw_uid] * 4, "session uids %s" % uids)
    check(gids == [pw.pw_gid] * 4, "session gids %s" % gids)
    check(mail not in gids and mail not in groups,
          "session has gid mail: gids %s groups %s" % (gids, groups))
    check(set(groups) <= {pw.pw_gid}, "session groups %s" % groups)
    check(int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0,
          "session capabilities %s/%s" % (st["CapEff"], st["CapPrm"]))
    title = cmdline(sp)
    check("%s [transaction]" % U_AUTH in title, "session title %r" % title)
    ptitle = cmdline(s.pid)
    check("%s [monitor]" % U_AUTH in ptitle, "parent title %r" % ptitle)
    check(not [k for k in s.kids() if "[auth]" in cmdline(k)],
          "the pre-login child outlived the login")
    quit_ok(s)


@test
def test_primary_group_mail_never_kept():
    remove_spool(U_MAILGRP)
    s = Server()
    r = s.c.login(U_MAILGRP)
    if r.startswith("+OK"):
        sp = s.session_pid(U_MAILGRP)
        uids, gids, groups, _ = proc_ids(sp)
        check(mail_gid() not in gids + groups, "session of a user whose "
              "primary group is mail runs with gid mail: %s %s"
              % (gids, groups))
        quit_ok(s)
    else:
        check(r.startswith("-ERR"), "PASS: %r" % r)
        info("primary group mail: refused: %s" % r)
        s.c.cmd_or_eof("QUIT")
    check(read_spool(U_MAILGRP) is None, "spool created")


@test
def test_empty_password_refused():
    # common-auth has "pam_unix.so nullok": for an account with an empty
    # password pam_unix then succeeds without asking for one, whatever
    # the client sends, unless pop3d passes PAM_DISALLOW_NULL_AUTHTOK.
    for attempt in ("PASS", "PASS ", "PASS anything", "PASS " + PASSWORD):
        s = Server()
        r = s.c.cmd("USER " + U_NOPASS)
        check(r.startswith("+OK"), "USER: %r" % r)
        r = s.c.cmd_or_eof(attempt)
        check(r is None or r.startswith("-ERR"), "%r for an account with "
              "an empty password: %r" % (attempt, r))
        info("%r with an empty password: %r" % (attempt, r))
        check(not any(uid_procs(s, uid_of(U_NOPASS))), "a session runs")
        s.stop()
    s = Server()
    r = s.c.cmd_or_eof("AUTH PLAIN " + plain("", U_NOPASS, ""))
    check(r is None or r.startswith("-ERR"), "AUTH PLAIN with an empty "
          "password: %r" % r)
    info("AUTH PLAIN with an empty password: %r" % r)
    check(not any(uid_procs(s, uid_of(U_NOPASS))), "a session runs")
    s.stop()


def uid_procs(s, uid):
    out = []
    for k in s.kids():
        try:
            if proc_ids(k)[0][0] == uid:
                out.append(k)
        except OSError:
            pass
    return out


@test
def test_timeout_before_login_is_the_session_timeout():
    """RFC 1939 section 3: the autologout timer is at least 10 minutes in
    every state.  A client may connect, then ask its user for the
    password: the pre-login child waits as long as -t says (the default
    600 s), seen in its poll() under strace, not a shorter bound."""
    for args, want in (((), 600000), (("-t", "700"), 700000)):
        log = os.path.join(WORK, "strace.timeout.log")
        s = Server(args=args, wrap=["strace", "-f", "-o", log, "-e",
                                    "trace=poll,ppoll"])
        r = s.c.cmd("CAPA")
        check(r.startswith("+OK"), "CAPA: %r" % r)
        s.c.cmd("QUIT")
        s.stop()
        with open(log) as f:
            waits = [int(m) for m in re.findall(
                r"poll\(\[\{fd=0, events=POLLIN\}\], 1, (\d+)\)", f.read())]
        info("pop3d %s: the pre-login child polls fd 0 with %s ms" %
             (" ".join(args) or "(no -t)", sorted(set(waits))))
        check(waits and all(w > want - 2000 and w <= want for w in waits),
              "pre-login waits %s ms, want about %d" % (waits, want))


@test
def test_pipelined_input_survives_login_handoff():
    remove_spool(U_AUTH)
    s = Server()
    noops = 600                         # over the 4 KB input buffer
    s.c.send(("USER %s\r\nPASS %s\r\n" % (U_AUTH, PASSWORD) +
              "NOOP\r\n" * noops + "STAT\r\nQUIT\r\n").encode())
    r = s.c.line()
    check(r.startswith("+OK"), "USER: %r" % r)
    r = s.c.line()
    check(r.startswith("+OK"), "PASS: %r" % r)
    for i in range(noops):
        r = s.c.line()
        check(r.startswith("+OK"), "pipelined NOOP %d: %r" % (i + 1, r))
    check(s.c.line() == "+OK 0 0", "pipelined STAT")
    check(s.c.line().startswith("+OK"), "pipelined QUIT")
    check(s.c.eof(5), "not closed after QUIT")


@test
def test_pipelined_after_failed_login():
    remove_spool(U_AUTH)
    s = Server()
    s.c.send(("USER %s\r\nPASS wrong\r\nUSER %s\r\nPASS %s\r\n"
              "STAT\r\nQUIT\r\n" % (U_AUTH, U_AUTH, PASSWORD)).encode())
    replies = [s.c.line() for _ in range(6)]
    check([r[:4] for r in replies] == ["+OK ", "-ERR", "+OK ", "+OK ",
                                       "+OK ", "+OK "]
          or [r[:3] for r in replies] == ["+OK", "-ER", "+OK", "+OK",
                                          "+OK", "+OK"],
          "replies %s" % replies)
    check(replies[4] == "+OK 0 0", "STAT: %r" % replies[4])


def failure_time(c, user, password):
    """Seconds from PASS to its -ERR; the reply."""
    r = c.cmd("USER " + user)
    check(r.startswith("+OK"), "USER %s: %r (must not tell)" % (user, r))
    t0 = time.monotonic()
    r = c.cmd("PASS " + password)
    return time.monotonic() - t0, r


@test
def test_unknown_user_and_bad_password_same_time():
    unknown, bad, replies = [], [], set()
    for order in (("u", "b"), ("b", "u"), ("u", "b")):
        s = Server()
        for kind in order:
            if kind == "u":
                dt, r = failure_time(s.c, "p3sysnosuchuser", PASSWORD)
                unknown.append(dt)
            else:
                dt, r = failure_time(s.c, U_AUTH, PASSWORD + "x")
                bad.append(dt)
            replies.add(r)
        s.c.cmd("QUIT")
        s.stop()
    info("unknown user: %s s" % ", ".join("%.3f" % t for t in unknown))
    info("bad password: %s s" % ", ".join("%.3f" % t for t in bad))
    check(len(replies) == 1, "different replies: %s" % replies)
    r = replies.pop()
    check(r.startswith("-ERR [AUTH]"), "failure reply %r" % r)
    mu, mb = statistics.mean(unknown), statistics.mean(bad)
    check(abs(mu - mb) <= 0.10 * max(mu, mb),
          "mean %.3f s (unknown) vs %.3f s (bad password): over 10 %%"
          % (mu, mb))
    check(min(unknown + bad) >= 1.5, "a failure answered after %.3f s"
          % min(unknown + bad))


@test
def test_three_failures_close_session():
    s = Server()
    _, r = failure_time(s.c, "p3sysnosuchuser", "x")
    check(r.startswith("-ERR [AUTH]"), "1st failure: %r" % r)
    _, r = failure_time(s.c, U_AUTH, "wrong")
    check(r.startswith("-ERR [AUTH]"), "2nd failure: %r" % r)
    r = s.c.cmd("AUTH PLAIN " + plain("", U_AUTH, "wrong"))
    check(r.startswith("-ERR [AUTH]"), "3rd failure (AUTH PLAIN): %r" % r)
    check(s.c.eof(5), "session still open after three failed logins")
    check(s.wait() is not None, "pop3d did not exit")


# pam_wrapper + pam_matrix for a uid-0 login: root's real password is
# never needed nor touched; the spool is a temp directory (-m).
PAM_WRAPPER = "/usr/lib/x86_64-linux-gnu/libpam_wrapper.so"
PAM_MATRIX = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so"


def root_env():
    for p in (PAM_WRAPPER, PAM_MATRIX):
        if not os.path.exists(p):
            raise Skip("%s missing (package libpam-wrapper)" % p)
    d = os.path.join(WORK, "pamroot")
    os.makedirs(os.path.join(d, "services"), exist_ok=True)
    os.makedirs(os.path.join(d, "spool"), exist_ok=True)
    with open(os.path.join(d, "services", "pop3"), "w") as f:
        for kind in ("auth", "account", "session"):
            f.write("%s required %s\n" % (kind, PAM_MATRIX))
    with open(os.path.join(d, "passdb"), "w") as f:
        f.write("root:%s:pop3\n" % PASSWORD.replace(" ", "_"))
    return d, {"LD_PRELOAD": PAM_WRAPPER, "PAM_WRAPPER": "1",
               "PAM_WRAPPER_SERVICE_DIR": os.path.join(d, "services"),
               "PAM_MATRIX_PASSWD": os.path.join(d, "passdb")}


@test
def test_root_login_refused_unless_r():
    d, env = root_env()
    pw = PASSWORD.replace(" ", "_")
    journal = os.path.join(JOURNAL_DIR, "root")
    if not os.path.exists(journal):
        open(os.path.join(WORK, "root-journal-created"), "w").close()
    spool = os.path.join(d, "spool", "%u")
    s = Server(["-m", spool], env=env)
    r = s.c.login("root", pw)
    check(r.startswith("-ERR [AUTH]"), "root without -r: %r" % r)
    check(not [k for k in s.kids() if proc_ids(k)[0][0] == 0 and
               "[auth]" not in cmdline(k)], "a root session was started")
    s.c.cmd("QUIT")
    s.stop()
    # The same credentials with -r: the refusal above was the policy.
    s = Server(["-r", "-m", spool], env=env)
    r = s.c.login("root", pw)
    check(r.startswith("+OK"), "root with -r: %r (pam_wrapper stack "
          "broken? log: %s)" % (r, s.log_text()[-500:]))
    quit_ok(s)
    # Through real pam_unix, a wrong root password is just a failure.
    s = Server()
    r = s.c.login("root", "p3sys-not-the-root-password")
    check(r.startswith("-ERR [AUTH]"), "root, wrong password: %r" % r)
    s.c.cmd("QUIT")


@test
def test_login_over_tcp_socket_activate():
    ssa = shutil.which("systemd-socket-activate")
    if not ssa:
        raise Skip("systemd-socket-activate missing (package systemd)")
    remove_spool(U_AUTH)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    log = open(os.path.join(WORK, "ssa.log"), "wb")
    p = spawn([ssa, "--inetd", "-a", "-l", "127.0.0.1:%d" % port,
               POP3D, "-d"], stdout=log, stderr=log)
    log.close()

    def connect():
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            return None
    sock = wait_for(connect, 5, 0.05)
    check(sock, "systemd-socket-activate did not listen on %d" % port)
    c = Client(sock)
    check(c.line().startswith("+OK"), "greeting over TCP")
    r = c.login(U_AUTH)
    check(r.startswith("+OK"), "login over TCP: %r" % r)
    kids = [k for k in children(p.pid)]
    check(kids, "no pop3d under systemd-socket-activate")
    check(c.cmd("STAT") == "+OK 0 0", "STAT over TCP")
    check(c.cmd("QUIT").startswith("+OK"), "QUIT over TCP")
    check(c.eof(5), "connection not closed after QUIT")
    c.close()


@test
def test_pam_session_unless_S():
    """pop3d opens a PAM session after the login and closes it when the
    session ends; -S only authenticates, as popa3d and Dovecot's default
    do.  A session module (pam_exec) records each call."""
    svc = "p3sys-session"
    pamfile = "/etc/pam.d/" + svc
    hook = os.path.join(WORK, "session-hook")
    trace = os.path.join(WORK, "session-trace")
    check(not os.path.exists(pamfile), "%s exists already" % pamfile)
    with open(hook, "w") as f:
        f.write('#!/bin/sh\necho "$PAM_TYPE $PAM_USER" >> %s\n' % trace)
    os.chmod(hook, 0o755)
    try:
        with open(pamfile, "w") as f:
            f.write("# Written by pop3d's system tests; removed at once.\n"
                    "@include common-auth\n@include common-account\n"
                    "session required pam_exec.so quiet %s\n" % hook)
        for args, want in ((["-p", svc], "open_session %s\n"
                            "close_session %s\n" % (U_AUTH, U_AUTH)),
                           (["-S", "-p", svc], "")):
            if os.path.exists(trace):
                os.unlink(trace)
            remove_spool(U_AUTH)
            s, r = login_session(U_AUTH, args)
            quit_ok(s)
            got = ""
            if os.path.exists(trace):
                with open(trace) as f:
                    got = f.read()
            check(got == want, "pop3d %s: PAM session calls %r, want %r" %
                  (" ".join(args), got, want))
    finally:
        os.unlink(pamfile)


@test
def test_password_never_logged():
    # Last: every pop3d log of this file (stderr under -d) is scanned.
    logs = [f for f in os.listdir(WORK) if f.startswith("pop3d.")]
    check(logs, "no logs to scan")
    for name in logs:
        with open(os.path.join(WORK, name), "rb") as f:
            text = f.read()
        for secret in (PASSWORD, PASSWORD.replace(" ", "_"), "anything"):
            check(secret.encode() not in text, "a password is in the log "
                  "%s" % name)
    info("%d logs scanned" % len(logs))



@test
def test_command_line_errors_stay_off_the_client():
    """Under inetd and xinetd fd 2 is the client's socket too: a mistake
    in the command line is for the admin (syslog, or a stderr that is
    not the socket), never a line sent to the client."""
    for args, want in ((["-t", "0"], b"timeout 0: too small"),
                       (["-x"], b"unknown option -x"),
                       (["-c", "extra"], b"unexpected argument extra"),
                       (["-m"], b"option -m needs a value"),
                       (["-m", "rel/%u"], b"maildrop template rel/%u"),
                       (["-m", "%hinbox"], b"start with %h/")):
        r = run([POP3D] + args, check=False)
        check(r.returncode == 1 and want in r.stdout,
              "pop3d %s: exit %d, %r" % (" ".join(args), r.returncode,
                                         r.stdout))
        ours, theirs = socket.socketpair()
        p = spawn([POP3D] + args, stdin=theirs, stdout=theirs,
                  stderr=theirs)
        theirs.close()
        ours.settimeout(5)
        got = ours.recv(4096)
        ours.close()
        check(p.wait(timeout=5) == 1, "pop3d %s on a socket: exit %r"
              % (" ".join(args), p.returncode))
        check(got == b"", "pop3d %s sent the client %r" % (" ".join(args),
                                                          got))

if __name__ == "__main__":
    main()
