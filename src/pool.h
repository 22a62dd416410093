/* pool.h - the fixed pool of worker threads.
 *
 * A pool has at most max_threads threads, started when first needed and kept
 * until it is destroyed.  Its queue holds calls, not jobs: a call that wants
 * helpers is linked into the pool's list, and idle threads join it (up to its
 * slot count) and claim its jobs themselves.  So the queue is bounded by the
 * number of calls in flight and costs no allocation per job.
 *
 * Locking: pool->lock guards every field below that is not atomic, and the
 * q_prev/q_next/queued fields of the calls in the list.  It is taken before
 * a call's lock, never after. */
#ifndef AIO_POOL_H
#define AIO_POOL_H

#include "aiometer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

struct aio_call;

struct aiometer_pool {
    pthread_mutex_t lock;
    /* Idle workers wait here for a call to help.  Signalled by
     * aio_pool_post() (once per helper wanted), broadcast at shutdown. */
    pthread_cond_t work_cv;
    struct aio_call *head, *tail; /* calls that may want helpers */
    pthread_t *threads;           /* max_threads entries, nthreads started */
    size_t max_threads;
    size_t nthreads;
    size_t nidle;                 /* workers waiting on work_cv */
    size_t wakeups;               /* signals sent that no worker has taken yet */
    int start_failed;             /* the last thread start failed (EAGAIN
                                   * from RLIMIT_NPROC, say): cleared by the
                                   * next one that works */
    int shutdown;
    int is_default;
    unsigned long timer_slack_ns; /* set on each worker; 0: leave it */
    atomic_size_t calls;          /* calls in flight: destroy says EBUSY */
    /* The registry of all pools, for fork; guarded by the registry lock. */
    struct aiometer_pool *reg_prev, *reg_next;
};

/* Nonzero on the pool's own worker threads (their timer slack is set). */
extern _Thread_local int aio_on_worker;

/* The pool a call runs on: p itself, or the default pool for NULL (made on
 * first use).  0, ENOMEM or EAGAIN. */
int aio_pool_resolve(aiometer_pool *p, aiometer_pool **out);

/* Link c into the pool's list and make sure up to `helpers` workers come:
 * wake idle ones, start new ones within max_threads.  Returns how many
 * threads the pool has, so a caller can tell a pool that could start none. */
size_t aio_pool_post(aiometer_pool *p, struct aio_call *c, size_t helpers);

/* True when no helper can come until a running job ends: no thread is
 * idle, and the pool either has every thread it may have or could not
 * start the last one it tried. */
int aio_pool_saturated(aiometer_pool *p);

/* Called on a pool thread that is ending inside a job (pthread_exit): the
 * pool forgets it (it is detached, never joined) and starts another when
 * next it needs one. */
void aio_pool_worker_lost(void);

/* Take c out of the list, if it is there: no worker joins it afterwards. */
void aio_pool_unlink(aiometer_pool *p, struct aio_call *c);

#endif
