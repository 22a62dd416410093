/*
 * w6.c - W6, many callers: 16 threads each make 5,000 calls of
 * aiometer_run_all with 10 jobs of about 1 us of CPU, on the default pool,
 * all at once.
 *
 * libaiometer: each caller thread calls aiometer_run_all on the default pool
 * (no options).  Serial: each caller runs its 10 jobs itself, in a loop (the
 * floor: no hand-off at all).  GLib: one GThreadPool shared by the callers,
 * with as many threads as the machine has cores (GLib's best for CPU work);
 * each call pushes its 10 jobs and waits on its own condition variable until
 * they are done.
 *
 * Figures: wall time of the whole run, that against the ideal (the CPU work,
 * 16 x 5,000 x 10 x the job's measured length, over the cores), and the p50
 * and p99 latency of one call over every call of the run.
 */
#include <config.h>

#include "bench.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <aiometer.h>
#ifdef BENCH_HAVE_GLIB
#include <glib.h>
#endif

#define W6_CALLERS 16
#define W6_JOBS 10

/* BENCH_W6_CALLS changes the calls per caller for a quick try. */
static size_t w6_calls(void)
{
    const char *s = getenv("BENCH_W6_CALLS");
    if (s && *s) {
        long v = strtol(s, NULL, 10);
        if (v > 0)
            return (size_t)v;
    }
    return 5000;
}

/* Spin iterations that make about 1 us of CPU, found by w6_calibrate. */
static unsigned long w6_spins = 300;

static void *w6_job(void *arg)
{
    volatile unsigned long x = (uintptr_t)arg;
    for (unsigned long i = 0; i < w6_spins; i++)
        x = x * 2654435761u + i;
    return (void *)((uintptr_t)arg + 1);
}

/* The job's length in ns at the current w6_spins: the best of a few runs
 * of 10,000 jobs on this thread. */
static double w6_job_ns(void)
{
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        uint64_t t0 = bench_now_ns();
        for (uintptr_t i = 0; i < 10000; i++)
            (void)w6_job((void *)i);
        double ns = (double)(bench_now_ns() - t0) / 10000;
        if (ns < best)
            best = ns;
    }
    return best;
}

static double w6_calibrate(void)
{
    double ns = w6_job_ns();
    w6_spins = (unsigned long)((double)w6_spins * 1000.0 / (ns > 1 ? ns : 1));
    if (w6_spins < 1)
        w6_spins = 1;
    return w6_job_ns();
}

#ifdef BENCH_HAVE_GLIB
/* One caller's wait for its jobs in the shared GLib pool. */
typedef struct w6_glib_call {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int left;
    void **results;
} w6_glib_call;

typedef struct w6_glib_item {
    w6_glib_call *call;
    uintptr_t i;
} w6_glib_item;

static void w6_glib_job(gpointer data, gpointer user)
{
    w6_glib_item *it = data;
    w6_glib_call *gc = it->call;
    (void)user;
    gc->results[it->i] = w6_job((void *)it->i);
    pthread_mutex_lock(&gc->mu);
    if (--gc->left == 0)
        pthread_cond_signal(&gc->cv);
    pthread_mutex_unlock(&gc->mu);
}
#endif

typedef struct w6_ctx w6_ctx;

typedef struct w6_caller {
    w6_ctx *c;
    enum bench_impl impl;
    double *lat; /* ns per call, calls entries */
} w6_caller;

struct w6_ctx {
    size_t calls;
    double job_ns;
    long cores;
#ifdef BENCH_HAVE_GLIB
    GThreadPool *gp;
#endif
    pthread_barrier_t go;
    w6_caller callers[W6_CALLERS];
    double *all_lat; /* W6_CALLERS x calls, for the percentiles */
    bench_series wall_ms[IMPL_COUNT], over_ideal[IMPL_COUNT], p50_us[IMPL_COUNT],
        p99_us[IMPL_COUNT], p99_p50[IMPL_COUNT], kcalls_s[IMPL_COUNT];
};

static void *w6_caller_main(void *arg)
{
    w6_caller *me = arg;
    w6_ctx *c = me->c;
    aiometer_job jobs[W6_JOBS];
    void *results[W6_JOBS];

    for (uintptr_t i = 0; i < W6_JOBS; i++) {
        jobs[i].fn = w6_job;
        jobs[i].arg = (void *)i;
    }
#ifdef BENCH_HAVE_GLIB
    w6_glib_call gc;
    w6_glib_item items[W6_JOBS];
    pthread_mutex_init(&gc.mu, NULL);
    pthread_cond_init(&gc.cv, NULL);
    gc.results = results;
    for (uintptr_t i = 0; i < W6_JOBS; i++)
        items[i] = (w6_glib_item){&gc, i};
#endif
    pthread_barrier_wait(&c->go);
    for (size_t k = 0; k < c->calls; k++) {
        uint64_t t0 = bench_now_ns();
        memset(results, 0, sizeof results);
        switch (me->impl) {
        case IMPL_LIB:
            bench_check(aiometer_run_all(jobs, W6_JOBS, results, NULL), "W6 aiometer_run_all");
            break;
        case IMPL_SERIAL:
            for (size_t i = 0; i < W6_JOBS; i++)
                results[i] = jobs[i].fn(jobs[i].arg);
            break;
        case IMPL_GLIB:
#ifdef BENCH_HAVE_GLIB
            gc.left = W6_JOBS;
            for (size_t i = 0; i < W6_JOBS; i++)
                g_thread_pool_push(c->gp, &items[i], NULL);
            pthread_mutex_lock(&gc.mu);
            while (gc.left > 0)
                pthread_cond_wait(&gc.cv, &gc.mu);
            pthread_mutex_unlock(&gc.mu);
#endif
            break;
        default:
            break;
        }
        me->lat[k] = (double)(bench_now_ns() - t0);
        for (uintptr_t i = 0; i < W6_JOBS; i++)
            if ((uintptr_t)results[i] != i + 1)
                bench_die("W6: results[%zu] is %p", (size_t)i, results[i]);
    }
#ifdef BENCH_HAVE_GLIB
    pthread_cond_destroy(&gc.cv);
    pthread_mutex_destroy(&gc.mu);
#endif
    return NULL;
}

static void w6_run(enum bench_impl impl, int rep, void *arg)
{
    w6_ctx *c = arg;
    pthread_t th[W6_CALLERS];
    (void)rep;

    pthread_barrier_init(&c->go, NULL, W6_CALLERS + 1);
    for (int i = 0; i < W6_CALLERS; i++) {
        c->callers[i].c = c;
        c->callers[i].impl = impl;
        c->callers[i].lat = c->all_lat + (size_t)i * c->calls;
        if (pthread_create(&th[i], NULL, w6_caller_main, &c->callers[i]) != 0)
            bench_die("W6: pthread_create failed");
    }
    pthread_barrier_wait(&c->go);
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < W6_CALLERS; i++)
        pthread_join(th[i], NULL);
    double wall = (double)(bench_now_ns() - t0);
    pthread_barrier_destroy(&c->go);

    size_t n = (size_t)W6_CALLERS * c->calls;
    double ideal = (double)n * W6_JOBS * c->job_ns / (double)c->cores;
    bench_sort(c->all_lat, n);
    double p50 = bench_quantile(c->all_lat, n, 0.50), p99 = bench_quantile(c->all_lat, n, 0.99);
    bench_series_add(&c->wall_ms[impl], wall * 1e-6);
    bench_series_add(&c->over_ideal[impl], wall / ideal);
    bench_series_add(&c->p50_us[impl], p50 * 1e-3);
    bench_series_add(&c->p99_us[impl], p99 * 1e-3);
    bench_series_add(&c->p99_p50[impl], p99 / p50);
    bench_series_add(&c->kcalls_s[impl], (double)n / wall * 1e6);
}

static void w6_row(const char *label, bench_series *cols)
{
    bench_row row = {.label = label, .ratio = 1};
    memcpy(row.col, cols, sizeof row.col);
    bench_print_row(&row);
}

void bench_w6(void)
{
    w6_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        bench_die("out of memory");
    c->calls = w6_calls();
    c->cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (c->cores < 1)
        c->cores = 1;
    c->all_lat = malloc((size_t)W6_CALLERS * c->calls * sizeof c->all_lat[0]);
    if (c->all_lat == NULL)
        bench_die("out of memory");
    c->job_ns = w6_calibrate();
#ifdef BENCH_HAVE_GLIB
    GError *error = NULL;
    c->gp = g_thread_pool_new(w6_glib_job, NULL, (int)c->cores, FALSE, &error);
    if (c->gp == NULL)
        bench_die("g_thread_pool_new: %s", error->message);
#endif

    bench_title("W6 many callers: %d threads x %zu calls of aiometer_run_all, %d jobs of "
                "%.2f us each, default pool; %ld cores",
                W6_CALLERS, c->calls, W6_JOBS, c->job_ns * 1e-3, c->cores);
    bench_header("libaiometer default pool", "each caller alone", "GLib shared pool");
    size_t full = c->calls;
    /* An untimed round with a tenth of the calls starts the threads. */
    c->calls = full / 10 ? full / 10 : 1;
    bench_alternate(0, w6_run, c);
    c->calls = full;
    memset(c->wall_ms, 0, sizeof c->wall_ms);
    memset(c->over_ideal, 0, sizeof c->over_ideal);
    memset(c->p50_us, 0, sizeof c->p50_us);
    memset(c->p99_us, 0, sizeof c->p99_us);
    memset(c->p99_p50, 0, sizeof c->p99_p50);
    memset(c->kcalls_s, 0, sizeof c->kcalls_s);
    for (int r = 0; r < bench_reps; r++)
        bench_alternate(r, w6_run, c);
    w6_row("wall ms", c->wall_ms);
    w6_row("wall / ideal", c->over_ideal);
    w6_row("k calls per second", c->kcalls_s);
    w6_row("call latency p50, us", c->p50_us);
    w6_row("call latency p99, us", c->p99_us);
    w6_row("p99 / p50", c->p99_p50);
    bench_note("targets: wall <= 1.15x ideal, p99 <= 10x p50, >= 5x GLib's calls per second");
#ifdef BENCH_HAVE_GLIB
    g_thread_pool_free(c->gp, FALSE, TRUE);
#endif
    free(c->all_lat);
    free(c);
}
