/* runjob.c - running jobs: one job with what comes before it (its running
 * slot, its key, its booked start) and after it (its outcome to the
 * call's policy, its slot back), and the plain batch, which runs many jobs
 * of a call with nothing around them at the least cost per job. */
#include "config.h"
#include "call.h"
#include "syscalls.h"

#include <errno.h>
#include <stdint.h>

void aiometer__job_failed(struct aiometer__call *c, size_t j, int err, void *r)
{
    const struct aiometer__policy *pol = c->policy;

    if (c->errors)
        c->errors[j] = err;
    if (c->keep_going) {
        /* The call goes on; what it returns in the end is the failure of
         * the lowest index, whatever order the jobs failed in. */
        aiometer__lock(&c->lock);
        if (c->err == 0 || j < c->err_index) {
            c->err = err;
            c->err_index = j;
        }
        aiometer__unlock(&c->lock);
        if (pol->kept_failure)
            pol->kept_failure(c, j, err, r);
    } else if (pol->failure) {
        pol->failure(c, j, err, r);
    }
}

/* Job j has failed for good with err without calling aiometer_fail (its
 * retries ran out after it was parked, or a stop cut its backoff short):
 * as aiometer_fail would, it stops the call unless the policy or
 * keep_going says the call goes on. */
static void fail_for_good(struct aiometer__call *c, struct aiometer__local *L, size_t j, int err)
{
    L->failed++;
    if (c->progress)
        atomic_fetch_add(&c->p_failed, 1);
    /* A call that has already stopped (a cancellation, the deadline, a
     * win) does not take this job's error for its own: the job ended
     * because of the stop, and the stop says what the call returns. */
    if (c->policy->fail_stops && !c->keep_going &&
        atomic_load(&c->stop) == AIOMETER__GOING)
        aiometer__call_stop(c, AIOMETER__STOP_FAILED, err, j);
    aiometer__job_failed(c, j, err, NULL);
}

/* Give back the running slot the job holds on the call's limiter. */
static void give_back(struct aiometer__call *c, struct aiometer__ctx *ctx)
{
    ctx->slot = 0;
    c->shared->be.release(c->shared->state, ctx->key);
    if (c->keyed)
        aiometer__key_released(c, ctx->key);
}

/* What follows a job's return: its result, failure or retry goes to the
 * policy, and a running slot goes back. */
static void job_outcome(struct aiometer__call *c, struct aiometer__ctx *ctx,
                        struct aiometer__local *L, size_t j, void *r, void *source_arg,
                        struct aiometer__sink *sink)
{
    const struct aiometer__policy *pol = c->policy;

    if (ctx->drop)
        r = NULL;
    if (ctx->fail_err) {
        L->failed++;
        if (c->progress)
            atomic_fetch_add(&c->p_failed, 1);
        aiometer__job_failed(c, j, ctx->fail_err, r);
    } else if (ctx->retry_err) {
        /* The slot goes back before the backoff, not after it. */
        if (ctx->slot)
            give_back(c, ctx);
        if (!aiometer__retry_park(c, j, source_arg, ctx->key, ctx->attempt + 1, ctx->retry_err,
                                  ctx->retry_after))
            fail_for_good(c, L, j, ctx->retry_err);
    } else {
        L->completed++;
        if (c->progress)
            atomic_fetch_add(&c->p_completed, 1);
        if (c->errors)
            c->errors[j] = 0;
        if (pol->result)
            pol->result(c, j, r, sink);
    }
    if (ctx->slot)
        give_back(c, ctx);
    if (c->progress)
        aiometer__progress_tick(c);
}

/* Run job j once: its first attempt (re NULL), or a parked job that is due
 * (re): the next attempt after a backoff, or a job that was set aside for
 * its key. */
void aiometer__run_job(struct aiometer__call *c, struct aiometer__ctx *ctx,
                       struct aiometer__local *L, size_t j, void *source_arg, int rated,
                       struct aiometer__sink *sink, const struct aiometer__retry *re)
{
    const struct aiometer__policy *pol = c->policy;
    aiometer_fn fn;
    void *arg, *r;
    int ready = 1;

    ctx->index = j;
    ctx->key = NULL;
    /* Relaxed: this is only a shortcut past jobs of a stopped call.  A job
     * that sees a stale "going" starts as it would have a moment earlier;
     * the claim that gave it out read stop with acquire. */
    if (atomic_load_explicit(&c->stop, memory_order_relaxed) != AIOMETER__GOING) {
        ready = -1;
        /* A job parked for its start holds its key's slot; a stop hands it
         * out anyway (retry.c), and it does not run. */
        if (re && re->hold)
            c->shared->be.release(c->shared->state, re->key);
    } else if (c->keyed)
        ready = aiometer__key_ready(c, L, j, source_arg, re, &ctx->key, &ctx->slot);
    else if ((c->capped && !(ctx->slot = aiometer__take_slot(c, j))) ||
             (rated && !aiometer__wait_rate(c, L, j, 0)))
        ready = -1;
    if (ready == 0)
        return; /* set aside until its key allows it */
    if (ready < 0) {
        if (ctx->slot)
            give_back(c, ctx);
        if (re && re->attempt > 0) {
            /* Stopped between two attempts: the job ends with its last
             * error. */
            fail_for_good(c, L, j, re->err);
            return;
        }
        if (c->errors)
            c->errors[j] = ECANCELED;
        if (pol->skip)
            pol->skip(c, j);
        return;
    }
    if (c->jobs) {
        fn = c->jobs[j].fn;
        arg = c->jobs[j].arg;
    } else {
        fn = c->fn;
        arg = c->source ? source_arg : c->args[j];
    }
    if (re && re->attempt > 0) {
        L->retried++;
        if (c->progress)
            atomic_fetch_add(&c->p_retried, 1);
    } else {
        L->started++;
        if (c->progress)
            atomic_fetch_add(&c->p_started, 1);
    }
    ctx->fail_err = 0;
    ctx->attempt = re ? re->attempt : 0;
    ctx->retry_err = 0;
    ctx->drop = 0;
    ctx->in_job = 1;
    r = fn(arg);
    ctx->in_job = 0;
    job_outcome(c, ctx, L, j, r, source_arg, sink);
}

/* A batch of a call with nothing to do around its jobs but run them (no
 * limiter, no keys, no rate, no progress reports, no errors array).  W1's
 * tiny jobs spend most of their time here, so the loops below do per job
 * only what aiometer__run_job does in that case, with the same effect, and
 * leave to the batch what can be done once for it (callgrind: 126
 * instructions per tiny job in all before the plain loop, 55 with it, 33
 * with run_all's own loop, the per-batch counts and fewer batches, of
 * which 15 in this loop; bench/README):
 *   - ctx->in_job stays set for the whole batch: between two jobs nothing
 *     runs that could end the thread (job_outcome calls no user code
 *     here), so participant_unwound (jobloop.c) still fails job ctx->index;
 *   - the started and completed counts are added when the batch ends;
 *     participant_unwound adds those of a batch cut short from
 *     plain_first, the index and plain_outcomes (the jobs that went
 *     through job_outcome, which counted them itself);
 *   - the loops keep the jobs' inputs and outputs in registers: a job
 *     cannot change them (it may only call the job-side functions, which
 *     write ctx, and ctx is read again after each job).
 * A job that fails, asks for a retry or drops its result goes through
 * job_outcome as in aiometer__run_job; once the call stops, the rest of
 * the batch goes through aiometer__run_job, which skips them. */

/* Called rarely: job j called aiometer_fail or aiometer_retry. */
static void plain_outcome(struct aiometer__call *c, struct aiometer__ctx *ctx, size_t j, void *r,
                          void *source_arg)
{
    ctx->plain_outcomes++;
    job_outcome(c, ctx, ctx->L, j, r, source_arg, ctx->sink);
    ctx->fail_err = ctx->retry_err = ctx->drop = 0;
}

/* run_all: the result goes straight to results[j], as all_result would put
 * it, without a call through the policy per job.  Returns the index of the
 * first job not run (end unless the call stopped). */
static size_t plain_all_loop(struct aiometer__call *c, struct aiometer__ctx *ctx, size_t j,
                             size_t end)
{
    const aiometer_job *jobs = c->jobs;
    void **results = c->results;

    for (; j < end; j++) {
        void *r;

        /* Relaxed, as in aiometer__run_job. */
        if (atomic_load_explicit(&c->stop, memory_order_relaxed) != AIOMETER__GOING)
            break;
        ctx->index = j;
        r = jobs[j].fn(jobs[j].arg);
        if (ctx->fail_err | ctx->retry_err | ctx->drop) {
            plain_outcome(c, ctx, j, r, NULL);
            continue;
        }
        results[j] = r;
    }
    return j;
}

/* Any other policy, and lazy sources (arguments in sargs). */
static size_t plain_loop(struct aiometer__call *c, struct aiometer__ctx *ctx, size_t first,
                         size_t end, void **sargs)
{
    void (*result)(struct aiometer__call *, size_t, void *, struct aiometer__sink *) =
        c->policy->result;
    size_t j;

    for (j = first; j < end; j++) {
        aiometer_fn fn;
        void *arg, *r;

        if (atomic_load_explicit(&c->stop, memory_order_relaxed) != AIOMETER__GOING)
            break;
        ctx->index = j;
        if (c->jobs) {
            fn = c->jobs[j].fn;
            arg = c->jobs[j].arg;
        } else {
            fn = c->fn;
            arg = sargs ? sargs[j - first] : c->args[j];
        }
        r = fn(arg);
        if (ctx->fail_err | ctx->retry_err | ctx->drop) {
            plain_outcome(c, ctx, j, r, sargs ? arg : NULL);
            continue;
        }
        if (result)
            result(c, j, r, ctx->sink);
    }
    return j;
}

void aiometer__run_plain_batch(struct aiometer__call *c, struct aiometer__ctx *ctx,
                               struct aiometer__local *L, size_t first, size_t k, void **sargs,
                               struct aiometer__sink *sink)
{
    size_t j, end = first + k;

    /* aiometer__run_job leaves these as the last job set them; a plain job starts
     * with them clear, and plain_outcome puts them back. */
    ctx->fail_err = ctx->retry_err = ctx->drop = 0;
    ctx->attempt = 0;
    ctx->key = NULL;
    ctx->plain_first = first;
    ctx->plain_outcomes = 0;
    ctx->index = first;
    ctx->in_plain = 1;
    ctx->in_job = 1;
    if (c->policy == &aiometer__policy_all && c->jobs)
        j = plain_all_loop(c, ctx, first, end);
    else
        j = plain_loop(c, ctx, first, end, sargs);
    ctx->in_job = 0;
    ctx->in_plain = 0;
    L->started += j - first;
    L->completed += j - first - ctx->plain_outcomes;
    for (; j < end; j++)
        aiometer__run_job(c, ctx, L, j, sargs ? sargs[j - first] : NULL, 0, sink, NULL);
}
