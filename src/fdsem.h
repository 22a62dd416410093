/* fdsem.h - a counting semaphore in a descriptor: the running cap of a
 * private limiter.
 *
 * A waiter can poll it together with other descriptors (the call's cancel
 * descriptor), so a stopped call ends the wait at once, which a semaphore
 * in memory could not offer. */
#ifndef AIO_FDSEM_H
#define AIO_FDSEM_H

/* A counting semaphore in a descriptor, so that a waiter can poll it
 * together with other descriptors: fd turns readable while a unit is free.
 * An eventfd in semaphore mode where there is one, else a pipe holding one
 * byte per unit (so at most the pipe's capacity, 65536 on Linux). */
struct aio_sem {
    int fd;  /* read end; -1: none */
    int wfd; /* write end (fd itself for an eventfd) */
};
/* 0, EMFILE, ENFILE, ENOMEM (the fault-injection build can make it fail:
 * the descriptor comes from syscalls.c). */
int aio_sem_init(struct aio_sem *s, unsigned count);
/* Take a unit if one is free: 1, else 0.  Never blocks. */
int aio_sem_trytake(struct aio_sem *s);
void aio_sem_give(struct aio_sem *s);
void aio_sem_destroy(struct aio_sem *s);

#endif
