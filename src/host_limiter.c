/* host_limiter.c - the operations of a host-wide named limiter: booking a
 * start on the shared schedule, taking and giving running slots, waiting
 * for one, and freeing the slots of dead owners.  host_limiter.h says why a
 * crash at any point leaves the state usable. */
#include "config.h"
#include "aiometer.h"
#include "clock.h"
#include "host_limiter.h"
#include "limiter.h"
#include "syscalls.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <sys/mman.h>

/* A waiter sleeps at most this long before it looks at its cancel
 * descriptor again (the backend contract asks for 10 ms at most), and looks
 * for the slots of dead owners this often. */
#define WAIT_SLICE_NS 4000000L
#define RECLAIM_NS UINT64_C(100000000)

/* The slot this thread took last, so that release finds one of its own at
 * once.  Any slot holding this process's token may be given back (they are
 * interchangeable), so a stale entry only costs a search. */
static _Thread_local struct {
    const struct aiometer__host *h;
    uint32_t i;
} last_slot;

/* ---- the operations ---------------------------------------------------------- */

/* GCRA on the shared TAT, with this opener's T and tau (limiter.h has the
 * rule).  The sum saturates: a TAT that would pass 2^64 - 1 ns stays there,
 * and from then on every booking is AIOMETER_NEVER (a rate so small that it
 * allows no further start in this boot), where a wrapping sum would restart
 * the schedule at 0 and let jobs through at once. */
static int host_book(void *state, const char *key, uint64_t now, uint64_t *start)
{
    struct aiometer__host *h = state;
    uint64_t tat = atomic_load_explicit(&h->sh->tat, memory_order_relaxed);
    uint64_t grant, base, next;

    (void)key;
    do {
        if (tat == AIOMETER_NEVER) {
            *start = AIOMETER_NEVER;
            return 0;
        }
        grant = tat > h->tolerance ? tat - h->tolerance : 0;
        if (grant < now)
            grant = now;
        base = tat > now ? tat : now;
        next = base >= AIOMETER_NEVER - h->interval ? AIOMETER_NEVER : base + h->interval;
    } while (!atomic_compare_exchange_weak_explicit(&h->sh->tat, &tat, next,
                                                    memory_order_relaxed, memory_order_relaxed));
    *start = grant;
    return 0;
}

static int try_take(struct aiometer__host *h, uint64_t self)
{
    uint32_t start = atomic_load_explicit(&h->hint, memory_order_relaxed), k, i;

    for (k = 0; k < h->cap; k++) {
        uint64_t zero = 0;

        i = (start + k) % h->cap;
        if (atomic_load_explicit(&h->slots[i], memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong(&h->slots[i], &zero, self)) {
            atomic_store_explicit(&h->hint, (i + 1) % h->cap, memory_order_relaxed);
            last_slot.h = h;
            last_slot.i = i;
            return 1;
        }
    }
    return 0;
}

/* Free the slots of owners that are gone: a slot whose owner is dead is
 * free, and clearing it with a CAS from that owner's token leaves a slot
 * that changed meanwhile alone.  A small memo keeps one /proc look-up per
 * owner per pass.  Runs at most once per RECLAIM_NS per handle (one thread
 * of the process does it), unless forced. */
static void reclaim(struct aiometer__host *h, uint64_t self, int force)
{
    struct {
        uint64_t token;
        int alive;
    } memo[8] = { { 0, 0 } };
    uint64_t now = aiometer__now_ns(), last = atomic_load(&h->last_reclaim);
    unsigned freed = 0, next = 0, m;
    uint32_t i;

    if (!force && now - last < RECLAIM_NS)
        return;
    if (!atomic_compare_exchange_strong(&h->last_reclaim, &last, now))
        return;
    for (i = 0; i < h->cap; i++) {
        uint64_t t = atomic_load_explicit(&h->slots[i], memory_order_relaxed);
        int alive = -1;

        if (t == 0 || t == self)
            continue;
        for (m = 0; m < 8; m++)
            if (memo[m].token == t)
                alive = memo[m].alive;
        if (alive < 0) {
            alive = aiometer__host_alive(t);
            memo[next % 8].token = t;
            memo[next % 8].alive = alive;
            next++;
        }
        if (!alive && atomic_compare_exchange_strong(&h->slots[i], &t, 0))
            freed++;
    }
    if (freed) {
        atomic_fetch_add(&h->sh->wake_seq, 1);
        aiometer__host_futex_wake(&h->sh->wake_seq, (int)freed);
    }
}

static int cancelled(int fd)
{
    struct pollfd pfd = { fd, POLLIN, 0 };

    return poll(&pfd, 1, 0) > 0;
}

/* Waiting is a futex sleep on wake_seq, which every release bumps.  The
 * waiter counts itself in waiters before it reads wake_seq and looks for a
 * slot; a releaser frees its slot, bumps wake_seq, then reads waiters: with
 * these sequentially consistent steps either the waiter sees the freed slot
 * or the releaser sees the waiter (and the futex sees the new sequence).
 * The sleep is a slice of WAIT_SLICE_NS so that the cancel descriptor and
 * dead owners are looked at even if no wake-up comes. */
static int host_acquire(void *state, const char *key, int cancel_fd)
{
    struct aiometer__host *h = state;
    uint64_t self = aiometer__host_self();
    int err = 0;

    (void)key;
    if (!self)
        return errno ? errno : ENOSYS;
    if (try_take(h, self))
        return 0;
    if (cancel_fd < 0)
        return EAGAIN;
    reclaim(h, self, 1);
    for (;;) {
        uint32_t seq;

        atomic_fetch_add(&h->sh->waiters, 1);
        seq = atomic_load(&h->sh->wake_seq);
        if (try_take(h, self))
            break;
        if (cancelled(cancel_fd)) {
            err = ECANCELED;
            break;
        }
        aiometer__host_futex_wait(&h->sh->wake_seq, seq, WAIT_SLICE_NS);
        atomic_fetch_sub(&h->sh->waiters, 1);
        reclaim(h, self, 0);
    }
    atomic_fetch_sub(&h->sh->waiters, 1);
    return err;
}

static void host_release(void *state, const char *key)
{
    struct aiometer__host *h = state;
    uint64_t self = aiometer__host_self(), t = self;
    uint32_t i;

    (void)key;
    if (!(last_slot.h == h && atomic_compare_exchange_strong(&h->slots[last_slot.i], &t, 0))) {
        for (i = 0; i < h->cap; i++) {
            t = self;
            if (atomic_compare_exchange_strong(&h->slots[i], &t, 0))
                break;
        }
    }
    last_slot.h = NULL;
    atomic_fetch_add(&h->sh->wake_seq, 1);
    if (atomic_load(&h->sh->waiters))
        aiometer__host_futex_wake(&h->sh->wake_seq, 1);
}

void aiometer__host_close(void *state)
{
    struct aiometer__host *h = state;

    munmap(h->sh, AIOMETER__HOST_SIZE);
    aiometer__free(h);
}

int aiometer__host_make(aiometer_limiter **lim, struct aiometer__host *h)
{
    static const aiometer_limiter_backend be = { sizeof(be),  0,
                                                 host_book,   host_acquire,
                                                 host_release, aiometer__host_close };

    return aiometer__limiter_make(lim, &be, h->interval != 0, h->cap != 0, h);
}
