/*
 * w5.c - W5, first wins: 64 jobs, job i sleeps (i+1) ms and returns i, on
 * 64 threads.  Figures: when the call returns, how many losers started, and
 * when the last loser stopped (all from the call's start).
 *
 * libaiometer: aiometer_run_any on its own 64-thread pool, the jobs sleeping
 * with aiometer_sleep so that the win cancels them.  GLib: 64 threads (kept
 * warm between pools, as in W2); a job that sees the win flag before it
 * starts skips its sleep, the first to finish sets the flag and wakes the
 * caller, and losers already in nanosleep run on: the caller has its
 * answer at once, but the pool is busy until the last loser ends.  Serial:
 * run job 0, which succeeds, and stop (the floor: one 1 ms sleep).
 */
#include <config.h>

#include "bench.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <aiometer.h>
#ifdef BENCH_HAVE_GLIB
#include <glib.h>
#endif

#define W5_N 64

typedef struct w5_ctx {
    aiometer_pool *pool;
    aiometer_job jobs[W5_N];
    atomic_int started;
    _Atomic uint64_t end_ns[W5_N];
    /* GLib's side: the win flag, and the winner handed to the caller. */
    atomic_int won;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int winner; /* guarded by mu; -1 until a job wins */
    bench_series ret_ms[IMPL_COUNT], losers[IMPL_COUNT], stop_ms[IMPL_COUNT];
    bench_series winner_ms[IMPL_COUNT];
} w5_ctx;

static w5_ctx *w5_current;

static void *w5_job(void *arg)
{
    uintptr_t i = (uintptr_t)arg;
    atomic_fetch_add(&w5_current->started, 1);
    /* ECANCELED is the expected end of every loser; the job returns i
     * either way, as the workload says. */
    (void)aiometer_sleep((double)(i + 1) * 1e-3);
    atomic_store(&w5_current->end_ns[i], bench_now_ns());
    return arg;
}

#ifdef BENCH_HAVE_GLIB
static void w5_glib_job(gpointer data, gpointer user)
{
    w5_ctx *c = user;
    uintptr_t i = (uintptr_t)data - 1;
    if (atomic_load(&c->won))
        return;
    atomic_fetch_add(&c->started, 1);
    struct timespec ts = {0, (long)(i + 1) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    atomic_store(&c->end_ns[i], bench_now_ns());
    int expect = 0;
    if (atomic_compare_exchange_strong(&c->won, &expect, 1)) {
        pthread_mutex_lock(&c->mu);
        c->winner = (int)i;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
}
#endif

static void w5_run(enum bench_impl impl, int rep, void *arg)
{
    w5_ctx *c = arg;
    size_t index = (size_t)-1;
    (void)rep;

    atomic_store(&c->started, 0);
    atomic_store(&c->won, 0);
    for (int i = 0; i < W5_N; i++)
        atomic_store(&c->end_ns[i], 0);
    c->winner = -1;

    uint64_t t0 = bench_now_ns(), t_ret = 0;
    switch (impl) {
    case IMPL_LIB: {
        aiometer_options o = {0};
        void *result = NULL;
        o.pool = c->pool;
        bench_check(aiometer_run_any(c->jobs, W5_N, &result, &index, &o), "aiometer_run_any");
        t_ret = bench_now_ns();
        if (index != 0 || (uintptr_t)result != 0)
            bench_die("W5: job %zu won with %p; job 0 should have", index, result);
        break;
    }
    case IMPL_SERIAL:
        for (size_t i = 0; i < W5_N; i++) {
            c->jobs[i].fn(c->jobs[i].arg);
            index = i; /* job i succeeds: the first one wins */
            break;
        }
        t_ret = bench_now_ns();
        break;
    case IMPL_GLIB: {
#ifdef BENCH_HAVE_GLIB
        GError *error = NULL;
        GThreadPool *gp = g_thread_pool_new(w5_glib_job, c, W5_N, FALSE, &error);
        if (gp == NULL)
            bench_die("g_thread_pool_new: %s", error->message);
        for (uintptr_t i = 0; i < W5_N; i++)
            g_thread_pool_push(gp, (gpointer)(i + 1), NULL);
        pthread_mutex_lock(&c->mu);
        while (c->winner < 0)
            pthread_cond_wait(&c->cv, &c->mu);
        index = (size_t)c->winner;
        pthread_mutex_unlock(&c->mu);
        t_ret = bench_now_ns();
        g_thread_pool_free(gp, FALSE, TRUE);
        /* Job 0 should win; if the machine stalled it, another may have. */
        (void)index;
#endif
        break;
    }
    default:
        return;
    }

    uint64_t last = 0;
    for (int i = 0; i < W5_N; i++) {
        uint64_t e = atomic_load(&c->end_ns[i]);
        if (e > last)
            last = e;
    }
    bench_series_add(&c->ret_ms[impl], (double)(t_ret - t0) * 1e-6);
    bench_series_add(&c->losers[impl], atomic_load(&c->started) - 1);
    bench_series_add(&c->stop_ms[impl], (double)(last - t0) * 1e-6);
    bench_series_add(&c->winner_ms[impl],
                     (double)(atomic_load(&c->end_ns[index]) - t0) * 1e-6);
}

static void w5_row(const char *label, bench_series *cols)
{
    bench_row row = {.label = label, .ratio = 1};
    memcpy(row.col, cols, sizeof row.col);
    bench_print_row(&row);
}

void bench_w5(void)
{
    w5_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        bench_die("out of memory");
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    for (uintptr_t i = 0; i < W5_N; i++) {
        c->jobs[i].fn = w5_job;
        c->jobs[i].arg = (void *)i;
    }
    w5_current = c;
    bench_check(aiometer_pool_create(&c->pool, W5_N), "aiometer_pool_create(64)");
#ifdef BENCH_HAVE_GLIB
    g_thread_pool_set_max_unused_threads(W5_N);
#endif

    bench_title("W5 first wins: %d jobs, job i sleeps (i+1) ms; %d threads", W5_N, W5_N);
    bench_header("libaiometer run_any", "serial: job 0 only", "GLib + win flag");
    /* One untimed round starts the threads of both pools. */
    w5_run(IMPL_LIB, 0, c);
    if (bench_have_glib)
        w5_run(IMPL_GLIB, 0, c);
    memset(c->ret_ms, 0, sizeof c->ret_ms);
    memset(c->losers, 0, sizeof c->losers);
    memset(c->stop_ms, 0, sizeof c->stop_ms);
    memset(c->winner_ms, 0, sizeof c->winner_ms);
    for (int r = 0; r < bench_reps; r++)
        bench_alternate(r, w5_run, c);

    w5_row("call returns after, ms", c->ret_ms);
    w5_row("winner finished after, ms", c->winner_ms);
    w5_row("losers started", c->losers);
    w5_row("last loser stopped after, ms", c->stop_ms);
    bench_note("target: libaiometer returns <= 1.3 ms after the call starts, every loser "
               "stopped first (issue 16)");

#ifdef BENCH_HAVE_GLIB
    g_thread_pool_set_max_unused_threads(2);
#endif
    bench_check(aiometer_pool_destroy(c->pool), "aiometer_pool_destroy");
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
