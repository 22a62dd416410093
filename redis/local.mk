# libaiometer-redis: the fleet-wide limiter, a second library built when
# configure finds hiredis.  It uses libaiometer's public interface only.
EXTRA_DIST += aiometer-redis.pc.in
if HAVE_REDIS
lib_LTLIBRARIES += redis/libaiometer-redis.la
include_HEADERS += redis/aiometer_redis.h
pkgconfig_DATA += aiometer-redis.pc
redis_libaiometer_redis_la_SOURCES = \
	redis/conn.c redis/conn.h \
	redis/script.h \
	redis/rlimiter.c redis/rlimiter.h \
	redis/threads.c \
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
