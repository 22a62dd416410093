/*
 * testutil.h - helpers shared by the Check suites: monotonic time, sleeps,
 * a concurrency tracker, a gate jobs can wait on, start-time recording and a
 * small reentrant random number generator.
 *
 * Everything here is safe to call from many job threads at once.
 */
#ifndef AIOMETER_TESTUTIL_H
#define AIOMETER_TESTUTIL_H

#include <aiometer.h>
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* ---- time ------------------------------------------------------------------ */

/* CLOCK_MONOTONIC in nanoseconds, the clock the library schedules on. */
uint64_t tu_now_ns(void);
/* The same clock in seconds, for coarse measurements. */
double tu_now(void);
/* Seconds elapsed since a tu_now_ns() reading. */
double tu_since(uint64_t start_ns);
/* Sleep on CLOCK_MONOTONIC, resuming after signals, for the full time. */
void tu_sleep(double seconds);
void tu_sleep_ms(double ms);

/* ---- random numbers -------------------------------------------------------- */

/* splitmix64: a generator whose whole state is one word, so each job can
 * derive its own stream from a seed and its index with no shared state. */
uint64_t tu_rand_next(uint64_t *state);
/* A uniform double in [lo, hi) from the stream seeded by (seed, index). */
double tu_rand_uniform(uint64_t seed, size_t index, double lo, double hi);

/* ---- concurrency tracker --------------------------------------------------- */

/* Counts the jobs running right now and records the largest count seen.
 * Jobs call tu_tracker_enter() first and tu_tracker_leave() last. */
typedef struct tu_tracker {
    atomic_size_t running;
    atomic_size_t peak;
    atomic_size_t started;
    atomic_size_t finished;
} tu_tracker;

void tu_tracker_init(tu_tracker *t);
/* Returns the job's ticket: 0 for the first job to enter, 1 for the next... */
size_t tu_tracker_enter(tu_tracker *t);
void tu_tracker_leave(tu_tracker *t);
size_t tu_tracker_peak(tu_tracker *t);
size_t tu_tracker_started(tu_tracker *t);
size_t tu_tracker_finished(tu_tracker *t);

/* ---- gate ------------------------------------------------------------------ */

/* A counter of arrivals and an open flag under one mutex, with a condition
 * variable on CLOCK_MONOTONIC, so jobs can block until enough of them have
 * arrived (a rendezvous) or until the test opens the gate, without polling. */
typedef struct tu_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t arrived;  /* guarded by mu */
    size_t min_want; /* guarded by mu: the smallest count any waiter asked for */
    int open;        /* guarded by mu */
} tu_gate;

void tu_gate_init(tu_gate *g);
void tu_gate_destroy(tu_gate *g);
/* Count one arrival and wake every waiter. */
void tu_gate_arrive(tu_gate *g);
/* Wait until at least n arrivals; 0, or ETIMEDOUT after timeout seconds. */
int tu_gate_wait_arrived(tu_gate *g, size_t n, double timeout);
void tu_gate_open(tu_gate *g);
/* Wait until the gate is open; 0, or ETIMEDOUT after timeout seconds. */
int tu_gate_wait_open(tu_gate *g, double timeout);
size_t tu_gate_arrived(tu_gate *g);

/* ---- start times ----------------------------------------------------------- */

/* Jobs record the moment they start; the test then sorts the records. */
typedef struct tu_starts {
    atomic_size_t n;
    size_t cap;
    uint64_t *t; /* cap entries, CLOCK_MONOTONIC ns */
} tu_starts;

/* cap slots are allocated; the process aborts if malloc fails. */
void tu_starts_init(tu_starts *s, size_t cap);
void tu_starts_free(tu_starts *s);
/* Record now; returns the record's slot.  Records past cap are counted but
 * not stored. */
size_t tu_starts_record(tu_starts *s);
/* How many records were stored, after sorting them in increasing time. */
size_t tu_starts_sort(tu_starts *s);
/* The largest gap in seconds between consecutive sorted records (0 if < 2). */
double tu_starts_max_gap(const tu_starts *s, size_t n);

/* ---- threads --------------------------------------------------------------- */

/* pthread_create that fails the test (via Check) rather than return. */
void tu_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);
void *tu_thread_join(pthread_t t);

/* ---- pools: the checked fixture ---------------------------------------------- */

/* A pool of `threads` threads for the running test, made with an assertion
 * that it could be.  Test cases that use it add tu_pool_fixture() (below);
 * its teardown destroys every pool made here and asserts that each one was
 * idle, which is the check each test used to end with. */
aiometer_pool *tu_pool(size_t threads);
/* Adds the checked fixture that owns tu_pool()'s pools to tc. */
void tu_pool_fixture(TCase *tc);
/* A test case with that fixture and a timeout (so a hang fails fast). */
TCase *tu_tcase(const char *name, double timeout);

/* Atomic loads under short names, so that a failed assertion reads
 * "ld(&c.calls) == 3" rather than the expansion of atomic_load. */
static inline size_t ld(atomic_size_t *a)
{
    return atomic_load(a);
}

static inline int ldi(atomic_int *a)
{
    return atomic_load(a);
}

/* ---- probes and items: the streaming suites' jobs ---------------------------- */

/* What the jobs of one test share.  Counters are atomics because jobs run on
 * several threads; last_start is guarded by lock. */
struct probe {
    atomic_size_t started;
    atomic_size_t returned;
    atomic_size_t running;
    atomic_size_t peak;
    atomic_size_t saw_cancel; /* jobs whose aiometer_sleep said ECANCELED */
    atomic_int gate;          /* jobs with wait_gate hold until it is set */
    pthread_mutex_t lock;
    double t0;         /* when the test started the call */
    double last_start; /* latest job start, seconds after t0 */
};

enum { SLEEP_PLAIN, SLEEP_CANCELLABLE };

/* One job's argument.  The job returns this pointer, so a result can be
 * checked against args[index] without any other bookkeeping. */
struct item {
    struct probe *p;
    size_t i;
    double sleep;   /* seconds to sleep before returning */
    int how;        /* SLEEP_PLAIN or SLEEP_CANCELLABLE */
    int fail;       /* error to fail with after the sleep; 0: succeed */
    int wait_gate;  /* hold until p->gate is set (at most 10 s) */
    int use_fd;     /* wait on aiometer_cancel_fd() instead of sleeping */
    int fd_wait_ms; /* how long to wait on it; 0: 10 s */
    /* Written by the job, read by the test after the call. */
    atomic_int began;
    atomic_int done;
    int sleep_rc;        /* what aiometer_sleep returned */
    int cancelled_after; /* aiometer_cancelled() once the wait ended */
    int fd;              /* what aiometer_cancel_fd() returned */
    int fd_ready_early;  /* poll(fd, 0) before cancellation */
    int fd_poll_rc;      /* poll(fd, POLLIN, fd_wait_ms) */
    short fd_revents;
    pthread_t thread;
};

void probe_init(struct probe *p);
void items_init(struct probe *p, struct item *items, void **args, size_t n);

/* Starts a test's probe and its n items (and args[], when not NULL). */
void setup_items(struct probe *p, struct item *items, void **args, size_t n);

void *item_job(void *arg);

/* Checks one result that next delivered: its index is in range and new,
 * and it is fn(args[index]).  Marks it seen. */
void check_result(void *result, size_t index, void **args, size_t n,
                         unsigned char *seen);

/* Reads one result, which must be there (next says 0), and checks it. */
void read_one(aiometer_amap *it, void **args, size_t n, unsigned char *seen);

/* Read results until next says anything but 0 or skip_rc, checking each
 * with check_result.  Each skip_rc is counted in *skipped (when skipped is
 * not NULL) and reading goes on, as it does after a job's failure.  Returns
 * the code that ended the loop. */
int drain_skipping(aiometer_amap *it, void **args, size_t n, unsigned char *seen,
                          size_t *delivered, int skip_rc, size_t *skipped);

/* Read results until next says anything but 0, checking that each is
 * fn(args[index]) and comes once.  Returns that last code. */
int drain(aiometer_amap *it, void **args, size_t n, unsigned char *seen,
                 size_t *delivered);

/* Reads results from..to-1 of an ordered call: each must come with its own
 * index, in input order, as the job's result &items[i]. */
void read_in_order(aiometer_amap *it, struct item *items, size_t from, size_t to);

/* Asserts that next says `want` (an end code, which is sticky). */
void expect_end(aiometer_amap *it, int want);

/* Gives items[from..to-1] the same sleep. */
void set_sleep(struct item *items, size_t from, size_t to, double seconds, int how);

/* The checks on a job that waited on aiometer_cancel_fd() and was woken by
 * cancellation, not by its own timeout. */
void check_fd_woken(const struct item *x);

/* For a call that stopped early: every job that started has returned, and
 * the stats count the ones that never started as cancelled.  Returns how
 * many started. */
size_t check_stopped(struct probe *p, const aiometer_stats *st, size_t n);

/* Wait (at most 5 s) until `count` jobs have started, so that a test's
 * next call finds them on pool threads rather than running one itself. */
void wait_started(struct probe *p, size_t count);

aiometer_options opts_on(aiometer_pool *pool);

/* Opens an amap of one plain 1 s job on pool o->pool and waits until it has
 * started, so that it holds one of the pool's threads for that second. */
aiometer_amap *occupy_thread(const aiometer_options *o, struct probe *busy_p,
                                    struct item *busy, void **busy_args);

/* Calls aiometer_amap_cancel after a delay, from another thread, to reach a
 * consumer that is blocked in aiometer_amap_next. */
struct canceller {
    aiometer_amap *it;
    double delay;
    int rc;
    pthread_t thread;
};

void *canceller_main(void *arg);

/* A job source over an array of items: hands out items[0..len-1] in order,
 * then returns end_rc on this and every later call.  It records what a test
 * needs to know about how it was called. */
struct src {
    struct item *items;
    size_t len;
    int end_rc;
    double pause;            /* seconds to spend in each call */
    atomic_size_t calls;     /* every call */
    atomic_size_t handed;    /* calls that returned an item */
    atomic_int inside;       /* a call is running */
    atomic_size_t overlaps;  /* calls that found another one running */
    atomic_int ended;        /* it has returned end_rc */
    atomic_size_t after_end; /* calls after it returned end_rc */
};

void src_init(struct src *s, struct item *items, size_t len, int end_rc);

int src_next(void *state, void **arg);

/* Runs aiometer_run_on_each_source on its own thread, so that the test can
 * look at the call while it blocks. */
struct runner {
    struct src *src;
    aiometer_options opts;
    int rc;
    pthread_t thread;
};

void *runner_main(void *arg);

/* jobs[i] = { item_job, &items[i] } for i < n. */
void jobs_of(aiometer_job *jobs, struct item *items, size_t n);

/* ---- tracked jobs: the core suites' jobs --------------------------------------- */

/* What every tracked job of one call shares. */
typedef struct tracked_ctx {
    tu_tracker tr;
    tu_gate gate;
    /* If nonzero, each job waits (up to gate_timeout) until that many jobs
     * have arrived, which makes "this many run at once" observable without
     * relying on sleeps being long enough. */
    size_t reach;
    double gate_timeout;
    /* Each job then sleeps a random time in [hold_lo, hold_hi) seconds. */
    double hold_lo, hold_hi;
    atomic_size_t gate_timeouts;
    atomic_size_t calls; /* how many times the job function ran */
} tracked_ctx;

typedef struct tracked_item {
    tracked_ctx *c;
    size_t index;
    atomic_int runs; /* how many times this item's job ran */
} tracked_item;

void tracked_init(tracked_ctx *c, size_t reach, double hold_lo, double hold_hi);

void *tracked_job(void *arg);

/* Items and their argument vector, allocated together. */
typedef struct tracked_set {
    tracked_item *items;
    void **args;
    aiometer_job *jobs;
    void **results;
    size_t n;
} tracked_set;

void set_init(tracked_set *s, tracked_ctx *c, size_t n);

void set_free(tracked_set *s);

/* Run the set through run_all (use_all) or run_on_each. */
int set_run(tracked_set *s, int use_all, const aiometer_options *o);

/* Every item ran exactly once and, for run_all, its result is in place. */
void set_check_complete(tracked_set *s, int use_all);

#endif /* AIOMETER_TESTUTIL_H */
