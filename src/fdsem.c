/* fdsem.c - the semaphore of fdsem.h.
 *
 * Taking is a compare-and-swap on `count`; giving is an increment, followed
 * by one token written to the descriptor when someone waits.  A waiter
 * registers in `waiters`, tries once more, and only then polls.
 *
 * No wake-up is lost.  All four operations on count and waiters are
 * sequentially consistent, so in their single order either the waiter's
 * last try comes after a give's increment (and takes the unit), or the
 * give's read of `waiters` comes after the waiter registered (and writes a
 * token, which keeps the descriptor readable until some waiter reads it).
 * Every unit given while anyone waits is thus followed by a token, and a
 * waiter that reads a token tries again; if it loses the unit to another
 * taker, that taker has it, so no unit stays free while all sleep.  Tokens
 * may outlive their waiter (it took the unit on its own last try, or its
 * call stopped); a later waiter then wakes once for nothing and reads it,
 * so stale tokens cost a loop each and never accumulate past the gives.
 *
 * Figures (bench/host_bench, private limiter, one process): take + give
 * cost ~1.9 us with the count in an eventfd (a read and a write system
 * call); the atomic count takes that out of the uncontended path. */
#include "config.h"
#include "fdsem.h"
#include "syscalls.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <unistd.h>

int aiometer__sem_init(struct aiometer__sem *s, unsigned count)
{
    atomic_init(&s->count, (long)count);
    atomic_init(&s->waiters, 0);
#ifdef HAVE_SYS_EVENTFD_H
    s->fd = s->wfd = aiometer__eventfd(0, 1);
    return s->fd < 0 ? errno : 0;
#else
    {
        int p[2];

        if (aiometer__pipe(p) != 0)
            return errno;
        s->fd = p[0];
        s->wfd = p[1];
    }
    return 0;
#endif
}

int aiometer__sem_trytake(struct aiometer__sem *s)
{
    long n = atomic_load(&s->count);

    while (n > 0)
        if (atomic_compare_exchange_weak(&s->count, &n, n - 1))
            return 1;
    return 0;
}

/* Read one token, if there is one (the descriptor is non-blocking). */
static void read_token(struct aiometer__sem *s)
{
    ssize_t r;
#ifdef HAVE_SYS_EVENTFD_H
    uint64_t v;
    r = read(s->fd, &v, sizeof(v));
#else
    char c;
    r = read(s->fd, &c, 1);
#endif
    (void)r;
}

int aiometer__sem_take(struct aiometer__sem *s, int cancel_fd)
{
    int err = 0;

    if (aiometer__sem_trytake(s))
        return 0;
    if (cancel_fd < 0)
        return EAGAIN;
    atomic_fetch_add(&s->waiters, 1);
    for (;;) {
        struct pollfd pfd[2] = { { s->fd, POLLIN, 0 }, { cancel_fd, POLLIN, 0 } };

        /* After registering: see the comment at the top. */
        if (aiometer__sem_trytake(s))
            break;
        if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
            err = errno;
            break;
        }
        if (pfd[1].revents) {
            err = ECANCELED;
            break;
        }
        if (pfd[0].revents)
            read_token(s);
    }
    atomic_fetch_sub(&s->waiters, 1);
    return err;
}

void aiometer__sem_give(struct aiometer__sem *s)
{
    ssize_t r;

    atomic_fetch_add(&s->count, 1);
    if (atomic_load(&s->waiters) == 0)
        return;
    {
#ifdef HAVE_SYS_EVENTFD_H
        uint64_t one = 1;
        r = write(s->wfd, &one, sizeof(one));
#else
        char c = 0;
        /* A full pipe is readable already: EAGAIN loses nothing. */
        r = write(s->wfd, &c, 1);
#endif
    }
    (void)r;
}

void aiometer__sem_destroy(struct aiometer__sem *s)
{
    if (s->fd >= 0)
        close(s->fd);
    if (s->wfd >= 0 && s->wfd != s->fd)
        close(s->wfd);
    s->fd = s->wfd = -1;
}
