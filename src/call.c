/* call.c - a call's life: set-up, posting it to the pool, the caller's
 * help and wait (its end is in finish.c). */
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
#define AIOMETER__SPIN_WAIT_NS 20000

/* Default progress interval. */
#define AIOMETER__PROGRESS_NS (AIOMETER__NS_PER_S / 10)

static int rate_valid(double rate)
{
    return rate > 0 && isfinite(rate);
}

int aiometer__options_check(const aiometer_options *o)
{
    if (!o)
        return 0;
    if (isnan(o->max_per_second) || o->max_per_second < 0)
        return EINVAL;
    if (rate_valid(o->max_per_second)) {
        struct aiometer__gcra probe;
        if (aiometer__gcra_init(&probe, o->max_per_second, o->max_burst))
            return EINVAL;
    }
    if (isnan(o->timeout) || o->timeout < 0)
        return EINVAL;
    if (isnan(o->progress_interval) || o->progress_interval < 0)
        return EINVAL;
    /* A per-key limiter needs the job's key. */
    if (o->limiter && o->limiter->be.per_key && !o->key)
        return EINVAL;
    return aiometer__retry_check(o);
}

/* ---- the task the pool sees ------------------------------------------------ */

static struct aiometer__call *call_of(struct aiometer__task *t)
{
    return aiometer__list_entry(t, struct aiometer__call, task);
}

static int task_has_work(struct aiometer__task *t)
{
    return aiometer__call_has_work(call_of(t));
}

static int task_join(struct aiometer__task *t)
{
    return aiometer__call_join(call_of(t));
}

static void task_work(struct aiometer__task *t)
{
    aiometer__call_work(call_of(t), 0);
}

static void task_leave(struct aiometer__task *t)
{
    aiometer__call_leave(call_of(t));
}

static const struct aiometer__task_ops call_task_ops = { task_has_work, task_join, task_work,
                                                   task_leave };

/* ---- set-up ------------------------------------------------------------------ */

/* The condition variables the call can use, into cvs[] (room for 5): how
 * many.  A condition variable with its CLOCK_MONOTONIC attribute costs
 * about 80 instructions to make and destroy, and run_all of 1 job cost
 * about 2,300 in all, so a call makes only those its entry point and
 * options can wait on (call.h). */
static size_t call_cvs(struct aiometer__call *c, pthread_cond_t *cvs[])
{
    size_t n = 0;

    cvs[n++] = &c->done_cv;
    cvs[n++] = &c->stop_cv;
    if (aiometer__call_has_space_cv(c))
        cvs[n++] = &c->space_cv;
    if (aiometer__call_has_retry_cvs(c)) {
        cvs[n++] = &c->retry_cv;
        cvs[n++] = &c->retry_timer_cv;
    }
    return n;
}

int aiometer__call_init(struct aiometer__call *c, const struct aiometer__policy *policy, size_t n,
                  const aiometer_options *opts)
{
    static const aiometer_options defaults;
    aiometer_pool *pool;
    int err;

    if (!opts)
        opts = &defaults;
    err = aiometer__options_check(opts);
    if (err)
        return err;
    err = aiometer__pool_resolve(opts->pool, &pool);
    if (err)
        return err;

    memset(c, 0, sizeof(*c));
    c->task.ops = &call_task_ops;
    aiometer__list_init(&c->task.node);
    c->policy = policy;
    c->pool = pool;
    c->n = n;
    c->slots = aiometer__pool_size(pool);
    if (opts->max_at_once && opts->max_at_once < c->slots)
        c->slots = opts->max_at_once;
    if (rate_valid(opts->max_per_second)) {
        aiometer__gcra_init(&c->own_rate, opts->max_per_second, opts->max_burst);
        c->has_rate = 1;
    }
    c->shared = opts->limiter;
    c->capped = c->shared && c->shared->be.acquire;
    /* The start is read only for what needs it (a deadline, progress
     * reports, statistics, a source's hand-off): a clock read is about 25
     * ns here, a tenth of a small call's whole cost.  Otherwise 0. */
    if (opts->timeout > 0 || opts->progress || opts->stats || n == SIZE_MAX)
        c->t_start = aiometer__now_ns();
    c->deadline = AIOMETER__NEVER;
    if (opts->timeout > 0 && isfinite(opts->timeout))
        c->deadline = aiometer__add_ns(c->t_start, aiometer__seconds_to_ns(opts->timeout));
    /* With a deadline the caller stays free to watch it.  With a rate the
     * jobs start from the pool's threads, which sleep with 1 ns of timer
     * slack (pool.c), not from a caller thread whose wake-ups may be 50 us
     * late and shift the schedule.  (An amap consumer runs a job only from
     * inside aiometer_amap_next(): amap.c clears this.)  In each case the
     * caller still helps if no thread of the pool comes (aiometer__call_wait). */
    c->caller_runs = c->deadline == AIOMETER__NEVER && !c->has_rate && !c->shared;
    c->progress = opts->progress;
    c->progress_arg = opts->progress_arg;
    c->progress_every = opts->progress_interval > 0
                            ? aiometer__seconds_to_ns(opts->progress_interval)
                            : AIOMETER__PROGRESS_NS;
    c->stats_out = opts->stats;
    c->retries = opts->retries;
    c->retry_delay = aiometer__retry_delay(opts);
    c->retry_max_delay = aiometer__retry_max_delay(opts);
    c->retry_gate = aiometer__retry_gate(c->slots);
    c->keep_going = opts->keep_going && policy->fail_stops;
    c->keyed = c->shared && c->shared->be.per_key;
    c->key = opts->key;
    c->key_arg = opts->key_arg;
    if (policy->has_errors && n != SIZE_MAX)
        c->errors = opts->errors;
    atomic_init(&c->recruit, 0);
    atomic_init(&c->learn, 0);
    atomic_init(&c->recruit_doubt, 0);
    atomic_init(&c->parked, 0);
    atomic_init(&c->retry_waiters, 0);
    atomic_init(&c->slot_waits, 0);
    atomic_init(&c->retried, 0);
    atomic_init(&c->p_retried, 0);
    atomic_init(&c->next, 0);
    atomic_init(&c->pulled, 0);
    atomic_init(&c->stop, AIOMETER__GOING);
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
        pthread_cond_t *cvs[5];
        size_t ncv = call_cvs(c, cvs);
        err = aiometer__mutex_init(&c->source_lock);
        if (err)
            return err == ENOMEM ? ENOMEM : EAGAIN;
        err = aiometer__sync_init(&c->lock, cvs, ncv);
        if (err) {
            pthread_mutex_destroy(&c->source_lock);
            return err;
        }
    }
    /* The heap of jobs in backoff (and of jobs set aside for their key) is
     * made now, so that a retry never allocates and never fails for want of
     * memory. */
    if ((c->retries || c->keyed) &&
        aiometer__retry_heap_init(&c->rq, aiometer__retry_cap(c->slots, n)) != 0) {
        /* Everything above is made and nothing else is: undo_init fits. */
        aiometer__call_undo_init(c);
        return ENOMEM;
    }
    return 0;
}

/* ---- participants ------------------------------------------------------------ */

int aiometer__call_join(struct aiometer__call *c)
{
    size_t p = atomic_load(&c->participants);

    do {
        if (p >= c->slots)
            return 0;
    } while (!atomic_compare_exchange_weak(&c->participants, &p, p + 1));
    return 1;
}

void aiometer__call_leave(struct aiometer__call *c)
{
    size_t p = atomic_load(&c->participants);

    /* Any but the last participant leaves with one atomic operation and
     * never touches c again.  The last one decrements under the lock, so the
     * waiter cannot see zero, return and free the call before we have woken
     * it and unlocked. */
    while (p > 1)
        if (atomic_compare_exchange_weak(&c->participants, &p, p - 1))
            return;
    aiometer__lock(&c->lock);
    if (atomic_fetch_sub(&c->participants, 1) == 1 && c->done_waiters)
        pthread_cond_broadcast(&c->done_cv);
    aiometer__unlock(&c->lock);
}

int aiometer__call_help(struct aiometer__call *c, int one)
{
    if (!aiometer__call_join(c))
        return 0;
    aiometer__call_work(c, one);
    aiometer__call_leave(c);
    return 1;
}

/* May the caller (or amap consumer) run jobs when no pool thread came?  A
 * caller with a deadline is better off watching it, so it helps only when
 * no thread of the pool could come: every one started and busy.  It can
 * then leave the watching to the waits themselves: rate waits,
 * aiometer_sleep and claims end at the deadline, and the cancel descriptor
 * of such a call carries a timer that fires at it. */
static int may_help(struct aiometer__call *c)
{
    return c->deadline == AIOMETER__NEVER || aiometer__pool_saturated(c->pool);
}

int aiometer__call_help_if_alone_locked(struct aiometer__call *c, uint64_t *alone_since, int one,
                                  uint64_t *until)
{
    uint64_t now;

    *until = AIOMETER__NEVER;
    if (atomic_load(&c->participants) != 0) {
        *alone_since = 0;
        return 0;
    }
    if (!may_help(c)) {
        *alone_since = 0;
        return 0;
    }
    now = aiometer__now_ns();
    if (!*alone_since)
        *alone_since = now;
    if (now - *alone_since < AIOMETER__HELP_WAIT_NS) {
        *until = *alone_since + AIOMETER__HELP_WAIT_NS;
        return 0;
    }
    aiometer__unlock(&c->lock);
    aiometer__call_help(c, one);
    aiometer__lock(&c->lock);
    return 1;
}

/* ---- a call from start to end ------------------------------------------------------------ */

void aiometer__call_begin(struct aiometer__call *c)
{
    aiometer__pool_hold(c->pool);
    if (c->shared)
        atomic_fetch_add(&c->shared->users, 1);
}

void aiometer__call_post(struct aiometer__call *c, size_t helpers)
{
    if (helpers == 0)
        return;
    c->posted = 1;
    if (aiometer__pool_post(c->pool, &c->task, helpers) == 0) {
        /* The pool could start no thread at all: rather than wait for
         * helpers that will never come, the caller does the work. */
        c->caller_runs = 1;
    }
}

void aiometer__call_wait(struct aiometer__call *c)
{
    uint64_t alone_since = 0;

    /* The caller is done being alone: after this, what the sentinel may
     * have written in posting the call (posted, caller_runs) is ours to
     * read. */
    if (c->watched) {
        aiometer__sentinel_unwatch(c);
        c->watched = 0;
    }

    /* A call never posted has had no participant but its caller, who has
     * left with no job left to claim (a caller alone, handoff.c): nothing
     * to wait for, so no lock to take.  A posted call goes on below even
     * then: a helper may still be inside aiometer__call_leave. */
    if (!c->posted && atomic_load(&c->participants) == 0 && !aiometer__call_has_work(c))
        return;

    /* First wait until no job is left to claim.  Participants that stop
     * finding work leave; the last one to leave wakes us (done_cv), and so
     * does a stop.  If no thread of the pool has come for AIOMETER__HELP_WAIT_NS
     * (every thread busy, say, or this is a job of a one-thread pool), the
     * caller runs jobs itself rather than wait for ever. */
    aiometer__lock(&c->lock);
    for (;;) {
        uint64_t until;

        aiometer__call_check_deadline_locked(c);
        if (!aiometer__call_has_work(c))
            break;
        if (aiometer__call_help_if_alone_locked(c, &alone_since, 0, &until))
            continue;
        c->done_waiters++;
        aiometer__cond_wait_until(&c->done_cv, &c->lock, aiometer__call_wait_limit(c, until));
        c->done_waiters--;
    }
    aiometer__unlock(&c->lock);

    /* No worker may join once the call is out of the pool's queue; then the
     * participants still inside are all we wait for.  They are usually
     * finishing their last job, so watch for them a few microseconds
     * before sleeping: a sleep and wake-up costs tens of microseconds here.
     * Not when they outnumber the other cores, though: then some of them
     * wait for a core, maybe this one, and watching would only hold them
     * up (W5: 63 losers that must all wake and leave, on 2 cores). */
    if (c->posted)
        aiometer__pool_unlink(c->pool, &c->task);
    if (atomic_load(&c->participants) > 0 &&
        atomic_load(&c->participants) < aiometer__online_cpus()) {
        uint64_t until = aiometer__now_ns() + AIOMETER__SPIN_WAIT_NS;
        while (atomic_load(&c->participants) > 0 && aiometer__now_ns() < until)
            aiometer__cpu_relax();
    }
    aiometer__lock(&c->lock);
    while (atomic_load(&c->participants) > 0) {
        aiometer__call_check_deadline_locked(c);
        c->done_waiters++;
        aiometer__cond_wait_until(&c->done_cv, &c->lock,
                                  aiometer__call_wait_limit(c, AIOMETER__NEVER));
        c->done_waiters--;
    }
    aiometer__unlock(&c->lock);
}

void aiometer__call_run(struct aiometer__call *c)
{
    size_t want = c->n < c->slots ? c->n : c->slots;

    aiometer__call_begin(c);
    if (c->caller_runs) {
        /* The caller takes its slot before any helper can fill them all. */
        atomic_store(&c->participants, 1);
        if (!aiometer__handoff_alone(c, want - 1))
            aiometer__call_post(c, want - 1);
        aiometer__call_work(c, 0);
        /* The caller leaves without aiometer__call_leave's lock: that lock
         * is there so that a waiter woken by the last participant cannot
         * free the call under it, and the waiter here is the caller
         * itself, which is not waiting yet (it sees the count in
         * aiometer__call_wait). */
        atomic_fetch_sub(&c->participants, 1);
    } else {
        aiometer__call_post(c, want);
        if (c->caller_runs)
            aiometer__call_help(c, 0);
    }
    aiometer__call_wait(c);
}

void aiometer__call_undo_init(struct aiometer__call *c)
{
    pthread_cond_t *cvs[5];
    size_t ncv = call_cvs(c, cvs);

    aiometer__cancel_fd_close(c);
    if (c->rq.e)
        aiometer__retry_heap_destroy(&c->rq);
    while (ncv > 0)
        pthread_cond_destroy(cvs[--ncv]);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->source_lock);
}
