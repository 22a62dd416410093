/* pool_impl.h - the pool's struct and what pool.c shares with pool_fork.c;
 * private to those two files (the rest of the library sees pool.h).
 *
 * Lock order: aiometer__default_pool_lock, then the registry's lock
 * (pool_fork.c), then each pool's lock. */
#ifndef AIOMETER__POOL_IMPL_H
#define AIOMETER__POOL_IMPL_H

#include "list.h"
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

/* Locking: lock guards every field that is not atomic, and the node of
 * every task in the queue. */
struct aiometer_pool {
    pthread_mutex_t lock;
    /* Idle workers wait here for a task to help.  Signalled by
     * aiometer__pool_post() (once per helper wanted), broadcast at shutdown. */
    pthread_cond_t work_cv;
    struct aiometer__list queue;        /* tasks that may want helpers */
    pthread_t *threads;           /* max_threads entries, nthreads started */
    size_t max_threads;
    size_t nthreads;
    size_t nidle;                 /* workers waiting on work_cv */
    size_t wakeups;               /* signals sent that no worker has taken yet */
    size_t relay;                 /* of those, left to the next to wake */
    int post_cpu;                 /* the core of the post that left them */
    size_t starting;              /* started, not yet looking for work */
    int start_failed;             /* the last thread start failed (EAGAIN
                                   * from RLIMIT_NPROC, say): cleared by the
                                   * next one that works */
    int shutdown;
    int is_default;
    unsigned long timer_slack_ns; /* set on each worker; 0: leave it */
    atomic_size_t calls;          /* calls in flight: destroy says EBUSY */
    /* The registry of all pools, for fork; guarded by registry_lock. */
    struct aiometer__list reg;
};

/* Held while the default pool is made (pool.c) and across fork(). */
extern pthread_mutex_t aiometer__default_pool_lock;
/* The pool of this worker thread, for aiometer__pool_worker_lost(). */
extern _Thread_local aiometer_pool *aiometer__worker_pool;

/* Every pool is in the registry from its creation to its end, so that
 * fork() can put them right in the child; the first registration installs
 * the fork handlers. */
void aiometer__pool_register(aiometer_pool *p);
void aiometer__pool_unregister(aiometer_pool *p);

#endif
