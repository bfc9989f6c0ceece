/*
 * Test helpers: a session served by a forked child over a socketpair,
 * with a maildrop on a temp file.  The client side writes a script of
 * commands and reads every byte the server sends until it closes.
 */
#ifndef TESTLIB_H
#define TESTLIB_H

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "maildrop.h"
#include "session.h"

struct fixture {
	char	mbox[64];
	char	journal[64];
	int	journal_fd;
};

static struct fixture fx;

static inline void
write_file(const char *path, const char *data, size_t len)
{
	int	fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(fd != -1);
	cr_assert(write(fd, data, len) == (ssize_t)len);
	close(fd);
}

/* Whole file into a malloc'd NUL-terminated buffer; *lenp its size. */
static inline char *
read_file(const char *path, size_t *lenp)
{
	struct stat	 st;
	char		*buf;
	int		 fd;

	fd = open(path, O_RDONLY);
	cr_assert(fd != -1);
	cr_assert(fstat(fd, &st) == 0);
	buf = malloc((size_t)st.st_size + 1);
	cr_assert(read(fd, buf, (size_t)st.st_size) == st.st_size);
	buf[st.st_size] = '\0';
	close(fd);
	if (lenp != NULL)
		*lenp = (size_t)st.st_size;
	return buf;
}

static inline void
fixture_setup(const char *mbox)
{
	int	fd;

	strcpy(fx.mbox, "/tmp/pop3d-test-mbox.XXXXXX");
	fd = mkstemp(fx.mbox);
	cr_assert(fd != -1);
	close(fd);
	write_file(fx.mbox, mbox, strlen(mbox));
	strcpy(fx.journal, "/tmp/pop3d-test-journal.XXXXXX");
	fx.journal_fd = mkstemp(fx.journal);
	cr_assert(fx.journal_fd != -1);
}

static inline void
fixture_teardown(void)
{
	char	lock[80];

	unlink(fx.mbox);
	unlink(fx.journal);
	snprintf(lock, sizeof(lock), "%s.lock", fx.mbox);
	unlink(lock);
}

/* The test login: alice/secret opens the fixture's maildrop. */
static enum login_verdict
test_login(struct session *s, const char *user, const char *pass)
{
	/* NULL: hopeless credentials, failed unasked (see session.h). */
	if (pass == NULL || strcmp(user, "alice") != 0 ||
	    strcmp(pass, "secret") != 0)
		return LOGIN_FAILED;
	session_start_transaction(s, user, fx.mbox, dup(fx.journal_fd));
	return LOGIN_STARTED;
}

struct run_opts {
	int	timeout;	/* seconds; 0: 600 */
	int	keep_open;	/* do not close the client's write side */
	int	cleartext_refused;
};

/*
 * Serve one session on a socketpair; send input (len bytes) then EOF
 * (unless keep_open); return everything the server wrote, NUL-terminated.
 */
static inline char *
run_session_opts(const char *input, size_t len, const struct run_opts *o,
    size_t *outlen)
{
	struct session_config	conf;
	struct session		s;
	char			*out = NULL;
	size_t			 cap = 0, n = 0;
	ssize_t			 r;
	int			 sv[2], status;
	pid_t			 pid;

	cr_assert(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	pid = fork();
	cr_assert(pid != -1);
	if (pid == 0) {
		close(sv[0]);
		conf.timeout = o->timeout ? o->timeout : 600;
		conf.cleartext_ok = !o->cleartext_refused;
		session_init(&s, sv[1], sv[1], &conf);
		s.login = test_login;
		session_greet(&s);
		session_run(&s);
		session_finish(&s);
		_exit(s.end);
	}
	close(sv[1]);
	/* The child reads as we write; large inputs cannot deadlock. */
	if (len > 0) {
		const char	*p = input;
		size_t		 left = len;

		while (left > 0 && (r = write(sv[0], p, left)) > 0) {
			p += r;
			left -= (size_t)r;
		}
	}
	if (!o->keep_open)
		shutdown(sv[0], SHUT_WR);
	for (;;) {
		if (cap - n < 65536) {
			cap = cap ? cap * 2 : 65536;
			out = realloc(out, cap + 1);
			cr_assert(out != NULL);
		}
		r = read(sv[0], out + n, cap - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	out[n] = '\0';
	close(sv[0]);
	waitpid(pid, &status, 0);
	if (outlen != NULL)
		*outlen = n;
	return out;
}

static inline char *
run_session(const char *input)
{
	struct run_opts	o = { 0, 0, 0 };

	return run_session_opts(input, strlen(input), &o, NULL);
}

#endif /* TESTLIB_H */
