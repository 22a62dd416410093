/*
 * check_ordered.c - amap's bounded window (backpressure) and its input-order mode.
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

/* ---- amap: backpressure ------------------------------------------------ */

/* A consumer that does not read stops the call once max_buffered results
 * wait for it: the started counter stops growing. */
START_TEST(test_amap_backpressure)
{
    enum { N = 100, BUF = 3, AT_ONCE = 2 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t delivered = 0;

    setup_items(&p, items, args, N);
    o.max_at_once = AT_ONCE;
    o.max_buffered = BUF;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    tu_sleep(0.15);
    size_t first = atomic_load(&p.started);
    tu_sleep(0.2);
    size_t second = atomic_load(&p.started);
    ck_assert_msg(second <= BUF + AT_ONCE, "%zu jobs started with %d buffered", second, BUF);
    ck_assert_uint_ge(first, AT_ONCE);
    ck_assert_uint_eq(first, second);

    /* Reading lets the rest through. */
    ck_assert_int_eq(drain(it, args, N, seen, &delivered), AIOMETER_DONE);
    ck_assert_uint_eq(delivered, N);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
}
END_TEST

/* Ordered results that cannot be delivered yet (job 0 is slow) count
 * against the same bound: memory does not grow while the head is late. */
START_TEST(test_amap_ordered_backpressure)
{
    enum { N = 60, BUF = 4, AT_ONCE = 2 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    items[0].sleep = 0.4;
    o.max_at_once = AT_ONCE;
    o.max_buffered = BUF;
    o.ordered = 1;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    tu_sleep(0.2);
    size_t started = atomic_load(&p.started);
    ck_assert_msg(!ldi(&items[0].done), "job 0 finished too early for this test");
    ck_assert_msg(started <= BUF + AT_ONCE, "%zu jobs started behind a slow head", started);
    read_in_order(it, items, 0, N);
    expect_end(it, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
}
END_TEST

/* ---- amap: ordered --------------------------------------------------- */

START_TEST(test_amap_ordered_in_input_order)
{
    enum { N = 40 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_stats st;
    aiometer_pool *pool = tu_pool(8);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    /* Later jobs are mostly quicker, so finishing order is far from input order. */
    for (size_t i = 0; i < N; i++)
        items[i].sleep = (double)((N - i) % 7) * 0.003;
    o.max_at_once = 8;
    o.ordered = 1;
    o.stats = &st;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    read_in_order(it, items, 0, N);
    expect_end(it, AIOMETER_DONE);
    expect_end(it, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(st.completed, N);
}
END_TEST

/* Each result comes out as soon as it and all before it are ready, not when
 * the whole call is done. */
START_TEST(test_amap_ordered_streams_early)
{
    enum { N = 6 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = tu_pool(N + 1);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    items[N - 1].sleep = 0.6;
    o.ordered = 1;
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    wait_started(&p, N);
    read_in_order(it, items, 0, N - 1);
    double early = tu_now() - t0;
    ck_assert_msg(!ldi(&items[N - 1].done),
                  "the first %d results took %.3f s, waiting for the slow last job", N - 1,
                  early);
    {
        void *result = NULL;
        size_t index = (size_t)-1;
        ck_assert_int_eq(aiometer_amap_next(it, &result, &index), 0);
        ck_assert_uint_eq(index, N - 1);
        ck_assert_int_eq(aiometer_amap_next(it, &result, &index), AIOMETER_DONE);
    }
    ck_assert_int_eq(aiometer_amap_close(it), 0);
}
END_TEST

START_TEST(test_amap_ordered_failure)
{
    enum { N = 12 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t failures = 0, last = 0, delivered = 0;
    int rc;

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 0.005, SLEEP_PLAIN);
    items[5].fail = ENOSPC;
    o.ordered = 1;
    o.max_at_once = 2;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    for (;;) {
        void *result = NULL;
        size_t index = (size_t)-1;
        rc = aiometer_amap_next(it, &result, &index);
        if (rc == ENOSPC) {
            failures++;
            continue;
        }
        if (rc != 0)
            break;
        ck_assert_uint_lt(index, N);
        ck_assert_ptr_eq(result, args[index]);
        ck_assert_uint_ne(index, 5);
        if (delivered)
            ck_assert_uint_gt(index, last);
        last = index;
        delivered++;
    }
    ck_assert_int_eq(rc, AIOMETER_DONE);
    ck_assert_uint_eq(failures, 1);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
}
END_TEST

Suite *ordered_suite(void)
{
    Suite *s = suite_create("ordered");
    TCase *tc;

    tc = tu_tcase("backpressure", 10);
    tcase_add_test(tc, test_amap_backpressure);
    tcase_add_test(tc, test_amap_ordered_backpressure);
        suite_add_tcase(s, tc);

    tc = tu_tcase("ordered", 10);
    tcase_add_test(tc, test_amap_ordered_in_input_order);
    tcase_add_test(tc, test_amap_ordered_streams_early);
    tcase_add_test(tc, test_amap_ordered_failure);
        suite_add_tcase(s, tc);

    return s;
}
