/*
 * check_cancel.c - what a job sees of its call: aiometer_sleep, aiometer_cancel_fd, aiometer_cancelled.
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

/* ---- cancellation primitives -------------------------------------------- */

START_TEST(test_sleep_outside_job)
{
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_sleep(0.05), 0);
    double took = tu_now() - t0;
    ck_assert_msg(took >= 0.045 && took < 2.0, "slept %.3f s", took);
    ck_assert_int_eq(aiometer_sleep(0), 0);
    ck_assert_int_eq(aiometer_sleep(-1.0), EINVAL);
    ck_assert_int_eq(aiometer_sleep(NAN), EINVAL);
    ck_assert_int_eq(aiometer_cancelled(), 0);
}
END_TEST

START_TEST(test_cancel_fd_outside_job)
{
    errno = 0;
    ck_assert_int_eq(aiometer_cancel_fd(), -1);
    ck_assert_int_eq(errno, EPERM);
}
END_TEST

START_TEST(test_sleep_in_job_runs_full)
{
    struct probe p;
    struct item items[1];
    void *args[1];
    aiometer_pool *pool = tu_pool(2);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, 1);
    items[0].sleep = 0.05;
    items[0].how = SLEEP_CANCELLABLE;
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, 1, &o), 0);
    ck_assert_msg(tu_now() - t0 >= 0.045, "aiometer_sleep cut short");
    ck_assert_int_eq(items[0].sleep_rc, 0);
    ck_assert_int_eq(items[0].cancelled_after, 0);
}
END_TEST

/* Runs items[0], which waits for cancellation, and items[1], which fails
 * with EIO: the call fails with EIO well before job 0's own wait would
 * end, and job 0 did run. */
static void run_waiter_and_failer(struct item *items, void **args, const aiometer_options *o)
{
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, 2, o), EIO);
    double took = tu_now() - t0;
    ck_assert_msg(took < 2.5, "the call took %.3f s", took);
    ck_assert(ldi(&items[0].began));
}

/* Job 0 sleeps 10 s cancellably; job 1 fails after 50 ms.  The failure
 * cancels the call, which wakes job 0 long before its sleep is over. */
START_TEST(test_sleep_wakes_on_failure)
{
    struct probe p;
    struct item items[2];
    void *args[2];
    aiometer_pool *pool = tu_pool(3);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, 2);
    items[0].sleep = 10.0;
    items[0].how = SLEEP_CANCELLABLE;
    items[1].sleep = 0.05;
    items[1].fail = EIO;
    run_waiter_and_failer(items, args, &o);
    ck_assert_int_eq(items[0].sleep_rc, ECANCELED);
    ck_assert_int_ne(items[0].cancelled_after, 0);
}
END_TEST

/* The same through aiometer_cancel_fd: it is not readable before the
 * failure, and poll wakes on it after. */
START_TEST(test_cancel_fd_wakes_on_failure)
{
    struct probe p;
    struct item items[2];
    void *args[2];
    aiometer_pool *pool = tu_pool(3);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, 2);
    items[0].use_fd = 1;
    items[1].sleep = 0.1;
    items[1].fail = EIO;
    run_waiter_and_failer(items, args, &o);
    check_fd_woken(&items[0]);
    ck_assert_int_ne(items[0].cancelled_after, 0);
}
END_TEST

/* aiometer_amap_cancel reaches jobs waiting on the descriptor too. */
START_TEST(test_cancel_fd_wakes_on_amap_cancel)
{
    enum { N = 2 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = tu_pool(N + 1);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    for (size_t i = 0; i < N; i++)
        items[i].use_fd = 1;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    /* Let both jobs reach poll before cancelling. */
    wait_started(&p, N);
    tu_sleep(0.05);
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_amap_cancel(it), 0);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    double took = tu_now() - t0;
    ck_assert_msg(took < 2.5, "close after cancel took %.3f s", took);
    ck_assert_uint_eq(ld(&p.started), N);
    for (size_t i = 0; i < N; i++)
        check_fd_woken(&items[i]);
}
END_TEST

/* A job that only polls aiometer_cancelled() sees the failure of another. */
struct flag_item {
    atomic_int saw;
    double waited;
};

static void *flag_poller(void *arg)
{
    struct flag_item *f = arg;
    double t0 = tu_now();
    while (!aiometer_cancelled() && tu_now() - t0 < 10.0)
        tu_sleep(0.001);
    f->waited = tu_now() - t0;
    atomic_store(&f->saw, aiometer_cancelled() ? 1 : 0);
    return NULL;
}

static void *fail_soon(void *arg)
{
    (void)arg;
    tu_sleep(0.1);
    aiometer_fail(ENOENT);
    return NULL;
}

START_TEST(test_cancelled_flag_in_job)
{
    struct flag_item f;
    aiometer_job jobs[2] = {{flag_poller, &f}, {fail_soon, NULL}};
    aiometer_pool *pool = tu_pool(3);
    aiometer_options o = opts_on(pool);
    void *results[2];

    atomic_init(&f.saw, 0);
    f.waited = -1;
    ck_assert_int_eq(aiometer_run_all(jobs, 2, results, &o), ENOENT);
    ck_assert_int_eq(ldi(&f.saw), 1);
    ck_assert_msg(f.waited < 2.5, "the flag took %.3f s", f.waited);
}
END_TEST

Suite *cancel_suite(void)
{
    Suite *s = suite_create("cancel");
    TCase *tc;

    tc = tu_tcase("cancellation", 10);
    tcase_add_test(tc, test_sleep_outside_job);
    tcase_add_test(tc, test_cancel_fd_outside_job);
    tcase_add_test(tc, test_sleep_in_job_runs_full);
    tcase_add_test(tc, test_sleep_wakes_on_failure);
    tcase_add_test(tc, test_cancel_fd_wakes_on_failure);
    tcase_add_test(tc, test_cancel_fd_wakes_on_amap_cancel);
    tcase_add_test(tc, test_cancelled_flag_in_job);
        suite_add_tcase(s, tc);

    return s;
}
