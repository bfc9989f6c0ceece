/*
 * libFuzzer target: the input is a spool file.  maildrop.c opens it on
 * a temp file (built with small read and reply buffers, see
 * params_small.h, so that a few kilobytes cross every chunk boundary),
 * and these must hold:
 *  - a file that is empty lines only (LF or CRLF, or none), or empty
 *    lines and then "From ", opens; any other is refused with
 *    MD_SYSPERM, unchanged, with no lock left;
 *  - the message count is that of a plain reference scan (a From_ line
 *    at the start or after an empty line, a UW-IMAP pseudo-message
 *    first, without a Received: header, not counted), and STAT is the count and the sum of sizes;
 *  - each message streams as CRLF lines, dot-stuffed, and unstuffed it
 *    is exactly maildrop_size() octets;
 *  - TOP n k is a prefix of RETR, of TOP n k+1, holds the headers up to
 *    the first empty line and then exactly k more lines (or all);
 *  - UIDLs are 1-70 characters of 0x21-0x7E and unique;
 *  - after marking a pseudo-random subset (seeded by a hash of the
 *    input) and committing, the file is exactly the leading empty lines
 *    and the unmarked messages' bytes (From_ line to next From_ line),
 *    and reopened it lists the
 *    unmarked messages, each streaming byte-identically and keeping its
 *    UIDL (but for the ".k" suffix of identical messages, renumbered
 *    when an earlier twin goes); no lock file or journal is left;
 *  - for one input in four, a message is appended to the spool between
 *    the index and the commit, as by an MDA that does not lock: the
 *    commit keeps it after the unmarked messages, and it is listed
 *    after them on the next open.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzzlib.h"
#include "iobuf.h"
#include "log.h"
#include "maildrop.h"

#define FUZZ_MAX_INPUT	(1 << 20)

/* What one message looked like before the commit. */
struct seen {
	struct bytes	 retr;		/* the raw stream */
	char		 uidl[UIDL_BUFSIZE];
	uint64_t	 size;
	int		 marked;
};

/* The reference scan: where each message starts. */
struct ref {
	size_t		*from;
	size_t		 n, cap;
	int		 pseudo;
};

static char		 dir[256], spool[300], lockpath[310], journal[300];
static int		 journal_fd = -1, out_fd = -1, spool_fd = -1;
static struct outbuf	 out;
static struct bytes	 got, text, prev, want;
static struct seen	*seen;
static size_t		 seen_cap;
static struct ref	 ref;

static void
cleanup(void)
{
	unlink(spool);
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
	snprintf(spool, sizeof(spool), "%s/spool", dir);
	snprintf(lockpath, sizeof(lockpath), "%s.lock", spool);
	snprintf(journal, sizeof(journal), "%s/journal", dir);
	journal_fd = open(journal, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	/*
	 * Kept open for appends while the maildrop is open: closing any
	 * descriptor of the file would drop this process's fcntl() lock.
	 * put_file() truncates the same inode.
	 */
	put_file(spool, "", 0);
	spool_fd = open(spool, O_RDWR | O_CLOEXEC);
	out_fd = memfd_create("pop3d-fuzz-out", MFD_CLOEXEC);
	if (journal_fd == -1 || out_fd == -1 || spool_fd == -1)
		abort();
	if (atexit(cleanup) != 0)
		abort();
	return 0;
}

/* A line at p (up to end) is empty: "\n" or "\r\n". */
static int
empty_line(const char *p, const char *end)
{
	return (p < end && p[0] == '\n') ||
	    (p + 1 < end && p[0] == '\r' && p[1] == '\n');
}

/*
 * UW-IMAP's pseudo-message: its From_ line, an "X-IMAP:" header and its
 * Subject among the message's headers (up to the first empty line), and
 * no "Received:" header (with one, it came as mail and is listed).
 */
static int
ref_pseudo(const char *p, const char *end)
{
	static const char subject[] =
	    "Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA";
	static const char from[] = "From MAILER-DAEMON ";
	const char	*nl;
	int		 marks = 0;

	/* UW's three marks together: From_ line, Subject, X-IMAP. */
	if ((size_t)(end - p) < sizeof(from) - 1 ||
	    memcmp(p, from, sizeof(from) - 1) != 0)
		return 0;
	if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
		return 0;
	for (p = nl + 1; p < end && !empty_line(p, end); p = nl + 1) {
		if ((size_t)(end - p) >= 7 && strncasecmp(p, "X-IMAP:", 7) == 0)
			marks |= 1;
		if ((size_t)(end - p) >= 9 &&
		    strncasecmp(p, "Received:", 9) == 0)
			marks |= 4;
		if ((size_t)(end - p) >= sizeof(subject) - 1 &&
		    memcmp(p, subject, sizeof(subject) - 1) == 0)
			marks |= 2;
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			break;
	}
	return marks == 3;
}

static void
ref_scan(const char *p, size_t len)
{
	const char	*end = p + len, *q = p, *nl;
	int		 after_empty = 1;

	ref.n = 0;
	while (q < end) {
		if (after_empty && (size_t)(end - q) >= 5 &&
		    memcmp(q, "From ", 5) == 0) {
			if (ref.n == ref.cap) {
				ref.cap = ref.cap ? ref.cap * 2 : 64;
				ref.from = reallocarray(ref.from, ref.cap,
				    sizeof(*ref.from));
				if (ref.from == NULL)
					abort();
			}
			ref.from[ref.n++] = (size_t)(q - p);
		}
		after_empty = empty_line(q, end);
		if ((nl = memchr(q, '\n', (size_t)(end - q))) == NULL)
			break;
		q = nl + 1;
	}
	ref.pseudo = ref.n > 0 && ref_pseudo(p + ref.from[0], end);
}

/* Bytes of empty lines at the start of the file. */
static size_t
empty_prefix(const char *p, size_t len)
{
	const char	*q = p, *end = p + len;

	while (empty_line(q, end))
		q += *q == '\n' ? 1 : 2;
	return (size_t)(q - p);
}

/* Stream message i (lines < 0: RETR) into got, raw. */
static void
stream(struct maildrop *md, size_t i, long lines)
{
	if (ftruncate(out_fd, 0) == -1 || lseek(out_fd, 0, SEEK_SET) == -1)
		abort();
	outbuf_init(&out, out_fd, 1000);
	if (maildrop_send(md, i, lines, &out) == -1 || outbuf_flush(&out) == -1)
		breach("maildrop_send(%zu, %ld) failed", i, lines);
	get_fd(out_fd, &got);
}

/* Unstuff got (plus a terminator) into text. */
static void
decode(const char *what)
{
	bytes_add(&got, ".\r\n", 3);
	if (unstuff(got.p, got.len, &text, what) != got.len)
		breach("%s: stray bytes or an early \".\" line", what);
	got.len -= 3;
	got.p[got.len] = '\0';
}

static size_t
count_lines(const struct bytes *b)
{
	size_t	n = 0, i;

	for (i = 0; i < b->len; i++)
		n += b->p[i] == '\n';
	return n;
}

/* The end of the headers in wire text: after the first empty line. */
static size_t
headers_end(const struct bytes *b)
{
	const char	*p = b->p, *end = b->p + b->len;

	while (p < end) {
		if (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
			return (size_t)(p + 2 - b->p);
		p = (const char *)memmem(p, (size_t)(end - p), "\r\n", 2) + 2;
	}
	return b->len;
}

/* k in increasing order: each TOP a prefix of the next. */
static void
check_top(struct maildrop *md, size_t i, const struct bytes *retr,
    uint64_t seed)
{
	long	ks[] = { 0, 1, 2, 3, 4 + (long)(seed % 60), LONG_MAX };
	size_t	k, hdr, lines0 = 0;

	hdr = headers_end(retr);
	prev.len = 0;
	bytes_add(&prev, "", 0);
	for (k = 0; k < sizeof(ks) / sizeof(ks[0]); k++) {
		stream(md, i, ks[k]);
		decode("TOP");
		if (text.len > retr->len || memcmp(text.p, retr->p,
		    text.len) != 0)
			breach("TOP %zu %ld is not a prefix of RETR", i, ks[k]);
		if (k == 0) {
			if (text.len != hdr)
				breach("TOP %zu 0: %zu octets, headers are %zu",
				    i, text.len, hdr);
			lines0 = count_lines(&text);
		}
		if (text.len != retr->len &&
		    count_lines(&text) - lines0 != (size_t)ks[k])
			breach("TOP %zu %ld: %zu body lines", i, ks[k],
			    count_lines(&text) - lines0);
		if (ks[k] == LONG_MAX && text.len != retr->len)
			breach("TOP %zu LONG_MAX is not RETR", i);
		if (k > 0 && (prev.len > text.len || memcmp(prev.p, text.p,
		    prev.len) != 0))
			breach("TOP %zu %ld does not extend TOP %zu %ld", i,
			    ks[k], i, ks[k - 1]);
		prev.len = 0;
		bytes_add(&prev, text.p, text.len);
	}
}

/* Strip a duplicate's ".k": the documented renumbering of twins. */
static size_t
uidl_base(const char *u)
{
	const char	*dot = strchr(u, '.');

	return dot != NULL ? (size_t)(dot - u) : strlen(u);
}

static void
check_uidls(struct maildrop *md, size_t n)
{
	char	u[UIDL_BUFSIZE], v[UIDL_BUFSIZE];
	size_t	i, j;

	for (i = 0; i < n; i++) {
		maildrop_uidl(md, i, u);
		if (!uidl_valid(u, strlen(u)))
			breach("UIDL of %zu malformed: \"%s\"", i, u);
		snprintf(seen[i].uidl, sizeof(seen[i].uidl), "%s", u);
	}
	/* Quadratic; inputs are small. */
	for (i = 0; i < n && n <= 2000; i++)
		for (j = i + 1; j < n; j++)
			if (strcmp(seen[i].uidl, seen[j].uidl) == 0) {
				maildrop_uidl(md, j, v);
				breach("UIDL %s of %zu and %zu", v, i, j);
			}
}

/* Everything that must hold of a freshly opened maildrop. */
static void
check_open(struct maildrop *md, uint64_t seed)
{
	size_t		n = maildrop_count(md), count, i;
	uint64_t	octets, sum = 0;

	if (n != ref.n - (size_t)ref.pseudo)
		breach("%zu messages, the reference scan finds %zu%s", n,
		    ref.n - (size_t)ref.pseudo, ref.pseudo ? " (pseudo)" : "");
	if (n > seen_cap) {
		seen = reallocarray(seen, n, sizeof(*seen));
		if (seen == NULL)
			abort();
		memset(seen + seen_cap, 0, (n - seen_cap) * sizeof(*seen));
		seen_cap = n;
	}
	for (i = 0; i < n; i++) {
		if (maildrop_is_deleted(md, i))
			breach("message %zu deleted at open", i);
		seen[i].size = maildrop_size(md, i);
		sum += seen[i].size;
		stream(md, i, -1);
		seen[i].retr.len = 0;
		bytes_add(&seen[i].retr, got.p, got.len);
		decode("RETR");
		if (text.len != seen[i].size)
			breach("RETR %zu: %zu octets unstuffed, size says "
			    "%llu", i, text.len,
			    (unsigned long long)seen[i].size);
		check_top(md, i, &text, seed + i);
	}
	maildrop_stat(md, &count, &octets);
	if (count != n || octets != sum)
		breach("STAT %zu %llu, sum of sizes %zu %llu", count,
		    (unsigned long long)octets, n, (unsigned long long)sum);
	check_uidls(md, n);
}

static void
check_no_leftovers(void)
{
	struct stat	st;

	if (lstat(lockpath, &st) == 0)
		breach("lock file left behind");
	if (file_size(journal_fd) != 0)
		breach("commit journal left behind");
}

/* What an MDA that does not lock appends between index and commit. */
static const char appended_msg[] =
    "From mda@example.org Sat Nov 21 11:00:00 2026\n"
    "Subject: appended during the session\n\n.body\n";
static const char appended_wire[] =
    "Subject: appended during the session\r\n\r\n.body\r\n";
static struct bytes appended;

static int
ends_with(const uint8_t *data, size_t size, const char *s)
{
	size_t	n = strlen(s);

	return size >= n && memcmp(data + size - n, s, n) == 0;
}

/*
 * Append a message so that it starts one, and leaves the text of the
 * last message as sent: after its empty line, after a newline with an
 * empty line, or completing a last line without newline (sent with a
 * CRLF anyway).  Not after a lone CR, which a newline would change.
 */
static int
append_message(const uint8_t *data, size_t size)
{
	appended.len = 0;
	bytes_add(&appended, "", 0);
	if (size == 0 || ends_with(data, size, "\n\n") ||
	    ends_with(data, size, "\n\r\n"))
		;
	else if (ends_with(data, size, "\n"))
		bytes_add(&appended, "\n", 1);
	else if (ends_with(data, size, "\r"))
		return 0;
	else
		bytes_add(&appended, "\n\n", 2);
	bytes_add(&appended, appended_msg, sizeof(appended_msg) - 1);
	if (pwrite(spool_fd, appended.p, appended.len, (off_t)size) !=
	    (ssize_t)appended.len)
		abort();
	return 1;
}

/* The file must now be the unmarked messages' bytes, in order. */
static void
check_committed(const uint8_t *data, size_t size, size_t n, int app)
{
	size_t	i, k, first = (size_t)ref.pseudo, start, end;

	want.len = 0;
	bytes_add(&want, data, ref.n > 0 ? ref.from[0] : size);
	if (ref.pseudo)
		bytes_add(&want, data + ref.from[0],
		    (ref.n > 1 ? ref.from[1] : size) - ref.from[0]);
	for (i = 0; i < n; i++) {
		if (seen[i].marked)
			continue;
		k = i + first;
		start = ref.from[k];
		end = k + 1 < ref.n ? ref.from[k + 1] : size;
		bytes_add(&want, data + start, end - start);
	}
	if (app) {
		/*
		 * The appender's leading empty lines separated its mail from
		 * our last message: they go when that message goes.
		 */
		k = 0;
		if (n > 0 && seen[n - 1].marked)
			while (k < appended.len && (appended.p[k] == '\n' ||
			    (appended.p[k] == '\r' && k + 1 < appended.len &&
			    appended.p[k + 1] == '\n')))
				k += appended.p[k] == '\n' ? 1 : 2;
		bytes_add(&want, appended.p + k, appended.len - k);
	}
	get_file(spool, &got);
	if (got.len != want.len || memcmp(got.p, want.p, want.len) != 0)
		breach("spool after commit: %zu octets, want %zu", got.len,
		    want.len);
}

/*
 * The first kept message, if it carries UW's three marks, is the
 * pseudo-message now (as UW-IMAP would see it too): hidden, not lost.
 */
static size_t
now_pseudo(const uint8_t *data, size_t size, size_t n)
{
	size_t	i;

	if (ref.pseudo)
		return n;
	for (i = 0; i < n && seen[i].marked; i++)
		;
	if (i < n && ref_pseudo((const char *)data + ref.from[i],
	    (const char *)data + size))
		return i;
	return n;
}

static void
check_reopened(const uint8_t *data, size_t size, size_t n, size_t kept,
    int app)
{
	struct maildrop	*md;
	char		 why[128], u[UIDL_BUFSIZE];
	size_t		 i, j = 0, hidden = now_pseudo(data, size, n);

	if (maildrop_open(&md, spool, dup(journal_fd), why, sizeof(why)) !=
	    MD_OK)
		breach("reopen after commit: %s", why);
	if (hidden < n)
		kept--;
	if (maildrop_count(md) != kept + (size_t)app)
		breach("%zu messages after commit, %zu kept%s",
		    maildrop_count(md), kept, app ? " and 1 appended" : "");
	for (i = 0; i < n; i++) {
		if (seen[i].marked || i == hidden)
			continue;
		stream(md, j, -1);
		if (got.len != seen[i].retr.len ||
		    memcmp(got.p, seen[i].retr.p, got.len) != 0)
			breach("message %zu (now %zu) streams differently "
			    "after the commit", i, j);
		if (maildrop_size(md, j) != seen[i].size)
			breach("message %zu: size changed", i);
		maildrop_uidl(md, j, u);
		if (uidl_base(u) != uidl_base(seen[i].uidl) ||
		    strncmp(u, seen[i].uidl, uidl_base(u)) != 0)
			breach("message %zu: UIDL %s became %s", i,
			    seen[i].uidl, u);
		j++;
	}
	if (app) {
		stream(md, j, -1);
		decode("RETR");
		if (strcmp(text.p, appended_wire) != 0)
			breach("the message appended during the session "
			    "streams differently");
	}
	maildrop_close(md);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct maildrop	*md;
	enum md_status	 st;
	char		 why[128];
	uint64_t	 seed, octets;
	size_t		 n, i, kept, count;
	int		 app;

	if (size > FUZZ_MAX_INPUT)
		return 0;
	put_file(spool, data, size);
	if (ftruncate(journal_fd, 0) == -1)
		abort();
	ref_scan((const char *)data, size);
	seed = fnv1a(data, size);
	st = maildrop_open(&md, spool, dup(journal_fd), why, sizeof(why));
	if (st != MD_OK) {
		i = empty_prefix((const char *)data, size);
		if (i == size || (size - i >= 5 &&
		    memcmp(data + i, "From ", 5) == 0))
			breach("a mbox refused: %s", why);
		if (st != MD_SYSPERM)
			breach("not a mbox, but status %d: %s", st, why);
		get_file(spool, &got);
		if (got.len != size || memcmp(got.p, data, size) != 0)
			breach("a refused spool was changed");
		check_no_leftovers();
		return 0;
	}
	i = empty_prefix((const char *)data, size);
	if (i < size && (size - i < 5 || memcmp(data + i, "From ", 5) != 0))
		breach("not a mbox, yet opened");
	n = maildrop_count(md);
	check_open(md, seed);
	/* Mark, unmark all, mark again: RSET must leave no trace. */
	for (i = 0; i < n; i++)
		if (prng(&seed) & 1)
			maildrop_delete(md, i);
	maildrop_reset(md);
	kept = n;
	for (i = 0; i < n; i++) {
		seen[i].marked = (prng(&seed) % 3) == 0;
		if (seen[i].marked) {
			maildrop_delete(md, i);
			kept--;
		}
		if (maildrop_is_deleted(md, i) != seen[i].marked)
			breach("mark of %zu not kept", i);
	}
	maildrop_stat(md, &count, &octets);
	if (count != kept)
		breach("STAT counts %zu after marking, %zu unmarked", count,
		    kept);
	app = (prng(&seed) & 3) == 0 && append_message(data, size);
	if ((st = maildrop_commit(md, why, sizeof(why))) != MD_OK)
		breach("commit failed (%d): %s", st, why);
	maildrop_close(md);
	check_no_leftovers();
	check_committed(data, size, n, app);
	check_reopened(data, size, n, kept, app);
	check_no_leftovers();
	return 0;
}
