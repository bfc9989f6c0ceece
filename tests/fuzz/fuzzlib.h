/*
 * Helpers shared by the libFuzzer targets: a private temp directory for
 * the spool, its lock and the commit journal; whole-file I/O; POP3
 * multi-line decoding; and a breach() that names the broken invariant
 * and aborts, so that libFuzzer saves the input as a crash.
 */
#ifndef FUZZLIB_H
#define FUZZLIB_H

#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

static void	breach(const char *, ...)
		    __attribute__((format(printf, 1, 2), noreturn, unused));

/* An invariant does not hold: say which, and crash for libFuzzer. */
static void
breach(const char *fmt, ...)
{
	va_list	ap;

	fputs("INVARIANT BREACH: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/*
 * pop3d logs every session to syslog: millions of lines in a fuzzing
 * run.  These definitions take precedence over libc's, so log.c's calls
 * land here; the message is still formatted, so a bad format or
 * argument is still seen by the sanitizers.
 */
void
vsyslog(int pri, const char *fmt, va_list ap)
{
	char	buf[1024];

	(void)pri;
	vsnprintf(buf, sizeof(buf), fmt, ap);
}

void
syslog(int pri, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vsyslog(pri, fmt, ap);
	va_end(ap);
}

void
openlog(const char *ident, int opt, int facility)
{
	(void)ident;
	(void)opt;
	(void)facility;
}

/* A bounded byte buffer. */
struct bytes {
	char	*p;
	size_t	 len, cap;
};

static void __attribute__((unused))
bytes_add(struct bytes *b, const void *p, size_t n)
{
	char	*q;

	if (b->cap - b->len < n + 1) {
		b->cap = (b->len + n + 1) * 2;
		if ((q = realloc(b->p, b->cap)) == NULL)
			abort();
		b->p = q;
	}
	if (n > 0)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

/* Remove a directory of plain files (ours: spool, lock, journal). */
static void
remove_dir(const char *path)
{
	char		 file[512];
	DIR		*d;
	struct dirent	*e;

	if ((d = opendir(path)) == NULL)
		return;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.' || (strcmp(e->d_name, ".") != 0 &&
		    strcmp(e->d_name, "..") != 0)) {
			snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
			unlink(file);
		}
	closedir(d);
	rmdir(path);
}

/*
 * A crash (the point of fuzzing) skips atexit(): remove the directories
 * of fuzzing processes that are gone, named pop3d-fuzz.PID.XXXXXX.
 */
static void
remove_stale(const char *base)
{
	char		 path[512], proc[64];
	DIR		*d;
	struct dirent	*e;
	const char	*prefix = "pop3d-fuzz.";
	char		*end;
	long		 pid;

	if ((d = opendir(base)) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
			continue;
		pid = strtol(e->d_name + strlen(prefix), &end, 10);
		if (pid <= 0 || *end != '.')
			continue;
		snprintf(proc, sizeof(proc), "/proc/%ld", pid);
		if (access(proc, F_OK) == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", base, e->d_name);
		remove_dir(path);
	}
	closedir(d);
}

/*
 * A private directory on tmpfs if there is one: the commit fsyncs, and
 * a disk would make every input cost milliseconds.
 */
static void __attribute__((unused))
fuzz_tmpdir(char *dir, size_t len)
{
	const char	*base = getenv("FUZZ_TMPDIR");

	if (base == NULL)
		base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	remove_stale(base);
	snprintf(dir, len, "%s/pop3d-fuzz.%ld.XXXXXX", base, (long)getpid());
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		abort();
	}
}

static void __attribute__((unused))
put_file(const char *path, const void *data, size_t len)
{
	int	fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1 || (len > 0 && write(fd, data, len) != (ssize_t)len)) {
		perror(path);
		abort();
	}
	close(fd);
}

/* The whole of fd (from offset 0) into b. */
static void __attribute__((unused))
get_fd(int fd, struct bytes *b)
{
	char	buf[65536];
	off_t	off = 0;
	ssize_t	n;

	b->len = 0;
	bytes_add(b, "", 0);
	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		bytes_add(b, buf, (size_t)n);
		off += n;
	}
	if (n == -1) {
		perror("pread");
		abort();
	}
}

static void __attribute__((unused))
get_file(const char *path, struct bytes *b)
{
	int	fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		perror(path);
		abort();
	}
	get_fd(fd, b);
	close(fd);
}

static off_t __attribute__((unused))
file_size(int fd)
{
	struct stat	st;

	if (fstat(fd, &st) == -1)
		abort();
	return st.st_size;
}

/*
 * Decode a dot-stuffed multi-line body at p (n bytes; the status line
 * already taken off).  Every line must end in CRLF and every line
 * starting with "." must be stuffed, except the terminating ".".  The
 * unstuffed text (CRLFs kept) goes into text; returns the bytes used,
 * terminator included, or 0 if the body is unterminated.  Wire lines
 * are split at CRLF: the server writes LF only at the end of a line,
 * so a lone CR inside a line is not taken for an end.
 */
static size_t __attribute__((unused))
unstuff(const char *p, size_t n, struct bytes *text, const char *what)
{
	const char	*q = p, *end = p + n, *crlf;
	size_t		 len;

	text->len = 0;
	bytes_add(text, "", 0);
	while (q < end) {
		crlf = NULL;
		for (const char *r = q; r + 1 < end; r++) {
			if (r[0] == '\n')
				breach("%s: bare LF in a multi-line reply",
				    what);
			if (r[0] == '\r' && r[1] == '\n') {
				crlf = r;
				break;
			}
		}
		if (crlf == NULL)
			return 0;
		len = (size_t)(crlf - q);
		if (len == 1 && q[0] == '.')
			return (size_t)(crlf + 2 - p);
		if (len > 0 && q[0] == '.') {
			if (len < 2 || q[1] != '.')
				breach("%s: line starting with \".\" not "
				    "dot-stuffed", what);
			q++;
			len--;
		}
		bytes_add(text, q, len);
		bytes_add(text, "\r\n", 2);
		q = crlf + 2;
	}
	return 0;
}

/* RFC 1939 section 7: 1-70 characters in 0x21-0x7E. */
static int __attribute__((unused))
uidl_valid(const char *u, size_t len)
{
	size_t	i;

	if (len < 1 || len > 70)
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)u[i] < 0x21 || (unsigned char)u[i] > 0x7e)
			return 0;
	return 1;
}

/* FNV-1a: a stable seed from the input, for choices the input makes. */
static uint64_t __attribute__((unused))
fnv1a(const uint8_t *p, size_t n)
{
	uint64_t	h = 0xcbf29ce484222325ULL;

	while (n-- > 0)
		h = (h ^ *p++) * 0x100000001b3ULL;
	return h;
}

/* xorshift64*: the next pseudo-random number from *state. */
static uint64_t __attribute__((unused))
prng(uint64_t *state)
{
	uint64_t	x = *state ? *state : 0x9e3779b97f4a7c15ULL;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

#endif /* FUZZLIB_H */
