# Assurance (issue 6), included from tests/tests.mk: fuzzing, static
# analysis, hostile clients, valgrind.  Tools: tests/fuzz/packages,
# tests/hostile/packages.
#
#   make fuzz            each libFuzzer target for FUZZ_SECONDS (60)
#   make check-fuzz      CI: replay seeds and regressions, fuzz each 20 s
#   make check-analyze   cppcheck, clang-tidy, mandoc -Tlint, shellcheck
#   make check-hostile   root: hostile clients against the real binary
#   make check-valgrind  root: one real session under valgrind memcheck

FUZZ_SECONDS?=	60
FUZZ_CI_SECONDS?= 20
FUZZ_CC?=	clang
FUZZ_DIR=	build/fuzz
FUZZ_SAN=	-fsanitize=address,undefined -fno-sanitize-recover=all
# FORTIFY's checked copies would hide accesses from ASan.
FUZZ_CFLAGS=	-O1 -g -fno-omit-frame-pointer -U_FORTIFY_SOURCE \
		-fsanitize=fuzzer-no-link $(FUZZ_SAN)
FUZZ_OBJS=	session.o maildrop.o iobuf.o log.o
# mbox_fuzz links a build with small buffers (tests/fuzz/params_small.h).
FUZZ_SMALL_H=	tests/fuzz/params_small.h
FUZZ_STD_OBJS=	$(FUZZ_OBJS:%=$(FUZZ_DIR)/std/%)
FUZZ_SMALL_OBJS= $(FUZZ_OBJS:%=$(FUZZ_DIR)/small/%)
FUZZ_TARGETS=	$(FUZZ_DIR)/session_fuzz $(FUZZ_DIR)/mbox_fuzz
FUZZ_HARNESS_CFLAGS= -std=c11 -D_GNU_SOURCE $(BSD_CFLAGS) $(WARNINGS) \
		-I. $(FUZZ_CFLAGS) -fsanitize=fuzzer

$(FUZZ_SMALL_OBJS): $(FUZZ_SMALL_H)

$(FUZZ_DIR)/session_fuzz: tests/fuzz/session_fuzz.c tests/fuzz/fuzzlib.h \
    $(SRCS) $(HDRS)
	$(MAKE) O=$(FUZZ_DIR)/std CC=$(FUZZ_CC) CFLAGS="$(FUZZ_CFLAGS)" \
	    $(FUZZ_STD_OBJS)
	$(FUZZ_CC) $(FUZZ_HARNESS_CFLAGS) -o $@ tests/fuzz/session_fuzz.c \
	    $(FUZZ_STD_OBJS) $(LIBS) $(CTOR_LIBS)

$(FUZZ_DIR)/mbox_fuzz: tests/fuzz/mbox_fuzz.c tests/fuzz/fuzzlib.h \
    $(FUZZ_SMALL_H) $(SRCS) $(HDRS)
	$(MAKE) O=$(FUZZ_DIR)/small CC=$(FUZZ_CC) CFLAGS="$(FUZZ_CFLAGS)" \
	    CPPFLAGS="-include $(FUZZ_SMALL_H)" $(FUZZ_SMALL_OBJS)
	$(FUZZ_CC) $(FUZZ_HARNESS_CFLAGS) -include $(FUZZ_SMALL_H) -o $@ \
	    tests/fuzz/mbox_fuzz.c $(FUZZ_SMALL_OBJS) $(LIBS) $(CTOR_LIBS)

fuzz-build: $(FUZZ_TARGETS)

# A crash or invariant breach fails; its input is in build/fuzz/artifacts.
fuzz: $(FUZZ_TARGETS)
	tests/fuzz/run $(FUZZ_DIR) $(FUZZ_SECONDS)

check-fuzz: $(FUZZ_TARGETS)
	tests/fuzz/run $(FUZZ_DIR) $(FUZZ_CI_SECONDS)

# Static analysis; any finding fails.  cppcheck reads the server and the
# fuzz targets (it cannot parse criterion's macros: the unit tests are
# left to clang-tidy, which uses the compiler); clang-tidy reads
# .clang-tidy; the scripts are the files under tests, contrib, bench and
# .ci whose first line is a sh/bash shebang, and *.sh.
CPPCHECK_FLAGS=	--quiet --error-exitcode=1 \
		--enable=warning,style,performance,portability \
		--std=c11 --platform=unix64 --library=posix \
		-D__linux__ -D_GNU_SOURCE -D__GNUC__ -I. \
		--suppressions-list=tests/cppcheck-suppressions.txt
TIDY_SRCS=	$(SRCS) $(wildcard tests/*.c) tests/fuzz/session_fuzz.c \
		tests/fuzz/mbox_fuzz.c

# Every tool runs, whatever an earlier one found; then any finding fails.
check-analyze:
	@rc=0; \
	echo "cppcheck"; \
	cppcheck $(CPPCHECK_FLAGS) $(SRCS) tests/fuzz/session_fuzz.c \
	    tests/fuzz/mbox_fuzz.c || rc=1; \
	echo "clang-tidy $(TIDY_SRCS)"; \
	clang-tidy --quiet $(TIDY_SRCS) -- -std=c11 -D_GNU_SOURCE \
	    $(BSD_CFLAGS) -I. || rc=1; \
	echo "mandoc -Tlint -Wstyle pop3d.8"; \
	if mandoc -Tlint -Wstyle pop3d.8 2>&1 | \
	    grep -v 'outdated mandoc.db' | grep .; then rc=1; fi; \
	scripts=$$( (git ls-files -co --exclude-standard 2>/dev/null || \
	    find . -type f ! -path './.git/*' ! -path './build/*' | \
	    sed 's|^\./||') | grep -E '^(tests|contrib|bench|\.ci)/' | \
	    sort -u | while read -r f; do \
	        [ -f "$$f" ] || continue; \
	        case $$f in *.sh) echo "$$f"; continue ;; esac; \
	        head -n 1 "$$f" | \
	        grep -qE '^#!.*[/ ](ba|da|k)?sh( |$$)' && echo "$$f"; \
	    done); \
	echo "shellcheck -x" $$scripts; \
	shellcheck -x $$scripts || rc=1; \
	if [ "$$rc" -ne 0 ]; then echo "check-analyze: findings above"; fi; \
	exit $$rc

check-hostile: $(O)/$(PROG)
	POP3D=$(abspath $(O)/$(PROG)) tests/hostile/run

# One real session under valgrind (hostile suite), then the client
# integration tests (poplib and curl through every front end)
# with every pop3d process under memcheck: no errors, no definite leaks.
VG_DIR=		build/vg
VG_LOGS=	/var/tmp/pop3d-valgrind
VG_TESTS=	t-10-poplib t-20-curl

$(VG_DIR)/pop3d: $(O)/$(PROG)
	@mkdir -p $(VG_DIR)
	printf '#!/bin/sh\n# pop3d under valgrind memcheck (make check-valgrind)\nexec valgrind --quiet --vgdb=no --trace-children=yes --trace-children-skip=*dotlockfile* --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --log-file=$(VG_LOGS)/vg.%%p $(abspath $(O)/$(PROG)) "$$@"\n' >$@
	chmod 0755 $@

check-valgrind: $(O)/$(PROG) $(VG_DIR)/pop3d
	POP3D=$(abspath $(O)/$(PROG)) tests/hostile/run --valgrind
	rm -rf $(VG_LOGS) && mkdir -m 1777 $(VG_LOGS)
	POP3D=$(abspath $(VG_DIR)/pop3d) tests/integration/run $(VG_TESTS)
	@n=$$(ls $(VG_LOGS) | wc -l); bad=$$(find $(VG_LOGS) -type f -size +0); \
	echo "valgrind: $$n pop3d processes under memcheck"; \
	if [ "$$n" -eq 0 ] || [ -n "$$bad" ]; then \
	    for f in $$bad; do echo "== $$f"; cat "$$f"; done; \
	    echo "valgrind: reports above (or no process ran)"; exit 1; fi

.PHONY: fuzz fuzz-build check-fuzz check-analyze check-hostile \
	check-valgrind
