/*
 * Client I/O.  The reader keeps at most INBUF_SIZE bytes: an over-long
 * line is thrown away as it arrives, so memory never depends on what the
 * client sends.  The writer gathers replies and writes them in large
 * pieces; session.c flushes when no further command is buffered.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "iobuf.h"

static int	wait_fd(int fd, short events, int timeout_ms);

void
inbuf_init(struct inbuf *in, int fd)
{
	in->fd = fd;
	in->start = in->end = 0;
	in->eof = 0;
	in->discarding = 0;
}

/* 1 ready, 0 timeout, -1 error (errno EINTR when a signal came). */
static int
wait_fd(int fd, short events, int timeout_ms)
{
	struct pollfd	pfd;
	int		n;

	pfd.fd = fd;
	pfd.events = events;
	n = poll(&pfd, 1, timeout_ms);
	if (n == 0)
		return 0;
	if (n < 0)
		return -1;
	return 1;
}

/* Read more input after the buffered bytes; like read(2), plus timeout. */
static enum line_status
inbuf_fill(struct inbuf *in, int timeout_ms)
{
	ssize_t	n;
	int	ready;

	if (in->start > 0 && in->start == in->end)
		in->start = in->end = 0;
	if (in->start > 0) {
		memmove(in->data, in->data + in->start, in->end - in->start);
		in->end -= in->start;
		in->start = 0;
	}
	for (;;) {
		ready = wait_fd(in->fd, POLLIN, timeout_ms);
		if (ready == 0)
			return LINE_TIMEOUT;
		if (ready < 0)
			return errno == EINTR ? LINE_INTR : LINE_ERROR;
		n = read(in->fd, in->data + in->end, sizeof(in->data) - in->end);
		if (n > 0) {
			in->end += (size_t)n;
			return LINE_OK;
		}
		if (n == 0) {
			in->eof = 1;
			return LINE_EOF;
		}
		if (errno == EINTR)
			return LINE_INTR;
		/* A client that reset the connection has closed it. */
		if (errno == ECONNRESET) {
			in->eof = 1;
			return LINE_EOF;
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return LINE_ERROR;
	}
}

/* Throw input away up to and including the next LF. */
static enum line_status
inbuf_skip_line(struct inbuf *in, int timeout_ms)
{
	enum line_status st;
	char		*lf;

	in->discarding = 1;
	for (;;) {
		lf = memchr(in->data + in->start, '\n', in->end - in->start);
		if (lf != NULL) {
			in->start = (size_t)(lf - in->data) + 1;
			in->discarding = 0;
			return LINE_TOO_LONG;
		}
		in->start = in->end = 0;
		if ((st = inbuf_fill(in, timeout_ms)) != LINE_OK)
			return st;
	}
}

/* Control bytes (RFC 1939 section 3 allows printable text only). */
static int
has_bad_byte(const char *s, size_t len)
{
	size_t	i;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 1;
	return 0;
}

enum line_status
inbuf_getline(struct inbuf *in, char *line, size_t max, int timeout_ms)
{
	enum line_status st;
	char		*p, *lf;
	size_t		 len;

	if (in->discarding)
		return inbuf_skip_line(in, timeout_ms);
	for (;;) {
		p = in->data + in->start;
		lf = memchr(p, '\n', in->end - in->start);
		if (lf != NULL)
			break;
		if (in->end - in->start > max + 1)	/* +1: a CR may come */
			return inbuf_skip_line(in, timeout_ms);
		if (in->eof)
			return LINE_EOF;
		if ((st = inbuf_fill(in, timeout_ms)) != LINE_OK)
			return st;
	}
	len = (size_t)(lf - p);
	in->start += len + 1;
	if (len > 0 && p[len - 1] == '\r')
		len--;
	if (len > max)
		st = LINE_TOO_LONG;
	else if (has_bad_byte(p, len))
		st = LINE_BAD_BYTE;
	else {
		memcpy(line, p, len);
		line[len] = '\0';
		st = LINE_OK;
	}
	/* A consumed line may hold a password: keep no copy of it. */
	explicit_bzero(p, (size_t)(lf - p) + 1);
	return st;
}

int
inbuf_has_line(const struct inbuf *in)
{
	return memchr(in->data + in->start, '\n', in->end - in->start) != NULL;
}

size_t
inbuf_pending(const struct inbuf *in, const char **data)
{
	*data = in->data + in->start;
	return in->end - in->start;
}

void
inbuf_preload(struct inbuf *in, const char *data, size_t len)
{
	if (len > sizeof(in->data))
		len = sizeof(in->data);
	memcpy(in->data, data, len);
	in->start = 0;
	in->end = len;
}

void
outbuf_init(struct outbuf *out, int fd, int timeout_ms)
{
	out->fd = fd;
	out->timeout_ms = timeout_ms;
	out->error = 0;
	out->sent = out->written = 0;
	out->len = 0;
}

/*
 * Write everything buffered.  On failure out->error says why, for the
 * session's last log line: EPIPE or ECONNRESET (the client is gone),
 * ETIMEDOUT (it stopped reading), EINTR (a signal while waiting).
 */
int
outbuf_flush(struct outbuf *out)
{
	size_t	done = 0;
	ssize_t	n;
	int	ready;

	while (!out->error && done < out->len) {
		n = write(out->fd, out->data + done, out->len - done);
		if (n > 0) {
			done += (size_t)n;
			out->written += (uint64_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ready = wait_fd(out->fd, POLLOUT, out->timeout_ms);
			if (ready > 0)
				continue;
			out->error = ready == 0 ? ETIMEDOUT : errno;
		} else
			out->error = n < 0 ? errno : EIO;
		if (out->error == 0)
			out->error = EIO;
	}
	out->len = 0;
	return out->error ? -1 : 0;
}

char *
outbuf_reserve(struct outbuf *out, size_t n)
{
	if (sizeof(out->data) - out->len < n)
		outbuf_flush(out);
	return out->data + out->len;
}

void
outbuf_commit(struct outbuf *out, size_t n)
{
	out->len += n;
	out->sent += n;
}

int
outbuf_put(struct outbuf *out, const void *data, size_t len)
{
	const char	*p = data;
	size_t		 room;

	while (len > 0 && !out->error) {
		room = sizeof(out->data) - out->len;
		if (room == 0) {
			outbuf_flush(out);
			continue;
		}
		if (room > len)
			room = len;
		memcpy(out->data + out->len, p, room);
		out->len += room;
		out->sent += room;
		p += room;
		len -= room;
	}
	return out->error ? -1 : 0;
}
