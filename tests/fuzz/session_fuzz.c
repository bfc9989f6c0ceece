/*
 * libFuzzer target: the input is what a client sends to the session
 * engine (session.c, iobuf.c, maildrop.c), in this process, over a
 * socketpair, with a maildrop on a temp file.  Its first byte picks one
 * of four fixed spools (low two bits), the rest is the client's bytes,
 * followed by EOF.
 *
 * The replies go to a memfd (a write never blocks, however much RETR
 * sends) and are then checked against the input, line by line, as a
 * strict client would: every complete command line gets exactly one
 * reply, in order (RFC 2449 section 6.6), until a reply ends the
 * session; each reply is "+OK" or "-ERR" in at most 512 octets, and a
 * multi-line one is dot-stuffed and ends with ".".  The contents are
 * checked against a model of the fixed spool: STAT, LIST and UIDL
 * agree, RETR sends exactly the message (its LIST size before
 * stuffing), TOP exactly its headers and that many body lines, UIDLs
 * are 1-70 characters of 0x21-0x7E and unique.  Afterwards the spool
 * is unchanged, or, after QUIT from TRANSACTION, holds exactly the
 * messages not deleted; no lock file and no journal are left.
 *
 * FUZZ_DUMP=1 in the environment prints the replies of each input.
 *
 * Logins: alice/secret opens the maildrop; "expired" and "temp" (any
 * password) get the other verdicts of the login hook; others fail.
 */
#include <sys/mman.h>
#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzzlib.h"
#include "log.h"
#include "maildrop.h"
#include "session.h"

/* Longest input: it is written into the socket before the session runs. */
#define FUZZ_MAX_INPUT	65536
#define MAX_MSGS	8

/* One message: its From_ line, its text as indexed, its separator. */
struct fmsg {
	const char	*from;
	const char	*text;
	const char	*sep;
};

struct fixture {
	const char		*name;
	int			 pseudo;	/* msgs[0] is not listed */
	size_t			 n;
	const struct fmsg	*msgs;
};

#define FROM_A	"From alice@example.org Sat Nov 21 10:00:00 2026\n"
#define TEXT_A	"Subject: one\nX-Status: A\n\nHello\n.\n..two dots\n" \
		".dot line\n>From the past\n\n"

/* LF: dot lines, a headers-only message, a twin, no final newline. */
static const struct fmsg lf_msgs[] = {
	{ FROM_A, TEXT_A, "\n" },
	{ "From bob@example.org Sat Nov 21 10:01:00 2026\n",
	  "Subject: headers only\nContent-Length: 99\n", "\n" },
	{ "From carol@example.org Sat Nov 21 10:02:00 2026\n",
	  "Subject: empty body\n\n", "\n" },
	{ FROM_A, TEXT_A, "\n" },
	{ "From dave@example.org Sat Nov 21 10:03:00 2026\n",
	  "Subject: last\n\n.\nno final newline", "" },
};

/* CRLF and mixed line ends, a lone CR, a last line ending in CR. */
static const struct fmsg crlf_msgs[] = {
	{ "From alice@example.org Sat Nov 21 10:00:00 2026\r\n",
	  "Subject: crlf\r\n\r\nline\r\n.\r\nlone\rCR\r\n", "\r\n" },
	{ "From bob@example.org Sat Nov 21 10:01:00 2026\n",
	  "Subject: mixed\r\n\nbare\ncrlf\r\n..\n", "\n" },
	{ "From carol@example.org Sat Nov 21 10:02:00 2026\r\n",
	  "Subject: last\r\n\r\nends in CR\r", "" },
};

/* UW-IMAP's folder pseudo-message first; a trailing empty line. */
static const struct fmsg pseudo_msgs[] = {
	{ "From MAILER-DAEMON Sat Nov 21 09:00:00 2026\n",
	  "Date: Sat, 21 Nov 2026 09:00:00 +0000\n"
	  "From: Mail System Internal Data <MAILER-DAEMON@example.org>\n"
	  "Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
	  "X-IMAP: 1234567890 0000000002\n\n"
	  "This text is part of the internal format of your mail folder.\n",
	  "\n" },
	{ "From alice@example.org Sat Nov 21 10:00:00 2026\n",
	  "Subject: real one\n\nbody\n", "\n" },
	{ "From bob@example.org Sat Nov 21 10:01:00 2026\n",
	  "Subject: real two\n\n.\n", "\n" },
};

static const struct fixture fixtures[4] = {
	{ "lf", 0, sizeof(lf_msgs) / sizeof(lf_msgs[0]), lf_msgs },
	{ "crlf", 0, sizeof(crlf_msgs) / sizeof(crlf_msgs[0]), crlf_msgs },
	{ "pseudo", 1, sizeof(pseudo_msgs) / sizeof(pseudo_msgs[0]),
	  pseudo_msgs },
	{ "empty", 0, 0, NULL },
};

/* A listed message as the model knows it. */
struct mmsg {
	struct bytes	 wire;		/* as RETR sends it, unstuffed */
	size_t		 hdr_len;	/* TOP n 0: headers and blank line */
	const char	*body;		/* the rest of wire */
	size_t		 body_len;
	const struct fmsg *src;
};

struct model {
	const struct fixture *fx;
	struct mmsg	 msgs[MAX_MSGS];
	size_t		 n;			/* listed */
	int		 deleted[MAX_MSGS];
	char		 uidl[MAX_MSGS][72];
	int		 logged_in;
	int		 committed;		/* QUIT in TRANSACTION: +OK */
	int		 ended;			/* a reply ended the session */
};

static char		 dir[256], mbox[300], lockpath[310], journal[300];
static int		 journal_fd = -1, out_fd = -1;
static struct model	 model;
static struct session	 sess;
static struct bytes	 outb, filebuf, text, expect;

/* The text as sent: every LF ends a line as CRLF, a CR before it stays. */
static void
to_wire(const char *t, struct mmsg *m)
{
	const char	*p = t, *nl;
	size_t		 len;
	int		 in_hdr = 1;

	m->wire.len = 0;
	bytes_add(&m->wire, "", 0);
	m->hdr_len = (size_t)-1;
	while (*p != '\0') {
		nl = strchr(p, '\n');
		len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		bytes_add(&m->wire, p, len);
		/* A last line without LF is ended with CRLF all the same. */
		if (nl != NULL && len > 0 && p[len - 1] == '\r')
			bytes_add(&m->wire, "\n", 1);
		else
			bytes_add(&m->wire, "\r\n", 2);
		/* An empty line ("\n" or "\r\n") ends the headers. */
		if (in_hdr && nl != NULL && (len == 0 ||
		    (len == 1 && p[0] == '\r'))) {
			in_hdr = 0;
			m->hdr_len = m->wire.len;
		}
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	if (m->hdr_len == (size_t)-1)
		m->hdr_len = m->wire.len;
	m->body = m->wire.p + m->hdr_len;
	m->body_len = m->wire.len - m->hdr_len;
}

static void
spool_of(const struct fixture *fx, const int *deleted, struct bytes *b)
{
	size_t	i;

	b->len = 0;
	bytes_add(b, "", 0);
	for (i = 0; i < fx->n; i++) {
		if (deleted != NULL && i >= (size_t)fx->pseudo &&
		    deleted[i - (size_t)fx->pseudo])
			continue;
		bytes_add(b, fx->msgs[i].from, strlen(fx->msgs[i].from));
		bytes_add(b, fx->msgs[i].text, strlen(fx->msgs[i].text));
		bytes_add(b, fx->msgs[i].sep, strlen(fx->msgs[i].sep));
	}
}

static enum login_verdict
fuzz_login(struct session *s, const char *user, const char *pass)
{
	if (strcmp(user, "expired") == 0)
		return LOGIN_EXPIRED;
	if (strcmp(user, "temp") == 0)
		return LOGIN_SYSTEMP;
	/* NULL: hopeless credentials, failed unasked (see session.h). */
	if (pass == NULL || strcmp(user, "alice") != 0 ||
	    strcmp(pass, "secret") != 0)
		return LOGIN_FAILED;
	session_start_transaction(s, user, mbox, dup(journal_fd));
	return LOGIN_STARTED;
}

static void
cleanup(void)
{
	unlink(mbox);
	unlink(lockpath);
	unlink(journal);
	rmdir(dir);
}

int	LLVMFuzzerInitialize(int *, char ***);
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_init(0);
	fuzz_tmpdir(dir, sizeof(dir));
	snprintf(mbox, sizeof(mbox), "%s/alice", dir);
	snprintf(lockpath, sizeof(lockpath), "%s.lock", mbox);
	snprintf(journal, sizeof(journal), "%s/journal", dir);
	journal_fd = open(journal, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	out_fd = memfd_create("pop3d-fuzz-out", MFD_CLOEXEC);
	if (journal_fd == -1 || out_fd == -1)
		abort();
	if (atexit(cleanup) != 0)
		abort();
	return 0;
}

/* The input as the server's line reader sees it (iobuf.c). */
struct reader {
	const char	*p, *end;
};

enum rline {
	RL_OK,
	RL_BAD,		/* too long or a control byte: one -ERR */
	RL_EOF		/* no complete line left */
};

static enum rline
next_line(struct reader *r, size_t max, char *line)
{
	const char	*nl;
	size_t		 len, i;

	nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
	if (nl == NULL)
		return RL_EOF;
	len = (size_t)(nl - r->p);
	if (len > 0 && r->p[len - 1] == '\r')
		len--;
	memcpy(line, r->p, len > max ? 0 : len);
	r->p = nl + 1;
	if (len > max)
		return RL_BAD;
	for (i = 0; i < len; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			return RL_BAD;
	line[len] = '\0';
	return RL_OK;
}

/* The replies, as a client reads them. */
struct replies {
	const char	*p, *end;
};

/* One status line without its CRLF into line; 0 at the end of output. */
static int
status_line(struct replies *o, char *line, size_t linesz)
{
	const char	*crlf;
	size_t		 len;

	if (o->p == o->end)
		return 0;
	crlf = memmem(o->p, (size_t)(o->end - o->p), "\r\n", 2);
	if (crlf == NULL)
		breach("reply without CRLF");
	len = (size_t)(crlf - o->p);
	if (len + 2 > 512)
		breach("status line of %zu octets", len + 2);
	if (memchr(o->p, '\n', len) != NULL)
		breach("bare LF in a status line");
	if (len >= linesz)
		abort();
	memcpy(line, o->p, len);
	line[len] = '\0';
	o->p = crlf + 2;
	if (strcmp(line, "+ ") == 0)
		return 1;
	if (!(strncmp(line, "+OK", 3) == 0 && (line[3] == '\0' ||
	    line[3] == ' ')) && !(strncmp(line, "-ERR", 4) == 0 &&
	    (line[4] == '\0' || line[4] == ' ')))
		breach("reply neither +OK nor -ERR: \"%s\"", line);
	return 1;
}

/* A multi-line body, unstuffed into text. */
static void
body(struct replies *o, const char *what)
{
	size_t	used;

	used = unstuff(o->p, (size_t)(o->end - o->p), &text, what);
	if (used == 0)
		breach("%s: multi-line reply not terminated", what);
	o->p += used;
}

static size_t
count_listed(const struct model *m, uint64_t *octets)
{
	size_t	i, n = 0;

	*octets = 0;
	for (i = 0; i < m->n; i++)
		if (!m->deleted[i]) {
			n++;
			*octets += m->msgs[i].wire.len;
		}
	return n;
}

/* A message number the server accepted: in range, not deleted. */
static size_t
msgno(const struct model *m, const char *arg, const char *what)
{
	unsigned long	n;
	char		*end;

	if (arg == NULL)
		breach("%s: +OK without a message number", what);
	n = strtoul(arg, &end, 10);
	if (n < 1 || n > m->n || (*end != '\0' && *end != ' '))
		breach("%s: +OK for message \"%s\" of %zu", what, arg, m->n);
	if (m->deleted[n - 1])
		breach("%s: +OK for deleted message %lu", what, n);
	return n - 1;
}

static void
check_uidl(struct model *m, size_t i, const char *u)
{
	size_t	j;

	if (!uidl_valid(u, strlen(u)))
		breach("UIDL of %zu malformed: \"%s\"", i + 1, u);
	if (m->uidl[i][0] != '\0' && strcmp(m->uidl[i], u) != 0)
		breach("UIDL of %zu changed in a session", i + 1);
	for (j = 0; j < m->n; j++)
		if (j != i && strcmp(m->uidl[j], u) == 0)
			breach("UIDL %s of %zu and %zu", u, i + 1, j + 1);
	snprintf(m->uidl[i], sizeof(m->uidl[i]), "%s", u);
}

static void
check_stat_line(const struct model *m, const char *line, const char *fmt,
    const char *what)
{
	char		want[128];
	size_t		n;
	uint64_t	o;

	n = count_listed(m, &o);
	/* The formats are ours; only numbers vary. */
	if (strcmp(fmt, "stat") == 0)
		snprintf(want, sizeof(want), "+OK %zu %llu", n,
		    (unsigned long long)o);
	else if (strcmp(fmt, "list") == 0)
		snprintf(want, sizeof(want), "+OK %zu message%s (%llu "
		    "octets)", n, n == 1 ? "" : "s", (unsigned long long)o);
	else
		snprintf(want, sizeof(want), "+OK maildrop has %zu message%s "
		    "(%llu octets)", n, n == 1 ? "" : "s",
		    (unsigned long long)o);
	if (strcmp(line, want) != 0)
		breach("%s: \"%s\", model says \"%s\"", what, line, want);
}

static void
reply_list(struct model *m, const char *arg, const char *line,
    struct replies *o)
{
	char	want[64];
	size_t	i;

	if (arg != NULL) {
		i = msgno(m, arg, "LIST n");
		snprintf(want, sizeof(want), "+OK %zu %zu", i + 1,
		    m->msgs[i].wire.len);
		if (strcmp(line, want) != 0)
			breach("LIST %s: \"%s\", want \"%s\"", arg, line, want);
		return;
	}
	check_stat_line(m, line, "list", "LIST");
	body(o, "LIST");
	expect.len = 0;
	bytes_add(&expect, "", 0);
	for (i = 0; i < m->n; i++)
		if (!m->deleted[i]) {
			snprintf(want, sizeof(want), "%zu %zu\r\n", i + 1,
			    m->msgs[i].wire.len);
			bytes_add(&expect, want, strlen(want));
		}
	if (text.len != expect.len || memcmp(text.p, expect.p, text.len) != 0)
		breach("LIST scan listing differs from the model");
}

static void
reply_uidl(struct model *m, const char *arg, const char *line,
    struct replies *o)
{
	char		 u[128], *sp;
	const char	*p;
	size_t		 i, next = 0;
	unsigned long	 n;

	if (arg != NULL) {
		i = msgno(m, arg, "UIDL n");
		snprintf(u, sizeof(u), "+OK %zu ", i + 1);
		if (strncmp(line, u, strlen(u)) != 0)
			breach("UIDL %s: \"%s\"", arg, line);
		check_uidl(m, i, line + strlen(u));
		return;
	}
	body(o, "UIDL");
	for (p = text.p; *p != '\0'; p = strstr(p, "\r\n") + 2) {
		n = strtoul(p, &sp, 10);
		if (*sp != ' ' || n < 1 || n > m->n || m->deleted[n - 1] ||
		    n - 1 < next)
			breach("UIDL listing: bad line");
		while (next < n - 1)
			if (!m->deleted[next++])
				breach("UIDL listing skips %zu", next);
		next = n;
		i = (size_t)(strstr(sp, "\r\n") - sp - 1);
		if (i >= sizeof(u))
			breach("UIDL listing: id of %zu octets", i);
		memcpy(u, sp + 1, i);
		u[i] = '\0';
		check_uidl(m, n - 1, u);
	}
	while (next < m->n)
		if (!m->deleted[next++])
			breach("UIDL listing omits %zu", next);
}

static void
reply_retr(struct model *m, const char *arg, const char *line,
    struct replies *o)
{
	char	want[64];
	size_t	i = msgno(m, arg, "RETR");

	snprintf(want, sizeof(want), "+OK %zu octets", m->msgs[i].wire.len);
	if (strcmp(line, want) != 0)
		breach("RETR %zu: \"%s\", want \"%s\"", i + 1, line, want);
	body(o, "RETR");
	if (text.len != m->msgs[i].wire.len ||
	    memcmp(text.p, m->msgs[i].wire.p, text.len) != 0)
		breach("RETR %zu: %zu octets after unstuffing, not the "
		    "message's %zu", i + 1, text.len, m->msgs[i].wire.len);
}

static void
reply_top(struct model *m, const char *args, struct replies *o)
{
	const struct mmsg	*mm;
	const char		*p, *nl, *sp;
	unsigned long long	 lines;
	size_t			 i;

	if (args == NULL || (sp = strchr(args, ' ')) == NULL)
		breach("TOP: +OK without arguments");
	i = msgno(m, args, "TOP");
	mm = &m->msgs[i];
	lines = strtoull(sp + 1, NULL, 10);
	expect.len = 0;
	bytes_add(&expect, mm->wire.p, mm->hdr_len);
	for (p = mm->body; lines > 0 && p < mm->body + mm->body_len;
	    lines--) {
		nl = strchr(p, '\n');
		bytes_add(&expect, p, (size_t)(nl + 1 - p));
		p = nl + 1;
	}
	body(o, "TOP");
	if (text.len != expect.len || memcmp(text.p, expect.p, text.len) != 0)
		breach("TOP %s: not the headers and that many lines", args);
}

static void
reply_quit(struct model *m, const char *line)
{
	char		want[96];
	size_t		n;
	uint64_t	octets;

	m->ended = 1;
	if (!m->logged_in) {
		if (strcmp(line, "+OK POP3 server signing off") != 0)
			breach("QUIT before login: \"%s\"", line);
		return;
	}
	n = count_listed(m, &octets);
	snprintf(want, sizeof(want), "+OK POP3 server signing off (%zu "
	    "message%s left)", n, n == 1 ? "" : "s");
	if (strcmp(line, want) != 0)
		breach("QUIT: \"%s\", want \"%s\"", line, want);
	m->committed = 1;
}

/* A login command's reply: a failure, or the maildrop's greeting. */
static void
reply_login(struct model *m, const char *line)
{
	if (line[0] == '-') {
		if (strstr(line, "closing") != NULL)
			m->ended = 1;
		if (strstr(line, "[IN-USE]") != NULL ||
		    strstr(line, "maildrop") != NULL)
			breach("login: \"%s\"", line);
		return;
	}
	check_stat_line(m, line, "login", "login");
	m->logged_in = 1;
}

static const char *const
trans_only[] = { "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP",
    "UIDL", NULL };

static int
is_trans_only(const char *kw)
{
	size_t	i;

	for (i = 0; trans_only[i] != NULL; i++)
		if (strcasecmp(kw, trans_only[i]) == 0)
			return 1;
	return 0;
}

/* The +OK reply of a command in TRANSACTION (or CAPA, AUTH, USER). */
static void
reply_ok(struct model *m, const char *kw, const char *arg, const char *line,
    struct replies *o)
{
	char	want[64];
	size_t	i;

	if (is_trans_only(kw) && !m->logged_in)
		breach("+OK to %s before login", kw);
	if (strcasecmp(kw, "STAT") == 0)
		check_stat_line(m, line, "stat", "STAT");
	else if (strcasecmp(kw, "LIST") == 0)
		reply_list(m, arg, line, o);
	else if (strcasecmp(kw, "UIDL") == 0)
		reply_uidl(m, arg, line, o);
	else if (strcasecmp(kw, "RETR") == 0)
		reply_retr(m, arg, line, o);
	else if (strcasecmp(kw, "TOP") == 0)
		reply_top(m, arg, o);
	else if (strcasecmp(kw, "DELE") == 0) {
		i = msgno(m, arg, "DELE");
		snprintf(want, sizeof(want), "+OK message %zu deleted", i + 1);
		if (strcmp(line, want) != 0)
			breach("DELE: \"%s\"", line);
		m->deleted[i] = 1;
	} else if (strcasecmp(kw, "RSET") == 0) {
		memset(m->deleted, 0, sizeof(m->deleted));
		check_stat_line(m, line, "login", "RSET");
	} else if (strcasecmp(kw, "CAPA") == 0 ||
	    (strcasecmp(kw, "AUTH") == 0 && arg == NULL))
		body(o, kw);
	else if (strcasecmp(kw, "NOOP") == 0 || strcasecmp(kw, "USER") == 0) {
		if (strcmp(line, "+OK") != 0)
			breach("%s: \"%s\"", kw, line);
		if (m->logged_in && strcasecmp(kw, "USER") == 0)
			breach("+OK to USER after login");
	} else
		breach("+OK to %s", kw);
}

/*
 * Commands without arguments that are answered +OK whenever they are
 * valid in the state: an -ERR to one is a reply to something else.
 */
static int
cannot_fail(const struct model *m, const char *cmd)
{
	static const char *const any[] = { "CAPA", "QUIT", NULL };
	static const char *const trans[] = { "NOOP", "STAT", "RSET", "LIST",
	    "UIDL", NULL };
	size_t	i;

	for (i = 0; any[i] != NULL; i++)
		if (strcasecmp(cmd, any[i]) == 0)
			return strcasecmp(cmd, "QUIT") != 0 || !m->logged_in;
	for (i = 0; m->logged_in && trans[i] != NULL; i++)
		if (strcasecmp(cmd, trans[i]) == 0)
			return 1;
	return 0;
}

/* One command and its reply; 0 when the output is used up. */
static int
exchange(struct model *m, struct reader *in, struct replies *o)
{
	char		 cmd[AUTH_LINE_MAX + 1], line[600], *arg, *kw, *end;
	enum rline	 st;

	if (o->p == o->end)
		return 0;
	if (m->ended)
		breach("output after the session ended");
	if ((st = next_line(in, CMD_LINE_MAX, cmd)) == RL_EOF)
		breach("a reply without a command");
	if (!status_line(o, line, sizeof(line)))
		abort();	/* o->p != o->end: cannot happen */
	if (st == RL_BAD || line[0] == '-') {
		if (line[0] != '-')
			breach("+OK to a bad line");
		if (st == RL_OK && cannot_fail(m, cmd))
			breach("\"%s\" to \"%s\", which cannot fail", line,
			    cmd);
		if (strstr(line, "closing") != NULL)
			m->ended = 1;
		/* A failed login attempt. */
		if (st == RL_OK && (strncasecmp(cmd, "PASS ", 5) == 0 ||
		    strncasecmp(cmd, "AUTH ", 5) == 0))
			reply_login(m, line);
		return 1;
	}
	kw = cmd;
	arg = strchr(cmd, ' ');
	if (arg != NULL)
		*arg++ = '\0';
	/* The server forgives trailing spaces, but in PASS's argument. */
	if (arg != NULL && strcasecmp(kw, "PASS") != 0) {
		end = arg + strlen(arg);
		while (end > arg && end[-1] == ' ')
			*--end = '\0';
		if (*arg == '\0')
			arg = NULL;
	}
	if (strcmp(line, "+ ") == 0) {
		if (strcasecmp(kw, "AUTH") != 0 || m->logged_in)
			breach("continuation to %s", kw);
		/* RFC 5034: one more line, then the verdict. */
		if (next_line(in, AUTH_LINE_MAX, cmd) == RL_EOF) {
			if (o->p != o->end)
				breach("reply to a missing AUTH response");
			return 0;
		}
		if (!status_line(o, line, sizeof(line)))
			breach("no verdict after an AUTH response");
		reply_login(m, line);
		return 1;
	}
	if (strcasecmp(kw, "QUIT") == 0)
		reply_quit(m, line);
	else if (strcasecmp(kw, "PASS") == 0 || (strcasecmp(kw, "AUTH") == 0 &&
	    arg != NULL))
		reply_login(m, line);
	else
		reply_ok(m, kw, arg, line, o);
	return 1;
}

static void
model_init(struct model *m, const struct fixture *fx)
{
	size_t	i;

	for (i = 0; i < MAX_MSGS; i++)
		m->msgs[i].src = NULL;
	m->fx = fx;
	m->n = fx->n - (size_t)fx->pseudo;
	memset(m->deleted, 0, sizeof(m->deleted));
	memset(m->uidl, 0, sizeof(m->uidl));
	m->logged_in = m->committed = m->ended = 0;
	for (i = 0; i < m->n; i++) {
		m->msgs[i].src = &fx->msgs[i + (size_t)fx->pseudo];
		to_wire(m->msgs[i].src->text, &m->msgs[i]);
	}
}

static void
check_transcript(const uint8_t *data, size_t size)
{
	struct reader	in = { (const char *)data, (const char *)data + size };
	struct replies	o = { outb.p, outb.p + outb.len };
	char		line[600];
	char		scratch[AUTH_LINE_MAX + 1];

	if (!status_line(&o, line, sizeof(line)) ||
	    strcmp(line, "+OK POP3 server ready") != 0)
		breach("no greeting");
	while (exchange(&model, &in, &o))
		;
	/* Pipelining: no complete line may go unanswered (RFC 2449 6.6). */
	if (!model.ended && next_line(&in, AUTH_LINE_MAX, scratch) != RL_EOF &&
	    sess.end == END_EOF)
		breach("a command line got no reply");
	if (model.ended && sess.end == END_EOF)
		breach("a closing reply, yet the session ran to EOF");
	/* Every end but EOF is announced, too many bad commands included. */
	if (!model.ended && sess.end != END_EOF)
		breach("session ended (%s) without saying so",
		    session_end_name(sess.end));
}

static void
check_spool(void)
{
	struct stat	st;

	get_file(mbox, &filebuf);
	spool_of(model.fx, model.committed ? model.deleted : NULL, &expect);
	if (filebuf.len != expect.len ||
	    memcmp(filebuf.p, expect.p, expect.len) != 0)
		breach("spool after the session: %zu octets, want %zu (%s)",
		    filebuf.len, expect.len, model.committed ?
		    "the undeleted messages" : "unchanged");
	if (lstat(lockpath, &st) == 0)
		breach("lock file left behind");
	if (file_size(journal_fd) != 0)
		breach("commit journal left behind");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct session_config conf = { 600, 1 };
	const struct fixture	*fx;
	int			 sv[2];

	if (size < 1 || size > FUZZ_MAX_INPUT)
		return 0;
	fx = &fixtures[data[0] & 3];
	data++;
	size--;
	spool_of(fx, NULL, &filebuf);
	put_file(mbox, filebuf.p, filebuf.len);
	model_init(&model, fx);
	if (ftruncate(out_fd, 0) == -1 || ftruncate(journal_fd, 0) == -1 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		abort();
	/* All input, then EOF: the session never waits for the client. */
	if (size > 0 && write(sv[0], data, size) != (ssize_t)size)
		abort();
	shutdown(sv[0], SHUT_WR);
	session_init(&sess, sv[1], out_fd, &conf);
	sess.login = fuzz_login;
	session_greet(&sess);
	session_run(&sess);
	session_finish(&sess);
	close(sv[0]);
	close(sv[1]);
	get_fd(out_fd, &outb);
	if (lseek(out_fd, 0, SEEK_SET) == -1)
		abort();
	/* FUZZ_DUMP=1: show the replies (for writing seeds). */
	if (getenv("FUZZ_DUMP") != NULL)
		fwrite(outb.p, 1, outb.len, stderr);
	check_transcript(data, size);
	check_spool();
	if (getenv("FUZZ_DUMP") != NULL)
		fprintf(stderr, "[fixture %s, session end: %s, committed %d]\n",
		    fx->name, session_end_name(sess.end), model.committed);
	return 0;
}
