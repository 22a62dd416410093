/* fallback.c - the in-process budget of a limiter in AIOMETER_REDIS_LOCAL
 * mode, used while Redis cannot be reached: local_share of the fleet's rate
 * and running cap, so that a fleet cut off from Redis stays near its limits
 * when local_share is about 1 / (number of processes). */
#include "config.h"
#include "rlimiter.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* As in libaiometer: intervals and tolerances held at 2^62 ns. */
#define MAX_NS 4611686018427387904.0

void aiometer__redis_fallback_init(struct aiometer__redis_fallback *f, double rate, size_t burst,
                             size_t max_at_once, double share, size_t max_keys)
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
    f->max_keys = max_keys;
    f->buckets = NULL;
    f->n_buckets = f->n_keys = 0;
}

void aiometer__redis_fallback_free(struct aiometer__redis_fallback *f)
{
    size_t i;

    for (i = 0; i < f->n_buckets; i++) {
        while (f->buckets[i]) {
            struct aiometer__redis_lkey *e = f->buckets[i];

            f->buckets[i] = e->next;
            free(e->key);
            free(e);
        }
    }
    free(f->buckets);
    f->buckets = NULL;
    f->n_buckets = f->n_keys = 0;
}

static uint64_t book_tat(const struct aiometer__redis_fallback *f, uint64_t *tat, uint64_t now)
{
    uint64_t grant, base;

    grant = *tat > f->tolerance ? *tat - f->tolerance : 0;
    if (grant < now)
        grant = now;
    base = *tat > now ? *tat : now;
    /* Saturate: a schedule pushed past the representable future stays
     * there, and every booking after it is "never". */
    *tat = base > UINT64_MAX - f->interval ? UINT64_MAX : base + f->interval;
    return grant >= (UINT64_C(1) << 63) ? AIOMETER_NEVER : grant;
}

/* ---- the per-key table --------------------------------------------------------------- */

static size_t bucket_of(const struct aiometer__redis_fallback *f, const char *key)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);

    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * UINT64_C(0x100000001b3);
    return (size_t)(h ^ (h >> 32)) & (f->n_buckets - 1);
}

/* Forget one key whose schedule is past and which holds no local slot: 1
 * if one was found. */
static int forget_idle(struct aiometer__redis_fallback *f, uint64_t now)
{
    size_t i;

    for (i = 0; i < f->n_buckets; i++) {
        struct aiometer__redis_lkey **p;

        for (p = &f->buckets[i]; *p; p = &(*p)->next) {
            struct aiometer__redis_lkey *e = *p;

            if (e->held == 0 && e->tat <= now) {
                *p = e->next;
                free(e->key);
                free(e);
                f->n_keys--;
                return 1;
            }
        }
    }
    return 0;
}

/* key's entry, made if need be: 0 with *out, EAGAIN (the table is full of
 * keys in use) or ENOMEM. */
static int entry(struct aiometer__redis_fallback *f, const char *key, uint64_t now,
                 struct aiometer__redis_lkey **out)
{
    struct aiometer__redis_lkey *e;
    size_t b;

    if (!f->buckets) {
        /* About four keys a bucket when the table is full. */
        size_t n = 16;

        while (n < f->max_keys / 4 && n < 65536)
            n *= 2;
        f->buckets = calloc(n, sizeof(*f->buckets));
        if (!f->buckets)
            return ENOMEM;
        f->n_buckets = n;
    }
    b = bucket_of(f, key);
    for (e = f->buckets[b]; e; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            *out = e;
            return 0;
        }
    }
    if (f->n_keys >= f->max_keys && !forget_idle(f, now))
        return EAGAIN;
    e = calloc(1, sizeof(*e));
    if (!e || !(e->key = strdup(key))) {
        free(e);
        return ENOMEM;
    }
    e->next = f->buckets[b];
    f->buckets[b] = e;
    f->n_keys++;
    *out = e;
    return 0;
}

int aiometer__redis_fallback_book_locked(struct aiometer__redis_fallback *f, const char *key, uint64_t now,
                                   uint64_t *start)
{
    struct aiometer__redis_lkey *e;
    int err;

    if (!key) {
        *start = book_tat(f, &f->tat, now);
        return 0;
    }
    err = entry(f, key, now, &e);
    if (!err)
        *start = book_tat(f, &e->tat, now);
    return err;
}

int aiometer__redis_fallback_take_locked(struct aiometer__redis_fallback *f, const char *key, uint64_t now)
{
    struct aiometer__redis_lkey *e;
    int err;

    if (!key) {
        if (f->held >= f->cap)
            return EAGAIN;
        f->held++;
        return 0;
    }
    err = entry(f, key, now, &e);
    if (err)
        return err;
    if (e->held >= f->cap)
        return EAGAIN;
    e->held++;
    return 0;
}

int aiometer__redis_fallback_give_locked(struct aiometer__redis_fallback *f, const char *key)
{
    struct aiometer__redis_lkey *e;

    if (!key) {
        if (!f->held)
            return 0;
        f->held--;
        return 1;
    }
    if (!f->buckets)
        return 0;
    for (e = f->buckets[bucket_of(f, key)]; e; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            if (!e->held)
                return 0;
            e->held--;
            return 1;
        }
    }
    return 0;
}
