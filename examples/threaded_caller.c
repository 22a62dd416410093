/*
 * threaded_caller.c - ordinary pthread code in which several threads call
 * aiometer_run_all() at the same time, all on one shared pool.
 *
 * Each of the CALLERS threads has its own batch of jobs and its own
 * max_at_once; the pool's POOL_THREADS threads serve every call.  Each caller
 * then checks its own results: every job ran exactly once and its result sits
 * at its own index, whatever the other callers were doing.  The program
 * exits 1 if any check fails.
 *
 * What it shows: the entry points are safe to call from many threads at
 * once; an explicit pool shared between calls; run_all's ordered results;
 * per-call statistics.
 */
#define _POSIX_C_SOURCE 200809L

#include <aiometer.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    CALLERS = 4,          /* threads calling aiometer_run_all at once */
    JOBS_PER_CALLER = 200,
    AT_ONCE = 4,          /* each call's max_at_once */
    POOL_THREADS = 8,     /* shared by all the calls */
};

/* One job's argument and result.  Only the job writes steps and runs, and
 * only its caller reads them, after aiometer_run_all() has returned. */
typedef struct item {
    unsigned long n;
    unsigned steps; /* the job's answer */
    int runs;       /* how many times the job ran: must be 1 */
} item;

/* One caller thread's work and its report. */
typedef struct caller {
    pthread_t thread;
    unsigned id;
    aiometer_pool *pool;
    pthread_barrier_t *start_together;
    item items[JOBS_PER_CALLER];
    int err;          /* what aiometer_run_all returned */
    unsigned wrong;   /* results that failed a check */
    double began, ended;
    aiometer_stats stats;
} caller;

/* Steps of the Collatz sequence from n down to 1: cheap, deterministic work
 * whose answer the caller can check. */
static unsigned collatz_steps(unsigned long n)
{
    unsigned steps = 0;
    for (; n != 1; steps++)
        n = (n % 2 == 0) ? n / 2 : 3 * n + 1;
    return steps;
}

/* The job: compute the answer, then wait a millisecond as if for I/O, so
 * that the callers' jobs really do overlap on the pool. */
static void *collatz_job(void *arg)
{
    item *it = arg;
    it->steps = collatz_steps(it->n);
    it->runs++;
    aiometer_sleep(0.001);
    return it;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *caller_main(void *arg)
{
    caller *c = arg;
    aiometer_job jobs[JOBS_PER_CALLER];
    void *results[JOBS_PER_CALLER];

    for (unsigned i = 0; i < JOBS_PER_CALLER; i++) {
        c->items[i].n = 1000ul * c->id + i + 1;
        jobs[i].fn = collatz_job;
        jobs[i].arg = &c->items[i];
    }

    aiometer_options opts = {0};
    opts.pool = c->pool;
    opts.max_at_once = AT_ONCE;
    opts.stats = &c->stats;

    /* Wait for the other callers, so that the calls really start together. */
    pthread_barrier_wait(c->start_together);
    c->began = now();
    c->err = aiometer_run_all(jobs, JOBS_PER_CALLER, results, &opts);
    c->ended = now();

    for (unsigned i = 0; i < JOBS_PER_CALLER; i++) {
        const item *it = &c->items[i];
        if (results[i] != it || it->runs != 1 || it->steps != collatz_steps(it->n))
            c->wrong++;
    }
    return NULL;
}

int main(void)
{
    static caller callers[CALLERS];
    pthread_barrier_t start_together;
    aiometer_pool *pool;
    int status = EXIT_SUCCESS;

    int err = aiometer_pool_create(&pool, POOL_THREADS);
    if (err != 0) {
        fprintf(stderr, "threaded_caller: aiometer_pool_create: %s\n", aiometer_strerror(err));
        return EXIT_FAILURE;
    }
    pthread_barrier_init(&start_together, NULL, CALLERS);
    for (unsigned i = 0; i < CALLERS; i++) {
        callers[i].id = i;
        callers[i].pool = pool;
        callers[i].start_together = &start_together;
        err = pthread_create(&callers[i].thread, NULL, caller_main, &callers[i]);
        if (err != 0) {
            /* The barrier would wait for this thread for ever. */
            fprintf(stderr, "threaded_caller: pthread_create: %s\n", strerror(err));
            exit(EXIT_FAILURE);
        }
    }

    double first_end = 0, last_start = 0;
    for (unsigned i = 0; i < CALLERS; i++) {
        caller *c = &callers[i];
        pthread_join(c->thread, NULL);
        if (c->err != 0 || c->wrong != 0)
            status = EXIT_FAILURE;
        if (i == 0 || c->ended < first_end)
            first_end = c->ended;
        if (i == 0 || c->began > last_start)
            last_start = c->began;
        printf("caller %u: %s, %u of %d results wrong, %.3f s, at most %zu at once\n", c->id,
               c->err == 0 ? "ok" : aiometer_strerror(c->err), c->wrong, JOBS_PER_CALLER,
               c->ended - c->began, c->stats.peak_running);
    }
    printf("%d calls on one pool of %d threads, all %d running together for %.3f s\n", CALLERS,
           POOL_THREADS, CALLERS, first_end > last_start ? first_end - last_start : 0.0);
    printf("%s\n", status == EXIT_SUCCESS ? "all results correct" : "SOME RESULTS WRONG");

    pthread_barrier_destroy(&start_together);
    err = aiometer_pool_destroy(pool);
    if (err != 0) {
        fprintf(stderr, "threaded_caller: aiometer_pool_destroy: %s\n", aiometer_strerror(err));
        status = EXIT_FAILURE;
    }
    return status;
}
