/*
 * maildrop.c on temp files: mbox parsing against a reference parser,
 * sizes against the bytes streamed, TOP, UIDL properties, the commit
 * and its undo journal (with crashes and I/O errors injected at every
 * write-type call), and the three locks.
 *
 * Fault injection: this file defines pwrite(), fsync(), ftruncate() and
 * sync_file_range(); maildrop.o, linked into the same executable, calls
 * these instead of libc's.  Disarmed, they pass straight to the system
 * call.
 */
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <lockfile.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
/* XXH3 for a journal header of the previous format. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "iobuf.h"
#include "log.h"
#include "maildrop.h"
#include "params.h"

/* Fault injection. */

enum fault_mode {
	FAULT_OFF,
	FAULT_CRASH,		/* _exit() instead of call k: kill -9 */
	FAULT_CRASH_TORN,	/* half of write k done, then _exit() */
	FAULT_ERROR,		/* call k fails with fault.error */
	FAULT_ERROR_ALL,	/* call k and every later one fail */
	FAULT_APPEND		/* before call k, another process appends */
};

static struct {
	enum fault_mode	mode;
	int		target;		/* 1-based */
	int		calls;
	int		hit;
	int		error;
	const char	*call;		/* the wrapper that hit */
} fault;

/* What FAULT_APPEND adds: a delivery by an MDA that broke the locks. */
static const char	late_mail[] = "From late\nS: l\n\nlate mail\n";
static const char	*fault_path;

#define CRASH_STATUS	77

static void
fault_arm(enum fault_mode mode, int target, int error)
{
	fault.mode = mode;
	fault.target = target;
	fault.calls = 0;
	fault.hit = 0;
	fault.error = error;
}

/* 1: fail this call, 2: tear it; or does not return. */
static int
fault_check_in(const char *call)
{
	int	fd;

	if (fault.mode == FAULT_OFF)
		return 0;
	if (++fault.calls < fault.target)
		return 0;
	if ((fault.mode == FAULT_ERROR || fault.mode == FAULT_APPEND) &&
	    fault.calls != fault.target)
		return 0;
	fault.hit = 1;
	fault.call = call;
	if (fault.mode == FAULT_APPEND) {
		fd = open(fault_path, O_WRONLY | O_APPEND);
		if (fd == -1 || write(fd, late_mail, sizeof(late_mail) - 1) !=
		    (ssize_t)sizeof(late_mail) - 1)
			abort();
		close(fd);
		return 0;
	}
	if (fault.mode == FAULT_CRASH)
		_exit(CRASH_STATUS);
	if (fault.mode == FAULT_CRASH_TORN)
		return 2;
	errno = fault.error;
	return 1;
}

/*
 * A commit's reads count too, for FAULT_APPEND only: a delivery may come
 * before any of them (the index's are left out, as crash_commit() does).
 */
static int	commit_reads_count;

ssize_t
pread(int fd, void *buf, size_t n, off_t off)
{
	if (commit_reads_count && fault.mode == FAULT_APPEND)
		(void)fault_check_in("pread");
	return syscall(SYS_pread64, fd, buf, n, off);
}

ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
	switch (fault_check_in("pwrite")) {
	case 1:
		return -1;
	case 2:
		syscall(SYS_pwrite64, fd, buf, n / 2, off);
		_exit(CRASH_STATUS);
	}
	return syscall(SYS_pwrite64, fd, buf, n, off);
}

int
fsync(int fd)
{
	int	r = fault_check_in("fsync");

	if (r == 2)
		_exit(CRASH_STATUS);
	return r ? -1 : (int)syscall(SYS_fsync, fd);
}

int
ftruncate(int fd, off_t len)
{
	int	r = fault_check_in("ftruncate");

	if (r == 2)
		_exit(CRASH_STATUS);
	return r ? -1 : (int)syscall(SYS_ftruncate, fd, len);
}

static int	writeback_calls;

int
sync_file_range(int fd, off_t off, off_t n, unsigned int flags)
{
	int	r = fault_check_in("sync_file_range");

	writeback_calls++;
	if (r == 2)
		_exit(CRASH_STATUS);
	return r ? -1 : (int)syscall(SYS_sync_file_range, fd, off, n, flags);
}

/* Fixture: a mbox, its journal, and a file that receives the output. */

static struct {
	char	mbox[64];
	char	journal[64];
	char	out[64];
	int	jfd;
	char	why[256];
} fx;

static void
make_temp(char *path, const char *tmpl, int *fdp)
{
	int	fd;

	memcpy(path, tmpl, strlen(tmpl) + 1);
	fd = mkstemp(path);
	cr_assert(fd != -1);
	if (fdp != NULL)
		*fdp = fd;
	else
		close(fd);
}

static void
setup(void)
{
	log_init(0);
	memset(&fault, 0, sizeof(fault));
	make_temp(fx.mbox, "/tmp/md-test-mbox.XXXXXX", NULL);
	make_temp(fx.journal, "/tmp/md-test-journal.XXXXXX", &fx.jfd);
	make_temp(fx.out, "/tmp/md-test-out.XXXXXX", NULL);
}

static void
teardown(void)
{
	char	path[80];

	fault.mode = FAULT_OFF;
	snprintf(path, sizeof(path), "%s.lock", fx.mbox);
	unlink(path);
	snprintf(path, sizeof(path), "%s.link", fx.mbox);
	unlink(path);
	unlink(fx.mbox);
	unlink(fx.journal);
	unlink(fx.out);
	close(fx.jfd);
}

TestSuite(maildrop, .init = setup, .fini = teardown, .timeout = 120);

static void
write_file(const char *path, const char *data, size_t len)
{
	int	fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(fd != -1);
	cr_assert(write(fd, data, len) == (ssize_t)len);
	close(fd);
}

static void
append_file(const char *path, const char *data)
{
	int	fd;

	fd = open(path, O_WRONLY | O_APPEND);
	cr_assert(fd != -1);
	cr_assert(write(fd, data, strlen(data)) == (ssize_t)strlen(data));
	close(fd);
}

static char *
read_file(const char *path, size_t *lenp)
{
	struct stat	 st;
	char		*buf;
	int		 fd;

	fd = open(path, O_RDONLY);
	cr_assert(fd != -1, "%s: %s", path, strerror(errno));
	cr_assert(fstat(fd, &st) == 0);
	buf = malloc((size_t)st.st_size + 1);
	cr_assert(buf != NULL);
	cr_assert(read(fd, buf, (size_t)st.st_size) == st.st_size);
	buf[st.st_size] = '\0';
	close(fd);
	if (lenp != NULL)
		*lenp = (size_t)st.st_size;
	return buf;
}

static off_t
file_size(const char *path)
{
	struct stat	st;

	cr_assert(stat(path, &st) == 0);
	return st.st_size;
}

static void
put_mbox(const char *data)
{
	write_file(fx.mbox, data, strlen(data));
}

static enum md_status
md_try(struct maildrop **mdp)
{
	return maildrop_open(mdp, fx.mbox, dup(fx.jfd), fx.why,
	    sizeof(fx.why));
}

static struct maildrop *
md_open(void)
{
	struct maildrop	*md;
	enum md_status	 st;

	st = md_try(&md);
	cr_assert_eq(st, MD_OK, "open: %d %s", st, fx.why);
	cr_assert(md != NULL);
	return md;
}

static void
md_commit(struct maildrop *md)
{
	enum md_status	st;

	st = maildrop_commit(md, fx.why, sizeof(fx.why));
	cr_assert_eq(st, MD_OK, "commit: %d %s", st, fx.why);
}

/* What maildrop_send() writes, through a real outbuf into a file. */
static char *
md_send(struct maildrop *md, size_t msg, long lines, size_t *lenp)
{
	struct outbuf	*out;
	int		 fd;

	fd = open(fx.out, O_WRONLY | O_TRUNC);
	cr_assert(fd != -1);
	out = malloc(sizeof(*out));
	cr_assert(out != NULL);
	outbuf_init(out, fd, 1000);
	cr_assert_eq(maildrop_send(md, msg, lines, out), 0);
	cr_assert_eq(outbuf_flush(out), 0);
	free(out);
	close(fd);
	return read_file(fx.out, lenp);
}

/*
 * Undo dot-stuffing; every line must end with CRLF.  Returns the new
 * length; *dots counts the stuffing dots.
 */
static size_t
unstuff(char *buf, size_t len, size_t *dots)
{
	size_t	i = 0, o = 0;
	int	bol = 1;

	*dots = 0;
	for (i = 0; i < len; i++) {
		if (bol && buf[i] == '.') {
			cr_assert(i + 1 < len && buf[i + 1] == '.',
			    "unstuffed dot at %zu", i);
			(*dots)++;
			i++;
		}
		bol = buf[i] == '\n';
		if (bol)
			cr_assert(i > 0 && buf[i - 1] == '\r', "bare LF");
		buf[o++] = buf[i];
	}
	cr_assert(len == 0 || bol, "last line not terminated");
	return o;
}

/* RETR of msg: unstuffed, equal to want, and as long as the size said. */
static void
check_retr(struct maildrop *md, size_t msg, const char *want)
{
	char	*got;
	size_t	 len, dots;

	got = md_send(md, msg, -1, &len);
	len = unstuff(got, len, &dots);
	got[len] = '\0';
	cr_assert_str_eq(got, want, "message %zu", msg);
	cr_assert_eq(maildrop_size(md, msg), len);
	free(got);
}

static void
check_sent(struct maildrop *md, size_t msg, long lines, const char *want)
{
	char	*got;
	size_t	 len;

	got = md_send(md, msg, lines, &len);
	cr_assert_eq(len, strlen(want), "len %zu, want %zu", len,
	    strlen(want));
	cr_assert_str_eq(got, want);
	free(got);
}

static void
check_uidl_format(const char *u)
{
	size_t	i, n = strlen(u);

	cr_assert(n >= 1 && n <= 70, "uidl length %zu", n);
	for (i = 0; i < n; i++)
		cr_assert(u[i] >= 0x21 && u[i] <= 0x7e, "uidl byte %zu", i);
}

static void
check_file(const char *want)
{
	char	*got = read_file(fx.mbox, NULL);

	cr_assert_str_eq(got, want);
	free(got);
}

/* Parsing. */

Test(maildrop, lf_messages)
{
	struct maildrop	*md;
	size_t		 n;
	uint64_t	 octets;

	put_mbox("From a@b Mon Jan  1 00:00:00 2024\nSubject: one\n\nbody 1\n"
	    "\n"
	    "From c@d Mon Jan  1 00:00:00 2024\nSubject: two\n\nline\nline2\n"
	    "\n"
	    "From e@f Mon Jan  1 00:00:00 2024\nSubject: three\n\n3\n");
	md = md_open();
	cr_assert_eq(maildrop_count(md), 3);
	check_retr(md, 0, "Subject: one\r\n\r\nbody 1\r\n");
	check_retr(md, 1, "Subject: two\r\n\r\nline\r\nline2\r\n");
	check_retr(md, 2, "Subject: three\r\n\r\n3\r\n");
	maildrop_stat(md, &n, &octets);
	cr_assert_eq(n, 3);
	cr_assert_eq(octets, 24 + 29 + 21);
	maildrop_close(md);
}

Test(maildrop, crlf_file_same_sizes_and_uidls_as_lf)
{
	struct maildrop	*md;
	char		 u1[UIDL_BUFSIZE], u2[UIDL_BUFSIZE];

	put_mbox("From a\nSubject: x\n\nhello\n\nFrom b\nSubject: y\n\nbye\n");
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2);
	maildrop_uidl(md, 0, u1);
	maildrop_uidl(md, 1, u2);
	maildrop_close(md);
	put_mbox("From a\r\nSubject: x\r\n\r\nhello\r\n\r\nFrom b\r\n"
	    "Subject: y\r\n\r\nbye\r\n");
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2);
	check_retr(md, 0, "Subject: x\r\n\r\nhello\r\n");
	check_retr(md, 1, "Subject: y\r\n\r\nbye\r\n");
	cr_assert_str_eq(maildrop_uidl(md, 0, fx.why), u1);
	cr_assert_str_eq(maildrop_uidl(md, 1, fx.why), u2);
	maildrop_close(md);
}

Test(maildrop, last_message_without_newline)
{
	struct maildrop	*md;

	put_mbox("From a\nS: 1\n\nfirst\n\nFrom b\nS: 2\n\nno newline");
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2);
	check_retr(md, 1, "S: 2\r\n\r\nno newline\r\n");
	cr_assert_eq(maildrop_size(md, 1), 20);
	maildrop_close(md);
}

Test(maildrop, lone_cr_kept_and_cr_at_eof)
{
	struct maildrop	*md;

	put_mbox("From a\nS: 1\n\na\rb\nend\r");
	md = md_open();
	check_retr(md, 0, "S: 1\r\n\r\na\rb\r\nend\r\r\n");
	maildrop_close(md);
}

Test(maildrop, empty_file)
{
	struct maildrop	*md;
	size_t		 n;
	uint64_t	 octets;

	put_mbox("");
	md = md_open();
	maildrop_stat(md, &n, &octets);
	cr_assert_eq(n, 0);
	cr_assert_eq(octets, 0);
	md_commit(md);
	maildrop_close(md);
	cr_assert_eq(file_size(fx.mbox), 0);
}

Test(maildrop, missing_file_is_empty_and_not_created)
{
	struct maildrop	*md;
	char		 lock[80];

	unlink(fx.mbox);
	md = md_open();
	cr_assert_eq(maildrop_count(md), 0);
	snprintf(lock, sizeof(lock), "%s.lock", fx.mbox);
	cr_assert(access(lock, F_OK) == -1);
	maildrop_touch(md);
	md_commit(md);
	maildrop_close(md);
	cr_assert(access(fx.mbox, F_OK) == -1 && errno == ENOENT);
}

/*
 * A session that locks by itself (a maildrop whose directory its user
 * may write: -m %h/...) makes the dot-lock readable by all whatever the
 * umask (systemd's UMask=0077): MDAs read the pid in it.
 */
Test(maildrop, own_dot_lock_is_readable_by_all_whatever_the_umask)
{
	struct maildrop	*md;
	struct stat	 st;
	char		 lock[80];
	mode_t		 old;

	put_mbox("From a@b Mon Jan  1 00:00:00 2024\nSubject: one\n\n1\n");
	snprintf(lock, sizeof(lock), "%s.lock", fx.mbox);
	old = umask(077);
	md = md_open();
	(void)umask(old);
	cr_assert_eq(stat(lock, &st), 0, "no dot-lock while open");
	cr_assert_eq(st.st_mode & 0777, 0644, "dot-lock mode %o",
	    (unsigned)(st.st_mode & 0777));
	maildrop_close(md);
	cr_assert(access(lock, F_OK) == -1, "dot-lock left behind");
}

Test(maildrop, single_message_headers_only)
{
	struct maildrop	*md;

	put_mbox("From a\nSubject: only headers\n");
	md = md_open();
	cr_assert_eq(maildrop_count(md), 1);
	check_retr(md, 0, "Subject: only headers\r\n");
	check_sent(md, 0, 0, "Subject: only headers\r\n");
	check_sent(md, 0, 5, "Subject: only headers\r\n");
	maildrop_close(md);
}

Test(maildrop, from_line_only_messages)
{
	struct maildrop	*md;

	put_mbox("From a\n\nFrom b\nFrom c\n\nFrom d");
	md = md_open();
	cr_assert_eq(maildrop_count(md), 3);
	check_retr(md, 0, "");
	check_retr(md, 1, "From c\r\n");
	check_retr(md, 2, "");
	maildrop_close(md);
}

Test(maildrop, from_in_body_needs_blank_line_before)
{
	struct maildrop	*md;

	put_mbox("From a\nS: 1\n\ntext\nFrom here on\n>From quoted\n\n"
	    "From b\nS: 2\n\nx\n");
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2);
	check_retr(md, 0, "S: 1\r\n\r\ntext\r\nFrom here on\r\n"
	    ">From quoted\r\n");
	maildrop_close(md);
}

Test(maildrop, only_one_separator_line_is_dropped)
{
	struct maildrop	*md;

	put_mbox("From a\nS: 1\n\nx\n\n\nFrom b\nS: 2\n\ny\n\n\n");
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2);
	check_retr(md, 0, "S: 1\r\n\r\nx\r\n\r\n");
	check_retr(md, 1, "S: 2\r\n\r\ny\r\n\r\n");
	maildrop_close(md);
}

Test(maildrop, blank_line_ending_headers_can_be_the_separator)
{
	struct maildrop	*md;

	put_mbox("From a\nS: 1\n\nFrom b\nS: 2\n\nbody\n");
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2);
	check_retr(md, 0, "S: 1\r\n");
	check_sent(md, 0, 3, "S: 1\r\n");
	maildrop_close(md);
}

Test(maildrop, dot_lines_are_stuffed)
{
	struct maildrop	*md;

	put_mbox("From a\nS: 1\n\n.\n..\n.x\nx.\n");
	md = md_open();
	check_sent(md, 0, -1, "S: 1\r\n\r\n..\r\n...\r\n..x\r\nx.\r\n");
	check_retr(md, 0, "S: 1\r\n\r\n.\r\n..\r\n.x\r\nx.\r\n");
	maildrop_close(md);
}

Test(maildrop, content_length_is_not_trusted)
{
	struct maildrop	*md;

	put_mbox("From a\nContent-Length: 1000\n\nshort\n\nFrom b\n"
	    "Content-Length: 0\n\nlong body\n");
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2);
	check_retr(md, 1, "Content-Length: 0\r\n\r\nlong body\r\n");
	maildrop_close(md);
}

Test(maildrop, top)
{
	struct maildrop	*md;

	put_mbox("From a\nS: 1\nT: 2\n\nl1\n.l2\nl3\n");
	md = md_open();
	check_sent(md, 0, 0, "S: 1\r\nT: 2\r\n\r\n");
	check_sent(md, 0, 1, "S: 1\r\nT: 2\r\n\r\nl1\r\n");
	check_sent(md, 0, 2, "S: 1\r\nT: 2\r\n\r\nl1\r\n..l2\r\n");
	check_sent(md, 0, 3, "S: 1\r\nT: 2\r\n\r\nl1\r\n..l2\r\nl3\r\n");
	check_sent(md, 0, 100, "S: 1\r\nT: 2\r\n\r\nl1\r\n..l2\r\nl3\r\n");
	maildrop_close(md);
}

Test(maildrop, top_without_body_and_without_final_newline)
{
	struct maildrop	*md;

	put_mbox("From a\nS: 1\n\n\nFrom b\nS: 2\n\nl1\nl2");
	md = md_open();
	check_sent(md, 0, 0, "S: 1\r\n\r\n");
	check_sent(md, 0, 10, "S: 1\r\n\r\n");
	check_sent(md, 1, 1, "S: 2\r\n\r\nl1\r\n");
	check_sent(md, 1, 2, "S: 2\r\n\r\nl1\r\nl2\r\n");
	maildrop_close(md);
}

Test(maildrop, pseudo_message_is_hidden_and_kept)
{
	static const char pseudo[] =
	    "From MAILER-DAEMON Mon Jan  1 00:00:00 2024\n"
	    "Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
	    "X-IMAP: 1234567890 0000000002\n\nThis text is part of the "
	    "internal format of your mail folder.\n\n";
	struct maildrop	*md;
	char		*data;
	size_t		 n;
	uint64_t	 octets;

	cr_assert(asprintf(&data, "%sFrom a\nS: 1\n\nx\n\nFrom b\nS: 2\n\n"
	    "y\n", pseudo) > 0);
	put_mbox(data);
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2);
	check_retr(md, 0, "S: 1\r\n\r\nx\r\n");
	maildrop_stat(md, &n, &octets);
	cr_assert_eq(n, 2);
	maildrop_delete(md, 0);
	maildrop_delete(md, 1);
	md_commit(md);
	maildrop_close(md);
	check_file(pseudo);
	md = md_open();
	cr_assert_eq(maildrop_count(md), 0);
	maildrop_close(md);
	free(data);
}

/*
 * Only UW's three marks together make the pseudo-message: an X-IMAP
 * header or the Subject alone is the sender's to forge, and a message
 * must not become invisible when the ones before it are deleted.
 */
Test(maildrop, pseudo_message_needs_all_three_marks_and_only_first)
{
	struct maildrop	*md;
	static const char pseudo[] = "From MAILER-DAEMON Sat Nov 21 10:00:00 "
	    "2026\nSubject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL "
	    "DATA\nX-IMAP: 1 2\n\nstate\n\n";
	char		*mbox;

	cr_assert(asprintf(&mbox, "%sFrom b\nS: 1\n\nreal\n", pseudo) > 0);
	put_mbox(mbox);
	md = md_open();
	cr_assert_eq(maildrop_count(md), 1);
	check_retr(md, 0, "S: 1\r\n\r\nreal\r\n");
	maildrop_close(md);
	free(mbox);
	put_mbox("From a\nX-IMAP: 1 2\n\n\nFrom b\nX-IMAP: 1 2\n\nreal\n");
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2);
	maildrop_close(md);
	put_mbox("From a\nSubject: DON'T DELETE THIS MESSAGE -- FOLDER "
	    "INTERNAL DATA\nX-IMAP: 1 2\n\nx\n\nFrom b\nS: 1\n\nreal\n");
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2, "a forged pseudo-message hid");
	maildrop_close(md);
	/* Only the first message can be the pseudo-message. */
	cr_assert(asprintf(&mbox, "From a\nS: 1\n\nx\n\n%s", pseudo) > 0);
	put_mbox(mbox);
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2);
	maildrop_close(md);
	free(mbox);
}

/*
 * A bounce (empty envelope sender: Postfix writes "From MAILER-DAEMON")
 * can carry UW's Subject and X-IMAP header; its Received: header says
 * it came as mail, so it is listed even when it is or becomes first.
 */
Test(maildrop, pseudo_message_that_came_as_mail_is_listed)
{
	struct maildrop	*md;
	static const char bounce[] = "From MAILER-DAEMON Sat Nov 21 10:00:00 "
	    "2026\nReceived: from mx.example by here\nSubject: DON'T DELETE "
	    "THIS MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 1 2\n\nspam\n";
	char		*mbox;

	put_mbox(bounce);
	md = md_open();
	cr_assert_eq(maildrop_count(md), 1, "a bounce hid itself");
	maildrop_close(md);
	cr_assert(asprintf(&mbox, "From a\nS: 1\n\nx\n\n%s", bounce) > 0);
	put_mbox(mbox);
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2);
	maildrop_delete(md, 0);
	md_commit(md);
	maildrop_close(md);
	check_file(bounce);
	md = md_open();
	cr_assert_eq(maildrop_count(md), 1, "hid once it became first");
	check_retr(md, 0, "Received: from mx.example by here\r\nSubject: "
	    "DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\r\n"
	    "X-IMAP: 1 2\r\n\r\nspam\r\n");
	maildrop_close(md);
	free(mbox);
}

static void
check_refused(const char *data, size_t len, enum md_status want,
    const char *reason)
{
	struct maildrop	*md = NULL;
	struct stat	 before, after;
	char		*got;
	size_t		 got_len;

	write_file(fx.mbox, data, len);
	cr_assert(stat(fx.mbox, &before) == 0);
	cr_assert_eq(md_try(&md), want, "%s", fx.why);
	cr_assert(md == NULL);
	cr_assert(strstr(fx.why, reason) != NULL, "why: %s", fx.why);
	cr_assert(stat(fx.mbox, &after) == 0);
	cr_assert(before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
	    before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);
	got = read_file(fx.mbox, &got_len);
	cr_assert(got_len == len && memcmp(got, data, len) == 0);
	free(got);
}

Test(maildrop, not_a_mbox_is_refused_and_untouched)
{
	check_refused("Hello\n", 6, MD_SYSPERM, "not a mbox");
	check_refused("From", 4, MD_SYSPERM, "not a mbox");
	check_refused("\n\nHello\n\nFrom a\n\nx\n", 20, MD_SYSPERM,
	    "not a mbox");
	check_refused(" \nFrom a\n\nx\n", 12, MD_SYSPERM, "not a mbox");
	check_refused("from a\n\nx\n", 10, MD_SYSPERM, "not a mbox");
}

/*
 * `echo > spool` leaves one newline, and an MDA then appends after it:
 * empty lines before the first message are no message, and stay.
 */
Test(maildrop, empty_lines_before_the_first_message)
{
	struct maildrop	*md;
	size_t		 n;
	uint64_t	 octets;

	put_mbox("\n");
	md = md_open();
	maildrop_stat(md, &n, &octets);
	cr_assert(n == 0 && octets == 0, "%zu messages, %ju octets", n,
	    (uintmax_t)octets);
	md_commit(md);
	maildrop_close(md);
	check_file("\n");

	put_mbox("\r\n\nFrom a\nS: 1\n\none\n\nFrom b\nS: 2\n\ntwo\n");
	md = md_open();
	maildrop_stat(md, &n, &octets);
	cr_assert_eq(n, 2);
	cr_assert_eq(maildrop_size(md, 0), 13);	/* S: 1, empty, one; CRLF */
	maildrop_delete(md, 0);
	md_commit(md);
	maildrop_close(md);
	check_file("\r\n\nFrom b\nS: 2\n\ntwo\n");
}

Test(maildrop, symlink_is_refused)
{
	struct maildrop	*md;
	char		 other[80];

	put_mbox("From a\n\nx\n");
	snprintf(other, sizeof(other), "%s.link", fx.mbox);
	cr_assert(symlink(fx.mbox, other) == 0);
	cr_assert_eq(maildrop_open(&md, other, -1, fx.why, sizeof(fx.why)),
	    MD_SYSPERM);
	cr_assert(strstr(fx.why, "symbolic link") != NULL, "%s", fx.why);
}

Test(maildrop, second_hard_link_is_refused)
{
	struct maildrop	*md;
	char		 other[80];

	put_mbox("From a\n\nx\n");
	snprintf(other, sizeof(other), "%s.link", fx.mbox);
	cr_assert(link(fx.mbox, other) == 0);
	cr_assert_eq(md_try(&md), MD_SYSPERM);
	cr_assert(strstr(fx.why, "2 links") != NULL, "%s", fx.why);
}

Test(maildrop, directory_and_fifo_are_refused)
{
	struct maildrop	*md;

	unlink(fx.mbox);
	cr_assert(mkdir(fx.mbox, 0700) == 0);
	cr_assert_eq(md_try(&md), MD_SYSPERM, "%s", fx.why);
	rmdir(fx.mbox);
	cr_assert(mkfifo(fx.mbox, 0600) == 0);
	cr_assert_eq(md_try(&md), MD_SYSPERM, "%s", fx.why);
	cr_assert(strstr(fx.why, "regular") != NULL, "%s", fx.why);
}

Test(maildrop, foreign_owner_is_refused)
{
	struct maildrop	*md;

	if (geteuid() != 0)
		cr_skip_test("needs root to chown");
	put_mbox("From a\n\nx\n");
	cr_assert(chown(fx.mbox, 65534, 65534) == 0);
	cr_assert_eq(md_try(&md), MD_SYSPERM);
	cr_assert(strstr(fx.why, "owned by") != NULL, "%s", fx.why);
}

static void
write_n_messages(size_t n)
{
	static const char	one[] = "From \n\n";
	char			*data;
	size_t			 i, len = sizeof(one) - 1;

	data = malloc(n * len);
	cr_assert(data != NULL);
	for (i = 0; i < n; i++)
		memcpy(data + i * len, one, len);
	write_file(fx.mbox, data, n * len);
	free(data);
}

Test(maildrop, max_messages)
{
	struct maildrop	*md;

	write_n_messages(MAX_MESSAGES);
	md = md_open();
	cr_assert_eq(maildrop_count(md), MAX_MESSAGES);
	maildrop_close(md);
	write_n_messages(MAX_MESSAGES + 1);
	cr_assert_eq(md_try(&md), MD_SYSPERM);
	cr_assert(strstr(fx.why, "MAX_MESSAGES") != NULL, "%s", fx.why);
}

Test(maildrop, max_maildrop_bytes)
{
	struct maildrop	*md;

	put_mbox("From a\n\nx\n");
	cr_assert(truncate(fx.mbox, MAX_MAILDROP_BYTES + 1) == 0);
	cr_assert_eq(md_try(&md), MD_SYSPERM);
	cr_assert(strstr(fx.why, "MAX_MAILDROP_BYTES") != NULL, "%s", fx.why);
	cr_assert_eq(file_size(fx.mbox), MAX_MAILDROP_BYTES + 1);
}

/*
 * A reference mbox parser, naive and whole-file, to check the
 * streaming one on generated spools.
 */

struct ref_msg {
	size_t	from, text, end, hdr_end;
};

static int
ref_empty(const char *p, size_t n)
{
	return (n == 1 && p[0] == '\n') || (n == 2 && p[0] == '\r' &&
	    p[1] == '\n');
}

static size_t
ref_line_len(const char *data, size_t len, size_t off)
{
	const char	*nl = memchr(data + off, '\n', len - off);

	return nl != NULL ? (size_t)(nl + 1 - (data + off)) : len - off;
}

/* Message boundaries; returns the count. */
static size_t
ref_parse(const char *data, size_t len, struct ref_msg *m, size_t max)
{
	size_t	off, n, cnt = 0, prev_at = 0;
	int	prev_empty = 1, in_hdr = 0;

	for (off = 0; off < len; off += n) {
		n = ref_line_len(data, len, off);
		if (prev_empty && n >= 5 &&
		    memcmp(data + off, "From ", 5) == 0) {
			if (cnt > 0)
				m[cnt - 1].end = prev_empty && off > 0 ?
				    prev_at : off;
			cr_assert(cnt < max);
			m[cnt].from = off;
			m[cnt].text = off + n;
			m[cnt].hdr_end = (size_t)-1;
			cnt++;
			in_hdr = 1;
			prev_empty = 0;
			continue;
		}
		if (in_hdr && ref_empty(data + off, n)) {
			m[cnt - 1].hdr_end = off + n;
			in_hdr = 0;
		}
		prev_empty = ref_empty(data + off, n);
		prev_at = off;
	}
	if (cnt > 0)
		m[cnt - 1].end = prev_empty ? prev_at : len;
	for (n = 0; n < cnt; n++)
		if (m[n].hdr_end > m[n].end)
			m[n].hdr_end = m[n].end;
	return cnt;
}

/* POP3 form of text[0..len), first `lines` lines only if lines >= 0. */
static size_t
ref_pop(const char *text, size_t len, long lines, char *out)
{
	size_t	off = 0, n, o = 0, k;

	while (off < len && lines != 0) {
		n = ref_line_len(text, len, off);
		k = text[off + n - 1] == '\n' ? n - 1 : n;
		if (text[off] == '.')
			out[o++] = '.';
		memcpy(out + o, text + off, k);
		o += k;
		if (k == n || k == 0 || text[off + k - 1] != '\r')
			out[o++] = '\r';
		out[o++] = '\n';
		off += n;
		if (lines > 0)
			lines--;
	}
	return o;
}

static void
ref_check(struct maildrop *md, const char *data, size_t len)
{
	struct ref_msg	*m;
	size_t		 cnt, i, glen, wlen, dots;
	char		*got, *want;
	long		 lines;

	m = calloc(len / 6 + 2, sizeof(*m));
	cr_assert(m != NULL);
	cnt = ref_parse(data, len, m, len / 6 + 2);
	cr_assert_eq(maildrop_count(md), cnt);
	want = malloc(2 * len + 4);
	cr_assert(want != NULL);
	for (i = 0; i < cnt; i++) {
		wlen = ref_pop(data + m[i].text, m[i].end - m[i].text, -1,
		    want);
		got = md_send(md, i, -1, &glen);
		cr_assert(glen == wlen && memcmp(got, want, wlen) == 0,
		    "message %zu: got %zu bytes, want %zu", i, glen, wlen);
		glen = unstuff(got, glen, &dots);
		cr_assert_eq(maildrop_size(md, i), glen, "size of %zu", i);
		free(got);
		lines = (long)(i % 4);
		wlen = ref_pop(data + m[i].text, m[i].hdr_end - m[i].text, -1,
		    want);
		wlen += ref_pop(data + m[i].hdr_end, m[i].end - m[i].hdr_end,
		    lines, want + wlen);
		got = md_send(md, i, lines, &glen);
		cr_assert(glen == wlen && memcmp(got, want, wlen) == 0,
		    "TOP %zu %ld", i, lines);
		free(got);
	}
	free(want);
	free(m);
}

/* Generated spools. */

struct gen {
	char		*buf;
	size_t		 len, cap;
	uint64_t	 rng;
	int		 crlf;		/* 0 LF, 1 CRLF, 2 mixed */
	int		 plain;		/* no CR but in line ends */
};

static uint32_t
rnd(struct gen *g, uint32_t n)
{
	g->rng ^= g->rng << 13;
	g->rng ^= g->rng >> 7;
	g->rng ^= g->rng << 17;
	return (uint32_t)(g->rng >> 11) % n;
}

static void
gen_put(struct gen *g, const char *p, size_t n)
{
	while (g->len + n + 1 > g->cap) {
		g->cap = g->cap ? g->cap * 2 : 1 << 20;
		g->buf = realloc(g->buf, g->cap);
		cr_assert(g->buf != NULL);
	}
	memcpy(g->buf + g->len, p, n);
	g->len += n;
	g->buf[g->len] = '\0';
}

static void
gen_eol(struct gen *g)
{
	if (g->crlf == 1 || (g->crlf == 2 && rnd(g, 2)))
		gen_put(g, "\r\n", 2);
	else
		gen_put(g, "\n", 1);
}

static void
gen_line(struct gen *g, const char *s)
{
	gen_put(g, s, strlen(s));
	gen_eol(g);
}

static void
gen_text(struct gen *g, size_t n)
{
	static const char	alpha[] = "abcdefghij klmnop.>From";
	size_t			i;
	char			c;

	for (i = 0; i < n; i++) {
		c = alpha[rnd(g, sizeof(alpha) - 1)];
		gen_put(g, &c, 1);
	}
}

static void
gen_headers(struct gen *g)
{
	static const char *const hdrs[] = {
		"Subject: hello", "Status: RO", "X-UID: 12", "To: x@y",
		"Content-Length: 12", " continued", "\tcontinued too",
		"X-Keywords: a b", "Received: from somewhere",
		"Message-ID: <m@x>"
	};
	uint32_t	i, n = rnd(g, 6);

	for (i = 0; i < n; i++) {
		if (rnd(g, 20) == 0) {
			gen_put(g, "X-Long: ", 8);
			gen_text(g, rnd(g, 3) ? 100 : 300000);
			gen_eol(g);
		} else
			gen_line(g, hdrs[rnd(g, sizeof(hdrs) /
			    sizeof(hdrs[0]))]);
	}
	if (rnd(g, 10) != 0)
		gen_eol(g);
}

static void
gen_body(struct gen *g)
{
	static const char *const lines[] = {
		".", "..", ".dot", "From inside", ">From quoted", "a\rb",
		"", "text", "From ", "x\r"
	};
	uint32_t	i, n = rnd(g, 30), k;

	for (i = 0; i < n; i++) {
		if (rnd(g, 3) == 0) {
			gen_text(g, rnd(g, 50) == 0 ? 300000 : rnd(g, 120));
			gen_eol(g);
			continue;
		}
		k = rnd(g, sizeof(lines) / sizeof(lines[0]));
		if (g->plain && strchr(lines[k], '\r') != NULL)
			k = 0;
		gen_line(g, lines[k]);
	}
}

/* A spool of about `size` bytes. */
static void
gen_mbox(struct gen *g, uint64_t seed, int crlf, size_t size, int plain)
{
	memset(g, 0, sizeof(*g));
	g->rng = seed * 0x9e3779b97f4a7c15ULL + 1;
	g->crlf = crlf;
	g->plain = plain;
	while (g->len < size) {
		gen_line(g, "From sender@example.org Mon Jan  1 00:00:00 2024");
		gen_headers(g);
		gen_body(g);
		if (rnd(g, 8) != 0)
			gen_eol(g);
	}
	/* Sometimes no final newline at all. */
	if (rnd(g, 3) == 0 && g->len > 0 && g->buf[g->len - 1] == '\n') {
		g->len--;
		if (g->len > 0 && g->buf[g->len - 1] == '\r' &&
		    (g->plain || rnd(g, 2)))
			g->len--;
	}
}

Test(maildrop, generated_spools_match_the_reference_parser)
{
	struct maildrop	*md;
	struct gen	 g;
	uint64_t	 seed;

	for (seed = 1; seed <= 12; seed++) {
		gen_mbox(&g, seed, (int)(seed % 3), 600000 + seed * 50000, 0);
		write_file(fx.mbox, g.buf, g.len);
		md = md_open();
		/* Both ways of sending: SSE2 on odd seeds, AVX2 if any. */
		maildrop_use_avx2(seed % 2 == 0);
		ref_check(md, g.buf, g.len);
		maildrop_close(md);
		free(g.buf);
	}
	maildrop_use_avx2(1);
}

/*
 * The 64-byte steps of sending and of the index's body scan, at every
 * phase: before each tricky line (".", an empty line, CRLF, a lone CR,
 * CR then LF), a line of k filler bytes ended by LF or CRLF, k from 0
 * to 191, so that each line end falls on each byte of a step, the 63rd
 * and the next step's first among them.  The last line, of 150 + 2k
 * bytes, puts the empty line before the next From_ line at every phase
 * too, as LF (k < 64, k >= 128) and as CRLF.  The body scan takes the
 * steps only for a body that is not hashed: one after a Message-ID.
 */
static void
every_offset_of_a_step(const char *head)
{
	static const char *const tricky[] = {
		".\n", "\n", ".x\r\n", "a\rb\n", "x\r", "\n", "..\n",
		"\r\n", ".\r\n"
	};
	struct maildrop	*md;
	struct gen	 g;
	char		 fill[150 + 2 * 192];
	size_t		 k, t;
	int		 avx2;

	memset(&g, 0, sizeof(g));
	memset(fill, 'f', sizeof(fill));
	for (k = 0; k < 192; k++) {
		gen_put(&g, head, strlen(head));
		for (t = 0; t < 2 * sizeof(tricky) / sizeof(tricky[0]); t++) {
			gen_put(&g, fill, k);
			gen_put(&g, t % 2 ? "\r\n" : "\n", 1 + t % 2);
			gen_put(&g, tricky[t / 2], strlen(tricky[t / 2]));
		}
		gen_put(&g, fill, 150 + 2 * k);
		if (k / 64 == 1)
			gen_put(&g, "\r\n\r\n", 4);
		else
			gen_put(&g, "\n\n", 2);
	}
	write_file(fx.mbox, g.buf, g.len);
	for (avx2 = 0; avx2 <= 1; avx2++) {
		maildrop_use_avx2(avx2);
		md = md_open();
		cr_assert_eq(maildrop_count(md), 192);
		ref_check(md, g.buf, g.len);
		maildrop_close(md);
	}
	free(g.buf);
}

Test(maildrop, sending_at_every_offset_of_a_step)
{
	every_offset_of_a_step("From a@b Mon Jan  1 00:00:00 2024\nS: 1\n\n");
}

Test(maildrop, index_at_every_offset_of_a_step)
{
	every_offset_of_a_step("From a@b Mon Jan  1 00:00:00 2024\nS: 1\n"
	    "Message-ID: <m@x>\n\n");
}

/* Sizes and UIDLs of every message, one line each. */
static char *
md_summary(int crlf, uint64_t seed)
{
	struct maildrop	*md;
	struct gen	 g;
	char		*sum, *t, u[UIDL_BUFSIZE];
	size_t		 i;

	gen_mbox(&g, seed, crlf, 900000, 1);
	write_file(fx.mbox, g.buf, g.len);
	free(g.buf);
	md = md_open();
	sum = strdup("");
	for (i = 0; i < maildrop_count(md); i++) {
		maildrop_uidl(md, i, u);
		check_uidl_format(u);
		cr_assert(asprintf(&t, "%s%zu %llu %s\n", sum, i,
		    (unsigned long long)maildrop_size(md, i), u) > 0);
		free(sum);
		sum = t;
	}
	maildrop_close(md);
	return sum;
}

/* The same spool stored with LF and with CRLF: same sizes and UIDLs. */
Test(maildrop, generated_spools_lf_and_crlf_agree)
{
	uint64_t	 seed;
	char		*lf, *crlf;

	for (seed = 1; seed <= 6; seed++) {
		lf = md_summary(0, seed);
		crlf = md_summary(1, seed);
		cr_assert(strlen(lf) > 100);
		cr_assert_str_eq(lf, crlf, "seed %llu",
		    (unsigned long long)seed);
		free(lf);
		free(crlf);
	}
}

/* The From_ line of the second message starts at FILE_CHUNK - d. */
Test(maildrop, from_line_across_chunk_boundary)
{
	struct maildrop	*md;
	char		*data;
	size_t		 d, pad, len;
	static const char head[] = "From a\nS: 1\n\n";
	static const char tail[] = "\r\nFrom b\r\nS: 2\r\n\r\nx\r\n";

	data = malloc(FILE_CHUNK + 256);
	cr_assert(data != NULL);
	for (d = 0; d < 80; d++) {
		pad = FILE_CHUNK - d - 2 - (sizeof(head) - 1) - 1;
		memcpy(data, head, sizeof(head) - 1);
		memset(data + sizeof(head) - 1, 'p', pad);
		len = sizeof(head) - 1 + pad;
		data[len++] = '\n';
		memcpy(data + len, tail, sizeof(tail) - 1);
		len += sizeof(tail) - 1;
		cr_assert_eq(memcmp(data + FILE_CHUNK - d, "From b", 6), 0);
		write_file(fx.mbox, data, len);
		md = md_open();
		ref_check(md, data, len);
		cr_assert_eq(maildrop_count(md), 2);
		maildrop_close(md);
	}
	free(data);
}

/* Files with CRLF hash like LF ones, also when CR and LF are split. */
Test(maildrop, uidl_crlf_split_across_chunks)
{
	struct maildrop	*md;
	char		*data, want[UIDL_BUFSIZE];
	size_t		 pad, len, d;
	static const char msg2[] = "From b\r\nX-Long: ";

	put_mbox("From b\nX-Long: 0123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789\n\nbody\n");
	md = md_open();
	maildrop_uidl(md, 0, want);
	maildrop_close(md);
	data = malloc(FILE_CHUNK + 512);
	cr_assert(data != NULL);
	for (d = 0; d < 3; d++) {
		/* Message 1 pads so that msg 2's header CR ends chunk 1. */
		pad = FILE_CHUNK - 1 - 80 - (sizeof(msg2) - 1) - 9 + d;
		len = (size_t)sprintf(data, "From a\n\n");
		memset(data + len, 'p', pad);
		len += pad;
		len += (size_t)sprintf(data + len, "\n\n%s", msg2);
		len += (size_t)sprintf(data + len, "0123456789012345678901234"
		    "5678901234567890123456789012345678901234567890123456789"
		    "\r\n\r\nbody\r\n");
		write_file(fx.mbox, data, len);
		md = md_open();
		cr_assert_eq(maildrop_count(md), 2);
		cr_assert_str_eq(maildrop_uidl(md, 1, fx.why), want, "d=%zu",
		    d);
		maildrop_close(md);
	}
	free(data);
}

/* UIDL. */

Test(maildrop, uidl_identical_messages_are_unique)
{
	struct maildrop	*md;
	char		 u[3][UIDL_BUFSIZE];
	int		 i;

	put_mbox("From a\nS: same\n\nx\n\nFrom a\nS: same\n\nx\n\n"
	    "From a\nS: same\n\nx\n");
	md = md_open();
	for (i = 0; i < 3; i++) {
		maildrop_uidl(md, i, u[i]);
		check_uidl_format(u[i]);
	}
	cr_assert_eq(strlen(u[0]), 16);
	cr_assert(strncmp(u[0], u[1], 16) == 0 && strcmp(u[1] + 16, ".2") == 0);
	cr_assert(strcmp(u[2] + 16, ".3") == 0);
	maildrop_close(md);
}

Test(maildrop, uidl_stable_after_deleting_another_message)
{
	struct maildrop	*md;
	char		 u1[UIDL_BUFSIZE], u2[UIDL_BUFSIZE];

	put_mbox("From a\nS: 0\n\nx\n\nFrom a\nS: 1\n\ny\n\nFrom a\nS: 2\n\n"
	    "z\n");
	md = md_open();
	maildrop_uidl(md, 1, u1);
	maildrop_uidl(md, 2, u2);
	maildrop_delete(md, 0);
	md_commit(md);
	maildrop_close(md);
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2);
	cr_assert_str_eq(maildrop_uidl(md, 0, fx.why), u1);
	cr_assert_str_eq(maildrop_uidl(md, 1, fx.why), u2);
	maildrop_close(md);
}

Test(maildrop, uidl_stable_across_mail_reader_header_edits)
{
	struct maildrop	*md;
	char		 u[UIDL_BUFSIZE];

	put_mbox("From a Mon\nSubject: s\nTo: t\n continued\n\nbody\n");
	md = md_open();
	maildrop_uidl(md, 0, u);
	maildrop_close(md);
	put_mbox("From a Mon\nSubject: s\nstatus: RO\nX-Status: A\n"
	    "X-UID: 7\nX-Keywords: $x\n  folded\nTo: t\n continued\n"
	    "Content-Length: 5\nLines: 1\nX-IMAPbase: 1 2\n\nbody\n");
	md = md_open();
	cr_assert_str_eq(maildrop_uidl(md, 0, fx.why), u);
	maildrop_close(md);
	/* Other headers and the body do count. */
	put_mbox("From a Mon\nSubject: t\nTo: t\n continued\n\nbody\n");
	md = md_open();
	cr_assert_str_neq(maildrop_uidl(md, 0, fx.why), u);
	maildrop_close(md);
	put_mbox("From a Mon\nSubject: s\nTo: t\n continued\n\nbody!\n");
	md = md_open();
	cr_assert_str_neq(maildrop_uidl(md, 0, fx.why), u);
	maildrop_close(md);
}

/* The UIDL of the first message of a spool of these bytes. */
static void
first_uidl(const char *mbox, char *u)
{
	struct maildrop	*md;

	put_mbox(mbox);
	md = md_open();
	maildrop_uidl(md, 0, u);
	maildrop_close(md);
}

/*
 * Mail piped straight into an MDA by a script has no Message-ID: two
 * alerts delivered in the same second differ only in the body.  If
 * they shared an id, a client that fetched and deleted the first would
 * take the second for seen (RFC 1939 section 7: ids are not reused),
 * and getmail or fetchmail would delete it unread.
 */
Test(maildrop, uidl_without_message_id_hashes_the_body)
{
	char		 u1[UIDL_BUFSIZE], u2[UIDL_BUFSIZE];
	char		 u3[UIDL_BUFSIZE];

	first_uidl("From alert@vm Sun Nov 22 11:40:00 2026\n"
	    "Subject: disk alert\n\ndisk /var at 91%\n\n", u1);
	/* The first was fetched and deleted; the second comes. */
	first_uidl("From alert@vm Sun Nov 22 11:40:00 2026\n"
	    "Subject: disk alert\n\ndisk /srv at 97%\n", u2);
	cr_assert_str_neq(u1, u2, "the id of a deleted message reused");
	/* Body lines as in a CRLF file, and empty lines inside it. */
	first_uidl("From alert@vm Sun Nov 22 11:40:00 2026\r\n"
	    "Subject: disk alert\r\n\r\ndisk /srv at 97%\r\n\r\n", u3);
	cr_assert_str_eq(u3, u2);
	first_uidl("From a\nS: 1\n\nx\n\ny\n\n", u1);
	first_uidl("From a\nS: 1\n\nx\ny\n\n\n", u2);
	cr_assert_str_neq(u1, u2, "an empty body line was not hashed");
	/* A header, and the same line as the body of one without it. */
	first_uidl("From a\nS: 1\nMessage-ID: <m@x>\n\n"
	    "xxxxxxxxxxxxxxxxx\n", u1);
	first_uidl("From a\nS: 1\n\nMessage-ID: <m@x>\n", u2);
	cr_assert_str_neq(u1, u2, "headers and body hashed alike");
}

/* The empty line before the next From_ line is not the message's. */
Test(maildrop, uidl_unchanged_when_the_message_becomes_the_last)
{
	struct maildrop	*md;
	char		 u[2][UIDL_BUFSIZE];
	int		 i;

	put_mbox("From a\nS: 1\n\nx\n\n\nFrom b\nS: 2\n\ny\n\n\n\n"
	    "From c\nS: 3\n\nz\n");
	md = md_open();
	for (i = 0; i < 2; i++)
		maildrop_uidl(md, i, u[i]);
	maildrop_delete(md, 2);
	md_commit(md);
	maildrop_close(md);
	md = md_open();
	cr_assert_eq(maildrop_count(md), 2);
	cr_assert_str_eq(maildrop_uidl(md, 1, fx.why), u[1]);
	maildrop_delete(md, 1);
	md_commit(md);
	maildrop_close(md);
	md = md_open();
	cr_assert_eq(maildrop_count(md), 1);
	cr_assert_str_eq(maildrop_uidl(md, 0, fx.why), u[0]);
	maildrop_close(md);
	/* Headers only, at the end; then mail comes after a blank line. */
	first_uidl("From a\nS: 1\n", u[0]);
	first_uidl("From a\nS: 1\n\nFrom b\nS: 2\n\nx\n", u[1]);
	cr_assert_str_eq(u[0], u[1], "the separator was hashed");
}

Test(maildrop, uidl_never_read_from_x_uidl)
{
	struct maildrop	*md;
	char		 u[UIDL_BUFSIZE];

	put_mbox("From a\nX-UIDL: evil\n\nx\n\nFrom a\nX-UIDL: evil\n\ny\n");
	md = md_open();
	maildrop_uidl(md, 0, u);
	check_uidl_format(u);
	cr_assert(strstr(u, "evil") == NULL);
	cr_assert_str_neq(maildrop_uidl(md, 1, fx.why), u);
	maildrop_close(md);
}

/* Commit. */

static const char *const three[] = {
	"From a\nS: 0\n\nzero\n\n",
	"From b\nS: 1\n\none\n\n",
	"From c\nS: 2\n\ntwo\n",
};

static char *
join(const char *const *parts, size_t n, unsigned skip)
{
	char	*s = strdup("");
	char	*t;
	size_t	 i;

	for (i = 0; i < n; i++) {
		if (skip & (1u << i))
			continue;
		cr_assert(asprintf(&t, "%s%s", s, parts[i]) > 0);
		free(s);
		s = t;
	}
	return s;
}

/* Delete the messages in mask from the spool of n parts. */
static void
check_commit(const char *const *parts, size_t n, unsigned mask)
{
	struct maildrop	*md;
	char		*all, *want;
	size_t		 i;

	all = join(parts, n, 0);
	want = join(parts, n, mask);
	put_mbox(all);
	md = md_open();
	for (i = 0; i < n; i++)
		if (mask & (1u << i))
			maildrop_delete(md, i);
	md_commit(md);
	maildrop_close(md);
	check_file(want);
	cr_assert_eq(file_size(fx.journal), 0);
	free(all);
	free(want);
}

Test(maildrop, commit_nothing_marked_writes_nothing)
{
	struct maildrop		*md;
	struct stat		 before, after;
	struct timespec		 old[2] = {
		{ 1000000000, 0 }, { 1000000000, 0 }
	};

	put_mbox(three[0]);
	cr_assert(utimensat(AT_FDCWD, fx.mbox, old, 0) == 0);
	cr_assert(stat(fx.mbox, &before) == 0);
	md = md_open();
	maildrop_delete(md, 0);
	maildrop_reset(md);
	md_commit(md);
	maildrop_close(md);
	cr_assert(stat(fx.mbox, &after) == 0);
	cr_assert(after.st_mtim.tv_sec == before.st_mtim.tv_sec);
	cr_assert(after.st_ctim.tv_sec == before.st_ctim.tv_sec &&
	    after.st_ctim.tv_nsec == before.st_ctim.tv_nsec);
	check_file(three[0]);
}

Test(maildrop, commit_tail_is_one_truncate_without_journal)
{
	struct maildrop	*md;
	char		*all;

	all = join(three, 3, 0);
	put_mbox(all);
	cr_assert_eq(maildrop_open(&md, fx.mbox, -1, fx.why,
	    sizeof(fx.why)), MD_OK);
	maildrop_delete(md, 1);
	maildrop_delete(md, 2);
	fault_arm(FAULT_ERROR, 1000, EIO);
	md_commit(md);
	cr_assert_eq(fault.calls, 2, "ftruncate and fsync only");
	fault.mode = FAULT_OFF;
	maildrop_close(md);
	check_file(three[0]);
	free(all);
}

Test(maildrop, commit_head_middle_tail_all_scattered)
{
	static const char *const five[] = {
		"From a\nS: 0\n\nzero\n\n",
		"From b\nS: 1\n\none\n\n\n",
		"From c\r\nS: 2\r\n\r\ntwo\r\n\r\n",
		"From d\nS: 3\n\n.three\n\n",
		"From e\nS: 4\n\nfour",
	};
	unsigned	mask;

	for (mask = 1; mask < 32; mask++) {
		check_commit(five, 5, mask);
		teardown();
		setup();
	}
}

Test(maildrop, commit_without_journal_fails_and_keeps_the_spool)
{
	struct maildrop	*md;
	char		*all;

	all = join(three, 3, 0);
	put_mbox(all);
	cr_assert_eq(maildrop_open(&md, fx.mbox, -1, fx.why,
	    sizeof(fx.why)), MD_OK);
	maildrop_delete(md, 0);
	cr_assert_eq(maildrop_commit(md, fx.why, sizeof(fx.why)), MD_SYSTEMP);
	cr_assert(strstr(fx.why, "journal") != NULL, "%s", fx.why);
	maildrop_close(md);
	check_file(all);
	free(all);
}

Test(maildrop, commit_keeps_mail_appended_after_the_index)
{
	struct maildrop	*md;
	char		*all, *want, *t;
	unsigned	 mask;
	size_t		 i;
	static const char late[] = "\nFrom late\nS: late\n\nnew mail\n";

	all = join(three, 3, 0);
	for (mask = 1; mask < 8; mask++) {
		put_mbox(all);
		md = md_open();
		append_file(fx.mbox, late);
		for (i = 0; i < 3; i++)
			if (mask & (1u << i))
				maildrop_delete(md, i);
		md_commit(md);
		maildrop_close(md);
		t = join(three, 3, mask);
		/*
		 * The writer's leading empty line separated its mail from
		 * our last message: it goes when that message goes.
		 */
		cr_assert(asprintf(&want, "%s%s", t,
		    (mask & 4) ? late + 1 : late) > 0);
		check_file(want);
		free(t);
		free(want);
	}
	free(all);
}

Test(maildrop, commit_refuses_a_shrunk_spool)
{
	struct maildrop	*md;
	char		*all;

	all = join(three, 3, 0);
	put_mbox(all);
	md = md_open();
	maildrop_delete(md, 0);
	cr_assert(truncate(fx.mbox, 10) == 0);
	cr_assert_eq(maildrop_commit(md, fx.why, sizeof(fx.why)), MD_SYSTEMP);
	cr_assert(strstr(fx.why, "changed") != NULL, "%s", fx.why);
	maildrop_close(md);
	cr_assert_eq(file_size(fx.mbox), 10);
	free(all);
}

Test(maildrop, commit_preserves_inode_owner_and_mode)
{
	struct maildrop	*md;
	struct stat	 before, after;
	char		*s;

	s = join(three, 3, 0);
	put_mbox(s);
	free(s);
	cr_assert(chmod(fx.mbox, 0640) == 0);
	cr_assert(stat(fx.mbox, &before) == 0);
	md = md_open();
	maildrop_delete(md, 0);
	md_commit(md);
	maildrop_close(md);
	cr_assert(stat(fx.mbox, &after) == 0);
	cr_assert_eq(after.st_ino, before.st_ino);
	cr_assert_eq(after.st_dev, before.st_dev);
	cr_assert_eq(after.st_uid, before.st_uid);
	cr_assert_eq(after.st_gid, before.st_gid);
	cr_assert_eq(after.st_mode, before.st_mode);
	s = join(three, 3, 1);
	check_file(s);
	free(s);
}

/*
 * Crashes and I/O errors at every write-type call of a commit.  The
 * spool has a message big enough to move in several chunks, so that
 * the journal and the compaction each take several writes.
 */

struct crash_case {
	char	*all;		/* the spool before */
	char	*want;		/* after a complete commit */
	size_t	 nparts;
	unsigned mask;
};

static char *big_parts[4];

static void
crash_case_init(struct crash_case *c, unsigned mask)
{
	size_t	i, big = 3 * FILE_CHUNK + 1000;
	char	*body;

	body = malloc(big + 1);
	cr_assert(body != NULL);
	for (i = 0; i < big; i++)
		if (i % 64 == 63)
			body[i] = '\n';
		else
			body[i] = "abcdefghijklmnopqrstuvwxyz"[i % 26];
	body[big] = '\0';
	cr_assert(asprintf(&big_parts[0], "From a\nS: 0\n\nsmall\n\n") > 0);
	cr_assert(asprintf(&big_parts[1], "From b\nS: 1\n\n%s\n\n", body) > 0);
	cr_assert(asprintf(&big_parts[2], "From c\nS: 2\n\n.dot\n\n") > 0);
	cr_assert(asprintf(&big_parts[3], "From d\nS: 3\n\n%s\n", body) > 0);
	free(body);
	c->nparts = 4;
	c->mask = mask;
	c->all = join((const char *const *)big_parts, 4, 0);
	c->want = join((const char *const *)big_parts, 4, mask);
}

static void
crash_case_free(struct crash_case *c)
{
	size_t	i;

	for (i = 0; i < 4; i++)
		free(big_parts[i]);
	free(c->all);
	free(c->want);
}

/* Open, mark, commit under the armed fault; returns commit's status. */
static enum md_status
crash_commit(const struct crash_case *c)
{
	struct maildrop	*md;
	enum md_status	 st;
	size_t		 i;

	md = md_open();
	for (i = 0; i < c->nparts; i++)
		if (c->mask & (1u << i))
			maildrop_delete(md, i);
	fault.calls = 0;
	fault.hit = 0;
	commit_reads_count = 1;
	st = maildrop_commit(md, fx.why, sizeof(fx.why));
	commit_reads_count = 0;
	/* Closing clears the journal: faults there count too. */
	maildrop_close(md);
	fault.mode = FAULT_OFF;
	return st;
}

/* The spool is whole: as before, or as after the commit. */
static int
spool_is(const struct crash_case *c)
{
	char	*got;
	size_t	 len;
	int	 r = -1;

	got = read_file(fx.mbox, &len);
	if (len == strlen(c->all) && memcmp(got, c->all, len) == 0)
		r = 0;
	else if (len == strlen(c->want) && memcmp(got, c->want, len) == 0)
		r = 1;
	free(got);
	return r;
}

/* After the fault: the next open recovers, and the journal is empty. */
static int
check_recovered(const struct crash_case *c, int k)
{
	struct maildrop	*md;
	int		 r;

	md = md_open();
	cr_assert_eq(file_size(fx.journal), 0, "journal left, k=%d", k);
	maildrop_close(md);
	r = spool_is(c);
	cr_assert(r != -1, "spool damaged after fault %d", k);
	return r;
}

/* Run a commit in a child that dies at write-type call k. */
static int
crash_at(const struct crash_case *c, enum fault_mode mode, int k)
{
	pid_t	pid;
	int	status;

	write_file(fx.mbox, c->all, strlen(c->all));
	cr_assert(ftruncate(fx.jfd, 0) == 0);
	pid = fork();
	cr_assert(pid != -1);
	if (pid == 0) {
		fault_arm(mode, k, 0);
		_exit(crash_commit(c) == MD_OK ? 0 : 1);
	}
	cr_assert(waitpid(pid, &status, 0) == pid);
	cr_assert(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* Crash at the first point that leaves the spool half-moved: that k. */
static int
crash_half_moved(const struct crash_case *c)
{
	int	k;

	for (k = 1; k < 200; k++)
		if (crash_at(c, FAULT_CRASH, k) == CRASH_STATUS &&
		    spool_is(c) == -1)
			return k;
	cr_assert_fail("no crash left a half-moved spool");
	return -1;
}

/*
 * crash_half_moved(), then free the journal for another session (the
 * killed one's flock went with it: fx.jfd shares it); *jsize is the
 * journal's size, which must not change until recovery.
 */
static int
crash_leaving_journal(const struct crash_case *c, off_t *jsize)
{
	int	k = crash_half_moved(c);

	cr_assert(flock(fx.jfd, LOCK_UN) == 0);
	*jsize = file_size(fx.journal);
	return k;
}

static void
crash_matrix(unsigned mask, enum fault_mode mode)
{
	struct crash_case	c;
	int			k, status, seen[2] = { 0, 0 };

	crash_case_init(&c, mask);
	for (k = 1; k < 200; k++) {
		status = crash_at(&c, mode, k);
		seen[check_recovered(&c, k)]++;
		if (status == 0)
			break;
		cr_assert_eq(status, CRASH_STATUS);
	}
	cr_assert(k > 5 && k < 200, "k=%d", k);
	cr_assert(seen[0] > 0 && seen[1] > 0);
	cr_assert_eq(spool_is(&c), 1);
	crash_case_free(&c);
}

/* A commit over 1 MB starts its disk writes before the fsync. */
Test(maildrop, large_commit_starts_writeback)
{
	struct crash_case	c;

	crash_case_init(&c, 1);
	write_file(fx.mbox, c.all, strlen(c.all));
	writeback_calls = 0;
	cr_assert_eq(crash_commit(&c), MD_OK);
	cr_assert_eq(spool_is(&c), 1);
	/* The journal and the compaction each pass a 1 MB mark. */
	cr_assert(writeback_calls >= 2, "%d calls", writeback_calls);
	crash_case_free(&c);
}

Test(maildrop, crash_at_every_write_call_head_deleted)
{
	crash_matrix(1, FAULT_CRASH);
}

Test(maildrop, crash_at_every_write_call_scattered)
{
	crash_matrix(1 | 4, FAULT_CRASH);
}

Test(maildrop, torn_write_at_every_write_call)
{
	crash_matrix(2, FAULT_CRASH_TORN);
	crash_matrix(1 | 4, FAULT_CRASH_TORN);
}

/* I/O errors at call k (or from k on): as before or complete. */
static void
error_matrix(unsigned mask, enum fault_mode mode, int error)
{
	struct crash_case	c;
	enum md_status		st;
	int			k, r;

	crash_case_init(&c, mask);
	for (k = 1; k < 200; k++) {
		write_file(fx.mbox, c.all, strlen(c.all));
		cr_assert(ftruncate(fx.jfd, 0) == 0);
		fault_arm(mode, k, error);
		st = crash_commit(&c);
		if (!fault.hit) {
			cr_assert_eq(st, MD_OK);
			break;
		}
		r = spool_is(&c);
		if (mode == FAULT_ERROR)
			cr_assert(r != -1, "spool damaged by error %d", k);
		/* One failure: the rollback worked, the journal is void. */
		if (mode == FAULT_ERROR && r == 0)
			cr_assert_eq(file_size(fx.journal), 0, "k=%d", k);
		cr_assert(st == MD_SYSTEMP || r == 1, "k=%d st=%d", k, st);
		check_recovered(&c, k);
	}
	cr_assert(k > 5 && k < 200, "k=%d", k);
	crash_case_free(&c);
}

Test(maildrop, enospc_at_every_write_call)
{
	error_matrix(1, FAULT_ERROR, ENOSPC);
	error_matrix(2 | 8, FAULT_ERROR, ENOSPC);
}

Test(maildrop, eio_from_every_write_call_on)
{
	/* The rollback fails too: the journal must repair it later. */
	error_matrix(1, FAULT_ERROR_ALL, EIO);
	error_matrix(1 | 4, FAULT_ERROR_ALL, EIO);
}

/*
 * An MDA that breaks the locks (the dot-lock of a monitor killed in the
 * middle of a commit) appends before write-type call k: its mail must
 * survive, and the commit must not be done around it.  The moment
 * inside ftruncate() itself is left out: nothing can close it.
 */
static void
append_matrix(unsigned mask, int min_tried)
{
	struct crash_case	c;
	enum md_status		st;
	char			*got, *want;
	size_t			len;
	int			k, tried = 0;

	crash_case_init(&c, mask);
	fault_path = fx.mbox;
	for (k = 1; k < 200; k++) {
		write_file(fx.mbox, c.all, strlen(c.all));
		cr_assert(ftruncate(fx.jfd, 0) == 0);
		fault_arm(FAULT_APPEND, k, 0);
		st = crash_commit(&c);
		fault.mode = FAULT_OFF;
		if (!fault.hit)
			break;
		got = read_file(fx.mbox, &len);
		if (strcmp(fault.call, "ftruncate") != 0) {
			tried++;
			cr_assert(asprintf(&want, "%s%s", st == MD_OK ? c.want :
			    c.all, late_mail) > 0);
			cr_assert(len == strlen(want) &&
			    memcmp(got, want, len) == 0, "append before %s "
			    "(call %d), commit %s: mail lost or spool damaged",
			    fault.call, k, st == MD_OK ? "done" : "refused");
			free(want);
		}
		free(got);
		cr_assert_eq(file_size(fx.journal), 0, "journal left, k=%d", k);
	}
	cr_assert(tried >= min_tried && k < 200, "k=%d tried=%d", k, tried);
	crash_case_free(&c);
}

Test(maildrop, append_during_commit_is_kept)
{
	append_matrix(1, 4);	/* the head deleted */
	append_matrix(1 | 4, 4);	/* scattered */
	append_matrix(8, 2);	/* the last: one truncation */
}

/*
 * A program that takes no lock lengthens message 1 during the session
 * (by 11 bytes): a commit by the old offsets would cut the wrong bytes.
 * It must refuse and leave the file as that program left it, unless
 * every cut still falls on a From_ line (then the change moves along).
 */
Test(maildrop, commit_refused_when_offsets_moved)
{
	static const char orig[] = "From a\nS: 1\n\none\n\n"
	    "From b\nS: 2\n\ntwo\n\nFrom c\nS: 3\n\nthree\n";
	static const char edited[] = "From a\nS: 1\n\none INSERTED\n\n"
	    "From b\nS: 2\n\ntwo\n\nFrom c\nS: 3\n\nthree\n";
	static const char late_edit[] = "From a\nS: 1\n\none\n\n"
	    "From b\nS: 2\n\ntwo\n\nFrom c\nS: 3\n\nthree INSERTED\n";
	struct maildrop	*md;
	size_t		 del, len;
	char		*got;

	for (del = 1; del <= 2; del++) {	/* moved; a truncation */
		put_mbox(orig);
		md = md_open();
		maildrop_delete(md, del);
		put_mbox(edited);
		cr_assert_eq(maildrop_commit(md, fx.why, sizeof(fx.why)),
		    MD_SYSTEMP, "message %zu: commit by stale offsets", del);
		maildrop_close(md);
		got = read_file(fx.mbox, &len);
		cr_assert_str_eq(got, edited, "message %zu", del);
		free(got);
		cr_assert_eq(file_size(fx.journal), 0);
	}
	/* After the last cut: message 3 moves whole, its change with it. */
	put_mbox(orig);
	md = md_open();
	maildrop_delete(md, 0);
	put_mbox(late_edit);
	md_commit(md);
	maildrop_close(md);
	got = read_file(fx.mbox, &len);
	cr_assert_str_eq(got, late_edit + strlen("From a\nS: 1\n\none\n\n"));
	free(got);
}

/* Mail delivered between the crash and the next session stays. */
Test(maildrop, crash_then_delivery_then_recovery)
{
	struct crash_case	 c;
	struct maildrop		*md;
	static const char	 late[] = "From late\nS: l\n\nlate mail\n";
	char			*got;
	size_t			 len, n = strlen(late);
	int			 k;

	crash_case_init(&c, 1);
	for (k = 1; k < 200; k++) {
		if (crash_at(&c, FAULT_CRASH, k) == 0)
			break;
		append_file(fx.mbox, late);
		md = md_open();
		maildrop_close(md);
		got = read_file(fx.mbox, &len);
		cr_assert(len >= n && memcmp(got + len - n, late, n) == 0,
		    "late mail lost at k=%d", k);
		got[len - n] = '\0';
		cr_assert(strcmp(got, c.all) == 0 || strcmp(got, c.want) == 0,
		    "spool damaged at k=%d", k);
		free(got);
	}
	cr_assert(k > 5);
	crash_case_free(&c);
}

Test(maildrop, torn_or_foreign_journal_is_discarded)
{
	struct maildrop	*md;
	char		 junk[5000];
	char		*all;

	all = join(three, 3, 0);
	put_mbox(all);
	memset(junk, 'j', sizeof(junk));
	memcpy(junk, "POP3DJ2", 8);
	cr_assert(pwrite(fx.jfd, junk, sizeof(junk), 0) ==
	    (ssize_t)sizeof(junk));
	md = md_open();
	cr_assert_eq(file_size(fx.journal), 0);
	maildrop_close(md);
	check_file(all);
	free(all);
}

/*
 * A power loss can leave the journal's header on disk without all of
 * its data: the data hash must catch it, and the spool (untouched,
 * since the journal is synced before the first spool write) stays.
 */
Test(maildrop, journal_with_bad_data_is_discarded)
{
	struct crash_case	 c;
	struct maildrop		*md;
	char			 magic[8], byte;
	int			 k;

	crash_case_init(&c, 1);
	for (k = 1; k < 200; k++) {
		cr_assert(crash_at(&c, FAULT_CRASH, k) == CRASH_STATUS);
		cr_assert(pread(fx.jfd, magic, 8, 0) >= 0);
		if (memcmp(magic, "POP3DJ2", 8) == 0)
			break;
		cr_assert_eq(spool_is(&c), 0);
	}
	cr_assert(k < 200);
	cr_assert_eq(spool_is(&c), 0, "spool written before the journal");
	cr_assert(pread(fx.jfd, &byte, 1, 4096 + 100) == 1);
	byte ^= 1;
	cr_assert(pwrite(fx.jfd, &byte, 1, 4096 + 100) == 1);
	md = md_open();
	maildrop_close(md);
	cr_assert_eq(file_size(fx.journal), 0);
	cr_assert_eq(spool_is(&c), 0);
	crash_case_free(&c);
}

Test(maildrop, journal_of_another_spool_is_discarded)
{
	struct crash_case	 c;
	struct maildrop		*md;
	int			 k;

	/* A journal left by a crash, then the spool replaced. */
	crash_case_init(&c, 1);
	for (k = 1; k < 200; k++)
		if (crash_at(&c, FAULT_CRASH, k) == CRASH_STATUS &&
		    file_size(fx.journal) > 4096)
			break;
	cr_assert(k < 200);
	unlink(fx.mbox);
	put_mbox(three[0]);
	md = md_open();
	cr_assert_eq(maildrop_count(md), 1);
	maildrop_close(md);
	cr_assert_eq(file_size(fx.journal), 0);
	check_file(three[0]);
	crash_case_free(&c);
}

Test(maildrop, journal_of_a_removed_spool_is_discarded)
{
	struct crash_case	 c;
	struct maildrop		*md;
	int			 k;

	crash_case_init(&c, 1);
	for (k = 1; k < 200; k++)
		if (crash_at(&c, FAULT_CRASH, k) == CRASH_STATUS &&
		    file_size(fx.journal) > 4096)
			break;
	cr_assert(k < 200);
	unlink(fx.mbox);
	md = md_open();
	cr_assert_eq(maildrop_count(md), 0);
	maildrop_close(md);
	cr_assert_eq(file_size(fx.journal), 0);
	cr_assert(access(fx.mbox, F_OK) == -1);
	crash_case_free(&c);
}

/*
 * As a session has it: its own open file description of the journal
 * (md_try()'s dup() shares fx.jfd's, and with it fx.jfd's flock()).
 */
static enum md_status
md_try_own_journal(struct maildrop **mdp)
{
	int	fd = open(fx.journal, O_RDWR);

	cr_assert(fd != -1);
	return maildrop_open(mdp, fx.mbox, fd, fx.why, sizeof(fx.why));
}

/*
 * The journal is per user: a configuration with another -m meets the
 * journal that a crash left for the first one's spool.  It must keep
 * it (that spool is half-moved without it) and refuse to open, until
 * a session of the first configuration has repaired its spool.
 */
Test(maildrop, journal_of_another_live_spool_is_kept)
{
	struct crash_case	 c;
	struct maildrop		*md;
	char			 other[64];
	off_t			 jsize;
	int			 k;

	crash_case_init(&c, 1);
	k = crash_leaving_journal(&c, &jsize);
	make_temp(other, "/tmp/md-test-other.XXXXXX", NULL);
	write_file(other, three[0], strlen(three[0]));
	cr_assert_eq(maildrop_open(&md, other, open(fx.journal, O_RDWR),
	    fx.why, sizeof(fx.why)), MD_SYSTEMP, "%s", fx.why);
	cr_assert(md == NULL);
	cr_assert(strstr(fx.why, fx.mbox) != NULL, "%s", fx.why);
	cr_assert_eq(file_size(fx.journal), jsize, "journal changed");
	cr_assert_eq(check_recovered(&c, k), 0);
	cr_assert_eq(maildrop_open(&md, other, open(fx.journal, O_RDWR),
	    fx.why, sizeof(fx.why)), MD_OK, "%s", fx.why);
	cr_assert_eq(maildrop_count(md), 1);
	maildrop_close(md);
	unlink(other);
	crash_case_free(&c);
}

static long
ms_since(const struct timespec *t0)
{
	struct timespec	t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000 +
	    (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

/*
 * A recorded spool that cannot be looked at (stat() fails with other
 * than ENOENT: here ELOOP) may still need the journal: it is kept, and
 * the other file's open refused.
 */
Test(maildrop, journal_kept_when_its_spool_cannot_be_checked)
{
	struct crash_case	 c;
	struct maildrop		*md;
	char			 other[64], aside[80];
	off_t			 jsize;
	int			 k;

	crash_case_init(&c, 1);
	k = crash_leaving_journal(&c, &jsize);
	snprintf(aside, sizeof(aside), "%s.aside", fx.mbox);
	cr_assert(rename(fx.mbox, aside) == 0);
	cr_assert(symlink(fx.mbox, fx.mbox) == 0);	/* a loop */
	make_temp(other, "/tmp/md-test-other.XXXXXX", NULL);
	write_file(other, three[0], strlen(three[0]));
	cr_assert_eq(maildrop_open(&md, other, open(fx.journal, O_RDWR),
	    fx.why, sizeof(fx.why)), MD_SYSTEMP, "%s", fx.why);
	cr_assert(strstr(fx.why, "stat") != NULL, "%s", fx.why);
	cr_assert_eq(file_size(fx.journal), jsize, "journal changed");
	cr_assert(unlink(fx.mbox) == 0 && rename(aside, fx.mbox) == 0);
	cr_assert_eq(check_recovered(&c, k), 0);
	unlink(other);
	crash_case_free(&c);
}

static int
remove_entry(const char *path, const struct stat *st, int flag,
    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/*
 * The limit: a spool path of JOURNAL_SPOOL_MAX (3072) bytes or more is
 * not recorded, and the journal then names no spool (as a v1 one).
 */
Test(maildrop, spool_path_too_long_is_not_recorded)
{
	struct maildrop	*md;
	char		 top[64], path[4000], name[201], got[4000];
	char		*all;
	size_t		 len;
	int		 i;

	make_temp(top, "/tmp/md-test-long.XXXXXX", NULL);
	cr_assert(unlink(top) == 0 && mkdir(top, 0700) == 0);
	memset(name, 'd', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	len = strlcpy(path, top, sizeof(path));
	for (i = 0; i < 16; i++) {
		len += snprintf(path + len, sizeof(path) - len, "/%s", name);
		cr_assert(mkdir(path, 0700) == 0, "%s", strerror(errno));
	}
	strlcat(path, "/mbox", sizeof(path));
	cr_assert(strlen(path) >= 3072 && strlen(path) < 3400);
	all = join(three, 3, 0);
	write_file(path, all, strlen(all));
	cr_assert_eq(maildrop_open(&md, path, open(fx.journal, O_RDWR),
	    fx.why, sizeof(fx.why)), MD_OK, "%s", fx.why);
	maildrop_delete(md, 0);
	md_commit(md);
	/* The journal is still whole until the close clears it. */
	cr_assert(file_size(fx.journal) > 4096);
	cr_assert_eq(maildrop_journal_spool(fx.jfd, got, sizeof(got)), -1,
	    "a path of %zu bytes recorded", strlen(path));
	maildrop_close(md);
	cr_assert(nftw(top, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
	free(all);
}

/*
 * The same, the other way round: this session opened while the journal
 * was empty, then the other configuration's session was killed in the
 * middle of a commit.  This session's commit must not overwrite the
 * journal the other spool needs: it fails, and removes nothing.
 */
Test(maildrop, commit_keeps_the_journal_of_another_live_spool)
{
	struct crash_case	 c;
	struct maildrop		*md;
	char			 other[64], *all, *got;
	off_t			 jsize;
	int			 k;

	crash_case_init(&c, 1);
	make_temp(other, "/tmp/md-test-other.XXXXXX", NULL);
	all = join(three, 3, 0);
	write_file(other, all, strlen(all));
	cr_assert_eq(maildrop_open(&md, other, open(fx.journal, O_RDWR),
	    fx.why, sizeof(fx.why)), MD_OK, "%s", fx.why);
	k = crash_leaving_journal(&c, &jsize);
	maildrop_delete(md, 0);
	cr_assert_eq(maildrop_commit(md, fx.why, sizeof(fx.why)), MD_SYSTEMP,
	    "%s", fx.why);
	cr_assert(strstr(fx.why, fx.mbox) != NULL, "%s", fx.why);
	maildrop_close(md);
	cr_assert_eq(file_size(fx.journal), jsize, "journal changed");
	cr_assert_eq(check_recovered(&c, k), 0);
	got = read_file(other, NULL);
	cr_assert_str_eq(got, all, "the other spool was written");
	free(got);
	unlink(other);
	free(all);
	crash_case_free(&c);
}

/* From a journaled commit until the journal is cleared at close. */
Test(maildrop, journal_held_from_commit_to_close)
{
	struct maildrop	*md;
	char		*all;
	int		 other;

	all = join(three, 3, 0);
	put_mbox(all);
	other = open(fx.journal, O_RDWR);
	cr_assert(other != -1);
	cr_assert_eq(md_try_own_journal(&md), MD_OK, "%s", fx.why);
	maildrop_delete(md, 0);
	md_commit(md);
	cr_assert(flock(other, LOCK_EX | LOCK_NB) == -1, "not held");
	maildrop_close(md);
	cr_assert(flock(other, LOCK_EX | LOCK_NB) == 0, "held after close");
	close(other);
	free(all);
}

/*
 * A journal of the previous format (POP3DJ1: the header without the
 * path), left by a crash before an upgrade, still rolls the spool back.
 */
Test(maildrop, journal_of_the_previous_format_is_recovered)
{
	struct crash_case	 c;
	struct maildrop		*md;
	unsigned char		 v2[4096], v1[4096];
	uint64_t		 h;

	crash_case_init(&c, 1);
	(void)crash_half_moved(&c);
	cr_assert(pread(fx.jfd, v2, sizeof(v2), 0) == sizeof(v2));
	memset(v1, 0, sizeof(v1));
	memcpy(v1, "POP3DJ1", 8);
	memcpy(v1 + 8, v2 + 8, 64);	/* dev to data_hash */
	h = XXH3_64bits(v1, 72);
	memcpy(v1 + 72, &h, 8);
	cr_assert(pwrite(fx.jfd, v1, sizeof(v1), 0) == sizeof(v1));
	cr_assert_eq(maildrop_journal_spool(fx.jfd, (char *)v2, sizeof(v2)),
	    -1, "a path read from a v1 journal");
	md = md_open();
	maildrop_close(md);
	cr_assert_eq(file_size(fx.journal), 0);
	cr_assert_eq(spool_is(&c), 0, "v1 journal not applied");
	crash_case_free(&c);
}

/* What pop3d -R reads: the spool that the journal's commit is of. */
Test(maildrop, journal_names_its_spool)
{
	struct crash_case	 c;
	char			 path[256];
	int			 k;

	crash_case_init(&c, 1);
	cr_assert_eq(maildrop_journal_spool(fx.jfd, path, sizeof(path)), -1);
	k = crash_half_moved(&c);
	cr_assert_eq(maildrop_journal_spool(fx.jfd, path, sizeof(path)), 0);
	cr_assert_str_eq(path, fx.mbox);
	cr_assert_eq(maildrop_journal_spool(fx.jfd, path, 8), -1,
	    "a path cut short");
	cr_assert_eq(check_recovered(&c, k), 0);
	cr_assert_eq(maildrop_journal_spool(fx.jfd, path, sizeof(path)), -1);
	crash_case_free(&c);
}

/*
 * Two sessions of one user through two configurations: one must not
 * read the journal while the other writes it, nor write it while the
 * other recovers from it.  The other session is a second open file
 * description holding flock(); each side waits LOCK_WAIT_MS, then
 * fails without touching the spool.
 */
Test(maildrop, journal_in_use_by_another_session_is_waited_for)
{
	struct maildrop	*md;
	struct timespec	 t0;
	char		*all;
	int		 other;

	all = join(three, 3, 0);
	put_mbox(all);
	other = open(fx.journal, O_RDWR);
	cr_assert(other != -1);
	cr_assert(flock(other, LOCK_EX) == 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(md_try_own_journal(&md), MD_INUSE, "%s", fx.why);
	cr_assert(ms_since(&t0) >= LOCK_WAIT_MS - 50, "did not wait");
	cr_assert(strstr(fx.why, "journal in use") != NULL, "%s", fx.why);
	cr_assert(flock(other, LOCK_UN) == 0);

	cr_assert_eq(md_try_own_journal(&md), MD_OK, "%s", fx.why);
	/* Released after the recovery: the open holds no journal lock. */
	cr_assert(flock(other, LOCK_EX | LOCK_NB) == 0, "held after open");
	maildrop_delete(md, 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(maildrop_commit(md, fx.why, sizeof(fx.why)),
	    MD_INUSE, "%s", fx.why);
	cr_assert(ms_since(&t0) >= LOCK_WAIT_MS - 50, "did not wait");
	maildrop_close(md);
	check_file(all);
	cr_assert_eq(file_size(fx.journal), 0);

	cr_assert(flock(other, LOCK_UN) == 0);
	cr_assert_eq(md_try_own_journal(&md), MD_OK, "%s", fx.why);
	maildrop_delete(md, 0);
	md_commit(md);
	maildrop_close(md);
	cr_assert(flock(other, LOCK_EX | LOCK_NB) == 0, "held after close");
	close(other);
	free(all);
	all = join(three, 3, 1);
	check_file(all);
	free(all);
}

/* Locks. */

static pid_t
hold_lock(int how)
{
	int	p[2], fd;
	pid_t	pid;
	char	c;
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

	cr_assert(pipe(p) == 0);
	pid = fork();
	cr_assert(pid != -1);
	if (pid == 0) {
		fd = open(fx.mbox, O_RDWR);
		if (fd == -1 || (how == 0 ? fcntl(fd, F_SETLK, &fl) :
		    flock(fd, LOCK_EX)) == -1)
			_exit(1);
		if (write(p[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(p[1]);
	cr_assert(read(p[0], &c, 1) == 1);
	close(p[0]);
	return pid;
}

static void
check_in_use(const char *what)
{
	struct maildrop	*md;
	struct timespec	 t0, t1;
	long		 ms;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(md_try(&md), MD_INUSE, "%s", fx.why);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) /
	    1000000;
	cr_assert(ms >= LOCK_WAIT_MS - 50 && ms < LOCK_WAIT_MS + 1000,
	    "waited %ld ms", ms);
	cr_assert(strstr(fx.why, what) != NULL, "%s", fx.why);
}

static void
check_no_lock_left(void)
{
	char	lock[80];

	snprintf(lock, sizeof(lock), "%s.lock", fx.mbox);
	cr_assert(access(lock, F_OK) == -1, "dot-lock left behind");
}

Test(maildrop, fcntl_holder_means_in_use)
{
	pid_t	pid;

	put_mbox(three[0]);
	pid = hold_lock(0);
	check_in_use("fcntl");
	check_no_lock_left();
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	maildrop_close(md_open());
}

Test(maildrop, flock_holder_means_in_use_and_frees_the_others)
{
	pid_t	pid;

	put_mbox(three[0]);
	pid = hold_lock(1);
	check_in_use("flock");
	check_no_lock_left();
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	maildrop_close(md_open());
}

Test(maildrop, live_dot_lock_means_in_use)
{
	char	lock[80], pid[32];

	put_mbox(three[0]);
	snprintf(lock, sizeof(lock), "%s.lock", fx.mbox);
	snprintf(pid, sizeof(pid), "%ld\n", (long)getppid());
	write_file(lock, pid, strlen(pid));
	check_in_use("dot-lock");
	cr_assert(access(lock, F_OK) == 0, "a live lock was broken");
}

Test(maildrop, dead_holders_dot_lock_is_broken)
{
	struct maildrop	*md;
	char		 lock[80], buf[32], *got;
	pid_t		 dead;

	put_mbox(three[0]);
	dead = fork();
	cr_assert(dead != -1);
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	snprintf(lock, sizeof(lock), "%s.lock", fx.mbox);
	snprintf(buf, sizeof(buf), "%ld\n", (long)dead);
	write_file(lock, buf, strlen(buf));
	md = md_open();
	got = read_file(lock, NULL);
	cr_assert_eq(strtol(got, NULL, 10), (long)getpid(), "lock holds %s",
	    got);
	free(got);
	maildrop_touch(md);
	maildrop_close(md);
	check_no_lock_left();
}

/* Whether another process can take the spool's fcntl lock now. */
static int
fcntl_free_elsewhere(void)
{
	struct flock	fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	int		fd, status;
	pid_t		pid;

	pid = fork();
	cr_assert(pid != -1);
	if (pid == 0) {
		fd = open(fx.mbox, O_RDWR);
		_exit(fd != -1 && fcntl(fd, F_SETLK, &fl) == 0 ? 0 : 1);
	}
	cr_assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
	return WEXITSTATUS(status) == 0;
}

/* Whether another process can take the spool's flock lock now. */
static int
flock_free_elsewhere(void)
{
	int	fd, status;
	pid_t	pid;

	pid = fork();
	cr_assert(pid != -1);
	if (pid == 0) {
		fd = open(fx.mbox, O_RDWR);
		_exit(fd != -1 && flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : 1);
	}
	cr_assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
	return WEXITSTATUS(status) == 0;
}

/* The pid in the spool's dot-lock, or -1 if there is none. */
static long
dot_lock_pid(void)
{
	char	lock[80], *got;
	long	pid;

	snprintf(lock, sizeof(lock), "%s.lock", fx.mbox);
	if (access(lock, F_OK) == -1)
		return -1;
	got = read_file(lock, NULL);
	pid = strtol(got, NULL, 10);
	free(got);
	return pid;
}

/* As pop3d's session does: open, read, commit, close; exit 0 if all
 * went as expected. */
static int
child_serves_the_lent_spool(size_t count, int mark)
{
	struct maildrop	*md;
	int		 status;
	pid_t		 pid;

	pid = fork();
	cr_assert(pid != -1);
	if (pid == 0) {
		if (md_try(&md) != MD_OK)
			_exit(1);
		if (maildrop_count(md) != count)
			_exit(3);
		maildrop_touch(md);
		if (mark >= 0)
			maildrop_delete(md, mark);
		if (maildrop_commit(md, fx.why, sizeof(fx.why)) != MD_OK)
			_exit(2);
		maildrop_close(md);
		_exit(0);
	}
	cr_assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
	return WEXITSTATUS(status);
}

Test(maildrop, locks_lent_to_a_child_stay_the_parents_until_released)
{
	char	*got;

	put_mbox("From a\nS: 0\n\nzero\n\nFrom b\nS: 1\n\none\n\n"
	    "From c\nS: 2\n\ntwo\n");
	cr_assert_eq(maildrop_lock_for_child(fx.mbox), MD_OK);
	cr_assert_eq(dot_lock_pid(), (long)getpid());
	cr_assert(!fcntl_free_elsewhere() && !flock_free_elsewhere());
	/* The child neither locks again (it would be IN-USE) nor unlocks. */
	cr_assert_eq(child_serves_the_lent_spool(3, 1), 0, "%s", fx.why);
	cr_assert_eq(dot_lock_pid(), (long)getpid(), "the child removed the "
	    "dot-lock");
	cr_assert(!fcntl_free_elsewhere(), "fcntl lock gone with the child");
	cr_assert(!flock_free_elsewhere(), "flock lock gone with the child");
	/* A second child (the recovery after a killed session) too. */
	cr_assert_eq(child_serves_the_lent_spool(2, -1), 0);
	cr_assert(!flock_free_elsewhere(), "flock lock gone with the child");
	maildrop_release_child_locks();
	check_no_lock_left();
	cr_assert(fcntl_free_elsewhere() && flock_free_elsewhere());
	got = read_file(fx.mbox, NULL);
	cr_assert_str_eq(got, "From a\nS: 0\n\nzero\n\nFrom c\nS: 2\n\ntwo\n");
	free(got);
}

/*
 * The lender (pop3d's monitor) killed while the child works, say in the
 * middle of a commit: the kernel locks must stay until the child ends,
 * or an MDA would append to a half-moved spool.
 */
Test(maildrop, lent_kernel_locks_outlive_the_lender)
{
	struct maildrop	*md;
	pid_t		 lender, child;
	int		 ready[2], stop[2];
	char		 lock[80], c;

	put_mbox(three[0]);
	cr_assert(pipe(ready) == 0 && pipe(stop) == 0);
	if ((lender = fork()) == 0) {
		close(ready[0]);
		close(stop[1]);		/* the test's alone: EOF means go */
		if (maildrop_lock_for_child(fx.mbox) != MD_OK)
			_exit(1);
		if ((child = fork()) == 0) {
			if (md_try(&md) != MD_OK)
				_exit(1);
			if (write(ready[1], "r", 1) != 1)
				_exit(1);
			while (read(stop[0], &c, 1) == -1 && errno == EINTR)
				continue;	/* until told */
			maildrop_close(md);
			_exit(0);
		}
		_exit(child == -1);	/* as if killed: nothing released */
	}
	cr_assert(lender != -1);
	close(ready[1]);
	close(stop[0]);
	cr_assert(read(ready[0], &c, 1) == 1, "the child could not borrow");
	cr_assert(waitpid(lender, NULL, 0) == lender);
	cr_assert(!fcntl_free_elsewhere(), "fcntl lock gone with the lender");
	cr_assert(!flock_free_elsewhere(), "flock lock gone with the lender");
	close(stop[1]);		/* the child closes its maildrop and ends: */
	cr_assert(read(ready[0], &c, 1) == 0);	/* its end of ready closed */
	cr_assert(fcntl_free_elsewhere() && flock_free_elsewhere());
	snprintf(lock, sizeof(lock), "%s.lock", fx.mbox);
	cr_assert(unlink(lock) == 0, "no dot-lock: the lender's is stale");
	close(ready[0]);
}

Test(maildrop, lock_failure_lent_to_the_child)
{
	struct maildrop	*md;
	pid_t		 holder, pid;
	int		 status;

	put_mbox(three[0]);
	holder = hold_lock(0);
	cr_assert_eq(maildrop_lock_for_child(fx.mbox), MD_INUSE);
	pid = fork();
	cr_assert(pid != -1);
	if (pid == 0)
		_exit(md_try(&md) == MD_INUSE && md == NULL &&
		    strstr(fx.why, "fcntl") != NULL ? 0 : 1);
	cr_assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
	cr_assert_eq(WEXITSTATUS(status), 0, "the child did not get IN-USE");
	kill(holder, SIGKILL);
	waitpid(holder, NULL, 0);
	maildrop_release_child_locks();
	check_no_lock_left();
	maildrop_close(md_open());
}

Test(maildrop, dot_lock_taken_over_is_not_removed)
{
	struct maildrop	*md;
	char		 lock[80], other[32];

	put_mbox(three[0]);
	md = md_open();
	/* As a program that breaks locks by their age would. */
	snprintf(lock, sizeof(lock), "%s.lock", fx.mbox);
	snprintf(other, sizeof(other), "%ld\n", (long)getppid());
	cr_assert(unlink(lock) == 0);
	write_file(lock, other, strlen(other));
	maildrop_close(md);
	cr_assert_eq(dot_lock_pid(), (long)getppid(), "another's lock removed");
	cr_assert(unlink(lock) == 0);
}

Test(maildrop, second_session_is_in_use_until_close)
{
	struct maildrop	*md;
	pid_t		 pid;
	int		 status;

	put_mbox(three[0]);
	md = md_open();
	pid = fork();
	cr_assert(pid != -1);
	if (pid == 0) {
		struct maildrop	*md2;

		_exit(md_try(&md2) == MD_INUSE ? 0 : 1);
	}
	cr_assert(waitpid(pid, &status, 0) == pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	maildrop_close(md);
	check_no_lock_left();
	maildrop_close(md_open());
}
