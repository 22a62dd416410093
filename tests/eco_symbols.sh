#!/bin/sh
# The shared library exports exactly the documented API: the defined dynamic
# symbols (`nm -D --defined-only`) are the names in tests/eco_symbols.txt,
# which are the functions the header declares with AIOMETER_API.  And the
# static library, where hidden visibility does not apply, defines no global
# name outside the aiometer_ and internal aio_ prefixes, so it cannot clash
# with a program's own names.
. "$(dirname "$0")/eco_lib.sh"

lib=$(eco_shared_lib) || eco_skip "no shared library in src/.libs (configured with --disable-shared?)"
eco_have_nm || eco_skip "nm ($NM) is not available"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/eco_symbols.XXXXXX") || eco_error "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

eco_api | sort > "$tmp/expected"
eco_header_api > "$tmp/header"
eco_dynamic_symbols "$lib" > "$tmp/exported"
[ -s "$tmp/exported" ] || eco_error "nm -D found no symbol in $lib"

echo "$(wc -l < "$tmp/expected") documented, $(wc -l < "$tmp/header") in the header," \
     "$(wc -l < "$tmp/exported") exported by $lib"

if ! diff "$tmp/expected" "$tmp/header" > "$tmp/diff"; then
    eco_fail "tests/eco_symbols.txt (<) and the header's AIOMETER_API functions (>) differ:"
    sed 's/^/    /' "$tmp/diff"
fi
if ! diff "$tmp/expected" "$tmp/exported" > "$tmp/diff"; then
    eco_fail "tests/eco_symbols.txt (<) and the exported symbols (>) differ:"
    sed 's/^/    /' "$tmp/diff"
fi

# Every exported name is a function (T), not data that would tie programs to
# the library's layout.
eco_nm -D --defined-only "$lib" | awk 'NF >= 3 && $3 ~ /^aiometer_/ && $2 != "T" { print }' \
    > "$tmp/nonfunc"
if [ -s "$tmp/nonfunc" ]; then
    eco_fail "exported aiometer_ symbols that are not functions:"
    sed 's/^/    /' "$tmp/nonfunc"
fi

archive=$builddir/src/.libs/libaiometer.a
if [ -f "$archive" ]; then
    eco_nm --defined-only "$archive" 2>/dev/null |
        awk 'NF >= 3 && $2 ~ /^[A-Z]$/ { print $3 }' | sort -u > "$tmp/static"
    grep -v -e '^aiometer_' -e '^aio_' "$tmp/static" > "$tmp/stray"
    if [ -s "$tmp/stray" ]; then
        eco_fail "libaiometer.a defines global names outside aiometer_/aio_:"
        sed 's/^/    /' "$tmp/stray"
    fi
    echo "$(wc -l < "$tmp/static") global names in libaiometer.a, all prefixed"
fi

eco_finish
