/* task.h - what the pool knows of the work it is given.
 *
 * The pool runs tasks, not jobs: a task is something that wants helpers
 * (today always a call, which embeds one) and knows how many may help at
 * once.  A worker asks a queued task whether it still has work, joins it if
 * a place is free, works on it and leaves, and that is all it knows of it,
 * as libuv's workers know only w->work(w).  So pool.c needs no call.h, and
 * a call's layout can change without touching the pool. */
#ifndef AIOMETER__TASK_H
#define AIOMETER__TASK_H

#include "list.h"

struct aiometer__task;

struct aiometer__task_ops {
    /* True while the task has work a new helper could take. */
    int (*has_work)(struct aiometer__task *t);
    /* Take a helper's place: 1, or 0 when every place is taken.  Between a
     * successful join and the matching leave the task cannot end. */
    int (*join)(struct aiometer__task *t);
    /* Work until nothing is left to take, then leave(). */
    void (*work)(struct aiometer__task *t);
    void (*leave)(struct aiometer__task *t);
};

struct aiometer__task {
    const struct aiometer__task_ops *ops;
    /* The pool's queue of tasks that may want helpers: guarded by the
     * pool's lock, on no list (aiometer__list_init) while not queued. */
    struct aiometer__list node;
};

#endif
