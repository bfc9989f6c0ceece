/*
 * The protocol engine, byte for byte on the wire (RFC 1939, 2449, 3206,
 * 5034), over a socketpair with a maildrop on a temp file.
 */
#include <netinet/in.h>

#include <errno.h>
#include <signal.h>

#include "iobuf.h"
#include "testlib.h"

/* Two messages; the first has a line to dot-stuff. */
static const char MBOX[] =
    "From alice@example.org Sat Nov 21 10:00:00 2026\n"
    "Subject: one\n"
    "\n"
    "Hello\n"
    ".dot line\n"
    "\n"
    "From bob@example.org Sat Nov 21 10:01:00 2026\n"
    "Subject: two\n"
    "\n"
    "Second\n";

#define GREETING	"+OK POP3 server ready\r\n"
#define LOGIN		"USER alice\r\nPASS secret\r\n"
#define LOGGED_IN	GREETING "+OK\r\n" \
			"+OK maildrop has 2 messages (58 octets)\r\n"
#define BYE		"+OK POP3 server signing off (2 messages left)\r\n"
#define MSG1		"Subject: one\r\n\r\nHello\r\n..dot line\r\n.\r\n"
#define CAPA_REPLY	"+OK Capability list follows\r\nTOP\r\nUIDL\r\n" \
			"RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n" \
			"USER\r\nSASL PLAIN\r\n.\r\n"

static void
setup(void)
{
	fixture_setup(MBOX);
}

static void
teardown(void)
{
	fixture_teardown();
}

TestSuite(session, .init = setup, .fini = teardown, .timeout = 20);

static void
expect(const char *input, const char *output)
{
	char	*out = run_session(input);

	cr_assert_str_eq(out, output);
	free(out);
}

static void
expect_mbox_unchanged(void)
{
	char	*now = read_file(fx.mbox, NULL);

	cr_assert_str_eq(now, MBOX);
	free(now);
}

Test(session, greeting_and_quit)
{
	expect("QUIT\r\n", GREETING "+OK POP3 server signing off\r\n");
}

Test(session, capa_before_and_after_login)
{
	expect("CAPA\r\n" LOGIN "CAPA\r\nQUIT\r\n",
	    GREETING CAPA_REPLY "+OK\r\n"
	    "+OK maildrop has 2 messages (58 octets)\r\n" CAPA_REPLY BYE);
}

/* Refused cleartext logins are bad commands: a client repeating them
 * is cut off (and the log has one line, not one per try). */
Test(session, repeated_cleartext_logins_are_cut_off)
{
	struct run_opts	 o = { 0, 0, 1 };
	char		 in[512], want[2048], *p = in, *q = want, *out;
	int		 i;

	q += sprintf(q, GREETING);
	for (i = 0; i < 10; i++) {
		p += sprintf(p, i % 2 ? "USER alice\r\n" : "AUTH PLAIN\r\n");
		if (i < 9)
			q += sprintf(q, "-ERR [AUTH] Cleartext login refused "
			    "on this connection; use TLS\r\n");
	}
	(void)sprintf(p, "QUIT\r\n");
	(void)sprintf(q, "-ERR too many bad commands, closing\r\n");
	out = run_session_opts(in, strlen(in), &o, NULL);
	cr_assert_str_eq(out, want);
	free(out);
}

Test(session, capa_without_cleartext)
{
	struct run_opts	 o = { 0, 0, 1 };
	const char	*in = "CAPA\r\nUSER alice\r\nQUIT\r\n";
	char		*out = run_session_opts(in, strlen(in), &o, NULL);

	cr_assert_str_eq(out, GREETING "+OK Capability list follows\r\n"
	    "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
	    ".\r\n-ERR [AUTH] Cleartext login refused on this connection; "
	    "use TLS\r\n+OK POP3 server signing off\r\n");
	free(out);
}

Test(session, stat_list_uidl)
{
	char	*out = run_session(LOGIN "STAT\r\nLIST\r\nLIST 2\r\nQUIT\r\n");

	cr_assert_str_eq(out, LOGGED_IN "+OK 2 58\r\n"
	    "+OK 2 messages (58 octets)\r\n1 34\r\n2 24\r\n.\r\n"
	    "+OK 2 24\r\n" BYE);
	free(out);
}

Test(session, retr_dot_stuffs_and_counts_octets)
{
	expect(LOGIN "RETR 1\r\nQUIT\r\n",
	    LOGGED_IN "+OK 34 octets\r\n" MSG1 BYE);
}

Test(session, top)
{
	/* A count past any message (even past 2^63) is the whole message. */
	expect(LOGIN "TOP 1 0\r\nTOP 1 1\r\nTOP 1 99\r\n"
	    "TOP 1 99999999999999999999\r\nTOP 1\r\nQUIT\r\n",
	    LOGGED_IN
	    "+OK top of message follows\r\nSubject: one\r\n\r\n.\r\n"
	    "+OK top of message follows\r\nSubject: one\r\n\r\nHello\r\n.\r\n"
	    "+OK top of message follows\r\n" MSG1
	    "+OK top of message follows\r\n" MSG1
	    "-ERR syntax error\r\n" BYE);
}

Test(session, bad_message_numbers)
{
	expect(LOGIN "LIST 0\r\nLIST -1\r\nLIST +1\r\nLIST 1abc\r\n"
	    "LIST 99999999999999999999\r\nLIST 3\r\nLIST 1 2\r\nRETR\r\n"
	    "NOOP\r\nQUIT\r\n",
	    LOGGED_IN
	    "-ERR no such message\r\n-ERR invalid message number\r\n"
	    "-ERR invalid message number\r\n-ERR invalid message number\r\n"
	    "-ERR no such message\r\n-ERR no such message\r\n"
	    "-ERR syntax error\r\n-ERR syntax error\r\n+OK\r\n" BYE);
}

Test(session, top_bad_line_counts)
{
	expect(LOGIN "TOP 1 -1\r\nTOP 1 +1\r\nTOP 1 x\r\nTOP 0 1\r\nQUIT\r\n",
	    LOGGED_IN "-ERR invalid number of lines\r\n"
	    "-ERR invalid number of lines\r\n-ERR invalid number of lines\r\n"
	    "-ERR no such message\r\n" BYE);
}

Test(session, deleted_message_is_gone_for_every_command)
{
	expect(LOGIN "DELE 1\r\nRETR 1\r\nTOP 1 0\r\nLIST 1\r\nUIDL 1\r\n"
	    "DELE 1\r\nSTAT\r\nLIST\r\nRSET\r\nSTAT\r\n",
	    LOGGED_IN "+OK message 1 deleted\r\n"
	    "-ERR message 1 already deleted\r\n"
	    "-ERR message 1 already deleted\r\n"
	    "-ERR message 1 already deleted\r\n"
	    "-ERR message 1 already deleted\r\n"
	    "-ERR message 1 already deleted\r\n+OK 1 24\r\n"
	    "+OK 1 message (24 octets)\r\n2 24\r\n.\r\n"
	    "+OK maildrop has 2 messages (58 octets)\r\n+OK 2 58\r\n");
	expect_mbox_unchanged();
}

Test(session, eof_after_dele_deletes_nothing)
{
	expect(LOGIN "DELE 1\r\nDELE 2\r\n",
	    LOGGED_IN "+OK message 1 deleted\r\n+OK message 2 deleted\r\n");
	expect_mbox_unchanged();
}

Test(session, unterminated_quit_at_eof_is_not_a_command)
{
	expect(LOGIN "DELE 1\r\nQUIT",
	    LOGGED_IN "+OK message 1 deleted\r\n");
	expect_mbox_unchanged();
}

Test(session, rset_then_quit_deletes_nothing)
{
	expect(LOGIN "DELE 1\r\nRSET\r\nQUIT\r\n",
	    LOGGED_IN "+OK message 1 deleted\r\n"
	    "+OK maildrop has 2 messages (58 octets)\r\n" BYE);
	expect_mbox_unchanged();
}

Test(session, dele_then_quit_deletes)
{
	char	*now;

	expect(LOGIN "DELE 1\r\nQUIT\r\n", LOGGED_IN "+OK message 1 deleted\r\n"
	    "+OK POP3 server signing off (1 message left)\r\n");
	now = read_file(fx.mbox, NULL);
	cr_assert_str_eq(now, "From bob@example.org Sat Nov 21 10:01:00 2026\n"
	    "Subject: two\n\nSecond\n");
	free(now);
}

Test(session, quit_in_authorization_never_commits)
{
	expect("USER alice\r\nQUIT\r\n",
	    GREETING "+OK\r\n+OK POP3 server signing off\r\n");
	expect_mbox_unchanged();
}

Test(session, wrong_state_and_unknown_commands)
{
	expect("STAT\r\nNOOP\r\nRETR 1\r\nAPOP alice 0123\r\nXYZZY\r\n"
	    "PASS secret\r\n" LOGIN "USER alice\r\nPASS x\r\nAUTH PLAIN\r\n"
	    "NOOP\r\nQUIT\r\n",
	    GREETING "-ERR not logged in\r\n-ERR not logged in\r\n"
	    "-ERR not logged in\r\n-ERR unknown command\r\n"
	    "-ERR unknown command\r\n-ERR give USER first\r\n+OK\r\n"
	    "+OK maildrop has 2 messages (58 octets)\r\n"
	    "-ERR command not valid in this state\r\n"
	    "-ERR command not valid in this state\r\n"
	    "-ERR command not valid in this state\r\n+OK\r\n" BYE);
}

Test(session, keywords_are_case_insensitive_and_bare_lf_works)
{
	expect("user alice\npass secret\nStAt\nquit\n",
	    LOGGED_IN "+OK 2 58\r\n" BYE);
}

Test(session, pass_keeps_spaces)
{
	expect("USER alice\r\nPASS secret \r\nUSER alice\r\nPASS  secret\r\n"
	    "QUIT\r\n", GREETING "+OK\r\n-ERR [AUTH] Authentication failed\r\n"
	    "+OK\r\n-ERR [AUTH] Authentication failed\r\n"
	    "+OK POP3 server signing off\r\n");
}

/* Trailing spaces are forgiven (not PASS's: they are the password's). */
Test(session, extra_spaces_between_words_are_syntax_errors)
{
	expect(LOGIN "LIST  1\r\nTOP 1  0\r\n LIST\r\nLIST 1 \r\nSTAT  \r\n"
	    "QUIT \r\n",
	    LOGGED_IN "-ERR syntax error\r\n-ERR syntax error\r\n"
	    "-ERR unknown command\r\n+OK 1 34\r\n+OK 2 58\r\n" BYE);
}

Test(session, user_with_trailing_space)
{
	expect("USER alice \r\nPASS secret\r\nQUIT\r\n",
	    GREETING "+OK\r\n+OK maildrop has 2 messages (58 octets)\r\n"
	    BYE);
}

Test(session, line_of_255_octets_is_accepted_256_is_not)
{
	char	in[1024], pass[300];

	memset(pass, 'p', 250);
	pass[250] = '\0';	/* "PASS " + 250 = 255 octets */
	snprintf(in, sizeof(in), "USER alice\r\nPASS %s\r\nUSER alice\r\n"
	    "PASS %sq\r\nQUIT\r\n", pass, pass);
	expect(in, GREETING "+OK\r\n-ERR [AUTH] Authentication failed\r\n"
	    "+OK\r\n-ERR line too long\r\n+OK POP3 server signing off\r\n");
}

Test(session, megabyte_line_gets_one_error)
{
	size_t		 len = 1024 * 1024;
	char		*in = malloc(len + 16), *out;
	struct run_opts	 o = { 0, 0, 0 };

	memset(in, 'A', len);
	memcpy(in + len, "\r\nQUIT\r\n", 8);
	out = run_session_opts(in, len + 8, &o, NULL);
	cr_assert_str_eq(out, GREETING "-ERR line too long\r\n"
	    "+OK POP3 server signing off\r\n");
	free(in);
	free(out);
}

Test(session, control_bytes_are_refused)
{
	struct run_opts	 o = { 0, 0, 0 };
	static const char in[] = "NO\0OP\r\nNO\tOP\r\nNO\rOP\r\n\x7f\r\nQUIT\r\n";
	char		*out = run_session_opts(in, sizeof(in) - 1, &o, NULL);

	cr_assert_str_eq(out, GREETING
	    "-ERR control characters in command\r\n"
	    "-ERR control characters in command\r\n"
	    "-ERR control characters in command\r\n"
	    "-ERR control characters in command\r\n"
	    "+OK POP3 server signing off\r\n");
	free(out);
}

Test(session, eight_bit_bytes_are_unknown_commands)
{
	expect("\xc3\xa9t\xc3\xa9\r\nQUIT\r\n",
	    GREETING "-ERR unknown command\r\n+OK POP3 server signing off\r\n");
}

Test(session, two_hundred_pipelined_commands)
{
	char	in[200 * 6 + 64], want[200 * 5 + 256], *p = in, *q = want;
	int	i;

	p += sprintf(p, LOGIN);
	q += sprintf(q, LOGGED_IN);
	for (i = 0; i < 200; i++) {
		p += sprintf(p, "NOOP\r\n");
		q += sprintf(q, "+OK\r\n");
	}
	(void)sprintf(p, "QUIT\r\n");
	(void)sprintf(q, BYE);
	expect(in, want);
}

Test(session, command_split_over_many_writes)
{
	struct session_config	conf = { 600, 1 };
	struct session		s;
	static const char	in[] = "USER alice\r\nPASS secret\r\nSTAT\r\n"
				    "QUIT\r\n";
	char			out[4096];
	size_t			i, n = 0;
	ssize_t			r;
	int			sv[2];
	pid_t			pid;

	cr_assert(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	if ((pid = fork()) == 0) {
		close(sv[0]);
		session_init(&s, sv[1], sv[1], &conf);
		s.login = test_login;
		session_greet(&s);
		session_run(&s);
		session_finish(&s);
		_exit(0);
	}
	close(sv[1]);
	for (i = 0; i < sizeof(in) - 1; i++) {
		cr_assert(write(sv[0], in + i, 1) == 1);
		usleep(1000);
	}
	while ((r = read(sv[0], out + n, sizeof(out) - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	waitpid(pid, NULL, 0);
	cr_assert_str_eq(out, LOGGED_IN "+OK 2 58\r\n" BYE);
}

Test(session, ten_bad_commands_close_the_session)
{
	expect("X\r\nX\r\nX\r\nX\r\nX\r\nX\r\nX\r\nX\r\nX\r\nX\r\nQUIT\r\n",
	    GREETING "-ERR unknown command\r\n-ERR unknown command\r\n"
	    "-ERR unknown command\r\n-ERR unknown command\r\n"
	    "-ERR unknown command\r\n-ERR unknown command\r\n"
	    "-ERR unknown command\r\n-ERR unknown command\r\n"
	    "-ERR unknown command\r\n-ERR too many bad commands, closing\r\n");
}

/*
 * "No such message" is an answer, not a bad command: a client that
 * retries DELE over a stale listing keeps its session and its deletions.
 */
Test(session, no_such_message_is_not_a_bad_command)
{
	char	*now;

	expect(LOGIN "DELE 1\r\nDELE 1\r\nDELE 1\r\nDELE 1\r\nDELE 1\r\n"
	    "DELE 1\r\nDELE 1\r\nRETR 9\r\nRETR 9\r\nRETR 9\r\nRETR 9\r\n"
	    "QUIT\r\n",
	    LOGGED_IN "+OK message 1 deleted\r\n"
	    "-ERR message 1 already deleted\r\n"
	    "-ERR message 1 already deleted\r\n"
	    "-ERR message 1 already deleted\r\n"
	    "-ERR message 1 already deleted\r\n"
	    "-ERR message 1 already deleted\r\n"
	    "-ERR message 1 already deleted\r\n"
	    "-ERR no such message\r\n-ERR no such message\r\n"
	    "-ERR no such message\r\n-ERR no such message\r\n"
	    "+OK POP3 server signing off (1 message left)\r\n");
	now = read_file(fx.mbox, NULL);
	cr_assert_str_eq(now, "From bob@example.org Sat Nov 21 10:01:00 2026\n"
	    "Subject: two\n\nSecond\n");
	free(now);
}

Test(session, a_good_command_resets_the_bad_count)
{
	expect("X\r\nX\r\nX\r\nX\r\nX\r\nX\r\nX\r\nX\r\nX\r\nCAPA\r\nX\r\n"
	    "QUIT\r\n",
	    GREETING "-ERR unknown command\r\n-ERR unknown command\r\n"
	    "-ERR unknown command\r\n-ERR unknown command\r\n"
	    "-ERR unknown command\r\n-ERR unknown command\r\n"
	    "-ERR unknown command\r\n-ERR unknown command\r\n"
	    "-ERR unknown command\r\n" CAPA_REPLY "-ERR unknown command\r\n"
	    "+OK POP3 server signing off\r\n");
}

Test(session, three_failed_logins_close_the_session)
{
	expect("USER alice\r\nPASS a\r\nUSER bob\r\nPASS b\r\nUSER alice\r\n"
	    "PASS c\r\nQUIT\r\n",
	    GREETING "+OK\r\n-ERR [AUTH] Authentication failed\r\n"
	    "+OK\r\n-ERR [AUTH] Authentication failed\r\n"
	    "+OK\r\n-ERR [AUTH] Authentication failed; too many failures, "
	    "closing\r\n");
}

/* base64("\0alice\0secret") and variants. */
#define PLAIN_OK	"AGFsaWNlAHNlY3JldA=="
#define PLAIN_AUTHZ	"YWxpY2UAYWxpY2UAc2VjcmV0"	/* alice\0alice\0secret */
#define PLAIN_OTHER	"Ym9iAGFsaWNlAHNlY3JldA=="	/* bob\0alice\0secret */
#define PLAIN_BAD	"AGFsaWNlAHdyb25n"		/* \0alice\0wrong */

/*
 * Credentials that can never be valid (another user's authorization
 * identity, a password longer than PASS_MAX) fail like a wrong password:
 * the same answer, and counted, so they are no free tries.
 */
Test(session, hopeless_auth_plain_counts_as_a_failed_login)
{
	char	in[2048], *p = in;
	int	i;

	p += sprintf(p, "AUTH PLAIN " PLAIN_OTHER "\r\nAUTH PLAIN\r\n"
	    "AGFsaWNlAGFh");		/* \0alice\0aa, then 300 more a */
	for (i = 0; i < 100; i++)
		p += sprintf(p, "YWFh");
	(void)sprintf(p, "\r\nUSER alice\r\nPASS wrong\r\nQUIT\r\n");
	expect(in, GREETING "-ERR [AUTH] Authentication failed\r\n"
	    "+ \r\n-ERR [AUTH] Authentication failed\r\n"
	    "+OK\r\n-ERR [AUTH] Authentication failed; too many failures, "
	    "closing\r\n");
}

/* An authentication identity longer than USER_MAX: hopeless too. */
#define PLAIN_LONG_USER	"AUTH PLAIN AHV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1" \
			"dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1" \
			"dXV1dXV1dXV1dXV1dXV1dXUAc2VjcmV0\r\n"
				/* \0, 70 times u, \0secret */
Test(session, auth_plain_user_too_long_counts_as_a_failed_login)
{
	expect(PLAIN_LONG_USER PLAIN_LONG_USER PLAIN_LONG_USER "QUIT\r\n",
	    GREETING "-ERR [AUTH] Authentication failed\r\n"
	    "-ERR [AUTH] Authentication failed\r\n"
	    "-ERR [AUTH] Authentication failed; too many failures, "
	    "closing\r\n");
}

Test(session, auth_plain_initial_response)
{
	expect("AUTH PLAIN " PLAIN_OK "\r\nSTAT\r\nQUIT\r\n",
	    GREETING "+OK maildrop has 2 messages (58 octets)\r\n"
	    "+OK 2 58\r\n" BYE);
}

Test(session, auth_plain_continuation)
{
	expect("auth plain\r\n" PLAIN_AUTHZ "\r\nQUIT\r\n",
	    GREETING "+ \r\n+OK maildrop has 2 messages (58 octets)\r\n" BYE);
}

Test(session, auth_plain_cancel_empty_and_bad)
{
	expect("AUTH PLAIN\r\n*\r\nAUTH PLAIN =\r\nAUTH PLAIN\r\n=\r\n"
	    "AUTH PLAIN !!!!\r\nAUTH PLAIN " PLAIN_OTHER "\r\n"
	    "AUTH PLAIN " PLAIN_BAD "\r\nAUTH CRAM-MD5\r\nQUIT\r\n",
	    GREETING "+ \r\n-ERR authentication cancelled\r\n"
	    "-ERR malformed AUTH PLAIN response\r\n"
	    "+ \r\n-ERR malformed AUTH PLAIN response\r\n"
	    "-ERR invalid base64 in AUTH PLAIN\r\n"
	    "-ERR [AUTH] Authentication failed\r\n"
	    "-ERR [AUTH] Authentication failed\r\n"
	    "-ERR unsupported authentication mechanism\r\n"
	    "+OK POP3 server signing off\r\n");
}

/* RFC 4648 strictness: padding, alphabet, leftover bits, length. */
Test(session, auth_plain_rejects_sloppy_base64)
{
	expect("AUTH PLAIN AGFsaWNlAHNlY3JldA\r\n"	/* unpadded */
	    "AUTH PLAIN AGFsaWNlAHNlY3JldB==\r\n"	/* leftover bits */
	    "AUTH PLAIN AGFsaWNl=AHNlY3JldA=\r\n"	/* "=" inside */
	    "AUTH PLAIN AGFsaWNlAHNlY3Jld-==\r\n"	/* not base64url */
	    "AUTH PLAIN ====\r\n"
	    "AUTH PLAIN " PLAIN_OK "\r\nQUIT\r\n",
	    GREETING "-ERR invalid base64 in AUTH PLAIN\r\n"
	    "-ERR invalid base64 in AUTH PLAIN\r\n"
	    "-ERR invalid base64 in AUTH PLAIN\r\n"
	    "-ERR invalid base64 in AUTH PLAIN\r\n"
	    "-ERR invalid base64 in AUTH PLAIN\r\n"
	    "+OK maildrop has 2 messages (58 octets)\r\n" BYE);
}

Test(session, auth_without_mechanism_lists_them)
{
	expect("AUTH\r\nQUIT\r\n", GREETING "+OK\r\nPLAIN\r\n.\r\n"
	    "+OK POP3 server signing off\r\n");
}

Test(session, uidl_listing_is_unique_and_well_formed)
{
	char	*out = run_session(LOGIN "UIDL\r\nQUIT\r\n"), *p, u1[80], u2[80];
	size_t	 i;

	p = out + strlen(LOGGED_IN);
	cr_assert(strncmp(p, "+OK", 3) == 0);
	p = strchr(p, '\n') + 1;
	cr_assert(sscanf(p, "1 %79s\r\n", u1) == 1);
	p = strchr(p, '\n') + 1;
	cr_assert(sscanf(p, "2 %79s\r\n", u2) == 1);
	p = strchr(p, '\n') + 1;
	cr_assert(strncmp(p, ".\r\n" BYE, strlen(".\r\n" BYE)) == 0);
	cr_assert_str_neq(u1, u2);
	cr_assert(strlen(u1) >= 1 && strlen(u1) <= 70);
	for (i = 0; u1[i] != '\0'; i++)
		cr_assert(u1[i] >= 0x21 && u1[i] <= 0x7e);
	free(out);
}

Test(session, timeout_closes_without_reply_or_commit)
{
	struct run_opts	 o = { 1, 1, 0 };
	const char	*in = LOGIN "DELE 1\r\n";
	char		*out = run_session_opts(in, strlen(in), &o, NULL);

	cr_assert_str_eq(out, LOGGED_IN "+OK message 1 deleted\r\n");
	free(out);
	expect_mbox_unchanged();
}

Test(session, last_line_without_newline_still_ends_crlf_dot_crlf)
{
	static const char mbox[] = "From a@b Sat Nov 21 10:00:00 2026\n"
	    "Subject: x\n\nno newline";

	write_file(fx.mbox, mbox, sizeof(mbox) - 1);
	expect(LOGIN "LIST 1\r\nRETR 1\r\nQUIT\r\n", GREETING "+OK\r\n"
	    "+OK maildrop has 1 message (26 octets)\r\n+OK 1 26\r\n"
	    "+OK 26 octets\r\nSubject: x\r\n\r\nno newline\r\n.\r\n"
	    "+OK POP3 server signing off (1 message left)\r\n");
}

Test(session, empty_maildrop)
{
	write_file(fx.mbox, "", 0);
	expect(LOGIN "STAT\r\nLIST\r\nUIDL\r\nLIST 1\r\nQUIT\r\n",
	    GREETING "+OK\r\n+OK maildrop has 0 messages (0 octets)\r\n"
	    "+OK 0 0\r\n+OK 0 messages (0 octets)\r\n.\r\n"
	    "+OK unique-id listing follows\r\n.\r\n-ERR no such message\r\n"
	    "+OK POP3 server signing off (0 messages left)\r\n");
}

/*
 * A session on fd, its input already read (so no write happens before
 * the commands have run), against a client that has closed: the
 * situation of a client that pipelines and leaves.
 */
static void
run_preloaded(struct session *s, const char *input, size_t prefill)
{
	static const struct session_config	conf = { 600, 1 };
	static char	junk[OUTBUF_SIZE];
	int		sv[2];

	cr_assert(signal(SIGPIPE, SIG_IGN) != SIG_ERR);
	cr_assert(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	close(sv[0]);
	session_init(s, sv[1], sv[1], &conf);
	s->login = test_login;
	inbuf_preload(&s->in, input, strlen(input));
	outbuf_put(&s->out, junk, prefill);
	session_run(s);
}

/* Counted for the log only once written: buffered is not delivered. */
Test(session, downloads_of_a_client_gone_are_not_counted)
{
	struct session	s;

	run_preloaded(&s, LOGIN "RETR 1\r\nRETR 2\r\nTOP 1 9\r\n", 0);
	cr_assert_eq(s.end, END_EOF, "%s", session_end_name(s.end));
	cr_assert_eq(s.out.error, EPIPE);
	session_finish(&s);
	cr_assert_eq(s.retrieved + s.topped, 0, "retrieved %zu, top %zu",
	    s.retrieved, s.topped);
	expect_mbox_unchanged();
}

/*
 * The client is gone when QUIT's answer fills the buffer: the commit
 * is done, and the session still ends as QUIT (logged with its
 * deletions), not as a closed connection.
 */
Test(session, quit_whose_answer_cannot_be_written_stays_quit)
{
	static const char	before[] = "+OK\r\n+OK maildrop has 2 messages "
				    "(58 octets)\r\n+OK message 1 deleted\r\n";
	struct session		s;
	char			*now;

	/* 20 octets of room are left for QUIT's 46. */
	run_preloaded(&s, LOGIN "DELE 1\r\nQUIT\r\n",
	    OUTBUF_SIZE - (sizeof(before) - 1) - 20);
	cr_assert_eq(s.end, END_QUIT, "%s", session_end_name(s.end));
	cr_assert_eq(s.out.error, EPIPE);
	cr_assert_eq(s.deleted, 1);
	session_finish(&s);
	now = read_file(fx.mbox, NULL);
	cr_assert_str_eq(now, strstr(MBOX, "\nFrom bob") + 1);
	free(now);
}

/* Why a write failed, for the session's end: gone, or not reading. */
Test(session, outbuf_says_why_a_write_failed)
{
	struct outbuf	*out = calloc(1, sizeof(*out));
	int		 sv[2], i;

	cr_assert(signal(SIGPIPE, SIG_IGN) != SIG_ERR);
	cr_assert(out != NULL && socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	close(sv[0]);
	outbuf_init(out, sv[1], 100);
	outbuf_put(out, "+OK\r\n", 5);
	cr_assert_eq(outbuf_flush(out), -1);
	cr_assert_eq(out->error, EPIPE);
	cr_assert_eq(out->written, 0);
	close(sv[1]);
	cr_assert(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	cr_assert(fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0);
	outbuf_init(out, sv[1], 100);
	for (i = 0; i < 64 && !out->error; i++) {	/* > any socket buffer */
		outbuf_commit(out, OUTBUF_SIZE - out->len);
		outbuf_flush(out);
	}
	cr_assert_eq(out->error, ETIMEDOUT, "error %d after %d buffers",
	    out->error, i);
	cr_assert(out->written < out->sent);
	close(sv[0]);
	close(sv[1]);
	free(out);
}

/* A connection reset by the client is its closing, read as EOF. */
Test(session, reset_connection_reads_as_eof)
{
	struct sockaddr_in	sin;
	struct linger		lg = { 1, 0 };
	struct inbuf		in;
	socklen_t		len = sizeof(sin);
	char			line[64];
	int			ls, c, s;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert((ls = socket(AF_INET, SOCK_STREAM, 0)) != -1);
	cr_assert(bind(ls, (struct sockaddr *)&sin, sizeof(sin)) == 0);
	cr_assert(listen(ls, 1) == 0);
	cr_assert(getsockname(ls, (struct sockaddr *)&sin, &len) == 0);
	cr_assert((c = socket(AF_INET, SOCK_STREAM, 0)) != -1);
	cr_assert(connect(c, (struct sockaddr *)&sin, sizeof(sin)) == 0);
	cr_assert((s = accept(ls, NULL, NULL)) != -1);
	cr_assert(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0);
	close(c);			/* linger 0: an RST, not a FIN */
	inbuf_init(&in, s);
	cr_assert_eq(inbuf_getline(&in, line, sizeof(line) - 1, 1000),
	    LINE_EOF);
	close(s);
	close(ls);
}
