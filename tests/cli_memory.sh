#!/bin/sh
# aiometer(1) reads its input lazily: a million input lines keep its peak RSS
# under 16 MiB.  Spawning a million `true`s would take many minutes on a
# small machine, so the million lines go through --dry-run, which takes each
# line through the whole path (the library's lazy source, a job on the pool,
# the command line built, the output grouped and written) except the spawn;
# then 2,000 real `true` jobs check the spawning path's memory.  -k (the
# ordered amap, which holds finished jobs for their predecessors) so that
# the last line is the millionth.
. "$(dirname "$0")/cli_lib.sh"

[ -x /usr/bin/time ] || eco_error "/usr/bin/time (Debian package time) is needed"

# Peak RSS in KiB of aiometer with standard input from a file.
seq 1000000 > million
/usr/bin/time -f %M -o rss timeout 120 "$AIOMETER" -k --dry-run true < million > out
rc=$?
[ "$rc" -eq 0 ] || eco_fail "--dry-run of 1e6 lines: exit status $rc"
lines=$(wc -l < out)
[ "$lines" -eq 1000000 ] || eco_fail "--dry-run of 1e6 lines printed $lines lines"
awk '$0 != "true " NR { print "line " NR ": " $0; exit 1 }' out ||
    eco_fail "-k --dry-run of 1e6 lines: not every line in input order"
kb=$(tail -n 1 rss)
echo "1e6 input lines (--dry-run): peak RSS $kb KiB"
[ "$kb" -lt 16384 ] || eco_fail "1e6 input lines: peak RSS $kb KiB, limit 16384"

seq 2000 > lines
/usr/bin/time -f %M -o rss timeout 120 "$AIOMETER" -j 8 true < lines
rc=$?
[ "$rc" -eq 0 ] || eco_fail "2,000 true jobs: exit status $rc"
kb=$(tail -n 1 rss)
echo "2,000 true jobs: peak RSS $kb KiB"
[ "$kb" -lt 16384 ] || eco_fail "2,000 true jobs: peak RSS $kb KiB, limit 16384"

eco_finish
