/* cancelfd.c - a call's cancel descriptor: made on a job's first ask,
 * readable once the call stops (and, with a deadline, at the deadline by
 * itself), so that a job blocked in poll() or in a limiter backend wakes at
 * once.  Made through syscalls.c, so the fault-injection build reaches
 * every failure path here. */
#include "config.h"
#include "call.h"
#include "clock.h"
#include "syscalls.h"

#include <errno.h>
#include <stdint.h>
#include <unistd.h>
#ifdef HAVE_SYS_TIMERFD_H
#include <sys/timerfd.h>
#endif
#ifdef HAVE_SYS_EPOLL_H
#include <sys/epoll.h>
#endif

void aiometer__cancel_fd_signal(struct aiometer__call *c)
{
    ssize_t r;

    if (c->efd_w < 0)
        return;
#ifdef HAVE_SYS_EVENTFD_H
    if (c->efd_w_eventfd) {
        uint64_t one = 1;
        r = write(c->efd_w, &one, sizeof(one));
    } else
#endif
    {
        char one = 1;
        r = write(c->efd_w, &one, 1);
    }
    /* The descriptor is non-blocking and written at most once per call, so
     * a short or failed write can only mean it is already readable. */
    (void)r;
}

/* Make the call's cancel descriptor: an eventfd where there is one, a pipe
 * elsewhere.  0 or an errno value. */
static int make_cancel_fd(struct aiometer__call *c)
{
#ifdef HAVE_SYS_EVENTFD_H
    int fd = aiometer__eventfd(0, 0);
    if (fd < 0)
        return errno;
    c->efd = c->efd_w = fd;
    c->efd_w_eventfd = 1;
#if defined(HAVE_SYS_TIMERFD_H) && defined(HAVE_SYS_EPOLL_H)
    if (c->deadline != AIOMETER__NEVER) {
        /* With a deadline, hand out an epoll descriptor over the eventfd and
         * a timer that fires at the deadline: it turns readable by itself
         * when the time is up, whether or not any thread is watching. */
        struct itimerspec its = { { 0, 0 }, aiometer__ns_to_timespec(c->deadline) };
        struct epoll_event ev = { .events = EPOLLIN };
        int tfd = aiometer__timerfd();
        int ep = aiometer__epoll();
        int err = 0;

        if (tfd < 0 || ep < 0 || timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) != 0)
            err = errno ? errno : EMFILE;
        if (err) {
            if (tfd >= 0)
                close(tfd);
            if (ep >= 0)
                close(ep);
            close(fd);
            c->efd = c->efd_w = -1;
            return err;
        }
        c->efd = ep;
        c->efd_x = tfd;
    }
#endif
#else
    int p[2];
    if (aiometer__pipe(p) != 0)
        return errno;
    c->efd = p[0];
    c->efd_w = p[1];
#endif
    return 0;
}

int aiometer__cancel_fd_of(struct aiometer__call *c, int *fd)
{
    int err = 0;

    *fd = atomic_load_explicit(&c->efd_pub, memory_order_acquire);
    if (*fd >= 0)
        return 0;
    aiometer__lock(&c->lock);
    if (c->efd < 0) {
        err = make_cancel_fd(c);
        if (!err) {
            /* A stop that came first must be visible on the new descriptor. */
            if (atomic_load(&c->stop) != AIOMETER__GOING)
                aiometer__cancel_fd_signal(c);
            atomic_store_explicit(&c->efd_pub, c->efd, memory_order_release);
        }
    }
    *fd = c->efd;
    aiometer__unlock(&c->lock);
    return err;
}

int aiometer_cancel_fd(void)
{
    struct aiometer__ctx *ctx = aiometer__tls;
    int fd, err;

    if (!ctx) {
        errno = EPERM;
        return -1;
    }
    aiometer__call_check_deadline(ctx->call);
    err = aiometer__cancel_fd_of(ctx->call, &fd);
    if (err) {
        errno = err;
        return -1;
    }
    return fd;
}

void aiometer__cancel_fd_close(struct aiometer__call *c)
{
    if (c->efd >= 0)
        close(c->efd);
    if (c->efd_w >= 0 && c->efd_w != c->efd)
        close(c->efd_w);
    if (c->efd_x >= 0)
        close(c->efd_x);
}
