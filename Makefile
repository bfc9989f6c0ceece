# pop3d -- a small POP3 server for mbox spools, run from inetd, systemd or
# stunnel.  `make O=dir` builds into dir (the sanitizer build uses that).

PROG=		pop3d
SRCS=		pop3d.c session.c maildrop.c auth.c iobuf.c log.c
HDRS=		params.h session.h maildrop.h auth.h iobuf.h log.h
O?=		.
OBJS=		$(SRCS:%.c=$(O)/%.o)

PREFIX?=	/usr/local
SBINDIR?=	$(PREFIX)/sbin
MANDIR?=	$(PREFIX)/share/man
DOCDIR?=	$(PREFIX)/share/doc/pop3d
PAMDIR?=	/etc/pam.d
STATEDIR?=	/var/lib/pop3d
DESTDIR?=

CC?=		cc
PKG_CONFIG?=	pkg-config
BSD_CFLAGS!=	$(PKG_CONFIG) --cflags libbsd-overlay
BSD_LIBS!=	$(PKG_CONFIG) --libs libbsd-overlay

CFLAGS?=	-O2 -g
WARNINGS=	-Wall -Wextra -Wformat=2 -Wshadow -Wpointer-arith \
		-Wstrict-prototypes -Wmissing-prototypes -Wcast-qual -Werror
HARDEN_CFLAGS=	-D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE \
		-fstack-clash-protection
HARDEN_LDFLAGS=	-pie -Wl,-z,relro,-z,now -Wl,-z,noexecstack
ALL_CFLAGS=	-std=c11 -D_GNU_SOURCE $(BSD_CFLAGS) $(WARNINGS) \
		$(HARDEN_CFLAGS) $(CFLAGS) $(CPPFLAGS)
ALL_LDFLAGS=	$(HARDEN_LDFLAGS) $(LDFLAGS)
LIBS=		-lpam -llockfile $(BSD_LIBS)

all: $(O)/$(PROG)

# EXTRA_OBJS: the sanitizer build links its report options (tests.mk).
$(O)/$(PROG): $(OBJS) $(EXTRA_OBJS)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $(OBJS) $(EXTRA_OBJS) $(LIBS)

$(O)/%.o: %.c
	@mkdir -p $(O)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(O)/pop3d.o: pop3d.c auth.h log.h params.h session.h iobuf.h
$(O)/session.o: session.c session.h iobuf.h maildrop.h params.h log.h
$(O)/maildrop.o: maildrop.c maildrop.h iobuf.h params.h log.h
$(O)/auth.o: auth.c auth.h params.h log.h
$(O)/iobuf.o: iobuf.c iobuf.h params.h
$(O)/log.o: log.c log.h

include tests/tests.mk
-include install.mk
-include bench.mk

clean:
	rm -f $(PROG) $(SRCS:.c=.o) $(TEST_CLEAN)
	rm -rf build

.PHONY: all clean check install uninstall
