#!/bin/sh
# The aiometer(1) benchmark (bench/README, "aiometer(1)"): wall time of
# aiometer against xargs -P and GNU parallel on the same jobs, alternating,
# and the accuracy of -r.
#
#   sh bench/cli.sh [AIOMETER]      BENCH_REPS repetitions (default 5)
#
# Each repetition runs the three commands once, in an order that rotates
# from one repetition to the next; the figures are medians [min..max].
set -u
AIOMETER=${1:-${AIOMETER:-cli/aiometer}}
REPS=${BENCH_REPS:-5}
J=8
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cli_bench.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

have_parallel=no
if command -v parallel >/dev/null 2>&1 && parallel --version 2>/dev/null | grep -q GNU; then
    have_parallel=yes
fi

now_ns() { date +%s%N; }

# median_of FILE: "median [min..max]" of the numbers in FILE, one a line.
median_of() {
    sort -g "$1" | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.3f [%.3f..%.3f]", m, v[1], v[NR] }'
}
median() {
    sort -g "$1" | awk '{ v[NR] = $1 } END {
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m }'
}

# run_one TOOL N LINE JOB...: one timed run of N jobs, each input line LINE
# (appended to JOB by all three tools); appends seconds to $tmp/TOOL.
run_one() {
    tool=$1 count=$2 line=$3
    shift 3
    yes "$line" | head -n "$count" > "$tmp/in"
    t0=$(now_ns)
    case $tool in
    aiometer) "$AIOMETER" -j $J "$@" < "$tmp/in" > /dev/null ;;
    xargs) xargs -P $J -n 1 "$@" < "$tmp/in" > /dev/null ;;
    parallel) parallel --will-cite -j $J "$@" < "$tmp/in" > /dev/null ;;
    esac
    rc=$?
    t1=$(now_ns)
    [ $rc -eq 0 ] || { echo "bench: $tool $* failed ($rc)" >&2; exit 1; }
    echo "$t0 $t1" | awk '{ printf "%.6f\n", ($2 - $1) / 1e9 }' >> "$tmp/$tool"
}

# wall N LINE JOB...: the three tools, REPS times, alternating.
wall() {
    n=$1 arg=$2
    shift 2
    tools="aiometer xargs"
    [ $have_parallel = yes ] && tools="$tools parallel"
    rm -f "$tmp/aiometer" "$tmp/xargs" "$tmp/parallel"
    run_one aiometer 100 "$arg" "$@"   # warm-up: caches, the library, the binary
    rm -f "$tmp/aiometer"
    r=0
    while [ $r -lt "$REPS" ]; do
        case $((r % 3)) in
        0) order=$tools ;;
        1) order=$(echo $tools | awk '{ for (i = 2; i <= NF; i++) printf "%s ", $i; print $1 }') ;;
        2) order=$(echo $tools | awk '{ printf "%s ", $NF; for (i = 1; i < NF; i++) printf "%s ", $i; print "" }') ;;
        esac
        for tool in $order; do
            run_one "$tool" "$n" "$arg" "$@"
        done
        r=$((r + 1))
    done
    printf '%-24s %s\n' "aiometer -j $J" "$(median_of "$tmp/aiometer") s"
    printf '%-24s %s\n' "xargs -P $J" "$(median_of "$tmp/xargs") s"
    if [ $have_parallel = yes ]; then
        printf '%-24s %s\n' "parallel -j $J" "$(median_of "$tmp/parallel") s"
    else
        printf '%-24s %s\n' "parallel -j $J" "not installed"
    fi
    a=$(median "$tmp/aiometer")
    x=$(median "$tmp/xargs")
    echo "aiometer / xargs         $(echo "$a $x" | awk '{ printf "%.2f", $1 / $2 }')x"
    if [ $have_parallel = yes ]; then
        p=$(median "$tmp/parallel")
        echo "parallel / aiometer      $(echo "$a $p" | awk '{ printf "%.1f", $2 / $1 }')x faster"
    fi
}

echo "aiometer(1) benchmark: $REPS repetitions, medians [min..max]"
echo
echo "true x 5,000 at -j $J (wall time)"
wall 5000 x true
echo
echo "sleep 0.01 x 1,000 (each input line 0.01) at -j $J (wall time; ideal 1000 / $J x 10 ms = 1.25 s)"
wall 1000 0.01 sleep
echo

# Rate accuracy: 1,000 jobs at -r 100.  Two clocks: the start aiometer
# records just before it spawns (--joblog, microseconds) and the time the
# command itself prints once running (`date`, executed directly).  Starts
# sorted, t0 the first, start k compared with t0 + k / 100.
rate_stats() {
    sort -g "$1" > "$tmp/sorted"
    span=$(awk -v rate=100 'NR == 1 { t0 = $1 } { last = $1 } END {
        ideal = (NR - 1) / rate
        printf "span error %.3f ms (%.4f %%)", (last - t0 - ideal) * 1000,
            (last - t0 - ideal) / ideal * 100 }' "$tmp/sorted")
    awk -v rate=100 'NR == 1 { t0 = $1 } { printf "%.6f\n", ($1 - t0 - (NR - 1) / rate) * 1000 }' \
        "$tmp/sorted" | sort -g > "$tmp/late"
    late=$(awk '{ v[NR] = $1 } END {
        p99 = int(0.99 * NR); if (p99 < 0.99 * NR) p99++
        printf "lateness p50 %.3f ms, p99 %.3f ms, max %.3f ms", v[int((NR + 1) / 2)], v[p99], v[NR] }' \
        "$tmp/late")
    echo "$span, $late"
}
echo "rate accuracy: 1,000 jobs at -r 100, -j $J"
r=0
while [ $r -lt "$REPS" ] && [ $r -lt 3 ]; do
    seq 1000 | "$AIOMETER" -j $J -r 100 --joblog "$tmp/log" date "+%s.%N {}" > "$tmp/dates"
    awk -F '\t' 'NR > 1 { print $2 }' "$tmp/log" > "$tmp/starts"
    echo "  run $((r + 1)), aiometer's starts: $(rate_stats "$tmp/starts")"
    echo "  run $((r + 1)), commands' starts:  $(rate_stats "$tmp/dates")"
    r=$((r + 1))
done
