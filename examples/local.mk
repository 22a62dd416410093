# Examples: small programs a user could copy, each showing one use of the
# library.  Built by `make`, never installed.
noinst_PROGRAMS += examples/sleep_sort examples/blocking_calls examples/threaded_caller
noinst_PROGRAMS += examples/shared_quota examples/per_host
examples_per_host_SOURCES = examples/per_host.c
examples_per_host_LDADD = src/libaiometer.la $(PTHREAD_LIBS)
examples_shared_quota_SOURCES = examples/shared_quota.c
examples_shared_quota_LDADD = src/libaiometer.la $(PTHREAD_LIBS)
examples_sleep_sort_SOURCES = examples/sleep_sort.c
examples_sleep_sort_LDADD = src/libaiometer.la $(PTHREAD_LIBS)
examples_blocking_calls_SOURCES = examples/blocking_calls.c
examples_blocking_calls_LDADD = src/libaiometer.la $(PTHREAD_LIBS)
examples_threaded_caller_SOURCES = examples/threaded_caller.c
examples_threaded_caller_LDADD = src/libaiometer.la $(PTHREAD_LIBS)

# http_fetch needs libcurl, which is an example dependency only: configure
# says when it is missing, and then the example and its test are skipped.
if HAVE_CURL
noinst_PROGRAMS += examples/http_fetch
examples_http_fetch_SOURCES = examples/http_fetch.c
examples_http_fetch_CFLAGS = $(AM_CFLAGS) $(CURL_CFLAGS)
examples_http_fetch_LDADD = src/libaiometer.la $(CURL_LIBS) $(PTHREAD_LIBS)
example_have_curl = yes
else
example_have_curl = no
endif

# threaded_caller and per_host check their own results and exit 1 if one is
# wrong, so they double as tests.  tests/example_http_fetch runs http_fetch against a
# local server; it is made from its .sh with the paths and tools filled in
# (the [@] keeps configure from substituting the patterns themselves).
TESTS += examples/threaded_caller examples/per_host tests/example_http_fetch
check_SCRIPTS += tests/example_http_fetch
EXTRA_DIST += tests/example_http_fetch.sh tests/example_http_fetch.py
CLEANFILES += tests/example_http_fetch
tests/example_http_fetch: $(top_srcdir)/tests/example_http_fetch.sh Makefile
	$(AM_V_GEN)$(MKDIR_P) tests && \
	sed -e 's|[@]PYTHON3[@]|$(PYTHON3)|g' \
	    -e 's|[@]HAVE_CURL[@]|$(example_have_curl)|g' \
	    -e 's|[@]abs_top_srcdir[@]|$(abs_top_srcdir)|g' \
	    -e 's|[@]abs_top_builddir[@]|$(abs_top_builddir)|g' \
	    $(top_srcdir)/tests/example_http_fetch.sh > $@.tmp && \
	chmod +x $@.tmp && mv $@.tmp $@
