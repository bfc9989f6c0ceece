/*
 * PAM authentication, run by the root parent only, and the client's
 * address.  The credentials reach auth_login() from the unprivileged
 * child and are hostile until PAM says otherwise.
 */
#ifndef AUTH_H
#define AUTH_H

#include <stddef.h>

#include "params.h"

enum auth_result {
	AUTH_OK,
	AUTH_FAILED,		/* bad credentials, unknown user, refused */
	AUTH_EXPIRED,		/* PAM_NEW_AUTHTOK_REQD: password must change */
	AUTH_SYSERR		/* PAM itself failed */
};

struct auth;

/*
 * pam_start(service), PAM_RHOST = rhost (may be NULL), pam_authenticate
 * with PAM_DISALLOW_NULL_AUTHTOK, pam_acct_mgmt.  On AUTH_OK, *authp
 * holds the PAM handle and canon the canonical user name
 * (pam_get_item(PAM_USER)); otherwise *authp is NULL.  Never sleeps for
 * PAM's fail delay: the caller pads failures to a fixed time.
 */
enum auth_result auth_login(struct auth **authp, const char *service,
	    const char *user, const char *pass, const char *rhost,
	    char *canon, size_t canonlen);
/* pam_setcred(PAM_ESTABLISH_CRED) and pam_open_session.  0 or -1. */
int	auth_open_session(struct auth *);
/* pam_close_session and pam_setcred(PAM_DELETE_CRED) if opened; pam_end. */
void	auth_end(struct auth *);

/* Where the peer address came from, for the log. */
enum peer_source {
	PEER_SOCKET,		/* getpeername(0) */
	PEER_REMOTE_ADDR,	/* systemd Accept=yes */
	PEER_TCPREMOTEIP,	/* ucspi-tcp, GNU inetd */
	PEER_REMOTE_HOST,	/* stunnel exec mode */
	PEER_LOOPBACK,		/* a loopback socket, nothing better known */
	PEER_UNKNOWN
};

/*
 * The client's numeric address into buf ("unknown" if none): fd 0's
 * peer when it is an inet socket and not loopback, else REMOTE_ADDR,
 * TCPREMOTEIP, REMOTE_HOST, each validated as a numeric address.
 */
enum peer_source peer_lookup(int fd, char *buf, size_t len);
const char *peer_source_name(enum peer_source);
/* Whether addr (as peer_lookup() wrote it) is a loopback address. */
int	peer_is_loopback(const char *addr);

#endif /* AUTH_H */
