/* retry.h - jobs that asked for another attempt (aiometer_retry) and wait
 * out their backoff.
 *
 * A job in backoff holds no running slot, neither the call's participant
 * place nor a limiter's: it is parked in its call's retry heap, ordered by
 * the time its next attempt is due, and a participant picks it up when it
 * is due, before claiming new jobs (retry.c, called from jobloop.c).  The
 * heap is allocated when the call is set up, so a retry never allocates;
 * its size bounds the jobs parked at once (aiometer__retry_cap).
 *
 * The heap functions are called with the owning call's lock held. */
#ifndef AIOMETER__RETRY_H
#define AIOMETER__RETRY_H

#include "aiometer.h"

#include <stddef.h>
#include <stdint.h>

/* Defaults of opts.retry_delay and opts.retry_max_delay, in seconds. */
#define AIOMETER__RETRY_DELAY 0.1
#define AIOMETER__RETRY_MAX_DELAY 30.0

/* Why a job is parked.  Jobs of a call on a per-key limiter (keywait.c)
 * are also set aside here when their key cannot start them yet, so that a
 * participant runs another job meanwhile; they are picked up as retries
 * are, when due. */
enum aiometer__wait {
    AIOMETER__WAIT_RETRY = 0, /* a backoff: the next attempt starts afresh */
    AIOMETER__WAIT_SLOT,      /* the key had no free slot (or no room): ask again */
    AIOMETER__WAIT_START      /* the key's booked start is `due`: run then */
};

/* One parked job. */
struct aiometer__retry {
    uint64_t due;     /* when its next attempt may start (or be asked about) */
    size_t index;     /* the job */
    void *arg;        /* its argument, for a job from a lazy source */
    size_t attempt;   /* the number of its next attempt; 0 was the first */
    int err;          /* what the last attempt failed with */
    /* Per-key limiters only: the job's key (asked for once per job) and
     * its hash, whether the job holds one of the key's running slots, why
     * it waits, and how often it has asked for a slot in vain. */
    const char *key;
    uint64_t hash;
    unsigned char hold;
    unsigned char wait; /* enum aiometer__wait */
    unsigned short polls;
};

/* A binary min-heap on due; cap 0: the call has no retries. */
struct aiometer__retry_heap {
    struct aiometer__retry *e;
    size_t n, cap;
};

/* Check the retry options: 0 or EINVAL (a delay negative or NaN, or the cap
 * below the first backoff once the defaults are applied). */
int aiometer__retry_check(const aiometer_options *o);

/* The effective delays of o, in seconds. */
double aiometer__retry_delay(const aiometer_options *o);
double aiometer__retry_max_delay(const aiometer_options *o);

/* How many jobs a call with `slots` participants keeps parked before it
 * stops claiming new jobs (the gate), and how many it can ever hold (the
 * heap's size): a participant checks the gate before each claim and parks
 * at most the one job it runs, so the heap never holds more than
 * gate + slots, and never more than the call's n jobs. */
size_t aiometer__retry_gate(size_t slots);
size_t aiometer__retry_cap(size_t slots, size_t n);

/* 0 or ENOMEM. */
int aiometer__retry_heap_init(struct aiometer__retry_heap *h, size_t cap);
void aiometer__retry_heap_destroy(struct aiometer__retry_heap *h);
/* 0, or ENOSPC when full (which the gate makes impossible). */
int aiometer__retry_heap_push(struct aiometer__retry_heap *h, const struct aiometer__retry *r);
/* The earliest due time, or AIOMETER__NEVER when empty. */
uint64_t aiometer__retry_heap_first(const struct aiometer__retry_heap *h);
/* Take the earliest entry: 1, or 0 when empty. */
int aiometer__retry_heap_pop(struct aiometer__retry_heap *h, struct aiometer__retry *out);
/* Make entry i due at `due` (no later than it was) and restore the heap. */
void aiometer__retry_heap_hasten(struct aiometer__retry_heap *h, size_t i, uint64_t due);

/* Backoff k (0 for the first retry): a uniformly random wait in
 * [0, min(max_delay, delay * 2^k)], in nanoseconds. */
uint64_t aiometer__retry_backoff_ns(double delay, double max_delay, size_t k);

#endif
