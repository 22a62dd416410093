/* call.h - one call of an entry point: its jobs, its state, and the loop in
 * which threads run its jobs.
 *
 * A call lives on its caller's stack (run_*) or in the amap iterator.  The
 * pool's threads that help with it, and the caller itself, are its
 * "participants"; there are never more than `slots` of them, and since each
 * runs one job at a time, that is what makes max_at_once exact.
 *
 * Participants claim job indices lock-free from the atomic counter `next`,
 * several at a time when jobs are tiny (see aio_call_work), so the per-job
 * path takes no lock and allocates nothing.  Locks are taken only on the slow
 * paths: joining and leaving, failure and cancellation, rate waits, amap's
 * completion queue, and lazy sources.
 *
 * Lock order: pool->lock before call->lock, and call->source_lock before
 * call->lock; never the other way round. */
#ifndef AIO_CALL_H
#define AIO_CALL_H

#include "aiometer.h"
#include "completion.h"
#include "limiter.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

enum aio_mode {
    AIO_MODE_EACH,  /* run_on_each: results dropped */
    AIO_MODE_ALL,   /* run_all: results[i] */
    AIO_MODE_ANY,   /* run_any: first success wins */
    AIO_MODE_STREAM /* amap: the completion queue */
};

/* Why a call stopped starting jobs.  Set once, never cleared. */
enum aio_stop {
    AIO_GOING = 0,
    AIO_STOP_FAILED,    /* a job failed (or the source did) */
    AIO_STOP_CANCELLED, /* aiometer_amap_cancel */
    AIO_STOP_TIMEOUT,   /* opts.timeout passed */
    AIO_STOP_WON        /* run_any has its winner */
};

struct aio_call {
    /* Set before the call is shared; read-only afterwards. */
    struct aiometer_pool *pool;
    int mode;
    const aiometer_job *jobs;
    aiometer_fn fn;
    void *const *args;
    aiometer_source_fn source;
    void *source_state;
    void **results;
    size_t n;             /* jobs in the call; SIZE_MAX for a source */
    size_t slots;         /* most participants at once */
    int caller_runs;      /* the caller works on the call while it waits */
    int has_rate;         /* own_rate is in use */
    struct aio_gcra own_rate;
    struct aiometer_limiter *shared; /* opts.limiter */
    int capped;           /* shared has a running cap */
    uint64_t deadline;    /* AIO_NEVER: none */
    uint64_t t_start;     /* 0 unless timing was asked for */
    aiometer_progress_fn progress;
    void *progress_arg;
    uint64_t progress_every;
    aiometer_stats *stats_out;
    struct aio_cq *cq;    /* AIO_MODE_STREAM only */

    /* Read and written lock-free. */
    atomic_size_t next;          /* array input: next index to claim */
    atomic_int stop;             /* enum aio_stop; written under lock */
    atomic_int source_done;      /* the source said AIOMETER_DONE or failed */
    atomic_size_t participants;  /* threads working on the call now */
    atomic_size_t winner;        /* run_any: the winning index, or SIZE_MAX */
    atomic_int efd_pub;          /* efd once made (published under lock), -1 */

    /* Held while a lazy source is called, so that calls to it are never
     * concurrent, and while `pulled` grows; never while waiting for room,
     * which the amap consumer (who may need it to claim) makes. */
    pthread_mutex_t source_lock;

    /* Guarded by lock. */
    pthread_mutex_t lock;
    /* done_cv: the caller waits for the participants to leave, the amap
     * consumer for a result.  Signalled by the last participant to leave,
     * by every push to the completion queue while someone waits, and by a
     * stop. */
    pthread_cond_t done_cv;
    /* stop_cv: jobs in aiometer_sleep and participants waiting for the rate
     * wait here, with a deadline.  Broadcast when the call stops. */
    pthread_cond_t stop_cv;
    /* space_cv: participants of an amap whose window is full.  Broadcast
     * when the consumer has freed half the window, at close, and at stop. */
    pthread_cond_t space_cv;
    int err;              /* first failure's error (0: none) */
    size_t err_index;     /* and its job's index */
    int err_reported;     /* amap_next returned it */
    void *win_result;     /* run_any */
    size_t pulled;        /* source: arguments pulled so far (grown
                           * under source_lock too) */
    int done_waiters;     /* threads waiting on done_cv */
    int space_waiters;    /* threads waiting on space_cv */
    int efd;              /* cancel descriptor handed out (eventfd, epoll
                           * over eventfd + deadline timer, or pipe), -1 */
    int efd_w;            /* what a stop writes to (eventfd or pipe end) */
    int efd_w_eventfd;    /* efd_w is an eventfd: write 8 bytes */
    int efd_x;            /* the deadline timerfd to close, or -1 */

    /* Statistics: per-thread counts added up when a participant leaves. */
    atomic_size_t started, completed, failed;
    atomic_size_t running, peak;
    _Atomic uint64_t rate_wait_ns;
    /* Progress reporting (only with opts.progress): live counts. */
    atomic_size_t p_started, p_completed, p_failed;
    _Atomic uint64_t p_last;
    atomic_flag p_busy;

    /* The pool's list of calls that may want helpers; pool->lock. */
    struct aio_call *q_prev, *q_next;
    int queued;
};

/* How long a caller or amap consumer waits for the pool's threads to come
 * before it concludes that none will and runs jobs itself. */
#define AIO_HELP_WAIT_NS (2 * UINT64_C(1000000))

/* Check options without side effects: 0 or EINVAL. */
int aio_options_check(const aiometer_options *opts);

/* Set a call up for `mode` with n jobs (SIZE_MAX for a source): take the
 * pool (the default one may be created here), initialise the locks.
 * 0, EINVAL, ENOMEM or EAGAIN; on failure nothing is left to undo.  The
 * caller then fills in the inputs. */
int aio_call_init(struct aio_call *c, int mode, size_t n, const aiometer_options *opts);

/* Run the call to its end: post it to the pool, work on it if the caller
 * runs jobs, wait for every participant.  Then aio_call_finish(). */
void aio_call_run(struct aio_call *c);

/* The parts of aio_call_run, for amap. */
void aio_call_begin(struct aio_call *c);
void aio_call_post(struct aio_call *c, size_t helpers);
void aio_call_wait(struct aio_call *c);

/* Fill stats, last progress report, release pool and limiter, free the
 * call's resources.  Returns what the call returns (0, the failure,
 * ETIMEDOUT). */
int aio_call_finish(struct aio_call *c);

/* Undo aio_call_init() alone, for a call that never began. */
void aio_call_undo_init(struct aio_call *c);

/* Take a participant slot (1) or find them all taken (0).  aio_call_leave()
 * gives it back and wakes the caller when the last one leaves. */
int aio_call_join(struct aio_call *c);
void aio_call_leave(struct aio_call *c);

/* Run jobs of the call until none can be claimed.  With `one`, run at most
 * one job and never wait for room (the amap consumer).  Returns the number of
 * jobs claimed. */
size_t aio_call_work(struct aio_call *c, int one);

/* May the caller (or amap consumer) run jobs when no pool thread came? */
int aio_call_may_help(struct aio_call *c);

/* True while jobs remain that could be claimed. */
int aio_call_has_work(struct aio_call *c);

/* Stop the call for `reason` (first reason wins); with AIO_STOP_FAILED also
 * record err for job `index`.  The _locked form is called with c->lock. */
void aio_call_stop(struct aio_call *c, int reason, int err, size_t index);
void aio_call_stop_locked(struct aio_call *c, int reason, int err, size_t index);

/* In the child of a fork: the thread that forked runs no job there (the
 * call it was in is the parent's), so the job-side functions must treat it
 * as outside a job.  Called from the pool's atfork child handler. */
void aio_call_atfork_child(void);

/* Called with c->lock: if the deadline has passed, stop with a timeout. */
void aio_call_check_deadline_locked(struct aio_call *c);

#endif
