/* call.h - one call of an entry point: its jobs, its state, and the
 * functions that the files of the call's mechanism share.
 *
 * A call lives on its caller's stack (run_*) or in the amap iterator.  The
 * pool's threads that help with it, and the caller itself, are its
 * "participants"; there are never more than `slots` of them, and since each
 * runs one job at a time, that is what makes max_at_once exact: the count of
 * participants is the card's semaphore, taken lock-free (aiometer__call_join).
 *
 * The four entry points are four policies (policy.c) on one mechanism:
 *   call.c      a call's life: set-up, posting, helping, waiting, finishing
 *   claim.c     claiming job indices (the card's bounded queue)
 *   jobloop.c   the participants' loop that runs claimed jobs
 *   runjob.c    running a job, and plain batches of jobs
 *   ratewait.c  waiting for the limiters before a job starts
 *   retry.c     jobs waiting out a backoff before their next attempt
 *   keywait.c   per-key limiters: jobs set aside until their key allows
 *   cancel.c    stopping, deadlines, and the job-side functions
 *   cancelfd.c  the call's cancel descriptor
 *   progress.c  progress reports and statistics
 *
 * Participants claim job indices lock-free from the atomic counter `next`,
 * several at a time when jobs are tiny (jobloop.c), so the per-job path
 * takes no lock and allocates nothing.  Locks are taken only on the slow
 * paths: joining and leaving, failure and cancellation, rate waits, amap's
 * completion queue, and lazy sources.
 *
 * Lock order: the pool's lock before call->lock, and call->source_lock
 * before call->lock; never the other way round. */
#ifndef AIOMETER__CALL_H
#define AIOMETER__CALL_H

#include "aiometer.h"
#include "completion.h"
#include "limiter.h"
#include "retry.h"
#include "task.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct aiometer__call;
struct aiometer__ctx;

/* A batch's results for a policy that hands them over under one lock hold
 * (amap): at most AIOMETER__SOURCE_BATCH of them. */
#define AIOMETER__SOURCE_BATCH 64
struct aiometer__sink {
    size_t n;
    size_t index[AIOMETER__SOURCE_BATCH];
    void *result[AIOMETER__SOURCE_BATCH];
};

/* What an entry point does with its jobs' outcomes (policy.c).  A NULL
 * operation does nothing. */
struct aiometer__policy {
    /* Job j returned r without failing.  Results of one batch may wait in
     * the sink until flush is called. */
    void (*result)(struct aiometer__call *c, size_t j, void *r, struct aiometer__sink *sink);
    void (*flush)(struct aiometer__call *c, struct aiometer__sink *sink);
    /* Job j returned r after aiometer_fail(err), or ran out of retries
     * (r is then NULL). */
    void (*failure)(struct aiometer__call *c, size_t j, int err, void *r);
    /* Job j will never run (the call stopped first). */
    void (*skip)(struct aiometer__call *c, size_t j);
    /* The call is over: fill in what it returns besides its error. */
    void (*finish)(struct aiometer__call *c);
    /* aiometer_fail() stops the call (all but run_any, where a failure
     * only loses). */
    int fail_stops;
    /* With opts.keep_going (where fail_stops), what a failure does instead
     * of `failure`: the call goes on. */
    void (*kept_failure)(struct aiometer__call *c, size_t j, int err, void *r);
    /* opts.errors applies (run_on_each and run_all over an array). */
    int has_errors;
};

extern const struct aiometer__policy aiometer__policy_each, aiometer__policy_all,
    aiometer__policy_any, aiometer__policy_stream;

/* Why a call stopped starting jobs.  Set once, never cleared. */
enum aiometer__stop {
    AIOMETER__GOING = 0,
    AIOMETER__STOP_FAILED,    /* a job failed (or the source, or a limiter did) */
    AIOMETER__STOP_CANCELLED, /* aiometer_amap_cancel */
    AIOMETER__STOP_TIMEOUT,   /* opts.timeout passed */
    AIOMETER__STOP_WON        /* run_any has its winner */
};

struct aiometer__call {
    /* What the pool sees of the call: the call is queued as this task. */
    struct aiometer__task task;

    /* Set by the calling thread before the call is posted to the pool, and
     * only read afterwards.  The job inputs (jobs, fn, args, source) and cq
     * are filled in by the entry point between aiometer__call_init and posting. */
    const struct aiometer__policy *policy;
    struct aiometer_pool *pool;
    const aiometer_job *jobs;
    aiometer_fn fn;
    void *const *args;
    aiometer_source_fn source;
    void *source_state;
    void **results;       /* run_all: written by jobs, one index each */
    size_t n;             /* jobs in the call; SIZE_MAX for a source */
    size_t slots;         /* most participants at once */
    int has_rate;         /* own_rate is in use */
    struct aiometer__gcra own_rate;
    struct aiometer_limiter *shared; /* opts.limiter */
    int capped;           /* shared has a running cap */
    uint64_t deadline;    /* AIOMETER__NEVER: none */
    uint64_t t_start;
    aiometer_progress_fn progress;
    void *progress_arg;
    uint64_t progress_every;
    aiometer_stats *stats_out;
    struct aiometer__cq *cq;    /* amap only */
    size_t retries;       /* opts.retries */
    double retry_delay, retry_max_delay; /* with the defaults applied */
    size_t retry_gate;    /* parked jobs at which new claims pause */
    int keep_going;       /* opts.keep_going, where the policy stops on failure */
    int *errors;          /* opts.errors, where the policy has them */
    /* A per-key limiter with opts.key: jobs that their key cannot start yet
     * are set aside in rq (keywait.c). */
    int keyed;
    const char *(*key)(void *arg, void *key_arg);
    void *key_arg;

    /* The calling thread's own: whether it works on the call while it
     * waits.  Set at init, and again by aiometer__call_post when the pool could
     * start no thread; no other thread reads it. */
    int caller_runs;
    /* The caller's own too: the call has been posted to the pool (so it
     * must be taken out of the queue at the end). */
    int posted;
    /* handoff.c: helpers the caller will post once its work left is worth
     * a wake-up (0: posted already, or never alone), and whether the next
     * batch to end should teach the table of job times.  While recruit is
     * nonzero the caller is the only participant (handoff.c). */
    atomic_size_t recruit;
    atomic_int learn;
    atomic_int recruit_doubt; /* the last batch alone looked slow */
    /* sentinel.c: while the caller is alone, the call holds one of the
     * sentinel's slots (watched, the caller's own flag; watch_slot, which
     * one), and alone_t0 is when the caller's current batch started (0:
     * between batches). */
    int watched;
    unsigned watch_slot;
    _Atomic uint64_t alone_t0;

    /* Read and written lock-free. */
    atomic_size_t next;          /* array input: next index to claim */
    atomic_int stop;             /* enum aiometer__stop; written under lock */
    atomic_int source_done;      /* the source said AIOMETER_DONE or failed */
    atomic_size_t participants;  /* threads working on the call now */
    atomic_size_t winner;        /* run_any: the winning index, or SIZE_MAX */
    atomic_int efd_pub;          /* efd once made (published under lock), -1 */
    /* Retries: written under lock, read lock-free by aiometer__call_has_work. */
    atomic_size_t parked;        /* rq.n */
    atomic_size_t retry_waiters; /* participants waiting on retry_cv */
    atomic_size_t slot_waits;    /* entries of rq waiting for a key's slot */

    /* Held while a lazy source is called, so that calls to it are never
     * concurrent, and while `pulled` grows; never while waiting for room,
     * which the amap consumer (who may need it to claim) makes. */
    pthread_mutex_t source_lock;
    atomic_size_t pulled;        /* source: arguments pulled so far; written
                                  * under source_lock, read anywhere */

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
    int done_waiters;     /* threads waiting on done_cv */
    int space_waiters;    /* threads waiting on space_cv */
    /* Participants with nothing to do but jobs in backoff wait for them
     * (retry.c): one of them, the timer, on retry_timer_cv until the
     * earliest is due; the others on retry_cv until they are needed.  The
     * timer is signalled when a job is parked with an earlier due time; a
     * waiter on retry_cv when the timer has gone and jobs are left.  Both
     * are broadcast at stop. */
    pthread_cond_t retry_cv, retry_timer_cv;
    int retry_timer;      /* a participant waits on retry_timer_cv */
    struct aiometer__retry_heap rq; /* jobs in backoff; cap 0: no retries */
    int efd;              /* cancel descriptor handed out (eventfd, epoll
                           * over eventfd + deadline timer, or pipe), -1 */
    int efd_w;            /* what a stop writes to (eventfd or pipe end) */
    int efd_w_eventfd;    /* efd_w is an eventfd: write 8 bytes */
    int efd_x;            /* the deadline timerfd to close, or -1 */

    /* Statistics: per-thread counts added up when a participant leaves. */
    atomic_size_t started, completed, failed, retried;
    atomic_size_t running, peak;
    _Atomic uint64_t rate_wait_ns;
    /* Progress reporting (only with opts.progress): live counts. */
    atomic_size_t p_started, p_completed, p_failed, p_retried;
    _Atomic uint64_t p_last;
    atomic_flag p_busy;
};

/* What one participant counts while it works, added to the call's totals
 * when it leaves (so the per-job path touches no shared counter). */
struct aiometer__local {
    size_t started, completed, failed, retried;
    uint64_t rate_wait_ns;
};

/* How long a caller or amap consumer waits for the pool's threads to come
 * before it concludes that none will and runs jobs itself. */
#define AIOMETER__HELP_WAIT_NS (2 * UINT64_C(1000000))

/* ---- call.c: life cycle ---- */

/* Check options without side effects: 0 or EINVAL. */
int aiometer__options_check(const aiometer_options *opts);

/* Set a call up for `policy` with n jobs (SIZE_MAX for a source): take the
 * pool (the default one may be created here), initialise the locks.
 * 0, EINVAL, ENOMEM or EAGAIN; on failure nothing is left to undo.  The
 * entry point then fills in the inputs. */
int aiometer__call_init(struct aiometer__call *c, const struct aiometer__policy *policy, size_t n,
                  const aiometer_options *opts);

/* Run the call to its end: post it to the pool, work on it if the caller
 * runs jobs, wait for every participant.  Then aiometer__call_finish(). */
void aiometer__call_run(struct aiometer__call *c);

/* The parts of aiometer__call_run, for amap. */
void aiometer__call_begin(struct aiometer__call *c);
void aiometer__call_post(struct aiometer__call *c, size_t helpers);
void aiometer__call_wait(struct aiometer__call *c);

/* Let the policy finish, fill stats, give the last progress report,
 * release pool and limiter, free the call's resources.  Returns
 * aiometer__call_verdict(). */
int aiometer__call_finish(struct aiometer__call *c);

/* The condition variables a call has (call_init makes only those its
 * entry point and options can use): space_cv for an amap, retry_cv and
 * retry_timer_cv with retries or a per-key limiter. */
static inline int aiometer__call_has_space_cv(const struct aiometer__call *c)
{
    return c->policy == &aiometer__policy_stream;
}
static inline int aiometer__call_has_retry_cvs(const struct aiometer__call *c)
{
    return c->retries || c->keyed;
}

/* Undo aiometer__call_init() alone, for a call that never began. */
void aiometer__call_undo_init(struct aiometer__call *c);

/* Take a participant slot (1) or find them all taken (0).  aiometer__call_leave()
 * gives it back and wakes the caller when the last one leaves. */
int aiometer__call_join(struct aiometer__call *c);
void aiometer__call_leave(struct aiometer__call *c);

/* Join, work (one job at most if `one`), leave: 1, or 0 if every slot was
 * taken. */
int aiometer__call_help(struct aiometer__call *c, int one);

/* Called with c->lock held by a caller or amap consumer with nothing to do
 * but wait: if no participant has been at work for AIOMETER__HELP_WAIT_NS (and the
 * caller may help, see call.c), run jobs here (the lock is dropped and
 * taken again) and return 1.  Otherwise return 0 with *until set to when
 * to look again (AIOMETER__NEVER: when woken).  *alone_since is the caller's
 * memory of when it first saw no participant (0: not alone). */
int aiometer__call_help_if_alone_locked(struct aiometer__call *c, uint64_t *alone_since, int one,
                                  uint64_t *until);

/* What a call that has ended returns, decided from why it stopped: 0, the
 * failure's error, ETIMEDOUT or ECANCELED. */
int aiometer__call_verdict(struct aiometer__call *c);

/* ---- handoff.c: when a caller asks for helpers ---- */

/* Called by a caller that runs jobs, before its first job, with the
 * helpers it wants: 1 when it should start alone (the helpers are posted
 * later by aiometer__handoff_batch, if at all), 0 when it should post them
 * now. */
int aiometer__handoff_alone(struct aiometer__call *c, size_t helpers);
/* A participant of an adaptive loop (or an amap consumer) ran a batch of k
 * jobs in d ns.  Helpers are recruited only for jobs of min_job_ns or more. */
void aiometer__handoff_batch(struct aiometer__call *c, size_t k, uint64_t d, uint64_t min_job_ns);

/* ---- claim.c: claiming jobs ---- */

/* True while jobs remain that could be claimed, or a job waits out its
 * backoff with no participant waiting for it. */
int aiometer__call_has_work(struct aiometer__call *c);
/* Could a participant claim a new job now?  Called with c->lock held. */
int aiometer__can_claim_locked(struct aiometer__call *c);
size_t aiometer__claim_array(struct aiometer__call *c, size_t want, int may_wait, size_t *first);
size_t aiometer__claim_source(struct aiometer__call *c, size_t want, int may_wait, size_t *first,
                        void **arg);

/* ---- sentinel.c ---- */

/* Put c, whose caller is about to run its jobs alone with c->recruit set,
 * under the sentinel's watch: 0, or an errno value (EAGAIN: every slot
 * taken; the sentinel could not be started) with nothing done. */
int aiometer__sentinel_watch(struct aiometer__call *c);
/* Take c off the watch (if it is on it); after this the sentinel neither
 * reads c nor posts it. */
void aiometer__sentinel_unwatch(struct aiometer__call *c);

/* ---- jobloop.c ---- */

/* Run jobs of the call until none can be claimed.  With `one` > 0, make one
 * claim of at most `one` jobs (one job when the call is rated or retries),
 * run them, and never wait for room (the amap consumer).  Returns the
 * number of jobs claimed. */
size_t aiometer__call_work(struct aiometer__call *c, int one);

/* ---- runjob.c ---- */

/* Run job j once: its first attempt (re NULL), or a parked job that is due
 * (re): the next attempt after a backoff, or a job that was set aside for
 * its key.  source_arg: its argument, for a source; rated: it books a
 * start first. */
void aiometer__run_job(struct aiometer__call *c, struct aiometer__ctx *ctx,
                       struct aiometer__local *L, size_t j, void *source_arg, int rated,
                       struct aiometer__sink *sink, const struct aiometer__retry *re);
/* Run the k jobs from first of a call with no limiter, key, rate, progress
 * reports or errors array (a source's arguments in sargs, else NULL), as
 * aiometer__run_job would one by one. */
void aiometer__run_plain_batch(struct aiometer__call *c, struct aiometer__ctx *ctx,
                               struct aiometer__local *L, size_t first, size_t k, void **sargs,
                               struct aiometer__sink *sink);

/* Job j has failed for good with err (r: what it returned, or NULL): fill
 * opts.errors, and hand the failure to the policy, or with keep_going
 * record it (the lowest index is what the call returns) and go on. */
void aiometer__job_failed(struct aiometer__call *c, size_t j, int err, void *r);

/* ---- retry.c: jobs in backoff ---- */

/* Park job j (its argument arg, for a source; its key, for a per-key
 * limiter) whose attempt `attempt - 1` asked for a retry after `after`
 * seconds (< 0: a backoff).  1 if parked; 0 if the call has stopped, and
 * the job never runs again. */
int aiometer__retry_park(struct aiometer__call *c, size_t j, void *arg, const char *key,
                         size_t attempt, int err, double after);
/* Park *r as it is (due time and all): 1, or 0 if the call has stopped. */
int aiometer__park(struct aiometer__call *c, const struct aiometer__retry *r);
/* Before a participant claims a new job: 1 with *re set to a parked job now
 * due.  Otherwise, while jobs are parked and the participant has nothing
 * else to do, it waits for them here (as many participants as are parked
 * jobs).  0: claim a new job (if may_claim), or leave. */
int aiometer__retry_next(struct aiometer__call *c, struct aiometer__retry *re, int may_claim);
/* The call is over: jobs still parked were stopped in their backoff and
 * end with their last error; jobs set aside before their first attempt are
 * skipped and give back the slots they hold. */
void aiometer__retry_finish(struct aiometer__call *c);

/* ---- ratewait.c: before a job starts ---- */

/* Book job j's start with the rate limiter(s) and wait for it: 1 to start
 * the job, 0 if the call stopped (a limiter that fails to book stops it).
 * With own_only, only the call's own rate (a per-key limiter has been
 * booked already, keywait.c). */
int aiometer__wait_rate(struct aiometer__call *c, struct aiometer__local *L, size_t j,
                        int own_only);
/* Take a running slot of the call's limiter for job j: 1 with the slot, 0
 * if the call stopped (a limiter that fails stops it with its error). */
int aiometer__take_slot(struct aiometer__call *c, size_t j);

/* ---- keywait.c: per-key limiters ---- */

/* Before job j runs on a per-key limiter: its key (asked for now, unless re
 * carries it), a slot of the key and a booked start for it, then the
 * call's own rate.  1: run the job now, *key set and *slot nonzero if it
 * holds a slot of the key.  0: the key cannot start it yet, and it is set
 * aside (parked) until it can; the participant goes on to other work.
 * -1: the call stopped (or this job stopped it), and the job does not run;
 * it holds nothing.  re: a parked job picked up again, or NULL. */
int aiometer__key_ready(struct aiometer__call *c, struct aiometer__local *L, size_t j, void *arg,
                        const struct aiometer__retry *re, const char **key, int *slot);
/* A job of the call gave back a slot of `key`: a job set aside for want of
 * one is asked about at once rather than at its next poll. */
void aiometer__key_released(struct aiometer__call *c, const char *key);

/* ---- cancel.c: stopping ---- */

/* Stop the call for `reason` (first reason wins); with AIOMETER__STOP_FAILED also
 * record err for job `index`.  The _locked form is called with c->lock. */
void aiometer__call_stop(struct aiometer__call *c, int reason, int err, size_t index);
void aiometer__call_stop_locked(struct aiometer__call *c, int reason, int err, size_t index);

/* If the deadline has passed, stop with a timeout.  The _locked form is
 * called with c->lock. */
void aiometer__call_check_deadline(struct aiometer__call *c);
void aiometer__call_check_deadline_locked(struct aiometer__call *c);

/* How long a waiter may sleep towards `until`: no later than the deadline
 * while the call goes on; a stopped call has no deadline left to watch. */
uint64_t aiometer__call_wait_limit(struct aiometer__call *c, uint64_t until);

/* Sleep until the time `end` or until the call stops, on stop_cv: the rate
 * wait, and aiometer_sleep when no cancel descriptor can be had. */
void aiometer__call_sleep_until(struct aiometer__call *c, uint64_t end);

/* The job this thread is running, so that aiometer_fail() and the other
 * job-side functions find its call.  Each participant's loop pushes one
 * and pops it on the way out, so nested calls stack. */
struct aiometer__ctx {
    struct aiometer__call *call;
    size_t index;  /* the job running now */
    int fail_err;  /* what it passed to aiometer_fail(), or 0 */
    struct aiometer__ctx *prev;
    size_t attempt;     /* 0 for the job's first attempt */
    int retry_err;      /* what it passed to aiometer_retry(), or 0 */
    double retry_after; /* and the after it passed */
    int drop;           /* the attempt's return value is not the job's result */
    /* What jobloop.c must put right if the thread ends while in user code
     * (a job, a source, a backend or a progress callback that calls
     * pthread_exit): the participant's counts and pending results, and
     * which of the states below it was in. */
    struct aiometer__local *L;
    struct aiometer__sink *sink;
    int in_batch;  /* counted in c->running */
    int in_job;    /* fn is running: job `index` */
    /* In a plain batch (runjob.c, aiometer__run_plain_batch): its first index, and
     * how many of its jobs went through job_outcome. */
    int in_plain;
    size_t plain_first, plain_outcomes;
    int in_source; /* the source is running: c->source_lock is held */
    int slot;      /* holds a running slot of the call's limiter */
    const char *key; /* the job's key, for a per-key limiter, or NULL */
};
extern _Thread_local struct aiometer__ctx *aiometer__tls;

/* ---- cancelfd.c ---- */

/* The call's cancel descriptor, made on first use: 0 with *fd, or an errno
 * value.  Once made it is published in efd_pub, so later users need no lock. */
int aiometer__cancel_fd_of(struct aiometer__call *c, int *fd);
/* Make the descriptor readable, if there is one; with c->lock held. */
void aiometer__cancel_fd_signal(struct aiometer__call *c);
/* Close what aiometer__cancel_fd_of() made. */
void aiometer__cancel_fd_close(struct aiometer__call *c);

/* ---- progress.c ---- */

/* After a job: report progress if an interval has passed. */
void aiometer__progress_tick(struct aiometer__call *c);
/* The last report and opts.stats, when the call ends. */
void aiometer__progress_final(struct aiometer__call *c, int ret);

#endif
