/* limiter.c - GCRA booking, the limiter object over a backend, and the
 * backend of a limiter private to this process. */
#include "config.h"
#include "aiometer.h"
#include "host_limiter.h"
#include "limiter.h"
#include "fdsem.h"
#include "syscalls.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

/* Intervals and tolerances stay at or below 2^62 ns (about 146 years).
 * That alone does not keep TAT in range: each booking adds T to it, so at
 * a rate of one start in 146 years the fourth booking would carry it past
 * 2^64 and wrap round to "now".  aiometer__gcra_book therefore saturates
 * TAT at AIOMETER_NEVER: a limiter booked that far ahead grants no further
 * start in this process's life (its jobs wait until their call stops). */
#define AIOMETER__GCRA_MAX_NS (UINT64_C(1) << 62)

int aiometer__gcra_init(struct aiometer__gcra *g, double rate, size_t burst)
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
    g->interval = t < (double)AIOMETER__GCRA_MAX_NS ? (uint64_t)t : AIOMETER__GCRA_MAX_NS;
    if (g->interval == 0)
        g->interval = 1;
    /* Likewise a burst tolerance past 2^62 ns is held there; that only ever
     * makes the limiter stricter. */
    if (burst - 1 > AIOMETER__GCRA_MAX_NS / g->interval)
        g->tolerance = AIOMETER__GCRA_MAX_NS;
    else
        g->tolerance = g->interval * (uint64_t)(burst - 1);
    atomic_init(&g->tat, 0);
    return 0;
}

uint64_t aiometer__gcra_book(struct aiometer__gcra *g, uint64_t now)
{
    uint64_t tat = atomic_load_explicit(&g->tat, memory_order_relaxed);
    uint64_t grant, next;

    /* Relaxed is enough: TAT is the only shared datum, and the CAS makes
     * each booking see the one before it.  No other memory is published
     * with TAT, so no acquire or release is needed. */
    do {
        uint64_t from = tat > now ? tat : now;

        grant = tat > g->tolerance ? tat - g->tolerance : 0;
        if (grant < now)
            grant = now;
        /* Saturate rather than wrap (see AIOMETER__GCRA_MAX_NS).  A
         * saturated TAT grants AIOMETER_NEVER - tau: with tau at most 2^62
         * ns, still centuries past any uptime, so in effect never. */
        next = from > AIOMETER_NEVER - g->interval ? AIOMETER_NEVER : from + g->interval;
    } while (!atomic_compare_exchange_weak_explicit(&g->tat, &tat, next, memory_order_relaxed,
                                                    memory_order_relaxed));
    return grant;
}

int aiometer__limiter_options_check(const aiometer_limiter_options *lo, size_t max_cap)
{
    struct aiometer__gcra probe;
    double r;

    if (!lo)
        return EINVAL;
    r = lo->max_per_second;
    if (isnan(r) || r < 0)
        return EINVAL;
    if (r > 0 && isfinite(r) && aiometer__gcra_init(&probe, r, lo->max_burst))
        return EINVAL;
    if (lo->max_at_once > max_cap)
        return EINVAL;
    /* max_keys means nothing without per_key: a forgotten per_key, most
     * likely. */
    if (lo->max_keys && (!lo->per_key || lo->max_keys > AIOMETER__PRIVATE_MAX_KEYS))
        return EINVAL;
    /* A limiter that limits nothing is a mistake, not a default. */
    if (!(r > 0 && isfinite(r)) && lo->max_at_once == 0)
        return EINVAL;
    return 0;
}

/* ---- the limiter object ------------------------------------------------------ */

int aiometer_limiter_create_backend(aiometer_limiter **lim, const aiometer_limiter_backend *b,
                                    void *state)
{
    aiometer_limiter *l;
    size_t n;

    if (!lim || !b || b->size < offsetof(aiometer_limiter_backend, close) + sizeof(b->close))
        return EINVAL;
    if (!b->acquire != !b->release || (!b->book && !b->acquire))
        return EINVAL;
    l = aiometer__calloc(1, sizeof(*l));
    if (!l)
        return ENOMEM;
    /* A newer caller's struct may be longer: take what we know of it. */
    n = b->size < sizeof(l->be) ? b->size : sizeof(l->be);
    memcpy(&l->be, b, n);
    l->be.size = sizeof(l->be);
    l->state = state;
    atomic_init(&l->users, 0);
    *lim = l;
    return 0;
}

int aiometer__limiter_make(aiometer_limiter **lim, const aiometer_limiter_backend *tmpl,
                           int has_rate, int has_cap, void *state)
{
    aiometer_limiter_backend be = *tmpl;
    int err;

    if (!has_rate)
        be.book = NULL;
    if (!has_cap)
        be.acquire = NULL, be.release = NULL;
    err = aiometer_limiter_create_backend(lim, &be, state);
    if (err && be.close)
        be.close(state);
    return err;
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
    if (lim->be.close) {
        /* A backend's close may wait (a server, a lock): it is not cut
         * short half-way (see aiometer__nocancel_begin). */
        int cs = aiometer__nocancel_begin();
        lim->be.close(lim->state);
        aiometer__nocancel_end(cs, 0);
    }
    aiometer__free(lim);
    return 0;
}

/* ---- the private backend ------------------------------------------------------ */

/* A rate (GCRA) and a running cap.  The cap is a counting semaphore
 * (fdsem.c): an atomic count, and a descriptor that carries wake-ups only,
 * which a waiter polls together with the call's cancel descriptor, so a
 * stopped call ends the wait at once. */
struct aiometer__private {
    int has_rate;
    struct aiometer__gcra gcra;
    struct aiometer__sem sem; /* sem.fd < 0: no running cap */
};

static int private_book(void *state, const char *key, uint64_t now, uint64_t *start)
{
    struct aiometer__private *p = state;

    (void)key;
    *start = aiometer__gcra_book(&p->gcra, now);
    return 0;
}

static int private_acquire(void *state, const char *key, int cancel_fd)
{
    struct aiometer__private *p = state;

    (void)key;
    return aiometer__sem_take(&p->sem, cancel_fd);
}

static void private_release(void *state, const char *key)
{
    struct aiometer__private *p = state;

    (void)key;
    aiometer__sem_give(&p->sem);
}

static void private_close(void *state)
{
    struct aiometer__private *p = state;

    aiometer__sem_destroy(&p->sem);
    aiometer__free(p);
}

static int private_open(aiometer_limiter **lim, const aiometer_limiter_options *lo)
{
    static const aiometer_limiter_backend be = { sizeof(be),      0,
                                                 private_book,    private_acquire,
                                                 private_release, private_close };
    struct aiometer__private *p;
    int err;

    p = aiometer__calloc(1, sizeof(*p));
    if (!p)
        return ENOMEM;
    p->sem.fd = p->sem.wfd = -1; /* no running cap until one is made */
    if (lo->max_per_second > 0 && isfinite(lo->max_per_second)) {
        aiometer__gcra_init(&p->gcra, lo->max_per_second, lo->max_burst);
        p->has_rate = 1;
    }
    if (lo->max_at_once) {
        err = aiometer__sem_init(&p->sem, lo->max_at_once);
        if (err) {
            aiometer__free(p);
            return err;
        }
    }
    return aiometer__limiter_make(lim, &be, p->has_rate, lo->max_at_once != 0, p);
}

int aiometer_limiter_create(aiometer_limiter **lim, double rate, size_t burst)
{
    aiometer_limiter_options lo = { .max_per_second = rate, .max_burst = burst, .max_at_once = 0 };
    struct aiometer__gcra probe;

    if (!lim || aiometer__gcra_init(&probe, rate, burst))
        return EINVAL;
    return private_open(lim, &lo);
}

int aiometer_limiter_open(aiometer_limiter **lim, const char *name,
                          const aiometer_limiter_options *lo)
{
    if (!lim || aiometer__limiter_options_check(lo, AIOMETER__PRIVATE_MAX_AT_ONCE))
        return EINVAL;
    if (name)
        return aiometer__host_open(lim, name, lo);
    return lo->per_key ? aiometer__keytable_open(lim, lo) : private_open(lim, lo);
}
