#!/bin/sh
# aiometer(1): -r: 40 jobs at 20 per second start over 39/20 = 1.95 s.  Each
# job is `date`, executed directly (the argument is in its format, so
# that it is not appended as an operand), so it prints when it really started.
. "$(dirname "$0")/cli_lib.sh"

t0=$(now)
am -j 8 -r 20 date "+%s.%N {}" ::: $(seq 40) > starts
t=$(since "$t0")
sort -n starts > sorted
[ "$(wc -l < sorted)" -eq 40 ] || eco_fail "40 jobs, $(wc -l < sorted) starts"
span=$(awk 'NR == 1 { first = $1 } { last = $1 } END { printf "%.3f", last - first }' sorted)
echo "40 jobs at -r 20: starts span $span s (ideal 1.950), wall $t s"
holds "$span >= 1.80 && $span <= 2.10" ||
    eco_fail "40 starts at 20/s spanned $span s, not 1.95 +- 0.15"
# No two starts closer than the interval allows (burst 1), with slack for
# the scheduler: at least 25 ms apart.
awk 'NR > 1 && $1 - prev < 0.025 { printf "starts %.4f s apart\n", $1 - prev; bad = 1 }
     { prev = $1 } END { exit bad }' sorted || eco_fail "starts closer than 1/20 s"
holds "$t < 3.5" || eco_fail "the run took $t s"

# --burst 10: the first ten start at once, then the other 20 one every
# 1/20 s after the first, the last at 20/20 = 1.00 s.
am -j 16 -r 20 --burst 10 date "+%s.%N {}" ::: $(seq 30) | sort -n > sorted
span=$(awk 'NR == 1 { first = $1 } { last = $1 } END { printf "%.3f", last - first }' sorted)
echo "30 jobs at -r 20 --burst 10: span $span s (ideal 1.00)"
holds "$span >= 0.85 && $span <= 1.15" ||
    eco_fail "30 starts at 20/s with burst 10 spanned $span s, not 1.00 +- 0.15"

eco_finish
