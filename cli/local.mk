# aiometer(1): the library as a command, xargs -P with a rate (cli/cli.h says
# which file does what).  It is built on the public header only, like any
# other program, and installed to $(bindir).
bin_PROGRAMS = cli/aiometer
cli_aiometer_SOURCES = \
	cli/cli.h \
	cli/aiometer.c \
	cli/options.c \
	cli/cmdline.c \
	cli/spawn.c \
	cli/output.c
cli_aiometer_LDADD = src/libaiometer.la $(PTHREAD_LIBS) $(LIBM)
