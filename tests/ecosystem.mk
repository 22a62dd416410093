# Ecosystem checks: that the library is what its documentation, its header,
# its pkg-config file and its installed copy say it is.
#
#   tests/eco_manpages.sh     every exported function has a well-formed man page
#   tests/eco_manexamples.sh  every man page's EXAMPLE compiles and runs
#   tests/eco_symbols.sh      the exported symbols are exactly tests/eco_symbols.txt
#   tests/eco_version.sh      header macros, run-time version, aiometer.pc and the
#                             soname agree (with tests/eco_version.c)
#   tests/eco_install.sh      make install into a staging directory, then build and
#                             run a program out of tree with pkg-config, shared
#                             and --static; also run by `make installcheck`
#                             against the real installed copy
#
# The scripts are plain sh.  They read where things are from tests/eco_env.sh,
# which make writes from its own variables, so they run the same under
# `make check`, `make distcheck` (VPATH, read-only sources) and by hand from
# the build directory: sh $(srcdir)/tests/eco_symbols.sh.

eco_tests = \
	tests/eco_manpages.sh \
	tests/eco_manexamples.sh \
	tests/eco_symbols.sh \
	tests/eco_version.sh \
	tests/eco_install.sh
TESTS += $(eco_tests)
EXTRA_DIST += $(eco_tests) tests/eco_lib.sh tests/eco_symbols.txt

# The half of the version check that must be compiled: the header's macros
# against the library's run-time answers.  It prints the version for the
# script to compare with aiometer.pc.
check_PROGRAMS += tests/eco_version
tests_eco_version_SOURCES = tests/eco_version.c
tests_eco_version_LDADD = src/libaiometer.la

# The scripts need the compiler and flags configure chose (a sanitizer build
# must link the man pages' examples with the same -fsanitize), the install
# directories fully expanded, and the version and libtool numbers.
check_SCRIPTS += tests/eco_env.sh
CLEANFILES += tests/eco_env.sh
tests/eco_env.sh: Makefile
	$(AM_V_GEN)$(MKDIR_P) tests && { \
	  echo "# Written by make from tests/ecosystem.mk; do not edit."; \
	  echo "abs_top_srcdir='$(abs_top_srcdir)'"; \
	  echo "abs_top_builddir='$(abs_top_builddir)'"; \
	  echo "CC='$(CC)'"; \
	  echo "CXX='$(CXX)'"; \
	  echo "NM='$(NM)'"; \
	  echo "PKG_CONFIG='$(PKG_CONFIG)'"; \
	  echo "MAKE='$(MAKE)'"; \
	  echo "SANITIZER_CFLAGS='$(SANITIZER_CFLAGS)'"; \
	  echo "PTHREAD_CFLAGS='$(PTHREAD_CFLAGS)'"; \
	  echo "PTHREAD_LIBS='$(PTHREAD_LIBS)'"; \
	  echo "LIBS='$(LIBS)'"; \
	  echo "EXEEXT='$(EXEEXT)'"; \
	  echo "PACKAGE_VERSION='$(PACKAGE_VERSION)'"; \
	  echo "AIOMETER_LT_VERSION='$(AIOMETER_LT_VERSION)'"; \
	  echo "prefix='$(prefix)'"; \
	  echo "bindir='$(bindir)'"; \
	  echo "libdir='$(libdir)'"; \
	  echo "includedir='$(includedir)'"; \
	  echo "pkgconfigdir='$(pkgconfigdir)'"; \
	  echo "mandir='$(mandir)'"; \
	} > $@-t && mv $@-t $@

# `make installcheck` (which `make distcheck` runs after its install) checks
# the copy installed under --prefix, as a user of it would.
installcheck-local: tests/eco_env.sh
	$(AM_V_at)$(SHELL) $(srcdir)/tests/eco_install.sh --installed
