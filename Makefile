# pop3d -- a small POP3 server for mbox spools, run from inetd, systemd or stunnel.

PROG=		pop3d
SRCS=		pop3d.c session.c maildrop.c auth.c iobuf.c log.c
OBJS=		$(SRCS:.c=.o)
HDRS=		params.h session.h maildrop.h auth.h iobuf.h log.h

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
LIBS=		-lpam -llockfile -lmd -lresolv $(BSD_LIBS)

all: $(PROG)

$(PROG): $(OBJS)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $(OBJS) $(LIBS)

.c.o:
	$(CC) $(ALL_CFLAGS) -c $< -o $@

pop3d.o: pop3d.c $(HDRS)
session.o: session.c session.h iobuf.h maildrop.h params.h log.h
maildrop.o: maildrop.c maildrop.h iobuf.h params.h log.h
auth.o: auth.c auth.h params.h log.h
iobuf.o: iobuf.c iobuf.h params.h
log.o: log.c log.h

include tests/tests.mk

clean:
	rm -f $(PROG) $(OBJS) $(TEST_CLEAN)

.PHONY: all clean check install uninstall
