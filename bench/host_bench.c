/*
 * host_bench.c - what a named (host-wide) limiter costs next to a private
 * one: one booking of a start, and one take + give of a running slot, in
 * one process and in 4 processes at once.  Part of `make bench`; see
 * bench/README.
 *
 * It calls the limiter's backend operations directly (through the limiter
 * object's layout in src/limiter.h), without a call around them, so the
 * figures are the limiter's own cost.  With 4 processes, each has its own
 * private limiter (nothing shared: the best a private limiter can do) while
 * the 4 share one named limiter (every operation contends on the same
 * cache lines of shared memory).
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "aiometer.h"
#include "limiter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define OPS 2000000
#define REPS 5

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static aiometer_limiter *open_lim(const char *name)
{
    /* A rate and a cap that never bind: the figures are the bookkeeping. */
    aiometer_limiter_options lo = { .max_per_second = 1e9, .max_burst = 1000000, .max_at_once = 65535 };
    aiometer_limiter *l;
    int err = aiometer_limiter_open(&l, name, &lo);

    if (err) {
        fprintf(stderr, "host_bench: open %s: %s\n", name ? name : "(private)",
                aiometer_strerror(err));
        exit(1);
    }
    return l;
}

/* ns per operation of `ops` bookings (what 0) or take+give pairs (what 1). */
static double run_ops(aiometer_limiter *l, int what, long ops)
{
    uint64_t t0 = now_ns(), start, now = t0;

    for (long i = 0; i < ops; i++) {
        if (what == 0) {
            l->be.book(l->state, NULL, now++, &start);
        } else {
            if (l->be.acquire(l->state, NULL, -1) != 0) {
                fprintf(stderr, "host_bench: no slot free\n");
                exit(1);
            }
            l->be.release(l->state, NULL);
        }
    }
    return (double)(now_ns() - t0) / (double)ops;
}

/* The median over REPS of ns/op in each of `procs` processes (the mean of
 * the processes' figures within a repetition). */
static double measure(const char *name, int what, int procs)
{
    double *res = mmap(NULL, sizeof(double) * 8, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    double reps[REPS];

    if (res == MAP_FAILED)
        exit(1);
    for (int r = 0; r < REPS; r++) {
        pid_t pid[8];
        double sum = 0;

        for (int p = 0; p < procs; p++) {
            pid[p] = fork();
            if (pid[p] < 0)
                exit(1);
            if (pid[p] == 0) {
                aiometer_limiter *l = open_lim(name);
                run_ops(l, what, OPS / 10); /* warm-up */
                res[p] = run_ops(l, what, OPS);
                aiometer_limiter_destroy(l);
                _exit(0);
            }
        }
        for (int p = 0; p < procs; p++) {
            int st;
            if (waitpid(pid[p], &st, 0) != pid[p] || !WIFEXITED(st) || WEXITSTATUS(st))
                exit(1);
            sum += res[p];
        }
        reps[r] = sum / procs;
    }
    munmap(res, sizeof(double) * 8);
    for (int i = 0; i < REPS; i++)
        for (int j = i + 1; j < REPS; j++)
            if (reps[j] < reps[i]) {
                double t = reps[i];
                reps[i] = reps[j];
                reps[j] = t;
            }
    return reps[REPS / 2];
}

int main(void)
{
    static const char *what[] = { "book one start", "take + give a slot" };
    char name[64];

    snprintf(name, sizeof name, "host_bench.%ld", (long)getpid());
    printf("Named (host-wide) limiter vs private limiter, ns per operation\n");
    printf("(median of %d runs of %d operations per process)\n\n", REPS, OPS);
    printf("%-20s %6s %10s %10s %8s\n", "operation", "procs", "private", "named", "ratio");
    for (int w = 0; w < 2; w++)
        for (int procs = 1; procs <= 4; procs += 3) {
            double p = measure(NULL, w, procs);
            double n = measure(name, w, procs);

            printf("%-20s %6d %10.1f %10.1f %8.2f\n", what[w], procs, p, n, n / p);
            aiometer_limiter_unlink(name);
        }
    printf("\nTarget: named within 2x of private with 1 process.\n");
    return 0;
}
