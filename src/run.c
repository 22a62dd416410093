/* run.c - the entry points that run a whole call before returning:
 * run_on_each (and its lazy-source form), run_all and run_any. */
#include "config.h"
#include "call.h"
#include "sync.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

/* The calling thread is ending inside a job it ran (pthread_exit): its
 * participation has been undone and the call stopped (participant_unwound
 * in call.c).  The call lives in this thread's frames, which are still
 * whole while this cleanup handler runs: wait for the other participants
 * and finish it, so that nothing is left pointing into a dead stack. */
static void owner_unwound(void *arg)
{
    struct aio_call *c = arg;

    aio_call_stop(c, AIO_STOP_FAILED, EOWNERDEAD, SIZE_MAX);
    aio_call_wait(c);
    aio_call_finish(c);
}

/* Run a set-up call to its end and finish it, with thread cancellation
 * deferred until nothing of the call is left (see aio_nocancel_begin);
 * for run_any, the winner goes to *result and *index. */
static int run_to_end(struct aio_call *c, void **result, size_t *index)
{
    int cs = aio_nocancel_begin(), ret;
    size_t win;

    pthread_cleanup_push(owner_unwound, c);
    aio_call_run(c);
    pthread_cleanup_pop(0);
    /* Every participant has left, so the winner and its result are final. */
    win = atomic_load(&c->winner);
    if (win != SIZE_MAX) {
        if (result)
            *result = c->win_result;
        if (index)
            *index = win;
    }
    ret = aio_call_finish(c);
    aio_nocancel_end(cs, 1);
    return ret;
}

/* Fill opts->stats for a call that ran no job (n == 0). */
static void no_job_stats(const aiometer_options *opts)
{
    if (opts && opts->stats) {
        memset(opts->stats, 0, sizeof(*opts->stats));
        opts->stats->failed_index = SIZE_MAX;
    }
}

int aiometer_run_on_each(aiometer_fn fn, void *const args[], size_t n,
                         const aiometer_options *opts)
{
    struct aio_call c;
    int err;

    if (!fn || (!args && n > 0))
        return EINVAL;
    err = aio_options_check(opts);
    if (err)
        return err;
    if (n == 0) {
        no_job_stats(opts);
        return 0;
    }
    err = aio_call_init(&c, AIO_MODE_EACH, n, opts);
    if (err)
        return err;
    c.fn = fn;
    c.args = args;
    return run_to_end(&c, NULL, NULL);
}

int aiometer_run_on_each_source(aiometer_fn fn, aiometer_source_fn next, void *state,
                                const aiometer_options *opts)
{
    struct aio_call c;
    int err;

    if (!fn || !next)
        return EINVAL;
    err = aio_call_init(&c, AIO_MODE_EACH, SIZE_MAX, opts);
    if (err)
        return err;
    c.fn = fn;
    c.source = next;
    c.source_state = state;
    return run_to_end(&c, NULL, NULL);
}

/* Every job must have a function: checked before anything starts. */
static int check_jobs(const aiometer_job jobs[], size_t n)
{
    if (!jobs && n > 0)
        return EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!jobs[i].fn)
            return EINVAL;
    return 0;
}

int aiometer_run_all(const aiometer_job jobs[], size_t n, void *results[],
                     const aiometer_options *opts)
{
    struct aio_call c;
    int err;

    if ((!results && n > 0) || check_jobs(jobs, n))
        return EINVAL;
    err = aio_options_check(opts);
    if (err)
        return err;
    if (n == 0) {
        no_job_stats(opts);
        return 0;
    }
    err = aio_call_init(&c, AIO_MODE_ALL, n, opts);
    if (err)
        return err;
    c.jobs = jobs;
    c.results = results;
    return run_to_end(&c, NULL, NULL);
}

int aiometer_run_any(const aiometer_job jobs[], size_t n, void **result, size_t *index,
                     const aiometer_options *opts)
{
    struct aio_call c;
    int err;

    if (n == 0 || check_jobs(jobs, n))
        return EINVAL;
    err = aio_call_init(&c, AIO_MODE_ANY, n, opts);
    if (err)
        return err;
    c.jobs = jobs;
    return run_to_end(&c, result, index);
}
