/*
 * pop3d limits and defaults, each with its reason.  Everything an
 * administrator may want to change at run time is an option (pop3d.8);
 * the rest is fixed here so that one file shows every bound on
 * untrusted input.
 */
#ifndef PARAMS_H
#define PARAMS_H

#define POP3D_VERSION		"0.1"

/* PAM service name (-p). */
#define DEFAULT_PAM_SERVICE	"pop3"

/*
 * Maildrop path template (-m): %u is the user name, %h the home
 * directory, %% a percent sign.
 */
#define DEFAULT_MAILDROP	"/var/mail/%u"

/* Unprivileged user for the pre-authentication child (-u). */
#define DEFAULT_PRIVSEP_USER	"pop3d"
/* Used, and logged, when DEFAULT_PRIVSEP_USER does not exist. */
#define FALLBACK_PRIVSEP_USER	"nobody"

/* Empty directory the pre-authentication child is chrooted to. */
#ifndef CHROOT_DIR
#define CHROOT_DIR		"/var/lib/pop3d/empty"
#endif

/*
 * Root-owned directory for the commit journals (one file per user),
 * opened by the root parent and handed to the session as a descriptor,
 * so that a user can neither forge nor remove a journal.
 */
#ifndef JOURNAL_DIR
#define JOURNAL_DIR		"/var/lib/pop3d/journal"
#endif

/*
 * Inactivity timeout (-t).  RFC 1939 section 3: at least 10 minutes,
 * in every state: a mail client may connect, then ask its user for the
 * password.  The front end's instance limit bounds idle connections.
 */
#define DEFAULT_TIMEOUT		600
#define MAX_TIMEOUT		86400

/*
 * A command line may hold 255 octets before its CRLF (RFC 2449 section
 * 4 asks for 255 including CRLF; we are two octets more lenient).
 * Longer lines are discarded to their end and answered with one -ERR.
 */
#define CMD_LINE_MAX		255
/*
 * AUTH PLAIN continuation lines carry base64 of
 * "authzid NUL authcid NUL password" (RFC 4616): room for two user
 * names and a password, encoded, and then some.
 */
#define AUTH_LINE_MAX		1024
/* RFC 1939 section 3: an argument is up to 40 characters. */
#define ARG_MAX_LEN		40
/* Longest user name and password we pass to PAM. */
#define USER_MAX		64
#define PASS_MAX		256

/* Client input buffer: a few pipelined commands at a time. */
#define INBUF_SIZE		4096
/*
 * Reply buffer: large, so that a listing or a message chunk leaves in
 * few writes, and a status line goes out with the start of its body.
 */
#define OUTBUF_SIZE		(128 * 1024)
/* File read size when scanning and streaming a maildrop. */
#define FILE_CHUNK		(256 * 1024)

/* Abuse limits (issue: session engine). */
#define MAX_BAD_COMMANDS	10
#define MAX_AUTH_FAILURES	3
/*
 * Every failed login is answered this long after the attempt began,
 * whatever PAM did, so that the answer time does not tell an unknown
 * user from a wrong password (RFC 3206 section 4, RFC 1939 section 13).
 */
#define AUTH_FAIL_DELAY_MS	2000

/* Maildrop limits; a refusal is logged with the limit's name. */
#define MAX_MESSAGES		2000000
#define MAX_MAILDROP_BYTES	(64LL * 1024 * 1024 * 1024)

/*
 * Locking: how long to wait for another holder before answering
 * -ERR [IN-USE], and how often the dot-lock is touched so that no
 * MDA breaks it as stale (liblockfile treats 5 minutes as stale).
 */
#define LOCK_WAIT_MS		2000
#define LOCK_RETRY_MS		100
#define LOCK_TOUCH_INTERVAL	60

#endif /* PARAMS_H */
