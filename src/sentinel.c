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
 * The sentinel costs nothing while no call is alone: it exists only from
 * the first caller that goes alone until AIOMETER__SENTINEL_LINGER_NS after
 * the last one left, and meanwhile looks every AIOMETER__SENTINEL_NS (a
 * hundred short wake-ups a second).
 * A caller never wakes it: back-to-back calls pay no system call, and a
 * caller after a quiet second pays for starting it.  No thread is left
 * behind in a process that has stopped calling.
 *
 * Lifetime: a call is on the list from aiometer__sentinel_watch() to
 * aiometer__sentinel_unwatch(), which its caller calls before it waits for
 * the call's end; the sentinel touches a call only under the lock and only
 * while it is listed, so it never posts a call that has ended.  The
 * caller's reads of what aiometer__call_post writes (posted, caller_runs)
 * come after unwatch, whose lock orders them after the sentinel's post. */
#include "config.h"
#include "call.h"
#include "clock.h"
#include "list.h"
#include "syscalls.h"

#include <errno.h>
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
/* How long the sentinel keeps looking after the last call left. */
#define AIOMETER__SENTINEL_LINGER_NS 1000000000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct aiometer__list calls = { &calls, &calls };
static int started;  /* the thread runs (in this process) and looks */
static int stopping; /* the process is ending: the thread returns */
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
 * listed belong to threads that do not exist here.  The condition variable
 * is made anew: the parent's sentinel may have been waiting on it, and a
 * waiter that does not exist here would hold up every broadcast (a forked
 * child hung in exit that way, in rel_stress). */
static void fork_child(void)
{
    aiometer__list_init(&calls);
    started = 0;
    make_cv();
    aiometer__unlock(&lock);
}

static void register_atfork(void)
{
    make_cv();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* Post every listed call whose batch has run too long; with the lock. */
static void look(uint64_t now)
{
    struct aiometer__list *n, *next;

    for (n = calls.next; n != &calls; n = next) {
        struct aiometer__call *c = aiometer__list_entry(n, struct aiometer__call, watch);
        uint64_t t0 = atomic_load_explicit(&c->alone_t0, memory_order_relaxed);
        size_t helpers;

        next = n->next;
        if (atomic_load_explicit(&c->recruit, memory_order_relaxed) == 0) {
            /* Posted by its caller already: nothing left to watch. */
            aiometer__list_remove(n);
            continue;
        }
        if (t0 == 0 || now - t0 < AIOMETER__SENTINEL_NS)
            continue;
        aiometer__list_remove(n);
        helpers = atomic_exchange_explicit(&c->recruit, 0, memory_order_relaxed);
        aiometer__call_post(c, helpers);
    }
}

static void *sentinel_main(void *arg)
{
    uint64_t last_busy = aiometer__now_ns();

    (void)arg;
    /* Nobody joins it: it ends by itself (below). */
    pthread_detach(pthread_self());
    aiometer__lock(&lock);
    while (!stopping) {
        uint64_t now = aiometer__now_ns();

        if (!aiometer__list_empty(&calls)) {
            last_busy = now;
            look(now);
        } else if (now - last_busy >= AIOMETER__SENTINEL_LINGER_NS) {
            break;
        }
        aiometer__cond_wait_until(&cv, &lock, now + AIOMETER__SENTINEL_NS);
    }
    /* The next caller to go alone starts another; the destructor waits
     * for this. */
    started = 0;
    pthread_cond_broadcast(&cv);
    aiometer__unlock(&lock);
    return NULL;
}

int aiometer__sentinel_watch(struct aiometer__call *c)
{
    int err = 0;

    pthread_once(&atfork_once, register_atfork);
    atomic_store_explicit(&c->alone_t0, 0, memory_order_relaxed);
    aiometer__lock(&lock);
    if (!started && !stopping) {
        pthread_t t;

        err = aiometer__thread_create(&t, sentinel_main, NULL);
        started = err == 0;
    }
    if (started) {
        aiometer__list_append(&calls, &c->watch);
    } else if (!err) {
        err = ESHUTDOWN;
    }
    aiometer__unlock(&lock);
    return err;
}

void aiometer__sentinel_unwatch(struct aiometer__call *c)
{
    aiometer__lock(&lock);
    if (aiometer__list_linked(&c->watch))
        aiometer__list_remove(&c->watch);
    aiometer__unlock(&lock);
}

/* At exit, the thread is told to stop and waited for, so that leak
 * checkers see no thread at work. */
__attribute__((destructor)) static void sentinel_cleanup(void)
{
    aiometer__lock(&lock);
    stopping = 1;
    while (started) {
        pthread_cond_broadcast(&cv);
        pthread_cond_wait(&cv, &lock);
    }
    aiometer__unlock(&lock);
}
