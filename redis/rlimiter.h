/* rlimiter.h - the state of one Redis-backed limiter, shared by its
 * operations (rlimiter.c), its background threads (threads.c) and its
 * in-process fallback (fallback.c). */
#ifndef AIOMETER__REDIS_RLIMITER_H
#define AIOMETER__REDIS_RLIMITER_H

#include "aiometer.h"
#include "conn.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* The longest Redis key name of a limiter: "aiometer:{" + a limiter key of
 * at most 200 bytes + "}:k:" + a job key's encoding (at most
 * AIOMETER__REDIS_VERBATIM_MAX bytes and its length, or a hash) + ":rate". */
#define AIOMETER__REDIS_NAME_MAX 400
/* Job keys up to this long are stored verbatim; longer ones by a hash. */
#define AIOMETER__REDIS_VERBATIM_MAX 128

/* The two Redis keys an operation works on: the rate key and the running
 * slots' key, of the whole limiter or of one job key. */
struct aiometer__redis_names {
    char rate[AIOMETER__REDIS_NAME_MAX], run[AIOMETER__REDIS_NAME_MAX];
};

/* A running slot this process holds in Redis: its token, and the job key
 * it was taken for (NULL on a limiter that is not per key). */
struct aiometer__redis_hold {
    char *token;
    char *key;
};

/* A list of holds, guarded by the limiter's lock. */
struct aiometer__redis_holds {
    struct aiometer__redis_hold *v;
    size_t n, max;
};

/* A thread waiting for a running slot, woken through its eventfd when a
 * slot of its key (NULL: of the limiter) is given back somewhere in the
 * fleet. */
struct aiometer__redis_waiter {
    int efd;
    int woken;
    const char *key;
    struct aiometer__redis_waiter *next;
};

/* One job key's budget in the local fallback of a per-key limiter. */
struct aiometer__redis_lkey {
    char *key;
    uint64_t tat;
    size_t held;
    struct aiometer__redis_lkey *next; /* in its hash bucket */
};

/* The local budget used instead of Redis in AIOMETER_REDIS_LOCAL mode. */
struct aiometer__redis_fallback {
    int has_rate;
    uint64_t interval;  /* ns between starts at local_share of the rate */
    uint64_t tolerance; /* ns of burst */
    uint64_t tat;       /* guarded by the limiter's lock */
    size_t cap;         /* running slots at local_share of max_at_once; 0: none */
    size_t held;        /* guarded by the limiter's lock */
    /* Per key (a per-key limiter only): a table of at most max_keys job
     * keys, each with its own tat and held; guarded by the limiter's lock.
     * A key is forgotten only when its schedule is past and it holds no
     * slot, as in libaiometer's own per-key limiter. */
    struct aiometer__redis_lkey **buckets;
    size_t n_buckets, n_keys, max_keys;
};

/* A job key whose slots Redis refused lately (see keys.c). */
struct aiometer__redis_refusal {
    uint64_t hash;  /* of the key's give message; 0: empty */
    uint64_t until; /* monotonic ns */
    uint64_t gives; /* gives seen for the keys of this entry */
};
#define AIOMETER__REDIS_REFUSALS 64

struct aiometer__redis_limiter {
    struct aiometer__redis_pool pool;
    struct aiometer__redis_names names; /* "aiometer:{key}:rate", "aiometer:{key}:run" */
    char *prefix;  /* "aiometer:{key}:", which every key of the limiter begins with */
    char *channel; /* "aiometer:{key}:free" */
    int per_key;   /* the limits apply to each job key separately */
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
    struct aiometer__redis_holds held;    /* the slots this process holds in Redis */
    struct aiometer__redis_holds orphans; /* slots a cancelled take may have left behind */
    struct aiometer__redis_waiter *waiters; /* FIFO: the oldest first */
    struct aiometer__redis_fallback local;
    struct aiometer__redis_refusal refused[AIOMETER__REDIS_REFUSALS];
    /* The server's clock minus ours (ns), at least: the largest
     * server_time - reply_time seen in this window of OFFSET_WINDOW_NS and
     * the one before; INT64_MIN when unknown.  See rl_book. */
    int64_t offset[2];
    uint64_t offset_window_start;
};

/* Run the script's operation op with args on a pooled connection, on the
 * keys `names` (NULL: the limiter's own): 0 with *reply (never an error
 * reply), or an errno value.  cancel_fd as for aiometer__redis_command. */
int aiometer__redis_run(struct aiometer__redis_limiter *l, const struct aiometer__redis_names *names, int argc,
                  const char **args, int cancel_fd, redisReply **reply);

/* SCRIPT LOAD on c: 0 (and the SHA in sha); EACCES; ENOTSUP; or the
 * connection's error. */
int aiometer__redis_load_script(struct aiometer__redis_limiter *l, struct aiometer__redis_conn *c, char sha[41]);

/* keys.c: the Redis keys of job key `key` (NULL: the limiter's own). */
void aiometer__redis_names_of(const struct aiometer__redis_limiter *l, const char *key,
                        struct aiometer__redis_names *n);
/* The message a give of key's slot publishes, into buf (at least
 * AIOMETER__REDIS_NAME_MAX bytes): "1" for the limiter's own slots, "k" and the
 * job key's encoding for a job key's.  Its length. */
size_t aiometer__redis_message_of(const char *key, char *buf);
/* The refusal cache of a per-key limiter: a job key whose take Redis
 * refused is refused again here, without a round trip, until `until` or
 * until a slot of that key is given back (its give message, seen by the
 * subscriber or given by this process).  It only ever refuses, so it
 * cannot break a cap; it spares Redis the polls of many set-aside jobs of
 * one busy key.  The lock is held for all three. */
/* 1 if key's takes are refused for now; else 0, with *gives to hand to
 * aiometer__redis_refusal_note_locked after the take, which notes nothing when
 * a give of the key came in between. */
int aiometer__redis_refused_locked(struct aiometer__redis_limiter *l, const char *key, uint64_t now,
                             uint64_t *gives);
void aiometer__redis_refusal_note_locked(struct aiometer__redis_limiter *l, const char *key, uint64_t gives,
                                   uint64_t until);
void aiometer__redis_refusal_clear_locked(struct aiometer__redis_limiter *l, const char *msg, size_t len);
/* Append a hold (token and key copied).  The lock is held.  0 or ENOMEM. */
int aiometer__redis_holds_push(struct aiometer__redis_holds *h, const char *token, const char *key);
/* Take out the last hold of key (any hold when key is NULL): 1 with *out
 * (now the caller's to free), or 0 when there is none.  The lock is held. */
int aiometer__redis_holds_take(struct aiometer__redis_holds *h, const char *key, struct aiometer__redis_hold *out);
void aiometer__redis_holds_free(struct aiometer__redis_holds *h);

/* threads.c: give back one slot of key held as token (a failure leaves it
 * to end with its lease) and wake the fleet's waiters for it. */
void aiometer__redis_give(struct aiometer__redis_limiter *l, const char *token, const char *key);

int aiometer__redis_threads_start(struct aiometer__redis_limiter *l);
void aiometer__redis_threads_stop(struct aiometer__redis_limiter *l);
/* A slot was given back, its message msg (len bytes; see
 * aiometer__redis_message_of): wake the oldest waiter for that key not woken yet. */
void aiometer__redis_wake_one(struct aiometer__redis_limiter *l, const char *msg, size_t len);

/* max_keys: 0 for a limiter that is not per key. */
void aiometer__redis_fallback_init(struct aiometer__redis_fallback *f, double rate, size_t burst,
                             size_t max_at_once, double share, size_t max_keys);
void aiometer__redis_fallback_free(struct aiometer__redis_fallback *f);
/* Book at `now` (ns) for key (NULL: the limiter); the lock is held.  0 with
 * *start (AIOMETER_NEVER included), or EAGAIN when key is new and every
 * entry of the table is in use (ENOMEM when one cannot be made). */
int aiometer__redis_fallback_book_locked(struct aiometer__redis_fallback *f, const char *key, uint64_t now,
                                   uint64_t *start);
/* Take a local slot of key (NULL: the limiter): 0 or EAGAIN (ENOMEM). */
int aiometer__redis_fallback_take_locked(struct aiometer__redis_fallback *f, const char *key, uint64_t now);
/* Give back a local slot of key if it holds one: 1, else 0. */
int aiometer__redis_fallback_give_locked(struct aiometer__redis_fallback *f, const char *key);

#endif
