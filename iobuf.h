/*
 * Client I/O: a bounded line reader and a coalescing reply writer.
 * fd 0 and fd 1 may be one socket or two pipes; nothing here depends on
 * socket calls.  Both sides wait with poll(), bounded by a timeout.
 */
#ifndef IOBUF_H
#define IOBUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#include "params.h"

enum line_status {
	LINE_OK,		/* a line, without its CRLF or LF */
	LINE_TOO_LONG,		/* over the limit: discarded to its end */
	LINE_BAD_BYTE,		/* NUL or another control byte */
	LINE_EOF,		/* end of input; a partial last line is dropped */
	LINE_TIMEOUT,
	LINE_ERROR,		/* read error */
	LINE_INTR		/* interrupted by a signal */
};

struct inbuf {
	int	fd;
	size_t	start, end;		/* unread bytes are data[start..end) */
	int	eof;
	int	discarding;		/* inside an over-long line */
	char	data[INBUF_SIZE];
};

struct outbuf {
	int	fd;
	int	timeout_ms;
	int	error;			/* errno of a failed write: session over */
	uint64_t sent;			/* bytes ever buffered */
	uint64_t written;		/* of those, bytes written */
	size_t	len;
	char	data[OUTBUF_SIZE];
};

void	inbuf_init(struct inbuf *, int fd);
/* Read one line of at most max octets into line (max + 1 bytes, NUL-terminated). */
enum line_status inbuf_getline(struct inbuf *, char *line, size_t max,
	    int timeout_ms);
/* Whether a complete line is already buffered (then replies may wait). */
int	inbuf_has_line(const struct inbuf *);
/* Bytes buffered but not yet read as lines (for the privsep handoff). */
size_t	inbuf_pending(const struct inbuf *, const char **data);
/* Preload bytes read by another process (len <= INBUF_SIZE). */
void	inbuf_preload(struct inbuf *, const char *data, size_t len);

void	outbuf_init(struct outbuf *, int fd, int timeout_ms);
/* Append bytes; flushes when full.  Returns -1 once a write failed. */
int	outbuf_put(struct outbuf *, const void *, size_t);
/* Room for at least n bytes (n <= OUTBUF_SIZE), flushing first if needed. */
char	*outbuf_reserve(struct outbuf *, size_t n);
/* Account for n bytes written into the space outbuf_reserve() gave. */
void	outbuf_commit(struct outbuf *, size_t n);
/* Write everything buffered.  Returns -1 on error or timeout. */
int	outbuf_flush(struct outbuf *);

#endif /* IOBUF_H */
