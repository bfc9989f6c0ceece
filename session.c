/*
 * The POP3 protocol state machine (RFC 1939), with CAPA, response codes
 * and pipelining (RFC 2449, 3206) and AUTH PLAIN (RFC 5034, 4616).
 *
 * One table lists every command with the states it is valid in and its
 * argument policy; the loop enforces them, so a handler does only its
 * command's work.  Handlers return 0 when they answered +OK, -1 when they
 * answered -ERR.  Unknown, misplaced and malformed commands are bad
 * commands: MAX_BAD_COMMANDS in a row end the session.
 */
#include <sys/types.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "maildrop.h"
#include "params.h"
#include "session.h"

volatile sig_atomic_t session_signalled;

#define ST_AUTH		(1 << STATE_AUTHORIZATION)
#define ST_TRANS	(1 << STATE_TRANSACTION)
#define MAX_ARGS	2

enum arg_policy {
	ARGS_WORDS,	/* single-space separated, ARG_MAX_LEN each */
	ARGS_REST,	/* the rest of the line is one argument (PASS) */
	ARGS_LONG	/* words without the 40-octet bound (AUTH, USER) */
};

struct command {
	const char	*name;
	int		 states;
	int		 minargs, maxargs;
	enum arg_policy	 policy;
	int		(*handler)(struct session *, int, char **);
};

static int	cmd_user(struct session *, int, char **);
static int	cmd_pass(struct session *, int, char **);
static int	cmd_auth(struct session *, int, char **);
static int	cmd_capa(struct session *, int, char **);
static int	cmd_quit(struct session *, int, char **);
static int	cmd_stat(struct session *, int, char **);
static int	cmd_list(struct session *, int, char **);
static int	cmd_retr(struct session *, int, char **);
static int	cmd_dele(struct session *, int, char **);
static int	cmd_noop(struct session *, int, char **);
static int	cmd_rset(struct session *, int, char **);
static int	cmd_top(struct session *, int, char **);
static int	cmd_uidl(struct session *, int, char **);

/* No APOP: PAM has no shared secret (RFC 1939 section 7). */
static const struct command commands[] = {
	{ "USER", ST_AUTH,	1, 1, ARGS_LONG,	cmd_user },
	{ "PASS", ST_AUTH,	1, 1, ARGS_REST,	cmd_pass },
	{ "AUTH", ST_AUTH,	0, 2, ARGS_LONG,	cmd_auth },
	{ "CAPA", ST_AUTH | ST_TRANS, 0, 0, ARGS_WORDS,	cmd_capa },
	{ "QUIT", ST_AUTH | ST_TRANS, 0, 0, ARGS_WORDS,	cmd_quit },
	{ "STAT", ST_TRANS,	0, 0, ARGS_WORDS,	cmd_stat },
	{ "LIST", ST_TRANS,	0, 1, ARGS_WORDS,	cmd_list },
	{ "RETR", ST_TRANS,	1, 1, ARGS_WORDS,	cmd_retr },
	{ "DELE", ST_TRANS,	1, 1, ARGS_WORDS,	cmd_dele },
	{ "NOOP", ST_TRANS,	0, 0, ARGS_WORDS,	cmd_noop },
	{ "RSET", ST_TRANS,	0, 0, ARGS_WORDS,	cmd_rset },
	{ "TOP",  ST_TRANS,	2, 2, ARGS_WORDS,	cmd_top },
	{ "UIDL", ST_TRANS,	0, 1, ARGS_WORDS,	cmd_uidl },
};

static void	bad_command(struct session *, const char *);
static void	reply(struct session *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

/* "1 message", "2 messages". */
static const char *
plural(size_t n)
{
	return n == 1 ? "" : "s";
}

/* One status line; replies never echo client bytes. */
static void
reply(struct session *s, const char *fmt, ...)
{
	char	buf[512];	/* RFC 1939 section 3: 512 with CRLF */
	va_list	ap;
	int	n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 3)
		n = sizeof(buf) - 3;
	buf[n++] = '\r';
	buf[n++] = '\n';
	outbuf_put(&s->out, buf, (size_t)n);
}

/*
 * Decimal v at p, no NUL; returns the end.  The listings and the RETR
 * replies of a large maildrop print some 150,000 numbers: printf() was
 * a tenth of a pipelined download's CPU time outside the copying.
 */
static char *
put_u64(char *p, uint64_t v)
{
	char	digits[20];
	size_t	n = 0;

	do
		digits[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (n > 0)
		*p++ = digits[--n];
	return p;
}

/* One line of a LIST or UIDL listing: "N WORD\r\n" or "N SIZE\r\n". */
static void
put_listing(struct session *s, size_t i, const char *word, uint64_t size)
{
	char	line[24 + UIDL_BUFSIZE + 2], *p;

	p = put_u64(line, (uint64_t)i + 1);
	*p++ = ' ';
	p = word != NULL ? stpcpy(p, word) : put_u64(p, size);
	*p++ = '\r';
	*p++ = '\n';
	outbuf_put(&s->out, line, (size_t)(p - line));
}

/* One timer in every state: RFC 1939 section 3 exempts none. */
static int
timeout_ms(const struct session *s)
{
	return s->conf->timeout * 1000;
}

void
session_init(struct session *s, int in_fd, int out_fd,
    const struct session_config *conf)
{
	/*
	 * Not the buffers' bytes, which are written before they are read:
	 * zeroing them would touch 33 pages that a short session never
	 * uses, a page fault each (about 0.2 ms a login on a VM).
	 */
	memset(s, 0, offsetof(struct session, in));
	s->conf = conf;
	s->state = STATE_AUTHORIZATION;
	s->end = END_NONE;
	s->started = time(NULL);
	inbuf_init(&s->in, in_fd);
	outbuf_init(&s->out, out_fd, conf->timeout * 1000);
}

void
session_greet(struct session *s)
{
	reply(s, "+OK POP3 server ready");
}

/*
 * Message numbers: the one place where the wire's 1..n becomes an index
 * 0..n-1.  Digits only (strtonum alone would take "+1" and " 1"), in
 * range, and not marked deleted (RFC 1939 section 5; the wording of its
 * DELE example).
 */
static int
message_index(struct session *s, const char *arg, size_t *idx)
{
	const char	*errstr;
	long long	 n;
	size_t		 count = maildrop_count(s->md);

	if (arg[strspn(arg, "0123456789")] != '\0') {
		reply(s, "-ERR invalid message number");
		return -1;
	}
	/* An empty maildrop makes the range empty: every number fails. */
	n = strtonum(arg, 1, (long long)count, &errstr);
	if (errstr != NULL) {
		reply(s, "-ERR no such message");
		return -1;
	}
	if (maildrop_is_deleted(s->md, (size_t)n - 1)) {
		reply(s, "-ERR message %lld already deleted", n);
		return -1;
	}
	*idx = (size_t)n - 1;
	return 0;
}

/*
 * -c, and neither loopback nor -s.  Logged once, so the admin sees why
 * and a client cannot flood the log; a bad command, so that a client
 * repeating it is cut off.
 */
static int
refuse_cleartext(struct session *s)
{
	if (!s->cleartext_logged)
		log_info("cleartext login refused (-c): the client is not on "
		    "loopback and the transport is not marked secure (-s)");
	s->cleartext_logged = 1;
	bad_command(s, "[AUTH] Cleartext login refused on this connection; "
	    "use TLS");
	return -1;
}

static int
cmd_user(struct session *s, int argc, char **argv)
{
	(void)argc;
	if (!s->conf->cleartext_ok)
		return refuse_cleartext(s);
	if (strlcpy(s->user, argv[0], sizeof(s->user)) >= sizeof(s->user)) {
		s->have_user = 0;
		reply(s, "-ERR user name too long");
		return -1;
	}
	s->have_user = 1;
	/* Never -ERR for an unknown name: that would tell (RFC 1939 s13). */
	reply(s, "+OK");
	return 0;
}

void
session_login_refused(struct session *s, enum login_verdict v)
{
	if (v == LOGIN_SYSTEMP) {
		reply(s, "-ERR [SYS/TEMP] Authentication is unavailable; "
		    "try again later");
		return;
	}
	if (++s->auth_failures >= MAX_AUTH_FAILURES) {
		reply(s, "-ERR [AUTH] Authentication failed; too many "
		    "failures, closing");
		s->end = END_AUTH_FAILURES;
	} else if (v == LOGIN_EXPIRED)
		reply(s, "-ERR [AUTH] Password expired; change it before "
		    "logging in");
	else
		reply(s, "-ERR [AUTH] Authentication failed");
}

/* Credentials from USER/PASS and AUTH PLAIN meet here. */
static int
login(struct session *s, const char *user, const char *pass)
{
	enum login_verdict v;

	v = s->login(s, user, pass);
	if (v == LOGIN_STARTED)
		return s->state == STATE_TRANSACTION ? 0 : -1;
	if (v == LOGIN_HANDOFF) {
		s->end = END_HANDOFF;
		return 0;
	}
	session_login_refused(s, v);
	/* A failed login is counted apart, not as a bad command. */
	return v == LOGIN_SYSTEMP ? -1 : 0;
}

static int
cmd_pass(struct session *s, int argc, char **argv)
{
	int	rv;

	(void)argc;
	if (!s->have_user) {
		reply(s, "-ERR give USER first");
		return -1;
	}
	rv = login(s, s->user, strlen(argv[0]) > PASS_MAX ? NULL : argv[0]);
	s->have_user = 0;
	return rv;
}

/*
 * Strict base64 (RFC 4648 section 4), as SASL wants it: whole quartets,
 * "=" only as the last one or two bytes, nothing outside the alphabet,
 * the bits that padding leaves over zero.  Returns the octets written
 * to out (at most outlen), or -1.
 */
static int
base64_decode(const char *in, unsigned char *out, size_t outlen)
{
	static const char	 alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				    "abcdefghijklmnopqrstuvwxyz0123456789+/";
	const char		*c;
	size_t			 len = strlen(in), data, i, n = 0;
	uint32_t		 quad;
	int			 k, bytes;

	if (len % 4 != 0)
		return -1;
	data = len;
	while (data > 0 && len - data < 2 && in[data - 1] == '=')
		data--;
	for (i = 0; i < len; i += 4) {
		quad = 0;
		for (k = 0; k < 4; k++) {
			quad <<= 6;
			if (i + k >= data)
				continue;
			if ((c = strchr(alphabet, in[i + k])) == NULL)
				return -1;
			quad |= (uint32_t)(c - alphabet);
		}
		bytes = i + 4 < len ? 3 : 3 - (int)(len - data);
		if (n + (size_t)bytes > outlen ||
		    (quad & (0xffffffu >> (8 * bytes))) != 0)
			return -1;
		for (k = 0; k < bytes; k++)
			out[n++] = (unsigned char)(quad >> (16 - 8 * k));
	}
	return (int)n;
}

/*
 * RFC 4616: [authzid] NUL authcid NUL passwd.  We log in as authcid; an
 * authzid, if given, must name the same user (no proxy logins).
 */
static int
plain_login(struct session *s, const char *b64)
{
	unsigned char	 buf[AUTH_LINE_MAX];
	const char	*authzid, *authcid, *pass;
	size_t		 zlen, clen, plen;
	int		 n, rv = -1;

	n = base64_decode(b64, buf, sizeof(buf) - 1);
	if (n < 0) {
		reply(s, "-ERR invalid base64 in AUTH PLAIN");
		goto done;
	}
	buf[n] = '\0';
	authzid = (const char *)buf;
	zlen = strnlen(authzid, (size_t)n);
	if (zlen + 1 >= (size_t)n)
		goto malformed;
	authcid = authzid + zlen + 1;
	clen = strnlen(authcid, (size_t)n - zlen - 1);
	if (zlen + clen + 2 > (size_t)n)
		goto malformed;
	pass = authcid + clen + 1;
	plen = (size_t)n - zlen - clen - 2;
	if (clen == 0 || plen == 0 || strlen(pass) != plen)
		goto malformed;
	/*
	 * Hopeless credentials fail as a wrong password does: one answer,
	 * after the same delay, counted, so that the reply tells a guesser
	 * nothing and gives no free tries.
	 */
	if (clen > USER_MAX || plen > PASS_MAX ||
	    (zlen != 0 && strcmp(authzid, authcid) != 0))
		pass = NULL;
	rv = login(s, clen > USER_MAX ? "" : authcid, pass);
	goto done;
malformed:
	reply(s, "-ERR malformed AUTH PLAIN response");
done:
	explicit_bzero(buf, sizeof(buf));
	return rv;
}

/*
 * Why output failed: a client that has gone (EPIPE, ECONNRESET) closed
 * the connection, which ends a session as well as QUIT (pop3d(8)).
 */
static enum session_end
output_end(const struct session *s)
{
	switch (s->out.error) {
	case EPIPE:
	case ECONNRESET:
		return END_EOF;
	case ETIMEDOUT:
		return END_TIMEOUT;	/* it stopped reading */
	case EINTR:
		return END_SIGNAL;
	default:
		return END_IOERR;
	}
}

/* RFC 5034 section 4: "+ " with an empty challenge, then one line. */
static int
plain_continue(struct session *s)
{
	char			line[AUTH_LINE_MAX + 1];
	enum line_status	st;
	int			rv;

	reply(s, "+ ");
	if (outbuf_flush(&s->out) == -1) {
		s->end = output_end(s);
		return 0;
	}
	st = inbuf_getline(&s->in, line, AUTH_LINE_MAX, timeout_ms(s));
	switch (st) {
	case LINE_OK:
		break;
	case LINE_TOO_LONG:
	case LINE_BAD_BYTE:
		reply(s, "-ERR bad AUTH response line");
		return -1;
	case LINE_TIMEOUT:
		s->end = END_TIMEOUT;
		return 0;
	case LINE_EOF:
		s->end = END_EOF;
		return 0;
	case LINE_INTR:
		s->end = END_SIGNAL;
		return 0;
	default:
		s->end = END_IOERR;
		return 0;
	}
	if (strcmp(line, "*") == 0)
		rv = (reply(s, "-ERR authentication cancelled"), -1);
	else
		rv = plain_login(s, strcmp(line, "=") == 0 ? "" : line);
	explicit_bzero(line, sizeof(line));
	return rv;
}

static int
cmd_auth(struct session *s, int argc, char **argv)
{
	if (argc == 0) {	/* the RFC 1734 mechanism list */
		reply(s, "+OK");
		if (s->conf->cleartext_ok)
			reply(s, "PLAIN");
		reply(s, ".");
		return 0;
	}
	if (strcasecmp(argv[0], "PLAIN") != 0) {
		reply(s, "-ERR unsupported authentication mechanism");
		return -1;
	}
	if (!s->conf->cleartext_ok)
		return refuse_cleartext(s);
	s->have_user = 0;
	if (argc == 1)
		return plain_continue(s);
	return plain_login(s, strcmp(argv[1], "=") == 0 ? "" : argv[1]);
}

/* RFC 2449 section 5: truthful, and the same before and after login. */
static int
cmd_capa(struct session *s, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	reply(s, "+OK Capability list follows");
	reply(s, "TOP");
	reply(s, "UIDL");
	reply(s, "RESP-CODES");
	reply(s, "AUTH-RESP-CODE");
	reply(s, "PIPELINING");
	if (s->conf->cleartext_ok) {
		reply(s, "USER");
		reply(s, "SASL PLAIN");
	}
	reply(s, ".");
	return 0;
}

/* RFC 1939 section 6: only QUIT from TRANSACTION enters UPDATE. */
static int
cmd_quit(struct session *s, int argc, char **argv)
{
	char		why[512];
	size_t		count;
	uint64_t	octets;

	(void)argc;
	(void)argv;
	s->end = END_QUIT;
	if (s->state == STATE_AUTHORIZATION) {
		reply(s, "+OK POP3 server signing off");
		return 0;
	}
	s->state = STATE_UPDATE;
	setproctitle("%s [update]", s->user_vis);
	if (maildrop_commit(s->md, why, sizeof(why)) != MD_OK) {
		log_warnx("user %s: commit failed: %s", s->user_vis, why);
		s->end = END_COMMIT_FAILED;
		/*
		 * Usually nothing was removed (the journal undid it), but a
		 * failed fsync after the truncation leaves the removal done
		 * and unconfirmed: claim neither.
		 */
		reply(s, "-ERR [SYS/TEMP] Could not finish removing the "
		    "deleted messages");
		return 0;
	}
	maildrop_stat(s->md, &count, &octets);
	reply(s, "+OK POP3 server signing off (%zu message%s left)", count,
	    plural(count));
	return 0;
}

static int
cmd_stat(struct session *s, int argc, char **argv)
{
	size_t		count;
	uint64_t	octets;

	(void)argc;
	(void)argv;
	maildrop_stat(s->md, &count, &octets);
	reply(s, "+OK %zu %" PRIu64, count, octets);
	return 0;
}

static int
cmd_list(struct session *s, int argc, char **argv)
{
	size_t		i, count;
	uint64_t	octets;

	if (argc == 1) {
		if (message_index(s, argv[0], &i) == -1)
			return -1;
		reply(s, "+OK %zu %" PRIu64, i + 1, maildrop_size(s->md, i));
		return 0;
	}
	maildrop_stat(s->md, &count, &octets);
	reply(s, "+OK %zu message%s (%" PRIu64 " octets)", count,
	    plural(count), octets);
	count = maildrop_count(s->md);
	for (i = 0; i < count; i++)
		if (!maildrop_is_deleted(s->md, i))
			put_listing(s, i, NULL, maildrop_size(s->md, i));
	reply(s, ".");
	return 0;
}

/*
 * The log counts a download once every byte of it has been written
 * (with pipelining, replies wait in the buffer): the ones buffered
 * since, up to unsent_mark, count when the writes reach it.  A session
 * that ends before then did not deliver them.
 */
static void
count_written(struct session *s)
{
	if (s->out.written < s->unsent_mark)
		return;
	s->retrieved += s->unsent_retr;
	s->retrieved_octets += s->unsent_retr_octets;
	s->topped += s->unsent_top;
	s->topped_octets += s->unsent_top_octets;
	s->unsent_retr = s->unsent_top = 0;
	s->unsent_retr_octets = s->unsent_top_octets = 0;
}

/*
 * A multi-line message reply (RETR, TOP); the session ends if it breaks
 * off.  Its octets as sent (byte-stuffed, without the final ".") are
 * counted for the log.
 */
static void
send_message(struct session *s, size_t i, long lines)
{
	uint64_t	start = s->out.sent, octets;

	if (maildrop_send(s->md, i, lines, &s->out) == -1) {
		if ((s->end = output_end(s)) == END_IOERR)
			log_warnx("user %s: message %zu could not be sent",
			    s->user_vis, i + 1);
		return;
	}
	octets = s->out.sent - start;
	reply(s, ".");
	count_written(s);
	if (lines < 0) {
		s->unsent_retr++;
		s->unsent_retr_octets += octets;
	} else {
		s->unsent_top++;
		s->unsent_top_octets += octets;
	}
	s->unsent_mark = s->out.sent;
}

static int
cmd_retr(struct session *s, int argc, char **argv)
{
	char		line[48], *p;
	size_t		i;
	uint64_t	size;

	(void)argc;
	if (message_index(s, argv[0], &i) == -1)
		return -1;
	size = maildrop_size(s->md, i);
	/* reply(s, "+OK %" PRIu64 " octets", size), once per message */
	p = put_u64(stpcpy(line, "+OK "), size);
	p = stpcpy(p, " octets\r\n");
	outbuf_put(&s->out, line, (size_t)(p - line));
	send_message(s, i, -1);
	return 0;
}

static int
cmd_top(struct session *s, int argc, char **argv)
{
	const char	*errstr;
	long long	 lines;
	size_t		 i;

	(void)argc;
	if (message_index(s, argv[0], &i) == -1)
		return -1;
	if (argv[1][strspn(argv[1], "0123456789")] != '\0') {
		reply(s, "-ERR invalid number of lines");
		return -1;
	}
	/* More lines than any message has: all of it (RFC 1939 section 7). */
	lines = strtonum(argv[1], 0, LONG_MAX, &errstr);
	if (errstr != NULL)
		lines = LONG_MAX;
	reply(s, "+OK top of message follows");
	send_message(s, i, (long)lines);
	return 0;
}

static int
cmd_dele(struct session *s, int argc, char **argv)
{
	size_t	i;

	(void)argc;
	if (message_index(s, argv[0], &i) == -1)
		return -1;
	maildrop_delete(s->md, i);
	s->deleted++;
	s->deleted_octets += maildrop_size(s->md, i);
	reply(s, "+OK message %zu deleted", i + 1);
	return 0;
}

static int
cmd_noop(struct session *s, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	reply(s, "+OK");
	return 0;
}

/* After PASS and RSET (RFC 1939 gives this form as an example). */
static void
reply_maildrop_size(struct session *s)
{
	size_t		count;
	uint64_t	octets;

	maildrop_stat(s->md, &count, &octets);
	reply(s, "+OK maildrop has %zu message%s (%" PRIu64 " octets)",
	    count, plural(count), octets);
}

static int
cmd_rset(struct session *s, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	maildrop_reset(s->md);
	s->deleted = 0;
	s->deleted_octets = 0;
	reply_maildrop_size(s);
	return 0;
}

static int
cmd_uidl(struct session *s, int argc, char **argv)
{
	char	uidl[UIDL_BUFSIZE];
	size_t	i, count;

	if (argc == 1) {
		if (message_index(s, argv[0], &i) == -1)
			return -1;
		reply(s, "+OK %zu %s", i + 1, maildrop_uidl(s->md, i, uidl));
		return 0;
	}
	reply(s, "+OK unique-id listing follows");
	count = maildrop_count(s->md);
	for (i = 0; i < count; i++)
		if (!maildrop_is_deleted(s->md, i))
			put_listing(s, i, maildrop_uidl(s->md, i, uidl), 0);
	reply(s, ".");
	return 0;
}

int
session_start_transaction(struct session *s, const char *user,
    const char *path, int journal_fd)
{
	char		why[512];
	const char	*safe = s->user_vis;

	strlcpy(s->user, user, sizeof(s->user));
	log_safe(s->user_vis, sizeof(s->user_vis), user, strlen(user));
	switch (maildrop_open(&s->md, path, journal_fd, why, sizeof(why))) {
	case MD_OK:
		break;
	case MD_INUSE:
		log_info("user %s: maildrop in use (IN-USE): %s", safe, why);
		reply(s, "-ERR [IN-USE] Maildrop is locked by another session "
		    "or a delivery; try again later");
		s->end = END_INUSE;
		return -1;
	case MD_SYSPERM:
		log_warnx("user %s: cannot open maildrop: %s", safe, why);
		reply(s, "-ERR [SYS/PERM] Cannot open the maildrop; ask the "
		    "administrator");
		s->end = END_MAILDROP_ERROR;
		return -1;
	default:
		log_warnx("user %s: cannot open maildrop: %s", safe, why);
		reply(s, "-ERR [SYS/TEMP] Cannot open the maildrop; try again "
		    "later");
		s->end = END_MAILDROP_ERROR;
		return -1;
	}
	s->state = STATE_TRANSACTION;
	setproctitle("%s [transaction]", safe);
	reply_maildrop_size(s);
	return 0;
}

static void
bad_command(struct session *s, const char *msg)
{
	if (++s->bad_commands >= MAX_BAD_COMMANDS) {
		reply(s, "-ERR too many bad commands, closing");
		s->end = END_BAD_COMMANDS;
	} else
		reply(s, "-ERR %s", msg);
}

static const struct command *
lookup(const char *keyword)
{
	size_t	i;

	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcasecmp(commands[i].name, keyword) == 0)
			return &commands[i];
	return NULL;
}

/*
 * RFC 1939 section 3: arguments are separated by single spaces and are
 * at most 40 characters.  Trailing spaces are forgiven, as Dovecot does
 * ("LIST 1 "): they cannot change what is meant; a password keeps its
 * own (ARGS_REST).  Returns the count, or -1 for a syntax error.
 */
static int
split_args(const struct command *cmd, char *rest, char **argv)
{
	int	argc = 0;
	char	*p;

	if (rest == NULL)
		return 0;
	if (cmd->policy == ARGS_REST) {
		argv[0] = rest;
		return *rest == '\0' ? -1 : 1;
	}
	p = rest + strlen(rest);
	while (p > rest && p[-1] == ' ')
		*--p = '\0';
	if (*rest == '\0')
		return 0;
	for (;;) {
		p = strsep(&rest, " ");
		if (*p == '\0' || argc == cmd->maxargs)
			return -1;
		if (cmd->policy == ARGS_WORDS && strlen(p) > ARG_MAX_LEN)
			return -1;
		argv[argc++] = p;
		if (rest == NULL)
			return argc;
	}
}

static void
dispatch(struct session *s, char *line)
{
	const struct command	*cmd;
	char			*argv[MAX_ARGS], *rest;
	int			 argc;

	rest = line;
	line = strsep(&rest, " ");
	if ((cmd = lookup(line)) == NULL) {
		bad_command(s, "unknown command");
		return;
	}
	if ((cmd->states & (1 << s->state)) == 0) {
		bad_command(s, s->state == STATE_AUTHORIZATION ?
		    "not logged in" : "command not valid in this state");
		return;
	}
	argc = split_args(cmd, rest, argv);
	if (argc < cmd->minargs || argc > cmd->maxargs) {
		bad_command(s, "syntax error");
		return;
	}
	/*
	 * The handler has answered.  Its -ERR is about the maildrop or the
	 * login ("no such message"), a normal reply (RFC 1939 section 5),
	 * not a bad command: a client retrying DELE over a stale listing
	 * must not be cut off and lose its deletions.
	 */
	if (cmd->handler(s, argc, argv) == 0)
		s->bad_commands = 0;
}

static int64_t
now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Wait for the next command line, for at most the inactivity timeout in
 * all, waking at least every LOCK_TOUCH_INTERVAL to keep the dot-lock
 * fresh (an MDA would otherwise break it as stale).
 */
static enum line_status
next_line(struct session *s, char *line)
{
	enum line_status st;
	int64_t		 deadline, left;
	int		 slice;

	if (s->md != NULL)
		maildrop_touch(s->md);
	/*
	 * Pipelined: the line is here, no clock to read for a deadline.
	 * Before login there is no lock to keep fresh: one wait.
	 */
	if (inbuf_has_line(&s->in) || s->md == NULL)
		return inbuf_getline(&s->in, line, CMD_LINE_MAX, timeout_ms(s));
	deadline = now_ms() + timeout_ms(s);
	for (;;) {
		left = deadline - now_ms();
		if (left <= 0)
			return LINE_TIMEOUT;
		slice = left > LOCK_TOUCH_INTERVAL * 1000 ?
		    LOCK_TOUCH_INTERVAL * 1000 : (int)left;
		st = inbuf_getline(&s->in, line, CMD_LINE_MAX, slice);
		if (st != LINE_TIMEOUT)
			return st;
		if (s->md != NULL)
			maildrop_touch(s->md);
	}
}

enum session_end
session_run(struct session *s)
{
	char	line[CMD_LINE_MAX + 1];

	while (s->end == END_NONE) {
		/* Pipelining: answer a burst of commands in one write. */
		if (!inbuf_has_line(&s->in) && outbuf_flush(&s->out) == -1) {
			s->end = output_end(s);
			break;
		}
		if (session_signalled) {
			s->end = END_SIGNAL;
			break;
		}
		switch (next_line(s, line)) {
		case LINE_OK:
			dispatch(s, line);
			break;
		case LINE_TOO_LONG:
			bad_command(s, "line too long");
			break;
		case LINE_BAD_BYTE:
			bad_command(s, "control characters in command");
			break;
		case LINE_EOF:
			s->end = END_EOF;
			break;
		case LINE_TIMEOUT:
			s->end = END_TIMEOUT;	/* RFC 1939 s3: no reply */
			break;
		case LINE_INTR:
			break;
		case LINE_ERROR:
			s->end = END_IOERR;
			break;
		}
		explicit_bzero(line, sizeof(line));
		/* Not over an end the command set: a committed QUIT stays. */
		if (s->out.error && s->end == END_NONE)
			s->end = output_end(s);
	}
	if (s->end != END_HANDOFF)
		outbuf_flush(&s->out);
	return s->end;
}

const char *
session_end_name(enum session_end end)
{
	switch (end) {
	case END_NONE:		return "running";
	case END_QUIT:		return "quit";
	case END_COMMIT_FAILED:	return "quit, commit failed";
	case END_EOF:		return "client closed the connection";
	case END_TIMEOUT:	return "timeout";
	case END_IOERR:		return "I/O error";
	case END_SIGNAL:	return "killed by a signal";
	case END_BAD_COMMANDS:	return "too many bad commands";
	case END_AUTH_FAILURES:	return "too many failed logins";
	case END_HANDOFF:	return "logged in";
	case END_INUSE:		return "maildrop in use";
	case END_MAILDROP_ERROR: return "maildrop error";
	}
	return "unknown";
}

/* The one final log line of a session (STYLE: popa3d do_pop_trans). */
void
session_finish(struct session *s)
{
	if (s->end != END_HANDOFF)
		outbuf_flush(&s->out);
	count_written(s);
	if (s->state == STATE_AUTHORIZATION) {
		if (s->end != END_HANDOFF && s->end != END_INUSE &&
		    s->end != END_MAILDROP_ERROR)
			log_info("session ended before login: %s",
			    session_end_name(s->end));
	} else {
		log_info("user %s: %s; retrieved %zu (%" PRIu64 " octets), "
		    "top %zu (%" PRIu64 " octets), deleted %zu (%" PRIu64
		    " octets), %lld s", s->user_vis,
		    session_end_name(s->end), s->retrieved, s->retrieved_octets,
		    s->topped, s->topped_octets,
		    s->end == END_QUIT ? s->deleted : 0,
		    s->end == END_QUIT ? s->deleted_octets : 0,
		    (long long)(time(NULL) - s->started));
	}
	if (s->md != NULL) {
		maildrop_close(s->md);
		s->md = NULL;
	}
}
