#!/bin/sh
# Word splitting of $test_programs and $memcheck is intended (lists of
# words), and the sh -c script expands its own parameters.
# shellcheck disable=SC2086,SC2016
# rel_ci.sh - the reliability runs, each in a fresh out-of-tree build under a
# temporary directory:
#
#   vg     gcc, --enable-fault-injection:
#            rel_hostile, rel_faults, `make stress` (natively);
#            the Check suites, rel_hostile and rel_faults under valgrind
#            memcheck; the Check suites under helgrind
#   asan   gcc, --enable-sanitizers=address (ASan + UBSan + LSan),
#          --enable-fault-injection: the Check suites, rel_hostile,
#            rel_faults, rel_stress (and check_redis, with libaiometer-redis;
#            memcheck and TSan run it too)
#   tsan   gcc, --enable-sanitizers=thread: the Check suites, rel_hostile,
#            rel_stress
#   fuzz   clang, libFuzzer + ASan + UBSan: rel_fuzz for a bounded time
#
# Usage: tests/rel_ci.sh [SRCDIR [BUDGET_SECONDS]]
#   SRCDIR defaults to the tree this script is in; BUDGET_SECONDS (default
#   600, or $REL_CI_BUDGET) scales the fuzzing time and the stress runs so
#   that the whole takes about that long on a 2-core machine.  Every step
#   also has a hard time limit, so a hang fails the step instead of CI.
#
# It prints each Check summary line and one PASS or FAIL line per step
# (with the log's tail on failure), and exits non-zero if any step failed.
# The temporary directory is removed after a green run; set REL_CI_KEEP=1 to
# keep it, or REL_CI_TMP to choose where it goes.

set -u

srcdir=${1:-$(cd "$(dirname "$0")/.." && pwd)}
budget=${2:-${REL_CI_BUDGET:-600}}
srcdir=$(cd "$srcdir" && pwd) || { echo "FAIL: no source tree at $1"; exit 2; }
case $budget in
  ''|*[!0-9]*) echo "FAIL: the budget must be whole seconds, not '$budget'"; exit 2;;
esac

# What the budget buys.  The builds and the sanitizer and valgrind runs of
# the Check suites take about 4 minutes on 2 cores whatever the budget; the
# fuzzing time (a third of the budget) and the stress runs scale with it.
fuzz_time=$((budget / 3))
[ "$fuzz_time" -lt 15 ] && fuzz_time=15
[ "$fuzz_time" -gt 1800 ] && fuzz_time=1800
stress_scale=$(awk -v b="$budget" 'BEGIN { s = b / 600; if (s > 4) s = 4; if (s < 0.1) s = 0.1; print s }')
asan_stress_scale=$(awk -v s="$stress_scale" 'BEGIN { print s * 0.5 }')
tsan_stress_scale=$stress_scale

# Sanitizer reports stop the program with a failing status; they are never
# just printed.  (abort_on_error also makes a forked Check test die by a
# signal, which Check counts as an error.)
ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1
UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
TSAN_OPTIONS=halt_on_error=1:abort_on_error=1:second_deadlock_stack=1
export ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS
# Check runs every test in a child unless told otherwise.
unset CK_FORK CK_RUN_SUITE CK_RUN_CASE CK_VERBOSITY

tmp=$(mktemp -d "${REL_CI_TMP:-${TMPDIR:-/tmp}}/rel_ci.XXXXXX") || exit 2
failures=0
steps=0
t_start=$(date +%s)

say() { printf '%s\n' "$*"; }

elapsed() { echo $(($(date +%s) - $1)); }

# The lines of a log worth showing on a PASS line.
summary_of() {
    grep -E '^[0-9]+%: Checks: |^rel_[a-z]+: |^(mixed|nested|destroy|fork): |^(memcheck|helgrind|fuzz): ' "$1" \
        | sed 's/^/      /'
}

fail_step() {  # name log reason
    failures=$((failures + 1))
    say "FAIL  $1: $3"
    say "      --- last lines of $2 ---"
    tail -n 40 "$2" | sed 's/^/      | /'
}

# run_step NAME DIR LIMIT CMD...: run CMD in DIR with a hard time limit.
# If $retry_status is set and CMD exits with exactly that status, the step
# is run once more and only the second result counts (see the valgrind
# runs of the Check suites below).
retry_status=
run_step() {
    name=$1 dir=$2 limit=$3
    shift 3
    log=$tmp/$(echo "$name" | tr ' /' '__').log
    steps=$((steps + 1))
    t0=$(date +%s)
    (cd "$dir" && timeout -k 10 "$limit" "$@") > "$log" 2>&1
    rc=$?
    if [ -n "$retry_status" ] && [ "$rc" -eq "$retry_status" ]; then
        say "RETRY $name: exit status $rc; the failed checks were:"
        grep -E ':[FE]:' "$log" | sed 's/^/      | /'
        mv "$log" "$log.1"
        t0=$(date +%s)
        (cd "$dir" && timeout -k 10 "$limit" "$@") > "$log" 2>&1
        rc=$?
    fi
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        fail_step "$name" "$log" "still running after ${limit}s (a hang?)"
    elif [ "$rc" -ne 0 ]; then
        fail_step "$name" "$log" "exit status $rc after $(elapsed "$t0")s"
    else
        say "PASS  $name ($(elapsed "$t0")s)"
        summary_of "$log"
    fi
    return "$rc"
}

# build NAME CONFIGURE-ARGS...: configure and build the library and the
# test programs in $tmp/NAME.
build() {
    name=$1
    shift
    mkdir -p "$tmp/$name"
    run_step "$name: configure + build" "$tmp/$name" 900 sh -c '
        "$0"/configure -q "$@" && make -j2 >/dev/null && echo "built with: $*"' "$srcdir" "$@"
}

say "rel_ci: source $srcdir, budget ${budget}s, work in $tmp"
say "rel_ci: fuzz ${fuzz_time}s, stress scale ${stress_scale} (ASan ${asan_stress_scale}, TSan ${tsan_stress_scale})"
if [ ! -x "$srcdir/configure" ]; then
    (cd "$srcdir" && autoreconf -fi) > "$tmp/autoreconf.log" 2>&1 \
        || { fail_step autoreconf "$tmp/autoreconf.log" "autoreconf failed"; exit 1; }
fi
for tool in valgrind clang timeout; do
    command -v "$tool" > /dev/null 2>&1 || {
        say "FAIL  $tool is not installed (Debian: apt-get install valgrind clang libclang-rt-14-dev coreutils)"
        failures=$((failures + 1))
    }
done

test_programs='tests/check_aiometer tests/rel_hostile'

# libaiometer-redis's Check program, where the build has it (configure
# found hiredis): it starts its own redis-server.  Prints its name or
# nothing.
redis_program() {
    (cd "$1" && make -n tests/check_redis > /dev/null 2>&1) && echo tests/check_redis
}

# ---- vg: natively, then under valgrind ---------------------------------------
vg=$tmp/vg
if build vg --enable-fault-injection \
   && run_step "vg: build test programs" "$vg" 900 make -j2 $test_programs tests/rel_faults tests/rel_stress; then
    run_step "vg: rel_hostile" "$vg" 120 ./tests/rel_hostile
    run_step "vg: rel_faults" "$vg" 300 ./tests/rel_faults
    run_step "vg: make stress" "$vg" 900 make stress STRESS_SCALE="$stress_scale"

    memcheck="./libtool --mode=execute valgrind --tool=memcheck -q --leak-check=full
        --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect
        --error-exitcode=99 --suppressions=$srcdir/tests/rel_valgrind.supp"
    # Check forks each test unless CK_FORK=no; valgrind should see the tests
    # themselves.  Valgrind's findings exit with 99 and always fail the
    # step.  A test's own failure (exit 1) also fails it, but the suites'
    # timing limits are set for native speed, not for valgrind's 20-50x
    # slowdown, so such a step is run once more: only a failure that comes
    # back fails CI.  Tests tagged "timing" (tcase_set_tags) are left out.
    retry_status=1
    run_step "vg: memcheck Check suites" "$vg" 900 env CK_FORK=no CK_EXCLUDE_TAGS="timing native" \
        $memcheck ./tests/check_aiometer
    retry_status=
    run_step "vg: memcheck rel_hostile" "$vg" 300 $memcheck ./tests/rel_hostile
    # valgrind follows rel_faults' forked children too, so the default
    # pool's failure points are leak-checked as well.
    run_step "vg: memcheck rel_faults" "$vg" 600 $memcheck ./tests/rel_faults
    # The Redis limiter across reconnects and server restarts: no leak.
    rp=$(redis_program "$vg")
    if [ -n "$rp" ] && run_step "vg: build $rp" "$vg" 900 make -j2 "$rp"; then
        retry_status=1
        run_step "vg: memcheck $rp" "$vg" 600 env CK_FORK=no CK_EXCLUDE_TAGS=timing \
            $memcheck "./$rp"
        retry_status=
    fi

    # helgrind gates lock-order violations and misuse of the pthread API.
    # Two kinds of report are counted but do not fail the step:
    #  - races: helgrind does not model C11 atomics as synchronisation, so
    #    every result the library publishes lock-free (the claim counter,
    #    the stop flag, the amap window) looks like a race to it.  Races are
    #    the business of the TSan build.
    #  - "dubious: associated lock is not held by any thread": a signal or
    #    broadcast made after unlocking, which POSIX allows; the pool wakes
    #    its workers that way on purpose (aiometer__pool_post and
    #    relay_wakeups in src/pool.c).  When another thread happens to have
    #    taken the lock by then, the same signal reads "associated lock is
    #    not held by calling thread" (one in a CI rehearsal, from
    #    relay_wakeups): counted with them.
    hgxml=$tmp/helgrind.xml
    retry_status=1
    if run_step "vg: helgrind Check suites" "$vg" 900 env CK_FORK=no CK_EXCLUDE_TAGS="timing native" \
        ./libtool --mode=execute valgrind --tool=helgrind \
        --suppressions="$srcdir/tests/rel_helgrind.supp" \
        --xml=yes --xml-file="$hgxml" ./tests/check_aiometer; then
        # One line per error: its kind and the first line of its text.
        awk '/<error>/ { k = ""; t = "" }
             /<kind>/ { gsub(/.*<kind>|<\/kind>.*/, ""); k = $0 }
             /<text>/ && t == "" { t = $0; gsub(/.*<text>|<\/text>.*/, "", t) }
             /<\/error>/ { print k "\t" t }' "$hgxml" > "$tmp/helgrind.errors"
        races=$(grep -c '^Race' "$tmp/helgrind.errors")
        unlocked='associated lock is not held by (any|calling) thread'
        dubious=$(grep -Ec "^Misc.*$unlocked" "$tmp/helgrind.errors")
        others=$(grep -v '^Race' "$tmp/helgrind.errors" | grep -Evc "$unlocked")
        say "      helgrind: $others lock-order or pthread-misuse errors (gated); not gated: $races race reports on lock-free paths (TSan covers races), $dubious signals after unlocking"
        if [ "$others" -ne 0 ]; then
            failures=$((failures + 1))
            say "FAIL  vg: helgrind found lock-order or pthread-misuse errors:"
            grep -v '^Race' "$tmp/helgrind.errors" | grep -Ev "$unlocked" \
                | sort | uniq -c | sed 's/^/      | /'
        fi
    fi
    retry_status=
fi

# ---- asan: ASan + UBSan + LSan ---------------------------------------------------------------------
asan=$tmp/asan
if build asan --enable-sanitizers=address --enable-fault-injection \
   && run_step "asan: build test programs" "$asan" 900 make -j2 $test_programs tests/rel_faults tests/rel_stress; then
    run_step "asan: Check suites" "$asan" 600 ./tests/check_aiometer
    rp=$(redis_program "$asan")
    if [ -n "$rp" ] && run_step "asan: build $rp" "$asan" 900 make -j2 "$rp"; then
        run_step "asan: $rp" "$asan" 600 "./$rp"
    fi
    run_step "asan: rel_hostile" "$asan" 120 ./tests/rel_hostile
    run_step "asan: rel_faults (LeakSanitizer)" "$asan" 300 ./tests/rel_faults
    run_step "asan: rel_stress" "$asan" 900 env REL_STRESS_SCALE="$asan_stress_scale" ./tests/rel_stress
fi

# ---- tsan: ThreadSanitizer ---------------------------------------------------------------------------
tsan=$tmp/tsan
if build tsan --enable-sanitizers=thread \
   && run_step "tsan: build test programs" "$tsan" 900 make -j2 $test_programs tests/rel_stress; then
    # "native": tests that need the library to measure jobs at native speed.
    run_step "tsan: Check suites" "$tsan" 600 env CK_EXCLUDE_TAGS=native ./tests/check_aiometer
    rp=$(redis_program "$tsan")
    if [ -n "$rp" ] && run_step "tsan: build $rp" "$tsan" 900 make -j2 "$rp"; then
        # Its timing bounds are for native speed; TSan is 5-15x slower.
        run_step "tsan: $rp" "$tsan" 600 env CK_EXCLUDE_TAGS=timing "./$rp"
    fi
    run_step "tsan: rel_hostile" "$tsan" 120 ./tests/rel_hostile
    run_step "tsan: rel_stress" "$tsan" 900 env REL_STRESS_SCALE="$tsan_stress_scale" ./tests/rel_stress
fi

# ---- fuzz: libFuzzer ---------------------------------------------------------------------------------
# allocator_may_return_null: the fuzzer asks for absurd amap buffers
# (max_buffered = SIZE_MAX) on purpose; the library must answer ENOMEM,
# which it can only do if calloc may fail instead of ASan stopping.
fuzz=$tmp/fuzz
if build fuzz CC=clang "CFLAGS=-g -O1 -fsanitize=fuzzer-no-link" --enable-sanitizers=address \
   && run_step "fuzz: build rel_fuzz" "$fuzz" 600 make tests/rel_fuzz; then
    mkdir -p "$fuzz/corpus"
    run_step "fuzz: rel_fuzz ${fuzz_time}s" "$fuzz" $((fuzz_time + 300)) env \
        ASAN_OPTIONS="$ASAN_OPTIONS:allocator_may_return_null=1" \
        ./tests/rel_fuzz -max_total_time="$fuzz_time" -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$fuzz/" corpus \
        || find "$fuzz" -maxdepth 1 \( -name 'crash-*' -o -name 'timeout-*' -o -name 'leak-*' \
                -o -name 'oom-*' \) | sed 's/^/      artifact: /'
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" 2>/dev/null)
    say "      fuzz: ${execs:-?} executions in ${fuzz_time}s, corpus $(find "$fuzz/corpus" -type f | wc -l) inputs"
fi

total=$(elapsed "$t_start")
if [ "$failures" -eq 0 ]; then
    say "rel_ci: PASS: $steps steps in ${total}s"
    [ "${REL_CI_KEEP:-0}" = 1 ] || rm -rf "$tmp"
    exit 0
fi
say "rel_ci: FAIL: $failures of $steps steps failed (${total}s); logs in $tmp"
exit 1
