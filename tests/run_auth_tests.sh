#!/bin/bash
# Run the auth test binary ($1, further arguments go to it) against real
# libpam through pam_wrapper, with the PAM stacks of tests/pam/.  Works
# from any directory.  The service files name pam_wrapper's modules as
# @PAM_WRAPPER_MODULES@, filled in here from pkg-config (override with
# PAM_WRAPPER_MODULES and PAM_WRAPPER_LIB).  An LD_PRELOAD already set
# (libasan, say) is kept in front of pam_wrapper.
set -eu

if [ $# -lt 1 ]; then
	echo "usage: $0 test-binary [criterion options]" >&2
	exit 2
fi
bin=$1
shift
case $bin in
/*) ;;
*) bin=$PWD/$bin ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
modules=${PAM_WRAPPER_MODULES:-$(pkg-config --variable=modules pam_wrapper)}
wrapper=${PAM_WRAPPER_LIB:-$(pkg-config --libs pam_wrapper)}
wrapper=${wrapper%% }
if [ ! -f "$modules/pam_matrix.so" ] || [ ! -f "$wrapper" ]; then
	echo "$0: pam_wrapper not found (modules '$modules', lib '$wrapper')" >&2
	exit 1
fi

services=$(mktemp -d "${TMPDIR:-/tmp}/pop3d-pam.XXXXXX")
trap 'rm -rf "$services"' EXIT
trap 'exit 1' HUP INT TERM
for f in "$here"/pam/pop3-test* "$here"/pam/other; do
	sed "s|@PAM_WRAPPER_MODULES@|$modules|g" "$f" >"$services/${f##*/}"
done

export LD_PRELOAD="${LD_PRELOAD:+$LD_PRELOAD:}$wrapper"
export PAM_WRAPPER=1
export PAM_WRAPPER_SERVICE_DIR="$services"
export PAM_MATRIX_PASSWD="$here/pam/passdb"

# A sanitized binary: libasan must accept coming after pam_wrapper in
# LD_PRELOAD, and pam_wrapper must not dlopen() libpam with RTLD_DEEPBIND,
# which ASan refuses.  pam_wrapper 1.1.4 (Debian 12) reads that switch
# as UID_WRAPPER_DISABLE_DEEPBIND, later versions as the PAM_ one.
if ! grep -q __asan_init "$bin"; then
	"$bin" "$@"
	exit
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
export PAM_WRAPPER_DISABLE_DEEPBIND=1 UID_WRAPPER_DISABLE_DEEPBIND=1

# criterion ignores a worker's exit status once its test has passed, so
# a LeakSanitizer report would go unnoticed: look for one.
set -o pipefail
status=0
"$bin" "$@" 2>&1 | tee "$services/output" || status=$?
if grep -q -E 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$services/output"; then
	echo "$0: sanitizer report above" >&2
	exit 1
fi
exit "$status"
