/* syscalls.c - allocation, thread-library and descriptor wrappers: the
 * seam where the fault-injection build makes the k-th of them fail. */
#include "config.h"
#include "syscalls.h"
#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_SYS_EVENTFD_H
#include <sys/eventfd.h>
#endif
#ifdef HAVE_SYS_TIMERFD_H
#include <sys/timerfd.h>
#endif
#ifdef HAVE_SYS_EPOLL_H
#include <sys/epoll.h>
#endif

#ifdef AIOMETER_FAULT_INJECTION

static atomic_long fault_target;
static atomic_long fault_count;

void aiometer__fault_arm(long k)
{
    atomic_store(&fault_count, 0);
    atomic_store(&fault_target, k);
}

long aiometer__fault_calls(void)
{
    return atomic_load(&fault_count);
}

/* True when this fallible call is the one chosen to fail. */
static int fault_now(void)
{
    long n = atomic_fetch_add(&fault_count, 1) + 1;
    return n == atomic_load(&fault_target);
}
#else
#define fault_now() 0
#endif

void *aiometer__calloc(size_t n, size_t size)
{
    if (fault_now())
        return NULL;
    return calloc(n, size);
}

void aiometer__free(void *p)
{
    free(p);
}

int aiometer__mutex_init(pthread_mutex_t *m)
{
    if (fault_now())
        return ENOMEM;
    return pthread_mutex_init(m, NULL);
}

int aiometer__cond_init(pthread_cond_t *c)
{
    pthread_condattr_t attr;
    int err;

    if (fault_now())
        return ENOMEM;
    err = pthread_condattr_init(&attr);
    if (err)
        return err;
    err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (!err)
        err = pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
    return err;
}

int aiometer__sync_init(pthread_mutex_t *m, pthread_cond_t *const cv[], size_t n)
{
    size_t made;
    int err = aiometer__mutex_init(m);

    if (err)
        return err == ENOMEM ? ENOMEM : EAGAIN;
    for (made = 0; made < n; made++) {
        err = aiometer__cond_init(cv[made]);
        if (err)
            break;
    }
    if (!err)
        return 0;
    while (made > 0)
        pthread_cond_destroy(cv[--made]);
    pthread_mutex_destroy(m);
    return err == ENOMEM ? ENOMEM : EAGAIN;
}

int aiometer__thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
    if (fault_now())
        return EAGAIN;
    return pthread_create(t, NULL, fn, arg);
}

void aiometer__cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, uint64_t deadline_ns)
{
    if (deadline_ns == AIOMETER__NEVER) {
        pthread_cond_wait(c, m);
    } else {
        struct timespec ts = aiometer__ns_to_timespec(deadline_ns);
        pthread_cond_timedwait(c, m, &ts);
    }
}

unsigned aiometer__online_cpus(void)
{
    static atomic_uint n;
    unsigned v = atomic_load_explicit(&n, memory_order_relaxed);

    if (v == 0) {
        long r = sysconf(_SC_NPROCESSORS_ONLN);
        v = r > 0 && r < 65536 ? (unsigned)r : 1;
        atomic_store_explicit(&n, v, memory_order_relaxed);
    }
    return v;
}

void aiometer__lock(pthread_mutex_t *m)
{
    if (pthread_mutex_lock(m) != 0)
        abort();
}

void aiometer__unlock(pthread_mutex_t *m)
{
    if (pthread_mutex_unlock(m) != 0)
        abort();
}

/* A descriptor wrapper's share of the seam: fail as a full descriptor
 * table would. */
static int fault_fd(void)
{
    if (!fault_now())
        return 0;
    errno = EMFILE;
    return -1;
}

#ifdef HAVE_SYS_EVENTFD_H
int aiometer__eventfd(unsigned count, int semaphore)
{
    if (fault_fd())
        return -1;
    return eventfd(count, EFD_CLOEXEC | EFD_NONBLOCK | (semaphore ? EFD_SEMAPHORE : 0));
}
#endif

#ifdef HAVE_SYS_TIMERFD_H
int aiometer__timerfd(void)
{
    if (fault_fd())
        return -1;
    return timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
}
#endif

#ifdef HAVE_SYS_EPOLL_H
int aiometer__epoll(void)
{
    if (fault_fd())
        return -1;
    return epoll_create1(EPOLL_CLOEXEC);
}
#endif

int aiometer__pipe(int fd[2])
{
    if (fault_fd())
        return -1;
    if (pipe(fd) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(fd[i], F_SETFD, FD_CLOEXEC);
        fcntl(fd[i], F_SETFL, O_NONBLOCK);
    }
    return 0;
}
