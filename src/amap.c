/* amap.c - results as they finish: the streaming iterator.
 *
 * The iterator owns a call with the stream policy (policy.c) and its
 * completion queue.  Jobs
 * run on the pool's threads; the consumer takes results in aiometer_amap_next
 * and runs a job itself only when no thread of the pool comes to help (a
 * saturated pool, or an amap opened by a job of a one-thread pool).
 * Cancelling and closing it are in amap_close.c. */
#include "config.h"
#include "amap_impl.h"
#include "call.h"
#include "clock.h"
#include "syscalls.h"

#include <errno.h>
#include <stdint.h>

/* The completion queue's size when opts.max_buffered is 0: four results
 * per participant, and never fewer than AIOMETER__AMAP_MIN_BUFFER, so that
 * a call with few slots still keeps its threads busy while the consumer
 * is away for a moment. */
#define AIOMETER__AMAP_SLOT_BUFFER 4
#define AIOMETER__AMAP_MIN_BUFFER 256


/* Open an iterator over n jobs fn(args[i]), or over a lazy source when
 * `source` is given: make the call and its completion queue, then post the
 * call so that the pool's threads start on it before the first
 * aiometer_amap_next().  0, or EINVAL, ENOMEM or EAGAIN with nothing left
 * made. */
static int amap_open(aiometer_amap **out, aiometer_fn fn, void *const args[], size_t n,
                     aiometer_source_fn source, void *state, const aiometer_options *opts)
{
    aiometer_amap *it;
    struct aiometer__call *c;
    size_t cap, want;
    int err;

    err = aiometer__options_check(opts);
    if (err)
        return err;
    it = aiometer__calloc(1, sizeof(*it));
    if (!it)
        return ENOMEM;
    c = &it->call;
    err = aiometer__call_init(c, &aiometer__policy_stream, source ? SIZE_MAX : n, opts);
    if (err) {
        aiometer__free(it);
        return err;
    }
    if (opts && opts->max_buffered) {
        cap = opts->max_buffered;
    } else {
        cap = AIOMETER__AMAP_SLOT_BUFFER * c->slots;
        if (cap < AIOMETER__AMAP_MIN_BUFFER)
            cap = AIOMETER__AMAP_MIN_BUFFER;
    }
    err = aiometer__cq_init(&it->cq, cap, opts ? opts->ordered : 0);
    if (err) {
        aiometer__call_undo_init(c);
        aiometer__free(it);
        return err;
    }
    atomic_init(&it->take_state, TAKE_STATE(0, 0, 0));
    c->cq = &it->cq;
    /* The consumer runs a job only from inside aiometer_amap_next(). */
    c->caller_runs = 0;
    c->fn = fn;
    c->args = args;
    c->source = source;
    c->source_state = state;

    aiometer__call_begin(c);
    want = c->n < c->slots ? c->n : c->slots;
    atomic_init(&it->batch, 1);
    /* Short jobs are run by the consumer until they are worth helpers; it
     * keeps a slot for itself (handoff.c). */
    it->tiny = want > 1 && aiometer__handoff_alone(c, want - 1);
    if (!it->tiny)
        aiometer__call_post(c, want);
    *out = it;
    return 0;
}

/* An iterator over an array of arguments: fn(args[i]) for i < n.  See
 * aiometer_amap_open(3). */
int aiometer_amap_open(aiometer_amap **it, aiometer_fn fn, void *const args[], size_t n,
                       const aiometer_options *opts)
{
    if (!it || !fn || (!args && n > 0))
        return EINVAL;
    return amap_open(it, fn, args, n, NULL, NULL, opts);
}

/* An iterator over a lazy source: arguments are pulled from next(state)
 * only as room in the window allows.  See aiometer_amap_open_source(3). */
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
    struct aiometer__call *c = &it->call;
    size_t pos, end, half;

    if (!c->space_waiters)
        return;
    pos = atomic_load(c->source ? &c->pulled : &c->next);
    end = aiometer__cq_window(&it->cq);
    half = it->cq.cap / 2 ? it->cq.cap / 2 : 1;
    if (end > pos && end - pos >= half)
        pthread_cond_signal(&c->space_cv); /* the rest follow in a chain */
}

/* A consumer of short jobs recruits helpers only for jobs of at least this
 * many ns.  Below it, a job costs about what handing its result over costs
 * (~25 ns per result, W7), and helpers only add the wake-ups of the amap's
 * window: W7's 100,000 jobs of ~3 ns took 25-27 ns/job with the consumer
 * alone, 30-50 with one helper (bench/README). */
#define AIOMETER__AMAP_HELP_JOB_NS 1000

/* How a consumer's batches grow and shrink: as jobloop.c's do. */
#define AIOMETER__AMAP_GROW_NS 20000
#define AIOMETER__AMAP_SHRINK_NS 100000

/* Called with the call's lock held by a consumer of short jobs that found no
 * result ready: run one batch of jobs (the lock is dropped meanwhile) and
 * return how many were claimed; 0 when no slot or no job could be had.
 * Waking a sleeping consumer costs more than the jobs themselves, so the
 * consumer makes its own results instead of waiting for them. */
static size_t consumer_batch(aiometer_amap *it)
{
    struct aiometer__call *c = &it->call;
    size_t want = atomic_load_explicit(&it->batch, memory_order_relaxed), k = 0;
    uint64_t t0, d;

    aiometer__unlock(&c->lock);
    if (aiometer__call_join(c)) {
        int alone = atomic_load_explicit(&c->recruit, memory_order_relaxed) != 0;

        t0 = aiometer__now_ns();
        /* Watched by the sentinel while alone, as a caller's batch is. */
        if (alone)
            atomic_store_explicit(&c->alone_t0, t0, memory_order_relaxed);
        k = aiometer__call_work(c, (int)want);
        if (alone)
            atomic_store_explicit(&c->alone_t0, 0, memory_order_relaxed);
        d = aiometer__now_ns() - t0;
        aiometer__call_leave(c);
        if (k) {
            /* Relaxed: several consumers may race here; the batch size is
             * only a hint. */
            if (d < AIOMETER__AMAP_GROW_NS && want < AIOMETER__SOURCE_BATCH)
                atomic_store_explicit(&it->batch, want * 2, memory_order_relaxed);
            else if (d > AIOMETER__AMAP_SHRINK_NS && want > 1)
                atomic_store_explicit(&it->batch, want / 2, memory_order_relaxed);
            aiometer__handoff_batch(c, k, d, AIOMETER__AMAP_HELP_JOB_NS);
        }
    }
    aiometer__lock(&c->lock);
    return k;
}

/* Hand out the next buffered result, if any: 1 with *ret set to what
 * amap_next returns for it (0, or with keep_going a failed job's error), or
 * 0 with nothing done. */
static int take_buffered(aiometer_amap *it, void **result, size_t *index, int *ret)
{
    uint64_t s = atomic_load_explicit(&it->take_state, memory_order_acquire);

    for (;;) {
        size_t h = TAKE_HEAD(s);
        void *r;
        size_t i;
        int e;

        if (h == TAKE_END(s))
            return 0;
        r = atomic_load_explicit(&it->l_result[h], memory_order_relaxed);
        i = atomic_load_explicit(&it->l_index[h], memory_order_relaxed);
        e = atomic_load_explicit(&it->l_err[h], memory_order_relaxed);
        /* Release as well as acquire: the slot reads above must come
         * before the swap that claims them (see take_state).  On failure
         * s is reloaded and the loop tries again. */
        if (atomic_compare_exchange_weak_explicit(&it->take_state, &s, s + ((uint64_t)1 << 16),
                                                  memory_order_acq_rel, memory_order_acquire)) {
            *result = r;
            if (index)
                *index = i;
            *ret = e;
            return 1;
        }
    }
}

/* With the call's lock held and the take buffer empty: move up to
 * AIOMETER__AMAP_TAKE ready results from the queue into it. */
static void fill_buffer(aiometer_amap *it)
{
    void *r[AIOMETER__AMAP_TAKE];
    size_t idx[AIOMETER__AMAP_TAKE], n;
    int e[AIOMETER__AMAP_TAKE];
    uint64_t s = atomic_load_explicit(&it->take_state, memory_order_acquire);

    n = aiometer__cq_pop_many(&it->cq, r, idx, e, AIOMETER__AMAP_TAKE);
    if (n == 0)
        return;
    for (size_t k = 0; k < n; k++) {
        atomic_store_explicit(&it->l_result[k], r[k], memory_order_relaxed);
        atomic_store_explicit(&it->l_index[k], idx[k], memory_order_relaxed);
        atomic_store_explicit(&it->l_err[k], e[k], memory_order_relaxed);
    }
    /* Empty, so no consumer can move head; only lock holders store. */
    atomic_store_explicit(&it->take_state, TAKE_STATE(TAKE_GEN(s) + 1, 0, n),
                          memory_order_release);
}

int aiometer_amap_next(aiometer_amap *it, void **result, size_t *index)
{
    struct aiometer__call *c;
    size_t idx;
    void *r;
    int ret, cs, ran_dry = 0;

    if (!it || !result)
        return EINVAL;
    c = &it->call;
    /* The library's one cancellation point: a request that is pending is
     * acted on here, before a result is taken, so none is lost.  One that
     * comes while we wait is deferred until the next call (or the
     * thread's next cancellation point). */
    pthread_testcancel();
    if (take_buffered(it, result, index, &ret))
        return ret;
    cs = aiometer__nocancel_begin();
    aiometer__lock(&c->lock);
    for (;;) {
        uint64_t until;
        int stop;

        /* Another consumer may have filled the buffer since we looked:
         * results go out in the order they left the queue. */
        if (take_buffered(it, result, index, &ret))
            break;
        /* The buffer is empty and only holders of c->lock fill it: what
         * it held is handed out, so the window may move on for it. */
        if (aiometer__cq_unhold(&it->cq))
            wake_for_room_locked(it);
        /* The end, once told, is told again on every later call. */
        if (it->end) {
            ret = it->end;
            break;
        }

        aiometer__call_check_deadline_locked(c);
        stop = atomic_load(&c->stop);
        if (stop == AIOMETER__STOP_FAILED && !c->err_reported) {
            c->err_reported = 1;
            ret = c->err;
            break;
        }
        if (aiometer__cq_pop(&it->cq, &r, &idx, &ret)) {
            /* Take what else is ready while we hold the lock.  The buffer
             * was empty just above, and only holders of c->lock fill it. */
            fill_buffer(it);
            wake_for_room_locked(it);
            /* With keep_going, ret may be a failed job's error, told with
             * its index; the stream goes on. */
            *result = r;
            if (index)
                *index = idx;
            break;
        }
        /* The order of these two reads matters: once nothing is left to
         * claim, every job that will run was claimed by a participant, so
         * no participant then means nothing runs.  Read the other way
         * round, a worker could join and claim the last job in between. */
        if (!aiometer__call_has_work(c) && atomic_load(&c->participants) == 0) {
            if (atomic_load(&c->parked) > 0) {
                /* Stopped with jobs parked for a retry and no participant
                 * left to end them (retry.c hands them out once the call
                 * stops): the consumer ends them itself, so that their
                 * places are passed over, or hold their errors, before
                 * the end is told. */
                aiometer__unlock(&c->lock);
                aiometer__call_help(c, 0);
                aiometer__lock(&c->lock);
                continue;
            }
            /* Nothing runs, nothing is left, nothing is buffered.  A
             * failure was told above; the end tells a cancellation or a
             * timeout, whose code the verdict gives. */
            ret = stop == AIOMETER__STOP_CANCELLED || stop == AIOMETER__STOP_TIMEOUT
                      ? aiometer__call_verdict(c)
                      : AIOMETER_DONE;
            it->end = ret;
            break;
        }
        /* The lock is dropped while the consumer runs its batch, so look
         * again afterwards, whatever it ran: a result may have come in
         * meanwhile, with no wake-up since nobody waited.  One that found
         * nothing to run is not tried again until this thread has waited. */
        if (it->tiny && !ran_dry && c->deadline == AIOMETER__NEVER &&
            aiometer__can_claim_locked(c)) {
            if (!consumer_batch(it))
                ran_dry = 1;
            continue;
        }
        if (aiometer__call_help_if_alone_locked(c, &it->alone_since, 1, &until))
            continue;
        c->done_waiters++;
        aiometer__cond_wait_until(&c->done_cv, &c->lock, aiometer__call_wait_limit(c, until));
        c->done_waiters--;
        ran_dry = 0;
    }
    aiometer__unlock(&c->lock);
    aiometer__nocancel_end(cs, 0);
    return ret;
}
