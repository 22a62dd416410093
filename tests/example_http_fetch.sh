#!/bin/sh
# Runs examples/http_fetch against a local HTTP server and checks what it
# prints (every response once as it arrives, then all of them in order) and
# how fast it starts requests (the server's arrival times must keep to the
# rate).  The server answers some first requests 429 with Retry-After or 503,
# and the check wants each retried once, after the time it was told, within
# the same rate.  examples/local.mk makes tests/example_http_fetch from this file,
# filling in the @...@ values.
PYTHON3='@PYTHON3@'
HAVE_CURL='@HAVE_CURL@'
SRCDIR='@abs_top_srcdir@'
BUILDDIR='@abs_top_builddir@'

COUNT=60     # URLs fetched, twice (amap, then run_all)
RATE=50      # --rate: starts a second; the example's burst is 1
AT_ONCE=10   # --at-once
THINK=0.1    # --think: up to this long "processing" each response

if [ "$HAVE_CURL" != yes ]; then
    echo "SKIP: libcurl was not found, so examples/http_fetch was not built"
    exit 77
fi
if [ -z "$PYTHON3" ]; then
    echo "SKIP: python3 was not found, so there is no HTTP server to fetch from"
    exit 77
fi
fetch=$BUILDDIR/examples/http_fetch
if [ ! -x "$fetch" ]; then
    echo "ERROR: $fetch is missing although libcurl was found"
    exit 99
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/example_http_fetch.XXXXXX") || exit 99
server_pid=
fetch_pid=
cleanup() {
    for pid in $fetch_pid $server_pid; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$tmp"
}
# The EXIT trap runs on every way out, the signal traps included.
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# Port 0: the kernel picks a free port, and the server writes it down.
"$PYTHON3" "$SRCDIR/tests/example_http_fetch.py" serve "$tmp/port" "$tmp/requests.log" &
server_pid=$!
tries=0
while [ ! -s "$tmp/port" ]; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "FAIL: the test server exited before it was listening"
        exit 1
    fi
    tries=$((tries + 1))
    if [ "$tries" -gt 200 ]; then
        echo "FAIL: the test server did not start listening within 20 s"
        exit 1
    fi
    sleep 0.1 2>/dev/null || sleep 1
done
port=$(cat "$tmp/port")

# Only loopback: keep any proxy from the environment out of the way.
unset http_proxy HTTP_PROXY all_proxy ALL_PROXY
no_proxy='*'
NO_PROXY='*'
export no_proxy NO_PROXY

# A hung example must fail the test, not hang it.  It runs in the
# background so that a signal to this script is handled at once (the shell
# runs traps during "wait", but not while a foreground command runs).
limit=
if command -v timeout >/dev/null 2>&1; then
    limit="timeout 120"
fi
echo "running: http_fetch --at-once $AT_ONCE --rate $RATE --think $THINK http://127.0.0.1:$port/ $COUNT"
$limit "$fetch" --at-once "$AT_ONCE" --rate "$RATE" --think "$THINK" \
    "http://127.0.0.1:$port/" "$COUNT" >"$tmp/out" 2>"$tmp/err" &
fetch_pid=$!
wait "$fetch_pid"
rc=$?
fetch_pid=
if [ "$rc" -ne 0 ]; then
    echo "FAIL: http_fetch exited with status $rc; its output:"
    cat "$tmp/out" "$tmp/err"
    exit 1
fi
if [ -s "$tmp/err" ]; then
    echo "FAIL: http_fetch wrote to stderr:"
    cat "$tmp/err"
    exit 1
fi

"$PYTHON3" "$SRCDIR/tests/example_http_fetch.py" check \
    "$tmp/out" "$tmp/requests.log" "$COUNT" "$RATE" 1 "$AT_ONCE"
rc=$?
if [ "$rc" -ne 0 ]; then
    echo "http_fetch's output was:"
    cat "$tmp/out"
fi
exit "$rc"
