/* conn.h - connections to one Redis server: the URL, a pool of connections
 * shared by many threads, commands with a deadline, and the back-off that
 * keeps a dead server from being hammered. */
#ifndef AIO_REDIS_CONN_H
#define AIO_REDIS_CONN_H

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Where the server is and how to log in, from the URL. */
struct aio_redis_url {
    char *host; /* TCP host, or NULL for a Unix socket */
    char *path; /* Unix socket path, or NULL */
    int port;
    char *user; /* NULL: AUTH with the password alone */
    char *password;
    long db; /* -1: do not SELECT */
};

/* One connection: a socket and the hiredis reply parser that reads it.  We
 * do the socket I/O ourselves (send with MSG_NOSIGNAL, poll with the
 * caller's cancel descriptor and deadline) and use hiredis for the protocol
 * only. */
struct aio_redis_conn {
    int fd;
    redisReader *reader;
    uint64_t born;        /* the pool generation it was made in */
    uint64_t rcvtimeo_ns; /* a blocking recv waits this long (SO_RCVTIMEO) */
    struct aio_redis_conn *next;
};

struct aio_redis_pool {
    struct aio_redis_url url;
    uint64_t timeout_ns; /* command_timeout */
    pthread_mutex_t lock;
    /* Guarded by lock: */
    struct aio_redis_conn *idle;
    uint64_t generation;  /* bumped when a connection fails: older idle ones are dropped */
    uint64_t retry_at;    /* no new connection is tried before this (back-off) */
    uint64_t backoff_ns;  /* the current back-off step; 0 while the server answers */
    int last_err;         /* the error that started the back-off */
    int probing;          /* after the back-off, one caller tries the server */
};

/* The result of a command that ran: a reply (maybe an error reply). */
int aio_redis_url_parse(struct aio_redis_url *u, const char *url);
void aio_redis_url_free(struct aio_redis_url *u);

int aio_redis_pool_init(struct aio_redis_pool *p, const char *url, double timeout);
void aio_redis_pool_destroy(struct aio_redis_pool *p);

/* A connection: an idle one, or a new one.  0; the back-off's error while it
 * lasts; a connection errno; EACCES; EINVAL (no such database). */
int aio_redis_get(struct aio_redis_pool *p, struct aio_redis_conn **c);
/* Give back a connection that is in a clean state, after a command that
 * the server answered: the back-off ends. */
void aio_redis_put(struct aio_redis_pool *p, struct aio_redis_conn *c);
/* Close a connection after a failure (err) and start or extend the back-off
 * unless err says the server answered. */
void aio_redis_drop(struct aio_redis_pool *p, struct aio_redis_conn *c, int err);
/* Open a connection that is not pooled (the subscriber's), ignoring the
 * back-off. */
int aio_redis_connect(struct aio_redis_pool *p, struct aio_redis_conn **c);
void aio_redis_close(struct aio_redis_conn *c);

/* Send argv and read one reply before deadline (monotonic ns).  With
 * cancel_fd >= 0, a readable cancel_fd ends the wait after at most
 * grace_ns more (ECANCELED).  0 with *reply; ETIMEDOUT; ECONNRESET;
 * ECANCELED; ENOMEM; EPROTO.  After an error the connection must be
 * dropped. */
int aio_redis_command(struct aio_redis_conn *c, int argc, const char **argv, const size_t *lens,
                      uint64_t deadline, int cancel_fd, uint64_t grace_ns, redisReply **reply);
/* Only send argv (for SUBSCRIBE). */
int aio_redis_send(struct aio_redis_conn *c, int argc, const char **argv, const size_t *lens,
                   uint64_t deadline);
/* Read one reply if one is there or arrives before deadline: 0 with *reply
 * (NULL if none came in time), or an error as for aio_redis_command. */
int aio_redis_read(struct aio_redis_conn *c, uint64_t deadline, int wake_fd, redisReply **reply);

uint64_t aio_redis_now(void);

#endif
