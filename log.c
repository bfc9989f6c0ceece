/*
 * Logging after OpenBSD's daemons (ntpd log.c): syslog LOG_MAIL with
 * LOG_PID, or stderr when debugging.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#define LIBBSD_OPENBSD_VIS
#include <vis.h>

#include "log.h"

static int	log_to_stderr;

static void	vlog(int, const char *, va_list)
		    __attribute__((format(printf, 2, 0)));
static void	vlog_errno(int, const char *, va_list)
		    __attribute__((format(printf, 2, 0)));

void
log_init(int debug)
{
	log_to_stderr = debug;
	/* LOG_NDELAY: connect now, before a chroot hides /dev/log. */
	if (!debug)
		openlog("pop3d", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

static void
vlog(int pri, const char *fmt, va_list ap)
{
	if (log_to_stderr) {
		fprintf(stderr, "pop3d[%ld]: ", (long)getpid());
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		fflush(stderr);
	} else
		vsyslog(pri, fmt, ap);
}

/* The message, ": ", and errno's text, saved before anything can change it. */
static void
vlog_errno(int pri, const char *fmt, va_list ap)
{
	char	msg[512];
	int	saved = errno;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (log_to_stderr) {
		fprintf(stderr, "pop3d[%ld]: %s: %s\n", (long)getpid(), msg,
		    strerror(saved));
		fflush(stderr);
	} else
		syslog(pri, "%s: %s", msg, strerror(saved));
	errno = saved;
}

void
log_warn(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vlog_errno(LOG_WARNING, fmt, ap);
	va_end(ap);
}

void
log_warnx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vlog(LOG_WARNING, fmt, ap);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vlog(LOG_INFO, fmt, ap);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list	ap;

	if (!log_to_stderr)
		return;
	va_start(ap, fmt);
	vlog(LOG_DEBUG, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vlog_errno(LOG_CRIT, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vlog(LOG_CRIT, fmt, ap);
	va_end(ap);
	exit(1);
}

/*
 * strvis(3) with VIS_SAFE-less, octal-escaping flags: every byte that is
 * not printable ASCII becomes visible, so a log line cannot be forged.
 */
const char *
log_safe(char *dst, size_t dstlen, const char *src, size_t srclen)
{
	char	buf[4 * 256 + 1];

	if (dstlen == 0)
		return dst;
	if (srclen > 256)
		srclen = 256;
	strnvisx(buf, sizeof(buf), src, srclen, VIS_OCTAL | VIS_CSTYLE |
	    VIS_TAB | VIS_NL);
	strlcpy(dst, buf, dstlen);
	return dst;
}
