/*
 * The maildrop: a mbox spool file locked for the whole session, indexed
 * in one streaming pass, sent as POP3 text, and rewritten in place on
 * QUIT through an undo journal.  Runs with the user's privileges only:
 * no root, no gid mail.
 */
#include <sys/types.h>
#include <sys/file.h>
#include <sys/param.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lockfile.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif
/*
 * libxxhash's header-only mode: XXH3 compiled in here, so that the
 * compiler inlines it into the per-line hashing, and no shared library
 * is mapped into the root monitor, which never hashes (its RSS peaks
 * during PAM's password hash).
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "iobuf.h"
#include "log.h"
#include "maildrop.h"
#include "params.h"

/*
 * Bytes of XXH128 kept for a UIDL: 16 hex characters (RFC 1939 s7).
 * 64 bits make an accidental collision in one spool vanishingly rare,
 * and even one only gives the later message a ".2" suffix.
 */
#define UIDL_HASH_LEN	8
/*
 * A line is classified from its first bytes: "From ", a header name, or
 * the pseudo-message's Subject (57 bytes).  A line start shorter than
 * this at the end of a chunk is carried into the next one.
 */
#define SCAN_HEAD	64
/*
 * maildrop_send() converts this much text per outbuf_reserve(): the
 * output is at most twice the input (a "." line grows from 2 to 4
 * bytes), so the buffer is at least half full before each write.
 */
#define SEND_PIECE	(OUTBUF_SIZE / 4)

/* The commit starts writing to disk every this many bytes it copies. */
#define WRITEBACK_BLOCK	(1024 * 1024)

/* The mbox From_ line that starts every message. */
#define FROM_LINE	"From "
#define FROM_LEN	5

/*
 * One message in 64 bytes at most (issue 4: session RSS under 4 MiB
 * plus 64 bytes per message).  Offsets are into the spool file.  The
 * text's end is not stored: it is the next message's From_ line (or
 * the end of what was indexed) less the empty line between (sep).
 */
struct msg {
	off_t		from;	/* the From_ line */
	uint64_t	octets;	/* as sent: CRLF, unstuffed */
	uint8_t		hash[UIDL_HASH_LEN];
	uint32_t	from_len; /* the From_ line: the text starts after */
	uint32_t	hdr_len; /* text start to after the blank line */
	uint32_t	dup;	/* k-th with this hash */
	uint8_t		deleted;
	uint8_t		sep;	/* the separating empty line: 0-2 bytes */
};
/*
 * With mark_duplicates()' 8 bytes a message, 48 at the peak: a margin
 * under 64 for what else a session's RSS does (issue 7 measures it).
 */
_Static_assert(sizeof(struct msg) <= 40, "index entry over 40 bytes");

static off_t
msg_text(const struct msg *m)
{
	return m->from + m->from_len;
}

static off_t
msg_hdr_end(const struct msg *m)
{
	return msg_text(m) + m->hdr_len;
}

struct maildrop {
	int		 fd;		/* -1: no spool file */
	char		*path;
	int		 journal_fd;	/* -1: none */
	int		 journal_done;	/* commit complete, journal to clear */
	char		*lockpath;	/* PATH.lock */
	int		 dotlocked;
	int		 dotlock_error;	/* liblockfile's L_* */
	int		 flocked;
	int		 borrowed;	/* the locks are the parent's */
	dev_t		 dev;
	ino_t		 ino;
	off_t		 size;		/* bytes indexed */
	struct msg	*msgs;		/* pseudo-message included */
	size_t		 nmsgs;
	size_t		 cap;
	size_t		 first;		/* 1 if msgs[0] is it */
	struct timespec	 touched;	/* dot-lock, monotonic */
	char		*buf;		/* FILE_CHUNK + SCAN_HEAD */
	off_t		 ahead_off;	/* RETR/TOP: buf holds [ahead_off, */
	size_t		 ahead_len;	/* +ahead_len) of the spool */
	char		*why;		/* the caller's reason */
	size_t		 whylen;
};

/* Verdict of one non-blocking lock attempt. */
enum lock_try {
	LOCK_TAKEN,
	LOCK_BUSY,
	LOCK_ERROR
};

/*
 * Indexing state: one line at a time; a long line may span chunks.
 * "The line" is the current line, "the text" the current message's.
 */
struct scan {
	struct maildrop	*md;
	enum md_status	 status;	/* why the scan failed */
	struct msg	 cur;		/* the message being indexed */
	int		 have_msg;
	off_t		 off;		/* where the line starts */
	off_t		 line_len;	/* of a long line, so far */
	int		 in_line;	/* a long line goes on */
	int		 line_from;	/* the line is a From_ line */
	int		 line_empty;
	int		 line_hdr_end;	/* the line ends the headers */
	int		 hashing;	/* the line is hashed */
	int		 counting;	/* the line is text */
	int		 pending_cr;	/* hashed CR held back */
	int		 last_cr;	/* the line's last byte is CR */
	int		 in_headers;
	int		 skip_header;	/* header not hashed */
	int		 pseudo;	/* PSEUDO_* marks of the first message */
	int		 prev_empty;	/* the previous line was */
	int		 body_hashed;	/* no Message-ID: hash the body too */
	uint64_t	 empties;	/* body's empty lines not hashed yet */
	off_t		 prev_empty_at;
	int		 prev_empty_bare;
	int		 partial_last;	/* last line: no newline */
	uint64_t	 bare;		/* LF without CR in text */
	uint64_t	 hdr_octets;
	XXH3_state_t	*ctx;		/* the UIDL hash */
	off_t		 text;		/* the current message's text */
	off_t		 hdr_end;	/* after its blank line; 0: none yet */
};

/* Streaming state of maildrop_send(). */
struct sender {
	struct outbuf	*out;
	int		 bol;		/* next byte starts a line */
	int		 cr;		/* last byte sent was CR */
	long		 left;		/* lines to send; -1: all */
};

/* The commit's arithmetic: see the comment before commit_plan(). */
struct plan {
	size_t		first;		/* first marked message */
	off_t		appended;	/* kept bytes appended since the index */
	off_t		start;		/* P: where it starts */
	off_t		newsize;	/* N */
	off_t		oldsize;	/* S0 */
};

/*
 * The undo journal's header, at offset 0 of a JOURNAL_HDR_SIZE block;
 * the data follows the block.  Native byte order: the journal never
 * leaves the machine that wrote it.
 */
#define JOURNAL_MAGIC		"POP3DJ2"
#define JOURNAL_HDR_SIZE	4096
#define JOURNAL_SPOOL_MAX	3072	/* a path this long is not recorded */
struct jheader {
	char		magic[8];
	uint64_t	dev, ino;	/* the spool's */
	uint64_t	start;		/* P */
	uint64_t	newsize;	/* N */
	uint64_t	oldsize;	/* S0 */
	uint64_t	tail_hash;	/* XXH3 of [N, S0) */
	uint64_t	datalen;	/* N - P */
	uint64_t	data_hash;	/* XXH3 of the data */
	char		spool[JOURNAL_SPOOL_MAX]; /* its path, or "" */
	uint64_t	hdr_hash;	/* XXH3 of the fields above */
};
/* journal_write() builds the header block in md->buf. */
_Static_assert(FILE_CHUNK + SCAN_HEAD >= JOURNAL_HDR_SIZE,
    "read buffer smaller than a journal header block");
_Static_assert(offsetof(struct jheader, hdr_hash) == 72 + JOURNAL_SPOOL_MAX &&
    sizeof(struct jheader) == 80 + JOURNAL_SPOOL_MAX &&
    sizeof(struct jheader) <= JOURNAL_HDR_SIZE, "journal header has padding");

/*
 * The header before the spool's path was recorded (magic POP3DJ1): the
 * same fields up to data_hash, then their hash where the path is now.
 * Such a journal is read as one without a path, so that an upgrade
 * never discards a commit to roll back.
 */
#define JOURNAL_MAGIC_V1	"POP3DJ1"
#define JOURNAL_V1_HASHED	offsetof(struct jheader, spool)

/* What journal_load() found. */
enum journal_state {
	J_EMPTY,
	J_VALID,
	J_INVALID,
	J_ERROR
};

static enum md_status md_fail(struct maildrop *, enum md_status,
		    const char *, ...) __attribute__((format(printf, 3, 4)));

/* Reasons and helpers. */

/* Set the caller's reason for the log and return st. */
static enum md_status
md_fail(struct maildrop *md, enum md_status st, const char *fmt, ...)
{
	va_list	ap;

	if (md->why != NULL && md->whylen > 0) {
		va_start(ap, fmt);
		vsnprintf(md->why, md->whylen, fmt, ap);
		va_end(ap);
	}
	return st;
}

/* A reason for a caller that gave no maildrop to md_fail() with. */
static void
say_why(char *why, size_t whylen, const char *text)
{
	if (why != NULL && whylen > 0)
		strlcpy(why, text, whylen);
}

static struct msg *
msg_at(const struct maildrop *md, size_t msg)
{
	return &md->msgs[md->first + msg];
}

/* A message's bytes in the file: its From_ line up to the next one. */
static off_t
span_end(const struct maildrop *md, size_t i)
{
	return i + 1 < md->nmsgs ? md->msgs[i + 1].from : md->size;
}

/* Where its text ends: before the empty line that separates it. */
static off_t
text_end(const struct maildrop *md, size_t i)
{
	return span_end(md, i) - md->msgs[i].sep;
}

/* pread() all of n bytes; a short count means the file shrank. */
static int
pread_full(int fd, void *buf, size_t n, off_t off)
{
	ssize_t	r;
	size_t	done = 0;

	while (done < n) {
		r = pread(fd, (char *)buf + done, n - done, off + done);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			return -1;
		if (r == 0) {
			errno = ENODATA;
			return -1;
		}
		done += r;
	}
	return 0;
}

static int
pwrite_full(int fd, const void *buf, size_t n, off_t off)
{
	ssize_t	r;
	size_t	done = 0;

	while (done < n) {
		r = pwrite(fd, (const char *)buf + done, n - done, off + done);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			return -1;
		done += r;
	}
	return 0;
}

/*
 * [off, off + n) of fd was just written: if that completes a block of
 * WRITEBACK_BLOCK bytes, start writing the block to disk now, so that
 * the commit's copying and the disk work overlap and its fsync() has
 * less left to wait for.  The fsync() still decides durability, but an
 * error here (ENOSPC, EIO) is one on the write path, and fails the step
 * like one.  Small commits never get here: one fsync() does it all.
 */
static int
start_writeback(int fd, off_t off, off_t n)
{
	off_t	end = (off + n) / WRITEBACK_BLOCK * WRITEBACK_BLOCK;

	if (end <= off)
		return 0;
#ifdef SYNC_FILE_RANGE_WRITE
	return sync_file_range(fd, end - WRITEBACK_BLOCK, WRITEBACK_BLOCK,
	    SYNC_FILE_RANGE_WRITE);
#else
	(void)fd;
	return 0;
#endif
}

static off_t
chunk_len(off_t left)
{
	return left < FILE_CHUNK ? left : FILE_CHUNK;
}

/*
 * XXH3 of len bytes of fd at off, read through md->buf.  A checksum, not
 * a signature: the journal is root's, and only torn writes are feared.
 */
static int
hash_range(struct maildrop *md, int fd, off_t off, off_t len,
    uint64_t *digest)
{
	XXH3_state_t	*ctx;
	off_t		 n;
	int		 rv = 0;

	if ((ctx = XXH3_createState()) == NULL)
		return -1;
	XXH3_64bits_reset(ctx);
	for (; len > 0; off += n, len -= n) {
		n = chunk_len(len);
		if ((rv = pread_full(fd, md->buf, n, off)) == -1)
			break;
		XXH3_64bits_update(ctx, md->buf, n);
	}
	*digest = XXH3_64bits_digest(ctx);
	XXH3_freeState(ctx);
	return rv;
}

/*
 * The lock waits and the dot-lock's refresh need milliseconds at best,
 * and the refresh is checked once per command: the coarse clock (a
 * tick's resolution) costs a third of the precise one.
 */
#define MD_CLOCK	CLOCK_MONOTONIC_COARSE

static long long
elapsed_ms(const struct timespec *since)
{
	struct timespec	now;

	clock_gettime(MD_CLOCK, &now);
	return (now.tv_sec - since->tv_sec) * 1000LL +
	    (now.tv_nsec - since->tv_nsec) / 1000000;
}

static void
sleep_ms(long ms)
{
	struct timespec	ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000;
	/* A signal cuts the nap short; the caller's deadline still holds. */
	nanosleep(&ts, NULL);
}

/*
 * Locking (Debian Policy 11.6): fcntl() first, then the dot-lock
 * PATH.lock, then flock() for MDAs that use only flock() (on Linux it
 * is independent of fcntl()).  Each is tried without blocking every
 * LOCK_RETRY_MS until LOCK_WAIT_MS have passed in all, so that two
 * programs taking the locks in different orders cannot deadlock; then
 * -ERR [IN-USE] (RFC 2449 section 8.1.2).  All are held until
 * maildrop_close(), or for locks lent to a child, until the lender's
 * maildrop_release_child_locks().
 *
 * The dot-lock uses liblockfile's lockfile_create(), not maillock():
 * maillock() derives the path from MAILDIR or $MAIL (our path is a
 * template), keeps it in library globals, and writes no pid, so a lock
 * left by a dead session would block mail for 5 minutes.  With L_PID
 * the lock holds our pid and a dead holder's lock is broken at once.
 * Found by experiment with liblockfile 1.17 as a user without gid mail
 * and /var/mail 2775 root:mail: creating the temporary lock file fails
 * with EACCES, and since the spool is a regular file owned by the real
 * uid in a directory writable by the group of the setgid helper,
 * lockfile_create() runs "dotlockfile -l -r 0 -q -p PATH.lock", which
 * writes our pid (its parent's) into the lock; lockfile_remove() runs
 * "dotlockfile -u" the same way.  The lock file is then ours (owner
 * uid, group mail), so lockfile_touch(), a plain utime(), works
 * without the helper.  The helper cannot lock for a spool that does
 * not exist: a missing spool is not locked at all (see open_spool()).
 * The helper is run with fork() and waitpid(): SIGCHLD must not be
 * ignored in the session.
 *
 * A session started by pop3d on /var/mail runs neither: its root
 * monitor takes the three locks before it forks the session, with the
 * helper's own rights (pop3d.c, spool_lock_take()), and lends them
 * (maildrop_lock_for_child()); the session's maildrop_open() takes the
 * spool as it is, and the monitor releases the locks once the session
 * and any recovery after it are gone.  No request goes back and forth
 * during the login, and a killed session's kernel locks stay held
 * until its commit is rolled back.
 */

/* Locks taken by this process for the children it forks. */
static struct {
	int		 set;
	struct maildrop	*md;		/* NULL unless status is MD_OK */
	enum md_status	 status;
	char		 why[256];
} lent;

int
dotlock_file_create(const char *lockpath)
{
	mode_t	mask;
	int	r;

	/* No retries inside: the library would sleep 5 s between them. */
	mask = umask(022);
	r = lockfile_create(lockpath, 0, L_PID);
	(void)umask(mask);
	return r;
}

/*
 * Whether the lock file still holds our pid (liblockfile's L_PID): a
 * program that breaks locks by their age alone (postfix after 500 s)
 * may have taken it over while we kept it.  The file is readable by
 * all (dotlock_file_create()).
 */
static int
dotlock_still_ours(const char *lockpath)
{
	char		 buf[32];
	const char	*errstr;
	ssize_t		 n;
	int		 fd;

	if ((fd = open(lockpath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC)) == -1)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return strtonum(buf, 1, INT_MAX, &errstr) == getpid();
}

static void
dotlock_remove(const char *lockpath)
{
	if (!dotlock_still_ours(lockpath))
		log_warnx("%s: taken over by another program", lockpath);
	else if (lockfile_remove(lockpath) != 0)
		log_warn("%s", lockpath);
}

/*
 * An open file description lock: to every other program it is an fcntl
 * write lock (the two kinds conflict), but it belongs to the open file,
 * as flock() does, not to the process.  So a lock the monitor took for
 * the session stays held while either of them lives: were the monitor
 * killed in the middle of the session's commit, an MDA must still wait.
 */
static enum lock_try
lock_fcntl(struct maildrop *md)
{
	struct flock	fl;

	memset(&fl, 0, sizeof(fl));	/* l_pid 0, as OFD locks require */
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;		/* l_len 0: to EOF, and beyond */
	if (fcntl(md->fd, F_OFD_SETLK, &fl) == 0)
		return LOCK_TAKEN;
	if (errno == EACCES || errno == EAGAIN || errno == EINTR)
		return LOCK_BUSY;
	return LOCK_ERROR;
}

static enum lock_try
lock_dot(struct maildrop *md)
{
	int	r;

	r = dotlock_file_create(md->lockpath);
	if (r == L_SUCCESS) {
		md->dotlocked = 1;
		clock_gettime(MD_CLOCK, &md->touched);
		return LOCK_TAKEN;
	}
	if (r == L_MAXTRYS)
		return LOCK_BUSY;
	md->dotlock_error = r;
	return LOCK_ERROR;
}

static enum lock_try
lock_flock(struct maildrop *md)
{
	if (flock(md->fd, LOCK_EX | LOCK_NB) == 0) {
		md->flocked = 1;
		return LOCK_TAKEN;
	}
	if (errno == EWOULDBLOCK || errno == EINTR)
		return LOCK_BUSY;
	return LOCK_ERROR;
}

/* liblockfile returns its own codes, not errno values. */
static const char *
dotlock_reason(const struct maildrop *md)
{
	switch (md->dotlock_error) {
	case L_TMPLOCK:
		/* Also dotlockfile's refusal: spool missing or not ours. */
		return "cannot create a lock file in the spool directory";
	case L_TMPWRITE:
		return "cannot write the lock file";
	case L_RMSTALE:
		return "cannot remove a stale lock file";
	case L_NAMELEN:
		return "name too long";
	default:
		return "liblockfile error";
	}
}

/* Try one lock until it is taken or the shared deadline has passed. */
static enum lock_try
lock_retry(struct maildrop *md, enum lock_try (*try)(struct maildrop *),
    const struct timespec *start)
{
	enum lock_try	r;
	long long	left;

	for (;;) {
		if ((r = try(md)) != LOCK_BUSY)
			return r;
		if ((left = LOCK_WAIT_MS - elapsed_ms(start)) <= 0)
			return LOCK_BUSY;
		sleep_ms(left < LOCK_RETRY_MS ? left : LOCK_RETRY_MS);
	}
}

/* Take the three locks; what was taken is released by maildrop_close(). */
static enum md_status
lock_spool(struct maildrop *md, const char *path)
{
	static const struct {
		enum lock_try	(*try)(struct maildrop *);
		const char	*name;
	} locks[] = {
		{ lock_fcntl,	"fcntl" },
		{ lock_dot,	"dot-lock" },
		{ lock_flock,	"flock" }
	};
	struct timespec	start;
	size_t		i;

	if (asprintf(&md->lockpath, "%s.lock", path) == -1) {
		md->lockpath = NULL;
		return md_fail(md, MD_SYSTEMP, "out of memory");
	}
	clock_gettime(MD_CLOCK, &start);
	for (i = 0; i < sizeof(locks) / sizeof(locks[0]); i++) {
		switch (lock_retry(md, locks[i].try, &start)) {
		case LOCK_TAKEN:
			break;
		case LOCK_BUSY:
			return md_fail(md, MD_INUSE, "locked by another "
			    "process (%s)", locks[i].name);
		case LOCK_ERROR:
			return md_fail(md, MD_SYSTEMP, "%s: %s",
			    locks[i].name, locks[i].try == lock_dot ?
			    dotlock_reason(md) : strerror(errno));
		}
	}
	return MD_OK;
}

/* Opening. */

/* An open(2) error: permanent if the administrator must act. */
static enum md_status
open_error(struct maildrop *md, int error)
{
	switch (error) {
	case ELOOP:
		return md_fail(md, MD_SYSPERM, "spool is a symbolic link");
	case EACCES:
	case EPERM:
	case EISDIR:
	case ENOTDIR:
	case ENXIO:
	case ENAMETOOLONG:
	case EROFS:
		return md_fail(md, MD_SYSPERM, "open: %s", strerror(error));
	default:
		return md_fail(md, MD_SYSTEMP, "open: %s", strerror(error));
	}
}

/*
 * A spool must be a regular file of the user's, with no other name:
 * a second link would let whoever made it read or rewrite the mail.
 */
static enum md_status
check_spool(struct maildrop *md)
{
	struct stat	st;

	if (fstat(md->fd, &st) == -1)
		return md_fail(md, MD_SYSTEMP, "fstat: %s", strerror(errno));
	if (!S_ISREG(st.st_mode))
		return md_fail(md, MD_SYSPERM, "spool is not a regular file");
	if (st.st_uid != geteuid())
		return md_fail(md, MD_SYSPERM, "spool owned by uid %lu",
		    (unsigned long)st.st_uid);
	if (st.st_nlink != 1)
		return md_fail(md, MD_SYSPERM, "spool has %lu links",
		    (unsigned long)st.st_nlink);
	md->dev = st.st_dev;
	md->ino = st.st_ino;
	return MD_OK;
}

/*
 * A missing spool is an empty maildrop (issue 4) and is not created.
 * It is not locked either: with no message nothing can be marked, so
 * UPDATE writes nothing, and an MDA creating the file meanwhile does
 * no harm; liblockfile's helper also refuses to dot-lock a spool that
 * does not exist.
 */
static enum md_status
open_spool(struct maildrop *md, const char *path)
{
	md->fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (md->fd == -1) {
		if (errno == ENOENT)
			return MD_OK;
		return open_error(md, errno);
	}
	return check_spool(md);
}

/*
 * Indexing.
 *
 * mbox: a message starts with a "From " line at the start of the file
 * or after an empty line ("\n" or "\r\n"); that empty line separates
 * and belongs to no message, and one trailing empty line at the end of
 * the file is dropped too.  Empty lines before the first message belong
 * to none and stay; any other text there means the file is not a mbox.
 * Content-Length: is not trusted.  LF and CRLF files are accepted, and
 * a last line without newline.  The file is read in FILE_CHUNK blocks
 * and scanned line by line with memchr():
 * per line a few tests, per header line a few more, so a 500 MB spool
 * is indexed in well under a second from the page cache.  mmap() is
 * not used: touched pages would count in the session's RSS.
 *
 * UIDL (RFC 1939 section 7: 1-70 characters 0x21-0x7E, unique,
 * persistent).  The id is the first 8 bytes of an XXH3-128, in lowercase
 * hex (16 characters), over
 *	- the From_ line,
 *	- every header line except Status:, X-Status:, X-UID:,
 *	  X-Keywords:, X-IMAP:, X-IMAPbase:, Content-Length: and Lines:
 *	  (names case-insensitive; continuation lines follow their
 *	  header), which local mail readers rewrite,
 *	- if the headers have no Message-ID:, the body (up to the empty
 *	  line before the next From_ line or the end of the file),
 *	- the body's size as sent (8 bytes, little-endian),
 * with every line end hashed as LF, so CRLF and LF copies match.  A
 * Message-ID (with the Received: lines an MTA adds) tells deliveries
 * apart without hashing the bodies, a quarter of the index time;
 * without one (a script piped into an MDA), same-second deliveries
 * differ only in their bodies, and a reused id would make a client
 * delete a message it never fetched.  The k-th message (k >= 2) in
 * file order with the hash of an earlier one gets ".k" appended, so
 * byte-identical messages differ.  An id survives sessions, the
 * deletion of other messages and those header edits.  Limits: two
 * identical messages swap ids if the first is deleted and the second
 * kept; an edit of any other header or of the body gives a new id (the
 * message is downloaded again, never lost).  An X-UIDL: header is never
 * read: anyone who sends mail controls it.
 */

/* Headers that mail readers rewrite; they must not change a UIDL. */
static int
header_unhashed(const char *p, size_t n)
{
	static const struct {
		const char	*name;
		size_t		 len;
	} names[] = {
		{ "Status:", 7 },
		{ "X-Status:", 9 },
		{ "X-UID:", 6 },
		{ "X-Keywords:", 11 },
		{ "X-IMAP:", 7 },
		{ "X-IMAPbase:", 11 },
		{ "Content-Length:", 15 },
		{ "Lines:", 6 }
	};
	size_t	i;

	/* Most headers are ruled out by their first letter. */
	switch (p[0] | 0x20) {
	case 'c':
	case 'l':
	case 's':
	case 'x':
		break;
	default:
		return 0;
	}
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (n >= names[i].len &&
		    strncasecmp(p, names[i].name, names[i].len) == 0)
			return 1;
	return 0;
}

/*
 * UW-IMAP and Pine keep folder state in a first message that is not
 * mail; it is never listed, never deleted, and kept by the commit.  It
 * is recognised by all three marks UW writes (its From_ line, its
 * Subject and an X-IMAP header) and by what it lacks: a Received:
 * header.  The marks are all a sender's to forge (Postfix writes "From
 * MAILER-DAEMON" for a bounce, whose envelope sender is empty), but
 * every MTA that takes in a message adds a Received: line (RFC 5321
 * section 4.4) that no sender can remove; so mail cannot hide itself
 * by becoming first once the messages before it are deleted.
 */
#define PSEUDO_FROM	1
#define PSEUDO_SUBJECT	2
#define PSEUDO_XIMAP	4
#define PSEUDO_ALL	(PSEUDO_FROM | PSEUDO_SUBJECT | PSEUDO_XIMAP)
#define PSEUDO_MAIL	8	/* a Received: header: it came as mail */

static int
header_pseudo(const char *p, size_t n)
{
	static const char subject[] =
	    "Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA";

	if (n >= 7 && strncasecmp(p, "X-IMAP:", 7) == 0)
		return PSEUDO_XIMAP;
	if (n >= 9 && strncasecmp(p, "Received:", 9) == 0)
		return PSEUDO_MAIL;
	if (n >= sizeof(subject) - 1 &&
	    strncmp(p, subject, sizeof(subject) - 1) == 0)
		return PSEUDO_SUBJECT;
	return 0;
}

static int
from_pseudo(const char *p, size_t n)
{
	static const char from[] = "From MAILER-DAEMON ";

	return n >= sizeof(from) - 1 &&
	    memcmp(p, from, sizeof(from) - 1) == 0 ? PSEUDO_FROM : 0;
}

static int
is_pseudo(const struct scan *sc)
{
	return sc->pseudo == PSEUDO_ALL;
}

static void
hash_bytes(struct scan *sc, const char *p, size_t n)
{
	XXH3_128bits_update(sc->ctx, p, n);
}

/*
 * Hash a piece of a line (no LF).  A CR at its end is held back until
 * it is known whether an LF follows, so CRLF hashes as LF.
 */
static void
hash_piece(struct scan *sc, const char *p, size_t n)
{
	if (n == 0)
		return;
	if (sc->pending_cr) {
		hash_bytes(sc, "\r", 1);
		sc->pending_cr = 0;
	}
	if (p[n - 1] == '\r') {
		sc->pending_cr = 1;
		n--;
	}
	hash_bytes(sc, p, n);
}

/* A header line (n bytes available from its start) in the headers. */
static void
header_begin(struct scan *sc, const char *p, size_t n)
{
	if (sc->line_empty) {
		sc->in_headers = 0;
		sc->line_hdr_end = 1;
		/*
		 * Hashed as an empty body line, so that a header and a
		 * body line hash apart; like one, only once text follows
		 * (it may be the separator before the next From_ line).
		 */
		if (sc->body_hashed)
			sc->empties++;
		return;
	}
	/* RFC 5322 section 2.2.3: a continuation starts with WSP. */
	if (p[0] != ' ' && p[0] != '\t') {
		if (n >= 11 && strncasecmp(p, "Message-ID:", 11) == 0)
			sc->body_hashed = 0;
		sc->skip_header = header_unhashed(p, n);
		if (sc->md->nmsgs == 0)
			sc->pseudo |= header_pseudo(p, n);
	}
	sc->hashing = !sc->skip_header;
}

static int
msg_store(struct scan *sc)
{
	struct maildrop	*md = sc->md;
	struct msg	*m;
	size_t		 cap;

	if (md->nmsgs == md->cap) {
		cap = md->cap ? md->cap * 2 : 64;
		m = reallocarray(md->msgs, cap, sizeof(*m));
		if (m == NULL) {
			sc->status = md_fail(md, MD_SYSTEMP, "out of memory");
			return -1;
		}
		md->msgs = m;
		md->cap = cap;
	}
	md->msgs[md->nmsgs++] = sc->cur;
	return 0;
}

/*
 * Empty body lines are hashed when a line of text follows: only then is
 * it known that they are the message's and not the separator before
 * the next From_ line (or the end of the file).
 */
static void
hash_empties(struct scan *sc, uint64_t n)
{
	for (; n > 0; n--)
		hash_bytes(sc, "\n", 1);
	sc->empties = 0;
}

/* The UIDL hash ends with the body's size as sent. */
static void
hash_finish(struct scan *sc, uint64_t body)
{
	XXH128_canonical_t	digest;
	uint8_t			le[8];
	int			i;

	for (i = 0; i < 8; i++)
		le[i] = body >> (8 * i);
	XXH3_128bits_update(sc->ctx, le, sizeof(le));
	XXH128_canonicalFromHash(&digest, XXH3_128bits_digest(sc->ctx));
	memcpy(sc->cur.hash, digest.digest, UIDL_HASH_LEN);
}

/* End the current message where the current line starts (or at EOF). */
static int
msg_close(struct scan *sc)
{
	struct msg	*m = &sc->cur;
	off_t		 end = sc->off;

	if (sc->prev_empty) {
		end = sc->prev_empty_at;
		sc->bare -= sc->prev_empty_bare;
	}
	m->sep = (uint8_t)(sc->off - end);	/* "\n" or "\r\n" */
	/* RFC 1939 section 11: every line end counts as CRLF. */
	m->octets = end - sc->text + sc->bare + (sc->partial_last ? 2 : 0);
	if (sc->in_headers || sc->hdr_end > end) {
		sc->hdr_end = end;
		sc->hdr_octets = m->octets;
	}
	/* Stored as 32-bit lengths, to keep the index small. */
	if (sc->text - m->from > UINT32_MAX ||
	    sc->hdr_end - sc->text > UINT32_MAX) {
		sc->status = md_fail(sc->md, MD_SYSPERM, "a From_ line or a "
		    "header section over 4 GB");
		return -1;
	}
	m->from_len = (uint32_t)(sc->text - m->from);
	m->hdr_len = (uint32_t)(sc->hdr_end - sc->text);
	/* The empty line that ends the message belongs to none. */
	if (sc->body_hashed)
		hash_empties(sc, sc->empties - (sc->prev_empty &&
		    sc->empties > 0));
	hash_finish(sc, m->octets - sc->hdr_octets);
	return msg_store(sc);
}

static int
msg_begin(struct scan *sc)
{
	struct maildrop	*md = sc->md;

	if (sc->have_msg && msg_close(sc) == -1)
		return -1;
	if (md->nmsgs - (is_pseudo(sc) ? 1 : 0) >= MAX_MESSAGES) {
		sc->status = md_fail(md, MD_SYSPERM, "MAX_MESSAGES (%d) "
		    "exceeded", MAX_MESSAGES);
		return -1;
	}
	memset(&sc->cur, 0, sizeof(sc->cur));
	sc->cur.from = sc->off;
	sc->text = 0;
	sc->hdr_end = 0;
	sc->have_msg = 1;
	sc->line_from = 1;
	sc->hashing = 1;
	sc->counting = 0;
	sc->in_headers = 1;
	sc->skip_header = 0;
	sc->bare = 0;
	sc->partial_last = 0;
	sc->body_hashed = 1;
	sc->empties = 0;
	XXH3_128bits_reset(sc->ctx);
	return 0;
}

/*
 * Classify a line from its first n bytes: all of it when complete,
 * else at least SCAN_HEAD bytes, or what is left at EOF.
 */
static int
line_begin(struct scan *sc, const char *p, size_t n, int complete)
{
	sc->line_empty = complete && (n == 1 || (n == 2 && p[0] == '\r'));
	sc->line_from = 0;
	sc->line_hdr_end = 0;
	if (sc->prev_empty && n >= FROM_LEN &&
	    memcmp(p, FROM_LINE, FROM_LEN) == 0) {
		if (sc->md->nmsgs == 0 && !sc->have_msg)
			sc->pseudo = from_pseudo(p, n);
		return msg_begin(sc);
	}
	/* Empty lines may come first (`echo > spool` leaves one); text not. */
	if (!sc->have_msg && !sc->line_empty) {
		sc->status = md_fail(sc->md, MD_SYSPERM, "not a mbox: text "
		    "before the first From_ line");
		return -1;
	}
	sc->hashing = 0;
	sc->counting = 1;
	if (sc->in_headers)
		header_begin(sc, p, n);
	else if (!sc->body_hashed)
		return 0;
	else if (sc->line_empty)
		sc->empties++;
	else {
		hash_empties(sc, sc->empties);
		sc->hashing = 1;
	}
	return 0;
}

/* The end of a hashed long line: hashed as LF, like every line end. */
static void
long_line_hash_end(struct scan *sc, int newline)
{
	/* A CR without LF at EOF is a lone CR, sent as is. */
	if (sc->pending_cr && !newline)
		hash_bytes(sc, "\r", 1);
	sc->pending_cr = 0;
	hash_bytes(sc, "\n", 1);
}

/* The line of len bytes (its LF included) ends. */
static void
line_end(struct scan *sc, off_t len, int newline, int cr_before)
{
	if (sc->counting && newline && !cr_before)
		sc->bare++;
	if (sc->line_from)
		sc->text = sc->off + len;
	if (sc->line_hdr_end) {
		sc->hdr_end = sc->off + len;
		sc->hdr_octets = sc->hdr_end - sc->text + sc->bare;
	}
	if (!newline && sc->counting)
		sc->partial_last = 1;
	sc->prev_empty = sc->line_empty;
	if (sc->line_empty) {
		sc->prev_empty_at = sc->off;
		sc->prev_empty_bare = len == 1;
	}
	sc->off += len;
}

/* A whole line of n bytes, its LF included. */
static int
scan_line(struct scan *sc, const char *p, size_t n)
{
	int	cr = n >= 2 && p[n - 2] == '\r';

	if (line_begin(sc, p, n, 1) == -1)
		return -1;
	/* CRLF is hashed as LF, so that CRLF and LF files hash alike. */
	if (sc->hashing && cr) {
		hash_bytes(sc, p, n - 2);
		hash_bytes(sc, "\n", 1);
	} else if (sc->hashing)
		hash_bytes(sc, p, n);
	line_end(sc, n, 1, cr);
	return 0;
}

/* Bytes of a line that spans chunks (no LF among them). */
static void
long_line_piece(struct scan *sc, const char *p, size_t n)
{
	if (sc->hashing)
		hash_piece(sc, p, n);
	sc->line_len += n;
	if (n > 0)
		sc->last_cr = p[n - 1] == '\r';
}

static int
long_line_begin(struct scan *sc, const char *p, size_t n)
{
	if (line_begin(sc, p, n, 0) == -1)
		return -1;
	sc->in_line = 1;
	sc->line_len = 0;
	sc->last_cr = 0;
	long_line_piece(sc, p, n);
	return 0;
}

/* More of a long line, up to stop; at a newline if nl. */
static const char *
long_line_more(struct scan *sc, const char *p, const char *stop, int nl)
{
	long_line_piece(sc, p, stop - p);
	if (!nl)
		return stop;
	if (sc->hashing)
		long_line_hash_end(sc, 1);
	line_end(sc, sc->line_len + 1, 1, sc->last_cr);
	sc->in_line = 0;
	return stop + 1;
}

/*
 * 64 bytes at a time, for the body scan below and for sending: a mask
 * with bit i set where p[i] is c.  AVX2 where the CPU has it (asked
 * once), else SSE2, which every amd64 has.
 */

/* -1: not asked yet; 0: SSE2; 1: AVX2.  See maildrop_use_avx2(). */
static int	use_avx2 = -1;

void
maildrop_use_avx2(int on)
{
	use_avx2 = on ? -1 : 0;
}

#if defined(__x86_64__) && defined(__GNUC__)
static int
have_avx2(void)
{
	if (use_avx2 == -1)
		use_avx2 = __builtin_cpu_supports("avx2");
	return use_avx2;
}
#endif

#ifdef __SSE2__
static inline __attribute__((always_inline)) uint64_t
byte_mask64(const char *p, char c)
{
	const __m128i	b = _mm_set1_epi8(c);
	const __m128i	*v = (const __m128i *)(const void *)p;
	uint64_t	m0, m1, m2, m3;

	m0 = (uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(v), b));
	m1 = (uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(v + 1),
	    b));
	m2 = (uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(v + 2),
	    b));
	m3 = (uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(v + 3),
	    b));
	return m0 | m1 << 16 | m2 << 32 | m3 << 48;
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) static inline
__attribute__((always_inline)) uint64_t
byte_mask64_avx2(const char *p, char c)
{
	const __m256i	b = _mm256_set1_epi8(c);
	const __m256i	*v = (const __m256i *)(const void *)p;
	uint64_t	m0, m1;

	m0 = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(
	    _mm256_loadu_si256(v), b));
	m1 = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(
	    _mm256_loadu_si256(v + 1), b));
	return m0 | m1 << 32;
}
#endif

#ifdef __SSE2__
/*
 * The unhashed body scan, 64 bytes a step, where a call of memchr() per
 * line cost more than a third of the index time: from the masks of LFs
 * and CRs, the bare LFs (no CR before) are counted and the first empty
 * line ("\n" or "\r\n" after a LF) is found.  p starts a line after a
 * non-empty one.  Returns the start of the first line not taken: the
 * empty line, or the one the last whole step cut.
 */
static inline __attribute__((always_inline)) const char *
body_blocks_with(const char *p, const char *end, uint64_t *bare,
    uint64_t (*mask)(const char *, char))
{
	const char	*line = p;
	uint64_t	 lf, cr, after_lf, after_cr, after_lf2, empty, below;
	uint64_t	 lf_1 = 1, lf_2 = 0, cr_1 = 0;	/* at p[-1], p[-2] */
	int		 i, start;

	for (; end - p >= 64; p += 64) {
		lf = mask(p, '\n');
		cr = mask(p, '\r');
		after_lf = lf << 1 | lf_1;
		after_cr = cr << 1 | cr_1;
		after_lf2 = lf << 2 | lf_1 << 1 | lf_2;
		empty = lf & (after_lf | (after_cr & after_lf2));
		if (empty != 0) {
			i = __builtin_ctzll(empty);
			/* The empty line starts at its LF or at its CR. */
			start = after_lf >> i & 1 ? i : i - 1;
			below = start > 0 ? ~0ULL >> (64 - start) : 0;
			*bare += __builtin_popcountll(lf & ~after_cr & below);
			return p + start;
		}
		*bare += __builtin_popcountll(lf & ~after_cr);
		if (lf != 0)
			line = p + 64 - __builtin_clzll(lf);
		lf_2 = lf >> 62 & 1;
		lf_1 = lf >> 63;
		cr_1 = cr >> 63;
	}
	return line;
}

static const char *
body_blocks_sse2(const char *p, const char *end, uint64_t *bare)
{
	return body_blocks_with(p, end, bare, byte_mask64);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) static const char *
body_blocks_avx2(const char *p, const char *end, uint64_t *bare)
{
	return body_blocks_with(p, end, bare, byte_mask64_avx2);
}
#endif

static const char *
body_blocks(const char *p, const char *end, uint64_t *bare)
{
#if defined(__x86_64__) && defined(__GNUC__)
	if (have_avx2())
		return body_blocks_avx2(p, end, bare);
#endif
	return body_blocks_sse2(p, end, bare);
}
#endif

/*
 * Body lines after a non-empty line can neither start a message nor end
 * the headers: most lines of a spool take this short path, which stops
 * before an empty line or a line without its LF.
 */
static const char *
scan_body(struct scan *sc, const char *p, const char *end)
{
	const char	*nl, *run, *start = p;
	uint64_t	 bare = sc->bare;

#ifdef __SSE2__
	if (!sc->body_hashed)
		p = body_blocks(p, end, &bare);
#endif
	run = p;
	while ((nl = memchr(p, '\n', end - p)) != NULL) {
		if (nl == p || (nl == p + 1 && p[0] == '\r'))
			break;
		if (nl[-1] != '\r')
			bare++;
		else if (sc->body_hashed) {
			/* Hashed as LF: the run up to the CR, then on. */
			hash_bytes(sc, run, nl - 1 - run);
			run = nl;
		}
		p = nl + 1;
	}
	if (sc->body_hashed)
		hash_bytes(sc, run, p - run);
	sc->bare = bare;
	sc->off += p - start;
	return p;
}

/*
 * Index the lines in buf[0..len).  Returns the bytes used: the start of
 * a line shorter than SCAN_HEAD without its LF is left for the next
 * chunk, so every line is classified from its first bytes.
 */
static ssize_t
scan_chunk(struct scan *sc, const char *buf, size_t len, int eof)
{
	const char	*p = buf, *end = buf + len, *nl;

	while (p < end) {
		if (!sc->in_headers && !sc->prev_empty && !sc->in_line &&
		    (p = scan_body(sc, p, end)) == end)
			break;
		nl = memchr(p, '\n', end - p);
		if (sc->in_line)
			p = long_line_more(sc, p, nl ? nl : end, nl != NULL);
		else if (nl != NULL) {
			if (scan_line(sc, p, nl + 1 - p) == -1)
				return -1;
			p = nl + 1;
		} else if (eof || end - p >= SCAN_HEAD) {
			if (long_line_begin(sc, p, end - p) == -1)
				return -1;
			p = end;
		} else
			break;
	}
	return p - buf;
}

static int
scan_finish(struct scan *sc)
{
	if (sc->in_line) {
		if (sc->hashing)
			long_line_hash_end(sc, 0);
		line_end(sc, sc->line_len, 0, 0);
		sc->in_line = 0;
	}
	if (sc->have_msg && msg_close(sc) == -1)
		return -1;
	sc->md->first = is_pseudo(sc) && sc->md->nmsgs > 0;
	return 0;
}

static int
hash_order(const void *a, const void *b, void *arg)
{
	const struct maildrop	*md = arg;
	uint32_t		 i = *(const uint32_t *)a;
	uint32_t		 j = *(const uint32_t *)b;
	int			 c;

	c = memcmp(md->msgs[i].hash, md->msgs[j].hash, UIDL_HASH_LEN);
	if (c != 0)
		return c;
	return i < j ? -1 : i > j;
}

/* Number identical hashes 1, 2, ... in file order (4 bytes a message). */
static enum md_status
mark_duplicates(struct maildrop *md)
{
	uint32_t	*ix;
	size_t		 i, n = md->nmsgs - md->first;
	struct msg	*m, *prev = NULL;

	if (n == 0)
		return MD_OK;
	if ((ix = reallocarray(NULL, n, sizeof(*ix))) == NULL)
		return md_fail(md, MD_SYSTEMP, "out of memory");
	for (i = 0; i < n; i++)
		ix[i] = md->first + i;
	qsort_r(ix, n, sizeof(*ix), hash_order, md);
	for (i = 0; i < n; i++) {
		m = &md->msgs[ix[i]];
		m->dup = 1;
		if (prev != NULL && memcmp(prev->hash, m->hash,
		    UIDL_HASH_LEN) == 0)
			m->dup = prev->dup + 1;
		prev = m;
	}
	free(ix);
	return MD_OK;
}

/* The size to index, after the locks; limits from params.h. */
static enum md_status
index_size(struct maildrop *md)
{
	struct stat	st;

	if (fstat(md->fd, &st) == -1)
		return md_fail(md, MD_SYSTEMP, "fstat: %s", strerror(errno));
	if (st.st_size > MAX_MAILDROP_BYTES)
		return md_fail(md, MD_SYSPERM, "MAX_MAILDROP_BYTES (%lld) "
		    "exceeded", (long long)MAX_MAILDROP_BYTES);
	md->size = st.st_size;
	return MD_OK;
}

/* Feed the spool through the scanner, a chunk at a time. */
static enum md_status
scan_file(struct maildrop *md, struct scan *sc)
{
	off_t		off = 0, want;
	size_t		carry = 0, have;
	ssize_t		used;

	while (off < md->size) {
		want = chunk_len(md->size - off);
		if (pread_full(md->fd, md->buf + carry, want, off) == -1)
			return md_fail(md, MD_SYSTEMP, "read: %s",
			    strerror(errno));
		off += want;
		have = carry + want;
		if ((used = scan_chunk(sc, md->buf, have,
		    off == md->size)) == -1)
			return sc->status;
		carry = have - used;
		memmove(md->buf, md->buf + used, carry);
	}
	if (scan_finish(sc) == -1)
		return sc->status;
	return MD_OK;
}

/* One pass over the spool; never more than a chunk in memory. */
static enum md_status
index_spool(struct maildrop *md)
{
	struct scan	sc;
	enum md_status	st;

	if ((st = index_size(md)) != MD_OK)
		return st;
	memset(&sc, 0, sizeof(sc));
	sc.md = md;
	sc.prev_empty = 1;		/* the file start acts as one */
	if ((sc.ctx = XXH3_createState()) == NULL)
		return md_fail(md, MD_SYSTEMP, "out of memory");
	st = scan_file(md, &sc);
	XXH3_freeState(sc.ctx);
	if (st != MD_OK)
		return st;
	return mark_duplicates(md);
}

/*
 * The undo journal: see the block comment before commit_plan().
 */

static int
journal_invalidate(struct maildrop *md)
{
	if (ftruncate(md->journal_fd, 0) == -1 || fsync(md->journal_fd) == -1)
		return -1;
	return 0;
}

static void
journal_seal(struct jheader *jh)
{
	jh->hdr_hash = XXH3_64bits(jh, offsetof(struct jheader, hdr_hash));
}

/* Magic, header hash and arithmetic; the data hash is checked later. */
static int
journal_sane(const struct jheader *jh, off_t jsize)
{
	struct jheader	copy = *jh;

	journal_seal(&copy);
	if (memcmp(jh->magic, JOURNAL_MAGIC, sizeof(JOURNAL_MAGIC)) != 0 ||
	    copy.hdr_hash != jh->hdr_hash)
		return 0;
	return memchr(jh->spool, '\0', sizeof(jh->spool)) != NULL &&
	    jh->start <= jh->newsize && jh->newsize < jh->oldsize &&
	    jh->datalen == jh->newsize - jh->start &&
	    jh->oldsize <= (uint64_t)MAX_MAILDROP_BYTES &&
	    (uint64_t)jsize >= JOURNAL_HDR_SIZE + jh->datalen;
}

/* A valid v1 header becomes a sealed current one without a path. */
static void
journal_upgrade_v1(struct jheader *jh)
{
	uint64_t	v1_hash;

	memcpy(&v1_hash, jh->spool, sizeof(v1_hash));
	if (memcmp(jh->magic, JOURNAL_MAGIC_V1, sizeof(jh->magic)) != 0 ||
	    XXH3_64bits(jh, JOURNAL_V1_HASHED) != v1_hash)
		return;
	memcpy(jh->magic, JOURNAL_MAGIC, sizeof(jh->magic));
	memset(jh->spool, 0, sizeof(jh->spool));
	journal_seal(jh);
}

static enum journal_state
journal_load(int fd, struct jheader *jh)
{
	struct stat	st;

	if (fstat(fd, &st) == -1)
		return J_ERROR;
	if (st.st_size == 0)
		return J_EMPTY;
	if (st.st_size < JOURNAL_HDR_SIZE)
		return J_INVALID;
	if (pread_full(fd, jh, sizeof(*jh), 0) == -1)
		return J_ERROR;
	journal_upgrade_v1(jh);
	return journal_sane(jh, st.st_size) ? J_VALID : J_INVALID;
}

/* 1 if the journal data is intact, 0 if torn, -1 on a read error. */
static int
journal_data_ok(struct maildrop *md, const struct jheader *jh)
{
	uint64_t	digest;

	if (hash_range(md, md->journal_fd, JOURNAL_HDR_SIZE, jh->datalen,
	    &digest) == -1)
		return -1;
	return digest == jh->data_hash;
}

/* Write the journal's bytes back to [P, N) of the spool, then fsync. */
static int
journal_restore(struct maildrop *md, const struct jheader *jh)
{
	off_t	done, n;

	for (done = 0; done < (off_t)jh->datalen; done += n) {
		maildrop_touch(md);	/* a long copy must not look stale */
		n = chunk_len(jh->datalen - done);
		if (pread_full(md->journal_fd, md->buf, n,
		    JOURNAL_HDR_SIZE + done) == -1 ||
		    pwrite_full(md->fd, md->buf, n, jh->start + done) == -1)
			return -1;
	}
	return fsync(md->fd);
}

/* Copy [P, N) of the spool into the journal, hashing it. */
static int
journal_copy(struct maildrop *md, struct jheader *jh)
{
	XXH3_state_t	*ctx;
	off_t		 done, n;
	int		 rv = 0;

	if ((ctx = XXH3_createState()) == NULL)
		return -1;
	XXH3_64bits_reset(ctx);
	for (done = 0; done < (off_t)jh->datalen; done += n) {
		maildrop_touch(md);
		n = chunk_len(jh->datalen - done);
		if (pread_full(md->fd, md->buf, n, jh->start + done) == -1 ||
		    pwrite_full(md->journal_fd, md->buf, n,
		    JOURNAL_HDR_SIZE + done) == -1 ||
		    start_writeback(md->journal_fd, JOURNAL_HDR_SIZE + done,
		    n) == -1) {
			rv = -1;
			break;
		}
		XXH3_64bits_update(ctx, md->buf, n);
	}
	jh->data_hash = XXH3_64bits_digest(ctx);
	XXH3_freeState(ctx);
	return rv;
}

/* Step 1: the journal, complete and on disk before the spool is touched. */
static int
journal_write(struct maildrop *md, const struct plan *pl, struct jheader *jh)
{
	memset(jh, 0, sizeof(*jh));
	memcpy(jh->magic, JOURNAL_MAGIC, sizeof(JOURNAL_MAGIC));
	jh->dev = md->dev;
	jh->ino = md->ino;
	jh->start = pl->start;
	jh->newsize = pl->newsize;
	jh->oldsize = pl->oldsize;
	jh->datalen = pl->newsize - pl->start;
	if (strlcpy(jh->spool, md->path, sizeof(jh->spool)) >=
	    sizeof(jh->spool))
		memset(jh->spool, 0, sizeof(jh->spool));	/* not recorded */
	if (hash_range(md, md->fd, pl->newsize, pl->oldsize - pl->newsize,
	    &jh->tail_hash) == -1 || journal_copy(md, jh) == -1)
		return -1;
	journal_seal(jh);
	memset(md->buf, 0, JOURNAL_HDR_SIZE);
	memcpy(md->buf, jh, sizeof(*jh));
	if (pwrite_full(md->journal_fd, md->buf, JOURNAL_HDR_SIZE, 0) == -1)
		return -1;
	return fsync(md->journal_fd);
}

/* 1 if [N, S0) of the spool is as before the commit. */
static int
journal_tail_intact(struct maildrop *md, const struct jheader *jh)
{
	uint64_t	digest;

	if (hash_range(md, md->fd, jh->newsize, jh->oldsize - jh->newsize,
	    &digest) == -1)
		return -1;
	return digest == jh->tail_hash;
}

static enum md_status
journal_discard(struct maildrop *md)
{
	if (journal_invalidate(md) == -1)
		return md_fail(md, MD_SYSTEMP, "journal: cannot invalidate: "
		    "%s", strerror(errno));
	return MD_OK;
}

/*
 * A valid journal of this spool: the commit was interrupted.  The
 * truncation is the commit point (its fsync follows the compaction's):
 * a file shorter than S0 was truncated, so the commit is complete;
 * otherwise, if [N, S0) is unchanged, the truncation did not happen and
 * the deletions are undone by writing [P, N) back (mail appended after
 * S0 stays); else the file was truncated and appended to since.
 */
static enum md_status
journal_apply(struct maildrop *md, const struct jheader *jh)
{
	struct stat	st;
	int		r;

	if (fstat(md->fd, &st) == -1)
		return md_fail(md, MD_SYSTEMP, "fstat: %s", strerror(errno));
	r = st.st_size < (off_t)jh->oldsize ? 0 :
	    journal_tail_intact(md, jh);
	if (r == -1)
		return md_fail(md, MD_SYSTEMP, "recovery: read: %s",
		    strerror(errno));
	if (r == 0) {
		log_info("%s: interrupted commit had completed", md->path);
		return journal_discard(md);
	}
	if (journal_restore(md, jh) == -1)
		return md_fail(md, MD_SYSTEMP, "recovery: cannot undo an "
		    "interrupted commit: %s", strerror(errno));
	log_info("%s: interrupted commit undone, %llu bytes restored",
	    md->path, (unsigned long long)jh->datalen);
	return journal_discard(md);
}

/* 1 if the journal's file is still at its path, 0 if not, -1 if unknown. */
static int
journal_file_there(const struct jheader *jh)
{
	struct stat	st;

	if (jh->spool[0] == '\0')
		return 0;	/* too long to record, or a v1 journal */
	if (stat(jh->spool, &st) == -1)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -1;
	return (uint64_t)st.st_dev == jh->dev && (uint64_t)st.st_ino == jh->ino;
}

/*
 * Whether a valid journal is this spool's: 1 if so, 0 if it is to be
 * discarded, -1 if it is to be kept and the open refused.  The journal
 * is per user (pop3d.c names it by the account), so a configuration
 * with another -m may meet one that a commit of another file left: it
 * is kept while that file is still where the journal says, until a
 * session or pop3d -R with that -m repairs it.  One of a file since
 * removed, renamed or replaced has nothing left to repair.
 */
static int
journal_ours(struct maildrop *md, const struct jheader *jh)
{
	if (md->fd != -1 && jh->dev == (uint64_t)md->dev &&
	    jh->ino == (uint64_t)md->ino)
		return 1;
	switch (journal_file_there(jh)) {
	case 1:
		md_fail(md, MD_SYSTEMP, "journal kept for an unfinished "
		    "commit of %s", jh->spool);
		return -1;
	case -1:
		md_fail(md, MD_SYSTEMP, "journal of %s: stat: %s", jh->spool,
		    strerror(errno));
		return -1;
	}
	log_warnx("%s: commit journal of %s (dev %llu ino %llu), no longer "
	    "there, discarded", md->path, jh->spool[0] != '\0' ? jh->spool :
	    "a file", (unsigned long long)jh->dev, (unsigned long long)jh->ino);
	return 0;
}

/*
 * Two sessions of one user through two configurations (-m) share the
 * journal: each holds it with flock() for its recovery and its commit,
 * waiting for it as for the spool's locks.
 */
static enum lock_try
journal_lock_try(struct maildrop *md)
{
	if (flock(md->journal_fd, LOCK_EX | LOCK_NB) == 0)
		return LOCK_TAKEN;
	return errno == EWOULDBLOCK || errno == EINTR ? LOCK_BUSY : LOCK_ERROR;
}

static enum md_status
journal_lock(struct maildrop *md)
{
	struct timespec	start;

	clock_gettime(MD_CLOCK, &start);
	switch (lock_retry(md, journal_lock_try, &start)) {
	case LOCK_TAKEN:
		return MD_OK;
	case LOCK_BUSY:
		return md_fail(md, MD_INUSE, "journal in use by another "
		    "session of this user");
	default:
		return md_fail(md, MD_SYSTEMP, "journal: flock: %s",
		    strerror(errno));
	}
}

static enum md_status
journal_recover_locked(struct maildrop *md)
{
	struct jheader	jh;
	int		r;

	switch (journal_load(md->journal_fd, &jh)) {
	case J_EMPTY:
		return MD_OK;
	case J_ERROR:
		return md_fail(md, MD_SYSTEMP, "journal: %s",
		    strerror(errno));
	case J_INVALID:
		/* Fsynced before the first spool write: spool untouched. */
		log_warnx("%s: torn commit journal discarded", md->path);
		return journal_discard(md);
	case J_VALID:
		break;
	}
	if ((r = journal_ours(md, &jh)) == -1)
		return MD_SYSTEMP;
	if (r == 0)
		return journal_discard(md);
	if ((r = journal_data_ok(md, &jh)) == -1)
		return md_fail(md, MD_SYSTEMP, "journal: %s",
		    strerror(errno));
	if (r == 0) {
		log_warnx("%s: torn commit journal discarded", md->path);
		return journal_discard(md);
	}
	return journal_apply(md, &jh);
}

/*
 * Before a commit overwrites the journal: since this session's open, a
 * session of the same user through another -m may have been killed in
 * the middle of a commit, and left the journal to its spool.  Only an
 * empty or torn journal, or one of a file no longer there, is free.
 */
static enum md_status
journal_claim(struct maildrop *md)
{
	struct jheader	jh;

	switch (journal_load(md->journal_fd, &jh)) {
	case J_EMPTY:
	case J_INVALID:
		return MD_OK;
	case J_ERROR:
		return md_fail(md, MD_SYSTEMP, "journal: %s",
		    strerror(errno));
	case J_VALID:
		break;
	}
	switch (journal_ours(md, &jh)) {
	case 0:
		return MD_OK;
	case 1:		/* recovered at the open, under the same locks */
		return md_fail(md, MD_SYSTEMP, "journal: an unfinished "
		    "commit of this spool appeared");
	default:
		return MD_SYSTEMP;
	}
}

/* Run after the locks, before the index. */
static enum md_status
journal_recover(struct maildrop *md)
{
	enum md_status	st;

	if (md->journal_fd < 0)
		return MD_OK;
	if ((st = journal_lock(md)) != MD_OK)
		return st;
	st = journal_recover_locked(md);
	flock(md->journal_fd, LOCK_UN);
	return st;
}

/* The interface. */

int
maildrop_journal_spool(int journal_fd, char *buf, size_t len)
{
	struct jheader	jh;

	if (journal_load(journal_fd, &jh) != J_VALID || jh.spool[0] == '\0')
		return -1;
	return strlcpy(buf, jh.spool, len) < len ? 0 : -1;
}

/*
 * Keep the journal out of the dotlockfile helper, and make pwrite()
 * write where it is told: with O_APPEND, Linux appends regardless.
 */
static void
journal_adopt(int fd)
{
	int	fl;

	if (fd < 0)
		return;
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	if ((fl = fcntl(fd, F_GETFL)) != -1 && (fl & O_APPEND))
		fcntl(fd, F_SETFL, fl & ~O_APPEND);
}

static struct maildrop *
md_alloc(const char *path)
{
	struct maildrop	*md;

	if ((md = calloc(1, sizeof(*md))) == NULL)
		return NULL;
	md->fd = -1;
	md->journal_fd = -1;
	if ((md->buf = malloc(FILE_CHUNK + SCAN_HEAD)) == NULL ||
	    (md->path = strdup(path)) == NULL) {
		free(md->buf);
		free(md);
		return NULL;
	}
	return md;
}

/*
 * The spool as the parent locked it (maildrop_lock_for_child()), with
 * its failure if it could not: the locks stay the parent's.  path is
 * the caller's name for the spool (the parent locked it through its
 * real directory).
 */
static enum md_status
md_borrow(struct maildrop **mdp, const char *path, char *why,
    size_t whylen)
{
	struct maildrop	*md = lent.md;
	char		*name;

	lent.set = 0;
	lent.md = NULL;		/* ours now */
	if (lent.status != MD_OK) {
		say_why(why, whylen, lent.why);
		return lent.status;
	}
	md->borrowed = 1;
	*mdp = md;
	if ((name = strdup(path)) == NULL) {
		say_why(why, whylen, "out of memory");
		return MD_SYSTEMP;
	}
	free(md->path);
	md->path = name;
	return MD_OK;
}

/* Open and lock: the parent's locks if it took them for us. */
static enum md_status
md_open_locked(struct maildrop **mdp, const char *path, int journal_fd,
    char *why, size_t whylen)
{
	struct maildrop	*md;
	enum md_status	 st;

	*mdp = NULL;
	if (lent.set)
		st = md_borrow(mdp, path, why, whylen);
	else if ((*mdp = md_alloc(path)) == NULL) {
		say_why(why, whylen, "out of memory");
		st = MD_SYSTEMP;
	} else {
		md = *mdp;
		md->why = why;
		md->whylen = whylen;
		st = open_spool(md, path);
		if (st == MD_OK && md->fd >= 0)
			st = lock_spool(md, path);
	}
	if (st != MD_OK) {
		maildrop_close(*mdp);
		*mdp = NULL;
		if (journal_fd >= 0)
			close(journal_fd);
		return st;
	}
	(*mdp)->journal_fd = journal_fd;
	return MD_OK;
}

enum md_status
maildrop_open(struct maildrop **mdp, const char *path, int journal_fd,
    char *why, size_t whylen)
{
	struct maildrop	*md;
	enum md_status	 st;

	*mdp = NULL;
	say_why(why, whylen, "");
	journal_adopt(journal_fd);
	if ((st = md_open_locked(&md, path, journal_fd, why, whylen)) !=
	    MD_OK)
		return st;
	md->why = why;
	md->whylen = whylen;
	st = journal_recover(md);
	if (st == MD_OK && md->fd >= 0)
		st = index_spool(md);
	md->why = NULL;
	if (st != MD_OK) {
		maildrop_close(md);
		return st;
	}
	*mdp = md;
	return MD_OK;
}

enum md_status
maildrop_lock_for_child(const char *path)
{
	struct maildrop	*md;
	enum md_status	 st;

	maildrop_release_child_locks();
	st = md_open_locked(&md, path, -1, lent.why, sizeof(lent.why));
	lent.set = 1;
	lent.md = md;
	lent.status = st;
	return st;
}

void
maildrop_release_child_locks(void)
{
	if (lent.md != NULL)
		maildrop_close(lent.md);
	memset(&lent, 0, sizeof(lent));
}

size_t
maildrop_count(const struct maildrop *md)
{
	return md->nmsgs - md->first;
}

int
maildrop_is_deleted(const struct maildrop *md, size_t msg)
{
	return msg_at(md, msg)->deleted;
}

uint64_t
maildrop_size(const struct maildrop *md, size_t msg)
{
	return msg_at(md, msg)->octets;
}

void
maildrop_stat(const struct maildrop *md, size_t *count, uint64_t *octets)
{
	size_t	i;

	*count = 0;
	*octets = 0;
	for (i = md->first; i < md->nmsgs; i++) {
		if (md->msgs[i].deleted)
			continue;
		(*count)++;
		*octets += md->msgs[i].octets;
	}
}

const char *
maildrop_uidl(const struct maildrop *md, size_t msg, char *buf)
{
	static const char	 hex[] = "0123456789abcdef";
	const struct msg	*m = msg_at(md, msg);
	size_t			 i;

	for (i = 0; i < UIDL_HASH_LEN; i++) {
		buf[2 * i] = hex[m->hash[i] >> 4];
		buf[2 * i + 1] = hex[m->hash[i] & 0xf];
	}
	buf[2 * UIDL_HASH_LEN] = '\0';
	if (m->dup > 1)
		snprintf(buf + 2 * UIDL_HASH_LEN,
		    UIDL_BUFSIZE - 2 * UIDL_HASH_LEN, ".%u", m->dup);
	return buf;
}

void
maildrop_delete(struct maildrop *md, size_t msg)
{
	msg_at(md, msg)->deleted = 1;
}

void
maildrop_reset(struct maildrop *md)
{
	size_t	i;

	for (i = 0; i < md->nmsgs; i++)
		md->msgs[i].deleted = 0;
}

/*
 * Sending (RFC 1939 sections 3, 7 and 11).
 */

/*
 * Copy the bytes from p up to the next LF (or end) to o; returns how
 * many.  Lines average some 60 bytes, so a call per line costs: with
 * SSE2 (every amd64), 16 bytes a step in registers; a store may run
 * past the LF, into room that the caller has (2 bytes out per byte in).
 */
static size_t
copy_to_lf(const char *p, const char *end, char *o)
{
	const char	*start = p, *nl;
	size_t		 len;
#ifdef __SSE2__
	const __m128i	 lf = _mm_set1_epi8('\n');
	__m128i		 v;
	int		 m;

	for (; end - p >= 16; p += 16, o += 16) {
		v = _mm_loadu_si128((const __m128i *)(const void *)p);
		_mm_storeu_si128((__m128i *)(void *)o, v);
		if ((m = _mm_movemask_epi8(_mm_cmpeq_epi8(v, lf))) != 0)
			return (size_t)(p - start) + (size_t)__builtin_ctz(m);
	}
#endif
	nl = memchr(p, '\n', end - p);
	len = (nl != NULL ? nl : end) - p;
	memcpy(o, p, len);
	return (size_t)(p - start) + len;
}

#ifdef __SSE2__
static inline uint64_t
lf_mask64(const char *p)
{
	return byte_mask64(p, '\n');
}

/* 64 bytes from p to o, whatever of them the caller keeps. */
static inline void
copy64(char *o, const char *p)
{
	const __m128i	*v = (const __m128i *)(const void *)p;
	__m128i		*w = (__m128i *)(void *)o;
	__m128i		 a = _mm_loadu_si128(v), b = _mm_loadu_si128(v + 1);
	__m128i		 c = _mm_loadu_si128(v + 2), d = _mm_loadu_si128(v + 3);

	_mm_storeu_si128(w, a);
	_mm_storeu_si128(w + 1, b);
	_mm_storeu_si128(w + 2, c);
	_mm_storeu_si128(w + 3, d);
}

/*
 * The body of convert() for whole messages, 64 bytes a step: one mask
 * of the LFs, then one fixed-size copy per line, where a call per line
 * cost a loop of 16-byte steps and a mispredicted exit.  Stops with
 * fewer than 128 bytes left, so that every 64-byte load stays inside
 * [src, end); the stores run at most 64 bytes past the output, inside
 * the caller's 2n.  Returns the bytes written; *used: bytes consumed.
 * MASK and COPY: the 64-byte steps, in SSE2 or (see below) AVX2.
 */
static inline __attribute__((always_inline)) size_t
convert_blocks_with(struct sender *s, const char *src, size_t n, char *dst,
    size_t *used, uint64_t (*mask)(const char *),
    void (*copy)(char *, const char *))
{
	const char	*p = src, *end = src + n;
	char		*o = dst;
	uint64_t	 lf;
	unsigned	 i, last;

	for (; end - p >= 128; p += 64) {
		if (s->bol && p[0] == '.')
			*o++ = '.';
		lf = mask(p);
		for (last = 0; lf != 0; last = i + 1, lf &= lf - 1) {
			i = (unsigned)__builtin_ctzll(lf);
			copy(o, p + last);
			o += i - last;
			if (!(i > 0 ? p[i - 1] == '\r' : s->cr))
				*o++ = '\r';
			*o++ = '\n';
			if (i < 63 && p[i + 1] == '.')
				*o++ = '.';
		}
		copy(o, p + last);
		o += 64 - last;
		s->bol = p[63] == '\n';
		s->cr = p[63] == '\r';
	}
	*used = p - src;
	return o - dst;
}

static size_t
convert_blocks_sse2(struct sender *s, const char *src, size_t n, char *dst,
    size_t *used)
{
	return convert_blocks_with(s, src, n, dst, used, lf_mask64, copy64);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) static inline uint64_t
lf_mask64_avx2(const char *p)
{
	return byte_mask64_avx2(p, '\n');
}

__attribute__((target("avx2"))) static inline void
copy64_avx2(char *o, const char *p)
{
	const __m256i	*v = (const __m256i *)(const void *)p;
	__m256i		*w = (__m256i *)(void *)o;
	__m256i		 a = _mm256_loadu_si256(v), b = _mm256_loadu_si256(v + 1);

	_mm256_storeu_si256(w, a);
	_mm256_storeu_si256(w + 1, b);
}

__attribute__((target("avx2"))) static size_t
convert_blocks_avx2(struct sender *s, const char *src, size_t n, char *dst,
    size_t *used)
{
	return convert_blocks_with(s, src, n, dst, used, lf_mask64_avx2,
	    copy64_avx2);
}
#endif

/*
 * AVX2 where the CPU has it (asked once): 12 % less time than SSE2 to
 * send a 93 MB spool to /dev/null, best of 15 (AVX-512 gained 3 % more:
 * not worth a third copy).
 */
static size_t
convert_blocks(struct sender *s, const char *src, size_t n, char *dst,
    size_t *used)
{
#if defined(__x86_64__) && defined(__GNUC__)
	if (have_avx2())
		return convert_blocks_avx2(s, src, n, dst, used);
#endif
	return convert_blocks_sse2(s, src, n, dst, used);
}
#endif

/*
 * Convert n bytes of text at src into dst (room for 2n bytes): a LF
 * not preceded by CR becomes CRLF, a lone CR stays, a line starting
 * with "." gets one more.  Stops after s->left lines if s->left > 0.
 * Returns the bytes written; *used is set to the bytes consumed.
 */
static size_t
convert(struct sender *s, const char *src, size_t n, char *dst, size_t *used)
{
	const char	*p = src, *end = src + n;
	char		*o = dst;
	size_t		 len;

#ifdef __SSE2__
	if (s->left < 0) {
		o += convert_blocks(s, src, n, dst, &len);
		p += len;
	}
#endif
	while (p < end) {
		if (s->bol && *p == '.')
			*o++ = '.';
		s->bol = 0;
		len = copy_to_lf(p, end, o);
		o += len;
		if (len > 0)
			s->cr = p[len - 1] == '\r';
		p += len;
		if (p == end)
			break;
		if (!s->cr)
			*o++ = '\r';
		*o++ = '\n';
		p++;
		s->cr = 0;
		s->bol = 1;
		if (s->left > 0 && --s->left == 0)
			break;
	}
	*used = p - src;
	return o - dst;
}

/* Convert n bytes at p into the outbuf, SEND_PIECE bytes at a time. */
static int
send_block(struct sender *s, const char *p, size_t n)
{
	size_t	piece, used, done;
	char	*dst;

	for (done = 0; done < n && s->left != 0; done += used) {
		piece = MIN(n - done, SEND_PIECE);
		dst = outbuf_reserve(s->out, 2 * piece);
		if (dst == NULL || s->out->error)
			return -1;
		outbuf_commit(s->out, convert(s, p + done, piece, dst, &used));
	}
	return 0;
}

/*
 * The spool's bytes from off on (at least one, *avail in all), read
 * FILE_CHUNK at a time into md->buf, free once the index is built:
 * RETR of consecutive small messages then costs one read per chunk
 * instead of one per message.  The indexed bytes of the locked spool
 * do not change before the commit, which takes md->buf back.
 */
static const char *
read_ahead(struct maildrop *md, off_t off, size_t *avail)
{
	size_t	n;

	if (off < md->ahead_off ||
	    off - md->ahead_off >= (off_t)md->ahead_len) {
		md->ahead_len = 0;
		n = chunk_len(md->size - off);
		if (n == 0)
			errno = ENODATA;
		if (n == 0 || pread_full(md->fd, md->buf, n, off) == -1) {
			log_warn("maildrop read");
			return NULL;
		}
		md->ahead_off = off;
		md->ahead_len = n;
	}
	*avail = md->ahead_len - (size_t)(off - md->ahead_off);
	return md->buf + (off - md->ahead_off);
}

/* Send [from, to) of the spool, or its first s->left lines. */
static int
send_range(struct maildrop *md, struct sender *s, off_t from, off_t to)
{
	const char	*p;
	size_t		 n;

	for (; from < to && s->left != 0; from += n) {
		if ((p = read_ahead(md, from, &n)) == NULL)
			return -1;
		if ((off_t)n > to - from)
			n = to - from;
		if (send_block(s, p, n) == -1)
			return -1;
	}
	return 0;
}

int
maildrop_send(struct maildrop *md, size_t msg, long lines, struct outbuf *out)
{
	const struct msg	*m = msg_at(md, msg);
	off_t			 end = text_end(md, md->first + msg);
	struct sender		 s;
	char			*dst;

	memset(&s, 0, sizeof(s));
	s.out = out;
	s.bol = 1;
	s.left = -1;
	if (send_range(md, &s, msg_text(m), lines < 0 ? end :
	    msg_hdr_end(m)) == -1)
		return -1;
	if (lines > 0) {
		s.left = lines;
		if (send_range(md, &s, msg_hdr_end(m), end) == -1)
			return -1;
	}
	if (!s.bol) {
		/* The last line ends with CRLF even without a newline. */
		if ((dst = outbuf_reserve(out, 2)) == NULL || out->error)
			return -1;
		memcpy(dst, "\r\n", 2);
		outbuf_commit(out, 2);
	}
	return out->error ? -1 : 0;
}

void
maildrop_touch(struct maildrop *md)
{
	/*
	 * Our lock holds a live pid (ours or the monitor's), but programs
	 * that do not read it, or run on another NFS client, break a
	 * dot-lock whose mtime is old (liblockfile: 5 minutes).
	 */
	if (!md->dotlocked ||
	    elapsed_ms(&md->touched) < LOCK_TOUCH_INTERVAL * 1000LL)
		return;
	if (lockfile_touch(md->lockpath) == -1)
		log_warn("%s", md->lockpath);
	clock_gettime(MD_CLOCK, &md->touched);
}

/*
 * Commit (RFC 1939 section 6): remove the marked messages in place,
 * so that the inode, owner, group and mode stay, MDAs blocked on our
 * locks append to the right file, and no write access to the spool
 * directory is needed.  A message's bytes run from its From_ line to
 * the next From_ line (or EOF), its separator included.  Let S0 be the
 * size now (bytes after the index were appended by a writer that does
 * not lock: kept like any unmarked message), P the start of the first
 * marked message, N = S0 - the bytes of the marked messages.
 *
 *  0. Nothing marked: the file is not written.  fstat: the same inode,
 *     still linked, S0 >= the size indexed; else "maildrop changed".
 *  1. Only the last messages marked, nothing appended: ftruncate(P),
 *     fsync.  Atomic; no journal.
 *  2. Otherwise, with the undo journal (a root-owned file opened by the
 *     root parent, so the user can neither forge nor remove it):
 *     a. journal = header {magic, dev, ino, P, N, S0, XXH3 of [N, S0),
 *        N - P, XXH3 of the data, path, XXH3 of the header} in a 4096-byte
 *        block, then the spool's bytes [P, N); fsync.  On failure the
 *        journal is truncated, the spool untouched.
 *     b. Compact: each kept range after P is copied down to its new
 *        offset, forward, a chunk at a time (a chunk is read before it
 *        is written, and writes never pass the bytes read), then
 *        fsync.  Only [P, N) is written: [N, S0) stays as it was.
 *     c. ftruncate(N), fsync: the commit point.
 *     d. Truncate the journal, fsync: at maildrop_close(), after the
 *        client has its answer.
 *     A failure in b or in c's ftruncate writes the journal's bytes
 *     back to [P, N) and fsyncs (the file still has its S0 bytes); if
 *     that fails too, the journal stays valid for the next open.  If
 *     only the fsync after the truncation fails, the commit is done
 *     for every reader, and the journal stays for the next open to
 *     decide what reached the disk.
 *  Recovery at open (journal_apply()): after a crash in a the journal
 *  is torn (hash mismatch) and the spool untouched; in b or before the
 *  truncation of c, [N, S0) is intact and [P, N) is restored; after
 *  c the file is shorter than S0 (or has been truncated and appended
 *  to, so [N, S0) differs) and the commit is complete.
 *  Limit: between a crash in b and the next open, other mail readers
 *  see the half-moved file (a message torn or doubled where the copy
 *  stopped); no byte is lost, and the next session repairs it first.
 */

/*
 * Where the mail appended since the index starts.  A writer that did
 * not lock may have begun with the empty line that separates its message
 * from our last one; if that one goes, the empty line goes with it, or
 * the spool would start with it (not a mbox) or lengthen a kept message.
 */
/* Bytes of empty lines ("\n", "\r\n") that buf starts with. */
static size_t
blank_prefix(const char *buf, size_t n)
{
	size_t	i = 0;

	for (;;) {
		if (i < n && buf[i] == '\n')
			i++;
		else if (i + 1 < n && buf[i] == '\r' && buf[i + 1] == '\n')
			i += 2;
		else
			return i;
	}
}

static off_t
appended_start(const struct maildrop *md, off_t oldsize)
{
	char	buf[64];
	off_t	at = md->size;
	size_t	i, n;

	if (md->nmsgs == md->first || !md->msgs[md->nmsgs - 1].deleted)
		return at;
	while (at < oldsize) {
		n = MIN(sizeof(buf), (size_t)(oldsize - at));
		if (pread_full(md->fd, buf, n, at) == -1)
			return at;
		i = blank_prefix(buf, n);
		at += (off_t)i;
		/* Done at text; a CR last in a full read may start a CRLF. */
		if (i < n && !(i == n - 1 && n == sizeof(buf)))
			break;
	}
	return at;
}

/* Arithmetic of the commit; 0 if nothing is marked. */
static int
commit_plan(const struct maildrop *md, off_t oldsize, struct plan *pl)
{
	off_t	cut = 0;
	size_t	i;

	pl->first = md->nmsgs;
	for (i = md->first; i < md->nmsgs; i++) {
		if (!md->msgs[i].deleted)
			continue;
		if (pl->first == md->nmsgs)
			pl->first = i;
		cut += span_end(md, i) - md->msgs[i].from;
	}
	if (pl->first == md->nmsgs)
		return 0;
	pl->appended = appended_start(md, oldsize);
	cut += pl->appended - md->size;
	pl->start = md->msgs[pl->first].from;
	pl->oldsize = oldsize;
	pl->newsize = oldsize - cut;
	return 1;
}

/* 1 if a From_ line starts at off, 0 if not, -1 on a read error. */
static int
from_line_at(struct maildrop *md, off_t off)
{
	char	head[FROM_LEN];

	if (pread_full(md->fd, head, sizeof(head), off) == -1)
		return errno == ENODATA ? 0 : -1;
	return memcmp(head, FROM_LINE, FROM_LEN) == 0;
}

/*
 * Step 0, continued: the offsets of the index still hold.  Our locks
 * keep out all who follow the policy; a program that takes none and
 * changes a message's length would shift every later byte, and a
 * compaction by the old offsets would cut mail.  Where the commit cuts
 * (each start of a run of marked or of kept messages) a From_ line
 * must still start, and so must mail appended since the index if the
 * last message goes.  Other changes move with the bytes around them.
 */
static enum md_status
commit_offsets_hold(struct maildrop *md, const struct plan *pl)
{
	size_t	i;
	int	r = 1;

	for (i = pl->first; i < md->nmsgs && r == 1; i++)
		if (i == pl->first ||
		    md->msgs[i].deleted != md->msgs[i - 1].deleted)
			r = from_line_at(md, md->msgs[i].from);
	/* Mail after the last message moves with it, unless that goes. */
	if (r == 1 && md->msgs[md->nmsgs - 1].deleted &&
	    pl->appended < pl->oldsize)
		r = from_line_at(md, pl->appended);
	if (r == -1)
		return md_fail(md, MD_SYSTEMP, "read: %s", strerror(errno));
	if (r == 0)
		return md_fail(md, MD_SYSTEMP, "maildrop changed by a program "
		    "that took no lock; nothing removed");
	return MD_OK;
}

/* Whether everything from the first marked message on goes. */
static int
commit_tail_only(const struct maildrop *md, const struct plan *pl)
{
	size_t	i;

	if (pl->appended != pl->oldsize)	/* appended mail is kept */
		return 0;
	for (i = pl->first; i < md->nmsgs; i++)
		if (!md->msgs[i].deleted)
			return 0;
	return 1;
}

/* Step 0: the spool must be the file indexed, grown at most. */
static enum md_status
commit_recheck(struct maildrop *md, off_t *oldsize)
{
	struct stat	st;

	if (fstat(md->fd, &st) == -1)
		return md_fail(md, MD_SYSTEMP, "fstat: %s", strerror(errno));
	if (st.st_dev != md->dev || st.st_ino != md->ino ||
	    st.st_nlink == 0 || st.st_size < md->size)
		return md_fail(md, MD_SYSTEMP, "maildrop changed");
	*oldsize = st.st_size;
	return MD_OK;
}

/*
 * Nothing may have been appended since step 0: our locks keep MDAs out,
 * but one that broke the dot-lock of a dead monitor would lose its mail
 * to the truncation.  (Only the moment between this and ftruncate() is
 * left open to it.)
 */
static int
check_not_appended(const struct maildrop *md, const struct plan *pl)
{
	struct stat	st;

	if (fstat(md->fd, &st) == -1)
		return -1;
	if (st.st_size != pl->oldsize) {
		errno = EBUSY;
		return -1;
	}
	return 0;
}

/* Step 1. */
static enum md_status
commit_truncate(struct maildrop *md, const struct plan *pl)
{
	if (check_not_appended(md, pl) == -1)
		return md_fail(md, MD_SYSTEMP, "spool written by another "
		    "process: %s", strerror(errno));
	if (ftruncate(md->fd, pl->start) == -1)
		return md_fail(md, MD_SYSTEMP, "ftruncate: %s",
		    strerror(errno));
	if (fsync(md->fd) == -1)
		return md_fail(md, MD_SYSTEMP, "fsync: %s", strerror(errno));
	return MD_OK;
}

/* Move [src, end) down to *dst, a chunk at a time, forward. */
static int
copy_down(struct maildrop *md, off_t src, off_t end, off_t *dst)
{
	off_t	n;

	for (; src < end; src += n, *dst += n) {
		maildrop_touch(md);
		n = chunk_len(end - src);
		if (pread_full(md->fd, md->buf, n, src) == -1 ||
		    pwrite_full(md->fd, md->buf, n, *dst) == -1 ||
		    start_writeback(md->fd, *dst, n) == -1)
			return -1;
	}
	return 0;
}

/* Step 2b: adjacent kept messages move as one range. */
static int
compact(struct maildrop *md, const struct plan *pl)
{
	off_t	dst = pl->start, run = -1;
	size_t	i;

	for (i = pl->first; i < md->nmsgs; i++) {
		if (!md->msgs[i].deleted) {
			if (run == -1)
				run = md->msgs[i].from;
			continue;
		}
		if (run != -1 && copy_down(md, run, md->msgs[i].from,
		    &dst) == -1)
			return -1;
		run = -1;
	}
	/* The last run takes the bytes appended since the index along. */
	if (copy_down(md, run == -1 ? pl->appended : run, pl->oldsize,
	    &dst) == -1)
		return -1;
	if (dst != pl->newsize) {
		/* Cannot happen; but never truncate on a wrong sum. */
		errno = EINVAL;
		return -1;
	}
	return fsync(md->fd);
}

/* Step 2b or 2c failed: write the old bytes back. */
static enum md_status
commit_undo(struct maildrop *md, const struct jheader *jh, const char *step,
    int error)
{
	if (journal_restore(md, jh) == -1) {
		log_warn("rollback failed; the journal is kept for the next "
		    "session");
		return md_fail(md, MD_SYSTEMP, "%s: %s; rollback failed, "
		    "journal kept", step, strerror(error));
	}
	if (journal_invalidate(md) == -1)
		log_warn("journal invalidation after rollback");
	return md_fail(md, MD_SYSTEMP, "%s: %s; rolled back", step,
	    strerror(error));
}

/* Step 2. */
static enum md_status
commit_journaled(struct maildrop *md, const struct plan *pl)
{
	struct jheader	jh;
	enum md_status	st;
	int		e;

	if (md->journal_fd < 0)
		return md_fail(md, MD_SYSTEMP, "no journal");
	/* Held until maildrop_close() has cleared the journal. */
	if ((st = journal_lock(md)) != MD_OK || (st = journal_claim(md)) !=
	    MD_OK)
		return st;
	if (journal_write(md, pl, &jh) == -1) {
		e = errno;
		journal_invalidate(md);
		return md_fail(md, MD_SYSTEMP, "journal: %s", strerror(e));
	}
	if (compact(md, pl) == -1)
		return commit_undo(md, &jh, "compaction", errno);
	if (check_not_appended(md, pl) == -1)
		return commit_undo(md, &jh, "spool written by another process",
		    errno);
	if (ftruncate(md->fd, pl->newsize) == -1)
		return commit_undo(md, &jh, "ftruncate", errno);
	/* Truncated: done for every reader; the journal decides later. */
	if (fsync(md->fd) == -1)
		return md_fail(md, MD_SYSTEMP, "fsync: %s; journal kept",
		    strerror(errno));
	/* Step 2d, in maildrop_close(), once the client has its answer. */
	md->journal_done = 1;
	return MD_OK;
}

/* Steps 0 to 2, once the spool is known to have marked messages. */
static enum md_status
commit_marked(struct maildrop *md)
{
	struct plan	pl;
	enum md_status	st;
	off_t		oldsize = 0;

	if ((st = commit_recheck(md, &oldsize)) != MD_OK)
		return st;
	if (!commit_plan(md, oldsize, &pl))
		return MD_OK;
	if ((st = commit_offsets_hold(md, &pl)) != MD_OK)
		return st;
	if (commit_tail_only(md, &pl))
		return commit_truncate(md, &pl);
	return commit_journaled(md, &pl);
}

enum md_status
maildrop_commit(struct maildrop *md, char *why, size_t whylen)
{
	struct plan	pl;
	enum md_status	st = MD_OK;

	md->why = why;
	md->whylen = whylen;
	say_why(why, whylen, "");
	md->ahead_len = 0;
	/* Nothing marked: the file is not written at all. */
	if (md->fd >= 0 && commit_plan(md, md->size, &pl))
		st = commit_marked(md);
	md->why = NULL;
	return st;
}

void
maildrop_close(struct maildrop *md)
{
	if (md == NULL)
		return;
	/*
	 * Clearing a large journal takes a while (the file system frees
	 * its blocks), and the complete commit needs it no more: the next
	 * open would find the spool truncated and discard it.  Still under
	 * the locks, so no session can meet it.
	 */
	if (md->journal_done && journal_invalidate(md) == -1)
		log_warn("journal invalidation; the next open finishes it");
	/* Borrowed locks are the parent's to release, once we are gone. */
	if (md->flocked && !md->borrowed)
		flock(md->fd, LOCK_UN);
	if (md->dotlocked && !md->borrowed)
		dotlock_remove(md->lockpath);
	/*
	 * Closing drops the fcntl (OFD) lock once no process has the open
	 * file any more: a borrowed one stays with the lender's descriptor.
	 */
	if (md->fd >= 0)
		close(md->fd);
	if (md->journal_fd >= 0)
		close(md->journal_fd);
	free(md->lockpath);
	free(md->path);
	free(md->msgs);
	free(md->buf);
	free(md);
}
