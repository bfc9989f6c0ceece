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

# The unit and PAM suites, then (as root) the integration suite, built
# with AddressSanitizer and UBSan; any report fails.  libcrypt is linked
# up front: ASan's crypt interceptor is bound at startup, and pam_unix
# would otherwise load libcrypt later and call through a null pointer.
SAN_DIR=	build/san
SAN_REPORTS=	/var/tmp/pop3d-sanitizer
SAN_LDFLAGS=	-fsanitize=address,undefined \
		-Wl,--push-state,--no-as-needed -lcrypt -Wl,--pop-state

$(SAN_DIR)/sanitizer_options.o: tests/sanitizer_options.c
	@mkdir -p $(SAN_DIR)
	$(CC) -c -o $@ tests/sanitizer_options.c

check-sanitize:
	$(MAKE) O=$(SAN_DIR) CC=clang CFLAGS="$(SAN_FLAGS)" \
	    LDFLAGS="$(SAN_LDFLAGS)" \
	    EXTRA_OBJS=$(SAN_DIR)/sanitizer_options.o check-unit
	@if [ "$$(id -u)" -eq 0 ]; then \
	    rm -rf $(SAN_REPORTS) && mkdir -m 1777 $(SAN_REPORTS) && \
	    POP3D=$(abspath $(SAN_DIR)/$(PROG)) tests/integration/run && \
	    if ls $(SAN_REPORTS)/* >/dev/null 2>&1; then \
	        cat $(SAN_REPORTS)/*; echo "sanitizer reports above"; \
	        exit 1; fi; \
	else echo "not root: integration suite under sanitizers skipped"; fi

# Root-only suites: real accounts, PAM, locking, fault injection, front
# ends and clients.  POP3D names the binary under test.
check-system: $(O)/$(PROG)
	POP3D=$(abspath $(O)/$(PROG)) tests/system/run

check-integration: $(O)/$(PROG)
	POP3D=$(abspath $(O)/$(PROG)) tests/integration/run

# Cheap first, root-only and slow last.  The valgrind suite keeps one
# core busy and the static checks and fuzzers need one core, no root and
# nothing the root suites touch: on CI's two cores they run side by side
# (about two minutes saved), the quiet ones' output printed after.
CHECK_QUIET_LOG=	build/check-analyze-fuzz.log

check: check-unit check-sanitize check-system check-integration \
	check-hostile check-valgrind-beside-analyze-fuzz

check-valgrind-beside-analyze-fuzz:
	@mkdir -p build; \
	$(MAKE) --no-print-directory check-analyze check-fuzz \
	    >$(CHECK_QUIET_LOG) 2>&1 & quiet=$$!; \
	rc=0; $(MAKE) --no-print-directory check-valgrind || rc=1; \
	wait $$quiet || rc=1; \
	echo "== check-analyze check-fuzz (ran beside check-valgrind):"; \
	cat $(CHECK_QUIET_LOG); \
	exit $$rc

.PHONY: check-unit check-sanitize check-system check-integration \
	check-valgrind-beside-analyze-fuzz
include tests/assure.mk
