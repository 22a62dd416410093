/* ratewait.c - before a job starts: a running slot from the call's
 * limiter, and a start booked with the call's own rate and its limiter
 * (limiter.c holds the GCRA itself), waited for in a way that a stop of the
 * call ends at once. */
#include "config.h"
#include "call.h"
#include "clock.h"
#include "syscalls.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>

/* A rate wait sleeps until this long before the booked time, then spins on
 * the clock for the rest: a sleeping thread wakes tens of microseconds late
 * on a busy machine, a spinning one within a clock read.  The spin costs at
 * most this much CPU per start that had to wait (see bench/README for the
 * figures that chose it); AIOMETER_RATE_SPIN_NS overrides it, 0 disables. */
#define AIOMETER__RATE_SPIN_NS 40000

static uint64_t rate_spin_ns(void)
{
    static _Atomic int64_t cached = -1;
    /* Relaxed: every thread that reads the environment computes the same
     * value, so a racing store can only store what is there already. */
    int64_t v = atomic_load_explicit(&cached, memory_order_relaxed);

    if (v < 0) {
        const char *s = getenv("AIOMETER_RATE_SPIN_NS");
        char *end;
        v = AIOMETER__RATE_SPIN_NS;
        if (s && *s) {
            long long x = strtoll(s, &end, 10);
            if (!*end && x >= 0 && x < 1000000000)
                v = x;
        }
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return (uint64_t)v;
}

/* The call's own rate and its shared limiter each book the start; the job
 * begins at the later of the two times. */
int aiometer__wait_rate(struct aiometer__call *c, struct aiometer__local *L, size_t j,
                        int own_only)
{
    uint64_t asked = aiometer__now_ns(), now = asked, grant = now, spin, wake;

    if (c->has_rate)
        grant = aiometer__gcra_book(&c->own_rate, now);
    if (!own_only && c->shared && c->shared->be.book) {
        uint64_t g2;
        int err = c->shared->be.book(c->shared->state, NULL, now, &g2);
        if (err) {
            aiometer__call_stop(c, AIOMETER__STOP_FAILED, err > 0 ? err : EIO, j);
            return 0;
        }
        if (g2 > grant)
            grant = g2;
    }
    if (grant <= now)
        return atomic_load(&c->stop) == AIOMETER__GOING;

    /* Sleep on stop_cv until shortly before the booked time, so that a
     * failure or a cancellation ends the wait at once. */
    spin = rate_spin_ns();
    wake = grant - now > spin ? grant - spin : now;
    aiometer__call_sleep_until(c, wake);
    /* Relaxed: the spin lasts microseconds and only needs to end soon after
     * a stop, which the final acquire load below confirms. */
    while (atomic_load_explicit(&c->stop, memory_order_relaxed) == AIOMETER__GOING &&
           aiometer__now_ns() < grant)
        aiometer__cpu_relax();
    L->rate_wait_ns += aiometer__now_ns() - asked;
    return atomic_load(&c->stop) == AIOMETER__GOING;
}

/* How often a job asks a limiter backend that cannot wait for a slot. */
#define AIOMETER__SLOT_POLL_MS 1

/* Waits until a slot is free or the call stops. */
int aiometer__take_slot(struct aiometer__call *c, size_t j)
{
    int fd, err;

    err = c->shared->be.acquire(c->shared->state, NULL, -1);
    if (err == EAGAIN) {
        /* None free: wait, on the call's cancel descriptor, which turns
         * readable when the call stops (at its deadline too). */
        err = aiometer__cancel_fd_of(c, &fd);
        while (!err) {
            struct pollfd pfd = { fd, POLLIN, 0 };

            err = c->shared->be.acquire(c->shared->state, NULL, fd);
            if (err != EAGAIN)
                break;
            /* A backend that cannot wait said EAGAIN: ask again after
             * AIOMETER__SLOT_POLL_MS, or at once when the call stops. */
            err = 0;
            poll(&pfd, 1, AIOMETER__SLOT_POLL_MS);
            if (atomic_load(&c->stop) != AIOMETER__GOING)
                return 0;
        }
    }
    if (err == 0) {
        if (atomic_load(&c->stop) == AIOMETER__GOING)
            return 1;
        c->shared->be.release(c->shared->state, NULL);
        return 0;
    }
    if (err != ECANCELED)
        aiometer__call_stop(c, AIOMETER__STOP_FAILED, err > 0 ? err : EIO, j);
    return 0;
}
