/* list.h - an intrusive doubly linked list with a sentinel head.
 *
 * The node lives inside the object that is listed (a call in its pool's
 * queue, a pool in the registry of pools), so linking costs no allocation
 * and unlinking needs no search.  Whoever owns the list guards it with its
 * own lock; nothing here is atomic. */
#ifndef AIO_LIST_H
#define AIO_LIST_H

#include <stddef.h>

struct aio_list {
    struct aio_list *prev, *next;
};

/* The object that holds node `ptr` as its member `field`. */
#define aio_list_entry(ptr, type, field) ((type *)(void *)((char *)(ptr) - offsetof(type, field)))

/* An empty list, or a node that is on no list: it points at itself. */
static inline void aio_list_init(struct aio_list *l)
{
    l->prev = l->next = l;
}

static inline int aio_list_empty(const struct aio_list *l)
{
    return l->next == l;
}

/* Whether a node made with aio_list_init() is on a list now. */
static inline int aio_list_linked(const struct aio_list *n)
{
    return n->next != n;
}

static inline void aio_list_append(struct aio_list *head, struct aio_list *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

/* Take n off its list; it is then on none (aio_list_linked() says 0). */
static inline void aio_list_remove(struct aio_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    aio_list_init(n);
}

#endif
