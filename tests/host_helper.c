/* host_helper.c - a program of its own (exec'd, not forked, by
 * check_host.c): opens the named limiter NAME at RATE starts per second
 * (burst 1), runs N jobs under it and prints each job's start time
 * (CLOCK_MONOTONIC ns) on a line.  Exit status 0 when all N ran. */
#define _POSIX_C_SOURCE 200809L
#include "aiometer.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t starts[1024];
static atomic_size_t nstarts;

static void *job(void *arg)
{
    struct timespec ts;
    size_t i = atomic_fetch_add(&nstarts, 1);

    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (i < 1024)
        starts[i] = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return arg;
}

int main(int argc, char **argv)
{
    aiometer_limiter_options lo = { 0 };
    aiometer_options o = { 0 };
    aiometer_limiter *l;
    void *args[1024] = { 0 };
    size_t n;
    int err;

    if (argc != 4)
        return 2;
    lo.max_per_second = atof(argv[2]);
    lo.max_burst = 1;
    n = (size_t)atoi(argv[3]);
    if (n > 1024)
        return 2;
    err = aiometer_limiter_open(&l, argv[1], &lo);
    if (err) {
        fprintf(stderr, "host_helper: open %s: %s\n", argv[1], aiometer_strerror(err));
        return 1;
    }
    o.limiter = l;
    o.max_at_once = 4;
    err = aiometer_run_on_each(job, args, n, &o);
    for (size_t i = 0; i < atomic_load(&nstarts) && i < 1024; i++)
        printf("%llu\n", (unsigned long long)starts[i]);
    aiometer_limiter_destroy(l);
    return err || atomic_load(&nstarts) != n;
}
