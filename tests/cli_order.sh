#!/bin/sh
# aiometer(1): -k gives input order whatever order jobs end in, and grouped
# output never interleaves two jobs' lines, even 64 KiB at a time.
. "$(dirname "$0")/cli_lib.sh"

# Sleeps in reverse: job 1 ends last.  -k: input order; without: end order.
out=$(am -j 5 -k sh -c 'sleep 0.$0; echo $0' ::: 8 6 4 2 0 | tr '\n' ' ')
[ "$out" = "8 6 4 2 0 " ] || eco_fail "-k: got '$out'"
out=$(am -j 5 sh -c 'sleep 0.$0; echo $0' ::: 8 6 4 2 0 | tr '\n' ' ')
[ "$out" = "0 2 4 6 8 " ] || eco_fail "without -k: got '$out' (expected the order of ending)"
# The jobs ran at once, not one after another: 0.8 s, not 2 s.
t0=$(now)
am -j 5 -k sh -c 'sleep 0.$0' ::: 8 6 4 2 0
t=$(since "$t0")
holds "$t < 1.5" || eco_fail "-k ran the jobs one at a time: $t s"

# Two jobs write 64 KiB each to stdout and to stderr, in small writes, at the
# same time.  Grouped, each job's lines come out in one block per stream.
writer='i=0; while [ $i -lt 1024 ]; do printf "%063d\n" $0; i=$((i + 1)); done'
am -j 2 sh -c "$writer; $writer >&2" ::: 1 2 > out 2> err
for f in out err; do
    blocks=$(uniq -c < $f | awk '{ printf "%s:%s ", $1, $2 + 0 }')
    case $blocks in
    "1024:1 1024:2 " | "1024:2 1024:1 ") ;;
    *) eco_fail "grouped $f interleaves: $blocks" ;;
    esac
done
# Over the in-memory limit: 1 MiB per job goes through a temporary file and
# still comes out whole.
big='i=0; while [ $i -lt 16384 ]; do printf "%063d\n" $0; i=$((i + 1)); done'
am -j 2 sh -c "$big" ::: 1 2 > out
blocks=$(uniq -c < out | awk '{ printf "%s:%s ", $1, $2 + 0 }')
case $blocks in
"16384:1 16384:2 " | "16384:2 16384:1 ") ;;
*) eco_fail "1 MiB per job interleaves or is lost: $blocks" ;;
esac
# -u passes output through as it comes: the same run interleaves there.
am -u -j 2 sh -c "$big" ::: 1 2 > out
[ "$(wc -l < out)" -eq 32768 ] || eco_fail "-u lost output: $(wc -l < out) lines"

# With -k, each finished job that waits for a slow first one keeps its two
# temporary files open (just over 64 KiB per stream): some 1200 descriptors
# here.  aiometer raises the soft limit to the hard one, so under a soft
# limit of 1024 no job fails with "Too many open files" (before: 130 or
# so did, exit 101).  Only where the hard limit leaves room for it.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 4096 ]; then
    bytes=$( (ulimit -Sn 1024 && seq 800 | am -k -j 150 sh -c \
        '[ $1 = 1 ] && sleep 2; head -c 65537 /dev/zero; head -c 65537 /dev/zero >&2' sh \
        2> err; echo $? > rc) | wc -c)
    rc=$(cat rc)
    [ "$rc" -eq 0 ] && [ "$bytes" -eq 52429600 ] && [ "$(wc -c < err)" -eq 52429600 ] ||
        eco_fail "-k with 800 jobs over 64 KiB, soft limit 1024: exit status $rc, $bytes bytes out, $(grep -c 'Too many open files' err) 'Too many open files'"
fi

eco_finish
