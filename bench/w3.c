/*
 * w3.c - W3, rate accuracy: N jobs at max_per_second = rate, each recording
 * when it started on CLOCK_MONOTONIC.  The sorted starts are compared with
 * the ideal schedule t0 + k/rate, t0 being the first start.
 *
 * libaiometer: aiometer_run_on_each on the default pool with only
 * max_per_second set.  Serial: a bare loop that sleeps to each absolute
 * ideal time (clock_nanosleep, TIMER_ABSTIME) and calls the job, the best a
 * caller can do by hand.  GLib has no rate limit: the same sleeping loop
 * pushes each job to a GThreadPool of 2 threads instead of calling it, so
 * its column shows what the hand-off to a worker adds.
 *
 * Each case runs twice, with the calling thread's timer slack at its
 * default and at 1 ns: the serial and GLib loops sleep in the calling
 * thread, so the slack shapes their lateness; libaiometer should not care
 * if it sets the slack of its own threads.
 */
#include <config.h>

#include "bench.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <aiometer.h>
#ifdef BENCH_HAVE_GLIB
#include <glib.h>
#endif

enum w3_fig {
    FIG_MEAN,
    FIG_P50,
    FIG_P99,
    FIG_MAX,
    FIG_SPAN_MS,
    FIG_SPAN_PCT,
    FIG_CPU_S,
    FIG_CPU_PCT,
    FIG_COUNT
};

static const char *const fig_label[FIG_COUNT] = {
    "lateness mean, us", "lateness p50, us", "lateness p99, us", "lateness max, us",
    "span error, ms",    "span error, %",    "CPU used, s",      "CPU, % of one core",
};

typedef struct w3_ctx {
    double rate;
    size_t n;
    uint64_t period_ns;    /* 1/rate rounded up, as the library books it */
    unsigned long slack;   /* the caller's slack for the run; 0: its default */
    int impl_mask;         /* which implementations run in this case */
    void **args;           /* args[k] = k */
    _Atomic uint64_t *starts; /* written by the jobs, read after the call */
    double *late;          /* scratch for the statistics */
    bench_series fig[FIG_COUNT][IMPL_COUNT];
} w3_ctx;

static w3_ctx *w3_current; /* the jobs' view of the running case */

static void *w3_job(void *arg)
{
    atomic_store_explicit(&w3_current->starts[(uintptr_t)arg], bench_now_ns(),
                          memory_order_relaxed);
    return arg;
}

#ifdef BENCH_HAVE_GLIB
static void w3_glib_job(gpointer data, gpointer user)
{
    (void)user;
    w3_job((void *)((uintptr_t)data - 1));
}
#endif

/* The hand-made schedule of the serial and GLib columns: the k-th job is
 * due at t0 + k * period, whatever time it is now. */
static void sleep_until_ns(uint64_t t)
{
    struct timespec ts = {(time_t)(t / 1000000000u), (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void w3_run(enum bench_impl impl, int rep, void *arg)
{
    w3_ctx *c = arg;
    (void)rep;
    if (!(c->impl_mask & (1 << impl)))
        return;

    for (size_t k = 0; k < c->n; k++)
        atomic_store_explicit(&c->starts[k], 0, memory_order_relaxed);
    unsigned long old = bench_get_timerslack();
    if (c->slack != 0)
        bench_check(bench_set_timerslack(c->slack), "prctl(PR_SET_TIMERSLACK)");

    double cpu0 = bench_cpu_seconds();
    uint64_t w0 = bench_now_ns();
    switch (impl) {
    case IMPL_LIB: {
        aiometer_options o = {0};
        o.max_per_second = c->rate;
        bench_check(aiometer_run_on_each(w3_job, c->args, c->n, &o), "W3 aiometer_run_on_each");
        break;
    }
    case IMPL_SERIAL: {
        uint64_t t0 = bench_now_ns();
        for (size_t k = 0; k < c->n; k++) {
            if (k > 0)
                sleep_until_ns(t0 + k * c->period_ns);
            w3_job((void *)k);
        }
        break;
    }
    case IMPL_GLIB: {
#ifdef BENCH_HAVE_GLIB
        GError *error = NULL;
        GThreadPool *gp = g_thread_pool_new(w3_glib_job, NULL, 2, FALSE, &error);
        if (gp == NULL)
            bench_die("g_thread_pool_new: %s", error->message);
        uint64_t t0 = bench_now_ns();
        for (size_t k = 0; k < c->n; k++) {
            if (k > 0)
                sleep_until_ns(t0 + k * c->period_ns);
            g_thread_pool_push(gp, (gpointer)(k + 1), NULL);
        }
        g_thread_pool_free(gp, FALSE, TRUE);
#endif
        break;
    }
    default:
        break;
    }
    double wall = (double)(bench_now_ns() - w0) * 1e-9;
    double cpu = bench_cpu_seconds() - cpu0;
    bench_check(bench_set_timerslack(old), "prctl(PR_SET_TIMERSLACK)");

    /* Lateness of the k-th start in time order against t0 + k * period. */
    for (size_t k = 0; k < c->n; k++) {
        uint64_t s = atomic_load_explicit(&c->starts[k], memory_order_relaxed);
        if (s == 0)
            bench_die("W3: job %zu never started", k);
        c->late[k] = (double)s;
    }
    bench_sort(c->late, c->n);
    double s0 = c->late[0], span = c->late[c->n - 1] - s0;
    double ideal_span = (double)(c->n - 1) * (double)c->period_ns;
    double sum = 0;
    for (size_t k = 0; k < c->n; k++) {
        c->late[k] = (c->late[k] - s0 - (double)k * (double)c->period_ns) * 1e-3;
        sum += c->late[k];
    }
    double mean = sum / (double)c->n;
    bench_sort(c->late, c->n);

    bench_series(*f)[IMPL_COUNT] = c->fig;
    bench_series_add(&f[FIG_MEAN][impl], mean);
    bench_series_add(&f[FIG_P50][impl], bench_quantile(c->late, c->n, 0.50));
    bench_series_add(&f[FIG_P99][impl], bench_quantile(c->late, c->n, 0.99));
    bench_series_add(&f[FIG_MAX][impl], c->late[c->n - 1]);
    bench_series_add(&f[FIG_SPAN_MS][impl], (span - ideal_span) * 1e-6);
    bench_series_add(&f[FIG_SPAN_PCT][impl], 100 * (span - ideal_span) / ideal_span);
    bench_series_add(&f[FIG_CPU_S][impl], cpu);
    bench_series_add(&f[FIG_CPU_PCT][impl], 100 * cpu / wall);
}

static void w3_case(w3_ctx *c, double rate, size_t n, unsigned long slack, int impl_mask)
{
    c->rate = rate;
    c->n = n;
    /* 1/rate in whole nanoseconds, rounded up as the library rounds it. */
    c->period_ns = (uint64_t)(1e9 / rate);
    if ((double)c->period_ns * rate < 1e9)
        c->period_ns++;
    c->slack = slack;
    c->impl_mask = impl_mask;
    memset(c->fig, 0, sizeof c->fig);

    if (slack != 0)
        bench_title("W3 rate: N = %zu at max_per_second = %g; caller's timer slack %lu ns", n,
                    rate, slack);
    else
        bench_title("W3 rate: N = %zu at max_per_second = %g; caller's timer slack default "
                    "(%lu ns)",
                    n, rate, bench_get_timerslack());
    bench_header("libaiometer", "serial sleeping loop", "GLib + sleeping loop");
    for (int r = 0; r < bench_reps; r++)
        bench_alternate(r, w3_run, c);
    for (int i = 0; i < FIG_COUNT; i++) {
        bench_row row = {.label = fig_label[i], .ratio = i != FIG_SPAN_MS && i != FIG_SPAN_PCT};
        memcpy(row.col, c->fig[i], sizeof row.col);
        bench_print_row(&row);
    }
}

void bench_w3(void)
{
    const size_t max_n = 5000;
    w3_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        bench_die("out of memory");
    c->args = malloc(max_n * sizeof c->args[0]);
    c->starts = malloc(max_n * sizeof c->starts[0]);
    c->late = malloc(max_n * sizeof c->late[0]);
    if (c->args == NULL || c->starts == NULL || c->late == NULL)
        bench_die("out of memory");
    for (size_t k = 0; k < max_n; k++)
        c->args[k] = (void *)k;
    w3_current = c;

    /* Start the default pool's threads at the default slack, untimed, so
     * that threads made later do not inherit the 1 ns setting. */
    {
        aiometer_options o = {0};
        o.max_per_second = 10000;
        c->n = 50;
        bench_check(aiometer_run_on_each(w3_job, c->args, c->n, &o), "W3 warm-up");
    }

    const int all = (1 << IMPL_LIB) | (1 << IMPL_SERIAL) | (1 << IMPL_GLIB);
    w3_case(c, 5000, 5000, 0, all);
    bench_note("target at 5000/s: p50 <= 25 us, p99 <= 200 us, |span error| <= 0.01 %%");
    w3_case(c, 5000, 5000, 1, all);
    w3_case(c, 200, 400, 0, all);
    bench_note("target at 200/s: CPU < 5 %% of one core");
    w3_case(c, 200, 400, 1, 1 << IMPL_LIB);

    free(c->args);
    free((void *)c->starts);
    free(c->late);
    free(c);
}
