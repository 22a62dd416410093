/*
 * w2.c - W2, blocking jobs: 2,000 jobs that each nanosleep 1 ms, at most 64
 * at once.  Ideal wall time 2000 / 64 * 1 ms = 31.25 ms; efficiency is the
 * ideal over the measured time.
 *
 * libaiometer runs twice per repetition: on its own pool of 64 threads and
 * on the default pool with max_at_once = 64.  GLib gets 64 threads; it is
 * allowed to keep 64 idle threads between pools, so that both sides run on
 * warm threads.  The serial loop measures what one nanosleep(1 ms) lasts on
 * this machine, at the default timer slack and at 1 ns: 32 such sleeps
 * (the longest share of one thread) are the floor of the wall time, and
 * the ideal over that floor the best efficiency any pool can reach (the
 * "serial" column of the wall and efficiency rows).  libaiometer runs a third
 * time with the calling thread's timer slack at 1 ns, because the caller
 * may run jobs itself while it waits.
 */
#include <config.h>

#include "bench.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <aiometer.h>
#ifdef BENCH_HAVE_GLIB
#include <glib.h>
#endif

#define W2_N 2000
#define W2_WIDTH 64
#define W2_IDEAL_MS (W2_N / (double)W2_WIDTH * 1.0)
/* Jobs are whole: 2000 = 64 * 31 + 16, so some thread runs 32 sleeps in a
 * row, and no pool can finish before 32 sleeps have passed. */
#define W2_LONGEST_LANE ((W2_N + W2_WIDTH - 1) / W2_WIDTH)
#define W2_SERIAL_SLEEPS 200

static void sleep_1ms(void)
{
    struct timespec ts = {0, 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Where a run's time goes, measured inside the jobs.  Each thread keeps,
 * for the run it last worked in, when its last job ended and the sum of
 * its jobs' times (its lane).  From those: the mean time a thread spends
 * between the end of one job and the start of its next (what the pool adds
 * per job), how much longer than 1 ms one sleep lasts when 64 threads
 * sleep at once, and the longest lane.  No pool could end a run before its
 * longest lane did with the sleeps as they fell, so 31.25 ms over that lane
 * is the efficiency the run's own sleeps allowed, and the pool's share of
 * the loss is the rest.  Two clock reads per job, ~50 ns against 1 ms. */
static _Atomic unsigned w2_gen; /* bumped before each measured run */
static _Atomic uint64_t w2_gap_ns, w2_gaps, w2_over_ns, w2_jobs, w2_lane_max_ns;
static _Thread_local unsigned t_gen;
static _Thread_local uint64_t t_end, t_lane;

static void w2_measured_sleep(void)
{
    unsigned gen = atomic_load_explicit(&w2_gen, memory_order_relaxed);
    uint64_t s = bench_now_ns(), e, max;

    if (t_gen != gen) {
        t_gen = gen;
        t_end = 0;
        t_lane = 0;
    }
    sleep_1ms();
    e = bench_now_ns();
    if (t_end) {
        atomic_fetch_add_explicit(&w2_gap_ns, s - t_end, memory_order_relaxed);
        atomic_fetch_add_explicit(&w2_gaps, 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&w2_over_ns, e - s > 1000000 ? e - s - 1000000 : 0,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&w2_jobs, 1, memory_order_relaxed);
    t_end = e;
    t_lane += e - s;
    max = atomic_load_explicit(&w2_lane_max_ns, memory_order_relaxed);
    while (t_lane > max && !atomic_compare_exchange_weak_explicit(
                               &w2_lane_max_ns, &max, t_lane, memory_order_relaxed,
                               memory_order_relaxed))
        ;
}

static void w2_measure_begin(void)
{
    atomic_store(&w2_gap_ns, 0);
    atomic_store(&w2_gaps, 0);
    atomic_store(&w2_over_ns, 0);
    atomic_store(&w2_jobs, 0);
    atomic_store(&w2_lane_max_ns, 0);
    atomic_fetch_add(&w2_gen, 1);
}

static void *w2_job(void *arg)
{
    w2_measured_sleep();
    return arg;
}

typedef struct w2_ctx {
    aiometer_pool *pool64;
    void *args[W2_N];
    bench_series wall_own[IMPL_COUNT];  /* ms; serial: the floor at default slack */
    bench_series wall_dflt[IMPL_COUNT]; /* ms; libaiometer on the default pool */
    bench_series wall_1ns[IMPL_COUNT];  /* ms; own pool, calling thread at 1 ns slack */
    bench_series eff_own[IMPL_COUNT];   /* %; serial: the ceiling at default slack */
    bench_series eff_dflt[IMPL_COUNT];
    bench_series sleep_ms[IMPL_COUNT]; /* serial: one nanosleep(1 ms), default slack */
    bench_series sleep_ms_1ns[IMPL_COUNT];
    bench_series eff_1ns[IMPL_COUNT]; /* lib: own pool, caller at 1 ns; serial: ceiling */
    /* Own pool and GLib, from inside the jobs (w2_measured_sleep): */
    bench_series gap_us[IMPL_COUNT];   /* mean time between jobs on a thread */
    bench_series over_us[IMPL_COUNT];  /* mean length of a sleep past 1 ms */
    bench_series bound[IMPL_COUNT];    /* %: 31.25 ms over the longest lane */
} w2_ctx;

/* Add what w2_measured_sleep saw in the run that just ended. */
static void w2_measure_end(w2_ctx *c, enum bench_impl impl)
{
    uint64_t gaps = atomic_load(&w2_gaps), jobs = atomic_load(&w2_jobs);
    uint64_t lane = atomic_load(&w2_lane_max_ns);

    if (gaps)
        bench_series_add(&c->gap_us[impl], (double)atomic_load(&w2_gap_ns) / gaps * 1e-3);
    if (jobs)
        bench_series_add(&c->over_us[impl], (double)atomic_load(&w2_over_ns) / jobs * 1e-3);
    if (lane)
        bench_series_add(&c->bound[impl], 100 * W2_IDEAL_MS / ((double)lane * 1e-6));
}

#ifdef BENCH_HAVE_GLIB
static void w2_glib_job(gpointer data, gpointer user)
{
    (void)data;
    (void)user;
    w2_measured_sleep();
}
#endif

static double w2_lib_once(w2_ctx *c, aiometer_pool *pool)
{
    aiometer_options o = {0};
    o.pool = pool;
    o.max_at_once = W2_WIDTH;
    uint64_t t0 = bench_now_ns();
    bench_check(aiometer_run_on_each(w2_job, c->args, W2_N, &o), "W2 aiometer_run_on_each");
    return (double)(bench_now_ns() - t0) * 1e-6;
}

static double serial_sleep_ms(unsigned long slack)
{
    unsigned long old = bench_get_timerslack();
    bench_check(bench_set_timerslack(slack), "prctl(PR_SET_TIMERSLACK)");
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < W2_SERIAL_SLEEPS; i++)
        sleep_1ms();
    double ms = (double)(bench_now_ns() - t0) * 1e-6 / W2_SERIAL_SLEEPS;
    bench_check(bench_set_timerslack(old), "prctl(PR_SET_TIMERSLACK)");
    return ms;
}

static void w2_run(enum bench_impl impl, int rep, void *arg)
{
    w2_ctx *c = arg;
    double ms;
    unsigned long old;
    (void)rep;

    switch (impl) {
    case IMPL_LIB:
        w2_measure_begin();
        ms = w2_lib_once(c, c->pool64);
        w2_measure_end(c, impl);
        bench_series_add(&c->wall_own[impl], ms);
        bench_series_add(&c->eff_own[impl], 100 * W2_IDEAL_MS / ms);
        ms = w2_lib_once(c, NULL);
        bench_series_add(&c->wall_dflt[impl], ms);
        bench_series_add(&c->eff_dflt[impl], 100 * W2_IDEAL_MS / ms);
        /* The calling thread may run jobs itself while it waits, at its
         * own timer slack: this run shows what that costs. */
        old = bench_get_timerslack();
        bench_check(bench_set_timerslack(1), "prctl(PR_SET_TIMERSLACK)");
        ms = w2_lib_once(c, c->pool64);
        bench_check(bench_set_timerslack(old), "prctl(PR_SET_TIMERSLACK)");
        bench_series_add(&c->wall_1ns[impl], ms);
        bench_series_add(&c->eff_1ns[impl], 100 * W2_IDEAL_MS / ms);
        break;
    case IMPL_SERIAL:
        ms = serial_sleep_ms(bench_get_timerslack());
        bench_series_add(&c->sleep_ms[impl], ms);
        bench_series_add(&c->wall_own[impl], W2_LONGEST_LANE * ms);
        bench_series_add(&c->eff_own[impl], 100 * W2_IDEAL_MS / (W2_LONGEST_LANE * ms));
        ms = serial_sleep_ms(1);
        bench_series_add(&c->sleep_ms_1ns[impl], ms);
        bench_series_add(&c->eff_1ns[impl], 100 * W2_IDEAL_MS / (W2_LONGEST_LANE * ms));
        break;
    case IMPL_GLIB: {
#ifdef BENCH_HAVE_GLIB
        GError *error = NULL;
        w2_measure_begin();
        uint64_t t0 = bench_now_ns();
        GThreadPool *gp = g_thread_pool_new(w2_glib_job, NULL, W2_WIDTH, FALSE, &error);
        if (gp == NULL)
            bench_die("g_thread_pool_new: %s", error->message);
        for (size_t i = 0; i < W2_N; i++)
            g_thread_pool_push(gp, (gpointer)(i + 1), NULL);
        g_thread_pool_free(gp, FALSE, TRUE);
        ms = (double)(bench_now_ns() - t0) * 1e-6;
        w2_measure_end(c, impl);
        bench_series_add(&c->wall_own[impl], ms);
        bench_series_add(&c->eff_own[impl], 100 * W2_IDEAL_MS / ms);
#endif
        break;
    }
    default:
        break;
    }
}

static void print_series_row(const char *label, bench_series *cols, int ratio)
{
    bench_row row = {.label = label, .ratio = ratio};
    memcpy(row.col, cols, sizeof row.col);
    bench_print_row(&row);
}

void bench_w2(void)
{
    w2_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        bench_die("out of memory");
    bench_check(aiometer_pool_create(&c->pool64, W2_WIDTH), "aiometer_pool_create(64)");
#ifdef BENCH_HAVE_GLIB
    g_thread_pool_set_max_unused_threads(W2_WIDTH);
#endif

    bench_title("W2 blocking jobs: N = %d, each nanosleep(1 ms), max_at_once = %d "
                "(ideal %.2f ms)",
                W2_N, W2_WIDTH, W2_IDEAL_MS);
    bench_header("libaiometer", "serial: 32 x 1 sleep", "GLib (64 threads)");
    /* One untimed round starts every thread of both pools. */
    w2_lib_once(c, c->pool64);
    w2_lib_once(c, NULL);
    if (bench_have_glib) {
        w2_run(IMPL_GLIB, 0, c);
        memset(c->wall_own, 0, sizeof c->wall_own);
        memset(c->eff_own, 0, sizeof c->eff_own);
        memset(c->gap_us, 0, sizeof c->gap_us);
        memset(c->over_us, 0, sizeof c->over_us);
        memset(c->bound, 0, sizeof c->bound);
    }
    for (int r = 0; r < bench_reps; r++)
        bench_alternate(r, w2_run, c);

    print_series_row("wall ms, own 64-thread pool", c->wall_own, 1);
    print_series_row("wall ms, default pool", c->wall_dflt, 0);
    print_series_row("efficiency %, own pool", c->eff_own, 1);
    print_series_row("efficiency %, default pool", c->eff_dflt, 0);
    print_series_row("1 nanosleep(1ms), ms", c->sleep_ms, 0);
    print_series_row("wall ms, caller slack 1 ns", c->wall_1ns, 0);
    print_series_row("efficiency %, caller 1 ns", c->eff_1ns, 0);
    print_series_row("1 nanosleep(1ms) at 1 ns, ms", c->sleep_ms_1ns, 0);
    print_series_row("own pool: us between jobs", c->gap_us, 1);
    print_series_row("own pool: sleep past 1 ms, us", c->over_us, 1);
    print_series_row("own pool: sleeps' bound, %", c->bound, 1);
    bench_note("target: efficiency >= 92 %%.  Serial column: the floor and ceiling that "
               "the sleep itself sets at the caller's slack (%lu ns, then 1 ns)",
               bench_get_timerslack());

#ifdef BENCH_HAVE_GLIB
    /* Back to GLib's default, so idle threads do not pile up later. */
    g_thread_pool_set_max_unused_threads(2);
#endif
    bench_check(aiometer_pool_destroy(c->pool64), "aiometer_pool_destroy");
    free(c);
}
