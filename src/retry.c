/* retry.c - the retry heap and the backoff schedule; see retry.h. */
#include "config.h"
#include "retry.h"
#include "clock.h"
#include "sync.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>

static int bad_delay(double d)
{
    return isnan(d) || d < 0;
}

double aio_retry_delay(const aiometer_options *o)
{
    return o && o->retry_delay > 0 ? o->retry_delay : AIO_RETRY_DELAY;
}

double aio_retry_max_delay(const aiometer_options *o)
{
    return o && o->retry_max_delay > 0 ? o->retry_max_delay : AIO_RETRY_MAX_DELAY;
}

int aio_retry_check(const aiometer_options *o)
{
    if (!o)
        return 0;
    /* Checked whether or not retries are asked for, so that a bad value is
     * caught where it is written, not when retries are turned on later. */
    if (bad_delay(o->retry_delay) || bad_delay(o->retry_max_delay))
        return EINVAL;
    if (aio_retry_max_delay(o) < aio_retry_delay(o))
        return EINVAL;
    return 0;
}

/* Room for as many parked jobs as amap's default window holds results:
 * enough that a burst of retries does not stall new work, small enough that
 * a lazy source's memory stays bounded. */
#define AIO_RETRY_GATE_MIN 256

size_t aio_retry_gate(size_t slots)
{
    size_t g = slots <= SIZE_MAX / 4 ? 4 * slots : SIZE_MAX;
    return g > AIO_RETRY_GATE_MIN ? g : AIO_RETRY_GATE_MIN;
}

size_t aio_retry_cap(size_t slots, size_t n)
{
    size_t cap = aio_retry_gate(slots) + slots;
    return n < cap ? n : cap;
}

int aio_retry_heap_init(struct aio_retry_heap *h, size_t cap)
{
    h->n = 0;
    h->cap = cap;
    h->e = aio_calloc(cap ? cap : 1, sizeof(*h->e));
    return h->e ? 0 : ENOMEM;
}

void aio_retry_heap_destroy(struct aio_retry_heap *h)
{
    aio_free(h->e);
    h->e = NULL;
    h->n = h->cap = 0;
}

static void swap(struct aio_retry *a, struct aio_retry *b)
{
    struct aio_retry t = *a;
    *a = *b;
    *b = t;
}

int aio_retry_heap_push(struct aio_retry_heap *h, const struct aio_retry *r)
{
    size_t i;

    if (h->n == h->cap)
        return ENOSPC;
    i = h->n++;
    h->e[i] = *r;
    while (i > 0 && h->e[(i - 1) / 2].due > h->e[i].due) {
        swap(&h->e[(i - 1) / 2], &h->e[i]);
        i = (i - 1) / 2;
    }
    return 0;
}

uint64_t aio_retry_heap_first(const struct aio_retry_heap *h)
{
    return h->n ? h->e[0].due : AIO_NEVER;
}

int aio_retry_heap_pop(struct aio_retry_heap *h, struct aio_retry *out)
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
        x = aio_now_ns() ^ (uint64_t)(uintptr_t)&rng_state ^ UINT64_C(0x9e3779b97f4a7c15);
    if (x == 0)
        x = 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return (double)((x * UINT64_C(0x2545f4914f6cdd1d)) >> 11) * 0x1.0p-53;
}

uint64_t aio_retry_backoff_ns(double delay, double max_delay, size_t k)
{
    /* ldexp saturates to infinity for a large k; fmin then brings it back to
     * the cap, and an infinite cap is a wait too long to represent. */
    double bound = fmin(max_delay, ldexp(delay, k > 2000 ? 2000 : (int)k));
    double wait = uniform01() * bound;

    if (!isfinite(wait))
        return AIO_NEVER - 1;
    return aio_seconds_to_ns(wait);
}
