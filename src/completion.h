/* completion.h - the completion queue of a streaming call (amap).
 *
 * run_all stores each result straight into the caller's array and run_any
 * keeps one winner, so only amap needs a queue between the jobs and the
 * consumer.  It is a ring of `cap` slots, and it is also what bounds the
 * call's memory: a job may be claimed only while its index is below
 * window_end, so at most `cap` results are ever running or waiting.
 *
 * - In completion order (unordered), finished results are a FIFO, and
 *   window_end = retired + cap - held, where retired counts results taken
 *   by the consumer plus jobs that ended without a result (failed or
 *   skipped).
 * - In input order, job i lives in slot i % cap and window_end = base + cap
 *   - held, where base is the next index to deliver.
 * held counts results that pop_many moved to the consumer's own buffer and
 * that it has not handed out yet: they are still the call's memory, so the
 * window counts them until aiometer__cq_unhold says they are gone.
 *
 * Every function here is called with the owning call's lock held, except
 * aiometer__cq_window(), which claimers read without it. */
#ifndef AIOMETER__COMPLETION_H
#define AIOMETER__COMPLETION_H

#include <stdatomic.h>
#include <stddef.h>

struct aiometer__cq_slot {
    void *result;
    size_t index;
    int err;   /* keep_going: the job failed with err (result is NULL) */
    int state; /* ordered mode: AIOMETER__SLOT_EMPTY, _READY or _SKIPPED */
};

struct aiometer__cq {
    struct aiometer__cq_slot *slot;
    size_t cap;
    int ordered;
    int discard;           /* results are dropped (the consumer closed) */
    size_t head, count;    /* unordered FIFO */
    size_t base;           /* ordered: next index to deliver */
    size_t base_slot;      /* ordered: base % cap, kept without dividing */
    size_t retired;        /* unordered: results taken or jobs ended without one */
    size_t errs_undelivered; /* failures pushed and not yet popped */
    size_t held;           /* popped into the consumer's buffer, not yet handed out */
    atomic_size_t window_end;
};

/* 0 or ENOMEM. */
int aiometer__cq_init(struct aiometer__cq *q, size_t cap, int ordered);
void aiometer__cq_destroy(struct aiometer__cq *q);

/* Job `index` finished with `result`, or (skip) ended without a result. */
void aiometer__cq_push(struct aiometer__cq *q, size_t index, void *result);
void aiometer__cq_skip(struct aiometer__cq *q, size_t index);
/* keep_going: job `index` failed with err, which is delivered in its place
 * (in its turn, in ordered mode). */
void aiometer__cq_push_err(struct aiometer__cq *q, size_t index, int err);

/* Take the next deliverable entry: 1 with *result, *index and *err (0 for a
 * result) set, or 0 if none is ready yet. */
int aiometer__cq_pop(struct aiometer__cq *q, void **result, size_t *index, int *err);

/* Take up to max deliverable entries at once (one window update for them
 * all): how many were taken. */
size_t aiometer__cq_pop_many(struct aiometer__cq *q, void **result, size_t *index, int *err,
                             size_t max);

/* The consumer's buffer, which pop_many filled, has been handed out: its
 * results stop counting against the window.  1 if the window grew. */
int aiometer__cq_unhold(struct aiometer__cq *q);

/* Drop what is buffered and stop bounding claims: the consumer is gone. */
void aiometer__cq_discard(struct aiometer__cq *q);

/* Claims must stay below this index. */
static inline size_t aiometer__cq_window(struct aiometer__cq *q)
{
    return atomic_load_explicit(&q->window_end, memory_order_acquire);
}

#endif
