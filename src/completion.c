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
    q->head = q->count = q->base = q->retired = 0;
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
        end = q->base + q->cap;
    else
        end = q->retired + q->cap;
    atomic_store_explicit(&q->window_end, end, memory_order_release);
}

/* Ordered mode: move base past jobs that ended without a result. */
static void advance_skipped(struct aiometer__cq *q)
{
    struct aiometer__cq_slot *s;

    while ((s = &q->slot[q->base % q->cap])->state == AIOMETER__SLOT_SKIPPED) {
        s->state = AIOMETER__SLOT_EMPTY;
        q->base++;
    }
}

void aiometer__cq_push(struct aiometer__cq *q, size_t index, void *result)
{
    if (q->discard) {
        aiometer__cq_skip(q, index);
        return;
    }
    if (q->ordered) {
        struct aiometer__cq_slot *s = &q->slot[index % q->cap];
        s->result = result;
        s->index = index;
        s->state = AIOMETER__SLOT_READY;
    } else {
        /* The window guarantees room: claimed - retired <= cap. */
        struct aiometer__cq_slot *s = &q->slot[(q->head + q->count) % q->cap];
        s->result = result;
        s->index = index;
        q->count++;
    }
}

void aiometer__cq_skip(struct aiometer__cq *q, size_t index)
{
    if (q->discard) {
        /* Nothing is delivered any more and the window is unbounded. */
        return;
    }
    if (q->ordered) {
        q->slot[index % q->cap].state = AIOMETER__SLOT_SKIPPED;
        advance_skipped(q);
    } else {
        q->retired++;
    }
    publish_window(q);
}

int aiometer__cq_pop(struct aiometer__cq *q, void **result, size_t *index)
{
    struct aiometer__cq_slot *s;

    if (q->discard)
        return 0;
    if (q->ordered) {
        advance_skipped(q);
        s = &q->slot[q->base % q->cap];
        if (s->state != AIOMETER__SLOT_READY)
            return 0;
        s->state = AIOMETER__SLOT_EMPTY;
        q->base++;
        advance_skipped(q);
    } else {
        if (q->count == 0)
            return 0;
        s = &q->slot[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        q->retired++;
    }
    *result = s->result;
    *index = s->index;
    publish_window(q);
    return 1;
}

void aiometer__cq_discard(struct aiometer__cq *q)
{
    q->discard = 1;
    q->count = 0;
    publish_window(q);
}
