/*
 * bench.c - the driver of the libaiometer benchmark: argument handling,
 * timing, statistics and the tables.  The workloads live in bench/w*.c.
 *
 *   bench/bench [-r REPS] [w1 w1main w1n call w2 w3 w4 w5 w6 w7 idle ...]
 *
 * With no workload named, all of them run.  "w1" means the three W1 parts
 * (w1main, w1n, call).  BENCH_REPS sets the repetitions as -r does.
 */
#include <config.h>

#include "bench.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif

#include <aiometer.h>

int bench_reps = 5;
const char *bench_self;
#ifdef BENCH_HAVE_GLIB
const int bench_have_glib = 1;
#else
const int bench_have_glib = 0;
#endif

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double bench_now(void)
{
    return (double)bench_now_ns() * 1e-9;
}

double bench_cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

void bench_die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

void bench_check(int err, const char *what)
{
    if (err != 0)
        bench_die("%s failed: %s (%d)", what, aiometer_strerror(err), err);
}

void bench_series_add(bench_series *s, double v)
{
    if (s->n < BENCH_MAX_REPS)
        s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void bench_sort(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
}

double bench_quantile(const double *sorted, size_t n, double q)
{
    /* Nearest rank: the smallest value with at least q of the data at or
     * below it, so p99 of 400 values is the 396th, an observed value. */
    if (n == 0)
        return 0.0;
    size_t rank = (size_t)(q * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

double bench_series_median(const bench_series *s)
{
    double tmp[BENCH_MAX_REPS];
    if (s->n == 0)
        return 0.0;
    memcpy(tmp, s->v, s->n * sizeof tmp[0]);
    bench_sort(tmp, s->n);
    /* An even count takes the mean of the middle two. */
    if (s->n % 2 == 1)
        return tmp[s->n / 2];
    return (tmp[s->n / 2 - 1] + tmp[s->n / 2]) / 2;
}

double bench_series_min(const bench_series *s)
{
    double m = s->n ? s->v[0] : 0.0;
    for (size_t i = 1; i < s->n; i++)
        if (s->v[i] < m)
            m = s->v[i];
    return m;
}

double bench_series_max(const bench_series *s)
{
    double m = s->n ? s->v[0] : 0.0;
    for (size_t i = 1; i < s->n; i++)
        if (s->v[i] > m)
            m = s->v[i];
    return m;
}

void bench_alternate(int rep, void (*run)(enum bench_impl, int, void *), void *ctx)
{
    for (int k = 0; k < IMPL_COUNT; k++) {
        enum bench_impl impl = (enum bench_impl)((rep + k) % IMPL_COUNT);
        if (impl == IMPL_GLIB && !bench_have_glib)
            continue;
        run(impl, rep, ctx);
    }
}

/* ---- tables ---------------------------------------------------------------- */

#define LABEL_W 30
#define CELL_W 22
#define RATIO_W 9

/* A number in about four significant digits, never in exponent form for the
 * magnitudes a table holds. */
static void fmt_num(char *buf, size_t size, double x)
{
    double a = x < 0 ? -x : x;
    /* Counts print as counts. */
    if (a < 1e6 && x == (double)(long)x)
        snprintf(buf, size, "%ld", (long)x);
    else if (a >= 1000)
        snprintf(buf, size, "%.0f", x);
    else if (a >= 100)
        snprintf(buf, size, "%.1f", x);
    else if (a >= 10)
        snprintf(buf, size, "%.2f", x);
    else if (a >= 1 || a == 0)
        snprintf(buf, size, "%.3f", x);
    else if (a >= 0.001)
        snprintf(buf, size, "%.4f", x);
    else
        snprintf(buf, size, "%.3g", x);
}

static void fmt_cell(char *buf, size_t size, const bench_series *s)
{
    char med[32], lo[32], hi[32];
    if (s->n == 0) {
        snprintf(buf, size, "%s", "");
        return;
    }
    fmt_num(med, sizeof med, bench_series_median(s));
    if (s->n == 1) {
        snprintf(buf, size, "%s", med);
        return;
    }
    fmt_num(lo, sizeof lo, bench_series_min(s));
    fmt_num(hi, sizeof hi, bench_series_max(s));
    snprintf(buf, size, "%s [%s..%s]", med, lo, hi);
}

/* The ratio lib/base.  When both were measured in the same repetitions, the
 * median of the per-repetition ratios: pairs measured side by side share the
 * machine's state at that moment, so their ratio is steadier than the ratio
 * of two medians.  Otherwise the ratio of the medians. */
static void fmt_ratio(char *buf, size_t size, const bench_series *lib, const bench_series *base)
{
    if (lib->n == 0 || base->n == 0) {
        snprintf(buf, size, "%s", "");
        return;
    }
    double r;
    if (lib->n == base->n) {
        bench_series q = {.n = 0};
        for (size_t i = 0; i < lib->n; i++) {
            if (base->v[i] <= 0 || lib->v[i] < 0) {
                snprintf(buf, size, "%s", "-");
                return;
            }
            bench_series_add(&q, lib->v[i] / base->v[i]);
        }
        r = bench_series_median(&q);
    } else {
        double b = bench_series_median(base);
        if (b <= 0) {
            snprintf(buf, size, "%s", "-");
            return;
        }
        r = bench_series_median(lib) / b;
    }
    if (r >= 100)
        snprintf(buf, size, "%.0f", r);
    else if (r >= 0.01)
        snprintf(buf, size, "%.3g", r);
    else
        snprintf(buf, size, "%.2g", r);
}

void bench_title(const char *fmt, ...)
{
    va_list ap;
    putchar('\n');
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

void bench_header(const char *lib, const char *serial, const char *glib)
{
    printf("  %-*s %-*s %-*s %-*s %*s %*s\n", LABEL_W, "", CELL_W, lib, CELL_W, serial, CELL_W,
           bench_have_glib ? glib : "GLib: not built", RATIO_W, "lib/GLib", RATIO_W,
           "lib/ser");
}

void bench_print_row(const bench_row *row)
{
    char cells[IMPL_COUNT][3 * 32 + 8];
    char rg[32] = "", rs[32] = "";
    for (int i = 0; i < IMPL_COUNT; i++)
        fmt_cell(cells[i], sizeof cells[i], &row->col[i]);
    if (row->ratio) {
        fmt_ratio(rg, sizeof rg, &row->col[IMPL_LIB], &row->col[IMPL_GLIB]);
        fmt_ratio(rs, sizeof rs, &row->col[IMPL_LIB], &row->col[IMPL_SERIAL]);
    }
    printf("  %-*s %-*s %-*s %-*s %*s %*s\n", LABEL_W, row->label, CELL_W, cells[IMPL_LIB], CELL_W,
           cells[IMPL_SERIAL], CELL_W, cells[IMPL_GLIB], RATIO_W, rg, RATIO_W, rs);
    fflush(stdout);
}

void bench_note(const char *fmt, ...)
{
    va_list ap;
    fputs("  note: ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

/* ---- timer slack ------------------------------------------------------------ */

int bench_set_timerslack(unsigned long ns)
{
#if defined(HAVE_SYS_PRCTL_H) && defined(PR_SET_TIMERSLACK)
    return prctl(PR_SET_TIMERSLACK, ns, 0, 0, 0) == 0 ? 0 : errno;
#else
    (void)ns;
    return ENOSYS;
#endif
}

unsigned long bench_get_timerslack(void)
{
#if defined(HAVE_SYS_PRCTL_H) && defined(PR_GET_TIMERSLACK)
    int r = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    return r < 0 ? 0 : (unsigned long)r;
#else
    return 0;
#endif
}

/* The 1-minute load average, or -1: a busy machine explains a noisy run. */
static double load_average(void)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double l = -1;
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

/* ---- main ----------------------------------------------------------------- */

static const struct section {
    const char *name;
    void (*fn)(void);
    const char *what;
} sections[] = {
    {"w1main", bench_w1, "W1 tiny jobs, N = 10^6, 2 threads"},
    {"w1n", bench_w1_scale, "W1 ns/job for N = 10^3 .. 10^7"},
    {"call", bench_w1_call, "one aiometer_run_all of 1 job on a warm pool"},
    {"w2", bench_w2, "W2 blocking jobs"},
    {"w3", bench_w3, "W3 rate accuracy"},
    {"w4", bench_w4, "W4 peak RSS of 10^7 jobs (child processes)"},
    {"w5", bench_w5, "W5 first wins"},
    {"w6", bench_w6, "W6 many callers on the default pool"},
    {"w7", bench_w7, "W7 amap over tiny jobs"},
    {"idle", bench_idle, "CPU of an idle default pool (10 s) and of calls at 200/s"},
};
#define NSECTIONS (sizeof sections / sizeof sections[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: bench [-r REPS] [WORKLOAD...]\n"
               "  REPS: repetitions per figure (default 5, or $BENCH_REPS)\n"
               "  WORKLOAD (default: all):\n"
               "    w1    all of W1: w1main, w1n and call\n");
    for (size_t i = 0; i < NSECTIONS; i++)
        fprintf(f, "    %-5s %s\n", sections[i].name, sections[i].what);
}

static int parse_reps(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 1 || v > BENCH_MAX_REPS)
        bench_die("repetitions must be 1 to %d, not \"%s\"", BENCH_MAX_REPS, s);
    return (int)v;
}

int main(int argc, char **argv)
{
    int selected[NSECTIONS] = {0};
    int any = 0;

    bench_self = argv[0];
    /* W4 runs this same program again for each case, so that each peak RSS
     * is that of a fresh process doing one thing. */
    if (argc == 3 && strcmp(argv[1], "--w4-child") == 0)
        return bench_w4_child(argv[2]);

    const char *env = getenv("BENCH_REPS");
    if (env && *env)
        bench_reps = parse_reps(env);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-r") == 0 && i + 1 < argc) {
            bench_reps = parse_reps(argv[++i]);
            continue;
        }
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "w1") == 0) {
            /* "w1" stands for the whole of W1: the first three sections. */
            selected[0] = selected[1] = selected[2] = 1;
            any = 1;
            continue;
        }
        size_t k;
        for (k = 0; k < NSECTIONS; k++)
            if (strcmp(argv[i], sections[k].name) == 0)
                break;
        if (k == NSECTIONS) {
            usage(stderr);
            return 2;
        }
        selected[k] = 1;
        any = 1;
    }
    if (!any)
        for (size_t k = 0; k < NSECTIONS; k++)
            selected[k] = 1;

    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("libaiometer %s benchmark: %d repetition%s per figure; cells are median [min..max];\n"
           "lib/GLib and lib/ser are libaiometer's figure divided by the baseline's\n"
           "(median of the per-repetition ratios; below 1 means smaller).\n",
           aiometer_version_string(), bench_reps, bench_reps == 1 ? "" : "s");
    if (bench_reps < 5)
        printf("warning: fewer than 5 repetitions; medians are not robust.\n");
    if (!bench_have_glib)
        printf("GLib was not found by configure: the GLib columns are skipped "
               "(apt-get install libglib2.0-dev, then re-run configure).\n");
    printf("calling thread's timer slack: %lu ns; load average %.2f\n", bench_get_timerslack(),
           load_average());

    double t0 = bench_now();
    for (size_t k = 0; k < NSECTIONS; k++) {
        if (!selected[k])
            continue;
        double ts = bench_now();
        sections[k].fn();
        printf("  (%s took %.1f s; load average now %.2f)\n", sections[k].name, bench_now() - ts,
               load_average());
    }
    printf("\ntotal benchmark time: %.1f s\n", bench_now() - t0);
    return 0;
}
