# The library.  One concept per file; see the README's "Source layout".
lib_LTLIBRARIES = src/libaiometer.la
src_libaiometer_la_SOURCES = \
	src/clock.c src/clock.h \
	src/sync.c src/sync.h \
	src/limiter.c src/limiter.h \
	src/completion.c src/completion.h \
	src/retry.c src/retry.h \
	src/call.c src/call.h \
	src/pool.c src/pool.h \
	src/run.c \
	src/amap.c \
	src/misc.c
src_libaiometer_la_CPPFLAGS = $(AM_CPPFLAGS) -DAIOMETER_BUILDING
src_libaiometer_la_CFLAGS = $(AM_CFLAGS) $(VISIBILITY_CFLAGS)
src_libaiometer_la_LIBADD = $(PTHREAD_LIBS) $(LIBM)
src_libaiometer_la_LDFLAGS = $(AM_LDFLAGS) -version-info $(AIOMETER_LT_VERSION) -no-undefined
