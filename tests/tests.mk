# Tests: criterion unit suites, PAM suites under pam_wrapper, and the
# integration scripts (root, real accounts, real front ends and clients).

TEST_LIBS=	$(LIBS) -lcriterion
TEST_BINS=	tests/test_session tests/test_maildrop tests/test_auth
TEST_CLEAN=	$(TEST_BINS)

tests/test_session: tests/test_session.c tests/testlib.h session.o maildrop.o iobuf.o log.o
	$(CC) $(ALL_CFLAGS) -I. $(ALL_LDFLAGS) -o $@ tests/test_session.c session.o maildrop.o iobuf.o log.o $(TEST_LIBS)

tests/test_maildrop: tests/test_maildrop.c maildrop.o iobuf.o log.o
	$(CC) $(ALL_CFLAGS) -I. $(ALL_LDFLAGS) -o $@ tests/test_maildrop.c maildrop.o iobuf.o log.o $(TEST_LIBS)

tests/test_auth: tests/test_auth.c auth.o log.o
	$(CC) $(ALL_CFLAGS) -I. $(ALL_LDFLAGS) -o $@ tests/test_auth.c auth.o log.o $(TEST_LIBS)

check: $(PROG) $(TEST_BINS)
	tests/test_session
	tests/test_maildrop
	tests/run_auth_tests.sh tests/test_auth
