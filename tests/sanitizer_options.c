/*
 * Linked into the sanitizer build of pop3d only (make check-sanitize):
 * reports go to files that the test then looks for, since a session's
 * stderr is /dev/null.  LeakSanitizer cannot stop a non-dumpable
 * process to scan it; leaks are valgrind's job (make check-valgrind).
 * The runtimes look these hooks up by their reserved names.
 */
/* NOLINTBEGIN(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp) */
const char	*__asan_default_options(void);
const char	*__ubsan_default_options(void);

const char *
__asan_default_options(void)
{
	return "log_path=/var/tmp/pop3d-sanitizer/asan:detect_leaks=0";
}

const char *
__ubsan_default_options(void)
{
	return "log_path=/var/tmp/pop3d-sanitizer/ubsan:print_stacktrace=1";
}
/* NOLINTEND(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp) */
