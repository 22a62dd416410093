/*
 * w1.c - W1, tiny jobs: job i computes 2*i + 1, results collected by index.
 *
 * libaiometer: aiometer_run_all on its own pool of 2 threads, created once
 * and kept warm.  Serial: a loop calling each job through its function
 * pointer.  GLib: a GThreadPool of 2 threads, one push per job,
 * g_thread_pool_free(pool, FALSE, TRUE) to wait; creating the pool is part
 * of its time, because freeing it is GLib's only way to wait for the jobs.
 */
#include <config.h>

#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <aiometer.h>
#ifdef BENCH_HAVE_GLIB
#include <glib.h>
#endif

#define W1_THREADS 2

static void *w1_job(void *arg)
{
    return (void *)(2 * (uintptr_t)arg + 1);
}

typedef struct w1_ctx {
    aiometer_pool *pool;
    aiometer_job *jobs;
    void **results;
    size_t n;     /* jobs per call */
    size_t calls; /* calls per repetition, so that small n is still timeable */
    bench_series ns_per_job[IMPL_COUNT];
    bench_series mjobs_per_s[IMPL_COUNT];
} w1_ctx;

static void w1_verify(const w1_ctx *c, const char *who)
{
    for (size_t i = 0; i < c->n; i++)
        if ((uintptr_t)c->results[i] != 2 * i + 1)
            bench_die("W1 %s: results[%zu] is %p, not %zu", who, i, c->results[i], 2 * i + 1);
}

#ifdef BENCH_HAVE_GLIB
static void w1_glib_job(gpointer data, gpointer user)
{
    /* GLib refuses NULL work items, so item i is pushed as i + 1. */
    uintptr_t i = (uintptr_t)data - 1;
    ((void **)user)[i] = (void *)(2 * i + 1);
}

static void w1_glib_call(void **results, size_t n)
{
    GError *error = NULL;
    GThreadPool *gp = g_thread_pool_new(w1_glib_job, results, W1_THREADS, FALSE, &error);
    if (gp == NULL)
        bench_die("g_thread_pool_new: %s", error->message);
    for (size_t i = 0; i < n; i++)
        g_thread_pool_push(gp, (gpointer)(i + 1), NULL);
    g_thread_pool_free(gp, FALSE, TRUE);
}
#endif

static void w1_run(enum bench_impl impl, int rep, void *arg)
{
    w1_ctx *c = arg;
    aiometer_options o = {0};
    o.pool = c->pool;
    (void)rep;

    memset(c->results, 0, c->n * sizeof c->results[0]);
    uint64_t t0 = bench_now_ns();
    for (size_t k = 0; k < c->calls; k++) {
        switch (impl) {
        case IMPL_LIB:
            bench_check(aiometer_run_all(c->jobs, c->n, c->results, &o), "W1 aiometer_run_all");
            break;
        case IMPL_SERIAL:
            for (size_t i = 0; i < c->n; i++)
                c->results[i] = c->jobs[i].fn(c->jobs[i].arg);
            break;
        case IMPL_GLIB:
#ifdef BENCH_HAVE_GLIB
            w1_glib_call(c->results, c->n);
#endif
            break;
        default:
            break;
        }
    }
    double ns = (double)(bench_now_ns() - t0) / ((double)c->n * (double)c->calls);
    static const char *const names[] = {"libaiometer", "serial", "GLib"};
    w1_verify(c, names[impl]);
    bench_series_add(&c->ns_per_job[impl], ns);
    bench_series_add(&c->mjobs_per_s[impl], 1e3 / ns);
}

static w1_ctx *w1_setup(size_t max_n)
{
    w1_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        bench_die("out of memory");
    c->jobs = malloc(max_n * sizeof c->jobs[0]);
    c->results = malloc(max_n * sizeof c->results[0]);
    if (c->jobs == NULL || c->results == NULL)
        bench_die("out of memory for %zu jobs", max_n);
    for (size_t i = 0; i < max_n; i++) {
        c->jobs[i].fn = w1_job;
        c->jobs[i].arg = (void *)i;
    }
    bench_check(aiometer_pool_create(&c->pool, W1_THREADS), "aiometer_pool_create(2)");
    return c;
}

static void w1_teardown(w1_ctx *c)
{
    bench_check(aiometer_pool_destroy(c->pool), "aiometer_pool_destroy");
    free(c->jobs);
    free(c->results);
    free(c);
}

static void w1_reset(w1_ctx *c)
{
    memset(c->ns_per_job, 0, sizeof c->ns_per_job);
    memset(c->mjobs_per_s, 0, sizeof c->mjobs_per_s);
}

/* One untimed round of each implementation, so that page faults on fresh
 * arrays and thread start-up are not in the first repetition. */
static void w1_warm(w1_ctx *c)
{
    w1_run(IMPL_LIB, 0, c);
    w1_run(IMPL_SERIAL, 0, c);
    if (bench_have_glib)
        w1_run(IMPL_GLIB, 0, c);
    w1_reset(c);
}

void bench_w1(void)
{
    const size_t n = 1000000;
    w1_ctx *c = w1_setup(n);
    c->n = n;
    c->calls = 1;

    bench_title("W1 tiny jobs: N = %zu, out[i] = 2*i + 1 by aiometer_run_all, %d threads", n,
                W1_THREADS);
    bench_header("libaiometer (2-thr pool)", "serial loop", "GLib (2 threads)");
    w1_warm(c);
    for (int r = 0; r < bench_reps; r++)
        bench_alternate(r, w1_run, c);

    bench_row row = {.label = "ns per job", .ratio = 1};
    memcpy(row.col, c->ns_per_job, sizeof row.col);
    bench_print_row(&row);
    row.label = "M jobs per second";
    memcpy(row.col, c->mjobs_per_s, sizeof row.col);
    bench_print_row(&row);
    bench_series speed = {.n = 0};
    for (size_t i = 0; i < c->ns_per_job[IMPL_LIB].n && i < c->ns_per_job[IMPL_GLIB].n; i++)
        bench_series_add(&speed, c->ns_per_job[IMPL_GLIB].v[i] / c->ns_per_job[IMPL_LIB].v[i]);
    if (speed.n > 0)
        bench_note("libaiometer is %.1fx [%.1f..%.1f] as fast as GLib (target: >= 15x, <= 15 ns/job)",
                   bench_series_median(&speed), bench_series_min(&speed), bench_series_max(&speed));
    w1_teardown(c);
}

void bench_w1_scale(void)
{
    const size_t max_n = 10000000;
    /* GLib above 10^5 would take longer than the rest of W1 together (and
     * 10^6 is W1 itself). */
    const size_t glib_max_n = 100000;
    w1_ctx *c = w1_setup(max_n);

    bench_title("W1 scaling: ns per job against N (flat = cost linear in N); calls repeated "
                "to >= 10^6 jobs per figure");
    bench_header("libaiometer (2-thr pool)", "serial loop", "GLib (2 threads)");
    for (size_t n = 1000; n <= max_n; n *= 10) {
        c->n = n;
        c->calls = n >= 1000000 ? 1 : 1000000 / n;
        w1_warm(c);
        for (int r = 0; r < bench_reps; r++) {
            /* The rotation of bench_alternate, without GLib above glib_max_n. */
            for (int k = 0; k < IMPL_COUNT; k++) {
                enum bench_impl impl = (enum bench_impl)((r + k) % IMPL_COUNT);
                if (impl == IMPL_GLIB && (!bench_have_glib || n > glib_max_n))
                    continue;
                w1_run(impl, r, c);
            }
        }
        char label[64];
        snprintf(label, sizeof label, "ns/job N = %zu (x%zu calls)", n, c->calls);
        bench_row row = {.label = label, .ratio = 1};
        memcpy(row.col, c->ns_per_job, sizeof row.col);
        bench_print_row(&row);
        w1_reset(c);
    }
    w1_teardown(c);
}

/* The per-call cost: one aiometer_run_all of one job on a warm pool, timed
 * over as many calls as fit in about 0.1 s. */
typedef struct w1_call_ctx {
    aiometer_pool *pool;
    bench_series ns_per_call[IMPL_COUNT];
} w1_call_ctx;

static void w1_call_run(enum bench_impl impl, int rep, void *arg)
{
    w1_call_ctx *c = arg;
    aiometer_job job = {w1_job, (void *)41};
    aiometer_job *volatile jp = &job; /* keeps the serial call a real call */
    void *result = NULL;
    aiometer_options o = {0};
    o.pool = c->pool;
    size_t calls = 0;
    (void)rep;

    uint64_t t0 = bench_now_ns(), t;
    do {
        for (int k = 0; k < 64; k++) {
            uintptr_t want = 83;
            result = NULL;
            switch (impl) {
            case IMPL_LIB:
                bench_check(aiometer_run_all(&job, 1, &result, &o), "aiometer_run_all(1 job)");
                break;
            case IMPL_SERIAL:
                result = jp->fn(jp->arg);
                break;
            case IMPL_GLIB:
#ifdef BENCH_HAVE_GLIB
                /* GLib's W1 job stores 2*0 + 1 for its single item. */
                w1_glib_call(&result, 1);
                want = 1;
#endif
                break;
            default:
                break;
            }
            if ((uintptr_t)result != want)
                bench_die("one-job call: wrong result %p", result);
        }
        calls += 64;
        t = bench_now_ns();
    } while (t - t0 < 100000000u);
    bench_series_add(&c->ns_per_call[impl], (double)(t - t0) / (double)calls);
}

void bench_w1_call(void)
{
    w1_call_ctx c;
    memset(&c, 0, sizeof c);
    bench_check(aiometer_pool_create(&c.pool, W1_THREADS), "aiometer_pool_create(2)");

    bench_title("Per call: one aiometer_run_all of 1 job on a warm 2-thread pool");
    bench_header("libaiometer run_all", "direct call", "GLib new+push+free");
    w1_call_run(IMPL_LIB, 0, &c);
    memset(c.ns_per_call, 0, sizeof c.ns_per_call);
    for (int r = 0; r < bench_reps; r++)
        bench_alternate(r, w1_call_run, &c);
    bench_row row = {.label = "ns per call (target <= 2000)", .ratio = 1};
    memcpy(row.col, c.ns_per_call, sizeof row.col);
    bench_print_row(&row);
    bench_check(aiometer_pool_destroy(c.pool), "aiometer_pool_destroy");
}
