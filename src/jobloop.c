/* jobloop.c - the participants' loop: claim a batch of jobs, run each one
 * (after its limiters allow it), hand its outcome to the call's policy. */
#include "config.h"
#include "call.h"
#include "clock.h"
#include "pool.h"
#include "syscalls.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>

_Thread_local struct aiometer__ctx *aiometer__tls;

/* In the child of a fork, the thread that forked runs no job, even if it
 * was inside one: that call is the parent's.  Without this, aiometer_sleep
 * in the child would poll the cancel descriptor it shares with the parent
 * while reading its own stale copy of the call's stop flag, and spin once
 * the parent's call stopped.  Registered when a thread first works on a
 * call, so before any job can fork. */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void forget_job_in_child(void)
{
    aiometer__tls = NULL;
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, forget_job_in_child);
}

/* Adaptive batches.  A participant claims one job at a time until it sees
 * that a whole batch finishes in under AIOMETER__BATCH_GROW_NS; then it doubles the
 * batch, up to AIOMETER__BATCH_MAX, and halves it again when a batch takes longer
 * than AIOMETER__BATCH_SHRINK_NS.  So tiny jobs cost one atomic operation per
 * hundreds of jobs, while a slow job holds back at most the few jobs that
 * were claimed with it when jobs were still fast.
 *
 * A batch that took a small part of AIOMETER__BATCH_GROW_NS doubles up to
 * AIOMETER__BATCH_LEAP times at once, as long as the larger batch would
 * still take less than that at the same time per job: tiny jobs go 1, 16,
 * 256, 1024 instead of 1, 2, 4, ... 1024.  Each batch costs a claim, two
 * atomic operations for peak_running, a clock read and the hand-off check,
 * and a call of 1,000 tiny jobs (~2 us of work) ran 33 of them, about 1 ns
 * per job (bench/README, issue 16).  A slow job still holds back at most
 * the jobs claimed with it while jobs were fast. */
#define AIOMETER__BATCH_LEAP 4
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
static void run_job(struct aiometer__call *c, struct aiometer__ctx *ctx, struct aiometer__local *L,
                    size_t j, void *source_arg, int rated, struct aiometer__sink *sink,
                    const struct aiometer__retry *re)
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
    if (atomic_load_explicit(&c->stop, memory_order_relaxed) != AIOMETER__GOING)
        ready = -1;
    else if (c->keyed)
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
 * only what run_job does in that case, with the same effect, and leave to
 * the batch what can be done once for it (callgrind: 126 instructions per
 * tiny job in all before the plain loop, 55 with it, and 17 with the
 * per-batch counts and run_all's own loop; bench/README):
 *   - ctx->in_job stays set for the whole batch: between two jobs nothing
 *     runs that could end the thread (job_outcome calls no user code
 *     here), so participant_unwound still fails job ctx->index;
 *   - the started and completed counts are added when the batch ends;
 *     participant_unwound adds those of a batch cut short from
 *     plain_first, the index and plain_outcomes (the jobs that went
 *     through job_outcome, which counted them itself);
 *   - the loops keep the job's inputs and outputs in registers: a job
 *     cannot change them (it may only call the job-side functions, which
 *     write ctx, and ctx is read again after each job).
 * A job that fails, asks for a retry or drops its result goes through
 * job_outcome as in run_job; once the call stops, the rest of the batch
 * goes through run_job, which skips them. */

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

        /* Relaxed, as in run_job. */
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

static void run_plain_batch(struct aiometer__call *c, struct aiometer__ctx *ctx,
                            struct aiometer__local *L, size_t first, size_t k, void **sargs,
                            struct aiometer__sink *sink)
{
    size_t j, end = first + k;

    /* run_job leaves these as the last job set them; a plain job starts
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
        run_job(c, ctx, L, j, sargs ? sargs[j - first] : NULL, 0, sink, NULL);
}

static void note_running(struct aiometer__call *c)
{
    size_t now_running = atomic_fetch_add(&c->running, 1) + 1;
    size_t peak = atomic_load(&c->peak);

    while (now_running > peak && !atomic_compare_exchange_weak(&c->peak, &peak, now_running))
        ;
}

/* Add a participant's counts to the call's. */
static void add_local(struct aiometer__call *c, const struct aiometer__local *L)
{
    if (L->started)
        atomic_fetch_add(&c->started, L->started);
    if (L->completed)
        atomic_fetch_add(&c->completed, L->completed);
    if (L->failed)
        atomic_fetch_add(&c->failed, L->failed);
    if (L->retried)
        atomic_fetch_add(&c->retried, L->retried);
    if (L->rate_wait_ns)
        atomic_fetch_add(&c->rate_wait_ns, L->rate_wait_ns);
}

/* The participant's thread is ending inside user code: a job, a source, a
 * limiter backend or a progress callback called pthread_exit.  Run as a
 * cleanup handler while it unwinds.  The call must not wait for ever for
 * a participant that is gone, so its job fails with EOWNERDEAD (as a
 * robust mutex's owner dying does), the call stops with that error, and
 * the participant leaves as it would have; a pool thread is first struck
 * off its pool.  No lock of the call is held here: user code never runs
 * under one (a source runs under source_lock alone, let go below). */
static void participant_unwound(void *arg)
{
    struct aiometer__ctx *ctx = arg;
    struct aiometer__call *c = ctx->call;

    aiometer__tls = ctx->prev;
    if (ctx->in_plain) {
        /* A plain batch counts its jobs when it ends (run_plain_batch):
         * those before this one have started, and completed unless
         * job_outcome counted them; this one has started. */
        ctx->L->started += ctx->index - ctx->plain_first + 1;
        ctx->L->completed += ctx->index - ctx->plain_first - ctx->plain_outcomes;
    }
    if (ctx->in_source)
        aiometer__unlock(&c->source_lock);
    if (ctx->in_job) {
        ctx->L->failed++;
        if (c->progress)
            atomic_fetch_add(&c->p_failed, 1);
        aiometer__job_failed(c, ctx->index, EOWNERDEAD, NULL);
    }
    if (ctx->slot)
        c->shared->be.release(c->shared->state, ctx->key);
    aiometer__call_stop(c, AIOMETER__STOP_FAILED, EOWNERDEAD, ctx->index);
    if (c->policy->flush)
        c->policy->flush(c, ctx->sink);
    if (ctx->in_batch)
        atomic_fetch_sub(&c->running, 1);
    add_local(c, ctx->L);
    /* Before leaving: once the last participant of the pool's last call
     * has left, the pool may be destroyed, and must not join this thread. */
    if (aiometer__on_worker && !ctx->prev)
        aiometer__pool_worker_lost();
    aiometer__call_leave(c);
}

static size_t work_loop(struct aiometer__call *c, int one, struct aiometer__ctx *ctx);

size_t aiometer__call_work(struct aiometer__call *c, int one)
{
    struct aiometer__local L = { 0, 0, 0, 0, 0 };
    struct aiometer__sink sink;
    struct aiometer__ctx ctx = { .call = c, .prev = aiometer__tls, .L = &L, .sink = &sink };
    size_t claimed;

    pthread_once(&atfork_once, register_atfork);
    /* The cleanup handler, and everything it reads, live in this frame,
     * which is still whole while it runs: one handler per participation,
     * not per job, so the per-job path stays as it was. */
    sink.n = 0;
    aiometer__tls = &ctx;
    pthread_cleanup_push(participant_unwound, &ctx);
    claimed = work_loop(c, one, &ctx);
    pthread_cleanup_pop(0);
    aiometer__tls = ctx.prev;
    add_local(c, &L);
    return claimed;
}

/* Claim batches and run them until nothing is left (or, with `one`, after
 * one claim). */
static size_t work_loop(struct aiometer__call *c, int one, struct aiometer__ctx *ctx)
{
    struct aiometer__local *L = ctx->L;
    struct aiometer__sink *sink = ctx->sink;
    int rated = c->has_rate || (c->shared && c->shared->be.book);
    /* With retries, one job at a time: a job claimed in a batch would wait
     * behind the batch while parked jobs come due, and the gate on parked
     * jobs (retry.h) counts on one claim per participant. */
    int adaptive = !rated && !one && !c->rq.cap;
    int plain = !rated && !c->capped && !c->keyed && !c->progress && !c->errors;
    /* Alone: a caller with helpers still to recruit (handoff.c), so no
     * other participant can be at work (only adaptive loops ask). */
    int alone = adaptive && atomic_load_explicit(&c->recruit, memory_order_relaxed) != 0;
    size_t batch = 1, claimed = 0;
    uint64_t t_end = 0; /* when the last adaptive batch ended (0: none yet) */
    void *sargs[AIOMETER__SOURCE_BATCH];
    /* Batches stay within what the source buffer and the sink hold. */
    size_t max_batch = c->source || c->cq ? AIOMETER__SOURCE_BATCH : AIOMETER__BATCH_MAX;

    /* One claim of `one` jobs, where batches are allowed at all. */
    if (one > 1 && !rated && !c->rq.cap)
        batch = (size_t)one < max_batch ? (size_t)one : max_batch;

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
            size_t want = one ? batch : 1;
            if (adaptive && alone) {
                /* No one to share the end with: the fair share below
                 * would only cut the end into ever smaller batches. */
                want = batch;
            } else if (adaptive) {
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
            ctx->in_batch = 1;
            run_job(c, ctx, L, re.index, re.arg, rated, sink, &re);
            if (c->policy->flush)
                c->policy->flush(c, sink);
            atomic_fetch_sub(&c->running, 1);
            ctx->in_batch = 0;
            if (one)
                break;
            continue;
        }
        claimed += k;
        if (alone && atomic_load_explicit(&c->peak, memory_order_relaxed) != 0) {
            /* Alone, running is 0 or 1 and peak is already 1: the batch
             * leaves both alone (in_batch stays 0, so an unwinding thread
             * does not take back what it did not add). */
        } else {
            note_running(c);
            ctx->in_batch = 1;
        }
        /* The last batch's end is this one's start: the claim in between
         * is part of the batch's cost. */
        if (adaptive)
            t0 = t_end ? t_end : aiometer__now_ns();
        if (plain)
            run_plain_batch(c, ctx, L, first, k, c->source ? sargs : NULL, sink);
        else
            for (j = first; j < first + k; j++)
                run_job(c, ctx, L, j, c->source ? sargs[j - first] : NULL, rated, sink, NULL);
        if (c->policy->flush)
            c->policy->flush(c, sink);
        if (ctx->in_batch) {
            atomic_fetch_sub(&c->running, 1);
            ctx->in_batch = 0;
        }
        if (adaptive) {
            uint64_t d;
            int leap;

            t_end = aiometer__now_ns();
            d = t_end - t0;
            aiometer__handoff_batch(c, k, d, 0);
            if (d > AIOMETER__BATCH_SHRINK_NS && batch > 1)
                batch /= 2;
            for (leap = 0; leap < AIOMETER__BATCH_LEAP && d < AIOMETER__BATCH_GROW_NS &&
                           batch < max_batch;
                 leap++) {
                batch *= 2;
                d *= 2;
            }
            /* The caller is alone while it has helpers left to recruit
             * (handoff.c); once it posts, they may come at any time. */
            alone = atomic_load_explicit(&c->recruit, memory_order_relaxed) != 0;
        }
        if (one)
            break;
    }
    return claimed;
}
