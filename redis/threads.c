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

/* Does a give that published msg free a slot waiter w may take? */
static int wakes(const struct aiometer__redis_waiter *w, const char *msg, size_t len)
{
    char mine[AIOMETER__REDIS_NAME_MAX];
    size_t n = aiometer__redis_message_of(w->key, mine);

    return n == len && memcmp(mine, msg, len) == 0;
}

void aiometer__redis_wake_one(struct aiometer__redis_limiter *l, const char *msg, size_t len)
{
    struct aiometer__redis_waiter *w;
    uint64_t one = 1;

    pthread_mutex_lock(&l->lock);
    if (l->per_key)
        aiometer__redis_refusal_clear_locked(l, msg, len);
    for (w = l->waiters; w && (w->woken || !wakes(w, msg, len)); w = w->next)
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
static int stopping(struct aiometer__redis_limiter *l, uint64_t ns)
{
    struct pollfd pfd = { l->stop_fd, POLLIN, 0 };

    return poll(&pfd, 1, (int)(ns / 1000000)) > 0;
}

/* Copy up to n tokens of holds[from..] that share the first one's key
 * into out; *key gets a copy of that key.  How many were copied (fewer
 * when out of memory: the rest are renewed next time). */
static size_t copy_tokens(const struct aiometer__redis_holds *h, size_t from, char **out, size_t n,
                          char **key)
{
    const char *k;
    size_t i, m = 0;

    *key = NULL;
    if (from >= h->n)
        return 0;
    k = h->v[from].key;
    if (k && !(*key = strdup(k)))
        return 0;
    for (i = from; i < h->n && m < n; i++) {
        const char *ki = h->v[i].key;

        if ((k == NULL) != (ki == NULL) || (k && strcmp(k, ki) != 0))
            break;
        if (!(out[m] = strdup(h->v[i].token)))
            break;
        m++;
    }
    return m;
}

static void renew_all(struct aiometer__redis_limiter *l)
{
    size_t from = 0;

    for (;;) {
        char *tokens[RENEW_BATCH], *key;
        const char *args[2 + RENEW_BATCH] = { "renew", l->lease_us };
        struct aiometer__redis_names names;
        redisReply *r;
        size_t n, i;

        pthread_mutex_lock(&l->lock);
        n = copy_tokens(&l->held, from, tokens, RENEW_BATCH, &key);
        pthread_mutex_unlock(&l->lock);
        if (n == 0) {
            free(key);
            return;
        }
        for (i = 0; i < n; i++)
            args[2 + i] = tokens[i];
        aiometer__redis_names_of(l, key, &names);
        if (!aiometer__redis_run(l, &names, 2 + (int)n, args, -1, &r))
            freeReplyObject(r);
        for (i = 0; i < n; i++)
            free(tokens[i]);
        free(key);
        from += n;
    }
}

/* Give back one slot of key held as token, and wake the fleet's waiters
 * for it. */
void aiometer__redis_give(struct aiometer__redis_limiter *l, const char *token, const char *key)
{
    char msg[AIOMETER__REDIS_NAME_MAX];
    const char *args[4] = { "give", l->channel, token, msg };
    struct aiometer__redis_names names;
    redisReply *r;
    size_t len;

    len = aiometer__redis_message_of(key, msg);
    aiometer__redis_names_of(l, key, &names);
    if (l->per_key) {
        /* This process's next take of the key asks Redis at once. */
        pthread_mutex_lock(&l->lock);
        aiometer__redis_refusal_clear_locked(l, msg, len);
        pthread_mutex_unlock(&l->lock);
    }
    /* A give that fails leaves the slot to end with its lease, which is
     * no longer renewed. */
    if (!aiometer__redis_run(l, &names, 4, args, -1, &r))
        freeReplyObject(r);
}

static void give_orphans(struct aiometer__redis_limiter *l)
{
    for (;;) {
        struct aiometer__redis_hold h;
        int got;

        pthread_mutex_lock(&l->lock);
        got = aiometer__redis_holds_take(&l->orphans, NULL, &h);
        pthread_mutex_unlock(&l->lock);
        if (!got)
            return;
        aiometer__redis_give(l, h.token, h.key);
        free(h.token);
        free(h.key);
    }
}

static void *renewer(void *arg)
{
    struct aiometer__redis_limiter *l = arg;

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
    struct aiometer__redis_limiter *l = arg;
    struct aiometer__redis_conn *c = NULL;
    uint64_t backoff = 0;

    for (;;) {
        redisReply *r = NULL;
        int err;

        if (!c) {
            const char *argv[2] = { "SUBSCRIBE", l->channel };

            if (backoff && stopping(l, backoff))
                break;
            err = aiometer__redis_connect(&l->pool, &c);
            if (!err)
                err = aiometer__redis_send(c, 2, argv, NULL, aiometer__redis_now() + l->pool.timeout_ns);
            if (err) {
                aiometer__redis_close(c);
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
                struct aiometer__redis_waiter *w;
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
        err = aiometer__redis_read(c, aiometer__redis_now() + 3600 * UINT64_C(1000000000), l->stop_fd, &r);
        if (err == EINTR)
            break;
        if (err) {
            aiometer__redis_close(c);
            c = NULL;
            backoff = 50000000;
            continue;
        }
        if (r && is_message(r) && r->element[2]->type == REDIS_REPLY_STRING)
            aiometer__redis_wake_one(l, r->element[2]->str, r->element[2]->len);
        if (r)
            freeReplyObject(r);
    }
    aiometer__redis_close(c);
    return NULL;
}

int aiometer__redis_threads_start(struct aiometer__redis_limiter *l)
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

void aiometer__redis_threads_stop(struct aiometer__redis_limiter *l)
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
