/* retry.c - jobs waiting out a backoff before their next attempt: the
 * retry heap, the backoff schedule, parking a job and picking it up again,
 * and aiometer_retry itself.  See retry.h.
 *
 * Who waits for a parked job: participants that find nothing to claim stay
 * in the call, as many of them as there are parked jobs; the others leave.
 * Of those that stay, one (the timer) sleeps until the earliest due time;
 * the rest sleep until the timer goes off to run a job and hands the timing
 * on, so a due time wakes one thread, not all of them.  A participant that
 * parks a job comes back here before it leaves, so a parked job always has
 * a participant to run it, and aiometer__call_has_work asks the pool for
 * one more only while fewer wait than are parked.  A stop broadcasts
 * retry_cv, so every wait ends at once; the jobs still parked then end with
 * their last error (aiometer__retry_finish). */
#include "config.h"
#include "call.h"
#include "retry.h"
#include "clock.h"
#include "syscalls.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>

static int bad_delay(double d)
{
    return isnan(d) || d < 0;
}

double aiometer__retry_delay(const aiometer_options *o)
{
    return o && o->retry_delay > 0 ? o->retry_delay : AIOMETER__RETRY_DELAY;
}

double aiometer__retry_max_delay(const aiometer_options *o)
{
    return o && o->retry_max_delay > 0 ? o->retry_max_delay : AIOMETER__RETRY_MAX_DELAY;
}

int aiometer__retry_check(const aiometer_options *o)
{
    if (!o)
        return 0;
    /* Checked whether or not retries are asked for, so that a bad value is
     * caught where it is written, not when retries are turned on later. */
    if (bad_delay(o->retry_delay) || bad_delay(o->retry_max_delay))
        return EINVAL;
    if (aiometer__retry_max_delay(o) < aiometer__retry_delay(o))
        return EINVAL;
    return 0;
}

/* Room for as many parked jobs as amap's default window holds results:
 * enough that a burst of retries does not stall new work, small enough that
 * a lazy source's memory stays bounded. */
#define AIOMETER__RETRY_GATE_MIN 256

size_t aiometer__retry_gate(size_t slots)
{
    size_t g = slots <= SIZE_MAX / 4 ? 4 * slots : SIZE_MAX;
    return g > AIOMETER__RETRY_GATE_MIN ? g : AIOMETER__RETRY_GATE_MIN;
}

size_t aiometer__retry_cap(size_t slots, size_t n)
{
    size_t cap = aiometer__retry_gate(slots) + slots;
    return n < cap ? n : cap;
}

int aiometer__retry_heap_init(struct aiometer__retry_heap *h, size_t cap)
{
    h->n = 0;
    h->cap = cap;
    h->e = aiometer__calloc(cap ? cap : 1, sizeof(*h->e));
    return h->e ? 0 : ENOMEM;
}

void aiometer__retry_heap_destroy(struct aiometer__retry_heap *h)
{
    aiometer__free(h->e);
    h->e = NULL;
    h->n = h->cap = 0;
}

static void swap(struct aiometer__retry *a, struct aiometer__retry *b)
{
    struct aiometer__retry t = *a;
    *a = *b;
    *b = t;
}

static void sift_up(struct aiometer__retry_heap *h, size_t i)
{
    while (i > 0 && h->e[(i - 1) / 2].due > h->e[i].due) {
        swap(&h->e[(i - 1) / 2], &h->e[i]);
        i = (i - 1) / 2;
    }
}

int aiometer__retry_heap_push(struct aiometer__retry_heap *h, const struct aiometer__retry *r)
{
    if (h->n == h->cap)
        return ENOSPC;
    h->e[h->n] = *r;
    sift_up(h, h->n++);
    return 0;
}

void aiometer__retry_heap_hasten(struct aiometer__retry_heap *h, size_t i, uint64_t due)
{
    if (i < h->n && due < h->e[i].due) {
        h->e[i].due = due;
        sift_up(h, i);
    }
}

uint64_t aiometer__retry_heap_first(const struct aiometer__retry_heap *h)
{
    return h->n ? h->e[0].due : AIOMETER__NEVER;
}

int aiometer__retry_heap_pop(struct aiometer__retry_heap *h, struct aiometer__retry *out)
{
    size_t i = 0;

    if (h->n == 0)
        return 0;
    *out = h->e[0];
    h->e[0] = h->e[--h->n];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && h->e[l].due < h->e[m].due)
            m = l;
        if (r < h->n && h->e[r].due < h->e[m].due)
            m = r;
        if (m == i)
            break;
        swap(&h->e[i], &h->e[m]);
        i = m;
    }
    return 1;
}

/* Each thread draws from its own xorshift64* stream, seeded from the clock
 * and the address of its state, so that jobs backing off at the same moment
 * in different threads do not draw the same waits (full jitter exists to
 * spread them out). */
static _Thread_local uint64_t rng_state;

static double uniform01(void)
{
    uint64_t x = rng_state;

    if (x == 0)
        x = aiometer__now_ns() ^ (uint64_t)(uintptr_t)&rng_state ^ UINT64_C(0x9e3779b97f4a7c15);
    if (x == 0)
        x = 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return (double)((x * UINT64_C(0x2545f4914f6cdd1d)) >> 11) * 0x1.0p-53;
}

uint64_t aiometer__retry_backoff_ns(double delay, double max_delay, size_t k)
{
    /* ldexp saturates to infinity for a large k; fmin then brings it back to
     * the cap, and an infinite cap is a wait too long to represent. */
    double bound = fmin(max_delay, ldexp(delay, k > 2000 ? 2000 : (int)k));
    double wait = uniform01() * bound;

    if (!isfinite(wait))
        return AIOMETER__NEVER - 1;
    return aiometer__seconds_to_ns(wait);
}

/* ---- parking and picking up -------------------------------------------------- */

int aiometer__park(struct aiometer__call *c, const struct aiometer__retry *r)
{
    int ok = 0;

    aiometer__lock(&c->lock);
    if (atomic_load(&c->stop) == AIOMETER__GOING) {
        uint64_t first = aiometer__retry_heap_first(&c->rq);
        ok = aiometer__retry_heap_push(&c->rq, r) == 0;
        if (ok) {
            atomic_store(&c->parked, c->rq.n);
            if (r->wait == AIOMETER__WAIT_SLOT)
                atomic_fetch_add(&c->slot_waits, 1);
            /* The timer sleeps until the earliest due time it saw: it must
             * wake for a job due before that (or someone must become it). */
            if (r->due < first)
                pthread_cond_signal(c->retry_timer ? &c->retry_timer_cv : &c->retry_cv);
        }
    }
    aiometer__unlock(&c->lock);
    return ok;
}

int aiometer__retry_park(struct aiometer__call *c, size_t j, void *arg, const char *key,
                         size_t attempt, int err, double after)
{
    struct aiometer__retry r = { 0 };
    uint64_t wait;

    if (after >= 0)
        wait = isfinite(after) ? aiometer__seconds_to_ns(after) : AIOMETER__NEVER;
    else
        wait = aiometer__retry_backoff_ns(c->retry_delay, c->retry_max_delay, attempt - 1);
    r.due = aiometer__add_ns(aiometer__now_ns(), wait);
    r.index = j;
    r.arg = arg;
    r.attempt = attempt;
    r.err = err;
    r.key = key;
    r.wait = AIOMETER__WAIT_RETRY;
    return aiometer__park(c, &r);
}

int aiometer__retry_next(struct aiometer__call *c, struct aiometer__retry *re, int may_claim)
{
    int got = 0;

    if (!c->rq.cap || atomic_load(&c->parked) == 0)
        return 0;
    aiometer__lock(&c->lock);
    for (;;) {
        uint64_t first;

        aiometer__call_check_deadline_locked(c);
        if (c->rq.n == 0)
            break;
        first = aiometer__retry_heap_first(&c->rq);
        /* Once the call has stopped no parked job runs again, and each is
         * handed out at once, due or not: run_job ends it there (with its
         * last error, or as never started) through the call's policy, so an
         * amap in input order passes its place and hands out the results
         * behind it.  Left in the heap until the call's end, it held them
         * back for good (aiometer(1) -k lost them). */
        if (atomic_load(&c->stop) != AIOMETER__GOING || first <= aiometer__now_ns()) {
            got = aiometer__retry_heap_pop(&c->rq, re);
            atomic_store(&c->parked, c->rq.n);
            if (re->wait == AIOMETER__WAIT_SLOT)
                atomic_fetch_sub(&c->slot_waits, 1);
            break;
        }
        /* New work first, while the parked jobs stay under the gate that
         * bounds memory. */
        if (may_claim && c->rq.n < c->retry_gate && aiometer__can_claim_locked(c))
            break;
        if (atomic_load(&c->retry_waiters) >= c->rq.n)
            break;
        atomic_fetch_add(&c->retry_waiters, 1);
        if (!c->retry_timer) {
            c->retry_timer = 1;
            aiometer__cond_wait_until(&c->retry_timer_cv, &c->lock,
                                      aiometer__call_wait_limit(c, first));
            c->retry_timer = 0;
        } else {
            aiometer__cond_wait_until(&c->retry_cv, &c->lock,
                                      aiometer__call_wait_limit(c, AIOMETER__NEVER));
        }
        atomic_fetch_sub(&c->retry_waiters, 1);
    }
    /* Leaving the wait (to run a job, to claim one, or because the call
     * stopped): if jobs are left and nobody times them, wake a waiter to.
     * If more wait than jobs are parked (a participant that was not waiting
     * took a due job, or the last one), wake one to leave: each that leaves
     * passes the wake-up on while the excess lasts, so no participant waits
     * for ever on an empty heap. */
    {
        size_t waiting = atomic_load(&c->retry_waiters);
        if (waiting > 0 && (!c->retry_timer || waiting > c->rq.n))
            pthread_cond_signal(&c->retry_cv);
        if (c->rq.n == 0 && c->retry_timer)
            pthread_cond_signal(&c->retry_timer_cv);
    }
    aiometer__unlock(&c->lock);
    return got;
}

void aiometer__retry_finish(struct aiometer__call *c)
{
    struct aiometer__retry r;

    /* No participant is left, so the heap needs no lock.  A job set aside
     * before its first attempt never started: it is skipped like a job
     * never claimed, and gives back the key's slot if it held one. */
    while (c->rq.cap && aiometer__retry_heap_pop(&c->rq, &r)) {
        if (r.hold)
            c->shared->be.release(c->shared->state, r.key);
        if (r.attempt == 0) {
            if (c->errors)
                c->errors[r.index] = ECANCELED;
            if (c->policy->skip)
                c->policy->skip(c, r.index);
            continue;
        }
        atomic_fetch_add(&c->failed, 1);
        if (c->progress)
            atomic_fetch_add(&c->p_failed, 1);
        if (c->errors)
            c->errors[r.index] = r.err;
        if (c->results)
            c->results[r.index] = NULL;
    }
}

/* ---- inside a job ------------------------------------------------------------ */

void aiometer_retry(int err, double after)
{
    struct aiometer__ctx *ctx = aiometer__tls;

    if (!ctx || err == 0 || ctx->fail_err || ctx->retry_err)
        return;
    if (ctx->attempt >= ctx->call->retries) {
        /* No attempt left: the job fails now, exactly as through
         * aiometer_fail, except that its return value is dropped. */
        ctx->drop = 1;
        aiometer_fail(err);
        return;
    }
    ctx->retry_err = err > 0 ? err : EINVAL;
    ctx->retry_after = after;
}
