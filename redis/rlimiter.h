/* rlimiter.h - the state of one Redis-backed limiter, shared by its
 * operations (rlimiter.c), its background threads (threads.c) and its
 * in-process fallback (fallback.c). */
#ifndef AIO_REDIS_RLIMITER_H
#define AIO_REDIS_RLIMITER_H

#include "aiometer.h"
#include "conn.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* A thread waiting for a running slot, woken through its eventfd when a
 * slot is given back somewhere in the fleet. */
struct aio_redis_waiter {
    int efd;
    int woken;
    struct aio_redis_waiter *next;
};

/* The local budget used instead of Redis in AIOMETER_REDIS_LOCAL mode. */
struct aio_redis_fallback {
    int has_rate;
    uint64_t interval;  /* ns between starts at local_share of the rate */
    uint64_t tolerance; /* ns of burst */
    uint64_t tat;       /* guarded by the limiter's lock */
    size_t cap;         /* running slots at local_share of max_at_once; 0: none */
    size_t held;        /* guarded by the limiter's lock */
};

struct aio_redis_limiter {
    struct aio_redis_pool pool;
    char *keys[2]; /* "aiometer:{key}:rate", "aiometer:{key}:run" */
    char *channel; /* "aiometer:{key}:free" */
    char sha[41];  /* the script's SHA1, from SCRIPT LOAD */
    char interval_us[24], tolerance_us[24], cap[24], lease_us[24];
    uint64_t lease_ns;
    int local_mode;
    char token_prefix[40];

    /* The threads of a limiter with a running cap, told to stop through
     * stop_fd (an eventfd), which they poll. */
    int threads;
    int stop_fd;
    pthread_t renewer, subscriber;

    pthread_mutex_t lock;
    /* Guarded by lock: */
    uint64_t token_seq;
    char **held; /* tokens of the slots this process holds in Redis */
    size_t n_held, max_held;
    char **orphans; /* tokens a cancelled take may have left behind */
    size_t n_orphans, max_orphans;
    struct aio_redis_waiter *waiters; /* FIFO: the oldest first */
    struct aio_redis_fallback local;
    /* The server's clock minus ours (ns), at least: the largest
     * server_time - reply_time seen in this window of OFFSET_WINDOW_NS and
     * the one before; INT64_MIN when unknown.  See rl_book. */
    int64_t offset[2];
    uint64_t offset_window_start;
};

/* Run the script's operation op with args on a pooled connection: 0 with
 * *reply (never an error reply), or an errno value.  cancel_fd as for
 * aio_redis_command. */
int aio_redis_run(struct aio_redis_limiter *l, int argc, const char **args, int cancel_fd,
                  redisReply **reply);

/* SCRIPT LOAD on c: 0 (and the SHA in sha); EACCES; ENOTSUP; or the
 * connection's error. */
int aio_redis_load_script(struct aio_redis_limiter *l, struct aio_redis_conn *c, char sha[41]);

/* Append s (copied) to a list of strings.  The lock is held. */
int aio_redis_list_push(char ***list, size_t *n, size_t *max, const char *s);

int aio_redis_threads_start(struct aio_redis_limiter *l);
void aio_redis_threads_stop(struct aio_redis_limiter *l);
/* A slot was given back: wake the oldest waiter not woken yet. */
void aio_redis_wake_one(struct aio_redis_limiter *l);

void aio_redis_fallback_init(struct aio_redis_fallback *f, double rate, size_t burst,
                             size_t max_at_once, double share);
/* Book at `now` (ns); the lock is held.  The start, AIOMETER_NEVER included. */
uint64_t aio_redis_fallback_book_locked(struct aio_redis_fallback *f, uint64_t now);

#endif
