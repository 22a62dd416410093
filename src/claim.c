/* claim.c - claiming jobs: the card's bounded queue, as a counter and a
 * window.
 *
 * The card puts jobs in a bounded queue that workers take from.  Here the
 * jobs are already in the caller's array, so the queue is only the next
 * index to take: an atomic counter that participants advance with one
 * compare-and-swap for a whole batch.  No job is ever copied, and the
 * per-job path takes no lock and allocates nothing.
 *
 * The bound is the window: an amap may only claim indices below its
 * completion queue's window end (completion.h), so at most its buffer's
 * worth of results are running or waiting to be read; a claimer that meets
 * the end of the window waits (space_cv) until the consumer makes room.
 * run_all and run_on_each need no bound: their results go straight to the
 * caller's array or nowhere.
 *
 * A lazy source has no array: claiming pulls arguments from it, under the
 * call's source_lock so that it is never called concurrently, and the same
 * window bounds how far ahead it is pulled. */
#include "config.h"
#include "call.h"
#include "clock.h"
#include "syscalls.h"

#include <errno.h>
#include <stdint.h>

int aiometer__call_has_work(struct aiometer__call *c)
{
    if (atomic_load(&c->stop) != AIOMETER__GOING)
        return 0;
    if (c->rq.cap) {
        /* A parked job needs a participant to wait for it (retry.c); one
         * more is wanted only while fewer wait than are parked. */
        size_t parked = atomic_load(&c->parked);
        if (parked && atomic_load(&c->retry_waiters) < parked)
            return 1;
    }
    if (c->source)
        return !atomic_load(&c->source_done);
    return atomic_load(&c->next) < c->n;
}

int aiometer__can_claim_locked(struct aiometer__call *c)
{
    size_t pos = c->source ? atomic_load(&c->pulled) : atomic_load(&c->next);

    if (c->source ? atomic_load(&c->source_done) != 0 : pos >= c->n)
        return 0;
    return !c->cq || pos < aiometer__cq_window(c->cq);
}

/* Wait, with c->lock held, until the amap window has room for the next claim
 * (whose index pos() reads), the call stops, or the window is lifted. */
static void wait_for_room_locked(struct aiometer__call *c, size_t (*pos)(struct aiometer__call *))
{
    c->space_waiters++;
    while (atomic_load(&c->stop) == AIOMETER__GOING && pos(c) >= aiometer__cq_window(c->cq) &&
           (c->source || pos(c) < c->n)) {
        aiometer__cond_wait_until(&c->space_cv, &c->lock,
                                  aiometer__call_wait_limit(c, AIOMETER__NEVER));
        aiometer__call_check_deadline_locked(c);
    }
    c->space_waiters--;
    /* The consumer wakes one waiter when room appears; each woken waiter
     * wakes the next while room remains.  Waking them all at once would
     * send hundreds of threads after a few slots. */
    if (c->space_waiters && pos(c) < aiometer__cq_window(c->cq))
        pthread_cond_signal(&c->space_cv);
}

static size_t next_pos(struct aiometer__call *c)
{
    return atomic_load(&c->next);
}

static size_t pulled_pos(struct aiometer__call *c)
{
    return atomic_load(&c->pulled);
}

/* Claim from a lazy source: up to `want` arguments (into arg[]), pulled only
 * now that jobs can start.  Sources are called under c->source_lock, so
 * never concurrently, but without c->lock and outside any job: a source is
 * the user's code and may call anything, aiometer_sleep or a nested call
 * included, which must neither deadlock on the call's lock nor act on the
 * job this thread ran last.  Returns how many were pulled; their indices
 * follow *first. */
size_t aiometer__claim_source(struct aiometer__call *c, size_t want, int may_wait, size_t *first,
                        void **arg)
{
    struct aiometer__ctx *ctx = aiometer__tls;
    size_t got = 0, pulled;
    int r;

    /* Only holders of source_lock change pulled, so while we hold it the
     * count is ours to read and bump without the call's lock; the stop,
     * the end of the source and the window are atomics. */
    aiometer__lock(&c->source_lock);
    pulled = *first = atomic_load(&c->pulled);
    /* Once for the batch: a thread-local access in a shared library is a
     * function call, and a batch of tiny jobs pulls 64 arguments. */
    aiometer__tls = NULL;
    while (got < want) {
        if (c->deadline != AIOMETER__NEVER)
            aiometer__call_check_deadline(c);
        if (atomic_load(&c->stop) != AIOMETER__GOING || atomic_load(&c->source_done))
            break;
        if (c->cq && pulled >= aiometer__cq_window(c->cq)) {
            /* Never wait with arguments in hand: run those first. */
            if (!may_wait || got)
                break;
            aiometer__unlock(&c->source_lock);
            aiometer__lock(&c->lock);
            wait_for_room_locked(c, pulled_pos);
            aiometer__unlock(&c->lock);
            aiometer__lock(&c->source_lock);
            pulled = *first = atomic_load(&c->pulled);
            continue;
        }
        ctx->in_source = 1;
        r = c->source(c->source_state, &arg[got]);
        ctx->in_source = 0;
        if (r == 0) {
            /* Release, not a full fence: readers use pulled as a position
             * (the window, the consumer's wake-ups) or read it after every
             * participant has left, which the leave synchronises. */
            atomic_store_explicit(&c->pulled, ++pulled, memory_order_release);
            got++;
            continue;
        }
        aiometer__lock(&c->lock);
        atomic_store(&c->source_done, 1);
        if (r != AIOMETER_DONE)
            aiometer__call_stop_locked(c, AIOMETER__STOP_FAILED, r > 0 ? r : EINVAL, pulled);
        else if (c->done_waiters)
            pthread_cond_broadcast(&c->done_cv);
        aiometer__unlock(&c->lock);
        break;
    }
    aiometer__tls = ctx;
    aiometer__unlock(&c->source_lock);
    return got;
}

/* Claim up to `want` consecutive indices of an array input.  Lock-free
 * unless an amap window is full and we may wait for room. */
size_t aiometer__claim_array(struct aiometer__call *c, size_t want, int may_wait, size_t *first)
{
    size_t cur, limit, k;

    for (;;) {
        if (c->deadline != AIOMETER__NEVER)
            aiometer__call_check_deadline(c);
        if (atomic_load_explicit(&c->stop, memory_order_acquire) != AIOMETER__GOING)
            return 0;
        /* Relaxed: the counter only hands out indices.  What a job reads
         * (the caller's arrays) was written before the call was posted, and
         * posting goes through the pool's lock, which every participant
         * took to join. */
        cur = atomic_load_explicit(&c->next, memory_order_relaxed);
        limit = c->n;
        if (c->cq) {
            size_t w = aiometer__cq_window(c->cq);
            if (w < limit)
                limit = w;
        }
        if (cur >= limit) {
            if (cur >= c->n || !may_wait)
                return 0;
            aiometer__lock(&c->lock);
            wait_for_room_locked(c, next_pos);
            aiometer__unlock(&c->lock);
            continue;
        }
        k = limit - cur;
        if (k > want)
            k = want;
        /* Relaxed for the same reason: the compare-and-swap alone makes
         * every index go to exactly one claimer. */
        if (atomic_compare_exchange_weak_explicit(&c->next, &cur, cur + k, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *first = cur;
            return k;
        }
    }
}
