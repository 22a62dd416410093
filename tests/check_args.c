/*
 * check_args.c - bad arguments, in one home: every entry point given invalid input returns
 * EINVAL (or the documented error), starts nothing and changes nothing.
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

/* ---- run_on_each, run_all and pools ----------------------------------------- */

/* Option sets that are all invalid. */
static aiometer_options bad_options(size_t k, aiometer_stats *st)
{
    aiometer_options o = {.stats = st};
    switch (k) {
    case 0: o.max_per_second = -1.0; break;
    case 1: o.max_per_second = NAN; break;
    case 2: o.max_per_second = 1.5e9; break;
    case 3: o.max_per_second = -INFINITY; break;
    case 4: o.timeout = -1.0; break;
    case 5: o.timeout = NAN; break;
    case 6: o.timeout = -INFINITY; break;
    default: ck_abort();
    }
    return o;
}
enum { N_BAD_OPTIONS = 7 };

START_TEST(test_bad_args_run_on_each)
{
    enum { N = 5 };
    tracked_ctx c;
    tracked_set s;
    tracked_init(&c, 0, 0, 0);
    set_init(&s, &c, N);
    ck_assert_int_eq(aiometer_run_on_each(NULL, s.args, N, NULL), EINVAL);
    ck_assert_int_eq(aiometer_run_on_each(tracked_job, NULL, N, NULL), EINVAL);
    for (size_t k = 0; k < N_BAD_OPTIONS; k++) {
        aiometer_stats st, before;
        memset(&st, 0xa5, sizeof st);
        before = st;
        aiometer_options o = bad_options(k, &st);
        ck_assert_msg(aiometer_run_on_each(tracked_job, s.args, N, &o) == EINVAL,
                      "bad option set %zu accepted", k);
        ck_assert_msg(memcmp(&st, &before, sizeof st) == 0, "stats written on EINVAL (%zu)", k);
    }
    ck_assert_uint_eq(ld(&c.calls), 0);
    set_free(&s);
}
END_TEST

START_TEST(test_bad_args_run_all)
{
    enum { N = 5 };
    tracked_ctx c;
    tracked_set s;
    tracked_init(&c, 0, 0, 0);
    set_init(&s, &c, N);
    ck_assert_int_eq(aiometer_run_all(NULL, N, s.results, NULL), EINVAL);
    ck_assert_int_eq(aiometer_run_all(s.jobs, N, NULL, NULL), EINVAL);
    /* A NULL function anywhere, even last, is found before anything starts. */
    s.jobs[N - 1].fn = NULL;
    ck_assert_int_eq(aiometer_run_all(s.jobs, N, s.results, NULL), EINVAL);
    s.jobs[N - 1].fn = tracked_job;
    s.jobs[0].fn = NULL;
    ck_assert_int_eq(aiometer_run_all(s.jobs, N, s.results, NULL), EINVAL);
    s.jobs[0].fn = tracked_job;
    for (size_t k = 0; k < N_BAD_OPTIONS; k++) {
        aiometer_stats st, before;
        memset(&st, 0xa5, sizeof st);
        before = st;
        aiometer_options o = bad_options(k, &st);
        ck_assert_msg(aiometer_run_all(s.jobs, N, s.results, &o) == EINVAL,
                      "bad option set %zu accepted", k);
        ck_assert_msg(memcmp(&st, &before, sizeof st) == 0, "stats written on EINVAL (%zu)", k);
    }
    ck_assert_uint_eq(ld(&c.calls), 0);
    for (size_t i = 0; i < N; i++)
        ck_assert_ptr_eq(s.results[i], (void *)&s);
    /* And the same arguments, made valid, work. */
    ck_assert_int_eq(aiometer_run_all(s.jobs, N, s.results, NULL), 0);
    set_check_complete(&s, 1);
    set_free(&s);
}
END_TEST

START_TEST(test_bad_args_pool)
{
    aiometer_pool *sentinel = (aiometer_pool *)&sentinel;
    aiometer_pool *p = sentinel;
    ck_assert_int_eq(aiometer_pool_create(NULL, 4), EINVAL);
    ck_assert_int_eq(aiometer_pool_create(&p, 0), EINVAL);
    ck_assert_ptr_eq(p, sentinel);
    ck_assert_int_eq(aiometer_pool_create(&p, AIOMETER_MAX_THREADS + 1), EINVAL);
    ck_assert_ptr_eq(p, sentinel);
    ck_assert_int_eq(aiometer_pool_create(&p, SIZE_MAX), EINVAL);
    ck_assert_ptr_eq(p, sentinel);
    ck_assert_int_eq(aiometer_pool_destroy(NULL), EINVAL);
    /* The largest size is valid; its threads start only when needed. */
    ck_assert_int_eq(aiometer_pool_create(&p, AIOMETER_MAX_THREADS), 0);
    ck_assert_uint_eq(aiometer_pool_threads(p), AIOMETER_MAX_THREADS);
    ck_assert_int_eq(aiometer_pool_destroy(p), 0);
}
END_TEST


/* ---- amap, run_any, sources and timeouts ------------------------------------ */

START_TEST(test_amap_open_bad_arguments)
{
    struct probe p;
    struct item items[3];
    void *args[3];
    aiometer_pool *pool = tu_pool(2);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, 3);
    ck_assert_int_eq(aiometer_amap_open(NULL, item_job, args, 3, &o), EINVAL);
    ck_assert_int_eq(aiometer_amap_open(&it, NULL, args, 3, &o), EINVAL);
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, NULL, 3, &o), EINVAL);
    o.max_per_second = -1.0;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, 3, &o), EINVAL);
    o.max_per_second = NAN;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, 3, &o), EINVAL);
    tu_sleep(0.05);
    ck_assert_uint_eq(ld(&p.started), 0);
}
END_TEST

START_TEST(test_amap_source_bad_arguments)
{
    struct probe p;
    struct item items[3];
    struct src s;
    aiometer_pool *pool = tu_pool(2);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, NULL, 3);
    src_init(&s, items, 3, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_open_source(NULL, item_job, src_next, &s, &o), EINVAL);
    ck_assert_int_eq(aiometer_amap_open_source(&it, NULL, src_next, &s, &o), EINVAL);
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, NULL, &s, &o), EINVAL);
    o.max_per_second = -1.0;
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), EINVAL);
    tu_sleep(0.05);
    ck_assert_uint_eq(ld(&s.calls), 0);
    ck_assert_uint_eq(ld(&p.started), 0);
}
END_TEST

START_TEST(test_amap_iterator_bad_arguments)
{
    struct probe p;
    struct item items[3];
    void *args[3];
    unsigned char seen[3] = {0};
    aiometer_pool *pool = tu_pool(2);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    void *result;
    size_t index, delivered = 0;

    setup_items(&p, items, args, 3);
    ck_assert_int_eq(aiometer_amap_next(NULL, &result, &index), EINVAL);
    ck_assert_int_eq(aiometer_amap_cancel(NULL), EINVAL);
    ck_assert_int_eq(aiometer_amap_close(NULL), EINVAL);
    /* A NULL result pointer is refused without losing a result. */
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, 3, &o), 0);
    ck_assert_int_eq(aiometer_amap_next(it, NULL, &index), EINVAL);
    ck_assert_int_eq(drain(it, args, 3, seen, &delivered), AIOMETER_DONE);
    ck_assert_uint_eq(delivered, 3);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
}
END_TEST

START_TEST(test_run_any_bad_arguments)
{
    struct probe p;
    struct item items[2];
    aiometer_job jobs[2];
    aiometer_pool *pool = tu_pool(2);
    aiometer_options o = opts_on(pool);
    void *result;
    size_t index;

    setup_items(&p, items, NULL, 2);
    jobs_of(jobs, items, 2);
    ck_assert_int_eq(aiometer_run_any(jobs, 0, &result, &index, &o), EINVAL);
    ck_assert_int_eq(aiometer_run_any(NULL, 2, &result, &index, &o), EINVAL);
    jobs[1].fn = NULL;
    ck_assert_int_eq(aiometer_run_any(jobs, 2, &result, &index, &o), EINVAL);
    jobs[1].fn = item_job;
    o.max_per_second = -1.0;
    ck_assert_int_eq(aiometer_run_any(jobs, 2, &result, &index, &o), EINVAL);
    ck_assert_uint_eq(ld(&p.started), 0);
}
END_TEST

START_TEST(test_source_bad_arguments)
{
    struct probe p;
    struct item items[3];
    struct src s;
    aiometer_pool *pool = tu_pool(2);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, NULL, 3);
    src_init(&s, items, 3, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_run_on_each_source(NULL, src_next, &s, &o), EINVAL);
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, NULL, &s, &o), EINVAL);
    o.max_per_second = NAN;
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), EINVAL);
    ck_assert_uint_eq(ld(&s.calls), 0);
    ck_assert_uint_eq(ld(&p.started), 0);
}
END_TEST

/* A deadline must be a number of seconds: negative or NaN is refused by
 * every entry point of this suite. */
START_TEST(test_bad_timeout)
{
    struct probe p;
    struct item items[2];
    void *args[2];
    aiometer_job jobs[2];
    struct src s;
    aiometer_pool *pool = tu_pool(2);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    static const double bad[] = {-1.0, -INFINITY, NAN};

    setup_items(&p, items, args, 2);
    jobs_of(jobs, items, 2);
    src_init(&s, items, 2, AIOMETER_DONE);
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        o.timeout = bad[k];
        ck_assert_int_eq(aiometer_run_on_each(item_job, args, 2, &o), EINVAL);
        ck_assert_int_eq(aiometer_run_any(jobs, 2, NULL, NULL, &o), EINVAL);
        ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, 2, &o), EINVAL);
        ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), EINVAL);
        ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), EINVAL);
    }
    tu_sleep(0.05);
    ck_assert_uint_eq(ld(&p.started), 0);
    ck_assert_uint_eq(ld(&s.calls), 0);
}
END_TEST

/* ---- limiters -------------------------------------------------------------------- */

START_TEST(test_limiter_bad_args)
{
    aiometer_limiter *sentinel = (aiometer_limiter *)&sentinel;
    aiometer_limiter *lim = sentinel;
    static const double bad[] = {0.0, -1.0, NAN, INFINITY, -INFINITY, 1.5e9, 1e300};
    ck_assert_int_eq(aiometer_limiter_create(NULL, 5, 1), EINVAL);
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        ck_assert_msg(aiometer_limiter_create(&lim, bad[k], 1) == EINVAL, "rate %g accepted",
                      bad[k]);
        ck_assert_ptr_eq(lim, sentinel);
    }
    ck_assert_int_eq(aiometer_limiter_destroy(NULL), EINVAL);

    /* The edges of the valid range. */
    static const struct {
        double rate;
        size_t burst;
    } good[] = {{1e9, 0}, {1e9, 1000}, {5, 0}, {5, 1}, {0.001, 3}, {1e-12, 1},
                /* A tolerance past 2^62 ns is held there, as documented. */
                {1.0, SIZE_MAX}};
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        lim = NULL;
        ck_assert_msg(aiometer_limiter_create(&lim, good[k].rate, good[k].burst) == 0,
                      "rate %g, burst %zu refused", good[k].rate, good[k].burst);
        ck_assert_ptr_nonnull(lim);
        ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    }
}
END_TEST

/* ---- retry delays (aiometer_retry(3)) --------------------------------------------- */

static atomic_int retry_plain_runs;

static void *retry_plain_fn(void *arg)
{
    atomic_fetch_add(&retry_plain_runs, 1);
    return arg;
}

static int retry_plain_source(void *state, void **arg)
{
    int *left = state;
    if (*left == 0)
        return AIOMETER_DONE;
    (*left)--;
    *arg = NULL;
    return 0;
}

/* Every entry point refuses bad delays with EINVAL and starts nothing,
 * even with retries = 0 (delays are checked whenever they are given). */
START_TEST(test_bad_retry_delays)
{
    struct {
        double delay, max;
    } bad[] = {
        { -1, 0 }, { NAN, 0 }, { 0, -1 }, { 0, NAN }, { 1.0, 0.5 }, { -0.001, 1 }, { 0.2, 0.1 },
    };
    aiometer_pool *pool = tu_pool(2);
    aiometer_job js[2] = { { retry_plain_fn, NULL }, { retry_plain_fn, NULL } };
    void *args[2] = { NULL, NULL }, *results[2], *r;
    aiometer_amap *it = NULL;
    aiometer_stats st, untouched;

    atomic_store(&retry_plain_runs, 0);
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        for (int retries = 0; retries < 2; retries++) {
            aiometer_options o = { 0 };
            int left = 2;
            o.pool = pool;
            o.retries = (size_t)retries * 3;
            o.retry_delay = bad[b].delay;
            o.retry_max_delay = bad[b].max;
            o.stats = &st;
            memset(&st, 0x55, sizeof st);
            memcpy(&untouched, &st, sizeof st);
            ck_assert_int_eq(aiometer_run_on_each(retry_plain_fn, args, 2, &o), EINVAL);
            ck_assert_int_eq(
                aiometer_run_on_each_source(retry_plain_fn, retry_plain_source, &left, &o), EINVAL);
            ck_assert_int_eq(left, 2);
            ck_assert_int_eq(aiometer_run_all(js, 2, results, &o), EINVAL);
            ck_assert_int_eq(aiometer_run_any(js, 2, &r, NULL, &o), EINVAL);
            ck_assert_int_eq(aiometer_amap_open(&it, retry_plain_fn, args, 2, &o), EINVAL);
            ck_assert_int_eq(
                aiometer_amap_open_source(&it, retry_plain_fn, retry_plain_source, &left, &o),
                EINVAL);
            ck_assert_ptr_null(it);
            /* Setting up failed, so the stats were not written. */
            ck_assert(memcmp(&st, &untouched, sizeof st) == 0);
        }
    }
    ck_assert_int_eq(atomic_load(&retry_plain_runs), 0);
    /* The edges are valid: equal delays, defaults, an uncapped backoff. */
    {
        aiometer_options o = { 0 };
        o.pool = pool;
        o.retry_delay = 0.5;
        o.retry_max_delay = 0.5;
        ck_assert_int_eq(aiometer_run_on_each(retry_plain_fn, args, 2, &o), 0);
        o.retry_max_delay = INFINITY;
        ck_assert_int_eq(aiometer_run_on_each(retry_plain_fn, args, 2, &o), 0);
        o.retry_delay = 0;
        o.retry_max_delay = 0;
        o.retries = 5;
        ck_assert_int_eq(aiometer_run_on_each(retry_plain_fn, args, 2, &o), 0);
    }
    ck_assert_int_eq(atomic_load(&retry_plain_runs), 6);
}
END_TEST

Suite *args_suite(void)
{
    Suite *s = suite_create("args");
    TCase *tc;

    tc = tu_tcase("pool_and_run", 30);
    tcase_add_test(tc, test_bad_args_run_on_each);
    tcase_add_test(tc, test_bad_args_run_all);
    tcase_add_test(tc, test_bad_args_pool);
    suite_add_tcase(s, tc);

    tc = tu_tcase("stream", 10);
    tcase_add_test(tc, test_amap_open_bad_arguments);
    tcase_add_test(tc, test_amap_source_bad_arguments);
    tcase_add_test(tc, test_amap_iterator_bad_arguments);
    tcase_add_test(tc, test_run_any_bad_arguments);
    tcase_add_test(tc, test_source_bad_arguments);
    tcase_add_test(tc, test_bad_timeout);
    tcase_add_test(tc, test_bad_retry_delays);
        suite_add_tcase(s, tc);

    tc = tu_tcase("limiter", 30);
    tcase_add_test(tc, test_limiter_bad_args);
    suite_add_tcase(s, tc);

    return s;
}
