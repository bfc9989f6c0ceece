/*
 * pop3d: serve one POP3 session on fd 0/1 and exit.  Started as root by
 * inetd, xinetd, systemd (Accept=yes) or stunnel.
 *
 * Three processes, after popa3d:
 *  1. a child that has dropped root and is chrooted to an empty directory
 *     parses everything the client says before login, hands the
 *     credentials (and any pipelined input) to the parent and exits;
 *  2. the root parent runs PAM on them and nothing else.  On failure it
 *     forks a fresh child, which answers -ERR and reads on; on success
 *     it opens the PAM session and the commit journal, then forks
 *  3. the session process, which drops to the user for good, indexes
 *     the maildrop (and locks it, outside a trusted directory), and
 *     serves the transaction.  The parent has
 *     locked the maildrop for it before the fork (spool_lock_*()), and
 *     unlocks it and closes the PAM session when it ends.
 */
#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <lockfile.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "log.h"
#include "maildrop.h"
#include "params.h"
#include "session.h"

struct options {
	const char	*service;	/* -p */
	const char	*maildrop;	/* -m */
	const char	*privsep_user;	/* -u */
	int		 timeout;	/* -t */
	int		 debug;		/* -d */
	int		 allow_root;	/* -r */
	int		 require_tls;	/* -c */
	int		 secure;	/* -s */
	int		 recover;	/* -R */
	int		 no_session;	/* -S */
};

/*
 * What the pre-authentication child sends: fixed size, every length
 * checked by the parent, which trusts nothing else in it.
 */
struct creds_msg {
	uint32_t	hopeless;	/* fail it unasked; no pass, user if any */
	uint32_t	user_len;
	uint32_t	pass_len;
	uint32_t	pending_len;
	char		user[USER_MAX];
	char		pass[PASS_MAX];
	char		pending[INBUF_SIZE];
};

/* What every pre-authentication child is made from. */
struct prelogin {
	const struct session_config *conf;
	uid_t	uid;
	gid_t	gid;
	int	debug;
};

static pid_t	child_pid = -1;
static volatile sig_atomic_t pending_signal;	/* for the next child */

/*
 * A mistake in the command line: said to syslog, where the admin looks,
 * and on stderr unless that is the client's socket (inetd and xinetd
 * pass the connection as fd 2 too).  Then exit.
 */
static void __attribute__((noreturn, format(printf, 1, 2)))
config_error(const char *fmt, ...)
{
	struct stat	st;
	va_list		ap;
	char		msg[512];

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (fstat(STDERR_FILENO, &st) == 0 && !S_ISSOCK(st.st_mode))
		fprintf(stderr, "pop3d: %s\n", msg);
	openlog("pop3d", LOG_PID, LOG_MAIL);
	syslog(LOG_ERR, "%s", msg);
	exit(1);
}

#define USAGE	"usage: pop3d [-cdRrSsV] [-m maildrop] [-p service] " \
		"[-t timeout] [-u user]"

static void
on_signal(int sig)
{
	(void)sig;
	session_signalled = 1;
}

/*
 * The parent passes termination on to the process serving the client,
 * or, while there is none (PAM, the locks), to the next one.
 */
static void
forward_signal(int sig)
{
	if (child_pid > 0)
		kill(child_pid, sig);
	else
		pending_signal = sig;
}

/*
 * Held back across a fork until the child has its own handlers: until
 * then it has the parent's, and would take a signal passed on to it for
 * its own to pass on.
 */
static void
termination_signals(int how)
{
	sigset_t	set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGINT);
	sigprocmask(how, &set, NULL);
}

/* In the parent, after the fork. */
static void
child_started(pid_t pid)
{
	child_pid = pid;
	if (pending_signal != 0) {
		kill(pid, pending_signal);
		pending_signal = 0;
	}
	termination_signals(SIG_UNBLOCK);
}

static void
set_signals(void (*handler)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;	/* no SA_RESTART: poll() must wake */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
}

static int
write_full(int fd, const void *buf, size_t len)
{
	const char	*p = buf;
	ssize_t		 n;

	while (len > 0) {
		if ((n = write(fd, p, len)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Bytes read: len, or less at end of file; -1 on error. */
static ssize_t
read_full(int fd, void *buf, size_t len)
{
	char	*p = buf;
	size_t	 done = 0;
	ssize_t	 n;

	while (done < len) {
		n = read(fd, p + done, len - done);
		if (n == 0)
			break;
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* Point fds first..last at /dev/null: valid, and nobody on the other end. */
static void
to_dev_null(int first, int last)
{
	int	fd, i;

	if ((fd = open("/dev/null", O_RDWR)) == -1)
		return;
	for (i = first; i <= last; i++)
		(void)dup2(fd, i);
	if (fd > last)
		close(fd);
}

/*
 * Under inetd fds 0-2 are the client: stderr must not reach it.  The
 * replies go out in one write each, but the last piece of a long reply
 * must not wait for a delayed ACK under Nagle: TCP_NODELAY if fd 1 is
 * TCP (a pipe just says no).
 */
static void
setup_fds(int debug)
{
	int	fd, on = 1;

	if (!debug)
		to_dev_null(STDERR_FILENO, STDERR_FILENO);
	(void)setsockopt(STDOUT_FILENO, IPPROTO_TCP, TCP_NODELAY, &on,
	    sizeof(on));
	/* Non-blocking, so that every wait is a poll() with a timeout. */
	for (fd = STDIN_FILENO; fd <= STDOUT_FILENO; fd++)
		(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* OpenBSD order: groups, gid, uid; then prove root cannot come back. */
static void
drop_privileges(uid_t uid, gid_t gid)
{
	uid_t	ruid, euid, suid;
	gid_t	rgid, egid, sgid;

	if (setgroups(1, &gid) == -1)
		fatal("setgroups");
	if (setresgid(gid, gid, gid) == -1)
		fatal("setresgid");
	if (setresuid(uid, uid, uid) == -1)
		fatal("setresuid");
	if (getresuid(&ruid, &euid, &suid) == -1 ||
	    getresgid(&rgid, &egid, &sgid) == -1)
		fatal("getresuid");
	if (ruid != uid || euid != uid || suid != uid ||
	    rgid != gid || egid != gid || sgid != gid)
		fatalx("privileges were not dropped");
	if (uid != 0 && (setuid(0) != -1 || seteuid(0) != -1))
		fatalx("root could be regained");
}

/* The pre-authentication child's user: DEFAULT_PRIVSEP_USER or nobody. */
static struct passwd *
privsep_user(const char *name)
{
	struct passwd	*pw;

	if ((pw = getpwnam(name)) != NULL && pw->pw_uid != 0)
		return pw;
	log_warnx("privsep user %s missing; using %s", name,
	    FALLBACK_PRIVSEP_USER);
	if ((pw = getpwnam(FALLBACK_PRIVSEP_USER)) == NULL || pw->pw_uid == 0)
		fatalx("no unprivileged user for the pre-login child");
	return pw;
}

static void
make_dir(const char *path, mode_t mode)
{
	char	parent[PATH_MAX], *slash;

	if (mkdir(path, mode) == 0 || errno == EEXIST)
		return;
	if (errno == ENOENT && strlcpy(parent, path, sizeof(parent)) <
	    sizeof(parent) && (slash = strrchr(parent, '/')) != NULL &&
	    slash != parent) {
		*slash = '\0';
		make_dir(parent, 0755);
		if (mkdir(path, mode) == 0 || errno == EEXIST)
			return;
	}
	log_warn("mkdir %s", path);
}

/*
 * Hand the credentials and any pipelined input to the root parent; then
 * this child ends without a word: the parent answers a good login itself
 * and starts a new child after a bad one, so no pre-login process lives
 * while PAM hashes.
 */
static enum login_verdict
child_login(struct session *s, const char *user, const char *pass)
{
	struct creds_msg	 msg;
	const char		*pending;
	int			 fd = *(int *)s->login_ctx;

	/* Replies to earlier pipelined commands must precede the parent's. */
	if (outbuf_flush(&s->out) == -1)
		return LOGIN_SYSTEMP;	/* the client is gone: the loop ends */
	memset(&msg, 0, sizeof(msg));
	msg.pending_len = (uint32_t)inbuf_pending(&s->in, &pending);
	/* The parent still counts it and answers it after the delay. */
	msg.hopeless = pass == NULL || strlen(pass) > PASS_MAX;
	if (strlen(user) > USER_MAX)
		msg.hopeless = 1;	/* named in the log by no user */
	else
		msg.user_len = (uint32_t)strlen(user);
	memcpy(msg.user, user, msg.user_len);
	if (!msg.hopeless) {
		msg.pass_len = (uint32_t)strlen(pass);
		memcpy(msg.pass, pass, msg.pass_len);
	}
	memcpy(msg.pending, pending, msg.pending_len);
	(void)write_full(fd, &msg, sizeof(msg));
	explicit_bzero(&msg, sizeof(msg));
	return LOGIN_HANDOFF;
}

/*
 * The pre-login child.  The first one greets the client; a later one
 * starts with the verdict on the previous attempt and the input the
 * client had already sent after it.
 */
static void __attribute__((noreturn))
run_preauth_child(const struct prelogin *pl, int creds_fd,
    const struct creds_msg *resume, enum login_verdict verdict, int failures)
{
	/*
	 * Static, one per process: on the stack its 132 KB would be
	 * touched page by page at entry by -fstack-clash-protection.
	 */
	static struct session s;
	struct rlimit	zero = { 0, 0 };

	if (chroot(CHROOT_DIR) == -1 || chdir("/") == -1)
		fatal("chroot %s", CHROOT_DIR);
	drop_privileges(pl->uid, pl->gid);
	/*
	 * Nothing to fork or write here; say so to the kernel (files too,
	 * unless -d sends the log to a stderr that may be a file).
	 */
	(void)setrlimit(RLIMIT_NPROC, &zero);
	if (!pl->debug)
		(void)setrlimit(RLIMIT_FSIZE, &zero);
	setproctitle("[auth]");
	set_signals(on_signal);
	termination_signals(SIG_UNBLOCK);
	session_init(&s, STDIN_FILENO, STDOUT_FILENO, pl->conf);
	s.login = child_login;
	s.login_ctx = &creds_fd;
	if (resume == NULL)
		session_greet(&s);
	else {
		inbuf_preload(&s.in, resume->pending, resume->pending_len);
		s.auth_failures = failures;
		session_login_refused(&s, verdict);
	}
	session_run(&s);
	session_finish(&s);
	_exit(0);
}

/* Fork a pre-login child; returns the read end of its credentials pipe. */
static int
spawn_prelogin(const struct prelogin *pl, const struct creds_msg *resume,
    enum login_verdict verdict, int failures)
{
	int	fds[2];
	pid_t	pid;

	if (pipe2(fds, O_CLOEXEC) == -1)
		fatal("pipe");
	termination_signals(SIG_BLOCK);
	if ((pid = fork()) == -1)
		fatal("fork");
	if (pid == 0) {
		close(fds[0]);
		run_preauth_child(pl, fds[1], resume, verdict, failures);
	}
	child_started(pid);
	close(fds[1]);
	return fds[0];
}

/* A hostile message: every length checked, no byte trusted. */
static int
creds_valid(struct creds_msg *msg)
{
	if (msg->pending_len > INBUF_SIZE || msg->hopeless > 1)
		return 0;
	if (msg->hopeless && msg->pass_len != 0)
		return 0;
	if ((msg->user_len == 0 && !msg->hopeless) ||
	    msg->user_len > USER_MAX || msg->pass_len > PASS_MAX)
		return 0;
	if (memchr(msg->user, '\0', msg->user_len) != NULL ||
	    memchr(msg->pass, '\0', msg->pass_len) != NULL)
		return 0;
	return 1;
}

/* Answer a failed login AUTH_FAIL_DELAY_MS after the attempt began. */
static void
pad_failure(const struct timespec *start)
{
	struct timespec	now, left;
	int64_t		ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = AUTH_FAIL_DELAY_MS - ((int64_t)(now.tv_sec - start->tv_sec) *
	    1000 + (now.tv_nsec - start->tv_nsec) / 1000000);
	if (ms <= 0)
		return;
	left.tv_sec = ms / 1000;
	left.tv_nsec = (ms % 1000) * 1000000;
	while (nanosleep(&left, &left) == -1 && errno == EINTR)
		;
}

/*
 * The user name is a path component: refuse what could escape.  A home
 * directory that is not absolute (or empty) would make a relative path.
 */
static int
expand_maildrop(const char *tmpl, const struct passwd *pw, char *buf,
    size_t len)
{
	const char	*p, *add;
	char		 one[2] = { 0, 0 };

	if (strchr(pw->pw_name, '/') != NULL || pw->pw_name[0] == '.')
		return -1;
	buf[0] = '\0';
	for (p = tmpl; *p != '\0'; p++) {
		if (*p != '%') {
			one[0] = *p;
			add = one;
		} else if (*++p == 'u')
			add = pw->pw_name;
		else if (*p == 'h' && pw->pw_dir[0] == '/')
			add = pw->pw_dir;
		else if (*p == '%')
			add = "%";
		else
			return -1;
		if (strlcat(buf, add, len) >= len)
			return -1;
	}
	return 0;
}

/*
 * Checked at startup, so that a typo is found before the first login:
 * absolute, or in the home directory (%h/Maildrop), which is absolute.
 */
static int
template_valid(const char *tmpl)
{
	const char	*p;

	if (tmpl[0] != '/' && strncmp(tmpl, "%h/", 3) != 0)
		return 0;
	for (p = tmpl; (p = strchr(p, '%')) != NULL; p += 2)
		if (p[1] != 'u' && p[1] != 'h' && p[1] != '%')
			return 0;
	return 1;
}

/*
 * The commit journal lives where the user cannot write: opened here, as
 * root, and handed to the session as a descriptor.
 */
static int
open_journal(const char *user)
{
	char	path[PATH_MAX];
	int	fd;

	make_dir(JOURNAL_DIR, 0700);
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", JOURNAL_DIR, user) >=
	    sizeof(path))
		return -1;
	fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd == -1)
		log_warn("journal %s", path);
	return fd;
}

/* The group that may write the spool directory (Debian: 2775 root:mail). */
static gid_t
mail_group(void)
{
	struct group	*gr;

	return (gr = getgrnam("mail")) != NULL ? gr->gr_gid : (gid_t)-1;
}

/*
 * The locks of a child running as the user: the session, or a recovery
 * (maildrop.c, "Locking").  Creating PATH.lock needs write access to
 * the spool directory, which the child never has; liblockfile would
 * run its setgid helper dotlockfile for it, a fork and an exec to take
 * the lock and another to remove it (about 1 ms before every greeting,
 * issue 7; and impossible under no_new_privs).  This process is root
 * and outlives the child, so it takes all three locks before the fork,
 * with the helper's rights (the user's uid and group, effective gid
 * mail), and removes them once the child is gone: no request and
 * answer between two processes before the greeting (each a wake-up of
 * another CPU, slow on a busy VM host), and the kernel locks of a
 * session killed in the middle of a commit stay held until the
 * recovery has rolled it back.  Only for a spool directory the user
 * cannot change (see trusted_spool_dir()); elsewhere the child locks by
 * itself.
 */
struct spool_lock {
	const struct passwd	*pw;
	gid_t			 mail;
	int			 usable;	/* group mail, trusted directory */
	int			 taken;		/* lent to the children */
	pid_t			 monitor;
	char			 spool[PATH_MAX];	/* in its real directory */
};

/*
 * Whether the user could swap dir, or a directory above it, for
 * something else while we work there with gid mail: not if each is
 * root's and writable by no one else but group mail (Debian: /var/mail,
 * 2775 root:mail).  A maildrop in a home directory (-m %h/...) fails
 * this; its user may write there, and the session locks it by itself.
 */
static int
trusted_spool_dir(const char *dir, gid_t mail)
{
	char		 d[PATH_MAX], *slash;
	struct stat	 st;

	if (strlcpy(d, dir, sizeof(d)) >= sizeof(d))
		return 0;
	for (;;) {
		if (lstat(d[0] != '\0' ? d : "/", &st) == -1 ||
		    !S_ISDIR(st.st_mode) || st.st_uid != 0 ||
		    (st.st_mode & S_IWOTH) || ((st.st_mode & S_IWGRP) &&
		    st.st_gid != 0 && st.st_gid != mail))
			return 0;
		if ((slash = strrchr(d, '/')) == NULL)
			return 1;
		*slash = '\0';
	}
}

/*
 * mail: the group mail, or (gid_t)-1 if there is none.  The spool's
 * directory is resolved once, here, as root (a link such as
 * /var/spool/mail -> ../mail is followed), and only the result is
 * checked and used.
 */
static void
spool_lock_init(struct spool_lock *l, const struct passwd *pw,
    const char *path, gid_t mail)
{
	char		 dir[PATH_MAX], real[PATH_MAX];
	const char	*base;

	memset(l, 0, sizeof(*l));
	l->pw = pw;
	l->mail = mail;
	if ((base = strrchr(path, '/')) == NULL ||
	    (size_t)(base - path) >= sizeof(dir))
		return;
	memcpy(dir, path, base - path);
	dir[base - path] = '\0';
	if (realpath(dir[0] != '\0' ? dir : "/", real) == NULL)
		return;
	l->usable = mail != (gid_t)-1 && trusted_spool_dir(real, mail) &&
	    snprintf(l->spool, sizeof(l->spool), "%s%s",
	    strcmp(real, "/") == 0 ? "" : real, base) <
	    (int)sizeof(l->spool) - (int)sizeof(".lock");
}

/* Root's ids, kept while we act with the helper's. */
struct root_ids {
	gid_t	egid;
	gid_t	groups[64];
	int	ngroups;
};

static int
helper_rights(const struct spool_lock *l, struct root_ids *r)
{
	r->egid = getegid();
	if ((r->ngroups = getgroups(64, r->groups)) == -1 ||
	    setgroups(1, &l->pw->pw_gid) == -1)
		return -1;
	if (setegid(l->mail) == 0 && seteuid(l->pw->pw_uid) == 0)
		return 0;
	return -1;
}

/* Root again, with root's groups, and not dumpable (a change of euid
 * may have made it so). */
static void
root_again(const struct root_ids *r)
{
	if (seteuid(0) == -1 || setegid(r->egid) == -1 ||
	    (r->ngroups != -1 && setgroups(r->ngroups, r->groups) == -1))
		fatal("back to root");
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/*
 * Before forking the children that use them.  A failure (IN-USE, say)
 * is lent too: the session tells the client, at PASS.  Without the
 * helper's rights (never seen) the children lock by themselves.
 */
static void
spool_lock_take(struct spool_lock *l)
{
	struct root_ids	ids;

	if (!l->usable)
		return;
	l->monitor = getpid();
	if (helper_rights(l, &ids) == 0) {
		(void)maildrop_lock_for_child(l->spool);
		l->taken = 1;
	} else
		log_warn("user %s: cannot lock as the user", l->pw->pw_name);
	root_again(&ids);
}

/* In the child, after dropping privileges. */
static void
spool_lock_borrow(const struct spool_lock *l)
{
	if (!l->taken)
		return;
	/* The locks are the monitor's, and hold its pid: not outlive it. */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) == -1 ||
	    getppid() != l->monitor)
		fatalx("the monitor is gone");
}

/*
 * Once no child is left.  A session killed in the middle of a commit
 * leaves a half-moved spool: release only after the recovery has
 * rolled it back, so that no one who locks sees the spool before.
 */
static void
spool_lock_release(struct spool_lock *l)
{
	struct root_ids	ids;

	if (!l->taken)
		return;
	/* Only the dot-lock's removal needs them; the rest goes anyway. */
	if (helper_rights(l, &ids) == -1)
		log_warn("user %s: unlocking without the helper's rights",
		    l->pw->pw_name);
	maildrop_release_child_locks();
	root_again(&ids);
	l->taken = 0;
}

static void __attribute__((noreturn))
run_user_session(const struct session_config *conf,
    const struct passwd *pw, const char *path, int journal_fd,
    const struct spool_lock *lock, const struct creds_msg *msg)
{
	static struct session s;	/* static: see run_preauth_child() */

	drop_privileges(pw->pw_uid, pw->pw_gid);
	set_signals(on_signal);		/* before the monitor's death signal */
	termination_signals(SIG_UNBLOCK);
	spool_lock_borrow(lock);
	session_init(&s, STDIN_FILENO, STDOUT_FILENO, conf);
	inbuf_preload(&s.in, msg->pending, msg->pending_len);
	if (session_start_transaction(&s, pw->pw_name, path, journal_fd) == 0)
		session_run(&s);
	outbuf_flush(&s.out);
	/*
	 * The session has said its last word: let the client go before
	 * the maildrop is closed, whose cleanup after a commit (clearing
	 * a large journal) it need not wait for.
	 */
	to_dev_null(STDIN_FILENO, STDOUT_FILENO);
	session_finish(&s);
	_exit(s.end == END_QUIT || s.end == END_EOF ? 0 : 1);
}

static void
wait_child(pid_t pid, int *status)
{
	while (waitpid(pid, status, 0) == -1)
		if (errno != EINTR) {
			*status = 0;
			return;
		}
}

/*
 * A session killed in the middle of a commit leaves the undo journal
 * behind; opening the maildrop rolls it back.  Do it now, as the user,
 * rather than at the next login, so that other readers of the spool
 * (mail readers, the MDA) see it whole again at once; under the locks
 * taken for the session, if the caller took them (spool_lock_take()).
 * 0, or -1 if the spool could not be opened (so not rolled back:
 * IN-USE, say).
 */
static int
recover_now(const struct passwd *pw, const char *path,
    const struct spool_lock *lock, int private_fd)
{
	struct maildrop	*md;
	char		 why[512];
	int		 journal_fd, status = 0;
	pid_t		 pid;

	if ((journal_fd = open_journal(pw->pw_name)) == -1)
		return -1;
	if ((pid = fork()) == 0) {
		if (private_fd != -1)
			close(private_fd);	/* -R's journal directory */
		set_signals(SIG_DFL);
		drop_privileges(pw->pw_uid, pw->pw_gid);
		spool_lock_borrow(lock);
		if (maildrop_open(&md, path, journal_fd, why, sizeof(why)) !=
		    MD_OK) {
			log_warnx("recovery: %s", why);
			_exit(1);
		}
		maildrop_close(md);
		_exit(0);
	}
	close(journal_fd);
	if (pid == -1)
		return -1;
	wait_child(pid, &status);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void
free_account(struct passwd *pw)
{
	free(pw->pw_name);
	free(pw->pw_dir);
}

static int
copy_account(const struct passwd *src, struct passwd *dst)
{
	*dst = *src;
	dst->pw_passwd = NULL;
	dst->pw_gecos = NULL;
	dst->pw_shell = NULL;
	dst->pw_name = strdup(src->pw_name);
	dst->pw_dir = strdup(src->pw_dir);
	if (dst->pw_name == NULL || dst->pw_dir == NULL) {
		free_account(dst);
		return -1;
	}
	return 0;
}

/*
 * The spool whose commit a journal holds, as the journal records it
 * (0), or -1 if it records none (an earlier version's journal).
 */
static int
journal_spool(int dirfd, const char *name, char *path, size_t len)
{
	int	fd, r;

	if ((fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) ==
	    -1)
		return -1;
	r = maildrop_journal_spool(fd, path, len);
	close(fd);
	return r;
}

/*
 * -R, at boot before the MTA delivers: roll back every commit that a
 * crash or power loss interrupted, so that mail readers never meet a
 * half-moved spool (a login repairs only its own user's).  The spool is
 * the one the journal records, whatever -m says: a user served through
 * two configurations has one journal.  Exits 1 if one could not be
 * rolled back, so that the boot unit shows as failed.
 */
static int
recover_all(const struct options *opt)
{
	struct passwd	 account, *pw;
	struct spool_lock lock;
	struct dirent	*de;
	struct stat	 st;
	char		 path[PATH_MAX], safe[NAME_MAX * 4 + 1];
	gid_t		 mail = mail_group();
	DIR		*dir;
	int		 failed = 0;

	/* Said even when there is nothing to do: it ran, at boot. */
	log_info("recovery: looking for unfinished commits in %s",
	    JOURNAL_DIR);
	if ((dir = opendir(JOURNAL_DIR)) == NULL) {
		if (errno != ENOENT) {
			log_warn("%s", JOURNAL_DIR);
			return 1;
		}
		log_info("recovery: done (no journal directory)");
		return 0;
	}
	while ((de = readdir(dir)) != NULL) {
		if (de->d_name[0] == '.' || fstatat(dirfd(dir), de->d_name,
		    &st, AT_SYMLINK_NOFOLLOW) == -1 || !S_ISREG(st.st_mode) ||
		    st.st_size == 0)
			continue;	/* an empty journal: nothing unfinished */
		log_safe(safe, sizeof(safe), de->d_name, strlen(de->d_name));
		if ((pw = getpwnam(de->d_name)) == NULL ||
		    copy_account(pw, &account) == -1) {
			log_warnx("journal of %s: no such account", safe);
			continue;
		}
		if (journal_spool(dirfd(dir), de->d_name, path,
		    sizeof(path)) == -1 && expand_maildrop(opt->maildrop,
		    &account, path, sizeof(path)) == -1) {
			log_warnx("journal of %s: no maildrop path", safe);
			failed = 1;
		} else {
			log_info("journal of %s: recovering %s", safe, path);
			spool_lock_init(&lock, &account, path, mail);
			spool_lock_take(&lock);
			if (recover_now(&account, path, &lock,
			    dirfd(dir)) == -1)
				failed = 1;
			spool_lock_release(&lock);
		}
		free_account(&account);
	}
	closedir(dir);
	log_info("recovery: %s", failed ? "a spool could not be rolled "
	    "back; its user's next login tries again" : "done");
	return failed;
}

static void __attribute__((noreturn))
refuse(struct auth *auth, const char *line)
{
	(void)write_full(STDOUT_FILENO, line, strlen(line));
	auth_end(auth);
	exit(1);
}

/*
 * After a good login: PAM session (unless -S), journal, the locks, then
 * the session process; this process stays root to hold the locks, to
 * have a killed session's commit rolled back, and to close the PAM
 * session.
 */
static void __attribute__((noreturn))
serve_user(const struct options *opt, const struct session_config *conf,
    struct auth *auth, const char *user, const struct creds_msg *msg)
{
	struct passwd	 account, *pw;
	struct spool_lock lock;
	char		 path[PATH_MAX];
	int		 journal_fd, status;
	gid_t		 mail;
	pid_t		 pid;

	/* PAM modules may call getpwnam() too: keep a copy of our own. */
	if ((pw = getpwnam(user)) == NULL || copy_account(pw, &account) == -1)
		refuse(auth, "-ERR [SYS/TEMP] Cannot look up the account; "
		    "try again later\r\n");
	pw = &account;
	mail = mail_group();
	if (expand_maildrop(opt->maildrop, pw, path, sizeof(path)) == -1 ||
	    pw->pw_gid == mail) {
		log_warnx("user %s: no maildrop path, or primary group mail",
		    user);
		refuse(auth, "-ERR [SYS/PERM] Cannot serve this account; ask "
		    "the administrator\r\n");
	}
	/*
	 * A PAM session, so that pam_limits, pam_systemd and the like work;
	 * -S leaves it out, as Dovecot (session=no, its default) and popa3d
	 * do: 0.5-1 ms of every login, and with pam_systemd a logind
	 * session (and the user's manager) for every mail check.
	 */
	if (!opt->no_session && auth_open_session(auth) == -1) {
		log_warnx("user %s: PAM session refused", user);
		refuse(auth, "-ERR [SYS/TEMP] Cannot open a session now; try "
		    "again later\r\n");
	}
	journal_fd = open_journal(pw->pw_name);
	spool_lock_init(&lock, pw, path, mail);
	spool_lock_take(&lock);
	/* Before the fork: once the session answers, this title is set. */
	setproctitle("%s [monitor]", user);
	termination_signals(SIG_BLOCK);
	if ((pid = fork()) == -1) {
		log_warn("user %s: fork", user);
		spool_lock_release(&lock);
		refuse(auth, "-ERR [SYS/TEMP] Cannot start the session now; "
		    "try again later\r\n");
	}
	if (pid == 0)
		run_user_session(conf, pw, path, journal_fd, &lock, msg);
	child_started(pid);
	set_signals(forward_signal);
	if (journal_fd != -1)
		close(journal_fd);
	close(STDIN_FILENO);
	close(STDOUT_FILENO);
	wait_child(pid, &status);
	child_pid = -1;		/* reaped: nothing to pass signals on to */
	if (WIFSIGNALED(status)) {
		log_warnx("user %s: session killed by signal %d", user,
		    WTERMSIG(status));
		(void)recover_now(pw, path, &lock, -1);
	}
	spool_lock_release(&lock);
	auth_end(auth);
	exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

/*
 * One PAM check per message from the child; nothing else is possible.
 * rhost is the peer for PAM_RHOST, or NULL when unknown: a made-up name
 * there would be looked up in the DNS by libpam's audit on every call.
 */
static enum auth_result
check_creds(const struct options *opt, const char *peer, const char *rhost,
    struct creds_msg *msg, struct auth **auth, char *canon, size_t canonlen)
{
	char			user[USER_MAX + 1], pass[PASS_MAX + 1];
	char			safe[USER_MAX * 4 + 1];
	struct passwd		*pw;
	enum auth_result	 res;

	memcpy(user, msg->user, msg->user_len);
	user[msg->user_len] = '\0';
	memcpy(pass, msg->pass, msg->pass_len);
	pass[msg->pass_len] = '\0';
	explicit_bzero(msg->pass, sizeof(msg->pass));
	res = auth_login(auth, opt->service, user, pass, rhost, canon, canonlen);
	explicit_bzero(pass, sizeof(pass));
	log_safe(safe, sizeof(safe), user, msg->user_len);
	if (res == AUTH_OK && ((pw = getpwnam(canon)) == NULL ||
	    (pw->pw_uid == 0 && !opt->allow_root))) {
		log_warnx("login refused for %s from %s: %s", safe, peer,
		    pw == NULL ? "no such account" : "root logins disabled");
		auth_end(*auth);
		*auth = NULL;
		res = AUTH_FAILED;
	} else if (res == AUTH_OK) {
		log_safe(safe, sizeof(safe), canon, strlen(canon));
		log_info("login: %s from %s", safe, peer);
	} else
		log_info("login failed for %s from %s%s", safe, peer,
		    res == AUTH_EXPIRED ? " (password expired)" : "");
	return res;
}

static enum login_verdict
verdict_of(enum auth_result res)
{
	switch (res) {
	case AUTH_EXPIRED:
		return LOGIN_EXPIRED;
	case AUTH_SYSERR:
		return LOGIN_SYSTEMP;
	default:
		return LOGIN_FAILED;
	}
}

/*
 * One PAM check per message from a child; nothing else is possible.
 * After MAX_AUTH_FAILURES the last child says goodbye and this ends.
 */
static void __attribute__((noreturn))
run_parent(const struct options *opt, const struct prelogin *pl,
    const char *peer, const char *rhost, int creds_fd)
{
	struct creds_msg	 msg;
	struct timespec		 start;
	struct auth		*auth;
	char			 canon[USER_MAX + 1], safe[USER_MAX * 4 + 1];
	enum auth_result	 res;
	int			 failures = 0, status;
	ssize_t			 n;

	for (;;) {
		n = read_full(creds_fd, &msg, sizeof(msg));
		close(creds_fd);
		wait_child(child_pid, &status);
		child_pid = -1;		/* reaped: signals wait for the next */
		if (n == 0 || failures >= MAX_AUTH_FAILURES)
			exit(0);	/* the child ended the session */
		if (n != (ssize_t)sizeof(msg) || !creds_valid(&msg))
			fatalx("bad message from the pre-login child");
		clock_gettime(CLOCK_MONOTONIC, &start);
		if (msg.hopeless) {
			log_safe(safe, sizeof(safe), msg.user, msg.user_len);
			log_info("login failed for %s from %s (a name or "
			    "password too long, or another user's "
			    "authorization identity)", safe, peer);
			res = AUTH_FAILED;
		} else
			res = check_creds(opt, peer, rhost, &msg, &auth,
			    canon, sizeof(canon));
		if (res == AUTH_OK)
			serve_user(opt, pl->conf, auth, canon, &msg);
		pad_failure(&start);
		creds_fd = spawn_prelogin(pl, &msg, verdict_of(res), failures);
		if (res != AUTH_SYSERR)
			failures++;
		explicit_bzero(&msg, sizeof(msg));
	}
}

static void
parse_options(int argc, char *argv[], struct options *opt)
{
	char		 arg[256];
	const char	*errstr;
	int		 ch;

	opt->service = DEFAULT_PAM_SERVICE;
	opt->maildrop = DEFAULT_MAILDROP;
	opt->privsep_user = DEFAULT_PRIVSEP_USER;
	opt->timeout = DEFAULT_TIMEOUT;
	/* ':' first: getopt reports to us, not on stderr (the client). */
	while ((ch = getopt(argc, argv, ":cdm:p:RrSst:u:V")) != -1) {
		switch (ch) {
		case 'c':
			opt->require_tls = 1;
			break;
		case 'd':
			opt->debug = 1;
			break;
		case 'm':
			opt->maildrop = optarg;
			break;
		case 'p':
			opt->service = optarg;
			break;
		case 'R':
			opt->recover = 1;
			break;
		case 'r':
			opt->allow_root = 1;
			break;
		case 'S':
			opt->no_session = 1;
			break;
		case 's':
			opt->secure = 1;
			break;
		case 't':
			opt->timeout = (int)strtonum(optarg, 1, MAX_TIMEOUT,
			    &errstr);
			if (errstr != NULL)
				config_error("timeout %s: %s", optarg, errstr);
			break;
		case 'u':
			opt->privsep_user = optarg;
			break;
		case 'V':
			printf("pop3d %s\n", POP3D_VERSION);
			exit(0);
		case ':':
			config_error("option -%c needs a value", optopt);
		default:
			if (optopt == '-')
				config_error("no long options; " USAGE);
			config_error("unknown option -%c; " USAGE,
			    isgraph(optopt) ? optopt : '?');
		}
	}
	if (optind != argc) {
		log_safe(arg, sizeof(arg), argv[optind], strlen(argv[optind]));
		config_error("unexpected argument %s; " USAGE, arg);
	}
	if (!template_valid(opt->maildrop))
		config_error("maildrop template %s: must be an absolute path "
		    "or start with %%h/, and use no %% escape but %%u, %%h "
		    "and %%%%", opt->maildrop);
}

int
main(int argc, char *argv[], char *envp[])
{
	struct options		opt;
	struct session_config	conf;
	struct prelogin		pl;
	struct passwd		*pw;
	enum peer_source	src;
	char			peer[64];

	/* Front ends (stunnel) may pass descriptors the children must not see. */
	closefrom(STDERR_FILENO + 1);
	memset(&opt, 0, sizeof(opt));
	parse_options(argc, argv, &opt);
	setproctitle_init(argc, argv, envp);
	log_init(opt.debug);
	if (geteuid() != 0)
		fatalx("must be started as root");
	if (opt.recover)	/* not a session: fds 0-2 are not a client */
		exit(recover_all(&opt));
	setup_fds(opt.debug);
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		fatal("signal");
	/* Passwords pass through here: no core dumps, no ptrace by users. */
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	src = peer_lookup(STDIN_FILENO, peer, sizeof(peer));
	log_info("connection from %s (%s)", peer, peer_source_name(src));
	conf.timeout = opt.timeout;
	conf.cleartext_ok = !opt.require_tls || opt.secure ||
	    peer_is_loopback(peer);
	pw = privsep_user(opt.privsep_user);
	pl.conf = &conf;
	pl.uid = pw->pw_uid;
	pl.gid = pw->pw_gid;
	pl.debug = opt.debug;
	make_dir(CHROOT_DIR, 0755);
	set_signals(forward_signal);
	run_parent(&opt, &pl, peer, src == PEER_UNKNOWN ? NULL : peer,
	    spawn_prelogin(&pl, NULL, LOGIN_FAILED, 0));
}
