/* syscalls.h - the library's only doors to the allocator, the thread
 * library and the kernel's descriptors: the fault-injection seam.
 *
 * Every allocation, thread creation, mutex or condition variable
 * initialisation, and every eventfd, timerfd, epoll or pipe the library
 * makes goes through these wrappers, so that a fault-injection build
 * (configure --enable-fault-injection) can make the k-th of them fail and the
 * tests can show that each failure is reported and leaks nothing.
 *
 * Condition variables made here wait on CLOCK_MONOTONIC, so deadlines given
 * to aiometer__cond_wait_until() are aiometer__now_ns() times. */
#ifndef AIOMETER__SYSCALLS_H
#define AIOMETER__SYSCALLS_H

#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>

void *aiometer__calloc(size_t n, size_t size);
void aiometer__free(void *p);
/* 0, or the errno value pthread_mutex_init / pthread_cond_init returned. */
int aiometer__mutex_init(pthread_mutex_t *m);
int aiometer__cond_init(pthread_cond_t *c);
/* A mutex and the n condition variables that go with it, made in that
 * order; on failure none is left made.  0, ENOMEM or EAGAIN. */
int aiometer__sync_init(pthread_mutex_t *m, pthread_cond_t *const cv[], size_t n);
int aiometer__thread_create(pthread_t *t, void *(*fn)(void *), void *arg);

/* Wait on c until signalled or until the monotonic time deadline_ns
 * (AIOMETER__NEVER: no time limit).  Spurious wake-ups happen: callers loop on
 * their predicate. */
void aiometer__cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, uint64_t deadline_ns);

/* Descriptors, all close-on-exec and non-blocking, or -1 with errno set
 * (a failure the fault-injection build can make, as EMFILE). */
#ifdef HAVE_SYS_EVENTFD_H
int aiometer__eventfd(unsigned count, int semaphore);
#endif
#ifdef HAVE_SYS_TIMERFD_H
int aiometer__timerfd(void);
#endif
#ifdef HAVE_SYS_EPOLL_H
int aiometer__epoll(void);
#endif
/* 0, or -1 with errno set. */
int aiometer__pipe(int fd[2]);

/* Thread cancellation.  No public function of the library is cut short by
 * pthread_cancel: a call's state lives on its caller's stack and is shared
 * with the pool's threads, and unwinding from one of its waits (a
 * condition variable, poll, a job's own cancellation points) would leave
 * locks held and the state linked into the pool.  A function that waits
 * disables cancellation around its work (aiometer__nocancel_begin) and,
 * once nothing of the call is left, restores the caller's state and acts
 * on a request that came meanwhile (aiometer__nocancel_end with act set).
 * The pool's threads run with cancellation disabled for good.  Static
 * inline: nothing to export. */
static inline int aiometer__nocancel_begin(void)
{
    int old = PTHREAD_CANCEL_ENABLE;

    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    return old;
}

static inline void aiometer__nocancel_end(int old, int act)
{
    int ignored;

    pthread_setcancelstate(old, &ignored);
    if (act && old == PTHREAD_CANCEL_ENABLE)
        pthread_testcancel();
}

/* The core this thread runs on now, or -1 where that cannot be asked. */
static inline int aiometer__current_cpu(void)
{
#ifdef HAVE_SCHED_GETCPU
    return sched_getcpu();
#else
    return -1;
#endif
}

/* The number of online cores, asked once (1 if unknown). */
unsigned aiometer__online_cpus(void);

/* Lock and unlock that treat failure as the programming error it is. */
void aiometer__lock(pthread_mutex_t *m);
void aiometer__unlock(pthread_mutex_t *m);

#ifdef AIOMETER_FAULT_INJECTION
/* Make the k-th fallible call from now fail (k >= 1); 0 disarms.  Returns
 * nothing; aiometer__fault_calls() tells how many fallible calls were made since
 * the last arm, so a test knows when k has passed the last one. */
void aiometer__fault_arm(long k);
long aiometer__fault_calls(void);
#endif

#endif
