/*
 * auth.c against real libpam, through pam_wrapper: the PAM stacks are
 * the service files in tests/pam/ (see tests/run_auth_tests.sh, which
 * sets up the environment), the passwords tests/pam/passdb.  Every
 * test runs in its own process (criterion's default), so setenv() and
 * chdir() do not leak from one test to the next.
 */

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "auth.h"
#include "log.h"

/*
 * Under -fsanitize=address, leak checking is paused where a test PAM
 * module, not auth.c, leaks.
 */
#if defined(__SANITIZE_ADDRESS__)		/* gcc */
#define TEST_ASAN
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)		/* clang */
#define TEST_ASAN
#endif
#endif
#ifdef TEST_ASAN
#include <sanitizer/lsan_interface.h>
#define MODULE_LEAKS_BEGIN()	__lsan_disable()
#define MODULE_LEAKS_END()	__lsan_enable()
#else
#define MODULE_LEAKS_BEGIN()	do { } while (0)
#define MODULE_LEAKS_END()	do { } while (0)
#endif

#define TRACE		"pam-trace"
#define TEST_DIR	"/tmp/pop3d-test-auth.XXXXXX"

static char test_dir[] = TEST_DIR;
static int have_test_dir;

static const char *peer_vars[] = { "REMOTE_ADDR", "TCPREMOTEIP",
    "REMOTE_HOST" };

static void	auth_setup(void);
static void	peer_setup(void);
static enum auth_result login(const char *, const char *, const char *,
		    const char *, struct auth **, char *, size_t);
static void	tmpdir_enter(void);
static void	tmpdir_leave(void);
static void	trace_read(char *, size_t);
static double	now(void);
static int	tcp_accepted(int, const char *, const char *, int *);
static int	first_inet_addr(char *, size_t);

/* Without the wrapper, pam_start() would read /etc/pam.d: refuse. */
static void
auth_setup(void)
{
	if (getenv("PAM_WRAPPER") == NULL ||
	    getenv("PAM_WRAPPER_SERVICE_DIR") == NULL ||
	    getenv("PAM_MATRIX_PASSWD") == NULL)
		cr_assert_fail("run me through tests/run_auth_tests.sh");
	unsetenv("PAM_USER");		/* read by pam_set_items */
	log_init(1);			/* stderr, not the system's log */
}

static void
peer_setup(void)
{
	size_t i;

	for (i = 0; i < sizeof(peer_vars) / sizeof(peer_vars[0]); i++)
		unsetenv(peer_vars[i]);
	log_init(1);
}

TestSuite(auth, .init = auth_setup, .fini = tmpdir_leave);
TestSuite(peer, .init = peer_setup);

static enum auth_result
login(const char *service, const char *user, const char *pass,
    const char *rhost, struct auth **ap, char *canon, size_t canonlen)
{
	enum auth_result r;

	/* Poison both outputs: auth_login() must set them on every path. */
	*ap = (struct auth *)&r;
	memset(canon, 'X', canonlen);
	r = auth_login(ap, service, user, pass, rhost, canon, canonlen);
	if (r != AUTH_OK) {
		cr_assert_null(*ap, "*authp must be NULL on failure");
		if (canonlen > 0)
			cr_assert_str_empty(canon,
			    "canon must be empty on failure");
	} else
		cr_assert_not_null(*ap);
	return r;
}

/* A fresh directory as cwd: pam_exec appends to ./pam-trace there. */
static void
tmpdir_enter(void)
{
	cr_assert_not_null(mkdtemp(test_dir), "mkdtemp: %s", strerror(errno));
	have_test_dir = 1;
	cr_assert_eq(chdir(test_dir), 0);
}

/* Also the suite's .fini, so that a failed test leaves nothing behind. */
static void
tmpdir_leave(void)
{
	char path[sizeof(test_dir) + sizeof(TRACE) + 1];

	if (!have_test_dir)
		return;
	have_test_dir = 0;
	snprintf(path, sizeof(path), "%s/%s", test_dir, TRACE);
	(void)unlink(path);
	cr_assert_eq(chdir("/"), 0);
	cr_assert_eq(rmdir(test_dir), 0, "rmdir %s: %s", test_dir,
	    strerror(errno));
}

/* The trace so far; "" if no session step ran. */
static void
trace_read(char *buf, size_t len)
{
	ssize_t n;
	int fd;

	buf[0] = '\0';
	if ((fd = open(TRACE, O_RDONLY)) == -1) {
		cr_assert_eq(errno, ENOENT);
		return;
	}
	n = read(fd, buf, len - 1);
	cr_assert_geq(n, 0);
	buf[n] = '\0';
	close(fd);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- auth_login ---- */

Test(auth, success_returns_canonical_name)
{
	struct auth *a;
	char canon[USER_MAX + 1];

	cr_assert_eq(login("pop3-test", "alice", "alice-secret", NULL, &a,
	    canon, sizeof(canon)), AUTH_OK);
	cr_assert_str_eq(canon, "alice");
	auth_end(a);
}

Test(auth, password_with_spaces)
{
	struct auth *a;
	char canon[USER_MAX + 1];

	cr_assert_eq(login("pop3-test", "bob", "bob secret with spaces",
	    "192.0.2.1", &a, canon, sizeof(canon)), AUTH_OK);
	cr_assert_str_eq(canon, "bob");
	auth_end(a);
}

Test(auth, bad_password)
{
	struct auth *a;
	char canon[USER_MAX + 1];

	cr_assert_eq(login("pop3-test", "alice", "alice-secreT", NULL, &a,
	    canon, sizeof(canon)), AUTH_FAILED);
	cr_assert_eq(login("pop3-test", "alice", "alice-secret ", NULL, &a,
	    canon, sizeof(canon)), AUTH_FAILED);
	cr_assert_eq(login("pop3-test", "alice", "bob secret with spaces",
	    NULL, &a, canon, sizeof(canon)), AUTH_FAILED);
}

/* RFC 1939 section 13, RFC 3206: the same answer as a bad password. */
Test(auth, unknown_user_same_as_bad_password)
{
	struct auth *a;
	char canon[USER_MAX + 1];

	cr_assert_eq(login("pop3-test", "mallory", "alice-secret", NULL,
	    &a, canon, sizeof(canon)), AUTH_FAILED);
	cr_assert_eq(login("pop3-test", "Alice", "alice-secret", NULL, &a,
	    canon, sizeof(canon)), AUTH_FAILED);
}

Test(auth, empty_or_oversized_credentials_refused)
{
	struct auth *a;
	char canon[USER_MAX + 1], big[PASS_MAX + 2];

	cr_assert_eq(login("pop3-test", "alice", "", NULL, &a, canon,
	    sizeof(canon)), AUTH_FAILED);
	cr_assert_eq(login("pop3-test", "alice", NULL, NULL, &a, canon,
	    sizeof(canon)), AUTH_FAILED);
	cr_assert_eq(login("pop3-test", "", "alice-secret", NULL, &a, canon,
	    sizeof(canon)), AUTH_FAILED);
	cr_assert_eq(login("pop3-test", NULL, "alice-secret", NULL, &a,
	    canon, sizeof(canon)), AUTH_FAILED);

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cr_assert_eq(login("pop3-test", "alice", big, NULL, &a, canon,
	    sizeof(canon)), AUTH_FAILED);
	big[USER_MAX + 1] = '\0';
	cr_assert_eq(login("pop3-test", big, "alice-secret", NULL, &a,
	    canon, sizeof(canon)), AUTH_FAILED);
}

Test(auth, account_stack_refuses)
{
	struct auth *a;
	char canon[USER_MAX + 1];

	/* pam_deny in the account stack: a locked account. */
	cr_assert_eq(login("pop3-test-acctdeny", "alice", "alice-secret",
	    NULL, &a, canon, sizeof(canon)), AUTH_FAILED);
	/* pam_matrix: carol's password is right, her service is not. */
	cr_assert_eq(login("pop3-test", "carol", "carol-secret", NULL, &a,
	    canon, sizeof(canon)), AUTH_FAILED);
}

Test(auth, new_authtok_reqd_is_expired)
{
	struct auth *a;
	char canon[USER_MAX + 1];

	cr_assert_eq(login("pop3-test-expired", "alice", "alice-secret",
	    NULL, &a, canon, sizeof(canon)), AUTH_EXPIRED);
	/* Only after the right password: nothing to learn for a guesser. */
	cr_assert_eq(login("pop3-test-expired", "alice", "wrong", NULL, &a,
	    canon, sizeof(canon)), AUTH_FAILED);
	cr_assert_eq(login("pop3-test-expired", "nobody-here", "wrong", NULL,
	    &a, canon, sizeof(canon)), AUTH_FAILED);
}

Test(auth, pam_system_errors)
{
	struct auth *a;
	char canon[USER_MAX + 1];

	cr_assert_eq(login("pop3-test-acctsyserr", "alice", "alice-secret",
	    NULL, &a, canon, sizeof(canon)), AUTH_SYSERR);
	cr_assert_eq(login("pop3-test-authsyserr", "alice", "alice-secret",
	    NULL, &a, canon, sizeof(canon)), AUTH_SYSERR);
	cr_assert_eq(login(NULL, "alice", "alice-secret", NULL, &a, canon,
	    sizeof(canon)), AUTH_SYSERR);
}

/* No service file: libpam uses "other" (tests/pam/other: pam_deny). */
Test(auth, missing_service_refuses)
{
	struct auth *a;
	char canon[USER_MAX + 1];

	cr_assert_eq(login("pop3-test-no-such-service", "alice",
	    "alice-secret", NULL, &a, canon, sizeof(canon)), AUTH_FAILED);
}

Test(auth, conversation_tolerates_info_and_error_messages)
{
	struct auth *a;
	char canon[USER_MAX + 1];

	/* pam_chatty never frees the replies it asked for. */
	MODULE_LEAKS_BEGIN();
	cr_assert_eq(login("pop3-test-chatty", "alice", "alice-secret", NULL,
	    &a, canon, sizeof(canon)), AUTH_OK);
	cr_assert_str_eq(canon, "alice");
	auth_end(a);
	cr_assert_eq(login("pop3-test-chatty", "alice", "wrong", NULL, &a,
	    canon, sizeof(canon)), AUTH_FAILED);
	MODULE_LEAKS_END();
}

/* Session modules talk through the post-login conversation. */
Test(auth, conversation_after_login)
{
	struct auth *a;
	char canon[USER_MAX + 1];

	cr_assert_eq(login("pop3-test-talk", "alice", "alice-secret", NULL,
	    &a, canon, sizeof(canon)), AUTH_OK);
	cr_assert_eq(auth_open_session(a), 0);
	auth_end(a);
}

/* ECHO_ON is answered with the user name, ECHO_OFF with the password. */
Test(auth, conversation_echo_on_gets_user_name)
{
	struct auth *a;
	char canon[USER_MAX + 1];

	cr_assert_eq(login("pop3-test-echo", "erin", "not-the-password",
	    NULL, &a, canon, sizeof(canon)), AUTH_OK);
	cr_assert_str_eq(canon, "erin");
	auth_end(a);
	cr_assert_eq(login("pop3-test-echo", "alice", "alice-secret", NULL,
	    &a, canon, sizeof(canon)), AUTH_FAILED);
}

Test(auth, rhost_reaches_pam)
{
	struct auth *a;
	char canon[USER_MAX + 1];

	cr_assert_eq(login("pop3-test-rhost", "alice", "alice-secret",
	    "192.0.2.7", &a, canon, sizeof(canon)), AUTH_OK);
	auth_end(a);
	cr_assert_eq(login("pop3-test-rhost", "alice", "alice-secret",
	    "192.0.2.8", &a, canon, sizeof(canon)), AUTH_FAILED);
	cr_assert_eq(login("pop3-test-rhost", "alice", "alice-secret", NULL,
	    &a, canon, sizeof(canon)), AUTH_FAILED);
}

/*
 * pam_faildelay asks for 3 s; libpam would sleep 1.5-4.5 s after the
 * failure.  auth_login() must return at once (the caller pads).
 */
Test(auth, no_pam_fail_delay)
{
	struct auth *a;
	char canon[USER_MAX + 1];
	double t0, t1, t2;

	t0 = now();
	cr_assert_eq(login("pop3-test-faildelay", "alice", "wrong", NULL,
	    &a, canon, sizeof(canon)), AUTH_FAILED);
	t1 = now();
	cr_assert_eq(login("pop3-test-faildelay", "nobody-here", "wrong",
	    NULL, &a, canon, sizeof(canon)), AUTH_FAILED);
	t2 = now();
	cr_assert_lt(t1 - t0, 1.0, "bad password took %.3f s", t1 - t0);
	cr_assert_lt(t2 - t1, 1.0, "unknown user took %.3f s", t2 - t1);
}

Test(auth, canonical_name_from_pam_user)
{
	struct auth *a;
	char canon[USER_MAX + 1];

	cr_assert_eq(setenv("PAM_USER", "alice.mapped", 1), 0);
	cr_assert_eq(login("pop3-test-canon", "alice", "alice-secret", NULL,
	    &a, canon, sizeof(canon)), AUTH_OK);
	cr_assert_str_eq(canon, "alice.mapped");
	auth_end(a);
}

Test(auth, canonical_name_too_long)
{
	struct auth *a;
	char canon[5];

	/* "alice" needs 6 bytes. */
	cr_assert_eq(login("pop3-test", "alice", "alice-secret", NULL, &a,
	    canon, sizeof(canon)), AUTH_SYSERR);
	cr_assert_eq(login("pop3-test", "alice", "alice-secret", NULL, &a,
	    canon, 0), AUTH_SYSERR);
}

Test(auth, canonical_name_unusable)
{
	static const char *bad[] = { "../alice", "alice/x", "..", ".",
	    "al\nice", "al\tice", "alice\x7f" };
	struct auth *a;
	char canon[USER_MAX + 1];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(setenv("PAM_USER", bad[i], 1), 0);
		cr_assert_eq(login("pop3-test-canon", "alice", "alice-secret",
		    NULL, &a, canon, sizeof(canon)), AUTH_SYSERR,
		    "canonical name #%zu accepted", i);
	}
}

Test(auth, session_open_and_close)
{
	struct auth *a;
	char canon[USER_MAX + 1], trace[256];

	tmpdir_enter();
	cr_assert_eq(login("pop3-test-session", "alice", "alice-secret",
	    NULL, &a, canon, sizeof(canon)), AUTH_OK);
	trace_read(trace, sizeof(trace));
	cr_assert_str_empty(trace, "session opened by auth_login()");
	cr_assert_eq(auth_open_session(a), 0);
	trace_read(trace, sizeof(trace));
	cr_assert_str_eq(trace, "open_session alice\n");
	cr_assert_eq(auth_open_session(a), -1, "opened twice");
	auth_end(a);
	trace_read(trace, sizeof(trace));
	cr_assert_str_eq(trace, "open_session alice\nclose_session alice\n");
}

/* No session: auth_end() must not close what was never opened. */
Test(auth, end_without_session)
{
	struct auth *a;
	char canon[USER_MAX + 1], trace[256];

	tmpdir_enter();
	cr_assert_eq(login("pop3-test-session", "alice", "alice-secret",
	    NULL, &a, canon, sizeof(canon)), AUTH_OK);
	auth_end(a);
	trace_read(trace, sizeof(trace));
	cr_assert_str_empty(trace);
}

Test(auth, open_session_fails)
{
	struct auth *a;
	char canon[USER_MAX + 1], trace[256];

	tmpdir_enter();
	cr_assert_eq(login("pop3-test-sessfail", "alice", "alice-secret",
	    NULL, &a, canon, sizeof(canon)), AUTH_OK);
	cr_assert_eq(auth_open_session(a), -1);
	auth_end(a);
	trace_read(trace, sizeof(trace));
	cr_assert_str_eq(trace, "open_session alice\n");
}

Test(auth, setcred_fails)
{
	struct auth *a;
	char canon[USER_MAX + 1], trace[256];

	tmpdir_enter();
	cr_assert_eq(login("pop3-test-credfail", "alice", "alice-secret",
	    NULL, &a, canon, sizeof(canon)), AUTH_OK);
	cr_assert_eq(auth_open_session(a), -1);
	auth_end(a);
	trace_read(trace, sizeof(trace));
	cr_assert_str_empty(trace, "session opened without credentials");
}

Test(auth, null_handle)
{
	cr_assert_eq(auth_open_session(NULL), -1);
	auth_end(NULL);
}

/* Handles are independent; run under ASan this also checks for leaks. */
Test(auth, many_logins)
{
	struct auth *a[3], *b;
	char canon[USER_MAX + 1];
	int i;

	for (i = 0; i < 3; i++) {
		cr_assert_eq(login("pop3-test", "alice", "alice-secret", NULL,
		    &a[i], canon, sizeof(canon)), AUTH_OK);
		cr_assert_eq(auth_open_session(a[i]), 0);
	}
	for (i = 0; i < 20; i++)
		cr_assert_eq(login("pop3-test", "alice", "wrong", NULL, &b,
		    canon, sizeof(canon)), AUTH_FAILED);
	for (i = 0; i < 3; i++)
		auth_end(a[i]);
}

/* ---- peer_lookup ---- */

static void
assert_peer(int fd, enum peer_source want, const char *addr)
{
	char buf[INET6_ADDRSTRLEN];

	memset(buf, 'X', sizeof(buf));
	cr_assert_eq(peer_lookup(fd, buf, sizeof(buf)), want,
	    "peer source: want %s", peer_source_name(want));
	cr_assert_str_eq(buf, addr);
}

Test(peer, socketpair_without_environment)
{
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_peer(sv[0], PEER_UNKNOWN, "unknown");
	close(sv[0]);
	close(sv[1]);
}

Test(peer, socketpair_each_variable)
{
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	setenv("REMOTE_HOST", "2001:db8::1", 1);
	assert_peer(sv[0], PEER_REMOTE_HOST, "2001:db8::1");
	setenv("TCPREMOTEIP", "::1", 1);
	assert_peer(sv[0], PEER_TCPREMOTEIP, "::1");
	setenv("REMOTE_ADDR", "1.2.3.4", 1);
	assert_peer(sv[0], PEER_REMOTE_ADDR, "1.2.3.4");
	/* An invalid value yields to the next variable. */
	setenv("REMOTE_ADDR", "evil host", 1);
	assert_peer(sv[0], PEER_TCPREMOTEIP, "::1");
	setenv("TCPREMOTEIP", "", 1);
	assert_peer(sv[0], PEER_REMOTE_HOST, "2001:db8::1");
	close(sv[0]);
	close(sv[1]);
}

Test(peer, invalid_values_rejected)
{
	static const char *bad[] = {
		"evil host", "1.2.3.4; rm -rf /", "1.2.3.4 ", " 1.2.3.4",
		"1.2.3.4\n", "localhost", "mail.example.org", "1.2.3",
		"1.2.3.4.5", "256.1.1.1", "01.2.3.4", "0x7f.0.0.1",
		"1.2.3.4:995", "[::1]", "fe80::1%eth0", "::1::2", "%s%n",
		"1.2.3.4/24", "2001:db8::1 2001:db8::2"
	};
	char big[301];
	int sv[2];
	size_t i;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		setenv("REMOTE_HOST", bad[i], 1);
		assert_peer(sv[0], PEER_UNKNOWN, "unknown");
	}
	/* Over-long, even where a prefix would parse. */
	memset(big, '1', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	setenv("REMOTE_HOST", big, 1);
	assert_peer(sv[0], PEER_UNKNOWN, "unknown");
	memcpy(big, "1.2.3.4", 7);
	setenv("REMOTE_HOST", big, 1);
	assert_peer(sv[0], PEER_UNKNOWN, "unknown");
	memcpy(big, "::ffff:", 7);
	setenv("REMOTE_HOST", big, 1);
	assert_peer(sv[0], PEER_UNKNOWN, "unknown");
	close(sv[0]);
	close(sv[1]);
}

/* One spelling per address, whichever way it came. */
Test(peer, environment_values_canonicalised)
{
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	setenv("REMOTE_ADDR", "::FFFF:192.0.2.1", 1);
	assert_peer(sv[0], PEER_REMOTE_ADDR, "192.0.2.1");
	setenv("REMOTE_ADDR", "2001:DB8:0:0:0:0:0:1", 1);
	assert_peer(sv[0], PEER_REMOTE_ADDR, "2001:db8::1");
	setenv("REMOTE_ADDR", "0000:0000:0000:0000:0000:0000:0000:0001", 1);
	assert_peer(sv[0], PEER_REMOTE_ADDR, "::1");
	close(sv[0]);
	close(sv[1]);
}

Test(peer, pipe_and_bad_descriptors)
{
	int p[2], fd;

	cr_assert_eq(pipe(p), 0);
	assert_peer(p[0], PEER_UNKNOWN, "unknown");
	assert_peer(-1, PEER_UNKNOWN, "unknown");
	setenv("TCPREMOTEIP", "198.51.100.9", 1);
	assert_peer(p[0], PEER_TCPREMOTEIP, "198.51.100.9");
	close(p[0]);
	close(p[1]);
	assert_peer(p[0], PEER_TCPREMOTEIP, "198.51.100.9");
	cr_assert_neq(fd = open("/dev/null", O_RDONLY), -1);
	assert_peer(fd, PEER_TCPREMOTEIP, "198.51.100.9");
	close(fd);
}

Test(peer, small_buffer_never_truncates_an_address)
{
	char buf[8];
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	setenv("REMOTE_ADDR", "2001:db8::1", 1);
	cr_assert_eq(peer_lookup(sv[0], buf, sizeof(buf)), PEER_UNKNOWN);
	cr_assert_str_eq(buf, "unknown");
	cr_assert_eq(peer_lookup(sv[0], buf, 4), PEER_UNKNOWN);
	cr_assert_str_eq(buf, "unk");
	buf[0] = 'X';
	cr_assert_eq(peer_lookup(sv[0], buf, 0), PEER_UNKNOWN);
	cr_assert_eq(buf[0], 'X');
	setenv("REMOTE_ADDR", "1.2.3.4", 1);
	cr_assert_eq(peer_lookup(sv[0], buf, sizeof(buf)), PEER_REMOTE_ADDR);
	cr_assert_str_eq(buf, "1.2.3.4");
	close(sv[0]);
	close(sv[1]);
}

/*
 * A TCP connection from connect_to to a listener on listen_on (family
 * af); returns the accepted end, whose peer is the client, and the
 * client end in *client.  -1 if the address family is unavailable.
 */
static int
tcp_accepted(int af, const char *listen_on, const char *connect_to,
    int *client)
{
	struct sockaddr_storage ss, cs;
	struct sockaddr_in *sin;
	struct sockaddr_in6 *sin6;
	socklen_t len;
	int l, c, s, off = 0;
	int caf = strchr(connect_to, ':') != NULL ? AF_INET6 : AF_INET;

	memset(&ss, 0, sizeof(ss));
	if ((l = socket(af, SOCK_STREAM, 0)) == -1)
		return -1;
	if (af == AF_INET6) {
		(void)setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &off,
		    sizeof(off));
		sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		cr_assert_eq(inet_pton(AF_INET6, listen_on, &sin6->sin6_addr),
		    1);
		len = sizeof(*sin6);
	} else {
		sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		cr_assert_eq(inet_pton(AF_INET, listen_on, &sin->sin_addr), 1);
		len = sizeof(*sin);
	}
	if (bind(l, (struct sockaddr *)&ss, len) == -1) {
		close(l);
		return -1;
	}
	cr_assert_eq(listen(l, 1), 0);
	len = sizeof(ss);
	cr_assert_eq(getsockname(l, (struct sockaddr *)&ss, &len), 0);

	/* Connect to the bound port at connect_to. */
	memset(&cs, 0, sizeof(cs));
	if (caf == AF_INET6) {
		sin6 = (struct sockaddr_in6 *)&cs;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = ss.ss_family == AF_INET6 ?
		    ((struct sockaddr_in6 *)&ss)->sin6_port :
		    ((struct sockaddr_in *)&ss)->sin_port;
		cr_assert_eq(inet_pton(AF_INET6, connect_to,
		    &sin6->sin6_addr), 1);
		len = sizeof(*sin6);
	} else {
		sin = (struct sockaddr_in *)&cs;
		sin->sin_family = AF_INET;
		sin->sin_port = ss.ss_family == AF_INET6 ?
		    ((struct sockaddr_in6 *)&ss)->sin6_port :
		    ((struct sockaddr_in *)&ss)->sin_port;
		cr_assert_eq(inet_pton(AF_INET, connect_to, &sin->sin_addr),
		    1);
		len = sizeof(*sin);
	}
	cr_assert_neq(c = socket(caf, SOCK_STREAM, 0), -1);
	if (connect(c, (struct sockaddr *)&cs, len) == -1) {
		close(c);
		close(l);
		return -1;
	}
	cr_assert_neq(s = accept(l, NULL, NULL), -1);
	close(l);
	*client = c;
	return s;
}

Test(peer, tcp_loopback_v4)
{
	int s, c;

	cr_assert_neq(s = tcp_accepted(AF_INET, "127.0.0.1", "127.0.0.1",
	    &c), -1);
	assert_peer(s, PEER_LOOPBACK, "127.0.0.1");
	/* A local proxy (stunnel connect mode): its variables win. */
	setenv("REMOTE_HOST", "192.0.2.1", 1);
	assert_peer(s, PEER_REMOTE_HOST, "192.0.2.1");
	setenv("REMOTE_HOST", "evil host", 1);
	assert_peer(s, PEER_LOOPBACK, "127.0.0.1");
	close(s);
	close(c);
}

Test(peer, tcp_loopback_v6)
{
	int s, c;

	if ((s = tcp_accepted(AF_INET6, "::1", "::1", &c)) == -1)
		cr_skip_test("no IPv6 loopback here");
	assert_peer(s, PEER_LOOPBACK, "::1");
	setenv("REMOTE_ADDR", "2001:db8::5", 1);
	assert_peer(s, PEER_REMOTE_ADDR, "2001:db8::5");
	close(s);
	close(c);
}

/* A dual-stack listener sees ::ffff:127.0.0.1: still loopback, as v4. */
Test(peer, tcp_v4_mapped_loopback)
{
	int s, c;

	if ((s = tcp_accepted(AF_INET6, "::", "127.0.0.1", &c)) == -1)
		cr_skip_test("no dual-stack IPv6 here");
	assert_peer(s, PEER_LOOPBACK, "127.0.0.1");
	close(s);
	close(c);
}

/* The first non-loopback IPv4 address of this host, or -1. */
static int
first_inet_addr(char *buf, size_t len)
{
	struct ifaddrs *ifa, *i;
	int ret = -1;

	if (getifaddrs(&ifa) == -1)
		return -1;
	for (i = ifa; i != NULL && ret == -1; i = i->ifa_next) {
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET)
			continue;
		if (inet_ntop(AF_INET,
		    &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf,
		    len) != NULL && !peer_is_loopback(buf))
			ret = 0;
	}
	freeifaddrs(ifa);
	return ret;
}

/*
 * A connection to this host's own non-loopback address has that
 * address as its peer: the socket tells, the environment is ignored.
 */
Test(peer, tcp_non_loopback_ignores_environment)
{
	char addr[INET_ADDRSTRLEN];
	int s, c;

	if (first_inet_addr(addr, sizeof(addr)) == -1)
		cr_skip_test("no non-loopback IPv4 address here");
	cr_assert_neq(s = tcp_accepted(AF_INET, addr, addr, &c), -1);
	setenv("REMOTE_ADDR", "192.0.2.66", 1);
	setenv("TCPREMOTEIP", "192.0.2.67", 1);
	setenv("REMOTE_HOST", "192.0.2.68", 1);
	assert_peer(s, PEER_SOCKET, addr);
	close(s);
	close(c);

	/* The same through a dual-stack listener: ::ffff:addr. */
	if ((s = tcp_accepted(AF_INET6, "::", addr, &c)) == -1)
		return;
	assert_peer(s, PEER_SOCKET, addr);
	close(s);
	close(c);
}

Test(peer, is_loopback)
{
	static const char *yes[] = { "127.0.0.1", "127.255.255.254",
	    "127.1.2.3", "::1", "::ffff:127.0.0.1" };
	static const char *no[] = { "128.0.0.1", "126.255.255.255",
	    "10.0.0.1", "0.0.0.0", "::", "::2", "::ffff:10.0.0.1",
	    "2001:db8::1", "unknown", "", "127.0.0.1 ", "127.0.0.1x",
	    "localhost" };
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		cr_assert(peer_is_loopback(yes[i]), "%s", yes[i]);
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		cr_assert_not(peer_is_loopback(no[i]), "%s", no[i]);
	cr_assert_not(peer_is_loopback(NULL));
}

Test(peer, source_names)
{
	cr_assert_str_eq(peer_source_name(PEER_SOCKET), "socket");
	cr_assert_str_eq(peer_source_name(PEER_REMOTE_ADDR), "REMOTE_ADDR");
	cr_assert_str_eq(peer_source_name(PEER_TCPREMOTEIP), "TCPREMOTEIP");
	cr_assert_str_eq(peer_source_name(PEER_REMOTE_HOST), "REMOTE_HOST");
	cr_assert_str_eq(peer_source_name(PEER_LOOPBACK), "loopback");
	cr_assert_str_eq(peer_source_name(PEER_UNKNOWN), "unknown");
	cr_assert_str_eq(peer_source_name((enum peer_source)99), "unknown");
}
