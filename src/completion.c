/* completion.c - the bounded completion queue behind amap. */
#include "config.h"
#include "completion.h"
#include "syscalls.h"

#include <errno.h>
#include <stdint.h>

enum { AIOMETER__SLOT_EMPTY = 0, AIOMETER__SLOT_READY, AIOMETER__SLOT_SKIPPED };

int aiometer__cq_init(struct aiometer__cq *q, size_t cap, int ordered)
{
    q->slot = aiometer__calloc(cap, sizeof(*q->slot));
    if (!q->slot)
        return ENOMEM;
    q->cap = cap;
    q->ordered = ordered;
    q->discard = 0;
    q->head = q->count = q->base = q->base_slot = q->retired = q->errs_undelivered = 0;
    q->held = 0;
    atomic_init(&q->window_end, cap);
    return 0;
}

void aiometer__cq_destroy(struct aiometer__cq *q)
{
    aiometer__free(q->slot);
    q->slot = NULL;
}

static void publish_window(struct aiometer__cq *q)
{
    size_t end;

    if (q->discard)
        end = SIZE_MAX;
    else if (q->ordered)
        end = q->base + q->cap - q->held;
    else
        end = q->retired + q->cap - q->held;
    atomic_store_explicit(&q->window_end, end, memory_order_release);
}

/* Ring positions wrap by a subtraction, not a division: a division costs
 * tens of cycles, and this runs twice per result of an amap of tiny jobs
 * (W7; bench/README). */
static size_t wrap(const struct aiometer__cq *q, size_t pos)
{
    return pos >= q->cap ? pos - q->cap : pos;
}

/* Ordered mode: job `index`'s slot.  The window keeps index within
 * [base, base + cap). */
static struct aiometer__cq_slot *ordered_slot(struct aiometer__cq *q, size_t index)
{
    return &q->slot[wrap(q, q->base_slot + (index - q->base))];
}

static void advance_base(struct aiometer__cq *q)
{
    q->base++;
    q->base_slot = wrap(q, q->base_slot + 1);
}

/* Ordered mode: move base past jobs that ended without a result. */
static void advance_skipped(struct aiometer__cq *q)
{
    struct aiometer__cq_slot *s;

    while ((s = &q->slot[q->base_slot])->state == AIOMETER__SLOT_SKIPPED) {
        s->state = AIOMETER__SLOT_EMPTY;
        advance_base(q);
    }
}

static void push(struct aiometer__cq *q, size_t index, void *result, int err)
{
    struct aiometer__cq_slot *s;

    if (q->discard) {
        aiometer__cq_skip(q, index);
        return;
    }
    if (q->ordered) {
        s = ordered_slot(q, index);
        s->state = AIOMETER__SLOT_READY;
    } else {
        /* The window guarantees room: claimed - retired <= cap. */
        s = &q->slot[wrap(q, q->head + q->count)];
        q->count++;
    }
    s->result = result;
    s->index = index;
    s->err = err;
}

void aiometer__cq_push(struct aiometer__cq *q, size_t index, void *result)
{
    push(q, index, result, 0);
}

void aiometer__cq_push_err(struct aiometer__cq *q, size_t index, int err)
{
    /* Counted even when the consumer has gone: its close then says that an
     * error was not delivered. */
    q->errs_undelivered++;
    push(q, index, NULL, err);
}

void aiometer__cq_skip(struct aiometer__cq *q, size_t index)
{
    if (q->discard) {
        /* Nothing is delivered any more and the window is unbounded. */
        return;
    }
    if (q->ordered) {
        ordered_slot(q, index)->state = AIOMETER__SLOT_SKIPPED;
        advance_skipped(q);
    } else {
        q->retired++;
    }
    publish_window(q);
}

/* Take one entry, without publishing the window. */
static int pop_one(struct aiometer__cq *q, void **result, size_t *index, int *err)
{
    struct aiometer__cq_slot *s;

    if (q->ordered) {
        advance_skipped(q);
        s = &q->slot[q->base_slot];
        if (s->state != AIOMETER__SLOT_READY)
            return 0;
        s->state = AIOMETER__SLOT_EMPTY;
        advance_base(q);
        advance_skipped(q);
    } else {
        if (q->count == 0)
            return 0;
        s = &q->slot[q->head];
        q->head = wrap(q, q->head + 1);
        q->count--;
        q->retired++;
    }
    *result = s->result;
    *index = s->index;
    *err = s->err;
    if (s->err)
        q->errs_undelivered--;
    return 1;
}

int aiometer__cq_pop(struct aiometer__cq *q, void **result, size_t *index, int *err)
{
    if (q->discard || !pop_one(q, result, index, err))
        return 0;
    publish_window(q);
    return 1;
}

size_t aiometer__cq_pop_many(struct aiometer__cq *q, void **result, size_t *index, int *err,
                             size_t max)
{
    size_t n = 0;

    if (q->discard)
        return 0;
    while (n < max && pop_one(q, &result[n], &index[n], &err[n]))
        n++;
    /* Each popped result left the queue, but not the call: it waits in
     * the consumer's buffer, so the window does not move for it yet. */
    q->held += n;
    if (n)
        publish_window(q); /* skipped jobs passed over in input order count */
    return n;
}

int aiometer__cq_unhold(struct aiometer__cq *q)
{
    if (q->held == 0)
        return 0;
    q->held = 0;
    publish_window(q);
    return 1;
}

void aiometer__cq_discard(struct aiometer__cq *q)
{
    q->discard = 1;
    q->count = 0;
    publish_window(q);
}
