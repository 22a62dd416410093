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
# Evenly spaced (burst 1), not in bunches: the median gap is 1/20 s, and any
# ten starts in a row span 9/20 s.  The starts are the commands' own, after
# spawn and exec, so a loaded machine can make a single gap short (one start
# late, the next on time), and a stall of the whole machine makes a run of
# them late: ten starts once spanned 0.19 s at load 5 on 2 cores (a bunch
# of five late ones, then the rest on time).  The tolerances allow for that,
# not for bunching, where ten starts span next to nothing.
awk 'NR > 1 { print $1 - prev } { prev = $1 }' sorted | sort -g |
    awk '{ g[NR] = $1 } END { m = g[int((NR + 1) / 2)]; printf "median gap %.4f s\n", m
                             exit !(m > 0.045 && m < 0.055) }' ||
    eco_fail "the median gap between starts is not 1/20 s"
awk '{ s[NR] = $1 } END { for (i = 10; i <= NR; i++) if (s[i] - s[i - 9] < 0.15) {
         printf "starts %d..%d span %.3f s\n", i - 9, i, s[i] - s[i - 9]; bad = 1 }
     exit bad }' sorted || eco_fail "ten starts in a row within less than 0.15 s (ideal 0.45)"
holds "$t < 3.5" || eco_fail "the run took $t s"

# --burst 10: the first ten start at once, then the other 20 one every
# 1/20 s after the first, the last at 20/20 = 1.00 s.
am -j 16 -r 20 --burst 10 date "+%s.%N {}" ::: $(seq 30) | sort -n > sorted
span=$(awk 'NR == 1 { first = $1 } { last = $1 } END { printf "%.3f", last - first }' sorted)
echo "30 jobs at -r 20 --burst 10: span $span s (ideal 1.00)"
holds "$span >= 0.85 && $span <= 1.15" ||
    eco_fail "30 starts at 20/s with burst 10 spanned $span s, not 1.00 +- 0.15"

eco_finish
