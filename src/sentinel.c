/* sentinel.c - the watch over callers that run their jobs alone.
 *
 * A caller of a job function known to be short runs its jobs alone and
 * posts its call to the pool only after a batch shows that the work left
 * is worth a wake-up (handoff.c).  It can only see that between batches:
 * a job that blocks (a file on a dead NFS server, a request that hangs,
 * an aiometer_sleep of 10 s) holds the caller inside the batch, and the
 * call's other jobs would wait behind it, on a pool with idle threads.
 *
 * So one thread per process, the sentinel, watches the calls that are
 * alone.  A caller publishes when its current batch started (alone_t0, 0
 * between batches); a batch that has run for AIOMETER__SENTINEL_NS is
 * taken for a blocked one, and the sentinel posts the call itself.  It
 * clears c->recruit with the same exchange as handoff.c, so helpers are
 * still posted at most once, by whoever clears it.  Jobs of the blocked
 * batch stay with its caller; the rest of the call goes to the helpers.
 *
 * A watched call holds a slot: a word that holds its address.  Taking and
 * giving back a slot is one compare-and-swap each, on a cache line that
 * the caller's thread usually has to itself (it tries the slot it had
 * last time first), so callers never meet on a lock (W6, 16 callers on 2
 * cores: wall / ideal 1.08 with a list under one mutex, 1.03-1.07 with
 * the slots; bench/README).
 *
 * The sentinel costs next to nothing while no call is alone.  It exists
 * only from the first caller that goes alone until
 * AIOMETER__SENTINEL_LINGER_NS after the last one left.  While calls come
 * it looks every AIOMETER__SENTINEL_NS (a hundred short wake-ups a
 * second); after AIOMETER__SENTINEL_DOZE_NS without one it dozes, and
 * then the next caller to go alone wakes it (one signal, at most once per
 * doze).  Back-to-back calls pay no system call, and a caller after a
 * quiet second pays for starting it.  No thread is left behind in a
 * process that has stopped calling: its last second costs about a dozen
 * wake-ups (bench/README, idle).
 *
 * Lifetime.  The sentinel reads a call only while it has pinned its slot
 * (the low bit of the word, set by compare-and-swap from the bare
 * address).  aiometer__sentinel_unwatch(), which the caller calls before
 * it waits for the call's end, swaps the bare address for 0; while the
 * slot is pinned that fails, and the caller yields until the sentinel has
 * put the word back (bare, or 0 when it posted the call or found it posted
 * already).  So the sentinel never reads or posts a call that has ended.
 * The caller's reads of what aiometer__call_post writes (posted,
 * caller_runs) come after its unwatch, which reads what the sentinel
 * stored after posting.
 *
 * Dozing, waking and stopping.  A caller stores its slot, then reads
 * `running`; a sentinel about to doze sets DOZING, then looks at the slots
 * once more.  Both orders are sequentially consistent, so at least one of
 * them sees the other: the sentinel goes on looking, or the caller sees
 * DOZING and wakes it.  Waking, and a dozing sentinel's decision to stop
 * (DOZING to NONE), happen under the lock, so a caller either wakes the
 * sentinel before it decides or starts a new one after. */
#include "config.h"
#include "call.h"
#include "clock.h"
#include "syscalls.h"

#include <errno.h>
#include <sched.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif
#include <stdint.h>
#include <time.h>
#include <unistd.h>

/* A batch alone this long is taken for a blocked one (and the sentinel
 * looks this often while calls are alone).  A caller's batches aim at
 * 20 us (jobloop.c), so only a blocked job or a caller preempted for that
 * long gets here; the latter costs a hand-off that was not needed, the
 * former used to hold up the call for as long as it blocked.  At 1 ms,
 * preempted callers were posted often enough on 2 busy cores to show:
 * W7 after W6 in one bench run took 40-59 ns/job against 19-26 without
 * the sentinel (bench/README). */
#define AIOMETER__SENTINEL_NS 10000000
/* After this long with nothing to watch, the sentinel stops looking and
 * dozes until a caller wakes it (or the linger below ends). */
#define AIOMETER__SENTINEL_DOZE_NS 100000000
/* How long the sentinel stays, dozing, after the last call left. */
#define AIOMETER__SENTINEL_LINGER_NS 1000000000
/* Calls watched at once; a caller that finds every slot taken posts its
 * call at once, as for an unknown job function. */
#define AIOMETER__SENTINEL_SLOTS 256

#define PINNED ((uintptr_t)1)

static struct {
    _Atomic uintptr_t call; /* the call's address; | PINNED while read */
    char pad[64 - sizeof(uintptr_t)];
} slots[AIOMETER__SENTINEL_SLOTS] __attribute__((aligned(64)));

/* Where this thread's caller looks for a slot first (+ 1; 0: not yet). */
static _Thread_local unsigned slot_hint;
static atomic_uint next_hint;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
/* What the sentinel does: a caller that takes a slot while it is LOOKING
 * has nothing else to do; one that sees it DOZING wakes it; NONE: there
 * is none, start one.  Changed under the lock. */
enum { NONE, LOOKING, DOZING };
static atomic_int running;
static int threads;        /* sentinel threads not yet ended (lock) */
static int stopping;       /* the process is ending: threads return (lock) */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* The sentinel's waits end at aiometer__now_ns() times, so its condition
 * variable must wait on CLOCK_MONOTONIC.  (With the static initialiser's
 * wall clock, every wait timed out at once, and the sentinel used a whole
 * core for as long as it lived: check_handoff.c.)  Not through
 * aiometer__cond_init: it is made once per process, and glibc and musl
 * never fail it; if they did, the static one stays and the sentinel would
 * only look more often. */
static void make_cv(void)
{
    pthread_condattr_t attr;

    if (pthread_condattr_init(&attr) != 0)
        return;
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0)
        pthread_cond_init(&cv, &attr);
    pthread_condattr_destroy(&attr);
}

static void fork_prepare(void)
{
    aiometer__lock(&lock);
}

static void fork_parent(void)
{
    aiometer__unlock(&lock);
}

/* The child has no sentinel and none of the parent's callers: the calls
 * in the slots belong to threads that do not exist here (the forking
 * thread's own call, if it has one, finds its slot empty and goes on).
 * The condition variable is made anew: the parent's sentinel may have
 * been waiting on it, and a waiter that does not exist here would hold up
 * every broadcast (a forked child hung in exit that way, in rel_stress). */
static void fork_child(void)
{
    for (size_t i = 0; i < AIOMETER__SENTINEL_SLOTS; i++)
        atomic_store_explicit(&slots[i].call, 0, memory_order_relaxed);
    atomic_store(&running, NONE);
    threads = 0;
    make_cv();
    aiometer__unlock(&lock);
}

static void register_atfork(void)
{
    make_cv();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* Post every watched call whose batch has run too long, and give back the
 * slots of calls posted by their callers meanwhile.  Returns whether any
 * slot was taken. */
static int look(uint64_t now)
{
    int any = 0;

    for (size_t i = 0; i < AIOMETER__SENTINEL_SLOTS; i++) {
        uintptr_t v = atomic_load_explicit(&slots[i].call, memory_order_relaxed);
        struct aiometer__call *c;
        uint64_t t0;
        int done = 0;

        if (v == 0)
            continue;
        any = 1;
        /* Acquire: what the caller wrote before taking the slot. */
        if ((v & PINNED) ||
            !atomic_compare_exchange_strong_explicit(&slots[i].call, &v, v | PINNED,
                                                     memory_order_acquire, memory_order_relaxed))
            continue;
        c = (struct aiometer__call *)v;
        t0 = atomic_load_explicit(&c->alone_t0, memory_order_relaxed);
        if (atomic_load_explicit(&c->recruit, memory_order_relaxed) == 0) {
            done = 1; /* posted by its caller already: nothing to watch */
        } else if (t0 != 0 && now - t0 >= AIOMETER__SENTINEL_NS) {
            size_t helpers = atomic_exchange_explicit(&c->recruit, 0, memory_order_relaxed);

            aiometer__call_post(c, helpers);
            done = 1;
        }
        /* Release: the caller's unwatch reads the post after this. */
        atomic_store_explicit(&slots[i].call, done ? 0 : v, memory_order_release);
    }
    return any;
}

static int any_slot_taken(void)
{
    for (size_t i = 0; i < AIOMETER__SENTINEL_SLOTS; i++)
        if (atomic_load(&slots[i].call) != 0)
            return 1;
    return 0;
}

static void *sentinel_main(void *arg)
{
    uint64_t last_busy = aiometer__now_ns();

    (void)arg;
    /* Nobody joins it: it ends by itself (below). */
    pthread_detach(pthread_self());
#if defined(HAVE_SYS_PRCTL_H) && defined(PR_SET_NAME)
    /* Named, so that top -H, gdb and a test that counts threads can tell
     * it from the pool's threads (libaiometer(7)). */
    prctl(PR_SET_NAME, "aio-sentinel", 0, 0, 0);
#endif
    aiometer__lock(&lock);
    while (!stopping) {
        uint64_t now = aiometer__now_ns();
        int any;

        aiometer__unlock(&lock);
        any = look(now);
        if (!any && now - last_busy >= AIOMETER__SENTINEL_DOZE_NS) {
            /* Doze, unless a caller took a slot while seeing LOOKING
             * (see the top of the file). */
            aiometer__lock(&lock);
            atomic_store(&running, DOZING);
            aiometer__unlock(&lock);
            any = any_slot_taken();
            aiometer__lock(&lock);
            if (any) {
                atomic_store(&running, LOOKING);
            } else {
                uint64_t end = last_busy + AIOMETER__SENTINEL_LINGER_NS;

                while (atomic_load(&running) == DOZING && !stopping && aiometer__now_ns() < end)
                    aiometer__cond_wait_until(&cv, &lock, end);
                if (stopping)
                    break;
                if (atomic_load(&running) == DOZING) {
                    /* Nobody came: a caller from now on starts another. */
                    atomic_store(&running, NONE);
                    break;
                }
                /* A caller woke us (start_sentinel): look at once. */
                last_busy = aiometer__now_ns();
                continue;
            }
        } else {
            aiometer__lock(&lock);
        }
        if (any)
            last_busy = now;
        if (stopping)
            break;
        aiometer__cond_wait_until(&cv, &lock, now + AIOMETER__SENTINEL_NS);
    }
    /* Callers from now on post at once (start_sentinel says ESHUTDOWN). */
    if (stopping)
        atomic_store(&running, NONE);
    /* The destructor waits for this. */
    threads--;
    pthread_cond_broadcast(&cv);
    aiometer__unlock(&lock);
    return NULL;
}

/* Make sure a sentinel looks at the slots: 0 or an errno value. */
static int start_sentinel(void)
{
    int err = 0;

    aiometer__lock(&lock);
    if (stopping) {
        err = ESHUTDOWN;
    } else if (atomic_load(&running) == DOZING) {
        atomic_store(&running, LOOKING);
        pthread_cond_broadcast(&cv);
    } else if (atomic_load(&running) == NONE) {
        pthread_t t;

        err = aiometer__thread_create(&t, sentinel_main, NULL);
        if (err == 0) {
            threads++;
            atomic_store(&running, LOOKING);
        }
    }
    aiometer__unlock(&lock);
    return err;
}

int aiometer__sentinel_watch(struct aiometer__call *c)
{
    unsigned first;
    int err;

    pthread_once(&atfork_once, register_atfork);
    atomic_store_explicit(&c->alone_t0, 0, memory_order_relaxed);
    if (!slot_hint)
        slot_hint = atomic_fetch_add_explicit(&next_hint, 1, memory_order_relaxed) %
                        AIOMETER__SENTINEL_SLOTS + 1;
    first = slot_hint - 1;
    for (unsigned k = 0;; k++) {
        unsigned i = (first + k) % AIOMETER__SENTINEL_SLOTS;
        uintptr_t free_word = 0;

        if (k == AIOMETER__SENTINEL_SLOTS)
            return EAGAIN;
        /* Sequentially consistent: ordered before the read of `running`
         * below (see the top of the file). */
        if (atomic_load_explicit(&slots[i].call, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong(&slots[i].call, &free_word, (uintptr_t)c)) {
            c->watch_slot = i;
            slot_hint = i + 1;
            break;
        }
    }
    if (atomic_load(&running) != LOOKING && (err = start_sentinel()) != 0) {
        aiometer__sentinel_unwatch(c);
        return err;
    }
    return 0;
}

void aiometer__sentinel_unwatch(struct aiometer__call *c)
{
    _Atomic uintptr_t *w = &slots[c->watch_slot].call;
    uintptr_t mine = (uintptr_t)c, v = mine;

    /* Acquire: a post by the sentinel happened before it stored 0. */
    while (!atomic_compare_exchange_weak_explicit(w, &v, 0, memory_order_acq_rel,
                                                  memory_order_acquire)) {
        if (v != (mine | PINNED)) {
            /* 0, or another call's since: the sentinel gave the slot
             * back for us. */
            if (v != mine)
                break;
            continue;
        }
        /* Pinned: the sentinel is reading the call; a few instructions
         * unless it is posting it. */
        sched_yield();
        v = mine;
    }
}

/* At exit, the threads are told to stop and waited for, so that leak
 * checkers see no thread at work. */
__attribute__((destructor)) static void sentinel_cleanup(void)
{
    aiometer__lock(&lock);
    stopping = 1;
    while (threads > 0) {
        pthread_cond_broadcast(&cv);
        pthread_cond_wait(&cv, &lock);
    }
    aiometer__unlock(&lock);
}
