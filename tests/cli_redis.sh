#!/bin/sh
# aiometer(1) --redis URL --key K: two invocations naming the same key on one
# Redis server at 10 per second together start 10 jobs per second, not 20
# (40 starts span 3.9 s), and a running cap given with
# --limiter-max-at-once holds across both.  The test starts its own
# redis-server on a free loopback port in its temporary directory, without
# persistence, and stops it.
#
# Without redis-server this is skipped, unless AIOMETER_REQUIRE_REDIS=1 (as
# CI sets it): then it fails.  An aiometer built without libaiometer-redis
# must refuse --redis with a message naming it, and that is all it checks.
. "$(dirname "$0")/cli_lib.sh"

# Built without libaiometer-redis: --redis is an error, and no job runs.
msg=$(am --redis redis://127.0.0.1:1 --key k -r 1 touch ran ::: 1 2>&1 >/dev/null)
rc=$?
case $msg in
*"built without libaiometer-redis"*)
    [ "$rc" -eq 255 ] || eco_fail "--redis without libaiometer-redis: exit status $rc, not 255"
    case $msg in *--redis*) ;; *) eco_fail "the message does not name --redis: '$msg'" ;; esac
    [ -e ran ] && eco_fail "--redis without libaiometer-redis: a job ran"
    echo "aiometer was built without libaiometer-redis: --redis is refused, as it must be"
    eco_finish
    ;;
esac

need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    [ "${AIOMETER_REQUIRE_REDIS:-0}" = 1 ] &&
        eco_error "$1 is not on PATH and AIOMETER_REQUIRE_REDIS=1"
    eco_skip "$1 is not on PATH (apt-get install redis-server); set AIOMETER_REQUIRE_REDIS=1 to make this a failure"
}
need redis-server
need redis-cli

server=
stop_server() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null
        wait "$server" 2>/dev/null
        server=
    fi
}
trap 'stop_server; rm -rf "$tmp"' EXIT

# Start redis-server on a port that is free: one taken makes it exit at
# once, and the next is tried.  Ready when it answers PING while it runs.
mkdir redis
port=
for try in 1 2 3 4 5 6 7 8; do
    p=$((30000 + ($$ * 7 + try * 7919) % 30000))
    redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
        --dir "$tmp/redis" > "redis/log.$p" 2>&1 &
    server=$!
    i=0
    while [ "$i" -lt 100 ] && kill -0 "$server" 2>/dev/null; do
        if [ "$(redis-cli -h 127.0.0.1 -p "$p" ping 2>/dev/null)" = PONG ] &&
            kill -0 "$server" 2>/dev/null; then
            port=$p
            break
        fi
        sleep 0.05
        i=$((i + 1))
    done
    [ -n "$port" ] && break
    stop_server
done
[ -n "$port" ] || eco_error "no redis-server could be started: $(cat redis/log.* | tail -n 5)"
url=redis://127.0.0.1:$port
echo "redis-server on $url"

# The rate: 40 starts of two invocations at a shared 10/s.
key=cli-rate-$$
am --redis "$url" --key "$key" -r 10 -j 4 date "+%s.%N {}" ::: $(seq 20) > a 2> a.err &
pa=$!
am --redis "$url" --key "$key" -r 10 -j 4 date "+%s.%N {}" ::: $(seq 20) > b 2> b.err &
pb=$!
wait $pa
ra=$?
wait $pb
rb=$?
[ "$ra" -eq 0 ] || eco_fail "first invocation: exit status $ra: $(cat a.err)"
[ "$rb" -eq 0 ] || eco_fail "second invocation: exit status $rb: $(cat b.err)"
sort -n a b > sorted
n=$(wc -l < sorted)
[ "$n" -eq 40 ] || eco_fail "40 jobs, $n starts"
if [ "$n" -ge 2 ]; then
    span=$(awk 'NR == 1 { first = $1 } { last = $1 } END { printf "%.3f", last - first }' sorted)
    echo "40 jobs of two invocations sharing 10/s in Redis: span $span s (ideal 3.9)"
    holds "$span >= 3.6 && $span <= 4.2" ||
        eco_fail "two invocations sharing 10/s in Redis spanned $span s, not 3.9 +- 0.3"
fi

# The running cap: 2 across both invocations, though each allows 4 (-j 4).
# Each job writes its start and end; at no moment are more than 2 inside.
key=cli-cap-$$
job='s=$(date +%s.%N); sleep 0.3; echo "$s $(date +%s.%N)"'
am --redis "$url" --key "$key" --limiter-max-at-once 2 -j 4 --shell "$job" ::: $(seq 6) > a 2> a.err &
pa=$!
am --redis "$url" --key "$key" --limiter-max-at-once 2 -j 4 --shell "$job" ::: $(seq 6) > b 2> b.err &
pb=$!
wait $pa
ra=$?
wait $pb
rb=$?
[ "$ra" -eq 0 ] || eco_fail "cap, first invocation: exit status $ra: $(cat a.err)"
[ "$rb" -eq 0 ] || eco_fail "cap, second invocation: exit status $rb: $(cat b.err)"
peak=$(awk '{ print $1, 1; print $2, -1 }' a b | sort -k1,1n -k2,2n |
       awk '{ now += $2; if (now > peak) peak = now } END { print peak + 0 }')
echo "12 jobs of two invocations under a Redis cap of 2: peak $peak running"
[ "$(cat a b | wc -l)" -eq 12 ] || eco_fail "cap: $(cat a b | wc -l) jobs ran, not 12"
[ "$peak" -eq 2 ] || eco_fail "a Redis cap of 2 across two invocations: peak $peak"

# --redis and --limiter together, or --redis without --key: 255, no job.
for bad in "--limiter n" ""; do
    # shellcheck disable=SC2086
    msg=$(am --redis "$url" $bad -r 5 touch ran ::: 1 2>&1 >/dev/null)
    rc=$?
    [ "$rc" -eq 255 ] || eco_fail "--redis with '$bad' and no --key: exit status $rc"
    case $msg in *--redis*) ;; *) eco_fail "the message does not name --redis: '$msg'" ;; esac
    [ -e ran ] && { eco_fail "--redis with '$bad': a job ran"; rm -f ran; }
done

# A server that is gone: 255, a message naming --redis, and no job.
stop_server
msg=$(am --redis "$url" --key "$key" -r 5 touch ran ::: 1 2>&1 >/dev/null)
rc=$?
[ "$rc" -eq 255 ] || eco_fail "--redis with the server gone: exit status $rc"
case $msg in *--redis*) ;; *) eco_fail "the message does not name --redis: '$msg'" ;; esac
[ -e ran ] && eco_fail "--redis with the server gone: a job ran"

eco_finish
