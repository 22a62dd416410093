/*
 * testutil.h - helpers shared by the Check suites: monotonic time, sleeps,
 * a concurrency tracker, a gate jobs can wait on, start-time recording and a
 * small reentrant random number generator.
 *
 * Everything here is safe to call from many job threads at once.
 */
#ifndef AIOMETER_TESTUTIL_H
#define AIOMETER_TESTUTIL_H

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

#endif /* AIOMETER_TESTUTIL_H */
