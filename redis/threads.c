/* threads.c - the two threads of a limiter with a running cap.
 *
 * The renewer extends the leases of the slots this process holds, every
 * third of a lease, so that a job that runs long keeps its slot while a
 * process that died (and renews nothing) loses its slots when their leases
 * end.  It also gives back the slots a cancelled take may have left.
 *
 * The subscriber listens on the limiter's channel, where every give
 * publishes, and wakes one waiting thread per slot given back.  A lost
 * message costs only time: a waiter also tries again when the oldest lease
 * ends, and at least every 200 ms. */
#include "config.h"
#include "rlimiter.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Renew at most this many tokens per script call. */
#define RENEW_BATCH 8

void aio_redis_wake_one(struct aio_redis_limiter *l)
{
    struct aio_redis_waiter *w;
    uint64_t one = 1;

    pthread_mutex_lock(&l->lock);
    for (w = l->waiters; w && w->woken; w = w->next)
        ;
    if (w) {
        w->woken = 1;
        /* An eventfd write of 1 cannot block or fail short of overflow. */
        if (write(w->efd, &one, sizeof(one)) < 0) {
            /* The waiter's poll still ends at its fallback timeout. */
        }
    }
    pthread_mutex_unlock(&l->lock);
}

/* Wait up to ns for stop_fd: 1 if the limiter is closing. */
static int stopping(struct aio_redis_limiter *l, uint64_t ns)
{
    struct pollfd pfd = { l->stop_fd, POLLIN, 0 };

    return poll(&pfd, 1, (int)(ns / 1000000)) > 0;
}

/* Take up to n tokens from list[from..] as script arguments (copies). */
static size_t copy_tokens(char **list, size_t count, size_t from, char **out, size_t n)
{
    size_t i;

    for (i = 0; i < n && from + i < count; i++)
        out[i] = strdup(list[from + i]);
    return i;
}

static void renew_all(struct aio_redis_limiter *l)
{
    size_t from = 0;

    for (;;) {
        char *tokens[RENEW_BATCH];
        const char *args[2 + RENEW_BATCH] = { "renew", l->lease_us };
        redisReply *r;
        size_t n, i;
        int ok = 1;

        pthread_mutex_lock(&l->lock);
        n = copy_tokens(l->held, l->n_held, from, tokens, RENEW_BATCH);
        pthread_mutex_unlock(&l->lock);
        if (n == 0)
            return;
        for (i = 0; i < n; i++) {
            args[2 + i] = tokens[i];
            ok = ok && tokens[i];
        }
        if (ok && !aio_redis_run(l, 2 + (int)n, args, -1, &r))
            freeReplyObject(r);
        for (i = 0; i < n; i++)
            free(tokens[i]);
        from += n;
    }
}

static void give_orphans(struct aio_redis_limiter *l)
{
    for (;;) {
        const char *args[3] = { "give", l->channel, NULL };
        redisReply *r;
        char *token = NULL;

        pthread_mutex_lock(&l->lock);
        if (l->n_orphans)
            token = l->orphans[--l->n_orphans];
        pthread_mutex_unlock(&l->lock);
        if (!token)
            return;
        args[2] = token;
        if (!aio_redis_run(l, 3, args, -1, &r))
            freeReplyObject(r);
        free(token);
    }
}

static void *renewer(void *arg)
{
    struct aio_redis_limiter *l = arg;

    while (!stopping(l, l->lease_ns / 3)) {
        renew_all(l);
        give_orphans(l);
    }
    return NULL;
}

/* A pub/sub message (not a subscribe confirmation)? */
static int is_message(const redisReply *r)
{
    return r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
           r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "message") == 0;
}

static void *subscriber(void *arg)
{
    struct aio_redis_limiter *l = arg;
    struct aio_redis_conn *c = NULL;
    uint64_t backoff = 0;

    for (;;) {
        redisReply *r = NULL;
        int err;

        if (!c) {
            const char *argv[2] = { "SUBSCRIBE", l->channel };

            if (backoff && stopping(l, backoff))
                break;
            err = aio_redis_connect(&l->pool, &c);
            if (!err)
                err = aio_redis_send(c, 2, argv, NULL, aio_redis_now() + l->pool.timeout_ns);
            if (err) {
                aio_redis_close(c);
                c = NULL;
                /* Capped at 1 s, like the pool's back-off. */
                backoff = backoff ? backoff * 2 : 50000000;
                if (backoff > 1000000000)
                    backoff = 1000000000;
                continue;
            }
            backoff = 0;
            /* Slots given back while we were not listening went unheard:
             * let every waiter try again. */
            pthread_mutex_lock(&l->lock);
            {
                struct aio_redis_waiter *w;
                uint64_t one = 1;

                for (w = l->waiters; w; w = w->next)
                    if (write(w->efd, &one, sizeof(one)) < 0) {
                        /* It will try again at its fallback timeout. */
                    }
            }
            pthread_mutex_unlock(&l->lock);
        }
        /* A quiet connection is fine: there is no deadline for messages;
         * the stop descriptor ends the wait. */
        err = aio_redis_read(c, aio_redis_now() + 3600 * UINT64_C(1000000000), l->stop_fd, &r);
        if (err == EINTR)
            break;
        if (err) {
            aio_redis_close(c);
            c = NULL;
            backoff = 50000000;
            continue;
        }
        if (r && is_message(r))
            aio_redis_wake_one(l);
        if (r)
            freeReplyObject(r);
    }
    aio_redis_close(c);
    return NULL;
}

int aio_redis_threads_start(struct aio_redis_limiter *l)
{
    int err;

    l->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->stop_fd < 0)
        return errno;
    err = pthread_create(&l->renewer, NULL, renewer, l);
    if (err) {
        close(l->stop_fd);
        l->stop_fd = -1;
        return err;
    }
    err = pthread_create(&l->subscriber, NULL, subscriber, l);
    if (err) {
        uint64_t one = 1;

        if (write(l->stop_fd, &one, sizeof(one)) < 0) {
            /* An eventfd write of 1 does not fail. */
        }
        pthread_join(l->renewer, NULL);
        close(l->stop_fd);
        l->stop_fd = -1;
        return err;
    }
    l->threads = 1;
    return 0;
}

void aio_redis_threads_stop(struct aio_redis_limiter *l)
{
    uint64_t one = 1;

    if (!l->threads)
        return;
    if (write(l->stop_fd, &one, sizeof(one)) < 0) {
        /* An eventfd write of 1 does not fail. */
    }
    pthread_join(l->renewer, NULL);
    pthread_join(l->subscriber, NULL);
    close(l->stop_fd);
    l->stop_fd = -1;
    l->threads = 0;
}
