/* amap_impl.h - the streaming iterator's state, shared by amap.c (opening
 * it and taking results) and amap_close.c (cancelling and closing it). */
#ifndef AIOMETER__AMAP_IMPL_H
#define AIOMETER__AMAP_IMPL_H

#include "call.h"
#include "completion.h"

#include <stdatomic.h>
#include <stdint.h>

/* Results the consumer takes from the queue per lock hold, at most.  It
 * must fit the 16-bit fields of take_state below. */
#define AIOMETER__AMAP_TAKE 64

/* The take buffer's state word: (generation << 32) | (head << 16) | end.
 * Results [head, end) are waiting; the generation changes on every fill. */
#define TAKE_STATE(gen, head, end)                                                         \
    (((uint64_t)(gen) << 32) | ((uint64_t)(head) << 16) | (uint64_t)(end))
#define TAKE_HEAD(s) ((size_t)(((s) >> 16) & 0xffff))
#define TAKE_END(s) ((size_t)((s)&0xffff))
#define TAKE_GEN(s) ((uint32_t)((s) >> 32))

struct aiometer_amap {
    struct aiometer__call call;
    struct aiometer__cq cq;
    uint64_t alone_since; /* when the consumer last saw no participant (0: it
                           * did not); see aiometer__call_help_if_alone_locked */
    int end;         /* what next returned at the end (0: not yet) */
    /* The jobs' function is known to be short (handoff.c): consumers run
     * batches of jobs themselves when no result is ready, `batch` jobs at a
     * time (adapted as the participants' batches are, jobloop.c). */
    int tiny;
    atomic_size_t batch;
    /* Results taken from the queue in one hold of the call's lock and not
     * yet handed out.  Several threads may consume at once, and each result
     * still goes to exactly one of them, without a lock per result (a
     * mutex's lock and unlock were 40 % of W7's time, bench/README):
     * - Only a holder of the call's lock fills the buffer, and only when it
     *   is empty (head == end): it stores the slots, then publishes a new
     *   state with the next generation (release).
     * - A consumer reads the state (acquire), then the slot at head, then
     *   moves head on with a compare-and-swap of the whole state word.  If
     *   the buffer was refilled meanwhile the generation differs and the
     *   swap fails, so a slot read during a refill is never handed out.
     * The slots are atomics (relaxed) because such a read may overlap a
     * refill's writes. */
    _Atomic uint64_t take_state;
    _Atomic(void *) l_result[AIOMETER__AMAP_TAKE];
    atomic_size_t l_index[AIOMETER__AMAP_TAKE];
    atomic_int l_err[AIOMETER__AMAP_TAKE]; /* keep_going: a failure in place of a result */
};

#endif
