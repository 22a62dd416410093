/* amap_close.c - the end of a streaming iterator: aiometer_amap_cancel
 * stops its call, aiometer_amap_close waits for what still runs, says what
 * aiometer_amap_next has not told, finishes the call (finish.c) and frees
 * the iterator, also when the closing thread ends inside a job or in the
 * final progress report. */
#include "config.h"
#include "amap_impl.h"
#include "call.h"
#include "clock.h"
#include "syscalls.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>

int aiometer_amap_cancel(aiometer_amap *it)
{
    if (!it)
        return EINVAL;
    aiometer__call_stop(&it->call, AIOMETER__STOP_CANCELLED, 0, 0);
    return 0;
}

/* Free a finished iterator. */
static void amap_free(aiometer_amap *it)
{
    aiometer__cq_destroy(&it->cq);
    aiometer__free(it);
}

/* The thread in aiometer_amap_close is ending inside a job it ran
 * (pthread_exit): the call has been stopped and its participation undone
 * (participant_unwound in jobloop.c).  Nobody will close the iterator now,
 * so this cleanup handler does. */
static void close_unwound(void *arg)
{
    aiometer_amap *it = arg;

    aiometer__call_wait(&it->call);
    aiometer__call_finish(&it->call);
    amap_free(it);
}

static void amap_free_unwound(void *arg)
{
    amap_free(arg);
}

/* Finish the call and free the iterator.  The final progress report may
 * end this thread (call.c): the iterator goes with it. */
static void close_finish(aiometer_amap *it)
{
    pthread_cleanup_push(amap_free_unwound, it);
    aiometer__call_finish(&it->call);
    pthread_cleanup_pop(0);
    amap_free(it);
}

/* Help with the jobs left, if the consumer may, and wait for them all. */
static void close_wait(aiometer_amap *it)
{
    struct aiometer__call *c = &it->call;

    pthread_cleanup_push(close_unwound, it);
    if (c->deadline == AIOMETER__NEVER)
        aiometer__call_help(c, 0);
    aiometer__call_wait(c);
    pthread_cleanup_pop(0);
}

int aiometer_amap_close(aiometer_amap *it)
{
    struct aiometer__call *c;
    int ret = 0, cs;

    if (!it)
        return EINVAL;
    c = &it->call;
    cs = aiometer__nocancel_begin();
    aiometer__lock(&c->lock);
    if (atomic_load(&c->stop) == AIOMETER__GOING) {
        /* Leaving the block: the jobs still run, their results go nowhere,
         * and nothing holds them back any more. */
        aiometer__cq_discard(&it->cq);
        pthread_cond_broadcast(&c->space_cv);
    }
    aiometer__unlock(&c->lock);
    close_wait(it);

    /* Close returns what next has not told: a failure not yet reported
     * (even one that came after a cancellation), or a timeout. */
    if (c->keep_going) {
        /* Failures went through the queue: one not taken is still news. */
        if (it->cq.errs_undelivered)
            ret = c->err;
        uint64_t s = atomic_load(&it->take_state);

        for (size_t i = TAKE_HEAD(s); i < TAKE_END(s) && !ret; i++)
            if (atomic_load_explicit(&it->l_err[i], memory_order_relaxed))
                ret = c->err;
        if (!ret && atomic_load(&c->stop) == AIOMETER__STOP_TIMEOUT && it->end != ETIMEDOUT)
            ret = ETIMEDOUT;
    } else if (c->err && !c->err_reported)
        ret = c->err;
    else if (atomic_load(&c->stop) == AIOMETER__STOP_TIMEOUT && it->end != ETIMEDOUT)
        ret = aiometer__call_verdict(c);
    close_finish(it);
    aiometer__nocancel_end(cs, 1);
    return ret;
}
