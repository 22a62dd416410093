/* rlimiter.c - a limiter whose budget lives in Redis: opening it, and the
 * backend operations libaiometer calls (book, acquire, release, close).
 *
 * Every operation is one EVALSHA of the script in script.h on a pooled
 * connection (run.c), so many threads use the limiter at once, each on its
 * own connection, and no lock is held while Redis is asked anything. */
#include "config.h"
#include "aiometer_redis.h"
#include "conn.h"
#include "rlimiter.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* Times in the script are held at 2^52 microseconds (about 142 years) per
 * interval or burst, so that now + T stays below 2^53. */
#define MAX_US 4503599627370496.0
/* How long an acquire sleeps at most between two tries when no
 * notification comes: the fallback for a lost one. */
#define POLL_FALLBACK_NS UINT64_C(200000000)
/* How long a per-key limiter refuses a key's takes on its own after Redis
 * refused one, unless a slot of the key is given back meanwhile: the
 * longest libaiometer waits between two asks, so a lost notification
 * costs no more than the library's own polling would. */
#define REFUSAL_NS UINT64_C(10000000)
#define MAX_RATE 1e6
#define MAX_AT_ONCE 1000000
/* max_keys, as for libaiometer's own per-key limiters: the local
 * fallback's table (the keys in Redis are bounded by expiry instead). */
#define MAX_KEYS (UINT64_C(1) << 20)
#define DEFAULT_MAX_KEYS 4096

/* ---- the backend --------------------------------------------------------------------- */

/* How long a lower bound of the clock offset is trusted: the server's
 * TIME follows the wall clock, which NTP may slew or step. */
#define OFFSET_WINDOW_NS UINT64_C(5000000000)

/* Learn from one booking that the server's clock read server_ns at some
 * instant before our reply_ns, and return the best lower bound of the
 * offset (server clock - ours) known now.  The lock is held. */
static int64_t learn_offset_locked(struct aiometer__redis_limiter *l, int64_t server_ns,
                                   uint64_t reply_ns)
{
    int64_t lower = server_ns - (int64_t)reply_ns;

    if (reply_ns - l->offset_window_start > OFFSET_WINDOW_NS) {
        l->offset[1] = l->offset[0];
        l->offset[0] = INT64_MIN;
        l->offset_window_start = reply_ns;
    }
    if (lower > l->offset[0])
        l->offset[0] = lower;
    return l->offset[0] > l->offset[1] ? l->offset[0] : l->offset[1];
}

static int rl_book(void *state, const char *key, uint64_t now, uint64_t *start)
{
    struct aiometer__redis_limiter *l = state;
    const char *args[3] = { "book", l->interval_us, l->tolerance_us };
    struct aiometer__redis_names names;
    redisReply *r;
    int err;

    aiometer__redis_names_of(l, key, &names);
    err = aiometer__redis_run(l, &names, 3, args, -1, &r);
    if (!err) {
        uint64_t reply = aiometer__redis_now();
        long long w = -1, server_us = 0;
        int64_t offset, grant;

        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_INTEGER &&
            r->element[1]->type == REDIS_REPLY_INTEGER) {
            w = r->element[0]->integer;
            server_us = r->element[1]->integer;
        }
        freeReplyObject(r);
        if (w < 0 || server_us <= 0 || (uint64_t)w >= (AIOMETER_NEVER - reply) / 1000) {
            *start = AIOMETER_NEVER;
            return 0;
        }
        /* The grant is a time on the server's clock.  Mapped onto ours with
         * a lower bound of the offset between the clocks (the tightest the
         * round trips so far have given), it is never early, and late by
         * at most the fastest round trip seen, whatever delayed this one.
         * Mapping each booking with its own round trip instead would make
         * every start late by that round trip's own delays, which on a
         * busy machine jitter by milliseconds. */
        pthread_mutex_lock(&l->lock);
        offset = learn_offset_locked(l, server_us * 1000, reply);
        pthread_mutex_unlock(&l->lock);
        grant = (server_us + w) * 1000 - offset;
        *start = grant > (int64_t)now ? (uint64_t)grant : now;
        return 0;
    }
    if (!l->local_mode)
        return err;
    pthread_mutex_lock(&l->lock);
    err = aiometer__redis_fallback_book_locked(&l->local, key, now, start);
    pthread_mutex_unlock(&l->lock);
    return err;
}

static int local_acquire(struct aiometer__redis_limiter *l, const char *key)
{
    int err;

    pthread_mutex_lock(&l->lock);
    err = aiometer__redis_fallback_take_locked(&l->local, key, aiometer__redis_now());
    pthread_mutex_unlock(&l->lock);
    return err;
}

static void unlink_waiter(struct aiometer__redis_limiter *l, struct aiometer__redis_waiter *w)
{
    struct aiometer__redis_waiter **p;

    pthread_mutex_lock(&l->lock);
    for (p = &l->waiters; *p; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            break;
        }
    }
    /* A wake-up this waiter did not use goes to the next one of its key. */
    if (w->woken && l->waiters) {
        char msg[AIOMETER__REDIS_NAME_MAX];
        size_t len = aiometer__redis_message_of(w->key, msg);

        pthread_mutex_unlock(&l->lock);
        aiometer__redis_wake_one(l, msg, len);
        return;
    }
    pthread_mutex_unlock(&l->lock);
}

/* One take of a slot of key (NULL: the limiter's): 1 granted, 0 not (with
 * *hint_ns until a lease ends), or -errno. */
static int take(struct aiometer__redis_limiter *l, const struct aiometer__redis_names *names,
                const char *key, int cancel_fd, uint64_t *hint_ns)
{
    const char *args[4] = { "take", l->cap, l->lease_us, NULL };
    char token[64];
    redisReply *r;
    int err, got;

    pthread_mutex_lock(&l->lock);
    snprintf(token, sizeof(token), "%s:%llu", l->token_prefix, (unsigned long long)++l->token_seq);
    pthread_mutex_unlock(&l->lock);
    args[3] = token;
    err = aiometer__redis_run(l, names, 4, args, cancel_fd, &r);
    if (err) {
        if (err == ECANCELED) {
            /* The server may have granted it: give it back later rather
             * than leave it for the lease to end. */
            pthread_mutex_lock(&l->lock);
            aiometer__redis_holds_push(&l->orphans, token, key);
            pthread_mutex_unlock(&l->lock);
        }
        return -err;
    }
    got = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
          r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 1;
    *hint_ns = POLL_FALLBACK_NS;
    if (!got && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_INTEGER && r->element[1]->integer >= 0 &&
        (uint64_t)r->element[1]->integer < POLL_FALLBACK_NS / 1000)
        *hint_ns = (uint64_t)r->element[1]->integer * 1000 + 1000000;
    freeReplyObject(r);
    if (!got)
        return 0;
    pthread_mutex_lock(&l->lock);
    err = aiometer__redis_holds_push(&l->held, token, key);
    pthread_mutex_unlock(&l->lock);
    if (err) {
        /* Not remembered, so not renewed: the slot ends with its lease. */
        return -err;
    }
    return 1;
}

static int rl_acquire(void *state, const char *key, int cancel_fd)
{
    struct aiometer__redis_limiter *l = state;
    struct aiometer__redis_waiter w = { -1, 0, key, NULL };
    struct aiometer__redis_names names;
    uint64_t gives = 0, hint = 0;
    int got = 0, cached = l->per_key && cancel_fd < 0;

    if (cached) {
        pthread_mutex_lock(&l->lock);
        got = aiometer__redis_refused_locked(l, key, aiometer__redis_now(), &gives);
        pthread_mutex_unlock(&l->lock);
        if (got)
            return EAGAIN;
    }
    aiometer__redis_names_of(l, key, &names);
    if (cancel_fd >= 0) {
        /* Listed before the first take, so that a slot given back between
         * a refused take and the wait still wakes this thread. */
        w.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (w.efd < 0)
            return errno;
        pthread_mutex_lock(&l->lock);
        {
            struct aiometer__redis_waiter **p = &l->waiters;

            while (*p)
                p = &(*p)->next;
            *p = &w;
        }
        pthread_mutex_unlock(&l->lock);
    }
    for (;;) {
        struct pollfd pfd[2];
        uint64_t v;

        got = take(l, &names, key, cancel_fd, &hint);
        if (got != 0 || cancel_fd < 0)
            break;
        pfd[0] = (struct pollfd){ cancel_fd, POLLIN, 0 };
        pfd[1] = (struct pollfd){ w.efd, POLLIN, 0 };
        if (poll(pfd, 2, (int)((hint + 999999) / 1000000)) < 0 && errno != EINTR) {
            got = -errno;
            break;
        }
        if (pfd[0].revents) {
            got = -ECANCELED;
            break;
        }
        if (pfd[1].revents) {
            if (read(w.efd, &v, sizeof(v)) < 0) {
                /* Nothing to do: the descriptor is only a doorbell. */
            }
            pthread_mutex_lock(&l->lock);
            w.woken = 0;
            pthread_mutex_unlock(&l->lock);
        }
    }
    if (w.efd >= 0) {
        unlink_waiter(l, &w);
        close(w.efd);
    }
    if (got == 1)
        return 0;
    if (got == 0) {
        if (cached) {
            pthread_mutex_lock(&l->lock);
            aiometer__redis_refusal_note_locked(l, key, gives,
                                          aiometer__redis_now() + (hint < REFUSAL_NS ? hint : REFUSAL_NS));
            pthread_mutex_unlock(&l->lock);
        }
        return EAGAIN;
    }
    if (got == -ECANCELED || !l->local_mode)
        return -got;
    /* Redis failed and the limiter goes on alone.  EAGAIN when the local
     * share is taken: libaiometer asks again shortly, and Redis is not
     * tried again before its back-off ends. */
    return local_acquire(l, key);
}

static void rl_release(void *state, const char *key)
{
    struct aiometer__redis_limiter *l = state;
    struct aiometer__redis_hold h;
    int got;

    pthread_mutex_lock(&l->lock);
    /* Slots of one key are interchangeable: give back a local one first,
     * so that the local budget frees up while Redis is away. */
    got = !aiometer__redis_fallback_give_locked(&l->local, key) &&
          aiometer__redis_holds_take(&l->held, key, &h);
    pthread_mutex_unlock(&l->lock);
    if (!got)
        return;
    aiometer__redis_give(l, h.token, h.key);
    free(h.token);
    free(h.key);
}

static void rl_free(struct aiometer__redis_limiter *l)
{
    aiometer__redis_holds_free(&l->held);
    aiometer__redis_holds_free(&l->orphans);
    aiometer__redis_fallback_free(&l->local);
    free(l->prefix);
    free(l->channel);
    aiometer__redis_pool_destroy(&l->pool);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

static void rl_close(void *state)
{
    struct aiometer__redis_limiter *l = state;

    aiometer__redis_threads_stop(l);
    rl_free(l);
}

/* ---- opening -------------------------------------------------------------------------- */

static int check_options(const char *key, const aiometer_limiter_options *lo,
                         const aiometer_redis_options *ro)
{
    size_t n = strlen(key);
    double r = lo->max_per_second;

    if (n < 1 || n > 200 || strpbrk(key, "{}"))
        return EINVAL;
    if (isnan(r) || r < 0 || (isfinite(r) && r > MAX_RATE))
        return EINVAL;
    if (lo->max_at_once > MAX_AT_ONCE)
        return EINVAL;
    if (!(r > 0 && isfinite(r)) && lo->max_at_once == 0)
        return EINVAL;
    /* max_keys means nothing without per_key: a forgotten per_key, most
     * likely. */
    if (lo->max_keys && (!lo->per_key || lo->max_keys > MAX_KEYS))
        return EINVAL;
    if (!ro)
        return 0;
    if (!(ro->lease == 0 || (ro->lease >= 0.05 && ro->lease <= 1e6)))
        return EINVAL;
    if (!(ro->command_timeout == 0 || (ro->command_timeout >= 0.001 && ro->command_timeout <= 3600)))
        return EINVAL;
    if (ro->on_failure != AIOMETER_REDIS_FAIL && ro->on_failure != AIOMETER_REDIS_LOCAL)
        return EINVAL;
    if (!(ro->local_share >= 0 && ro->local_share <= 1))
        return EINVAL;
    if (ro->on_failure == AIOMETER_REDIS_LOCAL && ro->local_share == 0)
        return EINVAL;
    return 0;
}

/* "aiometer:{key}:suffix".  The braces make {key} the hash tag of every
 * key of the limiter, so that one script may touch them all on a Redis
 * Cluster; a per-key limiter's keys for each job key (keys.c) sit under
 * the same tag. */
static char *key_name(const char *key, const char *suffix)
{
    size_t n = strlen("aiometer:{}:") + strlen(key) + strlen(suffix) + 1;
    char *s = malloc(n);

    if (s)
        snprintf(s, n, "aiometer:{%s}:%s", key, suffix);
    return s;
}

/* Microseconds, rounded up and held at MAX_US, as the script's argument. */
static void format_us(char *buf, size_t n, double us)
{
    us = ceil(us);
    snprintf(buf, n, "%.0f", us < MAX_US ? us : MAX_US);
}

static void make_token_prefix(struct aiometer__redis_limiter *l)
{
    unsigned char rnd[8];
    uint64_t v = 0;
    size_t i;

    /* The prefix only has to differ between processes of the fleet. */
    if (getentropy(rnd, sizeof(rnd)) == 0) {
        for (i = 0; i < sizeof(rnd); i++)
            v = v << 8 | rnd[i];
    } else {
        v = aiometer__redis_now() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)l;
    }
    snprintf(l->token_prefix, sizeof(l->token_prefix), "%016llx", (unsigned long long)v);
}

/* Set the limits from lo and ro (already checked). */
static void set_limits(struct aiometer__redis_limiter *l, const aiometer_limiter_options *lo,
                       const aiometer_redis_options *ro)
{
    double rate = lo->max_per_second, lease = ro && ro->lease ? ro->lease : 10;
    size_t burst = lo->max_burst ? lo->max_burst : 1;
    double t = rate > 0 && isfinite(rate) ? ceil(1e6 / rate) : 0, tau;

    if (t > MAX_US)
        t = MAX_US;
    tau = t * (double)(burst - 1);
    format_us(l->interval_us, sizeof(l->interval_us), t);
    format_us(l->tolerance_us, sizeof(l->tolerance_us), tau);
    snprintf(l->cap, sizeof(l->cap), "%zu", lo->max_at_once);
    format_us(l->lease_us, sizeof(l->lease_us), lease * 1e6);
    l->lease_ns = (uint64_t)(lease * 1e9);
    l->local_mode = ro && ro->on_failure == AIOMETER_REDIS_LOCAL;
    l->per_key = lo->per_key != 0;
    if (l->local_mode)
        aiometer__redis_fallback_init(&l->local, rate, burst, lo->max_at_once, ro->local_share,
                                !l->per_key ? 0 : lo->max_keys ? lo->max_keys : DEFAULT_MAX_KEYS);
}

/* The first connection: the server is there, lets us in and runs the
 * script, or the open fails.  A few round trips also give a first lower
 * bound of the offset between the server's clock and ours, so that the
 * first bookings are not mapped with a poor one. */
static int first_contact(struct aiometer__redis_limiter *l)
{
    const char *args[1] = { "check" };
    struct aiometer__redis_conn *c;
    redisReply *r;
    int err, i;

    err = aiometer__redis_connect(&l->pool, &c);
    if (err)
        return err;
    err = aiometer__redis_load_script(l, c, l->sha);
    if (err) {
        aiometer__redis_close(c);
        return err;
    }
    aiometer__redis_put(&l->pool, c);
    for (i = 0; i < 4; i++) {
        err = aiometer__redis_run(l, NULL, 1, args, -1, &r);
        if (err)
            return err == EPROTO ? ENOTSUP : err;
        if (r->type != REDIS_REPLY_INTEGER || r->integer <= 0) {
            freeReplyObject(r);
            return ENOTSUP;
        }
        learn_offset_locked(l, r->integer * 1000, aiometer__redis_now());
        freeReplyObject(r);
    }
    return 0;
}

int aiometer_redis_limiter_open(aiometer_limiter **lim, const char *url, const char *key,
                                const aiometer_limiter_options *lo,
                                const aiometer_redis_options *ro)
{
    aiometer_limiter_backend be = { sizeof(be), 0, NULL, NULL, NULL, rl_close };
    struct aiometer__redis_limiter *l;
    int err;

    if (!lim || !url || !key || !lo || check_options(key, lo, ro))
        return EINVAL;
    l = calloc(1, sizeof(*l));
    if (!l)
        return ENOMEM;
    l->stop_fd = -1;
    l->offset[0] = l->offset[1] = INT64_MIN;
    err = pthread_mutex_init(&l->lock, NULL);
    if (err) {
        free(l);
        return err;
    }
    err = aiometer__redis_pool_init(&l->pool, url,
                              ro && ro->command_timeout ? ro->command_timeout : 1.0);
    if (err) {
        pthread_mutex_destroy(&l->lock);
        free(l);
        return err;
    }
    /* A key of at most 200 bytes: the names fit (AIOMETER__REDIS_NAME_MAX). */
    snprintf(l->names.rate, sizeof(l->names.rate), "aiometer:{%s}:rate", key);
    snprintf(l->names.run, sizeof(l->names.run), "aiometer:{%s}:run", key);
    l->prefix = key_name(key, "");
    l->channel = key_name(key, "free");
    if (!l->prefix || !l->channel) {
        rl_free(l);
        return ENOMEM;
    }
    set_limits(l, lo, ro);
    make_token_prefix(l);
    err = first_contact(l);
    if (!err && lo->max_at_once)
        err = aiometer__redis_threads_start(l);
    if (err) {
        rl_free(l);
        return err;
    }
    be.per_key = l->per_key;
    if (lo->max_per_second > 0 && isfinite(lo->max_per_second))
        be.book = rl_book;
    if (lo->max_at_once) {
        be.acquire = rl_acquire;
        be.release = rl_release;
    }
    err = aiometer_limiter_create_backend(lim, &be, l);
    if (err)
        rl_close(l);
    return err;
}
