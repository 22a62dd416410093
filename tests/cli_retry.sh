#!/bin/sh
# aiometer(1) --retries: a failed job is tried again with the library's
# backoff.  The job is a command that fails until it has run three times,
# counting its runs in a file per argument.
. "$(dirname "$0")/cli_lib.sh"

# flaky ARG: fails on its first two runs for ARG, succeeds on the third.
cat > flaky <<'EOF'
#!/bin/sh
n=$(cat "count.$1" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "count.$1"
echo "$1 try $n"
echo "$1 err $n" >&2
[ "$n" -ge 3 ]
EOF
chmod +x flaky
args="a b c d e f g h"

# runs ARG: how many times flaky ran for ARG.
runs() {
    cat "count.$1" 2>/dev/null || echo 0
}

# Two retries are enough: every job ran 3 times, exit 0, and only the
# output of the attempt that succeeded is written.
am -j 8 --retries 2 --retry-delay 0.2 --retry-max-delay 0.3 --joblog log ./flaky ::: $args \
    > out 2> err
rc=$?
[ "$rc" -eq 0 ] || eco_fail "--retries 2: exit status $rc, expected 0: $(cat err)"
for a in $args; do
    [ "$(runs "$a")" -eq 3 ] || eco_fail "--retries 2: '$a' ran $(runs "$a") times, not 3"
done
[ "$(sort out | tr '\n' ' ')" = "a try 3 b try 3 c try 3 d try 3 e try 3 f try 3 g try 3 h try 3 " ] ||
    eco_fail "--retries 2: the output is not the last attempts' only: $(cat out)"
[ "$(grep -c ' err 3$' err)" -eq 8 ] && [ "$(wc -l < err)" -eq 8 ] ||
    eco_fail "--retries 2: standard error is not the last attempts' only: $(cat err)"

# The joblog has one line per attempt, in the order they ran: exit values
# 1, 1, 0 for each job.  Between an attempt's end and the next one's start
# lies the backoff: at most retry_delay * 2^k capped by --retry-max-delay
# (0.2 s, then 0.3 s; with a margin for a loaded machine), and uniformly
# random below that, so the 16 waits sum to about 2 s and surely to more
# than 0.6 s (a run without any backoff would show about 0).
awk -F '\t' '
    NR == 1 { next }
    {
        n[$1]++
        if ($4 != (n[$1] < 3 ? 1 : 0)) { print "job " $1 " attempt " n[$1] ": exit " $4; bad = 1 }
        if (n[$1] > 1) {
            wait = $2 - end[$1]
            cap = n[$1] == 2 ? 0.2 : 0.3
            if (wait < -0.001 || wait > cap + 0.25) {
                printf "job %s attempt %d: backoff %.3f s, not in [0, %.1f]\n", $1, n[$1], wait, cap
                bad = 1
            }
            total += wait
        }
        end[$1] = $2 + $3
    }
    END {
        for (j in n) { jobs++; if (n[j] != 3) { print "job " j ": " n[j] " lines"; bad = 1 } }
        if (jobs != 8) { print jobs " jobs in the joblog"; bad = 1 }
        printf "16 backoffs: %.3f s in total (expected about 2)\n", total
        if (total < 0.6) { print "the backoffs are missing"; bad = 1 }
        exit bad
    }' log || eco_fail "--retries 2: the joblog: $(cat log)"

# One retry is not enough: each job ran twice, failed, and counts in the
# exit status; the last joblog line of each says it failed.
rm -f count.*
am -j 8 --retries 1 --retry-delay 0.01 --joblog log ./flaky ::: a b c > /dev/null 2>&1
rc=$?
[ "$rc" -eq 3 ] || eco_fail "--retries 1: exit status $rc, expected 3 failed jobs"
for a in a b c; do
    [ "$(runs "$a")" -eq 2 ] || eco_fail "--retries 1: '$a' ran $(runs "$a") times, not 2"
done
[ "$(awk -F '\t' 'NR > 1 && $4 == 1' log | wc -l)" -eq 6 ] ||
    eco_fail "--retries 1: the joblog: $(cat log)"

# No --retries (and --retries 0): a job runs once.
rm -f count.*
am --retries 0 ./flaky ::: a > /dev/null 2>&1
rc=$?
[ "$rc" -eq 1 ] || eco_fail "--retries 0: exit status $rc, expected 1"
[ "$(runs a)" -eq 1 ] || eco_fail "--retries 0: 'a' ran $(runs a) times"

# --halt soon: a job with an attempt left is not a failure yet, so the
# next job still starts; both succeed in the end.
rm -f count.*
am -j 1 --halt soon --retries 2 --retry-delay 0.01 ./flaky ::: a b > /dev/null 2>&1
rc=$?
[ "$rc" -eq 0 ] || eco_fail "--halt soon --retries 2: exit status $rc, expected 0"
[ "$(runs a)$(runs b)" = 33 ] || eco_fail "--halt soon --retries 2: ran $(runs a) and $(runs b) times"
# ... but a job out of attempts is one: nothing starts after it ends.
# (While one job backs off, the next may start its first attempt: a backoff
# holds no slot.)  Every job that started counts, as it failed.
am -j 1 --halt soon --retries 1 --retry-delay 0.01 --joblog log \
    sh -c 'exit 1' ::: a b c d e f > /dev/null 2>&1
rc=$?
awk -F '\t' -v rc="$rc" '
    NR == 1 { next }
    { line[NR] = $0; start[NR] = $2; seq[NR] = $1; last[$1] = NR; if (!($1 in n)) jobs++; n[$1]++ }
    END {
        halt = -1
        for (s in last) {
            i = last[s]
            if (n[s] == 2 && (halt < 0 || start[i] < halt)) { halt = start[i]; end = i }
        }
        if (halt < 0) { print "no job used up its attempts"; exit 1 }
        for (i = 2; i <= NR; i++)
            if (start[i] > start[end]) { print "started after the halt: " line[i]; bad = 1 }
        if (rc != jobs) { print "exit status " rc ", but " jobs " jobs started"; bad = 1 }
        # Which job runs out first is up to the random backoffs (the last
        # job may well be the one), but once one has, the others get no
        # second attempt: not every job can have run twice.
        for (s in n) if (n[s] == 2) twice++
        if (jobs == 6 && twice == 6) { print "every job ran to its end"; bad = 1 }
        exit bad
    }' log || eco_fail "--halt soon --retries 1: $(cat log)"

# An attempt killed by --timeout is tried again.
rm -f count.*
am --timeout 0.3 --retries 1 --retry-delay 0.01 --joblog log \
    sh -c 'n=$(cat count.$0 2>/dev/null || echo 0); echo $((n + 1)) > count.$0; [ $n -ge 1 ] || sleep 10' \
    ::: t > /dev/null 2>&1
rc=$?
[ "$rc" -eq 0 ] || eco_fail "--timeout with --retries: exit status $rc, expected 0"
[ "$(awk -F '\t' 'NR > 1 { printf "%s/%s ", $4, $5 }' log)" = "0/15 0/0 " ] ||
    eco_fail "--timeout with --retries: the joblog: $(cat log)"

# The deadline ends a backoff at once (here up to 30 s long): the job ends
# with its last attempt, which failed, and counts.
t0=$(now)
am --deadline 1 --retries 5 --retry-delay 30 --retry-max-delay 30 --joblog log \
    sh -c 'exit 3' ::: x > /dev/null 2>&1
rc=$?
took=$(since "$t0")
[ "$rc" -eq 1 ] || eco_fail "--deadline during a backoff: exit status $rc, expected 1"
holds "$took < 3" || eco_fail "--deadline 1 during a backoff: took $took s"
awk -F '\t' 'NR > 1 && $4 != 3 { bad = 1 } END { exit bad || NR < 2 }' log ||
    eco_fail "--deadline during a backoff: the joblog: $(cat log)"

# -k and a run cut short while job 1 waits to be tried again (its backoff
# is up to 100 s): the jobs that finished behind it, 2 and 3, succeeded and
# are still written, with their joblog lines, in input order.  The library
# never hands back a job whose backoff was cut short, which with -k left a
# gap that held back (and lost) everything after it.  (In 1 % of the runs
# the backoff is under 1 s, job 1 fails a second time, and the check holds
# all the same.)
am -k --retries 1 --retry-delay 100 --retry-max-delay 100 --deadline 1 --joblog log \
    sh -c 'echo out $1; [ $1 != 1 ]' sh ::: 1 2 3 > out 2> /dev/null
rc=$?
[ "$rc" -eq 1 ] || eco_fail "-k, --deadline during a backoff: exit status $rc, expected 1"
[ "$(tr '\n' ' ' < out)" = "out 1 out 2 out 3 " ] ||
    eco_fail "-k, --deadline during a backoff: the output: '$(tr '\n' ' ' < out)'"
[ "$(awk -F '\t' 'NR > 1 { printf "%s/%s ", $1, $4 }' log)" = "1/1 2/0 3/0 " ] ||
    eco_fail "-k, --deadline during a backoff: the joblog: $(cat log)"
# The same cut short by SIGINT (aiometer without `timeout` in front, to
# signal it; a watchdog bounds the wait).
"$AIOMETER" -k --retries 1 --retry-delay 100 --retry-max-delay 100 --joblog log \
    sh -c 'echo out $1; [ $1 != 1 ]' sh ::: 1 2 3 > out 2> /dev/null &
pid=$!
(sleep 20 && kill -9 $pid 2>/dev/null) &
dog=$!
sleep 1
kill -INT $pid
wait $pid
rc=$?
kill $dog 2>/dev/null
[ "$rc" -eq 130 ] || eco_fail "-k, SIGINT during a backoff: exit status $rc, expected 130"
[ "$(tr '\n' ' ' < out)" = "out 1 out 2 out 3 " ] ||
    eco_fail "-k, SIGINT during a backoff: the output: '$(tr '\n' ' ' < out)'"
[ "$(awk -F '\t' 'NR > 1 { printf "%s/%s ", $1, $4 }' log)" = "1/1 2/0 3/0 " ] ||
    eco_fail "-k, SIGINT during a backoff: the joblog: $(cat log)"

# -k and --halt now: ten jobs that always fail, with 5 retries.  The first
# to use up its attempts halts the run while others wait out backoffs.  It
# and every other job are written, in input order, each with as many
# joblog lines as it ran attempts.  (Before, 9 runs in 10 lost the halting
# job: a job in backoff ahead of it in the input held it back.)  A job
# ignores the SIGTERM of the halt, to end its attempt with its output; one
# killed before that is still in the joblog, with signal 15 and no output.
am -k -j 10 --halt now --retries 5 --retry-delay 0.05 --retry-max-delay 0.05 --joblog log \
    sh -c 'trap "" TERM; echo out $1; exit 1' sh ::: 0 1 2 3 4 5 6 7 8 9 > out 2> /dev/null
rc=$?
[ "$rc" -eq 10 ] || eco_fail "-k, --halt now during backoffs: exit status $rc, expected 10"
want=$(awk -F '\t' 'NR > 1 { last[$1] = $4 } END { for (j = 1; j <= 10; j++) if (last[j] == 1) printf "out %d ", j - 1 }' log)
[ "$(tr '\n' ' ' < out)" = "$want" ] ||
    eco_fail "-k, --halt now during backoffs: the output: '$(tr '\n' ' ' < out)', expected '$want'"
awk -F '\t' '
    NR > 1 { n[$1]++ }
    END {
        for (j = 1; j <= 10; j++) { if (!(j in n)) { print "job " j " is not in the joblog"; bad = 1 } }
        for (j in n) if (n[j] == 6) halted = 1
        if (!halted) { print "no job with 6 attempts in the joblog"; bad = 1 }
        exit bad
    }' log || eco_fail "-k, --halt now during backoffs: the joblog: $(cat log)"

# -k and jobs stopped while waiting to retry: written in input order, not
# in the order they began to wait (3, 2, 1 here: the sleeps run in reverse).
# The output comes before the sleep, so that a second attempt (a backoff
# under a second, rare) killed by the deadline still has it.
am -k -j 3 --retries 1 --retry-delay 100 --retry-max-delay 100 --deadline 1 \
    sh -c 'echo out $1; sleep 0.$1; exit 1' sh ::: 3 2 1 > out 2> /dev/null
rc=$?
[ "$rc" -eq 3 ] || eco_fail "-k, jobs in backoff at the deadline: exit status $rc, expected 3"
[ "$(tr '\n' ' ' < out)" = "out 3 out 2 out 1 " ] ||
    eco_fail "-k, jobs in backoff at the deadline: not in input order: '$(tr '\n' ' ' < out)'"

# A tiny delay is a delay above 0, though strtod says ERANGE for it (an
# underflow): the job runs twice.  (Before: refused as "too large".)
rm -f count.*
am --retries 1 --retry-delay 1e-320 ./flaky ::: a > /dev/null 2> err
rc=$?
[ "$rc" -eq 1 ] && [ "$(runs a)" -eq 2 ] ||
    eco_fail "--retry-delay 1e-320: exit status $rc, ran $(runs a) times: $(cat err)"
msg=$(am --deadline 1e400 true 2>&1)
case $msg in
*"too large"*) ;;
*) eco_fail "--deadline 1e400: '$msg', expected 'too large'" ;;
esac

# Bad values: 255, a message naming the option, and no job started.
for bad in "--retries -1" "--retries x" "--retries 1001" "--retry-delay 1" \
           "--retries 1 --retry-delay 0" "--retries 1 --retry-max-delay nan" \
           "--retries 1 --retry-delay 2 --retry-max-delay 1" "--retries 1 --retry-delay 40"; do
    # shellcheck disable=SC2086
    msg=$(am $bad touch ran ::: 1 2>&1 >/dev/null)
    rc=$?
    [ "$rc" -eq 255 ] || eco_fail "'$bad': exit status $rc, expected 255"
    case $msg in
    *--retr*) ;;
    *) eco_fail "'$bad': the message does not name the option: '$msg'" ;;
    esac
    [ -e ran ] && { eco_fail "'$bad': a job ran"; rm -f ran; }
done

eco_finish
