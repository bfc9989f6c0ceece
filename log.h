/*
 * Logging in the OpenBSD style: syslog LOG_MAIL with LOG_PID, or stderr
 * in debug mode (under inetd, fds 0-2 are the client: never stderr
 * unless asked).  Attacker bytes go only into arguments, made safe with
 * log_safe(), never into a format string.
 */
#ifndef LOG_H
#define LOG_H

#include <stddef.h>
#include <stdarg.h>

/* Start logging; debug != 0 logs to stderr, including log_debug(). */
void	log_init(int debug);
/* Log with errno's text appended. */
void	log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
/* Log and exit(1). */
void	fatal(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
void	fatalx(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Copy src (at most srclen bytes) into dst as strvis(3) text, truncated to fit. */
const char *log_safe(char *dst, size_t dstlen, const char *src, size_t srclen);

#endif /* LOG_H */
