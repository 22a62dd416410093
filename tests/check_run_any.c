/*
 * check_run_any.c - run_any: the first success wins, failures are skipped, losers are cancelled.
 *
 * Every test makes its pools with tu_pool(), whose checked fixture destroys
 * them.  Timing bounds are loose on purpose (the machine may be a shared
 * 2-core box).  Jobs never call Check's assertions, which are only safe on
 * the test's own thread; they record what they saw and the test asserts
 * afterwards.
 */
#define _POSIX_C_SOURCE 200809L

#include "testutil.h"

#include <aiometer.h>
#include <check.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- run_any -------------------------------------------------------- */

/* aiometer's own: run_any of [slow, fast] returns fast, and does not wait
 * out the slow job, which sleeps cancellably. */
START_TEST(test_run_any_slow_fast)
{
    struct probe p;
    struct item items[2];
    aiometer_job jobs[2];
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, NULL, 2);
    items[0].sleep = 10.0;
    items[0].how = SLEEP_CANCELLABLE;
    items[1].sleep = 0.02;
    jobs_of(jobs, items, 2);
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_run_any(jobs, 2, &result, &index, &o), 0);
    double took = tu_now() - t0;
    ck_assert_uint_eq(index, 1);
    ck_assert_ptr_eq(result, &items[1]);
    ck_assert_msg(took < 2.5, "run_any took %.3f s", took);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    if (atomic_load(&items[0].began)) {
        ck_assert_int_eq(items[0].sleep_rc, ECANCELED);
        ck_assert(items[0].cancelled_after);
    }
}
END_TEST

/* A loser that ignores cancellation is still waited for: run_any never
 * returns while a job of its call runs. */
START_TEST(test_run_any_waits_for_running_losers)
{
    struct probe p;
    struct item items[2];
    aiometer_job jobs[2];
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, NULL, 2);
    items[0].sleep = 0.3;
    items[1].sleep = 0.02;
    jobs_of(jobs, items, 2);
    ck_assert_int_eq(aiometer_run_any(jobs, 2, &result, &index, &o), 0);
    ck_assert_uint_eq(index, 1);
    ck_assert_ptr_eq(result, &items[1]);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    if (atomic_load(&items[0].began))
        ck_assert(ldi(&items[0].done));
}
END_TEST

START_TEST(test_run_any_skips_failures)
{
    struct probe p;
    struct item items[3];
    aiometer_job jobs[3];
    aiometer_stats st;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, NULL, 3);
    items[0].fail = EIO;
    items[1].sleep = 0.01;
    items[1].fail = EPIPE;
    items[2].sleep = 0.08;
    jobs_of(jobs, items, 3);
    o.stats = &st;
    ck_assert_int_eq(aiometer_run_any(jobs, 3, &result, &index, &o), 0);
    ck_assert_uint_eq(index, 2);
    ck_assert_ptr_eq(result, &items[2]);
    ck_assert_uint_eq(st.failed, 2);
    ck_assert_uint_eq(st.completed, 1);
}
END_TEST

START_TEST(test_run_any_all_fail)
{
    enum { N = 4 };
    struct probe p;
    struct item items[N];
    aiometer_job jobs[N];
    aiometer_stats st;
    aiometer_pool *pool = tu_pool(N + 1);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, NULL, N);
    items[0].fail = EIO; /* fails first, by far */
    for (size_t i = 1; i < N; i++) {
        items[i].sleep = 0.2;
        items[i].fail = EPIPE;
    }
    jobs_of(jobs, items, N);
    o.stats = &st;
    ck_assert_int_eq(aiometer_run_any(jobs, N, &result, &index, &o), EIO);
    ck_assert_uint_eq(ld(&p.started), N);
    ck_assert_uint_eq(ld(&p.returned), N);
    ck_assert_uint_eq(st.failed, N);
    ck_assert_uint_eq(st.completed, 0);
    ck_assert_uint_eq(st.failed_index, 0);
}
END_TEST

/* After a win, jobs that have not started never start. */
START_TEST(test_run_any_losers_not_started)
{
    enum { N = 10 };
    struct probe p;
    struct item items[N];
    aiometer_job jobs[N];
    aiometer_stats st;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 0.005, SLEEP_PLAIN);
    jobs_of(jobs, items, N);
    o.max_at_once = 1;
    o.stats = &st;
    ck_assert_int_eq(aiometer_run_any(jobs, N, &result, &index, &o), 0);
    ck_assert_uint_lt(index, N);
    ck_assert_ptr_eq(result, &items[index]);
    /* Give a wrongly started loser time to show up. */
    tu_sleep(0.05);
    ck_assert_uint_eq(ld(&p.started), 1);
    ck_assert_uint_eq(st.started, 1);
    ck_assert_uint_eq(st.cancelled, N - 1);
}
END_TEST

/* W5's shape, stretched so that timing noise cannot pass for cancellation:
 * job i sleeps 50 ms * (i + 1); the call must end long before the last. */
START_TEST(test_run_any_many_sleepers)
{
    enum { N = 64 };
    struct probe p;
    struct item items[N];
    aiometer_job jobs[N];
    aiometer_pool *pool = tu_pool(N);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, NULL, N);
    for (size_t i = 0; i < N; i++) {
        items[i].sleep = 0.05 * (double)(i + 1);
        items[i].how = SLEEP_CANCELLABLE;
    }
    jobs_of(jobs, items, N);
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_run_any(jobs, N, &result, &index, &o), 0);
    double took = tu_now() - t0;
    ck_assert_uint_lt(index, N);
    ck_assert_ptr_eq(result, &items[index]);
    ck_assert_int_eq(items[index].sleep_rc, 0);
    ck_assert_msg(took < 1.2, "run_any took %.3f s (the last job sleeps 3.2 s)", took);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    ck_assert_uint_ge(ld(&p.saw_cancel), ld(&p.started) / 2);
}
END_TEST

/* Jobs that return only after the deadline do not win: the call says
 * ETIMEDOUT, not 0. */
START_TEST(test_run_any_late_return_does_not_win)
{
    enum { N = 2 };
    struct probe p;
    struct item items[N];
    aiometer_job jobs[N];
    aiometer_pool *pool = tu_pool(N + 1);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = 77;

    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 0.3, SLEEP_PLAIN); /* returns normally, late */
    jobs_of(jobs, items, N);
    o.timeout = 0.1;
    ck_assert_int_eq(aiometer_run_any(jobs, N, &result, &index, &o), ETIMEDOUT);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
}
END_TEST

START_TEST(test_run_any_null_outputs)
{
    struct probe p;
    struct item items[2];
    aiometer_job jobs[2];
    aiometer_pool *pool = tu_pool(2);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, NULL, 2);
    jobs_of(jobs, items, 2);
    ck_assert_int_eq(aiometer_run_any(jobs, 2, NULL, NULL, &o), 0);
    ck_assert_uint_ge(ld(&p.started), 1);
}
END_TEST

START_TEST(test_run_any_timeout)
{
    enum { N = 3 };
    struct probe p;
    struct item items[N];
    aiometer_job jobs[N];
    aiometer_pool *pool = tu_pool(N + 1);
    aiometer_options o = opts_on(pool);
    void *result = NULL;

    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 10.0, SLEEP_CANCELLABLE);
    jobs_of(jobs, items, N);
    o.timeout = 0.2;
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_run_any(jobs, N, &result, NULL, &o), ETIMEDOUT);
    double took = tu_now() - t0;
    ck_assert_msg(took >= 0.18 && took < 2.5, "run_any took %.3f s", took);
    ck_assert_uint_eq(ld(&p.saw_cancel), ld(&p.started));
}
END_TEST

Suite *run_any_suite(void)
{
    Suite *s = suite_create("run_any");
    TCase *tc;

    tc = tu_tcase("run_any", 10);
    tcase_add_test(tc, test_run_any_slow_fast);
    tcase_add_test(tc, test_run_any_waits_for_running_losers);
    tcase_add_test(tc, test_run_any_skips_failures);
    tcase_add_test(tc, test_run_any_all_fail);
    tcase_add_test(tc, test_run_any_losers_not_started);
    tcase_add_test(tc, test_run_any_null_outputs);
    tcase_add_test(tc, test_run_any_timeout);
    tcase_add_test(tc, test_run_any_late_return_does_not_win);
        suite_add_tcase(s, tc);

    /* Its bound on the return time holds natively and under the sanitizers,
     * not under valgrind, which runs CK_EXCLUDE_TAGS=timing. */
    tc = tu_tcase("run_any_timing", 10);
    tcase_set_tags(tc, "timing");
    tcase_add_test(tc, test_run_any_many_sleepers);
        suite_add_tcase(s, tc);

    return s;
}
