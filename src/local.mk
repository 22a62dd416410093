# The library.  One concept per file; see the README's "Source layout".
lib_LTLIBRARIES = src/libaiometer.la
src_libaiometer_la_SOURCES = \
	src/list.h src/task.h \
	src/clock.c src/clock.h \
	src/syscalls.c src/syscalls.h \
	src/fdsem.c src/fdsem.h \
	src/pool.c src/pool.h src/pool_impl.h src/pool_fork.c \
	src/limiter.c src/limiter.h src/keytable.c \
	src/host_open.c src/host_limiter.c src/host_keys.c src/host_owner.c src/host_limiter.h \
	src/completion.c src/completion.h \
	src/retry.c src/retry.h \
	src/call.c src/call.h \
	src/handoff.c \
	src/sentinel.c \
	src/claim.c \
	src/jobloop.c \
	src/runjob.c \
	src/ratewait.c \
	src/keywait.c \
	src/policy.c \
	src/cancel.c \
	src/cancelfd.c \
	src/progress.c \
	src/finish.c \
	src/run.c \
	src/amap.c src/amap_impl.h src/amap_close.c \
	src/version.c
src_libaiometer_la_CPPFLAGS = $(AM_CPPFLAGS) -DAIOMETER_BUILDING
src_libaiometer_la_CFLAGS = $(AM_CFLAGS) $(VISIBILITY_CFLAGS)
src_libaiometer_la_LIBADD = $(PTHREAD_LIBS) $(LIBM)
src_libaiometer_la_LDFLAGS = $(AM_LDFLAGS) -version-info $(AIOMETER_LT_VERSION) -no-undefined
