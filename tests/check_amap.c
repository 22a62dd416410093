/*
 * check_amap.c - amap: every result once, what close waits for, a failing job, cancellation, and close or cancel racing jobs that finish.
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

/* ---- amap: every result once, close waits ---------------------------- */

START_TEST(test_amap_each_result_once)
{
    enum { N = 40 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_stats st;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t delivered = 0;

    setup_items(&p, items, args, N);
    /* Uneven sleeps so that jobs finish out of input order. */
    for (size_t i = 0; i < N; i++)
        items[i].sleep = (double)((i * 7) % 5) * 0.002;
    memset(&st, 0xff, sizeof st);
    o.max_at_once = 4;
    o.stats = &st;

    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    ck_assert_ptr_nonnull(it);
    ck_assert_int_eq(drain(it, args, N, seen, &delivered), AIOMETER_DONE);
    ck_assert_uint_eq(delivered, N);
    /* The end is sticky. */
    for (int k = 0; k < 3; k++)
        expect_end(it, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);

    ck_assert_uint_eq(ld(&p.returned), N);
    ck_assert_uint_eq(st.started, N);
    ck_assert_uint_eq(st.completed, N);
    ck_assert_uint_eq(st.failed, 0);
    ck_assert_uint_eq(st.cancelled, 0);
    ck_assert_uint_ge(st.peak_running, 1);
    ck_assert_uint_le(st.peak_running, 4);
    ck_assert_uint_le(ld(&p.peak), 4);
    ck_assert_uint_eq(st.failed_index, (size_t)-1);
}
END_TEST

START_TEST(test_amap_index_may_be_null)
{
    enum { N = 8 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_pool *pool = tu_pool(3);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    void *result;
    int rc;
    size_t got = 0;

    setup_items(&p, items, args, N);
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    while ((rc = aiometer_amap_next(it, &result, NULL)) == 0) {
        struct item *x = result;
        ck_assert_ptr_eq(x, &items[x->i]);
        ck_assert(!seen[x->i]);
        seen[x->i] = 1;
        got++;
    }
    ck_assert_int_eq(rc, AIOMETER_DONE);
    ck_assert_uint_eq(got, N);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
}
END_TEST

START_TEST(test_amap_empty)
{
    struct probe p;
    struct item items[1];
    void *args[1];
    aiometer_pool *pool = tu_pool(2);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    void *result = NULL;

    setup_items(&p, items, args, 1);
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, 0, &o), 0);
    ck_assert_int_eq(aiometer_amap_next(it, &result, NULL), AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_next(it, &result, NULL), AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(ld(&p.started), 0);
}
END_TEST

/* On a pool whose only thread is busy with another call, the consumer runs
 * jobs itself inside next rather than wait for the thread: an amap opened by
 * a job of a one-thread pool must not deadlock. */
START_TEST(test_amap_saturated_pool_progresses)
{
    enum { N = 3 };
    struct probe busy_p, p;
    struct item busy[1], items[N];
    void *busy_args[1], *args[N];
    unsigned char seen[N] = {0};
    aiometer_pool *pool = tu_pool(1);
    aiometer_options o = opts_on(pool);
    aiometer_amap *busy_it = NULL, *it = NULL;
    size_t delivered = 0;

    busy_it = occupy_thread(&o, &busy_p, busy, busy_args);
    setup_items(&p, items, args, N);
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    ck_assert_int_eq(drain(it, args, N, seen, &delivered), AIOMETER_DONE);
    ck_assert_uint_eq(delivered, N);
    ck_assert_msg(!ldi(&busy[0].done), "the results waited for the busy thread");
    for (size_t i = 0; i < N; i++)
        ck_assert(pthread_equal(items[i].thread, pthread_self()));
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_int_eq(aiometer_amap_close(busy_it), 0);
}
END_TEST

/* aiometer's "closing amap without reading waits for all jobs": the results
 * are dropped, but every job still runs, and close returns after the last. */
START_TEST(test_amap_close_without_reading_waits_for_all)
{
    enum { N = 20 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_stats st;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 0.01, SLEEP_PLAIN);
    o.max_at_once = 4;
    o.max_buffered = 2; /* the buffer fills long before the jobs are done */
    o.stats = &st;

    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(ld(&p.returned), N);
    ck_assert_uint_eq(st.started, N);
    ck_assert_uint_eq(st.completed, N);
    ck_assert_uint_eq(st.cancelled, 0);
}
END_TEST

/* close before the first next, after one, mid-way, one short of the end,
 * after the last result and after AIOMETER_DONE: every job runs every time. */
START_TEST(test_amap_close_at_every_point)
{
    enum { N = 8 };
    static const size_t points[] = {0, 1, N / 2, N - 1, N, N + 1};
    aiometer_pool *pool = tu_pool(3);

    for (size_t k = 0; k < sizeof points / sizeof points[0]; k++) {
        struct probe p;
        struct item items[N];
        void *args[N];
        unsigned char seen[N] = {0};
        aiometer_options o = opts_on(pool);
        aiometer_amap *it = NULL;

        setup_items(&p, items, args, N);
        for (size_t i = 0; i < N; i++)
            items[i].sleep = 0.003 * (double)(i % 3);
        o.max_at_once = 2;
        ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
        for (size_t r = 0; r < points[k]; r++) {
            if (r < N)
                read_one(it, args, N, seen);
            else
                expect_end(it, AIOMETER_DONE);
        }
        ck_assert_int_eq(aiometer_amap_close(it), 0);
        ck_assert_msg(ld(&p.returned) == N,
                      "close after %zu reads: %zu of %d jobs returned", points[k],
                      ld(&p.returned), N);
    }
}
END_TEST

/* ---- amap: a failing job --------------------------------------------- */

START_TEST(test_amap_failure_surfaces)
{
    enum { N = 20 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_stats st;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t delivered = 0, failures = 0;
    int rc;

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 0.01, SLEEP_PLAIN);
    items[3].fail = EIO;
    o.max_at_once = 2;
    o.stats = &st;

    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    /* Results, the error exactly once, results of jobs that did finish, end. */
    rc = drain_skipping(it, args, N, seen, &delivered, EIO, &failures);
    ck_assert_int_eq(rc, AIOMETER_DONE);
    ck_assert_uint_eq(failures, 1);
    ck_assert_msg(!seen[3], "the failed job's result was delivered");
    expect_end(it, AIOMETER_DONE);
    /* next reported the failure, so close has nothing more to say. */
    ck_assert_int_eq(aiometer_amap_close(it), 0);

    size_t started = check_stopped(&p, &st, N);
    ck_assert_msg(started < N, "all %zu jobs started despite the failure", started);
    ck_assert_uint_eq(delivered, started - 1);
    ck_assert_uint_eq(st.failed, 1);
    ck_assert_uint_eq(st.completed, started - 1);
    ck_assert_uint_eq(st.failed_index, 3);
}
END_TEST

START_TEST(test_amap_close_reports_unread_failure)
{
    enum { N = 10 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_stats st;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    set_sleep(items, 1, N, 0.01, SLEEP_PLAIN);
    items[0].fail = EPIPE;
    o.max_at_once = 2;
    o.stats = &st;

    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    ck_assert_int_eq(aiometer_amap_close(it), EPIPE);
    ck_assert_uint_eq(st.failed, 1);
    ck_assert_uint_eq(st.failed_index, 0);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
}
END_TEST

/* A job that was already running when another failed still finishes, and
 * its result comes after the error. */
START_TEST(test_amap_results_after_failure)
{
    enum { N = 2 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, args, N);
    items[0].sleep = 0.4; /* plain: it does not stop when cancelled */
    items[1].sleep = 0.05;
    items[1].fail = EIO;

    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    wait_started(&p, N);
    ck_assert_int_eq(aiometer_amap_next(it, &result, &index), EIO);
    ck_assert_msg(!ldi(&items[0].done),
                  "the error waited for the slow job instead of coming first");
    ck_assert_int_eq(aiometer_amap_next(it, &result, &index), 0);
    ck_assert_uint_eq(index, 0);
    ck_assert_ptr_eq(result, args[0]);
    ck_assert_int_eq(aiometer_amap_next(it, &result, &index), AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
}
END_TEST

/* ---- amap: cancel ------------------------------------------------------- */

/* cancel before the first next, after one, mid-way, one short of the end and
 * after the last result; then read to the end and close. */
START_TEST(test_amap_cancel_at_every_point)
{
    enum { N = 8 };
    static const size_t points[] = {0, 1, N / 2, N - 1, N};
    aiometer_pool *pool = tu_pool(3);

    for (size_t k = 0; k < sizeof points / sizeof points[0]; k++) {
        struct probe p;
        struct item items[N];
        void *args[N];
        unsigned char seen[N] = {0};
        aiometer_stats st;
        aiometer_options o = opts_on(pool);
        aiometer_amap *it = NULL;
        size_t delivered = 0;

        setup_items(&p, items, args, N);
        set_sleep(items, 0, N, 0.04, SLEEP_CANCELLABLE);
        o.max_at_once = 2;
        o.stats = &st;
        ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
        for (size_t r = 0; r < points[k]; r++) {
            read_one(it, args, N, seen);
            delivered++;
        }
        ck_assert_int_eq(aiometer_amap_cancel(it), 0);
        int rc = drain(it, args, N, seen, &delivered);
        /* ECANCELED unless every result had been delivered anyway. */
        ck_assert_msg(rc == ECANCELED || (rc == AIOMETER_DONE && delivered == N),
                      "cancel after %zu reads: next said %d after %zu results", points[k],
                      rc, delivered);
        expect_end(it, rc); /* the end is sticky */
        ck_assert_int_eq(aiometer_amap_close(it), 0);

        size_t started = check_stopped(&p, &st, N);
        ck_assert_uint_le(delivered, started);
        if (points[k] == 0)
            ck_assert_msg(started < N, "cancel before any next: all %zu jobs started",
                          started);
    }
}
END_TEST

START_TEST(test_amap_cancel_after_end)
{
    enum { N = 5 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_pool *pool = tu_pool(2);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t delivered = 0;
    void *result;

    setup_items(&p, items, args, N);
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    ck_assert_int_eq(drain(it, args, N, seen, &delivered), AIOMETER_DONE);
    ck_assert_uint_eq(delivered, N);
    ck_assert_int_eq(aiometer_amap_cancel(it), 0);
    ck_assert_int_eq(aiometer_amap_next(it, &result, NULL), AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
}
END_TEST

/* A consumer blocked in next is woken by a cancel from another thread; the
 * jobs' cancellable sleeps end too. */
START_TEST(test_amap_cancel_wakes_blocked_next)
{
    enum { N = 4 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_pool *pool = tu_pool(N + 1);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    struct canceller c;
    size_t delivered = 0;

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 10.0, SLEEP_CANCELLABLE);
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    c.it = it;
    c.delay = 0.1;
    c.rc = -2;
    double t0 = tu_now();
    ck_assert_int_eq(pthread_create(&c.thread, NULL, canceller_main, &c), 0);
    int rc = drain(it, args, N, seen, &delivered);
    double waited = tu_now() - t0;
    ck_assert_int_eq(pthread_join(c.thread, NULL), 0);
    ck_assert_int_eq(c.rc, 0);
    ck_assert_int_eq(rc, ECANCELED);
    ck_assert_msg(waited >= 0.09 && waited < 3.0, "next returned after %.3f s", waited);
    expect_end(it, ECANCELED);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_msg(tu_now() - t0 < 3.0, "close took the jobs' full sleep");
    ck_assert_uint_eq(ld(&p.saw_cancel), ld(&p.started));
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
}
END_TEST

/* After cancel, close waits only for the jobs that are running. */
START_TEST(test_amap_close_after_cancel_waits_only_running)
{
    enum { N = 50 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_stats st;
    aiometer_pool *pool = tu_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 5.0, SLEEP_CANCELLABLE);
    o.max_at_once = 2;
    o.stats = &st;
    double t0 = tu_now();
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    wait_started(&p, 1);
    tu_sleep(0.02);
    ck_assert_int_eq(aiometer_amap_cancel(it), 0);
    ck_assert_int_eq(aiometer_amap_cancel(it), 0); /* a second cancel is harmless */
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    double took = tu_now() - t0;

    size_t started = check_stopped(&p, &st, N);
    ck_assert_msg(took < 2.5, "close took %.3f s", took);
    ck_assert_uint_ge(started, 1);
    ck_assert_uint_le(started, 2);
    ck_assert_uint_eq(ld(&p.saw_cancel), started);
}
END_TEST

/* ---- amap: races between close/cancel and finishing jobs -------------- */

struct race_probe {
    atomic_size_t started;
    atomic_size_t returned;
};

struct race_item {
    struct race_probe *p;
    size_t i;
};

static void *race_job(void *arg)
{
    struct race_item *x = arg;
    volatile unsigned spin = 0;

    atomic_fetch_add(&x->p->started, 1);
    /* Jobs of uneven length (a few microseconds at most), so that finishing
     * orders vary.  Not sched_yield(): on a loaded machine it hands the core
     * to the load for a whole time slice, and the loop would crawl. */
    for (unsigned k = 0; k < (unsigned)(x->i % 3) * 300; k++)
        spin++;
    atomic_fetch_add(&x->p->returned, 1);
    return x;
}

/* Reads at most `most` results of a race call (or until next says anything
 * but 0), counting wrong and duplicate results rather than asserting, so
 * that the repetition's parameters can go in the failure message.  Returns
 * the last code next said, 0 if it never said anything else. */
static int race_read(aiometer_amap *it, void **args, size_t n, unsigned char *seen,
                     size_t most, size_t *delivered, size_t *wrong, size_t *dup)
{
    int rc = 0;
    for (size_t r = 0; r < most; r++) {
        void *result = NULL;
        size_t index = (size_t)-1;
        rc = aiometer_amap_next(it, &result, &index);
        if (rc != 0)
            break;
        if (index >= n || result != args[index])
            (*wrong)++;
        else if (seen[index]++)
            (*dup)++;
        (*delivered)++;
    }
    return rc;
}

/* 10,000 short calls, each ended by close at a different point, with or
 * without cancel, ordered or not, with a one-result buffer or the default.
 * Checked: no result twice, no wrong result, close never returns with a job
 * running, and without cancel every job runs. */
START_TEST(test_amap_close_early_races)
{
    enum { REPS = 10000, MAXN = 8 };
    aiometer_pool *pool = tu_pool(3);
    size_t dup = 0, wrong = 0, bad_rc = 0, left_running = 0, missing = 0, bad_stats = 0;

    for (size_t rep = 0; rep < REPS; rep++) {
        struct race_probe p;
        struct race_item items[MAXN];
        void *args[MAXN];
        unsigned char seen[MAXN] = {0};
        aiometer_stats st;
        aiometer_options o = opts_on(pool);
        aiometer_amap *it = NULL;
        size_t n = 4 + rep % 5; /* 4 to 8 jobs */
        size_t mode = rep % 4;
        size_t reads = (rep / 4) % (n + 1);
        size_t delivered = 0;
        int rc = 0;

        atomic_init(&p.started, 0);
        atomic_init(&p.returned, 0);
        for (size_t i = 0; i < n; i++) {
            items[i].p = &p;
            items[i].i = i;
            args[i] = &items[i];
        }
        o.ordered = (int)((rep / 7) % 2);
        o.max_buffered = rep % 3 == 0 ? 1 : 0;
        o.max_at_once = rep % 5 == 0 ? 2 : 0;
        o.stats = &st;
        if (aiometer_amap_open(&it, race_job, args, n, &o) != 0)
            ck_abort_msg("amap_open failed at repetition %zu", rep);

        size_t want = mode == 0 ? 0 : mode == 2 ? n + 1 : reads;
        rc = race_read(it, args, n, seen, want, &delivered, &wrong, &dup);
        if ((mode == 1 && rc != 0) || (mode == 2 && rc != AIOMETER_DONE))
            bad_rc++;
        if (mode == 3) {
            if (aiometer_amap_cancel(it) != 0)
                bad_rc++;
            rc = race_read(it, args, n, seen, SIZE_MAX, &delivered, &wrong, &dup);
            if (!(rc == ECANCELED || (rc == AIOMETER_DONE && delivered == n)))
                bad_rc++;
        }
        if (aiometer_amap_close(it) != 0)
            bad_rc++;

        size_t started = atomic_load(&p.started);
        if (atomic_load(&p.returned) != started)
            left_running++;
        if (mode != 3 && started != n)
            missing++;
        if (mode == 2 && delivered != n)
            missing++;
        if (st.started != started || st.completed != started || st.cancelled != n - started)
            bad_stats++;
        if (dup || wrong || bad_rc || left_running || missing || bad_stats)
            ck_abort_msg("repetition %zu (n %zu, mode %zu, reads %zu, ordered %d, "
                         "max_buffered %zu): dup %zu wrong %zu bad_rc %zu (last %d) "
                         "left_running %zu missing %zu bad_stats %zu",
                         rep, n, mode, reads, o.ordered, o.max_buffered, dup, wrong, bad_rc,
                         rc, left_running, missing, bad_stats);
    }
}
END_TEST

Suite *amap_suite(void)
{
    Suite *s = suite_create("amap");
    TCase *tc;

    tc = tu_tcase("amap", 10);
    tcase_add_test(tc, test_amap_each_result_once);
    tcase_add_test(tc, test_amap_index_may_be_null);
    tcase_add_test(tc, test_amap_empty);
    tcase_add_test(tc, test_amap_saturated_pool_progresses);
    tcase_add_test(tc, test_amap_close_without_reading_waits_for_all);
    tcase_add_test(tc, test_amap_close_at_every_point);
        suite_add_tcase(s, tc);

    tc = tu_tcase("amap_failure", 10);
    tcase_add_test(tc, test_amap_failure_surfaces);
    tcase_add_test(tc, test_amap_close_reports_unread_failure);
    tcase_add_test(tc, test_amap_results_after_failure);
        suite_add_tcase(s, tc);

    tc = tu_tcase("amap_cancel", 10);
    tcase_add_test(tc, test_amap_cancel_at_every_point);
    tcase_add_test(tc, test_amap_cancel_after_end);
    tcase_add_test(tc, test_amap_cancel_wakes_blocked_next);
    tcase_add_test(tc, test_amap_close_after_cancel_waits_only_running);
        suite_add_tcase(s, tc);

    tc = tu_tcase("amap_races", 60);
    tcase_add_test(tc, test_amap_close_early_races);
        suite_add_tcase(s, tc);

    return s;
}
