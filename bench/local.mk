# The benchmark (bench/README).  It is an EXTRA_PROGRAM: `make`, `make check`
# and `make install` never build it; `make bench` builds and runs it.  Its
# sources are in the tarball because automake distributes the _SOURCES of
# EXTRA_PROGRAMS.  GLib, for the baseline columns, is optional.
EXTRA_PROGRAMS += bench/bench
bench_bench_SOURCES = \
	bench/bench.c bench/bench.h \
	bench/w1.c bench/w2.c bench/w3.c bench/w4.c bench/w5.c \
	bench/w6.c bench/w7.c
bench_bench_CPPFLAGS = $(AM_CPPFLAGS)
bench_bench_CFLAGS = $(AM_CFLAGS)
bench_bench_LDADD = src/libaiometer.la $(PTHREAD_LIBS)
# -no-install: a real binary, not a libtool wrapper script, so that perf,
# valgrind and W4's re-execution of itself see the program itself.
bench_bench_LDFLAGS = $(AM_LDFLAGS) -no-install
if HAVE_GLIB
bench_bench_CPPFLAGS += -DBENCH_HAVE_GLIB
bench_bench_CFLAGS += $(GLIB_CFLAGS)
bench_bench_LDADD += $(GLIB_LIBS)
endif
CLEANFILES += bench/bench$(EXEEXT)
EXTRA_DIST += bench/README bench/rss.sh bench/cli.sh

# host_bench: a named limiter's booking and slot costs next to a private
# one's (bench/README).  It reads the limiter object's layout from
# src/limiter.h, so it sees the private headers.
EXTRA_PROGRAMS += bench/host_bench
bench_host_bench_SOURCES = bench/host_bench.c
bench_host_bench_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/src
bench_host_bench_LDADD = src/libaiometer.la $(PTHREAD_LIBS)
bench_host_bench_LDFLAGS = $(AM_LDFLAGS) -no-install
CLEANFILES += bench/host_bench$(EXEEXT)

# keyed_bench: per-key limits against the same call without keys
# (bench/README).
EXTRA_PROGRAMS += bench/keyed_bench
bench_keyed_bench_SOURCES = bench/keyed_bench.c
bench_keyed_bench_LDADD = src/libaiometer.la $(PTHREAD_LIBS)
bench_keyed_bench_LDFLAGS = $(AM_LDFLAGS) -no-install
CLEANFILES += bench/keyed_bench$(EXEEXT)

# BENCH_ARGS picks workloads and repetitions: make bench BENCH_ARGS="-r 7 w1 w3".
# `make bench` also runs the aiometer(1) benchmark (bench/cli.sh: the
# command against xargs -P and GNU parallel), BENCH_REPS times; BENCH_CLI=no
# leaves it out, and `make bench-cli` runs only it.
.PHONY: bench bench-cli
bench: bench/bench$(EXEEXT) bench/host_bench$(EXEEXT) bench/keyed_bench$(EXEEXT) \
	  cli/aiometer$(EXEEXT)
	$(AM_V_at)bench/bench$(EXEEXT) $(BENCH_ARGS)
	$(AM_V_at)bench/host_bench$(EXEEXT)
	$(AM_V_at)bench/keyed_bench$(EXEEXT)
	$(AM_V_at)if test "x$(BENCH_CLI)" != xno; then \
	  $(SHELL) $(srcdir)/bench/cli.sh cli/aiometer$(EXEEXT); fi
bench-cli: cli/aiometer$(EXEEXT)
	$(AM_V_at)$(SHELL) $(srcdir)/bench/cli.sh cli/aiometer$(EXEEXT)
