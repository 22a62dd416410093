/* fdsem.h - a counting semaphore in a descriptor: the running cap of a
 * private limiter.
 *
 * A waiter can poll it together with other descriptors (the call's cancel
 * descriptor), so a stopped call ends the wait at once, which a semaphore
 * in memory could not offer. */
#ifndef AIOMETER__FDSEM_H
#define AIOMETER__FDSEM_H

/* A counting semaphore in a descriptor, so that a waiter can poll it
 * together with other descriptors: fd turns readable while a unit is free.
 * An eventfd in semaphore mode where there is one, else a pipe holding one
 * byte per unit (so at most the pipe's capacity, 65536 on Linux). */
struct aiometer__sem {
    int fd;  /* read end; -1: none */
    int wfd; /* write end (fd itself for an eventfd) */
};
/* 0, EMFILE, ENFILE, ENOMEM (the fault-injection build can make it fail:
 * the descriptor comes from syscalls.c). */
int aiometer__sem_init(struct aiometer__sem *s, unsigned count);
/* Take a unit if one is free: 1, else 0.  Never blocks. */
int aiometer__sem_trytake(struct aiometer__sem *s);
void aiometer__sem_give(struct aiometer__sem *s);
void aiometer__sem_destroy(struct aiometer__sem *s);

#endif
