/* host_keys.c - a per-key named limiter: each key's rate and running
 * slots in a bounded table of keys in the shared state (host_limiter.h has
 * the layout), shared by every process that opens the name.
 *
 * A key is found by its fingerprint, a 64-bit hash of its bytes, in the
 * bucket the fingerprint picks (KEY_WAYS entries).  Two different keys
 * with the same fingerprint would share one budget; with 64 bits that
 * takes about 2^32 keys in use at once, far past any table here.
 *
 * Crash safety, as for the rest of the state, comes from the layout: every
 * change is one compare-and-swap of one word, and every word a process
 * owns for a while holds its owner token, so that whoever finds the owner
 * dead may take it back.
 *   - A key's TAT changes by CAS only, as the shared TAT does.
 *   - A key's running slot is a word holding 0 or its owner's token,
 *     exactly as the limiter-wide slots are, and is freed the same way: a
 *     slot whose owner is dead is free, and a CAS from that token clears it.
 *   - Adding or forgetting a key takes the bucket's lock, a word holding the
 *     owner's token (a dead owner's lock is taken over by CAS from its
 *     token).  Under it, adding is one CAS of the entry's id (0 -> key).
 *     Forgetting first locks the key's TAT (a CAS from a time at or before
 *     now to LOCKED | token), then checks that no live process holds a
 *     slot, and only then gives the entry to the new key.  A process that
 *     dies with a TAT locked leaves a key that was forgettable, whose TAT
 *     was in the past: whoever finds the lock's owner dead sets the TAT to
 *     0, which books exactly as that past time did.
 *   - Users of an entry never hold a lock: they check after the fact.  A
 *     booking CASes the TAT, then checks that the entry still holds its
 *     key; a slot taker CASes a slot, then checks the key and that the TAT
 *     is not locked.  A forgetter locks the TAT and then reads the slots;
 *     a slot taker writes its slot and then reads the TAT: with these
 *     sequentially consistent steps at least one of them sees the other,
 *     so a live slot is never forgotten.  A check that fails undoes the slot
 *     (or leaves a booking on another key, which only makes that key
 *     stricter) and starts again.
 * Forgetting a key only when its TAT is at or before now and its slots
 * are free never lets it start sooner than keeping it would: a fresh entry
 * books as a past TAT does. */
#include "config.h"
#include "aiometer.h"
#include "clock.h"
#include "host_limiter.h"
#include "limiter.h"
#include "syscalls.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>

#define LOCKED (UINT64_C(1) << 63)
/* A key's TAT saturates here, below LOCKED: 292 years of nanoseconds. */
#define TAT_MAX (LOCKED - 1)
/* Dead owners of a key's slots are looked for at most this often per
 * handle, when a slot is wanted and none is free. */
#define KEY_RECLAIM_NS UINT64_C(10000000)

uint32_t aiometer__host_key_buckets(size_t max_keys)
{
    uint32_t n = 1;

    if (max_keys == 0)
        max_keys = AIOMETER__DEFAULT_MAX_KEYS;
    if (max_keys > AIOMETER__HOST_MAX_KEYS)
        return 0;
    while ((size_t)n * AIOMETER__HOST_KEY_WAYS < max_keys)
        n *= 2;
    return n;
}

void aiometer__host_keys_reset(struct aiometer__host_bucket *b, uint32_t n)
{
    uint32_t i, w, k;

    for (i = 0; i < n; i++) {
        atomic_store(&b[i].lock, 0);
        for (w = 0; w < AIOMETER__HOST_KEY_WAYS; w++) {
            atomic_store(&b[i].key[w].id, 0);
            atomic_store(&b[i].key[w].tat, 0);
            for (k = 0; k < AIOMETER__HOST_KEY_SLOTS; k++)
                atomic_store(&b[i].key[w].slots[k], 0);
        }
    }
}

static uint64_t fingerprint(const char *k)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);

    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * UINT64_C(0x100000001b3);
    h ^= h >> 31;
    h *= UINT64_C(0x94d049bb133111eb);
    h ^= h >> 29;
    return h ? h : 1;
}

/* A TAT word locked by a dead process: give it back as 0 (see above). */
static void unlock_if_dead(_Atomic uint64_t *tat, uint64_t t)
{
    if ((t & LOCKED) && !aiometer__host_alive(t & ~LOCKED))
        atomic_compare_exchange_strong(tat, &t, 0);
}

static struct aiometer__host_key *lookup(struct aiometer__host_bucket *b, uint64_t id)
{
    int w;

    for (w = 0; w < AIOMETER__HOST_KEY_WAYS; w++)
        if (atomic_load(&b->key[w].id) == id)
            return &b->key[w];
    return NULL;
}

/* Are all slots of e free, once dead owners' are cleared? */
static int slots_free(struct aiometer__host_key *e, uint32_t cap)
{
    uint32_t k;

    for (k = 0; k < cap; k++) {
        uint64_t t = atomic_load(&e->slots[k]);
        if (t && !(aiometer__host_alive(t) == 0 && atomic_compare_exchange_strong(&e->slots[k], &t, 0)))
            return 0;
    }
    return 1;
}

/* Add the key to bucket b, with the bucket's lock: the entry, or NULL if
 * every entry is in use by a key that may not be forgotten yet. */
static struct aiometer__host_key *add(struct aiometer__host *h, struct aiometer__host_bucket *b,
                                      uint64_t id, uint64_t self)
{
    struct aiometer__host_key *e;
    uint64_t owner = 0, now;
    int w;

    while (!atomic_compare_exchange_strong(&b->lock, &owner, self)) {
        if (aiometer__host_alive(owner)) {
            sched_yield(); /* another process adds or forgets: a few words */
            owner = 0;
        }
        /* else: taken over from the dead owner by the next CAS. */
    }
    e = lookup(b, id);
    for (w = 0; !e && w < AIOMETER__HOST_KEY_WAYS; w++) {
        uint64_t zero = 0;
        if (atomic_load(&b->key[w].id) == 0) {
            /* A forgetter that died may have left the TAT locked. */
            atomic_store(&b->key[w].tat, 0);
            if (atomic_compare_exchange_strong(&b->key[w].id, &zero, id))
                e = &b->key[w];
        }
    }
    now = aiometer__now_ns();
    for (w = 0; !e && w < AIOMETER__HOST_KEY_WAYS; w++) {
        struct aiometer__host_key *f = &b->key[w];
        uint64_t t = atomic_load(&f->tat);

        unlock_if_dead(&f->tat, t);
        t = atomic_load(&f->tat);
        if ((t & LOCKED) || t > now || !atomic_compare_exchange_strong(&f->tat, &t, LOCKED | self))
            continue;
        if (!slots_free(f, h->cap)) {
            atomic_store(&f->tat, t); /* a live slot: keep the key */
            continue;
        }
        atomic_store(&f->id, id);
        atomic_store(&f->tat, 0);
        e = f;
    }
    atomic_store(&b->lock, 0);
    return e;
}

/* The entry of key, added if new: 0, or EAGAIN (no room in its bucket
 * yet), or an errno value. */
static int entry(struct aiometer__host *h, const char *key, uint64_t *id,
                 struct aiometer__host_key **e)
{
    struct aiometer__host_bucket *b;
    uint64_t self;

    *id = fingerprint(key);
    b = &h->buckets[*id & (h->key_buckets - 1)];
    *e = lookup(b, *id);
    if (*e)
        return 0;
    self = aiometer__host_self();
    if (!self)
        return errno ? errno : ENOSYS;
    *e = add(h, b, *id, self);
    return *e ? 0 : EAGAIN;
}

static int hk_book(void *state, const char *key, uint64_t now, uint64_t *start)
{
    struct aiometer__host *h = state;

    for (;;) {
        struct aiometer__host_key *e;
        uint64_t id, tat, grant, base, next;
        int err = entry(h, key, &id, &e);

        if (err)
            return err;
        tat = atomic_load(&e->tat);
        if (tat & LOCKED) {
            unlock_if_dead(&e->tat, tat);
            sched_yield();
            continue;
        }
        grant = tat > h->tolerance ? tat - h->tolerance : 0;
        if (grant < now)
            grant = now;
        base = tat > now ? tat : now;
        next = base >= TAT_MAX - h->interval ? TAT_MAX : base + h->interval;
        if (!atomic_compare_exchange_strong(&e->tat, &tat, next))
            continue;
        if (atomic_load(&e->id) != id)
            continue; /* the entry went to another key: that one is only stricter */
        *start = tat == TAT_MAX ? AIOMETER_NEVER : grant;
        return 0;
    }
}

/* Free the slots of e whose owners are dead, at most once per
 * KEY_RECLAIM_NS per handle. */
static void reclaim_key(struct aiometer__host *h, struct aiometer__host_key *e, uint64_t self)
{
    uint64_t now = aiometer__now_ns(), last = atomic_load(&h->key_reclaim);
    uint32_t k;

    if (now - last < KEY_RECLAIM_NS || !atomic_compare_exchange_strong(&h->key_reclaim, &last, now))
        return;
    for (k = 0; k < h->cap; k++) {
        uint64_t t = atomic_load(&e->slots[k]);
        if (t && t != self && !aiometer__host_alive(t))
            atomic_compare_exchange_strong(&e->slots[k], &t, 0);
    }
}

static int hk_try(struct aiometer__host *h, const char *key, uint64_t self)
{
    for (;;) {
        struct aiometer__host_key *e;
        uint64_t id;
        uint32_t k;
        int err = entry(h, key, &id, &e), took = -1;

        if (err)
            return err;
        for (k = 0; k < h->cap && took < 0; k++) {
            uint64_t zero = 0;
            if (atomic_load(&e->slots[k]) == 0 &&
                atomic_compare_exchange_strong(&e->slots[k], &zero, self))
                took = (int)k;
        }
        if (took < 0) {
            reclaim_key(h, e, self);
            return EAGAIN;
        }
        if (atomic_load(&e->id) == id && !(atomic_load(&e->tat) & LOCKED))
            return 0;
        /* Being forgotten, or forgotten: give the slot back, look again. */
        {
            uint64_t mine = self;
            atomic_compare_exchange_strong(&e->slots[took], &mine, 0);
        }
        sched_yield();
    }
}

/* The library never waits here (it sets the job aside); a caller that asks
 * to wait is served by polling every millisecond. */
static int hk_acquire(void *state, const char *key, int cancel_fd)
{
    uint64_t self = aiometer__host_self();

    if (!self)
        return errno ? errno : ENOSYS;
    for (;;) {
        struct pollfd pfd = { cancel_fd, POLLIN, 0 };
        int err = hk_try(state, key, self);

        if (err != EAGAIN || cancel_fd < 0)
            return err;
        if (poll(&pfd, 1, 1) > 0)
            return ECANCELED;
    }
}

static void hk_release(void *state, const char *key)
{
    struct aiometer__host *h = state;
    struct aiometer__host_key *e;
    uint64_t self = aiometer__host_self(), id = fingerprint(key);
    uint32_t k;

    /* A key with a live slot is never forgotten: its entry is there. */
    e = lookup(&h->buckets[id & (h->key_buckets - 1)], id);
    for (k = 0; e && k < h->cap; k++) {
        uint64_t t = self;
        if (atomic_compare_exchange_strong(&e->slots[k], &t, 0))
            return;
    }
}

int aiometer__host_keys_make(aiometer_limiter **lim, struct aiometer__host *h)
{
    static const aiometer_limiter_backend be = { sizeof(be), 1,
                                                 hk_book,    hk_acquire,
                                                 hk_release, aiometer__host_close };

    return aiometer__limiter_make(lim, &be, h->interval != 0, h->cap != 0, h);
}
