/*
 * aiometer_redis.h - fleet-wide limiters for libaiometer, kept in Redis.
 *
 * libaiometer-redis is a second library beside libaiometer.  It keeps a
 * limiter's rate (GCRA) and running cap in a Redis server, so that every
 * process of a fleet that opens the same key shares one budget.  It plugs
 * into libaiometer through the public limiter backend interface only
 * (aiometer_limiter_create_backend): the limiter it returns is used through
 * aiometer_options.limiter and destroyed with aiometer_limiter_destroy.
 *
 * Link with -laiometer-redis -laiometer (pkg-config aiometer-redis).
 */
#ifndef AIOMETER_REDIS_H
#define AIOMETER_REDIS_H

#include <aiometer.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(AIOMETER_REDIS_BUILDING) && defined(AIOMETER_HAVE_VISIBILITY)
#define AIOMETER_REDIS_API __attribute__((visibility("default")))
#else
#define AIOMETER_REDIS_API
#endif

/* What a limiter does when Redis cannot be reached after it was opened. */
#define AIOMETER_REDIS_FAIL 0  /* the job does not start: its call fails */
#define AIOMETER_REDIS_LOCAL 1 /* go on alone at local_share of the limits */

/* Options of aiometer_redis_limiter_open.  A zero field means the default;
 * NULL means all defaults. */
typedef struct aiometer_redis_options {
    double lease;           /* s: a running slot of a process that stopped renewing it
                             * is freed after this; 0: 10 */
    double command_timeout; /* s: a Redis command slower than this is a failure; 0: 1 */
    int on_failure;         /* AIOMETER_REDIS_FAIL (0) or AIOMETER_REDIS_LOCAL */
    double local_share;     /* with LOCAL: the fraction of the limits this process
                             * uses on its own while Redis is unreachable (0 < x <= 1) */
    /* Fields may be added here in later versions. */
} aiometer_redis_options;

/*
 * A limiter whose budget lives in the Redis server at `url`, under `key`.
 *
 * url: redis://[[user]:password@]host[:port][/db] (port 6379 by default) or
 * unix:///path/to.sock[?db=N].  key: 1 to 200 bytes without '{' or '}'.
 * Every process that opens the same server, database and key with the same
 * *lo shares lo's rate and running cap.  The limiter's Redis keys all begin
 * with "aiometer:{key}:", so they share one hash tag.  With lo->per_key each
 * job key J has its own rate and cap, in "aiometer:{key}:k:<length of
 * J>:J:rate" and ":run" (a hash stands for a J over 128 bytes), which
 * expire when J is idle; lo->max_keys bounds only the LOCAL fallback's
 * table of keys.
 *
 * 0; EINVAL (lim, url, key or lo NULL; a bad URL, key or value; max_keys
 * without per_key; LOCAL without local_share); the connection's errno (ECONNREFUSED, ENOENT,
 * ETIMEDOUT, EHOSTUNREACH, ...); EACCES (a wrong or a missing password);
 * ENOTSUP (a server that cannot run the limiter's script); ENOMEM; EAGAIN
 * (no thread could be started).
 */
AIOMETER_REDIS_API int aiometer_redis_limiter_open(aiometer_limiter **lim, const char *url,
                                                   const char *key,
                                                   const aiometer_limiter_options *lo,
                                                   const aiometer_redis_options *ro);

#ifdef __cplusplus
}
#endif

#endif
