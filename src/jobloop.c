/* jobloop.c - the participants' loop: claim a batch of jobs, run it
 * (runjob.c runs each job), account for it, decide the next batch's size
 * and whether helpers are wanted (handoff.c). */
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
        /* A plain batch counts its jobs when it ends (runjob.c):
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
        /* (Tested here first: without retries this is once per batch.) */
        int due = c->rq.cap && aiometer__retry_next(c, &re, 1);

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
        if (!due && k == 0 && !(c->rq.cap && aiometer__retry_next(c, &re, 0)))
            break;
        if (k == 0) {
            claimed++;
            note_running(c);
            ctx->in_batch = 1;
            aiometer__run_job(c, ctx, L, re.index, re.arg, rated, sink, &re);
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
        /* The sentinel posts the call if this batch runs too long. */
        if (alone)
            atomic_store_explicit(&c->alone_t0, t0, memory_order_relaxed);
        if (plain)
            aiometer__run_plain_batch(c, ctx, L, first, k, c->source ? sargs : NULL, sink);
        else
            for (j = first; j < first + k; j++)
                aiometer__run_job(c, ctx, L, j, c->source ? sargs[j - first] : NULL, rated, sink,
                                  NULL);
        if (c->policy->flush)
            c->policy->flush(c, sink);
        if (alone)
            atomic_store_explicit(&c->alone_t0, 0, memory_order_relaxed);
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
