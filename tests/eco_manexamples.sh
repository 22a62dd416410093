#!/bin/sh
# The man pages' EXAMPLE programs are true: each one is taken out of its page
# (the .EX/.EE block, troff escapes undone), compiled warning-free against the
# built library with -std=c11 -Wall -Wextra -Wpedantic, and run; each checks
# its own results and exits non-zero if the library does not do what the
# page says.
. "$(dirname "$0")/eco_lib.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/eco_manexamples.XXXXXX") || eco_error "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

libs=$builddir/src/.libs
if [ ! -f "$libs/libaiometer.so" ] && [ ! -f "$libs/libaiometer.a" ]; then
    eco_error "the library is not built in $libs"
fi

# A hung example must fail the test, not hang it.
run_limited() {
    if command -v timeout >/dev/null 2>&1; then
        timeout 60 "$@"
    else
        "$@"
    fi
}

count=0
for page in "$srcdir"/man/*.[37]; do
    base=$(basename "$page")
    # The example: the first .EX/.EE block after .SH EXAMPLE.
    awk '
        /^\.SH / { in_example = ($0 ~ /^\.SH "?EXAMPLES?"?$/) ; next }
        in_example && /^\.EX/ { on = 1; next }
        in_example && /^\.EE/ { exit }
        on { print }' "$page" |
        sed -e 's/^\\&//' -e 's/\\&//g' -e 's/\\(aq/'"'"'/g' -e 's/\\(ga/`/g' \
            -e 's/\\(dq/"/g' -e 's/\\-/-/g' -e 's/\\e/\\/g' > "$tmp/$base.c"
    if [ ! -s "$tmp/$base.c" ]; then
        # A page that only points to another (.so) has no example of its own.
        grep -q '^\.so ' "$page" && continue
        eco_fail "$base: no example program"
        continue
    fi
    count=$((count + 1))
    # Link the built library as a user would link the installed one; the
    # sanitizer flags come along when the library was built with them.
    if ! $CC -std=c11 -Wall -Wextra -Wpedantic -Werror $SANITIZER_CFLAGS $PTHREAD_CFLAGS \
            -I"$builddir/include" -I"$srcdir/include" -o "$tmp/$base.exe" "$tmp/$base.c" \
            -L"$libs" -Wl,-rpath,"$libs" -laiometer $PTHREAD_LIBS $LIBS \
            > "$tmp/$base.cc" 2>&1; then
        eco_fail "$base: the example does not compile:"
        sed 's/^/    /' "$tmp/$base.cc"
        continue
    fi
    if run_limited "$tmp/$base.exe" > "$tmp/$base.out" 2>&1 < /dev/null; then
        echo "ok: $base"
    else
        eco_fail "$base: the example exited with status $?; its output:"
        sed 's/^/    /' "$tmp/$base.out"
    fi
done
[ "$count" -gt 0 ] || eco_fail "no example found in $srcdir/man"
echo "$count examples compiled and run"
eco_finish
