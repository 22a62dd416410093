/* limiter.c - GCRA booking and the shared limiter object. */
#include "config.h"
#include "aiometer.h"
#include "limiter.h"
#include "sync.h"

#include <errno.h>
#include <math.h>

/* Intervals and tolerances stay at or below 2^62 ns (about 146 years) so
 * that now + T and TAT - tau never overflow a uint64_t. */
#define AIO_GCRA_MAX_NS (UINT64_C(1) << 62)

int aio_gcra_init(struct aio_gcra *g, double rate, size_t burst)
{
    double t;

    if (!(rate > 0) || !isfinite(rate) || rate > 1e9)
        return EINVAL;
    if (burst == 0)
        burst = 1;
    /* Round T up: a limiter may be a little slow, never fast.  A rate so
     * small that T passes 2^62 ns (one start in 146 years) is held there:
     * no program lives to see the difference, and refusing 1e-12 would
     * only surprise. */
    t = ceil(1e9 / rate);
    g->interval = t < (double)AIO_GCRA_MAX_NS ? (uint64_t)t : AIO_GCRA_MAX_NS;
    if (g->interval == 0)
        g->interval = 1;
    /* Likewise a burst tolerance past 2^62 ns is held there; that only ever
     * makes the limiter stricter. */
    if (burst - 1 > AIO_GCRA_MAX_NS / g->interval)
        g->tolerance = AIO_GCRA_MAX_NS;
    else
        g->tolerance = g->interval * (uint64_t)(burst - 1);
    atomic_init(&g->tat, 0);
    return 0;
}

uint64_t aio_gcra_book(struct aio_gcra *g, uint64_t now)
{
    uint64_t tat = atomic_load_explicit(&g->tat, memory_order_relaxed);
    uint64_t grant, next;

    do {
        grant = tat > g->tolerance ? tat - g->tolerance : 0;
        if (grant < now)
            grant = now;
        next = (tat > now ? tat : now) + g->interval;
    } while (!atomic_compare_exchange_weak_explicit(&g->tat, &tat, next, memory_order_relaxed,
                                                    memory_order_relaxed));
    return grant;
}

int aiometer_limiter_create(aiometer_limiter **lim, double rate, size_t burst)
{
    struct aio_gcra probe;
    aiometer_limiter *l;
    int err;

    if (!lim)
        return EINVAL;
    err = aio_gcra_init(&probe, rate, burst);
    if (err)
        return err;
    l = aio_calloc(1, sizeof(*l));
    if (!l)
        return ENOMEM;
    aio_gcra_init(&l->gcra, rate, burst);
    atomic_init(&l->users, 0);
    *lim = l;
    return 0;
}

int aiometer_limiter_destroy(aiometer_limiter *lim)
{
    if (!lim)
        return EINVAL;
    /* Calls hold the limiter (users > 0) from their start to their return.
     * Destroying it while one may still start on it is the caller's race to
     * avoid; while one runs, refuse and leave it usable. */
    if (atomic_load(&lim->users) != 0)
        return EBUSY;
    aio_free(lim);
    return 0;
}
