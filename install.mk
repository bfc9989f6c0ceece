# install and uninstall, included by the Makefile, which defines PROG,
# PREFIX, SBINDIR, MANDIR, DOCDIR, PAMDIR, STATEDIR and DESTDIR.
#
# make install puts in place:
#   $(SBINDIR)/pop3d                  0755
#   $(MANDIR)/man8/pop3d.8            0644
#   $(DOCDIR)/examples/...            contrib/: inetd, xinetd, systemd,
#                                     stunnel and PAM configurations
#   $(PAMDIR)/pop3                    only if there is none: an existing
#                                     one is the administrator's
#   $(STATEDIR)/empty                 0755, the pre-login child's chroot
#   $(STATEDIR)/journal               0700, the commit journals
#   the system user $(PRIVSEP_USER)   if absent, unless DESTDIR is set (a
#                                     package creates it in its postinst)
# pop3d has /var/lib/pop3d compiled in (params.h: CHROOT_DIR, JOURNAL_DIR):
# change STATEDIR only together with those.
#
# make uninstall removes the binary, the man page and the examples; the
# PAM file only if it is still the one installed here (an edited one is
# the administrator's and stays, with a note); the empty journals (a
# finished commit leaves its journal empty); the state directories only if
# empty then (a journal that is not empty holds an unfinished commit,
# which the next login completes or undoes: removing it could lose mail);
# and the user only if make install created it (recorded in
# $(STATEDIR)/.created-user), and not with DESTDIR.

PRIVSEP_USER?=	pop3d
INSTALL?=	install
EXAMPLES=	inetd.conf xinetd.d/pop3 systemd/pop3d.socket \
		systemd/pop3d@.service systemd/pop3d-recover.service \
		stunnel/pop3s.conf stunnel/pop3s-systemd.conf pam.d/pop3
EXDIR=		$(DESTDIR)$(DOCDIR)/examples
# The binary: in $(O) when the Makefile builds out of tree.
BIN=		$(if $(O),$(O)/$(PROG),$(PROG))
USERMARK=	$(DESTDIR)$(STATEDIR)/.created-user

install: $(BIN) pop3d.8
	$(INSTALL) -d -m 0755 $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8
	$(INSTALL) -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/$(PROG)
	$(INSTALL) -m 0644 pop3d.8 $(DESTDIR)$(MANDIR)/man8/pop3d.8
	for f in $(EXAMPLES); do \
		$(INSTALL) -d -m 0755 "$(EXDIR)/$$(dirname $$f)" && \
		$(INSTALL) -m 0644 "contrib/$$f" "$(EXDIR)/$$f" || exit 1; \
	done
	@if [ -e "$(DESTDIR)$(PAMDIR)/pop3" ]; then \
		echo "$(DESTDIR)$(PAMDIR)/pop3 exists: left as it is"; \
	else \
		echo "installing $(DESTDIR)$(PAMDIR)/pop3"; \
		$(INSTALL) -d -m 0755 "$(DESTDIR)$(PAMDIR)" && \
		$(INSTALL) -m 0644 contrib/pam.d/pop3 \
		    "$(DESTDIR)$(PAMDIR)/pop3"; \
	fi
	$(INSTALL) -d -m 0755 $(DESTDIR)$(STATEDIR) $(DESTDIR)$(STATEDIR)/empty
	$(INSTALL) -d -m 0700 $(DESTDIR)$(STATEDIR)/journal
	@if [ -n "$(DESTDIR)" ]; then \
		echo "DESTDIR set: not creating the user $(PRIVSEP_USER)"; \
	elif getent passwd $(PRIVSEP_USER) >/dev/null; then \
		echo "user $(PRIVSEP_USER) exists"; \
	else \
		echo "creating the system user $(PRIVSEP_USER)"; \
		if command -v useradd >/dev/null; then \
			useradd --system --user-group --no-create-home \
			    --home-dir $(STATEDIR)/empty \
			    --shell /usr/sbin/nologin $(PRIVSEP_USER); \
		else \
			adduser --system --group --no-create-home \
			    --home $(STATEDIR)/empty \
			    --shell /usr/sbin/nologin $(PRIVSEP_USER); \
		fi && echo $(PRIVSEP_USER) > $(USERMARK); \
	fi

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/$(PROG) $(DESTDIR)$(MANDIR)/man8/pop3d.8
	for f in $(EXAMPLES); do rm -f "$(EXDIR)/$$f"; done
	rmdir $(EXDIR)/xinetd.d $(EXDIR)/systemd $(EXDIR)/stunnel \
	    $(EXDIR)/pam.d $(EXDIR) $(DESTDIR)$(DOCDIR) 2>/dev/null || true
	@if [ ! -e "$(DESTDIR)$(PAMDIR)/pop3" ]; then :; \
	elif cmp -s contrib/pam.d/pop3 "$(DESTDIR)$(PAMDIR)/pop3"; then \
		echo "removing $(DESTDIR)$(PAMDIR)/pop3"; \
		rm -f "$(DESTDIR)$(PAMDIR)/pop3"; \
	else \
		echo "$(DESTDIR)$(PAMDIR)/pop3 was changed: left as it is"; \
	fi
	@if [ -z "$(DESTDIR)" ] && [ -f $(USERMARK) ] && \
	    [ "$$(cat $(USERMARK))" = $(PRIVSEP_USER) ] && \
	    getent passwd $(PRIVSEP_USER) >/dev/null; then \
		echo "removing the user $(PRIVSEP_USER)"; \
		userdel $(PRIVSEP_USER) && rm -f $(USERMARK); \
	fi
	@# An empty journal is a finished commit's (maildrop.c truncates it).
	find $(DESTDIR)$(STATEDIR)/journal -maxdepth 1 -type f -empty \
	    -delete 2>/dev/null || true
	@for d in $(DESTDIR)$(STATEDIR)/empty $(DESTDIR)$(STATEDIR)/journal \
	    $(DESTDIR)$(STATEDIR); do \
		[ ! -d "$$d" ] || rmdir "$$d" 2>/dev/null || \
		    echo "$$d is not empty: left as it is"; \
	done

.PHONY: install uninstall
