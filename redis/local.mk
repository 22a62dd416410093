# libaiometer-redis: the fleet-wide limiter, a second library built when
# configure finds hiredis.  It uses libaiometer's public interface only.
EXTRA_DIST += aiometer-redis.pc.in
if HAVE_REDIS
lib_LTLIBRARIES += redis/libaiometer-redis.la
include_HEADERS += redis/aiometer_redis.h
pkgconfig_DATA += aiometer-redis.pc
redis_libaiometer_redis_la_SOURCES = \
	redis/url.c redis/conn.c redis/conn.h \
	redis/script.h redis/run.c \
	redis/rlimiter.c redis/rlimiter.h \
	redis/threads.c redis/keys.c \
	redis/fallback.c
redis_libaiometer_redis_la_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/redis -DAIOMETER_REDIS_BUILDING
redis_libaiometer_redis_la_CFLAGS = $(AM_CFLAGS) $(VISIBILITY_CFLAGS) $(HIREDIS_CFLAGS)
redis_libaiometer_redis_la_LIBADD = src/libaiometer.la $(HIREDIS_LIBS) $(PTHREAD_LIBS) $(LIBM)
redis_libaiometer_redis_la_LDFLAGS = $(AM_LDFLAGS) -version-info $(AIOMETER_LT_VERSION) -no-undefined
endif

# The Redis tests: their own program, since they need hiredis and a
# redis-server (which they start themselves; without one they are skipped,
# or fail when AIOMETER_REQUIRE_REDIS=1).
if HAVE_REDIS
check_PROGRAMS += tests/check_redis
TESTS += tests/check_redis
tests_check_redis_SOURCES = tests/check_redis.c tests/redis_util.c tests/redis_util.h \
	tests/testutil.c tests/testutil.h
tests_check_redis_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/redis
tests_check_redis_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) $(HIREDIS_CFLAGS)
tests_check_redis_LDADD = redis/libaiometer-redis.la src/libaiometer.la $(HIREDIS_LIBS) \
	$(CHECK_LIBS)
endif

# Man pages (installed with the library) and their check, tests/eco_redis.sh,
# which also compares the exported symbols with redis/eco_symbols.txt.
redis_man = redis/man/aiometer_redis_limiter_open.3 redis/man/aiometer_redis_options.3
EXTRA_DIST += $(redis_man) redis/eco_symbols.txt tests/eco_redis.sh
if HAVE_REDIS
man_MANS = $(redis_man)
TESTS += tests/eco_redis.sh
endif

# The example: a fleet of processes sharing one quota through Redis.
if HAVE_REDIS
noinst_PROGRAMS += examples/fleet_quota
examples_fleet_quota_SOURCES = examples/fleet_quota.c
examples_fleet_quota_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/redis
examples_fleet_quota_LDADD = redis/libaiometer-redis.la src/libaiometer.la $(PTHREAD_LIBS)
endif

# The Redis benchmark (bench/bench_redis.c): built and run by `make bench`
# after the core's benchmark, never by `make` or `make check`.
if HAVE_REDIS
EXTRA_PROGRAMS += bench/bench_redis
bench_bench_redis_SOURCES = bench/bench_redis.c tests/redis_util.c tests/redis_util.h
bench_bench_redis_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/redis -I$(top_srcdir)/tests
bench_bench_redis_CFLAGS = $(AM_CFLAGS) $(HIREDIS_CFLAGS)
bench_bench_redis_LDADD = redis/libaiometer-redis.la src/libaiometer.la $(HIREDIS_LIBS) $(PTHREAD_LIBS)
bench_bench_redis_LDFLAGS = $(AM_LDFLAGS) -no-install
CLEANFILES += bench/bench_redis$(EXEEXT)
bench_redis_prog = bench/bench_redis$(EXEEXT)
endif
.PHONY: bench-redis
bench: bench-redis
bench-redis: $(bench_redis_prog)
	$(AM_V_at)if test -n '$(bench_redis_prog)'; then $(bench_redis_prog) || test $$? = 77; \
	else echo "bench-redis: skipped (configured without hiredis)"; fi
