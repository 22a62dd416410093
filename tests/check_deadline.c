/*
 * check_deadline.c - deadlines (opts.timeout) on every entry point and on the cancel descriptor.
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

/* ---- deadlines ------------------------------------------------------------ */

START_TEST(test_deadline_run_on_each)
{
    enum { N = 4 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_stats st;
    aiometer_pool *pool = tu_pool(N + 1);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 10.0, SLEEP_CANCELLABLE);
    o.timeout = 0.2;
    o.stats = &st;
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, N, &o), ETIMEDOUT);
    double took = tu_now() - t0;
    ck_assert_msg(took >= 0.18 && took < 2.5, "the call took %.3f s", took);
    ck_assert_uint_ge(ld(&p.started), 1);
    ck_assert_uint_eq(ld(&p.saw_cancel), ld(&p.started));
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    ck_assert_uint_eq(st.started, ld(&p.started));
}
END_TEST

/* Jobs that ignore cancellation are waited for, but none starts after the
 * deadline. */
START_TEST(test_deadline_stops_starts)
{
    enum { N = 100 };
    const double timeout = 0.25;
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_stats st;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 0.05, SLEEP_PLAIN);
    o.max_at_once = 2;
    o.timeout = timeout;
    o.stats = &st;
    p.t0 = tu_now();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, N, &o), ETIMEDOUT);
    size_t started = check_stopped(&p, &st, N);
    ck_assert_uint_lt(started, N);
    pthread_mutex_lock(&p.lock);
    double last = p.last_start;
    pthread_mutex_unlock(&p.lock);
    ck_assert_msg(last <= timeout + 0.15, "a job started %.3f s into a %.2f s call", last,
                  timeout);
    tu_sleep(0.1);
    ck_assert_uint_eq(ld(&p.started), started);
}
END_TEST

/* With a deadline the calling thread only waits: it must be free to return
 * at the deadline, so it never runs a job. */
START_TEST(test_deadline_caller_runs_no_job)
{
    enum { N = 6 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = tu_pool(2);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 0.01, SLEEP_PLAIN);
    o.timeout = 5.0;
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, N, &o), 0);
    ck_assert_msg(tu_now() - t0 < 2.5, "a call well within its deadline was slow");
    ck_assert_uint_eq(ld(&p.returned), N);
    for (size_t i = 0; i < N; i++)
        ck_assert_msg(!pthread_equal(items[i].thread, pthread_self()),
                      "job %zu ran on the calling thread", i);
}
END_TEST

START_TEST(test_deadline_run_all_unstarted_null)
{
    enum { N = 5 };
    struct probe p;
    struct item items[N];
    aiometer_job jobs[N];
    void *results[N];
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 10.0, SLEEP_CANCELLABLE);
    jobs_of(jobs, items, N);
    for (size_t i = 0; i < N; i++)
        results[i] = &p; /* anything but NULL or the job's own result */
    o.max_at_once = 1;
    o.timeout = 0.15;
    ck_assert_int_eq(aiometer_run_all(jobs, N, results, &o), ETIMEDOUT);
    ck_assert_uint_eq(ld(&p.started), 1);
    for (size_t i = 0; i < N; i++) {
        if (atomic_load(&items[i].began))
            ck_assert_ptr_eq(results[i], &items[i]);
        else
            ck_assert_ptr_null(results[i]);
    }
}
END_TEST

/* amap with a deadline: results of the jobs that finished, then ETIMEDOUT. */
START_TEST(test_deadline_amap)
{
    enum { N = 6 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_pool *pool = tu_pool(N + 1);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t delivered = 0;

    setup_items(&p, items, args, N);
    set_sleep(items, 2, N, 10.0, SLEEP_CANCELLABLE);
    o.timeout = 0.3;
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    int rc = drain(it, args, N, seen, &delivered);
    double took = tu_now() - t0;
    ck_assert_int_eq(rc, ETIMEDOUT);
    ck_assert_msg(took >= 0.25 && took < 2.5, "next ended after %.3f s", took);
    ck_assert(seen[0] && seen[1]);
    expect_end(it, ETIMEDOUT);
    ck_assert_int_eq(aiometer_amap_cancel(it), 0);
    expect_end(it, ETIMEDOUT);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
}
END_TEST

/* Jobs that wait on aiometer_cancel_fd() are woken at the deadline. */
START_TEST(test_deadline_wakes_cancel_fd)
{
    enum { N = 2 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = tu_pool(N + 1);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, N);
    for (size_t i = 0; i < N; i++) {
        items[i].use_fd = 1;
        items[i].fd_wait_ms = 3000; /* so that a missed deadline fails, not hangs */
    }
    o.timeout = 0.2;
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, N, &o), ETIMEDOUT);
    double took = tu_now() - t0;
    ck_assert_msg(took >= 0.18 && took < 2.5, "the call took %.3f s", took);
    for (size_t i = 0; i < N; i++) {
        if (!atomic_load(&items[i].began))
            continue;
        ck_assert_int_ge(items[i].fd, 0);
        ck_assert_int_eq(items[i].fd_poll_rc, 1);
    }
}
END_TEST

/* The same when the pool's only thread is busy with another call, so that
 * the job, if it runs at all before the deadline, runs on the calling
 * thread: the deadline must still end the call on time. */
START_TEST(test_deadline_busy_pool_cancel_fd)
{
    struct probe busy_p, p;
    struct item busy[1], items[1];
    void *busy_args[1], *args[1];
    aiometer_pool *pool = tu_pool(1);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    it = occupy_thread(&o, &busy_p, busy, busy_args);
    setup_items(&p, items, args, 1);
    items[0].use_fd = 1;
    items[0].fd_wait_ms = 3000; /* so that a missed deadline fails, not hangs */
    o.timeout = 0.2;
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, 1, &o), ETIMEDOUT);
    double took = tu_now() - t0;
    ck_assert_msg(took < 0.75, "a 0.2 s deadline ended the call after %.3f s", took);
    if (atomic_load(&items[0].began))
        ck_assert_int_eq(items[0].fd_poll_rc, 1);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
}
END_TEST

START_TEST(test_deadline_not_reached)
{
    enum { N = 10 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = tu_pool(3);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, N);
    o.timeout = 5.0;
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, N, &o), 0);
    ck_assert_uint_eq(ld(&p.returned), N);
    o.timeout = INFINITY;
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, N, &o), 0);
    ck_assert_uint_eq(ld(&p.returned), 2 * N);
}
END_TEST

Suite *deadline_suite(void)
{
    Suite *s = suite_create("deadline");
    TCase *tc;

    tc = tu_tcase("deadline", 10);
    tcase_add_test(tc, test_deadline_run_on_each);
    tcase_add_test(tc, test_deadline_stops_starts);
    tcase_add_test(tc, test_deadline_caller_runs_no_job);
    tcase_add_test(tc, test_deadline_run_all_unstarted_null);
    tcase_add_test(tc, test_deadline_amap);
    tcase_add_test(tc, test_deadline_wakes_cancel_fd);
    tcase_add_test(tc, test_deadline_busy_pool_cancel_fd);
    tcase_add_test(tc, test_deadline_not_reached);
        suite_add_tcase(s, tc);

    return s;
}
