# aiometer(1)'s tests: shell scripts running the built command with real
# commands, real signals and the real process table (tests/cli_lib.sh has
# their helpers; they read tests/eco_env.sh, as the eco_*.sh scripts do).
#
#   tests/cli_basic.sh    {} and {#}, --shell quoting, input forms, --tag,
#                         --dry-run, --joblog, --halt soon, exit statuses
#   tests/cli_order.sh    -k against sleeps in reverse; grouped output
#   tests/cli_rate.sh     -r and --burst, measured at the jobs' own starts
#   tests/cli_kill.sh     --timeout, --halt now, --deadline, SIGINT, SIGTERM;
#                         what jobs leave behind is reaped
#   tests/cli_memory.sh   1e6 input lines under 16 MiB of RSS
#   tests/cli_limiter.sh  --limiter NAME shared by two invocations
#   tests/cli_retry.sh    --retries: backoff, the joblog, --halt, --timeout
#   tests/cli_redis.sh    --redis URL --key K shared by two invocations, on
#                         a redis-server of its own (or the error without
#                         libaiometer-redis)
cli_tests = \
	tests/cli_basic.sh \
	tests/cli_order.sh \
	tests/cli_rate.sh \
	tests/cli_kill.sh \
	tests/cli_memory.sh \
	tests/cli_limiter.sh \
	tests/cli_retry.sh \
	tests/cli_redis.sh
TESTS += $(cli_tests)
EXTRA_DIST += $(cli_tests) tests/cli_lib.sh
