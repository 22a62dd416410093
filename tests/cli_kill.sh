#!/bin/sh
# aiometer(1) kills what it started and leaves nothing behind: --timeout,
# --halt now, --deadline, SIGINT and SIGTERM.  Each job is a shell with a
# child of its own; the sleeps carry a marker unique to this run, so the
# process table tells whether any of them is left.
. "$(dirname "$0")/cli_lib.sh"

m=$$
job="sleep 100.$m & sleep 100.$m; : {}"

# wait_for PATTERN N: until N processes match (at most 10 s).
wait_for() {
    i=0
    while [ "$(procs "$1" | wc -l)" -lt "$2" ] && [ $i -lt 200 ]; do
        sleep 0.05
        i=$((i + 1))
    done
}

# nothing_left WHAT: no process of this run is in the process table.
nothing_left() {
    sleep 0.1
    left=$(procs "sleep 100.$m")
    if [ -n "$left" ]; then
        eco_fail "$1 left processes behind: $left"
        procs "sleep 100.$m" | xargs -r kill -9
    fi
}

# A run started without `timeout` in front gets a watchdog: SIGKILL after
# 20 s, so that a hang fails the test instead of stalling it.
watchdog() {
    (sleep 20 && kill -9 "$1" 2>/dev/null) &
    dog=$!
}

elapsed_below() { # t0 limit what
    t=$(since "$1")
    holds "$t < $2" || eco_fail "$3 took $t s (limit $2)"
}

# --timeout: SIGTERM to the job's process group reaches the shell and its
# child; each killed job is a failure.
t0=$(now)
expect_status 2 am --timeout 0.5 --shell "$job" ::: 1 2
elapsed_below "$t0" 1.4 "--timeout 0.5"
nothing_left "--timeout"

# A job that ignores SIGTERM gets SIGKILL one second later.
t0=$(now)
expect_status 1 am --timeout 0.3 --shell "trap '' TERM; $job" ::: 1
t=$(since "$t0")
holds "$t >= 1.2 && $t < 2.5" ||
    eco_fail "a job ignoring SIGTERM was killed after $t s, not 0.3 + 1"
nothing_left "--timeout with SIGTERM ignored"

# --halt now: the first failure kills the running jobs; later ones never start.
# The failing job waits a moment first, so that the other two have started.
t0=$(now)
expect_status 3 am -j 3 --halt now --shell "[ {} = f ] && sleep 0.5 && exit 1; $job" ::: a f b c d e
elapsed_below "$t0" 2.0 "--halt now"
nothing_left "--halt now"

# --deadline: the running jobs are killed and count as failed.
t0=$(now)
expect_status 2 am -j 2 --deadline 0.5 --shell "$job" ::: 1 2 3 4 2>/dev/null
elapsed_below "$t0" 1.5 "--deadline 0.5"
nothing_left "--deadline"

# SIGINT: start nothing more, kill every running job's group, exit 130.
# aiometer runs without `timeout` in front here, to get its own pid; the
# waits are bounded by the job's sleeps and by wait_for.
"$AIOMETER" -j 4 --shell "$job" ::: 1 2 3 4 5 6 7 8 > /dev/null &
pid=$!
watchdog $pid
wait_for "sleep 100.$m" 8
[ "$(procs "sleep 100.$m" | wc -l)" -eq 8 ] || eco_fail "SIGINT: 4 jobs did not start"
t0=$(now)
kill -INT $pid
wait $pid
rc=$?
kill $dog 2>/dev/null
[ "$rc" -eq 130 ] || eco_fail "SIGINT: exit status $rc, expected 130"
elapsed_below "$t0" 1.0 "SIGINT"
nothing_left "SIGINT"

# SIGTERM: the same, exit 255.  Jobs ignore SIGTERM here, so a second SIGINT
# is what kills them at once, without the one-second grace.
"$AIOMETER" -j 2 --shell "trap '' TERM; $job" ::: 1 2 3 > /dev/null &
pid=$!
watchdog $pid
wait_for "sleep 100.$m" 4
kill -TERM $pid
sleep 0.2
t0=$(now)
kill -INT $pid
wait $pid
rc=$?
kill $dog 2>/dev/null
[ "$rc" -eq 255 ] || eco_fail "SIGTERM: exit status $rc, expected 255"
elapsed_below "$t0" 0.6 "a second signal's SIGKILL"
nothing_left "SIGTERM then SIGINT"

# SIGHUP and SIGQUIT: as SIGTERM, exit 255.  The jobs are in process groups
# of their own, where a hangup never reaches them; aiometer used to die of
# it at once (129, 131) and leave them running.
stop_like_term() { # SIGNAL
    "$AIOMETER" -j 2 --shell "$job" ::: 1 2 3 > /dev/null &
    pid=$!
    watchdog $pid
    wait_for "sleep 100.$m" 4
    [ "$(procs "sleep 100.$m" | wc -l)" -eq 4 ] || eco_fail "SIG$1: 2 jobs did not start"
    t0=$(now)
    kill -"$1" $pid
    wait $pid
    rc=$?
    kill $dog 2>/dev/null
    [ "$rc" -eq 255 ] || eco_fail "SIG$1: exit status $rc, expected 255"
    elapsed_below "$t0" 1.0 "SIG$1"
    nothing_left "SIG$1"
}
stop_like_term HUP
stop_like_term QUIT

# A SIGHUP ignored when aiometer starts (nohup) stays ignored: the run goes
# on to its end.
(trap '' HUP && exec "$AIOMETER" -j 2 sh -c 'sleep 0.6; echo $0' ::: 1 2 > out) &
pid=$!
watchdog $pid
sleep 0.3
kill -HUP $pid
wait $pid
rc=$?
kill $dog 2>/dev/null
[ "$rc" -eq 0 ] && [ "$(sort out | tr '\n' ' ')" = "1 2 " ] ||
    eco_fail "SIGHUP ignored at the start: status $rc, output '$(cat out)'"

# A stop while aiometer waits for input: no job runs, so it exits at once,
# not when the next line or the end of the input comes.  The input is a
# FIFO whose writer sends one line and then holds it open for 4 s (the
# time a version that waits for the input takes); the limit is 2 s.
mkfifo in
feed() { # FIRST-LINE
    (echo "$1" && exec sleep 4) > in &
    feeder=$!
}

feed a
t0=$(now)
msg=$(am --deadline 0.5 echo < in 2>&1)
rc=$?
elapsed_below "$t0" 2.0 "--deadline 0.5 while waiting for input"
[ "$rc" -eq 0 ] || eco_fail "--deadline while waiting for input: exit status $rc, expected 0"
case $msg in
*"--deadline of 0.5s reached"*) ;;
*) eco_fail "--deadline while waiting for input: output '$msg'" ;;
esac
kill $feeder 2>/dev/null

feed f
t0=$(now)
expect_status 1 am --halt now sh -c 'exit 1' < in
elapsed_below "$t0" 2.0 "--halt now while waiting for input"
kill $feeder 2>/dev/null

# stop_on_signal SIGNAL STATUS: the first line's job has run (its output is
# written) and aiometer waits for the next when the signal comes.
stop_on_signal() {
    feed a
    : > out
    "$AIOMETER" echo < in > out &
    pid=$!
    watchdog $pid
    i=0
    while [ "$(cat out)" != a ] && [ $i -lt 200 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    t0=$(now)
    kill -"$1" $pid
    wait $pid
    rc=$?
    kill $dog $feeder 2>/dev/null
    [ "$rc" -eq "$2" ] || eco_fail "SIG$1 while waiting for input: exit status $rc, expected $2"
    elapsed_below "$t0" 2.0 "SIG$1 while waiting for input"
}
stop_on_signal INT 130
stop_on_signal TERM 255

# What a job leaves behind is reaped when it ends, even after the job is
# over (aiometer is a child subreaper).  Twenty jobs each leave a 0.3 s
# sleep behind and end at once; the last one runs 3 s, so the run is still
# on 2 s in, when its zombie children are counted.  (Before: 20.)
"$AIOMETER" -j 2 sh -c 'sleep 0.3 > /dev/null 2>&1 & sleep $1' sh \
    ::: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 3 &
pid=$!
watchdog $pid
sleep 2
zombies=$(ps -eo ppid=,stat= | awk -v p=$pid '$1 == p && $2 ~ /Z/' | wc -l)
wait $pid
rc=$?
kill $dog 2>/dev/null
[ "$rc" -eq 0 ] || eco_fail "leftovers: exit status $rc, expected 0"
[ "$zombies" -eq 0 ] || eco_fail "leftovers: $zombies zombies 2 s in, expected none"
# Reaping them never takes a job's own exit status: 300 jobs, each leaving
# a child that ends about when it does, exit with their number modulo 4.
seq 0 299 | am -j 8 --joblog log sh -c 'sleep 0.01 & exit $(($1 % 4))' sh
rc=$?
[ "$rc" -eq 101 ] || eco_fail "statuses among leftovers: exit status $rc, expected 101"
awk -F '\t' 'NR > 1 && $4 != ($1 - 1) % 4 { print; bad = 1 } END { exit bad || NR != 301 }' log ||
    eco_fail "statuses among leftovers: a job's status was lost: $(awk -F '\t' 'NR > 1 && $4 != ($1 - 1) % 4' log | head -5)"

eco_finish
