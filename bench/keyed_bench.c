/*
 * keyed_bench.c - what per-key limits cost: 100,000 tiny jobs over 1,000
 * keys, through a per-key limiter whose rate and cap never bind, against
 * the same call on a limiter with the same options that is not per key
 * (and, for scale, a call with no limiter at all).  Private limiters, and
 * named (host-wide) ones.  Part of `make bench`; see bench/README.
 *
 * The figure is wall time per job, the median of REPS runs, on a pool of 8
 * threads.  The target: a per-key call within 3x of the same call
 * without keys.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "aiometer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define JOBS 100000
#define KEYS 1000
#define REPS 5
#define THREADS 8

static char keys[KEYS][16];

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *tiny(void *arg)
{
    return arg;
}

static const char *key_of(void *arg, void *key_arg)
{
    (void)key_arg;
    return keys[(size_t)(uintptr_t)arg % KEYS];
}

static aiometer_limiter *open_lim(const char *name, int per_key, int capped)
{
    aiometer_limiter_options lo = { 0 };
    aiometer_limiter *l;
    int err;

    /* A rate and a cap that never bind: the figures are the bookkeeping. */
    lo.max_per_second = 1e9;
    lo.max_burst = 1000000;
    lo.max_at_once = !capped ? 0 : name && per_key ? 16 : 65535;
    lo.per_key = per_key;
    lo.max_keys = per_key ? 4096 : 0;
    if (name)
        aiometer_limiter_unlink(name);
    err = aiometer_limiter_open(&l, name, &lo);
    if (err) {
        fprintf(stderr, "keyed_bench: open %s: %s\n", name ? name : "(private)",
                aiometer_strerror(err));
        exit(1);
    }
    return l;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median ns per job of REPS calls. */
static double measure(aiometer_pool *pool, void **args, aiometer_limiter *l, int keyed)
{
    double v[REPS];
    aiometer_options o = { 0 };
    int r, err;

    o.pool = pool;
    o.limiter = l;
    if (keyed)
        o.key = key_of;
    for (r = 0; r < REPS; r++) {
        double t0 = now_s();
        err = aiometer_run_on_each(tiny, args, JOBS, &o);
        if (err) {
            fprintf(stderr, "keyed_bench: %s\n", aiometer_strerror(err));
            exit(1);
        }
        v[r] = (now_s() - t0) * 1e9 / JOBS;
    }
    qsort(v, REPS, sizeof v[0], cmp);
    return v[REPS / 2];
}

int main(void)
{
    static void *args[JOBS];
    char name[64], kname[64];
    aiometer_pool *pool;
    aiometer_limiter *plain, *keyed;
    double none, r_plain, r_keyed, p_plain, p_keyed, h_plain, h_keyed;
    size_t i;

    for (i = 0; i < KEYS; i++)
        snprintf(keys[i], sizeof keys[i], "host%zu.example", i);
    for (i = 0; i < JOBS; i++)
        args[i] = (void *)(uintptr_t)i;
    if (aiometer_pool_create(&pool, THREADS))
        return 1;

    none = measure(pool, args, NULL, 0);
    plain = open_lim(NULL, 0, 0);
    keyed = open_lim(NULL, 1, 0);
    r_plain = measure(pool, args, plain, 0);
    r_keyed = measure(pool, args, keyed, 1);
    aiometer_limiter_destroy(plain);
    aiometer_limiter_destroy(keyed);
    plain = open_lim(NULL, 0, 1);
    keyed = open_lim(NULL, 1, 1);
    p_plain = measure(pool, args, plain, 0);
    p_keyed = measure(pool, args, keyed, 1);
    aiometer_limiter_destroy(plain);
    aiometer_limiter_destroy(keyed);

    snprintf(name, sizeof name, "kbench%ld", (long)getpid());
    snprintf(kname, sizeof kname, "kbench%ld.keys", (long)getpid());
    plain = open_lim(name, 0, 1);
    keyed = open_lim(kname, 1, 1);
    h_plain = measure(pool, args, plain, 0);
    h_keyed = measure(pool, args, keyed, 1);
    aiometer_limiter_destroy(plain);
    aiometer_limiter_destroy(keyed);
    aiometer_limiter_unlink(name);
    aiometer_limiter_unlink(kname);
    aiometer_pool_destroy(pool);

    printf("keyed_bench: %d tiny jobs over %d keys, pool of %d, median of %d runs\n", JOBS, KEYS,
           THREADS, REPS);
    printf("  no limiter                       %8.0f ns/job\n", none);
    printf("  private, rate only, not per key  %8.0f ns/job\n", r_plain);
    printf("  private, rate only, per key      %8.0f ns/job   %.2fx (target <= 3x)\n", r_keyed,
           r_keyed / r_plain);
    printf("  private, rate + cap, not per key %8.0f ns/job\n", p_plain);
    printf("  private, rate + cap, per key     %8.0f ns/job   %.2fx (target <= 3x)\n", p_keyed,
           p_keyed / p_plain);
    printf("  named, rate + cap, not per key   %8.0f ns/job\n", h_plain);
    printf("  named, rate + cap, per key       %8.0f ns/job   %.2fx (target <= 3x)\n", h_keyed,
           h_keyed / h_plain);
    return 0;
}
