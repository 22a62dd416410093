#!/bin/sh
# rss.sh - cross-check W4's peak RSS figures with GNU time, outside the
# benchmark: each case runs as its own process under /usr/bin/time -v.
#
#   bench/rss.sh [BENCH_BINARY]        (default: bench/bench)
#
# BENCH_W4_N changes the number of jobs (default 10,000,000).
set -eu
bin=${1:-bench/bench}
[ -x "$bin" ] || { echo "rss.sh: $bin not found; run 'make bench/bench' first" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "rss.sh: /usr/bin/time (GNU time) is needed" >&2; exit 1; }
for case in serial source amap glib; do
    out=$(/usr/bin/time -v "$bin" --w4-child "$case" 2>&1) || {
        echo "$case: failed: $out" >&2
        continue
    }
    kib=$(printf '%s\n' "$out" | sed -n 's/.*Maximum resident set size (kbytes): *//p')
    hwm=$(printf '%s\n' "$out" | sed -n 's/^hwm0_kib=[0-9-]* hwm_kib=\([0-9-]*\).*/\1/p')
    printf '%-7s time -v max RSS %8s KiB   own VmHWM %8s KiB\n' "$case" "$kib" "$hwm"
done
