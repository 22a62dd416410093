/* limiter.h - where the rate is enforced: GCRA on CLOCK_MONOTONIC, and the
 * limiter object that puts a backend (this process's GCRA and running cap, a
 * host-wide one, Redis, a user's own) behind opts.limiter.
 *
 * The generic cell rate algorithm in its virtual-scheduling form, in integer
 * nanoseconds.  T is the emission interval (1/rate, rounded up), tau the burst
 * tolerance T * (burst - 1).  A start asked for at time t is granted at
 *     g = max(t, TAT - tau)   and then   TAT = max(TAT, t) + T.
 * The booked time g, not the moment a sleeping thread happens to wake, is
 * what advances TAT, so late wake-ups never shift the schedule.
 *
 * The whole state is the one atomic word TAT, updated by compare-and-swap, so
 * a limiter shared by many calls in many threads needs no lock.  TAT only
 * ever grows.  A fresh limiter has TAT = 0: its whole burst is available. */
#ifndef AIOMETER__LIMITER_H
#define AIOMETER__LIMITER_H

#include "aiometer.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct aiometer__gcra {
    _Atomic uint64_t tat; /* theoretical arrival time of the next start */
    uint64_t interval;    /* T, in ns, >= 1 */
    uint64_t tolerance;   /* tau = T * (burst - 1), in ns */
};

/* rate in starts per second (finite, > 0, at most 1e9), burst 0 meaning 1.
 * 0 or EINVAL.  T and tau are held at 2^62 ns at most. */
int aiometer__gcra_init(struct aiometer__gcra *g, double rate, size_t burst);

/* Book one start asked for at time now; returns the granted time (>= now). */
uint64_t aiometer__gcra_book(struct aiometer__gcra *g, uint64_t now);

/* Check limiter options as aiometer_limiter_open does, without side
 * effects: 0 or EINVAL.  max_at_once must be at most `max_cap`. */
int aiometer__limiter_options_check(const aiometer_limiter_options *lo, size_t max_cap);

/* The public aiometer_limiter: a backend and its state. */
struct aiometer_limiter {
    aiometer_limiter_backend be; /* a copy; fields past the user's size are 0 */
    void *state;
    atomic_size_t users; /* calls using it now; destroy says EBUSY while > 0 */
};

/* Make a limiter of one of the library's own backends from `tmpl`, which
 * names every operation: book only if has_rate, acquire and release only
 * if has_cap.  On failure the state is closed (tmpl->close), so the caller
 * has nothing left to undo.  0 or what aiometer_limiter_create_backend
 * returned. */
int aiometer__limiter_make(aiometer_limiter **lim, const aiometer_limiter_backend *tmpl,
                           int has_rate, int has_cap, void *state);

/* The most running slots a private limiter has. */
#define AIOMETER__PRIVATE_MAX_AT_ONCE 65535

/* Per-key limiters: keys remembered when max_keys is 0, and the most a
 * private one may remember (its table has two entries per key). */
#define AIOMETER__DEFAULT_MAX_KEYS 4096
#define AIOMETER__PRIVATE_MAX_KEYS (UINT64_C(1) << 20)

/* keytable.c: a per-key limiter private to this process; lo checked. */
int aiometer__keytable_open(aiometer_limiter **lim, const aiometer_limiter_options *lo);

#endif
