# Reliability: hostile input, fault injection, stress and fuzzing.
#
#   tests/rel_hostile  (make check) every public function given NULL, zero,
#                      huge or non-finite values returns a documented error
#                      and starts nothing
#   tests/rel_faults   (make check, in a build configured with
#                      --enable-fault-injection) the k-th allocation,
#                      thread-library call or descriptor (eventfd, timerfd,
#                      epoll, pipe) made through src/syscalls.c fails, for
#                      every k
#   make stress        tests/rel_stress: 8 threads x 10,000 mixed calls on a
#                      shared pool and the default pool, nesting, destroy
#                      racing with calls, fork of a busy process.
#                      STRESS_SCALE=0.2 makes it five times shorter.
#   make fuzz          tests/rel_fuzz, a libFuzzer target: needs clang
#                      (configure CC=clang CFLAGS=-fsanitize=fuzzer-no-link
#                      --enable-sanitizers=address); FUZZ_TIME=seconds
#   tests/rel_ci.sh    all of the above, and the Check suites under
#                      ASan+UBSan, TSan, valgrind memcheck and helgrind, each
#                      in a fresh build directory; .ci/run calls it
#
# The programs share tests/rel_util.c.  They are plain programs, not Check
# suites, because they run under valgrind, in forked children and inside
# libFuzzer, where a program that prints the broken expectation and aborts
# is the simplest thing to trust.

rel_util_sources = tests/rel_util.c tests/rel_util.h

check_PROGRAMS += tests/rel_hostile
TESTS += tests/rel_hostile
tests_rel_hostile_SOURCES = tests/rel_hostile.c $(rel_util_sources)
tests_rel_hostile_LDADD = src/libaiometer.la

# The fault-injection hooks (aiometer__fault_arm, declared in
# src/syscalls.h) are hidden in the shared library, so the test links the
# static one (libtool's -static: this program only).
if FAULT_INJECTION
check_PROGRAMS += tests/rel_faults
TESTS += tests/rel_faults
endif
tests_rel_faults_SOURCES = tests/rel_faults.c $(rel_util_sources)
tests_rel_faults_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/src
tests_rel_faults_LDFLAGS = $(AM_LDFLAGS) -static
tests_rel_faults_LDADD = src/libaiometer.la

# Built only by `make stress` and `make fuzz`.
EXTRA_PROGRAMS += tests/rel_stress tests/rel_fuzz
CLEANFILES += tests/rel_stress$(EXEEXT) tests/rel_fuzz$(EXEEXT)
tests_rel_stress_SOURCES = tests/rel_stress.c $(rel_util_sources)
tests_rel_stress_LDADD = src/libaiometer.la

tests_rel_fuzz_SOURCES = tests/rel_fuzz.c $(rel_util_sources)
tests_rel_fuzz_LDFLAGS = $(AM_LDFLAGS) -static -fsanitize=fuzzer
tests_rel_fuzz_LDADD = src/libaiometer.la

EXTRA_DIST += tests/rel_ci.sh tests/rel_valgrind.supp tests/rel_helgrind.supp

STRESS_SCALE = 1
stress: tests/rel_stress$(EXEEXT)
	$(AM_V_at)REL_STRESS_SCALE=$(STRESS_SCALE) ./tests/rel_stress$(EXEEXT)

# allocator_may_return_null: the target asks for absurd amap buffers on
# purpose, and the library can only answer ENOMEM if calloc may fail.
FUZZ_TIME = 60
fuzz:
	$(AM_V_at)case '$(CC)' in *clang*) ;; *) \
	  echo "make fuzz needs clang: configure CC=clang CFLAGS='-g -O1 -fsanitize=fuzzer-no-link' --enable-sanitizers=address" >&2; \
	  exit 1;; esac
	$(AM_V_at)$(MAKE) $(AM_MAKEFLAGS) tests/rel_fuzz$(EXEEXT)
	$(AM_V_at)$(MKDIR_P) tests/rel_fuzz_corpus
	ASAN_OPTIONS="$${ASAN_OPTIONS:+$$ASAN_OPTIONS:}allocator_may_return_null=1" \
	  ./tests/rel_fuzz$(EXEEXT) -max_total_time=$(FUZZ_TIME) -timeout=20 \
	  -print_final_stats=1 tests/rel_fuzz_corpus

clean-local: clean-rel-fuzz
clean-rel-fuzz:
	-rm -rf tests/rel_fuzz_corpus

.PHONY: stress fuzz clean-rel-fuzz
