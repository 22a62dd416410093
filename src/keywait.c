/* keywait.c - calls on a per-key limiter: a job whose key cannot start it
 * yet is set aside, and the participant goes on to a job whose key is
 * ready, so that a busy key never holds up the others (no head-of-line
 * blocking).
 *
 * A job set aside is parked in the call's retry heap (retry.h), exactly as
 * a job in backoff is, and picked up by the same participants when it is
 * due.  Two things make a key say "not yet":
 *   - its running cap: acquire (never waiting, cancel_fd -1) says EAGAIN.
 *     The job is parked as WAIT_SLOT and asked about again after a poll
 *     interval (1 ms, doubling up to AIOMETER__KEY_POLL_MAX_NS), or at once
 *     when a job of this call gives back a slot of the same key
 *     (aiometer__key_released).  A backend whose key table is full says
 *     EAGAIN too, from acquire or book, and is polled the same way.
 *   - its rate: book grants a start in the future.  The booking is spent,
 *     so the job holds it: it is parked as WAIT_START with its due time the
 *     booked start (holding the key's slot, if it took one, as a job waiting
 *     for its start always has), and runs when due.
 * The heap is bounded by the same gate as retries: a participant checks
 * the gate before it claims a new job, and sets aside at most the one job
 * it claimed, so at most gate + slots jobs are ever set aside; at the gate,
 * claiming waits for set-aside jobs to start.
 *
 * The call's own max_per_second is a global cap, booked only once the key
 * has let the job through, so that a job waiting for its key never holds a
 * start of the whole call's budget. */
#include "config.h"
#include "call.h"
#include "clock.h"
#include "syscalls.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

/* The longest a job set aside for a slot waits before it asks again, when
 * no job of its own call frees one (a slot freed by another call, another
 * process or another host is seen this way). */
#define AIOMETER__KEY_POLL_MAX_NS UINT64_C(10000000)
#define AIOMETER__KEY_POLL_MIN_NS UINT64_C(1000000)

/* FNV-1a: only to find a key's set-aside jobs quickly; equal strings give
 * equal hashes, and a collision only asks about a job early. */
static uint64_t key_hash(const char *k)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);

    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * UINT64_C(0x100000001b3);
    return h | 1;
}

static void *job_arg(struct aiometer__call *c, size_t j, void *source_arg)
{
    if (c->jobs)
        return c->jobs[j].arg;
    return c->source ? source_arg : c->args[j];
}

/* Set r aside as `why`: 0 if parked, -1 if the call stopped meanwhile (the
 * job then gives back what it holds and does not run). */
static int set_aside(struct aiometer__call *c, struct aiometer__retry *r, int why)
{
    r->wait = (unsigned char)why;
    if (why == AIOMETER__WAIT_SLOT) {
        uint64_t poll = AIOMETER__KEY_POLL_MIN_NS << (r->polls < 4 ? r->polls : 4);
        if (poll > AIOMETER__KEY_POLL_MAX_NS)
            poll = AIOMETER__KEY_POLL_MAX_NS;
        if (r->polls < 16)
            r->polls++;
        r->due = aiometer__now_ns() + poll;
    }
    if (aiometer__park(c, r))
        return 0;
    if (r->hold)
        c->shared->be.release(c->shared->state, r->key);
    return -1;
}

/* Whether a job of this key that came before job `before` is set aside
 * for a slot.  Then job `before` waits behind it rather than race it for
 * the next slot: without this, jobs claimed later took the key's slots as
 * they came free while a job set aside early went on polling (one waited
 * 1.5 s while three later jobs of its key ran, check_keyed.c). */
static int earlier_waiter(struct aiometer__call *c, uint64_t h, const char *key, size_t before)
{
    int found = 0;

    if (atomic_load(&c->slot_waits) == 0)
        return 0;
    aiometer__lock(&c->lock);
    for (size_t i = 0; i < c->rq.n && !found; i++) {
        const struct aiometer__retry *e = &c->rq.e[i];

        found = e->wait == AIOMETER__WAIT_SLOT && e->hash == h && e->index < before &&
                strcmp(e->key, key) == 0;
    }
    aiometer__unlock(&c->lock);
    return found;
}

static void stop_with(struct aiometer__call *c, struct aiometer__retry *r, int err)
{
    if (r->hold)
        c->shared->be.release(c->shared->state, r->key);
    aiometer__call_stop(c, AIOMETER__STOP_FAILED, err > 0 ? err : EIO, r->index);
}

int aiometer__key_ready(struct aiometer__call *c, struct aiometer__local *L, size_t j, void *arg,
                        const struct aiometer__retry *re, const char **key, int *slot)
{
    const aiometer_limiter_backend *be = &c->shared->be;
    struct aiometer__retry r;
    uint64_t now, start;
    int err;

    *slot = 0;
    if (re) {
        r = *re;
    } else {
        memset(&r, 0, sizeof r);
        r.index = j;
        r.arg = arg;
        /* Asked once per job: a retry or a set-aside job carries it. */
        r.key = c->key(job_arg(c, j, arg), c->key_arg);
        if (!r.key) {
            aiometer__call_stop(c, AIOMETER__STOP_FAILED, EINVAL, j);
            return -1;
        }
    }
    *key = r.key;
    if (!r.hash)
        r.hash = key_hash(r.key);
    if (r.wait == AIOMETER__WAIT_RETRY)
        r.polls = 0; /* a fresh attempt: slot and start are asked for anew */
    if (r.wait != AIOMETER__WAIT_START) {
        if (be->acquire && !r.hold) {
            if (earlier_waiter(c, r.hash, r.key, r.index))
                return set_aside(c, &r, AIOMETER__WAIT_SLOT);
            err = be->acquire(c->shared->state, r.key, -1);
            if (err == EAGAIN)
                return set_aside(c, &r, AIOMETER__WAIT_SLOT);
            if (err) {
                stop_with(c, &r, err);
                return -1;
            }
            r.hold = 1;
        }
        if (be->book) {
            now = aiometer__now_ns();
            err = be->book(c->shared->state, r.key, now, &start);
            if (err == EAGAIN)
                return set_aside(c, &r, AIOMETER__WAIT_SLOT);
            if (err) {
                stop_with(c, &r, err);
                return -1;
            }
            if (start > now) {
                r.due = start;
                return set_aside(c, &r, AIOMETER__WAIT_START);
            }
        }
    }
    /* The key lets the job start (a job set aside for its start is picked
     * up only once due <= now, so never early); the call's own rate comes
     * last. */
    if (atomic_load(&c->stop) != AIOMETER__GOING ||
        (c->has_rate && !aiometer__wait_rate(c, L, j, 1))) {
        if (r.hold)
            c->shared->be.release(c->shared->state, r.key);
        return -1;
    }
    *slot = r.hold;
    return 1;
}

void aiometer__key_released(struct aiometer__call *c, const char *key)
{
    uint64_t h;
    size_t i, best = SIZE_MAX;

    if (atomic_load(&c->slot_waits) == 0)
        return;
    h = key_hash(key);
    aiometer__lock(&c->lock);
    /* The first set-aside job of this key (the lowest index: the others
     * wait behind it, earlier_waiter) is asked about now. */
    for (i = 0; i < c->rq.n; i++) {
        const struct aiometer__retry *e = &c->rq.e[i];
        if (e->wait == AIOMETER__WAIT_SLOT && e->hash == h && strcmp(e->key, key) == 0 &&
            (best == SIZE_MAX || e->index < c->rq.e[best].index))
            best = i;
    }
    if (best != SIZE_MAX) {
        uint64_t first = aiometer__retry_heap_first(&c->rq), now = aiometer__now_ns();
        aiometer__retry_heap_hasten(&c->rq, best, now);
        if (now < first)
            pthread_cond_signal(c->retry_timer ? &c->retry_timer_cv : &c->retry_cv);
    }
    aiometer__unlock(&c->lock);
}
