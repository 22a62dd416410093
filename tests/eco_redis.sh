#!/bin/sh
# libaiometer-redis is what its header, its man pages and its symbol list
# say: the exported symbols are redis/eco_symbols.txt and the header's
# AIOMETER_REDIS_API functions; the static library defines no global name
# outside aiometer_/aio_; every function has a well-formed page in
# redis/man, installed by redis/local.mk; and each page's EXAMPLE compiles
# warning-free and runs against a redis-server started here (on a Unix
# socket in a temporary directory).  Without redis-server the run is
# skipped, unless AIOMETER_REQUIRE_REDIS=1.
. "$(dirname "$0")/eco_lib.sh"

lib=$builddir/redis/.libs/libaiometer-redis.so
[ -f "$lib" ] || eco_skip "no $lib (configured without hiredis or --disable-shared?)"
eco_have_nm || eco_skip "nm ($NM) is not available"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/eco_redis.XXXXXX") || eco_error "mktemp failed"
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# ---- symbols
grep -v '^#' "$srcdir/redis/eco_symbols.txt" | grep -v '^[[:space:]]*$' | sort > "$tmp/expected"
sed -n 's/^AIOMETER_REDIS_API[^(]*[ *]\(aiometer_[a-z0-9_]*\)(.*/\1/p' \
    "$srcdir/redis/aiometer_redis.h" | sort > "$tmp/header"
eco_dynamic_symbols "$lib" > "$tmp/exported"
diff "$tmp/expected" "$tmp/header" > "$tmp/diff" ||
    { eco_fail "redis/eco_symbols.txt (<) and the header (>) differ:"; sed 's/^/    /' "$tmp/diff"; }
diff "$tmp/expected" "$tmp/exported" > "$tmp/diff" ||
    { eco_fail "redis/eco_symbols.txt (<) and $lib (>) differ:"; sed 's/^/    /' "$tmp/diff"; }
archive=$builddir/redis/.libs/libaiometer-redis.a
if [ -f "$archive" ]; then
    eco_nm --defined-only "$archive" 2>/dev/null |
        awk 'NF >= 3 && $2 ~ /^[A-Z]$/ { print $3 }' | sort -u |
        grep -v -e '^aiometer_' -e '^aio_' > "$tmp/stray"
    [ -s "$tmp/stray" ] &&
        { eco_fail "libaiometer-redis.a defines names outside aiometer_/aio_:"; sed 's/^/    /' "$tmp/stray"; }
fi
echo "$(wc -l < "$tmp/exported") function(s) exported by $lib"

# ---- man pages
man=$srcdir/redis/man
for page in "$man"/*.3; do
    base=$(basename "$page")
    grep -q "redis/man/$base" "$srcdir/redis/local.mk" ||
        eco_fail "redis/man/$base is not installed by redis/local.mk"
done
while IFS= read -r f; do
    page=$man/$f.3
    [ -f "$page" ] || { eco_fail "$f has no page redis/man/$f.3"; continue; }
    for s in NAME SYNOPSIS DESCRIPTION RETURN_VALUE ERRORS EXAMPLE SEE_ALSO; do
        s=$(echo "$s" | tr _ ' ')
        grep -q "^\.SH \"*$s\"*\$" "$page" || eco_fail "$page: no $s section"
    done
    sed -n '/^\.SH NAME/,/^\.SH/p' "$page" | grep -q "$f" ||
        eco_fail "$page: NAME does not list $f"
    sed -n '/^\.SH SYNOPSIS/,/^\.SH/p' "$page" | grep -q "$f(" ||
        eco_fail "$page: the SYNOPSIS does not declare $f"
    sed -n '/^\.SH "*SEE ALSO"*$/,$p' "$page" | sed -n 's/^\.BR  *\([a-z_]*\) *(\([37]\)).*/\1.\2/p' |
        while IFS= read -r ref; do
            [ -f "$srcdir/man/$ref" ] || [ -f "$man/$ref" ] || echo "$ref"
        done > "$tmp/refs"
    [ -s "$tmp/refs" ] && eco_fail "$page: SEE ALSO names missing pages: $(cat "$tmp/refs")"
    if command -v groff >/dev/null 2>&1; then
        groff -man -Tutf8 -ww -z "$page" > "$tmp/groff" 2>&1
        [ -s "$tmp/groff" ] && { eco_fail "$page: groff warns:"; sed 's/^/    /' "$tmp/groff"; }
    fi
done < "$tmp/exported"

# ---- examples
if command -v redis-server >/dev/null 2>&1; then
    redis-server --port 0 --unixsocket "$tmp/redis.sock" --save '' --appendonly no \
        --dir "$tmp" --logfile "$tmp/redis.log" &
    server=$!
    i=0
    while [ ! -S "$tmp/redis.sock" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    AIOMETER_REDIS_URL=unix://$tmp/redis.sock
    export AIOMETER_REDIS_URL
elif [ "${AIOMETER_REQUIRE_REDIS:-}" = 1 ]; then
    eco_fail "redis-server is not on PATH and AIOMETER_REQUIRE_REDIS=1"
fi
for page in "$man"/*.3; do
    base=$(basename "$page")
    grep -q '^\.so ' "$page" && continue
    awk '/^\.SH / { ex = ($0 ~ /^\.SH "?EXAMPLES?"?$/); next }
         ex && /^\.EX/ { on = 1; next } ex && /^\.EE/ { exit } on { print }' "$page" |
        sed -e 's/^\\&//' -e 's/\\&//g' -e "s/\\\\(aq/'/g" -e 's/\\(dq/"/g' \
            -e 's/\\-/-/g' -e 's/\\e/\\/g' > "$tmp/$base.c"
    [ -s "$tmp/$base.c" ] || { eco_fail "$base: no example"; continue; }
    if ! $CC -std=c11 -Wall -Wextra -Wpedantic -Werror $SANITIZER_CFLAGS $PTHREAD_CFLAGS \
            -I"$builddir/include" -I"$srcdir/include" -I"$srcdir/redis" \
            -o "$tmp/$base.exe" "$tmp/$base.c" \
            -L"$builddir/redis/.libs" -L"$builddir/src/.libs" \
            -Wl,-rpath,"$builddir/redis/.libs" -Wl,-rpath,"$builddir/src/.libs" \
            -laiometer-redis -laiometer $PTHREAD_LIBS $LIBS > "$tmp/$base.cc" 2>&1; then
        eco_fail "$base: the example does not compile:"
        sed 's/^/    /' "$tmp/$base.cc"
        continue
    fi
    if [ -n "$server" ]; then
        if timeout 60 "$tmp/$base.exe" > "$tmp/$base.out" 2>&1 < /dev/null; then
            echo "ok: $base ($(cat "$tmp/$base.out"))"
        else
            eco_fail "$base: the example failed; its output:"
            sed 's/^/    /' "$tmp/$base.out"
        fi
    else
        echo "compiled, not run (no redis-server): $base"
    fi
done
eco_finish
