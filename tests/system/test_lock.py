#!/usr/bin/python3
"""Issue 4, locking, as root with a real account: [IN-USE] against each
lock another program may hold (dot-lock, fcntl, flock, another
session); every lock released after QUIT, EOF, SIGTERM; after SIGKILL the
kernel locks are gone and the dot-lock is broken as liblockfile does; an
MDA delivering during a session (procmail, and a dotlockfile-guarded
append that holds the spool open while it waits) waits, and its message
is intact afterwards next to the commit's result."""

import contextlib
import fcntl
import grp
import os
import pwd
import shutil
import signal
import subprocess
import time

from pop3sys import (HERE, PASSWORD, PYTHON, U_LOCK, WORK, Server,
                     attach_strace, check,
                     info, lock_path, login_session, main, make_message,
                     parse_mbox, proc_ids, read_spool, run, spawn,
                     spool_path, test, uid_of, wait_for,
                     write_spool)

USER = U_LOCK
MSGS = [make_message(i, body_lines=4 + i) for i in range(1, 6)]
ORIG = b"".join(MSGS)
NEW = make_message(99, body_lines=9, tag="delivered")
# pop3d waits LOCK_WAIT_MS (2 s) for a lock; anything past this is a hang.
INUSE_BOUND = 8.0


def fresh():
    for p in (lock_path(USER),):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    write_spool(USER, ORIG)


def lock_state():
    """Which of the spool's kernel locks are held by someone: a dict."""
    held = {}
    fd = os.open(spool_path(USER), os.O_RDWR)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_UN)
            held["fcntl"] = False
        except OSError:
            held["fcntl"] = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            held["flock"] = False
        except OSError:
            held["flock"] = True
    finally:
        os.close(fd)
    return held


def check_released(what):
    st = lock_state()
    check(not st["fcntl"], "%s: fcntl lock still held" % what)
    check(not st["flock"], "%s: flock lock still held" % what)
    check(not os.path.exists(lock_path(USER)),
          "%s: dot-lock %s left behind (content %r)" %
          (what, lock_path(USER), read_lock()))


def check_root_again(pid, when):
    """The monitor is root with the ids and groups it was started with
    (ours): no user or mail id left behind by the helper's rights."""
    uids, gids, groups, _ = proc_ids(pid)
    check(uids == [0, 0, 0, 0] and gids == [os.getgid()] * 4 and
          sorted(groups) == sorted(os.getgroups()),
          "monitor %s: uids %s gids %s groups %s (ours: gid %d groups %s)"
          % (when, uids, gids, groups, os.getgid(), os.getgroups()))


def read_lock():
    try:
        with open(lock_path(USER), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def expect_inuse(what):
    s = Server()
    t0 = time.monotonic()
    r = s.c.login(USER)
    dt = time.monotonic() - t0
    check(r.startswith("-ERR [IN-USE]"), "%s: PASS got %r" % (what, r))
    check(dt <= INUSE_BOUND, "%s: [IN-USE] after %.1f s" % (what, dt))
    check(s.c.eof(5), "%s: session not closed after [IN-USE]" % what)
    check(s.wait() is not None, "%s: pop3d did not exit" % what)
    info("%s: %s after %.2f s" % (what, r, dt))
    check(read_spool(USER) == ORIG, "%s: spool changed" % what)


def as_user(argv):
    return ["runuser", "-u", USER, "--"] + argv


@test
def test_inuse_dotlock_without_pid():
    fresh()
    run(["dotlockfile", "-l", "-r", "0", lock_path(USER)])
    before = read_lock()
    try:
        expect_inuse("dotlockfile -l")
        check(read_lock() == before,
              "the other holder's dot-lock was removed or changed")
    finally:
        run(["dotlockfile", "-u", lock_path(USER)])
    s, _ = login_session(USER)      # and once it is gone, it works
    check(s.c.cmd("QUIT").startswith("+OK"), "QUIT")


@test
def test_inuse_dotlock_live_pid():
    fresh()
    # -p writes our pid (dotlockfile's parent): a live holder.
    run(["dotlockfile", "-p", "-l", "-r", "0", lock_path(USER)])
    try:
        expect_inuse("dotlockfile -p (live pid)")
        check(read_lock() is not None, "the live holder's dot-lock removed")
    finally:
        run(["dotlockfile", "-u", lock_path(USER)])


@contextlib.contextmanager
def spool_held(lock):
    """The spool locked by this process (as another program would) with
    lock, fcntl.lockf or fcntl.flock, until the block ends."""
    fd = os.open(spool_path(USER), os.O_RDWR)
    try:
        lock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@test
def test_inuse_fcntl():
    fresh()
    with spool_held(fcntl.lockf):
        expect_inuse("fcntl lock held")
        check(read_lock() is None, "dot-lock left after [IN-USE]")
    check(not lock_state()["flock"], "flock left after [IN-USE]")


@test
def test_inuse_flock():
    fresh()
    with spool_held(fcntl.flock):
        expect_inuse("flock lock held")
        check(read_lock() is None, "dot-lock left after [IN-USE]")
        check(not lock_state()["fcntl"], "fcntl lock left after [IN-USE]")


@test
def test_inuse_second_session_keeps_first():
    fresh()
    a, r = login_session(USER)
    lock = read_lock()
    check(lock is not None, "no dot-lock while a session holds the spool")
    expect_inuse("second session")
    check(read_lock() == lock, "the failed session removed the first "
          "session's dot-lock")
    st = lock_state()
    check(st["fcntl"] and st["flock"], "first session lost its locks: %s"
          % st)
    check(a.c.cmd("STAT").startswith("+OK 5 "), "first session STAT")
    check(a.c.cmd("QUIT").startswith("+OK"), "first session QUIT")
    check(a.wait() is not None, "first session did not exit")
    check_released("after QUIT")


@test
def test_monitor_without_the_helpers_rights_lets_the_session_lock():
    """spool_lock_take() when the monitor cannot act as the user: its
    seteuid() to the user fails (injected by strace in the monitor
    alone, after setgroups() and setegid() to mail have worked).  It says
    so, is root again with its own gid and groups, and the session locks
    the spool by itself: the client sees no difference."""
    fresh()
    s = Server()
    check(s.c.cmd("USER " + USER).startswith("+OK"), "USER")
    log = os.path.join(WORK, "strace-helper.log")
    # Not -f: only the monitor's own calls; its first setresuid() after
    # USER is helper_rights()' seteuid() (glibc's seteuid is setresuid).
    st = attach_strace(s.pid, log, ["-e", "trace=setgroups,setresuid,"
                                    "setresgid", "-e",
                                    "inject=setresuid:error=EPERM:when=1"])
    r = s.c.cmd("PASS " + PASSWORD)
    check(r.startswith("+OK"), "PASS: %r" % r)
    sp = s.session_pid(USER)
    with open(log, encoding="latin-1") as f:
        check("(INJECTED)" in f.read(), "no seteuid() failed in the "
              "monitor")
    check("cannot lock as the user" in s.log_text(),
          "the monitor did not say it could not lock: %r" %
          s.log_text()[-300:])
    check_root_again(s.pid, "after the failed take")
    held = lock_state()
    check(held["fcntl"] and held["flock"], "kernel locks during the "
          "session: %s" % held)
    lock = read_lock()
    check(lock is not None and lock.strip() == b"%d" % sp,
          "dot-lock %r, not the session's own (pid %d)" % (lock, sp))
    check(s.c.cmd("DELE 2").startswith("+OK"), "DELE 2")
    check(s.c.cmd("QUIT").startswith("+OK"), "QUIT")
    check(s.wait() is not None, "pop3d did not exit after QUIT")
    st.wait(timeout=10)
    st.stderr.close()
    check_released("after QUIT")
    check(read_spool(USER) == b"".join(MSGS[:1] + MSGS[2:]),
          "QUIT did not remove exactly message 2")


@test
def test_failed_fork_of_the_session_releases_the_locks():
    """The monitor holds the three locks when it forks the session; if
    the fork fails (injected in the monitor alone), the client gets
    -ERR [SYS/TEMP] and every lock goes with the monitor."""
    fresh()
    s = Server()
    check(s.c.cmd("USER " + USER).startswith("+OK"), "USER")
    log = os.path.join(WORK, "strace-fork.log")
    st = attach_strace(s.pid, log, ["-e", "trace=clone,clone3", "-e",
                                    "inject=clone,clone3:error=EAGAIN:"
                                    "when=1"])
    r = s.c.cmd_or_eof("PASS " + PASSWORD)
    check(s.wait() is not None, "pop3d did not exit after the failed fork")
    st.wait(timeout=10)
    st.stderr.close()
    with open(log, encoding="latin-1") as f:
        check("(INJECTED)" in f.read(), "no fork failed in the monitor")
    check(r is not None and r.startswith("-ERR [SYS/TEMP]"),
          "PASS after a failed fork: %r" % r)
    check_released("after the failed fork")
    check(read_spool(USER) == ORIG, "the spool changed")


@test
def test_locks_held_then_released_after_quit():
    fresh()
    s, _ = login_session(USER)
    sp = s.session_pid(USER)
    st = lock_state()
    check(st["fcntl"], "no fcntl lock during the session")
    check(st["flock"], "no flock lock during the session")
    lock = read_lock()
    check(lock is not None, "no dot-lock during the session")
    info("dot-lock content during the session: %r (session pid %d, "
         "monitor %d)" % (lock, sp, s.pid))
    # The root monitor takes it for the session (spool_lock_take()), with
    # dotlockfile's rights: the user's file, group mail, the monitor's
    # pid, which lives exactly as long as the session.
    check(lock.strip() == b"%d" % s.pid,
          "dot-lock holds %r, not the pid of the monitor (%d): an MDA "
          "cannot tell a dead holder" % (lock, s.pid))
    lst = os.stat(lock_path(USER))
    check((lst.st_uid, lst.st_gid) == (pwd.getpwnam(USER).pw_uid,
                                       grp.getgrnam("mail").gr_gid),
          "dot-lock owned by %d:%d, not by the user and group mail"
          % (lst.st_uid, lst.st_gid))
    # After taking it, the monitor is root again, with the ids and groups
    # it was started with (ours): no user or mail id left behind.
    check_root_again(s.pid, "after the dot-lock")
    before = os.stat(spool_path(USER))
    check(s.c.cmd("DELE 2").startswith("+OK"), "DELE 2")
    check(s.c.cmd("QUIT").startswith("+OK"), "QUIT")
    check(s.wait() is not None, "pop3d did not exit after QUIT")
    check_released("after QUIT")
    check(read_spool(USER) == b"".join(MSGS[:1] + MSGS[2:]),
          "QUIT did not remove exactly message 2")
    after = os.stat(spool_path(USER))
    check(after.st_ino == before.st_ino, "the commit replaced the spool's "
          "inode: an MDA blocked on the old one loses mail")
    check((after.st_uid, after.st_gid, after.st_mode) ==
          (before.st_uid, before.st_gid, before.st_mode),
          "owner, group or mode changed by the commit")


@test
def test_released_after_eof():
    fresh()
    s, _ = login_session(USER)
    check(s.c.cmd("DELE 1").startswith("+OK"), "DELE 1")
    s.c.close()
    check(s.wait() is not None, "pop3d did not exit on EOF")
    check_released("after EOF")
    check(read_spool(USER) == ORIG, "EOF without QUIT changed the spool")


@test
def test_released_after_timeout():
    fresh()
    s, _ = login_session(USER, args=["-t", "2"])
    check(s.c.cmd("DELE 1").startswith("+OK"), "DELE 1")
    t0 = time.monotonic()
    check(s.c.eof(8), "no autologout 8 s after a 2 s timeout")
    info("autologout after %.1f s" % (time.monotonic() - t0))
    check(s.c.buf == b"", "the autologout sent %r (RFC 1939 section 3: "
          "close without a response)" % s.c.buf)
    check(s.wait() is not None, "pop3d did not exit after the timeout")
    check_released("after the timeout")
    check(read_spool(USER) == ORIG, "the timeout entered UPDATE")


@test
def test_released_after_client_vanishes_mid_retr():
    big = make_message(50, body_lines=40000)      # about 4 MB
    write_spool(USER, MSGS[0] + big)
    try:
        os.unlink(lock_path(USER))
    except FileNotFoundError:
        pass
    s, _ = login_session(USER)
    check(s.c.cmd("DELE 1").startswith("+OK"), "DELE 1")
    s.c.send("RETR 2")
    s.c.sock.recv(1000)                 # the transfer has begun
    s.c.close()
    check(s.wait() is not None, "pop3d did not exit when the client "
          "vanished during RETR")
    check_released("after the client vanished")
    check(read_spool(USER) == MSGS[0] + big, "the spool changed")


def expect_refused(what, path_before):
    s = Server()
    r = s.c.login(USER)
    check(r.startswith("-ERR [SYS/PERM]"), "%s: PASS got %r" % (what, r))
    check(s.wait() is not None, "%s: pop3d did not exit" % what)
    check(not os.path.exists(lock_path(USER)), "%s: dot-lock left" % what)
    info("%s: %s" % (what, r))


@test
def test_spool_symlink_hardlink_foreign_owner_refused():
    target = os.path.join(WORK, "symlink-target")
    for p in (spool_path(USER), lock_path(USER)):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    try:
        with open(target, "wb") as f:
            f.write(ORIG)
        uid = pwd.getpwnam(USER).pw_uid
        os.chown(target, uid, grp.getgrnam("mail").gr_gid)
        os.symlink(target, spool_path(USER))
        expect_refused("spool is a symlink", target)
        with open(target, "rb") as f:
            check(f.read() == ORIG, "the symlink's target changed")
        os.unlink(spool_path(USER))
        os.link(target, spool_path(USER))
        expect_refused("spool has two links", target)
        os.unlink(spool_path(USER))
        write_spool(USER, ORIG)
        os.chown(spool_path(USER), 0, grp.getgrnam("mail").gr_gid)
        expect_refused("spool owned by root", target)
        check(read_spool(USER) == ORIG, "the root-owned spool changed")
    finally:
        for p in (spool_path(USER), target):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def signalled(target, sig):
    fresh()
    s, _ = login_session(USER)
    check(s.c.cmd("DELE 1").startswith("+OK"), "DELE 1")
    sp = s.session_pid(USER)
    os.kill(sp if target == "session" else s.pid, sig)
    check(s.wait() is not None, "pop3d did not exit after %s to the %s"
          % (signal.Signals(sig).name, target))
    check(read_spool(USER) == ORIG, "a killed session changed the spool")
    return s, sp


@test
def test_released_after_sigterm_session():
    signalled("session", signal.SIGTERM)
    check_released("after SIGTERM to the session process")


@test
def test_released_after_sigterm_parent():
    signalled("parent", signal.SIGTERM)
    check_released("after SIGTERM to the monitor (parent) process")


@test
def test_sigterm_while_the_monitor_waits_for_the_locks():
    # The monitor locks the spool before the session exists, waiting up to
    # 2 s for a lock held elsewhere (here fcntl), with the user's euid.  A
    # SIGTERM then must reach the session it forks next, not the pid of
    # the pre-login child it has reaped: the session ends at once, before
    # serving any command.
    fresh()
    with spool_held(fcntl.lockf):
        s = Server()
        check(s.c.cmd("USER " + USER).startswith("+OK"), "USER")
        s.c.send("PASS " + PASSWORD)
        waiting = wait_for(lambda: proc_ids(s.pid)[0][1] == uid_of(USER), 10)
        check(waiting, "the monitor never waited for the locks as the user")
        os.kill(s.pid, signal.SIGTERM)
        time.sleep(0.2)
    # Unlocked: the monitor gets the locks and forks.
    try:
        answer = s.c.line()
    except EOFError:
        answer = None
    r = s.c.cmd_or_eof("NOOP") if answer is not None else None
    info("after SIGTERM in the lock wait: PASS %r, then NOOP %r"
         % (answer, r))
    check(r is None, "the session served NOOP (%r) after the monitor got "
          "SIGTERM" % r)
    check(s.wait() is not None, "pop3d did not exit")
    check_released("after SIGTERM in the lock wait")
    check(read_spool(USER) == ORIG, "spool changed")


def session_gone(pid, timeout):
    """Whether pid has exited (its fds go then, zombie or not) in time."""
    return wait_for(lambda: not os.path.exists("/proc/%d/fd/0" % pid),
                    timeout)


@test
def test_dotlock_released_under_the_systemd_units_restrictions():
    """contrib/systemd/pop3d@.service: UMask=0077, and a root without
    CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH.  The dot-lock must still be
    readable by all (MDAs read its pid) and removed after QUIT; a lock
    the root parent could not read was left behind for good, blocking
    procmail until its LOCKTIMEOUT."""
    fresh()
    wrap = ["sh", "-c", 'umask 077 && exec setpriv --bounding-set='
            '-dac_override,-dac_read_search -- "$@"', "sh"]
    s = Server(wrap=wrap)
    check(s.c.login(USER).startswith("+OK"), "login under the restrictions")
    lst = os.stat(lock_path(USER))
    check(lst.st_mode & 0o777 == 0o644, "dot-lock mode %o under umask 077, "
          "not 644: no MDA can read its pid" % (lst.st_mode & 0o777))
    check(s.c.cmd("DELE 1").startswith("+OK"), "DELE 1")
    check(s.c.cmd("QUIT").startswith("+OK"), "QUIT")
    check(s.wait() is not None, "pop3d did not exit after QUIT")
    check_released("after QUIT without CAP_DAC_OVERRIDE")
    check(read_spool(USER) == b"".join(MSGS[1:]),
          "QUIT did not remove exactly message 1")


@test
def test_sigkill_session_locks_kept_then_removed_by_the_monitor():
    # The monitor took the three locks for the session: they outlive it
    # (a killed commit is rolled back before anyone who locks may look),
    # and the dot-lock holds the monitor's pid, not the session's, so
    # that it is not stale while the monitor (here stopped) lives.  Once
    # the monitor goes on, it removes them.
    fresh()
    s, _ = login_session(USER)
    check(s.c.cmd("DELE 1").startswith("+OK"), "DELE 1")
    sp = s.session_pid(USER)
    os.kill(s.pid, signal.SIGSTOP)
    try:
        os.kill(sp, signal.SIGKILL)
        check(session_gone(sp, 5), "session did not die")
        st = lock_state()
        check(st["fcntl"] and st["flock"], "kernel locks gone with the "
              "killed session, before the monitor rolled it back: %s" % st)
        lock = read_lock()
        info("dot-lock while the monitor is stopped: %r (monitor %d)"
             % (lock, s.pid))
        # Not the dead session's pid: an MDA must not take it as stale
        # while the monitor still has work to do.
        check(lock is not None and lock.strip() == b"%d" % s.pid,
              "dot-lock %r, not the monitor's pid %d" % (lock, s.pid))
    finally:
        os.kill(s.pid, signal.SIGCONT)
    check(s.wait() is not None, "pop3d did not exit")
    check_released("after the monitor went on")
    check(read_spool(USER) == ORIG, "a killed session changed the spool")


@test
def test_maildrop_in_a_users_own_directory_locked_by_the_session():
    # -m in a directory its user may change: the root monitor must not
    # work there with gid mail (the user could swap the directory for a
    # link to /var/mail in the middle); the session locks by itself.
    u = pwd.getpwnam(USER)
    d = os.path.join(WORK, "own-dir")
    shutil.rmtree(d, ignore_errors=True)
    os.mkdir(d, 0o755)
    os.chown(d, u.pw_uid, u.pw_gid)
    spool = os.path.join(d, USER)
    with open(spool, "wb") as f:
        f.write(ORIG)
    os.chown(spool, u.pw_uid, u.pw_gid)
    os.chmod(spool, 0o600)
    try:
        s, _ = login_session(USER, args=["-m", os.path.join(d, "%u")])
        sp = s.session_pid(USER)
        with open(spool + ".lock", "rb") as f:
            lock = f.read()
        gid = os.stat(spool + ".lock").st_gid
        info("dot-lock %r, group %d (session %d, monitor %d)"
             % (lock, gid, sp, s.pid))
        check(lock.strip() == b"%d" % sp and
              gid != grp.getgrnam("mail").gr_gid,
              "the monitor took a dot-lock in a directory its user owns")
        check(s.c.cmd("DELE 2").startswith("+OK"), "DELE 2")
        check(s.c.cmd("QUIT").startswith("+OK"), "QUIT")
        check(s.wait() is not None, "pop3d did not exit")
        check(not os.path.exists(spool + ".lock"), "dot-lock left")
        with open(spool, "rb") as f:
            check(f.read() == b"".join(MSGS[:1] + MSGS[2:]),
                  "QUIT did not remove exactly message 2")
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test
def test_maildrop_in_the_home_directory():
    # -m %h/...: the README's and the unit file's example of a maildrop
    # in the home directory; the template starts with %h, not "/".
    u = pwd.getpwnam(USER)
    home = os.path.join(WORK, "home-" + USER)
    shutil.rmtree(home, ignore_errors=True)
    os.mkdir(home, 0o755)
    os.chown(home, u.pw_uid, u.pw_gid)
    spool = os.path.join(home, "inbox")
    with open(spool, "wb") as f:
        f.write(ORIG)
    os.chown(spool, u.pw_uid, u.pw_gid)
    os.chmod(spool, 0o600)
    in_var_mail = read_spool(USER)
    run(["usermod", "-d", home, USER])
    try:
        s, _ = login_session(USER, args=["-m", "%h/inbox"])
        check(s.c.cmd("STAT").startswith("+OK %d " % len(MSGS)),
              "STAT of the maildrop in the home directory")
        check(s.c.cmd("DELE 1").startswith("+OK"), "DELE 1")
        check(s.c.cmd("QUIT").startswith("+OK"), "QUIT")
        check(s.wait() is not None, "pop3d did not exit")
        with open(spool, "rb") as f:
            check(f.read() == b"".join(MSGS[1:]),
                  "QUIT did not remove exactly message 1")
        check(not os.path.exists(spool + ".lock"), "dot-lock left")
        check(read_spool(USER) == in_var_mail,
              "the spool in /var/mail was touched")
    finally:
        run(["usermod", "-d", u.pw_dir, USER])
        shutil.rmtree(home, ignore_errors=True)


@test
def test_dotlock_taken_over_is_not_removed():
    # A program that breaks dot-locks by their age alone (postfix after
    # 500 s) may take the lock over while the session holds it; at the
    # end the monitor must not remove that program's lock.
    fresh()
    other = subprocess.Popen(["sleep", "30"])
    try:
        s, _ = login_session(USER)
        check(read_lock() is not None and
              read_lock().strip() == b"%d" % s.pid, "dot-lock not taken")
        with open(lock_path(USER), "wb") as f:
            f.write(b"%d\n" % other.pid)
        check(s.c.cmd("QUIT").startswith("+OK"), "QUIT")
        check(s.wait() is not None, "pop3d did not exit")
        check(read_lock() == b"%d\n" % other.pid,
              "the monitor removed a lock it no longer held: %r"
              % read_lock())
        check("taken over by another program" in s.log_text(),
              "not logged")
    finally:
        other.kill()
        other.wait()
        fresh()


@test
def test_maildrop_path_through_a_link_to_var_mail():
    # -m through a symbolic link to the spool directory (as
    # /var/spool/mail is on some systems): resolved, it is /var/mail,
    # and the monitor takes the dot-lock there as usual.
    link = os.path.join(WORK, "maillink")
    try:
        os.unlink(link)
    except FileNotFoundError:
        pass
    os.symlink(os.path.dirname(spool_path(USER)), link)
    fresh()
    try:
        s, _ = login_session(USER, args=["-m", os.path.join(link, "%u")])
        lock = read_lock()
        info("dot-lock through the link: %r (monitor %d)" % (lock, s.pid))
        check(lock is not None and lock.strip() == b"%d" % s.pid,
              "dot-lock %r not taken by the monitor (%d)" % (lock, s.pid))
        check(s.c.cmd("QUIT").startswith("+OK"), "QUIT")
        check(s.wait() is not None, "pop3d did not exit")
        check_released("after QUIT")
    finally:
        os.unlink(link)


@test
def test_session_ends_when_the_monitor_dies():
    # The dot-lock holds the monitor's pid: once the monitor is gone an
    # MDA may break it, so the session must not go on (SIGTERM from the
    # kernel, PR_SET_PDEATHSIG), and it ends without UPDATE.
    fresh()
    s, _ = login_session(USER)
    check(s.c.cmd("DELE 1").startswith("+OK"), "DELE 1")
    sp = s.session_pid(USER)
    os.kill(s.pid, signal.SIGKILL)
    s.wait()
    check(session_gone(sp, 5), "the session outlived its monitor by 5 s")
    st = lock_state()
    check(not st["fcntl"] and not st["flock"], "kernel locks held after "
          "the session ended: %s" % st)
    check(read_spool(USER) == ORIG, "the session entered UPDATE")


@test
def test_sigkill_session_next_login_works():
    signalled("session", signal.SIGKILL)
    t0 = time.monotonic()
    s, r = login_session(USER)
    info("login after SIGKILL: %s after %.2f s" % (r, time.monotonic() - t0))
    check(r.startswith("+OK maildrop has 5 "), "login after SIGKILL: %r" % r)
    check(s.c.cmd("QUIT").startswith("+OK"), "QUIT")
    check(s.wait() is not None, "pop3d did not exit")
    check_released("after the next session's QUIT")


@test
def test_stale_foreign_dotlock_broken():
    fresh()
    # The holder (sh) has exited: the lock names a dead pid.
    run(["sh", "-c", "dotlockfile -p -l -r 0 '%s'" % lock_path(USER)])
    check(read_lock() is not None, "setup: no stale lock")
    s, r = login_session(USER)
    check(s.c.cmd("QUIT").startswith("+OK"), "QUIT")
    check(s.wait() is not None, "pop3d did not exit")
    check_released("after QUIT")


def deliver_during_session(start_mda, name):
    """Session marks 1 and 3; the MDA starts and must wait; QUIT; the
    MDA finishes; the spool is the unmarked messages plus NEW."""
    fresh()
    s, _ = login_session(USER)
    for n in (1, 3):
        check(s.c.cmd("DELE %d" % n).startswith("+OK"), "DELE %d" % n)
    mda = start_mda()
    time.sleep(2.0)
    check(mda.poll() is None, "%s did not wait for the session's locks "
          "(exit %r)" % (name, mda.poll()))
    check(read_spool(USER) == ORIG, "%s wrote while the session held the "
          "locks" % name)
    t_quit = time.monotonic()
    r = s.c.cmd("QUIT")
    check(r.startswith("+OK"), "QUIT: %r" % r)
    check(s.wait() is not None, "pop3d did not exit")
    try:
        out, _ = mda.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("%s still waiting 20 s after QUIT" % name)
    info("%s finished %.2f s after QUIT, exit %d"
         % (name, time.monotonic() - t_quit, mda.returncode))
    check(mda.returncode == 0, "%s failed (%d): %s" % (name, mda.returncode,
                                                      out[-600:]))
    data = read_spool(USER)
    kept = b"".join([MSGS[1], MSGS[3], MSGS[4]])
    msgs = parse_mbox(data)
    check(msgs is not None, "spool is not a mbox after delivery")
    check(data.startswith(kept), "the unmarked messages are not intact, "
          "or the marked ones not gone (%d messages)" % len(msgs))
    tail = data[len(kept):]
    check(NEW.rstrip(b"\n") in tail,
          "%s's message is not intact in the spool: %r" % (name, tail[:200]))
    check(len(msgs) == 4, "%d messages after delivery, not 4" % len(msgs))
    s2, r = login_session(USER)
    check(r.startswith("+OK maildrop has 4 "), "next login: %r" % r)
    s2.c.cmd("QUIT")
    return out


@test
def test_mda_procmail_waits_and_delivers():
    # As an MTA runs it: root, "procmail -d USER"; procmail dot-locks
    # through its setgid mail, retrying every LOCKSLEEP (8 s), then takes
    # its kernel lock.  The user has no ~/.procmailrc: default delivery.
    d = os.path.join(WORK, "procmail")
    os.makedirs(d, exist_ok=True)
    msgf = os.path.join(d, "msg")
    with open(msgf, "wb") as f:
        f.write(NEW)

    def start():
        with open(msgf, "rb") as msg:
            return spawn(["procmail", "-d", USER], stdin=msg,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deliver_during_session(start, "procmail -d")


@test
def test_mda_dotlockfile_append_waits_and_delivers():
    d = os.path.join(WORK, "mda")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    script = os.path.join(d, "mda.py")
    shutil.copy(os.path.join(HERE, "mda.py"), script)
    os.chmod(script, 0o755)
    msgf = os.path.join(d, "msg")
    with open(msgf, "wb") as f:
        f.write(NEW)

    def start():
        return spawn(as_user([PYTHON, script, spool_path(USER), msgf]),
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = deliver_during_session(start, "dotlockfile-guarded MDA")
    info("MDA steps:\n" + out.decode("latin-1"))


@test
def test_unlocked_append_during_session_kept():
    fresh()
    s, _ = login_session(USER)
    check(s.c.cmd("DELE 2").startswith("+OK"), "DELE 2")
    with open(spool_path(USER), "ab") as f:     # a writer that ignores locks
        f.write(NEW)
    r = s.c.cmd("QUIT")
    check(r.startswith("+OK") or r.startswith("-ERR"), "QUIT: %r" % r)
    check(s.wait() is not None, "pop3d did not exit")
    data = read_spool(USER)
    want = b"".join(MSGS[:1] + MSGS[2:]) + NEW
    if r.startswith("-ERR"):
        want = ORIG + NEW
    check(data == want, "after QUIT (%s) the appended message or an "
          "unmarked one is not intact" % r)
    info("QUIT with mail appended behind the index: %s" % r)


if __name__ == "__main__":
    main()
