/*
 * check_source.c - lazy job sources: pulled only when a job can start, never concurrently, ending and failing.
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

/* ---- lazy sources ------------------------------------------------------- */

START_TEST(test_source_runs_every_item)
{
    enum { N = 200 };
    struct probe p;
    struct item items[N];
    struct src s;
    aiometer_stats st;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, NULL, N);
    src_init(&s, items, N, AIOMETER_DONE);
    o.stats = &st;
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), 0);
    ck_assert_uint_eq(ld(&p.returned), N);
    for (size_t i = 0; i < N; i++)
        ck_assert(ldi(&items[i].done));
    ck_assert_uint_eq(ld(&s.after_end), 0);
    ck_assert_uint_eq(ld(&s.calls), N + 1);
    ck_assert_uint_eq(st.started, N);
    ck_assert_uint_eq(st.completed, N);
}
END_TEST

/* Calls to one source never overlap, however many threads start jobs. */
START_TEST(test_source_calls_not_concurrent)
{
    enum { N = 300 };
    struct probe p;
    struct item items[N];
    struct src s;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    void *result;
    int rc;
    size_t got = 0;

    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 0.0005, SLEEP_PLAIN);
    src_init(&s, items, N, AIOMETER_DONE);
    s.pause = 0.0002;
    o.max_at_once = 8;
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), 0);
    ck_assert_uint_eq(ld(&s.overlaps), 0);
    ck_assert_uint_eq(ld(&p.returned), N);

    src_init(&s, items, N, AIOMETER_DONE);
    s.pause = 0.0002;
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    while ((rc = aiometer_amap_next(it, &result, NULL)) == 0)
        got++;
    ck_assert_int_eq(rc, AIOMETER_DONE);
    ck_assert_uint_eq(got, N);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(ld(&s.overlaps), 0);
}
END_TEST

/* With max_at_once = 2 and jobs that block, the source is asked for little
 * more than the two jobs that can run. */
START_TEST(test_source_pulled_lazily)
{
    enum { N = 50 };
    struct probe p;
    struct item items[N];
    struct src s;
    struct runner r;
    aiometer_pool *pool = tu_pool(4);

    setup_items(&p, items, NULL, N);
    for (size_t i = 0; i < N; i++)
        items[i].wait_gate = 1;
    src_init(&s, items, N, AIOMETER_DONE);
    r.src = &s;
    r.opts = opts_on(pool);
    r.opts.max_at_once = 2;
    r.rc = -2;
    ck_assert_int_eq(pthread_create(&r.thread, NULL, runner_main, &r), 0);
    tu_sleep(0.2);
    size_t handed = atomic_load(&s.handed);
    size_t started = atomic_load(&p.started);
    atomic_store(&p.gate, 1);
    ck_assert_int_eq(pthread_join(r.thread, NULL), 0);
    ck_assert_uint_eq(started, 2);
    ck_assert_msg(handed <= 3, "the source was pulled %zu times ahead", handed);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_uint_eq(ld(&p.returned), N);
}
END_TEST

START_TEST(test_source_pulled_lazily_amap)
{
    enum { N = 50 };
    struct probe p;
    struct item items[N];
    struct src s;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    void *result = NULL;
    size_t index = (size_t)-1, got = 0;
    int rc;

    setup_items(&p, items, NULL, N);
    for (size_t i = 0; i < N; i++)
        items[i].wait_gate = 1;
    src_init(&s, items, N, AIOMETER_DONE);
    o.max_at_once = 2;
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    tu_sleep(0.2);
    size_t handed = atomic_load(&s.handed);
    size_t started = atomic_load(&p.started);
    atomic_store(&p.gate, 1);
    ck_assert_uint_eq(started, 2);
    ck_assert_msg(handed <= 3, "the source was pulled %zu times ahead", handed);
    /* A source's index is the order in which it handed the argument out. */
    while ((rc = aiometer_amap_next(it, &result, &index)) == 0) {
        ck_assert_uint_lt(index, N);
        ck_assert_ptr_eq(result, &items[index]);
        got++;
    }
    ck_assert_int_eq(rc, AIOMETER_DONE);
    ck_assert_uint_eq(got, N);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
}
END_TEST

/* A source with fewer items than the call could run at once, and one that
 * is empty. */
START_TEST(test_source_ends_early)
{
    enum { N = 3 };
    struct probe p;
    struct item items[N];
    struct src s;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    unsigned char seen[N] = {0};
    void *args[N];
    size_t delivered = 0;
    void *result;

    setup_items(&p, items, args, N);
    o.max_at_once = 8;
    src_init(&s, items, N, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), 0);
    ck_assert_uint_eq(ld(&p.returned), N);
    ck_assert_uint_eq(ld(&s.after_end), 0);

    src_init(&s, items, N, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    ck_assert_int_eq(drain(it, args, N, seen, &delivered), AIOMETER_DONE);
    ck_assert_uint_eq(delivered, N);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(ld(&s.after_end), 0);
    ck_assert_uint_eq(ld(&p.returned), 2 * N);

    src_init(&s, items, 0, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), 0);
    src_init(&s, items, 0, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    ck_assert_int_eq(aiometer_amap_next(it, &result, NULL), AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(ld(&p.returned), 2 * N);
}
END_TEST

/* A source that fails after ten items fails the call with its error, and is
 * not called again. */
START_TEST(test_source_fails)
{
    enum { N = 10 };
    struct probe p;
    struct item items[N];
    void *args[N];
    struct src s;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t eio_from_next = 0, delivered = 0;
    unsigned char seen[N] = {0};
    int rc;

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 0.002, SLEEP_PLAIN);
    o.max_at_once = 3;
    src_init(&s, items, N, EIO);
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), EIO);
    ck_assert_uint_eq(ld(&s.after_end), 0);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    ck_assert_uint_le(ld(&p.started), N);

    /* The same through amap: next reports the error once, or close does. */
    src_init(&s, items, N, EIO);
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    rc = drain_skipping(it, args, N, seen, &delivered, EIO, &eio_from_next);
    ck_assert_int_eq(rc, AIOMETER_DONE);
    int close_rc = aiometer_amap_close(it);
    ck_assert_msg(eio_from_next + (close_rc == EIO) == 1,
                  "EIO from next %zu times, close said %d", eio_from_next, close_rc);
    ck_assert(close_rc == 0 || close_rc == EIO);
    ck_assert_uint_eq(ld(&s.after_end), 0);
}
END_TEST

START_TEST(test_source_fails_at_once)
{
    struct item items[1];
    struct probe p;
    struct src s;
    aiometer_stats st;
    aiometer_pool *pool = tu_pool(2);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, NULL, 1);
    src_init(&s, items, 0, ENOMEM);
    o.stats = &st;
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), ENOMEM);
    ck_assert_uint_eq(ld(&p.started), 0);
    ck_assert_uint_eq(ld(&s.calls), 1);
    ck_assert_uint_eq(st.started, 0);
}
END_TEST

/* A failing job stops the source from being pulled much further. */
START_TEST(test_source_job_failure)
{
    enum { N = 200 };
    struct probe p;
    struct item items[N];
    struct src s;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 0.002, SLEEP_PLAIN);
    items[5].fail = EBADMSG;
    o.max_at_once = 2;
    src_init(&s, items, N, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), EBADMSG);
    size_t handed = atomic_load(&s.handed);
    ck_assert_msg(handed < 20, "the source was pulled %zu times for a call that failed at 6",
                  handed);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
}
END_TEST

START_TEST(test_source_ordered_amap)
{
    enum { N = 30 };
    struct probe p;
    struct item items[N];
    struct src s;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, NULL, N);
    for (size_t i = 0; i < N; i++)
        items[i].sleep = (double)((N - i) % 4) * 0.003;
    src_init(&s, items, N, AIOMETER_DONE);
    o.ordered = 1;
    o.max_at_once = 4;
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    read_in_order(it, items, 0, N);
    expect_end(it, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
}
END_TEST

/* An endless source (as far as the call can tell) read for a while, then
 * cancelled; nothing of the call touches it after close. */
START_TEST(test_source_endless_cancelled)
{
    enum { N = 2000 };
    struct probe p;
    struct item *items = calloc(N, sizeof *items);
    struct src s;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    ck_assert_ptr_nonnull(items);
    setup_items(&p, items, NULL, N);
    src_init(&s, items, N, AIOMETER_DONE);
    o.max_at_once = 4;
    o.max_buffered = 8;
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    for (size_t i = 0; i < 20; i++) {
        void *result = NULL;
        size_t index = (size_t)-1;
        ck_assert_int_eq(aiometer_amap_next(it, &result, &index), 0);
        ck_assert_ptr_eq(result, &items[index]);
    }
    ck_assert_int_eq(aiometer_amap_cancel(it), 0);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    size_t calls = atomic_load(&s.calls);
    ck_assert_msg(calls <= 20 + 8 + 4 + 2, "the source was called %zu times", calls);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    tu_sleep(0.05);
    ck_assert_uint_eq(ld(&s.calls), calls);
    free(items);
}
END_TEST

START_TEST(test_source_deadline)
{
    enum { N = 1000 };
    struct probe p;
    struct item *items = calloc(N, sizeof *items);
    struct src s;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);

    ck_assert_ptr_nonnull(items);
    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 0.02, SLEEP_PLAIN);
    src_init(&s, items, N, AIOMETER_DONE);
    o.max_at_once = 2;
    o.timeout = 0.2;
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), ETIMEDOUT);
    ck_assert_msg(tu_now() - t0 < 2.5, "the call overran its deadline");
    size_t started = atomic_load(&p.started);
    ck_assert_uint_lt(started, 100);
    ck_assert_uint_le(ld(&s.handed), started + 2);
    ck_assert_uint_eq(ld(&p.returned), started);
    free(items);
}
END_TEST

Suite *source_suite(void)
{
    Suite *s = suite_create("source");
    TCase *tc;

    tc = tu_tcase("source", 10);
    tcase_add_test(tc, test_source_runs_every_item);
    tcase_add_test(tc, test_source_calls_not_concurrent);
    tcase_add_test(tc, test_source_pulled_lazily);
    tcase_add_test(tc, test_source_pulled_lazily_amap);
    tcase_add_test(tc, test_source_ends_early);
    tcase_add_test(tc, test_source_fails);
    tcase_add_test(tc, test_source_fails_at_once);
    tcase_add_test(tc, test_source_job_failure);
    tcase_add_test(tc, test_source_ordered_amap);
    tcase_add_test(tc, test_source_endless_cancelled);
    tcase_add_test(tc, test_source_deadline);
        suite_add_tcase(s, tc);

    return s;
}
