/*
 * check_core.c - the foundation: pools, run_on_each and run_all, max_at_once,
 * failure and cancellation, many callers, nesting and pool destruction.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "aiometer.h"
#include "testutil.h"

#include <check.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Most tests need a few seconds at worst; a deadlock must fail, not hang. */
#define TEST_TIMEOUT 30

/* ---- TCase core ------------------------------------------------------------ */

/* Loop index: 0 default pool, 1 explicit pool of 4, 2 NULL options. */
START_TEST(test_run_on_each_once_each)
{
    enum { N = 200 };
    tracked_ctx c;
    tracked_set s;
    tracked_init(&c, 0, 0, 0);
    set_init(&s, &c, N);
    aiometer_pool *pool = NULL;
    aiometer_options o = {0};
    if (_i == 1) {
        ck_assert_int_eq(aiometer_pool_create(&pool, 4), 0);
        o.pool = pool;
    }
    int rc = aiometer_run_on_each(tracked_job, s.args, N, _i == 2 ? NULL : &o);
    ck_assert_int_eq(rc, 0);
    set_check_complete(&s, 0);
    ck_assert_uint_eq(ld(&c.calls), N);
    if (pool)
        ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
    set_free(&s);
}
END_TEST

/* Jobs of two different functions finishing in reverse order. */
typedef struct order_item {
    size_t index;
    double sleep;
    atomic_size_t *finish_counter;
    size_t finish_rank;
    int tag_a, tag_b; /* their addresses are the results */
} order_item;

static void *order_job_a(void *arg)
{
    order_item *it = arg;
    tu_sleep(it->sleep);
    it->finish_rank = atomic_fetch_add(it->finish_counter, 1);
    return &it->tag_a;
}

static void *order_job_b(void *arg)
{
    order_item *it = arg;
    tu_sleep(it->sleep);
    it->finish_rank = atomic_fetch_add(it->finish_counter, 1);
    return &it->tag_b;
}

/* Loop index: 0 default pool, 1 pool of 4 threads. */
START_TEST(test_run_all_input_order)
{
    enum { N = 16 };
    order_item items[N];
    aiometer_job jobs[N];
    void *results[N];
    atomic_size_t finished;
    atomic_init(&finished, 0);
    for (size_t i = 0; i < N; i++) {
        items[i] = (order_item){.index = i, .sleep = (double)(N - i) * 0.008,
                                .finish_counter = &finished};
        jobs[i].fn = i % 2 ? order_job_b : order_job_a;
        jobs[i].arg = &items[i];
        results[i] = NULL;
    }
    aiometer_pool *pool = NULL;
    aiometer_options o = {0};
    if (_i == 1) {
        ck_assert_int_eq(aiometer_pool_create(&pool, 4), 0);
        o.pool = pool;
    }
    ck_assert_int_eq(aiometer_run_all(jobs, N, results, &o), 0);
    for (size_t i = 0; i < N; i++)
        ck_assert_ptr_eq(results[i], i % 2 ? (void *)&items[i].tag_b : (void *)&items[i].tag_a);
    /* Jobs did finish out of input order: with several running at once, a
     * later job with a shorter sleep finished before an earlier one.  On the
     * default pool all run at once, so the first job (the longest) finished
     * after the last one. */
    size_t inversions = 0;
    for (size_t i = 0; i + 1 < N; i++)
        inversions += items[i].finish_rank > items[i + 1].finish_rank;
    ck_assert_uint_gt(inversions, 0);
    if (_i == 0)
        ck_assert_uint_gt(items[0].finish_rank, items[N - 1].finish_rank);
    if (pool)
        ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

START_TEST(test_n_zero)
{
    tracked_ctx c;
    tracked_set s;
    tracked_init(&c, 0, 0, 0);
    set_init(&s, &c, 1);
    aiometer_stats st;
    memset(&st, 0xa5, sizeof st);
    aiometer_options o = {.stats = &st};
    uint64_t t0 = tu_now_ns();
    ck_assert_int_eq(aiometer_run_on_each(tracked_job, s.args, 0, &o), 0);
    ck_assert_int_eq(aiometer_run_all(s.jobs, 0, s.results, &o), 0);
    ck_assert_int_eq(aiometer_run_all(s.jobs, 0, s.results, NULL), 0);
    ck_assert_msg(tu_since(t0) < 1.0, "n == 0 took %.3f s", tu_since(t0));
    ck_assert_uint_eq(ld(&c.calls), 0);
    ck_assert_ptr_eq(s.results[0], (void *)&s); /* untouched */
    set_free(&s);
}
END_TEST

/* The seed page's sleep sort, with run_on_each appending to a shared list:
 * numbers come out sorted because each job sleeps in proportion to its value
 * and all of them run at once. */
typedef struct sort_ctx {
    atomic_size_t next;
    double out[8];
} sort_ctx;

typedef struct sort_item {
    sort_ctx *c;
    double value;
} sort_item;

static void *sleep_sort_job(void *arg)
{
    sort_item *it = arg;
    tu_sleep(it->value * 0.5); /* 50 ms per 0.1 keeps neighbours well apart */
    it->c->out[atomic_fetch_add(&it->c->next, 1)] = it->value;
    return NULL;
}

/* Tried up to three times: a thread that wakes 50 ms late on a busy machine
 * swaps two neighbours.  A library that ran the jobs one after another would
 * return them in input order every time. */
START_TEST(test_sleep_sort)
{
    static const double numbers[8] = {0.3, 0.1, 0.6, 0.2, 0.7, 0.5, 0.5, 0.2};
    static const double sorted[8] = {0.1, 0.2, 0.2, 0.3, 0.5, 0.5, 0.6, 0.7};
    size_t misplaced = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        sort_ctx c;
        sort_item items[8];
        void *args[8];
        atomic_init(&c.next, 0);
        for (size_t i = 0; i < 8; i++) {
            items[i] = (sort_item){.c = &c, .value = numbers[i]};
            args[i] = &items[i];
        }
        ck_assert_int_eq(aiometer_run_on_each(sleep_sort_job, args, 8, NULL), 0);
        ck_assert_uint_eq(ld(&c.next), 8);
        misplaced = 0;
        for (size_t i = 0; i < 8; i++)
            misplaced += c.out[i] != sorted[i];
        if (misplaced == 0)
            break;
    }
    ck_assert_msg(misplaced == 0, "%zu numbers out of place in every attempt", misplaced);
}
END_TEST

/* A plain call fills every statistic, and a job sees no cancellation. */
static void *cancel_probe_job(void *arg)
{
    atomic_int *seen = arg;
    if (aiometer_cancelled())
        atomic_fetch_add(seen, 1);
    return arg;
}

START_TEST(test_stats)
{
    enum { N = 50 };
    tracked_ctx c;
    tracked_set s;
    tracked_init(&c, 0, 0.0005, 0.003);
    set_init(&s, &c, N);
    aiometer_stats st;
    memset(&st, 0xa5, sizeof st);
    aiometer_options o = {.max_at_once = 5, .stats = &st};
    ck_assert_int_eq(aiometer_run_all(s.jobs, N, s.results, &o), 0);
    set_check_complete(&s, 1);
    ck_assert_uint_eq(st.started, N);
    ck_assert_uint_eq(st.completed, N);
    ck_assert_uint_eq(st.failed, 0);
    ck_assert_uint_eq(st.cancelled, 0);
    ck_assert_uint_eq(st.failed_index, (size_t)-1);
    ck_assert_uint_ge(st.peak_running, 1);
    ck_assert_uint_le(st.peak_running, 5);
    ck_assert_msg(st.elapsed > 0 && st.elapsed < 10, "elapsed %g", st.elapsed);
    ck_assert_msg(st.limiter_wait == 0, "limiter_wait %g without a rate", st.limiter_wait);

    atomic_int seen;
    atomic_init(&seen, 0);
    void *args[N];
    for (size_t i = 0; i < N; i++)
        args[i] = &seen;
    ck_assert_int_eq(aiometer_run_on_each(cancel_probe_job, args, N, NULL), 0);
    ck_assert_int_eq(ldi(&seen), 0);
    set_free(&s);
}
END_TEST

/* ---- TCase limits ----------------------------------------------------------- */

static const size_t caps[5] = {1, 2, 5, 10, 20};

/* aiometer's test: 30 jobs of random sleeps up to 10 ms never run more than
 * max_at_once at once.  Loop index: cap (0-4) times run_on_each/run_all. */
START_TEST(test_max_at_once_never_above)
{
    enum { N = 30 };
    size_t cap = caps[_i / 2];
    int use_all = _i % 2;
    tracked_ctx c;
    tracked_set s;
    tracked_init(&c, 0, 0.0, 0.010);
    set_init(&s, &c, N);
    aiometer_stats st;
    aiometer_options o = {.max_at_once = cap, .stats = &st};
    ck_assert_int_eq(set_run(&s, use_all, &o), 0);
    set_check_complete(&s, use_all);
    ck_assert_msg(tu_tracker_peak(&c.tr) <= cap, "cap %zu: %zu ran at once", cap,
                  tu_tracker_peak(&c.tr));
    ck_assert_uint_le(st.peak_running, cap);
    set_free(&s);
}
END_TEST

/* With jobs that overlap (each waits until `cap` jobs have started), the cap
 * is reached exactly.  Loop index as above. */
START_TEST(test_max_at_once_reached)
{
    enum { N = 30 };
    size_t cap = caps[_i / 2];
    int use_all = _i % 2;
    tracked_ctx c;
    tracked_set s;
    tracked_init(&c, cap, 0.002, 0.010);
    set_init(&s, &c, N);
    aiometer_stats st;
    aiometer_options o = {.max_at_once = cap, .stats = &st};
    uint64_t t0 = tu_now_ns();
    ck_assert_int_eq(set_run(&s, use_all, &o), 0);
    double took = tu_since(t0);
    set_check_complete(&s, use_all);
    ck_assert_msg(atomic_load(&c.gate_timeouts) == 0,
                  "cap %zu: %zu jobs waited in vain for %zu to run at once", cap,
                  atomic_load(&c.gate_timeouts), cap);
    ck_assert_msg(tu_tracker_peak(&c.tr) == cap, "cap %zu: peak %zu", cap,
                  tu_tracker_peak(&c.tr));
    ck_assert_uint_eq(st.peak_running, cap);
    ck_assert_msg(took < 2.5, "cap %zu took %.3f s", cap, took);
    set_free(&s);
}
END_TEST

/* On a pool of T threads at most min(max_at_once, T) run at once, and that
 * many do run. */
static const struct {
    size_t threads, max_at_once, expect;
} pool_caps[] = {{3, 0, 3}, {3, 10, 3}, {4, 2, 2}, {2, 5, 2}, {1, 0, 1}, {2, SIZE_MAX, 2}};

START_TEST(test_pool_size_caps)
{
    enum { N = 12 };
    size_t expect = pool_caps[_i].expect;
    aiometer_pool *pool;
    ck_assert_int_eq(aiometer_pool_create(&pool, pool_caps[_i].threads), 0);
    ck_assert_uint_eq(aiometer_pool_threads(pool), pool_caps[_i].threads);
    tracked_ctx c;
    tracked_set s;
    /* The hold after the rendezvous lets a job beyond the cap, if one were
     * started, overlap with the others and show in the peak. */
    tracked_init(&c, expect, 0.010, 0.020);
    set_init(&s, &c, N);
    aiometer_options o = {.max_at_once = pool_caps[_i].max_at_once, .pool = pool};
    ck_assert_int_eq(set_run(&s, 1, &o), 0);
    set_check_complete(&s, 1);
    ck_assert_uint_eq(ld(&c.gate_timeouts), 0);
    ck_assert_msg(tu_tracker_peak(&c.tr) == expect, "pool %zu, max_at_once %zu: peak %zu",
                  pool_caps[_i].threads, pool_caps[_i].max_at_once, tu_tracker_peak(&c.tr));
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
    set_free(&s);
}
END_TEST

/* On a pool of one thread the caller is that thread: it runs every job. */
typedef struct where_item {
    pthread_t self;
} where_item;

static void *where_job(void *arg)
{
    ((where_item *)arg)->self = pthread_self();
    return arg;
}

START_TEST(test_one_thread_pool_runs_on_caller)
{
    enum { N = 10 };
    aiometer_pool *pool;
    ck_assert_int_eq(aiometer_pool_create(&pool, 1), 0);
    where_item items[N];
    void *args[N];
    for (size_t i = 0; i < N; i++)
        args[i] = &items[i];
    aiometer_options o = {.pool = pool};
    ck_assert_int_eq(aiometer_run_on_each(where_job, args, N, &o), 0);
    for (size_t i = 0; i < N; i++)
        ck_assert_msg(pthread_equal(items[i].self, pthread_self()),
                      "job %zu ran on another thread", i);
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

/* The default pool really runs 256 blocking jobs at once, with no set-up. */
START_TEST(test_default_pool_256_at_once)
{
    enum { N = 256 };
    /* Each test runs in a fresh child, so the default pool reads the
     * environment now, and the documented default applies. */
    unsetenv("AIOMETER_THREADS");
    ck_assert_uint_eq(aiometer_pool_threads(NULL), AIOMETER_DEFAULT_THREADS);
    tracked_ctx c;
    tracked_set s;
    tracked_init(&c, N, 0, 0);
    c.gate_timeout = 5.0;
    set_init(&s, &c, N);
    aiometer_options o = {.max_at_once = N};
    uint64_t t0 = tu_now_ns();
    ck_assert_int_eq(set_run(&s, 1, &o), 0);
    double took = tu_since(t0);
    set_check_complete(&s, 1);
    ck_assert_uint_eq(ld(&c.gate_timeouts), 0);
    ck_assert_uint_eq(tu_tracker_peak(&c.tr), N);
    ck_assert_msg(took < 4.0, "256 rendezvous jobs took %.3f s", took);
    set_free(&s);
}
END_TEST

/* 256 jobs that each sleep 200 ms, with no max_at_once, overlap fully.  The
 * first attempt also starts the pool's 256 threads, which on a loaded
 * machine can take longer than 200 ms, and under ThreadSanitizer (whose
 * thread creation is slow) over a second; so up to three attempts, the
 * later ones on a warm pool, and the last must both overlap fully and end
 * in time. */
START_TEST(test_default_pool_256_sleepers)
{
    enum { N = 256 };
    unsetenv("AIOMETER_THREADS");
    size_t peak = 0;
    double took = 0;
    for (int attempt = 0; attempt < 3 && (peak < N || took >= 1.5); attempt++) {
        tracked_ctx c;
        tracked_set s;
        tracked_init(&c, 0, 0.2, 0.2);
        set_init(&s, &c, N);
        uint64_t t0 = tu_now_ns();
        ck_assert_int_eq(set_run(&s, 0, NULL), 0);
        took = tu_since(t0);
        set_check_complete(&s, 0);
        peak = tu_tracker_peak(&c.tr);
        ck_assert_msg(took >= 0.2, "256 x 200 ms took %.3f s", took);
        set_free(&s);
    }
    ck_assert_uint_eq(peak, N);
    /* Serially this would take 51 s. */
    ck_assert_msg(took < 1.5, "256 x 200 ms took %.3f s on a warm pool", took);
}
END_TEST

/* AIOMETER_THREADS sets the default pool's size when it is first used. */
START_TEST(test_default_pool_env)
{
    enum { N = 10 };
    const char *fork_mode = getenv("CK_FORK");
    if (fork_mode && strcmp(fork_mode, "no") == 0)
        return; /* the default pool may already exist in this process */
    ck_assert_int_eq(setenv("AIOMETER_THREADS", "3", 1), 0);
    ck_assert_uint_eq(aiometer_pool_threads(NULL), 3);
    tracked_ctx c;
    tracked_set s;
    tracked_init(&c, 3, 0.010, 0.020);
    set_init(&s, &c, N);
    ck_assert_int_eq(set_run(&s, 0, NULL), 0);
    set_check_complete(&s, 0);
    ck_assert_uint_eq(ld(&c.gate_timeouts), 0);
    ck_assert_uint_eq(tu_tracker_peak(&c.tr), 3);
    set_free(&s);
}
END_TEST

/* ---- TCase errors ------------------------------------------------------------ */

/* Items of a call in which one job fails. */
typedef struct fail_ctx {
    tu_tracker tr;
    tu_gate gate;
    size_t fail_ticket; /* the job that starts in this place fails */
    int err;
    size_t failed_index; /* written by the failing job */
    size_t wait_for;     /* the failing job first waits for this many to start */
    int mode;            /* what the other jobs do: see fail_job */
    atomic_size_t saw_cancel;
    atomic_size_t not_cancelled;
} fail_ctx;

typedef struct fail_item {
    fail_ctx *c;
    size_t index;
    atomic_int state; /* 0 never ran, 1 running, 2 returned */
} fail_item;

enum { OTHERS_SHORT, OTHERS_POLL, OTHERS_SLEEP };

static void *fail_job(void *arg)
{
    fail_item *it = arg;
    fail_ctx *c = it->c;
    atomic_store(&it->state, 1);
    size_t ticket = tu_tracker_enter(&c->tr);
    tu_gate_arrive(&c->gate);
    if (ticket == c->fail_ticket) {
        if (c->wait_for)
            tu_gate_wait_arrived(&c->gate, c->wait_for, 3.0);
        c->failed_index = it->index;
        aiometer_fail(c->err);
        tu_tracker_leave(&c->tr);
        atomic_store(&it->state, 2);
        return NULL;
    }
    switch (c->mode) {
    case OTHERS_SHORT:
        tu_sleep(0.002);
        break;
    case OTHERS_POLL: {
        uint64_t t0 = tu_now_ns();
        while (!aiometer_cancelled() && tu_since(t0) < 3.0)
            tu_sleep(0.001);
        atomic_fetch_add(aiometer_cancelled() ? &c->saw_cancel : &c->not_cancelled, 1);
        break;
    }
    case OTHERS_SLEEP:
        /* A cancelled call ends the sleep early. */
        atomic_fetch_add(aiometer_sleep(10.0) == ECANCELED && aiometer_cancelled()
                             ? &c->saw_cancel
                             : &c->not_cancelled,
                         1);
        break;
    }
    tu_tracker_leave(&c->tr);
    atomic_store(&it->state, 2);
    return it;
}

static void fail_setup(fail_ctx *c, fail_item *items, void **args, aiometer_job *jobs,
                       void **results, size_t n)
{
    tu_tracker_init(&c->tr);
    tu_gate_init(&c->gate);
    c->failed_index = (size_t)-1;
    atomic_init(&c->saw_cancel, 0);
    atomic_init(&c->not_cancelled, 0);
    for (size_t i = 0; i < n; i++) {
        items[i].c = c;
        items[i].index = i;
        atomic_init(&items[i].state, 0);
        args[i] = &items[i];
        jobs[i] = (aiometer_job){fail_job, &items[i]};
        results[i] = (void *)c; /* a sentinel */
    }
}

/* max_at_once 1: the sixth job to start fails, and nothing starts after it.
 * Loop index: 0 run_on_each, 1 run_all. */
START_TEST(test_fail_stops_new_starts)
{
    enum { N = 20 };
    fail_ctx c = {.fail_ticket = 5, .err = EIO, .mode = OTHERS_SHORT};
    fail_item items[N];
    void *args[N];
    aiometer_job jobs[N];
    void *results[N];
    fail_setup(&c, items, args, jobs, results, N);
    aiometer_pool *pool;
    ck_assert_int_eq(aiometer_pool_create(&pool, 4), 0);
    aiometer_stats st;
    aiometer_options o = {.max_at_once = 1, .pool = pool, .stats = &st};
    int rc = _i ? aiometer_run_all(jobs, N, results, &o)
                : aiometer_run_on_each(fail_job, args, N, &o);
    ck_assert_int_eq(rc, EIO);
    ck_assert_uint_eq(tu_tracker_started(&c.tr), 6);
    tu_sleep(0.050); /* nothing may start after the call returned either */
    ck_assert_uint_eq(tu_tracker_started(&c.tr), 6);
    ck_assert_uint_eq(tu_tracker_finished(&c.tr), 6);
    ck_assert_uint_lt(c.failed_index, N);
    ck_assert_uint_eq(st.failed_index, c.failed_index);
    ck_assert_uint_eq(st.started, 6);
    ck_assert_uint_eq(st.completed, 5);
    ck_assert_uint_eq(st.failed, 1);
    ck_assert_uint_eq(st.cancelled, N - 6);
    size_t never = 0;
    for (size_t i = 0; i < N; i++) {
        int state = atomic_load(&items[i].state);
        ck_assert_int_ne(state, 1);
        if (state == 0)
            never++;
        if (!_i || i == c.failed_index)
            continue;
        if (state == 0)
            ck_assert_msg(results[i] == NULL, "results[%zu] of a job never started", i);
        else
            ck_assert_ptr_eq(results[i], &items[i]);
    }
    ck_assert_uint_eq(never, N - 6);
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

/* The first job waits until four run, then fails: the other three see the
 * cancellation (by polling, or in aiometer_sleep), nothing else starts, and
 * the call returns the failure promptly.  Loop index: 0 poll run_on_each,
 * 1 poll run_all, 2 sleep run_on_each, 3 sleep run_all. */
START_TEST(test_fail_cancels_running)
{
    enum { N = 40 };
    fail_ctx c = {.fail_ticket = 0, .err = EPIPE, .wait_for = 4,
                  .mode = _i < 2 ? OTHERS_POLL : OTHERS_SLEEP};
    fail_item items[N];
    void *args[N];
    aiometer_job jobs[N];
    void *results[N];
    fail_setup(&c, items, args, jobs, results, N);
    aiometer_stats st;
    aiometer_options o = {.max_at_once = 4, .stats = &st};
    uint64_t t0 = tu_now_ns();
    int rc = _i % 2 ? aiometer_run_all(jobs, N, results, &o)
                    : aiometer_run_on_each(fail_job, args, N, &o);
    double took = tu_since(t0);
    ck_assert_int_eq(rc, EPIPE);
    ck_assert_uint_eq(tu_tracker_started(&c.tr), 4);
    ck_assert_uint_eq(ld(&c.saw_cancel), 3);
    ck_assert_uint_eq(ld(&c.not_cancelled), 0);
    ck_assert_msg(took < 2.0, "the call took %.3f s after a failure", took);
    ck_assert_uint_eq(st.failed_index, c.failed_index);
    ck_assert_uint_eq(st.started, 4);
    ck_assert_uint_eq(st.cancelled, N - 4);
    if (_i % 2)
        for (size_t i = 0; i < N; i++)
            if (atomic_load(&items[i].state) == 0)
                ck_assert_ptr_null(results[i]);
    tu_sleep(0.030);
    ck_assert_uint_eq(tu_tracker_started(&c.tr), 4);
}
END_TEST

/* Two jobs fail, one after the other: the call returns the first failure and
 * names its job, even when that job is not job 0. */
typedef struct two_fail {
    tu_gate gate;
    atomic_int second_saw_cancel;
} two_fail;

static void *first_failer(void *arg)
{
    two_fail *t = arg;
    tu_gate_arrive(&t->gate);
    tu_gate_wait_arrived(&t->gate, 2, 3.0);
    aiometer_fail(EIO);
    return NULL;
}

static void *second_failer(void *arg)
{
    two_fail *t = arg;
    tu_gate_arrive(&t->gate);
    uint64_t t0 = tu_now_ns();
    while (!aiometer_cancelled() && tu_since(t0) < 3.0)
        tu_sleep(0.001);
    atomic_store(&t->second_saw_cancel, aiometer_cancelled() != 0);
    aiometer_fail(ENOSPC);
    return NULL;
}

START_TEST(test_first_failure_returned)
{
    two_fail t;
    tu_gate_init(&t.gate);
    atomic_init(&t.second_saw_cancel, 0);
    aiometer_job jobs[2] = {{second_failer, &t}, {first_failer, &t}};
    void *results[2];
    aiometer_stats st;
    aiometer_options o = {.max_at_once = 2, .stats = &st};
    ck_assert_int_eq(aiometer_run_all(jobs, 2, results, &o), EIO);
    ck_assert_int_eq(ldi(&t.second_saw_cancel), 1);
    ck_assert_uint_eq(st.failed_index, 1);
    ck_assert_uint_eq(st.failed, 2);
    ck_assert_uint_eq(st.completed, 0);
    tu_gate_destroy(&t.gate);
}
END_TEST

/* aiometer_fail() takes effect when it is called, not when the failing job
 * returns: a job may fail and then take time to clean up.  Loop index 0: the
 * running sibling sees the cancellation while the failed job is still
 * running.  Loop index 1: short siblings keep finishing meanwhile, and no
 * job starts in the slots they free. */
typedef struct prompt_fail {
    tu_tracker tr;
    tu_gate gate;
    int short_siblings;
    _Atomic uint64_t failed_at;    /* when aiometer_fail() was called, or 0 */
    atomic_size_t started_after;   /* jobs that started 20 ms after that */
    atomic_int sibling_saw;        /* the sibling saw aiometer_cancelled() */
    atomic_int saw_before_return;  /* ...while the failing job still ran */
} prompt_fail;

static void *prompt_fail_job(void *arg)
{
    prompt_fail *p = arg;
    /* A job the library claimed just before the failure may enter a little
     * later; 20 ms after the failure, none may. */
    uint64_t failed_at = atomic_load(&p->failed_at);
    if (failed_at && tu_now_ns() > failed_at + 20000000u)
        atomic_fetch_add(&p->started_after, 1);
    size_t ticket = tu_tracker_enter(&p->tr);
    tu_gate_arrive(&p->gate);
    if (ticket == 0) {
        tu_gate_wait_arrived(&p->gate, 2, 3.0);
        atomic_store(&p->failed_at, tu_now_ns());
        aiometer_fail(EIO);
        uint64_t t0 = tu_now_ns();
        while (!p->short_siblings && !atomic_load(&p->sibling_saw) && tu_since(t0) < 1.0)
            tu_sleep(0.001);
        /* Clean-up time, in which a wrongly started job would show. */
        tu_sleep(0.100);
        atomic_store(&p->saw_before_return, atomic_load(&p->sibling_saw));
    } else if (p->short_siblings) {
        tu_sleep(0.005);
    } else {
        uint64_t t0 = tu_now_ns();
        while (!aiometer_cancelled() && tu_since(t0) < 3.0)
            tu_sleep(0.001);
        atomic_store(&p->sibling_saw, aiometer_cancelled() != 0);
    }
    tu_tracker_leave(&p->tr);
    return arg;
}

START_TEST(test_fail_takes_effect_at_once)
{
    enum { N = 40 };
    prompt_fail p = {.short_siblings = _i};
    tu_tracker_init(&p.tr);
    tu_gate_init(&p.gate);
    atomic_init(&p.failed_at, 0);
    atomic_init(&p.started_after, 0);
    atomic_init(&p.sibling_saw, 0);
    atomic_init(&p.saw_before_return, 0);
    void *args[N];
    for (size_t i = 0; i < N; i++)
        args[i] = &p;
    aiometer_options o = {.max_at_once = 2};
    ck_assert_int_eq(aiometer_run_on_each(prompt_fail_job, args, N, &o), EIO);
    if (!_i)
        ck_assert_msg(ldi(&p.saw_before_return),
                      "the sibling saw no cancellation while the failed job ran on");
    ck_assert_msg(ld(&p.started_after) == 0, "%zu jobs started 20 ms after aiometer_fail()",
                  ld(&p.started_after));
    tu_gate_destroy(&p.gate);
}
END_TEST

/* aiometer_fail(0) is ignored; a negative error is recorded as EINVAL. */
static void *fail_with_arg(void *arg)
{
    aiometer_fail(*(int *)arg);
    return arg;
}

START_TEST(test_fail_values)
{
    int zero = 0, negative = -3, eagain = EAGAIN;
    void *args0[3] = {&zero, &zero, &zero};
    ck_assert_int_eq(aiometer_run_on_each(fail_with_arg, args0, 3, NULL), 0);
    void *args1[1] = {&negative};
    ck_assert_int_eq(aiometer_run_on_each(fail_with_arg, args1, 1, NULL), EINVAL);
    /* An errno value that the library itself may return passes through. */
    void *args2[1] = {&eagain};
    ck_assert_int_eq(aiometer_run_on_each(fail_with_arg, args2, 1, NULL), EAGAIN);
}
END_TEST

/* Outside a job, fail does nothing and cancelled says 0. */
START_TEST(test_outside_a_job)
{
    ck_assert_int_eq(aiometer_cancelled(), 0);
    aiometer_fail(EIO);
    ck_assert_int_eq(aiometer_cancelled(), 0);
    tracked_ctx c;
    tracked_set s;
    tracked_init(&c, 0, 0, 0);
    set_init(&s, &c, 5);
    ck_assert_int_eq(set_run(&s, 1, NULL), 0);
    set_check_complete(&s, 1);
    ck_assert_int_eq(aiometer_cancelled(), 0);
    set_free(&s);
}
END_TEST

/* A failure inside a nested call fails that call only: the outer job gets
 * the error back, is not itself cancelled, and the outer call succeeds. */
typedef struct nested_fail {
    aiometer_pool *pool;
    int inner_rc;
    int cancelled_after;
    atomic_size_t inner_runs;
    atomic_size_t outer_done;
} nested_fail;

static void *inner_maybe_fail(void *arg)
{
    nested_fail *nf = arg;
    if (atomic_fetch_add(&nf->inner_runs, 1) == 1)
        aiometer_fail(EIO);
    return NULL;
}

static void *outer_with_failing_inner(void *arg)
{
    nested_fail *nf = arg;
    if (nf->inner_rc == -1) {
        nf->inner_rc = 0; /* only one outer job runs the inner call */
        aiometer_job jobs[4];
        void *results[4];
        for (size_t i = 0; i < 4; i++)
            jobs[i] = (aiometer_job){inner_maybe_fail, nf};
        aiometer_options o = {.pool = nf->pool, .max_at_once = 1};
        nf->inner_rc = aiometer_run_all(jobs, 4, results, &o);
        nf->cancelled_after = aiometer_cancelled();
    }
    atomic_fetch_add(&nf->outer_done, 1);
    return arg;
}

START_TEST(test_nested_failure_isolated)
{
    nested_fail nf = {.inner_rc = -1};
    atomic_init(&nf.inner_runs, 0);
    atomic_init(&nf.outer_done, 0);
    ck_assert_int_eq(aiometer_pool_create(&nf.pool, 2), 0);
    void *args[3] = {&nf, &nf, &nf};
    /* max_at_once 1 so that only one outer job takes the inner branch. */
    aiometer_options o = {.pool = nf.pool, .max_at_once = 1};
    ck_assert_int_eq(aiometer_run_on_each(outer_with_failing_inner, args, 3, &o), 0);
    ck_assert_int_eq(nf.inner_rc, EIO);
    ck_assert_uint_eq(ld(&nf.inner_runs), 2);
    ck_assert_int_eq(nf.cancelled_after, 0);
    ck_assert_uint_eq(ld(&nf.outer_done), 3);
    ck_assert_int_eq(aiometer_pool_destroy(nf.pool), 0);
}
END_TEST

/* ---- TCase threads ------------------------------------------------------------ */

typedef struct caller {
    aiometer_pool *pool;
    size_t max_at_once;
    size_t n;
    int fail; /* this caller's call has a failing job */
    int rc;
    size_t peak;
    size_t calls;
    int results_ok;
} caller;

static void *caller_main(void *arg)
{
    caller *cl = arg;
    tracked_ctx c;
    tracked_set s;
    tracked_init(&c, 0, 0.0, 0.003);
    set_init(&s, &c, cl->n);
    fail_ctx fc = {.err = ENOLINK, .mode = OTHERS_SHORT};
    fail_item fitems[1];
    void *fargs[1];
    aiometer_job fjobs[1];
    void *fres[1];
    if (cl->fail) {
        /* Replace the last job by one that fails as soon as it runs. */
        fail_setup(&fc, fitems, fargs, fjobs, fres, 1);
        s.jobs[cl->n - 1] = fjobs[0];
    }
    aiometer_options o = {.max_at_once = cl->max_at_once, .pool = cl->pool};
    cl->rc = aiometer_run_all(s.jobs, cl->n, s.results, &o);
    cl->peak = tu_tracker_peak(&c.tr);
    cl->calls = atomic_load(&c.calls);
    cl->results_ok = 1;
    if (!cl->fail)
        for (size_t i = 0; i < cl->n; i++)
            if (s.results[i] != &s.items[i] || atomic_load(&s.items[i].runs) != 1)
                cl->results_ok = 0;
    set_free(&s);
    return NULL;
}

/* Eight threads call run_all at once; loop index: 0 one shared pool of 4,
 * 1 the default pool, 2 a pool of 1. */
START_TEST(test_many_callers)
{
    enum { T = 8, N = 40 };
    aiometer_pool *pool = NULL;
    if (_i == 0)
        ck_assert_int_eq(aiometer_pool_create(&pool, 4), 0);
    if (_i == 2)
        ck_assert_int_eq(aiometer_pool_create(&pool, 1), 0);
    caller cl[T];
    pthread_t th[T];
    for (size_t t = 0; t < T; t++) {
        cl[t] = (caller){.pool = pool, .max_at_once = 1 + t % 3, .n = N};
        tu_thread_start(&th[t], caller_main, &cl[t]);
    }
    for (size_t t = 0; t < T; t++)
        tu_thread_join(th[t]);
    for (size_t t = 0; t < T; t++) {
        ck_assert_int_eq(cl[t].rc, 0);
        ck_assert_msg(cl[t].results_ok, "caller %zu: wrong results", t);
        ck_assert_uint_eq(cl[t].calls, N);
        ck_assert_msg(cl[t].peak <= cl[t].max_at_once, "caller %zu: peak %zu above %zu", t,
                      cl[t].peak, cl[t].max_at_once);
    }
    if (pool)
        ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

/* A failure in one thread's call leaves the other threads' calls alone. */
START_TEST(test_failure_is_per_call)
{
    enum { T = 4, N = 30 };
    aiometer_pool *pool;
    ck_assert_int_eq(aiometer_pool_create(&pool, 4), 0);
    caller cl[T];
    pthread_t th[T];
    for (size_t t = 0; t < T; t++) {
        cl[t] = (caller){.pool = pool, .max_at_once = 2, .n = N, .fail = t == 0};
        tu_thread_start(&th[t], caller_main, &cl[t]);
    }
    for (size_t t = 0; t < T; t++)
        tu_thread_join(th[t]);
    ck_assert_int_eq(cl[0].rc, ENOLINK);
    for (size_t t = 1; t < T; t++) {
        ck_assert_int_eq(cl[t].rc, 0);
        ck_assert(cl[t].results_ok);
        ck_assert_uint_eq(cl[t].calls, N);
    }
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

/* Nested calls: each job at depth > 0 runs `width` jobs one level down on
 * the same pool. */
typedef struct nest {
    aiometer_pool *pool;
    int depth;
    size_t width;
    size_t max_at_once;
    atomic_size_t *leaves;
    atomic_size_t *errors;
} nest;

static void *nest_job(void *arg)
{
    nest *n = arg;
    if (n->depth == 0) {
        atomic_fetch_add(n->leaves, 1);
        tu_sleep(0.001);
        return arg;
    }
    nest child = *n;
    child.depth--;
    aiometer_job jobs[8];
    void *results[8];
    for (size_t i = 0; i < n->width; i++)
        jobs[i] = (aiometer_job){nest_job, &child};
    aiometer_options o = {.pool = n->pool, .max_at_once = n->max_at_once};
    int rc = aiometer_run_all(jobs, n->width, results, &o);
    if (rc != 0)
        atomic_fetch_add(n->errors, 1);
    for (size_t i = 0; i < n->width; i++)
        if (results[i] != &child)
            atomic_fetch_add(n->errors, 1);
    return arg;
}

static size_t ipow(size_t b, int e)
{
    size_t r = 1;
    while (e-- > 0)
        r *= b;
    return r;
}

static const struct {
    size_t threads;
    int depth;
    size_t width, max_at_once;
} nest_cases[] = {{1, 2, 4, 0}, {1, 3, 3, 0}, {2, 3, 3, 1}, {2, 2, 5, 3}, {1, 2, 4, 4}};

static void run_nest(aiometer_pool *pool, int depth, size_t width, size_t max_at_once,
                     atomic_size_t *leaves, atomic_size_t *errors)
{
    nest top = {.pool = pool, .depth = depth, .width = width, .max_at_once = max_at_once,
                .leaves = leaves, .errors = errors};
    if (nest_job(&top) != &top)
        atomic_fetch_add(errors, 1);
}

START_TEST(test_nested_calls)
{
    aiometer_pool *pool;
    ck_assert_int_eq(aiometer_pool_create(&pool, nest_cases[_i].threads), 0);
    atomic_size_t leaves, errors;
    atomic_init(&leaves, 0);
    atomic_init(&errors, 0);
    run_nest(pool, nest_cases[_i].depth, nest_cases[_i].width, nest_cases[_i].max_at_once,
             &leaves, &errors);
    ck_assert_uint_eq(ld(&errors), 0);
    ck_assert_uint_eq(ld(&leaves), ipow(nest_cases[_i].width, nest_cases[_i].depth));
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

typedef struct nest_thread {
    aiometer_pool *pool;
    atomic_size_t leaves, errors;
} nest_thread;

static void *nest_thread_main(void *arg)
{
    nest_thread *nt = arg;
    run_nest(nt->pool, 3, 3, 0, &nt->leaves, &nt->errors);
    return NULL;
}

/* Two threads at once run nested calls on one pool of a single thread. */
START_TEST(test_nested_two_threads_one_thread_pool)
{
    aiometer_pool *pool;
    ck_assert_int_eq(aiometer_pool_create(&pool, 1), 0);
    nest_thread nt[2];
    pthread_t th[2];
    for (size_t t = 0; t < 2; t++) {
        nt[t].pool = pool;
        atomic_init(&nt[t].leaves, 0);
        atomic_init(&nt[t].errors, 0);
        tu_thread_start(&th[t], nest_thread_main, &nt[t]);
    }
    for (size_t t = 0; t < 2; t++)
        tu_thread_join(th[t]);
    for (size_t t = 0; t < 2; t++) {
        ck_assert_uint_eq(ld(&nt[t].errors), 0);
        ck_assert_uint_eq(ld(&nt[t].leaves), 27);
    }
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

/* ---- TCase destroy ------------------------------------------------------------ */

START_TEST(test_destroy_idle)
{
    aiometer_pool *pool;
    ck_assert_int_eq(aiometer_pool_create(&pool, 3), 0);
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
    ck_assert_int_eq(aiometer_pool_create(&pool, 3), 0);
    tracked_ctx c;
    tracked_set s;
    tracked_init(&c, 3, 0.001, 0.002);
    set_init(&s, &c, 9);
    aiometer_options o = {.pool = pool};
    ck_assert_int_eq(set_run(&s, 0, &o), 0);
    set_check_complete(&s, 0);
    ck_assert_uint_eq(tu_tracker_peak(&c.tr), 3);
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
    set_free(&s);
}
END_TEST

typedef struct busy {
    aiometer_pool *pool;
    tu_gate started; /* jobs arrive here */
    tu_gate release; /* the test opens this */
    int rc;
    atomic_int waited_in_vain;
} busy;

static void *busy_job(void *arg)
{
    busy *b = arg;
    tu_gate_arrive(&b->started);
    if (tu_gate_wait_open(&b->release, 5.0) != 0)
        atomic_store(&b->waited_in_vain, 1);
    return arg;
}

static void *busy_caller(void *arg)
{
    busy *b = arg;
    void *args[4] = {b, b, b, b};
    aiometer_options o = {.pool = b->pool};
    b->rc = aiometer_run_on_each(busy_job, args, 4, &o);
    return NULL;
}

/* Destroy with a call in flight: EBUSY, and the pool goes on working. */
START_TEST(test_destroy_busy)
{
    busy b = {.rc = -1};
    tu_gate_init(&b.started);
    tu_gate_init(&b.release);
    atomic_init(&b.waited_in_vain, 0);
    ck_assert_int_eq(aiometer_pool_create(&b.pool, 2), 0);
    pthread_t th;
    tu_thread_start(&th, busy_caller, &b);
    ck_assert_int_eq(tu_gate_wait_arrived(&b.started, 1, 5.0), 0);
    ck_assert_int_eq(aiometer_pool_destroy(b.pool), EBUSY);
    ck_assert_int_eq(aiometer_pool_destroy(b.pool), EBUSY);
    tu_gate_open(&b.release);
    tu_thread_join(th);
    ck_assert_int_eq(b.rc, 0);
    ck_assert_int_eq(ldi(&b.waited_in_vain), 0);
    ck_assert_uint_eq(tu_gate_arrived(&b.started), 4);

    /* Still usable, and both its threads still run jobs. */
    tracked_ctx c;
    tracked_set s;
    tracked_init(&c, 2, 0.001, 0.002);
    set_init(&s, &c, 6);
    aiometer_options o = {.pool = b.pool};
    ck_assert_int_eq(set_run(&s, 1, &o), 0);
    set_check_complete(&s, 1);
    ck_assert_uint_eq(ld(&c.gate_timeouts), 0);
    ck_assert_uint_eq(tu_tracker_peak(&c.tr), 2);
    ck_assert_int_eq(aiometer_pool_destroy(b.pool), 0);
    set_free(&s);
    tu_gate_destroy(&b.started);
    tu_gate_destroy(&b.release);
}
END_TEST

/* A job that tries to destroy its own pool gets EBUSY. */
typedef struct self_destroy {
    aiometer_pool *pool;
    atomic_int rc;
} self_destroy;

static void *self_destroy_job(void *arg)
{
    self_destroy *sd = arg;
    atomic_store(&sd->rc, aiometer_pool_destroy(sd->pool));
    return arg;
}

START_TEST(test_destroy_from_job)
{
    self_destroy sd;
    atomic_init(&sd.rc, -1);
    ck_assert_int_eq(aiometer_pool_create(&sd.pool, 2), 0);
    void *args[1] = {&sd};
    aiometer_options o = {.pool = sd.pool};
    ck_assert_int_eq(aiometer_run_on_each(self_destroy_job, args, 1, &o), 0);
    ck_assert_int_eq(ldi(&sd.rc), EBUSY);
    ck_assert_int_eq(aiometer_pool_destroy(sd.pool), 0);
}
END_TEST

/* ---- the suite ---------------------------------------------------------------- */

Suite *core_suite(void)
{
    Suite *s = suite_create("core");

    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_loop_test(tc, test_run_on_each_once_each, 0, 3);
    tcase_add_loop_test(tc, test_run_all_input_order, 0, 2);
    tcase_add_test(tc, test_n_zero);
    tcase_add_test(tc, test_sleep_sort);
    tcase_add_test(tc, test_stats);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_loop_test(tc, test_max_at_once_never_above, 0, 10);
    tcase_add_loop_test(tc, test_max_at_once_reached, 0, 10);
    tcase_add_loop_test(tc, test_pool_size_caps, 0,
                        (int)(sizeof pool_caps / sizeof pool_caps[0]));
    tcase_add_test(tc, test_one_thread_pool_runs_on_caller);
    tcase_add_test(tc, test_default_pool_256_at_once);
    tcase_add_test(tc, test_default_pool_256_sleepers);
    tcase_add_test(tc, test_default_pool_env);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_loop_test(tc, test_fail_stops_new_starts, 0, 2);
    tcase_add_loop_test(tc, test_fail_cancels_running, 0, 4);
    tcase_add_test(tc, test_first_failure_returned);
    tcase_add_loop_test(tc, test_fail_takes_effect_at_once, 0, 2);
    tcase_add_test(tc, test_fail_values);
    tcase_add_test(tc, test_outside_a_job);
    tcase_add_test(tc, test_nested_failure_isolated);
    suite_add_tcase(s, tc);


    tc = tcase_create("threads");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_loop_test(tc, test_many_callers, 0, 3);
    tcase_add_test(tc, test_failure_is_per_call);
    tcase_add_loop_test(tc, test_nested_calls, 0,
                        (int)(sizeof nest_cases / sizeof nest_cases[0]));
    tcase_add_test(tc, test_nested_two_threads_one_thread_pool);
    suite_add_tcase(s, tc);

    tc = tcase_create("destroy");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_test(tc, test_destroy_idle);
    tcase_add_test(tc, test_destroy_busy);
    tcase_add_test(tc, test_destroy_from_job);
    suite_add_tcase(s, tc);

    return s;
}
