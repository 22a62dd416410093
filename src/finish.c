/* finish.c - a call's end, once every participant has left: what it
 * returns, what becomes of the jobs that never ended (parked retries,
 * never-claimed jobs), its final progress report and statistics
 * (progress.c), and letting go of what it holds. */
#include "config.h"
#include "call.h"
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>

int aiometer__call_verdict(struct aiometer__call *c)
{
    switch (atomic_load(&c->stop)) {
    case AIOMETER__STOP_WON:
        return 0; /* run_any: a win is a success whatever else failed */
    case AIOMETER__STOP_TIMEOUT:
        return ETIMEDOUT;
    case AIOMETER__STOP_CANCELLED:
        return ECANCELED;
    default:
        /* Stopped by a failure: its error.  Not stopped: 0, or under
         * run_any, where failures do not stop the call, the first failure
         * when every job failed. */
        return c->err;
    }
}

/* What a finished call still holds: its place among the limiter's and the
 * pool's users, its locks and its descriptors. */
static void let_go(void *arg)
{
    struct aiometer__call *c = arg;

    if (c->shared)
        atomic_fetch_sub(&c->shared->users, 1);
    aiometer__pool_release(c->pool);
    aiometer__call_undo_init(c);
}

/* The final report runs the user's progress callback: if that ends the
 * thread (pthread_exit), the call lets go of what it holds as the thread
 * unwinds, or the pool and the limiter would count it as a user for ever
 * (aiometer_pool_destroy, aiometer_limiter_destroy: EBUSY).  opts.stats is
 * then left as it was.  (A function of its own, so that no local of the
 * caller lives across the cleanup handler's setjmp.) */
static void final_report(struct aiometer__call *c, int ret)
{
    pthread_cleanup_push(let_go, c);
    aiometer__progress_final(c, ret);
    pthread_cleanup_pop(0);
}

int aiometer__call_finish(struct aiometer__call *c)
{
    int ret = aiometer__call_verdict(c);

    aiometer__retry_finish(c);
    if (c->policy->finish)
        c->policy->finish(c);
    if (c->errors)
        for (size_t i = atomic_load(&c->next); i < c->n; i++)
            c->errors[i] = ECANCELED; /* never claimed, so never run */
    final_report(c, ret);
    let_go(c);
    return ret;
}
