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
 * A job in backoff is on the run's parked list.  When the call stops while
 * it waits (--halt now, --deadline, a signal), the library ends the wait and
 * never runs the job again, and its result is never handed back: the main
 * thread finds it on the list once the call is closed and reports its last
 * attempt, which failed. */
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

int cli_retry_attempt(struct cli_run *run, struct cli_job *job)
{
    const struct cli_config *cfg = run->cfg;

    /* No attempt left, or the run is stopping: a retry would be a start,
     * and none is allowed any more (--halt, a signal, the deadline). */
    if (job->attempts > cfg->retries || atomic_load(&run->stop_starting) ||
        aiometer_cancelled())
        return 0;
    pthread_mutex_lock(&run->parked_lock);
    job->prev = NULL;
    job->next = run->parked;
    if (run->parked)
        run->parked->prev = job;
    run->parked = job;
    pthread_mutex_unlock(&run->parked_lock);
    aiometer_retry(CLI_ATTEMPT_FAILED, -1);
    return 1;
}

void cli_retry_unpark(struct cli_run *run, struct cli_job *job)
{
    pthread_mutex_lock(&run->parked_lock);
    if (job->prev)
        job->prev->next = job->next;
    else if (run->parked == job)
        run->parked = job->next;
    if (job->next)
        job->next->prev = job->prev;
    job->prev = job->next = NULL;
    pthread_mutex_unlock(&run->parked_lock);
}

void cli_retry_leftovers(struct cli_run *run, void (*report)(struct cli_job *job, void *arg),
                         void *arg)
{
    struct cli_job *job, *next;

    /* The call is closed: no job thread is left to touch the list.  The
     * list is newest first; reporting oldest first keeps input order for
     * jobs parked in input order, which is the common case. */
    pthread_mutex_lock(&run->parked_lock);
    job = run->parked;
    run->parked = NULL;
    pthread_mutex_unlock(&run->parked_lock);
    while (job && job->next)
        job = job->next;
    for (; job; job = next) {
        next = job->prev;
        job->prev = job->next = NULL;
        /* Its last attempt is in the job's fields, not yet recorded:
         * attempts are recorded as the next one begins. */
        report(job, arg);
        cli_job_free(job);
    }
}
