/* sync.h - the library's only doors to the allocator and the thread library.
 *
 * Every allocation, thread creation and mutex or condition variable
 * initialisation goes through these wrappers, so that a fault-injection build
 * (configure --enable-fault-injection) can make the k-th of them fail and the
 * tests can show that each failure is reported and leaks nothing.
 *
 * Condition variables made here wait on CLOCK_MONOTONIC, so deadlines given
 * to aio_cond_wait_until() are aio_now_ns() times. */
#ifndef AIO_SYNC_H
#define AIO_SYNC_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

void *aio_calloc(size_t n, size_t size);
void aio_free(void *p);
/* 0, or the errno value pthread_mutex_init / pthread_cond_init returned. */
int aio_mutex_init(pthread_mutex_t *m);
int aio_cond_init(pthread_cond_t *c);
int aio_thread_create(pthread_t *t, void *(*fn)(void *), void *arg);

/* Wait on c until signalled or until the monotonic time deadline_ns
 * (AIO_NEVER: no time limit).  Spurious wake-ups happen: callers loop on
 * their predicate. */
void aio_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, uint64_t deadline_ns);

/* A counting semaphore in a descriptor, so that a waiter can poll it
 * together with other descriptors: fd turns readable while a unit is free.
 * An eventfd in semaphore mode where there is one, else a pipe holding one
 * byte per unit (so at most the pipe's capacity, 65536 on Linux). */
struct aio_sem {
    int fd;  /* read end; -1: none */
    int wfd; /* write end (fd itself for an eventfd) */
};
/* 0, EMFILE, ENFILE, ENOMEM (a failure the fault-injection build can make). */
int aio_sem_init(struct aio_sem *s, unsigned count);
/* Take a unit if one is free: 1, else 0.  Never blocks. */
int aio_sem_trytake(struct aio_sem *s);
void aio_sem_give(struct aio_sem *s);
void aio_sem_destroy(struct aio_sem *s);

/* Thread cancellation.  No public function of the library is cut short by
 * pthread_cancel: a call's state lives on its caller's stack and is shared
 * with the pool's threads, and unwinding from one of its waits (a
 * condition variable, poll, a job's own cancellation points) would leave
 * locks held and the state linked into the pool.  A function that waits
 * disables cancellation around its work (aio_nocancel_begin) and, once
 * nothing of the call is left, restores the caller's state and acts on a
 * request that came meanwhile (aio_nocancel_end with act set).  The pool's
 * threads run with cancellation disabled for good. */
static inline int aio_nocancel_begin(void)
{
    int old = PTHREAD_CANCEL_ENABLE;

    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    return old;
}

static inline void aio_nocancel_end(int old, int act)
{
    int ignored;

    pthread_setcancelstate(old, &ignored);
    if (act && old == PTHREAD_CANCEL_ENABLE)
        pthread_testcancel();
}

/* Lock and unlock that treat failure as the programming error it is. */
void aio_lock(pthread_mutex_t *m);
void aio_unlock(pthread_mutex_t *m);

#ifdef AIOMETER_FAULT_INJECTION
/* Make the k-th fallible call from now fail (k >= 1); 0 disarms.  Returns
 * nothing; aio_fault_calls() tells how many fallible calls were made since
 * the last arm, so a test knows when k has passed the last one. */
void aio_fault_arm(long k);
long aio_fault_calls(void);
#endif

#endif
