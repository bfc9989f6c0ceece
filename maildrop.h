/*
 * The maildrop: a mbox spool file, locked for the whole session, indexed
 * in one pass, streamed as POP3 text, and rewritten in place on QUIT
 * through a crash-safe commit.  Runs with the user's privileges only.
 * Messages are numbered here from 0; session.c converts the wire's 1..n.
 */
#ifndef MAILDROP_H
#define MAILDROP_H

#include <stddef.h>
#include <stdint.h>

struct outbuf;
struct maildrop;

enum md_status {
	MD_OK,
	MD_INUSE,		/* locked by another session or an MDA */
	MD_SYSTEMP,		/* temporary failure (I/O, space, memory) */
	MD_SYSPERM		/* permanent: not a mbox, wrong owner, limit */
};

/* Longest UIDL plus NUL (RFC 1939: 1-70 characters). */
#define UIDL_BUFSIZE	72

/*
 * Open, lock, recover (from journal_fd, if it holds an unfinished
 * commit) and index the maildrop at path.  A missing file is an empty
 * maildrop.  journal_fd is a read-write descriptor of this maildrop's
 * commit journal, or -1; it is owned by the maildrop from now on.
 * On failure *mdp is NULL, nothing is left locked, and why (if not NULL)
 * holds a short reason for the log.
 */
enum md_status maildrop_open(struct maildrop **mdp, const char *path,
	    int journal_fd, char *why, size_t whylen);
/*
 * For pop3d -R: the path of the spool whose unfinished commit the
 * journal holds, into buf (len bytes).  -1 if it holds none, or no
 * path (written by an earlier version, or the path was too long).
 */
int	maildrop_journal_spool(int journal_fd, char *buf, size_t len);
/* Number of messages, deleted ones included (numbers never change). */
size_t	maildrop_count(const struct maildrop *);
int	maildrop_is_deleted(const struct maildrop *, size_t msg);
/* Octets as RETR sends them: CRLF line ends, before dot-stuffing. */
uint64_t maildrop_size(const struct maildrop *, size_t msg);
/* Count and octets of the messages not marked deleted. */
void	maildrop_stat(const struct maildrop *, size_t *count, uint64_t *octets);
/* The message's unique id into buf (UIDL_BUFSIZE bytes); returns buf. */
const char *maildrop_uidl(const struct maildrop *, size_t msg, char *buf);
void	maildrop_delete(struct maildrop *, size_t msg);
/* Unmark every message (RSET). */
void	maildrop_reset(struct maildrop *);
/*
 * Stream a message into out: every line CRLF-terminated and dot-stuffed,
 * the last line terminated even if the file lacks its newline; without
 * the final ".".  lines < 0: the whole message; else the headers, the
 * blank line and that many body lines (TOP).  Returns -1 on a read or
 * write error (the session must end: a multi-line reply cannot be taken
 * back).
 */
int	maildrop_send(struct maildrop *, size_t msg, long lines,
	    struct outbuf *out);
/*
 * For a root parent that forks the session (pop3d.c): open and lock
 * path as maildrop_open() does, no more, and lend the result to the
 * children forked from now on, whose maildrop_open() takes the spool
 * as it is (or fails as the locking did), whatever path it is given.
 * The locks belong to the open file (the fcntl one is an OFD lock) and
 * the dot-lock holds this process's pid; they are held until
 * maildrop_release_child_locks(), once the children are gone, or
 * while a child still has the file open.  Call both with the rights
 * the spool and its directory need.
 */
enum md_status maildrop_lock_for_child(const char *path);
void	maildrop_release_child_locks(void);
/*
 * liblockfile's lockfile_create() with our pid in the file, no retries,
 * and the file readable by all whatever the umask (systemd's UMask=0077):
 * MDAs, and the root monitor without CAP_DAC_OVERRIDE, read the pid in
 * it to tell a dead holder.
 */
int	dotlock_file_create(const char *lockpath);
/* Keep the dot-lock fresh; cheap enough to call after every command. */
void	maildrop_touch(struct maildrop *);
/* For the tests: 0 sends with SSE2 even where the CPU has AVX2; 1: AVX2
 * if the CPU has it (the default). */
void	maildrop_use_avx2(int);
/*
 * UPDATE (RFC 1939 section 6): remove the marked messages; every other
 * byte, and anything appended since the index was built, stays intact.
 * On failure the maildrop is as it was (or the commit is complete, or
 * will be completed or undone by the next open).
 */
enum md_status maildrop_commit(struct maildrop *, char *why, size_t whylen);
/*
 * Release the locks and free everything (no commit).  After a commit
 * that needed the journal, first clear it: the slow part of the commit
 * that the client need not wait for.
 */
void	maildrop_close(struct maildrop *);

#endif /* MAILDROP_H */
