/* keytable.c - the per-key limiter private to this process: a bounded hash
 * table of keys, each with its own GCRA schedule and running count.
 *
 * The table holds at most max_keys keys, in an open-addressing array of at
 * least twice as many entries (linear probing, deletion by backward shift,
 * so no tombstones accumulate).  One mutex guards it all; the work under
 * it is a hash look-up and a few words, and every operation copies nothing
 * but a new key.
 *
 * Forgetting: only when a new key finds the table full, and only a key that
 * holds no running slot and whose TAT is at or before now.  Such a key
 * grants its next start at `now` and moves TAT to now + T, exactly as a
 * fresh key does, so forgetting it never lets it start sooner than keeping
 * it would.  When no key can be forgotten the new key's job is told EAGAIN
 * and waits (keywait.c sets it aside); full_until remembers the earliest
 * time a key could be forgotten, so that such waits do not scan the table
 * over and over. */
#include "config.h"
#include "aiometer.h"
#include "clock.h"
#include "limiter.h"
#include "syscalls.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>

struct kentry {
    char *key;     /* NULL: the entry is empty */
    uint64_t hash;
    uint64_t tat;
    uint32_t running;
};

struct keytable {
    pthread_mutex_t lock;
    uint64_t interval, tolerance; /* interval 0: no rate */
    uint32_t cap;                 /* running slots per key; 0: no cap */
    /* Guarded by lock. */
    size_t max_keys, n, mask;
    struct kentry *e;
    uint64_t full_until; /* while full: no key can be forgotten before this */
};

static uint64_t hash_of(const char *k)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);

    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * UINT64_C(0x100000001b3);
    /* Mix the high bits down: the index uses the low ones. */
    h ^= h >> 29;
    h *= UINT64_C(0xbf58476d1ce4e5b9);
    return h ^ (h >> 32);
}

/* The entry of key, or the empty entry where it would go. */
static size_t find(struct keytable *t, const char *key, uint64_t h)
{
    size_t i = h & t->mask;

    while (t->e[i].key && !(t->e[i].hash == h && strcmp(t->e[i].key, key) == 0))
        i = (i + 1) & t->mask;
    return i;
}

/* Empty entry i and shift later entries of its probe run back, so that
 * every key stays reachable from its home entry without tombstones. */
static void forget(struct keytable *t, size_t i)
{
    size_t j = i;

    aiometer__free(t->e[i].key);
    for (;;) {
        size_t home;

        j = (j + 1) & t->mask;
        if (!t->e[j].key)
            break;
        home = t->e[j].hash & t->mask;
        /* Entry j may move to i only if its home is not in (i, j]. */
        if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
            continue;
        t->e[i] = t->e[j];
        i = j;
    }
    t->e[i].key = NULL;
    t->n--;
}

/* Forget one key that may be forgotten at `now`: 1, or 0 if none may. */
static int forget_one(struct keytable *t, uint64_t now)
{
    uint64_t soonest = AIOMETER_NEVER;
    size_t i;

    if (now < t->full_until)
        return 0;
    for (i = 0; i <= t->mask; i++) {
        struct kentry *e = &t->e[i];
        if (!e->key || e->running)
            continue;
        if (e->tat <= now) {
            forget(t, i);
            return 1;
        }
        if (e->tat < soonest)
            soonest = e->tat;
    }
    /* Until then only a released slot can make a key forgettable, and
     * release resets this. */
    t->full_until = soonest;
    return 0;
}

/* The entry of key, made if new: 0 with *i, EAGAIN (full, and no key may
 * be forgotten yet) or ENOMEM.  With t->lock held. */
static int entry(struct keytable *t, const char *key, size_t *i)
{
    uint64_t h = hash_of(key);
    char *copy;
    size_t len;

    *i = find(t, key, h);
    if (t->e[*i].key)
        return 0;
    if (t->n >= t->max_keys) {
        if (!forget_one(t, aiometer__now_ns()))
            return EAGAIN;
        *i = find(t, key, h);
    }
    len = strlen(key) + 1;
    copy = aiometer__calloc(1, len);
    if (!copy)
        return ENOMEM;
    memcpy(copy, key, len);
    t->e[*i].key = copy;
    t->e[*i].hash = h;
    t->e[*i].tat = 0;
    t->e[*i].running = 0;
    t->n++;
    return 0;
}

static int kt_book(void *state, const char *key, uint64_t now, uint64_t *start)
{
    struct keytable *t = state;
    struct kentry *e;
    size_t i;
    int err;

    aiometer__lock(&t->lock);
    err = entry(t, key, &i);
    if (!err) {
        /* GCRA as limiter.h states it, on this key's TAT. */
        e = &t->e[i];
        *start = e->tat > t->tolerance ? e->tat - t->tolerance : 0;
        if (*start < now)
            *start = now;
        e->tat = aiometer__add_ns(e->tat > now ? e->tat : now, t->interval);
    }
    aiometer__unlock(&t->lock);
    return err;
}

static int kt_try(struct keytable *t, const char *key)
{
    size_t i;
    int err;

    aiometer__lock(&t->lock);
    err = entry(t, key, &i);
    if (!err) {
        if (t->e[i].running < t->cap)
            t->e[i].running++;
        else
            err = EAGAIN;
    }
    aiometer__unlock(&t->lock);
    return err;
}

/* The library never waits here (it sets the job aside instead); another
 * caller of the backend that asks to wait is served by polling, well
 * within the 10 ms the backend contract allows. */
static int kt_acquire(void *state, const char *key, int cancel_fd)
{
    for (;;) {
        struct pollfd pfd = { cancel_fd, POLLIN, 0 };
        int err = kt_try(state, key);

        if (err != EAGAIN || cancel_fd < 0)
            return err;
        if (poll(&pfd, 1, 1) > 0)
            return ECANCELED;
    }
}

static void kt_release(void *state, const char *key)
{
    struct keytable *t = state;
    size_t i;

    aiometer__lock(&t->lock);
    i = find(t, key, hash_of(key));
    /* A key with a running job is never forgotten, so it is there. */
    if (t->e[i].key && t->e[i].running && --t->e[i].running == 0)
        t->full_until = 0;
    aiometer__unlock(&t->lock);
}

static void kt_close(void *state)
{
    struct keytable *t = state;
    size_t i;

    for (i = 0; i <= t->mask; i++)
        aiometer__free(t->e[i].key);
    aiometer__free(t->e);
    pthread_mutex_destroy(&t->lock);
    aiometer__free(t);
}

int aiometer__keytable_open(aiometer_limiter **lim, const aiometer_limiter_options *lo)
{
    aiometer_limiter_backend be = { sizeof(be), 1, NULL, NULL, NULL, kt_close };
    struct keytable *t;
    size_t size = 1;
    int err;

    t = aiometer__calloc(1, sizeof(*t));
    if (!t)
        return ENOMEM;
    t->max_keys = lo->max_keys ? lo->max_keys : AIOMETER__DEFAULT_MAX_KEYS;
    while (size < 2 * t->max_keys)
        size *= 2;
    t->mask = size - 1;
    t->e = aiometer__calloc(size, sizeof(*t->e));
    err = t->e ? aiometer__mutex_init(&t->lock) : ENOMEM;
    if (err) {
        aiometer__free(t->e);
        aiometer__free(t);
        return err;
    }
    if (lo->max_per_second > 0 && isfinite(lo->max_per_second)) {
        struct aiometer__gcra g;

        aiometer__gcra_init(&g, lo->max_per_second, lo->max_burst);
        t->interval = g.interval;
        t->tolerance = g.tolerance;
        be.book = kt_book;
    }
    if (lo->max_at_once) {
        t->cap = (uint32_t)lo->max_at_once;
        be.acquire = kt_acquire;
        be.release = kt_release;
    }
    return aiometer__limiter_make(lim, &be, be.book != NULL, be.acquire != NULL, t);
}
