/* cancel.c - stopping a call (failure, cancellation, deadline, a win) and
 * what a job can ask of its call: aiometer_fail, aiometer_cancelled,
 * aiometer_sleep.  The cancel descriptor is in cancelfd.c. */
#include "config.h"
#include "call.h"
#include "clock.h"
#include "pool.h"
#include "syscalls.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <time.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif

/* ---- stopping ------------------------------------------------------------ */

void aiometer__call_stop_locked(struct aiometer__call *c, int reason, int err, size_t index)
{
    if (reason == AIOMETER__STOP_FAILED && c->err == 0) {
        c->err = err;
        c->err_index = index;
    }
    /* Relaxed: stop is only written under c->lock, which we hold. */
    if (atomic_load_explicit(&c->stop, memory_order_relaxed) != AIOMETER__GOING)
        return;
    atomic_store_explicit(&c->stop, reason, memory_order_release);
    /* Everyone who may be waiting for anything must now look again: jobs
     * sleeping and participants waiting for the rate (stop_cv), participants
     * waiting for room in the window (space_cv), and the caller or consumer
     * (done_cv). */
    pthread_cond_broadcast(&c->stop_cv);
    pthread_cond_broadcast(&c->space_cv);
    pthread_cond_broadcast(&c->done_cv);
    pthread_cond_broadcast(&c->retry_cv);
    pthread_cond_broadcast(&c->retry_timer_cv);
    aiometer__cancel_fd_signal(c);
}

void aiometer__call_stop(struct aiometer__call *c, int reason, int err, size_t index)
{
    aiometer__lock(&c->lock);
    aiometer__call_stop_locked(c, reason, err, index);
    aiometer__unlock(&c->lock);
}

/* True when the deadline has passed on a call that still had something to
 * do: a call whose every job has returned did not run out of time, even if
 * its consumer has not read all its results yet. */
static int deadline_hit(struct aiometer__call *c)
{
    return c->deadline != AIOMETER__NEVER && atomic_load(&c->stop) == AIOMETER__GOING &&
           aiometer__now_ns() >= c->deadline &&
           (aiometer__call_has_work(c) || atomic_load(&c->participants) > 0);
}

void aiometer__call_check_deadline_locked(struct aiometer__call *c)
{
    if (deadline_hit(c))
        aiometer__call_stop_locked(c, AIOMETER__STOP_TIMEOUT, 0, 0);
}

void aiometer__call_check_deadline(struct aiometer__call *c)
{
    if (deadline_hit(c))
        aiometer__call_stop(c, AIOMETER__STOP_TIMEOUT, 0, 0);
}

/* A stopped call has no deadline left to watch, so waiting for it would
 * spin. */
uint64_t aiometer__call_wait_limit(struct aiometer__call *c, uint64_t until)
{
    if (atomic_load(&c->stop) != AIOMETER__GOING)
        return until;
    return until < c->deadline ? until : c->deadline;
}

/* ---- inside a job ------------------------------------------------------------ */

void aiometer_fail(int err)
{
    struct aiometer__ctx *ctx = aiometer__tls;

    if (!ctx || err == 0 || ctx->fail_err)
        return;
    ctx->fail_err = err > 0 ? err : EINVAL;
    /* The call stops now, not when the job returns: no further job starts
     * and the others see the cancellation while this one cleans up.
     * run_any is the exception: there a failure only loses; and a call
     * that keeps going goes on. */
    if (ctx->call->policy->fail_stops && !ctx->call->keep_going)
        aiometer__call_stop(ctx->call, AIOMETER__STOP_FAILED, ctx->fail_err, ctx->index);
}

int aiometer_cancelled(void)
{
    struct aiometer__ctx *ctx = aiometer__tls;

    if (!ctx)
        return 0;
    aiometer__call_check_deadline(ctx->call);
    return atomic_load(&ctx->call->stop) != AIOMETER__GOING;
}

void aiometer__call_sleep_until(struct aiometer__call *c, uint64_t end)
{
    aiometer__lock(&c->lock);
    for (;;) {
        aiometer__call_check_deadline_locked(c);
        if (atomic_load(&c->stop) != AIOMETER__GOING || aiometer__now_ns() >= end)
            break;
        aiometer__cond_wait_until(&c->stop_cv, &c->lock, aiometer__call_wait_limit(c, end));
    }
    aiometer__unlock(&c->lock);
}

int aiometer_sleep(double seconds)
{
    struct aiometer__ctx *ctx = aiometer__tls;
    struct aiometer__call *c;
    uint64_t end;
    int fd, old_slack = 0;

    if (isnan(seconds) || seconds < 0)
        return EINVAL;
    end = aiometer__add_ns(aiometer__now_ns(), aiometer__seconds_to_ns(seconds));
    if (!ctx) {
        struct timespec ts = aiometer__ns_to_timespec(end);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        return 0;
    }
    c = ctx->call;
#if defined(HAVE_SYS_PRCTL_H) && defined(PR_SET_TIMERSLACK)
    /* A caller running jobs of its call sleeps here with the pool's timer
     * slack too, not its own (50 us by default): the two prctl calls cost
     * about a microsecond, a sleep that ends 50 us late costs more. */
    if (!aiometer__on_worker && aiometer__pool_timer_slack(c->pool)) {
        int r = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
        if (r > 0 && (unsigned long)r > aiometer__pool_timer_slack(c->pool) &&
            prctl(PR_SET_TIMERSLACK, aiometer__pool_timer_slack(c->pool), 0, 0, 0) == 0)
            old_slack = r;
    }
#endif
#ifdef HAVE_PPOLL
    /* Sleepers poll the call's cancel descriptor rather than share its
     * lock: when run_any has its winner, dozens of them wake at once, and
     * through one mutex they would leave one by one. */
    if (aiometer__cancel_fd_of(c, &fd) == 0) {
        for (;;) {
            struct pollfd pfd = { fd, POLLIN, 0 };
            struct timespec ts;
            uint64_t now, until;

            aiometer__call_check_deadline(c);
            if (atomic_load(&c->stop) != AIOMETER__GOING)
                break;
            now = aiometer__now_ns();
            if (now >= end)
                break;
            until = end < c->deadline ? end : c->deadline;
            ts = aiometer__ns_to_timespec(until - now);
            ppoll(&pfd, 1, &ts, NULL);
        }
    } else
#endif
    {
        (void)fd;
        aiometer__call_sleep_until(c, end);
    }
#if defined(HAVE_SYS_PRCTL_H) && defined(PR_SET_TIMERSLACK)
    if (old_slack > 0)
        prctl(PR_SET_TIMERSLACK, (unsigned long)old_slack, 0, 0, 0);
#endif
    return atomic_load(&c->stop) != AIOMETER__GOING ? ECANCELED : 0;
}
