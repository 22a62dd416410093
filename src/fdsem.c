/* fdsem.c - the descriptor semaphore; see fdsem.h. */
#include "config.h"
#include "fdsem.h"
#include "syscalls.h"

#include <errno.h>
#include <stdint.h>
#include <unistd.h>

int aiometer__sem_init(struct aiometer__sem *s, unsigned count)
{
#ifdef HAVE_SYS_EVENTFD_H
    s->fd = s->wfd = aiometer__eventfd(count, 1);
    return s->fd < 0 ? errno : 0;
#else
    int p[2];
    char buf[256] = { 0 };

    if (aiometer__pipe(p) != 0)
        return errno;
    s->fd = p[0];
    s->wfd = p[1];
    while (count > 0) {
        size_t k = count < sizeof(buf) ? count : sizeof(buf);
        ssize_t w = write(s->wfd, buf, k);
        if (w <= 0) {
            aiometer__sem_destroy(s);
            return EINVAL;
        }
        count -= (unsigned)w;
    }
    return 0;
#endif
}

int aiometer__sem_trytake(struct aiometer__sem *s)
{
#ifdef HAVE_SYS_EVENTFD_H
    uint64_t v;
    return read(s->fd, &v, sizeof(v)) == (ssize_t)sizeof(v);
#else
    char c;
    return read(s->fd, &c, 1) == 1;
#endif
}

void aiometer__sem_give(struct aiometer__sem *s)
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

void aiometer__sem_destroy(struct aiometer__sem *s)
{
    if (s->fd >= 0)
        close(s->fd);
    if (s->wfd >= 0 && s->wfd != s->fd)
        close(s->wfd);
    s->fd = s->wfd = -1;
}
