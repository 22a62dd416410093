/* conn.h - connections to one Redis server: the URL, a pool of connections
 * shared by many threads, commands with a deadline, and the back-off that
 * keeps a dead server from being hammered. */
#ifndef AIOMETER__REDIS_CONN_H
#define AIOMETER__REDIS_CONN_H

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Where the server is and how to log in, from the URL. */
struct aiometer__redis_url {
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
struct aiometer__redis_conn {
    int fd;
    redisReader *reader;
    uint64_t born;        /* the pool generation it was made in */
    uint64_t rcvtimeo_ns; /* a blocking recv waits this long (SO_RCVTIMEO) */
    struct aiometer__redis_conn *next;
};

struct aiometer__redis_pool {
    struct aiometer__redis_url url;
    uint64_t timeout_ns; /* command_timeout */
    pthread_mutex_t lock;
    /* Guarded by lock: */
    struct aiometer__redis_conn *idle;
    uint64_t generation;  /* bumped when a connection fails: older idle ones are dropped */
    uint64_t retry_at;    /* no new connection is tried before this (back-off) */
    uint64_t backoff_ns;  /* the current back-off step; 0 while the server answers */
    int last_err;         /* the error that started the back-off */
    int probing;          /* after the back-off, one caller tries the server */
};

/* The result of a command that ran: a reply (maybe an error reply). */
int aiometer__redis_url_parse(struct aiometer__redis_url *u, const char *url);
void aiometer__redis_url_free(struct aiometer__redis_url *u);

int aiometer__redis_pool_init(struct aiometer__redis_pool *p, const char *url, double timeout);
void aiometer__redis_pool_destroy(struct aiometer__redis_pool *p);

/* A connection: an idle one, or a new one.  0; the back-off's error while it
 * lasts; a connection errno; EACCES; EINVAL (no such database). */
int aiometer__redis_get(struct aiometer__redis_pool *p, struct aiometer__redis_conn **c);
/* Give back a connection that is in a clean state, after a command that
 * the server answered: the back-off ends. */
void aiometer__redis_put(struct aiometer__redis_pool *p, struct aiometer__redis_conn *c);
/* Close a connection after a failure (err) and start or extend the back-off
 * unless err says the server answered. */
void aiometer__redis_drop(struct aiometer__redis_pool *p, struct aiometer__redis_conn *c, int err);
/* Open a connection that is not pooled (the subscriber's), ignoring the
 * back-off. */
int aiometer__redis_connect(struct aiometer__redis_pool *p, struct aiometer__redis_conn **c);
void aiometer__redis_close(struct aiometer__redis_conn *c);

/* Send argv and read one reply before deadline (monotonic ns).  With
 * cancel_fd >= 0, a readable cancel_fd ends the wait after at most
 * grace_ns more (ECANCELED).  0 with *reply; ETIMEDOUT; ECONNRESET;
 * ECANCELED; ENOMEM; EPROTO.  After an error the connection must be
 * dropped. */
int aiometer__redis_command(struct aiometer__redis_conn *c, int argc, const char **argv, const size_t *lens,
                      uint64_t deadline, int cancel_fd, uint64_t grace_ns, redisReply **reply);
/* Only send argv (for SUBSCRIBE). */
int aiometer__redis_send(struct aiometer__redis_conn *c, int argc, const char **argv, const size_t *lens,
                   uint64_t deadline);
/* Read one reply if one is there or arrives before deadline: 0 with *reply
 * (NULL if none came in time), or an error as for aiometer__redis_command. */
int aiometer__redis_read(struct aiometer__redis_conn *c, uint64_t deadline, int wake_fd, redisReply **reply);

uint64_t aiometer__redis_now(void);

#endif
