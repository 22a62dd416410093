/* jobloop.c - the participants' loop: claim a batch of jobs, run each one
 * (after its limiters allow it), hand its outcome to the call's policy. */
#include "config.h"
#include "call.h"
#include "clock.h"
#include "syscalls.h"

#include <errno.h>
#include <stdint.h>

_Thread_local struct aiometer__ctx *aiometer__tls;

/* Adaptive batches.  A participant claims one job at a time until it sees
 * that a whole batch finishes in under AIOMETER__BATCH_GROW_NS; then it doubles the
 * batch, up to AIOMETER__BATCH_MAX, and halves it again when a batch takes longer
 * than AIOMETER__BATCH_SHRINK_NS.  So tiny jobs cost one atomic operation per
 * hundreds of jobs, while a slow job holds back at most the few jobs that
 * were claimed with it when jobs were still fast. */
#define AIOMETER__BATCH_MAX 1024
#define AIOMETER__BATCH_GROW_NS 20000
#define AIOMETER__BATCH_SHRINK_NS 100000

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
    if (c->policy->fail_stops && !c->keep_going)
        aiometer__call_stop(c, AIOMETER__STOP_FAILED, err, j);
    aiometer__job_failed(c, j, err, NULL);
}

/* Give back the slot a job of the call held on its limiter. */
static void give_back(struct aiometer__call *c, const char *key)
{
    c->shared->be.release(c->shared->state, key);
    if (c->keyed)
        aiometer__key_released(c, key);
}

/* Run job j once: its first attempt (re NULL), or a parked job that is due
 * (re): the next attempt after a backoff, or a job that was set aside for
 * its key. */
static void run_job(struct aiometer__call *c, struct aiometer__ctx *ctx, struct aiometer__local *L,
                    size_t j, void *source_arg, int rated, struct aiometer__sink *sink,
                    const struct aiometer__retry *re)
{
    const struct aiometer__policy *pol = c->policy;
    const char *key = NULL;
    aiometer_fn fn;
    void *arg, *r;
    int slot = 0, ready = 1;

    /* Relaxed: this is only a shortcut past jobs of a stopped call.  A job
     * that sees a stale "going" starts as it would have a moment earlier;
     * the claim that gave it out read stop with acquire. */
    if (atomic_load_explicit(&c->stop, memory_order_relaxed) != AIOMETER__GOING)
        ready = -1;
    else if (c->keyed)
        ready = aiometer__key_ready(c, L, j, source_arg, re, &key, &slot);
    else if ((c->capped && !(slot = aiometer__take_slot(c, j))) ||
             (rated && !aiometer__wait_rate(c, L, j, 0)))
        ready = -1;
    if (ready == 0)
        return; /* set aside until its key allows it */
    if (ready < 0) {
        if (slot)
            give_back(c, key);
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
    ctx->index = j;
    ctx->fail_err = 0;
    ctx->attempt = re ? re->attempt : 0;
    ctx->retry_err = 0;
    ctx->drop = 0;
    r = fn(arg);
    if (ctx->drop)
        r = NULL;
    if (ctx->fail_err) {
        L->failed++;
        if (c->progress)
            atomic_fetch_add(&c->p_failed, 1);
        aiometer__job_failed(c, j, ctx->fail_err, r);
    } else if (ctx->retry_err) {
        /* The slot goes back before the backoff, not after it. */
        if (slot)
            give_back(c, key);
        slot = 0;
        if (!aiometer__retry_park(c, j, source_arg, key, ctx->attempt + 1, ctx->retry_err,
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
    if (slot)
        give_back(c, key);
    if (c->progress)
        aiometer__progress_tick(c);
}

static void note_running(struct aiometer__call *c)
{
    size_t now_running = atomic_fetch_add(&c->running, 1) + 1;
    size_t peak = atomic_load(&c->peak);

    while (now_running > peak && !atomic_compare_exchange_weak(&c->peak, &peak, now_running))
        ;
}

size_t aiometer__call_work(struct aiometer__call *c, int one)
{
    struct aiometer__ctx ctx = { .call = c, .prev = aiometer__tls };
    struct aiometer__local L = { 0, 0, 0, 0, 0 };
    int rated = c->has_rate || (c->shared && c->shared->be.book);
    /* With retries, one job at a time: a job claimed in a batch would wait
     * behind the batch while parked jobs come due, and the gate on parked
     * jobs (retry.h) counts on one claim per participant. */
    int adaptive = !rated && !one && !c->rq.cap;
    size_t batch = 1, claimed = 0;
    void *sargs[AIOMETER__SOURCE_BATCH];
    struct aiometer__sink sink;
    /* Batches stay within what the source buffer and the sink hold. */
    size_t max_batch = c->source || c->cq ? AIOMETER__SOURCE_BATCH : AIOMETER__BATCH_MAX;

    sink.n = 0;
    aiometer__tls = &ctx;
    for (;;) {
        size_t first = 0, k = 0, j;
        uint64_t t0 = 0;
        struct aiometer__retry re;
        int due = aiometer__retry_next(c, &re, 1);

        if (due) {
            /* A parked job's next attempt comes before new work. */
        } else if (c->source) {
            k = aiometer__claim_source(c, batch, !one, &first, sargs);
        } else {
            size_t want = 1;
            if (adaptive) {
                /* Leave enough unclaimed for the others to share the end.
                 * Relaxed: a stale count only makes the batch a little
                 * larger or smaller; the claim itself is exact. */
                size_t left = c->n - atomic_load_explicit(&c->next, memory_order_relaxed);
                size_t fair = left / (2 * c->slots);
                want = batch < fair ? batch : (fair ? fair : 1);
            }
            k = aiometer__claim_array(c, want, !one, &first);
        }
        /* Nothing new: wait for the parked jobs, if they need us. */
        if (!due && k == 0 && !aiometer__retry_next(c, &re, 0))
            break;
        if (k == 0) {
            claimed++;
            note_running(c);
            run_job(c, &ctx, &L, re.index, re.arg, rated, &sink, &re);
            if (c->policy->flush)
                c->policy->flush(c, &sink);
            atomic_fetch_sub(&c->running, 1);
            if (one)
                break;
            continue;
        }
        claimed += k;
        note_running(c);
        if (adaptive)
            t0 = aiometer__now_ns();
        for (j = first; j < first + k; j++)
            run_job(c, &ctx, &L, j, c->source ? sargs[j - first] : NULL, rated, &sink, NULL);
        if (c->policy->flush)
            c->policy->flush(c, &sink);
        atomic_fetch_sub(&c->running, 1);
        if (adaptive) {
            uint64_t d = aiometer__now_ns() - t0;
            if (d < AIOMETER__BATCH_GROW_NS && batch < max_batch)
                batch *= 2;
            else if (d > AIOMETER__BATCH_SHRINK_NS && batch > 1)
                batch /= 2;
        }
        if (one)
            break;
    }
    aiometer__tls = ctx.prev;
    if (L.started)
        atomic_fetch_add(&c->started, L.started);
    if (L.completed)
        atomic_fetch_add(&c->completed, L.completed);
    if (L.failed)
        atomic_fetch_add(&c->failed, L.failed);
    if (L.retried)
        atomic_fetch_add(&c->retried, L.retried);
    if (L.rate_wait_ns)
        atomic_fetch_add(&c->rate_wait_ns, L.rate_wait_ns);
    return claimed;
}
