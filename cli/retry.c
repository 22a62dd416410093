/* retry.c - --retries: a failed attempt is tried again through the
 * library's aiometer_retry, with its backoff (full jitter, doubling from
 * --retry-delay, capped by --retry-max-delay).
 *
 * The job function decides by itself whether an attempt is its last: it
 * counts its attempts and calls aiometer_retry only while one is left, so
 * that a job that runs out of attempts ends like any failed job (its
 * result handed back with its output and status) instead of failing the
 * whole call as aiometer_retry would on the last one.
 *
 * When the call stops while a job waits out its backoff (--halt now,
 * --deadline, a signal), the library ends the wait, never runs the job
 * again and never hands it back (with -k it passes over its place).
 * So every job the library holds is on the run's held list, from the
 * moment its function returns it until the main thread takes it from
 * aiometer_amap_next: once the call is closed, what is left there is
 * exactly what was never handed back, and the main thread writes it, in
 * input order.  With -k the library passes over the place of such a job
 * once the stop has ended it, and hands back what finished behind it; so
 * before the main thread writes job k, it writes the parked jobs before k
 * (cli_retry_passed_over), and the input order holds throughout. */
#include "config.h"
#include "cli.h"

#include <stdlib.h>

void cli_retry_record(const struct cli_config *cfg, struct cli_job *job)
{
    struct cli_attempt *t;

    if (!cfg->joblog)
        return;
    t = realloc(job->tries, (job->ntries + 1) * sizeof(*t));
    if (!t)
        return; /* the joblog loses this attempt's line, the job goes on */
    job->tries = t;
    t[job->ntries++] = (struct cli_attempt){job->start_real, job->runtime, job->exitval,
                                             job->sig};
}

void cli_held_add(struct cli_run *run, struct cli_job *job, int parked)
{
    pthread_mutex_lock(&run->held_lock);
    job->parked = parked;
    if (parked)
        atomic_fetch_add(&run->nparked, 1);
    job->prev = NULL;
    job->next = run->held;
    if (run->held)
        run->held->prev = job;
    run->held = job;
    pthread_mutex_unlock(&run->held_lock);
}

void cli_held_remove(struct cli_run *run, struct cli_job *job)
{
    pthread_mutex_lock(&run->held_lock);
    if (job->prev)
        job->prev->next = job->next;
    else if (run->held == job)
        run->held = job->next;
    if (job->next)
        job->next->prev = job->prev;
    job->prev = job->next = NULL;
    if (job->parked)
        atomic_fetch_sub(&run->nparked, 1);
    job->parked = 0;
    pthread_mutex_unlock(&run->held_lock);
}

int cli_retry_attempt(struct cli_run *run, struct cli_job *job)
{
    const struct cli_config *cfg = run->cfg;

    /* No attempt left, or the run is stopping: a retry would be a start,
     * and none is allowed any more (--halt, a signal, the deadline). */
    if (job->attempts > cfg->retries || atomic_load(&run->stop_starting) ||
        aiometer_cancelled())
        return 0;
    cli_held_add(run, job, 1);
    aiometer_retry(CLI_ATTEMPT_FAILED, -1);
    return 1;
}

static int by_seq(const void *a, const void *b)
{
    const struct cli_job *x = *(struct cli_job *const *)a, *y = *(struct cli_job *const *)b;

    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* Write the jobs of `all` (n of them) in input order, and free them. */
static void report_sorted(struct cli_job **all, size_t n,
                          void (*report)(struct cli_job *job, void *arg), void *arg)
{
    qsort(all, n, sizeof(*all), by_seq);
    for (size_t i = 0; i < n; i++) {
        all[i]->prev = all[i]->next = NULL;
        /* A parked job's last attempt is in its fields, not yet recorded:
         * attempts are recorded as the next one begins. */
        report(all[i], arg);
        cli_job_free(all[i]);
    }
}

void cli_retry_passed_over(struct cli_run *run, size_t seq,
                           void (*report)(struct cli_job *job, void *arg), void *arg)
{
    struct cli_job *job, *next, *taken = NULL, **all;
    size_t n = 0, i;

    /* The common case, on every job handed back: nothing is parked. */
    if (atomic_load(&run->nparked) == 0)
        return;
    pthread_mutex_lock(&run->held_lock);
    for (job = run->held; job; job = next) {
        next = job->next;
        if (!job->parked || job->seq >= seq)
            continue;
        if (job->prev)
            job->prev->next = job->next;
        else
            run->held = job->next;
        if (job->next)
            job->next->prev = job->prev;
        job->prev = NULL;
        job->next = taken;
        taken = job;
        n++;
    }
    atomic_fetch_sub(&run->nparked, n);
    pthread_mutex_unlock(&run->held_lock);
    if (n == 0)
        return;
    all = malloc(n * sizeof(*all));
    if (!all) {
        /* No memory to sort them: write them all the same, out of order,
         * rather than lose any. */
        for (job = taken; job; job = next) {
            next = job->next;
            job->next = NULL;
            report(job, arg);
            cli_job_free(job);
        }
        return;
    }
    for (i = 0, job = taken; job; job = job->next)
        all[i++] = job;
    report_sorted(all, n, report, arg);
    free(all);
}

void cli_retry_leftovers(struct cli_run *run, void (*report)(struct cli_job *job, void *arg),
                         void *arg)
{
    struct cli_job *job, *next, **all;
    size_t n = 0, i;

    /* The call is closed: no job thread is left to touch the list. */
    pthread_mutex_lock(&run->held_lock);
    job = run->held;
    run->held = NULL;
    atomic_store(&run->nparked, 0);
    pthread_mutex_unlock(&run->held_lock);
    for (next = job; next; next = next->next)
        n++;
    all = n ? malloc(n * sizeof(*all)) : NULL;
    if (!all) {
        /* No memory to sort them: write them all the same, out of order,
         * rather than lose any. */
        for (; job; job = next) {
            next = job->next;
            job->prev = job->next = NULL;
            report(job, arg);
            cli_job_free(job);
        }
        return;
    }
    for (i = 0; job; job = job->next)
        all[i++] = job;
    report_sorted(all, n, report, arg);
    free(all);
}
