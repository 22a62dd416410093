#!/bin/sh
# aiometer(1) --limiter NAME: two invocations naming the same limiter at 10
# per second together start 10 jobs per second, not 20: 40 starts between
# them span 3.9 s.
. "$(dirname "$0")/cli_lib.sh"

# The shared state outlives the invocations (that is its point); remove it
# with the temporary directory, whatever way the test ends.
name=aiometer-cli-test-$$
trap 'rm -rf "$tmp"; rm -f "/dev/shm/aiometer.$name"' EXIT
am --limiter "$name" -r 10 -j 4 date "+%s.%N {}" ::: $(seq 20) > a 2> a.err &
pa=$!
am --limiter "$name" -r 10 -j 4 date "+%s.%N {}" ::: $(seq 20) > b 2> b.err &
pb=$!
wait $pa
ra=$?
wait $pb
rb=$?
[ "$ra" -eq 0 ] || eco_fail "first invocation: exit status $ra: $(cat a.err)"
[ "$rb" -eq 0 ] || eco_fail "second invocation: exit status $rb: $(cat b.err)"
sort -n a b > sorted
n=$(wc -l < sorted)
[ "$n" -eq 40 ] || eco_fail "40 jobs, $n starts"
if [ "$n" -ge 2 ]; then
    span=$(awk 'NR == 1 { first = $1 } { last = $1 } END { printf "%.3f", last - first }' sorted)
    echo "40 jobs of two invocations sharing 10/s: span $span s (ideal 3.9)"
    holds "$span >= 3.6 && $span <= 4.2" ||
        eco_fail "two invocations sharing 10/s spanned $span s, not 3.9 +- 0.3"
fi

eco_finish
