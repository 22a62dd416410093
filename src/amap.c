/* amap.c - results as they finish: the streaming iterator.
 *
 * The iterator owns a call in AIO_MODE_STREAM and its completion queue.  Jobs
 * run on the pool's threads; the consumer takes results in aiometer_amap_next
 * and runs a job itself only when no thread of the pool comes to help (a
 * saturated pool, or an amap opened by a job of a one-thread pool). */
#include "config.h"
#include "call.h"
#include "clock.h"
#include "sync.h"

#include <errno.h>
#include <stdint.h>

/* Results the consumer takes from the queue per lock hold, at most. */
#define AIO_AMAP_TAKE 64

struct aiometer_amap {
    struct aio_call call;
    struct aio_cq cq;
    int alone;       /* the last wait saw no participant come: help at once */
    int end;         /* what next returned at the end (0: not yet) */
    /* Results taken from the queue in one hold of the call's lock and not
     * yet handed out, guarded by take_lock, so that several threads may
     * consume at once and each result still goes to exactly one of them.
     * take_lock is the innermost lock: taken alone (a result from the
     * buffer costs no trip through the busy call lock) or under the call's
     * lock, never the other way round. */
    pthread_mutex_t take_lock;
    size_t l_head, l_count;
    void *l_result[AIO_AMAP_TAKE];
    size_t l_index[AIO_AMAP_TAKE];
};

static int amap_open(aiometer_amap **out, aiometer_fn fn, void *const args[], size_t n,
                     aiometer_source_fn source, void *state, const aiometer_options *opts)
{
    aiometer_amap *it;
    struct aio_call *c;
    size_t cap, want;
    int err;

    err = aio_options_check(opts);
    if (err)
        return err;
    it = aio_calloc(1, sizeof(*it));
    if (!it)
        return ENOMEM;
    c = &it->call;
    err = aio_call_init(c, AIO_MODE_STREAM, source ? SIZE_MAX : n, opts);
    if (err) {
        aio_free(it);
        return err;
    }
    cap = opts && opts->max_buffered ? opts->max_buffered : 4 * c->slots;
    if (cap < 256 && !(opts && opts->max_buffered))
        cap = 256;
    err = aio_cq_init(&it->cq, cap, opts ? opts->ordered : 0);
    if (err) {
        aio_call_undo_init(c);
        aio_free(it);
        return err;
    }
    err = aio_mutex_init(&it->take_lock);
    if (err) {
        aio_cq_destroy(&it->cq);
        aio_call_undo_init(c);
        aio_free(it);
        return err == ENOMEM ? ENOMEM : EAGAIN;
    }
    c->cq = &it->cq;
    c->fn = fn;
    c->args = args;
    c->source = source;
    c->source_state = state;

    aio_call_begin(c);
    want = c->n < c->slots ? c->n : c->slots;
    aio_call_post(c, want);
    *out = it;
    return 0;
}

int aiometer_amap_open(aiometer_amap **it, aiometer_fn fn, void *const args[], size_t n,
                       const aiometer_options *opts)
{
    if (!it || !fn || (!args && n > 0))
        return EINVAL;
    return amap_open(it, fn, args, n, NULL, NULL, opts);
}

int aiometer_amap_open_source(aiometer_amap **it, aiometer_fn fn, aiometer_source_fn next,
                              void *state, const aiometer_options *opts)
{
    if (!it || !fn || !next)
        return EINVAL;
    return amap_open(it, fn, NULL, 0, next, state, opts);
}

/* Called with the lock held after a result was taken: wake participants
 * waiting for room once half the window is free, not on every result. */
static void wake_for_room_locked(aiometer_amap *it)
{
    struct aio_call *c = &it->call;
    size_t pos, end, half;

    if (!c->space_waiters)
        return;
    pos = c->source ? c->pulled : atomic_load(&c->next);
    end = aio_cq_window(&it->cq);
    half = it->cq.cap / 2 ? it->cq.cap / 2 : 1;
    if (end > pos && end - pos >= half)
        pthread_cond_signal(&c->space_cv); /* the rest follow in a chain */
}

/* Hand out the next buffered result, if any: 1, or 0 with nothing done. */
static int take_buffered(aiometer_amap *it, void **result, size_t *index)
{
    int took = 0;

    aio_lock(&it->take_lock);
    if (it->l_count) {
        *result = it->l_result[it->l_head];
        if (index)
            *index = it->l_index[it->l_head];
        it->l_head++;
        it->l_count--;
        took = 1;
    }
    aio_unlock(&it->take_lock);
    return took;
}

int aiometer_amap_next(aiometer_amap *it, void **result, size_t *index)
{
    struct aio_call *c;
    size_t idx;
    void *r;
    int ret, cs;

    if (!it || !result)
        return EINVAL;
    c = &it->call;
    /* The one cancellation point of the library: a request that is
     * pending is acted on here, before a result is taken, so none is lost.
     * One that comes while we wait is deferred until the next call. */
    pthread_testcancel();
    if (take_buffered(it, result, index))
        return 0;
    cs = aio_nocancel_begin();
    aio_lock(&c->lock);
    for (;;) {
        int stop;

        /* Another consumer may have filled the buffer since we looked:
         * results go out in the order they left the queue. */
        if (take_buffered(it, result, index)) {
            ret = 0;
            break;
        }
        /* The end, once told, is told again on every later call. */
        if (it->end) {
            ret = it->end;
            break;
        }

        aio_call_check_deadline_locked(c);
        stop = atomic_load(&c->stop);
        if (stop == AIO_STOP_FAILED && !c->err_reported) {
            c->err_reported = 1;
            ret = c->err;
            break;
        }
        if (aio_cq_pop(&it->cq, &r, &idx)) {
            /* Take what else is ready while we hold the lock.  The buffer
             * was empty just above, and only holders of c->lock fill it. */
            aio_lock(&it->take_lock);
            it->l_head = it->l_count = 0;
            while (it->l_count < AIO_AMAP_TAKE &&
                   aio_cq_pop(&it->cq, &it->l_result[it->l_count], &it->l_index[it->l_count]))
                it->l_count++;
            aio_unlock(&it->take_lock);
            wake_for_room_locked(it);
            *result = r;
            if (index)
                *index = idx;
            ret = 0;
            break;
        }
        /* The order of these two reads matters: once nothing is left to
         * claim, every job that will run was claimed by a participant, so
         * no participant then means nothing runs.  Read the other way
         * round, a worker could join and claim the last job in between. */
        if (!aio_call_has_work(c) && atomic_load(&c->participants) == 0) {
            /* Nothing runs, nothing is left, nothing is buffered. */
            ret = stop == AIO_STOP_CANCELLED ? ECANCELED
                  : stop == AIO_STOP_TIMEOUT ? ETIMEDOUT
                                             : AIOMETER_DONE;
            it->end = ret;
            break;
        }
        if (atomic_load(&c->participants) == 0) {
            if (aio_call_may_help(c)) {
                if (!it->alone) {
                    /* Give the pool's threads a moment to come. */
                    uint64_t until = aio_now_ns() + AIO_HELP_WAIT_NS;
                    c->done_waiters++;
                    aio_cond_wait_until(&c->done_cv, &c->lock, until);
                    c->done_waiters--;
                    if (atomic_load(&c->participants) == 0 && it->cq.count == 0 &&
                        aio_now_ns() >= until)
                        it->alone = 1;
                    continue;
                }
                if (aio_call_join(c)) {
                    aio_unlock(&c->lock);
                    aio_call_work(c, 1);
                    aio_call_leave(c);
                    aio_lock(&c->lock);
                    continue;
                }
            }
        } else {
            it->alone = 0;
        }
        c->done_waiters++;
        /* Once stopped there is no deadline left to watch. */
        aio_cond_wait_until(&c->done_cv, &c->lock,
                            atomic_load(&c->stop) == AIO_GOING ? c->deadline : AIO_NEVER);
        c->done_waiters--;
    }
    aio_unlock(&c->lock);
    aio_nocancel_end(cs, 0);
    return ret;
}

int aiometer_amap_cancel(aiometer_amap *it)
{
    if (!it)
        return EINVAL;
    aio_call_stop(&it->call, AIO_STOP_CANCELLED, 0, 0);
    return 0;
}

/* Free a finished iterator. */
static void amap_free(aiometer_amap *it)
{
    aio_cq_destroy(&it->cq);
    pthread_mutex_destroy(&it->take_lock);
    aio_free(it);
}

/* The thread in aiometer_amap_close is ending inside a job it ran
 * (pthread_exit): the call has been stopped and its participation undone
 * (participant_unwound in call.c).  Nobody will close the iterator now,
 * so do it here, as the cleanup handler runs. */
static void close_unwound(void *arg)
{
    aiometer_amap *it = arg;

    aio_call_wait(&it->call);
    aio_call_finish(&it->call);
    amap_free(it);
}

/* Help with the jobs left, if the consumer may, and wait for them all. */
static void close_wait(aiometer_amap *it)
{
    struct aio_call *c = &it->call;

    pthread_cleanup_push(close_unwound, it);
    if (c->deadline == AIO_NEVER && aio_call_join(c)) {
        aio_call_work(c, 0);
        aio_call_leave(c);
    }
    aio_call_wait(c);
    pthread_cleanup_pop(0);
}

int aiometer_amap_close(aiometer_amap *it)
{
    struct aio_call *c;
    int ret = 0, cs;

    if (!it)
        return EINVAL;
    c = &it->call;
    cs = aio_nocancel_begin();
    aio_lock(&c->lock);
    if (atomic_load(&c->stop) == AIO_GOING) {
        /* Leaving the block: the jobs still run, their results go nowhere,
         * and nothing holds them back any more. */
        aio_cq_discard(&it->cq);
        pthread_cond_broadcast(&c->space_cv);
    }
    aio_unlock(&c->lock);
    close_wait(it);

    if (c->err && !c->err_reported)
        ret = c->err;
    else if (atomic_load(&c->stop) == AIO_STOP_TIMEOUT && it->end != ETIMEDOUT)
        ret = ETIMEDOUT;
    /* The failure's error, if any, was the call's; what close returns is
     * decided above, so finish's own verdict is not needed. */
    aio_call_finish(c);
    amap_free(it);
    aio_nocancel_end(cs, 1);
    return ret;
}
