/*
 * client: the pop3d benchmark's POP3 client (issue 7).
 *
 * Three ways to drive a server: lock-step, like a plain mail client (one
 * command, then its whole reply, then the next; the default); -A, as an
 * RFC 2449 client: CAPA first, and the RETR/DELE commands pipelined only
 * if the server announces PIPELINING (else lock-step); -P W, pipelined
 * whatever the server announces.  Every reply is checked (+OK, the STAT/LIST/UIDL
 * counts agree, every RETR ends with its terminator, the unstuffed
 * octets agree with LIST) and every octet is counted.  By default it
 * sets neither TCP_NODELAY nor TCP_QUICKACK, so a server that answers a
 * small command in two segments shows the 40 ms Nagle/delayed-ACK stall.
 *
 * Scenarios (-s):
 *   S1  USER, PASS, QUIT
 *   S2  STAT, LIST, UIDL, RETR 1..n, QUIT
 *   S3  S2, with DELE after the RETR of 10 % of the messages, scattered
 *   S4  DELE 1, QUIT
 *   S5  STAT, DELE 1..n, QUIT
 *   sink   read until EOF and count (the `cat` ceiling)
 *   parse  read RETR-style replies until EOF (the client's own ceiling)
 *   echo   -n N lines, each waiting for its echo (`cat` as the server):
 *          the round trip that every lock-step command pays
 * -P W: W commands in flight (1..64; -A without -P: 32).
 * -q re-arms TCP_QUICKACK after every read: only for servers that stall
 * on the delayed ACK, so that their own speed can still be measured.
 * With -c N, N processes run the scenario at once, process i as user
 * -u followed by i in two digits (S6: -s S2 -c 50 -u u: u00 .. u49).
 *
 * Output: one line of key=value on stdout; with -L, one line per command
 * ("lat CMD usec") on stderr.  Exit 0 if every session succeeded.
 *
 *   client -W MBOX OUT   writes MBOX as RETR replies, for -s parse.
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RBUF_SIZE	(1024 * 1024)
#define LINE_MAX_LEN	1024

struct conf {
	const char	*host;
	int		 port;
	const char	*user;
	const char	*pass;
	const char	*scen;
	int		 conc;
	int		 timeout_ms;
	int		 latency;
	int		 quickack;
	long		 count;
	int		 window;	/* RETR/DELE in flight (-P) */
	int		 capa;		/* -A: pipeline if announced */
};

struct rd {
	int	 fd;
	char	*buf;
	size_t	 off, len;
	uint64_t wire;		/* octets received */
};

struct result {
	int		 ok;
	char		 err[160];
	uint64_t	 t0_ns, t1_ns;	/* CLOCK_REALTIME, for attribution */
	uint64_t	 wall_us, greet_us, login_us;
	uint64_t	 msgs, stat_octets, wire, msg_octets, retr;
	uint64_t	 dele, size_mismatch, bare_lf;
	uint64_t	 lat_max_us;	/* slowest non-login command */
	char		 lat_max_cmd[8];
	int		 pipelined;	/* -A: server announced it */
};

static const struct conf *cf;

static void *
mmap_shared(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static uint64_t
now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int
fail(struct result *r, const char *fmt, ...)
{
	va_list ap;

	if (r->ok) {
		va_start(ap, fmt);
		vsnprintf(r->err, sizeof(r->err), fmt, ap);
		va_end(ap);
		r->ok = 0;
	}
	return -1;
}

/* Wait for input, then read what is there; 0 at EOF, -1 on error. */
static ssize_t
rd_fill(struct rd *d, struct result *r)
{
	struct pollfd pfd = { .fd = d->fd, .events = POLLIN };
	ssize_t n;
	int pr;

	if (d->off > 0 && d->off < d->len)
		memmove(d->buf, d->buf + d->off, d->len - d->off);
	d->len -= d->off;
	d->off = 0;
	if (d->len == RBUF_SIZE)
		return fail(r, "buffer full");
	for (;;) {
		n = recv(d->fd, d->buf + d->len, RBUF_SIZE - d->len,
		    MSG_DONTWAIT);
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return fail(r, "recv: %s", strerror(errno));
		pr = poll(&pfd, 1, cf->timeout_ms);
		if (pr == 0)
			return fail(r, "timeout");
		if (pr == -1 && errno != EINTR)
			return fail(r, "poll: %s", strerror(errno));
	}
	d->len += (size_t)n;
	d->wire += (uint64_t)n;
	if (cf->quickack) {
		/* Not sticky: the kernel may fall back to delayed ACKs. */
		int on = 1;

		(void)setsockopt(d->fd, IPPROTO_TCP, TCP_QUICKACK, &on,
		    sizeof(on));
	}
	return n;
}

/* One reply line without its CRLF, NUL-terminated in place. */
static char *
rd_line(struct rd *d, struct result *r)
{
	char *nl, *line;
	ssize_t n;

	for (;;) {
		nl = memchr(d->buf + d->off, '\n', d->len - d->off);
		if (nl != NULL)
			break;
		if (d->len - d->off > LINE_MAX_LEN) {
			fail(r, "reply line too long");
			return NULL;
		}
		if ((n = rd_fill(d, r)) <= 0) {
			if (n == 0)
				fail(r, "EOF instead of a reply");
			return NULL;
		}
	}
	line = d->buf + d->off;
	d->off = (size_t)(nl - d->buf) + 1;
	if (nl > line && nl[-1] == '\r')
		nl--;
	else
		r->bare_lf++;
	*nl = '\0';
	return line;
}

static char *
rd_status(struct rd *d, struct result *r, const char *cmd)
{
	char *line;

	if ((line = rd_line(d, r)) == NULL)
		return NULL;
	if (strncmp(line, "+OK", 3) != 0 || (line[3] != ' ' &&
	    line[3] != '\0')) {
		fail(r, "%s: %.100s", cmd, line);
		return NULL;
	}
	return line;
}

/*
 * The body of a multi-line reply, up to its ".\r\n": octets counted
 * after undoing the byte-stuffing (RFC 1939 section 3).  The fast path
 * looks only at line starts and memchr()s to each line's end.
 */
static int
rd_body(struct rd *d, struct result *r, uint64_t *octets)
{
	uint64_t start = d->wire - (d->len - d->off), stuffed = 0;
	const char *p, *end, *nl;
	int bol = 1;
	char prev = '\n';
	ssize_t n;

	for (;;) {
		if (bol && d->len - d->off < 3) {
			if ((n = rd_fill(d, r)) <= 0)
				return n == 0 ? fail(r, "EOF in a reply") : -1;
			continue;
		}
		p = d->buf + d->off;
		end = d->buf + d->len;
		while (p < end) {
			if (bol) {
				if (end - p < 3)
					break;
				if (p[0] == '.') {
					if (p[1] == '\r' && p[2] == '\n') {
						d->off = (size_t)(p + 3 - d->buf);
						*octets = d->wire - (d->len -
						    d->off) - start - 3 - stuffed;
						return 0;
					}
					stuffed++;
				}
				bol = 0;
			}
			if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL) {
				prev = end[-1];
				p = end;
				break;
			}
			if ((nl > p ? nl[-1] : prev) != '\r')
				r->bare_lf++;
			p = nl + 1;
			bol = 1;
		}
		d->off = (size_t)(p - d->buf);
		if (d->off == d->len || bol) {
			if ((n = rd_fill(d, r)) <= 0)
				return n == 0 ? fail(r, "EOF in a reply") : -1;
		}
	}
}

/* Multi-line reply read line by line (LIST, UIDL): cb sees each line. */
static int
rd_lines(struct rd *d, struct result *r, int (*cb)(void *, char *),
    void *arg)
{
	char *line;

	for (;;) {
		if ((line = rd_line(d, r)) == NULL)
			return -1;
		if (line[0] == '.') {
			if (line[1] == '\0')
				return 0;
			line++;
		}
		if (cb(arg, line) == -1)
			return fail(r, "bad listing line: %.80s", line);
	}
}

static int
send_cmd(int fd, struct result *r, const char *fmt, ...)
{
	char buf[LINE_MAX_LEN];
	va_list ap;
	int len;
	ssize_t n;
	size_t off = 0;

	va_start(ap, fmt);
	len = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	memcpy(buf + len, "\r\n", 2);
	len += 2;
	while (off < (size_t)len) {
		n = send(fd, buf + off, (size_t)len - off, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return fail(r, "send: %s", strerror(errno));
		}
		off += (size_t)n;
	}
	return 0;
}

/* Per-command latency, for the Nagle check. */
static void
lat(struct result *r, const char *cmd, uint64_t t_start)
{
	uint64_t us = (now_ns(CLOCK_MONOTONIC) - t_start) / 1000;

	if (cf->latency)
		fprintf(stderr, "lat %s %llu\n", cmd, (unsigned long long)us);
	if (strcmp(cmd, "USER") != 0 && strcmp(cmd, "PASS") != 0 &&
	    strcmp(cmd, "greeting") != 0 && us > r->lat_max_us) {
		r->lat_max_us = us;
		snprintf(r->lat_max_cmd, sizeof(r->lat_max_cmd), "%s", cmd);
	}
}

/* A simple command with a single-line reply. */
static char *
simple(struct rd *d, struct result *r, const char *cmd, const char *fmt,
    ...)
{
	char buf[LINE_MAX_LEN];
	uint64_t t = now_ns(CLOCK_MONOTONIC);
	va_list ap;
	char *line;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (send_cmd(d->fd, r, "%s", buf) == -1)
		return NULL;
	line = rd_status(d, r, cmd);
	if (line != NULL)
		lat(r, cmd, t);
	return line;
}

struct listing {
	uint64_t	 n, expect, sum;
	uint64_t	*sizes;
	char		**uids;
};

/* A strict unsigned decimal: digits only, no sign, no overflow. */
static int
num(const char *s, char **endp, uint64_t *v)
{
	uint64_t x = 0;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (x > (UINT64_MAX - 9) / 10)
			return -1;
		x = x * 10 + (uint64_t)(*p - '0');
	}
	*endp = (char *)(uintptr_t)p;
	*v = x;
	return 0;
}

static int
list_line(void *arg, char *line)
{
	struct listing *l = arg;
	uint64_t i, sz;
	char *e;

	if (num(line, &e, &i) == -1 || *e != ' ' || num(e + 1, &e, &sz) == -1)
		return -1;
	if (i != l->n + 1 || i > l->expect)
		return -1;
	l->sizes[l->n++] = sz;
	l->sum += sz;
	return 0;
}

static int
uidl_line(void *arg, char *line)
{
	struct listing *l = arg;
	uint64_t i;
	char *e;
	size_t len;

	if (num(line, &e, &i) == -1 || *e != ' ' || i != l->n + 1 ||
	    i > l->expect)
		return -1;
	len = strlen(e + 1);
	/* RFC 1939 section 7: 1 to 70 characters in 0x21..0x7E. */
	if (len < 1 || len > 70)
		return -1;
	for (const char *p = e + 1; *p; p++)
		if (*p < 0x21 || *p > 0x7e)
			return -1;
	l->uids[l->n++] = strdup(e + 1);
	return 0;
}

static int
cmpstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
do_stat(struct rd *d, struct result *r)
{
	char *line, *e;

	if ((line = simple(d, r, "STAT", "STAT")) == NULL)
		return -1;
	if (num(line + 4, &e, &r->msgs) == -1 || *e != ' ' ||
	    num(e + 1, &e, &r->stat_octets) == -1)
		return fail(r, "STAT: %.80s", line);
	return 0;
}

static int
do_list_uidl(struct rd *d, struct result *r, struct listing *l)
{
	uint64_t t = now_ns(CLOCK_MONOTONIC);

	l->expect = r->msgs;
	l->sizes = calloc(r->msgs + 1, sizeof(*l->sizes));
	l->uids = calloc(r->msgs + 1, sizeof(*l->uids));
	if (l->sizes == NULL || l->uids == NULL)
		return fail(r, "out of memory");
	if (send_cmd(d->fd, r, "LIST") == -1 ||
	    rd_status(d, r, "LIST") == NULL ||
	    rd_lines(d, r, list_line, l) == -1)
		return -1;
	lat(r, "LIST", t);
	if (l->n != r->msgs)
		return fail(r, "LIST: %llu lines, STAT said %llu",
		    (unsigned long long)l->n, (unsigned long long)r->msgs);
	if (l->sum != r->stat_octets)
		r->size_mismatch++;
	l->n = 0;
	t = now_ns(CLOCK_MONOTONIC);
	if (send_cmd(d->fd, r, "UIDL") == -1 ||
	    rd_status(d, r, "UIDL") == NULL ||
	    rd_lines(d, r, uidl_line, l) == -1)
		return -1;
	lat(r, "UIDL", t);
	if (l->n != r->msgs)
		return fail(r, "UIDL: %llu lines, STAT said %llu",
		    (unsigned long long)l->n, (unsigned long long)r->msgs);
	qsort(l->uids, l->n, sizeof(*l->uids), cmpstr);
	for (uint64_t i = 1; i < l->n; i++)
		if (strcmp(l->uids[i - 1], l->uids[i]) == 0)
			return fail(r, "UIDL: duplicate %s", l->uids[i]);
	return 0;
}

/* S3's scattered 10 %: a multiplicative hash of the message number. */
static int
selected(uint64_t i)
{
	return (uint32_t)(i * 2654435761u) % 10 == 7;
}

/*
 * The commands after STAT/LIST/UIDL, in order: S2 RETR 1..n; S3 the
 * same with DELE i after RETR i for the scattered 10 %; S5 DELE 1..n.
 * Returns 0 when there are no more.
 */
struct cmdgen {
	uint64_t	next;		/* message number of the next command */
	int		dele_due;	/* S3: DELE of next - 1 comes first */
};

static int
next_cmd(struct cmdgen *g, const struct result *r, int *is_retr,
    uint64_t *msg)
{
	const char *s = cf->scen;

	if (g->dele_due) {
		g->dele_due = 0;
		*is_retr = 0;
		*msg = g->next - 1;
		return 1;
	}
	if (g->next > r->msgs)
		return 0;
	*msg = g->next++;
	*is_retr = strcmp(s, "S5") != 0;
	g->dele_due = strcmp(s, "S3") == 0 && selected(*msg);
	return 1;
}

/* One command's reply: RETR's body is counted and checked against LIST. */
static int
read_reply(struct rd *d, struct result *r, const struct listing *l,
    int is_retr, uint64_t msg)
{
	uint64_t octets;

	if (rd_status(d, r, is_retr ? "RETR" : "DELE") == NULL)
		return -1;
	if (!is_retr) {
		r->dele++;
		return 0;
	}
	if (rd_body(d, r, &octets) == -1)
		return -1;
	r->retr++;
	r->msg_octets += octets;
	if (octets != l->sizes[msg - 1])
		r->size_mismatch++;
	return 0;
}

/*
 * The RETR/DELE commands.  window 1: lock-step, each command's latency
 * recorded.  window > 1: RFC 2449 pipelining, up to window commands in
 * flight, refilled half a window at a time in one write (a command per
 * reply would cost both sides a system call and a segment per message);
 * the replies come in order.
 */
static int
run_cmds(struct rd *d, struct result *r, const struct listing *l,
    int window)
{
	struct cmdgen gen = { 1, 0 };
	char buf[64 * 32];
	struct { int is_retr; uint64_t msg; } fly[64];
	uint64_t t, sent = 0, done = 0;
	size_t len;
	ssize_t n;
	int is_retr, more = 1;

	if (window < 1 || window > 64)
		return fail(r, "window %d out of 1..64", window);
	if (window == 1) {
		while (next_cmd(&gen, r, &is_retr, &t)) {
			uint64_t msg = t;

			t = now_ns(CLOCK_MONOTONIC);
			if (send_cmd(d->fd, r, "%s %llu", is_retr ? "RETR" :
			    "DELE", (unsigned long long)msg) == -1 ||
			    read_reply(d, r, l, is_retr, msg) == -1)
				return -1;
			lat(r, is_retr ? "RETR" : "DELE", t);
		}
		return 0;
	}
	while (more || done < sent) {
		len = 0;
		/* Refill half a window in one write, not a command a reply. */
		while (sent - done < (uint64_t)window && len + 32 < sizeof(buf) &&
		    (len > 0 || sent - done <= (uint64_t)window / 2)) {
			if (!(more = next_cmd(&gen, r, &is_retr, &t)))
				break;
			fly[sent % 64].is_retr = is_retr;
			fly[sent % 64].msg = t;
			len += (size_t)snprintf(buf + len, sizeof(buf) - len,
			    "%s %llu\r\n", is_retr ? "RETR" : "DELE",
			    (unsigned long long)t);
			sent++;
		}
		for (size_t off = 0; off < len; off += (size_t)n)
			if ((n = send(d->fd, buf + off, len - off,
			    MSG_NOSIGNAL)) == -1)
				return fail(r, "send: %s", strerror(errno));
		if (done < sent && read_reply(d, r, l, fly[done % 64].is_retr,
		    fly[done % 64].msg) == -1)
			return -1;
		done++;
	}
	return 0;
}

/*
 * -A: what an RFC 2449 client does: CAPA, and pipelining only if the
 * server announces PIPELINING.  A server without CAPA answers -ERR.
 */
static int
capa_pipelining(struct rd *d, struct result *r)
{
	char *line;
	int pipelining = 0;

	if (send_cmd(d->fd, r, "CAPA") == -1 ||
	    (line = rd_line(d, r)) == NULL)
		return -1;
	if (strncmp(line, "+OK", 3) != 0)
		return 0;
	for (;;) {
		if ((line = rd_line(d, r)) == NULL)
			return -1;
		if (strcmp(line, ".") == 0)
			return pipelining;
		if (strcasecmp(line, "PIPELINING") == 0)
			pipelining = 1;
	}
}

/* QUIT, then the server must close: its commit is inside the timing. */
static int
do_quit(struct rd *d, struct result *r)
{
	ssize_t n;

	if (simple(d, r, "QUIT", "QUIT") == NULL)
		return -1;
	if (d->off != d->len)
		return fail(r, "data after QUIT reply");
	while ((n = rd_fill(d, r)) > 0)
		return fail(r, "data after QUIT reply");
	return n;
}

static int
connect_to(struct result *r)
{
	struct sockaddr_in sin;
	int fd;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)cf->port);
	if (inet_pton(AF_INET, cf->host, &sin.sin_addr) != 1)
		return fail(r, "bad host %s", cf->host);
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return fail(r, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1) {
		close(fd);
		return fail(r, "connect: %s", strerror(errno));
	}
	return fd;
}

static int
login(struct rd *d, struct result *r, const char *user, uint64_t t_start)
{
	uint64_t t;

	if (rd_status(d, r, "greeting") == NULL)
		return -1;
	r->greet_us = (now_ns(CLOCK_MONOTONIC) - t_start) / 1000;
	lat(r, "greeting", t_start);
	t = now_ns(CLOCK_MONOTONIC);
	if (simple(d, r, "USER", "USER %s", user) == NULL ||
	    simple(d, r, "PASS", "PASS %s", cf->pass) == NULL)
		return -1;
	r->login_us = (now_ns(CLOCK_MONOTONIC) - t) / 1000;
	return 0;
}

static int
scenario(struct rd *d, struct result *r, const char *user, uint64_t t0)
{
	struct listing l;
	const char *s = cf->scen;

	memset(&l, 0, sizeof(l));
	if (login(d, r, user, t0) == -1)
		return -1;
	if (strcmp(s, "S2") == 0 || strcmp(s, "S3") == 0 ||
	    strcmp(s, "S5") == 0) {
		if (cf->capa && (r->pipelined = capa_pipelining(d, r)) == -1)
			return -1;
		if (do_stat(d, r) == -1 || (s[1] != '5' &&
		    do_list_uidl(d, r, &l) == -1) ||
		    run_cmds(d, r, &l, cf->capa ? (r->pipelined ?
		    cf->window : 1) : cf->window) == -1)
			return -1;
	} else if (strcmp(s, "S4") == 0) {
		if (simple(d, r, "DELE", "DELE 1") == NULL)
			return -1;
		r->dele = 1;
	} else if (strcmp(s, "S1") != 0)
		return fail(r, "unknown scenario %s", s);
	return do_quit(d, r);
}

/*
 * echo: the lock-step floor.  With `cat` as the server, N command-sized
 * lines each wait for their echo: one loopback round trip through the
 * same front end, what a lock-step RETR costs before any work.
 */
static int
echo(struct rd *d, struct result *r)
{
	char *line;
	char want[32];

	for (long i = 1; i <= cf->count; i++) {
		uint64_t t = now_ns(CLOCK_MONOTONIC);

		snprintf(want, sizeof(want), "RETR %ld", i);
		if (send_cmd(d->fd, r, "%s", want) == -1 ||
		    (line = rd_line(d, r)) == NULL)
			return -1;
		if (strcmp(line, want) != 0)
			return fail(r, "echo: %.80s", line);
		lat(r, "echo", t);
		r->retr++;
	}
	return 0;
}

/* sink: count octets to EOF; parse: RETR-style replies to EOF. */
static int
stream(struct rd *d, struct result *r, int parse)
{
	uint64_t octets;
	ssize_t n;

	if (!parse) {
		while ((n = rd_fill(d, r)) > 0)
			d->off = d->len;
		return (int)n;
	}
	for (;;) {
		if (d->off == d->len && (n = rd_fill(d, r)) <= 0)
			return (int)n;
		if (rd_status(d, r, "stream") == NULL ||
		    rd_body(d, r, &octets) == -1)
			return -1;
		r->retr++;
		r->msg_octets += octets;
	}
}

static void
run_one(struct result *r, const char *user)
{
	struct rd d;
	uint64_t t0;

	memset(r, 0, sizeof(*r));
	memset(&d, 0, sizeof(d));
	r->ok = 1;
	if ((d.buf = malloc(RBUF_SIZE)) == NULL) {
		fail(r, "out of memory");
		return;
	}
	r->t0_ns = now_ns(CLOCK_REALTIME);
	t0 = now_ns(CLOCK_MONOTONIC);
	if ((d.fd = connect_to(r)) != -1) {
		if (strcmp(cf->scen, "sink") == 0 ||
		    strcmp(cf->scen, "parse") == 0)
			stream(&d, r, cf->scen[0] == 'p');
		else if (strcmp(cf->scen, "echo") == 0)
			echo(&d, r);
		else
			scenario(&d, r, user, t0);
		close(d.fd);
	}
	r->wall_us = (now_ns(CLOCK_MONOTONIC) - t0) / 1000;
	r->t1_ns = now_ns(CLOCK_REALTIME);
	r->wire = d.wire;
	free(d.buf);
}

static void
print_result(const struct result *r, int sessions, int failed)
{
	struct rusage ru, ruc;
	uint64_t cpu;

	getrusage(RUSAGE_SELF, &ru);
	getrusage(RUSAGE_CHILDREN, &ruc);
	cpu = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
	    ruc.ru_utime.tv_sec + ruc.ru_stime.tv_sec) * 1000000 +
	    (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec +
	    ruc.ru_utime.tv_usec + ruc.ru_stime.tv_usec);
	printf("scen=%s ok=%d sessions=%d failed=%d t0_ns=%llu t1_ns=%llu "
	    "wall_us=%llu greet_us=%llu login_us=%llu msgs=%llu "
	    "stat_octets=%llu wire=%llu msg_octets=%llu retr=%llu dele=%llu "
	    "size_mismatch=%llu bare_lf=%llu lat_max_us=%llu lat_max_cmd=%s "
	    "client_cpu_us=%llu pipelined=%d err=\"%s\"\n", cf->scen, r->ok,
	    sessions,
	    failed, (unsigned long long)r->t0_ns,
	    (unsigned long long)r->t1_ns, (unsigned long long)r->wall_us,
	    (unsigned long long)r->greet_us, (unsigned long long)r->login_us,
	    (unsigned long long)r->msgs, (unsigned long long)r->stat_octets,
	    (unsigned long long)r->wire, (unsigned long long)r->msg_octets,
	    (unsigned long long)r->retr, (unsigned long long)r->dele,
	    (unsigned long long)r->size_mismatch,
	    (unsigned long long)r->bare_lf, (unsigned long long)r->lat_max_us,
	    r->lat_max_cmd[0] ? r->lat_max_cmd : "-",
	    (unsigned long long)cpu, r->pipelined, r->err);
}

/* -c N: N processes released together; totals, and the last to end. */
static int
run_many(void)
{
	struct result *rs, sum;
	int gate[2], n = cf->conc, failed = 0, status;
	char user[256];
	pid_t pid;
	uint64_t t0;

	rs = mmap_shared(sizeof(*rs) * (size_t)n);
	if (rs == NULL || pipe(gate) == -1) {
		perror("client");
		return 2;
	}
	for (int i = 0; i < n; i++) {
		if ((pid = fork()) == -1) {
			perror("fork");
			return 2;
		}
		if (pid == 0) {
			char c;

			close(gate[1]);
			(void)!read(gate[0], &c, 1);
			snprintf(user, sizeof(user), "%s%02d", cf->user, i);
			run_one(&rs[i], user);
			_exit(rs[i].ok ? 0 : 1);
		}
	}
	close(gate[0]);
	t0 = now_ns(CLOCK_MONOTONIC);
	memset(&sum, 0, sizeof(sum));
	sum.ok = 1;
	sum.t0_ns = now_ns(CLOCK_REALTIME);
	close(gate[1]);
	while (wait(&status) > 0)
		;
	sum.wall_us = (now_ns(CLOCK_MONOTONIC) - t0) / 1000;
	sum.t1_ns = now_ns(CLOCK_REALTIME);
	for (int i = 0; i < n; i++) {
		struct result *r = &rs[i];

		if (!r->ok) {
			failed++;
			if (sum.ok)
				snprintf(sum.err, sizeof(sum.err), "#%d: %s",
				    i, r->err);
			sum.ok = 0;
		}
		sum.msgs += r->msgs;
		sum.stat_octets += r->stat_octets;
		sum.wire += r->wire;
		sum.msg_octets += r->msg_octets;
		sum.retr += r->retr;
		sum.dele += r->dele;
		sum.size_mismatch += r->size_mismatch;
		sum.bare_lf += r->bare_lf;
		sum.pipelined |= r->pipelined;
		if (r->greet_us > sum.greet_us)
			sum.greet_us = r->greet_us;
		if (r->login_us > sum.login_us)
			sum.login_us = r->login_us;
		if (r->lat_max_us > sum.lat_max_us) {
			sum.lat_max_us = r->lat_max_us;
			memcpy(sum.lat_max_cmd, r->lat_max_cmd,
			    sizeof(sum.lat_max_cmd));
		}
	}
	print_result(&sum, n, failed);
	return sum.ok ? 0 : 1;
}

/* -W: an mbox as a stream of RETR replies (CRLF, byte-stuffed). */
static int
mkwire(const char *in, const char *out)
{
	FILE *fi, *fo;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int inmsg = 0;

	if ((fi = fopen(in, "r")) == NULL || (fo = fopen(out, "w")) == NULL) {
		perror("client -W");
		return 2;
	}
	while ((len = getline(&line, &cap, fi)) > 0) {
		if (line[len - 1] == '\n')
			line[--len] = '\0';
		if (strncmp(line, "From ", 5) == 0) {
			fputs(inmsg ? ".\r\n+OK message follows\r\n" :
			    "+OK message follows\r\n", fo);
			inmsg = 1;
			continue;
		}
		if (line[0] == '.')
			fputc('.', fo);
		fwrite(line, 1, (size_t)len, fo);
		fputs("\r\n", fo);
	}
	if (inmsg)
		fputs(".\r\n", fo);
	free(line);
	fclose(fi);
	return fclose(fo) == 0 ? 0 : 2;
}

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr, "usage: client [-ALq] [-c conc] [-H host] [-n count] "
	    "[-P window] -p port\n"
	    "              [-s scenario] [-t timeout] [-u user] "
	    "[-w password]\n"
	    "       client -W mbox wirefile\n");
	exit(2);
}

int
main(int argc, char *argv[])
{
	static struct conf c = {
		.host = "127.0.0.1", .user = "bench", .pass = "bench",
		.scen = "S2", .conc = 1, .timeout_ms = 600000, .window = 1,
	};
	struct result r;
	int ch;

	cf = &c;
	while ((ch = getopt(argc, argv, "ALP:W:c:H:n:p:qs:t:u:w:")) != -1) {
		switch (ch) {
		case 'A':
			c.capa = 1;
			break;
		case 'L':
			c.latency = 1;
			break;
		case 'n':
			c.count = atol(optarg);
			break;
		case 'q':
			c.quickack = 1;
			break;
		case 'P':
			c.window = atoi(optarg);
			break;
		case 'W':
			if (optind >= argc)
				usage();
			return mkwire(optarg, argv[optind]);
		case 'c':
			c.conc = atoi(optarg);
			break;
		case 'H':
			c.host = optarg;
			break;
		case 'p':
			c.port = atoi(optarg);
			break;
		case 's':
			c.scen = optarg;
			break;
		case 't':
			c.timeout_ms = atoi(optarg) * 1000;
			break;
		case 'u':
			c.user = optarg;
			break;
		case 'w':
			c.pass = optarg;
			break;
		default:
			usage();
		}
	}
	if (c.port <= 0 || c.port > 65535 || c.conc < 1 || optind != argc ||
	    c.window < 1 || c.window > 64)
		usage();
	if (c.capa && c.window == 1)
		c.window = 32;
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (c.conc > 1)
		return run_many();
	run_one(&r, c.user);
	print_result(&r, 1, !r.ok);
	return r.ok ? 0 : 1;
}
