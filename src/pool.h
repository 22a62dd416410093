/* pool.h - the fixed pool of worker threads (the card's "pool").
 *
 * A pool has at most max_threads threads, started when first needed and kept
 * until it is destroyed.  Its queue holds tasks (calls), not jobs: a call
 * that wants helpers is queued, and idle threads join it (up to its own
 * limit of places) and claim its jobs themselves.  So the queue is bounded
 * by the number of calls in flight and costs no allocation per job.  The
 * pool sees a call only through the task interface (task.h).
 *
 * Lock order: the pool's lock before a call's lock, never after.  The
 * pool's struct is private to pool.c. */
#ifndef AIOMETER__POOL_H
#define AIOMETER__POOL_H

#include "aiometer.h"
#include "task.h"

#include <stddef.h>

/* Nonzero on the pool's own worker threads (their timer slack is set). */
extern _Thread_local int aiometer__on_worker;

/* The pool a call runs on: p itself, or the default pool for NULL (made on
 * first use).  0, ENOMEM or EAGAIN. */
int aiometer__pool_resolve(aiometer_pool *p, aiometer_pool **out);

/* How many threads the pool may have. */
size_t aiometer__pool_size(const aiometer_pool *p);

/* The timer slack the pool's workers sleep with (0: the kernel's own). */
unsigned long aiometer__pool_timer_slack(const aiometer_pool *p);

/* A call starts or ends on the pool: while any is in flight,
 * aiometer_pool_destroy says EBUSY. */
void aiometer__pool_hold(aiometer_pool *p);
void aiometer__pool_release(aiometer_pool *p);

/* Queue t and make sure up to `helpers` workers come: wake idle ones, start
 * new ones within the pool's size.  Returns how many threads the pool has,
 * so a caller can tell a pool that could start none. */
size_t aiometer__pool_post(aiometer_pool *p, struct aiometer__task *t, size_t helpers);

/* True when no helper can come until a running job ends: no thread is
 * idle or on its way (just started), and the pool either has every thread
 * it may have or could not start the last one it tried. */
int aiometer__pool_saturated(aiometer_pool *p);

/* Called on a pool thread that is ending inside a job (pthread_exit), before
 * it leaves its task: the pool forgets it (it is detached, never joined)
 * and starts another when next it needs one. */
void aiometer__pool_worker_lost(void);

/* Take t out of the queue, if it is there: no worker joins it afterwards. */
void aiometer__pool_unlink(aiometer_pool *p, struct aiometer__task *t);

#endif
