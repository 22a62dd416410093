/*
 * bench.h - shared pieces of the libaiometer benchmark (bench/bench).
 *
 * Every workload runs libaiometer and its two baselines (a serial loop and
 * GLib's GThreadPool) in the same process, alternating, and keeps one sample
 * per repetition of every figure.  A table prints each figure as its median
 * with the min and max, and libaiometer's figures also as ratios to the
 * baselines.  See bench/README for what each workload does.
 */
#ifndef AIOMETER_BENCH_H
#define AIOMETER_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* Hard upper bound on repetitions, so that a series is a fixed array. */
#define BENCH_MAX_REPS 101

/* The columns of every table: the library and its two baselines. */
enum bench_impl { IMPL_LIB, IMPL_SERIAL, IMPL_GLIB, IMPL_COUNT };

/* One figure measured once per repetition. */
typedef struct bench_series {
    double v[BENCH_MAX_REPS];
    size_t n;
} bench_series;

/* One printed row: a figure for each implementation.  A column left empty
 * (n == 0) prints as blank; ratios are shown only when `ratio` is set. */
typedef struct bench_row {
    const char *label;
    bench_series col[IMPL_COUNT];
    int ratio;
} bench_row;

/* Repetitions per figure (BENCH_REPS or -r; at least 1, default 5). */
extern int bench_reps;
/* Nonzero when the GLib baseline was built in. */
extern const int bench_have_glib;
/* argv[0] as the program was started, to re-run itself for W4. */
extern const char *bench_self;

/* CLOCK_MONOTONIC now, in nanoseconds and in seconds. */
uint64_t bench_now_ns(void);
double bench_now(void);
/* User + system CPU seconds used by the whole process so far. */
double bench_cpu_seconds(void);

/* Print to stderr and exit(1). */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Die with the library's message if err != 0. */
void bench_check(int err, const char *what);

void bench_series_add(bench_series *s, double v);
double bench_series_median(const bench_series *s);
double bench_series_min(const bench_series *s);
double bench_series_max(const bench_series *s);

/* Sort a double array ascending and pick the q-quantile (0..1) of it. */
void bench_sort(double *v, size_t n);
double bench_quantile(const double *sorted, size_t n, double q);

/* Run the three implementations of one repetition in an order that rotates
 * with the repetition number, so that no implementation always runs first
 * (right after the previous workload) or last.  `run` gets the impl and the
 * repetition; GLib is skipped when it is not built in. */
void bench_alternate(int rep, void (*run)(enum bench_impl impl, int rep, void *ctx), void *ctx);

/* Tables: a title, a header naming the columns, rows, a closing note. */
void bench_title(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void bench_header(const char *lib, const char *serial, const char *glib);
void bench_print_row(const bench_row *row);
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Set the calling thread's timer slack in ns (0: back to its default), and
 * read it.  Returns 0 or an errno value. */
int bench_set_timerslack(unsigned long ns);
unsigned long bench_get_timerslack(void);

/* The workloads.  Each prints its own table. */
void bench_w1(void);       /* W1 tiny jobs, N = 10^6, 2 threads */
void bench_w1_scale(void); /* W1 ns/job at N = 10^3 .. 10^7 */
void bench_w1_call(void);  /* cost of one run_all of 1 job, warm pool */
void bench_w2(void);       /* W2 blocking jobs */
void bench_w3(void);       /* W3 rate accuracy */
void bench_w4(void);       /* W4 memory at scale (child processes) */
void bench_w5(void);       /* W5 first wins */
void bench_w6(void);       /* W6 many callers */
void bench_w7(void);       /* W7 amap over tiny jobs */
void bench_idle(void);     /* CPU of an idle pool and of rated calls */

/* W4's child side: run one case named by `which` in this fresh process and
 * print its figures on stdout.  Returns the exit status. */
int bench_w4_child(const char *which);

#endif /* AIOMETER_BENCH_H */
