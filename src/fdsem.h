/* fdsem.h - a counting semaphore that a waiter can wait on together with a
 * descriptor: the running cap of a private limiter.
 *
 * The count lives in memory and is taken and given with atomic operations,
 * so an uncontended take and give cost no system call.  A descriptor (an
 * eventfd in semaphore mode, else a pipe) carries only wake-ups, so that a
 * waiter can poll it together with the call's cancel descriptor and a
 * stopped call ends the wait at once. */
#ifndef AIOMETER__FDSEM_H
#define AIOMETER__FDSEM_H

#include <stdatomic.h>

struct aiometer__sem {
    atomic_long count;   /* free units */
    atomic_long waiters; /* threads between registering and leaving a wait */
    int fd;              /* wake-ups, read end; -1: none */
    int wfd;             /* write end (fd itself for an eventfd) */
};
/* 0, EMFILE, ENFILE, ENOMEM (the fault-injection build can make it fail:
 * the descriptor comes from syscalls.c). */
int aiometer__sem_init(struct aiometer__sem *s, unsigned count);
/* Take a unit if one is free: 1, else 0.  Never blocks. */
int aiometer__sem_trytake(struct aiometer__sem *s);
/* Take a unit, waiting for one until cancel_fd turns readable: 0,
 * ECANCELED, or poll's errno.  With cancel_fd < 0, EAGAIN instead of a
 * wait. */
int aiometer__sem_take(struct aiometer__sem *s, int cancel_fd);
void aiometer__sem_give(struct aiometer__sem *s);
void aiometer__sem_destroy(struct aiometer__sem *s);

#endif
