/* call.c - a call's life: set-up, posting it to the pool, the caller's
 * help and wait, and its end. */
#include "config.h"
#include "call.h"
#include "clock.h"
#include "pool.h"
#include "syscalls.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* How long a caller watches for its last participants to leave before it
 * sleeps on the condition variable. */
#define AIO_SPIN_WAIT_NS 20000

/* Default progress interval. */
#define AIO_PROGRESS_NS (AIO_NS_PER_S / 10)

static int rate_valid(double rate)
{
    return rate > 0 && isfinite(rate);
}

int aio_options_check(const aiometer_options *o)
{
    if (!o)
        return 0;
    if (isnan(o->max_per_second) || o->max_per_second < 0)
        return EINVAL;
    if (rate_valid(o->max_per_second)) {
        struct aio_gcra probe;
        if (aio_gcra_init(&probe, o->max_per_second, o->max_burst))
            return EINVAL;
    }
    if (isnan(o->timeout) || o->timeout < 0)
        return EINVAL;
    if (isnan(o->progress_interval) || o->progress_interval < 0)
        return EINVAL;
    /* A per-key limiter needs the job's key, which calls cannot give yet. */
    if (o->limiter && o->limiter->be.per_key)
        return EINVAL;
    return 0;
}

/* ---- the task the pool sees ------------------------------------------------ */

static struct aio_call *call_of(struct aio_task *t)
{
    return aio_list_entry(t, struct aio_call, task);
}

static int task_has_work(struct aio_task *t)
{
    return aio_call_has_work(call_of(t));
}

static int task_join(struct aio_task *t)
{
    return aio_call_join(call_of(t));
}

static void task_work(struct aio_task *t)
{
    aio_call_work(call_of(t), 0);
}

static void task_leave(struct aio_task *t)
{
    aio_call_leave(call_of(t));
}

static const struct aio_task_ops call_task_ops = { task_has_work, task_join, task_work,
                                                   task_leave };

/* ---- set-up ------------------------------------------------------------------ */

int aio_call_init(struct aio_call *c, const struct aio_policy *policy, size_t n,
                  const aiometer_options *opts)
{
    static const aiometer_options defaults;
    aiometer_pool *pool;
    int err;

    if (!opts)
        opts = &defaults;
    err = aio_options_check(opts);
    if (err)
        return err;
    err = aio_pool_resolve(opts->pool, &pool);
    if (err)
        return err;

    memset(c, 0, sizeof(*c));
    c->task.ops = &call_task_ops;
    aio_list_init(&c->task.node);
    c->policy = policy;
    c->pool = pool;
    c->n = n;
    c->slots = aio_pool_size(pool);
    if (opts->max_at_once && opts->max_at_once < c->slots)
        c->slots = opts->max_at_once;
    if (rate_valid(opts->max_per_second)) {
        aio_gcra_init(&c->own_rate, opts->max_per_second, opts->max_burst);
        c->has_rate = 1;
    }
    c->shared = opts->limiter;
    c->capped = c->shared && c->shared->be.acquire;
    c->t_start = aio_now_ns();
    c->deadline = AIO_NEVER;
    if (opts->timeout > 0 && isfinite(opts->timeout))
        c->deadline = aio_add_ns(c->t_start, aio_seconds_to_ns(opts->timeout));
    /* With a deadline the caller stays free to watch it.  With a rate the
     * jobs start from the pool's threads, which sleep with 1 ns of timer
     * slack (pool.c), not from a caller thread whose wake-ups may be 50 us
     * late and shift the schedule.  (An amap consumer runs a job only from
     * inside aiometer_amap_next(): amap.c clears this.)  In each case the
     * caller still helps if no thread of the pool comes (aio_call_wait). */
    c->caller_runs = c->deadline == AIO_NEVER && !c->has_rate && !c->shared;
    c->progress = opts->progress;
    c->progress_arg = opts->progress_arg;
    c->progress_every = opts->progress_interval > 0 ? aio_seconds_to_ns(opts->progress_interval)
                                                    : AIO_PROGRESS_NS;
    c->stats_out = opts->stats;
    atomic_init(&c->next, 0);
    atomic_init(&c->stop, AIO_GOING);
    atomic_init(&c->source_done, 0);
    atomic_init(&c->participants, 0);
    atomic_init(&c->winner, SIZE_MAX);
    atomic_init(&c->started, 0);
    atomic_init(&c->completed, 0);
    atomic_init(&c->failed, 0);
    atomic_init(&c->running, 0);
    atomic_init(&c->peak, 0);
    atomic_init(&c->rate_wait_ns, 0);
    atomic_init(&c->p_started, 0);
    atomic_init(&c->p_completed, 0);
    atomic_init(&c->p_failed, 0);
    atomic_init(&c->p_last, c->t_start);
    atomic_flag_clear(&c->p_busy);
    c->efd = c->efd_w = c->efd_x = -1;
    atomic_init(&c->efd_pub, -1);

    {
        pthread_cond_t *const cvs[] = { &c->done_cv, &c->stop_cv, &c->space_cv };
        return aio_sync_init(&c->lock, cvs, 3);
    }
}

/* ---- participants ------------------------------------------------------------ */

int aio_call_join(struct aio_call *c)
{
    size_t p = atomic_load(&c->participants);

    do {
        if (p >= c->slots)
            return 0;
    } while (!atomic_compare_exchange_weak(&c->participants, &p, p + 1));
    return 1;
}

void aio_call_leave(struct aio_call *c)
{
    size_t p = atomic_load(&c->participants);

    /* Any but the last participant leaves with one atomic operation and
     * never touches c again.  The last one decrements under the lock, so the
     * waiter cannot see zero, return and free the call before we have woken
     * it and unlocked. */
    while (p > 1)
        if (atomic_compare_exchange_weak(&c->participants, &p, p - 1))
            return;
    aio_lock(&c->lock);
    if (atomic_fetch_sub(&c->participants, 1) == 1 && c->done_waiters)
        pthread_cond_broadcast(&c->done_cv);
    aio_unlock(&c->lock);
}

int aio_call_help(struct aio_call *c, int one)
{
    if (!aio_call_join(c))
        return 0;
    aio_call_work(c, one);
    aio_call_leave(c);
    return 1;
}

/* May the caller (or amap consumer) run jobs when no pool thread came?  A
 * caller with a deadline is better off watching it, so it helps only when
 * no thread of the pool could come: every one started and busy.  It can
 * then leave the watching to the waits themselves: rate waits,
 * aiometer_sleep and claims end at the deadline, and the cancel descriptor
 * of such a call carries a timer that fires at it. */
static int may_help(struct aio_call *c)
{
    return c->deadline == AIO_NEVER || aio_pool_saturated(c->pool);
}

int aio_call_help_if_alone_locked(struct aio_call *c, uint64_t *alone_since, int one,
                                  uint64_t *until)
{
    uint64_t now;

    *until = AIO_NEVER;
    if (atomic_load(&c->participants) != 0) {
        *alone_since = 0;
        return 0;
    }
    if (!may_help(c)) {
        *alone_since = 0;
        return 0;
    }
    now = aio_now_ns();
    if (!*alone_since)
        *alone_since = now;
    if (now - *alone_since < AIO_HELP_WAIT_NS) {
        *until = *alone_since + AIO_HELP_WAIT_NS;
        return 0;
    }
    aio_unlock(&c->lock);
    aio_call_help(c, one);
    aio_lock(&c->lock);
    return 1;
}

/* ---- a call from start to end ------------------------------------------------------------ */

void aio_call_begin(struct aio_call *c)
{
    aio_pool_hold(c->pool);
    if (c->shared)
        atomic_fetch_add(&c->shared->users, 1);
}

void aio_call_post(struct aio_call *c, size_t helpers)
{
    if (helpers == 0)
        return;
    if (aio_pool_post(c->pool, &c->task, helpers) == 0) {
        /* The pool could start no thread at all: rather than wait for
         * helpers that will never come, the caller does the work. */
        c->caller_runs = 1;
    }
}

void aio_call_wait(struct aio_call *c)
{
    uint64_t alone_since = 0;

    /* First wait until no job is left to claim.  Participants that stop
     * finding work leave; the last one to leave wakes us (done_cv), and so
     * does a stop.  If no thread of the pool has come for AIO_HELP_WAIT_NS
     * (every thread busy, say, or this is a job of a one-thread pool), the
     * caller runs jobs itself rather than wait for ever. */
    aio_lock(&c->lock);
    for (;;) {
        uint64_t until;

        aio_call_check_deadline_locked(c);
        if (!aio_call_has_work(c))
            break;
        if (aio_call_help_if_alone_locked(c, &alone_since, 0, &until))
            continue;
        c->done_waiters++;
        aio_cond_wait_until(&c->done_cv, &c->lock, aio_call_wait_limit(c, until));
        c->done_waiters--;
    }
    aio_unlock(&c->lock);

    /* No worker may join once the call is out of the pool's queue; then the
     * participants still inside are all we wait for.  They are usually
     * finishing their last job, so watch for them a few microseconds
     * before sleeping: a sleep and wake-up costs tens of microseconds here. */
    aio_pool_unlink(c->pool, &c->task);
    if (atomic_load(&c->participants) > 0) {
        uint64_t until = aio_now_ns() + AIO_SPIN_WAIT_NS;
        while (atomic_load(&c->participants) > 0 && aio_now_ns() < until)
            aio_cpu_relax();
    }
    aio_lock(&c->lock);
    while (atomic_load(&c->participants) > 0) {
        aio_call_check_deadline_locked(c);
        c->done_waiters++;
        aio_cond_wait_until(&c->done_cv, &c->lock, aio_call_wait_limit(c, AIO_NEVER));
        c->done_waiters--;
    }
    aio_unlock(&c->lock);
}

void aio_call_run(struct aio_call *c)
{
    size_t want = c->n < c->slots ? c->n : c->slots;

    aio_call_begin(c);
    if (c->caller_runs) {
        /* The caller takes its slot before any helper can fill them all. */
        atomic_store(&c->participants, 1);
        aio_call_post(c, want - 1);
        aio_call_work(c, 0);
        aio_call_leave(c);
    } else {
        aio_call_post(c, want);
        if (c->caller_runs)
            aio_call_help(c, 0);
    }
    aio_call_wait(c);
}

int aio_call_verdict(struct aio_call *c)
{
    switch (atomic_load(&c->stop)) {
    case AIO_STOP_WON:
        return 0; /* run_any: a win is a success whatever else failed */
    case AIO_STOP_TIMEOUT:
        return ETIMEDOUT;
    case AIO_STOP_CANCELLED:
        return ECANCELED;
    default:
        /* Stopped by a failure: its error.  Not stopped: 0, or under
         * run_any, where failures do not stop the call, the first failure
         * when every job failed. */
        return c->err;
    }
}

int aio_call_finish(struct aio_call *c)
{
    int ret = aio_call_verdict(c);

    if (c->policy->finish)
        c->policy->finish(c);
    aio_progress_final(c, ret);
    if (c->shared)
        atomic_fetch_sub(&c->shared->users, 1);
    aio_pool_release(c->pool);
    aio_call_undo_init(c);
    return ret;
}

void aio_call_undo_init(struct aio_call *c)
{
    aio_cancel_fd_close(c);
    pthread_cond_destroy(&c->space_cv);
    pthread_cond_destroy(&c->stop_cv);
    pthread_cond_destroy(&c->done_cv);
    pthread_mutex_destroy(&c->lock);
}
