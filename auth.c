/*
 * PAM authentication and the client's address.
 *
 * The PAM calls follow popa3d's auth_pam.c: a conversation that can
 * only answer with the user name and the password it was given, the
 * canonical name read back from PAM_USER, and nothing of the password
 * left behind in our own memory.
 */

#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <security/pam_appl.h>

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"

struct auth {
	pam_handle_t	*pamh;
	int		 cred;		/* PAM_ESTABLISH_CRED succeeded */
	int		 session;	/* pam_open_session succeeded */
};

/*
 * What the conversation may answer with.  It lives on auth_login()'s
 * stack and is wiped before auth_login() returns; libpam keeps only
 * the pointer, which is why the conversation is replaced before then.
 */
struct conv_data {
	const char	*user;
	const char	*pass;
};

static int	auth_conv(int, const struct pam_message **,
		    struct pam_response **, void *);
static void	conv_free(struct pam_response *, int);
static void	auth_nodelay(int, unsigned int, void *);
static int	creds_ok(const char *, const char *);
static int	auth_prepare(pam_handle_t *, const char *);
static enum auth_result auth_check(pam_handle_t *, const char *);
static enum auth_result auth_canon(pam_handle_t *, char *, size_t);
static int	canon_ok(const char *);
static int	addr_format(int, const void *, char *, size_t);
static int	sockaddr_format(const struct sockaddr_storage *, socklen_t,
		    char *, size_t);
static int	env_addr(const char *, char *, size_t);

/*
 * After auth_login() returns, modules may still talk (pam_setcred,
 * pam_open_session: pam_motd, pam_mail, pam_exec stdout) but have
 * nothing to be told: prompts fail, messages are dropped.
 */
static const struct pam_conv conv_after_login = { auth_conv, NULL };

static int
auth_conv(int n, const struct pam_message **msg, struct pam_response **resp,
    void *appdata)
{
	const struct conv_data *cd = appdata;
	struct pam_response *r;
	const char *answer;
	char safe[128];
	int i, ret = PAM_CONV_ERR;

	if (resp != NULL)
		*resp = NULL;
	if (n <= 0 || n > PAM_MAX_NUM_MSG)
		return PAM_CONV_ERR;
	if ((r = calloc(n, sizeof(*r))) == NULL)
		return PAM_BUF_ERR;

	for (i = 0; i < n; i++) {
		if (msg[i] == NULL)
			goto fail;
		switch (msg[i]->msg_style) {
		case PAM_PROMPT_ECHO_ON:
			/* "login:" from a module that did not get PAM_USER. */
			answer = cd != NULL ? cd->user : NULL;
			break;
		case PAM_PROMPT_ECHO_OFF:
			answer = cd != NULL ? cd->pass : NULL;
			break;
		case PAM_TEXT_INFO:
		case PAM_ERROR_MSG:
			/* There is no terminal to show it on; keep it for -d. */
			if (msg[i]->msg != NULL)
				log_debug("PAM: %s", log_safe(safe, sizeof(safe),
				    msg[i]->msg, strlen(msg[i]->msg)));
			continue;
		default:
			/* PAM_BINARY_PROMPT and the like: no idea, refuse. */
			goto fail;
		}
		/* Some modules (pam_matrix) pass no resp for messages. */
		if (answer == NULL || resp == NULL)
			goto fail;
		if ((r[i].resp = strdup(answer)) == NULL) {
			ret = PAM_BUF_ERR;
			goto fail;
		}
		r[i].resp_retcode = 0;
	}
	if (resp != NULL)
		*resp = r;
	else
		conv_free(r, n);
	return PAM_SUCCESS;

fail:
	conv_free(r, n);
	return ret;
}

/* Any reply may hold the password: wipe each before freeing. */
static void
conv_free(struct pam_response *r, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		if (r[i].resp != NULL) {
			explicit_bzero(r[i].resp, strlen(r[i].resp));
			free(r[i].resp);
		}
	}
	explicit_bzero(r, n * sizeof(*r));
	free(r);
}

/*
 * Installed as PAM_FAIL_DELAY so that libpam never sleeps: without it,
 * a module's pam_fail_delay() (pam_unix asks for 2 s) makes libpam
 * sleep a random 50-150 % of the longest request after a failure, a
 * spread that would drown the caller's fixed padding and make timing
 * noisy in both directions.  The caller answers every failure
 * AUTH_FAIL_DELAY_MS after the attempt began, whoever failed and why,
 * so we do not call pam_fail_delay() ourselves either: a minimum of
 * ours would only be overridden here.
 */
static void
auth_nodelay(int status, unsigned int usec, void *appdata)
{
	(void)status;
	(void)usec;
	(void)appdata;
}

/*
 * No name, no password or oversized ones never reach PAM: an empty
 * password is refused whatever the stack says (what
 * PAM_DISALLOW_NULL_AUTHTOK asks of the modules, too).
 */
static int
creds_ok(const char *user, const char *pass)
{
	return user != NULL && *user != '\0' &&
	    strnlen(user, USER_MAX + 1) <= USER_MAX &&
	    pass != NULL && *pass != '\0' &&
	    strnlen(pass, PASS_MAX + 1) <= PASS_MAX;
}

enum auth_result
auth_login(struct auth **authp, const char *service, const char *user,
    const char *pass, const char *rhost, char *canon, size_t canonlen)
{
	struct conv_data cd;
	struct pam_conv conv;
	struct auth *a = NULL;
	pam_handle_t *pamh = NULL;
	enum auth_result res;
	int rc;

	*authp = NULL;
	if (canon == NULL || canonlen == 0)
		return AUTH_SYSERR;
	canon[0] = '\0';
	if (service == NULL)
		return AUTH_SYSERR;
	if (!creds_ok(user, pass))
		return AUTH_FAILED;
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		log_warn("auth_login: calloc");
		return AUTH_SYSERR;
	}

	cd.user = user;
	cd.pass = pass;
	conv.conv = auth_conv;
	conv.appdata_ptr = &cd;
	/* libpam copies conv; it keeps only the pointer to cd. */
	if ((rc = pam_start(service, user, &conv, &pamh)) != PAM_SUCCESS) {
		log_warnx("pam_start(%s): %s", service,
		    pam_strerror(pamh, rc));
		explicit_bzero(&cd, sizeof(cd));
		free(a);
		return AUTH_SYSERR;
	}

	if (auth_prepare(pamh, rhost) == -1)
		res = AUTH_SYSERR;
	else
		res = auth_check(pamh, user);

	/* cd is about to go: no module may reach it from now on. */
	if ((rc = pam_set_item(pamh, PAM_CONV, &conv_after_login)) !=
	    PAM_SUCCESS) {
		log_warnx("pam_set_item(PAM_CONV): %s",
		    pam_strerror(pamh, rc));
		res = AUTH_SYSERR;
	}
	explicit_bzero(&cd, sizeof(cd));

	if (res == AUTH_OK)
		res = auth_canon(pamh, canon, canonlen);
	if (res != AUTH_OK) {
		/*
		 * libpam wipes PAM_AUTHTOK here.  After success it keeps
		 * it until auth_end(): an application may not clear it.
		 * The status only tells module cleanups that we failed.
		 */
		pam_end(pamh, res == AUTH_SYSERR ? PAM_SYSTEM_ERR :
		    PAM_AUTH_ERR);
		explicit_bzero(canon, canonlen);
		free(a);
		return res;
	}
	a->pamh = pamh;
	*authp = a;
	return AUTH_OK;
}

/* PAM_RHOST for pam_access & co, and no fail delay.  0 or -1. */
static int
auth_prepare(pam_handle_t *pamh, const char *rhost)
{
	union {
		void		(*fn)(int, unsigned int, void *);
		const void	*item;
	} delay;
	int rc;

	if (rhost != NULL &&
	    (rc = pam_set_item(pamh, PAM_RHOST, rhost)) != PAM_SUCCESS) {
		log_warnx("pam_set_item(PAM_RHOST): %s",
		    pam_strerror(pamh, rc));
		return -1;
	}
	/*
	 * Not setting it would leave libpam's randomised delay in place:
	 * fail closed.  The union spares us a function-to-object pointer
	 * cast; libpam reads it back the same way.
	 */
	delay.fn = auth_nodelay;
	if ((rc = pam_set_item(pamh, PAM_FAIL_DELAY, delay.item)) !=
	    PAM_SUCCESS) {
		log_warnx("pam_set_item(PAM_FAIL_DELAY): %s",
		    pam_strerror(pamh, rc));
		return -1;
	}
	return 0;
}

/*
 * The verdict.  PAM_SILENT: the client sees only -ERR [AUTH], whatever
 * a module would like to say.
 */
static enum auth_result
auth_check(pam_handle_t *pamh, const char *user)
{
	char safe[USER_MAX * 4 + 1];
	int rc;

	rc = pam_authenticate(pamh, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
	switch (rc) {
	case PAM_SUCCESS:
		break;
	case PAM_SYSTEM_ERR:
	case PAM_BUF_ERR:
	case PAM_ABORT:
		log_warnx("pam_authenticate: %s", pam_strerror(pamh, rc));
		return AUTH_SYSERR;
	default:
		/*
		 * Unknown user and bad password alike; the caller logs the
		 * failure, and telling them apart is the modules' business.
		 */
		log_debug("pam_authenticate: %s", pam_strerror(pamh, rc));
		return AUTH_FAILED;
	}

	/*
	 * The password was right, so naming the user here tells the log
	 * nothing it should not know.  Locked and expired accounts land
	 * in the default case (PAM_ACCT_EXPIRED, PAM_PERM_DENIED, ...).
	 */
	rc = pam_acct_mgmt(pamh, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
	switch (rc) {
	case PAM_SUCCESS:
		return AUTH_OK;
	case PAM_NEW_AUTHTOK_REQD:
		/* POP3 cannot change a password: refuse, with a reason. */
		log_info("pam_acct_mgmt: user %s: %s",
		    log_safe(safe, sizeof(safe), user, strlen(user)),
		    pam_strerror(pamh, rc));
		return AUTH_EXPIRED;
	case PAM_SYSTEM_ERR:
	case PAM_BUF_ERR:
	case PAM_ABORT:
		log_warnx("pam_acct_mgmt: user %s: %s",
		    log_safe(safe, sizeof(safe), user, strlen(user)),
		    pam_strerror(pamh, rc));
		return AUTH_SYSERR;
	default:
		log_info("pam_acct_mgmt: user %s: %s",
		    log_safe(safe, sizeof(safe), user, strlen(user)),
		    pam_strerror(pamh, rc));
		return AUTH_FAILED;
	}
}

/*
 * Modules may map the login name to another (case, aliases, realms):
 * the account we switch to and the maildrop we open are PAM_USER's.
 */
static enum auth_result
auth_canon(pam_handle_t *pamh, char *canon, size_t canonlen)
{
	const void *item = NULL;
	char safe[USER_MAX * 4 + 1];
	int rc;

	if ((rc = pam_get_item(pamh, PAM_USER, &item)) != PAM_SUCCESS) {
		log_warnx("pam_get_item(PAM_USER): %s",
		    pam_strerror(pamh, rc));
		return AUTH_SYSERR;
	}
	if (item == NULL || !canon_ok(item)) {
		log_warnx("PAM_USER after login is unusable: \"%s\"",
		    item == NULL ? "(null)" : log_safe(safe, sizeof(safe),
		    item, strnlen(item, USER_MAX + 1)));
		return AUTH_SYSERR;
	}
	if (strlcpy(canon, item, canonlen) >= canonlen) {
		log_warnx("PAM_USER after login is too long: \"%s\"",
		    log_safe(safe, sizeof(safe), item,
		    strnlen(item, USER_MAX + 1)));
		return AUTH_SYSERR;
	}
	return AUTH_OK;
}

/*
 * The canonical name goes into the maildrop path (DEFAULT_MAILDROP)
 * and to getpwnam().  No name service returns these, but a module
 * could: do not let it name "/var/mail/../x".
 */
static int
canon_ok(const char *name)
{
	const unsigned char *p;

	if (*name == '\0' || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0)
		return 0;
	for (p = (const unsigned char *)name; *p != '\0'; p++)
		if (*p == '/' || *p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

/*
 * Credentials before the session, as pam_setcred(3) asks (a session
 * module may need a Kerberos ticket in place).  PAM_SILENT: motd and
 * "last login" texts have nowhere to go.  Once only per handle.
 */
int
auth_open_session(struct auth *a)
{
	int rc;

	if (a == NULL || a->cred || a->session)
		return -1;
	if ((rc = pam_setcred(a->pamh, PAM_ESTABLISH_CRED | PAM_SILENT)) !=
	    PAM_SUCCESS) {
		log_warnx("pam_setcred: %s", pam_strerror(a->pamh, rc));
		return -1;
	}
	a->cred = 1;
	if ((rc = pam_open_session(a->pamh, PAM_SILENT)) != PAM_SUCCESS) {
		log_warnx("pam_open_session: %s", pam_strerror(a->pamh, rc));
		return -1;
	}
	a->session = 1;
	return 0;
}

/* Undo only what was done, in the reverse order. */
void
auth_end(struct auth *a)
{
	int rc, status = PAM_SUCCESS;

	if (a == NULL)
		return;
	if (a->session &&
	    (rc = pam_close_session(a->pamh, PAM_SILENT)) != PAM_SUCCESS) {
		log_warnx("pam_close_session: %s", pam_strerror(a->pamh, rc));
		status = rc;
	}
	if (a->cred &&
	    (rc = pam_setcred(a->pamh, PAM_DELETE_CRED | PAM_SILENT)) !=
	    PAM_SUCCESS) {
		log_warnx("pam_setcred(PAM_DELETE_CRED): %s",
		    pam_strerror(a->pamh, rc));
		status = rc;
	}
	pam_end(a->pamh, status);
	explicit_bzero(a, sizeof(*a));
	free(a);
}

/*
 * The peer's address.  A non-loopback inet socket on fd says the
 * truth and nothing else is consulted: an environment variable is
 * trusted only where the socket cannot tell (stunnel's exec mode
 * hands us a socketpair; a local proxy is loopback).
 */
enum peer_source
peer_lookup(int fd, char *buf, size_t len)
{
	static const struct {
		const char		*name;
		enum peer_source	 source;
	} envs[] = {
		{ "REMOTE_ADDR",	PEER_REMOTE_ADDR },	/* systemd */
		{ "TCPREMOTEIP",	PEER_TCPREMOTEIP },	/* ucspi-tcp */
		{ "REMOTE_HOST",	PEER_REMOTE_HOST }	/* stunnel */
	};
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	char peer[INET6_ADDRSTRLEN], addr[INET6_ADDRSTRLEN];
	enum peer_source source = PEER_UNKNOWN;
	size_t i;
	int loopback = 0;

	/* Pipes, files, unconnected and AF_UNIX sockets fall through. */
	memset(&ss, 0, sizeof(ss));
	if (getpeername(fd, (struct sockaddr *)&ss, &sslen) == 0 &&
	    sockaddr_format(&ss, sslen, peer, sizeof(peer)) == 0) {
		if (!peer_is_loopback(peer)) {
			source = PEER_SOCKET;
			strlcpy(addr, peer, sizeof(addr));
		} else
			loopback = 1;
	}
	for (i = 0; source == PEER_UNKNOWN && i < sizeof(envs) /
	    sizeof(envs[0]); i++)
		if (env_addr(envs[i].name, addr, sizeof(addr)) == 0)
			source = envs[i].source;
	if (source == PEER_UNKNOWN && loopback) {
		source = PEER_LOOPBACK;
		strlcpy(addr, peer, sizeof(addr));
	}

	/* A truncated address would be a wrong one. */
	if (source == PEER_UNKNOWN || strlcpy(buf, addr, len) >= len) {
		if (len > 0)
			strlcpy(buf, "unknown", len);
		return PEER_UNKNOWN;
	}
	return source;
}

/*
 * getenv(name) as a canonical numeric address, or -1: hostnames,
 * ports, scope ids ("fe80::1%eth0") and anything over-long are not
 * addresses, and a value that is not one is worth a log line.
 */
static int
env_addr(const char *name, char *buf, size_t len)
{
	struct in6_addr in6;
	struct in_addr in4;
	const char *val;
	char safe[INET6_ADDRSTRLEN * 4 + 1];
	size_t vlen;

	if ((val = getenv(name)) == NULL || *val == '\0')
		return -1;
	vlen = strnlen(val, INET6_ADDRSTRLEN);
	if (vlen < INET6_ADDRSTRLEN) {
		if (inet_pton(AF_INET, val, &in4) == 1)
			return addr_format(AF_INET, &in4, buf, len);
		if (inet_pton(AF_INET6, val, &in6) == 1)
			return addr_format(AF_INET6, &in6, buf, len);
	}
	log_warnx("ignoring %s, not a numeric address: \"%s\"%s", name,
	    log_safe(safe, sizeof(safe), val, vlen),
	    vlen < INET6_ADDRSTRLEN ? "" : "...");
	return -1;
}

static int
sockaddr_format(const struct sockaddr_storage *ss, socklen_t sslen,
    char *buf, size_t len)
{
	const struct sockaddr_in *sin;
	const struct sockaddr_in6 *sin6;

	switch (ss->ss_family) {
	case AF_INET:
		if (sslen < sizeof(*sin))
			return -1;
		sin = (const struct sockaddr_in *)ss;
		return addr_format(AF_INET, &sin->sin_addr, buf, len);
	case AF_INET6:
		if (sslen < sizeof(*sin6))
			return -1;
		sin6 = (const struct sockaddr_in6 *)ss;
		return addr_format(AF_INET6, &sin6->sin6_addr, buf, len);
	default:
		return -1;
	}
}

/*
 * One spelling per address, whatever the source: a v4-mapped v6
 * address (a dual-stack listener) is written as plain v4, so that the
 * log, PAM_RHOST and peer_is_loopback() all see "192.0.2.1".
 */
static int
addr_format(int af, const void *a, char *buf, size_t len)
{
	const struct in6_addr *in6 = a;
	struct in_addr in4;

	if (af == AF_INET6 && IN6_IS_ADDR_V4MAPPED(in6)) {
		memcpy(&in4, &in6->s6_addr[12], sizeof(in4));
		af = AF_INET;
		a = &in4;
	}
	/* len is the size of a local INET6_ADDRSTRLEN array. */
	if (inet_ntop(af, a, buf, (socklen_t)len) == NULL)
		return -1;
	return 0;
}

const char *
peer_source_name(enum peer_source source)
{
	switch (source) {
	case PEER_SOCKET:
		return "socket";
	case PEER_REMOTE_ADDR:
		return "REMOTE_ADDR";
	case PEER_TCPREMOTEIP:
		return "TCPREMOTEIP";
	case PEER_REMOTE_HOST:
		return "REMOTE_HOST";
	case PEER_LOOPBACK:
		return "loopback";
	case PEER_UNKNOWN:
		break;
	}
	return "unknown";
}

int
peer_is_loopback(const char *addr)
{
	struct in6_addr in6;
	struct in_addr in4;

	if (addr == NULL)
		return 0;
	if (inet_pton(AF_INET, addr, &in4) == 1)
		return (ntohl(in4.s_addr) >> 24) == IN_LOOPBACKNET;
	if (inet_pton(AF_INET6, addr, &in6) == 1) {
		if (IN6_IS_ADDR_LOOPBACK(&in6))
			return 1;
		/* ::ffff:127.0.0.1, should anyone pass that spelling. */
		return IN6_IS_ADDR_V4MAPPED(&in6) && in6.s6_addr[12] ==
		    IN_LOOPBACKNET;
	}
	return 0;
}
