/* pool.c - worker threads, the pool's queue of tasks and the default pool
 * (what happens to pools across fork() is in pool_fork.c). */
#include "config.h"
#include "pool.h"
#include "pool_impl.h"
#include "syscalls.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif

/* Workers sleep with 1 ns of timer slack by default: a rate wait or a job's
 * nanosleep then ends within microseconds of its time instead of the 50 us
 * the kernel allows by default.  AIOMETER_TIMER_SLACK_NS overrides it (0
 * leaves the kernel's default alone). */
#define AIOMETER__DEFAULT_TIMER_SLACK_NS 1UL

/* Guards making the default pool (lock order: pool_impl.h). */
pthread_mutex_t aiometer__default_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static aiometer_pool *_Atomic default_pool;

_Thread_local int aiometer__on_worker;
_Thread_local aiometer_pool *aiometer__worker_pool;

/* ---- the queue of tasks (pool->lock held) -------------------------------------- */

/* A task this worker can help with, joined; or NULL.  Tasks with nothing
 * left to take are dropped from the queue on the way. */
static struct aiometer__task *pick_task(aiometer_pool *p)
{
    struct aiometer__list *n, *next;

    for (n = p->queue.next; n != &p->queue; n = next) {
        struct aiometer__task *t = aiometer__list_entry(n, struct aiometer__task, node);
        next = n->next;
        if (!t->ops->has_work(t)) {
            aiometer__list_remove(n);
            continue;
        }
        if (t->ops->join(t))
            return t;
    }
    return NULL;
}

/* ---- workers ---------------------------------------------------------------- */

/* Send the wake-ups aiometer__pool_post left to the next worker here (lock
 * held; dropped while signalling).  On the poster's core, it yields once
 * first: it preempted the poster, a caller that would otherwise start its
 * first job only after all these wake-ups (bench/README, W5). */
static void relay_wakeups(aiometer_pool *p)
{
    size_t n = p->relay;
    int all = n >= p->nidle, yield = p->post_cpu >= 0 && p->post_cpu == aiometer__current_cpu();

    p->relay = 0;
    aiometer__unlock(&p->lock);
    if (yield)
        sched_yield();
    if (all)
        pthread_cond_broadcast(&p->work_cv);
    else
        while (n--)
            pthread_cond_signal(&p->work_cv);
    aiometer__lock(&p->lock);
}

static void *worker_main(void *arg)
{
    aiometer_pool *p = arg;
    struct aiometer__task *t;
    int cs;

    aiometer__on_worker = 1;
    aiometer__worker_pool = p;
    /* A pool thread belongs to the library: pthread_cancel must not cut
     * one short in the middle of a call (see aiometer__nocancel_begin). */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
#if defined(HAVE_SYS_PRCTL_H) && defined(PR_SET_TIMERSLACK)
    if (p->timer_slack_ns)
        prctl(PR_SET_TIMERSLACK, p->timer_slack_ns, 0, 0, 0);
#endif
    aiometer__lock(&p->lock);
    p->starting--;
    while (!p->shutdown) {
        if (p->relay) {
            relay_wakeups(p);
            continue; /* the lock was dropped: look at shutdown again */
        }
        t = pick_task(p);
        if (!t) {
            /* Wait for aiometer__pool_post() or shutdown; the loop re-checks
             * both, so spurious wake-ups are harmless. */
            p->nidle++;
            pthread_cond_wait(&p->work_cv, &p->lock);
            p->nidle--;
            if (p->wakeups)
                p->wakeups--;
            continue;
        }
        aiometer__unlock(&p->lock);
        /* Joined: the task cannot end before we leave it. */
        t->ops->work(t);
        t->ops->leave(t);
        aiometer__lock(&p->lock);
    }
    aiometer__unlock(&p->lock);
    return NULL;
}

size_t aiometer__pool_post(aiometer_pool *p, struct aiometer__task *t, size_t helpers)
{
    size_t spare, start, wake, have;

    aiometer__lock(&p->lock);
    if (!aiometer__list_linked(&t->node))
        aiometer__list_append(&p->queue, &t->node);
    /* Idle workers not already woken for another call can come at once;
     * start new threads for the rest, within the pool's size. */
    spare = p->nidle > p->wakeups ? p->nidle - p->wakeups : 0;
    start = helpers > spare ? helpers - spare : 0;
    if (start > p->max_threads - p->nthreads)
        start = p->max_threads - p->nthreads;
    while (start--) {
        /* A thread that cannot be started is not an error while the pool
         * has others (or the caller) to run the jobs. */
        if (aiometer__thread_create(&p->threads[p->nthreads], worker_main, p) != 0) {
            p->start_failed = 1;
            break;
        }
        p->start_failed = 0;
        p->nthreads++;
        p->starting++;
    }
    wake = helpers < spare ? helpers : spare;
    p->wakeups += wake;
    /* One wake-up now, the rest from that worker (relay_wakeups). */
    if (wake > 1) {
        p->relay += wake - 1;
        p->post_cpu = aiometer__current_cpu();
        wake = 1;
    }
    have = p->nthreads;
    aiometer__unlock(&p->lock);
    /* Wake after unlocking: a woken worker's first act is to take the lock,
     * and would otherwise block on it and need a second wake-up.  The
     * waiters counted in `spare` are inside pthread_cond_wait (they went in
     * under the lock), so none can miss this. */
    if (wake)
        pthread_cond_signal(&p->work_cv);
    return have;
}

int aiometer__pool_saturated(aiometer_pool *p)
{
    int busy;

    aiometer__lock(&p->lock);
    /* A pool that cannot grow is as full as one that may not: a caller with
     * a deadline that waited for a thread that cannot start would make no
     * progress until its deadline. */
    busy = (p->nthreads >= p->max_threads || p->start_failed) && p->nidle <= p->wakeups &&
           p->starting == 0;
    aiometer__unlock(&p->lock);
    return busy;
}

void aiometer__pool_worker_lost(void)
{
    aiometer_pool *p = aiometer__worker_pool;
    pthread_t self = pthread_self();

    if (!p)
        return;
    /* The pool cannot be freed meanwhile: this thread is still a helper of
     * one of its tasks. */
    aiometer__lock(&p->lock);
    for (size_t i = 0; i < p->nthreads; i++) {
        if (pthread_equal(p->threads[i], self)) {
            p->threads[i] = p->threads[--p->nthreads];
            pthread_detach(self);
            break;
        }
    }
    aiometer__unlock(&p->lock);
    aiometer__worker_pool = NULL;
    aiometer__on_worker = 0;
}

void aiometer__pool_unlink(aiometer_pool *p, struct aiometer__task *t)
{
    aiometer__lock(&p->lock);
    if (aiometer__list_linked(&t->node))
        aiometer__list_remove(&t->node);
    aiometer__unlock(&p->lock);
}

size_t aiometer__pool_size(const aiometer_pool *p)
{
    return p->max_threads;
}

unsigned long aiometer__pool_timer_slack(const aiometer_pool *p)
{
    return p->timer_slack_ns;
}

void aiometer__pool_hold(aiometer_pool *p)
{
    atomic_fetch_add(&p->calls, 1);
}

void aiometer__pool_release(aiometer_pool *p)
{
    atomic_fetch_sub(&p->calls, 1);
}

/* ---- creating and destroying ---------------------------------------------------- */

/* The environment variable `name` as a number in [min, max], or dflt when
 * it is unset or anything else. */
static unsigned long env_number(const char *name, unsigned long dflt, unsigned long min,
                                unsigned long max)
{
    const char *s = getenv(name);
    char *end;
    unsigned long v;

    if (!s || !*s)
        return dflt;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return dflt;
    return v;
}

static int pool_new(aiometer_pool **out, size_t threads, int is_default)
{
    aiometer_pool *p;
    int err;

    p = aiometer__calloc(1, sizeof(*p));
    if (!p)
        return ENOMEM;
    p->threads = aiometer__calloc(threads, sizeof(*p->threads));
    if (!p->threads) {
        aiometer__free(p);
        return ENOMEM;
    }
    {
        pthread_cond_t *const cvs[] = { &p->work_cv };
        err = aiometer__sync_init(&p->lock, cvs, 1);
    }
    if (err) {
        aiometer__free(p->threads);
        aiometer__free(p);
        return err;
    }
    aiometer__list_init(&p->queue);
    p->post_cpu = -1;
    p->max_threads = threads;
    p->is_default = is_default;
    p->timer_slack_ns = env_number("AIOMETER_TIMER_SLACK_NS", AIOMETER__DEFAULT_TIMER_SLACK_NS, 0,
                                   ULONG_MAX);
    atomic_init(&p->calls, 0);

    aiometer__pool_register(p);
    *out = p;
    return 0;
}

int aiometer_pool_create(aiometer_pool **pool, size_t threads)
{
    if (!pool || threads == 0 || threads > AIOMETER_MAX_THREADS)
        return EINVAL;
    return pool_new(pool, threads, 0);
}

/* Stop the workers and free the pool; the caller has checked it is idle. */
static void pool_free(aiometer_pool *p)
{
    aiometer__lock(&p->lock);
    p->shutdown = 1;
    pthread_cond_broadcast(&p->work_cv);
    aiometer__unlock(&p->lock);
    /* nthreads cannot grow now: posting needs a call in flight. */
    for (size_t i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);

    aiometer__pool_unregister(p);

    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->lock);
    aiometer__free(p->threads);
    aiometer__free(p);
}

int aiometer_pool_destroy(aiometer_pool *pool)
{
    int cs;

    if (!pool || pool->is_default)
        return EINVAL;
    aiometer__lock(&pool->lock);
    if (atomic_load(&pool->calls) != 0) {
        aiometer__unlock(&pool->lock);
        return EBUSY;
    }
    aiometer__unlock(&pool->lock);
    /* Joining the threads must not be cut short half-way. */
    cs = aiometer__nocancel_begin();
    pool_free(pool);
    aiometer__nocancel_end(cs, 1);
    return 0;
}

static size_t default_size(void)
{
    return env_number("AIOMETER_THREADS", AIOMETER_DEFAULT_THREADS, 1, AIOMETER_MAX_THREADS);
}

int aiometer__pool_resolve(aiometer_pool *p, aiometer_pool **out)
{
    int err = 0;

    if (p) {
        *out = p;
        return 0;
    }
    p = atomic_load_explicit(&default_pool, memory_order_acquire);
    if (!p) {
        aiometer__lock(&aiometer__default_pool_lock);
        /* Relaxed: the lock orders this load after any store made
         * under it. */
        p = atomic_load_explicit(&default_pool, memory_order_relaxed);
        if (!p) {
            err = pool_new(&p, default_size(), 1);
            if (!err)
                atomic_store_explicit(&default_pool, p, memory_order_release);
        }
        aiometer__unlock(&aiometer__default_pool_lock);
    }
    *out = p;
    return err;
}

size_t aiometer_pool_threads(const aiometer_pool *pool)
{
    aiometer_pool *d;

    if (pool)
        return pool->max_threads;
    d = atomic_load(&default_pool);
    return d ? d->max_threads : default_size();
}

/* At exit (or when the library is unloaded), stop the default pool's
 * threads if it is idle, so that leak checkers see a clean exit.  A pool
 * with calls in flight is left alone: its threads are busy in user code. */
__attribute__((destructor)) static void default_pool_cleanup(void)
{
    aiometer_pool *p = atomic_load(&default_pool);

    if (!p || atomic_load(&p->calls) != 0)
        return;
    atomic_store(&default_pool, NULL);
    pool_free(p);
}
