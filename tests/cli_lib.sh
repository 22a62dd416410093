# Sourced by the tests/cli_*.sh scripts, which run the built aiometer(1)
# with real commands.  Reporting is eco_lib.sh's: eco_fail says what went
# wrong and goes on, eco_finish gives the exit status.
. "$(dirname "$0")/eco_lib.sh"

AIOMETER=$builddir/cli/aiometer$EXEEXT
[ -x "$AIOMETER" ] || eco_error "$AIOMETER is not built"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cli_test.XXXXXX") || eco_error "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
# The tests write their files here, never into the build tree.
cd "$tmp" || eco_error "cd $tmp failed"

# Run aiometer with a hard limit, so that a hang fails the test instead of
# stalling it: `timeout` ends it with 124.
am() {
    timeout 60 "$AIOMETER" "$@"
}

# expect_status WANT CMD...: run CMD, compare its exit status.
expect_status() {
    want=$1
    shift
    "$@"
    got=$?
    [ "$got" -eq "$want" ] || eco_fail "$*: exit status $got, expected $want"
}

# Seconds since the epoch with nanoseconds, as a float.
now() {
    date +%s.%N
}

# Seconds since T0 (a now() figure), and whether an arithmetic condition on
# such numbers holds: awk does the floating point, so no bc is needed.
since() {
    awk -v t0="$1" -v t1="$(now)" 'BEGIN { printf "%.3f", t1 - t0 }'
}
holds() {
    awk "BEGIN { exit !($1) }"
}

# Processes whose whole command line is $1, from the process table.
procs() {
    ps -eo pid=,args= | awk -v want="$1" '{ pid = $1; sub(/^ *[0-9]+ /, "") } $0 == want { print pid }'
}
