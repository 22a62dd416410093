/* list.h - an intrusive doubly linked list with a sentinel head.
 *
 * The node lives inside the object that is listed (a call in its pool's
 * queue, a pool in the registry of pools), so linking costs no allocation
 * and unlinking needs no search.  Whoever owns the list guards it with its
 * own lock; nothing here is atomic. */
#ifndef AIOMETER__LIST_H
#define AIOMETER__LIST_H

#include <stddef.h>

struct aiometer__list {
    struct aiometer__list *prev, *next;
};

/* The object that holds node `ptr` as its member `field`. */
#define aiometer__list_entry(ptr, type, field)                                                     \
    ((type *)(void *)((char *)(ptr)-offsetof(type, field)))

/* An empty list, or a node that is on no list: it points at itself. */
static inline void aiometer__list_init(struct aiometer__list *l)
{
    l->prev = l->next = l;
}

static inline int aiometer__list_empty(const struct aiometer__list *l)
{
    return l->next == l;
}

/* Whether a node made with aiometer__list_init() is on a list now. */
static inline int aiometer__list_linked(const struct aiometer__list *n)
{
    return n->next != n;
}

static inline void aiometer__list_append(struct aiometer__list *head, struct aiometer__list *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

/* Take n off its list; it is then on none (aiometer__list_linked() says 0). */
static inline void aiometer__list_remove(struct aiometer__list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    aiometer__list_init(n);
}

#endif
