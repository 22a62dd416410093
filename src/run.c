/* run.c - the entry points that run a whole call before returning:
 * run_on_each (and its lazy-source form), run_all and run_any.  Each picks
 * its policy (policy.c); the mechanism is the same for all. */
#include "config.h"
#include "call.h"
#include "syscalls.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

/* The calling thread is ending inside a job it ran (pthread_exit): its
 * participation has been undone and the call stopped (participant_unwound
 * in jobloop.c).  The call lives in this thread's frames, which are still
 * whole while this cleanup handler runs: wait for the other participants
 * and finish it, so that nothing is left pointing into a dead stack. */
static void owner_unwound(void *arg)
{
    struct aiometer__call *c = arg;

    aiometer__call_stop(c, AIOMETER__STOP_FAILED, EOWNERDEAD, SIZE_MAX);
    aiometer__call_wait(c);
    aiometer__call_finish(c);
}

/* Run a set-up call to its end and finish it, with thread cancellation
 * deferred until nothing of the call is left (see aiometer__nocancel_begin);
 * for run_any, the winner goes to *result and *index. */
static int run_to_end(struct aiometer__call *c, void **result, size_t *index)
{
    int cs = aiometer__nocancel_begin(), ret;
    size_t win;

    pthread_cleanup_push(owner_unwound, c);
    aiometer__call_run(c);
    pthread_cleanup_pop(0);
    /* Every participant has left, so the winner and its result are final. */
    win = atomic_load(&c->winner);
    if (win != SIZE_MAX) {
        if (result)
            *result = c->win_result;
        if (index)
            *index = win;
    }
    ret = aiometer__call_finish(c);
    aiometer__nocancel_end(cs, 1);
    return ret;
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

/* The body of run_on_each and run_all, once their own arguments are
 * checked: n jobs from jobs[] or from fn and args[]. */
static int run_array(const struct aiometer__policy *policy, const aiometer_job *jobs,
                     aiometer_fn fn, void *const *args, void **results, size_t n,
                     const aiometer_options *opts)
{
    struct aiometer__call c;
    int err;

    if (n == 0) {
        /* aiometer__call_init checks the options of a call with jobs. */
        err = aiometer__options_check(opts);
        if (err)
            return err;
        /* A call without jobs runs nothing, but still reports. */
        if (opts && opts->stats) {
            memset(opts->stats, 0, sizeof(*opts->stats));
            opts->stats->failed_index = SIZE_MAX;
        }
        return 0;
    }
    err = aiometer__call_init(&c, policy, n, opts);
    if (err)
        return err;
    c.jobs = jobs;
    c.fn = fn;
    c.args = args;
    c.results = results;
    return run_to_end(&c, NULL, NULL);
}

int aiometer_run_on_each(aiometer_fn fn, void *const args[], size_t n,
                         const aiometer_options *opts)
{
    if (!fn || (!args && n > 0))
        return EINVAL;
    return run_array(&aiometer__policy_each, NULL, fn, args, NULL, n, opts);
}

int aiometer_run_all(const aiometer_job jobs[], size_t n, void *results[],
                     const aiometer_options *opts)
{
    if ((!results && n > 0) || check_jobs(jobs, n))
        return EINVAL;
    return run_array(&aiometer__policy_all, jobs, NULL, NULL, results, n, opts);
}

int aiometer_run_on_each_source(aiometer_fn fn, aiometer_source_fn next, void *state,
                                const aiometer_options *opts)
{
    struct aiometer__call c;
    int err;

    if (!fn || !next)
        return EINVAL;
    err = aiometer__call_init(&c, &aiometer__policy_each, SIZE_MAX, opts);
    if (err)
        return err;
    c.fn = fn;
    c.source = next;
    c.source_state = state;
    return run_to_end(&c, NULL, NULL);
}

int aiometer_run_any(const aiometer_job jobs[], size_t n, void **result, size_t *index,
                     const aiometer_options *opts)
{
    struct aiometer__call c;
    int err;

    if (n == 0 || check_jobs(jobs, n))
        return EINVAL;
    err = aiometer__call_init(&c, &aiometer__policy_any, n, opts);
    if (err)
        return err;
    c.jobs = jobs;
    return run_to_end(&c, result, index);
}
