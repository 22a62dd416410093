/*
 * check_limiter.c - max_per_second: the GCRA limiter, burst, fractional and
 * infinite rates, invalid values, rate together with max_at_once, failures
 * and deadlines that wake a waiting dispatcher, and shared limiters.
 *
 * Timing checks use two kinds of bound.  Lower bounds are strict (half a
 * millisecond for rounding): the limiter books start times exactly, and a
 * job can only be seen to start after its booked time, so a start seen early
 * is a real bug.  Upper bounds allow for a noisy machine: a thread may wake
 * late, but not by tens of milliseconds.
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
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TEST_TIMEOUT 30

/* Rounding slack for strict lower bounds, in seconds. */
#define EPS 0.0005
/* How late a start may be seen on a busy machine, in seconds, and how many
 * times a test whose starts came too late is tried before it fails. */
#define LATE 0.100
#define ATTEMPTS 5

/* ---- a job that records when it starts ------------------------------------- */

typedef struct stamp_ctx {
    tu_starts starts;
    tu_tracker tr;
    double hold;         /* every job sleeps this long */
    size_t long_ticket;  /* the job that starts in this place... */
    double long_hold;    /* ...sleeps this long instead (if > 0) */
    size_t fail_ticket;  /* the job that starts in this place... */
    int fail_err;        /* ...fails with this error (if nonzero) */
    /* Set by stamp_run, which may run in a helper thread where Check's
     * assertions must not be used; stamp_done() asserts it is 0. */
    atomic_int bad_results;
} stamp_ctx;

/* One call's view of a stamp_ctx: several calls may share the context (to
 * record their starts in one place), so each counts its own jobs here. */
typedef struct stamp_call {
    stamp_ctx *c;
    atomic_size_t started;
} stamp_call;

static void *stamp_job(void *arg)
{
    stamp_call *call = arg;
    stamp_ctx *c = call->c;
    tu_starts_record(&c->starts);
    atomic_fetch_add(&call->started, 1);
    size_t ticket = tu_tracker_enter(&c->tr);
    if (c->long_hold > 0 && ticket == c->long_ticket)
        tu_sleep(c->long_hold);
    else if (c->hold > 0)
        tu_sleep(c->hold);
    if (c->fail_err && ticket == c->fail_ticket)
        aiometer_fail(c->fail_err);
    tu_tracker_leave(&c->tr);
    return arg;
}

static void stamp_init(stamp_ctx *c, size_t cap)
{
    memset(c, 0, sizeof *c);
    tu_starts_init(&c->starts, cap);
    tu_tracker_init(&c->tr);
    atomic_init(&c->bad_results, 0);
}

/* Assert that every call's results were right, and free the context. */
static void stamp_done(stamp_ctx *c)
{
    ck_assert_msg(atomic_load(&c->bad_results) == 0, "a call of this test had wrong results");
    tu_starts_free(&c->starts);
}

/* Run n stamp jobs through run_all (use_all) or run_on_each; for run_all,
 * check the results of jobs that ran and that the others are NULL.  Safe to
 * call from any thread: problems are recorded in c->bad_results. */
static int stamp_run(stamp_ctx *c, size_t n, int use_all, const aiometer_options *o)
{
    stamp_call call = {.c = c};
    atomic_init(&call.started, 0);
    void **args = calloc(n, sizeof *args);
    aiometer_job *jobs = calloc(n, sizeof *jobs);
    void **results = calloc(n, sizeof *results);
    if (!args || !jobs || !results)
        abort();
    for (size_t i = 0; i < n; i++) {
        args[i] = &call;
        jobs[i] = (aiometer_job){stamp_job, &call};
        results[i] = &results; /* a sentinel */
    }
    int rc = use_all ? aiometer_run_all(jobs, n, results, o)
                     : aiometer_run_on_each(stamp_job, args, n, o);
    size_t started = atomic_load(&call.started);
    int bad = 0;
    if (rc == EINVAL) {
        /* Refused: nothing may have started or been written. */
        bad |= started != 0;
        for (size_t i = 0; i < n; i++)
            bad |= results[i] != &results;
    } else if (use_all) {
        size_t ran = 0, nulls = 0;
        for (size_t i = 0; i < n; i++) {
            if (results[i] == &call)
                ran++;
            else if (results[i] == NULL)
                nulls++;
        }
        /* Every job that ran returned &call, and its result is stored,
         * except perhaps that of a job that failed; the others are NULL,
         * and nothing is left unwritten. */
        bad |= ran + nulls != n || ran > started || ran + (rc != 0) < started;
    }
    if (bad)
        atomic_store(&c->bad_results, 1);
    free(args);
    free(jobs);
    free(results);
    return rc;
}

/* Seconds from `base` to the k-th sorted start. */
static double at(const stamp_ctx *c, size_t k, uint64_t base)
{
    return (double)(int64_t)(c->starts.t[k] - base) / 1e9;
}

/* ---- upper bounds on time, with retries ---------------------------------------- */

/* A start that comes later than it should may be the machine's doing (a
 * descheduled thread), so an upper bound that fails is noted here rather
 * than asserted, and the test is tried again; only if every attempt is late
 * does it fail.  Lower bounds, and everything else, are asserted at once. */
typedef struct lateness {
    int late;
    char what[256];
} lateness;

static void check_late(lateness *l, int ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void check_late(lateness *l, int ok, const char *fmt, ...)
{
    if (ok || l->late)
        return;
    l->late = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->what, sizeof l->what, fmt, ap);
    va_end(ap);
}

static void timed(void (*attempt)(lateness *l, int arg), int arg)
{
    lateness l;
    for (int i = 0; i < ATTEMPTS; i++) {
        l.late = 0;
        attempt(&l, arg);
        if (!l.late)
            return;
    }
    ck_abort_msg("late in all %d attempts; the last: %s", ATTEMPTS, l.what);
}

/* Assert that the k-th sorted start is no earlier than `due` seconds after
 * base, and note it if it is later than due + late. */
static void check_start(lateness *l, const stamp_ctx *c, size_t k, uint64_t base, double due,
                        double late)
{
    double t = at(c, k, base);
    ck_assert_msg(t >= due - EPS, "start %zu at %.4f s, not due before %.4f s", k, t, due);
    check_late(l, t <= due + late, "start %zu at %.4f s, due at %.4f s", k, t, due);
}

/* Starts never exceed rate * window + burst over any window between two
 * recorded starts, each window widened by eps.  Starts recorded late look
 * bunched together, so a miss is noted as lateness.  The worst window is
 * found first: Check records every passing assertion, which would be slow in
 * this quadratic loop. */
static void check_windows(lateness *l, const uint64_t *t, size_t n, double rate, size_t burst,
                          double eps)
{
    double worst_excess = -INFINITY, worst_w = 0;
    size_t worst_count = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) {
            double w = (double)(t[j] - t[i]) / 1e9;
            double excess = (double)(j - i + 1) - (rate * (w + eps) + (double)burst);
            if (excess > worst_excess) {
                worst_excess = excess;
                worst_w = w;
                worst_count = j - i + 1;
            }
        }
    check_late(l, worst_excess <= 1e-9, "%zu starts within %.6f s at %g/s, burst %zu",
               worst_count, worst_w, rate, burst);
}

/* ---- TCase rate ---------------------------------------------------------------- */

static const double rates[8] = {5, 10, 20, 30, 40, 50, 70, 100};

/* aiometer's own test: 3 jobs, the largest gap between consecutive starts is
 * within 0.25-1.75 of 1/rate, for 8 rates and both run_on_each and run_all.
 * The 16 cases run at once, each in its own thread with its own call, to
 * keep the test short; they mostly sleep, so they hardly disturb each
 * other.  A gap that is too long can come from a descheduled thread, so a
 * case is tried up to ATTEMPTS times; a gap that is too short, or a third
 * start before it is due, is a bug and fails at once. */
typedef struct gap_case {
    double rate;
    int use_all;
    int rc;
    int bad_results;
    double gap;   /* the largest gap of the last attempt, seconds */
    double third; /* when the third job started, from before the call */
} gap_case;

static void *gap_case_main(void *arg)
{
    gap_case *g = arg;
    double period = 1.0 / g->rate;
    for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
        stamp_ctx c;
        stamp_init(&c, 3);
        aiometer_options o = {.max_per_second = g->rate};
        uint64_t t0 = tu_now_ns();
        g->rc = stamp_run(&c, 3, g->use_all, &o);
        g->bad_results = atomic_load(&c.bad_results);
        size_t n = tu_starts_sort(&c.starts);
        g->gap = n == 3 ? tu_starts_max_gap(&c.starts, 3) : INFINITY;
        g->third = n == 3 ? at(&c, 2, t0) : -1;
        tu_starts_free(&c.starts);
        if (g->rc != 0 || g->bad_results || g->gap < 0.25 * period || g->third < 2 * period - EPS)
            break;
        if (g->gap <= 1.75 * period)
            break;
    }
    return NULL;
}

START_TEST(test_rate_max_gap)
{
    enum { CASES = 2 * sizeof rates / sizeof rates[0] };
    gap_case g[CASES];
    pthread_t th[CASES];
    for (size_t k = 0; k < CASES; k++) {
        g[k] = (gap_case){.rate = rates[k / 2], .use_all = (int)(k % 2)};
        tu_thread_start(&th[k], gap_case_main, &g[k]);
    }
    for (size_t k = 0; k < CASES; k++)
        tu_thread_join(th[k]);
    for (size_t k = 0; k < CASES; k++) {
        double period = 1.0 / g[k].rate;
        const char *how = g[k].use_all ? "run_all" : "run_on_each";
        ck_assert_msg(g[k].rc == 0, "rate %g, %s: returned %d", g[k].rate, how, g[k].rc);
        ck_assert_msg(!g[k].bad_results, "rate %g, %s: wrong results", g[k].rate, how);
        ck_assert_msg(g[k].gap >= 0.25 * period && g[k].gap <= 1.75 * period,
                      "rate %g, %s: largest gap %.4f s, 1/rate %.4f s", g[k].rate, how, g[k].gap,
                      period);
        ck_assert_msg(g[k].third >= 2 * period - EPS, "rate %g, %s: third start at %.4f s",
                      g[k].rate, how, g[k].third);
    }
}
END_TEST

/* Burst 4 at 10/s: four start back to back, then one every 100 ms.  Loop
 * index: 0 run_on_each, 1 run_all. */
static void burst_attempt(lateness *l, int use_all)
{
    enum { N = 7, B = 4 };
    const double period = 0.1;
    stamp_ctx c;
    stamp_init(&c, N);
    aiometer_options o = {.max_per_second = 1 / period, .max_burst = B};
    uint64_t t0 = tu_now_ns();
    ck_assert_int_eq(stamp_run(&c, N, use_all, &o), 0);
    ck_assert_uint_eq(tu_starts_sort(&c.starts), N);
    for (size_t k = 0; k < N; k++)
        check_start(l, &c, k, t0, k < B ? 0 : (double)(k - B + 1) * period, LATE);
    stamp_done(&c);
}

START_TEST(test_burst)
{
    timed(burst_attempt, _i);
}
END_TEST

/* max_burst 0 means 1: a strict spacing, with no saved credit.  Loop index:
 * the burst, 0 or 1. */
static void burst_one_attempt(lateness *l, int burst)
{
    const double period = 0.05;
    stamp_ctx c;
    stamp_init(&c, 3);
    aiometer_options o = {.max_per_second = 1 / period, .max_burst = (size_t)burst};
    uint64_t t0 = tu_now_ns();
    ck_assert_int_eq(stamp_run(&c, 3, 0, &o), 0);
    ck_assert_uint_eq(tu_starts_sort(&c.starts), 3);
    for (size_t k = 0; k < 3; k++)
        check_start(l, &c, k, t0, (double)k * period, LATE);
    stamp_done(&c);
}

START_TEST(test_burst_zero_is_one)
{
    timed(burst_one_attempt, _i);
}
END_TEST

/* A fractional rate: 0.5/s starts the second job 2 s after the first. */
static void fractional_attempt(lateness *l, int use_all)
{
    stamp_ctx c;
    stamp_init(&c, 2);
    aiometer_options o = {.max_per_second = 0.5};
    uint64_t t0 = tu_now_ns();
    ck_assert_int_eq(stamp_run(&c, 2, use_all, &o), 0);
    ck_assert_uint_eq(tu_starts_sort(&c.starts), 2);
    check_start(l, &c, 0, t0, 0, LATE);
    check_start(l, &c, 1, t0, 2.0, LATE);
    stamp_done(&c);
}

START_TEST(test_fractional_rate)
{
    timed(fractional_attempt, 1);
}
END_TEST

/* INFINITY and 0 mean no cap; 1e9 is the largest valid rate.  The time
 * bound is about the rate, not about starting threads: a first call on the
 * default pool starts up to 256 of them, which under ThreadSanitizer on a
 * loaded machine can alone take a second, so one uncapped call warms the
 * pool first. */
START_TEST(test_no_cap_rates)
{
    enum { N = 500 };
    static const double no_cap[3] = {0.0, INFINITY, 1e9};
    {
        stamp_ctx c;
        stamp_init(&c, N);
        ck_assert_int_eq(stamp_run(&c, N, 1, NULL), 0);
        stamp_done(&c);
    }
    for (size_t k = 0; k < 3; k++) {
        stamp_ctx c;
        stamp_init(&c, N);
        aiometer_stats st;
        aiometer_options o = {.max_per_second = no_cap[k], .stats = &st};
        uint64_t t0 = tu_now_ns();
        ck_assert_int_eq(stamp_run(&c, N, 1, &o), 0);
        double took = tu_since(t0);
        ck_assert_uint_eq(tu_tracker_started(&c.tr), N);
        ck_assert_uint_eq(st.completed, N);
        ck_assert_msg(took < 1.0, "rate %g: %d jobs took %.3f s", no_cap[k], N, took);
        ck_assert_msg(st.limiter_wait < 0.01, "rate %g: limiter_wait %g", no_cap[k],
                      st.limiter_wait);
        stamp_done(&c);
    }
}
END_TEST

/* 0.2/s starts one job, then waits 5 s; a deadline ends the wait.  Rates so
 * low that their interval overflows 64-bit nanoseconds are valid too (only
 * negative, NaN and above 1e9 are not) and must behave the same: neither
 * start a second job at once (a wrapped interval) nor be refused. */
START_TEST(test_tiny_rate)
{
    static const double tiny[3] = {0.2, 1e-12, 1e-300};
    for (size_t k = 0; k < 3; k++) {
        stamp_ctx c;
        stamp_init(&c, 3);
        aiometer_stats st;
        aiometer_options o = {.max_per_second = tiny[k], .timeout = 0.3, .stats = &st};
        uint64_t t0 = tu_now_ns();
        int rc = stamp_run(&c, 3, k % 2, &o);
        double took = tu_since(t0);
        ck_assert_msg(rc == ETIMEDOUT, "rate %g: returned %d (%s), not ETIMEDOUT", tiny[k], rc,
                      aiometer_strerror(rc));
        ck_assert_uint_eq(tu_tracker_started(&c.tr), 1);
        ck_assert_uint_eq(st.started, 1);
        ck_assert_uint_eq(st.cancelled, 2);
        ck_assert_msg(took >= 0.3 - EPS && took < 0.3 + 0.5, "rate %g: returned after %.3f s",
                      tiny[k], took);
        stamp_done(&c);
    }
}
END_TEST

START_TEST(test_limiter_wait_stat)
{
    stamp_ctx c;
    stamp_init(&c, 3);
    aiometer_stats st;
    aiometer_options o = {.max_per_second = 10, .stats = &st};
    ck_assert_int_eq(stamp_run(&c, 3, 0, &o), 0);
    /* The second job waits 0.1 s and the third 0.2 s, or one dispatcher
     * waits 0.2 s in all; either way well above 0.15 s. */
    ck_assert_msg(st.limiter_wait >= 0.15 && st.limiter_wait < 1.0, "limiter_wait %g",
                  st.limiter_wait);
    ck_assert_msg(st.elapsed >= 0.2 - EPS, "elapsed %g", st.elapsed);
    stamp_done(&c);
}
END_TEST

/* ---- TCase with_max_at_once ---------------------------------------------------- */

/* 2 at once at 20/s, jobs of 120 ms: starts at 0, 50, 120, 170, 240, 290 ms.
 * Each due time is a strict bound: a job starts only once a slot is free
 * (the end of a job that started no earlier than its own due time) and the
 * rate allows it.  Loop index: 0 run_on_each, 1 run_all. */
static void rate_cap_attempt(lateness *l, int use_all)
{
    enum { N = 6 };
    static const double due[N] = {0, 0.05, 0.12, 0.17, 0.24, 0.29};
    stamp_ctx c;
    stamp_init(&c, N);
    c.hold = 0.12;
    aiometer_options o = {.max_per_second = 20, .max_at_once = 2};
    uint64_t t0 = tu_now_ns();
    ck_assert_int_eq(stamp_run(&c, N, use_all, &o), 0);
    ck_assert_uint_eq(tu_starts_sort(&c.starts), N);
    ck_assert_uint_le(tu_tracker_peak(&c.tr), 2);
    /* Lateness accumulates along the chain of slots, so allow more. */
    for (size_t k = 0; k < N; k++)
        check_start(l, &c, k, t0, due[k], 2 * LATE);
    stamp_done(&c);
}

START_TEST(test_rate_and_max_at_once)
{
    timed(rate_cap_attempt, _i);
}
END_TEST

/* One at a time at 10/s; the first job holds its slot for 350 ms.  The slot
 * freed after that long wait must not release a catch-up burst: the jobs
 * after it are still spaced 100 ms apart.  Strictly: the second job asks to
 * start no earlier than 350 ms after the first started, and each later one
 * is granted a full interval after the one before it. */
static void catch_up_attempt(lateness *l, int use_all)
{
    enum { N = 4 };
    const double period = 0.1, hold = 0.35;
    stamp_ctx c;
    stamp_init(&c, N);
    c.long_ticket = 0;
    c.long_hold = hold;
    aiometer_options o = {.max_per_second = 1 / period, .max_at_once = 1};
    ck_assert_int_eq(stamp_run(&c, N, use_all, &o), 0);
    ck_assert_uint_eq(tu_starts_sort(&c.starts), N);
    ck_assert_uint_eq(tu_tracker_peak(&c.tr), 1);
    uint64_t first = c.starts.t[0];
    for (size_t k = 1; k < N; k++)
        check_start(l, &c, k, first, hold + (double)(k - 1) * period, 2 * LATE);
    stamp_done(&c);
}

START_TEST(test_no_catch_up_burst)
{
    timed(catch_up_attempt, _i);
}
END_TEST

/* ---- TCase wake ------------------------------------------------------------------ */

/* At 0.01/s the second job would start after 100 s: the first job's failure
 * must end the wait at once.  Loop index: 0 run_on_each, 1 run_all, 2 a
 * shared limiter, 3 a shared limiter with max_at_once. */
START_TEST(test_failure_wakes_dispatcher)
{
    enum { N = 5 };
    stamp_ctx c;
    stamp_init(&c, N);
    c.hold = 0.05;
    c.fail_ticket = 0;
    c.fail_err = EIO;
    aiometer_limiter *lim = NULL;
    aiometer_stats st;
    aiometer_options o = {.stats = &st};
    if (_i < 2) {
        o.max_per_second = 0.01;
    } else {
        ck_assert_int_eq(aiometer_limiter_create(&lim, 0.01, 1), 0);
        o.limiter = lim;
        o.max_at_once = _i == 3 ? 2 : 0;
    }
    uint64_t t0 = tu_now_ns();
    ck_assert_int_eq(stamp_run(&c, N, _i % 2, &o), EIO);
    double took = tu_since(t0);
    ck_assert_msg(took >= 0.05 - EPS && took < 0.05 + 0.5, "returned after %.3f s", took);
    ck_assert_uint_eq(tu_tracker_started(&c.tr), 1);
    ck_assert_uint_eq(st.started, 1);
    ck_assert_uint_eq(st.cancelled, N - 1);
    if (lim)
        ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    stamp_done(&c);
}
END_TEST

/* ---- TCase shared ------------------------------------------------------------------ */

typedef struct lim_caller {
    aiometer_limiter *lim;
    stamp_ctx *c;
    size_t n;
    int use_all;
    int rc;
} lim_caller;

static void *lim_caller_main(void *arg)
{
    lim_caller *lc = arg;
    aiometer_options o = {.limiter = lc->lim};
    lc->rc = stamp_run(lc->c, lc->n, lc->use_all, &o);
    return NULL;
}

/* While a call waits on the limiter, destroying it says EBUSY. */
START_TEST(test_limiter_destroy_busy)
{
    aiometer_limiter *lim;
    ck_assert_int_eq(aiometer_limiter_create(&lim, 2.0, 1), 0);
    stamp_ctx c;
    stamp_init(&c, 2);
    lim_caller lc = {.lim = lim, .c = &c, .n = 2, .rc = -1};
    pthread_t th;
    tu_thread_start(&th, lim_caller_main, &lc);
    /* The first job starts at once; the second is due 0.5 s later. */
    uint64_t t0 = tu_now_ns();
    while (tu_tracker_started(&c.tr) < 1 && tu_since(t0) < 5.0)
        tu_sleep(0.001);
    ck_assert_uint_eq(tu_tracker_started(&c.tr), 1);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), EBUSY);
    tu_thread_join(th);
    ck_assert_int_eq(lc.rc, 0);
    ck_assert_uint_eq(tu_tracker_started(&c.tr), 2);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    stamp_done(&c);
}
END_TEST

/* One limiter, calls one after another: the budget carries over. */
static void across_attempt(lateness *l, int unused)
{
    (void)unused;
    const double period = 0.1;
    aiometer_limiter *lim;
    ck_assert_int_eq(aiometer_limiter_create(&lim, 1 / period, 1), 0);
    stamp_ctx c;
    stamp_init(&c, 3);
    aiometer_options o = {.limiter = lim};
    uint64_t t0 = tu_now_ns();
    for (size_t k = 0; k < 3; k++)
        ck_assert_int_eq(stamp_run(&c, 1, (int)(k % 2), &o), 0);
    ck_assert_uint_eq(tu_starts_sort(&c.starts), 3);
    for (size_t k = 0; k < 3; k++)
        check_start(l, &c, k, t0, (double)k * period, LATE);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    stamp_done(&c);
}

START_TEST(test_limiter_shared_across_calls)
{
    timed(across_attempt, 0);
}
END_TEST

/* Burst credit comes back after idle time, but never more than the burst. */
static void refill_attempt(lateness *l, int unused)
{
    (void)unused;
    enum { B = 3 };
    const double period = 0.1;
    aiometer_limiter *lim;
    ck_assert_int_eq(aiometer_limiter_create(&lim, 1 / period, B), 0);
    aiometer_options o = {.limiter = lim};

    /* A fresh limiter has its whole burst. */
    stamp_ctx c1;
    stamp_init(&c1, B);
    uint64_t t1 = tu_now_ns();
    ck_assert_int_eq(stamp_run(&c1, B, 0, &o), 0);
    ck_assert_uint_eq(tu_starts_sort(&c1.starts), B);
    for (size_t k = 0; k < B; k++)
        check_start(l, &c1, k, t1, 0, LATE);

    tu_sleep(B * period + 0.05); /* idle long enough to earn the full burst back */

    stamp_ctx c2;
    stamp_init(&c2, B + 2);
    uint64_t t2 = tu_now_ns();
    ck_assert_int_eq(stamp_run(&c2, B + 2, 1, &o), 0);
    ck_assert_uint_eq(tu_starts_sort(&c2.starts), B + 2);
    for (size_t k = 0; k < B + 2; k++)
        check_start(l, &c2, k, t2, k < B ? 0 : (double)(k - B + 1) * period, LATE);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    stamp_done(&c1);
    stamp_done(&c2);
}

START_TEST(test_limiter_burst_refills)
{
    timed(refill_attempt, 0);
}
END_TEST

/* A shared limiter and max_per_second both apply: the slower one wins.
 * Loop index: 0 limiter 100/s with 10/s per call, 1 the other way round. */
static void both_attempt(lateness *l, int which)
{
    const double period = 0.1;
    aiometer_limiter *lim;
    ck_assert_int_eq(aiometer_limiter_create(&lim, which == 0 ? 100 : 10, 1), 0);
    stamp_ctx c;
    stamp_init(&c, 3);
    aiometer_options o = {.limiter = lim, .max_per_second = which == 0 ? 10 : 100};
    uint64_t t0 = tu_now_ns();
    ck_assert_int_eq(stamp_run(&c, 3, which, &o), 0);
    ck_assert_uint_eq(tu_starts_sort(&c.starts), 3);
    for (size_t k = 0; k < 3; k++)
        check_start(l, &c, k, t0, (double)k * period, LATE);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    stamp_done(&c);
}

START_TEST(test_limiter_and_max_per_second)
{
    timed(both_attempt, _i);
}
END_TEST

/* Several threads share one limiter: together they never exceed
 * rate * window + burst, and they take as long as one budget needs.  Loop
 * index: 0 two threads at 50/s, burst 5; 1 four threads at 2000/s, burst 10.
 *
 * Two checks.  The strict one: GCRA grants at most rate * w + burst starts in
 * any window w, so the k-th start (from 0) cannot come before
 * (k + 1 - burst) / rate after the first grant, which is no earlier than the
 * moment the threads were started; starts are seen after their grants, so
 * this holds for the recorded times with no allowance for noise.  The loose
 * one checks every window between two recorded starts, widened by eps: a
 * thread descheduled between its grant and its record makes starts look
 * bunched, so eps is generous (tens of milliseconds on a busy machine). */
static const struct {
    size_t threads, per_thread, burst;
    double rate, eps;
} share_cases[] = {{2, 20, 5, 50.0, 0.030}, {4, 250, 10, 2000.0, 0.050}};

static void sharing_attempt(lateness *l, int which)
{
    size_t T = share_cases[which].threads, per = share_cases[which].per_thread;
    size_t burst = share_cases[which].burst, total = T * per;
    double rate = share_cases[which].rate;
    aiometer_limiter *lim;
    ck_assert_int_eq(aiometer_limiter_create(&lim, rate, burst), 0);
    /* One context for all threads, so their starts land in one record. */
    stamp_ctx c;
    stamp_init(&c, total);
    lim_caller lc[4];
    pthread_t th[4];
    uint64_t t0 = tu_now_ns();
    for (size_t t = 0; t < T; t++) {
        lc[t] = (lim_caller){.lim = lim, .c = &c, .n = per, .use_all = (int)(t % 2), .rc = -1};
        tu_thread_start(&th[t], lim_caller_main, &lc[t]);
    }
    for (size_t t = 0; t < T; t++)
        tu_thread_join(th[t]);
    for (size_t t = 0; t < T; t++)
        ck_assert_int_eq(lc[t].rc, 0);
    ck_assert_uint_eq(tu_starts_sort(&c.starts), total);

    /* The strict check; the worst start is found first, then asserted. */
    double worst = INFINITY;
    size_t worst_k = 0;
    for (size_t k = burst; k < total; k++) {
        double margin = at(&c, k, t0) - (double)(k + 1 - burst) / rate;
        if (margin < worst) {
            worst = margin;
            worst_k = k;
        }
    }
    ck_assert_msg(worst >= -EPS, "start %zu came %.6f s before %g/s (burst %zu) allows",
                  worst_k, -worst, rate, burst);
    check_windows(l, c.starts.t, total, rate, burst, share_cases[which].eps);
    double span = at(&c, total - 1, t0), due = (double)(total - burst) / rate;
    check_late(l, span <= due + 0.3, "%zu starts took %.4f s, %.4f s due", total, span, due);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    stamp_done(&c);
}

START_TEST(test_limiter_shared_by_threads)
{
    timed(sharing_attempt, _i);
}
END_TEST

/* ---- the suite ---------------------------------------------------------------- */

Suite *limiter_suite(void)
{
    Suite *s = suite_create("limiter");

    TCase *tc = tcase_create("rate");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_test(tc, test_rate_max_gap);
    tcase_add_loop_test(tc, test_burst, 0, 2);
    tcase_add_loop_test(tc, test_burst_zero_is_one, 0, 2);
    tcase_add_test(tc, test_fractional_rate);
    tcase_add_test(tc, test_no_cap_rates);
    tcase_add_test(tc, test_tiny_rate);
    tcase_add_test(tc, test_limiter_wait_stat);
    suite_add_tcase(s, tc);

    tc = tcase_create("with_max_at_once");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_loop_test(tc, test_rate_and_max_at_once, 0, 2);
    tcase_add_loop_test(tc, test_no_catch_up_burst, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("wake");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_loop_test(tc, test_failure_wakes_dispatcher, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("shared");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_test(tc, test_limiter_destroy_busy);
    tcase_add_test(tc, test_limiter_shared_across_calls);
    tcase_add_test(tc, test_limiter_burst_refills);
    tcase_add_loop_test(tc, test_limiter_and_max_per_second, 0, 2);
    tcase_add_loop_test(tc, test_limiter_shared_by_threads, 0, 2);
    suite_add_tcase(s, tc);

    return s;
}
