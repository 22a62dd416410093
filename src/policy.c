/* policy.c - the four entry points as four policies on one mechanism: what
 * a job's result does, what its failure does, what a job that never ran
 * leaves behind, and what the call fills in when it ends.
 *
 *   each    run_on_each: results are dropped
 *   all     run_all: results[i], NULL for a job that never ran
 *   any     run_any: the first success wins and stops the call; failures
 *           only lose, and the first is kept in case every job fails
 *   stream  amap: results go to the completion queue, batch by batch
 *
 * What the call returns is decided in one place for all four
 * (aiometer__call_verdict, call.c). */
#include "config.h"
#include "call.h"
#include "syscalls.h"

#include <stdint.h>

/* ---- run_on_each ------------------------------------------------------------ */

const struct aiometer__policy aiometer__policy_each = { NULL, NULL, NULL, NULL, NULL, 1 };

/* ---- run_all ------------------------------------------------------------------ */

static void all_result(struct aiometer__call *c, size_t j, void *r, struct aiometer__sink *sink)
{
    (void)sink;
    c->results[j] = r;
}

/* A failed job's result is stored as any other: the job chose it. */
static void all_failure(struct aiometer__call *c, size_t j, int err, void *r)
{
    (void)err;
    c->results[j] = r;
}

static void all_skip(struct aiometer__call *c, size_t j)
{
    c->results[j] = NULL;
}

/* Jobs never claimed never started: their results are NULL.  Every
 * participant has left, so `next` is final. */
static void all_finish(struct aiometer__call *c)
{
    for (size_t i = atomic_load(&c->next); i < c->n; i++)
        c->results[i] = NULL;
}

const struct aiometer__policy aiometer__policy_all = { all_result, NULL,       all_failure,
                                                       all_skip,   all_finish, 1 };

/* ---- run_any ------------------------------------------------------------------ */

static void any_result(struct aiometer__call *c, size_t j, void *r, struct aiometer__sink *sink)
{
    size_t none = SIZE_MAX;

    (void)sink;
    /* Only a job that returns while the call still runs can win: one that
     * returns after the deadline most likely returned because it was
     * cancelled, and its result means nothing.  The losers, who come all at
     * once, see that without taking the lock. */
    if (atomic_load(&c->stop) != AIOMETER__GOING)
        return;
    aiometer__lock(&c->lock);
    if (atomic_load(&c->stop) == AIOMETER__GOING &&
        atomic_compare_exchange_strong(&c->winner, &none, j)) {
        c->win_result = r;
        aiometer__call_stop_locked(c, AIOMETER__STOP_WON, 0, j);
    }
    aiometer__unlock(&c->lock);
}

/* Failures do not stop run_any; the first one is kept in case every job
 * fails. */
static void any_failure(struct aiometer__call *c, size_t j, int err, void *r)
{
    (void)r;
    aiometer__lock(&c->lock);
    if (c->err == 0) {
        c->err = err;
        c->err_index = j;
    }
    aiometer__unlock(&c->lock);
}

const struct aiometer__policy aiometer__policy_any = {
    any_result, NULL, any_failure, NULL, NULL, 0
};

/* ---- amap ---------------------------------------------------------------------- */

/* A batch's results wait in the sink and go to the completion queue under
 * one lock hold when the batch ends, rather than one lock per result. */
static void stream_result(struct aiometer__call *c, size_t j, void *r, struct aiometer__sink *sink)
{
    (void)c;
    sink->index[sink->n] = j;
    sink->result[sink->n] = r;
    sink->n++;
}

static void stream_flush(struct aiometer__call *c, struct aiometer__sink *sink)
{
    if (sink->n == 0)
        return;
    aiometer__lock(&c->lock);
    for (size_t i = 0; i < sink->n; i++)
        aiometer__cq_push(c->cq, sink->index[i], sink->result[i]);
    if (c->done_waiters)
        pthread_cond_broadcast(&c->done_cv);
    aiometer__unlock(&c->lock);
    sink->n = 0;
}

/* A job that failed or never ran leaves no result, but its place in the
 * window must be given back (and, in input order, passed over). */
static void stream_skip(struct aiometer__call *c, size_t j)
{
    aiometer__lock(&c->lock);
    aiometer__cq_skip(c->cq, j);
    if (c->done_waiters)
        pthread_cond_broadcast(&c->done_cv);
    aiometer__unlock(&c->lock);
}

static void stream_failure(struct aiometer__call *c, size_t j, int err, void *r)
{
    (void)err;
    (void)r;
    stream_skip(c, j);
}

const struct aiometer__policy aiometer__policy_stream = { stream_result,  stream_flush,
                                                          stream_failure, stream_skip,
                                                          NULL,           1 };
