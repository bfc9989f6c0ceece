# bench.mk -- `make bench`: pop3d against popa3d and Dovecot (issue 7).
# The Makefile includes it with `-include bench.mk`.  Not part of `make
# check`: it runs as root, adds accounts and PAM files for its duration,
# installs the peers from Debian when missing, and takes 20-30 minutes.
# It writes bench/RESULTS.md and bench/results.png; see bench/README.md.
#
#   make bench                     full run (1,000, 10,000, 50,000 messages)
#   make bench-quick               small and medium mbox only
#   make bench BENCH_FLAGS='--runs 5 --servers "pop3d popa3d"'

BENCH_FLAGS?=

bench: $(O)/$(PROG)
	POP3D=$(O)/$(PROG) bench/run $(BENCH_FLAGS)

bench-quick: $(O)/$(PROG)
	POP3D=$(O)/$(PROG) bench/run --quick $(BENCH_FLAGS)

# The generated mboxes are cached in bench/work/mbox; this drops them.
bench-clean:
	rm -rf bench/work

.PHONY: bench bench-quick bench-clean
