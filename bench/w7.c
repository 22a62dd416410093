/*
 * w7.c - W7, amap over tiny jobs: 100,000 jobs, job i returns 2*i + 1,
 * read back one by one through aiometer_amap_next.
 *
 * libaiometer: aiometer_amap_open over an array of arguments, unordered and
 * ordered, and aiometer_amap_open_source (W4's lazy source) unordered, each
 * on its own 2-thread pool kept warm.  Serial: a loop calling the job.
 * GLib: a 2-thread GThreadPool, one push per job, free-and-wait, the
 * results stored by index (as W1's).
 *
 * Also here: what an idle pool costs (the CPU time of this process over
 * 10 s while the default pool's threads wait for work), and the CPU of rated
 * calls at 200 starts per second on the default pool.
 */
#include <config.h>

#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <aiometer.h>
#ifdef BENCH_HAVE_GLIB
#include <glib.h>
#endif

#define W7_N 100000
#define W7_THREADS 2

enum w7_case { W7_UNORDERED, W7_ORDERED, W7_SOURCE, W7_CASES };

static const char *const w7_label[W7_CASES] = {
    "ns/job amap unordered", "ns/job amap ordered", "ns/job amap_source unord.",
};

typedef struct w7_ctx {
    aiometer_pool *pool;
    void **args;
    void **results; /* serial and GLib */
    unsigned char *seen;
    bench_series ns[W7_CASES][IMPL_COUNT];
} w7_ctx;

static void *w7_job(void *arg)
{
    return (void *)(2 * (uintptr_t)arg + 1);
}

typedef struct w7_source {
    size_t next;
} w7_source;

static int w7_next(void *state, void **arg)
{
    w7_source *s = state;
    if (s->next == W7_N)
        return AIOMETER_DONE;
    *arg = (void *)s->next++;
    return 0;
}

#ifdef BENCH_HAVE_GLIB
static void w7_glib_job(gpointer data, gpointer user)
{
    uintptr_t i = (uintptr_t)data - 1;
    ((void **)user)[i] = w7_job((void *)i);
}
#endif

/* Read every result of one amap and check it; ordered ones in order. */
static void w7_amap(w7_ctx *c, enum w7_case k)
{
    aiometer_options o = {0};
    aiometer_amap *it;
    w7_source src = {0};
    void *r;
    size_t idx, count = 0;
    int err;

    o.pool = c->pool;
    o.ordered = k == W7_ORDERED;
    if (k == W7_SOURCE)
        bench_check(aiometer_amap_open_source(&it, w7_job, w7_next, &src, &o),
                    "aiometer_amap_open_source");
    else
        bench_check(aiometer_amap_open(&it, w7_job, c->args, W7_N, &o), "aiometer_amap_open");
    memset(c->seen, 0, W7_N);
    while ((err = aiometer_amap_next(it, &r, &idx)) == 0) {
        if (idx >= W7_N || (uintptr_t)r != 2 * idx + 1 || c->seen[idx] ||
            (o.ordered && idx != count))
            bench_die("W7: result %p for index %zu (the %zu-th)", r, idx, count);
        c->seen[idx] = 1;
        count++;
    }
    if (err != AIOMETER_DONE)
        bench_die("W7: aiometer_amap_next: %s", aiometer_strerror(err));
    bench_check(aiometer_amap_close(it), "aiometer_amap_close");
    if (count != W7_N)
        bench_die("W7: %zu results", count);
}

static void w7_run(enum bench_impl impl, int rep, void *arg)
{
    w7_ctx *c = arg;
    (void)rep;

    if (impl == IMPL_LIB) {
        for (int k = 0; k < W7_CASES; k++) {
            uint64_t t0 = bench_now_ns();
            w7_amap(c, (enum w7_case)k);
            bench_series_add(&c->ns[k][impl], (double)(bench_now_ns() - t0) / W7_N);
        }
        return;
    }
    memset(c->results, 0, W7_N * sizeof c->results[0]);
    uint64_t t0 = bench_now_ns();
    if (impl == IMPL_SERIAL) {
        void *(*volatile fn)(void *) = w7_job;
        for (size_t i = 0; i < W7_N; i++)
            c->results[i] = fn(c->args[i]);
    } else {
#ifdef BENCH_HAVE_GLIB
        GError *error = NULL;
        GThreadPool *gp = g_thread_pool_new(w7_glib_job, c->results, W7_THREADS, FALSE, &error);
        if (gp == NULL)
            bench_die("g_thread_pool_new: %s", error->message);
        for (size_t i = 0; i < W7_N; i++)
            g_thread_pool_push(gp, (gpointer)(i + 1), NULL);
        g_thread_pool_free(gp, FALSE, TRUE);
#endif
    }
    double ns = (double)(bench_now_ns() - t0) / W7_N;
    for (size_t i = 0; i < W7_N; i++)
        if ((uintptr_t)c->results[i] != 2 * i + 1)
            bench_die("W7 baseline: results[%zu] is %p", i, c->results[i]);
    /* A baseline has one figure, shown beside every libaiometer case. */
    for (int k = 0; k < W7_CASES; k++)
        bench_series_add(&c->ns[k][impl], ns);
}

void bench_w7(void)
{
    w7_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        bench_die("out of memory");
    c->args = malloc(W7_N * sizeof c->args[0]);
    c->results = malloc(W7_N * sizeof c->results[0]);
    c->seen = malloc(W7_N);
    if (c->args == NULL || c->results == NULL || c->seen == NULL)
        bench_die("out of memory");
    for (size_t i = 0; i < W7_N; i++)
        c->args[i] = (void *)i;
    bench_check(aiometer_pool_create(&c->pool, W7_THREADS), "aiometer_pool_create(2)");

    bench_title("W7 amap over tiny jobs: N = %d, job i returns 2*i + 1, every result read; "
                "%d threads", W7_N, W7_THREADS);
    bench_header("libaiometer amap", "serial loop", "GLib push (2 thr)");
    bench_alternate(0, w7_run, c);
    memset(c->ns, 0, sizeof c->ns);
    for (int r = 0; r < bench_reps; r++)
        bench_alternate(r, w7_run, c);
    for (int k = 0; k < W7_CASES; k++) {
        bench_row row = {.label = w7_label[k], .ratio = 1};
        memcpy(row.col, c->ns[k], sizeof row.col);
        bench_print_row(&row);
    }
    bench_note("target: <= 25 ns/job ordered and unordered, and lib/GLib <= 0.1");
    bench_check(aiometer_pool_destroy(c->pool), "aiometer_pool_destroy");
    free(c->args);
    free(c->results);
    free(c->seen);
    free(c);
}

/* ---- idle CPU ------------------------------------------------------------- */

static void *idle_sleep_job(void *arg)
{
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    return arg;
}

static void *idle_nop_job(void *arg)
{
    return arg;
}

/* BENCH_IDLE_S changes the idle span (seconds) for a quick try. */
static double idle_seconds(void)
{
    const char *s = getenv("BENCH_IDLE_S");
    if (s && *s) {
        double v = strtod(s, NULL);
        if (v > 0)
            return v;
    }
    return 10;
}

void bench_idle(void)
{
    enum { WARM = 64, RATED = 400 };
    void *args[RATED];
    double span = idle_seconds();
    bench_series idle_ms = {.n = 0}, rated_pct = {.n = 0};

    for (size_t i = 0; i < RATED; i++)
        args[i] = (void *)i;
    bench_title("Idle pool and rated calls: CPU of the whole process");
    /* One repetition of each: the idle span is long, and what it measures
     * (about nothing) does not need a median.  First start threads of the
     * default pool: 64 jobs that sleep 2 ms each, all at once. */
    {
        aiometer_options o = {0};
        o.max_at_once = WARM;
        bench_check(aiometer_run_on_each(idle_sleep_job, args, WARM, &o), "idle: warm-up");
    }
    double cpu0 = bench_cpu_seconds();
    struct timespec ts = {(time_t)span, (long)((span - (double)(time_t)span) * 1e9)};
    nanosleep(&ts, NULL);
    bench_series_add(&idle_ms, (bench_cpu_seconds() - cpu0) * 1e3);
    {
        aiometer_options o = {0};
        o.max_per_second = 200;
        double t0 = bench_now();
        cpu0 = bench_cpu_seconds();
        bench_check(aiometer_run_on_each(idle_nop_job, args, RATED, &o), "idle: rated calls");
        bench_series_add(&rated_pct, 100 * (bench_cpu_seconds() - cpu0) / (bench_now() - t0));
    }
    char label[64];
    snprintf(label, sizeof label, "idle default pool, CPU ms/%gs", span);
    bench_row row = {.label = label, .ratio = 0};
    row.col[IMPL_LIB] = idle_ms;
    bench_print_row(&row);
    row.label = "400 jobs at 200/s, % of a core";
    row.col[IMPL_LIB] = rated_pct;
    bench_print_row(&row);
    bench_note("targets: idle ~ 0 ms; rated calls at 200/s < 5 %% of one core");
}
