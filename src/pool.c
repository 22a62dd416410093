/* pool.c - worker threads, the pool's list of calls, the default pool, and
 * what happens to pools across fork(). */
#include "config.h"
#include "pool.h"
#include "call.h"
#include "sync.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif

/* Workers sleep with 1 ns of timer slack by default: a rate wait or a job's
 * nanosleep then ends within microseconds of its time instead of the 50 us
 * the kernel allows by default.  AIOMETER_TIMER_SLACK_NS overrides it (0
 * leaves the kernel's default alone). */
#define AIO_DEFAULT_TIMER_SLACK_NS 1UL

/* Every pool, so that fork() can put them right in the child.  Lock order:
 * default_lock, then registry_lock, then each pool's lock. */
static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static aiometer_pool *registry;
static aiometer_pool *_Atomic default_pool;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

_Thread_local int aio_on_worker;
/* The pool of this worker thread, for aio_pool_worker_lost(). */
static _Thread_local aiometer_pool *worker_pool;

/* ---- the list of calls (pool->lock held) ---------------------------------------- */

static void list_unlink(aiometer_pool *p, struct aio_call *c)
{
    if (!c->queued)
        return;
    if (c->q_prev)
        c->q_prev->q_next = c->q_next;
    else
        p->head = c->q_next;
    if (c->q_next)
        c->q_next->q_prev = c->q_prev;
    else
        p->tail = c->q_prev;
    c->q_prev = c->q_next = NULL;
    c->queued = 0;
}

static void list_append(aiometer_pool *p, struct aio_call *c)
{
    if (c->queued)
        return;
    c->q_next = NULL;
    c->q_prev = p->tail;
    if (p->tail)
        p->tail->q_next = c;
    else
        p->head = c;
    p->tail = c;
    c->queued = 1;
}

/* A call this worker can help with, joined; or NULL.  Calls with nothing
 * left to claim are dropped from the list on the way. */
static struct aio_call *pick_call(aiometer_pool *p)
{
    struct aio_call *c = p->head, *next;

    for (; c; c = next) {
        next = c->q_next;
        if (!aio_call_has_work(c)) {
            list_unlink(p, c);
            continue;
        }
        if (aio_call_join(c))
            return c;
    }
    return NULL;
}

/* ---- workers ---------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    aiometer_pool *p = arg;
    struct aio_call *c;
    int cs;

    aio_on_worker = 1;
    worker_pool = p;
    /* A pool thread belongs to the library: pthread_cancel must not cut
     * one short in the middle of a call (see aio_nocancel_begin). */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
#if defined(HAVE_SYS_PRCTL_H) && defined(PR_SET_TIMERSLACK)
    if (p->timer_slack_ns)
        prctl(PR_SET_TIMERSLACK, p->timer_slack_ns, 0, 0, 0);
#endif
    aio_lock(&p->lock);
    while (!p->shutdown) {
        c = pick_call(p);
        if (!c) {
            /* Wait for aio_pool_post() or shutdown; the loop re-checks
             * both, so spurious wake-ups are harmless. */
            p->nidle++;
            pthread_cond_wait(&p->work_cv, &p->lock);
            p->nidle--;
            if (p->wakeups)
                p->wakeups--;
            continue;
        }
        aio_unlock(&p->lock);
        /* Joined: the call cannot end before we leave it. */
        aio_call_work(c, 0);
        aio_call_leave(c);
        aio_lock(&p->lock);
    }
    aio_unlock(&p->lock);
    return NULL;
}

size_t aio_pool_post(aiometer_pool *p, struct aio_call *c, size_t helpers)
{
    size_t spare, start, wake, have;

    aio_lock(&p->lock);
    list_append(p, c);
    /* Idle workers not already woken for another call can come at once;
     * start new threads for the rest, within the pool's size. */
    spare = p->nidle > p->wakeups ? p->nidle - p->wakeups : 0;
    start = helpers > spare ? helpers - spare : 0;
    if (start > p->max_threads - p->nthreads)
        start = p->max_threads - p->nthreads;
    while (start--) {
        /* A thread that cannot be started is not an error while the pool
         * has others (or the caller) to run the jobs. */
        if (aio_thread_create(&p->threads[p->nthreads], worker_main, p) != 0) {
            p->start_failed = 1;
            break;
        }
        p->start_failed = 0;
        p->nthreads++;
    }
    wake = helpers < spare ? helpers : spare;
    p->wakeups += wake;
    have = p->nthreads;
    aio_unlock(&p->lock);
    /* Wake after unlocking: a woken worker's first act is to take the lock,
     * and would otherwise block on it and need a second wake-up.  The
     * waiters counted in `spare` are inside pthread_cond_wait (they went in
     * under the lock), so none can miss this. */
    if (wake == spare && wake > 0) {
        pthread_cond_broadcast(&p->work_cv);
    } else {
        for (size_t i = 0; i < wake; i++)
            pthread_cond_signal(&p->work_cv);
    }
    return have;
}

void aio_pool_worker_lost(void)
{
    aiometer_pool *p = worker_pool;
    pthread_t self = pthread_self();

    if (!p)
        return;
    /* The pool cannot be freed meanwhile: this thread is still a
     * participant of one of its calls. */
    aio_lock(&p->lock);
    for (size_t i = 0; i < p->nthreads; i++) {
        if (pthread_equal(p->threads[i], self)) {
            p->threads[i] = p->threads[--p->nthreads];
            pthread_detach(self);
            break;
        }
    }
    aio_unlock(&p->lock);
    worker_pool = NULL;
    aio_on_worker = 0;
}

int aio_pool_saturated(aiometer_pool *p)
{
    int busy;

    aio_lock(&p->lock);
    /* A pool that cannot grow is as full as one that may not: a caller with
     * a deadline that waited for a thread that cannot start would make no
     * progress until its deadline. */
    busy = (p->nthreads >= p->max_threads || p->start_failed) && p->nidle <= p->wakeups;
    aio_unlock(&p->lock);
    return busy;
}

void aio_pool_unlink(aiometer_pool *p, struct aio_call *c)
{
    aio_lock(&p->lock);
    list_unlink(p, c);
    aio_unlock(&p->lock);
}

/* ---- fork ---------------------------------------------------------------- */

static void fork_prepare(void)
{
    aio_lock(&default_lock);
    aio_lock(&registry_lock);
    for (aiometer_pool *p = registry; p; p = p->reg_next)
        aio_lock(&p->lock);
}

static void fork_parent(void)
{
    for (aiometer_pool *p = registry; p; p = p->reg_next)
        aio_unlock(&p->lock);
    aio_unlock(&registry_lock);
    aio_unlock(&default_lock);
}

/* The child has only the thread that forked.  Each pool forgets the threads
 * and calls it had (they are not here: joining them would hang), and starts
 * new threads when next used, as a fresh pool would. */
static void fork_child(void)
{
    /* The forking thread may have been inside a job, even a pool thread's:
     * in the child it is neither, or aiometer_sleep would poll a cancel
     * descriptor it shares with the parent while reading its own stale copy
     * of the call's state, and spin once the parent's call stops. */
    aio_on_worker = 0;
    worker_pool = NULL;
    aio_call_atfork_child();
    for (aiometer_pool *p = registry; p; p = p->reg_next) {
        p->head = p->tail = NULL;
        p->nthreads = p->nidle = p->wakeups = 0;
        p->start_failed = 0;
        atomic_store(&p->calls, 0);
        /* Waiters on work_cv vanished with their threads; start it anew. */
        memset(&p->work_cv, 0, sizeof(p->work_cv));
        if (aio_cond_init(&p->work_cv) != 0)
            abort();
        aio_unlock(&p->lock);
    }
    aio_unlock(&registry_lock);
    aio_unlock(&default_lock);
}

static void register_atfork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ---- creating and destroying ---------------------------------------------------- */

static unsigned long timer_slack_from_env(void)
{
    const char *s = getenv("AIOMETER_TIMER_SLACK_NS");
    char *end;
    unsigned long v;

    if (!s || !*s)
        return AIO_DEFAULT_TIMER_SLACK_NS;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end)
        return AIO_DEFAULT_TIMER_SLACK_NS;
    return v;
}

static int pool_new(aiometer_pool **out, size_t threads, int is_default)
{
    aiometer_pool *p;
    int err;

    pthread_once(&atfork_once, register_atfork);
    p = aio_calloc(1, sizeof(*p));
    if (!p)
        return ENOMEM;
    p->threads = aio_calloc(threads, sizeof(*p->threads));
    if (!p->threads) {
        aio_free(p);
        return ENOMEM;
    }
    err = aio_mutex_init(&p->lock);
    if (err)
        goto fail_lock;
    err = aio_cond_init(&p->work_cv);
    if (err)
        goto fail_cv;
    p->max_threads = threads;
    p->is_default = is_default;
    p->timer_slack_ns = timer_slack_from_env();
    atomic_init(&p->calls, 0);

    aio_lock(&registry_lock);
    p->reg_next = registry;
    if (registry)
        registry->reg_prev = p;
    registry = p;
    aio_unlock(&registry_lock);
    *out = p;
    return 0;

fail_cv:
    pthread_mutex_destroy(&p->lock);
fail_lock:
    aio_free(p->threads);
    aio_free(p);
    return err == ENOMEM ? ENOMEM : EAGAIN;
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
    aio_lock(&p->lock);
    p->shutdown = 1;
    pthread_cond_broadcast(&p->work_cv);
    aio_unlock(&p->lock);
    /* nthreads cannot grow now: posting needs a call in flight. */
    for (size_t i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);

    aio_lock(&registry_lock);
    if (p->reg_prev)
        p->reg_prev->reg_next = p->reg_next;
    else
        registry = p->reg_next;
    if (p->reg_next)
        p->reg_next->reg_prev = p->reg_prev;
    aio_unlock(&registry_lock);

    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->lock);
    aio_free(p->threads);
    aio_free(p);
}

int aiometer_pool_destroy(aiometer_pool *pool)
{
    int cs;

    if (!pool || pool->is_default)
        return EINVAL;
    aio_lock(&pool->lock);
    if (atomic_load(&pool->calls) != 0) {
        aio_unlock(&pool->lock);
        return EBUSY;
    }
    aio_unlock(&pool->lock);
    /* Joining the threads must not be cut short half-way. */
    cs = aio_nocancel_begin();
    pool_free(pool);
    aio_nocancel_end(cs, 1);
    return 0;
}

static size_t default_size(void)
{
    const char *s = getenv("AIOMETER_THREADS");
    char *end;
    unsigned long v;

    if (!s || !*s)
        return AIOMETER_DEFAULT_THREADS;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v == 0 || v > AIOMETER_MAX_THREADS)
        return AIOMETER_DEFAULT_THREADS;
    return (size_t)v;
}

int aio_pool_resolve(aiometer_pool *p, aiometer_pool **out)
{
    int err = 0;

    if (p) {
        *out = p;
        return 0;
    }
    p = atomic_load_explicit(&default_pool, memory_order_acquire);
    if (!p) {
        aio_lock(&default_lock);
        p = atomic_load_explicit(&default_pool, memory_order_relaxed);
        if (!p) {
            err = pool_new(&p, default_size(), 1);
            if (!err)
                atomic_store_explicit(&default_pool, p, memory_order_release);
        }
        aio_unlock(&default_lock);
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
