# aiometer(1): the library as a command, xargs -P with a rate (cli/cli.h says
# which file does what).  It is built on the public header only, like any
# other program, and installed to $(bindir).
bin_PROGRAMS = cli/aiometer
cli_aiometer_SOURCES = \
	cli/cli.h \
	cli/aiometer.c \
	cli/options.c \
	cli/input.c \
	cli/cmdline.c \
	cli/spawn.c \
	cli/output.c \
	cli/retry.c \
	cli/reap.c \
	cli/shared.c
# With libaiometer-redis (configure found hiredis: redis/local.mk), --redis
# opens a fleet-wide limiter through it; without, --redis is an error.
cli_aiometer_CPPFLAGS = $(AM_CPPFLAGS)
if HAVE_REDIS
cli_aiometer_CPPFLAGS += -I$(top_srcdir)/redis -DAIOMETER_CLI_REDIS=1
cli_aiometer_LDADD = redis/libaiometer-redis.la src/libaiometer.la $(PTHREAD_LIBS) $(LIBM)
else
cli_aiometer_LDADD = src/libaiometer.la $(PTHREAD_LIBS) $(LIBM)
endif
