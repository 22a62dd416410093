# Check suites: one program, one Suite per file, all added by tests/main.c.
# CK_RUN_SUITE=name runs one suite; CK_FORK=no runs them without forking
# (for valgrind).
check_PROGRAMS += tests/check_aiometer
TESTS += tests/check_aiometer
tests_check_aiometer_SOURCES = \
	tests/main.c tests/testutil.c tests/testutil.h \
	tests/check_core.c \
	tests/check_handoff.c \
	tests/check_limiter.c \
	tests/check_amap.c \
	tests/check_ordered.c \
	tests/check_run_any.c \
	tests/check_cancel.c \
	tests/check_deadline.c \
	tests/check_source.c \
	tests/check_args.c \
	tests/check_backend.c \
	tests/check_host.c \
	tests/check_retry.c \
	tests/check_keyed.c \
	tests/check_defects.c
tests_check_aiometer_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_check_aiometer_CPPFLAGS = $(AM_CPPFLAGS) \
	-DHOST_HELPER='"$(abs_top_builddir)/tests/host_helper$(EXEEXT)"'
tests_check_aiometer_LDADD = src/libaiometer.la $(CHECK_LIBS)
# check_host.c execs tests/host_helper: building the Check program builds
# it too, so that `make tests/check_aiometer` (the reliability runs build
# only the programs they run) never leaves the test without its helper.
EXTRA_tests_check_aiometer_DEPENDENCIES = tests/host_helper$(EXEEXT)
EXTRA_DIST += tests/README

# A separate program that check_host.c execs, to show that unrelated
# processes (not forks of one another) share a named limiter.
check_PROGRAMS += tests/host_helper
tests_host_helper_SOURCES = tests/host_helper.c
tests_host_helper_LDADD = src/libaiometer.la
