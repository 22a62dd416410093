/* fallback.c - the in-process budget of a limiter in AIOMETER_REDIS_LOCAL
 * mode, used while Redis cannot be reached: local_share of the fleet's rate
 * and running cap, so that a fleet cut off from Redis stays near its limits
 * when local_share is about 1 / (number of processes). */
#include "config.h"
#include "rlimiter.h"

#include <math.h>

/* As in libaiometer: intervals and tolerances held at 2^62 ns. */
#define MAX_NS 4611686018427387904.0

void aio_redis_fallback_init(struct aio_redis_fallback *f, double rate, size_t burst,
                             size_t max_at_once, double share)
{
    double t, b, cap;

    f->has_rate = rate > 0 && isfinite(rate);
    if (f->has_rate) {
        t = ceil(1e9 / (rate * share));
        if (!(t < MAX_NS))
            t = MAX_NS;
        f->interval = t < 1 ? 1 : (uint64_t)t;
        b = floor((double)burst * share);
        if (b < 1)
            b = 1;
        t = (double)f->interval * (b - 1);
        f->tolerance = t < MAX_NS ? (uint64_t)t : (uint64_t)MAX_NS;
    }
    cap = floor((double)max_at_once * share);
    f->cap = max_at_once == 0 ? 0 : cap < 1 ? 1 : (size_t)cap;
    f->tat = 0;
    f->held = 0;
}

uint64_t aio_redis_fallback_book_locked(struct aio_redis_fallback *f, uint64_t now)
{
    uint64_t grant, base;

    grant = f->tat > f->tolerance ? f->tat - f->tolerance : 0;
    if (grant < now)
        grant = now;
    base = f->tat > now ? f->tat : now;
    /* Saturate: a schedule pushed past the representable future stays
     * there, and every booking after it is "never". */
    f->tat = base > UINT64_MAX - f->interval ? UINT64_MAX : base + f->interval;
    return grant >= (UINT64_C(1) << 63) ? AIOMETER_NEVER : grant;
}
