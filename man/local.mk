# Man pages: aiometer(1) for the command, one per public function (section 3), aiometer_options(3) for the
# options and statistics structs, and the overview libaiometer(7).  A page
# whose only line is ".so man3/OTHER.3" shares OTHER.3, as man(1) follows it
# once installed.  tests/eco_manpages.sh checks that every exported function
# has a page here (and that aiometer.1 has a command's sections), and
# tests/eco_manexamples.sh compiles and runs every section 3 and 7 EXAMPLE
# (aiometer.1's are shell commands: tests/cli_*.sh run the command).
dist_man_MANS += \
	man/aiometer.1 \
	man/aiometer_amap_cancel.3 \
	man/aiometer_amap_close.3 \
	man/aiometer_amap_next.3 \
	man/aiometer_amap_open.3 \
	man/aiometer_amap_open_source.3 \
	man/aiometer_cancel_fd.3 \
	man/aiometer_cancelled.3 \
	man/aiometer_fail.3 \
	man/aiometer_limiter_create.3 \
	man/aiometer_limiter_create_backend.3 \
	man/aiometer_limiter_destroy.3 \
	man/aiometer_limiter_open.3 \
	man/aiometer_limiter_options.3 \
	man/aiometer_limiter_unlink.3 \
	man/aiometer_options.3 \
	man/aiometer_pool_create.3 \
	man/aiometer_pool_destroy.3 \
	man/aiometer_pool_threads.3 \
	man/aiometer_progress.3 \
	man/aiometer_retry.3 \
	man/aiometer_run_all.3 \
	man/aiometer_run_any.3 \
	man/aiometer_run_on_each.3 \
	man/aiometer_run_on_each_source.3 \
	man/aiometer_sleep.3 \
	man/aiometer_stats.3 \
	man/aiometer_strerror.3 \
	man/aiometer_version.3 \
	man/aiometer_version_string.3 \
	man/libaiometer.7
