#!/bin/sh
# aiometer(1): {} and {#}, --shell quoting, the input forms, --tag, --dry-run,
# --joblog and the exit statuses.
. "$(dirname "$0")/cli_lib.sh"

# {} replaced wherever it stands, {#} numbered from 1 in input order.
out=$(printf 'a\nb c\n' | am -k echo "<{}>" "#{#}" "x{}y{}")
[ "$out" = "<a> #1 xaya
<b c> #2 xb cyb c" ] || eco_fail "{} and {#} replacement: got '$out'"

# No {}: the argument is a last word of its own; {#} alone does not stop that.
out=$(am -k printf '%s|%s\n' "{#}" ::: "one two" three)
[ "$out" = "1|one two
2|three" ] || eco_fail "appended argument: got '$out'"

# --shell: the argument is quoted wherever {} stands, and when appended.
evil='$(rm -rf x); '"'"'"'
: > x
out=$(am --shell 'printf "%s\n" {}; echo {#}' ::: "$evil")
[ "$out" = "$evil
1" ] || eco_fail "--shell with {}: got '$out'"
out=$(am --shell 'printf "%s\n"' ::: "$evil")
[ "$out" = "$evil" ] || eco_fail "--shell appended: got '$out'"
[ -f x ] || eco_fail "--shell ran the argument as shell text: x was removed"
# Without --shell no shell sees the argument at all.
out=$(am printf '%s\n' ::: "$evil")
[ "$out" = "$evil" ] || eco_fail "exec without a shell: got '$out'"

# Jobs read /dev/null, not our standard input.
out=$(echo secret | am --shell 'cat; echo {}' ::: done)
[ "$out" = "done" ] || eco_fail "job's standard input is not /dev/null: got '$out'"

# -0 and -a.
out=$(printf 'p q\0r\ns\0' | am -k -0 printf '[%s]')
[ "$out" = "[p q][r
s]" ] || eco_fail "-0: got '$out'"
printf '1\n2\n3\n' > args
out=$(am -k -a args echo)
[ "$out" = "1
2
3" ] || eco_fail "-a: got '$out'"

# --tag prefixes every line of stdout and stderr; --dry-run runs nothing.
out=$(am --tag --shell 'printf "l1\nl2\n"; echo e >&2; : {}' ::: T 2>&1)
[ "$out" = "T	l1
T	l2
T	e" ] || eco_fail "--tag: got '$out'"
out=$(am -k --dry-run touch ::: "a b" c)
[ "$out" = "touch 'a b'
touch c" ] || eco_fail "--dry-run: got '$out'"
[ -e c ] && eco_fail "--dry-run ran a job"

# Exit statuses: 0; the number of failed jobs; 101 above 100.
expect_status 0 am true ::: 1 2 3
expect_status 3 am sh -c 'exit $0' ::: 0 1 0 2 0 3
expect_status 2 am --shell 'kill -9 $$' ::: 1 2
expect_status 1 am /nonexistent/command ::: 1 2>/dev/null
expect_status 101 am -j 8 false ::: $(seq 105)

# A bad option or value: 255, a message naming it, and no job started.
for bad in "--bogus" "-j 0" "-j x" "-r -1" "-r nan" "--timeout 0" "--halt maybe" \
           "--burst 2" "--limiter-max-at-once 3" "--progress=loud" "-a" "-j"; do
    # shellcheck disable=SC2086
    msg=$(am $bad touch ran ::: 1 2>&1 >/dev/null)
    rc=$?
    [ "$rc" -eq 255 ] || eco_fail "'$bad': exit status $rc, expected 255"
    opt=${bad%% *}
    opt=${opt%%=*}
    case $msg in
    *"$opt"*) ;;
    *) eco_fail "'$bad': the message does not name $opt: '$msg'" ;;
    esac
    [ -e ran ] && { eco_fail "'$bad': a job ran"; rm -f ran; }
done
expect_status 255 am 2>/dev/null
expect_status 255 am -a /nonexistent/file echo 2>/dev/null

# --halt soon: no job starts after the first failure.
out=$(am -j 1 -k --halt soon sh -c 'echo $0; [ $0 != 2 ]' ::: 1 2 3 4)
rc=$?
[ "$rc" -eq 1 ] && [ "$out" = "1
2" ] || eco_fail "--halt soon: status $rc, output '$out'"

# --joblog: the header, then one tab-separated line per job that parses.
am -j 2 --joblog log sh -c 'sleep 0.$0; exit $0' ::: 0 1 2 > /dev/null
head -n 1 log | grep -q '^Seq	Starttime	JobRuntime	Exitval	Signal	Command$' ||
    eco_fail "--joblog header: $(head -n 1 log)"
start=$(date +%s)
awk -F '\t' -v now="$start" '
    NR == 1 { next }
    NF != 6 || $1 !~ /^[0-9]+$/ || $2 !~ /^[0-9]+\.[0-9]+$/ || $3 !~ /^[0-9]+\.[0-9]+$/ ||
    $4 != $1 - 1 || $5 != 0 || $2 > now + 1 || $2 < now - 60 ||
    $3 < ($1 - 1) / 10 - 0.01 || $6 != "sh -c '\''sleep 0.$0; exit $0'\'' " $1 - 1 {
        print "bad line: " $0; bad = 1 }
    END { if (NR != 4) { print NR - 1 " lines"; bad = 1 }; exit bad }' log ||
    eco_fail "--joblog lines do not parse: $(cat log)"

# A standard descriptor we were started without stays closed in effect: no
# descriptor of aiometer's own (the kill pipe) takes its number.  A closed
# standard input is an unreadable input, at once (it used to be the kill
# pipe's read end, read for ever); `timeout` turns a hang into 124.
msg=$(timeout -k 1 5 "$AIOMETER" echo 2>&1 <&-)
rc=$?
[ "$rc" -eq 255 ] || eco_fail "closed standard input: exit status $rc, expected 255"
case $msg in
*"cannot read the input"*) ;;
*) eco_fail "closed standard input: message '$msg'" ;;
esac
# A closed standard output is unwritable output once a job's output goes
# there, and no matter if nothing does.
msg=$(am echo ::: a 2>&1 >&-)
rc=$?
[ "$rc" -eq 255 ] || eco_fail "closed standard output: exit status $rc, expected 255"
case $msg in
*"cannot write the output"*) ;;
*) eco_fail "closed standard output: message '$msg'" ;;
esac
am true ::: a >&-
rc=$?
[ "$rc" -eq 0 ] || eco_fail "closed standard output, nothing written: exit status $rc"
# Both closed: a job's standard error is unwritable output too.  It used to
# go into the kill pipe's write end, which then killed the next job.
am -j 1 sh -c 'echo x >&2; sleep 0.5' ::: a b >&- 2>&-
rc=$?
[ "$rc" -eq 255 ] || eco_fail "closed standard output and error: exit status $rc, expected 255"
out=$(am echo ::: a 2>&-)
rc=$?
[ "$rc" -eq 0 ] && [ "$out" = a ] ||
    eco_fail "closed standard error: status $rc, output '$out'"
# Output beyond 64 KiB goes to a temporary file; when none can be made
# there, the job counts as failed and a message names it and the reason,
# after what was kept (a part of the output, from its start).  Before, the
# rest was dropped without a word and the run exited 0.
(TMPDIR=/nonexistent; export TMPDIR; am sh -c 'seq 100000' ::: 1 > out 2> err)
rc=$?
[ "$rc" -eq 1 ] || eco_fail "unkept output: exit status $rc, expected 1"
kept=$(wc -c < out)
[ "$kept" -ge 4096 ] && [ "$kept" -le 65536 ] && seq 100000 | head -c "$kept" | cmp -s - out ||
    eco_fail "unkept output: $kept bytes written, not the start of the output"
grep -q "job 1 .*standard output.*/nonexistent: No such file or directory" err ||
    eco_fail "unkept output: the message: '$(cat err)'"
# A job that writes less than 64 KiB never needs the file.
(TMPDIR=/nonexistent; export TMPDIR; am sh -c 'seq 1000' ::: 1 > out 2> err)
rc=$?
[ "$rc" -eq 0 ] && seq 1000 | cmp -s - out && [ ! -s err ] ||
    eco_fail "small output without a temporary directory: status $rc, $(cat err)"

eco_finish
