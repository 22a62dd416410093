/* conn.c - connections to one Redis server.
 *
 * hiredis formats commands and parses replies; the socket is ours.  Doing
 * the I/O here gives three things hiredis 0.14's blocking API does not: a
 * write that can never raise SIGPIPE (send with MSG_NOSIGNAL), a wait that
 * also watches the caller's cancel descriptor, and the connection's real
 * errno (ECONNREFUSED, ENOENT, ETIMEDOUT) instead of a message string. */
#include "config.h"
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Back-off after a failure: from the first step, doubling, to the cap. */
#define BACKOFF_FIRST_NS UINT64_C(50000000)
#define BACKOFF_MAX_NS UINT64_C(1000000000)

uint64_t aiometer__redis_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- socket I/O ---------------------------------------------------------------- */

/* Milliseconds from now to deadline for poll, rounded up, at least 0. */
static int ms_until(uint64_t deadline)
{
    uint64_t now = aiometer__redis_now(), ms;

    if (deadline <= now)
        return 0;
    ms = (deadline - now + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Wait until fd is ready for `events`, the deadline passes (ETIMEDOUT) or
 * wake_fd turns readable (EINTR).  0 when fd is ready. */
static int wait_fd(int fd, short events, uint64_t deadline, int wake_fd)
{
    for (;;) {
        struct pollfd pfd[2] = { { fd, events, 0 }, { wake_fd, POLLIN, 0 } };
        int n = poll(pfd, wake_fd >= 0 ? 2 : 1, ms_until(deadline));

        if (n < 0 && errno != EINTR)
            return errno;
        if (n > 0 && pfd[0].revents)
            return 0;
        if (n > 0 && pfd[1].revents)
            return EINTR;
        if (n == 0 && aiometer__redis_now() >= deadline)
            return ETIMEDOUT;
    }
}

static int send_all(int fd, const char *buf, size_t len, uint64_t deadline)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        int err;

        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return errno == EPIPE ? ECONNRESET : errno;
        err = wait_fd(fd, POLLOUT, deadline, -1);
        if (err)
            return err;
    }
    return 0;
}

int aiometer__redis_send(struct aiometer__redis_conn *c, int argc, const char **argv, const size_t *lens,
                   uint64_t deadline)
{
    char *cmd;
    int len, err;

    len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0)
        return ENOMEM;
    err = send_all(c->fd, cmd, (size_t)len, deadline);
    redisFreeCommand(cmd);
    return err;
}

/* Feed what the socket has to the parser.  0; ECONNRESET at end of file. */
static int fill(struct aiometer__redis_conn *c)
{
    char buf[16384];
    ssize_t n;

    do
        n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        return ECONNRESET;
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : errno;
    return redisReaderFeed(c->reader, buf, (size_t)n) == REDIS_OK ? 0 : ENOMEM;
}

/* Wait for the reply in recv itself, the socket's SO_RCVTIMEO being
 * command_timeout: one system call instead of poll and recv, for the
 * common case of a reply that comes whole.  0; EAGAIN when nothing came
 * (the timeout, or a signal); ECONNRESET at end of file. */
static int fill_blocking(struct aiometer__redis_conn *c)
{
    char buf[16384];
    ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

    if (n == 0)
        return ECONNRESET;
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? EAGAIN : errno;
    return redisReaderFeed(c->reader, buf, (size_t)n) == REDIS_OK ? 0 : ENOMEM;
}

int aiometer__redis_read(struct aiometer__redis_conn *c, uint64_t deadline, int wake_fd, redisReply **reply)
{
    /* The blocking recv may wait its whole SO_RCVTIMEO: only while that
     * ends within 10 ms of the deadline (a send that took longer leaves
     * the wait to poll). */
    int first = wake_fd < 0 && c->rcvtimeo_ns &&
                aiometer__redis_now() + c->rcvtimeo_ns <= deadline + 10000000u;

    for (;;) {
        void *r = NULL;
        int err;

        if (redisReaderGetReply(c->reader, &r) != REDIS_OK)
            return EPROTO;
        if (r) {
            *reply = r;
            return 0;
        }
        if (first) {
            /* Only the first read blocks in recv: the deadline of a reply
             * that trickles in is kept by the poll below. */
            first = 0;
            err = fill_blocking(c);
            if (err && err != EAGAIN)
                return err;
            continue;
        }
        err = wait_fd(c->fd, POLLIN, deadline, wake_fd);
        if (err == ETIMEDOUT || err == EINTR) {
            *reply = NULL;
            return err == EINTR ? EINTR : 0;
        }
        if (err || (err = fill(c)))
            return err;
    }
}

int aiometer__redis_command(struct aiometer__redis_conn *c, int argc, const char **argv, const size_t *lens,
                      uint64_t deadline, int cancel_fd, uint64_t grace_ns, redisReply **reply)
{
    int err = aiometer__redis_send(c, argc, argv, lens, deadline), cancelled = 0;

    while (!err) {
        err = aiometer__redis_read(c, deadline, cancel_fd, reply);
        if (err == EINTR) {
            /* Cancelled with the reply on its way: wait a little longer for
             * it, so that a slot the server granted is not lost. */
            uint64_t until = aiometer__redis_now() + grace_ns;

            cancelled = 1;
            cancel_fd = -1;
            if (until < deadline)
                deadline = until;
            err = 0;
            continue;
        }
        if (!err && !*reply)
            err = cancelled ? ECANCELED : ETIMEDOUT;
        break;
    }
    return err;
}

/* ---- connecting ------------------------------------------------------------------ */

static int connect_addr(const struct sockaddr *sa, socklen_t len, int family, uint64_t deadline,
                        int *fdp)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), err = 0, one = 1;
    socklen_t elen = sizeof(err);

    if (fd < 0)
        return errno;
    if (connect(fd, sa, len) < 0) {
        if (errno != EINPROGRESS) {
            err = errno;
        } else if (!(err = wait_fd(fd, POLLOUT, deadline, -1))) {
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
                err = errno;
        }
    }
    if (err) {
        close(fd);
        return err;
    }
    if (family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *fdp = fd;
    return 0;
}

static int open_socket(const struct aiometer__redis_url *u, uint64_t deadline, int *fd)
{
    struct addrinfo hints, *res, *ai;
    char port[8];
    int err = EHOSTUNREACH;

    if (u->path) {
        struct sockaddr_un sun;

        memset(&sun, 0, sizeof(sun));
        sun.sun_family = AF_UNIX;
        memcpy(sun.sun_path, u->path, strlen(u->path) + 1);
        return connect_addr((struct sockaddr *)&sun, sizeof(sun), AF_UNIX, deadline, fd);
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", u->port);
    switch (getaddrinfo(u->host, port, &hints, &res)) {
    case 0:
        break;
    case EAI_MEMORY:
        return ENOMEM;
    case EAI_SYSTEM:
        return errno ? errno : EHOSTUNREACH;
    default:
        return EHOSTUNREACH;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        err = connect_addr(ai->ai_addr, ai->ai_addrlen, ai->ai_family, deadline, fd);
        if (!err)
            break;
    }
    freeaddrinfo(res);
    return err;
}

/* The error a server's error reply stands for at login. */
static int login_error(const redisReply *r, int otherwise)
{
    if (strncmp(r->str, "NOAUTH", 6) == 0 || strncmp(r->str, "WRONGPASS", 9) == 0 ||
        strstr(r->str, "password"))
        return EACCES;
    return otherwise;
}

static int login(struct aiometer__redis_conn *c, const struct aiometer__redis_url *u, uint64_t deadline)
{
    const char *argv[3];
    char db[24];
    redisReply *r;
    int argc = 0, err;

    if (u->password) {
        argv[argc++] = "AUTH";
        if (u->user)
            argv[argc++] = u->user;
        argv[argc++] = u->password;
        if ((err = aiometer__redis_command(c, argc, argv, NULL, deadline, -1, 0, &r)))
            return err;
        err = r->type == REDIS_REPLY_ERROR ? EACCES : 0;
        freeReplyObject(r);
        if (err)
            return err;
    }
    if (u->db >= 0) {
        snprintf(db, sizeof(db), "%ld", u->db);
        argv[0] = "SELECT";
        argv[1] = db;
        if ((err = aiometer__redis_command(c, 2, argv, NULL, deadline, -1, 0, &r)))
            return err;
        err = r->type == REDIS_REPLY_ERROR ? login_error(r, EINVAL) : 0;
        freeReplyObject(r);
    }
    return err;
}

/* From now on recv waits (up to timeout_ns) unless told MSG_DONTWAIT; the
 * sends and the other reads all pass MSG_DONTWAIT. */
static int blocking_reads(int fd, uint64_t timeout_ns)
{
    struct timeval tv;
    int flags = fcntl(fd, F_GETFL);

    tv.tv_sec = (time_t)(timeout_ns / 1000000000u);
    tv.tv_usec = (suseconds_t)(timeout_ns % 1000000000u / 1000u);
    if (tv.tv_sec == 0 && tv.tv_usec == 0)
        tv.tv_usec = 1;
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
        return errno;
    return 0;
}

int aiometer__redis_connect(struct aiometer__redis_pool *p, struct aiometer__redis_conn **cp)
{
    uint64_t deadline = aiometer__redis_now() + p->timeout_ns;
    struct aiometer__redis_conn *c = calloc(1, sizeof(*c));
    int err;

    if (!c)
        return ENOMEM;
    c->fd = -1;
    c->reader = redisReaderCreate();
    if (!c->reader) {
        free(c);
        return ENOMEM;
    }
    err = open_socket(&p->url, deadline, &c->fd);
    if (!err && !(err = blocking_reads(c->fd, p->timeout_ns)))
        c->rcvtimeo_ns = p->timeout_ns;
    if (!err)
        err = login(c, &p->url, deadline);
    if (err) {
        aiometer__redis_close(c);
        return err;
    }
    *cp = c;
    return 0;
}

void aiometer__redis_close(struct aiometer__redis_conn *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    redisReaderFree(c->reader);
    free(c);
}

/* ---- the pool ------------------------------------------------------------------------ */

int aiometer__redis_pool_init(struct aiometer__redis_pool *p, const char *url, double timeout)
{
    int err;

    memset(p, 0, sizeof(*p));
    err = aiometer__redis_url_parse(&p->url, url);
    if (err)
        return err;
    p->timeout_ns = (uint64_t)ceil(timeout * 1e9);
    err = pthread_mutex_init(&p->lock, NULL);
    if (err)
        aiometer__redis_url_free(&p->url);
    return err;
}

void aiometer__redis_pool_destroy(struct aiometer__redis_pool *p)
{
    while (p->idle) {
        struct aiometer__redis_conn *c = p->idle;

        p->idle = c->next;
        aiometer__redis_close(c);
    }
    pthread_mutex_destroy(&p->lock);
    aiometer__redis_url_free(&p->url);
}

/* Errors that say the server answered: they need no back-off. */
static int server_answered(int err)
{
    return err == EACCES || err == EINVAL || err == ENOTSUP || err == ECANCELED || err == 0;
}

/* Start or lengthen the back-off after err.  The lock is held. */
static void back_off_locked(struct aiometer__redis_pool *p, int err)
{
    p->backoff_ns = p->backoff_ns ? p->backoff_ns * 2 : BACKOFF_FIRST_NS;
    if (p->backoff_ns > BACKOFF_MAX_NS)
        p->backoff_ns = BACKOFF_MAX_NS;
    p->retry_at = aiometer__redis_now() + p->backoff_ns;
    p->last_err = err;
    p->probing = 0;
}

int aiometer__redis_get(struct aiometer__redis_pool *p, struct aiometer__redis_conn **cp)
{
    struct aiometer__redis_conn *c;
    uint64_t gen;
    int err;

    pthread_mutex_lock(&p->lock);
    /* While backing off, fail at once: many threads must not each wait for
     * a dead or stopped server, nor try it again and again.  When the
     * back-off ends, one caller (the probe) tries; the others keep failing
     * fast until its command is answered or fails. */
    if (p->backoff_ns) {
        if (p->probing || aiometer__redis_now() < p->retry_at) {
            err = p->last_err;
            pthread_mutex_unlock(&p->lock);
            return err;
        }
        p->probing = 1;
    }
    c = p->idle;
    if (c) {
        p->idle = c->next;
        pthread_mutex_unlock(&p->lock);
        *cp = c;
        return 0;
    }
    gen = p->generation;
    pthread_mutex_unlock(&p->lock);

    err = aiometer__redis_connect(p, &c);
    pthread_mutex_lock(&p->lock);
    if (!err)
        c->born = gen;
    else if (!server_answered(err))
        back_off_locked(p, err);
    else
        p->probing = 0;
    pthread_mutex_unlock(&p->lock);
    *cp = c;
    return err;
}

void aiometer__redis_put(struct aiometer__redis_pool *p, struct aiometer__redis_conn *c)
{
    pthread_mutex_lock(&p->lock);
    p->backoff_ns = 0;
    p->probing = 0;
    if (c->born == p->generation) {
        c->next = p->idle;
        p->idle = c;
        c = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    aiometer__redis_close(c);
}

void aiometer__redis_drop(struct aiometer__redis_pool *p, struct aiometer__redis_conn *c, int err)
{
    struct aiometer__redis_conn *stale = NULL;

    pthread_mutex_lock(&p->lock);
    if (!server_answered(err)) {
        /* The idle connections probably share this one's fate (a restarted
         * or stopped server): drop them all, so that the next command opens
         * a fresh connection instead of finding out one by one. */
        if (c->born == p->generation) {
            p->generation++;
            stale = p->idle;
            p->idle = NULL;
        }
        /* A server that stopped answering is given a rest before anyone
         * waits command_timeout on it again; a closed connection is not,
         * as the server may simply have restarted (the caller retries once
         * on a fresh connection, and a refused connect backs off). */
        if (err != ECONNRESET && err != EPIPE)
            back_off_locked(p, err);
        else
            p->probing = 0;
    } else {
        p->probing = 0;
    }
    pthread_mutex_unlock(&p->lock);
    aiometer__redis_close(c);
    while (stale) {
        struct aiometer__redis_conn *n = stale->next;

        aiometer__redis_close(stale);
        stale = n;
    }
}
