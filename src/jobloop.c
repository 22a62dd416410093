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
 * tiny jobs spend most of their time here, so this loop does per job only
 * what run_job does in that case, with the same effect (callgrind: 126
 * instructions per tiny job in all before, 55 with this loop; bench/README).
 * A job that fails, asks for a retry or drops its result goes through
 * job_outcome as in run_job; once the call stops, the rest of the batch goes
 * through run_job, which skips them. */
static void run_plain_batch(struct aiometer__call *c, struct aiometer__ctx *ctx,
                            struct aiometer__local *L, size_t first, size_t k, void **sargs,
                            struct aiometer__sink *sink)
{
    void (*result)(struct aiometer__call *, size_t, void *, struct aiometer__sink *) =
        c->policy->result;
    size_t j, end = first + k;

    /* run_job leaves these as the last job set them; a plain job starts
     * with them clear, and job_outcome's cases below put them back. */
    ctx->fail_err = ctx->retry_err = ctx->drop = 0;
    ctx->attempt = 0;
    ctx->key = NULL;
    for (j = first; j < end; j++) {
        aiometer_fn fn;
        void *arg, *r;

        /* Relaxed, as in run_job. */
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
        L->started++;
        ctx->in_job = 1;
        r = fn(arg);
        ctx->in_job = 0;
        if (ctx->fail_err | ctx->retry_err | ctx->drop) {
            job_outcome(c, ctx, L, j, r, sargs ? arg : NULL, sink);
            ctx->fail_err = ctx->retry_err = ctx->drop = 0;
            continue;
        }
        L->completed++;
        if (result)
            result(c, j, r, sink);
    }
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
    size_t batch = 1, claimed = 0;
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
        note_running(c);
        ctx->in_batch = 1;
        if (adaptive)
            t0 = aiometer__now_ns();
        if (plain)
            run_plain_batch(c, ctx, L, first, k, c->source ? sargs : NULL, sink);
        else
            for (j = first; j < first + k; j++)
                run_job(c, ctx, L, j, c->source ? sargs[j - first] : NULL, rated, sink, NULL);
        if (c->policy->flush)
            c->policy->flush(c, sink);
        atomic_fetch_sub(&c->running, 1);
        ctx->in_batch = 0;
        if (adaptive) {
            uint64_t d = aiometer__now_ns() - t0;
            aiometer__handoff_batch(c, k, d, 0);
            if (d < AIOMETER__BATCH_GROW_NS && batch < max_batch)
                batch *= 2;
            else if (d > AIOMETER__BATCH_SHRINK_NS && batch > 1)
                batch /= 2;
        }
        if (one)
            break;
    }
    return claimed;
}
