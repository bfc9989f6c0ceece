/*
 * One POP3 session (RFC 1939, 2449, 3206, 5034) over an input and an
 * output descriptor.  All state is in struct session, so that tests can
 * drive a session over a socketpair with a maildrop on a temp file.
 */
#ifndef SESSION_H
#define SESSION_H

#include <signal.h>
#include <stdint.h>
#include <time.h>

#include "iobuf.h"
#include "params.h"

struct maildrop;
struct session;

enum session_state {
	STATE_AUTHORIZATION,
	STATE_TRANSACTION,
	STATE_UPDATE
};

/* Why a session ended: decides the final log line and the exit status. */
enum session_end {
	END_NONE,		/* still running */
	END_QUIT,		/* QUIT; in TRANSACTION after a good commit */
	END_COMMIT_FAILED,	/* QUIT, but the commit failed */
	END_EOF,
	END_TIMEOUT,
	END_IOERR,
	END_SIGNAL,
	END_BAD_COMMANDS,
	END_AUTH_FAILURES,
	END_HANDOFF,		/* credentials handed to the root parent */
	END_INUSE,
	END_MAILDROP_ERROR
};

/* What a login hook reports (see struct session.login). */
enum login_verdict {
	LOGIN_STARTED,		/* hook ran session_start_transaction() */
	LOGIN_FAILED,		/* -ERR [AUTH] */
	LOGIN_EXPIRED,		/* -ERR [AUTH], password must be changed */
	LOGIN_SYSTEMP,		/* -ERR [SYS/TEMP] */
	LOGIN_HANDOFF		/* stop silently: another process goes on */
};

struct session_config {
	int	timeout;		/* inactivity timeout, seconds */
	int	cleartext_ok;		/* USER/PASS and PLAIN allowed */
};

struct session {
	const struct session_config *conf;
	enum session_state state;
	enum session_end end;
	/* The USER argument until login, then the canonical name. */
	char		user[USER_MAX + 1];
	/* The logged-in user made safe for logs and the process title. */
	char		user_vis[USER_MAX * 4 + 1];
	int		have_user;
	int		cleartext_logged; /* one log line per session */
	int		bad_commands;	/* consecutive */
	int		auth_failures;
	struct maildrop	*md;
	time_t		started;
	/* For the final log line; downloads once written whole. */
	size_t		retrieved, topped, deleted;
	uint64_t	retrieved_octets, topped_octets, deleted_octets;
	/* Downloads buffered up to out.sent == unsent_mark, not counted. */
	size_t		unsent_retr, unsent_top;
	uint64_t	unsent_retr_octets, unsent_top_octets, unsent_mark;
	/*
	 * Called with the credentials of USER/PASS or AUTH PLAIN (the
	 * password is wiped by the caller afterwards).  A NULL password
	 * stands for credentials that can never be valid (too long, or
	 * another user's authorization identity): the hook fails them like
	 * a wrong password, delay and count included, without PAM.
	 */
	enum login_verdict (*login)(struct session *, const char *user,
			    const char *pass);
	void		*login_ctx;
	/* Last: session_init() leaves their 132 KB of bytes untouched. */
	struct inbuf	in;
	struct outbuf	out;
};

/* Set by the signal handlers; the session ends without UPDATE. */
extern volatile sig_atomic_t session_signalled;

void	session_init(struct session *, int in_fd, int out_fd,
	    const struct session_config *);
/* The +OK greeting. */
void	session_greet(struct session *);
/*
 * Answer a refused login (FAILED, EXPIRED or SYSTEMP) and count it; the
 * session ends at MAX_AUTH_FAILURES.  The privsep parent's new child
 * starts with this.
 */
void	session_login_refused(struct session *, enum login_verdict);
/*
 * After a successful login as user: open the maildrop at path (journal
 * as for maildrop_open()) and answer the login command with +OK, or
 * with -ERR [IN-USE] / [SYS/...] and end the session.  0 or -1.
 */
int	session_start_transaction(struct session *, const char *user,
	    const char *path, int journal_fd);
/* Serve commands until the session ends; returns why. */
enum session_end session_run(struct session *);
/* Log the session's final line, flush, release the maildrop. */
void	session_finish(struct session *);
const char *session_end_name(enum session_end);

#endif /* SESSION_H */
