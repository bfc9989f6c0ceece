# Tests.  `make check` runs everything the README promises: the criterion
# unit suites, the PAM suite under pam_wrapper, the same suites again built
# with ASan + UBSan, the root-only system and integration suites (real
# accounts, front ends and clients), fuzzing, static analysis, hostile
# clients and valgrind (tests/assure.mk).

# libbsd-ctor: setproctitle works without argv from main().
CTOR_LIBS!=	$(PKG_CONFIG) --libs libbsd-ctor
TEST_LIBS=	$(LIBS) $(CTOR_LIBS) -lcriterion
UNIT_TESTS=	$(O)/tests/test_session $(O)/tests/test_maildrop
TEST_CLEAN=	tests/test_session tests/test_maildrop tests/test_auth
SAN_FLAGS=	-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
		-fno-sanitize-recover=all

$(O)/tests/test_session: tests/test_session.c tests/testlib.h $(O)/session.o $(O)/maildrop.o $(O)/iobuf.o $(O)/log.o
	@mkdir -p $(O)/tests
	$(CC) $(ALL_CFLAGS) -I. $(ALL_LDFLAGS) -o $@ tests/test_session.c $(O)/session.o $(O)/maildrop.o $(O)/iobuf.o $(O)/log.o $(TEST_LIBS)

$(O)/tests/test_maildrop: tests/test_maildrop.c $(O)/maildrop.o $(O)/iobuf.o $(O)/log.o
	@mkdir -p $(O)/tests
	$(CC) $(ALL_CFLAGS) -I. $(ALL_LDFLAGS) -o $@ tests/test_maildrop.c $(O)/maildrop.o $(O)/iobuf.o $(O)/log.o $(TEST_LIBS)

$(O)/tests/test_auth: tests/test_auth.c $(O)/auth.o $(O)/log.o
	@mkdir -p $(O)/tests
	$(CC) $(ALL_CFLAGS) -I. $(ALL_LDFLAGS) -o $@ tests/test_auth.c $(O)/auth.o $(O)/log.o $(TEST_LIBS)

# Unit and PAM suites of this build.
check-unit: $(O)/$(PROG) $(UNIT_TESTS) $(O)/tests/test_auth
	$(O)/tests/test_session
	$(O)/tests/test_maildrop
	tests/run_auth_tests.sh $(O)/tests/test_auth

# The same suites built with AddressSanitizer and UBSan; any report fails.
check-sanitize:
	$(MAKE) O=build/san CC=clang CFLAGS="$(SAN_FLAGS)" \
	    LDFLAGS="-fsanitize=address,undefined" check-unit

# Root-only suites: real accounts, PAM, locking, fault injection, front
# ends and clients.  POP3D names the binary under test.
check-system: $(O)/$(PROG)
	POP3D=$(abspath $(O)/$(PROG)) tests/system/run

check-integration: $(O)/$(PROG)
	POP3D=$(abspath $(O)/$(PROG)) tests/integration/run

# Cheap first, root-only and slow last.
check: check-unit check-sanitize check-analyze check-fuzz check-system \
	check-integration check-hostile check-valgrind

.PHONY: check-unit check-sanitize check-system check-integration
include tests/assure.mk
