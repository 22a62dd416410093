/* call.c - a call's life: set-up, the participants' job loop, failure and
 * cancellation, and what a job can ask of its call. */
#include "config.h"
#include "call.h"
#include "clock.h"
#include "pool.h"
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef HAVE_SYS_EVENTFD_H
#include <sys/eventfd.h>
#endif
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif
#ifdef HAVE_SYS_TIMERFD_H
#include <sys/timerfd.h>
#endif
#ifdef HAVE_SYS_EPOLL_H
#include <sys/epoll.h>
#endif

/* The call whose job this thread is running, so that aiometer_fail() and the
 * other job-side functions find it.  Each participant's loop pushes one and
 * pops it on the way out, so nested calls stack. */
struct aio_ctx {
    struct aio_call *call;
    size_t index;  /* the job running now */
    int fail_err;  /* what it passed to aiometer_fail(), or 0 */
    struct aio_ctx *prev;
    /* What participant_unwound() must put right if the thread ends while
     * in user code (a job, a source, a backend or a progress callback that
     * calls pthread_exit): the participant's counts and pending results,
     * and which of the states below it was in. */
    struct aio_local *L;
    struct aio_sink *sink;
    int in_batch;  /* counted in c->running */
    int in_job;    /* fn is running: job `index` */
    int in_source; /* the source is running: c->source_lock is held */
    int slot;      /* holds a running slot of the call's limiter */
};
static _Thread_local struct aio_ctx *aio_tls;

void aio_call_atfork_child(void)
{
    aio_tls = NULL;
}

/* Adaptive batches.  A participant claims one job at a time until it sees
 * that a whole batch finishes in under AIO_BATCH_GROW_NS; then it doubles the
 * batch, up to AIO_BATCH_MAX, and halves it again when a batch takes longer
 * than AIO_BATCH_SHRINK_NS.  So tiny jobs cost one atomic operation per
 * hundreds of jobs, while a slow job holds back at most the few jobs that
 * were claimed with it when jobs were still fast. */
#define AIO_BATCH_MAX 1024
#define AIO_BATCH_GROW_NS 20000
#define AIO_BATCH_SHRINK_NS 100000
/* Arguments pulled from a lazy source in one go, at most: they wait on the
 * puller's stack. */
#define AIO_SOURCE_BATCH 64

/* How long a caller watches for its last participants to leave before it
 * sleeps on the condition variable. */
#define AIO_SPIN_WAIT_NS 20000

/* Default progress interval. */
#define AIO_PROGRESS_NS (AIO_NS_PER_S / 10)

struct aio_local {
    size_t started, completed, failed;
    uint64_t rate_wait_ns;
};

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

int aio_call_init(struct aio_call *c, int mode, size_t n, const aiometer_options *opts)
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
    c->pool = pool;
    c->mode = mode;
    c->n = n;
    c->slots = pool->max_threads;
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
     * late and shift the schedule.  An amap consumer runs a job only from
     * inside aiometer_amap_next().  In each case the caller still helps if
     * no thread of the pool comes (aio_call_wait). */
    c->caller_runs = c->deadline == AIO_NEVER && !c->has_rate && !c->shared &&
                     mode != AIO_MODE_STREAM;
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

    err = aio_mutex_init(&c->source_lock);
    if (err)
        return err == ENOMEM ? ENOMEM : EAGAIN;
    err = aio_mutex_init(&c->lock);
    if (err)
        goto fail_lock;
    err = aio_cond_init(&c->done_cv);
    if (err)
        goto fail_done;
    err = aio_cond_init(&c->stop_cv);
    if (err)
        goto fail_stop;
    err = aio_cond_init(&c->space_cv);
    if (err)
        goto fail_space;
    return 0;

fail_space:
    pthread_cond_destroy(&c->stop_cv);
fail_stop:
    pthread_cond_destroy(&c->done_cv);
fail_done:
    pthread_mutex_destroy(&c->lock);
fail_lock:
    pthread_mutex_destroy(&c->source_lock);
    return err == ENOMEM ? ENOMEM : EAGAIN;
}

/* ---- stopping ------------------------------------------------------------ */

static void signal_cancel_fd(struct aio_call *c)
{
    ssize_t r;

    if (c->efd_w < 0)
        return;
#ifdef HAVE_SYS_EVENTFD_H
    if (c->efd_w_eventfd) {
        uint64_t one = 1;
        r = write(c->efd_w, &one, sizeof(one));
    } else
#endif
    {
        char one = 1;
        r = write(c->efd_w, &one, 1);
    }
    /* The descriptor is non-blocking and written at most once per call, so
     * a short or failed write can only mean it is already readable. */
    (void)r;
}

void aio_call_stop_locked(struct aio_call *c, int reason, int err, size_t index)
{
    if (reason == AIO_STOP_FAILED && c->err == 0) {
        c->err = err;
        c->err_index = index;
    }
    if (atomic_load_explicit(&c->stop, memory_order_relaxed) != AIO_GOING)
        return;
    atomic_store_explicit(&c->stop, reason, memory_order_release);
    /* Everyone who may be waiting for anything must now look again: jobs
     * sleeping and participants waiting for the rate (stop_cv), participants
     * waiting for room in the window (space_cv), and the caller or consumer
     * (done_cv). */
    pthread_cond_broadcast(&c->stop_cv);
    pthread_cond_broadcast(&c->space_cv);
    pthread_cond_broadcast(&c->done_cv);
    signal_cancel_fd(c);
}

void aio_call_stop(struct aio_call *c, int reason, int err, size_t index)
{
    aio_lock(&c->lock);
    aio_call_stop_locked(c, reason, err, index);
    aio_unlock(&c->lock);
}

/* True when the deadline has passed on a call that still had something to
 * do: a call whose every job has returned did not run out of time, even if
 * its consumer has not read all its results yet. */
static int deadline_hit(struct aio_call *c)
{
    return c->deadline != AIO_NEVER && atomic_load(&c->stop) == AIO_GOING &&
           aio_now_ns() >= c->deadline &&
           (aio_call_has_work(c) || atomic_load(&c->participants) > 0);
}

void aio_call_check_deadline_locked(struct aio_call *c)
{
    if (deadline_hit(c))
        aio_call_stop_locked(c, AIO_STOP_TIMEOUT, 0, 0);
}

static void check_deadline(struct aio_call *c)
{
    if (deadline_hit(c))
        aio_call_stop(c, AIO_STOP_TIMEOUT, 0, 0);
}

/* How long a waiter with a stopped call may sleep: a stopped call has no
 * deadline left to watch, so waiting for it would spin. */
static uint64_t wait_limit(struct aio_call *c, uint64_t until)
{
    if (atomic_load(&c->stop) != AIO_GOING)
        return until;
    return until < c->deadline ? until : c->deadline;
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

int aio_call_has_work(struct aio_call *c)
{
    if (atomic_load(&c->stop) != AIO_GOING)
        return 0;
    if (c->source)
        return !atomic_load(&c->source_done);
    return atomic_load(&c->next) < c->n;
}

/* ---- claiming jobs ------------------------------------------------------------ */

/* Wait, with c->lock held, until the amap window has room for the next claim
 * (whose index pos() reads), the call stops, or the window is lifted. */
static void wait_for_room_locked(struct aio_call *c, size_t (*pos)(struct aio_call *))
{
    c->space_waiters++;
    while (atomic_load(&c->stop) == AIO_GOING && pos(c) >= aio_cq_window(c->cq) &&
           (c->source || pos(c) < c->n)) {
        aio_cond_wait_until(&c->space_cv, &c->lock, wait_limit(c, AIO_NEVER));
        aio_call_check_deadline_locked(c);
    }
    c->space_waiters--;
    /* The consumer wakes one waiter when room appears; each woken waiter
     * wakes the next while room remains.  Waking them all at once would
     * send hundreds of threads after a few slots. */
    if (c->space_waiters && pos(c) < aio_cq_window(c->cq))
        pthread_cond_signal(&c->space_cv);
}

static size_t next_pos(struct aio_call *c)
{
    return atomic_load(&c->next);
}

static size_t pulled_pos(struct aio_call *c)
{
    return c->pulled;
}

/* Claim from a lazy source: up to `want` arguments (into arg[]), pulled only
 * now that jobs can start.  Sources are called under c->source_lock, so
 * never concurrently, but without c->lock and outside any job: a source is
 * the user's code, and may call anything, aiometer_sleep or a nested call
 * included, which must neither deadlock on the call's lock nor act on the
 * job this thread ran last.  Returns how many were pulled; their indices
 * follow *first. */
static size_t claim_source(struct aio_call *c, size_t want, int may_wait, size_t *first,
                           void **arg)
{
    struct aio_ctx *ctx = aio_tls;
    size_t got = 0;
    int r;

    aio_lock(&c->source_lock);
    aio_lock(&c->lock);
    *first = c->pulled;
    while (got < want) {
        aio_call_check_deadline_locked(c);
        if (atomic_load(&c->stop) != AIO_GOING || atomic_load(&c->source_done))
            break;
        if (c->cq && c->pulled >= aio_cq_window(c->cq)) {
            /* Never wait with arguments in hand: run those first. */
            if (!may_wait || got)
                break;
            aio_unlock(&c->source_lock);
            wait_for_room_locked(c, pulled_pos);
            aio_unlock(&c->lock);
            aio_lock(&c->source_lock);
            aio_lock(&c->lock);
            *first = c->pulled;
            continue;
        }
        aio_unlock(&c->lock);
        aio_tls = NULL;
        ctx->in_source = 1;
        r = c->source(c->source_state, &arg[got]);
        ctx->in_source = 0;
        aio_tls = ctx;
        aio_lock(&c->lock);
        if (r == 0) {
            c->pulled++;
            got++;
            continue;
        }
        atomic_store(&c->source_done, 1);
        if (r != AIOMETER_DONE)
            aio_call_stop_locked(c, AIO_STOP_FAILED, r > 0 ? r : EINVAL, c->pulled);
        else if (c->done_waiters)
            pthread_cond_broadcast(&c->done_cv);
        break;
    }
    aio_unlock(&c->lock);
    aio_unlock(&c->source_lock);
    return got;
}

/* Claim up to `want` consecutive indices of an array input.  Lock-free
 * unless an amap window is full and we may wait for room. */
static size_t claim_array(struct aio_call *c, size_t want, int may_wait, size_t *first)
{
    size_t cur, limit, k;

    for (;;) {
        if (c->deadline != AIO_NEVER)
            check_deadline(c);
        if (atomic_load_explicit(&c->stop, memory_order_acquire) != AIO_GOING)
            return 0;
        cur = atomic_load_explicit(&c->next, memory_order_relaxed);
        limit = c->n;
        if (c->cq) {
            size_t w = aio_cq_window(c->cq);
            if (w < limit)
                limit = w;
        }
        if (cur >= limit) {
            if (cur >= c->n || !may_wait)
                return 0;
            aio_lock(&c->lock);
            wait_for_room_locked(c, next_pos);
            aio_unlock(&c->lock);
            continue;
        }
        k = limit - cur;
        if (k > want)
            k = want;
        if (atomic_compare_exchange_weak_explicit(&c->next, &cur, cur + k, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *first = cur;
            return k;
        }
    }
}

/* ---- running one job ------------------------------------------------------------ */

/* A rate wait sleeps until this long before the booked time, then spins on
 * the clock for the rest: a sleeping thread wakes tens of microseconds late
 * on a busy machine, a spinning one within a clock read.  The spin costs at
 * most this much CPU per start that had to wait (see bench/README for the
 * figures that chose it); AIOMETER_RATE_SPIN_NS overrides it, 0 disables. */
#define AIO_RATE_SPIN_NS 40000

static uint64_t rate_spin_ns(void)
{
    static _Atomic int64_t cached = -1;
    int64_t v = atomic_load_explicit(&cached, memory_order_relaxed);

    if (v < 0) {
        const char *s = getenv("AIOMETER_RATE_SPIN_NS");
        char *end;
        v = AIO_RATE_SPIN_NS;
        if (s && *s) {
            long long x = strtoll(s, &end, 10);
            if (!*end && x >= 0 && x < 1000000000)
                v = x;
        }
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return (uint64_t)v;
}

/* Book job j's start with the rate limiter(s) and wait for it; 1 to start
 * the job, 0 if the call stopped (a limiter that fails to book stops it). */
static int wait_rate(struct aio_call *c, struct aio_local *L, size_t j)
{
    uint64_t asked = aio_now_ns(), now = asked, grant = now, spin, wake;

    if (c->has_rate)
        grant = aio_gcra_book(&c->own_rate, now);
    if (c->shared && c->shared->be.book) {
        uint64_t g2;
        int err = c->shared->be.book(c->shared->state, NULL, now, &g2);
        if (err) {
            aio_call_stop(c, AIO_STOP_FAILED, err > 0 ? err : EIO, j);
            return 0;
        }
        if (g2 > grant)
            grant = g2;
    }
    if (grant <= now)
        return atomic_load(&c->stop) == AIO_GOING;

    /* Sleep on stop_cv until shortly before the booked time, so that a
     * failure or a cancellation ends the wait at once. */
    spin = rate_spin_ns();
    wake = grant - now > spin ? grant - spin : now;
    aio_lock(&c->lock);
    for (;;) {
        aio_call_check_deadline_locked(c);
        if (atomic_load(&c->stop) != AIO_GOING)
            break;
        now = aio_now_ns();
        if (now >= wake)
            break;
        aio_cond_wait_until(&c->stop_cv, &c->lock, wait_limit(c, wake));
    }
    aio_unlock(&c->lock);
    while (atomic_load_explicit(&c->stop, memory_order_relaxed) == AIO_GOING &&
           aio_now_ns() < grant)
        aio_cpu_relax();
    L->rate_wait_ns += aio_now_ns() - asked;
    return atomic_load(&c->stop) == AIO_GOING;
}

static int cancel_fd_of(struct aio_call *c, int *fd);

/* How often a job asks a limiter backend that cannot wait for a slot. */
#define AIO_SLOT_POLL_MS 1

/* Take a running slot of the call's limiter for job j, waiting until one is
 * free or the call stops.  1 with the slot, 0 if the call stopped (a
 * limiter that fails stops it with its error). */
static int take_slot(struct aio_call *c, size_t j)
{
    int fd, err;

    err = c->shared->be.acquire(c->shared->state, NULL, -1);
    if (err == EAGAIN) {
        /* None free: wait, on the call's cancel descriptor, which turns
         * readable when the call stops (at its deadline too). */
        err = cancel_fd_of(c, &fd);
        while (!err) {
            struct pollfd pfd = { fd, POLLIN, 0 };

            err = c->shared->be.acquire(c->shared->state, NULL, fd);
            if (err != EAGAIN)
                break;
            /* A backend that cannot wait said EAGAIN: ask again after
             * AIO_SLOT_POLL_MS, or at once when the call stops. */
            err = 0;
            poll(&pfd, 1, AIO_SLOT_POLL_MS);
            if (atomic_load(&c->stop) != AIO_GOING)
                return 0;
        }
    }
    if (err == 0) {
        if (atomic_load(&c->stop) == AIO_GOING)
            return 1;
        c->shared->be.release(c->shared->state, NULL);
        return 0;
    }
    if (err != ECANCELED)
        aio_call_stop(c, AIO_STOP_FAILED, err > 0 ? err : EIO, j);
    return 0;
}

/* Job `j` will never run: leave a trace where its result would go. */
static void skip_job(struct aio_call *c, size_t j)
{
    if (c->mode == AIO_MODE_ALL) {
        c->results[j] = NULL;
    } else if (c->mode == AIO_MODE_STREAM) {
        aio_lock(&c->lock);
        aio_cq_skip(c->cq, j);
        if (c->done_waiters)
            pthread_cond_broadcast(&c->done_cv);
        aio_unlock(&c->lock);
    }
}

/* Job j returned after calling aiometer_fail(err), which has already
 * stopped the call (except under run_any). */
static void job_failed(struct aio_call *c, size_t j, int err, void *r)
{
    switch (c->mode) {
    case AIO_MODE_ALL:
        c->results[j] = r;
        break;
    case AIO_MODE_EACH:
        break;
    case AIO_MODE_ANY:
        /* Failures do not stop run_any; the first one is kept in case
         * every job fails. */
        aio_lock(&c->lock);
        if (c->err == 0) {
            c->err = err;
            c->err_index = j;
        }
        aio_unlock(&c->lock);
        break;
    case AIO_MODE_STREAM:
        aio_lock(&c->lock);
        aio_cq_skip(c->cq, j);
        if (c->done_waiters)
            pthread_cond_broadcast(&c->done_cv);
        aio_unlock(&c->lock);
        break;
    }
}

/* amap results of one batch, handed to the completion queue under one lock
 * hold when the batch ends (flush_sink) rather than one lock per result. */
struct aio_sink {
    size_t n;
    size_t index[AIO_SOURCE_BATCH];
    void *result[AIO_SOURCE_BATCH];
};

static void flush_sink(struct aio_call *c, struct aio_sink *sink)
{
    if (sink->n == 0)
        return;
    aio_lock(&c->lock);
    for (size_t i = 0; i < sink->n; i++)
        aio_cq_push(c->cq, sink->index[i], sink->result[i]);
    if (c->done_waiters)
        pthread_cond_broadcast(&c->done_cv);
    aio_unlock(&c->lock);
    sink->n = 0;
}

static void deliver(struct aio_call *c, size_t j, void *r, struct aio_sink *sink)
{
    size_t none = SIZE_MAX;

    switch (c->mode) {
    case AIO_MODE_ALL:
        c->results[j] = r;
        break;
    case AIO_MODE_EACH:
        break;
    case AIO_MODE_ANY:
        /* Only a job that returns while the call still runs can win: one
         * that returns after the deadline most likely returned because it
         * was cancelled, and its result means nothing.  The losers, who
         * come all at once, see that without taking the lock. */
        if (atomic_load(&c->stop) != AIO_GOING)
            break;
        aio_lock(&c->lock);
        if (atomic_load(&c->stop) == AIO_GOING &&
            atomic_compare_exchange_strong(&c->winner, &none, j)) {
            c->win_result = r;
            aio_call_stop_locked(c, AIO_STOP_WON, 0, j);
        }
        aio_unlock(&c->lock);
        break;
    case AIO_MODE_STREAM:
        sink->index[sink->n] = j;
        sink->result[sink->n] = r;
        sink->n++;
        break;
    }
}

static void report_progress(struct aio_call *c, uint64_t now)
{
    aiometer_progress p;

    p.started = atomic_load(&c->p_started);
    p.completed = atomic_load(&c->p_completed);
    p.failed = atomic_load(&c->p_failed);
    p.total = c->n;
    p.elapsed = (double)(now - c->t_start) / 1e9;
    c->progress(&p, c->progress_arg);
}

/* After a job: report progress if an interval has passed and no other
 * thread is reporting now (the flag keeps reports from overlapping). */
static void progress_tick(struct aio_call *c)
{
    uint64_t now = aio_now_ns();

    if (now - atomic_load(&c->p_last) < c->progress_every)
        return;
    if (atomic_flag_test_and_set(&c->p_busy))
        return;
    if (now - atomic_load(&c->p_last) >= c->progress_every) {
        report_progress(c, now);
        atomic_store(&c->p_last, now);
    }
    atomic_flag_clear(&c->p_busy);
}

static void run_job(struct aio_call *c, struct aio_ctx *ctx, struct aio_local *L, size_t j,
                    void *source_arg, int rated, struct aio_sink *sink)
{
    aiometer_fn fn;
    void *arg, *r;

    ctx->index = j;
    if (atomic_load_explicit(&c->stop, memory_order_relaxed) != AIO_GOING ||
        (c->capped && !(ctx->slot = take_slot(c, j))) || (rated && !wait_rate(c, L, j))) {
        if (ctx->slot) {
            ctx->slot = 0;
            c->shared->be.release(c->shared->state, NULL);
        }
        skip_job(c, j);
        return;
    }
    if (c->jobs) {
        fn = c->jobs[j].fn;
        arg = c->jobs[j].arg;
    } else {
        fn = c->fn;
        arg = c->source ? source_arg : c->args[j];
    }
    L->started++;
    if (c->progress)
        atomic_fetch_add(&c->p_started, 1);
    ctx->fail_err = 0;
    ctx->in_job = 1;
    r = fn(arg);
    ctx->in_job = 0;
    if (ctx->fail_err) {
        L->failed++;
        if (c->progress)
            atomic_fetch_add(&c->p_failed, 1);
        job_failed(c, j, ctx->fail_err, r);
    } else {
        L->completed++;
        if (c->progress)
            atomic_fetch_add(&c->p_completed, 1);
        deliver(c, j, r, sink);
    }
    if (ctx->slot) {
        ctx->slot = 0;
        c->shared->be.release(c->shared->state, NULL);
    }
    if (c->progress)
        progress_tick(c);
}

static void note_running(struct aio_call *c)
{
    size_t now_running = atomic_fetch_add(&c->running, 1) + 1;
    size_t peak = atomic_load(&c->peak);

    while (now_running > peak && !atomic_compare_exchange_weak(&c->peak, &peak, now_running))
        ;
}

/* Add a participant's counts to the call's. */
static void add_local(struct aio_call *c, const struct aio_local *L)
{
    if (L->started)
        atomic_fetch_add(&c->started, L->started);
    if (L->completed)
        atomic_fetch_add(&c->completed, L->completed);
    if (L->failed)
        atomic_fetch_add(&c->failed, L->failed);
    if (L->rate_wait_ns)
        atomic_fetch_add(&c->rate_wait_ns, L->rate_wait_ns);
}

/* The participant's thread is ending inside user code: a job, a source, a
 * limiter backend or a progress callback called pthread_exit (or the
 * thread was cancelled where the library could not stop it).  Run as a
 * cleanup handler while it unwinds.  The call must not wait for ever for
 * a participant that is gone, so its job fails with EOWNERDEAD (as a
 * robust mutex's owner dying does), the call stops with that error, and
 * the participant leaves as it would have; a pool thread is first struck
 * off its pool.  The thread holds no lock of the call here: user code is
 * never run under one. */
static void participant_unwound(void *arg)
{
    struct aio_ctx *ctx = arg;
    struct aio_call *c = ctx->call;

    aio_tls = ctx->prev;
    if (ctx->in_source)
        aio_unlock(&c->source_lock);
    if (ctx->in_job) {
        ctx->L->failed++;
        if (c->progress)
            atomic_fetch_add(&c->p_failed, 1);
        job_failed(c, ctx->index, EOWNERDEAD, NULL);
    }
    if (ctx->slot)
        c->shared->be.release(c->shared->state, NULL);
    aio_call_stop(c, AIO_STOP_FAILED, EOWNERDEAD, ctx->index);
    if (c->cq)
        flush_sink(c, ctx->sink);
    if (ctx->in_batch)
        atomic_fetch_sub(&c->running, 1);
    add_local(c, ctx->L);
    /* Before leaving: once the last participant of the last call has left,
     * the pool may be destroyed, and must not join this thread. */
    if (aio_on_worker && !ctx->prev)
        aio_pool_worker_lost();
    aio_call_leave(c);
}

static size_t work_loop(struct aio_call *c, int one, struct aio_ctx *ctx);

size_t aio_call_work(struct aio_call *c, int one)
{
    struct aio_local L = { 0, 0, 0, 0 };
    struct aio_sink sink;
    struct aio_ctx ctx = { c, 0, 0, aio_tls, &L, &sink, 0, 0, 0, 0 };
    size_t claimed;

    /* The handler and everything it reads live in this frame, which is
     * still whole while it runs. */
    sink.n = 0;
    aio_tls = &ctx;
    pthread_cleanup_push(participant_unwound, &ctx);
    claimed = work_loop(c, one, &ctx);
    pthread_cleanup_pop(0);
    aio_tls = ctx.prev;
    add_local(c, &L);
    return claimed;
}

static size_t work_loop(struct aio_call *c, int one, struct aio_ctx *ctx)
{
    struct aio_local *L = ctx->L;
    struct aio_sink *sink = ctx->sink;
    int rated = c->has_rate || (c->shared && c->shared->be.book);
    int adaptive = !rated && !one;
    size_t batch = 1, claimed = 0;
    void *sargs[AIO_SOURCE_BATCH];
    /* Batches stay within what the source buffer and the sink hold. */
    size_t max_batch = c->source || c->cq ? AIO_SOURCE_BATCH : AIO_BATCH_MAX;

    for (;;) {
        size_t first = 0, k, j;
        uint64_t t0 = 0;

        if (c->source) {
            k = claim_source(c, batch, !one, &first, sargs);
        } else {
            size_t want = 1;
            if (adaptive) {
                /* Leave enough unclaimed for the others to share the end. */
                size_t left = c->n - atomic_load_explicit(&c->next, memory_order_relaxed);
                size_t fair = left / (2 * c->slots);
                want = batch < fair ? batch : (fair ? fair : 1);
            }
            k = claim_array(c, want, !one, &first);
        }
        if (k == 0)
            break;
        claimed += k;
        note_running(c);
        ctx->in_batch = 1;
        if (adaptive)
            t0 = aio_now_ns();
        for (j = first; j < first + k; j++)
            run_job(c, ctx, L, j, c->source ? sargs[j - first] : NULL, rated, sink);
        if (c->cq)
            flush_sink(c, sink);
        atomic_fetch_sub(&c->running, 1);
        ctx->in_batch = 0;
        if (adaptive) {
            uint64_t d = aio_now_ns() - t0;
            if (d < AIO_BATCH_GROW_NS && batch < max_batch)
                batch *= 2;
            else if (d > AIO_BATCH_SHRINK_NS && batch > 1)
                batch /= 2;
        }
        if (one)
            break;
    }
    return claimed;
}

/* ---- a call from start to end ------------------------------------------------------------ */

void aio_call_begin(struct aio_call *c)
{
    atomic_fetch_add(&c->pool->calls, 1);
    if (c->shared)
        atomic_fetch_add(&c->shared->users, 1);
}

void aio_call_post(struct aio_call *c, size_t helpers)
{
    if (helpers == 0)
        return;
    if (aio_pool_post(c->pool, c, helpers) == 0) {
        /* The pool could start no thread at all: rather than wait for
         * helpers that will never come, the caller does the work. */
        c->caller_runs = 1;
    }
}

int aio_call_may_help(struct aio_call *c)
{
    /* A caller with a deadline is better off watching it, so it helps only
     * when no thread of the pool could come: every one started and busy.
     * It can then leave the watching to the waits themselves: rate waits,
     * aiometer_sleep and claims end at the deadline, and the cancel
     * descriptor of such a call carries a timer that fires at it. */
    return c->deadline == AIO_NEVER || aio_pool_saturated(c->pool);
}

void aio_call_wait(struct aio_call *c)
{
    uint64_t alone_since = 0;

    /* First wait until no job is left to claim.  Participants that stop
     * finding work leave; the last one to leave wakes us (done_cv), and so
     * does a stop.  If no thread of the pool has come for AIO_HELP_WAIT_NS
     * (every thread busy, say, or this is a job of a one-thread pool), the
     * caller runs jobs itself rather than wait for ever (with a deadline,
     * only when no thread of the pool is free; see aio_call_may_help). */
    aio_lock(&c->lock);
    for (;;) {
        uint64_t until = AIO_NEVER;

        aio_call_check_deadline_locked(c);
        if (!aio_call_has_work(c))
            break;
        if (atomic_load(&c->participants) == 0 && aio_call_may_help(c)) {
            uint64_t now = aio_now_ns();
            if (!alone_since) {
                alone_since = now;
            } else if (now - alone_since >= AIO_HELP_WAIT_NS) {
                if (aio_call_join(c)) {
                    aio_unlock(&c->lock);
                    aio_call_work(c, 0);
                    aio_call_leave(c);
                    aio_lock(&c->lock);
                }
                alone_since = 0;
                continue;
            }
            until = alone_since + AIO_HELP_WAIT_NS;
        } else {
            alone_since = 0;
        }
        c->done_waiters++;
        aio_cond_wait_until(&c->done_cv, &c->lock, wait_limit(c, until));
        c->done_waiters--;
    }
    aio_unlock(&c->lock);

    /* No worker may join once the call is out of the pool's list; then the
     * participants still inside are all we wait for.  They are usually
     * finishing their last job, so watch for them a few microseconds
     * before sleeping: a sleep and wake-up costs tens of microseconds here. */
    aio_pool_unlink(c->pool, c);
    if (atomic_load(&c->participants) > 0) {
        uint64_t until = aio_now_ns() + AIO_SPIN_WAIT_NS;
        while (atomic_load(&c->participants) > 0 && aio_now_ns() < until)
            aio_cpu_relax();
    }
    aio_lock(&c->lock);
    while (atomic_load(&c->participants) > 0) {
        aio_call_check_deadline_locked(c);
        c->done_waiters++;
        aio_cond_wait_until(&c->done_cv, &c->lock, wait_limit(c, AIO_NEVER));
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
        if (c->caller_runs && aio_call_join(c)) {
            aio_call_work(c, 0);
            aio_call_leave(c);
        }
    }
    aio_call_wait(c);
}

int aio_call_finish(struct aio_call *c)
{
    int stop = atomic_load(&c->stop);
    uint64_t now = aio_now_ns();
    int ret = 0;

    if (c->mode == AIO_MODE_ALL) {
        /* Jobs never claimed never started: their results are NULL. */
        for (size_t i = atomic_load(&c->next); i < c->n; i++)
            c->results[i] = NULL;
    }
    if (stop == AIO_STOP_WON)
        ret = 0; /* run_any: a win is a success whatever else failed */
    else if (stop == AIO_STOP_FAILED)
        ret = c->err;
    else if (stop == AIO_STOP_TIMEOUT)
        ret = ETIMEDOUT;
    else if (stop == AIO_STOP_CANCELLED)
        ret = ECANCELED;
    else if (c->mode == AIO_MODE_ANY)
        ret = c->err; /* every job failed: the first failure */

    if (c->progress)
        report_progress(c, now);
    if (c->stats_out) {
        aiometer_stats *s = c->stats_out;
        size_t total = c->source ? c->pulled : c->n;
        s->started = atomic_load(&c->started);
        s->completed = atomic_load(&c->completed);
        s->failed = atomic_load(&c->failed);
        s->cancelled = total > s->started ? total - s->started : 0;
        s->peak_running = atomic_load(&c->peak);
        s->failed_index = ret && ret == c->err ? c->err_index : SIZE_MAX;
        s->limiter_wait = (double)atomic_load(&c->rate_wait_ns) / 1e9;
        s->elapsed = (double)(now - c->t_start) / 1e9;
    }
    if (c->shared)
        atomic_fetch_sub(&c->shared->users, 1);
    atomic_fetch_sub(&c->pool->calls, 1);
    aio_call_undo_init(c);
    return ret;
}

void aio_call_undo_init(struct aio_call *c)
{
    if (c->efd >= 0)
        close(c->efd);
    if (c->efd_w >= 0 && c->efd_w != c->efd)
        close(c->efd_w);
    if (c->efd_x >= 0)
        close(c->efd_x);
    pthread_cond_destroy(&c->space_cv);
    pthread_cond_destroy(&c->stop_cv);
    pthread_cond_destroy(&c->done_cv);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->source_lock);
}

/* ---- inside a job ------------------------------------------------------------ */

void aiometer_fail(int err)
{
    struct aio_ctx *ctx = aio_tls;

    if (!ctx || err == 0 || ctx->fail_err)
        return;
    ctx->fail_err = err > 0 ? err : EINVAL;
    /* The call stops now, not when the job returns: no further job starts
     * and the others see the cancellation while this one cleans up.
     * run_any is the exception: there a failure only loses. */
    if (ctx->call->mode != AIO_MODE_ANY)
        aio_call_stop(ctx->call, AIO_STOP_FAILED, ctx->fail_err, ctx->index);
}

int aiometer_cancelled(void)
{
    struct aio_ctx *ctx = aio_tls;

    if (!ctx)
        return 0;
    check_deadline(ctx->call);
    return atomic_load(&ctx->call->stop) != AIO_GOING;
}

/* Sleep until `end` or the call stops, waiting on its condition variable:
 * the way when no cancel descriptor can be had. */
static void sleep_on_cv(struct aio_call *c, uint64_t end)
{
    aio_lock(&c->lock);
    for (;;) {
        aio_call_check_deadline_locked(c);
        if (atomic_load(&c->stop) != AIO_GOING || aio_now_ns() >= end)
            break;
        aio_cond_wait_until(&c->stop_cv, &c->lock, wait_limit(c, end));
    }
    aio_unlock(&c->lock);
}


int aiometer_sleep(double seconds)
{
    struct aio_ctx *ctx = aio_tls;
    struct aio_call *c;
    uint64_t end;
    int fd, old_slack = 0;

    if (isnan(seconds) || seconds < 0)
        return EINVAL;
    end = aio_add_ns(aio_now_ns(), aio_seconds_to_ns(seconds));
    if (!ctx) {
        struct timespec ts = aio_ns_to_timespec(end);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        return 0;
    }
    c = ctx->call;
#if defined(HAVE_SYS_PRCTL_H) && defined(PR_SET_TIMERSLACK)
    /* A caller running jobs of its call sleeps here with the pool's timer
     * slack too, not its own (50 us by default): the two prctl calls cost
     * about a microsecond, a sleep that ends 50 us late costs more. */
    if (!aio_on_worker && c->pool->timer_slack_ns) {
        int r = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
        if (r > 0 && (unsigned long)r > c->pool->timer_slack_ns &&
            prctl(PR_SET_TIMERSLACK, c->pool->timer_slack_ns, 0, 0, 0) == 0)
            old_slack = r;
    }
#endif
#ifdef HAVE_PPOLL
    /* Sleepers poll the call's cancel descriptor rather than share its
     * lock: when run_any has its winner, dozens of them wake at once, and
     * through one mutex they would leave one by one. */
    if (cancel_fd_of(c, &fd) == 0) {
        for (;;) {
            struct pollfd pfd = { fd, POLLIN, 0 };
            struct timespec ts;
            uint64_t now, until;

            check_deadline(c);
            if (atomic_load(&c->stop) != AIO_GOING)
                break;
            now = aio_now_ns();
            if (now >= end)
                break;
            until = end < c->deadline ? end : c->deadline;
            ts = aio_ns_to_timespec(until - now);
            ppoll(&pfd, 1, &ts, NULL);
        }
    } else
#endif
    {
        (void)fd;
        sleep_on_cv(c, end);
    }
#if defined(HAVE_SYS_PRCTL_H) && defined(PR_SET_TIMERSLACK)
    if (old_slack > 0)
        prctl(PR_SET_TIMERSLACK, (unsigned long)old_slack, 0, 0, 0);
#endif
    return atomic_load(&c->stop) != AIO_GOING ? ECANCELED : 0;
}

/* Make the call's cancel descriptor: an eventfd where there is one, a pipe
 * elsewhere.  0 or an errno value. */
static int make_cancel_fd(struct aio_call *c)
{
#ifdef HAVE_SYS_EVENTFD_H
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return errno;
    c->efd = c->efd_w = fd;
    c->efd_w_eventfd = 1;
#if defined(HAVE_SYS_TIMERFD_H) && defined(HAVE_SYS_EPOLL_H)
    if (c->deadline != AIO_NEVER) {
        /* With a deadline, hand out an epoll descriptor over the eventfd and
         * a timer that fires at the deadline: it turns readable by itself
         * when the time is up, whether or not any thread is watching. */
        struct itimerspec its = { { 0, 0 }, aio_ns_to_timespec(c->deadline) };
        struct epoll_event ev = { .events = EPOLLIN };
        int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        int ep = epoll_create1(EPOLL_CLOEXEC);
        int err = 0;

        if (tfd < 0 || ep < 0 || timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) != 0)
            err = errno ? errno : EMFILE;
        if (err) {
            if (tfd >= 0)
                close(tfd);
            if (ep >= 0)
                close(ep);
            close(fd);
            c->efd = c->efd_w = -1;
            return err;
        }
        c->efd = ep;
        c->efd_x = tfd;
    }
#endif
#else
    int p[2];
    if (pipe(p) != 0)
        return errno;
    for (int i = 0; i < 2; i++) {
        fcntl(p[i], F_SETFD, FD_CLOEXEC);
        fcntl(p[i], F_SETFL, O_NONBLOCK);
    }
    c->efd = p[0];
    c->efd_w = p[1];
#endif
    return 0;
}

/* The call's cancel descriptor, made on first use: 0 with *fd, or an errno
 * value.  Once made it is published in efd_pub, so later users need no lock. */
static int cancel_fd_of(struct aio_call *c, int *fd)
{
    int err = 0;

    *fd = atomic_load_explicit(&c->efd_pub, memory_order_acquire);
    if (*fd >= 0)
        return 0;
    aio_lock(&c->lock);
    if (c->efd < 0) {
        err = make_cancel_fd(c);
        if (!err) {
            /* A stop that came first must be visible on the new descriptor. */
            if (atomic_load(&c->stop) != AIO_GOING)
                signal_cancel_fd(c);
            atomic_store_explicit(&c->efd_pub, c->efd, memory_order_release);
        }
    }
    *fd = c->efd;
    aio_unlock(&c->lock);
    return err;
}

int aiometer_cancel_fd(void)
{
    struct aio_ctx *ctx = aio_tls;
    int fd, err;

    if (!ctx) {
        errno = EPERM;
        return -1;
    }
    check_deadline(ctx->call);
    err = cancel_fd_of(ctx->call, &fd);
    if (err) {
        errno = err;
        return -1;
    }
    return fd;
}
