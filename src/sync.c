/* sync.c - allocation and thread-library wrappers, with fault injection. */
#include "config.h"
#include "sync.h"
#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_SYS_EVENTFD_H
#include <sys/eventfd.h>
#endif

#ifdef AIOMETER_FAULT_INJECTION
#include <stdatomic.h>

static atomic_long fault_target;
static atomic_long fault_count;

void aio_fault_arm(long k)
{
    atomic_store(&fault_count, 0);
    atomic_store(&fault_target, k);
}

long aio_fault_calls(void)
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

void *aio_calloc(size_t n, size_t size)
{
    if (fault_now())
        return NULL;
    return calloc(n, size);
}

void aio_free(void *p)
{
    free(p);
}

int aio_mutex_init(pthread_mutex_t *m)
{
    if (fault_now())
        return ENOMEM;
    return pthread_mutex_init(m, NULL);
}

int aio_cond_init(pthread_cond_t *c)
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

int aio_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
    if (fault_now())
        return EAGAIN;
    return pthread_create(t, NULL, fn, arg);
}

void aio_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, uint64_t deadline_ns)
{
    if (deadline_ns == AIO_NEVER) {
        pthread_cond_wait(c, m);
    } else {
        struct timespec ts = aio_ns_to_timespec(deadline_ns);
        pthread_cond_timedwait(c, m, &ts);
    }
}

void aio_lock(pthread_mutex_t *m)
{
    if (pthread_mutex_lock(m) != 0)
        abort();
}

void aio_unlock(pthread_mutex_t *m)
{
    if (pthread_mutex_unlock(m) != 0)
        abort();
}

int aio_sem_init(struct aio_sem *s, unsigned count)
{
    if (fault_now())
        return EMFILE;
#ifdef HAVE_SYS_EVENTFD_H
    s->fd = s->wfd = eventfd(count, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
    return s->fd < 0 ? errno : 0;
#else
    int p[2];
    char buf[256] = { 0 };

    if (pipe(p) != 0)
        return errno;
    for (int i = 0; i < 2; i++) {
        fcntl(p[i], F_SETFD, FD_CLOEXEC);
        fcntl(p[i], F_SETFL, O_NONBLOCK);
    }
    s->fd = p[0];
    s->wfd = p[1];
    while (count > 0) {
        size_t k = count < sizeof(buf) ? count : sizeof(buf);
        ssize_t w = write(s->wfd, buf, k);
        if (w <= 0) {
            aio_sem_destroy(s);
            return EINVAL;
        }
        count -= (unsigned)w;
    }
    return 0;
#endif
}

int aio_sem_trytake(struct aio_sem *s)
{
#ifdef HAVE_SYS_EVENTFD_H
    uint64_t v;
    return read(s->fd, &v, sizeof(v)) == (ssize_t)sizeof(v);
#else
    char c;
    return read(s->fd, &c, 1) == 1;
#endif
}

void aio_sem_give(struct aio_sem *s)
{
    ssize_t r;
#ifdef HAVE_SYS_EVENTFD_H
    uint64_t one = 1;
    r = write(s->wfd, &one, sizeof(one));
#else
    char c = 0;
    r = write(s->wfd, &c, 1);
#endif
    /* Units given back never exceed units taken, so the write cannot find
     * the counter (or the pipe) full. */
    (void)r;
}

void aio_sem_destroy(struct aio_sem *s)
{
    if (s->fd >= 0)
        close(s->fd);
    if (s->wfd >= 0 && s->wfd != s->fd)
        close(s->wfd);
    s->fd = s->wfd = -1;
}
