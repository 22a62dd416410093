# Sourced by the tests/eco_*.sh scripts: loads what make wrote down in
# tests/eco_env.sh and gives the scripts one way to report.  Exit codes are
# the test driver's: 0 pass, 1 fail, 77 skip, 99 hard error.

eco_env=${ECO_ENV:-./tests/eco_env.sh}
if [ ! -f "$eco_env" ]; then
    echo "ERROR: $eco_env is missing; run the test from the build directory" \
         "after 'make check' (or 'make tests/eco_env.sh') has made it"
    exit 99
fi
. "$eco_env"
srcdir=$abs_top_srcdir
builddir=$abs_top_builddir

eco_failures=0

# A failed check: say what and go on, so one run reports every problem.
eco_fail() {
    echo "FAIL: $*"
    eco_failures=$((eco_failures + 1))
}

eco_skip() {
    echo "SKIP: $*"
    exit 77
}

eco_error() {
    echo "ERROR: $*"
    exit 99
}

eco_finish() {
    if [ "$eco_failures" -ne 0 ]; then
        echo "$eco_failures check(s) failed"
        exit 1
    fi
    echo "all checks passed"
    exit 0
}

# The documented API, one name a line, from tests/eco_symbols.txt.
eco_api() {
    grep -v '^#' "$srcdir/tests/eco_symbols.txt" | grep -v '^[[:space:]]*$'
}

# The functions the header declares with AIOMETER_API: the name is on the
# line that starts with the macro.
eco_header_api() {
    sed -n 's/^AIOMETER_API[^(]*[ *]\(aiometer_[a-z0-9_]*\)(.*/\1/p' \
        "$srcdir/include/aiometer.h.in" | sort
}

# The built shared library, if libtool built one.
eco_shared_lib() {
    for f in "$builddir/src/.libs/libaiometer.so" "$builddir/src/.libs/libaiometer.dylib"; do
        if [ -f "$f" ]; then
            echo "$f"
            return 0
        fi
    done
    return 1
}

# configure's NM may carry options ("nm -B"): split it into words.
eco_have_nm() {
    set -- $NM
    command -v "$1" >/dev/null 2>&1
}

eco_nm() {
    $NM "$@"
}

# Names of the defined, global dynamic symbols of a shared object.  The
# linker may add a few of its own (_init, _fini, and with old binutils
# _edata, _end, __bss_start), which are no part of the API.
eco_dynamic_symbols() {
    eco_nm -D --defined-only "$1" | awk 'NF >= 3 && $2 ~ /^[A-Z]$/ { print $3 }' |
        sed 's/@.*//' |
        grep -v -x -e _init -e _fini -e _edata -e _end -e __bss_start |
        sort -u
}
